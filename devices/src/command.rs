//! The command device: how a template's init takes the command it runs
//! after a restore (`vmm template create`, then `vmm run --from DIR --
//! COMMAND`). At boot a command travels on the kernel command line
//! (`VMM_CMD`); a template's kernel has booted long before the command is
//! known, so init asks this device for it instead.
//!
//! Protocol, on two 32-bit registers at its I/O ports
//! (`arch::layout::COMMAND_PORT`, 0x448; init learns the port from the
//! `VMM_COMMAND_PORT=0x448` kernel parameter):
//! - offset 0, write `READY` (0x564d5201): init is ready for a command.
//!   The first such write calls the VMM's `on_ready` (which pauses the VM
//!   and snapshots it: the template). Other writes change nothing.
//! - offset 0, read: `NONE` (all ones) while there is no command; else the
//!   command's length in bytes (each argument followed by a NUL byte).
//! - offset 4, read: the command's next four bytes, little-endian, zero
//!   past its end; each read moves on.
//!
//! - offset 8, read: the next signal to send (0 when none): its number in
//!   bits 0-7, bit 8 set to send it to every process (`kill(-1, sig)`)
//!   rather than to the command; each read takes one off the queue.
//!   Init polls it while the command it got from this device runs, so that
//!   `vmm-runtime kill ID TERM` reaches the container's process.
//!
//! Init polls offset 0 until a command is there: in a template the VMM
//! pauses the VM within microseconds of READY, so the poll is what the
//! snapshot holds, and a restored VM finds its command at the first read.

use crate::bus::BusDevice;

/// Its length on the PIO bus: three 32-bit registers.
pub const LEN: u64 = 12;
/// The signal register's "to every process" bit.
pub const SIGNAL_ALL: u32 = 0x100;
/// The most signals queued for init at once; more are dropped (each is
/// one `kill`, taken in 10 ms at most).
pub const MAX_SIGNALS: usize = 64;
/// Init's "ready for a command".
pub const READY: u32 = 0x564d_5201;
/// Offset 0's value while there is no command.
pub const NONE: u32 = u32::MAX;
/// The kernel parameter that tells init the port.
pub const CMDLINE_PARAM: &str = "VMM_COMMAND_PORT";
/// The longest command handed over, bytes.
pub const MAX_COMMAND: usize = 64 * 1024;

/// What a snapshot keeps of the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandSnapshot {
    /// Init said it is ready.
    pub ready: bool,
}

/// The command device.
pub struct CommandDevice {
    on_ready: Box<dyn FnMut() + Send>,
    ready: bool,
    command: Option<Vec<u8>>,
    at: usize,
    signals: std::collections::VecDeque<u32>,
}

impl CommandDevice {
    /// A device that calls `on_ready` when init first says it is ready.
    pub fn new(on_ready: Box<dyn FnMut() + Send>) -> Self {
        CommandDevice {
            on_ready,
            ready: false,
            command: None,
            at: 0,
            signals: Default::default(),
        }
    }

    /// Hands `args` to init: each argument followed by a NUL byte. Refused
    /// when there is no argument, an argument holds a NUL byte, or the
    /// whole is longer than `MAX_COMMAND`.
    pub fn set_command(&mut self, args: &[Vec<u8>]) -> Result<(), String> {
        if args.is_empty() {
            return Err("the command is empty".into());
        }
        let mut bytes = Vec::new();
        for a in args {
            if a.contains(&0) {
                return Err(format!(
                    "argument '{}' holds a NUL byte",
                    String::from_utf8_lossy(a)
                ));
            }
            bytes.extend_from_slice(a);
            bytes.push(0);
        }
        if bytes.len() > MAX_COMMAND {
            return Err(format!(
                "the command is {} bytes, more than {MAX_COMMAND}",
                bytes.len()
            ));
        }
        self.command = Some(bytes);
        self.at = 0;
        Ok(())
    }

    /// Queues signal `sig` (1 to 64) for init to send to the command, or
    /// with `all` to every process of the guest. Refused for a number that
    /// is no signal, or when MAX_SIGNALS are waiting already.
    pub fn send_signal(&mut self, sig: i32, all: bool) -> Result<(), String> {
        if !(1..=64).contains(&sig) {
            return Err(format!("{sig} is not a signal number (1 to 64)"));
        }
        if self.signals.len() >= MAX_SIGNALS {
            return Err(format!("{MAX_SIGNALS} signals are already waiting"));
        }
        self.signals
            .push_back(sig as u32 | if all { SIGNAL_ALL } else { 0 });
        Ok(())
    }

    /// Whether a command was handed to init.
    pub fn has_command(&self) -> bool {
        self.command.is_some()
    }

    /// Whether init has said it is ready.
    pub fn ready(&self) -> bool {
        self.ready
    }

    /// The device's state, for a snapshot. A command is not part of it:
    /// each restore hands its own.
    pub fn save(&self) -> CommandSnapshot {
        CommandSnapshot { ready: self.ready }
    }

    /// Puts a saved state back (no `on_ready` call: init said it before).
    pub fn restore(&mut self, snap: &CommandSnapshot) {
        self.ready = snap.ready;
    }
}

impl BusDevice for CommandDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = match (offset, &self.command) {
            (0, None) => NONE,
            (0, Some(c)) => c.len() as u32,
            (8, _) => self.signals.pop_front().unwrap_or(0),
            (4, Some(c)) => {
                let mut word = [0u8; 4];
                let end = (self.at + 4).min(c.len());
                if self.at < end {
                    word[..end - self.at].copy_from_slice(&c[self.at..end]);
                }
                self.at = (self.at + 4).min(c.len());
                u32::from_le_bytes(word)
            }
            _ => NONE,
        };
        let bytes = value.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = bytes.get(i).copied().unwrap_or(0xff);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let value = <[u8; 4]>::try_from(data).ok().map(u32::from_le_bytes);
        if offset == 0 && value == Some(READY) && !self.ready {
            self.ready = true;
            (self.on_ready)();
        } else {
            log::debug!(
                "command device: a {}-byte write at offset {offset}; ignored",
                data.len()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn word(dev: &mut CommandDevice, offset: u64) -> u32 {
        let mut d = [0u8; 4];
        dev.read(offset, &mut d);
        u32::from_le_bytes(d)
    }

    #[test]
    fn init_reads_the_command_word_by_word_after_saying_it_is_ready() {
        let calls = Arc::new(AtomicU32::new(0));
        let c = calls.clone();
        let mut dev = CommandDevice::new(Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        }));
        assert_eq!(word(&mut dev, 0), NONE);
        dev.write(0, &READY.to_le_bytes());
        dev.write(0, &READY.to_le_bytes());
        dev.write(0, &[1]);
        assert_eq!(calls.load(Ordering::SeqCst), 1, "on_ready once");
        assert!(dev.ready());
        let args = [b"echo".to_vec(), b"a b".to_vec()];
        dev.set_command(&args).unwrap();
        let len = word(&mut dev, 0) as usize;
        assert_eq!(len, 9);
        let mut got = Vec::new();
        while got.len() < len {
            got.extend_from_slice(&word(&mut dev, 4).to_le_bytes());
        }
        got.truncate(len);
        assert_eq!(got, b"echo\0a b\0");
        // Past the end: zeros, no panic.
        assert_eq!(word(&mut dev, 4), 0);
        let mut odd = [0u8; 8];
        dev.read(16, &mut odd);
        assert_eq!(odd, [0xff; 8]);
    }

    #[test]
    fn signals_reach_init_one_read_each_in_order() {
        let mut dev = CommandDevice::new(Box::new(|| {}));
        assert_eq!(word(&mut dev, 8), 0, "none waiting");
        dev.send_signal(15, false).unwrap();
        dev.send_signal(9, true).unwrap();
        assert_eq!(word(&mut dev, 8), 15);
        assert_eq!(word(&mut dev, 8), 9 | SIGNAL_ALL);
        assert_eq!(word(&mut dev, 8), 0);
        assert!(dev.send_signal(0, false).is_err());
        assert!(dev.send_signal(65, false).is_err());
        for _ in 0..MAX_SIGNALS {
            dev.send_signal(1, false).unwrap();
        }
        assert!(dev.send_signal(1, false).unwrap_err().contains("waiting"));
    }

    #[test]
    fn bad_commands_are_refused() {
        let mut dev = CommandDevice::new(Box::new(|| {}));
        assert!(dev.set_command(&[]).unwrap_err().contains("empty"));
        assert!(dev
            .set_command(&[b"a\0b".to_vec()])
            .unwrap_err()
            .contains("NUL"));
        let long = vec![b'x'; MAX_COMMAND];
        assert!(dev.set_command(&[long]).unwrap_err().contains("more than"));
        assert_eq!(word(&mut dev, 0), NONE);
    }

    #[test]
    fn a_restored_device_is_ready_without_calling_back() {
        let mut dev = CommandDevice::new(Box::new(|| panic!("not again")));
        dev.restore(&CommandSnapshot { ready: true });
        dev.write(0, &READY.to_le_bytes());
        assert_eq!(dev.save(), CommandSnapshot { ready: true });
    }
}
