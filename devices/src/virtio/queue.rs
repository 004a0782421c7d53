//! The device side of a split virtqueue, for every device: taking what the
//! driver made available, returning what is done on the used ring, and the
//! loop that serves a notification until the ring is idle. Built on
//! virtio-queue's `Queue`, with a path that reads the avail ring and the
//! descriptor table, and writes the used ring, through one slice of guest
//! memory each when they lie in one region (always, with this VMM's memory
//! map): virtio-queue's accessors look the address up on every field,
//! which doubled the host's time per 4 KiB request (blk_bench).

use std::sync::atomic::{fence, Ordering};

use virtio_queue::{desc::split::Descriptor, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// The used ring: le16 flags, le16 idx, then the elements.
const USED_RING_HEADER: usize = 4;
/// Size of a used-ring element: le32 id, le32 len.
const USED_ELEM_LEN: usize = 8;
/// Size of a split-ring descriptor: le64 addr, le32 len, le16 flags, le16 next.
const DESC_LEN: usize = 16;

/// The chains taken from a queue in one pass: their descriptors, and each
/// chain's head index and end in them. Kept between passes so that the
/// request path does not allocate.
pub struct Chains {
    descs: Vec<Descriptor>,
    heads: Vec<(u16, usize)>,
    avail: Vec<u16>,
    /// Descriptors kept allocated after a pass with longer chains.
    keep: usize,
}

impl Chains {
    /// Room for `chains` chains of `descs_each` descriptors before the
    /// first allocation.
    pub fn with_capacity(chains: usize, descs_each: usize) -> Self {
        Chains {
            descs: Vec::with_capacity(chains * descs_each),
            heads: Vec::with_capacity(chains),
            avail: Vec::with_capacity(chains),
            keep: chains * descs_each,
        }
    }

    /// Takes every chain the driver has made available, under one look at
    /// the avail index and at most one ring's worth, so that a driver that
    /// moves its index ahead of its descriptors cannot keep the device
    /// spinning. Chains follow virtio-queue's rules (at most `size`
    /// descriptors, indices below `size`, at most 4 GiB in all); an
    /// indirect chain (VIRTIO_F_INDIRECT_DESC is never offered) is taken
    /// with no descriptors, for the device to return unanswered. `who`
    /// names the device in log lines. Returns how many avail entries named
    /// no descriptor at all (nothing to answer, nothing to return).
    pub fn take(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue, who: &str) -> usize {
        self.descs.shrink_to(self.keep);
        self.descs.clear();
        self.heads.clear();
        self.avail.clear();
        let size = usize::from(queue.size());
        let table = queue.desc_table();
        let mut bad = 0;
        let one_slice = mem.get_slice(GuestAddress(table), size * DESC_LEN).is_ok();
        if one_slice && take_avail(mem, queue, &mut self.avail, who) {
            for &head in &self.avail {
                if usize::from(head) >= size {
                    log::debug!("{who}: the avail ring names descriptor {head} of {size}");
                    bad += 1;
                    continue;
                }
                read_chain(mem, table, size, head, &mut self.descs);
                self.heads.push((head, self.descs.len()));
            }
            return bad;
        }
        match queue.iter(mem) {
            Ok(iter) => {
                for chain in iter.take(size) {
                    let head = chain.head_index();
                    if !read_chain(mem, table, size, head, &mut self.descs) {
                        let start = self.descs.len();
                        self.descs.extend(chain);
                        // virtio-queue's iterator stops without a word at
                        // a loop or a bad next index: a chain whose last
                        // descriptor still names a next one is not whole.
                        if self.descs.last().is_some_and(|d| d.has_next()) {
                            self.descs.truncate(start);
                        }
                    }
                    self.heads.push((head, self.descs.len()));
                }
            }
            Err(e) => log::warn!("{who}: cannot read the available ring: {e}"),
        }
        bad
    }

    /// Whether the last `take` found no chain.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }

    /// The chains of the last `take`: head index and descriptors.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[Descriptor])> + '_ {
        let mut start = 0;
        self.heads.iter().map(move |&(head, end)| {
            let chain = &self.descs[start..end];
            start = end;
            (head, chain)
        })
    }
}

/// A split-ring descriptor from its little-endian bytes.
fn descriptor(raw: &[u8; DESC_LEN]) -> Descriptor {
    let mut addr = [0u8; 8];
    let mut len = [0u8; 4];
    addr.copy_from_slice(&raw[0..8]);
    len.copy_from_slice(&raw[8..12]);
    Descriptor::new(
        u64::from_le_bytes(addr),
        u32::from_le_bytes(len),
        u16::from_le_bytes([raw[12], raw[13]]),
        u16::from_le_bytes([raw[14], raw[15]]),
    )
}

/// Appends the chain starting at `head` to `descs`, reading the descriptor
/// table through one slice of guest memory. A chain that names a
/// descriptor past the table, adds up past 4 GiB or goes on past `size`
/// descriptors (a loop: a driver must not make a chain longer than the
/// queue) is appended as no descriptors at all, for the device to return
/// unanswered as malformed. Returns false, appending nothing, for what it
/// leaves to virtio-queue's iterator: a table that is not one slice of
/// guest memory, or an indirect descriptor.
fn read_chain(
    mem: &GuestMemoryMmap,
    table: u64,
    size: usize,
    head: u16,
    descs: &mut Vec<Descriptor>,
) -> bool {
    let Ok(slice) = mem.get_slice(GuestAddress(table), size * DESC_LEN) else {
        return false;
    };
    let start = descs.len();
    let mut index = usize::from(head);
    let mut total = 0u32;
    for _ in 0..size {
        if index >= size {
            break;
        }
        let mut raw = [0u8; DESC_LEN];
        slice
            .subslice(index * DESC_LEN, DESC_LEN)
            .map(|d| d.copy_to(&mut raw[..]))
            .ok();
        let desc = descriptor(&raw);
        if desc.refers_to_indirect_table() {
            descs.truncate(start);
            return false;
        }
        let Some(t) = total.checked_add(desc.len()) else {
            break;
        };
        total = t;
        descs.push(desc);
        if !desc.has_next() {
            return true;
        }
        index = usize::from(desc.next());
    }
    descs.truncate(start);
    true
}

/// Reads the head indices the driver made available since the queue's
/// next_avail, through one slice of the avail ring, and moves next_avail
/// past them. False (nothing taken) if the ring is not one slice of guest
/// memory, which leaves it to virtio-queue's iterator, or if the driver's
/// index is more than a ring ahead (a broken driver: nothing is taken).
fn take_avail(mem: &GuestMemoryMmap, queue: &mut Queue, heads: &mut Vec<u16>, who: &str) -> bool {
    let size = queue.size();
    // struct virtq_avail: le16 flags, le16 idx, le16 ring[size].
    let Ok(ring) = mem.get_slice(GuestAddress(queue.avail_ring()), 4 + 2 * usize::from(size))
    else {
        return false;
    };
    let Ok(idx) = ring.load::<u16>(2, Ordering::Acquire) else {
        return false;
    };
    let idx = u16::from_le(idx);
    let next = queue.next_avail();
    let count = idx.wrapping_sub(next);
    if count > size {
        log::warn!("{who}: the avail index {idx} is {count} entries ahead of {next}; ignored");
        return false;
    }
    for i in 0..count {
        let slot = usize::from(next.wrapping_add(i) % size);
        let mut b = [0u8; 2];
        if let Ok(s) = ring.subslice(4 + 2 * slot, 2) {
            s.copy_to(&mut b[..]);
        }
        heads.push(u16::from_le_bytes(b));
    }
    queue.set_next_avail(idx);
    true
}

/// Puts the finished chains (head index, used length) on the used ring and
/// publishes the new used index once, after all of them. With
/// VIRTIO_RING_F_EVENT_IDX each goes through `Queue::add_used`, whose
/// notification suppression counts them one by one. Returns whether
/// anything was returned.
pub fn return_used(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    done: &[(u16, u32)],
    who: &str,
) -> bool {
    let size = queue.size();
    let next = queue.next_used();
    let ring_len = USED_RING_HEADER + USED_ELEM_LEN * usize::from(size);
    let fast = if queue.event_idx_enabled() {
        None
    } else {
        mem.get_slice(GuestAddress(queue.used_ring()), ring_len)
            .ok()
    };
    let Some(ring) = fast else {
        let mut used = false;
        for &(head, len) in done {
            if let Err(e) = queue.add_used(mem, head, len) {
                log::warn!("{who}: cannot return descriptor {head}: {e}");
                break;
            }
            used = true;
        }
        return used;
    };
    for (i, &(head, len)) in done.iter().enumerate() {
        let slot = usize::from(next.wrapping_add(i as u16) % size);
        let mut elem = [0u8; USED_ELEM_LEN];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        if let Ok(s) = ring.subslice(USED_RING_HEADER + slot * USED_ELEM_LEN, USED_ELEM_LEN) {
            s.copy_from(&elem[..]);
        }
    }
    let next = next.wrapping_add(done.len() as u16);
    // The elements must be visible before the index that hands them over.
    if ring.store(next.to_le(), 2, Ordering::Release).is_err() {
        log::warn!("{who}: cannot publish the used index");
        return false;
    }
    queue.set_next_used(next);
    !done.is_empty()
}

/// Serves a notification: runs `pass` (which returns whether it took any
/// chain and whether the used ring changed) and asks for the next
/// notification, again while chains came in meanwhile, which would bring
/// none, and while passes make progress (a driver whose avail index runs
/// ahead of its ring cannot keep the device spinning). Returns whether the
/// used ring changed.
pub fn serve(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    who: &str,
    mut pass: impl FnMut(&GuestMemoryMmap, &mut Queue) -> (bool, bool),
) -> bool {
    let mut used = false;
    loop {
        let (progress, changed) = pass(mem, queue);
        used |= changed;
        match queue.enable_notification(mem) {
            Ok(true) if progress => continue,
            Ok(_) => break,
            Err(e) => {
                log::warn!("{who}: cannot re-enable notifications: {e}");
                break;
            }
        }
    }
    used
}

/// A device that needs buffers it does not have (a frame waiting for RX
/// buffers) asks the driver to notify when it adds the next one (with
/// VIRTIO_RING_F_EVENT_IDX, the avail event is set to the current avail
/// index: buffers taken back for a frame they could not hold must not
/// count), then looks again. Returns true if buffers came in meanwhile.
pub fn want_more(mem: &GuestMemoryMmap, queue: &mut Queue) -> bool {
    let Ok(avail) = queue.avail_idx(mem, Ordering::Acquire) else {
        return false;
    };
    if queue.event_idx_enabled() {
        // struct virtq_used: le16 flags, le16 idx, ring[size], le16 avail_event.
        let at = queue.used_ring() + 4 + 8 * u64::from(queue.size());
        if mem
            .store(avail.0.to_le(), GuestAddress(at), Ordering::Relaxed)
            .is_err()
        {
            return false;
        }
    } else if queue.enable_notification(mem).is_err() {
        return false;
    }
    fence(Ordering::SeqCst);
    queue
        .avail_idx(mem, Ordering::Acquire)
        .is_ok_and(|now| now != avail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::testing::make_available;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Address;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn descriptor_walk_matches_virtio_queue() {
        // Random descriptor tables, every head: the device's own walk of
        // the table yields exactly what virtio-queue's DescriptorChain does
        // for a whole chain, and nothing for one that virtio-queue cuts
        // short without a word (bad next indices, loops, lengths adding up
        // past 4 GiB: its last descriptor still names a next one).
        const SIZE: u16 = 16;
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), SIZE);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut cut, mut total) = (0, 0);
        for _ in 0..200 {
            for i in 0..SIZE {
                let r = rand();
                let len = match r % 4 {
                    0 => u32::MAX - (r >> 40) as u32 % 16,
                    _ => (r >> 8) as u32 % 8192,
                };
                let flags = ((r >> 20) % 4) as u16; // NEXT and WRITE bits
                let next = ((r >> 30) % u64::from(SIZE + 3)) as u16;
                vq.desc_table()
                    .store(
                        i,
                        RawDescriptor::from(Descriptor::new(r >> 44, len, flags, next)),
                    )
                    .unwrap();
            }
            m.write_obj(0u16, vq.avail_addr().unchecked_add(2)).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            for head in 0..SIZE {
                make_available(&m, &vq, SIZE, &[head]);
                let chain = q.iter(&m).unwrap().next().unwrap();
                let fields = |d: &Descriptor| (d.addr(), d.len(), d.flags(), d.next());
                let theirs: Vec<_> = chain.map(|d| fields(&d)).collect();
                let mut ours = Vec::new();
                assert!(read_chain(
                    &m,
                    q.desc_table(),
                    usize::from(SIZE),
                    head,
                    &mut ours
                ));
                let ours: Vec<_> = ours.iter().map(fields).collect();
                let whole = theirs
                    .last()
                    .is_some_and(|d| d.2 & VRING_DESC_F_NEXT as u16 == 0);
                if whole {
                    assert_eq!(ours, theirs, "head {head}");
                } else {
                    assert!(ours.is_empty(), "head {head}: {theirs:?}");
                    cut += 1;
                }
                total += 1;
            }
        }
        // Both kinds were seen.
        assert!(cut > 0 && cut < total, "{cut} of {total} chains cut short");
    }

    #[test]
    fn an_indirect_chain_is_left_to_the_iterator_and_taken_empty() {
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        let table = 0x6000u64;
        let entries = [
            Descriptor::new(0x4000, 16, VRING_DESC_F_NEXT as u16, 1),
            Descriptor::new(0x8000, 512, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, d) in entries.iter().enumerate() {
            m.write_obj(*d, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let indirect = Descriptor::new(table, 32, VRING_DESC_F_INDIRECT as u16, 0);
        vq.add_desc_chains(&[RawDescriptor::from(indirect)], 0)
            .unwrap();
        let mut ours = Vec::new();
        assert!(!read_chain(&m, vq.desc_table_addr().0, 16, 0, &mut ours));
        assert!(ours.is_empty(), "nothing appended for an indirect chain");
        let mut q: Queue = vq.create_queue().unwrap();
        let mut chains = Chains::with_capacity(4, 4);
        assert_eq!(chains.take(&m, &mut q, "test"), 0);
        let got: Vec<(u16, usize)> = chains.iter().map(|(h, d)| (h, d.len())).collect();
        assert_eq!(got, vec![(0, 0)], "taken, with no descriptors");
    }

    #[test]
    fn heads_outside_the_table_are_counted_and_the_rest_taken() {
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 8);
        let one = Descriptor::new(0x4000, 16, 0, 0);
        vq.desc_table().store(2, RawDescriptor::from(one)).unwrap();
        make_available(&m, &vq, 8, &[9, 2, 200]);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut chains = Chains::with_capacity(8, 2);
        assert_eq!(chains.take(&m, &mut q, "test"), 2);
        let got: Vec<(u16, Vec<u64>)> = chains
            .iter()
            .map(|(h, d)| (h, d.iter().map(|d| d.addr().0).collect()))
            .collect();
        assert_eq!(got, vec![(2, vec![0x4000])]);
        assert_eq!(q.next_avail(), 3, "all three entries consumed");
    }

    #[test]
    fn used_chains_are_published_once_with_their_lengths() {
        for event_idx in [false, true] {
            let m = mem();
            let vq = MockSplitQueue::create(&m, GuestAddress(0), 8);
            let mut q: Queue = vq.create_queue().unwrap();
            q.set_event_idx(event_idx);
            assert!(return_used(&m, &mut q, &[(3, 7), (5, 0)], "test"));
            assert_eq!(q.next_used(), 2);
            let idx: u16 = m.read_obj(vq.used_addr().unchecked_add(2)).unwrap();
            assert_eq!(idx, 2, "event_idx {event_idx}");
            let e = |i| {
                let e = vq.used().ring().ref_at(i).unwrap().load();
                (e.id(), e.len())
            };
            assert_eq!((e(0), e(1)), ((3, 7), (5, 0)));
            assert!(!return_used(&m, &mut q, &[], "test"));
        }
    }

    /// A ring made full at once (the avail index a whole ring ahead) is
    /// taken whole; one entry more is a broken driver, and nothing is
    /// taken.
    #[test]
    fn a_full_ring_is_taken_and_one_more_is_refused() {
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 8);
        for i in 0..8u16 {
            let d = Descriptor::new(0x4000 + 0x100 * u64::from(i), 16, 0, 0);
            vq.desc_table().store(i, RawDescriptor::from(d)).unwrap();
        }
        make_available(&m, &vq, 8, &[0, 1, 2, 3, 4, 5, 6, 7]);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut chains = Chains::with_capacity(8, 1);
        assert_eq!(chains.take(&m, &mut q, "test"), 0);
        assert_eq!(chains.iter().count(), 8);
        assert_eq!(q.next_avail(), 8);
        // The driver's index 9 ahead of a ring of 8.
        m.write_obj(17u16, vq.avail_addr().unchecked_add(2))
            .unwrap();
        assert_eq!(chains.take(&m, &mut q, "test"), 0);
        assert!(chains.is_empty());
        assert_eq!(q.next_avail(), 8, "nothing taken");
    }

    /// A descriptor table that crosses from one guest memory region into
    /// the next is read through virtio-queue's iterator: the same chains.
    #[test]
    fn a_table_across_two_memory_regions_gives_the_same_chains() {
        let m = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x10_0000),
        ])
        .unwrap();
        // A table of 16 at 0xf80: 8 descriptors in each region.
        let vq = MockSplitQueue::create(&m, GuestAddress(0xf80), 16);
        assert!(m.get_slice(vq.desc_table_addr(), 16 * DESC_LEN).is_err());
        let chain = [
            Descriptor::new(0x8000, 16, VRING_DESC_F_NEXT as u16, 9),
            Descriptor::new(
                0x9000,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                2,
            ),
            Descriptor::new(0xa000, 1, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, d) in [(0u16, chain[0]), (9, chain[1]), (2, chain[2])] {
            vq.desc_table().store(i, RawDescriptor::from(d)).unwrap();
        }
        make_available(&m, &vq, 16, &[0]);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut chains = Chains::with_capacity(1, 3);
        assert_eq!(chains.take(&m, &mut q, "test"), 0);
        let got: Vec<(u16, Vec<u64>)> = chains
            .iter()
            .map(|(h, d)| (h, d.iter().map(|d| d.addr().0).collect()))
            .collect();
        assert_eq!(got, vec![(0, vec![0x8000, 0x9000, 0xa000])]);
    }

    /// Chains made available while a pass runs (notifications are off
    /// then, so the driver does not notify for them) are served by the
    /// same call: a pass that makes progress is followed by another.
    #[test]
    fn serve_takes_what_came_during_a_pass() {
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 8);
        let d = Descriptor::new(0x4000, 16, 0, 0);
        vq.desc_table().store(0, RawDescriptor::from(d)).unwrap();
        vq.desc_table().store(1, RawDescriptor::from(d)).unwrap();
        make_available(&m, &vq, 8, &[0]);
        let mut q: Queue = vq.create_queue().unwrap();
        let mut passes = 0;
        let mut taken = 0;
        let mut chains = Chains::with_capacity(8, 1);
        let used = serve(&m, &mut q, "test", |m, q| {
            passes += 1;
            q.disable_notification(m).unwrap();
            chains.take(m, q, "test");
            let n = chains.iter().count();
            taken += n;
            if passes == 1 {
                // The driver adds one while this pass runs.
                make_available(m, &vq, 8, &[1]);
            }
            (n > 0, n > 0)
        });
        assert!(used);
        assert_eq!(taken, 2, "the late chain was served");
        assert_eq!(passes, 2, "and no more: nothing came during the second");
    }
}
