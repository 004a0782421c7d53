//! A KVM virtual machine monitor: boots a Linux guest kernel with its own
//! memory, vCPUs and devices. `VmConfig` says what to build, `Vmm::build`
//! builds it and `Vmm::run` runs it until the guest ends.

pub mod builder;
pub mod cmdline;
pub mod config;
pub mod config_file;
pub mod device_manager;
pub mod error;
pub mod event_loop;
pub mod host;
pub mod image;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
pub mod seccomp;
mod signals;
mod terminal;
pub mod vcpu;
pub mod vm;

pub use builder::Vmm;
pub use config::VmConfig;
pub use error::{exit_code, Error, Result};
pub use vcpu::VmEnd;
