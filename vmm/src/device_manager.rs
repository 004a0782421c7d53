//! Builds the legacy devices, places them on the buses and wires their
//! interrupts to KVM (irqfd). Devices never touch KVM themselves.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::{Arc, Mutex};

use arch::layout::{
    BOOT_TIMER_PORT, CMOS_PORT, CMOS_PORT_LEN, I8042_PORT, I8042_PORT_LEN, KBD_IRQ, POST_PORT,
    SERIAL_IRQ, SERIAL_PORT, SERIAL_PORT_LEN, VIRTIO_MMIO_SIZE,
};
use devices::boot_timer::{BootTimer, Timeline, WatchedOutput};
use devices::cmos::Cmos;
use devices::i8042::I8042;
use devices::serial::{EventFdTrigger, SerialDevice};
use devices::sink::Sink;
use devices::Bus;
use kvm_ioctls::VmFd;
use vmm_sys_util::eventfd::EventFd;

use crate::config::ConfigError;
use crate::config::{DiskConfig, NetConfig, SerialOutput};
use crate::vm::{kvm_call, KvmCall};

type Result<T> = std::result::Result<T, DeviceError>;
use devices::virtio::block::Block;
use devices::virtio::mmio::{MmioTransport, QUEUE_NOTIFY_OFFSET};
use devices::virtio::net::tap::Tap;
use devices::virtio::net::Net;
use devices::virtio::{Interrupt, VirtioDevice};
use kvm_ioctls::IoEventAddress;
use vm_memory::GuestMemoryMmap;

/// The legacy devices of a VM and the eventfds the event loop watches.
pub struct LegacyDevices {
    /// The PIO bus with every device on it.
    pub pio: Bus,
    /// The MMIO bus (virtio devices go here).
    pub mmio: Bus,
    /// The serial port, shared with the stdin handler.
    pub serial: Arc<Mutex<SerialDevice>>,
    /// Signalled when the serial receive FIFO has room again.
    pub serial_input_ready: EventFd,
    /// Signalled by the i8042 when the guest resets the CPU.
    pub reset_evt: EventFd,
    /// The i8042, for Ctrl-Alt-Del.
    pub i8042: Arc<Mutex<I8042>>,
    /// The CMOS, for snapshots.
    pub cmos: Arc<Mutex<Cmos>>,
}

/// Failures wiring devices to the VM.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An eventfd (interrupt, notification, reset) could not be made.
    #[error("cannot create the {0} eventfd")]
    EventFd(&'static str, #[source] std::io::Error),
    /// Two devices claim the same addresses.
    #[error("cannot place a device on the bus")]
    Bus(#[from] devices::bus::Error),
    /// A KVM call failed (an irqfd or ioeventfd).
    #[error(transparent)]
    Kvm(#[from] KvmCall),
    /// A TAP device cannot be opened or created.
    #[error("TAP '{name}': {reason}")]
    Tap {
        /// The TAP name.
        name: String,
        /// What went wrong and what to do about it.
        reason: String,
    },
    /// The serial console's output cannot be opened.
    #[error(transparent)]
    Serial(#[from] ConfigError),
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> DeviceError {
    move |source| DeviceError::EventFd(what, source)
}

/// Opens the serial console's output.
pub fn serial_writer(output: &SerialOutput) -> Result<Box<dyn Write + Send>> {
    Ok(match output {
        SerialOutput::Stdio => Box::new(std::io::stdout()),
        SerialOutput::None => Box::new(std::io::sink()),
        SerialOutput::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| {
                    ConfigError::value("serial", output, format!("cannot open for writing: {e}"))
                })?,
        ),
    })
}

/// Creates the legacy devices and the boot timer, places them on new PIO
/// and MMIO buses and registers their IRQs with KVM. The serial console's
/// `output` is watched for the boot phases it shows (`timeline`).
pub fn create(
    vm: &VmFd,
    output: Box<dyn Write + Send>,
    timeline: &Arc<Timeline>,
) -> Result<LegacyDevices> {
    let mut pio = Bus::new("pio");
    let mut mmio = Bus::new("mmio");
    let output = Box::new(WatchedOutput::new(output, timeline.clone()));

    let irq = EventFdTrigger::new().map_err(io_err("serial IRQ"))?;
    vm.register_irqfd(&irq.0, SERIAL_IRQ)
        .map_err(kvm_call("KVM_IRQFD (serial)"))?;
    let serial_input_ready = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
        .map_err(io_err("serial input-ready"))?;
    let serial = Arc::new(Mutex::new(SerialDevice::new(
        irq,
        serial_input_ready
            .try_clone()
            .map_err(io_err("i8042 reset (a copy)"))?,
        output,
    )));
    pio.insert(serial.clone(), SERIAL_PORT, SERIAL_PORT_LEN)?;

    let reset_evt =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("i8042 reset"))?;
    let kbd_irq = EventFdTrigger::new().map_err(io_err("keyboard IRQ"))?;
    vm.register_irqfd(&kbd_irq.0, KBD_IRQ)
        .map_err(kvm_call("KVM_IRQFD (i8042)"))?;
    let i8042 = I8042::new(
        EventFdTrigger(
            reset_evt
                .try_clone()
                .map_err(io_err("i8042 reset (a copy)"))?,
        ),
        kbd_irq,
    );
    let i8042 = Arc::new(Mutex::new(i8042));
    pio.insert(i8042.clone(), I8042_PORT, I8042_PORT_LEN)?;
    let cmos = Arc::new(Mutex::new(Cmos::new()));
    pio.insert(cmos.clone(), CMOS_PORT, CMOS_PORT_LEN)?;
    pio.insert(Arc::new(Mutex::new(Sink::new(0))), POST_PORT, 1)?;
    let boot_timer = Arc::new(Mutex::new(BootTimer::new(timeline.clone())));
    pio.insert(boot_timer.clone(), u64::from(BOOT_TIMER_PORT), 1)?;
    mmio.insert(
        boot_timer,
        arch::layout::BOOT_TIMER_START,
        arch::layout::BOOT_TIMER_SIZE,
    )?;

    Ok(LegacyDevices {
        pio,
        mmio,
        serial,
        serial_input_ready,
        reset_evt,
        i8042,
        cmos,
    })
}

/// A virtio device on the MMIO bus and its queue-notification eventfds.
pub struct VirtioSlot {
    /// The device behind its transport (also on the MMIO bus).
    pub transport: Arc<Mutex<MmioTransport>>,
    /// One eventfd per queue, signalled by KVM (ioeventfd) when the guest
    /// writes the queue's index to QueueNotify.
    pub queue_evts: Vec<EventFd>,
}

/// A virtio-mmio slot: a register window in the MMIO gap and an IRQ line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioSlot(usize);

impl MmioSlot {
    /// Guest physical address of its window.
    pub fn base(self) -> u64 {
        arch::layout::VIRTIO_MMIO_START + self.0 as u64 * VIRTIO_MMIO_SIZE
    }

    /// Its IRQ.
    pub fn irq(self) -> u32 {
        arch::layout::VIRTIO_IRQ_START + self.0 as u32
    }

    /// The kernel parameter's value announcing it to a guest without ACPI
    /// or device tree (CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES):
    /// `virtio_mmio.device=` this.
    pub fn param(self) -> String {
        format!("4K@{:#x}:{}", self.base(), self.irq())
    }
}

/// A VM's virtio devices in the slots they get: the one place the order is
/// decided (disks first, as vda, vdb..., then network interfaces), read by
/// the guest command line (`cmdline::guest_cmdline`) and by the VM's
/// construction alike.
pub enum Slotted<'a> {
    /// Disk number `.0` (the guest's vd<a + .0>).
    Disk(usize, &'a DiskConfig),
    /// Network interface number `.0` (the guest's eth<.0>).
    Net(usize, &'a NetConfig),
}

/// The slots of `config`'s devices, handed out one after another (as
/// vmm-reference's `MmioConfig::next`).
pub fn virtio_layout(config: &crate::config::VmConfig) -> Vec<(MmioSlot, Slotted<'_>)> {
    let disks = config
        .disks
        .iter()
        .enumerate()
        .map(|(i, d)| Slotted::Disk(i, d));
    let nets = config
        .nets
        .iter()
        .enumerate()
        .map(|(i, n)| Slotted::Net(i, n));
    disks
        .chain(nets)
        .enumerate()
        .map(|(slot, device)| (MmioSlot(slot), device))
        .collect()
}

/// Puts `device` in virtio-mmio `slot`: registers its interrupt as an
/// irqfd, its queue notifications as ioeventfds, and places it on `mmio`.
pub fn add_virtio(
    vm: &VmFd,
    mmio: &mut Bus,
    mem: &GuestMemoryMmap,
    slot: MmioSlot,
    device: Box<dyn VirtioDevice>,
) -> Result<VirtioSlot> {
    let base = slot.base();
    let irq_evt =
        EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).map_err(io_err("virtio interrupt"))?;
    vm.register_irqfd(&irq_evt, slot.irq())
        .map_err(kvm_call("KVM_IRQFD (virtio)"))?;
    let queues = device.queue_max_sizes().len();
    let transport = Arc::new(Mutex::new(MmioTransport::new(
        device,
        mem.clone(),
        Arc::new(Interrupt::new(irq_evt)),
    )));
    let mut queue_evts = Vec::with_capacity(queues);
    for q in 0..queues {
        let evt = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(io_err("virtio queue notification"))?;
        vm.register_ioevent(
            &evt,
            &IoEventAddress::Mmio(base + QUEUE_NOTIFY_OFFSET),
            q as u32,
        )
        .map_err(kvm_call("KVM_IOEVENTFD (virtio)"))?;
        queue_evts.push(evt);
    }
    mmio.insert(transport.clone(), base, VIRTIO_MMIO_SIZE)?;
    Ok(VirtioSlot {
        transport,
        queue_evts,
    })
}

/// Opens a disk image and makes the virtio-blk device for slot `index`.
/// Returns the device and the disk's size in bytes.
pub fn block_device(
    disk: &DiskConfig,
    file: crate::config::Disk,
    size: u64,
    index: usize,
) -> Box<dyn VirtioDevice> {
    let id = disk
        .id
        .clone()
        .unwrap_or_else(|| format!("vmm-disk{index}"));
    Box::new(Block::new(file, size, disk.read_only, &id))
}

/// Opens (or creates) the TAP of a network interface, with advice for the
/// usual failures.
pub fn open_tap(net: &NetConfig) -> Result<Tap> {
    let tap = Tap::open(&net.tap).map_err(|e| {
        let advice = match e.raw_os_error() {
            Some(libc::EPERM) | Some(libc::EACCES) => format!(
                "permission denied: create it for this user first (ip tuntap add dev {} mode tap user $(id -un)) or run with CAP_NET_ADMIN",
                net.tap
            ),
            Some(libc::EBUSY) => "in use: another process has it open".to_string(),
            Some(libc::EINVAL) => "exists but is not a TAP device (a TUN, or another kind of interface)".to_string(),
            Some(libc::ENOENT) | Some(libc::ENODEV) => {
                "/dev/net/tun is missing: load the tun module (modprobe tun)".to_string()
            }
            _ => e.to_string(),
        };
        DeviceError::Tap {
            name: net.tap.clone(),
            reason: advice,
        }
    })?;
    if tap.created() {
        log::info!(
            "created TAP {} (it goes away when the VM ends); the host side has no address until you give it one",
            tap.name()
        );
    }
    Ok(tap)
}

/// The virtio-net device for interface `index` on its opened TAP.
pub fn net_device(net: &NetConfig, index: usize, tap: Tap) -> Result<Box<dyn VirtioDevice>> {
    let net = Net::new(Box::new(tap), net.mac_for(index))
        .map_err(|e| DeviceError::EventFd("virtio-net TX completion timer", e))?;
    Ok(Box::new(net))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::VmConfig;

    #[test]
    fn disks_take_the_first_slots_and_interfaces_the_next() {
        let mut c = VmConfig::with_defaults("k".into(), None);
        c.disks = vec!["/a".parse().unwrap(), "/b,root".parse().unwrap()];
        c.nets = vec!["tap=t0".parse().unwrap()];
        let got: Vec<(String, String)> = virtio_layout(&c)
            .into_iter()
            .map(|(slot, d)| {
                let what = match d {
                    Slotted::Disk(i, d) => format!("disk {i} {}", d.path.display()),
                    Slotted::Net(i, n) => format!("net {i} {}", n.tap),
                };
                (slot.param(), what)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("4K@0xd0000000:5", "disk 0 /a"),
                ("4K@0xd0001000:6", "disk 1 /b"),
                ("4K@0xd0002000:7", "net 0 t0"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
    }
}
