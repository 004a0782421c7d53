//! The fuzz targets' inputs as ordinary tests: every file of the corpus in
//! the repository (`fuzz/corpus/<target>/`) and every input that once made
//! a target fail (`fuzz/regressions/<target>/`, kept when the fuzzer found
//! it and the bug was mended) goes through its harness, which panics where
//! a check fails. The seeds must do what they were written for.

use std::path::{Path, PathBuf};

use vmm_tests::fuzz::{self, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

#[test]
fn every_corpus_and_regression_input_passes_its_harness() {
    let mut failed = Vec::new();
    let mut count = 0;
    for (target, harness) in TARGETS {
        for kind in ["corpus", "regressions"] {
            for path in files(&fuzz_dir().join(kind).join(target)) {
                let data = std::fs::read(&path).unwrap();
                count += 1;
                if std::panic::catch_unwind(|| harness(&data)).is_err() {
                    failed.push(path.display().to_string());
                }
            }
        }
    }
    assert!(
        failed.is_empty(),
        "inputs that fail their harness: {failed:?}"
    );
    assert!(count >= fuzz::seeds().len(), "only {count} inputs found");
}

#[test]
fn the_corpus_holds_the_current_seeds() {
    for (target, name, bytes) in fuzz::seeds() {
        let path = fuzz_dir()
            .join("corpus")
            .join(target)
            .join(format!("seed-{name}"));
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            on_disk == bytes,
            "{} is missing or stale: run `cargo run -p vmm-tests --example fuzz_seeds`",
            path.display()
        );
    }
    for (target, _) in TARGETS {
        assert!(
            fuzz::seeds().iter().any(|(t, _, _)| t == target),
            "no seed for {target}"
        );
    }
}

fn seed(target: &str, name: &str) -> Vec<u8> {
    fuzz::seeds()
        .into_iter()
        .find(|(t, n, _)| *t == target && *n == name)
        .map(|(_, _, b)| b)
        .unwrap_or_else(|| panic!("no seed {target}/{name}"))
}

/// The seeds reach the device's work, so the fuzzer starts from inputs
/// that do I/O rather than from ones the transport refuses.
#[test]
fn the_seeds_drive_the_devices() {
    let stats = fuzz::run_block(&seed("virtio_blk", "read"), true);
    assert!(
        stats.contains(": 1 requests done, 0 failed, 0 malformed; 512 bytes read"),
        "{stats}"
    );
    let stats = fuzz::run_block(&seed("virtio_blk", "write-flush"), true);
    assert!(
        stats.contains(": 2 requests done") && stats.contains("1024 written, 1 flushes"),
        "{stats}"
    );
    let stats = fuzz::run_block(&seed("virtio_blk", "write-read-only"), true);
    assert!(stats.contains("0 written"), "{stats}");
    assert!(!stats.contains(" 0 failed"), "{stats}");
    let stats = fuzz::run_block(&seed("virtio_blk", "read-across-regions"), true);
    assert!(stats.contains("1024 bytes read"), "{stats}");
    let stats = fuzz::run_block(&seed("virtio_blk", "read-past-end"), true);
    assert!(stats.contains("1 failed"), "{stats}");
    let stats = fuzz::run_block(&seed("virtio_mmio", "setup-read"), false);
    assert!(stats.contains("512 bytes read"), "{stats}");
    let stats = fuzz::run_block(&seed("virtio_mmio", "reset-and-again"), false);
    assert!(stats.contains("1024 bytes read"), "{stats}");
    let stats = fuzz::run_net(&seed("virtio_net", "tx"));
    assert!(
        stats.contains("sent 1 frames (76 bytes, 0 malformed"),
        "{stats}"
    );
    let stats = fuzz::run_net(&seed("virtio_net", "rx-mergeable"));
    assert!(stats.contains("600"), "{stats}");
}

/// The kernel and config seeds load and resolve (the harnesses return
/// early on what does not, so a broken seed would test nothing).
#[test]
fn the_kernel_and_config_seeds_are_valid() {
    use std::io::Cursor;
    let mem =
        vm_memory::GuestMemoryMmap::from_ranges(&[(vm_memory::GuestAddress(0), 32 << 20)]).unwrap();
    for name in ["elf", "bzimage"] {
        let data = seed("kernel_image", name);
        arch::boot::load_kernel(&mem, &mut Cursor::new(&data), false)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for name in ["example", "full"] {
        let data = seed("config_json", name);
        let text = std::str::from_utf8(&data).unwrap();
        let path = Path::new("seed.json");
        let config = vmm::config_file::parse(path, text)
            .and_then(|f| f.resolve(path, Default::default()))
            .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        if name == "example" {
            // (The full one's disks are not sized in sectors.)
            config.validate().unwrap();
        }
    }
}

/// scripts/fuzz.sh refuses bad options with exit code 2 and a message,
/// before it builds anything.
#[test]
fn the_fuzz_script_refuses_bad_options() {
    let script = fuzz_dir().join("../scripts/fuzz.sh");
    for (args, says) in [
        (
            &["--seconds", "x"][..],
            "--seconds takes a positive whole number",
        ),
        (
            &["--seconds", "0"][..],
            "--seconds takes a positive whole number",
        ),
        (
            &["--seconds"][..],
            "--seconds takes a positive whole number",
        ),
        (&["--bogus"][..], "unknown option --bogus"),
        (&["no_such_target"][..], "no target 'no_such_target'"),
    ] {
        vmm_tests::assert_script_refuses(&script, args, says);
    }
}

/// The API seeds are answered as their names say, so that the fuzzer
/// starts from requests the router and controller carry out.
#[test]
fn the_api_seeds_are_answered() {
    for (name, want) in [
        ("get-root", vec![200]),
        ("put-machine-config", vec![204]),
        ("patch-machine-config", vec![204]),
        ("put-boot-source", vec![400]),
        ("put-drive", vec![400]),
        ("put-net", vec![204]),
        ("actions", vec![400]),
        ("logger-metrics", vec![204, 204]),
        ("pipelined", vec![200, 200, 200, 400]),
        ("unsupported", vec![400, 400]),
        ("chunked", vec![400]),
        ("not-utf8", vec![400]),
        ("delete", vec![400]),
        ("half", vec![]),
    ] {
        assert_eq!(
            fuzz::api_answers(&seed("api_request", name)),
            want,
            "{name}"
        );
    }
}

#[test]
fn the_overlay_header_seeds_are_what_they_say() {
    use devices::virtio::block::disk::Header;
    let err = |name| {
        Header::decode(&seed("overlay_header", name))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        Header::decode(&seed("overlay_header", "valid")).unwrap(),
        fuzz::overlay_header_sample()
    );
    assert!(err("version-2").contains("version 2"));
    assert!(err("flipped").contains("checksum"));
    assert!(err("truncated").contains("shorter"));
}

#[test]
fn the_state_file_seeds_are_what_they_say() {
    use vmm::snapshot::file::{decode, FileError};
    let back = decode(&seed("snapshot_state", "valid")).unwrap();
    assert_eq!(back.state.devices.exit_device, Some(3));
    assert_eq!(back.state.vcpus[0].regs.rax, 42);
    assert!(matches!(
        decode(&seed("snapshot_state", "version-2")),
        Err(FileError::Version { found: 2 })
    ));
    assert!(matches!(
        decode(&seed("snapshot_state", "flipped")),
        Err(FileError::Checksum { .. })
    ));
    assert!(matches!(
        decode(&seed("snapshot_state", "truncated")),
        Err(FileError::Truncated { .. })
    ));
}

#[test]
fn the_oci_config_seeds_are_what_they_say() {
    use vmm_runtime::{bundle, Error};
    let dir = vmm_tests::TempDir::new("oci-seeds");
    std::fs::create_dir_all(dir.join("rootfs")).unwrap();
    let plan = |name| {
        bundle::parse(&seed("oci_config", name)).and_then(|s| bundle::plan(&dir.join(""), &s))
    };
    let full = plan("full").unwrap();
    assert!(full.terminal && full.read_only_root && full.files.len() == 1);
    assert_eq!(
        (full.cpus, full.memory_mib),
        (2, 256 + bundle::KERNEL_OVERHEAD_MIB)
    );
    assert_eq!(plan("minimal").unwrap().args, ["true"]);
    assert!(matches!(plan("volume"), Err(Error::Unsupported(m)) if m.contains("/data")));
    assert!(
        matches!(plan("bad-uid"), Err(Error::Config { field, .. }) if field == "process.user.uid")
    );
    assert!(matches!(plan("cut"), Err(Error::Config { .. })));
}
