use super::*;
use crate::virtio::testing::{blk_header, blk_request, make_available, offer, write_chains, Buf};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::QueueT;
use vm_memory::{Address, GuestMemoryBackend};

const MEM_SIZE: usize = 0x10_0000;
const STATUS: u64 = 0x3000;
const HDR: u64 = 0x4000;
const DATA: u64 = 0x8000;
const DISK_SECTORS: u64 = 128; // 64 KiB

fn mem() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

fn disk() -> (File, Vec<u8>) {
    let path = std::env::temp_dir().join(format!(
        "vmm-blk-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    std::fs::remove_file(&path).unwrap();
    let content: Vec<u8> = (0..DISK_SECTORS * SECTOR_SIZE)
        .map(|i| (i / SECTOR_SIZE) as u8 ^ (i as u8))
        .collect();
    f.write_all(&content).unwrap();
    (f, content)
}

fn raw_file(dev: &Block) -> &File {
    let Disk::Raw(file) = &dev.disk else {
        panic!("a raw disk")
    };
    file
}

fn file_bytes(dev: &mut Block) -> Vec<u8> {
    let Disk::Raw(file) = &mut dev.disk else {
        panic!("a raw disk")
    };
    let mut v = Vec::new();
    file.seek(SeekFrom::Start(0)).unwrap();
    file.read_to_end(&mut v).unwrap();
    v
}

fn desc(addr: u64, len: u32, write: bool) -> Buf {
    (addr, len, write)
}

fn header(m: &GuestMemoryMmap, kind: u32, sector: u64) {
    m.write_slice(&blk_header(kind, sector), GuestAddress(HDR))
        .unwrap();
}

struct Run {
    status: u8,
    used_len: u32,
}

fn run(dev: &mut Block, m: &GuestMemoryMmap, descs: &[Buf]) -> Run {
    m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    let vq = MockSplitQueue::create(m, GuestAddress(0), 16);
    offer(&vq, &[descs], 0);
    let mut q: Queue = vq.create_queue().unwrap();
    assert!(dev.process_queue(m, 0, &mut q));
    assert_eq!(q.next_used(), 1, "the chain must be returned");
    let used_len = vq.used().ring().ref_at(0).unwrap().load().len();
    Run {
        status: m.read_obj(GuestAddress(STATUS)).unwrap(),
        used_len,
    }
}

fn block(ro: bool) -> (Block, Vec<u8>) {
    let (f, content) = disk();
    (
        Block::new(f, DISK_SECTORS * SECTOR_SIZE, ro, "disk-id-1"),
        content,
    )
}

#[test]
fn reads_land_in_guest_memory() {
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_IN, 3);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 4096, true),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 4097));
    let mut got = vec![0u8; 4096];
    m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, content[3 * 512..3 * 512 + 4096]);
    assert_eq!(dev.stats.bytes_read, 4096);
}

#[test]
fn scattered_reads_and_writes() {
    let (mut dev, mut content) = block(false);
    let m = mem();
    m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    m.write_slice(&[0xcd; 1024], GuestAddress(DATA + 0x1000))
        .unwrap();
    header(&m, VIRTIO_BLK_T_OUT, 10);
    let d = [
        desc(HDR, 16, false),
        desc(DATA, 512, false),
        desc(DATA + 0x1000, 1024, false),
        desc(STATUS, 1, true),
    ];
    let r = run(&mut dev, &m, &d);
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 1));
    content[10 * 512..11 * 512].fill(0xab);
    content[11 * 512..13 * 512].fill(0xcd);
    assert_eq!(file_bytes(&mut dev), content);
}

/// A disk that is an overlay over a raw file: sector-sized writes (parts
/// of clusters) land in the overlay, a scattered read across clusters of
/// both layers comes back whole and in order, the base is not written.
#[test]
fn an_overlay_disk_serves_reads_across_its_layers() {
    let (mut base, mut content) = disk();
    let d = std::env::temp_dir().join(format!("vmm-blk-overlay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    let base_path = d.join("base");
    std::fs::write(&base_path, &content).unwrap();
    let overlay = disk::Overlay::create(&d.join("top"), &base_path, Format::Raw).unwrap();
    let mut dev = Block::new(
        Disk::Overlay(Box::new(overlay)),
        DISK_SECTORS * SECTOR_SIZE,
        false,
        "cow",
    );
    let m = mem();
    // Sectors 9 and 17..19: inside clusters 1 and 2.
    for (sector, n, byte) in [(9u64, 1usize, 0x11u8), (17, 3, 0x22)] {
        m.write_slice(&vec![byte; n * 512], GuestAddress(DATA))
            .unwrap();
        header(&m, VIRTIO_BLK_T_OUT, sector);
        let dd = [
            desc(HDR, 16, false),
            desc(DATA, n as u32 * 512, false),
            desc(STATUS, 1, true),
        ];
        assert_eq!(run(&mut dev, &m, &dd).status, VIRTIO_BLK_S_OK);
        let at = sector as usize * 512;
        content[at..at + n * 512].fill(byte);
    }
    // Read sectors 4..28 (clusters 0 to 3: base, top, top, base) into
    // three segments whose edges fall inside clusters.
    m.write_slice(&[0u8; 24 * 512], GuestAddress(DATA)).unwrap();
    header(&m, VIRTIO_BLK_T_IN, 4);
    let dd = [
        desc(HDR, 16, false),
        desc(DATA + 0x2000, 3 * 512, true),
        desc(DATA, 13 * 512, true),
        desc(DATA + 0x4000, 8 * 512, true),
        desc(STATUS, 1, true),
    ];
    let r = run(&mut dev, &m, &dd);
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 24 * 512 + 1));
    let mut got = vec![0u8; 24 * 512];
    m.read_slice(&mut got[..3 * 512], GuestAddress(DATA + 0x2000))
        .unwrap();
    m.read_slice(&mut got[3 * 512..16 * 512], GuestAddress(DATA))
        .unwrap();
    m.read_slice(&mut got[16 * 512..], GuestAddress(DATA + 0x4000))
        .unwrap();
    assert_eq!(got, content[4 * 512..28 * 512]);
    // The base file is as it was.
    let mut before = Vec::new();
    base.seek(SeekFrom::Start(0)).unwrap();
    base.read_to_end(&mut before).unwrap();
    assert_eq!(std::fs::read(&base_path).unwrap(), before);
    let flush = [desc(HDR, 16, false), desc(STATUS, 1, true)];
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&mut dev, &m, &flush).status, VIRTIO_BLK_S_OK);
    drop(dev);
    let reopened = Disk::open(&d.join("top"), Format::Overlay, true).unwrap();
    let mut all = vec![0u8; content.len()];
    reopened.read_at(&mut all, 0).unwrap();
    assert_eq!(all, content);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A request of many scattered segments, as Linux sends with seg_max:
/// read and written in order, whole, and a short file ends it in IOERR.
#[test]
fn many_segments_go_to_the_file_in_order() {
    let (mut dev, mut content) = block(false);
    let m = mem();
    // Eight 512-byte pieces, each in its own page, in reverse page
    // order, so that file order differs from memory order.
    let pieces: Vec<u64> = (0..8).rev().map(|i| DATA + i * 0x1000).collect();
    for (k, &addr) in pieces.iter().enumerate() {
        m.write_slice(&[k as u8 + 1; 512], GuestAddress(addr))
            .unwrap();
    }
    let mut d = vec![desc(HDR, 16, false)];
    d.extend(pieces.iter().map(|&a| desc(a, 512, false)));
    d.push(desc(STATUS, 1, true));
    header(&m, VIRTIO_BLK_T_OUT, 4);
    let r = run(&mut dev, &m, &d);
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 1));
    for k in 0..8 {
        content[(4 + k) * 512..(5 + k) * 512].fill(k as u8 + 1);
    }
    assert_eq!(file_bytes(&mut dev), content);
    assert_eq!(dev.stats.bytes_written, 8 * 512);

    // Read back into other pages, the same scatter.
    for &addr in &pieces {
        m.write_slice(&[0; 512], GuestAddress(addr)).unwrap();
    }
    let mut d = vec![desc(HDR, 16, false)];
    d.extend(pieces.iter().map(|&a| desc(a, 512, true)));
    d.push(desc(STATUS, 1, true));
    header(&m, VIRTIO_BLK_T_IN, 4);
    let r = run(&mut dev, &m, &d);
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 8 * 512 + 1));
    for (k, &addr) in pieces.iter().enumerate() {
        let mut got = [0u8; 512];
        m.read_slice(&mut got, GuestAddress(addr)).unwrap();
        assert_eq!(got, [k as u8 + 1; 512], "piece {k}");
    }

    // The file shrunk under the VM to end in the middle of the
    // request: a short read, then the end of the file, is IOERR.
    raw_file(&dev).set_len(6 * 512).unwrap();
    header(&m, VIRTIO_BLK_T_IN, 4);
    let r = run(&mut dev, &m, &d);
    assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
}

#[test]
fn flush_and_get_id() {
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    let r = run(&mut dev, &m, &[desc(HDR, 16, false), desc(STATUS, 1, true)]);
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
    assert_eq!(dev.stats.flushes, 1);
    header(&m, VIRTIO_BLK_T_GET_ID, 0);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 20, true),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 21));
    let mut id = [0u8; 20];
    m.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(&id[..9], b"disk-id-1");
    assert_eq!(id[9..], [0; 11]);
    assert_eq!(file_bytes(&mut dev), content);
}

/// The helper side of `an_acknowledged_flush_survives_kill_9`: a write
/// and a flush through the device, "acked" (with its pid) once both are
/// answered OK, then it waits to be killed.
fn flush_helper(path: &str) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut dev = Block::new(f, DISK_SECTORS * SECTOR_SIZE, false, "kill");
    let m = mem();
    let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
    m.write_slice(&[0xab; 4096], GuestAddress(DATA)).unwrap();
    header(&m, VIRTIO_BLK_T_OUT, 8);
    assert_eq!(
        run(&mut dev, &m, &[hdr, desc(DATA, 4096, false), st]).status,
        VIRTIO_BLK_S_OK
    );
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&mut dev, &m, &[hdr, st]).status, VIRTIO_BLK_S_OK);
    println!("acked {}", std::process::id());
    std::io::stdout().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(120));
}

/// A write the guest saw acknowledged by a flush is in the host file
/// after the VMM process is killed with SIGKILL, and it got there by an
/// fdatasync of the disk file between the write and the acknowledgement:
/// the data surviving the kill alone would prove nothing, since a killed
/// process's writes stay in the host's page cache. The device runs in a
/// child process (this test binary again, in helper mode) under strace,
/// which records its system calls on the disk file.
#[test]
fn an_acknowledged_flush_survives_kill_9() {
    if let Ok(path) = std::env::var("VMM_FLUSH_HELPER") {
        flush_helper(&path);
        return;
    }
    if !prereq::require([prereq::Need::tool("strace", "strace")]) {
        return;
    }
    use std::io::BufRead;
    let path = std::env::temp_dir().join(format!("vmm-blk-kill-{}", std::process::id()));
    let trace = path.with_extension("strace");
    std::fs::write(&path, vec![0u8; (DISK_SECTORS * SECTOR_SIZE) as usize]).unwrap();
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "--seccomp-bpf", "-qq", "-y", "-o"])
        .arg(&trace)
        .arg("-e")
        .arg("trace=pwrite64,pwritev,pwritev2,write,fdatasync,fsync,sync_file_range")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "virtio::block::tests::an_acknowledged_flush_survives_kill_9",
        ])
        .args(["--nocapture", "--test-threads=1"])
        .env("VMM_FLUSH_HELPER", &path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let out = std::io::BufReader::new(strace.stdout.take().unwrap());
    let helper: Option<i32> = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split_once("acked ")?.1.trim().parse().ok());
    let Some(helper) = helper else {
        let _ = strace.kill();
        panic!("the helper never acknowledged");
    };
    // SAFETY: kill takes plain integers; the helper is strace's child,
    // alive until this SIGKILL (it sleeps 120 s after acking).
    assert_eq!(unsafe { libc::kill(helper, libc::SIGKILL) }, 0);
    let status = strace.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    // strace ends as its tracee did.
    assert!(
        status.signal() == Some(libc::SIGKILL) || status.code() == Some(128 + libc::SIGKILL),
        "{status:?}"
    );
    let data = std::fs::read(&path).unwrap();
    let log = std::fs::read_to_string(&trace).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::remove_file(&trace).unwrap();
    assert_eq!(&data[8 * 512..8 * 512 + 4096], &[0xab; 4096][..]);
    assert!(data[..8 * 512].iter().all(|&b| b == 0));
    // On the disk file: the write, then a successful fdatasync, and
    // nothing else; the acknowledgement only after the fdatasync.
    let calls = crate::virtio::testing::file_calls(&log, &path.display().to_string());
    let calls: Vec<(&str, &str)> = calls
        .iter()
        .map(|(c, r)| (c.as_str(), r.as_str()))
        .collect();
    assert_eq!(calls, [("pwrite64", "4096"), ("fdatasync", "0")], "{log}");
    let synced = log.find("fdatasync(").unwrap();
    assert!(
        log.find("\"acked ").is_some_and(|acked| acked > synced),
        "{log}"
    );
}

/// A disk on /dev/full: every write fails with ENOSPC, reads give zeros,
/// and it cannot be synced (a character device without fsync: fdatasync
/// fails with EINVAL).
fn full_disk() -> Block {
    let full = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/full")
        .unwrap();
    Block::new(full, DISK_SECTORS * SECTOR_SIZE, false, "full")
}

/// Host faults under a running disk: the guest gets IOERR, the device
/// keeps answering, nothing panics.
#[test]
fn a_full_host_disk_gives_the_guest_ioerr() {
    let mut dev = full_disk();
    let m = mem();
    let data = desc(DATA, 4096, false);
    let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
    header(&m, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        run(&mut dev, &m, &[hdr, data, st]).status,
        VIRTIO_BLK_S_IOERR
    );
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&mut dev, &m, &[hdr, st]).status, VIRTIO_BLK_S_IOERR);
    assert_eq!(dev.stats.flushes, 0);
    // Reads still work: the device goes on.
    header(&m, VIRTIO_BLK_T_IN, 0);
    m.write_slice(&[0x55; 4096], GuestAddress(DATA)).unwrap();
    let r = run(&mut dev, &m, &[hdr, desc(DATA, 4096, true), st]);
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
    let mut back = [0xffu8; 4096];
    m.read_slice(&mut back, GuestAddress(DATA)).unwrap();
    assert_eq!(back, [0u8; 4096]);
    assert_eq!(dev.stats.failed, 2);
}

#[test]
fn a_disk_file_removed_or_shrunk_under_the_vm() {
    let path = std::env::temp_dir().join(format!("vmm-blk-rm-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; (DISK_SECTORS * SECTOR_SIZE) as usize]).unwrap();
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut dev = Block::new(f, DISK_SECTORS * SECTOR_SIZE, false, "rm");
    let m = mem();
    let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
    // Removed: the open file lives on (Unix), the guest's I/O succeeds
    // on it, and no other file is touched.
    std::fs::remove_file(&path).unwrap();
    header(&m, VIRTIO_BLK_T_OUT, 8);
    m.write_slice(&[0xab; 512], GuestAddress(DATA)).unwrap();
    let r = run(&mut dev, &m, &[hdr, desc(DATA, 512, false), st]);
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
    assert!(!path.exists());
    // Shrunk to nothing by someone else: reads past the new end are
    // IOERR, not a crash, and writes still land.
    raw_file(&dev).set_len(0).unwrap();
    header(&m, VIRTIO_BLK_T_IN, 8);
    let r = run(&mut dev, &m, &[hdr, desc(DATA, 512, true), st]);
    assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
    header(&m, VIRTIO_BLK_T_OUT, 0);
    let r = run(&mut dev, &m, &[hdr, desc(DATA, 512, false), st]);
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
    assert_eq!(file_bytes(&mut dev).len(), 512);
}

/// Each of these gets IOERR (or UNSUPP) and leaves the file untouched.
#[test]
fn rejected_requests_do_no_host_io() {
    let m = mem();
    let hdr = desc(HDR, 16, false);
    let st = desc(STATUS, 1, true);
    let cases: Vec<(&str, u32, u64, Vec<Buf>, u8)> = vec![
        (
            "read past the end",
            VIRTIO_BLK_T_IN,
            DISK_SECTORS - 1,
            vec![hdr, desc(DATA, 1024, true), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "write past the end",
            VIRTIO_BLK_T_OUT,
            DISK_SECTORS,
            vec![hdr, desc(DATA, 512, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "sector overflow",
            VIRTIO_BLK_T_OUT,
            u64::MAX,
            vec![hdr, desc(DATA, 512, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "write not a multiple of 512",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, desc(DATA, 100, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "read not a multiple of 512",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, desc(DATA, 513, true), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "write with no data",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "write from a device-writable buffer",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, desc(DATA, 512, true), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "read into a read-only buffer",
            VIRTIO_BLK_T_IN,
            0,
            vec![hdr, desc(DATA, 512, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "header too short",
            VIRTIO_BLK_T_OUT,
            0,
            vec![desc(HDR, 8, false), desc(DATA, 512, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "header device-writable",
            VIRTIO_BLK_T_OUT,
            0,
            vec![desc(HDR, 16, true), desc(DATA, 512, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "data outside guest RAM",
            VIRTIO_BLK_T_OUT,
            0,
            vec![hdr, desc(MEM_SIZE as u64 - 256, 512, false), st],
            VIRTIO_BLK_S_IOERR,
        ),
        (
            "unknown request type",
            11,
            0,
            vec![hdr, desc(DATA, 512, false), st],
            VIRTIO_BLK_S_UNSUPP,
        ),
    ];
    for (what, kind, sector, descs, want) in cases {
        let (mut dev, content) = block(false);
        m.write_slice(&[0x5a; 1024], GuestAddress(DATA)).unwrap();
        header(&m, kind, sector);
        let r = run(&mut dev, &m, &descs);
        assert_eq!(r.status, want, "{what}");
        assert_eq!(r.used_len, 1, "{what}");
        assert_eq!(dev.stats.bytes_written + dev.stats.bytes_read, 0, "{what}");
        assert_eq!(file_bytes(&mut dev), content, "{what}: host file changed");
    }
}

#[test]
fn read_only_disk_refuses_writes_and_says_so() {
    let (mut dev, content) = block(true);
    assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_RO), 0);
    let m = mem();
    header(&m, VIRTIO_BLK_T_OUT, 0);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, false),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
    header(&m, VIRTIO_BLK_T_IN, 0);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, true),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
    assert_eq!(file_bytes(&mut dev), content);
}

#[test]
fn chains_without_a_status_byte_are_returned_unanswered() {
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_OUT, 0);
    // Last descriptor is not device-writable: nowhere to put a status.
    let r = run(
        &mut dev,
        &m,
        &[desc(HDR, 16, false), desc(DATA, 512, false)],
    );
    assert_eq!((r.status, r.used_len), (0xff, 0));
    // Status byte outside guest RAM.
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, false),
            desc(MEM_SIZE as u64, 1, true),
        ],
    );
    assert_eq!(r.used_len, 0);
    assert_eq!(dev.stats.malformed, 2);
    assert_eq!(file_bytes(&mut dev), content);
}

/// A write whose chain would be well formed but for its last descriptor
/// naming the first again (a loop): returned unanswered, counted as
/// malformed, no host I/O. The same chain without the loop is written.
#[test]
fn a_looping_chain_ends_without_host_io() {
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_OUT, 0);
    m.write_slice(&[0x5a; 512], GuestAddress(DATA)).unwrap();
    let chain = |last_flags: u32| {
        [
            RawDescriptor::from(SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(SplitDescriptor::new(DATA, 512, VRING_DESC_F_NEXT as u16, 2)),
            // The status byte; with NEXT it leads back to descriptor 0.
            RawDescriptor::from(SplitDescriptor::new(STATUS, 1, last_flags as u16, 0)),
        ]
    };
    for looped in [true, false] {
        m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
        let flags = VRING_DESC_F_WRITE | if looped { VRING_DESC_F_NEXT } else { 0 };
        let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
        vq.add_desc_chains(&chain(flags), 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        assert!(dev.process_queue(&m, 0, &mut q), "looped={looped}");
        // Returned either way, so that the driver gets its buffers back.
        assert_eq!(q.next_used(), 1, "looped={looped}");
        let used_len = vq.used().ring().ref_at(0).unwrap().load().len();
        let status: u8 = m.read_obj(GuestAddress(STATUS)).unwrap();
        if looped {
            assert_eq!((used_len, status), (0, 0xff));
            assert_eq!(dev.stats.malformed, 1);
            assert_eq!((dev.stats.ok, dev.stats.failed), (0, 0));
            assert_eq!(dev.stats.bytes_written, 0);
            assert_eq!(file_bytes(&mut dev), content);
        } else {
            assert_eq!((used_len, status), (1, VIRTIO_BLK_S_OK));
            assert_eq!(dev.stats.malformed, 1);
            assert_eq!(dev.stats.bytes_written, 512);
            assert_eq!(file_bytes(&mut dev)[..512], [0x5a; 512]);
        }
    }
}

#[test]
fn an_avail_index_far_ahead_does_not_spin_or_panic() {
    let (mut dev, content) = block(false);
    let m = mem();
    let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
    header(&m, VIRTIO_BLK_T_IN, 0);
    offer(
        &vq,
        &[&[
            desc(HDR, 16, false),
            desc(DATA, 512, true),
            desc(STATUS, 1, true),
        ]],
        0,
    );
    // The driver claims 1000 more entries than it wrote.
    vq.avail().idx().store(1001);
    let mut q: Queue = vq.create_queue().unwrap();
    dev.process_queue(&m, 0, &mut q);
    assert!(u64::from(q.next_used()) <= 16);
    assert_eq!(file_bytes(&mut dev), content);
    // A sane request afterwards on a fresh queue still works.
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, true),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
}

#[test]
fn config_space_holds_the_capacity() {
    let (dev, _) = block(false);
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS);
    let mut hi = [0xffu8; 4];
    dev.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    // size_max: none; seg_max: SEG_MAX, offered.
    let mut limits = [0xffu8; 8];
    dev.read_config(8, &mut limits);
    assert_eq!(limits[..4], [0; 4]);
    assert_eq!(u32::from_le_bytes(limits[4..].try_into().unwrap()), 254);
    assert_ne!(dev.features() & (1 << VIRTIO_BLK_F_SEG_MAX), 0);
    let mut beyond = [0xffu8; 4];
    dev.read_config(0x100, &mut beyond);
    assert_eq!(beyond, [0; 4]);
    dev.read_config(u64::MAX, &mut beyond);
    assert_eq!(beyond, [0; 4]);
}

#[test]
fn used_ring_wraps_with_the_index() {
    // Eight slots hold two three-descriptor chains per pass; four passes
    // starting just below the 16-bit wrap, as after a long uptime, go
    // through ring slots 5, 6, 7, 0... and index 65535 -> 0.
    const SIZE: u16 = 8;
    let (mut dev, content) = block(false);
    let m = mem();
    let vq = MockSplitQueue::create(&m, GuestAddress(0), SIZE);
    let mut q: Queue = vq.create_queue().unwrap();
    let start = u16::MAX - 2;
    m.write_obj(start, vq.avail_addr().unchecked_add(2))
        .unwrap();
    m.write_obj(start, vq.used_addr().unchecked_add(2)).unwrap();
    q.set_next_avail(start);
    q.set_next_used(start);
    for pass in 0..4u16 {
        for r in 0..2u16 {
            let n = pass * 2 + r;
            let hdr = HDR + u64::from(n) * 16;
            m.write_slice(
                &blk_header(VIRTIO_BLK_T_IN, u64::from(n)),
                GuestAddress(hdr),
            )
            .unwrap();
            let data = DATA + u64::from(n) * 512;
            let req = blk_request(VIRTIO_BLK_T_IN, hdr, data, 512, STATUS + u64::from(n));
            write_chains(&vq, &[&req], r * 3);
        }
        make_available(&m, &vq, SIZE, &[0, 3]);
        assert!(dev.process_queue(&m, 0, &mut q));
        let want = start.wrapping_add(2 * (pass + 1));
        assert_eq!(q.next_used(), want);
        let published: u16 = m.read_obj(vq.used_addr().unchecked_add(2)).unwrap();
        assert_eq!(published, want, "pass {pass}: used index in guest memory");
        for r in 0..2u16 {
            let idx = start.wrapping_add(pass * 2 + r);
            let elem = vq
                .used()
                .ring()
                .ref_at(usize::from(idx % SIZE))
                .unwrap()
                .load();
            assert_eq!(
                (elem.id(), elem.len()),
                (u32::from(r * 3), 513),
                "pass {pass}"
            );
        }
    }
    for n in 0..8u64 {
        let s: u8 = m.read_obj(GuestAddress(STATUS + n)).unwrap();
        assert_eq!(s, VIRTIO_BLK_S_OK);
        let mut got = vec![0u8; 512];
        m.read_slice(&mut got, GuestAddress(DATA + n * 512))
            .unwrap();
        let at = (n * SECTOR_SIZE) as usize;
        assert_eq!(got, content[at..at + 512], "request {n} read sector {n}");
    }
    // Nothing more was offered: a notification now returns nothing.
    assert!(!dev.process_queue(&m, 0, &mut q));
}

#[test]
fn indirect_descriptors_are_refused_without_io() {
    // VIRTIO_F_INDIRECT_DESC is not offered: a driver must not use them
    // (virtio 1.2, 2.7.5.3.1); the chain is returned unanswered.
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_IN, 2);
    // An indirect table of hdr, data, status at 0x6000.
    let table = 0x6000u64;
    let entries = [
        SplitDescriptor::new(HDR, 16, VRING_DESC_F_NEXT as u16, 1),
        SplitDescriptor::new(
            DATA,
            512,
            (VRING_DESC_F_NEXT | VRING_DESC_F_WRITE) as u16,
            2,
        ),
        SplitDescriptor::new(STATUS, 1, VRING_DESC_F_WRITE as u16, 0),
    ];
    for (i, d) in entries.iter().enumerate() {
        m.write_obj(*d, GuestAddress(table + 16 * i as u64))
            .unwrap();
    }
    let indirect = RawDescriptor::from(SplitDescriptor::new(
        table,
        48,
        virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT as u16,
        0,
    ));
    let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
    vq.add_desc_chains(&[indirect], 0).unwrap();
    let mut q: Queue = vq.create_queue().unwrap();
    m.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    m.write_slice(&[0x77; 512], GuestAddress(DATA)).unwrap();
    assert!(dev.process_queue(&m, 0, &mut q));
    assert_eq!(q.next_used(), 1, "the chain is returned");
    assert_eq!(vq.used().ring().ref_at(0).unwrap().load().len(), 0);
    let s: u8 = m.read_obj(GuestAddress(STATUS)).unwrap();
    assert_eq!(s, 0xff, "no status written");
    let mut got = vec![0u8; 512];
    m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, vec![0x77; 512], "nothing read into guest memory");
    assert_eq!((dev.stats.malformed, dev.stats.bytes_read), (1, 0));
    assert_eq!(file_bytes(&mut dev), content);
}

#[test]
fn with_event_idx_requests_go_through_add_used_and_set_the_avail_event() {
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_IN, 1);
    let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
    offer(
        &vq,
        &[&[
            desc(HDR, 16, false),
            desc(DATA, 512, true),
            desc(STATUS, 1, true),
        ]],
        0,
    );
    let mut q: Queue = vq.create_queue().unwrap();
    q.set_event_idx(true);
    // The driver wants an interrupt once the first request is used.
    m.write_obj(0u16, vq.avail_addr().unchecked_add(4 + 2 * 16))
        .unwrap();
    assert!(dev.process_queue(&m, 0, &mut q));
    assert_eq!(q.next_used(), 1);
    assert!(
        q.needs_notification(&m).unwrap(),
        "used_event 0 was crossed"
    );
    let avail_event: u16 = m
        .read_obj(vq.used_addr().unchecked_add(4 + 8 * 16))
        .unwrap();
    assert_eq!(avail_event, 1);
    let mut got = vec![0u8; 512];
    m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got, content[512..1024]);
}

/// What the device is to the transport: type 2, one queue of QUEUE_SIZE,
/// exactly VERSION_1, FLUSH, SEG_MAX and EVENT_IDX (and RO when read-only).
#[test]
fn the_device_offers_its_type_queue_and_features() {
    for ro in [false, true] {
        let (dev, _) = block(ro);
        assert_eq!(dev.device_type(), DEVICE_TYPE_BLOCK);
        assert_eq!(DEVICE_TYPE_BLOCK, 2);
        assert_eq!(dev.queue_max_sizes(), &[QUEUE_SIZE]);
        // No host descriptor for the event loop to watch (not stdin's 0).
        assert!(dev.host_fds().is_empty());
        let want = (1u64 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_BLK_F_FLUSH)
            | (1 << VIRTIO_BLK_F_SEG_MAX)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | if ro { 1 << VIRTIO_BLK_F_RO } else { 0 };
        assert_eq!(dev.features(), want, "ro={ro}");
        assert_eq!(
            (VIRTIO_F_VERSION_1, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_SEG_MAX),
            (32, 9, 2)
        );
        assert_eq!((VIRTIO_RING_F_EVENT_IDX, VIRTIO_BLK_F_RO), (29, 5));
    }
}

/// The device's id, counters and the line it logs follow its requests.
#[test]
fn counters_and_stats_follow_the_requests() {
    let (mut dev, _) = block(false);
    let m = mem();
    let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
    header(&m, VIRTIO_BLK_T_IN, 0);
    assert_eq!(
        run(&mut dev, &m, &[hdr, desc(DATA, 1024, true), st]).status,
        VIRTIO_BLK_S_OK
    );
    header(&m, VIRTIO_BLK_T_OUT, 2);
    assert_eq!(
        run(&mut dev, &m, &[hdr, desc(DATA, 512, false), st]).status,
        VIRTIO_BLK_S_OK
    );
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    assert_eq!(run(&mut dev, &m, &[hdr, st]).status, VIRTIO_BLK_S_OK);
    // Refused when parsed (past the disk's end): failed.
    header(&m, VIRTIO_BLK_T_IN, DISK_SECTORS);
    assert_eq!(
        run(&mut dev, &m, &[hdr, desc(DATA, 512, true), st]).status,
        VIRTIO_BLK_S_IOERR
    );
    // An unknown type: failed, UNSUPP.
    header(&m, 99, 0);
    assert_eq!(run(&mut dev, &m, &[hdr, st]).status, VIRTIO_BLK_S_UNSUPP);
    // Refused as it is parsed (a write whose data the device would write):
    // failed too.
    header(&m, VIRTIO_BLK_T_OUT, 0);
    assert_eq!(
        run(&mut dev, &m, &[hdr, desc(DATA, 512, true), st]).status,
        VIRTIO_BLK_S_IOERR
    );
    // No status byte: malformed, twice.
    for _ in 0..2 {
        run(&mut dev, &m, &[hdr, desc(DATA, 512, false)]);
    }
    assert_eq!(dev.id(), "disk-id-1");
    assert_eq!(
        dev.counters(),
        vec![
            ("requests_ok", 3),
            ("requests_failed", 3),
            ("requests_malformed", 2),
            ("bytes_read", 1024),
            ("bytes_written", 512),
            ("flushes", 1),
        ]
    );
    assert_eq!(
        dev.stats().as_deref(),
        Some("virtio-blk disk-id-1: 3 requests done, 3 failed, 2 malformed; 1024 bytes read, 512 written, 1 flushes")
    );
}

/// GET_ID into a buffer in two segments: the 20 bytes of the id across
/// both, and no more than 20 however large the buffer.
#[test]
fn get_id_fills_buffers_in_segments() {
    let (mut dev, _) = block(false);
    let m = mem();
    m.write_slice(&[0xee; 0x200], GuestAddress(DATA)).unwrap();
    header(&m, VIRTIO_BLK_T_GET_ID, 0);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 4, true),
            desc(DATA + 0x100, 30, true),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 21));
    let mut first = [0u8; 5];
    m.read_slice(&mut first, GuestAddress(DATA)).unwrap();
    assert_eq!(&first, b"disk\xee");
    let mut rest = [0u8; 30];
    m.read_slice(&mut rest, GuestAddress(DATA + 0x100)).unwrap();
    assert_eq!(&rest[..5], b"-id-1");
    assert_eq!(rest[5..16], [0; 11]);
    assert_eq!(rest[16..], [0xee; 14], "nothing past the 20 bytes");
}

/// An avail entry naming a descriptor past the table is counted as
/// malformed, and the device goes on with the next one.
#[test]
fn an_avail_entry_past_the_table_is_malformed() {
    let (mut dev, _) = block(false);
    let m = mem();
    let vq = MockSplitQueue::create(&m, GuestAddress(0), 16);
    let mut q: Queue = vq.create_queue().unwrap();
    header(&m, VIRTIO_BLK_T_FLUSH, 0);
    write_chains(&vq, &[&[desc(HDR, 16, false), desc(STATUS, 1, true)]], 0);
    make_available(&m, &vq, 16, &[40, 0]);
    assert!(dev.process_queue(&m, 0, &mut q));
    assert_eq!(dev.stats.malformed, 1);
    assert_eq!(dev.stats.flushes, 1);
    assert_eq!(q.next_used(), 1, "only the real chain is returned");
}

/// A data segment that crosses from one guest memory region into the
/// next: the request goes segment by segment, each at its own offset in
/// the file, and what is written reads back the same.
#[test]
fn a_segment_across_two_memory_regions_is_read_and_written_whole() {
    let (f, content) = disk();
    let mut dev = Block::new(f, DISK_SECTORS * SECTOR_SIZE, false, "regions");
    let m = GuestMemoryMmap::from_ranges(&[
        (GuestAddress(0), 0x8800),
        (GuestAddress(0x8800), MEM_SIZE - 0x8800),
    ])
    .unwrap();
    assert!(m.get_slice(GuestAddress(DATA), 0x1000).is_err());
    let written: Vec<u8> = (0..0x1200u32).map(|i| (i * 13 % 251) as u8).collect();
    m.write_slice(&written[..0x1000], GuestAddress(DATA))
        .unwrap();
    m.write_slice(&written[0x1000..], GuestAddress(0x20000))
        .unwrap();
    let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
    header(&m, VIRTIO_BLK_T_OUT, 4);
    let segs = |write: bool| {
        [
            hdr,
            desc(DATA, 0x1000, write),
            desc(0x20000, 0x200, write),
            st,
        ]
    };
    assert_eq!(run(&mut dev, &m, &segs(false)).status, VIRTIO_BLK_S_OK);
    let file = file_bytes(&mut dev);
    assert_eq!(&file[4 * 512..4 * 512 + 0x1200], &written[..]);
    assert_eq!(file[..4 * 512], content[..4 * 512]);
    assert_eq!(file[4 * 512 + 0x1200..], content[4 * 512 + 0x1200..]);
    m.write_slice(&[0u8; 0x1000], GuestAddress(DATA)).unwrap();
    m.write_slice(&[0u8; 0x200], GuestAddress(0x20000)).unwrap();
    header(&m, VIRTIO_BLK_T_IN, 4);
    let r = run(&mut dev, &m, &segs(true));
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 0x1201));
    let mut back = vec![0u8; 0x1200];
    m.read_slice(&mut back[..0x1000], GuestAddress(DATA))
        .unwrap();
    m.read_slice(&mut back[0x1000..], GuestAddress(0x20000))
        .unwrap();
    assert_eq!(back, written);
}

/// A write of several segments that the host refuses (ENOSPC on
/// /dev/full) is IOERR at once, not retried.
#[test]
fn a_refused_write_of_several_segments_is_ioerr() {
    let mut dev = full_disk();
    let m = mem();
    header(&m, VIRTIO_BLK_T_OUT, 0);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, false),
            desc(DATA + 0x1000, 512, false),
            desc(STATUS, 1, true),
        ],
    );
    assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
    assert_eq!((dev.stats.failed, dev.stats.bytes_written), (1, 0));
}

/// The status descriptor: at least one byte (a longer one is fine, the
/// status goes in its first byte); an empty one is no place for it.
/// An empty data segment is skipped, wherever it points.
#[test]
fn the_status_needs_a_byte_and_empty_segments_are_skipped() {
    let (mut dev, content) = block(false);
    let m = mem();
    header(&m, VIRTIO_BLK_T_IN, 0);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, true),
            desc(STATUS, 0, true),
        ],
    );
    assert_eq!((r.status, r.used_len), (0xff, 0));
    assert_eq!(dev.stats.malformed, 1);
    let r = run(
        &mut dev,
        &m,
        &[
            desc(HDR, 16, false),
            desc(DATA, 512, true),
            desc(MEM_SIZE as u64 * 4, 0, true),
            desc(STATUS, 4, true),
        ],
    );
    assert_eq!((r.status, r.used_len), (VIRTIO_BLK_S_OK, 513));
    let mut got = [0u8; 512];
    m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got[..], content[..512]);
}

/// The last sector is the disk's: a request that ends at the disk's end
/// is served, one a sector further is not.
#[test]
fn a_request_may_end_at_the_disks_end_and_no_further() {
    let (mut dev, content) = block(false);
    let m = mem();
    let (hdr, st) = (desc(HDR, 16, false), desc(STATUS, 1, true));
    header(&m, VIRTIO_BLK_T_IN, DISK_SECTORS - 2);
    let r = run(&mut dev, &m, &[hdr, desc(DATA, 1024, true), st]);
    assert_eq!(r.status, VIRTIO_BLK_S_OK);
    let mut got = vec![0u8; 1024];
    m.read_slice(&mut got, GuestAddress(DATA)).unwrap();
    assert_eq!(got[..], content[content.len() - 1024..]);
    header(&m, VIRTIO_BLK_T_IN, DISK_SECTORS - 1);
    let r = run(&mut dev, &m, &[hdr, desc(DATA, 1024, true), st]);
    assert_eq!(r.status, VIRTIO_BLK_S_IOERR);
}

#[test]
fn a_snapshot_restores_only_onto_the_same_disk() {
    use crate::virtio::DeviceSnapshot;
    let (dev, _) = block(false);
    let snap = dev.save();
    assert_eq!(
        snap,
        DeviceSnapshot::Block {
            capacity: DISK_SECTORS,
            read_only: false,
            id: "disk-id-1".into()
        }
    );
    let (mut same, _) = block(false);
    same.restore(&snap).unwrap();
    let (mut ro, _) = block(true);
    assert!(ro.restore(&snap).unwrap_err().contains("read-only now"));
    let (f, _) = disk();
    let mut smaller = Block::new(f, (DISK_SECTORS - 1) * SECTOR_SIZE, false, "disk-id-1");
    assert!(smaller.restore(&snap).unwrap_err().contains("bytes now"));
    // Another name in the restoring VM's configuration: the guest keeps
    // seeing the serial it saw.
    let (f, _) = disk();
    let mut renamed = Block::new(f, DISK_SECTORS * SECTOR_SIZE, false, "other");
    renamed.restore(&snap).unwrap();
    assert_eq!(renamed.id(), "disk-id-1");
    assert!(same.restore(&DeviceSnapshot::None).is_err());
}
