//! Layer 3 for virtio-net: inside a network namespace the test makes (and
//! removes), with a TAP on the host side and dnsmasq serving DHCP on it, the
//! Linux guest gets its address through kernel IP autoconfiguration and
//! answers ping from the host side. The guest runs the idle init, which
//! makes no system call, so it stays up on an emulated KVM too: the replies
//! come from the guest kernel alone.

use prereq::Need;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use vmm_tests::{default_guest_or_skip, run_until, vmm_bin, TempDir};

const LIMIT: Duration = Duration::from_secs(900);
const HOST_IP: &str = "172.30.0.1";
const GUEST_IP: &str = "172.30.0.15";
const GUEST_MAC: &str = "02:76:6d:6d:00:0f";

/// A network namespace with a TAP `tap0` at HOST_IP/24, and dnsmasq on it;
/// all of it goes away on drop.
struct Netns {
    name: String,
    dnsmasq: Option<Child>,
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

impl Netns {
    fn new(tmp: &TempDir) -> Netns {
        let name = format!("vmmtest-{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        let mut ns = Netns {
            name,
            dnsmasq: None,
        };
        let n = ns.name.clone();
        ip(&["-n", &n, "link", "set", "lo", "up"]);
        ip(&["-n", &n, "tuntap", "add", "dev", "tap0", "mode", "tap"]);
        ip(&[
            "-n",
            &n,
            "addr",
            "add",
            &format!("{HOST_IP}/24"),
            "dev",
            "tap0",
        ]);
        ip(&["-n", &n, "link", "set", "tap0", "up"]);
        let leases = tmp.join("leases");
        ns.dnsmasq = Some(
            Command::new("ip")
                .args(["netns", "exec", &n, "dnsmasq", "--no-daemon"])
                .args(["--conf-file=/dev/null", "--user=root", "--group=root"])
                .args([
                    "--interface=tap0",
                    "--bind-interfaces",
                    "--except-interface=lo",
                ])
                .arg("--port=0")
                .arg("--dhcp-range=172.30.0.10,172.30.0.20,1h")
                .arg(format!("--dhcp-host={GUEST_MAC},{GUEST_IP}"))
                .arg(format!("--dhcp-leasefile={}", leases.display()))
                .arg("--pid-file=")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start dnsmasq"),
        );
        ns
    }

    fn exec(&self, cmd: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, cmd]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Root and the tools, or a skip (a failure in CI, where setup installs
/// them and runs as root).
fn net_test_possible() -> bool {
    prereq::require([
        Need::root(),
        Need::tool("ip", "iproute2"),
        Need::tool("dnsmasq", "dnsmasq-base"),
        Need::tool("ping", "iputils-ping"),
    ])
}

#[test]
fn the_guest_gets_a_dhcp_lease_and_answers_ping() {
    let Some(dir) = default_guest_or_skip(&["idle"]) else {
        return;
    };
    if !net_test_possible() {
        return;
    }
    let tmp = TempDir::new("net");
    let ns = Netns::new(&tmp);
    let metrics = tmp.join("metrics.json");
    let mut vm = ns.exec(vmm_bin().to_str().unwrap());
    vm.args(["run", "--metrics"])
        .arg(&metrics)
        .arg("--kernel")
        .arg(dir.join("vmlinux"))
        .arg("--initrd")
        .arg(dir.join("initramfs.cpio"))
        .args(["--net", &format!("tap=tap0,mac={GUEST_MAC}")])
        .args([
            "--cmdline",
            "console=ttyS0 reboot=k panic=-1 ip=dhcp rdinit=/idle",
        ]);
    // Once init runs, the host pings the guest, then stops the VMM with
    // SIGTERM, which ends the VM cleanly and writes the final metrics.
    let mut ping = None;
    let out = run_until(vm, LIMIT, |serial, pid| {
        if ping.is_some() || !serial.contains("Run /idle as init process") {
            return false;
        }
        ping = Some(
            ns.exec("ping")
                .args(["-c", "5", "-i", "0.5", "-W", "5", GUEST_IP])
                .output()
                .expect("run ping"),
        );
        // SAFETY: kill takes plain integers; the VMM is not reaped yet.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        false
    });
    assert!(
        !out.timed_out,
        "the guest did not reach init within {LIMIT:?}:\n{}\n{}",
        out.stdout, out.stderr
    );
    let lease = format!("IP-Config: Got DHCP answer from {HOST_IP}, my address is {GUEST_IP}");
    assert!(out.stdout.contains(&lease), "no lease:\n{}", out.stdout);
    assert!(
        !out.stdout.contains("NETDEV WATCHDOG"),
        "transmit queue stalled:\n{}",
        out.stdout
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    let ping = ping.expect("ping ran");
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("5 packets transmitted, 5 received"),
        "ping from the host side:\n{text}\nserial:\n{}",
        out.stdout
    );
    let leases = std::fs::read_to_string(tmp.join("leases")).unwrap_or_default();
    assert!(
        leases.contains(GUEST_MAC) && leases.contains(GUEST_IP),
        "dnsmasq leases: {leases}"
    );
    assert_eq!(out.code, Some(143), "{}", out.stderr);
    // The metrics document: what virtio-net moved, and each queue's
    // notifications and interrupts (receive queue first).
    let doc = vmm_tests::metrics_document(&metrics);
    let text = doc.to_string();
    assert_eq!(doc["state"], "ended", "{text}");
    let net = doc["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "virtio-net")
        .unwrap_or_else(|| panic!("no virtio-net device: {text}"));
    let counter = |name: &str| {
        net["counters"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name}: {text}"))
    };
    // DHCP's offer and ack and five echo requests in; discover, request
    // and five replies out.
    assert!(counter("rx_frames") >= 7, "{text}");
    assert!(counter("tx_frames") >= 7, "{text}");
    assert!(counter("rx_bytes") >= 7 * 60, "{text}");
    assert!(counter("tx_bytes") >= 7 * 60, "{text}");
    for name in ["rx_dropped", "tx_dropped", "tx_errors"] {
        assert_eq!(counter(name), 0, "{name}: {text}");
    }
    let queues = net["queues"].as_array().unwrap();
    assert_eq!(queues.len(), 2, "{text}");
    // Frames came in with interrupts; the driver notified the transmit
    // queue for what it sent.
    assert!(queues[0]["interrupts"].as_u64() > Some(0), "{text}");
    assert!(queues[1]["notifications"].as_u64() > Some(0), "{text}");
}
