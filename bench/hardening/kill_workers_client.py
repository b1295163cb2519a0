#!/usr/bin/env python3
"""Client of kill_workers.sh: CONNS keep-alive connections doing GETs of a
static file as fast as they are answered, while every INTERVAL seconds a
random worker of MASTER gets SIGKILL.

For each kill the victim is first stopped (SIGSTOP) so that the set of
connections it holds can be read exactly: its socket inodes from
/proc/PID/fd, mapped to the client's ports through /proc/net/tcp. Then it is
killed. A failed request is "expected" only if its connection was one of
those; any other failure (a fresh connection after the kill, a connection on
a surviving worker, a refused connect, a bad status) is "unexpected".

Respawn time: from the SIGKILL to a new child of MASTER in /proc.
Prints one line per kill, one per failure, and a RESULT line."""
import argparse
import bisect
import os
import random
import selectors
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hlib import Parser, err_name, request  # noqa: E402


def children(pid):
    out = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    for t in tasks:
        try:
            with open(f"/proc/{pid}/task/{t}/children") as f:
                out.update(int(x) for x in f.read().split())
        except OSError:
            pass
    return sorted(out)


def proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def proc_age(pid):
    """Seconds since the process started."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            up = float(f.read().split()[0])
        return up - start / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return float("nan")


def socket_inodes(pid):
    s = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return s
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:["):
            s.add(int(link[8:-1]))
    return s


def server_side(port):
    """inode -> client port, for the server's end of each connection on port."""
    m = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            if int(p[1].rsplit(":", 1)[1], 16) != port:
                continue
            rport = int(p[2].rsplit(":", 1)[1], 16)
            inode = int(p[9])
            if inode and rport:
                m[inode] = rport
    return m


class Conn:
    __slots__ = ("id", "sock", "lport", "opened", "phase", "parser", "reqs", "since", "victim_of")

    def __init__(self, cid, now):
        self.id, self.opened, self.reqs, self.victim_of = cid, now, 0, None
        self.sock = self.lport = self.parser = None
        self.phase, self.since = "connect", now


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--master", type=int, required=True)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--path", default="/1k.bin")
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--interval", type=float, default=2)
    ap.add_argument("--tail", type=float, default=3, help="seconds of load after the last kill")
    ap.add_argument("--timeout", type=float, default=5)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--quiet-expected", action="store_true")
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    req = request(a.path)
    sel = selectors.DefaultSelector()
    t0 = time.monotonic()
    now = t0
    next_id = 0
    conns = {}  # fd -> Conn
    by_port = {}  # client port -> Conn (open ones)
    reopen_at = []  # times at which to open a connection
    ok = 0
    failures = []  # (t, conn id, lport, age, reqs, phase, error, victim_of)
    opened = 0
    kills = []  # dicts
    pending = None  # kill awaiting its respawn
    kill_times = [a.interval * k for k in range(1, int(a.duration / a.interval + 1e-9) + 1)]
    end = t0 + a.duration + a.tail
    last_sweep = t0

    def rel(t):
        return t - t0

    def open_conn():
        nonlocal next_id, opened
        c = Conn(next_id, now)
        next_id += 1
        opened += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.sock = s
        rc = s.connect_ex(("127.0.0.1", a.port))
        try:
            c.lport = s.getsockname()[1]
        except OSError:
            c.lport = 0
        conns[s.fileno()] = c
        if c.lport:
            by_port[c.lport] = c
        if rc not in (0, 115):  # EINPROGRESS
            fail(c, OSError(rc, os.strerror(rc)))
            return
        sel.register(s, selectors.EVENT_WRITE)

    def drop(c):
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        conns.pop(c.sock.fileno(), None)
        if by_port.get(c.lport) is c:
            del by_port[c.lport]
        c.sock.close()

    def fail(c, e):
        failures.append((rel(now), c.id, c.lport, now - c.opened, c.reqs, c.phase, err_name(e), c.victim_of))
        drop(c)
        bisect.insort(reopen_at, now + (0.05 if c.phase == "connect" else 0))

    def send(c):
        try:
            c.sock.send(req)
        except OSError as e:
            c.phase = "send"
            fail(c, e)
            return
        c.phase = "first response" if c.reqs == 0 else "response"
        c.since = now
        if c.parser is None:
            c.parser = Parser()
        sel.modify(c.sock, selectors.EVENT_READ)

    def on_event(c, mask):
        nonlocal ok
        if c.phase == "connect":
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                fail(c, OSError(err, os.strerror(err)))
                return
            send(c)
            return
        try:
            data = c.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            fail(c, e)
            return
        if not data:
            fail(c, EOFError("mid-response" if c.parser.pending() else "before response"))
            return
        try:
            got = c.parser.feed(data)
        except ValueError as e:
            fail(c, e)
            return
        if not got:
            return
        r = got[0]
        if len(got) > 1 or r.status != 200 or r.length != a.size:
            fail(c, ValueError("status %d, %d bytes, %d responses" % (r.status, r.length, len(got))))
            return
        ok += 1
        c.reqs += 1
        if r.close:
            drop(c)
            bisect.insort(reopen_at, now)
            return
        send(c)

    def do_kill(k):
        kids = children(a.master)
        if not kids:
            print("kill %d: master %d has no worker" % (k, a.master), flush=True)
            return None
        victim = rnd.choice(kids)
        age = proc_age(victim)
        os.kill(victim, signal.SIGSTOP)
        deadline = time.monotonic() + 0.5
        while proc_state(victim) not in ("T", "t", "gone") and time.monotonic() < deadline:
            time.sleep(0.0005)
        mine = socket_inodes(victim)
        others = set()
        for o in kids:
            if o != victim:
                others |= socket_inodes(o)
        m = server_side(a.port)
        ports = {m[i] for i in mine if i in m}
        n_other = len({m[i] for i in others if i in m})
        os.kill(victim, signal.SIGKILL)
        t = time.monotonic()
        marked = 0
        for p in ports:
            c = by_port.get(p)
            if c is not None and c.victim_of is None:
                c.victim_of = k
                marked += 1
        return {
            "k": k, "t": t, "victim": victim, "age": age, "conns": len(ports), "marked": marked,
            "others": n_other, "before": set(kids), "respawn": None, "new": None,
        }

    for _ in range(a.conns):
        open_conn()

    while True:
        now = time.monotonic()
        if now >= end:
            break
        if kill_times and now - t0 >= kill_times[0]:
            kill_times.pop(0)
            if pending is not None:
                print("kill %d: worker not respawned before the next kill" % pending["k"], flush=True)
            pending = do_kill(len(kills) + 1)
            if pending:
                kills.append(pending)
            now = time.monotonic()
        if pending is not None:
            new = set(children(a.master)) - pending["before"]
            if new:
                pending["respawn"] = time.monotonic() - pending["t"]
                pending["new"] = min(new)
                pending = None
            elif time.monotonic() - pending["t"] > 10:
                pending = None
        while reopen_at and reopen_at[0] <= now and len(conns) < a.conns:
            reopen_at.pop(0)
            open_conn()
        if now - last_sweep > 0.1:
            last_sweep = now
            for c in list(conns.values()):
                if now - c.since > a.timeout:
                    fail(c, socket.timeout())
        if pending is not None:
            timeout = 0.001
        else:
            nxt = min([end] + ([t0 + kill_times[0]] if kill_times else []) + reopen_at[:1])
            timeout = max(0.0, min(0.05, nxt - now))
        for key, mask in sel.select(timeout):
            c = conns.get(key.fd)
            if c is not None and c.sock is key.fileobj:
                now = time.monotonic()
                on_event(c, mask)

    elapsed = time.monotonic() - t0
    for c in list(conns.values()):
        drop(c)

    expected = [f for f in failures if f[7] is not None]
    unexpected = [f for f in failures if f[7] is None]
    for kd in kills:
        print(
            "kill %2d at %6.3fs: worker %d (age %.1fs) held %d connections (others %d); "
            "respawn %s"
            % (
                kd["k"], rel(kd["t"]), kd["victim"], kd["age"], kd["conns"], kd["others"],
                ("%.1f ms (new worker %d)" % (kd["respawn"] * 1000, kd["new"])) if kd["respawn"] is not None
                else "NOT SEEN within 10 s",
            ),
            flush=True,
        )
    failed_by_kill = {}
    for f in expected:
        failed_by_kill[f[7]] = failed_by_kill.get(f[7], 0) + 1
    survivors = sum(max(0, kd["marked"] - failed_by_kill.get(kd["k"], 0)) for kd in kills)
    for f in failures:
        t, cid, lport, age, reqs, phase, err, victim = f
        if victim is not None and a.quiet_expected:
            continue
        print(
            "failure at %6.3fs: conn #%d (port %d, open %.3fs, %d requests) %s in %s: %s"
            % (t, cid, lport, age, reqs, err, phase,
               ("expected, on the worker of kill %d" % victim) if victim is not None else "UNEXPECTED"),
            flush=True,
        )
    resp = sorted(kd["respawn"] * 1000 for kd in kills if kd["respawn"] is not None)
    # How evenly the workers share the connections, seen at each kill: the
    # busiest worker's part (0.5 is even with two workers).
    shares = [max(kd["conns"], kd["others"]) / (kd["conns"] + kd["others"])
              for kd in kills if kd["conns"] + kd["others"]]
    print(
        "RESULT kills=%d requests_ok=%d failed=%d expected=%d unexpected=%d "
        "victim_conns_not_failed=%d conns_opened=%d req_per_s=%.0f "
        "respawn_ms_median=%s respawn_ms_max=%s respawn_missing=%d busiest_worker_share=%s"
        % (
            len(kills), ok, len(failures), len(expected), len(unexpected), survivors, opened, ok / elapsed,
            ("%.1f" % resp[len(resp) // 2]) if resp else "-", ("%.1f" % resp[-1]) if resp else "-",
            sum(1 for kd in kills if kd["respawn"] is None),
            ("%.2f" % (sum(shares) / len(shares))) if shares else "-",
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
