#!/usr/bin/env python3
"""Drives the VMM as Firecracker's Go SDK drives Firecracker, for the nested
tests: starts `firecracker --api-sock SOCK --id ID`, polls GET /machine-config
until it answers, configures the logger, the machine, the boot source (the
default guest with a shell on its console), a data disk and a network
interface, then InstanceStart; then checks on the running VM:

- a command typed on the console is answered;
- PATCH /vm Paused: GET / says Paused and a command typed while paused gets
  no answer for 3 seconds; Resumed: the answer comes;
- PATCH /drives swaps the data disk: the guest reads the new file's content
  and size;
- a pre-boot request after the start gets a 400 with a fault message;
- SendCtrlAltDel ends the process with exit code 0.

Usage: fc_driver.py FIRECRACKER SOCK ID VMLINUX INITRAMFS OLD_DISK NEW_DISK TAP LOG
Prints one line per check ("ok: ..."); exits 0 when all passed, 1 with
"FAILED: ..." otherwise.
"""

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(60)
        self.sock.connect(self.unix_path)


def fail(what):
    print(f"FAILED: {what}", flush=True)
    sys.exit(1)


def main():
    (fc, sock, vm_id, vmlinux, initramfs, old_disk, new_disk, tap, log) = sys.argv[1:10]
    proc = subprocess.Popen(
        [fc, "--api-sock", sock, "--id", vm_id],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=open(log + ".stderr", "wb"),
    )
    console = bytearray()
    lock = threading.Lock()

    def read_console():
        while True:
            b = proc.stdout.read1(4096)
            if not b:
                return
            with lock:
                console.extend(b)

    threading.Thread(target=read_console, daemon=True).start()

    def seen(text):
        with lock:
            return text.encode() in console

    def wait_for(text, limit):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if seen(text):
                return True
            if proc.poll() is not None:
                return seen(text)
            time.sleep(0.05)
        return False

    def type_line(line):
        proc.stdin.write(line.encode() + b"\n")
        proc.stdin.flush()

    conn = None

    def call(method, path, body=None):
        nonlocal conn
        if conn is None:
            conn = UnixConnection(sock)
        data = None if body is None else json.dumps(body)
        headers = {"Accept": "application/json"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        r = conn.getresponse()
        text = r.read().decode()
        return r.status, (json.loads(text) if text else None)

    # As the SDK: GET /machine-config until the socket answers.
    deadline = time.monotonic() + 60
    while True:
        try:
            status, _ = call("GET", "/machine-config")
            if status == 200:
                break
        except OSError:
            conn = None
        if time.monotonic() > deadline or proc.poll() is not None:
            fail("the API socket never answered")
        time.sleep(0.02)
    print("ok: the API answered GET /machine-config", flush=True)

    def put(path, body, method="PUT"):
        status, answer = call(method, path, body)
        if status != 204:
            fail(f"{method} {path}: {status} {answer}")

    put("/logger", {"log_path": log, "level": "Info", "show_level": True})
    put("/machine-config", {"vcpu_count": 1, "mem_size_mib": 128})
    put(
        "/boot-source",
        {
            "kernel_image_path": vmlinux,
            "initrd_path": initramfs,
            "boot_args": "console=ttyS0 reboot=k panic=-1 VMM_SHELL=1",
        },
    )
    put(
        "/drives/data",
        {"drive_id": "data", "path_on_host": old_disk, "is_root_device": False, "is_read_only": False},
    )
    put("/network-interfaces/eth0", {"iface_id": "eth0", "host_dev_name": tap})
    start = time.monotonic()
    put("/actions", {"action_type": "InstanceStart"})
    if not wait_for("Hello from the guest", 300):
        fail("no greeting from the guest")
    print(f"ok: greeting {time.monotonic() - start:.2f} s after InstanceStart", flush=True)
    if not wait_for("/ # ", 120):
        fail("no shell prompt")
    time.sleep(1)  # the shell sets up its terminal first

    type_line("echo answer-$((6*7))")
    if not wait_for("answer-42", 60):
        fail("a typed command got no answer")
    print("ok: a typed command was answered", flush=True)

    put("/vm", {"state": "Paused"}, "PATCH")
    status, info = call("GET", "/")
    if status != 200 or info.get("state") != "Paused":
        fail(f"GET / after the pause: {status} {info}")
    type_line("echo paused-$((5*5))")
    time.sleep(3)
    if seen("paused-25"):
        fail("a command typed while paused was answered")
    print("ok: paused, GET / says Paused, no answer for 3 s", flush=True)
    put("/vm", {"state": "Resumed"}, "PATCH")
    if not wait_for("paused-25", 60):
        fail("no answer after the resume")
    status, info = call("GET", "/")
    print(f"ok: resumed ({info.get('state')}), the answer came", flush=True)

    put("/drives/data", {"drive_id": "data", "path_on_host": new_disk}, "PATCH")
    time.sleep(1)
    type_line(
        "echo 3 > /proc/sys/vm/drop_caches; "
        "echo disk-now $(head -c 16 /dev/vda) $(cat /sys/block/vda/size) end"
    )
    # The answer, not the echo of the typed line: the words filled in.
    answer = re.compile(r"disk-now \S+ \d+ end")
    deadline = time.monotonic() + 60
    found = None
    while found is None and time.monotonic() < deadline:
        with lock:
            found = answer.search(console.decode(errors="replace"))
        time.sleep(0.05)
    if found is None:
        with lock:
            tail = console.decode(errors="replace")[-2000:]
        fail(f"the disk's content was not printed; the console's end:\n{tail}")
    print(f"ok: after PATCH /drives the guest read: {found.group(0)}", flush=True)

    status, answer = call("PUT", "/boot-source", {"kernel_image_path": vmlinux})
    if status != 400 or not answer or "fault_message" not in answer:
        fail(f"a pre-boot request after the start: {status} {answer}")
    print(f"ok: runtime error answer: {status} {answer['fault_message']}", flush=True)

    put("/actions", {"action_type": "SendCtrlAltDel"})
    try:
        rc = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        fail("SendCtrlAltDel did not end the VMM")
    if rc != 0:
        fail(f"the VMM exited with {rc} after SendCtrlAltDel")
    if os.path.exists(sock):
        fail("the API socket outlived the VMM")
    print("ok: SendCtrlAltDel ended the process with 0", flush=True)


if __name__ == "__main__":
    main()
