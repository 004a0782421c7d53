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
    Some(r)
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
    if !cwd.starts_with('/') || cwd.contains('\0') {
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
        if !dest.starts_with('/') || dest.contains(['\0', '\n']) {
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
            // A file bound over /proc or /sys would hide the guest kernel's.
            let file = m.source().as_ref().is_some_and(|src| src.is_file());
            if bind && file && !dest.starts_with("/dev/") {
                return Err(Error::Unsupported(format!(
                    "{}: a file bound over the guest kernel's {dest}",
                    field("destination")
                )));
            }
            log::debug!("mount {dest}: the guest's own");
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
                let data = data.join(",");
                if data.contains('\0') {
                    return Err(Error::config(
                        field("options"),
                        "an option holds a NUL byte",
                    ));
                }
                tmpfs.push((dest, data));
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
            .and_then(|r| *r.memory())
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
/// 'L' rlimits, 'B'/'b' a file bound read-write or read-only, followed by
/// 'C' its content in unpadded URL-safe base64, read from the host now,
/// 'T' tmpfs mounts, 'R' read-only root).
pub fn run_records(plan: &Plan) -> Result<Vec<u8>> {
    use base64::Engine;
    let mut contents = Vec::with_capacity(plan.files.len());
    for f in &plan.files {
        let bytes = std::fs::read(&f.source).map_err(|e| Error::File {
            what: "bind mount source",
            path: f.source.clone(),
            reason: e.to_string(),
        })?;
        contents.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes));
    }
    // The image run's records first (A, E, U, G, S, W), without the
    // empty record that ends them.
    let mut out = vmm_image::run::Spec {
        argv: plan.args.clone(),
        env: plan.env.clone(),
        uid: plan.uid,
        gid: plan.gid,
        groups: plan.groups.clone(),
        workdir: plan.cwd.clone(),
    }
    .encode();
    out.pop();
    let mut rec = |tag: u8, value: &str| {
        out.push(tag);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    };
    if let Some(h) = &plan.hostname {
        rec(b'H', h);
    }
    if plan.terminal {
        rec(b'Y', "1");
    }
    for (r, soft, hard) in &plan.rlimits {
        rec(b'L', &format!("{r} {soft} {hard}"));
    }
    for (f, content) in plan.files.iter().zip(&contents) {
        rec(if f.read_only { b'b' } else { b'B' }, &f.dest);
        rec(b'C', content);
    }
    for (dest, data) in &plan.tmpfs {
        rec(b'T', &format!("{dest}\n{data}"));
    }
    if plan.read_only_root {
        rec(b'R', "1");
    }
    out.push(0);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bundle in a temporary directory with `config` as its config.json
    /// and a root directory holding /etc/hosts.
    struct Bundle(PathBuf);

    impl Bundle {
        fn new(name: &str, config: &serde_json::Value) -> Bundle {
            let dir = std::env::temp_dir()
                .join(format!("vmm-runtime-bundle-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
            std::fs::write(dir.join("hosts"), "127.0.0.1 localhost\n").unwrap();
            std::fs::create_dir_all(dir.join("volume")).unwrap();
            std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
            Bundle(dir)
        }

        fn plan(&self) -> Result<Plan> {
            let (bundle, spec) = load(&self.0)?;
            plan(&bundle, &spec)
        }
    }

    impl Drop for Bundle {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn config() -> serde_json::Value {
        serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "hostname": "box",
            "process": {
                "args": ["sh", "-c", "exit 3"],
                "env": ["PATH=/bin", "A=b c"],
                "cwd": "/work",
                "user": {"uid": 1000, "gid": 100, "additionalGids": [10, 20]},
                "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 2048, "soft": 1024}],
            },
            "mounts": [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
                {"destination": "/dev/shm", "type": "bind", "source": "/tmp", "options": ["rbind"]},
                {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup"},
                {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
                 "options": ["nosuid", "mode=755", "size=65536k"]},
            ],
            "annotations": {"org.example": "x"},
            "linux": {
                "namespaces": [{"type": "pid"}, {"type": "network"}],
                "resources": {"cpu": {"quota": 150000, "period": 100000},
                              "memory": {"limit": 536870912}},
            },
        })
    }

    fn field_error(e: Error) -> String {
        match e {
            Error::Config { field, .. } => field,
            other => panic!("not a config error: {other}"),
        }
    }

    #[test]
    fn a_bundles_process_mounts_and_resources_become_the_vms_plan() {
        let mut c = config();
        let b = Bundle::new("good", &c);
        c["mounts"].as_array_mut().unwrap().push(serde_json::json!({
            "destination": "/etc/hosts", "type": "bind",
            "source": b.0.join("hosts"), "options": ["rbind", "ro"]}));
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        let p = b.plan().unwrap();
        assert_eq!(p.root, b.0.join("rootfs"));
        assert_eq!(p.args, ["sh", "-c", "exit 3"]);
        assert_eq!((p.uid, p.gid, p.groups.clone()), (1000, 100, vec![10, 20]));
        assert_eq!(p.cwd, "/work");
        assert_eq!(p.hostname.as_deref(), Some("box"));
        assert_eq!(p.rlimits, [(libc::RLIMIT_NOFILE, 1024, 2048)]);
        // The guest's own /proc, /dev, /dev/shm and no cgroups; /run a tmpfs
        // with its size and mode; the file bound read-only.
        assert_eq!(
            p.tmpfs,
            [("/run".to_string(), "mode=755,size=65536k".to_string())]
        );
        assert_eq!(
            p.files,
            [FileBind {
                source: b.0.join("hosts"),
                dest: "/etc/hosts".into(),
                read_only: true
            }]
        );
        // A new network namespace (no path): no network device.
        assert_eq!(p.netns, None);
        // 1.5 CPUs' quota: 2 vCPUs; 512 MiB limit plus the kernel's share.
        assert_eq!((p.cpus, p.memory_mib), (2, 512 + KERNEL_OVERHEAD_MIB));
        assert_eq!(p.annotations["org.example"], "x");
        let run = run_records(&p).unwrap();
        assert!(run.starts_with(vmm_image::run::RUN_MAGIC));
        let records: Vec<&[u8]> = run[vmm_image::run::RUN_MAGIC.len()..]
            .split(|b| *b == 0)
            .collect();
        for want in [
            &b"Ash"[..],
            b"A-c",
            b"Aexit 3",
            b"EA=b c",
            b"U1000",
            b"G100",
            b"S10",
            b"S20",
            b"W/work",
            b"Hbox",
            b"L7 1024 2048",
            b"b/etc/hosts",
            b"CMTI3LjAuMC4xIGxvY2FsaG9zdAo",
            b"T/run\nmode=755,size=65536k",
        ] {
            assert!(
                records.contains(&want),
                "{:?}",
                String::from_utf8_lossy(want)
            );
        }
        assert!(!records.contains(&&b"Y1"[..]), "no terminal asked");
        assert!(run.ends_with(&[0, 0]), "ended by an empty record");
    }

    #[test]
    fn annotations_size_the_vm_over_the_resources() {
        let mut c = config();
        c["annotations"] = serde_json::json!({CPUS_ANNOTATION: "4", MEMORY_ANNOTATION: "1024"});
        let b = Bundle::new("annot", &c);
        let p = b.plan().unwrap();
        assert_eq!((p.cpus, p.memory_mib), (4, 1024));
        c["annotations"] = serde_json::json!({CPUS_ANNOTATION: "0"});
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        assert_eq!(
            field_error(b.plan().unwrap_err()),
            "annotations.\"vmm.cpus\""
        );
        c["annotations"] = serde_json::json!({MEMORY_ANNOTATION: "lots"});
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        assert_eq!(
            field_error(b.plan().unwrap_err()),
            "annotations.\"vmm.memory_mib\""
        );
        // Neither: the defaults.
        c.as_object_mut().unwrap().remove("annotations");
        c["linux"].as_object_mut().unwrap().remove("resources");
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        let p = b.plan().unwrap();
        assert_eq!((p.cpus, p.memory_mib), (DEFAULT_CPUS, DEFAULT_MEMORY_MIB));
    }

    #[test]
    fn a_bad_field_is_named() {
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            (
                "uid",
                serde_json::json!({"process": {"user": {"uid": "x"}}}),
                "process.user.uid",
            ),
            (
                "args",
                serde_json::json!({"process": {"args": []}}),
                "process.args",
            ),
            (
                "cwd",
                serde_json::json!({"process": {"cwd": "work"}}),
                "process.cwd",
            ),
            (
                "env",
                serde_json::json!({"process": {"env": ["NOEQUALS"]}}),
                "process.env[0]",
            ),
            (
                "rlimit",
                serde_json::json!({"process": {"rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 2}]}}),
                "process.rlimits[0]",
            ),
            (
                "version",
                serde_json::json!({"ociVersion": "0.9"}),
                "ociVersion",
            ),
            (
                "dest",
                serde_json::json!({"mounts": [{"destination": "rel", "type": "tmpfs"}]}),
                "mounts[0].destination",
            ),
            (
                "hostname",
                serde_json::json!({"hostname": "a/b"}),
                "hostname",
            ),
        ];
        for (name, patch, field) in cases {
            let mut c = config();
            merge(&mut c, &patch);
            let b = Bundle::new(name, &c);
            assert_eq!(field_error(b.plan().unwrap_err()), field, "{name}");
        }
        let b = Bundle::new("json", &config());
        std::fs::write(b.0.join("config.json"), "{\"ociVersion\": ").unwrap();
        assert!(matches!(b.plan().unwrap_err(), Error::Config { .. }));
    }

    fn merge(into: &mut serde_json::Value, patch: &serde_json::Value) {
        match (into, patch) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }

    #[test]
    fn missing_files_and_a_volume_are_refused_with_what_is_missing() {
        let b = Bundle::new("files", &config());
        std::fs::remove_dir_all(b.0.join("rootfs")).unwrap();
        assert!(
            matches!(b.plan().unwrap_err(), Error::File { what, .. } if what.contains("root.path"))
        );
        std::fs::create_dir_all(b.0.join("rootfs")).unwrap();
        let mut c = config();
        c["mounts"] = serde_json::json!([{"destination": "/data", "type": "bind",
            "source": b.0.join("volume"), "options": ["rbind"]}]);
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        let e = b.plan().unwrap_err();
        assert!(
            matches!(&e, Error::Unsupported(m) if m.contains("mounts[0].source") && m.contains("/data")),
            "{e}"
        );
        c["mounts"] = serde_json::json!([{"destination": "/etc/x", "type": "bind",
            "source": b.0.join("no-such-file")}]);
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        assert!(matches!(b.plan().unwrap_err(), Error::File { .. }));
        c["linux"]["namespaces"] =
            serde_json::json!([{"type": "network", "path": "/no/such/netns"}]);
        c.as_object_mut().unwrap().remove("mounts");
        std::fs::write(b.0.join("config.json"), c.to_string()).unwrap();
        assert!(
            matches!(b.plan().unwrap_err(), Error::File { what, .. } if what.contains("network"))
        );
        assert!(matches!(
            load(&b.0.join("nothing")).unwrap_err(),
            Error::File { what: "bundle", .. }
        ));
    }
}
