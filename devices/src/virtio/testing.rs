//! The driver's side of a virtqueue, for tests, benchmarks and fuzzing:
//! descriptor chains laid out and linked, made available on a mocked split
//! queue (virtio-queue's `MockSplitQueue`), and what the device put on the
//! used ring read back. Built with the crate's `test-utils` feature (and
//! in its own unit tests).

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestMemoryMmap};

/// One buffer of a chain: guest address, length, and whether the device
/// writes it (VRING_DESC_F_WRITE).
pub type Buf = (u64, u32, bool);

/// The chains' descriptors for a descriptor table, laid out one after the
/// other from slot `first`, each linked to the next of its chain with
/// VRING_DESC_F_NEXT.
pub fn linked(chains: &[&[Buf]], first: u16) -> Vec<Descriptor> {
    let mut descs = Vec::new();
    let mut slot = first;
    for chain in chains {
        for (i, &(addr, len, write)) in chain.iter().enumerate() {
            let mut flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
            let mut next = 0;
            if i + 1 < chain.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                next = slot.wrapping_add(1);
            }
            descs.push(Descriptor::new(addr, len, flags, next));
            slot = slot.wrapping_add(1);
        }
    }
    descs
}

/// Writes the chains into `q`'s descriptor table from slot `first` and
/// makes each available.
pub fn offer(q: &MockSplitQueue<GuestMemoryMmap>, chains: &[&[Buf]], first: u16) {
    let raw: Vec<RawDescriptor> = linked(chains, first)
        .into_iter()
        .map(RawDescriptor::from)
        .collect();
    q.add_desc_chains(&raw, first)
        .expect("the chains fit the mocked queue");
}

/// Writes the chains into `q`'s descriptor table from slot `first`, without
/// making them available (see `make_available`).
pub fn write_chains(q: &MockSplitQueue<GuestMemoryMmap>, chains: &[&[Buf]], first: u16) {
    for (i, d) in linked(chains, first).into_iter().enumerate() {
        q.desc_table()
            .store(first.wrapping_add(i as u16), RawDescriptor::from(d))
            .expect("a descriptor-table slot");
    }
}

/// Makes the chains starting at `heads` available the way a driver does:
/// avail-ring slots taken modulo the queue's `size` (the mock's own helper
/// does not wrap), then the avail index moved on past them.
pub fn make_available(
    m: &GuestMemoryMmap,
    q: &MockSplitQueue<GuestMemoryMmap>,
    size: u16,
    heads: &[u16],
) {
    let idx_addr = q.avail_addr().unchecked_add(2);
    let mut idx: u16 = m.read_obj(idx_addr).expect("the avail index");
    for &h in heads {
        let slot = q.avail_addr().unchecked_add(4 + 2 * u64::from(idx % size));
        m.write_obj(h, slot).expect("an avail-ring slot");
        idx = idx.wrapping_add(1);
    }
    m.write_obj(idx, idx_addr).expect("the avail index");
}

/// Used-ring element `i` of `q`: the chain's head index and used length.
pub fn used(q: &MockSplitQueue<GuestMemoryMmap>, i: usize) -> (u32, u32) {
    let e = q.used().ring().ref_at(i).expect("a used-ring slot").load();
    (e.id(), e.len())
}

/// A virtio-blk request header (struct virtio_blk_req's first 16 bytes):
/// le32 type, le32 reserved, le64 sector.
pub fn blk_header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

/// The three buffers of a virtio-blk request with one data segment: the
/// header at `header`, `len` bytes of data at `data` (device-written for a
/// read, VIRTIO_BLK_T_IN, or a get-id), the status byte at `status`.
pub fn blk_request(kind: u32, header: u64, data: u64, len: u32, status: u64) -> [Buf; 3] {
    let device_writes = kind != super::block::VIRTIO_BLK_T_OUT;
    [
        (header, 16, false),
        (data, len, device_writes),
        (status, 1, true),
    ]
}

/// The calls an `strace -f -y` log records on the file at `path` (its
/// descriptor shown as `N<path>`), in order: (call, result), such as
/// ("fdatasync", "0"). How the tests see that a device's flush reaches the
/// disk: data still in the file after the VMM is killed proves nothing,
/// since a killed process's writes stay in the page cache.
pub fn file_calls(log: &str, path: &str) -> Vec<(String, String)> {
    let named = format!("<{path}>");
    log.lines()
        .filter(|l| l.contains(&named))
        .filter_map(|l| {
            // "PID  call(args...) = result"
            let call = l.split_whitespace().nth(1)?.split('(').next()?;
            let result = l.rsplit_once(" = ")?.1.trim();
            Some((call.to_string(), result.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_linked_within_and_not_across() {
        let d = linked(
            &[&[(0x10, 1, false), (0x20, 2, true)], &[(0x30, 3, true)]],
            4,
        );
        let got: Vec<(u64, u32, u16, u16)> = d
            .iter()
            .map(|d| (d.addr().0, d.len(), d.flags(), d.next()))
            .collect();
        let (n, w) = (VRING_DESC_F_NEXT as u16, VRING_DESC_F_WRITE as u16);
        assert_eq!(got, vec![(0x10, 1, n, 5), (0x20, 2, w, 0), (0x30, 3, w, 0)]);
    }

    #[test]
    fn a_block_header_is_little_endian_type_then_sector() {
        let h = blk_header(1, 0x0102_0304_0506_0708);
        assert_eq!(h, [1, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1]);
        let r = blk_request(1, 0x100, 0x200, 512, 0x300);
        assert_eq!(
            r,
            [(0x100, 16, false), (0x200, 512, false), (0x300, 1, true)]
        );
        assert!(
            blk_request(0, 0, 0, 512, 0)[1].2,
            "a read's data is written by the device"
        );
    }

    #[test]
    fn strace_lines_on_a_file_become_calls() {
        let log = "12  pwrite64(3</tmp/d.img>, \"\\253\"..., 4096, 4096) = 4096\n\
                   12  write(1<pipe:[5]>, \"acked\\n\", 6) = 6\n\
                   13  fdatasync(3</tmp/d.img>) = 0\n\
                   13  fdatasync(4</tmp/other>) = -1 EINVAL (Invalid argument)\n\
                   12  +++ killed by SIGKILL +++\n";
        let calls = file_calls(log, "/tmp/d.img");
        let calls: Vec<(&str, &str)> = calls
            .iter()
            .map(|(c, r)| (c.as_str(), r.as_str()))
            .collect();
        assert_eq!(calls, [("pwrite64", "4096"), ("fdatasync", "0")]);
        assert_eq!(
            file_calls(log, "/tmp/other"),
            [(
                "fdatasync".to_string(),
                "-1 EINVAL (Invalid argument)".to_string()
            )]
        );
    }
}
