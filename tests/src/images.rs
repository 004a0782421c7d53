//! Container images for the `--image` tests, made offline on this machine
//! from Debian's busybox-static with umoci (an OCI image layout) and skopeo
//! (the same image as a `docker save` archive).
//!
//! The layout's tag `two` has two layers: the bottom one a busybox system
//! with a user `app` (1000:1000, home /home/app) and a /data directory
//! holding `gone.txt`, `old/x` and `keep/k`; the top one, a tar written by
//! hand and added verbatim (umoci itself never writes opaque markers),
//! whiteouts `data/gone.txt` and marks `data/old` opaque, adding
//! `data/old/y`. Its config runs `sh -c SCRIPT` as `app` in /home/app with
//! GREETING=hi; the script says who and where it is, lists /data and
//! /data/old and exits with 7.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The tag of the two-layer image in the layout.
pub const TWO_LAYERS: &str = "two";
/// The docker archive's REPO:TAG for the same image.
pub const ARCHIVE_TAG: &str = "vmm-test/two:1";
/// What the two-layer image's command runs.
pub const SCRIPT: &str = "echo \"hello from $(id -u):$(id -g) in $(pwd) with GREETING=$GREETING\"; \
                          echo data: $(ls /data); echo old: $(ls /data/old); cat /data/old/y; exit 7";
/// The exit status of SCRIPT.
pub const SCRIPT_STATUS: i32 = 7;

/// The images made.
pub struct TestImages {
    /// The OCI image layout (tag TWO_LAYERS).
    pub layout: PathBuf,
    /// The `docker save` archive (ARCHIVE_TAG).
    pub archive: PathBuf,
}

impl TestImages {
    /// `LAYOUT:two`.
    pub fn two_layers(&self) -> String {
        format!("{}:{TWO_LAYERS}", self.layout.display())
    }

    /// `ARCHIVE:vmm-test/two:1`.
    pub fn archive_ref(&self) -> String {
        format!("{}:{ARCHIVE_TAG}", self.archive.display())
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// What making the images needs that this machine lacks.
pub fn missing_tools() -> Vec<&'static str> {
    [
        ("umoci", "umoci"),
        ("skopeo", "skopeo"),
        ("tar", "tar"),
        ("busybox", "busybox-static"),
    ]
    .into_iter()
    .filter(|(p, _)| vmm_bench::run::which(p).is_none())
    .map(|(_, pkg)| pkg)
    .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes the images in `dir` (made if missing).
pub fn build(dir: &Path) -> Result<TestImages, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let layout = dir.join("oci");
    let image = |tag: &str| format!("{}:{tag}", layout.display());
    let rootless: &[&str] = if is_root() { &[] } else { &["--rootless"] };
    run(Command::new("umoci")
        .args(["init", "--layout"])
        .arg(&layout))?;
    run(Command::new("umoci").args(["new", "--image", &image("base")]))?;
    let bundle = dir.join("bundle");
    run(Command::new("umoci")
        .arg("unpack")
        .args(rootless)
        .args(["--image", &image("base")])
        .arg(&bundle))?;
    let root = bundle.join("rootfs");
    let io = |e: std::io::Error| e.to_string();
    for d in ["bin", "etc", "home/app", "data/old", "data/keep", "tmp"] {
        std::fs::create_dir_all(root.join(d)).map_err(io)?;
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).map_err(io)?;
    let list = Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .map_err(io)?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet != "busybox" && !applet.is_empty() {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).map_err(io)?;
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .map_err(io)?;
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\napp:x:1000:\nstaff:x:50:app\n",
    )
    .map_err(io)?;
    std::fs::write(root.join("data/gone.txt"), "lower\n").map_err(io)?;
    std::fs::write(root.join("data/old/x"), "lower\n").map_err(io)?;
    std::fs::write(root.join("data/keep/k"), "kept\n").map_err(io)?;
    if is_root() {
        std::os::unix::fs::chown(root.join("home/app"), Some(1000), Some(1000)).map_err(io)?;
    }
    run(Command::new("umoci")
        .arg("repack")
        .args(["--image", &image("base")])
        .arg(&bundle))?;
    // The top layer, by hand: a whiteout, an opaque directory and a file.
    let top = dir.join("top");
    std::fs::create_dir_all(top.join("data/old")).map_err(io)?;
    std::fs::write(top.join("data/.wh.gone.txt"), "").map_err(io)?;
    std::fs::write(top.join("data/old/.wh..wh..opq"), "").map_err(io)?;
    std::fs::write(top.join("data/old/y"), "upper\n").map_err(io)?;
    let top_tar = dir.join("top.tar");
    run(Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&top)
        .arg("-cf")
        .arg(&top_tar)
        .arg("data"))?;
    run(Command::new("umoci")
        .args([
            "raw",
            "add-layer",
            "--image",
            &image("base"),
            "--tag",
            "layered",
        ])
        .arg(&top_tar))?;
    run(Command::new("umoci").args([
        "config",
        "--image",
        &image("layered"),
        "--tag",
        TWO_LAYERS,
        "--config.cmd",
        "sh",
        "--config.cmd",
        "-c",
        "--config.cmd",
        SCRIPT,
        "--config.user",
        "app",
        "--config.workingdir",
        "/home/app",
        "--config.env",
        "GREETING=hi",
    ]))?;
    let archive = dir.join("two.tar");
    run(Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci:{}", image(TWO_LAYERS)))
        .arg(format!(
            "docker-archive:{}:{ARCHIVE_TAG}",
            archive.display()
        )))?;
    Ok(TestImages { layout, archive })
}

/// The images for a test in `dir`, or None (said on stderr) when this
/// machine lacks the tools; under CI that is a failure, as setup.sh
/// installs them.
pub fn build_or_skip(dir: &Path) -> Option<TestImages> {
    let missing = missing_tools();
    let needs = missing
        .iter()
        .map(|tool| prereq::Need::that(false, format!("{tool} (scripts/setup.sh installs it)")));
    if !prereq::require(needs) {
        return None;
    }
    Some(build(dir).unwrap_or_else(|e| panic!("making the test images: {e}")))
}
