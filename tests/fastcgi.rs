//! FastCGI through the real binary, against real application servers started
//! by each test in its own temporary directory: Debian's php-fpm (unix
//! socket, TCP and IPv6, several pools in an `[upstream]` group) and
//! `php-cgi -b`. A small FastCGI application written here shows what PHP
//! cannot: the exact params, FCGI_KEEP_CONN, FCGI_ABORT_REQUEST and
//! FCGI_OVERLOADED.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::php::Php;
use common::*;

// ---------------------------------------------------------------------------
// Application servers

// ---------------------------------------------------------------------------
// The site

const ENV: &str = r#"<?php
header('Content-Type: text/plain');
foreach ($_SERVER as $k => $v) {
    if (is_scalar($v)) { echo 'S.', $k, '=', str_replace("\n", ' ', (string)$v), "\n"; }
}
foreach ($_GET as $k => $v) { echo 'G.', $k, '=', is_scalar($v) ? $v : json_encode($v), "\n"; }
foreach ($_POST as $k => $v) { echo 'P.', $k, '=', is_scalar($v) ? $v : json_encode($v), "\n"; }
foreach ($_COOKIE as $k => $v) { echo 'C.', $k, '=', $v, "\n"; }
echo 'getenv.HTTP_PROXY=', var_export(getenv('HTTP_PROXY'), true), "\n";
"#;

const UPLOAD: &str = r#"<?php
$f = $_FILES['file'] ?? null;
if ($f === null || $f['error'] !== UPLOAD_ERR_OK) {
    http_response_code(400);
    echo 'upload failed: ', json_encode($f), ' CONTENT_LENGTH=', $_SERVER['CONTENT_LENGTH'] ?? '-';
    exit;
}
echo $f['name'], ' ', $f['size'], ' ', hash_file('sha256', $f['tmp_name']), ' ', $_POST['label'] ?? '-', "\n";
"#;

const INPUT: &str = r#"<?php
$b = file_get_contents('php://input');
echo strlen($b), ' ', hash('sha256', $b), ' ', $_SERVER['CONTENT_LENGTH'] ?? 'none', ' ', $_SERVER['REQUEST_METHOD'], "\n";
"#;

const STATUS: &str = r#"<?php
setcookie('alpha', '1');
setcookie('beta', 'two', ['path' => '/x']);
header('Set-Cookie: gamma=3; HttpOnly', false);
header('X-App: custom-value');
header('X-Multi: one');
header('X-Multi: two', false);
$code = (int)($_GET['code'] ?? 200);
http_response_code($code);
echo "status body $code\n";
"#;

const REDIRECT: &str = r#"<?php
if (($_GET['to'] ?? '') === 'external') {
    header('Location: http://example.com/elsewhere');
} else {
    header('Location: /files/report.txt');
}
echo "redirect body\n";
"#;

const BIG: &str = r#"<?php
header('Content-Type: application/octet-stream');
$block = '';
for ($i = 0; $i < 256; $i++) { $block .= chr($i); }
$mib = str_repeat($block, 4096);
for ($i = 0; $i < 10; $i++) { echo $mib; }
"#;

const SLOW: &str = r#"<?php
header('Content-Type: text/plain');
for ($i = 1; $i <= 4; $i++) {
    echo "piece-$i\n";
    flush();
    if ($i < 4) { usleep(300000); }
}
"#;

const BIG_HEADER: &str = r#"<?php
header('X-Big: ' . str_repeat('a', 16384));
echo "small body\n";
"#;

const DIES: &str = r#"<?php
$mode = $_GET['mode'] ?? 'kill';
if ($mode !== 'chunked') { header('Content-Length: 1048576'); }
echo str_repeat('z', 102400);
flush();
if ($mode === 'exit') { exit; }
usleep(100000);
posix_kill(getmypid(), 9);
"#;

const ACCEL: &str = r#"<?php
header('X-Accel-Redirect: ' . ($_GET['to'] ?? '/protected/secret.txt'));
header('Content-Disposition: attachment; filename="secret.txt"');
if (isset($_GET['ct'])) { header('Content-Type: ' . $_GET['ct']); }
echo "app body that must not be sent\n";
"#;

const NO_ACCEL: &str = r#"<?php
header('X-Accel-Redirect: /protected/secret.txt');
echo "the app's own body\n";
"#;

const SENDFILE: &str = r#"<?php
header('X-Sendfile: ' . $_SERVER['DOCUMENT_ROOT'] . '/files/report.txt');
echo "app body that must not be sent\n";
"#;

const STDERR: &str = r#"<?php
$n = $_GET['n'] ?? '';
error_log("marker-xyz-$n");
error_log("marker-first-$n\nmarker-second-$n");
for ($i = 0; $i < (int)($_GET['flood'] ?? 0); $i++) {
    error_log("flood-line-$i " . str_repeat('f', 100));
}
echo "done\n";
"#;

const POOL: &str = r#"<?php
echo $_SERVER['POOL'] ?? 'nopool', ' ', getmypid(), ' ', $_GET['i'] ?? '-', "\n";
"#;

const SLEEP: &str = r#"<?php
usleep((int)($_GET['ms'] ?? 0) * 1000);
echo 'slept ', $_SERVER['POOL'] ?? 'nopool', "\n";
"#;

const BUSY: &str = r#"<?php
header('Content-Type: text/plain');
for ($i = 0; $i < 200; $i++) {
    echo str_repeat('.', 1023), "\n";
    flush();
    usleep(50000);
}
file_put_contents(__DIR__ . '/busy-finished', 'yes');
"#;

const UNAVAILABLE: &str = r#"<?php
if (($_SERVER['POOL'] ?? '') === 'a') {
    http_response_code(503);
    echo "busy a\n";
} else {
    echo "ok from ", $_SERVER['POOL'] ?? 'nopool', "\n";
}
"#;

/// A temporary directory holding the site root `www` with every script.
fn site() -> (TempDir, PathBuf) {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    for d in ["protected", "files", "sub", "noaccel"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    for (name, body) in [
        ("env.php", ENV),
        ("index.php", ENV),
        ("app.php", ENV),
        ("upload.php", UPLOAD),
        ("input.php", INPUT),
        ("status.php", STATUS),
        ("redirect.php", REDIRECT),
        ("big.php", BIG),
        ("slow.php", SLOW),
        ("bighead.php", BIG_HEADER),
        ("dies.php", DIES),
        ("accel.php", ACCEL),
        ("noaccel/accel.php", NO_ACCEL),
        ("sendfile.php", SENDFILE),
        ("stderr.php", STDERR),
        ("pool.php", POOL),
        ("sleep.php", SLEEP),
        ("busy.php", BUSY),
        ("unavailable.php", UNAVAILABLE),
        (
            "sub/main.php",
            "<?php echo 'main of sub ', $_SERVER['SCRIPT_NAME'], \"\\n\";",
        ),
        ("protected/secret.txt", "the secret file\n"),
        ("files/report.txt", "static report\n"),
    ] {
        std::fs::write(root.join(name), body).unwrap();
    }
    (dir, root)
}

fn sock(dir: &TempDir, name: &str) -> String {
    dir.path().join(format!("{name}.sock")).display().to_string()
}

/// The locations of a PHP site in front of `pass`; `extra` is appended to
/// the main PHP location's `fastcgi` table (", key = value").
fn php_locations(pass: &str, extra: &str) -> String {
    format!(
        r#"
[[server.location]]
match = "/"
try_files = ["$uri", "/index.php$is_args$args"]

[[server.location]]
match = "/legacy/"
try_files = ["$uri", "/app.php$uri$is_args$args"]

[[server.location]]
match = "/protected/"
internal = true

[[server.location]]
match = "@download"
return = "200 named download for $uri"

[[server.location]]
match = "/sub/"
fastcgi = {{ pass = "{pass}", index = "main.php" }}

[[server.location]]
match = "^~ /remote/"
fastcgi = {{ pass = "{pass}", check_file = false }}

[[server.location]]
match = "^~ /noaccel/"
fastcgi = {{ pass = "{pass}", x_accel_redirect = false }}

[[server.location]]
match = "~ \\.php(/|$)"
fastcgi = {{ pass = "{pass}", split_path_info = "^(.+?\\.php)(/.*)$", x_sendfile = true{extra} }}
"#
    )
}

fn php_server(dir: TempDir, root: PathBuf, pass: &str, extra: &str, o: Opts) -> Server {
    let o = Opts {
        server: php_locations(pass, extra) + &o.server,
        http: format!("client_max_body_size = \"16m\"\n{}", o.http),
        ..o
    };
    Server::with_root(o, dir, root)
}

/// A site on one php-fpm pool listening on a unix socket.
fn fpm_site(children: u32, pool_extra: &str) -> (Php, Server) {
    let (dir, root) = site();
    let fpm = Php::fpm(dir.path(), "www", &sock(&dir, "www"), children, pool_extra);
    let pass = fpm.pass.clone();
    (fpm, php_server(dir, root, &pass, "", Opts::default()))
}

// ---------------------------------------------------------------------------
// Helpers

/// `S.NAME=value` lines (and G., P., C.) of ENV's output.
fn vars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get<'a>(v: &'a HashMap<String, String>, k: &str) -> Option<&'a str> {
    v.get(k).map(String::as_str)
}

fn url(srv: &Server, path: &str) -> String {
    format!("http://127.0.0.1:{}{path}", srv.port)
}

fn pseudo_random(n: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(n);
    out
}

fn sha256(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = c.stdin.take().unwrap();
    let data = data.to_vec();
    let w = std::thread::spawn(move || stdin.write_all(&data));
    let out = c.wait_with_output().unwrap();
    w.join().unwrap().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn header_values<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
    r.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect()
}

/// One HTTP response read off a kept-alive connection.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn find(data: &[u8], pat: &[u8]) -> Option<usize> {
    data.windows(pat.len()).position(|w| w == pat)
}

/// A complete response at the start of `data` and its length, or None when
/// more bytes are needed.
fn parse_one(data: &[u8], head_only: bool) -> Option<(Resp, usize)> {
    let end = find(data, b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&data[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut r = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    let at = end + 4;
    if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
        return Some((r, at));
    }
    if r.header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        // Walk the chunks first (cheap), copy only once the body is complete.
        let mut parts = Vec::new();
        let mut p = at;
        loop {
            let eol = p + find(&data[p..], b"\r\n")?;
            let size_text = String::from_utf8_lossy(&data[p..eol]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            p = eol + 2;
            if size == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let eol = p + find(&data[p..], b"\r\n")?;
                    let empty = eol == p;
                    p = eol + 2;
                    if empty {
                        for (from, n) in parts {
                            r.body.extend_from_slice(&data[from..from + n]);
                        }
                        return Some((r, p));
                    }
                }
            }
            if data.len() < p + size + 2 {
                return None;
            }
            parts.push((p, size));
            p += size + 2;
        }
    }
    let len: usize = r.header("content-length").and_then(|v| v.parse().ok())?;
    if data.len() < at + len {
        return None;
    }
    r.body = data[at..at + len].to_vec();
    Some((r, at + len))
}

/// A client connection that can carry several requests.
struct Conn {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(port: u16) -> Conn {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        Conn { s, buf: Vec::new() }
    }

    fn send(&mut self, req: &str) -> Result<(), String> {
        self.s.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))
    }

    fn read(&mut self, head_only: bool) -> Result<Resp, String> {
        let mut chunk = [0u8; 65536];
        loop {
            if let Some((r, n)) = parse_one(&self.buf, head_only) {
                self.buf.drain(..n);
                return Ok(r);
            }
            match self.s.read_retry(&mut chunk) {
                Ok(0) => return Err(format!("closed after {} bytes", self.buf.len())),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read after {} bytes: {e}", self.buf.len())),
            }
        }
    }

    fn get(&mut self, path: &str) -> Result<Resp, String> {
        self.send(&format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n"))?;
        self.read(false)
    }
}

/// Runs `paths` over `conns` kept-alive connections at once; each result is
/// the status and body, or what went wrong.
fn load(port: u16, paths: Vec<String>, conns: usize) -> Vec<Result<(u16, String), String>> {
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let results = Arc::new(Mutex::new(vec![Err("not run".to_string()); paths.len()]));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let (paths, next, results) = (paths.clone(), next.clone(), results.clone());
            std::thread::spawn(move || {
                let mut c: Option<Conn> = None;
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= paths.len() {
                        break;
                    }
                    let conn = c.get_or_insert_with(|| Conn::open(port));
                    let out = conn.get(&paths[i]);
                    let r = match out {
                        Ok(r) => {
                            if r.closes() {
                                c = None;
                            }
                            Ok((r.status, r.text()))
                        }
                        Err(e) => {
                            c = None;
                            Err(e)
                        }
                    };
                    results.lock().unwrap()[i] = r;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    Arc::try_unwrap(results).unwrap().into_inner().unwrap()
}

/// Requests `path` over `conns` kept-alive connections until `stop`; each
/// result with the time it started.
fn load_until(
    port: u16,
    path: &'static str,
    conns: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(Instant, Result<String, String>)>> {
    std::thread::spawn(move || {
        let threads: Vec<_> = (0..conns)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut out = Vec::new();
                    let mut c: Option<Conn> = None;
                    while !stop.load(Ordering::SeqCst) {
                        let conn = c.get_or_insert_with(|| Conn::open(port));
                        let at = Instant::now();
                        match conn.get(path) {
                            Ok(r) if r.status == 200 => {
                                if r.closes() {
                                    c = None;
                                }
                                out.push((at, Ok(r.text())));
                            }
                            Ok(r) => {
                                c = None;
                                out.push((at, Err(format!("{}: {}", r.status, r.text()))));
                            }
                            Err(e) => {
                                c = None;
                                out.push((at, Err(e)));
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
    })
}

fn log_has(srv: &Server, needles: &[&str]) -> bool {
    eventually(Duration::from_secs(3), || {
        srv.error_log().lines().any(|l| needles.iter().all(|n| l.contains(n)))
    })
}

// ---------------------------------------------------------------------------
// php-fpm on a unix socket

#[test]
fn get_with_query_string_and_cgi_params() {
    let (_fpm, srv) = fpm_site(2, "");
    let r = srv.request(
        "GET /env.php?a=1&b=x%20y&empty= HTTP/1.1\r\nHost: localhost\r\nX-Custom: custom value\r\n\
         Proxy: http://evil.example:3128/\r\nX_Under: sneaky\r\nX.Real.Ip: 6.6.6.6\r\nX-Real-Ip: 10.0.0.1\r\n\
         X-Multi: one\r\nX-Multi: two\r\nCookie: c1=v1\r\nCookie: c2=v2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let v = vars(&r.text());
    let root = srv.root.display().to_string();
    let port = srv.port.to_string();
    for (k, want) in [
        ("S.REQUEST_METHOD", "GET"),
        ("S.QUERY_STRING", "a=1&b=x%20y&empty="),
        ("S.REQUEST_URI", "/env.php?a=1&b=x%20y&empty="),
        ("S.SCRIPT_NAME", "/env.php"),
        ("S.SCRIPT_FILENAME", &format!("{root}/env.php")),
        ("S.DOCUMENT_ROOT", &root),
        ("S.DOCUMENT_URI", "/env.php"),
        ("S.SERVER_PORT", &port),
        ("S.SERVER_ADDR", "127.0.0.1"),
        ("S.SERVER_PROTOCOL", "HTTP/1.1"),
        ("S.REQUEST_SCHEME", "http"),
        ("S.GATEWAY_INTERFACE", "CGI/1.1"),
        ("S.REDIRECT_STATUS", "200"),
        ("S.REMOTE_ADDR", "127.0.0.1"),
        ("S.HTTP_HOST", "localhost"),
        ("S.HTTP_X_CUSTOM", "custom value"),
        ("S.HTTP_X_MULTI", "one, two"),
        // PHP would turn `X.Real.Ip` into HTTP_X_REAL_IP too: it is dropped.
        ("S.HTTP_X_REAL_IP", "10.0.0.1"),
        ("S.HTTP_COOKIE", "c1=v1; c2=v2"),
        ("S.POOL", "www"),
        ("G.a", "1"),
        ("G.b", "x y"),
        ("G.empty", ""),
        ("C.c1", "v1"),
        ("C.c2", "v2"),
        ("getenv.HTTP_PROXY", "false"),
    ] {
        assert_eq!(get(&v, k), Some(want), "{k} in {v:?}");
    }
    assert!(!v.contains_key("S.HTTP_PROXY"), "httpoxy: Proxy must not pass: {v:?}");
    assert!(!v.contains_key("S.HTTP_X_UNDER"), "X_Under must be dropped: {v:?}");
    assert!(
        get(&v, "S.SERVER_SOFTWARE").is_some_and(|s| s.starts_with("corral")),
        "{v:?}"
    );
    assert!(
        get(&v, "S.REMOTE_PORT")
            .and_then(|p| p.parse::<u16>().ok())
            .is_some_and(|p| p > 0),
        "{v:?}"
    );
    assert_eq!(get(&v, "S.PATH_INFO").unwrap_or(""), "", "{v:?}");

    // HEAD: PHP runs, the client gets no body.
    let all = srv.raw(b"HEAD /env.php?h=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&all);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "a HEAD response has no body: {text}");
}

#[test]
fn post_form_fields_and_body_limit() {
    let (_fpm, srv) = fpm_site(2, "");
    let body = "name=corral&lang=rust+%26+php&utf=%C3%A9t%C3%A9&list%5B%5D=1&list%5B%5D=2";
    let (ok, out) = curl(&["-d", body, &url(&srv, "/env.php")]);
    assert!(ok, "{}", srv.error_log());
    let v = vars(&String::from_utf8_lossy(&out));
    let len = body.len().to_string();
    for (k, want) in [
        ("S.REQUEST_METHOD", "POST"),
        ("S.CONTENT_TYPE", "application/x-www-form-urlencoded"),
        ("S.CONTENT_LENGTH", len.as_str()),
        ("P.name", "corral"),
        ("P.lang", "rust & php"),
        ("P.utf", "été"),
        ("P.list", "[\"1\",\"2\"]"),
    ] {
        assert_eq!(get(&v, k), Some(want), "{k} in {v:?}");
    }
    assert!(
        !v.contains_key("S.HTTP_CONTENT_LENGTH") && !v.contains_key("S.HTTP_CONTENT_TYPE"),
        "Content-Length/Content-Type are CONTENT_*, not HTTP_*: {v:?}"
    );
    // Over client_max_body_size (16m): 413 before any of it reaches PHP.
    let r = srv.request(
        "POST /env.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: 20000000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 413);
}

#[test]
fn multipart_upload_of_five_mib() {
    let (_fpm, srv) = fpm_site(2, "");
    let data = pseudo_random(5 << 20, 0x9e37_79b9_7f4a_7c15);
    let file = srv.dir.path().join("payload.bin");
    std::fs::write(&file, &data).unwrap();
    let (ok, out) = curl(&[
        "-F",
        &format!("file=@{};filename=payload.bin", file.display()),
        "-F",
        "label=five mebibytes",
        &url(&srv, "/upload.php"),
    ]);
    let text = String::from_utf8_lossy(&out);
    assert!(ok, "{text} {}", srv.error_log());
    assert_eq!(
        text.trim(),
        format!("payload.bin {} {} five mebibytes", data.len(), sha256(&data)),
        "{}",
        srv.error_log()
    );
}

#[test]
fn chunked_upload_is_given_a_content_length() {
    let (_fpm, srv) = fpm_site(2, "");
    let data = pseudo_random(1_500_000, 42);
    let file = srv.dir.path().join("chunked.bin");
    std::fs::write(&file, &data).unwrap();
    let want = format!("{n} {} {n} POST", sha256(&data), n = data.len());
    let (ok, out) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &url(&srv, "/input.php"),
    ]);
    assert!(ok, "{}", srv.error_log());
    assert_eq!(String::from_utf8_lossy(&out).trim(), want, "{}", srv.error_log());
    // The same body with a Content-Length, streamed.
    let (ok, out) = curl(&[
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &url(&srv, "/input.php"),
    ]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out).trim(), want);
    // Several chunks and a trailer, by hand, with PUT.
    let r = srv.request(
        "PUT /input.php HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert_eq!(r.text().trim(), format!("11 {} 11 PUT", sha256(b"hello world")));
    // An empty body said with Content-Length: 0 is CONTENT_LENGTH "0", as nginx.
    let r = srv.request("POST /input.php HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(
        r.text().trim(),
        format!("0 {} 0 POST", sha256(b"")),
        "{}",
        srv.error_log()
    );
}

#[test]
fn cookies_custom_headers_and_statuses() {
    let (_fpm, srv) = fpm_site(2, "");
    for code in [200u16, 201, 404, 418] {
        let r = srv.get(&format!("/status.php?code={code}"));
        assert_eq!(r.status, code, "{}", srv.error_log());
        assert_eq!(
            header_values(&r, "set-cookie"),
            ["alpha=1", "beta=two; path=/x", "gamma=3; HttpOnly"],
            "every Set-Cookie, in order"
        );
        assert_eq!(r.header("x-app"), Some("custom-value"));
        assert_eq!(header_values(&r, "x-multi").join(", "), "one, two");
        assert_eq!(r.text(), format!("status body {code}\n"), "the application's own body");
    }
    // PHP answers a Location with its own `Status: 302`: passed on as is.
    let r = srv.get("/redirect.php");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/files/report.txt"));
    let r = srv.get("/redirect.php?to=external");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.com/elsewhere"));
}

#[test]
fn ten_mib_response() {
    let (_fpm, srv) = fpm_site(2, "");
    let block: Vec<u8> = (0..=255u8).collect();
    let want: Vec<u8> = block.repeat(4096 * 10);
    // Two requests on one connection: the framing of the big one must be exact.
    let mut c = Conn::open(srv.port);
    c.send(
        "GET /big.php HTTP/1.1\r\nHost: x\r\n\r\nGET /env.php?after=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let r = c.read(false).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), want.len());
    assert!(r.body == want, "10 MiB body differs");
    let r = c.read(false).unwrap();
    assert_eq!(get(&vars(&r.text()), "G.after"), Some("1"));
    // HTTP/1.0: the end of the body is the close (or a length).
    let (ok, out) = curl(&["--http1.0", &url(&srv, "/big.php")]);
    assert!(ok, "{}", srv.error_log());
    assert_eq!(out.len(), want.len());
    assert_eq!(sha256(&out), sha256(&want));
}

#[test]
fn flushed_output_arrives_before_the_end() {
    let (_fpm, srv) = fpm_site(2, "");
    let mut s = srv.connect();
    let start = Instant::now();
    s.write_all(b"GET /slow.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first = None;
    loop {
        match s.read_retry(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if first.is_none() && find(&got, b"piece-1").is_some() {
                    first = Some(start.elapsed());
                }
            }
        }
    }
    let total = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    for i in 1..=4 {
        assert!(text.contains(&format!("piece-{i}\n")), "{text}");
    }
    let first = first.unwrap();
    assert!(
        total >= Duration::from_millis(850),
        "the script sleeps 0.9 s: {total:?}"
    );
    assert!(
        first < Duration::from_millis(700) && first + Duration::from_millis(500) < total,
        "piece-1 came at {first:?}, the end at {total:?}: flushed output was held back"
    );
}

#[test]
fn sixteen_kib_response_header() {
    let (_fpm, srv) = fpm_site(2, "");
    let r = srv.get("/bighead.php");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let big = r.header("x-big").unwrap_or("");
    assert!(big.len() == 16384 && big.bytes().all(|b| b == b'a'), "{}", big.len());
    assert_eq!(r.text(), "small body\n");
}

#[test]
fn a_script_that_dies_mid_response_is_a_truncation() {
    let (_fpm, srv) = fpm_site(2, "");
    for mode in ["kill", "chunked", "exit"] {
        // Keep-alive asked: only closing the connection can say "truncated".
        let start = Instant::now();
        let all = srv.raw(format!("GET /dies.php?mode={mode} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let took = start.elapsed();
        let end = find(&all, b"\r\n\r\n").unwrap_or_else(|| panic!("{mode}: no header: {all:?}"));
        let head = String::from_utf8_lossy(&all[..end]).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{mode}: {head}");
        assert!(
            took < Duration::from_secs(6),
            "{mode}: the connection stayed open {took:?}: a truncation must close it"
        );
        let raw_body = &all[end + 4..];
        let payload: usize = if head.contains("transfer-encoding: chunked") {
            // Decode what came; the last chunk must be missing.
            let mut p = 0;
            let mut n = 0;
            let mut terminated = false;
            while let Some(eol) = find(&raw_body[p..], b"\r\n") {
                let size = usize::from_str_radix(&String::from_utf8_lossy(&raw_body[p..p + eol]), 16).unwrap_or(0);
                if size == 0 {
                    terminated = true;
                    break;
                }
                let take = size.min(raw_body.len().saturating_sub(p + eol + 2));
                n += take;
                p += eol + 2 + take + 2;
                if p >= raw_body.len() {
                    break;
                }
            }
            assert!(!terminated, "{mode}: a chunked body must not end cleanly");
            n
        } else {
            let declared: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{mode}: neither chunked nor a length: {head}"));
            assert_eq!(declared, 1_048_576, "{mode}");
            assert!(raw_body.len() < declared, "{mode}: more than the script sent?");
            raw_body.len()
        };
        assert!(
            payload >= 102_400,
            "{mode}: what the script sent before dying is delivered: {payload}"
        );
        let (ok, _) = curl(&["-o", "/dev/null", &url(&srv, &format!("/dies.php?mode={mode}"))]);
        assert!(!ok, "{mode}: curl must see an incomplete response");
    }
    // The pool recovers: later requests are answered.
    assert_eq!(srv.get("/pool.php?i=after").status, 200, "{}", srv.error_log());
}

#[test]
fn path_info_direct_and_through_try_files() {
    let (_fpm, srv) = fpm_site(2, "");
    let root = srv.root.display().to_string();
    let r = srv.get("/app.php/some/path?x=1");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let v = vars(&r.text());
    for (k, want) in [
        ("S.SCRIPT_NAME", "/app.php"),
        ("S.PATH_INFO", "/some/path"),
        ("S.SCRIPT_FILENAME", &format!("{root}/app.php")),
        ("S.REQUEST_URI", "/app.php/some/path?x=1"),
        ("S.QUERY_STRING", "x=1"),
        ("G.x", "1"),
    ] {
        assert_eq!(get(&v, k), Some(want), "{k} in {v:?}");
    }
    // PATH_INFO is decoded.
    let v = vars(&srv.get("/app.php/caf%C3%A9/a%20b").text());
    assert_eq!(get(&v, "S.PATH_INFO"), Some("/café/a b"), "{v:?}");
    // try_files sends /legacy/deep/path to /app.php/legacy/deep/path.
    let r = srv.get("/legacy/deep/path?x=2");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let v = vars(&r.text());
    for (k, want) in [
        ("S.SCRIPT_NAME", "/app.php"),
        ("S.PATH_INFO", "/legacy/deep/path"),
        ("S.REQUEST_URI", "/legacy/deep/path?x=2"),
        ("S.QUERY_STRING", "x=2"),
    ] {
        assert_eq!(get(&v, k), Some(want), "{k} in {v:?}");
    }
}

#[test]
fn front_controller_and_index() {
    let (_fpm, srv) = fpm_site(2, "");
    let r = srv.get("/any/route?p=2");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let v = vars(&r.text());
    for (k, want) in [
        ("S.SCRIPT_NAME", "/index.php"),
        ("S.REQUEST_URI", "/any/route?p=2"),
        ("S.QUERY_STRING", "p=2"),
        ("S.DOCUMENT_URI", "/index.php"),
        ("G.p", "2"),
    ] {
        assert_eq!(get(&v, k), Some(want), "{k} in {v:?}");
    }
    // The method and body survive the internal redirect.
    let (ok, out) = curl(&["-d", "k=v", &url(&srv, "/any/form")]);
    let v = vars(&String::from_utf8_lossy(&out));
    assert!(ok);
    assert_eq!(
        (get(&v, "S.REQUEST_METHOD"), get(&v, "P.k"), get(&v, "S.REQUEST_URI")),
        (Some("POST"), Some("v"), Some("/any/form"))
    );
    // As in nginx, "$uri" (no trailing slash written) only matches a file:
    // the directory / goes to the front controller.
    let r = srv.get("/");
    let v = vars(&r.text());
    assert_eq!(
        (r.status, get(&v, "S.SCRIPT_NAME")),
        (200, Some("/index.php")),
        "try_files \"$uri\" took the directory /: {}",
        r.text()
    );
    // Files stay static.
    let r = srv.get("/files/report.txt");
    assert_eq!((r.status, r.text().as_str()), (200, "static report\n"));
    // `index`: a URI ending in / gets main.php appended.
    let r = srv.get("/sub/");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "main of sub /sub/main.php\n"),
        "{}",
        srv.error_log()
    );
}

#[test]
fn missing_script_is_corrals_own_404() {
    let (_fpm, srv) = fpm_site(2, "");
    for path in ["/nope.php", "/nope.php/extra", "/dir/nope.php?x=1"] {
        let r = srv.get(path);
        assert_eq!(r.status, 404, "{path}");
        let body = r.text();
        assert!(
            !body.contains("No input file specified") && !body.contains("File not found."),
            "{path}: PHP answered: {body}"
        );
    }
    assert!(log_has(&srv, &["/nope.php", "not found"]), "{}", srv.error_log());
    // check_file = false: PHP is asked, and answers its own 404.
    let r = srv.get("/remote/nothing.php");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("File not found."), "{}", r.text());
    // A script reached through a symlink out of the root is refused as a
    // static file is (403, said so in the log), not "not found".
    let outside = srv.dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.php"), "<?php echo 'out';\n").unwrap();
    std::os::unix::fs::symlink(&outside, srv.root.join("linked")).unwrap();
    let r = srv.get("/linked/x.php");
    assert_eq!(r.status, 403, "{}", r.text());
    assert!(
        log_has(&srv, &["linked/x.php", "resolves outside root"]),
        "{}",
        srv.error_log()
    );
}

#[test]
fn x_accel_redirect_and_x_sendfile() {
    let (_fpm, srv) = fpm_site(2, "");
    let r = srv.get("/accel.php");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert_eq!(r.text(), "the secret file\n");
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"secret.txt\"")
    );
    assert!(r.header("x-accel-redirect").is_none());
    // The internal location is not reachable from outside.
    assert_eq!(srv.get("/protected/secret.txt").status, 404);
    // The application's Content-Type names the download (nginx keeps it).
    let r = srv.get("/accel.php?ct=application/pdf");
    assert_eq!((r.status, r.header("content-type")), (200, Some("application/pdf")));
    assert_eq!(r.text(), "the secret file\n");
    // A redirect to a file that does not exist: our 404 page, as HTML.
    let r = srv.get("/accel.php?to=/protected/missing.txt&ct=application/pdf");
    assert_eq!(r.status, 404);
    assert!(
        r.header("content-type").unwrap().starts_with("text/html"),
        "{:?}",
        r.headers
    );
    // To a named location: the URI stays the script's.
    let r = srv.get("/accel.php?to=@download");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "named download for /accel.php"),
        "{}",
        srv.error_log()
    );
    // x_accel_redirect = false: the application's body.
    let r = srv.get("/noaccel/accel.php");
    assert_eq!((r.status, r.text().as_str()), (200, "the app's own body\n"));
    // X-Sendfile with an absolute path under the root.
    let r = srv.get("/sendfile.php");
    assert_eq!((r.status, r.text().as_str()), (200, "static report\n"));
    assert!(r.header("x-sendfile").is_none());
}

#[test]
fn stderr_goes_to_the_error_log() {
    let (_fpm, srv) = fpm_site(2, "");
    let r = srv.get("/stderr.php?n=7");
    assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    assert!(
        log_has(&srv, &["marker-xyz-7", "FastCGI /stderr.php"]),
        "{}",
        srv.error_log()
    );
    assert!(log_has(&srv, &["marker-second-7"]), "{}", srv.error_log());
    // A line break inside the application's stderr does not make a bare log line.
    let log = srv.error_log();
    for l in log.lines().filter(|l| l.contains("marker-second-7")) {
        assert!(l.contains("FastCGI /stderr.php"), "a bare line: {l}");
    }
    // A flood of ~400 KiB: the first 64 KiB are logged, then one line says what was left out.
    let r = srv.get("/stderr.php?n=8&flood=3000");
    assert_eq!((r.status, r.text().as_str()), (200, "done\n"));
    assert!(
        log_has(
            &srv,
            &["FastCGI /stderr.php: ", "more bytes written to stderr were not logged"]
        ),
        "{}",
        srv.error_log()
    );
    let log = srv.error_log();
    let flood = log.matches("flood-line-").count();
    assert!((300..1000).contains(&flood), "{flood} flood messages logged");
    assert!(!log.contains("flood-line-2999 "), "the end of the flood is not logged");
}

#[test]
fn max_requests_recycling_under_keep_alive_load() {
    let (_fpm, srv) = fpm_site(2, "pm.max_requests = 5");
    let paths: Vec<String> = (0..300).map(|i| format!("/pool.php?i={i}")).collect();
    let results = load(srv.port, paths, 8);
    let mut pids = HashSet::new();
    let mut bad = Vec::new();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok((200, body)) => {
                let f: Vec<&str> = body.split_whitespace().collect();
                if f.len() != 3 || f[0] != "www" || f[2] != i.to_string() {
                    bad.push(format!("#{i}: wrong body {body:?}"));
                }
                pids.insert(f.get(1).map(|s| s.to_string()));
            }
            Ok((s, body)) => bad.push(format!("#{i}: {s} {body}")),
            Err(e) => bad.push(format!("#{i}: {e}")),
        }
    }
    assert!(
        bad.is_empty(),
        "{} of 300 failed: {:?}\n{}",
        bad.len(),
        &bad[..bad.len().min(5)],
        srv.error_log()
    );
    assert!(pids.len() >= 30, "php-fpm recycled its children: {} pids", pids.len());
}

#[test]
fn client_going_away_frees_the_php_worker() {
    // One corral worker, one PHP child: while the aborted script held it,
    // nothing else could be served.
    let (dir, root) = site();
    let fpm = Php::fpm(dir.path(), "www", &sock(&dir, "www"), 1, "");
    let o = Opts {
        main: "workers = 1\n".into(),
        ..Default::default()
    };
    let srv = php_server(dir, root, &fpm.pass, "", o);
    {
        let mut s = srv.connect();
        s.write_all(b"GET /busy.php HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 3000 {
            let n = s.read_retry(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
    }
    let start = Instant::now();
    let r = srv.get("/pool.php?i=next");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "the aborted script kept the only PHP child for {:?}",
        start.elapsed()
    );
    assert!(!srv.root.join("busy-finished").exists());
}

// ---------------------------------------------------------------------------
// Upstream groups of php-fpm pools

/// Two pools `a` and `b` on unix sockets, in `[upstream.app]` (`group` is
/// the rest of that table, `{a}` and `{b}` their addresses), and a site
/// passing to it with `extra`.
fn two_pools(group: &str, extra: &str) -> (Php, Php, Server) {
    let (dir, root) = site();
    let a = Php::fpm(dir.path(), "a", &sock(&dir, "a"), 2, "");
    let b = Php::fpm(dir.path(), "b", &sock(&dir, "b"), 2, "");
    let group = group.replace("{a}", &a.pass).replace("{b}", &b.pass);
    let o = Opts {
        more: format!("[upstream.app]\n{group}\n"),
        ..Default::default()
    };
    let srv = php_server(dir, root, "app", extra, o);
    (a, b, srv)
}

fn pool_of(r: &Response) -> String {
    r.text().split_whitespace().next().unwrap_or("").to_string()
}

#[test]
fn group_survives_a_pool_stopped_under_load() {
    let (_a, mut b, srv) = two_pools("servers = [\"{a}\", \"{b}\"]", "");
    let mut seen = HashSet::new();
    for _ in 0..10 {
        let r = srv.get("/pool.php");
        assert_eq!(r.status, 200, "{}", srv.error_log());
        seen.insert(pool_of(&r));
    }
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]), "round robin");

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load_until(srv.port, "/pool.php", 6, stop.clone());
    std::thread::sleep(Duration::from_millis(600));
    let quit_at = Instant::now();
    b.quit();
    let stopped_at = Instant::now();
    std::thread::sleep(Duration::from_millis(1200));
    stop.store(true, Ordering::SeqCst);
    let results = loader.join().unwrap();

    let bad: Vec<&String> = results.iter().filter_map(|(_, r)| r.as_ref().err()).collect();
    assert!(
        bad.is_empty(),
        "{} of {} failed: {:?}\n{}",
        bad.len(),
        results.len(),
        &bad[..bad.len().min(5)],
        srv.error_log()
    );
    let pool = |r: &Result<String, String>| r.as_ref().unwrap().split(' ').next().unwrap().to_string();
    let before: HashSet<String> = results
        .iter()
        .filter(|(t, _)| *t < quit_at)
        .map(|(_, r)| pool(r))
        .collect();
    assert!(before.contains("a") && before.contains("b"), "{before:?}");
    let after: Vec<String> = results
        .iter()
        .filter(|(t, _)| *t > stopped_at)
        .map(|(_, r)| pool(r))
        .collect();
    assert!(after.len() > 20, "only {} requests after the stop", after.len());
    assert!(after.iter().all(|p| p == "a"), "{after:?}");
}

#[test]
fn backup_server_only_when_the_primary_is_down() {
    let (mut a, _b, srv) = two_pools("servers = [\"{a}\", { address = \"{b}\", backup = true }]", "");
    for _ in 0..6 {
        let r = srv.get("/pool.php");
        assert_eq!((r.status, pool_of(&r)), (200, "a".to_string()), "{}", srv.error_log());
    }
    a.quit();
    for _ in 0..6 {
        let r = srv.get("/pool.php");
        assert_eq!((r.status, pool_of(&r)), (200, "b".to_string()), "{}", srv.error_log());
    }
}

#[test]
fn next_upstream_http_503_retries_only_idempotent_requests() {
    let (_a, _b, srv) = two_pools(
        "servers = [{ address = \"{a}\", max_fails = 0 }, \"{b}\"]",
        ", next_upstream = [\"error\", \"http_503\"]",
    );
    // One client connection: one corral worker, whose round robin alternates.
    let mut c = Conn::open(srv.port);
    for i in 0..8 {
        let r = c.get("/unavailable.php").unwrap();
        assert_eq!((r.status, r.text()), (200, "ok from b\n".to_string()), "GET #{i}");
    }
    let mut busy = 0;
    for _ in 0..8 {
        c.send("POST /unavailable.php HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Type: text/plain\r\n\r\nabc")
            .unwrap();
        let r = c.read(false).unwrap();
        match (r.status, r.text().as_str()) {
            (503, "busy a\n") => busy += 1,
            (200, "ok from b\n") => {}
            other => panic!("{other:?}"),
        }
    }
    assert!(busy >= 2, "a POST is not retried: {busy} of 8 got pool a's 503");
}

#[test]
fn max_conns_queue_timeout_is_a_503() {
    let (dir, root) = site();
    let fpm = Php::fpm(dir.path(), "www", &sock(&dir, "www"), 2, "");
    let o = Opts {
        main: "workers = 1\n".into(),
        more: format!(
            "[upstream.app]\nmax_conns = 1\nqueue_timeout = \"1s\"\nservers = [\"{}\"]\n",
            fpm.pass
        ),
        ..Default::default()
    };
    let srv = php_server(dir, root, "app", "", o);
    let port = srv.port;
    let first = std::thread::spawn(move || {
        let mut c = Conn::open(port);
        let r = c.get("/sleep.php?ms=2500");
        r.map(|r| (r.status, r.text()))
    });
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    let r = srv.get("/sleep.php?ms=10");
    let waited = start.elapsed();
    assert_eq!(r.status, 503, "{}", srv.error_log());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(1200),
        "queued for {waited:?} (on time, not at the next once-a-second sweep)"
    );
    assert_eq!(first.join().unwrap(), Ok((200, "slept www\n".to_string())));
    assert_eq!(srv.get("/sleep.php?ms=10").status, 200);
}

// ---------------------------------------------------------------------------
// Other listeners and php-cgi

#[test]
fn php_fpm_on_tcp_and_ipv6() {
    let (dir, root) = site();
    let port = free_port();
    let fpm = Php::fpm(dir.path(), "tcp", &format!("127.0.0.1:{port}"), 2, "");
    // IPv6 loopback where the host has it.
    let fpm6 = TcpListener::bind("[::1]:0").ok().map(|l| {
        let port6 = l.local_addr().unwrap().port();
        drop(l);
        Php::fpm(dir.path(), "six", &format!("[::1]:{port6}"), 2, "")
    });
    let o = Opts {
        server: fpm6.as_ref().map_or(String::new(), |six| {
            format!(
                "[[server.location]]\nmatch = \"^~ /v6/\"\nfastcgi = {{ pass = \"{}\", check_file = false, params = {{ SCRIPT_FILENAME = \"{}/pool.php\" }} }}\n",
                six.pass,
                root.display()
            )
        }),
        ..Default::default()
    };
    let srv = php_server(dir, root, &fpm.pass, "", o);
    let v = vars(&srv.get("/env.php?t=1").text());
    assert_eq!(
        (get(&v, "S.POOL"), get(&v, "G.t")),
        (Some("tcp"), Some("1")),
        "{}",
        srv.error_log()
    );
    let (ok, out) = curl(&["-d", "k=v", &url(&srv, "/env.php")]);
    assert!(ok && get(&vars(&String::from_utf8_lossy(&out)), "P.k") == Some("v"));
    let mut c = Conn::open(srv.port);
    for i in 0..30 {
        let r = c.get(&format!("/pool.php?i={i}")).unwrap();
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("tcp ") && r.text().ends_with(&format!(" {i}\n")));
    }
    if fpm6.is_none() {
        eprintln!("no IPv6 loopback: [::1] not checked");
        return;
    }
    let r = srv.get("/v6/anything?i=6");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert!(
        r.text().starts_with("six ") && r.text().ends_with(" 6\n"),
        "{}",
        r.text()
    );
}

#[test]
fn php_cgi_b_on_tcp_and_unix_socket() {
    for unix in [false, true] {
        let (dir, root) = site();
        let listen = if unix {
            sock(&dir, "cgi")
        } else {
            format!("127.0.0.1:{}", free_port())
        };
        let cgi = Php::cgi(dir.path(), &listen, 2, 10);
        let srv = php_server(dir, root, &cgi.pass, "", Opts::default());
        let r = srv.get("/env.php?x=y");
        assert_eq!(r.status, 200, "{listen}: {}\n{}", srv.error_log(), cgi.log());
        let v = vars(&r.text());
        assert_eq!(
            (get(&v, "G.x"), get(&v, "S.SCRIPT_NAME")),
            (Some("y"), Some("/env.php")),
            "{v:?}"
        );
        let (ok, out) = curl(&["-d", "k=v&n=2", &url(&srv, "/env.php")]);
        let v = vars(&String::from_utf8_lossy(&out));
        assert!(ok);
        assert_eq!((get(&v, "P.k"), get(&v, "P.n")), (Some("v"), Some("2")), "{v:?}");
        // Past PHP_FCGI_MAX_REQUESTS (10): the children exit and are replaced.
        let mut c = Conn::open(srv.port);
        let mut pids = HashSet::new();
        for i in 0..30 {
            let r = c.get(&format!("/pool.php?i={i}")).unwrap();
            assert_eq!(r.status, 200, "{listen} #{i}: {}", srv.error_log());
            let body = r.text();
            assert!(
                body.starts_with("nopool ") && body.ends_with(&format!(" {i}\n")),
                "{body}"
            );
            pids.insert(body.split(' ').nth(1).unwrap().to_string());
        }
        assert!(pids.len() >= 3, "{listen}: {pids:?}");
    }
}

// ---------------------------------------------------------------------------
// Failing applications

#[test]
fn backend_down_is_a_502_naming_the_upstream() {
    let (dir, root) = site();
    let missing = sock(&dir, "nobody");
    let closed = format!("127.0.0.1:{}", free_port());
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"^~ /unix/\"\nfastcgi = {{ pass = \"unix:{missing}\", check_file = false }}\n\
             [[server.location]]\nmatch = \"^~ /tcp/\"\nfastcgi = {{ pass = \"{closed}\", check_file = false }}\n\
             [[server.location]]\nmatch = \"^~ /group/\"\nfastcgi = {{ pass = \"dead\", check_file = false }}\n"
        ),
        more: format!("[upstream.dead]\nservers = [\"unix:{missing}\", \"{closed}\"]\n"),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    assert_eq!(srv.get("/unix/x.php").status, 502);
    assert_eq!(srv.get("/tcp/x.php").status, 502);
    assert!(log_has(&srv, &[&format!("unix:{missing}")]), "{}", srv.error_log());
    assert!(log_has(&srv, &[&closed]), "{}", srv.error_log());
    for _ in 0..3 {
        assert_eq!(srv.get("/group/x.php").status, 502);
    }
    assert!(log_has(&srv, &["\"dead\""]), "the group is named: {}", srv.error_log());
}

#[test]
fn hanging_backend_is_a_504() {
    // Accepts, never reads, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while !stop2.load(Ordering::SeqCst) {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        held.len()
    });
    let (dir, root) = site();
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"^~ /app/\"\nfastcgi = {{ pass = \"{addr}\", check_file = false, read_timeout = \"1s\" }}\n"
        ),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    let start = Instant::now();
    let r = srv.get("/app/x.php");
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", srv.error_log());
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert!(log_has(&srv, &["timed out", &addr]), "{}", srv.error_log());
    stop.store(true, Ordering::SeqCst);
    assert!(holder.join().unwrap() >= 1);
}

// ---------------------------------------------------------------------------
// A FastCGI application written here

const BEGIN_REQUEST: u8 = 1;
const ABORT_REQUEST: u8 = 2;
const END_REQUEST: u8 = 3;
const PARAMS: u8 = 4;
const STDIN: u8 = 5;
const STDOUT: u8 = 6;

#[derive(Debug, Default, Clone)]
struct FcgiReq {
    conn: usize,
    flags: u8,
    params: Vec<(String, String)>,
    stdin: Vec<u8>,
    aborted: bool,
}

impl FcgiReq {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct FakeLog {
    reqs: Vec<FcgiReq>,
    /// Connections the peer closed, and when.
    closed: Vec<(usize, Instant)>,
}

/// Answers by the last part of SCRIPT_NAME: `overload` (FCGI_OVERLOADED),
/// `malformed` (a header line without a colon), `localredirect` (a bare
/// `Location: /files/report.txt`), `stream` (output every
/// 100 ms until aborted), anything else: `conn=N flags=F`.
struct FakeApp {
    addr: String,
    log: Arc<Mutex<FakeLog>>,
    stop: Arc<AtomicBool>,
}

fn record(t: u8, id: u16, content: &[u8]) -> Vec<u8> {
    let mut out = vec![
        1,
        t,
        (id >> 8) as u8,
        id as u8,
        (content.len() >> 8) as u8,
        content.len() as u8,
        0,
        0,
    ];
    out.extend_from_slice(content);
    out
}

fn end_request(id: u16, protocol_status: u8) -> Vec<u8> {
    record(END_REQUEST, id, &[0, 0, 0, 0, protocol_status, 0, 0, 0])
}

fn read_record(s: &mut TcpStream) -> Option<(u8, u16, Vec<u8>)> {
    let mut h = [0u8; 8];
    s.read_exact(&mut h).ok()?;
    let len = u16::from_be_bytes([h[4], h[5]]) as usize;
    let mut content = vec![0u8; len + h[6] as usize];
    s.read_exact(&mut content).ok()?;
    content.truncate(len);
    Some((h[1], u16::from_be_bytes([h[2], h[3]]), content))
}

fn decode_params(mut b: &[u8]) -> Vec<(String, String)> {
    fn len(b: &mut &[u8]) -> usize {
        if b[0] & 0x80 == 0 {
            let n = b[0] as usize;
            *b = &b[1..];
            n
        } else {
            let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
            *b = &b[4..];
            n
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let n = len(&mut b);
        let v = len(&mut b);
        out.push((
            String::from_utf8_lossy(&b[..n]).into_owned(),
            String::from_utf8_lossy(&b[n..n + v]).into_owned(),
        ));
        b = &b[n + v..];
    }
    out
}

impl FakeApp {
    fn start() -> FakeApp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let app = FakeApp {
            addr: l.local_addr().unwrap().to_string(),
            log: Arc::default(),
            stop: Arc::default(),
        };
        let (log, stop) = (app.log.clone(), app.stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                match l.accept() {
                    Ok((s, _)) => {
                        n += 1;
                        s.set_nonblocking(false).unwrap();
                        let log = log.clone();
                        std::thread::spawn(move || serve(s, n, log));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        app
    }

    fn reqs(&self) -> Vec<FcgiReq> {
        self.log.lock().unwrap().reqs.clone()
    }
}

impl Drop for FakeApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut s: TcpStream, conn: usize, log: Arc<Mutex<FakeLog>>) {
    let out = Arc::new(Mutex::new(s.try_clone().unwrap()));
    let write = |b: &[u8]| out.lock().unwrap().write_all(b).is_ok();
    let mut cur = FcgiReq::default();
    let mut raw_params = Vec::new();
    let mut streaming: Option<(usize, Arc<AtomicBool>)> = None;
    loop {
        let Some((t, id, content)) = read_record(&mut s) else {
            if let Some((_, done)) = &streaming {
                done.store(true, Ordering::SeqCst);
            }
            log.lock().unwrap().closed.push((conn, Instant::now()));
            return;
        };
        match t {
            BEGIN_REQUEST => {
                cur = FcgiReq {
                    conn,
                    flags: content[2],
                    ..Default::default()
                };
                raw_params.clear();
            }
            PARAMS if !content.is_empty() => raw_params.extend_from_slice(&content),
            PARAMS => cur.params = decode_params(&raw_params),
            STDIN if !content.is_empty() => cur.stdin.extend_from_slice(&content),
            STDIN => {
                let req = std::mem::take(&mut cur);
                let keep = req.flags & 1 != 0;
                let script = req.param("SCRIPT_NAME").unwrap_or("").to_string();
                let idx = {
                    let mut l = log.lock().unwrap();
                    l.reqs.push(req.clone());
                    l.reqs.len() - 1
                };
                if script.ends_with("/overload") {
                    write(&end_request(id, 2));
                } else if script.ends_with("/malformed") {
                    write(&record(STDOUT, id, b"this line has no colon\r\n\r\nbody"));
                    write(&record(STDOUT, id, b""));
                    write(&end_request(id, 0));
                } else if let Some(raw) = RAW_ANSWERS
                    .iter()
                    .find(|(name, _)| script.ends_with(name))
                    .map(|(_, a)| *a)
                {
                    write(&record(STDOUT, id, raw));
                    write(&record(STDOUT, id, b""));
                    write(&record(7, id, b"a byte \xff that is not UTF-8\n"));
                    write(&end_request(id, 0));
                } else if script.ends_with("/localredirect") {
                    write(&record(STDOUT, id, b"Location: /files/report.txt\r\n\r\n"));
                    write(&record(STDOUT, id, b""));
                    write(&end_request(id, 0));
                } else if script.ends_with("/stream") {
                    write(&record(STDOUT, id, b"Content-Type: text/plain\r\n\r\n"));
                    let done = Arc::new(AtomicBool::new(false));
                    let (out, done2) = (out.clone(), done.clone());
                    std::thread::spawn(move || {
                        for _ in 0..100 {
                            if done2.load(Ordering::SeqCst) {
                                return;
                            }
                            let ok = out
                                .lock()
                                .unwrap()
                                .write_all(&record(STDOUT, id, &[b'.'; 1000]))
                                .is_ok();
                            if !ok {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
                    streaming = Some((idx, done));
                    continue;
                } else {
                    let body = format!("Content-Type: text/plain\r\n\r\nconn={conn} flags={}\n", req.flags);
                    write(&record(STDOUT, id, body.as_bytes()));
                    write(&record(STDOUT, id, b""));
                    write(&end_request(id, 0));
                }
                // A recycled php-fpm child: shuts its side, reads until ours closes.
                if keep && script.ends_with("/shutafter") {
                    let _ = s.shutdown(std::net::Shutdown::Write);
                    while read_record(&mut s).is_some() {}
                    log.lock().unwrap().closed.push((conn, Instant::now()));
                    return;
                }
                // An application that closes a kept connection once idle
                // (a recycled process, its own idle timeout).
                if !keep || script.ends_with("/closeafter") {
                    if keep {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    log.lock().unwrap().closed.push((conn, Instant::now()));
                    return;
                }
            }
            ABORT_REQUEST => {
                if let Some((idx, done)) = streaming.take() {
                    done.store(true, Ordering::SeqCst);
                    log.lock().unwrap().reqs[idx].aborted = true;
                    write(&record(STDOUT, id, b""));
                    write(&end_request(id, 0));
                }
            }
            _ => {}
        }
    }
}

/// Answers written as they are, by the end of SCRIPT_NAME.
const RAW_ANSWERS: [(&str, &[u8]); 4] = [
    (
        "/latin1",
        b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=\"r\xe9sum\xe9.txt\"\r\n\r\nok\n",
    ),
    ("/bare201", b"Status: 201\r\nContent-Type: text/plain\r\n\r\nmade\n"),
    ("/netpath", b"Location: //elsewhere.example/x\r\n\r\n"),
    ("/noheaders", b"X-Only: 1\r\n\r\nplain\n"),
];

fn fake_server(app: &FakeApp, locations: &str, more: &str) -> Server {
    let (dir, root) = site();
    let o = Opts {
        server: locations.replace("ADDR", &app.addr),
        more: more.replace("ADDR", &app.addr),
        ..Default::default()
    };
    Server::with_root(o, dir, root)
}

#[test]
fn the_params_sent_exactly() {
    let app = FakeApp::start();
    let srv = fake_server(
        &app,
        r#"
[[server.location]]
match = "~ \\.php(/|$)"
fastcgi = { pass = "ADDR", check_file = false, split_path_info = "^(.+?\\.php)(/.*)$" }

[[server.location]]
match = "^~ /custom/"
fastcgi = { pass = "ADDR", check_file = false, params = { APP_ENV = "staging", SERVER_SOFTWARE = "", SERVER_NAME = "app.example" } }
"#,
        "",
    );
    let root = srv.root.display().to_string();
    let r = srv.request(
        "GET /dir/script.php/extra/p%20q?x=1&y=%20 HTTP/1.1\r\nHost: example.test\r\nX-Custom: c\r\n\
         Proxy: http://evil.example/\r\nX_Under: u\r\nCookie: a=1\r\nCookie: b=2\r\nX-Multi: one\r\n\
         X-Multi: two\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert!(r.text().starts_with("conn="), "{}", r.text());
    let r = srv.request(
        "POST /plain.php HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\
         Connection: close\r\n\r\nhello world",
    );
    assert_eq!(r.status, 200);
    assert_eq!(srv.get("/custom/thing").status, 200);
    let reqs = app.reqs();
    assert_eq!(reqs.len(), 3);

    let p = &reqs[0];
    let port = srv.port.to_string();
    for (k, want) in [
        ("REQUEST_METHOD", "GET"),
        ("QUERY_STRING", "x=1&y=%20"),
        ("REQUEST_URI", "/dir/script.php/extra/p%20q?x=1&y=%20"),
        ("SCRIPT_NAME", "/dir/script.php"),
        ("SCRIPT_FILENAME", &format!("{root}/dir/script.php")),
        ("PATH_INFO", "/extra/p q"),
        ("PATH_TRANSLATED", &format!("{root}/extra/p q")),
        ("DOCUMENT_URI", "/dir/script.php/extra/p q"),
        ("DOCUMENT_ROOT", &root),
        ("SERVER_PROTOCOL", "HTTP/1.1"),
        ("REQUEST_SCHEME", "http"),
        ("GATEWAY_INTERFACE", "CGI/1.1"),
        ("REDIRECT_STATUS", "200"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_ADDR", "127.0.0.1"),
        ("SERVER_PORT", &port),
        ("HTTP_HOST", "example.test"),
        ("HTTP_X_CUSTOM", "c"),
        ("HTTP_COOKIE", "a=1; b=2"),
        ("HTTP_X_MULTI", "one, two"),
    ] {
        assert_eq!(p.param(k), Some(want), "{k} in {:?}", p.params);
    }
    assert!(
        p.param("HTTP_PROXY").is_none() && p.param("HTTP_X_UNDER").is_none(),
        "{:?}",
        p.params
    );
    assert!(p.param("SERVER_SOFTWARE").is_some_and(|s| s.starts_with("corral/")));
    assert!(
        p.param("REMOTE_PORT")
            .and_then(|s| s.parse::<u16>().ok())
            .is_some_and(|n| n > 0)
    );
    assert!(p.param("SERVER_NAME").is_some());
    let names: HashSet<&str> = p.params.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), p.params.len(), "a param sent twice: {:?}", p.params);
    assert_eq!(p.flags & 1, 1, "FCGI_KEEP_CONN by default");

    let p = &reqs[1];
    for (k, want) in [
        ("REQUEST_METHOD", "POST"),
        ("CONTENT_LENGTH", "11"),
        ("CONTENT_TYPE", "text/plain"),
        ("SCRIPT_NAME", "/plain.php"),
    ] {
        assert_eq!(p.param(k), Some(want), "{k} in {:?}", p.params);
    }
    assert_eq!(p.stdin, b"hello world");
    assert_eq!(p.param("PATH_INFO").unwrap_or(""), "");
    assert!(
        p.param("PATH_TRANSLATED").is_none(),
        "only with a PATH_INFO: {:?}",
        p.params
    );
    assert!(p.param("HTTP_CONTENT_LENGTH").is_none() && p.param("HTTP_CONTENT_TYPE").is_none());

    let p = &reqs[2];
    assert_eq!(p.param("APP_ENV"), Some("staging"));
    assert_eq!(p.param("SERVER_NAME"), Some("app.example"));
    assert!(
        p.param("SERVER_SOFTWARE").is_none(),
        "an empty value removes it: {:?}",
        p.params
    );
    assert_eq!(p.param("SCRIPT_NAME"), Some("/custom/thing"));
}

#[test]
fn kept_connections_and_keep_conn_false() {
    let app = FakeApp::start();
    let short = FakeApp::start();
    let srv = fake_server(
        &app,
        "[[server.location]]\nmatch = \"^~ /kept/\"\nfastcgi = { pass = \"ADDR\", check_file = false }\n\
         [[server.location]]\nmatch = \"^~ /fresh/\"\nfastcgi = { pass = \"ADDR\", check_file = false, keep_conn = false }\n\
         [[server.location]]\nmatch = \"^~ /short/\"\nfastcgi = { pass = \"short\", check_file = false }\n",
        &format!(
            "[upstream.short]\nkeepalive_timeout = \"500ms\"\nservers = [\"{}\"]\n",
            short.addr
        ),
    );
    // One client connection: one corral worker.
    let mut c = Conn::open(srv.port);
    for i in 0..10 {
        let r = c.get(&format!("/kept/{i}")).unwrap();
        assert_eq!(r.status, 200, "{}", srv.error_log());
    }
    for i in 0..10 {
        let r = c.get(&format!("/fresh/{i}")).unwrap();
        assert_eq!(r.status, 200, "{}", srv.error_log());
    }
    let reqs = app.reqs();
    let kept: Vec<&FcgiReq> = reqs
        .iter()
        .filter(|r| r.param("SCRIPT_NAME").unwrap().starts_with("/kept/"))
        .collect();
    let fresh: Vec<&FcgiReq> = reqs
        .iter()
        .filter(|r| r.param("SCRIPT_NAME").unwrap().starts_with("/fresh/"))
        .collect();
    assert_eq!((kept.len(), fresh.len()), (10, 10));
    assert!(kept.iter().all(|r| r.flags & 1 == 1));
    let conns: HashSet<usize> = kept.iter().map(|r| r.conn).collect();
    assert_eq!(conns.len(), 1, "10 requests in a row reuse one connection");
    assert!(
        fresh.iter().all(|r| r.flags & 1 == 0),
        "keep_conn = false: no FCGI_KEEP_CONN"
    );
    let conns: HashSet<usize> = fresh.iter().map(|r| r.conn).collect();
    assert_eq!(conns.len(), 10);

    // keepalive_timeout = 500ms: the idle kept connection is closed by corral.
    let r = c.get("/short/x").unwrap();
    let done = Instant::now();
    assert_eq!(r.status, 200);
    assert!(
        eventually(Duration::from_secs(3), || !short.log.lock().unwrap().closed.is_empty()),
        "the idle connection was not closed"
    );
    let closed_at = short.log.lock().unwrap().closed[0].1;
    assert!(
        closed_at.duration_since(done) >= Duration::from_millis(300),
        "closed after {:?}, before keepalive_timeout",
        closed_at.duration_since(done)
    );
}

/// The application closed a kept connection, or shut its side as a
/// recycled php-fpm child does (seen by its event, while idle or with the
/// answer): the next request goes on a new one, even a POST, which is
/// never resent after a failure that may have run it.
#[test]
fn a_kept_connection_the_application_closed_is_not_reused() {
    let app = FakeApp::start();
    let srv = fake_server(
        &app,
        "[[server.location]]\nmatch = \"^~ /kept/\"\nfastcgi = { pass = \"ADDR\", check_file = false }\n",
        "",
    );
    let mut c = Conn::open(srv.port);
    for round in 0..6 {
        let how = if round % 2 == 0 { "closeafter" } else { "shutafter" };
        let closed = app.log.lock().unwrap().closed.len();
        let r = c.get(&format!("/kept/{round}/{how}")).unwrap();
        assert_eq!(r.status, 200, "{}", srv.error_log());
        assert!(
            eventually(Duration::from_secs(3), || app.log.lock().unwrap().closed.len() > closed),
            "round {round}: the application did not close\n{}",
            srv.error_log()
        );
        std::thread::sleep(Duration::from_millis(100));
        c.send(&format!(
            "POST /kept/{round}/form HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\na=b"
        ))
        .unwrap();
        let r = c.read(false).unwrap();
        assert_eq!(r.status, 200, "round {round}: {}", srv.error_log());
    }
    let reqs = app.reqs();
    let posts: Vec<&FcgiReq> = reqs
        .iter()
        .filter(|r| r.param("SCRIPT_NAME").unwrap().ends_with("/form"))
        .collect();
    assert_eq!(posts.len(), 6, "each POST reached the application once");
    assert!(posts.iter().all(|p| p.stdin == b"a=b"));
    assert!(!srv.error_log().contains("FastCGI server"), "{}", srv.error_log());
}

#[test]
fn overloaded_malformed_and_local_redirect_answers() {
    let app = FakeApp::start();
    let srv = fake_server(
        &app,
        "[[server.location]]\nmatch = \"^~ /x/\"\nfastcgi = { pass = \"ADDR\", check_file = false }\n",
        "",
    );
    assert_eq!(srv.get("/x/overload").status, 503, "FCGI_OVERLOADED");
    assert!(log_has(&srv, &["overloaded"]), "{}", srv.error_log());
    assert_eq!(srv.get("/x/malformed").status, 502);
    assert!(log_has(&srv, &["malformed"]), "{}", srv.error_log());
    // CGI's local redirect: a Location path without a Status is served internally.
    let r = srv.get("/x/localredirect");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "static report\n"),
        "{}",
        srv.error_log()
    );
    let r = srv.get("/x/fine");
    assert_eq!(r.status, 200);
    assert!(r.text().starts_with("conn="));
    // A header value that is not UTF-8 (a Latin-1 file name) passes as sent.
    let out = srv.raw(b"GET /x/latin1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(out.starts_with(b"HTTP/1.1 200 "), "{}", String::from_utf8_lossy(&out));
    assert!(
        find(
            &out,
            b"Content-Disposition: attachment; filename=\"r\xe9sum\xe9.txt\"\r\n"
        )
        .is_some(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A bare status code gets its reason phrase.
    let out = srv.raw(b"GET /x/bare201 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(
        out.starts_with(b"HTTP/1.1 201 Created\r\n"),
        "{}",
        String::from_utf8_lossy(&out)
    );
    // `//host/x` is a network path, not a local redirect: the client gets it.
    let r = srv.get("/x/netpath");
    assert_eq!((r.status, r.header("location")), (302, Some("//elsewhere.example/x")));
    // No Status, Location or Content-Type: a 200 as behind nginx, not a 502.
    let r = srv.get("/x/noheaders");
    assert_eq!((r.status, r.text().as_str()), (200, "plain\n"));
    // stderr bytes that are not UTF-8 are logged as \xFF.
    assert!(
        log_has(&srv, &["a byte \\xFF that is not UTF-8"]),
        "{}",
        srv.error_log()
    );
}

#[test]
fn a_client_that_leaves_gets_its_request_aborted() {
    let app = FakeApp::start();
    let srv = fake_server(
        &app,
        "[[server.location]]\nmatch = \"^~ /x/\"\nfastcgi = { pass = \"ADDR\", check_file = false }\n",
        "",
    );
    {
        let mut s = srv.connect();
        s.write_all(b"GET /x/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < 2500 {
            let n = s.read_retry(&mut buf).unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got.starts_with(b"HTTP/1.1 200"));
    }
    let aborted = eventually(Duration::from_secs(3), || app.reqs().first().is_some_and(|r| r.aborted));
    assert!(aborted, "no FCGI_ABORT_REQUEST: {:?}", app.log.lock().unwrap().closed);
}

// ---------------------------------------------------------------------------
// corral -t

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = TempDir::new();
    let conf = dir.path().join("c.toml");
    let check = |location: &str, more: &str| {
        std::fs::write(
            &conf,
            format!(
                "[[server]]\nlisten = \"127.0.0.1:1\"\nroot = \"{}\"\n\n[[server.location]]\nmatch = \"~ \\\\.php$\"\n{location}\n{more}",
                dir.path().display()
            ),
        )
        .unwrap();
        run_corral(&["-t", "-c", conf.to_str().unwrap()])
    };
    for (location, more, line, words) in [
        (
            "fastcgi = { pass = \"nosuchgroup\" }",
            "",
            7,
            &["fastcgi", "pass", "nosuchgroup"][..],
        ),
        (
            "fastcgi = { pass = \"unix:/x.sock\", split_path_info = \"^(.+\\\\.php(/.*)$\" }",
            "",
            7,
            &["fastcgi", "split_path_info"],
        ),
        (
            "fastcgi = { pass = \"unix:/x.sock\", split_path_info = \"^(.+)$\" }",
            "",
            7,
            &["split_path_info", "two groups"],
        ),
        (
            "fastcgi = { index = \"index.php\" }",
            "",
            7,
            &["fastcgi", "pass", "required"],
        ),
        (
            "fastcgi = { pass = \"unix:/x.sock\", read_timeout = \"soon\" }",
            "",
            7,
            &["read_timeout"],
        ),
        (
            "fastcgi = { pass = \"unix:/x.sock\" }\nreturn = \"200 x\"",
            "",
            8,
            &["content handler"],
        ),
        (
            "fastcgi = { pass = \"app\" }",
            "[upstream.app]\nservers = []\n",
            9,
            &["upstream.app", "servers"],
        ),
        (
            "fastcgi = { pass = \"app\" }",
            "[upstream.app]\nbalance = \"random\"\nservers = [\"unix:/a.sock\"]\n",
            9,
            &["upstream.app", "balance"],
        ),
    ] {
        let (code, out) = check(location, more);
        assert_ne!(code, 0, "{location} {more}: {out}");
        assert!(
            out.contains(&format!("c.toml:{line}")),
            "line {line} for {location} {more}: {out}"
        );
        for w in words {
            assert!(out.contains(w), "{w:?} for {location} {more}: {out}");
        }
    }
    // Every key, valid: the test passes.
    let (code, out) = check(
        "fastcgi = { pass = \"app\", split_path_info = \"^(.+?\\\\.php)(/.*)$\", index = \"main.php\", \
         params = { A = \"b\", SERVER_SOFTWARE = \"\" }, check_file = false, connect_timeout = \"2s\", \
         send_timeout = \"3s\", read_timeout = \"4s\", header_limit = \"32k\", keep_conn = false, \
         x_accel_redirect = false, x_sendfile = true, next_upstream = [\"error\", \"timeout\", \"http_503\"] }",
        "[upstream.app]\nbalance = \"least_conn\"\nkeepalive = 2\nkeepalive_timeout = \"5s\"\nmax_conns = 4\n\
         queue_timeout = \"2s\"\nservers = [{ address = \"unix:/run/a.sock\", weight = 3 }, \
         { address = \"127.0.0.1:9001\", max_fails = 2, fail_timeout = \"5s\" }, \
         { address = \"[::1]:9002\", backup = true }, \"127.0.0.1:9003\"]\n",
    );
    assert_eq!(code, 0, "{out}");
}

/// `gzip = true` compresses an application's output on its way (nginx's
/// gzip filter on fastcgi_pass), still piece by piece as it is flushed,
/// for clients that accept it; others get it as it is, with Vary.
#[test]
fn gzip_compresses_application_output_as_it_streams() {
    let (dir, root) = site();
    let fpm = Php::fpm(dir.path(), "www", &sock(&dir, "www"), 2, "");
    let pass = fpm.pass.clone();
    let srv = php_server(
        dir,
        root,
        &pass,
        "",
        Opts {
            server: "gzip = true\n".into(),
            ..Opts::default()
        },
    );
    let mut s = srv.connect();
    let start = Instant::now();
    s.write_all(b"GET /slow.php HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first_body = None;
    loop {
        match s.read_retry(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if first_body.is_none() && find(&got, b"\r\n\r\n").is_some_and(|h| got.len() > h + 4) {
                    first_body = Some(start.elapsed());
                }
            }
        }
    }
    let total = start.elapsed();
    let r = parse_responses(&got, false).remove(0);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain).unwrap();
    assert_eq!(plain, "piece-1\npiece-2\npiece-3\npiece-4\n");
    let first = first_body.unwrap();
    assert!(
        first < Duration::from_millis(700) && first + Duration::from_millis(500) < total,
        "compressed output was held back: first body bytes at {first:?}, the end at {total:?}"
    );
    // Compressed, an entity-tag becomes weak; a value that is none
    // (WordPress's `Etag: 6.1.9`) cannot, and is dropped.
    std::fs::write(
        srv.root.join("etag.php"),
        "<?php header('ETag: ' . $_GET['t']); echo str_repeat('text ', 100);",
    )
    .unwrap();
    for (tag, want) in [
        ("%226.1%22", Some("W/\"6.1\"")),
        ("W/%22w%22", Some("W/\"w\"")),
        ("6.1.9", None),
    ] {
        let r = srv.request(&format!(
            "GET /etag.php?t={tag} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(
            (r.header("content-encoding"), r.header("etag")),
            (Some("gzip"), want),
            "{tag}"
        );
    }
    // An application's 404 and 403 pages are compressed too (nginx's
    // statuses), a 500 not.
    std::fs::write(
        srv.root.join("code.php"),
        "<?php http_response_code((int) $_GET['c']); echo str_repeat('not here ', 200);",
    )
    .unwrap();
    for (code, gz) in [(404, Some("gzip")), (403, Some("gzip")), (500, None)] {
        let r = srv.request(&format!(
            "GET /code.php?c={code} HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!((r.status, r.header("content-encoding")), (code, gz));
    }
    // Without Accept-Encoding: as the script wrote it, with Vary.
    let r = srv.get("/slow.php");
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, Some("Accept-Encoding"))
    );
    assert_eq!(r.text(), "piece-1\npiece-2\npiece-3\npiece-4\n");
    // HTTP/1.0: compressed, delimited by the close.
    let r = srv.request("GET /slow.php HTTP/1.0\r\nAccept-Encoding: gzip\r\n\r\n");
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    let mut plain = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&r.body[..]), &mut plain).unwrap();
    assert_eq!(plain, "piece-1\npiece-2\npiece-3\npiece-4\n");
    // Not a gzip_types type (application/octet-stream): as it is.
    let r = srv.request("HEAD /big.php HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n");
    assert_eq!(r.header("content-encoding"), None);
    drop(fpm);
}

/// A Python FastCGI server of a test, killed however the test ends.
struct PyApp(std::process::Child);

impl Drop for PyApp {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A site whose PHP location passes, without checking files, to the
/// Python FastCGI server `script` (see `fcgi_py`), started on a unix
/// socket of its own named `name`.
fn python_app_site(name: &str, script: String) -> (PyApp, Server) {
    let (dir, root) = site();
    let path = dir.path().join(format!("{name}.sock"));
    let file = dir.path().join(format!("{name}.py"));
    std::fs::write(&file, script).unwrap();
    let app = PyApp(
        Command::new("python3")
            .arg(&file)
            .arg(&path)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    assert!(eventually(Duration::from_secs(5), || path.exists()));
    let pass = format!("unix:{}", path.display());
    (
        app,
        php_server(dir, root, &pass, ", check_file = false", Opts::default()),
    )
}

/// A FastCGI server on the unix socket named by its argument that answers
/// with the body `x` sent as 2,000 one-byte STDOUT records in one write.
fn tiny_records() -> String {
    fcgi_py(
        "ls = socket.socket(socket.AF_UNIX)\nls.bind(sys.argv[1])\nls.listen(8)",
        "out = rec(6, rid, b'Content-Type: text/plain\\r\\n\\r\\n')\n\
         out += b''.join(rec(6, rid, b'x') for _ in range(2000))\n\
         c.sendall(out + rec(6, rid, b'') + rec(3, rid, b'\\0' * 8))",
    )
}

/// Small STDOUT records read together leave as one chunk, not one each
/// (2,000 one-byte records were 2,000 chunks: six times the bytes).
#[test]
fn tiny_records_are_framed_together() {
    let (_app, srv) = python_app_site("tiny", tiny_records());
    let mut c = srv.connect();
    c.write_all(b"GET /x.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let raw = read_to_close(&mut c);
    let rs = parse_responses(&raw, false);
    assert_eq!(rs.len(), 1, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(rs[0].body, vec![b'x'; 2000]);
    // 2,000 bytes of body, a few chunk lines around them.
    assert!(raw.len() < 2600, "{} bytes on the wire", raw.len());
}

/// A FastCGI server on the unix socket named by its argument that sends a
/// stray STDOUT record for another request id before each answer; the
/// body says which of its connections (1, 2, ...) the request came on.
fn stray_records() -> String {
    fcgi_py(
        "ls = socket.socket(socket.AF_UNIX)\nls.bind(sys.argv[1])\nls.listen(8)\nseen = []",
        "if c not in seen:\n    seen.append(c)\n\
         out = rec(6, rid + 1, b'Content-Type: text/html\\r\\n\\r\\nnot yours')\n\
         out += rec(6, rid, b'Content-Type: text/plain\\r\\n\\r\\nconn %d' % len(seen))\n\
         c.sendall(out + rec(6, rid, b'') + rec(3, rid, b'\\0' * 8))",
    )
}

/// Records for a request id corral did not send are no part of the answer:
/// dropped, logged once, and the connection is not kept.
#[test]
fn records_for_another_request_id_are_dropped_and_end_the_connection() {
    let (_app, srv) = python_app_site("stray", stray_records());
    for n in 1..=2 {
        let r = srv.get("/x.php");
        assert_eq!((r.status, r.text()), (200, format!("conn {n}")), "{}", srv.error_log());
    }
    assert!(
        srv.error_log().matches("sent a record for request id 2, not 1").count() == 2,
        "{}",
        srv.error_log()
    );
}

/// A site, a directory `other` beside its root holding `env.php` and
/// `sub/index.php` (for `alias`), and a php-fpm pool.
fn outside_scripts() -> (TempDir, PathBuf, PathBuf, Php) {
    let (dir, root) = site();
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("sub")).unwrap();
    std::fs::write(other.join("env.php"), ENV).unwrap();
    std::fs::write(other.join("sub/index.php"), ENV).unwrap();
    let fpm = Php::fpm(dir.path(), "www", &sock(&dir, "www"), 2, "");
    (dir, root, other, fpm)
}

/// `alias` in a FastCGI location: the script is the aliased file
/// (nginx's `$request_filename`), SCRIPT_NAME stays the URI's.
#[test]
fn alias_in_a_fastcgi_location() {
    let (dir, root, other, fpm) = outside_scripts();
    let extra = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"^~ /fpa/\"\nalias = \"{o}/\"\nfastcgi = {{ pass = \"{p}\", split_path_info = \"^(.+?\\\\.php)(/.*)$\" }}\n",
            o = other.display(),
            p = fpm.pass
        ),
        ..Opts::default()
    };
    let srv = php_server(dir, root, &fpm.pass, "", extra);
    let r = srv.get("/fpa/env.php/more?x=1");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let v = vars(&r.text());
    let want = other.join("env.php").display().to_string();
    assert_eq!(get(&v, "S.SCRIPT_FILENAME"), Some(want.as_str()));
    assert_eq!(get(&v, "S.SCRIPT_NAME"), Some("/fpa/env.php"));
    assert_eq!(get(&v, "S.PATH_INFO"), Some("/more"));
    let r = srv.get("/fpa/sub/");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let want = other.join("sub/index.php").display().to_string();
    assert_eq!(get(&vars(&r.text()), "S.SCRIPT_FILENAME"), Some(want.as_str()));
    assert_eq!(srv.get("/fpa/missing.php").status, 404);
}

/// A static `alias` location's index is an internal redirect, as under
/// `root` (and nginx): the PHP location runs it. Its source was sent.
#[test]
fn the_index_of_an_alias_location_runs_through_the_php_location() {
    let (dir, root, other, fpm) = outside_scripts();
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"~ ^/app/(.+\\\\.php)$\"\nalias = \"{o}/$1\"\nfastcgi = {{ pass = \"{p}\" }}\n\
             [[server.location]]\nmatch = \"/app/\"\nalias = \"{o}/\"\nindex = [\"env.php\", \"index.php\"]\n",
            o = other.display(),
            p = fpm.pass
        ),
        ..Opts::default()
    };
    let srv = Server::with_root(o, dir, root);
    for uri in ["/app/", "/app/?q=1", "/app/sub/"] {
        let r = srv.get(uri);
        assert_eq!(r.status, 200, "{uri} {}", srv.error_log());
        assert!(!r.text().contains("<?php"), "{uri}: the source was sent: {}", r.text());
        let want = if uri.contains("sub") {
            "sub/index.php"
        } else {
            "env.php"
        };
        let want = other.join(want).display().to_string();
        let v = vars(&r.text());
        assert_eq!(get(&v, "S.SCRIPT_FILENAME"), Some(want.as_str()), "{uri}");
    }
}
