//! Guest RAM regions and the e820 map that describes them to the guest.

use crate::layout::{EBDA_START, HIMEM_START, MMIO_GAP_END, MMIO_GAP_START};

/// e820 entry type for usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 entry type for reserved memory.
pub const E820_RESERVED: u32 = 2;

/// One e820 entry: start, size and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct E820Entry {
    /// Guest physical start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// `E820_RAM` or `E820_RESERVED`.
    pub kind: u32,
}

/// The RAM regions `(start, size)` for a guest of `mem_size` bytes: one region
/// below the MMIO gap, and a second one from 4 GiB up for what does not fit.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    if mem_size <= MMIO_GAP_START {
        vec![(0, mem_size)]
    } else {
        vec![
            (0, MMIO_GAP_START),
            (MMIO_GAP_END, mem_size - MMIO_GAP_START),
        ]
    }
}

/// End of the RAM below the MMIO gap (exclusive).
pub fn low_ram_end(mem_size: u64) -> u64 {
    mem_size.min(MMIO_GAP_START)
}

/// The e820 map for a guest with `mem_size` bytes of RAM: base RAM below the
/// EBDA, the BIOS hole reserved, high RAM up to the gap, and RAM above 4 GiB.
pub fn e820_map(mem_size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = low_ram_end(mem_size);
    if low_end > HIMEM_START {
        map.push(E820Entry {
            addr: HIMEM_START,
            size: low_end - HIMEM_START,
            kind: E820_RAM,
        });
    }
    if mem_size > MMIO_GAP_START {
        map.push(E820Entry {
            addr: MMIO_GAP_END,
            size: mem_size - MMIO_GAP_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    #[test]
    fn small_guest_has_one_region() {
        assert_eq!(ram_regions(128 * MIB), vec![(0, 128 * MIB)]);
        assert_eq!(ram_regions(3 * GIB), vec![(0, 3 * GIB)]);
    }

    #[test]
    fn large_guest_skips_the_mmio_gap() {
        let regions = ram_regions(6 * GIB);
        assert_eq!(regions, vec![(0, 3 * GIB), (4 * GIB, 3 * GIB)]);
        let total: u64 = regions.iter().map(|r| r.1).sum();
        assert_eq!(total, 6 * GIB);
    }

    #[test]
    fn e820_small_guest() {
        let map = e820_map(128 * MIB);
        assert_eq!(map.len(), 3);
        assert_eq!(
            map[0],
            E820Entry {
                addr: 0,
                size: EBDA_START,
                kind: E820_RAM
            }
        );
        assert_eq!(map[1].kind, E820_RESERVED);
        assert_eq!(
            map[2],
            E820Entry {
                addr: HIMEM_START,
                size: 127 * MIB,
                kind: E820_RAM
            }
        );
    }

    #[test]
    fn e820_large_guest_has_ram_above_4g_and_none_in_the_gap() {
        let map = e820_map(5 * GIB);
        assert_eq!(map.len(), 4);
        assert_eq!(map[2].addr + map[2].size, MMIO_GAP_START);
        assert_eq!(
            map[3],
            E820Entry {
                addr: MMIO_GAP_END,
                size: 2 * GIB,
                kind: E820_RAM
            }
        );
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        // All RAM but the 384 KiB legacy hole is described as usable.
        assert_eq!(ram, 5 * GIB - (HIMEM_START - EBDA_START));
        for e in &map {
            let end = e.addr + e.size;
            assert!(
                end <= MMIO_GAP_START || e.addr >= MMIO_GAP_END,
                "{e:?} overlaps the gap"
            );
        }
    }
}
