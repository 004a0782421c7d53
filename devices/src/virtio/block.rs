//! virtio-blk on a raw file (virtio 1.2, 5.2): read, write, flush (mapped to
//! fdatasync, so an acknowledged flush is on disk), get-id, capacity and
//! read-only disks. Every request is checked before any host I/O: a request
//! beyond the capacity, too short, in the wrong direction or with a length
//! not a multiple of 512 gets VIRTIO_BLK_S_IOERR, and the queue keeps going.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use virtio_queue::{desc::split::Descriptor, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

/// Virtio device id of a block device.
pub const DEVICE_TYPE_BLOCK: u32 = 2;
/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the device id string (VIRTIO_BLK_ID_BYTES).
pub const ID_BYTES: usize = 20;

/// Feature: the config space's seg_max holds the most data segments a
/// request may have (without it Linux sends one segment per request, so a
/// 1 MiB read of scattered pages becomes 256 requests).
pub const VIRTIO_BLK_F_SEG_MAX: u32 = 2;
/// Feature: the device is read-only.
pub const VIRTIO_BLK_F_RO: u32 = 5;
/// Feature: the device supports flush.
pub const VIRTIO_BLK_F_FLUSH: u32 = 9;

/// Request types.
pub const VIRTIO_BLK_T_IN: u32 = 0;
/// Write.
pub const VIRTIO_BLK_T_OUT: u32 = 1;
/// Flush.
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
/// Get the device id string.
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

/// Request status: done.
pub const VIRTIO_BLK_S_OK: u8 = 0;
/// Request status: I/O error (also: a request the device refuses).
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
/// Request status: unsupported request type.
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

const HEADER_LEN: u32 = 16;

/// The most data segments in one request: the longest chain a ring of
/// QUEUE_SIZE descriptors holds (no indirect descriptors), less the header
/// and the status byte. Offered as seg_max; a request's segments go to
/// the file in one preadv or pwritev.
pub const SEG_MAX: usize = QUEUE_SIZE as usize - 2;

/// Counters of what the device did, for tests and metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlockStats {
    /// Requests completed with VIRTIO_BLK_S_OK.
    pub ok: u64,
    /// Requests answered with IOERR or UNSUPP.
    pub failed: u64,
    /// Chains so malformed that no status could be written.
    pub malformed: u64,
    /// Bytes read from the file.
    pub bytes_read: u64,
    /// Bytes written to the file.
    pub bytes_written: u64,
    /// fdatasync calls.
    pub flushes: u64,
}

/// A virtio block device backed by a raw file.
pub struct Block {
    file: File,
    capacity: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    /// What the device did.
    pub stats: BlockStats,
    // Scratch space kept between notifications so the request path does
    // not allocate: the descriptors of every chain taken from the ring,
    // each chain's head index and end in `descs`, one request's data
    // segments, and each finished chain's head index and used length.
    descs: Vec<Descriptor>,
    heads: Vec<(u16, usize)>,
    segs: Vec<(GuestAddress, u32)>,
    done: Vec<(u16, u32)>,
    avail: Vec<u16>,
}

/// Descriptors kept allocated between notifications: a full ring of
/// requests of four descriptors.
const SCRATCH_DESCS: usize = 4 * QUEUE_SIZE as usize;

/// Why a request failed before or during I/O.
#[derive(Debug, PartialEq, Eq)]
enum RequestError {
    /// Answered with this status.
    Status(u8),
    /// No status descriptor to answer in.
    Malformed(&'static str),
}

/// A checked request; its data segments are in `Block::segs`.
struct Request<'m> {
    kind: u32,
    sector: u64,
    /// The status byte, looked up once.
    status: GuestSlice<'m>,
    /// The data of a request with one segment that lies in one region (the
    /// usual case), looked up once; others go through `Block::segs`.
    single: Option<GuestSlice<'m>>,
    data_len: u64,
}

use crate::GuestSlice;

/// The request type and first sector of a little-endian request header.
fn split_header(hdr: &[u8; HEADER_LEN as usize]) -> (u32, u64) {
    let mut kind = [0u8; 4];
    let mut sector = [0u8; 8];
    kind.copy_from_slice(&hdr[0..4]);
    sector.copy_from_slice(&hdr[8..16]);
    (u32::from_le_bytes(kind), u64::from_le_bytes(sector))
}

/// Reads the request header at `addr`: one region lookup and a copy when
/// it lies in one region (vm-memory's generic accessors walk a slice
/// iterator on every call), the generic path otherwise.
fn read_header(mem: &GuestMemoryMmap, addr: GuestAddress) -> Option<[u8; HEADER_LEN as usize]> {
    let mut hdr = [0u8; HEADER_LEN as usize];
    match mem.get_slice(addr, hdr.len()) {
        Ok(slice) => {
            slice.copy_to(&mut hdr[..]);
        }
        Err(_) => mem.read_slice(&mut hdr, addr).ok()?,
    }
    Some(hdr)
}

/// Writes the status byte at `addr` (checked to be guest memory). False if
/// it could not be written.
fn write_status(mem: &GuestMemoryMmap, addr: GuestAddress, status: u8) -> bool {
    match mem.get_slice(addr, 1) {
        Ok(slice) => {
            slice.copy_from(&[status][..]);
            true
        }
        Err(_) => false,
    }
}

/// The used ring: le16 flags, le16 idx, then the elements.
const USED_RING_HEADER: usize = 4;
/// Size of a used-ring element.
const USED_ELEM_LEN: usize = 8;

/// Size of a split-ring descriptor: le64 addr, le32 len, le16 flags, le16 next.
const DESC_LEN: usize = 16;

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
/// table through one slice of guest memory. Follows the same rules as
/// virtio-queue's `DescriptorChain` (at most `size` descriptors, indices
/// below `size`, at most 4 GiB in all) and returns false, appending
/// nothing, for what it leaves to that iterator: a table that is not one
/// slice of guest memory, or an indirect descriptor.
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
            break;
        }
        index = usize::from(desc.next());
    }
    true
}

/// Reads the head indices the driver made available since the queue's
/// next_avail, through one slice of the avail ring, and moves next_avail
/// past them. False (nothing taken) if the ring is not one slice of guest
/// memory, which leaves it to virtio-queue's iterator, or if the driver's
/// index is more than a ring ahead (a broken driver: nothing is taken).
fn take_avail(mem: &GuestMemoryMmap, queue: &mut Queue, heads: &mut Vec<u16>) -> bool {
    let size = queue.size();
    // struct virtq_avail: le16 flags, le16 idx, le16 ring[size].
    let Ok(ring) = mem.get_slice(GuestAddress(queue.avail_ring()), 4 + 2 * usize::from(size))
    else {
        return false;
    };
    let Ok(idx) = ring.load::<u16>(2, std::sync::atomic::Ordering::Acquire) else {
        return false;
    };
    let idx = u16::from_le(idx);
    let next = queue.next_avail();
    let count = idx.wrapping_sub(next);
    if count > size {
        log::warn!("virtio-blk: the avail index {idx} is {count} entries ahead of {next}; ignored");
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

/// Puts the finished requests (head index, used length) on the used ring
/// and publishes the new used index once, after all of them. Returns
/// whether anything was returned.
fn return_used(mem: &GuestMemoryMmap, queue: &mut Queue, done: &[(u16, u32)]) -> bool {
    let size = queue.size();
    let next = queue.next_used();
    let ring_len = USED_RING_HEADER + USED_ELEM_LEN * usize::from(size);
    let fast = if queue.event_idx_enabled() {
        // Notification suppression counts each add_used; keep to it.
        None
    } else {
        mem.get_slice(GuestAddress(queue.used_ring()), ring_len)
            .ok()
    };
    let Some(ring) = fast else {
        let mut used = false;
        for &(head, len) in done {
            if let Err(e) = queue.add_used(mem, head, len) {
                log::warn!("virtio-blk: cannot return descriptor {head}: {e}");
                break;
            }
            used = true;
        }
        return used;
    };
    for (i, &(head, len)) in done.iter().enumerate() {
        // struct virtq_used_elem: le32 id, le32 len.
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
    if ring
        .store(next.to_le(), 2, std::sync::atomic::Ordering::Release)
        .is_err()
    {
        log::warn!("virtio-blk: cannot publish the used index");
        return false;
    }
    queue.set_next_used(next);
    !done.is_empty()
}

/// Whether `len` bytes at `addr` are guest memory: one region lookup for
/// the usual case of a buffer inside one region, a walk over the regions
/// only for a buffer that crosses into the next one.
fn in_guest_memory(mem: &GuestMemoryMmap, addr: GuestAddress, len: usize) -> bool {
    mem.get_slice(addr, len).is_ok() || mem.check_range(addr, len)
}

impl Block {
    /// A block device on `file` of `size` bytes (a multiple of 512), with
    /// `id` as its serial (at most 20 bytes are used).
    pub fn new(file: File, size: u64, read_only: bool, id: &str) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Block {
            file,
            capacity: size / SECTOR_SIZE,
            read_only,
            id: id_bytes,
            stats: BlockStats::default(),
            descs: Vec::with_capacity(SCRATCH_DESCS),
            heads: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            done: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            avail: Vec::with_capacity(usize::from(QUEUE_SIZE)),
            segs: Vec::with_capacity(usize::from(QUEUE_SIZE)),
        }
    }

    /// Checks the chain in `descs` and puts its data segments in `segs`.
    fn parse<'m>(
        mem: &'m GuestMemoryMmap,
        descs: &[Descriptor],
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> Result<Request<'m>, RequestError> {
        segs.clear();
        let (status_desc, rest) = descs
            .split_last()
            .ok_or(RequestError::Malformed("empty chain"))?;
        if !status_desc.is_write_only() || status_desc.len() < 1 {
            return Err(RequestError::Malformed(
                "no writable status byte at the end",
            ));
        }
        let status = mem
            .get_slice(status_desc.addr(), 1)
            .map_err(|_| RequestError::Malformed("status byte outside guest memory"))?;
        let (header, data) = rest
            .split_first()
            .ok_or(RequestError::Status(VIRTIO_BLK_S_IOERR))?;
        if header.is_write_only() || header.len() < HEADER_LEN {
            return Err(RequestError::Status(VIRTIO_BLK_S_IOERR));
        }
        // struct virtio_blk_req: le32 type, le32 reserved, le64 sector.
        let hdr =
            read_header(mem, header.addr()).ok_or(RequestError::Status(VIRTIO_BLK_S_IOERR))?;
        let (kind, sector) = split_header(&hdr);
        let mut data_len = 0u64;
        let mut single = None;
        if let [d] = data {
            single = mem.get_slice(d.addr(), d.len() as usize).ok();
        }
        for d in data {
            if single.is_none() && d.len() > 0 && !in_guest_memory(mem, d.addr(), d.len() as usize)
            {
                return Err(RequestError::Status(VIRTIO_BLK_S_IOERR));
            }
            data_len += u64::from(d.len());
            segs.push((d.addr(), d.len()));
        }
        let want_write_only = match kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID => Some(true),
            VIRTIO_BLK_T_OUT => Some(false),
            _ => None,
        };
        if let Some(w) = want_write_only {
            if data.iter().any(|d| d.is_write_only() != w) {
                return Err(RequestError::Status(VIRTIO_BLK_S_IOERR));
            }
        }
        Ok(Request {
            kind,
            sector,
            status,
            single,
            data_len,
        })
    }

    /// Positioned I/O between the file at `offset` and `len` bytes of guest
    /// memory at `addr`: pread into it, or pwrite from it. One system call
    /// per contiguous piece, no bounce buffer.
    fn file_io(
        &self,
        mem: &GuestMemoryMmap,
        addr: GuestAddress,
        len: usize,
        offset: u64,
        write: bool,
    ) -> io::Result<()> {
        // A buffer inside one region (always, with this VMM's memory map) is
        // one slice; one that crosses into an adjacent region is walked
        // region by region.
        if let Ok(slice) = mem.get_slice(addr, len) {
            return self.slice_io(&slice, offset, write);
        }
        let mut pos = offset;
        for slice in mem.get_slices(addr, len) {
            let slice = slice.map_err(|e| io::Error::other(e.to_string()))?;
            self.slice_io(&slice, pos, write)?;
            pos += slice.len() as u64;
        }
        Ok(())
    }

    /// The segments of a request in one preadv (or pwritev), more only
    /// after a short transfer. Returns false, having done nothing, when a
    /// segment crosses from one memory region into another or there are
    /// more than SEG_MAX: the caller goes segment by segment then.
    fn vectored_io(
        &self,
        mem: &GuestMemoryMmap,
        segs: &[(GuestAddress, u32)],
        offset: u64,
        write: bool,
    ) -> io::Result<bool> {
        if segs.len() > SEG_MAX {
            return Ok(false);
        }
        let Ok(slices) = segs
            .iter()
            .map(|(addr, len)| mem.get_slice(*addr, *len as usize))
            .collect::<Result<Vec<GuestSlice<'_>>, _>>()
        else {
            return Ok(false);
        };
        let mut iovecs = crate::IoVecs::new(&slices);
        let iov = &mut iovecs.iov;
        let fd = self.file.as_raw_fd();
        let (mut first, end) = (0usize, segs.len());
        let mut pos = offset;
        while first < end {
            let off = libc::off_t::try_from(pos)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let count = (end - first) as libc::c_int;
            // SAFETY: iov[first..end] describe pieces of guest memory that
            // vm-memory checked lie inside mappings `mem` keeps alive for
            // this call (their guards are held in `iovecs`); the kernel
            // reads or writes at most their lengths there. No Rust
            // reference to that memory exists.
            let n = unsafe {
                let v = iov.as_ptr().add(first);
                if write {
                    libc::pwritev(fd, v, count, off)
                } else {
                    libc::preadv(fd, v, count, off)
                }
            };
            let mut n = match n {
                n if n > 0 => n as usize,
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(err);
                }
            };
            pos += n as u64;
            // Skip what was transferred; a segment done in part goes on
            // from where it stopped.
            while first < end && n >= iov[first].iov_len {
                n -= iov[first].iov_len;
                first += 1;
            }
            if n > 0 {
                // SAFETY: n < iov[first].iov_len, so the pointer stays
                // inside the same piece of guest memory.
                iov[first].iov_base = unsafe { iov[first].iov_base.cast::<u8>().add(n).cast() };
                iov[first].iov_len -= n;
            }
        }
        Ok(true)
    }

    /// pread into, or pwrite from, one slice of guest memory.
    fn slice_io(
        &self,
        slice: &vm_memory::VolatileSlice<'_, vm_memory::bitmap::BS<'_, ()>>,
        offset: u64,
        write: bool,
    ) -> io::Result<()> {
        let fd = self.file.as_raw_fd();
        let mut pos = offset;
        let guard = slice.ptr_guard_mut();
        let mut done = 0usize;
        while done < guard.len() {
            let off = libc::off_t::try_from(pos)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: the pointer and length describe a piece of guest
            // memory that vm-memory checked lies inside a mapping `mem`
            // keeps alive for this call; the kernel reads or writes at
            // most `guard.len() - done` bytes there. No Rust reference
            // to that memory exists, so concurrent guest access is not
            // undefined behaviour.
            let n = unsafe {
                let ptr = guard.as_ptr().add(done).cast::<libc::c_void>();
                if write {
                    libc::pwrite(fd, ptr, guard.len() - done, off)
                } else {
                    libc::pread(fd, ptr, guard.len() - done, off)
                }
            };
            match n {
                n if n > 0 => {
                    done += n as usize;
                    pos += n as u64;
                }
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                _ => {
                    let err = io::Error::last_os_error();
                    if err.kind() != io::ErrorKind::Interrupted {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks a read or write against the capacity and the sector size.
    fn check_range(&self, req: &Request) -> Result<u64, RequestError> {
        if !req.data_len.is_multiple_of(SECTOR_SIZE) || req.data_len == 0 {
            return Err(RequestError::Status(VIRTIO_BLK_S_IOERR));
        }
        let end = req
            .sector
            .checked_add(req.data_len / SECTOR_SIZE)
            .ok_or(RequestError::Status(VIRTIO_BLK_S_IOERR))?;
        if end > self.capacity {
            return Err(RequestError::Status(VIRTIO_BLK_S_IOERR));
        }
        Ok(req.sector * SECTOR_SIZE)
    }

    /// Reads (or writes) the request's data from (or to) the file, after
    /// checking it against the capacity.
    fn transfer(
        &self,
        mem: &GuestMemoryMmap,
        req: &Request,
        segs: &[(GuestAddress, u32)],
        write: bool,
    ) -> Result<(), RequestError> {
        let io = |_| RequestError::Status(VIRTIO_BLK_S_IOERR);
        let mut offset = self.check_range(req)?;
        if let Some(slice) = &req.single {
            return self.slice_io(slice, offset, write).map_err(io);
        }
        if self.vectored_io(mem, segs, offset, write).map_err(io)? {
            return Ok(());
        }
        for (addr, len) in segs {
            self.file_io(mem, *addr, *len as usize, offset, write)
                .map_err(io)?;
            offset += u64::from(*len);
        }
        Ok(())
    }

    /// Runs a parsed request. Returns the bytes written into guest memory.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        req: &Request,
        segs: &[(GuestAddress, u32)],
    ) -> Result<u32, RequestError> {
        let io = |_| RequestError::Status(VIRTIO_BLK_S_IOERR);
        match req.kind {
            VIRTIO_BLK_T_IN => {
                self.transfer(mem, req, segs, false)?;
                self.stats.bytes_read += req.data_len;
                Ok(req.data_len as u32)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(RequestError::Status(VIRTIO_BLK_S_IOERR));
                }
                self.transfer(mem, req, segs, true)?;
                self.stats.bytes_written += req.data_len;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.file.sync_data().map_err(io)?;
                }
                self.stats.flushes += 1;
                Ok(0)
            }
            VIRTIO_BLK_T_GET_ID => {
                let mut left = ID_BYTES;
                let mut written = 0u32;
                for (addr, len) in segs {
                    let n = (*len as usize).min(left);
                    mem.write_slice(&self.id[ID_BYTES - left..ID_BYTES - left + n], *addr)
                        .map_err(|_| RequestError::Status(VIRTIO_BLK_S_IOERR))?;
                    left -= n;
                    written += n as u32;
                    if left == 0 {
                        break;
                    }
                }
                Ok(written)
            }
            _ => Err(RequestError::Status(VIRTIO_BLK_S_UNSUPP)),
        }
    }

    /// One pass over what the driver made available. Returns whether any
    /// chain was taken and whether the used ring changed.
    fn one_pass(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> (bool, bool) {
        let mut descs = std::mem::take(&mut self.descs);
        let mut heads = std::mem::take(&mut self.heads);
        let mut segs = std::mem::take(&mut self.segs);
        descs.clear();
        heads.clear();
        // Everything the driver has made available, read under one look at
        // the avail index, and at most one pass over the ring: a driver
        // that moves the index ahead of its descriptors cannot keep the
        // device spinning.
        let size = usize::from(queue.size());
        let desc_table = queue.desc_table();
        let mut avail = std::mem::take(&mut self.avail);
        avail.clear();
        let table_is_one_slice = mem
            .get_slice(GuestAddress(desc_table), size * DESC_LEN)
            .is_ok();
        if table_is_one_slice && take_avail(mem, queue, &mut avail) {
            for &head in &avail {
                if usize::from(head) >= size {
                    // Not a descriptor: nothing to answer, nothing to return.
                    log::debug!("virtio-blk: avail ring names descriptor {head} of {size}");
                    self.stats.malformed += 1;
                    continue;
                }
                // An indirect chain (VIRTIO_F_INDIRECT_DESC is not offered)
                // comes back empty and is returned unanswered.
                read_chain(mem, desc_table, size, head, &mut descs);
                heads.push((head, descs.len()));
            }
        } else {
            match queue.iter(mem) {
                Ok(iter) => {
                    for chain in iter.take(size) {
                        let head = chain.head_index();
                        if !read_chain(mem, desc_table, size, head, &mut descs) {
                            descs.extend(chain);
                        }
                        heads.push((head, descs.len()));
                    }
                }
                Err(e) => log::warn!("virtio-blk: cannot read the available ring: {e}"),
            }
        }
        self.avail = avail;
        let mut done = std::mem::take(&mut self.done);
        done.clear();
        let mut start = 0;
        for &(head, end) in &heads {
            let len = self.handle_request(mem, &descs[start..end], &mut segs);
            start = end;
            done.push((head, len));
        }
        let used = return_used(mem, queue, &done);
        // A ring of long chains can leave a large buffer behind; keep only
        // what ordinary requests need.
        descs.shrink_to(SCRATCH_DESCS);
        let progress = !heads.is_empty();
        self.descs = descs;
        self.heads = heads;
        self.segs = segs;
        self.done = done;
        (progress, used)
    }

    /// Handles the request in `descs`. Returns the used length to report.
    fn handle_request(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Descriptor],
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> u32 {
        let req = match Self::parse(mem, descs, segs) {
            Ok(r) => r,
            Err(RequestError::Malformed(why)) => {
                log::debug!("virtio-blk: dropping malformed request: {why}");
                self.stats.malformed += 1;
                return 0;
            }
            Err(RequestError::Status(s)) => {
                // The status descriptor was checked to be there.
                let status = descs.last().map(|d| d.addr());
                self.stats.failed += 1;
                if let Some(addr) = status {
                    if write_status(mem, addr, s) {
                        return 1;
                    }
                }
                return 0;
            }
        };
        let (status, len) = match self.execute(mem, &req, segs) {
            Ok(n) => {
                self.stats.ok += 1;
                (VIRTIO_BLK_S_OK, n)
            }
            Err(RequestError::Status(s)) => {
                self.stats.failed += 1;
                (s, 0)
            }
            Err(RequestError::Malformed(_)) => {
                self.stats.malformed += 1;
                return 0;
            }
        };
        req.status.copy_from(&[status][..]);
        len + 1
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        DEVICE_TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let mut f = (1u64 << VIRTIO_F_VERSION_1)
            | (1u64 << VIRTIO_BLK_F_FLUSH)
            | (1u64 << VIRTIO_BLK_F_SEG_MAX)
            | (1u64 << VIRTIO_RING_F_EVENT_IDX);
        if self.read_only {
            f |= 1u64 << VIRTIO_BLK_F_RO;
        }
        f
    }

    /// Nothing to record: the device behaves the same whatever the driver
    /// accepted (a read-only disk refuses writes either way).
    fn ack_features(&mut self, _features: u64) {}

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config starts with `le64 capacity`, `le32
        // size_max` (no limit offered) and `le32 seg_max`.
        let mut config = [0u8; 16];
        config[..8].copy_from_slice(&self.capacity.to_le_bytes());
        config[12..].copy_from_slice(&(SEG_MAX as u32).to_le_bytes());
        super::read_config_bytes(&config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        log::debug!("virtio-blk: write to read-only config at {offset:#x} ignored");
    }

    fn process_queue(&mut self, mem: &GuestMemoryMmap, _index: usize, queue: &mut Queue) -> bool {
        let mut used = false;
        loop {
            let (progress, changed) = self.one_pass(mem, queue);
            used |= changed;
            // Ask for the next notification; requests that came in
            // meanwhile would not bring one, so go on while they do (and
            // while passes make progress: a driver whose avail index runs
            // ahead of its ring cannot keep the device spinning).
            match queue.enable_notification(mem) {
                Ok(true) if progress => continue,
                Ok(_) => break,
                Err(e) => {
                    log::warn!("virtio-blk: cannot re-enable notifications: {e}");
                    break;
                }
            }
        }
        used
    }

    fn stats(&self) -> Option<String> {
        let s = &self.stats;
        Some(format!(
            "virtio-blk {}: {} requests done, {} failed, {} malformed; {} bytes read, {} written, {} flushes",
            String::from_utf8_lossy(&self.id).trim_end_matches('\0'),
            s.ok, s.failed, s.malformed, s.bytes_read, s.bytes_written, s.flushes
        ))
    }

    /// No state survives a request, so a reset has nothing to undo.
    fn reset(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom, Write};
    use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Address;

    const MEM_SIZE: usize = 0x10_0000;
    const STATUS: u64 = 0x3000;
    const HDR: u64 = 0x4000;
    const DATA: u64 = 0x8000;
    const DISK_SECTORS: u64 = 128; // 64 KiB

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
    }

    fn disk() -> (File, Vec<u8>) {
        let path = std::env::temp_dir().join(format!(
            "vmm-blk-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        let content: Vec<u8> = (0..DISK_SECTORS * SECTOR_SIZE)
            .map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8))
            .collect();
        f.write_all(&content).unwrap();
        (f, content)
    }

    fn file_bytes(dev: &mut Block) -> Vec<u8> {
        let mut v = Vec::new();
        dev.file.seek(SeekFrom::Start(0)).unwrap();
        dev.file.read_to_end(&mut v).unwrap();
        v
    }

    fn desc(addr: u64, len: u32, write: bool) -> RawDescriptor {
        let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0))
    }

    fn header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
        m.write_obj(kind, GuestAddress(HDR)).unwrap();
        m.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        m.write_obj(sector, GuestAddress(HDR + 8)).unwrap();
    }

    /// Links `descs` into one chain at table slot `first` and makes it
    /// available.
    fn chain(q: &MockSplitQueue<GuestMemoryMmap>, descs: &[RawDescriptor], first: u16) {
        let n = descs.len();
        let linked: Vec<RawDescriptor> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let d = SplitDescriptor::from(*d);
                let (flags, next) = if i + 1 < n {
                    (d.flags() | VRING_DESC_F_NEXT as u16, first + i as u16 + 1)
                } else {
                    (d.flags(), 0)
                };
                RawDescriptor::from(SplitDescriptor::new(d.addr().0, d.len(), flags, next))
            })
            .collect();
        q.add_desc_chains(&linked, first).unwrap();
    }

    struct Run {
        status: u8,
        used_len: u32,
    }

    fn run(dev: &mut Block, m: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Run {
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let vq = MockSplitQueue::create(m, GuestAddress(0), 16);
        chain(&vq, descs, 0);
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(dev.process_queue(m, 0, &mut q));
        assert_eq!(q.next_used(), 1, "the chain must be returned");
        let used_len = vq.used().ring().ref_at(0).unwrap().load().len();
        Run {
            status: m.read_obj(GuestAddress(STATUS)).unwrap(),
            used_len,
        }
    }

    fn block(ro: bool) -> (Block, Vec<u8>) {
        let (f, content) = disk();
        (
            Block::new(f, DISK_SECTORS * SECTOR_SIZE, ro, "disk-id-1"),
            content,
        )
    }

    #[test]
    fn reads_land_in_guest_memory() {
        let (mut dev, content) = block(false);
        let m = mem();
        header(&m, VIRTIO_BLK_T_IN, 3);
        let r = run(
            &mut dev,
            &m,
            &[
                desc(HDR, 16, false),
                desc(DATA, 4096, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 4097));
        let mut got = vec![0u8; 4096];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, content[3 * 512..3 * 512 + 4096]);
        assert_eq!(dev.stats.bytes_read, 4096);
    }

    #[test]
    fn scattered_reads_and_writes() {
        let (mut dev, mut content) = block(false);
        let m = mem();
        m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        m.write_slice(&[0xcd; 1024], GuestAddress(DATA + 0x1000))
            .unwrap();
        header(&m, VIRTIO_BLK_T_OUT, 10);
        let d = [
            desc(HDR, 16, false),
            desc(DATA, 512, false),
            desc(DATA + 0x1000, 1024, false),
            desc(STATUS, 1, true),
        ];
        let r = run(&mut dev, &m, &d);
        assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 1));
        content[10 * 512..11 * 512].fill(0xab);
        content[11 * 512..13 * 512].fill(0xcd);
        assert_eq!(file_bytes(&mut dev), content);
    }

    /// A request of many scattered segments, as Linux sends with seg_max:
    /// read and written in order, whole, and a short file ends it in IOERR.
    #[test]
    fn many_segments_go_to_the_file_in_order() {
        let (mut dev, mut content) = block(false);
        let m = mem();
        // Eight 512-byte pieces, each in its own page, in reverse page
        // order, so that file order differs from memory order.
        let pieces: Vec<u64> = (0..8).rev().map(|i| DATA + i * 0x1000).collect();
        for (k, &addr) in pieces.iter().enumerate() {
            m.write_slice(&[k as u8 + 1; 512], GuestAddress(addr))
                .unwrap();
        }
        let mut d = vec![desc(HDR, 16, false)];
        d.extend(pieces.iter().map(|&a| desc(a, 512, false)));
        d.push(desc(STATUS, 1, true));
        header(&m, VIRTIO_BLK_T_OUT, 4);
        let r = run(&mut dev, &m, &d);
        assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 1));
        for k in 0..8 {
            content[(4 + k) * 512..(5 + k) * 512].fill(k as u8 + 1);
        }
        assert_eq!(file_bytes(&mut dev), content);
        assert_eq!(dev.stats.bytes_written, 8 * 512);

        // Read back into other pages, the same scatter.
        for &addr in &pieces {
            m.write_slice(&[0; 512], GuestAddress(addr)).unwrap();
        }
        let mut d = vec![desc(HDR, 16, false)];
        d.extend(pieces.iter().map(|&a| desc(a, 512, true)));
        d.push(desc(STATUS, 1, true));
        header(&m, VIRTIO_BLK_T_IN, 4);
        let r = run(&mut dev, &m, &d);
        assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 8 * 512 + 1));
        for (k, &addr) in pieces.iter().enumerate() {
            let mut got = [0u8; 512];
            m.read_slice(&mut got, GuestAddress(addr)).unwrap();
            assert_eq!(got, [k as u8 + 1; 512], "piece {k}");
        }

        // The file shrunk under the VM to end in the middle of the
        // request: a short read, then the end of the file, is IOERR.
        dev.file.set_len(6 * 512).unwrap();
        header(&m, VIRTIO_BLK_T_IN, 4);
        let r = run(&mut dev, &m, &d);
        assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
    }

    #[test]
    fn flush_and_get_id() {
        let (mut dev, content) = block(false);
        let m = mem();
        header(&m, VIRTIO_BLK_T_FLUSH, 0);
        let r = run(&mut dev, &m, &[desc(HDR, 16, false), desc(STATUS, 1, true)]);
        assert_eq!(r.status, VIRTIO_BLK_S_OK);
        assert_eq!(dev.stats.flushes, 1);
        header(&m, VIRTIO_BLK_T_GET_ID, 0);
        let r = run(
            &mut dev,
            &m,
            &[
                desc(HDR, 16, false),
                desc(DATA, 20, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 21));
        let mut id = [0u8; 20];
        m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
        assert_eq!(&id[..9], b"disk-id-1");
        assert_eq!(id[9..], [0; 11]);
        assert_eq!(file_bytes(&mut dev), content);
    }

    /// The helper side of `an_acknowledged_flush_survives_kill_9`: a write
    /// and a flush through the device, "acked" once both are answered OK,
    /// then it waits to be killed.
    fn flush_helper(path: &str) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut dev = Block::new(f, DISK_SECTORS * SECTOR_SIZE, false, "kill");
        let m = mem();
        let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
        m.write_slice(&[0xab; 4096], GuestAddress(DATA)).unwrap();
        header(&m, VIRTIO_BLK_T_OUT, 8);
        assert_eq!(
            run(&mut dev, &m, &[hdr, desc(DATA, 4096, false), st]).status,
            VIRTIO_BLK_S_OK
        );
        header(&m, VIRTIO_BLK_T_FLUSH, 0);
        assert_eq!(run(&mut dev, &m, &[hdr, st]).status, VIRTIO_BLK_S_OK);
        println!("acked");
        std::io::stdout().flush().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(120));
    }

    /// A write the guest saw acknowledged by a flush is in the host file
    /// after the VMM process is killed with SIGKILL. The device runs in a
    /// child process (this test binary again, in helper mode).
    #[test]
    fn an_acknowledged_flush_survives_kill_9() {
        if let Ok(path) = std::env::var("VMM_FLUSH_HELPER") {
            flush_helper(&path);
            return;
        }
        use std::io::BufRead;
        let path = std::env::temp_dir().join(format!("vmm-blk-kill-{}", std::process::id()));
        std::fs::write(&path, vec![0u8; (DISK_SECTORS * SECTOR_SIZE) as usize]).unwrap();
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "virtio::block::tests::an_acknowledged_flush_survives_kill_9",
            ])
            .args(["--nocapture", "--test-threads=1"])
            .env("VMM_FLUSH_HELPER", &path)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let acked = out
            .lines()
            .map_while(Result::ok)
            .any(|l| l.contains("acked"));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(acked, "the helper never acknowledged");
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        let data = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&data[8 * 512..8 * 512 + 4096], &[0xab; 4096][..]);
        assert!(data[..8 * 512].iter().all(|&b| b == 0));
    }

    /// Host faults under a running disk: the guest gets IOERR, the device
    /// keeps answering, nothing panics.
    #[test]
    fn a_full_host_disk_gives_the_guest_ioerr() {
        // /dev/full: every write fails with ENOSPC, reads give zeros, and
        // it cannot be synced.
        let full = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/full")
            .unwrap();
        let mut dev = Block::new(full, DISK_SECTORS * SECTOR_SIZE, false, "full");
        let m = mem();
        let data = desc(DATA, 4096, false);
        let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
        header(&m, VIRTIO_BLK_T_OUT, 0);
        assert_eq!(
            run(&mut dev, &m, &[hdr, data, st]).status,
            VIRTIO_BLK_S_IOERR
        );
        header(&m, VIRTIO_BLK_T_FLUSH, 0);
        let flushed = run(&mut dev, &m, &[hdr, st]).status;
        assert!(matches!(flushed, VIRTIO_BLK_S_OK | VIRTIO_BLK_S_IOERR));
        // Reads still work: the device goes on.
        header(&m, VIRTIO_BLK_T_IN, 0);
        m.write_slice(&[0x55; 4096], GuestAddress(DATA)).unwrap();
        let r = run(&mut dev, &m, &[hdr, desc(DATA, 4096, true), st]);
        assert_eq!(r.status, VIRTIO_BLK_S_OK);
        let mut back = [0xffu8; 4096];
        m.read_slice(&mut back, GuestAddress(DATA)).unwrap();
        assert_eq!(back, [0u8; 4096]);
        assert_eq!(dev.stats.failed, 1 + u64::from(flushed != VIRTIO_BLK_S_OK));
    }

    #[test]
    fn a_disk_file_removed_or_shrunk_under_the_vm() {
        let path = std::env::temp_dir().join(format!("vmm-blk-rm-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; (DISK_SECTORS * SECTOR_SIZE) as usize]).unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let mut dev = Block::new(f, DISK_SECTORS * SECTOR_SIZE, false, "rm");
        let m = mem();
        let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
        // Removed: the open file lives on (Unix), the guest's I/O succeeds
        // on it, and no other file is touched.
        std::fs::remove_file(&path).unwrap();
        header(&m, VIRTIO_BLK_T_OUT, 8);
        m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
        let r = run(&mut dev, &m, &[hdr, desc(DATA, 512, false), st]);
        assert_eq!(r.status, VIRTIO_BLK_S_OK);
        assert!(!path.exists());
        // Shrunk to nothing by someone else: reads past the new end are
        // IOERR, not a crash, and writes still land.
        dev.file.set_len(0).unwrap();
        header(&m, VIRTIO_BLK_T_IN, 8);
        let r = run(&mut dev, &m, &[hdr, desc(DATA, 512, true), st]);
        assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
        header(&m, VIRTIO_BLK_T_OUT, 0);
        let r = run(&mut dev, &m, &[hdr, desc(DATA, 512, false), st]);
        assert_eq!(r.status, VIRTIO_BLK_S_OK);
        assert_eq!(file_bytes(&mut dev).len(), 512);
    }

    /// Each of these gets IOERR (or UNSUPP) and leaves the file untouched.
    #[test]
    fn rejected_requests_do_no_host_io() {
        let m = mem();
        let hdr = desc(HDR, 16, false);
        let st = desc(STATUS, 1, true);
        let cases: Vec<(&str, u32, u64, Vec<RawDescriptor>, u8)> = vec![
            (
                "read past the end",
                VIRTIO_BLK_T_IN,
                DISK_SECTORS - 1,
                vec![hdr, desc(DATA, 1024, true), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "write past the end",
                VIRTIO_BLK_T_OUT,
                DISK_SECTORS,
                vec![hdr, desc(DATA, 512, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "sector overflow",
                VIRTIO_BLK_T_OUT,
                u64::MAX,
                vec![hdr, desc(DATA, 512, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "write not a multiple of 512",
                VIRTIO_BLK_T_OUT,
                0,
                vec![hdr, desc(DATA, 100, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "read not a multiple of 512",
                VIRTIO_BLK_T_IN,
                0,
                vec![hdr, desc(DATA, 513, true), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "write with no data",
                VIRTIO_BLK_T_OUT,
                0,
                vec![hdr, st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "write from a device-writable buffer",
                VIRTIO_BLK_T_OUT,
                0,
                vec![hdr, desc(DATA, 512, true), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "read into a read-only buffer",
                VIRTIO_BLK_T_IN,
                0,
                vec![hdr, desc(DATA, 512, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "header too short",
                VIRTIO_BLK_T_OUT,
                0,
                vec![desc(HDR, 8, false), desc(DATA, 512, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "header device-writable",
                VIRTIO_BLK_T_OUT,
                0,
                vec![desc(HDR, 16, true), desc(DATA, 512, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "data outside guest RAM",
                VIRTIO_BLK_T_OUT,
                0,
                vec![hdr, desc(MEM_SIZE as u64 - 256, 512, false), st],
                VIRTIO_BLK_S_IOERR,
            ),
            (
                "unknown request type",
                11,
                0,
                vec![hdr, desc(DATA, 512, false), st],
                VIRTIO_BLK_S_UNSUPP,
            ),
        ];
        for (what, kind, sector, descs, want) in cases {
            let (mut dev, content) = block(false);
            m.write_slice(&[0x5a; 1024], GuestAddress(DATA)).unwrap();
            header(&m, kind, sector);
            let r = run(&mut dev, &m, &descs);
            assert_eq!(r.status, want, "{what}");
            assert_eq!(r.used_len, 1, "{what}");
            assert_eq!(dev.stats.bytes_written + dev.stats.bytes_read, 0, "{what}");
            assert_eq!(file_bytes(&mut dev), content, "{what}: host file changed");
        }
    }

    #[test]
    fn read_only_disk_refuses_writes_and_says_so() {
        let (mut dev, content) = block(true);
        assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
        let m = mem();
        header(&m, VIRTIO_BLK_T_OUT, 0);
        let r = run(
            &mut dev,
            &m,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, false),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
        header(&m, VIRTIO_BLK_T_IN, 0);
        let r = run(
            &mut dev,
            &m,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!(r.status, VIRTIO_BLK_S_OK);
        assert_eq!(file_bytes(&mut dev), content);
    }

    #[test]
    fn chains_without_a_status_byte_are_returned_unanswered() {
        let (mut dev, content) = block(false);
        let m = mem();
        header(&m, VIRTIO_BLK_T_OUT, 0);
        // Last descriptor is not device-writable: nowhere to put a status.
        let r = run(
            &mut dev,
            &m,
            &[desc(HDR, 16, false), desc(DATA, 512, false)],
        );
        assert_eq!((r.status, r.used_len), (0xff, 0));
        // Status byte outside guest RAM.
        let r = run(
            &mut dev,
            &m,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, false),
                desc(MEM_SIZE as u64, 1, true),
            ],
        );
        assert_eq!(r.used_len, 0);
        assert_eq!(dev.stats.malformed, 2);
        assert_eq!(file_bytes(&mut dev), content);
    }

    #[test]
    fn a_looping_chain_ends_without_host_io() {
        let (mut dev, content) = block(false);
        let m = mem();
        header(&m, VIRTIO_BLK_T_OUT, 0);
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        // 0 -> 1 -> 0 -> ...
        let d0 = RawDescriptor::from(SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1));
        let d1 = RawDescriptor::from(SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            0,
        ));
        vq.add_desc_chains(&[d0, d1], 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        dev.process_queue(&m, 0, &mut q);
        assert_eq!(dev.stats.bytes_written, 0);
        assert_eq!(file_bytes(&mut dev), content);
    }

    #[test]
    fn an_avail_index_far_ahead_does_not_spin_or_panic() {
        let (mut dev, content) = block(false);
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        header(&m, VIRTIO_BLK_T_IN, 0);
        chain(
            &vq,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, true),
                desc(STATUS, 1, true),
            ],
            0,
        );
        // The driver claims 1000 more entries than it wrote.
        vq.avail().idx().store(1001);
        let mut q: Queue = vq.create_queue().unwrap();
        dev.process_queue(&m, 0, &mut q);
        assert!(u64::from(q.next_used()) <= 16);
        assert_eq!(file_bytes(&mut dev), content);
        // A sane request afterwards on a fresh queue still works.
        let r = run(
            &mut dev,
            &m,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, true),
                desc(STATUS, 1, true),
            ],
        );
        assert_eq!(r.status, VIRTIO_BLK_S_OK);
    }

    #[test]
    fn config_space_holds_the_capacity() {
        let (dev, _) = block(false);
        let mut cap = [0u8; 8];
        dev.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS);
        let mut hi = [0xffu8; 4];
        dev.read_config(4, &mut hi);
        assert_eq!(hi, [0; 4]);
        // size_max: none; seg_max: SEG_MAX, offered.
        let mut limits = [0xffu8; 8];
        dev.read_config(8, &mut limits);
        assert_eq!(limits[..4], [0; 4]);
        assert_eq!(u32::from_le_bytes(limits[4..].try_into().unwrap()), 254);
        assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_SEG_MAX), 0);
        let mut beyond = [0xffu8; 4];
        dev.read_config(0x100, &mut beyond);
        assert_eq!(beyond, [0; 4]);
        dev.read_config(u64::MAX, &mut beyond);
        assert_eq!(beyond, [0; 4]);
    }

    /// Puts chains on the ring the way a driver does, with avail ring
    /// positions taken modulo the queue size (the mock's own helper does
    /// not wrap), and moves the avail index on.
    fn offer(m: &GuestMemoryMmap, vq: &MockSplitQueue<GuestMemoryMmap>, size: u16, heads: &[u16]) {
        let idx_addr = vq.avail_addr().unchecked_add(2);
        let mut idx: u16 = m.read_obj(idx_addr).unwrap();
        for &h in heads {
            let slot = vq.avail_addr().unchecked_add(4 + 2 * u64::from(idx % size));
            m.write_obj(h, slot).unwrap();
            idx = idx.wrapping_add(1);
        }
        m.write_obj(idx, idx_addr).unwrap();
    }

    #[test]
    fn used_ring_wraps_with_the_index() {
        // Eight slots hold two three-descriptor chains per pass; four passes
        // starting just below the 16-bit wrap, as after a long uptime, go
        // through ring slots 5, 6, 7, 0... and index 65535 -> 0.
        const SIZE: u16 = 8;
        let (mut dev, content) = block(false);
        let m = mem();
        let vq = MockSplitQueue::create(&m, GuestAddress(0), SIZE);
        let mut q: Queue = vq.create_queue().unwrap();
        let start = u16::MAX - 2;
        m.write_obj(start, vq.avail_addr().unchecked_add(2))
            .unwrap();
        m.write_obj(start, vq.used_addr().unchecked_add(2)).unwrap();
        q.set_next_avail(start);
        q.set_next_used(start);
        for pass in 0..4u16 {
            for r in 0..2u16 {
                let n = pass * 2 + r;
                let hdr = HDR + u64::from(n) * 16;
                m.write_obj(VIRTIO_BLK_T_IN, GuestAddress(hdr)).unwrap();
                m.write_obj(0u32, GuestAddress(hdr + 4)).unwrap();
                m.write_obj(u64::from(n), GuestAddress(hdr + 8)).unwrap();
                let first = r * 3;
                let link = |d: RawDescriptor, next: u16| {
                    let d = SplitDescriptor::from(d);
                    RawDescriptor::from(SplitDescriptor::new(
                        d.addr().0,
                        d.len(),
                        d.flags() | VRING_DESC_F_NEXT as u16,
                        next,
                    ))
                };
                let chain = [
                    link(desc(hdr, 16, false), first + 1),
                    link(desc(DATA + u64::from(n) * 512, 512, true), first + 2),
                    desc(STATUS + u64::from(n), 1, true),
                ];
                for (i, d) in chain.iter().enumerate() {
                    vq.desc_table().store(first + i as u16, *d).unwrap();
                }
            }
            offer(&m, &vq, SIZE, &[0, 3]);
            assert!(dev.process_queue(&m, 0, &mut q));
            let want = start.wrapping_add(2 * (pass + 1));
            assert_eq!(q.next_used(), want);
            let published: u16 = m.read_obj(vq.used_addr().unchecked_add(2)).unwrap();
            assert_eq!(published, want, "pass {pass}: used index in guest memory");
            for r in 0..2u16 {
                let idx = start.wrapping_add(pass * 2 + r);
                let elem = vq
                    .used()
                    .ring()
                    .ref_at(usize::from(idx % SIZE))
                    .unwrap()
                    .load();
                assert_eq!(
                    (elem.id(), elem.len()),
                    (u32::from(r * 3), 513),
                    "pass {pass}"
                );
            }
        }
        for n in 0..8u64 {
            let s: u8 = m.read_obj(GuestAddress(STATUS + n)).unwrap();
            assert_eq!(s, VIRTIO_BLK_S_OK);
            let mut got = vec![0u8; 512];
            m.read_slice(&mut got, GuestAddress(DATA + n * 512))
                .unwrap();
            let at = (n * SECTOR_SIZE) as usize;
            assert_eq!(got, content[at..at + 512], "request {n} read sector {n}");
        }
        // Nothing more was offered: a notification now returns nothing.
        assert!(!dev.process_queue(&m, 0, &mut q));
    }

    #[test]
    fn descriptor_walk_matches_virtio_queue() {
        // Random descriptor tables, every head: the device's own walk of
        // the table yields exactly what virtio-queue's DescriptorChain does
        // (bad next indices, loops, lengths adding up past 4 GiB).
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
                        RawDescriptor::from(SplitDescriptor::new(r >> 44, len, flags, next)),
                    )
                    .unwrap();
            }
            m.write_obj(0u16, vq.avail_addr().unchecked_add(2)).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            for head in 0..SIZE {
                offer(&m, &vq, SIZE, &[head]);
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
                assert_eq!(ours, theirs, "head {head}");
            }
        }
    }

    #[test]
    fn indirect_descriptors_are_refused_without_io() {
        // VIRTIO_F_INDIRECT_DESC is not offered: a driver must not use them
        // (virtio 1.2, 2.7.5.3.1); the chain is returned unanswered.
        let (mut dev, content) = block(false);
        let m = mem();
        header(&m, VIRTIO_BLK_T_IN, 2);
        // An indirect table of hdr, data, status at 0x6000.
        let table = 0x6000u64;
        let entries = [
            SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
            SplitDescriptor::new(
                DATA,
                512,
                (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
                2,
            ),
            SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
        ];
        for (i, d) in entries.iter().enumerate() {
            m.write_obj(*d, GuestAddress(table + 16 * i as u64))
                .unwrap();
        }
        let mut ours = Vec::new();
        let indirect = RawDescriptor::from(SplitDescriptor::new(
            table,
            48,
            virtio_bindings::bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
            0,
        ));
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        vq.add_desc_chains(&[indirect], 0).unwrap();
        assert!(!read_chain(&m, vq.desc_table_addr().0, 16, 0, &mut ours));
        assert!(ours.is_empty(), "nothing appended for an indirect chain");
        let mut q: Queue = vq.create_queue().unwrap();
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        m.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
        assert!(dev.process_queue(&m, 0, &mut q));
        assert_eq!(q.next_used(), 1, "the chain is returned");
        assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
        let s: u8 = m.read_obj(GuestAddress(STATUS)).unwrap();
        assert_eq!(s, 0xff, "no status written");
        let mut got = vec![0u8; 512];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, vec![0x77; 512], "nothing read into guest memory");
        assert_eq!((dev.stats.malformed, dev.stats.bytes_read), (1, 0));
        assert_eq!(file_bytes(&mut dev), content);
    }

    #[test]
    fn with_event_idx_requests_go_through_add_used_and_set_the_avail_event() {
        let (mut dev, content) = block(false);
        let m = mem();
        header(&m, VIRTIO_BLK_T_IN, 1);
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        chain(
            &vq,
            &[
                desc(HDR, 16, false),
                desc(DATA, 512, true),
                desc(STATUS, 1, true),
            ],
            0,
        );
        let mut q: Queue = vq.create_queue().unwrap();
        q.set_event_idx(true);
        // The driver wants an interrupt once the first request is used.
        m.write_obj(0u16, vq.avail_addr().unchecked_add(4 + 2 * 16))
            .unwrap();
        assert!(dev.process_queue(&m, 0, &mut q));
        assert_eq!(q.next_used(), 1);
        assert!(
            q.needs_notification(&m).unwrap(),
            "used_event 0 was crossed"
        );
        let avail_event: u16 = m
            .read_obj(vq.used_addr().unchecked_add(4 + 8 * 16))
            .unwrap();
        assert_eq!(avail_event, 1);
        let mut got = vec![0u8; 512];
        m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
        assert_eq!(got, content[512..1024]);
    }
}
