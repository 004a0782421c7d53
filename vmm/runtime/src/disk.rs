//! The container's root directory made the VM's root disk at `create`:
//! the project's ext4 builder (`vmm_image::ext4`, e2fsprogs' `mkfs.ext4
//! -d`) over a staging directory that holds the bundle's root (bound onto
//! `rootfs/`, in a mount namespace of the builder's own, so nothing is
//! left mounted on the host), init at `/vmm/init`, the files bound into
//! the container at `/vmm/files/K`, and the run file init reads.

use std::path::{Path, PathBuf};

use crate::bundle::Plan;
use crate::error::{Error, Result};

/// The disk's file in the container's directory.
pub const DISK: &str = "disk.ext4";

fn c_path(p: &Path) -> std::ffi::CString {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

/// Files and bytes under `dir`, links not followed.
fn measure(dir: &Path) -> (u64, u64) {
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            files += 1;
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                bytes += meta.len().next_multiple_of(4096);
            }
        }
    }
    (files, bytes)
}

/// Builds the disk in `dir` from `plan` (run in a process of its own: it
/// leaves the host's mount namespace). Returns the disk's path.
pub fn build(dir: &Path, plan: &Plan, init: &Path) -> Result<PathBuf> {
    let stage = dir.join("stage");
    let rootfs = stage.join(vmm_image::ext4::ROOTFS_DIR);
    let files = stage.join("vmm/files");
    std::fs::create_dir_all(&rootfs).map_err(Error::io("cannot make the staging directory"))?;
    std::fs::create_dir_all(&files).map_err(Error::io("cannot make the staging directory"))?;
    for (k, f) in plan.files.iter().enumerate() {
        std::fs::copy(&f.source, files.join(k.to_string())).map_err(|e| Error::File {
            what: "bind mount source",
            path: f.source.clone(),
            reason: e.to_string(),
        })?;
    }
    // SAFETY: unshare with CLONE_NEWNS only changes this process's mount
    // namespace; no pointer is passed.
    if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
        return Err(Error::io(
            "cannot make a mount namespace to build the disk in (needs CAP_SYS_ADMIN)",
        )(std::io::Error::last_os_error()));
    }
    let none = std::ffi::CString::default();
    let slash = c_path(Path::new("/"));
    // SAFETY: valid NUL-terminated strings; makes every mount of this new
    // namespace private, so the bind below reaches no other namespace.
    if unsafe {
        libc::mount(
            none.as_ptr(),
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
    let (n, bytes) = measure(&rootfs);
    let out = dir.join(DISK);
    let id = dir
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let area =
        vmm_image::ext4::build_dir(&stage, n, bytes, init, &id, &out, None).map_err(|e| {
            Error::Vm {
                message: format!("cannot make the VM's root disk: {e}"),
                code: crate::error::code::ERROR,
            }
        })?;
    // SAFETY: valid NUL-terminated path; unmounts the bind made above.
    let unmounted = unsafe { libc::umount2(dst.as_ptr(), libc::MNT_DETACH) } == 0;
    if unmounted {
        let _ = std::fs::remove_dir_all(&stage);
    }
    let mut disk = vmm::config::Disk::Raw(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&out)
            .map_err(Error::io(format!("cannot open {}", out.display())))?,
    );
    vmm_image::ext4::write_run(&mut disk, &area, &crate::bundle::run_records(plan))
        .map_err(Error::io("cannot write the run file"))?;
    Ok(out)
}
