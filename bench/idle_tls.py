#!/usr/bin/env python3
"""Opens N TLS keep-alive connections to 127.0.0.1:PORT, makes one request
on each, reads the responses, then holds them idle while the caller
measures the server. Prints READY when they are idle; exits when stdin
closes."""
import socket
import ssl
import sys

port, n, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
conns = []
for i in range(n):
    t = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="bench.test")
    t.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    got = b""
    while True:
        head, sep, body = got.partition(b"\r\n\r\n")
        if sep:
            length = next((int(l.split(b":")[1]) for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")), 0)
            if len(body) >= length:
                break
        data = t.recv(65536)
        if not data:
            sys.exit(f"server closed connection {i} early")
        got += data
    conns.append(t)
print("READY", flush=True)
sys.stdin.read()
