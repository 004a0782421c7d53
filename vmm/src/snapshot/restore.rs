//! Restoring a VM from a snapshot's two files in a new process: the state
//! file read and checked (format, checksum, this host's CPU), the VM's
//! configuration taken from it with the restorer's changes (the serial
//! output, a network interface on another TAP, a disk at another path),
//! guest memory the memory file mapped private, then the VM built as a
//! boot builds it, with every state put back in place of the kernel's
//! loading. Whatever does not fit is refused before a vCPU runs, with
//! what is wrong, and nothing is left half started.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Instant;

use devices::bus::lock;
use kvm_bindings::{kvm_cpuid_entry2, KVM_MAX_CPUID_ENTRIES};

use super::file::{self, FileError, StateFile};
use super::memory::{self, MemoryFileError};
use crate::builder::Vmm;
use crate::config::{ConfigError, EmulatedHost, SerialOutput, VmConfig};
use crate::config_file::Overrides;
use crate::error::{Error, Result};
use crate::vcpu::Vcpu;
use crate::vm::{self, kvm_call, VmError};
use devices::boot_timer::Phase;

/// What the restorer chooses; the rest is the snapshot's.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The state file.
    pub state_path: PathBuf,
    /// The memory file.
    pub mem_path: PathBuf,
    /// Where the guest's console goes now.
    pub serial: SerialOutput,
    /// Seccomp filters on the new VMM's threads.
    pub seccomp: bool,
    /// The metrics document, if any.
    pub metrics: Option<PathBuf>,
    /// Network interfaces put on other TAPs: (iface_id, TAP name), as
    /// Firecracker's `network_overrides`.
    pub net_overrides: Vec<(String, String)>,
    /// Disks backed by other files: (drive_id, path) (a clone's own copy).
    pub disk_overrides: Vec<(String, PathBuf)>,
    /// The command for a template's init (`vmm run --from DIR -- COMMAND`).
    pub command: Option<Vec<OsString>>,
    /// For a template (its init waits for a command): each writable disk
    /// gets a fresh copy-on-write overlay over the template's, made in
    /// this directory and removed once open, so that clones of one
    /// template write apart and never to the template's disk (`vmm run
    /// --from`). A snapshot of a running VM goes on with its own disks.
    pub private_disks: Option<PathBuf>,
    /// The emulated-host adaptation (logged only: the guest has booted).
    pub emulated_host: Option<EmulatedHost>,
}

impl RestoreOptions {
    /// The snapshot at `state_path` and `mem_path`, everything else as the
    /// VMM's defaults have it.
    pub fn new(state_path: PathBuf, mem_path: PathBuf) -> Self {
        RestoreOptions {
            state_path,
            mem_path,
            serial: SerialOutput::Stdio,
            seccomp: true,
            metrics: None,
            net_overrides: Vec::new(),
            disk_overrides: Vec::new(),
            command: None,
            private_disks: None,
            emulated_host: None,
        }
    }
}

/// Puts each writable disk of `config` on a new overlay over its file, in
/// `dir`. Returns the overlays' paths (to remove once the disks are open).
pub(crate) fn private_overlays(config: &mut VmConfig, dir: &Path) -> Result<Vec<PathBuf>> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let mut made = Vec::new();
    for disk in config.disks.iter_mut().filter(|d| !d.read_only) {
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = dir.join(format!("vmm-disk-{}-{n}.cow", std::process::id()));
        let was = disk.path.clone();
        if let Err(e) = disk.put_on_overlay(&path) {
            for p in made.iter().chain([&path]) {
                let _ = std::fs::remove_file(p);
            }
            return Err(ConfigError::Disk {
                path: was,
                reason: format!("cannot make its overlay in {}: {e}", dir.display()),
            }
            .into());
        }
        made.push(path);
    }
    Ok(made)
}

/// Why a snapshot cannot be restored (besides its configuration, whose
/// errors name the field, and a missing file).
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The state file is not one this VMM reads.
    #[error("state file '{}': {source}", path.display())]
    StateFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: FileError,
    },
    /// The memory file cannot be used.
    #[error("memory file '{}': {source}", path.display())]
    MemoryFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: MemoryFileError,
    },
    /// The snapshot's vCPUs use CPU features this host's KVM lacks.
    #[error("the snapshot was made on a CPU with features this host lacks: {0}")]
    Cpu(String),
    /// An override names no interface or drive of the snapshot.
    #[error("the snapshot has no {what} '{id}' (it has: {have})")]
    NoSuchDevice {
        /// "network interface" or "drive".
        what: &'static str,
        /// The id given.
        id: String,
        /// The ids it has.
        have: String,
    },
    /// The snapshot does not describe the VM its configuration does.
    #[error("the snapshot is inconsistent: {0}")]
    Inconsistent(String),
    /// A device's state does not fit the device made here.
    #[error("{what}: {reason}")]
    Device {
        /// The device.
        what: String,
        /// Why.
        reason: String,
    },
    /// A command was given to a VM whose init does not wait for one.
    #[error(
        "a command was given, but the snapshot is not a template: its guest's init does not \
         wait for a command (make one with `vmm template create`)"
    )]
    NotTemplate,
    /// A template restored without a command.
    #[error(
        "the snapshot is a template: its guest's init waits for a command (vmm run --from DIR \
         -- COMMAND)"
    )]
    NoCommand,
    /// The command cannot be handed over.
    #[error("the command: {0}")]
    Command(String),
}

/// CPUID registers whose feature bits a snapshot's vCPUs must find on
/// this host: (leaf, subleaf, register, bits that are not features the
/// host provides: set by the VMM or by the guest's own state).
const FEATURE_WORDS: [(u32, u32, &str, u32); 9] = [
    // OSXSAVE follows CR4, TSC-deadline and HYPERVISOR are the VMM's.
    (1, 0, "ecx", (1 << 27) | (1 << 24) | (1 << 31)),
    // HTT is the VMM's (the topology).
    (1, 0, "edx", 1 << 28),
    (7, 0, "ebx", 0),
    // OSPKE follows CR4.
    (7, 0, "ecx", 1 << 4),
    (7, 0, "edx", 0),
    (0xd, 1, "eax", 0),
    (0x8000_0001, 0, "ecx", 0),
    (0x8000_0001, 0, "edx", 0),
    (0x8000_0007, 0, "edx", 0),
];

/// The feature words of this CPU's own CPUID instruction.
fn native_cpuid() -> Vec<kvm_cpuid_entry2> {
    FEATURE_WORDS
        .iter()
        .map(|&(function, index, _, _)| {
            let r = std::arch::x86_64::__cpuid_count(function, index);
            kvm_cpuid_entry2 {
                function,
                index,
                eax: r.eax,
                ebx: r.ebx,
                ecx: r.ecx,
                edx: r.edx,
                ..Default::default()
            }
        })
        .collect()
}

fn reg(e: &kvm_cpuid_entry2, name: &str) -> u32 {
    match name {
        "eax" => e.eax,
        "ebx" => e.ebx,
        "ecx" => e.ecx,
        _ => e.edx,
    }
}

/// Checks that every CPU feature the snapshot's vCPU had is one this
/// host's KVM offers (`supported`); names the leaf, register and bits
/// that are not.
pub fn check_cpuid(
    saved: &[kvm_cpuid_entry2],
    supported: &[kvm_cpuid_entry2],
) -> std::result::Result<(), String> {
    let find = |set: &[kvm_cpuid_entry2], leaf: u32, sub: u32| {
        set.iter()
            .find(|e| e.function == leaf && e.index == sub)
            .copied()
    };
    let mut missing = Vec::new();
    for (leaf, sub, name, not_features) in FEATURE_WORDS {
        let Some(had) = find(saved, leaf, sub) else {
            continue;
        };
        let have = find(supported, leaf, sub).map_or(0, |e| reg(&e, name));
        let lacking = reg(&had, name) & !not_features & !have;
        if lacking != 0 {
            missing.push(format!("leaf {leaf:#x}.{sub} {name} bits {lacking:#010x}"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join(", "))
    }
}

fn restore_err(e: RestoreError) -> Error {
    Error::Handle(crate::handle::HandleError::Restore(Box::new(e)))
}

/// The device among `items` whose id (`id_of`) an override names.
fn overridden<'a, T>(
    items: &'a mut [T],
    id: &str,
    what: &'static str,
    id_of: fn(&T) -> &String,
) -> Result<&'a mut T> {
    let have: Vec<&str> = items.iter().map(|i| id_of(i).as_str()).collect();
    let have = have.join(", ");
    items.iter_mut().find(|i| id_of(i) == id).ok_or_else(|| {
        restore_err(RestoreError::NoSuchDevice {
            what,
            id: id.to_string(),
            have,
        })
    })
}

/// The snapshot's configuration with the restorer's choices over it.
fn config_of(state: &StateFile, opts: &RestoreOptions) -> Result<VmConfig> {
    let mut file = state.config.clone();
    for (iface, tap) in &opts.net_overrides {
        let n = overridden(
            &mut file.network_interfaces,
            iface,
            "network interface",
            |n| &n.iface_id,
        )?;
        n.host_dev_name = tap.clone();
    }
    for (drive, path) in &opts.disk_overrides {
        let d = overridden(&mut file.drives, drive, "drive", |d| &d.drive_id)?;
        d.path_on_host = Some(path.clone());
    }
    // The kernel and initrd are not loaded again: they need not exist.
    let boot = file.boot_source.as_ref();
    let overrides = Overrides {
        kernel: boot.map(|b| b.kernel_image_path.clone()),
        initrd: boot.and_then(|b| b.initrd_path.clone()),
        serial: Some(opts.serial.clone()),
        seccomp: Some(opts.seccomp),
        emulated_host: opts.emulated_host,
        metrics: opts.metrics.clone(),
        ..Default::default()
    };
    let config = file.resolve(&opts.state_path, overrides)?;
    Ok(config)
}

impl Vmm {
    /// Builds the VM of a snapshot (see the module's description): ready
    /// to start, its vCPUs where they were, its devices as they were, a
    /// template's command handed to its init.
    pub fn restore(opts: &RestoreOptions, started: Instant) -> Result<Vmm> {
        let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
        // KVM's VM (with its irqchip and PIT) is made on a thread of its
        // own while the state file is read and checked: its creation is
        // the longest step of a restore on some hosts (about 23 ms on the
        // nested AMD-V host, where the state file takes 7). A snapshot
        // refused meanwhile drops it unused.
        let early = std::thread::Builder::new()
            .name("vmm-create-vm".into())
            .spawn(
                || -> Result<(kvm_ioctls::Kvm, kvm_ioctls::VmFd, kvm_bindings::CpuId)> {
                    let kvm = crate::host::open_kvm()?;
                    let vm = vm::create_vm(&kvm)?;
                    let mut supported = kvm
                        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                        .map_err(kvm_call("KVM_GET_SUPPORTED_CPUID"))
                        .map_err(VmError::from)?;
                    if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
                        arch::cpuid::offer_tsc_deadline(&mut supported);
                    }
                    Ok((kvm, vm, supported))
                },
            )
            .map_err(|e| {
                crate::handle::HandleError::Thread("vmm-create-vm".into(), e.to_string())
            })?;
        let state = read_state(&opts.state_path).map_err(restore_err)?;
        if !opts.mem_path.exists() {
            return Err(ConfigError::Missing {
                what: "memory file",
                path: opts.mem_path.clone(),
                reason: "No such file or directory".into(),
            }
            .into());
        }
        let read_ms = ms(started);
        let mut config = config_of(&state, opts)?;
        let snap = &state.state;
        if snap.vcpus.len() != config.vcpus as usize {
            return Err(restore_err(RestoreError::Inconsistent(format!(
                "{} vCPU states for a VM of {} vCPUs",
                snap.vcpus.len(),
                config.vcpus
            ))));
        }
        if state.memory_bytes != config.mem_mib << 20 {
            return Err(restore_err(RestoreError::Inconsistent(format!(
                "a memory file of {} bytes for a VM of {} MiB",
                state.memory_bytes, config.mem_mib
            ))));
        }
        match (&opts.command, snap.devices.command.ready) {
            (Some(_), false) => return Err(restore_err(RestoreError::NotTemplate)),
            (None, true) => return Err(restore_err(RestoreError::NoCommand)),
            _ => {}
        }
        // A template's clones write apart; a snapshot of a running VM goes
        // on with its own disks.
        let checked = match &opts.private_disks {
            Some(dir) if snap.devices.command.ready => {
                let made = private_overlays(&mut config, dir)?;
                let checked = Self::check_host(&config, started);
                for p in made {
                    let _ = std::fs::remove_file(p);
                }
                checked?
            }
            _ => Self::check_host(&config, started)?,
        };
        let (kvm, vmfd, supported) = early
            .join()
            .unwrap_or(Err(VmError::CreationPanicked.into()))?;
        log::debug!("timing: VM, irqchip and PIT ready at {:.3} ms", ms(started));
        let max = crate::host::max_vcpus(&kvm);
        if config.vcpus > max {
            return Err(Error::config(
                "vcpus",
                config.vcpus,
                format!("KVM allows at most {max} vCPUs per VM"),
            ));
        }
        // An emulated KVM (kvm_pvm) cannot mask CPUID: its vCPUs report and
        // see the host CPU's own, which is what the snapshot must find.
        let offered = if config.emulated_host.applies() {
            native_cpuid()
        } else {
            supported.as_slice().to_vec()
        };
        for v in &snap.vcpus {
            check_cpuid(&v.cpuid, &offered)
                .map_err(|e| restore_err(RestoreError::Cpu(format!("vCPU {}: {e}", v.id))))?;
        }
        let mapped = Instant::now();
        let mem = memory::map_private(&opts.mem_path, &vm::ram_ranges(config.mem_mib)).map_err(
            |source| {
                restore_err(RestoreError::MemoryFile {
                    path: opts.mem_path.clone(),
                    source,
                })
            },
        )?;
        vm::register_memory(&vmfd, &mem)?;
        let map_ms = ms(mapped);
        let mapped_at = ms(started);
        let vm_at = Instant::now();
        super::vm::restore(&vmfd, &snap.vm).map_err(crate::handle::HandleError::from)?;
        let mut vmm = Self::devices(&config, kvm, vmfd, mem, checked)?;
        vmm.restore_devices(&snap.devices)?;
        let devices_ms = ms(vm_at);
        let devices_at = ms(started);
        let vcpus_at = Instant::now();
        let (pio, mmio) = vmm.buses.clone();
        let tcg = crate::host::cpu_is_qemu_tcg();
        if tcg {
            log::info!(
                "QEMU TCG host: the task register goes back \"available\", as TCG's SVM keeps it"
            );
        }
        for saved in &snap.vcpus {
            let fd = vmm
                .vm
                .create_vcpu(u64::from(saved.id))
                .map_err(kvm_call("KVM_CREATE_VCPU"))
                .map_err(VmError::from)?;
            super::vcpu::restore(&fd, saved, tcg).map_err(crate::handle::HandleError::from)?;
            // The guest's clock stood still while it was saved: its
            // watchdogs are told so (see `Control::park`).
            let _ = fd.kvmclock_ctrl();
            vmm.vcpus.push(Vcpu {
                id: saved.id,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: vmm.exit.clone(),
                control: vmm.control.clone(),
            });
        }
        let vcpus_ms = ms(vcpus_at);
        if let Some(command) = &opts.command {
            let args: Vec<Vec<u8>> = command
                .iter()
                .map(|a| std::os::unix::ffi::OsStrExt::as_bytes(a.as_os_str()).to_vec())
                .collect();
            lock(&vmm.legacy.command)
                .set_command(&args)
                .map_err(|e| restore_err(RestoreError::Command(e)))?;
        }
        vmm.exit.timeline.mark(Phase::VmBuilt);
        if let Some(m) = &mut vmm.metrics {
            m.add_phase("state_read", read_ms);
            m.add_phase("memory_mapped", mapped_at);
            m.add_phase("devices_restored", devices_at);
            let transports: Vec<_> = vmm.virtio.iter().map(|s| s.transport.clone()).collect();
            m.write(&transports, None);
        }
        log::info!(
            "restored {} ({} vCPU(s), {} MiB) in {:.2} ms: state file read {read_ms:.2} ms, memory \
             mapped {map_ms:.2} ms, VM and devices {devices_ms:.2} ms, vCPUs {vcpus_ms:.2} ms",
            opts.state_path.display(),
            config.vcpus,
            config.mem_mib,
            ms(started)
        );
        Ok(vmm)
    }

    /// Puts every device's saved state into the devices just made, then
    /// has each virtio queue looked at once when the VM starts (a
    /// notification the saved VM had not served yet is not lost).
    fn restore_devices(&mut self, saved: &super::DevicesSnapshot) -> Result<()> {
        let device = |what: &str| {
            let what = what.to_string();
            move |reason: String| restore_err(RestoreError::Device { what, reason })
        };
        lock(&self.serial)
            .restore(&saved.serial)
            .map_err(device("serial port"))?;
        lock(&self.i8042)
            .restore(&saved.i8042)
            .map_err(device("i8042"))?;
        lock(&self.legacy.cmos)
            .restore(&saved.cmos)
            .map_err(device("CMOS"))?;
        lock(&self.legacy.exit_device).restore(saved.exit_device);
        lock(&self.legacy.command).restore(&saved.command);
        if saved.virtio.len() != self.virtio.len() {
            return Err(restore_err(RestoreError::Inconsistent(format!(
                "{} virtio devices saved for a VM of {}",
                saved.virtio.len(),
                self.virtio.len()
            ))));
        }
        for (i, (slot, state)) in self.virtio.iter().zip(&saved.virtio).enumerate() {
            lock(&slot.transport)
                .restore(state)
                .map_err(device(&format!("virtio device {i}")))?;
            for evt in &slot.queue_evts {
                evt.write(1)
                    .map_err(|e| device(&format!("virtio device {i}"))(e.to_string()))?;
            }
        }
        Ok(())
    }
}

/// The state file at `path`, read and checked.
pub fn read_state(path: &Path) -> std::result::Result<StateFile, RestoreError> {
    file::read(path).map_err(|source| RestoreError::StateFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, ebx: u32, ecx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            ebx,
            ecx,
            ..Default::default()
        }
    }

    #[test]
    fn a_feature_the_host_lacks_is_named_and_the_vmms_own_bits_are_not() {
        let host = [entry(1, 0, 0, 0x0000_0201), entry(7, 0, 0x29, 0)];
        // The hypervisor, OSXSAVE and TSC-deadline bits are the VMM's or
        // the guest's: no host offers them as such.
        let saved = [
            entry(1, 0, 0, 0x0000_0201 | (1 << 31) | (1 << 27) | (1 << 24)),
            entry(7, 0, 0x29, 1 << 4),
        ];
        check_cpuid(&saved, &host).unwrap();
        let avx512 = [entry(1, 0, 0, 0x201), entry(7, 0, 0x29 | (1 << 16), 0)];
        let e = check_cpuid(&avx512, &host).unwrap_err();
        assert_eq!(e, "leaf 0x7.0 ebx bits 0x00010000");
        let missing_leaf = [entry(0x8000_0001, 0, 0, 1)];
        assert!(check_cpuid(&missing_leaf, &host)
            .unwrap_err()
            .contains("leaf 0x80000001.0 ecx bits 0x00000001"));
    }
}
