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
