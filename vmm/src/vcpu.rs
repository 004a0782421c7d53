//! vCPUs: their boot configuration, the run loop of each vCPU thread, and
//! exit handling as a free function that unit tests drive with a dummy bus.

use std::sync::{Arc, Mutex};

use devices::boot_timer::{Phase, Timeline};
use devices::Bus;
use kvm_bindings::{
    kvm_dtable, CpuId, KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use crate::vm::{kvm_call, KvmCall};

type Result<T> = std::result::Result<T, VcpuError>;

/// What the vCPU loop does after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Handled; run the guest again.
    Continue,
    /// KVM_EXIT_HLT: the vCPU halted with no in-kernel LAPIC to wake it.
    Halt,
    /// KVM_EXIT_SHUTDOWN: triple fault (deliberate with reboot=t, or not).
    Shutdown,
    /// KVM_EXIT_SYSTEM_EVENT with its type.
    SystemEvent(u32),
    /// KVM_EXIT_INTERNAL_ERROR; details are in kvm_run.
    InternalError,
    /// KVM_EXIT_FAIL_ENTRY with the hardware reason.
    FailEntry(u64),
    /// An exit this VMM does not expect; the VM stops.
    Unexpected(String),
}

/// Handles one exit: port and MMIO accesses go to the buses (unknown
/// addresses read as all ones and are ignored on write); everything else is
/// classified for the run loop.
pub fn handle_exit(exit: VcpuExit, pio: &Bus, mmio: &Bus) -> ExitAction {
    match exit {
        VcpuExit::IoIn(port, data) => {
            pio.read(u64::from(port), data);
            ExitAction::Continue
        }
        VcpuExit::IoOut(port, data) => {
            pio.write(u64::from(port), data);
            ExitAction::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            mmio.read(addr, data);
            ExitAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            mmio.write(addr, data);
            ExitAction::Continue
        }
        VcpuExit::Hlt => ExitAction::Halt,
        VcpuExit::Shutdown => ExitAction::Shutdown,
        VcpuExit::SystemEvent(kind, _) => ExitAction::SystemEvent(kind),
        VcpuExit::InternalError => ExitAction::InternalError,
        VcpuExit::FailEntry(reason, _) => ExitAction::FailEntry(reason),
        // Interrupted by a signal or a pending event: just run again.
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => ExitAction::Continue,
        other => ExitAction::Unexpected(format!("{other:?}")),
    }
}

/// Why a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmEnd {
    /// The guest asked for a reset (i8042 0xFE with reboot=k, a deliberate
    /// triple fault with reboot=t, or a KVM reset event).
    Reset(&'static str),
    /// The guest powered off (KVM shutdown event).
    PowerOff,
    /// The guest's init reported the exit status of the command it ran
    /// (`vmm run -- COMMAND`) on the exit device: the VMM exits with it.
    CommandExited(u8),
    /// A vCPU halted for good (no in-kernel LAPIC).
    Halted(u8),
    /// A triple fault the guest did not ask for.
    TripleFault {
        /// vCPU index.
        vcpu: u8,
        /// Guest RIP at the fault; None where KVM reset the vCPU before
        /// reporting it (AMD: the VMCB is undefined after a shutdown).
        rip: Option<u64>,
    },
    /// The guest reported a crash to KVM.
    Crash(u8),
    /// The VMM was asked to stop (SIGTERM, SIGINT or SIGHUP): the VM is
    /// torn down cleanly, the terminal restored.
    Signal(i32),
    /// The VM's owner stopped it through its handle (`VmHandle::stop`).
    Stopped,
    /// KVM stopped the guest with an internal error.
    InternalError {
        /// vCPU index.
        vcpu: u8,
        /// KVM_INTERNAL_ERROR_* suberror.
        suberror: u32,
        /// Guest RIP.
        rip: u64,
        /// The instruction bytes KVM reported, if any.
        insn: Vec<u8>,
    },
    /// The hardware refused to enter the guest.
    FailEntry {
        /// vCPU index.
        vcpu: u8,
        /// Hardware reason.
        reason: u64,
    },
    /// The VMM itself failed while the guest ran.
    VmmError(String),
}

/// KVM's suberror for an instruction its emulator cannot run.
pub const KVM_INTERNAL_ERROR_EMULATION: u32 = 1;

impl VmEnd {
    /// A one-line description for the log.
    pub fn describe(&self) -> String {
        let hex = |b: &[u8]| {
            b.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        match self {
            VmEnd::Reset(how) => format!("guest reset the VM ({how})"),
            VmEnd::PowerOff => "guest powered off".into(),
            VmEnd::CommandExited(status) => {
                format!("the guest's command exited with status {status}")
            }
            VmEnd::Halted(v) => format!("vCPU {v} halted"),
            VmEnd::TripleFault {
                vcpu,
                rip: Some(rip),
            } => {
                format!("guest crashed: triple fault on vCPU {vcpu} at RIP {rip:#x}")
            }
            VmEnd::TripleFault { vcpu, rip: None } => format!(
                "guest crashed: triple fault on vCPU {vcpu} (RIP unknown: KVM put the vCPU \
                 in its reset state before reporting the shutdown, as it does on AMD)"
            ),
            VmEnd::Crash(v) => format!("guest crashed: crash event from vCPU {v}"),
            VmEnd::Signal(sig) => format!("stopped by signal {sig}; VM torn down"),
            VmEnd::Stopped => "stopped by its owner; VM torn down".into(),
            VmEnd::InternalError {
                vcpu,
                suberror,
                rip,
                insn,
            } if *suberror == KVM_INTERNAL_ERROR_EMULATION => {
                format!(
                    "KVM emulation failure on vCPU {vcpu} at RIP {rip:#x}: instruction bytes [{}]; \
                     KVM cannot emulate this instruction",
                    hex(insn)
                )
            }
            VmEnd::InternalError {
                vcpu,
                suberror,
                rip,
                ..
            } => {
                format!("KVM internal error {suberror} on vCPU {vcpu} at RIP {rip:#x}")
            }
            VmEnd::FailEntry { vcpu, reason } => {
                format!("KVM could not enter the guest on vCPU {vcpu}: hardware reason {reason:#x}")
            }
            VmEnd::VmmError(e) => format!("VMM error: {e}"),
        }
    }
}

/// A triple fault is a requested reset when the guest first loaded an empty
/// IDT, as Linux does for reboot=t (`idt_invalidate()` then `int3`).
///
/// On AMD, KVM puts the vCPU in its reset state (IDT limit 0xffff, RIP
/// 0xfff0) before it reports the shutdown, so neither the IDT nor the RIP
/// of the fault can be read: that is a crash whose RIP is unknown.
pub fn classify_shutdown(idt: kvm_dtable, vcpu: u8, rip: u64) -> VmEnd {
    if idt.limit == 0 && idt.base == 0 {
        VmEnd::Reset("triple fault with an empty IDT, as reboot=t does")
    } else if idt.base == 0 && idt.limit == 0xffff && rip == 0xfff0 {
        VmEnd::TripleFault { vcpu, rip: None }
    } else {
        VmEnd::TripleFault {
            vcpu,
            rip: Some(rip),
        }
    }
}

/// Maps a KVM system event to the end of the VM, if it is one.
pub fn classify_system_event(kind: u32, vcpu: u8) -> VmEnd {
    match kind {
        KVM_SYSTEM_EVENT_SHUTDOWN => VmEnd::PowerOff,
        KVM_SYSTEM_EVENT_RESET => VmEnd::Reset("KVM reset event"),
        KVM_SYSTEM_EVENT_CRASH => VmEnd::Crash(vcpu),
        other => VmEnd::VmmError(format!(
            "unexpected KVM system event {other} on vCPU {vcpu}"
        )),
    }
}

/// Shared between the vCPU threads and the main loop: the first reason the
/// VM ended, and an eventfd that wakes the main loop when it is set.
pub struct VmExitState {
    end: Mutex<Option<VmEnd>>,
    /// Signalled when `end` is set.
    pub evt: EventFd,
    /// The boot phases, stamped as they happen.
    pub timeline: Arc<Timeline>,
    /// The VM's threads, told to leave when the end is recorded.
    control: Arc<crate::control::Control>,
}

/// Failures setting up a vCPU's state or the state the vCPUs share.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    /// The eventfd that wakes the event loop at the VM's end.
    #[error("cannot create the exit eventfd")]
    ExitEventFd(#[source] std::io::Error),
    /// The boot registers could not be built.
    #[error("cannot set up the boot state")]
    Boot(#[from] arch::regs::Error),
    /// A KVM call failed.
    #[error(transparent)]
    Kvm(#[from] KvmCall),
}

impl VmExitState {
    /// A fresh state.
    pub fn new(timeline: Arc<Timeline>, control: Arc<crate::control::Control>) -> Result<Self> {
        Ok(VmExitState {
            end: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
                .map_err(VcpuError::ExitEventFd)?,
            timeline,
            control,
        })
    }

    /// Records `end` unless an earlier end is recorded, tells the VM's
    /// threads to leave (a paused one too) and wakes the event loop.
    pub fn finish(&self, end: VmEnd) {
        {
            let mut slot = devices::bus::lock(&self.end);
            if slot.is_none() {
                *slot = Some(end);
            }
        }
        self.control.stop();
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot signal the end of the VM: {e}");
        }
    }

    /// The recorded end, if any.
    pub fn end(&self) -> Option<VmEnd> {
        devices::bus::lock(&self.end).clone()
    }
}

/// Configures vCPU `id` of `topology` for the boot: CPUID, MSRs, registers,
/// segment and control registers, FPU and LAPIC.
pub fn configure(
    fd: &VcpuFd,
    id: u8,
    topology: arch::cpuid::Topology,
    base_cpuid: &CpuId,
    mem: &GuestMemoryMmap,
    entry: GuestAddress,
    mode: arch::EntryMode,
) -> Result<()> {
    let mut cpuid = base_cpuid.clone();
    arch::cpuid::for_vcpu(&mut cpuid, id, topology);
    // The TSC frequency KVM runs this vCPU's TSC at (KVM_GET_TSC_KHZ), for
    // the hypervisor timing leaf; a KVM without it leaves the leaf out.
    match fd.get_tsc_khz() {
        Ok(khz) => {
            if arch::cpuid::add_tsc_leaf(&mut cpuid, khz) && id == 0 {
                log::debug!("CPUID 0x40000010: TSC at {khz} kHz");
            }
        }
        Err(e) => log::debug!("vCPU {id}: no TSC frequency from KVM ({e})"),
    }
    fd.set_cpuid2(&cpuid).map_err(kvm_call("KVM_SET_CPUID2"))?;

    let msrs = arch::regs::boot_msrs()?;
    let set = fd.set_msrs(&msrs).map_err(kvm_call("KVM_SET_MSRS"))?;
    if set != msrs.as_slice().len() {
        log::warn!(
            "vCPU {id}: KVM took {set} of {} boot MSRs",
            msrs.as_slice().len()
        );
    }

    let mut lapic = fd.get_lapic().map_err(kvm_call("KVM_GET_LAPIC"))?;
    arch::regs::set_lint(&mut lapic);
    fd.set_lapic(&lapic).map_err(kvm_call("KVM_SET_LAPIC"))?;

    fd.set_fpu(&arch::regs::boot_fpu())
        .map_err(kvm_call("KVM_SET_FPU"))?;
    // Only the boot vCPU starts at the kernel entry; the others wait for
    // INIT/SIPI from it, as on real hardware.
    if id == 0 {
        let mut sregs = fd.get_sregs().map_err(kvm_call("KVM_GET_SREGS"))?;
        arch::regs::setup_sregs(mem, &mut sregs, mode)?;
        fd.set_sregs(&sregs).map_err(kvm_call("KVM_SET_SREGS"))?;
        fd.set_regs(&arch::regs::boot_regs(entry, mode))
            .map_err(kvm_call("KVM_SET_REGS"))?;
    }
    Ok(())
}

/// One vCPU and what its thread needs.
pub struct Vcpu {
    /// Index, also its APIC id.
    pub id: u8,
    /// The KVM vCPU.
    pub fd: VcpuFd,
    /// Port I/O bus.
    pub pio: Arc<Bus>,
    /// MMIO bus.
    pub mmio: Arc<Bus>,
    /// Shared end-of-VM state.
    pub exit: Arc<VmExitState>,
    /// Pause and stop requests.
    pub control: Arc<crate::control::Control>,
}

impl Vcpu {
    fn rip(&self) -> u64 {
        self.fd.get_regs().map(|r| r.rip).unwrap_or(0)
    }

    /// Turns a non-continue action into the end of the VM, reading what
    /// the action needs from the vCPU.
    fn resolve(&mut self, action: ExitAction) -> VmEnd {
        match action {
            ExitAction::Continue => VmEnd::VmmError("resolve called on Continue".into()),
            ExitAction::Halt => VmEnd::Halted(self.id),
            ExitAction::Shutdown => {
                let idt = self.fd.get_sregs().map(|s| s.idt).unwrap_or(kvm_dtable {
                    base: 1,
                    ..Default::default()
                });
                classify_shutdown(idt, self.id, self.rip())
            }
            ExitAction::SystemEvent(kind) => classify_system_event(kind, self.id),
            ExitAction::InternalError => {
                let (suberror, insn) = self.internal_error_details();
                VmEnd::InternalError {
                    vcpu: self.id,
                    suberror,
                    rip: self.rip(),
                    insn,
                }
            }
            ExitAction::FailEntry(reason) => VmEnd::FailEntry {
                vcpu: self.id,
                reason,
            },
            ExitAction::Unexpected(what) => {
                VmEnd::VmmError(format!("unexpected exit on vCPU {}: {what}", self.id))
            }
        }
    }

    fn internal_error_details(&mut self) -> (u32, Vec<u8>) {
        const FLAG_INSTRUCTION_BYTES: u64 = 1;
        let run = self.fd.get_kvm_run();
        // SAFETY: the last exit was KVM_EXIT_INTERNAL_ERROR, for which KVM
        // fills the `internal` member of the union (and, for emulation
        // failures, the `emulation_failure` view of the same bytes). Both
        // are plain integers, valid for any bit pattern.
        let (suberror, failure) = unsafe {
            (
                run.__bindgen_anon_1.internal.suberror,
                run.__bindgen_anon_1.emulation_failure,
            )
        };
        let mut insn = Vec::new();
        if suberror == KVM_INTERNAL_ERROR_EMULATION && failure.flags & FLAG_INSTRUCTION_BYTES != 0 {
            // SAFETY: the union has one member of plain integers.
            let bytes = unsafe { failure.__bindgen_anon_1.__bindgen_anon_1 };
            let n = usize::from(bytes.insn_size).min(bytes.insn_bytes.len());
            insn.extend_from_slice(&bytes.insn_bytes[..n]);
        }
        (suberror, insn)
    }

    /// The vCPU thread's body: run until the VM ends or the VMM stops it,
    /// parking whenever a pause is asked for.
    pub fn run(mut self) {
        use crate::control::{set_kick_target, Next};
        let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        set_kick_target(immediate_exit);
        let mut first = self.id == 0;
        while self
            .control
            .checkpoint_vcpu(usize::from(self.id), &mut self.fd)
            == Next::Go
        {
            if std::mem::take(&mut first) {
                self.exit.timeline.mark(Phase::FirstRun);
            }
            let action = match self.fd.run() {
                Ok(exit) => handle_exit(exit, &self.pio, &self.mmio),
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    // Kicked: back to the checkpoint.
                    self.fd.set_kvm_immediate_exit(0);
                    ExitAction::Continue
                }
                Err(e) => {
                    self.exit
                        .finish(VmEnd::VmmError(format!("KVM_RUN on vCPU {}: {e}", self.id)));
                    break;
                }
            };
            if action != ExitAction::Continue {
                let end = self.resolve(action);
                self.exit.finish(end);
                break;
            }
        }
        set_kick_target(std::ptr::null_mut());
        self.control.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::BusDevice;
    use std::time::Instant;

    #[derive(Default)]
    struct Dummy {
        log: Vec<(char, u64, Vec<u8>)>,
    }
    impl BusDevice for Dummy {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(0x42);
            self.log.push(('r', offset, data.to_vec()));
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.log.push(('w', offset, data.to_vec()));
        }
    }

    fn buses() -> (Bus, Bus, Arc<Mutex<Dummy>>, Arc<Mutex<Dummy>>) {
        let (p, m) = (
            Arc::new(Mutex::new(Dummy::default())),
            Arc::new(Mutex::new(Dummy::default())),
        );
        let mut pio = Bus::new("pio");
        pio.insert(p.clone(), 0x3f8, 8).unwrap();
        let mut mmio = Bus::new("mmio");
        mmio.insert(m.clone(), 0xd000_0000, 0x1000).unwrap();
        (pio, mmio, p, m)
    }

    #[test]
    fn io_exits_reach_the_device_at_its_offset() {
        let (pio, mmio, p, _) = buses();
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x3f9, &[7]), &pio, &mmio),
            ExitAction::Continue
        );
        let mut d = [0u8; 1];
        assert_eq!(
            handle_exit(VcpuExit::IoIn(0x3fd, &mut d), &pio, &mmio),
            ExitAction::Continue
        );
        assert_eq!(d, [0x42]);
        assert_eq!(
            p.lock().unwrap().log,
            vec![('w', 1, vec![7]), ('r', 5, vec![0x42])]
        );
    }

    #[test]
    fn mmio_exits_reach_the_device() {
        let (pio, mmio, _, m) = buses();
        handle_exit(VcpuExit::MmioWrite(0xd000_0070, &[1, 0, 0, 0]), &pio, &mmio);
        let mut d = [0u8; 4];
        handle_exit(VcpuExit::MmioRead(0xd000_0000, &mut d), &pio, &mmio);
        assert_eq!(d, [0x42; 4]);
        assert_eq!(m.lock().unwrap().log[0], ('w', 0x70, vec![1, 0, 0, 0]));
    }

    #[test]
    fn unknown_addresses_do_not_stop_the_guest() {
        let (pio, mmio, p, _) = buses();
        let mut d = [0u8; 2];
        assert_eq!(
            handle_exit(VcpuExit::IoIn(0x1234, &mut d), &pio, &mmio),
            ExitAction::Continue
        );
        assert_eq!(d, [0xff, 0xff]);
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0xcf8, &[1, 2, 3, 4]), &pio, &mmio),
            ExitAction::Continue
        );
        let mut d = [0u8; 8];
        assert_eq!(
            handle_exit(VcpuExit::MmioRead(0xfeed_0000, &mut d), &pio, &mmio),
            ExitAction::Continue
        );
        assert_eq!(d, [0xff; 8]);
        assert!(p.lock().unwrap().log.is_empty());
    }

    #[test]
    fn terminal_exits_are_classified() {
        let (pio, mmio, _, _) = buses();
        assert_eq!(handle_exit(VcpuExit::Hlt, &pio, &mmio), ExitAction::Halt);
        assert_eq!(
            handle_exit(VcpuExit::Shutdown, &pio, &mmio),
            ExitAction::Shutdown
        );
        assert_eq!(
            handle_exit(
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, &[]),
                &pio,
                &mmio
            ),
            ExitAction::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN)
        );
        assert_eq!(
            handle_exit(VcpuExit::InternalError, &pio, &mmio),
            ExitAction::InternalError
        );
        assert_eq!(
            handle_exit(VcpuExit::FailEntry(0x21, 0), &pio, &mmio),
            ExitAction::FailEntry(0x21)
        );
        assert_eq!(
            handle_exit(VcpuExit::Intr, &pio, &mmio),
            ExitAction::Continue
        );
        assert!(matches!(
            handle_exit(VcpuExit::Hyperv, &pio, &mmio),
            ExitAction::Unexpected(_)
        ));
    }

    #[test]
    fn shutdown_with_empty_idt_is_a_reset_otherwise_a_crash() {
        let empty = kvm_dtable::default();
        assert!(matches!(
            classify_shutdown(empty, 0, 0x1000),
            VmEnd::Reset(_)
        ));
        let idt = kvm_dtable {
            base: 0x520,
            limit: 7,
            ..Default::default()
        };
        let end = classify_shutdown(idt, 1, 0xffff_ffff_8100_0000);
        assert_eq!(
            end,
            VmEnd::TripleFault {
                vcpu: 1,
                rip: Some(0xffff_ffff_8100_0000)
            }
        );
        assert!(end.describe().contains("triple fault"));
        assert!(end.describe().contains("0xffffffff81000000"));
        // AMD: the vCPU was put in its reset state before the exit.
        let reset = kvm_dtable {
            limit: 0xffff,
            ..Default::default()
        };
        let end = classify_shutdown(reset, 0, 0xfff0);
        assert_eq!(end, VmEnd::TripleFault { vcpu: 0, rip: None });
        assert!(end.describe().contains("RIP unknown"), "{}", end.describe());
    }

    #[test]
    fn a_reported_command_status_is_described() {
        for status in [0u8, 3, 126, 127, 137, 255] {
            let end = VmEnd::CommandExited(status);
            assert!(end.describe().contains(&format!("status {status}")));
        }
    }

    #[test]
    fn system_events() {
        assert_eq!(
            classify_system_event(KVM_SYSTEM_EVENT_SHUTDOWN, 0),
            VmEnd::PowerOff
        );
        assert!(matches!(
            classify_system_event(KVM_SYSTEM_EVENT_RESET, 0),
            VmEnd::Reset(_)
        ));
        assert_eq!(
            classify_system_event(KVM_SYSTEM_EVENT_CRASH, 2),
            VmEnd::Crash(2)
        );
        assert!(matches!(classify_system_event(99, 0), VmEnd::VmmError(_)));
    }

    #[test]
    fn emulation_failure_message_has_rip_and_bytes() {
        let end = VmEnd::InternalError {
            vcpu: 0,
            suberror: KVM_INTERNAL_ERROR_EMULATION,
            rip: 0x100_0010,
            insn: vec![0xf3, 0x48, 0x0f, 0xb8, 0xc3],
        };
        let msg = end.describe();
        assert!(msg.contains("0x1000010"), "{msg}");
        assert!(msg.contains("f3 48 0f b8 c3"), "{msg}");
    }

    #[test]
    fn first_end_wins_and_wakes_the_loop() {
        let control = Arc::new(crate::control::Control::new(1).unwrap());
        let s = VmExitState::new(Arc::new(Timeline::new(Instant::now())), control.clone()).unwrap();
        s.finish(VmEnd::Reset("i8042"));
        s.finish(VmEnd::Crash(0));
        assert_eq!(s.end(), Some(VmEnd::Reset("i8042")));
        assert_eq!(s.evt.read().unwrap(), 2);
        assert_eq!(control.request(), crate::control::Request::Stop);
    }
}
