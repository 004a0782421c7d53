//! One rule for a test whose host lacks what it needs (root, /dev/kvm, a
//! tool, the default guest, a network namespace): on a developer's machine
//! the test is skipped, and the skip is said on stderr past the test
//! harness's capture, so that every run shows it (a passing test's captured
//! output is thrown away); under CI the test fails, naming what is missing.
//!
//! CI is `CI` set to anything but empty, `0` or `false` (`.ci/run` sets
//! `CI=true` itself, so the rule does not depend on the runner).
//!
//! ```no_run
//! use prereq::Need;
//! if !prereq::require([Need::kvm(), Need::tool("runc", "runc")]) {
//!     return;
//! }
//! ```

use std::io::Write;
use std::path::Path;

/// The mark a skip's line starts with: the nested tests look for it in
/// the output of test binaries run there.
pub const SKIPPED: &str = "skipped: ";

/// Whether this run is under CI, where nothing may be skipped.
pub fn under_ci() -> bool {
    ci_value_means_ci(std::env::var("CI").ok().as_deref())
}

fn ci_value_means_ci(value: Option<&str>) -> bool {
    value.is_some_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"))
}

/// One thing a test needs, and whether this host has it.
#[derive(Debug, Clone)]
pub struct Need {
    met: bool,
    what: String,
}

impl Need {
    /// `what` (said when it is missing: what it is, and how to get it),
    /// present when `met`.
    pub fn that(met: bool, what: impl Into<String>) -> Need {
        Need {
            met,
            what: what.into(),
        }
    }

    /// /dev/kvm: opened for reading and writing, it answers
    /// KVM_GET_API_VERSION with 12, the only version there is.
    pub fn kvm() -> Need {
        use std::os::fd::AsRawFd;
        const KVM_GET_API_VERSION: libc::c_ulong = 0xae00;
        let ok = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            // SAFETY: KVM_GET_API_VERSION takes no argument; on a file
            // that is not KVM the ioctl fails, and nothing is written.
            .is_ok_and(|f| unsafe { libc::ioctl(f.as_raw_fd(), KVM_GET_API_VERSION, 0) } == 12);
        Need::that(ok, "/dev/kvm (KVM, readable and writable)")
    }

    /// Root (effective user id 0).
    pub fn root() -> Need {
        Need::that(is_root(), "root")
    }

    /// The program `name` on PATH, from the Debian `package`.
    pub fn tool(name: &str, package: &str) -> Need {
        Need::that(
            which(name).is_some(),
            format!("{name} on PATH (apt-get install {package}; scripts/setup.sh does)"),
        )
    }

    /// Whether it is there.
    pub fn met(&self) -> bool {
        self.met
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The first `name` on PATH that is an executable file.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exe = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        return is_exe(Path::new(name)).then(|| name.into());
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| is_exe(p))
}

/// True when every need is met. Otherwise the test is skipped: said on
/// stderr (one line, past the harness's capture) and false returned, or,
/// under CI, a panic naming every missing need.
#[track_caller]
pub fn require(needs: impl IntoIterator<Item = Need>) -> bool {
    let missing: Vec<String> = needs
        .into_iter()
        .filter(|n| !n.met)
        .map(|n| n.what)
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!("needs {}", missing.join(", ")));
    false
}

/// Skips the running test for `why` (see `require`): said past the
/// harness's capture, or, under CI, a panic.
#[track_caller]
pub fn skip(why: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if under_ci() {
        panic!("{test}: {why}; under CI (CI=true) a missing prerequisite is a failure, not a skip");
    }
    // Straight to the process's stderr: the harness captures only what
    // goes through print!/eprint!.
    let _ = writeln!(std::io::stderr().lock(), "{SKIPPED}{test}: {why}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ci_is_any_value_but_empty_0_or_false() {
        for (v, ci) in [
            (None, false),
            (Some(""), false),
            (Some("0"), false),
            (Some("false"), false),
            (Some("FALSE"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(ci_value_means_ci(v), ci, "{v:?}");
        }
    }

    #[test]
    fn needs_met_and_missing() {
        assert!(Need::tool("sh", "dash").met());
        assert!(!Need::tool("no-such-tool-here", "nothing").met());
        assert!(which("/bin/sh").is_some());
        // A path is a program when it is an executable file.
        use std::os::unix::fs::PermissionsExt;
        let file = std::env::temp_dir().join(format!("prereq-which-{}", std::process::id()));
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        let path = file.to_str().unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(which(path).is_none());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(which(path).is_some());
        std::fs::remove_file(&file).unwrap();
        assert!(which(path).is_none());
        // Everything met: no skip, nothing said.
        assert!(require([Need::that(true, "x")]));
    }

    /// Run with CI unset, a missing need skips (false) and says so; with
    /// CI=true it panics naming the need. Both in child processes, since
    /// the environment is the process's.
    #[test]
    fn a_missing_need_skips_or_fails_under_ci() {
        if let Ok(mode) = std::env::var("PREREQ_CHILD") {
            let met = require([Need::that(false, "a unicorn"), Need::that(true, "air")]);
            println!("returned {met} in {mode}");
            return;
        }
        let child = |ci: Option<&str>| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "tests::a_missing_need_skips_or_fails_under_ci",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PREREQ_CHILD", ci.unwrap_or("dev"));
            match ci {
                Some(v) => cmd.env("CI", v),
                None => cmd.env_remove("CI"),
            };
            let out = cmd.output().unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        let (ok, out, err) = child(None);
        assert!(ok, "{out}{err}");
        assert!(out.contains("returned false in dev"), "{out}");
        assert!(
            err.contains(
                "skipped: tests::a_missing_need_skips_or_fails_under_ci: needs a unicorn\n"
            ),
            "{err}"
        );
        let (ok, out, err) = child(Some("true"));
        assert!(!ok, "{out}{err}");
        assert!(!out.contains("returned"), "{out}");
        assert!(err.contains("needs a unicorn; under CI (CI=true)"), "{err}");
        assert!(!err.contains("air"), "{err}");
    }
}
