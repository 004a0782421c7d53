//! `vmm run --metrics FILE`: what the VM is and what it did, as one JSON
//! document for programs (the bench scripts read it, not the log). Written
//! when the VM is built (`"state": "running"`) and again when it ends
//! (`"state": "ended"`), each time replacing the file's content:
//!
//! ```json
//! {
//!   "state": "ended",
//!   "kernel_cmdline": "console=ttyS0 ... virtio_mmio.device=4K@0xd0000000:5 ...",
//!   "memory_mib": 128,
//!   "vcpus": 1,
//!   "boot_phases_ms": {"vm_built": 41.2, "first_kvm_run": 41.9, ...},
//!   "devices": [
//!     {"kind": "virtio-blk", "id": "vmm-disk0",
//!      "counters": {"requests_ok": 12, "bytes_read": 49152, ...},
//!      "queues": [{"notifications": 12, "interrupts": 12}]}
//!   ],
//!   "end": {"exit_code": 0, "description": "the guest reset the CPU ..."}
//! }
//! ```
//!
//! `boot_phases_ms` holds the phases reached so far, in milliseconds since
//! the VMM started; `end` is null while the VM runs. The file is opened
//! (created or truncated) before the VM runs, so that an unwritable path
//! is a configuration error (exit 3) before any guest code runs.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

use devices::boot_timer::{Phase, Timeline};
use devices::virtio::mmio::{DeviceMetrics, MmioTransport};
use serde_json::{json, Map, Value};

use crate::config::ConfigError;

type Result<T> = std::result::Result<T, ConfigError>;
use crate::vcpu::VmEnd;

/// The metrics file of a VM and what stays the same in it.
pub struct MetricsFile {
    /// The process exit code an end becomes, as the front end maps it
    /// (`end.exit_code`; null without one).
    pub end_code: Option<fn(&VmEnd) -> i32>,
    file: File,
    fixed: Map<String, Value>,
    timeline: Arc<Timeline>,
    /// Phases of a restore (ms since the VMM started), before the
    /// timeline's own.
    extra: Vec<(String, f64)>,
}

/// One device's entry.
fn device(m: &DeviceMetrics) -> Value {
    let counters: Map<String, Value> = m
        .counters
        .iter()
        .map(|(name, v)| (name.to_string(), json!(v)))
        .collect();
    let queues: Vec<Value> = m
        .queues
        .iter()
        .map(|(n, irq)| json!({"notifications": n, "interrupts": irq}))
        .collect();
    json!({"kind": m.kind, "id": m.id, "counters": counters, "queues": queues})
}

impl MetricsFile {
    /// Creates (or truncates) `path`, before anything else of the VM is
    /// made; `describe` says what the VM is once it is known.
    pub fn create(path: &Path, timeline: Arc<Timeline>) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(|e| {
                ConfigError::value(
                    "metrics",
                    path.display(),
                    format!("cannot open for writing: {e}"),
                )
            })?;
        Ok(MetricsFile {
            end_code: None,
            file,
            fixed: Map::new(),
            timeline,
            extra: Vec::new(),
        })
    }

    /// The VM's command line, memory and vCPU count.
    pub fn describe(&mut self, cmdline: &str, memory_mib: u64, vcpus: u32) {
        self.fixed.insert("kernel_cmdline".into(), json!(cmdline));
        self.fixed.insert("memory_mib".into(), json!(memory_mib));
        self.fixed.insert("vcpus".into(), json!(vcpus));
    }

    /// Adds phase `name`, reached `ms` after the VMM started (a restore's:
    /// state_read, memory_mapped, devices_restored).
    pub fn add_phase(&mut self, name: &str, ms: f64) {
        self.extra.push((name.to_string(), ms));
    }

    /// The document for the devices behind `transports`, and the VM's end
    /// if it has ended.
    pub fn document(&self, transports: &[Arc<Mutex<MmioTransport>>], end: Option<&VmEnd>) -> Value {
        let mut doc = self.fixed.clone();
        let state = if end.is_some() { "ended" } else { "running" };
        doc.insert("state".into(), json!(state));
        let phases: Map<String, Value> = self
            .extra
            .iter()
            .map(|(name, ms)| (name.clone(), json!(ms)))
            .chain(
                self.timeline
                    .steps()
                    .into_iter()
                    .map(|(name, at)| (name.to_string(), json!(at.as_secs_f64() * 1000.0))),
            )
            .chain(Phase::ALL.iter().filter_map(|&p| {
                let at = self.timeline.get(p)?;
                Some((p.name().to_string(), json!(at.as_secs_f64() * 1000.0)))
            }))
            .collect();
        doc.insert("boot_phases_ms".into(), Value::Object(phases));
        let devices: Vec<Value> = transports
            .iter()
            .map(|t| device(&devices::bus::lock(t).metrics()))
            .collect();
        doc.insert("devices".into(), json!(devices));
        let code = self.end_code;
        let end =
            end.map(|e| json!({"exit_code": code.map(|f| f(e)), "description": e.describe()}));
        doc.insert("end".into(), end.unwrap_or(Value::Null));
        Value::Object(doc)
    }

    /// Replaces the file's content with the current document. A failure is
    /// logged: the VM goes on.
    pub fn write(&mut self, transports: &[Arc<Mutex<MmioTransport>>], end: Option<&VmEnd>) {
        let text = format!("{:#}\n", self.document(transports, end));
        let written = self
            .file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)))
            .and_then(|_| self.file.write_all(text.as_bytes()));
        if let Err(e) = written {
            log::warn!("cannot write the metrics file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::virtio::block::Block;
    use devices::virtio::Interrupt;
    use std::time::Instant;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    use vmm_sys_util::eventfd::EventFd;
    use vmm_sys_util::tempfile::TempFile;

    fn read(path: &Path) -> Value {
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_document_says_the_vm_its_devices_and_its_end() {
        let out = TempFile::new().unwrap();
        let disk = TempFile::new().unwrap();
        disk.as_file().set_len(4096).unwrap();
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let block = Block::new(disk.into_file(), 4096, true, "data0");
        let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
        let transports = vec![Arc::new(Mutex::new(MmioTransport::new(
            Box::new(block),
            mem,
            irq,
        )))];
        let timeline = Arc::new(Timeline::new(Instant::now()));
        timeline.mark(Phase::VmBuilt);
        let mut m = MetricsFile::create(out.as_path(), timeline).unwrap();
        m.describe("console=ttyS0", 64, 2);
        m.write(&transports, None);
        let doc = read(out.as_path());
        assert_eq!(doc["state"], "running");
        assert_eq!(doc["kernel_cmdline"], "console=ttyS0");
        assert_eq!(
            (doc["memory_mib"].as_u64(), doc["vcpus"].as_u64()),
            (Some(64), Some(2))
        );
        assert!(
            doc["boot_phases_ms"]["vm_built"].as_f64().is_some(),
            "{doc}"
        );
        assert!(doc["boot_phases_ms"].get("init_reached").is_none(), "{doc}");
        let dev = &doc["devices"][0];
        assert_eq!(
            (dev["kind"].as_str(), dev["id"].as_str()),
            (Some("virtio-blk"), Some("data0"))
        );
        assert_eq!(dev["counters"]["requests_ok"], 0);
        assert_eq!(dev["queues"][0]["notifications"], 0);
        assert!(doc["end"].is_null());
        // The end replaces the whole content (a shorter document leaves no
        // tail of the longer one behind).
        m.fixed
            .insert("kernel_cmdline".into(), json!("x".repeat(4000)));
        m.write(&transports, None);
        m.fixed.insert("kernel_cmdline".into(), json!("c"));
        m.write(&transports, Some(&VmEnd::CommandExited(42)));
        let doc = read(out.as_path());
        assert_eq!(doc["state"], "ended");
        // Without the front end's mapping, no exit code; with it, its code.
        assert!(doc["end"]["exit_code"].is_null(), "{doc}");
        m.end_code = Some(|e| match e {
            VmEnd::CommandExited(s) => i32::from(*s),
            _ => -1,
        });
        m.write(&transports, Some(&VmEnd::CommandExited(42)));
        let doc = read(out.as_path());
        assert_eq!(doc["end"]["exit_code"], 42);
        assert!(
            doc["end"]["description"].as_str().unwrap().contains("42"),
            "{doc}"
        );
    }

    #[test]
    fn an_unwritable_path_is_a_configuration_error() {
        let timeline = Arc::new(Timeline::new(Instant::now()));
        let e = MetricsFile::create(Path::new("/nonexistent-dir/m.json"), timeline)
            .err()
            .unwrap();
        assert!(matches!(e, crate::config::ConfigError::Value { .. }), "{e}");
        assert!(e.to_string().contains("metrics"), "{e}");
    }
}
