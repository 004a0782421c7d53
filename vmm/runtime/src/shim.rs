//! The container's VMM process: what `create` starts (as
//! `vmm-runtime _vmm ID`), whose PID the container has. It joins the
//! container's network namespace, boots the VM from the disk `create`
//! made (the guest's init waits for its command on the command device),
//! says "ready" to `create` through the pipe it was given, and then serves
//! the runtime's commands on `control.sock` (start, signal, pause,
//! resume) until the VM ends. Its exit code is the container's exit
//! status: the command's, 128 + N when signal N ended it.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::FromRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vmm::config::{DiskConfig, NetConfig, VmConfig};
use vmm::{VmEnd, VmHandle, Vmm};

use crate::bundle::Plan;
use crate::error::{code, Error, Result};
use crate::state::{Container, Status};

/// The environment variable that names the descriptor of the pipe the
/// VMM says "ready" (or why not) on.
pub const READY_FD_ENV: &str = "VMM_RUNTIME_READY_FD";
/// How long the guest may take to reach its init: `$VMM_RUNTIME_BOOT_TIMEOUT`
/// seconds, else this.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Set (to anything) in the environment of `create`: the VM's console
/// shows the kernel's boot log, as `vmm run --boot-log` does.
pub const BOOT_LOG_ENV: &str = "VMM_RUNTIME_BOOT_LOG";
/// The control socket's file.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The plan's file.
pub const PLAN: &str = "plan.json";

/// The kernel parameters the container's VM boots with.
fn cmdline(ip: Option<&str>) -> String {
    let mut c = vmm::config::DEFAULT_CMDLINE.to_string();
    let mut add = |k: &str, v: Option<&str>| vmm::cmdline::add_param(&mut c, k, v);
    // The kernel's boot log on the console only when asked: it would be
    // the container's output.
    if std::env::var_os(BOOT_LOG_ENV).is_none() {
        add("quiet", None);
    }
    add("init", Some(vmm_image::ext4::INIT_PATH));
    add("VMM_IMAGE", Some("1"));
    add("VMM_QUIET", Some("1"));
    if let Some(ip) = ip {
        add("ip", Some(ip));
    }
    c
}

/// The VMM's error, with the exit code `vmm` gives it.
fn vm_error(e: vmm::Error) -> Error {
    Error::Vm {
        message: e.to_string(),
        code: vmm_cli::exit::of_error(&e),
    }
}

/// The VM's configuration.
pub fn vm_config(
    plan: &Plan,
    disk: &std::path::Path,
    net: Option<&crate::net::Interface>,
) -> Result<VmConfig> {
    // The default guest's kernel: no initramfs, the root disk has init.
    let kernel = vmm::config::default_guest_dir().join("vmlinux");
    vmm::config::check_file("default guest's kernel", &kernel).map_err(|e| vm_error(e.into()))?;
    let mut cfg = VmConfig::with_defaults(kernel, None);
    cfg.mem_mib = plan.memory_mib;
    cfg.vcpus = plan.cpus;
    cfg.template = true;
    let ip = net.and_then(crate::net::kernel_ip_param);
    cfg.cmdline = cmdline(ip.as_deref());
    let disks = vec![DiskConfig {
        path: disk.to_path_buf(),
        read_only: false,
        id: None,
        root: true,
        partuuid: None,
        format: vmm::config::DiskFormat::Overlay,
    }];
    let nets = match net {
        Some(i) => vec![NetConfig {
            tap: crate::net::TAP.into(),
            mac: Some(i.mac.parse().map_err(|e: String| Error::Vm {
                message: format!("the interface {}'s MAC {}: {e}", i.name, i.mac),
                code: vmm_cli::exit::code::NET,
            })?),
        }],
        None => Vec::new(),
    };
    cfg.set_devices(disks, nets)
        .map_err(|e| vm_error(e.into()))?;
    Ok(cfg)
}

/// What the control socket's commands act on.
struct Serving {
    handle: VmHandle,
    container: Container,
    args: Vec<Vec<u8>>,
    started: Mutex<bool>,
}

impl Serving {
    /// Answers one request line: "ok" or "error: ...".
    fn answer(&self, line: &str) -> String {
        let words: Vec<&str> = line.split_whitespace().collect();
        let result: std::result::Result<(), String> = match words.as_slice() {
            ["start"] => {
                let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
                if *started {
                    Err("the container was started already".into())
                } else {
                    self.handle
                        .give_command(&self.args)
                        .map_err(|e| e.to_string())
                        .map(|()| {
                            *started = true;
                            let _ = self.container.set_status(Status::Running);
                        })
                }
            }
            ["signal", n, rest @ ..] => match n.parse::<i32>() {
                Ok(sig) => {
                    let all = rest.first() == Some(&"all");
                    let started = *self.started.lock().unwrap_or_else(|p| p.into_inner());
                    if started {
                        self.handle.send_signal(sig, all).map_err(|e| e.to_string())
                    } else {
                        // No process yet: the signal ends the VM, as it
                        // would end runc's waiting init.
                        self.handle.stop_with(VmEnd::Signal(sig));
                        Ok(())
                    }
                }
                Err(_) => Err(format!("'{n}' is not a signal number")),
            },
            ["pause"] => self.handle.pause().map_err(|e| e.to_string()).map(|()| {
                let _ = self.container.set_status(Status::Paused);
            }),
            ["resume"] => self.handle.resume().map_err(|e| e.to_string()).map(|()| {
                let started = *self.started.lock().unwrap_or_else(|p| p.into_inner());
                let _ = self.container.set_status(if started {
                    Status::Running
                } else {
                    Status::Created
                });
            }),
            _ => Err(format!("unknown request '{line}'")),
        };
        match result {
            Ok(()) => "ok".into(),
            Err(e) => format!("error: {e}"),
        }
    }
}

fn serve(listener: UnixListener, serving: Arc<Serving>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let serving = serving.clone();
        let _ = std::thread::Builder::new()
            .name("vmm-runtime-ctl".into())
            .spawn(move || {
                let mut reader = BufReader::new(&conn);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() && !line.is_empty() {
                    let answer = serving.answer(line.trim());
                    let _ = (&conn).write_all(format!("{answer}\n").as_bytes());
                }
            });
    }
}

/// Sends one request to a container's VMM and returns its answer: Ok for
/// "ok", else the error it gave.
pub fn request(container: &Container, line: &str) -> Result<()> {
    let path = container.path(CONTROL_SOCKET);
    let conn = UnixStream::connect(&path).map_err(|e| Error::Vm {
        message: format!("cannot reach the container's VMM ({}): {e}", path.display()),
        code: code::ERROR,
    })?;
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    (&conn)
        .write_all(format!("{line}\n").as_bytes())
        .map_err(Error::io("cannot talk to the container's VMM"))?;
    let mut answer = String::new();
    BufReader::new(&conn)
        .read_line(&mut answer)
        .map_err(Error::io("no answer from the container's VMM"))?;
    match answer.trim() {
        "ok" => Ok(()),
        "" => Err(Error::Vm {
            message: "the container's VMM ended without an answer".into(),
            code: code::ERROR,
        }),
        other => Err(Error::Vm {
            message: other.trim_start_matches("error: ").to_string(),
            code: code::ERROR,
        }),
    }
}

/// Boots the VM and waits for its init.
fn boot(container: &Container, plan: &Plan) -> Result<(VmHandle, UnixListener)> {
    let started = Instant::now();
    let net = match &plan.netns {
        Some(ns) => Some(crate::net::join(ns)?),
        None => None,
    };
    let cfg = vm_config(plan, &container.path(crate::disk::DISK), net.as_ref())?;
    let handle = Vmm::build(&cfg, started)
        .map_err(vm_error)?
        .end_codes(vmm_cli::exit::of_end)
        .start()
        .map_err(|e| vm_error(e.into()))?;
    let timeout = std::env::var("VMM_RUNTIME_BOOT_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(BOOT_TIMEOUT, Duration::from_secs);
    if !handle.wait_ready(timeout) {
        let why = match handle.try_end() {
            Some(end) => format!("the VM ended before its init was ready: {}", end.describe()),
            None => format!("the guest's init was not ready in {} s", timeout.as_secs()),
        };
        handle.stop();
        handle.wait();
        return Err(Error::Vm {
            message: why,
            code: code::ERROR,
        });
    }
    let path = container.path(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(Error::io(format!("cannot listen on {}", path.display())))?;
    log::info!(
        "container {}: VM ready in {:.1} ms",
        container.id,
        started.elapsed().as_secs_f64() * 1e3
    );
    Ok((handle, listener))
}

/// The VMM process's main: returns its exit code.
pub fn main(container: Container) -> i32 {
    // SAFETY: the descriptor number comes from the runtime that started
    // this process, which left that pipe's write end open for it; it is
    // owned here from now on.
    let mut ready = std::env::var(READY_FD_ENV)
        .ok()
        .and_then(|s| s.parse::<i32>().ok())
        .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    let mut say = |text: &str| {
        if let Some(mut f) = ready.take() {
            let _ = f.write_all(text.as_bytes());
        }
    };
    let plan: Plan = match std::fs::read(container.path(PLAN))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_slice(&t).map_err(|e| e.to_string()))
    {
        Ok(p) => p,
        Err(e) => {
            say(&format!("{} cannot read the plan: {e}\n", code::ERROR));
            return code::ERROR;
        }
    };
    let (handle, listener) = match boot(&container, &plan) {
        Ok(x) => x,
        Err(e) => {
            log::error!("{e}");
            say(&format!("{} {e}\n", e.code()));
            return e.code();
        }
    };
    let _ = container.set_status(Status::Created);
    // A console on a terminal (process.terminal): raw, so that the
    // guest's own terminal handles the keys.
    let _raw = vmm_cli::terminal::RawTerminal::enter();
    let args = plan.args.iter().map(|a| a.as_bytes().to_vec()).collect();
    let serving = Arc::new(Serving {
        handle: handle.clone(),
        container: container.clone(),
        args,
        started: Mutex::new(false),
    });
    let _ = std::thread::Builder::new()
        .name("vmm-runtime-ctl".into())
        .spawn(move || serve(listener, serving));
    say("ok\n");
    let end = handle.wait();
    let code = vmm_cli::exit::of_end(&end);
    log::info!(
        "container {}: {} (exit code {code})",
        container.id,
        end.describe()
    );
    let _ = std::fs::remove_file(container.path(CONTROL_SOCKET));
    code
}
