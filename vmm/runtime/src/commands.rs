//! The runtime's commands, as runc's command line names them.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::bundle::{self, Plan};
use crate::error::{code, Error, Result};
pub use crate::hooks::{parse_signal, run_hooks};
use crate::shim;
use crate::state::{self, Container, Record, Root, Status};

/// What `create` (and `run`) are given.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The container's ID.
    pub id: String,
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Where to write the container's PID.
    pub pid_file: Option<PathBuf>,
    /// Where to send the pseudo-terminal's master (process.terminal).
    pub console_socket: Option<PathBuf>,
    /// `run` without a console socket: the VM's console is this
    /// process's stdio, even for a terminal.
    pub inherit_stdio: bool,
}

/// This program, to start the container's VMM and the disk builder.
fn self_exe() -> Result<PathBuf> {
    std::env::current_exe().map_err(Error::io("cannot find this program's own path"))
}

/// A pipe: (read, write), both close-on-exec.
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("cannot make a pipe")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: pipe2 succeeded: both descriptors are new and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// An error line "CODE message" (what the disk builder and the VMM
/// process report) as an error.
fn reported(text: &str, what: &str) -> Error {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    match line.split_once(' ') {
        Some((n, msg)) if n.parse::<i32>().is_ok() => Error::Vm {
            message: msg.to_string(),
            code: n.parse().unwrap_or(code::ERROR),
        },
        _ => Error::Vm {
            message: format!(
                "{what}: {}",
                if line.is_empty() {
                    "ended without a word"
                } else {
                    line
                }
            ),
            code: code::ERROR,
        },
    }
}

/// `create`: the VM is up and its init waits for `start`. Returns the
/// container and its VMM process (the caller's child: `run` waits for
/// it; `create` leaves it to whoever reaps orphans, conmon or the shim).
pub fn create(root: &Root, o: &CreateOptions) -> Result<(Container, Child)> {
    state::check_id(&o.id)?;
    let (bundle, spec) = bundle::load(&o.bundle)?;
    let plan = bundle::plan(&bundle, &spec)?;
    if plan.terminal && o.console_socket.is_none() && !o.inherit_stdio {
        return Err(Error::Usage(
            "process.terminal is true: --console-socket is needed to hand the terminal over".into(),
        ));
    }
    let init = vmm::image::default_init().map_err(|e| Error::Vm {
        message: e.to_string(),
        code: code::FILE,
    })?;
    let c = root.make(&o.id)?;
    let mut child = None;
    let result = create_in(root, &c, &plan, &init, o, &mut child);
    match result {
        Ok(()) => Ok((c, child.expect("created with its VMM"))),
        Err(e) => {
            if let Some(mut ch) = child {
                let _ = ch.kill();
                let _ = ch.wait();
            }
            let _ = std::fs::remove_dir_all(&c.dir);
            Err(e)
        }
    }
}

fn create_in(
    root: &Root,
    c: &Container,
    plan: &Plan,
    init: &Path,
    o: &CreateOptions,
    child: &mut Option<Child>,
) -> Result<()> {
    let _lock = c.lock()?;
    let mut record = Record {
        id: c.id.clone(),
        bundle: plan.bundle.clone(),
        pid: 0,
        pid_start: 0,
        created: state::rfc3339(SystemTime::now()),
        annotations: plan.annotations.clone(),
    };
    c.save(&record)?;
    c.set_status(Status::Creating)?;
    let plan_path = c.path(shim::PLAN);
    state::write_atomic(
        &plan_path,
        &serde_json::to_vec_pretty(plan).unwrap_or_default(),
    )
    .map_err(Error::io(format!("cannot write {}", plan_path.display())))?;
    let exe = self_exe()?;
    let t0 = Instant::now();
    // The disk, in a process of its own (it takes a mount namespace of
    // its own to bind the root directory).
    let built = Command::new(&exe)
        .arg("--root")
        .arg(root.dir())
        .arg("_disk")
        .arg(&c.id)
        .arg(init)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(Error::io("cannot start the disk builder"))?;
    if !built.status.success() {
        return Err(reported(
            &String::from_utf8_lossy(&built.stderr),
            "the disk builder",
        ));
    }
    log::debug!(
        "create {}: root disk made in {:.1} ms",
        c.id,
        t0.elapsed().as_secs_f64() * 1e3
    );
    // The console.
    let mut console = None;
    if plan.terminal && !o.inherit_stdio {
        if let Some(socket) = &o.console_socket {
            let (master, slave) = crate::console::openpty()?;
            crate::console::send_master(socket, &master)?;
            console = Some(slave);
        }
    }
    let log =
        std::fs::File::create(c.path("vmm.log")).map_err(Error::io("cannot make the VMM's log"))?;
    let (ready_r, ready_w) = pipe()?;
    let mut cmd = Command::new(&exe);
    cmd.arg("--root")
        .arg(root.dir())
        .arg("_vmm")
        .arg(&c.id)
        .env(shim::READY_FD_ENV, ready_w.as_raw_fd().to_string())
        .stderr(log);
    if let Some(slave) = &console {
        let dup = |f: &OwnedFd| -> Result<Stdio> {
            Ok(Stdio::from(
                f.try_clone()
                    .map_err(Error::io("cannot share the terminal"))?,
            ))
        };
        cmd.stdin(dup(slave)?).stdout(dup(slave)?);
    }
    let ready_fd = ready_w.as_raw_fd();
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only async-signal-safe calls: a new
        // session (no terminal's signals reach the VMM), and the ready
        // pipe's write end kept open across exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::setsid();
                if libc::fcntl(ready_fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let spawned = cmd
        .spawn()
        .map_err(Error::io("cannot start the container's VMM"))?;
    drop(ready_w);
    drop(console);
    let pid = spawned.id() as i32;
    *child = Some(spawned);
    record.pid = pid;
    record.pid_start = state::process_start(pid).map_or(0, |(s, _)| s);
    c.save(&record)?;
    let mut said = String::new();
    let _ = std::fs::File::from(ready_r).read_to_string(&mut said);
    if said.trim() != "ok" {
        let mut e = reported(&said, "the container's VMM");
        if said.trim().is_empty() {
            let log = std::fs::read_to_string(c.path("vmm.log")).unwrap_or_default();
            e = Error::Vm {
                message: format!(
                    "the container's VMM ended before its VM was ready; its log:\n{}",
                    log.trim_end()
                ),
                code: code::ERROR,
            };
        }
        return Err(e);
    }
    log::debug!(
        "create {}: VM ready {:.1} ms after the disk began",
        c.id,
        t0.elapsed().as_secs_f64() * 1e3
    );
    run_hooks("createRuntime", &plan.hooks.create_runtime, &c.oci_state()?)?;
    if let Some(p) = &o.pid_file {
        state::write_atomic(p, pid.to_string().as_bytes()).map_err(Error::io(format!(
            "cannot write the pid file {}",
            p.display()
        )))?;
    }
    Ok(())
}

/// The plan `create` wrote.
fn plan_of(c: &Container) -> Result<Plan> {
    let text = std::fs::read(c.path(shim::PLAN)).map_err(|_| Error::NotFound(c.id.clone()))?;
    serde_json::from_slice(&text)
        .map_err(|e| Error::io("cannot read the plan")(std::io::Error::other(e)))
}

fn state_error(c: &Container, status: Status, what: &str) -> Error {
    Error::State {
        id: c.id.clone(),
        status: status.name().into(),
        what: what.into(),
    }
}

/// `start`: the process runs.
pub fn start(root: &Root, id: &str) -> Result<()> {
    let c = root.get(id)?;
    let _lock = c.lock()?;
    let record = c.record()?;
    let status = c.status(&record);
    if status != Status::Created {
        return Err(state_error(
            &c,
            status,
            "only a created container can be started",
        ));
    }
    shim::request(&c, "start")?;
    let plan = plan_of(&c)?;
    if let Err(e) = run_hooks("poststart", &plan.hooks.poststart, &c.oci_state()?) {
        log::warn!("{e}");
    }
    Ok(())
}

/// `kill`: KILL ends the VM at once (the VMM process is killed); another
/// signal goes to the container's process in the guest (with `all`, to
/// every process there).
pub fn kill(root: &Root, id: &str, signal: &str, all: bool) -> Result<()> {
    let sig = parse_signal(signal)?;
    let c = root.get(id)?;
    let record = c.record()?;
    let status = c.status(&record);
    if matches!(status, Status::Stopped | Status::Creating) {
        return Err(state_error(
            &c,
            status,
            "a signal needs a created, running or paused container",
        ));
    }
    if sig == libc::SIGKILL {
        // SAFETY: kill on the recorded PID, checked just above to be the
        // container's VMM (same start time).
        if unsafe { libc::kill(record.pid, libc::SIGKILL) } != 0 {
            return Err(Error::io("cannot kill the container's VMM")(
                std::io::Error::last_os_error(),
            ));
        }
        return Ok(());
    }
    shim::request(
        &c,
        &format!("signal {sig}{}", if all { " all" } else { "" }),
    )
}

/// Waits (up to `limit`) for the VMM of `record` to be gone.
fn wait_gone(record: &Record, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Container::alive(record) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// `delete`: a stopped container's state goes; a created one's VM is
/// ended first; a running or paused one only with `force`. `force` on a
/// container that does not exist succeeds, as runc's does.
pub fn delete(root: &Root, id: &str, force: bool) -> Result<()> {
    let c = match root.get(id) {
        Ok(c) => c,
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let _lock = c.lock()?;
    let record = match c.record() {
        Ok(r) => r,
        Err(Error::NotFound(_)) if force => return Ok(()),
        Err(e) => return Err(e),
    };
    let status = c.status(&record);
    match status {
        Status::Stopped => {}
        Status::Running | Status::Paused if !force => {
            return Err(state_error(
                &c,
                status,
                "delete it with --force, or stop it first",
            ))
        }
        _ => {
            if record.pid > 0 {
                // SAFETY: kill on the recorded PID, the container's VMM
                // (status checked its start time).
                unsafe { libc::kill(record.pid, libc::SIGKILL) };
                if !wait_gone(&record, Duration::from_secs(10)) {
                    return Err(Error::Vm {
                        message: format!("the VMM of {id} (PID {}) did not end", record.pid),
                        code: code::ERROR,
                    });
                }
            }
        }
    }
    let state = c.oci_state().ok();
    let plan = plan_of(&c).ok();
    std::fs::remove_dir_all(&c.dir)
        .map_err(Error::io(format!("cannot remove {}", c.dir.display())))?;
    if let (Some(plan), Some(state)) = (plan, state) {
        if let Err(e) = run_hooks("poststop", &plan.hooks.poststop, &state) {
            log::warn!("{e}");
        }
    }
    Ok(())
}

/// `state`: the spec's state as JSON.
pub fn state(root: &Root, id: &str) -> Result<String> {
    let c = root.get(id)?;
    let s = c.oci_state()?;
    Ok(serde_json::to_string_pretty(&s).unwrap_or_default())
}

/// `list`: every container, as a table or JSON.
pub fn list(root: &Root, json: bool, quiet: bool) -> Result<String> {
    let states: Vec<state::OciState> = root
        .ids()?
        .iter()
        .filter_map(|id| root.get(id).ok()?.oci_state().ok())
        .collect();
    if json {
        return Ok(serde_json::to_string(&states).unwrap_or_default());
    }
    if quiet {
        return Ok(states.iter().map(|s| format!("{}\n", s.id)).collect());
    }
    let mut out = format!(
        "{:<20} {:<8} {:<10} {:<40} {}\n",
        "ID", "PID", "STATUS", "BUNDLE", "CREATED"
    );
    for s in &states {
        out += &format!(
            "{:<20} {:<8} {:<10} {:<40} {}\n",
            s.id,
            s.pid.unwrap_or(0),
            s.status.name(),
            s.bundle.display(),
            s.created
        );
    }
    Ok(out)
}

/// `ps`: the container's host processes (its VMM).
pub fn ps(root: &Root, id: &str, json: bool) -> Result<String> {
    let c = root.get(id)?;
    let s = c.oci_state()?;
    let pids: Vec<i32> = s.pid.into_iter().collect();
    if json {
        return Ok(serde_json::to_string(&pids).unwrap_or_default());
    }
    let mut out = "PID CMD\n".to_string();
    for p in pids {
        let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline"))
            .unwrap_or_default()
            .replace('\0', " ");
        out += &format!("{p} {}\n", cmd.trim());
    }
    Ok(out)
}

/// `pause` and `resume`.
pub fn pause(root: &Root, id: &str, pause: bool) -> Result<()> {
    let c = root.get(id)?;
    let _lock = c.lock()?;
    let record = c.record()?;
    let status = c.status(&record);
    match (pause, status) {
        (true, Status::Created | Status::Running) => shim::request(&c, "pause"),
        (false, Status::Paused) => shim::request(&c, "resume"),
        (true, s) => Err(state_error(
            &c,
            s,
            "only a created or running container can be paused",
        )),
        (false, s) => Err(state_error(&c, s, "only a paused container can be resumed")),
    }
}

/// `features`: what this runtime supports (the runtime spec's features
/// document).
pub fn features() -> String {
    let doc = serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": state::OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "mode", "size"],
        "linux": {
            "namespaces": ["network", "mount", "pid", "ipc", "uts", "cgroup", "user"],
            "capabilities": [],
            "cgroup": {"v1": false, "v2": false, "systemd": false, "systemdUser": false},
            "seccomp": {"enabled": false},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
        },
        "annotations": {
            "io.github.vmm.runtime.vm": "each container is a VM with its own kernel",
            bundle::CPUS_ANNOTATION: "the VM's vCPUs",
            bundle::MEMORY_ANNOTATION: "the VM's memory, MiB",
        },
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// `run`: create, start, wait; the container's exit status is the result,
/// and the container is deleted. With `detach`, returns once started.
pub fn run(root: &Root, o: &CreateOptions, detach: bool) -> Result<i32> {
    let (c, mut child) = create(root, o)?;
    if let Err(e) = start(root, &c.id) {
        let _ = delete(root, &c.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let status = child
        .wait()
        .map_err(Error::io("cannot wait for the container's VMM"))?;
    let code = {
        use std::os::unix::process::ExitStatusExt;
        status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
    };
    let _ = delete(root, &c.id, true);
    Ok(code)
}

/// The disk builder's main (`_disk ID INIT`): builds the container's disk
/// from the plan; on failure says "CODE message" on stderr.
pub fn build_disk(root: &Root, id: &str, init: &Path) -> i32 {
    let result = root
        .get(id)
        .and_then(|c| Ok((plan_of(&c)?, c)))
        .and_then(|(plan, c)| crate::disk::build(&c.dir, &plan, init));
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{} {e}", e.code());
            e.code()
        }
    }
}
