//! What the runtime runs or reads on the host around a container: the
//! bundle's hooks, and signal names.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::bundle::Hook;
use crate::error::{code, Error, Result};
use crate::state;

/// Runs `hooks` with the container's state on their stdin; the first
/// that fails (or outlasts its timeout) is the error.
pub fn run_hooks(kind: &str, hooks: &[Hook], state: &state::OciState) -> Result<()> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let state = serde_json::to_vec(state).unwrap_or_default();
    for (i, h) in hooks.iter().enumerate() {
        let mut cmd = Command::new(&h.path);
        if let Some((arg0, rest)) = h.args.split_first() {
            cmd.arg0(arg0).args(rest);
        }
        let mut child = cmd
            .env_clear()
            .envs(h.env.iter().filter_map(|e| e.split_once('=')))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| Error::Vm {
                message: format!("hook {kind}[{i}] {}: {e}", h.path.display()),
                code: code::ERROR,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&state);
        }
        let deadline = h.timeout.map(|t| Instant::now() + Duration::from_secs(t));
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) if deadline.is_some_and(|d| Instant::now() > d) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(Error::Vm {
                        message: format!("hook {kind}[{i}] {} timed out", h.path.display()),
                        code: code::ERROR,
                    });
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(Error::io(format!("hook {kind}[{i}]"))(e)),
            }
        };
        if !status.success() {
            return Err(Error::Vm {
                message: format!("hook {kind}[{i}] {} failed: {status}", h.path.display()),
                code: code::ERROR,
            });
        }
    }
    Ok(())
}

/// A signal's number from its name (TERM, SIGTERM) or number.
pub fn parse_signal(s: &str) -> Result<i32> {
    if let Ok(n) = s.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = s.to_ascii_uppercase();
    let name = name.strip_prefix("SIG").unwrap_or(&name);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => return Err(Error::Usage(format!("unknown signal '{s}'"))),
    };
    Ok(n)
}
