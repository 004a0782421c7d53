//! What `vmm bench` writes: the terminal table, and in --out a CSV of every
//! sample, a Markdown report and an SVG chart (a bar per system, its phases
//! stacked).

use std::fmt::Write as _;

use super::stats::{summarize, Summary};
use super::{Sample, System};

/// What the report says about the run besides the samples.
#[derive(Debug, Clone, Default)]
pub struct RunInfo {
    /// When (UTC, as text).
    pub date: String,
    /// CPU model and count.
    pub cpu: String,
    /// The host's kernel release (uname -r).
    pub host_kernel: String,
    /// The guest's kernel version, from its boot log ("Linux version ...").
    pub guest_kernel: Option<String>,
    /// KVM is emulated (kvm_pvm) here.
    pub emulated: bool,
    /// Iterations asked for.
    pub iterations: usize,
    /// Warm-up rounds run first, not counted.
    pub warmup: usize,
    /// Starts at once.
    pub parallel: usize,
    /// The command every system runs.
    pub command: String,
    /// With `--image`: the image (reference, key, size).
    pub image: Option<String>,
    /// When the VMs are ready.
    pub vm_marker: String,
    /// When the containers are ready.
    pub container_marker: String,
    /// Systems left out, with why.
    pub skipped: Vec<(System, String)>,
}

/// The samples of `system` that reached ready.
fn ok(samples: &[Sample], system: System) -> impl Iterator<Item = &Sample> {
    samples
        .iter()
        .filter(move |s| s.system == Some(system) && s.ready_ms.is_some())
}

fn systems_in(samples: &[Sample]) -> Vec<System> {
    System::ALL
        .into_iter()
        .filter(|&sys| samples.iter().any(|s| s.system == Some(sys)))
        .collect()
}

/// Summary of the time to ready of `system`.
pub fn ready_summary(samples: &[Sample], system: System) -> Option<Summary> {
    summarize(ok(samples, system).filter_map(|s| s.ready_ms))
}

fn rss_summary(samples: &[Sample], system: System) -> Option<Summary> {
    summarize(ok(samples, system).filter_map(|s| s.peak_rss_kib.map(|k| k as f64)))
}

/// The stacked phases of `system`: (label, median length in ms), in order.
/// Each boundary's median is taken over the samples, then segments are the
/// differences.
pub fn phase_medians(samples: &[Sample], system: System) -> Vec<(&'static str, f64)> {
    let per_sample: Vec<Vec<(&'static str, f64)>> =
        ok(samples, system).map(Sample::boundaries).collect();
    let Some(longest) = per_sample.iter().max_by_key(|b| b.len()) else {
        return Vec::new();
    };
    let labels: Vec<&'static str> = longest.iter().map(|(l, _)| *l).collect();
    let mut out = Vec::new();
    let mut last = 0.0f64;
    for label in labels {
        let ends = per_sample
            .iter()
            .filter_map(|b| b.iter().find(|(l, _)| *l == label).map(|(_, v)| *v));
        if let Some(s) = summarize(ends) {
            let end = s.median.max(last);
            out.push((label, end - last));
            last = end;
        }
    }
    out
}

/// A duration for people: ms below 10 s, else s.
pub fn human_ms(ms: f64) -> String {
    if ms >= 10_000.0 {
        format!("{:.1} s", ms / 1e3)
    } else if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

fn human_kib(kib: f64) -> String {
    format!("{:.1} MiB", kib / 1024.0)
}

fn failures(samples: &[Sample], system: System) -> usize {
    samples
        .iter()
        .filter(|s| s.system == Some(system) && s.ready_ms.is_none())
        .count()
}

/// The table printed on the terminal at the end.
pub fn terminal_table(samples: &[Sample]) -> String {
    let mut t = format!(
        "{:<9} {:>4} {:>11} {:>11} {:>11} {:>11} {:>7}\n",
        "system", "n", "median", "p10", "p90", "peak RSS", "failed"
    );
    for sys in systems_in(samples) {
        let fail = failures(samples, sys);
        match ready_summary(samples, sys) {
            Some(s) => {
                let rss = rss_summary(samples, sys).map_or("-".into(), |r| human_kib(r.median));
                let _ = writeln!(
                    t,
                    "{:<9} {:>4} {:>11} {:>11} {:>11} {:>11} {:>7}",
                    sys.name(),
                    s.n,
                    human_ms(s.median),
                    human_ms(s.p10),
                    human_ms(s.p90),
                    rss,
                    fail
                );
            }
            None => {
                let _ = writeln!(
                    t,
                    "{:<9} {:>4} {:>11} {:>11} {:>11} {:>11} {:>7}",
                    sys.name(),
                    0,
                    "-",
                    "-",
                    "-",
                    "-",
                    fail
                );
            }
        }
    }
    t
}

fn opt_ms(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.3}"))
}

/// Every sample, one line each.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "system,iteration,instance,parallel,ready_ms,first_output_ms,batch_ms,peak_rss_kib,\
         vm_built_ms,first_kvm_run_ms,first_console_output_ms,kernel_runs_init_ms,init_reached_ms,error\n",
    );
    for s in samples {
        let error = s
            .error
            .as_deref()
            .unwrap_or("")
            .replace('"', "'")
            .replace(['\n', '\r'], " ");
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},\"{}\"",
            s.system.map_or("", System::name),
            s.iteration,
            s.instance,
            s.parallel,
            opt_ms(s.ready_ms),
            opt_ms(s.first_output_ms),
            opt_ms(s.batch_ms),
            s.peak_rss_kib.map_or(String::new(), |k| k.to_string()),
            opt_ms(s.phase("vm_built")),
            opt_ms(s.phase("first_kvm_run")),
            opt_ms(s.phase("first_console_output")),
            opt_ms(s.phase("kernel_runs_init")),
            opt_ms(s.phase("init_reached")),
            error
        );
    }
    out
}

fn describe(sys: System, info: &RunInfo) -> String {
    let guest = info
        .guest_kernel
        .as_deref()
        .map_or("the guest kernel".to_string(), |v| format!("Linux {v}"));
    if let Some(image) = &info.image {
        return match sys {
            System::Vmm => format!(
                "this VMM boots the container image {image} from its cache (warm): a private copy of its root disk, with the default kernel ({guest}); the project's init runs `{}` as the image's user, in its directory, with its environment; ready at {}",
                info.command, info.vm_marker
            ),
            System::VmmCold => "the same with an empty image cache (cold): the image's layers are checked and unpacked and its root disk made before the VM boots".to_string(),
            System::Runc => format!(
                "a runc container runs `{}` on the same image unpacked into its bundle (the same layers, owners and modes), as the same user in the same directory with the same environment, on the host's kernel (Linux {}); ready at {}, then torn down",
                info.command, info.host_kernel, info.container_marker
            ),
            System::Unshare => "the same command, user, directory and environment on the same files in fresh PID, mount, network, UTS and IPC namespaces (unshare), on the host's kernel: the floor".to_string(),
            System::Qemu | System::VmmRestore => {
                format!("{} is not measured with --image", sys.name())
            }
        };
    }
    match sys {
        System::Vmm => format!(
            "this VMM boots the default guest, its own kernel ({guest}) and initramfs, whose init runs `{}`; ready at {}",
            info.command, info.vm_marker
        ),
        System::VmmCold => "this VMM with an empty image cache (only with --image)".to_string(),
        System::VmmRestore => format!(
            "this VMM restores a template of the default guest (`vmm template create`, made once before the timed runs, as the containers' bundle is: its init booted and waiting for a command) with `vmm run --from`: guest memory the template's file mapped private, the command handed to init through the command device; ready at the command's first output (`{}`)",
            info.command
        ),
        System::Qemu => "QEMU microvm (Debian's qemu-system-x86) boots the same kernel and initramfs with the same command line, so the same init runs the same command; ready at the same point".to_string(),
        System::Runc => format!(
            "a runc container runs `{}` on a busybox root file system, on the host's kernel (Linux {}); ready at {}, then torn down",
            info.command, info.host_kernel, info.container_marker
        ),
        System::Unshare => "the same command on the same root file system in fresh PID, mount, network, UTS and IPC namespaces (unshare), on the host's kernel: the floor, what a process in namespaces costs".to_string(),
    }
}

/// The Markdown report.
pub fn markdown(info: &RunInfo, samples: &[Sample]) -> String {
    let mut r = String::from("# Boot benchmark: VMs with their own kernel against containers\n\n");
    let kvm = if info.emulated {
        "emulated (kvm_pvm: guest kernel code is interpreted)"
    } else {
        "hardware virtualization (VT-x/AMD-V)"
    };
    let _ = writeln!(
        r,
        "Run {} on {}, host kernel Linux {}; KVM: {kvm}. {} iteration(s) after {} warm-up round(s) not counted, {} start(s) at a time, the systems interleaved.\n",
        info.date, info.cpu, info.host_kernel, info.iterations, info.warmup, info.parallel
    );
    if let Some(image) = &info.image {
        let _ = writeln!(
            r,
            "The container image: {image}, run as a VM with its own kernel and as containers on the host's.\n"
        );
    }
    let ran_vm = systems_in(samples).iter().any(|s| s.is_vm());
    if ran_vm {
        let guest = info
            .guest_kernel
            .as_deref()
            .map_or("its own kernel".to_string(), |v| {
                format!("its own kernel, Linux {v}")
            });
        let _ = writeln!(
            r,
            "**What differs.** Each VM boots {guest}, on virtual hardware: firmware-free entry, device probing, its own memory. The containers run on the host's kernel, Linux {}: starting one is creating namespaces and a process, no kernel boots.\n",
            info.host_kernel
        );
    } else {
        let _ = writeln!(
            r,
            "**What differs.** No VM ran this time; the containers run on the host's kernel, Linux {}: starting one is creating namespaces and a process, no kernel boots, while a VM boots a kernel of its own.\n",
            info.host_kernel
        );
    }
    r.push_str("## What is measured\n\n");
    for sys in systems_in(samples) {
        let _ = writeln!(r, "- **{}**: {}.", sys.name(), describe(sys, info));
    }
    for (sys, why) in &info.skipped {
        let _ = writeln!(r, "- **{}**: not run ({why}).", sys.name());
    }
    r.push_str(
        "\nTime to ready runs from the spawn of the system's process to its ready point on stdout; \
         peak RSS is the largest resident set in the process tree, read when it is reaped (for a VM it \
         includes the guest memory the guest touched).\n\n## Time to ready\n\n\
         | system | n | median | p10 | p90 | peak RSS (median) | failed |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for sys in systems_in(samples) {
        let fail = failures(samples, sys);
        let rss = rss_summary(samples, sys).map_or("-".into(), |s| human_kib(s.median));
        match ready_summary(samples, sys) {
            Some(s) => {
                let _ = writeln!(
                    r,
                    "| {} | {} | {} | {} | {} | {rss} | {fail} |",
                    sys.name(),
                    s.n,
                    human_ms(s.median),
                    human_ms(s.p10),
                    human_ms(s.p90)
                );
            }
            None => {
                let _ = writeln!(r, "| {} | 0 | - | - | - | - | {fail} |", sys.name());
            }
        }
    }
    let vm = ready_summary(samples, System::Vmm);
    let ct = ready_summary(samples, System::Runc);
    if let (Some(vm), Some(ct)) = (vm, ct) {
        let _ = writeln!(
            r,
            "\nThis VMM's VM takes {:.0} times as long as the runc container to be ready.",
            vm.median / ct.median
        );
    }
    if let (Some(restore), Some(ct)) = (ready_summary(samples, System::VmmRestore), ct) {
        let _ = writeln!(
            r,
            "A restored VM answers in {:.2} times the runc container's time (restore/runc; below 0.5 is the target).",
            restore.median / ct.median
        );
    }
    if let (Some(vm), Some(cold)) = (vm, ready_summary(samples, System::VmmCold)) {
        let _ = writeln!(
            r,
            "A cold start (the image unpacked and its disk made first) takes {:.2} times as long as a warm one.",
            cold.median / vm.median
        );
    }
    if let (Some(vm), Some(q)) = (vm, ready_summary(samples, System::Qemu)) {
        let _ = writeln!(
            r,
            "Against QEMU microvm on the same kernel: {:.2} (below 1: this VMM is faster).",
            vm.median / q.median
        );
    }
    r.push_str(
        "\n## Where the time goes (medians)\n\n| system | phase | ms |\n| --- | --- | ---: |\n",
    );
    for sys in systems_in(samples) {
        for (label, ms) in phase_medians(samples, sys) {
            let _ = writeln!(r, "| {} | {label} | {ms:.1} |", sys.name());
        }
    }
    if info.parallel > 1 {
        r.push_str(&format!(
            "\n## {} at once\n\n| system | per instance (median) | batch, all ready (median) | starts per second |\n| --- | ---: | ---: | ---: |\n",
            info.parallel
        ));
        for sys in systems_in(samples) {
            let per = ready_summary(samples, sys);
            let batch = summarize(
                ok(samples, sys)
                    .filter(|s| s.instance == 0)
                    .filter_map(|s| s.batch_ms),
            );
            if let (Some(per), Some(batch)) = (per, batch) {
                let _ = writeln!(
                    r,
                    "| {} | {} | {} | {:.2} |",
                    sys.name(),
                    human_ms(per.median),
                    human_ms(batch.median),
                    info.parallel as f64 / (batch.median / 1e3)
                );
            }
        }
    }
    if info.emulated && ran_vm {
        r.push_str(
            "\n## Why the VMs are slow here\n\nThis host's KVM is emulated (kvm_pvm): guest user code runs natively, \
             but guest kernel code is interpreted by KVM's instruction emulator, about a thousand times slower than \
             on VT-x/AMD-V. A kernel boot is almost all kernel code, so the VMs take tens of seconds where they take \
             a fraction of a second on hardware, while the containers, which boot no kernel, are unaffected. Guest \
             user space cannot make system calls here, so the VMs are ready at the kernel's \"Run /init as init \
             process\" line, before init runs the command; on hardware they are ready at the command's first \
             output, as the containers are.\n",
        );
    }
    r.push_str("\nThe chart (`chart.svg`) stacks the phases of each system; `samples.csv` holds every start.\n");
    r
}

/// Colours of the phases in the chart: each phase its own.
const PALETTE: [&str; 21] = [
    "#4e79a7", "#a0cbe8", "#f28e2b", "#ffbe7d", "#e15759", "#ff9d9a", "#b07aa1", "#d4a6c8",
    "#59a14f", "#8cd17d", "#9c755f", "#76b7b2", "#edc948", "#bab0ac", "#17becf", "#bcbd22",
    "#8c564b", "#e377c2", "#393b79", "#637939", "#b5cf6b",
];

/// Every phase label the chart knows, in the order their colours go.
const PHASES: [&str; 21] = [
    super::PHASE_CHECKED,
    super::PHASE_MEMORY,
    super::PHASE_LOAD,
    super::PHASE_KVM_VM,
    super::PHASE_DEVICES,
    super::PHASE_VCPUS,
    super::PHASE_BUILD,
    super::PHASE_FIRST_RUN,
    super::PHASE_TO_CONSOLE,
    super::PHASE_TO_INIT,
    super::PHASE_TO_COMMAND,
    super::PHASE_QEMU_TO_CONSOLE,
    super::PHASE_TO_INIT_AND_COMMAND,
    super::PHASE_STATE_READ,
    super::PHASE_MEMORY_MAPPED,
    super::PHASE_DEVICES_RESTORED,
    super::PHASE_VCPUS_RESTORED,
    super::PHASE_RESTORED_TO_ANSWER,
    super::PHASE_OUTPUT_DELIVERED,
    super::PHASE_CONTAINER,
    "",
];

/// The colour of phase `label`: its own among the chart's (the palette
/// cycles only past twenty-one phases).
fn colour(label: &str) -> &'static str {
    let i = PHASES
        .iter()
        .position(|p| *p == label)
        .unwrap_or(PHASES.len() - 1);
    PALETTE[i % PALETTE.len()]
}

/// log10 of `x` (x > 0) without libm (see `power_of_ten_below`): the
/// decades, then the mantissa's logarithm by the atanh series.
fn log10(x: f64) -> f64 {
    let mut decades = 0.0;
    let mut m = x;
    while m >= 10.0 {
        m /= 10.0;
        decades += 1.0;
    }
    while m < 1.0 {
        m *= 10.0;
        decades -= 1.0;
    }
    // ln m = 2 atanh(z), z = (m - 1) / (m + 1), |z| < 0.82.
    let z = (m - 1.0) / (m + 1.0);
    let (mut term, mut sum, mut k) = (z, 0.0, 1.0);
    while term.abs() > 1e-12 * k {
        sum += term / k;
        term *= z * z;
        k += 2.0;
    }
    decades + 2.0 * sum / std::f64::consts::LN_10
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The SVG chart: one horizontal bar per system, the median phases stacked
/// and each in its own colour, the median time to ready written at the end
/// of the bar, on a logarithmic axis (decades): a container's few
/// milliseconds and a VM's seconds both show.
pub fn svg(samples: &[Sample]) -> String {
    let systems = systems_in(samples);
    let rows: Vec<(System, Vec<(&'static str, f64)>)> = systems
        .iter()
        .map(|&s| (s, phase_medians(samples, s)))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    let totals: Vec<f64> = rows
        .iter()
        .map(|(_, p)| p.iter().map(|(_, v)| v).sum::<f64>())
        .collect();
    let max = totals.iter().copied().fold(0.0f64, f64::max).max(1.0);
    // From the decade below the smallest first phase to the decade above
    // the longest bar.
    let smallest = rows
        .iter()
        .filter_map(|(_, p)| p.iter().map(|(_, v)| *v).find(|v| *v > 0.0))
        .fold(max, f64::min)
        .max(0.01);
    let lo = power_of_ten_below(smallest);
    let mut hi = power_of_ten_below(max);
    if hi < max {
        hi *= 10.0;
    }
    let (left, width, bar, gap) = (110.0, 540.0, 26.0, 14.0);
    let span = (log10(hi) - log10(lo)).max(1.0);
    let x_of = |ms: f64| left + (log10(ms.max(lo)) - log10(lo)) / span * width;
    let mut labels: Vec<&'static str> = Vec::new();
    for (_, p) in &rows {
        for (l, _) in p {
            if !labels.contains(l) {
                labels.push(l);
            }
        }
    }
    let plot_h = rows.len() as f64 * (bar + gap);
    let height = 50.0 + plot_h + 30.0 + labels.len() as f64 * 18.0 + 10.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"780\" height=\"{height:.0}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Time to ready (median), phases stacked; logarithmic axis</text>\n"
    );
    // A line at each decade, lighter ones at 2 and 5 times it.
    let mut t = lo;
    while t <= hi * 1.0001 {
        for (k, shade) in [(1.0, "#ccc"), (2.0, "#eee"), (5.0, "#eee")] {
            let v = t * k;
            if v > hi * 1.0001 {
                break;
            }
            let x = x_of(v);
            let _ = write!(
                s,
                "<line x1=\"{x:.1}\" y1=\"35\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{shade}\"/>",
                40.0 + plot_h
            );
            if k == 1.0 {
                let _ = write!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{}</text>",
                    52.0 + plot_h,
                    human_ms(v)
                );
            }
            s.push('\n');
        }
        t *= 10.0;
    }
    for (i, ((sys, phases), total)) in rows.iter().zip(&totals).enumerate() {
        let y = 40.0 + i as f64 * (bar + gap);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + bar * 0.65,
            sys.name()
        );
        let mut at = 0.0;
        for (label, ms) in phases {
            let (x0, x1) = (x_of(at), x_of(at + ms));
            at += ms;
            let _ = writeln!(
                s,
                "<rect x=\"{x0:.2}\" y=\"{y:.1}\" width=\"{:.2}\" height=\"{bar}\" fill=\"{}\"><title>{}: {}</title></rect>",
                (x1 - x0).max(0.0),
                colour(label),
                xml_escape(label),
                human_ms(*ms)
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x_of(*total) + 6.0,
            y + bar * 0.65,
            human_ms(*total)
        );
    }
    let mut y = 70.0 + plot_h;
    for label in labels {
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            y - 10.0,
            colour(label),
            left + 18.0,
            y,
            xml_escape(label)
        );
        y += 18.0;
    }
    s.push_str("</svg>\n");
    s
}

/// The largest power of ten not above `x` (x > 0), by multiplying and
/// dividing rather than with `log10` and `powf`: those are libm's, and
/// libm would be one more library mapped into every VMM process.
fn power_of_ten_below(x: f64) -> f64 {
    let mut p = 1.0;
    while p * 10.0 <= x {
        p *= 10.0;
    }
    while p > x {
        p /= 10.0;
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn powers_of_ten_below() {
        assert_eq!(power_of_ten_below(1.0), 1.0);
        assert_eq!(power_of_ten_below(999.0), 100.0);
        assert!((power_of_ten_below(0.05) - 0.01).abs() < 1e-12);
    }

    fn sample(system: System, iteration: usize, ready: f64) -> Sample {
        Sample {
            system: Some(system),
            iteration,
            parallel: 1,
            ready_ms: Some(ready),
            first_output_ms: Some(ready * 0.1),
            peak_rss_kib: Some(10 * 1024),
            ..Sample::default()
        }
    }

    /// Fixed samples: 3 VMM boots with phases, 3 runc starts, a failure.
    fn fixed() -> Vec<Sample> {
        let mut v = Vec::new();
        for (i, ready) in [1000.0, 1200.0, 1100.0].into_iter().enumerate() {
            let mut s = sample(System::Vmm, i, ready);
            s.phases = vec![
                ("vm_built".into(), 10.0),
                ("first_kvm_run".into(), 12.0),
                ("kernel_runs_init".into(), ready - 1.0),
            ];
            v.push(s);
            v.push(sample(System::Runc, i, 50.0 + i as f64 * 10.0));
        }
        v.push(Sample {
            system: Some(System::Qemu),
            error: Some("no \"ready\" line\nin 900 s".into()),
            ..Sample::default()
        });
        v
    }

    #[test]
    fn the_terminal_table_has_the_order_statistics() {
        let t = terminal_table(&fixed());
        let vmm = t.lines().find(|l| l.starts_with("vmm")).unwrap();
        let cols: Vec<&str> = vmm.split_whitespace().collect();
        assert_eq!(cols[1], "3");
        assert_eq!(&cols[2..4], ["1100", "ms"]);
        assert!(vmm.contains("1020 ms") && vmm.contains("1180 ms"), "{vmm}");
        assert!(vmm.contains("10.0 MiB"), "{vmm}");
        let qemu = t.lines().find(|l| l.starts_with("qemu")).unwrap();
        assert!(qemu.trim_end().ends_with('1'), "one failure: {qemu}");
    }

    #[test]
    fn the_csv_has_a_line_per_sample_and_escapes_errors() {
        let c = csv(&fixed());
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 1 + 7);
        let cols = lines[0].split(',').count();
        assert!(lines.iter().all(|l| l.split(',').count() == cols), "{c}");
        assert!(
            lines[1].starts_with("vmm,0,0,1,1000.000,100.000,,10240,10.000,12.000,,999.000,,"),
            "{}",
            lines[1]
        );
        assert!(
            lines[7].ends_with("\"no 'ready' line in 900 s\""),
            "{}",
            lines[7]
        );
    }

    /// A VMM that records its build steps has its build broken down into
    /// them, the last segment (to vm_built) being the vCPUs'.
    #[test]
    fn the_build_steps_split_the_build() {
        let mut s = sample(System::Vmm, 0, 500.0);
        s.phases = vec![
            ("checked".into(), 3.0),
            ("guest_memory_mapped".into(), 3.5),
            ("kvm_opened".into(), 4.0),
            ("kernel_loaded".into(), 10.0),
            ("initrd_loaded".into(), 14.0),
            ("vm_created".into(), 20.0),
            ("memory_registered".into(), 20.5),
            ("vm_ready".into(), 21.0),
            ("devices_made".into(), 33.0),
            ("vm_built".into(), 34.0),
            ("first_kvm_run".into(), 35.0),
        ];
        let labels: Vec<&str> = s.boundaries().iter().map(|(l, _)| *l).collect();
        use super::super::*;
        assert_eq!(
            labels[..7],
            [
                PHASE_CHECKED,
                PHASE_MEMORY,
                PHASE_LOAD,
                PHASE_KVM_VM,
                PHASE_DEVICES,
                PHASE_VCPUS,
                PHASE_FIRST_RUN
            ]
        );
        let p = phase_medians(&[s], System::Vmm);
        assert_eq!(p[2], (PHASE_LOAD, 10.5));
        assert_eq!(p[3], (PHASE_KVM_VM, 7.0));
        // Each phase its own colour.
        let colours: std::collections::BTreeSet<_> = PHASES.iter().map(|l| colour(l)).collect();
        assert_eq!(colours.len(), PHASES.len());
    }

    /// A restore's answer is split where its first byte left the guest.
    #[test]
    fn a_restores_answer_is_split_at_the_serial_port() {
        use super::super::*;
        let mut s = sample(System::VmmRestore, 0, 60.0);
        s.phases = vec![
            ("state_read".into(), 5.0),
            ("memory_mapped".into(), 25.0),
            ("devices_restored".into(), 25.1),
            ("vm_built".into(), 25.4),
            ("first_kvm_run".into(), 29.0),
            ("first_console_output".into(), 40.0),
        ];
        let b = s.boundaries();
        assert_eq!(
            b[b.len() - 2..],
            [
                (PHASE_RESTORED_TO_ANSWER, 40.0),
                (PHASE_OUTPUT_DELIVERED, 60.0)
            ]
        );
    }

    #[test]
    fn phases_stack_to_the_median_ready_time() {
        let p = phase_medians(&fixed(), System::Vmm);
        let labels: Vec<&str> = p.iter().map(|(l, _)| *l).collect();
        assert_eq!(
            labels,
            [
                super::super::PHASE_BUILD,
                super::super::PHASE_FIRST_RUN,
                super::super::PHASE_TO_CONSOLE,
                super::super::PHASE_TO_INIT
            ]
        );
        assert_eq!(p[0].1, 10.0);
        assert_eq!(p[1].1, 2.0);
        assert_eq!(p[2].1, 110.0 - 12.0);
        let total: f64 = p.iter().map(|(_, v)| v).sum();
        assert!((total - 1100.0).abs() < 1e-9, "{total}");
        let runc = phase_medians(&fixed(), System::Runc);
        assert_eq!(runc, vec![(super::super::PHASE_CONTAINER, 60.0)]);
    }

    #[test]
    fn at_the_commands_output_the_boot_timer_splits_kernel_from_init() {
        use super::super::{PHASE_TO_COMMAND, PHASE_TO_INIT, PHASE_TO_INIT_AND_COMMAND};
        let mut s = sample(System::Vmm, 0, 1000.0);
        s.phases = vec![("init_reached".into(), 900.0)];
        let labels = |s: &Sample| {
            s.boundaries()
                .iter()
                .map(|(l, v)| (*l, *v))
                .collect::<Vec<_>>()
        };
        // Ready at the kernel's line: no command phase.
        assert_eq!(labels(&s).last(), Some(&(PHASE_TO_INIT, 1000.0)));
        s.ready_at_command = true;
        let b = labels(&s);
        assert_eq!(
            b[b.len() - 2..],
            [(PHASE_TO_INIT, 900.0), (PHASE_TO_COMMAND, 1000.0)]
        );
        let mut q = sample(System::Qemu, 0, 1500.0);
        q.ready_at_command = true;
        assert_eq!(
            labels(&q).last(),
            Some(&(PHASE_TO_INIT_AND_COMMAND, 1500.0))
        );
    }

    #[test]
    fn the_report_says_what_differs_and_gives_the_ratio() {
        let info = RunInfo {
            date: "2026-11-23 06:00".into(),
            cpu: "2 x Test CPU".into(),
            host_kernel: "6.1.0-test".into(),
            guest_kernel: Some("6.12.57".into()),
            emulated: true,
            iterations: 3,
            warmup: 1,
            parallel: 1,
            command: "echo ready".into(),
            image: None,
            vm_marker: "\"Run /init as init process\"".into(),
            container_marker: "its first output".into(),
            skipped: vec![(System::Unshare, "not root".into())],
        };
        let md = markdown(&info, &fixed());
        assert!(md.contains("Linux 6.12.57"), "{md}");
        assert!(
            md.contains("3 iteration(s) after 1 warm-up round(s) not counted"),
            "{md}"
        );
        assert!(md.contains("host's kernel, Linux 6.1.0-test"), "{md}");
        assert!(
            md.contains("| vmm | 3 | 1100 ms | 1020 ms | 1180 ms | 10.0 MiB | 0 |"),
            "{md}"
        );
        assert!(
            md.contains("takes 18 times as long as the runc container"),
            "{md}"
        );
        assert!(md.contains("**unshare**: not run (not root)"), "{md}");
        assert!(md.contains("Why the VMs are slow here"), "{md}");
        assert!(!md.contains("at once"), "no parallel section for 1: {md}");
        let containers: Vec<Sample> = fixed()
            .into_iter()
            .filter(|s| s.system == Some(System::Runc))
            .collect();
        let md = markdown(&info, &containers);
        assert!(md.contains("No VM ran this time"), "{md}");
        assert!(!md.contains("Why the VMs are slow"), "{md}");
    }

    #[test]
    fn an_image_run_says_what_it_measured_and_cold_against_warm() {
        let info = RunInfo {
            command: "sh -c 'echo hi'".into(),
            image: Some("oci:two (sha256:abc, 18 files, 1.9 MiB)".into()),
            vm_marker: "its first output".into(),
            host_kernel: "6.1.0-test".into(),
            ..RunInfo::default()
        };
        let mut samples = fixed();
        for (i, ready) in [3000.0, 3400.0, 3300.0].into_iter().enumerate() {
            samples.push(sample(System::VmmCold, i, ready));
        }
        let md = markdown(&info, &samples);
        assert!(
            md.contains("The container image: oci:two (sha256:abc"),
            "{md}"
        );
        assert!(
            md.contains("**vmm-cold**: the same with an empty image cache (cold)"),
            "{md}"
        );
        assert!(
            md.contains("**vmm**: this VMM boots the container image oci:two"),
            "{md}"
        );
        assert!(
            md.contains("**runc**: a runc container runs `sh -c 'echo hi'` on the same image"),
            "{md}"
        );
        // 3300 against 1100.
        assert!(
            md.contains("takes 3.00 times as long as a warm one"),
            "{md}"
        );
        assert!(md.contains("| vmm-cold | 3 | 3300 ms |"), "{md}");
    }

    #[test]
    fn the_chart_has_a_bar_per_system_with_its_phases() {
        let s = svg(&fixed());
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        // vmm: 4 phases, runc: 1; qemu failed and has no bar; 5 legend boxes.
        assert_eq!(s.matches("<rect").count(), 4 + 1 + 5, "{s}");
        assert!(s.contains(">vmm</text>") && s.contains(">runc</text>"));
        assert!(s.contains("kernel: console to init: 990 ms"), "{s}");
        assert!(s.contains(">1100 ms</text>"), "{s}");
    }

    #[test]
    fn the_axis_is_logarithmic_and_every_phase_has_its_colour() {
        for (x, want) in [
            (1.0, 0.0),
            (10.0, 1.0),
            (2.0, std::f64::consts::LOG10_2),
            (0.05, -1.30103),
            (9999.0, 3.99996),
        ] {
            assert!((log10(x) - want).abs() < 1e-4, "log10({x}) = {}", log10(x));
        }
        let colours: std::collections::HashSet<_> = PHASES[..PHASES.len() - 1]
            .iter()
            .map(|p| colour(p))
            .collect();
        assert_eq!(colours.len(), PHASES.len() - 1, "two phases share a colour");
        // runc's 50 ms bar and vmm's second-long one: the decade lines from
        // 10 ms to 10 s, and runc's bar spans a visible part of the axis.
        let s = svg(&fixed());
        for tick in ["10.0 ms", "100 ms", "1000 ms", "10.0 s"] {
            assert!(
                s.contains(&format!(">{tick}</text>")),
                "no {tick} tick: {s}"
            );
        }
    }

    #[test]
    fn times_are_written_for_people() {
        assert_eq!(human_ms(91_234.0), "91.2 s");
        assert_eq!(human_ms(48.26), "48.3 ms");
    }
}
