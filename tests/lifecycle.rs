//! Operating corral like nginx: reload, binary upgrade and roll-back,
//! privileges, systemd notification and socket activation.

mod common;

use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn reload_serves_the_new_root() {
    let s = Server::start();
    std::fs::write(s.root.join("which.txt"), "old").unwrap();
    let new_root = s.dir.path().join("www2");
    std::fs::create_dir_all(&new_root).unwrap();
    std::fs::write(new_root.join("which.txt"), "new").unwrap();
    assert_eq!(s.get("/which.txt").text(), "old");
    let old_workers = s.workers();
    s.write_config(&Opts {
        server: format!("root = \"{}\"", new_root.display()),
        ..Opts::default()
    });
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || s.get("/which.txt").text() == "new"));
    assert!(
        eventually(Duration::from_secs(10), || old_workers.iter().all(|w| !alive(*w))),
        "old generation retired"
    );
    assert_eq!(s.workers().len(), 2);
    let log = s.error_log();
    assert!(
        log.contains("reloading configuration") && log.contains("reload applied"),
        "{log}"
    );
}

#[test]
fn reload_with_broken_config_keeps_serving() {
    let s = Server::start();
    let workers = s.workers();
    std::fs::write(&s.config, "[main]\nworkers = 2\nworkers_typo = 3\n").unwrap();
    let line = reload_refused(&s, workers);
    assert!(
        line.contains("corral.toml:3") && line.contains("workers_typo"),
        "file, line and key: {line}"
    );
}

#[test]
fn reload_with_an_empty_config_file_is_refused() {
    let s = Server::start();
    let workers = s.workers();
    // A truncated file is not the built-in default (127.0.0.1:8080).
    std::fs::write(&s.config, "").unwrap();
    let line = reload_refused(&s, workers);
    assert!(line.contains("corral.toml: empty configuration"), "{line}");
}

/// Sends SIGHUP to `s`, whose config was made bad: the reload is refused,
/// `s` still serves with the same `workers`; the "reload refused" line.
fn reload_refused(s: &Server, mut workers: Vec<i32>) -> String {
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("reload refused")),
        "{}",
        s.error_log()
    );
    assert_eq!(s.get("/").status, 200);
    let mut now = s.workers();
    now.sort();
    workers.sort();
    assert_eq!(now, workers, "the running workers were left alone");
    let log = s.error_log();
    log.lines().find(|l| l.contains("reload refused")).unwrap().to_string()
}

#[test]
fn reload_adds_and_removes_a_listen_address() {
    let s = Server::start();
    let (p1, p2) = (s.port, free_port());
    s.write_config(&Opts {
        server: format!("listen = [\"127.0.0.1:{p1}\", \"127.0.0.1:{p2}\"]"),
        ..Opts::default()
    });
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || get_on(p2, "/")
        .is_some_and(|r| r.status == 200)));
    assert_eq!(
        get_on(p1, "/").map(|r| r.status),
        Some(200),
        "the kept address still serves"
    );
    s.write_config(&Opts {
        server: format!("listen = \"127.0.0.1:{p2}\""),
        ..Opts::default()
    });
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", p1))
            .is_err()),
        "the removed address is closed"
    );
    assert_eq!(get_on(p2, "/").map(|r| r.status), Some(200));
}

#[test]
fn reloads_under_keep_alive_load_lose_nothing() {
    let s = Server::start();
    let stop = load(s.port, 8, true);
    for _ in 0..6 {
        std::thread::sleep(Duration::from_millis(400));
        s.signal("HUP");
    }
    std::thread::sleep(Duration::from_millis(500));
    let (ok, failed) = stop();
    assert!(ok > 500, "the load ran: {ok} requests");
    assert_eq!(failed, 0, "{failed} failed requests out of {}", ok + failed);
    assert!(s.error_log().matches("reload applied").count() >= 6);
}

#[test]
fn binary_upgrade_usr2_winch_quit() {
    let (mut s, _bin) = start_copy(Opts::default());
    let old = s.pid();
    let old_workers = s.workers();
    let new = upgrade(&s);
    assert_eq!(s.get("/").text(), "hello");
    // WINCH: the old master's workers retire; the new ones serve.
    s.signal("WINCH");
    assert!(
        eventually(Duration::from_secs(10), || old_workers.iter().all(|w| !alive(*w))),
        "old workers stopped"
    );
    assert_eq!(
        children_of(old),
        vec![new],
        "only the new master is left under the old one"
    );
    for _ in 0..20 {
        assert_eq!(s.get("/").text(), "hello");
    }
    // QUIT: the old master leaves; the new one keeps serving on the same sockets.
    s.signal("QUIT");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(!s.dir.path().join("corral.pid.oldbin").exists());
    assert_eq!(read_pid(&s.dir.path().join("corral.pid")), Some(new));
    assert_eq!(s.get("/").text(), "hello");
    let log = s.error_log();
    assert!(log.contains("binary upgrade: new master"), "{log}");
    assert!(log.contains("using inherited socket"), "{log}");
    stop_pid(new);
}

#[test]
fn binary_upgrade_roll_back() {
    let (s, _bin) = start_copy(Opts::default());
    let old = s.pid();
    let new = upgrade(&s);
    // USR2 to the new master while the old one runs is ignored (nginx):
    // no third master, the pid files stay as they are.
    kill(new, "USR2");
    assert!(
        eventually(Duration::from_secs(5), || s
            .error_log()
            .contains("SIGUSR2 ignored: the old master")),
        "{}",
        s.error_log()
    );
    assert_eq!(children_of(new).len(), 2, "workers only, no new master");
    assert_eq!(read_pid(&s.dir.path().join("corral.pid.oldbin")), Some(old));
    assert_eq!(read_pid(&s.dir.path().join("corral.pid")), Some(new));
    s.signal("WINCH");
    assert!(eventually(Duration::from_secs(10), || children_of(old) == vec![new]));
    // HUP brings the old master's workers back...
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || children_of(old).len() == 3));
    // ...and the new master is told to quit.
    kill(new, "QUIT");
    assert!(eventually(Duration::from_secs(10), || !alive(new)));
    let pid_file = s.dir.path().join("corral.pid");
    assert!(
        eventually(Duration::from_secs(5), || read_pid(&pid_file) == Some(old)),
        "pid file given back"
    );
    assert!(!s.dir.path().join("corral.pid.oldbin").exists());
    assert_eq!(children_of(old).len(), 2);
    assert_eq!(s.get("/").text(), "hello");
}

fn uid_of(pid: i32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn workers_drop_to_the_configured_user() {
    if !nix_is_root() {
        eprintln!("not root: privilege drop cannot be observed");
        return;
    }
    let s = Server::with(Opts {
        main: "user = \"nobody\"".into(),
        ..Opts::default()
    });
    assert_eq!(uid_of(s.pid()), 0, "the master keeps root");
    for w in s.workers() {
        // Ready means the master listens; a fresh worker drops root before
        // its loop starts, a moment later.
        assert!(
            eventually(Duration::from_secs(3), || uid_of(w) == 65534),
            "worker {w} runs as nobody"
        );
        let status = std::fs::read_to_string(format!("/proc/{w}/status")).unwrap();
        let groups = status.lines().find(|l| l.starts_with("Groups:")).unwrap();
        assert!(
            !groups.split_whitespace().any(|g| g == "0"),
            "no root group left: {groups}"
        );
    }
    assert_eq!(s.get("/").status, 200);
    // Logs still rotate: the master hands the new files to the worker user.
    let access = s.dir.path().join("access.log");
    assert!(eventually(Duration::from_secs(5), || s.access_log().contains("GET / ")));
    std::fs::rename(&access, s.dir.path().join("access.log.1")).unwrap();
    s.signal("USR1");
    assert!(eventually(Duration::from_secs(5), || s
        .error_log()
        .matches("logs reopened")
        .count()
        >= 2));
    assert_eq!(s.get("/rotated").status, 404);
    assert!(eventually(Duration::from_secs(5), || s
        .access_log()
        .contains("/rotated")));
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn socket_activation_uses_the_passed_socket() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "activated").unwrap();
    let config = dir.path().join("corral.toml");
    let mut s = Server {
        child: None,
        port: free_port(),
        dir,
        root,
        config,
    };
    s.write_config(&Opts::default());
    // What systemd does: bind, pass as fd 3, name our pid in LISTEN_PID.
    let script = format!(
        "import os, socket\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', {port})); s.listen(16)\n\
         os.dup2(s.fileno(), 3) if s.fileno() != 3 else os.set_inheritable(3, True)\n\
         os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n\
         os.execv('{bin}', ['{bin}', '-c', '{cfg}'])\n",
        port = s.port,
        bin = BIN,
        cfg = s.config.display()
    );
    s.child = Some(
        Command::new("python3")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(s.wait_ready(), "{}", s.error_log());
    assert_eq!(s.get("/").text(), "activated");
    assert!(
        s.error_log().contains("using socket-activated descriptor 3"),
        "{}",
        s.error_log()
    );
    // The master bound nothing itself: the only listener is the passed one.
    let fds = std::fs::read_dir(format!("/proc/{}/fd", s.pid())).unwrap();
    let sockets = fds
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")))
        .count();
    assert_eq!(sockets, 1, "one listening socket in the master (fd 3)");
}

#[test]
fn systemd_notifications() {
    let dir = TempDir::new();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let o = Opts {
        env: vec![("NOTIFY_SOCKET".into(), sock_path.display().to_string())],
        ..Opts::default()
    };
    let mut s = Server::launch(o, dir, root, BIN);
    let recv = || {
        let mut buf = [0u8; 512];
        let n = sock.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.contains("READY=1"), "{first}");
    assert!(first.contains(&format!("MAINPID={}", s.pid())), "{first}");
    s.signal("HUP");
    let reloading = recv();
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    let ready = recv();
    assert!(ready.contains("READY=1"), "{ready}");
    s.signal("TERM");
    let stopping = recv();
    assert!(stopping.contains("STOPPING=1"), "{stopping}");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn worker_limits_affinity_and_priority() {
    let s = Server::with(Opts {
        main: "worker_rlimit_nofile = 4321\nworker_priority = 5\nworker_cpu_affinity = \"auto\"".into(),
        ..Opts::default()
    });
    let cpus = std::thread::available_parallelism().unwrap().get();
    let want: Vec<String> = (0..2).map(|i| (i % cpus).to_string()).collect();
    // Ready means the master listens; both workers are forked and have set
    // themselves up a moment later.
    let affinity = |w: i32| {
        let status = std::fs::read_to_string(format!("/proc/{w}/status")).unwrap_or_default();
        let list = status
            .lines()
            .find(|l| l.starts_with("Cpus_allowed_list:"))
            .unwrap_or("");
        list.split_whitespace().nth(1).unwrap_or("").to_string()
    };
    assert!(eventually(Duration::from_secs(5), || {
        let mut p: Vec<String> = s.workers().into_iter().map(affinity).collect();
        p.sort();
        p == want
    }));
    let mut pinned = Vec::new();
    for w in s.workers() {
        let limits = std::fs::read_to_string(format!("/proc/{w}/limits")).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
        assert_eq!(line.split_whitespace().nth(3), Some("4321"), "{line}");
        let stat = std::fs::read_to_string(format!("/proc/{w}/stat")).unwrap();
        let nice = stat.rsplit(')').next().unwrap().split_whitespace().nth(16).unwrap();
        assert_eq!(nice, "5", "worker_priority");
        pinned.push(affinity(w));
    }
    pinned.sort();
    assert_eq!(pinned, want, "worker i on CPU i");
}

/// The scheduling policy field of `/proc/<pid>[/task/<tid>]/stat` (41st).
fn sched_policy(stat_path: &str) -> String {
    let stat = std::fs::read_to_string(stat_path).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .nth(38)
        .unwrap_or("")
        .to_string()
}

#[test]
fn worker_sched_policy_batch_for_workers_not_scripts() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    write_script(
        &root.join("policy.cgi"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ncut -d')' -f2 /proc/self/stat | awk '{print $39}'\n",
    );
    let mut o = Opts {
        main: "workers = 1\nworker_threads = 2\nworker_sched_policy = \"batch\"".into(),
        server: "[[server.location]]\nmatch = \"~ \\\\.cgi$\"\ncgi = { extensions = [\".cgi\"] }\n".into(),
        ..Opts::default()
    };
    let s = Server::with_root(o.clone(), dir, root);
    // SCHED_BATCH is 3: every thread of the worker (two event threads at
    // least), not the master.
    let all_are = |p: &[String], want: &str| p.len() >= 2 && p.iter().all(|x| x == want);
    let threads_policy = |w: i32| -> Vec<String> {
        let mut p: Vec<String> = std::fs::read_dir(format!("/proc/{w}/task"))
            .map(|d| {
                d.flatten()
                    .map(|t| sched_policy(&format!("{}/stat", t.path().display())))
                    .collect()
            })
            .unwrap_or_default();
        p.sort();
        p
    };
    assert!(
        eventually(Duration::from_secs(5), || s
            .workers()
            .first()
            .is_some_and(|w| all_are(&threads_policy(*w), "3"))),
        "{:?}",
        s.workers().into_iter().map(threads_policy).collect::<Vec<_>>()
    );
    assert_eq!(
        sched_policy(&format!("/proc/{}/stat", s.pid())),
        "0",
        "the master keeps its policy"
    );
    // A CGI script runs under the normal policy again.
    let r = s.get("/policy.cgi");
    assert_eq!(r.status, 200, "{}", s.error_log());
    assert_eq!(r.text().trim(), "0", "CGI script policy");
    // A reload back to the default: the new worker runs under SCHED_OTHER.
    let old = s.workers();
    o.main = "workers = 1\nworker_threads = 2".into();
    s.write_config(&o);
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || {
            let now = s.workers();
            !now.is_empty() && now.iter().all(|w| !old.contains(w)) && all_are(&threads_policy(now[0]), "0")
        }),
        "{}",
        s.error_log()
    );
    // A bad value is a config error naming the key.
    let bad = s.dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[main]\nworker_sched_policy = \"fifo\"\n[[server]]\nroot = \"/tmp\"\n",
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("bad.toml:2") && text.contains("worker_sched_policy") && text.contains("\"batch\""),
        "{text}"
    );
}

#[test]
fn test_flag_rejects_unknown_user() {
    let dir = TempDir::new();
    let p = dir.path().join("u.toml");
    std::fs::write(
        &p,
        format!(
            "[main]\nuser = \"no-such-user-corral\"\n[[server]]\nroot = \"{}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        text.contains("u.toml:2:") && text.contains("main.user") && text.contains("no such user"),
        "{text}"
    );
}

/// A log file that cannot be opened fails `-t`, stops a start and refuses
/// a reload, naming the key and the file (nginx alike), instead of losing
/// its lines unseen.
#[test]
fn unopenable_log_files_fail_test_start_and_reload() {
    let dir = TempDir::new();
    // A path under a regular file: not even root can create it.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "").unwrap();
    let bad = blocker.join("access.log");
    let p = dir.path().join("bad.toml");
    std::fs::write(
        &p,
        format!(
            "[main]\nerror_log = \"{d}/error.log\"\npid = \"{d}/corral.pid\"\n\
             [[server]]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{d}\"\naccess_log = \"{bad}\"\n",
            d = dir.path().display(),
            port = free_port(),
            bad = bad.display()
        ),
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains("bad.toml:7: server.access_log")
            && text.contains(&bad.display().to_string())
            && text.contains("test failed"),
        "{text}"
    );
    // The component that is a file is named, not "File exists (os error 17)".
    assert!(
        text.contains(&format!("{} is not a directory", blocker.display())) && !text.contains("os error"),
        "{text}"
    );
    let (code, text) = run_corral(&["-c", p.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("access_log"), "{text}");

    // A pool's slow log alike.
    let p2 = dir.path().join("slow.toml");
    std::fs::write(
        &p2,
        format!(
            "[main]\nerror_log = \"stderr\"\n[pool.w]\nlisten = \"unix:{d}/w.sock\"\ncommand = [\"php-cgi\"]\n\
             request_slowlog_timeout = \"1s\"\nslowlog = \"{b}/slow.log\"\n",
            d = dir.path().display(),
            b = blocker.display()
        ),
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", p2.to_str().unwrap()]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("slowlog"), "{text}");

    // A reload to it is refused; the running workers go on.
    let s = Server::start();
    let workers = s.workers();
    s.write_config(&Opts {
        more: format!(
            "[[server]]\nlisten = \"127.0.0.1:{}\"\naccess_log = \"{}\"\n",
            free_port(),
            bad.display()
        ),
        ..Opts::default()
    });
    let line = reload_refused(&s, workers);
    assert!(line.contains("access_log"), "{line}");
}

fn owner(p: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (m.uid(), m.mode() & 0o7777)
}

/// Log files go to the workers' user only when they are plain files reached
/// without a symlink: a link planted where the error log goes (CVE-2016-1247's
/// pattern), a `/dev/stdout`-like link or a device keep their owner, at
/// start and on reopen; `-t` changes no owner at all.
#[test]
fn log_files_are_never_chowned_through_a_symlink_a_device_or_on_test() {
    if !nix_is_root() {
        eprintln!("not root: ownership changes cannot be observed");
        return;
    }
    let dir = TempDir::new();
    let d = dir.path().to_path_buf();
    let root = d.join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hi").unwrap();
    // A root-only file the error log's name points at.
    let victim = d.join("victim");
    std::fs::write(&victim, "root data\n").unwrap();
    std::fs::set_permissions(&victim, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&victim, d.join("error.log")).unwrap();
    // Like /dev/stdout: a symlink to what the launcher gave (here a file).
    let tty = d.join("tty");
    std::fs::write(&tty, "").unwrap();
    std::fs::set_permissions(&tty, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    std::os::unix::fs::symlink(&tty, d.join("access.log")).unwrap();
    // A character device of our own (the same device as /dev/null).
    let dev = d.join("null");
    let ok = Command::new("mknod")
        .args([dev.to_str().unwrap(), "c", "1", "3"])
        .status()
        .unwrap();
    assert!(ok.success());
    std::fs::set_permissions(&dev, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let plain = d.join("plain.log");
    let s = Server::with_root(
        Opts {
            main: "user = \"nobody\"".into(),
            more: format!(
                "[[server]]\nlisten = \"127.0.0.1:{{port}}\"\nserver_name = \"a\"\nroot = \"{r}\"\naccess_log = \"{plain}\"\n\
                 [[server]]\nlisten = \"127.0.0.1:{{port}}\"\nserver_name = \"b\"\nroot = \"{r}\"\naccess_log = \"{dev}\"\n",
                r = root.display(),
                plain = plain.display(),
                dev = dev.display()
            ),
            ..Opts::default()
        },
        dir,
        root,
    );
    let untouched = |what: &str| {
        assert_eq!(owner(&victim), (0, 0o600), "{what}: the symlinked error log's target");
        assert_eq!(owner(&tty).0, 0, "{what}: the symlinked access log's target");
        assert_eq!(owner(&dev).0, 0, "{what}: the device");
    };
    untouched("start");
    assert_eq!(owner(&plain).0, 65534, "a plain log file goes to the workers' user");
    // -t is a check: it hands nothing over.
    std::os::unix::fs::chown(&plain, Some(0), Some(0)).unwrap();
    let (code, out) = run_corral(&["-t", "-c", s.config.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(owner(&plain).0, 0, "-t changed the owner of {}", plain.display());
    untouched("-t");
    // A reopen hands the plain file over again, and nothing else.
    s.signal("USR1");
    assert!(eventually(Duration::from_secs(5), || owner(&plain).0 == 65534));
    untouched("reopen");
    assert_eq!(s.get("/").status, 200);
}

/// Started with signals ignored (as under `nohup`, which ignores SIGHUP,
/// or a launcher that ignores SIGCHLD): corral still reloads, replaces a
/// killed worker, reopens its logs and drains on SIGQUIT, and its CGI
/// scripts start with nothing ignored.
#[test]
fn signals_ignored_by_the_launcher_still_work() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("cgi")).unwrap();
    write_script(
        &root.join("cgi/sig.cgi"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\ngrep SigIgn /proc/self/status\n",
    );
    let wrapper = dir.path().join("nohup-like.sh");
    write_script(
        &wrapper,
        &format!(
            "#!/usr/bin/env python3\nimport os, signal, sys\n\
             for s in ('SIGHUP', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH', 'SIGQUIT', 'SIGCHLD'):\n\
             \x20   signal.signal(getattr(signal, s), signal.SIG_IGN)\n\
             os.execv('{BIN}', ['{BIN}'] + sys.argv[1:])\n"
        ),
    );
    let o = Opts {
        server: "[[server.location]]\nmatch = \"~ \\\\.cgi$\"\ncgi = { extensions = [\".cgi\"] }\n".into(),
        ..Opts::default()
    };
    let mut s = Server::launch(o, dir, root, &wrapper.display().to_string());
    let r = s.get("/cgi/sig.cgi");
    assert_eq!((r.status, r.text().trim()), (200, "SigIgn:\t0000000000000000"));
    let old = s.workers();
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(10), || s.error_log().contains("reload applied")),
        "SIGHUP was lost: {}",
        s.error_log()
    );
    assert!(eventually(Duration::from_secs(10), || old.iter().all(|w| !alive(*w))));
    // SIGCHLD ignored would have the kernel reap workers unseen.
    let victim = s.workers()[0];
    kill(victim, "KILL");
    assert!(
        eventually(Duration::from_secs(5), || !alive(victim) && s.workers().len() == 2),
        "a killed worker is replaced: {}",
        s.error_log()
    );
    s.signal("USR1");
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("reopen")),
        "{}",
        s.error_log()
    );
    s.signal("QUIT");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
}

/// A daemon's binary upgrade whose new master cannot start (here: a
/// broken config) leaves its reason in the error log: a daemon's stderr is
/// /dev/null, and only "exited with code 1" was left. The old master goes on.
#[test]
fn a_failed_upgrade_of_a_daemon_says_why_in_the_error_log() {
    let dir = TempDir::new();
    let d = dir.path();
    std::fs::write(d.join("index.html"), "up\n").unwrap();
    let port = free_port();
    let conf = d.join("corral.toml");
    let text = format!(
        "[main]\ndaemon = true\nuser = \"root\"\nworkers = 1\npid = \"{p}/corral.pid\"\nerror_log = \"{p}/error.log\"\n\
         [[server]]\nlisten = \"127.0.0.1:{port}\"\nroot = \"{p}\"\n",
        p = d.display()
    );
    std::fs::write(&conf, &text).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["-c", conf.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let pid_file = d.join("corral.pid");
    let master = read_pid(&pid_file).expect("the daemon wrote its pid");
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    std::fs::write(&conf, format!("{text}\nbroken_key_for_the_test = [\n")).unwrap();
    kill(master, "USR2");
    let done = eventually(Duration::from_secs(10), || log().contains("takes over again"));
    let text_now = log();
    kill(master, "TERM");
    assert!(done, "{text_now}");
    assert!(
        text_now.contains("corral.toml:"),
        "the new master's reason is missing:\n{text_now}"
    );
    assert!(eventually(Duration::from_secs(10), || !alive(master)));
}

/// A log file that is a symlink in a directory the workers' user can
/// write is never followed by the root master (CVE-2016-1247's pattern: a
/// planted link would have root create or append to any file).
#[test]
fn a_planted_log_symlink_is_not_followed() {
    if !nix_is_root() {
        return;
    }
    let dir = TempDir::new();
    let d = dir.path();
    let logs = d.join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(65534), Some(65534)).unwrap();
    let target = d.join("preload");
    std::os::unix::fs::symlink(&target, logs.join("access.log")).unwrap();
    let conf = d.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[main]\nuser = \"nobody\"\npid = \"{p}/c.pid\"\nerror_log = \"{p}/error.log\"\n[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{p}\"\naccess_log = \"{p}/logs/access.log\"\n",
            p = d.display()
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not followed"), "{out}");
    assert!(!target.exists(), "the master created the link's target");
}
