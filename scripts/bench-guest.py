#!/usr/bin/env python3
"""Disk and network measured from the guest's user space: this VMM against
QEMU microvm, same kernel, initramfs, command line, memory, disk image and
TAP, boots interleaved, in one run.

In each boot the default guest's init runs the project's guestbench
(guest-kernels/guestbench.c) as the VM's command, which times with the
guest's own clock:
  seq-write-1m, seq-read-1m   1 MiB O_DIRECT writes (then fdatasync) and
                              reads over the first --disk-mib MiB of a raw
                              virtio-blk disk (MiB/s)
  rand-write-4k, rand-read-4k --ops random 4 KiB O_DIRECT writes (then
                              fdatasync) and reads (IOPS)
  tcp-send, tcp-receive       --net-mib MiB over TCP to and from a peer on
                              the host side of the TAP (MiB/s)
  tcp-rtt                     --rtt one-byte round trips with that peer,
                              TCP_NODELAY (microseconds each)
and prints the medians over --runs with the ratio vmm/qemu (for the rates
above 1 is better, for the round trip below 1).

Guest user space must be able to make system calls, so this needs VT-x or
AMD-V (not kvm_pvm). Where the figures mean most: the nested AMD-V host
under icount, where the clock is virtual and the same from run to run:

  scripts/nested.sh --icount --memory 2G --timeout 3000 -- scripts/bench-guest.py

Needs root (a network namespace and a TAP per boot) and qemu-system-x86_64.
The disk image is a file in --work (default /tmp), made anew for each boot.

With --exits, also what each boot cost the host kernel, from KVM's
tracepoints (perf stat over the VMM's process): exits, exits to the VMM's
user space, MMIO accesses, interrupt lines set and interrupts injected.

Usage: scripts/bench-guest.py [--vmm PATH] [--guest-dir DIR] [--runs N]
                              [--disk-mib N] [--ops N] [--net-mib N] [--rtt N]
                              [--only disk|net] [--exits]
"""
import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

HOST_IP = "172.30.0.1"
GUEST_IP = "172.30.0.2"
MAC = "02:76:6d:6d:00:02"
METRICS = [
    # key, label, unit, higher is better
    ("seq-write-1m", "disk sequential write, 1 MiB", "MiB/s", True),
    ("seq-read-1m", "disk sequential read, 1 MiB", "MiB/s", True),
    ("rand-write-4k", "disk random write, 4 KiB", "IOPS", True),
    ("rand-read-4k", "disk random read, 4 KiB", "IOPS", True),
    ("tcp-send", "TCP guest to host", "MiB/s", True),
    ("tcp-receive", "TCP host to guest", "MiB/s", True),
    ("tcp-rtt", "TCP round trip, 1 byte", "us", False),
]


def metrics(args):
    """The METRICS this run measures (--only)."""
    if args.only is None:
        return METRICS
    return [m for m in METRICS if m[0].startswith("tcp-") == (args.only == "net")]


def peer(address, net_mib):
    """The host side of guestbench net, run in the boot's namespace (this
    script with --peer): 5201 takes everything and closes, 5202 sends
    net_mib MiB and closes, 5203 echoes byte by byte."""
    block = os.urandom(1 << 20)

    def sink(c):
        while c.recv(1 << 16):
            pass

    def source(c):
        for _ in range(net_mib):
            c.sendall(block)
        c.shutdown(socket.SHUT_WR)
        while c.recv(1 << 16):
            pass

    def echo(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            b = c.recv(1)
            if not b:
                return
            c.sendall(b)

    def serve(port, handler):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address, port))
        s.listen(4)
        while True:
            c, _ = s.accept()
            with c:
                handler(c)

    threads = [threading.Thread(target=serve, args=a, daemon=True)
               for a in ((5201, sink), (5202, source), (5203, echo))]
    for t in threads:
        t.start()
    print("peer ready", flush=True)
    threads[0].join()


def guest_command(args):
    steps = []
    if args.only in (None, "disk"):
        steps.append(f"guestbench disk /dev/vda {args.disk_mib} {args.ops}")
    if args.only in (None, "net"):
        steps.append(f"guestbench net {HOST_IP} {args.net_mib} {args.rtt}")
    return ["sh", "-c",
            "echo clocksource $(cat /sys/devices/system/clocksource/clocksource0/"
            "current_clocksource); " + " && ".join(steps)]


# KVM tracepoints counted over a whole boot with --exits: what each VMM
# makes the guest and the host kernel do.
EXIT_EVENTS = {"exits": "kvm:kvm_exit", "to user space": "kvm:kvm_userspace_exit",
               "mmio": "kvm:kvm_mmio", "irq lines set": "kvm:kvm_set_irq",
               "interrupts injected": "kvm:kvm_inj_virq"}


def count_exits(cmd):
    """`cmd` under perf stat, counting EXIT_EVENTS in it and its children."""
    return ["perf", "stat", "-x", ",", "-e", ",".join(EXIT_EVENTS.values()), "--", *cmd]


def parse_exits(stderr):
    counts = {}
    for line in stderr.splitlines():
        f = line.split(",")
        for key, ev in EXIT_EVENTS.items():
            if len(f) > 2 and f[2] == ev and f[0].isdigit():
                counts[key] = int(f[0])
    return counts


def commands(args, kernel, initrd, image):
    mem = str(args.memory)
    base = (f"console=ttyS0 reboot=k panic=-1 "
            f"ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off")
    run_args = ["--kernel", kernel, "--initrd", initrd, "--memory", mem, "--cmdline", base,
                "--emulated-host", "off", "--disk", image, "--net", f"tap=tap0,mac={MAC}",
                "--", *guest_command(args)]
    # The guest command line this VMM makes (the command in VMM_CMD, the
    # init's ports, its virtio-mmio devices), less the devices, which QEMU
    # microvm adds itself for its own.
    with open(image, "wb") as f:
        f.truncate(args.disk_mib << 20)
    ns = benchlib.Netns(f"vmmbench-{os.getpid()}", HOST_IP)
    try:
        cmdline = benchlib.vmm_guest_cmdline(args.vmm, run_args, ns.cmd())
    finally:
        ns.close()
    qemu_cmdline = " ".join(w for w in cmdline.split() if not w.startswith("virtio_mmio.device="))
    vmm = [args.vmm, "run", *run_args]
    qemu = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host", "-m", mem,
            "-smp", "1", "-kernel", kernel, "-initrd", initrd, "-append", qemu_cmdline,
            "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot",
            "-drive", f"id=d0,file={image},format=raw,if=none",
            "-device", "virtio-blk-device,drive=d0",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]
    return cmdline, {"vmm": vmm, "qemu": qemu}


def one_run(name, cmd, args, image):
    with open(image, "wb") as f:
        f.truncate(args.disk_mib << 20)
    ns = benchlib.Netns(f"vmmbench-{os.getpid()}", HOST_IP)
    peer_proc = subprocess.Popen(ns.cmd(sys.executable, os.path.abspath(__file__), "--peer",
                                        "--net-mib", str(args.net_mib)),
                                 stdout=subprocess.PIPE, text=True)
    try:
        if peer_proc.stdout.readline().strip() != "peer ready":
            print(f"  {name}: the TCP peer did not start", flush=True)
            return None
        metrics_file = os.path.join(args.work, f"vmm-bench-{os.getpid()}-metrics.json")
        if name == "vmm":
            cmd = [*cmd[:2], "--metrics", metrics_file, *cmd[2:]]
        if args.exits:
            cmd = count_exits(cmd)
        try:
            out = subprocess.run(ns.cmd(*cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=args.limit)
        except subprocess.TimeoutExpired:
            print(f"  {name}: no result in {args.limit} s", flush=True)
            return None
        text = out.stdout.decode(errors="replace")
        result = {m.group(1): float(m.group(2))
                  for m in re.finditer(r"^guestbench: (\S+) ([\d.]+) ", text, re.M)}
        clock = re.search(r"^clocksource (\S+)", text, re.M)
        result["clocksource"] = clock.group(1) if clock else "?"
        # This VMM's device counters at the VM's end (frames, requests,
        # notifications and interrupts per queue), from its metrics file.
        result["devices"] = []
        if name == "vmm":
            result["devices"] = benchlib.device_lines(benchlib.read_metrics(metrics_file))
            if os.path.exists(metrics_file):
                os.unlink(metrics_file)
        result["exits"] = parse_exits(out.stderr.decode(errors="replace"))
        missing = [k for k, *_ in metrics(args) if k not in result]
        if missing:
            tail = "\n    ".join(text.splitlines()[-8:] + out.stderr.decode(errors="replace")
                                 .splitlines()[-4:])
            print(f"  {name}: exit {out.returncode}, no {', '.join(missing)}:\n    {tail}",
                  flush=True)
            return None
        return result
    finally:
        peer_proc.kill()
        peer_proc.wait()
        ns.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vmm", default=os.path.join(here, "..", "target", "release", "vmm"))
    ap.add_argument("--guest-dir")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--disk-mib", type=int, default=64)
    ap.add_argument("--ops", type=int, default=2000, help="random 4 KiB reads, and writes")
    ap.add_argument("--net-mib", type=int, default=32)
    ap.add_argument("--rtt", type=int, default=2000, help="TCP round trips")
    ap.add_argument("--memory", type=int, default=256, help="MiB")
    ap.add_argument("--limit", type=float, default=900, help="seconds per boot")
    ap.add_argument("--work", default="/tmp", help="where the disk image is made")
    ap.add_argument("--only", choices=["disk", "net"], help="only the disk or the network")
    ap.add_argument("--exits", action="store_true",
                    help="count KVM exits, MMIO accesses and interrupts over each boot "
                         "(perf and KVM's tracepoints)")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.peer:
        return peer(HOST_IP, args.net_mib)

    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces, TAP devices)")
    if os.path.exists("/sys/module/kvm_pvm"):
        sys.exit("bench: /dev/kvm is kvm_pvm, where guest user space cannot make system "
                 "calls; run it on VT-x/AMD-V or the nested host (see --help)")
    d = benchlib.require(args, ("ip", "qemu-system-x86_64") + (("perf",) if args.exits else ()))
    kernel, initrd = os.path.join(d, "vmlinux"), os.path.join(d, "initramfs.cpio")
    if args.exits and not os.path.exists("/sys/kernel/tracing/events/kvm"):
        # perf reads the tracepoints from tracefs (a bare host, such as the
        # nested one, may not have it mounted).
        benchlib.sh("mount", "-t", "tracefs", "nodev", "/sys/kernel/tracing", check=False)
    image = os.path.join(args.work, f"vmm-bench-guest-{os.getpid()}.img")

    cmdline, cmds = commands(args, kernel, initrd, image)
    print(f"guest: {kernel}\ncommand line: {cmdline}\n", flush=True)
    results = {"vmm": [], "qemu": []}
    try:
        for run in range(args.runs):
            for name in ("vmm", "qemu"):
                r = one_run(name, cmds[name], args, image)
                if r:
                    results[name].append(r)
                    print(f"run {run + 1}/{args.runs} {name} ({r['clocksource']}): "
                          + ", ".join(f"{k} {r[k]:g}" for k, *_ in metrics(args)), flush=True)
                    if r["exits"]:
                        print("  KVM over the boot: " + ", ".join(
                            f"{k} {v}" for k, v in r["exits"].items()), flush=True)
                    for line in r["devices"]:
                        print(f"  {line}", flush=True)
    finally:
        if os.path.exists(image):
            os.unlink(image)

    def med(name, key):
        vals = [r[key] for r in results[name]]
        return statistics.median(vals) if vals else None

    print(f"\n{'metric':32} {'unit':>6} {'vmm':>10} {'qemu microvm':>13} {'vmm/qemu':>9}"
          f"  (n = {len(results['vmm'])}, {len(results['qemu'])})")
    for key, label, unit, higher in metrics(args):
        a, b = med("vmm", key), med("qemu", key)
        fa = "n/a" if a is None else f"{a:.1f}"
        fb = "n/a" if b is None else f"{b:.1f}"
        ratio = f"{a / b:.2f}" if a is not None and b else "n/a"
        better = "higher is better" if higher else "lower is better"
        print(f"{label:32} {unit:>6} {fa:>10} {fb:>13} {ratio:>9}  {better}")
    if not results["vmm"] or not results["qemu"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
