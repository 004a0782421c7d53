//! A running VM's guest command, after boot: the command a template's (or
//! a container's) init waits for on the command device, and the signals
//! the VMM queues there for init to send (`vmm-runtime start` and `kill`).

use crate::handle::{HandleError, VmHandle, VmState};

impl VmHandle {
    /// Hands `args` to the guest's init through the command device: the
    /// command a template's (or a container's) init waits for. Refused
    /// once a command was given, when the VM has ended, or for a command
    /// the device cannot carry.
    pub fn give_command(&self, args: &[Vec<u8>]) -> Result<(), HandleError> {
        if self.state() == VmState::Ended {
            return Err(HandleError::Ended);
        }
        let mut dev = devices::bus::lock(&self.shared.legacy.command);
        if dev.has_command() {
            return Err(HandleError::Command("a command was given already".into()));
        }
        dev.set_command(args).map_err(HandleError::Command)
    }

    /// Asks the guest's init to send signal `sig` to the command it runs
    /// (with `all`, to every process of the guest): `vmm-runtime kill`.
    /// Refused when the VM has ended or the signal cannot be queued.
    pub fn send_signal(&self, sig: i32, all: bool) -> Result<(), HandleError> {
        if self.state() == VmState::Ended {
            return Err(HandleError::Ended);
        }
        devices::bus::lock(&self.shared.legacy.command)
            .send_signal(sig, all)
            .map_err(HandleError::Command)
    }
}
