#!/usr/bin/env python3
"""The snapshot flow a Firecracker client uses, for the nested tests:

- process A (`firecracker --api-sock`) is configured and started through
  the API as the SDK does (the default guest, a shell on its console); a
  line typed there leaves a mark in the guest's tmpfs; PATCH /vm Paused,
  PUT /snapshot/create; A is stopped (SIGTERM);
- process B, a fresh `firecracker --api-sock`, loads the snapshot with
  PUT /snapshot/load (mem_backend File, resume_vm true): GET / says
  Running, and a command typed on B's console is answered by the same
  shell, with A's mark; poweroff ends B with exit code 0.

Usage: fc_snapshot.py FIRECRACKER DIR VMLINUX INITRAMFS
Prints one line per check ("ok: ..."); exits 0 when all passed, 1 with
"FAILED: ..." otherwise.
"""

import os
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fc_driver import UnixConnection, fail  # noqa: E402


class Firecracker:
    """A `firecracker --api-sock` process, its console and its API."""

    def __init__(self, binary, sock, vm_id, log):
        self.sock = sock
        self.proc = subprocess.Popen(
            [binary, "--api-sock", sock, "--id", vm_id],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(log + ".stderr", "wb"),
        )
        self.console = bytearray()
        self.lock = threading.Lock()
        self.conn = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        while True:
            b = self.proc.stdout.read1(4096)
            if not b:
                return
            with self.lock:
                self.console.extend(b)

    def wait_for(self, text, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            with self.lock:
                if text.encode() in self.console:
                    return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        with self.lock:
            return text.encode() in self.console

    def type_line(self, line):
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()

    def call(self, method, path, body=None):
        import json

        if self.conn is None:
            self.conn = UnixConnection(self.sock)
        data = None if body is None else json.dumps(body)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        self.conn.request(method, path, body=data, headers=headers)
        r = self.conn.getresponse()
        text = r.read().decode()
        return r.status, (json.loads(text) if text else None)

    def put(self, path, body, method="PUT"):
        status, answer = self.call(method, path, body)
        if status != 204:
            fail(f"{method} {path}: {status} {answer}")

    def wait_api(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _ = self.call("GET", "/machine-config")
                if status == 200:
                    return
            except OSError:
                self.conn = None
            if time.monotonic() > deadline or self.proc.poll() is not None:
                fail(f"{self.sock} never answered")
            time.sleep(0.02)

    def tail(self):
        with self.lock:
            return self.console.decode(errors="replace")[-1500:]


def main():
    fc, d, vmlinux, initramfs = sys.argv[1:5]
    state, mem = f"{d}/vm.state", f"{d}/vm.mem"

    a = Firecracker(fc, f"{d}/a.sock", "snap-a", f"{d}/a.log")
    a.wait_api()
    a.put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})
    a.put(
        "/boot-source",
        {
            "kernel_image_path": vmlinux,
            "initrd_path": initramfs,
            "boot_args": "console=ttyS0 reboot=k panic=-1 VMM_SHELL=1",
        },
    )
    a.put("/actions", {"action_type": "InstanceStart"})
    if not a.wait_for("/ # ", 300):
        fail(f"A: no shell prompt:\n{a.tail()}")
    time.sleep(1)  # the shell sets up its terminal first
    a.type_line("echo mark-from-A > /tmp/mark; echo marked-$((1+1))")
    if not a.wait_for("marked-2", 60):
        fail(f"A: the typed line got no answer:\n{a.tail()}")
    print("ok: A booted, its shell answered and left a mark", flush=True)
    a.put("/vm", {"state": "Paused"}, "PATCH")
    a.put("/snapshot/create", {"snapshot_type": "Full", "snapshot_path": state, "mem_file_path": mem})
    a.proc.send_signal(signal.SIGTERM)
    rc = a.proc.wait(timeout=60)
    print(f"ok: A snapshotted and stopped (exit {rc})", flush=True)

    b = Firecracker(fc, f"{d}/b.sock", "snap-b", f"{d}/b.log")
    b.wait_api()
    b.put(
        "/snapshot/load",
        {
            "snapshot_path": state,
            "mem_backend": {"backend_type": "File", "backend_path": mem},
            "resume_vm": True,
        },
    )
    status, info = b.call("GET", "/")
    if status != 200 or info.get("state") != "Running":
        fail(f"B: GET / after the load: {status} {info}")
    print("ok: B loaded the snapshot and runs", flush=True)
    b.type_line("echo restored-$(cat /tmp/mark)-$((6*7))")
    if not b.wait_for("restored-mark-from-A-42", 60):
        fail(f"B: a typed command got no answer:\n{b.tail()}")
    print("ok: B's guest answered a command typed on its console, with A's mark", flush=True)
    b.type_line("poweroff")
    try:
        rc = b.proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        b.proc.kill()
        fail("poweroff did not end B")
    if rc != 0:
        fail(f"B exited with {rc} after poweroff")
    print("ok: poweroff ended B with 0", flush=True)


if __name__ == "__main__":
    main()
