//! A bus maps address ranges (I/O ports or MMIO) to devices. A device sees
//! only the offset inside its own range; the bus owns the lookup. Accesses
//! that hit no device read as all ones and are logged once per address.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

/// A device on a PIO or MMIO bus.
pub trait BusDevice: Send {
    /// The guest reads `data.len()` bytes at `offset` inside the device's
    /// range. The device fills `data`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// The guest writes `data` at `offset` inside the device's range.
    fn write(&mut self, offset: u64, data: &[u8]);
}

/// Errors when placing devices on a bus.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The new range overlaps a device already on the bus.
    #[error("range {base:#x}+{len:#x} overlaps a device already on the bus")]
    Overlap {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
    /// A zero-length or wrapping range.
    #[error("invalid bus range {base:#x}+{len:#x}")]
    InvalidRange {
        /// Start of the rejected range.
        base: u64,
        /// Length of the rejected range.
        len: u64,
    },
}

/// A shared, lockable device.
pub type SharedDevice = Arc<Mutex<dyn BusDevice>>;

struct Entry {
    len: u64,
    device: SharedDevice,
}

/// Locks a device mutex, recovering it if a thread panicked while holding
/// it: a poisoned device is still better than a VMM that panics.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An address space of devices.
#[derive(Default)]
pub struct Bus {
    name: &'static str,
    devices: BTreeMap<u64, Entry>,
    logged: Mutex<HashSet<u64>>,
}

impl Bus {
    /// An empty bus; `name` ("pio", "mmio") appears in log messages.
    pub fn new(name: &'static str) -> Self {
        Bus {
            name,
            ..Default::default()
        }
    }

    /// Places `device` at `[base, base + len)`.
    pub fn insert(&mut self, device: SharedDevice, base: u64, len: u64) -> Result<(), Error> {
        let end = base
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(Error::InvalidRange { base, len })?;
        let overlaps_prev = self
            .devices
            .range(..end)
            .next_back()
            .is_some_and(|(b, e)| b + e.len > base);
        if overlaps_prev {
            return Err(Error::Overlap { base, len });
        }
        self.devices.insert(base, Entry { len, device });
        Ok(())
    }

    /// The device covering `addr` and the offset of `addr` inside it, if the
    /// whole access `[addr, addr + size)` falls inside that device.
    fn resolve(&self, addr: u64, size: usize) -> Option<(&SharedDevice, u64)> {
        let (base, entry) = self.devices.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(size as u64)? <= entry.len).then_some((&entry.device, offset))
    }

    fn log_unhandled(&self, kind: &str, addr: u64, size: usize) {
        if crate::bus::lock(&self.logged).insert(addr) {
            log::debug!(
                "{} {kind} of {size} byte(s) at {addr:#x} hits no device (logged once per address)",
                self.name
            );
        }
    }

    /// Reads from the device at `addr`. Returns false, with `data` filled
    /// with 0xff, when no device covers the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((dev, offset)) => {
                lock(dev).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.log_unhandled("read", addr, data.len());
                false
            }
        }
    }

    /// Writes to the device at `addr`. Returns false, doing nothing, when no
    /// device covers the access.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.resolve(addr, data.len()) {
            Some((dev, offset)) => {
                lock(dev).write(offset, data);
                true
            }
            None => {
                self.log_unhandled("write", addr, data.len());
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
    }

    impl BusDevice for Recorder {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.writes.push((offset, data.to_vec()));
        }
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let mut bus = Bus::new("pio");
        let a = Arc::new(Mutex::new(Recorder::default()));
        let b = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x3f8, 8).unwrap();
        bus.insert(b.clone(), 0x70, 2).unwrap();
        let mut d = [0u8; 1];
        assert!(bus.read(0x3fd, &mut d));
        assert_eq!(d, [5]);
        assert!(bus.write(0x71, &[9]));
        assert_eq!(b.lock().unwrap().writes, vec![(1, vec![9])]);
        assert!(a.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn unknown_addresses_read_all_ones_and_ignore_writes() {
        let mut bus = Bus::new("mmio");
        let a = Arc::new(Mutex::new(Recorder::default()));
        bus.insert(a.clone(), 0x1000, 0x100).unwrap();
        let mut d = [0u8; 4];
        assert!(!bus.read(0x2000, &mut d));
        assert_eq!(d, [0xff; 4]);
        assert!(!bus.write(0xfff, &[1]));
        // An access straddling the end of a device is not delivered.
        assert!(!bus.read(0x10fe, &mut d));
        assert!(a.lock().unwrap().writes.is_empty());
    }

    #[test]
    fn rejects_overlaps_and_empty_ranges() {
        let mut bus = Bus::new("pio");
        let dev = || Arc::new(Mutex::new(Recorder::default()));
        bus.insert(dev(), 0x100, 0x10).unwrap();
        assert_eq!(
            bus.insert(dev(), 0x10f, 1),
            Err(Error::Overlap {
                base: 0x10f,
                len: 1
            })
        );
        assert_eq!(
            bus.insert(dev(), 0xf8, 0x9),
            Err(Error::Overlap { base: 0xf8, len: 9 })
        );
        assert_eq!(
            bus.insert(dev(), 0x50, 0),
            Err(Error::InvalidRange { base: 0x50, len: 0 })
        );
        assert!(bus.insert(dev(), u64::MAX, 2).is_err());
        bus.insert(dev(), 0x110, 0x10).unwrap();
        bus.insert(dev(), 0xf0, 0x10).unwrap();
    }
}
