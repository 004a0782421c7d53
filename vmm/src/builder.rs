//! Builds a VM from a `VmConfig` and runs it to its end: guest memory, the
//! KVM VM with its irqchip and PIT, the kernel and boot data, devices,
//! vCPU threads and the event loop.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryMmap};

use crate::cmdline::guest_cmdline;
use crate::config::ConfigError;
use crate::config::{BootProtocol, EmulatedHost, SerialOutput, VmConfig};
use crate::control::Control;
use crate::device_manager::{self, LegacyDevices, Slotted, VirtioSlot};
use crate::error::{Error, Result};
use crate::host;
use crate::metrics::MetricsFile;
use crate::vcpu::{self, Vcpu, VmEnd, VmExitState};
use crate::vm::{self, kvm_call, VmError};
use devices::boot_timer::{Phase, Timeline};
use devices::exit_device::{self, ExitDevice};
use devices::i8042::I8042;
use devices::serial::SerialDevice;
use devices::virtio::net::tap::Tap;
use vmm_sys_util::eventfd::EventFd;

/// A built VM, ready to start (`Vmm::start`) or run (`Vmm::run`).
pub struct Vmm {
    // Field order is drop order: vCPUs and devices go before the VM fd,
    // the VM fd before guest memory, so KVM never sees unmapped memory.
    pub(crate) vcpus: Vec<Vcpu>,
    pub(crate) virtio: Vec<VirtioSlot>,
    pub(crate) disks: Vec<crate::handle::DiskSlot>,
    pub(crate) serial: Arc<Mutex<SerialDevice>>,
    pub(crate) serial_input_ready: EventFd,
    pub(crate) reset_evt: EventFd,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    pub(crate) legacy: crate::snapshot::Legacy,
    pub(crate) ready: Arc<crate::handle::Ready>,
    pub(crate) config: VmConfig,
    pub(crate) exit: Arc<VmExitState>,
    pub(crate) control: Arc<Control>,
    pub(crate) buses: (Arc<devices::Bus>, Arc<devices::Bus>),
    pub(crate) serial_stdio: bool,
    pub(crate) seccomp: bool,
    pub(crate) metrics: Option<MetricsFile>,
    pub(crate) vm: VmFd,
    pub(crate) kvm: Kvm,
    pub(crate) mem: GuestMemoryMmap,
}

/// What the first stage found: the configuration checked and the host's
/// files and devices opened, before KVM is touched.
pub struct Checked {
    disk_files: Vec<(crate::config::Disk, u64)>,
    taps: Vec<Tap>,
    /// The kernel and its command line (not for a restore).
    kernel: Option<(File, arch::boot::Cmdline)>,
    cmdline_text: String,
    timeline: Arc<Timeline>,
    metrics: Option<MetricsFile>,
}

/// The guest as loaded into memory: where to enter it.
pub struct Loaded {
    kernel: arch::boot::LoadedKernel,
}

fn open_image(what: &'static str, path: &std::path::Path) -> Result<File> {
    File::open(path).map_err(|e| {
        ConfigError::Missing {
            what,
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
        .into()
    })
}

impl Vmm {
    /// Validates `config`, then builds the VM stage by stage: the
    /// configuration checked and the host's files opened (`check`), the
    /// KVM VM made while the guest is loaded into its memory
    /// (`create_and_load`), the devices (`devices`) and the vCPUs
    /// (`vcpus`). Errors in the configuration or the images are reported
    /// before KVM is touched.
    pub fn build(config: &VmConfig, started: Instant) -> Result<Vmm> {
        let checked = Self::check(config, started)?;
        let (kvm, vm, mem, loaded) = Self::create_and_load(config, &checked)?;
        let mut vmm = Self::devices(config, kvm, vm, mem, checked)?;
        vmm.exit.timeline.step("devices_made");
        vmm.vcpus(config, &loaded)?;
        vmm.exit.timeline.mark(Phase::VmBuilt);
        if let Some(m) = &mut vmm.metrics {
            let transports: Vec<_> = vmm.virtio.iter().map(|s| s.transport.clone()).collect();
            m.write(&transports, None);
        }
        Ok(vmm)
    }

    /// Stage 1: the configuration and the host's side of the VM, before
    /// KVM: the disks and the kernel opened, the kernel probed, the guest
    /// command line made, the memory the host can give, the TAPs opened.
    pub fn check(config: &VmConfig, started: Instant) -> Result<Checked> {
        Self::check_with(config, started, true)
    }

    /// Stage 1 without the kernel, all a restore needs: the disks opened,
    /// the metrics file made, the memory the host can give, the TAPs
    /// opened.
    pub fn check_host(config: &VmConfig, started: Instant) -> Result<Checked> {
        Self::check_with(config, started, false)
    }

    fn check_with(config: &VmConfig, started: Instant, boot: bool) -> Result<Checked> {
        let disk_files = config.check()?;
        let timeline = Arc::new(Timeline::new(started));
        let metrics = match &config.metrics {
            Some(path) => Some(MetricsFile::create(path, timeline.clone())?),
            None => None,
        };
        let (kernel, cmdline_text) = if boot {
            let mut kernel = open_image("kernel", &config.kernel)?;
            arch::boot::probe_kernel(&mut kernel).map_err(|source| Error::Kernel {
                path: config.kernel.clone(),
                source,
            })?;
            let emulated = config.emulated_host.applies();
            let cmdline_text = guest_cmdline(config, emulated);
            let cmdline = arch::boot::make_cmdline(&cmdline_text)
                .map_err(|e| cmdline_error(config, &cmdline_text, e))?;
            if emulated {
                warn_emulated(config);
            }
            (Some((kernel, cmdline)), cmdline_text)
        } else {
            (None, String::new())
        };
        if let Some(avail) = host::available_mem_mib() {
            if config.mem_mib > avail {
                return Err(Error::config(
                    "memory",
                    format!("{} MiB", config.mem_mib),
                    format!("more than the host can give ({avail} MiB available)"),
                ));
            }
        }
        // The host's network devices, before KVM: a TAP that cannot be
        // opened stops the VM before anything is built.
        let taps = config
            .nets
            .iter()
            .map(device_manager::open_tap)
            .collect::<std::result::Result<Vec<_>, _>>()?;
        timeline.step("checked");
        Ok(Checked {
            disk_files,
            taps,
            kernel,
            cmdline_text,
            timeline,
            metrics,
        })
    }

    /// Stage 2: KVM and the VM with its irqchip and PIT.
    pub fn create_vm(config: &VmConfig, checked: &Checked) -> Result<(Kvm, VmFd)> {
        let kvm = host::open_kvm()?;
        checked.timeline.step("kvm_opened");
        let max = host::max_vcpus(&kvm);
        if config.vcpus > max {
            return Err(Error::config(
                "vcpus",
                config.vcpus,
                format!("KVM allows at most {max} vCPUs per VM"),
            ));
        }
        let vm = vm::create_vm(&kvm)?;
        checked.timeline.step("vm_created");
        Ok((kvm, vm))
    }

    /// Stages 2 and 3 at once: guest memory mapped, then KVM's VM made
    /// (`create_vm`) and the memory registered with it on a thread of its
    /// own while the kernel, the initrd and the boot data are loaded into
    /// that memory here (`load_guest`). They are independent and each
    /// takes milliseconds: KVM_CREATE_VM with its irqchip and PIT the
    /// longest on the nested AMD-V host (about 20 ms), the registration on
    /// an emulated KVM.
    pub fn create_and_load(
        config: &VmConfig,
        checked: &Checked,
    ) -> Result<(Kvm, VmFd, GuestMemoryMmap, Loaded)> {
        let mem = vm::guest_memory(config.mem_mib)?;
        checked.timeline.step("guest_memory_mapped");
        let (made, loaded) = std::thread::scope(|scope| {
            let mem = &mem;
            let maker = std::thread::Builder::new()
                .name("vmm-create-vm".into())
                .spawn_scoped(scope, move || -> Result<(Kvm, VmFd)> {
                    let (kvm, vm) = Self::create_vm(config, checked)?;
                    vm::register_memory(&vm, mem)?;
                    checked.timeline.step("memory_registered");
                    Ok((kvm, vm))
                });
            let loaded = Self::load_guest(config, mem, checked);
            let made = match maker {
                Ok(thread) => thread
                    .join()
                    .unwrap_or(Err(VmError::CreationPanicked.into())),
                Err(e) => Err(crate::handle::HandleError::Thread(
                    "vmm-create-vm".into(),
                    e.to_string(),
                )
                .into()),
            };
            (made, loaded)
        });
        // The guest's errors (a kernel that does not load) first: they are
        // the user's to fix.
        let loaded = loaded?;
        let (kvm, vm) = made?;
        checked.timeline.step("vm_ready");
        Ok((kvm, vm, mem, loaded))
    }

    /// Stage 3: the kernel, the initrd and the boot data (command line,
    /// boot parameters, MP table) in guest memory.
    pub fn load_guest(
        config: &VmConfig,
        mem: &GuestMemoryMmap,
        checked: &Checked,
    ) -> Result<Loaded> {
        let (kernel, cmdline) = checked.kernel.as_ref().ok_or(VmError::Unopened)?;
        let mut kernel = kernel.try_clone().map_err(|e| ConfigError::Missing {
            what: "kernel",
            path: config.kernel.clone(),
            reason: e.to_string(),
        })?;
        let mem_bytes = config.mem_mib << 20;
        let want_pvh = config.boot_protocol == BootProtocol::Pvh;
        let loaded = arch::boot::load_kernel(mem, &mut kernel, want_pvh);
        let loaded = loaded.map_err(|source| Error::Kernel {
            path: config.kernel.clone(),
            source,
        })?;
        checked.timeline.step("kernel_loaded");
        let initrd = match &config.initrd {
            Some(path) => {
                let mut f = open_image("initrd", path)?;
                let (at, size) = arch::boot::load_initrd(mem, mem_bytes, loaded.end, &mut f)
                    .map_err(|source| Error::Initrd {
                        path: path.clone(),
                        source,
                    })?;
                log::info!("initrd {} ({size} bytes) at {at:#x}", path.display());
                Some((at, size))
            }
            None => None,
        };
        let setup = arch::BootSetup {
            kernel: &loaded,
            cmdline,
            mem_bytes,
            initrd,
            rng_seed: host::random_seed()?,
            vcpus: config.vcpus as u8,
        };
        arch::configure_system(mem, &setup).map_err(|e| match e {
            arch::SystemError::Boot(source) => Error::Kernel {
                path: config.kernel.clone(),
                source,
            },
            arch::SystemError::MpTable(e) => VmError::MpTable(e).into(),
        })?;
        checked.timeline.step("initrd_loaded");
        log::info!(
            "kernel {} ({:?}, entry {:#x}, {:?}), {} MiB, {} vCPU(s), command line: {}",
            config.kernel.display(),
            loaded.format,
            loaded.entry.raw_value(),
            loaded.mode,
            config.mem_mib,
            config.vcpus,
            checked.cmdline_text
        );
        Ok(Loaded { kernel: loaded })
    }

    /// Stage 4: the devices (serial port, i8042, CMOS, boot timer, the
    /// exit device, the virtio disks and network interfaces) on their
    /// buses, their interrupts wired to KVM.
    pub fn devices(
        config: &VmConfig,
        kvm: Kvm,
        vm: VmFd,
        mem: GuestMemoryMmap,
        checked: Checked,
    ) -> Result<Vmm> {
        let Checked {
            disk_files,
            taps,
            cmdline_text,
            timeline,
            mut metrics,
            ..
        } = checked;
        if let Some(m) = &mut metrics {
            m.describe(&cmdline_text, config.mem_mib, config.vcpus);
        }
        // Every vCPU and the event loop take part in pauses.
        let control = Arc::new(
            Control::new(config.vcpus as usize + 1)
                .map_err(|e| device_manager::DeviceError::EventFd("control", e))?,
        );
        let exit = Arc::new(VmExitState::new(timeline.clone(), control.clone())?);
        let LegacyDevices {
            mut pio,
            mut mmio,
            serial,
            serial_input_ready,
            reset_evt,
            i8042,
            cmos,
        } = device_manager::create(
            &vm,
            device_manager::serial_writer(&config.serial)?,
            &timeline,
        )?;
        // The guest's init reports its command's exit status here; the
        // first report ends the VM with that status.
        let reported = exit.clone();
        let exit_device = Arc::new(Mutex::new(ExitDevice::new(Box::new(move |status| {
            reported.finish(VmEnd::CommandExited(status))
        }))));
        pio.insert(
            exit_device.clone(),
            u64::from(arch::layout::EXIT_DEVICE_PORT),
            exit_device::LEN,
        )?;
        // A template's init says here that it is ready for its command.
        let ready = Arc::new(crate::handle::Ready::default());
        let on_ready = ready.clone();
        let command = Arc::new(Mutex::new(devices::command::CommandDevice::new(Box::new(
            move || on_ready.set(),
        ))));
        pio.insert(
            command.clone(),
            u64::from(arch::layout::COMMAND_PORT),
            devices::command::LEN,
        )?;
        let mut virtio = Vec::with_capacity(config.disks.len() + config.nets.len());
        let mut disks = Vec::with_capacity(config.disks.len());
        let mut disk_files = disk_files.into_iter();
        let mut taps = taps.into_iter();
        for (slot, device) in device_manager::virtio_layout(config) {
            let (device, disk) = match device {
                Slotted::Disk(i, disk) => {
                    // One opened file per disk, in the disks' order.
                    let (file, size) = disk_files.next().ok_or(VmError::Unopened)?;
                    log::info!(
                        "disk {} as /dev/vd{} ({}, {size} bytes) at virtio-mmio {}",
                        disk.path.display(),
                        char::from(b'a' + i as u8),
                        if disk.read_only {
                            "read-only"
                        } else {
                            "read-write"
                        },
                        slot.param()
                    );
                    (
                        device_manager::block_device(disk, file, size, i),
                        Some((i, disk)),
                    )
                }
                Slotted::Net(n, net) => {
                    let tap = taps.next().ok_or(VmError::Unopened)?;
                    log::info!(
                        "network interface {n} on TAP {} with MAC {} at virtio-mmio {}",
                        net.tap,
                        net.mac_for(n),
                        slot.param()
                    );
                    (device_manager::net_device(net, n, tap)?, None)
                }
            };
            let added = device_manager::add_virtio(&vm, &mut mmio, &mem, slot, device)?;
            if let Some((i, disk)) = disk {
                disks.push(crate::handle::DiskSlot {
                    index: i,
                    read_only: disk.read_only,
                    transport: added.transport.clone(),
                });
            }
            virtio.push(added);
        }
        Ok(Vmm {
            buses: (Arc::new(pio), Arc::new(mmio)),
            vcpus: Vec::new(),
            virtio,
            disks,
            serial,
            serial_input_ready,
            reset_evt,
            i8042,
            legacy: crate::snapshot::Legacy {
                cmos,
                exit_device,
                command,
            },
            ready,
            config: config.clone(),
            exit,
            control,
            serial_stdio: config.serial == SerialOutput::Stdio,
            seccomp: config.seccomp,
            metrics,
            vm,
            kvm,
            mem,
        })
    }

    /// Stage 5: the vCPUs, each configured for the boot: CPUID, MSRs,
    /// registers, FPU and LAPIC.
    pub fn vcpus(&mut self, config: &VmConfig, loaded: &Loaded) -> Result<()> {
        let (pio, mmio) = self.buses.clone();
        let mut base_cpuid = self
            .kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_call("KVM_GET_SUPPORTED_CPUID"))
            .map_err(VmError::from)?;
        // KVM emulates the TSC-deadline timer in its local APIC (this VM's
        // irqchip is in the kernel) but leaves the CPUID bit to user space,
        // as QEMU and Firecracker set it.
        if self.kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
            arch::cpuid::offer_tsc_deadline(&mut base_cpuid);
        }
        let vcpu_count = config.vcpus as u8; // validated: at most 254
        for id in 0..vcpu_count {
            let fd = self
                .vm
                .create_vcpu(u64::from(id))
                .map_err(kvm_call("KVM_CREATE_VCPU"))
                .map_err(VmError::from)?;
            vcpu::configure(
                &fd,
                id,
                arch::cpuid::Topology {
                    count: vcpu_count,
                    threads_per_core: if config.smt { 2 } else { 1 },
                },
                &base_cpuid,
                &self.mem,
                loaded.kernel.entry,
                loaded.kernel.mode,
            )?;
            self.vcpus.push(Vcpu {
                id,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: self.exit.clone(),
                control: self.control.clone(),
            });
        }
        Ok(())
    }

    /// Records the process exit code each end of the VM becomes (the front
    /// end's mapping), for the metrics document's `end.exit_code`.
    pub fn end_codes(mut self, code: fn(&VmEnd) -> i32) -> Self {
        if let Some(m) = &mut self.metrics {
            m.end_code = Some(code);
        }
        self
    }

    /// Builds and runs the VM on this thread's behalf until the guest ends
    /// it: `start`, then `wait`.
    pub fn run(self) -> Result<VmEnd> {
        Ok(self.start()?.wait())
    }
}

/// The error for a guest command line that does not fit.
fn cmdline_error(config: &VmConfig, cmdline_text: &str, e: arch::boot::Error) -> Error {
    match &config.command {
        // The command travels on the command line (VMM_CMD=...).
        Some(command) if cmdline_text.len() >= arch::layout::CMDLINE_MAX_SIZE => Error::config(
            "command",
            command
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" "),
            format!(
                "too long: encoded it takes {} of the kernel command line's {} bytes, {} with \
                 the rest",
                crate::cmdline::encode_command(command).len(),
                arch::layout::CMDLINE_MAX_SIZE - 1,
                cmdline_text.len()
            ),
        ),
        _ => Error::config("cmdline", &config.cmdline, e.to_string()),
    }
}

/// Says how the guest is adapted to an emulated KVM.
fn warn_emulated(config: &VmConfig) {
    let why = match config.emulated_host {
        EmulatedHost::On => {
            "adapting the guest to an emulated KVM (--emulated-host on)".to_string()
        }
        _ => format!("emulated KVM detected ({})", host::PVM_MODULE),
    };
    let params: Vec<String> = host::emulated_host_params()
        .iter()
        .map(|(key, value)| match value {
            Some(v) if host::LIST_PARAMS.contains(key) => {
                format!("{key}=<{} features>", v.split(',').count())
            }
            Some(v) => format!("{key}={v}"),
            None => key.to_string(),
        })
        .collect();
    log::warn!(
        "{why}: guest kernel code is interpreted (about 1000x slower than VT-x/AMD-V) and guest \
         user space cannot make system calls, so init will not run; added to the guest command \
         line where not already set: {} (turn off with --emulated-host off)",
        params.join(" ")
    );
}
