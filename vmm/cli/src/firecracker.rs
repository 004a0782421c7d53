//! The `vmm` binary invoked as `firecracker` (a link to it, as busybox's
//! applets are): Firecracker's own command line, so that the tools that
//! start Firecracker by name or path (its Go SDK, firectl, the Python and
//! Go clients and the sandbox services built on them) drive this VMM
//! unchanged. With `--api-sock` and no config file it waits for its
//! configuration and `InstanceStart` on the API, as Firecracker does; the
//! guest's serial console is the process's stdin and stdout.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use vmm::config_file::{self, Logger, Overrides};
use vmm::{Error, VmEnd, Vmm};
use vmm_cli::exit::{self, code as exit_code};

use crate::policy::{self, finish, Policy};

/// Firecracker's default API socket.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";

/// Firecracker's command line.
#[derive(Parser, Debug)]
#[command(
    name = "firecracker",
    about = "Firecracker's command line on the vmm VMM: a microVM driven by Firecracker's REST API",
    disable_version_flag = true
)]
struct FirecrackerArgs {
    /// The API's Unix socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_API_SOCK)]
    api_sock: PathBuf,
    /// Start the microVM from this JSON config file (Firecracker's layout).
    #[arg(long, value_name = "PATH")]
    config_file: Option<PathBuf>,
    /// No API socket; needs --config-file.
    #[arg(long, requires = "config_file")]
    no_api: bool,
    /// The microVM's id (`GET /` reports it).
    #[arg(long, value_name = "ID", default_value = "anonymous-instance")]
    id: String,
    /// Accepted: this VMM's boot-timer device is always present (port
    /// 0x440 and MMIO at 0xc0000000).
    #[arg(long)]
    boot_timer: bool,
    /// Log level: Error, Warning, Info, Debug, Trace or Off.
    #[arg(long, value_name = "LEVEL")]
    level: Option<String>,
    /// Append the log to this file or named pipe instead of stderr.
    #[arg(long, value_name = "PATH")]
    log_path: Option<PathBuf>,
    /// Show each log line's level.
    #[arg(long)]
    show_level: bool,
    /// Show each log line's source file and line.
    #[arg(long)]
    show_log_origin: bool,
    /// Only log lines from this module path.
    #[arg(long, value_name = "MODULE")]
    module: Option<String>,
    /// Write the VM's metrics document here (`PUT /metrics` does too).
    #[arg(long, value_name = "PATH")]
    metrics_path: Option<PathBuf>,
    /// No seccomp filters on the VMM's threads.
    #[arg(long)]
    no_seccomp: bool,
    /// Refused: custom seccomp filter files are not supported (ignoring one
    /// would run with other filters than asked).
    #[arg(long, value_name = "PATH")]
    seccomp_filter: Option<PathBuf>,
    /// The largest API request body, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = vmm_api::http::DEFAULT_MAX_PAYLOAD)]
    http_api_max_payload_size: usize,
    /// Accepted and unused: there is no MMDS here.
    #[arg(long, value_name = "BYTES")]
    mmds_size_limit: Option<usize>,
    /// Refused: devices are on virtio-mmio only.
    #[arg(long)]
    enable_pci: bool,
    /// Accepted and unused (the jailer's start time).
    #[arg(long, value_name = "US")]
    start_time_us: Option<u64>,
    /// Accepted and unused (the jailer's start CPU time).
    #[arg(long, value_name = "US")]
    start_time_cpu_us: Option<u64>,
    /// Accepted and unused (the jailer's parent CPU time).
    #[arg(long, value_name = "US")]
    parent_cpu_time_us: Option<u64>,
    /// Print the format version of the state file at PATH and exit.
    #[arg(long, value_name = "PATH")]
    describe_snapshot: Option<PathBuf>,
    /// Print the version and exit.
    #[arg(long)]
    version: bool,
}

/// Whether this process was started under the name `firecracker`.
pub fn invoked_as_firecracker() -> bool {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_os_string()))
        .is_some_and(|n| n == "firecracker")
}

/// Firecracker's flags that ask for what this VMM does not do.
fn refused(args: &FirecrackerArgs) -> Option<(&'static str, &'static str)> {
    if args.seccomp_filter.is_some() {
        return Some((
            "--seccomp-filter",
            "custom seccomp filter files are not supported; this VMM installs its own filters \
             per thread (--no-seccomp turns them off)",
        ));
    }
    if args.enable_pci {
        return Some((
            "--enable-pci",
            "PCI is not supported; devices are on virtio-mmio",
        ));
    }
    None
}

/// Runs Firecracker's command line; returns the exit code.
pub fn main(started: Instant) -> i32 {
    let args = match FirecrackerArgs::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                exit_code::USAGE
            } else {
                exit_code::OK
            };
        }
    };
    if args.version {
        println!(
            "Firecracker v{} (the vmm VMM's Firecracker command line)",
            env!("CARGO_PKG_VERSION")
        );
        return exit_code::OK;
    }
    vmm::logging::init("info");
    if let Some(path) = &args.describe_snapshot {
        // As Firecracker: the snapshot's data format version.
        return match vmm::snapshot::restore::read_state(path) {
            Ok(_) => {
                println!("v{}", vmm::snapshot::file::VERSION);
                exit_code::OK
            }
            Err(e) => exit::report(&vmm::handle::HandleError::Restore(Box::new(e)).into()),
        };
    }
    if let Some((flag, why)) = refused(&args) {
        log::error!("{flag}: {why}");
        return exit_code::USAGE;
    }
    let logger = Logger {
        level: args.level.clone(),
        log_path: args.log_path.clone(),
        show_level: args.show_level.then_some(true),
        show_log_origin: args.show_log_origin.then_some(true),
        module: args.module.clone(),
    };
    let applied = policy::logger_settings(&logger).and_then(|s| vmm::logging::apply(&s));
    if let Err(e) = applied {
        return exit::report(&Error::config("--level/--log-path", "", e));
    }
    finish(run(args, started))
}

fn run(args: FirecrackerArgs, started: Instant) -> Result<VmEnd, Error> {
    let policy = Policy::with_seccomp(!args.no_seccomp)?;
    let overrides = Overrides {
        seccomp: args.no_seccomp.then_some(false),
        metrics: args.metrics_path.clone(),
        ..Default::default()
    };
    let listener = if args.no_api {
        None
    } else {
        Some(vmm_api::bind(&args.api_sock).map_err(policy::api_error)?)
    };
    let options = vmm_api::Options {
        max_payload: args.http_api_max_payload_size,
        seccomp: !args.no_seccomp,
        ..Default::default()
    };
    let Some(file) = &args.config_file else {
        // The API alone: wait for the configuration and InstanceStart.
        let listener =
            listener.ok_or_else(|| Error::config("--no-api", "", "needs --config-file"))?;
        let server = vmm_api::ApiServer::start(listener, &args.api_sock, options)
            .map_err(policy::api_error)?;
        log::info!(
            "API on {}; waiting for InstanceStart",
            args.api_sock.display()
        );
        let mut controller = vmm_api::Controller::new(
            args.id.clone(),
            overrides,
            started,
            Box::new(policy.running()),
        );
        return Ok(match policy.serve(&mut controller, &server) {
            vmm_api::Served::VmEnded(end) => end,
            vmm_api::Served::Signalled(sig) => VmEnd::Signal(sig),
        });
    };
    // The config file's VM, started now, with the API (unless --no-api)
    // for the running VM.
    let parsed = config_file::read(file)?;
    if let Some(l) = &parsed.logger {
        let settings = policy::logger_settings(l).map_err(|e| Error::config("logger", "", e))?;
        vmm::logging::apply(&settings).map_err(|e| Error::config("logger", "", e))?;
    }
    let cfg = parsed.resolve(file, overrides)?;
    let handle = Vmm::build(&cfg, started)?.end_codes(exit::of_end).start()?;
    match listener {
        Some(listener) => {
            policy.serve_running(listener, &args.api_sock, options, &args.id, cfg, handle)
        }
        None => Ok(policy.wait(&handle)),
    }
}
