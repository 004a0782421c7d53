//! A request's data between guest memory and the disk file: positioned
//! reads and writes straight into and out of guest memory (no bounce
//! buffer), a request's segments in one preadv or pwritev.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::request::RequestError;
use super::SEG_MAX;
use crate::GuestSlice;

/// Reads (or writes) the data in `segs` (or `single`, the same data looked
/// up already as one slice) from (or to) `file` at `offset`.
pub(super) fn transfer(
    file: &File,
    mem: &GuestMemoryMmap,
    single: Option<&GuestSlice<'_>>,
    segs: &[(GuestAddress, u32)],
    mut offset: u64,
    write: bool,
) -> Result<(), RequestError> {
    let io = |_| RequestError::IOERR;
    if let Some(slice) = single {
        return slice_io(file, slice, offset, write).map_err(io);
    }
    if vectored_io(file, mem, segs, offset, write).map_err(io)? {
        return Ok(());
    }
    for (addr, len) in segs {
        file_io(file, mem, *addr, *len as usize, offset, write).map_err(io)?;
        offset += u64::from(*len);
    }
    Ok(())
}

/// The part of the data in `segs` that starts `skip` bytes in and is
/// `len` bytes long, as segments (into `out`, cleared first).
pub(super) fn sub_segments(
    segs: &[(GuestAddress, u32)],
    mut skip: u64,
    mut len: u64,
    out: &mut Vec<(GuestAddress, u32)>,
) {
    out.clear();
    for (addr, seg_len) in segs {
        let seg_len = u64::from(*seg_len);
        if skip >= seg_len {
            skip -= seg_len;
            continue;
        }
        let n = (seg_len - skip).min(len);
        out.push((addr.unchecked_add(skip), n as u32));
        len -= n;
        skip = 0;
        if len == 0 {
            break;
        }
    }
}

/// Positioned I/O between the file at `offset` and `len` bytes of guest
/// memory at `addr`: pread into it, or pwrite from it. One system call per
/// contiguous piece.
fn file_io(
    file: &File,
    mem: &GuestMemoryMmap,
    addr: GuestAddress,
    len: usize,
    offset: u64,
    write: bool,
) -> io::Result<()> {
    // A buffer inside one region (always, with this VMM's memory map) is
    // one slice; one that crosses into an adjacent region is walked region
    // by region.
    if let Ok(slice) = mem.get_slice(addr, len) {
        return slice_io(file, &slice, offset, write);
    }
    let mut pos = offset;
    for slice in mem.get_slices(addr, len) {
        let slice = slice.map_err(|e| io::Error::other(e.to_string()))?;
        slice_io(file, &slice, pos, write)?;
        pos += slice.len() as u64;
    }
    Ok(())
}

/// The segments of a request in one preadv (or pwritev), more only after a
/// short transfer. Returns false, having done nothing, when a segment
/// crosses from one memory region into another or there are more than
/// SEG_MAX: the caller goes segment by segment then.
fn vectored_io(
    file: &File,
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
    let fd = file.as_raw_fd();
    let mut first = 0usize;
    let mut pos = offset;
    while first < iov.len() {
        let off =
            libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let rest = &iov[first..];
        // SAFETY: `rest` describes pieces of guest memory that vm-memory
        // checked lie inside mappings `mem` keeps alive for this call
        // (their guards are held in `iovecs`); the kernel reads or writes
        // at most their lengths there. No Rust reference to that memory
        // exists.
        let n = unsafe {
            if write {
                libc::pwritev(fd, rest.as_ptr(), rest.len() as libc::c_int, off)
            } else {
                libc::preadv(fd, rest.as_ptr(), rest.len() as libc::c_int, off)
            }
        };
        let n = match n {
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
        first = skip_done(iov, first, n);
    }
    Ok(true)
}

/// After a transfer of `n` bytes from `iov[first..]`: the index of the
/// first piece not done, that piece shortened by what of it was done (a
/// piece done in part goes on from where it stopped).
fn skip_done(iov: &mut [libc::iovec], mut first: usize, mut n: usize) -> usize {
    while first < iov.len() && n >= iov[first].iov_len {
        n -= iov[first].iov_len;
        first += 1;
    }
    if n > 0 && first < iov.len() {
        // SAFETY: n < iov[first].iov_len, so the pointer stays inside the
        // same piece of memory.
        iov[first].iov_base = unsafe { iov[first].iov_base.cast::<u8>().add(n).cast() };
        iov[first].iov_len -= n;
    }
    first
}

/// pread into, or pwrite from, one slice of guest memory.
fn slice_io(file: &File, slice: &GuestSlice<'_>, offset: u64, write: bool) -> io::Result<()> {
    let fd = file.as_raw_fd();
    let mut pos = offset;
    let guard = slice.ptr_guard_mut();
    let mut done = 0usize;
    while done < guard.len() {
        let off =
            libc::off_t::try_from(pos).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the pointer and length describe a piece of guest memory
        // that vm-memory checked lies inside a mapping `mem` keeps alive for
        // this call; the kernel reads or writes at most `guard.len() - done`
        // bytes there. No Rust reference to that memory exists, so
        // concurrent guest access is not undefined behaviour.
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

#[cfg(test)]
mod tests {
    use super::{skip_done, sub_segments};
    use vm_memory::GuestAddress;

    #[test]
    fn sub_segments_cut_the_data_at_any_offset() {
        let segs = [
            (GuestAddress(0x1000), 512),
            (GuestAddress(0x5000), 1024),
            (GuestAddress(0x9000), 512),
        ];
        let mut out = Vec::new();
        let cut = |skip, len, out: &mut Vec<_>| {
            sub_segments(&segs, skip, len, out);
            out.iter()
                .map(|(a, n): &(GuestAddress, u32)| (a.0, *n))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cut(0, 2048, &mut out),
            [(0x1000, 512), (0x5000, 1024), (0x9000, 512)]
        );
        assert_eq!(cut(100, 500, &mut out), [(0x1064, 412), (0x5000, 88)]);
        assert_eq!(cut(512, 1024, &mut out), [(0x5000, 1024)]);
        assert_eq!(cut(1535, 2, &mut out), [(0x53ff, 1), (0x9000, 1)]);
    }

    /// Pieces of 4, 8 and 2 bytes of `buf`.
    fn pieces(buf: &mut [u8; 14]) -> Vec<libc::iovec> {
        let base = buf.as_mut_ptr();
        [(0, 4), (4, 8), (12, 2)]
            .into_iter()
            .map(|(at, len)| libc::iovec {
                // SAFETY: at < 14: inside `buf`.
                iov_base: unsafe { base.add(at) }.cast(),
                iov_len: len,
            })
            .collect()
    }

    /// What is left after short transfers: whole pieces skipped, a piece
    /// done in part going on from where it stopped.
    #[test]
    fn a_short_transfer_goes_on_where_it_stopped() {
        let mut buf = [0u8; 14];
        let base = buf.as_mut_ptr() as usize;
        let left = |iov: &[libc::iovec], first: usize| -> Vec<(usize, usize)> {
            iov[first..]
                .iter()
                .map(|v| (v.iov_base as usize - base, v.iov_len))
                .collect()
        };
        let mut iov = pieces(&mut buf);
        // Nothing done yet, the first piece exactly, into the second.
        assert_eq!(skip_done(&mut iov, 0, 0), 0);
        assert_eq!(left(&iov, 0), [(0, 4), (4, 8), (12, 2)]);
        let first = skip_done(&mut iov, 0, 4);
        assert_eq!((first, left(&iov, first)), (1, vec![(4, 8), (12, 2)]));
        let first = skip_done(&mut iov, first, 3);
        assert_eq!((first, left(&iov, first)), (1, vec![(7, 5), (12, 2)]));
        let first = skip_done(&mut iov, first, 6);
        assert_eq!((first, left(&iov, first)), (2, vec![(13, 1)]));
        assert_eq!(skip_done(&mut iov, first, 1), 3);
        // Across two pieces and into a third at once.
        let mut iov = pieces(&mut buf);
        let first = skip_done(&mut iov, 0, 13);
        assert_eq!((first, left(&iov, first)), (2, vec![(13, 1)]));
    }
}
