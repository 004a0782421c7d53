//! Images made by hand for tests: layers entry by entry (hostile ones
//! included, which no image tool would write), written as an OCI image
//! layout or a `docker save` archive.

use std::io::Write;
use std::path::Path;

use serde_json::json;

use crate::source::sha256_of;

/// A layer's tar, entry by entry.
pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Layer {
    /// An empty layer.
    pub fn new() -> Layer {
        Layer {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn header(kind: tar::EntryType, mode: u32, uid: u64, gid: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        h
    }

    /// Appends `h` at `path` (raw bytes: any path, `..` included).
    fn append(mut self, mut h: tar::Header, path: &[u8], data: &[u8]) -> Layer {
        // The name goes in as bytes, unchecked: hostile paths included.
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.builder.append(&h, data).expect("append to a Vec");
        self
    }

    /// PAX extended header records (`uid`, `gid`, `mtime`, ...) for the
    /// entry appended next.
    pub fn pax(mut self, records: &[(&str, &str)]) -> Layer {
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, v.as_bytes())))
            .expect("append to a Vec");
        self
    }

    /// A regular file.
    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Layer {
        self.file_owned(path, data, mode, 0, 0)
    }

    /// A regular file with an owner.
    pub fn file_owned(self, path: &str, data: &[u8], mode: u32, uid: u64, gid: u64) -> Layer {
        let h = Self::header(tar::EntryType::Regular, mode, uid, gid);
        self.append(h, path.as_bytes(), data)
    }

    /// A directory.
    pub fn dir(self, path: &str, mode: u32) -> Layer {
        self.dir_owned(path, mode, 0, 0)
    }

    /// A directory with an owner.
    pub fn dir_owned(self, path: &str, mode: u32, uid: u64, gid: u64) -> Layer {
        let h = Self::header(tar::EntryType::Directory, mode, uid, gid);
        self.append(h, path.as_bytes(), b"")
    }

    fn link(self, kind: tar::EntryType, path: &str, target: &str) -> Layer {
        let mut h = Self::header(kind, 0o777, 0, 0);
        let name = &mut h.as_old_mut().linkname;
        name.fill(0);
        name[..target.len()].copy_from_slice(target.as_bytes());
        self.append(h, path.as_bytes(), b"")
    }

    /// A symbolic link.
    pub fn symlink(self, path: &str, target: &str) -> Layer {
        self.link(tar::EntryType::Symlink, path, target)
    }

    /// A hard link to `target` (a path from the root).
    pub fn hardlink(self, path: &str, target: &str) -> Layer {
        self.link(tar::EntryType::Link, path, target)
    }

    /// A character device.
    pub fn char_device(self, path: &str, major: u32, minor: u32, mode: u32) -> Layer {
        let mut h = Self::header(tar::EntryType::Char, mode, 0, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, path.as_bytes(), b"")
    }

    /// A block device node.
    pub fn block_device(self, path: &str, major: u32, minor: u32, mode: u32) -> Layer {
        let mut h = Self::header(tar::EntryType::Block, mode, 0, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.append(h, path.as_bytes(), b"")
    }

    /// A FIFO.
    pub fn fifo(self, path: &str, mode: u32) -> Layer {
        let h = Self::header(tar::EntryType::Fifo, mode, 0, 0);
        self.append(h, path.as_bytes(), b"")
    }

    /// A whiteout of `path` (`dir/.wh.name`).
    pub fn whiteout(self, path: &str) -> Layer {
        let (dir, name) = path.rsplit_once('/').map_or(("", path), |(d, n)| (d, n));
        let p = if dir.is_empty() {
            format!(".wh.{name}")
        } else {
            format!("{dir}/.wh.{name}")
        };
        self.file(&p, b"", 0o644)
    }

    /// The opaque marker of `dir`.
    pub fn opaque(self, dir: &str) -> Layer {
        self.file(&format!("{dir}/.wh..wh..opq"), b"", 0o644)
    }

    /// The uncompressed tar.
    pub fn tar(self) -> Vec<u8> {
        self.builder.into_inner().expect("finish the tar")
    }
}

/// `data` compressed.
pub fn compress(data: &[u8], c: Compression) -> Vec<u8> {
    match c {
        Compression::None => data.to_vec(),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        Compression::Zstd => zstd::encode_all(data, 1).unwrap(),
    }
}

/// An image config for linux/amd64 with `config` (Env, Cmd, ...) and the
/// diff IDs of `layers` (uncompressed tars).
pub fn config(layers: &[Vec<u8>], config: serde_json::Value) -> serde_json::Value {
    json!({
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| sha256_of(l)).collect::<Vec<_>>()}
    })
}

fn write_blob(dir: &Path, data: &[u8]) -> String {
    let digest = sha256_of(data);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&digest["sha256:".len()..]), data).unwrap();
    digest
}

/// Writes an OCI image layout at `dir`: `layers` (uncompressed tars,
/// stored with `c`), `config`, tagged `tag`. Returns the manifest digest.
pub fn oci_layout(
    dir: &Path,
    layers: &[Vec<u8>],
    config: &serde_json::Value,
    tag: &str,
    c: Compression,
) -> String {
    let media = match c {
        Compression::None => "application/vnd.oci.image.layer.v1.tar",
        Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    };
    let layer_descs: Vec<serde_json::Value> = layers
        .iter()
        .map(|l| {
            let blob = compress(l, c);
            json!({"mediaType": media, "digest": write_blob(dir, &blob), "size": blob.len()})
        })
        .collect();
    let config_bytes = serde_json::to_vec(config).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": write_blob(dir, &config_bytes), "size": config_bytes.len()},
        "layers": layer_descs
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let digest = write_blob(dir, &manifest_bytes);
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": digest, "size": manifest_bytes.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    digest
}

/// Rewrites, with `edit`, the manifest of the first image that the layout
/// at `dir` indexes, as a new blob, and points index.json at it.
pub fn edit_manifest(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let index_path = dir.join("index.json");
    let mut index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&index_path).unwrap()).unwrap();
    let old = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = dir.join("blobs/sha256").join(&old["sha256:".len()..]);
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(blob).unwrap()).unwrap();
    edit(&mut manifest);
    let bytes = serde_json::to_vec(&manifest).unwrap();
    index["manifests"][0]["digest"] = json!(write_blob(dir, &bytes));
    index["manifests"][0]["size"] = json!(bytes.len());
    std::fs::write(&index_path, serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Makes the layout at `dir` a multi-platform image tagged `tag`: an
/// image index blob listing `manifests` (each a manifest digest already
/// in `dir`'s blobs, with its platform's os and architecture), which
/// index.json names alone.
pub fn multi_platform_index(dir: &Path, manifests: &[(&str, &str, &str)], tag: &str) {
    let blobs = dir.join("blobs/sha256");
    let entries: Vec<serde_json::Value> = manifests
        .iter()
        .map(|(digest, os, arch)| {
            let size = std::fs::metadata(blobs.join(&digest["sha256:".len()..]))
                .unwrap()
                .len();
            json!({"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": digest, "size": size,
                   "platform": {"os": os, "architecture": arch}})
        })
        .collect();
    let index_bytes = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": entries
    }))
    .unwrap();
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": write_blob(dir, &index_bytes), "size": index_bytes.len(),
                       "annotations": {"org.opencontainers.image.ref.name": tag}}]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// Writes a `docker save` archive at `file`: `layers` (uncompressed) as
/// `N/layer.tar`, `config` as `HEX.json`, tagged `repo_tag`.
pub fn docker_archive(file: &Path, layers: &[Vec<u8>], config: &serde_json::Value, repo_tag: &str) {
    let mut b = tar::Builder::new(std::fs::File::create(file).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data).unwrap();
    };
    let config_bytes = serde_json::to_vec(config).unwrap();
    let config_name = format!("{}.json", &sha256_of(&config_bytes)["sha256:".len()..]);
    add(&config_name, &config_bytes);
    let names: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    for (name, l) in names.iter().zip(layers) {
        add(name, l);
    }
    let manifest = json!([{"Config": config_name, "RepoTags": [repo_tag], "Layers": names}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.finish().unwrap();
}
