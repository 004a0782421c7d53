//! What each system's start is: the command line that starts it, its
//! environment and when it counts as ready, for the default guest's
//! command or a container image's.

use super::*;

pub(crate) fn is_root() -> bool {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Systems left out of a run, with why.
type Skipped = Vec<(System, String)>;

/// A start of `system` running `argv`, ready at `ready`: the containers
/// with an empty environment, this VMM writing its metrics into `work`.
pub(crate) fn base_launch(
    opts: &Options,
    work: &Path,
    system: System,
    argv: Vec<String>,
    ready: &Ready,
) -> Launch {
    Launch {
        system,
        argv,
        clear_env: !system.is_vm(),
        ready: ready.clone(),
        limit: opts.limit,
        runc_id: None,
        metrics_dir: system.is_this_vmm().then(|| work.to_path_buf()),
        env: Vec::new(),
        cold_cache: None,
    }
}

/// The start of a container system, runc or unshare, running `spec` on
/// the bundle `bundle` makes (its directory, with rootfs/ and config.json);
/// Err: why the system is left out here.
pub(crate) fn container_launch(
    opts: &Options,
    work: &Path,
    system: System,
    bundle: &mut dyn FnMut() -> std::result::Result<PathBuf, String>,
    spec: &bundle::Spec,
) -> std::result::Result<Launch, String> {
    let program = match system {
        System::Runc => "runc",
        _ => "unshare",
    };
    if !is_root() {
        return Err("needs root".into());
    }
    let path = run::which(program).ok_or(format!("{program} not installed"))?;
    let dir = bundle()?;
    let s = |p: &Path| p.display().to_string();
    if system == System::Runc {
        // runc gives the container the environment of config.json.
        let mut l = base_launch(
            opts,
            work,
            system,
            vec![s(&path), "run".into(), "--bundle".into(), s(&dir)],
            &Ready::FirstOutput,
        );
        l.runc_id = Some(format!("vmm-bench-{}", std::process::id()));
        return Ok(l);
    }
    // The same root file system and command in fresh namespaces; unshare
    // is told only where the run differs from what it does by itself (the
    // root's /, the caller's user), and passes on its own environment.
    let mut argv = vec![s(&path)];
    argv.extend(["--fork", "--pid", "--mount", "--net", "--uts", "--ipc"].map(String::from));
    argv.push(format!("--root={}", s(&dir.join("rootfs"))));
    if spec.workdir != "/" {
        argv.push(format!("--wd={}", spec.workdir));
    }
    if (spec.uid, spec.gid) != (0, 0) {
        argv.push(format!("--setgid={}", spec.gid));
        argv.push(format!("--setuid={}", spec.uid));
    }
    argv.push("--".into());
    argv.extend(spec.argv.iter().cloned());
    let mut l = base_launch(opts, work, system, argv, &Ready::FirstOutput);
    l.env = spec
        .env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Ok(l)
}

/// The launches of the systems asked for, and those that cannot run here
/// with why.
pub(crate) fn launches(
    opts: &Options,
    emulated: bool,
    work: &Path,
) -> Result<(Vec<Launch>, Skipped)> {
    let (kernel, initrd) = config::default_guest()?;
    let vm_ready = vm_ready(emulated);
    // The containers' root file system (busybox), made once for both.
    let mut rootfs: Option<std::result::Result<PathBuf, String>> = None;
    let mut container_root = || -> std::result::Result<PathBuf, String> {
        rootfs
            .get_or_insert_with(|| {
                let busybox = run::which("busybox").ok_or("busybox not installed")?;
                let bundle = work.join("bundle");
                let applets = bundle::applets(&busybox)
                    .map_err(|e| format!("cannot list busybox's applets: {e}"))?;
                bundle::build(&bundle, &busybox, &applets, &opts.command).map_err(|e| {
                    format!("cannot build the OCI bundle in {}: {e}", bundle.display())
                })?;
                Ok(bundle)
            })
            .clone()
    };
    let s = |p: &Path| p.display().to_string();
    let mut launches = Vec::new();
    let mut skipped = Vec::new();
    for &system in &opts.systems {
        let launch =
            |argv: Vec<String>, ready: &Ready| base_launch(opts, work, system, argv, ready);
        match system {
            System::VmmCold => skipped.push((system, "only with --image".into())),
            System::VmmRestore if emulated => skipped.push((
                system,
                "a template needs the guest's user space, which cannot run on an emulated KVM"
                    .into(),
            )),
            System::VmmRestore => match make_template(opts, work) {
                Ok(dir) => launches.push(launch(
                    vmm_argv(opts, &["--from".into(), s(&dir)]),
                    // A clone shows only its command's output.
                    &Ready::FirstOutput,
                )),
                Err(why) => skipped.push((system, why)),
            },
            System::Vmm => launches.push(launch(
                vmm_argv(
                    opts,
                    &[
                        "--kernel".into(),
                        s(&kernel),
                        "--initrd".into(),
                        s(&initrd),
                        "--memory".into(),
                        format!("{}M", opts.mem_mib),
                    ]
                    .into_iter()
                    // On an emulated KVM the VM is ready at a line of the
                    // kernel's boot log: keep it.
                    .chain(emulated.then(|| "--boot-log".to_string()))
                    .collect::<Vec<_>>(),
                ),
                &vm_ready,
            )),
            System::Qemu => match run::which("qemu-system-x86_64") {
                None => skipped.push((system, "qemu-system-x86_64 not installed".into())),
                Some(qemu) => {
                    let mut vm = VmConfig {
                        mem_mib: opts.mem_mib,
                        command: Some(opts.command.iter().map(Into::into).collect()),
                        ..VmConfig::with_defaults(kernel.clone(), Some(initrd.clone()))
                    };
                    if !emulated {
                        // `quiet`, as `vmm run -- COMMAND` boots.
                        vmm::cmdline::quiet_for_command(&mut vm);
                    }
                    // The command line this VMM gives its guest, so that
                    // both kernels do the same work.
                    let cmdline = vmm::cmdline::guest_cmdline(&vm, emulated);
                    launches.push(launch(
                        vec![
                            s(&qemu),
                            "-M".into(),
                            "microvm,acpi=off".into(),
                            "-enable-kvm".into(),
                            // The host's CPU model, as this VMM gives its
                            // guest: QEMU's default (qemu64) hides ERMS,
                            // SMAP and more, and the guest's kernel then
                            // runs other code.
                            "-cpu".into(),
                            "host".into(),
                            "-m".into(),
                            opts.mem_mib.to_string(),
                            "-smp".into(),
                            "1".into(),
                            "-kernel".into(),
                            s(&kernel),
                            "-initrd".into(),
                            s(&initrd),
                            "-append".into(),
                            cmdline,
                            "-nographic".into(),
                            "-nodefaults".into(),
                            "-serial".into(),
                            "stdio".into(),
                            "-no-reboot".into(),
                        ],
                        &vm_ready,
                    ))
                }
            },
            System::Runc | System::Unshare => {
                let spec = bundle::as_root(&opts.command);
                match container_launch(opts, work, system, &mut container_root, &spec) {
                    Ok(l) => launches.push(l),
                    Err(why) => skipped.push((system, why)),
                }
            }
        }
    }
    Ok((launches, skipped))
}

/// `vmm run OPTIONS --serial stdio --log-level info -- COMMAND`.
fn vmm_argv(opts: &Options, options: &[String]) -> Vec<String> {
    let mut argv = vec![opts.vmm.display().to_string(), "run".into()];
    argv.extend(options.iter().cloned());
    argv.extend(["--serial", "stdio", "--log-level", "info", "--"].map(String::from));
    argv.extend(opts.command.iter().cloned());
    argv
}

/// The template of the default guest that `vmm-restore` restores, made
/// once before the timed runs (as the containers' bundle is), in `work`.
fn make_template(opts: &Options, work: &Path) -> std::result::Result<PathBuf, String> {
    let dir = work.join("template");
    let _ = std::fs::remove_dir_all(&dir);
    let out = std::process::Command::new(&opts.vmm)
        .args(["template", "create"])
        .arg(&dir)
        .args([
            "--memory",
            &format!("{}M", opts.mem_mib),
            "--log-level",
            "warn",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", opts.vmm.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the template could not be made ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dir)
}

/// What an image run measures, and how its command is shown.
pub(crate) struct ImagePlan {
    pub(crate) launches: Vec<Launch>,
    pub(crate) skipped: Skipped,
    pub(crate) command: String,
    pub(crate) image: String,
    /// The image caches, removed at the end.
    pub(crate) scratch: PathBuf,
}

/// The launches of `vmm bench --image`: this VMM booting the image's disk
/// with an empty cache (cold: it unpacks the image first) and with the
/// cache filled here beforehand (warm); runc and unshare running the same
/// command, user, directory and environment on the image unpacked once,
/// with ownership and modes, into their bundle. The caches and the bundle
/// are scratch in the temporary directory.
pub(crate) fn image_launches(
    opts: &Options,
    reference: &str,
    emulated: bool,
    work: &Path,
) -> Result<ImagePlan> {
    let init = vmm::image::default_init()?;
    let image = vmm_image::Image::open(reference)?;
    // The image caches (disks and their copies, hundreds of MiB each) are
    // scratch, on this machine's temporary directory rather than in --out,
    // which may be a slow or shared file system.
    let scratch = std::env::temp_dir().join(format!("vmm-bench-images-{}", std::process::id()));
    let warm_cache = vmm_image::Cache::new(scratch.join("warm"), u64::MAX);
    let (entry, _) = warm_cache.get(&image, &init)?;
    let options = vmm_image::run::Options {
        command: (!opts.command.is_empty()).then(|| opts.command.clone()),
        ..Default::default()
    };
    let spec = vmm_image::run::resolve(&entry.info.config, &entry.info.accounts, &options)?;
    let vm_ready = if emulated {
        Ready::Line(VM_MARKER_IMAGE_EMULATED.into())
    } else {
        Ready::OutputAfter(INIT_GREETING.into())
    };
    let exe = opts.vmm.display().to_string();
    // The containers' bundle too: their files on the same kind of file
    // system as the VMs' disks.
    let bundle = scratch.join("bundle");
    let mut container_root: Option<std::result::Result<PathBuf, String>> = None;
    let mut unpacked = || -> std::result::Result<PathBuf, String> {
        container_root
            .get_or_insert_with(|| {
                let rootfs = bundle.join("rootfs");
                let _ = std::fs::remove_dir_all(&rootfs);
                std::fs::create_dir_all(&bundle).map_err(|e| e.to_string())?;
                vmm_image::unpack(&image, &rootfs, true).map_err(|e| e.to_string())?;
                bundle::write_config(&bundle, &spec, false)
                    .map_err(|e| format!("cannot write the bundle's config: {e}"))?;
                Ok(bundle.clone())
            })
            .clone()
    };
    let mut launches = Vec::new();
    let mut skipped = Vec::new();
    for &system in &opts.systems {
        let launch =
            |argv: Vec<String>, ready: &Ready| base_launch(opts, work, system, argv, ready);
        let vm_argv = || -> Vec<String> {
            let mut argv: Vec<String> = [
                exe.as_str(),
                "run",
                "--image",
                reference,
                // The kernel's lines on the console, as in the other VMs.
                "--cmdline",
                vmm::config::DEFAULT_CMDLINE,
                "--memory",
                &format!("{}M", opts.mem_mib),
                "--serial",
                "stdio",
                "--log-level",
                "info",
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            if !opts.command.is_empty() {
                argv.push("--".into());
                argv.extend(opts.command.iter().cloned());
            }
            argv
        };
        match system {
            System::VmmCold => {
                let mut l = launch(vm_argv(), &vm_ready);
                l.cold_cache = Some(scratch.join("cold"));
                launches.push(l);
            }
            System::Vmm => {
                let mut l = launch(vm_argv(), &vm_ready);
                l.env = vec![(
                    "VMM_IMAGE_CACHE".into(),
                    warm_cache.dir().display().to_string(),
                )];
                launches.push(l);
            }
            System::Qemu => skipped.push((system, "not measured with --image".into())),
            System::VmmRestore => skipped.push((system, "not measured with --image".into())),
            System::Runc | System::Unshare => {
                match container_launch(opts, work, system, &mut unpacked, &spec) {
                    Ok(l) => launches.push(l),
                    Err(why) => skipped.push((system, why)),
                }
            }
        }
    }
    Ok(ImagePlan {
        launches,
        skipped,
        command: shell_words(&spec.argv),
        image: format!(
            "{reference} ({}, {} files, {:.1} MiB)",
            entry.info.key,
            entry.info.files,
            entry.info.unpacked_bytes as f64 / f64::from(1 << 20)
        ),
        scratch,
    })
}
