//! What the runtime keeps of each container under `--root`: a directory
//! per container (ROOT/ID) holding `state.json` (written once, at create),
//! `status` (created, running or paused: written by the container's VMM
//! process as it changes), `lock` (each command that changes the container
//! holds it, so that two callers at once are ordered), the VMM's
//! `control.sock` and `vmm.log`, and the VM's disk. Whether the container
//! still runs is never taken from a file: its VMM process must be alive
//! and be the same process (its start time), else it is stopped.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The state's `ociVersion`: the runtime spec version this runtime
/// follows.
pub const OCI_VERSION: &str = "1.0.2";

/// A container's status (the runtime spec's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// `create` is making it.
    Creating,
    /// Its VM is up, the process not started.
    Created,
    /// The process runs.
    Running,
    /// The VM is paused.
    Paused,
    /// The VM ended.
    Stopped,
}

impl Status {
    /// The spec's name.
    pub fn name(self) -> &'static str {
        match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        }
    }

    fn parse(s: &str) -> Option<Status> {
        Some(match s.trim() {
            "creating" => Status::Creating,
            "created" => Status::Created,
            "running" => Status::Running,
            "paused" => Status::Paused,
            "stopped" => Status::Stopped,
            _ => return None,
        })
    }
}

/// What `create` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// The container's ID.
    pub id: String,
    /// Its bundle.
    pub bundle: PathBuf,
    /// The VMM process (0 until it exists).
    pub pid: i32,
    /// The VMM process's start time (/proc/PID/stat's 22nd field), to
    /// tell it from a later process with the same PID.
    pub pid_start: u64,
    /// When it was created (RFC 3339).
    pub created: String,
    /// config.json's annotations.
    pub annotations: BTreeMap<String, String>,
}

/// The state the runtime spec's `state` prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OciState {
    /// The spec's version.
    #[serde(rename = "ociVersion")]
    pub oci_version: String,
    /// The ID.
    pub id: String,
    /// The status.
    pub status: Status,
    /// The VMM's PID (while it lives).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// The bundle.
    pub bundle: PathBuf,
    /// The annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub annotations: BTreeMap<String, String>,
    /// When it was created (runc's extension, which podman reads).
    pub created: String,
}

/// Whether `id` may name a container: letters, digits, `_ + - .`, not
/// starting with `.` (runc's rule; no path can be made of it).
pub fn check_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "invalid container ID '{id}': letters, digits, _ + - . only, not starting with ."
        )))
    }
}

/// The runtime's root directory.
#[derive(Debug, Clone)]
pub struct Root {
    dir: PathBuf,
}

/// A container's directory.
#[derive(Debug, Clone)]
pub struct Container {
    /// Its ID.
    pub id: String,
    /// ROOT/ID.
    pub dir: PathBuf,
}

/// A held per-container lock (flock), released when dropped.
pub struct Lock {
    _file: std::fs::File,
}

/// The start time of process `pid` (in clock ticks since boot), and
/// whether it is a zombie; None when there is no such process.
pub fn process_start(pid: i32) -> Option<(u64, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: fields count
    // from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let zombie = fields.first() == Some(&"Z") || fields.first() == Some(&"X");
    Some((fields.get(19)?.parse().ok()?, zombie))
}

/// Takes an exclusive flock on `path` (made if missing), waiting for
/// another holder's; released when the lock is dropped.
pub fn lock_file(path: &Path) -> Result<Lock> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("cannot open {}", path.display())))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(format!("cannot lock {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Lock { _file: file })
}

/// Now, as RFC 3339 UTC with nanoseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Writes `bytes` to `path` whole or not at all (a temporary file
/// renamed over it).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, path)
}

impl Root {
    /// The root at `dir` (made when missing, mode 0700).
    pub fn open(dir: &Path) -> Result<Root> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(Error::io(format!("cannot make the root {}", dir.display())))?;
        Ok(Root {
            dir: dir.to_path_buf(),
        })
    }

    /// The root's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes the directory of a new container; Exists when the ID is
    /// taken.
    pub fn make(&self, id: &str) -> Result<Container> {
        check_id(id)?;
        let dir = self.dir.join(id);
        match std::fs::create_dir(&dir) {
            Ok(()) => Ok(Container {
                id: id.to_string(),
                dir,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::Exists(id.to_string()))
            }
            Err(e) => Err(Error::io(format!("cannot make {}", dir.display()))(e)),
        }
    }

    /// An existing container; NotFound when there is none.
    pub fn get(&self, id: &str) -> Result<Container> {
        check_id(id)?;
        let dir = self.dir.join(id);
        if dir.join("state.json").is_file() || dir.join("lock").is_file() {
            Ok(Container {
                id: id.to_string(),
                dir,
            })
        } else {
            Err(Error::NotFound(id.to_string()))
        }
    }

    /// Every container's ID, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.dir)
            .map_err(Error::io(format!("cannot read {}", self.dir.display())))?
            .flatten()
            .filter(|e| e.path().join("state.json").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

impl Container {
    /// A file of its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes its lock, waiting for another caller's.
    pub fn lock(&self) -> Result<Lock> {
        lock_file(&self.path("lock"))
    }

    /// Its record; NotFound when it was deleted meanwhile.
    pub fn record(&self) -> Result<Record> {
        let path = self.path("state.json");
        let text = std::fs::read(&path).map_err(|_| Error::NotFound(self.id.clone()))?;
        serde_json::from_slice(&text).map_err(|e| Error::Io {
            what: format!("cannot read {}", path.display()),
            source: std::io::Error::other(e),
        })
    }

    /// Writes its record.
    pub fn save(&self, record: &Record) -> Result<()> {
        let path = self.path("state.json");
        let text = serde_json::to_vec_pretty(record).unwrap_or_default();
        write_atomic(&path, &text).map_err(Error::io(format!("cannot write {}", path.display())))
    }

    /// Writes the status its VMM reports.
    pub fn set_status(&self, status: Status) -> Result<()> {
        let path = self.path("status");
        write_atomic(&path, status.name().as_bytes())
            .map_err(Error::io(format!("cannot write {}", path.display())))
    }

    /// Whether its VMM process is the one recorded and alive.
    pub fn alive(record: &Record) -> bool {
        record.pid > 0
            && process_start(record.pid)
                .is_some_and(|(start, zombie)| start == record.pid_start && !zombie)
    }

    /// Its status now: stopped once its VMM is gone, whatever the status
    /// file says (a crashed VMM is never "running").
    pub fn status(&self, record: &Record) -> Status {
        let written = std::fs::read_to_string(self.path("status"))
            .ok()
            .and_then(|s| Status::parse(&s));
        if record.pid == 0 {
            // create has not started the VMM yet.
            return written.unwrap_or(Status::Creating);
        }
        if !Self::alive(record) {
            return Status::Stopped;
        }
        match written {
            Some(Status::Stopped) | None => Status::Creating,
            Some(s) => s,
        }
    }

    /// The spec's state.
    pub fn oci_state(&self) -> Result<OciState> {
        let record = self.record()?;
        let status = self.status(&record);
        Ok(OciState {
            oci_version: OCI_VERSION.into(),
            id: record.id.clone(),
            status,
            pid: (status != Status::Stopped && record.pid > 0).then_some(record.pid),
            bundle: record.bundle.clone(),
            annotations: record.annotations.clone(),
            created: record.created.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_make_paths_are_refused() {
        for bad in ["", "..", ".hidden", "a/b", "a b", "x\n", "../etc"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        for good in ["abc", "a-b_c.d+e", "0123456789abcdef"] {
            check_id(good).unwrap();
        }
    }

    #[test]
    fn rfc3339_is_the_calendar_date() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(1_798_761_600, 5);
        assert_eq!(rfc3339(t), "2027-01-01T00:00:00.000000005Z");
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::new(951_782_400 + 3661, 0);
        assert_eq!(rfc3339(t), "2000-02-29T01:01:01.000000000Z");
    }

    #[test]
    fn a_dead_or_reused_pid_is_stopped_never_running() {
        let dir = std::env::temp_dir().join(format!("vmm-runtime-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = Root::open(&dir).unwrap();
        let c = root.make("c1").unwrap();
        assert!(matches!(root.make("c1"), Err(Error::Exists(_))));
        let me = std::process::id() as i32;
        let (start, _) = process_start(me).unwrap();
        let mut record = Record {
            id: "c1".into(),
            bundle: "/b".into(),
            pid: me,
            pid_start: start,
            created: rfc3339(SystemTime::now()),
            annotations: Default::default(),
        };
        c.save(&record).unwrap();
        c.set_status(Status::Running).unwrap();
        assert_eq!(c.status(&record), Status::Running);
        assert_eq!(c.oci_state().unwrap().pid, Some(me));
        // The same PID, another process (another start time): stopped.
        record.pid_start = start + 1;
        assert_eq!(c.status(&record), Status::Stopped);
        // A child that exited and was reaped: stopped.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        record.pid = pid;
        assert_eq!(c.status(&record), Status::Stopped);
        assert_eq!(root.ids().unwrap(), vec!["c1".to_string()]);
        assert!(matches!(root.get("c2"), Err(Error::NotFound(_))));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
