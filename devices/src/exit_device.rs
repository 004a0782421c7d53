//! The exit device: how the guest's init hands the VMM the exit status of
//! the command it ran (`vmm run -- COMMAND`), which becomes the VMM's own
//! exit code, as with `docker run`.
//!
//! Protocol: its I/O port (`arch::layout::EXIT_DEVICE_PORT`, 0x444), one
//! 4-byte write (`outl`) of
//! `MAGIC | status`, the status (0 to 255) in the low byte and "VMX"
//! (0x564d58) in the three bytes above it. The first such write is the
//! report; the VMM ends the VM with that status. Anything else (another
//! width or offset, another value, a second report) changes nothing and
//! gets a log line, the first `MAX_LOGGED` of them, then one saying the
//! rest are not logged. Reads return all ones. The VMM tells init the port
//! through the `VMM_EXIT_PORT=0x444` command-line parameter (an
//! environment variable for init), so that the same init in a container
//! touches no port.

use crate::bus::BusDevice;

/// Its length on the PIO bus: one 32-bit register.
pub const LEN: u64 = 4;
/// The upper three bytes of a report.
pub const MAGIC: u32 = 0x564d_5800;
/// The kernel parameter the VMM adds so that init knows the port.
pub const CMDLINE_PARAM: &str = "VMM_EXIT_PORT";
/// Malformed accesses logged before the device goes quiet.
pub const MAX_LOGGED: u32 = 8;

/// The exit device: calls `on_exit` with the first well-formed report.
pub struct ExitDevice {
    on_exit: Box<dyn FnMut(u8) + Send>,
    reported: Option<u8>,
    ignored: u32,
}

impl ExitDevice {
    /// An exit device handing the reported status to `on_exit`, once.
    pub fn new(on_exit: Box<dyn FnMut(u8) + Send>) -> Self {
        ExitDevice {
            on_exit,
            reported: None,
            ignored: 0,
        }
    }

    /// The status reported, if any.
    pub fn reported(&self) -> Option<u8> {
        self.reported
    }

    /// What a snapshot keeps: the status reported, if any (a restored VM
    /// whose command had already reported does not report again).
    pub fn save(&self) -> Option<u8> {
        self.reported
    }

    /// Puts a saved report back.
    pub fn restore(&mut self, reported: Option<u8>) {
        self.reported = reported;
    }

    fn ignore(&mut self, what: std::fmt::Arguments) {
        self.ignored = self.ignored.saturating_add(1);
        if self.ignored <= MAX_LOGGED {
            log::warn!("exit device: {what}; ignored");
        }
        if self.ignored == MAX_LOGGED {
            log::warn!("exit device: {MAX_LOGGED} bad accesses; the next ones are not logged");
        }
    }
}

impl BusDevice for ExitDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return self.ignore(format_args!(
                "a {}-byte write at offset {offset} (a report is one 4-byte write)",
                data.len()
            ));
        };
        if offset != 0 {
            return self.ignore(format_args!("a write at offset {offset}"));
        }
        let value = u32::from_le_bytes(bytes);
        if value & !0xff != MAGIC {
            return self.ignore(format_args!("value {value:#010x} is not a report"));
        }
        let status = bytes[0];
        if let Some(first) = self.reported {
            return self.ignore(format_args!(
                "a second report ({status}) after the first ({first})"
            ));
        }
        self.reported = Some(status);
        (self.on_exit)(status);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn device() -> (ExitDevice, Arc<Mutex<Vec<u8>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let dev = ExitDevice::new(Box::new(move |st| s.lock().unwrap().push(st)));
        (dev, seen)
    }

    #[test]
    fn a_report_hands_over_its_status_once() {
        let (mut dev, seen) = device();
        dev.write(0, &(MAGIC | 42).to_le_bytes());
        assert_eq!(dev.reported(), Some(42));
        dev.write(0, &(MAGIC | 7).to_le_bytes());
        assert_eq!(*seen.lock().unwrap(), vec![42]);
        assert_eq!(dev.reported(), Some(42));
        let mut buf = [0u8; 4];
        dev.read(0, &mut buf);
        assert_eq!(buf, [0xff; 4]);
    }

    #[test]
    fn every_status_byte_is_reported_as_it_is() {
        for status in [0u8, 1, 125, 126, 127, 128, 255] {
            let (mut dev, seen) = device();
            dev.write(0, &(MAGIC | u32::from(status)).to_le_bytes());
            assert_eq!(*seen.lock().unwrap(), vec![status]);
        }
    }

    #[test]
    fn garbage_changes_nothing() {
        let (mut dev, seen) = device();
        // Wrong widths, offsets and values, then many of them (the log
        // goes quiet; nothing panics or overflows).
        dev.write(0, &[0x2a]);
        dev.write(0, &[0x2a, 0x58]);
        dev.write(0, &(MAGIC | 1).to_le_bytes()[..3]);
        dev.write(1, &(MAGIC | 1).to_le_bytes());
        dev.write(0, &0x564d_5900u32.to_le_bytes());
        dev.write(0, &0x0000_0001u32.to_le_bytes());
        dev.write(0, &[0; 8]);
        for i in 0..10_000u32 {
            dev.write(u64::from(i % 4), &i.to_le_bytes());
        }
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(dev.reported(), None);
        // A well-formed report still counts afterwards.
        dev.write(0, &(MAGIC | 3).to_le_bytes());
        assert_eq!(*seen.lock().unwrap(), vec![3]);
    }

    #[test]
    fn a_restored_report_is_not_made_again() {
        let (mut dev, seen) = device();
        dev.restore(Some(9));
        dev.write(0, &(MAGIC | 1).to_le_bytes());
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(dev.save(), Some(9));
        let (mut fresh, seen) = device();
        fresh.restore(None);
        fresh.write(0, &(MAGIC | 1).to_le_bytes());
        assert_eq!(*seen.lock().unwrap(), vec![1]);
    }
}
