//! GDT entries and their KVM segment form.

use kvm_bindings::kvm_segment;

/// Builds a GDT descriptor from its flags (the 0xf0ff bits of the access and
/// flag bytes), base and 20-bit limit.
pub const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << (56 - 24))
        | ((flags as u64 & 0x0000_f0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << (48 - 16))
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

fn base(entry: u64) -> u64 {
    ((entry & 0xff00_0000_0000_0000) >> 32)
        | ((entry & 0x0000_00ff_0000_0000) >> 16)
        | ((entry & 0x0000_0000_ffff_0000) >> 16)
}

fn limit(entry: u64) -> u32 {
    let raw = (((entry & 0x000f_0000_0000_0000) >> 32) | (entry & 0x0000_0000_0000_ffff)) as u32;
    // With the granularity bit set the limit counts 4 KiB pages.
    if entry & (1 << 55) != 0 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// The KVM segment for GDT entry number `index` holding `entry`.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let bit = |n: u32| ((entry >> n) & 1) as u8;
    kvm_segment {
        base: base(entry),
        limit: limit(entry),
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present: bit(47),
        dpl: ((entry >> 45) & 0x3) as u8,
        db: bit(54),
        s: bit(44),
        l: bit(53),
        g: bit(55),
        avl: bit(52),
        unusable: if bit(47) == 0 { 1 } else { 0 },
        padding: 0,
    }
}

/// 64-bit code segment: present, DPL 0, execute/read, long mode.
pub const CODE64: u64 = gdt_entry(0xa09b, 0, 0xfffff);
/// 32-bit code segment for PVH entry: present, execute/read, 4 KiB granules.
pub const CODE32: u64 = gdt_entry(0xc09b, 0, 0xfffff);
/// Flat data segment.
pub const DATA: u64 = gdt_entry(0xc093, 0, 0xfffff);
/// 64-bit TSS.
pub const TSS: u64 = gdt_entry(0x808b, 0, 0xfffff);

/// The boot GDT: null, code, data, TSS. `long_mode` picks the code segment.
pub fn boot_gdt(long_mode: bool) -> [u64; 4] {
    [0, if long_mode { CODE64 } else { CODE32 }, DATA, TSS]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code64_segment_is_long_mode_ring0() {
        let seg = segment_from_gdt(CODE64, 1);
        assert_eq!(seg.selector, 8);
        assert_eq!(seg.l, 1);
        assert_eq!(seg.db, 0);
        assert_eq!(seg.dpl, 0);
        assert_eq!(seg.present, 1);
        assert_eq!(seg.type_, 0xb);
        assert_eq!(seg.s, 1);
        assert_eq!(seg.limit, 0xffff_ffff);
        assert_eq!(seg.unusable, 0);
    }

    #[test]
    fn data_and_code32_are_flat_32bit() {
        let data = segment_from_gdt(DATA, 2);
        assert_eq!(
            (data.selector, data.type_, data.db, data.l, data.g),
            (16, 3, 1, 0, 1)
        );
        let code = segment_from_gdt(CODE32, 1);
        assert_eq!(
            (code.db, code.l, code.base, code.limit),
            (1, 0, 0, 0xffff_ffff)
        );
    }

    #[test]
    fn base_and_limit_round_trip() {
        let e = gdt_entry(0x0093, 0x1234_5678, 0xabcde);
        let seg = segment_from_gdt(e, 3);
        assert_eq!(seg.base, 0x1234_5678);
        assert_eq!(seg.limit, 0xabcde);
        assert_eq!(seg.g, 0);
        assert_eq!(seg.selector, 24);
    }

    #[test]
    fn not_present_segment_is_unusable() {
        assert_eq!(segment_from_gdt(0, 0).unusable, 1);
    }
}
