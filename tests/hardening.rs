//! Cheap denials of service and log forgery: a peer's close that comes
//! with its last bytes, a full worker making room, escaped log lines.

mod common;

use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use common::*;

/// Sends `bytes` and the FIN in one segment (TCP_CORK holds the data until
/// the shutdown), so that the server sees both in a single epoll event.
/// Returns what came back and whether the server closed within `limit`.
fn send_with_fin(port: u16, bytes: &[u8], limit: Duration) -> (Vec<u8>, bool) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let sock = socket2::SockRef::from(&s);
    sock.set_tcp_cork(true).unwrap();
    (&s).write_all(bytes).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (out, false);
        }
        s.set_read_timeout(Some(left)).unwrap();
        match (&s).read_retry(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset also ends the connection.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

fn server(mode: &str) -> Server {
    Server::with(Opts {
        main: format!("event_mode = \"{mode}\""),
        ..Opts::default()
    })
}

/// Far below the 60 s header/body timeouts and the 75 s keep-alive that
/// held these connections before; generous for a loaded CI machine.
const PROMPT: Duration = Duration::from_secs(5);

fn half_close_with_partial_head(mode: &str) {
    let s = server(mode);
    for _ in 0..20 {
        let (out, closed) = send_with_fin(s.port, b"GET / HTTP/1.1\r\nHost: a\r\n", PROMPT);
        assert!(closed, "a partial head then FIN must close at once");
        assert!(out.is_empty(), "{}", String::from_utf8_lossy(&out));
    }
}

fn half_close_after_complete_request(mode: &str) {
    let s = server(mode);
    for _ in 0..20 {
        let (out, closed) = send_with_fin(s.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", PROMPT);
        assert!(closed, "after its response, a half-closed connection must close");
        let rs = parse_responses(&out, false);
        assert_eq!(rs.len(), 1, "{}", String::from_utf8_lossy(&out));
        assert_eq!(rs[0].status, 200);
    }
    // Pipelined requests before the FIN are all answered.
    let (out, closed) = send_with_fin(
        s.port,
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET /nope HTTP/1.1\r\nHost: a\r\n\r\n",
        PROMPT,
    );
    assert!(closed);
    let statuses: Vec<u16> = parse_responses(&out, false).iter().map(|r| r.status).collect();
    assert_eq!(statuses.len(), 3, "{}", String::from_utf8_lossy(&out));
    assert_eq!(statuses[0], 200);
    assert_eq!(statuses[2], 404);
}

fn half_close_mid_body(mode: &str) {
    let s = server(mode);
    for _ in 0..20 {
        let (out, closed) = send_with_fin(
            s.port,
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten b",
            PROMPT,
        );
        assert!(closed, "a short body then FIN must close at once");
        // The FIN seen first: nothing sent, logged 400. The answer (405:
        // it reads no body) may also go before the FIN is read, which
        // level mode's one read per event makes likely.
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || (text.starts_with("HTTP/1.1 405 ") && text.matches("HTTP/1.1").count() == 1),
            "{text}"
        );
    }
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .lines()
            .filter(|l| l.contains("\"POST / HTTP/1.1\" 400 0") || l.contains("\"POST / HTTP/1.1\" 405 "))
            .count()
            == 20),
        "each logged as a 400 or its 405: {}",
        s.access_log()
    );
    assert!(
        s.error_log()
            .contains("closed the connection before sending the whole request body")
    );
}

mod edge {
    #[test]
    fn half_close_with_partial_head() {
        super::half_close_with_partial_head("edge")
    }
    #[test]
    fn half_close_after_complete_request() {
        super::half_close_after_complete_request("edge")
    }
    #[test]
    fn half_close_mid_body() {
        super::half_close_mid_body("edge")
    }
}

mod level {
    #[test]
    fn half_close_with_partial_head() {
        super::half_close_with_partial_head("level")
    }
    #[test]
    fn half_close_after_complete_request() {
        super::half_close_after_complete_request("level")
    }
    #[test]
    fn half_close_mid_body() {
        super::half_close_mid_body("level")
    }
}

/// The storm that filled the worker: many "partial head, then FIN"
/// connections leave nothing behind, and a new client is served.
#[test]
fn half_close_storm_leaves_no_connection_behind() {
    let s = Server::with(Opts {
        main: "workers = 1\nworker_connections = 64".into(),
        ..Opts::default()
    });
    let mut conns = Vec::new();
    for i in 0..300 {
        let c = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        socket2::SockRef::from(&c).set_tcp_cork(true).unwrap();
        let _ = (&c).write_all(format!("GET /{i} HTTP/1.1\r\nHost: a\r\n").as_bytes());
        let _ = c.shutdown(Shutdown::Write);
        conns.push(c);
        if conns.len() == 50 {
            conns.clear(); // the client keeps no descriptor
        }
    }
    drop(conns);
    // Held until a timeout (60 s), they would keep every slot busy.
    assert!(eventually(PROMPT, || s.get("/").status == 200));
}

fn keep_alive_get(s: &Server) -> TcpStream {
    let mut c = s.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read_retry(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    c
}

/// Every slot held by an idle keep-alive connection: a new client is
/// served at once, and the longest-idle connection is the one closed.
#[test]
fn full_worker_closes_idle_keep_alive_for_a_new_client() {
    let s = Server::with(Opts {
        main: "workers = 1\nworker_connections = 8".into(),
        ..Opts::default()
    });
    let mut idle: Vec<TcpStream> = (0..8).map(|_| keep_alive_get(&s)).collect();
    let mut c = s.connect();
    c.set_read_timeout(Some(PROMPT)).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(rs[0].status, 200);
    // The oldest idle connection was closed by the server (clean FIN).
    idle[0].set_read_timeout(Some(PROMPT)).unwrap();
    let mut b = [0u8; 16];
    assert!(
        matches!(idle[0].read_retry(&mut b), Ok(0)),
        "the longest-idle connection is closed"
    );
}

/// Every slot busy with a request in progress: a new client is refused
/// fast with 503 (not left in the kernel's queue), and the burst is logged.
#[test]
fn full_worker_with_nothing_idle_refuses_fast() {
    let s = Server::with(Opts {
        main: "workers = 1\nworker_connections = 8".into(),
        ..Opts::default()
    });
    let busy: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut c = s.connect();
            c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
            c
        })
        .collect();
    for _ in 0..3 {
        let mut c = s.connect();
        c.set_read_timeout(Some(PROMPT)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
        let start = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let end = loop {
            match c.read_retry(&mut buf) {
                Ok(0) => break "end of file".to_string(),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break e.to_string(),
            }
        };
        let rs = parse_responses(&out, false);
        assert_eq!(
            rs.len(),
            1,
            "{:?} after {:?}: {}\n{}",
            end,
            start.elapsed(),
            String::from_utf8_lossy(&out),
            s.error_log()
        );
        assert_eq!(rs[0].status, 503);
        assert_eq!(rs[0].header("connection"), Some("close"));
    }
    assert!(
        s.error_log().contains("all worker_connections are busy"),
        "{}",
        s.error_log()
    );
    assert_eq!(
        s.error_log().matches("refusing new connections").count(),
        1,
        "one line per burst: {}",
        s.error_log()
    );
    drop(busy);
    assert!(eventually(Duration::from_secs(5), || s.get("/").status == 200));
    assert!(
        eventually(Duration::from_secs(5), || s
            .error_log()
            .contains(" connections refused in ")),
        "{}",
        s.error_log()
    );
}

/// A newline or a non-UTF-8 byte in the path cannot forge or break an
/// error-log line; a symlink loop is named as such.
#[test]
fn log_lines_escape_client_bytes() {
    let s = Server::start();
    std::os::unix::fs::symlink("/etc/passwd", s.root.join("x\nFORGED")).unwrap();
    let y: &std::ffi::OsStr = std::os::unix::ffi::OsStrExt::from_bytes(b"y\xff");
    std::os::unix::fs::symlink("/etc/passwd", s.root.join(y)).unwrap();
    std::os::unix::fs::symlink("loop", s.root.join("loop")).unwrap();
    assert_eq!(s.get("/x%0aFORGED").status, 403);
    assert_eq!(s.get("/y%ff").status, 403);
    assert_eq!(s.get("/loop").status, 403);
    let r = s.request("GET /x%0d%0aFORGED HTTP/1.1\r\nHost: a\r\nUser-Agent: caf\u{e9}\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 404);
    assert!(eventually(Duration::from_secs(3), || s.access_log().lines().count() >= 4));
    let log = s.error_log();
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
    assert!(log.contains("\"x\\x0AFORGED\" resolves outside root"), "{log}");
    assert!(log.contains("\"y\\xFF\" resolves outside root"), "{log}");
    assert!(log.contains("\"loop\" under root"), "{log}");
    assert!(log.contains("symlink loop"), "{log}");
    // Bytes that are not UTF-8 are logged as sent, escaped (nginx's \xHH).
    s.raw(b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: caf\xe9\r\nReferer: r\xff\r\nConnection: close\r\n\r\n");
    s.raw(b"GET /\xff HTTP/1.1 x\r\n\r\n");
    assert!(eventually(Duration::from_secs(3), || s.access_log().lines().count() >= 6));
    let access = s.access_log();
    assert!(!access.lines().any(|l| l.starts_with("FORGED")), "{access}");
    assert!(access.contains("\"caf\\xC3\\xA9\""), "{access}");
    assert!(access.contains("\"r\\xFF\" \"caf\\xE9\""), "{access}");
    assert!(access.contains("\"GET /\\xFF HTTP/1.1 x\" 400 "), "{access}");
}

/// A server whose `/slow.sh` CGI script answers after `secs` seconds.
fn limited_server(limits: &str, secs: u32) -> Server {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hi\n").unwrap();
    let script = root.join("slow.sh");
    write_script(
        &script,
        &format!("#!/bin/sh\nsleep {secs}\nprintf 'Content-Type: text/plain\\n\\nslow\\n'\n"),
    );
    Server::with_root(
        Opts {
            main: "workers = 2".into(),
            server: format!(
                "{limits}\n[[server.cgi]]\nextensions = [\".sh\"]\ndir = \"{}\"\n",
                root.display()
            ),
            ..Opts::default()
        },
        dir,
        root,
    )
}

/// limit_conn counts requests in progress per address across workers
/// (many concurrent connections land on both), and a worker killed with
/// requests in progress does not leave its address counted.
#[test]
fn limit_conn_holds_across_workers_and_worker_crashes() {
    let s = limited_server("limit_conn = 1", 2);
    let port = s.port;
    let handles: Vec<_> = (0..6)
        .map(|_| std::thread::spawn(move || status_from("127.0.0.1", port, "/slow.sh")))
        .collect();
    let mut got: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    assert_eq!(got, [200, 503, 503, 503, 503, 503], "one request at a time per address");
    // Another address is counted apart; static files too are limited.
    assert_eq!(status_from("127.0.0.2", port, "/"), 200);
    assert!(
        s.error_log()
            .contains("limit_conn of server #0 (1 at once) reached by client 127.0.0.1")
    );
    assert!(
        eventually(Duration::from_secs(5), || s
            .error_log()
            .contains("limit_conn of server #0 refused ")),
        "{}",
        s.error_log()
    );

    // Kill every worker in the middle of slow requests: the respawned
    // workers must not find the address still counted.
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let ip = if i == 0 { "127.0.0.1" } else { "127.0.0.2" };
            std::thread::spawn(move || status_from(ip, port, "/slow.sh"))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let old = s.workers();
    for w in &old {
        std::process::Command::new("kill")
            .args(["-KILL", &w.to_string()])
            .status()
            .unwrap();
    }
    for h in slow {
        let _ = h.join();
    }
    assert!(eventually(Duration::from_secs(10), || {
        let now = s.workers();
        now.len() == 2 && now.iter().all(|w| !old.contains(w))
    }));
    assert_eq!(status_from("127.0.0.1", port, "/"), 200, "{}", s.error_log());
    assert_eq!(status_from("127.0.0.2", port, "/"), 200);
}

/// limit_req: the burst passes at once with nodelay, the excess gets the
/// configured status, and the burst is logged once, not per request.
#[test]
fn limit_req_burst_nodelay_and_status() {
    let s = limited_server("limit_req = { rate = \"1r/m\", burst = 2, nodelay = true }", 0);
    let mut got: Vec<u16> = (0..8).map(|_| status_from("127.0.0.1", s.port, "/")).collect();
    got.sort();
    assert_eq!(got, [200, 200, 200, 503, 503, 503, 503, 503]);
    assert_eq!(
        status_from("127.0.0.2", s.port, "/"),
        200,
        "another address has its own bucket"
    );
    // One line when a burst starts and one with its total when it ends, per
    // worker that saw it (two workers: the requests may split between them).
    let refused = |log: &str| -> usize {
        log.lines()
            .filter_map(|l| l.split("refused ").nth(1)?.split(' ').next()?.parse::<usize>().ok())
            .sum()
    };
    assert!(
        eventually(Duration::from_secs(5), || refused(&s.error_log()) == 5),
        "{}",
        s.error_log()
    );
    let starts = s.error_log().matches("reached by client").count();
    let ends = s.error_log().matches("refused ").count();
    assert!((1..=2).contains(&starts) && starts == ends, "{}", s.error_log());
}

/// Without nodelay, requests over the rate wait their turn instead of
/// being refused; limit_req_status changes the refusal.
#[test]
fn limit_req_delays_within_the_burst() {
    let s = Server::with(Opts {
        http: "limit_req_status = 429".into(),
        server: "limit_req = { rate = \"5r/s\", burst = 3 }".into(),
        ..Opts::default()
    });
    let mut c = s.connect();
    let start = Instant::now();
    c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut c);
    let statuses: Vec<u16> = parse_responses(&out, false).iter().map(|r| r.status).collect();
    // One at once, three delayed (200 ms apart at 5 r/s); the fifth arrives
    // when the first delays have drained: the bucket is never over 3.
    assert_eq!(statuses.len(), 5, "{}", String::from_utf8_lossy(&out));
    assert!(statuses.iter().all(|&st| st == 200), "{statuses:?}");
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "delayed, not refused: {:?}",
        start.elapsed()
    );
    // A burst from parallel connections overflows it: 429.
    let port = s.port;
    let hs: Vec<_> = (0..10)
        .map(|_| std::thread::spawn(move || status_from("127.0.0.1", port, "/")))
        .collect();
    let got: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(got.contains(&429), "{got:?}");
}

#[test]
fn limit_config_errors_name_the_key() {
    let dir = TempDir::new();
    let cfg = dir.path().join("c.toml");
    std::fs::create_dir_all(dir.path().join("www")).unwrap();
    for (text, want) in [
        (
            "[[server]]\nroot = \"www\"\nlimit_req = { rate = \"fast\" }\n",
            ":3: server.limit_req: rate \"fast\"",
        ),
        (
            "[[server]]\nroot = \"www\"\nlimit_req = { burst = 3 }\n",
            "needs a rate",
        ),
        ("[[server]]\nroot = \"www\"\nlimit_conn = 0\n", "server.limit_conn"),
        (
            "[http]\nlimit_req_status = 200\n[[server]]\nroot = \"www\"\n",
            "http.limit_req_status",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let (code, out) = run_corral(&["-t", "-c", cfg.to_str().unwrap()]);
        assert_ne!(code, 0, "{text}");
        assert!(out.contains(want), "{text}: {out}");
    }
}

/// Out of file descriptors with busy connections only: new connections are
/// refused (a 503, or a close) at once, not left in the queue, in the
/// reactor and with threads; service resumes when descriptors free up.
fn out_of_descriptors(main: &str) {
    let s = Server::with(Opts {
        main: format!("workers = 1\nworker_rlimit_nofile = 64\n{main}"),
        ..Opts::default()
    });
    let mut held = Vec::new();
    for _ in 0..70 {
        let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        // A partial head: busy, never reclaimed as idle.
        (&t).write_all(b"GET / HTTP/1.1\r\n").unwrap();
        held.push(t);
    }
    std::thread::sleep(Duration::from_millis(300));
    // Out of descriptors with nothing queued, the worker waits for the next
    // connection: it does not spin on accept() (which fails with EMFILE on
    // an empty queue too). A spinning worker takes a third of a core or
    // more even on a loaded machine; an idle one next to nothing.
    let worker = s.workers()[0];
    let before = cpu_ticks(worker);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(worker) - before;
    assert!(
        used < 20,
        "the worker used {used} of 100 CPU ticks while out of descriptors and idle"
    );
    let mut t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    // `close`: a 200 (had a descriptor been free) ends too, and shows below.
    t.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    t.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut got = Vec::new();
    let answered = loop {
        let mut buf = [0u8; 4096];
        match t.read_retry(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&got);
    assert!(
        answered,
        "a new connection hangs while the worker is out of descriptors; got {text:?}\n{}",
        s.error_log()
    );
    assert!(
        got.is_empty() || text.starts_with("HTTP/1.1 503"),
        "{text}\n{}",
        s.error_log()
    );
    assert!(
        eventually(Duration::from_secs(3), || s
            .error_log()
            .contains("out of file descriptors")),
        "{}",
        s.error_log()
    );
    // One line when refusals start and one with their total, not one per
    // client: a flood must not flood the log.
    assert!(
        eventually(Duration::from_secs(3), || s
            .error_log()
            .contains(" connections refused in ")),
        "{}",
        s.error_log()
    );
    let lines = s
        .error_log()
        .lines()
        .filter(|l| l.contains("out of file descriptors"))
        .count();
    assert!(lines <= 4, "{lines} lines:\n{}", s.error_log());
    drop(held);
    assert!(eventually(Duration::from_secs(5), || get_on(s.port, "/")
        .is_some_and(|r| r.status == 200)));
}

#[test]
fn out_of_descriptors_refuses_at_once() {
    out_of_descriptors("");
}

#[test]
fn out_of_descriptors_refuses_at_once_with_threads() {
    out_of_descriptors("worker_threads = 2");
}

/// Two workers on the shared socket, one of them full of slow clients: new
/// clients are served by the other, which has room, not refused with 503
/// by the full one (it steps aside after a refusal, as nginx's does).
#[test]
fn a_full_worker_leaves_new_clients_to_one_with_room() {
    full_worker_leaves_new_clients("");
}

#[test]
fn a_full_threaded_worker_leaves_new_clients_to_one_with_room() {
    full_worker_leaves_new_clients("worker_threads = 2\n");
}

fn full_worker_leaves_new_clients(main: &str) {
    let s = Server::with(Opts {
        main: format!("workers = 2\nworker_connections = 8\n{main}"),
        ..Opts::default()
    });
    // Twelve slow clients: more than one worker holds, fewer than two.
    let mut slow = Vec::new();
    for _ in 0..12 {
        let mut c = s.connect();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").unwrap();
        slow.push(c);
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let mut codes = Vec::new();
    for _ in 0..30 {
        let mut c = s.connect();
        c.set_read_timeout(Some(PROMPT)).unwrap();
        c.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            .unwrap();
        let out = read_to_close(&mut c);
        codes.push(parse_responses(&out, false).first().map_or(0, |r| r.status));
        std::thread::sleep(Duration::from_millis(30));
    }
    let refused = codes.iter().filter(|&&c| c != 200).count();
    assert!(refused <= 1, "{codes:?}\n{}", s.error_log());
    drop(slow);
}
