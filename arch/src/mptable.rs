//! Intel MultiProcessor Specification 1.4 tables: how a guest without ACPI
//! learns its CPUs, its IOAPIC and how the ISA IRQs are wired.

use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryMmap};

use crate::layout::{APIC_START, IOAPIC_START, IRQ_MAX, MPTABLE_START};

/// Errors while writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More vCPUs than APIC ids the table can number.
    #[error("{0} vCPUs do not fit the MP table (at most {MAX_CPUS})")]
    TooManyCpus(u8),
    /// The table does not fit below the end of base RAM.
    #[error("the MP table does not fit in guest memory")]
    NotEnoughMemory,
    /// Writing guest memory failed.
    #[error("cannot write the MP table to guest memory")]
    Write,
}

/// Result of this module.
pub type Result<T> = std::result::Result<T, Error>;

/// The largest vCPU count the table supports (APIC ids 0..=253, IOAPIC 254).
pub const MAX_CPUS: u8 = 254;

const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MPC_APIC_USABLE: u8 = 1;
const MP_PROCESSOR: u8 = 0;
const MP_BUS: u8 = 1;
const MP_IOAPIC: u8 = 2;
const MP_INTSRC: u8 = 3;
const MP_LINTSRC: u8 = 4;
const MP_INT: u8 = 0;
const MP_NMI: u8 = 1;
const MP_EXTINT: u8 = 3;

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpfIntel {
    signature: [u8; 4],
    physptr: u32,
    length: u8,
    specification: u8,
    checksum: u8,
    feature: [u8; 5],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcTable {
    signature: [u8; 4],
    length: u16,
    spec: u8,
    checksum: u8,
    oem: [u8; 8],
    productid: [u8; 12],
    oemptr: u32,
    oemsize: u16,
    oemcount: u16,
    lapic: u32,
    reserved: u32,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcCpu {
    type_: u8,
    apicid: u8,
    apicver: u8,
    cpuflag: u8,
    cpufeature: u32,
    featureflag: u32,
    reserved: [u32; 2],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcBus {
    type_: u8,
    busid: u8,
    bustype: [u8; 6],
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcIoapic {
    type_: u8,
    apicid: u8,
    apicver: u8,
    flags: u8,
    apicaddr: u32,
}

#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct MpcIntsrc {
    type_: u8,
    irqtype: u8,
    irqflag: u16,
    srcbus: u8,
    srcbusirq: u8,
    dstapic: u8,
    dstirq: u8,
}

// SAFETY: each struct is repr(C, packed) and made only of integers and
// integer arrays, so it has no padding and every byte pattern is valid.
unsafe impl ByteValued for MpfIntel {}
// SAFETY: as above.
unsafe impl ByteValued for MpcTable {}
// SAFETY: as above.
unsafe impl ByteValued for MpcCpu {}
// SAFETY: as above.
unsafe impl ByteValued for MpcBus {}
// SAFETY: as above.
unsafe impl ByteValued for MpcIoapic {}
// SAFETY: as above.
unsafe impl ByteValued for MpcIntsrc {}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// The bytes of the MP floating pointer and configuration table for
/// `num_cpus` vCPUs, to be placed at `base`.
fn build(num_cpus: u8, base: u64) -> Result<Vec<u8>> {
    if num_cpus == 0 || num_cpus > MAX_CPUS {
        return Err(Error::TooManyCpus(num_cpus));
    }
    let ioapic_id = num_cpus; // first id after the CPUs'
    let mut entries = Vec::new();
    for cpu in 0..num_cpus {
        let e = MpcCpu {
            type_: MP_PROCESSOR,
            apicid: cpu,
            apicver: APIC_VERSION,
            cpuflag: CPU_ENABLED | if cpu == 0 { CPU_BOOTPROCESSOR } else { 0 },
            cpufeature: CPU_STEPPING,
            featureflag: CPU_FEATURE_APIC | CPU_FEATURE_FPU,
            reserved: [0; 2],
        };
        entries.extend_from_slice(e.as_slice());
    }
    let bus = MpcBus {
        type_: MP_BUS,
        busid: 0,
        bustype: *b"ISA   ",
    };
    entries.extend_from_slice(bus.as_slice());
    let ioapic = MpcIoapic {
        type_: MP_IOAPIC,
        apicid: ioapic_id,
        apicver: IOAPIC_VERSION,
        flags: MPC_APIC_USABLE,
        apicaddr: IOAPIC_START as u32,
    };
    entries.extend_from_slice(ioapic.as_slice());
    for irq in 0..=IRQ_MAX as u8 {
        let src = MpcIntsrc {
            type_: MP_INTSRC,
            irqtype: MP_INT,
            irqflag: 0, // conforms to the bus
            srcbus: 0,
            srcbusirq: irq,
            dstapic: ioapic_id,
            dstirq: irq,
        };
        entries.extend_from_slice(src.as_slice());
    }
    for (irqtype, dstapic, lint) in [(MP_EXTINT, 0u8, 0u8), (MP_NMI, 0xff, 1)] {
        let src = MpcIntsrc {
            type_: MP_LINTSRC,
            irqtype,
            irqflag: 0,
            srcbus: 0,
            srcbusirq: 0,
            dstapic,
            dstirq: lint,
        };
        entries.extend_from_slice(src.as_slice());
    }

    let mpf_size = std::mem::size_of::<MpfIntel>();
    let table_len = std::mem::size_of::<MpcTable>() + entries.len();
    let mut table = MpcTable {
        signature: *b"PCMP",
        length: table_len as u16,
        spec: 4,
        checksum: 0,
        oem: *b"RUSTVMM ",
        productid: *b"MICROVM     ",
        lapic: APIC_START as u32,
        ..Default::default()
    };
    table.checksum = 0u8
        .wrapping_sub(checksum(table.as_slice()))
        .wrapping_sub(checksum(&entries));

    let mut mpf = MpfIntel {
        signature: *b"_MP_",
        physptr: (base + mpf_size as u64) as u32,
        length: 1,
        specification: 4,
        ..Default::default()
    };
    mpf.checksum = 0u8.wrapping_sub(checksum(mpf.as_slice()));

    let mut out = Vec::with_capacity(mpf_size + table_len);
    out.extend_from_slice(mpf.as_slice());
    out.extend_from_slice(table.as_slice());
    out.extend_from_slice(&entries);
    Ok(out)
}

/// Writes the MP table for `num_cpus` vCPUs at `MPTABLE_START`.
pub fn write(mem: &GuestMemoryMmap, num_cpus: u8) -> Result<()> {
    let bytes = build(num_cpus, MPTABLE_START)?;
    if MPTABLE_START + bytes.len() as u64 > crate::layout::HIMEM_START {
        return Err(Error::NotEnoughMemory);
    }
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START).unchecked_add(0))
        .map_err(|_| Error::Write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries_of(bytes: &[u8]) -> &[u8] {
        &bytes[16 + 44..]
    }

    #[test]
    fn floating_pointer_and_table_checksums_are_zero() {
        for n in [1u8, 2, 16, MAX_CPUS] {
            let b = build(n, MPTABLE_START).unwrap();
            assert_eq!(&b[0..4], b"_MP_");
            assert_eq!(checksum(&b[0..16]), 0);
            assert_eq!(&b[16..20], b"PCMP");
            let len = u16::from_le_bytes([b[20], b[21]]) as usize;
            assert_eq!(len, b.len() - 16);
            assert_eq!(checksum(&b[16..]), 0);
            let physptr = u32::from_le_bytes(b[4..8].try_into().unwrap());
            assert_eq!(u64::from(physptr), MPTABLE_START + 16);
        }
    }

    #[test]
    fn describes_every_cpu_with_bsp_first() {
        let b = build(3, MPTABLE_START).unwrap();
        let e = entries_of(&b);
        for cpu in 0..3usize {
            let c = &e[cpu * 20..cpu * 20 + 20];
            assert_eq!(c[0], MP_PROCESSOR);
            assert_eq!(c[1] as usize, cpu, "APIC id");
            assert_eq!(c[3] & CPU_ENABLED, CPU_ENABLED);
            assert_eq!(c[3] & CPU_BOOTPROCESSOR != 0, cpu == 0);
        }
        // Then the ISA bus and the IOAPIC with the next free id.
        assert_eq!(&e[60..68], &[MP_BUS, 0, b'I', b'S', b'A', b' ', b' ', b' ']);
        assert_eq!(&e[68..72], &[MP_IOAPIC, 3, IOAPIC_VERSION, MPC_APIC_USABLE]);
    }

    #[test]
    fn routes_every_isa_irq_and_both_lints() {
        let b = build(1, MPTABLE_START).unwrap();
        let e = entries_of(&b);
        let intsrcs: Vec<&[u8]> = e[20 + 8 + 8..].chunks(8).collect();
        assert_eq!(intsrcs.len(), IRQ_MAX as usize + 1 + 2);
        for (irq, s) in intsrcs.iter().take(IRQ_MAX as usize + 1).enumerate() {
            assert_eq!(
                (s[0], s[5] as usize, s[6], s[7] as usize),
                (MP_INTSRC, irq, 1, irq)
            );
        }
        assert_eq!(
            (intsrcs[24][0], intsrcs[24][1], intsrcs[24][7]),
            (MP_LINTSRC, MP_EXTINT, 0)
        );
        assert_eq!(
            (intsrcs[25][0], intsrcs[25][1], intsrcs[25][7]),
            (MP_LINTSRC, MP_NMI, 1)
        );
    }

    #[test]
    fn rejects_zero_and_too_many_cpus() {
        assert!(matches!(build(0, 0), Err(Error::TooManyCpus(0))));
        assert!(matches!(build(255, 0), Err(Error::TooManyCpus(255))));
    }

    #[test]
    fn writes_into_guest_memory() {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        write(&mem, 2).unwrap();
        let mut sig = [0u8; 4];
        mem.read_slice(&mut sig, GuestAddress(MPTABLE_START))
            .unwrap();
        assert_eq!(&sig, b"_MP_");
    }
}
