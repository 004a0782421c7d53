//! Bad input gets a clear message and its documented exit code, before any
//! VM is created.

use std::time::Duration;

use vmm_tests::{run_vmm, tiny_elf, TempDir};

const LIMIT: Duration = Duration::from_secs(30);

fn run(args: &[&str]) -> vmm_tests::Outcome {
    let out = run_vmm(args, LIMIT, None);
    assert!(!out.timed_out, "{out:?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    out
}

#[test]
fn missing_kernel_is_a_file_error() {
    let out = run(&["run", "--kernel", "/nonexistent/vmlinux"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("kernel '/nonexistent/vmlinux'"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("No such file"), "{}", out.stderr);
}

#[test]
fn missing_initrd_is_a_file_error() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--initrd",
        "/nonexistent/initrd",
    ]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("initrd '/nonexistent/initrd'"),
        "{}",
        out.stderr
    );
}

#[test]
fn kernel_that_is_a_directory() {
    let out = run(&["run", "--kernel", "/"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("is a directory"), "{}", out.stderr);
}

#[test]
fn a_file_that_is_not_a_kernel_is_an_image_error() {
    let dir = TempDir::new("cli");
    let k = dir.write("notakernel", b"#!/bin/sh\necho hello\n");
    let out = run(&["run", "--kernel", k.to_str().unwrap()]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(out.stderr.contains("not a Linux kernel"), "{}", out.stderr);
    let empty = dir.write("empty", b"");
    let out = run(&["run", "--kernel", empty.to_str().unwrap()]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
}

/// The kernels the fuzzer found (fuzz/regressions/kernel_image/): a
/// bzImage cut inside its header (it panicked the VMM) and kernels that end
/// past guest RAM are image errors (exit 5), never a panic.
#[test]
fn kernels_the_fuzzer_found_are_image_errors() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions/kernel_image");
    for (name, says) in [
        ("bzimage-truncated-in-header", "truncated"),
        ("elf-memsz-past-ram", "past the RAM"),
        ("bzimage-end-past-ram", "past the RAM"),
    ] {
        let k = dir.join(name);
        let out = run(&["run", "--kernel", k.to_str().unwrap(), "--memory", "32M"]);
        assert_eq!(out.code, Some(5), "{name}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{name}: {}", out.stderr);
        assert!(!out.stderr.contains("panicked"), "{name}: {}", out.stderr);
    }
}

#[test]
fn a_32bit_elf_is_an_image_error() {
    let dir = TempDir::new("cli");
    let mut elf = tiny_elf(&[0xf4]);
    elf[4] = 1; // ELFCLASS32
    let k = dir.write("k32", &elf);
    let out = run(&["run", "--kernel", k.to_str().unwrap()]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("not a 64-bit x86 image"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_memory_values() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let k = k.to_str().unwrap();
    let out = run(&["run", "--kernel", k, "--memory", "0"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("invalid memory '0'"), "{}", out.stderr);
    let out = run(&["run", "--kernel", k, "--memory", "64T"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("more than the host can give"),
        "{}",
        out.stderr
    );
    let out = run(&["run", "--kernel", k, "--memory", "lots"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--memory"), "{}", out.stderr);
}

#[test]
fn bad_vcpu_counts() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let k = k.to_str().unwrap();
    let out = run(&["run", "--kernel", k, "--vcpus", "0"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("invalid vcpus '0'"), "{}", out.stderr);
    let out = run(&["run", "--kernel", k, "--vcpus", "5000"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("vcpus"), "{}", out.stderr);
}

#[test]
fn bad_serial_and_flags_are_usage_errors() {
    let out = run(&["run", "--serial", "tty"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("expected stdio, file:PATH or none"),
        "{}",
        out.stderr
    );
    let out = run(&["run", "--no-such-flag"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("unexpected argument '--no-such-flag' found"),
        "{}",
        out.stderr
    );
    let out = run(&["run", "--smt=maybe"]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(out.stderr.contains("--smt"), "{}", out.stderr);
}

#[test]
fn an_unwritable_metrics_file_is_a_config_error_before_the_vm() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--metrics",
        "/nonexistent-dir/metrics.json",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("invalid metrics '/nonexistent-dir/metrics.json'"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("KVM"),
        "nothing of the VM was made: {}",
        out.stderr
    );
}

#[test]
fn a_command_line_too_long_is_a_config_error() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let long = "x".repeat(3000);
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--cmdline", &long]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("invalid cmdline"), "{}", out.stderr);
}

#[test]
fn missing_default_guest_says_how_to_build_it() {
    let dir = TempDir::new("cli");
    let out = run_vmm_env(&["run"], &[("VMM_GUEST_DIR", dir.0.to_str().unwrap())]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("guest-kernels/build.sh"),
        "{}",
        out.stderr
    );
}

fn run_vmm_env(args: &[&str], env: &[(&str, &str)]) -> vmm_tests::Outcome {
    let out = std::process::Command::new(vmm_tests::vmm_bin())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    vmm_tests::Outcome {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        timed_out: false,
    }
}

#[test]
fn bad_disks() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let k = k.to_str().unwrap();
    let out = run(&["run", "--kernel", k, "--disk", "/nonexistent/disk.img"]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(
        out.stderr.contains("disk '/nonexistent/disk.img'"),
        "{}",
        out.stderr
    );
    let d = dir.0.to_str().unwrap();
    let out = run(&["run", "--kernel", k, "--disk", d]);
    assert_eq!(out.code, Some(4), "{}", out.stderr);
    assert!(out.stderr.contains("is a directory"), "{}", out.stderr);
    let odd = dir.write("odd.img", &[0u8; 1000]);
    let out = run(&["run", "--kernel", k, "--disk", odd.to_str().unwrap()]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("not a positive multiple of 512"),
        "{}",
        out.stderr
    );
    let good = dir.write("good.img", &[0u8; 4096]);
    let g = format!("{},root", good.display());
    let out = run(&["run", "--kernel", k, "--disk", &g, "--disk", &g]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("only one disk can be the root disk"),
        "{}",
        out.stderr
    );
    let bad_opt = format!("{},rw", good.display());
    let out = run(&["run", "--kernel", k, "--disk", &bad_opt]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("unknown disk option 'rw'"),
        "{}",
        out.stderr
    );
    // A raw file given as an overlay: no overlay header, an image error.
    let raw_as_overlay = format!("{},overlay", good.display());
    let out = run(&["run", "--kernel", k, "--disk", &raw_as_overlay]);
    assert_eq!(out.code, Some(5), "{}", out.stderr);
    assert!(
        out.stderr.contains("no overlay magic number"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_network_options_are_usage_errors() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    for (net, says) in [
        ("tap=tap0,mac=zz:00:00:00:00:01", "not a MAC address"),
        ("tap=tap0,mac=02:00:00:00:01", "not a MAC address"),
        ("tap=tap0,mac=01:00:5e:00:00:01", "multicast"),
        ("tap=a234567890123456", "at most 15"),
        ("tap=tap0,speed=10", "unknown network option"),
        ("mac=02:00:00:00:00:01", "expected tap=NAME"),
    ] {
        let out = run(&["run", "--kernel", k.to_str().unwrap(), "--net", net]);
        assert_eq!(out.code, Some(2), "{net}: {}", out.stderr);
        assert!(out.stderr.contains(says), "{net}: {}", out.stderr);
    }
}

#[test]
fn duplicate_macs_are_config_errors() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--net",
        "tap=vmmt-a,mac=02:00:00:00:00:07",
        "--net",
        "tap=vmmt-b,mac=02:00:00:00:00:07",
    ]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(out.stderr.contains("same MAC address"), "{}", out.stderr);
}

#[test]
fn dhcp_without_a_network_interface_is_a_config_error() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--dhcp"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("dhcp") && out.stderr.contains("--net tap=NAME"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_tap_that_cannot_be_opened_is_a_network_error_before_kvm() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    // "lo" exists and is not a TAP: TUNSETIFF refuses it for anyone.
    let out = run(&[
        "run",
        "--kernel",
        k.to_str().unwrap(),
        "--log-level",
        "debug",
        "--net",
        "tap=lo",
    ]);
    assert_eq!(out.code, Some(10), "{}", out.stderr);
    assert!(out.stderr.contains("TAP 'lo'"), "{}", out.stderr);
    if std::path::Path::new("/dev/net/tun").exists() {
        assert!(out.stderr.contains("not a TAP device"), "{}", out.stderr);
    }
    assert!(
        !out.stderr.contains("/dev/kvm opened"),
        "KVM was touched: {}",
        out.stderr
    );
}

/// The command after `--` travels on the guest's command line: one too
/// long for it is a configuration error naming the command, before any VM.
#[test]
fn a_command_too_long_for_the_kernel_command_line_is_a_config_error() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let long = "x".repeat(1800);
    let out = run(&["run", "--kernel", k.to_str().unwrap(), "--", "echo", &long]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid command 'echo xxx"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("too long: encoded it takes 2408 of"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("KVM_CREATE_VM"), "{}", out.stderr);
}

/// An empty or non-regular kernel or initrd is no image (exit 5), found
/// before anything waits on it: a FIFO as the kernel must not hang the VMM.
#[test]
fn empty_or_non_regular_kernels_and_initrds_are_image_errors() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let empty = dir.write("empty", b"");
    let fifo = dir.join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    let k = k.to_str().unwrap();
    for (args, said) in [
        (
            vec!["run", "--kernel", k, "--initrd", "/dev/zero"],
            "initrd '/dev/zero': is not a regular file",
        ),
        (
            vec!["run", "--kernel", k, "--initrd", empty.to_str().unwrap()],
            "': is empty",
        ),
        (
            vec!["run", "--kernel", empty.to_str().unwrap()],
            "': is empty",
        ),
        (
            vec!["run", "--kernel", fifo.to_str().unwrap()],
            "': is not a regular file (a FIFO",
        ),
    ] {
        let out = run(&args);
        assert_eq!(out.code, Some(5), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains(said), "{args:?}: {}", out.stderr);
    }
}

/// A disk must be a regular file or a block device: a character device is
/// refused (exit 5) and a FIFO does not hang the VMM.
#[test]
fn a_disk_that_is_neither_a_file_nor_a_block_device_is_refused() {
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for disk in ["/dev/zero", fifo.to_str().unwrap()] {
        for ro in ["", ",ro"] {
            let arg = format!("{disk}{ro}");
            let out = run(&["run", "--kernel", k.to_str().unwrap(), "--disk", &arg]);
            assert_eq!(out.code, Some(5), "{arg}: {}", out.stderr);
            assert!(
                out.stderr
                    .contains("is neither a regular file nor a block device"),
                "{arg}: {}",
                out.stderr
            );
        }
    }
}

/// A config file is read as a stream of at most 1 MiB: `--config
/// /dev/zero` ends with a clear error, and a pipe (as `--config <(...)`
/// gives) is read like a file.
#[test]
fn config_files_are_capped_at_1_mib_and_may_be_pipes() {
    let out = run(&["run", "--config", "/dev/zero"]);
    assert_eq!(out.code, Some(3), "{}", out.stderr);
    assert!(
        out.stderr.contains("larger than 1048576 bytes (1 MiB)"),
        "{}",
        out.stderr
    );
    let dir = TempDir::new("cli");
    let k = dir.write("k.elf", &tiny_elf(&[0xf4]));
    let json = format!(
        r#"{{"boot-source": {{"kernel_image_path": "{}"}}}}"#,
        k.display()
    );
    let mut child = std::process::Command::new(vmm_tests::vmm_bin())
        .args(["config", "check", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&k.display().to_string()), "{stdout}");
}

/// A host block device is a disk like a file, sized by seeking to its end
/// (a loop device the test sets up; root and losetup needed).
#[test]
fn a_loop_device_is_a_disk_of_its_size() {
    use prereq::Need;
    if !prereq::require([Need::root(), Need::tool("losetup", "mount"), Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("loop");
    let backing = dir.write("backing.img", &vec![0u8; 3 << 20]);
    let out = std::process::Command::new("losetup")
        .args(["--find", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || dev.is_empty() {
        prereq::skip(&format!(
            "a loop device (losetup failed: {})",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
        return;
    }
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = std::process::Command::new("losetup")
                .args(["-d", &self.0])
                .status();
        }
    }
    let _detach = Detach(dev.clone());
    let mut code = vmm_tests::asm::print(b"ok\n");
    code.extend(vmm_tests::asm::reset());
    let k = dir.write("k.elf", &tiny_elf(&code));
    for ro in ["", ",ro"] {
        let arg = format!("{dev}{ro}");
        let out = run(&["run", "--kernel", k.to_str().unwrap(), "--disk", &arg]);
        assert_eq!(out.code, Some(0), "{arg}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!(
                "disk {dev} as /dev/vda (read-{}, 3145728 bytes)",
                if ro.is_empty() { "write" } else { "only" }
            )),
            "{arg}: {}",
            out.stderr
        );
    }
}

/// scripts/mutants.sh refuses bad options with exit code 2 and a message
/// naming the option, before it installs, sandboxes or runs anything.
#[test]
fn mutants_sh_refuses_bad_options_with_exit_code_2() {
    let script = vmm_tests::repo_root().join("scripts/mutants.sh");
    for (args, says) in [
        (&["--jobs", "x"][..], "--jobs takes 1 to 99"),
        (&["--jobs", "0"], "--jobs takes 1 to 99"),
        (&["--out"], "--out takes a directory"),
        (&["--out", "/var/x"], "--out must be under /tmp"),
        (&["everything"], "unknown argument 'everything'"),
    ] {
        vmm_tests::assert_script_refuses(&script, args, says);
    }
}
