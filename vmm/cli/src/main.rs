//! `vmm`: the command-line front end. It only turns arguments into a
//! `VmConfig`, hands it to the library and turns the outcome into an exit
//! code.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use vmm::config::{
    self, BootProtocol, DiskConfig, EmulatedHost, NetConfig, SerialOutput, VmConfig,
};
use vmm::config_file::{self, ConfigFile, Overrides};
use vmm::image::{self, ImageRun};
use vmm::{Error, Vmm};
use vmm_cli::exit::{self, code as exit_code};

mod firecracker;
mod policy;
mod signals;
mod snapshots;

use policy::{finish, Policy};

/// A KVM virtual machine monitor: every VM boots its own Linux kernel.
#[derive(Parser)]
#[command(name = "vmm", version, about, long_about = None)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM. With no --kernel and no --config, boots the default guest
    /// built by guest-kernels/build.sh.
    Run(Box<RunArgs>),
    /// Check or write VM config files (Firecracker's --config-file layout).
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure VM boot (this VMM, QEMU microvm) against container start
    /// (runc, bare namespaces) on this machine, interleaved in one run.
    Bench(BenchArgs),
    /// The cache of container images' root disks (`vmm run --image`).
    #[command(subcommand)]
    Image(ImageCommand),
    /// Snapshot a running VM through its API socket: pause it, write a
    /// snapshot directory (vm.state, vm.mem), resume it (or --stop).
    Snapshot(snapshots::SnapshotArgs),
    /// Templates: a guest booted until its init waits for a command, then
    /// snapshotted; `vmm run --from DIR -- COMMAND` restores it and runs
    /// the command.
    #[command(subcommand)]
    Template(TemplateCommand),
}

#[derive(Subcommand)]
enum TemplateCommand {
    /// Boot the guest (the default one, or --kernel/--initrd/--disk/--config
    /// with the project's init) until its init is ready for a command and
    /// write it to DIR.
    Create(Box<snapshots::TemplateArgs>),
}

#[derive(Subcommand)]
enum ImageCommand {
    /// List the cached images, most recently used first.
    #[command(alias = "ls")]
    List,
    /// Remove cached images: by key (the start of the digest `vmm image
    /// list` shows) or by reference (DIR[:TAG], FILE.tar[:REPO:TAG]).
    Rm {
        /// Keys or references.
        #[arg(required = true, value_name = "IMAGE")]
        images: Vec<String>,
    },
    /// Remove every cached image.
    Prune,
}

/// `vmm bench`'s arguments, handed to `vmm-bench` as they are.
#[derive(Args)]
#[command(disable_help_flag = true)]
struct BenchArgs {
    /// vmm-bench's options (`vmm bench --help` lists them).
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<std::ffi::OsString>,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate a config file (with any `run` options over it) and print
    /// the resolved configuration in the same layout.
    Check {
        /// The config file.
        file: PathBuf,
        #[command(flatten)]
        vm: Box<VmArgs>,
    },
    /// Print a working config file for the default guest.
    Example,
}

#[derive(Args)]
struct RunArgs {
    /// A JSON config file in Firecracker's --config-file layout; the options
    /// below, when given, win over its values (--disk and --net replace its
    /// drives and network-interfaces).
    #[arg(long, value_name = "FILE", alias = "config-file")]
    config: Option<PathBuf>,
    /// Serve Firecracker's REST API for the running VM on a Unix socket
    /// at PATH (pause, resume, Ctrl-Alt-Del, drive updates, metrics); the
    /// socket is removed when the VMM exits. A stale socket there is
    /// replaced; any other file is refused.
    #[arg(long, value_name = "PATH")]
    api_sock: Option<PathBuf>,
    /// With --api-sock: the largest request body the API takes, in bytes.
    #[arg(long, value_name = "BYTES", requires = "api_sock", default_value_t = vmm_api::http::DEFAULT_MAX_PAYLOAD)]
    http_api_max_payload_size: usize,
    /// Restore the VM of a snapshot directory (`vmm snapshot`, `vmm
    /// template create`) instead of booting one: its memory is the
    /// directory's file mapped private, its devices as they were. A
    /// template's guest runs the COMMAND after `--` and the VMM exits with
    /// its status. Takes --net (the interfaces, in order, on other TAPs),
    /// --serial, --seccomp, --metrics; the rest is the snapshot's.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["config", "api_sock", "image"])]
    from: Option<PathBuf>,
    /// Show the kernel's boot log on the console. By default a run with a
    /// COMMAND (and an --image run) boots the default command line with
    /// `quiet`, so that the console shows the command's output, as `docker
    /// run` does; the interactive shell and a --cmdline given keep the log.
    #[arg(long, conflicts_with = "from")]
    boot_log: bool,
    #[command(flatten)]
    image: ImageArgs,
    #[command(flatten)]
    vm: VmArgs,
}

/// What `--image` asks, if it is given: the COMMAND after `--` (taken
/// from `vm`) is the image's, in place of its Cmd.
pub(crate) fn image_run(args: ImageArgs, vm: &mut VmArgs) -> Result<Option<ImageRun>, Error> {
    let Some(reference) = args.image else {
        return Ok(None);
    };
    let command = std::mem::take(&mut vm.command)
        .into_iter()
        .map(|a| a.into_string())
        .collect::<Result<Vec<String>, _>>()
        .map_err(|a| {
            Error::config(
                "command",
                a.to_string_lossy(),
                "with --image, the command's arguments must be UTF-8",
            )
        })?;
    Ok(Some(ImageRun {
        reference,
        options: image::Options {
            command: (!command.is_empty()).then_some(command),
            entrypoint: args.entrypoint,
            env: args.env,
            user: args.user,
            workdir: args.workdir,
        },
        overlay_at: None,
    }))
}

/// `vmm run --image`'s options.
#[derive(Args)]
struct ImageArgs {
    /// Run a container image in the VM: an OCI image layout directory
    /// (DIR or DIR:TAG, as skopeo and umoci write it) or a `docker save`
    /// archive (FILE.tar or FILE.tar:REPO:TAG). Its files become a cached
    /// ext4 root disk (each VM boots a private copy); its Entrypoint and
    /// Cmd run as its User in its WorkingDir with its Env; a COMMAND after
    /// `--` replaces Cmd.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// With --image: the program instead of the image's Entrypoint (its Cmd
    /// is dropped too, as with `docker run --entrypoint`); "" clears it.
    #[arg(long, value_name = "PROGRAM", requires = "image")]
    entrypoint: Option<String>,
    /// With --image: an environment variable for its command, KEY=VALUE
    /// (or KEY: this shell's value). Repeatable; wins over the image's Env.
    #[arg(
        short = 'e',
        long = "env",
        value_name = "KEY=VALUE",
        requires = "image"
    )]
    env: Vec<String>,
    /// With --image: the user instead of the image's User:
    /// NAME|UID[:GROUP|GID], names from the image's /etc/passwd and
    /// /etc/group.
    #[arg(short = 'u', long, value_name = "USER", requires = "image")]
    user: Option<String>,
    /// With --image: the working directory instead of the image's
    /// WorkingDir (made if missing).
    #[arg(short = 'w', long, value_name = "DIR", requires = "image")]
    workdir: Option<String>,
}

#[derive(Args)]
struct VmArgs {
    /// Kernel image: an uncompressed ELF vmlinux or a bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initrd / initramfs image.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Guest kernel command line (replaces the default, "console=ttyS0
    /// reboot=k panic=-1"; the VMM still adds what it manages).
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Guest RAM: MiB, or with a unit (512M, 2G). Default 128M.
    #[arg(long, value_name = "SIZE", value_parser = config::parse_mem_size)]
    memory: Option<u64>,
    /// Number of vCPUs. Default 1.
    #[arg(long, value_name = "N")]
    vcpus: Option<u32>,
    /// Present the vCPUs as cores of two threads each (the vCPU count must
    /// be 1 or even): --smt, or --smt=false against a config file's.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    smt: Option<bool>,
    /// Serial console: stdio, file:PATH or none. Default stdio.
    #[arg(long, value_name = "WHERE")]
    serial: Option<SerialOutput>,
    /// Adapt the guest command line to an emulated KVM (kvm_pvm): auto
    /// detects it, on forces it, off never adapts. Default auto.
    #[arg(long, value_name = "MODE")]
    emulated_host: Option<EmulatedHost>,
    /// A virtio block device on a raw image: PATH[,ro][,id=NAME][,root].
    /// Repeatable; the guest sees them as vda, vdb, ... in this order.
    #[arg(long, value_name = "DISK")]
    disk: Vec<DiskConfig>,
    /// A virtio network interface on a host TAP device:
    /// tap=NAME[,mac=XX:XX:XX:XX:XX:XX]. Repeatable; the guest sees them as
    /// eth0, eth1, ... The TAP is opened if it exists, else created (needs
    /// CAP_NET_ADMIN). Without mac= the MAC is derived from the TAP name.
    #[arg(long, value_name = "NET")]
    net: Vec<NetConfig>,
    /// Seccomp filters on the VMM's threads: on (default) or off, for
    /// debugging.
    #[arg(long, value_name = "on|off", value_parser = ["on", "off"])]
    seccomp: Option<String>,
    /// How to enter the kernel: linux (64-bit boot protocol) or pvh.
    /// Default linux.
    #[arg(long, value_name = "PROTO")]
    boot_protocol: Option<BootProtocol>,
    /// Have the default guest's init configure eth0 by DHCP (busybox
    /// udhcpc) before the command or the shell; needs a --net interface.
    #[arg(long)]
    dhcp: bool,
    /// Write what the VM is and did (kernel command line, boot phases,
    /// each device's counters, how it ended) as JSON to FILE, when the VM
    /// is built and again when it ends.
    #[arg(long, value_name = "FILE")]
    metrics: Option<PathBuf>,
    /// After `--`: a command for the guest's init to run (the default
    /// guest's init, or one that follows the same protocol); its exit
    /// status becomes the VMM's exit code.
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<std::ffi::OsString>,
}

impl VmArgs {
    fn overrides(self) -> Overrides {
        Overrides {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline: self.cmdline,
            mem_mib: self.memory,
            vcpus: self.vcpus,
            smt: self.smt,
            seccomp: self.seccomp.map(|s| s == "on"),
            serial: self.serial,
            emulated_host: self.emulated_host,
            boot_protocol: self.boot_protocol,
            command: (!self.command.is_empty()).then_some(self.command),
            disks: (!self.disk.is_empty()).then_some(self.disk),
            nets: (!self.net.is_empty()).then_some(self.net),
            dhcp: self.dhcp.then_some(true),
            metrics: self.metrics,
        }
    }
}

/// The VM's configuration: the config file's with the options over it, or
/// the options alone.
/// The VM's configuration, and the config file's `logger` section if any.
fn to_config(
    config: Option<PathBuf>,
    vm: VmArgs,
) -> Result<(VmConfig, Option<config_file::Logger>), Error> {
    let overrides = vm.overrides();
    match config {
        Some(file) => {
            let parsed = config_file::read(&file)?;
            let logger = parsed.logger.clone();
            Ok((parsed.resolve(&file, overrides)?, logger))
        }
        None => Ok((overrides.into_config()?, None)),
    }
}

fn run(args: RunArgs, started: Instant) -> i32 {
    if let Some(dir) = &args.from {
        return snapshots::run_from(dir, args.vm, started);
    }
    let mut vm = args.vm;
    let image = match image_run(args.image, &mut vm) {
        Ok(i) => i,
        Err(e) => return exit::report(&e),
    };
    // A command's VM (an image's too) shows the kernel's errors only,
    // unless told otherwise.
    let quiet = vm.cmdline.is_none() && !args.boot_log;
    let mut private_disk = None;
    let result = to_config(args.config, vm).and_then(|(mut cfg, logger)| {
        // A config file's Firecracker `logger` section sets the log up, as
        // `firecracker --config-file` does.
        if let Some(l) = &logger {
            policy::logger_settings(l)
                .and_then(|s| vmm::logging::apply(&s))
                .map_err(|e| Error::config("logger", "", e))?;
        }
        // An interactive `vmm run` with no command gets the guest's
        // shell on its terminal.
        cfg.shell = cfg.command.is_none()
            && cfg.serial == SerialOutput::Stdio
            && std::io::IsTerminal::is_terminal(&std::io::stdin());
        if let Some(image) = &image {
            private_disk = Some(image::prepare(image, &mut cfg, quiet)?);
        } else if quiet {
            vmm::cmdline::quiet_for_command(&mut cfg);
        }
        let policy = Policy::install(&cfg)?;
        // The API's socket before the VM: a path that cannot be served
        // stops the VMM before a VM exists.
        let listener = match &args.api_sock {
            Some(path) => Some(vmm_api::bind(path).map_err(policy::api_error)?),
            None => None,
        };
        let handle = Vmm::build(&cfg, started)?.end_codes(exit::of_end).start()?;
        // The VM holds its disk open: its copy leaves the cache now, and
        // nothing is left behind however the VMM ends.
        if let Some(d) = private_disk.as_mut() {
            d.release();
        }
        match (listener, &args.api_sock) {
            (Some(listener), Some(path)) => {
                let options = vmm_api::Options {
                    max_payload: args.http_api_max_payload_size,
                    seccomp: cfg.seccomp,
                    ..Default::default()
                };
                policy.serve_running(listener, path, options, "vmm", cfg, handle)
            }
            _ => Ok(policy.wait(&handle)),
        }
    });
    finish(result)
}

/// `vmm config check FILE`: the resolved configuration, after the checks
/// `run` makes before it creates the VM; with the guest command line the
/// VMM would give on this host.
fn config_check(file: PathBuf, vm: VmArgs) -> i32 {
    let checked =
        to_config(Some(file), vm).and_then(|(cfg, _)| Ok(cfg.validate().map(|()| cfg)?));
    match checked {
        Ok(cfg) => {
            println!("{}", ConfigFile::from_config(&cfg).to_json());
            log::info!(
                "configuration is valid; the guest's command line on this host: {}",
                vmm::cmdline::guest_cmdline(&cfg, cfg.emulated_host.applies())
            );
            exit_code::OK
        }
        Err(e) => exit::report(&e),
    }
}

/// `vmm bench`: runs `vmm-bench`, the benchmark's own binary beside this
/// one (kept apart so that its report and progress code are not mapped into
/// every VMM process), with this binary as the VMM to measure.
fn bench(args: BenchArgs, log_level: &str) -> i32 {
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        log::error!("bench: cannot find this program's own path");
        return exit_code::VMM_ERROR;
    };
    let bench = exe.with_file_name("vmm-bench");
    if !bench.is_file() {
        log::error!(
            "bench: {} not found: build it with `cargo build --release -p vmm-bench` (or --workspace)",
            bench.display()
        );
        return exit_code::FILE;
    }
    let err = std::process::Command::new(&bench)
        .arg("--log-level")
        .arg(log_level)
        .arg("--vmm")
        .arg(&exe)
        .args(args.args)
        .exec();
    log::error!("bench: cannot run {}: {err}", bench.display());
    exit_code::VMM_ERROR
}

/// How long ago `t` was, for people.
fn ago(t: std::time::SystemTime) -> String {
    let s = t.elapsed().map_or(0, |d| d.as_secs());
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86_400),
    }
}

/// `vmm image list|rm|prune`.
fn image_command(cmd: ImageCommand) -> i32 {
    let cache = match vmm_image::Cache::from_env() {
        Ok(c) => c,
        Err(e) => return exit::report(&Error::from(e)),
    };
    let result = match cmd {
        ImageCommand::List => cache.list().map(|listed| {
            println!(
                "{:<19} {:>9} {:>6} {:>13}  REFERENCE",
                "KEY", "SIZE", "FILES", "LAST USED"
            );
            for l in listed {
                let info = &l.entry.info;
                println!(
                    "{:<19} {:>5.1} MiB {:>6} {:>13}  {}",
                    &info.key[..info.key.len().min(19)],
                    l.bytes as f64 / f64::from(1 << 20),
                    info.files,
                    ago(l.last_used),
                    info.reference
                );
            }
        }),
        ImageCommand::Rm { images } => images.iter().try_for_each(|i| {
            // A reference that names an image here, else a key.
            let key = match vmm_image::Image::open(i) {
                Ok(image) => image.key,
                Err(_) => i.clone(),
            };
            cache.remove(&key).map(|k| println!("removed {k}"))
        }),
        ImageCommand::Prune => cache.prune().map(|keys| {
            for k in &keys {
                println!("removed {k}");
            }
            log::info!(
                "image cache {}: {} images removed",
                cache.dir().display(),
                keys.len()
            );
        }),
    };
    match result {
        Ok(()) => exit_code::OK,
        Err(e) => exit::report(&Error::from(e)),
    }
}

/// `vmm config example`.
fn config_example() -> i32 {
    let example = config_file::example();
    if let Err(e) = config::default_guest() {
        log::warn!("{e}");
    }
    println!("{}", example.to_json());
    exit_code::OK
}

fn main() -> ExitCode {
    let started = Instant::now();
    if firecracker::invoked_as_firecracker() {
        return ExitCode::from(firecracker::main(started) as u8);
    }
    let cli = Cli::parse();
    vmm::logging::init(&cli.log_level);
    let code = match cli.command {
        Command::Run(args) => run(*args, started),
        Command::Config(ConfigCommand::Check { file, vm }) => config_check(file, *vm),
        Command::Config(ConfigCommand::Example) => config_example(),
        Command::Bench(args) => bench(args, &cli.log_level),
        Command::Image(cmd) => image_command(cmd),
        Command::Snapshot(args) => snapshots::snapshot_command(args),
        Command::Template(TemplateCommand::Create(args)) => {
            snapshots::template_create(*args, started)
        }
    };
    ExitCode::from(code as u8)
}
