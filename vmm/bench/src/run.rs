//! Starting the systems and timing them: spawn, watch stdout for the first
//! byte and the ready line, tear down, reap with the peak RSS.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use super::{Sample, System};

/// When a start is ready, from what it writes on stdout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ready {
    /// At its first byte: a container running the command itself.
    FirstOutput,
    /// At the first byte after the line holding this text, kernel log
    /// lines ("[    1.234567] ...") aside: a VM whose init greets and then
    /// runs the command, while its kernel may still print on the console.
    OutputAfter(String),
    /// At the line holding this text (the kernel's line before init, on
    /// an emulated KVM where init cannot run the command).
    Line(String),
}

impl std::fmt::Display for Ready {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ready::FirstOutput => write!(f, "its first output"),
            Ready::OutputAfter(s) => write!(f, "its first output after the line {s:?}"),
            Ready::Line(s) => write!(f, "the line {s:?}"),
        }
    }
}

impl Ready {
    /// Whether `text`, all of stdout so far, shows the start ready.
    pub fn is_ready(&self, text: &[u8]) -> bool {
        let find = |s: &str| text.windows(s.len().max(1)).position(|w| w == s.as_bytes());
        match self {
            Ready::FirstOutput => !text.is_empty(),
            Ready::Line(s) => find(s).is_some(),
            Ready::OutputAfter(s) => find(s).is_some_and(|at| {
                let Some(nl) = text[at..].iter().position(|&b| b == b'\n') else {
                    return false;
                };
                let mut rest = &text[at + nl + 1..];
                loop {
                    match rest.first() {
                        None => return false,
                        Some(b'\r' | b'\n') => rest = &rest[1..],
                        // Perhaps the kernel's: known once its line ends.
                        Some(b'[') => match rest.iter().position(|&b| b == b'\n') {
                            None => return false,
                            Some(end) if is_kernel_log_line(&rest[..end]) => {
                                rest = &rest[end + 1..]
                            }
                            Some(_) => return true,
                        },
                        Some(_) => return true,
                    }
                }
            }),
        }
    }
}

/// Whether `line` is a kernel log line on the console: "[" spaces,
/// seconds "." microseconds "]".
pub fn is_kernel_log_line(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"[") else {
        return false;
    };
    let Some(close) = rest.iter().position(|&b| b == b']') else {
        return false;
    };
    let stamp = String::from_utf8_lossy(&rest[..close]);
    let Some((secs, micros)) = stamp.trim_start().split_once('.') else {
        return false;
    };
    !secs.is_empty()
        && !micros.is_empty()
        && secs.bytes().all(|b| b.is_ascii_digit())
        && micros.bytes().all(|b| b.is_ascii_digit())
}

/// How one system is started and when it is ready.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Which system.
    pub system: System,
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Run with an empty environment but the PATH of the guest's init (the
    /// command must not see the host's).
    pub clear_env: bool,
    /// What on stdout means ready.
    pub ready: Ready,
    /// How long to wait for it.
    pub limit: Duration,
    /// For runc: the container id prefix, to delete what is left after.
    pub runc_id: Option<String>,
    /// For this VMM: where each start writes its metrics document
    /// (`vmm run --metrics`), which gives its phases.
    pub metrics_dir: Option<PathBuf>,
    /// Environment variables set for it (after `clear_env`).
    pub env: Vec<(String, String)>,
    /// For a cold `vmm run --image`: each start gets an empty image cache
    /// of its own (this path, "-" and the start's id), removed after.
    pub cold_cache: Option<PathBuf>,
}

/// The cold image cache of the start `id`.
fn cold_cache_dir(base: &std::path::Path, id: &str) -> PathBuf {
    let mut name = base.as_os_str().to_os_string();
    name.push(format!("-{id}"));
    PathBuf::from(name)
}

/// What a finished start left besides its sample: its stdout up to ready,
/// for the guest kernel's version.
pub struct Started {
    /// The sample.
    pub sample: Sample,
    /// stdout up to and including the ready line.
    pub stdout: String,
}

/// Most of stdout kept (the boot log is about 20 KiB).
const MAX_STDOUT: usize = 1 << 20;

enum Event {
    FirstByte(Instant),
    Ready(Instant, String),
    Eof(String),
}

/// Reads `out` until EOF, reporting the first byte and the ready point.
fn watch(mut out: impl Read + Send + 'static, ready_at: Ready, tx: mpsc::Sender<Event>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        let mut text: Vec<u8> = Vec::new();
        let mut first = true;
        let mut ready = false;
        loop {
            match out.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let now = Instant::now();
                    if first {
                        first = false;
                        let _ = tx.send(Event::FirstByte(now));
                    }
                    if ready {
                        continue; // drained, so the process never blocks
                    }
                    if text.len() < MAX_STDOUT {
                        text.extend_from_slice(&buf[..n]);
                    }
                    if ready_at.is_ready(&text) {
                        ready = true;
                        let _ = tx.send(Event::Ready(
                            now,
                            String::from_utf8_lossy(&text).into_owned(),
                        ));
                    }
                }
            }
        }
        if !ready {
            let _ = tx.send(Event::Eof(String::from_utf8_lossy(&text).into_owned()));
        }
    });
}

/// This VMM's phases in its metrics document (`boot_phases_ms`: name to
/// ms since its process start), in the order they happened.
pub fn metrics_phases(doc: &str) -> Vec<(String, f64)> {
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(doc) else {
        return Vec::new();
    };
    let mut phases: Vec<(String, f64)> = doc["boot_phases_ms"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    phases.sort_by(|a, b| a.1.total_cmp(&b.1));
    phases
}

/// The guest kernel's version in a boot log ("Linux version 6.12.57 ...").
pub fn guest_kernel_version(boot_log: &str) -> Option<String> {
    let rest = &boot_log[boot_log.find("Linux version ")? + 14..];
    rest.split_whitespace().next().map(str::to_string)
}

/// Reaps `pid`, returning its peak RSS in KiB (the largest of it and its
/// reaped descendants) and whether it exited.
fn reap(pid: u32, wait: Duration) -> (Option<u64>, bool) {
    let deadline = Instant::now() + wait;
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data that wait4 fills in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child, with pointers to locals that live
        // through the call; WNOHANG returns at once.
        let r = unsafe { libc::wait4(pid as i32, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid as i32 {
            return (Some(usage.ru_maxrss as u64), true);
        }
        if r < 0 || Instant::now() >= deadline {
            return (None, false);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `sig` to `pid`.
fn signal(pid: u32, sig: i32) {
    // SAFETY: kill takes plain integers; the pid is our unreaped child, so
    // it cannot have been reused.
    unsafe { libc::kill(pid as i32, sig) };
}

fn spawn(launch: &Launch, id: &str) -> std::io::Result<Child> {
    let mut argv = launch.argv.clone();
    if let Some(dir) = &launch.metrics_dir {
        // vmm run --metrics FILE ...
        let file = dir.join(format!("metrics-{id}.json"));
        argv.splice(2..2, ["--metrics".to_string(), file.display().to_string()]);
    }
    if let Some(prefix) = &launch.runc_id {
        // runc [global options] run --bundle DIR ID
        argv.push(format!("{prefix}-{id}"));
    }
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if launch.clear_env {
        cmd.env_clear().env("PATH", crate::bundle::PATH);
    }
    cmd.envs(launch.env.iter().map(|(k, v)| (k, v)));
    if let Some(base) = &launch.cold_cache {
        let dir = cold_cache_dir(base, id);
        let _ = std::fs::remove_dir_all(&dir);
        cmd.env("VMM_IMAGE_CACHE", dir);
    }
    // Its own process group, so a teardown reaches what it started.
    cmd.process_group(0);
    cmd.spawn()
}

/// Starts `launch` once and times it; `id` tells concurrent starts apart.
pub fn start_once(launch: &Launch, id: &str) -> Started {
    let mut sample = Sample {
        system: Some(launch.system),
        ready_at_command: !matches!(launch.ready, Ready::Line(_)),
        ..Sample::default()
    };
    let spawned = Instant::now();
    let mut child = match spawn(launch, id) {
        Ok(c) => c,
        Err(e) => {
            sample.error = Some(format!("cannot start {}: {e}", launch.argv[0]));
            return Started {
                sample,
                stdout: String::new(),
            };
        }
    };
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    watch(
        child.stdout.take().expect("piped"),
        launch.ready.clone(),
        tx,
    );
    let mut stderr = child.stderr.take().expect("piped");
    let log = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&mut stderr).take(MAX_STDOUT as u64).read_to_string(&mut s);
        // Drained to the end, so the process never blocks on its log.
        let _ = std::io::copy(&mut stderr, &mut std::io::sink());
        s
    });

    let deadline = spawned + launch.limit;
    let mut stdout = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Event::FirstByte(at)) => {
                sample.first_output_ms = Some((at - spawned).as_secs_f64() * 1e3)
            }
            Ok(Event::Ready(at, text)) => {
                sample.ready_ms = Some((at - spawned).as_secs_f64() * 1e3);
                stdout = text;
                break;
            }
            Ok(Event::Eof(text)) => {
                sample.error = Some(format!(
                    "ended before it was ready ({}); last output: {}",
                    launch.ready,
                    text.lines().last().unwrap_or("none")
                ));
                stdout = text;
                break;
            }
            Err(_) => {
                sample.error = Some(format!(
                    "not ready ({}) within {} s",
                    launch.ready,
                    launch.limit.as_secs()
                ));
                break;
            }
        }
    }

    // Teardown: a container or namespace whose init restarted ends by
    // itself; a VM on an emulated host, or one still running, is stopped.
    let grace = if launch.system.is_vm() {
        Duration::from_millis(0)
    } else {
        Duration::from_secs(5)
    };
    let (mut rss, mut done) = reap(pid, grace);
    if !done {
        signal(pid, libc::SIGTERM);
        (rss, done) = reap(pid, Duration::from_secs(10));
    }
    if !done {
        // SAFETY: as in `signal`, to the child's process group.
        unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        (rss, _) = reap(pid, Duration::from_secs(10));
    }
    if let Some(prefix) = &launch.runc_id {
        let _ = Command::new(&launch.argv[0])
            .args(["delete", "--force", &format!("{prefix}-{id}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    drop(child);
    if let Some(base) = &launch.cold_cache {
        let _ = std::fs::remove_dir_all(cold_cache_dir(base, id));
    }
    sample.peak_rss_kib = rss;
    let log = log.join().unwrap_or_default();
    if let Some(dir) = &launch.metrics_dir {
        let file = dir.join(format!("metrics-{id}.json"));
        sample.phases = metrics_phases(&std::fs::read_to_string(&file).unwrap_or_default());
        let _ = std::fs::remove_file(file);
    }
    if sample.error.is_some() {
        if let Some(last) = log.lines().rev().find(|l| !l.trim().is_empty()) {
            let e = sample.error.take().unwrap_or_default();
            sample.error = Some(format!("{e}; its log: {last}"));
        }
    }
    Started { sample, stdout }
}

/// Starts `parallel` instances of `launch` at once and times each; each
/// sample carries the batch time (spawn of the batch to its last ready).
pub fn start_batch(launch: &Launch, parallel: usize, tag: &str) -> Vec<Started> {
    let parallel = parallel.max(1);
    let barrier = Arc::new(Barrier::new(parallel));
    let batch_start = Instant::now();
    let handles: Vec<_> = (0..parallel)
        .map(|i| {
            let launch = launch.clone();
            let barrier = barrier.clone();
            let id = format!("{tag}-{i}");
            std::thread::spawn(move || {
                barrier.wait();
                let begun = Instant::now();
                let mut started = start_once(&launch, &id);
                // Ready relative to the batch start, for the batch time.
                let offset = (begun - batch_start).as_secs_f64() * 1e3;
                let end = started.sample.ready_ms.map(|r| r + offset);
                started.sample.instance = i;
                started.sample.parallel = parallel;
                (started, end)
            })
        })
        .collect();
    let mut results: Vec<(Started, Option<f64>)> = handles
        .into_iter()
        .map(|h| h.join().expect("a bench thread panicked"))
        .collect();
    // The last instance's ready time, if every instance got ready.
    let batch = results
        .iter()
        .map(|(_, end)| *end)
        .collect::<Option<Vec<f64>>>()
        .and_then(|ends| ends.into_iter().reduce(f64::max));
    for (s, _) in &mut results {
        s.sample.batch_ms = batch;
    }
    results.into_iter().map(|(s, _)| s).collect()
}

/// Finds `name` on PATH (and in the sbin directories, where runc lives).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_come_from_the_metrics_and_the_version_from_the_log() {
        let doc = r#"{"state": "ended", "boot_phases_ms": {"vm_built": 12.345, "first_kvm_run": 13.0, "init_reached": 900.5}}"#;
        assert_eq!(
            metrics_phases(doc),
            vec![
                ("vm_built".into(), 12.345),
                ("first_kvm_run".into(), 13.0),
                ("init_reached".into(), 900.5)
            ]
        );
        assert!(metrics_phases("not json").is_empty());
        assert!(metrics_phases("{}").is_empty());
        assert_eq!(
            guest_kernel_version("[    0.000000] Linux version 6.12.57 (root@x) (gcc 12)"),
            Some("6.12.57".into())
        );
        assert_eq!(guest_kernel_version("nothing"), None);
    }

    #[test]
    fn ready_points() {
        let greeting = Ready::OutputAfter("Hello".into());
        assert!(!greeting.is_ready(b"[kernel] boot\nHello from the guest"));
        assert!(!greeting.is_ready(b"[kernel] boot\nHello from the guest\n"));
        assert!(greeting.is_ready(b"[kernel] boot\nHello from the guest\nr"));
        assert!(!greeting.is_ready(b"ready\n"), "output before the greeting");
        // The kernel's lines after the greeting are not the command's.
        let kernel = b"Hello\r\n[   10.526980] clocksource: Long readout\r\n";
        assert!(!greeting.is_ready(kernel));
        assert!(!greeting.is_ready(&[&kernel[..], b"[  1"].concat()));
        assert!(greeting.is_ready(&[&kernel[..], b"PRIST"].concat()));
        assert!(greeting.is_ready(b"Hello\n[not the kernel]\n"));
        assert!(
            !greeting.is_ready(b"Hello\n[a"),
            "undecided until the line ends"
        );
        assert!(is_kernel_log_line(b"[    0.000000] Linux version"));
        assert!(!is_kernel_log_line(b"[x.1] y"));
        assert!(!is_kernel_log_line(b"[ 1.] y"));
        assert!(!Ready::FirstOutput.is_ready(b""));
        assert!(Ready::FirstOutput.is_ready(b"r"));
        let line = Ready::Line("Run /init".into());
        assert!(!line.is_ready(b"Run /ini"));
        assert!(line.is_ready(b"x Run /init as init process"));
        assert_eq!(
            greeting.to_string(),
            "its first output after the line \"Hello\""
        );
    }

    fn shell(system: System, script: &str, marker: &str, limit: u64) -> Launch {
        Launch {
            system,
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            clear_env: true,
            ready: Ready::Line(marker.into()),
            limit: Duration::from_secs(limit),
            runc_id: None,
            metrics_dir: None,
            env: Vec::new(),
            cold_cache: None,
        }
    }

    #[test]
    fn a_start_is_timed_to_its_ready_line_and_reaped() {
        let l = shell(
            System::Unshare,
            "echo booting; sleep 0.2; echo READY now; exit 0",
            "READY",
            10,
        );
        let s = start_once(&l, "t1");
        assert_eq!(s.sample.error, None);
        let ready = s.sample.ready_ms.unwrap();
        let first = s.sample.first_output_ms.unwrap();
        assert!(first < ready && ready >= 200.0, "{first} {ready}");
        assert!(s.sample.peak_rss_kib.unwrap() > 0);
        assert!(s.stdout.contains("booting"));
    }

    #[test]
    fn a_start_that_never_gets_ready_fails_and_is_stopped() {
        let t = Instant::now();
        let s = start_once(
            &shell(System::Vmm, "echo hi; exec sleep 60", "READY", 1),
            "t2",
        );
        assert!(s.sample.ready_ms.is_none());
        assert!(s.sample.error.as_deref().unwrap().contains("within 1 s"));
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "stopped, not waited for"
        );
        let s = start_once(&shell(System::Runc, "echo bye", "READY", 10), "t3");
        assert!(
            s.sample.error.as_deref().unwrap().contains("ended before"),
            "{:?}",
            s.sample.error
        );
    }

    #[test]
    fn a_batch_starts_together_and_carries_its_time() {
        let l = shell(System::Unshare, "sleep 0.1; echo READY", "READY", 10);
        let b = start_batch(&l, 3, "t4");
        assert_eq!(b.len(), 3);
        let batch = b[0].sample.batch_ms.unwrap();
        for (i, s) in b.iter().enumerate() {
            assert_eq!(s.sample.instance, i);
            assert_eq!(s.sample.parallel, 3);
            assert_eq!(s.sample.batch_ms, Some(batch));
            assert!(s.sample.ready_ms.unwrap() <= batch + 1e-6);
        }
    }
}
