//! Carries out the API's requests on the front end's thread: the
//! configuration gathered before `InstanceStart` (a `ConfigFile`, the same
//! type a config file is read into, checked by the same rules at each PUT),
//! then the running VM through its `VmHandle`.

use std::path::Path;
use std::time::Instant;

use vmm::config::VmConfig;
use vmm::config_file::{ConfigFile, Logger, MachineConfig, Overrides};
use vmm::{VmEnd, VmHandle, VmState, Vmm};

use crate::http::Response;
use crate::router::{
    ActionType, ApiRequest, BackendType, MachineConfigUpdate, SnapshotCreate, SnapshotLoad,
    SnapshotType, VmStateChange,
};

/// Firecracker's answer to a pre-boot request after the start.
pub const AFTER_START: &str =
    "The requested operation is not supported after starting the microVM.";
/// Firecracker's answer to a runtime request before the start.
pub const BEFORE_START: &str =
    "The requested operation is not supported before starting the microVM.";

/// What the front end does around the requests: its process-wide policy.
pub trait FrontEnd {
    /// Applies `PUT /logger`.
    fn logger(&mut self, logger: &Logger) -> Result<(), String>;
    /// The VM was started: the terminal's mode, the thread's filter.
    fn started(&mut self, handle: &VmHandle);
    /// The exit code each end of the VM becomes, for the metrics
    /// document (the front end's mapping); none by default.
    fn end_code(&self) -> Option<fn(&VmEnd) -> i32> {
        None
    }
}

/// A front end with no policy (tests).
pub struct NoPolicy;

impl FrontEnd for NoPolicy {
    fn logger(&mut self, _: &Logger) -> Result<(), String> {
        Ok(())
    }
    fn started(&mut self, _: &VmHandle) {}
}

struct Running {
    handle: VmHandle,
    config: VmConfig,
}

/// The API's state: the configuration, then the VM.
pub struct Controller {
    id: String,
    config: ConfigFile,
    /// Settings every VM of this front end gets over the configuration
    /// (`--no-seccomp`).
    overrides: Overrides,
    started_at: Instant,
    vm: Option<Running>,
    logger_set: bool,
    front_end: Box<dyn FrontEnd + Send>,
}

/// A configuration error as the API reports it: the field, then what is
/// wrong (the config file's message without the file's name).
fn fault(e: vmm::Error) -> Response {
    match e {
        vmm::Error::Config(vmm::config::ConfigError::File { at, reason, .. }) => {
            Response::fault(format!("{at}: {reason}"))
        }
        other => Response::fault(other.chain()),
    }
}

fn json(value: &impl serde::Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(s) => Response::ok(s),
        Err(e) => Response::fault_status(500, format!("cannot write the answer: {e}")),
    }
}

impl Controller {
    /// A controller waiting for its configuration; `started_at` is when the
    /// process started (the boot phases count from it).
    pub fn new(
        id: String,
        overrides: Overrides,
        started_at: Instant,
        front_end: Box<dyn FrontEnd + Send>,
    ) -> Controller {
        Controller {
            id,
            config: ConfigFile::default(),
            overrides,
            started_at,
            vm: None,
            logger_set: false,
            front_end,
        }
    }

    /// A controller for a VM already running (`vmm run --api-sock`,
    /// `firecracker --config-file`).
    pub fn running(
        id: String,
        config: VmConfig,
        handle: VmHandle,
        front_end: Box<dyn FrontEnd + Send>,
    ) -> Controller {
        Controller {
            id,
            config: ConfigFile::from_config(&config),
            overrides: Overrides::default(),
            started_at: Instant::now(),
            vm: Some(Running { handle, config }),
            logger_set: true,
            front_end,
        }
    }

    /// The running VM's handle, once started.
    pub fn handle(&self) -> Option<&VmHandle> {
        self.vm.as_ref().map(|r| &r.handle)
    }

    /// The VM's state as `GET /` reports it.
    pub fn state(&self) -> VmState {
        match &self.vm {
            None => VmState::NotStarted,
            Some(r) => r.handle.state(),
        }
    }

    /// Checks a candidate configuration by the config file's rules, with a
    /// stand-in kernel while there is no boot source yet.
    fn check(&self, candidate: &ConfigFile) -> Result<VmConfig, vmm::Error> {
        let mut overrides = self.overrides.clone();
        if candidate.boot_source.is_none() {
            overrides.kernel = Some("/".into());
        }
        Ok(candidate.clone().resolve(Path::new("request"), overrides)?)
    }

    /// Applies a pre-boot change if the configuration stays valid.
    fn change(&mut self, edit: impl FnOnce(&mut ConfigFile)) -> Response {
        if self.vm.is_some() {
            return Response::fault(AFTER_START);
        }
        let mut candidate = self.config.clone();
        edit(&mut candidate);
        match self.check(&candidate) {
            Ok(_) => {
                self.config = candidate;
                Response::no_content()
            }
            Err(e) => fault(e),
        }
    }

    fn machine_config(&self) -> MachineConfig {
        self.config.machine_config.clone().unwrap_or(MachineConfig {
            vcpu_count: 1,
            mem_size_mib: vmm::config::DEFAULT_MEM_MIB,
            smt: false,
            cpu_template: None,
            track_dirty_pages: false,
            huge_pages: None,
        })
    }

    /// Carries out `request`.
    pub fn handle_request(&mut self, request: ApiRequest) -> Response {
        use ApiRequest::*;
        match request {
            GetInstanceInfo => json(&serde_json::json!({
                "id": self.id,
                "state": self.state().firecracker_name(),
                "vmm_version": env!("CARGO_PKG_VERSION"),
                "app_name": "vmm",
            })),
            GetVersion => json(&serde_json::json!({
                "firecracker_version": env!("CARGO_PKG_VERSION"),
            })),
            GetVmConfig => match &self.vm {
                Some(r) => json(&ConfigFile::from_config(&r.config)),
                None => match self.config.boot_source {
                    Some(_) => match self.check(&self.config) {
                        Ok(c) => json(&ConfigFile::from_config(&c)),
                        Err(_) => json(&self.config),
                    },
                    None => json(&self.config),
                },
            },
            GetMachineConfig => json(&self.machine_config()),
            PutMachineConfig(m) => self.change(|c| c.machine_config = Some(m)),
            PatchMachineConfig(u) => {
                let m = patched(self.machine_config(), u);
                self.change(|c| c.machine_config = Some(m))
            }
            PutBootSource(b) => self.change(|c| c.boot_source = Some(b)),
            PutDrive(d) => {
                self.change(
                    |c| match c.drives.iter_mut().find(|o| o.drive_id == d.drive_id) {
                        Some(old) => *old = d,
                        None => c.drives.push(d),
                    },
                )
            }
            PutNetworkInterface(n) => self.change(|c| {
                match c
                    .network_interfaces
                    .iter_mut()
                    .find(|o| o.iface_id == n.iface_id)
                {
                    Some(old) => *old = n,
                    None => c.network_interfaces.push(n),
                }
            }),
            PutMetrics(m) => self.change(|c| c.metrics = Some(m)),
            PutLogger(l) => self.put_logger(l),
            Action(ActionType::InstanceStart) => self.start(),
            Action(ActionType::SendCtrlAltDel) => match &self.vm {
                None => Response::fault(BEFORE_START),
                Some(r) => match r.handle.send_ctrl_alt_del() {
                    Ok(()) => Response::no_content(),
                    Err(e) => Response::fault(format!("SendCtrlAltDel: {e}")),
                },
            },
            Action(ActionType::FlushMetrics) => match &self.vm {
                None => Response::fault(
                    "FlushMetrics: the metrics document is written once the microVM is started",
                ),
                Some(r) => {
                    if r.handle.flush_metrics() {
                        Response::no_content()
                    } else {
                        Response::fault("FlushMetrics: no metrics file is set (PUT /metrics)")
                    }
                }
            },
            PatchVm(change) => match &self.vm {
                None => Response::fault(BEFORE_START),
                Some(r) => {
                    let done = match change {
                        VmStateChange::Paused => r.handle.pause(),
                        VmStateChange::Resumed => r.handle.resume(),
                    };
                    match done {
                        Ok(()) => Response::no_content(),
                        Err(e) => Response::fault(format!("{change:?}: {e}")),
                    }
                }
            },
            PatchDrive(d) => self.patch_drive(d),
            SnapshotCreate(p) => self.snapshot_create(p),
            SnapshotLoad(p) => self.snapshot_load(p),
            PatchNetworkInterface(n) => {
                if self.vm.is_none() {
                    return Response::fault(BEFORE_START);
                }
                let known = self
                    .config
                    .network_interfaces
                    .iter()
                    .any(|o| o.iface_id == n.iface_id);
                if !known {
                    return Response::fault(format!(
                        "network-interfaces: no interface has the id '{}'",
                        n.iface_id
                    ));
                }
                Response::fault(
                    "network-interfaces: rate limiters are not supported by this VMM, and they \
                     are all PATCH changes",
                )
            }
        }
    }

    fn put_logger(&mut self, logger: Logger) -> Response {
        if self.vm.is_some() {
            return Response::fault(AFTER_START);
        }
        if self.logger_set {
            return Response::fault("logger: the logger can be configured only once");
        }
        if let Some(level) = &logger.level {
            if let Err(e) = vmm::logging_level(level) {
                return Response::fault(format!("logger.level: {e}"));
            }
        }
        match self.front_end.logger(&logger) {
            Ok(()) => {
                self.logger_set = true;
                self.config.logger = Some(logger);
                Response::no_content()
            }
            Err(e) => Response::fault(format!("logger: {e}")),
        }
    }

    fn start(&mut self) -> Response {
        if self.vm.is_some() {
            return Response::fault(AFTER_START);
        }
        if self.config.boot_source.is_none() {
            return Response::fault(
                "Cannot start microvm without kernel configuration: PUT /boot-source first.",
            );
        }
        let config = match self.check(&self.config) {
            Ok(c) => c,
            Err(e) => return fault(e),
        };
        let started = Vmm::build(&config, self.started_at)
            .and_then(|v| Ok(self.with_end_codes(v).start()?));
        match started {
            Ok(handle) => {
                self.front_end.started(&handle);
                self.vm = Some(Running { handle, config });
                Response::no_content()
            }
            Err(e) => {
                let r = fault(e);
                let msg = r.body.clone().unwrap_or_default();
                log::error!("InstanceStart failed: {msg}");
                r
            }
        }
    }

    fn patch_drive(&mut self, d: crate::router::PartialDrive) -> Response {
        let Some(r) = &self.vm else {
            return Response::fault(BEFORE_START);
        };
        if d.rate_limiter.is_some() {
            return Response::fault(
                "drives.rate_limiter: rate limiters are not supported by this VMM",
            );
        }
        // The disk's place: its serial is the drive id's first 20 ASCII
        // characters, as the config file's rules make it.
        let serial: String = d.drive_id.chars().filter(char::is_ascii).take(20).collect();
        let Some(index) = r
            .config
            .disks
            .iter()
            .position(|disk| disk.id.as_deref() == Some(serial.as_str()))
        else {
            return Response::fault(format!("drives: no drive has the id '{}'", d.drive_id));
        };
        let Some(path) = d.path_on_host else {
            // Nothing to change: Firecracker takes an empty update too.
            return Response::no_content();
        };
        match r.handle.update_disk(index, &path) {
            Ok(size) => {
                log::info!(
                    "drive {} now on {} ({size} bytes)",
                    d.drive_id,
                    path.display()
                );
                if let Some(r) = &mut self.vm {
                    r.config.disks[index].path = path;
                }
                Response::no_content()
            }
            Err(e) => Response::fault(format!("drives.path_on_host: {e}")),
        }
    }

    /// `vmm` with the front end's mapping of ends to exit codes, if any.
    fn with_end_codes(&self, vmm: Vmm) -> Vmm {
        match self.front_end.end_code() {
            Some(f) => vmm.end_codes(f),
            None => vmm,
        }
    }

    fn snapshot_create(&mut self, p: SnapshotCreate) -> Response {
        let Some(r) = &self.vm else {
            return Response::fault(BEFORE_START);
        };
        if p.snapshot_type == Some(SnapshotType::Diff) {
            return Response::fault(
                "snapshot/create: Diff snapshots are not supported by this VMM (it tracks no \
                 dirty pages); take a Full one",
            );
        }
        let state = r.handle.state();
        if state != VmState::Paused {
            return Response::fault(format!(
                "snapshot/create: the microVM must be paused first (PATCH /vm with \
                 {{\"state\": \"Paused\"}}); it is {}",
                state.firecracker_name()
            ));
        }
        match r.handle.snapshot(&p.snapshot_path, &p.mem_file_path) {
            Ok(_) => Response::no_content(),
            Err(e) => Response::fault(format!("snapshot/create: {}", vmm::Error::from(e).chain())),
        }
    }

    fn snapshot_load(&mut self, p: SnapshotLoad) -> Response {
        if self.vm.is_some() {
            return Response::fault(
                "snapshot/load: Loading a microVM snapshot not allowed after the microVM is \
                 started.",
            );
        }
        let c = &self.config;
        if c.boot_source.is_some()
            || c.machine_config.is_some()
            || !c.drives.is_empty()
            || !c.network_interfaces.is_empty()
        {
            return Response::fault(
                "snapshot/load: Loading a microVM snapshot not allowed after configuring \
                 boot-specific resources.",
            );
        }
        let mem_path =
            match (p.mem_file_path, p.mem_backend) {
                (Some(path), None) => path,
                (None, Some(b)) if b.backend_type == BackendType::File => b.backend_path,
                (None, Some(_)) => return Response::fault(
                    "snapshot/load: mem_backend.backend_type Uffd (a userfaultfd page server) is \
                     not supported by this VMM; use File",
                ),
                _ => {
                    return Response::fault(
                        "snapshot/load: exactly one of mem_file_path and mem_backend must be given",
                    )
                }
            };
        if p.track_dirty_pages == Some(true) || p.enable_diff_snapshots == Some(true) {
            return Response::fault(
                "snapshot/load: track_dirty_pages: dirty page tracking (for Diff snapshots) is \
                 not supported by this VMM",
            );
        }
        if p.vsock_override.as_ref().is_some_and(|v| !v.is_null()) {
            return Response::fault(
                "snapshot/load: vsock_override: virtio-vsock is not supported by this VMM",
            );
        }
        if p.clock_realtime == Some(true) {
            return Response::fault(
                "snapshot/load: clock_realtime: not supported by this VMM (kvmclock resumes \
                 from where it was)",
            );
        }
        if let Some(h) = p
            .huge_pages
            .as_deref()
            .filter(|h| !matches!(*h, "None" | "Snapshot"))
        {
            return Response::fault(format!(
                "snapshot/load: huge_pages {h}: only None is supported by this VMM"
            ));
        }
        let mut opts = vmm::snapshot::RestoreOptions::new(p.snapshot_path, mem_path);
        opts.seccomp = self.overrides.seccomp.unwrap_or(true);
        opts.serial = self.overrides.serial.clone().unwrap_or_default();
        opts.metrics = self.config.metrics.as_ref().map(|m| m.metrics_path.clone());
        opts.net_overrides = p
            .network_overrides
            .into_iter()
            .map(|o| (o.iface_id, o.host_dev_name))
            .collect();
        let restored = Vmm::restore(&opts, self.started_at)
            .and_then(|v| Ok(self.with_end_codes(v).start_paused()?));
        let handle = match restored {
            Ok(h) => h,
            Err(e) => {
                let r = fault(e);
                log::error!(
                    "snapshot/load failed: {}",
                    r.body.clone().unwrap_or_default()
                );
                return r;
            }
        };
        self.front_end.started(&handle);
        let config = handle.config().clone();
        self.config = ConfigFile::from_config(&config);
        let resume = p.resume_vm == Some(true);
        self.vm = Some(Running {
            handle: handle.clone(),
            config,
        });
        if resume {
            if let Err(e) = handle.resume() {
                return Response::fault(format!("snapshot/load: resuming: {e}"));
            }
        }
        Response::no_content()
    }

    /// Whether the VM ended (the front end then exits).
    pub fn ended(&self) -> Option<VmEnd> {
        self.vm.as_ref().and_then(|r| r.handle.try_end())
    }
}

/// `base` with the fields `u` gives.
fn patched(mut base: MachineConfig, u: MachineConfigUpdate) -> MachineConfig {
    if let Some(v) = u.vcpu_count {
        base.vcpu_count = v;
    }
    if let Some(v) = u.mem_size_mib {
        base.mem_size_mib = v;
    }
    if let Some(v) = u.smt {
        base.smt = v;
    }
    if u.cpu_template.is_some() {
        base.cpu_template = u.cpu_template;
    }
    if let Some(v) = u.track_dirty_pages {
        base.track_dirty_pages = v;
    }
    if u.huge_pages.is_some() {
        base.huge_pages = u.huge_pages;
    }
    base
}
