//! Builds a VM from a `VmConfig` and runs it to its end: guest memory, the
//! KVM VM with its irqchip and PIT, the kernel and boot data, devices,
//! vCPU threads and the event loop.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arch::layout::KVM_TSS_ADDRESS;
use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use crate::config::{BootProtocol, EmulatedHost, SerialOutput, VmConfig};
use crate::device_manager::VirtioSlot;
use crate::device_manager::{self, LegacyDevices};
use crate::error::{Error, Result};
use crate::event_loop::{ExitHandler, StdinHandler, VirtioHandler};
use crate::host;
use crate::metrics::MetricsFile;
use crate::vcpu::{self, Vcpu, VmEnd, VmExitState};
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

/// Hands every guest RAM region to KVM as a memory slot.
fn register_memory(vm: &VmFd, mem: &GuestMemoryMmap, mib: u64) -> Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host_addr = mem
            .get_host_address(region.start_addr())
            .map_err(|_| Error::config("memory", mib, "guest memory is not mapped"))?;
        let region_desc = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host_addr as u64,
            flags: 0,
        };
        // SAFETY: the range [host_addr, host_addr + len) is a live mapping
        // owned by `mem`, which the Vmm keeps until after the VM fd is
        // closed (field order), so KVM never maps freed memory.
        unsafe { vm.set_user_memory_region(region_desc) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

/// The guest command line: the configured one, the virtio-mmio devices and
/// root disk, and the emulated-host parameters when they apply.
pub fn guest_cmdline(config: &VmConfig, emulated: bool) -> String {
    let mut cmdline = config.cmdline.clone();
    for (i, disk) in config.disks.iter().enumerate() {
        crate::cmdline::append(
            &mut cmdline,
            &format!(
                "virtio_mmio.device={}",
                device_manager::virtio_mmio_param(i)
            ),
        );
        if disk.root {
            let letter = char::from(b'a' + i as u8);
            let root = match &disk.partuuid {
                Some(uuid) => format!("PARTUUID={uuid}"),
                None => format!("/dev/vd{letter}"),
            };
            if crate::cmdline::add_param(&mut cmdline, "root", Some(&root))
                && !crate::cmdline::has_key(&cmdline, "ro")
                && !crate::cmdline::has_key(&cmdline, "rw")
            {
                crate::cmdline::append(&mut cmdline, if disk.read_only { "ro" } else { "rw" });
            }
        }
    }
    // Disks take the first virtio-mmio slots, network interfaces the next.
    for i in config.disks.len()..config.disks.len() + config.nets.len() {
        crate::cmdline::append(
            &mut cmdline,
            &format!(
                "virtio_mmio.device={}",
                device_manager::virtio_mmio_param(i)
            ),
        );
    }
    // Where init tells the VMM it runs (the kernel hands unknown KEY=VALUE
    // parameters to init as its environment).
    crate::cmdline::add_param(
        &mut cmdline,
        devices::boot_timer::CMDLINE_PARAM,
        Some(&format!("{:#x}", arch::layout::BOOT_TIMER_PORT)),
    );
    // Where init reports its command's exit status, and the command.
    crate::cmdline::add_param(
        &mut cmdline,
        devices::exit_device::CMDLINE_PARAM,
        Some(&format!("{:#x}", arch::layout::EXIT_DEVICE_PORT)),
    );
    match &config.command {
        Some(command) => {
            crate::cmdline::add_param(
                &mut cmdline,
                crate::cmdline::COMMAND_PARAM,
                Some(&crate::cmdline::encode_command(command)),
            );
        }
        None if config.shell => {
            crate::cmdline::add_param(&mut cmdline, crate::cmdline::SHELL_PARAM, Some("1"));
        }
        None => {}
    }
    if config.dhcp {
        crate::cmdline::add_param(&mut cmdline, crate::cmdline::DHCP_PARAM, Some("1"));
    }
    if emulated {
        for (key, value) in host::emulated_host_params() {
            match value {
                Some(list) if host::LIST_PARAMS.contains(&key) => {
                    crate::cmdline::merge_list_param(&mut cmdline, key, list);
                }
                _ => {
                    crate::cmdline::add_param(&mut cmdline, key, value);
                }
            }
        }
    }
    cmdline
}

vmm_sys_util::ioctl_io_nr!(KVM_REINJECT_CONTROL, kvm_bindings::KVMIO, 0x71);

/// Turns off the in-kernel PIT's catch-up of missed ticks. With it on, a
/// guest that handles a tick more slowly than the tick period (an
/// interpreted guest on an emulated KVM, or one on a busy host) gets the
/// timer interrupt again as soon as it returns, forever; its lowest-priority
/// vectors (Linux gives the first device interrupt vector 0x20, below the
/// timer's 0x30) are then never delivered, and a virtio-net guest saw its TX
/// completions seconds late. A Linux guest keeps time from its clocksource,
/// not by counting ticks, so dropping missed ones costs it nothing
/// (QEMU's lost_tick_policy=discard).
fn disable_pit_reinjection(vm: &VmFd) {
    let ctl = kvm_bindings::kvm_reinject_control::default();
    // SAFETY: KVM_REINJECT_CONTROL reads a struct kvm_reinject_control
    // from the pointer, which points at a live, initialised one; the VM fd
    // is open and has a PIT.
    let ret = unsafe { vmm_sys_util::ioctl::ioctl_with_ref(vm, KVM_REINJECT_CONTROL(), &ctl) };
    if ret < 0 {
        log::warn!(
            "cannot turn off PIT tick reinjection: {}; a slow guest may see device interrupts late",
            std::io::Error::last_os_error()
        );
    }
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
        config.validate()?;
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

        let vm = kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?;
        vm.set_tss_address(KVM_TSS_ADDRESS as usize)
            .map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
        disable_pit_reinjection(&vm);
        log::debug!(
            "timing: VM, irqchip and PIT created at {:.3} ms",
            ms_since(started)
        );

        let mem_bytes = config.mem_mib << 20;
        let ranges: Vec<(GuestAddress, usize)> = arch::memory::ram_regions(mem_bytes)
            .into_iter()
            .map(|(start, size)| (GuestAddress(start), size as usize))
            .collect();
        let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(|source| Error::Memory {
            mib: config.mem_mib,
            source,
        })?;
        log::debug!("timing: guest memory mapped at {:.3} ms", ms_since(started));
        // Registering the memory with KVM and copying the kernel into it are
        // independent and each take milliseconds (the registration most on
        // an emulated KVM): do them at the same time.
        let want_pvh = config.boot_protocol == BootProtocol::Pvh;
        let (registered, loaded) = std::thread::scope(|scope| {
            let registration = scope.spawn(|| register_memory(&vm, &mem, config.mem_mib));
            let loaded = arch::boot::load_kernel(&mem, &mut kernel, want_pvh);
            let registered = registration.join().unwrap_or_else(|_| {
                Err(Error::config(
                    "memory",
                    config.mem_mib,
                    "registration thread failed",
                ))
            });
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
        let kernel_err = |source| Error::Kernel {
            path: config.kernel.clone(),
            source,
        };
        let cmdline_len = arch::boot::write_cmdline(&mem, &cmdline).map_err(kernel_err)?;
        match loaded.mode {
            arch::EntryMode::Linux64 => {
                let next = loaded.setup_header.map_or(0, |h| h.setup_data);
                let seed = arch::boot::write_rng_seed(&mem, &host::random_seed()?, next)
                    .map_err(kernel_err)?;
                let params = arch::boot::boot_params_for(
                    loaded.setup_header,
                    mem_bytes,
                    cmdline_len,
                    initrd,
                    Some(seed),
                );
                arch::boot::write_boot_params(&mem, &params).map_err(kernel_err)?;
            }
            arch::EntryMode::Pvh => {
                arch::boot::write_pvh_info(&mem, mem_bytes, initrd).map_err(kernel_err)?
            }
        }
        arch::mptable::write(&mem, vcpu_count)?;
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
        let mut virtio = Vec::with_capacity(config.disks.len());
        for (i, disk) in config.disks.iter().enumerate() {
            let (device, size) = device_manager::block_device(disk, i)?;
            virtio.push(device_manager::add_virtio(&vm, &mut mmio, &mem, i, device)?);
            log::info!(
                "disk {} as /dev/vd{} ({}, {size} bytes) at virtio-mmio {}",
                disk.path.display(),
                char::from(b'a' + i as u8),
                if disk.read_only {
                    "read-only"
                } else {
                    "read-write"
                },
                device_manager::virtio_mmio_param(i)
            );
        }
        for ((n, net), tap) in config.nets.iter().enumerate().zip(taps) {
            let slot = config.disks.len() + n;
            let mac = net.mac_for(n);
            let device = device_manager::net_device(net, n, tap);
            virtio.push(device_manager::add_virtio(
                &vm, &mut mmio, &mem, slot, device,
            )?);
            log::info!(
                "network interface {n} on TAP {} with MAC {} at virtio-mmio {}",
                net.tap,
                mac,
                device_manager::virtio_mmio_param(slot)
            );
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

        let mut em =
            EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().map_err(|e| {
                Error::Io {
                    what: format!("cannot create the event loop: {e:?}"),
                    source: std::io::Error::other("epoll"),
                }
            })?;
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

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The eventfd the stop-signal handler writes to (-1 until installed), and
/// the signal it saw.
static STOP_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);
static STOP_SIGNAL: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn stop_handler(sig: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    STOP_SIGNAL.store(sig, Ordering::SeqCst);
    let fd = STOP_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; it reads 8 bytes from a
        // live local. The fd is an eventfd kept open for the process's life.
        unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    }
}

/// Makes SIGTERM, SIGINT and SIGHUP end the VM through the event loop
/// (clean teardown: vCPUs stopped, device statistics logged, terminal
/// restored) instead of killing the process. Installed once per process;
/// returns a VM's own handle on the eventfd the handler writes to.
fn install_stop_handler() -> Result<EventFd> {
    static ONCE: std::sync::OnceLock<std::result::Result<EventFd, String>> =
        std::sync::OnceLock::new();
    let global = ONCE.get_or_init(|| {
        let evt =
            EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(|e| e.to_string())?;
        STOP_FD.store(std::os::fd::AsRawFd::as_raw_fd(&evt), Ordering::SeqCst);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            register_signal_handler(sig, stop_handler).map_err(|e| e.to_string())?;
        }
        Ok(evt)
    });
    let io = |what: &str, e: String| Error::Io {
        what: what.into(),
        source: std::io::Error::other(e),
    };
    global
        .as_ref()
        .map_err(|e| io("cannot install the stop-signal handler", e.clone()))?
        .try_clone()
        .map_err(|e| io("cannot duplicate the stop eventfd", e.to_string()))
}

/// Ends the VM when a stop signal arrives.
struct StopHandler {
    evt: EventFd,
    exit: Arc<VmExitState>,
}

impl MutEventSubscriber for StopHandler {
    fn init(&mut self, ops: &mut event_manager::EventOps) {
        if let Err(e) = ops.add(event_manager::Events::new(
            &self.evt,
            vmm_sys_util::epoll::EventSet::IN,
        )) {
            log::error!("event loop: cannot watch the stop signal: {e:?}");
        }
    }

    fn process(&mut self, _: event_manager::Events, _: &mut event_manager::EventOps) {
        let _ = self.evt.read();
        let sig = STOP_SIGNAL.load(Ordering::SeqCst);
        self.exit.finish(VmEnd::Signal(sig));
    }
}

/// Installs the handler for the signal that kicks vCPU threads out of
/// KVM_RUN (its only effect is that KVM_RUN returns EINTR).
fn install_kick_handler() -> Result<()> {
    static ONCE: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        register_signal_handler(SIGRTMIN(), kick_handler).map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| Error::Io {
        what: "cannot install the vCPU kick signal handler".into(),
        source: std::io::Error::other(e),
    })
}

/// Tells every vCPU thread to stop, kicks it out of KVM_RUN until it has
/// stopped, and joins it.
fn stop_vcpus(exit: &VmExitState, threads: Vec<JoinHandle<()>>) {
    exit.stop.store(true, Ordering::Release);
    for t in threads {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_finished() && Instant::now() < deadline {
            let _ = t.kill(SIGRTMIN());
            std::thread::sleep(Duration::from_millis(1));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            log::error!("a vCPU thread did not stop within 5 s; leaving it");
        }
    }
}

/// Puts an interactive terminal on stdin into raw mode, so keys reach the
/// guest as typed; restores it when dropped.
struct RawTerminal {
    saved: libc::termios,
}

impl RawTerminal {
    fn enter() -> Option<RawTerminal> {
        let fd = libc::STDIN_FILENO;
        // SAFETY: isatty only inspects the descriptor.
        if unsafe { libc::isatty(fd) } != 1 {
            return None;
        }
        // SAFETY: termios is plain data; tcgetattr fills it or fails.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is a terminal and `saved` is a valid termios to fill.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: fd is a terminal and `raw` a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return None;
        }
        Some(RawTerminal { saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: restores the settings read from the same terminal.
        unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DiskConfig, DEFAULT_CMDLINE};

    fn config(disks: Vec<DiskConfig>, cmdline: &str) -> VmConfig {
        VmConfig {
            cmdline: cmdline.into(),
            serial: SerialOutput::None,
            emulated_host: EmulatedHost::Off,
            disks,
            ..VmConfig::with_defaults("k".into(), None)
        }
    }

    fn disk(root: bool, read_only: bool) -> DiskConfig {
        DiskConfig {
            path: "d".into(),
            read_only,
            id: None,
            root,
            partuuid: None,
        }
    }

    #[test]
    fn init_gets_its_ports_and_the_command_or_a_shell() {
        let base = config(vec![], "console=ttyS0");
        let c = guest_cmdline(&base, false);
        assert!(
            c.contains("VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"),
            "{c}"
        );
        assert!(!c.contains("VMM_CMD") && !c.contains("VMM_SHELL"), "{c}");
        let shell = VmConfig {
            shell: true,
            ..base.clone()
        };
        assert!(guest_cmdline(&shell, false).ends_with(" VMM_SHELL=1"));
        // A command wins over the shell.
        let cmd = VmConfig {
            command: Some(vec!["true".into()]),
            shell: true,
            ..base
        };
        let c = guest_cmdline(&cmd, false);
        assert!(c.ends_with(" VMM_CMD=dHJ1ZQA"), "{c}");
        assert!(!c.contains("VMM_SHELL") && !c.contains("VMM_DHCP"), "{c}");
        let dhcp = VmConfig { dhcp: true, ..cmd };
        let c = guest_cmdline(&dhcp, false);
        assert!(c.ends_with(" VMM_CMD=dHJ1ZQA VMM_DHCP=1"), "{c}");
    }

    #[test]
    fn disks_are_announced_in_order_with_the_root_disk() {
        let c = guest_cmdline(
            &config(vec![disk(false, true), disk(true, false)], DEFAULT_CMDLINE),
            false,
        );
        assert_eq!(
            c,
            "console=ttyS0 reboot=k panic=-1 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6 root=/dev/vdb rw VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"
        );
        let c = guest_cmdline(&config(vec![disk(true, true)], "console=ttyS0"), false);
        assert!(
            c.ends_with("root=/dev/vda ro VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"),
            "{c}"
        );
    }

    #[test]
    fn the_users_root_and_mode_win() {
        let c = guest_cmdline(
            &config(vec![disk(true, false)], "root=/dev/sda1 console=ttyS0"),
            false,
        );
        assert!(
            c.contains("root=/dev/sda1") && !c.contains("/dev/vda") && !c.contains(" rw"),
            "{c}"
        );
        let c = guest_cmdline(&config(vec![disk(true, false)], "ro"), false);
        assert_eq!(
            c,
            "ro virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"
        );
    }

    #[test]
    fn a_root_partition_is_named_by_its_uuid() {
        let mut d = disk(true, true);
        d.partuuid = Some("0eaa91a0-01".into());
        let c = guest_cmdline(&config(vec![d], "console=ttyS0"), false);
        assert!(c.contains("root=PARTUUID=0eaa91a0-01 ro"), "{c}");
    }

    #[test]
    fn init_is_told_the_boot_timer_port_unless_the_user_set_it() {
        let c = guest_cmdline(&config(vec![], "console=ttyS0"), false);
        assert_eq!(c, "console=ttyS0 VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444");
        let c = guest_cmdline(&config(vec![], "VMM_BOOT_TIMER=0x0"), false);
        assert_eq!(c, "VMM_BOOT_TIMER=0x0 VMM_EXIT_PORT=0x444");
    }

    #[test]
    fn emulated_host_parameters_come_after_the_devices() {
        let c = guest_cmdline(&config(vec![disk(true, false)], "console=ttyS0"), true);
        let dev = c.find("virtio_mmio.device").unwrap();
        let clear = c.find("clearcpuid=").unwrap();
        assert!(dev < clear, "{c}");
        assert!(c.contains("no_fpu_drop_fwait"), "{c}");
    }

    #[test]
    fn network_interfaces_follow_the_disks() {
        let mut c = config(vec![disk(true, false)], "console=ttyS0");
        c.nets = vec!["tap=tap0".parse().unwrap(), "tap=tap1".parse().unwrap()];
        let line = guest_cmdline(&c, false);
        assert_eq!(
            line,
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda rw \
             virtio_mmio.device=4K@0xd0001000:6 virtio_mmio.device=4K@0xd0002000:7 \
             VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"
        );
    }
}
