//! The master/worker process model: titles, respawn, stop and graceful
//! stop, the command line, pid file, log reopening, daemon mode.

mod common;

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn process_titles() {
    let s = Server::start();
    assert!(
        cmdline(s.pid()).starts_with("corral: master process "),
        "{}",
        cmdline(s.pid())
    );
    assert!(cmdline(s.pid()).contains("-c"), "the title keeps the command line");
    let workers = s.workers();
    assert_eq!(workers.len(), 2);
    // A just-forked worker shows the master's title until it sets its own.
    for w in workers {
        assert!(
            eventually(Duration::from_secs(5), || cmdline(w) == "corral: worker process"),
            "{}",
            cmdline(w)
        );
    }
}

#[test]
fn killed_worker_is_respawned() {
    let s = Server::start();
    let before = s.workers();
    let victim = before[0];
    Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = s.workers();
            now.len() == 2 && !now.contains(&victim)
        }),
        "a new worker replaces the killed one"
    );
    for _ in 0..10 {
        assert_eq!(s.get("/").status, 200);
    }
    assert!(
        eventually(Duration::from_secs(2), || s
            .error_log()
            .contains(&format!("{victim} (#"))
            && s.error_log().contains("exited on signal 9")),
        "{}",
        s.error_log()
    );
}

/// A crashed worker is an `[alert]`, shown at log_level = "error" (and
/// nginx's crit/alert/emerg levels are accepted); SIGALRM, which nginx's
/// workers ignore, kills no one.
#[test]
fn a_worker_crash_is_an_alert_and_sigalrm_is_ignored() {
    let s = Server::start();
    let text = std::fs::read_to_string(&s.config).unwrap();
    for level in ["crit", "alert", "emerg"] {
        let p = s.dir.path().join(format!("{level}.toml"));
        std::fs::write(
            &p,
            text.replace("log_level = \"info\"", &format!("log_level = \"{level}\"")),
        )
        .unwrap();
        let (code, out) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
        assert_eq!(code, 0, "{level}: {out}");
    }
    std::fs::write(&s.config, text.replace("log_level = \"info\"", "log_level = \"error\"")).unwrap();
    let old = s.workers();
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || {
        let now = s.workers();
        now.len() == 2 && now.iter().all(|w| !old.contains(w))
    }));
    let before = s.error_log().len();
    let workers = s.workers();
    kill(workers[0], "ALRM");
    kill(s.pid(), "ALRM");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(workers[0]) && alive(s.pid()), "SIGALRM killed a process");
    assert_eq!(s.workers(), workers);
    // (Not SEGV: Rust's stack-overflow handler swallows a first one sent by kill.)
    kill(workers[0], "ABRT");
    let want = format!("[alert] {}#0: worker process {} (#", s.pid(), workers[0]);
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = s.error_log();
            log[before..].contains(&want) && log[before..].contains("exited on signal 6 (SIGABRT)")
        }),
        "{}",
        s.error_log()
    );
    // Below the level: nothing else of the respawn.
    assert!(eventually(Duration::from_secs(5), || s.workers().len() == 2));
    assert!(!s.error_log()[before..].contains("[notice]"), "{}", s.error_log());
}

#[test]
fn sigterm_stops_everything_and_removes_pid_file() {
    let mut s = Server::start();
    let pid_file = s.dir.path().join("corral.pid");
    assert_eq!(std::fs::read_to_string(&pid_file).unwrap().trim(), s.pid().to_string());
    let workers = s.workers();
    s.signal("TERM");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!pid_file.exists(), "pid file removed at exit");
    assert!(eventually(Duration::from_secs(2), || workers
        .iter()
        .all(|w| !alive(*w))));
}

#[test]
fn sigquit_finishes_in_flight_download() {
    let mut s = Server::start();
    let big: Vec<u8> = (0..32u32 << 20).map(|i| (i % 249) as u8).collect();
    std::fs::write(s.root.join("big.bin"), &big).unwrap();
    let mut c = s.connect();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    // An idle keep-alive connection, to be closed by the graceful stop.
    let mut idle = s.connect();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 1 << 16];
    let n = idle.read_retry(&mut buf).unwrap();
    assert!(n > 0);

    let mut got = Vec::new();
    while got.len() < 1 << 20 {
        let n = c.read_retry(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    let workers = s.workers();
    s.signal("QUIT");
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(s.pid()), "master waits for the download");
    // New clients are refused at once (nginx closes its listening sockets
    // on QUIT), not left in a queue no one accepts from.
    let t = std::time::Instant::now();
    let refused = std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], s.port).into(), Duration::from_secs(3));
    assert!(
        matches!(&refused, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused),
        "a new connection during the graceful stop: {refused:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // The idle connection is closed by the graceful stop.
    idle.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t = std::time::Instant::now();
    assert!(
        matches!(idle.read_retry(&mut buf), Ok(0)),
        "idle keep-alive closed, not timed out"
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "closed after the drain grace: {:?}",
        t.elapsed()
    );
    got.extend(read_to_close(&mut c));
    // A client closes when the server does; the worker's lingering read ends.
    drop(c);
    drop(idle);
    let rs = parse_responses(&got, false);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].body.len(), big.len(), "download completed");
    assert!(rs[0].body == big);
    assert_eq!(
        s.wait_exit(Duration::from_secs(10)),
        Some(0),
        "master exits after its workers"
    );
    assert!(workers.iter().all(|w| !alive(*w)));
    assert!(!s.dir.path().join("corral.pid").exists());
}

#[test]
fn test_flag_checks_config() {
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        format!("[main]\nworkers = \"auto\"\n\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{root}\"\n"),
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("test is successful"), "{text}");
    // More connections than descriptors: a warning, the test still passes.
    std::fs::write(
        &good,
        format!(
            "[main]\nworker_connections = 4096\nworker_rlimit_nofile = 1000\n\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{root}\"\n"
        ),
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("worker_connections 4096 exceed the open file limit of 1000"),
        "{text}"
    );

    let cases = [
        ("[main]\nworkers = 2\nwrokers = 3\n", 3, "wrokers"),
        ("[main]\n\ndaemon = \"yes\"\n", 3, "daemon"),
        ("[main]\nworker_connections = 0\n", 2, "worker_connections"),
        ("[main]\nevent_mode = \"sideways\"\n", 2, "event_mode"),
        ("[[server]]\nroot = \"/nonexistent-corral\"\n", 2, "root"),
        (
            &format!("[[server]]\nroot = \"{root}\"\nlisten = \"localhost:x\"\n"),
            3,
            "listen",
        ),
        (
            &format!("[http]\nkeepalive_timeout = \"soon\"\n[[server]]\nroot = \"{root}\"\n"),
            2,
            "keepalive_timeout",
        ),
        ("[main\nworkers = 1\n", 1, ""),
        // A missing key: the line of its table.
        ("[pool.php]\ncommand = [\"php-cgi\"]\n", 1, "pool.php.listen"),
        ("[pool.php]\nlisten = \"127.0.0.1:9\"\n", 1, "pool.php.command"),
        (
            &format!("[[server]]\nroot = \"{root}\"\n[[server.location]]\nroot = \"{root}\"\n"),
            3,
            "server.location.match",
        ),
        (
            &format!("[[server]]\nroot = \"{root}\"\ngzip_comp_level = 3\n"),
            3,
            "server.gzip_comp_level",
        ),
        ("[main]\nworker_connections = \"x\"\n", 2, "expected an integer"),
    ];
    for (i, (text, line, key)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let (code, out) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}: {out}");
        assert!(
            out.contains(&format!("{}:{line}:", p.display())),
            "file and line for {text:?}: {out}"
        );
        assert!(out.contains(key), "key {key} named: {out}");
        assert!(out.contains("test failed"), "{out}");
    }
    // Starting with a broken config fails the same way, before binding anything.
    let bad = dir.path().join("bad0.toml");
    let (code, out) = run_corral(&["-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.contains("wrokers"), "{out}");
}

#[test]
fn empty_config_file_is_an_error() {
    let dir = TempDir::new();
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let path = empty.to_str().unwrap();
    let want = format!("{path}: empty configuration");
    let (code, out) = run_corral(&["-t", "-c", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&want) && out.contains("test failed"), "{out}");
    // Not started with the built-in default, and -s does not signal the
    // master the default pid file names.
    let (code, out) = run_corral(&["-c", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&want), "{out}");
    let (code, out) = run_corral(&["-s", "stop", "-c", path]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&want), "{out}");
}

#[test]
fn missing_cpu_in_worker_cpu_affinity_is_a_warning() {
    let mut s = Server::with(Opts {
        main: "worker_cpu_affinity = [0, 1000]\n".into(),
        ..Default::default()
    });
    let workers = s.workers();
    assert_eq!(workers.len(), 2);
    for _ in 0..10 {
        assert_eq!(s.get("/").status, 200);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(s.workers(), workers, "no worker restarts: {}", s.error_log());
    let log = s.error_log();
    assert!(log.contains("sched_setaffinity(CPU 1000) failed"), "{log}");
    assert!(log.contains("running unpinned"), "{log}");
    // -t warns, naming the line and key, and passes.
    let (code, out) = run_corral(&["-t", "-c", s.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[warn]") && out.contains("main.worker_cpu_affinity"),
        "{out}"
    );
    assert!(out.contains("CPU 1000 not available"), "{out}");
    s.stop_now();
}

#[test]
fn test_flag_rejects_duplicates_and_listens_that_cannot_all_bind() {
    let dir = TempDir::new();
    let root = dir.path().display().to_string();
    let srv = format!("[[server]]\nroot = \"{root}\"\n");
    let cases = [
        (
            format!("{srv}listen = [\"127.0.0.1:20110\", \"127.0.0.1:20110\"]\n"),
            3,
            "server.listen",
            "duplicate listen 127.0.0.1:20110",
        ),
        (
            format!(
                "{srv}[[server.location]]\nmatch = \"/a/\"\n[[server.location]]\nmatch = \"^~ /a/\"\nreturn = \"204\"\n"
            ),
            6,
            "server.location.match",
            "(also at line 4)",
        ),
        (
            format!(
                "{srv}listen = \"127.0.0.1:20111\"\n[pool.php]\nlisten = \"127.0.0.1:20111\"\ncommand = [\"php-cgi\"]\n"
            ),
            5,
            "pool.php.listen",
            "127.0.0.1:20111 is also the listen address of the [[server]] at line 3",
        ),
        (
            format!("{srv}listen = \"*:20112\"\n{srv}listen = \"127.0.0.1:20112\"\n"),
            6,
            "server.listen",
            "127.0.0.1:20112 overlaps *:20112 of the [[server]] at line 3",
        ),
    ];
    for (i, (text, line, key, what)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("dup{i}.toml"));
        std::fs::write(&p, text).unwrap();
        let (code, out) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
        assert_eq!(code, 1, "{text}: {out}");
        assert!(
            out.contains(&format!("{}:{line}: {key}: ", p.display())) && out.contains(what),
            "{text}: {out}"
        );
    }
    // Servers may share one address; with reuseport a wildcard and a
    // specific address bind side by side.
    let p = dir.path().join("ok.toml");
    std::fs::write(
        &p,
        format!(
            "[main]\naccept = \"reuseport\"\n{srv}listen = \"*:20113\"\n{srv}listen = [\"127.0.0.1:20113\", \"127.0.0.1:20114\"]\n{srv}listen = \"127.0.0.1:20114\"\nserver_name = \"b\"\n"
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn version_flag() {
    for flag in ["-V", "-v", "--version"] {
        let (code, out) = run_corral(&[flag]);
        assert_eq!(code, 0, "{flag}: {out}");
        assert!(
            out.contains(&format!("corral version {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{flag}: {out}"
        );
    }
}

/// `-T`: tests, then prints the file after nginx's header line.
#[test]
fn dump_flag_tests_then_prints_the_config() {
    let dir = TempDir::new();
    let p = dir.path().join("c.toml");
    let text = format!(
        "[main]\nworkers = 1\n\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{}\"\n",
        dir.path().display()
    );
    std::fs::write(&p, &text).unwrap();
    let out = Command::new(BIN)
        .args(["-T", "-c", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("test is successful"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("# configuration file {}:\n{text}", p.display())
    );
    // A failed test prints no configuration.
    std::fs::write(&p, "[main]\nwrokers = 1\n").unwrap();
    let out = Command::new(BIN)
        .args(["-T", "-c", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
}

#[test]
fn signal_flag_uses_pid_file() {
    let mut s = Server::start();
    let cfg = s.config.to_str().unwrap().to_string();
    let (code, out) = run_corral(&["-s", "reopen", "-c", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert!(eventually(Duration::from_secs(5), || s
        .error_log()
        .contains("reopening logs")));
    // Only the pid file is needed: a root removed since the start (a
    // configuration that no longer validates) does not keep -s from working.
    std::fs::rename(&s.root, s.dir.path().join("moved-away")).unwrap();
    let (code, out) = run_corral(&["-t", "-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = run_corral(&["-s", "stop", "-c", &cfg]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    // No master any more: -s reports the missing pid file.
    let (code, out) = run_corral(&["-s", "stop", "-c", &cfg]);
    assert_eq!(code, 1);
    assert!(out.contains("pid"), "{out}");
}

#[test]
fn signal_flag_refuses_a_pid_file_naming_another_process() {
    let dir = TempDir::new();
    let pid_file = dir.path().join("stale.pid");
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[main]\npid = \"{}\"\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{}\"\n",
            pid_file.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(&pid_file, format!("{}\n", other.id())).unwrap();
    let (code, out) = run_corral(&["-s", "stop", "-c", cfg.to_str().unwrap()]);
    let survived = alive(other.id() as i32);
    let _ = other.kill();
    let _ = other.wait();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a running corral master"), "{out}");
    assert!(survived, "the unrelated process was not signalled");
    // A corral worker is not its master either.
    let s = Server::start();
    let worker = s.workers()[0];
    std::fs::write(&pid_file, format!("{worker}\n")).unwrap();
    let (code, out) = run_corral(&["-s", "stop", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a running corral master"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(alive(worker), "the worker was not signalled");
    assert!(!s.error_log().contains("received SIGTERM"), "{}", s.error_log());
}

#[test]
fn reopen_after_logrotate_moved_the_logs() {
    let s = Server::start();
    assert_eq!(s.get("/").status, 200);
    let access = s.dir.path().join("access.log");
    assert!(eventually(Duration::from_secs(5), || s.access_log().contains("GET / ")));
    std::fs::rename(&access, s.dir.path().join("access.log.1")).unwrap();
    std::fs::rename(s.dir.path().join("error.log"), s.dir.path().join("error.log.1")).unwrap();
    s.signal("USR1");
    assert!(eventually(Duration::from_secs(5), || s
        .dir
        .path()
        .join("error.log")
        .exists()));
    // Both workers must have reopened before the next request lands anywhere.
    assert!(eventually(Duration::from_secs(5), || s
        .error_log()
        .matches("logs reopened")
        .count()
        >= 2));
    assert_eq!(s.get("/after-rotate").status, 404);
    assert!(
        eventually(Duration::from_secs(5), || s.access_log().contains("/after-rotate")),
        "new entries go to the new file"
    );
    let old = std::fs::read_to_string(s.dir.path().join("access.log.1")).unwrap();
    assert!(!old.contains("/after-rotate"));
}

#[test]
fn a_failed_reopen_is_not_reported_as_done() {
    let dir = TempDir::new();
    let logs = dir.path().join("logs");
    let acc = logs.join("other.log");
    let s = Server::with(Opts {
        more: format!(
            "[[server]]\nlisten = \"127.0.0.1:{{port}}\"\nserver_name = \"other\"\naccess_log = \"{}\"\n",
            acc.display()
        ),
        ..Opts::default()
    });
    assert!(acc.exists());
    // The log directory rotated away, a file in its place: it cannot be recreated.
    std::fs::rename(&logs, dir.path().join("logs.old")).unwrap();
    std::fs::write(&logs, "").unwrap();
    s.signal("USR1");
    assert!(
        eventually(Duration::from_secs(5), || s
            .error_log()
            .matches("logs not all reopened")
            .count()
            >= 2),
        "{}",
        s.error_log()
    );
    let log = s.error_log();
    let after = &log[log.find("reopening logs").unwrap()..];
    assert!(!after.contains("logs reopened"), "{after}");
    assert!(
        after.contains(&format!("cannot reopen access log {}", acc.display()))
            && after.contains(&format!("{} is not a directory", logs.display())),
        "{after}"
    );
    assert!(!after.contains("File(") && !after.contains("os error"), "{after}");
    drop(dir);
}

#[test]
fn a_zombie_master_is_not_a_running_one() {
    let mut s = Server::start();
    let workers = s.workers();
    kill(s.pid(), "KILL");
    // Not reaped yet (this test is its parent): a zombie until wait.
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(format!(
        "/proc/{}/stat",
        s.pid()
    ))
    .is_ok_and(|st| st
        .rsplit(')')
        .next()
        .unwrap_or("")
        .trim_start()
        .starts_with('Z'))));
    let cfg = s.config.to_str().unwrap().to_string();
    let (code, out) = run_corral(&["-s", "stop", "-c", &cfg]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a running corral master"), "{out}");
    // A new master may start on the same pid file (once the old workers,
    // PDEATHSIG'd, have let go of the port).
    assert!(eventually(Duration::from_secs(5), || workers
        .iter()
        .all(|w| !alive(*w))));
    let mut next = Command::new(BIN)
        .args(["-c", &cfg])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid_file = s.dir.path().join("corral.pid");
    let started = eventually(Duration::from_secs(5), || read_pid(&pid_file) == Some(next.id() as i32));
    let _ = next.kill();
    let out = next.wait_with_output().unwrap();
    assert!(started, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(-1), "the zombie is reaped");
}

/// The pid file never follows what sits at its path, and a root master
/// refuses a directory someone else could plant things in.
#[test]
fn pid_file_is_never_written_through_a_planted_link() {
    let dir = TempDir::new();
    let d = dir.path();
    let root = d.join("www");
    std::fs::create_dir_all(&root).unwrap();
    let victim = d.join("victim");
    std::fs::write(&victim, "important data\n").unwrap();
    let cfg = d.join("c.toml");
    let write_cfg = |pid: &std::path::Path, port: u16| {
        std::fs::write(
            &cfg,
            format!(
                "[main]\nworkers = 1\npid = \"{}\"\nerror_log = \"{}/error.log\"\n[[server]]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{}\"\n",
                pid.display(),
                d.display(),
                root.display()
            ),
        )
        .unwrap();
    };
    let run = |pid_file: &std::path::Path| {
        let port = free_port();
        write_cfg(pid_file, port);
        let mut c = Command::new(BIN)
            .args(["-c", cfg.to_str().unwrap()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let up = eventually(Duration::from_secs(5), || {
            read_pid(&pid_file.to_path_buf()) == Some(c.id() as i32) || c.try_wait().ok().flatten().is_some()
        });
        let running = up && c.try_wait().ok().flatten().is_none();
        if running {
            kill(c.id() as i32, "TERM");
        }
        let out = c.wait_with_output().unwrap();
        (running, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let safe = d.join("run");
    std::fs::create_dir_all(&safe).unwrap();
    std::os::unix::fs::symlink(&victim, safe.join("c.pid")).unwrap();
    let (running, out) = run(&safe.join("c.pid"));
    assert!(running, "{out}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "important data\n");
    if !nix_is_root() {
        eprintln!("not root: the directory checks do not apply");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // Another user's directory, as a /tmp/corral created by someone else.
    let theirs = d.join("theirs");
    std::fs::create_dir_all(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    let (running, out) = run(&theirs.join("c.pid"));
    assert!(!running, "{out}");
    assert!(
        out.contains("[emerg]") && out.contains(&theirs.display().to_string()) && out.contains("belongs to uid 65534"),
        "{out}"
    );
    // World-writable without the sticky bit: refused; with it (as /tmp): fine.
    let open = d.join("open");
    std::fs::create_dir_all(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (running, out) = run(&open.join("c.pid"));
    assert!(!running, "{out}");
    assert!(out.contains("writable by group or others"), "{out}");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (running, out) = run(&open.join("c.pid"));
    assert!(running, "{out}");
}

fn nix_is_root() -> bool {
    nix_uid() == Some(0)
}

fn nix_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// A terminal resize sends SIGWINCH to a foreground master: it must not
/// retire the workers (nginx ignores it unless daemonized).
#[test]
fn sigwinch_without_an_upgrade_is_ignored_in_the_foreground() {
    let s = Server::start();
    let workers = s.workers();
    s.signal("WINCH");
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("SIGWINCH ignored")),
        "{}",
        s.error_log()
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.workers(), workers, "the workers were left alone");
    assert_eq!(s.get("/").status, 200);
    assert!(
        !s.error_log().contains("gracefully stopping worker"),
        "{}",
        s.error_log()
    );
}

#[test]
fn refuses_second_master_on_same_pid_file() {
    let s = Server::start();
    // A second master with the same config must not start.
    let (code, out) = run_corral(&["-c", s.config.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        s.error_log().contains("names a running corral master") || out.contains("names a running corral master"),
        "{out}"
    );
    assert_eq!(s.get("/").status, 200, "the first one keeps serving");
}

#[test]
fn daemon_mode_detaches() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "daemon").unwrap();
    let port = free_port();
    let cfg = dir.path().join("d.toml");
    let pid_file = dir.path().join("d.pid");
    std::fs::write(
        &cfg,
        format!(
            "[main]\ndaemon = true\nworkers = 1\npid = \"{}\"\nerror_log = \"{}/error.log\"\n[[server]]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{}\"\n",
            pid_file.display(),
            dir.path().display(),
            root.display()
        ),
    )
    .unwrap();
    let status = Command::new(BIN).args(["-c", cfg.to_str().unwrap()]).status().unwrap();
    assert!(status.success(), "the launching process exits 0");
    assert!(eventually(Duration::from_secs(5), || pid_file.exists()));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
    assert!(alive(pid));
    assert!(cmdline(pid).starts_with("corral: master process"));
    // Detached: its own session, stdio on /dev/null.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
    assert_eq!(f[3], pid.to_string(), "session leader");
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap().to_str(),
        Some("/dev/null")
    );
    let (ok, body) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert!(ok);
    assert_eq!(body, b"daemon");
    // A binary upgrade of a daemon: the new master stays the old one's
    // child (it does not detach again), and QUIT of the old hands over.
    kill(pid, "USR2");
    let old_pid_file = dir.path().join("d.pid.oldbin");
    assert!(eventually(Duration::from_secs(10), || old_pid_file.exists()
        && read_pid(&pid_file).is_some_and(|p| p != pid)));
    let new = read_pid(&pid_file).unwrap();
    assert!(
        children_of(pid).contains(&new),
        "the new master is the old one's child: {new} not in {:?}",
        children_of(pid)
    );
    kill(pid, "QUIT");
    assert!(eventually(Duration::from_secs(10), || !alive(pid)));
    assert!(alive(new));
    let (ok, body) = curl(&[&format!("http://127.0.0.1:{port}/")]);
    assert!(ok && body == b"daemon");
    let pid = new;
    let workers = children_of(pid);
    let (code, out) = run_corral(&["-s", "stop", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(eventually(Duration::from_secs(10), || !alive(pid)
        && workers.iter().all(|w| !alive(*w))));
    assert!(!pid_file.exists());
}

#[test]
fn daemon_launcher_exits_1_when_the_daemon_cannot_start() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port();
    let free = free_port();
    let cases = [
        (busy, format!("{}/d.pid", dir.path().display()), "Address"),
        (free, "/proc/corral-none/d.pid".to_string(), "pid file"),
    ];
    for (port, pid, why) in cases {
        let cfg = dir.path().join("d.toml");
        std::fs::write(
            &cfg,
            format!(
                "[main]\ndaemon = true\nworkers = 1\npid = \"{pid}\"\nerror_log = \"{}/error.log\"\n[[server]]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{}\"\n",
                dir.path().display(),
                root.display()
            ),
        )
        .unwrap();
        let (code, out) = run_corral(&["-c", cfg.to_str().unwrap()]);
        assert_eq!(code, 1, "{why}: {out}");
        assert!(out.contains("[emerg]") && out.contains(why), "{why}: {out}");
    }
    // A daemon logging to stderr (/dev/null once detached) is warned
    // about, at -t and at start (here one that cannot bind, so none stays).
    let cfg = dir.path().join("quiet.toml");
    std::fs::write(
        &cfg,
        format!(
            "[main]\ndaemon = true\nworkers = 1\npid = \"{}/q.pid\"\n[[server]]\nlisten = \"127.0.0.1:{busy}\"\nroot = \"{}\"\n",
            dir.path().display(),
            root.display()
        ),
    )
    .unwrap();
    let want = "[warn] daemon = true with error_log = \"stderr\"";
    let (code, out) = run_corral(&["-t", "-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(want) && out.contains("test is successful"), "{out}");
    let (code, out) = run_corral(&["-c", cfg.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(want), "{out}");
    // A pid file naming a running master: the second daemon says so.
    let s = Server::start();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let second = dir.path().join("second.toml");
    std::fs::write(
        &second,
        cfg.replacen("[main]\n", "[main]\ndaemon = true\n", 1)
            .replace(&format!("127.0.0.1:{}", s.port), &format!("127.0.0.1:{free}")),
    )
    .unwrap();
    let (code, out) = run_corral(&["-c", second.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("names a running corral master"), "{out}");
    assert_eq!(s.get("/").status, 200);
}

/// `corral -c ../r.toml`: paths taken from the config file's directory
/// come out without `..` (php-cgi refuses a SCRIPT_FILENAME with one).
#[test]
fn relative_config_path_with_dot_dot_gives_normal_paths() {
    let dir = TempDir::new();
    let sub = dir.path().join("sub");
    let www = dir.path().join("www");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::create_dir_all(&www).unwrap();
    write_script(
        &www.join("env.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"$SCRIPT_FILENAME $DOCUMENT_ROOT\"\n",
    );
    let port = free_port();
    std::fs::write(
        dir.path().join("r.toml"),
        format!(
            "[main]\nworkers = 1\npid = \"run/r.pid\"\nerror_log = \"./error.log\"\n\
             [[server]]\nlisten = \"127.0.0.1:{port}\"\nroot = \"www\"\n\
             [[server.location]]\nmatch = \"~ \\\\.sh$\"\ncgi = {{ dir = \"sub/../www\", extensions = [\".sh\"] }}\n"
        ),
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["-c", "../r.toml"])
        .current_dir(&sub)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let (ok, body) = curl(&[&format!("http://127.0.0.1:{port}/env.sh")]);
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    assert!(up && ok);
    let d = dir.path().display();
    assert_eq!(String::from_utf8_lossy(&body), format!("{d}/www/env.sh {d}/www\n"));
    assert!(
        dir.path().join("error.log").exists(),
        "the error log beside the config file"
    );
}

/// A `worker_rlimit_nofile` the master may not set (a container without
/// CAP_SYS_RESOURCE) is an alert, not workers that die and are started
/// again for ever while nothing is served.
#[test]
fn an_rlimit_above_the_hard_limit_is_an_alert_not_an_outage() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("a.txt"), "served\n").unwrap();
    let wrapper = dir.path().join("launch.sh");
    write_script(
        &wrapper,
        &format!(
            "#!/bin/sh\nexec setpriv --bounding-set=-sys_resource --inh-caps=-sys_resource \
             sh -c 'ulimit -n 2048; ulimit -Hn 2048; exec \"$0\" \"$@\"' '{BIN}' \"$@\"\n"
        ),
    );
    let o = Opts {
        main: "worker_rlimit_nofile = 8192\nworkers = 1".into(),
        ..Opts::default()
    };
    let s = Server::launch(o, dir, root, wrapper.to_str().unwrap());
    assert_eq!(s.get("/a.txt").text(), "served\n", "{}", s.error_log());
    assert!(
        s.error_log().contains("going on with the limit of 2048"),
        "{}",
        s.error_log()
    );
}

/// A root master with no `user` says at -t that its workers run as root.
#[test]
fn a_root_master_without_user_warns_that_workers_run_as_root() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = TempDir::new();
    let conf = dir.path().join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[main]\npid = \"{d}/c.pid\"\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{d}\"\n",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("run as root; set user"), "{out}");
}

/// What the workers' user cannot use is said at -t, before requests fail
/// with 403 or 500.
#[test]
fn paths_the_workers_user_cannot_use_are_warned_at_test() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = TempDir::new();
    let d = dir.path();
    use std::os::unix::fs::PermissionsExt;
    for sub in ["www", "spool"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
        std::fs::set_permissions(d.join(sub), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let conf = d.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[main]\nuser = \"nobody\"\npid = \"{p}/c.pid\"\n[http]\nclient_body_temp_path = \"{p}/spool\"\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{p}/www\"\n",
            p = d.display()
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cannot write in client_body_temp_path"), "{out}");
    assert!(out.contains("cannot read the root"), "{out}");
}
