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
    let saved_vcpu = vcpu::save(&fd_a, 0, &msrs).unwrap();
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
    vcpu::restore(&fd_b, &vcpu_state).unwrap();
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

/// Through the library: a running 2-vCPU guest paused, its state read on
/// each vCPU's own thread (`VmHandle::save_state`), its memory copied, the
/// VM stopped; a new VM built from them (`Vmm::restore`) runs on: both
/// vCPUs count on from where they were (the second one, started by INIT
/// and SIPI in real mode, would wait for a SIPI forever had its state not
/// come back).
#[test]
fn a_paused_two_vcpu_vm_saved_and_restored_through_the_library() {
    use vmm_tests::asm::{AP_COUNTER, BSP_COUNTER};
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("snapshot-handle");
    let (config, a) = counting_pair(&dir);
    let both_move = |mem: &GuestMemoryMmap| {
        let before = (read(mem, BSP_COUNTER), read(mem, AP_COUNTER));
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while Instant::now() < deadline {
            let now = (read(mem, BSP_COUNTER), read(mem, AP_COUNTER));
            if now.0 != before.0 && now.1 != before.1 {
                return true;
            }
            std::thread::yield_now();
        }
        false
    };
    assert!(both_move(a.memory()), "VM a's vCPUs do not both count");
    assert!(a.save_state().is_err(), "a running VM's state was read");
    a.pause().unwrap();
    let snapshot = a.save_state().unwrap();
    let ram = vmm::snapshot::read_ram(a.memory());
    let saved = (read(a.memory(), BSP_COUNTER), read(a.memory(), AP_COUNTER));
    assert_eq!(snapshot.vcpus.len(), 2);
    assert_eq!(snapshot.vcpus[1].id, 1);
    a.stop();
    a.wait();

    let b = vmm::Vmm::restore(&config, &snapshot, &ram, Instant::now())
        .unwrap()
        .start()
        .unwrap();
    assert!(
        both_move(b.memory()),
        "the restored VM's vCPUs do not both count"
    );
    let now = (read(b.memory(), BSP_COUNTER), read(b.memory(), AP_COUNTER));
    assert!(
        now.0 > saved.0 && now.1 > saved.1,
        "the restored counters {now:?} did not go on from {saved:?}"
    );
    b.stop();
    assert_eq!(b.wait(), vmm::VmEnd::Stopped);
    // Memory of another size is refused, naming it.
    let err = vmm::Vmm::restore(&config, &snapshot, &ram[..4096], Instant::now())
        .err()
        .unwrap();
    assert!(err.to_string().contains("the snapshot's memory"), "{err}");
}

/// Through the two files: the state file and the memory file written
/// sparsely (a 16 MiB guest that touched little costs little on disk),
/// the restored VM's memory the file mapped private (its writes do not
/// reach the file), and a state file of another version refused.
#[test]
fn a_vm_restored_from_its_state_file_and_sparse_memory_file() {
    use std::os::unix::fs::MetadataExt;
    use vmm::snapshot::file::{self, StateFile};
    use vmm_tests::asm::{AP_COUNTER, BSP_COUNTER};
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let dir = TempDir::new("snapshot-files");
    let (config, a) = counting_pair(&dir);
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    while read(a.memory(), AP_COUNTER) == 0 && Instant::now() < deadline {
        std::thread::yield_now();
    }
    a.pause().unwrap();
    let state_path = dir.join("vm.state");
    let mem_path = dir.join("vm.mem");
    let written = vmm::snapshot::memory::write_sparse(a.memory(), &mem_path).unwrap();
    file::write(
        &state_path,
        &StateFile {
            config: vmm::config_file::ConfigFile::from_config(&config),
            memory_bytes: MIB << 20,
            state: a.save_state().unwrap(),
        },
    )
    .unwrap();
    let saved = (read(a.memory(), BSP_COUNTER), read(a.memory(), AP_COUNTER));
    a.stop();
    a.wait();
    let meta = std::fs::metadata(&mem_path).unwrap();
    assert_eq!(meta.len(), MIB << 20);
    assert!(
        meta.blocks() * 512 < (1 << 20),
        "the memory file takes {} bytes on disk for {written} bytes of data",
        meta.blocks() * 512
    );

    let loaded = file::read(&state_path).unwrap();
    let b = vmm::Vmm::restore_mapped(&config, &loaded.state, &mem_path, Instant::now())
        .unwrap()
        .start()
        .unwrap();
    let deadline = Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let now = (read(b.memory(), BSP_COUNTER), read(b.memory(), AP_COUNTER));
        if now.0 > saved.0 && now.1 > saved.1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no counting on from {saved:?}: {now:?}"
        );
        std::thread::yield_now();
    }
    b.stop();
    b.wait();
    // The guest's writes stayed private: the file holds the saved counts.
    let bytes = std::fs::read(&mem_path).unwrap();
    let at = |a: u64| u32::from_le_bytes(bytes[a as usize..a as usize + 4].try_into().unwrap());
    assert_eq!((at(BSP_COUNTER), at(AP_COUNTER)), saved);
    // Refusals: a memory file of another size, a state file of another
    // version.
    let short = dir.write("short.mem", &[0u8; 4096]);
    let err = vmm::Vmm::restore_mapped(&config, &loaded.state, &short, Instant::now())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("4096 bytes") && err.contains("memory file"),
        "{err}"
    );
    let mut other = std::fs::read(&state_path).unwrap();
    other[8] = 9;
    let other_path = dir.write("other.state", &other);
    let err = file::read(&other_path).unwrap_err().to_string();
    assert!(err.contains("format version 9"), "{err}");
}
