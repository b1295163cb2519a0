#!/usr/bin/env python3
"""Opens N keep-alive connections to 127.0.0.1:PORT, sends one request on
each, reads the responses, then holds them idle while the caller measures
the server. Prints READY when they are idle; exits when stdin closes."""
import selectors
import socket
import sys

port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
req = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(req)
    socks.append(s)
sel = selectors.DefaultSelector()
pending = {}
for s in socks:
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ)
    pending[s] = b""
done = 0
while done < n:
    for key, _ in sel.select(timeout=10):
        s = key.fileobj
        data = s.recv(65536)
        if not data:
            sys.exit(f"server closed a connection early ({done} answered)")
        pending[s] += data
        head, sep, body = pending[s].partition(b"\r\n\r\n")
        if sep:
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            if len(body) >= length:
                sel.unregister(s)
                done += 1
print("READY", flush=True)
sys.stdin.read()
