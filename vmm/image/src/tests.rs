//! Unpacking, finding and caching images made by hand (`testing`).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::testing::{self, Compression, Layer};
use crate::unpack::{Kind, Tree};
use crate::{Cache, Class, Error, Image};

/// A directory removed when dropped.
struct Tmp(PathBuf);

impl Tmp {
    fn new(tag: &str) -> Tmp {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vmm-image-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Tmp(dir)
    }
}

impl std::ops::Deref for Tmp {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Tmp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The bottom layer: a small system.
fn base() -> Vec<u8> {
    Layer::new()
        .dir("etc", 0o755)
        .file(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        )
        .file("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644)
        .dir("usr", 0o755)
        .dir("usr/lib", 0o755)
        .symlink("lib", "usr/lib")
        .file("usr/lib/libc.so", b"libc", 0o755)
        .dir("bin", 0o755)
        .file_owned("bin/su", b"setuid", 0o4755, 0, 0)
        .hardlink("bin/su-again", "bin/su")
        .dir("gone", 0o755)
        .file("gone/file", b"lower", 0o644)
        .file("remove-me", b"lower", 0o644)
        .dir("opaque", 0o755)
        .file("opaque/lower-file", b"lower", 0o644)
        .dir("opaque/lower-dir", 0o755)
        .file("opaque/lower-dir/deep", b"lower", 0o644)
        .file("replaced", b"old", 0o644)
        .dir("dir-then-file", 0o755)
        .file("dir-then-file/x", b"x", 0o644)
        .dir_owned("home/app", 0o700, 1000, 1000)
        .file_owned("home/app/.profile", b"app's", 0o600, 1000, 1000)
        .char_device("dev/null", 1, 3, 0o666)
        .block_device("dev/loop9", 7, 9, 0o660)
        .fifo("run/pipe", 0o600)
        .tar()
}

/// The top layer: whiteouts, an opaque directory, replacements, and a
/// file through the relative link lib -> usr/lib.
fn top() -> Vec<u8> {
    Layer::new()
        .whiteout("remove-me")
        .whiteout("gone")
        .dir("opaque", 0o750)
        .opaque("opaque")
        .file("opaque/upper-file", b"upper", 0o644)
        .file("replaced", b"new", 0o600)
        .file("dir-then-file", b"now a file", 0o644)
        .file("lib/added-through-link", b"via link", 0o644)
        .tar()
}

fn read(root: &Path, rel: &str) -> String {
    std::fs::read_to_string(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn exists(root: &Path, rel: &str) -> bool {
    std::fs::symlink_metadata(root.join(rel)).is_ok()
}

fn apply(layers: &[Vec<u8>], native: bool) -> (Tmp, Tree) {
    let tmp = Tmp::new("tree");
    let mut tree = Tree::new(tmp.join("root"), native).unwrap();
    for l in layers {
        if let Err(e) = tree.apply_layer(&l[..]) {
            panic!("{e:?}");
        }
    }
    (tmp, tree)
}

#[test]
fn layers_apply_in_order_with_whiteouts_and_opaque_directories() {
    let (_tmp, tree) = apply(&[base(), top()], false);
    let r = tree.root();
    assert!(!exists(r, "remove-me"));
    assert!(
        !exists(r, "gone"),
        "a whiteout of a directory removes it all"
    );
    assert!(!tree.entries().contains_key(Path::new("gone/file")));
    // Opaque: the lower entries go, this layer's stay.
    assert!(!exists(r, "opaque/lower-file"));
    assert!(!exists(r, "opaque/lower-dir"));
    assert_eq!(read(r, "opaque/upper-file"), "upper");
    assert_eq!(tree.entries()[Path::new("opaque")].mode, 0o750);
    assert_eq!(read(r, "replaced"), "new");
    assert_eq!(tree.entries()[Path::new("replaced")].mode, 0o600);
    assert_eq!(read(r, "dir-then-file"), "now a file");
    assert!(!tree.entries().contains_key(Path::new("dir-then-file/x")));
    // A relative link inside the root is followed: the file lands in
    // usr/lib, the link stays a link.
    assert_eq!(read(r, "usr/lib/added-through-link"), "via link");
    assert!(std::fs::symlink_metadata(r.join("lib"))
        .unwrap()
        .file_type()
        .is_symlink());
    // Hard links share an inode; ownership and modes are recorded.
    let a = std::fs::metadata(r.join("bin/su")).unwrap();
    let b = std::fs::metadata(r.join("bin/su-again")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(tree.entries()[Path::new("bin/su")].mode, 0o4755);
    let home = tree.entries()[Path::new("home/app/.profile")];
    assert_eq!((home.uid, home.gid, home.mode), (1000, 1000, 0o600));
    assert_eq!(tree.entries()[Path::new("dev/null")].kind, Kind::Char(1, 3));
    assert_eq!(tree.entries()[Path::new("run/pipe")].kind, Kind::Fifo);
    // A parent no entry named is made 0755 root.
    assert_eq!(tree.entries()[Path::new("home")].mode, 0o755);
    // Not root-like: the files are the unpacker's; a device node is a
    // placeholder for the disk builder.
    assert!(std::fs::symlink_metadata(r.join("dev/null"))
        .unwrap()
        .is_file());
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(r.join("run/pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
}

#[test]
fn as_root_ownership_modes_and_device_nodes_are_on_the_files() {
    if !prereq::require([prereq::Need::root()]) {
        return;
    }
    use std::os::unix::fs::FileTypeExt;
    let (_tmp, tree) = apply(&[base(), top()], true);
    let r = tree.root();
    let m = std::fs::symlink_metadata(r.join("home/app/.profile")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1000, 1000, 0o600));
    assert_eq!(
        std::fs::metadata(r.join("bin/su")).unwrap().mode() & 0o7777,
        0o4755
    );
    let dev = std::fs::symlink_metadata(r.join("dev/null")).unwrap();
    assert!(dev.file_type().is_char_device());
    assert_eq!(dev.rdev(), libc::makedev(1, 3));
    let blk = std::fs::symlink_metadata(r.join("dev/loop9")).unwrap();
    assert!(blk.file_type().is_block_device());
    assert_eq!(
        (blk.rdev(), blk.mode() & 0o7777),
        (libc::makedev(7, 9), 0o660)
    );
    // Times are the layers' once set.
    tree.set_times().unwrap();
    assert_eq!(
        std::fs::metadata(r.join("etc/passwd")).unwrap().mtime(),
        1_700_000_000
    );
}

/// Applies `layer` over `base()` next to a sentinel directory outside the
/// root: the layer must be refused and nothing appear outside.
fn refused(layer: Vec<u8>) -> String {
    let tmp = Tmp::new("hostile");
    let outside = tmp.join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut tree = Tree::new(tmp.join("root"), false).unwrap();
    tree.apply_layer(&base()[..]).unwrap();
    // Links a hostile layer may count on: one to the sentinel by its
    // absolute path, one that climbs out.
    let evil = Layer::new()
        .symlink("abs", outside.to_str().unwrap())
        .symlink("up", "../../../../../../..")
        .tar();
    tree.apply_layer(&evil[..]).unwrap();
    let err = match tree.apply_layer(&layer[..]) {
        Err(crate::unpack::ApplyError::Content(e)) => e,
        other => panic!("not refused as content: {other:?}"),
    };
    let left: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(left.is_empty(), "written outside the root: {left:?}");
    assert!(!tmp.join("escaped").exists());
    err
}

#[test]
fn hostile_layers_are_refused_and_write_nothing_outside() {
    let e = refused(Layer::new().file("../escaped", b"x", 0o644).tar());
    assert!(e.contains("climbs out of the root"), "{e}");
    let e = refused(Layer::new().file("a/../../escaped", b"x", 0o644).tar());
    assert!(e.contains("climbs out of the root"), "{e}");
    let e = refused(Layer::new().file("abs/planted", b"x", 0o644).tar());
    assert!(e.contains("absolute path"), "{e}");
    let e = refused(Layer::new().dir("abs/sub", 0o755).tar());
    assert!(e.contains("absolute path"), "{e}");
    let e = refused(Layer::new().file("up/escaped", b"x", 0o644).tar());
    assert!(e.contains("climbs out of the root"), "{e}");
    let e = refused(Layer::new().hardlink("stolen", "../../../etc/passwd").tar());
    assert!(e.contains("climbs out of the root"), "{e}");
    let e = refused(Layer::new().hardlink("stolen", "abs/x").tar());
    assert!(e.contains("absolute path"), "{e}");
    let e = refused(Layer::new().hardlink("l", "no/such/file").tar());
    assert!(e.contains("not there"), "{e}");
    let e = refused(Layer::new().whiteout("abs/x").tar());
    assert!(e.contains("absolute path"), "{e}");
    let e = refused(Layer::new().file("etc/passwd/x", b"x", 0o644).tar());
    assert!(e.contains("not a directory"), "{e}");
    let e = refused(b"this is not a tar archive at all, but it is long enough to fill a header block of 512 bytes.................................................................................................................................................................................................................................................................................................................................................................................................................................".to_vec());
    assert!(e.contains("corrupt") || e.contains("not a tar"), "{e}");
}

#[test]
fn an_entry_replaces_a_link_at_its_place_and_never_writes_through_it() {
    let tmp = Tmp::new("replace-link");
    let outside = tmp.join("target");
    std::fs::write(&outside, "host data").unwrap();
    let mut tree = Tree::new(tmp.join("root"), false).unwrap();
    let l1 = Layer::new()
        .symlink("file", outside.to_str().unwrap())
        .tar();
    let l2 = Layer::new().file("file", b"image data", 0o644).tar();
    tree.apply_layer(&l1[..]).unwrap();
    tree.apply_layer(&l2[..]).unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "host data");
    assert_eq!(read(tree.root(), "file"), "image data");
}

fn image_config(layers: &[Vec<u8>]) -> serde_json::Value {
    testing::config(
        layers,
        json!({"Cmd": ["/bin/sh"], "User": "app", "WorkingDir": "/home/app", "Env": ["A=1"]}),
    )
}

#[test]
fn oci_layouts_are_found_by_tag_with_any_compression() {
    for c in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let tmp = Tmp::new("oci");
        let layers = [base(), top()];
        let digest = testing::oci_layout(&tmp, &layers, &image_config(&layers), "v1", c);
        for reference in [tmp.display().to_string(), format!("{}:v1", tmp.display())] {
            let image = Image::open(&reference).unwrap();
            assert_eq!(image.key, digest);
            assert_eq!(image.layers.len(), 2);
            let out = tmp.join(format!("unpacked-{}", reference.len()));
            let tree = crate::unpack(&image, &out, false).unwrap();
            assert_eq!(read(tree.root(), "opaque/upper-file"), "upper");
        }
        let e = Image::open(&format!("{}:v2", tmp.display())).err().unwrap();
        assert!(
            e.to_string().contains("no tag 'v2' (the layout holds: v1)"),
            "{e}"
        );
        assert_eq!(e.class(), Class::Reference);
    }
}

#[test]
fn a_layout_of_several_images_needs_a_tag() {
    let tmp = Tmp::new("two-tags");
    let index = |tag: &str, layer: Vec<u8>| -> serde_json::Value {
        let layers = [layer];
        testing::oci_layout(
            &tmp,
            &layers,
            &image_config(&layers),
            tag,
            Compression::None,
        );
        serde_json::from_slice(&std::fs::read(tmp.join("index.json")).unwrap()).unwrap()
    };
    let mut a = index("a", base());
    let b = index("b", top());
    let second = b["manifests"][0].clone();
    a["manifests"].as_array_mut().unwrap().push(second.clone());
    std::fs::write(tmp.join("index.json"), serde_json::to_vec(&a).unwrap()).unwrap();
    let e = Image::open(tmp.to_str().unwrap()).err().unwrap();
    let says = format!(
        "the layout holds 2 images: pick one with {}:TAG (tags: a, b)",
        tmp.display()
    );
    assert!(e.to_string().contains(&says), "{e}");
    assert_eq!(e.class(), Class::Reference);
    let image = Image::open(&format!("{}:b", tmp.display())).unwrap();
    assert_eq!(image.key, second["digest"].as_str().unwrap());
}

#[test]
fn an_oci_layout_in_a_tar_is_read_in_place() {
    let tmp = Tmp::new("oci-tar");
    let layout = tmp.join("layout");
    std::fs::create_dir(&layout).unwrap();
    let layers = [base(), top()];
    let digest = testing::oci_layout(
        &layout,
        &layers,
        &image_config(&layers),
        "v1",
        Compression::Zstd,
    );
    let file = tmp.join("layout.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&file).unwrap());
    b.append_dir_all(".", &layout).unwrap();
    b.finish().unwrap();
    drop(b);
    let image = Image::open(&format!("{}:v1", file.display())).unwrap();
    assert_eq!(image.key, digest);
    let tree = crate::unpack(&image, &tmp.join("out"), false).unwrap();
    assert_eq!(read(tree.root(), "usr/lib/added-through-link"), "via link");
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_named() {
    let tmp = Tmp::new("digest");
    let layers = [base(), top()];
    testing::oci_layout(
        &tmp,
        &layers,
        &image_config(&layers),
        "v1",
        Compression::Gzip,
    );
    // Change one byte of the second layer's blob: the manifest's digest
    // and the config's diff ID no longer match.
    let image = Image::open(tmp.to_str().unwrap()).unwrap();
    let digest = image.layers[1].digest.clone().unwrap();
    let blob = tmp.join("blobs/sha256").join(&digest["sha256:".len()..]);
    let plain = testing::compress(
        &Layer::new().file("replaced", b"evil", 0o600).tar(),
        Compression::Gzip,
    );
    std::fs::write(&blob, plain).unwrap();
    let out = tmp.join("unpacked");
    let e = crate::unpack(&image, &out, false).err().unwrap();
    let msg = e.to_string();
    assert!(msg.contains(&format!("layer 2 of 2 ({digest})")), "{msg}");
    assert!(msg.contains("digest mismatch"), "{msg}");
    assert_eq!(e.class(), Class::Content);
    // A truncated compressed layer is a corrupt one.
    let good = testing::compress(&top(), Compression::Gzip);
    std::fs::write(&blob, &good[..good.len() / 2]).unwrap();
    let e = crate::unpack(&image, &tmp.join("unpacked2"), false)
        .err()
        .unwrap();
    assert_eq!(e.class(), Class::Content, "{e}");
    assert!(e.to_string().contains("layer 2 of 2"), "{e}");
    // A manifest that is not what index.json says is refused on open.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let mpath = tmp.join("blobs/sha256").join(&m["sha256:".len()..]);
    let mut text = std::fs::read(&mpath).unwrap();
    text.push(b' ');
    std::fs::write(&mpath, text).unwrap();
    let e = Image::open(tmp.to_str().unwrap()).err().unwrap();
    assert!(
        e.to_string().contains("manifest") && e.to_string().contains("digest mismatch"),
        "{e}"
    );
}

#[test]
fn what_is_not_an_image_for_this_vmm_says_why() {
    let tmp = Tmp::new("not-image");
    let e = Image::open(tmp.to_str().unwrap()).err().unwrap();
    assert_eq!(e.class(), Class::Reference);
    assert!(e.to_string().contains("neither an OCI image layout"), "{e}");
    let file = tmp.join("file.tar");
    std::fs::write(&file, "plain text, not a tar").unwrap();
    let e = Image::open(file.to_str().unwrap()).err().unwrap();
    assert_eq!(e.class(), Class::Reference, "{e}");
    let e = Image::open(tmp.join("missing").to_str().unwrap())
        .err()
        .unwrap();
    assert_eq!(e.class(), Class::Missing);
    // Another architecture.
    let arm = tmp.join("arm");
    std::fs::create_dir(&arm).unwrap();
    let layers = [base()];
    let mut config = image_config(&layers);
    config["architecture"] = json!("arm64");
    testing::oci_layout(&arm, &layers, &config, "latest", Compression::Gzip);
    let e = Image::open(arm.to_str().unwrap()).err().unwrap();
    assert!(
        e.to_string().contains("the image is for linux/arm64"),
        "{e}"
    );
    assert_eq!(e.class(), Class::Reference);
}

/// A multi-platform image (an index of manifests, arm64 first) gives its
/// linux/amd64 image; an index without one is refused, naming what it has.
#[test]
fn a_multi_platform_index_gives_its_linux_amd64_image() {
    let tmp = Tmp::new("multi");
    let amd_layers = [base()];
    let amd = testing::oci_layout(
        &tmp,
        &amd_layers,
        &image_config(&amd_layers),
        "amd",
        Compression::Gzip,
    );
    // The arm64 image's blobs, made in a layout of their own, join them.
    let arm_dir = tmp.join("arm");
    let arm_layers = [top()];
    let mut arm_config = image_config(&arm_layers);
    arm_config["architecture"] = json!("arm64");
    let arm = testing::oci_layout(&arm_dir, &arm_layers, &arm_config, "arm", Compression::Gzip);
    for blob in std::fs::read_dir(arm_dir.join("blobs/sha256")).unwrap() {
        let blob = blob.unwrap();
        std::fs::copy(blob.path(), tmp.join("blobs/sha256").join(blob.file_name())).unwrap();
    }
    testing::multi_platform_index(
        &tmp,
        &[(&arm, "linux", "arm64"), (&amd, "linux", "amd64")],
        "multi",
    );
    let image = Image::open(&format!("{}:multi", tmp.display())).unwrap();
    assert_eq!(image.key, amd);
    assert_eq!(image.layers.len(), 1);
    let tree = crate::unpack(&image, &tmp.join("unpacked"), false).unwrap();
    assert!(exists(tree.root(), "opaque/lower-file"), "the amd64 layer");
    assert!(!exists(tree.root(), "opaque/upper-file"), "the arm64 layer");

    testing::multi_platform_index(
        &tmp,
        &[(&arm, "linux", "arm64"), (&arm, "linux", "s390x")],
        "multi",
    );
    let e = Image::open(&format!("{}:multi", tmp.display()))
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("no manifest for linux/amd64 (the index has: linux/arm64, linux/s390x)"),
        "{e}"
    );
    assert_eq!(e.class(), Class::Reference);
}

/// A layer whose media type is not a tar (plain, gzip or zstd) is refused
/// on open, before anything is unpacked.
#[test]
fn a_layer_of_a_media_type_this_vmm_cannot_unpack_is_refused() {
    let tmp = Tmp::new("media");
    let layers = [base(), top()];
    testing::oci_layout(
        &tmp,
        &layers,
        &image_config(&layers),
        "v1",
        Compression::Gzip,
    );
    testing::edit_manifest(&tmp, |m| {
        m["layers"][1]["mediaType"] = json!("application/vnd.oci.image.layer.v1.tar+bzip2");
    });
    let e = Image::open(tmp.to_str().unwrap()).err().unwrap();
    assert!(
        e.to_string().contains(
            "layer 2 has media type application/vnd.oci.image.layer.v1.tar+bzip2, \
             which this VMM cannot unpack"
        ),
        "{e}"
    );
    assert_eq!(e.class(), Class::Reference);
}

#[test]
fn docker_save_archives_are_found_by_repo_and_tag() {
    let tmp = Tmp::new("docker");
    let layers = [base(), top()];
    let file = tmp.join("img.tar");
    testing::docker_archive(&file, &layers, &image_config(&layers), "example/app:1.0");
    let f = file.display();
    for reference in [format!("{f}"), format!("{f}:example/app:1.0")] {
        let image = Image::open(&reference).unwrap();
        assert!(image.key.starts_with("sha256:"));
        let tree =
            crate::unpack(&image, &tmp.join(format!("u{}", reference.len())), false).unwrap();
        assert_eq!(read(tree.root(), "replaced"), "new");
    }
    // Names compare as docker compares them.
    for (a, b) in [
        ("busybox", "docker.io/library/busybox:latest"),
        ("example/app:1.0", "docker.io/example/app:1.0"),
        ("registry.local:5000/app", "registry.local:5000/app:latest"),
        ("localhost/app:2", "localhost/app:2"),
    ] {
        assert_eq!(crate::source::normalize_name(a), b);
    }
    assert!(Image::open(&format!("{f}:docker.io/example/app:1.0")).is_ok());
    let e = Image::open(&format!("{f}:example/app")).err().unwrap();
    assert!(
        e.to_string().contains("no image tagged 'example/app'"),
        "{e}"
    );
}

fn have_e2fsprogs() -> bool {
    use prereq::Need;
    prereq::require([
        Need::tool("debugfs", "e2fsprogs"),
        Need::tool("mkfs.ext4", "e2fsprogs"),
    ])
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .arg("-R")
        .arg(request)
        .arg(image)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Owner, group and permission bits of a path on an ext4 image.
fn owner_mode(image: &Path, path: &str) -> (u32, u32, u32) {
    let stat = debugfs(image, &format!("stat \"{path}\""));
    let field = |name: &str| -> u32 {
        let at = stat.find(name).unwrap_or_else(|| panic!("{path}: {stat}")) + name.len();
        let word = stat[at..].split_whitespace().next().unwrap();
        if name == "Mode:" {
            u32::from_str_radix(word.trim_start_matches('0'), 8).unwrap_or(0)
        } else {
            word.parse().unwrap()
        }
    };
    (field("User:"), field("Group:"), field("Mode:"))
}

#[test]
fn the_cached_disk_holds_init_the_run_file_and_the_image_with_its_owners() {
    if !have_e2fsprogs() {
        return;
    }
    for native in [false, true] {
        if native
            && !prereq::require([prereq::Need::that(
                is_root(),
                "root (for the half that stages owners natively)",
            )])
        {
            continue;
        }
        let tmp = Tmp::new("cache");
        let layers = [base(), top()];
        let oci = tmp.join("oci");
        std::fs::create_dir(&oci).unwrap();
        testing::oci_layout(
            &oci,
            &layers,
            &image_config(&layers),
            "v1",
            Compression::Gzip,
        );
        let init = tmp.join("init");
        std::fs::write(&init, b"\x7fELF pretend init").unwrap();
        let cache = Cache::new(tmp.join("cache"), 1 << 40).unpacking_natively(native);
        let opts = crate::run::Options::default();
        let p = crate::prepare(oci.to_str().unwrap(), &init, &opts, &cache, None).unwrap();
        assert!(p.built);
        assert_eq!(p.spec.argv, ["/bin/sh"]);
        assert_eq!((p.spec.uid, p.spec.gid), (1000, 1000));
        assert_eq!(p.spec.workdir, "/home/app");
        // The VM's disk is an overlay: debugfs reads it flattened.
        let flat = tmp.join("flat.ext4");
        flatten(&p.disk, &flat);
        let disk = &flat;
        assert_eq!(debugfs(disk, "cat /vmm/init"), "\u{7f}ELF pretend init");
        let run = debugfs(disk, "cat /vmm/run");
        assert!(
            run.starts_with("VMMRUN1\nA/bin/sh\0EPATH="),
            "{:?}",
            &run[..64]
        );
        assert!(
            run.contains("\0EA=1\0EHOME=/home/app\0U1000\0G1000\0S1000\0W/home/app\0\0"),
            "{:?}",
            &run[..200]
        );
        assert_eq!(owner_mode(disk, "/vmm/init"), (0, 0, 0o755));
        assert_eq!(
            owner_mode(disk, "/rootfs/home/app/.profile"),
            (1000, 1000, 0o600)
        );
        assert_eq!(owner_mode(disk, "/rootfs/home/app"), (1000, 1000, 0o700));
        assert_eq!(owner_mode(disk, "/rootfs/bin/su"), (0, 0, 0o4755));
        assert_eq!(owner_mode(disk, "/rootfs/dev/null"), (0, 0, 0o666));
        let null = debugfs(disk, "stat /rootfs/dev/null");
        assert!(
            null.contains("Type: character special") && null.contains("number: 01:03"),
            "{null}"
        );
        let ls = debugfs(disk, "ls -p /rootfs/opaque");
        assert!(ls.contains("upper-file") && !ls.contains("lower"), "{ls}");
        let ls = debugfs(disk, "ls -p /rootfs");
        assert!(!ls.contains("remove-me") && !ls.contains("/gone/"), "{ls}");
        assert_eq!(
            debugfs(disk, "cat /rootfs/usr/lib/added-through-link"),
            "via link"
        );
        // The cache's disk has the filler in its run file: VMs never
        // write it.
        let cached = debugfs(&p.entry.disk(), "cat /vmm/run");
        assert!(cached.starts_with("####"), "{}", &cached[..16]);
        // A second run is warm, with its own overlay.
        let q =
            crate::prepare(&format!("{}:v1", oci.display()), &init, &opts, &cache, None).unwrap();
        assert!(!q.built);
        assert_ne!(q.disk, p.disk);
        // Another init makes the disk again.
        std::fs::write(&init, b"\x7fELF another init").unwrap();
        let r = crate::prepare(oci.to_str().unwrap(), &init, &opts, &cache, None).unwrap();
        assert!(r.built);
        let flat_r = tmp.join("flat-r.ext4");
        flatten(&r.disk, &flat_r);
        assert_eq!(debugfs(&flat_r, "cat /vmm/init"), "\u{7f}ELF another init");
        // fsck finds nothing to fix.
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&flat_r)
            .output()
            .unwrap();
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
}

/// `n` images of one small file each (`img0`, ...) in `dir`, opened, with
/// their keys.
fn one_file_images(dir: &Path, n: usize) -> Vec<(Image, String)> {
    (0..n)
        .map(|i| {
            let at = dir.join(format!("img{i}"));
            std::fs::create_dir(&at).unwrap();
            let layers = [Layer::new()
                .file("f", format!("image {i}").as_bytes(), 0o644)
                .tar()];
            let config = testing::config(&layers, json!({"Cmd": ["true"]}));
            let key = testing::oci_layout(&at, &layers, &config, "t", Compression::None);
            (Image::open(at.to_str().unwrap()).unwrap(), key)
        })
        .collect()
}

#[test]
fn a_full_cache_drops_its_least_recently_used_images() {
    if !have_e2fsprogs() {
        return;
    }
    let tmp = Tmp::new("evict");
    let init = tmp.join("init");
    std::fs::write(&init, b"init").unwrap();
    let refs = one_file_images(&tmp, 3);
    // Room for about two entries.
    let cache_dir = tmp.join("cache");
    let one = {
        let c = Cache::new(cache_dir.clone(), 1 << 40);
        let (e, _) = c.get(&refs[0].0, &init).unwrap();
        crate::cache::usage(&e.dir)
    };
    let cache = Cache::new(cache_dir.clone(), one * 2 + one / 2);
    std::thread::sleep(std::time::Duration::from_millis(20));
    cache.get(&refs[1].0, &init).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    // Image 0 used again: image 1 is now the least recently used.
    let (_, built) = cache.get(&refs[0].0, &init).unwrap();
    assert!(!built);
    std::thread::sleep(std::time::Duration::from_millis(20));
    cache.get(&refs[2].0, &init).unwrap();
    let present = |d: &str| cache_dir.join(d.replace(':', "-")).exists();
    assert!(present(&refs[0].1) && present(&refs[2].1));
    assert!(!present(&refs[1].1), "the least recently used image stayed");
}

/// The disk an overlay shows, written out as a raw file at `to`.
fn flatten(overlay: &Path, to: &Path) {
    use devices::virtio::block::{Disk, Format};
    let disk = Disk::open(overlay, Format::Overlay, true).unwrap();
    let mut all = vec![0u8; disk.len().unwrap() as usize];
    disk.read_at(&mut all, 0).unwrap();
    std::fs::write(to, all).unwrap();
}

#[test]
fn a_private_disk_is_an_overlay_with_the_run_written_in() {
    let tmp = Tmp::new("overlay");
    let src = tmp.join("src");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(64 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(b"start", 0).unwrap();
    f.write_all_at(b"middle", 32 << 20).unwrap();
    drop(f);
    let before = std::fs::read(&src).unwrap();
    let dst = tmp.join("dst.cow");
    let overlay = devices::virtio::block::disk::Overlay::create(
        &dst,
        &src,
        devices::virtio::block::Format::Raw,
    )
    .unwrap();
    let mut disk = devices::virtio::block::Disk::Overlay(Box::new(overlay));
    // The run file is written at its blocks, not elsewhere.
    let area = crate::ext4::RunArea {
        blocks: vec![10, 3],
    };
    crate::ext4::write_run(&mut disk, &area, &vec![7u8; 5000]).unwrap();
    let mut data = vec![0u8; 64 << 20];
    disk.read_at(&mut data, 0).unwrap();
    assert_eq!(&data[10 * 4096..11 * 4096], &[7u8; 4096][..]);
    assert_eq!(&data[3 * 4096..3 * 4096 + 904], &[7u8; 904][..]);
    assert_eq!(data[3 * 4096 + 904], 0);
    assert_eq!(&data[..5], b"start");
    assert_eq!(&data[32 << 20..(32 << 20) + 6], b"middle");
    // Nothing copied: the overlay holds the two blocks and its header.
    let blocks = std::fs::metadata(&dst).unwrap().blocks() * 512;
    assert!(blocks < 1 << 20, "the overlay takes {blocks} bytes");
    assert_eq!(
        std::fs::read(&src).unwrap(),
        before,
        "the base is never written"
    );
    assert!(crate::ext4::write_run(&mut disk, &area, &vec![1u8; 70 << 10]).is_err());
}

#[test]
fn errors_carry_their_class() {
    let e = Error::run("User", "x", "y");
    assert_eq!(e.class(), Class::Config);
    assert_eq!(Error::Build("x".into()).class(), Class::Host);
}

#[test]
fn the_cache_lists_and_removes_its_images() {
    if !have_e2fsprogs() {
        return;
    }
    let tmp = Tmp::new("list");
    let init = tmp.join("init");
    std::fs::write(&init, b"init").unwrap();
    let cache = Cache::new(tmp.join("cache"), 1 << 40);
    assert!(cache.list().unwrap().is_empty());
    let refs = one_file_images(&tmp, 3);
    for (image, _) in &refs {
        cache.get(image, &init).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let keys: Vec<String> = refs.into_iter().map(|(_, key)| key).collect();
    let listed = cache.list().unwrap();
    let order: Vec<&str> = listed.iter().map(|l| l.entry.info.key.as_str()).collect();
    assert_eq!(
        order,
        [&keys[2], &keys[1], &keys[0]],
        "most recently used first"
    );
    assert!(listed
        .iter()
        .all(|l| l.bytes > 0 && l.entry.info.reference.contains("img")));
    // By a key's prefix, with or without "sha256:".
    let hex = &keys[1]["sha256:".len()..];
    assert_eq!(cache.remove(&hex[..12]).unwrap(), keys[1]);
    let e = cache.remove(&hex[..12]).unwrap_err();
    assert!(e.to_string().contains("has this key"), "{e}");
    assert_eq!(e.class(), Class::Missing);
    assert!(cache.remove("").is_err(), "an empty key matches nothing");
    assert_eq!(cache.prune().unwrap().len(), 2);
    assert!(cache.list().unwrap().is_empty());
}

/// A key prefix that several cached images share removes none of them and
/// says how many (exit 3 from `vmm image rm`); one more digit names one.
#[test]
fn a_key_prefix_that_several_images_share_removes_none() {
    if !have_e2fsprogs() {
        return;
    }
    let tmp = Tmp::new("shared-prefix");
    let init = tmp.join("init");
    std::fs::write(&init, b"init").unwrap();
    let cache = Cache::new(tmp.join("cache"), 1 << 40);
    // 17 keys over 16 hex digits: two start with the same one.
    let keys: Vec<String> = one_file_images(&tmp, 17)
        .into_iter()
        .map(|(image, key)| {
            cache.get(&image, &init).unwrap();
            key
        })
        .collect();
    let hex = |k: &String| k["sha256:".len()..].to_string();
    let (a, b) = keys
        .iter()
        .enumerate()
        .flat_map(|(i, a)| keys[i + 1..].iter().map(move |b| (a, b)))
        .find(|(a, b)| hex(a)[..1] == hex(b)[..1])
        .expect("two keys share their first digit");
    let common = hex(a)
        .bytes()
        .zip(hex(b).bytes())
        .take_while(|(x, y)| x == y)
        .count();
    let shared = &hex(a)[..common];
    let sharing = keys.iter().filter(|k| hex(k).starts_with(shared)).count();
    assert!(sharing >= 2);
    for prefix in [shared.to_string(), format!("sha256:{shared}")] {
        let e = cache.remove(&prefix).unwrap_err();
        assert!(
            e.to_string().contains(&format!(
                "{sharing} cached images have keys starting so: give more of the key"
            )),
            "{e}"
        );
        assert_eq!(e.class(), Class::Config);
        assert_eq!(cache.list().unwrap().len(), 17, "none removed");
    }
    assert_eq!(cache.remove(&hex(a)[..common + 1]).unwrap(), *a);
    assert_eq!(cache.list().unwrap().len(), 16);
}

/// `VMM_IMAGE_CACHE_MAX`'s sizes: bytes, or with K, M, G or T (powers of
/// 1024, either case); anything else is no size.
#[test]
fn cache_sizes_are_bytes_or_powers_of_1024() {
    use crate::cache::parse_size;
    for (text, size) in [
        ("0", Some(0)),
        ("4096", Some(4096)),
        ("3k", Some(3 << 10)),
        ("3K", Some(3 << 10)),
        ("512M", Some(512 << 20)),
        ("10G", Some(10 << 30)),
        ("2t", Some(2 << 40)),
        (" 2m ", Some(2 << 20)),
        ("", None),
        ("M", None),
        ("1.5G", None),
        ("-1", None),
        ("10GB", None),
        ("10 G", None),
        ("99999999999T", None),
    ] {
        assert_eq!(parse_size(text), size, "{text:?}");
    }
}

/// Whiteouts and an opaque directory hide only what lower layers left:
/// this layer's own entries stay, even those it put there before the
/// marker, and the directories above them.
#[test]
fn a_layers_own_entries_survive_its_whiteouts_and_opaque_markers() {
    let lower = Layer::new()
        .dir("opaque", 0o755)
        .file("opaque/lower-file", b"lower", 0o644)
        .dir("opaque/sub", 0o755)
        .file("opaque/sub/lower-deep", b"lower", 0o644)
        .file("lower-x", b"lower", 0o644)
        .tar();
    // opaque/sub, a lower layer's, holds this layer's deep: the marker
    // empties it of the lower layer's files, and deep stays.
    let upper = Layer::new()
        .file("opaque/sub/deep", b"mine", 0o644)
        .file("opaque/mine", b"mine", 0o644)
        .opaque("opaque")
        .file("same-x", b"mine", 0o644)
        .whiteout("same-x")
        .whiteout("lower-x")
        .tar();
    let (_tmp, tree) = apply(&[lower, upper], false);
    let r = tree.root();
    assert_eq!(read(r, "opaque/mine"), "mine");
    assert_eq!(read(r, "opaque/sub/deep"), "mine");
    assert!(!exists(r, "opaque/lower-file"));
    assert!(!exists(r, "opaque/sub/lower-deep"));
    assert_eq!(
        read(r, "same-x"),
        "mine",
        "a whiteout hides lower layers only"
    );
    assert!(!exists(r, "lower-x"));
}

/// A file of the image is read back only when it is a regular file (not
/// a link, not a directory) of at most the limit.
#[test]
fn files_are_read_back_only_when_regular_and_within_the_limit() {
    let layer = Layer::new()
        .dir("etc", 0o755)
        .file("etc/passwd", b"root:x:0:0::/root:/bin/sh\n", 0o644)
        .symlink("etc/link", "passwd")
        .tar();
    let (_tmp, tree) = apply(&[layer], false);
    let len = b"root:x:0:0::/root:/bin/sh\n".len() as u64;
    assert_eq!(
        tree.read_file("etc/passwd", len).as_deref(),
        Some(&b"root:x:0:0::/root:/bin/sh\n"[..])
    );
    assert_eq!(
        tree.read_file("etc/passwd", len - 1),
        None,
        "over the limit"
    );
    assert_eq!(tree.read_file("etc/link", 1 << 20), None, "a link");
    assert_eq!(tree.read_file("etc", 1 << 20), None, "a directory");
    assert_eq!(tree.read_file("etc/none", 1 << 20), None);
}

/// A path may go through at most 40 symbolic links (MAX_LINKS), as the
/// kernel's own lookup; a loop of links is refused, not followed forever.
#[test]
fn a_path_goes_through_at_most_40_links_and_a_loop_is_refused() {
    // d0 -> d1 -> ... -> dN, a real directory.
    let chain = |n: usize| {
        let mut l = Layer::new().dir(&format!("d{n}"), 0o755);
        for i in 0..n {
            l = l.symlink(&format!("d{i}"), &format!("d{}", i + 1));
        }
        l.tar()
    };
    let (_tmp, tree) = apply(
        &[chain(40), Layer::new().file("d0/x", b"40", 0o644).tar()],
        false,
    );
    assert_eq!(read(tree.root(), "d40/x"), "40");
    for (name, layers) in [
        (
            "41 links",
            vec![chain(41), Layer::new().file("d0/x", b"41", 0o644).tar()],
        ),
        (
            "a loop",
            vec![
                Layer::new().symlink("a", "b").symlink("b", "a").tar(),
                Layer::new().file("a/x", b"loop", 0o644).tar(),
            ],
        ),
    ] {
        let tmp = Tmp::new("links");
        let mut tree = Tree::new(tmp.join("root"), false).unwrap();
        tree.apply_layer(&layers[0][..]).unwrap();
        match tree.apply_layer(&layers[1][..]) {
            Err(crate::unpack::ApplyError::Content(e)) => {
                assert!(
                    e.contains("too many levels of symbolic links"),
                    "{name}: {e}"
                )
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

/// The bytes the files take (what the root disk must hold), a link's
/// target written with `.` in it, and whether the tree was made as root.
#[test]
fn disk_usage_links_through_dot_and_the_trees_mode() {
    let layer = Layer::new()
        .dir("d", 0o755)
        .file("d/big", &vec![7u8; 256 << 10], 0o644)
        .file("small", b"x", 0o644)
        .symlink("via", "./d/.")
        .tar();
    let (_tmp, mut tree) = apply(&[layer], false);
    assert!(!tree.native());
    let usage = tree.disk_usage().unwrap();
    assert!(
        (256 << 10..(256 << 10) + (64 << 10)).contains(&usage),
        "{usage}"
    );
    tree.apply_layer(&Layer::new().file("via/new", b"n", 0o644).tar()[..])
        .unwrap();
    assert_eq!(read(tree.root(), "d/new"), "n");
    let tmp = Tmp::new("native");
    assert!(Tree::new(tmp.join("root"), true).unwrap().native());
}

/// PAX records give owners past the header's 7 octal digits and a
/// fractional modification time (its whole seconds); without them the
/// header's own values stand.
#[test]
fn pax_records_give_owners_and_times() {
    let layer = Layer::new()
        .pax(&[
            ("uid", "3000000"),
            ("gid", "3000001"),
            ("mtime", "1800000000.75"),
        ])
        .file("big-ids", b"x", 0o644)
        .file("plain", b"y", 0o640)
        .tar();
    let (_tmp, tree) = apply(&[layer], false);
    let big = tree.entries()[Path::new("big-ids")];
    assert_eq!(
        (big.uid, big.gid, big.mtime),
        (3_000_000, 3_000_001, 1_800_000_000)
    );
    let plain = tree.entries()[Path::new("plain")];
    assert_eq!(
        (plain.uid, plain.gid, plain.mtime, plain.mode),
        (0, 0, 1_700_000_000, 0o640)
    );
}
