//! The 8250 UART (vm-superio's model) on the PIO bus. Output goes to any
//! writer (stdout, a file, nowhere); input is queued from the host side with
//! backpressure: bytes that do not fit the UART FIFO wait in a bounded
//! buffer until the guest drains it.

use std::collections::VecDeque;
use std::io::{self, Write};

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use crate::bus::BusDevice;

/// The serial port's interrupt line: an eventfd that the VMM registers as
/// an irqfd, so a trigger injects the IRQ without the VMM's help.
pub struct EventFdTrigger(pub EventFd);

impl Trigger for EventFdTrigger {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}

impl EventFdTrigger {
    /// A new, non-blocking trigger.
    pub fn new() -> io::Result<Self> {
        Ok(EventFdTrigger(EventFd::new(
            libc::EFD_NONBLOCK | libc::EFD_CLOEXEC,
        )?))
    }
}

/// Signals the event loop when the guest emptied the receive FIFO, so that
/// pending input can be delivered.
pub struct InputReady(pub EventFd);

impl SerialEvents for InputReady {
    fn buffer_read(&self) {}
    fn out_byte(&self) {}
    fn tx_lost_byte(&self) {}
    fn in_buffer_empty(&self) {
        if let Err(e) = self.0.write(1) {
            log::warn!("serial: cannot signal input room: {e}");
        }
    }
}

/// The UART's receive FIFO (vm-superio's).
pub const FIFO_SIZE: usize = 64;

/// Most host input held back while the guest does not read it.
pub const MAX_PENDING_INPUT: usize = 64 * 1024;

/// What a snapshot keeps of the serial port: the UART's registers, its
/// receive FIFO, and the host input not yet in the FIFO.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    /// DLL, DLM, IER, IIR, LCR, LSR, MCR, MSR, SCR, in that order.
    pub registers: [u8; 9],
    /// The receive FIFO, oldest first.
    pub fifo: Vec<u8>,
    /// Host input waiting for room in the FIFO.
    pub pending: Vec<u8>,
}

/// The first serial port (COM1).
pub struct SerialDevice {
    uart: Serial<EventFdTrigger, InputReady, Box<dyn Write + Send>>,
    pending: VecDeque<u8>,
    write_failed: bool,
}

impl SerialDevice {
    /// A UART raising `irq` and writing the guest's output to `out`.
    /// `input_ready` is signalled when the receive FIFO has room again.
    pub fn new(irq: EventFdTrigger, input_ready: EventFd, out: Box<dyn Write + Send>) -> Self {
        SerialDevice {
            uart: Serial::with_events(irq, InputReady(input_ready), out),
            pending: VecDeque::new(),
            write_failed: false,
        }
    }

    /// Queues host input for the guest. Returns how many bytes were taken;
    /// fewer than `input.len()` only when the pending buffer is full.
    pub fn queue_input(&mut self, input: &[u8]) -> usize {
        let room = MAX_PENDING_INPUT.saturating_sub(self.pending.len());
        let taken = input.len().min(room);
        self.pending.extend(&input[..taken]);
        self.flush_input();
        taken
    }

    /// Moves pending input into the UART FIFO as far as it has room.
    pub fn flush_input(&mut self) {
        while !self.pending.is_empty() && self.uart.fifo_capacity() > 0 {
            let n = self.pending.len().min(self.uart.fifo_capacity());
            let chunk: Vec<u8> = self.pending.drain(..n).collect();
            match self.uart.enqueue_raw_bytes(&chunk) {
                Ok(done) if done == chunk.len() => {}
                Ok(done) => {
                    for b in chunk[done..].iter().rev() {
                        self.pending.push_front(*b);
                    }
                    break;
                }
                Err(e) => {
                    log::warn!("serial: cannot deliver input: {e:?}");
                    break;
                }
            }
        }
    }

    /// Bytes of host input not yet in the UART FIFO.
    pub fn pending_input(&self) -> usize {
        self.pending.len()
    }

    /// The port's state, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            registers: [
                s.baud_divisor_low,
                s.baud_divisor_high,
                s.interrupt_enable,
                s.interrupt_identification,
                s.line_control,
                s.line_status,
                s.modem_control,
                s.modem_status,
                s.scratch,
            ],
            fifo: s.in_buffer,
            pending: self.pending.iter().copied().collect(),
        }
    }

    /// Puts `snap` in place of the port's state; its interrupt is raised
    /// again if the state has one pending. Refused (nothing changed) when
    /// the FIFO or the pending input is larger than the port holds.
    pub fn restore(&mut self, snap: &SerialSnapshot) -> Result<(), String> {
        if snap.pending.len() > MAX_PENDING_INPUT {
            return Err(format!(
                "serial: {} bytes of pending input, more than {MAX_PENDING_INPUT}",
                snap.pending.len()
            ));
        }
        if snap.fifo.len() > FIFO_SIZE {
            return Err(format!(
                "serial: {} bytes in the FIFO, more than its {FIFO_SIZE}",
                snap.fifo.len()
            ));
        }
        let [dll, dlm, ier, iir, lcr, lsr, mcr, msr, scr] = snap.registers;
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: dll,
            baud_divisor_high: dlm,
            interrupt_enable: ier,
            interrupt_identification: iir,
            line_control: lcr,
            line_status: lsr,
            modem_control: mcr,
            modem_status: msr,
            scratch: scr,
            in_buffer: snap.fifo.clone(),
        };
        let clone = |e: &EventFd| e.try_clone().map_err(|e| format!("serial: {e}"));
        let irq = EventFdTrigger(clone(&self.uart.interrupt_evt().0)?);
        let ready = InputReady(clone(&self.uart.events().0)?);
        // The UART is rebuilt around the same interrupt, input-ready
        // eventfd and output.
        let spare = Serial::with_events(
            EventFdTrigger(clone(&irq.0)?),
            InputReady(clone(&ready.0)?),
            Box::new(io::sink()) as Box<dyn Write + Send>,
        );
        let old = std::mem::replace(&mut self.uart, spare);
        let out = old.into_writer();
        match Serial::from_state(&state, irq, ready, out) {
            Ok(uart) => {
                self.uart = uart;
                self.pending = snap.pending.iter().copied().collect();
                Ok(())
            }
            Err(e) => Err(format!("serial: {e:?}")),
        }
    }
}

impl BusDevice for SerialDevice {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let (Some(first), Ok(off)) = (data.first_mut(), u8::try_from(offset)) {
            *first = self.uart.read(off);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Some(&value), Ok(off)) = (data.first(), u8::try_from(offset)) else {
            return;
        };
        if let Err(e) = self.uart.write(off, value) {
            // A closed or failing output must not stop the guest; say so once.
            if !self.write_failed {
                log::warn!("serial: output failed, further errors not shown: {e:?}");
                self.write_failed = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    const THR: u64 = 0;
    const IER: u64 = 1;
    const LSR: u64 = 5;
    const LSR_DATA_READY: u8 = 1;

    fn device(out: Box<dyn Write + Send>) -> (SerialDevice, EventFd, EventFd) {
        let irq = EventFdTrigger::new().unwrap();
        let irq_probe = irq.0.try_clone().unwrap();
        let ready = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).unwrap();
        let ready_probe = ready.try_clone().unwrap();
        (SerialDevice::new(irq, ready, out), irq_probe, ready_probe)
    }

    #[test]
    fn guest_output_reaches_the_writer() {
        let buf = SharedBuf::default();
        let (mut dev, _, _) = device(Box::new(buf.clone()));
        for b in b"hello\n" {
            dev.write(THR, &[*b]);
        }
        assert_eq!(&*buf.0.lock().unwrap(), b"hello\n");
    }

    #[test]
    fn input_is_readable_by_the_guest_and_raises_the_irq() {
        let (mut dev, irq, _) = device(Box::new(io::sink()));
        dev.write(IER, &[0x01]); // enable "received data available"
        assert_eq!(dev.queue_input(b"ab"), 2);
        assert_eq!(irq.read().unwrap(), 1);
        let mut d = [0u8; 1];
        dev.read(LSR, &mut d);
        assert_eq!(d[0] & LSR_DATA_READY, LSR_DATA_READY);
        dev.read(THR, &mut d);
        assert_eq!(d[0], b'a');
        dev.read(THR, &mut d);
        assert_eq!(d[0], b'b');
        dev.read(LSR, &mut d);
        assert_eq!(d[0] & LSR_DATA_READY, 0);
    }

    #[test]
    fn input_beyond_the_fifo_waits_and_is_bounded() {
        let (mut dev, _, ready) = device(Box::new(io::sink()));
        let big = vec![b'x'; MAX_PENDING_INPUT + 1000];
        let taken = dev.queue_input(&big);
        // The FIFO took its share, the rest waits, the excess is refused.
        assert!(taken < big.len());
        assert_eq!(dev.pending_input() + 64, taken);
        // The guest drains the FIFO: the device signals room, input moves on.
        let mut d = [0u8; 1];
        for _ in 0..64 {
            dev.read(THR, &mut d);
        }
        assert_eq!(ready.read().unwrap(), 1);
        let before = dev.pending_input();
        dev.flush_input();
        assert_eq!(dev.pending_input(), before - 64);
    }

    #[test]
    fn failing_output_does_not_stop_the_device() {
        let (mut dev, _, _) = device(Box::new(Failing));
        dev.write(THR, b"a");
        dev.write(THR, b"b");
        assert!(dev.write_failed);
        let mut d = [0u8; 1];
        dev.read(LSR, &mut d);
        assert_ne!(d[0], 0, "the UART still answers");
    }

    #[test]
    fn a_restored_port_has_the_registers_fifo_input_and_interrupt_it_had() {
        let (mut dev, _, _) = device(Box::new(io::sink()));
        dev.write(3, &[0x83]); // LCR: DLAB, 8 bits
        dev.write(0, &[0x0c]); // DLL
        dev.write(3, &[0x03]);
        dev.write(IER, &[0x01]);
        dev.write(7, &[0x5a]); // scratch
        let input: Vec<u8> = (0..100u8).collect();
        dev.queue_input(&input);
        let snap = dev.save();
        assert_eq!(snap.fifo.len(), FIFO_SIZE);
        assert_eq!(snap.pending.len(), 100 - FIFO_SIZE);

        let buf = SharedBuf::default();
        let (mut other, irq, _) = device(Box::new(buf.clone()));
        other.restore(&snap).unwrap();
        assert_eq!(other.save(), snap);
        // The received-data interrupt is pending again.
        assert_eq!(irq.read().unwrap(), 1);
        let mut d = [0u8; 1];
        other.read(7, &mut d);
        assert_eq!(d[0], 0x5a);
        let mut got = Vec::new();
        for _ in 0..100 {
            other.read(THR, &mut d);
            got.push(d[0]);
            other.flush_input();
        }
        assert_eq!(got, input);
        // The output is the restored port's own.
        other.write(THR, b"z");
        assert_eq!(&*buf.0.lock().unwrap(), b"z");
    }

    #[test]
    fn a_snapshot_larger_than_the_port_is_refused() {
        let (mut dev, _, _) = device(Box::new(io::sink()));
        let mut snap = dev.save();
        snap.fifo = vec![0; FIFO_SIZE + 1];
        assert!(dev.restore(&snap).unwrap_err().contains("FIFO"));
        snap.fifo.clear();
        snap.pending = vec![0; MAX_PENDING_INPUT + 1];
        assert!(dev.restore(&snap).unwrap_err().contains("pending"));
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let (mut dev, _, _) = device(Box::new(io::sink()));
        dev.write(THR, &[]);
        dev.write(1 << 20, &[1]);
        let mut d = [0xaa; 4];
        dev.read(1 << 20, &mut d);
        assert_eq!(d, [0; 4]);
    }
}
