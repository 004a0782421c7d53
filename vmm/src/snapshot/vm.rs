//! The VM's own KVM state: the in-kernel irqchip (PIC master and slave,
//! IOAPIC), the PIT and the KVM clock.

use kvm_bindings::{
    kvm_clock_data, kvm_irqchip, kvm_pit_state2, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
};
use kvm_ioctls::VmFd;
use serde::{Deserialize, Serialize};

use super::StateError;
use crate::vm::kvm_call;

/// The VM's irqchip, PIT and clock.
#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    /// PIC master, PIC slave, IOAPIC.
    pub irqchips: Vec<kvm_irqchip>,
    /// The PIT's channels.
    pub pit: kvm_pit_state2,
    /// kvmclock's value when saved.
    pub clock: kvm_clock_data,
}

impl std::fmt::Debug for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmState")
            .field("clock", &self.clock.clock)
            .finish()
    }
}

const CHIPS: [u32; 3] = [
    KVM_IRQCHIP_PIC_MASTER,
    KVM_IRQCHIP_PIC_SLAVE,
    KVM_IRQCHIP_IOAPIC,
];

/// Reads `vm`'s state; its vCPUs must be out of KVM_RUN.
pub fn save(vm: &VmFd) -> Result<VmState, StateError> {
    let mut irqchips = Vec::with_capacity(CHIPS.len());
    for chip_id in CHIPS {
        let mut chip = kvm_irqchip {
            chip_id,
            ..Default::default()
        };
        vm.get_irqchip(&mut chip)
            .map_err(kvm_call("KVM_GET_IRQCHIP"))?;
        irqchips.push(chip);
    }
    let pit = vm.get_pit2().map_err(kvm_call("KVM_GET_PIT2"))?;
    let mut clock = vm.get_clock().map_err(kvm_call("KVM_GET_CLOCK"))?;
    // Only the value is restored (KVM refuses other flags on set).
    clock.flags = 0;
    Ok(VmState {
        irqchips,
        pit,
        clock,
    })
}

/// Puts `state` into `vm`, a new VM with its irqchip and PIT.
pub fn restore(vm: &VmFd, state: &VmState) -> Result<(), StateError> {
    vm.set_pit2(&state.pit).map_err(kvm_call("KVM_SET_PIT2"))?;
    vm.set_clock(&state.clock)
        .map_err(kvm_call("KVM_SET_CLOCK"))?;
    for chip in &state.irqchips {
        vm.set_irqchip(chip).map_err(kvm_call("KVM_SET_IRQCHIP"))?;
    }
    Ok(())
}
