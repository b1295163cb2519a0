//! corral as a library: the programs in `examples/` (built by `cargo test`)
//! run their own protocols under corral's master and workers.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// `target/<profile>/examples/<name>`, next to this test's `deps/`.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples").join(name)
}

struct Example {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Example {
    fn start(name: &str, args: impl Fn(&str, &str) -> Vec<String>) -> Example {
        let dir = TempDir::new();
        let pid = dir.path().join("x.pid");
        for _ in 0..5 {
            let port = free_port();
            let _ = std::fs::remove_file(&pid);
            let mut child = Command::new(example(name))
                .args(args(&format!("127.0.0.1:{port}"), pid.to_str().unwrap()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("{}: {e}", example(name).display()));
            // The pid file is written once the listening sockets are bound:
            // a connection before it may reach another test's server that
            // took the same free port meanwhile.
            if eventually(Duration::from_secs(10), || {
                (pid.exists() && TcpStream::connect(("127.0.0.1", port)).is_ok())
                    || matches!(child.try_wait(), Ok(Some(_)))
            }) && child.try_wait().unwrap().is_none()
            {
                return Example { child, port, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("{name} did not start");
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn connect(&self) -> TcpStream {
        let c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let workers = children_of(self.pid());
        kill(self.pid(), "TERM");
        if !eventually(Duration::from_secs(5), || matches!(self.child.try_wait(), Ok(Some(_)))) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        for w in workers {
            if alive(w) {
                kill(w, "KILL");
            }
        }
    }
}

/// Sends 1 MiB and reads it back while sending (the echo must not stall
/// when the client is slow to read).
fn echo_round_trip(c: TcpStream) {
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let mut writer = c.try_clone().unwrap();
    let sent = data.clone();
    let t = std::thread::spawn(move || writer.write_all(&sent).unwrap());
    let mut back = vec![0u8; data.len()];
    let mut r = c;
    r.read_exact(&mut back).unwrap();
    t.join().unwrap();
    assert!(back == data, "echoed bytes differ");
}

#[test]
fn echo_example_in_every_accept_mode_with_reload_and_a_killed_worker() {
    for mode in ["exclusive", "reuseport", "dispatch"] {
        let e = Example::start("echo", |addr, pid| {
            vec![addr.into(), "2".into(), mode.into(), pid.into()]
        });
        assert!(
            eventually(Duration::from_secs(5), || children_of(e.pid()).len() == 2),
            "{mode}: two workers"
        );
        echo_round_trip(e.connect());
        // A connection open across a reload: its worker drains, and by
        // default (`Service::drain`) closes it once idle; what was sent
        // before is echoed first.
        let mut kept = e.connect();
        kept.write_all(b"before\n").unwrap();
        let mut r = BufReader::new(kept);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "before\n");
        let old = children_of(e.pid());
        kill(e.pid(), "HUP");
        line.clear();
        assert_eq!(
            r.read_line(&mut line).unwrap(),
            0,
            "{mode}: closed by the draining worker"
        );
        assert!(
            eventually(Duration::from_secs(10), || {
                let now = children_of(e.pid());
                now.len() == 2 && now.iter().all(|p| !old.contains(p))
            }),
            "{mode}: new workers after SIGHUP"
        );
        // The drained workers leave once their connections close.
        assert!(
            eventually(Duration::from_secs(10), || old.iter().all(|p| !alive(*p))),
            "{mode}"
        );
        // A killed worker is replaced; service goes on.
        let victim = children_of(e.pid())[0];
        kill(victim, "KILL");
        assert!(eventually(Duration::from_secs(5), || !alive(victim)
            && children_of(e.pid()).len() == 2));
        for _ in 0..10 {
            echo_round_trip(e.connect());
        }
    }
}

#[test]
fn kv_example_speaks_its_line_protocol() {
    let e = Example::start("kv", |addr, pid| vec![addr.into(), pid.into()]);
    let c = e.connect();
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let mut ask = |q: &str| {
        w.write_all(q.as_bytes()).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    };
    assert_eq!(ask("GET k\n"), "NOT_FOUND\n");
    assert_eq!(ask("SET k some value\n"), "OK\n");
    assert_eq!(ask("GET k\r\n"), "VALUE some value\n");
    assert!(ask("BOGUS\n").starts_with("ERROR"));
    // Another connection sees the same store (one worker).
    let mut other = BufReader::new(e.connect());
    other.get_mut().write_all(b"GET k\nDEL k\nGET k\nQUIT\n").unwrap();
    let mut all = String::new();
    other.read_to_string(&mut all).unwrap();
    assert_eq!(all, "VALUE some value\nDELETED\nNOT_FOUND\nBYE\n");
    // A line past the limit is refused and the connection closed.
    let mut big = e.connect();
    let _ = big.write_all(&vec![b'x'; 200 * 1024]);
    let mut answer = String::new();
    let _ = BufReader::new(big).read_line(&mut answer);
    assert_eq!(answer, "ERROR line too long\n");
}
