//! The state file: a header (magic number, format version, the payload's
//! length), the payload (the VM's configuration and its KVM state,
//! serialized with serde as JSON), and a CRC-32 over everything before it.
//! A file of another version, a corrupt or truncated one, is refused with
//! what is wrong; reading never panics on any bytes.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Snapshot;
use crate::config_file::ConfigFile;

/// The file's first bytes.
pub const MAGIC: [u8; 8] = *b"VMMSNAP\0";
/// The format this build writes and reads.
pub const VERSION: u32 = 1;
/// Magic, version, payload length.
const HEADER: usize = 8 + 4 + 8;
/// The CRC-32 after the payload.
const TRAILER: usize = 4;
/// The largest payload read (a VM's state is tens of KiB per vCPU).
pub const MAX_PAYLOAD: u64 = 64 << 20;

/// What a state file holds.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateFile {
    /// The VM's configuration, in the config file's layout.
    pub config: ConfigFile,
    /// The size of its memory file, bytes.
    pub memory_bytes: u64,
    /// Its KVM state.
    pub state: Snapshot,
}

/// Why a state file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// It cannot be opened or read, or written.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// It is not a state file.
    #[error("not a state file of this VMM (its first bytes are not the magic number)")]
    Magic,
    /// Another format version.
    #[error("format version {found}, and this VMM reads version {VERSION}")]
    Version {
        /// The file's version.
        found: u32,
    },
    /// Shorter than its header says.
    #[error("truncated: {len} bytes, {want} expected")]
    Truncated {
        /// Its length.
        len: usize,
        /// The length its header gives.
        want: u64,
    },
    /// Longer than a state file may be.
    #[error("its payload of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLarge(u64),
    /// The checksum does not match: corrupt.
    #[error("corrupt: its checksum is {found:#010x}, its content's is {computed:#010x}")]
    Checksum {
        /// The checksum the file holds.
        found: u32,
        /// The content's.
        computed: u32,
    },
    /// The payload is not a VM's state.
    #[error("its content cannot be read: {0}")]
    Payload(String),
}

/// The bytes of `file`.
pub fn encode(file: &StateFile) -> Result<Vec<u8>, FileError> {
    let payload = serde_json::to_vec(file).map_err(|e| FileError::Payload(e.to_string()))?;
    let mut out = Vec::with_capacity(HEADER + payload.len() + TRAILER);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// The state file in `bytes`, checked.
pub fn decode(bytes: &[u8]) -> Result<StateFile, FileError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(FileError::Magic);
    }
    if bytes.len() < HEADER {
        return Err(FileError::Truncated {
            len: bytes.len(),
            want: (HEADER + TRAILER) as u64,
        });
    }
    let word = |at: usize, n: usize| -> u64 {
        bytes[at..at + n]
            .iter()
            .rev()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b))
    };
    let version = word(8, 4) as u32;
    if version != VERSION {
        return Err(FileError::Version { found: version });
    }
    let len = word(12, 8);
    if len > MAX_PAYLOAD {
        return Err(FileError::TooLarge(len));
    }
    let want = HEADER as u64 + len + TRAILER as u64;
    if (bytes.len() as u64) < want {
        return Err(FileError::Truncated {
            len: bytes.len(),
            want,
        });
    }
    let end = HEADER + len as usize;
    let found = word(end, 4) as u32;
    let computed = crc32fast::hash(&bytes[..end]);
    if found != computed {
        return Err(FileError::Checksum { found, computed });
    }
    serde_json::from_slice(&bytes[HEADER..end]).map_err(|e| FileError::Payload(e.to_string()))
}

/// Writes `file` to `path`: whole, under a temporary name beside it,
/// synced, then renamed over `path`, so that a reader never sees half a
/// file. Returns the bytes written.
pub fn write(path: &Path, file: &StateFile) -> Result<u64, FileError> {
    use std::io::Write;
    let bytes = encode(file)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    Ok(bytes.len() as u64)
}

/// Reads and checks the state file at `path`.
pub fn read(path: &Path) -> Result<StateFile, FileError> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_PAYLOAD + (HEADER + TRAILER) as u64 + 1)
        .read_to_end(&mut bytes)?;
    decode(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{VcpuState, VmState};

    /// A state with values in every part (what KVM would give, faked).
    fn sample() -> StateFile {
        let mut vcpu = fake_vcpu();
        vcpu.regs.rip = 0xffff_ffff_8100_1234;
        vcpu.regs.rax = 42;
        vcpu.sregs.cr3 = 0x9000;
        vcpu.xsave.region[7] = 0x1234_5678;
        vcpu.lapic.regs[0x20] = 9;
        vcpu.msrs = vec![kvm_bindings::kvm_msr_entry {
            index: 0x4b56_4d01,
            data: 0x1111,
            ..Default::default()
        }];
        vcpu.tsc_khz = Some(2_445_388);
        let mut vm = fake_vm();
        vm.clock.clock = 123_456_789;
        vm.pit.channels[0].count = 0xffff;
        vm.irqchips[2].chip_id = 2;
        StateFile {
            config: ConfigFile::default(),
            memory_bytes: 16 << 20,
            state: Snapshot {
                vcpus: vec![vcpu],
                vm,
                devices: fake_devices(),
            },
        }
    }

    /// Every device's state with values that are not defaults.
    fn fake_devices() -> super::super::DevicesSnapshot {
        use devices::virtio::mmio::{QueueSnapshot, TransportSnapshot};
        use devices::virtio::DeviceSnapshot;
        let queue = QueueSnapshot {
            max_size: 256,
            size: 128,
            ready: true,
            desc_table: 0x10_0000,
            avail_ring: 0x10_1000,
            used_ring: 0x10_2000,
            next_avail: 77,
            next_used: 75,
            event_idx: true,
            requested: (128, 0x10_0000, 0x10_1000, 0x10_2000),
        };
        let transport = |device| TransportSnapshot {
            device_type: 2,
            queue_sel: 1,
            device_features_sel: 1,
            driver_features_sel: 1,
            driver_features: 0x1_3000_0000,
            status: 15,
            config_generation: 3,
            interrupt_status: 1,
            queues: vec![queue.clone(), queue.clone()],
            device,
        };
        super::super::DevicesSnapshot {
            serial: devices::serial::SerialSnapshot {
                registers: [1, 2, 3, 4, 5, 6, 7, 8, 9],
                fifo: b"in the fifo".to_vec(),
                pending: b"waiting".to_vec(),
            },
            i8042: devices::i8042::I8042Snapshot {
                ctr: 0x47,
                outp: 3,
                status: 0x14,
                out: vec![0x1d, 0x38],
                pending: devices::i8042::Pending::Keyboard(0xf0),
                scan_set: 1,
            },
            cmos: devices::cmos::CmosSnapshot {
                index: 0x21,
                ram: (0..128).collect(),
            },
            exit_device: Some(42),
            command: devices::command::CommandSnapshot { ready: true },
            virtio: vec![
                transport(DeviceSnapshot::Block {
                    capacity: 2048,
                    read_only: true,
                    id: "root".into(),
                }),
                transport(DeviceSnapshot::Net {
                    mac: "06:00:ac:10:00:02".into(),
                    rx_frame: vec![7; 60],
                }),
            ],
        }
    }

    fn fake_vcpu() -> VcpuState {
        VcpuState {
            id: 0,
            cpuid: vec![kvm_bindings::kvm_cpuid_entry2 {
                function: 1,
                eax: 0x806f8,
                ..Default::default()
            }],
            mp_state: Default::default(),
            regs: Default::default(),
            sregs: Default::default(),
            xsave: Default::default(),
            xcrs: Default::default(),
            debugregs: Default::default(),
            lapic: Default::default(),
            tsc_khz: None,
            msrs: Vec::new(),
            vcpu_events: Default::default(),
        }
    }

    fn fake_vm() -> VmState {
        VmState {
            irqchips: vec![Default::default(); 3],
            pit: Default::default(),
            clock: Default::default(),
        }
    }

    #[test]
    fn a_state_file_reads_back_as_written() {
        let bytes = encode(&sample()).unwrap();
        let back = decode(&bytes).unwrap();
        let v = &back.state.vcpus[0];
        assert_eq!(v.regs.rip, 0xffff_ffff_8100_1234);
        assert_eq!(v.regs.rax, 42);
        assert_eq!(v.sregs.cr3, 0x9000);
        assert_eq!(v.xsave.region[7], 0x1234_5678);
        assert_eq!(v.lapic.regs[0x20], 9);
        assert_eq!(v.msrs[0].data, 0x1111);
        assert_eq!(v.tsc_khz, Some(2_445_388));
        assert_eq!(v.cpuid[0].eax, 0x806f8);
        assert_eq!(back.state.vm.clock.clock, 123_456_789);
        assert_eq!(back.state.vm.pit.channels[0].count, 0xffff);
        assert_eq!(back.state.vm.irqchips[2].chip_id, 2);
        assert_eq!(back.memory_bytes, 16 << 20);
        assert_eq!(back.state.devices, fake_devices());
        // And the same bytes again.
        assert_eq!(encode(&back).unwrap(), bytes);
    }

    #[test]
    fn another_version_a_corrupt_byte_and_other_files_are_refused() {
        let bytes = encode(&sample()).unwrap();
        let mut v2 = bytes.clone();
        v2[8] = 2;
        assert!(matches!(decode(&v2), Err(FileError::Version { found: 2 })));
        let mut flipped = bytes.clone();
        let mid = bytes.len() / 2;
        flipped[mid] ^= 0x40;
        assert!(matches!(decode(&flipped), Err(FileError::Checksum { .. })));
        assert!(matches!(decode(b"\x7fELF..."), Err(FileError::Magic)));
        let mut huge = bytes[..HEADER].to_vec();
        huge[12..20].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode(&huge), Err(FileError::TooLarge(_))));
        let msg = decode(&v2).unwrap_err().to_string();
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
    }

    #[test]
    fn every_truncation_is_refused_without_a_panic() {
        let bytes = encode(&sample()).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut} read");
        }
    }
}
