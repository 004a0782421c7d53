//! Soak: create/boot/shutdown cycles of a tiny guest, in one process and as
//! separate processes, printing open file descriptors and RSS at the start
//! and the end of each.
//!
//! cargo run --release -p vmm-tests --example soak -- [CYCLES]

fn main() {
    let cycles: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 200,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("usage: soak [CYCLES]   (a positive number, default 200)");
            std::process::exit(2);
        }
    };
    let dir = vmm_tests::TempDir::new("soak");
    let kernel = dir.write("tiny.elf", &vmm_tests::soak::guest());
    println!(
        "in one process:      {}",
        vmm_tests::soak::in_process(&kernel, cycles)
    );
    println!(
        "separate processes:  {}",
        vmm_tests::soak::processes(&kernel, cycles)
    );
}
