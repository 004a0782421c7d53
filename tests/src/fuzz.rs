//! Fuzz harnesses: one function per target, each taking arbitrary bytes and
//! checking what must hold whatever they are. The cargo-fuzz targets in
//! `fuzz/` call them; `tests/tests/fuzz_corpus.rs` replays the corpus and
//! every input that once failed (`fuzz/regressions/`) through them in the
//! ordinary test run. A failed check panics, which libFuzzer reports as a
//! crash with the input that caused it.
//!
//! The virtio targets read their input as a small program of operations on
//! one device behind its virtio-mmio transport (see `Op`): register writes
//! and reads, patches of guest memory (the rings, descriptors and buffers a
//! driver would write), queue notifications and host events. `Program`
//! writes such inputs, for the seed corpus and the tests.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Cursor, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use devices::virtio::block::Block;
use devices::virtio::mmio::MmioTransport;
use devices::virtio::net::NetBackend;
use devices::virtio::net::{Net, MAX_FRAME_LEN, VNET_HDR_LEN};
use devices::virtio::testing::{self, blk_header};
use devices::virtio::{status, Interrupt, VirtioDevice};
use devices::BusDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

/// A fuzz harness: takes any bytes, panics where a check fails.
pub type Harness = fn(&[u8]);

/// The fuzz targets, by name: the names of `fuzz/fuzz_targets/*.rs` and of
/// the folders under `fuzz/corpus/` and `fuzz/regressions/`.
pub const TARGETS: &[(&str, Harness)] = &[
    ("virtio_blk", virtio_blk),
    ("virtio_net", virtio_net),
    ("virtio_mmio", virtio_mmio),
    ("config_json", config_json),
    ("kernel_image", kernel_image),
    ("image_layer", image_layer),
    ("api_request", api_request),
    ("snapshot_state", snapshot_state),
    ("overlay_header", overlay_header),
    ("oci_config", oci_config),
];

/// Guest RAM of the virtio targets: two adjacent regions, so buffers can
/// cross from one into the other (or run past the end of RAM).
pub const RAM: [(u64, usize); 2] = [(0, 0x1_0000), (0x1_0000, 0x8000)];
/// Where the targets that start from a working driver put their rings.
pub const DESC: u64 = 0x0;
/// The driver area (avail ring) of those targets.
pub const AVAIL: u64 = 0x1000;
/// The device area (used ring) of those targets.
pub const USED: u64 = 0x2000;
/// Size of the fuzzed disk: 8 sectors.
pub const DISK_BYTES: u64 = 4096;

/// Register offsets of the virtio-mmio transport (virtio 1.2, 4.2.2).
pub mod reg {
    pub use devices::virtio::mmio::{
        REG_DEVICE_FEATURES_SEL as DEVICE_FEATURES_SEL, REG_DRIVER_FEATURES as DRIVER_FEATURES,
        REG_DRIVER_FEATURES_SEL as DRIVER_FEATURES_SEL, REG_INTERRUPT_ACK as INTERRUPT_ACK,
        REG_QUEUE_DESC_LOW as QUEUE_DESC_LOW, REG_QUEUE_DEVICE_LOW as QUEUE_DEVICE_LOW,
        REG_QUEUE_DRIVER_LOW as QUEUE_DRIVER_LOW, REG_QUEUE_NOTIFY as QUEUE_NOTIFY,
        REG_QUEUE_NUM as QUEUE_NUM, REG_QUEUE_READY as QUEUE_READY, REG_QUEUE_SEL as QUEUE_SEL,
        REG_STATUS as STATUS,
    };
}

/// One operation of a virtio target's input. Encoded as an opcode byte
/// (taken modulo the number of operations) and its operands, little-endian;
/// an input that ends inside an operation ends the program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// 0: write `len` bytes (1, 2 or 4; other widths too, which the
    /// transport must ignore) of `value` at register `offset` (u16).
    Write { offset: u16, len: u8, value: u32 },
    /// 1: read `len` bytes at register `offset`.
    Read { offset: u16, len: u8 },
    /// 2: write `bytes` (u8 length, then the bytes) to guest memory at
    /// `addr` (u32); what falls outside RAM is dropped.
    Patch { addr: u32, bytes: Vec<u8> },
    /// 3: the driver notifies queue `queue` (u8).
    Notify { queue: u8 },
    /// 4: the host side has data: a frame of `len` (u16) bytes, filled
    /// with `fill`, arrives on the network backend (virtio-net), then the
    /// device's host event runs.
    HostEvent { len: u16, fill: u8 },
}

impl Op {
    fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Write { offset, len, value } => {
                out.push(0);
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(*len);
                out.extend_from_slice(&value.to_le_bytes());
            }
            Op::Read { offset, len } => {
                out.push(1);
                out.extend_from_slice(&offset.to_le_bytes());
                out.push(*len);
            }
            Op::Patch { addr, bytes } => {
                for (i, chunk) in bytes.chunks(255).enumerate() {
                    out.push(2);
                    out.extend_from_slice(&(addr + 255 * i as u32).to_le_bytes());
                    out.push(chunk.len() as u8);
                    out.extend_from_slice(chunk);
                }
            }
            Op::Notify { queue } => out.extend_from_slice(&[3, *queue]),
            Op::HostEvent { len, fill } => {
                out.push(4);
                out.extend_from_slice(&len.to_le_bytes());
                out.push(*fill);
            }
        }
    }
}

/// Reads operands from the input; None once it runs out.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn op(&mut self) -> Option<Op> {
        Some(match self.u8()? % 5 {
            0 => Op::Write {
                offset: self.u16()?,
                len: self.u8()?,
                value: self.u32()?,
            },
            1 => Op::Read {
                offset: self.u16()?,
                len: self.u8()?,
            },
            2 => {
                let addr = self.u32()?;
                let n = usize::from(self.u8()?);
                Op::Patch {
                    addr,
                    bytes: self.take(n)?.to_vec(),
                }
            }
            3 => Op::Notify { queue: self.u8()? },
            _ => Op::HostEvent {
                len: self.u16()?,
                fill: self.u8()?,
            },
        })
    }
}

/// Writes the input of a virtio target.
#[derive(Debug, Default, Clone)]
pub struct Program {
    /// The first byte: target-specific flags (see each target).
    pub flags: u8,
    /// The operations, in order.
    pub ops: Vec<Op>,
}

impl Program {
    /// A program with `flags` and no operations.
    pub fn new(flags: u8) -> Program {
        Program {
            flags,
            ops: Vec::new(),
        }
    }
    /// Appends `op`.
    pub fn op(mut self, op: Op) -> Program {
        self.ops.push(op);
        self
    }
    /// Appends a 4-byte register write.
    pub fn write(self, offset: u64, value: u32) -> Program {
        self.op(Op::Write {
            offset: offset as u16,
            len: 4,
            value,
        })
    }
    /// Appends a guest memory patch.
    pub fn patch(self, addr: u64, bytes: &[u8]) -> Program {
        self.op(Op::Patch {
            addr: addr as u32,
            bytes: bytes.to_vec(),
        })
    }
    /// Appends a 16-bit little-endian guest memory patch.
    pub fn patch16(self, addr: u64, v: u16) -> Program {
        self.patch(addr, &v.to_le_bytes())
    }
    /// Appends a split-ring descriptor `index` of the table at `DESC`.
    pub fn desc(self, index: u16, addr: u64, len: u32, flags: u16, next: u16) -> Program {
        self.desc_at(DESC, index, addr, len, flags, next)
    }
    /// Appends a split-ring descriptor `index` of the table at `table`.
    pub fn desc_at(
        self,
        table: u64,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) -> Program {
        let mut d = Vec::with_capacity(16);
        d.extend_from_slice(&addr.to_le_bytes());
        d.extend_from_slice(&len.to_le_bytes());
        d.extend_from_slice(&flags.to_le_bytes());
        d.extend_from_slice(&next.to_le_bytes());
        self.patch(table + 16 * u64::from(index), &d)
    }
    /// Makes chain `head` available in slot `slot` of the avail ring at
    /// `AVAIL` and sets the avail index to `idx`.
    pub fn avail(self, slot: u16, head: u16, idx: u16) -> Program {
        self.avail_at(AVAIL, slot, head, idx)
    }
    /// The same for the avail ring at `ring`.
    pub fn avail_at(self, ring: u64, slot: u16, head: u16, idx: u16) -> Program {
        self.patch16(ring + 4 + 2 * u64::from(slot), head)
            .patch16(ring + 2, idx)
    }
    /// The driver's whole set-up of queue 0 of a device with rings at
    /// `DESC`, `AVAIL` and `USED`: what the fuzzed device targets start
    /// from, with `queues` queues, each 0x4000 bytes after the previous
    /// one; `features_lo` are the accepted feature bits 0..31.
    pub fn driver_setup(mut self, queues: u16, size: u32, features_lo: u32) -> Program {
        self = self
            .write(reg::STATUS, status::ACKNOWLEDGE)
            .write(reg::STATUS, status::ACKNOWLEDGE | status::DRIVER)
            .write(reg::DRIVER_FEATURES_SEL, 0)
            .write(reg::DRIVER_FEATURES, features_lo)
            .write(reg::DRIVER_FEATURES_SEL, 1)
            .write(reg::DRIVER_FEATURES, 1) // VIRTIO_F_VERSION_1
            .write(
                reg::STATUS,
                status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
            );
        for q in 0..queues {
            // Each queue's rings 0x4000 bytes after the previous one's.
            let shift = 0x4000 * u32::from(q);
            self = self
                .write(reg::QUEUE_SEL, u32::from(q))
                .write(reg::QUEUE_NUM, size)
                .write(reg::QUEUE_DESC_LOW, DESC as u32 + shift)
                .write(reg::QUEUE_DRIVER_LOW, AVAIL as u32 + shift)
                .write(reg::QUEUE_DEVICE_LOW, USED as u32 + shift)
                .write(reg::QUEUE_READY, 1);
        }
        self.write(
            reg::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        )
    }
    /// The input bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.flags];
        for op in &self.ops {
            op.encode(&mut out);
        }
        out
    }
}

/// Splits a virtio target's input into its flags and operations.
pub fn decode(data: &[u8]) -> (u8, Vec<Op>) {
    let Some((&flags, rest)) = data.split_first() else {
        return (0, Vec::new());
    };
    let mut input = Input(rest);
    let mut ops = Vec::new();
    while let Some(op) = input.op() {
        ops.push(op);
    }
    (flags, ops)
}

fn guest_memory() -> GuestMemoryMmap {
    let ranges: Vec<_> = RAM.iter().map(|&(a, n)| (GuestAddress(a), n)).collect();
    GuestMemoryMmap::from_ranges(&ranges).expect("fuzz guest memory")
}

/// A file in memory (memfd) holding `bytes`.
pub fn memory_file(bytes: &[u8]) -> File {
    // SAFETY: the name is a NUL-terminated string literal; memfd_create
    // returns a new descriptor or -1 and touches no memory of ours.
    let fd = unsafe { libc::memfd_create(c"vmm-fuzz-disk".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", io::Error::last_os_error());
    // SAFETY: fd was just created and nothing else owns it.
    let mut file = unsafe { File::from_raw_fd(fd) };
    file.write_all(bytes).expect("write the fuzz disk");
    file
}

fn file_bytes(file: &File) -> Vec<u8> {
    let mut f = file.try_clone().expect("dup the fuzz disk");
    let mut out = Vec::new();
    f.seek(SeekFrom::Start(0)).expect("seek the fuzz disk");
    f.read_to_end(&mut out).expect("read the fuzz disk");
    out
}

/// Runs `ops` on `transport` over `mem`; `host` receives the frames of
/// host events. After each operation, `check` sees the transport.
fn run_ops(
    transport: &mut MmioTransport,
    mem: &GuestMemoryMmap,
    ops: &[Op],
    host: Option<&Mutex<VecDeque<Vec<u8>>>>,
    mut check: impl FnMut(&mut MmioTransport),
) {
    for op in ops {
        match op {
            Op::Write { offset, len, value } => {
                let bytes = value.to_le_bytes();
                let n = usize::from(*len).min(4);
                transport.write(u64::from(*offset), &bytes[..n]);
            }
            Op::Read { offset, len } => {
                let mut buf = [0u8; 8];
                let n = usize::from(*len).min(8);
                transport.read(u64::from(*offset), &mut buf[..n]);
            }
            Op::Patch { addr, bytes } => {
                for (i, b) in bytes.iter().enumerate() {
                    // Byte by byte: what falls outside RAM is dropped.
                    let _ = mem.write_obj(*b, GuestAddress(u64::from(*addr) + i as u64));
                }
            }
            Op::Notify { queue } => transport.write(reg::QUEUE_NOTIFY, &[*queue, 0, 0, 0]),
            Op::HostEvent { len, fill } => {
                if let Some(host) = host {
                    let len = usize::from(*len).min(MAX_FRAME_LEN + 16);
                    host.lock().unwrap().push_back(vec![*fill; len]);
                }
                transport.host_event(0);
            }
        }
        check(transport);
    }
}

/// Reads the 32-bit register at `offset`.
fn read_reg(transport: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    transport.read(offset, &mut b);
    u32::from_le_bytes(b)
}

/// The transport's rules that every register sequence must keep.
fn check_status(transport: &mut MmioTransport) {
    let st = read_reg(transport, reg::STATUS);
    if st & status::DRIVER_OK != 0 {
        assert_ne!(
            st & status::FEATURES_OK,
            0,
            "DRIVER_OK without FEATURES_OK: {st:#x}"
        );
    }
    if st & status::DEVICE_NEEDS_RESET != 0 {
        assert_ne!(st & status::DRIVER_OK, 0, "needs reset before DRIVER_OK");
    }
}

fn transport(device: Box<dyn VirtioDevice>, mem: &GuestMemoryMmap) -> MmioTransport {
    let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).expect("eventfd");
    MmioTransport::new(device, mem.clone(), Arc::new(Interrupt::new(evt)))
}

/// The disk of a block target: 8 sectors, each filled with its number.
fn disk_image() -> Vec<u8> {
    (0..DISK_BYTES).map(|i| (i / 512) as u8).collect()
}

/// Runs a block device on an 8-sector disk. Flags: bit 0 a read-only
/// disk; bit 1 start from a driver that set up queue 0 at `DESC`, `AVAIL`
/// and `USED` (always so for `virtio_blk`), of size 1 << (bits 4-6); bit 2
/// with VIRTIO_RING_F_EVENT_IDX. The disk file keeps its size, and a
/// read-only disk its bytes.
/// Returns the device's account of what it did.
pub fn run_block(data: &[u8], force_setup: bool) -> String {
    let (flags, ops) = decode(data);
    let read_only = flags & 1 != 0;
    let image = disk_image();
    let file = memory_file(&image);
    let probe = file.try_clone().expect("dup the fuzz disk");
    let mem = guest_memory();
    let mut t = transport(
        Box::new(Block::new(file, DISK_BYTES, read_only, "fuzz")),
        &mem,
    );
    if force_setup || flags & 2 != 0 {
        let size = 1u32 << ((flags >> 4) & 7);
        let event_idx = if flags & 4 != 0 { 1 << 29 } else { 0 };
        let setup = Program::new(0).driver_setup(1, size, event_idx);
        run_ops(&mut t, &mem, &setup.ops, None, |_| {});
    }
    run_ops(&mut t, &mem, &ops, None, check_status);
    let after = file_bytes(&probe);
    assert_eq!(after.len() as u64, DISK_BYTES, "the disk file changed size");
    if read_only {
        assert!(after == image, "a read-only disk was written");
    }
    t.device_stats().unwrap_or_default()
}

/// virtio-blk requests: a driver that set up the queue, then rings,
/// descriptors and buffers from the input.
pub fn virtio_blk(data: &[u8]) {
    run_block(data, true);
}

/// The network backend of the net target: frames from the input in, and
/// every frame out checked.
struct FakeTap {
    incoming: Arc<Mutex<VecDeque<Vec<u8>>>>,
    sent: Arc<AtomicUsize>,
}

impl AsRawFd for FakeTap {
    fn as_raw_fd(&self) -> RawFd {
        // Not watched by any event loop here.
        -1
    }
}

impl NetBackend for FakeTap {
    fn read_frame(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(frame) = self.incoming.lock().unwrap().pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // A TAP truncates a frame to the buffer it is read into.
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(n)
    }
    fn write_frame(&mut self, buf: &[u8]) -> io::Result<usize> {
        assert!(
            (VNET_HDR_LEN..=MAX_FRAME_LEN).contains(&buf.len()),
            "a {}-byte frame sent to the TAP",
            buf.len()
        );
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(buf.len())
    }
    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

/// virtio-net: a driver that set up both queues (RX rings at `DESC`,
/// `AVAIL` and `USED`, TX 0x4000 bytes further on), then transmissions
/// and receptions from the input. Flags: queue size 1 << (flags >> 4 & 7);
/// bit 0 with VIRTIO_NET_F_MRG_RXBUF; bit 2 with VIRTIO_RING_F_EVENT_IDX.
/// Every frame sent to the TAP has a header and fits a frame's length.
pub fn virtio_net(data: &[u8]) {
    run_net(data);
}

/// Runs the net target; returns the device's account of what it did.
pub fn run_net(data: &[u8]) -> String {
    let (flags, ops) = decode(data);
    let incoming = Arc::new(Mutex::new(VecDeque::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let tap = FakeTap {
        incoming: incoming.clone(),
        sent,
    };
    let mem = guest_memory();
    let mut t = transport(
        Box::new(Net::new(Box::new(tap), [2, 0, 0, 0, 0, 1].into()).expect("a timerfd")),
        &mem,
    );
    let size = 1u32 << ((flags >> 4) & 7);
    let mut features = 0;
    if flags & 1 != 0 {
        features |= 1 << 15; // VIRTIO_NET_F_MRG_RXBUF
    }
    if flags & 4 != 0 {
        features |= 1 << 29;
    }
    let setup = Program::new(0).driver_setup(2, size, features);
    run_ops(&mut t, &mem, &setup.ops, None, |_| {});
    run_ops(&mut t, &mem, &ops, Some(&incoming), check_status);
    t.device_stats().unwrap_or_default()
}

/// The virtio-mmio register interface: arbitrary register reads and writes
/// (with memory patches and notifications between them) on a block device
/// no driver set up; flag bit 0 makes its disk read-only. The status never
/// shows DRIVER_OK without FEATURES_OK, and the disk keeps its size.
pub fn virtio_mmio(data: &[u8]) {
    run_block(data, false);
}

/// Files that exist on any Linux host, for config files that name paths:
/// they pass the existence checks, so parsing goes on to the rest.
pub const EXISTING_FILE: &str = "/proc/self/exe";

/// JSON config files: parsed, resolved and validated as `vmm run --config`
/// does, never a panic; a file that resolves prints (as `vmm config
/// check` does) to a file that resolves to the same VM (its generated MACs
/// written out) and prints the same again.
pub fn config_json(data: &[u8]) {
    use vmm::config_file::{self, ConfigFile, Overrides};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.json");
    let Ok(file) = config_file::parse(path, text) else {
        return;
    };
    let Ok(config) = file.resolve(path, Overrides::default()) else {
        return;
    };
    // The checks that look at the files (a disk's size) go no further
    // than an error.
    let _ = config.validate();
    let printed = ConfigFile::from_config(&config).to_json();
    let again = config_file::parse(path, &printed)
        .and_then(|f| f.resolve(path, Overrides::default()))
        .unwrap_or_else(|e| panic!("printed config does not read back: {e}\n{printed}"));
    // The same VM: the same configuration once the generated MACs (which
    // the printed file writes out) are filled in, and the same print.
    let mut expected = config.clone();
    for (i, net) in expected.nets.iter_mut().enumerate() {
        net.mac = Some(net.mac_for(i));
    }
    assert_eq!(
        again, expected,
        "printed config reads back different\n{printed}"
    );
    assert_eq!(
        ConfigFile::from_config(&again).to_json(),
        printed,
        "printing is not stable"
    );
}

/// Guest memory for the kernel target (32 MiB, mapped once).
fn kernel_memory() -> &'static GuestMemoryMmap {
    static MEM: OnceLock<GuestMemoryMmap> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 32 << 20)]).expect("kernel memory")
    })
}

/// Kernel images (ELF and bzImage): probed, loaded and their boot data
/// written as the VMM does, through both boot protocols; never a panic.
/// What loads ends inside guest RAM.
pub fn kernel_image(data: &[u8]) {
    use arch::boot;
    let mem = kernel_memory();
    let mem_size = 32u64 << 20;
    for want_pvh in [false, true] {
        let Ok(loaded) = boot::load_kernel(mem, &mut Cursor::new(data), want_pvh) else {
            continue;
        };
        assert!(
            loaded.end <= mem_size,
            "kernel ends at {:#x}, past RAM",
            loaded.end
        );
        let initrd = boot::initrd_address(mem_size, loaded.end, 4096)
            .ok()
            .map(|a| (a, 4096));
        if let Some((addr, _)) = initrd {
            assert!(addr >= loaded.end, "initrd at {addr:#x} over the kernel");
        }
        match loaded.mode {
            arch::EntryMode::Linux64 => {
                let params = boot::boot_params_for(loaded.setup_header, mem_size, 10, initrd, None);
                boot::write_boot_params(mem, &params).expect("zero page");
            }
            arch::EntryMode::Pvh => {
                boot::write_pvh_info(mem, mem_size, initrd).expect("PVH start info");
            }
        }
    }
}

/// The base layer under the `image_layer` target's input: a file, a
/// directory, and links a hostile layer would use to get out (an absolute
/// one at `outside`, a climbing one) and one inside.
fn base_layer(outside: &Path) -> Vec<u8> {
    vmm_image::testing::Layer::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .dir("d", 0o755)
        .file("d/f", b"lower", 0o644)
        .symlink("abs", &outside.display().to_string())
        .symlink("up", "../../..")
        .symlink("rel", "d")
        .tar()
}

/// Container image layers: the input as a layer's tar stream, applied
/// over `base_layer` the way `vmm run --image` applies one: never a panic,
/// nothing written outside the root (a directory beside it stays empty and
/// nothing else appears there), and every entry recorded is on disk.
pub fn image_layer(data: &[u8]) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("vmm-fuzz-layer-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).expect("the fuzz directory");
    let mut tree = vmm_image::unpack::Tree::new(dir.join("root"), false).expect("the root");
    if let Err(e) = tree.apply_layer(&base_layer(&outside)[..]) {
        panic!("the base layer: {e:?}");
    }
    let _ = tree.apply_layer(data);
    let escaped: Vec<_> = std::fs::read_dir(&outside).expect("outside").collect();
    assert!(escaped.is_empty(), "written outside the root: {escaped:?}");
    let mut beside: Vec<String> = std::fs::read_dir(&dir)
        .expect("the fuzz directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    beside.sort();
    assert_eq!(beside, ["outside", "root"], "written beside the root");
    for rel in tree.entries().keys() {
        assert!(
            std::fs::symlink_metadata(tree.root().join(rel)).is_ok(),
            "{} is recorded but not on disk",
            rel.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Descriptor flags.
const NEXT: u16 = 1;
const WRITE: u16 = 2;
/// Where the seeds put request headers, data and status bytes.
const HEADER: u64 = 0x8000;
const DATA: u64 = 0x9000;
const STATUS_BYTE: u64 = 0xa000;

/// A three-descriptor block request (header, data, status) as chain
/// `head`..`head + 2`, its data `len` bytes at `data`.
fn blk_request(p: Program, head: u16, kind: u32, sector: u64, data: u64, len: u32) -> Program {
    let h = HEADER + 0x100 * u64::from(head);
    let req = testing::blk_request(kind, h, data, len, STATUS_BYTE + u64::from(head));
    let p = p.patch(h, &blk_header(kind, sector));
    testing::linked(&[&req], head)
        .iter()
        .zip(head..)
        .fold(p, |p, (d, i)| {
            p.desc(i, d.addr().0, d.len(), d.flags(), d.next())
        })
}

/// A 64-byte Ethernet frame behind a virtio-net header.
fn tx_frame() -> Vec<u8> {
    let mut f = vec![0u8; VNET_HDR_LEN];
    f.extend_from_slice(&[0xff; 6]); // broadcast
    f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    f.extend_from_slice(&[0x08, 0x06]); // ARP
    f.resize(VNET_HDR_LEN + 64, 0x11);
    f
}

/// A minimal bzImage: one setup sector, boot protocol 2.15, a loadable
/// 64-bit kernel of one page.
pub fn tiny_bzimage() -> Vec<u8> {
    let mut bz = vec![0u8; 0x400 + 0x1000];
    bz[0x1f1] = 1; // setup_sects
    bz[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
    bz[0x202..0x206].copy_from_slice(b"HdrS");
    bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    bz[0x211] = 1; // loadflags: LOADED_HIGH
    bz[0x214..0x218].copy_from_slice(&0x10_0000u32.to_le_bytes()); // code32_start
    bz[0x230..0x234].copy_from_slice(&0x20_0000u32.to_le_bytes()); // kernel_alignment
    bz[0x236..0x238].copy_from_slice(&3u16.to_le_bytes()); // xloadflags: 64-bit entry
    bz[0x260..0x264].copy_from_slice(&0x40_0000u32.to_le_bytes()); // init_size
    bz
}

/// The seed corpus: (target, name, input). `cargo run -p vmm-tests
/// --example fuzz_seeds` writes it to `fuzz/corpus/<target>/seed-<name>`,
/// and the tests check that what is there is what this gives.
pub fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let size8 = 3 << 4; // queue size 8
    let mut out = Vec::new();
    // virtio-blk: a driver that set up queue 0 of size 8.
    let read = blk_request(Program::new(size8 | 2), 0, 0, 1, DATA, 512)
        .avail(0, 0, 1)
        .op(Op::Notify { queue: 0 });
    out.push(("virtio_blk", "read", read.encode()));
    let mut event_idx = read.clone();
    event_idx.flags |= 4;
    out.push(("virtio_blk", "read-event-idx", event_idx.encode()));
    let write_flush = blk_request(Program::new(size8 | 2), 0, 1, 2, DATA, 1024)
        .patch(DATA, &[0x77; 64])
        .patch(HEADER + 0x300, &blk_header(4, 0))
        .desc(3, HEADER + 0x300, 16, NEXT, 4)
        .desc(4, STATUS_BYTE + 3, 1, WRITE, 0)
        .avail(0, 0, 1)
        .avail(1, 3, 2)
        .op(Op::Notify { queue: 0 });
    out.push(("virtio_blk", "write-flush", write_flush.encode()));
    let mut read_only = write_flush.clone();
    read_only.flags |= 1;
    out.push(("virtio_blk", "write-read-only", read_only.encode()));
    let get_id = blk_request(Program::new(size8 | 2), 0, 8, 0, DATA, 20)
        .avail(0, 0, 1)
        .op(Op::Notify { queue: 0 });
    out.push(("virtio_blk", "get-id", get_id.encode()));
    // A buffer that crosses from one RAM region into the next, and a
    // read past the end of the disk.
    let crossing = blk_request(Program::new(size8 | 2), 0, 0, 0, 0xff00, 1024)
        .avail(0, 0, 1)
        .op(Op::Notify { queue: 0 });
    out.push(("virtio_blk", "read-across-regions", crossing.encode()));
    let past_end = blk_request(Program::new(size8 | 2), 0, 0, 7, DATA, 1024)
        .avail(0, 0, 1)
        .op(Op::Notify { queue: 0 });
    out.push(("virtio_blk", "read-past-end", past_end.encode()));

    // virtio-net: RX rings at DESC/AVAIL/USED, TX rings 0x4000 further.
    let tx = Program::new(size8)
        .patch(0xc000, &tx_frame())
        .desc_at(DESC + 0x4000, 0, 0xc000, tx_frame().len() as u32, 0, 0)
        .avail_at(AVAIL + 0x4000, 0, 0, 1)
        .op(Op::Notify { queue: 1 });
    out.push(("virtio_net", "tx", tx.encode()));
    let tx_split = Program::new(size8)
        .patch(0xc000, &tx_frame())
        .desc_at(DESC + 0x4000, 0, 0xc000, VNET_HDR_LEN as u32, NEXT, 1)
        .desc_at(DESC + 0x4000, 1, 0xc000 + VNET_HDR_LEN as u64, 64, 0, 0)
        .avail_at(AVAIL + 0x4000, 0, 0, 1)
        .op(Op::Notify { queue: 1 });
    out.push(("virtio_net", "tx-split", tx_split.encode()));
    let rx = Program::new(size8)
        .desc(0, 0xd000, 1526, WRITE, 0)
        .avail(0, 0, 1)
        .op(Op::Notify { queue: 0 })
        .op(Op::HostEvent {
            len: 98,
            fill: 0xab,
        });
    out.push(("virtio_net", "rx", rx.encode()));
    let mut rx_merge = Program::new(size8 | 1 | 4);
    for i in 0..3u16 {
        rx_merge = rx_merge
            .desc(i, 0xd000 + 0x100 * u64::from(i), 256, WRITE, 0)
            .avail(i, i, i + 1);
    }
    let rx_merge = rx_merge.op(Op::Notify { queue: 0 }).op(Op::HostEvent {
        len: 600,
        fill: 0xcd,
    });
    out.push(("virtio_net", "rx-mergeable", rx_merge.encode()));

    // virtio-mmio: register sequences from a device no driver set up.
    let setup_read = blk_request(
        Program::new(size8).driver_setup(1, 8, 0),
        0,
        0,
        1,
        DATA,
        512,
    )
    .avail(0, 0, 1)
    .op(Op::Notify { queue: 0 })
    .write(reg::INTERRUPT_ACK, 1);
    out.push(("virtio_mmio", "setup-read", setup_read.encode()));
    let mut reset_again = setup_read.clone().write(reg::STATUS, 0);
    reset_again.ops.extend(setup_read.ops.clone());
    out.push(("virtio_mmio", "reset-and-again", reset_again.encode()));
    let out_of_order = Program::new(0)
        .write(reg::STATUS, 0xf)
        .write(reg::QUEUE_NUM, 3)
        .write(reg::QUEUE_READY, 1)
        .write(reg::DEVICE_FEATURES_SEL, 7)
        .op(Op::Read {
            offset: 0x100,
            len: 8,
        })
        .op(Op::Notify { queue: 9 })
        .op(Op::Write {
            offset: 0x70,
            len: 1,
            value: 0x8,
        });
    out.push(("virtio_mmio", "out-of-order", out_of_order.encode()));

    // Config files.
    let example = vmm::config_file::example()
        .to_json()
        .replace(
            &vmm::config::default_guest_dir()
                .to_string_lossy()
                .to_string(),
            "/proc/self",
        )
        .replace("/proc/self/vmlinux", EXISTING_FILE)
        .replace("/proc/self/initramfs.cpio", EXISTING_FILE);
    out.push(("config_json", "example", example.into_bytes()));
    let full = format!(
        r#"{{
  "boot-source": {{"kernel_image_path": "{f}", "initrd_path": "{f}", "boot_args": "console=ttyS0 quiet"}},
  "machine-config": {{"vcpu_count": 2, "mem_size_mib": 256, "smt": true, "track_dirty_pages": false, "huge_pages": "None"}},
  "drives": [
    {{"drive_id": "rootfs", "path_on_host": "{f}", "is_root_device": true, "is_read_only": true, "partuuid": "0eaa91a0-01", "cache_type": "Writeback", "io_engine": "Sync", "rate_limiter": null}},
    {{"drive_id": "data", "path_on_host": "{f}", "is_root_device": false, "is_read_only": false}}
  ],
  "network-interfaces": [
    {{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}},
    {{"iface_id": "eth1", "host_dev_name": "tap1"}}
  ],
  "balloon": null,
  "x-vmm": {{"serial": "stdio", "emulated_host": "auto", "boot_protocol": "linux", "seccomp": true}}
}}"#,
        f = EXISTING_FILE
    );
    out.push(("config_json", "full", full.into_bytes()));
    out.push((
        "config_json",
        "unknown-field",
        br#"{"boot-source": {"kernel_image_path": "/proc/self/exe"}, "machine-config": {"vcpus": 2}}"#.to_vec(),
    ));
    out.push((
        "config_json",
        "wrong-type",
        br#"{"boot-source": {"kernel_image_path": 7}, "drives": [{"drive_id": "a"}]}"#.to_vec(),
    ));

    // Kernel images.
    let mut code = crate::asm::print(b"x");
    code.extend(crate::asm::reset());
    out.push(("kernel_image", "elf", crate::tiny_elf(&code)));
    out.push(("kernel_image", "bzimage", tiny_bzimage()));
    // Image layers: the OCI changeset rules, and a hostile layer's ways out.
    use vmm_image::testing::Layer;
    let rules = Layer::new()
        .whiteout("etc/passwd")
        .opaque("d")
        .file("d/g", b"upper", 0o600)
        .file("rel/through-link", b"x", 0o644)
        .hardlink("d/h", "d/g")
        .char_device("null", 1, 3, 0o666)
        .fifo("pipe", 0o600)
        .tar();
    out.push(("image_layer", "rules", rules));
    let hostile = Layer::new()
        .file("abs/planted", b"x", 0o644)
        .file("up/escaped", b"x", 0o644)
        .file("../../escaped", b"x", 0o644)
        .hardlink("stolen", "../../../etc/shadow")
        .symlink("etc", "/etc")
        .file("etc/x", b"x", 0o644)
        .tar();
    out.push(("image_layer", "hostile", hostile));
    // The API: each kind of request, pipelined ones, and what cannot be
    // framed.
    let req = |m: &str, p: &str, b: &str| crate::api_client::request(m, p, Some(b));
    let get = |p: &str| crate::api_client::request("GET", p, None);
    let cat = |parts: &[Vec<u8>]| parts.concat();
    for (name, bytes) in [
        ("get-root", get("/")),
        (
            "get-version-close",
            b"GET /version HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
        ),
        (
            "put-machine-config",
            req(
                "PUT",
                "/machine-config",
                r#"{"vcpu_count": 2, "mem_size_mib": 256}"#,
            ),
        ),
        (
            "patch-machine-config",
            req("PATCH", "/machine-config", r#"{"vcpu_count": 1}"#),
        ),
        (
            "put-boot-source",
            req(
                "PUT",
                "/boot-source",
                r#"{"kernel_image_path": "/nonexistent/vmlinux", "boot_args": "quiet x"}"#,
            ),
        ),
        (
            "put-drive",
            req(
                "PUT",
                "/drives/rootfs",
                r#"{"drive_id": "rootfs", "path_on_host": "/dev/null", "is_root_device": true, "is_read_only": true}"#,
            ),
        ),
        (
            "put-net",
            req(
                "PUT",
                "/network-interfaces/eth0",
                r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#,
            ),
        ),
        (
            "actions",
            req("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#),
        ),
        ("patch-vm", req("PATCH", "/vm", r#"{"state": "Paused"}"#)),
        (
            "patch-drive",
            req(
                "PATCH",
                "/drives/rootfs",
                r#"{"drive_id": "rootfs", "path_on_host": "/tmp/x"}"#,
            ),
        ),
        (
            "logger-metrics",
            cat(&[
                req("PUT", "/metrics", r#"{"metrics_path": "/dev/null"}"#),
                req("PUT", "/logger", r#"{"level": "Info"}"#),
            ]),
        ),
        (
            "pipelined",
            cat(&[
                get("/"),
                get("/vm/config"),
                get("/machine-config"),
                req("PUT", "/balloon", "{}"),
            ]),
        ),
        (
            "unsupported",
            cat(&[req("PUT", "/snapshot/create", "{}"), get("/mmds")]),
        ),
        (
            "chunked",
            b"PUT /actions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "not-utf8",
            b"PUT /boot-source HTTP/1.1\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc".to_vec(),
        ),
        ("delete", b"DELETE /drives/rootfs HTTP/1.1\r\n\r\n".to_vec()),
        (
            "half",
            b"PUT /machine-config HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"vcpu".to_vec(),
        ),
    ] {
        out.push(("api_request", name, bytes));
    }
    for (name, bytes) in state_file_seeds() {
        out.push(("snapshot_state", name, bytes));
    }
    for (name, bytes) in overlay_header_seeds() {
        out.push(("overlay_header", name, bytes));
    }
    for (name, bytes) in oci_config_seeds() {
        out.push(("oci_config", name, bytes));
    }
    out
}

/// The bundle `oci_config` reads its config.json against: a root
/// directory and a file to bind (made once per process).
fn oci_bundle() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vmm-fuzz-oci-{}", std::process::id()));
        let _ = std::fs::create_dir_all(dir.join("rootfs"));
        let _ = std::fs::write(dir.join("hosts"), b"127.0.0.1 localhost\n");
        dir
    })
}

/// A bundle's config.json: `config.json` bytes parsed and planned as
/// `vmm-runtime create` does never panic; a plan has a program, an
/// absolute working directory and a VM size in range, and its run file
/// splits back into exactly the records it was made of (no value can
/// smuggle a NUL byte into init's records).
pub fn oci_config(data: &[u8]) {
    use vmm_runtime::bundle;
    let Ok(spec) = bundle::parse(data) else {
        return;
    };
    let Ok(plan) = bundle::plan(oci_bundle(), &spec) else {
        return;
    };
    assert!(!plan.args.is_empty() && !plan.args[0].is_empty());
    assert!(plan.cwd.starts_with('/'));
    assert!((1..=bundle::MAX_CPUS).contains(&plan.cpus));
    assert!(plan.memory_mib >= bundle::MIN_MEMORY_MIB);
    let Ok(run) = bundle::run_records(&plan) else {
        return;
    };
    let body = run
        .strip_prefix(vmm_image::run::RUN_MAGIC)
        .expect("the run file's magic");
    let records: Vec<&[u8]> = body.split(|b| *b == 0).collect();
    // Each record, then the empty one that ends them, then nothing.
    let expected = plan.args.len()
        + plan.env.len()
        + 3
        + plan.groups.len()
        + usize::from(plan.hostname.is_some())
        + usize::from(plan.terminal)
        + plan.rlimits.len()
        + 2 * plan.files.len()
        + plan.tmpfs.len()
        + usize::from(plan.read_only_root);
    assert_eq!(records.len(), expected + 2, "{records:?}");
    assert!(records[expected].is_empty() && records[expected + 1].is_empty());
    let args: Vec<&[u8]> = records
        .iter()
        .filter(|r| r.first() == Some(&b'A'))
        .map(|r| &r[1..])
        .collect();
    assert_eq!(args.len(), plan.args.len());
}

/// config.json seeds: podman's kind of bundle, runc's `spec`, a
/// volume, a terminal with resources, and broken ones.
pub fn oci_config_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let full = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "hostname": "box",
        "process": {
            "terminal": true,
            "args": ["sh", "-c", "exit 3"],
            "env": ["PATH=/bin", "TERM=xterm"],
            "cwd": "/work",
            "user": {"uid": 1000, "gid": 100, "additionalGids": [10]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
            {"destination": "/etc/hosts", "type": "bind", "source": "/etc/hostname",
             "options": ["rbind", "ro"]},
        ],
        "annotations": {"vmm.cpus": "2"},
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "network"}],
            "resources": {"memory": {"limit": 268435456}, "cpu": {"quota": 50000, "period": 100000}},
        },
    });
    let minimal = serde_json::json!({
        "ociVersion": "1.0.0",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
    });
    let mut volume = minimal.clone();
    volume["mounts"] = serde_json::json!([{"destination": "/data", "type": "bind",
        "source": "/tmp", "options": ["rbind"]}]);
    vec![
        ("full", full.to_string().into_bytes()),
        ("minimal", minimal.to_string().into_bytes()),
        ("volume", volume.to_string().into_bytes()),
        (
            "bad-uid",
            br#"{"ociVersion":"1.0.2","process":{"user":{"uid":"x"}}}"#.to_vec(),
        ),
        ("cut", minimal.to_string().as_bytes()[..40].to_vec()),
    ]
}

/// A copy-on-write overlay's header (a 1 GiB disk over a raw base).
pub fn overlay_header_sample() -> devices::virtio::block::disk::Header {
    devices::virtio::block::disk::Header {
        cluster_bits: 12,
        size: 1 << 30,
        base: "/var/cache/vmm/images/base.ext4".into(),
        base_format: devices::virtio::block::Format::Raw,
        base_mtime_ns: 1_764_000_000_123_456_789,
    }
}

/// The overlay header's seeds: valid, another version, a flipped bit, cut
/// short.
pub fn overlay_header_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let valid = overlay_header_sample().encode().unwrap().to_vec();
    let mut version = valid.clone();
    version[8] = 2;
    let mut flipped = valid.clone();
    flipped[20] ^= 0x10;
    let truncated = valid[..100].to_vec();
    vec![
        ("valid", valid),
        ("version-2", version),
        ("flipped", flipped),
        ("truncated", truncated),
    ]
}

/// The overlay header's parser (`devices::virtio::block::disk::Header`)
/// on any bytes: no panic; a header it accepts describes a disk whose
/// bitmap and data offset fit its size, and encodes to the same bytes.
pub fn overlay_header(data: &[u8]) {
    use devices::virtio::block::disk::{Header, HEADER_LEN};
    if let Ok(h) = Header::decode(data) {
        assert!(h.data_offset() >= HEADER_LEN as u64 + h.bitmap_len());
        assert_eq!(h.data_offset() % (1 << h.cluster_bits), 0);
        assert!(h.clusters() * (1 << h.cluster_bits) >= h.size);
        let again = h.encode().expect("an accepted header encodes");
        assert_eq!(&again[..], &data[..HEADER_LEN], "encoding is not stable");
        assert_eq!(Header::decode(&again).expect("accepted again"), h);
    }
}

/// A state file of one vCPU and every device, with values that are not
/// all defaults.
pub fn state_file_sample() -> vmm::snapshot::file::StateFile {
    use vmm::snapshot::{DevicesSnapshot, Snapshot, VcpuState, VmState};
    let regs = kvm_bindings::kvm_regs {
        rip: 0xffff_ffff_8100_1234,
        rax: 42,
        ..Default::default()
    };
    let vcpu = VcpuState {
        id: 0,
        cpuid: vec![kvm_bindings::kvm_cpuid_entry2 {
            function: 1,
            eax: 0x806f8,
            ..Default::default()
        }],
        mp_state: Default::default(),
        regs,
        sregs: Default::default(),
        xsave: Default::default(),
        xcrs: Default::default(),
        debugregs: Default::default(),
        lapic: Default::default(),
        tsc_khz: Some(2_000_000),
        msrs: vec![kvm_bindings::kvm_msr_entry {
            index: 0x10,
            data: 0x1111,
            ..Default::default()
        }],
        vcpu_events: Default::default(),
    };
    let mut devices = DevicesSnapshot::default();
    devices.serial.fifo = b"typed".to_vec();
    devices.cmos.ram = vec![0; 128];
    devices.exit_device = Some(3);
    vmm::snapshot::file::StateFile {
        config: vmm::config_file::ConfigFile::default(),
        memory_bytes: 16 << 20,
        state: Snapshot {
            vcpus: vec![vcpu],
            vm: VmState {
                irqchips: vec![Default::default(); 3],
                pit: Default::default(),
                clock: Default::default(),
            },
            devices,
        },
    }
}

/// The state file seeds: a valid file, one of another format version,
/// one with a flipped byte, one cut short.
pub fn state_file_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let valid = vmm::snapshot::file::encode(&state_file_sample()).unwrap();
    let mut version = valid.clone();
    version[8] = 2;
    let mut flipped = valid.clone();
    let mid = valid.len() / 2;
    flipped[mid] ^= 0x10;
    let truncated = valid[..valid.len() - 7].to_vec();
    vec![
        ("valid", valid),
        ("version-2", version),
        ("flipped", flipped),
        ("truncated", truncated),
    ]
}

/// The state file's parser (`vmm::snapshot::file::decode`) on any bytes:
/// no panic; a file it accepts encodes to bytes it accepts again, the
/// same ones each time.
pub fn snapshot_state(data: &[u8]) {
    use vmm::snapshot::file::{decode, encode};
    if let Ok(file) = decode(data) {
        let again = encode(&file).expect("an accepted file encodes");
        let back = decode(&again).expect("an encoded file is accepted");
        assert_eq!(
            encode(&back).expect("encodes"),
            again,
            "encoding is not stable"
        );
    }
}

/// The API's request parser, router and (pre-boot) controller on bytes
/// from a connection: every request in them is answered, one after
/// another as pipelined, until one is incomplete or cannot be framed;
/// every answer is well-formed HTTP of the kind Firecracker gives (200
/// with JSON, 204 without a body, 400 with a fault message). InstanceStart
/// is not carried out (it would boot whatever the input names).
pub fn api_request(data: &[u8]) {
    let _ = api_answers(data);
}

/// The statuses of the answers `api_request` gives to `data`, in order.
pub fn api_answers(data: &[u8]) -> Vec<u16> {
    use vmm_api::http::{self, Parsed, Response};
    use vmm_api::router::{self, ActionType, ApiRequest};
    let mut controller = vmm_api::Controller::new(
        "fuzz".into(),
        vmm::config_file::Overrides::default(),
        std::time::Instant::now(),
        Box::new(vmm_api::NoPolicy),
    );
    let check = |r: &Response| {
        let bytes = r.to_bytes();
        let (answer, used) = crate::api_client::parse_answer(&bytes)
            .unwrap_or_else(|| panic!("not an HTTP answer: {:?}", String::from_utf8_lossy(&bytes)));
        assert_eq!(used, bytes.len(), "bytes after the answer");
        assert_eq!(answer.status, r.status);
        match r.status {
            204 => assert!(answer.body.is_empty(), "a 204 with a body"),
            200 => {
                serde_json::from_str::<serde_json::Value>(&answer.body)
                    .unwrap_or_else(|e| panic!("200 without JSON ({e}): {}", answer.body));
            }
            400 | 500 => {
                let v: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
                assert!(v["fault_message"].is_string(), "{}", answer.body);
            }
            other => panic!("status {other}"),
        }
    };
    let mut rest = data;
    let mut statuses = Vec::new();
    for _ in 0..64 {
        match http::parse(rest, 4096) {
            Parsed::Incomplete => break,
            Parsed::Bad(r) => {
                assert!(r.close && r.status == 400, "{r:?}");
                check(&r);
                statuses.push(r.status);
                break;
            }
            Parsed::Request(req, used) => {
                assert!(used > 0 && used <= rest.len());
                let r = match router::route(&req) {
                    Ok(ApiRequest::Action(ActionType::InstanceStart)) => {
                        Response::fault("not started by the fuzzer")
                    }
                    // It would read whatever files the input names and
                    // build a VM of them.
                    Ok(ApiRequest::SnapshotLoad(_)) => Response::fault("not loaded by the fuzzer"),
                    Ok(request) => controller.handle_request(request),
                    Err(refused) => Response::fault(refused.0),
                };
                check(&r);
                statuses.push(r.status);
                rest = &rest[used..];
            }
        }
    }
    statuses
}
