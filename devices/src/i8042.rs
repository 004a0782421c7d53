//! The i8042 PS/2 controller with an AT keyboard and no auxiliary (mouse)
//! port. It answers every command Linux's i8042 and atkbd drivers send while
//! probing, at once: a controller that stays silent makes the driver poll for
//! each reply 10,000 times with udelay(50), half a second per command on
//! hardware and many minutes on an emulated KVM. Its CPU reset line (command
//! 0xFE, used by Linux with reboot=k) ends the VM.

use std::collections::VecDeque;

use crate::bus::BusDevice;
use crate::serial::EventFdTrigger;
use vm_superio::Trigger;

const OFS_DATA: u64 = 0;
const OFS_COMMAND: u64 = 4;

// Status register.
const STR_OBF: u8 = 0x01;
const STR_SYS: u8 = 0x04;
const STR_CMDDAT: u8 = 0x08;
const STR_KEYLOCK: u8 = 0x10; // 1: keyboard not inhibited

// Control register ("command byte").
const CTR_KBDINT: u8 = 0x01;
const CTR_SYS: u8 = 0x04;
const CTR_KBDDIS: u8 = 0x10;
const CTR_AUXDIS: u8 = 0x20;
const CTR_XLATE: u8 = 0x40;

// Controller commands (port 0x64).
const CMD_READ_CTR: u8 = 0x20;
const CMD_WRITE_CTR: u8 = 0x60;
const CMD_AUX_DISABLE: u8 = 0xa7;
const CMD_AUX_ENABLE: u8 = 0xa8;
const CMD_AUX_TEST: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_KBD_TEST: u8 = 0xab;
const CMD_KBD_DISABLE: u8 = 0xad;
const CMD_KBD_ENABLE: u8 = 0xae;
const CMD_READ_INPUT: u8 = 0xc0;
const CMD_READ_OUTP: u8 = 0xd0;
const CMD_WRITE_OUTP: u8 = 0xd1;
const CMD_KBD_LOOP: u8 = 0xd2;
const CMD_AUX_LOOP: u8 = 0xd3;
const CMD_AUX_SEND: u8 = 0xd4;
#[cfg(test)]
const CMD_RESET_CPU: u8 = 0xfe;

// Replies.
const SELF_TEST_OK: u8 = 0x55;
const PORT_TEST_OK: u8 = 0x00;
/// Interface test result "clock line stuck high": nothing attached. Linux
/// takes any answer but 0x00, 0xfa and 0xff as "no AUX port".
const PORT_TEST_NO_DEVICE: u8 = 0x02;

// Keyboard commands and replies (port 0x60).
const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
const KBD_ECHO: u8 = 0xee;
const KBD_CMD_SETLEDS: u8 = 0xed;
const KBD_CMD_SCANSET: u8 = 0xf0;
const KBD_CMD_GETID: u8 = 0xf2;
const KBD_CMD_SETREP: u8 = 0xf3;
const KBD_CMD_RESET: u8 = 0xff;
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// Ctrl, Alt and Delete pressed, then released, in scan code set 1:
/// Ctrl 0x1d, Alt 0x38, Delete 0xe0 0x53; a release adds 0x80.
pub const CTRL_ALT_DEL: [u8; 8] = [0x1d, 0x38, 0xe0, 0x53, 0xe0, 0xd3, 0xb8, 0x9d];

/// Bytes the output buffer holds before it drops new ones.
pub const BUFFER_SIZE: usize = 16;

/// What the next byte written to the data port is for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Pending {
    /// A command for the keyboard.
    #[default]
    None,
    /// The parameter of a controller command.
    Controller(u8),
    /// The parameter of a keyboard command.
    Keyboard(u8),
}

/// What a snapshot keeps of the controller.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct I8042Snapshot {
    /// The controller configuration byte.
    pub ctr: u8,
    /// The output port.
    pub outp: u8,
    /// The status register (without the output-buffer-full bit, which
    /// follows the buffer).
    pub status: u8,
    /// Bytes waiting for the guest on the data port.
    pub out: Vec<u8>,
    /// What the next data byte is for.
    pub pending: Pending,
    /// The keyboard's scan code set.
    pub scan_set: u8,
}

/// The controller.
pub struct I8042 {
    reset: EventFdTrigger,
    irq: EventFdTrigger,
    ctr: u8,
    outp: u8,
    status: u8,
    out: VecDeque<u8>,
    pending: Pending,
    scan_set: u8,
}

impl I8042 {
    /// A controller that signals `reset` when the guest resets the CPU and
    /// `irq` (IRQ 1) when keyboard data waits.
    pub fn new(reset: EventFdTrigger, irq: EventFdTrigger) -> Self {
        I8042 {
            reset,
            irq,
            ctr: CTR_KBDINT | CTR_SYS | CTR_XLATE | CTR_AUXDIS,
            outp: 0x01,
            status: STR_SYS | STR_KEYLOCK,
            out: VecDeque::new(),
            pending: Pending::None,
            scan_set: 2,
        }
    }

    /// Presses and releases Ctrl-Alt-Del on the keyboard, as Firecracker's
    /// SendCtrlAltDel does: the scan codes (set 1, as the controller's
    /// translation hands them to the guest) wait in the output buffer and
    /// IRQ 1 is raised. A Linux guest with the AT keyboard driver restarts
    /// (or signals its init, if init asked for that). Returns false when
    /// the buffer had no room for them all (nothing is queued then).
    pub fn ctrl_alt_del(&mut self) -> bool {
        if self.out.len() + CTRL_ALT_DEL.len() > BUFFER_SIZE {
            return false;
        }
        self.out.extend(CTRL_ALT_DEL);
        self.raise_irq();
        true
    }

    /// The controller's state, for a snapshot.
    pub fn save(&self) -> I8042Snapshot {
        I8042Snapshot {
            ctr: self.ctr,
            outp: self.outp,
            status: self.status,
            out: self.out.iter().copied().collect(),
            pending: self.pending,
            scan_set: self.scan_set,
        }
    }

    /// Puts `snap` in place of the controller's state; IRQ 1 is raised
    /// again if bytes wait. Refused when more bytes wait than it holds.
    pub fn restore(&mut self, snap: &I8042Snapshot) -> Result<(), String> {
        if snap.out.len() > BUFFER_SIZE {
            return Err(format!(
                "i8042: {} bytes in its buffer, more than its {BUFFER_SIZE}",
                snap.out.len()
            ));
        }
        self.ctr = snap.ctr;
        self.outp = snap.outp;
        self.status = snap.status;
        self.out = snap.out.iter().copied().collect();
        self.pending = snap.pending;
        self.scan_set = snap.scan_set;
        self.raise_irq();
        Ok(())
    }

    fn status(&self) -> u8 {
        let obf = if self.out.is_empty() { 0 } else { STR_OBF };
        self.status | obf
    }

    /// Queues a byte for the data port. Controller replies replace what is
    /// waiting, as the command resets the exchange.
    fn push(&mut self, byte: u8) {
        if self.out.len() < BUFFER_SIZE {
            self.out.push_back(byte);
        }
    }

    fn controller_reply(&mut self, byte: u8) {
        self.out.clear();
        self.push(byte);
    }

    fn keyboard_reply(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.push(*b);
        }
        self.raise_irq();
    }

    fn raise_irq(&self) {
        if self.ctr & CTR_KBDINT != 0 && !self.out.is_empty() {
            if let Err(e) = self.irq.trigger() {
                log::warn!("i8042: cannot raise IRQ 1: {e}");
            }
        }
    }

    fn command(&mut self, cmd: u8) {
        self.status |= STR_CMDDAT;
        match cmd {
            CMD_READ_CTR => self.controller_reply(self.ctr),
            CMD_WRITE_CTR | CMD_WRITE_OUTP | CMD_KBD_LOOP | CMD_AUX_LOOP | CMD_AUX_SEND => {
                self.pending = Pending::Controller(cmd)
            }
            CMD_AUX_DISABLE => self.ctr |= CTR_AUXDIS,
            CMD_AUX_ENABLE => self.ctr &= !CTR_AUXDIS,
            CMD_AUX_TEST => self.controller_reply(PORT_TEST_NO_DEVICE),
            CMD_SELF_TEST => self.controller_reply(SELF_TEST_OK),
            CMD_KBD_TEST => self.controller_reply(PORT_TEST_OK),
            CMD_KBD_DISABLE => self.ctr |= CTR_KBDDIS,
            CMD_KBD_ENABLE => self.ctr &= !CTR_KBDDIS,
            CMD_READ_INPUT => self.controller_reply(0x00),
            CMD_READ_OUTP => self.controller_reply(self.outp),
            // 0xF0..=0xFF pulse output lines for 6 us; bit 0 low (as in
            // CMD_RESET_CPU) resets the CPU.
            0xf0..=0xff if cmd & 0x01 == 0 => {
                if let Err(e) = self.reset.trigger() {
                    log::error!("i8042: cannot signal the CPU reset: {e}");
                }
            }
            0xf0..=0xff => {}
            other => log::debug!("i8042: ignoring controller command {other:#04x}"),
        }
    }

    fn controller_data(&mut self, cmd: u8, value: u8) {
        match cmd {
            CMD_WRITE_CTR => self.ctr = value,
            CMD_WRITE_OUTP => self.outp = value,
            // The byte comes back as if the keyboard sent it.
            CMD_KBD_LOOP => self.keyboard_reply(&[value]),
            // No AUX port: the loop byte comes back without the AUX flag,
            // which tells Linux there is no AUX port; AUX sends are lost.
            CMD_AUX_LOOP => self.controller_reply(value),
            _ => {}
        }
    }

    fn keyboard_command(&mut self, value: u8) {
        match value {
            KBD_CMD_RESET => {
                self.scan_set = 2;
                self.keyboard_reply(&[KBD_ACK, KBD_BAT_OK]);
            }
            KBD_CMD_GETID => self.keyboard_reply(&[KBD_ACK, KBD_ID[0], KBD_ID[1]]),
            KBD_ECHO => self.keyboard_reply(&[KBD_ECHO]),
            KBD_CMD_SETLEDS | KBD_CMD_SETREP | KBD_CMD_SCANSET => {
                self.pending = Pending::Keyboard(value);
                self.keyboard_reply(&[KBD_ACK]);
            }
            _ => self.keyboard_reply(&[KBD_ACK]),
        }
    }

    fn keyboard_param(&mut self, cmd: u8, value: u8) {
        if cmd == KBD_CMD_SCANSET {
            if value == 0 {
                let set = self.scan_set;
                self.keyboard_reply(&[KBD_ACK, set]);
                return;
            }
            self.scan_set = value;
        }
        self.keyboard_reply(&[KBD_ACK]);
    }

    fn data(&mut self, value: u8) {
        self.status &= !STR_CMDDAT;
        match std::mem::replace(&mut self.pending, Pending::None) {
            Pending::Controller(cmd) => self.controller_data(cmd, value),
            Pending::Keyboard(cmd) => self.keyboard_param(cmd, value),
            Pending::None => self.keyboard_command(value),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset {
            OFS_DATA => {
                let v = self.out.pop_front().unwrap_or(0);
                // More waiting: interrupt again, as the driver reads one byte
                // per interrupt.
                self.raise_irq();
                v
            }
            OFS_COMMAND => self.status(),
            _ => 0xff,
        };
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            OFS_DATA => self.data(value),
            OFS_COMMAND => self.command(value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EventFd;

    struct Rig {
        dev: I8042,
        reset: EventFd,
        irq: EventFd,
    }

    fn rig() -> Rig {
        let reset = EventFdTrigger::new().unwrap();
        let irq = EventFdTrigger::new().unwrap();
        let (r, i) = (reset.0.try_clone().unwrap(), irq.0.try_clone().unwrap());
        Rig {
            dev: I8042::new(reset, irq),
            reset: r,
            irq: i,
        }
    }

    impl Rig {
        fn status(&mut self) -> u8 {
            let mut d = [0u8];
            self.dev.read(OFS_COMMAND, &mut d);
            d[0]
        }
        fn data(&mut self) -> u8 {
            let mut d = [0u8];
            self.dev.read(OFS_DATA, &mut d);
            d[0]
        }
        fn cmd(&mut self, c: u8) {
            self.dev.write(OFS_COMMAND, &[c]);
        }
        fn put(&mut self, v: u8) {
            self.dev.write(OFS_DATA, &[v]);
        }
        /// Linux's __i8042_command: the input buffer must read empty before
        /// each write, and a reply must be waiting when one is expected.
        fn command(&mut self, cmd: u8, params: &[u8], replies: usize) -> Vec<u8> {
            assert_eq!(self.status() & 0x02, 0, "IBF must be clear");
            self.cmd(cmd);
            for p in params {
                assert_eq!(self.status() & 0x02, 0);
                self.put(*p);
            }
            (0..replies)
                .map(|_| {
                    assert_ne!(
                        self.status() & STR_OBF,
                        0,
                        "reply to {cmd:#x} must be waiting"
                    );
                    self.data()
                })
                .collect()
        }
    }

    #[test]
    fn linux_controller_probe_gets_immediate_answers() {
        let mut r = rig();
        // i8042_flush: nothing waiting.
        assert_eq!(r.status() & STR_OBF, 0);
        assert_eq!(r.command(CMD_SELF_TEST, &[], 1), vec![SELF_TEST_OK]);
        let ctr = r.command(CMD_READ_CTR, &[], 1)[0];
        assert_ne!(ctr & CTR_SYS, 0);
        r.command(CMD_WRITE_CTR, &[ctr & !CTR_KBDINT], 0);
        assert_eq!(r.command(CMD_READ_CTR, &[], 1), vec![ctr & !CTR_KBDINT]);
        assert_eq!(r.command(CMD_KBD_TEST, &[], 1), vec![PORT_TEST_OK]);
    }

    #[test]
    fn linux_sees_no_aux_port() {
        let mut r = rig();
        // i8042_check_aux: the loop byte returns without STR_AUXDATA ...
        r.cmd(CMD_AUX_LOOP);
        r.put(0x5a);
        let st = r.status();
        assert_ne!(st & STR_OBF, 0);
        assert_eq!(st & 0x20, 0, "no AUXDATA flag");
        // ... and the AUX interface test reports an error, not 0/0xfa/0xff.
        let t = r.command(CMD_AUX_TEST, &[], 1)[0];
        assert!(t != 0 && t != 0xfa && t != 0xff);
    }

    #[test]
    fn keyboard_answers_atkbd_probe_with_interrupts() {
        let mut r = rig();
        r.put(KBD_CMD_GETID);
        assert!(r.irq.read().unwrap() >= 1);
        assert_eq!([r.data(), r.data(), r.data()], [KBD_ACK, 0xab, 0x83]);
        assert_eq!(r.status() & STR_OBF, 0);
        r.put(KBD_CMD_SETLEDS);
        assert_eq!(r.data(), KBD_ACK);
        r.put(0x07);
        assert_eq!(r.data(), KBD_ACK);
        r.put(KBD_CMD_SCANSET);
        r.put(0);
        assert_eq!([r.data(), r.data(), r.data()], [KBD_ACK, KBD_ACK, 2]);
        r.put(KBD_CMD_RESET);
        assert_eq!([r.data(), r.data()], [KBD_ACK, KBD_BAT_OK]);
        r.put(0xf4); // enable
        assert_eq!(r.data(), KBD_ACK);
    }

    #[test]
    fn no_interrupt_when_the_guest_disabled_it() {
        let mut r = rig();
        r.command(CMD_WRITE_CTR, &[CTR_SYS], 0);
        r.put(KBD_ECHO);
        assert!(r.irq.read().is_err(), "IRQ 1 must stay quiet");
        assert_eq!(r.data(), KBD_ECHO);
    }

    #[test]
    fn output_port_and_loopback() {
        let mut r = rig();
        r.command(CMD_WRITE_OUTP, &[0xdf], 0);
        assert_eq!(r.command(CMD_READ_OUTP, &[], 1), vec![0xdf]);
        assert_eq!(r.command(CMD_KBD_LOOP, &[0x42], 1), vec![0x42]);
    }

    #[test]
    fn reset_command_signals_reset_and_nothing_else_does() {
        let mut r = rig();
        for c in [CMD_READ_CTR, CMD_SELF_TEST, 0xff, 0xf1, 0x00, 0x99] {
            r.cmd(c);
        }
        r.put(0xfe);
        assert!(r.reset.read().is_err(), "no reset yet");
        r.cmd(CMD_RESET_CPU);
        assert_eq!(r.reset.read().unwrap(), 1);
    }

    #[test]
    fn the_buffer_is_bounded() {
        let mut r = rig();
        for _ in 0..100 {
            r.put(KBD_CMD_GETID);
        }
        assert_eq!(r.dev.out.len(), BUFFER_SIZE);
        let mut d = [0u8; 4];
        r.dev.read(OFS_DATA, &mut d);
        assert_eq!(d[1..], [0, 0, 0]);
        r.dev.read(2, &mut d[..1]);
        assert_eq!(d[0], 0xff);
    }

    #[test]
    fn ctrl_alt_del_queues_its_scan_codes_and_interrupts() {
        let mut r = rig();
        assert!(r.dev.ctrl_alt_del());
        assert_eq!(r.irq.read().unwrap(), 1);
        let mut got = Vec::new();
        while r.status() & STR_OBF != 0 {
            got.push(r.data());
        }
        assert_eq!(got, CTRL_ALT_DEL);
        // With the keyboard interrupt masked, the codes wait unannounced.
        r.cmd(CMD_WRITE_CTR);
        r.put(CTR_SYS | CTR_XLATE);
        let _ = r.irq.read();
        assert!(r.dev.ctrl_alt_del());
        assert!(r.irq.read().is_err());
        // A buffer without room for all of them takes none.
        assert!(r.dev.ctrl_alt_del());
        assert_eq!(r.dev.out.len(), BUFFER_SIZE);
        assert!(!r.dev.ctrl_alt_del());
        assert_eq!(r.dev.out.len(), BUFFER_SIZE);
    }

    #[test]
    fn a_restored_controller_answers_as_the_saved_one() {
        let mut a = rig();
        // Scan set 1, a command waiting for its parameter, keys waiting.
        a.put(KBD_CMD_SCANSET);
        a.put(1);
        while a.status() & STR_OBF != 0 {
            a.data();
        }
        a.cmd(CMD_WRITE_CTR);
        assert!(a.dev.ctrl_alt_del());
        let snap = a.dev.save();
        assert_eq!(snap.pending, Pending::Controller(CMD_WRITE_CTR));

        let mut b = rig();
        b.dev.restore(&snap).unwrap();
        assert_eq!(b.dev.save(), snap);
        // IRQ 1 is raised again for the waiting keys.
        assert_eq!(b.irq.read().unwrap(), 1);
        let keys: Vec<u8> = (0..CTRL_ALT_DEL.len()).map(|_| b.data()).collect();
        assert_eq!(keys, CTRL_ALT_DEL);
        // The parameter goes where the saved controller expected it.
        b.put(0x47);
        assert_eq!(b.dev.save().ctr, 0x47);
        let mut too_many = snap.clone();
        too_many.out = vec![0; BUFFER_SIZE + 1];
        assert!(b.dev.restore(&too_many).unwrap_err().contains("buffer"));
    }
}
