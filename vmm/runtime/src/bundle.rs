//! A bundle's `config.json` read and turned into what the VM needs: its
//! root directory, the process init runs (the run file's records), the
//! files bound in, the tmpfs mounts, the network namespace to join and
//! the VM's size. Everything is checked here, at `create`, before a VM or
//! a state directory exists; a bad field is named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The annotation that sets the VM's vCPU count.
pub const CPUS_ANNOTATION: &str = "vmm.cpus";
/// The annotation that sets the VM's memory, MiB.
pub const MEMORY_ANNOTATION: &str = "vmm.memory_mib";
/// vCPUs when neither an annotation nor a CPU quota says.
pub const DEFAULT_CPUS: u32 = 1;
/// Memory (MiB) when neither an annotation nor a memory limit says.
pub const DEFAULT_MEMORY_MIB: u64 = 256;
/// What the guest's kernel takes besides the container's memory limit:
/// a limit of L MiB gives a VM of L + this.
pub const KERNEL_OVERHEAD_MIB: u64 = 64;
/// The least memory a VM gets, MiB.
pub const MIN_MEMORY_MIB: u64 = 64;
/// The most vCPUs a container's VM gets.
pub const MAX_CPUS: u32 = 32;

/// A file from the host put at `dest` in the container, as a bind mount
/// would: copied onto the VM's disk at create, bound there by init.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBind {
    /// The host's file.
    pub source: PathBuf,
    /// Where the container sees it.
    pub dest: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A hook of config.json (run by the runtime on the host).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hook {
    /// The program.
    pub path: PathBuf,
    /// Its argv (argv[0] included, as the spec has it).
    pub args: Vec<String>,
    /// Its environment.
    pub env: Vec<String>,
    /// Seconds it may take.
    pub timeout: Option<u64>,
}

/// The hooks, by when they run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// After the VM exists, before `create` returns (createRuntime and the
    /// older prestart).
    pub create_runtime: Vec<Hook>,
    /// After `start` started the process.
    pub poststart: Vec<Hook>,
    /// After the container is deleted.
    pub poststop: Vec<Hook>,
}

/// What the VM is made of, from config.json.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The bundle (absolute).
    pub bundle: PathBuf,
    /// The container's root directory (absolute).
    pub root: PathBuf,
    /// `root.readonly`.
    pub read_only_root: bool,
    /// `process.args`.
    pub args: Vec<String>,
    /// `process.env`.
    pub env: Vec<String>,
    /// `process.cwd`.
    pub cwd: String,
    /// `process.user`.
    pub uid: u32,
    /// `process.user.gid`.
    pub gid: u32,
    /// `process.user.additionalGids`.
    pub groups: Vec<u32>,
    /// `process.terminal`.
    pub terminal: bool,
    /// `hostname`.
    pub hostname: Option<String>,
    /// `process.rlimits`: resource number, soft, hard.
    pub rlimits: Vec<(u32, u64, u64)>,
    /// File bind mounts, in order.
    pub files: Vec<FileBind>,
    /// tmpfs mounts besides the ones the guest makes itself: target and
    /// options.
    pub tmpfs: Vec<(String, String)>,
    /// The network namespace to join (`linux.namespaces`, type network,
    /// with a path).
    pub netns: Option<PathBuf>,
    /// vCPUs.
    pub cpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// `annotations`.
    pub annotations: BTreeMap<String, String>,
    /// `hooks`.
    pub hooks: Hooks,
}

/// Mount destinations the guest's init makes itself (proc, sysfs, devtmpfs
/// with devpts, shm and mqueue): a bundle's mounts there are its own
/// kernel's, not the host's.
const GUEST_OWN: [&str; 3] = ["/proc", "/sys", "/dev"];

fn is_under(path: &str, dir: &str) -> bool {
    path == dir
        || path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// The resource number of an rlimit's type ("RLIMIT_NOFILE").
fn rlimit_resource(name: &str) -> Option<u32> {
    let r = match name {
        "RLIMIT_CPU" => libc::RLIMIT_CPU,
        "RLIMIT_FSIZE" => libc::RLIMIT_FSIZE,
        "RLIMIT_DATA" => libc::RLIMIT_DATA,
        "RLIMIT_STACK" => libc::RLIMIT_STACK,
        "RLIMIT_CORE" => libc::RLIMIT_CORE,
        "RLIMIT_RSS" => libc::RLIMIT_RSS,
        "RLIMIT_NPROC" => libc::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => libc::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => libc::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => libc::RLIMIT_AS,
        "RLIMIT_LOCKS" => libc::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => libc::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => libc::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => libc::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => libc::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => libc::RLIMIT_RTTIME,
        _ => return None,
    };
    Some(r as u32)
}

/// Reads `bundle`/config.json: a missing bundle or file is a FILE error, a
/// field that does not parse a CONFIG error naming it.
pub fn load(bundle: &Path) -> Result<(PathBuf, Spec)> {
    let bundle = std::path::absolute(bundle).map_err(|e| Error::File {
        what: "bundle",
        path: bundle.to_path_buf(),
        reason: e.to_string(),
    })?;
    if !bundle.is_dir() {
        return Err(Error::File {
            what: "bundle",
            path: bundle,
            reason: "no such directory".into(),
        });
    }
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|e| Error::File {
        what: "bundle's config",
        path: path.clone(),
        reason: e.to_string(),
    })?;
    Ok((bundle, parse(&text)?))
}

/// Parses config.json's text, naming the field that does not parse.
pub fn parse(text: &[u8]) -> Result<Spec> {
    let mut de = serde_json::Deserializer::from_slice(text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." {
            "(document)".to_string()
        } else {
            field
        };
        Error::config(field, e.into_inner().to_string())
    })
}

/// Turns the spec into the VM's plan, checking every field it uses.
pub fn plan(bundle: &Path, spec: &Spec) -> Result<Plan> {
    if spec.version().is_empty() || !spec.version().starts_with("1.") {
        return Err(Error::config(
            "ociVersion",
            format!(
                "'{}' is not a version this runtime reads (1.x)",
                spec.version()
            ),
        ));
    }
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::config("root", "missing: the container needs a root directory"))?;
    let root_path = if root.path().is_absolute() {
        root.path().clone()
    } else {
        bundle.join(root.path())
    };
    if !root_path.is_dir() {
        return Err(Error::File {
            what: "root directory (root.path)",
            path: root_path,
            reason: "no such directory".into(),
        });
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::config("process", "missing: nothing to run"))?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::config("process.args", "empty: nothing to run"));
    }
    if let Some(i) = args.iter().position(|a| a.contains('\0')) {
        return Err(Error::config(
            format!("process.args[{i}]"),
            "holds a NUL byte",
        ));
    }
    let env = process.env().clone().unwrap_or_default();
    for (i, e) in env.iter().enumerate() {
        if !e.contains('=') || e.starts_with('=') || e.contains('\0') {
            return Err(Error::config(
                format!("process.env[{i}]"),
                format!("'{e}' is not KEY=VALUE"),
            ));
        }
    }
    let cwd = process.cwd().to_string_lossy().into_owned();
    if !cwd.starts_with('/') {
        return Err(Error::config(
            "process.cwd",
            format!("'{cwd}' is not an absolute path"),
        ));
    }
    let user = process.user();
    let mut rlimits = Vec::new();
    for (i, r) in process.rlimits().iter().flatten().enumerate() {
        let name = r.typ().to_string();
        let resource = rlimit_resource(&name).ok_or_else(|| {
            Error::config(
                format!("process.rlimits[{i}].type"),
                format!("'{name}' is not a resource limit"),
            )
        })?;
        if r.soft() > r.hard() {
            return Err(Error::config(
                format!("process.rlimits[{i}]"),
                format!("soft limit {} above the hard limit {}", r.soft(), r.hard()),
            ));
        }
        rlimits.push((resource, r.soft(), r.hard()));
    }
    let hostname = spec.hostname().clone().filter(|h| !h.is_empty());
    if let Some(h) = &hostname {
        if h.len() > 64 || h.contains(['\0', '\n', '/']) {
            return Err(Error::config(
                "hostname",
                format!("'{h}' is not a host name (at most 64 bytes)"),
            ));
        }
    }

    let (files, tmpfs) = mounts(spec)?;
    let mut netns = None;
    if let Some(linux) = spec.linux() {
        for ns in linux.namespaces().iter().flatten() {
            if ns.typ() == LinuxNamespaceType::Network {
                if let Some(p) = ns.path() {
                    if !p.exists() {
                        return Err(Error::File {
                            what: "network namespace (linux.namespaces)",
                            path: p.clone(),
                            reason: "does not exist".into(),
                        });
                    }
                    netns = Some(p.clone());
                }
            }
        }
    }
    let annotations: BTreeMap<String, String> = spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let (cpus, memory_mib) = size(spec, &annotations)?;
    Ok(Plan {
        bundle: bundle.to_path_buf(),
        root: root_path,
        read_only_root: root.readonly().unwrap_or(false),
        args,
        env,
        cwd,
        uid: user.uid(),
        gid: user.gid(),
        groups: user.additional_gids().clone().unwrap_or_default(),
        terminal: process.terminal().unwrap_or(false),
        hostname,
        rlimits,
        files,
        tmpfs,
        netns,
        cpus,
        memory_mib,
        annotations,
        hooks: hooks(spec)?,
    })
}

/// The file binds and the extra tmpfs mounts; refuses what the VM cannot
/// give (a directory bind: no shared file system yet).
#[allow(clippy::type_complexity)]
fn mounts(spec: &Spec) -> Result<(Vec<FileBind>, Vec<(String, String)>)> {
    let mut files = Vec::new();
    let mut tmpfs = Vec::new();
    for (i, m) in spec.mounts().iter().flatten().enumerate() {
        let dest = m.destination().to_string_lossy().into_owned();
        let field = |f: &str| format!("mounts[{i}].{f}");
        if !dest.starts_with('/') {
            return Err(Error::config(
                field("destination"),
                format!("'{dest}' is not an absolute path"),
            ));
        }
        let options = m.options().clone().unwrap_or_default();
        let typ = m.typ().clone().unwrap_or_default();
        let bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
        // The guest's own kernel file systems: its init mounts them.
        if GUEST_OWN.iter().any(|d| is_under(&dest, d)) {
            if bind && !(dest == "/dev/shm" || dest.starts_with("/dev/")) {
                log::debug!("mount {dest}: the guest's own");
            }
            if bind {
                if let Some(src) = m.source() {
                    if src.is_file() && !dest.starts_with("/dev/") {
                        // A file over /proc or /sys: not the guest's.
                        return Err(Error::Unsupported(format!(
                            "{}: a file bound over the guest kernel's {dest}",
                            field("destination")
                        )));
                    }
                }
            }
            continue;
        }
        if bind {
            let source = m
                .source()
                .clone()
                .ok_or_else(|| Error::config(field("source"), "a bind mount needs a source"))?;
            let meta = std::fs::metadata(&source).map_err(|e| Error::File {
                what: "bind mount source",
                path: source.clone(),
                reason: format!("{e} ({})", field("source")),
            })?;
            if meta.is_dir() {
                return Err(Error::Unsupported(format!(
                    "{} ({} on {dest}): a directory bind mount (a volume) needs a file system \
                     shared with the VM, which this runtime does not have yet; only files are \
                     bound (copied in at create)",
                    field("source"),
                    source.display()
                )));
            }
            files.push(FileBind {
                source,
                dest,
                read_only: options.iter().any(|o| o == "ro"),
            });
            continue;
        }
        match typ.as_str() {
            "tmpfs" => {
                let data: Vec<&str> = options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| {
                        ["mode=", "size=", "nr_inodes=", "uid=", "gid="]
                            .iter()
                            .any(|p| o.starts_with(p))
                    })
                    .collect();
                tmpfs.push((dest, data.join(",")));
            }
            // cgroups: the VM is the container's limit; its kernel has none.
            "cgroup" | "cgroup2" | "proc" | "sysfs" | "mqueue" | "devpts" => {
                log::debug!("mount {dest} ({typ}): not made in the VM");
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: a '{other}' mount on {dest} is not one this runtime makes in the VM",
                    field("type")
                )))
            }
        }
    }
    Ok((files, tmpfs))
}

/// The VM's vCPUs and memory: the `vmm.cpus` and `vmm.memory_mib`
/// annotations, else the CPU quota (rounded up to whole CPUs) and the
/// memory limit (plus the kernel's share), else the defaults.
fn size(spec: &Spec, annotations: &BTreeMap<String, String>) -> Result<(u32, u64)> {
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    let cpus = match annotations.get(CPUS_ANNOTATION) {
        Some(v) => match v.parse::<u32>() {
            Ok(n) if (1..=MAX_CPUS).contains(&n) => n,
            _ => {
                return Err(Error::config(
                    format!("annotations.\"{CPUS_ANNOTATION}\""),
                    format!("'{v}' is not a vCPU count (1 to {MAX_CPUS})"),
                ))
            }
        },
        None => resources
            .as_ref()
            .and_then(|r| r.cpu().clone())
            .and_then(|c| match (c.quota(), c.period()) {
                (Some(q), Some(p)) if q > 0 && p > 0 => {
                    Some((q as u64).div_ceil(p).clamp(1, u64::from(MAX_CPUS)) as u32)
                }
                _ => None,
            })
            .unwrap_or(DEFAULT_CPUS),
    };
    let memory_mib = match annotations.get(MEMORY_ANNOTATION) {
        Some(v) => match v.parse::<u64>() {
            Ok(n) if n >= MIN_MEMORY_MIB => n,
            _ => {
                return Err(Error::config(
                    format!("annotations.\"{MEMORY_ANNOTATION}\""),
                    format!("'{v}' is not a memory size in MiB (at least {MIN_MEMORY_MIB})"),
                ))
            }
        },
        None => resources
            .as_ref()
            .and_then(|r| r.memory().clone())
            .and_then(|m| m.limit())
            .filter(|l| *l > 0)
            .map(|l| ((l as u64).div_ceil(1 << 20) + KERNEL_OVERHEAD_MIB).max(MIN_MEMORY_MIB))
            .unwrap_or(DEFAULT_MEMORY_MIB),
    };
    if let Err(e) = vmm::config::check_mem(memory_mib) {
        return Err(Error::config("linux.resources.memory.limit", e));
    }
    Ok((cpus, memory_mib))
}

fn hooks(spec: &Spec) -> Result<Hooks> {
    let Some(h) = spec.hooks() else {
        return Ok(Hooks::default());
    };
    let list = |name: &str, hooks: &Option<Vec<oci_spec::runtime::Hook>>| -> Result<Vec<Hook>> {
        hooks
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, hook)| {
                if !hook.path().is_absolute() {
                    return Err(Error::config(
                        format!("hooks.{name}[{i}].path"),
                        "must be an absolute path",
                    ));
                }
                Ok(Hook {
                    path: hook.path().clone(),
                    args: hook.args().clone().unwrap_or_default(),
                    env: hook.env().clone().unwrap_or_default(),
                    timeout: hook.timeout().map(|t| t.max(1) as u64),
                })
            })
            .collect()
    };
    #[allow(deprecated)]
    let prestart = list("prestart", h.prestart())?;
    let mut create_runtime = prestart;
    create_runtime.extend(list("createRuntime", h.create_runtime())?);
    Ok(Hooks {
        create_runtime,
        poststart: list("poststart", h.poststart())?,
        poststop: list("poststop", h.poststop())?,
    })
}

/// The run file's records for init (guest-kernels/init.c `read_run`):
/// the image run's, then the runtime's own ('H' hostname, 'Y' terminal,
/// 'L' rlimits, 'B'/'b' file binds, in the order of the files under
/// /vmm/files, 'T' tmpfs mounts, 'R' read-only root).
pub fn run_records(plan: &Plan) -> Vec<u8> {
    let mut out = vmm_image::run::RUN_MAGIC.to_vec();
    let mut rec = |tag: u8, value: &str| {
        out.push(tag);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    };
    for a in &plan.args {
        rec(b'A', a);
    }
    for e in &plan.env {
        rec(b'E', e);
    }
    rec(b'U', &plan.uid.to_string());
    rec(b'G', &plan.gid.to_string());
    for g in &plan.groups {
        rec(b'S', &g.to_string());
    }
    rec(b'W', &plan.cwd);
    if let Some(h) = &plan.hostname {
        rec(b'H', h);
    }
    if plan.terminal {
        rec(b'Y', "1");
    }
    for (r, soft, hard) in &plan.rlimits {
        rec(b'L', &format!("{r} {soft} {hard}"));
    }
    for f in &plan.files {
        rec(if f.read_only { b'b' } else { b'B' }, &f.dest);
    }
    for (dest, data) in &plan.tmpfs {
        rec(b'T', &format!("{dest}\n{data}"));
    }
    if plan.read_only_root {
        rec(b'R', "1");
    }
    out.push(0);
    out
}
