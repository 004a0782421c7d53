//! The process exit codes of the `vmm` command (and its `firecracker`
//! mode and `vmm-bench`): the front ends' mapping of the library's errors
//! and of how a VM ended. Documented in docs/command-line.md; tests
//! assert them.

use vmm::{Error, VmEnd};

/// The codes.
pub mod code {
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
    /// `--image` names no container image this VMM runs.
    pub const CONTAINER_IMAGE: i32 = 12;
    /// A blob of the container image is not what the image says.
    pub const IMAGE_CONTENT: i32 = 13;
    /// A snapshot cannot be restored here: its state file is of another
    /// format version, corrupt or truncated, its memory file of another
    /// size, its CPU features not all on this host, a device's state not
    /// what this VM's device takes.
    pub const SNAPSHOT: i32 = 14;
}

/// The exit code for `e`.
pub fn of_error(e: &Error) -> i32 {
    use code::*;
    use vmm::config::ConfigError;
    match e {
        Error::Config(c) => match c {
            ConfigError::Value { .. } | ConfigError::File { .. } => CONFIG,
            ConfigError::Missing { .. } => FILE,
            ConfigError::NotAnImage { .. } | ConfigError::Disk { .. } => IMAGE,
        },
        Error::Kernel { source, .. } | Error::Initrd { source, .. } => match source {
            arch::boot::Error::ReadKernel(_) | arch::boot::Error::ReadInitrd(_) => FILE,
            arch::boot::Error::Cmdline(_) => CONFIG,
            _ => IMAGE,
        },
        Error::Host(vmm::host::HostError::KvmUnusable(_)) => KVM,
        Error::Device(vmm::device_manager::DeviceError::Tap { .. }) => NET,
        Error::Device(vmm::device_manager::DeviceError::Serial(_)) => CONFIG,
        Error::Handle(vmm::handle::HandleError::Restore(r)) => {
            use vmm::snapshot::restore::RestoreError as R;
            match r.as_ref() {
                R::StateFile {
                    source: vmm::snapshot::file::FileError::Io(_),
                    ..
                }
                | R::MemoryFile {
                    source: vmm::snapshot::memory::MemoryFileError::Io(_),
                    ..
                } => FILE,
                R::NoSuchDevice { .. } | R::NotTemplate | R::NoCommand | R::Command(_) => CONFIG,
                _ => SNAPSHOT,
            }
        }
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

/// The exit code for a VM that ended as `end`: the guest's own end is 0,
/// a command's status is the code (as `docker run`), a signal 128 + its
/// number, as a shell has it.
pub fn of_end(end: &VmEnd) -> i32 {
    use code::*;
    match end {
        VmEnd::Reset(_) | VmEnd::PowerOff | VmEnd::Halted(_) | VmEnd::Stopped => OK,
        VmEnd::CommandExited(status) => i32::from(*status),
        VmEnd::TripleFault { .. } | VmEnd::Crash(_) => GUEST_CRASH,
        VmEnd::InternalError { .. } => KVM_INTERNAL_ERROR,
        VmEnd::FailEntry { .. } => FAIL_ENTRY,
        VmEnd::VmmError(_) => VMM_ERROR,
        VmEnd::Signal(sig) => 128 + sig,
    }
}

/// Logs `e` with its causes on one line and returns its exit code: how
/// the front ends end on an error.
pub fn report(e: &Error) -> i32 {
    log::error!("{}", e.chain());
    of_error(e)
}

#[cfg(test)]
mod tests {
    use super::code::*;
    use super::*;

    #[test]
    fn codes_are_distinct() {
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
            SNAPSHOT,
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }

    #[test]
    fn errors_map_to_their_codes() {
        use vmm::config::ConfigError;
        assert_eq!(
            of_error(&Error::config("--memory", 0, "must be above 0")),
            CONFIG
        );
        let kernel = |source| Error::Kernel {
            path: "k".into(),
            source,
        };
        assert_eq!(of_error(&kernel(arch::boot::Error::UnknownFormat)), IMAGE);
        assert_eq!(
            of_error(&kernel(arch::boot::Error::ReadKernel(
                std::io::Error::other("x")
            ))),
            FILE
        );
        let missing = ConfigError::Missing {
            what: "kernel",
            path: "k".into(),
            reason: "x".into(),
        };
        assert_eq!(of_error(&missing.into()), FILE);
        let host = vmm::host::HostError::KvmUnusable("x".into());
        assert_eq!(of_error(&host.into()), KVM);
        let tap = vmm::device_manager::DeviceError::Tap {
            name: "t".into(),
            reason: "x".into(),
        };
        assert_eq!(of_error(&tap.into()), NET);
        use vmm::snapshot::restore::RestoreError;
        let restore =
            |r: RestoreError| -> Error { vmm::handle::HandleError::Restore(Box::new(r)).into() };
        assert_eq!(of_error(&restore(RestoreError::Cpu("x".into()))), SNAPSHOT);
        assert_eq!(of_error(&restore(RestoreError::NotTemplate)), CONFIG);
        let version = RestoreError::StateFile {
            path: "s".into(),
            source: vmm::snapshot::file::FileError::Version { found: 9 },
        };
        assert_eq!(of_error(&restore(version)), SNAPSHOT);
        // The VMM's own failures are never configuration errors.
        let vm = vmm::vm::VmError::Unmapped { slot: 1 };
        assert_eq!(of_error(&vm.into()), VMM_ERROR);
    }

    #[test]
    fn ends_map_to_their_codes() {
        for status in [0u8, 3, 126, 127, 137, 255] {
            assert_eq!(of_end(&VmEnd::CommandExited(status)), i32::from(status));
        }
        assert_eq!(of_end(&VmEnd::Reset("x")), OK);
        assert_eq!(of_end(&VmEnd::Stopped), OK);
        assert_eq!(of_end(&VmEnd::Crash(0)), GUEST_CRASH);
        assert_eq!(
            of_end(&VmEnd::TripleFault { vcpu: 0, rip: None }),
            GUEST_CRASH
        );
        assert_eq!(
            of_end(&VmEnd::InternalError {
                vcpu: 0,
                suberror: 1,
                rip: 0,
                insn: vec![]
            }),
            KVM_INTERNAL_ERROR
        );
        assert_eq!(of_end(&VmEnd::FailEntry { vcpu: 0, reason: 7 }), FAIL_ENTRY);
        assert_eq!(of_end(&VmEnd::VmmError("x".into())), VMM_ERROR);
        assert_eq!(of_end(&VmEnd::Signal(15)), 143);
    }
}
