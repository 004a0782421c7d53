//! The one configuration struct a VM is built from, whatever front end
//! (command line, config file) produced it, and the parsing of its values.

use std::fmt;

use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use error::ConfigError;

mod error;

type Result<T> = std::result::Result<T, ConfigError>;

/// The guest command line when the user gives none. The VMM appends what it
/// manages itself (devices, host workarounds).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
/// Most virtio devices (disks and network interfaces together) a VM can
/// have: one virtio-mmio slot and IRQ each.
pub const MAX_VIRTIO_DEVICES: usize = 16;
/// Default guest RAM.
pub const DEFAULT_MEM_MIB: u64 = 128;
/// Where `guest-kernels/build.sh` leaves the default guest, below the cache
/// root (`$VMM_GUEST_CACHE`, or `~/.cache/vmm-guest`).
pub const DEFAULT_GUEST_LINK: &str = "current";

/// Where the guest's serial output goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SerialOutput {
    /// The VMM's stdout (and input from its stdin).
    #[default]
    Stdio,
    /// Appended to a file.
    File(PathBuf),
    /// Discarded.
    None,
}

impl FromStr for SerialOutput {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "stdio" => Ok(SerialOutput::Stdio),
            "none" => Ok(SerialOutput::None),
            _ => match s.strip_prefix("file:") {
                Some("") => Err("file: needs a path, e.g. file:/tmp/console.log".into()),
                Some(p) => Ok(SerialOutput::File(PathBuf::from(p))),
                None => Err("expected stdio, file:PATH or none".into()),
            },
        }
    }
}

impl fmt::Display for SerialOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialOutput::Stdio => write!(f, "stdio"),
            SerialOutput::File(p) => write!(f, "file:{}", p.display()),
            SerialOutput::None => write!(f, "none"),
        }
    }
}

/// Whether to adapt the guest to an emulated KVM (see `host`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EmulatedHost {
    /// Detect it.
    #[default]
    Auto,
    /// Adapt as if detected.
    On,
    /// Never adapt.
    Off,
}

impl FromStr for EmulatedHost {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err("expected auto, on or off".into()),
        }
    }
}

impl EmulatedHost {
    /// Whether the guest is adapted to an emulated KVM on this host.
    pub fn applies(self) -> bool {
        match self {
            Self::Auto => crate::host::kvm_is_emulated(),
            Self::On => true,
            Self::Off => false,
        }
    }
}

impl fmt::Display for EmulatedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::On => "on",
            Self::Off => "off",
        })
    }
}

/// How the kernel is entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BootProtocol {
    /// The Linux 64-bit boot protocol (vmlinux or bzImage).
    #[default]
    Linux,
    /// The PVH entry point of an ELF vmlinux built with CONFIG_PVH.
    Pvh,
}

impl FromStr for BootProtocol {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "linux" => Ok(Self::Linux),
            "pvh" => Ok(Self::Pvh),
            _ => Err("expected linux or pvh".into()),
        }
    }
}

impl fmt::Display for BootProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Linux => "linux",
            Self::Pvh => "pvh",
        })
    }
}

/// A block device backed by a raw file on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The disk image.
    pub path: PathBuf,
    /// How the image is laid out: raw, or a copy-on-write overlay over
    /// another disk (never guessed from the file's content).
    pub format: DiskFormat,
    /// Opened read-only and offered to the guest as read-only.
    pub read_only: bool,
    /// Serial the guest reads with VIRTIO_BLK_T_GET_ID (at most 20 bytes).
    pub id: Option<String>,
    /// The guest's root file system: adds root=/dev/vdX (or
    /// root=PARTUUID=...) to the command line.
    pub root: bool,
    /// For a root disk with partitions: the root partition's UUID, given to
    /// the guest as root=PARTUUID=... instead of the whole disk.
    pub partuuid: Option<String>,
}

impl DiskConfig {
    /// Makes a new copy-on-write overlay at `at` (which must not exist)
    /// over this disk, its path made absolute, and puts the disk on it.
    pub fn put_on_overlay(
        &mut self,
        at: &Path,
    ) -> std::result::Result<(), devices::virtio::block::disk::OverlayError> {
        let base = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        DiskOverlay::create(at, &base, self.format)?;
        self.path = at.to_path_buf();
        self.format = DiskFormat::Overlay;
        Ok(())
    }
}

impl FromStr for DiskConfig {
    type Err = String;
    /// `PATH[,ro][,id=NAME][,root][,overlay]`
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut parts = s.split(',');
        let path = parts
            .next()
            .filter(|p| !p.is_empty())
            .ok_or("expected PATH[,ro][,id=NAME][,root][,overlay]")?;
        let mut disk = DiskConfig {
            path: PathBuf::from(path),
            read_only: false,
            id: None,
            root: false,
            partuuid: None,
            format: Default::default(),
        };
        for opt in parts {
            match opt.split_once('=') {
                None if opt == "ro" => disk.read_only = true,
                None if opt == "root" => disk.root = true,
                None if opt == "overlay" => disk.format = DiskFormat::Overlay,
                Some(("id", v)) if !v.is_empty() && v.len() <= 20 && v.is_ascii() => {
                    disk.id = Some(v.to_string())
                }
                Some(("id", _)) => return Err("id= takes 1 to 20 ASCII characters".into()),
                _ => {
                    return Err(format!(
                        "unknown disk option '{opt}': expected ro, id=NAME, root or overlay"
                    ))
                }
            }
        }
        Ok(disk)
    }
}

pub use devices::virtio::block::{disk::Overlay as DiskOverlay, Disk, Format as DiskFormat};

/// A network interface backed by a TAP device on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The host TAP device's name.
    pub tap: String,
    /// The guest's MAC address; generated from the TAP name if not given.
    pub mac: Option<MacAddr>,
}

pub use devices::virtio::net::MacAddr;

mod rules;
pub use rules::DeviceRule;

impl FromStr for NetConfig {
    type Err = String;
    /// `tap=NAME[,mac=XX:XX:XX:XX:XX:XX]`
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let mut tap = None;
        let mut mac = None;
        for opt in s.split(',') {
            match opt.split_once('=') {
                Some(("tap", v)) => {
                    devices::virtio::net::tap::check_name(v)?;
                    tap = Some(v.to_string());
                }
                Some(("mac", v)) => mac = Some(v.parse()?),
                _ => {
                    return Err(format!(
                        "unknown network option '{opt}': expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX]"
                    ))
                }
            }
        }
        let tap = tap.ok_or("expected tap=NAME[,mac=XX:XX:XX:XX:XX:XX]")?;
        Ok(NetConfig { tap, mac })
    }
}

impl NetConfig {
    /// The MAC the guest gets for interface number `index`: the one given,
    /// else one derived from the TAP name and the index, the same on every
    /// run.
    pub fn mac_for(&self, index: usize) -> MacAddr {
        self.mac
            .unwrap_or_else(|| MacAddr::stable(&format!("{}#{index}", self.tap)))
    }
}

/// Opens a disk image as the VM will use it (read-only for a read-only
/// disk, else read-write): a regular file or block device whose size is a
/// whole, positive number of 512-byte sectors; an overlay with its bases,
/// each checked. Returns the disk and its size.
pub fn open_disk(disk: &DiskConfig) -> Result<(Disk, u64)> {
    let err = |reason: String| ConfigError::Missing {
        what: "disk",
        path: disk.path.clone(),
        reason,
    };
    let describe = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::IsADirectory => "is a directory".to_string(),
        _ => e.to_string(),
    };
    use std::os::unix::fs::FileTypeExt;
    // The kind first: opening a FIFO would wait for a writer.
    let kind = std::fs::metadata(&disk.path)
        .map_err(|e| err(describe(e)))?
        .file_type();
    if kind.is_dir() {
        return Err(err("is a directory".into()));
    }
    if !kind.is_file() && !kind.is_block_device() {
        return Err(ConfigError::Disk {
            path: disk.path.clone(),
            reason: "is neither a regular file nor a block device".into(),
        });
    }
    let opened = Disk::open(&disk.path, disk.format, disk.read_only).map_err(|e| match e {
        devices::virtio::block::disk::OverlayError::Io(e) => err(describe(e)),
        other => ConfigError::Disk {
            path: disk.path.clone(),
            reason: other.to_string(),
        },
    })?;
    let size = opened
        .len()
        .map_err(|e| err(format!("cannot size the disk: {e}")))?;
    if size == 0 || size % 512 != 0 {
        return Err(ConfigError::Disk {
            path: disk.path.clone(),
            reason: format!("its size, {size} bytes, is not a positive multiple of 512"),
        });
    }
    Ok((opened, size))
}

/// Everything needed to build and run one VM.
#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    /// Kernel image: ELF vmlinux or bzImage.
    pub kernel: PathBuf,
    /// Optional initrd / initramfs.
    pub initrd: Option<PathBuf>,
    /// Guest command line before the VMM's additions.
    pub cmdline: String,
    /// Guest RAM in MiB.
    pub mem_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Simultaneous multithreading: the vCPUs are presented as cores of two
    /// threads each.
    pub smt: bool,
    /// Seccomp filters on the VMM's threads (see `seccomp`).
    pub seccomp: bool,
    /// Serial console output.
    pub serial: SerialOutput,
    /// Emulated-host adaptation.
    pub emulated_host: EmulatedHost,
    /// Boot protocol.
    pub boot_protocol: BootProtocol,
    /// Block devices, in the order the guest sees them (vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// Network interfaces, in the order the guest sees them (eth0, ...).
    pub nets: Vec<NetConfig>,
    /// The command the guest's init runs (`vmm run -- COMMAND`), whose exit
    /// status becomes the VMM's; None: init does what it does by default.
    pub command: Option<Vec<std::ffi::OsString>>,
    /// Without a command, ask the guest's init for a shell on the console
    /// (`vmm run` with its stdin a terminal).
    pub shell: bool,
    /// Ask the guest's init to configure eth0 by DHCP (`--dhcp`) before
    /// the command or the shell.
    pub dhcp: bool,
    /// Without a command: the guest's init waits for one from the command
    /// device (`devices::command`) once it is ready, instead of ending or
    /// starting a shell: a template being made (`vmm template create`).
    pub template: bool,
    /// Where to write the VM's metrics document (`--metrics`), if anywhere.
    pub metrics: Option<PathBuf>,
}

impl VmConfig {
    /// A VM booting `kernel` (and `initrd`) with every other value at its
    /// default: the default command line, 128 MiB, 1 vCPU, serial on
    /// stdio, no devices, seccomp on.
    pub fn with_defaults(kernel: PathBuf, initrd: Option<PathBuf>) -> VmConfig {
        VmConfig {
            kernel,
            initrd,
            cmdline: DEFAULT_CMDLINE.to_string(),
            mem_mib: DEFAULT_MEM_MIB,
            vcpus: 1,
            smt: false,
            seccomp: true,
            serial: SerialOutput::Stdio,
            emulated_host: EmulatedHost::Auto,
            boot_protocol: BootProtocol::Linux,
            disks: Vec::new(),
            nets: Vec::new(),
            command: None,
            shell: false,
            dhcp: false,
            template: false,
            metrics: None,
        }
    }
}

/// Parses a memory size: a number of MiB, or a number with a unit
/// (K, M, G, T, optionally followed by "iB" or "B"; binary multiples).
/// Returns the size in MiB; sizes that are not whole MiB are rejected.
pub fn parse_mem_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "expected a size such as 512, 512M or 2G".to_string())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let bytes_per_unit: u64 = match unit {
        "" | "M" => 1 << 20,
        "K" => 1 << 10,
        "G" => 1 << 30,
        "T" => 1 << 40,
        _ => return Err(format!("unknown unit '{unit}': use K, M, G or T")),
    };
    let bytes = n
        .checked_mul(bytes_per_unit)
        .ok_or_else(|| "size too large".to_string())?;
    if bytes % (1 << 20) != 0 {
        return Err("must be a whole number of MiB".into());
    }
    Ok(bytes >> 20)
}

/// Where the default guest lives: `$VMM_GUEST_DIR`, else the `current`
/// link in the guest cache.
pub fn default_guest_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("VMM_GUEST_DIR") {
        return PathBuf::from(dir);
    }
    let root = std::env::var_os("VMM_GUEST_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/vmm-guest")
        });
    root.join(DEFAULT_GUEST_LINK)
}

/// The default guest's kernel and initramfs, or a clear error saying how to
/// build them.
pub fn default_guest() -> Result<(PathBuf, PathBuf)> {
    let dir = default_guest_dir();
    let kernel = dir.join("vmlinux");
    let initrd = dir.join("initramfs.cpio");
    if !kernel.is_file() || !initrd.is_file() {
        return Err(ConfigError::Missing {
            what: "default guest",
            path: dir,
            reason: "not built yet: run guest-kernels/build.sh (or pass --kernel)".into(),
        });
    }
    Ok((kernel, initrd))
}

/// Checks that `path` names a readable regular file.
pub fn check_file(what: &'static str, path: &Path) -> Result<()> {
    let err = |reason: String| ConfigError::Missing {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("is a directory".into()));
    }
    let image = |reason: &str| ConfigError::NotAnImage {
        what,
        path: path.to_path_buf(),
        reason: reason.into(),
    };
    // Before opening it: opening a FIFO would wait for a writer.
    if !meta.is_file() {
        return Err(image(
            "is not a regular file (a FIFO, a device or a socket): give an image file",
        ));
    }
    if meta.len() == 0 {
        return Err(image("is empty"));
    }
    std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

/// Checks a guest RAM size in MiB (KVM and the host's memory are checked
/// when the VM is built).
pub fn check_mem(mib: u64) -> std::result::Result<(), String> {
    if mib == 0 {
        return Err("must be at least 1 MiB".into());
    }
    Ok(())
}

/// Checks a vCPU count, with two threads per core if `smt`.
pub fn check_vcpus(vcpus: u32, smt: bool) -> std::result::Result<(), String> {
    let max = u32::from(arch::mptable::MAX_CPUS);
    if vcpus == 0 {
        return Err("must be at least 1".into());
    }
    if vcpus > max {
        return Err(format!("at most {max} vCPUs are supported"));
    }
    if smt && vcpus > 1 && !vcpus.is_multiple_of(2) {
        return Err("with SMT, the vCPU count must be 1 or even (two threads per core)".into());
    }
    Ok(())
}

impl VmConfig {
    /// Checks the values that need no KVM: files exist, sizes and counts are
    /// in range. KVM- and host-dependent limits are checked when the VM is
    /// built.
    pub fn validate(&self) -> Result<()> {
        self.check().map(drop)
    }

    /// `validate`, returning each disk opened as the VM uses it, with its
    /// size: a VM's disks are opened once, here, and handed over.
    pub fn check(&self) -> Result<Vec<(Disk, u64)>> {
        check_mem(self.mem_mib).map_err(|e| ConfigError::value("memory", self.mem_mib, e))?;
        check_vcpus(self.vcpus, self.smt)
            .map_err(|e| ConfigError::value("vcpus", self.vcpus, e))?;
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        if self.dhcp && self.nets.is_empty() {
            return Err(ConfigError::value(
                "dhcp",
                "true",
                "there is no network interface for the guest to configure: add --net tap=NAME",
            ));
        }
        // Devices may have been set directly: the rules again, as they
        // would have been applied.
        VmConfig::with_defaults(PathBuf::new(), None)
            .set_devices(self.disks.clone(), self.nets.clone())?;
        let disks = self
            .disks
            .iter()
            .map(open_disk)
            .collect::<Result<Vec<_>>>()?;
        if let SerialOutput::File(p) = &self.serial {
            if p.is_dir() {
                return Err(ConfigError::value(
                    "serial",
                    self.serial.to_string(),
                    "is a directory",
                ));
            }
        }
        Ok(disks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem_size("512"), Ok(512));
        assert_eq!(parse_mem_size("512M"), Ok(512));
        assert_eq!(parse_mem_size("512MiB"), Ok(512));
        assert_eq!(parse_mem_size("2G"), Ok(2048));
        assert_eq!(parse_mem_size("2gb"), Ok(2048));
        assert_eq!(parse_mem_size("1T"), Ok(1 << 20));
        assert_eq!(parse_mem_size("2048K"), Ok(2));
        assert_eq!(parse_mem_size("0"), Ok(0)); // rejected by validate()
        assert!(parse_mem_size("1000K").is_err());
        assert!(parse_mem_size("12X").is_err());
        assert!(parse_mem_size("").is_err());
        assert!(parse_mem_size("-5").is_err());
        assert!(parse_mem_size("99999999999999999999G").is_err());
    }

    #[test]
    fn serial_outputs() {
        assert_eq!("stdio".parse(), Ok(SerialOutput::Stdio));
        assert_eq!("none".parse(), Ok(SerialOutput::None));
        assert_eq!(
            "file:/tmp/x".parse(),
            Ok(SerialOutput::File("/tmp/x".into()))
        );
        assert!("file:".parse::<SerialOutput>().is_err());
        assert!("tty".parse::<SerialOutput>().is_err());
        assert_eq!(SerialOutput::File("/a".into()).to_string(), "file:/a");
    }

    fn config(kernel: &Path) -> VmConfig {
        VmConfig::with_defaults(kernel.to_path_buf(), None)
    }

    #[test]
    fn net_options_parse_and_macs_are_checked() {
        let n: NetConfig = "tap=tap0,mac=02:AB:cd:00:00:01".parse().unwrap();
        assert_eq!(n.tap, "tap0");
        let given = MacAddr::from([0x02, 0xab, 0xcd, 0, 0, 1]);
        assert_eq!(n.mac, Some(given));
        assert_eq!(n.mac_for(3), given);
        let plain: NetConfig = "tap=tap0".parse().unwrap();
        assert_eq!(plain.mac_for(0), plain.mac_for(0));
        assert_ne!(plain.mac_for(0), plain.mac_for(1));
        for (bad, says) in [
            ("", "unknown network option"),
            ("mac=02:00:00:00:00:01", "expected tap=NAME"),
            ("tap=", "empty"),
            ("tap=a234567890123456", "at most 15"),
            ("tap=tap0,mac=02:00:00:00:00", "not a MAC"),
            ("tap=tap0,mac=02:00:00:00:00:01:02", "not a MAC"),
            ("tap=tap0,mac=02-00-00-00-00-01", "not a MAC"),
            ("tap=tap0,mac=0g:00:00:00:00:01", "not a MAC"),
            ("tap=tap0,mac=2:0:0:0:0:1", "not a MAC"),
            ("tap=tap0,mac=01:00:5e:00:00:01", "multicast"),
            ("tap=tap0,mac=00:00:00:00:00:00", "not a usable"),
            ("tap=tap0,queues=2", "unknown network option 'queues=2'"),
        ] {
            let e = bad.parse::<NetConfig>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn device_rules_hold_as_devices_are_added() {
        let mut c = VmConfig::with_defaults(PathBuf::new(), None);
        let disk = |root| DiskConfig {
            path: "d".into(),
            read_only: false,
            id: None,
            root,
            partuuid: None,
            format: Default::default(),
        };
        c.add_disk(disk(false)).unwrap();
        c.add_disk(disk(true)).unwrap();
        assert_eq!(
            c.add_disk(disk(true)),
            Err(DeviceRule::SecondRoot { first: 1 })
        );
        c.add_net("tap=a".parse().unwrap()).unwrap();
        assert!(matches!(
            c.add_net("tap=a".parse().unwrap()),
            Err(DeviceRule::SameTap { first: 0, .. })
        ));
        for i in 0..13 {
            c.add_net(format!("tap=t{i}").parse().unwrap()).unwrap();
        }
        assert_eq!(c.disks.len() + c.nets.len(), MAX_VIRTIO_DEVICES);
        assert_eq!(c.add_disk(disk(false)), Err(DeviceRule::TooMany));
        // The command line's names for the same rules.
        let e = c.clone().set_devices(c.disks.clone(), {
            let mut n = c.nets.clone();
            n.push("tap=one-more".parse().unwrap());
            n
        });
        let e = e.unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Value { .. } | ConfigError::File { .. }
        ));
        assert_eq!(
            e.to_string(),
            "invalid disk/net '17': at most 16 disks and network interfaces together"
        );
    }

    #[test]
    fn duplicate_macs_and_taps_are_config_errors() {
        let exe = std::env::current_exe().unwrap();
        let mut c = config(&exe);
        c.nets = vec![
            "tap=a,mac=02:00:00:00:00:01".parse().unwrap(),
            "tap=b,mac=02:00:00:00:00:01".parse().unwrap(),
        ];
        let e = c.validate().unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Value { .. } | ConfigError::File { .. }
        ));
        assert!(e.to_string().contains("same MAC"), "{e}");
        // A given MAC equal to another interface's generated one.
        let generated = NetConfig {
            tap: "a".into(),
            mac: None,
        }
        .mac_for(0);
        c.nets = vec![
            "tap=a".parse().unwrap(),
            NetConfig {
                tap: "b".into(),
                mac: Some(generated),
            },
        ];
        assert!(c.validate().unwrap_err().to_string().contains("same MAC"));
        c.nets = vec!["tap=a".parse().unwrap(), "tap=a".parse().unwrap()];
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        c.nets = (0..17)
            .map(|i| format!("tap=t{i}").parse().unwrap())
            .collect();
        assert!(matches!(
            c.validate().unwrap_err(),
            ConfigError::Value { .. } | ConfigError::File { .. }
        ));
        c.nets = vec!["tap=a".parse().unwrap(), "tap=b".parse().unwrap()];
        c.validate().unwrap();
    }

    #[test]
    fn dhcp_needs_a_network_interface() {
        let exe = std::env::current_exe().unwrap();
        let mut c = config(&exe);
        c.dhcp = true;
        let e = c.validate().unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Value { .. } | ConfigError::File { .. }
        ));
        assert!(
            e.to_string().contains("dhcp") && e.to_string().contains("--net"),
            "{e}"
        );
        c.nets = vec!["tap=a".parse().unwrap()];
        c.validate().unwrap();
    }

    #[test]
    fn disk_options() {
        let d: DiskConfig = "/a.img,ro,id=data1,root".parse().unwrap();
        assert_eq!(
            d,
            DiskConfig {
                path: "/a.img".into(),
                read_only: true,
                id: Some("data1".into()),
                root: true,
                partuuid: None,
                format: Default::default(),
            }
        );
        let d: DiskConfig = "/b.img".parse().unwrap();
        assert!(!d.read_only && !d.root && d.id.is_none());
        assert!("".parse::<DiskConfig>().is_err());
        assert!("/a,rw"
            .parse::<DiskConfig>()
            .unwrap_err()
            .contains("unknown disk option 'rw'"));
        assert!("/a,id=".parse::<DiskConfig>().is_err());
        assert!("/a,id=123456789012345678901".parse::<DiskConfig>().is_err());
    }

    #[test]
    fn disk_checks() {
        let dir = std::env::temp_dir().join(format!("vmm-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.img");
        std::fs::write(&good, vec![0u8; 4096]).unwrap();
        let odd = dir.join("odd.img");
        std::fs::write(&odd, vec![0u8; 1000]).unwrap();
        let disk = |p: &Path| DiskConfig {
            path: p.into(),
            read_only: false,
            id: None,
            root: false,
            partuuid: None,
            format: Default::default(),
        };
        assert_eq!(open_disk(&disk(&good)).unwrap().1, 4096);
        let e = open_disk(&disk(&odd)).unwrap_err();
        assert!(
            e.to_string().contains("not a positive multiple of 512"),
            "{e}"
        );
        assert!(matches!(
            e,
            ConfigError::Disk { .. } | ConfigError::NotAnImage { .. }
        ));
        assert!(matches!(
            open_disk(&disk(&dir.join("missing"))).unwrap_err(),
            ConfigError::Missing { .. }
        ));
        assert!(matches!(
            open_disk(&DiskConfig {
                read_only: true,
                ..disk(&dir)
            })
            .unwrap_err(),
            ConfigError::Missing { .. }
        ));
        assert!(matches!(
            open_disk(&disk(&dir)).unwrap_err(),
            ConfigError::Missing { .. }
        ));
        let exe = std::env::current_exe().unwrap();
        let two_roots = VmConfig {
            disks: vec![
                DiskConfig {
                    root: true,
                    ..disk(&good)
                },
                DiskConfig {
                    root: true,
                    ..disk(&good)
                },
            ],
            ..config(&exe)
        };
        assert!(two_roots
            .validate()
            .unwrap_err()
            .to_string()
            .contains("only one disk"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn validation_errors_name_the_field() {
        let exe = std::env::current_exe().unwrap();
        assert!(config(&exe).validate().is_ok());
        let e = VmConfig {
            mem_mib: 0,
            ..config(&exe)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("memory"), "{e}");
        let e = VmConfig {
            vcpus: 0,
            ..config(&exe)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("vcpus"), "{e}");
        let e = VmConfig {
            vcpus: 255,
            ..config(&exe)
        }
        .validate()
        .unwrap_err();
        assert!(matches!(
            e,
            ConfigError::Value { .. } | ConfigError::File { .. }
        ));
        let smt = |vcpus| VmConfig {
            vcpus,
            smt: true,
            ..config(&exe)
        };
        let e = smt(3).validate().unwrap_err();
        assert!(e.to_string().contains("1 or even"), "{e}");
        assert!(smt(1).validate().is_ok() && smt(4).validate().is_ok());
    }

    #[test]
    fn missing_and_directory_files_are_file_errors() {
        let e = config(Path::new("/nonexistent/vmlinux"))
            .validate()
            .unwrap_err();
        assert!(matches!(e, ConfigError::Missing { .. }));
        assert!(e.to_string().contains("/nonexistent/vmlinux"), "{e}");
        let e = config(Path::new("/")).validate().unwrap_err();
        assert!(e.to_string().contains("is a directory"), "{e}");
        let exe = std::env::current_exe().unwrap();
        let e = VmConfig {
            initrd: Some("/nonexistent/initrd".into()),
            ..config(&exe)
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().starts_with("initrd"), "{e}");
    }
}
