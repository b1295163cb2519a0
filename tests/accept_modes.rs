//! The accept modes of `[main] accept` (exclusive, reuseport, dispatch):
//! each serves load, survives a worker killed with SIGKILL, and loses no
//! request across reloads (including ones that change the mode) and a
//! binary upgrade.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use common::*;

const MODES: [&str; 3] = ["exclusive", "reuseport", "dispatch"];

fn opts(mode: &str) -> Opts {
    Opts {
        main: format!("accept = \"{mode}\"\n"),
        ..Opts::default()
    }
}

/// Listening TCP sockets on `port` (from /proc/net/tcp).
fn listening_sockets(port: u16) -> usize {
    let want = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", &f[1][f[1].len() - 5..]) == want && f[3] == "0A"
        })
        .count()
}

/// Writes `o` as the config, sends SIGHUP and waits for the reload to apply.
fn reload_with(s: &Server, o: &Opts) {
    let before = s.error_log().matches("reload applied").count();
    s.write_config(o);
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || s
            .error_log()
            .matches("reload applied")
            .count()
            > before),
        "reload {}",
        before + 1
    );
}

fn sockets_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn each_mode_serves_and_survives_a_killed_worker() {
    for mode in MODES {
        let s = Server::with(opts(mode));
        assert!(s.error_log().contains(&format!("accept: {mode}")), "{}", s.error_log());
        let want = if mode == "reuseport" { 2 } else { 1 };
        assert_eq!(listening_sockets(s.port), want, "{mode}: listening sockets");
        for keep_alive in [true, false] {
            let stop = load(s.port, 6, keep_alive);
            std::thread::sleep(Duration::from_millis(300));
            let victim = s.workers()[0];
            kill(victim, "KILL");
            assert!(
                eventually(Duration::from_secs(5), || !alive(victim) && s.workers().len() == 2),
                "{mode}: the killed worker is replaced"
            );
            std::thread::sleep(Duration::from_millis(300));
            let (ok, failed) = stop();
            assert!(ok > 200, "{mode}: the load ran ({ok} ok)");
            // Only what the killed worker held can fail.
            assert!(failed <= 6, "{mode} keep_alive={keep_alive}: {failed} failed of {ok}");
            // Right after a kill, new connections are all answered.
            let victim = s.workers()[1];
            kill(victim, "KILL");
            for i in 0..40 {
                let r = get_on(s.port, "/index.html");
                assert_eq!(r.map(|r| r.status), Some(200), "{mode}: request {i} after a kill");
            }
        }
        let log = s.error_log();
        assert!(log.contains("exited on signal 9"), "{mode}: {log}");
    }
}

#[test]
fn dispatch_least_conn_spreads_connections() {
    let s = Server::with(opts("dispatch"));
    let workers = s.workers();
    // The readiness probes' connections close first: wait for counts that
    // hold still.
    let mut before: Vec<usize> = workers.iter().map(|w| sockets_of(*w)).collect();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let now: Vec<usize> = workers.iter().map(|w| sockets_of(*w)).collect();
        if now == before {
            break;
        }
        before = now;
    }
    // Idle keep-alive connections, opened one after the other: exclusive
    // mode would typically give them all to one worker.
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        assert!(std::io::Read::read(&mut c, &mut buf).unwrap() > 0);
        conns.push(c);
    }
    let extra: Vec<usize> = workers
        .iter()
        .zip(&before)
        .map(|(w, b)| sockets_of(*w).saturating_sub(*b))
        .collect();
    assert_eq!(extra.iter().sum::<usize>(), 20, "{extra:?}");
    assert!(extra.iter().all(|&n| (8..=12).contains(&n)), "uneven: {extra:?}");
}

#[test]
fn reloads_and_mode_changes_under_load_lose_nothing() {
    let s = Server::with(opts("exclusive"));
    let stop_ka = load(s.port, 4, true);
    let stop_close = load(s.port, 4, false);
    // Every mode to every other one, and reloads within a mode.
    for mode in [
        "exclusive",
        "reuseport",
        "reuseport",
        "dispatch",
        "dispatch",
        "exclusive",
        "dispatch",
        "reuseport",
    ] {
        std::thread::sleep(Duration::from_millis(400));
        reload_with(&s, &opts(mode));
    }
    std::thread::sleep(Duration::from_millis(500));
    let (ok1, failed1) = stop_ka();
    let (ok2, failed2) = stop_close();
    assert!(ok1 > 300 && ok2 > 300, "the load ran: {ok1} + {ok2}");
    assert_eq!(
        failed1 + failed2,
        0,
        "failed: {failed1} keep-alive, {failed2} new connections"
    );
    assert_eq!(s.error_log().matches("reload applied").count(), 8);
    assert!(!s.error_log().contains("[error]"), "{}", s.error_log());
}

#[test]
fn binary_upgrade_in_each_mode_loses_nothing() {
    for mode in MODES {
        let (mut s, _bin) = start_copy(opts(mode));
        let old_workers = s.workers();
        let stop_ka = load(s.port, 3, true);
        let stop_close = load(s.port, 3, false);
        std::thread::sleep(Duration::from_millis(300));
        let new = upgrade(&s);
        std::thread::sleep(Duration::from_millis(300));
        s.signal("WINCH");
        assert!(eventually(Duration::from_secs(10), || old_workers
            .iter()
            .all(|w| !alive(*w))));
        std::thread::sleep(Duration::from_millis(300));
        s.signal("QUIT");
        assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
        std::thread::sleep(Duration::from_millis(300));
        let (ok1, failed1) = stop_ka();
        let (ok2, failed2) = stop_close();
        assert!(ok1 > 100 && ok2 > 100, "{mode}: the load ran: {ok1} + {ok2}");
        assert_eq!(
            failed1 + failed2,
            0,
            "{mode}: failed {failed1} keep-alive, {failed2} new connections"
        );
        let want = if mode == "reuseport" { 2 } else { 1 };
        assert_eq!(listening_sockets(s.port), want, "{mode}: the same sockets, inherited");
        stop_pid(new);
    }
}

/// A worker that stops reading its channel (here: SIGSTOP) is passed over:
/// with either policy, new connections go to the other worker at once.
#[test]
fn dispatch_passes_over_a_stuck_worker() {
    for policy in ["least_conn", "round_robin"] {
        let s = Server::with(Opts {
            main: format!("accept = \"dispatch\"\ndispatch = \"{policy}\"\n"),
            ..Opts::default()
        });
        let stuck = s.workers()[0];
        kill(stuck, "STOP");
        let start = std::time::Instant::now();
        let mut served = 0;
        for _ in 0..30 {
            let mut c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c.write_all(b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let r = parse_responses(&read_to_close(&mut c), false);
            if r.first().is_some_and(|r| r.status == 200) {
                served += 1;
            }
        }
        let took = start.elapsed();
        kill(stuck, "CONT");
        assert_eq!(served, 30, "{policy}");
        // A connection told to the stuck worker before it was seen stuck
        // waits for the next look at the queue (50 ms while one is behind).
        assert!(took < Duration::from_millis(1000), "{policy}: {took:?}");
    }
}

/// Dispatch with one worker: nothing to choose, so the worker accepts
/// itself (no channel from the master, as with `exclusive`); reloads to
/// two workers and back, under load, lose nothing.
#[test]
fn dispatch_with_one_worker_accepts_directly() {
    let one = |mode: &str| Opts {
        main: format!("workers = 1\naccept = \"{mode}\"\n"),
        ..Opts::default()
    };
    let exclusive = Server::with(one("exclusive"));
    let s = Server::with(one("dispatch"));
    assert!(
        s.error_log()
            .contains("accept: dispatch, one worker: it accepts itself"),
        "{}",
        s.error_log()
    );
    let (w, we) = (s.workers()[0], exclusive.workers()[0]);
    assert_eq!(sockets_of(w), sockets_of(we), "no dispatch channel");
    let stop_ka = load(s.port, 3, true);
    let stop_close = load(s.port, 3, false);
    for o in [opts("dispatch"), one("dispatch"), opts("dispatch")] {
        std::thread::sleep(Duration::from_millis(300));
        reload_with(&s, &o);
    }
    std::thread::sleep(Duration::from_millis(300));
    let ((ok1, f1), (ok2, f2)) = (stop_ka(), stop_close());
    assert!(ok1 > 100 && ok2 > 100, "the load ran: {ok1} + {ok2}");
    assert_eq!(f1 + f2, 0, "failed: {f1} keep-alive, {f2} new connections");
    // Two workers again: the master dispatches (each holds its channel).
    assert!(
        eventually(Duration::from_secs(10), || {
            let ws = s.workers();
            ws.len() == 2 && ws.iter().all(|&w| sockets_of(w) == sockets_of(we) + 1)
        }),
        "two dispatched workers"
    );
}
