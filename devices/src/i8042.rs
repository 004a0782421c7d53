//! The i8042 keyboard controller, reduced to what a microVM needs: the CPU
//! reset line (command 0xFE on port 0x64), which Linux uses with reboot=k.

use vm_superio::I8042Device;

use crate::bus::BusDevice;
use crate::serial::EventFdTrigger;

/// First port of the controller (data port 0x60; command/status is 0x64).
pub const I8042_BASE: u64 = 0x60;
/// Ports covered: 0x60..=0x64.
pub const I8042_LEN: u64 = 5;

/// The i8042 on the PIO bus; a reset request triggers `reset_evt`.
pub struct I8042 {
    inner: I8042Device<EventFdTrigger>,
}

impl I8042 {
    /// A controller that signals `reset_evt` when the guest resets the CPU.
    pub fn new(reset_evt: EventFdTrigger) -> Self {
        I8042 {
            inner: I8042Device::new(reset_evt),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.inner.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) {
            if let Err(e) = self.inner.write(off, value) {
                log::error!("i8042: cannot signal the reset: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_command_on_port_0x64_signals_reset() {
        let trigger = EventFdTrigger::new().unwrap();
        let probe = trigger.0.try_clone().unwrap();
        let mut dev = I8042::new(trigger);
        // Other writes do nothing.
        dev.write(0, &[0xfe]);
        dev.write(4, &[0xd1]);
        assert!(probe.read().is_err(), "no reset yet");
        // Status reads as "input buffer empty" so Linux's kb_wait() ends.
        let mut status = [0xffu8];
        dev.read(4, &mut status);
        assert_eq!(status[0] & 0x02, 0);
        dev.write(4, &[0xfe]);
        assert_eq!(probe.read().unwrap(), 1);
    }
}
