//! `vmm bench` end to end: a short run of the containers writes the three
//! files with what they measured, and one VM boot (slow on an emulated KVM:
//! about a minute and a half) gives its phases and the guest kernel's
//! version.

use std::path::Path;
use std::time::Duration;

use prereq::Need;
use vmm_tests::{default_guest_or_skip, run_vmm, TempDir};

const LIMIT: Duration = Duration::from_secs(900);

/// The CSV's rows as maps from column to value.
fn rows(csv: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    lines
        .map(|l| {
            header
                .iter()
                .zip(l.split(','))
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn containers_can_run() -> bool {
    prereq::require([
        Need::root(),
        Need::tool("runc", "runc"),
        Need::that(
            Path::new("/bin/busybox").exists(),
            "/bin/busybox (apt-get install busybox-static)",
        ),
    ])
}

#[test]
fn a_short_container_run_writes_the_csv_report_and_chart() {
    let Some(_) = default_guest_or_skip(&["init"]) else {
        return;
    };
    if !containers_can_run() {
        return;
    }
    let tmp = TempDir::new("bench");
    let out_dir = tmp.join("out");
    let out = run_vmm(
        &[
            "bench",
            "--iterations",
            "2",
            "--warmup",
            "1",
            "--parallel",
            "2",
            "--systems",
            "runc,unshare",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        LIMIT,
        None,
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    // The terminal table.
    for sys in ["runc", "unshare"] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(sys))
            .unwrap_or_else(|| panic!("{}", out.stdout));
        assert_eq!(line.split_whitespace().nth(1), Some("4"), "{line}");
    }
    let csv = read(&out_dir, "samples.csv");
    let rows = rows(&csv);
    // Two counted rounds of two starts per system; the warm-up round's
    // starts are not among them.
    assert_eq!(rows.len(), 8, "{csv}");
    let iterations: Vec<&str> = rows.iter().map(|r| r["iteration"].as_str()).collect();
    assert_eq!(
        iterations,
        ["0", "0", "0", "0", "1", "1", "1", "1"],
        "{csv}"
    );
    for r in &rows {
        let ready: f64 = r["ready_ms"].parse().unwrap_or_else(|_| panic!("{csv}"));
        assert!(ready > 0.0 && ready < 60_000.0, "{csv}");
        let rss: u64 = r["peak_rss_kib"].parse().unwrap();
        assert!(rss > 0, "{csv}");
    }
    // Interleaved, two at a time: runc x2, unshare x2, runc x2, unshare x2;
    // each pair shares its batch time, which no instance's time exceeds.
    let order: Vec<&str> = rows.iter().map(|r| r["system"].as_str()).collect();
    assert_eq!(
        order,
        ["runc", "runc", "unshare", "unshare", "runc", "runc", "unshare", "unshare"]
    );
    for pair in rows.chunks(2) {
        assert_eq!(pair[0]["batch_ms"], pair[1]["batch_ms"], "{csv}");
        assert_eq!(
            (pair[0]["instance"].as_str(), pair[1]["instance"].as_str()),
            ("0", "1")
        );
        let batch: f64 = pair[0]["batch_ms"].parse().unwrap();
        for r in pair {
            assert!(
                r["ready_ms"].parse::<f64>().unwrap() <= batch + 1.0,
                "{csv}"
            );
        }
    }
    let md = read(&out_dir, "report.md");
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert!(md.contains(&format!("Linux {}", host.trim())), "{md}");
    assert!(md.contains("| runc | 4 |"), "{md}");
    assert!(
        md.contains("2 iteration(s) after 1 warm-up round(s) not counted"),
        "{md}"
    );
    assert!(md.contains("## 2 at once"), "{md}");
    let svg = read(&out_dir, "chart.svg");
    assert!(
        svg.contains(">runc</text>") && svg.contains(">unshare</text>"),
        "{svg}"
    );
    // No container is left behind.
    let list = std::process::Command::new("runc")
        .arg("list")
        .output()
        .unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    assert!(!list.contains("vmm-bench-"), "{list}");
}

#[test]
fn bad_bench_options_are_usage_errors() {
    for (args, says) in [
        (
            &["bench", "--iterations", "0"][..],
            "invalid value '0' for '--iterations <N>'",
        ),
        (
            &["bench", "--iterations", "-3"][..],
            "invalid value '-3' for '--iterations <N>'",
        ),
        (
            &["bench", "--parallel", "0"][..],
            "invalid value '0' for '--parallel <K>'",
        ),
        (
            &["bench", "--warmup", "101"][..],
            "invalid value '101' for '--warmup <N>'",
        ),
        (
            &["bench", "--warmup", "-1"][..],
            "invalid value '-1' for '--warmup <N>'",
        ),
        (
            &["bench", "--systems", "vmm,docker"][..],
            "invalid value 'docker' for '--systems <LIST>': unknown system 'docker'",
        ),
    ] {
        let out = run_vmm(args, Duration::from_secs(30), None);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
}

#[test]
fn an_image_the_bench_cannot_find_or_read_is_refused_before_any_start() {
    if !prereq::require([Need::that(
        vmm_tests::default_guest().is_some(),
        "the default guest (guest-kernels/build.sh)",
    )]) {
        return;
    }
    let tmp = vmm_tests::TempDir::new("bench-image");
    let missing = tmp.join("no-such-image").display().to_string();
    let out = run_vmm(
        &["bench", "--image", &missing],
        Duration::from_secs(30),
        None,
    );
    assert_eq!(out.code, Some(vmm_cli::exit::code::FILE), "{}", out.stderr);
    assert!(
        out.stderr.contains("no such directory or file"),
        "{}",
        out.stderr
    );
    std::fs::create_dir(tmp.join("empty")).unwrap();
    let empty = tmp.join("empty").display().to_string();
    let out = run_vmm(&["bench", "--image", &empty], Duration::from_secs(30), None);
    assert_eq!(
        out.code,
        Some(vmm_cli::exit::code::CONTAINER_IMAGE),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "nothing was measured: {}",
        out.stdout
    );
}

/// Slow: one boot of the default guest (about a minute and a half on an
/// emulated KVM, well under a second on VT-x/AMD-V).
#[test]
fn slow_one_vm_boot_gives_its_phases_and_the_guest_kernel() {
    let Some(_) = default_guest_or_skip(&[]) else {
        return;
    };
    let tmp = TempDir::new("bench-vm");
    let out_dir = tmp.join("out");
    let out = run_vmm(
        &[
            "bench",
            "--iterations",
            "1",
            "--warmup",
            "0",
            "--systems",
            "vmm",
            "--out",
            out_dir.to_str().unwrap(),
        ],
        LIMIT,
        None,
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    let csv = read(&out_dir, "samples.csv");
    let rows = rows(&csv);
    assert_eq!(rows.len(), 1, "{csv}");
    let r = &rows[0];
    let ms = |k: &str| -> f64 { r[k].parse().unwrap_or_else(|_| panic!("{k}: {csv}")) };
    assert!(ms("vm_built_ms") <= ms("first_kvm_run_ms"), "{csv}");
    assert!(
        ms("first_kvm_run_ms") <= ms("first_console_output_ms"),
        "{csv}"
    );
    assert!(
        ms("first_console_output_ms") <= ms("kernel_runs_init_ms"),
        "{csv}"
    );
    // The VMM stamps the kernel's init line as it passes, before the bench
    // sees it (the two clocks start a few ms apart).
    assert!(ms("kernel_runs_init_ms") <= ms("ready_ms") + 50.0, "{csv}");
    let md = read(&out_dir, "report.md");
    assert!(md.contains("its own kernel, Linux 6.12"), "{md}");
    // The VM's build broken down into the VMM's steps.
    for step in [
        "VMM: start, check, open files",
        "VMM: kernel and initrd loaded",
        "VMM: vCPUs",
    ] {
        assert!(md.contains(step), "{step}: {md}");
    }
}

/// `vmm bench` runs the `vmm-bench` binary beside `vmm`; without it, a
/// clear error and exit code 4 (a file missing), and `vmm-bench` itself
/// measures the `vmm` named by --vmm.
#[test]
fn vmm_bench_is_found_beside_vmm() {
    let tmp = TempDir::new("bench-alone");
    let lone = tmp.join("vmm");
    std::fs::copy(vmm_tests::vmm_bin(), &lone).unwrap();
    let out = std::process::Command::new(&lone)
        .args(["bench", "--iterations", "1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains(&format!("{} not found", tmp.join("vmm-bench").display())),
        "{stderr}"
    );
    // vmm-bench with a --vmm that does not exist: the VM's start fails
    // and the run says the system was never ready (exit 1).
    if default_guest_or_skip(&[]).is_none() {
        return;
    }
    let bench = vmm_tests::vmm_bin().with_file_name("vmm-bench");
    let out = std::process::Command::new(&bench)
        .args(["--iterations", "1", "--warmup", "0", "--systems", "vmm"])
        .arg("--vmm")
        .arg(tmp.join("no-such-vmm"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("never ready: vmm"), "{stderr}");
}
