//! The file's sections as serde reads and writes them, in Firecracker's
//! names, and a `VmConfig` written back in this layout.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{SerialOutput, VmConfig};

/// The whole file.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The kernel, its command line and initrd.
    #[serde(
        rename = "boot-source",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub boot_source: Option<BootSource>,
    /// vCPUs and memory.
    #[serde(
        rename = "machine-config",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub machine_config: Option<MachineConfig>,
    /// Block devices.
    #[serde(default)]
    pub drives: Vec<Drive>,
    /// Network interfaces.
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
    /// The log: level, file, what each line shows (the front end applies
    /// it; `PUT /logger` in the API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// Where the VM's metrics document goes (`--metrics`; `PUT /metrics`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
    /// This VMM's own settings.
    #[serde(rename = "x-vmm", default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<Extensions>,
    // Firecracker's sections that have no counterpart here: accepted only
    // absent or null (serde's flatten would lose deny_unknown_fields).
    #[serde(default, skip_serializing)]
    pub(super) balloon: Option<serde_json::Value>,
    #[serde(rename = "cpu-config", default, skip_serializing)]
    pub(super) cpu_config: Option<serde_json::Value>,
    #[serde(rename = "mmds-config", default, skip_serializing)]
    pub(super) mmds_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub(super) vsock: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub(super) entropy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pub(super) pmem: Option<serde_json::Value>,
    #[serde(rename = "memory-hotplug", default, skip_serializing)]
    pub(super) memory_hotplug: Option<serde_json::Value>,
}

/// `logger`, as Firecracker's (`PUT /logger`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Logger {
    /// Error, Warning, Info, Debug, Trace or Off (any case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    /// A file or named pipe the log is appended to, instead of stderr.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<PathBuf>,
    /// Each line shows its level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_level: Option<bool>,
    /// Each line shows the source file and line it comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show_log_origin: Option<bool>,
    /// Only this module's lines (a path prefix such as `vmm::handle`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

/// `metrics`, as Firecracker's (`PUT /metrics`): this VMM writes its own
/// metrics document there (`vmm run --metrics`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// The file (or named pipe).
    pub metrics_path: PathBuf,
    /// Firecracker's per-line id: not supported unless false or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit_id: Option<bool>,
    /// Firecracker's per-line properties: not supported unless absent.
    #[serde(default, skip_serializing)]
    pub properties: Option<serde_json::Value>,
}

/// `boot-source`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// ELF vmlinux or bzImage.
    pub kernel_image_path: PathBuf,
    /// The guest command line; this VMM's default if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Initrd / initramfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

/// `machine-config`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    /// Number of vCPUs.
    pub vcpu_count: u32,
    /// Guest RAM in MiB.
    pub mem_size_mib: u64,
    /// Two threads per core.
    #[serde(default)]
    pub smt: bool,
    /// Firecracker's static CPU templates: only "None" here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Dirty page tracking (for Firecracker's snapshots): accepted, no
    /// effect here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub track_dirty_pages: bool,
    /// Huge pages for guest memory: only "None" here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

/// One of `drives`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    /// The drive's name; the guest reads its first 20 bytes as the disk's
    /// serial (VIRTIO_BLK_T_GET_ID), as with Firecracker.
    pub drive_id: String,
    /// The disk image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
    /// This VMM's extension: "raw" (the default) or "overlay" (the file is
    /// a copy-on-write overlay over another disk, docs/disks.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<DriveFormat>,
    /// The guest's root file system (root=/dev/vda, or root=PARTUUID=...).
    pub is_root_device: bool,
    /// Read-only for the guest (and opened read-only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_read_only: Option<bool>,
    /// The root partition's UUID, for a root disk with partitions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partuuid: Option<String>,
    /// "Unsafe" or "Writeback": both accepted; flushes always reach the
    /// host file here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_type: Option<String>,
    /// "Sync" or "Async": both accepted; requests are served synchronously.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io_engine: Option<String>,
    /// Not supported unless null.
    #[serde(default, skip_serializing)]
    pub rate_limiter: Option<serde_json::Value>,
    /// vhost-user: not supported unless null.
    #[serde(default, skip_serializing)]
    pub socket: Option<serde_json::Value>,
}

/// How a drive's file is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DriveFormat {
    /// The disk's bytes as they are.
    Raw,
    /// A copy-on-write overlay over another disk.
    Overlay,
}

impl From<DriveFormat> for crate::config::DiskFormat {
    fn from(f: DriveFormat) -> Self {
        match f {
            DriveFormat::Raw => crate::config::DiskFormat::Raw,
            DriveFormat::Overlay => crate::config::DiskFormat::Overlay,
        }
    }
}

/// One of `network-interfaces`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    /// The interface's name in the file.
    pub iface_id: String,
    /// The host TAP device.
    pub host_dev_name: String,
    /// The guest's MAC; generated from the TAP name if absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<String>,
    /// VIRTIO_NET_F_MTU: not supported unless null.
    #[serde(default, skip_serializing)]
    pub mtu: Option<serde_json::Value>,
    /// Not supported unless null.
    #[serde(default, skip_serializing)]
    pub rx_rate_limiter: Option<serde_json::Value>,
    /// Not supported unless null.
    #[serde(default, skip_serializing)]
    pub tx_rate_limiter: Option<serde_json::Value>,
}

/// `x-vmm`: what this VMM adds to Firecracker's layout. Each takes the same
/// values as the `vmm run` option of the same name.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Extensions {
    /// "stdio", "file:PATH" or "none" (--serial).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// "auto", "on" or "off" (--emulated-host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulated_host: Option<String>,
    /// "linux" or "pvh" (--boot-protocol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_protocol: Option<String>,
    /// false turns the seccomp filters off (--seccomp off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<bool>,
}

impl ConfigFile {
    /// `config` in this layout, every value resolved: what `vmm config
    /// check` prints. Paths are made absolute (against the working
    /// directory, without following links), drives are named by their
    /// serial or vdX, interfaces ethN, and generated MACs are written out.
    pub fn from_config(config: &VmConfig) -> ConfigFile {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let mut config = config.clone();
        config.kernel = abs(&config.kernel);
        config.initrd = config.initrd.as_deref().map(abs);
        for d in &mut config.disks {
            d.path = abs(&d.path);
        }
        if let SerialOutput::File(p) = &config.serial {
            config.serial = SerialOutput::File(abs(p));
        }
        // --dhcp has no field in the file: it is the init's parameter.
        if config.dhcp {
            crate::cmdline::add_param(&mut config.cmdline, crate::cmdline::DHCP_PARAM, Some("1"));
        }
        ConfigFile {
            boot_source: Some(BootSource {
                kernel_image_path: config.kernel.clone(),
                boot_args: Some(config.cmdline.clone()),
                initrd_path: config.initrd.clone(),
            }),
            machine_config: Some(MachineConfig {
                vcpu_count: config.vcpus,
                mem_size_mib: config.mem_mib,
                smt: config.smt,
                cpu_template: None,
                track_dirty_pages: false,
                huge_pages: None,
            }),
            drives: config
                .disks
                .iter()
                .enumerate()
                .map(|(i, d)| Drive {
                    drive_id: d
                        .id
                        .clone()
                        .unwrap_or_else(|| format!("vd{}", char::from(b'a' + i as u8))),
                    path_on_host: Some(d.path.clone()),
                    format: (d.format == crate::config::DiskFormat::Overlay)
                        .then_some(DriveFormat::Overlay),
                    is_root_device: d.root,
                    is_read_only: Some(d.read_only),
                    partuuid: d.partuuid.clone(),
                    cache_type: None,
                    io_engine: None,
                    rate_limiter: None,
                    socket: None,
                })
                .collect(),
            network_interfaces: config
                .nets
                .iter()
                .enumerate()
                .map(|(i, n)| NetworkInterface {
                    iface_id: format!("eth{i}"),
                    host_dev_name: n.tap.clone(),
                    guest_mac: Some(n.mac_for(i).to_string()),
                    mtu: None,
                    rx_rate_limiter: None,
                    tx_rate_limiter: None,
                })
                .collect(),
            metrics: config.metrics.as_ref().map(|p| Metrics {
                metrics_path: p.clone(),
                emit_id: None,
                properties: None,
            }),
            vmm: Some(Extensions {
                serial: Some(config.serial.to_string()),
                emulated_host: Some(config.emulated_host.to_string()),
                boot_protocol: Some(config.boot_protocol.to_string()),
                seccomp: (!config.seccomp).then_some(false),
            }),
            ..ConfigFile::default()
        }
    }

    /// As JSON, indented.
    pub fn to_json(&self) -> String {
        // Only strings, numbers, booleans and paths: cannot fail but for a
        // path that is not UTF-8, written lossily then.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}
