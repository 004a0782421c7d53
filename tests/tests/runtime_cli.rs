//! `vmm-runtime` on this machine: what it refuses before any VM exists,
//! with its exit codes and its `--log` lines, and its features document
//! against the OCI schema. The containers themselves run on the nested
//! host (tests/tests/nested.rs, runtime-*).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use vmm_tests::{repo_root, vmm_bin, TempDir};

fn runtime() -> PathBuf {
    vmm_bin().with_file_name("vmm-runtime")
}

fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(runtime())
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bundle whose root holds nothing, with `config` as its config.json.
fn bundle(dir: &TempDir, name: &str, config: serde_json::Value) -> PathBuf {
    let b = dir.join(name);
    std::fs::create_dir_all(b.join("rootfs")).unwrap();
    std::fs::create_dir_all(b.join("volume")).unwrap();
    std::fs::write(b.join("config.json"), config.to_string()).unwrap();
    b
}

fn config() -> serde_json::Value {
    serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
    })
}

#[test]
fn bad_bundles_are_refused_before_any_vm_with_their_exit_codes() {
    let dir = TempDir::new("runtime-cli");
    let root = dir.join("root");
    let missing = dir.join("no-such-bundle");
    let o = run(
        &root,
        &["create", "--bundle", missing.to_str().unwrap(), "c1"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such-bundle"), "{}", stderr(&o));

    let mut bad = config();
    bad["process"]["user"]["uid"] = "root".into();
    let b = bundle(&dir, "bad-field", bad);
    let log = dir.join("log.json");
    let o = Command::new(runtime())
        .arg("--root")
        .arg(&root)
        .args(["--log-format", "json", "--log"])
        .arg(&log)
        .args(["create", "--bundle"])
        .arg(&b)
        .arg("c1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("config.json: process.user.uid"),
        "{}",
        stderr(&o)
    );
    // The --log line is what podman and containerd's shim read.
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(line["level"], "error");
    assert!(
        line["msg"].as_str().unwrap().contains("process.user.uid"),
        "{line}"
    );

    let mut volume = config();
    volume["mounts"] = serde_json::json!([{"destination": "/data", "type": "bind",
        "source": dir.join("bad-field/volume"), "options": ["rbind"]}]);
    let b = bundle(&dir, "volume", volume);
    let o = run(&root, &["create", "--bundle", b.to_str().unwrap(), "c1"]);
    assert_eq!(o.status.code(), Some(18), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("mounts[0].source") && stderr(&o).contains("/data"),
        "{}",
        stderr(&o)
    );

    let o = run(
        &root,
        &["create", "--bundle", b.to_str().unwrap(), "../escape"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // Nothing was left under the root by any of them.
    let left: Vec<_> = std::fs::read_dir(&root).map_or(Vec::new(), |d| d.flatten().collect());
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn commands_on_a_container_that_does_not_exist_say_so() {
    let dir = TempDir::new("runtime-cli-none");
    let root = dir.join("root");
    for args in [
        &["start", "ghost"][..],
        &["state", "ghost"],
        &["kill", "ghost", "TERM"],
        &["delete", "ghost"],
        &["pause", "ghost"],
        &["ps", "ghost"],
    ] {
        let o = run(&root, args);
        assert_eq!(o.status.code(), Some(15), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("container ghost does not exist"),
            "{}",
            stderr(&o)
        );
    }
    // delete --force of nothing succeeds, as runc's does.
    assert_eq!(
        run(&root, &["delete", "--force", "ghost"]).status.code(),
        Some(0)
    );
    let o = run(&root, &["kill", "ghost", "NOSUCHSIG"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let o = run(&root, &["list", "--format", "json"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "[]");
}

#[test]
fn exec_checkpoint_and_restore_are_refused_with_why() {
    let dir = TempDir::new("runtime-cli-exec");
    for args in [
        &["exec", "c1", "sh"][..],
        &["checkpoint", "c1"],
        &["restore", "c1"],
    ] {
        let o = run(&dir.join("root"), args);
        assert_eq!(o.status.code(), Some(18), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(args[0]), "{}", stderr(&o));
    }
}

#[test]
fn the_features_document_is_valid_against_the_oci_schema() {
    let dir = TempDir::new("runtime-cli-features");
    let o = run(&dir.join("root"), &["features"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let doc = dir.write("features.json", &o.stdout);
    // The validator itself tells a bad document: one without ociVersionMax.
    let mut broken: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    broken.as_object_mut().unwrap().remove("ociVersionMax");
    let broken = dir.write("broken.json", broken.to_string().as_bytes());
    let validate = |file: &Path| {
        Command::new("python3")
            .arg(repo_root().join("tests/data/oci_validate.py"))
            .arg(repo_root().join("tests/data/oci-runtime-spec"))
            .arg("features-schema.json")
            .arg(file)
            .output()
            .unwrap()
    };
    let v = validate(&doc);
    if v.status.code() == Some(2)
        && !prereq::require([prereq::Need::that(false, "python3's jsonschema")])
    {
        return;
    }
    assert!(v.status.success(), "{}", stderr(&v));
    assert_eq!(
        validate(&broken).status.code(),
        Some(1),
        "a document without ociVersionMax"
    );
}
