//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2): the register
//! window the driver programs, feature negotiation, queue setup and
//! validation, device status and reset, configuration space, and queue
//! notifications. Everything the guest writes is checked; a misbehaving
//! driver gets its write ignored or the device marked DEVICE_NEEDS_RESET,
//! never a panic.

use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use super::{status, Interrupt, VirtioDevice, INTERRUPT_USED_RING, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;

/// Size of a device's register window.
pub const MMIO_WINDOW: u64 = 0x1000;

const MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // as QEMU and Firecracker report

// Register offsets.
const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
const REG_CONFIG: u64 = 0x100;

/// Where the driver writes queue notifications (for ioeventfd).
pub const QUEUE_NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;

/// A virtio device behind its MMIO register window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    interrupt: Arc<Interrupt>,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
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
        MmioTransport {
            device,
            mem,
            interrupt,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
        }
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The device's interrupt.
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// Number of queues.
    pub fn queue_count(&self) -> usize {
        self.queues.len()
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

    fn mark_needs_reset(&mut self, why: &str) {
        log::warn!(
            "virtio: device type {} needs reset: {why}",
            self.device.device_type()
        );
        if self.status & status::DRIVER_OK != 0 {
            self.status |= status::DEVICE_NEEDS_RESET;
            self.interrupt.signal(super::INTERRUPT_CONFIG);
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
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
        if !self.device.process_queue(&self.mem, index, queue) {
            return;
        }
        match queue.needs_notification(&self.mem) {
            Ok(true) => self.interrupt.signal(INTERRUPT_USED_RING),
            Ok(false) => {}
            Err(e) => {
                let why = format!("queue {index}: {e}");
                self.mark_needs_reset(&why);
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
                let Some(q) = self.selected_queue() else {
                    return;
                };
                match offset {
                    // Validity (power of two, at most the maximum) is checked
                    // when the queue is made ready.
                    REG_QUEUE_NUM => q.set_size(value as u16),
                    REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(value), None),
                    REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(value)),
                    REG_QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(value), None),
                    REG_QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(value)),
                    REG_QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(value), None),
                    _ => q.set_used_ring_address(None, Some(value)),
                }
            }
            REG_QUEUE_READY => {
                let sel = self.queue_sel;
                let writable = self.status & status::DRIVER_OK == 0;
                let mem = self.mem.clone();
                let Some(q) = self.selected_queue() else {
                    return;
                };
                if value == 1 {
                    if !writable {
                        log::warn!("virtio: queue {sel} made ready after DRIVER_OK; ignored");
                    } else if q.is_valid(&mem) {
                        q.set_ready(true);
                    } else {
                        log::warn!(
                            "virtio: queue {sel} is invalid (size {} of at most {}, a power of two; rings inside guest RAM and aligned); not made ready",
                            q.size(),
                            q.max_size()
                        );
                    }
                } else if value == 0 {
                    q.set_ready(false);
                }
            }
            REG_QUEUE_NOTIFY => self.notify(value as usize),
            REG_INTERRUPT_ACK => self.interrupt.ack(value),
            REG_STATUS => self.write_status(value),
            _ => log::debug!("virtio-mmio: write of unknown register {offset:#x}"),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= REG_CONFIG {
            self.device.read_config(offset - REG_CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!(
                "virtio-mmio: {}-byte read at {offset:#x}; registers are 32-bit",
                data.len()
            );
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
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!(
                "virtio-mmio: {}-byte write at {offset:#x}; registers are 32-bit",
                data.len()
            );
            return;
        }
        let v = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, v);
    }
}
