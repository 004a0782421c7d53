use super::overrides::default_guest_initrd;
use super::*;
use crate::config::{BootProtocol, DiskConfig, EmulatedHost, SerialOutput};
use std::path::PathBuf;

#[test]
fn a_root_disk_boots_the_default_kernel_without_its_initramfs() {
    let d = || PathBuf::from("/guest/initramfs.cpio");
    let given = PathBuf::from("/mine.cpio");
    assert_eq!(default_guest_initrd(None, false, d()), Some(d()));
    assert_eq!(default_guest_initrd(None, true, d()), None);
    assert_eq!(
        default_guest_initrd(Some(given.clone()), true, d()),
        Some(given.clone())
    );
    assert_eq!(
        default_guest_initrd(Some(given.clone()), false, d()),
        Some(given)
    );
}

/// A readable regular file to stand for kernels and disk images (only
/// their existence is checked here).
fn some_file() -> String {
    std::env::current_exe().unwrap().display().to_string()
}

fn load_str(text: &str, overrides: Overrides) -> Result<VmConfig> {
    let file = Path::new("test.json");
    parse(file, text)?.resolve(file, overrides)
}

/// The error for `text`: its location and reason.
fn fails(text: &str) -> (String, String) {
    match load_str(text, Overrides::default()) {
        Err(ConfigError::File { at, reason, .. }) => (at, reason),
        other => panic!("expected a config file error for {text}, got {other:?}"),
    }
}

/// `boot-source` with an existing kernel, and `rest` after it.
fn with_kernel(rest: &str) -> String {
    let k = some_file();
    format!(r#"{{"boot-source": {{"kernel_image_path": "{k}"}}{rest}}}"#)
}

/// Firecracker's documented full layout (tests/framework/vm_config.json
/// in its repository), the paths replaced.
fn firecracker_doc(kernel: &str, disk: &str) -> String {
    format!(
        r#"{{
  "boot-source": {{
"kernel_image_path": "{kernel}",
"boot_args": "console=ttyS0 reboot=k panic=1 pci=off",
"initrd_path": null
  }},
  "drives": [
{{
  "drive_id": "rootfs",
  "partuuid": null,
  "is_root_device": true,
  "cache_type": "Unsafe",
  "is_read_only": false,
  "path_on_host": "{disk}",
  "io_engine": "Sync",
  "rate_limiter": null,
  "socket": null
}}
  ],
  "machine-config": {{
"vcpu_count": 2,
"mem_size_mib": 1024,
"smt": false,
"track_dirty_pages": false,
"huge_pages": "None"
  }},
  "cpu-config": null,
  "balloon": null,
  "network-interfaces": [
{{
  "iface_id": "eth0",
  "guest_mac": "AA:FC:00:00:00:01",
  "host_dev_name": "tap0"
}}
  ],
  "vsock": null,
  "logger": null,
  "metrics": null,
  "mmds-config": null,
  "entropy": null
}}"#
    )
}

#[test]
fn firecrackers_layout_resolves_to_the_vm_it_describes() {
    let f = some_file();
    let c = load_str(&firecracker_doc(&f, &f), Overrides::default()).unwrap();
    assert_eq!(c.kernel, PathBuf::from(&f));
    assert_eq!(c.initrd, None);
    assert_eq!(c.cmdline, "console=ttyS0 reboot=k panic=1 pci=off");
    assert_eq!((c.vcpus, c.mem_mib, c.smt), (2, 1024, false));
    assert_eq!(
        c.disks,
        vec![DiskConfig {
            path: f.clone().into(),
            read_only: false,
            id: Some("rootfs".into()),
            root: true,
            partuuid: None,
            format: Default::default(),
        }]
    );
    assert_eq!(c.nets.len(), 1);
    assert_eq!(c.nets[0].tap, "tap0");
    assert_eq!(c.nets[0].mac, Some([0xaa, 0xfc, 0, 0, 0, 1].into()));
    assert_eq!(c.serial, SerialOutput::Stdio);
    assert_eq!(c.emulated_host, EmulatedHost::Auto);
}

#[test]
fn defaults_and_extensions() {
    let c = load_str(&with_kernel(""), Overrides::default()).unwrap();
    assert_eq!((c.vcpus, c.mem_mib), (1, config::DEFAULT_MEM_MIB));
    assert_eq!(c.cmdline, config::DEFAULT_CMDLINE);
    assert!(c.disks.is_empty() && c.nets.is_empty());
    let c = load_str(
        &with_kernel(
            r#", "x-vmm": {"serial": "file:/tmp/console.log", "emulated_host": "off", "boot_protocol": "pvh"}"#,
        ),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(c.serial, SerialOutput::File("/tmp/console.log".into()));
    assert_eq!(c.emulated_host, EmulatedHost::Off);
    assert_eq!(c.boot_protocol, BootProtocol::Pvh);
    // x-vmm.seccomp: on unless false; --seccomp wins over it.
    assert!(c.seccomp, "filters are on by default");
    for (value, on) in [("false", false), ("true", true)] {
        let text = with_kernel(&format!(r#", "x-vmm": {{"seccomp": {value}}}"#));
        let c = load_str(&text, Overrides::default()).unwrap();
        assert_eq!(c.seccomp, on, "{value}");
        let c = load_str(
            &text,
            Overrides {
                seccomp: Some(!on),
                ..Overrides::default()
            },
        )
        .unwrap();
        assert_eq!(c.seccomp, !on, "--seccomp over {value}");
    }
}

#[test]
fn the_root_device_comes_first_and_may_name_a_partition() {
    let f = some_file();
    let text = with_kernel(&format!(
        r#", "drives": [
            {{"drive_id": "data", "path_on_host": "{f}", "is_root_device": false, "is_read_only": true}},
            {{"drive_id": "a-drive-id-longer-than-20-bytes", "path_on_host": "{f}", "is_root_device": true, "partuuid": "0eaa91a0-01"}}
        ]"#
    ));
    let c = load_str(&text, Overrides::default()).unwrap();
    assert!(c.disks[0].root && !c.disks[1].root);
    assert_eq!(c.disks[0].partuuid.as_deref(), Some("0eaa91a0-01"));
    assert_eq!(c.disks[0].id.as_deref(), Some("a-drive-id-longer-th"));
    assert!(c.disks[1].read_only);
}

#[test]
fn unknown_fields_are_named_by_path_with_the_likely_one() {
    let f = some_file();
    for (text, at, hint) in [
        (
            with_kernel(&format!(
                r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true}},
                                {{"drive_id": "b", "path_on_host": "{f}", "is_root_device": false, "is_readonly": true}}]"#
            )),
            "drives[1].is_readonly",
            "did you mean is_read_only?",
        ),
        (
            r#"{"boot_source": {}}"#.to_string(),
            "boot_source",
            "did you mean boot-source?",
        ),
        (
            with_kernel(r#", "machine-config": {"vcpus": 2, "mem_size_mib": 64}"#),
            "machine-config.vcpus",
            "did you mean vcpu_count?",
        ),
        (
            with_kernel(r#", "x-vmm": {"serail": "none"}"#),
            "x-vmm.serail",
            "did you mean serial?",
        ),
        (
            with_kernel(
                r#", "network-interfaces": [{"iface_id": "e", "host_dev_name": "t", "queues": 4}]"#,
            ),
            "network-interfaces[0].queues",
            "expected one of iface_id, host_dev_name, guest_mac",
        ),
    ] {
        let (got_at, reason) = fails(&text);
        assert_eq!(got_at, at, "{reason}");
        assert!(reason.starts_with("unknown field (line "), "{reason}");
        assert!(reason.contains(hint), "{at}: {reason}");
    }
}

#[test]
fn bad_json_is_reported_with_line_and_column() {
    let (at, reason) = fails("{\n  \"boot-source\": {\n    \"kernel_image_path\": \"x\",\n  }\n}");
    assert_eq!(at, "line 4, column 3");
    assert!(
        reason.starts_with("invalid JSON: trailing comma"),
        "{reason}"
    );
    let (at, reason) = fails("{\"drives\": [");
    assert_eq!(at, "line 1, column 12");
    assert!(reason.contains("EOF"), "{reason}");
    let (_, reason) = fails("");
    assert!(reason.starts_with("invalid JSON"), "{reason}");
}

#[test]
fn wrong_types_and_missing_fields_name_the_field() {
    for (text, at, says) in [
        (
            with_kernel(r#", "machine-config": {"vcpu_count": "2", "mem_size_mib": 64}"#),
            "machine-config.vcpu_count (line 1,",
            "invalid type: string \"2\", expected u32",
        ),
        (
            with_kernel(r#", "machine-config": {"vcpu_count": -1, "mem_size_mib": 64}"#),
            "machine-config.vcpu_count (line 1,",
            "invalid value: integer `-1`",
        ),
        (
            with_kernel(r#", "machine-config": {"vcpu_count": 1}"#),
            "machine-config (line 1,",
            "missing field `mem_size_mib`",
        ),
        (
            with_kernel(
                r#", "drives": [{"drive_id": "a", "path_on_host": "/x", "is_root_device": "yes"}]"#,
            ),
            "drives[0].is_root_device (line 1,",
            "expected a boolean",
        ),
        (
            with_kernel(r#", "drives": {"drive_id": "a"}"#),
            "drives (line 1,",
            "expected a sequence",
        ),
        (
            with_kernel(r#", "x-vmm": {"seccomp": "off"}"#),
            "x-vmm.seccomp (line 1,",
            "invalid type: string \"off\", expected a boolean",
        ),
        (
            r#""vm.json""#.to_string(),
            "line 1, column 9",
            "expected struct ConfigFile",
        ),
    ] {
        let (got_at, reason) = fails(&text);
        assert!(got_at.starts_with(at), "{got_at} for {text}");
        assert!(reason.contains(says), "{at}: {reason}");
    }
}

#[test]
fn impossible_values_each_have_their_message() {
    let f = some_file();
    let drive = |id: &str, root: bool| {
        format!(r#"{{"drive_id": "{id}", "path_on_host": "{f}", "is_root_device": {root}}}"#)
    };
    let iface = |id: &str, tap: &str, mac: &str| {
        format!(r#"{{"iface_id": "{id}", "host_dev_name": "{tap}"{mac}}}"#)
    };
    for (text, at, says) in [
        (
            with_kernel(r#", "machine-config": {"vcpu_count": 0, "mem_size_mib": 64}"#),
            "machine-config.vcpu_count",
            "0: must be at least 1",
        ),
        (
            with_kernel(r#", "machine-config": {"vcpu_count": 255, "mem_size_mib": 64}"#),
            "machine-config.vcpu_count",
            "at most",
        ),
        (
            with_kernel(
                r#", "machine-config": {"vcpu_count": 3, "mem_size_mib": 64, "smt": true}"#,
            ),
            "machine-config.vcpu_count",
            "1 or even",
        ),
        (
            with_kernel(r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 0}"#),
            "machine-config.mem_size_mib",
            "0: must be at least 1 MiB",
        ),
        (
            with_kernel(
                r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "cpu_template": "T2"}"#,
            ),
            "machine-config.cpu_template",
            "'T2' is not supported",
        ),
        (
            with_kernel(
                r#", "machine-config": {"vcpu_count": 1, "mem_size_mib": 64, "huge_pages": "2M"}"#,
            ),
            "machine-config.huge_pages",
            "'2M' is not supported",
        ),
        (
            with_kernel(&format!(
                r#", "drives": [{}, {}]"#,
                drive("a", true),
                drive("b", true)
            )),
            "drives[1].is_root_device",
            "drives[0] is the root device already",
        ),
        (
            with_kernel(&format!(
                r#", "drives": [{}, {}]"#,
                drive("a", false),
                drive("a", false)
            )),
            "drives[1].drive_id",
            "'a' is also the id of drives[0]",
        ),
        (
            with_kernel(&format!(r#", "drives": [{}]"#, drive("", false))),
            "drives[0].drive_id",
            "must not be empty",
        ),
        (
            with_kernel(r#", "drives": [{"drive_id": "a", "is_root_device": false}]"#),
            "drives[0].path_on_host",
            "missing",
        ),
        (
            with_kernel(
                r#", "drives": [{"drive_id": "a", "path_on_host": "/nonexistent.img", "is_root_device": false}]"#,
            ),
            "drives[0].path_on_host",
            "'/nonexistent.img': No such file",
        ),
        (
            with_kernel(
                r#", "drives": [{"drive_id": "a", "path_on_host": "/", "is_root_device": false}]"#,
            ),
            "drives[0].path_on_host",
            "is a directory",
        ),
        (
            with_kernel(&format!(
                r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": false, "partuuid": "0eaa91a0-01"}}]"#
            )),
            "drives[0].partuuid",
            "only a root device",
        ),
        (
            with_kernel(&format!(
                r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true, "partuuid": "x y"}}]"#
            )),
            "drives[0].partuuid",
            "not a partition UUID",
        ),
        (
            with_kernel(&format!(
                r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true, "cache_type": "None"}}]"#
            )),
            "drives[0].cache_type",
            "use Unsafe or Writeback",
        ),
        (
            with_kernel(&format!(
                r#", "drives": [{{"drive_id": "a", "path_on_host": "{f}", "is_root_device": true, "rate_limiter": {{"bandwidth": {{"size": 1, "refill_time": 1}}}}}}]"#
            )),
            "drives[0].rate_limiter",
            "not supported",
        ),
        (
            with_kernel(
                r#", "drives": [{"drive_id": "a", "socket": "/run/vhost.sock", "is_root_device": true}]"#,
            ),
            "drives[0].socket",
            "vhost-user",
        ),
        (
            with_kernel(&format!(
                r#", "network-interfaces": [{}, {}]"#,
                iface("a", "t0", r#", "guest_mac": "02:00:00:00:00:01""#),
                iface("b", "t1", r#", "guest_mac": "02:00:00:00:00:01""#)
            )),
            "network-interfaces[1].guest_mac",
            "02:00:00:00:00:01 is also the MAC of network-interfaces[0]",
        ),
        (
            with_kernel(&format!(
                r#", "network-interfaces": [{}, {}]"#,
                iface("a", "t0", ""),
                iface("a", "t1", "")
            )),
            "network-interfaces[1].iface_id",
            "also the id",
        ),
        (
            with_kernel(&format!(
                r#", "network-interfaces": [{}, {}]"#,
                iface("a", "t0", ""),
                iface("b", "t0", "")
            )),
            "network-interfaces[1].host_dev_name",
            "each interface needs its own",
        ),
        (
            with_kernel(&format!(
                r#", "network-interfaces": [{}]"#,
                iface("a", "t0", r#", "guest_mac": "01:00:5e:00:00:01""#)
            )),
            "network-interfaces[0].guest_mac",
            "multicast",
        ),
        (
            with_kernel(&format!(
                r#", "network-interfaces": [{}]"#,
                iface("a", "t0", r#", "guest_mac": "AA:FC:00:00:01""#)
            )),
            "network-interfaces[0].guest_mac",
            "not a MAC address",
        ),
        (
            with_kernel(&format!(
                r#", "network-interfaces": [{}]"#,
                iface("a", "a-name-of-16-byt", "")
            )),
            "network-interfaces[0].host_dev_name",
            "at most 15",
        ),
        (
            with_kernel(
                r#", "network-interfaces": [{"iface_id": "a", "host_dev_name": "t", "rx_rate_limiter": {}}]"#,
            ),
            "network-interfaces[0].rx_rate_limiter",
            "not supported",
        ),
        (
            r#"{"boot-source": {"kernel_image_path": "/nonexistent/vmlinux"}}"#.to_string(),
            "boot-source.kernel_image_path",
            "No such file",
        ),
        (
            with_kernel("").replace("\"}}", "\", \"initrd_path\": \"/nonexistent/initrd\"}}"),
            "boot-source.initrd_path",
            "No such file",
        ),
        (
            r#"{"machine-config": {"vcpu_count": 1, "mem_size_mib": 64}}"#.to_string(),
            "boot-source",
            "missing",
        ),
        (
            with_kernel(r#", "x-vmm": {"serial": "tty"}"#),
            "x-vmm.serial",
            "'tty': expected stdio",
        ),
        (
            with_kernel(r#", "x-vmm": {"emulated_host": "maybe"}"#),
            "x-vmm.emulated_host",
            "expected auto, on or off",
        ),
    ] {
        let (got_at, reason) = fails(&text);
        assert_eq!(got_at, at, "{reason}\n{text}");
        assert!(reason.contains(says), "{at}: {reason}");
    }
}

#[test]
fn firecracker_sections_not_implemented_are_refused_by_name_unless_null() {
    for section in [
        "balloon",
        "cpu-config",
        "mmds-config",
        "vsock",
        "entropy",
        "pmem",
        "memory-hotplug",
    ] {
        let (at, reason) = fails(&with_kernel(&format!(r#", "{section}": {{"x": 1}}"#)));
        assert_eq!(at, section);
        assert!(reason.starts_with("not supported by this VMM"), "{reason}");
        load_str(
            &with_kernel(&format!(r#", "{section}": null"#)),
            Overrides::default(),
        )
        .unwrap();
    }
}

/// Firecracker's logger and metrics sections are read, by the same rules
/// as the API's `PUT /logger` and `PUT /metrics`.
#[test]
fn logger_and_metrics_sections_are_read() {
    let c = load_str(
        &with_kernel(r#", "metrics": {"metrics_path": "/tmp/m.json"}, "logger": {"level": "Warning", "show_level": true}"#),
        Overrides::default(),
    )
    .unwrap();
    assert_eq!(
        c.metrics.as_deref(),
        Some(std::path::Path::new("/tmp/m.json"))
    );
    for (text, at, says) in [
        (
            r#", "logger": {"level": "Loud"}"#,
            "logger.level",
            "'Loud' is not a level",
        ),
        (r#", "logger": {"x": 1}"#, "logger.x", "unknown field"),
        (
            r#", "metrics": {"metrics_path": "/m", "emit_id": true}"#,
            "metrics.emit_id",
            "not supported",
        ),
        (
            r#", "metrics": {}"#,
            "metrics",
            "missing field `metrics_path`",
        ),
    ] {
        let (got_at, reason) = fails(&with_kernel(text));
        assert!(got_at.starts_with(at), "{got_at} {reason}");
        assert!(reason.contains(says), "{at}: {reason}");
    }
}

#[test]
fn command_line_options_win_over_the_file() {
    let f = some_file();
    let text = firecracker_doc("/nonexistent/vmlinux", &f);
    let overrides = Overrides {
        kernel: Some(f.clone().into()),
        mem_mib: Some(256),
        vcpus: Some(1),
        cmdline: Some("console=ttyS0".into()),
        nets: Some(vec!["tap=other0".parse().unwrap()]),
        serial: Some(SerialOutput::None),
        ..Overrides::default()
    };
    let c = load_str(&text, overrides).unwrap();
    assert_eq!(
        c.kernel,
        PathBuf::from(&f),
        "the missing kernel was replaced"
    );
    assert_eq!((c.vcpus, c.mem_mib), (1, 256));
    assert_eq!(c.cmdline, "console=ttyS0");
    assert_eq!(c.serial, SerialOutput::None);
    assert_eq!(c.nets.len(), 1);
    assert_eq!(c.nets[0].tap, "other0");
    assert_eq!(c.disks.len(), 1, "the file's drives stay");
    // --disk replaces the file's drives, whose files then need not exist.
    let text = with_kernel(
        r#", "drives": [{"drive_id": "a", "path_on_host": "/nonexistent.img", "is_root_device": true}]"#,
    );
    let disk: DiskConfig = f.parse().unwrap();
    let c = load_str(
        &text,
        Overrides {
            disks: Some(vec![disk.clone()]),
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(c.disks, vec![disk]);
}

#[test]
fn the_printed_configuration_reads_back_the_same() {
    let f = some_file();
    let mut c = load_str(&firecracker_doc(&f, &f), Overrides::default()).unwrap();
    c.nets.push("tap=tap1".parse().unwrap());
    c.smt = true;
    let printed = ConfigFile::from_config(&c).to_json();
    let back = load_str(&printed, Overrides::default()).unwrap();
    // Generated MACs are written out, so they come back as given.
    let mut expected = c.clone();
    expected.nets[1].mac = Some(c.nets[1].mac_for(1));
    assert_eq!(back, expected, "{printed}");
}

#[test]
fn dhcp_is_printed_as_the_inits_parameter() {
    let f = some_file();
    let mut c = load_str(&firecracker_doc(&f, &f), Overrides::default()).unwrap();
    c.dhcp = true;
    let back = load_str(&ConfigFile::from_config(&c).to_json(), Overrides::default()).unwrap();
    assert!(!back.dhcp);
    assert_eq!(back.cmdline, format!("{} VMM_DHCP=1", c.cmdline));
}

#[test]
fn the_example_is_a_valid_file_for_the_default_guest() {
    let text = example().to_json();
    let parsed = parse(Path::new("example.json"), &text).unwrap();
    let boot = parsed.boot_source.unwrap();
    assert!(boot.kernel_image_path.ends_with("vmlinux"));
    assert!(boot.initrd_path.unwrap().ends_with("initramfs.cpio"));
    assert_eq!(boot.boot_args.as_deref(), Some(config::DEFAULT_CMDLINE));
}

#[test]
fn serde_messages_for_unknown_fields_are_understood() {
    assert_eq!(
        unknown_field("unknown field `is_readonly`, expected one of `drive_id`, `partuuid`"),
        Some((
            "is_readonly".into(),
            vec!["drive_id".into(), "partuuid".into()]
        ))
    );
    assert_eq!(
        unknown_field("unknown field `x`, expected `y`"),
        Some(("x".into(), vec!["y".into()]))
    );
    assert_eq!(
        unknown_field("unknown field `x`, there are no fields"),
        Some(("x".into(), vec![]))
    );
    assert_eq!(unknown_field("missing field `x`"), None);
    let c = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        closest("vcpus", &c(&["vcpu_count", "smt"])),
        Some("vcpu_count".into())
    );
    assert_eq!(closest("zzz", &c(&["vcpu_count", "smt"])), None);
}
