//! VM configuration files in the layout of Firecracker's `--config-file`
//! (boot-source, machine-config, drives, network-interfaces), so that
//! Firecracker users can reuse theirs unchanged, plus this VMM's own
//! settings under the extra key "x-vmm".
//!
//! Every error names what is wrong by its path in the file
//! (`drives[1].is_read_only`), with the line and column where the JSON
//! parser knows them, and maps to the config-error exit code. Firecracker
//! sections this VMM does not implement are refused by name unless they are
//! null, never dropped silently.
//!
//! Paths in the file are used as given: a relative path is relative to the
//! working directory, as with Firecracker.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{
    self, BootProtocol, DeviceRule, DiskConfig, EmulatedHost, NetConfig, SerialOutput, VmConfig,
};
use crate::error::{Error, Result};

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
    /// This VMM's own settings.
    #[serde(rename = "x-vmm", default, skip_serializing_if = "Option::is_none")]
    pub vmm: Option<Extensions>,
    // Firecracker's sections that have no counterpart here: accepted only
    // absent or null (serde's flatten would lose deny_unknown_fields).
    #[serde(default, skip_serializing)]
    balloon: Option<serde_json::Value>,
    #[serde(rename = "cpu-config", default, skip_serializing)]
    cpu_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    logger: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    metrics: Option<serde_json::Value>,
    #[serde(rename = "mmds-config", default, skip_serializing)]
    mmds_config: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    vsock: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    entropy: Option<serde_json::Value>,
    #[serde(default, skip_serializing)]
    pmem: Option<serde_json::Value>,
    #[serde(rename = "memory-hotplug", default, skip_serializing)]
    memory_hotplug: Option<serde_json::Value>,
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
    /// The raw image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_on_host: Option<PathBuf>,
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

/// Values given on the command line, which win over the file's. A list
/// (disks, network interfaces) given on the command line replaces the
/// file's list.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// --kernel
    pub kernel: Option<PathBuf>,
    /// --initrd
    pub initrd: Option<PathBuf>,
    /// --cmdline
    pub cmdline: Option<String>,
    /// --memory, in MiB
    pub mem_mib: Option<u64>,
    /// --vcpus
    pub vcpus: Option<u32>,
    /// --smt
    pub smt: Option<bool>,
    /// --seccomp
    pub seccomp: Option<bool>,
    /// --serial
    pub serial: Option<SerialOutput>,
    /// --emulated-host
    pub emulated_host: Option<EmulatedHost>,
    /// --boot-protocol
    pub boot_protocol: Option<BootProtocol>,
    /// --disk, all of them
    pub disks: Option<Vec<DiskConfig>>,
    /// --net, all of them
    pub nets: Option<Vec<NetConfig>>,
    /// The command after `--`
    pub command: Option<Vec<std::ffi::OsString>>,
    /// --dhcp
    pub dhcp: Option<bool>,
    /// --metrics
    pub metrics: Option<PathBuf>,
}

/// The initrd of a VM booting the default kernel: the one given, else none
/// when a disk is the root (the default initramfs would run its own init
/// instead of the disk's), else the default guest's initramfs.
fn default_guest_initrd(
    given: Option<PathBuf>,
    root_disk: bool,
    default: PathBuf,
) -> Option<PathBuf> {
    match (given, root_disk) {
        (Some(given), _) => Some(given),
        (None, true) => None,
        (None, false) => Some(default),
    }
}

impl Overrides {
    /// The configuration from the command line alone: these values over
    /// the defaults, the default guest when no kernel is given.
    pub fn into_config(self) -> Result<VmConfig> {
        let (kernel, initrd) = match self.kernel.clone() {
            Some(k) => (k, self.initrd.clone()),
            None => {
                let (k, i) = config::default_guest()?;
                let root_disk = self.disks.iter().flatten().any(|d| d.root);
                (k, default_guest_initrd(self.initrd.clone(), root_disk, i))
            }
        };
        let base = VmConfig::with_defaults(kernel, initrd);
        self.apply(base)
    }

    /// `base` with these values put over it; disks and network interfaces
    /// given replace the base's, added by the rules
    /// (`VmConfig::set_devices`).
    pub fn apply(self, mut base: VmConfig) -> Result<VmConfig> {
        if let Some(k) = self.kernel {
            base.kernel = k;
        }
        if self.initrd.is_some() {
            base.initrd = self.initrd;
        }
        macro_rules! over {
            ($($field:ident => $target:ident),*) => {
                $(if let Some(v) = self.$field { base.$target = v; })*
            };
        }
        over!(cmdline => cmdline, mem_mib => mem_mib, vcpus => vcpus, smt => smt, seccomp => seccomp,
              serial => serial, emulated_host => emulated_host,
              boot_protocol => boot_protocol, dhcp => dhcp);
        if self.disks.is_some() || self.nets.is_some() {
            let disks = self
                .disks
                .unwrap_or_else(|| std::mem::take(&mut base.disks));
            let nets = self.nets.unwrap_or_else(|| std::mem::take(&mut base.nets));
            base.set_devices(disks, nets)?;
        }
        if self.command.is_some() {
            base.command = self.command;
        }
        if self.metrics.is_some() {
            base.metrics = self.metrics;
        }
        Ok(base)
    }
}

/// A config file error: where, and what is wrong.
fn error(file: &Path, at: impl Into<String>, reason: impl Into<String>) -> Error {
    Error::ConfigFile {
        file: file.to_path_buf(),
        at: at.into(),
        reason: reason.into(),
    }
}

/// Reads and resolves the config file at `path` with the command line's
/// `overrides`: the `VmConfig` to validate and build.
pub fn load(path: &Path, overrides: Overrides) -> Result<VmConfig> {
    let text = read_capped(path)?;
    let file = parse(path, &text)?;
    file.resolve(path, overrides)
}

/// The largest config file read (1 MiB): Firecracker's files are a few
/// hundred bytes, and `--config /dev/zero` must not read forever.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The text of the config file at `path`, which may be a pipe (`--config
/// <(...)`): at most `MAX_CONFIG_BYTES`, read as a stream.
fn read_capped(path: &Path) -> Result<String> {
    use std::io::Read;
    let file_err = |reason: String| Error::File {
        what: "config file",
        path: path.to_path_buf(),
        reason,
    };
    let f = std::fs::File::open(path).map_err(|e| file_err(e.to_string()))?;
    let mut bytes = Vec::new();
    f.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| file_err(e.to_string()))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(error(
            path,
            "file",
            format!("larger than {MAX_CONFIG_BYTES} bytes (1 MiB), the most a config file may be"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| error(path, "file", format!("not UTF-8 text: {e}")))
}

/// Parses the JSON text of `path` into its sections, or an error with the
/// line and column of bad JSON, or the path of a field that is unknown
/// (with the field it probably meant), missing or of the wrong type.
pub fn parse(path: &Path, text: &str) -> Result<ConfigFile> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.inner();
        let position = format!(" at line {} column {}", inner.line(), inner.column());
        let msg = inner.to_string();
        let msg = msg.strip_suffix(&position).unwrap_or(&msg).to_string();
        let line_col = format!("line {}, column {}", inner.line(), inner.column());
        if inner.is_syntax() || inner.is_eof() || inner.is_io() {
            return error(path, line_col, format!("invalid JSON: {msg}"));
        }
        if let Some((field, expected)) = unknown_field(&msg) {
            let at = if at == "." {
                field.clone()
            } else if at.ends_with(&field) {
                at
            } else {
                format!("{at}.{field}")
            };
            let hint = match closest(&field, &expected) {
                Some(m) => format!("did you mean {m}?"),
                None if expected.is_empty() => "no fields are allowed here".into(),
                None => format!("expected one of {}", expected.join(", ")),
            };
            return error(path, at, format!("unknown field ({line_col}); {hint}"));
        }
        let at = if at == "." {
            line_col.clone()
        } else {
            format!("{at} ({line_col})")
        };
        error(path, at, msg)
    })
}

/// The unknown field and the expected ones in serde's message
/// "unknown field `x`, expected one of `a`, `b`" (or "expected `a`", or
/// "there are no fields").
fn unknown_field(msg: &str) -> Option<(String, Vec<String>)> {
    let rest = msg.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let expected = rest
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect();
    Some((field.to_string(), expected))
}

/// The candidate closest to `name` if it is close enough to be a typo or
/// a shortening (vcpus for vcpu_count): by Jaro-Winkler similarity, which
/// weighs a common beginning.
fn closest(name: &str, candidates: &[String]) -> Option<String> {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c.clone())
}

/// Checks that `path`, given as field `at`, names a readable regular file.
fn check_file(file: &Path, at: &str, path: &Path) -> Result<()> {
    config::check_file("file", path).map_err(|e| match e {
        Error::File { reason, .. } | Error::Image { reason, .. } => {
            error(file, at, format!("'{}': {reason}", path.display()))
        }
        other => other,
    })
}

/// One of Firecracker's string enums that takes only `allowed` here.
fn check_choice(
    file: &Path,
    at: &str,
    value: &Option<String>,
    allowed: &[&str],
    why: &str,
) -> Result<()> {
    match value {
        Some(v) if !allowed.contains(&v.as_str()) => Err(error(
            file,
            at,
            format!(
                "'{v}' is not supported by this VMM ({why}); use {}",
                allowed.join(" or ")
            ),
        )),
        _ => Ok(()),
    }
}

impl ConfigFile {
    /// Checks every section (those not replaced by `overrides`) and turns
    /// the file into the `VmConfig` it describes, with `overrides` over it.
    pub fn resolve(self, file: &Path, overrides: Overrides) -> Result<VmConfig> {
        self.check_unsupported(file)?;
        let boot =
            match (self.boot_source, &overrides.kernel) {
                (Some(b), _) => b,
                (None, Some(k)) => BootSource {
                    kernel_image_path: k.clone(),
                    boot_args: None,
                    initrd_path: None,
                },
                (None, None) => return Err(error(
                    file,
                    "boot-source",
                    "missing: it names the kernel (kernel_image_path), unless --kernel is given",
                )),
            };
        if overrides.kernel.is_none() {
            check_file(
                file,
                "boot-source.kernel_image_path",
                &boot.kernel_image_path,
            )?;
        }
        if let (Some(initrd), None) = (&boot.initrd_path, &overrides.initrd) {
            check_file(file, "boot-source.initrd_path", initrd)?;
        }

        let (vcpus, mem_mib, smt) = match &self.machine_config {
            Some(m) => {
                Self::check_machine(file, m)?;
                (m.vcpu_count, m.mem_size_mib, m.smt)
            }
            None => (1, config::DEFAULT_MEM_MIB, false),
        };

        let disks = if overrides.disks.is_some() {
            Vec::new()
        } else {
            Self::disks(file, &self.drives)?
        };
        let nets = if overrides.nets.is_some() {
            Vec::new()
        } else {
            Self::nets(file, &self.network_interfaces)?
        };

        let ext = self.vmm.unwrap_or_default();
        fn parse_ext<T: std::str::FromStr<Err = String>>(
            file: &Path,
            key: &str,
            value: Option<String>,
        ) -> Result<Option<T>> {
            value
                .map(|v| {
                    v.parse()
                        .map_err(|e| error(file, format!("x-vmm.{key}"), format!("'{v}': {e}")))
                })
                .transpose()
        }
        let serial = parse_ext(file, "serial", ext.serial)?.unwrap_or_default();
        let emulated_host =
            parse_ext(file, "emulated_host", ext.emulated_host)?.unwrap_or_default();
        let boot_protocol =
            parse_ext(file, "boot_protocol", ext.boot_protocol)?.unwrap_or_default();

        let base = VmConfig {
            kernel: boot.kernel_image_path,
            initrd: boot.initrd_path,
            cmdline: boot
                .boot_args
                .unwrap_or_else(|| config::DEFAULT_CMDLINE.to_string()),
            mem_mib,
            vcpus,
            smt,
            seccomp: ext.seccomp.unwrap_or(true),
            serial,
            emulated_host,
            boot_protocol,
            disks: Vec::new(),
            nets: Vec::new(),
            command: None,
            shell: false,
            dhcp: false,
            metrics: None,
        };
        let mut base = base;
        for d in disks {
            base.add_disk(d)
                .map_err(|e| error(file, "drives", e.to_string()))?;
        }
        for n in nets {
            base.add_net(n)
                .map_err(|e| error(file, "network-interfaces", e.to_string()))?;
        }
        overrides.apply(base)
    }

    fn check_unsupported(&self, file: &Path) -> Result<()> {
        let u = self;
        for (name, value, what) in [
            ("balloon", &u.balloon, "the balloon device"),
            ("cpu-config", &u.cpu_config, "custom CPU templates"),
            (
                "logger",
                &u.logger,
                "Firecracker's logger; use --log-level and RUST_LOG",
            ),
            (
                "metrics",
                &u.metrics,
                "Firecracker's metrics file; device statistics are logged at VM end",
            ),
            (
                "mmds-config",
                &u.mmds_config,
                "the microVM metadata service",
            ),
            ("vsock", &u.vsock, "virtio-vsock"),
            (
                "entropy",
                &u.entropy,
                "virtio-rng; the guest gets an RNG seed at boot instead",
            ),
            ("pmem", &u.pmem, "virtio-pmem"),
            ("memory-hotplug", &u.memory_hotplug, "memory hotplug"),
        ] {
            if value.is_some() {
                return Err(error(
                    file,
                    name,
                    format!(
                        "not supported by this VMM ({what}); remove the section or set it to null"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_machine(file: &Path, m: &MachineConfig) -> Result<()> {
        let at = |f: &str| format!("machine-config.{f}");
        config::check_vcpus(m.vcpu_count, m.smt)
            .map_err(|e| error(file, at("vcpu_count"), format!("{}: {e}", m.vcpu_count)))?;
        config::check_mem(m.mem_size_mib)
            .map_err(|e| error(file, at("mem_size_mib"), format!("{}: {e}", m.mem_size_mib)))?;
        check_choice(
            file,
            &at("cpu_template"),
            &m.cpu_template,
            &["None"],
            "the guest sees the host's CPUID",
        )?;
        check_choice(
            file,
            &at("huge_pages"),
            &m.huge_pages,
            &["None"],
            "guest memory uses normal pages",
        )?;
        if m.track_dirty_pages {
            log::warn!(
                "{}: machine-config.track_dirty_pages has no effect here (no snapshots)",
                file.display()
            );
        }
        Ok(())
    }

    fn disks(file: &Path, drives: &[Drive]) -> Result<Vec<DiskConfig>> {
        let mut disks = Vec::with_capacity(drives.len());
        let mut root = None;
        // The rules over all disks, applied as the file lists them.
        let mut rules = VmConfig::with_defaults(PathBuf::new(), None);
        for (i, d) in drives.iter().enumerate() {
            let at = |f: &str| format!("drives[{i}].{f}");
            if d.drive_id.is_empty() {
                return Err(error(file, at("drive_id"), "must not be empty"));
            }
            if let Some(j) = drives[..i].iter().position(|o| o.drive_id == d.drive_id) {
                return Err(error(
                    file,
                    at("drive_id"),
                    format!("'{}' is also the id of drives[{j}]", d.drive_id),
                ));
            }
            if d.socket.is_some() {
                return Err(error(
                    file,
                    at("socket"),
                    "vhost-user drives are not supported by this VMM; set path_on_host",
                ));
            }
            if d.rate_limiter.is_some() {
                return Err(error(
                    file,
                    at("rate_limiter"),
                    "rate limiters are not supported by this VMM; remove it or set it to null",
                ));
            }
            check_choice(
                file,
                &at("cache_type"),
                &d.cache_type,
                &["Unsafe", "Writeback"],
                "a Firecracker cache type",
            )?;
            check_choice(
                file,
                &at("io_engine"),
                &d.io_engine,
                &["Sync", "Async"],
                "a Firecracker I/O engine",
            )?;
            let Some(path) = &d.path_on_host else {
                return Err(error(
                    file,
                    at("path_on_host"),
                    "missing: the drive's image file",
                ));
            };
            // A regular file or a block device, opened and sized with the
            // rest of the disks.
            let bad = |reason: String| {
                error(
                    file,
                    at("path_on_host"),
                    format!("'{}': {reason}", path.display()),
                )
            };
            let kind = std::fs::metadata(path)
                .map_err(|e| bad(e.to_string()))?
                .file_type();
            if kind.is_dir() {
                return Err(bad("is a directory".into()));
            }
            if !kind.is_file() && !std::os::unix::fs::FileTypeExt::is_block_device(&kind) {
                return Err(bad("is neither a regular file nor a block device".into()));
            }
            if d.is_root_device {
                root = Some(i);
            }
            if d.partuuid.is_some() && !d.is_root_device {
                return Err(error(
                    file,
                    at("partuuid"),
                    "only a root device's partition can be named (is_root_device is false)",
                ));
            }
            if let Some(uuid) = &d.partuuid {
                if uuid.is_empty() || !uuid.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    return Err(error(
                        file,
                        at("partuuid"),
                        format!("'{uuid}' is not a partition UUID"),
                    ));
                }
            }
            // The serial the guest reads: at most 20 bytes, as Firecracker.
            let id: String = d.drive_id.chars().filter(char::is_ascii).take(20).collect();
            let disk = DiskConfig {
                path: path.clone(),
                read_only: d.is_read_only.unwrap_or(false),
                id: (!id.is_empty()).then_some(id),
                root: d.is_root_device,
                partuuid: d.partuuid.clone(),
            };
            rules.add_disk(disk.clone()).map_err(|e| match e {
                DeviceRule::SecondRoot { first } => error(
                    file,
                    at("is_root_device"),
                    format!("drives[{first}] is the root device already; only one can be"),
                ),
                other => error(file, "drives", other.to_string()),
            })?;
            disks.push(disk);
        }
        // As with Firecracker, the root device comes first: /dev/vda.
        if let Some(r) = root {
            let disk = disks.remove(r);
            disks.insert(0, disk);
        }
        Ok(disks)
    }

    fn nets(file: &Path, ifaces: &[NetworkInterface]) -> Result<Vec<NetConfig>> {
        // The rules over all interfaces, applied as the file lists them.
        let mut rules = VmConfig::with_defaults(PathBuf::new(), None);
        for (i, n) in ifaces.iter().enumerate() {
            let at = |f: &str| format!("network-interfaces[{i}].{f}");
            if let Some(j) = ifaces[..i].iter().position(|o| o.iface_id == n.iface_id) {
                return Err(error(
                    file,
                    at("iface_id"),
                    format!("'{}' is also the id of network-interfaces[{j}]", n.iface_id),
                ));
            }
            devices::virtio::net::tap::check_name(&n.host_dev_name).map_err(|e| {
                error(
                    file,
                    at("host_dev_name"),
                    format!("'{}': {e}", n.host_dev_name),
                )
            })?;
            for (key, limiter) in [
                ("rx_rate_limiter", &n.rx_rate_limiter),
                ("tx_rate_limiter", &n.tx_rate_limiter),
            ] {
                if limiter.is_some() {
                    return Err(error(
                        file,
                        at(key),
                        "rate limiters are not supported by this VMM; remove it or set it to null",
                    ));
                }
            }
            let mac = n
                .guest_mac
                .as_deref()
                .map(str::parse::<config::MacAddr>)
                .transpose()
                .map_err(|e| error(file, at("guest_mac"), e))?;
            let net = NetConfig {
                tap: n.host_dev_name.clone(),
                mac,
            };
            rules.add_net(net).map_err(|e| match e {
                DeviceRule::SameTap { tap, first } => error(
                    file,
                    at("host_dev_name"),
                    format!("'{tap}' is also the TAP of network-interfaces[{first}]; each interface needs its own"),
                ),
                DeviceRule::SameMac { mac, first, .. } => error(
                    file,
                    at("guest_mac"),
                    format!("{mac} is also the MAC of network-interfaces[{first}]"),
                ),
                other => error(file, "network-interfaces", other.to_string()),
            })?;
        }
        Ok(rules.nets)
    }

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
                    rx_rate_limiter: None,
                    tx_rate_limiter: None,
                })
                .collect(),
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

/// A working config for the default guest built by guest-kernels/build.sh.
pub fn example() -> ConfigFile {
    let dir = config::default_guest_dir();
    let config = VmConfig::with_defaults(dir.join("vmlinux"), Some(dir.join("initramfs.cpio")));
    ConfigFile::from_config(&config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_disk_boots_the_default_kernel_without_its_initramfs() {
        let d = || PathBuf::from("/guest/initramfs.cpio");
        let given = PathBuf::from("/mine.cpio");
        assert_eq!(default_guest_initrd(None, false, d()), Some(d()));
        assert_eq!(default_guest_initrd(None, true, d()), None);
        assert_eq!(
            default_guest_initrd(Some(given.clone()), true, d()),
            Some(given.clone())
        );
        assert_eq!(
            default_guest_initrd(Some(given.clone()), false, d()),
            Some(given)
        );
    }

    /// A readable regular file to stand for kernels and disk images (only
    /// their existence is checked here).
    fn some_file() -> String {
        std::env::current_exe().unwrap().display().to_string()
    }

    fn load_str(text: &str, overrides: Overrides) -> Result<VmConfig> {
        let file = Path::new("test.json");
        parse(file, text)?.resolve(file, overrides)
    }

    /// The error for `text`: its location and reason.
    fn fails(text: &str) -> (String, String) {
        match load_str(text, Overrides::default()) {
            Err(Error::ConfigFile { at, reason, .. }) => (at, reason),
            other => panic!("expected a config file error for {text}, got {other:?}"),
        }
    }

    /// `boot-source` with an existing kernel, and `rest` after it.
    fn with_kernel(rest: &str) -> String {
        let k = some_file();
        format!(r#"{{"boot-source": {{"kernel_image_path": "{k}"}}{rest}}}"#)
    }

    /// Firecracker's documented full layout (tests/framework/vm_config.json
    /// in its repository), the paths replaced.
    fn firecracker_doc(kernel: &str, disk: &str) -> String {
        format!(
            r#"{{
  "boot-source": {{
    "kernel_image_path": "{kernel}",
    "boot_args": "console=ttyS0 reboot=k panic=1 pci=off",
    "initrd_path": null
  }},
  "drives": [
    {{
      "drive_id": "rootfs",
      "partuuid": null,
      "is_root_device": true,
      "cache_type": "Unsafe",
      "is_read_only": false,
      "path_on_host": "{disk}",
      "io_engine": "Sync",
      "rate_limiter": null,
      "socket": null
    }}
  ],
  "machine-config": {{
    "vcpu_count": 2,
    "mem_size_mib": 1024,
    "smt": false,
    "track_dirty_pages": false,
    "huge_pages": "None"
  }},
  "cpu-config": null,
  "balloon": null,
  "network-interfaces": [
    {{
      "iface_id": "eth0",
      "guest_mac": "AA:FC:00:00:00:01",
      "host_dev_name": "tap0"
    }}
  ],
  "vsock": null,
  "logger": null,
  "metrics": null,
  "mmds-config": null,
  "entropy": null
}}"#
        )
    }

    #[test]
    fn firecrackers_layout_resolves_to_the_vm_it_describes() {
        let f = some_file();
        let c = load_str(&firecracker_doc(&f, &f), Overrides::default()).unwrap();
        assert_eq!(c.kernel, PathBuf::from(&f));
        assert_eq!(c.initrd, None);
        assert_eq!(c.cmdline, "console=ttyS0 reboot=k panic=1 pci=off");
        assert_eq!((c.vcpus, c.mem_mib, c.smt), (2, 1024, false));
        assert_eq!(
            c.disks,
            vec![DiskConfig {
                path: f.clone().into(),
                read_only: false,
                id: Some("rootfs".into()),
                root: true,
                partuuid: None,
            }]
        );
        assert_eq!(c.nets.len(), 1);
        assert_eq!(c.nets[0].tap, "tap0");
        assert_eq!(c.nets[0].mac, Some([0xaa, 0xfc, 0, 0, 0, 1].into()));
        assert_eq!(c.serial, SerialOutput::Stdio);
        assert_eq!(c.emulated_host, EmulatedHost::Auto);
    }

    #[test]
    fn defaults_and_extensions() {
        let c = load_str(&with_kernel(""), Overrides::default()).unwrap();
        assert_eq!((c.vcpus, c.mem_mib), (1, config::DEFAULT_MEM_MIB));
        assert_eq!(c.cmdline, config::DEFAULT_CMDLINE);
        assert!(c.disks.is_empty() && c.nets.is_empty());
        let c = load_str(
            &with_kernel(
                r#", "x-vmm": {"serial": "file:/tmp/console.log", "emulated_host": "off", "boot_protocol": "pvh"}"#,
            ),
            Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.serial, SerialOutput::File("/tmp/console.log".into()));
        assert_eq!(c.emulated_host, EmulatedHost::Off);
        assert_eq!(c.boot_protocol, BootProtocol::Pvh);
    }

    #[test]
    fn the_root_device_comes_first_and_may_name_a_partition() {
        let f = some_file();
        let text = with_kernel(&format!(
            r#", "drives": [
                {{"drive_id": "data", "path_on_host": "{f}", "is_root_device": false, "is_read_only": true}},
                {{"drive_id": "a-drive-id-longer-than-20-bytes", "path_on_host": "{f}", "is_root_device": true, "partuuid": "0eaa91a0-01"}}
            ]"#
        ));
        let c = load_str(&text, Overrides::default()).unwrap();
        assert!(c.disks[0].root && !c.disks[1].root);
        assert_eq!(c.disks[0].partuuid.as_deref(), Some("0eaa91a0-01"));
        assert_eq!(c.disks[0].id.as_deref(), Some("a-drive-id-longer-th"));
        assert!(c.disks[1].read_only);
    }

    #[test]
    fn unknown_fields_are_named_by_path_with_the_likely_one() {
        let f = some_file();
        for (text, at, hint) in [
            (
                with_kernel(&format!(
                    r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true}},
                                    {{"drive_id": "b", "path_on_host": "{f}", "is_root_device": false, "is_readonly": true}}]"#
                )),
                "drives[1].is_readonly",
                "did you mean is_read_only?",
            ),
            (
                r#"{"boot_source": {}}"#.to_string(),
                "boot_source",
                "did you mean boot-source?",
            ),
            (
                with_kernel(r#", "machine-config": {"vcpus": 2, "mem_size_mib": 64}"#),
                "machine-config.vcpus",
                "did you mean vcpu_count?",
            ),
            (
                with_kernel(r#", "x-vmm": {"serail": "none"}"#),
                "x-vmm.serail",
                "did you mean serial?",
            ),
            (
                with_kernel(
                    r#", "network-interfaces": [{"iface_id": "e", "host_dev_name": "t", "queues": 4}]"#,
                ),
                "network-interfaces[0].queues",
                "expected one of iface_id, host_dev_name, guest_mac",
            ),
        ] {
            let (got_at, reason) = fails(&text);
            assert_eq!(got_at, at, "{reason}");
            assert!(reason.starts_with("unknown field (line "), "{reason}");
            assert!(reason.contains(hint), "{at}: {reason}");
        }
    }

    #[test]
    fn bad_json_is_reported_with_line_and_column() {
        let (at, reason) =
            fails("{\n  \"boot-source\": {\n    \"kernel_image_path\": \"x\",\n  }\n}");
        assert_eq!(at, "line 4, column 3");
        assert!(
            reason.starts_with("invalid JSON: trailing comma"),
            "{reason}"
        );
        let (at, reason) = fails("{\"drives\": [");
        assert_eq!(at, "line 1, column 12");
        assert!(reason.contains("EOF"), "{reason}");
        let (_, reason) = fails("");
        assert!(reason.starts_with("invalid JSON"), "{reason}");
    }

    #[test]
    fn wrong_types_and_missing_fields_name_the_field() {
        for (text, at, says) in [
            (
                with_kernel(r#", "machine-config": {"vcpu_count": "2", "mem_size_mib": 64}"#),
                "machine-config.vcpu_count (line 1,",
                "invalid type: string \"2\", expected u32",
            ),
            (
                with_kernel(r#", "machine-config": {"vcpu_count": -1, "mem_size_mib": 64}"#),
                "machine-config.vcpu_count (line 1,",
                "invalid value: integer `-1`",
            ),
            (
                with_kernel(r#", "machine-config": {"vcpu_count": 1}"#),
                "machine-config (line 1,",
                "missing field `mem_size_mib`",
            ),
            (
                with_kernel(
                    r#", "drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": "yes"}]"#,
                ),
                "drives[0].is_root_device (line 1,",
                "expected a boolean",
            ),
            (
                with_kernel(r#", "drives": {"drive_id": "a"}"#),
                "drives (line 1,",
                "expected a sequence",
            ),
            (
                r#""vm.json""#.to_string(),
                "line 1, column 9",
                "expected struct ConfigFile",
            ),
        ] {
            let (got_at, reason) = fails(&text);
            assert!(got_at.starts_with(at), "{got_at} for {text}");
            assert!(reason.contains(says), "{at}: {reason}");
        }
    }

    #[test]
    fn impossible_values_each_have_their_message() {
        let f = some_file();
        let drive = |id: &str, root: bool| {
            format!(r#"{{"drive_id": "{id}", "path_on_host": "{f}", "is_root_device": {root}}}"#)
        };
        let iface = |id: &str, tap: &str, mac: &str| {
            format!(r#"{{"iface_id": "{id}", "host_dev_name": "{tap}"{mac}}}"#)
        };
        for (text, at, says) in [
            (
                with_kernel(r#", "machine-config": {"vcpu_count": 0, "mem_size_mib": 64}"#),
                "machine-config.vcpu_count",
                "0: must be at least 1",
            ),
            (
                with_kernel(r#", "machine-config": {"vcpu_count": 255, "mem_size_mib": 64}"#),
                "machine-config.vcpu_count",
                "at most",
            ),
            (
                with_kernel(
                    r#", "machine-config": {"vcpu_count": 3, "mem_size_mib": 64, "smt": true}"#,
                ),
                "machine-config.vcpu_count",
                "1 or even",
            ),
            (
                with_kernel(r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 0}"#),
                "machine-config.mem_size_mib",
                "0: must be at least 1 MiB",
            ),
            (
                with_kernel(
                    r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}"#,
                ),
                "machine-config.cpu_template",
                "'T2' is not supported",
            ),
            (
                with_kernel(
                    r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}"#,
                ),
                "machine-config.huge_pages",
                "'2M' is not supported",
            ),
            (
                with_kernel(&format!(
                    r#", "drives": [{}, {}]"#,
                    drive("a", true),
                    drive("b", true)
                )),
                "drives[1].is_root_device",
                "drives[0] is the root device already",
            ),
            (
                with_kernel(&format!(
                    r#", "drives": [{}, {}]"#,
                    drive("a", false),
                    drive("a", false)
                )),
                "drives[1].drive_id",
                "'a' is also the id of drives[0]",
            ),
            (
                with_kernel(&format!(r#", "drives": [{}]"#, drive("", false))),
                "drives[0].drive_id",
                "must not be empty",
            ),
            (
                with_kernel(r#", "drives": [{"drive_id": "a", "is_root_device": false}]"#),
                "drives[0].path_on_host",
                "missing",
            ),
            (
                with_kernel(
                    r#", "drives": [{"drive_id": "a", "path_on_host": "/nonexistent.img", "is_root_device": false}]"#,
                ),
                "drives[0].path_on_host",
                "'/nonexistent.img': No such file",
            ),
            (
                with_kernel(
                    r#", "drives": [{"drive_id": "a", "path_on_host": "/", "is_root_device": false}]"#,
                ),
                "drives[0].path_on_host",
                "is a directory",
            ),
            (
                with_kernel(&format!(
                    r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": false, "partuuid": "0eaa91a0-01"}}]"#
                )),
                "drives[0].partuuid",
                "only a root device",
            ),
            (
                with_kernel(&format!(
                    r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true, "partuuid": "x y"}}]"#
                )),
                "drives[0].partuuid",
                "not a partition UUID",
            ),
            (
                with_kernel(&format!(
                    r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true, "cache_type": "None"}}]"#
                )),
                "drives[0].cache_type",
                "use Unsafe or Writeback",
            ),
            (
                with_kernel(&format!(
                    r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true, "rate_limiter": {{"bandwidth": {{"size": 1, "refill_time": 1}}}}}}]"#
                )),
                "drives[0].rate_limiter",
                "not supported",
            ),
            (
                with_kernel(
                    r#", "drives": [{"drive_id": "a", "socket": "/run/vhost.sock", "is_root_device": true}]"#,
                ),
                "drives[0].socket",
                "vhost-user",
            ),
            (
                with_kernel(&format!(
                    r#", "network-interfaces": [{}, {}]"#,
                    iface("a", "t0", r#", "guest_mac": "02:00:00:00:00:01""#),
                    iface("b", "t1", r#", "guest_mac": "02:00:00:00:00:01""#)
                )),
                "network-interfaces[1].guest_mac",
                "02:00:00:00:00:01 is also the MAC of network-interfaces[0]",
            ),
            (
                with_kernel(&format!(
                    r#", "network-interfaces": [{}, {}]"#,
                    iface("a", "t0", ""),
                    iface("a", "t1", "")
                )),
                "network-interfaces[1].iface_id",
                "also the id",
            ),
            (
                with_kernel(&format!(
                    r#", "network-interfaces": [{}, {}]"#,
                    iface("a", "t0", ""),
                    iface("b", "t0", "")
                )),
                "network-interfaces[1].host_dev_name",
                "each interface needs its own",
            ),
            (
                with_kernel(&format!(
                    r#", "network-interfaces": [{}]"#,
                    iface("a", "t0", r#", "guest_mac": "01:00:5e:00:00:01""#)
                )),
                "network-interfaces[0].guest_mac",
                "multicast",
            ),
            (
                with_kernel(&format!(
                    r#", "network-interfaces": [{}]"#,
                    iface("a", "t0", r#", "guest_mac": "AA:FC:00:00:01""#)
                )),
                "network-interfaces[0].guest_mac",
                "not a MAC address",
            ),
            (
                with_kernel(&format!(
                    r#", "network-interfaces": [{}]"#,
                    iface("a", "a-name-of-16-byt", "")
                )),
                "network-interfaces[0].host_dev_name",
                "at most 15",
            ),
            (
                with_kernel(
                    r#", "network-interfaces": [{"iface_id": "a", "host_dev_name": "t", "rx_rate_limiter": {}}]"#,
                ),
                "network-interfaces[0].rx_rate_limiter",
                "not supported",
            ),
            (
                r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#.to_string(),
                "boot-source.kernel_image_path",
                "No such file",
            ),
            (
                with_kernel("").replace("\"}}", "\", \"initrd_path\": \"/nonexistent/initrd\"}}"),
                "boot-source.initrd_path",
                "No such file",
            ),
            (
                r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#.to_string(),
                "boot-source",
                "missing",
            ),
            (
                with_kernel(r#", "x-vmm": {"serial": "tty"}"#),
                "x-vmm.serial",
                "'tty': expected stdio",
            ),
            (
                with_kernel(r#", "x-vmm": {"emulated_host": "maybe"}"#),
                "x-vmm.emulated_host",
                "expected auto, on or off",
            ),
        ] {
            let (got_at, reason) = fails(&text);
            assert_eq!(got_at, at, "{reason}\n{text}");
            assert!(reason.contains(says), "{at}: {reason}");
        }
    }

    #[test]
    fn firecracker_sections_not_implemented_are_refused_by_name_unless_null() {
        for section in [
            "balloon",
            "cpu-config",
            "logger",
            "metrics",
            "mmds-config",
            "vsock",
            "entropy",
            "pmem",
            "memory-hotplug",
        ] {
            let (at, reason) = fails(&with_kernel(&format!(r#", "{section}": {{"x": 1}}"#)));
            assert_eq!(at, section);
            assert!(reason.starts_with("not supported by this VMM"), "{reason}");
            load_str(
                &with_kernel(&format!(r#", "{section}": null"#)),
                Overrides::default(),
            )
            .unwrap();
        }
    }

    #[test]
    fn command_line_options_win_over_the_file() {
        let f = some_file();
        let text = firecracker_doc("/nonexistent/vmlinux", &f);
        let overrides = Overrides {
            kernel: Some(f.clone().into()),
            mem_mib: Some(256),
            vcpus: Some(1),
            cmdline: Some("console=ttyS0".into()),
            nets: Some(vec!["tap=other0".parse().unwrap()]),
            serial: Some(SerialOutput::None),
            ..Overrides::default()
        };
        let c = load_str(&text, overrides).unwrap();
        assert_eq!(
            c.kernel,
            PathBuf::from(&f),
            "the missing kernel was replaced"
        );
        assert_eq!((c.vcpus, c.mem_mib), (1, 256));
        assert_eq!(c.cmdline, "console=ttyS0");
        assert_eq!(c.serial, SerialOutput::None);
        assert_eq!(c.nets.len(), 1);
        assert_eq!(c.nets[0].tap, "other0");
        assert_eq!(c.disks.len(), 1, "the file's drives stay");
        // --disk replaces the file's drives, whose files then need not exist.
        let text = with_kernel(
            r#", "drives": [{"drive_id": "a", "path_on_host": "/nonexistent.img", "is_root_device": true}]"#,
        );
        let disk: DiskConfig = f.parse().unwrap();
        let c = load_str(
            &text,
            Overrides {
                disks: Some(vec![disk.clone()]),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.disks, vec![disk]);
    }

    #[test]
    fn the_printed_configuration_reads_back_the_same() {
        let f = some_file();
        let mut c = load_str(&firecracker_doc(&f, &f), Overrides::default()).unwrap();
        c.nets.push("tap=tap1".parse().unwrap());
        c.smt = true;
        let printed = ConfigFile::from_config(&c).to_json();
        let back = load_str(&printed, Overrides::default()).unwrap();
        // Generated MACs are written out, so they come back as given.
        let mut expected = c.clone();
        expected.nets[1].mac = Some(c.nets[1].mac_for(1));
        assert_eq!(back, expected, "{printed}");
    }

    #[test]
    fn dhcp_is_printed_as_the_inits_parameter() {
        let f = some_file();
        let mut c = load_str(&firecracker_doc(&f, &f), Overrides::default()).unwrap();
        c.dhcp = true;
        let back = load_str(&ConfigFile::from_config(&c).to_json(), Overrides::default()).unwrap();
        assert!(!back.dhcp);
        assert_eq!(back.cmdline, format!("{} VMM_DHCP=1", c.cmdline));
    }

    #[test]
    fn the_example_is_a_valid_file_for_the_default_guest() {
        let text = example().to_json();
        let parsed = parse(Path::new("example.json"), &text).unwrap();
        let boot = parsed.boot_source.unwrap();
        assert!(boot.kernel_image_path.ends_with("vmlinux"));
        assert!(boot.initrd_path.unwrap().ends_with("initramfs.cpio"));
        assert_eq!(boot.boot_args.as_deref(), Some(config::DEFAULT_CMDLINE));
    }

    #[test]
    fn serde_messages_for_unknown_fields_are_understood() {
        assert_eq!(
            unknown_field("unknown field `is_readonly`, expected one of `drive_id`, `partuuid`"),
            Some((
                "is_readonly".into(),
                vec!["drive_id".into(), "partuuid".into()]
            ))
        );
        assert_eq!(
            unknown_field("unknown field `x`, expected `y`"),
            Some(("x".into(), vec!["y".into()]))
        );
        assert_eq!(
            unknown_field("unknown field `x`, there are no fields"),
            Some(("x".into(), vec![]))
        );
        assert_eq!(unknown_field("missing field `x`"), None);
        let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            closest("vcpus", &c(&["vcpu_count", "smt"])),
            Some("vcpu_count".into())
        );
        assert_eq!(closest("zzz", &c(&["vcpu_count", "smt"])), None);
    }
}
