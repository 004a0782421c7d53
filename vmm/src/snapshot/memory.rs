//! The memory file: guest RAM as it is, every region after the other,
//! written sparsely (a page of zeros is a hole, so a 128 MiB guest that
//! used 20 MiB costs about 20 MiB on disk), and mapped back `MAP_PRIVATE`
//! on restore: pages come in as the guest touches them, its writes stay
//! its own, and every clone of one template shares the page cache of one
//! file.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap,
};

/// The page whose zeros make a hole.
const PAGE: usize = 4096;

/// Writes `mem` to a new file at `path`, zero pages as holes. Returns the
/// bytes written (the pages that are not zero).
pub fn write_sparse(mem: &GuestMemoryMmap, path: &Path) -> std::io::Result<u64> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let total: u64 = mem.iter().map(|r| r.len()).sum();
    file.set_len(total)?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    let mut written = 0u64;
    for region in mem.iter() {
        let mut done = 0u64;
        while done < region.len() {
            let n = chunk.len().min((region.len() - done) as usize);
            mem.read_slice(&mut chunk[..n], region.start_addr().unchecked_add(done))
                .map_err(std::io::Error::other)?;
            for (i, page) in chunk[..n].chunks(PAGE).enumerate() {
                if page.iter().any(|&b| b != 0) {
                    file.write_all_at(page, offset + done + (i * PAGE) as u64)?;
                    written += page.len() as u64;
                }
            }
            done += n as u64;
        }
        offset += region.len();
    }
    file.sync_all()?;
    Ok(written)
}

/// Why a memory file cannot be mapped.
#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    /// It cannot be opened.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Its size is not the VM's memory's.
    #[error("it has {found} bytes, and the VM's memory is {want} bytes")]
    Size {
        /// The file's size.
        found: u64,
        /// The memory's.
        want: u64,
    },
    /// A region could not be mapped.
    #[error("cannot map it: {0}")]
    Map(String),
}

/// Guest memory laid out as `ranges` (guest address, size), backed by the
/// file at `path` mapped private.
pub fn map_private(
    path: &Path,
    ranges: &[(GuestAddress, usize)],
) -> Result<GuestMemoryMmap, MemoryFileError> {
    let file = File::open(path)?;
    let found = file.metadata()?.len();
    let want: u64 = ranges.iter().map(|(_, s)| *s as u64).sum();
    if found != want {
        return Err(MemoryFileError::Size { found, want });
    }
    let file = Arc::new(file);
    let mut offset = 0u64;
    let mut regions = Vec::with_capacity(ranges.len());
    for &(start, size) in ranges {
        let mapping = MmapRegionBuilder::new(size)
            .with_file_offset(FileOffset::from_arc(file.clone(), offset))
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE)
            .build()
            .map_err(|e| MemoryFileError::Map(e.to_string()))?;
        let region = GuestRegionMmap::new(mapping, start)
            .ok_or_else(|| MemoryFileError::Map("a region past the address space".into()))?;
        regions.push(region);
        offset += size as u64;
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryFileError::Map(e.to_string()))
}
