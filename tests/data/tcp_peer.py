#!/usr/bin/env python3
"""The host side of the nested network test (tests/tests/nested.rs).

    tcp_peer.py ADDRESS BYTES OUT

Listens on ADDRESS, port 5001 and port 5002, for one connection each:
- on 5001 it takes what the guest sends until the guest closes its side,
  then closes;
- on 5002 it sends BYTES random bytes, closes its sending side, and waits
  for the guest to close.
Then it writes to OUT one line per port, "received N SHA256" and
"sent N SHA256", for the test to compare with the digests the guest
printed. It gives up after 280 s (exit 1, with what it has in OUT).
"""
import hashlib
import os
import socket
import sys
import threading

ADDRESS, BYTES, OUT = sys.argv[1], int(sys.argv[2]), sys.argv[3]
results = {}


def listener(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ADDRESS, port))
    s.listen(1)
    return s


def receive(s):
    conn, _ = s.accept()
    digest, n = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        digest.update(chunk)
        n += len(chunk)
    conn.close()
    results["received"] = f"received {n} {digest.hexdigest()}"


def send(s):
    conn, _ = s.accept()
    digest, left = hashlib.sha256(), BYTES
    while left:
        chunk = os.urandom(min(left, 1 << 16))
        digest.update(chunk)
        conn.sendall(chunk)
        left -= len(chunk)
    conn.shutdown(socket.SHUT_WR)
    while conn.recv(1 << 16):
        pass
    conn.close()
    results["sent"] = f"sent {BYTES} {digest.hexdigest()}"


# Both listen before either is waited on: the guest may connect to either.
threads = [
    threading.Thread(target=f, args=(listener(port),), daemon=True)
    for f, port in ((receive, 5001), (send, 5002))
]
for t in threads:
    t.start()
for t in threads:
    t.join(280)
with open(OUT, "w") as f:
    for key in ("received", "sent"):
        if key in results:
            print(results[key], file=f)
sys.exit(0 if len(results) == 2 else 1)
