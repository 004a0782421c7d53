//! The log the front ends (`vmm`, `vmm-bench`, `firecracker`) write: to
//! stderr by default, or to the file or named pipe that Firecracker's
//! `--log-path` or `PUT /logger` names, with the level and each line's
//! origin shown as asked.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

static OUTPUT: OnceLock<Mutex<Box<dyn Write + Send>>> = OnceLock::new();
static SHOW_LEVEL: AtomicBool = AtomicBool::new(true);
static SHOW_ORIGIN: AtomicBool = AtomicBool::new(false);
static MODULE: OnceLock<Mutex<Option<String>>> = OnceLock::new();

fn output() -> &'static Mutex<Box<dyn Write + Send>> {
    OUTPUT.get_or_init(|| Mutex::new(Box::new(std::io::stderr())))
}

fn module() -> &'static Mutex<Option<String>> {
    MODULE.get_or_init(|| Mutex::new(None))
}

/// Where the log lines go: the shared output.
struct Shared;

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        output()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        output().lock().unwrap_or_else(|p| p.into_inner()).flush()
    }
}

/// Logs at `level` (error, warn, info, debug or trace; RUST_LOG overrides)
/// with millisecond timestamps and no module names.
pub fn init(level: &str) {
    // Without RUST_LOG the filter lets everything through and the level
    // is the log crate's maximum, which `apply` (Firecracker's `--level`,
    // `PUT /logger`) can raise or lower later; RUST_LOG's filter is kept
    // as it is.
    let from_env = std::env::var_os("RUST_LOG").is_some();
    let env = env_logger::Env::default().default_filter_or("trace");
    env_logger::Builder::from_env(env)
        .format(|buf, record| {
            if let Some(m) = module()
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_deref()
            {
                if !record.module_path().unwrap_or("").starts_with(m) {
                    return Ok(());
                }
            }
            let ts = buf.timestamp_millis();
            write!(buf, "[{ts}")?;
            if SHOW_LEVEL.load(Ordering::Relaxed) {
                write!(buf, " {:<5}", record.level())?;
            }
            if SHOW_ORIGIN.load(Ordering::Relaxed) {
                write!(
                    buf,
                    " {}:{}",
                    record.file().unwrap_or("?"),
                    record.line().unwrap_or(0)
                )?;
            }
            writeln!(buf, "] {}", record.args())
        })
        .target(env_logger::Target::Pipe(Box::new(Shared)))
        .init();
    if !from_env {
        log::set_max_level(crate::logging_level(level).unwrap_or(log::LevelFilter::Info));
    }
}

/// What Firecracker's logger settings (`--level`, `--log-path`,
/// `--show-level`, `--show-log-origin`, `--module`, `PUT /logger`) change.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    /// The most verbose level logged.
    pub level: Option<log::LevelFilter>,
    /// The file or named pipe the lines are appended to.
    pub path: Option<std::path::PathBuf>,
    /// Lines show their level.
    pub show_level: Option<bool>,
    /// Lines show their source file and line.
    pub show_origin: Option<bool>,
    /// Only lines from modules whose path starts with this.
    pub module: Option<String>,
}

/// Applies `settings` to the running log. A path that cannot be opened for
/// appending is an error, and nothing changes then.
pub fn apply(settings: &Settings) -> Result<(), String> {
    if let Some(path) = &settings.path {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|e| format!("cannot open {} for the log: {e}", path.display()))?;
        *output().lock().unwrap_or_else(|p| p.into_inner()) = Box::new(file);
    }
    if let Some(level) = settings.level {
        log::set_max_level(level);
    }
    if let Some(b) = settings.show_level {
        SHOW_LEVEL.store(b, Ordering::Relaxed);
    }
    if let Some(b) = settings.show_origin {
        SHOW_ORIGIN.store(b, Ordering::Relaxed);
    }
    if let Some(m) = &settings.module {
        *module().lock().unwrap_or_else(|p| p.into_inner()) = Some(m.clone());
    }
    Ok(())
}
