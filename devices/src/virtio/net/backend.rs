//! What virtio-net needs from its host end (a TAP, or a socket in the
//! tests): frames in and out, each starting with the virtio-net header,
//! and the offloads it may hand the guest.

use std::io;
use std::os::fd::AsRawFd;

use crate::GuestSlice;

/// TUNSETOFFLOAD flags: what the TAP may hand us unchecksummed or
/// unsegmented (and so what the guest must accept).
pub mod offload {
    /// Partial checksums.
    pub const CSUM: u32 = 0x01;
    /// TCP segmentation offload, IPv4.
    pub const TSO4: u32 = 0x02;
    /// TCP segmentation offload, IPv6.
    pub const TSO6: u32 = 0x04;
}

/// What virtio-net needs from its host end: frames in and out, each
/// starting with the virtio-net header, and the offloads to accept.
pub trait NetBackend: Send + AsRawFd {
    /// Reads one frame (header included); WouldBlock when there is none.
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame (header included).
    fn write_frame(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Writes one frame (header included) made of `parts`, pieces of guest
    /// memory, in order. By default they are copied into one buffer for
    /// `write_frame`; a TAP writes them where they are, in one writev.
    fn write_gathered(&mut self, parts: &[GuestSlice<'_>]) -> io::Result<usize> {
        self.write_frame(&gathered(parts))
    }
    /// Sets which offloads (`offload::*`) frames read may use.
    fn set_offload(&mut self, flags: u32) -> io::Result<()>;
}

/// `parts` copied, in order, into one buffer.
fn gathered(parts: &[GuestSlice<'_>]) -> Vec<u8> {
    let mut frame = vec![0u8; parts.iter().map(|p| p.len()).sum()];
    let mut at = 0;
    for p in parts {
        at += p.copy_to(&mut frame[at..]);
    }
    frame.truncate(at);
    frame
}
