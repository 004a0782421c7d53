//! What the `vmm` command (and its `firecracker` mode) sets for its whole
//! process around a VM, and how it waits for the VM's end: the library's
//! caller owns this policy.

use std::os::unix::net::UnixListener;
use std::path::Path;

use vmm::config::VmConfig;
use vmm::config_file::Logger;
use vmm::{Error, VmEnd, VmHandle};
use vmm_cli::exit::{self, code as exit_code};

use crate::signals;
use vmm_cli::terminal;

/// What the `vmm` command sets for its whole process around a VM: the
/// stop signals caught, the terminal in raw mode while the guest's console
/// is on it, and the seccomp filter of the main thread (with the SIGSYS
/// handler that names a forbidden call).
pub struct Policy {
    signals: signals::StopSignals,
    seccomp: bool,
}

/// The policy that applies once a VM runs, and the API's logger: the
/// front end the API's controller calls.
pub struct Running {
    raw: Option<terminal::RawTerminal>,
    seccomp: bool,
}

impl vmm_api::FrontEnd for Running {
    fn logger(&mut self, logger: &Logger) -> Result<(), String> {
        vmm::logging::apply(&logger_settings(logger)?)
    }

    fn end_code(&self) -> Option<fn(&VmEnd) -> i32> {
        Some(exit::of_end)
    }

    /// The terminal raw while the guest's console is on it, and this
    /// thread's filter on.
    fn started(&mut self, handle: &VmHandle) {
        self.raw = terminal::RawTerminal::enter_if_console(handle);
        if self.seccomp {
            if let Err(e) = vmm::seccomp::install(vmm::seccomp::Thread::Main) {
                handle.stop_with(VmEnd::VmmError(e.to_string()));
            }
        }
    }
}

/// Firecracker's logger settings as the log takes them.
pub fn logger_settings(logger: &Logger) -> Result<vmm::logging::Settings, String> {
    Ok(vmm::logging::Settings {
        level: logger
            .level
            .as_deref()
            .map(vmm::logging_level)
            .transpose()?,
        path: logger.log_path.clone(),
        show_level: logger.show_level,
        show_origin: logger.show_log_origin,
        module: logger.module.clone(),
    })
}

/// The API socket's error as the VMM reports it (a configuration error).
pub fn api_error(e: vmm_api::server::ServerError) -> Error {
    match e {
        vmm_api::server::ServerError::Path { path, reason } => {
            Error::config("api-sock", path.display(), reason)
        }
        other => Error::config("api-sock", "", other.to_string()),
    }
}

impl Policy {
    /// The stop signals caught and, with filters on, the SIGSYS handler
    /// that names a forbidden call.
    pub fn install(cfg: &VmConfig) -> Result<Policy, Error> {
        Self::with_seccomp(cfg.seccomp)
    }

    /// As `install`, for a front end without its configuration yet.
    pub fn with_seccomp(seccomp: bool) -> Result<Policy, Error> {
        let signals = signals::StopSignals::install()
            .map_err(|e| Error::from(vmm::host::HostError::Other(e)))?;
        if seccomp {
            vmm::seccomp::install_sigsys_handler(exit_code::SECCOMP)?;
        }
        Ok(Policy { signals, seccomp })
    }

    /// A stop signal that came since the last call, if any (SIGTERM,
    /// SIGINT, SIGHUP), for a front end that waits for something else
    /// than the VM's end.
    pub fn stop_signal(&self) -> Option<i32> {
        self.signals.take()
    }

    /// The front end the API's controller calls.
    pub fn running(&self) -> Running {
        Running {
            raw: None,
            seccomp: self.seccomp,
        }
    }

    /// Once the VM runs: the terminal raw and the filter on; then waits for
    /// the VM's end or a stop signal, which stops the VM.
    pub fn wait(self, handle: &VmHandle) -> VmEnd {
        let mut running = self.running();
        vmm_api::FrontEnd::started(&mut running, handle);
        wait_or_stop(handle, &self.signals)
    }

    /// Serves the API for the running VM until it ends.
    pub fn serve_running(
        self,
        listener: UnixListener,
        path: &Path,
        options: vmm_api::Options,
        id: &str,
        cfg: VmConfig,
        handle: VmHandle,
    ) -> Result<VmEnd, Error> {
        let server = vmm_api::ApiServer::start(listener, path, options).map_err(api_error)?;
        let mut running = self.running();
        vmm_api::FrontEnd::started(&mut running, &handle);
        let mut controller =
            vmm_api::Controller::running(id.to_string(), cfg, handle, Box::new(running));
        log::info!("API on {}", path.display());
        Ok(match self.serve(&mut controller, &server) {
            vmm_api::Served::VmEnded(end) => end,
            vmm_api::Served::Signalled(sig) => VmEnd::Signal(sig),
        })
    }

    /// Serves `server`'s requests through `controller` until the VM ends
    /// or a stop signal comes.
    pub fn serve(
        &self,
        controller: &mut vmm_api::Controller,
        server: &vmm_api::ApiServer,
    ) -> vmm_api::Served {
        vmm_api::serve(controller, server, Some(self.signals.fd()), &|| {
            self.signals.take()
        })
    }
}

/// Waits for the VM's end; a stop signal first stops it.
fn wait_or_stop(handle: &VmHandle, signals: &signals::StopSignals) -> VmEnd {
    let mut fds = [
        libc::pollfd {
            fd: handle.ended_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: signals.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    while handle.try_end().is_none() {
        // SAFETY: `fds` is a live array of two pollfds for the call.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if n < 0 {
            continue; // EINTR
        }
        if fds[1].revents & libc::POLLIN != 0 {
            if let Some(sig) = signals.take() {
                handle.stop_with(VmEnd::Signal(sig));
            }
        }
        if fds[0].revents & libc::POLLIN != 0 {
            break;
        }
    }
    handle.wait()
}

/// The exit code of a run: the VM's end, or the error that stopped it.
pub fn finish(result: Result<VmEnd, Error>) -> i32 {
    if let Some(r) = vmm::host::resources() {
        log::debug!(
            "resources at VM end: {} open fds, RSS {} KiB, peak RSS {} KiB",
            r.fds,
            r.rss_kib,
            r.peak_rss_kib
        );
    }
    match result {
        Ok(end) => {
            let code = exit::of_end(&end);
            if code == exit_code::OK || matches!(end, VmEnd::Signal(_) | VmEnd::CommandExited(_)) {
                log::info!("{}", end.describe());
            } else {
                log::error!("{}", end.describe());
            }
            code
        }
        Err(e) => exit::report(&e),
    }
}
