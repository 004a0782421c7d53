//! Builds a VM from a `VmConfig` and runs it to its end: guest memory, the
//! KVM VM with its irqchip and PIT, the kernel and boot data, devices,
//! vCPU threads and the event loop.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestMemoryMmap};

use crate::cmdline::guest_cmdline;
use crate::config::{BootProtocol, EmulatedHost, SerialOutput, VmConfig};
use crate::device_manager::VirtioSlot;
use crate::device_manager::{self, LegacyDevices, Slotted};
use crate::error::{Error, Result};
use crate::event_loop::{ExitHandler, StdinHandler, VirtioHandler};
use crate::host;
use crate::metrics::MetricsFile;
use crate::signals::{install_kick_handler, install_stop_handler, stop_vcpus, StopHandler};
use crate::terminal::RawTerminal;
use crate::vcpu::{self, Vcpu, VmEnd, VmExitState};
use crate::vm::{self, VmError};
use devices::boot_timer::{Phase, Timeline};
use devices::exit_device::{self, ExitDevice};
use devices::serial::SerialDevice;
use vmm_sys_util::eventfd::EventFd;

/// A built VM, ready to run.
pub struct Vmm {
    // Field order is drop order: vCPUs and devices go before the VM fd,
    // the VM fd before guest memory, so KVM never sees unmapped memory.
    vcpus: Vec<Vcpu>,
    virtio: Vec<VirtioSlot>,
    serial: Arc<Mutex<SerialDevice>>,
    serial_input_ready: EventFd,
    reset_evt: EventFd,
    exit: Arc<VmExitState>,
    serial_stdio: bool,
    seccomp: bool,
    metrics: Option<MetricsFile>,
    _vm: VmFd,
    _kvm: Kvm,
    _mem: GuestMemoryMmap,
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn open_image(what: &'static str, path: &std::path::Path) -> Result<File> {
    File::open(path).map_err(|e| Error::File {
        what,
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Vmm {
    /// Validates `config`, then builds the VM. Errors in the configuration
    /// or the images are reported before KVM is touched.
    pub fn build(config: &VmConfig, started: Instant) -> Result<Vmm> {
        let disk_files = config.check()?;
        let timeline = Arc::new(Timeline::new(started));
        let mut metrics = match &config.metrics {
            Some(path) => Some(MetricsFile::create(path, timeline.clone())?),
            None => None,
        };
        let mut kernel = open_image("kernel", &config.kernel)?;
        arch::boot::probe_kernel(&mut kernel).map_err(|source| Error::Kernel {
            path: config.kernel.clone(),
            source,
        })?;

        let emulated = config.emulated_host.applies();
        let cmdline_text = guest_cmdline(config, emulated);
        let cmdline =
            arch::boot::make_cmdline(&cmdline_text).map_err(|e| match &config.command {
                // The command travels on the command line (VMM_CMD=...).
                Some(command) if cmdline_text.len() >= arch::layout::CMDLINE_MAX_SIZE => {
                    Error::config(
                        "command",
                        command
                            .iter()
                            .map(|a| a.to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(" "),
                        format!(
                            "too long: encoded it takes {} of the kernel command line's {} bytes, \
                         {} with the rest",
                            crate::cmdline::encode_command(command).len(),
                            arch::layout::CMDLINE_MAX_SIZE - 1,
                            cmdline_text.len()
                        ),
                    )
                }
                _ => Error::config("cmdline", &config.cmdline, e.to_string()),
            })?;
        if emulated {
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
                "{why}: guest kernel code is interpreted (about 1000x slower than VT-x/AMD-V) and \
                 guest user space cannot make system calls, so init will not run; added to the \
                 guest command line where not already set: {} (turn off with --emulated-host off)",
                params.join(" ")
            );
        }
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
            .collect::<Result<Vec<_>>>()?;

        let kvm = host::open_kvm()?;
        log::debug!("timing: /dev/kvm opened at {:.3} ms", ms_since(started));
        let max = host::max_vcpus(&kvm);
        if config.vcpus > max {
            return Err(Error::config(
                "vcpus",
                config.vcpus,
                format!("KVM allows at most {max} vCPUs per VM"),
            ));
        }
        let vcpu_count = config.vcpus as u8; // validated: at most 254

        let vm = vm::create_vm(&kvm)?;
        log::debug!(
            "timing: VM, irqchip and PIT created at {:.3} ms",
            ms_since(started)
        );

        let mem_bytes = config.mem_mib << 20;
        let mem = vm::guest_memory(config.mem_mib)?;
        log::debug!("timing: guest memory mapped at {:.3} ms", ms_since(started));
        // Registering the memory with KVM and copying the kernel into it are
        // independent and each take milliseconds (the registration most on
        // an emulated KVM): do them at the same time.
        let want_pvh = config.boot_protocol == BootProtocol::Pvh;
        let (registered, loaded) = std::thread::scope(|scope| {
            let registration = scope.spawn(|| vm::register_memory(&vm, &mem));
            let loaded = arch::boot::load_kernel(&mem, &mut kernel, want_pvh);
            let registered = registration
                .join()
                .unwrap_or_else(|_| Err(VmError::RegistrationPanicked.into()));
            (registered, loaded)
        });
        registered?;
        let loaded = loaded.map_err(|source| Error::Kernel {
            path: config.kernel.clone(),
            source,
        })?;
        log::debug!("timing: kernel loaded at {:.3} ms", ms_since(started));
        let initrd = match &config.initrd {
            Some(path) => {
                let mut f = open_image("initrd", path)?;
                let (at, size) = arch::boot::load_initrd(&mem, mem_bytes, loaded.end, &mut f)
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
            cmdline: &cmdline,
            mem_bytes,
            initrd,
            rng_seed: host::random_seed()?,
            vcpus: vcpu_count,
        };
        arch::configure_system(&mem, &setup).map_err(|e| match e {
            arch::SystemError::Boot(source) => Error::Kernel {
                path: config.kernel.clone(),
                source,
            },
            arch::SystemError::MpTable(e) => VmError::MpTable(e).into(),
        })?;
        log::info!(
            "kernel {} ({:?}, entry {:#x}, {:?}), {} MiB, {} vCPU(s), command line: {}",
            config.kernel.display(),
            loaded.format,
            loaded.entry.raw_value(),
            loaded.mode,
            config.mem_mib,
            vcpu_count,
            cmdline_text
        );

        if let Some(m) = &mut metrics {
            m.describe(&cmdline_text, config.mem_mib, u32::from(vcpu_count));
        }
        let exit = Arc::new(VmExitState::new(timeline.clone())?);
        let LegacyDevices {
            mut pio,
            mmio,
            serial,
            serial_input_ready,
            reset_evt,
        } = device_manager::create(
            &vm,
            device_manager::serial_writer(&config.serial)?,
            &timeline,
        )?;
        // The guest's init reports its command's exit status here; the
        // first report ends the VM with that status.
        let reported = exit.clone();
        pio.insert(
            Arc::new(Mutex::new(ExitDevice::new(Box::new(move |status| {
                reported.finish(VmEnd::CommandExited(status))
            })))),
            u64::from(arch::layout::EXIT_DEVICE_PORT),
            exit_device::LEN,
        )?;
        let mut mmio = mmio;
        let mut virtio = Vec::with_capacity(config.disks.len() + config.nets.len());
        let mut disk_files = disk_files.into_iter();
        let mut taps = taps.into_iter();
        for (slot, device) in device_manager::virtio_layout(config) {
            let device = match device {
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
                    device_manager::block_device(disk, file, size, i)
                }
                Slotted::Net(n, net) => {
                    let tap = taps.next().ok_or(VmError::Unopened)?;
                    log::info!(
                        "network interface {n} on TAP {} with MAC {} at virtio-mmio {}",
                        net.tap,
                        net.mac_for(n),
                        slot.param()
                    );
                    device_manager::net_device(net, n, tap)?
                }
            };
            virtio.push(device_manager::add_virtio(
                &vm, &mut mmio, &mem, slot, device,
            )?);
        }
        let (pio, mmio) = (Arc::new(pio), Arc::new(mmio));
        let mut base_cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(Error::kvm("KVM_GET_SUPPORTED_CPUID"))?;
        // KVM emulates the TSC-deadline timer in its local APIC (this VM's
        // irqchip is in the kernel) but leaves the CPUID bit to user space,
        // as QEMU and Firecracker set it.
        if kvm.check_extension(kvm_ioctls::Cap::TscDeadlineTimer) {
            arch::cpuid::offer_tsc_deadline(&mut base_cpuid);
        }
        let mut vcpus = Vec::with_capacity(vcpu_count as usize);
        for id in 0..vcpu_count {
            let fd = vm
                .create_vcpu(u64::from(id))
                .map_err(Error::kvm("KVM_CREATE_VCPU"))?;
            vcpu::configure(
                &fd,
                id,
                arch::cpuid::Topology {
                    count: vcpu_count,
                    threads_per_core: if config.smt { 2 } else { 1 },
                },
                &base_cpuid,
                &mem,
                loaded.entry,
                loaded.mode,
            )?;
            vcpus.push(Vcpu {
                id,
                fd,
                pio: pio.clone(),
                mmio: mmio.clone(),
                exit: exit.clone(),
            });
        }
        timeline.mark(Phase::VmBuilt);
        if let Some(m) = &mut metrics {
            let transports: Vec<_> = virtio.iter().map(|s| s.transport.clone()).collect();
            m.write(&transports, None);
        }

        Ok(Vmm {
            vcpus,
            virtio,
            serial,
            serial_input_ready,
            reset_evt,
            exit,
            serial_stdio: config.serial == SerialOutput::Stdio,
            seccomp: config.seccomp,
            metrics,
            _vm: vm,
            _kvm: kvm,
            _mem: mem,
        })
    }

    /// Runs the VM until the guest ends it. Returns why it ended.
    pub fn run(self) -> Result<VmEnd> {
        install_kick_handler()?;
        // The VM, KVM and guest memory stay bound until the vCPU threads
        // are joined at the end of this function.
        let Vmm {
            vcpus,
            virtio,
            serial,
            serial_input_ready,
            reset_evt,
            exit,
            serial_stdio,
            seccomp,
            mut metrics,
            _vm,
            _kvm,
            _mem,
        } = self;

        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| VmError::EventLoop(format!("{e:?}")))?;
        em.add_subscriber(Arc::new(Mutex::new(ExitHandler {
            exit: exit.clone(),
            reset_evt,
        })));
        em.add_subscriber(Arc::new(Mutex::new(StopHandler {
            evt: install_stop_handler()?,
            exit: exit.clone(),
        })));
        let transports: Vec<_> = virtio.iter().map(|s| s.transport.clone()).collect();
        for slot in virtio {
            em.add_subscriber(Arc::new(Mutex::new(VirtioHandler {
                slot,
                host_fds: Vec::new(),
            })));
        }
        let _raw = if serial_stdio {
            em.add_subscriber(Arc::new(Mutex::new(StdinHandler::new(
                std::io::stdin(),
                serial,
                serial_input_ready,
            ))));
            RawTerminal::enter()
        } else {
            None
        };

        let mut threads: Vec<JoinHandle<()>> = Vec::new();
        for vcpu in vcpus {
            let name = format!("vcpu{}", vcpu.id);
            let thread_exit = exit.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if seccomp {
                        if let Err(e) = crate::seccomp::install(crate::seccomp::Thread::Vcpu) {
                            thread_exit.finish(VmEnd::VmmError(e.to_string()));
                            return;
                        }
                    }
                    vcpu.run()
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    exit.finish(VmEnd::VmmError(format!("cannot start thread {name}: {e}")));
                    break;
                }
            }
        }

        if seccomp {
            if let Err(e) = crate::seccomp::install(crate::seccomp::Thread::Main) {
                exit.finish(VmEnd::VmmError(e.to_string()));
            }
        }
        let end = loop {
            if let Some(end) = exit.end() {
                break end;
            }
            if let Err(e) = em.run() {
                log::warn!("event loop: {e:?}");
            }
        };
        stop_vcpus(&exit, threads);
        for t in &transports {
            if let Some(line) = devices::bus::lock(t).device_stats() {
                log::info!("{line}");
            }
        }
        if let Some(m) = &mut metrics {
            m.write(&transports, Some(&end));
        }
        Ok(end)
    }
}
