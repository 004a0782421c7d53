//! What the host offers: KVM itself, its limits, memory, and whether /dev/kvm
//! is an emulated KVM that needs the guest adapted.

use std::path::Path;

use kvm_ioctls::{Cap, Kvm};

type Result<T> = std::result::Result<T, HostError>;

/// The sysfs node of the pagetable-based KVM ("PVM") module. Where it is
/// loaded, guest kernel code is interpreted, not run on VT-x/AMD-V.
pub const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Whether /dev/kvm here is provided by kvm_pvm.
pub fn kvm_is_emulated() -> bool {
    Path::new(PVM_MODULE).exists()
}

/// Features the emulated KVM cannot run in guest kernel mode and cannot hide
/// from CPUID, so the guest is told to ignore them; and x2apic, which it runs
/// but slowly: every x2APIC access is an MSR access, interpreted far more
/// slowly than xAPIC MMIO (the default guest reaches init in 105 s with it,
/// 74 s without, on the development host).
/// Whether this host's CPU is QEMU's software emulator (TCG, as the nested
/// AMD-V test host runs): its CPUID brand string says "QEMU TCG CPU".
/// TCG's SVM differs from hardware in one way a restore meets: it keeps
/// the task register's cached type "available" (9) where hardware and
/// KVM have it "busy" (11), and refuses every I/O-bitmap check (ioperm)
/// with a busy one (see `snapshot::vcpu::restore`).
pub fn cpu_is_qemu_tcg() -> bool {
    let brand: Vec<u8> = (0x8000_0002u32..=0x8000_0004)
        .flat_map(|leaf| {
            let r = std::arch::x86_64::__cpuid(leaf);
            [r.eax, r.ebx, r.ecx, r.edx]
                .into_iter()
                .flat_map(u32::to_le_bytes)
        })
        .collect();
    String::from_utf8_lossy(&brand).contains("QEMU TCG CPU")
}

pub const EMULATED_HOST_CLEARCPUID: &str = "smap,smep,umip,pku,popcnt,xsave,cx16,fsgsbase,pcid,\
invpcid,rdpid,avx,avx2,avx512f,rdrand,rdseed,movbe,aes,pclmulqdq,sha_ni,clwb,clflushopt,sse4_1,\
sse4_2,gfni,vaes,vpclmulqdq,x2apic";

/// Parameters whose value is a comma-separated list: the VMM merges its
/// items into a list the user gave instead of leaving it out.
pub const LIST_PARAMS: &[&str] = &["clearcpuid"];

/// Parameters added to the guest command line on an emulated KVM: the CPUID
/// list above, no delay-loop calibration or timer checks (slow, busy CPL-0
/// work), `nopv` (the guest sees the host's own KVM signature through the
/// unmaskable CPUID, and its KVM paravirt features, kvm-clock and the PV
/// spinlock kick hypercall among them, stall there; `nopv` turns them all
/// off, so the guest runs as on bare metal), and the three opt-in switches of this project's guest kernel
/// patches (skip the INT3 self-test, the AMD FXSAVE-leak workaround and the
/// FWAIT in fpu__drop, all of which run instructions the emulator stops on). Unknown to other kernels, which
/// pass them to init harmlessly.
pub fn emulated_host_params() -> Vec<(&'static str, Option<&'static str>)> {
    vec![
        ("clearcpuid", Some(EMULATED_HOST_CLEARCPUID)),
        ("lpj", Some("5000000")),
        ("tsc", Some("reliable")),
        ("no_timer_check", None),
        ("nopv", None),
        ("no_int3_selftest", None),
        ("no_fxsave_leak_workaround", None),
        ("no_fpu_drop_fwait", None),
    ]
}

/// Opens /dev/kvm, turning the common failures into advice.
pub fn open_kvm() -> Result<Kvm> {
    let kvm = Kvm::new().map_err(|e| {
        let advice = match e.errno() {
            libc::ENOENT => "/dev/kvm does not exist: load the kvm module (kvm_intel or kvm_amd) and enable virtualization in the firmware",
            libc::EACCES | libc::EPERM => "permission denied on /dev/kvm: add your user to the 'kvm' group or run as root",
            _ => "cannot open /dev/kvm",
        };
        HostError::KvmUnusable(format!("{advice} ({e})"))
    })?;
    let version = kvm.get_api_version();
    if version != kvm_bindings::KVM_API_VERSION as i32 {
        return Err(HostError::KvmUnusable(format!(
            "KVM API version {version}, expected {}",
            kvm_bindings::KVM_API_VERSION
        )));
    }
    for (cap, name) in [
        (Cap::Irqchip, "IRQCHIP"),
        (Cap::UserMemory, "USER_MEMORY"),
        (Cap::Irqfd, "IRQFD"),
        (Cap::Ioeventfd, "IOEVENTFD"),
        (Cap::Pit2, "PIT2"),
        (Cap::SetTssAddr, "SET_TSS_ADDR"),
    ] {
        if !kvm.check_extension(cap) {
            return Err(HostError::KvmUnusable(format!(
                "KVM lacks the {name} capability"
            )));
        }
    }
    Ok(kvm)
}

/// What the host could not give.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// KVM cannot be used: /dev/kvm missing or not accessible, another
    /// API version, a capability missing.
    #[error("KVM is not usable: {0}")]
    KvmUnusable(String),
    /// getrandom failed.
    #[error("cannot get random bytes for the guest's RNG seed")]
    Random(#[source] std::io::Error),
    /// A front end's process-wide set-up failed (its signal handlers).
    #[error("{0}")]
    Other(String),
}

/// Fresh random bytes from the host's kernel, to seed the guest's RNG.
pub fn random_seed() -> Result<[u8; arch::boot::RNG_SEED_LEN]> {
    let mut seed = [0u8; arch::boot::RNG_SEED_LEN];
    let mut filled = 0;
    while filled < seed.len() {
        // SAFETY: the pointer and length describe the unfilled tail of
        // `seed`, which getrandom writes at most `len` bytes into.
        let n =
            unsafe { libc::getrandom(seed[filled..].as_mut_ptr().cast(), seed.len() - filled, 0) };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(HostError::Random(err));
        }
        filled += n as usize;
    }
    Ok(seed)
}

/// The most vCPUs KVM lets a VM have.
pub fn max_vcpus(kvm: &Kvm) -> u32 {
    kvm.get_max_vcpus() as u32
}

/// Memory the host can give a guest now, in MiB: available RAM plus free
/// swap, from /proc/meminfo. None where that file cannot be read.
pub fn available_mem_mib() -> Option<u64> {
    // One read with a buffer large enough for the whole file: the kernel
    // regenerates /proc/meminfo on every read(), so small reads cost.
    let mut buf = vec![0u8; 16 * 1024];
    let n = std::io::Read::read(&mut std::fs::File::open("/proc/meminfo").ok()?, &mut buf).ok()?;
    parse_meminfo_available(std::str::from_utf8(&buf[..n]).ok()?)
}

/// The number after `name` ("VmRSS:", "MemAvailable:") in a /proc text
/// of "Name: value [unit]" lines (status, meminfo).
pub fn proc_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find(|l| l.starts_with(name))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn parse_meminfo_available(text: &str) -> Option<u64> {
    let kib = proc_field(text, "MemAvailable:")? + proc_field(text, "SwapFree:").unwrap_or(0);
    Some(kib / 1024)
}

/// What the process holds now: open file descriptors, resident set and
/// peak resident set (KiB), from /proc/self. For soak runs and the log at
/// VM end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    /// Open file descriptors.
    pub fds: usize,
    /// Resident set now, KiB (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set, KiB (VmHWM).
    pub peak_rss_kib: u64,
}

/// The process's `Resources`, or None where /proc cannot be read.
pub fn resources() -> Option<Resources> {
    let fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    Some(Resources {
        // read_dir's own descriptor is counted while it is open.
        fds: fds.saturating_sub(1),
        rss_kib: proc_field(&status, "VmRSS:")?,
        peak_rss_kib: proc_field(&status, "VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_follow_open_files_and_memory() {
        // The other tests of this binary run in threads of this process and
        // open files too: a try counts when nobody else's fds changed
        // between the readings; one of twenty such tries must come out.
        let mut seen = Vec::new();
        for _ in 0..20 {
            let before = resources().unwrap();
            let files: Vec<_> = (0..5)
                .map(|_| std::fs::File::open("/proc/self/status").unwrap())
                .collect();
            let after = resources().unwrap();
            drop(files);
            let end = resources().unwrap();
            assert!(before.rss_kib > 0 && before.peak_rss_kib >= before.rss_kib);
            if after.fds == before.fds + 5 && end.fds == before.fds {
                return;
            }
            seen.push((before.fds, after.fds, end.fds));
        }
        panic!("open files not counted as opened and closed: {seen:?}");
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24000000 kB\nMemFree:  1 kB\nMemAvailable:   2097152 kB\nSwapFree:   1048576 kB\n";
        assert_eq!(parse_meminfo_available(text), Some(3072));
        assert_eq!(parse_meminfo_available("MemTotal: 5 kB\n"), None);
        assert!(available_mem_mib().unwrap() > 0);
    }

    #[test]
    fn random_seeds_differ() {
        let (a, b) = (random_seed().unwrap(), random_seed().unwrap());
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }

    #[test]
    fn emulated_host_params_include_the_clearcpuid_list() {
        let params = emulated_host_params();
        let clear = params
            .iter()
            .find(|p| p.0 == "clearcpuid")
            .unwrap()
            .1
            .unwrap();
        for feature in ["popcnt", "xsave", "cx16", "avx2", "sse4_2", "x2apic"] {
            assert!(clear.split(',').any(|f| f == feature), "{feature}");
        }
        assert!(params.iter().any(|p| p.0 == "lpj"));
    }
}
