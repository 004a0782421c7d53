//! Writing a snapshot of a paused VM: the devices give back what they
//! hold, every state is read, guest RAM goes to the memory file (sparse)
//! and the rest to the state file (`file::write`: whole, then renamed
//! into place).

use std::path::{Path, PathBuf};
use std::time::Instant;

use devices::bus::lock;

use super::file::{self, StateFile};
use super::DevicesSnapshot;
use crate::config_file::ConfigFile;
use crate::handle::{HandleError, VmHandle, VmState};

/// What `VmHandle::snapshot` wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// The state file's size, bytes.
    pub state_bytes: u64,
    /// Guest RAM, bytes (the memory file's length).
    pub memory_bytes: u64,
    /// The memory file's bytes that are not holes (pages not zero).
    pub memory_written: u64,
    /// How long it took, ms.
    pub ms: f64,
}

/// Why a snapshot could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write '{}': {reason}", path.display())]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// Why.
    pub reason: String,
}

impl VmHandle {
    /// Writes the paused VM to `state_path` (its configuration, every
    /// vCPU's, the VM's and every device's state) and `mem_path` (guest
    /// RAM, zero pages as holes). The VM must be paused; it stays paused.
    /// Devices first give back the buffers they hold, so nothing is in
    /// flight in the snapshot.
    pub fn snapshot(&self, state_path: &Path, mem_path: &Path) -> Result<Written, HandleError> {
        let started = Instant::now();
        match self.state() {
            VmState::Paused => {}
            VmState::Ended => return Err(HandleError::Ended),
            _ => return Err(HandleError::State("not paused")),
        }
        let shared = &self.shared;
        for t in &shared.transports {
            lock(t).quiesce();
        }
        let devices = DevicesSnapshot {
            serial: lock(&shared.serial).save(),
            i8042: lock(&shared.i8042).save(),
            cmos: lock(&shared.legacy.cmos).save(),
            exit_device: lock(&shared.legacy.exit_device).save(),
            command: lock(&shared.legacy.command).save(),
            virtio: shared.transports.iter().map(|t| lock(t).save()).collect(),
        };
        let mut state = self.save_state()?;
        state.devices = devices;
        let write_err = |path: &Path| {
            let path = path.to_path_buf();
            move |e: std::io::Error| WriteError {
                path,
                reason: e.to_string(),
            }
        };
        let memory_written =
            super::memory::write_sparse(&shared.mem, mem_path).map_err(write_err(mem_path))?;
        let memory_bytes = vm_memory::GuestMemoryBackend::iter(&shared.mem)
            .map(vm_memory::GuestMemoryRegion::len)
            .sum();
        let state_bytes = file::write(
            state_path,
            &StateFile {
                config: ConfigFile::from_config(&shared.config),
                memory_bytes,
                state,
            },
        )
        .map_err(|e| WriteError {
            path: state_path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let written = Written {
            state_bytes,
            memory_bytes,
            memory_written,
            ms: started.elapsed().as_secs_f64() * 1e3,
        };
        log::info!(
            "snapshot: {} ({} bytes), {} ({} MiB of guest RAM, {} MiB not zero) in {:.1} ms",
            state_path.display(),
            written.state_bytes,
            mem_path.display(),
            memory_bytes >> 20,
            memory_written >> 20,
            written.ms
        );
        Ok(written)
    }
}
