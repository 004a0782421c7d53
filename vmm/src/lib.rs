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
pub mod handle;
pub mod host;
pub mod image;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
pub mod seccomp;
pub mod vcpu;
pub mod vm;

pub use builder::Vmm;
pub use config::VmConfig;
pub use error::{exit_code, Error, Result};
pub use handle::{HandleError, VmHandle, VmState};
pub use vcpu::VmEnd;
