//! Layer 2: a vCPU's and a VM's KVM state saved from one VM and put into a
//! new one, which goes on from the very instruction: a tiny guest counts
//! and reports each count on port 0x80, so the count after the restore is
//! exactly the saved one plus the exits seen since.

use std::time::Instant;

use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use prereq::Need;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::snapshot::{vcpu, vm, VcpuState, VmState};
use vmm_tests::{tiny_elf, TempDir};

const COUNTER: u64 = 0x3004;
const MIB: u64 = 16;

/// `inc dword [0x3004]; out 0x80, al; jmp` back.
fn counting() -> Vec<u8> {
    tiny_elf(&[
        0xff, 0x04, 0x25, 0x04, 0x30, 0x00, 0x00, 0xe6, 0x80, 0xeb, 0xf5,
    ])
}

fn new_vm(kvm: &kvm_ioctls::Kvm) -> (VmFd, GuestMemoryMmap) {
    let vm = vmm::vm::create_vm(kvm).unwrap();
    let mem = vmm::vm::guest_memory(MIB).unwrap();
    vmm::vm::register_memory(&vm, &mem).unwrap();
    (vm, mem)
}

/// Runs `fd` until the guest has reported `exits` counts.
fn run(fd: &mut VcpuFd, exits: u32) {
    let mut seen = 0;
    while seen < exits {
        match fd.run() {
            Ok(VcpuExit::IoOut(0x80, _)) => seen += 1,
            Ok(other) => panic!("unexpected exit {other:?} after {seen} counts"),
            Err(e) if e.errno() == libc::EINTR => {}
            Err(e) => panic!("KVM_RUN: {e}"),
        }
    }
}

fn count(mem: &GuestMemoryMmap) -> u32 {
    mem.read_obj(GuestAddress(COUNTER)).unwrap()
}

#[test]
fn a_vm_restored_from_saved_state_goes_on_from_the_same_instruction() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("snapshot-state");
    let elf = dir.write("count.elf", &counting());
    let kvm = vmm::host::open_kvm().unwrap();
    let msrs = vcpu::msr_list(&kvm).unwrap();

    // VM A boots the guest and counts to 1000.
    let (vm_a, mem_a) = new_vm(&kvm);
    let loaded =
        arch::boot::load_kernel(&mem_a, &mut std::fs::File::open(&elf).unwrap(), false).unwrap();
    let cpuid = kvm
        .get_supported_cpuid(kvm_bindings::KVM_MAX_CPUID_ENTRIES)
        .unwrap();
    let mut fd_a = vm_a.create_vcpu(0).unwrap();
    vmm::vcpu::configure(
        &fd_a,
        0,
        arch::cpuid::Topology {
            count: 1,
            threads_per_core: 1,
        },
        &cpuid,
        &mem_a,
        loaded.entry,
        loaded.mode,
    )
    .unwrap();
    run(&mut fd_a, 1000);
    assert_eq!(count(&mem_a), 1000);

    // Saved, and through serde (what a state file will hold).
    let t = Instant::now();
    let saved_vcpu = vcpu::save(&mut fd_a, 0, &msrs).unwrap();
    let saved_vm = vm::save(&vm_a).unwrap();
    let json = serde_json::to_vec(&(&saved_vcpu, &saved_vm)).unwrap();
    let (vcpu_state, vm_state): (VcpuState, VmState) = serde_json::from_slice(&json).unwrap();
    let mut ram = vec![0u8; (MIB << 20) as usize];
    mem_a.read_slice(&mut ram, GuestAddress(0)).unwrap();
    assert!(
        vcpu_state.msrs.len() > 10,
        "only {} MSRs saved",
        vcpu_state.msrs.len()
    );
    assert_eq!(vcpu_state.regs.rip, saved_vcpu.regs.rip);

    // VM B: the memory and the state put back; it counts on from 1000.
    let (vm_b, mem_b) = new_vm(&kvm);
    mem_b.write_slice(&ram, GuestAddress(0)).unwrap();
    vm::restore(&vm_b, &vm_state).unwrap();
    let mut fd_b = vm_b.create_vcpu(0).unwrap();
    vcpu::restore(&fd_b, &vcpu_state, false).unwrap();
    let restored = t.elapsed();
    assert_eq!(count(&mem_b), 1000);
    run(&mut fd_b, 1000);
    assert_eq!(
        count(&mem_b),
        2000,
        "the restored VM lost or repeated counts"
    );
    // A's memory is its own: B's counting did not touch it.
    assert_eq!(count(&mem_a), 1000);
    eprintln!(
        "snapshot state: {} MSRs, state {} bytes as JSON, saved and restored with {} MiB of RAM copied in {:.1} ms",
        vcpu_state.msrs.len(),
        json.len(),
        MIB,
        restored.as_secs_f64() * 1e3
    );
}

/// The configuration of a 16 MiB guest whose two vCPUs count
/// (`asm::counting_guest`), and that guest started.
fn counting_pair(dir: &TempDir) -> (vmm::config::VmConfig, vmm::VmHandle) {
    use vmm::config::{SerialOutput, VmConfig};
    let kernel = dir.write("count2.elf", &tiny_elf(&vmm_tests::asm::counting_guest(2)));
    let mut config = VmConfig::with_defaults(kernel, None);
    config.mem_mib = MIB;
    config.vcpus = 2;
    config.cmdline = String::new();
    config.serial = SerialOutput::None;
    let vm = vmm::Vmm::build(&config, Instant::now())
        .unwrap()
        .start()
        .unwrap();
    (config, vm)
}

/// The counter at `at`.
fn read(mem: &GuestMemoryMmap, at: u64) -> u32 {
    mem.read_obj(GuestAddress(at)).unwrap()
}

fn restore_options(dir: &TempDir) -> vmm::snapshot::RestoreOptions {
    let mut o = vmm::snapshot::RestoreOptions::new(dir.join("vm.state"), dir.join("vm.mem"));
    o.serial = vmm::config::SerialOutput::None;
    o
}

/// Waits until both counters moved past `from`; returns them.
fn counts_past(mem: &GuestMemoryMmap, from: (u32, u32)) -> (u32, u32) {
    use vmm_tests::asm::{AP_COUNTER, BSP_COUNTER};
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = (read(mem, BSP_COUNTER), read(mem, AP_COUNTER));
        if now.0 > from.0 && now.1 > from.1 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "no counting on from {from:?}: {now:?}"
        );
        std::thread::yield_now();
    }
}

/// Through the library and the two files: a running 2-vCPU guest paused
/// and snapshotted (`VmHandle::snapshot`: the state file and the memory
/// file, written sparsely: a 16 MiB guest that touched little costs little
/// on disk), the VM stopped; a new VM built from the files
/// (`Vmm::restore`, memory the file mapped private) runs on: both vCPUs
/// count on from where they were (the second one, started by INIT and
/// SIPI in real mode, would wait for a SIPI forever had its state not come
/// back), and their writes do not reach the file.
#[test]
fn a_paused_two_vcpu_vm_snapshotted_and_restored_goes_on() {
    use std::os::unix::fs::MetadataExt;
    use vmm_tests::asm::{AP_COUNTER, BSP_COUNTER};
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("snapshot-handle");
    let (_, a) = counting_pair(&dir);
    counts_past(a.memory(), (0, 0));
    let (state_path, mem_path) = (dir.join("vm.state"), dir.join("vm.mem"));
    let err = a.snapshot(&state_path, &mem_path).unwrap_err().to_string();
    assert!(
        err.contains("not paused"),
        "a running VM was snapshotted: {err}"
    );
    assert!(a.save_state().is_err(), "a running VM's state was read");
    a.pause().unwrap();
    let written = a.snapshot(&state_path, &mem_path).unwrap();
    let saved = (read(a.memory(), BSP_COUNTER), read(a.memory(), AP_COUNTER));
    a.stop();
    a.wait();
    let meta = std::fs::metadata(&mem_path).unwrap();
    assert_eq!((meta.len(), written.memory_bytes), (MIB << 20, MIB << 20));
    assert!(
        meta.blocks() * 512 < (1 << 20),
        "the memory file takes {} bytes on disk for {} bytes of data",
        meta.blocks() * 512,
        written.memory_written
    );
    let state = vmm::snapshot::restore::read_state(&state_path).unwrap();
    assert_eq!(state.state.vcpus.len(), 2);
    assert_eq!(state.state.vcpus[1].id, 1);
    assert!(state.state.devices.virtio.is_empty());

    // Started paused: the memory is the snapshot's until it runs.
    let b = vmm::Vmm::restore(&restore_options(&dir), Instant::now())
        .unwrap()
        .start_paused()
        .unwrap();
    assert_eq!(b.state(), vmm::VmState::Paused);
    assert_eq!(
        (read(b.memory(), BSP_COUNTER), read(b.memory(), AP_COUNTER)),
        saved
    );
    b.resume().unwrap();
    counts_past(b.memory(), saved);
    b.stop();
    assert_eq!(b.wait(), vmm::VmEnd::Stopped);
    // The guest's writes stayed private: the file holds the saved counts.
    let bytes = std::fs::read(&mem_path).unwrap();
    let at = |a: u64| u32::from_le_bytes(bytes[a as usize..a as usize + 4].try_into().unwrap());
    assert_eq!((at(BSP_COUNTER), at(AP_COUNTER)), saved);
}

/// Every refusal of a restore names its cause, before a vCPU runs.
#[test]
fn a_snapshot_that_does_not_fit_is_refused_with_its_reason() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("snapshot-refusals");
    let (_, a) = counting_pair(&dir);
    counts_past(a.memory(), (0, 0));
    a.pause().unwrap();
    a.snapshot(&dir.join("vm.state"), &dir.join("vm.mem"))
        .unwrap();
    a.stop();
    a.wait();
    let good = std::fs::read(dir.join("vm.state")).unwrap();
    let refused = |o: &vmm::snapshot::RestoreOptions| -> String {
        match vmm::Vmm::restore(o, Instant::now()) {
            Ok(_) => panic!("restored: {o:?}"),
            Err(e) => e.chain(),
        }
    };
    let mut o = restore_options(&dir);
    // A memory file of another size.
    o.mem_path = dir.write("short.mem", &[0u8; 4096]);
    let e = refused(&o);
    assert!(e.contains("memory file") && e.contains("4096 bytes"), "{e}");
    // Missing files.
    o.mem_path = dir.join("nope.mem");
    assert!(refused(&o).contains("nope.mem"), "{}", refused(&o));
    let mut o = restore_options(&dir);
    o.state_path = dir.join("nope.state");
    assert!(refused(&o).contains("nope.state"));
    // Another format version, a flipped byte, a truncated file.
    let mut other = good.clone();
    other[8] = 9;
    o.state_path = dir.write("v9.state", &other);
    assert!(refused(&o).contains("format version 9"), "{}", refused(&o));
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    o.state_path = dir.write("flipped.state", &flipped);
    assert!(refused(&o).contains("corrupt"), "{}", refused(&o));
    o.state_path = dir.write("cut.state", &good[..good.len() - 10]);
    assert!(refused(&o).contains("truncated"), "{}", refused(&o));
    // A command for a VM that is not a template, an interface it lacks.
    let mut o = restore_options(&dir);
    o.command = Some(vec!["true".into()]);
    assert!(refused(&o).contains("not a template"), "{}", refused(&o));
    let mut o = restore_options(&dir);
    o.net_overrides = vec![("eth7".into(), "tap7".into())];
    let e = refused(&o);
    assert!(e.contains("no network interface 'eth7'"), "{e}");
    // The good files still restore.
    let vm = vmm::Vmm::restore(&restore_options(&dir), Instant::now())
        .unwrap()
        .start()
        .unwrap();
    vm.stop();
    vm.wait();
}
