//! What the guest's init runs for an image: the program and its arguments,
//! environment, user and working directory, from the image's config and
//! the run's options, as `docker run` resolves them; and the bytes that
//! carry them to init.

use oci_spec::image::ImageConfiguration;

use crate::error::{Error, Result};

/// The PATH a container gets when its image sets none (Docker's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The first bytes of the run file init reads.
pub const RUN_MAGIC: &[u8] = b"VMMRUN1\n";

/// What a run asks on top of the image.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The command after `--`: replaces the image's Cmd.
    pub command: Option<Vec<String>>,
    /// `--entrypoint`: replaces the image's Entrypoint (and drops its Cmd,
    /// as `docker run --entrypoint` does); "" clears it.
    pub entrypoint: Option<String>,
    /// `-e KEY=VALUE` (or `-e KEY`, taking this process's value), in order.
    pub env: Vec<String>,
    /// `--user`: replaces the image's User.
    pub user: Option<String>,
    /// `--workdir`: replaces the image's WorkingDir.
    pub workdir: Option<String>,
}

/// What init runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// The program (looked up in the environment's PATH) and arguments.
    pub argv: Vec<String>,
    /// KEY=VALUE, in order, each key once.
    pub env: Vec<String>,
    /// User ID.
    pub uid: u32,
    /// Group ID.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// The working directory (made if missing).
    pub workdir: String,
}

/// The image's /etc/passwd and /etc/group, as far as they exist.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Accounts {
    /// /etc/passwd's content.
    pub passwd: String,
    /// /etc/group's content.
    pub group: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

impl Accounts {
    fn users(&self) -> impl Iterator<Item = PasswdEntry<'_>> {
        self.passwd.lines().filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 6).then_some(())?;
            Some(PasswdEntry {
                name: f[0],
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5],
            })
        })
    }

    /// (name, gid, members) of each group.
    fn groups(&self) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
        self.group.lines().filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then_some(())?;
            let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
            Some((f[0], f[2].parse().ok()?, members))
        })
    }
}

fn env_key(kv: &str) -> &str {
    kv.split_once('=').map_or(kv, |(k, _)| k)
}

/// Sets `kv` in `env`, replacing the same key.
fn set_env(env: &mut Vec<String>, kv: String) {
    let key = env_key(&kv).to_string();
    match env.iter_mut().find(|e| env_key(e) == key) {
        Some(e) => *e = kv,
        None => env.push(kv),
    }
}

/// Resolves the run of `config` with `opts`, users and groups from
/// `accounts` (the image's own, as the container would see them).
pub fn resolve(config: &ImageConfiguration, accounts: &Accounts, opts: &Options) -> Result<Spec> {
    resolve_with(config, accounts, opts, |key| std::env::var(key).ok())
}

/// `resolve`, with `host_env` giving this process's variables (`-e KEY`).
fn resolve_with(
    config: &ImageConfiguration,
    accounts: &Accounts,
    opts: &Options,
    host_env: impl Fn(&str) -> Option<String>,
) -> Result<Spec> {
    let c = config.config().clone().unwrap_or_default();
    let entrypoint: Vec<String> = match &opts.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => c.entrypoint().clone().unwrap_or_default(),
    };
    let cmd: Vec<String> = match (&opts.command, &opts.entrypoint) {
        (Some(command), _) => command.clone(),
        // docker run --entrypoint drops the image's Cmd.
        (None, Some(_)) => Vec::new(),
        (None, None) => c.cmd().clone().unwrap_or_default(),
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    if argv.is_empty() {
        return Err(Error::run(
            "command",
            "",
            "the image has no Entrypoint and no Cmd: give the command after --",
        ));
    }
    let mut env = Vec::new();
    for kv in c.env().clone().unwrap_or_default() {
        set_env(&mut env, kv);
    }
    for e in &opts.env {
        let kv = match e.split_once('=') {
            Some(("", _)) => return Err(Error::run("-e", e, "a variable needs a name before '='")),
            Some(_) => e.clone(),
            None if e.is_empty() => return Err(Error::run("-e", e, "expected KEY=VALUE or KEY")),
            // -e KEY: this process's value, as docker takes it; left out
            // when unset.
            None => match host_env(e) {
                Some(v) => format!("{e}={v}"),
                None => continue,
            },
        };
        set_env(&mut env, kv);
    }
    if !env.iter().any(|e| env_key(e) == "PATH") {
        env.insert(0, format!("PATH={DEFAULT_PATH}"));
    }
    let user = opts
        .user
        .clone()
        .or_else(|| c.user().clone())
        .unwrap_or_default();
    let field = if opts.user.is_some() {
        "--user"
    } else {
        "User"
    };
    let (uid, gid, groups, home) = resolve_user(&user, accounts, field)?;
    if !env.iter().any(|e| env_key(e) == "HOME") {
        env.push(format!("HOME={home}"));
    }
    let workdir = opts
        .workdir
        .clone()
        .or_else(|| c.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        let field = if opts.workdir.is_some() {
            "--workdir"
        } else {
            "WorkingDir"
        };
        return Err(Error::run(field, &workdir, "must be an absolute path"));
    }
    Ok(Spec {
        argv,
        env,
        uid,
        gid,
        groups,
        workdir,
    })
}

/// uid, gid, supplementary groups and home of a User value: "",
/// "NAME|UID" or "NAME|UID:GROUP|GID", names from the image's accounts.
fn resolve_user(
    user: &str,
    accounts: &Accounts,
    field: &str,
) -> Result<(u32, u32, Vec<u32>, String)> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(uid) => accounts
            .users()
            .find(|p| p.uid == uid)
            .map(|p| (p.name.to_string(), p.uid, p.gid, p.home.to_string()))
            .or(Some((String::new(), uid, 0, "/".into()))),
        Err(_) => accounts
            .users()
            .find(|p| p.name == u)
            .map(|p| (p.name.to_string(), p.uid, p.gid, p.home.to_string())),
    };
    let Some((name, uid, primary, home)) = entry else {
        return Err(Error::run(
            field,
            user,
            format!("no user '{u}' in the image's /etc/passwd"),
        ));
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => accounts
                .groups()
                .find(|(n, _, _)| *n == g)
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| {
                    Error::run(
                        field,
                        user,
                        format!("no group '{g}' in the image's /etc/group"),
                    )
                })?,
        },
    };
    // Supplementary groups: those listing the user by name (when only a
    // user was given, as docker does).
    let mut groups = vec![gid];
    if g.is_none() && !name.is_empty() {
        for (_, id, members) in accounts.groups() {
            if members.contains(&name.as_str()) && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    let home = if home.is_empty() { "/".into() } else { home };
    Ok((uid, gid, groups, home))
}

impl Spec {
    /// The run file's bytes: RUN_MAGIC, then NUL-terminated records, each
    /// a letter and its value (A: an argument, E: KEY=VALUE, U: uid, G:
    /// gid, S: a supplementary gid, W: the working directory), then an
    /// empty record.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = RUN_MAGIC.to_vec();
        let mut rec = |tag: u8, value: &str| {
            out.push(tag);
            out.extend_from_slice(value.as_bytes());
            out.push(0);
        };
        for a in &self.argv {
            rec(b'A', a);
        }
        for e in &self.env {
            rec(b'E', e);
        }
        rec(b'U', &self.uid.to_string());
        rec(b'G', &self.gid.to_string());
        for g in &self.groups {
            rec(b'S', &g.to_string());
        }
        rec(b'W', &self.workdir);
        out.push(0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::image::{ConfigBuilder, ImageConfigurationBuilder};

    fn image(
        entrypoint: &[&str],
        cmd: &[&str],
        user: &str,
        workdir: &str,
        env: &[&str],
    ) -> ImageConfiguration {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut c = ConfigBuilder::default()
            .env(v(env))
            .user(user.to_string())
            .working_dir(workdir.to_string());
        if !entrypoint.is_empty() {
            c = c.entrypoint(v(entrypoint));
        }
        if !cmd.is_empty() {
            c = c.cmd(v(cmd));
        }
        ImageConfigurationBuilder::default()
            .config(c.build().unwrap())
            .build()
            .unwrap()
    }

    fn accounts() -> Accounts {
        Accounts {
            passwd:
                "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:App:/home/app:/bin/sh\nbroken\n"
                    .into(),
            group: "root:x:0:\napp:x:1000:\nstaff:x:50:app,other\nwheel:x:10:root\n".into(),
        }
    }

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn entrypoint_and_cmd_as_docker_run_takes_them() {
        let img = image(&["/bin/ep", "-x"], &["default", "args"], "", "", &[]);
        let a = accounts();
        let argv = |o: &Options| resolve(&img, &a, o).unwrap().argv;
        assert_eq!(argv(&opts()), ["/bin/ep", "-x", "default", "args"]);
        // A command replaces Cmd and keeps Entrypoint.
        let o = Options {
            command: Some(vec!["mine".into()]),
            ..opts()
        };
        assert_eq!(argv(&o), ["/bin/ep", "-x", "mine"]);
        // --entrypoint replaces Entrypoint and drops Cmd.
        let o = Options {
            entrypoint: Some("/bin/sh".into()),
            ..opts()
        };
        assert_eq!(argv(&o), ["/bin/sh"]);
        let o = Options {
            entrypoint: Some("/bin/sh".into()),
            command: Some(vec!["-c".into(), "x".into()]),
            ..opts()
        };
        assert_eq!(argv(&o), ["/bin/sh", "-c", "x"]);
        // --entrypoint "" clears it: the command alone.
        let o = Options {
            entrypoint: Some(String::new()),
            command: Some(vec!["ls".into()]),
            ..opts()
        };
        assert_eq!(argv(&o), ["ls"]);
        let none = image(&[], &[], "", "", &[]);
        let e = resolve(&none, &a, &opts()).unwrap_err();
        assert!(e.to_string().contains("no Entrypoint and no Cmd"), "{e}");
    }

    #[test]
    fn environment_is_the_images_with_the_runs_over_it() {
        let img = image(&[], &["x"], "", "", &["A=1", "B=2", "A=3"]);
        let o = Options {
            env: vec!["B=over".into(), "C=new=x".into()],
            ..opts()
        };
        let s = resolve(&img, &accounts(), &o).unwrap();
        assert_eq!(
            s.env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "A=3".into(),
                "B=over".into(),
                "C=new=x".into(),
                "HOME=/root".into()
            ]
        );
        // -e KEY: this process's value, over the image's; left out when
        // this process has none.
        let o = Options {
            env: vec!["A".into(), "UNSET".into(), "D".into()],
            ..opts()
        };
        let host = |k: &str| match k {
            "A" => Some("from-host".to_string()),
            "D" => Some(String::new()),
            _ => None,
        };
        let s = resolve_with(&img, &accounts(), &o, host).unwrap();
        assert_eq!(
            s.env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "A=from-host".into(),
                "B=2".into(),
                "D=".into(),
                "HOME=/root".into()
            ]
        );
        // The image's PATH and HOME are kept.
        let img = image(&[], &["x"], "", "", &["PATH=/opt/bin", "HOME=/data"]);
        let s = resolve(&img, &accounts(), &opts()).unwrap();
        assert_eq!(s.env, ["PATH=/opt/bin", "HOME=/data"]);
        for bad in ["=v", ""] {
            let o = Options {
                env: vec![bad.into()],
                ..opts()
            };
            assert!(
                matches!(resolve(&img, &accounts(), &o), Err(Error::Run { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn users_come_from_the_images_accounts() {
        let a = accounts();
        let run = |user: &str| resolve(&image(&[], &["x"], user, "", &[]), &a, &opts());
        let s = run("").unwrap();
        assert_eq!((s.uid, s.gid, s.groups.clone()), (0, 0, vec![0, 10]));
        let s = run("app").unwrap();
        assert_eq!(
            (s.uid, s.gid, s.groups.clone()),
            (1000, 1000, vec![1000, 50])
        );
        assert!(s.env.contains(&"HOME=/home/app".to_string()));
        let s = run("1000").unwrap();
        assert_eq!((s.uid, s.gid), (1000, 1000));
        let s = run("app:staff").unwrap();
        assert_eq!((s.uid, s.gid, s.groups.clone()), (1000, 50, vec![50]));
        // A numeric user the image does not know: that uid, gid 0, home /.
        let s = run("4242:4343").unwrap();
        assert_eq!((s.uid, s.gid), (4242, 4343));
        assert!(s.env.contains(&"HOME=/".to_string()));
        let e = run("nobody-here").unwrap_err();
        assert!(
            e.to_string()
                .contains("no user 'nobody-here' in the image's /etc/passwd"),
            "{e}"
        );
        assert!(e.to_string().starts_with("invalid User"), "{e}");
        let e = run("app:nogroup").unwrap_err();
        assert!(e.to_string().contains("no group 'nogroup'"), "{e}");
        let o = Options {
            user: Some("app".into()),
            ..opts()
        };
        let s = resolve(&image(&[], &["x"], "root", "", &[]), &a, &o).unwrap();
        assert_eq!(s.uid, 1000);
    }

    #[test]
    fn working_directory_is_absolute() {
        let a = accounts();
        let s = resolve(&image(&[], &["x"], "", "/srv/app", &[]), &a, &opts()).unwrap();
        assert_eq!(s.workdir, "/srv/app");
        assert_eq!(
            resolve(&image(&[], &["x"], "", "", &[]), &a, &opts())
                .unwrap()
                .workdir,
            "/"
        );
        let o = Options {
            workdir: Some("rel".into()),
            ..opts()
        };
        let e = resolve(&image(&[], &["x"], "", "", &[]), &a, &o).unwrap_err();
        assert!(e.to_string().starts_with("invalid --workdir 'rel'"), "{e}");
    }

    #[test]
    fn the_run_file_holds_every_record_in_order() {
        let spec = Spec {
            argv: vec!["sh".into(), "-c".into(), "a b".into()],
            env: vec!["PATH=/bin".into()],
            uid: 1000,
            gid: 50,
            groups: vec![50, 7],
            workdir: "/w".into(),
        };
        let bytes = spec.encode();
        let mut want = RUN_MAGIC.to_vec();
        want.extend_from_slice(b"Ash\0A-c\0Aa b\0EPATH=/bin\0U1000\0G50\0S50\0S7\0W/w\0\0");
        assert_eq!(bytes, want);
    }
}
