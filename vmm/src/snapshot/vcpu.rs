//! One vCPU's KVM state, saved and restored in the order Firecracker's and
//! Cloud Hypervisor's code use, for the reasons they give:
//!
//! - saved: the MP state first (reading it makes KVM finish a pending INIT
//!   or SIPI into the registers), then the registers, the segment and
//!   control registers, XSAVE (FPU, SSE, AVX), XCRs, debug registers, the
//!   local APIC, the TSC frequency, the MSRs (KVM's whole save list, the
//!   paravirtual range included) and the vCPU events last (pending
//!   exceptions and interrupts that the reads above can change);
//! - restored: CPUID first (it decides which MSRs and XSAVE features the
//!   rest may set), the MP state, registers, segment and control registers,
//!   XSAVE, XCRs, debug registers, the local APIC, the MSRs (after the
//!   APIC: the TSC deadline MSR is ignored while the APIC timer is in
//!   another mode) and the vCPU events last.

use kvm_bindings::{
    kvm_debugregs, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs,
    kvm_vcpu_events, kvm_xcrs, kvm_xsave, CpuId, Msrs,
};
use kvm_ioctls::VcpuFd;
use serde::{Deserialize, Serialize};

use super::StateError;
use crate::vm::kvm_call;

/// Everything KVM holds of one vCPU.
#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    /// The vCPU's index (its APIC id).
    pub id: u8,
    /// Its CPUID, as set at boot.
    pub cpuid: Vec<kvm_bindings::kvm_cpuid_entry2>,
    /// Running, halted, waiting for SIPI.
    pub mp_state: kvm_mp_state,
    /// General registers.
    pub regs: kvm_regs,
    /// Segment, control and descriptor-table registers.
    pub sregs: kvm_sregs,
    /// FPU, SSE, AVX state.
    pub xsave: kvm_xsave,
    /// XCR0.
    pub xcrs: kvm_xcrs,
    /// DR0-DR7.
    pub debugregs: kvm_debugregs,
    /// The local APIC's registers.
    pub lapic: kvm_lapic_state,
    /// The TSC's frequency, kHz (None where KVM cannot say).
    pub tsc_khz: Option<u32>,
    /// Every MSR on KVM's save list.
    pub msrs: Vec<kvm_msr_entry>,
    /// Pending exceptions, interrupts, NMIs, SMIs.
    pub vcpu_events: kvm_vcpu_events,
}

impl std::fmt::Debug for VcpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VcpuState")
            .field("id", &self.id)
            .field("rip", &format_args!("{:#x}", self.regs.rip))
            .field("mp_state", &self.mp_state.mp_state)
            .field("msrs", &self.msrs.len())
            .finish()
    }
}

/// The MSRs whose values a snapshot keeps: KVM's save list
/// (KVM_GET_MSR_INDEX_LIST, which holds the paravirtual MSRs of the KVM
/// range 0x4b564d00 too).
pub fn msr_list(kvm: &kvm_ioctls::Kvm) -> Result<Vec<u32>, StateError> {
    let list = kvm
        .get_msr_index_list()
        .map_err(kvm_call("KVM_GET_MSR_INDEX_LIST"))?;
    Ok(list.as_slice().to_vec())
}

/// Reads `fd`'s state (vCPU `id`); the vCPU must be out of KVM_RUN.
/// First KVM finishes the instruction the vCPU last exited for (an I/O
/// port or MMIO read whose value is still to be written into a register):
/// KVM does that on the next KVM_RUN only, and keeps the pending part
/// where no state call reads it (the KVM API's note on KVM_EXIT_IO and
/// migration). With `immediate_exit` set, that KVM_RUN finishes it and
/// returns at once without running the guest, as Firecracker does before
/// saving.
pub fn save(fd: &mut VcpuFd, id: u8, msr_indices: &[u32]) -> Result<VcpuState, StateError> {
    fd.set_kvm_immediate_exit(1);
    let finished = fd.run().map(|_| ());
    fd.set_kvm_immediate_exit(0);
    match finished {
        Err(e) if e.errno() != libc::EINTR && e.errno() != libc::EAGAIN => {
            return Err(kvm_call("KVM_RUN (finishing the last exit)")(e).into())
        }
        _ => {}
    }
    let cpuid = fd
        .get_cpuid2(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_call("KVM_GET_CPUID2"))?;
    let mp_state = fd.get_mp_state().map_err(kvm_call("KVM_GET_MP_STATE"))?;
    let regs = fd.get_regs().map_err(kvm_call("KVM_GET_REGS"))?;
    let sregs = fd.get_sregs().map_err(kvm_call("KVM_GET_SREGS"))?;
    let xsave = fd.get_xsave().map_err(kvm_call("KVM_GET_XSAVE"))?;
    let xcrs = fd.get_xcrs().map_err(kvm_call("KVM_GET_XCRS"))?;
    let debugregs = fd.get_debug_regs().map_err(kvm_call("KVM_GET_DEBUGREGS"))?;
    let lapic = fd.get_lapic().map_err(kvm_call("KVM_GET_LAPIC"))?;
    let tsc_khz = fd.get_tsc_khz().ok();
    let entries: Vec<kvm_msr_entry> = msr_indices
        .iter()
        .map(|&index| kvm_msr_entry {
            index,
            ..Default::default()
        })
        .collect();
    let mut msrs =
        Msrs::from_entries(&entries).map_err(|e| StateError::List("MSR", format!("{e:?}")))?;
    let read = fd.get_msrs(&mut msrs).map_err(kvm_call("KVM_GET_MSRS"))?;
    // KVM stops at the first MSR it cannot read: keep what it read.
    let msrs = msrs.as_slice()[..read].to_vec();
    let vcpu_events = fd
        .get_vcpu_events()
        .map_err(kvm_call("KVM_GET_VCPU_EVENTS"))?;
    Ok(VcpuState {
        id,
        cpuid: cpuid.as_slice().to_vec(),
        mp_state,
        regs,
        sregs,
        xsave,
        xcrs,
        debugregs,
        lapic,
        tsc_khz,
        msrs,
        vcpu_events,
    })
}

/// TSS types of the task register: available and busy.
const TSS_AVAILABLE: u8 = 9;
const TSS_BUSY: u8 = 11;

/// Puts `state` into `fd`, a new vCPU of a new VM. `tcg_task_register`:
/// the host is QEMU's TCG (`host::cpu_is_qemu_tcg`), whose SVM keeps the
/// task register's type "available" where KVM reports it "busy" (as
/// hardware has it); given back busy, TCG faults every I/O instruction a
/// guest process was allowed by ioperm. The type goes back as TCG keeps
/// it there, and as it is everywhere else.
pub fn restore(fd: &VcpuFd, state: &VcpuState, tcg_task_register: bool) -> Result<(), StateError> {
    let cpuid = CpuId::from_entries(&state.cpuid)
        .map_err(|e| StateError::List("CPUID", format!("{e:?}")))?;
    fd.set_cpuid2(&cpuid).map_err(kvm_call("KVM_SET_CPUID2"))?;
    if let Some(khz) = state.tsc_khz {
        // A host whose TSC runs at another rate scales the guest's (where
        // KVM can); the guest's clock stays its own.
        if fd.get_tsc_khz().ok() != Some(khz) {
            fd.set_tsc_khz(khz).map_err(kvm_call("KVM_SET_TSC_KHZ"))?;
        }
    }
    fd.set_mp_state(state.mp_state)
        .map_err(kvm_call("KVM_SET_MP_STATE"))?;
    fd.set_regs(&state.regs).map_err(kvm_call("KVM_SET_REGS"))?;
    let mut sregs = state.sregs;
    if tcg_task_register && sregs.tr.type_ == TSS_BUSY {
        sregs.tr.type_ = TSS_AVAILABLE;
    }
    fd.set_sregs(&sregs).map_err(kvm_call("KVM_SET_SREGS"))?;
    // SAFETY: the XSAVE area was read from a vCPU of the same kind of
    // host by KVM_GET_XSAVE; KVM checks what it is given.
    unsafe { fd.set_xsave(&state.xsave) }.map_err(kvm_call("KVM_SET_XSAVE"))?;
    fd.set_xcrs(&state.xcrs).map_err(kvm_call("KVM_SET_XCRS"))?;
    fd.set_debug_regs(&state.debugregs)
        .map_err(kvm_call("KVM_SET_DEBUGREGS"))?;
    fd.set_lapic(&state.lapic)
        .map_err(kvm_call("KVM_SET_LAPIC"))?;
    let msrs =
        Msrs::from_entries(&state.msrs).map_err(|e| StateError::List("MSR", format!("{e:?}")))?;
    let set = fd.set_msrs(&msrs).map_err(kvm_call("KVM_SET_MSRS"))?;
    if set != state.msrs.len() {
        return Err(StateError::Msrs {
            set,
            given: state.msrs.len(),
        });
    }
    fd.set_vcpu_events(&state.vcpu_events)
        .map_err(kvm_call("KVM_SET_VCPU_EVENTS"))?;
    Ok(())
}
