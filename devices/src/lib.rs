//! Device models for the VMM, each behind the small `BusDevice` trait: a
//! device sees only offsets inside its own range, the `Bus` owns lookups.

pub mod boot_timer;
pub mod bus;
pub mod cmos;
pub mod exit_device;
pub mod i8042;
pub mod serial;
pub mod sink;
pub mod tap;
pub mod virtio;

/// A piece of guest memory, as vm-memory hands it out.
pub type GuestSlice<'m> = vm_memory::VolatileSlice<'m, vm_memory::bitmap::BS<'m, ()>>;

pub use bus::{Bus, BusDevice, SharedDevice};
