//! Layer 4 on an emulated KVM (layer 3 on VT-x/AMD-V): the real Linux guest
//! built by guest-kernels/build.sh boots under `vmm run`. On kvm_pvm this is
//! the proof of the emulated-host adaptation (the guest reaches "Run /init");
//! two vCPUs, the bzImage and the PVH entry are proved, with guest user
//! space, on the nested AMD-V host (nested.rs).

use std::sync::Mutex;
use std::time::Duration;

use std::path::PathBuf;

use vmm_tests::{default_guest_or_skip, kvm_is_emulated, run_vmm};

/// One boot at a time: each keeps a core busy on an emulated host.
static SERIAL: Mutex<()> = Mutex::new(());

/// Generous: about 90 s on the emulated development host, well under a
/// second on VT-x/AMD-V.
const LIMIT: Duration = Duration::from_secs(900);

fn guest_or_skip() -> Option<PathBuf> {
    default_guest_or_skip(&[])
}

fn boot_default_guest(vcpus: u32) -> vmm_tests::Outcome {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let n = vcpus.to_string();
    let out = run_vmm(&["run", "--vcpus", &n, "--memory", "128M"], LIMIT, None);
    assert!(
        !out.timed_out,
        "no end within {LIMIT:?}:\n{}\n{}",
        out.stdout, out.stderr
    );
    assert!(out.stdout.contains("Linux version 6.12"), "{}", out.stdout);
    if kvm_is_emulated() {
        // Kernel boot completes; init then dies on its first system call
        // and the kernel panics and resets the VM (panic=-1, reboot=k).
        assert!(
            out.stdout.contains("Run /init as init process"),
            "{}",
            out.stdout
        );
    } else {
        assert!(
            out.stdout.contains("Hello from the guest"),
            "{}",
            out.stdout
        );
    }
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("guest reset the VM"), "{}", out.stderr);
    out
}

#[test]
fn default_guest_boots_to_init_with_one_vcpu() {
    if guest_or_skip().is_none() {
        return;
    }
    let out = boot_default_guest(1);
    assert!(
        out.stdout.contains("smp: Brought up 1 node, 1 CPU"),
        "{}",
        out.stdout
    );
}
