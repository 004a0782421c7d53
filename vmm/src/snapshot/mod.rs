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
