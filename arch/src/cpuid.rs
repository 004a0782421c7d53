//! Per-vCPU CPUID: KVM's supported leaves with this vCPU's APIC id and the
//! VM's topology: one socket of `count` logical CPUs, one thread per core,
//! or two with SMT (`threads` = 2).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_EXT_TOPOLOGY_V2: u32 = 0x1f;
const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const LEVEL_TYPE_THREAD: u32 = 1;
const LEVEL_TYPE_CORE: u32 = 2;

/// CPUID.1:ECX bit 24: the local APIC's TSC-deadline timer mode.
const ECX_TSC_DEADLINE: u32 = 1 << 24;

/// Offers the TSC-deadline timer (leaf 1, ECX bit 24), which
/// KVM_GET_SUPPORTED_CPUID leaves out even where KVM's local APIC emulates
/// it (KVM_CAP_TSC_DEADLINE_TIMER says so).
pub fn offer_tsc_deadline(cpuid: &mut CpuId) {
    for entry in cpuid.as_mut_slice() {
        if entry.function == LEAF_FEATURES {
            entry.ecx |= ECX_TSC_DEADLINE;
        }
    }
}

/// Bits needed to number `count` items.
fn bits_for(count: u8) -> u32 {
    if count <= 1 {
        0
    } else {
        32 - u32::from(count - 1).leading_zeros()
    }
}

/// Adjusts one CPUID entry for vCPU `id` of `count`, with `threads` (1 or
/// 2) logical CPUs per core.
pub fn adjust_entry(entry: &mut kvm_cpuid_entry2, id: u8, count: u8, threads: u8) {
    let threads = threads.clamp(1, count.max(1));
    let cores = count.div_ceil(threads);
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
            // EAX[31:26]: cores per package - 1; EAX[25:14]: logical CPUs
            // sharing this cache - 1 (L1 and L2: a core's threads, L3: all).
            let level = (entry.eax >> 5) & 0x7;
            let sharing = if level >= 3 { count } else { threads };
            entry.eax = (entry.eax & 0x3fff)
                | ((u32::from(cores) - 1) << 26)
                | (((u32::from(sharing) - 1) & 0xfff) << 14);
        }
        LEAF_EXT_TOPOLOGY | LEAF_EXT_TOPOLOGY_V2 => {
            entry.edx = u32::from(id);
            match entry.index {
                // EAX: how far to shift the x2APIC id to reach the next
                // level's id; EBX: logical CPUs at this level.
                0 => {
                    entry.eax = bits_for(threads);
                    entry.ebx = u32::from(threads);
                    entry.ecx = (LEVEL_TYPE_THREAD << 8) | entry.index;
                }
                1 => {
                    entry.eax = bits_for(threads) + bits_for(cores);
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

/// KVM's hypervisor leaves: the signature leaf (EAX: the highest
/// hypervisor leaf) and the timing leaf this VMM adds.
const LEAF_HYPERVISOR: u32 = 0x4000_0000;
const LEAF_HYPERVISOR_TIMING: u32 = 0x4000_0010;
/// "KVMKVMKVM\0\0\0" in EBX, ECX, EDX of the signature leaf.
const KVM_SIGNATURE: [u32; 3] = [0x4b4d_564b, 0x564b_4d56, 0x0000_004d];
/// KVM's local APIC timer runs at 1 GHz.
const KVM_APIC_BUS_KHZ: u32 = 1_000_000;

/// Adds the hypervisor timing leaf 0x40000010 (EAX: TSC frequency in kHz,
/// EBX: APIC bus frequency in kHz), as VMware defined it and Cloud
/// Hypervisor and QEMU give it, so a guest can know its TSC frequency
/// without calibrating it against a timer. Only under KVM's signature;
/// raises the signature leaf's highest-leaf value to reach it. Returns
/// whether the leaf was added.
pub fn add_tsc_leaf(cpuid: &mut CpuId, tsc_khz: u32) -> bool {
    if tsc_khz == 0 {
        return false;
    }
    let Some(sig) = cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == LEAF_HYPERVISOR)
    else {
        return false;
    };
    if [sig.ebx, sig.ecx, sig.edx] != KVM_SIGNATURE {
        return false;
    }
    sig.eax = sig.eax.max(LEAF_HYPERVISOR_TIMING);
    let timing = kvm_cpuid_entry2 {
        function: LEAF_HYPERVISOR_TIMING,
        eax: tsc_khz,
        ebx: KVM_APIC_BUS_KHZ,
        ..Default::default()
    };
    match cpuid
        .as_mut_slice()
        .iter_mut()
        .find(|e| e.function == LEAF_HYPERVISOR_TIMING)
    {
        Some(e) => *e = timing,
        None => {
            if cpuid.push(timing).is_err() {
                return false;
            }
        }
    }
    true
}

/// The VM's CPU topology: one socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Logical CPUs (vCPUs).
    pub count: u8,
    /// Logical CPUs per core: 1, or 2 with SMT.
    pub threads_per_core: u8,
}

/// Adjusts every entry of `cpuid` (KVM's supported set) for vCPU `id` of
/// `topology`.
pub fn for_vcpu(cpuid: &mut CpuId, id: u8, topology: Topology) {
    for entry in cpuid.as_mut_slice() {
        adjust_entry(entry, id, topology.count, topology.threads_per_core);
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
    fn the_tsc_deadline_bit_is_set_in_leaf_1_only() {
        let mut cpuid = CpuId::from_entries(&[entry(1, 0), entry(4, 0), entry(7, 0)]).unwrap();
        offer_tsc_deadline(&mut cpuid);
        for e in cpuid.as_slice() {
            assert_eq!(e.ecx & ECX_TSC_DEADLINE != 0, e.function == 1, "{e:?}");
        }
    }

    #[test]
    fn leaf1_carries_apic_id_and_count() {
        let mut e = entry(1, 0);
        adjust_entry(&mut e, 3, 4, 1);
        assert_eq!(e.ebx >> 24, 3);
        assert_eq!((e.ebx >> 16) & 0xff, 4);
        assert_eq!(e.ebx & 0xffff, 0x0800, "CLFLUSH line size kept");
        assert_ne!(e.edx & EDX_HTT, 0);
        assert_ne!(e.ecx & ECX_HYPERVISOR, 0);
        let mut e = entry(1, 0);
        e.edx = EDX_HTT;
        adjust_entry(&mut e, 0, 1, 1);
        assert_eq!(e.edx & EDX_HTT, 0);
    }

    #[test]
    fn leaf_b_describes_cores() {
        let mut t = entry(0xb, 0);
        adjust_entry(&mut t, 2, 3, 1);
        assert_eq!((t.eax, t.ebx, t.ecx >> 8, t.edx), (0, 1, 1, 2));
        let mut c = entry(0xb, 1);
        adjust_entry(&mut c, 2, 3, 1);
        assert_eq!((c.eax, c.ebx, c.ecx >> 8, c.edx), (2, 3, 2, 2));
    }

    #[test]
    fn leaf4_core_count() {
        let mut e = entry(4, 0);
        adjust_entry(&mut e, 0, 8, 1);
        assert_eq!(e.eax >> 26, 7);
        assert_eq!(e.eax & 0x3fff, 0x121);
        assert_eq!((e.eax >> 14) & 0xfff, 0, "level 1 is private to a core");
    }

    #[test]
    fn smt_makes_pairs_of_threads() {
        // 6 logical CPUs, 2 threads per core: 3 cores.
        let mut t = entry(0xb, 0);
        adjust_entry(&mut t, 5, 6, 2);
        assert_eq!((t.eax, t.ebx, t.ecx >> 8, t.edx), (1, 2, 1, 5));
        let mut c = entry(0xb, 1);
        adjust_entry(&mut c, 5, 6, 2);
        assert_eq!((c.eax, c.ebx, c.ecx >> 8), (3, 6, 2));
        let mut l1 = entry(4, 0); // eax 0x121: level 1
        adjust_entry(&mut l1, 0, 6, 2);
        assert_eq!(l1.eax >> 26, 2, "3 cores");
        assert_eq!((l1.eax >> 14) & 0xfff, 1, "L1 shared by 2 threads");
        let mut l3 = entry(4, 3);
        l3.eax = 0x163; // level 3
        adjust_entry(&mut l3, 0, 6, 2);
        assert_eq!((l3.eax >> 14) & 0xfff, 5, "L3 shared by all 6");
        // One vCPU with SMT asked for is still one thread.
        let mut one = entry(0xb, 0);
        adjust_entry(&mut one, 0, 1, 2);
        assert_eq!((one.eax, one.ebx), (0, 1));
    }

    fn kvm_cpuid(entries: &[kvm_cpuid_entry2]) -> CpuId {
        CpuId::from_entries(entries).unwrap()
    }

    fn kvm_signature(eax: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function: LEAF_HYPERVISOR,
            eax,
            ebx: KVM_SIGNATURE[0],
            ecx: KVM_SIGNATURE[1],
            edx: KVM_SIGNATURE[2],
            ..Default::default()
        }
    }

    fn leaf(cpuid: &CpuId, function: u32) -> Option<kvm_cpuid_entry2> {
        cpuid
            .as_slice()
            .iter()
            .find(|e| e.function == function)
            .copied()
    }

    #[test]
    fn the_timing_leaf_carries_the_tsc_frequency() {
        let mut c = kvm_cpuid(&[entry(1, 0), kvm_signature(0x4000_0001)]);
        assert!(add_tsc_leaf(&mut c, 2_495_312));
        assert_eq!(leaf(&c, LEAF_HYPERVISOR).unwrap().eax, 0x4000_0010);
        let t = leaf(&c, LEAF_HYPERVISOR_TIMING).unwrap();
        assert_eq!((t.eax, t.ebx), (2_495_312, 1_000_000));
        // Again: replaced, not added twice; a higher max leaf is kept.
        c.as_mut_slice()[1].eax = 0x4000_0020;
        assert!(add_tsc_leaf(&mut c, 3_000_000));
        assert_eq!(c.as_slice().len(), 3);
        assert_eq!(leaf(&c, LEAF_HYPERVISOR).unwrap().eax, 0x4000_0020);
        assert_eq!(leaf(&c, LEAF_HYPERVISOR_TIMING).unwrap().eax, 3_000_000);
    }

    #[test]
    fn no_timing_leaf_without_kvm_or_a_frequency() {
        let mut c = kvm_cpuid(&[entry(1, 0)]);
        assert!(!add_tsc_leaf(&mut c, 2_000_000));
        assert_eq!(c.as_slice().len(), 1);
        let mut other = kvm_signature(0x4000_0001);
        other.ebx = 0x1234;
        let mut c = kvm_cpuid(&[other]);
        assert!(!add_tsc_leaf(&mut c, 2_000_000));
        assert!(leaf(&c, LEAF_HYPERVISOR_TIMING).is_none());
        let mut c = kvm_cpuid(&[kvm_signature(0x4000_0001)]);
        assert!(!add_tsc_leaf(&mut c, 0));
        assert_eq!(leaf(&c, LEAF_HYPERVISOR).unwrap().eax, 0x4000_0001);
    }

    #[test]
    fn bits_needed() {
        assert_eq!([1, 2, 3, 4, 5, 8, 9].map(bits_for), [0, 1, 2, 2, 3, 3, 4]);
    }
}
