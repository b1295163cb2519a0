//! `worker_threads`: several threads per worker on one epoll instance.
//! Many clients, keep-alive and pipelined, each request carrying its own
//! token through static files, `return`, CGI and FastCGI (php-fpm): every
//! answer must come back once, on its own connection, in order.

mod common;

use std::io::{BufReader, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::php::Php;
use common::*;

/// A site with every kind of handler, each able to echo a token.
fn site(threads: usize, workers: usize) -> (Php, Server) {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("cgi")).unwrap();
    for i in 0..8 {
        std::fs::write(root.join(format!("f{i}.txt")), format!("static file {i}\n")).unwrap();
    }
    std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
    std::fs::write(root.join("t.php"), "<?php echo 'php:', $_GET['t'] ?? '', \"\\n\";\n").unwrap();
    let script = root.join("cgi/t.cgi");
    write_script(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\ncgi:%s\\n' \"$QUERY_STRING\"\n",
    );
    let sock = dir.path().join("fpm.sock");
    let fpm = Php::fpm(dir.path(), "www", &sock.display().to_string(), 4, "");
    let o = Opts {
        main: format!("workers = {workers}\nworker_threads = {threads}\n"),
        server: format!(
            "[[server.location]]\nmatch = \"/r/\"\nreturn = \"200 return:$request_uri\"\n\
             [[server.location]]\nmatch = \"~ \\\\.cgi$\"\ncgi = {{ extensions = [\".cgi\"], max_concurrent = 256 }}\n\
             [[server.location]]\nmatch = \"~ \\\\.php$\"\nfastcgi = {{ pass = \"unix:{}\" }}\n",
            sock.display()
        ),
        ..Opts::default()
    };
    (fpm, Server::with_root(o, dir, root))
}

/// Request `i` of client `c`: which handler, and the body it must answer.
fn request(c: usize, i: usize) -> (String, String) {
    let t = format!("{c}-{i}");
    match i % 8 {
        0 | 4 => (format!("/r/{t}"), format!("return:/r/{t}")),
        1 | 5 => (format!("/t.php?t={t}"), format!("php:{t}\n")),
        2 => (format!("/cgi/t.cgi?{t}"), format!("cgi:{t}\n")),
        _ => {
            let f = (c + i) % 8;
            (format!("/f{f}.txt?{t}"), format!("static file {f}\n"))
        }
    }
}

/// `clients` keep-alive connections sending `rounds` batches of `depth`
/// pipelined requests each; returns how many answers matched.
fn drive(port: u16, clients: usize, rounds: usize, depth: usize) -> usize {
    let good = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let good = good.clone();
            std::thread::spawn(move || {
                let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut w = s.try_clone().unwrap();
                let mut r = BufReader::new(s);
                for round in 0..rounds {
                    let batch: Vec<(String, String)> = (0..depth).map(|k| request(c, round * depth + k)).collect();
                    let mut out = String::new();
                    for (path, _) in &batch {
                        out += &format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
                    }
                    w.write_all(out.as_bytes()).unwrap();
                    for (path, want) in &batch {
                        let (status, body) = read_response(&mut r).unwrap_or_else(|e| panic!("{path}: {e}"));
                        assert_eq!(status, 200, "{path}");
                        assert_eq!(String::from_utf8_lossy(&body), *want, "{path}: someone else's answer");
                        good.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    good.load(Ordering::Relaxed)
}

/// CPU time in ns (schedstat) of `pid`'s thread named `name`.
fn cpu_ns_of(pid: i32, name: &str) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|st| st.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

#[test]
fn every_answer_reaches_its_own_connection() {
    let (_fpm, s) = site(2, 1);
    let worker = s.workers()[0];
    // Two event threads, plus the CGI spawner's.
    assert!(
        eventually(Duration::from_secs(5), || threads_of(worker) >= 3),
        "{} threads",
        threads_of(worker)
    );
    let clients = 160;
    let (rounds, depth) = (10, 4);
    // Until the second event thread has served a share too (a parked one
    // costs ~0.1 ms a second), so both ran the handlers; every answer
    // checked.
    let mut drives = 0;
    while drives < 2 || (cpu_ns_of(worker, "worker-1") < 1_000_000 && drives < 20) {
        assert_eq!(drive(s.port, clients, rounds, depth), clients * rounds * depth);
        drives += 1;
    }
    let second = cpu_ns_of(worker, "worker-1");
    assert!(
        second >= 1_000_000,
        "the second thread served nothing ({second} ns, {drives} drives)"
    );
    // Connection: close per request, many at once.
    let good = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..16)
        .map(|c| {
            let (port, good) = (s.port, good.clone());
            std::thread::spawn(move || {
                for i in 0..40 {
                    let (path, want) = request(100 + c, i);
                    if let Some(r) = get_on(port, &path)
                        && r.status == 200
                        && r.text() == want
                    {
                        good.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(good.load(Ordering::Relaxed), 16 * 40);
    let log = s.error_log();
    assert!(!log.contains("[crit]") && !log.contains("panicked"), "{log}");
}

#[test]
fn threads_in_every_accept_mode_survive_kill_and_reload() {
    for mode in ["exclusive", "reuseport", "dispatch"] {
        let s = Server::with(Opts {
            main: format!("worker_threads = 2\naccept = \"{mode}\"\n"),
            ..Opts::default()
        });
        let stop_ka = load(s.port, 3, true);
        let stop_close = load(s.port, 3, false);
        for _ in 0..3 {
            std::thread::sleep(Duration::from_millis(300));
            s.signal("HUP");
        }
        std::thread::sleep(Duration::from_millis(500));
        let ((ok1, f1), (ok2, f2)) = (stop_ka(), stop_close());
        let (n, f) = (ok1 + ok2, f1 + f2);
        assert!(n > 300, "{mode}: the load ran ({n})");
        assert_eq!(f, 0, "{mode}: {f} failed across reloads");
        // SIGKILL one worker: the other keeps serving, it is replaced.
        assert!(eventually(Duration::from_secs(10), || s.workers().len() == 2));
        let victim = s.workers()[0];
        kill(victim, "KILL");
        for i in 0..30 {
            assert_eq!(
                get_on(s.port, "/index.html").map(|r| r.status),
                Some(200),
                "{mode}: {i}"
            );
        }
        assert!(eventually(Duration::from_secs(5), || s.workers().len() == 2 && !alive(victim)));
        // A graceful stop drains every thread.
        let mut s = s;
        s.signal("QUIT");
        assert_eq!(
            s.wait_exit(Duration::from_secs(10)),
            Some(0),
            "{mode}: {}",
            s.error_log()
        );
    }
}
