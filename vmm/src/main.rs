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
use vmm::{exit_code, Error, Vmm};

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
    /// Boot a VM. With no --kernel, boots the default guest built by
    /// guest-kernels/build.sh.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Kernel image: an uncompressed ELF vmlinux or a bzImage.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// Initrd / initramfs image.
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// Guest kernel command line (replaces the default; the VMM still adds
    /// what it manages).
    #[arg(long, value_name = "STR")]
    cmdline: Option<String>,
    /// Guest RAM: MiB, or with a unit (512M, 2G).
    #[arg(long, value_name = "SIZE", default_value = "128M", value_parser = config::parse_mem_size)]
    memory: u64,
    /// Number of vCPUs.
    #[arg(long, value_name = "N", default_value_t = 1)]
    vcpus: u32,
    /// Serial console: stdio, file:PATH or none.
    #[arg(long, value_name = "WHERE", default_value = "stdio")]
    serial: SerialOutput,
    /// Adapt the guest command line to an emulated KVM (kvm_pvm): auto
    /// detects it, on forces it, off never adapts.
    #[arg(long, value_name = "MODE", default_value = "auto")]
    emulated_host: EmulatedHost,
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
    /// How to enter the kernel: linux (64-bit boot protocol) or pvh.
    #[arg(long, value_name = "PROTO", default_value = "linux")]
    boot_protocol: BootProtocol,
}

fn to_config(args: RunArgs) -> Result<VmConfig, Error> {
    let (kernel, initrd) = match args.kernel {
        Some(k) => (k, args.initrd),
        None => {
            let (k, i) = config::default_guest()?;
            (k, Some(args.initrd.unwrap_or(i)))
        }
    };
    Ok(VmConfig {
        kernel,
        initrd,
        cmdline: args
            .cmdline
            .unwrap_or_else(|| config::DEFAULT_CMDLINE.to_string()),
        mem_mib: args.memory,
        vcpus: args.vcpus,
        serial: args.serial,
        emulated_host: args.emulated_host,
        boot_protocol: args.boot_protocol,
        disks: args.disk,
        nets: args.net,
    })
}

fn init_logging(level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .format_target(false)
        .init();
}

fn run(args: RunArgs, started: Instant) -> i32 {
    let result = to_config(args)
        .and_then(|cfg| Vmm::build(&cfg, started))
        .and_then(Vmm::run);
    match result {
        Ok(end) => {
            let code = end.exit_code();
            if code == exit_code::OK || matches!(end, vmm::VmEnd::Signal(_)) {
                log::info!("{}", end.describe());
            } else {
                log::error!("{}", end.describe());
            }
            code
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(": ");
                msg.push_str(&s.to_string());
                src = s.source();
            }
            log::error!("{msg}");
            e.exit_code()
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    init_logging(&cli.log_level);
    let code = match cli.command {
        Command::Run(args) => run(args, started),
    };
    ExitCode::from(code as u8)
}
