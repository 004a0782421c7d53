//! The root disk: an ext4 file system made by e2fsprogs' `mkfs.ext4 -d`
//! from the unpacked tree, and, when the tree could not carry ownership,
//! modes and device nodes itself (not root), `debugfs` putting them on the
//! file system's inodes. Its layout:
//!
//! ```text
//! /vmm/init    the project's init, PID 1 (the kernel's init=)
//! /vmm/run     what init runs: written into each VM's private copy
//! /rootfs/     the image's files, which init makes the command's root
//! ```

use devices::virtio::block::Disk;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, Result};
use crate::unpack::{Kind, Meta, Tree};

/// The file system's block size.
pub const BLOCK_SIZE: u64 = 4096;
/// The room for the run file (argv, environment, user, directory).
pub const RUN_CAPACITY: u64 = 64 << 10;
/// Free space on the disk for the command's writes, beyond the image's
/// files (the disk is sparse: unwritten space takes nothing on the host).
pub const FREE_SPACE: u64 = 256 << 20;
/// Where the image's files are on the disk, init and the run file.
pub const ROOTFS_DIR: &str = "rootfs";
/// init's path on the disk.
pub const INIT_PATH: &str = "/vmm/init";
/// The run file's path on the disk.
pub const RUN_PATH: &str = "/vmm/run";

/// Where the run file's blocks are in the disk image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RunArea {
    /// Its blocks, in file order (block numbers of BLOCK_SIZE bytes).
    pub blocks: Vec<u64>,
}

fn tool_error(tool: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::Build(format!("{tool} not found: install e2fsprogs"))
    } else {
        Error::Build(format!("cannot run {tool}: {e}"))
    }
}

/// Runs a command; Err with its stderr when it fails.
fn run(cmd: &mut Command, tool: &str) -> Result<std::process::Output> {
    let out = cmd.output().map_err(|e| tool_error(tool, e))?;
    if !out.status.success() {
        return Err(Error::Build(format!(
            "{tool} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(out)
}

/// A UUID (8-4-4-4-12) from a digest's hex, so that one image always gives
/// the same file system.
fn uuid_from(key: &str) -> String {
    let hex: String = key
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .take(32)
        .collect();
    let hex = format!("{hex:0<32}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A path for a debugfs command: in double quotes, a quote doubled.
fn quoted(path: &Path) -> Vec<u8> {
    let mut out = vec![b'"'];
    for &b in path.as_os_str().as_bytes() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

/// The debugfs commands that give each entry its owner, group and mode,
/// and make the device nodes (whose placeholders are plain files).
pub fn debugfs_script(
    entries: &std::collections::BTreeMap<PathBuf, Meta>,
    under: &Path,
) -> Vec<u8> {
    let mut s = Vec::new();
    for (rel, meta) in entries {
        let path = under.join(rel);
        let p = quoted(&path);
        let mut line = |parts: &[&[u8]]| {
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    s.push(b' ');
                }
                s.extend_from_slice(part);
            }
            s.push(b'\n');
        };
        match meta.kind {
            Kind::Char(a, b) | Kind::Block(a, b) => {
                let t: &[u8] = if matches!(meta.kind, Kind::Char(..)) {
                    b"c"
                } else {
                    b"b"
                };
                // debugfs makes a node by name in its current directory.
                let parent = quoted(path.parent().unwrap_or(Path::new("/")));
                let name = quoted(Path::new(path.file_name().unwrap_or_default()));
                line(&[b"rm", &p]);
                line(&[b"cd", &parent]);
                line(&[
                    b"mknod",
                    &name,
                    t,
                    a.to_string().as_bytes(),
                    b.to_string().as_bytes(),
                ]);
                line(&[b"cd", b"/"]);
            }
            _ => {}
        }
        if meta.kind != Kind::Symlink {
            let mode = format!("0{:o}", meta.type_bits() | meta.mode);
            line(&[b"sif", &p, b"mode", mode.as_bytes()]);
        }
        line(&[b"sif", &p, b"uid", meta.uid.to_string().as_bytes()]);
        line(&[b"sif", &p, b"gid", meta.gid.to_string().as_bytes()]);
    }
    s
}

/// Builds the disk image `out` from `tree` (whose root is `<disk_root>/
/// rootfs`, its files taking `tree_bytes`), with `init` at /vmm/init.
/// Returns where the run file is.
pub fn build(
    tree: &Tree,
    tree_bytes: u64,
    disk_root: &Path,
    init: &Path,
    key: &str,
    out: &Path,
) -> Result<RunArea> {
    // Without root the files' owners, modes and device nodes go on the
    // file system's inodes afterwards.
    let fixup =
        (!tree.native()).then(|| debugfs_script(tree.entries(), &Path::new("/").join(ROOTFS_DIR)));
    build_dir(
        disk_root,
        tree.entries().len() as u64,
        tree_bytes,
        init,
        key,
        out,
        fixup,
    )
}

/// Builds the disk image `out` from the directory `disk_root` (the
/// container's files under `rootfs/`, already with their owners: `files`
/// of them, taking `bytes`), with `init` at /vmm/init and the run file;
/// then runs the debugfs script `fixup`, if any. Returns where the run
/// file is. `key` names the file system (its UUID).
pub fn build_dir(
    disk_root: &Path,
    files: u64,
    tree_bytes: u64,
    init: &Path,
    key: &str,
    out: &Path,
    fixup: Option<Vec<u8>>,
) -> Result<RunArea> {
    let io = |what: &str| {
        let what = what.to_string();
        move |e: std::io::Error| Error::Build(format!("{what}: {e}"))
    };
    let vmm = disk_root.join("vmm");
    std::fs::create_dir_all(&vmm).map_err(io("cannot make the disk's /vmm"))?;
    std::fs::copy(init, vmm.join("init"))
        .map_err(io(&format!("cannot copy init from {}", init.display())))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(vmm.join("init"), std::fs::Permissions::from_mode(0o755))
            .map_err(io("cannot chmod /vmm/init"))?;
    }
    // Bytes that are not zeros, so that mkfs gives the file real blocks
    // (it leaves zero blocks as holes), to be overwritten for each VM.
    let filler = vec![b'#'; RUN_CAPACITY as usize];
    std::fs::write(vmm.join("run"), &filler).map_err(io("cannot write /vmm/run"))?;

    let used = tree_bytes + std::fs::metadata(init).map_or(0, |m| m.len()) + RUN_CAPACITY;
    let inodes = (files * 2).max(16384);
    // Room for the file system's own structures (inode tables: 256 bytes
    // an inode, block bitmaps, directories), then the free space.
    let size = (used + used / 8 + inodes * 256 + (16 << 20) + FREE_SPACE).next_multiple_of(1 << 20);
    let file =
        std::fs::File::create(out).map_err(io(&format!("cannot create {}", out.display())))?;
    file.set_len(size).map_err(io("cannot size the disk"))?;
    drop(file);
    let uuid = uuid_from(key);
    run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-b",
                &BLOCK_SIZE.to_string(),
                "-O",
                "^has_journal",
            ])
            .args(["-N", &inodes.to_string(), "-L", "vmm-image", "-U", &uuid])
            .args(["-E", &format!("root_owner=0:0,hash_seed={uuid}")])
            .arg("-d")
            .arg(disk_root)
            .arg(out),
        "mkfs.ext4",
    )?;
    if let Some(mut script) = fixup {
        for p in ["/vmm", INIT_PATH, RUN_PATH] {
            script.extend_from_slice(format!("sif {p} uid 0\nsif {p} gid 0\n").as_bytes());
        }
        debugfs_apply(out, &script)?;
    }
    let listed = run(
        Command::new("debugfs")
            .arg("-R")
            .arg(format!("blocks {RUN_PATH}"))
            .arg(out),
        "debugfs",
    )?;
    let blocks: Vec<u64> = String::from_utf8_lossy(&listed.stdout)
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    if blocks.len() as u64 != RUN_CAPACITY / BLOCK_SIZE {
        return Err(Error::Build(format!(
            "{RUN_PATH} has {} blocks on the disk, not {}",
            blocks.len(),
            RUN_CAPACITY / BLOCK_SIZE
        )));
    }
    Ok(RunArea { blocks })
}

/// Runs a debugfs script on `image`; Err with the first complaint.
fn debugfs_apply(image: &Path, script: &[u8]) -> Result<()> {
    let dir = image.parent().unwrap_or(Path::new("."));
    let path = dir.join("fixup.debugfs");
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(script))
        .map_err(|e| Error::Build(format!("cannot write {}: {e}", path.display())))?;
    let out = run(
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&path)
            .arg(image),
        "debugfs",
    )?;
    let _ = std::fs::remove_file(&path);
    // debugfs exits 0 whatever its commands did: its complaints are the
    // stderr lines past its banner.
    let complaints: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.starts_with("debugfs ") && !l.trim().is_empty())
        .map(String::from)
        .collect();
    if let Some(first) = complaints.first() {
        return Err(Error::Build(format!(
            "debugfs could not set ownership and modes: {first} ({} complaints)",
            complaints.len()
        )));
    }
    Ok(())
}

/// Writes `bytes` (at most RUN_CAPACITY) over the run file of `disk`,
/// whose blocks `area` says, and flushes it.
pub fn write_run(disk: &mut Disk, area: &RunArea, bytes: &[u8]) -> std::io::Result<()> {
    if bytes.len() as u64 > RUN_CAPACITY {
        return Err(std::io::Error::other("the run file is full"));
    }
    let mut padded = bytes.to_vec();
    padded.resize(RUN_CAPACITY as usize, 0);
    for (chunk, block) in padded.chunks(BLOCK_SIZE as usize).zip(&area.blocks) {
        disk.write_at(chunk, block * BLOCK_SIZE)?;
    }
    disk.flush()
}
