//! A KVM virtual machine monitor: boots a Linux guest kernel with its own
//! memory, vCPUs and devices. `VmConfig` says what to build, `Vmm::build`
//! builds it, `Vmm::start` starts it and returns a `VmHandle` that any
//! thread may use to pause, resume, stop or wait for it (`Vmm::run` is
//! start and wait). The library sets no process-wide policy: stop signals,
//! the terminal's mode and the calling thread's seccomp filter are the
//! front end's choices.

pub mod builder;
pub mod cmdline;
pub mod config;
pub mod config_file;
pub mod control;
pub mod device_manager;
pub mod error;
pub mod event_loop;
mod guest_command;
pub mod handle;
pub mod host;
pub mod image;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
pub mod seccomp;
pub mod snapshot;
pub mod vcpu;
pub mod vm;

pub use builder::Vmm;

/// A log level by Firecracker's names (Error, Warning, Info, Debug, Trace,
/// Off) or the `log` crate's, in any case.
pub fn logging_level(name: &str) -> std::result::Result<log::LevelFilter, String> {
    match name.to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warning" | "warn" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        "off" => Ok(log::LevelFilter::Off),
        _ => Err(format!(
            "'{name}' is not a level: Error, Warning, Info, Debug, Trace or Off"
        )),
    }
}
pub use config::VmConfig;
pub use error::{Error, Result};
pub use handle::{HandleError, VmHandle, VmState};
pub use vcpu::VmEnd;
