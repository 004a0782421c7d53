//! A parsed file checked section by section and turned into the
//! `VmConfig` it describes.

use std::path::{Path, PathBuf};

use super::{check_choice, check_file, error, ConfigFile, Drive, NetworkInterface, Overrides};
use super::{BootSource, MachineConfig};
use crate::config::ConfigError;
use crate::config::{self, DeviceRule, DiskConfig, NetConfig, VmConfig};

type Result<T> = std::result::Result<T, ConfigError>;

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

        // The file's disks and interfaces, added by the rules over all of
        // them (those the command line replaces are not looked at).
        let mut devices = VmConfig::with_defaults(PathBuf::new(), None);
        if overrides.disks.is_none() {
            Self::disks(file, &self.drives, &mut devices)?;
        }
        if overrides.nets.is_none() {
            Self::nets(file, &self.network_interfaces, &mut devices)?;
        }

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

        // The file's values over the defaults, as the command line's are.
        let base = VmConfig {
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
            disks: devices.disks,
            nets: devices.nets,
            metrics: self.metrics.map(|m| m.metrics_path),
            ..VmConfig::with_defaults(boot.kernel_image_path, boot.initrd_path)
        };
        overrides.apply(base)
    }

    fn check_unsupported(&self, file: &Path) -> Result<()> {
        let u = self;
        for (name, value, what) in [
            ("balloon", &u.balloon, "the balloon device"),
            ("cpu-config", &u.cpu_config, "custom CPU templates"),
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
            let value: &Option<serde_json::Value> = value;
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
        if let Some(m) = &u.metrics {
            if m.emit_id == Some(true) {
                return Err(error(
                    file,
                    "metrics.emit_id",
                    "not supported by this VMM (its metrics document is one JSON object, not \
                     lines); remove it or set it to false",
                ));
            }
            if m.properties.is_some() {
                return Err(error(
                    file,
                    "metrics.properties",
                    "not supported by this VMM; remove it",
                ));
            }
        }
        if let Some(l) = &u.logger {
            if let Some(level) = &l.level {
                crate::logging_level(level).map_err(|e| error(file, "logger.level", e))?;
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

    /// Checks `drives` and adds them to `devices` (which has none yet) in
    /// the file's order, by the rules, then puts the root device first.
    fn disks(file: &Path, drives: &[Drive], devices: &mut VmConfig) -> Result<()> {
        let mut root = None;
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
                format: d.format.map(Into::into).unwrap_or_default(),
            };
            devices.add_disk(disk).map_err(|e| match e {
                DeviceRule::SecondRoot { first } => error(
                    file,
                    at("is_root_device"),
                    format!("drives[{first}] is the root device already; only one can be"),
                ),
                other => error(file, "drives", other.to_string()),
            })?;
        }
        // As with Firecracker, the root device comes first: /dev/vda.
        if let Some(r) = root {
            devices.disks[..=r].rotate_right(1);
        }
        Ok(())
    }

    /// Checks `ifaces` and adds them to `devices` in the file's order, by
    /// the rules.
    fn nets(file: &Path, ifaces: &[NetworkInterface], devices: &mut VmConfig) -> Result<()> {
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
            if n.mtu.is_some() {
                return Err(error(
                    file,
                    at("mtu"),
                    "not supported by this VMM (the guest uses its default MTU); remove it or \
                     set it to null",
                ));
            }
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
            devices.add_net(net).map_err(|e| match e {
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
        Ok(())
    }
}
