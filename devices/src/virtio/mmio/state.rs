//! The transport's part of a snapshot: its registers, each queue, the
//! interrupt status and the device's own state, saved from a quiesced
//! device and put back into one made from the same configuration.

use virtio_queue::{Queue, QueueT};

use super::{MmioTransport, QueueRequest};
use crate::virtio::{status, DeviceSnapshot};

/// What a snapshot keeps of one queue: its configuration and where the
/// device is in its rings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueSnapshot {
    /// The largest size the device offers.
    pub max_size: u16,
    /// The size the driver chose.
    pub size: u16,
    /// Made ready by the driver.
    pub ready: bool,
    /// Guest addresses of the descriptor table, driver and device areas.
    pub desc_table: u64,
    /// The driver area (available ring).
    pub avail_ring: u64,
    /// The device area (used ring).
    pub used_ring: u64,
    /// The next available entry the device takes.
    pub next_avail: u16,
    /// The next used entry the device writes.
    pub next_used: u16,
    /// VIRTIO_RING_F_EVENT_IDX in use.
    pub event_idx: bool,
    /// What the driver wrote: size, descriptor table, driver area, device
    /// area (checked when the queue is made ready).
    pub requested: (u32, u64, u64, u64),
}

/// What a snapshot keeps of a virtio-mmio device: the transport's
/// registers, each queue, the interrupt status and the device's own state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TransportSnapshot {
    /// The device's virtio id (checked on restore).
    pub device_type: u32,
    /// QueueSel.
    pub queue_sel: u32,
    /// DeviceFeaturesSel.
    pub device_features_sel: u32,
    /// DriverFeaturesSel.
    pub driver_features_sel: u32,
    /// The features the driver wrote.
    pub driver_features: u64,
    /// The device status.
    pub status: u32,
    /// The configuration generation.
    pub config_generation: u32,
    /// InterruptStatus.
    pub interrupt_status: u32,
    /// Each queue.
    pub queues: Vec<QueueSnapshot>,
    /// The device behind the transport.
    pub device: DeviceSnapshot,
}

impl MmioTransport {
    /// Before a snapshot: the device gives back what it holds of its
    /// queues, and the guest is interrupted for what it gave back.
    pub fn quiesce(&mut self) {
        if !self.activated() {
            return;
        }
        let changed = self.device.quiesce(&self.mem, &mut self.queues);
        for q in 0..self.queues.len().min(32) {
            if changed & (1 << q) != 0 {
                self.interrupt_if_needed(q);
            }
        }
    }

    /// The transport's and the device's state, for a snapshot (after
    /// `quiesce`).
    pub fn save(&self) -> TransportSnapshot {
        let queues = self
            .queues
            .iter()
            .zip(&self.requested)
            .map(|(q, r)| {
                let s = q.state();
                QueueSnapshot {
                    max_size: s.max_size,
                    size: s.size,
                    ready: s.ready,
                    desc_table: s.desc_table,
                    avail_ring: s.avail_ring,
                    used_ring: s.used_ring,
                    next_avail: s.next_avail,
                    next_used: s.next_used,
                    event_idx: s.event_idx_enabled,
                    requested: (r.size, r.desc, r.avail, r.used),
                }
            })
            .collect();
        TransportSnapshot {
            device_type: self.device.device_type(),
            queue_sel: self.queue_sel,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            status: self.status,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            queues,
            device: self.device.save(),
        }
    }

    /// Puts a saved state into this transport, whose device was made from
    /// the same configuration: the registers, each queue (checked as the
    /// driver's setup is: sizes, alignment, inside guest memory), the
    /// features the driver accepted handed to the device again, the
    /// device's own state, and the interrupt raised again if it was
    /// pending. Refused, with the reason, when the state does not fit this
    /// device or this guest memory.
    pub fn restore(&mut self, snap: &TransportSnapshot) -> Result<(), String> {
        let kind = self.device.device_type();
        if snap.device_type != kind {
            return Err(format!(
                "a device of type {} in the snapshot where this VM has type {kind}",
                snap.device_type
            ));
        }
        if snap.queues.len() != self.queues.len() {
            return Err(format!(
                "{} queues in the snapshot, the device has {}",
                snap.queues.len(),
                self.queues.len()
            ));
        }
        let offered = self.device.features();
        if snap.status & status::FEATURES_OK != 0 && snap.driver_features & !offered != 0 {
            return Err(format!(
                "the driver accepted features {:#x} that this device does not offer (it offers \
                 {offered:#x}: a TAP without offloads?)",
                snap.driver_features
            ));
        }
        let mut queues = Vec::with_capacity(snap.queues.len());
        for (i, (q, mine)) in snap.queues.iter().zip(&self.queues).enumerate() {
            if q.max_size != mine.max_size() {
                return Err(format!(
                    "queue {i}: its largest size is {} in the snapshot, {} here",
                    q.max_size,
                    mine.max_size()
                ));
            }
            let state = virtio_queue::QueueState {
                max_size: q.max_size,
                next_avail: q.next_avail,
                next_used: q.next_used,
                event_idx_enabled: q.event_idx,
                size: q.size,
                ready: q.ready,
                desc_table: q.desc_table,
                avail_ring: q.avail_ring,
                used_ring: q.used_ring,
            };
            let queue = Queue::try_from(state).map_err(|e| format!("queue {i}: {e}"))?;
            if queue.ready() && !queue.is_valid(&self.mem) {
                return Err(format!("queue {i}: its rings are not inside guest memory"));
            }
            queues.push(queue);
        }
        if snap.status & status::FEATURES_OK != 0 {
            self.device.ack_features(snap.driver_features);
        }
        self.device.restore(&snap.device)?;
        self.queues = queues;
        for (r, q) in self.requested.iter_mut().zip(&snap.queues) {
            let (size, desc, avail, used) = q.requested;
            *r = QueueRequest {
                size,
                desc,
                avail,
                used,
            };
        }
        self.queue_sel = snap.queue_sel;
        self.device_features_sel = snap.device_features_sel;
        self.driver_features_sel = snap.driver_features_sel;
        self.driver_features = snap.driver_features;
        self.status = snap.status;
        self.config_generation = snap.config_generation;
        self.interrupt.restore(snap.interrupt_status);
        Ok(())
    }
}
