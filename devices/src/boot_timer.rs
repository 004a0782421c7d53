//! Boot timing: the phases of a VM's start, each stamped once relative to
//! the VMM process's start, and the boot-timer device through which the
//! guest's init says it is running.
//!
//! The guest writes the byte `MAGIC` (123, the value Firecracker's boot
//! timer takes) to its I/O port (`arch::layout::BOOT_TIMER_PORT`, 0x440), or to the first byte of the
//! MMIO page at `arch::layout::BOOT_TIMER_START`; the VMM stamps
//! `Phase::InitReached`. The default init does so first thing, when the VMM
//! tells it where (the `VMM_BOOT_TIMER=0x440` command-line parameter, which
//! the kernel hands to init as an environment variable), so that the same
//! init run in a container never touches a host port.
//!
//! On an emulated KVM, where guest user space cannot run, the marker is the
//! kernel's "Run /init as init process" console line instead
//! (`Phase::KernelRunsInit`), which `WatchedOutput` stamps on every host.

use std::io::{self, Write};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::bus::BusDevice;

/// The value that marks "init reached".
pub const MAGIC: u8 = 123;
/// The kernel parameter the VMM adds so that init knows the port.
pub const CMDLINE_PARAM: &str = "VMM_BOOT_TIMER";

/// A phase of a VM's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Memory, kernel, devices and vCPUs are set up.
    VmBuilt,
    /// The boot vCPU entered the guest for the first time.
    FirstRun,
    /// The guest wrote its first byte to the serial console.
    FirstOutput,
    /// The kernel printed "Run ... as init process".
    KernelRunsInit,
    /// The guest's init wrote the boot timer.
    InitReached,
}

impl Phase {
    /// Every phase, in boot order.
    pub const ALL: [Phase; 5] = [
        Phase::VmBuilt,
        Phase::FirstRun,
        Phase::FirstOutput,
        Phase::KernelRunsInit,
        Phase::InitReached,
    ];

    /// The phase's name in the log ("phase NAME at MS ms").
    pub fn name(self) -> &'static str {
        match self {
            Phase::VmBuilt => "vm_built",
            Phase::FirstRun => "first_kvm_run",
            Phase::FirstOutput => "first_console_output",
            Phase::KernelRunsInit => "kernel_runs_init",
            Phase::InitReached => "init_reached",
        }
    }
}

/// When each phase happened; shared by the threads that see them.
#[derive(Debug)]
pub struct Timeline {
    started: Instant,
    stamps: [OnceLock<Instant>; 5],
    /// The VMM's own steps before the phases (the VM's build broken
    /// down): (name, time since the start), in order.
    steps: std::sync::Mutex<Vec<(&'static str, Duration)>>,
}

impl Timeline {
    /// A timeline whose times count from `started` (the process's start).
    pub fn new(started: Instant) -> Self {
        Timeline {
            started,
            stamps: Default::default(),
            steps: Default::default(),
        }
    }

    /// Records that the VMM's step `name` ended now (logged at debug as
    /// "timing: NAME at MS ms").
    pub fn step(&self, name: &'static str) {
        let at = self.started.elapsed();
        log::debug!("timing: {name} at {:.3} ms", at.as_secs_f64() * 1e3);
        if let Ok(mut steps) = self.steps.lock() {
            steps.push((name, at));
        }
    }

    /// The steps recorded, in order.
    pub fn steps(&self) -> Vec<(&'static str, Duration)> {
        self.steps.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The instant the times count from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stamps `phase` now unless it has its stamp already, and logs it the
    /// first time as "phase NAME at MS ms". Returns whether it was the
    /// first time.
    pub fn mark(&self, phase: Phase) -> bool {
        let mut first = false;
        let at = *self.stamps[phase as usize].get_or_init(|| {
            first = true;
            Instant::now()
        });
        if first {
            log::info!(
                "phase {} at {:.3} ms",
                phase.name(),
                (at - self.started).as_secs_f64() * 1e3
            );
        }
        first
    }

    /// How long after the start `phase` happened, if it did.
    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.stamps[phase as usize]
            .get()
            .map(|at| *at - self.started)
    }
}

/// The boot-timer device, at `PORT` on the PIO bus and at one MMIO page.
pub struct BootTimer {
    timeline: Arc<Timeline>,
}

impl BootTimer {
    /// A boot timer stamping `timeline`.
    pub fn new(timeline: Arc<Timeline>) -> Self {
        BootTimer { timeline }
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&MAGIC) {
            self.timeline.mark(Phase::InitReached);
        } else {
            log::debug!("boot timer: write of {data:x?} at offset {offset:#x} ignored");
        }
    }
}

/// Longest console line kept for the init-line check; longer lines are cut
/// (the kernel's line is short).
const MAX_LINE: usize = 256;

/// The serial console's output, stamping the guest's first byte and the
/// kernel's "Run ... as init process" line on their way through.
pub struct WatchedOutput {
    inner: Box<dyn Write + Send>,
    timeline: Arc<Timeline>,
    line: Vec<u8>,
}

impl WatchedOutput {
    /// Watches what goes to `inner`.
    pub fn new(inner: Box<dyn Write + Send>, timeline: Arc<Timeline>) -> Self {
        WatchedOutput {
            inner,
            timeline,
            line: Vec::with_capacity(MAX_LINE),
        }
    }

    fn scan(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == b'\n' {
                self.line.clear();
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
                // Stamped at the line's last letter, not at its newline: a
                // reader may stop the VM as soon as it sees the text, and an
                // interpreted guest takes a while for the next byte.
                if b == b's' && is_init_line(&self.line) {
                    self.timeline.mark(Phase::KernelRunsInit);
                }
            }
        }
    }
}

/// Whether a console line is the kernel's "Run /init as init process" (or
/// another init path), after its printk timestamp.
pub fn is_init_line(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end_matches('\r');
    text.split_once("Run /")
        .is_some_and(|(_, rest)| rest.ends_with(" as init process"))
}

impl Write for WatchedOutput {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        if n > 0 {
            self.timeline.mark(Phase::FirstOutput);
            self.scan(&buf[..n]);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_stamped_once_in_order() {
        let t = Timeline::new(Instant::now());
        assert_eq!(t.get(Phase::VmBuilt), None);
        assert!(t.mark(Phase::VmBuilt));
        let first = t.get(Phase::VmBuilt).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        assert!(!t.mark(Phase::VmBuilt), "a second mark is ignored");
        assert_eq!(t.get(Phase::VmBuilt), Some(first));
        assert!(t.mark(Phase::FirstRun));
        assert!(t.get(Phase::FirstRun).unwrap() > first);
        assert_eq!(t.get(Phase::InitReached), None);
    }

    #[test]
    fn only_the_magic_value_at_offset_0_marks_init() {
        let t = Arc::new(Timeline::new(Instant::now()));
        let mut dev = BootTimer::new(t.clone());
        dev.write(0, &[MAGIC - 1]);
        dev.write(1, &[MAGIC]);
        dev.write(0, &[]);
        assert_eq!(t.get(Phase::InitReached), None);
        let mut buf = [0xffu8; 4];
        dev.read(0, &mut buf);
        assert_eq!(buf, [0; 4]);
        dev.write(0, &[MAGIC, 0, 0, 0]);
        assert!(t.get(Phase::InitReached).is_some());
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_console_stamps_its_first_byte_and_the_init_line() {
        let t = Arc::new(Timeline::new(Instant::now()));
        let sink = Shared::default();
        let mut out = WatchedOutput::new(Box::new(sink.clone()), t.clone());
        assert_eq!(t.get(Phase::FirstOutput), None);
        out.write_all(b"[    0.000000] Linux version 6.12\r\n")
            .unwrap();
        assert!(t.get(Phase::FirstOutput).is_some());
        assert_eq!(t.get(Phase::KernelRunsInit), None);
        // The line arrives a byte at a time, as from the UART; it counts as
        // soon as its text is complete, before its line end.
        for b in b"[   74.120000] Run /init as init proces" {
            out.write_all(&[*b]).unwrap();
        }
        assert_eq!(t.get(Phase::KernelRunsInit), None);
        out.write_all(b"s").unwrap();
        assert!(t.get(Phase::KernelRunsInit).is_some());
        out.write_all(b"\r\n").unwrap();
        assert!(sink.0.lock().unwrap().ends_with(b"init process\r\n"));
        // A very long line does not grow the buffer.
        out.write_all(&vec![b'x'; 10_000]).unwrap();
        assert!(out.line.len() <= MAX_LINE);
    }

    #[test]
    fn init_lines() {
        assert!(is_init_line(b"[    1.0] Run /init as init process"));
        assert!(is_init_line(b"Run /sbin/init as init process\r"));
        assert!(is_init_line(b"[ 9.9] Run /idle as init process"));
        assert!(!is_init_line(b"Run /init as init process failed"));
        assert!(!is_init_line(
            b"Starting init: /init exists but couldn't execute it"
        ));
    }
}
