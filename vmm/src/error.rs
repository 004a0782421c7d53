//! The VMM's errors and the process exit codes they map to.

use std::path::PathBuf;

/// Process exit codes. Documented in the README; tests assert them.
pub mod exit_code {
    /// The guest ended itself: reset, reboot or power-off.
    pub const OK: i32 = 0;
    /// An error inside the VMM (a KVM call that should not fail, a thread
    /// that could not start).
    pub const VMM_ERROR: i32 = 1;
    /// Command-line syntax error (unknown flag, missing value).
    pub const USAGE: i32 = 2;
    /// A configuration value is invalid (memory, vCPUs, command line,
    /// serial output).
    pub const CONFIG: i32 = 3;
    /// A file given to the VMM is missing or unreadable.
    pub const FILE: i32 = 4;
    /// The kernel, initrd or a disk is not a usable image.
    pub const IMAGE: i32 = 5;
    /// KVM is unavailable: /dev/kvm missing or not accessible, or lacking a
    /// capability the VMM needs.
    pub const KVM: i32 = 6;
    /// The guest crashed: a triple fault or a crash reported by KVM.
    pub const GUEST_CRASH: i32 = 7;
    /// KVM stopped the guest with an internal error, such as an instruction
    /// its emulator cannot run.
    pub const KVM_INTERNAL_ERROR: i32 = 8;
    /// The hardware refused to enter the guest (KVM_EXIT_FAIL_ENTRY).
    pub const FAIL_ENTRY: i32 = 9;
    /// A TAP device for a network interface cannot be opened or created.
    pub const NET: i32 = 10;
    /// A VMM thread made a system call its seccomp filter forbids.
    pub const SECCOMP: i32 = 11;
    /// `--image` names no container image this VMM runs: not an OCI image
    /// layout or `docker save` archive, no such tag, an image for another
    /// platform, a layer media type it cannot unpack.
    pub const CONTAINER_IMAGE: i32 = 12;
    /// A blob of the container image is not what the image says: a digest
    /// that does not match its manifest or config, a corrupt tarball, or a
    /// layer that would write outside the image's root.
    pub const IMAGE_CONTENT: i32 = 13;
}

/// Everything that stops the VMM before or while it runs a guest.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An invalid configuration value.
    #[error("invalid {field} '{value}': {reason}")]
    Config {
        /// The option or field, e.g. "--memory".
        field: String,
        /// The value given.
        value: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A config file's content is wrong.
    #[error("config file '{}': {at}: {reason}", file.display())]
    ConfigFile {
        /// The config file.
        file: PathBuf,
        /// Where: a field's path (drives[1].is_read_only) or a line and
        /// column.
        at: String,
        /// What is wrong, and what would be right.
        reason: String,
    },
    /// A file that does not exist or cannot be read.
    #[error("{what} '{}': {reason}", path.display())]
    File {
        /// What the file is for ("kernel", "initrd").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A kernel or initrd that is no image at all: empty, or not a
    /// regular file (a FIFO, a character device, a socket).
    #[error("{what} '{}': {reason}", path.display())]
    Image {
        /// What the file is for ("kernel", "initrd").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A disk image that cannot be used.
    #[error("disk '{}': {reason}", path.display())]
    Disk {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
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
    /// A TAP device cannot be opened or created.
    #[error("TAP '{name}': {reason}")]
    Tap {
        /// The TAP name.
        name: String,
        /// What went wrong and what to do about it.
        reason: String,
    },
    /// KVM cannot be used.
    #[error("KVM is not usable: {0}")]
    Kvm(String),
    /// A KVM call failed while building or running the VM.
    #[error(transparent)]
    KvmCall(#[from] KvmCall),
    /// The VM itself could not be made (memory, boot structures, the
    /// event loop): the VMM's failure, not the configuration's.
    #[error(transparent)]
    Vm(#[from] crate::vm::VmError),
    /// Devices could not be wired to the VM.
    #[error(transparent)]
    Device(#[from] crate::device_manager::DeviceError),
    /// A vCPU's shared state could not be made.
    #[error(transparent)]
    Vcpu(#[from] crate::vcpu::VcpuError),
    /// The seccomp filters could not be built or installed.
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    /// The VM could not be started or driven through its handle.
    #[error(transparent)]
    Handle(#[from] crate::handle::HandleError),
    /// The host could not provide something the VM needs.
    #[error(transparent)]
    Host(#[from] crate::host::HostError),
    /// A container image (`--image`) cannot be run.
    #[error(transparent)]
    ContainerImage(#[from] vmm_image::Error),
}

impl From<devices::bus::Error> for Error {
    fn from(e: devices::bus::Error) -> Self {
        Error::Device(e.into())
    }
}

/// A KVM call that failed, and which.
#[derive(Debug, thiserror::Error)]
#[error("{what} failed")]
pub struct KvmCall {
    /// The call (its ioctl's name).
    pub what: &'static str,
    /// The errno.
    #[source]
    pub source: kvm_ioctls::Error,
}

impl Error {
    /// Logs this error with its causes, one line ("what: cause: cause"),
    /// and returns its exit code: how the front ends end on an error.
    pub fn report(&self) -> i32 {
        let mut msg = self.to_string();
        let mut src = std::error::Error::source(self);
        while let Some(s) = src {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            src = s.source();
        }
        log::error!("{msg}");
        self.exit_code()
    }

    /// The exit code for this error.
    pub fn exit_code(&self) -> i32 {
        use exit_code::*;
        match self {
            Error::Config { .. } | Error::ConfigFile { .. } => CONFIG,
            Error::File { .. } => FILE,
            Error::Disk { .. } | Error::Image { .. } => IMAGE,
            Error::Kernel { source, .. } | Error::Initrd { source, .. } => match source {
                arch::boot::Error::ReadKernel(_) | arch::boot::Error::ReadInitrd(_) => FILE,
                arch::boot::Error::Cmdline(_) => CONFIG,
                _ => IMAGE,
            },
            Error::Kvm(_) => KVM,
            Error::Tap { .. } => NET,
            Error::ContainerImage(e) => match e.class() {
                vmm_image::Class::Missing => FILE,
                vmm_image::Class::Reference => CONTAINER_IMAGE,
                vmm_image::Class::Content => IMAGE_CONTENT,
                vmm_image::Class::Config => CONFIG,
                vmm_image::Class::Host => VMM_ERROR,
            },
            _ => VMM_ERROR,
        }
    }

    /// Shorthand for a configuration error.
    pub fn config(field: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        Error::Config {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// Shorthand for a failed KVM call.
    pub fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |source| Error::KvmCall(KvmCall { what, source })
    }
}

/// Result of the VMM's operations.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        use exit_code::*;
        let all = [
            OK,
            VMM_ERROR,
            USAGE,
            CONFIG,
            FILE,
            IMAGE,
            KVM,
            GUEST_CRASH,
            KVM_INTERNAL_ERROR,
            FAIL_ENTRY,
            NET,
            SECCOMP,
            CONTAINER_IMAGE,
            IMAGE_CONTENT,
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(
            Error::config("--memory", 0, "must be above 0").exit_code(),
            exit_code::CONFIG
        );
        let kernel = |source| Error::Kernel {
            path: "k".into(),
            source,
        };
        assert_eq!(
            kernel(arch::boot::Error::UnknownFormat).exit_code(),
            exit_code::IMAGE
        );
        assert_eq!(
            kernel(arch::boot::Error::ReadKernel(std::io::Error::other("x"))).exit_code(),
            exit_code::FILE
        );
        assert_eq!(Error::Kvm("x".into()).exit_code(), exit_code::KVM);
        // The VMM's own failures are never configuration errors.
        use crate::vm::VmError;
        for (e, says) in [
            (
                Error::from(VmError::Unmapped { slot: 1 }),
                "guest memory region 1 has no host mapping",
            ),
            (
                Error::from(VmError::RegistrationPanicked),
                "the thread registering guest memory with KVM panicked",
            ),
            (
                Error::from(crate::device_manager::DeviceError::EventFd(
                    "virtio interrupt",
                    std::io::Error::other("x"),
                )),
                "cannot create the virtio interrupt eventfd",
            ),
        ] {
            assert_eq!(e.exit_code(), exit_code::VMM_ERROR, "{e}");
            assert_eq!(e.to_string(), says);
        }
        let msg = Error::config("--vcpus", 0, "must be at least 1").to_string();
        assert_eq!(msg, "invalid --vcpus '0': must be at least 1");
    }
}
