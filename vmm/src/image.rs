//! `vmm run --image REF`: a container image's root disk (made and cached
//! by `vmm_image`) and its run, put into a `VmConfig`: the VM boots the
//! default kernel (or the one given) without an initramfs, from a
//! copy-on-write overlay over the image's disk (nothing copied), with the
//! project's init as PID 1 running the image's command.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;
use crate::config::{self, DiskConfig, VmConfig};

/// Why an image cannot be run: the configuration around it, or the
/// image itself.
#[derive(Debug, thiserror::Error)]
pub enum ImageRunError {
    /// The VM's configuration (an initrd given, the default init missing).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The image: not found, not for this platform, corrupt.
    #[error(transparent)]
    Image(#[from] vmm_image::Error),
}

type Result<T> = std::result::Result<T, ImageRunError>;

pub use vmm_image::run::Options;

/// What `--image` asks.
#[derive(Debug, Clone)]
pub struct ImageRun {
    /// The image reference (DIR, DIR:TAG, FILE.tar, FILE.tar:REPO:TAG).
    pub reference: String,
    /// The run's options over the image's config.
    pub options: Options,
    /// Where to make the VM's overlay and keep it (a template's
    /// directory); by default the cache's `.run/`, removed once open.
    pub overlay_at: Option<PathBuf>,
}

/// The VM's overlay over the image's disk: removed when dropped, or
/// as soon as the VM holds it open (`release`), so that nothing is left
/// behind however the VMM ends.
#[derive(Debug)]
pub struct PrivateDisk {
    path: Option<PathBuf>,
}

impl PrivateDisk {
    /// Removes the file now (the VM's open descriptor keeps it alive).
    pub fn release(&mut self) {
        if let Some(p) = self.path.take() {
            if let Err(e) = std::fs::remove_file(&p) {
                log::warn!(
                    "image: cannot remove the VM's disk overlay {}: {e}",
                    p.display()
                );
            }
        }
    }
}

impl Drop for PrivateDisk {
    fn drop(&mut self) {
        self.release();
    }
}

/// The kernel parameters an image's VM boots with: init from the disk,
/// which reads its run from /vmm/run.
const IMAGE_INIT_PARAMS: [(&str, &str); 2] =
    [("init", vmm_image::ext4::INIT_PATH), ("VMM_IMAGE", "1")];

/// The project's init to put on image disks: the default guest's.
pub fn default_init() -> Result<PathBuf> {
    let init = config::default_guest_dir().join("init");
    if !init.is_file() {
        return Err(ConfigError::Missing {
            what: "default guest's init",
            path: init,
            reason: "not built yet: run guest-kernels/build.sh".into(),
        }
        .into());
    }
    Ok(init)
}

/// Makes `cfg` boot `image` with the image cache of the environment
/// (`VMM_IMAGE_CACHE`, else the user's cache) and the default guest's
/// init: what every front end's `--image` does.
pub fn prepare(image: &ImageRun, cfg: &mut VmConfig, quiet: bool) -> Result<PrivateDisk> {
    let cache = vmm_image::Cache::from_env()?;
    let init = default_init()?;
    apply(image, cfg, &init, &cache, quiet)
}

/// Makes `cfg` boot `image`: finds and checks the image, gets its cached
/// disk (made on a miss), resolves its run, and puts an overlay over the
/// disk first among the VM's disks as its root. The cache is `cache`.
/// `quiet`: add the kernel's
/// `quiet` (when the command line is the default), so that the console
/// shows the image's output.
pub fn apply(
    image: &ImageRun,
    cfg: &mut VmConfig,
    init: &Path,
    cache: &vmm_image::Cache,
    quiet: bool,
) -> Result<PrivateDisk> {
    let default_initrd = config::default_guest_dir().join("initramfs.cpio");
    match &cfg.initrd {
        None => {}
        Some(i)
            if *i == default_initrd
                || i.canonicalize().ok() == default_initrd.canonicalize().ok() => {}
        Some(i) => {
            return Err(ConfigError::value(
                "--initrd",
                i.display(),
                "an image boots from its own root disk with the project's init: no initrd",
            )
            .into())
        }
    }
    cfg.shell = false;
    let prepared = vmm_image::prepare(
        &image.reference,
        init,
        &image.options,
        cache,
        image.overlay_at.as_deref(),
    )?;
    // An overlay made where it is kept is not removed.
    let disk = PrivateDisk {
        path: image.overlay_at.is_none().then(|| prepared.disk.clone()),
    };
    log::info!(
        "image {}: {} ({} files, {:.1} MiB), {}; runs {}",
        image.reference,
        prepared.entry.info.key,
        prepared.entry.info.files,
        prepared.entry.info.unpacked_bytes as f64 / f64::from(1 << 20),
        if prepared.built {
            "unpacked now into the cache"
        } else {
            "from the cache"
        },
        crate::cmdline::shell_words(&prepared.spec.argv)
    );
    cfg.initrd = None;
    cfg.command = None;
    let root = DiskConfig {
        path: prepared.disk,
        read_only: false,
        id: None,
        root: true,
        partuuid: None,
        format: config::DiskFormat::Overlay,
    };
    let disks = std::iter::once(root)
        .chain(std::mem::take(&mut cfg.disks))
        .collect();
    let nets = std::mem::take(&mut cfg.nets);
    cfg.set_devices(disks, nets)?;
    if quiet && cfg.cmdline == config::DEFAULT_CMDLINE {
        crate::cmdline::add_param(&mut cfg.cmdline, "quiet", None);
    }
    for (key, value) in IMAGE_INIT_PARAMS {
        crate::cmdline::add_param(&mut cfg.cmdline, key, Some(value));
    }
    // The image may have no DHCP client: the kernel asks (ip=dhcp), and
    // init writes the image's /etc/resolv.conf from its lease.
    if std::mem::take(&mut cfg.dhcp) {
        crate::cmdline::add_param(&mut cfg.cmdline, "ip", Some("dhcp"));
    }
    Ok(disk)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_vm_boots_its_disk_with_the_projects_init() {
        let dir = std::env::temp_dir().join(format!("vmm-image-apply-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("oci")).unwrap();
        if !prereq::require([prereq::Need::tool("mkfs.ext4", "e2fsprogs")]) {
            return;
        }
        use vmm_image::testing::{self, Compression, Layer};
        let layers = [Layer::new()
            .dir("bin", 0o755)
            .file("bin/app", b"app", 0o755)
            .tar()];
        let config = testing::config(
            &layers,
            serde_json::json!({"Entrypoint": ["/bin/app"], "Cmd": ["--flag"]}),
        );
        testing::oci_layout(&dir.join("oci"), &layers, &config, "v1", Compression::Gzip);
        let init = dir.join("init");
        std::fs::write(&init, b"init").unwrap();
        let cache = vmm_image::Cache::new(dir.join("cache"), 1 << 40);
        let mut cfg = VmConfig::with_defaults("kernel".into(), None);
        cfg.disks.push(DiskConfig {
            path: dir.join("data"),
            read_only: true,
            id: None,
            root: false,
            partuuid: None,
            format: Default::default(),
        });
        cfg.dhcp = true;
        let image = ImageRun {
            reference: format!("{}:v1", dir.join("oci").display()),
            options: Options::default(),
            overlay_at: None,
        };
        let mut disk = apply(&image, &mut cfg, &init, &cache, true).unwrap();
        assert!(cfg.disks[0].root && !cfg.disks[0].read_only);
        assert!(cfg.disks[1].read_only, "the other disks follow the image's");
        assert_eq!(
            cfg.cmdline,
            "console=ttyS0 reboot=k panic=-1 quiet init=/vmm/init VMM_IMAGE=1 ip=dhcp"
        );
        assert!(!cfg.dhcp && cfg.command.is_none() && cfg.initrd.is_none());
        let overlay = cfg.disks[0].path.clone();
        assert!(overlay.is_file() && cfg.disks[0].format == config::DiskFormat::Overlay);
        disk.release();
        assert!(!overlay.exists(), "the overlay is removed once released");
        // Another initrd than the default guest's is refused.
        let mut cfg = VmConfig::with_defaults("kernel".into(), Some("/some/initrd".into()));
        let e = apply(&image, &mut cfg, &init, &cache, true).unwrap_err();
        assert!(e.to_string().starts_with("invalid --initrd"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
