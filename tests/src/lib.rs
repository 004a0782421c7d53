//! Helpers for the integration tests: locating the `vmm` binary, building
//! tiny guests (a few instructions wrapped in a minimal ELF the VMM boots
//! like a vmlinux), running the VMM with a time limit, and finding the
//! default guest built by guest-kernels/build.sh.

pub mod api_client;
pub mod images;
pub mod swagger;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where tiny guests are loaded and entered (2 MiB, above the kernel floor).
pub const TINY_GUEST_ADDR: u64 = 0x20_0000;

/// The `vmm` binary: `$VMM_BIN`, or the one beside this test's target dir.
pub fn vmm_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("VMM_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/vmm
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("vmm"))
        .expect("target dir");
    assert!(
        bin.is_file(),
        "{} not found: run `cargo build --workspace` (or set VMM_BIN) before these tests",
        bin.display()
    );
    bin
}

/// The vmm binary under the name `firecracker` (a link beside it, made
/// here if missing), as tools that start Firecracker by name find it.
pub fn firecracker_bin() -> PathBuf {
    // Once per process (the tests of one binary run on several threads);
    // made under a name of this process's and renamed, since test binaries
    // run at once may make it too.
    static LINK: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    LINK.get_or_init(|| {
        let vmm = vmm_bin();
        let link = vmm.with_file_name("firecracker");
        if std::fs::read_link(&link).ok().as_deref() != Some(Path::new("vmm")) {
            let tmp = vmm.with_file_name(format!("firecracker.{}", std::process::id()));
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink("vmm", &tmp).expect("the firecracker link");
            std::fs::rename(&tmp, &link).expect("the firecracker link");
        }
        link
    })
    .clone()
}

/// A minimal 64-bit x86 ELF executable with one loadable segment holding
/// `code`, loaded and entered at `TINY_GUEST_ADDR`.
pub fn tiny_elf(code: &[u8]) -> Vec<u8> {
    const CODE_OFFSET: u64 = 0x1000;
    let mut f = Vec::new();
    // ELF header.
    f.extend_from_slice(b"\x7fELF");
    f.extend_from_slice(&[2, 1, 1, 0]); // 64-bit, little endian, version 1, SysV
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&TINY_GUEST_ADDR.to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    f.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    f.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    f.extend_from_slice(&[0; 6]); // e_shentsize, e_shnum, e_shstrndx
                                  // Program header: PT_LOAD, R+X.
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&5u32.to_le_bytes());
    f.extend_from_slice(&CODE_OFFSET.to_le_bytes());
    f.extend_from_slice(&TINY_GUEST_ADDR.to_le_bytes()); // p_vaddr
    f.extend_from_slice(&TINY_GUEST_ADDR.to_le_bytes()); // p_paddr
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    f.resize(CODE_OFFSET as usize, 0);
    f.extend_from_slice(code);
    f
}

/// x86-64 machine code for the tiny guests, assembled by hand.
pub mod asm {
    /// `mov dx, 0x3f8; mov al, b; out dx, al` for each byte of `text`.
    pub fn print(text: &[u8]) -> Vec<u8> {
        let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
        for b in text {
            c.extend_from_slice(&[0xb0, *b, 0xee]); // mov al, b; out dx, al
        }
        c
    }

    /// Masks every line of both 8259 PICs (`mov al, 0xff; out 0x21, al;
    /// out 0xa1, al`): a guest with no IDT keeps device interrupts pending
    /// at the PIC instead of having KVM wait for it to take them.
    pub fn mask_pic() -> Vec<u8> {
        vec![0xb0, 0xff, 0xe6, 0x21, 0xe6, 0xa1]
    }

    /// `mov al, 0xfe; out 0x64, al` (i8042 CPU reset), then `hlt` in a loop.
    pub fn reset() -> Vec<u8> {
        vec![0xb0, 0xfe, 0xe6, 0x64, 0xf4, 0xeb, 0xfd]
    }

    /// Reads from an address no page table maps (64 GiB): a page fault with
    /// no usable IDT, so a triple fault.
    pub fn fault() -> Vec<u8> {
        let mut c = vec![0x48, 0xb8]; // mov rax, imm64
        c.extend_from_slice(&(64u64 << 30).to_le_bytes());
        c.extend_from_slice(&[0x48, 0x8b, 0x00]); // mov rax, [rax]
        c.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
        c
    }

    /// `mov rbx, imm`: the base of `store_rbx` and `load_rbx`.
    pub fn mov_rbx(imm: u64) -> Vec<u8> {
        let mut c = vec![0x48, 0xbb];
        c.extend_from_slice(&imm.to_le_bytes());
        c
    }

    /// `mov dword [rbx + disp], imm` (a 4-byte MMIO register write).
    pub fn store_rbx(disp: u32, imm: u32) -> Vec<u8> {
        let mut c = vec![0xc7, 0x83];
        c.extend_from_slice(&disp.to_le_bytes());
        c.extend_from_slice(&imm.to_le_bytes());
        c
    }

    /// `mov eax, dword [rbx + disp]` (a 4-byte MMIO register read).
    pub fn load_rbx(disp: u32) -> Vec<u8> {
        let mut c = vec![0x8b, 0x83];
        c.extend_from_slice(&disp.to_le_bytes());
        c
    }

    /// Where `counting_guest`'s boot vCPU counts.
    pub const BSP_COUNTER: u64 = 0x3004;
    /// Where `counting_guest`'s second vCPU counts.
    pub const AP_COUNTER: u64 = 0x3000;
    /// Where the second vCPU starts (SIPI vector 0x10).
    const AP_CODE: u32 = 0x10000;

    /// A guest whose boot vCPU starts the second one (INIT and SIPI
    /// through the local APIC), which counts at `AP_COUNTER` in real mode,
    /// and then counts at `BSP_COUNTER` itself; forever.
    pub fn counting_guest(vcpus: u32) -> Vec<u8> {
        let mut code = Vec::new();
        if vcpus > 1 {
            // The second vCPU's code: `inc dword [0x3000]; jmp $-5`, 16-bit.
            let ap = [0x66, 0xff, 0x06, 0x00, 0x30, 0xeb, 0xf9, 0x90];
            let word = |b: &[u8]| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            code.extend(store32(AP_CODE, word(&ap[..4])));
            code.extend(store32(AP_CODE + 4, word(&ap[4..])));
            code.extend(mov_rbx(arch::layout::APIC_START));
            code.extend(store_rbx(0xf0, 0x1ff)); // SVR: enabled
            code.extend(store_rbx(0x310, 1 << 24)); // ICR high: APIC 1
            code.extend(store_rbx(0x300, 0x4500)); // INIT
            code.extend(store_rbx(0x300, 0x4600 | (AP_CODE >> 12))); // SIPI
        }
        // inc dword [0x3004]; jmp back to it.
        code.extend_from_slice(&[0xff, 0x04, 0x25, 0x04, 0x30, 0x00, 0x00, 0xeb, 0xf7]);
        code
    }

    /// `mov dword [addr], imm`, `addr` below 2 GiB.
    pub fn store32(addr: u32, imm: u32) -> Vec<u8> {
        let mut c = vec![0xc7, 0x04, 0x25];
        c.extend_from_slice(&addr.to_le_bytes());
        c.extend_from_slice(&imm.to_le_bytes());
        c
    }

    /// `mov word [addr], imm`, `addr` below 2 GiB.
    pub fn store16(addr: u32, imm: u16) -> Vec<u8> {
        let mut c = vec![0x66, 0xc7, 0x04, 0x25];
        c.extend_from_slice(&addr.to_le_bytes());
        c.extend_from_slice(&imm.to_le_bytes());
        c
    }

    /// `mov byte [addr], imm`, `addr` below 2 GiB.
    pub fn store8(addr: u32, imm: u8) -> Vec<u8> {
        let mut c = vec![0xc6, 0x04, 0x25];
        c.extend_from_slice(&addr.to_le_bytes());
        c.push(imm);
        c
    }

    /// `movzx eax, word [addr]`, `addr` below 2 GiB.
    pub fn load16(addr: u32) -> Vec<u8> {
        let mut c = vec![0x0f, 0xb7, 0x04, 0x25];
        c.extend_from_slice(&addr.to_le_bytes());
        c
    }

    /// `movzx eax, byte [addr]`, `addr` below 2 GiB.
    pub fn load8(addr: u32) -> Vec<u8> {
        let mut c = vec![0x0f, 0xb6, 0x04, 0x25];
        c.extend_from_slice(&addr.to_le_bytes());
        c
    }

    /// `test eax, imm`.
    pub fn test_eax(imm: u32) -> Vec<u8> {
        let mut c = vec![0xa9];
        c.extend_from_slice(&imm.to_le_bytes());
        c
    }

    /// `cmp eax, imm`.
    pub fn cmp_eax(imm: u32) -> Vec<u8> {
        let mut c = vec![0x3d];
        c.extend_from_slice(&imm.to_le_bytes());
        c
    }

    /// Repeats `check` (code that sets the flags) until `jnz` (or `jz`
    /// with `until_zero`) falls through: `check; j<cc> check`.
    pub fn wait(check: &[u8], until_zero: bool) -> Vec<u8> {
        let mut c = check.to_vec();
        let back = -((check.len() + 2) as i64);
        let back = i8::try_from(back).expect("wait: check too long for a short jump");
        // Loop while the condition for leaving does not hold.
        c.push(if until_zero { 0x75 } else { 0x74 });
        c.push(back as u8);
        c
    }

    /// Runs `body` only if the flags say not-zero: `jz over; body`.
    pub fn if_nonzero(body: &[u8]) -> Vec<u8> {
        let skip = u8::try_from(body.len()).expect("if_nonzero: body too long for a short jump");
        assert!(skip < 0x80, "if_nonzero: body too long for a short jump");
        let mut c = vec![0x74, skip];
        c.extend_from_slice(body);
        c
    }

    /// Runs `body` only if the flags say zero: `jnz over; body`.
    pub fn if_zero(body: &[u8]) -> Vec<u8> {
        let mut c = if_nonzero(body);
        c[0] = 0x75;
        c
    }

    /// Prints the `len` bytes of guest memory at `addr` on the serial port.
    pub fn print_memory(addr: u32, len: u32) -> Vec<u8> {
        let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
        for i in 0..len {
            c.extend_from_slice(&[0x8a, 0x04, 0x25]); // mov al, [addr + i]
            c.extend_from_slice(&(addr + i).to_le_bytes());
            c.push(0xee); // out dx, al
        }
        c
    }

    /// `popcnt rax, rbx`: runs on VT-x/AMD-V, stops KVM's emulator.
    pub const POPCNT: [u8; 5] = [0xf3, 0x48, 0x0f, 0xb8, 0xc3];

    /// Whether CPUID leaf 0xD follows the guest's XCR0, as on hardware:
    /// sets CR4.OSXSAVE, enables every XSAVE feature CPUID offers with
    /// XSETBV, then compares CPUID(0xD, 0).EBX (the XSAVE area size for
    /// the features enabled in XCR0, which KVM updates when it sees the
    /// XSETBV) with ECX (the size for all of them). Leaves ZF set when they
    /// agree.
    pub fn xsave_size_follows_xcr0() -> Vec<u8> {
        vec![
            0x0f, 0x20, 0xe0, // mov rax, cr4
            0x48, 0x0f, 0xba, 0xe8, 0x12, // bts rax, 18 (OSXSAVE)
            0x0f, 0x22, 0xe0, // mov cr4, rax
            0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, 0xd
            0x31, 0xc9, // xor ecx, ecx
            0x0f, 0xa2, // cpuid: eax = XCR0 bits offered, ecx = size for all
            0x89, 0xce, // mov esi, ecx
            0x31, 0xd2, // xor edx, edx
            0x31, 0xc9, // xor ecx, ecx (XCR0)
            0x0f, 0x01, 0xd1, // xsetbv
            0xb8, 0x0d, 0x00, 0x00, 0x00, // mov eax, 0xd
            0x31, 0xc9, // xor ecx, ecx
            0x0f, 0xa2, // cpuid: ebx = size for what XCR0 now enables
            0x39, 0xf3, // cmp ebx, esi
        ]
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty directory under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let p = std::env::temp_dir().join(format!("vmm-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    /// A path inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `name` inside the directory and returns its path.
    pub fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a finished VMM process left.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code; None if it was killed.
    pub code: Option<i32>,
    /// Everything on stdout (the serial console with --serial stdio).
    pub stdout: String,
    /// Everything on stderr (the VMM's log).
    pub stderr: String,
    /// Whether the time limit ran out and the process was killed.
    pub timed_out: bool,
}

fn reader<R: Read + Send + 'static>(mut r: R, tx: mpsc::Sender<(bool, Vec<u8>)>, is_out: bool) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send((is_out, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Runs the vmm binary with `args` until it exits, `limit` passes (then it
/// is killed and `timed_out` set) or its stdout contains `stop_at` (then it
/// is killed).
pub fn run_vmm(args: &[&str], limit: Duration, stop_at: Option<&str>) -> Outcome {
    let mut cmd = Command::new(vmm_bin());
    cmd.args(args);
    run_until(cmd, limit, |out, _| {
        stop_at.is_some_and(|p| out.contains(p))
    })
}

/// Runs `cmd` (stdin closed, stdout and stderr captured) until it exits,
/// `limit` passes (it is killed and `timed_out` set), or `stop` returns
/// true for the stdout seen so far (it is killed); `stop` also gets the
/// process id. It may take its time: the process keeps running meanwhile.
pub fn run_until(
    mut cmd: Command,
    limit: Duration,
    mut stop: impl FnMut(&str, u32) -> bool,
) -> Outcome {
    let mut child: Child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let (tx, rx) = mpsc::channel();
    reader(child.stdout.take().unwrap(), tx.clone(), true);
    reader(child.stderr.take().unwrap(), tx, false);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let mut stopped = false;
    loop {
        let mut fresh = false;
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok((true, b)) => {
                out.extend_from_slice(&b);
                fresh = true;
            }
            Ok((false, b)) => err.extend_from_slice(&b),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if fresh && !stopped && stop(&String::from_utf8_lossy(&out), child.id()) {
            stopped = true;
            let _ = child.kill();
        }
        if !stopped && Instant::now() > deadline {
            timed_out = true;
            stopped = true;
            let _ = child.kill();
        }
    }
    let status = child.wait().expect("wait");
    Outcome {
        code: status.code(),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        timed_out,
    }
}

/// Runs `bash script args` and checks that it refuses them as a usage
/// error: exit code 2, `says` on stderr, nothing on stdout.
pub fn assert_script_refuses(script: &Path, args: &[&str], says: &str) {
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(stderr.contains(says), "{args:?}: {stderr}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

pub fn kvm_is_emulated() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// Firecracker's documented config file (tests/data/firecracker-vm_config.json,
/// its tests/framework/vm_config.json) with only its paths changed: the
/// default guest's kernel in `guest`, `rootfs` (a copy of its root image)
/// and its initramfs (null in the original), so that the guest reaches an
/// init it can run.
pub fn firecracker_config(guest: &Path, rootfs: &Path) -> String {
    let original =
        std::fs::read_to_string(repo_root().join("tests/data/firecracker-vm_config.json"))
            .expect("tests/data/firecracker-vm_config.json");
    let text = original
        .replace(
            "\"vmlinux.bin\"",
            &format!("\"{}\"", guest.join("vmlinux").display()),
        )
        .replace(
            "\"bionic.rootfs.ext4\"",
            &format!("\"{}\"", rootfs.display()),
        )
        .replace(
            "\"initrd_path\": null",
            &format!(
                "\"initrd_path\": \"{}\"",
                guest.join("initramfs.cpio").display()
            ),
        );
    assert_ne!(text, original, "the Firecracker config's paths changed");
    text
}

/// The metrics document `vmm run --metrics PATH` left at `path`.
pub fn metrics_document(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{path:?} is no JSON document: {e}\n{text}"))
}

/// The default guest directory (as `vmm run` finds it), if it is built.
pub fn default_guest() -> Option<PathBuf> {
    let dir = vmm::config::default_guest_dir();
    (dir.join("vmlinux").is_file() && dir.join("initramfs.cpio").is_file()).then_some(dir)
}

/// The default guest for an end-to-end test, if this machine can run it
/// and it has every file in `needs` (beyond vmlinux and initramfs.cpio).
/// None means skip (`prereq`: said in every run; under CI a failure, since
/// CI builds the guest first).
pub fn default_guest_or_skip(needs: &[&str]) -> Option<PathBuf> {
    let guest = default_guest().filter(|d| needs.iter().all(|f| d.join(f).is_file()));
    let built = prereq::Need::that(
        guest.is_some(),
        format!(
            "the default guest with {} (guest-kernels/build.sh)",
            ["vmlinux", "initramfs.cpio"]
                .iter()
                .chain(needs)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    );
    prereq::require([prereq::Need::kvm(), built])
        .then_some(guest)
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_elf_layout() {
        let e = tiny_elf(&[0x90, 0xf4]);
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(
            u64::from_le_bytes(e[24..32].try_into().unwrap()),
            TINY_GUEST_ADDR
        );
        assert_eq!(&e[0x1000..], &[0x90, 0xf4]);
    }

    #[test]
    fn print_encodes_one_out_per_byte() {
        let c = asm::print(b"ab");
        assert_eq!(
            c,
            vec![0x66, 0xba, 0xf8, 0x03, 0xb0, b'a', 0xee, 0xb0, b'b', 0xee]
        );
    }
}

/// Soak runs: many create/boot/shutdown cycles of a tiny guest, in this
/// process through the vmm library and as separate `vmm` processes, with
/// the resources held at the start and the end.
pub mod fuzz;

pub mod soak {
    use std::path::Path;
    use std::time::{Duration, Instant};

    use vmm::config::{SerialOutput, VmConfig};
    use vmm::host::{resources, Resources};

    /// What a soak run saw.
    #[derive(Debug, Clone)]
    pub struct Report {
        /// Cycles made.
        pub cycles: usize,
        /// Cycles whose guest did not end with exit 0.
        pub failures: usize,
        /// Resources after the first cycle (the process has warmed up).
        pub start: Resources,
        /// Resources after the last cycle.
        pub end: Resources,
        /// How long the cycles took.
        pub took: Duration,
    }

    impl std::fmt::Display for Report {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(
                f,
                "{} cycles in {:.1} s ({} failed): open fds {} -> {}, RSS {} KiB -> {} KiB, peak RSS {} KiB -> {} KiB",
                self.cycles,
                self.took.as_secs_f64(),
                self.failures,
                self.start.fds,
                self.end.fds,
                self.start.rss_kib,
                self.end.rss_kib,
                self.start.peak_rss_kib,
                self.end.peak_rss_kib
            )
        }
    }

    /// The tiny guest of a cycle: prints a line and resets the VM.
    pub fn guest() -> Vec<u8> {
        let mut code = super::asm::print(b"soak\n");
        code.extend(super::asm::reset());
        super::tiny_elf(&code)
    }

    fn config(kernel: &Path) -> VmConfig {
        VmConfig {
            cmdline: String::new(),
            mem_mib: 16,
            // Filters stay on the thread that runs a VM: the next cycle
            // in this process could not build its own.
            seccomp: false,
            serial: SerialOutput::None,
            ..VmConfig::with_defaults(kernel.to_path_buf(), None)
        }
    }

    /// `cycles` VMs built, run to their end and dropped, one after another
    /// in this process.
    pub fn in_process(kernel: &Path, cycles: usize) -> Report {
        let cfg = config(kernel);
        let t = Instant::now();
        let mut failures = 0;
        let mut start = None;
        for i in 0..cycles {
            let ended = vmm::Vmm::build(&cfg, Instant::now()).and_then(vmm::Vmm::run);
            if !matches!(&ended, Ok(vmm::VmEnd::Reset(_))) {
                failures += 1;
            }
            if i == 0 {
                start = resources();
            }
        }
        let end = resources().expect("/proc/self");
        Report {
            cycles,
            failures,
            start: start.unwrap_or(end),
            end,
            took: t.elapsed(),
        }
    }

    /// The "resources at VM end" debug line of a `vmm` process.
    pub fn parse_resources(log: &str) -> Option<Resources> {
        let line = log.lines().find(|l| l.contains("resources at VM end: "))?;
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().unwrap_or(0))
            .collect();
        // The log's timestamp comes first: the last three numbers.
        let n = nums.len();
        (n >= 3).then(|| Resources {
            fds: nums[n - 3] as usize,
            rss_kib: nums[n - 2],
            peak_rss_kib: nums[n - 1],
        })
    }

    /// `cycles` separate `vmm run` processes one after another; start and
    /// end are what the first and the last process held at VM end.
    pub fn processes(kernel: &Path, cycles: usize) -> Report {
        let t = Instant::now();
        let mut failures = 0;
        let (mut start, mut end) = (None, None);
        for i in 0..cycles {
            let out = super::run_vmm(
                &[
                    "run",
                    "--kernel",
                    kernel.to_str().expect("UTF-8 path"),
                    "--memory",
                    "16M",
                    "--cmdline",
                    "",
                    "--serial",
                    "none",
                    "--log-level",
                    "debug",
                ],
                Duration::from_secs(60),
                None,
            );
            if out.code != Some(0) {
                failures += 1;
            }
            let r = parse_resources(&out.stderr);
            if i == 0 {
                start = r;
            }
            end = r.or(end);
        }
        let zero = Resources {
            fds: 0,
            rss_kib: 0,
            peak_rss_kib: 0,
        };
        Report {
            cycles,
            failures,
            start: start.unwrap_or(zero),
            end: end.unwrap_or(zero),
            took: t.elapsed(),
        }
    }
}
