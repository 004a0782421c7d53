//! Pausing, resuming and stopping a running VM's threads.
//!
//! Every thread that may touch guest memory (each vCPU and the device event
//! loop) is a participant: it calls `Control::checkpoint` between pieces of
//! work, and parks there on a condition variable while a pause is asked
//! for. `pause` returns once every participant is parked. A vCPU inside
//! `KVM_RUN` is kicked out with a real-time signal whose handler sets its
//! `kvm_run.immediate_exit`, so a signal that lands just before `KVM_RUN`
//! still makes it return at once (as Firecracker and Cloud Hypervisor do);
//! the event loop is woken through an eventfd it watches. Nothing polls.

use devices::bus::lock;
use std::cell::Cell;
use std::sync::{Condvar, Mutex};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

/// What the participants are asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Run.
    Run,
    /// Park until asked to run again.
    Pause,
    /// Leave: the VM is ending.
    Stop,
}

/// What a participant does after a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Go on working.
    Go,
    /// Leave: the VM is ending.
    Leave,
}

/// Work for a parked vCPU, run on its own thread with its vCPU.
pub type VcpuWork = Box<dyn FnOnce(&mut kvm_ioctls::VcpuFd) + Send>;

struct State {
    /// Per vCPU: work to run while parked.
    work: Vec<Option<VcpuWork>>,
    /// Work handed out and not done yet.
    pending: usize,
    request: Request,
    /// Participants parked now.
    parked: usize,
    /// Participants that left.
    left: usize,
    /// The vCPU threads to kick; emptied once they are joined.
    vcpu_threads: Vec<libc::pthread_t>,
}

/// The shared pause/stop state of one VM.
pub struct Control {
    state: Mutex<State>,
    changed: Condvar,
    participants: usize,
    /// Wakes the event loop so that it reaches its checkpoint.
    pub wake_loop: EventFd,
}

/// Why a pause or resume did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The VM ended (or is ending).
    #[error("the VM has ended")]
    Ended,
    /// The VM is not paused.
    #[error("the VM is not paused")]
    NotPaused,
}

impl Control {
    /// The control of a VM whose `participants` threads take part.
    pub fn new(participants: usize) -> std::io::Result<Control> {
        install_kick_handler()?;
        Ok(Control {
            state: Mutex::new(State {
                work: Vec::new(),
                pending: 0,
                request: Request::Run,
                parked: 0,
                left: 0,
                vcpu_threads: Vec::new(),
            }),
            changed: Condvar::new(),
            participants,
            wake_loop: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)?,
        })
    }

    /// Registers the vCPU threads that `pause` and `stop` kick.
    pub fn set_vcpu_threads(&self, threads: Vec<libc::pthread_t>) {
        lock(&self.state).vcpu_threads = threads;
    }

    /// Forgets the vCPU threads (they are about to be joined): no kick may
    /// reach a thread that is gone.
    pub fn forget_vcpu_threads(&self) {
        lock(&self.state).vcpu_threads.clear();
    }

    /// What is asked now.
    pub fn request(&self) -> Request {
        lock(&self.state).request
    }

    /// Called by a participant between pieces of work: parks while a pause
    /// is asked for. Returns whether to go on or leave.
    pub fn checkpoint(&self) -> Next {
        self.park(None)
    }

    /// A vCPU's checkpoint: as `checkpoint`, and while parked it runs the
    /// work handed to vCPU `id` (`on_parked_vcpus`) with its `fd`.
    pub fn checkpoint_vcpu(&self, id: usize, fd: &mut kvm_ioctls::VcpuFd) -> Next {
        self.park(Some((id, fd)))
    }

    /// Parks while a pause is asked for, running a vCPU's work meanwhile.
    fn park(&self, mut vcpu: Option<(usize, &mut kvm_ioctls::VcpuFd)>) -> Next {
        let mut s = lock(&self.state);
        if s.request == Request::Pause {
            s.parked += 1;
            self.changed.notify_all();
            while s.request == Request::Pause {
                let work = match &mut vcpu {
                    Some((id, fd)) => s
                        .work
                        .get_mut(*id)
                        .and_then(Option::take)
                        .map(|w| (w, &mut **fd)),
                    None => None,
                };
                if let Some((work, fd)) = work {
                    drop(s);
                    work(fd);
                    s = lock(&self.state);
                    s.pending -= 1;
                    self.changed.notify_all();
                    continue;
                }
                s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.parked -= 1;
            self.changed.notify_all();
            if let Some((_, fd)) = vcpu {
                // The guest's kvmclock says it was stopped, so that its
                // watchdogs (soft lockup, RCU stall) do not count the pause
                // against it, as the anchors do on resume. A guest without
                // kvmclock makes KVM refuse (EINVAL): nothing to tell then.
                let _ = fd.kvmclock_ctrl();
            }
        }
        if s.request == Request::Stop {
            Next::Leave
        } else {
            Next::Go
        }
    }

    /// Runs `work[i]` on vCPU `i`'s thread while the VM is paused, and
    /// waits until all of it is done.
    pub fn on_parked_vcpus(&self, work: Vec<VcpuWork>) -> Result<(), ControlError> {
        let mut s = lock(&self.state);
        if s.request != Request::Pause {
            return Err(ControlError::NotPaused);
        }
        while s.request == Request::Pause && s.parked + s.left < self.participants {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.request != Request::Pause {
            return Err(ControlError::Ended);
        }
        s.pending += work.len();
        s.work = work.into_iter().map(Some).collect();
        self.changed.notify_all();
        while s.pending > 0 && s.request == Request::Pause {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.pending > 0 {
            s.work.clear();
            s.pending = 0;
            return Err(ControlError::Ended);
        }
        Ok(())
    }

    /// Records that a participant left (its thread ends).
    pub fn leave(&self) {
        let mut s = lock(&self.state);
        s.left += 1;
        self.changed.notify_all();
    }

    fn kick(&self, s: &State) {
        for &t in &s.vcpu_threads {
            // SAFETY: `t` is a vCPU thread of this VM that has not been
            // joined (the list is cleared under the same lock before the
            // threads are joined); pthread_kill only sends it a signal
            // whose handler is installed (`install_kick_handler`).
            unsafe { libc::pthread_kill(t, SIGRTMIN()) };
        }
        if let Err(e) = self.wake_loop.write(1) {
            log::error!("cannot wake the event loop: {e}");
        }
    }

    /// Asks every participant to park and waits until all have (or the VM
    /// ended). Pausing a paused VM is done at once.
    pub fn pause(&self) -> Result<(), ControlError> {
        let mut s = lock(&self.state);
        match s.request {
            Request::Stop => return Err(ControlError::Ended),
            Request::Pause => {}
            Request::Run => {
                s.request = Request::Pause;
                self.kick(&s);
            }
        }
        while s.request == Request::Pause && s.parked + s.left < self.participants {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.request == Request::Stop {
            return Err(ControlError::Ended);
        }
        Ok(())
    }

    /// Before the participants start: they park at their first
    /// checkpoint (a VM started paused, as a restored one may be).
    pub fn pause_before_start(&self) {
        let mut s = lock(&self.state);
        if s.request == Request::Run {
            s.request = Request::Pause;
            // The event loop sees this when it first waits; the vCPUs
            // look before their first KVM_RUN.
            if let Err(e) = self.wake_loop.write(1) {
                log::error!("cannot wake the event loop: {e}");
            }
        }
    }

    /// Lets the participants run again and waits until each has left its
    /// parking place.
    pub fn resume(&self) -> Result<(), ControlError> {
        let mut s = lock(&self.state);
        match s.request {
            Request::Stop => return Err(ControlError::Ended),
            Request::Run => return Ok(()),
            Request::Pause => {
                s.request = Request::Run;
                self.changed.notify_all();
            }
        }
        while s.request == Request::Run && s.parked > 0 {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        Ok(())
    }

    /// Asks every participant to leave, unparking the parked ones and
    /// kicking the vCPUs out of KVM_RUN.
    pub fn stop(&self) {
        let mut s = lock(&self.state);
        s.request = Request::Stop;
        self.changed.notify_all();
        self.kick(&s);
    }

    /// Waits until every participant has left.
    pub fn wait_all_left(&self, timeout: std::time::Duration) -> bool {
        let s = lock(&self.state);
        let (s, _) = self
            .changed
            .wait_timeout_while(s, timeout, |s| s.left < self.participants)
            .unwrap_or_else(|p| p.into_inner());
        s.left >= self.participants
    }

    /// Whether every participant is parked now.
    pub fn all_parked(&self) -> bool {
        let s = lock(&self.state);
        s.parked + s.left >= self.participants && s.request == Request::Pause
    }
}

thread_local! {
    /// This thread's `kvm_run.immediate_exit`, while it runs a vCPU.
    static IMMEDIATE_EXIT: Cell<*mut u8> = const { Cell::new(std::ptr::null_mut()) };
}

/// Points the kick handler at this thread's vCPU's `immediate_exit` (null
/// when the thread stops running it).
pub fn set_kick_target(immediate_exit: *mut u8) {
    IMMEDIATE_EXIT.with(|c| c.set(immediate_exit));
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // A const-initialised thread local is a plain TLS slot: reading it is
    // async-signal-safe.
    let target = IMMEDIATE_EXIT.with(|c| c.get());
    if !target.is_null() {
        // SAFETY: the pointer is this thread's vCPU's kvm_run mapping,
        // set by `set_kick_target` while the mapping lives and cleared
        // before it goes; KVM reads the byte at the next KVM_RUN.
        unsafe { target.write_volatile(1) };
    }
}

/// Installs the kick signal's handler (SIGRTMIN), once per process. Its
/// only effects: KVM_RUN returns EINTR, and the next one returns at once.
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Workers that count while running: paused, no count moves; resumed,
    /// every count moves again; stopped, all leave.
    #[test]
    fn pause_parks_every_participant_and_resume_lets_them_go() {
        let control = Arc::new(Control::new(3).unwrap());
        let counts: Arc<Vec<AtomicU64>> = Arc::new((0..3).map(|_| AtomicU64::new(0)).collect());
        let threads: Vec<_> = (0..3)
            .map(|i| {
                let (c, n) = (control.clone(), counts.clone());
                std::thread::spawn(move || {
                    while c.checkpoint() == Next::Go {
                        n[i].fetch_add(1, Ordering::SeqCst);
                        std::thread::yield_now();
                    }
                    c.leave();
                })
            })
            .collect();
        for _ in 0..50 {
            control.pause().unwrap();
            assert!(control.all_parked());
            let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
            std::thread::sleep(Duration::from_millis(2));
            let after: Vec<u64> = counts.iter().map(|c| c.load(Ordering::SeqCst)).collect();
            assert_eq!(before, after, "a paused participant worked");
            control.resume().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while counts
                .iter()
                .zip(&after)
                .any(|(c, a)| c.load(Ordering::SeqCst) == *a)
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "a participant is stuck"
                );
                std::thread::yield_now();
            }
        }
        control.pause().unwrap();
        control.stop();
        assert!(control.wait_all_left(Duration::from_secs(10)));
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(control.pause(), Err(ControlError::Ended));
        assert_eq!(control.resume(), Err(ControlError::Ended));
    }

    #[test]
    fn a_pause_while_a_participant_left_does_not_wait_for_it() {
        let control = Control::new(2).unwrap();
        control.leave();
        let c = &control;
        std::thread::scope(|s| {
            s.spawn(|| {
                while c.checkpoint() == Next::Go {
                    std::thread::yield_now();
                }
                c.leave();
            });
            c.pause().unwrap();
            c.stop();
        });
        assert!(control.wait_all_left(Duration::from_secs(1)));
    }
}
