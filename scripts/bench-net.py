#!/usr/bin/env python3
"""Network benchmark: this VMM's virtio-net against QEMU microvm's
virtio-net-device, both on a TAP, same kernel, initramfs (idle init, so the
guest kernel alone answers), command line, memory and MAC, in one run.

Each boot gets its own network namespace with a TAP at 172.30.0.1/24; the
guest takes 172.30.0.2 from its command line (ip=..., no DHCP). Once the
guest reaches init, from the host side of the TAP:
  rtt     ping -c RTT_COUNT -i 0.2: the average round trip (after 3 pings of
          warm-up, for ARP)
  flood   ping -f -c COUNT: replies per second and the share lost
and the ratio vmm/qemu of each (for rtt below 1 is better, for the flood
rate above 1 is better). Boots alternate between the two VMMs; the figures
are medians over --runs.

With --exits, also what one round trip costs each VMM, counted with perf
on KVM's tracepoints during the round-trip pings: MMIO accesses (by
address: the virtio-mmio registers and the local APIC's EOI), exits to the
VMM process, interrupt lines set. Equal counts mean both devices make the
guest do the same work per packet.

Needs root (namespaces, TAPs, ping -f).

Usage: scripts/bench-net.py [--vmm PATH] [--guest-dir DIR] [--runs N]
                            [--count N] [--rtt-count N] [--exits]
"""
import argparse
import os
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

HOST_IP = "172.30.0.1"
GUEST_IP = "172.30.0.2"
MAC = "02:76:6d:6d:00:02"
MARKER = b"Run /idle as init process"


sh = benchlib.sh


def guest_cmdline(vmm, kernel, initrd):
    """The command line this VMM gives the guest (with its emulated-host
    additions, which QEMU's guest needs as much)."""
    base = (f"console=ttyS0 reboot=k panic=-1 rdinit=/idle "
            f"ip={GUEST_IP}::{HOST_IP}:255.255.255.0::eth0:off")
    return benchlib.vmm_guest_cmdline(vmm, ["--kernel", kernel, "--initrd", initrd,
                                            "--cmdline", base])


def commands(args, kernel, initrd, cmdline):
    mem = str(args.memory)
    vmm = [args.vmm, "run", "--kernel", kernel, "--initrd", initrd, "--memory", mem,
           "--cmdline", cmdline, "--emulated-host", "off", "--log-level", "warn",
           "--net", f"tap=tap0,mac={MAC}"]
    qemu = ["qemu-system-x86_64", "-M", "microvm,acpi=off", "-enable-kvm", "-cpu", "host", "-m", mem,
            "-kernel", kernel, "-initrd", initrd, "-append", cmdline,
            "-nographic", "-nodefaults", "-serial", "stdio", "-no-reboot",
            "-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "-device", f"virtio-net-device,netdev=n0,mac={MAC}"]
    return {"vmm": vmm, "qemu": qemu}


def parse_ping(text):
    sent = re.search(r"(\d+) packets transmitted, (\d+) received", text)
    rtt = re.search(r"rtt min/avg/max/mdev = [\d.]+/([\d.]+)/", text)
    took = re.search(r"time (\d+)ms", text)
    return (int(sent.group(1)) if sent else 0, int(sent.group(2)) if sent else 0,
            float(rtt.group(1)) if rtt else None, int(took.group(1)) if took else None)


# KVM tracepoints counted per ping with --exits: what each VMM makes the
# guest and the host do for one round trip.
EXIT_EVENTS = {"exits": "kvm:kvm_exit", "mmio": "kvm:kvm_mmio", "pio": "kvm:kvm_pio",
               "irqs": "kvm:kvm_set_irq", "injected": "kvm:kvm_inj_virq",
               "userspace": "kvm:kvm_userspace_exit"}


def start_exit_count(pid):
    """perf stat for the counts, and perf record of the MMIO accesses to
    see which registers they are."""
    events = ",".join(EXIT_EVENTS.values())
    stat = subprocess.Popen(["perf", "stat", "-x", ",", "-e", events, "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    data = f"/tmp/bench-net-mmio-{os.getpid()}.data"
    record = subprocess.Popen(["perf", "record", "-q", "-e", "kvm:kvm_mmio", "-p", str(pid),
                               "-o", data], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    return stat, record, data


def stop_exit_count(perf):
    stat, record, data = perf
    counts = {}
    for proc in (stat, record):
        proc.send_signal(2)
    _, err = stat.communicate(timeout=30)
    record.wait(timeout=30)
    for line in err.splitlines():
        f = line.split(",")
        for key, ev in EXIT_EVENTS.items():
            if len(f) > 2 and f[2] == ev and f[0].isdigit():
                counts[key] = int(f[0])
    # "mmio write len 4 gpa 0xfee000b0 val 0x0": count by kind and address.
    script = sh("perf", "script", "-i", data, "-F", "trace", check=False).stdout
    os.unlink(data)
    for m in re.finditer(r"mmio (\w+) len \d+ gpa (0x[0-9a-f]+)", script):
        key = f"mmio {m.group(1)} {m.group(2)}"
        counts[key] = counts.get(key, 0) + 1
    return counts


def one_run(name, cmd, ns, args):
    p = subprocess.Popen(ns.cmd(*cmd), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL)
    try:
        if not benchlib.wait_for_marker(p, MARKER, args.limit):
            print(f"  {name}: the guest did not reach init", flush=True)
            return None
        sh(*ns.cmd("ping", "-c", "3", "-i", "0.2", "-W", "5", GUEST_IP), check=False)
        perf = start_exit_count(p.pid) if args.exits else None
        rtt_out = sh(*ns.cmd("ping", "-c", str(args.rtt_count), "-i", "0.2", "-W", "5", GUEST_IP),
                     check=False).stdout
        _, got, rtt, _ = parse_ping(rtt_out)
        exits = stop_exit_count(perf) if perf else {}
        flood_out = sh(*ns.cmd("ping", "-f", "-c", str(args.count), "-W", "5", GUEST_IP),
                       check=False).stdout
        sent, recv, _, took = parse_ping(flood_out)
        rate = recv / (took / 1e3) if took else None
        loss = 100.0 * (sent - recv) / sent if sent else None
        return {"rtt": rtt, "rate": rate, "loss": loss, "rtt_replies": got,
                **{k: v / got for k, v in exits.items() if got}}
    finally:
        p.kill()
        p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--vmm", default=os.path.join(here, "..", "target", "release", "vmm"))
    ap.add_argument("--guest-dir")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--count", type=int, default=2000, help="flood pings")
    ap.add_argument("--rtt-count", type=int, default=20)
    ap.add_argument("--memory", type=int, default=128, help="MiB")
    ap.add_argument("--limit", type=float, default=900, help="seconds per boot")
    ap.add_argument("--exits", action="store_true",
                    help="count KVM exits, MMIO and port accesses, and interrupts per ping "
                         "during the round-trip pings (perf and KVM tracepoints)")
    args = ap.parse_args()

    if os.geteuid() != 0:
        sys.exit("bench: needs root (network namespaces, TAP devices, ping -f)")
    d = benchlib.require(args, ("ip", "ping", "qemu-system-x86_64"),
                         ("vmlinux", "initramfs.cpio", "idle"))
    kernel, initrd = os.path.join(d, "vmlinux"), os.path.join(d, "initramfs.cpio")

    cmdline = guest_cmdline(args.vmm, kernel, initrd)
    cmds = commands(args, kernel, initrd, cmdline)
    print(f"guest: {kernel}\ncommand line: {cmdline}\n", flush=True)
    results = {"vmm": [], "qemu": []}
    for run in range(args.runs):
        for name in ("vmm", "qemu"):
            ns = benchlib.Netns(f"vmmbench-{os.getpid()}", HOST_IP)
            try:
                r = one_run(name, cmds[name], ns, args)
            finally:
                ns.close()
            if r:
                results[name].append(r)
                print(f"run {run + 1}/{args.runs} {name}: rtt {r['rtt']} ms "
                      f"({r['rtt_replies']}/{args.rtt_count} replies), flood "
                      f"{r['rate']:.0f} replies/s, {r['loss']:.1f}% lost", flush=True)
                if args.exits:
                    print("  per ping: " + ", ".join(f"{k} {r[k]:.1f}" for k in EXIT_EVENTS
                                                     if k in r), flush=True)
                    by_addr = sorted((k for k in r if k.startswith("mmio ")), key=lambda k: -r[k])
                    print("  " + ", ".join(f"{k} {r[k]:.1f}" for k in by_addr[:12]), flush=True)

    def med(name, key):
        vals = [r[key] for r in results[name] if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    print(f"\n{'metric':34} {'vmm':>12} {'qemu microvm':>14} {'vmm/qemu':>9}")
    for label, key, unit in (("ping round trip (avg)", "rtt", "ms"),
                             (f"ping -f -c {args.count} replies/s", "rate", "/s"),
                             ("ping -f lost", "loss", "%")):
        a, b = med("vmm", key), med("qemu", key)
        fa = "n/a" if a is None else f"{a:.1f} {unit}"
        fb = "n/a" if b is None else f"{b:.1f} {unit}"
        ratio = f"{a / b:.2f}" if a is not None and b else "n/a"
        print(f"{label:34} {fa:>12} {fb:>14} {ratio:>9}")
    if args.exits:
        for key in EXIT_EVENTS:
            a, b = med("vmm", key), med("qemu", key)
            if a is not None and b:
                print(f"{key + ' per ping':34} {a:>12.1f} {b:>14.1f} {a / b:>9.2f}")


if __name__ == "__main__":
    main()
