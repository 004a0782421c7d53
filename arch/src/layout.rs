//! Guest physical memory layout of an x86_64 microVM.
//!
//! ```text
//! 0x0000_0500  GDT                      0x0000_0520  IDT
//! 0x0000_6000  PVH start info + memmap  0x0000_6800  setup_data (RNG seed)
//! 0x0000_7000  zero page (boot_params)
//! 0x0000_8ff0  boot stack top           0x0000_9000  PML4, PDPT, 4 x PD
//! 0x0002_0000  kernel command line      0x0009_fc00  MP table (top of base RAM)
//! 0x0010_0000  kernel (high memory)     ...          initrd at the top of low RAM
//! 0xc000_0000  MMIO gap (1 GiB): virtio-mmio devices, IOAPIC, LAPIC
//! 0x1_0000_0000  RAM above 4 GiB when the guest has more than 3 GiB
//! ```

/// GDT, four 8-byte entries.
pub const BOOT_GDT_START: u64 = 0x500;
/// IDT: one null entry, enough for the guest until it loads its own.
pub const BOOT_IDT_START: u64 = 0x520;
/// PVH `hvm_start_info`, followed by its memory map.
pub const PVH_INFO_START: u64 = 0x6000;
/// Linux boot protocol `setup_data` chain (the RNG seed).
pub const SETUP_DATA_START: u64 = 0x6800;
/// Linux zero page (`boot_params`).
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Initial stack pointer.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Page-map level 4 table of the identity mapping.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table.
pub const PDPTE_START: u64 = 0xa000;
/// First of the page directories (one per identity-mapped GiB).
pub const PDE_START: u64 = 0xb000;
/// GiB of guest physical space identity-mapped with 2 MiB pages at entry.
pub const IDENTITY_MAPPED_GIB: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Largest command line the x86 Linux boot protocol accepts, NUL included.
pub const CMDLINE_MAX_SIZE: usize = 2048;
/// Start of the Extended BIOS Data Area; base RAM ends here.
pub const EBDA_START: u64 = 0x9fc00;
/// MP floating pointer and configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// Where the kernel and everything above 1 MiB begins.
pub const HIMEM_START: u64 = 0x10_0000;

/// Start of the 32-bit MMIO gap; no RAM between this and 4 GiB.
pub const MMIO_GAP_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO gap.
pub const MMIO_GAP_END: u64 = 1 << 32;
/// Size of the 32-bit MMIO gap.
pub const MMIO_GAP_SIZE: u64 = MMIO_GAP_END - MMIO_GAP_START;
/// The boot-timer device's MMIO page (the guest writes 123 at its first
/// byte when its init runs).
pub const BOOT_TIMER_START: u64 = MMIO_GAP_START;
/// Its size.
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
/// First address handed to virtio-mmio devices.
pub const VIRTIO_MMIO_START: u64 = 0xd000_0000;
/// Size of each virtio-mmio device window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IOAPIC registers.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC registers.
pub const APIC_START: u64 = 0xfee0_0000;
/// Where KVM places the TSS (three pages just below the BIOS area).
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

/// COM1, the serial console: its eight registers' first port.
pub const SERIAL_PORT: u64 = 0x3f8;
/// COM1's eight registers.
pub const SERIAL_PORT_LEN: u64 = 8;
/// Legacy IRQ of the first serial port.
pub const SERIAL_IRQ: u32 = 4;
/// The i8042 controller: data port 0x60, command/status 0x64.
pub const I8042_PORT: u64 = 0x60;
/// Ports it covers: 0x60..=0x64 (0x61 is KVM's in-kernel speaker port).
pub const I8042_PORT_LEN: u64 = 5;
/// Legacy IRQ of the keyboard.
pub const KBD_IRQ: u32 = 1;
/// The CMOS/RTC's index port (the data port follows it).
pub const CMOS_PORT: u64 = 0x70;
/// Index and data port.
pub const CMOS_PORT_LEN: u64 = 2;
/// The POST / I/O-delay port Linux writes between slow port accesses.
pub const POST_PORT: u64 = 0x80;
/// The boot timer's I/O port (devices::boot_timer).
pub const BOOT_TIMER_PORT: u16 = 0x440;
/// The exit device's I/O port (devices::exit_device); one 32-bit register.
pub const EXIT_DEVICE_PORT: u16 = 0x444;
/// The command device's I/O ports (devices::command): a template's init
/// takes its command there after a restore; two 32-bit registers.
pub const COMMAND_PORT: u16 = 0x448;
/// First IRQ handed to virtio devices.
pub const VIRTIO_IRQ_START: u32 = 5;
/// Last IRQ line the IOAPIC has.
pub const IRQ_MAX: u32 = 23;

// The boot structures must not overlap one another.
const _: () = assert!(PDE_START + IDENTITY_MAPPED_GIB * 0x1000 <= CMDLINE_START);
const _: () = assert!(SETUP_DATA_START + 0x100 <= ZERO_PAGE_START);
const _: () = assert!(PVH_INFO_START + 0x400 <= SETUP_DATA_START);
const _: () = assert!(ZERO_PAGE_START + 0x1000 <= BOOT_STACK_POINTER);
const _: () = assert!(BOOT_STACK_POINTER < PML4_START);
const _: () = assert!(CMDLINE_START + CMDLINE_MAX_SIZE as u64 <= EBDA_START);
