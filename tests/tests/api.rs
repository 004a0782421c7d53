//! Firecracker's REST API on a live server in this process: every answer
//! checked against Firecracker's swagger file, a tiny guest started,
//! paused, resumed and given a new disk through it, and hostile clients
//! that must not keep other clients from their answers or the guest from
//! its work.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prereq::Need;
use vm_memory::{Bytes, GuestAddress};
use vmm::config::{SerialOutput, VmConfig};
use vmm::config_file::Overrides;
use vmm::{VmEnd, VmHandle, Vmm};
use vmm_api::{Controller, NoPolicy, Served};
use vmm_sys_util::eventfd::EventFd;
use vmm_tests::api_client::{self, Client};
use vmm_tests::swagger::Swagger;
use vmm_tests::{tiny_elf, TempDir};

/// A guest that counts at 0x3004 forever.
fn counting() -> Vec<u8> {
    tiny_elf(&[0xff, 0x04, 0x25, 0x04, 0x30, 0x00, 0x00, 0xeb, 0xf7])
}

/// A server with its controller, served on a thread of its own (the
/// front end's thread, here).
struct Live {
    sock: PathBuf,
    stop: EventFd,
    thread: Option<JoinHandle<Served>>,
}

impl Live {
    fn start(dir: &TempDir, controller: Controller, options: vmm_api::Options) -> Live {
        let sock = dir.join("api.sock");
        let listener = vmm_api::bind(&sock).unwrap();
        let stop = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let theirs = stop.try_clone().unwrap();
        let path = sock.clone();
        let thread = std::thread::spawn(move || {
            let mut controller = controller;
            let server = vmm_api::ApiServer::start(listener, &path, options).unwrap();
            let fd = std::os::fd::AsRawFd::as_raw_fd(&theirs);
            vmm_api::serve(&mut controller, &server, Some(fd), &|| {
                theirs.read().ok().map(|_| libc::SIGTERM)
            })
        });
        Live {
            sock,
            stop,
            thread: Some(thread),
        }
    }

    fn client(&self) -> Client {
        Client::connect(&self.sock).unwrap()
    }

    fn end(mut self) -> Served {
        self.stop.write(1).unwrap();
        let served = self.thread.take().unwrap().join().unwrap();
        assert!(!self.sock.exists(), "the socket is removed with the server");
        served
    }
}

/// Sends each request, checks its status, what its answer says and that
/// the answer is one Firecracker's swagger file allows.
fn expect(
    swagger: &Swagger,
    c: &mut Client,
    cases: &[(&str, &str, Option<&str>, u16, &str)],
) -> Vec<String> {
    let mut bodies = Vec::new();
    for (method, uri, body, status, says) in cases {
        let a = c.call(method, uri, *body).unwrap();
        assert_eq!(a.status, *status, "{method} {uri} {body:?}: {}", a.body);
        assert!(
            a.body.contains(says),
            "{method} {uri}: {} lacks {says}",
            a.body
        );
        swagger
            .check_answer(method, uri, a.status, &a.body)
            .unwrap_or_else(|e| panic!("{e}"));
        bodies.push(a.body);
    }
    bodies
}

fn new_controller() -> Controller {
    Controller::new(
        "api-test".into(),
        Overrides::default(),
        Instant::now(),
        Box::new(NoPolicy),
    )
}

#[test]
fn answers_before_the_start_follow_the_swagger_file() {
    let swagger = Swagger::load();
    let dir = TempDir::new("api-preboot");
    let kernel = dir.write("k.elf", &counting());
    let disk = dir.write("disk.img", &vec![0u8; 1 << 20]);
    let live = Live::start(&dir, new_controller(), vmm_api::Options::default());
    let mut c = live.client();
    let k = kernel.display().to_string();
    let d = disk.display().to_string();
    let boot = format!(r#"{{"kernel_image_path": "{k}", "boot_args": "console=ttyS0"}}"#);
    let drive = format!(
        r#"{{"drive_id": "scratch", "path_on_host": "{d}", "is_root_device": false, "is_read_only": true}}"#
    );
    let bodies = expect(
        &swagger,
        &mut c,
        &[
            ("GET", "/", None, 200, r#""state":"Not started""#),
            ("GET", "/version", None, 200, "firecracker_version"),
            ("GET", "/machine-config", None, 200, r#""vcpu_count":1"#),
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 2, "mem_size_mib": 64}"#),
                204,
                "",
            ),
            (
                "PATCH",
                "/machine-config",
                Some(r#"{"mem_size_mib": 32}"#),
                204,
                "",
            ),
            ("GET", "/machine-config", None, 200, r#""mem_size_mib":32"#),
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 0, "mem_size_mib": 64}"#),
                400,
                "machine-config.vcpu_count",
            ),
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 2, "mem_size_mib": 64, "smt": "yes"}"#),
                400,
                "smt",
            ),
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 2, "mem_size": 64}"#),
                400,
                "unknown field",
            ),
            (
                "PUT",
                "/machine-config",
                Some("{\"vcpu_count\": "),
                400,
                "invalid JSON",
            ),
            ("PUT", "/machine-config", None, 400, "needs a JSON body"),
            (
                "PUT",
                "/boot-source",
                Some(r#"{"kernel_image_path": "/nonexistent/vmlinux"}"#),
                400,
                "boot-source.kernel_image_path",
            ),
            ("PUT", "/boot-source", Some(&boot), 204, ""),
            ("PUT", "/drives/scratch", Some(&drive), 204, ""),
            ("PUT", "/drives/other", Some(&drive), 400, "does not match"),
            (
                "PUT",
                "/drives/bad",
                Some(
                    r#"{"drive_id": "bad", "path_on_host": "/nonexistent", "is_root_device": false}"#,
                ),
                400,
                "path_on_host",
            ),
            (
                "PUT",
                "/network-interfaces/eth0",
                Some(r#"{"iface_id": "eth0", "host_dev_name": "bad/name"}"#),
                400,
                "host_dev_name",
            ),
            (
                "PUT",
                "/network-interfaces/eth0",
                Some(r#"{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "zz"}"#),
                400,
                "guest_mac",
            ),
            (
                "PUT",
                "/logger",
                Some(r#"{"level": "Loud"}"#),
                400,
                "not a level",
            ),
            (
                "PUT",
                "/metrics",
                Some(r#"{"metrics_path": "/m", "emit_id": true}"#),
                400,
                "emit_id",
            ),
            (
                "PATCH",
                "/vm",
                Some(r#"{"state": "Paused"}"#),
                400,
                "before starting",
            ),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "SendCtrlAltDel"}"#),
                400,
                "before starting",
            ),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "FlushMetrics"}"#),
                400,
                "once the microVM is started",
            ),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "Shutdown"}"#),
                400,
                "unknown variant",
            ),
            (
                "PATCH",
                "/drives/scratch",
                Some(r#"{"drive_id": "scratch", "path_on_host": "/x"}"#),
                400,
                "before starting",
            ),
            (
                "PUT",
                "/balloon",
                Some(r#"{"amount_mib": 1, "deflate_on_oom": true}"#),
                400,
                "balloon device is not supported",
            ),
            (
                "PUT",
                "/vsock",
                Some(r#"{"guest_cid": 3, "uds_path": "/v"}"#),
                400,
                "vsock is not supported",
            ),
            ("PUT", "/mmds", Some("{}"), 400, "MMDS"),
            ("PUT", "/entropy", Some("{}"), 400, "virtio-rng"),
            ("PUT", "/cpu-config", Some("{}"), 400, "CPU templates"),
            ("PUT", "/serial", Some("{}"), 400, "serial"),
            (
                "PUT",
                "/pmem/p0",
                Some(r#"{"id": "p0", "path_on_host": "/p"}"#),
                400,
                "virtio-pmem",
            ),
            ("PUT", "/hotplug/memory", Some("{}"), 400, "hotplug"),
            (
                "PUT",
                "/snapshot/create",
                Some(r#"{"mem_file_path": "/m", "snapshot_path": "/s"}"#),
                400,
                "before starting",
            ),
            (
                "PUT",
                "/snapshot/load",
                Some(r#"{"snapshot_path": "/s"}"#),
                400,
                "boot-specific resources",
            ),
            (
                "GET",
                "/nothing/here",
                None,
                400,
                "Invalid request method and/or path",
            ),
            (
                "DELETE",
                "/drives/scratch",
                None,
                400,
                "Invalid request method and/or path: DELETE",
            ),
            ("GET", "/vm/config", None, 200, "boot-source"),
        ],
    );
    // GET /vm/config is a config file that `vmm config check` accepts.
    let doc = bodies.last().unwrap();
    let file = dir.write("vm.json", doc.as_bytes());
    let out = std::process::Command::new(vmm_tests::vmm_bin())
        .args(["config", "check"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let checked: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(checked["machine-config"]["mem_size_mib"], 32);
    assert_eq!(checked["drives"][0]["drive_id"], "scratch");
    assert_eq!(live.end(), Served::Signalled(libc::SIGTERM));
}

fn counter(vm: &VmHandle) -> u32 {
    vm.memory().read_obj::<u32>(GuestAddress(0x3004)).unwrap()
}

fn rising(vm: &VmHandle) -> bool {
    let before = counter(vm);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if counter(vm) != before {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

#[test]
fn a_vm_started_paused_resumed_and_given_a_new_disk_through_the_api() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let swagger = Swagger::load();
    let dir = TempDir::new("api-run");
    let kernel = dir.write("k.elf", &counting());
    let old = dir.write("old.img", &vec![1u8; 1 << 20]);
    let new = dir.write("new.img", &vec![2u8; 2 << 20]);
    let metrics = dir.join("metrics.json");
    let live = Live::start(&dir, new_controller(), vmm_api::Options::default());
    let mut c = live.client();
    let boot = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": ""}}"#,
        kernel.display()
    );
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false}}"#,
        old.display()
    );
    let swap = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}"}}"#,
        new.display()
    );
    let metrics_body = format!(r#"{{"metrics_path": "{}"}}"#, metrics.display());
    let no_disk = r#"{"drive_id": "data", "path_on_host": "/nonexistent"}"#;
    expect(
        &swagger,
        &mut c,
        &[
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 1, "mem_size_mib": 16}"#),
                204,
                "",
            ),
            ("PUT", "/boot-source", Some(&boot), 204, ""),
            ("PUT", "/drives/data", Some(&drive), 204, ""),
            ("PUT", "/metrics", Some(&metrics_body), 204, ""),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "InstanceStart"}"#),
                204,
                "",
            ),
            ("GET", "/", None, 200, r#""state":"Running""#),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "InstanceStart"}"#),
                400,
                "after starting",
            ),
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 1, "mem_size_mib": 16}"#),
                400,
                "after starting",
            ),
            ("PUT", "/boot-source", Some(&boot), 400, "after starting"),
            ("PUT", "/drives/data", Some(&drive), 400, "after starting"),
            ("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), 204, ""),
            ("GET", "/", None, 200, r#""state":"Paused""#),
            ("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), 204, ""),
            ("GET", "/", None, 200, r#""state":"Running""#),
            ("PATCH", "/drives/data", Some(&swap), 204, ""),
            (
                "PATCH",
                "/drives/data",
                Some(no_disk),
                400,
                "drives.path_on_host",
            ),
            (
                "PATCH",
                "/drives/nope",
                Some(r#"{"drive_id": "nope", "path_on_host": "/x"}"#),
                400,
                "no drive has the id",
            ),
            (
                "PATCH",
                "/network-interfaces/eth0",
                Some(r#"{"iface_id": "eth0"}"#),
                400,
                "no interface",
            ),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "FlushMetrics"}"#),
                204,
                "",
            ),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "SendCtrlAltDel"}"#),
                204,
                "",
            ),
            ("GET", "/vm/config", None, 200, "new.img"),
        ],
    );
    let doc = vmm_tests::metrics_document(&metrics);
    assert_eq!(doc["state"], "running", "{doc}");
    assert_eq!(live.end(), Served::VmEnded(VmEnd::Signal(libc::SIGTERM)));
    let doc = vmm_tests::metrics_document(&metrics);
    assert_eq!(doc["state"], "ended", "{doc}");
}

/// Starts a counting guest and serves the API for it.
fn running(dir: &TempDir, options: vmm_api::Options) -> (Live, VmHandle) {
    let kernel = dir.write("k.elf", &counting());
    let mut config = VmConfig::with_defaults(kernel, None);
    config.mem_mib = 16;
    config.cmdline = String::new();
    config.serial = SerialOutput::None;
    let handle = Vmm::build(&config, Instant::now())
        .unwrap()
        .start()
        .unwrap();
    let controller =
        Controller::running("hostile".into(), config, handle.clone(), Box::new(NoPolicy));
    (Live::start(dir, controller, options), handle)
}

fn get_root_works(sock: &Path) -> Duration {
    let t = Instant::now();
    let mut c = Client::connect(sock).unwrap();
    let a = c.call("GET", "/", None).unwrap();
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(a.body.contains("Running"), "{}", a.body);
    t.elapsed()
}

#[test]
fn hostile_clients_neither_stop_other_clients_nor_disturb_the_guest() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    vmm::seccomp::install_sigsys_handler(99).unwrap();
    let dir = TempDir::new("api-hostile");
    let options = vmm_api::Options {
        max_payload: 4096,
        stall_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let (live, vm) = running(&dir, options);
    let sock = live.sock.clone();
    let mut answered = 0u64;

    // Half a request, then silence: others are answered meanwhile, and
    // the stalled connection is closed after the stall timeout.
    let mut stalled = UnixStream::connect(&sock).unwrap();
    stalled
        .write_all(b"PUT /machine-config HTTP/1.1\r\nContent-Le")
        .unwrap();
    let slowest = (0..20).map(|_| get_root_works(&sock)).max().unwrap();
    answered += 20;
    stalled
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = stalled.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a stalled half request got an answer");

    // Hundreds of connections at once, each answered.
    let mut many: Vec<Client> = (0..300).map(|_| live.client()).collect();
    for c in &mut many {
        c.send("GET", "/", None).unwrap();
    }
    for c in &mut many {
        assert_eq!(c.read_answer().unwrap().status, 200);
        answered += 1;
    }
    let held = many.len();

    // A body far over the limit: refused, the connection closed.
    let mut big = live.client();
    let huge = format!(r#"{{"kernel_image_path": "{}"}}"#, "x".repeat(1 << 20));
    let head = format!(
        "PUT /boot-source HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        huge.len()
    );
    big.stream().write_all(head.as_bytes()).unwrap();
    let _ = big.stream().write_all(&huge.as_bytes()[..65536]);
    let a = big.read_answer().unwrap();
    assert_eq!(a.status, 400);
    assert!(
        a.body.contains("larger than the limit of 4096"),
        "{}",
        a.body
    );
    assert!(a.close);
    answered += 1;

    // Bytes that are not UTF-8, nor HTTP.
    let mut junk = live.client();
    junk.stream()
        .write_all(b"\xff\xfe\xfd GET \x00\x01\r\n\r\n")
        .unwrap();
    let a = junk.read_answer().unwrap();
    assert_eq!(a.status, 400, "{}", a.body);
    answered += 1;
    let mut junk_body = live.client();
    let head = b"PUT /machine-config HTTP/1.1\r\nContent-Length: 4\r\n\r\n\xff\xfe\xfd\xfc";
    junk_body.stream().write_all(head).unwrap();
    let a = junk_body.read_answer().unwrap();
    assert_eq!(a.status, 400);
    assert!(a.body.contains("not UTF-8"), "{}", a.body);
    answered += 1;

    // Pipelined requests in one write: every answer, in order.
    let mut piped = live.client();
    let mut bytes = Vec::new();
    for i in 0..100 {
        if i % 2 == 0 {
            bytes.extend(api_client::request("GET", "/", None));
        } else {
            bytes.extend(api_client::request("GET", "/nope", None));
        }
    }
    piped.stream().write_all(&bytes).unwrap();
    for i in 0..100 {
        let a = piped.read_answer().unwrap();
        assert_eq!(a.status, if i % 2 == 0 { 200 } else { 400 }, "answer {i}");
        answered += 1;
    }

    // A connection closed mid-request.
    {
        let mut gone = UnixStream::connect(&sock).unwrap();
        gone.write_all(b"PUT /vm HTTP/1.1\r\nContent-Length: 40\r\n\r\n{\"sta")
            .unwrap();
    }
    // A client that sends and never reads its answers.
    let mut deaf = UnixStream::connect(&sock).unwrap();
    deaf.set_nonblocking(true).unwrap();
    let one = api_client::request("GET", "/version", None);
    let mut sent = 0;
    for _ in 0..20_000 {
        match deaf.write(&one) {
            Ok(n) if n == one.len() => sent += 1,
            _ => break,
        }
    }
    assert!(sent > 0);

    // Still: answers for everyone else, and the guest counts on.
    let after = (0..20).map(|_| get_root_works(&sock)).max().unwrap();
    answered += 20;
    assert!(rising(&vm), "the guest stopped counting");
    eprintln!(
        "api: {held} connections held at once, {answered} requests answered, a deaf client \
         sent {sent} requests; slowest GET / beside a stalled client {:.1} ms, after the \
         others {:.1} ms; the guest counted on",
        slowest.as_secs_f64() * 1e3,
        after.as_secs_f64() * 1e3
    );
    drop(many);
    assert_eq!(live.end(), Served::VmEnded(VmEnd::Signal(libc::SIGTERM)));
}

/// The counter (at 0x3004) in a memory file.
fn counter_in(mem_file: &Path) -> u32 {
    let bytes = std::fs::read(mem_file).unwrap();
    u32::from_le_bytes(bytes[0x3004..0x3008].try_into().unwrap())
}

/// Firecracker's snapshot flow on two servers: A boots a counting guest,
/// is refused a snapshot while running (and a Diff one), pauses and writes
/// a Full one; B, fresh, refuses what it cannot load (a page server, dirty
/// page tracking, two memory sources, an interface the snapshot lacks) and
/// loads it with `resume_vm`: its guest counts on from A's count (B's own
/// snapshot holds a higher one). A third server, configured already,
/// refuses to load.
#[test]
fn a_snapshot_made_through_the_api_is_loaded_by_a_new_server_and_runs_on() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let swagger = Swagger::load();
    let dir = TempDir::new("api-snapshot");
    let kernel = dir.write("k.elf", &counting());
    let data = dir.write("data.img", &vec![1u8; 1 << 20]);
    let (state_a, mem_a) = (dir.join("a.state"), dir.join("a.mem"));
    let a = Live::start(&dir, new_controller(), vmm_api::Options::default());
    let mut c = a.client();
    let boot = format!(
        r#"{{"kernel_image_path": "{}", "boot_args": ""}}"#,
        kernel.display()
    );
    let drive = format!(
        r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false}}"#,
        data.display()
    );
    let create = |kind: &str, state: &Path, mem: &Path| {
        format!(
            r#"{{"snapshot_type": "{kind}", "snapshot_path": "{}", "mem_file_path": "{}"}}"#,
            state.display(),
            mem.display()
        )
    };
    let full = create("Full", &state_a, &mem_a);
    let diff = create("Diff", &state_a, &mem_a);
    expect(
        &swagger,
        &mut c,
        &[
            (
                "PUT",
                "/snapshot/create",
                Some(&full),
                400,
                "before starting",
            ),
            (
                "PUT",
                "/machine-config",
                Some(r#"{"vcpu_count": 1, "mem_size_mib": 16}"#),
                204,
                "",
            ),
            ("PUT", "/boot-source", Some(&boot), 204, ""),
            ("PUT", "/drives/data", Some(&drive), 204, ""),
            (
                "PUT",
                "/actions",
                Some(r#"{"action_type": "InstanceStart"}"#),
                204,
                "",
            ),
            (
                "PUT",
                "/snapshot/create",
                Some(&full),
                400,
                "must be paused",
            ),
            ("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), 204, ""),
            ("PUT", "/snapshot/create", Some(&diff), 400, "Diff"),
        ],
    );
    // A snapshot once the guest has counted.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        expect(
            &swagger,
            &mut c,
            &[("PUT", "/snapshot/create", Some(&full), 204, "")],
        );
        if counter_in(&mem_a) > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the guest does not count");
        expect(
            &swagger,
            &mut c,
            &[("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), 204, "")],
        );
        std::thread::sleep(Duration::from_millis(50));
        expect(
            &swagger,
            &mut c,
            &[("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), 204, "")],
        );
    }
    drop(c);
    a.end();
    let saved = counter_in(&mem_a);

    let b_dir = TempDir::new("api-snapshot-b");
    let b = Live::start(&b_dir, new_controller(), vmm_api::Options::default());
    let mut c = b.client();
    let load = |extra: &str| format!(r#"{{"snapshot_path": "{}", {extra}}}"#, state_a.display());
    let mem = format!(r#""mem_file_path": "{}""#, mem_a.display());
    let backend = |kind: &str| {
        format!(
            r#""mem_backend": {{"backend_type": "{kind}", "backend_path": "{}"}}"#,
            mem_a.display()
        )
    };
    let (state_b, mem_b) = (dir.join("b.state"), dir.join("b.mem"));
    let full_b = create("Full", &state_b, &mem_b);
    expect(
        &swagger,
        &mut c,
        &[
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&backend("Uffd"))),
                400,
                "Uffd",
            ),
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&format!("{mem}, \"track_dirty_pages\": true"))),
                400,
                "dirty page",
            ),
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&format!("{mem}, {}", backend("File")))),
                400,
                "exactly one",
            ),
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&format!(
                    r#"{mem}, "network_overrides": [{{"iface_id": "eth0", "host_dev_name": "t0"}}]"#
                ))),
                400,
                "no network interface 'eth0'",
            ),
            ("GET", "/", None, 200, r#""state":"Not started""#),
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&format!("{}, \"resume_vm\": true", backend("File")))),
                204,
                "",
            ),
            ("GET", "/", None, 200, r#""state":"Running""#),
            ("GET", "/vm/config", None, 200, "data.img"),
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&mem)),
                400,
                "after the microVM is started",
            ),
        ],
    );
    // B's guest counts on from A's count.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        expect(
            &swagger,
            &mut c,
            &[
                ("PATCH", "/vm", Some(r#"{"state": "Paused"}"#), 204, ""),
                ("PUT", "/snapshot/create", Some(&full_b), 204, ""),
                ("PATCH", "/vm", Some(r#"{"state": "Resumed"}"#), 204, ""),
            ],
        );
        if counter_in(&mem_b) > saved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B's guest did not count on from {saved}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(c);
    b.end();

    let c_dir = TempDir::new("api-snapshot-c");
    let third = Live::start(&c_dir, new_controller(), vmm_api::Options::default());
    let mut c = third.client();
    expect(
        &swagger,
        &mut c,
        &[
            ("PUT", "/boot-source", Some(&boot), 204, ""),
            (
                "PUT",
                "/snapshot/load",
                Some(&load(&mem)),
                400,
                "boot-specific resources",
            ),
        ],
    );
    drop(c);
    third.end();
}
