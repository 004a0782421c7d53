//! Container images as VMs: `vmm run --image REF`.
//!
//! An image on this machine (an OCI image layout as skopeo and umoci write
//! it, or a `docker save` archive) is found and checked (`source`), its
//! layers applied in order with the OCI whiteout rules and nothing written
//! outside the directory they go to (`unpack`), and the result made an
//! ext4 root disk holding the project's init beside the image's files
//! (`ext4`), cached by the image's manifest digest (`cache`). Each VM boots
//! a private copy of that disk, into which the run (`run`: the image's
//! Entrypoint and Cmd, Env, User and WorkingDir, with the run's options
//! over them, as `docker run` resolves them) is written for init to read.

pub mod cache;
pub mod error;
pub mod ext4;
pub mod run;
pub mod source;
#[cfg(any(test, feature = "test-utils"))]
pub mod testing;
#[cfg(test)]
mod tests;
pub mod unpack;

use std::path::{Path, PathBuf};

pub use cache::Cache;
pub use error::{Class, Error, Result};
pub use source::Image;

/// Unpacks every layer of `image` into `dir` (made; must not exist),
/// checking each layer's digests. `native`: ownership, modes and device
/// nodes on the files themselves (needs root).
pub fn unpack(image: &Image, dir: &Path, native: bool) -> Result<unpack::Tree> {
    let mut tree =
        unpack::Tree::new(dir.to_path_buf(), native).map_err(|e| Error::cache(dir, e))?;
    for i in 0..image.layers.len() {
        let (mut stream, check) = image.layer_stream(i)?;
        tree.apply_layer(&mut stream).map_err(|e| match e {
            unpack::ApplyError::Content(reason) => Error::Content {
                reference: image.reference.text.clone(),
                what: image.layer_name(i),
                reason,
            },
            unpack::ApplyError::Host(reason) => Error::cache(dir, reason),
        })?;
        check.finish(stream)?;
    }
    tree.set_times()
        .map_err(|e| Error::cache(dir, format!("cannot set times: {e}")))?;
    Ok(tree)
}

/// A VM's disk for an image, ready to boot.
#[derive(Debug)]
pub struct Prepared {
    /// The VM's private disk: a copy-on-write overlay (`Format::Overlay`)
    /// over the cached disk, its run written in.
    pub disk: PathBuf,
    /// What init runs.
    pub spec: run::Spec,
    /// Whether the cached disk was made now (a cold start).
    pub built: bool,
    /// The cache entry.
    pub entry: cache::Entry,
}

/// Finds `reference`, gets its cached disk (made on a miss, with `init`),
/// resolves the run and makes the VM's private disk (at `at`, else in the
/// cache's .run/).
pub fn prepare(
    reference: &str,
    init: &Path,
    opts: &run::Options,
    cache: &Cache,
    at: Option<&Path>,
) -> Result<Prepared> {
    let image = Image::open(reference)?;
    let (entry, built) = cache.get(&image, init)?;
    let spec = run::resolve(&entry.info.config, &entry.info.accounts, opts)?;
    let disk = cache.private_disk(&entry, &spec.encode(), at)?;
    Ok(Prepared {
        disk,
        spec,
        built,
        entry,
    })
}
