#!/usr/bin/env python3
"""The API's costs and the VMM's own memory, printed as figures.

  scripts/bench-api.py [--vmm PATH] [--baseline PATH] [--runs N] [--greeting]

Three measurements, each the median of --runs (default 20):

- exec to API: `firecracker --api-sock S` (the vmm binary under that name)
  from its exec to its first answer to GET /, in wall ms and in the
  process's own CPU ms at that moment (utime + stime from /proc; the
  Firecracker specification's bound is 8 CPU ms), and its idle RSS then,
  before any configuration.
- `vmm run` at its guest's first instruction, for --vmm and, when given,
  --baseline (the VMM of another build, in the same run): RSS, USS outside
  guest RAM (private clean plus private dirty of every mapping but the
  guest's memory, from /proc/PID/smaps) and the setup time (the `vm_built`
  boot phase). The guest is a 16 MiB tiny one that spins, so the VMM's own
  memory is all there is to see.
- with --greeting (on a host where the default guest's user space runs,
  e.g. the nested AMD-V host under --icount): the time from InstanceStart
  to init's greeting through the API, against `vmm run` from its exec to
  the same greeting, on the same kernel and initramfs.
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402



class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(self.unix_path)


def call(sock, method, path, body=None):
    c = Unix(sock)
    c.request(method, path, body=None if body is None else json.dumps(body),
              headers={"Content-Type": "application/json"} if body is not None else {})
    r = c.getresponse()
    text = r.read().decode()
    c.close()
    return r.status, text


def cpu_ms(pid):
    """The CPU time all the process's threads have had, in ms (schedstat's
    nanoseconds: /proc's stat counts whole clock ticks)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e6


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def uss_outside(pid, guest_bytes):
    """KiB private to the process outside guest RAM: all of it (private
    clean plus private dirty of every other mapping), and its own memory
    alone (anonymous mappings, and what it wrote of its files' mappings),
    without the pages of its binary and libraries that only it happens to
    have mapped (shared with every other VMM on a host that runs many)."""
    maps = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                lo, hi = head[0].split("-")
                name = " ".join(head[5:])
                maps.append({"size": int(hi, 16) - int(lo, 16),
                             "anon": not name or name.startswith("["), "clean": 0, "dirty": 0})
            elif head[0] == "Private_Clean:":
                maps[-1]["clean"] += int(head[1])
            elif head[0] == "Private_Dirty:":
                maps[-1]["dirty"] += int(head[1])
    others = [m for m in maps if m["size"] != guest_bytes]
    all_private = sum(m["clean"] + m["dirty"] for m in others)
    own = sum(m["dirty"] + (m["clean"] if m["anon"] else 0) for m in others)
    return all_private, own


def firecracker_link(vmm, work):
    link = os.path.join(work, "firecracker")
    os.symlink(os.path.abspath(vmm), link)
    return link


def exec_to_api(vmm, runs, work):
    fc = firecracker_link(vmm, work)
    walls, cpus, rss = [], [], []
    for i in range(runs):
        sock = os.path.join(work, f"api{i}.sock")
        t0 = time.monotonic()
        p = subprocess.Popen([fc, "--api-sock", sock, "--level", "Warning"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        while True:
            try:
                status, _ = call(sock, "GET", "/")
                if status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() - t0 > 10:
                sys.exit("bench-api: the API never answered")
        walls.append((time.monotonic() - t0) * 1e3)
        cpus.append(cpu_ms(p.pid))
        time.sleep(0.05)
        rss.append(status_kib(p.pid, "VmRSS"))
        p.terminate()
        p.wait()
    return statistics.median(walls), statistics.median(cpus), statistics.median(rss), min(cpus), max(cpus)


def tiny_spin(work):
    addr = 0x200000
    code = bytes([0xEB, 0xFE])
    f = bytearray(b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8))
    f += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, addr, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    f += struct.pack("<IIQQQQQQ", 1, 5, 0x1000, addr, addr, len(code), len(code), 0x1000)
    f += bytes(0x1000 - len(f)) + code
    path = os.path.join(work, "spin.elf")
    with open(path, "wb") as out:
        out.write(bytes(f))
    return path


def at_init(vmm, runs, work):
    kernel = tiny_spin(work)
    rss, uss, own, setup = [], [], [], []
    for i in range(runs):
        metrics = os.path.join(work, f"m{i}.json")
        p = subprocess.Popen([vmm, "run", "--kernel", kernel, "--memory", "16M", "--cmdline", "",
                              "--serial", "none", "--metrics", metrics],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        doc = None
        while time.monotonic() < deadline:
            doc = benchlib.read_metrics(metrics)
            if doc and "first_kvm_run" in doc.get("boot_phases_ms", {}):
                break
            time.sleep(0.005)
        time.sleep(0.1)
        rss.append(status_kib(p.pid, "VmRSS"))
        a, o = uss_outside(p.pid, 16 << 20)
        uss.append(a)
        own.append(o)
        setup.append(doc["boot_phases_ms"]["vm_built"] if doc else float("nan"))
        p.terminate()
        p.wait()
    return (statistics.median(rss), statistics.median(uss), statistics.median(own),
            statistics.median(setup))


def read_until(p, marker):
    """Reads `p`'s stdout until `marker` has come (or it ends)."""
    out = b""
    while marker not in out:
        chunk = p.stdout.read1(4096)
        if not chunk:
            return
        out += chunk


def greeting(vmm, guest, runs, work):
    """InstanceStart to the greeting through the API, and `vmm run` from its
    exec to the greeting; medians, ms."""
    fc = firecracker_link(vmm, work) if not os.path.exists(os.path.join(work, "firecracker")) \
        else os.path.join(work, "firecracker")
    marker = b"Hello from the guest"
    api, run = [], []
    kernel, initrd = os.path.join(guest, "vmlinux"), os.path.join(guest, "initramfs.cpio")
    args = "console=ttyS0 reboot=k panic=-1 quiet"
    for i in range(runs):
        t0 = time.monotonic()
        p = subprocess.Popen([vmm, "run", "--kernel", kernel, "--initrd", initrd, "--cmdline", args,
                              "--", "true"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL)
        read_until(p, marker)
        run.append((time.monotonic() - t0) * 1e3)
        p.wait()
        sock = os.path.join(work, f"g{i}.sock")
        p = subprocess.Popen([fc, "--api-sock", sock, "--level", "Warning"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        while True:
            try:
                if call(sock, "GET", "/")[0] == 200:
                    break
            except OSError:
                time.sleep(0.001)
        call(sock, "PUT", "/boot-source", {"kernel_image_path": kernel, "initrd_path": initrd,
                                            "boot_args": args + " VMM_CMD=true"})
        t0 = time.monotonic()
        call(sock, "PUT", "/actions", {"action_type": "InstanceStart"})
        read_until(p, marker)
        api.append((time.monotonic() - t0) * 1e3)
        p.terminate()
        p.wait()
    return statistics.median(api), statistics.median(run)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vmm", default="target/release/vmm")
    ap.add_argument("--baseline", help="another build's vmm binary, measured beside --vmm")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--greeting", action="store_true")
    ap.add_argument("--guest-dir")
    args = ap.parse_args()
    if args.runs < 1:
        sys.exit("bench-api: --runs takes 1 or more")
    guest = benchlib.require(args, [])
    with tempfile.TemporaryDirectory(prefix="vmm-bench-api.") as work:
        wall, cpu, rss, cpu_lo, cpu_hi = exec_to_api(args.vmm, args.runs, work)
        print(f"exec to API answering (firecracker --api-sock, median of {args.runs}): "
              f"{wall:.2f} ms wall, {cpu:.1f} CPU ms (min {cpu_lo:.1f}, max {cpu_hi:.1f}; "
              f"bound 8), idle RSS {rss / 1024:.2f} MiB")
        for name, binary in [("this build", args.vmm), ("baseline", args.baseline)]:
            if not binary:
                continue
            rss, uss, own, setup = at_init(binary, args.runs, work)
            print(f"vmm run at the guest's first instruction ({name}, {binary}): "
                  f"RSS {rss / 1024:.2f} MiB; outside guest RAM: USS {uss / 1024:.2f} MiB, of which "
                  f"its own memory (anonymous and written) {own / 1024:.2f} MiB; "
                  f"setup (vm_built) {setup:.2f} ms")
        if args.greeting:
            api, run = greeting(args.vmm, guest, args.runs, work)
            print(f"to init's greeting (median of {args.runs}): through the API, InstanceStart "
                  f"to greeting {api:.1f} ms; vmm run, exec to greeting {run:.1f} ms; "
                  f"ratio {api / run:.3f}")


main()
