//! Snapshots from the command line, on tiny guests: `vmm snapshot` asks a
//! running VMM's API for a snapshot directory (and resumes it, or stops
//! it with --stop), `vmm run --from DIR` restores it in a new process, and
//! every refusal has its exit code and message. (A template's command,
//! which needs the guest's init, is proved on the nested host.)

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prereq::Need;
use vmm_cli::exit::code;
use vmm_tests::api_client::Client;
use vmm_tests::{asm, run_vmm, tiny_elf, vmm_bin, TempDir};

const LIMIT: Duration = Duration::from_secs(60);

/// A guest that prints "tick" on its console forever.
fn ticking(dir: &TempDir) -> std::path::PathBuf {
    let mut code = asm::mask_pic();
    let start = code.len();
    code.extend(asm::print(b"tick\n"));
    let back = -((code.len() - start + 5) as i32);
    code.push(0xe9); // jmp rel32, back to the print
    code.extend_from_slice(&back.to_le_bytes());
    dir.write("tick.elf", &tiny_elf(&code))
}

fn wait_for_socket(sock: &Path) -> Client {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Ok(mut c) = Client::connect(sock) {
            if c.call("GET", "/", None).is_ok() {
                return c;
            }
        }
        assert!(Instant::now() < deadline, "the API socket never answered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn vmm(args: &[&str]) -> vmm_tests::Outcome {
    run_vmm(args, LIMIT, None)
}

#[test]
fn vmm_snapshot_writes_a_directory_that_vmm_run_from_restores() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("snapshot-cli");
    let kernel = ticking(&dir);
    let sock = dir.join("vm.sock");
    let snap = dir.join("snap");
    let (s, k, d) = (
        sock.to_str().unwrap(),
        kernel.to_str().unwrap(),
        snap.to_str().unwrap(),
    );
    let mut child = Command::new(vmm_bin())
        .args(["run", "--kernel", k, "--memory", "16M", "--cmdline", ""])
        .args(["--serial", "none", "--api-sock", s])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = wait_for_socket(&sock);
    // Snapshot and resume: the VM runs on.
    let out = vmm(&["snapshot", "--api-sock", s, d]);
    assert_eq!(out.code, Some(code::OK), "{}", out.stderr);
    assert!(out.stdout.contains("snapshot"), "{}", out.stdout);
    for f in ["vm.state", "vm.mem"] {
        assert!(snap.join(f).exists(), "{f} missing");
    }
    let a = c.call("GET", "/", None).unwrap();
    assert!(a.body.contains("Running"), "{}", a.body);
    // Snapshot and stop: the VMM ends as for SIGTERM.
    let out = vmm(&[
        "snapshot",
        "--api-sock",
        s,
        "--stop",
        dir.join("snap2").to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(code::OK), "{}", out.stderr);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(dir.join("snap2").join("vm.state").exists());
    drop(child.stderr.take());

    // Firecracker's --describe-snapshot gives the state file's version.
    let describe = |path: &Path| {
        let mut cmd = Command::new(vmm_tests::firecracker_bin());
        cmd.arg("--describe-snapshot").arg(path);
        vmm_tests::run_until(cmd, LIMIT, |_, _| false)
    };
    let out = describe(&snap.join("vm.state"));
    assert_eq!(
        (out.code, out.stdout.trim()),
        (Some(0), "v1"),
        "{}",
        out.stderr
    );
    let out = describe(&snap.join("vm.mem"));
    assert_eq!(out.code, Some(code::SNAPSHOT), "{}", out.stderr);
    assert!(out.stderr.contains("not a state file"), "{}", out.stderr);
    let out = describe(&dir.join("none"));
    assert_eq!(out.code, Some(code::FILE), "{}", out.stderr);

    // A new process restores the VM: the guest goes on printing.
    let out = run_vmm(&["run", "--from", d], LIMIT, Some("tick"));
    assert!(out.stdout.contains("tick"), "{} {}", out.stdout, out.stderr);
    assert!(!out.timed_out, "{}", out.stderr);
    assert!(out.stderr.contains("restored"), "{}", out.stderr);

    // Refusals, each with its code and what is wrong.
    let refused = |args: &[&str], want: i32, says: &str| {
        let out = vmm(args);
        assert_eq!(out.code, Some(want), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    };
    refused(
        &["run", "--from", d, "--", "true"],
        code::CONFIG,
        "not a template",
    );
    refused(
        &["run", "--from", d, "--kernel", k],
        code::CONFIG,
        "--kernel",
    );
    refused(
        &["run", "--from", d, "--net", "tap=t0,mac=02:00:00:00:00:01"],
        code::CONFIG,
        "MAC is the snapshot's",
    );
    refused(
        &["run", "--from", d, "--net", "tap=t0"],
        code::CONFIG,
        "no network interface 'eth0'",
    );
    let missing = dir.join("missing");
    refused(
        &["run", "--from", missing.to_str().unwrap()],
        code::FILE,
        "vm.state",
    );
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let mut state = std::fs::read(snap.join("vm.state")).unwrap();
    std::fs::copy(snap.join("vm.mem"), bad.join("vm.mem")).unwrap();
    let mid = state.len() / 2;
    state[mid] ^= 0x20;
    std::fs::write(bad.join("vm.state"), &state).unwrap();
    refused(
        &["run", "--from", bad.to_str().unwrap()],
        code::SNAPSHOT,
        "corrupt",
    );
    std::fs::copy(snap.join("vm.state"), bad.join("vm.state")).unwrap();
    std::fs::write(bad.join("vm.mem"), vec![0u8; 4096]).unwrap();
    refused(
        &["run", "--from", bad.to_str().unwrap()],
        code::SNAPSHOT,
        "4096 bytes",
    );
    refused(
        &[
            "snapshot",
            "--api-sock",
            dir.join("none.sock").to_str().unwrap(),
            d,
        ],
        code::FILE,
        "none.sock",
    );
}

#[test]
fn a_template_whose_init_never_gets_ready_is_refused_in_time() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("template-cli");
    let kernel = ticking(&dir);
    let t = dir.join("t");
    let out = vmm(&[
        "template",
        "create",
        t.to_str().unwrap(),
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "16M",
        "--cmdline",
        "",
        "--ready-timeout",
        "1",
    ]);
    assert_eq!(out.code, Some(code::VMM_ERROR), "{}", out.stderr);
    assert!(
        out.stderr.contains("did not say it was ready"),
        "{}",
        out.stderr
    );
    assert!(!t.join("vm.state").exists());
    // Its boot went to the template's boot.log.
    let log = std::fs::read_to_string(t.join("boot.log")).unwrap();
    assert!(log.contains("tick"), "{log}");
    // A stop signal while waiting ends the VMM at once, as for `run`.
    let mut child = Command::new(vmm_bin())
        .args(["template", "create", dir.join("t2").to_str().unwrap()])
        .args([
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "16M",
            "--cmdline",
            "",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill takes plain integers; the child is ours and alive.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + 15));
    assert!(started.elapsed() < Duration::from_secs(30));
    assert!(!dir.join("t2").join("vm.state").exists());
    let out = vmm(&["template", "create", t.to_str().unwrap(), "--", "true"]);
    assert_eq!(out.code, Some(code::CONFIG), "{}", out.stderr);
    assert!(out.stderr.contains("takes no command"), "{}", out.stderr);
}
