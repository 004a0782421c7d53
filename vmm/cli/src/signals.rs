//! The `vmm` command's stop signals: SIGTERM, SIGINT and SIGHUP end the VM
//! through its handle (clean teardown: vCPUs stopped, device statistics
//! logged, terminal restored) instead of killing the process. Process-wide
//! policy, so it is the front end's, not the library's.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::register_signal_handler;

/// The eventfd the handler writes to (-1 until installed), and the signal
/// it saw.
static STOP_FD: AtomicI32 = AtomicI32::new(-1);
static STOP_SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn stop_handler(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; it reads 8 bytes from a
        // live local. The fd is an eventfd kept open for the process's life.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// The stop signals, caught: poll `fd()`, then `take()` says which came.
pub struct StopSignals {
    evt: EventFd,
}

impl StopSignals {
    /// Installs the handlers (once per process).
    pub fn install() -> Result<StopSignals, String> {
        let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| format!("cannot create the stop-signal eventfd: {e}"))?;
        let mine = evt
            .try_clone()
            .map_err(|e| format!("cannot copy the stop-signal eventfd: {e}"))?;
        // The handler's copy stays open for the process's life.
        STOP_FD.store(evt.as_raw_fd(), Ordering::SeqCst);
        std::mem::forget(evt);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            register_signal_handler(sig, stop_handler)
                .map_err(|e| format!("cannot install the stop-signal handler: {e}"))?;
        }
        Ok(StopSignals { evt: mine })
    }

    /// The descriptor that becomes readable when a stop signal came.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.evt.as_raw_fd()
    }

    /// The signal that came, if one did (and clears the event).
    pub fn take(&self) -> Option<i32> {
        self.evt
            .read()
            .ok()
            .map(|_| STOP_SIGNAL.load(Ordering::SeqCst))
    }
}
