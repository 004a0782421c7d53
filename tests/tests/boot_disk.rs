//! Layer 4 for virtio-blk on an emulated KVM: the real Linux guest mounts its
//! ext4 root from a disk image and its writes reach the host file, while a
//! read-only second disk stays untouched. Slow there (a minute or more). A
//! guest program writing a file, and a read-only root refusing its writes,
//! are proved on the nested AMD-V host (nested.rs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use vmm_tests::{default_guest_or_skip, run_vmm, TempDir};

static SERIAL: Mutex<()> = Mutex::new(());
const LIMIT: Duration = Duration::from_secs(900);

fn guest_or_skip() -> Option<PathBuf> {
    default_guest_or_skip(&["rootfs.ext4"])
}

/// A private copy of the pristine root image.
fn copy_rootfs(dir: &Path, tmp: &TempDir, name: &str) -> PathBuf {
    let copy = tmp.join(name);
    std::fs::copy(dir.join("rootfs.ext4"), &copy).unwrap();
    copy
}

fn mount_count(image: &Path) -> u32 {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .output()
        .expect("dumpe2fs");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Mount count:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no mount count in:\n{text}"))
}

#[test]
fn the_guest_mounts_its_ext4_root_read_write_and_the_write_reaches_the_host() {
    let Some(dir) = guest_or_skip() else { return };
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = TempDir::new("disk");
    let root = copy_rootfs(&dir, &tmp, "root.ext4");
    let data = tmp.write("data.img", &vec![0x5au8; 1 << 20]);
    let before = mount_count(&root);
    let root_arg = format!("{},root", root.display());
    let data_arg = format!("{},ro,id=data", data.display());
    let metrics = tmp.join("metrics.json");
    // No --kernel: the default kernel, and with a root disk no initramfs.
    let out = run_vmm(
        &[
            "run",
            "--disk",
            &root_arg,
            "--disk",
            &data_arg,
            "--metrics",
            metrics.to_str().unwrap(),
        ],
        LIMIT,
        None,
    );
    assert!(!out.stderr.contains("INFO ] initrd "), "{}", out.stderr);
    assert!(
        !out.stdout.contains("Unpacking initramfs"),
        "{}",
        out.stdout
    );
    assert!(!out.timed_out, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("virtio_blk virtio0: [vda]"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("virtio_blk virtio1: [vdb] 2048 512-byte logical blocks"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("EXT4-fs (vda): mounted filesystem"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("VFS: Mounted root (ext4 filesystem) on device"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("Run /sbin/init as init process"),
        "{}",
        out.stdout
    );
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        mount_count(&root),
        before + 1,
        "the guest's superblock write reached the host"
    );
    let fsck = Command::new("e2fsck")
        .arg("-n")
        .arg(&root)
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(
        std::fs::read(&data).unwrap(),
        vec![0x5au8; 1 << 20],
        "read-only disk changed"
    );
    // The metrics document says the same, for programs.
    let doc = vmm_tests::metrics_document(&metrics);
    assert_eq!(doc["state"], "ended", "{doc}");
    assert_eq!(doc["end"]["exit_code"], 0, "{doc}");
    assert!(
        doc["kernel_cmdline"]
            .as_str()
            .is_some_and(|c| c.contains("root=/dev/vda")),
        "{doc}"
    );
    assert!(
        doc["boot_phases_ms"]["kernel_runs_init"].is_number(),
        "{doc}"
    );
    let disks = doc["devices"].as_array().unwrap();
    assert_eq!(disks.len(), 2, "{doc}");
    let (root_dev, data_dev) = (&disks[0]["counters"], &disks[1]["counters"]);
    assert_eq!(disks[1]["id"], "data", "{doc}");
    assert!(root_dev["bytes_written"].as_u64() > Some(0), "{doc}");
    assert!(data_dev["bytes_read"].as_u64() > Some(0), "{doc}");
    assert_eq!(data_dev["bytes_written"], 0, "{doc}");
    assert!(
        disks[0]["queues"][0]["notifications"].as_u64() > Some(0),
        "{doc}"
    );
}
