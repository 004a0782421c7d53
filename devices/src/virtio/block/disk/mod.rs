//! What a virtio-blk device reads and writes: a raw file, or a
//! copy-on-write overlay over another disk.
//!
//! An overlay is a sparse file laid out as
//!
//! ```text
//! 0           header (4 KiB): magic, version, cluster size, size, the base's
//!             path, size and modification time, the base's format; CRC32
//! 4096        bitmap: bit i set = cluster i is in this file
//! data_offset the disk's clusters at data_offset + their offset, holes
//!             where the base still holds them
//! ```
//!
//! Reads of clusters the overlay does not hold go to the base (itself a
//! raw file or another overlay), opened read-only; writes go to the
//! overlay, a partial cluster first copied up from the base. Nothing is
//! copied when the overlay is made. The bitmap reaches the file only on a
//! flush, after the data it describes is on disk (fdatasync, then the
//! bitmap, then fdatasync): a crash loses unflushed writes, never shows a
//! cluster that was not written. The format is never guessed from a
//! file's content (a guest could write a header into a raw disk): an
//! overlay is opened as one because its configuration says so, and so is
//! each base in its chain (the header says the base's format).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

mod header;
pub use header::{
    Format, Header, OverlayError, CLUSTER_BITS, HEADER_LEN, MAGIC, MAX_CHAIN, VERSION,
};

fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// The length of a raw disk: a regular file's, or where a seek to the end
/// of a block device lands.
fn raw_len(file: &File) -> io::Result<u64> {
    use std::io::Seek;
    use std::os::unix::fs::FileTypeExt;
    if file.metadata()?.file_type().is_block_device() {
        let mut f = file;
        return f.seek(io::SeekFrom::End(0));
    }
    Ok(file.metadata()?.len())
}

/// A piece of a disk range as one file holds it.
#[derive(Debug, Clone, Copy)]
pub struct Run<'d> {
    /// Bytes in the piece.
    pub len: u64,
    /// The file that holds them.
    pub file: &'d File,
    /// Where in that file.
    pub file_offset: u64,
}

/// A disk as a block device sees it.
#[derive(Debug)]
pub enum Disk {
    /// A raw file (or block device): disk offset = file offset.
    Raw(File),
    /// A copy-on-write overlay over another disk.
    Overlay(Box<Overlay>),
}

impl From<File> for Disk {
    fn from(file: File) -> Disk {
        Disk::Raw(file)
    }
}

impl Disk {
    /// Opens the disk at `path` as `format` (read-only or read-write): a
    /// raw file as it is, an overlay with its base chain.
    pub fn open(path: &Path, format: Format, read_only: bool) -> Result<Disk, OverlayError> {
        Self::open_depth(path, format, read_only, 0)
    }

    fn open_depth(
        path: &Path,
        format: Format,
        read_only: bool,
        depth: usize,
    ) -> Result<Disk, OverlayError> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        Ok(match format {
            Format::Raw => Disk::Raw(file),
            Format::Overlay => {
                Disk::Overlay(Box::new(Overlay::open_file(path, file, read_only, depth)?))
            }
        })
    }

    /// The disk's size in bytes.
    pub fn len(&self) -> io::Result<u64> {
        match self {
            Disk::Raw(f) => raw_len(f),
            Disk::Overlay(o) => Ok(o.header.size),
        }
    }

    /// Whether the disk has no bytes.
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// The pieces that hold `[offset, offset + len)`, in order, each in one
    /// file (appended to `out`).
    pub fn runs<'d>(&'d self, offset: u64, len: u64, out: &mut Vec<Run<'d>>) {
        match self {
            Disk::Raw(file) => push_run(out, file, offset, len),
            Disk::Overlay(o) => o.runs(offset, len, out),
        }
    }

    /// Makes `[offset, offset + len)` writable in place and returns the
    /// file and the offset there to write it at: a raw file itself; an
    /// overlay's own file, the partial clusters at either end copied up
    /// first. Call `wrote` once the data is written.
    pub fn prepare_write(&mut self, offset: u64, len: u64) -> io::Result<(&File, u64)> {
        match self {
            Disk::Raw(file) => Ok((file, offset)),
            Disk::Overlay(o) => {
                o.copy_up_edges(offset, len)?;
                Ok((&o.top, o.header.data_offset() + offset))
            }
        }
    }

    /// Records that `[offset, offset + len)` was written where
    /// `prepare_write` said.
    pub fn wrote(&mut self, offset: u64, len: u64) {
        if let Disk::Overlay(o) = self {
            o.mark(offset, len);
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let mut runs = Vec::new();
        self.runs(offset, buf.len() as u64, &mut runs);
        let mut at = 0usize;
        for run in runs {
            let n = run.len as usize;
            run.file
                .read_exact_at(&mut buf[at..at + n], run.file_offset)?;
            at += n;
        }
        Ok(())
    }

    /// Writes `buf` at `offset`.
    pub fn write_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let len = buf.len() as u64;
        let (file, at) = self.prepare_write(offset, len)?;
        file.write_all_at(buf, at)?;
        self.wrote(offset, len);
        Ok(())
    }

    /// Makes every write so far durable (and an overlay's bitmap with
    /// them).
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Disk::Raw(f) => f.sync_data(),
            Disk::Overlay(o) => o.flush(),
        }
    }
}

fn push_run<'d>(out: &mut Vec<Run<'d>>, file: &'d File, file_offset: u64, len: u64) {
    if len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if std::ptr::eq(last.file, file) && last.file_offset + last.len == file_offset {
            last.len += len;
            return;
        }
    }
    out.push(Run {
        len,
        file,
        file_offset,
    });
}

/// A copy-on-write overlay: its own file over a read-only base.
#[derive(Debug)]
pub struct Overlay {
    top: File,
    base: Disk,
    header: Header,
    bitmap: Vec<u8>,
    /// The bitmap's bytes changed since it was last written: [lo, hi).
    dirty: Option<(usize, usize)>,
    read_only: bool,
}

impl Overlay {
    /// Makes a new, empty overlay at `path` (which must not exist) over
    /// the disk `base` of `base_format`. `base` is recorded as given (a
    /// relative path is read from the overlay's directory); its size and
    /// modification time are recorded too. Returns it opened read-write.
    pub fn create(path: &Path, base: &Path, base_format: Format) -> Result<Overlay, OverlayError> {
        let top = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Self::create_in(path, top, base, base_format)
    }

    /// Makes a new overlay in `top` (an empty file open read-write, named
    /// or not), whose base path `base` is relative to `dir_of` (a path in
    /// the overlay's directory).
    pub fn create_in(
        dir_of: &Path,
        top: File,
        base: &Path,
        base_format: Format,
    ) -> Result<Overlay, OverlayError> {
        let base_disk = Disk::open_depth(&resolve(dir_of, base), base_format, true, 1)?;
        let size = base_disk.len()?;
        let meta = base_meta(&base_disk)?;
        let header = Header {
            cluster_bits: CLUSTER_BITS,
            size,
            base: base.to_path_buf(),
            base_format,
            base_mtime_ns: mtime_ns(&meta),
        };
        let bytes = header.encode()?;
        top.set_len(header.data_offset() + size)?;
        top.write_all_at(&bytes, 0)?;
        Ok(Overlay {
            top,
            base: base_disk,
            bitmap: vec![0; header.bitmap_len() as usize],
            header,
            dirty: None,
            read_only: false,
        })
    }

    fn open_file(
        path: &Path,
        top: File,
        read_only: bool,
        depth: usize,
    ) -> Result<Overlay, OverlayError> {
        if depth >= MAX_CHAIN {
            return Err(OverlayError::Header(format!(
                "more than {MAX_CHAIN} overlays stacked (a loop?)"
            )));
        }
        let mut bytes = vec![0u8; HEADER_LEN];
        let n = read_up_to(&top, &mut bytes, 0)?;
        let header = Header::decode(&bytes[..n])?;
        let have = top.metadata()?.len();
        if have < header.data_offset() + header.size {
            return Err(OverlayError::Header(format!(
                "{have} bytes, truncated: its {} bytes of disk end at {}",
                header.size,
                header.data_offset() + header.size
            )));
        }
        let mut bitmap = vec![0u8; header.bitmap_len() as usize];
        top.read_exact_at(&mut bitmap, HEADER_LEN as u64)?;
        let base_path = resolve(path, &header.base);
        let base_err = |why: String| OverlayError::Base {
            path: base_path.clone(),
            why,
        };
        let base = Disk::open_depth(&base_path, header.base_format, true, depth + 1).map_err(
            |e| match e {
                OverlayError::Io(e) => base_err(format!("cannot be opened: {e}")),
                other => other,
            },
        )?;
        let size = base.len()?;
        if size != header.size {
            return Err(base_err(format!(
                "is {size} bytes; it was {} when the overlay was made",
                header.size
            )));
        }
        let mtime = mtime_ns(&base_meta(&base)?);
        if mtime != header.base_mtime_ns {
            return Err(base_err(
                "was modified after the overlay was made: the overlay's clusters would not match it"
                    .into(),
            ));
        }
        Ok(Overlay {
            top,
            base,
            header,
            bitmap,
            dirty: None,
            read_only,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Clusters this overlay holds.
    pub fn clusters_held(&self) -> u64 {
        self.bitmap.iter().map(|b| u64::from(b.count_ones())).sum()
    }

    fn cluster(&self) -> u64 {
        1 << self.header.cluster_bits
    }

    fn held(&self, cluster: u64) -> bool {
        self.bitmap
            .get((cluster / 8) as usize)
            .is_some_and(|b| b & (1 << (cluster % 8)) != 0)
    }

    fn runs<'d>(&'d self, offset: u64, len: u64, out: &mut Vec<Run<'d>>) {
        let end = offset + len;
        let mut at = offset;
        while at < end {
            let held = self.held(at >> self.header.cluster_bits);
            // The end of the stretch of clusters held (or not) alike.
            let mut next = ((at >> self.header.cluster_bits) + 1) << self.header.cluster_bits;
            while next < end && self.held(next >> self.header.cluster_bits) == held {
                next += self.cluster();
            }
            let stop = next.min(end);
            if held {
                push_run(out, &self.top, self.header.data_offset() + at, stop - at);
            } else {
                self.base.runs(at, stop - at, out);
            }
            at = stop;
        }
    }

    /// Copies up the clusters at either end of `[offset, offset + len)`
    /// that the write covers only in part and that this overlay does not
    /// hold yet.
    fn copy_up_edges(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::from(io::ErrorKind::PermissionDenied));
        }
        if len == 0 {
            return Ok(());
        }
        let mask = self.cluster() - 1;
        let first = offset >> self.header.cluster_bits;
        let last = (offset + len - 1) >> self.header.cluster_bits;
        if offset & mask != 0 {
            self.copy_up(first)?;
        }
        if (offset + len) & mask != 0 {
            self.copy_up(last)?;
        }
        Ok(())
    }

    fn copy_up(&mut self, cluster: u64) -> io::Result<()> {
        if self.held(cluster) {
            return Ok(());
        }
        let start = cluster << self.header.cluster_bits;
        let n = self.cluster().min(self.header.size - start);
        let mut buf = vec![0u8; n as usize];
        self.base.read_at(&mut buf, start)?;
        self.top
            .write_all_at(&buf, self.header.data_offset() + start)?;
        self.mark(start, n);
        Ok(())
    }

    fn mark(&mut self, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = offset >> self.header.cluster_bits;
        let last = (offset + len - 1) >> self.header.cluster_bits;
        for c in first..=last {
            if let Some(b) = self.bitmap.get_mut((c / 8) as usize) {
                *b |= 1 << (c % 8);
            }
        }
        let (lo, hi) = ((first / 8) as usize, (last / 8) as usize + 1);
        self.dirty = Some(match self.dirty {
            Some((l, h)) => (l.min(lo), h.max(hi)),
            None => (lo, hi),
        });
    }

    /// The data, then the bitmap that points at it, on disk.
    fn flush(&mut self) -> io::Result<()> {
        if self.read_only {
            return Ok(());
        }
        self.top.sync_data()?;
        if let Some((lo, hi)) = self.dirty {
            self.top
                .write_all_at(&self.bitmap[lo..hi], HEADER_LEN as u64 + lo as u64)?;
            self.top.sync_data()?;
            self.dirty = None;
        }
        Ok(())
    }
}

impl Drop for Overlay {
    fn drop(&mut self) {
        if self.dirty.is_some() {
            if let Err(e) = self.flush() {
                log::warn!("overlay: cannot write its bitmap: {e}");
            }
        }
    }
}

/// The metadata of the file a disk's data is first looked up in: the raw
/// file, or the overlay's own file.
fn base_meta(disk: &Disk) -> io::Result<std::fs::Metadata> {
    match disk {
        Disk::Raw(f) => f.metadata(),
        Disk::Overlay(o) => o.top.metadata(),
    }
}

/// `path` read from the directory of `overlay` when relative.
fn resolve(overlay: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_path_buf();
    }
    overlay
        .parent()
        .map(|d| d.join(path))
        .unwrap_or_else(|| path.to_path_buf())
}

/// Reads what there is of `buf.len()` bytes at `offset`; returns how many.
fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests;
