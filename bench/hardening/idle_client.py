#!/usr/bin/env python3
"""Client of idle_100k.sh: opens N keep-alive connections to 127.0.0.1:PORT,
makes one GET on each and reads its response, then holds them all idle for
HOLD seconds, watching for any the server closes.

The work is split over processes of at most --per-proc connections (each
within the open-file limit), and connections are bound to source addresses
127.0.0.2, 127.0.0.3, ... (--per-src connections each, with
IP_BIND_ADDRESS_NO_PORT) so the ephemeral port range is no limit.

Prints on stdout:
  READY opened=N failed=F secs=T          when every connection is idle
  DONE alive=A closed_by_server=C first_close_s=X   after the hold"""
import argparse
import ctypes
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hlib import IP_BIND_ADDRESS_NO_PORT, Parser, err_name, request  # noqa: E402


def open_chunk(a, lo, hi, wfd, rfd):
    """Child: opens connections lo..hi, reports, holds until the parent says stop."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    req = request(a.path)
    sel = selectors.DefaultSelector()
    idle = []
    errors = {}
    nxt = lo
    inflight = {}  # fd -> [sock, parser, started]
    t0 = time.monotonic()

    def start(i):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind(("127.0.0.%d" % (2 + i // a.per_src), 0))
        rc = s.connect_ex(("127.0.0.1", a.port))
        if rc not in (0, 115):
            errors[os.strerror(rc)] = errors.get(os.strerror(rc), 0) + 1
            s.close()
            return
        inflight[s.fileno()] = [s, None, time.monotonic()]
        sel.register(s, selectors.EVENT_WRITE)

    def failed(fd, why):
        s = inflight.pop(fd)[0]
        sel.unregister(s)
        s.close()
        errors[why] = errors.get(why, 0) + 1

    while nxt < hi or inflight:
        while nxt < hi and len(inflight) < a.window:
            start(nxt)
            nxt += 1
        for key, _ in sel.select(0.5):
            fd = key.fd
            ent = inflight.get(fd)
            if ent is None:
                continue
            s = ent[0]
            if ent[1] is None:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    failed(fd, os.strerror(err))
                    continue
                try:
                    s.send(req)
                except OSError as e:
                    failed(fd, err_name(e))
                    continue
                ent[1] = Parser()
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                failed(fd, err_name(e))
                continue
            if not data:
                failed(fd, "EOF")
                continue
            try:
                got = ent[1].feed(data)
            except ValueError as e:
                failed(fd, str(e))
                continue
            if got:
                if got[0].status != 200 or got[0].close:
                    failed(fd, "status %d close=%s" % (got[0].status, got[0].close))
                    continue
                sel.unregister(s)
                del inflight[fd]
                idle.append(s)
        now = time.monotonic()
        for fd in [fd for fd, e in inflight.items() if now - e[2] > a.timeout]:
            failed(fd, "timeout")
    os.write(wfd, ("OPENED %d %d %.2f %s\n" % (
        len(idle), sum(errors.values()), time.monotonic() - t0,
        ",".join("%s:%d" % kv for kv in errors.items()) or "-")).encode())
    # Hold: anything readable on an idle connection is the server closing it.
    for s in idle:
        sel.register(s, selectors.EVENT_READ)
    closed = 0
    first_close = None
    rsel = selectors.DefaultSelector()
    rsel.register(rfd, selectors.EVENT_READ)
    held = time.monotonic()
    while True:
        if rsel.select(0):
            break
        for key, _ in sel.select(0.2):
            sel.unregister(key.fileobj)
            closed += 1
            if first_close is None:
                first_close = time.monotonic() - held
    os.write(wfd, ("ALIVE %d %d %s\n" % (
        len(idle) - closed, closed, "-" if first_close is None else "%.1f" % first_close)).encode())
    os._exit(0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--hold", type=float, default=30)
    ap.add_argument("--path", default="/1k.bin")
    ap.add_argument("--per-proc", type=int, default=15000)
    ap.add_argument("--per-src", type=int, default=20000)
    ap.add_argument("--window", type=int, default=400)
    ap.add_argument("--timeout", type=float, default=20)
    a = ap.parse_args()
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    a.per_proc = max(1, min(a.per_proc, hard - 100))
    t0 = time.monotonic()
    kids = []
    for lo in range(0, a.n, a.per_proc):
        hi = min(a.n, lo + a.per_proc)
        r1, w1 = os.pipe()  # child -> parent
        r2, w2 = os.pipe()  # parent -> child: closing w2 means stop
        pid = os.fork()
        if pid == 0:
            # Die with the parent (a timeout or the script's cleanup stops it).
            ctypes.CDLL(None, use_errno=True).prctl(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
            os.close(r1)
            os.close(w2)
            for _, _, r, w in kids:
                os.close(r)
                os.close(w)
            try:
                open_chunk(a, lo, hi, w1, r2)
            finally:
                os._exit(1)
        os.close(w1)
        os.close(r2)
        kids.append((pid, hi - lo, r1, w2))
    files = [os.fdopen(r, "r") for _, _, r, _ in kids]
    opened = failed = 0
    errs = []
    for f in files:
        line = f.readline().split()
        if not line:
            failed += 1
            errs.append("child died")
            continue
        opened += int(line[1])
        failed += int(line[2])
        if line[4] != "-":
            errs.append(line[4])
    print("READY opened=%d failed=%d secs=%.1f%s" % (
        opened, failed, time.monotonic() - t0, (" errors=" + ";".join(errs)) if errs else ""), flush=True)
    time.sleep(a.hold)
    for _, _, _, w in kids:
        os.close(w)
    alive = closed = 0
    firsts = []
    for f in files:
        line = f.readline().split()
        if not line:
            continue
        alive += int(line[1])
        closed += int(line[2])
        if line[3] != "-":
            firsts.append(float(line[3]))
    for pid, _, _, _ in kids:
        os.waitpid(pid, 0)
    print("DONE alive=%d closed_by_server=%d first_close_s=%s" % (
        alive, closed, ("%.1f" % min(firsts)) if firsts else "-"), flush=True)


if __name__ == "__main__":
    main()
