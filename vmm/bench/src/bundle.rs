//! The OCI bundle for the runc container of `vmm bench`: a busybox root file
//! system (busybox and a link for each of its applets, as in the default
//! guest), and a runtime config that runs the benchmark's command in its own
//! namespaces, with the PATH and the capabilities a container gets from
//! Docker. The container ends when the command does.

use std::io;
use std::path::Path;

use serde_json::json;

/// The command's environment: the PATH the default guest's init gives.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the container runs, as whom and where: a run as `vmm run --image`
/// resolves one.
pub use vmm_image::run::Spec;

/// `command` as root in /, with the default guest's PATH.
pub fn as_root(command: &[String]) -> Spec {
    Spec {
        argv: command.to_vec(),
        env: vec![format!("PATH={PATH}")],
        uid: 0,
        gid: 0,
        groups: Vec::new(),
        workdir: "/".into(),
    }
}

/// The runtime config (config.json) of the bundle, for runc: `spec` in its
/// own namespaces, the root read-only or not.
pub fn config(hostname: &str, spec: &Spec, readonly_root: bool) -> serde_json::Value {
    // Docker's default set.
    let caps = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_FSETID",
        "CAP_FOWNER",
        "CAP_MKNOD",
        "CAP_NET_RAW",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETFCAP",
        "CAP_SETPCAP",
        "CAP_NET_BIND_SERVICE",
        "CAP_SYS_CHROOT",
        "CAP_KILL",
        "CAP_AUDIT_WRITE",
    ];
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": spec.uid, "gid": spec.gid, "additionalGids": spec.groups},
            "args": spec.argv,
            "env": spec.env,
            "cwd": spec.workdir,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps
            },
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": readonly_root},
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

/// The applets of `busybox` as paths from the root (bin/sh, usr/bin/nc,
/// ...), from its own list.
pub fn applets(busybox: &Path) -> io::Result<Vec<String>> {
    let out = std::process::Command::new(busybox)
        .arg("--list-full")
        .output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list-full failed",
            busybox.display()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| !l.is_empty() && l != "bin/busybox" && !l.contains(".."))
        .collect())
}

/// Writes the bundle into `dir` (made if missing, its rootfs replaced):
/// rootfs/ with /bin/busybox (a copy of `busybox`, which must be static)
/// and a link to it at each of `applets`, the mount points, and
/// config.json running `command`.
pub fn build(dir: &Path, busybox: &Path, applets: &[String], command: &[String]) -> io::Result<()> {
    use std::os::unix::fs::{symlink, PermissionsExt};
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        std::fs::remove_dir_all(&rootfs)?;
    }
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc", "root"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::copy(busybox, rootfs.join("bin/busybox"))?;
    std::fs::set_permissions(
        rootfs.join("bin/busybox"),
        std::fs::Permissions::from_mode(0o755),
    )?;
    for applet in applets {
        let link = rootfs.join(applet);
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)?;
        }
        symlink("/bin/busybox", link)?;
    }
    std::fs::write(rootfs.join("etc/hostname"), "bench\n")?;
    write_config(dir, &as_root(command), true)
}

/// Writes the bundle's config.json for `spec`.
pub fn write_config(dir: &Path, spec: &Spec, readonly_root: bool) -> io::Result<()> {
    let text = serde_json::to_string_pretty(&config("bench", spec, readonly_root))
        .map_err(io::Error::other)?;
    std::fs::write(dir.join("config.json"), text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundle_holds_busybox_its_applets_and_a_config_runc_reads() {
        let dir = std::env::temp_dir().join(format!("vmm-bundle-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let exe = std::env::current_exe().unwrap();
        // Any file stands for busybox here.
        let applets = vec!["bin/sh".to_string(), "usr/sbin/nc".to_string()];
        let command = vec!["echo".to_string(), "a b".to_string()];
        build(&dir, &exe, &applets, &command).unwrap();
        // Built twice: the second replaces the first.
        build(&dir, &exe, &applets, &command).unwrap();
        let root = dir.join("rootfs");
        let size = std::fs::metadata(&exe).unwrap().len();
        assert_eq!(
            std::fs::metadata(root.join("bin/busybox")).unwrap().len(),
            size
        );
        for a in ["bin/sh", "usr/sbin/nc"] {
            assert_eq!(
                std::fs::read_link(root.join(a)).unwrap(),
                Path::new("/bin/busybox")
            );
        }
        for d in ["proc", "dev", "sys", "tmp"] {
            assert!(root.join(d).is_dir(), "{d}");
        }
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
        assert_eq!(config["process"]["args"], json!(["echo", "a b"]));
        assert_eq!(config["process"]["env"], json!([format!("PATH={PATH}")]));
        assert_eq!(config["root"]["path"], "rootfs");
        let namespaces: Vec<&str> = config["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        for ns in ["pid", "network", "mount"] {
            assert!(namespaces.contains(&ns), "{ns}");
        }
        let caps = config["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap();
        assert!(caps.contains(&json!("CAP_NET_RAW")));
        assert!(!caps.contains(&json!("CAP_SYS_ADMIN")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod applet_tests {
    use super::*;

    #[test]
    fn busyboxs_own_list_gives_the_applets() {
        let busybox = crate::run::which("busybox");
        let need = prereq::Need::that(
            busybox.is_some(),
            "busybox (apt-get install busybox-static)",
        );
        let (true, Some(busybox)) = (prereq::require([need]), busybox) else {
            return;
        };
        let list = applets(&busybox).unwrap();
        assert!(list.contains(&"bin/sh".to_string()), "{list:?}");
        assert!(list.iter().any(|a| a.ends_with("/echo")), "{list:?}");
        assert!(!list.contains(&"bin/busybox".to_string()));
        assert!(applets(Path::new("/bin/false")).is_err());
    }
}
