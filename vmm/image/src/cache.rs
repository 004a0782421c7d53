//! The cache of root disks, one directory an image, named by the image's
//! key (its manifest digest): the disk, what init needs to know of the
//! image, and when it was last used. A VM boots a private copy of the
//! disk, so the cache is never written by a guest. One lock file orders
//! the processes that build, evict or copy; once the cache is over its
//! size limit the least recently used images go.

use devices::virtio::block::{disk::Overlay, Disk, Format};
use std::io;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::error::{Error, Result};
use crate::ext4::{self, RunArea};
use crate::run::Accounts;
use crate::source::{sha256_of, Image};
use crate::unpack::Tree;

/// The layout of an entry; a different one is rebuilt.
const FORMAT: u32 = 1;
/// The default size limit of the cache.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 30;
/// The entry's description.
const ENTRY_FILE: &str = "entry.json";
/// The entry's disk.
const DISK_FILE: &str = "disk.ext4";

/// What the cache keeps of an image beside its disk.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EntryInfo {
    /// The entry layout (FORMAT).
    pub format: u32,
    /// The image's key.
    pub key: String,
    /// The digest of the init on the disk: another init, another disk.
    pub init: String,
    /// The reference it was first built from.
    pub reference: String,
    /// Where the run file is on the disk.
    pub run_area: RunArea,
    /// The image's config.
    pub config: ImageConfiguration,
    /// The image's /etc/passwd and /etc/group.
    pub accounts: Accounts,
    /// Bytes of the image's files.
    pub unpacked_bytes: u64,
    /// Files, directories and links in the image.
    pub files: usize,
}

/// One cached image.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its directory.
    pub dir: PathBuf,
    /// What it holds.
    pub info: EntryInfo,
}

impl Entry {
    /// Its disk image (never booted itself: each VM's writes go to an
    /// overlay over it, `Cache::private_disk`).
    pub fn disk(&self) -> PathBuf {
        self.dir.join(DISK_FILE)
    }
}

/// A cached image as `Cache::list` gives it.
#[derive(Debug, Clone)]
pub struct Listed {
    /// The entry.
    pub entry: Entry,
    /// Bytes it takes on disk.
    pub bytes: u64,
    /// When a VM last booted it (or it was made).
    pub last_used: std::time::SystemTime,
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    max_bytes: u64,
    /// Whether ownership and modes go on the unpacked files (root) or
    /// only onto the disk by debugfs; None: root or not.
    native: Option<bool>,
}

/// Parses a size: bytes, or with K, M, G or T (powers of 1024).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last()? {
        (i, 'K' | 'k') => (&s[..i], 1u64 << 10),
        (i, 'M' | 'm') => (&s[..i], 1 << 20),
        (i, 'G' | 'g') => (&s[..i], 1 << 30),
        (i, 'T' | 't') => (&s[..i], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Holds the cache's lock until dropped.
struct Lock(std::fs::File);

impl Drop for Lock {
    fn drop(&mut self) {
        // SAFETY: flock on a descriptor this struct owns.
        unsafe { libc::flock(self.0.as_raw_fd(), libc::LOCK_UN) };
    }
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    pid > 0
        && (unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
}

/// The bytes `path` takes on disk (a directory: all it holds).
pub fn usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    let own = meta.blocks() * 512;
    if !meta.is_dir() {
        return own;
    }
    own + std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| usage(&e.path()))
        .sum::<u64>()
}

impl Cache {
    /// The cache at `dir`, at most `max_bytes` (eviction past it).
    pub fn new(dir: PathBuf, max_bytes: u64) -> Cache {
        Cache {
            dir,
            max_bytes,
            native: None,
        }
    }

    /// The same cache, unpacking as root would (true) or as any user
    /// (false, debugfs putting ownership and modes on the disk).
    pub fn unpacking_natively(self, native: bool) -> Cache {
        Cache {
            native: Some(native),
            ..self
        }
    }

    /// The cache the environment says: `$VMM_IMAGE_CACHE`, else
    /// `$XDG_CACHE_HOME/vmm/images`, else `~/.cache/vmm/images`; its limit
    /// `$VMM_IMAGE_CACHE_MAX` (bytes, or with K, M, G, T), else 10 GiB.
    pub fn from_env() -> Result<Cache> {
        let dir = match std::env::var_os("VMM_IMAGE_CACHE") {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(x) => PathBuf::from(x).join("vmm/images"),
                None => PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cache/vmm/images"),
            },
        };
        let max_bytes = match std::env::var("VMM_IMAGE_CACHE_MAX") {
            Ok(v) => parse_size(&v).ok_or_else(|| {
                Error::run(
                    "VMM_IMAGE_CACHE_MAX",
                    &v,
                    "expected a size: bytes, or with K, M, G or T",
                )
            })?,
            Err(_) => DEFAULT_MAX_BYTES,
        };
        Ok(Cache::new(dir, max_bytes))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock(&self) -> Result<Lock> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| Error::cache(&self.dir, format!("cannot make it: {e}")))?;
        let path = self.dir.join(".lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::cache(&path, e))?;
        // SAFETY: flock on the descriptor just opened.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(Error::cache(&path, io::Error::last_os_error()));
        }
        Ok(Lock(f))
    }

    /// The entry's directory name for `key`: "sha256-HEX".
    fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key.replace(':', "-"))
    }

    /// The cached disk of `image` with `init`, built first on a miss;
    /// with whether it was built now.
    pub fn get(&self, image: &Image, init: &Path) -> Result<(Entry, bool)> {
        let init_digest = std::fs::read(init)
            .map(|b| sha256_of(&b))
            .map_err(|e| Error::Build(format!("cannot read init {}: {e}", init.display())))?;
        let _lock = self.lock()?;
        self.remove_leftovers();
        let dir = self.entry_dir(&image.key);
        if let Some(entry) = Self::read_entry(&dir) {
            if entry.info.format == FORMAT
                && entry.info.init == init_digest
                && entry.disk().is_file()
            {
                self.touch(&dir);
                return Ok((entry, false));
            }
            log::info!(
                "image: the cached disk of {} was made with another init; making it again",
                image.key
            );
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| Error::cache(&dir, format!("cannot remove a stale entry: {e}")))?;
        }
        let build = self.dir.join(format!(".build-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&build);
        std::fs::create_dir(&build).map_err(|e| Error::cache(&build, e))?;
        let made = self.build(image, init, &init_digest, &build);
        let info = match made {
            Ok(info) => info,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&build);
                return Err(e);
            }
        };
        std::fs::rename(&build, &dir).map_err(|e| Error::cache(&dir, e))?;
        self.evict(&dir);
        Ok((Entry { dir, info }, true))
    }

    fn read_entry(dir: &Path) -> Option<Entry> {
        let text = std::fs::read(dir.join(ENTRY_FILE)).ok()?;
        let info = serde_json::from_slice(&text).ok()?;
        Some(Entry {
            dir: dir.to_path_buf(),
            info,
        })
    }

    /// Marks an entry used now (its entry file's time).
    fn touch(&self, dir: &Path) {
        let now = filetime::FileTime::now();
        let _ = filetime::set_file_mtime(dir.join(ENTRY_FILE), now);
    }

    /// Unpacks the image into `build` and makes its disk there.
    fn build(
        &self,
        image: &Image,
        init: &Path,
        init_digest: &str,
        build: &Path,
    ) -> Result<EntryInfo> {
        let started = std::time::Instant::now();
        let disk_root = build.join("disk");
        std::fs::create_dir(&disk_root).map_err(|e| Error::cache(&disk_root, e))?;
        // SAFETY: geteuid has no arguments and cannot fail.
        let native = self
            .native
            .unwrap_or_else(|| unsafe { libc::geteuid() } == 0);
        let rootfs = disk_root.join(ext4::ROOTFS_DIR);
        let tree = crate::unpack(image, &rootfs, native)?;
        let accounts = Accounts {
            passwd: read_text(&tree, "etc/passwd"),
            group: read_text(&tree, "etc/group"),
        };
        let unpacked_bytes = tree.disk_usage().map_err(|e| Error::cache(&rootfs, e))?;
        let unpacked = started.elapsed();
        let disk = build.join(DISK_FILE);
        let run_area = ext4::build(&tree, unpacked_bytes, &disk_root, init, &image.key, &disk)?;
        log::info!(
            "image: {} unpacked ({} layers, {} files, {:.1} MiB) in {:.2} s, its root disk made in {:.2} s",
            image.reference.text,
            image.layers.len(),
            tree.entries().len(),
            unpacked_bytes as f64 / (1 << 20) as f64,
            unpacked.as_secs_f64(),
            (started.elapsed() - unpacked).as_secs_f64()
        );
        std::fs::remove_dir_all(&disk_root).map_err(|e| Error::cache(&disk_root, e))?;
        let info = EntryInfo {
            format: FORMAT,
            key: image.key.clone(),
            init: init_digest.to_string(),
            reference: image.reference.text.clone(),
            run_area,
            config: image.config.clone(),
            accounts,
            unpacked_bytes,
            files: tree.entries().len(),
        };
        let text = serde_json::to_vec_pretty(&info).map_err(|e| Error::Build(e.to_string()))?;
        std::fs::write(build.join(ENTRY_FILE), text).map_err(|e| Error::cache(build, e))?;
        Ok(info)
    }

    /// Removes what dead processes left: half-built entries and private
    /// copies ("NAME-PID").
    fn remove_leftovers(&self) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix(".build-").and_then(|p| p.parse().ok());
            if let Some(pid) = pid {
                if !pid_alive(pid) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let runs = self.dir.join(".run");
        for e in std::fs::read_dir(&runs).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse().ok());
            if pid.is_some_and(|p| !pid_alive(p)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }

    /// The cached images, most recently used first.
    pub fn list(&self) -> Result<Vec<Listed>> {
        let _lock = self.lock()?;
        let mut out: Vec<Listed> = std::fs::read_dir(&self.dir)
            .map_err(|e| Error::cache(&self.dir, e))?
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let entry = Self::read_entry(&e.path())?;
                let last_used = std::fs::metadata(e.path().join(ENTRY_FILE))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                Some(Listed {
                    bytes: usage(&entry.dir),
                    last_used,
                    entry,
                })
            })
            .collect();
        out.sort_by_key(|l| std::cmp::Reverse(l.last_used));
        Ok(out)
    }

    /// Removes the cached image whose key starts with `key` ("sha256:"
    /// may be left out); returns its key. Err when none matches, or when
    /// several do.
    pub fn remove(&self, key: &str) -> Result<String> {
        let want = if key.contains(':') {
            key.to_string()
        } else {
            format!("sha256:{key}")
        };
        let listed = self.list()?;
        let matching: Vec<&Listed> = listed
            .iter()
            .filter(|l| l.entry.info.key.starts_with(&want))
            .collect();
        if matching.is_empty() || want.len() <= "sha256:".len() {
            return Err(Error::Missing {
                reference: key.into(),
                reason: format!("no image in the cache {} has this key", self.dir.display()),
            });
        }
        if matching.len() > 1 {
            return Err(Error::run(
                "image",
                key,
                format!(
                    "{} cached images have keys starting so: give more of the key",
                    matching.len()
                ),
            ));
        }
        let _lock = self.lock()?;
        let entry = &matching[0].entry;
        std::fs::remove_dir_all(&entry.dir).map_err(|e| Error::cache(&entry.dir, e))?;
        Ok(entry.info.key.clone())
    }

    /// Removes every cached image; returns their keys.
    pub fn prune(&self) -> Result<Vec<String>> {
        let listed = self.list()?;
        let _lock = self.lock()?;
        let mut removed = Vec::new();
        for l in listed {
            std::fs::remove_dir_all(&l.entry.dir).map_err(|e| Error::cache(&l.entry.dir, e))?;
            removed.push(l.entry.info.key);
        }
        Ok(removed)
    }

    /// Removes the least recently used entries, never `keep`, until the
    /// cache is within its limit.
    fn evict(&self, keep: &Path) {
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .map(|e| {
                let p = e.path();
                let used = std::fs::metadata(p.join(ENTRY_FILE))
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (used, usage(&p), p)
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort();
        for (_, size, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path == keep {
                continue;
            }
            log::info!(
                "image cache: over its {} MiB, removing {}",
                self.max_bytes >> 20,
                path.display()
            );
            if std::fs::remove_dir_all(&path).is_ok() {
                total -= size;
            }
        }
    }

    /// A private disk for one VM: a copy-on-write overlay over the entry's
    /// disk (nothing copied), with `run` written into its run file. The
    /// overlay is made at `at` (which must not exist: a template's), else
    /// it is this process's ("PID-N.cow" in the cache's .run/): remove it
    /// when the VM has it open.
    pub fn private_disk(&self, entry: &Entry, run: &[u8], at: Option<&Path>) -> Result<PathBuf> {
        if run.len() as u64 > ext4::RUN_CAPACITY {
            return Err(Error::run(
                "command",
                format!("({} bytes with the environment)", run.len()),
                format!(
                    "the command, environment and user take at most {} KiB",
                    ext4::RUN_CAPACITY >> 10
                ),
            ));
        }
        let _lock = self.lock()?;
        let runs = self.dir.join(".run");
        std::fs::create_dir_all(&runs).map_err(|e| Error::cache(&runs, e))?;
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = match at {
            Some(p) => p.to_path_buf(),
            None => {
                let p = runs.join(format!("{}-{n}.cow", std::process::id()));
                let _ = std::fs::remove_file(&p);
                p
            }
        };
        let overlay = Overlay::create(&path, &entry.disk(), Format::Raw)
            .map_err(|e| Error::cache(&path, format!("cannot make the disk's overlay: {e}")))?;
        let mut disk = Disk::Overlay(Box::new(overlay));
        ext4::write_run(&mut disk, &entry.info.run_area, run)
            .map_err(|e| Error::cache(&path, format!("cannot write the run file: {e}")))?;
        self.touch(&entry.dir);
        Ok(path)
    }
}

fn read_text(tree: &Tree, rel: &str) -> String {
    tree.read_file(rel, 1 << 20)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}
