//! The runtime's errors and their exit codes (docs/oci-runtime.md).

use std::path::PathBuf;

/// The exit codes of `vmm-runtime`. Podman, conmon and containerd's shim
/// look only for a non-zero code and read the message from `--log`; the
/// codes tell a person or a script what went wrong. A container's own
/// exit status (`run`) is passed through as it is.
pub mod code {
    /// An error inside the runtime or the VMM.
    pub const ERROR: i32 = 1;
    /// Command-line syntax error.
    pub const USAGE: i32 = 2;
    /// A field of the bundle's config.json is invalid (the field is named).
    pub const CONFIG: i32 = 3;
    /// A file is missing or unreadable: the bundle, its config.json, its
    /// root directory, a file to bind.
    pub const FILE: i32 = 4;
    /// No container has that ID.
    pub const NOT_FOUND: i32 = 15;
    /// A container with that ID exists already.
    pub const EXISTS: i32 = 16;
    /// The container is not in a state that allows the operation (start
    /// twice, delete a running container without --force).
    pub const STATE: i32 = 17;
    /// The operation or the bundle asks for something this runtime does
    /// not do (exec, checkpoint, a directory bind mount).
    pub const UNSUPPORTED: i32 = 18;
}

/// Why a runtime command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A bad argument that clap could not see.
    #[error("{0}")]
    Usage(String),
    /// A field of config.json.
    #[error("config.json: {field}: {reason}")]
    Config {
        /// The field, as a path (`process.args`, `mounts[3].source`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file is missing or unreadable.
    #[error("{what} {}: {reason}", path.display())]
    File {
        /// What it is.
        what: &'static str,
        /// Where.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// No such container.
    #[error("container {0} does not exist")]
    NotFound(String),
    /// The ID is taken.
    #[error("container {0} exists already")]
    Exists(String),
    /// The container's state does not allow it.
    #[error("container {id} is {status}: {what}")]
    State {
        /// The container.
        id: String,
        /// Its state.
        status: String,
        /// What cannot be done.
        what: String,
    },
    /// Not supported by this runtime.
    #[error("{0}")]
    Unsupported(String),
    /// The VM could not be made or driven; `code` is the VMM's exit code
    /// for it (docs/command-line.md), else ERROR.
    #[error("{message}")]
    Vm {
        /// What the VMM said.
        message: String,
        /// Its exit code.
        code: i32,
    },
    /// A host operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }

    /// A config.json field error.
    pub fn config(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Config {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The process exit code for this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Usage(_) => code::USAGE,
            Error::Config { .. } => code::CONFIG,
            Error::File { .. } => code::FILE,
            Error::NotFound(_) => code::NOT_FOUND,
            Error::Exists(_) => code::EXISTS,
            Error::State { .. } => code::STATE,
            Error::Unsupported(_) => code::UNSUPPORTED,
            Error::Vm { code, .. } => *code,
            Error::Io { .. } => code::ERROR,
        }
    }
}

/// The runtime's results.
pub type Result<T> = std::result::Result<T, Error>;
