//! Test harness: runs the real `corral` binary on an ephemeral loopback
//! port with a config written into a private temporary directory, and
//! talks to it over raw sockets.
#![allow(dead_code)]

pub mod php;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_corral");

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("corral-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the binary to completion: exit code, stderr then stdout.
pub fn run_corral(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.code().unwrap_or(-1), text)
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Server {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    pub root: PathBuf,
    pub config: PathBuf,
}

/// What goes into the config besides the generated paths and port.
#[derive(Default, Clone)]
pub struct Opts {
    pub main: String,
    pub http: String,
    pub server: String,
    /// Extra [[server]] blocks, `{port}` replaced.
    pub more: String,
    /// Extra environment for the server process.
    pub env: Vec<(String, String)>,
}

impl Server {
    pub fn start() -> Server {
        Server::with(Opts::default())
    }

    pub fn with(o: Opts) -> Server {
        let dir = TempDir::new();
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
        Server::with_root(o, dir, root)
    }

    pub fn with_root(o: Opts, dir: TempDir, root: PathBuf) -> Server {
        Server::launch(o, dir, root, BIN)
    }

    /// Starts `bin` (the built binary or a copy of it).
    pub fn launch(o: Opts, dir: TempDir, root: PathBuf, bin: &str) -> Server {
        let config = dir.path().join("corral.toml");
        let mut s = Server {
            child: None,
            port: 0,
            dir,
            root,
            config,
        };
        for _ in 0..5 {
            s.port = free_port();
            s.write_config(&o);
            let spawn = || {
                Command::new(bin)
                    .arg("-c")
                    .arg(&s.config)
                    .envs(o.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
            };
            // ETXTBSY: another test's fork may briefly hold a freshly written binary.
            let mut child = spawn();
            for _ in 0..50 {
                match &child {
                    Err(e) if e.raw_os_error() == Some(26) => {
                        std::thread::sleep(Duration::from_millis(20));
                        child = spawn();
                    }
                    _ => break,
                }
            }
            let child = child.unwrap();
            s.child = Some(child);
            if s.wait_ready() {
                return s;
            }
            // The port was taken between probe and bind: try another one.
            s.stop_now();
        }
        panic!("corral did not start: {}", s.error_log());
    }

    /// (Re)writes the config file for this server's port, dir and root.
    pub fn write_config(&self, o: &Opts) {
        let text = format!(
            "[main]\n{workers}{user}pid = \"{d}/corral.pid\"\nerror_log = \"{d}/error.log\"\nlog_level = \"info\"\n{main}\n\
             [http]\n{http}\n\
             [[server]]\n{listen}{root}access_log = \"{d}/access.log\"\n{server}\n{more}\n",
            d = self.dir.path().display(),
            // The tests' files and peers' sockets are root's: workers
            // stay root unless a test says (a root master's default is
            // `nobody`, as nginx's).
            user = if o.main.contains("user =") {
                ""
            } else {
                "user = \"root\"\n"
            },
            workers = if o.main.contains("workers =") {
                ""
            } else {
                "workers = 2\n"
            },
            listen = if o.server.contains("listen =") {
                String::new()
            } else {
                format!("listen = \"127.0.0.1:{}\"\n", self.port)
            },
            root = if o.server.contains("root =") {
                String::new()
            } else {
                format!("root = \"{}\"\n", self.root.display())
            },
            main = if o.main.contains("worker_threads") {
                o.main.clone()
            } else {
                // CORRAL_TEST_THREADS=N runs the suite with N threads per worker.
                let t = std::env::var("CORRAL_TEST_THREADS").unwrap_or_default();
                format!(
                    "{}\n{}",
                    o.main,
                    if t.is_empty() {
                        String::new()
                    } else {
                        format!("worker_threads = {t}")
                    }
                )
            },
            http = o.http,
            server = o.server.replace("{port}", &self.port.to_string()),
            more = o.more.replace("{port}", &self.port.to_string()),
        );
        std::fs::write(&self.config, text).unwrap();
    }

    pub fn wait_ready(&mut self) -> bool {
        // Every configured worker forked, not just the first.
        let want = std::fs::read_to_string(&self.config)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("workers = ")
                    .and_then(|n| n.trim().parse::<usize>().ok())
            })
            .unwrap_or(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(_)) = c.try_wait()
            {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && self.workers().len() >= want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn workers(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits for the master to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        let c = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn stop_now(&mut self) {
        let workers = self.workers();
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        for w in workers {
            if alive(w) {
                let _ = Command::new("kill").arg("-KILL").arg(w.to_string()).status();
            }
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// Sends `raw` and reads until the server closes (or 10 s pass).
    pub fn raw(&self, raw: &[u8]) -> Vec<u8> {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_to_close(&mut s)
    }

    /// One request on a fresh connection, parsed.
    pub fn get(&self, path: &str) -> Response {
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let all = self.raw(req.as_bytes());
        let Some(r) = parse_responses(&all, false).into_iter().next() else {
            panic!(
                "no response to GET {path}: {:?}\n{}",
                String::from_utf8_lossy(&all),
                self.error_log()
            );
        };
        r
    }

    pub fn request(&self, req: &str) -> Response {
        let all = self.raw(req.as_bytes());
        parse_responses(&all, req.starts_with("HEAD"))
            .into_iter()
            .next()
            .expect("a response")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop_now();
    }
}

/// Writes an executable script (mode 755) at `path`.
pub fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `read` that retries `EINTR`: a blocking socket read with a timeout
/// returns it when the test process is stopped and resumed (a frozen
/// container, a debugger), with no signal handler involved.
pub trait ReadRetry: Read {
    fn read_retry(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl<R: Read + ?Sized> ReadRetry for R {}

pub fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read_retry(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    out
}

pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            let state = s
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next()
                .unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Live children of `pid`, from /proc.
/// Whether some process's command line holds `name` (a test's own unique
/// marker, such as `sleep 300.<test pid>`).
pub fn any_process_named(name: &str) -> bool {
    std::fs::read_dir("/proc").is_ok_and(|rd| {
        rd.flatten()
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(name)))
    })
}

pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let rest = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() > 2 && f[1].parse::<i32>() == Ok(pid) && f[0] != "Z" {
                out.push(p);
            }
        }
    }
    out
}

/// CPU ticks (user + system, 100 a second) a process used so far.
pub fn cpu_ticks(pid: impl std::fmt::Display) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the name: state, ppid, ..., utime (12th), stime (13th).
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let f: Vec<&str> = after.split_whitespace().collect();
    f.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
}

pub fn cmdline(pid: i32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ").trim().to_string()
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Splits a byte stream into responses (Content-Length or close framing).
/// `head_only` marks responses to HEAD (no body despite Content-Length).
pub fn parse_responses(mut data: &[u8], head_only: bool) -> Vec<Response> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
            break;
        };
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        data = &data[end + 4..];
        let len = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked"));
        let no_body = head_only || status == 304 || status == 204 || (100..200).contains(&status);
        let body = if no_body {
            Vec::new()
        } else if chunked {
            let mut body = Vec::new();
            while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&data[..eol]).split(';').next().unwrap().trim(),
                    16,
                )
                .expect("chunk size");
                data = &data[eol + 2..];
                if size == 0 {
                    // No trailers from corral: the final CRLF.
                    data = &data[2.min(data.len())..];
                    break;
                }
                body.extend_from_slice(&data[..size]);
                data = &data[size + 2..];
            }
            body
        } else if let Some(len) = len {
            let n = len.min(data.len());
            let b = data[..n].to_vec();
            data = &data[n..];
            b
        } else {
            let b = data.to_vec();
            data = &[];
            b
        };
        out.push(Response { status, headers, body });
    }
    out
}

/// Runs curl with `args`; returns (exit ok, stdout).
pub fn curl(args: &[&str]) -> (bool, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .output()
        .expect("curl is installed (.ci/run installs it)");
    (out.status.success(), out.stdout)
}

/// Polls `f` until it is true or `limit` passes.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    f()
}

/// A request from client address `ip` (a loopback address of its own).
pub fn status_from(ip: &str, port: u16, path: &str) -> u16 {
    let sock = socket2::Socket::new(
        if ip.contains(':') {
            socket2::Domain::IPV6
        } else {
            socket2::Domain::IPV4
        },
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    sock.bind(&std::net::SocketAddr::new(ip.parse().unwrap(), 0).into())
        .unwrap();
    let dest: std::net::IpAddr = if ip.contains(':') {
        "::1".parse().unwrap()
    } else {
        "127.0.0.1".parse().unwrap()
    };
    sock.connect(&std::net::SocketAddr::new(dest, port).into()).unwrap();
    let mut c: std::net::TcpStream = sock.into();
    c.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes())
        .unwrap();
    parse_responses(&read_to_close(&mut c), false)
        .first()
        .map_or(0, |r| r.status)
}

/// A client that sends requests until `stop` (on one keep-alive connection,
/// or a new connection per request) and counts every failure: a refused
/// connection, a reset, a short answer or a status other than 200.
pub fn hammer(port: u16, keep_alive: bool, stop: Arc<AtomicBool>, ok: Arc<AtomicUsize>, failed: Arc<AtomicUsize>) {
    let req: &[u8] = if keep_alive {
        b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"
    } else {
        b"GET /index.html HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    };
    let mut conn: Option<BufReader<TcpStream>> = None;
    while !stop.load(Ordering::Relaxed) {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    conn.insert(BufReader::new(s))
                }
                Err(_) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            },
        };
        let result = (|| -> std::io::Result<bool> {
            c.get_mut().write_all(req)?;
            let (status, _body, close) = read_response_full(c)?;
            if status != 200 {
                return Err(std::io::Error::other(format!("status {status}")));
            }
            Ok(close)
        })();
        match result {
            Ok(close) => {
                ok.fetch_add(1, Ordering::Relaxed);
                if close {
                    conn = None;
                }
            }
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
        }
    }
}

pub fn read_pid(p: &PathBuf) -> Option<i32> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

pub fn kill(pid: i32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

/// Starts a copy of the binary, as an operator's installed one.
pub fn start_copy(o: Opts) -> (Server, PathBuf) {
    let dir = TempDir::new();
    let bin = dir.path().join("corral-bin");
    // `cp` in its own process: a write descriptor held by this (threaded)
    // test process could leak into a parallel fork and make exec fail with
    // ETXTBSY.
    assert!(Command::new("cp").arg(BIN).arg(&bin).status().unwrap().success());
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "hello").unwrap();
    let s = Server::launch(o, dir, root, bin.to_str().unwrap());
    (s, bin)
}

/// USR2 and wait for the new master to serve; returns its pid.
pub fn upgrade(s: &Server) -> i32 {
    let pid_file = s.dir.path().join("corral.pid");
    let oldbin = s.dir.path().join("corral.pid.oldbin");
    let old = s.pid();
    s.signal("USR2");
    assert!(
        eventually(Duration::from_secs(10), || read_pid(&pid_file)
            .is_some_and(|p| p != old)
            && read_pid(&oldbin) == Some(old)),
        "new pid file and .oldbin: {}",
        s.error_log()
    );
    let new = read_pid(&pid_file).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || cmdline(new)
            .starts_with("corral: master process")),
        "{}",
        cmdline(new)
    );
    assert!(
        eventually(Duration::from_secs(10), || children_of(new).len() == 2),
        "new master's workers"
    );
    new
}

pub fn stop_pid(pid: i32) {
    let workers = children_of(pid);
    kill(pid, "TERM");
    assert!(eventually(Duration::from_secs(10), || !alive(pid)
        && workers.iter().all(|w| !alive(*w))));
}

/// One request on a new connection; `None` if it failed.
pub fn get_on(port: u16, path: &str) -> Option<Response> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    c.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    parse_responses(&read_to_close(&mut c), false).into_iter().next()
}

/// Reads one response (Content-Length or chunked): status and body.
pub fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>)> {
    read_response_full(r).map(|(s, b, _)| (s, b))
}

/// [`read_response`], and whether the server said `Connection: close`.
pub fn read_response_full(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, Vec<u8>, bool)> {
    let mut line = String::new();
    let (mut status, mut len, mut chunked, mut close) = (0u16, 0usize, false, false);
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(rest) = l.strip_prefix("HTTP/1.1 ") {
            status = rest[..3].parse().unwrap_or(0);
        } else if let Some((n, v)) = l.split_once(':') {
            if n.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            } else if n.eq_ignore_ascii_case("transfer-encoding") {
                chunked = v.trim().eq_ignore_ascii_case("chunked");
            } else if n.eq_ignore_ascii_case("connection") {
                close = v.trim().eq_ignore_ascii_case("close");
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim(), 16).map_err(std::io::Error::other)?;
            let mut chunk = vec![0u8; size + 2];
            r.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    }
    Ok((status, body, close))
}

/// Clients hammering `port` until the returned stopper is called; it
/// returns (ok, failed).
pub fn load(port: u16, clients: usize, keep_alive: bool) -> impl FnOnce() -> (usize, usize) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || hammer(port, keep_alive, stop, ok, failed))
        })
        .collect();
    move || {
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
    }
}

/// A FastCGI server in Python for tests that need one answering byte by
/// byte as they say (a misbehaving application): `listen` is Python that
/// sets `ls` to a listening socket, `answer` Python run for each request
/// with its connection `c` and request id `rid` in scope, and `rec(type,
/// rid, data)` to build a record.
pub fn fcgi_py(listen: &str, answer: &str) -> String {
    let answer: String = answer.lines().map(|l| format!("            {l}\n")).collect();
    format!(
        r#"import socket, struct, sys, time
{listen}
def rec(t, rid, data):
    pad = (8 - len(data) % 8) % 8
    return struct.pack('>BBHHBB', 1, t, rid, len(data), pad, 0) + data + b'\0' * pad
def read_exact(c, k):
    b = b''
    while len(b) < k:
        x = c.recv(k - len(b))
        if not x:
            return None
        b += x
    return b
n = 0
while True:
    c, _ = ls.accept()
    while True:
        h = read_exact(c, 8)
        if h is None:
            break
        v, t, rid, clen, plen, _ = struct.unpack('>BBHHBB', h)
        if read_exact(c, clen + plen) is None:
            break
        if t == 5 and clen == 0:
            n += 1
{answer}    c.close()
"#
    )
}
