//! What can be wrong with an image, its layers or the cache, each with
//! the class that picks the VMM's exit code.

use std::path::PathBuf;

/// Why an image cannot become a root disk.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference names nothing on this machine.
    #[error("image '{reference}': {reason}")]
    Missing {
        /// The reference as given.
        reference: String,
        /// What was looked for.
        reason: String,
    },
    /// The reference is not an image this VMM reads: not an OCI image
    /// layout nor a `docker save` archive, a tag it does not hold, a
    /// manifest for another platform, a media type it cannot unpack.
    #[error("image '{reference}': {reason}")]
    Unusable {
        /// The reference as given.
        reference: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A blob (manifest, config or layer) whose content is not what the
    /// image says: a digest that does not match, a corrupt tarball or
    /// compressed stream, or a layer that would write outside the root.
    #[error("image '{reference}': {what}: {reason}")]
    Content {
        /// The reference as given.
        reference: String,
        /// Which blob: "layer 2 of 3 (sha256:...)", "config (sha256:...)".
        what: String,
        /// What is wrong.
        reason: String,
    },
    /// A value of the image's config or of the run's options that cannot
    /// be used (a User not in the image's /etc/passwd, an -e without a
    /// name).
    #[error("invalid {field} '{value}': {reason}")]
    Run {
        /// The option or config field.
        field: String,
        /// The value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The cache directory cannot be used.
    #[error("image cache '{}': {reason}", path.display())]
    Cache {
        /// The directory or file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// The root disk could not be made (mkfs.ext4, debugfs).
    #[error("building the root disk: {0}")]
    Build(String),
}

/// What an error is about: the front end's exit code follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Nothing at the path given.
    Missing,
    /// Not an image, no such tag, another platform.
    Reference,
    /// A blob's content: digest mismatch, corruption, unsafe paths.
    Content,
    /// A run option or config value.
    Config,
    /// The host: cache directory, e2fsprogs.
    Host,
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> Class {
        match self {
            Error::Missing { .. } => Class::Missing,
            Error::Unusable { .. } => Class::Reference,
            Error::Content { .. } => Class::Content,
            Error::Run { .. } => Class::Config,
            Error::Cache { .. } | Error::Build(_) => Class::Host,
        }
    }

    pub(crate) fn run(field: &str, value: impl ToString, reason: impl Into<String>) -> Error {
        Error::Run {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    pub(crate) fn cache(path: &std::path::Path, reason: impl ToString) -> Error {
        Error::Cache {
            path: path.to_path_buf(),
            reason: reason.to_string(),
        }
    }
}

/// Result of this crate's operations.
pub type Result<T> = std::result::Result<T, Error>;
