use super::header::MAX_PATH;
use super::*;
use std::os::unix::fs::MetadataExt;

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vmm-overlay-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A raw base of `len` bytes, every byte a function of its offset.
fn base(d: &Path, len: usize) -> (PathBuf, Vec<u8>) {
    let content: Vec<u8> = (0..len).map(|i| (i * 7 + i / 4096) as u8).collect();
    let path = d.join("base.raw");
    std::fs::write(&path, &content).unwrap();
    (path, content)
}

fn read_all(disk: &Disk) -> Vec<u8> {
    let mut v = vec![0u8; disk.len().unwrap() as usize];
    disk.read_at(&mut v, 0).unwrap();
    v
}

/// A small deterministic generator for the random writes.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

#[test]
fn a_new_overlay_reads_as_its_base_and_copies_nothing() {
    let d = dir("new");
    let (bpath, content) = base(&d, 1 << 20);
    let o = Overlay::create(&d.join("top.cow"), &bpath, Format::Raw).unwrap();
    let disk = Disk::Overlay(Box::new(o));
    assert_eq!(disk.len().unwrap(), 1 << 20);
    assert_eq!(read_all(&disk), content);
    // Allocated: the header and the bitmap's page, not the disk.
    let blocks = std::fs::metadata(d.join("top.cow")).unwrap().blocks() * 512;
    assert!(blocks <= 64 << 10, "{blocks} bytes allocated");
    // One run, in the base.
    let mut runs = Vec::new();
    disk.runs(4096, 8192, &mut runs);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].file_offset, 4096);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Random writes of any alignment through an overlay over an overlay,
/// checked against a mirror after each, then after reopening from the
/// files; the bases are never written.
#[test]
fn writes_of_any_alignment_read_back_through_a_chain() {
    let d = dir("chain");
    let len = 256 << 10;
    let (bpath, content) = base(&d, len);
    let base_before = std::fs::read(&bpath).unwrap();
    // mid: an overlay with a few clusters of its own, then a top over it.
    let mut mid = Disk::Overlay(Box::new(
        Overlay::create(&d.join("mid.cow"), Path::new("base.raw"), Format::Raw).unwrap(),
    ));
    let mut mirror = content.clone();
    mid.write_at(&[0x5a; 5000], 1000).unwrap();
    mirror[1000..6000].fill(0x5a);
    mid.flush().unwrap();
    drop(mid);
    let mid_before = std::fs::read(d.join("mid.cow")).unwrap();
    let mut top = Disk::Overlay(Box::new(
        Overlay::create(&d.join("top.cow"), Path::new("mid.cow"), Format::Overlay).unwrap(),
    ));
    assert_eq!(read_all(&top), mirror);
    let mut rng = Lcg(42);
    for i in 0..300 {
        let at = rng.next(len as u64);
        let n = 1 + rng.next((len as u64 - at).min(20_000));
        let byte = (i % 251) as u8;
        let buf = vec![byte; n as usize];
        top.write_at(&buf, at).unwrap();
        mirror[at as usize..(at + n) as usize].fill(byte);
        if i % 37 == 0 {
            assert_eq!(read_all(&top), mirror, "after write {i}");
            top.flush().unwrap();
        }
        // A read across whatever layers the range spans.
        let r_at = rng.next(len as u64 - 1);
        let r_n = 1 + rng.next((len as u64 - r_at).min(30_000));
        let mut got = vec![0u8; r_n as usize];
        top.read_at(&mut got, r_at).unwrap();
        assert_eq!(got, mirror[r_at as usize..(r_at + r_n) as usize]);
    }
    top.flush().unwrap();
    drop(top);
    let reopened = Disk::open(&d.join("top.cow"), Format::Overlay, true).unwrap();
    assert_eq!(read_all(&reopened), mirror);
    assert_eq!(std::fs::read(&bpath).unwrap(), base_before);
    assert_eq!(std::fs::read(d.join("mid.cow")).unwrap(), mid_before);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn the_bitmap_reaches_the_file_on_flush_only() {
    let d = dir("flush");
    let (bpath, _) = base(&d, 64 << 10);
    let path = d.join("top.cow");
    let mut disk = Disk::Overlay(Box::new(
        Overlay::create(&path, &bpath, Format::Raw).unwrap(),
    ));
    let on_file = || {
        let f = std::fs::read(&path).unwrap();
        f[HEADER_LEN..HEADER_LEN + 2].to_vec()
    };
    disk.write_at(&[1; 4096], 4096).unwrap();
    assert_eq!(on_file(), [0, 0], "not before a flush");
    disk.flush().unwrap();
    assert_eq!(on_file(), [0b10, 0]);
    // A 1-byte write at the end of cluster 9: copied up, then marked.
    disk.write_at(&[2], 10 * 4096 - 1).unwrap();
    if let Disk::Overlay(o) = &disk {
        assert_eq!(o.clusters_held(), 2);
    }
    drop(disk); // written when dropped
    assert_eq!(on_file(), [0b10, 0b10]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_changed_or_missing_base_is_refused_by_name() {
    let d = dir("base");
    let (bpath, _) = base(&d, 64 << 10);
    let path = d.join("top.cow");
    drop(Overlay::create(&path, &bpath, Format::Raw).unwrap());
    assert!(Disk::open(&path, Format::Overlay, false).is_ok());
    // Modified (its time moves on).
    let f = OpenOptions::new().write(true).open(&bpath).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    f.set_modified(later).unwrap();
    let e = Disk::open(&path, Format::Overlay, false).unwrap_err();
    assert!(e.to_string().contains("modified after"), "{e}");
    assert!(e.to_string().contains("base.raw"), "{e}");
    // Another size.
    f.set_len(32 << 10).unwrap();
    let e = Disk::open(&path, Format::Overlay, false).unwrap_err();
    assert!(e.to_string().contains("32768 bytes"), "{e}");
    // Gone.
    std::fs::remove_file(&bpath).unwrap();
    let e = Disk::open(&path, Format::Overlay, false).unwrap_err();
    assert!(e.to_string().contains("cannot be opened"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn an_overlay_over_itself_stops_at_the_chain_limit() {
    let d = dir("loop");
    let (bpath, _) = base(&d, 64 << 10);
    let path = d.join("top.cow");
    drop(Overlay::create(&path, &bpath, Format::Raw).unwrap());
    // Point the header at itself, as an overlay.
    let mut bytes = std::fs::read(&path).unwrap();
    let mut h = Header::decode(&bytes).unwrap();
    h.base = PathBuf::from("top.cow");
    h.base_format = Format::Overlay;
    bytes[..HEADER_LEN].copy_from_slice(&h.encode().unwrap());
    std::fs::write(&path, &bytes).unwrap();
    let e = Disk::open(&path, Format::Overlay, true).unwrap_err();
    assert!(e.to_string().contains("stacked"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn headers_are_checked_and_any_truncation_is_an_error() {
    let h = Header {
        cluster_bits: 12,
        size: 1 << 30,
        base: PathBuf::from("/var/lib/base.ext4"),
        base_format: Format::Raw,
        base_mtime_ns: 1_700_000_000_123_456_789,
    };
    let bytes = h.encode().unwrap();
    assert_eq!(Header::decode(&bytes).unwrap(), h);
    assert_eq!(h.bitmap_len(), (1 << 18) / 8);
    assert_eq!(h.data_offset(), 4096 + (1 << 15));
    for n in 0..HEADER_LEN {
        assert!(Header::decode(&bytes[..n]).is_err(), "{n} bytes");
    }
    let refused = |at: usize, value: &[u8], why: &str| {
        let mut b = bytes;
        b[at..at + value.len()].copy_from_slice(value);
        let e = Header::decode(&b).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    };
    refused(0, b"QFI\xfb", "magic");
    refused(8, &2u32.to_le_bytes(), "version 2");
    refused(100, b"x", "checksum");
    // Fields that pass the checksum but not their checks.
    let reencoded = |f: &dyn Fn(&mut [u8; HEADER_LEN]), why: &str| {
        let mut b = bytes;
        f(&mut b);
        let crc = crc32fast::hash(&b[..HEADER_LEN - 4]);
        b[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        let e = Header::decode(&b).unwrap_err().to_string();
        assert!(e.contains(why), "{e}");
    };
    reencoded(
        &|b| b[12..16].copy_from_slice(&30u32.to_le_bytes()),
        "cluster",
    );
    reencoded(
        &|b| b[16..24].copy_from_slice(&1000u64.to_le_bytes()),
        "size",
    );
    reencoded(
        &|b| b[32..36].copy_from_slice(&7u32.to_le_bytes()),
        "format 7",
    );
    reencoded(
        &|b| b[36..44].copy_from_slice(&4096u64.to_le_bytes()),
        "offset",
    );
    reencoded(
        &|b| b[48..52].copy_from_slice(&5000u32.to_le_bytes()),
        "path",
    );
    let long = Header {
        base: PathBuf::from("x".repeat(MAX_PATH + 1)),
        ..h
    };
    assert!(long.encode().is_err());
}

#[test]
fn a_truncated_overlay_file_and_a_read_only_one_are_refused() {
    let d = dir("trunc");
    let (bpath, content) = base(&d, 64 << 10);
    let path = d.join("top.cow");
    drop(Overlay::create(&path, &bpath, Format::Raw).unwrap());
    let mut ro = Disk::open(&path, Format::Overlay, true).unwrap();
    assert_eq!(read_all(&ro), content);
    assert!(ro.write_at(&[1], 0).is_err());
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(8192).unwrap();
    let e = Disk::open(&path, Format::Overlay, true).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
    f.set_len(100).unwrap();
    assert!(Disk::open(&path, Format::Overlay, true).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}
