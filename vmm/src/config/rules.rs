//! The rules over all of a VM's disks and network interfaces, applied as
//! each is added, whichever front end adds it.

use super::{DiskConfig, NetConfig, VmConfig, MAX_VIRTIO_DEVICES};
use crate::config::ConfigError;
use crate::config::MacAddr;

type Result<T> = std::result::Result<T, ConfigError>;

/// A rule over all of a VM's disks and network interfaces, broken by one
/// being added (`VmConfig::add_disk`, `VmConfig::add_net`): the one place
/// these rules live, whichever front end (command line, config file) adds
/// the device; each front end names the field in its own terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRule {
    /// A second root disk.
    #[error("only one disk can be the root disk (disk {first} is)")]
    SecondRoot {
        /// The root disk already there.
        first: usize,
    },
    /// More devices than the virtio-mmio slots.
    #[error("at most {MAX_VIRTIO_DEVICES} disks and network interfaces together")]
    TooMany,
    /// Two interfaces with one MAC.
    #[error("network interfaces {first} and {second} have the same MAC address")]
    SameMac {
        /// The MAC.
        mac: MacAddr,
        /// The interface that has it already.
        first: usize,
        /// The one added.
        second: usize,
    },
    /// Two interfaces on one TAP.
    #[error("the TAP is given twice (interface {first} has it); each interface needs its own")]
    SameTap {
        /// The TAP.
        tap: String,
        /// The interface that has it already.
        first: usize,
    },
}

impl DeviceRule {
    /// The command-line option and value it concerns.
    fn option(&self, config: &VmConfig) -> (&'static str, String) {
        match self {
            DeviceRule::SecondRoot { .. } => ("disk", "root".into()),
            DeviceRule::TooMany => (
                "disk/net",
                (config.disks.len() + config.nets.len() + 1).to_string(),
            ),
            DeviceRule::SameMac { mac, .. } => ("net", format!("mac={mac}")),
            DeviceRule::SameTap { tap, .. } => ("net", format!("tap={tap}")),
        }
    }
}

impl VmConfig {
    fn has_room(&self) -> std::result::Result<(), DeviceRule> {
        if self.disks.len() + self.nets.len() >= MAX_VIRTIO_DEVICES {
            return Err(DeviceRule::TooMany);
        }
        Ok(())
    }

    /// Adds a disk, the guest's next (vda, vdb, ...), if the rules allow.
    pub fn add_disk(&mut self, disk: DiskConfig) -> std::result::Result<(), DeviceRule> {
        self.has_room()?;
        if disk.root {
            if let Some(first) = self.disks.iter().position(|d| d.root) {
                return Err(DeviceRule::SecondRoot { first });
            }
        }
        self.disks.push(disk);
        Ok(())
    }

    /// Adds a network interface, the guest's next (eth0, eth1, ...), if the
    /// rules allow.
    pub fn add_net(&mut self, net: NetConfig) -> std::result::Result<(), DeviceRule> {
        self.has_room()?;
        let second = self.nets.len();
        let mac = net.mac_for(second);
        if let Some(first) = (0..second).find(|&j| self.nets[j].mac_for(j) == mac) {
            return Err(DeviceRule::SameMac { mac, first, second });
        }
        if let Some(first) = self.nets.iter().position(|n| n.tap == net.tap) {
            return Err(DeviceRule::SameTap {
                tap: net.tap,
                first,
            });
        }
        self.nets.push(net);
        Ok(())
    }

    /// Replaces the disks and network interfaces, each added by the rules;
    /// a broken rule is a configuration error naming the option.
    pub fn set_devices(&mut self, disks: Vec<DiskConfig>, nets: Vec<NetConfig>) -> Result<()> {
        self.disks.clear();
        self.nets.clear();
        let rule = |c: &VmConfig, e: DeviceRule| {
            let (field, value) = e.option(c);
            ConfigError::value(field, value, e.to_string())
        };
        for d in disks {
            self.add_disk(d).map_err(|e| rule(self, e))?;
        }
        for n in nets {
            self.add_net(n).map_err(|e| rule(self, e))?;
        }
        Ok(())
    }
}
