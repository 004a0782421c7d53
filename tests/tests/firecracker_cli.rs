//! The vmm binary as `firecracker` and `vmm run --api-sock`: Firecracker's
//! command line, the API socket's life (a stale socket replaced, any other
//! file refused, the socket removed at exit), and a VM configured and
//! started through the API the way Firecracker's SDKs do it.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use prereq::Need;
use vmm_tests::api_client::{Answer, Client};
use vmm_tests::swagger::Swagger;
use vmm_tests::{asm, firecracker_bin, run_until, tiny_elf, vmm_bin, TempDir};

const LIMIT: Duration = Duration::from_secs(60);

fn firecracker(args: &[&str]) -> vmm_tests::Outcome {
    let mut cmd = Command::new(firecracker_bin());
    cmd.args(args);
    run_until(cmd, LIMIT, |_, _| false)
}

/// A guest that prints `text` and resets (the VM's end: exit 0).
fn hello(dir: &TempDir, text: &[u8]) -> std::path::PathBuf {
    let mut code = asm::print(text);
    code.extend(asm::reset());
    dir.write("hello.elf", &tiny_elf(&code))
}

#[test]
fn version_and_the_flags_this_vmm_refuses() {
    let out = firecracker(&["--version"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stdout.starts_with("Firecracker v"), "{}", out.stdout);
    for (args, says) in [
        (vec!["--seccomp-filter", "/f.bpf"], "--seccomp-filter"),
        (vec!["--enable-pci"], "--enable-pci"),
        (vec!["--no-api"], "--config-file"),
        (vec!["--bogus"], "--bogus"),
    ] {
        let out = firecracker(&args);
        assert_eq!(out.code, Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn a_path_that_is_not_a_stale_socket_is_refused_and_left_alone() {
    let dir = TempDir::new("fc-path");
    let file = dir.write("not-a-socket", b"keep me");
    let out = firecracker(&["--api-sock", file.to_str().unwrap()]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("api-sock"), "{}", out.stderr);
    assert!(out.stderr.contains("not a socket"), "{}", out.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    let out = vmm_tests::run_vmm(
        &[
            "run",
            "--kernel",
            "/nonexistent",
            "--api-sock",
            file.to_str().unwrap(),
        ],
        LIMIT,
        None,
    );
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn the_config_file_without_the_api_and_harmless_flags() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("fc-noapi");
    let kernel = hello(&dir, b"hello from a config file\n");
    let metrics = dir.join("metrics.json");
    let config = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": ""}},
            "machine-config": {{"vcpu_count": 1, "mem_size_mib": 16}},
            "logger": {{"level": "Info", "show_level": true}}}}"#,
        kernel.display()
    );
    let cfg = dir.write("vm.json", config.as_bytes());
    let out = firecracker(&[
        "--no-api",
        "--config-file",
        cfg.to_str().unwrap(),
        "--boot-timer",
        "--mmds-size-limit",
        "51200",
        "--start-time-us",
        "1",
        "--start-time-cpu-us",
        "1",
        "--parent-cpu-time-us",
        "1",
        "--id",
        "vm1",
        "--metrics-path",
        metrics.to_str().unwrap(),
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "hello from a config file\n");
    assert_eq!(vmm_tests::metrics_document(&metrics)["state"], "ended");
}

/// `c.call(...)`, its answer checked against Firecracker's swagger file.
fn checked(c: &mut Client, method: &str, uri: &str, body: Option<&str>) -> Answer {
    static SWAGGER: std::sync::OnceLock<Swagger> = std::sync::OnceLock::new();
    let a = c.call(method, uri, body).unwrap();
    SWAGGER
        .get_or_init(Swagger::load)
        .check_answer(method, uri, a.status, &a.body)
        .unwrap_or_else(|e| panic!("{e}"));
    a
}

fn wait_for_socket(sock: &Path) -> Client {
    let deadline = Instant::now() + LIMIT;
    loop {
        // As the SDK does: GET /machine-config until it answers.
        if let Ok(mut c) = Client::connect(sock) {
            if c.call("GET", "/", None).is_ok() {
                let a = checked(&mut c, "GET", "/machine-config", None);
                assert_eq!(a.status, 200, "{}", a.body);
                return c;
            }
        }
        assert!(Instant::now() < deadline, "the API socket never answered");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_vm_configured_and_started_through_the_api_as_the_sdk_does() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("fc-api");
    let kernel = hello(&dir, b"hello through the API\n");
    let sock = dir.join("fc.sock");
    let log = dir.join("fc.log");
    let child = Command::new(firecracker_bin())
        .args(["--api-sock", sock.to_str().unwrap(), "--id", "sdk-like"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = wait_for_socket(&sock);
    let calls = [
        (
            "PUT",
            "/logger",
            format!(
                r#"{{"log_path": "{}", "level": "Debug", "show_level": true, "show_log_origin": true}}"#,
                log.display()
            ),
        ),
        (
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 16}"#.into(),
        ),
        (
            "PUT",
            "/boot-source",
            format!(
                r#"{{"kernel_image_path": "{}", "boot_args": ""}}"#,
                kernel.display()
            ),
        ),
    ];
    for (m, uri, body) in &calls {
        let a = checked(&mut c, m, uri, Some(body));
        assert_eq!(a.status, 204, "{m} {uri}: {}", a.body);
    }
    let a = checked(&mut c, "GET", "/", None);
    assert!(a.body.contains(r#""id":"sdk-like""#), "{}", a.body);
    let a = checked(
        &mut c,
        "PUT",
        "/actions",
        Some(r#"{"action_type": "InstanceStart"}"#),
    );
    assert_eq!(a.status, 204, "{}", a.body);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through the API\n"
    );
    assert!(!sock.exists(), "the socket outlived the VMM");
    // The log went to the file, with level and origin.
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("guest reset the VM"), "{logged}");
    assert!(
        logged.contains("INFO") && logged.contains(".rs:"),
        "{logged}"
    );
}

#[test]
fn vmm_run_with_the_api_replaces_a_stale_socket_and_removes_it_at_the_end() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("run-api");
    let kernel = dir.write("spin.elf", &tiny_elf(&[0xeb, 0xfe]));
    let sock = dir.join("vm.sock");
    drop(UnixListener::bind(&sock).unwrap()); // left behind
    assert!(sock.exists());
    let child = Command::new(vmm_bin())
        .args([
            "run",
            "--kernel",
            kernel.to_str().unwrap(),
            "--memory",
            "16M",
        ])
        .args(["--cmdline", "", "--api-sock", sock.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut c = wait_for_socket(&sock);
    let a = checked(&mut c, "GET", "/", None);
    assert!(a.body.contains("Running"), "{}", a.body);
    let a = checked(&mut c, "PATCH", "/vm", Some(r#"{"state": "Paused"}"#));
    assert_eq!(a.status, 204, "{}", a.body);
    let a = checked(&mut c, "GET", "/", None);
    assert!(a.body.contains("Paused"), "{}", a.body);
    let a = checked(
        &mut c,
        "PUT",
        "/boot-source",
        Some(r#"{"kernel_image_path": "/k"}"#),
    );
    assert_eq!(a.status, 400);
    // SAFETY: kill takes plain integers; the child is ours and alive.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(128 + 15), "{stderr}");
    assert!(stderr.contains("stopped by signal 15"), "{stderr}");
    assert!(!sock.exists(), "the socket outlived the VMM");
}
