//! A host TAP device: the host end of a guest's network interface. Opened
//! from /dev/net/tun with IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, so every frame
//! carries the same 12-byte header virtio-net uses (struct
//! virtio_net_hdr_v1) and checksum and segmentation offloads pass through
//! unchanged. Non-blocking: the event loop reads it when epoll says so.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::{NetBackend, VNET_HDR_LEN};
use crate::GuestSlice;

/// Longest interface name the kernel takes, without its NUL (IFNAMSIZ - 1).
pub const MAX_NAME_LEN: usize = 15;

// From <linux/if_tun.h>.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca; // _IOW('T', 202, int)
const TUNGETFEATURES: libc::c_ulong = 0x8004_54cf; // _IOR('T', 207, unsigned int)
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0; // _IOW('T', 208, unsigned int)
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8; // _IOW('T', 216, int)
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;

/// Why a name cannot be a TAP name; checked before anything is opened.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the TAP name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "TAP name '{name}' is {} bytes; Linux interface names are at most {MAX_NAME_LEN}",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("'{name}' is not a valid interface name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || *c == '/' || *c == ':' || !c.is_ascii_graphic())
    {
        return Err(format!(
            "TAP name '{name}' contains {c:?}, which interface names cannot hold"
        ));
    }
    Ok(())
}

/// An open TAP device.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    created: bool,
}

/// struct ifreq, as far as TUNSETIFF reads it: the name and the flags.
#[repr(C)]
struct IfReq {
    name: [u8; 16],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Whether the network interface `name` exists in the calling thread's
/// network namespace.
fn interface_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: if_nametoindex reads the NUL-terminated string, live for the
    // call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

impl Tap {
    /// Opens the TAP `name`, creating it if it does not exist (which needs
    /// CAP_NET_ADMIN; a TAP the VMM creates goes away when it exits).
    pub fn open(name: &str) -> io::Result<Tap> {
        check_name(name).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        // In this thread's network namespace (sysfs may show another).
        let existed = interface_exists(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int to the pointer,
        // which points at a live local of that type.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNGETFEATURES, &mut features) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if features & (IFF_VNET_HDR as libc::c_uint) == 0 {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "this kernel's TUN driver has no IFF_VNET_HDR",
            ));
        }
        let mut req = IfReq {
            name: [0; 16],
            flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: TUNSETIFF reads (and may write back the name into) a
        // struct ifreq; `req` has its layout (16-byte name, then the flags
        // in a 24-byte union) and lives for the call.
        if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        let tap = Tap {
            file,
            name: name.to_string(),
            created: !existed,
        };
        tap.set_vnet_hdr_len(VNET_HDR_LEN as libc::c_int)?;
        Ok(tap)
    }

    fn set_vnet_hdr_len(&self, len: libc::c_int) -> io::Result<()> {
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, a live
        // local.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETVNETHDRSZ, &len) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this open created the interface.
    pub fn created(&self) -> bool {
        self.created
    }
}

impl NetBackend for Tap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn write_frame(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_gathered(&mut self, parts: &[GuestSlice<'_>]) -> io::Result<usize> {
        let iov = crate::IoVecs::new(parts);
        let count = libc::c_int::try_from(iov.iov.len())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the iovecs describe pieces of guest memory that vm-memory
        // checked lie inside mappings alive for this call (their guards
        // live in `iov`); writev only reads them. A TAP takes a frame whole
        // from one writev, or not at all.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.iov.as_ptr(), count) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        let flags = libc::c_ulong::from(flags);
        // SAFETY: TUNSETOFFLOAD takes the flags as the ioctl argument
        // itself, not through a pointer.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), TUNSETOFFLOAD, flags) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::net::offload;

    #[test]
    fn names_are_checked_before_opening() {
        assert!(check_name("tap0").is_ok());
        assert!(check_name("a23456789012345").is_ok());
        let long = check_name("a234567890123456").unwrap_err();
        assert!(long.contains("16 bytes"), "{long}");
        assert!(check_name("").is_err());
        assert!(check_name("..").is_err());
        for bad in ["tap 0", "tap/0", "tap:0", "tap\u{e9}"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn opening_a_bad_name_fails_without_touching_the_host() {
        let e = Tap::open("this-name-is-too-long").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    /// Runs `f` in a thread with a network namespace of its own (a TAP made
    /// there vanishes with it); where that is not allowed, the test is
    /// skipped (`prereq`: a failure under CI).
    fn in_new_netns(f: impl FnOnce() + Send + 'static) {
        let made = std::thread::spawn(move || {
            // SAFETY: unshare takes flags only; CLONE_NEWNET moves just this
            // thread into a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            f();
            Ok(())
        })
        .join()
        .unwrap();
        if let Err(e) = made {
            prereq::skip(&format!("a network namespace of its own (unshare: {e})"));
        }
    }

    fn set_up(name: &str) {
        // SAFETY: plain socket creation; the fd is closed below.
        let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
        assert!(sock >= 0);
        let mut req = IfReq {
            name: [0; 16],
            flags: 0,
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write a struct ifreq,
        // which `req` lays out, live for both calls.
        unsafe {
            assert_eq!(libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req), 0);
            req.flags |= libc::IFF_UP as libc::c_short;
            assert_eq!(libc::ioctl(sock, libc::SIOCSIFFLAGS, &mut req), 0);
            libc::close(sock);
        }
    }

    /// A raw packet socket on `name`, seeing its frames as the host does.
    fn packet_socket(name: &str) -> std::os::fd::OwnedFd {
        use std::os::fd::FromRawFd;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket creation; ownership goes to the OwnedFd.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(proto),
            )
        };
        assert!(fd >= 0, "{}", io::Error::last_os_error());
        // SAFETY: `fd` is a fresh socket nobody else owns.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(name).unwrap();
        // SAFETY: if_nametoindex reads the NUL-terminated name.
        let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert_ne!(index, 0);
        // SAFETY: an all-zero sockaddr_ll is valid; the fields set below
        // make it the address of `name`.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: bind reads `size_of::<sockaddr_ll>()` bytes of `addr`.
        let rc = unsafe {
            libc::bind(
                fd,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        owned
    }

    fn wait_read(mut read: impl FnMut(&mut [u8]) -> io::Result<usize>) -> Vec<u8> {
        let mut buf = vec![0u8; 2048];
        for _ in 0..200 {
            match read(&mut buf) {
                Ok(n) => return buf[..n].to_vec(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        panic!("no frame within a second");
    }

    /// The next frame of ours (eth_frame's EtherType, from `src`) that the
    /// packet socket `pkt` sees, skipping the host's own.
    fn host_sees(pkt: &std::os::fd::OwnedFd, src: u8) -> Vec<u8> {
        loop {
            let f = wait_read(|b| {
                // SAFETY: recv writes at most b.len() bytes into b.
                let n = unsafe { libc::recv(pkt.as_raw_fd(), b.as_mut_ptr().cast(), b.len(), 0) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            if f.get(12..14) == Some(&[0x88, 0xb5][..]) && f.get(11) == Some(&src) {
                return f;
            }
        }
    }

    /// An Ethernet frame from `src` to broadcast with an unused EtherType.
    fn eth_frame(src: u8, len: usize) -> Vec<u8> {
        let mut f = vec![0xffu8; 6];
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, src]);
        f.extend_from_slice(&[0x88, 0xb5]); // local experimental EtherType
        f.extend((0..len - 14).map(|i| i as u8));
        f
    }

    #[test]
    fn a_real_tap_carries_frames_with_the_virtio_header() {
        if !prereq::require([prereq::Need::tool("ip", "iproute2")]) {
            return;
        }
        in_new_netns(|| {
            let mut tap = Tap::open("vmmt0").expect("open a TAP in a fresh namespace");
            assert!(tap.created(), "the namespace had no vmmt0");
            assert_eq!(tap.name(), "vmmt0");
            // Non-blocking (the event loop drains it) and closed on exec.
            let fd = tap.as_raw_fd();
            // SAFETY: F_GETFL and F_GETFD only read the descriptor's flags.
            let (fl, fdfl) = unsafe {
                (
                    libc::fcntl(fd, libc::F_GETFL),
                    libc::fcntl(fd, libc::F_GETFD),
                )
            };
            assert_ne!(fl & libc::O_NONBLOCK, 0);
            assert_ne!(fdfl & libc::FD_CLOEXEC, 0);
            // What the TUN driver refuses is an error: offloads it does not
            // know, a runt frame, a name that is no TAP.
            assert!(tap.set_offload(0x8000_0000).is_err());
            {
                use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
                let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
                mem.write_slice(&[0u8; VNET_HDR_LEN + 5], GuestAddress(0))
                    .unwrap();
                let runt = mem.get_slice(GuestAddress(0), VNET_HDR_LEN + 5).unwrap();
                assert!(tap.write_gathered(&[runt]).is_err());
            }
            assert!(Tap::open("lo").is_err(), "lo is no TAP");
            // A TAP that exists already is opened, not created.
            let made = std::process::Command::new("ip")
                .args(["tuntap", "add", "dev", "vmmt1", "mode", "tap", "vnet_hdr"])
                .status()
                .unwrap();
            assert!(made.success(), "ip tuntap add: {made}");
            let existing = Tap::open("vmmt1").expect("open an existing TAP");
            assert!(!existing.created());
            tap.set_offload(offload::CSUM | offload::TSO4 | offload::TSO6)
                .expect("offloads");
            tap.set_offload(0).unwrap();
            set_up("vmmt0");
            let pkt = packet_socket("vmmt0");
            // Guest to host: header, then the frame the host sees.
            let out = eth_frame(1, 60);
            let mut with_hdr = vec![0u8; VNET_HDR_LEN];
            with_hdr.extend_from_slice(&out);
            assert_eq!(tap.write_frame(&with_hdr).unwrap(), with_hdr.len());
            let seen = host_sees(&pkt, 1);
            assert_eq!(seen, out);
            // The same from three pieces of guest memory, out of order
            // there: one writev, one frame.
            use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
            let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
            let out2 = eth_frame(3, 90);
            let mut whole = vec![0u8; VNET_HDR_LEN];
            whole.extend_from_slice(&out2);
            let cuts = [
                (0x3000u64, 0..5),
                (0x1000, 5..40),
                (0x2000, 40..whole.len()),
            ];
            for (addr, r) in &cuts {
                mem.write_slice(&whole[r.clone()], GuestAddress(*addr))
                    .unwrap();
            }
            let parts: Vec<_> = cuts
                .iter()
                .map(|(addr, r)| mem.get_slice(GuestAddress(*addr), r.len()).unwrap())
                .collect();
            assert_eq!(tap.write_gathered(&parts).unwrap(), whole.len());
            let seen = host_sees(&pkt, 3);
            assert_eq!(seen, out2);
            // Host to guest: the frame arrives behind a 12-byte header.
            let inbound = eth_frame(2, 100);
            // SAFETY: send reads inbound.len() bytes of inbound.
            let n =
                unsafe { libc::send(pkt.as_raw_fd(), inbound.as_ptr().cast(), inbound.len(), 0) };
            assert_eq!(n, inbound.len() as isize, "{}", io::Error::last_os_error());
            let hdr = VNET_HDR_LEN;
            // The host may send its own frames as the link comes up (IPv6
            // neighbour discovery): skip to ours, by its EtherType.
            let got = loop {
                let f = wait_read(|b| tap.read_frame(b));
                if f.len() >= hdr + 14 && f[hdr + 12..hdr + 14] == [0x88, 0xb5] {
                    break f;
                }
            };
            assert_eq!(got.len(), hdr + inbound.len());
            assert_eq!(&got[hdr..], &inbound[..]);
            assert_eq!(got[0] & 1, 0, "no NEEDS_CSUM on a plain frame");
        });
    }
}
