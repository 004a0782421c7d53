//! Device models for the VMM, each behind the small `BusDevice` trait: a
//! device sees only offsets inside its own range, the `Bus` owns lookups.

pub mod boot_timer;
pub mod bus;
pub mod cmos;
pub mod command;
pub mod exit_device;
pub mod i8042;
pub mod serial;
pub mod sink;
pub mod virtio;

/// A piece of guest memory, as vm-memory hands it out.
pub type GuestSlice<'m> = vm_memory::VolatileSlice<'m, vm_memory::bitmap::BS<'m, ()>>;

/// Pieces of guest memory as the iovecs of one vectored system call, with
/// the guards that keep their pointers valid: the iovecs may be used only
/// while this lives. Built for as many pieces as there are (no fixed-size
/// array to fill: every instruction counts on the paths that use it). The
/// guards are those for writing guest memory, which serve a call that
/// only reads it (writev, pwritev) as well as one that writes it (preadv).
pub(crate) struct IoVecs {
    _guards: Vec<vm_memory::volatile_memory::PtrGuardMut>,
    /// One per piece, in order.
    pub iov: Vec<libc::iovec>,
}

impl IoVecs {
    pub(crate) fn new(parts: &[GuestSlice<'_>]) -> Self {
        let guards: Vec<_> = parts.iter().map(|p| p.ptr_guard_mut()).collect();
        let iov = guards
            .iter()
            .map(|g| libc::iovec {
                iov_base: g.as_ptr().cast(),
                iov_len: g.len(),
            })
            .collect();
        IoVecs {
            _guards: guards,
            iov,
        }
    }
}

pub use bus::{Bus, BusDevice, SharedDevice};
