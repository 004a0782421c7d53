//! `vmm-runtime`: an OCI runtime with runc's command line; each container
//! a VM with its own kernel (docs/oci-runtime.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vmm_runtime::commands::{self, CreateOptions};
use vmm_runtime::error::Error;
use vmm_runtime::state::Root;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// An OCI runtime: each container a VM with its own kernel (runc's command
/// line, for podman, containerd and Kubernetes).
#[derive(Parser)]
#[command(name = "vmm-runtime", version, about)]
struct Cli {
    /// Where the containers' state is kept.
    #[arg(
        long,
        global = true,
        value_name = "DIR",
        default_value = "/run/vmm-runtime"
    )]
    root: PathBuf,
    /// Append errors (and with --debug, progress) to FILE.
    #[arg(long, global = true, value_name = "FILE")]
    log: Option<PathBuf>,
    /// The --log file's format.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log progress too.
    #[arg(long, global = true)]
    debug: bool,
    /// Accepted (runc's): the VM is the container's limit, no cgroup is made.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted (runc's).
    #[arg(long, global = true, value_name = "VALUE", hide = true)]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(clap::Args)]
struct CreateArgs {
    /// The bundle: the directory holding config.json.
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    bundle: PathBuf,
    /// Write the container's PID (its VMM's) to FILE.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// Send the pseudo-terminal's master here (process.terminal).
    #[arg(long, value_name = "SOCKET")]
    console_socket: Option<PathBuf>,
    /// Accepted (runc's): the VM has its own root.
    #[arg(long)]
    no_pivot: bool,
    /// Accepted (runc's): the VM has its own keyrings.
    #[arg(long)]
    no_new_keyring: bool,
    /// Accepted; descriptors cannot cross into a VM, so none are passed.
    #[arg(long, value_name = "N", default_value_t = 0)]
    preserve_fds: u32,
    /// The container's ID.
    id: String,
}

impl CreateArgs {
    fn options(self, inherit_stdio: bool) -> CreateOptions {
        if self.preserve_fds > 0 {
            log::warn!(
                "--preserve-fds {}: descriptors cannot be passed into a VM; none are",
                self.preserve_fds
            );
        }
        CreateOptions {
            id: self.id,
            bundle: self.bundle,
            pid_file: self.pid_file,
            console_socket: self.console_socket,
            inherit_stdio,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Make the container: its VM boots and waits for `start`.
    Create(CreateArgs),
    /// Run the container's process.
    Start {
        /// The container's ID.
        id: String,
    },
    /// The container's state (the runtime spec's JSON).
    State {
        /// The container's ID.
        id: String,
    },
    /// Send a signal: KILL ends the VM at once, another goes to the
    /// container's process in the guest.
    Kill {
        /// Send it to every process of the container.
        #[arg(short, long)]
        all: bool,
        /// The container's ID.
        id: String,
        /// The signal: a name (TERM, SIGTERM) or number.
        #[arg(default_value = "TERM")]
        signal: String,
    },
    /// Remove the container's state (and end its VM: --force for a running
    /// one).
    Delete {
        /// Also a running or paused container.
        #[arg(short, long)]
        force: bool,
        /// The container's ID.
        id: String,
    },
    /// Create, start and wait: the container's exit status is this
    /// command's.
    Run {
        /// Return once it started.
        #[arg(short, long)]
        detach: bool,
        #[command(flatten)]
        create: CreateArgs,
    },
    /// The containers.
    #[command(alias = "ls")]
    List {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// IDs only.
        #[arg(short, long)]
        quiet: bool,
    },
    /// The container's host processes (its VMM).
    Ps {
        /// table or json.
        #[arg(short, long, default_value = "table")]
        format: String,
        /// The container's ID.
        id: String,
        /// Accepted (ps's options).
        #[arg(trailing_var_arg = true, hide = true)]
        ps_args: Vec<String>,
    },
    /// Pause the container's VM.
    Pause {
        /// The container's ID.
        id: String,
    },
    /// Resume the container's VM.
    Resume {
        /// The container's ID.
        id: String,
    },
    /// What this runtime supports (JSON).
    Features,
    /// Refused: no agent in the guest runs another process yet.
    Exec {
        /// Everything runc's exec takes.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Refused: use `vmm snapshot` on the VM.
    Checkpoint {
        /// Everything runc's checkpoint takes.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Refused: use `vmm run --from` with a snapshot.
    Restore {
        /// Everything runc's restore takes.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The container's VMM process (started by create).
    #[command(name = "_vmm", hide = true)]
    Vmm { id: String },
    /// Builds the container's disk (started by create).
    #[command(name = "_disk", hide = true)]
    Disk { id: String, init: PathBuf },
}

/// Appends an error line to the --log file in its format.
fn log_error(cli_log: &Option<PathBuf>, format: LogFormat, msg: &str) {
    let Some(path) = cli_log else { return };
    let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
    else {
        return;
    };
    let time = vmm_runtime::state::rfc3339(std::time::SystemTime::now());
    let line = match format {
        LogFormat::Json => {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        }
        LogFormat::Text => format!("{time} error: {msg}"),
    };
    let _ = writeln!(f, "{line}");
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    vmm::logging::init(if cli.debug { "debug" } else { "warn" });
    let code = match run(&cli) {
        Ok(code) => code,
        Err(e) => {
            let msg = e.to_string();
            log_error(&cli.log, cli.log_format, &msg);
            eprintln!("vmm-runtime: {msg}");
            e.code()
        }
    };
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported(what.into())
}

fn run(cli: &Cli) -> Result<i32, Error> {
    let root = Root::open(&cli.root)?;
    let out = |s: String| {
        if !s.trim_end().is_empty() {
            println!("{}", s.trim_end());
        }
        Ok(0)
    };
    match &cli.command {
        Cmd::Create(a) => {
            let a = clone_create(a);
            commands::create(&root, &a.options(false)).map(|_| 0)
        }
        Cmd::Start { id } => commands::start(&root, id).map(|()| 0),
        Cmd::State { id } => out(commands::state(&root, id)?),
        Cmd::Kill { all, id, signal } => commands::kill(&root, id, signal, *all).map(|()| 0),
        Cmd::Delete { force, id } => commands::delete(&root, id, *force).map(|()| 0),
        Cmd::Run { detach, create } => {
            commands::run(&root, &clone_create(create).options(true), *detach)
        }
        Cmd::List { format, quiet } => out(commands::list(&root, json(format)?, *quiet)?),
        Cmd::Ps { format, id, .. } => out(commands::ps(&root, id, json(format)?)?),
        Cmd::Pause { id } => commands::pause(&root, id, true).map(|()| 0),
        Cmd::Resume { id } => commands::pause(&root, id, false).map(|()| 0),
        Cmd::Features => out(commands::features()),
        Cmd::Exec { .. } => Err(unsupported(
            "exec: each container is a VM with its own kernel, and its guest has no agent yet \
             to start another process in it",
        )),
        Cmd::Checkpoint { .. } => Err(unsupported(
            "checkpoint: not through the OCI interface yet; `vmm snapshot` saves a VM",
        )),
        Cmd::Restore { .. } => Err(unsupported(
            "restore: not through the OCI interface yet; `vmm run --from DIR` restores a VM",
        )),
        Cmd::Vmm { id } => {
            let c = root.get(id)?;
            Ok(vmm_runtime::shim::main(c))
        }
        Cmd::Disk { id, init } => Ok(commands::build_disk(&root, id, init)),
    }
}

fn clone_create(a: &CreateArgs) -> CreateArgs {
    CreateArgs {
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
        id: a.id.clone(),
    }
}

fn json(format: &str) -> Result<bool, Error> {
    match format {
        "json" => Ok(true),
        "table" => Ok(false),
        other => Err(Error::Usage(format!("--format {other}: table or json"))),
    }
}
