//! `vmm-bench`, run as `vmm bench`: VM boot (this VMM, QEMU microvm)
//! against container start (runc, bare namespaces), interleaved in one run.
//! A binary of its own, so that the progress bar, the report and the chart
//! are not mapped into every VMM process.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vmm::config;
use vmm_bench::System;
use vmm_cli::exit::{self, code as exit_code};

/// Measure VM boot (this VMM, QEMU microvm) against container start (runc,
/// bare namespaces) on this machine, interleaved in one run.
#[derive(Parser)]
#[command(name = "vmm bench", bin_name = "vmm bench", version, long_about = None, args_override_self = true)]
struct BenchArgs {
    /// Rounds; each starts every system once (or --parallel times).
    #[arg(long, value_name = "N", default_value_t = 5, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(1..=1000))]
    iterations: u32,
    /// Rounds run first and not counted (they warm the page cache with
    /// every system's files).
    #[arg(long, value_name = "N", default_value_t = 1, allow_negative_numbers = true, value_parser = clap::value_parser!(u32).range(0..=100))]
    warmup: u32,
    /// Starts at once, per system and round: per-instance times and starts
    /// per second.
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    parallel: u32,
    /// Where to write samples.csv, report.md and chart.svg.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Which systems, comma-separated: vmm, vmm-restore, qemu, runc,
    /// unshare (the default); with --image vmm-cold, vmm, runc, unshare.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_system)]
    systems: Vec<System>,
    /// A container image (as for `vmm run --image`): its command runs as a
    /// VM booting its root disk, cold (its cache empty) and warm, and as a
    /// runc container and in bare namespaces on the same files. A COMMAND
    /// after `--` replaces its Cmd.
    #[arg(long, value_name = "REF")]
    image: Option<String>,
    /// Seconds one start may take to be ready.
    #[arg(long, value_name = "SECS", default_value_t = 900)]
    limit: u64,
    /// The vmm binary whose VMs are measured (default: the `vmm` beside
    /// this program; `vmm bench` passes itself).
    #[arg(long, value_name = "PATH")]
    vmm: Option<PathBuf>,
    /// Log level: error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// After `--`: the command every system runs, in the VMs by the
    /// default guest's init, in the containers as their process (busybox
    /// applets and static programs). Default: echo ready (with --image:
    /// the image's Entrypoint and Cmd).
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

fn parse_system(s: &str) -> Result<System, String> {
    System::parse(s).ok_or_else(|| {
        format!("unknown system '{s}': expected vmm, vmm-cold, qemu, runc or unshare")
    })
}

/// The `vmm` binary beside this one.
fn vmm_beside() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let vmm = exe.parent()?.join("vmm");
    vmm.is_file().then_some(vmm)
}

fn bench(args: BenchArgs) -> i32 {
    let Some(vmm) = args.vmm.or_else(vmm_beside) else {
        log::error!("bench: no vmm binary beside this program: give its path with --vmm");
        return exit_code::FILE;
    };
    let mut systems = args.systems;
    if systems.is_empty() {
        systems = match args.image {
            Some(_) => vec![System::VmmCold, System::Vmm, System::Runc, System::Unshare],
            None => vec![
                System::Vmm,
                System::VmmRestore,
                System::Qemu,
                System::Runc,
                System::Unshare,
            ],
        };
    }
    systems.dedup();
    let opts = vmm_bench::Options {
        iterations: args.iterations as usize,
        warmup: args.warmup as usize,
        parallel: args.parallel as usize,
        out: args.out,
        systems: systems.clone(),
        limit: std::time::Duration::from_secs(args.limit),
        mem_mib: config::DEFAULT_MEM_MIB,
        vmm,
        command: if args.command.is_empty() && args.image.is_none() {
            vmm_bench::DEFAULT_COMMAND.map(String::from).to_vec()
        } else {
            args.command
        },
        image: args.image,
    };
    match vmm_bench::bench(&opts) {
        Ok(samples) => {
            let never: Vec<&str> = systems
                .iter()
                .filter(|&&s| samples.iter().any(|x| x.system == Some(s)))
                .filter(|&&s| {
                    !samples
                        .iter()
                        .any(|x| x.system == Some(s) && x.ready_ms.is_some())
                })
                .map(|s| s.name())
                .collect();
            if never.is_empty() {
                exit_code::OK
            } else {
                log::error!("bench: never ready: {}", never.join(", "));
                exit_code::VMM_ERROR
            }
        }
        Err(e) => exit::report(&e),
    }
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    vmm::logging::init(&args.log_level);
    ExitCode::from(bench(args) as u8)
}
