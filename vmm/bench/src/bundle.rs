//! The OCI bundle for the runc container of `vmm bench`: a busybox root file
//! system with the default guest's init as /init, and a runtime config that
//! runs it in its own namespaces. The init may restart "its machine"
//! (CAP_SYS_BOOT), which in a PID namespace ends that namespace: the
//! container ends itself as the VM does.

use std::io;
use std::path::Path;

use serde_json::json;

/// Busybox applets linked in /bin besides busybox itself.
const APPLETS: &[&str] = &["sh", "ls", "cat", "echo", "mount", "ps"];

/// The runtime config (config.json) of the bundle, for runc.
pub fn config(hostname: &str) -> serde_json::Value {
    let caps = [
        "CAP_SYS_BOOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
        "CAP_NET_BIND_SERVICE",
    ];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["/init"],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": hostname,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}

/// Writes the bundle into `dir` (made if missing, its rootfs replaced):
/// rootfs/ with /init (a copy of `init`), /bin/busybox (a copy of
/// `busybox`, which must be static) and its applet links, the mount
/// points, and config.json.
pub fn build(dir: &Path, init: &Path, busybox: &Path) -> io::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(init, rootfs.join("init"))?;
    std::fs::set_permissions(rootfs.join("init"), std::fs::Permissions::from_mode(0o755))?;
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    std::fs::set_permissions(
        rootfs.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    for applet in APPLETS {
        symlink("busybox", rootfs.join("bin").join(applet))?;
    }
    std::fs::write(rootfs.join("etc/hostname"), "bench\n")?;
    let text = serde_json::to_string_pretty(&config("bench")).map_err(io::Error::other)?;
    std::fs::write(dir.join("config.json"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_holds_init_busybox_and_a_config_runc_reads() {
        let dir = std::env::temp_dir().join(format!("vmm-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let exe = std::env::current_exe().unwrap();
        // Any two files stand for init and busybox here.
        build(&dir, &exe, &exe).unwrap();
        // Built twice: the second replaces the first.
        build(&dir, &exe, &exe).unwrap();
        let root = dir.join("rootfs");
        let size = std::fs::metadata(&exe).unwrap().len();
        assert_eq!(std::fs::metadata(root.join("init")).unwrap().len(), size);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        for d in ["proc", "dev", "sys", "tmp"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["process"]["args"], json!(["/init"]));
        assert_eq!(config["root"]["path"], "rootfs");
        let namespaces: Vec<&str> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(
            namespaces.contains(&"pid"),
            "init's restart must end only its namespace"
        );
        let caps = config["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_SYS_BOOT")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
