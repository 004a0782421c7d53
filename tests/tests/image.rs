//! `vmm run --image` on this machine: what is wrong with an image is said
//! with its exit code before any VM is made, nothing is written outside
//! the cache by a hostile layer, and (on any KVM, the emulated one
//! included) the kernel mounts an image's root disk and starts the
//! project's init from it. The image's command running in its user space
//! is proved on the nested host (nested.rs).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vmm_cli::exit::code as exit_code;
use vmm_image::testing::{self, Compression, Layer};
use vmm_tests::{default_guest, default_guest_or_skip, images, run_until, vmm_bin, TempDir};

/// The default guest's init goes on every image disk: these tests need it
/// built (not KVM: they end before a VM is made).
fn guest_built() -> bool {
    prereq::require([prereq::Need::that(
        default_guest().is_some(),
        "the default guest (guest-kernels/build.sh)",
    )])
}

/// `vmm run --image ARGS...` with the cache in `cache`: (exit code, log).
fn run_image(cache: &Path, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(vmm_bin())
        .env("VMM_IMAGE_CACHE", cache)
        .arg("run")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.stdout.is_empty(),
        "{args:?}: a VM ran: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn small_system() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
        .dir("bin", 0o755)
        .file("bin/app", b"not really a program", 0o755)
        .tar()
}

fn layout(dir: &Path, layers: &[Vec<u8>]) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let config = testing::config(layers, json!({"Cmd": ["/bin/app"]}));
    testing::oci_layout(dir, layers, &config, "v1", Compression::Gzip);
    dir.display().to_string()
}

/// Nothing but the lock, the (empty) run directory and complete entries.
fn assert_no_leftovers(cache: &Path) {
    for e in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.starts_with(".build-"),
            "a half-built entry was left: {name}"
        );
        if name == ".run" {
            let left: Vec<_> = std::fs::read_dir(e.path()).unwrap().collect();
            assert!(left.is_empty(), "private copies were left: {left:?}");
        }
    }
}

#[test]
fn images_that_cannot_run_are_refused_before_any_vm_with_their_exit_codes() {
    if !guest_built() {
        return;
    }
    let tmp = TempDir::new("image-errors");
    let cache = tmp.join("cache");
    let ok = layout(&tmp.join("ok"), &[small_system()]);

    let (code, log) = run_image(
        &cache,
        &["--image", &tmp.join("missing").display().to_string()],
    );
    assert_eq!(code, Some(exit_code::FILE), "{log}");
    assert!(log.contains("no such directory or file"), "{log}");

    std::fs::create_dir(tmp.join("empty")).unwrap();
    let (code, log) = run_image(
        &cache,
        &["--image", &tmp.join("empty").display().to_string()],
    );
    assert_eq!(code, Some(exit_code::CONTAINER_IMAGE), "{log}");
    assert!(log.contains("neither an OCI image layout"), "{log}");

    let (code, log) = run_image(&cache, &["--image", &format!("{ok}:v9")]);
    assert_eq!(code, Some(exit_code::CONTAINER_IMAGE), "{log}");
    assert!(log.contains("no tag 'v9' (the layout holds: v1)"), "{log}");

    let arm = tmp.join("arm");
    std::fs::create_dir(&arm).unwrap();
    let layers = [small_system()];
    let mut config = testing::config(&layers, json!({"Cmd": ["/bin/app"]}));
    config["architecture"] = json!("arm64");
    testing::oci_layout(&arm, &layers, &config, "v1", Compression::Gzip);
    let (code, log) = run_image(&cache, &["--image", arm.to_str().unwrap()]);
    assert_eq!(code, Some(exit_code::CONTAINER_IMAGE), "{log}");
    assert!(log.contains("the image is for linux/arm64"), "{log}");

    let bzip2 = layout(&tmp.join("bzip2"), &[small_system()]);
    testing::edit_manifest(Path::new(&bzip2), |m| {
        m["layers"][0]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+bzip2");
    });
    let (code, log) = run_image(&cache, &["--image", &bzip2]);
    assert_eq!(code, Some(exit_code::CONTAINER_IMAGE), "{log}");
    assert!(
        log.contains("layer 1 has media type application/vnd.oci.image.layer.v1.tar+bzip2"),
        "{log}"
    );

    let (code, log) = run_image(&cache, &["--image", &ok, "--user", "nobody"]);
    assert_eq!(code, Some(exit_code::CONFIG), "{log}");
    assert!(
        log.contains("invalid --user 'nobody': no user 'nobody' in the image's /etc/passwd"),
        "{log}"
    );

    let (code, log) = run_image(&cache, &["--image", &ok, "--initrd", "/etc/hostname"]);
    assert_eq!(code, Some(exit_code::CONFIG), "{log}");
    assert!(log.contains("invalid --initrd"), "{log}");

    let (code, log) = run_image(&cache, &["--entrypoint", "/bin/sh"]);
    assert_eq!(code, Some(exit_code::USAGE), "{log}");
    assert!(
        log.contains("the following required arguments were not provided:\n  --image <REF>"),
        "{log}"
    );

    use std::os::unix::ffi::OsStrExt;
    let out = Command::new(vmm_bin())
        .env("VMM_IMAGE_CACHE", &cache)
        .args(["run", "--image", &ok, "--", "echo"])
        .arg(std::ffi::OsStr::from_bytes(b"not utf-8 \xff"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(exit_code::CONFIG), "{log}");
    assert!(
        log.contains("the command's arguments must be UTF-8"),
        "{log}"
    );

    // A blob changed after the image was written: named, with both digests.
    let bad = tmp.join("bad");
    let bad_ref = layout(
        &bad,
        &[small_system(), Layer::new().file("x", b"x", 0o644).tar()],
    );
    let image = vmm_image::Image::open(&bad_ref).unwrap();
    let digest = image.layers[1].digest.clone().unwrap();
    let blob = bad.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let other = testing::compress(
        &Layer::new().file("x", b"y", 0o644).tar(),
        Compression::Gzip,
    );
    std::fs::write(&blob, other).unwrap();
    let (code, log) = run_image(&cache, &["--image", &bad_ref]);
    assert_eq!(code, Some(exit_code::IMAGE_CONTENT), "{log}");
    assert!(
        log.contains(&format!("layer 2 of 2 ({digest}): digest mismatch")),
        "{log}"
    );
    assert_no_leftovers(&cache);
}

#[test]
fn a_hostile_layer_is_refused_and_writes_nothing_outside_the_cache() {
    if !guest_built() {
        return;
    }
    let tmp = TempDir::new("image-hostile");
    let cache = tmp.join("cache");
    // What the layers aim at: a file beside the cache, a directory whose
    // path a link gives.
    let target_dir = tmp.join("victim");
    std::fs::create_dir(&target_dir).unwrap();
    let escaped = tmp.join("escaped-by-dotdot");
    let depth = cache.components().count() + 8;
    let climb = format!(
        "{}{}",
        "../".repeat(depth),
        escaped.display().to_string().trim_start_matches('/')
    );
    let cases = [
        (
            "dotdot",
            Layer::new().file(&climb, b"pwned", 0o644).tar(),
            "climbs out of the root",
        ),
        (
            "absolute-link",
            Layer::new()
                .symlink("innocent", target_dir.to_str().unwrap())
                .file("innocent/planted", b"pwned", 0o644)
                .tar(),
            "to the absolute path",
        ),
        (
            "climbing-link",
            Layer::new()
                .symlink("up", &"../".repeat(depth))
                .file(
                    &format!(
                        "up/{}",
                        escaped.display().to_string().trim_start_matches('/')
                    ),
                    b"pwned",
                    0o644,
                )
                .tar(),
            "climbs out of the root",
        ),
        (
            "hardlink-out",
            Layer::new()
                .hardlink("shadow", &format!("{}etc/shadow", "../".repeat(depth)))
                .tar(),
            "climbs out of the root",
        ),
    ];
    for (name, hostile, says) in cases {
        let reference = layout(&tmp.join(name), &[small_system(), hostile]);
        let (code, log) = run_image(&cache, &["--image", &reference]);
        assert_eq!(code, Some(exit_code::IMAGE_CONTENT), "{name}: {log}");
        assert!(log.contains("layer 2 of 2 (sha256:"), "{name}: {log}");
        assert!(log.contains(says), "{name}: {log}");
        assert!(
            !escaped.exists(),
            "{name}: a layer wrote {}",
            escaped.display()
        );
        let planted: Vec<_> = std::fs::read_dir(&target_dir).unwrap().collect();
        assert!(
            planted.is_empty(),
            "{name}: a layer wrote into {}: {planted:?}",
            target_dir.display()
        );
        assert_no_leftovers(&cache);
    }
}

#[test]
fn the_kernel_mounts_an_images_root_disk_and_starts_init_from_it() {
    let Some(_) = default_guest_or_skip(&["init"]) else {
        return;
    };
    let tmp = TempDir::new("image-boot");
    let Some(imgs) = images::build_or_skip(&tmp.0) else {
        return;
    };
    let cache = tmp.join("cache");
    let mut cmd = Command::new(vmm_bin());
    cmd.env("VMM_IMAGE_CACHE", &cache).args([
        "run",
        "--image",
        &imgs.two_layers(),
        "--cmdline",
        "console=ttyS0 reboot=k panic=-1",
    ]);
    // On an emulated KVM init cannot make its first system call: the boot
    // is followed to the kernel starting it.
    let out = run_until(cmd, Duration::from_secs(600), |out, _| {
        out.contains("Run /vmm/init as init process")
    });
    let all = format!("{}\n{}", out.stdout, out.stderr);
    assert!(!out.timed_out, "{all}");
    assert!(out.stderr.contains("unpacked now into the cache"), "{all}");
    assert!(out.stderr.contains("runs sh -c"), "{all}");
    assert!(
        out.stdout.contains("VFS: Mounted root (ext4 filesystem)"),
        "{all}"
    );
    assert!(
        out.stdout.contains("Run /vmm/init as init process"),
        "{all}"
    );
    assert!(
        !out.stdout.contains("Kernel panic - not syncing: VFS"),
        "{all}"
    );
    // The VM had a private copy: the cached disk was never mounted (the
    // guest mounted its copy read-write), its run file still holds the
    // filler, and the copy is gone.
    let entry = std::fs::read_dir(&cache)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("sha256-"))
        .expect("a cache entry");
    let disk = entry.path().join("disk.ext4");
    let header = Command::new("dumpe2fs")
        .arg("-h")
        .arg(&disk)
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&header.stdout);
    let mounted = header
        .lines()
        .find(|l| l.starts_with("Last mount time:"))
        .unwrap_or_default();
    assert!(
        mounted.ends_with("n/a"),
        "the cached disk was mounted: {mounted}"
    );
    let run = Command::new("debugfs")
        .args(["-R", "cat /vmm/run"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        run.stdout.starts_with(b"####"),
        "the cached disk's run file was written"
    );
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_no_leftovers(&cache);
}

#[test]
fn vmm_image_lists_removes_and_prunes_the_cache() {
    let tmp = TempDir::new("image-cache-cli");
    let cache_dir = tmp.join("cache");
    let init = tmp.write("init", b"pretend init");
    let cache = vmm_image::Cache::new(cache_dir.clone(), 1 << 40);
    let mut refs = Vec::new();
    for name in ["one", "two"] {
        let reference = layout(
            &tmp.join(name),
            &[small_system(), Layer::new().file(name, b"x", 0o644).tar()],
        );
        let image = vmm_image::Image::open(&reference).unwrap();
        cache.get(&image, &init).unwrap();
        refs.push((reference, image.key));
    }
    let image_cmd = |args: &[&str]| {
        let out = Command::new(vmm_bin())
            .env("VMM_IMAGE_CACHE", &cache_dir)
            .arg("image")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = image_cmd(&["list"]);
    assert_eq!(code, Some(0), "{err}");
    // A cache limit that is no size.
    let bad = Command::new(vmm_bin())
        .env("VMM_IMAGE_CACHE", &cache_dir)
        .env("VMM_IMAGE_CACHE_MAX", "lots")
        .args(["image", "list"])
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(exit_code::CONFIG), "{log}");
    assert!(
        log.contains("invalid VMM_IMAGE_CACHE_MAX 'lots': expected a size"),
        "{log}"
    );
    for (reference, key) in &refs {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&key[..19]) && l.ends_with(reference.as_str())),
            "{out}"
        );
    }
    // By reference, then by key.
    let (code, out, err) = image_cmd(&["rm", &refs[0].0]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("removed {}\n", refs[0].1));
    let (code, _, err) = image_cmd(&["rm", &refs[0].1[7..20]]);
    assert_eq!(code, Some(exit_code::FILE), "{err}");
    assert!(err.contains("has this key"), "{err}");
    let (code, out, err) = image_cmd(&["rm", &refs[1].1[7..20]]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, format!("removed {}\n", refs[1].1));
    let (code, out, _) = image_cmd(&["ls"]);
    assert_eq!(
        (code, out.lines().count()),
        (Some(0), 1),
        "only the header: {out}"
    );
    let reference = layout(&tmp.join("three"), &[small_system()]);
    cache
        .get(&vmm_image::Image::open(&reference).unwrap(), &init)
        .unwrap();
    let (code, out, err) = image_cmd(&["prune"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(cache.list().unwrap().is_empty());
}

/// A kernel that resets the VM at once: an image's VM that ends in
/// milliseconds on any KVM, for what `vmm run --image` does before and
/// around the guest (the cache, the kernel's command line).
fn resetting_kernel(dir: &TempDir) -> String {
    dir.write("reset.elf", &vmm_tests::tiny_elf(&vmm_tests::asm::reset()))
        .display()
        .to_string()
}

/// `vmm run --image REF --kernel KERNEL` with the cache in `cache` (and
/// `VMM_IMAGE_CACHE_MAX=max`), then `args`: not yet run.
fn image_vm(
    cache: &Path,
    max: Option<&str>,
    kernel: &str,
    reference: &str,
    args: &[&str],
) -> Command {
    let mut cmd = Command::new(vmm_bin());
    cmd.env("VMM_IMAGE_CACHE", cache)
        .args(["run", "--image", reference, "--kernel", kernel])
        .args(["--memory", "16M", "--serial", "none"])
        .args(args);
    if let Some(max) = max {
        cmd.env("VMM_IMAGE_CACHE_MAX", max);
    }
    cmd
}

/// Runs `cmd` (an `image_vm`) to its end, which must be exit 0; its log.
fn ran_ok(mut cmd: Command) -> String {
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{log}");
    log
}

/// The kernel command line in a metrics document (`vmm run --metrics`).
fn kernel_cmdline(metrics: &Path) -> String {
    vmm_tests::metrics_document(metrics)["kernel_cmdline"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The cache's complete entries (directories named by their keys).
fn cache_entries(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sha256-"))
        .collect();
    names.sort();
    names
}

/// Two cold `vmm run --image` of one image at once: both boot, one
/// unpacks and the other waits for the cache's lock and takes what it
/// made. What dead VMMs left (a half-built entry, a private copy) is
/// removed; what a live process is building is not. The kernel's command
/// line gets `quiet` with the image's init parameters when it is the
/// default one, and only then.
#[test]
fn two_cold_runs_of_one_image_unpack_it_once_and_clear_what_dead_vmms_left() {
    if !guest_built() || !prereq::require([prereq::Need::kvm()]) {
        return;
    }
    let tmp = TempDir::new("image-lock");
    let cache = tmp.join("cache");
    let kernel = resetting_kernel(&tmp);
    let image = layout(&tmp.join("img"), &[small_system()]);
    // Leftovers: a process that has ended (its pid), and this one.
    let dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    let mut dead = dead;
    dead.wait().unwrap();
    let mine = std::process::id();
    for dir in [
        format!(".build-{dead_pid}"),
        format!(".build-{mine}"),
        ".run".into(),
    ] {
        std::fs::create_dir_all(cache.join(&dir)).unwrap();
    }
    std::fs::write(cache.join(format!(".build-{dead_pid}/half")), b"x").unwrap();
    std::fs::write(cache.join(format!(".run/{dead_pid}-copy")), b"x").unwrap();

    let runs: Vec<_> = (0..2)
        .map(|i| {
            let metrics = tmp.join(&format!("m{i}.json")).display().to_string();
            image_vm(&cache, None, &kernel, &image, &["--metrics", &metrics])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let logs: Vec<String> = runs
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            let log = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(out.status.code(), Some(0), "{log}");
            log
        })
        .collect();
    let unpacked = logs
        .iter()
        .filter(|l| l.contains("unpacked now into the cache"))
        .count();
    let cached = logs.iter().filter(|l| l.contains("from the cache")).count();
    assert_eq!((unpacked, cached), (1, 1), "{logs:#?}");
    assert_eq!(cache_entries(&cache).len(), 1);
    assert!(!cache.join(format!(".build-{dead_pid}")).exists());
    assert!(!cache.join(format!(".run/{dead_pid}-copy")).exists());
    assert!(
        cache.join(format!(".build-{mine}")).exists(),
        "a live process's build was removed"
    );
    std::fs::remove_dir(cache.join(format!(".build-{mine}"))).unwrap();
    assert_no_leftovers(&cache);
    for i in 0..2 {
        let cmdline = kernel_cmdline(&tmp.join(&format!("m{i}.json")));
        let words: Vec<&str> = cmdline.split_whitespace().collect();
        for want in ["quiet", "init=/vmm/init", "VMM_IMAGE=1", "root=/dev/vda"] {
            assert!(words.contains(&want), "{want}: {cmdline}");
        }
    }
    // A command line of one's own gets no `quiet`.
    let metrics = tmp.join("own.json");
    let mut own = image_vm(
        &cache,
        None,
        &kernel,
        &image,
        &["--cmdline", "console=ttyS0 reboot=k"],
    );
    own.arg("--metrics").arg(&metrics);
    ran_ok(own);
    let cmdline = kernel_cmdline(&metrics);
    assert!(
        !cmdline.split_whitespace().any(|w| w == "quiet"),
        "{cmdline}"
    );
    assert!(cmdline.contains("init=/vmm/init VMM_IMAGE=1"), "{cmdline}");
}

/// `VMM_IMAGE_CACHE_MAX` in K (or M, G, T: powers of 1024): past it,
/// after an image is added, the least recently used go and the new one
/// stays; a limit in T keeps them all.
#[test]
fn the_cache_limit_with_its_unit_evicts_the_least_recently_used_images() {
    if !guest_built() || !prereq::require([prereq::Need::kvm()]) {
        return;
    }
    let tmp = TempDir::new("image-evict");
    let kernel = resetting_kernel(&tmp);
    let images: Vec<String> = (0..3)
        .map(|i| {
            layout(
                &tmp.join(&format!("img{i}")),
                &[
                    small_system(),
                    Layer::new()
                        .file("n", format!("{i}").as_bytes(), 0o644)
                        .tar(),
                ],
            )
        })
        .collect();
    let run = |cache: &Path, max: &str, image: &str| {
        ran_ok(image_vm(cache, Some(max), &kernel, image, &[]));
        // Later runs must be later in the cache's order of use.
        std::thread::sleep(Duration::from_millis(20));
    };
    let roomy = tmp.join("roomy");
    for image in &images {
        run(&roomy, "1T", image);
    }
    let all = cache_entries(&roomy);
    assert_eq!(all.len(), 3);
    let entry = vmm_image::cache::usage(&roomy.join(&all[0]));
    // Room for two and a half entries, in KiB.
    let max = format!("{}K", entry * 5 / 2 / 1024);
    let tight = tmp.join("tight");
    run(&tight, &max, &images[0]);
    run(&tight, &max, &images[1]);
    run(&tight, &max, &images[0]); // image 1 is now the least recently used
    assert_eq!(cache_entries(&tight).len(), 2);
    run(&tight, &max, &images[2]);
    let key = |i: usize| {
        vmm_image::Image::open(&images[i])
            .unwrap()
            .key
            .replace(':', "-")
    };
    let mut want = vec![key(0), key(2)];
    want.sort();
    assert_eq!(cache_entries(&tight), want, "{max}");
}
