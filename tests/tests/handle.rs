//! Layer 2: the library's control handle on tiny guests that count, in
//! this test process: two VMs at once with their seccomp filters on, one
//! paused while the other runs on, and a thousand pauses and resumes of a
//! 2-vCPU guest with no vCPU lost or stuck.

use std::time::{Duration, Instant};

use prereq::Need;
use vm_memory::{Bytes, GuestAddress};
use vmm::config::{SerialOutput, VmConfig};
use vmm::{VmEnd, VmHandle, VmState, Vmm};
use vmm_tests::{tiny_elf, TempDir};

use vmm_tests::asm::{counting_guest, AP_COUNTER, BSP_COUNTER};

fn start(dir: &TempDir, name: &str, vcpus: u32) -> VmHandle {
    let kernel = dir.write(name, &tiny_elf(&counting_guest(vcpus)));
    let mut config = VmConfig::with_defaults(kernel, None);
    config.mem_mib = 16;
    config.vcpus = vcpus;
    config.cmdline = String::new();
    config.serial = SerialOutput::None;
    config.seccomp = true;
    Vmm::build(&config, Instant::now())
        .expect("build")
        .start()
        .expect("start")
}

fn count(vm: &VmHandle, at: u64) -> u32 {
    vm.memory().read_obj::<u32>(GuestAddress(at)).unwrap()
}

/// Waits until every counter in `at` passes the value it had, or fails.
fn rises(vm: &VmHandle, at: &[u64], what: &str) {
    let before: Vec<u32> = at.iter().map(|a| count(vm, *a)).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now: Vec<u32> = at.iter().map(|a| count(vm, *a)).collect();
        if now.iter().zip(&before).all(|(n, b)| n != b) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: a counter stood still for 20 s: {before:x?} -> {now:x?} (at {at:x?})"
        );
        std::thread::yield_now();
    }
}

/// Counters that do not move for `d` while paused.
fn stands_still(vm: &VmHandle, at: &[u64], d: Duration) {
    let before: Vec<u32> = at.iter().map(|a| count(vm, *a)).collect();
    std::thread::sleep(d);
    let after: Vec<u32> = at.iter().map(|a| count(vm, *a)).collect();
    assert_eq!(before, after, "a paused VM's vCPU counted");
}

#[test]
fn two_vms_in_one_process_one_paused_the_other_runs_on() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("handle-two");
    let a = start(&dir, "a.elf", 1);
    let b = start(&dir, "b.elf", 1);
    rises(&a, &[BSP_COUNTER], "VM a");
    rises(&b, &[BSP_COUNTER], "VM b");
    a.pause().unwrap();
    assert_eq!(a.state(), VmState::Paused);
    assert_eq!(b.state(), VmState::Running);
    stands_still(&a, &[BSP_COUNTER], Duration::from_millis(200));
    rises(&b, &[BSP_COUNTER], "VM b while a is paused");
    // Pausing twice is one pause; resuming a running VM does nothing.
    a.pause().unwrap();
    b.resume().unwrap();
    a.resume().unwrap();
    assert_eq!(a.state(), VmState::Running);
    rises(&a, &[BSP_COUNTER], "VM a resumed");
    // Stopping one leaves the other running.
    a.stop();
    assert_eq!(a.wait(), VmEnd::Stopped);
    assert_eq!(a.state(), VmState::Ended);
    assert!(a.pause().is_err() && a.resume().is_err());
    rises(&b, &[BSP_COUNTER], "VM b after a ended");
    // A paused VM stops too.
    b.pause().unwrap();
    b.stop_with(VmEnd::Signal(15));
    assert_eq!(b.wait(), VmEnd::Signal(15));
}

#[test]
fn a_thousand_pauses_and_resumes_of_a_two_vcpu_guest() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("handle-stress");
    let vm = start(&dir, "count.elf", 2);
    let both = [BSP_COUNTER, AP_COUNTER];
    rises(&vm, &both, "both vCPUs at the start");
    let started = Instant::now();
    let mut paused_for = Duration::ZERO;
    for i in 0..1000 {
        let t = Instant::now();
        vm.pause().unwrap();
        paused_for += t.elapsed();
        assert_eq!(vm.state(), VmState::Paused, "pause {i}");
        if i % 100 == 0 {
            stands_still(&vm, &both, Duration::from_millis(20));
        }
        vm.resume().unwrap();
        assert_eq!(vm.state(), VmState::Running, "resume {i}");
        rises(&vm, &both, &format!("after resume {i}"));
    }
    eprintln!(
        "handle: 1000 pauses and resumes of a 2-vCPU guest in {:.2} s, pause() took {:.1} us on average",
        started.elapsed().as_secs_f64(),
        paused_for.as_secs_f64() * 1e6 / 1000.0
    );
    vm.stop();
    assert_eq!(vm.wait(), VmEnd::Stopped);
}
