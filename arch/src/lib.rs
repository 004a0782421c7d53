//! x86_64 architecture support for the VMM: the guest's memory layout, the
//! kernel and initrd loaders, the boot data the kernel reads (zero page, PVH
//! start info, e820, MP table) and the initial vCPU state (GDT, page tables,
//! registers, MSRs, CPUID, LAPIC). Knows nothing about devices.

pub mod boot;
pub mod cpuid;
pub mod gdt;
pub mod layout;
pub mod memory;
pub mod mptable;
pub mod regs;

pub use regs::EntryMode;

use vm_memory::GuestMemoryMmap;

/// Why the boot data could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The command line, zero page, RNG seed or PVH start info.
    #[error(transparent)]
    Boot(#[from] boot::Error),
    /// The MP table.
    #[error(transparent)]
    MpTable(#[from] mptable::Error),
}

/// What the guest's boot data describes.
pub struct BootSetup<'a> {
    /// The kernel as loaded.
    pub kernel: &'a boot::LoadedKernel,
    /// The guest command line.
    pub cmdline: &'a linux_loader::cmdline::Cmdline,
    /// Guest RAM, bytes.
    pub mem_bytes: u64,
    /// The initrd's address and size, if loaded.
    pub initrd: Option<(u64, u64)>,
    /// Random bytes for the guest's RNG (Linux 64-bit boot: setup_data).
    pub rng_seed: [u8; boot::RNG_SEED_LEN],
    /// vCPUs, for the MP table.
    pub vcpus: u8,
}

/// Writes everything the kernel reads at boot besides itself and its
/// initrd (as Firecracker's `configure_system_for_boot`): the command
/// line, then for the Linux 64-bit entry the RNG seed and the zero page
/// (e820, setup header, initrd), for the PVH entry the start info, and
/// the MP table.
pub fn configure_system(mem: &GuestMemoryMmap, setup: &BootSetup) -> Result<(), SystemError> {
    let cmdline_len = boot::write_cmdline(mem, setup.cmdline)?;
    match setup.kernel.mode {
        EntryMode::Linux64 => {
            let next = setup.kernel.setup_header.map_or(0, |h| h.setup_data);
            let seed = boot::write_rng_seed(mem, &setup.rng_seed, next)?;
            let params = boot::boot_params_for(
                setup.kernel.setup_header,
                setup.mem_bytes,
                cmdline_len,
                setup.initrd,
                Some(seed),
            );
            boot::write_boot_params(mem, &params)?;
        }
        EntryMode::Pvh => boot::write_pvh_info(mem, setup.mem_bytes, setup.initrd)?,
    }
    mptable::write(mem, setup.vcpus)?;
    Ok(())
}
