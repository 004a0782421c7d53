//! Config files through the vmm binary: the examples in examples/ check and
//! resolve as documented, command-line options win over a file, every
//! class of error exits with its code before a VM is created, and a file in
//! Firecracker's documented layout boots the Linux guest to its init.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use vmm::config::{DiskConfig, SerialOutput, VmConfig};
use vmm::config_file::{self, Overrides};
use vmm_tests::{default_guest_or_skip, repo_root, run_until, run_vmm, vmm_bin, Outcome, TempDir};

const LIMIT: Duration = Duration::from_secs(30);

/// `vmm` with `args`, run from the repository root (the examples' paths
/// are relative to it).
fn vmm(args: &[&str]) -> Outcome {
    let mut cmd = Command::new(vmm_bin());
    cmd.args(args).current_dir(repo_root());
    let out = run_until(cmd, LIMIT, |_, _| false);
    assert!(!out.timed_out, "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out
}

/// What `vmm config check` printed, read back through the same parser.
fn resolved(out: &Outcome) -> VmConfig {
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    config_file::parse(Path::new("stdout"), &out.stdout)
        .and_then(|f| f.resolve(Path::new("stdout"), Overrides::default()))
        .unwrap_or_else(|e| panic!("{e}\n{}", out.stdout))
}

#[test]
fn the_examples_check_and_resolve_as_documented() {
    let Some(_) = default_guest_or_skip(&["rootfs.ext4"]) else {
        return;
    };
    let c = resolved(&vmm(&["config", "check", "examples/default-guest.json"]));
    assert!(c.kernel.ends_with("guest-kernels/current/vmlinux"));
    assert!(c.initrd.unwrap().ends_with("initramfs.cpio"));
    assert_eq!((c.vcpus, c.mem_mib), (1, 128));
    assert!(c.disks.is_empty() && c.nets.is_empty());

    let c = resolved(&vmm(&["config", "check", "examples/root-disk.json"]));
    assert_eq!(c.disks.len(), 1);
    assert!(c.disks[0].root && c.disks[0].read_only);
    assert_eq!(c.disks[0].id.as_deref(), Some("rootfs"));

    let out = vmm(&["config", "check", "examples/disk-and-net.json"]);
    let c = resolved(&out);
    assert_eq!((c.vcpus, c.mem_mib), (2, 256));
    assert_eq!(c.nets.len(), 1);
    assert_eq!(c.nets[0].tap, "tap0");
    assert_eq!(c.nets[0].mac, Some([0x06, 0, 0xac, 0x10, 0, 2].into()));
    // The guest command line the VMM would give, with its additions.
    assert!(
        out.stderr
            .contains("ip=172.16.0.2::172.16.0.1:255.255.255.0::eth0:off virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda ro"),
        "{}",
        out.stderr
    );
}

#[test]
fn config_example_prints_a_file_that_checks() {
    let Some(_) = default_guest_or_skip(&[]) else {
        return;
    };
    let out = vmm(&["config", "example"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let tmp = TempDir::new("cfg-example");
    let file = tmp.write("vm.json", out.stdout.as_bytes());
    let c = resolved(&vmm(&["config", "check", file.to_str().unwrap()]));
    assert_eq!(c.kernel, vmm::config::default_guest_dir().join("vmlinux"));
    assert_eq!(c.cmdline, vmm::config::DEFAULT_CMDLINE);
}

#[test]
fn options_win_over_the_file() {
    let Some(_) = default_guest_or_skip(&["rootfs.ext4"]) else {
        return;
    };
    let tmp = TempDir::new("cfg-override");
    let disk = tmp.write("data.img", &[0u8; 4096]);
    let disk_arg = format!("{},ro,id=data", disk.display());
    let c = resolved(&vmm(&[
        "config",
        "check",
        "examples/disk-and-net.json",
        "--memory",
        "512M",
        "--vcpus",
        "4",
        "--smt",
        "--cmdline",
        "console=ttyS0",
        "--serial",
        "none",
        "--disk",
        &disk_arg,
    ]));
    assert_eq!((c.vcpus, c.mem_mib, c.smt), (4, 512, true));
    assert_eq!(c.cmdline, "console=ttyS0");
    assert_eq!(c.serial, SerialOutput::None);
    assert_eq!(
        c.disks,
        vec![DiskConfig {
            path: disk,
            read_only: true,
            id: Some("data".into()),
            root: false,
            partuuid: None,
            format: Default::default(),
        }],
        "--disk replaces the file's drives"
    );
    assert_eq!(c.nets.len(), 1, "the file's interface stays");
    // An override is validated like the file: 3 vCPUs with SMT.
    let out = vmm(&[
        "config",
        "check",
        "examples/default-guest.json",
        "--vcpus",
        "3",
        "--smt",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("1 or even"), "{}", out.stderr);
}

#[test]
fn each_error_class_has_its_message_and_exit_code_before_any_vm() {
    let tmp = TempDir::new("cfg-errors");
    let kernel = repo_root().join("examples/default-guest.json"); // any readable file
    let k = kernel.display();
    for (name, text, code, says) in [
        (
            "syntax",
            "{\n  \"boot-source\": {,\n}".to_string(),
            3,
            "line 2, column 19: invalid JSON: key must be a string",
        ),
        (
            "unknown",
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "drives": [{{"drive_id": "a", "path_on_host": "{k}", "is_root_device": true, "is_readonly": true}}]}}"#
            ),
            3,
            "drives[0].is_readonly: unknown field (line 1, column",
        ),
        (
            "type",
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "machine-config": {{"vcpu_count": 2, "mem_size_mib": "1G"}}}}"#
            ),
            3,
            "machine-config.mem_size_mib (line 1, column",
        ),
        (
            "zero",
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "machine-config": {{"vcpu_count": 0, "mem_size_mib": 128}}}}"#
            ),
            3,
            "machine-config.vcpu_count: 0: must be at least 1",
        ),
        (
            "missing",
            r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#.to_string(),
            3,
            "boot-source.kernel_image_path: '/nonexistent/vmlinux': No such file",
        ),
        (
            "unsupported",
            format!(
                r#"{{"boot-source": {{"kernel_image_path": "{k}"}}, "vsock": {{"guest_cid": 3, "uds_path": "/tmp/v.sock"}}}}"#
            ),
            3,
            "vsock: not supported by this VMM",
        ),
    ] {
        let file = tmp.write(&format!("{name}.json"), text.as_bytes());
        for cmd in [&["run", "--config"][..], &["config", "check"][..]] {
            let mut args = cmd.to_vec();
            args.push(file.to_str().unwrap());
            let out = run_vmm(&args, LIMIT, None);
            assert_eq!(out.code, Some(code), "{name}: {}", out.stderr);
            assert!(out.stderr.contains(says), "{name}: {}", out.stderr);
            assert!(
                !out.stderr.contains("panicked") && out.stderr.lines().count() == 1,
                "{name}: one error line and nothing built: {}",
                out.stderr
            );
        }
    }
    let out = run_vmm(&["run", "--config", "/nonexistent/vm.json"], LIMIT, None);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("config file '/nonexistent/vm.json': No such file"),
        "{}",
        out.stderr
    );
}

/// A config file's Firecracker `logger` section sets `vmm run`'s log up (a
/// file, its level, lines with their level and origin), and a logger the
/// VMM cannot open is refused by name before any VM.
#[test]
fn the_logger_section_sets_the_log_up() {
    use prereq::Need;
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("config-logger");
    let mut code = vmm_tests::asm::print(b"logged\n");
    code.extend(vmm_tests::asm::reset());
    let kernel = dir.write("hello.elf", &vmm_tests::tiny_elf(&code));
    let log = dir.join("vmm.log");
    let file = |log_path: &Path| {
        format!(
            r#"{{"boot-source": {{"kernel_image_path": "{}", "boot_args": ""}},
                "machine-config": {{"vcpu_count": 1, "mem_size_mib": 16}},
                "logger": {{"log_path": "{}", "level": "Debug", "show_level": true, "show_log_origin": true}}}}"#,
            kernel.display(),
            log_path.display()
        )
    };
    let cfg = dir.write("vm.json", file(&log).as_bytes());
    let out = vmm(&["run", "--config", cfg.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "logged\n");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("guest reset the VM"), "{logged}");
    assert!(
        logged.contains("DEBUG") && logged.contains(".rs:"),
        "{logged}"
    );
    assert!(!out.stderr.contains("guest reset the VM"), "{}", out.stderr);
    let bad = dir.write("bad.json", file(&dir.join("no/such/dir/log")).as_bytes());
    let out = vmm(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("invalid logger"), "{}", out.stderr);
    assert!(out.stderr.contains("no/such/dir/log"), "{}", out.stderr);
}
