#!/usr/bin/env python3
"""Boot benchmark: this VMM against QEMU microvm, same kernel, initramfs,
command line, memory and vCPUs, measured the same way in one run.

For each VMM it prints:
  setup      host-side setup: process start (right after exec) to the first
             KVM_RUN ioctl, both stamped by an LD_PRELOAD shim
             (scripts/bench/kvm_run_stamp.c; same method for both, no
             tracing; median of --setup-runs)
  rss        the VMM's resident memory, guest RAM excluded (every mapping
             as large as guest RAM or larger is left out), read from
             /proc/PID/smaps when the guest reaches init
  to-init    process start to the guest's "Run /init as init process" line
             on the serial console (median of --boot-runs)
and the ratio vmm/qemu of each (below 1 means this VMM is better).

Usage: scripts/bench-boot.py [--vmm PATH] [--guest-dir DIR] [--boot-runs N]
                             [--setup-runs N] [--memory MIB] [--vcpus N]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MARKER = b"Run /init as init process"


def final_cmdline(vmm, kernel, initrd, mem):
    """The command line this VMM gives the guest, for QEMU to get the same."""
    return benchlib.vmm_guest_cmdline(vmm, ["--kernel", kernel, "--initrd", initrd,
                                            "--memory", str(mem)])


def commands(args, kernel, initrd, cmdline):
    mem, cpus = str(args.memory), str(args.vcpus)
    vmm = [args.vmm, "run", "--kernel", kernel, "--initrd", initrd, "--memory", mem,
           "--vcpus", cpus, "--cmdline", cmdline, "--emulated-host", "off",
           "--log-level", "warn"]
    qemu = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host", "-m", mem,
            "-smp", cpus, "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot"]
    return {"vmm": vmm, "qemu": qemu}


def build_shim(tmp):
    """Compiles the LD_PRELOAD shim that stamps the first KVM_RUN."""
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench", "kvm_run_stamp.c")
    out = os.path.join(tmp, "kvm_run_stamp.so")
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", out, src, "-ldl"], check=True)
    return out


def setup_time(cmd, shim, tmp):
    """Seconds from the VMM's process start (just after exec) to its first
    KVM_RUN ioctl, both stamped by the LD_PRELOAD shim (no tracing; the same
    for every VMM)."""
    stamp = os.path.join(tmp, "stamp")
    if os.path.exists(stamp):
        os.unlink(stamp)
    env = dict(os.environ, LD_PRELOAD=shim, KVM_RUN_STAMP=stamp)
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    result = None
    deadline = t0 + 60
    while time.monotonic() < deadline and p.poll() is None:
        try:
            with open(stamp) as f:
                text = f.read().strip()
            if text:
                start, first_run = (float(x) for x in text.split())
                result = first_run - start
                break
        except OSError:
            pass
        time.sleep(0.005)
    p.kill()
    p.wait()
    return result


def rss_without_guest_ram(pid, guest_kib):
    total = 0
    size = 0
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                if line.startswith("Size:"):
                    size = int(line.split()[1])
                elif line.startswith("Rss:") and size < guest_kib:
                    total += int(line.split()[1])
    except OSError:
        return None
    return total


def boot_to_init(cmd, guest_kib, limit):
    """(seconds to the marker, RSS in KiB then) for one boot."""
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    ok = benchlib.wait_for_marker(p, MARKER, limit)
    elapsed = time.monotonic() - t0
    rss = rss_without_guest_ram(p.pid, guest_kib) if ok else None
    p.kill()
    p.wait()
    return (elapsed if ok else None), rss


def fmt(v, unit):
    if v is None:
        return "n/a"
    if unit == "ms":
        return f"{v * 1e3:.2f} ms"
    if unit == "s":
        return f"{v:.1f} s"
    return f"{v / 1024:.2f} MiB"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vmm", default=os.path.join(here, "..", "target", "release", "vmm"))
    ap.add_argument("--guest-dir")
    ap.add_argument("--boot-runs", type=int, default=1)
    ap.add_argument("--setup-runs", type=int, default=10)
    ap.add_argument("--memory", type=int, default=128, help="MiB")
    ap.add_argument("--vcpus", type=int, default=1)
    ap.add_argument("--limit", type=float, default=900, help="seconds per boot")
    args = ap.parse_args()

    g = benchlib.require(args, ("gcc", "qemu-system-x86_64"))
    kernel, initrd = os.path.join(g, "vmlinux"), os.path.join(g, "initramfs.cpio")

    cmdline = final_cmdline(args.vmm, kernel, initrd, args.memory)
    cmds = commands(args, kernel, initrd, cmdline)
    names = list(cmds)
    print(f"kernel {kernel}\ninitrd {initrd}\nmemory {args.memory} MiB, {args.vcpus} vCPU(s)")
    print(f"command line: {cmdline}\n", flush=True)

    setup = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        shim = build_shim(tmp)
        for i in range(args.setup_runs):  # interleaved
            for n in names:
                t = setup_time(cmds[n], shim, tmp)
                if t is not None:
                    setup[n].append(t)
    print(f"setup runs done ({args.setup_runs} each)", flush=True)

    boots = {n: [] for n in names}
    rss = {n: [] for n in names}
    for i in range(args.boot_runs):  # interleaved, one VM at a time
        for n in names:
            t, r = boot_to_init(cmds[n], args.memory * 1024, args.limit)
            print(f"  boot {i + 1}/{args.boot_runs} {n}: to-init {fmt(t, 's')}, rss {fmt(r, 'mib')}", flush=True)
            if t is not None:
                boots[n].append(t)
            if r is not None:
                rss[n].append(r)

    def med(xs):
        return statistics.median(xs) if xs else None

    rows = [("setup (start to first KVM_RUN)", setup, "ms"),
            ("RSS without guest RAM, at init", rss, "mib"),
            ("time to 'Run /init'", boots, "s")]
    print()
    print(f"{'metric':34} {'vmm':>12} {'qemu microvm':>14} {'vmm/qemu':>9}")
    for label, data, unit in rows:
        a, b = med(data["vmm"]), med(data["qemu"])
        ratio = f"{a / b:.2f}" if a is not None and b else "n/a"
        print(f"{label:34} {fmt(a, unit):>12} {fmt(b, unit):>14} {ratio:>9}")


if __name__ == "__main__":
    main()
