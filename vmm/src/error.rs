//! The library's umbrella error: what stops a VM from being built or
//! started, composed of each module's own error (the modules never name
//! this type). Which process exit code an error becomes is the front
//! end's choice (the `vmm` command's is in `vmm/cli/src/exit.rs`).

use std::path::PathBuf;

/// Everything that stops the VMM before or while it starts a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration: a value, a config file's field, a file it names.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The kernel image is not one the VMM boots.
    #[error("kernel '{}'", path.display())]
    Kernel {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: arch::boot::Error,
    },
    /// The initrd cannot be placed.
    #[error("initrd '{}'", path.display())]
    Initrd {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: arch::boot::Error,
    },
    /// The VM itself could not be made (memory, boot structures, KVM).
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    /// Devices could not be made or wired to the VM (a TAP among them).
    #[error(transparent)]
    Device(#[from] crate::device_manager::DeviceError),
    /// A vCPU could not be set up.
    #[error(transparent)]
    Vcpu(#[from] crate::vcpu::VcpuError),
    /// The seccomp filters could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The VM could not be started or driven through its handle.
    #[error(transparent)]
    Handle(#[from] crate::handle::HandleError),
    /// The host could not provide something the VM needs (KVM among it).
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// A container image (`--image`) cannot be run.
    #[error(transparent)]
    ContainerImage(#[from] vmm_image::Error),
}

impl From<crate::image::ImageRunError> for Error {
    fn from(e: crate::image::ImageRunError) -> Self {
        match e {
            crate::image::ImageRunError::Config(c) => Error::Config(c),
            crate::image::ImageRunError::Image(i) => Error::ContainerImage(i),
        }
    }
}

impl From<devices::bus::Error> for Error {
    fn from(e: devices::bus::Error) -> Self {
        Error::Device(e.into())
    }
}

impl Error {
    /// This error with its causes, one line ("what: cause: cause").
    pub fn chain(&self) -> String {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        msg
    }

    /// Shorthand for a configuration error.
    pub fn config(field: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        crate::config::ConfigError::value(field, value, reason).into()
    }
}

/// Result of the VMM's operations.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_say_what_and_why() {
        use crate::vm::VmError;
        for (e, says) in [
            (
                Error::from(VmError::Unmapped { slot: 1 }),
                "guest memory region 1 has no host mapping",
            ),
            (
                Error::from(VmError::CreationPanicked),
                "the thread creating the VM panicked",
            ),
            (
                Error::from(crate::device_manager::DeviceError::EventFd(
                    "virtio interrupt",
                    std::io::Error::other("x"),
                )),
                "cannot create the virtio interrupt eventfd",
            ),
            (
                Error::config("--vcpus", 0, "must be at least 1"),
                "invalid --vcpus '0': must be at least 1",
            ),
        ] {
            assert_eq!(e.to_string(), says);
        }
        let kernel = Error::Kernel {
            path: "k".into(),
            source: arch::boot::Error::UnknownFormat,
        };
        assert!(
            kernel.chain().starts_with("kernel 'k': "),
            "{}",
            kernel.chain()
        );
    }
}
