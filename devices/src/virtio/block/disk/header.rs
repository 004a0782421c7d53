//! The overlay file's header: its layout (see the module above), encoding
//! and checks.

use std::io;
use std::path::PathBuf;

/// The overlay file's magic number.
pub const MAGIC: [u8; 8] = *b"VMM-COW\n";
/// The overlay format's version.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 4096;
/// The cluster size new overlays use: copy-up unit and bitmap granule.
pub const CLUSTER_BITS: u32 = 12;
/// Bases stacked under one overlay at most (a loop of overlays stops here).
pub const MAX_CHAIN: usize = 16;

const PATH_AT: usize = 52;
pub(super) const MAX_PATH: usize = HEADER_LEN - PATH_AT - 4;

/// How a disk file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// The disk's bytes as they are.
    #[default]
    Raw,
    /// A copy-on-write overlay (this module's format) over a base.
    Overlay,
}

impl Format {
    fn code(self) -> u32 {
        match self {
            Format::Raw => 0,
            Format::Overlay => 1,
        }
    }
}

/// Why an overlay cannot be made or opened.
#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    /// Not an overlay, or one this version cannot read.
    #[error("not a usable overlay: {0}")]
    Header(String),
    /// The base is not the file the overlay was made over.
    #[error("its base {path} {why}")]
    Base {
        /// The base's path.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// Reading or writing a file failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The decoded header of an overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// log2 of the cluster size (9 to 20).
    pub cluster_bits: u32,
    /// The disk's size in bytes (the base's).
    pub size: u64,
    /// The base's path: relative paths are from the overlay's directory.
    pub base: PathBuf,
    /// The base's format.
    pub base_format: Format,
    /// The base's modification time (ns since the epoch) when the overlay
    /// was made: a base changed since would show the guest a mix.
    pub base_mtime_ns: i64,
}

impl Header {
    /// Clusters in the disk.
    pub fn clusters(&self) -> u64 {
        self.size.div_ceil(1 << self.cluster_bits)
    }

    /// Bytes of the bitmap.
    pub fn bitmap_len(&self) -> u64 {
        self.clusters().div_ceil(8)
    }

    /// Where cluster 0 lies in the file: past the bitmap, cluster-aligned.
    pub fn data_offset(&self) -> u64 {
        let cluster = 1u64 << self.cluster_bits;
        (HEADER_LEN as u64 + self.bitmap_len()).div_ceil(cluster) * cluster
    }

    /// The header's bytes.
    pub fn encode(&self) -> Result<[u8; HEADER_LEN], OverlayError> {
        use std::os::unix::ffi::OsStrExt;
        let path = self.base.as_os_str().as_bytes();
        if path.len() > MAX_PATH {
            return Err(OverlayError::Header(format!(
                "the base's path is {} bytes, more than {MAX_PATH}",
                path.len()
            )));
        }
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(&MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[12..16].copy_from_slice(&self.cluster_bits.to_le_bytes());
        h[16..24].copy_from_slice(&self.size.to_le_bytes());
        h[24..32].copy_from_slice(&self.base_mtime_ns.to_le_bytes());
        h[32..36].copy_from_slice(&self.base_format.code().to_le_bytes());
        h[36..44].copy_from_slice(&self.data_offset().to_le_bytes());
        h[48..52].copy_from_slice(&(path.len() as u32).to_le_bytes());
        h[PATH_AT..PATH_AT + path.len()].copy_from_slice(path);
        let crc = crc32fast::hash(&h[..HEADER_LEN - 4]);
        h[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        Ok(h)
    }

    /// Decodes and checks a header: magic, version, checksum, cluster size,
    /// the data offset the other fields imply, the path's length.
    pub fn decode(h: &[u8]) -> Result<Header, OverlayError> {
        let bad = |why: String| Err(OverlayError::Header(why));
        if h.len() < HEADER_LEN {
            return bad(format!("{} bytes, shorter than its header", h.len()));
        }
        if h[0..8] != MAGIC {
            return bad("no overlay magic number".into());
        }
        let u32_at = |at: usize| u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]));
        let version = u32_at(8);
        if version != VERSION {
            return bad(format!(
                "format version {version}; this build reads version {VERSION}"
            ));
        }
        let crc = crc32fast::hash(&h[..HEADER_LEN - 4]);
        if crc != u32_at(HEADER_LEN - 4) {
            return bad("its header's checksum does not match: corrupt".into());
        }
        let cluster_bits = u32_at(12);
        if !(9..=20).contains(&cluster_bits) {
            return bad(format!(
                "cluster size 2^{cluster_bits}: 512 bytes to 1 MiB are read"
            ));
        }
        let size = u64_at(16);
        if size == 0 || size % 512 != 0 || size > 1 << 50 {
            return bad(format!(
                "disk size {size}: a positive multiple of 512 up to 1 PiB"
            ));
        }
        let base_format = match u32_at(32) {
            0 => Format::Raw,
            1 => Format::Overlay,
            other => return bad(format!("base format {other} unknown")),
        };
        let path_len = u32_at(48) as usize;
        if path_len == 0 || path_len > MAX_PATH {
            return bad(format!("base path of {path_len} bytes"));
        }
        let base = {
            use std::os::unix::ffi::OsStrExt;
            PathBuf::from(std::ffi::OsStr::from_bytes(&h[PATH_AT..PATH_AT + path_len]))
        };
        let header = Header {
            cluster_bits,
            size,
            base,
            base_format,
            base_mtime_ns: u64_at(24) as i64,
        };
        if u64_at(36) != header.data_offset() {
            return bad(format!(
                "data offset {} where its size puts it at {}",
                u64_at(36),
                header.data_offset()
            ));
        }
        Ok(header)
    }
}
