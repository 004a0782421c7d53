//! The container's root directory made the VM's root disk at `create`,
//! cached by content: the tree (every path, type, mode, owner, link target
//! and file content, hashed with SHA-256, with the init it is made with)
//! names a disk in the runtime's cache, made once by the project's ext4
//! builder (`vmm_image::ext4`, e2fsprogs' `mkfs.ext4 -d`) over a staging
//! directory that holds the root (bound onto `rootfs/`, in a mount
//! namespace of the builder's own, so nothing is left mounted on the host)
//! and init at `/vmm/init`. Each container boots a copy-on-write overlay
//! over it in its own directory, its run file (the process, and the
//! contents of the files bound into it) written into the overlay: a
//! second container of the same root makes no file system.
//!
//! The cache: `$VMM_RUNTIME_CACHE`, else `/var/cache/vmm-runtime`; one
//! directory per key (`disk.ext4`, `run-area.json`), at most
//! `$VMM_RUNTIME_CACHE_MAX` bytes (default 10 GiB: past it the least
//! recently used go). A disk in use stays readable by its VMs after it
//! goes (they hold it open).

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::bundle::Plan;
use crate::error::{code, Error, Result};

/// The container's disk (an overlay) in its directory.
pub const DISK: &str = "disk.cow";
/// The cache's default place.
pub const DEFAULT_CACHE: &str = "/var/cache/vmm-runtime";
/// The cache's default limit, bytes.
pub const DEFAULT_CACHE_MAX: u64 = 10 << 30;
/// Bumped when what a cached disk holds changes for the same tree.
const FORMAT: &str = "vmm-runtime disk 1";

/// The cache's directory.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("VMM_RUNTIME_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE))
}

fn c_path(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// The tree's key (hex SHA-256 over every entry, sorted by path, and
/// `init`'s bytes), with its number of entries and bytes.
pub fn tree_key(root: &Path, init: &Path) -> std::io::Result<(String, u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let mut h = Sha256::new();
    h.update(FORMAT.as_bytes());
    h.update(std::fs::read(init)?);
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut buf = vec![0u8; 1 << 16];
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(root.join(&rel))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        // Directories are walked after their siblings, depth first, in
        // reverse so the stack pops them in order.
        let mut dirs = Vec::new();
        for name in names {
            let path = rel.join(&name);
            let full = root.join(&path);
            let meta = std::fs::symlink_metadata(&full)?;
            files += 1;
            h.update(path.as_os_str().as_bytes());
            h.update([0]);
            h.update(
                format!(
                    "{:o} {} {} {} {}\n",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.rdev(),
                    meta.len()
                )
                .as_bytes(),
            );
            let t = meta.file_type();
            if t.is_symlink() {
                h.update(std::fs::read_link(&full)?.as_os_str().as_bytes());
            } else if t.is_file() {
                bytes += meta.len().next_multiple_of(4096);
                let mut f = std::fs::File::open(&full)?;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
            } else if t.is_dir() {
                dirs.push(path);
            }
            h.update([0xff]);
        }
        stack.extend(dirs.into_iter().rev());
    }
    let key: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((key, files, bytes))
}

fn lock_cache(dir: &Path) -> Result<crate::state::Lock> {
    std::fs::create_dir_all(dir).map_err(Error::io(format!("cannot make {}", dir.display())))?;
    crate::state::lock_file(&dir.join(".lock"))
}

/// Makes the cached disk of `plan.root` in `entry` (a new directory):
/// stages it and runs the ext4 builder in a mount namespace of this
/// process's own (it binds the root directory).
fn make_entry(
    entry: &Path,
    plan: &Plan,
    init: &Path,
    key: &str,
    files: u64,
    bytes: u64,
) -> Result<()> {
    let stage = entry.join("stage");
    let rootfs = stage.join(vmm_image::ext4::ROOTFS_DIR);
    std::fs::create_dir_all(&rootfs).map_err(Error::io("cannot make the staging directory"))?;
    // Where init puts the files bound into the container.
    std::fs::create_dir_all(stage.join("vmm/files"))
        .map_err(Error::io("cannot make the staging directory"))?;
    // SAFETY: unshare with CLONE_NEWNS only changes this process's mount
    // namespace; no pointer is passed.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(Error::io(
            "cannot make a mount namespace to build the disk in (needs CAP_SYS_ADMIN)",
        )(std::io::Error::last_os_error()));
    }
    let slash = c_path(Path::new("/"));
    // SAFETY: valid NUL-terminated strings; makes every mount of this new
    // namespace private, so the bind below reaches no other namespace.
    if unsafe {
        libc::mount(
            std::ptr::null(),
            slash.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(Error::io("cannot make the mounts private")(
            std::io::Error::last_os_error(),
        ));
    }
    let (src, dst) = (c_path(&plan.root), c_path(&rootfs));
    // SAFETY: valid NUL-terminated paths; a recursive bind in this
    // process's own mount namespace.
    if unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    } != 0
    {
        return Err(Error::io(format!(
            "cannot bind the root directory {}",
            plan.root.display()
        ))(std::io::Error::last_os_error()));
    }
    let out = entry.join("disk.ext4");
    let built = vmm_image::ext4::build_dir(&stage, files, bytes, init, key, &out, None);
    // SAFETY: valid NUL-terminated path; unmounts the bind made above.
    if unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) } == 0 {
        let _ = std::fs::remove_dir_all(&stage);
    }
    let area = built.map_err(|e| Error::Vm {
        message: format!("cannot make the VM's root disk: {e}"),
        code: code::ERROR,
    })?;
    let text = serde_json::to_vec(&area.blocks).unwrap_or_default();
    std::fs::write(entry.join("run-area.json"), text)
        .map_err(Error::io("cannot write the disk's run area"))
}

/// The cache's entries (path, bytes, last use), least recently used first.
fn entries(cache: &Path) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
    let mut out: Vec<_> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("run-area.json").is_file())
        .map(|e| {
            let p = e.path();
            let bytes = std::fs::metadata(p.join("disk.ext4")).map_or(0, |m| m.blocks() * 512);
            let used = std::fs::metadata(p.join("run-area.json"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (p, bytes, used)
        })
        .collect();
    out.sort_by_key(|(_, _, used)| *used);
    out
}

/// Removes the least recently used entries past `max` bytes, keeping
/// `keep`.
fn evict(cache: &Path, max: u64, keep: &Path) {
    let all = entries(cache);
    let mut total: u64 = all.iter().map(|(_, b, _)| b).sum();
    for (path, bytes, _) in all {
        if total <= max {
            break;
        }
        if path != keep {
            log::info!("disk cache: removing {} ({bytes} bytes)", path.display());
            let _ = std::fs::remove_dir_all(&path);
            total = total.saturating_sub(bytes);
        }
    }
}

/// Builds the container's disk in `dir` from `plan` (run in a process of
/// its own: a cache miss leaves the host's mount namespace): the cached
/// disk of its root (made now on a miss), and the container's overlay over
/// it with the run file written in. Returns the overlay's path.
pub fn build(dir: &Path, plan: &Plan, init: &Path) -> Result<PathBuf> {
    let run = crate::bundle::run_records(plan)?;
    let (key, files, bytes) = tree_key(&plan.root, init).map_err(|e| Error::File {
        what: "root directory (root.path)",
        path: plan.root.clone(),
        reason: format!("cannot read it all: {e}"),
    })?;
    let cache = cache_dir();
    let entry = cache.join(&key[..32]);
    let lock = lock_cache(&cache)?;
    if !entry.join("run-area.json").is_file() {
        let _ = std::fs::remove_dir_all(&entry);
        let tmp = cache.join(format!(".new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp)
            .map_err(Error::io(format!("cannot make {}", tmp.display())))?;
        if let Err(e) = make_entry(&tmp, plan, init, &key, files, bytes) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &entry).map_err(Error::io("cannot put the disk in the cache"))?;
        let max = std::env::var("VMM_RUNTIME_CACHE_MAX")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(DEFAULT_CACHE_MAX);
        evict(&cache, max, &entry);
        log::debug!("disk cache: made {}", entry.display());
    }
    let area: Vec<u64> = std::fs::read(entry.join("run-area.json"))
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .ok_or_else(|| Error::Vm {
            message: format!("the cached disk {} has no run area", entry.display()),
            code: code::ERROR,
        })?;
    // Its last use, for the eviction.
    let _ = std::fs::File::options()
        .append(true)
        .open(entry.join("run-area.json"))
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    let out = dir.join(DISK);
    let _ = std::fs::remove_file(&out);
    let overlay = vmm::config::DiskOverlay::create(
        &out,
        &entry.join("disk.ext4"),
        vmm::config::DiskFormat::Raw,
    )
    .map_err(|e| Error::Vm {
        message: format!("cannot make the container's overlay {}: {e}", out.display()),
        code: code::ERROR,
    })?;
    drop(lock);
    let mut disk = vmm::config::Disk::Overlay(Box::new(overlay));
    vmm_image::ext4::write_run(&mut disk, &vmm_image::ext4::RunArea { blocks: area }, &run)
        .map_err(|e| Error::Config {
            field: "process".into(),
            reason: format!("the run file: {e} (the process, its environment and the bound files take at most {} KiB)", vmm_image::ext4::RUN_CAPACITY >> 10),
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_follows_contents_modes_and_links_not_times() {
        let dir = std::env::temp_dir().join(format!("vmm-runtime-key-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("root/bin")).unwrap();
        std::fs::write(dir.join("init"), b"init").unwrap();
        std::fs::write(dir.join("root/bin/app"), b"one").unwrap();
        std::os::unix::fs::symlink("app", dir.join("root/bin/link")).unwrap();
        let key = || tree_key(&dir.join("root"), &dir.join("init")).unwrap();
        let (k0, files, _) = key();
        assert_eq!(files, 3);
        // Same content again, a later mtime: the same key.
        std::fs::write(dir.join("root/bin/app"), b"one").unwrap();
        assert_eq!(key().0, k0);
        std::fs::write(dir.join("root/bin/app"), b"two").unwrap();
        let k1 = key().0;
        assert_ne!(k1, k0, "a file's content");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.join("root/bin/app"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        let k2 = key().0;
        assert_ne!(k2, k1, "a mode");
        std::fs::remove_file(dir.join("root/bin/link")).unwrap();
        std::os::unix::fs::symlink("other", dir.join("root/bin/link")).unwrap();
        assert_ne!(key().0, k2, "a link's target");
        std::fs::write(dir.join("init"), b"init 2").unwrap();
        let k3 = key().0;
        std::fs::write(dir.join("init"), b"init").unwrap();
        assert_ne!(k3, key().0, "another init");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
