//! `vmm bench`: how long a VM with its own kernel takes to come up against
//! a container sharing the host's kernel, measured the same way in one run,
//! and where the time goes.
//!
//! Four systems run the same command (`echo ready` unless told otherwise),
//! interleaved iteration by iteration: this VMM booting the default guest,
//! whose init runs it (`vmm run -- COMMAND`); QEMU microvm booting the same
//! kernel and initramfs with the same command line, so the same init runs
//! it; a runc container running it on a busybox root file system; the same
//! in fresh namespaces (unshare), the floor. Each start is timed from the
//! spawn of its process to the command's first output (for the VMs: the
//! first after init's greeting, which comes before the command runs), and
//! its peak RSS read from the kernel when it is reaped. On an emulated KVM,
//! where guest user space cannot make system calls, the VMs are ready at
//! the kernel's line before it starts init instead. This VMM's own phases
//! come from its metrics document (`vmm run --metrics`).

pub mod bundle;
mod launch;
pub mod report;
pub mod run;
pub mod stats;

/// A system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum System {
    /// This VMM.
    Vmm,
    /// This VMM with `--image`, its image cache empty: the image is
    /// unpacked and its disk made before the VM boots.
    VmmCold,
    /// This VMM restoring a template of the default guest (made once,
    /// before the timed runs) and handing it the command.
    VmmRestore,
    /// QEMU microvm.
    Qemu,
    /// A runc container.
    Runc,
    /// Bare namespaces (unshare).
    Unshare,
}

impl System {
    /// Every system, in the order they run and are shown.
    pub const ALL: [System; 6] = [
        System::VmmCold,
        System::Vmm,
        System::VmmRestore,
        System::Qemu,
        System::Runc,
        System::Unshare,
    ];

    /// The short name (CSV, --systems).
    pub fn name(self) -> &'static str {
        match self {
            System::Vmm => "vmm",
            System::VmmCold => "vmm-cold",
            System::VmmRestore => "vmm-restore",
            System::Qemu => "qemu",
            System::Runc => "runc",
            System::Unshare => "unshare",
        }
    }

    /// Whether it boots its own kernel.
    pub fn is_vm(self) -> bool {
        matches!(
            self,
            System::Vmm | System::VmmCold | System::VmmRestore | System::Qemu
        )
    }

    /// Whether it is this VMM (its phases come from its metrics).
    pub fn is_this_vmm(self) -> bool {
        matches!(self, System::Vmm | System::VmmCold | System::VmmRestore)
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<System> {
        System::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// One start of one system.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Which system (None only in `Default`).
    pub system: Option<System>,
    /// Iteration number, from 0.
    pub iteration: usize,
    /// Instance within a parallel batch, from 0.
    pub instance: usize,
    /// How many were started at once.
    pub parallel: usize,
    /// Spawn to the ready point, in ms; None if the start failed.
    pub ready_ms: Option<f64>,
    /// Ready at the command's output (not at a line of the kernel's).
    pub ready_at_command: bool,
    /// Spawn to the first byte on stdout, in ms.
    pub first_output_ms: Option<f64>,
    /// Spawn of the batch to its last instance ready, in ms.
    pub batch_ms: Option<f64>,
    /// Peak resident set of the process tree's largest process, KiB.
    pub peak_rss_kib: Option<u64>,
    /// This VMM's phases from its metrics document: (name, ms since its
    /// process start), in order.
    pub phases: Vec<(String, f64)>,
    /// Why the start failed.
    pub error: Option<String>,
}

impl Sample {
    /// The VMM phase `name`, if logged.
    pub fn phase(&self, name: &str) -> Option<f64> {
        self.phases.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }

    /// The boundaries of its stacked phases, in order: (label, ms since
    /// spawn). Each segment ends at its boundary and starts at the previous
    /// one (or 0).
    pub fn boundaries(&self) -> Vec<(&'static str, f64)> {
        let Some(ready) = self.ready_ms else {
            return Vec::new();
        };
        let mut b = Vec::new();
        match self.system {
            Some(System::Vmm | System::VmmCold) => {
                // The build broken down where the VMM recorded its steps.
                let mut steps = false;
                for (step, label) in BUILD_STEPS {
                    if let Some(v) = self.phase(step) {
                        b.push((label, v));
                        steps = true;
                    }
                }
                if let Some(v) = self.phase("vm_built") {
                    b.push((if steps { PHASE_VCPUS } else { PHASE_BUILD }, v));
                }
                if let Some(v) = self.phase("first_kvm_run") {
                    b.push((PHASE_FIRST_RUN, v));
                }
                if let Some(v) = self.first_output_ms {
                    b.push((PHASE_TO_CONSOLE, v));
                }
                // The boot timer, which init writes first thing, splits
                // the kernel's part from the command's.
                match self.phase("init_reached") {
                    Some(v) if self.ready_at_command => {
                        b.push((PHASE_TO_INIT, v));
                        b.push((PHASE_TO_COMMAND, ready));
                    }
                    _ => b.push((PHASE_TO_INIT, ready)),
                }
            }
            Some(System::VmmRestore) => {
                for (phase, label) in [
                    ("state_read", PHASE_STATE_READ),
                    ("memory_mapped", PHASE_MEMORY_MAPPED),
                    ("devices_restored", PHASE_DEVICES_RESTORED),
                    ("vm_built", PHASE_VCPUS_RESTORED),
                    ("first_kvm_run", PHASE_FIRST_RUN),
                ] {
                    if let Some(v) = self.phase(phase) {
                        b.push((label, v));
                    }
                }
                // The answer's first byte on the guest's serial port, then
                // its way to the bench through the VMM's stdout.
                if let Some(v) = self.phase("first_console_output") {
                    b.push((PHASE_RESTORED_TO_ANSWER, v));
                    b.push((PHASE_OUTPUT_DELIVERED, ready));
                } else {
                    b.push((PHASE_RESTORED_TO_ANSWER, ready));
                }
            }
            Some(System::Qemu) => {
                if let Some(v) = self.first_output_ms {
                    b.push((PHASE_QEMU_TO_CONSOLE, v));
                }
                if self.ready_at_command {
                    b.push((PHASE_TO_INIT_AND_COMMAND, ready));
                } else {
                    b.push((PHASE_TO_INIT, ready));
                }
            }
            _ => b.push((PHASE_CONTAINER, ready)),
        }
        // Phases come from two clocks (the VMM's and the harness's): keep
        // them in order.
        let mut last = 0.0f64;
        for (_, v) in b.iter_mut() {
            *v = v.max(last);
            last = *v;
        }
        b
    }
}

/// VMM: process start to the VM built (memory, kernel, devices, vCPUs),
/// where its steps are not recorded.
pub const PHASE_BUILD: &str = "VMM: build the VM";
/// VMM: process start to the configuration checked and the host's files
/// (kernel, disks, TAPs) opened.
pub const PHASE_CHECKED: &str = "VMM: start, check, open files";
/// VMM: guest memory mapped.
pub const PHASE_MEMORY: &str = "VMM: guest memory";
/// VMM: kernel, initrd and boot data loaded into guest memory, while
/// KVM's VM is made on another thread.
pub const PHASE_LOAD: &str = "VMM: kernel and initrd loaded";
/// VMM: what is left of making KVM's VM (KVM_CREATE_VM, irqchip, PIT,
/// memory registered) once the guest is loaded.
pub const PHASE_KVM_VM: &str = "VMM: KVM VM, irqchip, PIT (rest)";
/// VMM: the devices made and wired.
pub const PHASE_DEVICES: &str = "VMM: devices";
/// VMM: the vCPUs made and set up.
pub const PHASE_VCPUS: &str = "VMM: vCPUs";
/// The VMM's build steps (`Timeline::step`) and their labels, in order.
pub const BUILD_STEPS: [(&str, &str); 5] = [
    ("checked", PHASE_CHECKED),
    ("guest_memory_mapped", PHASE_MEMORY),
    ("initrd_loaded", PHASE_LOAD),
    ("vm_ready", PHASE_KVM_VM),
    ("devices_made", PHASE_DEVICES),
];
/// VMM: VM built to the first KVM_RUN.
pub const PHASE_FIRST_RUN: &str = "VMM: start the vCPUs";
/// Guest kernel: first KVM_RUN to its first console output.
pub const PHASE_TO_CONSOLE: &str = "kernel: to first console output";
/// QEMU: process start to the guest's first console output.
pub const PHASE_QEMU_TO_CONSOLE: &str = "QEMU and kernel: to first console output";
/// Guest kernel: first console output to init.
pub const PHASE_TO_INIT: &str = "kernel: console to init";
/// Guest init: its start to the command's first output.
pub const PHASE_TO_COMMAND: &str = "init: to the command's output";
/// Guest kernel and init, where init's start is not seen (QEMU).
pub const PHASE_TO_INIT_AND_COMMAND: &str = "kernel and init: console to the command's output";
/// Restore: process start to the state file read and checked.
pub const PHASE_STATE_READ: &str = "restore: start, read the state file";
/// Restore: guest memory (the memory file mapped private) and the VM made.
pub const PHASE_MEMORY_MAPPED: &str = "restore: VM made, memory file mapped";
/// Restore: the VM's and the devices' state put back.
pub const PHASE_DEVICES_RESTORED: &str = "restore: VM and devices' state";
/// Restore: the vCPUs made and their state put back.
pub const PHASE_VCPUS_RESTORED: &str = "restore: vCPUs' state";
/// Restored guest: first guest instruction to the command's output (init
/// reads the command, starts it, it answers).
pub const PHASE_RESTORED_TO_ANSWER: &str = "guest: command handed over to its output";
/// The answer's first byte from the guest's serial port to the bench
/// (through the VMM's stdout).
pub const PHASE_OUTPUT_DELIVERED: &str = "VMM: output to the bench";
/// Containers: start to the command's first output.
pub const PHASE_CONTAINER: &str = "start to the command's output";

use std::path::{Path, PathBuf};
use std::time::Duration;

#[cfg(test)]
use launch::container_launch;
use launch::{image_launches, launches};
use report::RunInfo;
use run::{Launch, Ready};
use vmm::cmdline::shell_words;
use vmm::config::{self, VmConfig};
use vmm::error::Result;

/// What `vmm bench` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rounds; each starts every system (`parallel` at a time).
    pub iterations: usize,
    /// Rounds run first and not counted: they fill the page cache with
    /// each system's program, kernel and files, which a first start reads
    /// from disk (or, on the nested host, through 9p).
    pub warmup: usize,
    /// Starts at once.
    pub parallel: usize,
    /// Where the CSV, report and chart go.
    pub out: Option<PathBuf>,
    /// Which systems.
    pub systems: Vec<System>,
    /// How long one start may take to be ready.
    pub limit: Duration,
    /// Guest RAM of the VMs, MiB.
    pub mem_mib: u64,
    /// The `vmm` binary whose VMs are measured.
    pub vmm: PathBuf,
    /// The command every system runs: the VMs' init, the containers'
    /// process. With `image`: in place of the image's Cmd (empty: the
    /// image's own Entrypoint and Cmd).
    pub command: Vec<String>,
    /// `--image REF`: the image's command, as a VM booting its root disk
    /// (cold and warm) and as a container on the same files.
    pub image: Option<String>,
}

/// The command run when none is given.
pub const DEFAULT_COMMAND: [&str; 2] = ["echo", "ready"];

/// The ready line of the VMs on an emulated KVM, where the guest's init
/// cannot make its first system call: the kernel's line before it starts
/// init.
pub const VM_MARKER_EMULATED: &str = "Run /init as init process";
/// The default init's greeting, printed before it runs the command:
/// elsewhere the VMs are ready at the first output after it.
pub const INIT_GREETING: &str = "Hello from the guest";
/// The ready line of an image's VMs on an emulated KVM.
pub const VM_MARKER_IMAGE_EMULATED: &str = "Run /vmm/init as init process";

/// When the VMs are ready.
pub fn vm_ready(emulated: bool) -> Ready {
    if emulated {
        Ready::Line(VM_MARKER_EMULATED.into())
    } else {
        Ready::OutputAfter(INIT_GREETING.into())
    }
}

fn host_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

fn cpu_description() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, m)| m.trim().to_string());
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{n} x {model}")
}

fn utc_now() -> String {
    utc(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()))
}

/// `secs` since 1970-01-01 00:00 UTC as "YYYY-MM-DD HH:MM UTC".
fn utc(secs: u64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let days = (secs / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        t / 3600,
        (t % 3600) / 60
    )
}

/// Runs the benchmark, prints the table, writes the files; returns the
/// samples.
pub fn bench(opts: &Options) -> Result<Vec<Sample>> {
    let emulated = vmm::host::kvm_is_emulated();
    let work = match &opts.out {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("vmm-bench-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work).map_err(|e| vmm::config::ConfigError::Missing {
        what: "output directory",
        path: work.clone(),
        reason: format!("cannot create it: {e}"),
    })?;
    let (launches, skipped, command, image, scratch) = match &opts.image {
        Some(reference) => {
            let plan = image_launches(opts, reference, emulated, &work)?;
            (
                plan.launches,
                plan.skipped,
                plan.command,
                Some(plan.image),
                Some(plan.scratch),
            )
        }
        None => {
            let (l, s) = launches(opts, emulated, &work)?;
            (l, s, shell_words(&opts.command), None, None)
        }
    };
    for (sys, why) in &skipped {
        log::warn!("bench: {} left out: {why}", sys.name());
    }
    if emulated && launches.iter().any(|l| l.system.is_vm()) {
        log::warn!(
            "bench: KVM is emulated here (kvm_pvm): each VM boot takes a minute or two, and the VMs are ready at the kernel's {VM_MARKER_EMULATED:?} line"
        );
    }
    let total = ((opts.warmup + opts.iterations) * launches.len()) as u64;
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut samples = Vec::new();
    let mut guest_kernel = None;
    for round in 0..opts.warmup + opts.iterations {
        // Warm-up rounds first, then the counted iterations from 0.
        let (what, it) = match round.checked_sub(opts.warmup) {
            Some(it) => ("iteration", it),
            None => ("warm-up", round),
        };
        for l in &launches {
            bar.set_message(format!("{} ({what} {})", l.system.name(), it + 1));
            let tag = format!("{round}");
            for started in run::start_batch(l, opts.parallel, &tag) {
                let mut s = started.sample;
                s.iteration = it;
                if let Some(e) = &s.error {
                    bar.suspend(|| log::warn!("bench: {} {what} {}: {e}", l.system.name(), it + 1));
                }
                if round < opts.warmup {
                    continue;
                }
                if l.system.is_vm() && guest_kernel.is_none() {
                    guest_kernel = run::guest_kernel_version(&started.stdout);
                }
                samples.push(s);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    if let Some(dir) = scratch {
        let _ = std::fs::remove_dir_all(dir);
    }
    let info = RunInfo {
        date: utc_now(),
        cpu: cpu_description(),
        host_kernel: host_kernel(),
        guest_kernel,
        emulated,
        iterations: opts.iterations,
        warmup: opts.warmup,
        parallel: opts.parallel,
        command,
        image,
        vm_marker: format!(
            "{} on the console",
            match (&opts.image, emulated) {
                (Some(_), true) => Ready::Line(VM_MARKER_IMAGE_EMULATED.into()),
                _ => vm_ready(emulated),
            }
        ),
        container_marker: Ready::FirstOutput.to_string(),
        skipped,
    };
    print!("{}", report::terminal_table(&samples));
    if let Some(dir) = &opts.out {
        let write = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| vmm::config::ConfigError::Missing {
                what: "output file",
                path: path.clone(),
                reason: format!("cannot write it: {e}"),
            })
        };
        write("samples.csv", report::csv(&samples))?;
        write("report.md", report::markdown(&info, &samples))?;
        write("chart.svg", report::svg(&samples))?;
        println!(
            "wrote {0}/samples.csv, {0}/report.md and {0}/chart.svg",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        for (secs, date) in [
            (0, "1970-01-01 00:00 UTC"),
            // A leap day, and the day after it.
            (951_782_400, "2000-02-29 00:00 UTC"),
            (951_868_799, "2000-02-29 23:59 UTC"),
            (951_868_800, "2000-03-01 00:00 UTC"),
            (1_709_164_800 + 13 * 3600 + 37 * 60, "2024-02-29 13:37 UTC"),
            // 2100 is no leap year: February 28, then March 1.
            (4_107_456_000, "2100-02-28 00:00 UTC"),
            (4_107_542_400, "2100-03-01 00:00 UTC"),
            // A year's last minute and the next year's first.
            (1_767_225_599, "2025-12-31 23:59 UTC"),
            (1_767_225_600, "2026-01-01 00:00 UTC"),
        ] {
            assert_eq!(utc(secs), date, "{secs}");
        }
        let now = utc_now();
        assert!(now.len() == 20 && now.ends_with(" UTC"), "{now}");
    }

    #[test]
    fn containers_run_the_spec_on_the_bundle() {
        use prereq::Need;
        if !prereq::require([Need::root(), Need::tool("unshare", "util-linux")]) {
            return;
        }
        let opts = Options {
            iterations: 1,
            warmup: 0,
            parallel: 1,
            out: None,
            systems: vec![System::Unshare],
            limit: Duration::from_secs(1),
            mem_mib: 128,
            vmm: "vmm".into(),
            command: vec!["echo".into(), "ready".into()],
            image: None,
        };
        let work = Path::new("/w");
        let mut bundle = || Ok(PathBuf::from("/b"));
        let root = bundle::as_root(&opts.command);
        let l = container_launch(&opts, work, System::Unshare, &mut bundle, &root).unwrap();
        assert!(l.argv.ends_with(&[
            "--root=/b/rootfs".to_string(),
            "--".into(),
            "echo".into(),
            "ready".into()
        ]));
        assert_eq!(l.env, [("PATH".to_string(), bundle::PATH.to_string())]);
        let image = bundle::Spec {
            argv: vec!["id".into()],
            env: vec!["A=1".into(), "B=x=y".into()],
            uid: 1000,
            gid: 50,
            groups: vec![50],
            workdir: "/home/app".into(),
        };
        let l = container_launch(&opts, work, System::Unshare, &mut bundle, &image).unwrap();
        let tail: Vec<&str> = l.argv[7..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "--root=/b/rootfs",
                "--wd=/home/app",
                "--setgid=50",
                "--setuid=1000",
                "--",
                "id"
            ]
        );
        assert_eq!(
            l.env,
            [("A".into(), "1".into()), ("B".into(), "x=y".into())]
        );
        if run::which("runc").is_some() {
            let l = container_launch(&opts, work, System::Runc, &mut bundle, &image).unwrap();
            assert_eq!(l.argv[1..], ["run", "--bundle", "/b"]);
            assert!(l.env.is_empty() && l.runc_id.is_some());
        }
        let mut missing = || Err("busybox not installed".to_string());
        let e = container_launch(&opts, work, System::Unshare, &mut missing, &root).unwrap_err();
        assert_eq!(e, "busybox not installed");
    }

    #[test]
    fn system_names_round_trip() {
        for s in System::ALL {
            assert_eq!(System::parse(s.name()), Some(s));
        }
        assert_eq!(System::parse("docker"), None);
        assert!(System::Vmm.is_vm() && !System::Runc.is_vm());
    }
}
