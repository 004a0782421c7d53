//! A running VM as a handle that any thread may use: its state, pause and
//! resume, Ctrl-Alt-Del for the guest, stop, a disk's backing file
//! swapped, and the wait for its end.
//!
//! `Vmm::start` starts the vCPU threads and one event-loop thread for the
//! devices, each with its seccomp filter when the configuration asks for
//! them, and returns at once. The library installs no process-wide policy
//! besides the handler of the vCPU kick signal (SIGRTMIN, which only makes
//! `KVM_RUN` return): stop signals, the terminal's mode and the calling
//! thread's filter are the front end's.

use devices::bus::lock;
use std::fs::OpenOptions;
use std::os::unix::thread::JoinHandleExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use devices::i8042::I8042;
use devices::virtio::mmio::MmioTransport;
use event_manager::{EventManager, EventOps, Events, MutEventSubscriber, SubscriberOps};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::builder::Vmm;
use crate::control::{Control, ControlError, Request};
use crate::event_loop::{ExitHandler, StdinHandler, VirtioHandler};
use crate::metrics::MetricsFile;
use crate::vcpu::{VmEnd, VmExitState};

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Configured, not started (the API's state before InstanceStart).
    NotStarted,
    /// Its vCPUs run.
    Running,
    /// Every vCPU and device is parked.
    Paused,
    /// It ended; `wait` says why.
    Ended,
}

impl VmState {
    /// Firecracker's name for the state (`GET /`).
    pub fn firecracker_name(self) -> &'static str {
        match self {
            VmState::NotStarted => "Not started",
            VmState::Running => "Running",
            VmState::Paused => "Paused",
            VmState::Ended => "Ended",
        }
    }
}

/// A disk of the running VM.
pub(crate) struct DiskSlot {
    /// Its place among the VM's disks (the guest's vd<a + index>).
    pub index: usize,
    pub read_only: bool,
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// What a handle's request could not do.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// The VM ended before or while the request ran.
    #[error("the VM has ended")]
    Ended,
    /// The VM is not paused (resume) or not running (Ctrl-Alt-Del).
    #[error("the VM is {0}")]
    State(&'static str),
    /// No disk has this index.
    #[error("the VM has no disk {0}")]
    NoDisk(usize),
    /// The new backing file cannot be used.
    #[error("disk '{}': {reason}", path.display())]
    Disk {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The keyboard buffer is full: the guest has not read the last keys.
    #[error("the i8042's buffer is full: the guest has not read the keys sent before")]
    KeyboardFull,
    /// The VM's state could not be read or put back.
    #[error("cannot save or restore the VM's state")]
    Snapshot(#[from] crate::snapshot::StateError),
    /// The command device refused a command or a signal.
    #[error("the guest's command device: {0}")]
    Command(String),
    /// A template's guest did not get ready for its command.
    #[error("the template's guest: {0}")]
    Template(String),
    /// A snapshot cannot be restored.
    #[error(transparent)]
    Restore(Box<crate::snapshot::RestoreError>),
    /// A snapshot's file could not be written.
    #[error(transparent)]
    SnapshotWrite(#[from] crate::snapshot::create::WriteError),
    /// A thread could not be started.
    #[error("cannot start thread {0}: {1}")]
    Thread(String, String),
    /// The event loop could not be made.
    #[error("cannot create the event loop: {0}")]
    EventLoop(String),
}

impl From<ControlError> for HandleError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Ended => HandleError::Ended,
            ControlError::NotPaused => HandleError::State("not paused"),
        }
    }
}

/// Set when a template's init says it is ready for its command (the
/// command device); waited for by `VmHandle::wait_ready`.
#[derive(Default)]
pub(crate) struct Ready {
    flag: Mutex<bool>,
    cv: Condvar,
}

impl Ready {
    pub(crate) fn set(&self) {
        *lock(&self.flag) = true;
        self.cv.notify_all();
    }

    fn wake(&self) {
        self.cv.notify_all();
    }
}

pub(crate) struct Shared {
    pub(crate) control: Arc<Control>,
    pub(crate) exit: Arc<VmExitState>,
    pub(crate) i8042: Arc<Mutex<I8042>>,
    pub(crate) serial: Arc<Mutex<devices::serial::SerialDevice>>,
    pub(crate) legacy: crate::snapshot::Legacy,
    pub(crate) ready: Arc<Ready>,
    pub(crate) config: crate::config::VmConfig,
    disks: Vec<DiskSlot>,
    pub(crate) transports: Vec<Arc<Mutex<MmioTransport>>>,
    metrics: Mutex<Option<MetricsFile>>,
    // The VM before its memory (fields drop in this order).
    pub(crate) vm: Arc<kvm_ioctls::VmFd>,
    pub(crate) mem: GuestMemoryMmap,
    serial_stdio: bool,
    /// KVM itself (its MSR save list, for snapshots).
    pub(crate) kvm: kvm_ioctls::Kvm,
    vcpu_count: usize,
    /// Set once the VM is torn down: its end.
    ended: Mutex<Option<VmEnd>>,
    ended_cv: Condvar,
    /// Signalled once the VM is torn down, for front ends that poll.
    ended_evt: EventFd,
}

/// A started VM. Cloning the handle shares the VM; the VM ends when the
/// guest ends it or `stop` is called, not when handles are dropped.
#[derive(Clone)]
pub struct VmHandle {
    pub(crate) shared: Arc<Shared>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

/// Parks the event loop when a pause is asked for: the control's eventfd
/// wakes it, and it waits in its checkpoint until resumed or stopped.
struct ControlHandler {
    control: Arc<Control>,
}

impl MutEventSubscriber for ControlHandler {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::new(&self.control.wake_loop, EventSet::IN)) {
            log::error!("event loop: cannot watch the control eventfd: {e:?}");
        }
    }

    fn process(&mut self, _: Events, _: &mut EventOps) {
        let _ = self.control.wake_loop.read();
        // Leaving is seen by the loop through the recorded end.
        let _ = self.control.checkpoint();
    }
}

impl Vmm {
    /// Starts the VM paused: its threads park before a vCPU runs; returns
    /// once they have, with the handle (`resume` lets it run).
    pub fn start_paused(self) -> Result<VmHandle, HandleError> {
        self.control.pause_before_start();
        let handle = self.start()?;
        handle.pause()?;
        Ok(handle)
    }

    /// Starts the VM: its vCPU threads and its device event loop. Returns
    /// at once with the handle.
    pub fn start(self) -> Result<VmHandle, HandleError> {
        let Vmm {
            vcpus,
            virtio,
            disks,
            serial,
            serial_input_ready,
            reset_evt,
            i8042,
            legacy,
            ready,
            config,
            exit,
            control,
            buses,
            serial_stdio,
            seccomp,
            metrics,
            vm,
            kvm,
            mem,
        } = self;
        let transports: Vec<_> = virtio.iter().map(|s| s.transport.clone()).collect();
        let vm = Arc::new(vm);
        let vcpu_count = vcpus.len();
        let ended_evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| HandleError::EventLoop(e.to_string()))?;
        let shared = Arc::new(Shared {
            control: control.clone(),
            exit: exit.clone(),
            i8042,
            serial: serial.clone(),
            legacy,
            ready,
            config,
            disks,
            transports,
            metrics: Mutex::new(metrics),
            mem: mem.clone(),
            serial_stdio,
            vm: vm.clone(),
            kvm,
            vcpu_count,
            ended: Mutex::new(None),
            ended_cv: Condvar::new(),
            ended_evt,
        });

        let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| HandleError::EventLoop(format!("{e:?}")))?;
        em.add_subscriber(Arc::new(Mutex::new(ExitHandler {
            exit: exit.clone(),
            reset_evt,
        })));
        em.add_subscriber(Arc::new(Mutex::new(ControlHandler {
            control: control.clone(),
        })));
        for slot in virtio {
            em.add_subscriber(Arc::new(Mutex::new(VirtioHandler {
                slot,
                host_fds: Vec::new(),
            })));
        }
        if serial_stdio {
            em.add_subscriber(Arc::new(Mutex::new(StdinHandler::new(
                std::io::stdin(),
                serial,
                serial_input_ready,
            ))));
        }

        let mut threads: Vec<JoinHandle<()>> = Vec::with_capacity(vcpu_count);
        let mut failed = None;
        for vcpu in vcpus {
            let name = format!("vcpu{}", vcpu.id);
            let thread_exit = exit.clone();
            let thread_control = control.clone();
            let spawned = std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if seccomp {
                        if let Err(e) = crate::seccomp::install(crate::seccomp::Thread::Vcpu) {
                            thread_exit.finish(VmEnd::VmmError(e.to_string()));
                            thread_control.leave();
                            return;
                        }
                    }
                    vcpu.run()
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    failed = Some(HandleError::Thread(name, e.to_string()));
                    break;
                }
            }
        }
        control.set_vcpu_threads(threads.iter().map(|t| t.as_pthread_t()).collect());
        if let Some(e) = failed {
            // The vCPUs that started leave at once; those that did not and
            // the loop below, never started, leave here; then tear down.
            exit.finish(VmEnd::VmmError(e.to_string()));
            for _ in threads.len()..=vcpu_count {
                control.leave();
            }
            teardown(&shared, threads);
            return Err(e);
        }

        let loop_shared = shared.clone();
        let event_thread = std::thread::Builder::new()
            .name("vmm-events".into())
            .spawn(move || {
                // The VM, KVM and guest memory live until the vCPU threads
                // are joined, at the end of this thread.
                let _keep = (vm, mem, buses);
                if seccomp {
                    if let Err(e) = crate::seccomp::install(crate::seccomp::Thread::EventLoop) {
                        loop_shared.exit.finish(VmEnd::VmmError(e.to_string()));
                    }
                }
                while loop_shared.exit.end().is_none() {
                    if let Err(e) = em.run() {
                        log::warn!("event loop: {e:?}");
                    }
                }
                loop_shared.control.leave();
                teardown(&loop_shared, threads);
            });
        match event_thread {
            Ok(t) => Ok(VmHandle {
                shared,
                thread: Arc::new(Mutex::new(Some(t))),
            }),
            Err(e) => {
                let err = HandleError::Thread("vmm-events".into(), e.to_string());
                exit.finish(VmEnd::VmmError(err.to_string()));
                Err(err)
            }
        }
    }
}

/// Stops the vCPU threads, joins them, logs the devices' statistics,
/// writes the metrics and records the end.
fn teardown(shared: &Shared, threads: Vec<JoinHandle<()>>) {
    shared.control.stop();
    let all_left = shared.control.wait_all_left(Duration::from_secs(5));
    shared.control.forget_vcpu_threads();
    if all_left {
        for t in threads {
            let _ = t.join();
        }
    } else {
        log::error!("a vCPU thread did not stop within 5 s; leaving it");
    }
    let end = shared
        .exit
        .end()
        .unwrap_or_else(|| VmEnd::VmmError("the VM ended without a reason".into()));
    for t in &shared.transports {
        if let Some(line) = devices::bus::lock(t).device_stats() {
            log::info!("{line}");
        }
    }
    if let Some(m) = lock(&shared.metrics).as_mut() {
        m.write(&shared.transports, Some(&end));
    }
    *lock(&shared.ended) = Some(end);
    shared.ended_cv.notify_all();
    shared.ready.wake();
    if let Err(e) = shared.ended_evt.write(1) {
        log::error!("cannot signal the VM's end: {e}");
    }
}

impl VmHandle {
    /// Where the VM is now.
    pub fn state(&self) -> VmState {
        if self.shared.exit.end().is_some() {
            return VmState::Ended;
        }
        match self.shared.control.request() {
            Request::Run => VmState::Running,
            Request::Pause => VmState::Paused,
            Request::Stop => VmState::Ended,
        }
    }

    /// Pauses the VM: returns once every vCPU is out of KVM_RUN and
    /// parked, and the device event loop is parked (no device touches
    /// guest memory). Pausing a paused VM does nothing.
    pub fn pause(&self) -> Result<(), HandleError> {
        Ok(self.shared.control.pause()?)
    }

    /// Resumes a paused VM (a running one stays as it is).
    pub fn resume(&self) -> Result<(), HandleError> {
        Ok(self.shared.control.resume()?)
    }

    /// Presses Ctrl-Alt-Del on the guest's keyboard (the i8042), as
    /// Firecracker's SendCtrlAltDel: a Linux guest restarts, which ends
    /// the VM. Refused while paused (the guest could not read the keys).
    pub fn send_ctrl_alt_del(&self) -> Result<(), HandleError> {
        match self.state() {
            VmState::Ended => return Err(HandleError::Ended),
            VmState::Paused => return Err(HandleError::State("paused")),
            _ => {}
        }
        if devices::bus::lock(&self.shared.i8042).ctrl_alt_del() {
            Ok(())
        } else {
            Err(HandleError::KeyboardFull)
        }
    }

    /// Ends the VM now (`VmEnd::Stopped`); `wait` returns once it is torn
    /// down.
    pub fn stop(&self) {
        self.stop_with(VmEnd::Stopped);
    }

    /// Ends the VM now with `end` as its reason (a front end's stop
    /// signal, say), unless it has ended already.
    pub fn stop_with(&self, end: VmEnd) {
        self.shared.exit.finish(end);
    }

    /// Waits for the VM's end and its teardown; returns the end.
    pub fn wait(&self) -> VmEnd {
        let end = {
            let mut ended = lock(&self.shared.ended);
            while ended.is_none() {
                ended = self
                    .shared
                    .ended_cv
                    .wait(ended)
                    .unwrap_or_else(|p| p.into_inner());
            }
            ended.clone().unwrap_or(VmEnd::Stopped)
        };
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        end
    }

    /// The VM's end, once torn down, without waiting.
    pub fn try_end(&self) -> Option<VmEnd> {
        lock(&self.shared.ended).clone()
    }

    /// An eventfd signalled once the VM is torn down, for a front end's
    /// poll loop (then `wait` returns at once).
    pub fn ended_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.shared.ended_evt)
    }

    /// Replaces the backing file of disk `index` (the guest's vd<a +
    /// index>) with the file at `path`, opened as the disk was (read-only
    /// or read-write), and tells the guest its configuration changed: it
    /// reads the new capacity. The device is swapped while the VM is
    /// paused for the moment, so no request straddles the two files.
    pub fn update_disk(&self, index: usize, path: &Path) -> Result<u64, HandleError> {
        let disk = self
            .shared
            .disks
            .iter()
            .find(|d| d.index == index)
            .ok_or(HandleError::NoDisk(index))?;
        let err = |reason: String| HandleError::Disk {
            path: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!disk.read_only)
            .open(path)
            .map_err(|e| err(e.to_string()))?;
        let meta = file.metadata().map_err(|e| err(e.to_string()))?;
        if !meta.is_file() {
            return Err(err("not a regular file".into()));
        }
        let size = meta.len();
        let was_paused = self.state() == VmState::Paused;
        self.pause()?;
        let replaced = devices::bus::lock(&disk.transport).replace_backing(file.into(), size);
        if !was_paused {
            self.resume()?;
        }
        replaced.map_err(err)?;
        Ok(size)
    }

    /// Waits until a template's init says it is ready for its command
    /// (`VmConfig::template`), the VM ends, or `timeout` passes. Returns
    /// whether init is ready.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let mut ready = lock(&self.shared.ready.flag);
        while !*ready && !self.ending() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                break;
            }
            ready = self
                .shared
                .ready
                .cv
                .wait_timeout(ready, left.min(Duration::from_millis(200)))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        *ready
    }

    /// The VM's configuration.
    pub fn config(&self) -> &crate::config::VmConfig {
        &self.shared.config
    }

    /// Reads the paused VM's KVM state: every vCPU's (each read on its own
    /// thread, where it is parked, after KVM finished the I/O instruction
    /// it last exited for) and the VM's. The devices' state is not in it
    /// (`snapshot` writes everything).
    pub fn save_state(&self) -> Result<crate::snapshot::Snapshot, HandleError> {
        use crate::control::VcpuWork;
        use crate::snapshot::vcpu;
        let msrs = vcpu::msr_list(&self.shared.kvm)?;
        let (tx, rx) = std::sync::mpsc::channel();
        let work: Vec<VcpuWork> = (0..self.shared.vcpu_count)
            .map(|id| {
                let tx = tx.clone();
                let msrs = msrs.clone();
                Box::new(move |fd: &mut kvm_ioctls::VcpuFd| {
                    let _ = tx.send((id, vcpu::save(fd, id as u8, &msrs)));
                }) as VcpuWork
            })
            .collect();
        self.shared.control.on_parked_vcpus(work)?;
        drop(tx);
        let mut saved: Vec<_> = rx.iter().collect();
        saved.sort_by_key(|(id, _)| *id);
        let vcpus = saved
            .into_iter()
            .map(|(_, s)| s)
            .collect::<Result<Vec<_>, _>>()?;
        let vm = crate::snapshot::vm::save(&self.shared.vm)?;
        Ok(crate::snapshot::Snapshot {
            vcpus,
            vm,
            devices: Default::default(),
        })
    }

    /// Writes the metrics file now (`--metrics`), if the VM has one.
    /// Returns whether it has.
    pub fn flush_metrics(&self) -> bool {
        match lock(&self.shared.metrics).as_mut() {
            Some(m) => {
                m.write(&self.shared.transports, self.shared.exit.end().as_ref());
                true
            }
            None => false,
        }
    }

    /// The guest's memory (for tests and, later, snapshots). Read it only
    /// while the VM is paused to see a consistent picture.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.shared.mem
    }

    /// Whether the guest's serial console is the process's stdin and
    /// stdout.
    pub fn serial_on_stdio(&self) -> bool {
        self.shared.serial_stdio
    }

    /// Whether this handle's VM has recorded its end (it may still be
    /// tearing down).
    pub fn ending(&self) -> bool {
        self.shared.exit.end().is_some()
    }
}

impl std::fmt::Debug for VmHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmHandle")
            .field("state", &self.state())
            .finish()
    }
}
