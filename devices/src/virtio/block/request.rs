//! A virtio-blk request as the driver lays it out (virtio 1.2, 5.2.6): a
//! device-readable header (le32 type, le32 reserved, le64 sector), the data
//! segments, and a device-writable status byte at the end. Everything is
//! checked here, before any host I/O.

use virtio_queue::desc::split::Descriptor;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::{
    SECTOR_SIZE, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
};
use crate::GuestSlice;

/// Bytes of the request header.
pub(super) const HEADER_LEN: u32 = 16;

/// Why a request failed before or during I/O.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RequestError {
    /// Answered with this status.
    Status(u8),
    /// No status descriptor to answer in.
    Malformed(&'static str),
}

impl RequestError {
    /// A request the device refuses, or whose I/O failed.
    pub(super) const IOERR: RequestError = RequestError::Status(VIRTIO_BLK_S_IOERR);
}

/// A checked request; its data segments are in the `segs` it was parsed
/// with.
pub(super) struct Request<'m> {
    pub(super) kind: u32,
    pub(super) sector: u64,
    /// The status byte, looked up once.
    pub(super) status: GuestSlice<'m>,
    /// The data of a request with one segment that lies in one region (the
    /// usual case), looked up once; others go through the segments.
    pub(super) single: Option<GuestSlice<'m>>,
    pub(super) data_len: u64,
}

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
pub(super) fn write_status(mem: &GuestMemoryMmap, addr: GuestAddress, status: u8) -> bool {
    match mem.get_slice(addr, 1) {
        Ok(slice) => {
            slice.copy_from(&[status][..]);
            true
        }
        Err(_) => false,
    }
}

/// Whether `len` bytes at `addr` are guest memory: one region lookup for
/// the usual case of a buffer inside one region, a walk over the regions
/// only for a buffer that crosses into the next one.
fn in_guest_memory(mem: &GuestMemoryMmap, addr: GuestAddress, len: usize) -> bool {
    mem.get_slice(addr, len).is_ok() || mem.check_range(addr, len)
}

impl<'m> Request<'m> {
    /// Checks the chain in `descs` and puts its data segments in `segs`.
    pub(super) fn parse(
        mem: &'m GuestMemoryMmap,
        descs: &[Descriptor],
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> Result<Self, RequestError> {
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
        let (header, data) = rest.split_first().ok_or(RequestError::IOERR)?;
        if header.is_write_only() || header.len() < HEADER_LEN {
            return Err(RequestError::IOERR);
        }
        let hdr = read_header(mem, header.addr()).ok_or(RequestError::IOERR)?;
        let (kind, sector) = split_header(&hdr);
        let mut data_len = 0u64;
        let mut single = None;
        if let [d] = data {
            single = mem.get_slice(d.addr(), d.len() as usize).ok();
        }
        for d in data {
            if single.is_none() && d.len() > 0 && !in_guest_memory(mem, d.addr(), d.len() as usize)
            {
                return Err(RequestError::IOERR);
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
                return Err(RequestError::IOERR);
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

    /// The file offset of a read or write, checked against a disk of
    /// `capacity` sectors and the sector size.
    pub(super) fn offset(&self, capacity: u64) -> Result<u64, RequestError> {
        if !self.data_len.is_multiple_of(SECTOR_SIZE) || self.data_len == 0 {
            return Err(RequestError::IOERR);
        }
        let end = self
            .sector
            .checked_add(self.data_len / SECTOR_SIZE)
            .ok_or(RequestError::IOERR)?;
        if end > capacity {
            return Err(RequestError::IOERR);
        }
        Ok(self.sector * SECTOR_SIZE)
    }
}
