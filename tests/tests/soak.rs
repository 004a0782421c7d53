//! Soak: 200 create/boot/shutdown cycles of a tiny guest, in this process
//! through the vmm library and as separate `vmm` processes. Every guest
//! ends cleanly, and the resources after the last cycle stay within the
//! stated bound of those after the first: no file descriptor more, at most
//! 1 MiB more resident memory. (`cargo run --release -p vmm-tests --example
//! soak` prints the same figures.)

use std::sync::Mutex;

use prereq::Need;
use vmm_tests::{soak, TempDir};

/// One soak at a time: a VM alive in this process while the other spawns
/// `vmm` processes would lend them descriptors (a dup'ed eventfd is not
/// close-on-exec), and time them against each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const CYCLES: usize = 200;
/// The bound on resident memory growth over the cycles.
const RSS_GROWTH_KIB: u64 = 1024;

fn check(what: &str, r: &soak::Report) {
    eprintln!("{what}: {r}");
    assert_eq!(r.cycles, CYCLES);
    assert_eq!(r.failures, 0, "{what}: {r}");
    assert!(r.start.fds > 0 && r.start.rss_kib > 0, "{what}: {r}");
    assert_eq!(r.end.fds, r.start.fds, "{what}: descriptors leak: {r}");
    assert!(
        r.end.rss_kib <= r.start.rss_kib + RSS_GROWTH_KIB,
        "{what}: memory grows: {r}"
    );
}

#[test]
fn cycles_in_one_process_leak_nothing() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("soak-in");
    let kernel = dir.write("tiny.elf", &soak::guest());
    check("in one process", &soak::in_process(&kernel, CYCLES));
}

#[test]
fn cycles_as_separate_processes_leak_nothing() {
    if !prereq::require([Need::kvm()]) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("soak-proc");
    let kernel = dir.write("tiny.elf", &soak::guest());
    check("separate processes", &soak::processes(&kernel, CYCLES));
}

#[test]
fn the_resource_line_is_read_back() {
    let r = soak::parse_resources(
        "[2026-11-23T06:00:00.123Z DEBUG] resources at VM end: 7 open fds, RSS 3644 KiB, peak RSS 3700 KiB",
    )
    .unwrap();
    assert_eq!((r.fds, r.rss_kib, r.peak_rss_kib), (7, 3644, 3700));
    assert!(soak::parse_resources("nothing").is_none());
}
