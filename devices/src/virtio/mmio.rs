//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): the register
//! window the driver programs, feature negotiation, queue setup and
//! validation, device status and reset, configuration space, and queue
//! notifications. Everything the guest writes is checked; a misbehaving
//! driver gets its write ignored or the device marked DEVICE_NEEDS_RESET,
//! never a panic.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

mod state;
pub use state::{QueueSnapshot, TransportSnapshot};

use super::{
    status, Interrupt, VirtioDevice, INTERRUPT_CONFIG, INTERRUPT_USED_RING, VIRTIO_F_VERSION_1,
};
use crate::bus::BusDevice;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // as QEMU and Firecracker report

// Register offsets, from virtio-bindings (public for the fuzz harnesses and
// tests that play the driver).
use virtio_bindings::virtio_mmio as reg;
pub const REG_MAGIC: u64 = reg::VIRTIO_MMIO_MAGIC_VALUE as u64;
pub const REG_VERSION: u64 = reg::VIRTIO_MMIO_VERSION as u64;
pub const REG_DEVICE_ID: u64 = reg::VIRTIO_MMIO_DEVICE_ID as u64;
pub const REG_VENDOR_ID: u64 = reg::VIRTIO_MMIO_VENDOR_ID as u64;
pub const REG_DEVICE_FEATURES: u64 = reg::VIRTIO_MMIO_DEVICE_FEATURES as u64;
pub const REG_DEVICE_FEATURES_SEL: u64 = reg::VIRTIO_MMIO_DEVICE_FEATURES_SEL as u64;
pub const REG_DRIVER_FEATURES: u64 = reg::VIRTIO_MMIO_DRIVER_FEATURES as u64;
pub const REG_DRIVER_FEATURES_SEL: u64 = reg::VIRTIO_MMIO_DRIVER_FEATURES_SEL as u64;
pub const REG_QUEUE_SEL: u64 = reg::VIRTIO_MMIO_QUEUE_SEL as u64;
pub const REG_QUEUE_NUM_MAX: u64 = reg::VIRTIO_MMIO_QUEUE_NUM_MAX as u64;
pub const REG_QUEUE_NUM: u64 = reg::VIRTIO_MMIO_QUEUE_NUM as u64;
pub const REG_QUEUE_READY: u64 = reg::VIRTIO_MMIO_QUEUE_READY as u64;
pub const REG_QUEUE_NOTIFY: u64 = reg::VIRTIO_MMIO_QUEUE_NOTIFY as u64;
pub const REG_INTERRUPT_STATUS: u64 = reg::VIRTIO_MMIO_INTERRUPT_STATUS as u64;
pub const REG_INTERRUPT_ACK: u64 = reg::VIRTIO_MMIO_INTERRUPT_ACK as u64;
pub const REG_STATUS: u64 = reg::VIRTIO_MMIO_STATUS as u64;
pub const REG_QUEUE_DESC_LOW: u64 = reg::VIRTIO_MMIO_QUEUE_DESC_LOW as u64;
pub const REG_QUEUE_DESC_HIGH: u64 = reg::VIRTIO_MMIO_QUEUE_DESC_HIGH as u64;
pub const REG_QUEUE_DRIVER_LOW: u64 = reg::VIRTIO_MMIO_QUEUE_AVAIL_LOW as u64;
pub const REG_QUEUE_DRIVER_HIGH: u64 = reg::VIRTIO_MMIO_QUEUE_AVAIL_HIGH as u64;
pub const REG_QUEUE_DEVICE_LOW: u64 = reg::VIRTIO_MMIO_QUEUE_USED_LOW as u64;
pub const REG_QUEUE_DEVICE_HIGH: u64 = reg::VIRTIO_MMIO_QUEUE_USED_HIGH as u64;
pub const REG_CONFIG_GENERATION: u64 = reg::VIRTIO_MMIO_CONFIG_GENERATION as u64;
pub const REG_CONFIG: u64 = reg::VIRTIO_MMIO_CONFIG as u64;

/// Where the driver writes queue notifications (for ioeventfd).
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;

/// A queue's configuration as the driver wrote it. virtio-queue ignores
/// invalid values (keeping the previous ones), so the transport keeps what
/// was asked for and refuses a queue whose request was not honoured.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct QueueRequest {
    size: u32,
    desc: u64,
    avail: u64,
    used: u64,
}

fn set_low(v: &mut u64, low: u32) {
    *v = (*v & !0xffff_ffff) | u64::from(low);
}

fn set_high(v: &mut u64, high: u32) {
    *v = (*v & 0xffff_ffff) | (u64::from(high) << 32);
}

/// A virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    /// What the driver wrote for each queue, checked when it is made ready.
    requested: Vec<QueueRequest>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    /// Per queue: notifications taken, used-ring interrupts raised.
    counts: Vec<(u64, u64)>,
}

/// What one virtio device did (see `MmioTransport::metrics`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMetrics {
    /// "virtio-blk" or "virtio-net".
    pub kind: &'static str,
    /// The disk's id or the card's MAC.
    pub id: String,
    /// The device's counters, by name.
    pub counters: Vec<(&'static str, u64)>,
    /// Per queue: the driver's notifications, the interrupts raised.
    pub queues: Vec<(u64, u64)>,
}

impl MmioTransport {
    /// Wraps `device`; its queues live in `mem` and it interrupts through
    /// `interrupt`.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        interrupt: Arc<Interrupt>,
    ) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .filter_map(|max| Queue::new(*max).ok())
            .collect();
        let requested = vec![QueueRequest::default(); device.queue_max_sizes().len()];
        let counts = vec![(0, 0); requested.len()];
        MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            requested,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            counts,
        }
    }

    fn activated(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && self.status & status::DEVICE_NEEDS_RESET == 0
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue configuration may change only while the driver sets the device
    /// up: before DRIVER_OK, and while the selected queue is not ready
    /// (virtio 1.2, 4.2.2.3).
    fn queue_config_writable(&mut self) -> bool {
        self.status & status::DRIVER_OK == 0 && self.selected_queue().is_some_and(|q| !q.ready())
    }

    /// Makes queue `sel` ready if what the driver wrote describes a valid
    /// split queue: a size that is a power of two no larger than the
    /// maximum, aligned rings, all inside guest RAM.
    fn check_queue(&mut self, sel: usize) -> Result<(), String> {
        let req = self.requested[sel];
        let q = &mut self.queues[sel];
        if req.size == 0 || !req.size.is_power_of_two() || req.size > u32::from(q.max_size()) {
            return Err(format!(
                "size {}: must be a power of two, at most {}",
                req.size,
                q.max_size()
            ));
        }
        if !req.desc.is_multiple_of(16)
            || !req.avail.is_multiple_of(2)
            || !req.used.is_multiple_of(4)
        {
            return Err(
                "rings misaligned (descriptors 16, driver area 2, device area 4 bytes)".into(),
            );
        }
        let actual = (
            u32::from(q.size()),
            q.desc_table(),
            q.avail_ring(),
            q.used_ring(),
        );
        if actual != (req.size, req.desc, req.avail, req.used) {
            return Err("configuration not accepted by the queue".into());
        }
        q.set_ready(true);
        if !q.is_valid(&self.mem) {
            q.set_ready(false);
            return Err("rings not inside guest RAM".into());
        }
        Ok(())
    }

    /// Whether the driver broke queue `index`'s available ring: its index
    /// is more than a ring ahead of what the device has taken, which no
    /// driver can have made available (virtio 1.2, 2.7.6: at most Queue
    /// Size buffers are outstanding). The device cannot tell which entries
    /// are real, so it stops using the queue until the driver resets it.
    fn broken_avail_ring(&self, index: usize) -> Option<String> {
        let queue = self.queues.get(index).filter(|q| q.ready())?;
        let idx = match queue.avail_idx(&self.mem, std::sync::atomic::Ordering::Acquire) {
            Ok(idx) => idx.0,
            Err(e) => return Some(format!("queue {index}: cannot read the avail index: {e}")),
        };
        let next = queue.next_avail();
        let ahead = idx.wrapping_sub(next);
        (ahead > queue.size()).then(|| {
            format!(
                "queue {index}: the driver's avail index {idx} is {ahead} entries ahead of the device's {next}, more than the queue size {}",
                queue.size()
            )
        })
    }

    /// Checks the available rings of the ready queues in `indices` before
    /// the device uses them; a broken one marks the device as needing
    /// reset. Returns whether the device may go on.
    fn rings_intact(&mut self, indices: std::ops::Range<usize>) -> bool {
        for index in indices {
            if let Some(why) = self.broken_avail_ring(index) {
                self.mark_needs_reset(&why);
                return false;
            }
        }
        true
    }

    /// Marks the device as needing reset (virtio 1.2, 2.1.2: it entered an
    /// error state), tells the driver with a configuration-change
    /// interrupt, and stops serving its queues until the driver resets it.
    fn mark_needs_reset(&mut self, why: &str) {
        log::warn!(
            "virtio: device type {} needs reset: {why}",
            self.device.device_type()
        );
        if self.status & status::DRIVER_OK != 0 {
            self.status |= status::DEVICE_NEEDS_RESET;
            self.interrupt.signal(INTERRUPT_CONFIG);
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.requested.fill(QueueRequest::default());
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.status = 0;
        self.interrupt.ack(u32::MAX);
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // DEVICE_NEEDS_RESET is the device's to set (virtio 1.2, 2.1.2):
        // a driver's write neither sets nor clears it.
        let value =
            (value & !status::DEVICE_NEEDS_RESET) | (self.status & status::DEVICE_NEEDS_RESET);
        let new_bits = value & !self.status;
        // Bits may only be added, never cleared, except by a reset.
        if value & self.status != self.status {
            log::warn!(
                "virtio: driver tried to clear status bits ({:#x} -> {value:#x}); ignored",
                self.status
            );
            return;
        }
        if new_bits & status::FEATURES_OK != 0 {
            let offered = self.device.features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & (1 << VIRTIO_F_VERSION_1) != 0;
            if !ok {
                log::warn!(
                    "virtio: driver features {:#x} not acceptable (offered {offered:#x}, VERSION_1 required)",
                    self.driver_features
                );
                // FEATURES_OK stays clear; the driver reads it back and fails.
                self.status |= value & !status::FEATURES_OK & !status::DRIVER_OK;
                return;
            }
            self.device.ack_features(self.driver_features);
            let event_idx = self.driver_features & (1 << super::VIRTIO_RING_F_EVENT_IDX) != 0;
            for q in &mut self.queues {
                q.set_event_idx(event_idx);
            }
        }
        if new_bits & status::DRIVER_OK != 0
            && self.status & status::FEATURES_OK == 0
            && new_bits & status::FEATURES_OK == 0
        {
            log::warn!("virtio: DRIVER_OK without FEATURES_OK; ignored");
            return;
        }
        self.status = value;
    }

    /// Replaces the device's host backing (a disk's file) while the VM
    /// runs, then tells the driver: the configuration generation moves on
    /// and, once the driver is running, a configuration-change interrupt
    /// makes it read the new configuration (a disk's capacity), as
    /// Firecracker's drive update does.
    pub fn replace_backing(&mut self, disk: super::block::Disk, size: u64) -> Result<(), String> {
        self.device.replace_backing(disk, size)?;
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt.signal(INTERRUPT_CONFIG);
        }
        Ok(())
    }

    /// Processes a notification for queue `index`: the device consumes what
    /// is available and the guest is interrupted if it asked to be.
    pub fn notify(&mut self, index: usize) {
        if !self.activated() {
            return;
        }
        let Some(queue) = self.queues.get_mut(index) else {
            log::debug!("virtio: notification for queue {index}, which does not exist");
            return;
        };
        if !queue.ready() {
            log::debug!("virtio: notification for queue {index}, which is not ready");
            return;
        }
        // Only this queue: the device touches no other for it.
        if !self.rings_intact(index..index + 1) {
            return;
        }
        self.counts[index].0 += 1;
        let queue = &mut self.queues[index];
        if !self.device.process_queue(&self.mem, index, queue) {
            return;
        }
        self.interrupt_if_needed(index);
    }

    /// Interrupts the guest for queue `index`'s used ring if it asked to be.
    fn interrupt_if_needed(&mut self, index: usize) {
        let Some(queue) = self.queues.get_mut(index) else {
            return;
        };
        match queue.needs_notification(&self.mem) {
            Ok(true) => {
                if self.interrupt.signal(INTERRUPT_USED_RING) {
                    self.counts[index].1 += 1;
                }
            }
            Ok(false) => {}
            Err(e) => {
                let why = format!("queue {index}: {e}");
                self.mark_needs_reset(&why);
            }
        }
    }

    /// What the device did (see `VirtioDevice::stats`), and per queue the
    /// driver's notifications and the used-ring interrupts: how much work
    /// each exit and each interrupt carried.
    pub fn device_stats(&self) -> Option<String> {
        let stats = self.device.stats()?;
        let queues: Vec<String> = self
            .counts
            .iter()
            .enumerate()
            .map(|(i, (n, irq))| format!("queue {i}: {n} notifications, {irq} interrupts"))
            .collect();
        Some(format!("{stats}; {}", queues.join("; ")))
    }

    /// What the device did, for programs: its kind and id, its counters
    /// (`VirtioDevice::counters`) and per queue the driver's notifications
    /// and the interrupts raised.
    pub fn metrics(&self) -> DeviceMetrics {
        DeviceMetrics {
            kind: match self.device.device_type() {
                super::block::DEVICE_TYPE_BLOCK => "virtio-blk",
                super::net::DEVICE_TYPE_NET => "virtio-net",
                _ => "virtio",
            },
            id: self.device.id(),
            counters: self.device.counters(),
            queues: self.counts.clone(),
        }
    }

    /// The device's host file descriptors (see `VirtioDevice::host_fds`).
    pub fn host_fds(&self) -> Vec<std::os::fd::RawFd> {
        self.device.host_fds()
    }

    /// Host file descriptor `index` of the device is ready: the device
    /// handles it if the driver has it running, and the guest is
    /// interrupted for the queues that changed.
    pub fn host_event(&mut self, index: usize) {
        // The device may touch any of its queues for a host event.
        if !self.activated() || !self.rings_intact(0..self.queues.len()) {
            return;
        }
        let changed = self.device.host_event(&self.mem, index, &mut self.queues);
        for q in 0..self.queues.len().min(32) {
            if changed & (1 << q) != 0 {
                self.interrupt_if_needed(q);
            }
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MAGIC_VALUE,
            REG_VERSION => VERSION,
            REG_DEVICE_ID => self.device.device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                0
            }
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = value,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            REG_DRIVER_FEATURES => {
                if self.status & status::FEATURES_OK != 0 || self.status & status::DRIVER == 0 {
                    log::warn!(
                        "virtio: driver features written in the wrong state ({:#x}); ignored",
                        self.status
                    );
                    return;
                }
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | u64::from(value)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(value) << 32)
                    }
                    _ => {}
                }
            }
            REG_QUEUE_SEL => self.queue_sel = value,
            REG_QUEUE_NUM
            | REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH => {
                if !self.queue_config_writable() {
                    log::warn!(
                        "virtio: queue {} register {offset:#x} written in the wrong state; ignored",
                        self.queue_sel
                    );
                    return;
                }
                let sel = self.queue_sel as usize;
                let (Some(q), Some(req)) = (self.queues.get_mut(sel), self.requested.get_mut(sel))
                else {
                    return;
                };
                // Validity (size a power of two no larger than the maximum,
                // aligned rings inside RAM) is checked when the queue is
                // made ready.
                match offset {
                    REG_QUEUE_NUM => {
                        req.size = value;
                        q.set_size(value as u16);
                    }
                    REG_QUEUE_DESC_LOW => set_low(&mut req.desc, value),
                    REG_QUEUE_DESC_HIGH => set_high(&mut req.desc, value),
                    REG_QUEUE_DRIVER_LOW => set_low(&mut req.avail, value),
                    REG_QUEUE_DRIVER_HIGH => set_high(&mut req.avail, value),
                    REG_QUEUE_DEVICE_LOW => set_low(&mut req.used, value),
                    _ => set_high(&mut req.used, value),
                }
                let (desc, avail, used) = (req.desc, req.avail, req.used);
                q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
                q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
                q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
            }
            REG_QUEUE_READY => {
                let sel = self.queue_sel as usize;
                if sel >= self.queues.len() {
                    return;
                }
                if value == 0 {
                    self.queues[sel].set_ready(false);
                } else if value == 1 {
                    if self.status & status::DRIVER_OK != 0 {
                        log::warn!("virtio: queue {sel} made ready after DRIVER_OK; ignored");
                    } else if let Err(why) = self.check_queue(sel) {
                        log::warn!("virtio: queue {sel} not made ready: {why}");
                    }
                }
            }
            REG_QUEUE_NOTIFY => self.notify(value as usize),
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }
}

/// Whether an access of `len` bytes at `offset` (below the configuration
/// space) is a register access: registers are 32-bit and aligned. Says so
/// in the log when it is not.
fn register_access(offset: u64, len: usize, what: &str) -> bool {
    if len == 4 && offset.is_multiple_of(4) {
        return true;
    }
    log::debug!("virtio-mmio: {len}-byte {what} at {offset:#x}; registers are 32-bit");
    false
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        if !register_access(offset, data.len(), "read") {
            data.fill(0);
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= REG_CONFIG {
            // The device decides which of its configuration fields are
            // writable.
            self.device.write_config(offset - REG_CONFIG, data);
            return;
        }
        if !register_access(offset, data.len(), "write") {
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;
    use vmm_sys_util::eventfd::EventFd;

    #[derive(Default)]
    struct Counters {
        processed: AtomicUsize,
        resets: AtomicUsize,
        acked: AtomicUsize,
        /// The last configuration write's offset, plus one.
        config_written: AtomicUsize,
        /// Host events the device handled, and the queues each changes.
        host_events: AtomicUsize,
        host_changes: AtomicUsize,
    }

    struct Fake(Arc<Counters>);

    impl VirtioDevice for Fake {
        fn device_type(&self) -> u32 {
            2
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn features(&self) -> u64 {
            (1 << VIRTIO_F_VERSION_1) | 0b110
        }
        fn ack_features(&mut self, features: u64) {
            self.0.acked.store(features as usize, Ordering::SeqCst);
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            // The offset itself, little-endian, for the test to read back.
            let bytes = offset.to_le_bytes();
            let n = data.len().min(8);
            data[..n].copy_from_slice(&bytes[..n]);
        }
        fn write_config(&mut self, offset: u64, _: &[u8]) {
            self.0
                .config_written
                .store(offset as usize + 1, Ordering::SeqCst);
        }
        fn host_event(&mut self, _: &GuestMemoryMmap, _: usize, _: &mut [Queue]) -> u32 {
            self.0.host_events.fetch_add(1, Ordering::SeqCst);
            self.0.host_changes.load(Ordering::SeqCst) as u32
        }
        fn process_queue(&mut self, _: &GuestMemoryMmap, _: usize, _: &mut Queue) -> bool {
            self.0.processed.fetch_add(1, Ordering::SeqCst);
            true
        }
        fn reset(&mut self) {
            self.0.resets.fetch_add(1, Ordering::SeqCst);
        }
        fn stats(&self) -> Option<String> {
            Some("fake".into())
        }
    }

    struct Rig {
        t: MmioTransport,
        mem: GuestMemoryMmap,
        irq: EventFd,
        c: Arc<Counters>,
    }

    fn rig() -> Rig {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = evt.try_clone().unwrap();
        let c = Arc::new(Counters::default());
        let t = MmioTransport::new(
            Box::new(Fake(c.clone())),
            mem.clone(),
            Arc::new(Interrupt::new(evt)),
        );
        Rig { t, mem, irq, c }
    }

    impl Rig {
        fn rd(&mut self, off: u64) -> u32 {
            let mut d = [0u8; 4];
            self.t.read(off, &mut d);
            u32::from_le_bytes(d)
        }
        fn wr(&mut self, off: u64, v: u32) {
            self.t.write(off, &v.to_le_bytes());
        }
        fn negotiate(&mut self, features_hi: u32) {
            self.wr(REG_STATUS, status::ACKNOWLEDGE);
            self.wr(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
            self.wr(REG_DRIVER_FEATURES_SEL, 1);
            self.wr(REG_DRIVER_FEATURES, features_hi);
            self.wr(
                REG_STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
            );
        }
        fn queue(&mut self, size: u32, desc: u64, avail: u64, used: u64) {
            self.wr(REG_QUEUE_SEL, 0);
            self.wr(REG_QUEUE_NUM, size);
            self.wr(REG_QUEUE_DESC_LOW, desc as u32);
            self.wr(REG_QUEUE_DESC_HIGH, (desc >> 32) as u32);
            self.wr(REG_QUEUE_DRIVER_LOW, avail as u32);
            self.wr(REG_QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
            self.wr(REG_QUEUE_DEVICE_LOW, used as u32);
            self.wr(REG_QUEUE_DEVICE_HIGH, (used >> 32) as u32);
            self.wr(REG_QUEUE_READY, 1);
        }
        fn valid_queue(&mut self) {
            let mem = self.mem.clone();
            let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
            let (d, a, u) = (vq.desc_table_addr().0, vq.avail_addr().0, vq.used_addr().0);
            self.queue(16, d, a, u);
        }
        fn driver_ok(&mut self) {
            self.wr(
                REG_STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
            );
        }
    }

    /// A disk's backing swapped while the driver runs: the new capacity
    /// in its configuration, the generation moved on, a configuration
    /// interrupt; a size the device refuses changes nothing.
    #[test]
    fn a_new_backing_file_is_announced_by_a_configuration_interrupt() {
        use crate::virtio::block::Block;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = evt.try_clone().unwrap();
        let file = |len: u64| {
            let f = tempfile_of(len);
            (f, len)
        };
        let (old, size) = file(4096);
        let mut t = MmioTransport::new(
            Box::new(Block::new(old, size, false, "disk")),
            mem,
            Arc::new(Interrupt::new(evt)),
        );
        let rd = |t: &mut MmioTransport, off: u64| {
            let mut d = [0u8; 4];
            t.read(off, &mut d);
            u32::from_le_bytes(d)
        };
        let capacity = |t: &mut MmioTransport| rd(t, REG_CONFIG);
        assert_eq!(capacity(&mut t), 8);
        // Before the driver runs: no interrupt, the generation moves on.
        let (f, len) = file(8192);
        t.replace_backing(f.into(), len).unwrap();
        assert_eq!(capacity(&mut t), 16);
        assert_eq!(rd(&mut t, REG_CONFIG_GENERATION), 1);
        assert!(irq.read().is_err(), "no interrupt before DRIVER_OK");
        let wr = |t: &mut MmioTransport, off: u64, v: u32| t.write(off, &v.to_le_bytes());
        wr(&mut t, REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        wr(&mut t, REG_DRIVER_FEATURES_SEL, 1);
        wr(&mut t, REG_DRIVER_FEATURES, 1); // VIRTIO_F_VERSION_1
        let ok = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        wr(&mut t, REG_STATUS, ok);
        wr(&mut t, REG_STATUS, ok | status::DRIVER_OK);
        let (f, len) = file(1 << 20);
        t.replace_backing(f.into(), len).unwrap();
        assert_eq!(capacity(&mut t), 2048);
        assert_eq!(rd(&mut t, REG_CONFIG_GENERATION), 2);
        assert_eq!(rd(&mut t, REG_INTERRUPT_STATUS), INTERRUPT_CONFIG);
        assert_eq!(irq.read().unwrap(), 1);
        // A size that is not whole sectors: refused, nothing changes.
        let (f, len) = file(1000);
        assert!(t
            .replace_backing(f.into(), len)
            .unwrap_err()
            .contains("512"));
        assert_eq!(capacity(&mut t), 2048);
        assert_eq!(rd(&mut t, REG_CONFIG_GENERATION), 2);
    }

    /// A temporary file of `len` bytes (removed when dropped).
    fn tempfile_of(len: u64) -> std::fs::File {
        let f = vmm_sys_util::tempfile::TempFile::new().unwrap().into_file();
        f.set_len(len).unwrap();
        f
    }

    #[test]
    fn identity_registers() {
        let mut r = rig();
        assert_eq!(r.rd(REG_MAGIC), 0x7472_6976);
        assert_eq!(r.rd(REG_VERSION), 2);
        assert_eq!(r.rd(REG_DEVICE_ID), 2);
        assert_eq!(r.rd(REG_QUEUE_NUM_MAX), 16);
        r.wr(REG_DEVICE_FEATURES_SEL, 1);
        assert_eq!(r.rd(REG_DEVICE_FEATURES), 1);
        r.wr(REG_DEVICE_FEATURES_SEL, 0);
        assert_eq!(r.rd(REG_DEVICE_FEATURES), 0b110);
        assert_eq!(r.rd(REG_VENDOR_ID), 0x554d_4551);
        assert_eq!(r.rd(REG_CONFIG_GENERATION), 0);
        // The configuration space at its offset inside it, both ways.
        let mut cfg = [0u8; 2];
        r.t.read(REG_CONFIG + 0x104, &mut cfg);
        assert_eq!(cfg, [4, 1]);
        r.t.write(REG_CONFIG + 0x21, &[1, 2]);
        assert_eq!(r.c.config_written.load(Ordering::SeqCst), 0x22);
        assert_eq!(r.t.metrics().kind, "virtio-blk");
    }

    /// Queue addresses take both 32-bit halves, each written alone keeping
    /// the other: rings above 4 GiB are found there.
    #[test]
    fn queue_addresses_above_4_gib_take_both_halves() {
        let mut r = rig();
        let high = GuestAddress(1 << 32);
        r.t.mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000), (high, 0x10_0000)])
            .unwrap();
        r.negotiate(1);
        r.wr(REG_QUEUE_SEL, 0);
        r.wr(REG_QUEUE_NUM, 16);
        // High halves first, then low ones, one of them twice: the second
        // replaces the first.
        for (hi, lo) in [
            (REG_QUEUE_DESC_HIGH, REG_QUEUE_DESC_LOW),
            (REG_QUEUE_DRIVER_HIGH, REG_QUEUE_DRIVER_LOW),
            (REG_QUEUE_DEVICE_HIGH, REG_QUEUE_DEVICE_LOW),
        ] {
            r.wr(hi, 1);
            r.wr(lo, 0xffff_f000);
        }
        r.wr(REG_QUEUE_DESC_LOW, 0x1000);
        r.wr(REG_QUEUE_DRIVER_LOW, 0x2000);
        r.wr(REG_QUEUE_DEVICE_LOW, 0x3000);
        r.wr(REG_QUEUE_READY, 1);
        assert_eq!(r.rd(REG_QUEUE_READY), 1);
        let q = &r.t.queues[0];
        assert_eq!(
            (q.desc_table(), q.avail_ring(), q.used_ring()),
            ((1 << 32) + 0x1000, (1 << 32) + 0x2000, (1 << 32) + 0x3000)
        );
        // A high half rewritten to 0 brings the ring below 4 GiB.
        let mut r2 = rig();
        r2.negotiate(1);
        r2.wr(REG_QUEUE_NUM, 16);
        r2.wr(REG_QUEUE_DESC_LOW, 0x1000);
        r2.wr(REG_QUEUE_DESC_HIGH, 7);
        r2.wr(REG_QUEUE_DESC_HIGH, 0);
        assert_eq!(r2.t.queues[0].desc_table(), 0x1000);
    }

    /// Both halves of the driver's features reach the device, each written
    /// alone keeping the other; EVENT_IDX (bit 29) turns on the queues'
    /// event index.
    #[test]
    fn driver_features_take_both_halves_and_event_idx_reaches_the_queues() {
        let mut r = rig();
        r.wr(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        r.wr(REG_DRIVER_FEATURES_SEL, 1);
        r.wr(REG_DRIVER_FEATURES, 1);
        r.wr(REG_DRIVER_FEATURES_SEL, 0);
        r.wr(REG_DRIVER_FEATURES, 0b100);
        r.wr(REG_DRIVER_FEATURES, 0b010);
        r.wr(REG_DRIVER_FEATURES_SEL, 5); // no such half: ignored
        r.wr(REG_DRIVER_FEATURES, 0xffff_ffff);
        r.wr(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(r.rd(REG_STATUS) & status::FEATURES_OK, 0);
        assert_eq!(r.c.acked.load(Ordering::SeqCst), (1 << 32) | 0b010);
        assert!(!r.t.queues[0].event_idx_enabled());
        // A device that offers EVENT_IDX, a driver that takes it.
        let mut r = rig();
        r.t.device = Box::new(EventIdxFake(Fake(r.c.clone())));
        r.wr(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        r.wr(REG_DRIVER_FEATURES_SEL, 0);
        r.wr(
            REG_DRIVER_FEATURES,
            1 << super::super::VIRTIO_RING_F_EVENT_IDX,
        );
        r.wr(REG_DRIVER_FEATURES_SEL, 1);
        r.wr(REG_DRIVER_FEATURES, 1);
        r.wr(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_ne!(r.rd(REG_STATUS) & status::FEATURES_OK, 0);
        assert!(r.t.queues[0].event_idx_enabled());
    }

    /// The fake device, offering VIRTIO_RING_F_EVENT_IDX too.
    struct EventIdxFake(Fake);

    impl VirtioDevice for EventIdxFake {
        fn device_type(&self) -> u32 {
            self.0.device_type()
        }
        fn queue_max_sizes(&self) -> &[u16] {
            self.0.queue_max_sizes()
        }
        fn features(&self) -> u64 {
            self.0.features() | (1 << super::super::VIRTIO_RING_F_EVENT_IDX)
        }
        fn ack_features(&mut self, features: u64) {
            self.0.ack_features(features)
        }
        fn read_config(&self, offset: u64, data: &mut [u8]) {
            self.0.read_config(offset, data)
        }
        fn write_config(&mut self, offset: u64, data: &[u8]) {
            self.0.write_config(offset, data)
        }
        fn process_queue(&mut self, m: &GuestMemoryMmap, i: usize, q: &mut Queue) -> bool {
            self.0.process_queue(m, i, q)
        }
        fn reset(&mut self) {
            self.0.reset()
        }
    }

    /// Refused features leave the status as the driver wrote it but for
    /// FEATURES_OK: it reads back ACKNOWLEDGE and DRIVER.
    #[test]
    fn refused_features_keep_the_drivers_other_status_bits() {
        let mut r = rig();
        r.negotiate(0);
        assert_eq!(r.rd(REG_STATUS), status::ACKNOWLEDGE | status::DRIVER);
    }

    /// A host event reaches the device only while the driver runs it, and
    /// interrupts the guest for the queues the device says changed.
    #[test]
    fn host_events_reach_a_running_device_and_interrupt_for_changed_queues() {
        let mut r = rig();
        r.c.host_changes.store(1, Ordering::SeqCst);
        r.t.host_event(0);
        assert_eq!(r.c.host_events.load(Ordering::SeqCst), 0, "not set up");
        r.negotiate(1);
        r.valid_queue();
        r.t.host_event(0);
        assert_eq!(r.c.host_events.load(Ordering::SeqCst), 0, "no DRIVER_OK");
        r.driver_ok();
        r.c.host_changes.store(0, Ordering::SeqCst);
        r.t.host_event(0);
        assert_eq!(r.c.host_events.load(Ordering::SeqCst), 1);
        assert!(r.irq.read().is_err(), "nothing changed, no interrupt");
        r.c.host_changes.store(1, Ordering::SeqCst);
        r.t.host_event(0);
        assert_eq!(r.c.host_events.load(Ordering::SeqCst), 2);
        assert_eq!(r.irq.read().unwrap(), 1);
        assert_eq!(r.t.metrics().queues, vec![(0, 1)]);
    }

    #[test]
    fn features_ok_needs_version_1_and_only_offered_bits() {
        let mut r = rig();
        r.negotiate(0); // no VERSION_1
        assert_eq!(r.rd(REG_STATUS) & status::FEATURES_OK, 0);
        let mut r = rig();
        r.wr(REG_STATUS, status::ACKNOWLEDGE | status::DRIVER);
        r.wr(REG_DRIVER_FEATURES_SEL, 0);
        r.wr(REG_DRIVER_FEATURES, 0b1000); // not offered
        r.wr(REG_DRIVER_FEATURES_SEL, 1);
        r.wr(REG_DRIVER_FEATURES, 1);
        r.wr(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r.rd(REG_STATUS) & status::FEATURES_OK, 0);
        let mut r = rig();
        r.negotiate(1);
        assert_ne!(r.rd(REG_STATUS) & status::FEATURES_OK, 0);
        assert_eq!(r.c.acked.load(Ordering::SeqCst), 1 << 32);
    }

    #[test]
    fn driver_features_before_driver_status_are_ignored() {
        let mut r = rig();
        r.wr(REG_DRIVER_FEATURES_SEL, 1);
        r.wr(REG_DRIVER_FEATURES, 1);
        r.wr(
            REG_STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        assert_eq!(r.rd(REG_STATUS) & status::FEATURES_OK, 0);
    }

    #[test]
    fn invalid_queues_are_never_made_ready() {
        // Each with one fault alone.
        for (what, size, desc, avail, used) in [
            ("size 0", 0u32, 0x1000u64, 0x2000u64, 0x3000u64),
            ("size not a power of two", 12, 0x1000, 0x2000, 0x3000),
            ("size above the maximum", 32, 0x1000, 0x2000, 0x3000),
            ("rings outside RAM", 16, 0x10_0000 - 8, 0x2000, 0x3000),
            ("misaligned descriptor table", 16, 0x1001, 0x2000, 0x3000),
            ("misaligned driver area", 16, 0x1000, 0x2001, 0x3000),
            ("misaligned device area", 16, 0x1000, 0x2000, 0x3002),
        ] {
            let mut r = rig();
            r.negotiate(1);
            r.queue(size, desc, avail, used);
            assert_eq!(r.rd(REG_QUEUE_READY), 0, "{what}");
            // Notifications for it do nothing.
            r.driver_ok();
            r.wr(REG_QUEUE_NOTIFY, 0);
            assert_eq!(r.c.processed.load(Ordering::SeqCst), 0, "{what}");
        }
        // The largest size the device takes, and a smaller power of two.
        for size in [16, 8] {
            let mut r = rig();
            r.negotiate(1);
            r.queue(size, 0x1000, 0x2000, 0x3000);
            assert_eq!(r.rd(REG_QUEUE_READY), 1, "size {size}");
        }
    }

    #[test]
    fn notifications_in_the_wrong_state_are_ignored() {
        let mut r = rig();
        r.negotiate(1);
        r.valid_queue();
        assert_eq!(r.rd(REG_QUEUE_READY), 1);
        r.wr(REG_QUEUE_NOTIFY, 0); // before DRIVER_OK
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 0);
        r.driver_ok();
        r.wr(REG_QUEUE_NOTIFY, 7); // no such queue
        r.wr(REG_QUEUE_NOTIFY, u32::MAX);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 0);
        assert!(r.irq.read().is_err());
    }

    #[test]
    fn a_notification_after_driver_ok_is_processed_and_interrupts() {
        let mut r = rig();
        r.negotiate(1);
        r.valid_queue();
        r.driver_ok();
        assert_ne!(r.rd(REG_STATUS) & status::DRIVER_OK, 0);
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 1);
        assert_eq!(r.irq.read().unwrap(), 1);
        assert_eq!(r.rd(REG_INTERRUPT_STATUS), INTERRUPT_USED_RING);
        // Before the driver acknowledges, more work raises nothing more:
        // its handler has yet to look at the ring.
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 2);
        assert!(r.irq.read().is_err());
        r.wr(REG_INTERRUPT_ACK, INTERRUPT_USED_RING);
        assert_eq!(r.rd(REG_INTERRUPT_STATUS), 0);
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.irq.read().unwrap(), 1);
        assert_eq!(
            r.t.device_stats().as_deref(),
            Some("fake; queue 0: 3 notifications, 2 interrupts")
        );
    }

    #[test]
    fn a_broken_avail_ring_needs_reset_until_the_driver_resets() {
        let mut r = rig();
        r.negotiate(1);
        let mem = r.mem.clone();
        let vq = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
        let (d, a, u) = (vq.desc_table_addr().0, vq.avail_addr().0, vq.used_addr().0);
        r.queue(16, d, a, u);
        r.driver_ok();
        // A whole ring available (the fake takes nothing): still sane.
        vq.avail().idx().store(16);
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 1);
        assert_eq!(r.rd(REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
        r.wr(REG_INTERRUPT_ACK, u32::MAX);
        let _ = r.irq.read();
        // One more than a ring: broken. The device does not touch it, says
        // so in its status and interrupts for a configuration change.
        vq.avail().idx().store(17);
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 1);
        let st = r.rd(REG_STATUS);
        assert_ne!(st & status::DEVICE_NEEDS_RESET, 0, "status {st:#x}");
        assert_ne!(st & status::DRIVER_OK, 0, "status {st:#x}");
        assert_eq!(r.rd(REG_INTERRUPT_STATUS), INTERRUPT_CONFIG);
        assert_eq!(r.irq.read().unwrap(), 1);
        // Until a reset, the queue stays out of use, whatever the driver
        // writes to the ring or the status.
        vq.avail().idx().store(1);
        r.wr(REG_QUEUE_NOTIFY, 0);
        r.t.host_event(0);
        r.driver_ok();
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 1);
        assert_ne!(r.rd(REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
        // A reset clears it, and a driver that sets up again is served.
        r.wr(REG_STATUS, 0);
        assert_eq!(r.rd(REG_STATUS), 0);
        assert_eq!(r.rd(REG_INTERRUPT_STATUS), 0);
        r.negotiate(1);
        r.queue(16, d, a, u);
        r.driver_ok();
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 2);
        assert_eq!(r.rd(REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
    }

    /// Found by the virtio_blk fuzz target
    /// (fuzz/regressions/virtio_blk/driver-sets-needs-reset).
    #[test]
    fn the_driver_cannot_set_device_needs_reset() {
        let mut r = rig();
        r.wr(REG_STATUS, status::DEVICE_NEEDS_RESET | status::ACKNOWLEDGE);
        assert_eq!(r.rd(REG_STATUS), status::ACKNOWLEDGE);
        r.negotiate(1);
        r.valid_queue();
        r.wr(
            REG_STATUS,
            status::ACKNOWLEDGE
                | status::DRIVER
                | status::FEATURES_OK
                | status::DRIVER_OK
                | status::DEVICE_NEEDS_RESET,
        );
        assert_eq!(r.rd(REG_STATUS) & status::DEVICE_NEEDS_RESET, 0);
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn queue_registers_are_frozen_after_driver_ok() {
        let mut r = rig();
        r.negotiate(1);
        r.valid_queue();
        r.driver_ok();
        r.wr(REG_QUEUE_READY, 0);
        r.wr(REG_QUEUE_NUM, 4);
        r.wr(REG_QUEUE_DESC_LOW, 0xdead_0000);
        r.wr(REG_QUEUE_READY, 1);
        assert_eq!(r.t.queues[0].size(), 16);
        assert_eq!(r.t.queues[0].desc_table(), 0x1000);
    }

    #[test]
    fn status_bits_cannot_be_cleared_but_reset_clears_all() {
        let mut r = rig();
        r.negotiate(1);
        r.valid_queue();
        r.driver_ok();
        r.wr(REG_STATUS, status::ACKNOWLEDGE);
        assert_ne!(r.rd(REG_STATUS) & status::DRIVER_OK, 0);
        r.wr(REG_STATUS, 0);
        assert_eq!(r.rd(REG_STATUS), 0);
        assert_eq!(r.rd(REG_QUEUE_READY), 0);
        assert_eq!(r.c.resets.load(Ordering::SeqCst), 1);
        r.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(r.c.processed.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn odd_accesses_are_harmless() {
        let mut r = rig();
        let mut d = [0xffu8; 2];
        r.t.read(REG_MAGIC, &mut d);
        assert_eq!(d, [0, 0]);
        let mut d = [0xffu8; 4];
        r.t.read(REG_MAGIC + 1, &mut d);
        assert_eq!(d, [0; 4]);
        r.t.write(REG_STATUS, &[1]);
        assert_eq!(r.rd(REG_STATUS), 0);
        r.wr(0x0c8, 5); // unknown register
        r.wr(REG_DRIVER_FEATURES_SEL, 99);
        r.wr(REG_QUEUE_SEL, 99);
        assert_eq!(r.rd(REG_QUEUE_NUM_MAX), 0);
        r.wr(REG_QUEUE_NUM, 8);
        r.wr(REG_QUEUE_READY, 1);
        assert_eq!(r.rd(REG_QUEUE_READY), 0);
    }

    /// A hostile driver: 200 000 register reads and writes with random
    /// offsets, sizes and values (a fixed xorshift seed, so a failure
    /// repeats), with a valid set-up thrown in now and then so that
    /// notifications reach the device. Nothing panics, and the transport's
    /// rules hold throughout: DRIVER_OK never without FEATURES_OK, no queue
    /// ready outside RAM or with a size the device does not take.
    #[test]
    fn random_register_sequences_keep_the_rules() {
        let mut r = rig();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let regs = [
            REG_STATUS,
            REG_QUEUE_SEL,
            REG_QUEUE_NUM,
            REG_QUEUE_READY,
            REG_QUEUE_NOTIFY,
            REG_QUEUE_DESC_LOW,
            REG_QUEUE_DESC_HIGH,
            REG_QUEUE_DRIVER_LOW,
            REG_QUEUE_DEVICE_LOW,
            REG_DRIVER_FEATURES,
            REG_DRIVER_FEATURES_SEL,
            REG_INTERRUPT_ACK,
        ];
        for i in 0..200_000u32 {
            let v = next();
            if i % 5000 == 0 {
                r.negotiate(1);
                r.valid_queue();
                r.driver_ok();
            }
            let off = if v & 1 == 0 {
                regs[(v >> 8) as usize % regs.len()]
            } else {
                (v >> 8) % 0x200
            };
            let value = match (v >> 40) % 4 {
                0 => 0,
                1 => (v >> 20) as u32 & 0xff,
                2 => 1 << ((v >> 20) % 32),
                _ => (v >> 16) as u32,
            };
            let width = [1usize, 2, 4, 8][(v >> 60) as usize % 4];
            if (v >> 12) & 3 == 0 {
                let mut d = vec![0u8; width];
                r.t.read(off, &mut d);
            } else {
                let bytes = u64::from(value).to_le_bytes();
                r.t.write(off, &bytes[..width]);
            }
            let st = r.t.status;
            assert!(
                st & status::DRIVER_OK == 0 || st & status::FEATURES_OK != 0,
                "step {i}: status {st:#x}"
            );
            for q in &r.t.queues {
                if q.ready() {
                    assert!(q.is_valid(&r.mem), "step {i}: a ready queue outside RAM");
                    assert!(q.size().is_power_of_two() && q.size() <= 16, "step {i}");
                }
            }
        }
        // The device did get work: the set-ups made notifications count.
        assert!(r.c.processed.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn a_restored_transport_reads_back_as_the_saved_one_and_serves_its_queue() {
        let mut a = rig();
        a.negotiate(1);
        a.valid_queue();
        a.driver_ok();
        a.wr(REG_QUEUE_NOTIFY, 0);
        let _ = a.irq.read();
        a.wr(REG_QUEUE_SEL, 0);
        let mut snap = a.t.save();
        // An unacknowledged interrupt is part of the state.
        snap.interrupt_status = INTERRUPT_USED_RING;
        let mut b = rig();
        b.t.restore(&snap).unwrap();
        assert_eq!(b.t.save(), snap);
        for reg in [REG_STATUS, REG_QUEUE_READY, REG_INTERRUPT_STATUS] {
            assert_eq!(
                b.rd(reg),
                a.rd(reg) | if reg == REG_INTERRUPT_STATUS { 1 } else { 0 }
            );
        }
        // The pending interrupt is raised again; the features are handed to
        // the new device; its queue is served.
        assert_eq!(b.irq.read().unwrap(), 1);
        assert_ne!(b.c.acked.load(Ordering::SeqCst) & (1 << 32), 0);
        b.wr(REG_QUEUE_NOTIFY, 0);
        assert_eq!(b.c.processed.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_state_that_does_not_fit_is_refused_and_changes_nothing() {
        let mut a = rig();
        a.negotiate(1);
        a.valid_queue();
        a.driver_ok();
        let good = a.t.save();
        let mut b = rig();
        let before = b.t.save();
        let mut wrong = good.clone();
        wrong.device_type = 1;
        assert!(b.t.restore(&wrong).unwrap_err().contains("type 1"));
        let mut wrong = good.clone();
        wrong.queues[0].used_ring = 0x2000_0000;
        assert!(b.t.restore(&wrong).unwrap_err().contains("guest memory"));
        let mut wrong = good.clone();
        wrong.queues[0].max_size = 32;
        assert!(b.t.restore(&wrong).unwrap_err().contains("largest size"));
        let mut wrong = good.clone();
        wrong.queues.clear();
        assert!(b.t.restore(&wrong).unwrap_err().contains("0 queues"));
        let mut wrong = good.clone();
        wrong.driver_features |= 1 << 40;
        assert!(b.t.restore(&wrong).unwrap_err().contains("does not offer"));
        let mut wrong = good;
        wrong.device = crate::virtio::DeviceSnapshot::Net {
            mac: "02:00:00:00:00:01".into(),
            rx_frame: vec![],
        };
        assert!(b.t.restore(&wrong).is_err());
        assert_eq!(b.t.save(), before);
    }
}
