#!/usr/bin/env python3
"""Clients of halfclose_slowloris.sh.

  halfclose_clients.py storm PORT [--n 30000 --secs 20 ...]
    N short connections spread evenly over SECS seconds, from source
    addresses 127.0.0.2..127.0.0.(1+SRCS); each sends one of
      partial    a request head without its final blank line
      get        a whole GET
      post       a POST with a 5-byte body, whole
      post_trunc a POST declaring 100 bytes of body and sending 10
    then shutdown(SHUT_WR), and reads until the server closes, at most
    --read-timeout seconds; then it closes. Outcome per kind:
      answered+closed   got a response, then EOF (what a server should do)
      closed            EOF without a response
      answered+HELD     got a response, no EOF within the timeout
      HELD              no response and no EOF within the timeout
      reset             ECONNRESET (after a response or not)
      connect_error     the connection was not made
    Prints one line per kind and a STORM line.

  halfclose_clients.py slowloris PORT [--n 1000 --interval 5 --secs 30]
    N connections from 127.0.0.250 that send a request line and then one
    byte of a header every INTERVAL seconds, never ending the head. Prints
    READY once connected, and at the end how many the server closed, when,
    and with what status."""
import argparse
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hlib import IP_BIND_ADDRESS_NO_PORT, err_name, pct  # noqa: E402

KINDS = {
    "partial": b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\nUser-Agent: storm\r\n",
    "get": b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n",
    "post": b"POST /1k.bin HTTP/1.1\r\nHost: bench\r\nContent-Length: 5\r\n\r\nhello",
    "post_trunc": b"POST /1k.bin HTTP/1.1\r\nHost: bench\r\nContent-Length: 100\r\n\r\n0123456789",
}
SLOW_SRC = "127.0.0.250"


def status_of(buf):
    if buf.startswith(b"HTTP/1."):
        try:
            return int(buf[9:12])
        except ValueError:
            return 0
    return None


def storm(a):
    names = list(KINDS)
    sel = selectors.DefaultSelector()
    live = {}  # fd -> [sock, kind, phase, started, buf, index]
    res = {k: {} for k in names}
    close_times = {k: [] for k in names}
    statuses = {k: {} for k in names}
    t0 = time.monotonic()
    gap = a.secs / a.n
    i = 0
    lag_max = 0.0
    last_sweep = t0
    launched = t0

    def finish(fd, outcome, st=None):
        ent = live.pop(fd)
        s, kind = ent[0], ent[1]
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        res[kind][outcome] = res[kind].get(outcome, 0) + 1
        code = status_of(ent[4])
        if code is not None:
            statuses[kind][code] = statuses[kind].get(code, 0) + 1

    while i < a.n or live:
        now = time.monotonic()
        while i < a.n and t0 + i * gap <= now:
            lag_max = max(lag_max, now - (t0 + i * gap))
            launched = now
            kind = names[i % len(names)]
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind(("127.0.0.%d" % (2 + i % a.srcs), 0))
            rc = s.connect_ex(("127.0.0.1", a.port))
            i += 1
            if rc not in (0, 115):
                s.close()
                res[kind]["connect_error"] = res[kind].get("connect_error", 0) + 1
                continue
            live[s.fileno()] = [s, kind, "connect", now, b"", i]
            sel.register(s, selectors.EVENT_WRITE)
        now = time.monotonic()
        if now - last_sweep < 0.05:
            sweep = ()
        else:
            last_sweep = now
            sweep = list(live.items())
        for fd, ent in sweep:
            limit = a.connect_timeout if ent[2] == "connect" else a.read_timeout
            if now - ent[3] > limit:
                if ent[2] == "connect":
                    finish(fd, "connect_error")
                else:
                    finish(fd, "answered+HELD" if ent[4] else "HELD")
        nxt = t0 + i * gap if i < a.n else now + 0.05
        for key, _ in sel.select(max(0.0, min(0.05, nxt - time.monotonic()))):
            ent = live.get(key.fd)
            if ent is None:
                continue
            s = ent[0]
            if ent[2] == "connect":
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    finish(key.fd, "connect_error")
                    continue
                try:
                    s.send(KINDS[ent[1]])
                    s.shutdown(socket.SHUT_WR)
                except OSError:
                    finish(key.fd, "reset")
                    continue
                ent[2], ent[3] = "read", time.monotonic()
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                finish(key.fd, "reset" if err_name(e) == "ECONNRESET" else err_name(e))
                continue
            if data:
                if len(ent[4]) < 64:
                    ent[4] += data[:64]
                continue
            close_times[ent[1]].append(time.monotonic() - ent[3])
            finish(key.fd, "answered+closed" if ent[4] else "closed")
    span = max(1e-3, launched - t0)
    held = 0
    for k in names:
        r = res[k]
        held += r.get("HELD", 0) + r.get("answered+HELD", 0)
        ct = [x * 1000 for x in close_times[k]]
        print("  storm %-10s n=%-6d %s | statuses %s | server closed after FIN in p50=%.1fms max=%.1fms" % (
            k, sum(r.values()), " ".join("%s=%d" % kv for kv in sorted(r.items())),
            " ".join("%s:%d" % kv for kv in sorted(statuses[k].items())) or "-",
            pct(ct, 50), max(ct) if ct else float("nan")), flush=True)
    print("STORM n=%d secs=%.1f rate=%.0f/s held_past_%.1fs=%d start_lag_max=%.0fms" % (
        a.n, span, a.n / span, a.read_timeout, held, lag_max * 1000), flush=True)


def slowloris(a):
    sel = selectors.DefaultSelector()
    conns = {}  # fd -> [sock, next_send, buf]
    t0 = time.monotonic()
    fails = 0
    for j in range(a.n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind((SLOW_SRC, 0))
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", a.port))
            s.sendall(b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\nX-Slow: ")
        except OSError:
            fails += 1
            s.close()
            continue
        s.setblocking(False)
        conns[s.fileno()] = [s, t0 + a.interval * (j + 1) / a.n, b""]
        sel.register(s, selectors.EVENT_READ)
    print("READY connected=%d failed=%d" % (len(conns), fails), flush=True)
    closed = []  # (time, status or error)
    sent = 0
    end = t0 + a.secs

    def gone(fd, why):
        ent = conns.pop(fd)
        sel.unregister(ent[0])
        ent[0].close()
        st = status_of(ent[2])
        closed.append((time.monotonic() - t0, str(st) if st else why))

    while time.monotonic() < end and conns:
        now = time.monotonic()
        for fd, ent in list(conns.items()):
            if ent[1] <= now:
                ent[1] += a.interval
                try:
                    ent[0].send(b"a")
                    sent += 1
                except OSError as e:
                    gone(fd, err_name(e))
        for key, _ in sel.select(0.1):
            ent = conns.get(key.fd)
            if ent is None:
                continue
            try:
                data = ent[0].recv(4096)
            except BlockingIOError:
                continue
            except OSError as e:
                gone(key.fd, err_name(e))
                continue
            if data:
                ent[2] += data[:64]
            else:
                gone(key.fd, "EOF")
    why = {}
    for _, w in closed:
        why[w] = why.get(w, 0) + 1
    print("SLOWLORIS connected=%d alive=%d closed_by_server=%d first_close_s=%s bytes_trickled=%d%s" % (
        a.n - fails, len(conns), len(closed), ("%.1f" % min(t for t, _ in closed)) if closed else "-", sent,
        (" closes=" + ",".join("%s:%d" % kv for kv in sorted(why.items()))) if why else ""), flush=True)
    for ent in conns.values():
        ent[0].close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["storm", "slowloris"])
    ap.add_argument("port", type=int)
    ap.add_argument("--n", type=int)
    ap.add_argument("--secs", type=float, default=20)
    ap.add_argument("--srcs", type=int, default=8)
    ap.add_argument("--read-timeout", type=float, default=1.0)
    ap.add_argument("--connect-timeout", type=float, default=3.0)
    ap.add_argument("--interval", type=float, default=5)
    a = ap.parse_args()
    if a.mode == "storm":
        a.n = a.n or 30000
        storm(a)
    else:
        a.n = a.n or 1000
        slowloris(a)


if __name__ == "__main__":
    main()
