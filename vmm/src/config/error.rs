//! What is wrong with a VM's configuration: a value, a config file's
//! field, a file it names.

use std::path::PathBuf;

/// A configuration that cannot be built: reported before KVM is touched.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An invalid value of an option or field.
    #[error("invalid {field} '{value}': {reason}")]
    Value {
        /// The option or field, e.g. "--memory".
        field: String,
        /// The value given.
        value: String,
        /// What is wrong and what would be right.
        reason: String,
    },
    /// A config file's (or an API request's) content is wrong.
    #[error("config file '{}': {at}: {reason}", file.display())]
    File {
        /// The config file ("request" for the API's bodies).
        file: PathBuf,
        /// Where: a field's path (drives[1].is_read_only) or a line and
        /// column.
        at: String,
        /// What is wrong, and what would be right.
        reason: String,
    },
    /// A file that does not exist or cannot be read.
    #[error("{what} '{}': {reason}", path.display())]
    Missing {
        /// What the file is for ("kernel", "initrd").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A kernel or initrd that is no image at all: empty, or not a
    /// regular file (a FIFO, a character device, a socket).
    #[error("{what} '{}': {reason}", path.display())]
    NotAnImage {
        /// What the file is for ("kernel", "initrd").
        what: &'static str,
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A disk image that cannot be used.
    #[error("disk '{}': {reason}", path.display())]
    Disk {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl ConfigError {
    /// Shorthand for an invalid value.
    pub fn value(field: &str, value: impl ToString, reason: impl Into<String>) -> Self {
        ConfigError::Value {
            field: field.to_string(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
