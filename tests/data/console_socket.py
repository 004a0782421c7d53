#!/usr/bin/env python3
"""The caller's side of an OCI runtime's --console-socket, as conmon and
containerd's shim are: listens on SOCKET, takes the pseudo-terminal master
the runtime sends (SCM_RIGHTS), types INPUT into it once the container's
output holds READY, and copies everything the container writes to stdout
until the terminal closes or TIMEOUT seconds pass.

usage: console_socket.py SOCKET READY INPUT [TIMEOUT]
Prints "console: got a terminal" on stderr once the master arrived (and
"console: not a terminal" with exit 1 if what arrived is not one).
"""
import os
import select
import socket
import sys
import termios
import time


def main():
    path, ready, typed = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 120
    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(timeout)
    conn, _ = srv.accept()
    msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
    if not fds:
        print("console: no descriptor came", file=sys.stderr)
        sys.exit(1)
    master = fds[0]
    try:
        termios.tcgetattr(master)
    except termios.error:
        print("console: not a terminal", file=sys.stderr)
        sys.exit(1)
    print(f"console: got a terminal ({msg.decode(errors='replace')})", file=sys.stderr)
    seen = b""
    sent = False
    deadline = time.time() + timeout
    while time.time() < deadline:
        r, _, _ = select.select([master], [], [], 0.5)
        if not r:
            continue
        try:
            data = os.read(master, 4096)
        except OSError:
            break  # EIO: the terminal's other end closed
        if not data:
            break
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        seen += data
        if not sent and ready in seen:
            os.write(master, typed)
            sent = True


if __name__ == "__main__":
    main()
