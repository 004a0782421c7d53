//! A VM's state for snapshots: every vCPU's KVM state (`vcpu`) and the
//! VM's own (`vm`: irqchip, PIT, clock), captured from a paused VM and put
//! back into a new one. (Work toward issue 24: the state file, the devices
//! and the restore path come next.)

pub mod vcpu;
pub mod vm;

pub use vcpu::VcpuState;
pub use vm::VmState;

/// A KVM call that failed while saving or restoring state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The call and its error.
    #[error(transparent)]
    Kvm(#[from] crate::vm::KvmCall),
    /// KVM took fewer MSRs than given.
    #[error("KVM took {set} of the {given} MSRs")]
    Msrs {
        /// How many it took.
        set: usize,
        /// How many were given.
        given: usize,
    },
    /// A list KVM gave or takes could not be made.
    #[error("cannot make the {0} list: {1}")]
    List(&'static str, String),
}
