//! Per-vCPU CPUID: KVM's supported leaves with this vCPU's APIC id and the
//! VM's topology (one socket, one thread per core, `count` cores).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const LEVEL_TYPE_THREAD: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// Bits needed to number `count` items.
fn bits_for(count: u8) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - u32::from(count - 1).leading_zeros()
    }
}

/// Adjusts one CPUID entry for vCPU `id` of `count`.
pub fn adjust_entry(entry: &mut kvm_cpuid_entry2, id: u8, count: u8) {
    match entry.function {
        LEAF_FEATURES => {
            // EBX[31:24] initial APIC id, EBX[23:16] logical processors.
            entry.ebx =
                (entry.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(count) << 16);
            entry.ecx |= ECX_HYPERVISOR;
            if count > 1 {
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE => {
            // EAX[31:26]: cores per package - 1; EAX[25:14]: threads sharing
            // this cache - 1 (private caches: 0, shared L3: all).
            let level = (entry.eax >> 5) & 0x7;
            let sharing = if level >= 3 { u32::from(count) - 1 } else { 0 };
            entry.eax =
                (entry.eax & 0x3fff) | ((u32::from(count) - 1) << 26) | ((sharing & 0xfff) << 14);
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
            entry.edx = u32::from(id);
            match entry.index {
                0 => {
                    entry.eax = 0;
                    entry.ebx = 1;
                    entry.ecx = (LEVEL_TYPE_THREAD << 8) | entry.index;
                }
                1 => {
                    entry.eax = bits_for(count);
                    entry.ebx = u32::from(count);
                    entry.ecx = (LEVEL_TYPE_CORE << 8) | entry.index;
                }
                _ => {
                    entry.eax = 0;
                    entry.ebx = 0;
                    entry.ecx = entry.index;
                }
            }
        }
        _ => {}
    }
}

/// Adjusts every entry of `cpuid` (KVM's supported set) for vCPU `id` of
/// `count`.
pub fn for_vcpu(cpuid: &mut CpuId, id: u8, count: u8) {
    for entry in cpuid.as_mut_slice() {
        adjust_entry(entry, id, count);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx: 0x0008_0800,
            eax: 0x121,
            ..Default::default()
        }
    }

    #[test]
    fn leaf1_carries_apic_id_and_count() {
        let mut e = entry(1, 0);
        adjust_entry(&mut e, 3, 4);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0x0800, "CLFLUSH line size kept");
        assert_ne!(e.edx & EDX_HTT, 0);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        let mut e = entry(1, 0);
        e.edx = EDX_HTT;
        adjust_entry(&mut e, 0, 1);
        assert_eq!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn leaf_b_describes_cores() {
        let mut t = entry(0xb, 0);
        adjust_entry(&mut t, 2, 3);
        assert_eq!((t.eax, t.ebx, t.ecx >> 8, t.edx), (0, 1, 1, 2));
        let mut c = entry(0xb, 1);
        adjust_entry(&mut c, 2, 3);
        assert_eq!((c.eax, c.ebx, c.ecx >> 8, c.edx), (2, 3, 2, 2));
    }

    #[test]
    fn leaf4_core_count() {
        let mut e = entry(4, 0);
        adjust_entry(&mut e, 0, 8);
        assert_eq!(e.eax >> 26, 7);
        assert_eq!(e.eax & 0x3fff, 0x121);
    }

    #[test]
    fn bits_needed() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(bits_for), [0, 1, 2, 2, 3, 3, 4]);
    }
}
