//! The KVM VM itself: created with its in-kernel irqchip and PIT, and its
//! guest memory mapped and registered as KVM memory slots.

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use arch::layout::KVM_TSS_ADDRESS;

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

/// Names a failed KVM call: `.map_err(kvm_call("KVM_CREATE_VM"))`.
pub fn kvm_call(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> KvmCall {
    move |source| KvmCall { what, source }
}

type Result<T> = std::result::Result<T, VmError>;

/// Failures making the VM itself: the VMM's, never the configuration's.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Guest memory could not be mapped.
    #[error("cannot allocate {mib} MiB of guest memory")]
    Memory {
        /// Requested size.
        mib: u64,
        /// What failed.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// A guest memory region has no host address to give KVM.
    #[error("guest memory region {slot} has no host mapping")]
    Unmapped {
        /// The region's slot.
        slot: usize,
    },
    /// The thread creating the VM panicked.
    #[error("the thread creating the VM panicked")]
    CreationPanicked,
    /// Writing the MP table failed.
    #[error("cannot write the MP table")]
    MpTable(#[source] arch::mptable::Error),
    /// A device in the layout has no opened file or TAP (a bug).
    #[error("a device was placed that was not opened")]
    Unopened,
    /// The event loop (epoll) could not be made.
    #[error("cannot create the event loop: {0}")]
    EventLoop(String),
    /// A KVM call failed.
    #[error(transparent)]
    Kvm(#[from] KvmCall),
}

/// A VM with its TSS, in-kernel irqchip (IOAPIC, PIC, LAPICs) and PIT.
/// Each step's time is logged at debug ("timing: KVM_CREATE_VM took ...").
pub fn create_vm(kvm: &Kvm) -> Result<VmFd> {
    let mut at = std::time::Instant::now();
    let mut took = |what: &str| {
        log::debug!(
            "timing: {what} took {:.3} ms",
            at.elapsed().as_secs_f64() * 1e3
        );
        at = std::time::Instant::now();
    };
    let vm = kvm.create_vm().map_err(kvm_call("KVM_CREATE_VM"))?;
    took("KVM_CREATE_VM");
    vm.set_tss_address(KVM_TSS_ADDRESS as usize)
        .map_err(kvm_call("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_call("KVM_CREATE_IRQCHIP"))?;
    took("KVM_SET_TSS_ADDR and KVM_CREATE_IRQCHIP");
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_call("KVM_CREATE_PIT2"))?;
    disable_pit_reinjection(&vm);
    took("KVM_CREATE_PIT2");
    Ok(vm)
}

/// Where `mib` MiB of guest RAM lie: (guest address, size) per region.
pub fn ram_ranges(mib: u64) -> Vec<(GuestAddress, usize)> {
    arch::memory::ram_regions(mib << 20)
        .into_iter()
        .map(|(start, size)| (GuestAddress(start), size as usize))
        .collect()
}

/// `mib` MiB of guest RAM, mapped as the layout places it (with the MMIO
/// gap below 4 GiB).
pub fn guest_memory(mib: u64) -> Result<GuestMemoryMmap> {
    let ranges = ram_ranges(mib);
    GuestMemoryMmap::from_ranges(&ranges).map_err(|source| VmError::Memory { mib, source })
}

/// Hands every guest RAM region to KVM as a memory slot.
pub fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host_addr = mem
            .get_host_address(region.start_addr())
            .map_err(|_| VmError::Unmapped { slot })?;
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host_addr as u64,
            flags: 0,
        };
        // SAFETY: the range [host_addr, host_addr + len) is a live mapping
        // owned by `mem`, which the Vmm keeps until after the VM fd is
        // closed (field order), so KVM never maps freed memory.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(kvm_call("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

vmm_sys_util::ioctl_io_nr!(KVM_REINJECT_CONTROL, kvm_bindings::KVMIO, 0x71);

/// Turns off the in-kernel PIT's catch-up of missed ticks. With it on, a
/// guest that handles a tick more slowly than the tick period (an
/// interpreted guest on an emulated KVM, or one on a busy host) gets the
/// timer interrupt again as soon as it returns, forever; its lowest-priority
/// vectors (Linux gives the first device interrupt vector 0x20, below the
/// timer's 0x30) are then never delivered, and a virtio-net guest saw its TX
/// completions seconds late. A Linux guest keeps time from its clocksource,
/// not by counting ticks, so dropping missed ones costs it nothing
/// (QEMU's lost_tick_policy=discard).
fn disable_pit_reinjection(vm: &VmFd) {
    let ctl = kvm_bindings::kvm_reinject_control::default();
    // SAFETY: KVM_REINJECT_CONTROL reads a struct kvm_reinject_control
    // from the pointer, which points at a live, initialised one; the VM fd
    // is open and has a PIT.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(vm, KVM_REINJECT_CONTROL(), &ctl) };
    if ret < 0 {
        log::warn!(
            "cannot turn off PIT tick reinjection: {}; a slow guest may see device interrupts late",
            std::io::Error::last_os_error()
        );
    }
}
