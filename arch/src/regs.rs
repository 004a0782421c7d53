//! Initial vCPU state: identity page tables, GDT/IDT, segment, control and
//! general registers, FPU, boot MSRs and the local APIC's LINT pins.

use kvm_bindings::{kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs, kvm_sregs, Msrs};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use crate::gdt::{boot_gdt, segment_from_gdt};
use crate::layout::*;

/// Errors while writing the boot state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Guest memory too small for the boot structures.
    #[error("guest memory too small for the boot structures at {0:#x}")]
    WriteBootData(u64),
    /// The MSR list did not fit KVM's structure.
    #[error("cannot build the MSR list for KVM")]
    MsrList,
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_NE: u64 = 1 << 5;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// How the guest is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// Linux 64-bit boot protocol: long mode, paging on, RSI = zero page.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh,
}

/// Writes identity page tables mapping the first `IDENTITY_MAPPED_GIB` GiB
/// with 2 MiB pages. Returns the CR3 value.
pub fn write_identity_page_tables(mem: &GuestMemoryMmap) -> Result<u64> {
    let w = |addr: u64, val: u64| {
        mem.write_obj(val, GuestAddress(addr))
            .map_err(|_| Error::WriteBootData(addr))
    };
    // PML4[0] -> PDPT; present | writable.
    w(PML4_START, PDPTE_START | 0x03)?;
    for gib in 0..IDENTITY_MAPPED_GIB {
        let pd = PDE_START + gib * 0x1000;
        w(PDPTE_START + gib * 8, pd | 0x03)?;
        for i in 0..512u64 {
            let phys = (gib << 30) | (i << 21);
            // present | writable | page size (2 MiB).
            w(pd + i * 8, phys | 0x83)?;
        }
    }
    Ok(PML4_START)
}

/// Writes the boot GDT and a null IDT, and fills the segment, descriptor
/// table and control registers of `sregs` for `mode`.
pub fn setup_sregs(mem: &GuestMemoryMmap, sregs: &mut kvm_sregs, mode: EntryMode) -> Result<()> {
    let gdt = boot_gdt(mode == EntryMode::Linux64);
    for (i, entry) in gdt.iter().enumerate() {
        let addr = BOOT_GDT_START + (i as u64) * 8;
        mem.write_obj(*entry, GuestAddress(addr))
            .map_err(|_| Error::WriteBootData(addr))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| Error::WriteBootData(BOOT_IDT_START))?;

    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    match mode {
        EntryMode::Linux64 => {
            sregs.cr3 = write_identity_page_tables(mem)?;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG | X86_CR0_ET | X86_CR0_NE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET | X86_CR0_NE;
            sregs.cr4 = 0;
            sregs.cr3 = 0;
            sregs.efer = 0;
        }
    }
    Ok(())
}

/// General registers at entry: `entry` in RIP and the boot data pointer
/// (zero page or PVH start info) where `mode` wants it.
pub fn boot_regs(entry: GuestAddress, mode: EntryMode) -> kvm_regs {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry.raw_value(),
        ..Default::default()
    };
    match mode {
        EntryMode::Linux64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        EntryMode::Pvh => regs.rbx = PVH_INFO_START,
    }
    regs
}

/// The FPU as it is after FNINIT, with SSE exceptions masked.
pub fn boot_fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;
const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MISC_ENABLE_FAST_STRING: u64 = 1;
const MTRR_ENABLE: u64 = 1 << 11;
const MTRR_TYPE_WRBACK: u64 = 6;

/// The MSRs a freshly reset x86 CPU leaves for the kernel: system-call MSRs
/// cleared, fast strings on, MTRRs enabled with write-back as default.
pub fn boot_msr_entries() -> Vec<(u32, u64)> {
    vec![
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK),
    ]
}

/// `boot_msr_entries` in the form `KVM_SET_MSRS` takes.
pub fn boot_msrs() -> Result<Msrs> {
    let entries: Vec<kvm_msr_entry> = boot_msr_entries()
        .into_iter()
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries).map_err(|_| Error::MsrList)
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

fn get_klapic_reg(lapic: &kvm_lapic_state, offset: usize) -> u32 {
    let bytes: [u8; 4] = std::array::from_fn(|i| lapic.regs[offset + i] as u8);
    u32::from_le_bytes(bytes)
}

fn set_klapic_reg(lapic: &mut kvm_lapic_state, offset: usize, value: u32) {
    for (i, b) in value.to_le_bytes().iter().enumerate() {
        lapic.regs[offset + i] = *b as _;
    }
}

fn set_delivery_mode(reg: u32, mode: u32) -> u32 {
    (reg & !0x700) | (mode << 8)
}

/// Wires LINT0 as ExtINT (the PIC) and LINT1 as NMI, as a BIOS would.
pub fn set_lint(lapic: &mut kvm_lapic_state) {
    let lvt0 = get_klapic_reg(lapic, APIC_LVT0);
    set_klapic_reg(lapic, APIC_LVT0, set_delivery_mode(lvt0, APIC_MODE_EXTINT));
    let lvt1 = get_klapic_reg(lapic, APIC_LVT1);
    set_klapic_reg(lapic, APIC_LVT1, set_delivery_mode(lvt1, APIC_MODE_NMI));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    fn read(mem: &GuestMemoryMmap, addr: u64) -> u64 {
        mem.read_obj(GuestAddress(addr)).unwrap()
    }

    #[test]
    fn page_tables_identity_map_4g_with_2m_pages() {
        let m = mem();
        assert_eq!(write_identity_page_tables(&m).unwrap(), PML4_START);
        assert_eq!(read(&m, PML4_START), PDPTE_START | 3);
        for gib in 0..IDENTITY_MAPPED_GIB {
            let pd = read(&m, PDPTE_START + gib * 8) & !0xfff;
            assert_eq!(pd, PDE_START + gib * 0x1000);
            // Translate a sample address in this GiB through the tables.
            let va = (gib << 30) + 0x1234_5678;
            let pde = read(&m, pd + ((va >> 21) & 511) * 8);
            assert_eq!(pde & 0x83, 0x83, "present, writable, 2 MiB page");
            assert_eq!((pde & !0x1f_ffff & !0xfff) | (va & 0x1f_ffff), va);
        }
    }

    #[test]
    fn long_mode_sregs() {
        let m = mem();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&m, &mut sregs, EntryMode::Linux64).unwrap();
        assert_eq!(
            sregs.cr0 & (X86_CR0_PE | X86_CR0_PG),
            X86_CR0_PE | X86_CR0_PG
        );
        assert_eq!(sregs.efer & (EFER_LME | EFER_LMA), EFER_LME | EFER_LMA);
        assert_ne!(sregs.cr4 & X86_CR4_PAE, 0);
        assert_eq!(sregs.cr3, PML4_START);
        assert_eq!(sregs.cs.l, 1);
        assert_eq!(sregs.cs.selector, 8);
        assert_eq!(sregs.ds.selector, 16);
        assert_eq!(sregs.tr.selector, 24);
        assert_eq!(sregs.gdt.limit, 31);
        assert_eq!(read(&m, BOOT_GDT_START + 8), crate::gdt::CODE64);
        assert_eq!(read(&m, BOOT_IDT_START), 0);
    }

    #[test]
    fn pvh_sregs_are_protected_mode_without_paging() {
        let m = mem();
        let mut sregs = kvm_sregs::default();
        setup_sregs(&m, &mut sregs, EntryMode::Pvh).unwrap();
        assert_eq!(sregs.cr0 & X86_CR0_PG, 0);
        assert_eq!(sregs.cr0 & X86_CR0_PE, X86_CR0_PE);
        assert_eq!(sregs.efer, 0);
        assert_eq!(sregs.cs.db, 1);
        assert_eq!(sregs.cs.l, 0);
    }

    #[test]
    fn regs_point_at_boot_data() {
        let r = boot_regs(GuestAddress(0x100_0000), EntryMode::Linux64);
        assert_eq!(
            (r.rip, r.rsi, r.rsp, r.rflags),
            (0x100_0000, ZERO_PAGE_START, BOOT_STACK_POINTER, 2)
        );
        let r = boot_regs(GuestAddress(0x100_0100), EntryMode::Pvh);
        assert_eq!((r.rip, r.rbx), (0x100_0100, PVH_INFO_START));
    }

    #[test]
    fn msrs_enable_fast_strings_and_mtrrs() {
        let msrs = boot_msr_entries();
        assert!(msrs.contains(&(MSR_IA32_MISC_ENABLE, 1)));
        assert!(msrs.contains(&(MSR_MTRR_DEF_TYPE, (1 << 11) | 6)));
        assert_eq!(boot_msrs().unwrap().as_slice().len(), msrs.len());
    }

    #[test]
    fn lint_pins_are_extint_and_nmi() {
        let mut lapic = kvm_lapic_state::default();
        set_klapic_reg(&mut lapic, APIC_LVT0, 0x0001_0700 | 0x500);
        set_lint(&mut lapic);
        assert_eq!(get_klapic_reg(&lapic, APIC_LVT0), 0x0001_0700);
        assert_eq!((get_klapic_reg(&lapic, APIC_LVT1) >> 8) & 7, APIC_MODE_NMI);
    }

    #[test]
    fn fpu_control_words() {
        let f = boot_fpu();
        assert_eq!((f.fcw, f.mxcsr), (0x37f, 0x1f80));
    }
}
