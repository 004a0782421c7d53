//! The two layouts an image comes in: an OCI image layout (its index, the
//! platform's manifest, the config) and a `docker save` archive (its
//! manifest.json), each read into an `Image`.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};

use super::{sha256_hex, sha256_of, Image, Layer, Reference, Store, IMAGE_NAME, REF_NAME};
use crate::error::{Error, Result};

impl Image {
    pub(super) fn oci_layout(reference: Reference, store: Store) -> Result<Image> {
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

    pub(super) fn docker_archive(reference: Reference, store: Store) -> Result<Image> {
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

pub(super) fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none tagged".into()
    } else {
        items.join(", ")
    }
}
