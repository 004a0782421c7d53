//! virtio-net over a TAP device (virtio 1.2, 5.1): a MAC address, link
//! status, receive from the TAP into the guest's RX buffers and transmit
//! what the guest queues. Frames keep the 12-byte virtio-net header end to
//! end (the TAP is opened with the same header), so checksum and TCP
//! segmentation offloads pass through when the TAP supports them. A frame
//! that is too short, too long or in a malformed chain is dropped and
//! counted; the queues keep running.

use std::io;
use std::os::fd::{AsRawFd, RawFd};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestMemoryBackend, GuestMemoryMmap};

use super::queue::{self, Chains};
use super::{VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use crate::GuestSlice;
use vmm_sys_util::timerfd::TimerFd;

mod backend;
mod mac;
mod state;
pub mod tap;

pub use backend::{offload, NetBackend};

pub use mac::MacAddr;

/// Virtio device id of a network card.
pub const DEVICE_TYPE_NET: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_NET;
/// Queue size offered for each queue.
pub const QUEUE_SIZE: u16 = 256;
/// Length of struct virtio_net_hdr_v1 (with num_buffers), the header every
/// frame starts with under VIRTIO_F_VERSION_1.
pub const VNET_HDR_LEN: usize = 12;
/// Largest frame with its header: a 64 KiB TSO frame, its Ethernet and VLAN
/// headers, and the virtio-net header.
pub const MAX_FRAME_LEN: usize = 65562;

/// How long a transmitted frame's buffer may wait before it goes back to
/// the guest (sooner with the next received frames).
pub const TX_COMPLETION_DELAY: std::time::Duration = std::time::Duration::from_micros(50);

/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;

/// Feature bits (virtio 1.2, 5.1.3).
pub mod features {
    use virtio_bindings::virtio_net as n;
    /// The device takes frames with partial checksums.
    pub const CSUM: u32 = n::VIRTIO_NET_F_CSUM;
    /// The driver takes frames with partial checksums.
    pub const GUEST_CSUM: u32 = n::VIRTIO_NET_F_GUEST_CSUM;
    /// The device has a MAC address in its configuration.
    pub const MAC: u32 = n::VIRTIO_NET_F_MAC;
    /// The driver takes TSO frames, IPv4.
    pub const GUEST_TSO4: u32 = n::VIRTIO_NET_F_GUEST_TSO4;
    /// The driver takes frames spread over several buffers.
    pub const MRG_RXBUF: u32 = n::VIRTIO_NET_F_MRG_RXBUF;
    /// The driver takes TSO frames, IPv6.
    pub const GUEST_TSO6: u32 = n::VIRTIO_NET_F_GUEST_TSO6;
    /// The device takes TSO frames, IPv4.
    pub const HOST_TSO4: u32 = n::VIRTIO_NET_F_HOST_TSO4;
    /// The device takes TSO frames, IPv6.
    pub const HOST_TSO6: u32 = n::VIRTIO_NET_F_HOST_TSO6;
    /// The configuration has a link status.
    pub const STATUS: u32 = n::VIRTIO_NET_F_STATUS;
}

/// Link status bit in the configuration.
const VIRTIO_NET_S_LINK_UP: u16 = virtio_bindings::virtio_net::VIRTIO_NET_S_LINK_UP as u16;

/// Counters of what the device did, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    /// Frames handed to the guest.
    pub rx_frames: u64,
    /// Their bytes, headers included.
    pub rx_bytes: u64,
    /// Frames from the TAP dropped: shorter than the header, or no room in
    /// the guest's buffer, or a buffer chain that is not guest memory.
    pub rx_dropped: u64,
    /// Frames the guest sent that reached the TAP.
    pub tx_frames: u64,
    /// Their bytes, headers included.
    pub tx_bytes: u64,
    /// Frames from the guest dropped as malformed: shorter than the header,
    /// longer than the maximum, device-writable or outside guest memory.
    pub tx_dropped: u64,
    /// Frames the TAP refused (interface down, a header it rejects...).
    pub tx_errors: u64,
}

/// What became of the pending RX frame.
enum Placed {
    /// Not enough RX buffers: the frame waits.
    NoRoom,
    /// Handed over or dropped; false if the used ring could not be written.
    Done(bool),
}

/// A virtio network device on a TAP (or any `NetBackend`).
pub struct Net {
    backend: Box<dyn NetBackend>,
    mac: MacAddr,
    /// Whether the backend takes the offload settings.
    offloads: bool,
    /// The driver accepted VIRTIO_NET_F_MRG_RXBUF: a frame may span
    /// several RX buffers.
    mergeable: bool,
    /// A frame read from the backend that no RX buffer has taken yet.
    rx_buf: Vec<u8>,
    rx_pending: usize,
    tx_buf: Vec<u8>,
    /// The TX chains of a pass, kept between notifications so that
    /// transmission does not allocate.
    tx_chains: Chains,
    /// Transmitted chains whose buffers are not returned yet, and the timer
    /// that returns them at the latest TX_COMPLETION_DELAY after the first.
    tx_unreturned: Vec<(u16, u32)>,
    tx_timer: TimerFd,
    tx_armed: bool,
    /// What the device did.
    pub stats: NetStats,
}

impl Net {
    /// A device with `mac` on `backend`. Offloads are offered if the
    /// backend accepts them, and turned on as the driver accepts them.
    pub fn new(mut backend: Box<dyn NetBackend>, mac: MacAddr) -> io::Result<Self> {
        let tx_timer = TimerFd::new()?;
        // Non-blocking: the event loop reads it only when ready, but an
        // expiry may have been cleared by then.
        // SAFETY: F_GETFL and F_SETFL on a descriptor this function owns,
        // with integer arguments only.
        unsafe {
            let fd = tx_timer.as_raw_fd();
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let all = offload::CSUM | offload::TSO4 | offload::TSO6;
        let offloads = backend.set_offload(all).is_ok() && backend.set_offload(0).is_ok();
        if !offloads {
            log::info!("virtio-net: the TAP takes no offloads; checksums and segmentation stay in the guest");
        }
        Ok(Net {
            backend,
            mac,
            offloads,
            mergeable: false,
            rx_buf: vec![0; MAX_FRAME_LEN],
            rx_pending: 0,
            tx_buf: Vec::with_capacity(MAX_FRAME_LEN),
            tx_chains: Chains::with_capacity(usize::from(QUEUE_SIZE), 2),
            tx_unreturned: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            tx_timer,
            tx_armed: false,
            stats: NetStats::default(),
        })
    }

    /// Moves frames from the backend into the RX queue until the backend
    /// has none (it must be drained: it is watched edge-triggered) or the
    /// guest has no room left (the frame waits for the next RX
    /// notification). Returns whether the used ring changed.
    fn receive(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        let mut used = false;
        if !queue.ready() {
            return false;
        }
        loop {
            if self.rx_pending == 0 {
                match self.backend.read_frame(&mut self.rx_buf) {
                    Ok(n) if n < VNET_HDR_LEN => {
                        log::debug!("virtio-net: dropping a {n}-byte frame from the TAP");
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Ok(n) => self.rx_pending = n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            log::warn!("virtio-net: reading the TAP failed: {e}");
                        }
                        break;
                    }
                }
            }
            match self.place_frame(mem, queue) {
                Placed::NoRoom => {
                    // Ask to be told of the next buffer; if some came in
                    // meanwhile, go on.
                    if queue::want_more(mem, queue) {
                        continue;
                    }
                    break;
                }
                Placed::Done(ok) => {
                    self.rx_pending = 0;
                    used = true;
                    if !ok {
                        break;
                    }
                }
            }
        }
        used
    }

    /// Writes the pending frame into the guest's RX buffers: one chain, or
    /// with VIRTIO_NET_F_MRG_RXBUF as many as it needs (num_buffers in the
    /// header says how many). Chains that cannot take it (device-readable
    /// descriptors, outside guest memory, too small without merging) are
    /// returned empty and the frame is dropped.
    fn place_frame(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> Placed {
        let len = self.rx_pending;
        // Find the chains first: their writable space, in order.
        let mut chains: Vec<(u16, Vec<(vm_memory::GuestAddress, usize)>)> = Vec::new();
        let mut room = 0usize;
        let mut bad = false;
        while room < len {
            if (!self.mergeable && !chains.is_empty()) || chains.len() >= usize::from(queue.size())
            {
                // One buffer without merging; with merging, a whole ring
                // that cannot hold the frame never will.
                break;
            }
            let Some(chain) = queue.pop_descriptor_chain(mem) else {
                // Not enough buffers yet: give back what was taken, keep
                // the frame for the driver's next RX notification.
                for _ in 0..chains.len() {
                    queue.go_to_previous_position();
                }
                return Placed::NoRoom;
            };
            let head = chain.head_index();
            let mut pieces = Vec::new();
            for d in chain {
                if !d.is_write_only() || !mem.check_range(d.addr(), d.len() as usize) {
                    bad = true;
                    break;
                }
                room += d.len() as usize;
                pieces.push((d.addr(), d.len() as usize));
            }
            chains.push((head, pieces));
            if bad {
                break;
            }
        }
        let fits = !bad && room >= len && (self.mergeable || chains.len() == 1);
        if fits {
            // num_buffers (1 without merging, where the field still exists).
            let n = chains.len() as u16;
            self.rx_buf[10..12].copy_from_slice(&n.to_le_bytes());
        }
        let mut written = 0usize;
        let mut ok = true;
        for (head, pieces) in &chains {
            let mut this = 0usize;
            if fits {
                for &(addr, cap) in pieces {
                    if written == len {
                        break;
                    }
                    let n = cap.min(len - written);
                    if mem
                        .write_slice(&self.rx_buf[written..written + n], addr)
                        .is_err()
                    {
                        // Checked above; guest memory does not shrink.
                        break;
                    }
                    written += n;
                    this += n;
                }
            }
            if let Err(e) = queue.add_used(mem, *head, this as u32) {
                log::warn!("virtio-net: cannot return RX buffer {head}: {e}");
                ok = false;
                break;
            }
        }
        if fits && written == len {
            self.stats.rx_frames += 1;
            self.stats.rx_bytes += len as u64;
        } else {
            log::debug!("virtio-net: no usable RX buffer for a {len}-byte frame; dropped");
            self.stats.rx_dropped += 1;
        }
        Placed::Done(ok)
    }

    /// Sends what the guest queued for transmission, then asks for the next
    /// notification, going on while frames came in meanwhile and passes make
    /// progress.
    fn transmit(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        queue::serve(mem, queue, "virtio-net", |mem, queue| {
            self.transmit_pass(mem, queue)
        })
    }

    /// One pass over the TX ring. Returns whether any chain was taken and
    /// whether the used ring changed.
    fn transmit_pass(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> (bool, bool) {
        let mut chains = std::mem::replace(&mut self.tx_chains, Chains::with_capacity(0, 0));
        self.stats.tx_dropped += chains.take(mem, queue, "virtio-net") as u64;
        // A frame's pieces where they are in guest memory, written in one
        // go; copied into tx_buf only when a piece crosses from one memory
        // region into another.
        let mut parts: Vec<GuestSlice<'_>> = Vec::new();
        for (head, descs) in chains.iter() {
            self.tx_buf.clear();
            parts.clear();
            let mut ok = true;
            let mut copying = false;
            let mut total = 0usize;
            for d in descs {
                let len = d.len() as usize;
                if d.is_write_only() || total + len > MAX_FRAME_LEN {
                    ok = false;
                    break;
                }
                total += len;
                if !copying {
                    if let Ok(s) = mem.get_slice(d.addr(), len) {
                        parts.push(s);
                        continue;
                    }
                    copying = true;
                    for p in parts.drain(..) {
                        let at = self.tx_buf.len();
                        self.tx_buf.resize(at + p.len(), 0);
                        p.copy_to(&mut self.tx_buf[at..]);
                    }
                }
                let at = self.tx_buf.len();
                self.tx_buf.resize(at + len, 0);
                if mem.read_slice(&mut self.tx_buf[at..], d.addr()).is_err() {
                    ok = false;
                    break;
                }
            }
            if !ok || total < VNET_HDR_LEN {
                log::debug!("virtio-net: dropping malformed TX chain {head}");
                self.stats.tx_dropped += 1;
            } else if copying {
                self.send(None, total);
            } else {
                self.send(Some(&parts), total);
            }
            self.tx_unreturned.push((head, 0));
        }
        drop(parts);
        // The frames are on their way; their buffers go back to the guest a
        // little later, several at once (`complete_tx`): each completion
        // costs the guest an interrupt, and while it receives, it sends an
        // acknowledgement at a time.
        let progress = !chains.is_empty();
        if progress && !self.tx_armed {
            match self.tx_timer.reset(TX_COMPLETION_DELAY, None) {
                Ok(()) => self.tx_armed = true,
                Err(e) => log::warn!("virtio-net: cannot arm the TX completion timer: {e}"),
            }
        }
        let used = if self.tx_armed {
            false
        } else {
            self.complete_tx(mem, queue)
        };
        self.tx_chains = chains;
        (progress, used)
    }

    /// Returns the transmitted buffers not returned yet. Returns whether
    /// the used ring changed.
    fn complete_tx(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
        self.disarm_tx_timer();
        let used = queue::return_used(mem, queue, &self.tx_unreturned, "virtio-net");
        self.tx_unreturned.clear();
        used
    }

    fn disarm_tx_timer(&mut self) {
        if self.tx_armed {
            if let Err(e) = self.tx_timer.clear() {
                log::warn!("virtio-net: cannot disarm the TX completion timer: {e}");
            }
            self.tx_armed = false;
        }
    }

    /// Writes a frame of `len` bytes to the backend: `parts` of guest
    /// memory, or without them the copy in tx_buf.
    fn send(&mut self, parts: Option<&[GuestSlice<'_>]>, len: usize) {
        loop {
            let written = match parts {
                Some(parts) => self.backend.write_gathered(parts),
                None => self.backend.write_frame(&self.tx_buf),
            };
            match written {
                Ok(_) => {
                    self.stats.tx_frames += 1;
                    self.stats.tx_bytes += len as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("virtio-net: the TAP refused a frame: {e}");
                    self.stats.tx_errors += 1;
                }
            }
            return;
        }
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << features::MAC)
            | (1u64 << features::STATUS)
            | (1u64 << features::MRG_RXBUF)
            | (1u64 << VIRTIO_RING_F_EVENT_IDX);
        if self.offloads {
            for bit in [
                features::CSUM,
                features::GUEST_CSUM,
                features::GUEST_TSO4,
                features::GUEST_TSO6,
                features::HOST_TSO4,
                features::HOST_TSO6,
            ] {
                f |= 1u64 << bit;
            }
        }
        f
    }

    /// The TAP may hand over partially checksummed or unsegmented frames
    /// only as far as the driver said it takes them.
    fn ack_features(&mut self, acked: u64) {
        let has = |bit: u32| acked & (1u64 << bit) != 0;
        self.mergeable = has(features::MRG_RXBUF);
        if !self.offloads {
            return;
        }
        let mut flags = 0;
        if has(features::GUEST_CSUM) {
            flags |= offload::CSUM;
            if has(features::GUEST_TSO4) {
                flags |= offload::TSO4;
            }
            if has(features::GUEST_TSO6) {
                flags |= offload::TSO6;
            }
        }
        if let Err(e) = self.backend.set_offload(flags) {
            log::warn!("virtio-net: cannot set the TAP's offloads to {flags:#x}: {e}");
        }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: u8 mac[6], le16 status.
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac.bytes());
        config[6..].copy_from_slice(&VIRTIO_NET_S_LINK_UP.to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        // The MAC is writable only with VIRTIO_NET_F_CTRL_MAC_ADDR's legacy
        // path, which is not offered.
        log::debug!("virtio-net: write to read-only config at {offset:#x} ignored");
    }

    fn process_queue(&mut self, mem: &GuestMemoryMmap, index: usize, queue: &mut Queue) -> bool {
        match index {
            // New RX buffers: a frame may be waiting for one.
            RX_QUEUE => self.receive(mem, queue),
            TX_QUEUE => self.transmit(mem, queue),
            _ => false,
        }
    }

    fn host_fds(&self) -> Vec<RawFd> {
        vec![self.backend.as_raw_fd(), self.tx_timer.as_raw_fd()]
    }

    /// The TAP (frames for the guest) or the TX completion timer. Pending
    /// TX completions go back with received frames, under one interrupt.
    fn host_event(&mut self, mem: &GuestMemoryMmap, index: usize, queues: &mut [Queue]) -> u32 {
        let mut changed = 0;
        if index == 0 {
            if let Some(q) = queues.get_mut(RX_QUEUE) {
                if self.receive(mem, q) {
                    changed |= 1 << RX_QUEUE;
                }
            }
        } else {
            // Non-blocking: an expiry the flush below cleared reads nothing.
            let _ = self.tx_timer.wait();
        }
        if (index == 1 || changed != 0) && !self.tx_unreturned.is_empty() {
            if let Some(q) = queues.get_mut(TX_QUEUE) {
                if self.complete_tx(mem, q) {
                    changed |= 1 << TX_QUEUE;
                }
            }
        }
        changed
    }

    fn stats(&self) -> Option<String> {
        let s = &self.stats;
        Some(format!(
            "virtio-net {}: received {} frames ({} bytes, {} dropped), sent {} frames ({} bytes, {} malformed, {} refused by the TAP)",
            self.mac,
            s.rx_frames, s.rx_bytes, s.rx_dropped, s.tx_frames, s.tx_bytes, s.tx_dropped, s.tx_errors
        ))
    }

    fn id(&self) -> String {
        self.mac.to_string()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("rx_frames", s.rx_frames),
            ("rx_bytes", s.rx_bytes),
            ("rx_dropped", s.rx_dropped),
            ("tx_frames", s.tx_frames),
            ("tx_bytes", s.tx_bytes),
            ("tx_dropped", s.tx_dropped),
            ("tx_errors", s.tx_errors),
        ]
    }

    /// The transmitted buffers not yet returned go back now.
    fn quiesce(&mut self, mem: &GuestMemoryMmap, queues: &mut [Queue]) -> u32 {
        self.return_held_tx(mem, queues)
    }

    fn save(&self) -> super::DeviceSnapshot {
        self.snapshot()
    }

    fn restore(&mut self, snap: &super::DeviceSnapshot) -> Result<(), String> {
        self.restore_snapshot(snap)
    }

    fn reset(&mut self) {
        self.rx_pending = 0;
        self.tx_unreturned.clear();
        self.disarm_tx_timer();
        self.mergeable = false;
        if self.offloads {
            if let Err(e) = self.backend.set_offload(0) {
                log::warn!("virtio-net: cannot clear the TAP's offloads: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::{make_available, offer, used};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;
    use std::sync::{Arc, Mutex};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestAddress;

    const MEM_SIZE: usize = 0x40_0000;
    const BUF: u64 = 0x10_0000;

    /// A backend on one end of a datagram socket pair, which keeps frame
    /// boundaries as a TAP does; records the offloads it is given.
    struct Pair {
        sock: UnixDatagram,
        offloads: Arc<Mutex<Vec<u32>>>,
        takes_offloads: bool,
        /// How many reads and writes to come fail with EINTR first.
        eintr: Arc<std::sync::atomic::AtomicU32>,
    }

    impl Pair {
        /// EINTR while the test asks for it, as a signal would.
        fn interrupted(&self) -> io::Result<()> {
            use std::sync::atomic::Ordering::SeqCst;
            let left = self.eintr.load(SeqCst);
            if left > 0 {
                self.eintr.store(left - 1, SeqCst);
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            Ok(())
        }
    }

    impl AsRawFd for Pair {
        fn as_raw_fd(&self) -> RawFd {
            self.sock.as_raw_fd()
        }
    }

    impl NetBackend for Pair {
        fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.interrupted()?;
            self.sock.recv(buf)
        }
        fn write_frame(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.interrupted()?;
            self.sock.send(buf)
        }
        fn set_offload(&mut self, flags: u32) -> io::Result<()> {
            if !self.takes_offloads {
                return Err(io::Error::from(io::ErrorKind::Unsupported));
            }
            self.offloads.lock().unwrap().push(flags);
            Ok(())
        }
    }

    struct Rig {
        dev: Net,
        peer: UnixDatagram,
        offloads: Arc<Mutex<Vec<u32>>>,
        mem: GuestMemoryMmap,
        eintr: Arc<std::sync::atomic::AtomicU32>,
    }

    fn rig(takes_offloads: bool) -> Rig {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let offloads = Arc::new(Mutex::new(Vec::new()));
        let eintr = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let backend = Pair {
            sock: a,
            offloads: offloads.clone(),
            takes_offloads,
            eintr: eintr.clone(),
        };
        Rig {
            dev: Net::new(Box::new(backend), MacAddr::from([0x02, 1, 2, 3, 4, 5])).unwrap(),
            peer: b,
            offloads,
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap(),
            eintr,
        }
    }

    /// The TX completion timer's expiry: the buffers of what was sent go
    /// back to the guest. Returns the mask of queues changed and the TX
    /// queue.
    fn complete_tx(dev: &mut Net, mem: &GuestMemoryMmap, q: Queue) -> (u32, Queue) {
        std::thread::sleep(TX_COMPLETION_DELAY * 2);
        let mut queues = [Queue::new(QUEUE_SIZE).unwrap(), q];
        let mask = dev.host_event(mem, 1, &mut queues);
        let [_, q] = queues;
        (mask, q)
    }

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect()
    }

    #[test]
    fn transmitted_frames_reach_the_backend_whole() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let f = frame(VNET_HDR_LEN + 60, 1);
        r.mem
            .write_slice(&f[..VNET_HDR_LEN], GuestAddress(BUF))
            .unwrap();
        r.mem
            .write_slice(&f[VNET_HDR_LEN..], GuestAddress(BUF + 0x1000))
            .unwrap();
        offer(
            &vq,
            &[&[(BUF, VNET_HDR_LEN as u32, false), (BUF + 0x1000, 60, false)]],
            0,
        );
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(!r.dev.process_queue(&r.mem, TX_QUEUE, &mut q));
        let mut got = vec![0u8; 200];
        // Sent at once; the buffer goes back when the timer expires.
        assert_eq!(q.next_used(), 0);
        let (mask, q) = complete_tx(&mut r.dev, &r.mem, q);
        assert_eq!((mask, q.next_used()), (1 << TX_QUEUE, 1));
        let n = r.peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &f[..]);
        assert_eq!(used(&vq, 0), (0, 0));
        assert_eq!(
            (r.dev.stats.tx_frames, r.dev.stats.tx_bytes),
            (1, f.len() as u64)
        );
    }

    #[test]
    fn malformed_transmissions_are_dropped_and_the_queue_goes_on() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let good = frame(VNET_HDR_LEN + 100, 2);
        r.mem.write_slice(&good, GuestAddress(BUF)).unwrap();
        let half = (MAX_FRAME_LEN / 2 + 1) as u32;
        offer(
            &vq,
            &[
                // Shorter than the header.
                &[(BUF, 8, false)],
                // A device-writable descriptor in a TX chain.
                &[(BUF, 12, false), (BUF + 0x100, 64, true)],
                // Longer than the largest frame.
                &[(BUF, half, false), (BUF, half, false)],
                // Outside guest memory.
                &[(BUF, 12, false), (MEM_SIZE as u64 - 16, 64, false)],
                // Then a good one.
                &[(BUF, good.len() as u32, false)],
            ],
            0,
        );
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(!r.dev.process_queue(&r.mem, TX_QUEUE, &mut q));
        let (_, q) = complete_tx(&mut r.dev, &r.mem, q);
        assert_eq!(q.next_used(), 5, "every chain is returned");
        let mut got = vec![0u8; MAX_FRAME_LEN * 2];
        let n = r.peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &good[..], "only the good frame is sent");
        assert_eq!(
            r.peer.recv(&mut got).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!((r.dev.stats.tx_dropped, r.dev.stats.tx_frames), (4, 1));
    }

    #[test]
    fn received_frames_land_in_rx_buffers_with_one_buffer_each() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        offer(
            &vq,
            &[&[(BUF, VNET_HDR_LEN as u32, true), (BUF + 0x1000, 1514, true)]],
            0,
        );
        let mut queues = [vq.create_queue::<Queue>().unwrap()];
        let mut f = frame(VNET_HDR_LEN + 98, 3);
        f[10] = 0xee; // num_buffers as the TAP leaves it: not written
        r.peer.send(&f).unwrap();
        assert_eq!(r.dev.host_event(&r.mem, 0, &mut queues), 1 << RX_QUEUE);
        assert_eq!(used(&vq, 0), (0, f.len() as u32));
        let mut hdr = [0u8; VNET_HDR_LEN];
        r.mem.read_slice(&mut hdr, GuestAddress(BUF)).unwrap();
        assert_eq!(&hdr[..10], &f[..10]);
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
        let mut body = vec![0u8; 98];
        r.mem
            .read_slice(&mut body, GuestAddress(BUF + 0x1000))
            .unwrap();
        assert_eq!(&body[..], &f[VNET_HDR_LEN..]);
        assert_eq!(r.dev.stats.rx_frames, 1);
    }

    #[test]
    fn a_frame_waits_for_rx_buffers() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let mut queues = [vq.create_queue::<Queue>().unwrap()];
        let f1 = frame(VNET_HDR_LEN + 50, 4);
        let f2 = frame(VNET_HDR_LEN + 70, 5);
        r.peer.send(&f1).unwrap();
        r.peer.send(&f2).unwrap();
        // No buffers yet: nothing is used, nothing lost.
        assert_eq!(r.dev.host_event(&r.mem, 0, &mut queues), 0);
        offer(
            &vq,
            &[&[(BUF, 2048, true)], &[(BUF + 0x1000, 2048, true)]],
            0,
        );
        // The driver's RX notification delivers both, in order.
        assert!(r.dev.process_queue(&r.mem, RX_QUEUE, &mut queues[0]));
        assert_eq!(used(&vq, 0), (0, f1.len() as u32));
        assert_eq!(used(&vq, 1), (1, f2.len() as u32));
        let mut got = vec![0u8; f2.len()];
        r.mem
            .read_slice(&mut got, GuestAddress(BUF + 0x1000))
            .unwrap();
        assert_eq!(&got[VNET_HDR_LEN..], &f2[VNET_HDR_LEN..]);
        assert_eq!((r.dev.stats.rx_frames, r.dev.stats.rx_dropped), (2, 0));
    }

    #[test]
    fn frames_that_do_not_fit_are_dropped_and_counted() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        offer(
            &vq,
            &[
                // Too small for the frame.
                &[(BUF, 64, true)],
                // Driver-readable: not a receive buffer.
                &[(BUF + 0x1000, 2048, false)],
                // Outside guest memory.
                &[(MEM_SIZE as u64 - 8, 2048, true)],
                // Fits.
                &[(BUF + 0x2000, 2048, true)],
            ],
            0,
        );
        let mut queues = [vq.create_queue::<Queue>().unwrap()];
        // A runt shorter than the header, then four real frames.
        r.peer.send(&[1, 2, 3]).unwrap();
        for i in 0..4 {
            r.peer.send(&frame(VNET_HDR_LEN + 200, i)).unwrap();
        }
        assert_ne!(r.dev.host_event(&r.mem, 0, &mut queues), 0);
        for i in 0..3 {
            assert_eq!(used(&vq, i).1, 0, "buffer {i} returned empty");
        }
        assert_eq!(used(&vq, 3).1, (VNET_HDR_LEN + 200) as u32);
        let mut got = vec![0u8; 200];
        r.mem
            .read_slice(&mut got, GuestAddress(BUF + 0x2000 + VNET_HDR_LEN as u64))
            .unwrap();
        assert_eq!(got, frame(VNET_HDR_LEN + 200, 3)[VNET_HDR_LEN..]);
        assert_eq!((r.dev.stats.rx_dropped, r.dev.stats.rx_frames), (4, 1));
    }

    #[test]
    fn offloads_follow_the_backend_and_the_driver() {
        let mut r = rig(true);
        let f = r.dev.features();
        for bit in [features::CSUM, features::GUEST_CSUM, features::HOST_TSO4] {
            assert_ne!(f & (1 << bit), 0, "bit {bit} offered");
        }
        r.dev.ack_features(
            (1 << VIRTIO_F_VERSION_1) | (1 << features::GUEST_CSUM) | (1 << features::GUEST_TSO4),
        );
        // Probe (all, then none), then what the driver accepted.
        assert_eq!(
            *r.offloads.lock().unwrap(),
            [
                offload::CSUM | offload::TSO4 | offload::TSO6,
                0,
                offload::CSUM | offload::TSO4
            ]
        );
        // TSO without checksum offload is not a thing the TAP is told.
        r.dev.ack_features(1 << features::GUEST_TSO4);
        assert_eq!(r.offloads.lock().unwrap().last(), Some(&0));
        r.dev.reset();
        assert_eq!(r.offloads.lock().unwrap().last(), Some(&0));

        let plain = rig(false);
        let f = plain.dev.features();
        assert_eq!(
            f & 0xffff_ffff,
            (1 << features::MAC)
                | (1 << features::STATUS)
                | (1 << features::MRG_RXBUF)
                | (1 << VIRTIO_RING_F_EVENT_IDX)
        );
        assert_ne!(f & (1 << VIRTIO_F_VERSION_1), 0);
    }

    #[test]
    fn config_space_holds_the_mac_and_link_up() {
        let r = rig(true);
        let mut c = [0xffu8; 8];
        r.dev.read_config(0, &mut c);
        assert_eq!(c, [0x02, 1, 2, 3, 4, 5, 1, 0]);
        let mut tail = [0xffu8; 4];
        r.dev.read_config(6, &mut tail);
        assert_eq!(tail, [1, 0, 0, 0]);
        r.dev.read_config(u64::MAX, &mut tail);
        assert_eq!(tail, [0; 4]);
    }

    #[test]
    fn with_mergeable_buffers_a_frame_spans_several() {
        let mut r = rig(true);
        r.dev
            .ack_features((1 << VIRTIO_F_VERSION_1) | (1 << features::MRG_RXBUF));
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let mut queues = [vq.create_queue::<Queue>().unwrap()];
        // Two 1 KiB buffers so far; the frame needs three.
        offer(
            &vq,
            &[&[(BUF, 1024, true)], &[(BUF + 0x1000, 1024, true)]],
            0,
        );
        let f = frame(2500, 6);
        r.peer.send(&f).unwrap();
        assert_eq!(
            r.dev.host_event(&r.mem, 0, &mut queues),
            0,
            "waits for room"
        );
        assert_eq!(queues[0].next_avail(), 0, "buffers taken back");
        offer(&vq, &[&[(BUF + 0x2000, 1024, true)]], 2);
        assert!(r.dev.process_queue(&r.mem, RX_QUEUE, &mut queues[0]));
        assert_eq!(queues[0].next_used(), 3);
        assert_eq!(
            [used(&vq, 0), used(&vq, 1), used(&vq, 2)],
            [(0, 1024), (1, 1024), (2, 2500 - 2048)]
        );
        let mut got = vec![0u8; 3072];
        for (i, base) in [BUF, BUF + 0x1000, BUF + 0x2000].into_iter().enumerate() {
            r.mem
                .read_slice(&mut got[i * 1024..(i + 1) * 1024], GuestAddress(base))
                .unwrap();
        }
        assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
        assert_eq!(&got[..10], &f[..10]);
        assert_eq!(&got[VNET_HDR_LEN..2500], &f[VNET_HDR_LEN..]);
        assert_eq!((r.dev.stats.rx_frames, r.dev.stats.rx_dropped), (1, 0));
        // A reset forgets the negotiation: one buffer per frame again.
        r.dev.reset();
        assert!(!r.dev.mergeable);
    }

    #[test]
    fn with_event_idx_a_waiting_frame_asks_for_the_next_buffer() {
        let mut r = rig(true);
        r.dev
            .ack_features((1 << VIRTIO_F_VERSION_1) | (1 << features::MRG_RXBUF));
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let mut queues = [vq.create_queue::<Queue>().unwrap()];
        queues[0].set_event_idx(true);
        let avail_event = vq.used_addr().0 + 4 + 8 * 16;
        let read_event =
            |m: &GuestMemoryMmap| -> u16 { m.read_obj(GuestAddress(avail_event)).unwrap() };
        r.mem
            .write_obj(0xffffu16, GuestAddress(avail_event))
            .unwrap();
        r.peer.send(&frame(2500, 7)).unwrap();
        assert_eq!(r.dev.host_event(&r.mem, 0, &mut queues), 0);
        assert_eq!(read_event(&r.mem), 0, "notify me at the first buffer");
        // Two buffers: not enough; they are given back, and the device asks
        // for a notification when the third comes, not at the first two.
        offer(
            &vq,
            &[&[(BUF, 1024, true)], &[(BUF + 0x1000, 1024, true)]],
            0,
        );
        assert!(!r.dev.process_queue(&r.mem, RX_QUEUE, &mut queues[0]));
        assert_eq!(read_event(&r.mem), 2);
        offer(&vq, &[&[(BUF + 0x2000, 1024, true)]], 2);
        assert!(r.dev.process_queue(&r.mem, RX_QUEUE, &mut queues[0]));
        assert_eq!(queues[0].next_used(), 3);
    }

    #[test]
    fn pending_tx_completions_go_back_with_received_frames() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let f = frame(VNET_HDR_LEN + 60, 9);
        r.mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        // TX chain in slot 0 of the TX queue's table; an RX buffer in a
        // queue of its own.
        offer(&vq, &[&[(BUF, f.len() as u32, false)]], 0);
        let rx_vq = MockSplitQueue::create(&r.mem, GuestAddress(0x8000), 16);
        offer(&rx_vq, &[&[(BUF + 0x2000, 2048, true)]], 0);
        let tx: Queue = vq.create_queue().unwrap();
        let mut queues = [rx_vq.create_queue::<Queue>().unwrap(), tx];
        assert!(!r.dev.process_queue(&r.mem, TX_QUEUE, &mut queues[1]));
        assert_eq!(queues[1].next_used(), 0);
        // A frame for the guest arrives before the timer: both rings change,
        // under one interrupt.
        r.peer.send(&frame(VNET_HDR_LEN + 40, 10)).unwrap();
        assert_eq!(
            r.dev.host_event(&r.mem, 0, &mut queues),
            (1 << RX_QUEUE) | (1 << TX_QUEUE)
        );
        assert_eq!((queues[0].next_used(), queues[1].next_used()), (1, 1));
        // The timer's expiry finds nothing left (and does not block).
        std::thread::sleep(TX_COMPLETION_DELAY * 2);
        assert_eq!(r.dev.host_event(&r.mem, 1, &mut queues), 0);
    }

    #[test]
    fn with_event_idx_transmission_sets_the_avail_event() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let f = frame(VNET_HDR_LEN + 60, 8);
        r.mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        offer(
            &vq,
            &[
                &[(BUF, f.len() as u32, false)],
                &[(BUF, f.len() as u32, false)],
            ],
            0,
        );
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_event_idx(true);
        assert!(!r.dev.process_queue(&r.mem, TX_QUEUE, &mut q));
        let avail_event: u16 = r
            .mem
            .read_obj(GuestAddress(vq.used_addr().0 + 4 + 8 * 16))
            .unwrap();
        assert_eq!(avail_event, 2, "notify me from the next frame on");
        assert_eq!(r.dev.stats.tx_frames, 2);
    }

    /// What the device is to the transport: type 1, two queues, its
    /// features (exactly, with and without offloads), the TAP's and the
    /// completion timer's descriptors.
    #[test]
    fn the_device_offers_its_type_queues_features_and_fds() {
        for offloads in [false, true] {
            let r = rig(offloads);
            assert_eq!((r.dev.device_type(), DEVICE_TYPE_NET), (1, 1));
            assert_eq!(r.dev.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
            let mut want = (1u64 << VIRTIO_F_VERSION_1)
                | (1 << features::MAC)
                | (1 << features::STATUS)
                | (1 << features::MRG_RXBUF)
                | (1 << VIRTIO_RING_F_EVENT_IDX);
            if offloads {
                for bit in [
                    features::CSUM,
                    features::GUEST_CSUM,
                    features::GUEST_TSO4,
                    features::GUEST_TSO6,
                    features::HOST_TSO4,
                    features::HOST_TSO6,
                ] {
                    want |= 1 << bit;
                }
            }
            assert_eq!(r.dev.features(), want, "offloads={offloads}");
            let fds = r.dev.host_fds();
            assert_eq!(fds.len(), 2);
            assert_eq!(fds[1], r.dev.tx_timer.as_raw_fd());
            assert_ne!(fds[0], fds[1]);
            assert_eq!(r.dev.id(), "02:01:02:03:04:05");
        }
        // GUEST_CSUM with both TSOs: all three offloads.
        let mut r = rig(true);
        r.dev.ack_features(
            (1 << features::GUEST_CSUM) | (1 << features::GUEST_TSO4) | (1 << features::GUEST_TSO6),
        );
        assert_eq!(
            r.offloads.lock().unwrap().last(),
            Some(&(offload::CSUM | offload::TSO4 | offload::TSO6))
        );
        r.dev
            .ack_features((1 << features::GUEST_CSUM) | (1 << features::GUEST_TSO6));
        assert_eq!(
            r.offloads.lock().unwrap().last(),
            Some(&(offload::CSUM | offload::TSO6))
        );
    }

    /// A frame of just its header (empty) is received; a shorter one is
    /// dropped and counted, and the next one still comes in. A read or a
    /// write that a signal interrupts (EINTR) is tried again.
    #[test]
    fn edge_lengths_and_interrupted_calls() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        offer(
            &vq,
            &[&[(BUF, 2048, true)], &[(BUF + 0x1000, 2048, true)]],
            0,
        );
        let mut queues = [vq.create_queue::<Queue>().unwrap()];
        r.peer.send(&[9; VNET_HDR_LEN - 1]).unwrap();
        r.peer.send(&[7; VNET_HDR_LEN]).unwrap();
        r.peer.send(&frame(VNET_HDR_LEN + 30, 1)).unwrap();
        r.eintr.store(2, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(r.dev.host_event(&r.mem, 0, &mut queues), 1 << RX_QUEUE);
        assert_eq!(used(&vq, 0), (0, VNET_HDR_LEN as u32));
        assert_eq!(used(&vq, 1), (1, (VNET_HDR_LEN + 30) as u32));
        assert_eq!((r.dev.stats.rx_frames, r.dev.stats.rx_dropped), (2, 1));
        assert_eq!(r.dev.stats.rx_bytes, (2 * VNET_HDR_LEN + 30) as u64);

        // Transmit: a chain of just a header is an (empty) frame; a write
        // interrupted twice still goes out once.
        let tx_vq = MockSplitQueue::create(&r.mem, GuestAddress(0x8000), 16);
        r.mem
            .write_slice(&[5; VNET_HDR_LEN], GuestAddress(BUF + 0x4000))
            .unwrap();
        offer(&tx_vq, &[&[(BUF + 0x4000, VNET_HDR_LEN as u32, false)]], 0);
        let mut q: Queue = tx_vq.create_queue().unwrap();
        r.eintr.store(2, std::sync::atomic::Ordering::SeqCst);
        r.dev.process_queue(&r.mem, TX_QUEUE, &mut q);
        let mut got = [0u8; 64];
        assert_eq!(r.peer.recv(&mut got).unwrap(), VNET_HDR_LEN);
        assert_eq!((r.dev.stats.tx_frames, r.dev.stats.tx_errors), (1, 0));
        assert_eq!(r.dev.stats.tx_bytes, VNET_HDR_LEN as u64);
        // A frame the backend refuses (its peer is gone) is counted, not
        // tried again.
        drop(r.peer);
        offer(&tx_vq, &[&[(BUF + 0x4000, VNET_HDR_LEN as u32, false)]], 1);
        r.dev.process_queue(&r.mem, TX_QUEUE, &mut q);
        assert_eq!((r.dev.stats.tx_frames, r.dev.stats.tx_errors), (1, 1));
    }

    /// The largest frame is sent whole, one byte more is dropped; a piece
    /// that crosses from one guest memory region into the next is copied
    /// and the frame goes out whole; a TX avail entry past the table is
    /// counted as dropped.
    #[test]
    fn the_largest_frame_and_a_frame_across_memory_regions_go_out_whole() {
        let mut r = rig(true);
        // Two adjacent regions, the second from 0x20_0000.
        r.mem = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x20_0000),
            (GuestAddress(0x20_0000), 0x20_0000),
        ])
        .unwrap();
        let big = frame(MAX_FRAME_LEN, 3);
        r.mem.write_slice(&big, GuestAddress(BUF)).unwrap();
        let across = frame(VNET_HDR_LEN + 3000, 4);
        let at = 0x20_0000 - 1000;
        r.mem.write_slice(&across, GuestAddress(at)).unwrap();
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        offer(
            &vq,
            &[
                &[(BUF, MAX_FRAME_LEN as u32, false)],
                &[(BUF, MAX_FRAME_LEN as u32 - 1, false), (BUF, 2, false)],
                &[
                    (at, 100, false),
                    (at + 100, across.len() as u32 - 100, false),
                ],
            ],
            0,
        );
        make_available(&r.mem, &vq, 16, &[40]);
        let mut q: Queue = vq.create_queue().unwrap();
        r.dev.process_queue(&r.mem, TX_QUEUE, &mut q);
        let mut got = vec![0u8; MAX_FRAME_LEN + 10];
        let n = r.peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &big[..]);
        let n = r.peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &across[..]);
        assert_eq!(
            r.peer.recv(&mut got).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert_eq!((r.dev.stats.tx_frames, r.dev.stats.tx_dropped), (2, 2));
        assert_eq!(r.dev.stats.tx_bytes, (MAX_FRAME_LEN + across.len()) as u64);
        assert_eq!(
            r.dev.counters(),
            vec![
                ("rx_frames", 0),
                ("rx_bytes", 0),
                ("rx_dropped", 0),
                ("tx_frames", 2),
                ("tx_bytes", (MAX_FRAME_LEN + across.len()) as u64),
                ("tx_dropped", 2),
                ("tx_errors", 0),
            ]
        );
        assert_eq!(
            r.dev.stats().as_deref(),
            Some(
                format!(
                    "virtio-net 02:01:02:03:04:05: received 0 frames (0 bytes, 0 dropped), \
                     sent 2 frames ({} bytes, 2 malformed, 0 refused by the TAP)",
                    MAX_FRAME_LEN + across.len()
                )
                .as_str()
            )
        );
    }

    /// Whether the completion timer is armed: its descriptor becomes
    /// readable within a few delays.
    fn timer_fires(dev: &Net) -> bool {
        let mut p = libc::pollfd {
            fd: dev.tx_timer.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, live for the call.
        unsafe { libc::poll(&mut p, 1, 50) == 1 }
    }

    /// Each transmission after a completion arms the timer again; a TAP
    /// event with no frame for the guest leaves the pending completions to
    /// the timer.
    #[test]
    fn the_completion_timer_is_armed_again_for_each_transmission() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let f = frame(VNET_HDR_LEN + 60, 9);
        r.mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        offer(&vq, &[&[(BUF, f.len() as u32, false)]], 0);
        let mut q: Queue = vq.create_queue().unwrap();
        r.dev.process_queue(&r.mem, TX_QUEUE, &mut q);
        assert!(timer_fires(&r.dev));
        // A TAP event, no frame: the buffer stays with the device.
        let rx = Queue::new(QUEUE_SIZE).unwrap();
        let mut queues = [rx, q];
        assert_eq!(r.dev.host_event(&r.mem, 0, &mut queues), 0);
        assert_eq!(queues[1].next_used(), 0);
        let [_, q] = queues;
        let (mask, mut q) = complete_tx(&mut r.dev, &r.mem, q);
        assert_eq!((mask, q.next_used()), (1 << TX_QUEUE, 1));
        assert!(!timer_fires(&r.dev), "disarmed once the buffers went back");
        offer(&vq, &[&[(BUF, f.len() as u32, false)]], 1);
        r.dev.process_queue(&r.mem, TX_QUEUE, &mut q);
        assert!(timer_fires(&r.dev), "armed again");
        let (mask, q) = complete_tx(&mut r.dev, &r.mem, q);
        assert_eq!((mask, q.next_used()), (1 << TX_QUEUE, 2));
    }

    #[test]
    fn a_snapshot_returns_sent_buffers_and_keeps_the_held_frame() {
        let mut r = rig(true);
        let vq = MockSplitQueue::create(&r.mem, GuestAddress(0), 16);
        let f = frame(VNET_HDR_LEN + 60, 11);
        r.mem.write_slice(&f, GuestAddress(BUF)).unwrap();
        offer(&vq, &[&[(BUF, f.len() as u32, false)]], 0);
        let rx_vq = MockSplitQueue::create(&r.mem, GuestAddress(0x8000), 16);
        let mut queues = [
            rx_vq.create_queue::<Queue>().unwrap(),
            vq.create_queue::<Queue>().unwrap(),
        ];
        assert!(!r.dev.process_queue(&r.mem, TX_QUEUE, &mut queues[1]));
        // A frame comes in with no RX buffer: the device holds it.
        let held = frame(VNET_HDR_LEN + 40, 12);
        r.peer.send(&held).unwrap();
        assert_eq!(r.dev.host_event(&r.mem, 0, &mut queues), 0);
        // Quiescing returns the sent buffer at once (nothing in flight).
        assert_eq!(r.dev.quiesce(&r.mem, &mut queues), 1 << TX_QUEUE);
        assert_eq!(queues[1].next_used(), 1);
        assert_eq!(r.dev.quiesce(&r.mem, &mut queues), 0);
        let snap = r.dev.save();
        assert_eq!(
            snap,
            super::super::DeviceSnapshot::Net {
                mac: "02:01:02:03:04:05".into(),
                rx_frame: held.clone(),
            }
        );
        // Another device (a new TAP) takes the state: the held frame goes
        // to the guest's first RX buffer.
        let mut other = rig(true);
        other.dev.restore(&snap).unwrap();
        assert_eq!(other.dev.save(), snap);
        offer(&rx_vq, &[&[(BUF + 0x2000, 2048, true)]], 0);
        assert!(other.dev.process_queue(&r.mem, RX_QUEUE, &mut queues[0]));
        let mut got = vec![0u8; held.len()];
        r.mem
            .read_slice(&mut got, GuestAddress(BUF + 0x2000))
            .unwrap();
        assert_eq!(&got[VNET_HDR_LEN..], &held[VNET_HDR_LEN..]);
        // A block device's state, or a bad MAC, is refused.
        let block = super::super::DeviceSnapshot::Block {
            capacity: 1,
            read_only: false,
            id: "x".into(),
        };
        assert!(other.dev.restore(&block).is_err());
        let bad = super::super::DeviceSnapshot::Net {
            mac: "nope".into(),
            rx_frame: vec![],
        };
        assert!(other.dev.restore(&bad).unwrap_err().contains("MAC"));
    }
}
