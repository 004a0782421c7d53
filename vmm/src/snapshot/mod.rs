//! A VM's state for snapshots: every vCPU's KVM state (`vcpu`) and the
//! VM's own (`vm`: irqchip, PIT, clock), captured from a paused VM and put
//! back into a new one. (Work toward issue 24: the state file, the devices
//! and the restore path come next.)

pub mod file;
pub mod memory;
pub mod vcpu;
pub mod vm;

pub use vcpu::VcpuState;
pub use vm::VmState;

/// What KVM holds of a paused VM: every vCPU's state and the VM's.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Each vCPU's, by index.
    pub vcpus: Vec<VcpuState>,
    /// The irqchip's, the PIT's and the clock's.
    pub vm: VmState,
}

/// Guest RAM as bytes: every region's, in order (what a memory file holds).
pub fn read_ram(mem: &vm_memory::GuestMemoryMmap) -> Vec<u8> {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
    let mut out = Vec::new();
    for region in mem.iter() {
        let start = out.len();
        out.resize(start + region.len() as usize, 0);
        // The region is mapped whole: reading it cannot fail.
        let _ = mem.read_slice(&mut out[start..], region.start_addr());
    }
    out
}

/// Writes `ram` (as `read_ram` gave it) into `mem`'s regions. Returns
/// false when the sizes differ.
pub fn write_ram(mem: &vm_memory::GuestMemoryMmap, ram: &[u8]) -> bool {
    use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryRegion};
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    if total != ram.len() as u64 {
        return false;
    }
    let mut at = 0usize;
    for region in mem.iter() {
        let len = region.len() as usize;
        if mem
            .write_slice(&ram[at..at + len], region.start_addr())
            .is_err()
        {
            return false;
        }
        at += len;
    }
    true
}

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
