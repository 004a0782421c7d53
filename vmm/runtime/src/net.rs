//! A container's network namespace given to its VM, as Kata Containers
//! does it: the VMM joins the namespace that podman's netavark, a CNI
//! plugin or Kubernetes made, creates a TAP there, and redirects every
//! frame between the namespace's interface and the TAP both ways (tc's
//! ingress qdisc with a mirred redirect), so that the namespace's own
//! stack sees nothing and the guest is the container on that network. The
//! guest's interface gets the interface's MAC, address and default route
//! (the kernel's `ip=` parameter); DNS comes with the bound
//! /etc/resolv.conf.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::error::{Error, Result};

/// The TAP the runtime makes in the container's namespace.
pub const TAP: &str = "vmmtap0";

/// The namespace's interface as the guest takes it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its name in the namespace (eth0).
    pub name: String,
    /// Its MAC.
    pub mac: String,
    /// Its MTU.
    pub mtu: u32,
    /// Its IPv4 address and prefix length, if any.
    pub addr: Option<(String, u8)>,
    /// The default route's gateway, if any.
    pub gateway: Option<String>,
}

#[derive(Deserialize)]
struct IpLink {
    ifname: String,
    #[serde(default)]
    address: String,
    #[serde(default)]
    mtu: u32,
    #[serde(default)]
    link_type: String,
    #[serde(default)]
    addr_info: Vec<IpAddr>,
}

#[derive(Deserialize)]
struct IpAddr {
    family: String,
    local: String,
    prefixlen: u8,
}

#[derive(Deserialize)]
struct IpRoute {
    dst: String,
    #[serde(default)]
    gateway: Option<String>,
}

/// The interface to take from `ip -j addr`'s output: the first one that
/// is not loopback and has an IPv4 address (else the first not loopback).
pub fn pick(addr_json: &str, route_json: &str) -> Option<Interface> {
    let links: Vec<IpLink> = serde_json::from_str(addr_json).ok()?;
    let routes: Vec<IpRoute> = serde_json::from_str(route_json).unwrap_or_default();
    let candidates: Vec<&IpLink> = links
        .iter()
        .filter(|l| l.link_type != "loopback" && l.ifname != "lo" && l.ifname != TAP)
        .collect();
    let link = candidates
        .iter()
        .find(|l| l.addr_info.iter().any(|a| a.family == "inet"))
        .or(candidates.first())?;
    let addr = link
        .addr_info
        .iter()
        .find(|a| a.family == "inet")
        .map(|a| (a.local.clone(), a.prefixlen));
    let gateway = routes
        .iter()
        .find(|r| r.dst == "default")
        .and_then(|r| r.gateway.clone());
    Some(Interface {
        name: link.ifname.clone(),
        mac: link.address.clone(),
        mtu: if link.mtu == 0 { 1500 } else { link.mtu },
        addr,
        gateway,
    })
}

/// The netmask of a prefix length.
fn netmask(prefix: u8) -> String {
    let bits: u32 = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    std::net::Ipv4Addr::from(bits).to_string()
}

/// The guest kernel's `ip=` value for `iface` (client::gateway:netmask::
/// eth0:off), None when it has no IPv4 address.
pub fn kernel_ip_param(iface: &Interface) -> Option<String> {
    let (addr, prefix) = iface.addr.as_ref()?;
    Some(format!(
        "{addr}::{}:{}::eth0:off",
        iface.gateway.clone().unwrap_or_default(),
        netmask(*prefix)
    ))
}

fn run(args: &[&str]) -> Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Error::Vm {
            message: format!("cannot run {}: {e} (iproute2)", args[0]),
            code: crate::error::code::ERROR,
        })?;
    if !out.status.success() {
        return Err(Error::Vm {
            message: format!(
                "`{}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            code: vmm_cli::exit::code::NET,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Joins the network namespace at `path` (this thread, before any other
/// thread of the VMM exists: they inherit it), then makes the TAP and the
/// redirects. Returns the interface the guest takes over.
pub fn join(path: &Path) -> Result<Interface> {
    let ns = std::fs::File::open(path).map_err(|e| Error::File {
        what: "network namespace",
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    // SAFETY: setns on a descriptor this function owns; CLONE_NEWNET only
    // moves this thread into that network namespace.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::io(format!(
            "cannot join the network namespace {}",
            path.display()
        ))(std::io::Error::last_os_error()));
    }
    let iface = pick(
        &run(&["ip", "-j", "addr", "show"])?,
        &run(&["ip", "-j", "route", "show", "default"])?,
    )
    .ok_or_else(|| Error::Vm {
        message: format!(
            "the network namespace {} has no interface but loopback",
            path.display()
        ),
        code: vmm_cli::exit::code::NET,
    })?;
    let mtu = iface.mtu.to_string();
    run(&["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])?;
    run(&["ip", "link", "set", "dev", TAP, "mtu", &mtu, "up"])?;
    for (from, to) in [(iface.name.as_str(), TAP), (TAP, iface.name.as_str())] {
        run(&["tc", "qdisc", "add", "dev", from, "ingress"])?;
        run(&[
            "tc", "filter", "add", "dev", from, "parent", "ffff:", "protocol", "all", "u32",
            "match", "u8", "0", "0", "action", "mirred", "egress", "redirect", "dev", to,
        ])?;
    }
    log::info!(
        "network: {} ({}, {:?}, gateway {:?}) redirected to and from {TAP}",
        iface.name,
        iface.mac,
        iface.addr,
        iface.gateway
    );
    Ok(iface)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: &str = r#"[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP"],"mtu":65536,"link_type":"loopback","address":"00:00:00:00:00:00","addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8}]},
      {"ifindex":2,"link_index":7,"ifname":"eth0","flags":["BROADCAST","UP"],"mtu":1450,"link_type":"ether","address":"aa:bb:cc:00:11:22","addr_info":[{"family":"inet","local":"10.88.0.7","prefixlen":16,"broadcast":"10.88.255.255"}]}]"#;
    const ROUTE: &str = r#"[{"dst":"default","gateway":"10.88.0.1","dev":"eth0","flags":[]}]"#;

    #[test]
    fn the_namespaces_interface_gives_the_guest_its_mac_address_and_route() {
        let i = pick(ADDR, ROUTE).unwrap();
        assert_eq!(i.name, "eth0");
        assert_eq!(i.mac, "aa:bb:cc:00:11:22");
        assert_eq!(i.mtu, 1450);
        assert_eq!(
            kernel_ip_param(&i).unwrap(),
            "10.88.0.7::10.88.0.1:255.255.0.0::eth0:off"
        );
        // Loopback alone: nothing to take.
        let lo_only = r#"[{"ifname":"lo","link_type":"loopback","addr_info":[]}]"#;
        assert!(pick(lo_only, "[]").is_none());
        assert_eq!(netmask(24), "255.255.255.0");
        assert_eq!(netmask(0), "0.0.0.0");
        assert_eq!(netmask(32), "255.255.255.255");
    }
}
