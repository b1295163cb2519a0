//! FastCGI through the real binary, with real application servers: Debian's
//! php-fpm (unix socket and TCP) and `php-cgi -b`, started by each test in
//! its own temporary directory.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::php::Php;
use common::*;

const ENV: &str = r#"<?php
header('Content-Type: text/plain');
foreach (['REQUEST_METHOD','QUERY_STRING','REQUEST_URI','SCRIPT_NAME','SCRIPT_FILENAME','PATH_INFO',
          'PATH_TRANSLATED','DOCUMENT_ROOT','DOCUMENT_URI','SERVER_PORT','SERVER_PROTOCOL','REMOTE_ADDR',
          'HTTP_X_CUSTOM','HTTP_PROXY','CONTENT_LENGTH','CONTENT_TYPE','GATEWAY_INTERFACE','REDIRECT_STATUS',
          'APP_ENV','POOL'] as $k) {
    echo $k, '=', $_SERVER[$k] ?? '(unset)', "\n";
}
foreach ($_GET as $k => $v) { echo "GET:$k=$v\n"; }
foreach ($_POST as $k => $v) { echo "POST:$k=$v\n"; }
"#;

const INPUT: &str = r#"<?php
$b = file_get_contents('php://input');
echo strlen($b), ' ', hash('sha256', $b), ' ', $_SERVER['CONTENT_LENGTH'] ?? '-', "\n";
"#;

const UPLOAD: &str = r#"<?php
$f = $_FILES['f'] ?? null;
if (!$f || $f['error'] !== 0) { http_response_code(400); echo 'upload error ', $f['error'] ?? 'none'; exit; }
echo $f['size'], ' ', hash_file('sha256', $f['tmp_name']), ' ', $_POST['note'] ?? '', "\n";
"#;

const HEADERS: &str = r#"<?php
setcookie('a', '1'); setcookie('b', '2'); setcookie('c', '3');
header('X-Custom: yes');
http_response_code((int)($_GET['code'] ?? 200));
echo "body\n";
"#;

const BIG: &str = r#"<?php
header('Content-Type: application/octet-stream');
$chunk = str_repeat('0123456789abcdef', 65536);
for ($i = 0; $i < 10; $i++) { echo $chunk; }
"#;

const SLOW: &str = r#"<?php
for ($i = 0; $i < 4; $i++) { echo "piece $i\n"; flush(); usleep(300000); }
"#;

const BIG_HEADER: &str = r#"<?php
header('X-Big: ' . str_repeat('a', 16384));
echo "ok\n";
"#;

const DIES: &str = r#"<?php
header('Content-Length: 1000000');
echo str_repeat('x', 100000);
flush();
posix_kill(getmypid(), 9);
"#;

const DIES_CHUNKED: &str = r#"<?php
echo str_repeat('y', 100000);
flush();
posix_kill(getmypid(), 9);
"#;

const ACCEL: &str = r#"<?php
header('X-Accel-Redirect: /protected/secret.txt');
header('Content-Disposition: attachment; filename="secret.txt"');
echo "the app's own body, never sent\n";
"#;

const ACCEL_PHP: &str = r#"<?php
header('Set-Cookie: carried=1');
header('X-Accel-Redirect: /env.php?via=accel');
echo "never sent\n";
"#;

const STDERR: &str = r#"<?php
error_log('marker-from-php-' . $_GET['n']);
echo "logged\n";
"#;

/// Appends the POSTed id to a log next to the root, then answers
/// (`charge.php`) or kills its own process (`charge_dies.php`).
const CHARGE: &str = r#"<?php
file_put_contents(__DIR__ . '/../charges.log', ($_POST['id'] ?? '-') . "\n", FILE_APPEND | LOCK_EX);
echo "charged\n";
"#;
const CHARGE_DIES: &str = r#"<?php
file_put_contents(__DIR__ . '/../charges.log', ($_POST['id'] ?? '-') . "\n", FILE_APPEND | LOCK_EX);
posix_kill(getmypid(), 9);
"#;

const SLEEP: &str = r#"<?php usleep((int)($_GET['ms'] ?? 300) * 1000); echo "slept\n";"#;

const HELLO: &str = r#"<?php echo 'hello from ', $_SERVER['POOL'] ?? 'php', "\n";"#;

/// A site root holding every script.
fn site(dir: &Path) -> PathBuf {
    let root = dir.join("www");
    std::fs::create_dir_all(root.join("protected")).unwrap();
    for (name, body) in [
        ("env.php", ENV),
        ("input.php", INPUT),
        ("upload.php", UPLOAD),
        ("headers.php", HEADERS),
        ("big.php", BIG),
        ("slow.php", SLOW),
        ("bighead.php", BIG_HEADER),
        ("dies.php", DIES),
        ("dies_chunked.php", DIES_CHUNKED),
        ("accel.php", ACCEL),
        ("accel_php.php", ACCEL_PHP),
        ("stderr.php", STDERR),
        ("index.php", ENV),
        ("hello.php", HELLO),
        ("sleep.php", SLEEP),
        ("charge.php", CHARGE),
        ("charge_dies.php", CHARGE_DIES),
    ] {
        std::fs::write(root.join(name), body).unwrap();
    }
    std::fs::write(root.join("protected/secret.txt"), "the secret file\n").unwrap();
    std::fs::write(root.join("style.css"), "body{}\n").unwrap();
    root
}

/// corral in front of `pass` with the usual PHP locations.
fn front(dir: TempDir, root: PathBuf, pass: &str, extra: &str) -> Server {
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"/\"\ntry_files = [\"$uri\", \"/index.php$is_args$args\"]\n\
             [[server.location]]\nmatch = \"/protected/\"\ninternal = true\n\
             [[server.location]]\nmatch = \"~ \\\\.php(/|$)\"\n\
             fastcgi = {{ pass = \"{pass}\", split_path_info = \"^(.+?\\\\.php)(/.*)$\", params = {{ APP_ENV = \"test\" }}{extra} }}\n"
        ),
        http: "client_max_body_size = \"16m\"\n".into(),
        ..Default::default()
    };
    Server::with_root(o, dir, root)
}

fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn sha256(data: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn fpm_site() -> (Php, Server) {
    fpm_site_with(2, "")
}

/// The PHP site on a php-fpm pool of `children`, with `pool_extra` in its config.
fn fpm_site_with(children: u32, pool_extra: &str) -> (Php, Server) {
    let dir = TempDir::new();
    let root = site(dir.path());
    let fpm = Php::fpm(
        dir.path(),
        "www",
        &dir.path().join("fpm.sock").display().to_string(),
        children,
        pool_extra,
    );
    let pass = fpm.pass.clone();
    (fpm, front(dir, root, &pass, ""))
}

#[test]
fn get_with_query_and_params() {
    let (_fpm, srv) = fpm_site();
    let r = srv.request(
        "GET /env.php?a=1&b=two HTTP/1.1\r\nHost: localhost\r\nX-Custom: hi\r\nProxy: http://evil.example/\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200, "{}", srv.error_log());
    let t = r.text();
    assert_eq!(field(&t, "REQUEST_METHOD"), Some("GET"));
    assert_eq!(field(&t, "QUERY_STRING"), Some("a=1&b=two"));
    assert_eq!(field(&t, "REQUEST_URI"), Some("/env.php?a=1&b=two"));
    assert_eq!(field(&t, "SCRIPT_NAME"), Some("/env.php"));
    let root = srv.root.display().to_string();
    assert_eq!(field(&t, "SCRIPT_FILENAME"), Some(format!("{root}/env.php").as_str()));
    assert_eq!(field(&t, "DOCUMENT_ROOT"), Some(root.as_str()));
    assert_eq!(field(&t, "SERVER_PORT"), Some(srv.port.to_string().as_str()));
    assert_eq!(field(&t, "REMOTE_ADDR"), Some("127.0.0.1"));
    assert_eq!(field(&t, "HTTP_X_CUSTOM"), Some("hi"));
    assert_eq!(
        field(&t, "HTTP_PROXY"),
        Some("(unset)"),
        "httpoxy: Proxy must not become HTTP_PROXY"
    );
    assert_eq!(field(&t, "APP_ENV"), Some("test"), "params from the location");
    assert_eq!(field(&t, "GATEWAY_INTERFACE"), Some("CGI/1.1"));
    assert!(t.contains("GET:a=1") && t.contains("GET:b=two"), "{t}");
    // The access log names the request and its status.
    assert!(
        eventually(Duration::from_secs(3), || srv
            .access_log()
            .contains("\"GET /env.php?a=1&b=two HTTP/1.1\" 200")),
        "{}",
        srv.access_log()
    );
}

#[test]
fn post_form_fields() {
    let (_fpm, srv) = fpm_site();
    let url = format!("http://127.0.0.1:{}/env.php", srv.port);
    let (ok, out) = curl(&["-d", "name=corral&lang=rust+%26+php", &url]);
    let t = String::from_utf8_lossy(&out);
    assert!(ok, "{}", srv.error_log());
    assert!(t.contains("POST:name=corral"), "{t}");
    assert!(t.contains("POST:lang=rust & php"), "{t}");
    assert_eq!(field(&t, "CONTENT_TYPE"), Some("application/x-www-form-urlencoded"));
    assert_eq!(field(&t, "CONTENT_LENGTH"), Some("29"));
}

#[test]
fn multipart_upload_of_5_mib() {
    let (_fpm, srv) = fpm_site();
    let data: Vec<u8> = (0..5 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let file = srv.dir.path().join("upload.bin");
    std::fs::write(&file, &data).unwrap();
    let url = format!("http://127.0.0.1:{}/upload.php", srv.port);
    let (ok, out) = curl(&["-F", &format!("f=@{}", file.display()), "-F", "note=hello", &url]);
    let t = String::from_utf8_lossy(&out);
    assert!(ok, "{}", srv.error_log());
    assert_eq!(
        t.trim(),
        format!("{} {} hello", data.len(), sha256(&data)),
        "{}",
        srv.error_log()
    );
}

#[test]
fn chunked_upload_is_given_a_length() {
    let (_fpm, srv) = fpm_site();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let file = srv.dir.path().join("chunked.bin");
    std::fs::write(&file, &data).unwrap();
    let url = format!("http://127.0.0.1:{}/input.php", srv.port);
    let (ok, out) = curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &url,
    ]);
    assert!(ok, "{}", srv.error_log());
    let t = String::from_utf8_lossy(&out);
    assert_eq!(t.trim(), format!("{n} {} {n}", sha256(&data), n = data.len()));
}

#[test]
fn cookies_headers_and_status() {
    let (_fpm, srv) = fpm_site();
    for code in [200u16, 201, 404, 418] {
        let r = srv.get(&format!("/headers.php?code={code}"));
        assert_eq!(r.status, code);
        let cookies: Vec<&str> = r
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(cookies, ["a=1", "b=2", "c=3"], "every Set-Cookie is kept, in order");
        assert_eq!(r.header("x-custom"), Some("yes"));
        assert_eq!(r.text(), "body\n");
    }
}

#[test]
fn ten_mib_response() {
    let (_fpm, srv) = fpm_site();
    let url = format!("http://127.0.0.1:{}/big.php", srv.port);
    let (ok, out) = curl(&[&url]);
    assert!(ok, "{}", srv.error_log());
    let want = "0123456789abcdef".repeat(65536 * 10);
    assert_eq!(out.len(), want.len());
    assert!(out == want.as_bytes());
    // HTTP/1.0: no chunking, the end of the body is the close.
    let (ok, out) = curl(&["--http1.0", &url]);
    assert!(ok && out.len() == want.len());
}

#[test]
fn slow_output_arrives_in_pieces() {
    let (_fpm, srv) = fpm_site();
    let mut s = srv.connect();
    let start = Instant::now();
    s.write_all(b"GET /slow.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    let mut first_piece = None;
    loop {
        match s.read_retry(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                if first_piece.is_none() && String::from_utf8_lossy(&got).contains("piece 0") {
                    first_piece = Some(start.elapsed());
                }
            }
        }
    }
    let total = start.elapsed();
    let text = String::from_utf8_lossy(&got);
    assert!(text.contains("piece 3"), "{text}");
    let first = first_piece.expect("piece 0 arrived");
    assert!(total >= Duration::from_millis(900), "{total:?}");
    assert!(
        first + Duration::from_millis(500) < total,
        "the first piece came at {first:?}, the end at {total:?}: output was held back"
    );
}

#[test]
fn sixteen_kib_response_header() {
    let (_fpm, srv) = fpm_site();
    let r = srv.get("/bighead.php");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert_eq!(r.header("x-big").map(str::len), Some(16384));
    assert_eq!(r.text(), "ok\n");
}

#[test]
fn header_larger_than_the_limit_is_a_502() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let fpm = Php::fpm(
        dir.path(),
        "www",
        &dir.path().join("fpm.sock").display().to_string(),
        2,
        "",
    );
    let srv = front(dir, root, &fpm.pass, ", header_limit = \"8k\"");
    assert_eq!(srv.get("/bighead.php").status, 502);
    assert!(
        eventually(Duration::from_secs(3), || srv
            .error_log()
            .contains("larger than header_limit")),
        "{}",
        srv.error_log()
    );
}

#[test]
fn a_script_that_dies_is_a_truncation() {
    let (_fpm, srv) = fpm_site();
    for path in ["/dies.php", "/dies_chunked.php"] {
        let all = srv.raw(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        let text = String::from_utf8_lossy(&all);
        assert!(
            text.starts_with("HTTP/1.1 200"),
            "{path}: {}",
            &text[..text.len().min(200)]
        );
        let body_at = text.find("\r\n\r\n").unwrap() + 4;
        if path == "/dies.php" {
            // A promised length that never comes: fewer bytes, then the close.
            assert!(all.len() - body_at < 1_000_000, "{path}");
        } else {
            assert!(text.contains("Transfer-Encoding: chunked"));
            assert!(!text.ends_with("0\r\n\r\n"), "{path}: the body must not end cleanly");
        }
        // curl sees the failure too.
        let url = format!("http://127.0.0.1:{}{path}", srv.port);
        let (ok, _) = curl(&[&url]);
        assert!(!ok, "{path}: curl must not see a complete response");
    }
}

#[test]
fn path_info_and_front_controller() {
    let (_fpm, srv) = fpm_site();
    let r = srv.get("/env.php/some/path?x=1");
    let t = r.text();
    assert_eq!(r.status, 200);
    assert_eq!(field(&t, "SCRIPT_NAME"), Some("/env.php"));
    assert_eq!(field(&t, "PATH_INFO"), Some("/some/path"));
    let translated = format!("{}/some/path", srv.root.display());
    assert_eq!(field(&t, "PATH_TRANSLATED"), Some(translated.as_str()));
    // No file: the front controller gets it, with the original URI.
    let r = srv.get("/blog/2024/hello?page=2");
    let t = r.text();
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert_eq!(field(&t, "SCRIPT_NAME"), Some("/index.php"));
    assert_eq!(field(&t, "REQUEST_URI"), Some("/blog/2024/hello?page=2"));
    assert!(t.contains("GET:page=2"), "{t}");
    // Static files stay static.
    let r = srv.get("/style.css");
    assert_eq!((r.status, r.text().as_str()), (200, "body{}\n"));
}

#[test]
fn path_info_survives_try_files() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let fpm = Php::fpm(
        dir.path(),
        "www",
        &dir.path().join("fpm.sock").display().to_string(),
        2,
        "",
    );
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"~ [^/]\\\\.php(/|$)\"\n\
             try_files = [\"$fastcgi_script_name\", \"=404\"]\n\
             fastcgi = {{ pass = \"{}\", split_path_info = \"^(.+?\\\\.php)(/.*)$\" }}\n",
            fpm.pass
        ),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    let r = srv.get("/env.php/a/b?q=1");
    let t = r.text();
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert_eq!(
        field(&t, "PATH_INFO"),
        Some("/a/b"),
        "nginx loses it here; corral must not"
    );
    assert_eq!(field(&t, "SCRIPT_NAME"), Some("/env.php"));
    assert_eq!(srv.get("/missing.php/a").status, 404);
}

#[test]
fn missing_script_is_corrals_404() {
    let (_fpm, srv) = fpm_site();
    let r = srv.get("/nope.php");
    assert_eq!(r.status, 404);
    let body = r.text();
    assert!(
        !body.contains("No input file specified") && !body.contains("File not found."),
        "{body}"
    );
    assert!(body.contains("404 Not Found"), "corral's own page: {body}");
    assert_eq!(srv.get("/nope.php/extra").status, 404);
}

#[test]
fn x_accel_redirect_serves_an_internal_location() {
    let (_fpm, srv) = fpm_site();
    let r = srv.get("/accel.php");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert_eq!(r.text(), "the secret file\n");
    assert_eq!(
        r.header("content-disposition"),
        Some("attachment; filename=\"secret.txt\"")
    );
    // The client's Range applies to the file, as in nginx.
    let r = srv.request("GET /accel.php HTTP/1.1\r\nHost: x\r\nRange: bytes=4-9\r\nConnection: close\r\n\r\n");
    assert_eq!((r.status, r.text().as_str()), (206, "secret"));
    // The internal location is not reachable from outside.
    assert_eq!(srv.get("/protected/secret.txt").status, 404);
    // To another script: it gets the client's headers, as a GET.
    for method in ["GET", "POST"] {
        let r = srv.request(&format!(
            "{method} /accel_php.php HTTP/1.1\r\nHost: x\r\nX-Custom: from-client\r\nContent-Length: 3\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nConnection: close\r\n\r\na=1"
        ));
        let t = r.text();
        assert_eq!(r.status, 200, "{t}");
        assert_eq!(field(&t, "HTTP_X_CUSTOM"), Some("from-client"), "{method}: {t}");
        assert_eq!(field(&t, "REQUEST_METHOD"), Some("GET"), "{t}");
        assert!(t.contains("GET:via=accel"), "{t}");
        assert!(!t.contains("POST:"), "the body is not passed on: {t}");
    }
}

/// Client-side TCP sockets to `port` the kernel knows (open or in
/// TIME-WAIT): each connection the front opened to php-fpm in the last
/// minute, whether kept or closed.
fn connections_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let want = format!("{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[2].rsplit(':').next() == Some(want.as_str())
        })
        .count()
}

#[test]
fn x_accel_redirect_keeps_the_fastcgi_connection() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let port = free_port();
    let fpm = Php::fpm(dir.path(), "www", &format!("127.0.0.1:{port}"), 2, "");
    let pass = fpm.pass.clone();
    let srv = front(dir, root, &pass, "");
    let before = connections_to(port);
    for i in 0..6 {
        let path = if i % 2 == 0 { "/accel.php" } else { "/accel_php.php" };
        let r = srv.get(path);
        assert_eq!(r.status, 200, "{path}: {}", srv.error_log());
        let t = r.text();
        assert!(t == "the secret file\n" || t.contains("GET:via=accel"), "{path}: {t}");
        if i % 2 == 1 {
            // The first script's cookie goes out with the second's answer.
            assert_eq!(r.header("set-cookie"), Some("carried=1"), "{path}");
        }
    }
    assert_eq!(srv.get("/env.php").status, 200);
    // Ten FastCGI requests (three redirected to another script) over the
    // kept connections of two workers: not one new connection per
    // X-Accel-Redirect.
    let opened = connections_to(port) - before;
    assert!(opened <= 2, "{opened} connections to php-fpm\n{}", srv.error_log());
}

#[test]
fn stderr_goes_to_the_error_log() {
    let (_fpm, srv) = fpm_site();
    let r = srv.get("/stderr.php?n=42");
    assert_eq!((r.status, r.text().as_str()), (200, "logged\n"));
    assert!(
        eventually(Duration::from_secs(3), || srv
            .error_log()
            .contains("marker-from-php-42")),
        "{}",
        srv.error_log()
    );
    let log = srv.error_log();
    let line = log.lines().find(|l| l.contains("marker-from-php-42")).unwrap();
    assert!(line.contains("/stderr.php"), "the line names the script: {line}");
}

#[test]
fn backend_down_is_a_502() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let missing = dir.path().join("nobody.sock");
    let closed_port = free_port();
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"/unix/\"\nfastcgi = {{ pass = \"unix:{}\", check_file = false }}\n\
             [[server.location]]\nmatch = \"/tcp/\"\nfastcgi = {{ pass = \"127.0.0.1:{closed_port}\", check_file = false }}\n",
            missing.display()
        ),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    assert_eq!(srv.get("/unix/x").status, 502);
    assert_eq!(srv.get("/tcp/x").status, 502);
    assert!(
        eventually(Duration::from_secs(3), || {
            let log = srv.error_log();
            log.contains(&format!("unix:{}", missing.display())) && log.contains(&format!("127.0.0.1:{closed_port}"))
        }),
        "the log names each upstream: {}",
        srv.error_log()
    );
}

#[test]
fn hanging_backend_is_a_504() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    // Accepts and never answers.
    let t = std::thread::spawn(move || {
        listener.set_nonblocking(true).unwrap();
        let mut held = Vec::new();
        while !stop2.load(Ordering::Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                held.push(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let dir = TempDir::new();
    let root = site(dir.path());
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"/app/\"\nfastcgi = {{ pass = \"{addr}\", check_file = false, read_timeout = \"1s\" }}\n"
        ),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    let start = Instant::now();
    assert_eq!(srv.get("/app/x").status, 504);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    assert!(
        eventually(Duration::from_secs(3), || srv
            .error_log()
            .contains(&format!("timed out after 1s reading from FastCGI server {addr}"))),
        "{}",
        srv.error_log()
    );
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

/// `n` requests over `conns` keep-alive connections; the bodies that came back.
fn load(port: u16, path: &str, conns: usize, n: usize, stop: Option<Arc<AtomicBool>>) -> (usize, Vec<String>) {
    load_with(port, path, conns, n, stop, false)
}

/// `load`, with POSTs of a form field `id=N` (a number per request) when `post`.
fn load_with(
    port: u16,
    path: &str,
    conns: usize,
    n: usize,
    stop: Option<Arc<AtomicBool>>,
    post: bool,
) -> (usize, Vec<String>) {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let next = next.clone();
            let path = path.to_string();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut ok = 0;
                let mut bad = Vec::new();
                let mut s: Option<std::net::TcpStream> = None;
                loop {
                    if stop.as_ref().is_some_and(|st| st.load(Ordering::Relaxed)) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if stop.is_none() && k >= n {
                        break;
                    }
                    let conn = s.get_or_insert_with(|| {
                        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                        c
                    });
                    let req = if post {
                        let body = format!("id={k}");
                        format!(
                            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        )
                    } else {
                        format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
                    };
                    if conn.write_all(req.as_bytes()).is_err() {
                        bad.push("write failed".to_string());
                        s = None;
                        continue;
                    }
                    match read_one(conn) {
                        Some((200, body, keep)) => {
                            ok += 1;
                            if !keep {
                                s = None;
                            }
                            let _ = body;
                        }
                        Some((code, body, _)) => {
                            bad.push(format!("{code}: {body}"));
                            s = None;
                        }
                        None => {
                            bad.push("no response".to_string());
                            s = None;
                        }
                    }
                }
                (ok, bad)
            })
        })
        .collect();
    let mut ok = 0;
    let mut bad = Vec::new();
    for t in threads {
        let (o, b) = t.join().unwrap();
        ok += o;
        bad.extend(b);
    }
    (ok, bad)
}

/// Reads one response (Content-Length or chunked): status, body, keep-alive.
fn read_one(s: &mut std::net::TcpStream) -> Option<(u16, String, bool)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_string();
            let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
            let lower = head.to_ascii_lowercase();
            let keep = !lower.contains("connection: close");
            let mut body = data[end + 4..].to_vec();
            if let Some(len) = lower
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse::<usize>().ok())
            {
                while body.len() < len {
                    let n = s.read_retry(&mut buf).ok().filter(|&n| n > 0)?;
                    body.extend_from_slice(&buf[..n]);
                }
                return Some((status, String::from_utf8_lossy(&body[..len]).into_owned(), keep));
            }
            // Chunked: read until the last chunk.
            while !body.ends_with(b"0\r\n\r\n") {
                let n = s.read_retry(&mut buf).ok().filter(|&n| n > 0)?;
                body.extend_from_slice(&buf[..n]);
            }
            return Some((status, String::from_utf8_lossy(&body).into_owned(), keep));
        }
        let n = s.read_retry(&mut buf).ok().filter(|&n| n > 0)?;
        data.extend_from_slice(&buf[..n]);
    }
}

/// GETs, then POSTs, over kept connections while php-fpm children retire
/// every 5 requests: each is answered, and each POST runs exactly once (a
/// request that met a retiring child is resent, one that reached a script
/// never is).
#[test]
fn max_requests_recycling_loses_nothing() {
    let (_fpm, srv) = fpm_site_with(2, "pm.max_requests = 5\n");
    let log = srv.dir.path().join("charges.log");
    for (path, conns, n, post) in [("/hello.php", 8, 400, false), ("/charge.php", 6, 300, true)] {
        let (ok, bad) = load_with(srv.port, path, conns, n, None, post);
        assert!(
            bad.is_empty(),
            "{path}: {} failed, e.g. {:?}\n{}",
            bad.len(),
            &bad[..bad.len().min(3)],
            srv.error_log()
        );
        assert_eq!(ok, n, "{path}");
    }
    let mut ids: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    let runs = ids.len();
    ids.dedup();
    assert_eq!((runs, ids.len()), (300, 300), "every POST ran exactly once");
}

/// A POST whose script kills its php-fpm child, on a kept connection: the
/// client gets 502 and the script ran once, not again on a fresh connection.
#[test]
fn a_post_that_crashed_its_child_is_not_resent() {
    let (_fpm, srv) = fpm_site_with(1, "");
    let log = srv.dir.path().join("charges.log");
    let mut s = srv.connect();
    for (k, path) in ["/hello.php", "/charge_dies.php"].iter().enumerate() {
        let req = if k == 0 {
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")
        } else {
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n\r\nid=7"
            )
        };
        s.write_all(req.as_bytes()).unwrap();
        let (code, _, _) = read_one(&mut s).expect("an answer");
        assert_eq!(code, if k == 0 { 200 } else { 502 }, "{path}\n{}", srv.error_log());
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "7\n", "the script ran once");
    // A GET that kills its child, with no other server to try: 502, and
    // the log says the application failed, not that it cannot be reached.
    assert_eq!(srv.get("/charge_dies.php").status, 502, "{}", srv.error_log());
    let log = srv.error_log();
    assert!(
        !log.contains("cannot be reached") && !log.contains("trying the next server"),
        "{log}"
    );
}

#[test]
fn upstream_group_survives_a_stopped_pool() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let a = Php::fpm(dir.path(), "a", &dir.path().join("a.sock").display().to_string(), 2, "");
    let mut b = Php::fpm(dir.path(), "b", &dir.path().join("b.sock").display().to_string(), 2, "");
    let o = Opts {
        more: format!(
            "[upstream.app]\nservers = [\"{}\", {{ address = \"{}\", weight = 1 }}]\n",
            a.pass, b.pass
        ),
        server: "[[server.location]]\nmatch = \"~ \\\\.php$\"\nfastcgi = { pass = \"app\" }\n".into(),
        ..Default::default()
    };
    // `more` lands after the server block: upstream tables are top-level.
    let srv = Server::with_root(o, dir, root);
    // Both pools serve.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let r = srv.get("/hello.php");
        assert_eq!(r.status, 200, "{}", srv.error_log());
        seen.insert(r.text());
    }
    assert!(
        seen.contains("hello from a\n") && seen.contains("hello from b\n"),
        "{seen:?}"
    );
    // Load runs while pool b stops.
    let stop = Arc::new(AtomicBool::new(false));
    let port = srv.port;
    let stop2 = stop.clone();
    let loader = std::thread::spawn(move || load(port, "/hello.php", 6, 0, Some(stop2)));
    std::thread::sleep(Duration::from_millis(500));
    b.quit();
    std::thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = loader.join().unwrap();
    assert!(
        bad.is_empty(),
        "{} failed: {:?}\n{}",
        bad.len(),
        &bad[..bad.len().min(3)],
        srv.error_log()
    );
    assert!(ok > 50, "only {ok} requests went through");
    // Afterwards pool a answers everything.
    for _ in 0..5 {
        assert_eq!(srv.get("/hello.php").text(), "hello from a\n");
    }
    drop(a);
}

#[test]
fn php_fpm_on_tcp() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let port = free_port();
    let fpm = Php::fpm(dir.path(), "tcp", &format!("127.0.0.1:{port}"), 2, "");
    let srv = front(dir, root, &fpm.pass, "");
    let r = srv.get("/hello.php");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello from tcp\n"),
        "{}",
        srv.error_log()
    );
    let (ok, bad) = load(srv.port, "/hello.php", 4, 100, None);
    assert!(bad.is_empty() && ok == 100, "{bad:?}");
    assert!(fpm.pid() > 0);
}

#[test]
fn php_cgi_b() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let port = free_port();
    let php = Php::cgi(dir.path(), &format!("127.0.0.1:{port}"), 2, 50);
    let srv = front(dir, root, &format!("127.0.0.1:{port}"), "");
    let r = srv.get("/env.php?x=y");
    assert_eq!(r.status, 200, "{}", srv.error_log());
    assert!(r.text().contains("GET:x=y"));
    let url = format!("http://127.0.0.1:{}/env.php", srv.port);
    let (ok, out) = curl(&["-d", "k=v", &url]);
    assert!(ok && String::from_utf8_lossy(&out).contains("POST:k=v"));
    let (ok, bad) = load(srv.port, "/hello.php", 4, 120, None);
    assert!(bad.is_empty() && ok == 120, "{bad:?}\n{}", srv.error_log());
    drop(php);
}

#[test]
fn config_errors_name_the_key() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    for (body, want) in [
        ("fastcgi = { pass = \"nosuchgroup\" }", "pass"),
        (
            "fastcgi = { pass = \"unix:/x.sock\", split_path_info = \"(unclosed\" }",
            "split_path_info",
        ),
        ("fastcgi = { index = \"index.php\" }", "pass"),
        (
            "fastcgi = { pass = \"unix:/x.sock\", next_upstream = [\"sometimes\"] }",
            "next_upstream",
        ),
    ] {
        let conf = dir.path().join("c.toml");
        std::fs::write(
            &conf,
            format!(
                "[[server]]\nroot = \"{}\"\n[[server.location]]\nmatch = \"~ \\\\.php$\"\n{body}\n",
                root.display()
            ),
        )
        .unwrap();
        let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
        assert_ne!(code, 0, "{body}");
        assert!(out.contains("c.toml:5"), "file and line for {body}: {out}");
        assert!(out.contains("fastcgi") && out.contains(want), "key for {body}: {out}");
    }
    let conf = dir.path().join("u.toml");
    std::fs::write(
        &conf,
        format!(
            "[upstream.app]\nservers = []\n[[server]]\nroot = \"{}\"\n",
            root.display()
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("u.toml:2") && out.contains("upstream.app.servers"),
        "{out}"
    );
}

#[test]
fn max_conns_queues_then_answers_503() {
    let dir = TempDir::new();
    let root = site(dir.path());
    let fpm = Php::fpm(
        dir.path(),
        "www",
        &dir.path().join("fpm.sock").display().to_string(),
        2,
        "",
    );
    let o = Opts {
        main: "workers = 1\n".into(),
        more: format!(
            "[upstream.one]\nmax_conns = 1\nqueue_timeout = \"2s\"\nservers = [\"{}\"]\n",
            fpm.pass
        ),
        server: "[[server.location]]\nmatch = \"~ \\\\.php$\"\nfastcgi = { pass = \"one\" }\n".into(),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    // Three at once through one connection: they wait their turn, all answered.
    let start = Instant::now();
    let port = srv.port;
    let clients: Vec<_> = (0..3)
        .map(|_| std::thread::spawn(move || load(port, "/sleep.php?ms=250", 1, 1, None)))
        .collect();
    for c in clients {
        let (ok, bad) = c.join().unwrap();
        assert!(ok == 1 && bad.is_empty(), "{bad:?}");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(700),
        "one at a time: {:?}",
        start.elapsed()
    );
    // A request that cannot get the connection within queue_timeout: 503.
    let slow = std::thread::spawn(move || load(port, "/sleep.php?ms=4000", 1, 1, None));
    std::thread::sleep(Duration::from_millis(300));
    let r = srv.get("/sleep.php?ms=10");
    assert_eq!(r.status, 503, "{}", srv.error_log());
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(srv.error_log().contains("queue_timeout"), "{}", srv.error_log());
    let (ok, _) = slow.join().unwrap();
    assert_eq!(ok, 1);
    // The connection is free again.
    assert_eq!(srv.get("/sleep.php?ms=10").status, 200);
}

#[test]
fn index_php_runs_never_leaks() {
    let dir = TempDir::new();
    let root = site(dir.path());
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::write(root.join("sub/index.php"), HELLO).unwrap();
    let fpm = Php::fpm(
        dir.path(),
        "www",
        &dir.path().join("fpm.sock").display().to_string(),
        2,
        "",
    );
    let o = Opts {
        server: format!(
            "index = [\"index.php\", \"index.html\"]\n\
             [[server.location]]\nmatch = \"~ \\\\.php(/|$)\"\nfastcgi = {{ pass = \"{}\" }}\n",
            fpm.pass
        ),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    let r = srv.get("/sub/?x=1");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "hello from www\n"),
        "{}",
        srv.error_log()
    );
    let url = format!("http://127.0.0.1:{}/sub/", srv.port);
    let (ok, out) = curl(&["-d", "a=b", &url]);
    assert!(
        ok && out == b"hello from www\n",
        "a POST to a directory runs its index.php too"
    );
    let r = srv.get("/");
    assert!(!r.text().contains("<?php"), "PHP source sent: {}", r.text());
    assert_eq!(r.status, 200);
}

/// The FIN sent right behind the request (in the same read, often): the
/// client is gone all the same, whatever the timing.
#[test]
fn a_client_that_shuts_its_side_with_the_request_is_gone_too() {
    let (_fpm, srv) = fpm_site();
    for _ in 0..5 {
        let mut s = srv.connect();
        s.write_all(b"GET /sleep.php?ms=1500 HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let start = Instant::now();
        let rest = read_to_close(&mut s);
        assert!(rest.is_empty(), "answered: {:?}", String::from_utf8_lossy(&rest));
        assert!(start.elapsed() < Duration::from_millis(1000), "{:?}", start.elapsed());
    }
}

#[test]
fn a_client_that_leaves_aborts_its_request() {
    let (_fpm, srv) = fpm_site();
    let mut s = srv.connect();
    s.write_all(b"GET /sleep.php?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // The client is done: its side closes.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let start = Instant::now();
    let rest = read_to_close(&mut s);
    assert!(
        rest.is_empty(),
        "no answer to a client that left: {:?}",
        String::from_utf8_lossy(&rest)
    );
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "closed at once, not after the script: {:?}",
        start.elapsed()
    );
    assert!(
        eventually(Duration::from_secs(3), || srv
            .access_log()
            .contains("\"GET /sleep.php?ms=3000 HTTP/1.1\" 499")),
        "{}",
        srv.access_log()
    );
}

/// A slow upload does not hold php-fpm's only child (request_buffering,
/// as nginx's fastcgi_request_buffering): the body is read first, so
/// other requests are served meanwhile, and the upload arrives whole.
#[test]
fn a_slow_upload_does_not_hold_a_php_child() {
    let (_fpm, srv) = fpm_site_with(1, "");
    assert_eq!(srv.get("/hello.php").status, 200, "{}", srv.error_log());
    let body = "a".repeat(4000);
    let mut slow = srv.connect();
    slow.write_all(
        format!(
            "POST /hello.php HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            &body[..100]
        )
        .as_bytes(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    for _ in 0..3 {
        let t = Instant::now();
        let r = srv.get("/hello.php");
        assert_eq!(r.status, 200, "{}", srv.error_log());
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "waited {:?} behind a slow upload",
            t.elapsed()
        );
    }
    slow.write_all(&body.as_bytes()[100..]).unwrap();
    let rs = parse_responses(&read_to_close(&mut slow), false);
    assert_eq!((rs.len(), rs[0].status), (1, 200));
}

#[test]
fn error_page_for_application_failures() {
    let dir = TempDir::new();
    let root = site(dir.path());
    std::fs::write(root.join("50x.html"), "sorry, down\n").unwrap();
    let missing = dir.path().join("nobody.sock");
    let o = Opts {
        server: format!(
            "error_page = {{ 502 = \"/50x.html\", 504 = \"/50x.html\" }}\n\
             [[server.location]]\nmatch = \"^~ /p/\"\nalias = \"{root}/\"\nfastcgi = {{ pass = \"pool:php\" }}\n\
             [[server.location]]\nmatch = \"~ \\\\.php$\"\nfastcgi = {{ pass = \"unix:{}\" }}\n",
            missing.display(),
            root = root.display()
        ),
        more: format!(
            "[pool.php]\nlisten = \"unix:{}/pool.sock\"\ncommand = [\"php-cgi\"]\npm = \"static\"\nmax_children = 1\n",
            dir.path().display()
        ),
        ..Default::default()
    };
    let srv = Server::with_root(o, dir, root);
    // nginx's default config: error_page 502 /50x.html.
    let mut s = srv.connect();
    s.write_all(
        b"GET /hello.php HTTP/1.1\r\nHost: x\r\n\r\nGET /hello.php HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let all = read_to_close(&mut s);
    let rs = parse_responses(&all, false);
    assert_eq!(
        rs.len(),
        2,
        "the connection stays usable: {}",
        String::from_utf8_lossy(&all)
    );
    for r in rs {
        assert_eq!((r.status, r.text().as_str()), (502, "sorry, down\n"));
    }
    // A pool's program that dies in the request: the same page (as with
    // php-fpm), not an answer of the pool passed on as the application's.
    assert_eq!(srv.get("/p/hello.php").status, 200, "{}", srv.error_log());
    let r = srv.get("/p/charge_dies.php");
    assert_eq!(
        (r.status, r.text().as_str()),
        (502, "sorry, down\n"),
        "{}",
        srv.error_log()
    );
}
