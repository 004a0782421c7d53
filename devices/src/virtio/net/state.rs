//! virtio-net's part of a snapshot: nothing in flight (the transmitted
//! buffers go back first), then the MAC and the frame held from the TAP.

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::{Net, TX_QUEUE};
use crate::virtio::DeviceSnapshot;

impl Net {
    /// Before a snapshot: the transmitted buffers not yet returned go
    /// back now. Returns the mask of queues whose used ring changed.
    pub(super) fn return_held_tx(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> u32 {
        if self.tx_unreturned.is_empty() {
            self.disarm_tx_timer();
            return 0;
        }
        match queues.get_mut(TX_QUEUE) {
            Some(q) => u32::from(self.complete_tx(mem, q)) << TX_QUEUE,
            None => 0,
        }
    }

    /// The card's state: its MAC and the frame it holds from the TAP.
    pub(super) fn snapshot(&self) -> DeviceSnapshot {
        DeviceSnapshot::Net {
            mac: self.mac.to_string(),
            rx_frame: self.rx_buf[..self.rx_pending].to_vec(),
        }
    }

    /// Puts a saved state back: the MAC, the held frame.
    pub(super) fn restore_snapshot(&mut self, snap: &DeviceSnapshot) -> Result<(), String> {
        let DeviceSnapshot::Net { mac, rx_frame } = snap else {
            return Err(format!(
                "virtio-net given the state of another device: {snap:?}"
            ));
        };
        if rx_frame.len() > self.rx_buf.len() {
            return Err(format!(
                "virtio-net: a held frame of {} bytes, more than {}",
                rx_frame.len(),
                self.rx_buf.len()
            ));
        }
        self.mac = mac
            .parse()
            .map_err(|e| format!("virtio-net: MAC '{mac}': {e}"))?;
        self.rx_buf[..rx_frame.len()].copy_from_slice(rx_frame);
        self.rx_pending = rx_frame.len();
        self.tx_unreturned.clear();
        Ok(())
    }
}
