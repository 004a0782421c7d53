//! Snapshots: a paused VM written to two files and restored from them in
//! a new process. Every vCPU's KVM state (`vcpu`), the VM's own (`vm`:
//! irqchip, PIT, clock), every device's (`DevicesSnapshot`), the VM's
//! configuration: the state file (`file`); guest RAM: the memory file
//! (`memory`), mapped private on restore (`restore`).

pub mod create;
pub mod file;
pub mod memory;
pub mod restore;
pub mod vcpu;
pub mod vm;

use std::sync::{Arc, Mutex};

use devices::cmos::{Cmos, CmosSnapshot};
use devices::command::{CommandDevice, CommandSnapshot};
use devices::exit_device::ExitDevice;
use devices::i8042::I8042Snapshot;
use devices::serial::SerialSnapshot;
use devices::virtio::mmio::TransportSnapshot;

pub use restore::{RestoreError, RestoreOptions};
pub use vcpu::VcpuState;
pub use vm::VmState;

/// A snapshot directory's state file (`vmm snapshot DIR`, `vmm template
/// create DIR`, read by `vmm run --from DIR`).
pub const STATE_FILE: &str = "vm.state";
/// A snapshot directory's memory file.
pub const MEMORY_FILE: &str = "vm.mem";

/// The state file and the memory file of the snapshot directory `dir`.
pub fn dir_files(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join(STATE_FILE), dir.join(MEMORY_FILE))
}

/// What a paused VM is: every vCPU's state, the VM's and the devices'.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    /// Each vCPU's, by index.
    pub vcpus: Vec<VcpuState>,
    /// The irqchip's, the PIT's and the clock's.
    pub vm: VmState,
    /// The devices'.
    pub devices: DevicesSnapshot,
}

/// Every device's state. The boot timer has none the guest can see (it
/// records the host's timeline), the POST port sink none at all.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DevicesSnapshot {
    /// The serial port: registers, FIFO, input not yet in the FIFO.
    pub serial: SerialSnapshot,
    /// The i8042.
    pub i8042: I8042Snapshot,
    /// The CMOS.
    pub cmos: CmosSnapshot,
    /// The exit device: the status already reported, if any.
    pub exit_device: Option<u8>,
    /// The command device: whether init waits for a command.
    pub command: CommandSnapshot,
    /// Each virtio-mmio device, in slot order.
    pub virtio: Vec<TransportSnapshot>,
}

/// The legacy devices a snapshot reads besides the serial port and the
/// i8042 (which the handle holds for other reasons).
pub(crate) struct Legacy {
    pub cmos: Arc<Mutex<Cmos>>,
    pub exit_device: Arc<Mutex<ExitDevice>>,
    pub command: Arc<Mutex<CommandDevice>>,
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
