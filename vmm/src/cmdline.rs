//! Assembling the guest command line: the user's (or the default) first,
//! then what the VMM manages, without overriding anything the user set.

/// The kernel parameter that carries `vmm run -- COMMAND` to the guest's
/// init (an environment variable for it, as every unknown KEY=VALUE is).
pub const COMMAND_PARAM: &str = "VMM_CMD";
/// The kernel parameter that asks the guest's init for a shell on the
/// console when there is no command.
pub const SHELL_PARAM: &str = "VMM_SHELL";
/// The kernel parameter that asks the guest's init to configure eth0 by
/// DHCP (`vmm run --dhcp`).
pub const DHCP_PARAM: &str = "VMM_DHCP";

/// The command's argv as the value of `COMMAND_PARAM`: the arguments'
/// bytes each followed by a NUL, in unpadded URL-safe base64 (RFC 4648
/// section 5), so that spaces, quotes, newlines and any other bytes reach
/// init as they were given, through a command line that splits on spaces.
pub fn encode_command(argv: &[std::ffi::OsString]) -> String {
    use base64::Engine;
    use std::os::unix::ffi::OsStrExt;
    let mut raw = Vec::new();
    for arg in argv {
        raw.extend_from_slice(arg.as_bytes());
        raw.push(0);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// `argv` as a shell would take it back: words with anything but
/// letters, digits and `-_./=:,+@%` in single quotes.
pub fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            let plain = !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The key of a command-line word: `key` in `key=value`, or the word.
fn key_of(word: &str) -> &str {
    word.split_once('=').map_or(word, |(k, _)| k)
}

/// Whether `cmdline` sets `key` (as `key` or `key=...`) before any `--`.
pub fn has_key(cmdline: &str, key: &str) -> bool {
    cmdline
        .split_whitespace()
        .take_while(|w| *w != "--")
        .any(|w| key_of(w) == key)
}

/// Appends `param` before any `--` (after which words are init's
/// arguments), whatever the command line already holds.
pub fn append(cmdline: &mut String, param: &str) {
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let split = words.iter().position(|w| *w == "--").unwrap_or(words.len());
    let mut out: Vec<&str> = words[..split].to_vec();
    out.push(param);
    out.extend(&words[split..]);
    *cmdline = out.join(" ");
}

/// Adds the kernel's `quiet` when `cfg` runs a command on the default
/// command line: the boot log (every byte a port exit through the 8250)
/// stays off the console, which shows the command's output; the kernel's
/// errors still show. A command line the user gave is left as it is.
pub fn quiet_for_command(cfg: &mut crate::config::VmConfig) {
    if cfg.command.is_some() && cfg.cmdline == crate::config::DEFAULT_CMDLINE {
        add_param(&mut cfg.cmdline, "quiet", None);
    }
}

/// Appends `key[=value]` unless the command line already sets `key`.
/// Returns whether it was added.
pub fn add_param(cmdline: &mut String, key: &str, value: Option<&str>) -> bool {
    if has_key(cmdline, key) {
        return false;
    }
    match value {
        Some(v) => append(cmdline, &format!("{key}={v}")),
        None => append(cmdline, key),
    }
    true
}

/// Adds `items` (comma-separated) to the list parameter `key`: appends the
/// items it lacks where the command line sets `key`, else adds `key=items`.
/// Returns the items added.
pub fn merge_list_param(cmdline: &mut String, key: &str, items: &str) -> Vec<String> {
    let mut words: Vec<String> = cmdline.split_whitespace().map(String::from).collect();
    let end = words.iter().position(|w| w == "--").unwrap_or(words.len());
    let Some(i) = words[..end].iter().position(|w| key_of(w) == key) else {
        add_param(cmdline, key, Some(items));
        return items
            .split(',')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
    };
    let existing: Vec<String> = words[i]
        .split_once('=')
        .map_or("", |(_, v)| v)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let added: Vec<String> = items
        .split(',')
        .filter(|s| !s.is_empty() && !existing.iter().any(|e| e == s))
        .map(String::from)
        .collect();
    let all: Vec<String> = existing.into_iter().chain(added.iter().cloned()).collect();
    words[i] = format!("{key}={}", all.join(","));
    *cmdline = words.join(" ");
    added
}

/// The guest command line: the configured one, the virtio-mmio devices and
/// root disk, and the emulated-host parameters when they apply.
pub fn guest_cmdline(config: &crate::config::VmConfig, emulated: bool) -> String {
    let mut cmdline = config.cmdline.clone();
    for (slot, device) in crate::device_manager::virtio_layout(config) {
        append(
            &mut cmdline,
            &format!("virtio_mmio.device={}", slot.param()),
        );
        if let crate::device_manager::Slotted::Disk(i, disk) = device {
            if disk.root {
                let letter = char::from(b'a' + i as u8);
                let root = match &disk.partuuid {
                    Some(uuid) => format!("PARTUUID={uuid}"),
                    None => format!("/dev/vd{letter}"),
                };
                if add_param(&mut cmdline, "root", Some(&root))
                    && !has_key(&cmdline, "ro")
                    && !has_key(&cmdline, "rw")
                {
                    append(&mut cmdline, if disk.read_only { "ro" } else { "rw" });
                }
            }
        }
    }
    // Where init tells the VMM it runs (the kernel hands unknown KEY=VALUE
    // parameters to init as its environment).
    add_param(
        &mut cmdline,
        devices::boot_timer::CMDLINE_PARAM,
        Some(&format!("{:#x}", arch::layout::BOOT_TIMER_PORT)),
    );
    // Where init reports its command's exit status, and the command.
    add_param(
        &mut cmdline,
        devices::exit_device::CMDLINE_PARAM,
        Some(&format!("{:#x}", arch::layout::EXIT_DEVICE_PORT)),
    );
    match &config.command {
        Some(command) => {
            add_param(&mut cmdline, COMMAND_PARAM, Some(&encode_command(command)));
        }
        None if config.template => {
            add_param(
                &mut cmdline,
                devices::command::CMDLINE_PARAM,
                Some(&format!("{:#x}", arch::layout::COMMAND_PORT)),
            );
        }
        None if config.shell => {
            add_param(&mut cmdline, SHELL_PARAM, Some("1"));
        }
        None => {}
    }
    if config.dhcp {
        add_param(&mut cmdline, DHCP_PARAM, Some("1"));
    }
    if emulated {
        for (key, value) in crate::host::emulated_host_params() {
            match value {
                Some(list) if crate::host::LIST_PARAMS.contains(&key) => {
                    merge_list_param(&mut cmdline, key, list);
                }
                _ => {
                    add_param(&mut cmdline, key, value);
                }
            }
        }
    }
    cmdline
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_shown_as_a_shell_takes_them_back() {
        let argv = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(shell_words(&argv(&["echo", "ready"])), "echo ready");
        assert_eq!(
            shell_words(&argv(&["sh", "-c", "echo $(uname -r)", "it's", ""])),
            "sh -c 'echo $(uname -r)' 'it'\\''s' ''"
        );
    }

    #[test]
    fn the_command_travels_as_nul_terminated_arguments_in_base64url() {
        use base64::Engine;
        let argv: Vec<std::ffi::OsString> = ["sh", "-c", "echo 'a b' \"$X\"\n", "ünï", ""]
            .iter()
            .map(Into::into)
            .collect();
        let enc = encode_command(&argv);
        // Nothing the kernel's command-line parser would split or unquote.
        assert!(enc
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&enc)
            .unwrap();
        let mut want = Vec::new();
        for a in ["sh", "-c", "echo 'a b' \"$X\"\n", "ünï", ""] {
            want.extend_from_slice(a.as_bytes());
            want.push(0);
        }
        assert_eq!(raw, want);
        // Bytes that are not UTF-8 too.
        use std::os::unix::ffi::OsStringExt;
        let odd = encode_command(&[std::ffi::OsString::from_vec(vec![0xff, 0xfe])]);
        assert_eq!(odd, "__4A");
    }

    #[test]
    fn adds_params_the_user_did_not_set() {
        let mut c = String::from("console=ttyS0 lpj=1");
        assert!(add_param(&mut c, "tsc", Some("reliable")));
        assert!(!add_param(&mut c, "lpj", Some("5000000")));
        assert!(add_param(&mut c, "no_timer_check", None));
        assert!(!add_param(&mut c, "no_timer_check", None));
        assert_eq!(c, "console=ttyS0 lpj=1 tsc=reliable no_timer_check");
    }

    #[test]
    fn keeps_init_arguments_last() {
        let mut c = String::from("console=ttyS0 -- init-arg lpj=3");
        assert!(add_param(&mut c, "lpj", Some("5")));
        assert_eq!(c, "console=ttyS0 lpj=5 -- init-arg lpj=3");
    }

    #[test]
    fn list_params_are_merged() {
        let mut c = String::from("console=ttyS0 clearcpuid=avx,sse4_2 -- arg");
        let added = merge_list_param(&mut c, "clearcpuid", "popcnt,avx,x2apic");
        assert_eq!(added, vec!["popcnt", "x2apic"]);
        assert_eq!(
            c,
            "console=ttyS0 clearcpuid=avx,sse4_2,popcnt,x2apic -- arg"
        );
        let mut c = String::from("console=ttyS0");
        assert_eq!(merge_list_param(&mut c, "clearcpuid", "a,b").len(), 2);
        assert_eq!(c, "console=ttyS0 clearcpuid=a,b");
        let mut c = String::from("clearcpuid=");
        merge_list_param(&mut c, "clearcpuid", "a");
        assert_eq!(c, "clearcpuid=a");
    }

    #[test]
    fn append_repeats_and_keeps_init_arguments_last() {
        let mut c = String::from("console=ttyS0 -- x");
        append(&mut c, "virtio_mmio.device=4K@0xd0000000:5");
        append(&mut c, "virtio_mmio.device=4K@0xd0001000:6");
        assert_eq!(
            c,
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 virtio_mmio.device=4K@0xd0001000:6 -- x"
        );
    }

    #[test]
    fn empty_command_line() {
        let mut c = String::new();
        add_param(&mut c, "a", Some("b"));
        assert_eq!(c, "a=b");
        assert!(has_key("x=1 y", "y"));
        assert!(!has_key("xy=1", "x"));
    }
}

#[cfg(test)]
mod guest_cmdline_tests {
    use super::*;
    use crate::config::{DiskConfig, EmulatedHost, SerialOutput, VmConfig, DEFAULT_CMDLINE};

    fn config(disks: Vec<DiskConfig>, cmdline: &str) -> VmConfig {
        VmConfig {
            cmdline: cmdline.into(),
            serial: SerialOutput::None,
            emulated_host: EmulatedHost::Off,
            disks,
            ..VmConfig::with_defaults("k".into(), None)
        }
    }

    #[test]
    fn quiet_is_added_for_a_command_on_the_default_command_line_only() {
        let mut cfg = VmConfig::with_defaults("k".into(), None);
        quiet_for_command(&mut cfg);
        assert_eq!(cfg.cmdline, DEFAULT_CMDLINE, "no command: the log stays");
        cfg.command = Some(vec!["true".into()]);
        quiet_for_command(&mut cfg);
        assert_eq!(cfg.cmdline, format!("{DEFAULT_CMDLINE} quiet"));
        quiet_for_command(&mut cfg);
        assert_eq!(cfg.cmdline, format!("{DEFAULT_CMDLINE} quiet"), "once");
        cfg.cmdline = "console=ttyS0 loglevel=8".into();
        quiet_for_command(&mut cfg);
        assert_eq!(cfg.cmdline, "console=ttyS0 loglevel=8", "the user's own");
    }

    fn disk(root: bool, read_only: bool) -> DiskConfig {
        DiskConfig {
            path: "d".into(),
            read_only,
            id: None,
            root,
            partuuid: None,
            format: Default::default(),
        }
    }

    #[test]
    fn init_gets_its_ports_and_the_command_or_a_shell() {
        let base = config(vec![], "console=ttyS0");
        let c = guest_cmdline(&base, false);
        assert!(
            c.contains("VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"),
            "{c}"
        );
        assert!(!c.contains("VMM_CMD") && !c.contains("VMM_SHELL"), "{c}");
        let shell = VmConfig {
            shell: true,
            ..base.clone()
        };
        assert!(guest_cmdline(&shell, false).ends_with(" VMM_SHELL=1"));
        // A command wins over the shell.
        let cmd = VmConfig {
            command: Some(vec!["true".into()]),
            shell: true,
            ..base
        };
        let c = guest_cmdline(&cmd, false);
        assert!(c.ends_with(" VMM_CMD=dHJ1ZQA"), "{c}");
        assert!(!c.contains("VMM_SHELL") && !c.contains("VMM_DHCP"), "{c}");
        let dhcp = VmConfig { dhcp: true, ..cmd };
        let c = guest_cmdline(&dhcp, false);
        assert!(c.ends_with(" VMM_CMD=dHJ1ZQA VMM_DHCP=1"), "{c}");
    }

    #[test]
    fn disks_are_announced_in_order_with_the_root_disk() {
        let c = guest_cmdline(
            &config(vec![disk(false, true), disk(true, false)], DEFAULT_CMDLINE),
            false,
        );
        assert_eq!(
            c,
            "console=ttyS0 reboot=k panic=-1 virtio_mmio.device=4K@0xd0000000:5 \
             virtio_mmio.device=4K@0xd0001000:6 root=/dev/vdb rw VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"
        );
        let c = guest_cmdline(&config(vec![disk(true, true)], "console=ttyS0"), false);
        assert!(
            c.ends_with("root=/dev/vda ro VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"),
            "{c}"
        );
    }

    #[test]
    fn the_users_root_and_mode_win() {
        let c = guest_cmdline(
            &config(vec![disk(true, false)], "root=/dev/sda1 console=ttyS0"),
            false,
        );
        assert!(
            c.contains("root=/dev/sda1") && !c.contains("/dev/vda") && !c.contains(" rw"),
            "{c}"
        );
        let c = guest_cmdline(&config(vec![disk(true, false)], "ro"), false);
        assert_eq!(
            c,
            "ro virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"
        );
    }

    #[test]
    fn a_root_partition_is_named_by_its_uuid() {
        let mut d = disk(true, true);
        d.partuuid = Some("0eaa91a0-01".into());
        let c = guest_cmdline(&config(vec![d], "console=ttyS0"), false);
        assert!(c.contains("root=PARTUUID=0eaa91a0-01 ro"), "{c}");
    }

    #[test]
    fn init_is_told_the_boot_timer_port_unless_the_user_set_it() {
        let c = guest_cmdline(&config(vec![], "console=ttyS0"), false);
        assert_eq!(c, "console=ttyS0 VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444");
        let c = guest_cmdline(&config(vec![], "VMM_BOOT_TIMER=0x0"), false);
        assert_eq!(c, "VMM_BOOT_TIMER=0x0 VMM_EXIT_PORT=0x444");
    }

    #[test]
    fn emulated_host_parameters_come_after_the_devices() {
        let c = guest_cmdline(&config(vec![disk(true, false)], "console=ttyS0"), true);
        let dev = c.find("virtio_mmio.device").unwrap();
        let clear = c.find("clearcpuid=").unwrap();
        assert!(dev < clear, "{c}");
        assert!(c.contains("no_fpu_drop_fwait"), "{c}");
    }

    #[test]
    fn network_interfaces_follow_the_disks() {
        let mut c = config(vec![disk(true, false)], "console=ttyS0");
        c.nets = vec!["tap=tap0".parse().unwrap(), "tap=tap1".parse().unwrap()];
        let line = guest_cmdline(&c, false);
        assert_eq!(
            line,
            "console=ttyS0 virtio_mmio.device=4K@0xd0000000:5 root=/dev/vda rw \
             virtio_mmio.device=4K@0xd0001000:6 virtio_mmio.device=4K@0xd0002000:7 \
             VMM_BOOT_TIMER=0x440 VMM_EXIT_PORT=0x444"
        );
    }
}
