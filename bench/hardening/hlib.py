#!/usr/bin/env python3
"""Shared by the bench/hardening clients (stdlib only), and two small tools:

  hlib.py get PORT PATH [TIMEOUT]         one GET on a fresh connection; exit 0 on 200
  hlib.py probe PORT SECONDS [options]    sequential GETs, each on a fresh
                                          connection (or --keepalive), then one
                                          line: n, failures, p50/p99/max in ms
"""
import argparse
import errno
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def request(path, host="bench", method="GET", extra=""):
    return f"{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n".encode()


class Response:
    __slots__ = ("status", "length", "close", "body")

    def __init__(self, status, length, close):
        self.status, self.length, self.close, self.body = status, length, close, 0


class Parser:
    """Incremental parser of HTTP/1.1 responses with Content-Length bodies
    (all a static server sends here). feed() returns the responses completed."""

    def __init__(self):
        self.buf = b""
        self.cur = None  # Response whose body is being read

    def pending(self):
        return bool(self.buf) or self.cur is not None

    def feed(self, data):
        done = []
        self.buf += data
        while True:
            if self.cur is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(self.buf) > 65536:
                        raise ValueError("response head too large")
                    return done
                head = self.buf[:end].decode("latin-1").split("\r\n")
                self.buf = self.buf[end + 4 :]
                parts = head[0].split(" ", 2)
                if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
                    raise ValueError("bad status line %r" % head[0][:60])
                status = int(parts[1])
                length, close = 0, parts[0] == "HTTP/1.0"
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    k = k.strip().lower()
                    if k == "content-length":
                        length = int(v.strip())
                    elif k == "connection":
                        close = "close" in v.lower()
                    elif k == "transfer-encoding":
                        raise ValueError("chunked response not expected")
                if status in (204, 304) or 100 <= status < 200:
                    length = 0
                self.cur = Response(status, length, close)
            take = min(self.cur.length - self.cur.body, len(self.buf))
            self.cur.body += take
            self.buf = self.buf[take:]
            if self.cur.body < self.cur.length:
                return done
            done.append(self.cur)
            self.cur = None
            if not self.buf:
                return done


def err_name(e):
    """A short name for an exception: ECONNRESET, EOF, timeout, ..."""
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    if isinstance(e, EOFError):
        return "EOF" + (" (%s)" % e.args[0] if e.args else "")
    return type(e).__name__ + (": %s" % e if str(e) else "")


def get_once(port, path="/1k.bin", timeout=5.0, sock=None, host="127.0.0.1"):
    """One GET; returns (status, seconds, sock or None if it closed).
    Raises OSError / EOFError / ValueError on failure."""
    t0 = time.monotonic()
    own = sock is None
    if own:
        sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.settimeout(timeout)
        sock.sendall(request(path))
        p = Parser()
        while True:
            data = sock.recv(65536)
            if not data:
                raise EOFError("after %d bytes" % len(p.buf) if p.pending() else "no response")
            got = p.feed(data)
            if got:
                r = got[0]
                dt = time.monotonic() - t0
                if r.close or own:
                    sock.close()
                    return r.status, dt, None
                return r.status, dt, sock
    except BaseException:
        sock.close()
        raise


def pct(values, q):
    if not values:
        return float("nan")
    v = sorted(values)
    i = min(len(v) - 1, max(0, int(round(q / 100.0 * len(v) + 0.5)) - 1))
    return v[i]


def lat_summary(lat_s):
    ms = [x * 1000 for x in lat_s]
    return "p50=%.2fms p99=%.2fms max=%.2fms" % (pct(ms, 50), pct(ms, 99), max(ms) if ms else float("nan"))


def probe(args):
    deadline = time.monotonic() + args.seconds
    lat, fails = [], []
    sock = None
    t_start = time.monotonic()
    while time.monotonic() < deadline:
        try:
            status, dt, sock = get_once(args.port, args.path, args.timeout, sock if args.keepalive else None)
            if status != 200:
                fails.append((time.monotonic() - t_start, "status %d" % status))
            else:
                lat.append(dt)
            if not args.keepalive:
                sock = None
        except Exception as e:  # noqa: BLE001 - every failure is a figure
            fails.append((time.monotonic() - t_start, err_name(e)))
            sock = None
        if args.pause_ms:
            time.sleep(args.pause_ms / 1000.0)
    if sock:
        sock.close()
    kinds = {}
    for _, k in fails:
        kinds[k] = kinds.get(k, 0) + 1
    print(
        "probe: n=%d ok=%d failed=%d %s%s"
        % (
            len(lat) + len(fails),
            len(lat),
            len(fails),
            lat_summary(lat),
            (" failures: " + ", ".join("%s x%d" % kv for kv in sorted(kinds.items()))) if fails else "",
        ),
        flush=True,
    )
    for t, k in fails[:10]:
        print("  probe failure at %.2fs: %s" % (t, k), flush=True)


def main():
    if len(sys.argv) >= 2 and sys.argv[1] == "get":
        port, path = int(sys.argv[2]), sys.argv[3]
        timeout = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
        try:
            status, dt, _ = get_once(port, path, timeout)
        except Exception as e:  # noqa: BLE001
            print("error: %s" % err_name(e))
            sys.exit(1)
        print("%d %.2fms" % (status, dt * 1000))
        sys.exit(0 if status == 200 else 1)
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["probe"])
    ap.add_argument("port", type=int)
    ap.add_argument("seconds", type=float)
    ap.add_argument("--path", default="/1k.bin")
    ap.add_argument("--pause-ms", type=float, default=10)
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--keepalive", action="store_true")
    probe(ap.parse_args())


if __name__ == "__main__":
    main()
