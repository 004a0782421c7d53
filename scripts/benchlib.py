"""Helpers shared by the benchmark scripts (bench-boot.py, bench-net.py,
bench-guest.py)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def guest_dir(arg):
    """The default guest's directory: --guest-dir, $VMM_GUEST_DIR, or the
    `current` link in the guest cache."""
    if arg:
        return arg
    if os.environ.get("VMM_GUEST_DIR"):
        return os.environ["VMM_GUEST_DIR"]
    root = os.environ.get("VMM_GUEST_CACHE", os.path.expanduser("~/.cache/vmm-guest"))
    return os.path.join(root, "current")


def require(args, tools, guest_files=("vmlinux", "initramfs.cpio")):
    """Exits saying what is missing: one of `tools`, the vmm binary
    (args.vmm), one of the default guest's `guest_files`. Returns the
    guest's directory."""
    for tool in tools:
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (scripts/setup.sh installs it)")
    if not os.path.exists(args.vmm):
        sys.exit(f"bench: {args.vmm} not built: cargo build --release -p vmm-cli")
    d = guest_dir(args.guest_dir)
    for f in guest_files:
        path = os.path.join(d, f)
        if not os.path.isfile(path):
            sys.exit(f"bench: {path} missing: run guest-kernels/build.sh")
    return d


def read_metrics(path):
    """The document `vmm run --metrics PATH` wrote (README, "Metrics"), or
    None while there is none to read yet."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def device_lines(doc):
    """One line per virtio device of a metrics document: its counters and,
    per queue, the driver's notifications and the interrupts raised."""
    lines = []
    for d in (doc or {}).get("devices", []):
        counters = ", ".join(f"{k} {v}" for k, v in d["counters"].items())
        queues = "; ".join(f"queue {i}: {q['notifications']} notifications, "
                           f"{q['interrupts']} interrupts" for i, q in enumerate(d["queues"]))
        lines.append(f"{d['kind']} {d['id']}: {counters}; {queues}")
    return lines


def vmm_guest_cmdline(vmm, run_args, wrap=()):
    """The command line this VMM gives the guest for `vmm run RUN_ARGS` (with
    its emulated-host additions), from its metrics document, so that QEMU's
    guest gets exactly the same. The VM is killed as soon as it is read.
    `wrap`: a command prefix (ip netns exec NAME) for a VM with a TAP."""
    with tempfile.TemporaryDirectory(prefix="vmm-bench-") as tmp:
        path = os.path.join(tmp, "metrics.json")
        p = subprocess.Popen([*wrap, vmm, "run", "--serial", "none", "--metrics", path,
                              *run_args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        doc = None
        while p.poll() is None and doc is None:
            doc = read_metrics(path)
            time.sleep(0.05)
        doc = doc or read_metrics(path)
        p.kill()
        _, err = p.communicate()
    if not doc or "kernel_cmdline" not in doc:
        sys.exit("bench: vmm wrote no metrics document with the guest command line:\n"
                 + err.decode(errors="replace")[-2000:])
    return doc["kernel_cmdline"]


def wait_for_marker(p, marker, limit):
    """Waits up to `limit` seconds for `marker` on the stdout of process `p`
    (a pipe); True if it came. The pipe goes on being drained afterwards, so
    a guest that keeps printing never blocks on a full pipe."""
    found = threading.Event()
    buf = bytearray()

    def reader():
        while True:
            chunk = p.stdout.read1(4096)
            if not chunk:
                return
            if not found.is_set():
                buf.extend(chunk)
                if marker in buf:
                    found.set()

    threading.Thread(target=reader, daemon=True).start()
    return found.wait(limit)


def sh(*cmd, check=True):
    return subprocess.run(cmd, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)


class Netns:
    """A network namespace with a TAP `tap0` at HOST_IP/24, for one boot;
    close() removes it (and the TAP with it)."""

    def __init__(self, name, host_ip):
        self.name = name
        sh("ip", "netns", "del", name, check=False)
        sh("ip", "netns", "add", name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        sh("ip", "-n", name, "tuntap", "add", "dev", "tap0", "mode", "tap")
        sh("ip", "-n", name, "addr", "add", f"{host_ip}/24", "dev", "tap0")
        sh("ip", "-n", name, "link", "set", "tap0", "up")

    def cmd(self, *args):
        return ["ip", "netns", "exec", self.name, *args]

    def close(self):
        sh("ip", "netns", "del", self.name, check=False)
