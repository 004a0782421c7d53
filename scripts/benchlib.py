"""Helpers shared by the benchmark scripts (bench-boot.py, bench-net.py,
bench-guest.py)."""
import os
import re
import shutil
import subprocess
import sys
import threading


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
        sys.exit(f"bench: {args.vmm} not built: cargo build --release -p vmm")
    d = guest_dir(args.guest_dir)
    for f in guest_files:
        path = os.path.join(d, f)
        if not os.path.isfile(path):
            sys.exit(f"bench: {path} missing: run guest-kernels/build.sh")
    return d


def vmm_guest_cmdline(vmm, run_args, wrap=()):
    """The command line this VMM gives the guest for `vmm run RUN_ARGS` (with
    its emulated-host additions), read from its log, so that QEMU's guest
    gets exactly the same. The VM is killed as soon as the line is read.
    `wrap`: a command prefix (ip netns exec NAME) for a VM with a TAP."""
    p = subprocess.Popen([*wrap, vmm, "run", "--serial", "none", *run_args],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    line = b""
    for line in p.stderr:
        if b"vCPU(s), command line: " in line:
            break
    p.kill()
    p.wait()
    m = re.search(rb"vCPU\(s\), command line: (.*)$", line.strip())
    if not m:
        sys.exit("bench: could not read the guest command line from the vmm log")
    return m.group(1).decode()


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
