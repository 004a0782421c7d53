//! Layer 2: the VMM boots tiny guests that these tests assemble themselves,
//! and its exit code and output are checked. Each runs in milliseconds even
//! on an emulated KVM.

use std::time::Duration;

use prereq::Need;
use vmm_tests::{asm, kvm_is_emulated, run_vmm, tiny_elf, TempDir};

const LIMIT: Duration = Duration::from_secs(60);

/// A guest that spins (`jmp $`) until the VMM is stopped.
fn spin() -> Vec<u8> {
    tiny_elf(&[0xeb, 0xfe])
}

fn boot(code: &[u8], extra: &[&str]) -> vmm_tests::Outcome {
    let dir = TempDir::new("tiny");
    let kernel = dir.write("tiny.elf", &tiny_elf(code));
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "16M",
        "--cmdline",
        "",
    ];
    args.extend_from_slice(extra);
    run_vmm(&args, LIMIT, None)
}

#[test]
fn prints_on_the_serial_port_then_resets() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"Hello from a tiny guest\n");
    code.extend(asm::reset());
    let out = boot(&code, &[]);
    assert!(!out.timed_out, "{out:?}");
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "Hello from a tiny guest\n");
    assert!(
        out.stderr.contains("guest reset the VM (i8042"),
        "{}",
        out.stderr
    );
}

#[test]
fn serial_output_to_a_file_and_to_nowhere() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"to file\n");
    code.extend(asm::reset());
    let dir = TempDir::new("serial");
    let log = dir.join("console.log");
    let arg = format!("file:{}", log.display());
    let out = boot(&code, &["--serial", &arg]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "to file\n");
    let out = boot(&code, &["--serial", "none"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "");
}

#[test]
fn a_triple_fault_is_a_guest_crash() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"about to fault\n");
    // The faulting load follows `mov rax, imm64` (10 bytes).
    let fault_at = vmm_tests::TINY_GUEST_ADDR + code.len() as u64 + 10;
    code.extend(asm::fault());
    let out = boot(&code, &[]);
    assert!(!out.timed_out, "{out:?}");
    assert_eq!(out.stdout, "about to fault\n");
    assert_eq!(out.code, Some(7), "{}", out.stderr);
    // The RIP of the fault where KVM keeps it (Intel, kvm_pvm); on AMD KVM
    // resets the vCPU before reporting the shutdown, and the VMM says so.
    assert!(
        out.stderr
            .contains(&format!("triple fault on vCPU 0 at RIP {fault_at:#x}"))
            || out
                .stderr
                .contains("triple fault on vCPU 0 (RIP unknown: KVM put the vCPU"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_instruction_the_host_cannot_emulate() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"A");
    let popcnt_at = vmm_tests::TINY_GUEST_ADDR + code.len() as u64;
    code.extend_from_slice(&asm::POPCNT);
    code.extend(asm::print(b"B"));
    code.extend(asm::reset());
    let out = boot(&code, &[]);
    assert!(!out.timed_out, "{out:?}");
    if kvm_is_emulated() {
        // KVM's emulator stops on popcnt: exit code 8 with RIP and bytes.
        assert_eq!(out.stdout, "A");
        assert_eq!(out.code, Some(8), "{}", out.stderr);
        assert!(
            out.stderr.contains(&format!("at RIP {popcnt_at:#x}")),
            "{}",
            out.stderr
        );
        assert!(out.stderr.contains("f3 48 0f b8 c3"), "{}", out.stderr);
    } else {
        // On VT-x/AMD-V the instruction simply runs.
        assert_eq!(out.stdout, "AB");
        assert_eq!(out.code, Some(0), "{}", out.stderr);
    }
}

#[test]
fn two_vcpus_boot_and_the_bsp_resets() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"smp\n");
    code.extend(asm::reset());
    let out = boot(&code, &["--vcpus", "2"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout, "smp\n");
    assert!(out.stderr.contains("2 vCPU(s)"), "{}", out.stderr);
}

#[test]
fn the_emulated_host_adaptation_is_logged_and_can_be_turned_off() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"x");
    code.extend(asm::reset());
    let on = boot(&code, &["--emulated-host", "on"]);
    assert_eq!(on.code, Some(0), "{}", on.stderr);
    assert!(
        on.stderr.contains("adapting the guest to an emulated KVM"),
        "{}",
        on.stderr
    );
    assert!(
        on.stderr.contains("clearcpuid=<28 features> lpj=5000000"),
        "{}",
        on.stderr
    );
    assert!(on.stderr.contains("clearcpuid=smap,smep"), "{}", on.stderr);
    assert!(on.stderr.contains("no_int3_selftest"), "{}", on.stderr);
    let off = boot(&code, &["--emulated-host", "off"]);
    assert_eq!(off.code, Some(0), "{}", off.stderr);
    assert!(
        !off.stderr.contains("emulated KVM detected"),
        "{}",
        off.stderr
    );
    assert!(!off.stderr.contains("clearcpuid"), "{}", off.stderr);
}

#[test]
fn a_user_clearcpuid_is_extended_not_replaced() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"x");
    code.extend(asm::reset());
    let dir = TempDir::new("tiny");
    let kernel = dir.write("tiny.elf", &tiny_elf(&code));
    let args = [
        "run",
        "--kernel",
        kernel.to_str().unwrap(),
        "--memory",
        "16M",
        "--emulated-host",
        "on",
        "--cmdline",
        "console=ttyS0 clearcpuid=mce lpj=42",
    ];
    let out = run_vmm(&args, LIMIT, None);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("clearcpuid=mce,smap,smep,"),
        "{}",
        out.stderr
    );
    let cmdline = out
        .stderr
        .lines()
        .find_map(|l| l.split_once("vCPU(s), command line: ").map(|(_, c)| c))
        .expect("the VMM logs the guest command line");
    assert!(cmdline.contains(",x2apic "), "{cmdline}");
    assert!(cmdline.contains("lpj=42 "), "{cmdline}");
    assert!(!cmdline.contains("lpj=5000000"), "{cmdline}");
}

#[test]
fn sigterm_tears_the_vm_down_cleanly() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("sigterm");
    // Print a mark, then spin forever.
    let mut code = asm::print(b"up\n");
    code.extend_from_slice(&[0xeb, 0xfe]);
    let k = dir.write("k.elf", &tiny_elf(&code));
    let mut cmd = std::process::Command::new(vmm_tests::vmm_bin());
    cmd.args(["run", "--kernel", k.to_str().unwrap(), "--memory", "16"]);
    let mut sent = false;
    let out = vmm_tests::run_until(cmd, LIMIT, |serial, child| {
        if !sent && serial.contains("up") {
            // SAFETY: kill has no memory preconditions; the pid is our child's.
            unsafe { libc::kill(child as i32, libc::SIGTERM) };
            sent = true;
        }
        false
    });
    assert!(!out.timed_out, "{out:?}");
    assert_eq!(out.code, Some(128 + 15), "{}", out.stderr);
    assert!(
        out.stderr.contains("stopped by signal 15"),
        "{}",
        out.stderr
    );
}

/// The log line of a boot phase: its time in ms.
fn phase_ms(log: &str, name: &str) -> Option<f64> {
    let key = format!("phase {name} at ");
    let rest = &log[log.find(&key)? + key.len()..];
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn the_boot_timer_port_and_page_mark_init_reached_after_the_other_phases() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    // Port 0x440: mov dx, 0x440; mov al, 123; out dx, al.
    let port: Vec<u8> = vec![0x66, 0xba, 0x40, 0x04, 0xb0, 123, 0xee];
    // MMIO page at 0xc0000000: mov eax, 0xc0000000; mov byte [rax], 123.
    let page: Vec<u8> = vec![0xb8, 0x00, 0x00, 0x00, 0xc0, 0xc6, 0x00, 123];
    for (what, write) in [("port", port), ("page", page)] {
        let mut code = asm::print(b"booting\n");
        // A wrong value first: not a mark.
        code.extend_from_slice(&[0x66, 0xba, 0x40, 0x04, 0xb0, 7, 0xee]);
        code.extend(write);
        code.extend(asm::reset());
        let out = boot(&code, &[]);
        assert_eq!(out.code, Some(0), "{what}: {}", out.stderr);
        let log = &out.stderr;
        let built = phase_ms(log, "vm_built").expect(log);
        let run = phase_ms(log, "first_kvm_run").expect(log);
        let output = phase_ms(log, "first_console_output").expect(log);
        let init = phase_ms(log, "init_reached").unwrap_or_else(|| panic!("{what}: {log}"));
        assert!(
            built <= run && run <= output && output <= init,
            "{what}: {log}"
        );
        assert_eq!(log.matches("phase init_reached").count(), 1, "{log}");
    }
    // Without the write there is no mark.
    let mut code = asm::print(b"booting\n");
    code.extend(asm::reset());
    let out = boot(&code, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(!out.stderr.contains("init_reached"), "{}", out.stderr);
}

#[test]
fn the_kernels_init_line_on_the_console_is_a_phase() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let mut code = asm::print(b"[    1.000000] Run /init as init process\r\n");
    code.extend(asm::reset());
    let out = boot(&code, &[]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        phase_ms(&out.stderr, "kernel_runs_init").is_some(),
        "{}",
        out.stderr
    );
}

/// VmRSS of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    vmm::host::proc_field(&status, "VmRSS:").unwrap()
}

/// A guest that writes to the serial port without end, with the VMM's
/// stdout closed or read slowly: the VMM's memory stays flat, and it still
/// stops cleanly on SIGTERM.
#[test]
fn a_serial_flood_to_a_closed_or_slow_stdout_does_not_grow_memory() {
    use std::io::Read;
    use std::process::{Command, Stdio};
    if !prereq::require([Need::kvm()]) {
        return;
    }
    // mov dx, 0x3f8; l: mov al, 'x'; out dx, al; jmp l
    let flood = [0x66, 0xba, 0xf8, 0x03, 0xb0, b'x', 0xee, 0xeb, 0xfb];
    let dir = TempDir::new("flood");
    let kernel = dir.write("flood.elf", &tiny_elf(&flood));
    for slow in [false, true] {
        let mut child = Command::new(vmm_tests::vmm_bin())
            .args([
                "run",
                "--kernel",
                kernel.to_str().unwrap(),
                "--memory",
                "16M",
            ])
            .args(["--cmdline", "", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let reader = if slow {
            // 1 KiB every 50 ms: far slower than the guest writes.
            Some(std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let mut total = 0usize;
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n;
                    std::thread::sleep(Duration::from_millis(50));
                }
                total
            }))
        } else {
            drop(out); // closed: every write fails with EPIPE
            None
        };
        std::thread::sleep(Duration::from_millis(1500));
        let early = rss_kib(child.id());
        std::thread::sleep(Duration::from_secs(4));
        let late = rss_kib(child.id());
        assert!(
            late <= early + 512,
            "slow={slow}: RSS grew from {early} KiB to {late} KiB"
        );
        // SAFETY: kill takes plain integers; the child is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(143), "slow={slow}");
        let mut log = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert!(!log.contains("panicked"), "{log}");
        if slow {
            let got = reader.unwrap().join().unwrap();
            assert!(got > 0, "the slow reader got the guest's output");
        } else {
            assert_eq!(
                log.matches("serial: output failed").count(),
                1,
                "said once: {log}"
            );
        }
    }
}

/// A terminal's settings.
fn termios(fd: i32) -> libc::termios {
    // SAFETY: termios is plain data; tcgetattr fills it from a descriptor
    // this test holds open.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::tcgetattr(fd, &mut t) }, 0);
    t
}

fn modes(t: &libc::termios) -> [libc::tcflag_t; 4] {
    [t.c_iflag, t.c_oflag, t.c_cflag, t.c_lflag]
}

/// SIGINT, SIGHUP and SIGTERM end the VM cleanly with exit code 128+N
/// (130, 129, 143), and the terminal the console was on, which the VMM put
/// in raw mode, is as it was before.
#[test]
fn stop_signals_exit_128_plus_n_and_restore_the_terminal() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::process::{Command, Stdio};
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("signals");
    let kernel = dir.write("spin.elf", &spin());
    for (sig, code) in [
        (libc::SIGINT, 130),
        (libc::SIGHUP, 129),
        (libc::SIGTERM, 143),
    ] {
        let (mut master, mut slave) = (-1, -1);
        // SAFETY: openpty writes two descriptors it opens into the two
        // integers; no name, settings or size are passed.
        let made = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(made, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        use std::os::fd::AsRawFd;
        let before = termios(slave.as_raw_fd());
        assert_ne!(before.c_lflag & libc::ICANON, 0, "a new terminal is cooked");
        let mut child = Command::new(vmm_tests::vmm_bin())
            .args([
                "run",
                "--kernel",
                kernel.to_str().unwrap(),
                "--memory",
                "16M",
            ])
            .args(["--cmdline", ""])
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The VMM puts the terminal in raw mode before the guest runs.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while termios(slave.as_raw_fd()).c_lflag & libc::ICANON != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "signal {sig}: the terminal never went raw"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: kill takes plain integers; the child is not reaped yet.
        unsafe { libc::kill(child.id() as i32, sig) };
        let status = child.wait().unwrap();
        let mut log = String::new();
        use std::io::Read;
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut log)
            .unwrap();
        assert_eq!(status.code(), Some(code), "signal {sig}: {log}");
        assert!(
            log.contains(&format!("stopped by signal {sig}; VM torn down")),
            "{log}"
        );
        assert_eq!(
            modes(&termios(slave.as_raw_fd())),
            modes(&before),
            "signal {sig}: the terminal was not restored"
        );
        drop(master);
    }
}

/// The seccomp mode of each thread of `pid` (2: filtered), by name.
fn seccomp_modes(pid: u32) -> Vec<(String, String)> {
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let mode = status
            .lines()
            .find_map(|l| l.strip_prefix("Seccomp:"))
            .unwrap_or("")
            .trim()
            .to_string();
        v.push((name.trim().to_string(), mode));
    }
    v
}

/// Every thread of a running VM has its filter (mode 2) by default, none
/// with --seccomp off; a bad value is a usage error.
#[test]
fn every_thread_is_filtered_unless_seccomp_is_off() {
    use std::process::{Command, Stdio};
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("seccomp");
    let kernel = dir.write("spin.elf", &spin());
    let k = kernel.to_str().unwrap();
    let cli = ["run", "--kernel", k, "--memory", "16M"]
        .into_iter()
        .chain(["--cmdline", "", "--vcpus", "2", "--serial", "none"])
        .map(String::from)
        .collect::<Vec<_>>();
    // The same VM from a config file, with x-vmm.seccomp.
    let file = |seccomp: bool| -> Vec<String> {
        let doc = serde_json::json!({
            "boot-source": {"kernel_image_path": k, "boot_args": ""},
            "machine-config": {"vcpu_count": 2, "mem_size_mib": 16},
            "x-vmm": {"serial": "none", "seccomp": seccomp}
        });
        let path = dir.write(
            &format!("seccomp-{seccomp}.json"),
            doc.to_string().as_bytes(),
        );
        vec![
            "run".into(),
            "--config-file".into(),
            path.display().to_string(),
        ]
    };
    let with = |extra: &[&str]| -> Vec<String> {
        cli.iter()
            .cloned()
            .chain(extra.iter().map(|a| a.to_string()))
            .collect()
    };
    for (args, want) in [
        (cli.clone(), "2"),
        (with(&["--seccomp", "off"]), "0"),
        (file(true), "2"),
        (file(false), "0"),
    ] {
        let mut child = Command::new(vmm_tests::vmm_bin())
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Wait for both vCPU threads to be up.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let modes = loop {
            let m = seccomp_modes(child.id());
            if m.iter().filter(|(n, _)| n.starts_with("vcpu")).count() == 2 {
                std::thread::sleep(Duration::from_millis(300));
                break seccomp_modes(child.id());
            }
            assert!(std::time::Instant::now() < deadline, "{args:?}: {m:?}");
            std::thread::sleep(Duration::from_millis(20));
        };
        // SAFETY: kill takes plain integers; the child is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        assert_eq!(child.wait().unwrap().code(), Some(143), "{args:?}");
        assert!(modes.iter().all(|(_, m)| m == want), "{args:?}: {modes:?}");
    }
    let out = run_vmm(&["run", "--seccomp", "maybe"], LIMIT, None);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("invalid value 'maybe' for '--seccomp <on|off>'"),
        "{}",
        out.stderr
    );
}

/// A guest that breaks its virtio-blk queue (an avail index more than a
/// ring ahead) finds the device marked DEVICE_NEEDS_RESET with a
/// configuration interrupt; after a reset and a new set-up the same device
/// serves a read, and the disk file is untouched.
#[test]
fn a_broken_virtio_ring_needs_reset_and_a_reset_brings_the_device_back() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    const MMIO: u64 = 0xd000_0000; // virtio-mmio slot 0: the first disk
    const DESC: u32 = 0x30_0000;
    const AVAIL: u32 = 0x30_1000;
    const USED: u32 = 0x30_2000;
    const HEADER: u32 = 0x30_3000;
    const DATA: u32 = 0x30_4000;
    const STATUS: u32 = 0x30_5000;
    const QUEUE_SIZE: u32 = 8;
    use devices::virtio::mmio::*;
    let (reg_status, reg_notify, reg_irq_status) = (
        REG_STATUS as u32,
        REG_QUEUE_NOTIFY as u32,
        REG_INTERRUPT_STATUS as u32,
    );
    let set_up = || {
        let mut c = Vec::new();
        for (reg, v) in [
            (reg_status, 0), // reset
            (reg_status, 1),
            (reg_status, 3),
            (REG_DRIVER_FEATURES_SEL as u32, 1), // bits 32..63
            (REG_DRIVER_FEATURES as u32, 1),     // VIRTIO_F_VERSION_1
            (reg_status, 0xb),
            (REG_QUEUE_SEL as u32, 0),
            (REG_QUEUE_NUM as u32, QUEUE_SIZE),
            (REG_QUEUE_DESC_LOW as u32, DESC),
            (REG_QUEUE_DESC_HIGH as u32, 0),
            (REG_QUEUE_DRIVER_LOW as u32, AVAIL),
            (REG_QUEUE_DRIVER_HIGH as u32, 0),
            (REG_QUEUE_DEVICE_LOW as u32, USED),
            (REG_QUEUE_DEVICE_HIGH as u32, 0),
            (REG_QUEUE_READY as u32, 1),
            (reg_status, 0xf),
        ] {
            c.extend(asm::store_rbx(reg, v));
        }
        c
    };
    // The guest has no IDT and runs with interrupts off: like any guest
    // without interrupt handlers it masks the PIC, so the configuration
    // interrupt stays pending there; it reads the interrupt status
    // register instead.
    let mut code = asm::mask_pic();
    code.extend(asm::print(b"start\n"));
    code.extend(asm::mov_rbx(MMIO));
    code.extend(set_up());
    // Break the ring and notify; wait for DEVICE_NEEDS_RESET.
    code.extend(asm::store16(AVAIL + 2, QUEUE_SIZE as u16 + 1));
    code.extend(asm::store_rbx(reg_notify, 0));
    let mut check = asm::load_rbx(reg_status);
    check.extend(asm::test_eax(0x40));
    code.extend(asm::wait(&check, false));
    code.extend(asm::print(b"needs reset\n"));
    code.extend(asm::load_rbx(reg_irq_status));
    code.extend(asm::test_eax(2));
    code.extend(asm::if_nonzero(&asm::print(b"config interrupt\n")));
    // Reset, set up again and read sector 0 into DATA.
    code.extend(set_up());
    for (i, (addr, len, flags, next)) in [
        (HEADER, 16, 1, 1), // request header, NEXT
        (DATA, 512, 3, 2),  // data, NEXT | WRITE
        (STATUS, 1, 2, 0),  // status, WRITE
    ]
    .into_iter()
    .enumerate()
    {
        let d = DESC + 16 * i as u32;
        code.extend(asm::store32(d, addr));
        code.extend(asm::store32(d + 4, 0));
        code.extend(asm::store32(d + 8, len));
        code.extend(asm::store16(d + 12, flags));
        code.extend(asm::store16(d + 14, next));
    }
    code.extend(asm::store32(HEADER, 0)); // VIRTIO_BLK_T_IN
    code.extend(asm::store32(HEADER + 8, 0)); // sector 0
    code.extend(asm::store8(STATUS, 0xff));
    code.extend(asm::store16(AVAIL + 4, 0)); // ring[0]: descriptor 0
    code.extend(asm::store16(AVAIL + 2, 1));
    code.extend(asm::store_rbx(reg_notify, 0));
    let mut check = asm::load16(USED + 2);
    check.extend(asm::cmp_eax(1));
    code.extend(asm::wait(&check, true));
    code.extend(asm::load8(STATUS));
    code.extend(asm::test_eax(0xff));
    code.extend(asm::if_zero(&asm::print(b"status ok\n")));
    code.extend(asm::print_memory(DATA, 8));
    code.extend(asm::print(b"\n"));
    code.extend(asm::reset());

    let dir = TempDir::new("needs-reset");
    let mut disk = b"DISKDATA".to_vec();
    disk.resize(4096, 0x5a);
    let disk_path = dir.write("disk.img", &disk);
    let out = boot(&code, &["--disk", disk_path.to_str().unwrap()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.stdout, "start\nneeds reset\nconfig interrupt\nstatus ok\nDISKDATA\n",
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("needs reset: queue 0: the driver's avail index 9 is 9 entries ahead"),
        "{}",
        out.stderr
    );
    assert_eq!(std::fs::read(&disk_path).unwrap(), disk);
}
