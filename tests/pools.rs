//! Application pools through the real binary: corral's master runs pools
//! of `php-cgi`, of CGI scripts and of a Perl FCGI program; they are
//! reached through corral's own locations and by real FastCGI clients
//! (nginx, cgi-fcgi). Behaviour is read from the status page.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::php::signal;
use common::*;

const HELLO: &str = "<?php echo 'hello ', $_GET['a'] ?? '-', ' pid ', getmypid(), \"\\n\";\n";
const SLEEP: &str = "<?php usleep((int)($_GET['ms'] ?? 1000) * 1000); echo \"slept\\n\";\n";
const INPUT: &str = "<?php $b = file_get_contents('php://input'); echo strlen($b), ' ', hash('sha256', $b), \"\\n\";\n";

/// A corral with a `[[server]]` whose `*.php` and `*.cgi` go to pools
/// `php` and `cgi` (when defined in `pools`), `/status` is the status
/// handler, and `pools` holds the `[pool.*]` tables (`{dir}` replaced).
fn corral(pools: &str, http_workers: usize) -> Server {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    for (name, body) in [("hello.php", HELLO), ("sleep.php", SLEEP), ("input.php", INPUT)] {
        std::fs::write(root.join(name), body).unwrap();
    }
    let d = dir.path().display().to_string();
    let mut server = String::from("[[server.location]]\nmatch = \"= /status\"\nstatus = true\n");
    if pools.contains("[pool.php]") {
        server.push_str(
            "[[server.location]]\nmatch = \"~ \\\\.php$\"\nfastcgi = { pass = \"pool:php\", read_timeout = \"30s\" }\n",
        );
    }
    if pools.contains("[pool.cgi]") {
        server.push_str("[[server.location]]\nmatch = \"~ \\\\.cgi$\"\nfastcgi = { pass = \"pool:cgi\" }\n");
    }
    let o = Opts {
        main: format!("workers = {http_workers}\n"),
        http: "client_max_body_size = \"16m\"\n".into(),
        server,
        more: pools.replace("{dir}", &d),
        ..Default::default()
    };
    Server::with_root(o, dir, root)
}

fn php_pool(listen: &str, extra: &str) -> String {
    // The relay unless the test says (`direct` is PHP's default).
    let relay = if extra.contains("direct") {
        ""
    } else {
        "direct = false\n"
    };
    format!(
        "[pool.php]\nlisten = \"{listen}\"\ncommand = [\"php-cgi\", \"-d\", \"output_buffering=0\"]\n{relay}{extra}\n"
    )
}

/// The status page's JSON for one pool (`?json&full`).
fn status(s: &Server) -> String {
    let r = s.get("/status?json&full");
    assert_eq!(r.status, 200, "{}", r.text());
    r.text()
}

/// A numeric field of the (first) pool in a status JSON.
fn field(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let at = json.find(&key).unwrap_or_else(|| panic!("no {name} in {json}")) + key.len();
    json[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// Pids of the processes listed by a full status JSON.
fn pids(json: &str) -> Vec<u64> {
    json.match_indices("\"pid\":")
        .map(|(i, k)| {
            json[i + k.len()..]
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
                .parse()
                .unwrap()
        })
        .collect()
}

fn total(s: &Server) -> u64 {
    field(&status(s), "total processes")
}

/// Sends `n` requests to `path` at once; their statuses.
fn concurrent(s: &Server, path: &str, n: usize) -> Vec<std::thread::JoinHandle<u16>> {
    (0..n)
        .map(|_| {
            let port = s.port;
            let path = path.to_string();
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
                let data = read_to_close(&mut c);
                parse_responses(&data, false).first().map_or(0, |r| r.status)
            })
        })
        .collect()
}

/// A server process a test started: stopped with SIGTERM (and waited
/// for) if the test ends early, so a failing test leaves nothing behind.
struct Started(Option<std::process::Child>);

impl Started {
    fn stop(&mut self, sig: i32) {
        if let Some(mut c) = self.0.take() {
            signal(c.id() as i32, sig);
            let _ = c.wait();
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
    }
}

/// corral as php-fpm in `d`: only the `pools` tables, no [[server]].
fn pools_only(d: &Path, pools: &str) -> Started {
    let conf = d.join("corral.toml");
    let main = format!(
        "[main]\nuser = \"root\"\npid = \"{d}/corral.pid\"\nerror_log = \"{d}/error.log\"\n",
        d = d.display()
    );
    std::fs::write(&conf, main + pools).unwrap();
    Started(Some(
        Command::new(BIN)
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    ))
}

/// nginx (one worker, files in `d`) with `http` inside its http block,
/// once it accepts on `port`.
fn nginx(d: &Path, port: u16, http: &str) -> Started {
    let conf = d.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/nginx-error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{ access_log off; client_body_temp_path {d}; fastcgi_temp_path {d};\n{http} }}\n",
            d = d.display()
        ),
    )
    .unwrap();
    // Held before the wait, so a failed start is stopped too.
    let child = Started(Some(
        Command::new("nginx")
            .args(["-e", "stderr", "-c"])
            .arg(&conf)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed"),
    ));
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "nginx did not start");
    child
}

#[test]
fn php_cgi_pool_serves_corral_locations() {
    php_cgi_pool_serves_corral_locations_in("direct = false\n");
}

#[test]
fn php_cgi_pool_serves_corral_locations_direct() {
    php_cgi_pool_serves_corral_locations_in("direct = true\n");
}

fn php_cgi_pool_serves_corral_locations_in(direct: &str) {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!("pm = \"static\"\nmax_children = 2\n{direct}"),
        ),
        1,
    );
    let r = s.get("/hello.php?a=one");
    assert_eq!(r.status, 200, "{}", s.error_log());
    assert!(r.text().starts_with("hello one pid "), "{}", r.text());
    // A body streamed to the app: its hash comes back.
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let path = s.dir.path().join("body");
    std::fs::write(&path, &body).unwrap();
    let (ok, out) = curl(&[
        "--data-binary",
        &format!("@{}", path.display()),
        &format!("http://127.0.0.1:{}/input.php", s.port),
    ]);
    assert!(ok);
    let want = format!("{} {}\n", body.len(), sha256(&path));
    assert_eq!(String::from_utf8_lossy(&out), want);
    // 10 MiB out and 5 MiB in, through both buffers of the worker's relay.
    std::fs::write(
        s.root.join("big.php"),
        "<?php $c = str_repeat('0123456789abcdef', 65536); for ($i = 0; $i < 10; $i++) { echo $c; }\n",
    )
    .unwrap();
    let (ok, out) = curl(&[&format!("http://127.0.0.1:{}/big.php", s.port)]);
    assert!(ok);
    assert_eq!(out.len(), 10 << 20);
    assert!(out.chunks(16).all(|c| c == b"0123456789abcdef"));
    let big: Vec<u8> = (0..5u32 << 20).map(|i| (i % 253) as u8).collect();
    std::fs::write(&path, &big).unwrap();
    let (ok, out) = curl(&[
        "--data-binary",
        &format!("@{}", path.display()),
        "-H",
        "Content-Type: application/octet-stream",
        &format!("http://127.0.0.1:{}/input.php", s.port),
    ]);
    assert!(ok);
    assert_eq!(
        String::from_utf8_lossy(&out),
        format!("{} {}\n", big.len(), sha256(&path))
    );
    let j = status(&s);
    assert_eq!(field(&j, "total processes"), 2);
    assert!(field(&j, "accepted conn") >= 1, "{j}");
    assert!(
        j.contains("\"request uri\":\"/input.php\"") || j.contains("/hello.php?a=one"),
        "{j}"
    );
    // The socket belongs to corral's own workers by default (no permission 502).
    let mode = std::fs::metadata(s.dir.path().join("php.sock")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(mode.permissions().mode() & 0o777, 0o660);
}

/// `direct = true`: php-cgi accepts on the pool's socket itself (a child
/// of the pool worker, with no corral process between it and the web
/// server), and the status still shows each request as it runs, recorded
/// by the preload library, which leaves no trace in the program's
/// environment.
#[test]
fn a_direct_program_accepts_itself_and_its_requests_are_recorded() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\ndirect = true\nclear_env = false",
        ),
        1,
    );
    std::fs::write(
        s.root.join("env.php"),
        "<?php var_dump(getenv('LD_PRELOAD'), getenv('CORRAL_PRELOAD'), getenv('CORRAL_PRELOAD_EXT'));\n",
    )
    .unwrap();
    let r = s.get("/hello.php?a=d");
    assert_eq!(r.status, 200, "{}", s.error_log());
    let app: i32 = r.text().trim().rsplit(' ').next().unwrap().parse().unwrap();
    let worker = pids(&status(&s))[0] as i32;
    let stat = std::fs::read_to_string(format!("/proc/{app}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(ppid, worker, "php-cgi {app} is the pool worker's child");
    let fds: Vec<String> = std::fs::read_dir(format!("/proc/{app}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|l| l.display().to_string())
        .collect();
    assert!(fds.iter().all(|l| !l.contains("memfd:")), "no memfd left open: {fds:?}");
    let env = s.get("/env.php").text();
    assert_eq!(env.matches("bool(false)").count(), 3, "{env}");
    let running = concurrent(&s, "/sleep.php?ms=1500&tag=running", 1);
    let seen = eventually(Duration::from_secs(5), || {
        let j = status(&s);
        j.contains("\"request uri\":\"/sleep.php?ms=1500&tag=running\"") && j.contains("\"state\":\"Running\"")
    });
    assert!(seen, "{}", status(&s));
    assert_eq!(field(&status(&s), "active processes"), 1);
    for h in running {
        assert_eq!(h.join().unwrap(), 200);
    }
    // (The library records the end just after php-cgi's write of it: the
    // answer may reach the client a moment before.)
    assert!(
        eventually(Duration::from_secs(2), || field(&status(&s), "active processes") == 0),
        "{}",
        status(&s)
    );
    let j = status(&s);
    assert!(field(&j, "accepted conn") >= 3, "{j}");
    assert!(field(&j, "request duration") >= 1_400_000, "{j}");
    assert!(field(&j, "last request memory") > 1 << 20, "{j}");
}

/// A `direct` program can write its pool's scoreboard (a script can, too,
/// through /proc/self/mem): it may falsify its own pool's figures, never
/// what the master counts or acts on. All zeros (every slot "free") must
/// not let the master start workers past max_children; all ones (failure
/// counts of 2^64) must not send the master into a loop of failures.
#[test]
fn a_direct_program_writing_its_scoreboard_cannot_move_the_master() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 2\ndirect = true\nemergency_restart_threshold = 3",
        ),
        1,
    );
    std::fs::write(
        s.root.join("forge.php"),
        "<?php $v = chr((int)($_GET['v'] ?? 0));\n\
         foreach (file('/proc/self/maps') as $l) {\n\
           if (strpos($l, 'corral-scoreboard') === false) continue;\n\
           [$a, $b] = array_map('hexdec', explode('-', explode(' ', $l)[0]));\n\
           $f = fopen('/proc/self/mem', 'r+'); fseek($f, $a); fwrite($f, str_repeat($v, $b - $a)); fclose($f);\n\
           echo 'forged ', $b - $a, \"\\n\";\n\
         }\n",
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || total(&s) == 2));
    for v in ["0", "255"] {
        let r = s.get(&format!("/forge.php?v={v}"));
        assert!(r.text().starts_with("forged "), "{} {}", r.text(), s.error_log());
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(2500) {
            let workers = children_of(s.pid())
                .into_iter()
                .filter(|&p| cmdline(p).contains("pool php"))
                .count();
            assert!(workers <= 2, "{workers} pool workers for max_children = 2");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The master still answers: a reload is applied.
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("reload applied")),
        "{}",
        s.error_log()
    );
    assert!(!s.error_log().contains("emergency restart"), "{}", s.error_log());
    assert!(eventually(Duration::from_secs(5), || s.get("/hello.php").status == 200));
}

/// A PHP command run through a wrapper (`/usr/bin/env php-cgi`, direct by
/// default) is followed all the same: the library sets up in the process
/// that accepts, not in the wrapper (which would take it away from php-cgi).
#[test]
fn a_direct_php_cgi_behind_a_wrapper_is_followed() {
    let s = corral(
        "[pool.php]\nlisten = \"unix:{dir}/php.sock\"\ncommand = [\"/usr/bin/env\", \"php-cgi\"]\npm = \"static\"\nmax_children = 1\n",
        1,
    );
    std::fs::write(s.root.join("evil.jpg"), "<?php echo 'EVIL_EXECUTED';").unwrap();
    assert_eq!(s.get("/hello.php").status, 200, "{}", s.error_log());
    let j = status(&s);
    assert!(j.contains("\"request uri\":\"/hello.php\""), "{j}");
    // limit_extensions holds (corral's front would not send this; a client
    // of the socket may).
    let sock = s.dir.path().join("php.sock");
    let out = Command::new("cgi-fcgi")
        .args(["-bind", "-connect"])
        .arg(&sock)
        .env_clear()
        .env("SCRIPT_FILENAME", s.root.join("evil.jpg"))
        .env("REQUEST_METHOD", "GET")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(out.contains("Access denied.") && !out.contains("EVIL"), "{out}");
}

/// A reload while a `direct` program runs a script: the script runs to its
/// end undisturbed (the worker's stop signal is blocked while PHP runs: a
/// sleep() is not cut short), then the program ends.
#[test]
fn a_direct_program_told_to_stop_finishes_its_script_undisturbed() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\ndirect = true",
        ),
        1,
    );
    std::fs::write(
        s.root.join("nap.php"),
        "<?php $t = microtime(true); sleep(3); usleep(500000); printf(\"napped %.2f\\n\", microtime(true) - $t);\n",
    )
    .unwrap();
    let port = s.port;
    let h = std::thread::spawn(move || {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(c, "GET /nap.php HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        String::from_utf8_lossy(&read_to_close(&mut c)).into_owned()
    });
    assert!(eventually(Duration::from_secs(5), || field(
        &status(&s),
        "active processes"
    ) == 1));
    // A changed pool: its worker is told to stop after the request.
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        cfg.replace("max_children = 1", "max_children = 1\nmax_requests = 100"),
    )
    .unwrap();
    s.signal("HUP");
    let out = h.join().unwrap();
    let napped: f64 = out
        .split("napped ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("{out} {}", s.error_log()));
    assert!(napped >= 3.4, "the script's sleeps were cut short: {napped} s");
}

/// A `direct` Perl FCGI program (libfcgi reads its records in large
/// pieces): every request on a kept connection is recorded.
#[test]
fn a_direct_perl_fcgi_program_has_each_request_recorded() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/perl.sock\"\ncommand = [\"perl\", \"{dir}/app.pl\"]\npm = \"static\"\nmax_children = 1\ndirect = true\n",
        1,
    );
    std::fs::write(
        s.dir.path().join("app.pl"),
        "use FCGI; my $r = FCGI::Request(); my $n = 0;\n\
         while ($r->Accept() >= 0) { $n++; print \"Content-Type: text/plain\\r\\n\\r\\nperl $n\\n\"; }\n",
    )
    .unwrap();
    std::fs::write(s.root.join("x.cgi"), "").unwrap();
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(10), || s
        .get("/x.cgi")
        .text()
        .starts_with("perl ")));
    let before = field(&status(&s), "requests");
    let mut c = s.connect();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    for i in 0..5 {
        write!(
            c,
            "POST /x.cgi?i={i} HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc"
        )
        .unwrap();
        let (code, _) = read_response(&mut r).expect("an answer");
        assert_eq!(code, 200);
    }
    let j = status(&s);
    assert_eq!(field(&j, "requests"), before + 5, "{j}");
    assert!(j.contains("\"request uri\":\"/x.cgi?i=4\""), "{j}");
}

fn sha256(p: &Path) -> String {
    let out = Command::new("sha256sum").arg(p).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn nginx_and_cgi_fcgi_are_served_by_a_pool() {
    nginx_and_cgi_fcgi_are_served_by_a_pool_in("direct = false\n");
}

#[test]
fn nginx_and_cgi_fcgi_are_served_by_a_pool_direct() {
    nginx_and_cgi_fcgi_are_served_by_a_pool_in("direct = true\n");
}

fn nginx_and_cgi_fcgi_are_served_by_a_pool_in(direct: &str) {
    let dir = TempDir::new();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("hello.php"), HELLO).unwrap();
    // corral as php-fpm: pools only, no [[server]].
    let port = free_port();
    let mut corral = pools_only(
        d,
        &format!(
            "[pool.www]\nlisten = \"127.0.0.1:{port}\"\ncommand = [\"php-cgi\"]\npm = \"dynamic\"\n\
             max_children = 3\nstart_servers = 1\nmin_spare_servers = 1\nmax_spare_servers = 2\n\
             status_path = \"/fpm-status\"\nping_path = \"/ping\"\n{direct}"
        ),
    );
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    assert!(up, "{}", log());
    // cgi-fcgi (libfcgi) speaks FastCGI to the pool directly.
    let out = Command::new("cgi-fcgi")
        .args(["-bind", "-connect", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("SCRIPT_FILENAME", www.join("hello.php"))
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", "a=libfcgi")
        .env("REDIRECT_STATUS", "200")
        .output()
        .expect("cgi-fcgi is installed (libfcgi-bin)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello libfcgi pid"), "{text} {}", log());
    let ping = Command::new("cgi-fcgi")
        .args(["-bind", "-connect", &format!("127.0.0.1:{port}")])
        .env_clear()
        .env("SCRIPT_NAME", "/ping")
        .env("REQUEST_METHOD", "GET")
        .output()
        .unwrap();
    // php-fpm's answer: "pong", no newline added.
    let ping = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(ping.ends_with("\r\n\r\npong"), "{ping:?}");
    // nginx in front, fastcgi_pass to the pool.
    let nport = free_port();
    let w = www.display();
    let mut nginx = nginx(
        d,
        nport,
        &format!(
            "server {{ listen 127.0.0.1:{nport}; root {w};\n\
             location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_pass 127.0.0.1:{port}; }}\n\
             location = /fpm-status {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_NAME /fpm-status; fastcgi_pass 127.0.0.1:{port}; }} }}\n"
        ),
    );
    for i in 0..20 {
        let (ok, out) = curl(&[&format!("http://127.0.0.1:{nport}/hello.php?a=n{i}")]);
        assert!(ok);
        assert!(
            String::from_utf8_lossy(&out).starts_with(&format!("hello n{i} pid")),
            "{}",
            log()
        );
    }
    // php-fpm's status page, answered by the pool itself, in its format.
    let (_, out) = curl(&[&format!("http://127.0.0.1:{nport}/fpm-status?json")]);
    let j = String::from_utf8_lossy(&out).to_string();
    assert!(
        j.starts_with("{\"pool\":\"www\",\"process manager\":\"dynamic\""),
        "{j}"
    );
    assert!(field(&j, "accepted conn") >= 20, "{j}");
    let (_, out) = curl(&[&format!("http://127.0.0.1:{nport}/fpm-status?openmetrics")]);
    let m = String::from_utf8_lossy(&out).to_string();
    // php-fpm's own families there, so its scrapers read it unchanged.
    assert!(m.contains("\nphpfpm_accepted_connections "), "{m}");
    assert!(m.ends_with("# EOF\n"), "{m}");
    nginx.stop(libc::SIGQUIT);
    corral.stop(libc::SIGQUIT);
    assert!(!d.join("www.sock").exists());
}

#[test]
fn cgi_pool_runs_a_script_per_request() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/cgi.sock\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 2\n",
        1,
    );
    let script = s.root.join("echo.cgi");
    write_script(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"method=$REQUEST_METHOD query=$QUERY_STRING\"\necho oops >&2\ncat\n",
    );
    let (ok, out) = curl(&["-d", "payload", &format!("http://127.0.0.1:{}/echo.cgi?x=1", s.port)]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), "method=POST query=x=1\npayload");
    // The script's stderr reached corral's error log through FCGI_STDERR.
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("oops")),
        "{}",
        s.error_log()
    );
    // None of the worker's blocked (signalfd) or ignored signals reach a
    // script: it dies of a SIGTERM it sends itself.
    write_script(
        &s.root.join("signals.cgi"),
        "#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n'
grep -E '^Sig(Blk|Ign)' /proc/self/status
",
    );
    let text = s.get("/signals.cgi").text();
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
    write_script(
        &s.root.join("term.cgi"),
        "#!/bin/sh
kill -TERM $$
printf 'Content-Type: text/plain\\r\\n\\r\\nstill alive\\n'
",
    );
    let r = s.get("/term.cgi");
    assert!(!r.text().contains("still alive"), "{} {}", r.status, r.text());
}

/// A pool `cgi` (one worker) running a Perl FCGI program that answers
/// `/x.cgi` with "perl N " and `rest` (Perl) after it, once it serves.
fn perl_pool(rest: &str) -> Server {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/perl.sock\"\ncommand = [\"perl\", \"{dir}/app.pl\"]\npm = \"static\"\nmax_children = 1\n",
        1,
    );
    std::fs::write(
        s.dir.path().join("app.pl"),
        format!(
            "use FCGI; my $r = FCGI::Request(); my $n = 0;\n\
             while ($r->Accept() >= 0) {{ $n++; print \"Content-Type: text/plain\\r\\n\\r\\nperl $n {rest}\\n\"; }}\n"
        ),
    )
    .unwrap();
    std::fs::write(s.root.join("x.cgi"), "").unwrap();
    // The program starts with the worker: restart the pool's workers so
    // they see the script written after the server started.
    s.signal("HUP");
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        let r = s.get("/x.cgi?q=1");
        last = r.text();
        r.status == 200 && last.starts_with("perl ")
    });
    assert!(ok, "{last} {}", s.error_log());
    s
}

#[test]
fn perl_fcgi_program_in_a_pool() {
    let s = perl_pool("$ENV{QUERY_STRING}");
    let a = s.get("/x.cgi?q=2").text();
    let b = s.get("/x.cgi?q=3").text();
    // One long-lived process: its request counter goes on.
    let n = |t: &str| t.split(' ').nth(1).unwrap().parse::<u32>().unwrap();
    assert_eq!(n(&b), n(&a) + 1, "{a} {b}");
    // The program starts with no blocked or ignored signals (the worker's
    // signalfd set and SIGPIPE stay the worker's).
    let programs: Vec<i32> = children_of(s.pid())
        .into_iter()
        .flat_map(children_of)
        .filter(|&p| cmdline(p).contains("app.pl"))
        .collect();
    assert_eq!(programs.len(), 1, "{programs:?}");
    let status = std::fs::read_to_string(format!("/proc/{}/status", programs[0])).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(field("SigBlk:"), "SigBlk:\t0000000000000000");
    // (perl ignores SIGFPE itself.)
    let ign = field("SigIgn:");
    assert!(
        ign == "SigIgn:\t0000000000000000" || ign == "SigIgn:\t0000000000000080",
        "{ign}"
    );
}

/// An upload is never run as PHP: with php's `cgi.fix_pathinfo`,
/// `/up/evil.jpg/x.php` runs `/up/evil.jpg`; the pool refuses a script
/// that does not end in `.php` (php-fpm's security.limit_extensions).
#[test]
fn a_php_pool_runs_only_php_scripts() {
    a_php_pool_runs_only_php_scripts_in("direct = false\n");
}

#[test]
fn a_php_pool_runs_only_php_scripts_direct() {
    a_php_pool_runs_only_php_scripts_in("direct = true\n");
}

fn a_php_pool_runs_only_php_scripts_in(direct: &str) {
    let dir = TempDir::new();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir_all(www.join("up")).unwrap();
    std::fs::write(www.join("hello.php"), HELLO).unwrap();
    std::fs::write(www.join("up/evil.jpg"), "<?php echo 'EVIL_EXECUTED';").unwrap();
    std::fs::write(d.join("secret.txt"), "TOP SECRET").unwrap();
    let port = free_port();
    let _corral = pools_only(
        d,
        &format!(
            "[pool.www]\nlisten = \"127.0.0.1:{port}\"\ncommand = [\"php-cgi\"]\npm = \"static\"\nmax_children = 1\n{direct}"
        ),
    );
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "{}",
        log()
    );
    let run = |script: &Path| {
        let out = Command::new("cgi-fcgi")
            .args(["-bind", "-connect", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("SCRIPT_FILENAME", script)
            .env("REQUEST_METHOD", "GET")
            .env("REDIRECT_STATUS", "200")
            .output()
            .expect("cgi-fcgi is installed (libfcgi-bin)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&www.join("hello.php")).contains("hello"), "{}", log());
    for script in [
        www.join("up/evil.jpg/x.php"),
        www.join("up/evil.jpg"),
        d.join("secret.txt"),
    ] {
        let out = run(&script);
        assert!(
            out.contains("Status: 403")
                && out.contains("Access denied.")
                && !out.contains("EVIL")
                && !out.contains("SECRET"),
            "{}: {out}",
            script.display()
        );
    }
    assert!(log().contains("has been denied (see limit_extensions)"), "{}", log());
    // What a client on the pool's socket may send besides: a name that is
    // not UTF-8 after the upload, SCRIPT_FILENAME twice (php-cgi runs the
    // last), params that end at the STDIN record with no empty PARAMS
    // record (php-cgi stops at any other record).
    let evil = www.join("up/evil.jpg").display().to_string();
    let hello = www.join("hello.php").display().to_string();
    for case in ["non-utf8", "twice", "no-params-end"] {
        let out = Command::new("python3")
            .args(["-c", CRAFTED_CLIENT, &port.to_string(), case, &evil, &hello])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(!out.contains("EVIL_EXECUTED"), "{case}: {out} {}", log());
    }
}

/// One FastCGI request of a kind (`argv[2]`) to 127.0.0.1:`argv[1]`;
/// prints what came back. `argv[3]`: an upload that is not a script,
/// `argv[4]`: a real script.
const CRAFTED_CLIENT: &str = r#"import socket, struct, sys
def rec(t, rid, c=b''):
    pad = (8 - len(c) % 8) % 8
    return struct.pack('>BBHHBx', 1, t, rid, len(c), pad) + c + b'\0' * pad
def nv(pairs):
    return b''.join(bytes([len(k), len(v)]) + k + v for k, v in pairs)
case, evil, hello = sys.argv[2], sys.argv[3].encode(), sys.argv[4].encode()
base = [(b'REQUEST_METHOD', b'GET'), (b'REDIRECT_STATUS', b'200')]
if case == 'non-utf8':
    p = rec(4, 1, nv(base + [(b'SCRIPT_FILENAME', evil + b'/\xff.php')])) + rec(4, 1)
elif case == 'twice':
    p = rec(4, 1, nv(base + [(b'SCRIPT_FILENAME', hello), (b'SCRIPT_FILENAME', evil)])) + rec(4, 1)
else:
    p = rec(4, 1, nv(base + [(b'SCRIPT_FILENAME', evil)]))
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
s.settimeout(10)
s.sendall(rec(1, 1, struct.pack('>HB5x', 1, 0)) + p + rec(5, 1))
out = b''
try:
    while True:
        x = s.recv(65536)
        if not x:
            break
        out += x
except Exception:
    pass
print(out.decode('latin-1'))
"#;

/// A FastCGI client sending four requests on one kept connection, each in
/// pieces 30 ms apart: BEGIN and PARAMS, then (for a POST) the body, then
/// the empty STDIN record. Prints "END <stdout>" or "CLOSED" per request.
const SPLIT_CLIENT: &str = r#"import socket, struct, sys, time
def rec(t, rid, c=b''):
    pad = (8 - len(c) % 8) % 8
    return struct.pack('>BBHHBx', 1, t, rid, len(c), pad) + c + b'\0' * pad
def nv(d):
    return b''.join(bytes([len(k), len(v)]) + k.encode() + v.encode() for k, v in d.items())
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))
buf = b''
for rid in range(1, 5):
    body = b'b' * 1000 if rid % 2 == 0 else b''
    p = {'REQUEST_METHOD': 'POST' if body else 'GET', 'SCRIPT_NAME': '/x', 'CONTENT_LENGTH': str(len(body))}
    s.sendall(rec(1, rid, struct.pack('>HB5x', 1, 1)) + rec(4, rid, nv(p)) + rec(4, rid))
    if body:
        time.sleep(0.03)
        s.sendall(rec(5, rid, body))
    time.sleep(0.03)
    s.sendall(rec(5, rid))
    out, end = b'', None
    while end is None:
        x = s.recv(65536)
        if not x:
            end = 'CLOSED'
            break
        buf += x
        while len(buf) >= 8:
            v, t, r, l, pad = struct.unpack('>BBHHB', buf[:7])
            if len(buf) < 8 + l + pad:
                break
            if t == 6:
                out += buf[8:8 + l]
            buf = buf[8 + l + pad:]
            if t == 3:
                end = 'END'
    print(end, out.split(b'\r\n\r\n')[-1].decode().strip(), flush=True)
"#;

/// POSTs through corral's front to a pool whose workers retire every 5
/// requests: a worker leaving closes its kept connection as a php-fpm
/// child does (shut, then drained), so a POST the front sent just then is
/// known not to have run and is sent again: none is a 502.
#[test]
fn posts_survive_pool_workers_recycling() {
    posts_survive_pool_workers_recycling_in("direct = false\n");
}

#[test]
fn posts_survive_pool_workers_recycling_direct() {
    posts_survive_pool_workers_recycling_in("direct = true\n");
}

fn posts_survive_pool_workers_recycling_in(direct: &str) {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!("pm = \"static\"\nmax_children = 2\nmax_requests = 5\n{direct}"),
        ),
        1,
    );
    let body = "a".repeat(1000);
    let c = s.connect();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut c = c;
    let mut codes = std::collections::BTreeMap::new();
    for _ in 0..300 {
        c.write_all(
            format!(
                "POST /input.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        let (code, _) = read_response(&mut r).expect("an answer");
        *codes.entry(code).or_insert(0) += 1;
    }
    assert_eq!(codes.get(&200), Some(&300), "{codes:?}\n{}", s.error_log());
}

/// A POST whose script kills the pool's program on a kept connection:
/// 502, and the script ran once. (The worker closes such a connection at
/// once: drained, the front would take it for one that never ran the
/// request and send the POST again.)
#[test]
fn a_post_that_kills_the_pool_program_runs_once() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    let log = s.dir.path().join("charges.log");
    std::fs::write(
        s.root.join("charge_dies.php"),
        format!(
            "<?php file_put_contents('{}', ($_POST['id'] ?? '-') . \"\\n\", FILE_APPEND | LOCK_EX); posix_kill(getmypid(), 9);",
            log.display()
        ),
    )
    .unwrap();
    let c = s.connect();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let mut c = c;
    c.write_all(b"GET /hello.php HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(read_response(&mut r).unwrap().0, 200, "{}", s.error_log());
    c.write_all(
        b"POST /charge_dies.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n\
          Content-Length: 4\r\n\r\nid=7",
    )
    .unwrap();
    assert_eq!(read_response(&mut r).unwrap().0, 502, "{}", s.error_log());
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "7\n", "the script ran once");
}

/// A client that aborts (FCGI_ABORT_REQUEST) an answer the program has
/// already ended and that it has not read: the worker drops the rest and
/// takes the next request (it waited for ever on nothing, and a pool of
/// such workers answered only 503).
#[test]
fn a_client_gone_after_the_answer_ended_frees_the_worker() {
    let dir = TempDir::new();
    let d = dir.path();
    std::fs::write(
        d.join("app.pl"),
        "use FCGI; my $r = FCGI::Request(); my $n = 0;\n\
         while ($r->Accept() >= 0) { $n++; print \"Content-Type: text/plain\\r\\n\\r\\n\", \"x\" x 300000, \"\\nperl $n\\n\"; }\n",
    )
    .unwrap();
    std::fs::write(
        d.join("client.py"),
        r#"import socket, struct, sys, time
def rec(t, rid, c=b''):
    pad = (8 - len(c) % 8) % 8
    return struct.pack('>BBHHBx', 1, t, rid, len(c), pad) + c + b'\0' * pad
req = rec(1, 1, struct.pack('>HB5x', 1, 0)) + rec(4, 1, bytes([6, 3]) + b'METHODGET') + rec(4, 1) + rec(5, 1)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
if sys.argv[2] == 'leave':
    # Reads nothing: the end of the answer (ended by then) stays in the
    # worker's queue when the abort comes, as when corral's front loses
    # its client.
    s.sendall(req)
    time.sleep(0.5)
    s.sendall(rec(2, 1))
    time.sleep(0.2)
    s.close()
    sys.exit(0)
s.sendall(req)
s.settimeout(5)
got = b''
while True:
    try:
        x = s.recv(65536)
    except socket.timeout:
        print('TIMEOUT')
        sys.exit(0)
    if not x:
        break
    got += x
print('OK' if b'perl ' in got else 'SHORT %d' % len(got))
"#,
    )
    .unwrap();
    let sock = d.join("perl.sock");
    let _corral = pools_only(
        d,
        &format!(
            "[pool.perl]\nlisten = \"unix:{}\"\ncommand = [\"perl\", \"{}/app.pl\"]\npm = \"static\"\nmax_children = 1\n",
            sock.display(),
            d.display()
        ),
    );
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(10), || std::os::unix::net::UnixStream::connect(
            &sock
        )
        .is_ok()),
        "{}",
        log()
    );
    let client = |how: &str| {
        let out = Command::new("python3")
            .arg(d.join("client.py"))
            .arg(&sock)
            .arg(how)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    for _ in 0..3 {
        client("leave");
        assert_eq!(client("stay"), "OK", "{}", log());
    }
}

/// libfcgi (here Perl's FCGI) does not read the end of a STDIN it did not
/// need (a GET's; the rest after CONTENT_LENGTH bytes): relayed on its
/// own while the program works (it answers after 100 ms here), it is taken for the next request's first record
/// and the program drops the connection, so the next request failed with
/// a 502 and a restarted program. The pool worker sends it together with
/// what precedes it even when its client sends the pieces apart.
#[test]
fn libfcgi_programs_get_a_request_whole_when_the_client_sends_it_in_pieces() {
    let dir = TempDir::new();
    let d = dir.path();
    std::fs::write(
        d.join("app.pl"),
        "use FCGI; my $r = FCGI::Request(); my $n = 0;\n\
         while ($r->Accept() >= 0) { $n++; my $len = $ENV{CONTENT_LENGTH} || 0; my $b = '';\n\
         while (length($b) < $len) { read(STDIN, $b, $len - length($b), length($b)) or last; }\n\
         select(undef, undef, undef, 0.1);\n\
         print \"Content-Type: text/plain\\r\\n\\r\\nperl $n $$ \", length($b), \"\\n\"; }\n",
    )
    .unwrap();
    std::fs::write(d.join("client.py"), SPLIT_CLIENT).unwrap();
    let port = free_port();
    let _corral = pools_only(
        d,
        &format!(
            "[pool.perl]\nlisten = \"127.0.0.1:{port}\"\ncommand = [\"perl\", \"{}/app.pl\"]\n\
             pm = \"static\"\nmax_children = 1\n",
            d.display()
        ),
    );
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "{}", log());
    let out = Command::new("python3")
        .arg(d.join("client.py"))
        .arg(port.to_string())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.len(),
        4,
        "{text} {} {}",
        String::from_utf8_lossy(&out.stderr),
        log()
    );
    // One program served all four (its counter goes on), bodies read whole.
    let pid = lines[0].split(' ').nth(3).unwrap_or("?").to_string();
    for (i, l) in lines.iter().enumerate() {
        let len = if i % 2 == 1 { 1000 } else { 0 };
        assert_eq!(*l, format!("END perl {} {pid} {len}", i + 1), "{text} {}", log());
    }
    assert!(!log().contains("closed its connection"), "{}", log());
}

/// A libfcgi program that ignores a body leaves the rest of it unread on
/// its kept connection, reads it as the next request's first record and
/// drops the connection: the worker sends that request again on a new one
/// (the program, alive, never ran it), and the client sees no 502.
#[test]
fn a_kept_connection_the_program_drops_unanswered_is_retried() {
    let s = perl_pool("$$");
    let body = "b".repeat(40_000);
    for _ in 0..3 {
        let r = s.request(&format!(
            "POST /x.cgi HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ));
        assert_eq!(r.status, 200, "{} {}", r.text(), s.error_log());
        let r = s.get("/x.cgi");
        assert_eq!(r.status, 200, "{} {}", r.text(), s.error_log());
    }
    assert!(s.error_log().contains("sent again on a new one"), "{}", s.error_log());
    assert!(!s.error_log().contains("the application failed"), "{}", s.error_log());
}

/// A FastCGI program that answers each request and then, 50 ms later,
/// sends a second full answer with the same id.
fn late_answers() -> String {
    fcgi_py(
        "ls = socket.socket(fileno=0)",
        "end = rec(6, rid, b'') + rec(3, rid, b'\\0' * 8)\n\
         c.sendall(rec(6, rid, b'Content-Type: text/plain\\r\\n\\r\\nanswer %d\\n' % n) + end)\n\
         time.sleep(0.05)\n\
         c.sendall(rec(6, rid, b'Content-Type: text/plain\\r\\nX-Injected: yes\\r\\n\\r\\nLATE %d\\n' % n) + end)",
    )
}

/// What a pool's program sends after a request's END_REQUEST (or under
/// another request's id) never reaches the next client.
#[test]
fn late_records_of_a_program_never_reach_the_next_client() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/late.sock\"\ncommand = [\"python3\", \"{dir}/late.py\"]\npm = \"static\"\nmax_children = 1\n",
        1,
    );
    std::fs::write(s.dir.path().join("late.py"), late_answers()).unwrap();
    std::fs::write(s.root.join("x.cgi"), "").unwrap();
    s.signal("HUP");
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        let r = s.get("/x.cgi");
        last = r.text();
        r.status == 200 && last.starts_with("answer ")
    });
    assert!(ok, "{last} {}", s.error_log());
    for k in 0..6 {
        let r = s.get("/x.cgi");
        assert_eq!(r.status, 200, "{}", s.error_log());
        assert!(r.text().starts_with("answer "), "request {k} got {:?}", r.text());
        assert!(r.header("x-injected").is_none(), "request {k}");
        if k % 2 == 0 {
            // Also when the late answer is already waiting.
            std::thread::sleep(Duration::from_millis(120));
        }
    }
    assert!(
        s.error_log()
            .contains("records of another request or after its END_REQUEST"),
        "{}",
        s.error_log()
    );
}

#[test]
fn dynamic_grows_to_max_children_then_shrinks_to_max_spare() {
    dynamic_grows_to_max_children_then_shrinks_to_max_spare_in("direct = false\n");
}

#[test]
fn dynamic_grows_to_max_children_then_shrinks_to_max_spare_direct() {
    dynamic_grows_to_max_children_then_shrinks_to_max_spare_in("direct = true\n");
}

fn dynamic_grows_to_max_children_then_shrinks_to_max_spare_in(direct: &str) {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!(
                "pm = \"dynamic\"\nmax_children = 4\nstart_servers = 1\nmin_spare_servers = 1\nmax_spare_servers = 2\n{direct}"
            ),
        ),
        1,
    );
    assert!(eventually(Duration::from_secs(5), || total(&s) == 1), "{}", status(&s));
    let started = Instant::now();
    // php-fpm's pace: one worker the first second, then twice as many each second.
    let hs = concurrent(&s, "/sleep.php?ms=7000", 6);
    let mut peak = 0;
    while started.elapsed() < Duration::from_millis(6800) {
        let j = status(&s);
        peak = peak.max(field(&j, "total processes"));
        assert!(
            field(&j, "total processes") <= 4 && field(&j, "active processes") <= 4,
            "{j}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(peak, 4, "grew to max_children");
    for h in hs {
        assert_eq!(h.join().unwrap(), 200);
    }
    let j = status(&s);
    assert!(field(&j, "max children reached") >= 1, "{j}");
    assert!(field(&j, "max active processes") == 4, "{j}");
    // Idle again: back down to max_spare_servers, one a second (php-fpm's
    // pace), so it passes through 3 for a while.
    let mut seen = Vec::new();
    let shrunk = eventually(Duration::from_secs(10), || {
        let t = total(&s);
        seen.push(t);
        t == 2
    });
    assert!(shrunk, "{}", status(&s));
    assert!(seen.iter().filter(|&&t| t == 3).count() >= 3, "{seen:?}");
}

#[test]
fn ondemand_starts_empty_spawns_on_demand_and_retires_idle_workers() {
    ondemand_starts_empty_spawns_on_demand_and_retires_idle_workers_in("direct = false\n");
}

#[test]
fn ondemand_starts_empty_spawns_on_demand_and_retires_idle_workers_direct() {
    ondemand_starts_empty_spawns_on_demand_and_retires_idle_workers_in("direct = true\n");
}

fn ondemand_starts_empty_spawns_on_demand_and_retires_idle_workers_in(direct: &str) {
    let s = corral(
        &php_pool(
            "127.0.0.1:0",
            &format!("pm = \"ondemand\"\nmax_children = 2\nprocess_idle_timeout = \"2s\"\n{direct}"),
        )
        .replace("127.0.0.1:0", &format!("127.0.0.1:{}", free_port())),
        1,
    );
    assert_eq!(total(&s), 0);
    let r = s.get("/hello.php?a=od");
    assert_eq!(r.status, 200, "{}", s.error_log());
    assert_eq!(total(&s), 1);
    let retired = eventually(Duration::from_secs(8), || total(&s) == 0);
    assert!(retired, "{}", status(&s));
}

/// Requests that wait (in corral) for an ondemand pool at max_children
/// count and log "max children reached", as php-fpm's ondemand does when a
/// connection arrives at the limit.
#[test]
fn ondemand_counts_max_children_reached() {
    let s = corral(
        &php_pool("unix:{dir}/php.sock", "pm = \"ondemand\"\nmax_children = 1"),
        1,
    );
    // The only worker runs a request; two more arrive at the limit.
    let mut slow = concurrent(&s, "/sleep.php?ms=2000", 1);
    assert!(eventually(Duration::from_secs(5), || field(
        &status(&s),
        "active processes"
    ) == 1));
    assert_eq!(field(&status(&s), "max children reached"), 0);
    slow.extend(concurrent(&s, "/sleep.php?ms=100", 2));
    assert!(
        eventually(Duration::from_secs(3), || field(&status(&s), "max children reached")
            >= 1),
        "{}",
        status(&s)
    );
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(field(&status(&s), "max children reached"), 1, "once per episode");
    assert!(
        s.error_log()
            .contains("server reached pm.max_children setting (1), consider raising it"),
        "{}",
        s.error_log()
    );
}

#[test]
fn max_requests_and_max_memory_recycle_workers() {
    max_requests_and_max_memory_recycle_workers_in("direct = false\n");
}

#[test]
fn max_requests_and_max_memory_recycle_workers_direct() {
    max_requests_and_max_memory_recycle_workers_in("direct = true\n");
}

fn max_requests_and_max_memory_recycle_workers_in(direct: &str) {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!("pm = \"static\"\nmax_children = 1\nmax_requests = 3\n{direct}"),
        ),
        1,
    );
    let pid_of = |t: String| t.split(" pid ").nth(1).unwrap().trim().to_string();
    let mut first = vec![pid_of(s.get("/hello.php").text())];
    // (Read after the first request: after the third the worker may be
    // gone already.)
    let worker = pids(&status(&s));
    first.extend((0..2).map(|_| pid_of(s.get("/hello.php").text())));
    assert!(first.iter().all(|p| *p == first[0]), "{first:?}");
    let next = pid_of(s.get("/hello.php").text());
    assert_ne!(next, first[0], "a new app after max_requests");
    assert_ne!(pids(&status(&s)), worker);
    drop(s);
    // Any RSS is above 1 MiB: every request recycles its worker.
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!("pm = \"static\"\nmax_children = 1\nmax_memory = \"1m\"\n{direct}"),
        ),
        1,
    );
    let a = pid_of(s.get("/hello.php").text());
    let b = pid_of(s.get("/hello.php").text());
    assert_ne!(a, b);
    assert!(s.error_log().contains("max_memory"), "{}", s.error_log());
}

#[test]
fn terminate_timeout_kills_the_request_and_slowlog_names_the_url() {
    terminate_timeout_kills_the_request_and_slowlog_names_the_url_in("direct = false\n");
}

#[test]
fn terminate_timeout_kills_the_request_and_slowlog_names_the_url_direct() {
    terminate_timeout_kills_the_request_and_slowlog_names_the_url_in("direct = true\n");
}

fn terminate_timeout_kills_the_request_and_slowlog_names_the_url_in(direct: &str) {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!(
                "pm = \"static\"\nmax_children = 1\nrequest_terminate_timeout = \"2s\"\nrequest_slowlog_timeout = \"1s\"\nslowlog = \"{{dir}}/slow.log\"\n{direct}"
            ),
        ),
        1,
    );
    let t = Instant::now();
    let r = s.get("/sleep.php?ms=100000&tag=slowone");
    assert!(r.status >= 500, "{}", r.status);
    assert!(t.elapsed() < Duration::from_secs(8));
    // (The master counts and writes from its own tick: give it one.)
    assert!(
        eventually(Duration::from_secs(3), || {
            let j = status(&s);
            field(&j, "terminated requests") == 1 && field(&j, "slow requests") >= 1
        }),
        "{}",
        status(&s)
    );
    let slow_log = s.dir.path().join("slow.log");
    assert!(
        eventually(Duration::from_secs(3), || std::fs::read_to_string(&slow_log)
            .unwrap_or_default()
            .contains("GET /sleep.php?ms=100000&tag=slowone")),
        "{:?}",
        std::fs::read_to_string(&slow_log)
    );
    assert!(s.error_log().contains("execution timed out"), "{}", s.error_log());
    // The pool serves again.
    assert_eq!(s.get("/hello.php").status, 200);
}

#[test]
fn killed_workers_are_respawned_and_repeated_crashes_restart_the_pool() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 2\nemergency_restart_threshold = 3\nemergency_restart_interval = \"30s\"",
        ),
        1,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 2));
    for round in 0..3 {
        let before = pids(&status(&s));
        assert_eq!(before.len(), 2, "{round}: {}", status(&s));
        signal(before[0] as i32, libc::SIGKILL);
        let back = eventually(Duration::from_secs(5), || {
            let now = pids(&status(&s));
            now.len() == 2 && !now.contains(&before[0])
        });
        assert!(back, "round {round}: {}", status(&s));
        // Its program's private directory went with it.
        let dir = std::env::temp_dir().join(format!("corral-app.{}", before[0]));
        assert!(
            eventually(Duration::from_secs(2), || !dir.exists()),
            "{} left",
            dir.display()
        );
    }
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("emergency restart")),
        "{}",
        s.error_log()
    );
    assert!(eventually(Duration::from_secs(5), || s.get("/hello.php").status == 200));
}

#[test]
fn saturated_pool_queues_with_a_deadline_then_503() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 2\nqueue_timeout = \"1s\"",
        ),
        2,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 2));
    // Whichever HTTP worker takes them, both pool workers serve at once.
    let started = Instant::now();
    let hs = concurrent(&s, "/sleep.php?ms=3000", 2);
    assert!(eventually(Duration::from_secs(2), || field(
        &status(&s),
        "active processes"
    ) == 2));
    // On time: not at the worker's next once-a-second sweep (was up to 2 s).
    for _ in 0..2 {
        let t = Instant::now();
        let r = s.get("/hello.php");
        assert_eq!(r.status, 503, "{}", r.text());
        assert!(r.header("retry-after").is_some());
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(950) && waited < Duration::from_millis(1200),
            "{waited:?}"
        );
    }
    assert!(
        s.error_log().contains("had no free worker within queue_timeout"),
        "{}",
        s.error_log()
    );
    for h in hs {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(5500),
        "concurrent, not one after the other"
    );
    // A request that waits less than queue_timeout is served when a worker frees.
    let hs = concurrent(&s, "/sleep.php?ms=600", 2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(s.get("/hello.php").status, 200);
    for h in hs {
        assert_eq!(h.join().unwrap(), 200);
    }
    // A queued request whose client left never reaches the application.
    let record = s.dir.path().join("record.txt");
    std::fs::write(
        s.root.join("record.php"),
        format!(
            "<?php file_put_contents('{}', $_GET['tag'] . \"\\n\", FILE_APPEND); echo \"ok\\n\";\n",
            record.display()
        ),
    )
    .unwrap();
    let hs = concurrent(&s, "/sleep.php?ms=1500", 2);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    write!(c, "GET /record.php?tag=gone HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    for h in hs {
        assert_eq!(h.join().unwrap(), 200);
    }
    assert_eq!(s.get("/record.php?tag=kept").status, 200);
    let seen = std::fs::read_to_string(&record).unwrap();
    assert_eq!(seen, "kept\n", "{}", s.error_log());
}

#[test]
fn counts_never_exceed_max_children_under_a_storm() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"dynamic\"\nmax_children = 3\nstart_servers = 1\nmin_spare_servers = 1\nmax_spare_servers = 3",
        ),
        2,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..8)
        .map(|_| {
            let (stop, errors, port) = (stop.clone(), errors.clone(), s.port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if status_of(port, "/hello.php") != 200 {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        let j = status(&s);
        for f in ["total processes", "active processes", "max active processes"] {
            assert!(field(&j, f) <= 3, "{f}: {j}");
        }
        assert!(pids(&j).len() <= 3, "{j}");
    }
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "{}", s.error_log());
}

fn status_of(port: u16, path: &str) -> u16 {
    let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    if write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").is_err() {
        return 0;
    }
    let mut data = Vec::new();
    let _ = c.read_to_end(&mut data);
    parse_responses(&data, false).first().map_or(0, |r| r.status)
}

#[test]
fn twenty_reloads_under_load_lose_no_request() {
    twenty_reloads_under_load_lose_no_request_in("direct = false\n");
}

#[test]
fn twenty_reloads_under_load_lose_no_request_direct() {
    twenty_reloads_under_load_lose_no_request_in("direct = true\n");
}

fn twenty_reloads_under_load_lose_no_request_in(direct: &str) {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            &format!(
                "pm = \"dynamic\"\nmax_children = 4\nstart_servers = 2\nmin_spare_servers = 1\nmax_spare_servers = 3\n{direct}"
            ),
        ),
        2,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hs: Vec<_> = (0..6)
        .map(|_| {
            let (stop, ok, bad, port) = (stop.clone(), ok.clone(), bad.clone(), s.port);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match status_of(port, "/hello.php") {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    for i in 0..20 {
        // Every other reload changes the pool: a new generation of workers.
        let text = if i % 2 == 0 {
            cfg.replace("max_spare_servers = 3", "max_spare_servers = 2")
        } else {
            cfg.clone()
        };
        std::fs::write(&s.config, text).unwrap();
        s.signal("HUP");
        std::thread::sleep(Duration::from_millis(250));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert!(ok > 100, "{ok}");
    assert_eq!(bad, 0, "{ok} answered, {bad} failed: {}", s.error_log());
}

#[test]
fn status_formats_and_config_errors() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert_eq!(s.get("/hello.php").status, 200);
    let t = s.get("/status?full").text();
    assert!(t.contains("pool:                 php\n"), "{t}");
    assert!(t.contains("request URI:"), "{t}");
    let m = s.get("/status?openmetrics&full");
    assert!(
        m.header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        m.text()
            .contains("corral_pool_process_requests_total{pool=\"php\",pid="),
        "{}",
        m.text()
    );
    let h = s.get("/status?html");
    assert!(h.header("content-type").unwrap().starts_with("text/html"));
    let x = s.get("/status?xml&full&pool=php");
    assert!(x.header("content-type").unwrap().starts_with("text/xml"));
    let xt = x.text();
    assert!(
        xt.starts_with(
            "<?xml version=\"1.0\" ?>\n<pools>\n<status>\n<pool>php</pool>\n<process-manager>static</process-manager>\n"
        ),
        "{xt}"
    );
    assert!(
        xt.contains("<processes>\n<process><pid>") && xt.contains("<request-uri>/hello.php</request-uri>"),
        "{xt}"
    );
    assert_eq!(
        s.request("POST /status HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .status,
        405
    );
    // -t names file, line and key.
    let dir = TempDir::new();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[pool.www]\nlisten = \"unix:/tmp/x.sock\"\ncommand = [\"php-cgi\"]\npm = \"dynamic\"\nmax_children = 2\nmax_spare_servers = 5\n",
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("bad.toml:6: pool.www.max_spare_servers"), "{out}");
    std::fs::write(
        &bad,
        "[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"/tmp\"\n[[server.location]]\nmatch = \"/\"\nfastcgi = { pass = \"pool:nope\" }\n",
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(out.contains("[pool.nope]"), "{out}");
    std::fs::write(
        &bad,
        "[pool.www]\nlisten = \"unix:/tmp/x.sock\"\ncommand = [\"php-cgi\"]\nstatus_path = \"/s\"\nping_path = \"/s\"\n",
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("pool.www.ping_path") && out.contains("status_path too"),
        "{out}"
    );
}

/// php-fpm's counting and formats: "accepted conn" counts requests (three
/// on one kept FastCGI connection are three), a process's "requests"
/// counts its running first request, Prometheus text names a counter's
/// full sample name in `# TYPE`, OpenMetrics the family, charset once,
/// and an unknown `?pool=` is a 404.
#[test]
fn status_counts_requests_as_php_fpm() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let slow = concurrent(&s, "/sleep.php?ms=1500", 1);
    assert!(
        eventually(Duration::from_secs(5), || status(&s).contains("\"state\":\"Running\"")),
        "{}",
        status(&s)
    );
    let j = status(&s);
    assert_eq!(field(&j, "requests"), 1, "the running first request counts: {j}");
    assert_eq!(field(&j, "accepted conn"), 1, "{j}");
    for h in slow {
        assert_eq!(h.join().unwrap(), 200);
    }
    // corral keeps its FastCGI connection to the pool: one connection, three requests.
    for _ in 0..3 {
        assert_eq!(s.get("/hello.php").status, 200);
    }
    let j = status(&s);
    assert_eq!(field(&j, "accepted conn"), 4, "{j}");
    assert_eq!(field(&j, "requests"), 4, "{j}");

    let p = s.get("/status?prometheus&full");
    assert_eq!(
        p.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let t = p.text();
    assert!(
        t.contains("# TYPE corral_pool_accepted_connections_total counter\n"),
        "{t}"
    );
    assert!(t.contains("# HELP corral_pool_accepted_connections_total "), "{t}");
    assert!(
        t.contains("corral_pool_accepted_connections_total{pool=\"php\"} 4\n"),
        "{t}"
    );
    assert!(t.contains("# TYPE corral_pool_process_requests_total counter\n"), "{t}");
    assert!(t.contains("# TYPE corral_pool_idle_processes gauge\n"), "{t}");
    let o = s.get("/status?openmetrics");
    assert_eq!(
        o.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let t = o.text();
    assert!(t.contains("# TYPE corral_pool_accepted_connections counter\n"), "{t}");
    assert!(
        t.contains("corral_pool_accepted_connections_total{pool=\"php\"} 4\n"),
        "{t}"
    );
    assert_eq!(
        s.get("/status?html").header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(s.get("/status?pool=php").status, 200);
    let r = s.get("/status?pool=nosuch&json");
    assert_eq!(r.status, 404, "{}", r.text());
}

/// The DOM of `url` after a headless Chromium ran its scripts for 3 s of
/// virtual time.
fn browser_dom(url: &str) -> String {
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=3000",
            "--dump-dom",
            url,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (.ci/run installs it)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn live_html_status_page_in_chromium() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 2"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 2));
    let url = format!("http://127.0.0.1:{}/status?html", s.port);
    let dom = browser_dom(&url);
    assert!(dom.contains("data-pool=\"php\""), "{dom}");
    let polls: u32 = dom
        .split("data-polls=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(polls >= 1, "the page polled the JSON: {dom}");
    for pid in pids(&status(&s)) {
        assert!(dom.contains(&format!("data-pid=\"{pid}\"")), "{pid} in {dom}");
    }
    // While a request runs, the page shows it (the URI escaped as text).
    let hs = concurrent(&s, "/sleep.php?ms=4000&mark=%3Cb%3Ebrowser", 1);
    assert!(eventually(Duration::from_secs(3), || field(
        &status(&s),
        "active processes"
    ) == 1));
    let dom = browser_dom(&url);
    assert!(dom.contains("Running"), "{dom}");
    assert!(dom.contains("mark=%3Cb%3Ebrowser"), "{dom}");
    assert!(!dom.contains("<b>browser"), "{dom}");
    assert_eq!(hs.into_iter().next().unwrap().join().unwrap(), 200);
}

#[test]
fn catch_workers_output_reaches_the_error_log() {
    let s = corral(
        "[pool.php]\nlisten = \"unix:{dir}/php.sock\"\n\
         command = [\"/bin/sh\", \"-c\", \"echo program-says-hello >&2; echo to-stdout; printf 'a-forged-line\\\\n2026/01/01 00:00:00 [crit] 1#0: forged\\\\033[31m\\\\n' >&2; printf %02000d 7 >&2; exec php-cgi\"]\n\
         pm = \"static\"\nmax_children = 1\ncatch_workers_output = true\n",
        1,
    );
    assert_eq!(s.get("/hello.php").status, 200, "{}", s.error_log());
    let worker = *pids(&status(&s)).first().expect("a worker");
    let said = |stream: &str, what: &str| format!("[pool php] child {worker} said into {stream}: \"{what}");
    assert!(
        eventually(Duration::from_secs(5), || {
            let log = s.error_log();
            log.contains(&said("stderr", "program-says-hello\""))
                && log.contains(&said("stdout", "to-stdout\""))
                && log.contains(&said("stderr", "2026/01/01 00:00:00 [crit] 1#0: forged\\x1B[31m\""))
        }),
        "{}",
        s.error_log()
    );
    let log = s.error_log();
    // Every line the program wrote is inside a line of corral's: none starts a line.
    assert!(
        !log.lines()
            .any(|l| l.starts_with("2026/01/01") || l.starts_with("a-forged")),
        "{log}"
    );
    // A line longer than 1024 bytes comes in pieces of 1024 (the rest of
    // this one, with no newline yet, waits for more).
    let pieces: Vec<&str> = log.lines().filter(|l| l.contains(&said("stderr", "0000"))).collect();
    assert_eq!(pieces.len(), 1, "{log}");
    assert!(
        pieces[0].ends_with(&format!(": \"{}\"", "0".repeat(1024))),
        "{}",
        pieces[0]
    );
}

/// A valid FastCGI request for `script` (BEGIN, PARAMS, empty STDIN).
fn fcgi_request(id: u16, script: &str) -> Vec<u8> {
    fn record(out: &mut Vec<u8>, kind: u8, id: u16, body: &[u8]) {
        let pad = (8 - body.len() % 8) % 8;
        out.extend_from_slice(&[1, kind, (id >> 8) as u8, id as u8]);
        out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        out.extend_from_slice(&[pad as u8, 0]);
        out.extend_from_slice(body);
        out.extend(std::iter::repeat_n(0, pad));
    }
    let mut params = Vec::new();
    for (n, v) in [
        ("SCRIPT_FILENAME", script),
        ("REQUEST_METHOD", "GET"),
        ("SCRIPT_NAME", "/x.php"),
        ("REQUEST_URI", "/x.php"),
    ] {
        params.push(n.len() as u8);
        params.push(v.len() as u8);
        params.extend_from_slice(n.as_bytes());
        params.extend_from_slice(v.as_bytes());
    }
    let mut out = Vec::new();
    record(&mut out, 1, id, &[0, 1, 0, 0, 0, 0, 0, 0]);
    record(&mut out, 4, id, &params);
    record(&mut out, 4, id, &[]);
    record(&mut out, 5, id, &[]);
    out
}

#[test]
fn mutated_fastcgi_streams_never_kill_a_pool_worker() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 2"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 2));
    let before = pids(&status(&s));
    let sock = s.dir.path().join("php.sock");
    let valid = fcgi_request(1, &s.root.join("hello.php").display().to_string());
    // A small xorshift: the same storm every run.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for i in 0..300 {
        let mut bytes = valid.clone();
        match i % 4 {
            // Flip bytes anywhere (lengths, versions, types, ids, padding).
            0 | 1 => {
                for _ in 0..1 + next() % 4 {
                    let at = (next() as usize) % bytes.len();
                    bytes[at] ^= (next() % 255 + 1) as u8;
                }
            }
            // Cut it short.
            2 => bytes.truncate((next() as usize) % bytes.len()),
            // Noise.
            _ => bytes = (0..next() % 200).map(|_| next() as u8).collect(),
        }
        let Ok(mut c) = std::os::unix::net::UnixStream::connect(&sock) else {
            continue;
        };
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let _ = c.write_all(&bytes);
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = c.read_to_end(&mut sink);
    }
    // Same workers, still serving, through FastCGI and through corral.
    assert_eq!(pids(&status(&s)), before, "{}", s.error_log());
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c.write_all(&valid).unwrap();
    let mut answer = Vec::new();
    let _ = c.read_to_end(&mut answer);
    assert!(String::from_utf8_lossy(&answer).contains("hello - pid"), "{answer:?}");
    assert_eq!(s.get("/hello.php").status, 200);
}

/// Counts END_REQUEST records in a FastCGI byte stream.
fn end_requests(mut b: &[u8]) -> usize {
    let mut n = 0;
    while b.len() >= 8 {
        let len = 8 + u16::from_be_bytes([b[4], b[5]]) as usize + b[6] as usize;
        if b.len() < len {
            break;
        }
        n += usize::from(b[1] == 3);
        b = &b[len..];
    }
    n
}

/// A connection that says nothing, or only management records, yields
/// the pool's only worker to a waiting request after a grace second; two
/// requests pipelined with one id on a kept connection are both answered.
#[test]
fn idle_new_connections_yield_and_pipelined_requests_are_served() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let sock = s.dir.path().join("php.sock");
    let script = s.root.join("hello.php").display().to_string();
    let silent = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let chatty = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let mut w = chatty.try_clone().unwrap();
    let talker = std::thread::spawn(move || {
        // FCGI_GET_VALUES for FCGI_MAX_CONNS, every 200 ms.
        let mut rec = vec![1u8, 9, 0, 0, 0, 16, 0, 0, 14, 0];
        rec.extend_from_slice(b"FCGI_MAX_CONNS");
        while !stop2.load(Ordering::SeqCst) && w.write_all(&rec).is_ok() {
            std::thread::sleep(Duration::from_millis(200));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let mut two = fcgi_request(1, &script);
    two[10] = 1; // FCGI_KEEP_CONN
    let two = [two.clone(), two].concat();
    c.write_all(&two).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    while end_requests(&got) < 2 {
        match c.read_retry(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let waited = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    talker.join().unwrap();
    drop((silent, chatty));
    assert_eq!(
        end_requests(&got),
        2,
        "{}\n{}",
        String::from_utf8_lossy(&got),
        s.error_log()
    );
    assert!(waited < Duration::from_secs(10), "answered after {waited:?}");
}

#[test]
fn cpu_affinity_pins_workers_and_their_programs() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\ncpu_affinity = [0]",
        ),
        1,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    assert_eq!(s.get("/hello.php").status, 200);
    let worker = pids(&status(&s))[0] as i32;
    let allowed = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_string()))
            .unwrap()
    };
    assert_eq!(allowed(worker), "0");
    let program = children_of(worker);
    assert_eq!(program.len(), 1, "the worker's php-cgi");
    assert_eq!(allowed(program[0]), "0");
}

#[test]
fn cpu_affinity_on_a_missing_cpu_runs_unpinned() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\ncpu_affinity = [1000]",
        ),
        1,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let worker = pids(&status(&s))[0];
    for _ in 0..3 {
        assert_eq!(s.get("/hello.php").status, 200, "{}", s.error_log());
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pids(&status(&s)),
        vec![worker],
        "the worker keeps running: {}",
        s.error_log()
    );
    assert!(
        s.error_log().contains("sched_setaffinity(CPU 1000) failed"),
        "{}",
        s.error_log()
    );
    assert!(s.error_log().contains("running unpinned"), "{}", s.error_log());
}

#[test]
fn reload_adds_changes_and_removes_pools_or_refuses_untouched() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let d = s.dir.path().display().to_string();
    // A new pool on a port that is taken: the reload is refused as a whole.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(
        &s.config,
        format!(
            "{cfg}\n[pool.extra]\nlisten = \"127.0.0.1:{port}\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 1\n"
        ),
    )
    .unwrap();
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("reload refused")),
        "{}",
        s.error_log()
    );
    assert!(s.dir.path().join("php.sock").exists());
    assert_eq!(s.get("/hello.php").status, 200, "{}", s.error_log());
    // Changed: a new generation on the same socket; added: a second pool.
    drop(taken);
    let extra =
        format!("[pool.cgi]\nlisten = \"unix:{d}/cgi.sock\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 1\n");
    std::fs::write(
        &s.config,
        format!("{}\n{extra}", cfg.replace("max_children = 1", "max_children = 2")),
    )
    .unwrap();
    let before = pids(&status(&s));
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || {
            let j = status(&s);
            j.contains("\"pool\":\"cgi\"") && pids(&j).len() == 3 && !pids(&j).contains(&before[0])
        }),
        "{}",
        status(&s)
    );
    assert!(s.dir.path().join("cgi.sock").exists());
    assert_eq!(s.get("/hello.php").status, 200);
    // Removed: its socket file goes.
    std::fs::write(&s.config, cfg.replace("max_children = 1", "max_children = 2")).unwrap();
    s.signal("HUP");
    assert!(eventually(Duration::from_secs(5), || !s
        .dir
        .path()
        .join("cgi.sock")
        .exists()));
    assert!(!status(&s).contains("\"pool\":\"cgi\""));
    assert_eq!(s.get("/hello.php").status, 200);
}

#[test]
fn binary_upgrade_hands_the_pool_socket_over() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let pidfile = s.dir.path().join("corral.pid");
    let old = s.pid();
    s.signal("USR2");
    let new_pid = || {
        std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .filter(|&p| p != old)
    };
    assert!(
        eventually(Duration::from_secs(10), || new_pid().is_some()),
        "{}",
        s.error_log()
    );
    let new = new_pid().unwrap();
    s.signal("WINCH");
    s.signal("QUIT");
    assert!(eventually(Duration::from_secs(10), || !alive(old)), "{}", s.error_log());
    // The new master's pool serves on the same socket file.
    assert!(s.dir.path().join("php.sock").exists());
    assert!(
        eventually(Duration::from_secs(5), || s.get("/hello.php").status == 200),
        "{}",
        s.error_log()
    );
    signal(new, libc::SIGQUIT);
    assert!(eventually(Duration::from_secs(10), || !alive(new)));
    // Its old master gone, the new one removes the socket file it got.
    assert!(
        eventually(Duration::from_secs(2), || !s.dir.path().join("php.sock").exists()),
        "socket file left"
    );
}

/// A php-cgi pool `name` (static, `children` workers) on a unix socket of
/// its own, with `script` in its document root, behind nginx keeping
/// `keepalive` connections to it (`fastcgi_keep_conn on`).
struct BehindNginx {
    dir: TempDir,
    corral: Started,
    nginx: Started,
    port: u16,
    sock: std::path::PathBuf,
}

fn pool_behind_nginx(name: &str, script: (&str, &str), children: usize, keepalive: usize) -> BehindNginx {
    behind_nginx(
        name,
        &[script],
        &format!("command = [\"php-cgi\"]\npm = \"static\"\nmax_children = {children}\ndirect = false"),
        |sock, www, port| {
            format!(
                "upstream {name} {{ server unix:{s}; keepalive {keepalive}; keepalive_timeout 60s; }}\n\
                 server {{ listen 127.0.0.1:{port}; root {w}; keepalive_requests 100000;\n\
                 location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_keep_conn on; fastcgi_pass {name}; }} }}\n",
                s = sock.display(),
                w = www.display()
            )
        },
    )
}

/// A pool `name` (`pool` keys after its `listen`) on a unix socket of its
/// own, `scripts` in the document root, behind nginx configured by
/// `nginx_http(socket, root, port)`.
fn behind_nginx(
    name: &str,
    scripts: &[(&str, &str)],
    pool: &str,
    nginx_http: impl FnOnce(&Path, &Path, u16) -> String,
) -> BehindNginx {
    let dir = TempDir::new();
    let d = dir.path();
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    for (file, body) in scripts {
        std::fs::write(www.join(file), body).unwrap();
    }
    let sock = d.join(format!("{name}.sock"));
    let corral = pools_only(
        d,
        &format!(
            "[pool.{name}]\nlisten = \"unix:{s}\"\nlisten_mode = \"0666\"\n{pool}\n",
            s = sock.display()
        ),
    );
    assert!(eventually(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    }));
    let port = free_port();
    let nginx = nginx(d, port, &nginx_http(&sock, &www, port));
    BehindNginx {
        dir,
        corral,
        nginx,
        port,
        sock,
    }
}

#[test]
fn an_idle_kept_connection_does_not_starve_other_clients() {
    // nginx keeps its connection to the pool's only worker.
    let BehindNginx {
        dir,
        mut corral,
        mut nginx,
        port: nport,
        sock,
    } = pool_behind_nginx("one", ("hello.php", HELLO), 1, 2);
    let www = dir.path().join("www");
    let via_nginx = || {
        let (ok, out) = curl(&[&format!("http://127.0.0.1:{nport}/hello.php?a=nginx")]);
        ok && String::from_utf8_lossy(&out).starts_with("hello nginx")
    };
    assert!(via_nginx());
    // Another client gets the worker at once, not after nginx's 60 s.
    let t = Instant::now();
    let out = Command::new("timeout")
        .args(["10", "cgi-fcgi", "-bind", "-connect"])
        .arg(&sock)
        .env_clear()
        .env("SCRIPT_FILENAME", www.join("hello.php"))
        .env("REQUEST_METHOD", "GET")
        .env("QUERY_STRING", "a=other")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello other"), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // nginx goes on, on a new connection.
    assert!(via_nginx());
    nginx.stop(libc::SIGQUIT);
    corral.stop(libc::SIGQUIT);
}

/// A request queued in corral for a saturated pool when a reload gives the
/// pool more workers is served by a new worker, not held behind the old
/// worker's running request.
#[test]
fn a_request_queued_across_a_reload_goes_to_the_new_workers() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let cfg = std::fs::read_to_string(&s.config).unwrap();
    let done = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ask = |path: &'static str, name: &'static str| {
        let (port, done) = (s.port, done.clone());
        std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            write!(c, "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
            let status = parse_responses(&read_to_close(&mut c), false)
                .first()
                .map_or(0, |r| r.status);
            done.lock().unwrap().push((name, status));
        })
    };
    let slow = ask("/sleep.php?ms=4000", "slow");
    std::thread::sleep(Duration::from_millis(500));
    let queued = ask("/hello.php", "queued");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&s.config, cfg.replace("max_children = 1", "max_children = 2")).unwrap();
    s.signal("HUP");
    queued.join().unwrap();
    slow.join().unwrap();
    assert_eq!(
        *done.lock().unwrap(),
        [("queued", 200), ("slow", 200)],
        "{}",
        s.error_log()
    );
}

/// A FastCGI record.
fn record(out: &mut Vec<u8>, kind: u8, id: u16, body: &[u8]) {
    out.extend_from_slice(&[1, kind, (id >> 8) as u8, id as u8]);
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(body);
}

/// A client that leaves mid-request (corral's front sends FCGI_ABORT_REQUEST;
/// a raw client closes while the program still waits for its body) frees
/// the worker: no busy loop on the closed connection, and the next request
/// on that worker is served (php-cgi ends a connection it saw an abort on,
/// the worker reconnects instead of answering 502).
#[test]
fn a_client_that_leaves_frees_the_worker_without_a_spin_or_a_502() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    assert_eq!(s.get("/hello.php").status, 200);
    let worker = pids(&status(&s))[0];
    for round in 0..3 {
        let mut c = s.connect();
        c.write_all(b"GET /sleep.php?ms=1500 HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        std::thread::sleep(Duration::from_millis(200));
        drop(c);
        let before = cpu_ticks(worker);
        std::thread::sleep(Duration::from_millis(1000));
        let used = cpu_ticks(worker) - before;
        assert!(used < 30, "round {round}: the worker spun ({used} ticks in 1 s)");
        let r = s.get("/hello.php");
        assert_eq!(r.status, 200, "round {round}: {}\n{}", r.text(), s.error_log());
    }
    assert!(!s.error_log().contains("cannot send the request"), "{}", s.error_log());

    // Straight to the pool socket: a body announced, 3 bytes sent, then gone.
    let sock = s.dir.path().join("php.sock");
    let mut params = Vec::new();
    let script = s.root.join("input.php").display().to_string();
    for (n, v) in [
        ("SCRIPT_FILENAME", script.as_str()),
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_LENGTH", "100"),
        ("CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("REQUEST_URI", "/input.php"),
    ] {
        params.extend_from_slice(&[n.len() as u8, v.len() as u8]);
        params.extend_from_slice(n.as_bytes());
        params.extend_from_slice(v.as_bytes());
    }
    let mut req = Vec::new();
    record(&mut req, 1, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
    record(&mut req, 4, 1, &params);
    record(&mut req, 4, 1, &[]);
    record(&mut req, 5, 1, b"a=1");
    let mut u = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    u.write_all(&req).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(u);
    let before = cpu_ticks(worker);
    std::thread::sleep(Duration::from_millis(1000));
    let used = cpu_ticks(worker) - before;
    assert!(used < 30, "the worker spun ({used} ticks in 1 s)");
    let started = Instant::now();
    let r = s.get("/hello.php");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(started.elapsed() < Duration::from_secs(5), "the worker was held");
}

/// An `app = "cgi"` script that reads its input to the end before it
/// prints anything gets that end (GET: at once; POST: after the body).
#[test]
fn cgi_pool_script_sees_the_end_of_its_input() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/cgi.sock\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 1\n",
        1,
    );
    write_script(
        &s.root.join("readfirst.cgi"),
        "#!/bin/sh\nn=$(cat | wc -c)\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"read $n\"\n",
    );
    let url = format!("http://127.0.0.1:{}/readfirst.cgi", s.port);
    let (ok, out) = curl(&["--max-time", "5", &url]);
    assert!(ok, "GET hung");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "read 0");
    let (ok, out) = curl(&["--max-time", "5", "-d", "x=12345", &url]);
    assert!(ok, "POST hung");
    assert_eq!(String::from_utf8_lossy(&out).trim(), "read 7");
}

/// Params up to 1 MiB are served (200 KiB of headers); past it the
/// connection closes with a log line that names the web server.
#[test]
fn params_over_one_mib_close_the_connection() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    let sock = s.dir.path().join("php.sock");
    let script = s.root.join("hello.php").display().to_string();
    // One record per pair (php-cgi parses params record by record).
    let ask = |headers: usize| -> Vec<u8> {
        let mut pairs = vec![
            ("SCRIPT_FILENAME".to_string(), script.clone()),
            ("REQUEST_METHOD".to_string(), "GET".to_string()),
        ];
        for i in 0..headers {
            pairs.push((format!("HTTP_X_H{i}"), "v".repeat(5000)));
        }
        let mut req = Vec::new();
        record(&mut req, 1, 1, &[0, 1, 0, 0, 0, 0, 0, 0]);
        for (n, v) in &pairs {
            let mut p = vec![n.len() as u8];
            p.extend_from_slice(&(v.len() as u32 | 0x8000_0000).to_be_bytes());
            p.extend_from_slice(n.as_bytes());
            p.extend_from_slice(v.as_bytes());
            record(&mut req, 4, 1, &p);
        }
        record(&mut req, 4, 1, &[]);
        record(&mut req, 5, 1, &[]);
        let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = c.write_all(&req);
        let mut answer = Vec::new();
        let _ = c.read_to_end(&mut answer);
        answer
    };
    let ok = ask(40);
    assert!(
        String::from_utf8_lossy(&ok).contains("hello - pid"),
        "{}",
        s.error_log()
    );
    let refused = ask(400);
    assert!(!String::from_utf8_lossy(&refused).contains("hello"));
    assert!(
        eventually(Duration::from_secs(3), || s
            .error_log()
            .contains("KiB of params from unix")),
        "{}",
        s.error_log()
    );
    assert_eq!(s.get("/hello.php").status, 200);
}

/// A connection to the pool that says nothing is not a request: no slow
/// log entry, no kill at request_terminate_timeout (php-fpm times only
/// requests), and the pool serves as soon as it is closed.
#[test]
fn a_silent_connection_is_not_timed_as_a_request() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\nrequest_terminate_timeout = \"2s\"\nrequest_slowlog_timeout = \"1s\"\nslowlog = \"{dir}/slow.log\"",
        ),
        1,
    );
    assert_eq!(s.get("/hello.php").status, 200);
    let before = pids(&status(&s));
    let silent = std::os::unix::net::UnixStream::connect(s.dir.path().join("php.sock")).unwrap();
    std::thread::sleep(Duration::from_millis(3500));
    let j = status(&s);
    assert_eq!(field(&j, "slow requests"), 0, "{j}");
    assert_eq!(field(&j, "terminated requests"), 0, "{j}");
    assert_eq!(pids(&j), before, "the worker was not killed");
    let log = s.error_log();
    assert!(!log.contains("too slow") && !log.contains("killing"), "{log}");
    drop(silent);
    assert_eq!(s.get("/hello.php").status, 200);
}

/// Requests that arrive together, more than the pool has workers, wait in
/// corral under queue_timeout (503 after it), not in the pool socket's
/// queue where no deadline applies; across HTTP workers too, whose kept
/// connections leave the pool's workers looking idle.
#[test]
fn a_burst_beyond_max_children_waits_under_queue_timeout() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 2\nqueue_timeout = \"1s\"",
        ),
        2,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 2));
    // Both HTTP workers keep a connection to a pool worker.
    let warm: Vec<_> = (0..3).flat_map(|_| concurrent(&s, "/hello.php", 2)).collect();
    for h in warm {
        assert_eq!(h.join().unwrap(), 200);
    }
    // Connected first, then the requests written back to back, so the
    // HTTP workers read them before a pool worker wakes.
    let mut conns: Vec<std::net::TcpStream> = (0..8).map(|_| s.connect()).collect();
    std::thread::sleep(Duration::from_millis(100));
    for c in &mut conns {
        c.write_all(b"GET /sleep.php?ms=2500 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
    }
    let t = Instant::now();
    let hs: Vec<_> = conns
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                let data = read_to_close(&mut c);
                (
                    parse_responses(&data, false).first().map_or(0, |r| r.status),
                    t.elapsed(),
                )
            })
        })
        .collect();
    let mut got: Vec<(u16, Duration)> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    got.sort();
    // Two run; the rest wait in corral and get 503 at queue_timeout. (One
    // more may slip into the socket's queue when an HTTP worker reuses its
    // kept connection in the same instant another saw that pool worker idle;
    // all eight went there before.)
    let ok = got.iter().filter(|g| g.0 == 200).count();
    let refused = got.iter().filter(|g| g.0 == 503).count();
    assert!(ok + refused == 8 && (2..=3).contains(&ok), "{got:?}\n{}", s.error_log());
    for (code, after) in &got {
        if *code == 503 {
            assert!(*after < Duration::from_millis(2000), "{got:?}");
        }
    }
}

/// nginx keeping connections to a pool smaller than its keepalive, under a
/// POST load (nginx retries no POST on another connection): a kept
/// connection the pool gives up to a waiting client is one nginx had left
/// idle, never one it is sending a request on, so no request fails.
#[test]
fn nginx_keepalive_posts_to_a_small_pool_never_fail() {
    let BehindNginx {
        dir,
        mut corral,
        mut nginx,
        port: nport,
        ..
    } = pool_behind_nginx("post", ("input.php", INPUT), 2, 8);
    let d = dir.path();
    let failed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let hs: Vec<_> = (0..6)
        .map(|_| {
            let (failed, ok) = (failed.clone(), ok.clone());
            std::thread::spawn(move || {
                let mut c = std::io::BufReader::new(std::net::TcpStream::connect(("127.0.0.1", nport)).unwrap());
                c.get_ref().set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let deadline = Instant::now() + Duration::from_secs(4);
                while Instant::now() < deadline {
                    let body = "a=1&b=2";
                    let req = format!(
                        "POST /input.php HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if c.get_mut().write_all(req.as_bytes()).is_err() {
                        failed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                    match read_response(&mut c) {
                        Ok((200, _)) => ok.fetch_add(1, Ordering::SeqCst),
                        _ => {
                            failed.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                    };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let log = std::fs::read_to_string(d.join("nginx-error.log")).unwrap_or_default();
    assert_eq!(
        failed.load(Ordering::SeqCst),
        0,
        "ok {}; nginx: {log}",
        ok.load(Ordering::SeqCst)
    );
    assert!(ok.load(Ordering::SeqCst) > 100, "{}", ok.load(Ordering::SeqCst));
    assert!(
        !log.contains("prematurely closed") && !log.contains("reset by peer"),
        "{log}"
    );
    nginx.stop(libc::SIGQUIT);
    corral.stop(libc::SIGQUIT);
}

/// php-fpm's setup with a `direct` pool: nginx with `fastcgi_keep_conn`
/// and no more kept connections than workers, programs recycled every 5
/// requests under load: every request is answered (a program ending closes
/// its idle kept connection as a php-fpm child does: shut, then drained).
#[test]
fn a_direct_pool_recycling_under_nginx_keepalive_answers_every_request() {
    let BehindNginx {
        dir,
        mut corral,
        mut nginx,
        port: nport,
        ..
    } = behind_nginx(
        "direct",
        &[("hello.php", HELLO)],
        "command = [\"php-cgi\"]\npm = \"static\"\nmax_children = 2\nmax_requests = 5\ndirect = true",
        |sock, www, port| {
            format!(
                "upstream direct {{ server unix:{s}; keepalive 2; }}\n\
                 server {{ listen 127.0.0.1:{port}; root {w};\n\
                 location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_keep_conn on; fastcgi_pass direct; }} }}\n",
                s = sock.display(),
                w = www.display()
            )
        },
    );
    // No more requests at once than workers (php-fpm's rule: a program
    // waits on its kept connection, not in accept()).
    let (ok, bad) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let hs: Vec<_> = (0..2)
        .map(|_| {
            let (ok, bad) = (ok.clone(), bad.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(3);
                while Instant::now() < deadline {
                    match status_of(nport, "/hello.php?a=x") {
                        200 => ok.fetch_add(1, Ordering::Relaxed),
                        _ => bad.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in hs {
        h.join().unwrap();
    }
    let log = std::fs::read_to_string(dir.path().join("nginx-error.log")).unwrap_or_default();
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert_eq!(bad, 0, "{ok} answered; nginx: {log}");
    assert!(ok > 50, "{ok}");
    let corral_log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
    assert!(
        corral_log.matches("served 5 requests (max_requests)").count() >= 5,
        "{corral_log}"
    );
    nginx.stop(libc::SIGQUIT);
    corral.stop(libc::SIGQUIT);
}

/// A pool run as another user gives its programs that user's USER and
/// HOME (php-fpm's rule), and its built-in status answers a HEAD with the
/// head alone.
#[test]
fn pool_user_environment_and_a_head_at_status_path() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/cgi.sock\"\nlisten_mode = \"0666\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 1\nuser = \"nobody\"\nstatus_path = \"/fpm-status\"\n",
        1,
    );
    write_script(
        &s.root.join("who.cgi"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\necho \"$USER $HOME $(id -un)\"\n",
    );
    let (ok, out) = curl(&[&format!("http://127.0.0.1:{}/who.cgi", s.port)]);
    assert!(ok);
    let home = String::from_utf8_lossy(
        &Command::new("sh")
            .args(["-c", "getent passwd nobody | cut -d: -f6"])
            .output()
            .unwrap()
            .stdout,
    )
    .trim()
    .to_string();
    assert_eq!(String::from_utf8_lossy(&out), format!("nobody {home} nobody\n"));
    let ask = |method: &str, query: &str| {
        let out = Command::new("timeout")
            .args(["10", "cgi-fcgi", "-bind", "-connect"])
            .arg(s.dir.path().join("cgi.sock"))
            .env_clear()
            .env("SCRIPT_NAME", "/fpm-status")
            .env("SCRIPT_FILENAME", "/fpm-status")
            .env("REQUEST_METHOD", method)
            .env("QUERY_STRING", query)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let get = ask("GET", "");
    assert!(get.contains("pool:                 cgi"), "{get}");
    // The worker answering shows no script for its own status (php-fpm: "-").
    let full = ask("GET", "full");
    assert!(
        full.lines().any(|l| l.starts_with("script:") && l.ends_with(" -")),
        "{full}"
    );
    // php-fpm's own OpenMetrics, name for name, for its scrapers.
    let om = ask("GET", "openmetrics");
    assert!(
        om.contains("# HELP phpfpm_up Could pool cgi using a static PM on PHP-FPM be reached?\n# TYPE phpfpm_up gauge\nphpfpm_up 1\n"),
        "{om}"
    );
    // Four requests: who.cgi, two text statuses, this one (php-fpm counts its own).
    assert!(
        om.contains("\n# TYPE phpfpm_accepted_connections counter\nphpfpm_accepted_connections 4\n"),
        "{om}"
    );
    assert!(
        om.contains("\nphpfpm_total_processes 1\n") && om.ends_with("# EOF\n"),
        "{om}"
    );
    let head = ask("HEAD", "");
    assert!(head.contains("Content-Type: text/plain"), "{head}");
    assert!(!head.contains("pool:"), "a HEAD has no body: {head}");
}

/// A client that leaves stops the PHP script, as under php-fpm: php-cgi
/// ignores FCGI_ABORT_REQUEST, so the worker shuts its reading side and the
/// script's next output fails; the worker is free again soon after.
#[test]
fn a_client_that_leaves_stops_the_php_script() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    let progress = s.dir.path().join("progress.txt");
    std::fs::write(
        s.root.join("loop.php"),
        format!(
            "<?php for ($i = 1; $i <= 25; $i++) {{ echo str_repeat('x', 100), \"\\n\"; flush(); \
             file_put_contents('{}', \"$i\\n\"); usleep(200000); }}\n",
            progress.display()
        ),
    )
    .unwrap();
    let mut c = s.connect();
    c.write_all(b"GET /loop.php HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
    let mut buf = [0u8; 512];
    let _ = c.read(&mut buf).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    std::thread::sleep(Duration::from_millis(2500));
    let done: u32 = std::fs::read_to_string(&progress).unwrap().trim().parse().unwrap();
    assert!(done < 10, "the script went on after its client left: {done} of 25");
    // The pool serves again at once, with its worker idle.
    let t = Instant::now();
    assert_eq!(s.get("/hello.php").status, 200);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(!s.error_log().contains("[error]"), "{}", s.error_log());
}

/// A PHP script that dies after its answer began must look broken to
/// nginx (php-fpm's dying child resets the connection): a plain close
/// made nginx end the answer cleanly, a truncated 200 passed on as
/// complete. The crash is logged in php-fpm's words and counts toward
/// emergency_restart_threshold (the program dies, not the pool worker).
#[test]
fn a_php_crash_mid_answer_is_broken_behind_nginx_and_counts_as_a_failure() {
    const CRASH: &str = "<?php echo str_repeat('y', 10000), \"\\n\"; @ob_flush(); flush(); usleep(200000); posix_kill(getmypid(), 11);\n";
    // The relay, and php-cgi accepting itself (PHP's default, `direct`).
    for (tcp, relay) in [(false, true), (true, true), (false, false), (true, false)] {
        let dir = TempDir::new();
        let d = dir.path();
        let www = d.join("www");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("crash.php"), CRASH).unwrap();
        let mode = if relay { "direct = false\n" } else { "" };
        let (listen, pass, socket_mode) = if tcp {
            let p = free_port();
            (format!("127.0.0.1:{p}"), format!("127.0.0.1:{p}"), "")
        } else {
            let s = d.join("php.sock").display().to_string();
            (format!("unix:{s}"), format!("unix:{s}"), "listen_mode = \"0666\"\n")
        };
        let mut corral = pools_only(
            d,
            &format!(
                "[pool.php]\nlisten = \"{listen}\"\n{mode}{socket_mode}command = [\"php-cgi\"]\npm = \"static\"\n\
                 max_children = 1\nemergency_restart_threshold = 3\nemergency_restart_interval = \"60s\"\n"
            ),
        );
        let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
        let up = || match listen.strip_prefix("unix:") {
            Some(p) => std::os::unix::net::UnixStream::connect(p).is_ok(),
            None => std::net::TcpStream::connect(&listen).is_ok(),
        };
        assert!(eventually(Duration::from_secs(10), up), "{}", log());
        let port = free_port();
        let mut nginx = nginx(
            d,
            port,
            &format!(
                "server {{ listen 127.0.0.1:{port}; root {w};\n\
                 location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; fastcgi_pass {pass}; }} }}\n",
                w = www.display()
            ),
        );
        for n in 1..=3 {
            let (ok, body) = curl(&[&format!("http://127.0.0.1:{port}/crash.php")]);
            assert!(
                !ok,
                "tcp {tcp}, relay {relay}: a broken answer arrived as complete ({} bytes)",
                body.len()
            );
            let crashes = || log().matches("exited on signal 11 (SIGSEGV)").count();
            assert!(eventually(Duration::from_secs(5), || crashes() >= n), "{}", log());
        }
        assert!(
            eventually(Duration::from_secs(5), || log().contains("emergency restart")),
            "tcp {tcp}: {}",
            log()
        );
        nginx.stop(libc::SIGQUIT);
        corral.stop(libc::SIGQUIT);
    }
}

/// Requests waiting in corral's HTTP workers for a saturated pool are in
/// its "listen queue" (what php-fpm dashboards alert on); an idle
/// ondemand pool does not show the connection that woke it as queued.
#[test]
fn the_listen_queue_counts_held_requests_and_not_the_waking_connection() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\nqueue_timeout = \"20s\"",
        ),
        1,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let hs = concurrent(&s, "/sleep.php?ms=1500", 3);
    assert!(
        eventually(Duration::from_secs(3), || field(&status(&s), "listen queue") >= 1),
        "{}",
        status(&s)
    );
    assert!(hs.into_iter().all(|h| h.join().unwrap() == 200));
    assert!(eventually(Duration::from_secs(3), || field(
        &status(&s),
        "listen queue"
    ) == 0));
    assert!(field(&status(&s), "max listen queue") >= 1);

    // ondemand, scraped through its status_path after it went idle.
    let dir = TempDir::new();
    let d = dir.path();
    let port = free_port();
    let mut corral = pools_only(
        d,
        &format!(
            "[pool.od]\nlisten = \"127.0.0.1:{port}\"\ncommand = [\"php-cgi\"]\npm = \"ondemand\"\n\
             max_children = 2\nprocess_idle_timeout = \"1s\"\nstatus_path = \"/status\"\n"
        ),
    );
    let scrape = || {
        let out = Command::new("timeout")
            .args(["10", "cgi-fcgi", "-bind", "-connect", &format!("127.0.0.1:{port}")])
            .env_clear()
            .env("SCRIPT_NAME", "/status")
            .env("SCRIPT_FILENAME", "/status")
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", "json")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(eventually(Duration::from_secs(10), || scrape().contains("\"pool\":\"od\"")));
    let master = corral.0.as_ref().unwrap().id() as i32;
    for _ in 0..3 {
        // Every worker retired, then a scrape wakes the pool.
        assert!(eventually(Duration::from_secs(5), || children_of(master).is_empty()));
        let j = scrape();
        assert_eq!(field(&j, "listen queue"), 0, "{j}");
    }
    corral.stop(libc::SIGQUIT);
}

/// php-fpm's `env[NAME] = $VAR` takes VAR from the master's environment;
/// the slow log catches a request as soon as it turns slow, not at the
/// next one-second round; a pool's default backlog is the system's.
#[test]
fn env_takes_master_variables_slowlog_is_on_time_and_backlog_is_the_systems() {
    let s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\nrequest_slowlog_timeout = \"1s\"\nslowlog = \"{dir}/slow.log\"\n\
             env = { FROM_MASTER = \"$HOME\", PLAIN = \"a$b\", UNSET = \"$CORRAL_SURELY_UNSET_VAR\", HASH = \"$2y$10$abc\" }",
        ),
        1,
    );
    std::fs::write(
        s.root.join("env.php"),
        "<?php echo getenv('FROM_MASTER'), '|', getenv('PLAIN'), '|', var_export(getenv('UNSET'), true), '|', getenv('HASH');\n",
    )
    .unwrap();
    let r = s.get("/env.php");
    assert_eq!(r.status, 200, "{}", s.error_log());
    let home = std::env::var("HOME").unwrap_or_default();
    // Only a whole `$NAME` is a variable: a bcrypt hash stays itself.
    assert_eq!(r.text(), format!("{home}|a$b|''|$2y$10$abc"));
    // 1.3 s each against a 1 s threshold: all three logged.
    for _ in 0..3 {
        assert_eq!(s.get("/sleep.php?ms=1300").status, 200);
    }
    assert!(
        eventually(Duration::from_secs(2), || field(&status(&s), "slow requests") == 3),
        "{}\n{}",
        status(&s),
        s.error_log()
    );
    let somaxconn: u64 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(3), || field(&status(&s), "listen queue len")
            == somaxconn),
        "{}",
        status(&s)
    );
}

/// A client that leaves a large answer early must not hold the pool's
/// worker: the answer's unsent part was waited on (its buffer full), so
/// the program's end was never heard and the worker stayed for 30 s.
#[test]
fn a_client_leaving_a_large_answer_frees_the_worker_at_once() {
    let s = corral(&php_pool("unix:{dir}/php.sock", "pm = \"static\"\nmax_children = 1"), 1);
    std::fs::write(s.root.join("big6.php"), "<?php echo str_repeat('y', 8000000);\n").unwrap();
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    for _ in 0..2 {
        let mut c = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
        write!(c, "GET /big6.php HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        let mut some = [0u8; 1000];
        c.read_exact(&mut some).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        drop(c);
    }
    let t = Instant::now();
    let r = s.get("/hello.php?a=next");
    assert_eq!(r.status, 200, "{}", s.error_log());
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "{:?}\n{}",
        t.elapsed(),
        s.error_log()
    );
}

/// A CGI pool worker killed while its script runs takes the script with
/// it (the master kills the group the worker recorded): the script was
/// orphaned, out of reach of request_terminate_timeout for good.
#[test]
fn a_killed_cgi_pool_worker_does_not_orphan_its_script() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/cgi.sock\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 1\n",
        1,
    );
    let name = format!("301.{}", std::process::id());
    write_script(
        &s.root.join("hang.cgi"),
        &format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nsleep {name}\n"),
    );
    let running = || any_process_named(&name);
    let port = s.port;
    let client = std::thread::spawn(move || curl(&["-m", "5", &format!("http://127.0.0.1:{port}/hang.cgi")]));
    assert!(eventually(Duration::from_secs(5), running), "{}", s.error_log());
    let worker = pids(&status(&s))[0];
    signal(worker as i32, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(5), || !running()),
        "the script outlived its worker: {}",
        s.error_log()
    );
    let _ = client.join();
}

/// Records of a FastCGI stream: (type, content) each, and whether the
/// stream ended inside a record.
fn records(mut b: &[u8]) -> (Vec<(u8, Vec<u8>)>, bool) {
    let mut out = Vec::new();
    while b.len() >= 8 {
        let clen = u16::from_be_bytes([b[4], b[5]]) as usize;
        let len = 8 + clen + b[6] as usize;
        if b.len() < len {
            return (out, true);
        }
        out.push((b[1], b[8..8 + clen].to_vec()));
        b = &b[len..];
    }
    (out, !b.is_empty())
}

/// A program that answers whole, ends the request and closes its
/// connection while the answer still drains to a slow web server: a
/// complete answer, not "the application failed" with its end dropped.
#[test]
fn a_program_closing_after_its_answer_ended_is_not_a_failure() {
    let s = corral(
        "[pool.cgi]\nlisten = \"unix:{dir}/close.sock\"\ncommand = [\"python3\", \"{dir}/close.py\"]\npm = \"static\"\nmax_children = 1\n",
        1,
    );
    let program = fcgi_py(
        "ls = socket.socket(fileno=0)",
        "body = b'Content-Type: text/plain\\r\\n\\r\\n' + b'z' * 2000000\n\
         out = b''.join(rec(6, rid, body[i:i + 60000]) for i in range(0, len(body), 60000))\n\
         c.sendall(out + rec(6, rid, b'') + rec(3, rid, b'\\0' * 8))\n\
         c.close()\n\
         break",
    );
    std::fs::write(s.dir.path().join("close.py"), program).unwrap();
    let sock = s.dir.path().join("close.sock");
    assert!(eventually(Duration::from_secs(10), || {
        std::os::unix::net::UnixStream::connect(&sock).is_ok()
    }));
    let mut c = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    c.write_all(&fcgi_request(1, "/x")).unwrap();
    // A slow web server: the answer waits in the worker meanwhile.
    std::thread::sleep(Duration::from_millis(1000));
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let (recs, cut) = records(&got);
    let stdout: usize = recs.iter().filter(|r| r.0 == 6).map(|r| r.1.len()).sum();
    assert!(!cut, "the stream ends inside a record");
    assert_eq!(stdout, 2_000_000 + 28, "{}", s.error_log());
    assert_eq!(recs.iter().filter(|r| r.0 == 3).count(), 1, "no END_REQUEST");
    assert!(!s.error_log().contains("failed during"), "{}", s.error_log());
}

/// A php-cgi pool `php` (`-d output_buffering=0`, `pool` keys added)
/// behind nginx (`nginx_extra` in its `\.php$` location), with `scripts`
/// in the document root.
fn php_behind_nginx(scripts: &[(&str, &str)], pool: &str, nginx_extra: &str) -> BehindNginx {
    behind_nginx(
        "php",
        scripts,
        &format!("command = [\"php-cgi\", \"-d\", \"output_buffering=0\"]\ndirect = false\n{pool}"),
        |sock, www, port| {
            format!(
                "server {{ listen 127.0.0.1:{port}; root {w};\n\
                 location ~ \\.php$ {{ include /etc/nginx/fastcgi_params; fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name; \
                 {nginx_extra} fastcgi_pass unix:{s}; }} }}\n",
                w = www.display(),
                s = sock.display()
            )
        },
    )
}

/// An answer cut by request_terminate_timeout while nginx reads it slowly
/// (unbuffered) is broken for nginx and its client, and the marker that
/// says so starts at a record boundary: inside a record it was body bytes
/// (the reason text reached the client) and the answer ended cleanly.
#[test]
fn a_large_answer_cut_while_nginx_reads_slowly_stays_broken_and_clean() {
    let BehindNginx {
        dir: _dir,
        mut corral,
        mut nginx,
        port,
        ..
    } = php_behind_nginx(
        &[(
            "huge.php",
            "<?php $c = str_repeat('h', 1 << 20); for ($i = 0; $i < 32; $i++) { echo $c; } flush(); sleep(10);\n",
        )],
        "pm = \"static\"\nmax_children = 1\nrequest_terminate_timeout = \"2s\"",
        "fastcgi_buffering off;",
    );
    let out = Command::new("curl")
        .args(["-s", "--limit-rate", "4m", "-m", "30"])
        .arg(format!("http://127.0.0.1:{port}/huge.php"))
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a cut answer arrived as complete ({} bytes)",
        out.stdout.len()
    );
    assert!(out.stdout.len() < 32 << 20);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("terminate"), "the reason reached the client's body");
    assert!(text.bytes().all(|b| b == b'h'), "foreign bytes in the body");
    nginx.stop(libc::SIGQUIT);
    corral.stop(libc::SIGQUIT);
}

/// corral's own front on a TCP pool: a broken answer is a reset, not a
/// record of no version taken for a protocol violation.
#[test]
fn a_crash_mid_answer_over_tcp_reaches_corrals_front_as_a_reset() {
    let port = free_port();
    let s = corral(
        &php_pool(&format!("127.0.0.1:{port}"), "pm = \"static\"\nmax_children = 1"),
        1,
    );
    std::fs::write(
        s.root.join("crash.php"),
        "<?php echo str_repeat('y', 10000), \"\\n\"; flush(); usleep(200000); posix_kill(getmypid(), 11);\n",
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let (ok, _) = curl(&["-m", "10", &format!("http://127.0.0.1:{}/crash.php", s.port)]);
    assert!(!ok, "a broken answer arrived as complete");
    assert!(
        eventually(Duration::from_secs(3), || s.error_log().contains("SIGSEGV")),
        "{}",
        s.error_log()
    );
    assert!(!s.error_log().contains("version 0"), "{}", s.error_log());
}

/// An emergency restart lets each worker finish the request it runs, as
/// php-fpm's reload does: a healthy answer in flight was cut with a plain
/// close, which nginx passed on as a complete 200.
#[test]
fn an_emergency_restart_lets_healthy_requests_finish() {
    let BehindNginx {
        dir,
        mut corral,
        mut nginx,
        port,
        ..
    } = php_behind_nginx(
        &[
            (
                "slow.php",
                "<?php echo str_repeat('a', 10000), \"\\n\"; flush(); sleep(2); echo str_repeat('b', 10000), \"\\n\";\n",
            ),
            ("crash.php", "<?php posix_kill(getmypid(), 11);\n"),
        ],
        "pm = \"static\"\nmax_children = 3\nemergency_restart_threshold = 2\nemergency_restart_interval = \"60s\"",
        "",
    );
    let d = dir.path();
    let slow = std::thread::spawn(move || curl(&["-m", "20", &format!("http://127.0.0.1:{port}/slow.php")]));
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..2 {
        let _ = curl(&["-m", "5", &format!("http://127.0.0.1:{port}/crash.php")]);
    }
    let log = || std::fs::read_to_string(d.join("error.log")).unwrap_or_default();
    assert!(
        eventually(Duration::from_secs(5), || log().contains("emergency restart")),
        "{}",
        log()
    );
    let (ok, body) = slow.join().unwrap();
    assert!(ok, "the healthy answer was cut: {} bytes\n{}", body.len(), log());
    assert_eq!(body.len(), 20002);
    nginx.stop(libc::SIGQUIT);
    corral.stop(libc::SIGQUIT);
}

/// A graceful stop serves the requests corral's HTTP workers already
/// took for a pool, those still waiting for a pool worker included: the
/// pools stop once the HTTP workers are gone (they stopped at once, and a
/// queued request hung until shutdown_timeout, then got nothing).
#[test]
fn a_graceful_stop_serves_requests_queued_for_a_pool() {
    let mut s = corral(
        &php_pool(
            "unix:{dir}/php.sock",
            "pm = \"static\"\nmax_children = 1\nqueue_timeout = \"20s\"",
        ),
        1,
    );
    assert!(eventually(Duration::from_secs(5), || pids(&status(&s)).len() == 1));
    let t = Instant::now();
    let hs = concurrent(&s, "/sleep.php?ms=1000", 3);
    std::thread::sleep(Duration::from_millis(300));
    s.signal("QUIT");
    let codes: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(codes, vec![200, 200, 200], "{}", s.error_log());
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(s.wait_exit(Duration::from_secs(10)).is_some());
}
