//! From a request's method, path and body to what it asks, with
//! Firecracker's rules: ids in the path of alphanumerics and `_` that
//! match the body's, bodies parsed by the config file's own serde types
//! (`vmm::config_file`), every error a 400 with a fault message, and every
//! endpoint of Firecracker's API this VMM lacks refused by name.

use serde::Deserialize;
use vmm::config_file::{self, BootSource, Drive, Logger, MachineConfig, Metrics, NetworkInterface};

use crate::http::{Method, Request};

/// `PATCH /machine-config`: any of machine-config's fields.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    /// Number of vCPUs.
    pub vcpu_count: Option<u32>,
    /// Guest RAM in MiB.
    pub mem_size_mib: Option<u64>,
    /// Two threads per core.
    pub smt: Option<bool>,
    /// Only "None" here.
    pub cpu_template: Option<String>,
    /// Accepted, no effect.
    pub track_dirty_pages: Option<bool>,
    /// Only "None" here.
    pub huge_pages: Option<String>,
}

/// `PATCH /drives/{id}`: a new backing file (rate limiters refused).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialDrive {
    /// The drive.
    pub drive_id: String,
    /// Its new file.
    pub path_on_host: Option<std::path::PathBuf>,
    /// Not supported unless null.
    pub rate_limiter: Option<serde_json::Value>,
}

/// `PATCH /network-interfaces/{id}`: rate limiters, which this VMM lacks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialNetworkInterface {
    /// The interface.
    pub iface_id: String,
    /// Not supported unless null.
    pub rx_rate_limiter: Option<serde_json::Value>,
    /// Not supported unless null.
    pub tx_rate_limiter: Option<serde_json::Value>,
}

/// `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ActionType {
    /// Boot the configured VM.
    InstanceStart,
    /// Ctrl-Alt-Del on the guest's keyboard.
    SendCtrlAltDel,
    /// Write the metrics now.
    FlushMetrics,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    action_type: ActionType,
}

/// `PATCH /vm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum VmStateChange {
    /// Pause every vCPU and device.
    Paused,
    /// Run again.
    Resumed,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmBody {
    state: VmStateChange,
}

/// `snapshot_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SnapshotType {
    /// Guest memory whole.
    Full,
    /// Only the pages written since the last snapshot (not supported).
    Diff,
}

/// `PUT /snapshot/create`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotCreate {
    /// Full (the default) or Diff.
    pub snapshot_type: Option<SnapshotType>,
    /// The state file to write.
    pub snapshot_path: std::path::PathBuf,
    /// The memory file to write.
    pub mem_file_path: std::path::PathBuf,
}

/// `mem_backend.backend_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum BackendType {
    /// A memory file, mapped private.
    File,
    /// A userfaultfd page server (not supported).
    Uffd,
}

/// `mem_backend`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemBackend {
    /// File or Uffd.
    pub backend_type: BackendType,
    /// The file (or the page server's socket).
    pub backend_path: std::path::PathBuf,
}

/// `network_overrides[]`: an interface put on another TAP.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkOverride {
    /// The interface.
    pub iface_id: String,
    /// Its TAP now.
    pub host_dev_name: String,
}

/// `PUT /snapshot/load`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotLoad {
    /// The state file.
    pub snapshot_path: std::path::PathBuf,
    /// The memory file (deprecated by Firecracker, still sent by clients).
    pub mem_file_path: Option<std::path::PathBuf>,
    /// The memory file, or a page server (refused).
    pub mem_backend: Option<MemBackend>,
    /// Deprecated form of `track_dirty_pages`.
    pub enable_diff_snapshots: Option<bool>,
    /// Dirty page tracking (only false).
    pub track_dirty_pages: Option<bool>,
    /// Resume the VM once loaded.
    pub resume_vm: Option<bool>,
    /// Interfaces put on other TAPs.
    #[serde(default)]
    pub network_overrides: Vec<NetworkOverride>,
    /// vsock's socket (no vsock here: only null).
    pub vsock_override: Option<serde_json::Value>,
    /// Advance kvmclock by the wall-clock time since the snapshot (only
    /// false).
    pub clock_realtime: Option<bool>,
    /// Only "None" or "Snapshot".
    pub huge_pages: Option<String>,
}

/// What a request asks the controller.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// `GET /`
    GetInstanceInfo,
    /// `GET /version`
    GetVersion,
    /// `GET /vm/config`
    GetVmConfig,
    /// `GET /machine-config`
    GetMachineConfig,
    /// `PUT /machine-config`
    PutMachineConfig(MachineConfig),
    /// `PATCH /machine-config`
    PatchMachineConfig(MachineConfigUpdate),
    /// `PUT /boot-source`
    PutBootSource(BootSource),
    /// `PUT /drives/{id}`
    PutDrive(Drive),
    /// `PATCH /drives/{id}`
    PatchDrive(PartialDrive),
    /// `PUT /network-interfaces/{id}`
    PutNetworkInterface(NetworkInterface),
    /// `PATCH /network-interfaces/{id}`
    PatchNetworkInterface(PartialNetworkInterface),
    /// `PUT /logger`
    PutLogger(Logger),
    /// `PUT /metrics`
    PutMetrics(Metrics),
    /// `PUT /actions`
    Action(ActionType),
    /// `PATCH /vm`
    PatchVm(VmStateChange),
    /// `PUT /snapshot/create`
    SnapshotCreate(SnapshotCreate),
    /// `PUT /snapshot/load`
    SnapshotLoad(SnapshotLoad),
}

/// Firecracker's endpoints this VMM does not have, and why.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("balloon", "the balloon device is not supported by this VMM"),
    ("vsock", "virtio-vsock is not supported by this VMM"),
    ("mmds", "the microVM metadata service (MMDS) is not supported by this VMM"),
    ("entropy", "virtio-rng is not supported by this VMM (the guest gets an RNG seed at boot)"),
    ("cpu-config", "custom CPU templates are not supported by this VMM"),
    ("serial", "configuring the serial device is not supported by this VMM (the console is the process's stdin and stdout)"),
    ("pmem", "virtio-pmem is not supported by this VMM"),
    ("hotplug", "memory hotplug is not supported by this VMM"),
    ("snapshot", "the snapshot endpoints are PUT /snapshot/create and PUT /snapshot/load"),
];

/// A request the router refuses: the 400's fault message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

fn invalid(req: &Request) -> Refused {
    let method = match &req.method {
        Ok(Method::Get) => "GET",
        Ok(Method::Put) => "PUT",
        Ok(Method::Patch) => "PATCH",
        Err(m) => m.as_str(),
    };
    Refused(format!(
        "Invalid request method and/or path: {method} {}.",
        req.path
    ))
}

/// A body parsed by the config file's rules; `section` names it in errors.
fn body<T: serde::de::DeserializeOwned>(req: &Request, section: &str) -> Result<T, Refused> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Err(Refused(format!(
            "the {section} request needs a JSON body; it had none"
        )));
    }
    let text = std::str::from_utf8(&req.body)
        .map_err(|e| Refused(format!("{section}: the body is not UTF-8 text: {e}")))?;
    config_file::parse_json(text).map_err(|e| Refused(format!("{section}: {}: {}", e.at, e.reason)))
}

/// Firecracker's rule for ids in paths: not empty, alphanumerics and `_`.
fn checked_id(id: &str) -> Result<&str, Refused> {
    if id.is_empty() {
        return Err(Refused("The ID cannot be empty.".into()));
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(Refused(
            "API Resource IDs can only contain alphanumeric characters and underscores.".into(),
        ));
    }
    Ok(id)
}

fn same_id(path_id: &str, body_id: &str) -> Result<(), Refused> {
    if path_id != body_id {
        return Err(Refused(format!(
            "The id from the path ('{path_id}') does not match the id from the body ('{body_id}')."
        )));
    }
    Ok(())
}

/// What `req` asks, or why it is refused.
pub fn route(req: &Request) -> Result<ApiRequest, Refused> {
    let method = match &req.method {
        Ok(m) => *m,
        Err(_) => return Err(invalid(req)),
    };
    let path = req.path.trim_end_matches('/');
    let parts: Vec<&str> = path.split('/').skip(1).collect();
    use ApiRequest::*;
    use Method::*;
    match (method, parts.as_slice()) {
        (Get, []) => Ok(GetInstanceInfo),
        (Get, ["version"]) => Ok(GetVersion),
        (Get, ["vm", "config"]) => Ok(GetVmConfig),
        (Get, ["machine-config"]) => Ok(GetMachineConfig),
        (Put, ["machine-config"]) => Ok(PutMachineConfig(body(req, "machine-config")?)),
        (Patch, ["machine-config"]) => Ok(PatchMachineConfig(body(req, "machine-config")?)),
        (Put, ["boot-source"]) => Ok(PutBootSource(body(req, "boot-source")?)),
        (Put, ["drives", id]) => {
            let id = checked_id(id)?;
            let d: Drive = body(req, "drives")?;
            same_id(id, &d.drive_id)?;
            Ok(PutDrive(d))
        }
        (Patch, ["drives", id]) => {
            let id = checked_id(id)?;
            let d: PartialDrive = body(req, "drives")?;
            same_id(id, &d.drive_id)?;
            Ok(PatchDrive(d))
        }
        (Put, ["network-interfaces", id]) => {
            let id = checked_id(id)?;
            let n: NetworkInterface = body(req, "network-interfaces")?;
            same_id(id, &n.iface_id)?;
            Ok(PutNetworkInterface(n))
        }
        (Patch, ["network-interfaces", id]) => {
            let id = checked_id(id)?;
            let n: PartialNetworkInterface = body(req, "network-interfaces")?;
            same_id(id, &n.iface_id)?;
            Ok(PatchNetworkInterface(n))
        }
        (Put, ["logger"]) => Ok(PutLogger(body(req, "logger")?)),
        (Put, ["metrics"]) => Ok(PutMetrics(body(req, "metrics")?)),
        (Put, ["actions"]) => {
            let a: ActionBody = body(req, "actions")?;
            Ok(Action(a.action_type))
        }
        (Patch, ["vm"]) => {
            let v: VmBody = body(req, "vm")?;
            Ok(PatchVm(v.state))
        }
        (Put, ["snapshot", "create"]) => Ok(SnapshotCreate(body(req, "snapshot/create")?)),
        (Put, ["snapshot", "load"]) => Ok(SnapshotLoad(body(req, "snapshot/load")?)),
        (_, [first, ..]) => match UNSUPPORTED.iter().find(|(name, _)| name == first) {
            Some((_, why)) => Err(Refused(format!(
                "{} {}: {why}.",
                match method {
                    Get => "GET",
                    Put => "PUT",
                    Patch => "PATCH",
                },
                req.path
            ))),
            None => Err(invalid(req)),
        },
        _ => Err(invalid(req)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, path: &str, body: &str) -> Request {
        Request {
            method: Ok(method),
            path: path.into(),
            body: body.as_bytes().to_vec(),
            close: false,
        }
    }

    fn refused(method: Method, path: &str, body: &str) -> String {
        route(&request(method, path, body)).unwrap_err().0
    }

    #[test]
    fn every_endpoint_routes() {
        use Method::*;
        let cases: Vec<(Method, &str, &str, ApiRequest)> = vec![
            (Get, "/", "", ApiRequest::GetInstanceInfo),
            (Get, "/version", "", ApiRequest::GetVersion),
            (Get, "/vm/config", "", ApiRequest::GetVmConfig),
            (Get, "/machine-config", "", ApiRequest::GetMachineConfig),
            (
                Patch,
                "/machine-config",
                r#"{"vcpu_count": 2}"#,
                ApiRequest::PatchMachineConfig(MachineConfigUpdate {
                    vcpu_count: Some(2),
                    ..Default::default()
                }),
            ),
            (
                Put,
                "/actions",
                r#"{"action_type": "InstanceStart"}"#,
                ApiRequest::Action(ActionType::InstanceStart),
            ),
            (
                Put,
                "/actions",
                r#"{"action_type": "SendCtrlAltDel"}"#,
                ApiRequest::Action(ActionType::SendCtrlAltDel),
            ),
            (
                Put,
                "/actions",
                r#"{"action_type": "FlushMetrics"}"#,
                ApiRequest::Action(ActionType::FlushMetrics),
            ),
            (
                Patch,
                "/vm",
                r#"{"state": "Paused"}"#,
                ApiRequest::PatchVm(VmStateChange::Paused),
            ),
            (
                Patch,
                "/vm",
                r#"{"state": "Resumed"}"#,
                ApiRequest::PatchVm(VmStateChange::Resumed),
            ),
        ];
        for (m, path, body, want) in cases {
            assert_eq!(route(&request(m, path, body)), Ok(want), "{path} {body}");
        }
        let put = |path: &str, body: &str| route(&request(Put, path, body)).unwrap();
        assert!(matches!(
            put("/machine-config", r#"{"vcpu_count": 2, "mem_size_mib": 256}"#),
            ApiRequest::PutMachineConfig(m) if m.vcpu_count == 2 && m.mem_size_mib == 256
        ));
        assert!(matches!(
            put("/boot-source", r#"{"kernel_image_path": "/k", "boot_args": "console=ttyS0"}"#),
            ApiRequest::PutBootSource(b) if b.kernel_image_path == std::path::Path::new("/k")
        ));
        assert!(matches!(
            put("/drives/rootfs", r#"{"drive_id": "rootfs", "path_on_host": "/d", "is_root_device": true, "is_read_only": false}"#),
            ApiRequest::PutDrive(d) if d.drive_id == "rootfs" && d.is_root_device
        ));
        assert!(matches!(
            put("/network-interfaces/eth0", r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"}"#),
            ApiRequest::PutNetworkInterface(n) if n.host_dev_name == "tap0"
        ));
        assert!(matches!(
            put("/logger", r#"{"log_path": "/tmp/log", "level": "Debug", "show_level": true}"#),
            ApiRequest::PutLogger(l) if l.level.as_deref() == Some("Debug")
        ));
        assert!(matches!(
            put("/metrics", r#"{"metrics_path": "/tmp/m"}"#),
            ApiRequest::PutMetrics(_)
        ));
        assert!(matches!(
            route(&request(Patch, "/drives/scratch", r#"{"drive_id": "scratch", "path_on_host": "/new"}"#)).unwrap(),
            ApiRequest::PatchDrive(d) if d.path_on_host.as_deref() == Some(std::path::Path::new("/new"))
        ));
        // A trailing slash and a query change nothing.
        assert_eq!(
            route(&request(Get, "/machine-config/", "")),
            Ok(ApiRequest::GetMachineConfig)
        );
    }

    #[test]
    fn every_error_class_is_refused_with_a_message() {
        use Method::*;
        for (m, path, body, says) in [
            (Put, "/machine-config", "{", "invalid JSON"),
            (
                Put,
                "/machine-config",
                r#"{"vcpu_count": 1, "mem_size_mib": 128, "vcpus": 2}"#,
                "unknown field",
            ),
            (
                Put,
                "/machine-config",
                r#"{"vcpu_count": "two", "mem_size_mib": 128}"#,
                "vcpu_count",
            ),
            (
                Put,
                "/machine-config",
                r#"{"vcpu_count": 2}"#,
                "missing field `mem_size_mib`",
            ),
            (Put, "/machine-config", "", "needs a JSON body"),
            (Put, "/boot-source", "  \n", "needs a JSON body"),
            (
                Put,
                "/actions",
                r#"{"action_type": "Reboot"}"#,
                "unknown variant `Reboot`",
            ),
            (
                Patch,
                "/vm",
                r#"{"state": "Stopped"}"#,
                "unknown variant `Stopped`",
            ),
            (
                Put,
                "/drives/a",
                r#"{"drive_id": "b", "is_root_device": false}"#,
                "does not match",
            ),
            (
                Put,
                "/drives/a-b",
                r#"{"drive_id": "a-b", "is_root_device": false}"#,
                "alphanumeric",
            ),
            (
                Put,
                "/nothing",
                "{}",
                "Invalid request method and/or path: PUT /nothing.",
            ),
            (
                Get,
                "/actions",
                "",
                "Invalid request method and/or path: GET /actions.",
            ),
            (
                Patch,
                "/boot-source",
                "{}",
                "Invalid request method and/or path",
            ),
            (
                Put,
                "/machine-config",
                r#"{"vcpu_count": 1, "mem_size_mib": 128} x"#,
                "trailing characters",
            ),
        ] {
            let msg = refused(m, path, body);
            assert!(msg.contains(says), "{path} {body}: {msg}");
        }
        let bad_method = Request {
            method: Err("DELETE".into()),
            path: "/drives/a".into(),
            body: vec![],
            close: false,
        };
        assert_eq!(
            route(&bad_method).unwrap_err().0,
            "Invalid request method and/or path: DELETE /drives/a."
        );
        let not_utf8 = Request {
            method: Ok(Put),
            path: "/boot-source".into(),
            body: vec![b'{', 0xff, b'}'],
            close: false,
        };
        assert!(route(&not_utf8).unwrap_err().0.contains("not UTF-8"));
    }

    #[test]
    fn endpoints_this_vmm_lacks_are_named() {
        use Method::*;
        for (m, path, says) in [
            (Put, "/balloon", "balloon"),
            (Get, "/balloon/statistics", "balloon"),
            (Patch, "/balloon/hinting/start", "balloon"),
            (Put, "/vsock", "vsock"),
            (Put, "/mmds", "MMDS"),
            (Get, "/mmds", "MMDS"),
            (Put, "/mmds/config", "MMDS"),
            (Put, "/entropy", "virtio-rng"),
            (Put, "/cpu-config", "CPU templates"),
            (Put, "/serial", "serial"),
            (Put, "/pmem/p0", "virtio-pmem"),
            (Put, "/hotplug/memory", "hotplug"),
            (Get, "/hotplug/memory", "hotplug"),
        ] {
            let msg = refused(m, path, "{}");
            assert!(
                msg.contains(says) && msg.contains("not supported"),
                "{path}: {msg}"
            );
        }
    }

    #[test]
    fn snapshot_bodies_route_as_firecrackers_clients_send_them() {
        use Method::*;
        let create = route(&request(
            Put,
            "/snapshot/create",
            r#"{"snapshot_type": "Full", "snapshot_path": "/s", "mem_file_path": "/m"}"#,
        ))
        .unwrap();
        assert_eq!(
            create,
            ApiRequest::SnapshotCreate(SnapshotCreate {
                snapshot_type: Some(SnapshotType::Full),
                snapshot_path: "/s".into(),
                mem_file_path: "/m".into(),
            })
        );
        // The deprecated mem_file_path and the mem_backend form both route.
        let old = route(&request(
            Put,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_file_path": "/m", "enable_diff_snapshots": false, "resume_vm": true}"#,
        ))
        .unwrap();
        assert!(matches!(old, ApiRequest::SnapshotLoad(l)
            if l.mem_file_path.as_deref() == Some(std::path::Path::new("/m")) && l.resume_vm == Some(true)));
        let new = route(&request(
            Put,
            "/snapshot/load",
            r#"{"snapshot_path": "/s", "mem_backend": {"backend_type": "Uffd", "backend_path": "/u"},
                "network_overrides": [{"iface_id": "eth0", "host_dev_name": "tap9"}]}"#,
        ))
        .unwrap();
        assert!(matches!(&new, ApiRequest::SnapshotLoad(l)
            if l.mem_backend.as_ref().map(|b| b.backend_type) == Some(BackendType::Uffd)
                && l.network_overrides[0].host_dev_name == "tap9"));
        // Missing and unknown fields name themselves.
        let msg = refused(Put, "/snapshot/create", r#"{"snapshot_path": "/s"}"#);
        assert!(msg.contains("mem_file_path"), "{msg}");
        let msg = refused(Put, "/snapshot/load", r#"{"snapshot_path": "/s", "x": 1}"#);
        assert!(msg.contains("x"), "{msg}");
        let msg = refused(Get, "/snapshot/create", "");
        assert!(msg.contains("PUT /snapshot/create"), "{msg}");
    }
}
