//! Applying an image's layers, in order, to a directory: the OCI layer
//! format's changeset semantics (whiteouts, opaque directories, entries
//! that replace what a lower layer had), with nothing ever written outside
//! that directory, whatever a layer holds.
//!
//! Every path is taken apart lexically (`..` that would climb above the
//! root is refused); the directories on the way are walked one by one
//! without following a symbolic link to an absolute target or one that
//! climbs out (refused: a hostile layer's classic way out); an entry
//! replaces what was at its place (a link there is removed, never written
//! through). Ownership, modes, device numbers and times are recorded for
//! every entry; as root they are also applied to the files themselves,
//! otherwise the root disk's builder applies them (`ext4`).

use std::collections::{BTreeMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The kind of a file in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A character device (major, minor).
    Char(u32, u32),
    /// A block device (major, minor).
    Block(u32, u32),
    /// A named pipe.
    Fifo,
}

/// What the image says of a file beyond its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Its kind.
    pub kind: Kind,
    /// Permission bits, with setuid, setgid and sticky (0o7777).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
}

impl Meta {
    /// The file type bits of `st_mode` for this kind.
    pub fn type_bits(&self) -> u32 {
        match self.kind {
            Kind::File => libc::S_IFREG,
            Kind::Dir => libc::S_IFDIR,
            Kind::Symlink => libc::S_IFLNK,
            Kind::Char(..) => libc::S_IFCHR,
            Kind::Block(..) => libc::S_IFBLK,
            Kind::Fifo => libc::S_IFIFO,
        }
    }
}

/// Why a layer could not be applied.
#[derive(Debug)]
pub enum ApplyError {
    /// The layer's content: corrupt, or unsafe.
    Content(String),
    /// This machine: a write into the directory failed.
    Host(String),
}

type Applied<T> = std::result::Result<T, ApplyError>;

fn content<T>(reason: impl Into<String>) -> Applied<T> {
    Err(ApplyError::Content(reason.into()))
}

fn host(what: &str, path: &Path) -> impl FnOnce(io::Error) -> ApplyError {
    let what = format!("{what} {}", path.display());
    move |e| ApplyError::Host(format!("{what}: {e}"))
}

/// The directory the layers are applied to, and what they said of each
/// file in it.
pub struct Tree {
    root: PathBuf,
    entries: BTreeMap<PathBuf, Meta>,
    native: bool,
}

/// What the layer being applied has put in place, to tell its own entries
/// from lower layers' (whiteouts and opaque directories hide only the
/// latter).
#[derive(Default)]
struct Layer {
    /// Entries of this layer.
    created: HashSet<PathBuf>,
    /// Those and every directory above them.
    touched: HashSet<PathBuf>,
}

impl Layer {
    fn add(&mut self, rel: &Path) {
        self.created.insert(rel.to_path_buf());
        for a in rel.ancestors() {
            if !self.touched.insert(a.to_path_buf()) {
                break;
            }
        }
    }
}

/// A whiteout's name prefix, and the opaque directory marker.
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";
/// Symbolic links followed on one path before it counts as a loop.
const MAX_LINKS: usize = 40;

/// The components of a path from a layer, with `.` and empty ones dropped
/// and `..` taken back; Err when `..` would climb above the root. A
/// leading `/` counts from the root, as tar entries are read.
pub fn components(raw: &[u8]) -> std::result::Result<Vec<OsString>, String> {
    let mut out: Vec<OsString> = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(format!(
                        "'{}' climbs out of the root with '..'",
                        String::from_utf8_lossy(raw)
                    ));
                }
            }
            c => out.push(OsStr::from_bytes(c).to_os_string()),
        }
    }
    Ok(out)
}

impl Tree {
    /// An empty tree at `root` (made, and must not exist yet). `native`:
    /// ownership, modes and device nodes go onto the files themselves
    /// (needs root); otherwise only into the record.
    pub fn new(root: PathBuf, native: bool) -> io::Result<Tree> {
        std::fs::create_dir(&root)?;
        Ok(Tree {
            root,
            entries: BTreeMap::new(),
            native,
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether ownership and modes are on the files themselves.
    pub fn native(&self) -> bool {
        self.native
    }

    /// What the layers said of each path (relative to the root; the root
    /// itself is the empty path), in path order.
    pub fn entries(&self) -> &BTreeMap<PathBuf, Meta> {
        &self.entries
    }

    /// A regular file's content, by its path from the root, when it is a
    /// regular file (not through a link) of at most `limit` bytes.
    pub fn read_file(&self, rel: &str, limit: u64) -> Option<Vec<u8>> {
        let path = self.root.join(rel);
        let meta = std::fs::symlink_metadata(&path).ok()?;
        if !meta.is_file() || meta.len() > limit {
            return None;
        }
        std::fs::read(path).ok()
    }

    /// Applies one layer: an uncompressed tar stream.
    pub fn apply_layer(&mut self, reader: impl Read) -> Applied<()> {
        let mut archive = tar::Archive::new(reader);
        let mut layer = Layer::default();
        let entries = archive
            .entries()
            .or_else(|e| content(format!("not a tar archive: {e}")))?;
        for entry in entries {
            let mut entry = entry.or_else(|e| content(format!("corrupt tar archive: {e}")))?;
            self.apply_entry(&mut entry, &mut layer)?;
        }
        Ok(())
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<R>,
        layer: &mut Layer,
    ) -> Applied<()> {
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let mut parts = components(&raw).or_else(content)?;
        let kind = entry.header().entry_type();
        let Some(name) = parts.pop() else {
            // The root itself ("./"): its metadata only.
            if kind.is_dir() {
                let meta = self.meta_of(entry, Kind::Dir)?;
                self.set_meta(Path::new(""), meta)?;
            }
            return Ok(());
        };
        if name.as_bytes().contains(&b'\n') {
            return content(format!("'{shown}': a newline in a file name"));
        }
        if name.as_bytes().starts_with(WHITEOUT) {
            return self.whiteout(&parts, &name, &shown, layer);
        }
        let parent = self
            .resolve_dir(&parts, true, &shown, layer)?
            .expect("made when missing");
        let rel = parent.join(&name);
        let path = self.inside(&rel)?;
        let existing = std::fs::symlink_metadata(&path).ok();
        use tar::EntryType as T;
        let keep_dir = kind.is_dir() && existing.as_ref().is_some_and(|m| m.is_dir());
        if existing.is_some() && !keep_dir {
            self.remove(&rel)?;
        }
        let meta = match kind {
            T::Directory => {
                if !keep_dir {
                    std::fs::create_dir(&path).map_err(host("cannot make", &path))?;
                }
                self.meta_of(entry, Kind::Dir)?
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&path)
                    .map_err(host("cannot make", &path))?;
                io::copy(entry, &mut file)
                    .or_else(|e| content(format!("'{shown}': cannot read its content: {e}")))?;
                self.meta_of(entry, Kind::File)?
            }
            T::Symlink => {
                let target = link_target(entry, &shown)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(host("cannot make", &path))?;
                self.meta_of(entry, Kind::Symlink)?
            }
            T::Link => {
                let target = link_target(entry, &shown)?;
                let mut tparts = components(&target).or_else(content)?;
                let Some(tname) = tparts.pop() else {
                    return content(format!("'{shown}': a hard link to the root"));
                };
                let tparent = self.resolve_dir(&tparts, false, &shown, layer)?;
                let trel = tparent.map(|p| p.join(&tname));
                let tpath = trel.as_ref().map(|t| self.inside(t)).transpose()?;
                let tmeta = tpath
                    .as_ref()
                    .and_then(|t| std::fs::symlink_metadata(t).ok());
                let (Some(trel), Some(tmeta)) = (trel, tmeta) else {
                    return content(format!(
                        "'{shown}': a hard link to '{}', which is not there",
                        String::from_utf8_lossy(&target)
                    ));
                };
                if tmeta.is_dir() {
                    return content(format!("'{shown}': a hard link to a directory"));
                }
                std::fs::hard_link(self.inside(&trel)?, &path)
                    .map_err(host("cannot link", &path))?;
                // One inode: the target's record is the link's.
                match self.entries.get(&trel) {
                    Some(m) => *m,
                    None => self.meta_of(entry, Kind::File)?,
                }
            }
            T::Char | T::Block => {
                let h = entry.header();
                let dev = |v: io::Result<Option<u32>>| v.ok().flatten().unwrap_or(0);
                let (major, minor) = (dev(h.device_major()), dev(h.device_minor()));
                let k = if kind == T::Char {
                    Kind::Char(major, minor)
                } else {
                    Kind::Block(major, minor)
                };
                if self.native {
                    mknod(&path, k, 0o600)?;
                } else {
                    // A placeholder: the disk's builder makes the node.
                    std::fs::File::create(&path).map_err(host("cannot make", &path))?;
                }
                self.meta_of(entry, k)?
            }
            T::Fifo => {
                mknod(&path, Kind::Fifo, 0o600)?;
                self.meta_of(entry, Kind::Fifo)?
            }
            // Extended headers are read by the tar crate itself; anything
            // else (sockets, Solaris ACLs) has no file to make.
            other => {
                log::debug!("image: '{shown}': entry type {other:?} skipped");
                return Ok(());
            }
        };
        layer.add(&rel);
        self.set_meta(&rel, meta)
    }

    /// The record of an entry from its header (and PAX uid/gid/mtime).
    fn meta_of<R: Read>(&self, entry: &mut tar::Entry<R>, kind: Kind) -> Applied<Meta> {
        let h = entry.header();
        let mut meta = Meta {
            kind,
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0),
            gid: h.gid().unwrap_or(0),
            mtime: h.mtime().unwrap_or(0),
        };
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let num = || {
                    ext.value()
                        .ok()
                        .and_then(|v| v.split('.').next()?.parse().ok())
                };
                match ext.key() {
                    Ok("uid") => meta.uid = num().unwrap_or(meta.uid),
                    Ok("gid") => meta.gid = num().unwrap_or(meta.gid),
                    Ok("mtime") => meta.mtime = num().unwrap_or(meta.mtime),
                    _ => {}
                }
            }
        }
        if kind == Kind::Symlink {
            meta.mode = 0o777;
        }
        Ok(meta)
    }

    /// `rel` under the root (the root itself when empty), when each of
    /// its components is a plain name: no root, `.` or `..`. `components`
    /// never makes another, so this refusal is the last line against a
    /// bug here writing or removing outside the root; every path the
    /// unpacker writes, links, changes or removes is made by it.
    fn inside(&self, rel: &Path) -> Applied<PathBuf> {
        if !rel
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        {
            return content(format!(
                "'{}' is no path inside the image's root",
                rel.display()
            ));
        }
        Ok(self.root.join(rel))
    }

    /// Records `meta` for `rel` and, as root, puts it on the file.
    fn set_meta(&mut self, rel: &Path, meta: Meta) -> Applied<()> {
        if self.native {
            let path = self.inside(rel)?;
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| {
                ApplyError::Content(format!("'{}': a NUL in the name", rel.display()))
            })?;
            // SAFETY: c is a NUL-terminated path; lchown only reads it.
            let r = unsafe { libc::lchown(c.as_ptr(), meta.uid as u32, meta.gid as u32) };
            if r != 0 {
                return Err(host("cannot chown", &path)(io::Error::last_os_error()));
            }
            if meta.kind != Kind::Symlink {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(meta.mode))
                    .map_err(host("cannot chmod", &path))?;
            }
        }
        self.entries.insert(rel.to_path_buf(), meta);
        Ok(())
    }

    /// The directory `parts` names, as a path from the root through real
    /// directories only: a symbolic link on the way is followed when its
    /// target is relative and stays inside the root, refused otherwise;
    /// directories missing are made (`create`) or the answer is None.
    fn resolve_dir(
        &mut self,
        parts: &[OsString],
        create: bool,
        shown: &str,
        layer: &mut Layer,
    ) -> Applied<Option<PathBuf>> {
        let mut cur = PathBuf::new();
        let mut queue: std::collections::VecDeque<OsString> = parts.iter().cloned().collect();
        let mut links = 0;
        while let Some(c) = queue.pop_front() {
            match c.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    if !cur.pop() {
                        return content(format!(
                            "'{shown}': a symbolic link on its way climbs out of the root"
                        ));
                    }
                    continue;
                }
                _ => {}
            }
            let rel = cur.join(&c);
            let path = self.inside(&rel)?;
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => cur = rel,
                Ok(m) if m.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return content(format!("'{shown}': too many levels of symbolic links"));
                    }
                    let target = std::fs::read_link(&path).map_err(host("cannot read", &path))?;
                    if target.is_absolute() {
                        return content(format!(
                            "'{shown}' goes through the symbolic link '{}' to the absolute path '{}': \
                             unpacking never follows a link out of the image's root",
                            rel.display(),
                            target.display()
                        ));
                    }
                    // The link's target, then what was left of the path.
                    let mut next: std::collections::VecDeque<OsString> =
                        raw_parts(target.as_os_str().as_bytes()).into();
                    next.extend(queue);
                    queue = next;
                }
                Ok(_) => {
                    return content(format!("'{shown}': '{}' is not a directory", rel.display()))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if !create {
                        return Ok(None);
                    }
                    std::fs::create_dir(&path).map_err(host("cannot make", &path))?;
                    layer.add(&rel);
                    let meta = Meta {
                        kind: Kind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: 0,
                    };
                    self.set_meta(&rel, meta)?;
                    cur = rel;
                }
                Err(e) => return Err(host("cannot look at", &path)(e)),
            }
        }
        Ok(Some(cur))
    }

    /// A whiteout: `.wh.NAME` hides NAME of the lower layers, the opaque
    /// marker every lower entry of its directory.
    fn whiteout(
        &mut self,
        parts: &[OsString],
        name: &OsStr,
        shown: &str,
        layer: &mut Layer,
    ) -> Applied<()> {
        let Some(dir) = self.resolve_dir(parts, false, shown, layer)? else {
            return Ok(());
        };
        if name.as_bytes() == OPAQUE {
            return self.prune_lower(&dir, layer);
        }
        let hidden = &name.as_bytes()[WHITEOUT.len()..];
        if matches!(hidden, b"" | b"." | b"..") {
            return content(format!("'{shown}': a whiteout of no file"));
        }
        let rel = dir.join(OsStr::from_bytes(hidden));
        if !layer.created.contains(&rel) && std::fs::symlink_metadata(self.inside(&rel)?).is_ok() {
            self.remove(&rel)?;
        }
        Ok(())
    }

    /// Removes what lower layers left in `dir`, keeping this layer's own.
    fn prune_lower(&mut self, dir: &Path, layer: &Layer) -> Applied<()> {
        let path = self.inside(dir)?;
        let children = std::fs::read_dir(&path).map_err(host("cannot read", &path))?;
        for child in children {
            let child = child.map_err(host("cannot read", &path))?;
            let rel = dir.join(child.file_name());
            if layer.touched.contains(&rel) {
                if child.file_type().is_ok_and(|t| t.is_dir()) {
                    self.prune_lower(&rel, layer)?;
                }
            } else {
                self.remove(&rel)?;
            }
        }
        Ok(())
    }

    /// Removes `rel` (a directory with all it holds; a link itself, never
    /// what it points to) and its records.
    fn remove(&mut self, rel: &Path) -> Applied<()> {
        if rel.as_os_str().is_empty() {
            return content("removing the image's root itself");
        }
        let path = self.inside(rel)?;
        let meta = std::fs::symlink_metadata(&path).map_err(host("cannot look at", &path))?;
        if meta.is_dir() {
            std::fs::remove_dir_all(&path).map_err(host("cannot remove", &path))?;
        } else {
            std::fs::remove_file(&path).map_err(host("cannot remove", &path))?;
        }
        let gone: Vec<PathBuf> = self
            .entries
            .range(rel.to_path_buf()..)
            .take_while(|(k, _)| k.starts_with(rel))
            .map(|(k, _)| k.clone())
            .collect();
        for k in gone {
            self.entries.remove(&k);
        }
        Ok(())
    }

    /// Puts each entry's modification time on its file (after every layer:
    /// writing into a directory changes its time).
    pub fn set_times(&self) -> io::Result<()> {
        for (rel, meta) in &self.entries {
            let t = filetime::FileTime::from_unix_time(meta.mtime as i64, 0);
            filetime::set_symlink_file_times(self.root.join(rel), t, t)?;
        }
        Ok(())
    }

    /// The bytes the files take on disk, from their sizes (what the root
    /// disk must hold).
    pub fn disk_usage(&self) -> io::Result<u64> {
        let mut total = 0u64;
        for rel in self.entries.keys() {
            let m = std::fs::symlink_metadata(self.root.join(rel))?;
            total += m.blocks() * 512;
        }
        Ok(total)
    }
}

/// A link entry's target (symbolic or hard), as the layer gives it.
fn link_target<R: Read>(entry: &tar::Entry<R>, shown: &str) -> Applied<Vec<u8>> {
    match entry.link_name_bytes() {
        Some(target) => Ok(target.into_owned()),
        None => content(format!("'{shown}': a link without a target")),
    }
}

/// The raw components of a link target, `..` kept (resolved by the walk).
fn raw_parts(raw: &[u8]) -> Vec<OsString> {
    raw.split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .map(|c| OsString::from_vec(c.to_vec()))
        .collect()
}

/// Makes a device node or a FIFO.
fn mknod(path: &Path, kind: Kind, perm: u32) -> Applied<()> {
    let (ty, dev) = match kind {
        Kind::Char(a, b) => (libc::S_IFCHR, libc::makedev(a, b)),
        Kind::Block(a, b) => (libc::S_IFBLK, libc::makedev(a, b)),
        _ => (libc::S_IFIFO, 0),
    };
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| ApplyError::Content(format!("'{}': a NUL in the name", path.display())))?;
    // SAFETY: c is a NUL-terminated path; mknod only reads it.
    let r = unsafe { libc::mknod(c.as_ptr(), ty | perm, dev) };
    if r != 0 {
        return Err(host("cannot make", path)(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod guard_tests {
    use super::*;

    /// Paths that are not plain names under the root are refused before
    /// anything is written or removed, and the root itself is never
    /// removed; a file beside the root stays.
    #[test]
    fn nothing_outside_the_root_is_touched() {
        let base = std::env::temp_dir().join(format!("vmm-unpack-guard-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let beside = base.join("beside");
        std::fs::write(&beside, b"keep").unwrap();
        let mut tree = Tree::new(base.join("root"), false).unwrap();
        for bad in ["/", "/etc", "../beside", "a/../../beside", "./x"] {
            assert!(
                matches!(tree.inside(Path::new(bad)), Err(ApplyError::Content(_))),
                "{bad}"
            );
            assert!(tree.remove(Path::new(bad)).is_err(), "{bad}");
        }
        assert!(tree.remove(Path::new("")).is_err(), "the root itself");
        assert_eq!(
            tree.inside(Path::new("a/b")).unwrap(),
            base.join("root/a/b")
        );
        assert_eq!(tree.inside(Path::new("")).unwrap(), base.join("root"));
        assert_eq!(std::fs::read(&beside).unwrap(), b"keep");
        assert!(base.join("root").is_dir());
        std::fs::remove_dir_all(&base).unwrap();
    }
}
