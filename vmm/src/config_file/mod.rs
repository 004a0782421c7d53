//! VM configuration files in the layout of Firecracker's `--config-file`
//! (boot-source, machine-config, drives, network-interfaces), so that
//! Firecracker users can reuse theirs unchanged, plus this VMM's own
//! settings under the extra key "x-vmm".
//!
//! Every error names what is wrong by its path in the file
//! (`drives[1].is_read_only`), with the line and column where the JSON
//! parser knows them, and maps to the config-error exit code. Firecracker
//! sections this VMM does not implement are refused by name unless they are
//! null, never dropped silently.
//!
//! Paths in the file are used as given: a relative path is relative to the
//! working directory, as with Firecracker.

use std::path::Path;

use crate::config::ConfigError;
use crate::config::{self, VmConfig};

type Result<T> = std::result::Result<T, ConfigError>;

mod overrides;
mod resolve;
mod schema;
#[cfg(test)]
mod tests;

pub use overrides::Overrides;
pub use schema::{
    BootSource, ConfigFile, Drive, Extensions, Logger, MachineConfig, Metrics, NetworkInterface,
};

/// A config file error: where, and what is wrong.
fn error(file: &Path, at: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError::File {
        file: file.to_path_buf(),
        at: at.into(),
        reason: reason.into(),
    }
}

/// Reads and resolves the config file at `path` with the command line's
/// `overrides`: the `VmConfig` to validate and build.
pub fn load(path: &Path, overrides: Overrides) -> Result<VmConfig> {
    read(path)?.resolve(path, overrides)
}

/// Reads and parses the config file at `path` (no checks beyond its
/// JSON's shape: `ConfigFile::resolve` makes them).
pub fn read(path: &Path) -> Result<ConfigFile> {
    parse(path, &read_capped(path)?)
}

/// The largest config file read (1 MiB): Firecracker's files are a few
/// hundred bytes, and `--config /dev/zero` must not read forever.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of the config file at `path`, which may be a pipe (`--config
/// <(...)`): at most `MAX_CONFIG_BYTES`, read as a stream.
fn read_capped(path: &Path) -> Result<String> {
    use std::io::Read;
    let file_err = |reason: String| ConfigError::Missing {
        what: "config file",
        path: path.to_path_buf(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| file_err(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_err(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(error(
            path,
            "file",
            format!("larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the most a config file may be"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| error(path, "file", format!("not UTF-8 text: {e}")))
}

/// Parses the JSON text of `path` into its sections, or an error with the
/// line and column of bad JSON, or the path of a field that is unknown
/// (with the field it probably meant), missing or of the wrong type.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile> {
    parse_json(text).map_err(|e| error(path, e.at, e.reason))
}

/// Where a JSON document is wrong, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// A field's path (`drives[1].is_read_only`), or a line and column.
    pub at: String,
    /// What is wrong, and what would be right.
    pub reason: String,
}

/// Parses JSON `text` into `T`, one of this file's sections or the whole
/// file, with the same errors the config file gets: the API's request
/// bodies go through here.
pub fn parse_json<T: serde::de::DeserializeOwned>(
    text: &str,
) -> std::result::Result<T, FieldError> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let parsed: std::result::Result<T, _> = serde_path_to_error::deserialize(&mut *de);
    if parsed.is_ok() {
        // Nothing but white space may follow the document.
        if let Err(e) = de.end() {
            return Err(FieldError {
                at: format!("line {}, column {}", e.line(), e.column()),
                reason: "invalid JSON: trailing characters after the document".into(),
            });
        }
    }
    parsed.map_err(|e| {
        let at = e.path().to_string();
        let inner = e.inner();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let msg = inner.to_string();
        let msg = msg.strip_suffix(&position).unwrap_or(&msg).to_string();
        let line_col = format!("line {}, column {}", inner.line(), inner.column());
        let fail = |at: String, reason: String| FieldError { at, reason };
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return fail(line_col, format!("invalid JSON: {msg}"));
        }
        if let Some((field, expected)) = unknown_field(&msg) {
            let at = if at == "." {
                field.clone()
            } else if at.ends_with(&field) {
                at
            } else {
                format!("{at}.{field}")
            };
            let hint = match closest(&field, &expected) {
                Some(m) => format!("did you mean {m}?"),
                None if expected.is_empty() => "no fields are allowed here".into(),
                None => format!("expected one of {}", expected.join(", ")),
            };
            return fail(at, format!("unknown field ({line_col}); {hint}"));
        }
        let at = if at == "." {
            line_col.clone()
        } else {
            format!("{at} ({line_col})")
        };
        fail(at, msg)
    })
}

/// The unknown field and the expected ones in serde's message
/// "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or
/// "there are no fields").
fn unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// The candidate closest to `name` if it is close enough to be a typo or
/// a shortening (vcpus for vcpu_count): by Jaro-Winkler similarity, which
/// weighs a common beginning.
fn closest(name: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

/// Checks that `path`, given as field `at`, names a readable regular file.
fn check_file(file: &Path, at: &str, path: &Path) -> Result<()> {
    config::check_file("file", path).map_err(|e| match e {
        ConfigError::Missing { reason, .. } | ConfigError::NotAnImage { reason, .. } => {
            error(file, at, format!("'{}': {reason}", path.display()))
        }
        other => other,
    })
}

/// One of Firecracker's string enums that takes only `allowed` here.
fn check_choice(
    file: &Path,
    at: &str,
    value: &Option<String>,
    allowed: &[&str],
    why: &str,
) -> Result<()> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(error(
            file,
            at,
            format!(
                "'{v}' is not supported by this VMM ({why}); use {}",
                allowed.join(" or ")
            ),
        )),
        _ => Ok(()),
    }
}

/// A working config for the default guest built by guest-kernels/build.sh.
pub fn example() -> ConfigFile {
    let dir = config::default_guest_dir();
    let config = VmConfig::with_defaults(dir.join("vmlinux"), Some(dir.join("initramfs.cpio")));
    ConfigFile::from_config(&config)
}
