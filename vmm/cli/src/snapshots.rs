//! The command line's snapshots: `vmm snapshot` (a running VM's API asked
//! to pause it and write a snapshot directory), `vmm template create` (a
//! guest booted until its init waits for a command, then snapshotted) and
//! `vmm run --from DIR` (a VM restored from a snapshot directory, a
//! template's with the command to run).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::config::{SerialOutput, VmConfig};
use vmm::handle::HandleError;
use vmm::snapshot::RestoreOptions;
use vmm::{Error, VmEnd, Vmm};
use vmm_cli::exit::{self, code as exit_code};

use crate::policy::{finish, Policy};
use crate::VmArgs;

/// `vmm snapshot`'s arguments.
#[derive(clap::Args)]
pub struct SnapshotArgs {
    /// The API socket of the running VMM (`vmm run --api-sock`,
    /// `firecracker --api-sock`).
    #[arg(long, value_name = "PATH")]
    api_sock: PathBuf,
    /// End the VMM once the snapshot is written, instead of resuming the
    /// VM (SIGTERM to the process serving the socket).
    #[arg(long)]
    stop: bool,
    /// The snapshot directory (made if missing): vm.state and vm.mem.
    dir: PathBuf,
}

/// `vmm template create`'s arguments.
#[derive(clap::Args)]
pub struct TemplateArgs {
    /// The template directory (made if missing): vm.state, vm.mem and
    /// boot.log (the guest's console while it booted, unless --serial
    /// says otherwise).
    dir: PathBuf,
    /// A config file in Firecracker's layout; the options below win.
    #[arg(long, value_name = "FILE", alias = "config-file")]
    config: Option<PathBuf>,
    /// How long the guest may take to get ready for a command, seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    ready_timeout: u64,
    #[command(flatten)]
    image: crate::ImageArgs,
    #[command(flatten)]
    vm: VmArgs,
}

/// A request to the API socket; returns the status and the body.
fn api_call(sock: &Path, method: &str, path: &str, body: &str) -> Result<(u16, String), Error> {
    let fail = |reason: String| Error::config("api-sock", sock.display(), reason);
    let mut s = UnixStream::connect(sock).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::from(vmm::config::ConfigError::Missing {
                what: "API socket",
                path: sock.to_path_buf(),
                reason: e.to_string(),
            })
        } else {
            fail(format!("cannot connect: {e}"))
        }
    })?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| fail(format!("cannot send {method} {path}: {e}")))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| fail(format!("no answer to {method} {path}: {e}")))?;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| fail(format!("{method} {path}: not an HTTP answer: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// An API call that must succeed (2xx); a refusal is reported with the
/// API's fault message.
fn api_ok(sock: &Path, method: &str, path: &str, body: &str) -> Result<(), Error> {
    let (status, answer) = api_call(sock, method, path, body)?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    let fault = serde_json::from_str::<serde_json::Value>(&answer)
        .ok()
        .and_then(|v| v.get("fault_message")?.as_str().map(String::from))
        .unwrap_or(answer);
    Err(Error::config(
        "api-sock",
        sock.display(),
        format!("{method} {path} answered {status}: {fault}"),
    ))
}

/// The pid of the process serving `sock`.
fn server_pid(sock: &Path) -> Result<libc::pid_t, Error> {
    use std::os::fd::AsRawFd;
    let s = UnixStream::connect(sock)
        .map_err(|e| Error::config("api-sock", sock.display(), e.to_string()))?;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED writes one ucred into `cred`, whose size `len`
    // gives; the socket is open for the call.
    let r = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 || cred.pid <= 0 {
        return Err(Error::config(
            "api-sock",
            sock.display(),
            format!(
                "cannot tell which process serves it: {}",
                std::io::Error::last_os_error()
            ),
        ));
    }
    Ok(cred.pid)
}

fn make_dir(dir: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::config("directory", dir.display(), e.to_string()))?;
    std::path::absolute(dir).map_err(|e| Error::config("directory", dir.display(), e.to_string()))
}

/// `vmm snapshot --api-sock S DIR [--stop]`.
pub fn snapshot_command(args: SnapshotArgs) -> i32 {
    let result = (|| -> Result<(), Error> {
        let dir = make_dir(&args.dir)?;
        let (state, mem) = vmm::snapshot::dir_files(&dir);
        let sock = &args.api_sock;
        let pid = if args.stop {
            Some(server_pid(sock)?)
        } else {
            None
        };
        api_ok(sock, "PATCH", "/vm", r#"{"state": "Paused"}"#)?;
        let body = serde_json::json!({
            "snapshot_type": "Full",
            "snapshot_path": state,
            "mem_file_path": mem,
        })
        .to_string();
        let written = api_ok(sock, "PUT", "/snapshot/create", &body);
        match (written.is_ok(), pid) {
            (true, Some(pid)) => {
                // SAFETY: kill sends a signal to a process id; no memory is
                // involved.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            _ => api_ok(sock, "PATCH", "/vm", r#"{"state": "Resumed"}"#)?,
        }
        written?;
        println!(
            "snapshot {}: {} and {}",
            dir.display(),
            vmm::snapshot::STATE_FILE,
            vmm::snapshot::MEMORY_FILE
        );
        Ok(())
    })();
    match result {
        Ok(()) => exit_code::OK,
        Err(e) => exit::report(&e),
    }
}

/// `vmm template create DIR [run options]`.
pub fn template_create(args: TemplateArgs, started: Instant) -> i32 {
    let timeout = Duration::from_secs(args.ready_timeout);
    let mut vm = args.vm;
    let result = (|| -> Result<VmEnd, Error> {
        if !vm.command.is_empty() {
            return Err(Error::config(
                "command",
                vm.command
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                "a template takes no command: each VM restored from it gets its own \
                 (vmm run --from DIR -- COMMAND)",
            ));
        }
        let image = crate::image_run(args.image, &mut vm)?;
        let dir = make_dir(&args.dir)?;
        let serial = vm.serial.take();
        let quiet = vm.cmdline.is_none();
        let (mut cfg, _) = crate::to_config(args.config, vm)?;
        cfg.template = true;
        cfg.shell = false;
        cfg.serial = serial.unwrap_or_else(|| SerialOutput::File(dir.join("boot.log")));
        if let Some(mut image) = image {
            // The image's overlay is the template's disk, kept in DIR.
            let at = dir.join("disk-0.cow");
            let _ = std::fs::remove_file(&at);
            image.overlay_at = Some(at);
            vmm::image::prepare(&image, &mut cfg, quiet)?;
        }
        template_disks(&mut cfg, &dir)?;
        let policy = Policy::install(&cfg)?;
        let handle = Vmm::build(&cfg, started)?.end_codes(exit::of_end).start()?;
        // Ready, ended, out of time, or stopped by a signal meanwhile.
        let deadline = Instant::now() + timeout;
        let mut ready = false;
        while !ready && !handle.ending() && Instant::now() < deadline {
            ready = handle.wait_ready(Duration::from_millis(200));
            if let Some(sig) = policy.stop_signal() {
                handle.stop_with(VmEnd::Signal(sig));
                return Ok(handle.wait());
            }
        }
        if !ready {
            let why = match handle
                .try_end()
                .or_else(|| handle.ending().then(|| handle.wait()))
            {
                Some(end) => format!(
                    "the VM ended before its init was ready for a command: {}",
                    end.describe()
                ),
                None => {
                    handle.stop();
                    handle.wait();
                    format!(
                        "its init did not say it was ready for a command within {} s (is it \
                         the project's init? on an emulated KVM guest user space cannot run)",
                        timeout.as_secs()
                    )
                }
            };
            return Err(HandleError::Template(why).into());
        }
        handle.pause()?;
        let (state, mem) = vmm::snapshot::dir_files(&dir);
        let written = handle.snapshot(&state, &mem);
        handle.stop();
        let end = policy.wait(&handle);
        let w = written?;
        println!(
            "template {}: ready for a command {:.0} ms after the start; state {} KiB, memory {} \
             MiB ({} MiB not zero)",
            dir.display(),
            started.elapsed().as_secs_f64() * 1e3 - w.ms,
            w.state_bytes >> 10,
            w.memory_bytes >> 20,
            w.memory_written >> 20
        );
        Ok(end)
    })();
    match result {
        // The VM was stopped once snapshotted: that is success.
        Ok(VmEnd::Stopped) => exit_code::OK,
        other => finish(other),
    }
}

/// Puts each writable disk of a template's VM on an overlay of its own in
/// the template's directory (disk-N.cow): the template's writes stay
/// there and the user's file is never written (it must not change while
/// the template is used: the overlay checks). Each VM restored from the
/// template then writes to an overlay of its own over that one.
fn template_disks(cfg: &mut VmConfig, dir: &Path) -> Result<(), Error> {
    use vmm::config::open_disk;
    for (i, disk) in cfg.disks.iter_mut().enumerate() {
        // Read-only disks are used as they are; an image's overlay is
        // made in DIR already.
        if disk.read_only || disk.path.starts_with(dir) {
            continue;
        }
        // The disk as given, checked first (a missing file is named so).
        drop(open_disk(disk)?);
        let path = dir.join(format!("disk-{i}.cow"));
        let _ = std::fs::remove_file(&path);
        let was = disk.path.clone();
        disk.put_on_overlay(&path).map_err(|e| {
            Error::config(
                "disk",
                was.display(),
                format!("cannot make the template's overlay {}: {e}", path.display()),
            )
        })?;
    }
    Ok(())
}

/// The options `vmm run --from` takes; the rest is the snapshot's.
fn refuse_with_from(vm: &VmArgs) -> Result<(), Error> {
    let given: [(&str, bool); 9] = [
        ("--kernel", vm.kernel.is_some()),
        ("--initrd", vm.initrd.is_some()),
        ("--cmdline", vm.cmdline.is_some()),
        ("--memory", vm.memory.is_some()),
        ("--vcpus", vm.vcpus.is_some()),
        ("--smt", vm.smt.is_some()),
        ("--boot-protocol", vm.boot_protocol.is_some()),
        ("--disk", !vm.disk.is_empty()),
        ("--dhcp", vm.dhcp),
    ];
    match given.iter().find(|(_, g)| *g) {
        Some((flag, _)) => Err(Error::config(
            flag,
            "",
            "with --from the VM is the snapshot's: only --net (its interfaces on other TAPs), \
             --serial, --seccomp, --metrics and the command are taken",
        )),
        None => Ok(()),
    }
}

/// The restore options of `vmm run --from DIR`.
fn restore_options(dir: &Path, vm: VmArgs) -> Result<RestoreOptions, Error> {
    refuse_with_from(&vm)?;
    let (state, mem) = vmm::snapshot::dir_files(dir);
    let mut o = RestoreOptions::new(state, mem);
    o.serial = vm.serial.unwrap_or_default();
    o.seccomp = vm.seccomp.as_deref() != Some("off");
    o.metrics = vm.metrics;
    o.emulated_host = vm.emulated_host;
    for (i, net) in vm.net.into_iter().enumerate() {
        if net.mac.is_some() {
            return Err(Error::config(
                "net",
                &net.tap,
                "with --from the MAC is the snapshot's: give tap=NAME only",
            ));
        }
        o.net_overrides.push((format!("eth{i}"), net.tap));
    }
    o.command = (!vm.command.is_empty()).then_some(vm.command);
    o.private_disks = Some(std::env::temp_dir());
    Ok(o)
}

/// `vmm run --from DIR [--net tap=NAME]... [-- COMMAND]`: exits as the
/// restored VM ends (a template's command: with its status).
pub fn run_from(dir: &Path, vm: VmArgs, started: Instant) -> i32 {
    let result = (|| -> Result<VmEnd, Error> {
        let opts = restore_options(dir, vm)?;
        let policy = Policy::with_seccomp(opts.seccomp)?;
        let handle = Vmm::restore(&opts, started)?
            .end_codes(exit::of_end)
            .start()?;
        Ok(policy.wait(&handle))
    })();
    finish(result)
}
