//! Virtio devices over the virtio-mmio transport (version 2). The transport
//! (`mmio`) owns the queues and the register interface shared by every
//! device; a device (`block`, `net`) implements `VirtioDevice`: its
//! features, its configuration space and what it does with a queue's
//! descriptor chains, which it takes and returns through `queue`, the one
//! home of ring handling. `testing` is the driver's side, for tests.

pub mod block;
pub mod mmio;
pub mod net;
pub mod queue;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// VIRTIO_F_VERSION_1: the device follows virtio 1.x (not legacy).
pub use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
/// VIRTIO_RING_F_EVENT_IDX: driver and device say, through the rings, from
/// which index on they want the next interrupt or notification. Fewer
/// interrupts and exits; a device that offers it must keep the avail event
/// up to date (`Queue::enable_notification` after each pass, or by hand).
pub use virtio_bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;

/// Device status bits (virtio 1.2, 2.1), from virtio-bindings.
pub mod status {
    use virtio_bindings::virtio_config as c;
    /// The guest noticed the device.
    pub const ACKNOWLEDGE: u32 = c::VIRTIO_CONFIG_S_ACKNOWLEDGE;
    /// The guest has a driver for it.
    pub const DRIVER: u32 = c::VIRTIO_CONFIG_S_DRIVER;
    /// The driver is ready.
    pub const DRIVER_OK: u32 = c::VIRTIO_CONFIG_S_DRIVER_OK;
    /// Feature negotiation is complete.
    pub const FEATURES_OK: u32 = c::VIRTIO_CONFIG_S_FEATURES_OK;
    /// The device hit an error it cannot recover from without a reset.
    pub const DEVICE_NEEDS_RESET: u32 = c::VIRTIO_CONFIG_S_NEEDS_RESET;
    /// The driver gave up on the device.
    pub const FAILED: u32 = c::VIRTIO_CONFIG_S_FAILED;
}

/// Interrupt status bit: a used ring was updated.
pub const INTERRUPT_USED_RING: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_VRING;
/// Interrupt status bit: the configuration changed.
pub const INTERRUPT_CONFIG: u32 = virtio_bindings::virtio_mmio::VIRTIO_MMIO_INT_CONFIG;

/// A device's interrupt: the status bits the driver reads and acknowledges,
/// and the eventfd the VMM registers with KVM as an irqfd.
pub struct Interrupt {
    status: AtomicU32,
    evt: EventFd,
}

impl Interrupt {
    /// An interrupt raised through `evt`.
    pub fn new(evt: EventFd) -> Self {
        Interrupt {
            status: AtomicU32::new(0),
            evt,
        }
    }

    /// Sets `bits` in the interrupt status and raises the interrupt, unless
    /// all of `bits` were already set: the driver has not acknowledged the
    /// interrupt that set them yet, and its handler, which reads the status,
    /// acknowledges it and only then looks at the rings (virtio 1.2, 4.2.2),
    /// will see what changed since. This is what a level-triggered line
    /// gives (QEMU's virtio-mmio, crosvm's `Interrupt`): one interrupt per
    /// acknowledgement, not one per used-ring update, each of which costs
    /// the guest two exits (status read and acknowledgement). Returns
    /// whether the interrupt was raised.
    pub fn signal(&self, bits: u32) -> bool {
        let before = self.status.fetch_or(bits, Ordering::SeqCst);
        if before & bits == bits {
            return false;
        }
        if let Err(e) = self.evt.write(1) {
            log::warn!("virtio: cannot raise interrupt: {e}");
        }
        true
    }

    /// The interrupt status register.
    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Puts a saved interrupt status back; the interrupt is raised again
    /// if any bit is set (the driver reads the status either way, and a
    /// lost interrupt would stall it).
    pub fn restore(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
        if bits != 0 {
            if let Err(e) = self.evt.write(1) {
                log::warn!("virtio: cannot raise interrupt: {e}");
            }
        }
    }

    /// Clears acknowledged bits.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    /// The eventfd KVM injects the interrupt from.
    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// What a snapshot keeps of a device behind the transport (the
/// transport keeps its queues and registers).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DeviceSnapshot {
    /// A device with no state of its own.
    None,
    /// virtio-blk: what the guest saw of the disk (its file is reopened by
    /// path and must still match).
    Block {
        /// Capacity, 512-byte sectors.
        capacity: u64,
        /// Offered read-only.
        read_only: bool,
        /// Its serial (GET_ID).
        id: String,
    },
    /// virtio-net: its MAC and the frame it held from the TAP that no RX
    /// buffer had taken yet (delivered after the restore).
    Net {
        /// The MAC the guest reads.
        mac: String,
        /// The held frame, virtio-net header included (empty: none).
        rx_frame: Vec<u8>,
    },
}

/// Copies `data.len()` bytes of a device's configuration space `config`
/// from `offset`; bytes beyond it read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| config.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// What a device behind the virtio-mmio transport provides.
pub trait VirtioDevice: Send {
    /// Virtio device id (2: block, 1: net).
    fn device_type(&self) -> u32;
    /// The largest size of each of its queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// The features the driver accepted (a subset of `features`).
    fn ack_features(&mut self, features: u64);
    /// Reads `data.len()` bytes of configuration space at `offset`; bytes
    /// beyond the configuration read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes configuration space; ignored where read-only.
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Processes what the driver made available on queue `index`. Returns
    /// whether the used ring changed (the transport then decides, with the
    /// queue's notification suppression, whether to interrupt).
    fn process_queue(&mut self, mem: &GuestMemoryMmap, index: usize, queue: &mut Queue) -> bool;
    /// Host file descriptors the device serves (a TAP), which the event
    /// loop watches edge-triggered: the device must consume all that is
    /// ready, or keep it until it can. None by default.
    fn host_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    /// `host_fds()[index]` became ready while the device is active. Returns
    /// a mask of the queues whose used ring changed.
    fn host_event(&mut self, _mem: &GuestMemoryMmap, _index: usize, _queues: &mut [Queue]) -> u32 {
        0
    }
    /// Replaces the device's host backing (a disk of `size`
    /// bytes) while it runs; the transport then tells the driver its
    /// configuration changed. Devices without one refuse.
    fn replace_backing(&mut self, _disk: block::Disk, _size: u64) -> Result<(), String> {
        Err("this device has no backing file".into())
    }
    /// A one-line account of what the device did, logged when the VM ends.
    fn stats(&self) -> Option<String> {
        None
    }
    /// The device's name among its kind (a disk's id, a card's MAC).
    fn id(&self) -> String {
        String::new()
    }
    /// What the device did, as named counters (for `vmm run --metrics`).
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Returns the device to its initial state (driver reset).
    fn reset(&mut self);
    /// Before a snapshot: gives back to the guest what the device holds
    /// of its queues (buffers used but not yet returned), so that nothing
    /// is in flight. Returns a mask of the queues whose used ring changed.
    fn quiesce(&mut self, _mem: &GuestMemoryMmap, _queues: &mut [Queue]) -> u32 {
        0
    }
    /// The device's state, for a snapshot (after `quiesce`).
    fn save(&self) -> DeviceSnapshot {
        DeviceSnapshot::None
    }
    /// Puts a saved state back into this device, made from the same
    /// configuration. Refuses a state of another kind or one its host side
    /// no longer matches.
    fn restore(&mut self, snap: &DeviceSnapshot) -> Result<(), String> {
        match snap {
            DeviceSnapshot::None => Ok(()),
            other => Err(format!("a device without state given {other:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raised(i: &Interrupt) -> u64 {
        // Non-blocking read: 0 when the eventfd was not written.
        i.eventfd().read().unwrap_or(0)
    }

    #[test]
    fn an_unacknowledged_interrupt_is_not_raised_again() {
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let i = Interrupt::new(evt);
        assert!(i.signal(INTERRUPT_USED_RING));
        assert!(!i.signal(INTERRUPT_USED_RING));
        assert_eq!(raised(&i), 1);
        // Another cause still raises it.
        assert!(i.signal(INTERRUPT_CONFIG));
        assert_eq!(raised(&i), 1);
        assert_eq!(i.status(), INTERRUPT_USED_RING | INTERRUPT_CONFIG);
        // Once acknowledged, the next update raises it again.
        i.ack(INTERRUPT_USED_RING);
        assert!(i.signal(INTERRUPT_USED_RING));
        assert_eq!(raised(&i), 1);
        assert!(!i.signal(INTERRUPT_USED_RING | INTERRUPT_CONFIG));
        assert_eq!(raised(&i), 0);
    }
}
