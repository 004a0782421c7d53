//! What the command line puts over a config file's values.

use std::path::PathBuf;

use crate::config::ConfigError;
use crate::config::{
    self, BootProtocol, DiskConfig, EmulatedHost, NetConfig, SerialOutput, VmConfig,
};

type Result<T> = std::result::Result<T, ConfigError>;

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
pub(super) fn default_guest_initrd(
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
