//! Finding an image on this machine: its manifest, config and layers in an
//! OCI image layout (a directory as skopeo and umoci write it, or a tar of
//! one) or a `docker save` archive, every blob checked against its digest.

use std::collections::HashMap;
use std::io::{self, BufRead, Read, Seek};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// The annotation that names an image in an OCI layout's index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's and Docker's name of an image in an index.
const IMAGE_NAME: &str = "io.containerd.image.name";
/// The largest manifest, index or config read (they are JSON documents of
/// a few KiB).
const JSON_LIMIT: u64 = 16 << 20;

/// Where an image is and which one in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The directory or archive.
    pub path: PathBuf,
    /// The tag (OCI layout) or REPO:TAG (docker archive), if given.
    pub tag: Option<String>,
    /// As the user wrote it.
    pub text: String,
}

impl Reference {
    /// Parses `DIR`, `DIR:TAG`, `FILE.tar` or `FILE.tar:REPO:TAG`: the
    /// longest prefix before a `:` that exists is the path.
    pub fn parse(text: &str) -> Result<Reference> {
        let whole = Path::new(text);
        if !text.is_empty() && whole.exists() {
            return Ok(Reference {
                path: whole.to_path_buf(),
                tag: None,
                text: text.into(),
            });
        }
        for (i, _) in text.rmatch_indices(':') {
            let (path, tag) = (&text[..i], &text[i + 1..]);
            if path.is_empty() || !Path::new(path).exists() {
                continue;
            }
            if tag.is_empty() {
                return Err(Error::Unusable {
                    reference: text.into(),
                    reason: "an empty tag after ':'".into(),
                });
            }
            return Ok(Reference {
                path: path.into(),
                tag: Some(tag.into()),
                text: text.into(),
            });
        }
        Err(Error::Missing {
            reference: text.into(),
            reason: "no such directory or file: expected an OCI image layout directory (DIR or \
                     DIR:TAG) or a `docker save` archive (FILE.tar or FILE.tar:REPO:TAG); \
                     `skopeo copy docker://NAME oci:DIR:TAG` makes one from a registry"
                .into(),
        })
    }
}

/// Where the blobs are read from: a directory, or members of a tar file
/// (by their offset, without unpacking it).
enum Store {
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
    fn open_tar(file: &Path) -> io::Result<Store> {
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

    fn has(&self, name: &str) -> bool {
        match self {
            Store::Dir(dir) => safe_name(name) && dir.join(name).is_file(),
            Store::Tar { members, .. } => members.contains_key(member_key(name)),
        }
    }

    fn open(&self, name: &str) -> io::Result<Box<dyn Read>> {
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
fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// One layer: where its blob is and what its digests must be.
#[derive(Debug, Clone)]
pub struct Layer {
    /// The blob's name in the store.
    name: String,
    /// The blob's digest (the manifest's), when known.
    pub digest: Option<String>,
    /// The uncompressed tar's digest (the config's rootfs.diff_ids).
    pub diff_id: Option<String>,
    /// The media type the manifest gives.
    pub media_type: String,
}

/// An image found and checked, ready to unpack.
pub struct Image {
    /// The reference it was found by.
    pub reference: Reference,
    /// What the cache keys it by: the manifest's digest (for a `docker
    /// save` archive, which has none, its image ID: the config's digest).
    pub key: String,
    /// Its config: architecture, Env, Entrypoint, Cmd, User, WorkingDir,
    /// the diff IDs.
    pub config: ImageConfiguration,
    /// The layers, bottom first.
    pub layers: Vec<Layer>,
    store: Store,
}

/// A sha256 digest as "sha256:HEX".
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex of a "sha256:HEX" digest, checked.
fn sha256_hex(digest: &str) -> Option<&str> {
    let h = digest.strip_prefix("sha256:")?;
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(h)
}

impl Image {
    /// Finds the image `reference` names and checks its manifest and
    /// config; the layers are checked as they are unpacked.
    pub fn open(reference: &str) -> Result<Image> {
        let reference = Reference::parse(reference)?;
        let unusable = |reason: String| Error::Unusable {
            reference: reference.text.clone(),
            reason,
        };
        let store = if reference.path.is_dir() {
            Store::Dir(reference.path.clone())
        } else {
            Store::open_tar(&reference.path).map_err(|e| {
                unusable(format!(
                    "not an OCI image layout directory, and not a tar archive ({e})"
                ))
            })?
        };
        if store.has("manifest.json") {
            Self::docker_archive(reference, store)
        } else if store.has("index.json") {
            Self::oci_layout(reference, store)
        } else {
            Err(unusable(
                "neither an OCI image layout (no index.json) nor a `docker save` archive (no manifest.json)"
                    .into(),
            ))
        }
    }

    fn err(reference: &Reference, reason: String) -> Error {
        Error::Unusable {
            reference: reference.text.clone(),
            reason,
        }
    }

    /// A JSON blob, read whole (at most JSON_LIMIT) and, when `digest` is
    /// given, checked against it.
    fn read_blob(
        reference: &Reference,
        store: &Store,
        name: &str,
        what: &str,
        digest: Option<&str>,
    ) -> Result<Vec<u8>> {
        let content_err = |reason: String| Error::Content {
            reference: reference.text.clone(),
            what: what.to_string(),
            reason,
        };
        let mut bytes = Vec::new();
        store
            .open(name)
            .and_then(|r| r.take(JSON_LIMIT + 1).read_to_end(&mut bytes))
            .map_err(|e| content_err(format!("cannot read {name}: {e}")))?;
        if bytes.len() as u64 > JSON_LIMIT {
            return Err(content_err(format!(
                "{name} is larger than {JSON_LIMIT} bytes"
            )));
        }
        if let Some(want) = digest {
            let got = sha256_of(&bytes);
            if got != want {
                return Err(content_err(format!(
                    "digest mismatch: the image says {want}, the content is {got}"
                )));
            }
        }
        Ok(bytes)
    }

    /// The blob a descriptor names, checked.
    fn read_descriptor(
        reference: &Reference,
        store: &Store,
        d: &Descriptor,
        what: &str,
    ) -> Result<Vec<u8>> {
        let digest = d.digest().to_string();
        let Some(h) = sha256_hex(&digest) else {
            return Err(Self::err(
                reference,
                format!("{what} digest '{digest}': only sha256 digests are supported"),
            ));
        };
        Self::read_blob(
            reference,
            store,
            &format!("blobs/sha256/{h}"),
            &format!("{what} ({digest})"),
            Some(&digest),
        )
    }

    fn oci_layout(reference: Reference, store: Store) -> Result<Image> {
        let index_bytes = Self::read_blob(&reference, &store, "index.json", "index.json", None)?;
        let index = ImageIndex::from_reader(&index_bytes[..]).map_err(|e| {
            Self::err(
                &reference,
                format!("index.json is not an OCI image index: {e}"),
            )
        })?;
        let names = |d: &Descriptor| -> Vec<String> {
            d.annotations()
                .iter()
                .flat_map(|a| [a.get(REF_NAME), a.get(IMAGE_NAME)])
                .flatten()
                .cloned()
                .collect()
        };
        let descriptor = pick(
            &reference,
            index.manifests(),
            names,
            |name, tag| name == tag,
            ("layout", "no tag", "TAG"),
        )?
        .clone();
        let manifest_desc = Self::platform_manifest(&reference, &store, descriptor)?;
        let manifest_bytes = Self::read_descriptor(&reference, &store, &manifest_desc, "manifest")?;
        let manifest = ImageManifest::from_reader(&manifest_bytes[..]).map_err(|e| {
            Self::err(
                &reference,
                format!("the manifest is not an OCI image manifest: {e}"),
            )
        })?;
        let config_bytes = Self::read_descriptor(&reference, &store, manifest.config(), "config")?;
        let config = Self::parse_config(&reference, &config_bytes)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        check_diff_ids(
            &reference,
            manifest.layers().len(),
            "the manifest",
            diff_ids.len(),
        )?;
        let mut layers = Vec::new();
        for (i, d) in manifest.layers().iter().enumerate() {
            let media_type = d.media_type().to_string();
            if !layer_media_type_ok(&media_type) {
                return Err(Self::err(
                    &reference,
                    format!(
                        "layer {} has media type {media_type}, which this VMM cannot unpack",
                        i + 1
                    ),
                ));
            }
            let digest = d.digest().to_string();
            let Some(h) = sha256_hex(&digest) else {
                return Err(Self::err(
                    &reference,
                    format!("layer digest '{digest}': only sha256 digests are supported"),
                ));
            };
            layers.push(Layer {
                name: format!("blobs/sha256/{h}"),
                digest: Some(digest),
                diff_id: Some(diff_ids[i].clone()),
                media_type,
            });
        }
        Ok(Image {
            key: manifest_desc.digest().to_string(),
            reference,
            config,
            layers,
            store,
        })
    }

    /// The manifest a descriptor leads to: itself, or in an image index
    /// (a multi-platform image) the linux/amd64 one.
    fn platform_manifest(
        reference: &Reference,
        store: &Store,
        d: Descriptor,
    ) -> Result<Descriptor> {
        let mt = d.media_type().to_string();
        let is_index = mt == "application/vnd.oci.image.index.v1+json"
            || mt == "application/vnd.docker.distribution.manifest.list.v2+json";
        if !is_index {
            return Ok(d);
        }
        let bytes = Self::read_descriptor(reference, store, &d, "image index")?;
        let index = ImageIndex::from_reader(&bytes[..])
            .map_err(|e| Self::err(reference, format!("the image index is not one: {e}")))?;
        let platforms: Vec<String> = index
            .manifests()
            .iter()
            .filter_map(|m| m.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect();
        index
            .manifests()
            .iter()
            .find(|m| {
                m.platform().as_ref().is_some_and(|p| {
                    p.os().to_string() == "linux" && p.architecture().to_string() == "amd64"
                })
            })
            .cloned()
            .ok_or_else(|| {
                Self::err(
                    reference,
                    format!(
                        "no manifest for linux/amd64 (the index has: {})",
                        list(&platforms)
                    ),
                )
            })
    }

    fn parse_config(reference: &Reference, bytes: &[u8]) -> Result<ImageConfiguration> {
        let config = ImageConfiguration::from_reader(bytes)
            .map_err(|e| Self::err(reference, format!("the image config is not one: {e}")))?;
        let (os, arch) = (config.os().to_string(), config.architecture().to_string());
        if os != "linux" || arch != "amd64" {
            return Err(Self::err(
                reference,
                format!("the image is for {os}/{arch}; this VMM runs linux/amd64 guests"),
            ));
        }
        Ok(config)
    }

    fn docker_archive(reference: Reference, store: Store) -> Result<Image> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let bytes = Self::read_blob(&reference, &store, "manifest.json", "manifest.json", None)?;
        let entries: Vec<Entry> = serde_json::from_slice(&bytes).map_err(|e| {
            Self::err(
                &reference,
                format!("manifest.json is not a docker save manifest: {e}"),
            )
        })?;
        let entry = pick(
            &reference,
            &entries,
            |e: &Entry| e.repo_tags.clone().unwrap_or_default(),
            |name, tag| normalize_name(name) == normalize_name(tag),
            ("archive", "no image tagged", "REPO:TAG"),
        )?;
        // The config's name is its digest ("HEX.json" or "blobs/sha256/HEX").
        let named = entry
            .config
            .strip_suffix(".json")
            .or_else(|| entry.config.strip_prefix("blobs/sha256/"))
            .map(|h| format!("sha256:{}", h.rsplit('/').next().unwrap_or(h)))
            .filter(|d| sha256_hex(d).is_some());
        let config_bytes = Self::read_blob(
            &reference,
            &store,
            &entry.config,
            &format!("config ({})", entry.config),
            named.as_deref(),
        )?;
        let config = Self::parse_config(&reference, &config_bytes)?;
        let diff_ids = config.rootfs().diff_ids().clone();
        check_diff_ids(
            &reference,
            entry.layers.len(),
            "manifest.json",
            diff_ids.len(),
        )?;
        let layers = entry
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(name, diff_id)| Layer {
                digest: name
                    .strip_prefix("blobs/sha256/")
                    .map(|h| format!("sha256:{h}"))
                    .filter(|d| sha256_hex(d).is_some()),
                name: name.clone(),
                diff_id: Some(diff_id),
                media_type: "application/vnd.docker.image.rootfs.diff.tar".into(),
            })
            .collect();
        Ok(Image {
            key: sha256_of(&config_bytes),
            reference,
            config,
            layers,
            store,
        })
    }

    /// Layer `i`'s uncompressed tar stream, with `check` to call once it
    /// is read to its end: whether its digests were right.
    pub fn layer_stream(&self, i: usize) -> Result<(Box<dyn Read>, Check)> {
        let layer = &self.layers[i];
        let what = self.layer_name(i);
        let content_err = |reason: String| Error::Content {
            reference: self.reference.text.clone(),
            what: what.clone(),
            reason,
        };
        let raw = self
            .store
            .open(&layer.name)
            .map_err(|e| content_err(format!("cannot read its blob {}: {e}", layer.name)))?;
        let (blob, blob_hash) = Hashing::new(raw);
        let mut blob = io::BufReader::with_capacity(256 << 10, blob);
        let magic = blob
            .fill_buf()
            .map_err(|e| content_err(format!("cannot read its blob: {e}")))?
            .to_vec();
        let tar: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(blob))
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                zstd::stream::read::Decoder::with_buffer(blob)
                    .map_err(|e| content_err(format!("cannot start its zstd decoder: {e}")))?,
            )
        } else {
            Box::new(blob)
        };
        let (tar, diff_hash) = Hashing::new(tar);
        Ok((
            Box::new(tar),
            Check {
                what,
                reference: self.reference.text.clone(),
                digest: layer.digest.clone(),
                diff_id: layer.diff_id.clone(),
                blob_hash,
                diff_hash,
            },
        ))
    }

    /// "layer 2 of 3 (sha256:...)".
    pub fn layer_name(&self, i: usize) -> String {
        let l = &self.layers[i];
        let id = l
            .digest
            .as_ref()
            .or(l.diff_id.as_ref())
            .map_or(l.name.as_str(), |s| s.as_str());
        format!("layer {} of {} ({id})", i + 1, self.layers.len())
    }
}

/// An image name as docker compares them: the registry docker.io when
/// none is given (its one-word names under library/), the tag latest when
/// none is given.
pub fn normalize_name(name: &str) -> String {
    let (first, rest) = name.split_once('/').unwrap_or(("", name));
    let has_registry =
        !first.is_empty() && (first.contains('.') || first.contains(':') || first == "localhost");
    let mut full = match (has_registry, first.is_empty()) {
        (true, _) => name.to_string(),
        (false, true) => format!("docker.io/library/{rest}"),
        (false, false) => format!("docker.io/{name}"),
    };
    let last = full.rsplit('/').next().unwrap_or("");
    if !last.contains(':') && !last.contains('@') {
        full.push_str(":latest");
    }
    full
}

fn layer_media_type_ok(mt: &str) -> bool {
    matches!(
        mt,
        "application/vnd.oci.image.layer.v1.tar"
            | "application/vnd.oci.image.layer.v1.tar+gzip"
            | "application/vnd.oci.image.layer.v1.tar+zstd"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
            | "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.diff.tar"
    )
}

/// The one image of `items` the reference's tag names (`matches(name,
/// tag)` over each item's `names`), or the only one when no tag is given.
/// `naming`: what holds them ("layout"), how a missing tag is said ("no
/// tag") and how to pick one ("TAG"), for the errors.
fn pick<'a, T>(
    reference: &Reference,
    items: &'a [T],
    names: impl Fn(&T) -> Vec<String>,
    matches: impl Fn(&str, &str) -> bool,
    naming: (&str, &str, &str),
) -> Result<&'a T> {
    let (holder, missing, how) = naming;
    let all_tags: Vec<String> = items.iter().flat_map(&names).collect();
    let chosen: Vec<&T> = match &reference.tag {
        Some(tag) => items
            .iter()
            .filter(|i| names(i).iter().any(|n| matches(n, tag)))
            .collect(),
        None => items.iter().collect(),
    };
    let reason = match (chosen.as_slice(), &reference.tag) {
        ([one], _) => return Ok(one),
        ([], Some(tag)) => format!(
            "{missing} '{tag}' (the {holder} holds: {})",
            list(&all_tags)
        ),
        ([], None) => format!("the {holder} holds no image"),
        (many, _) => format!(
            "the {holder} holds {} images: pick one with {}:{how} (tags: {})",
            many.len(),
            reference.path.display(),
            list(&all_tags)
        ),
    };
    Err(Image::err(reference, reason))
}

/// A config whose diff IDs are as many as the layers `source` lists.
fn check_diff_ids(
    reference: &Reference,
    layers: usize,
    source: &str,
    diff_ids: usize,
) -> Result<()> {
    if layers == diff_ids {
        return Ok(());
    }
    Err(Error::Content {
        reference: reference.text.clone(),
        what: "config".into(),
        reason: format!("{layers} layers in {source}, {diff_ids} diff IDs in the config"),
    })
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none tagged".into()
    } else {
        items.join(", ")
    }
}

type Shared = std::rc::Rc<std::cell::RefCell<(Sha256, u64)>>;

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    state: Shared,
}

impl<R: Read> Hashing<R> {
    fn new(inner: R) -> (Hashing<R>, Shared) {
        let state: Shared = Default::default();
        (
            Hashing {
                inner,
                state: state.clone(),
            },
            state,
        )
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.0.update(&buf[..n]);
        s.1 += n as u64;
        Ok(n)
    }
}

/// A layer's digests, to check once its stream has been read to the end.
pub struct Check {
    what: String,
    reference: String,
    digest: Option<String>,
    diff_id: Option<String>,
    blob_hash: Shared,
    diff_hash: Shared,
}

impl Check {
    /// Reads what is left of `stream` (past the tar's end-of-archive
    /// marker) and compares both digests.
    pub fn finish(self, mut stream: impl Read) -> Result<()> {
        let err = |reason: String| Error::Content {
            reference: self.reference.clone(),
            what: self.what.clone(),
            reason,
        };
        io::copy(&mut stream, &mut io::sink()).map_err(|e| err(format!("corrupt: {e}")))?;
        drop(stream);
        let done = |s: &Shared| sha256_hex_of(s);
        if let Some(want) = &self.digest {
            let got = done(&self.blob_hash);
            if &got != want {
                return Err(err(format!(
                    "digest mismatch: the manifest says {want}, the blob is {got}"
                )));
            }
        }
        if let Some(want) = &self.diff_id {
            let got = done(&self.diff_hash);
            if &got != want {
                return Err(err(format!(
                    "digest mismatch: the config's diff ID is {want}, the uncompressed layer is {got}"
                )));
            }
        }
        Ok(())
    }
}

fn sha256_hex_of(s: &Shared) -> String {
    let h = s.borrow().0.clone().finalize();
    format!("sha256:{}", hex(&h))
}
