//! Finding an image on this machine: its manifest, config and layers in an
//! OCI image layout (a directory as skopeo and umoci write it, or a tar of
//! one) or a `docker save` archive, every blob checked against its digest.

use std::io::{self, BufRead, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration};

use crate::error::{Error, Result};

mod digest;
mod formats;
mod store;

use digest::{sha256_hex, Hashing};
pub use digest::{sha256_of, Check};
pub use formats::normalize_name;
use store::Store;

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
