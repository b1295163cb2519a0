#!/usr/bin/env python3
"""Client of fd_exhaustion.sh. Against a worker whose open-file limit is far
below N:
  1. opens N connections and sends a GET on each; counts the 200s that come
     within --settle seconds (the connections the worker could accept);
  2. holds them --hold seconds, measuring the worker's CPU (utime+stime) and
     descriptor count meanwhile; halfway, sends a second GET on every
     connection that was answered (one of them asks for --uncached, a file
     the worker has not opened yet), and counts those answers;
  3. closes them all and measures the time until a GET on a fresh
     connection gets 200 (each try with a 1 s timeout, up to --recover s).
Prints key=value lines: SERVED, HELD, RECOVERY."""
import argparse
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hlib import Parser, err_name, get_once, request  # noqa: E402


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        p = f.read().rsplit(")", 1)[1].split()
    return int(p[11]) + int(p[12])


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--wpid", type=int, required=True)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--settle", type=float, default=3)
    ap.add_argument("--hold", type=float, default=6)
    ap.add_argument("--recover", type=float, default=10)
    ap.add_argument("--path", default="/1k.bin")
    ap.add_argument("--uncached", default="", help="path asked for once during the shortage")
    a = ap.parse_args()
    req = request(a.path)
    sel = selectors.DefaultSelector()
    socks = []
    connect_err = {}
    for _ in range(a.n):
        s = socket.socket()
        s.settimeout(3)
        try:
            s.connect(("127.0.0.1", a.port))
            s.sendall(req)
        except OSError as e:
            connect_err[err_name(e)] = connect_err.get(err_name(e), 0) + 1
            s.close()
            continue
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, [Parser(), 0, None, []])  # parser, 200s, error, statuses

    def pump(until):
        while time.monotonic() < until:
            for key, _ in sel.select(max(0, min(0.2, until - time.monotonic()))):
                st = key.data
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as e:
                    data, st[2] = b"", err_name(e)
                if not data:
                    st[2] = st[2] or "EOF"
                    sel.unregister(key.fileobj)
                    continue
                try:
                    for r in st[0].feed(data):
                        st[1] += 1 if r.status == 200 else 0
                        st[3].append(r.status)
                except ValueError as e:
                    st[2] = str(e)
                    sel.unregister(key.fileobj)

    states = {}
    for s in socks:
        states[s] = sel.get_key(s).data
    pump(time.monotonic() + a.settle)
    served = [s for s in socks if states[s][1] >= 1]
    errs = {}
    for s in socks:
        if states[s][2]:
            errs[states[s][2]] = errs.get(states[s][2], 0) + 1
    print("SERVED connected=%d answered=%d waiting=%d closed_or_failed=%d%s%s" % (
        len(socks), len(served), sum(1 for s in socks if states[s][1] == 0 and not states[s][2]),
        sum(errs.values()),
        (" errors=" + ",".join("%s:%d" % kv for kv in errs.items())) if errs else "",
        (" connect_errors=" + ",".join("%s:%d" % kv for kv in connect_err.items())) if connect_err else ""),
        flush=True)

    c0, fds_peak = cpu_ticks(a.wpid), fd_count(a.wpid)
    t0 = time.monotonic()
    pump(t0 + a.hold / 2)
    again = 0
    odd = None  # the connection asking for a file not in the worker's cache
    for s in served:
        if not states[s][2]:
            try:
                if odd is None and a.uncached:
                    s.send(request(a.uncached))
                    odd = s
                else:
                    s.send(req)
                again += 1
            except OSError:
                pass
    pump(t0 + a.hold)
    fds_peak = max(fds_peak, fd_count(a.wpid))
    c1 = cpu_ticks(a.wpid)
    held = time.monotonic() - t0
    answered_again = sum(1 for s in served if len(states[s][3]) >= 2)
    odd_status = "-"
    if odd is not None:
        odd_status = str(states[odd][3][1]) if len(states[odd][3]) >= 2 else (states[odd][2] or "no answer")
    late = sum(1 for s in socks if s not in served and states[s][1] >= 1)
    print("HELD secs=%.1f worker_cpu_s=%.2f worker_fds=%d second_requests=%d answered=%d late_first_answers=%d"
          " uncached_file_status=%s" % (
              held, (c1 - c0) / os.sysconf("SC_CLK_TCK"), fds_peak, again, answered_again, late, odd_status),
          flush=True)

    for s in socks:
        s.close()
    t0 = time.monotonic()
    tries, last = 0, "-"
    ok_at = None
    while time.monotonic() - t0 < a.recover:
        tries += 1
        try:
            status, _, _ = get_once(a.port, a.path, 1.0)
            last = str(status)
            if status == 200:
                ok_at = time.monotonic() - t0
                break
        except Exception as e:  # noqa: BLE001
            last = err_name(e)
        time.sleep(0.05)
    print("RECOVERY %s tries=%d last=%s" % (
        ("secs=%.3f" % ok_at) if ok_at is not None else "FAILED within %.0fs" % a.recover, tries, last), flush=True)


if __name__ == "__main__":
    main()
