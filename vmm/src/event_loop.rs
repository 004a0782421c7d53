//! The main thread's event loop (event-manager): host stdin to the serial
//! port, the i8042 reset, and the vCPUs' end-of-VM signal.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use devices::serial::{SerialDevice, MAX_PENDING_INPUT};
use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::{VmEnd, VmExitState};

/// Ends the VM on an i8042 reset; wakes the loop when a vCPU ended it.
pub struct ExitHandler {
    /// Shared end-of-VM state.
    pub exit: Arc<VmExitState>,
    /// The i8042's reset eventfd.
    pub reset_evt: EventFd,
}

impl MutEventSubscriber for ExitHandler {
    fn init(&mut self, ops: &mut EventOps) {
        for fd in [self.exit.evt.as_raw_fd(), self.reset_evt.as_raw_fd()] {
            if let Err(e) = ops.add(Events::new_raw(fd, EventSet::IN)) {
                log::error!("event loop: cannot watch exit event: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.fd() == self.reset_evt.as_raw_fd() {
            let _ = self.reset_evt.read();
            self.exit
                .finish(VmEnd::Reset("i8042 CPU reset, as reboot=k does"));
        } else {
            // Only wakes the loop; the end is read from the shared state.
            let _ = self.exit.evt.read();
        }
    }
}

/// Runs a virtio device's queues when KVM signals a notification.
pub struct VirtioHandler {
    /// The device's slot.
    pub slot: crate::device_manager::VirtioSlot,
    /// The device's host file descriptors, as watched.
    pub host_fds: Vec<std::os::fd::RawFd>,
}

impl MutEventSubscriber for VirtioHandler {
    fn init(&mut self, ops: &mut EventOps) {
        for evt in &self.slot.queue_evts {
            if let Err(e) = ops.add(Events::new(evt, EventSet::IN)) {
                log::error!("event loop: cannot watch a virtio queue: {e:?}");
            }
        }
        // The device's host fds (a TAP, virtio-net's TX completion timer):
        // edge-triggered, the device drains each or keeps what it cannot
        // place until the guest gives buffers.
        self.host_fds = devices::bus::lock(&self.slot.transport).host_fds();
        for &fd in &self.host_fds {
            let ev = Events::new_raw(fd, EventSet::IN | EventSet::EDGE_TRIGGERED);
            if let Err(e) = ops.add(ev) {
                log::error!("event loop: cannot watch a device's host end: {e:?}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        let fd = events.fd();
        if let Some(i) = self.host_fds.iter().position(|&h| h == fd) {
            devices::bus::lock(&self.slot.transport).host_event(i);
            return;
        }
        if let Some(i) = self
            .slot
            .queue_evts
            .iter()
            .position(|e| e.as_raw_fd() == fd)
        {
            let _ = self.slot.queue_evts[i].read();
            devices::bus::lock(&self.slot.transport).notify(i);
        }
    }
}

/// Feeds the host's stdin to the serial port, with backpressure: stdin is
/// not read while the serial input buffer is full.
pub struct StdinHandler<R: Read + AsRawFd> {
    input: R,
    serial: Arc<Mutex<SerialDevice>>,
    input_ready: EventFd,
    watching_input: bool,
    eof: bool,
}

impl<R: Read + AsRawFd> StdinHandler<R> {
    /// A handler reading `input` into `serial`.
    pub fn new(input: R, serial: Arc<Mutex<SerialDevice>>, input_ready: EventFd) -> Self {
        StdinHandler {
            input,
            serial,
            input_ready,
            watching_input: false,
            eof: false,
        }
    }

    fn watch_input(&mut self, ops: &mut EventOps, on: bool) {
        if on == self.watching_input || self.eof {
            return;
        }
        let ev = Events::new_raw(self.input.as_raw_fd(), EventSet::IN);
        let res = if on { ops.add(ev) } else { ops.remove(ev) };
        match res {
            Ok(()) => self.watching_input = on,
            // A regular file or /dev/null cannot be polled: no input then.
            Err(e) => {
                log::debug!("serial input: not watching stdin: {e:?}");
                self.eof = true;
            }
        }
    }

    fn room(&self) -> usize {
        MAX_PENDING_INPUT.saturating_sub(devices::bus::lock(&self.serial).pending_input())
    }
}

impl<R: Read + AsRawFd> MutEventSubscriber for StdinHandler<R> {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.input_ready, EventSet::IN)) {
            log::error!("event loop: cannot watch serial input room: {e:?}");
        }
        self.watch_input(ops, true);
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        if events.fd() == self.input_ready.as_raw_fd() {
            let _ = self.input_ready.read();
            devices::bus::lock(&self.serial).flush_input();
            if self.room() > 0 {
                self.watch_input(ops, true);
            }
            return;
        }
        let mut buf = [0u8; 256];
        let want = self.room().min(buf.len());
        if want == 0 {
            self.watch_input(ops, false);
            return;
        }
        match self.input.read(&mut buf[..want]) {
            Ok(0) => {
                self.watch_input(ops, false);
                self.eof = true;
            }
            Ok(n) => {
                devices::bus::lock(&self.serial).queue_input(&buf[..n]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                log::warn!("serial input: reading stdin failed, input stops: {e}");
                self.watch_input(ops, false);
                self.eof = true;
            }
        }
        if events.event_set().contains(EventSet::HANG_UP) && self.watching_input {
            self.watch_input(ops, false);
            self.eof = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::serial::EventFdTrigger;
    use devices::BusDevice;
    use event_manager::{EventManager, SubscriberOps};
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn stdin_bytes_reach_the_guest_and_eof_is_handled() {
        let (mut host, guest_side) = UnixStream::pair().unwrap();
        let irq = EventFdTrigger::new().unwrap();
        let ready = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let serial = Arc::new(Mutex::new(SerialDevice::new(
            irq,
            ready.try_clone().unwrap(),
            Box::new(std::io::sink()),
        )));
        let handler = StdinHandler::new(guest_side, serial.clone(), ready);
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
        let h = Arc::new(Mutex::new(handler));
        em.add_subscriber(h.clone());

        host.write_all(b"hi").unwrap();
        em.run_with_timeout(1000).unwrap();
        let mut d = [0u8; 1];
        let mut s = serial.lock().unwrap();
        s.read(0, &mut d);
        assert_eq!(d[0], b'h');
        s.read(0, &mut d);
        assert_eq!(d[0], b'i');
        drop(s);

        drop(host);
        em.run_with_timeout(1000).unwrap();
        assert!(h.lock().unwrap().eof);
    }

    #[test]
    fn reset_event_ends_the_vm() {
        let exit = Arc::new(
            VmExitState::new(
                Arc::new(devices::boot_timer::Timeline::new(std::time::Instant::now())),
                Arc::new(crate::control::Control::new(1).unwrap()),
            )
            .unwrap(),
        );
        let reset = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let trigger = reset.try_clone().unwrap();
        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
        em.add_subscriber(Arc::new(Mutex::new(ExitHandler {
            exit: exit.clone(),
            reset_evt: reset,
        })));
        assert_eq!(exit.end(), None);
        trigger.write(1).unwrap();
        em.run_with_timeout(1000).unwrap();
        assert!(matches!(exit.end(), Some(VmEnd::Reset(_))));
    }
}
