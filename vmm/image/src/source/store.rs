//! Where an image's blobs are read from: a directory, or the members of a
//! tar file read in place.

use std::collections::HashMap;
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};

/// Where the blobs are read from: a directory, or members of a tar file
/// (by their offset, without unpacking it).
pub(super) enum Store {
    Dir(PathBuf),
    Tar {
        file: PathBuf,
        members: HashMap<String, (u64, u64)>,
    },
}

/// A member name as a key: without a leading "./" or "/".
fn member_key(name: &str) -> &str {
    name.trim_start_matches("./").trim_start_matches('/')
}

impl Store {
    pub(super) fn open_tar(file: &Path) -> io::Result<Store> {
        let f = std::fs::File::open(file)?;
        let mut archive = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut links = Vec::new();
        for entry in archive.entries_with_seek()? {
            let entry = entry?;
            let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let kind = entry.header().entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                // skopeo's docker archives link ID/layer.tar to the layer.
                if let Some(target) = entry.link_name_bytes() {
                    let target = String::from_utf8_lossy(&target).into_owned();
                    links.push((name, target, kind.is_symlink()));
                }
                continue;
            }
            if !kind.is_file() {
                continue;
            }
            members.insert(
                member_key(&name).to_string(),
                (entry.raw_file_position(), entry.size()),
            );
        }
        for (name, target, relative) in links {
            // A symbolic link's target is relative to its directory, a
            // hard link's to the archive's root; `..` is taken lexically.
            let dir = match name.rsplit_once('/') {
                Some((d, _)) if relative => d,
                _ => "",
            };
            let mut parts: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
            for c in target.split('/') {
                match c {
                    "" | "." => {}
                    ".." => {
                        parts.pop();
                    }
                    c => parts.push(c),
                }
            }
            if let Some(&at) = members.get(&parts.join("/")) {
                members.insert(member_key(&name).to_string(), at);
            }
        }
        Ok(Store::Tar {
            file: file.to_path_buf(),
            members,
        })
    }

    pub(super) fn has(&self, name: &str) -> bool {
        match self {
            Store::Dir(dir) => safe_name(name) && dir.join(name).is_file(),
            Store::Tar { members, .. } => members.contains_key(member_key(name)),
        }
    }

    pub(super) fn open(&self, name: &str) -> io::Result<Box<dyn Read>> {
        match self {
            Store::Dir(dir) => {
                if !safe_name(name) {
                    return Err(io::Error::other(format!(
                        "'{name}' is not a path inside the image"
                    )));
                }
                Ok(Box::new(std::fs::File::open(dir.join(name))?))
            }
            Store::Tar { file, members } => {
                let &(offset, size) = members.get(member_key(name)).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::NotFound, format!("no member '{name}'"))
                })?;
                let mut f = std::fs::File::open(file)?;
                f.seek(io::SeekFrom::Start(offset))?;
                Ok(Box::new(f.take(size)))
            }
        }
    }
}

/// A relative path of plain components.
pub(super) fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}
