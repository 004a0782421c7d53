//! Digests: a blob's sha256, and the readers that hash a layer's
//! compressed and uncompressed streams as they are unpacked.

use std::io::{self, Read};

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A sha256 digest as "sha256:HEX".
pub fn sha256_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex(&Sha256::digest(bytes)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hex of a "sha256:HEX" digest, checked.
pub(super) fn sha256_hex(digest: &str) -> Option<&str> {
    let h = digest.strip_prefix("sha256:")?;
    (h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(h)
}

pub(super) type Shared = std::rc::Rc<std::cell::RefCell<(Sha256, u64)>>;

/// A reader that hashes what passes through it.
pub(super) struct Hashing<R> {
    inner: R,
    state: Shared,
}

impl<R: Read> Hashing<R> {
    pub(super) fn new(inner: R) -> (Hashing<R>, Shared) {
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
    pub(super) what: String,
    pub(super) reference: String,
    pub(super) digest: Option<String>,
    pub(super) diff_id: Option<String>,
    pub(super) blob_hash: Shared,
    pub(super) diff_hash: Shared,
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
