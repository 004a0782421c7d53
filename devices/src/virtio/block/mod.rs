//! virtio-blk on a raw file or a copy-on-write overlay (`disk`) (virtio
//! 1.2, 5.2): read, write, flush (mapped to fdatasync, so an acknowledged
//! flush is on disk), get-id, capacity and read-only disks. Every request is checked before any host I/O: a request
//! beyond the capacity, too short, in the wrong direction or with a length
//! not a multiple of 512 gets VIRTIO_BLK_S_IOERR, and the queue keeps going.

pub mod disk;
mod io;
mod request;

pub use disk::{Disk, Format};

use virtio_queue::{desc::split::Descriptor, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::queue::{self, Chains};
use super::{VirtioDevice, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use request::{Request, RequestError};

use virtio_bindings::virtio_blk as blk;

/// Virtio device id of a block device.
pub const DEVICE_TYPE_BLOCK: u32 = virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;
/// Queue size offered.
pub const QUEUE_SIZE: u16 = 256;
/// Length of the device id string.
pub const ID_BYTES: usize = blk::VIRTIO_BLK_ID_BYTES as usize;

/// Features offered: seg_max in the config space holds the most data
/// segments a request may have (without it Linux sends one segment per
/// request, so a 1 MiB read of scattered pages becomes 256 requests); a
/// read-only device; flush.
pub use blk::{VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX};
/// Request types: read, write, flush, get the device id string.
pub use blk::{VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};

/// Request status: done.
pub const VIRTIO_BLK_S_OK: u8 = blk::VIRTIO_BLK_S_OK as u8;
/// Request status: I/O error (also: a request the device refuses).
pub const VIRTIO_BLK_S_IOERR: u8 = blk::VIRTIO_BLK_S_IOERR as u8;
/// Request status: unsupported request type.
pub const VIRTIO_BLK_S_UNSUPP: u8 = blk::VIRTIO_BLK_S_UNSUPP as u8;

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

/// A virtio block device backed by a disk (a raw file or an overlay).
pub struct Block {
    disk: Disk,
    capacity: u64,
    read_only: bool,
    id: [u8; ID_BYTES],
    /// What the device did.
    pub stats: BlockStats,
    // Scratch space kept between notifications so the request path does
    // not allocate: the chains taken from the ring, one request's data
    // segments, and each finished chain's head index and used length.
    chains: Chains,
    segs: Vec<(GuestAddress, u32)>,
    done: Vec<(u16, u32)>,
}

impl Block {
    /// A block device on `disk` of `size` bytes (a multiple of 512), with
    /// `id` as its serial (at most 20 bytes are used).
    pub fn new(disk: impl Into<Disk>, size: u64, read_only: bool, id: &str) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        let ring = usize::from(QUEUE_SIZE);
        Block {
            disk: disk.into(),
            capacity: size / SECTOR_SIZE,
            read_only,
            id: id_bytes,
            stats: BlockStats::default(),
            // A full ring of requests of four descriptors.
            chains: Chains::with_capacity(ring, 4),
            segs: Vec::with_capacity(ring),
            done: Vec::with_capacity(ring),
        }
    }

    /// Runs a parsed request. Returns the bytes written into guest memory.
    fn execute(
        &mut self,
        mem: &GuestMemoryMmap,
        req: &Request,
        segs: &[(GuestAddress, u32)],
    ) -> Result<u32, RequestError> {
        match req.kind {
            VIRTIO_BLK_T_IN => {
                let offset = req.offset(self.capacity)?;
                self.read(mem, req, segs, offset)?;
                self.stats.bytes_read += req.data_len;
                Ok(req.data_len as u32)
            }
            VIRTIO_BLK_T_OUT => {
                if self.read_only {
                    return Err(RequestError::IOERR);
                }
                let offset = req.offset(self.capacity)?;
                let (file, at) = self
                    .disk
                    .prepare_write(offset, req.data_len)
                    .map_err(|_| RequestError::IOERR)?;
                io::transfer(file, mem, req.single.as_ref(), segs, at, true)?;
                self.disk.wrote(offset, req.data_len);
                self.stats.bytes_written += req.data_len;
                Ok(0)
            }
            VIRTIO_BLK_T_FLUSH => {
                if !self.read_only {
                    self.disk.flush().map_err(|_| RequestError::IOERR)?;
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
                        .map_err(|_| RequestError::IOERR)?;
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

    /// Reads the request's data at `offset`: straight from the one file
    /// that holds the range (a raw disk's, or an overlay whose range is all
    /// in one layer), else piece by piece, each piece's segments from the
    /// file that holds it.
    fn read(
        &mut self,
        mem: &GuestMemoryMmap,
        req: &Request,
        segs: &[(GuestAddress, u32)],
        offset: u64,
    ) -> Result<(), RequestError> {
        if let Disk::Raw(file) = &self.disk {
            return io::transfer(file, mem, req.single.as_ref(), segs, offset, false);
        }
        let mut runs = Vec::new();
        self.disk.runs(offset, req.data_len, &mut runs);
        if let [run] = runs[..] {
            return io::transfer(
                run.file,
                mem,
                req.single.as_ref(),
                segs,
                run.file_offset,
                false,
            );
        }
        let mut piece = Vec::new();
        let mut skip = 0u64;
        for run in runs {
            io::sub_segments(segs, skip, run.len, &mut piece);
            io::transfer(run.file, mem, None, &piece, run.file_offset, false)?;
            skip += run.len;
        }
        Ok(())
    }

    /// One pass over what the driver made available. Returns whether any
    /// chain was taken and whether the used ring changed.
    fn one_pass(&mut self, mem: &GuestMemoryMmap, queue: &mut Queue) -> (bool, bool) {
        let mut chains = std::mem::replace(&mut self.chains, Chains::with_capacity(0, 0));
        let mut done = std::mem::take(&mut self.done);
        let mut segs = std::mem::take(&mut self.segs);
        done.clear();
        self.stats.malformed += chains.take(mem, queue, "virtio-blk") as u64;
        for (head, descs) in chains.iter() {
            let len = self.handle_request(mem, descs, &mut segs);
            done.push((head, len));
        }
        let used = queue::return_used(mem, queue, &done, "virtio-blk");
        let progress = !chains.is_empty();
        self.chains = chains;
        self.done = done;
        self.segs = segs;
        (progress, used)
    }

    /// Handles the request in `descs`. Returns the used length to report.
    fn handle_request(
        &mut self,
        mem: &GuestMemoryMmap,
        descs: &[Descriptor],
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> u32 {
        let req = match Request::parse(mem, descs, segs) {
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
                    if request::write_status(mem, addr, s) {
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

    fn replace_backing(&mut self, disk: Disk, size: u64) -> Result<(), String> {
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(format!(
                "its size, {size} bytes, is not a multiple of {SECTOR_SIZE}"
            ));
        }
        self.disk = disk;
        self.capacity = size / SECTOR_SIZE;
        Ok(())
    }

    fn process_queue(&mut self, mem: &GuestMemoryMmap, _index: usize, queue: &mut Queue) -> bool {
        queue::serve(mem, queue, "virtio-blk", |mem, queue| {
            self.one_pass(mem, queue)
        })
    }

    fn stats(&self) -> Option<String> {
        let s = &self.stats;
        Some(format!(
            "virtio-blk {}: {} requests done, {} failed, {} malformed; {} bytes read, {} written, {} flushes",
            self.id(),
            s.ok, s.failed, s.malformed, s.bytes_read, s.bytes_written, s.flushes
        ))
    }

    fn id(&self) -> String {
        String::from_utf8_lossy(&self.id)
            .trim_end_matches('\0')
            .to_string()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let s = &self.stats;
        vec![
            ("requests_ok", s.ok),
            ("requests_failed", s.failed),
            ("requests_malformed", s.malformed),
            ("bytes_read", s.bytes_read),
            ("bytes_written", s.bytes_written),
            ("flushes", s.flushes),
        ]
    }

    /// No state survives a request, so a reset has nothing to undo.
    fn reset(&mut self) {}

    /// The disk's writes, and an overlay's bitmap, on disk: the disk a
    /// snapshot refers to is the one the guest saw.
    fn quiesce(&mut self, _mem: &GuestMemoryMmap, _queues: &mut [Queue]) -> u32 {
        if !self.read_only {
            if let Err(e) = self.disk.flush() {
                log::warn!("virtio-blk {}: flush before the snapshot: {e}", self.id());
            }
        }
        0
    }

    fn save(&self) -> super::DeviceSnapshot {
        super::DeviceSnapshot::Block {
            capacity: self.capacity,
            read_only: self.read_only,
            id: self.id(),
        }
    }

    /// The disk reopened must be what the guest saw: same size, same mode;
    /// it takes the saved serial.
    fn restore(&mut self, snap: &super::DeviceSnapshot) -> Result<(), String> {
        let super::DeviceSnapshot::Block {
            capacity,
            read_only,
            id,
        } = snap
        else {
            return Err(format!(
                "virtio-blk given the state of another device: {snap:?}"
            ));
        };
        if *capacity != self.capacity {
            return Err(format!(
                "disk '{}' is {} bytes now and was {} bytes in the snapshot",
                self.id(),
                self.capacity * SECTOR_SIZE,
                capacity * SECTOR_SIZE
            ));
        }
        if *read_only != self.read_only {
            return Err(format!(
                "disk '{}' is {} now and was {} in the snapshot",
                self.id(),
                mode(self.read_only),
                mode(*read_only)
            ));
        }
        // The serial is what the guest saw, whatever the restoring VM's
        // configuration calls the drive.
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        self.id = id_bytes;
        Ok(())
    }
}

fn mode(read_only: bool) -> &'static str {
    if read_only {
        "read-only"
    } else {
        "read-write"
    }
}

#[cfg(test)]
mod tests;
