//! The one configuration struct a VM is built from, whatever front end
//! (command line, config file) produced it, and the parsing of its values.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

/// The guest command line when the user gives none. The VMM appends what it
/// manages itself (devices, host workarounds).
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
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
    /// Serial console output.
    pub serial: SerialOutput,
    /// Emulated-host adaptation.
    pub emulated_host: EmulatedHost,
    /// Boot protocol.
    pub boot_protocol: BootProtocol,
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
        return Err(Error::File {
            what: "default guest",
            path: dir,
            reason: "not built yet: run guest-kernels/build.sh (or pass --kernel)".into(),
        });
    }
    Ok((kernel, initrd))
}

/// Checks that `path` names a readable regular file.
pub fn check_file(what: &'static str, path: &Path) -> Result<()> {
    let err = |reason: String| Error::File {
        what,
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.is_dir() {
        return Err(err("is a directory".into()));
    }
    std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    Ok(())
}

impl VmConfig {
    /// Checks the values that need no KVM: files exist, sizes and counts are
    /// in range. KVM- and host-dependent limits are checked when the VM is
    /// built.
    pub fn validate(&self) -> Result<()> {
        if self.mem_mib == 0 {
            return Err(Error::config("memory", "0", "must be at least 1 MiB"));
        }
        if self.vcpus == 0 {
            return Err(Error::config("vcpus", "0", "must be at least 1"));
        }
        if self.vcpus > u32::from(arch::mptable::MAX_CPUS) {
            return Err(Error::config(
                "vcpus",
                self.vcpus,
                format!("at most {} vCPUs are supported", arch::mptable::MAX_CPUS),
            ));
        }
        check_file("kernel", &self.kernel)?;
        if let Some(initrd) = &self.initrd {
            check_file("initrd", initrd)?;
        }
        if let SerialOutput::File(p) = &self.serial {
            if p.is_dir() {
                return Err(Error::config(
                    "serial",
                    self.serial.to_string(),
                    "is a directory",
                ));
            }
        }
        Ok(())
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
        VmConfig {
            kernel: kernel.to_path_buf(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            mem_mib: 128,
            vcpus: 1,
            serial: SerialOutput::Stdio,
            emulated_host: EmulatedHost::Auto,
            boot_protocol: BootProtocol::Linux,
        }
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
        assert_eq!(e.exit_code(), crate::error::exit_code::CONFIG);
    }

    #[test]
    fn missing_and_directory_files_are_file_errors() {
        let e = config(Path::new("/nonexistent/vmlinux"))
            .validate()
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit_code::FILE);
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
