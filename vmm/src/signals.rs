//! The VMM's signals: SIGTERM, SIGINT and SIGHUP end the VM through the
//! event loop (clean teardown) instead of killing the process, and a
//! real-time signal kicks vCPU threads out of KVM_RUN when the VM ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_manager::MutEventSubscriber;
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::error::{Error, Result};
use crate::vcpu::{VmEnd, VmExitState};

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The eventfd the stop-signal handler writes to (-1 until installed), and
/// the signal it saw.
static STOP_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn stop_handler(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; it reads 8 bytes from a
        // live local. The fd is an eventfd kept open for the process's life.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Makes SIGTERM, SIGINT and SIGHUP end the VM through the event loop
/// (clean teardown: vCPUs stopped, device statistics logged, terminal
/// restored) instead of killing the process. Installed once per process;
/// returns a VM's own handle on the eventfd the handler writes to.
pub fn install_stop_handler() -> Result<EventFd> {
    static ONCE: std::sync::OnceLock<std::result::Result<EventFd, String>> =
        std::sync::OnceLock::new();
    let global = ONCE.get_or_init(|| {
        let evt =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(|e| e.to_string())?;
        STOP_FD.store(std::os::fd::AsRawFd::as_raw_fd(&evt), Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            register_signal_handler(sig, stop_handler).map_err(|e| e.to_string())?;
        }
        Ok(evt)
    });
    let err = |what, reason| Error::from(SignalError { what, reason });
    global
        .as_ref()
        .map_err(|e| err("stop-signal handler", e.clone()))?
        .try_clone()
        .map_err(|e| err("stop-signal handler's eventfd", e.to_string()))
}

/// A signal handler that could not be installed, or its eventfd.
#[derive(Debug, thiserror::Error)]
#[error("cannot install the {what}: {reason}")]
pub struct SignalError {
    /// Which handler.
    pub what: &'static str,
    /// Why.
    pub reason: String,
}

/// Ends the VM when a stop signal arrives.
pub struct StopHandler {
    pub evt: EventFd,
    pub exit: Arc<VmExitState>,
}

impl MutEventSubscriber for StopHandler {
    fn init(&mut self, ops: &mut event_manager::EventOps) {
        if let Err(e) = ops.add(event_manager::Events::new(
            &self.evt,
            vmm_sys_util::epoll::EventSet::IN,
        )) {
            log::error!("event loop: cannot watch the stop signal: {e:?}");
        }
    }

    fn process(&mut self, _: event_manager::Events, _: &mut event_manager::EventOps) {
        let _ = self.evt.read();
        let sig = STOP_SIGNAL.load(Ordering::SeqCst);
        self.exit.finish(VmEnd::Signal(sig));
    }
}

/// Installs the handler for the signal that kicks vCPU threads out of
/// KVM_RUN (its only effect is that KVM_RUN returns EINTR).
pub fn install_kick_handler() -> Result<()> {
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|reason| {
        SignalError {
            what: "vCPU kick signal handler",
            reason,
        }
        .into()
    })
}

/// Tells every vCPU thread to stop, kicks it out of KVM_RUN until it has
/// stopped, and joins it.
pub fn stop_vcpus(exit: &VmExitState, threads: Vec<JoinHandle<()>>) {
    exit.stop.store(true, Ordering::Release);
    for t in threads {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() && Instant::now() < deadline {
            let _ = t.kill(SIGRTMIN());
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::error!("a vCPU thread did not stop within 5 s; leaving it");
        }
    }
}
