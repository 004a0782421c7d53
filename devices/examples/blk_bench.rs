//! Benchmark of the virtio-blk request path on the host side: requests from
//! a mocked split queue (the guest driver's part, built outside the timed
//! region) handled by `Block::process_queue` against a file, next to plain
//! pread/pwrite of the same sizes at the same offsets on the same file.
//!
//! cargo run --release -p devices --features test-utils --example blk_bench -- [--mib N] [--rounds N] [--dir DIR] [--case '4K read']

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use devices::virtio::block::{Block, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT};
use devices::virtio::testing::{blk_header, blk_request, offer, Buf};
use devices::virtio::VirtioDevice;
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QUEUE: u16 = 256;
const BATCH: usize = 64; // requests per notification (3 descriptors each)
const HDRS: u64 = 0x10_0000;
const STATUS: u64 = 0x20_0000;
const DATA: u64 = 0x100_0000;

struct Args {
    mib: u64,
    rounds: usize,
    dir: std::path::PathBuf,
    case: Option<String>,
}

fn args() -> Args {
    let mut a = Args {
        mib: 256,
        rounds: 5,
        dir: std::env::temp_dir(),
        case: None,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for pair in argv.chunks(2) {
        let v = pair.get(1).cloned().unwrap_or_default();
        match pair[0].as_str() {
            "--mib" => a.mib = v.parse().expect("--mib N"),
            "--rounds" => a.rounds = v.parse().expect("--rounds N"),
            "--dir" => a.dir = v.into(),
            "--case" => a.case = Some(v),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Time for the device to serve `count` requests of `size` bytes, sequential
/// over the file, in batches of BATCH per notification.
fn device_run(
    dev: &mut Block,
    mem: &GuestMemoryMmap,
    kind: u32,
    size: u32,
    count: usize,
    file_sectors: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    let per = u64::from(size) / 512;
    let mut sector = 0u64;
    let mut done = 0;
    while done < count {
        let n = BATCH.min(count - done);
        let vq = MockSplitQueue::create(mem, GuestAddress(0), QUEUE);
        let mut reqs = Vec::with_capacity(n);
        for i in 0..n {
            if sector + per > file_sectors {
                sector = 0;
            }
            let hdr = HDRS + i as u64 * 16;
            mem.write_slice(&blk_header(kind, sector), GuestAddress(hdr))
                .unwrap();
            sector += per;
            let data = DATA + i as u64 * u64::from(size);
            reqs.push(blk_request(kind, hdr, data, size, STATUS + i as u64));
        }
        let chains: Vec<&[Buf]> = reqs.iter().map(|r| &r[..]).collect();
        offer(&vq, &chains, 0);
        let mut q: Queue = vq.create_queue().unwrap();
        let t = Instant::now();
        dev.process_queue(mem, 0, &mut q);
        total += t.elapsed();
        assert_eq!(usize::from(q.next_used()), n, "every request must complete");
        for i in 0..n {
            let s: u8 = mem.read_obj(GuestAddress(STATUS + i as u64)).unwrap();
            assert_eq!(s, 0, "request failed");
        }
        done += n;
    }
    total
}

/// Time for pread/pwrite of the same sizes at the same offsets, into and
/// out of BATCH buffers used in turn, as the device uses BATCH guest buffers.
fn plain_run(file: &File, write: bool, size: u32, count: usize, file_sectors: u64) -> Duration {
    let size = size as usize;
    let mut bufs = vec![0x5au8; size * BATCH];
    let per = size as u64 / 512;
    let mut sector = 0u64;
    let t = Instant::now();
    for i in 0..count {
        if sector + per > file_sectors {
            sector = 0;
        }
        let buf = &mut bufs[(i % BATCH) * size..(i % BATCH + 1) * size];
        if write {
            file.write_all_at(buf, sector * 512).unwrap();
        } else {
            file.read_exact_at(buf, sector * 512).unwrap();
        }
        sector += per;
    }
    t.elapsed()
}

fn main() {
    let a = args();
    let path = a.dir.join(format!("blk-bench-{}.img", std::process::id()));
    let bytes = a.mib << 20;
    {
        let f = File::create(&path).unwrap();
        let chunk = vec![0xa5u8; 1 << 20];
        for i in 0..a.mib {
            f.write_all_at(&chunk, i << 20).unwrap();
        }
    }
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .unwrap()
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    let mut dev = Block::new(open(), bytes, false, "bench");
    let plain = open();
    let sectors = bytes / 512;
    println!(
        "file {} ({} MiB, page cache warm), {} requests per notification",
        path.display(),
        a.mib,
        BATCH
    );
    println!(
        "{:<12} {:>12} {:>12} {:>12} {:>12} {:>7}",
        "case", "vmm MB/s", "vmm req/s", "pread MB/s", "pread req/s", "ratio"
    );
    for (label, kind, size) in [
        ("4K read", VIRTIO_BLK_T_IN, 4096u32),
        ("4K write", VIRTIO_BLK_T_OUT, 4096),
        ("128K read", VIRTIO_BLK_T_IN, 128 << 10),
        ("128K write", VIRTIO_BLK_T_OUT, 128 << 10),
    ] {
        if a.case.as_deref().is_some_and(|c| c != label) {
            continue;
        }
        let count = ((bytes / u64::from(size)) as usize).min(20_000);
        let (mut dv, mut pl) = (Vec::new(), Vec::new());
        for _ in 0..a.rounds {
            // Interleaved rounds; the median of each.
            dv.push(device_run(&mut dev, &mem, kind, size, count, sectors));
            pl.push(plain_run(
                &plain,
                kind == VIRTIO_BLK_T_OUT,
                size,
                count,
                sectors,
            ));
        }
        dv.sort();
        pl.sort();
        let (d, p) = (
            dv[dv.len() / 2].as_secs_f64(),
            pl[pl.len() / 2].as_secs_f64(),
        );
        let mb = |t: f64| count as f64 * f64::from(size) / t / 1e6;
        let rps = |t: f64| count as f64 / t;
        println!(
            "{label:<12} {:>12.0} {:>12.0} {:>12.0} {:>12.0} {:>7.2}",
            mb(d),
            rps(d),
            mb(p),
            rps(p),
            p / d
        );
    }
    std::fs::remove_file(&path).unwrap();
}
