//! CGI (RFC 3875) through the real binary with real scripts, and git's
//! http-backend as a real application.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn python() -> String {
    if Path::new("/usr/bin/python3").exists() {
        return "/usr/bin/python3".into();
    }
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Echoes its environment and body as `KEY<TAB>value` lines.
const ENV_ECHO: &str = r#"import os, sys
body = sys.stdin.buffer.read()
print("Content-Type: text/plain")
print("X-Script: env")
print()
for k, v in sorted(os.environ.items()):
    print(k + "\t" + v.replace("\n", " "))
print("BODY\t" + body.decode("latin-1"))
"#;

const HASH: &str = r#"import hashlib, sys
h = hashlib.sha256()
n = 0
while True:
    b = sys.stdin.buffer.read(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
sys.stdout.write("Content-Type: text/plain\r\n\r\n%s %d" % (h.hexdigest(), n))
"#;

/// A server with a `/cgi-bin/` prefix and `.py` files under the root.
fn cgi_server() -> (Server, PathBuf) {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    let bin = dir.path().join("cgi-bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(root.join("target.html"), "static target").unwrap();
    let py = python();
    write_script(&bin.join("env.py"), &format!("#!{py}\n{ENV_ECHO}"));
    write_script(&bin.join("hash.py"), &format!("#!{py}\n{HASH}"));
    write_script(
        &bin.join("hello.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\necho \"hello $PATH_INFO\"\necho \"oops on stderr\" >&2\n",
    );
    write_script(
        &bin.join("bad.sh"),
        "#!/bin/sh\necho 'this is not a header'\necho\necho body\n",
    );
    write_script(&bin.join("nohead.sh"), "#!/bin/sh\nexit 0\n");
    write_script(
        &bin.join("rawhex.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nprintf '%s' \"$HTTP_X_RAW\" | od -An -tx1 | tr -d ' \\n'\n",
    );
    write_script(
        &bin.join("local.sh"),
        "#!/bin/sh\nprintf 'Location: /target.html\\n\\n'\n",
    );
    write_script(
        &bin.join("climb.sh"),
        "#!/bin/sh\nprintf 'Location: /../../outside.txt\\n\\n'\n",
    );
    write_script(
        &bin.join("away.sh"),
        "#!/bin/sh\nprintf 'Location: http://example.org/there\\n\\n'\n",
    );
    write_script(
        &bin.join("status.sh"),
        "#!/bin/sh\nprintf 'Status: 418 Teapot\\nContent-Type: text/plain\\nContent-Length: 3\\n\\nabc'\n",
    );
    let pidfile = dir.path().join("slow.pid");
    write_script(
        &bin.join("slow.sh"),
        &format!(
            "#!/bin/sh\necho $$ > {}\nsleep 30\necho 'Content-Type: text/plain'\necho\n",
            pidfile.display()
        ),
    );
    let streampid = dir.path().join("stream.pid");
    write_script(
        &bin.join("stream.sh"),
        &format!(
            "#!/bin/sh\necho $$ > {}\nprintf 'Content-Type: text/plain\\n\\n'\nwhile true; do echo 0123456789012345678901234567890123456789; done\n",
            streampid.display()
        ),
    );
    write_script(
        &bin.join("drip.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\nfor i in 1 2 3 4 5 6 7; do echo $i; sleep 0.5; done\n",
    );
    write_script(
        &bin.join("signals.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\ngrep -E '^Sig(Blk|Ign)' /proc/self/status\n",
    );
    std::fs::write(bin.join("noexec.sh"), "#!/bin/sh\necho\n").unwrap();
    std::fs::write(root.join("app.py"), ENV_ECHO).unwrap();
    let o = Opts {
        http: "client_max_body_size = \"20m\"".into(),
        server: format!(
            "[[server.location]]\nmatch = \"^~ /cgi-bin/\"\n\
             cgi = {{ dir = \"{}\", timeout = \"2s\", env = {{ EXTRA_VAR = \"extra\" }} }}\n\
             [[server.location]]\nmatch = \"^~ /cgi-stream/\"\n\
             cgi = {{ dir = \"{}\", timeout = \"2s\", request_buffering = false }}\n\
             [[server.location]]\nmatch = \"~ \\\\.py(/|$)\"\n\
             cgi = {{ extensions = [\".py\"], interpreters = {{ \".py\" = \"{py}\" }} }}\n",
            bin.display(),
            bin.display()
        ),
        ..Opts::default()
    };
    let s = Server::with_root(o, dir, root);
    (s, bin)
}

/// A server in `dir` whose root holds one script, `name`, run through an
/// `.cgi` extension location with the extra `cgi` keys.
fn one_script_server(dir: TempDir, name: &str, body: &str, http: &str, cgi: &str) -> Server {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    write_script(&root.join(name), body);
    let o = Opts {
        main: "workers = 1".into(),
        http: http.into(),
        server: format!(
            "[[server.location]]\nmatch = \"~ \\\\.cgi(/|$)\"\ncgi = {{ extensions = [\".cgi\"]{} }}\n",
            if cgi.is_empty() {
                String::new()
            } else {
                format!(", {cgi}")
            }
        ),
        ..Opts::default()
    };
    Server::with_root(o, dir, root)
}

struct Env(Vec<(String, String)>);

impl Env {
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }
}

fn env_of(s: &Server, req: &str) -> Env {
    let r = s.request(req);
    assert_eq!(r.status, 200, "{}", r.text());
    Env(r
        .text()
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

#[test]
fn meta_variables_follow_rfc3875() {
    let (s, bin) = cgi_server();
    let j = env_of(
        &s,
        "POST /cgi-bin/env.py/extra/path?a=1&b=2 HTTP/1.1\r\nHost: example.test:8080\r\nContent-Type: text/x-test\r\n\
         Content-Length: 5\r\nX-Custom: yes\r\nProxy: http://evil.example/\r\nConnection: close\r\n\r\nhello",
    );
    assert_eq!(j.get("BODY"), Some("hello"));
    let want = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_string()),
        ("REQUEST_METHOD", "POST".into()),
        ("SCRIPT_NAME", "/cgi-bin/env.py".into()),
        ("PATH_INFO", "/extra/path".into()),
        ("PATH_TRANSLATED", format!("{}/extra/path", s.root.display())),
        ("QUERY_STRING", "a=1&b=2".into()),
        ("CONTENT_LENGTH", "5".into()),
        ("CONTENT_TYPE", "text/x-test".into()),
        ("SERVER_NAME", "example.test".into()),
        ("SERVER_PORT", s.port.to_string()),
        ("SERVER_PROTOCOL", "HTTP/1.1".into()),
        ("REMOTE_ADDR", "127.0.0.1".into()),
        ("REQUEST_URI", "/cgi-bin/env.py/extra/path?a=1&b=2".into()),
        ("SCRIPT_FILENAME", bin.join("env.py").display().to_string()),
        ("DOCUMENT_ROOT", s.root.display().to_string()),
        ("HTTP_X_CUSTOM", "yes".into()),
        ("HTTP_HOST", "example.test:8080".into()),
        ("EXTRA_VAR", "extra".into()),
        ("AUTH_TYPE", "".into()),
    ];
    for (k, v) in want {
        assert_eq!(j.get(k), Some(v.as_str()), "{k}");
    }
    assert!(j.get("SERVER_SOFTWARE").is_some_and(|v| v.starts_with("corral/")));
    assert!(j.get("REMOTE_PORT").is_some_and(|v| v.parse::<u16>().is_ok()));
    assert_eq!(j.get("HTTP_PROXY"), None, "httpoxy");
    assert_eq!(j.get("HTTP_CONTENT_LENGTH"), None);
    // The server's own environment does not leak.
    assert_eq!(j.get("HOME"), None);
    assert_eq!(j.get("CARGO_MANIFEST_DIR"), None);

    // Underscored names cannot pose as dashed ones; cookies join with "; ".
    let j = env_of(
        &s,
        "GET /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded-For: 1.1.1.1\r\n\
         Transfer_Encoding: chunked\r\nCookie: a=1\r\nCookie: b=2\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(j.get("HTTP_X_FORWARDED_FOR"), Some("1.1.1.1"));
    assert_eq!(j.get("HTTP_TRANSFER_ENCODING"), None);
    assert_eq!(j.get("HTTP_COOKIE"), Some("a=1; b=2"));
    // An absolute-form target names the host, not the Host field (RFC 9112 §3.2.2).
    let j = env_of(
        &s,
        "GET http://other.example:8080/cgi-bin/env.py HTTP/1.1\r\nHost: public.example\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(j.get("HTTP_HOST"), Some("other.example:8080"));
    assert_eq!(j.get("SERVER_NAME"), Some("other.example"));
    // A header value that is not UTF-8 reaches the script as sent (RFC 9110 §5.5).
    let out = s.raw(b"GET /cgi-bin/rawhex.sh HTTP/1.1\r\nHost: h\r\nX-Raw: a\xff\xfeb\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("\r\n61fffe62\r\n"), "{text}");
    // Neither TRACE nor CONNECT reaches a script.
    for m in ["TRACE", "CONNECT"] {
        let r = s.request(&format!(
            "{m} /cgi-bin/env.py HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"
        ));
        assert_eq!(r.status, 405, "{m}");
        assert!(r.header("Allow").is_some(), "{m}");
    }
}

#[test]
fn chunked_body_arrives_with_its_content_length() {
    // RFC 3875 §4.1.2: CONTENT_LENGTH is set whenever there is a body; a
    // chunked one is spooled first, so the script can trust it.
    let (s, _) = cgi_server();
    let j = env_of(
        &s,
        "POST /cgi-bin/env.py HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\n5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\n",
    );
    assert_eq!(j.get("BODY"), Some("hello, world"));
    assert_eq!(j.get("CONTENT_LENGTH"), Some("12"));
    assert_eq!(j.get("HTTP_TRANSFER_ENCODING"), None);
    // An empty chunked body is a body of length 0.
    let j = env_of(
        &s,
        "POST /cgi-bin/env.py HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n",
    );
    assert_eq!(j.get("CONTENT_LENGTH"), Some("0"));
    assert_eq!(j.get("BODY"), Some(""));
}

#[test]
fn extension_mapping_with_interpreter() {
    let (s, _) = cgi_server();
    let j = env_of(
        &s,
        "GET /app.py/more?z=9 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(j.get("SCRIPT_NAME"), Some("/app.py"));
    assert_eq!(j.get("PATH_INFO"), Some("/more"));
    assert_eq!(j.get("QUERY_STRING"), Some("z=9"));
    assert_eq!(j.get("CONTENT_LENGTH"), None, "no body, no CONTENT_LENGTH");
    assert_eq!(s.get("/missing.py").status, 404);
}

#[test]
fn shell_script_stderr_and_errors() {
    let (s, _) = cgi_server();
    let r = s.get("/cgi-bin/hello.sh/x");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));
    assert!(r.text().contains("hello /x"), "{:?}", r.text());
    assert!(eventually(Duration::from_secs(3), || s
        .error_log()
        .contains("CGI /cgi-bin/hello.sh: oops on stderr")));
    assert_eq!(s.get("/cgi-bin/bad.sh").status, 502);
    assert!(
        s.error_log().contains("CGI /cgi-bin/bad.sh: malformed output"),
        "{}",
        s.error_log()
    );
    assert_eq!(s.get("/cgi-bin/nohead.sh").status, 502);
    assert_eq!(s.get("/cgi-bin/noexec.sh").status, 403);
    assert_eq!(s.get("/cgi-bin/none.sh").status, 404);
    assert_eq!(
        s.get("/cgi-bin/../cgi-bin/hello.sh").status,
        200,
        "dot segments resolved first"
    );
    assert_eq!(
        s.get("/cgi-bin/%2e%2e/%2e%2e/etc/passwd").status,
        400,
        "no climbing above the root"
    );
    let r = s.get("/cgi-bin/status.sh");
    assert_eq!((r.status, r.text().as_str()), (418, "abc"));
    assert_eq!(r.header("content-length"), Some("3"));
}

#[test]
fn scripts_start_with_no_blocked_or_ignored_signals() {
    // The worker blocks its signals (it reads them from a signalfd) and
    // ignores SIGPIPE; none of that may reach a script or its children.
    let (s, _) = cgi_server();
    let r = s.get("/cgi-bin/signals.sh");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(text.contains("SigBlk:\t0000000000000000"), "{text}");
    assert!(text.contains("SigIgn:\t0000000000000000"), "{text}");
}

#[test]
fn expect_100_continue_before_the_body_reaches_the_script() {
    let (s, _) = cgi_server();
    let mut c = s.connect();
    c.write_all(
        b"POST /cgi-bin/hash.py HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut buf = [0u8; 64];
    let n = c.read_retry(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"hello").unwrap();
    let rs = parse_responses(&read_to_close(&mut c), false);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].text(), format!("{} 5", sha256_hex(b"hello")));
    // The same with a chunked body, which is spooled before the script starts.
    let mut c = s.connect();
    c.write_all(
        b"POST /cgi-bin/hash.py HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let n = c.read_retry(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"HTTP/1.1 100 Continue\r\n\r\n");
    c.write_all(b"5\r\nhello\r\n0\r\n\r\n").unwrap();
    let rs = parse_responses(&read_to_close(&mut c), false);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].text(), format!("{} 5", sha256_hex(b"hello")));
}

#[test]
fn over_max_concurrent_answers_503() {
    let dir = TempDir::new();
    let started = dir.path().join("started");
    let body = format!(
        "#!/bin/sh\necho $$ > {}\nsleep 2\nprintf 'Content-Type: text/plain\\n\\ndone'\n",
        started.display()
    );
    let s = one_script_server(dir, "wait.cgi", &body, "", "max_concurrent = 1");
    let mut first = s.connect();
    first
        .write_all(b"GET /wait.cgi HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    wait_pid(&started);
    assert_eq!(s.get("/wait.cgi").status, 503, "the only slot is taken");
    let rs = parse_responses(&read_to_close(&mut first), false);
    assert_eq!((rs[0].status, rs[0].text().as_str()), (200, "done"));
    assert_eq!(s.get("/wait.cgi").status, 200, "the slot came back");
    assert!(s.error_log().contains("answering 503"), "{}", s.error_log());
}

#[test]
fn a_stalled_chunked_upload_times_out_with_408() {
    let dir = TempDir::new();
    let marker = dir.path().join("ran");
    let body = format!(
        "#!/bin/sh\ntouch {}\nprintf 'Content-Type: text/plain\\n\\nok'\n",
        marker.display()
    );
    let s = one_script_server(dir, "up.cgi", &body, "client_body_timeout = \"1s\"", "");
    let r = s.request("POST /up.cgi HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nonly part");
    assert_eq!(r.status, 408);
    assert!(!marker.exists(), "the script never started");
    assert!(
        s.error_log().contains("timed out sending the request body"),
        "{}",
        s.error_log()
    );
}

#[test]
fn stopping_the_server_kills_running_scripts() {
    let dir = TempDir::new();
    let pidfile = dir.path().join("long.pid");
    let body = format!("#!/bin/sh\necho $$ > {}\nsleep 60\n", pidfile.display());
    let mut s = one_script_server(dir, "long.cgi", &body, "", "timeout = \"5m\"");
    let mut c = s.connect();
    c.write_all(b"GET /long.cgi HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    let pid = wait_pid(&pidfile);
    assert!(alive(pid));
    s.signal("TERM");
    assert!(s.wait_exit(Duration::from_secs(5)).is_some(), "the master stopped");
    assert!(
        eventually(Duration::from_secs(3), || !alive(pid)),
        "script {pid} did not outlive its worker"
    );
}

#[test]
fn http10_client_gets_close_delimited_body() {
    let (s, _) = cgi_server();
    let out = s.raw(b"GET /cgi-bin/hello.sh/ten HTTP/1.0\r\n\r\n");
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("chunked"), "{text}");
    assert!(text.contains("Connection: close"), "{text}");
    assert!(text.ends_with("hello /ten\n"), "{text}");
}

#[test]
fn redirects() {
    let (s, _) = cgi_server();
    let r = s.get("/cgi-bin/local.sh");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "static target"),
        "local Location is an internal redirect"
    );
    let r = s.get("/cgi-bin/away.sh");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("http://example.org/there"));
    // A local redirect above the root is the script's fault: 500, not 400.
    assert_eq!(s.get("/cgi-bin/climb.sh").status, 500);
    assert!(s.error_log().contains("outside.txt"), "{}", s.error_log());
}

fn sha256_hex(data: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A script that exits without reading its body: the rest is read and
/// dropped and the kept connection serves the pipelined request after it.
#[test]
fn a_body_the_script_did_not_read_is_dropped_and_the_connection_goes_on() {
    let (s, _) = cgi_server();
    let body = "x".repeat(200_000);
    let mut c = s.connect();
    c.write_all(
        format!(
            "POST /cgi-bin/hello.sh HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\n\r\n{body}\
             GET /target.html HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 2, "{}\n{}", String::from_utf8_lossy(&out), s.error_log());
    assert!(rs[0].text().starts_with("hello"), "{}", rs[0].text());
    assert_eq!(rs[1].text(), "static target");

    // The client leaves before the rest of that body (the body streamed,
    // request_buffering off): the exchange is logged with the answer it
    // got (200), not as a refused 400.
    let mut c = s.connect();
    c.write_all(b"POST /cgi-stream/hello.sh?leaver HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nxx")
        .unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let (code, _) = read_response(&mut r).unwrap();
    assert_eq!(code, 200);
    drop((r, c));
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .contains("\"POST /cgi-stream/hello.sh?leaver HTTP/1.1\" 200 ")),
        "{}",
        s.access_log()
    );
    // The same cut short by a reset, the body streamed to the script
    // (request_buffering off): 400 too (it was logged 0).
    let port = s.port.to_string();
    let py = "import socket, struct, sys, time\n\
              s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n\
              s.sendall(b'POST /cgi-stream/hash.py?reset HTTP/1.1\\r\\nHost: h\\r\\nContent-Length: 100000\\r\\n\\r\\n' + b'x' * 5000)\n\
              time.sleep(0.3)\n\
              s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))\n\
              s.close()\n";
    let out = std::process::Command::new(python())
        .args(["-c", py, &port])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .contains("\"POST /cgi-stream/hash.py?reset HTTP/1.1\" 400 ")),
        "{}",
        s.access_log()
    );
    // Before any answer, to a script reading its body: 400, as nginx logs it.
    let mut c = s.connect();
    c.write_all(b"POST /cgi-bin/hash.py?cut HTTP/1.1\r\nHost: h\r\nContent-Length: 100000\r\n\r\nxx")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(c);
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .contains("\"POST /cgi-bin/hash.py?cut HTTP/1.1\" 400 ")),
        "{}",
        s.access_log()
    );
}

/// A body is read whole before its script starts (request_buffering, on
/// by default): a slow upload holds a temporary file, not a script or one
/// of max_concurrent; with it off the script starts at once.
#[test]
fn a_slow_upload_starts_its_script_only_when_complete() {
    let (s, bin) = cgi_server();
    let marker = bin.join("started");
    write_script(
        &bin.join("mark.sh"),
        &format!(
            "#!/bin/sh\ntouch {}\nprintf 'Content-Type: text/plain\\n\\n'\nwc -c\n",
            marker.display()
        ),
    );
    for (prefix, buffered) in [("/cgi-bin/", true), ("/cgi-stream/", false)] {
        let _ = std::fs::remove_file(&marker);
        let mut c = s.connect();
        c.write_all(
            format!("POST {prefix}mark.sh HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nConnection: close\r\n\r\n12345")
                .as_bytes(),
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(400));
        assert_eq!(
            marker.exists(),
            !buffered,
            "{prefix}: started before the body was complete"
        );
        c.write_all(b"67890").unwrap();
        let out = read_to_close(&mut c);
        let rs = parse_responses(&out, false);
        assert_eq!(rs.len(), 1, "{}", String::from_utf8_lossy(&out));
        assert_eq!((rs[0].status, rs[0].text().trim()), (200, "10"), "{prefix}");
        assert!(marker.exists());
    }
}

#[test]
fn large_post_and_chunked_upload_reach_the_script_intact() {
    let (s, _) = cgi_server();
    let big: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let want = format!("{} {}", sha256_hex(&big), big.len());
    // 10 MiB with Content-Length, by curl.
    let path = s.dir.path().join("big.bin");
    std::fs::write(&path, &big).unwrap();
    let url = format!("http://127.0.0.1:{}/cgi-bin/hash.py", s.port);
    let (ok, out) = curl(&["--data-binary", &format!("@{}", path.display()), &url]);
    assert!(ok);
    assert_eq!(String::from_utf8_lossy(&out), want);
    // The same, chunked, in uneven chunks written slowly at first.
    let mut c = s.connect();
    c.write_all(
        b"POST /cgi-bin/hash.py HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let mut off = 0;
    let mut k = 1usize;
    while off < big.len() {
        let n = (k * 7919 % 100_000 + 1).min(big.len() - off);
        c.write_all(format!("{n:x}\r\n").as_bytes()).unwrap();
        c.write_all(&big[off..off + n]).unwrap();
        c.write_all(b"\r\n").unwrap();
        off += n;
        k += 1;
    }
    c.write_all(b"0\r\n\r\n").unwrap();
    let rs = parse_responses(&read_to_close(&mut c), false);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].text(), want);
}

#[test]
fn body_over_the_limit_is_413() {
    let (s, _) = cgi_server();
    let r = s.request("POST /cgi-bin/hash.py HTTP/1.1\r\nHost: a\r\nContent-Length: 30000000\r\n\r\n");
    assert_eq!(r.status, 413);
    // A chunked body announcing more than the limit, while being spooled.
    let r = s.request("POST /cgi-bin/hash.py HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2000000\r\nabc");
    assert_eq!(r.status, 413);
    assert_eq!(s.get("/cgi-bin/hello.sh").status, 200, "the place was given back");
}

fn wait_pid(path: &Path) -> i32 {
    assert!(eventually(Duration::from_secs(5), || std::fs::read_to_string(path)
        .is_ok_and(|p| !p.trim().is_empty())));
    std::fs::read_to_string(path).unwrap().trim().parse().unwrap()
}

#[test]
fn timeout_kills_the_script_and_answers_504() {
    let (s, _) = cgi_server();
    let start = Instant::now();
    let r = s.get("/cgi-bin/slow.sh");
    assert_eq!(r.status, 504);
    assert!(start.elapsed() < Duration::from_secs(6), "took {:?}", start.elapsed());
    let pid = wait_pid(&s.dir.path().join("slow.pid"));
    assert!(
        eventually(Duration::from_secs(3), || !alive(pid)),
        "script {pid} killed"
    );
    // Its `sleep` child too: nothing left under the worker but nothing.
    for w in s.workers() {
        assert!(
            eventually(Duration::from_secs(3), || children_of(w).is_empty()),
            "no process left under {w}"
        );
    }
    assert!(s.error_log().contains("timed out"), "{}", s.error_log());
}

#[test]
fn timeout_bounds_silence_not_a_script_that_keeps_writing() {
    let (s, _) = cgi_server();
    let start = Instant::now();
    let r = s.get("/cgi-bin/drip.sh");
    assert!(start.elapsed() > Duration::from_secs(3), "ran past the 2 s timeout");
    assert_eq!((r.status, r.text().as_str()), (200, "1\n2\n3\n4\n5\n6\n7\n"));
}

#[test]
fn client_going_away_kills_the_script() {
    let (s, _) = cgi_server();
    let mut c = s.connect();
    c.write_all(b"GET /cgi-bin/stream.sh HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 4096];
    let n = c.read_retry(&mut buf).unwrap();
    assert!(n > 0);
    let pid = wait_pid(&s.dir.path().join("stream.pid"));
    assert!(alive(pid));
    drop(c);
    assert!(
        eventually(Duration::from_secs(5), || !alive(pid)),
        "script {pid} killed after the client left"
    );
    for w in s.workers() {
        assert!(
            eventually(Duration::from_secs(3), || children_of(w).is_empty()),
            "no zombie under {w}"
        );
    }
    assert_eq!(s.get("/cgi-bin/hello.sh").status, 200, "the worker is fine");
}

#[test]
fn config_errors_name_the_cgi_key() {
    let dir = TempDir::new();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!(
            "[[server]]\nroot = \"{0}\"\n[[server.cgi]]\nprefix = \"cgi-bin\"\ndir = \"{0}\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let (code, text) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        text.contains("c.toml:4:") && text.contains("server.cgi.prefix"),
        "{text}"
    );
    std::fs::write(&p, "[http]\nclient_body_temp_path = \"/nonexistent/tmp\"\n").unwrap();
    let (code, text) = run_corral(&["-t", "-c", p.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        text.contains("c.toml:2:") && text.contains("http.client_body_temp_path"),
        "{text}"
    );
}

fn git(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn git_clone_and_push_through_http_backend() {
    let backend = "/usr/lib/git-core/git-http-backend";
    assert!(
        Path::new(backend).exists(),
        "Debian's git provides {backend} (.ci/run installs git)"
    );
    let dir = TempDir::new();
    let root = dir.path().join("www");
    let repos = dir.path().join("repos");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&repos).unwrap();
    // A bare repository with one commit, pushable over HTTP.
    let seed = dir.path().join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    assert!(git(&seed, &["init", "-q", "-b", "main"]).0);
    std::fs::write(seed.join("README"), "first\n").unwrap();
    assert!(git(&seed, &["add", "README"]).0);
    assert!(git(&seed, &["commit", "-q", "-m", "first"]).0);
    assert!(git(dir.path(), &["clone", "-q", "--bare", "seed", "repos/project.git"]).0);
    assert!(git(&repos.join("project.git"), &["config", "http.receivepack", "true"]).0);
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"/git/\"\ncgi = {{ script = \"{backend}\", timeout = \"30s\", \
             env = {{ GIT_PROJECT_ROOT = \"{}\", GIT_HTTP_EXPORT_ALL = \"1\" }} }}\n",
            repos.display()
        ),
        ..Opts::default()
    };
    let s = Server::with_root(o, dir, root);
    let url = format!("http://127.0.0.1:{}/git/project.git", s.port);
    let base = s.dir.path();
    let (ok, out) = git(base, &["clone", "-q", &url, "work"]);
    assert!(ok, "clone: {out}\n{}", s.error_log());
    let work = base.join("work");
    assert_eq!(std::fs::read_to_string(work.join("README")).unwrap(), "first\n");
    std::fs::write(work.join("second.txt"), "pushed over http\n").unwrap();
    assert!(git(&work, &["add", "second.txt"]).0);
    assert!(git(&work, &["commit", "-q", "-m", "second"]).0);
    let (ok, out) = git(&work, &["push", "-q", "origin", "main"]);
    assert!(ok, "push: {out}\n{}", s.error_log());
    let (_, head) = git(&work, &["rev-parse", "HEAD"]);
    let (ok, server_head) = git(&base.join("repos/project.git"), &["rev-parse", "main"]);
    assert!(ok);
    assert_eq!(
        server_head.trim(),
        head.trim(),
        "the pushed commit is in the server-side repository"
    );
    // The location's own path: PATH_INFO "/" (git answers 404 for it, as
    // behind nginx + fcgiwrap; an empty PATH_INFO made it a 500).
    assert_eq!(s.get("/git/").status, 404, "{}", s.error_log());
}

/// A client that closes its side once its request is sent is gone, as
/// nginx takes it: the script is killed at once and the access log says
/// 499 (it used to run to its end for nobody).
#[test]
fn client_that_half_closes_ends_the_script() {
    let dir = TempDir::new();
    let marker = dir.path().join("finished");
    let pidfile = dir.path().join("pid");
    let s = one_script_server(
        dir,
        "slow.cgi",
        &format!(
            "#!/bin/sh\necho $$ > {}\nsleep 3\ntouch {}\nprintf 'Content-Type: text/plain\\n\\ndone\\n'\n",
            pidfile.display(),
            marker.display()
        ),
        "",
        "",
    );
    let t = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    (&t).write_all(b"GET /slow.cgi HTTP/1.1\r\nHost: a\r\n\r\n").unwrap();
    assert!(
        eventually(Duration::from_secs(5), || pidfile.exists()),
        "the script started"
    );
    let start = Instant::now();
    t.shutdown(std::net::Shutdown::Write).unwrap();
    t.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = (&t).read_to_end(&mut got);
    assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "closed at once: {:?}",
        start.elapsed()
    );
    std::thread::sleep(Duration::from_secs(4));
    assert!(!marker.exists(), "the script was killed before it finished");
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .contains("\"GET /slow.cgi HTTP/1.1\" 499")),
        "{}",
        s.access_log()
    );
    // A complete exchange on the same server still works.
    let r = s.get("/slow.cgi");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "done\n");
}

/// A script's stderr reaches the log up to 64 KiB, then one line says
/// how much was not logged; output past its Content-Length is one warning.
#[test]
fn a_flood_of_stderr_or_excess_output_is_logged_once() {
    let s = one_script_server(
        TempDir::new(),
        "flood.cgi",
        "#!/bin/sh\ni=0\nwhile [ $i -lt 4000 ]; do echo \"noise-line-$i-padding-padding-padding-padding\" >&2; i=$((i+1)); done\n\
         printf 'Content-Type: text/plain\\r\\nContent-Length: 2\\r\\n\\r\\n'\nhead -c 300000 /dev/zero\n",
        "",
        "",
    );
    let r = s.get("/flood.cgi");
    assert_eq!((r.status, r.body.len()), (200, 2));
    assert!(
        eventually(Duration::from_secs(5), || s.error_log().contains("were not logged")),
        "{}",
        s.error_log().len()
    );
    let log = s.error_log();
    // 4,000 lines of 47 bytes written, about 1,400 (64 KiB) logged.
    let logged = log.lines().filter(|l| l.contains("noise-line-")).count();
    assert!((1000..2000).contains(&logged), "{logged} stderr lines in the log");
    assert_eq!(
        log.matches("more than its Content-Length").count(),
        1,
        "{}",
        &log[log.len().saturating_sub(2000)..]
    );
}

/// As nginx in front of fcgiwrap: a script's X-Accel-Redirect has corral
/// serve that file, with the download's fields carried over, and an
/// X-Accel-* field never reaches the client.
#[test]
fn x_accel_redirect_from_a_script_serves_the_file() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(root.join("protected")).unwrap();
    std::fs::write(root.join("protected/report.txt"), "the report\n").unwrap();
    let s = one_script_server(
        dir,
        "get.cgi",
        "#!/bin/sh\nif [ \"$QUERY_STRING\" = bad ]; then printf 'X-Accel-Redirect: http://elsewhere/\\n\\n'; exit; fi\n\
         if [ \"$QUERY_STRING\" = other ]; then printf 'X-Accel-Buffering: no\\nContent-Type: text/plain\\n\\nplain\\n'; exit; fi\n\
         printf 'X-Accel-Redirect: /protected/report.txt\\nContent-Disposition: attachment; filename=r.txt\\nContent-Type: text/plain\\n\\nSECRET BODY\\n'\n",
        "",
        "",
    );
    let r = s.get("/get.cgi");
    assert_eq!(r.status, 200, "{}", s.error_log());
    assert_eq!(r.text(), "the report\n");
    assert_eq!(r.header("content-disposition"), Some("attachment; filename=r.txt"));
    assert!(r.header("x-accel-redirect").is_none());
    assert_eq!(s.get("/get.cgi?bad").status, 502);
    let r = s.get("/get.cgi?other");
    assert_eq!(r.text(), "plain\n");
    assert!(r.header("x-accel-buffering").is_none(), "{:?}", r.headers);
    // Turned off: the field is dropped, the script's own answer goes out.
    let dir = TempDir::new();
    std::fs::create_dir_all(dir.path().join("www/protected")).unwrap();
    std::fs::write(dir.path().join("www/protected/report.txt"), "the report\n").unwrap();
    let s = one_script_server(
        dir,
        "get.cgi",
        "#!/bin/sh\nprintf 'X-Accel-Redirect: /protected/report.txt\\nContent-Type: text/plain\\n\\nown body\\n'\n",
        "",
        "x_accel_redirect = false",
    );
    let r = s.get("/get.cgi");
    assert_eq!(r.text(), "own body\n", "{}", s.error_log());
    assert!(r.header("x-accel-redirect").is_none());
}

/// A script that exits at once but leaves a child holding its output:
/// the timeout kills that child too (its group), nothing is orphaned. The
/// group was skipped once the script itself had been reaped.
#[test]
fn a_timeout_kills_what_an_exited_script_left_holding_its_output() {
    let name = format!("300.{}", std::process::id());
    let s = one_script_server(
        TempDir::new(),
        "bg.cgi",
        &format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nstarted\\n'\nsleep {name} &\n"),
        "",
        "timeout = \"1s\"",
    );
    let (_, out) = curl(&["-m", "10", &format!("http://127.0.0.1:{}/bg.cgi", s.port)]);
    assert!(String::from_utf8_lossy(&out).contains("started"));
    let running = || any_process_named(&name);
    assert!(
        eventually(Duration::from_secs(5), || !running()),
        "the script's child was left running"
    );
}

#[test]
fn descriptors_the_launcher_left_open_do_not_reach_scripts() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    let bin = dir.path().join("cgi-bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "topsecret").unwrap();
    write_script(
        &bin.join("fd7.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\n'\n\
         if [ -e /proc/self/fd/7 ]; then echo open; cat <&7; else echo closed; fi\n",
    );
    // The launcher leaves fd 7 open on a file, then becomes corral.
    let wrapper = dir.path().join("launch.sh");
    write_script(
        &wrapper,
        &format!("#!/bin/sh\nexec 7<'{}'\nexec '{BIN}' \"$@\"\n", secret.display()),
    );
    let o = Opts {
        server: format!(
            "[[server.location]]\nmatch = \"^~ /cgi-bin/\"\ncgi = {{ dir = \"{}\" }}\n",
            bin.display()
        ),
        ..Opts::default()
    };
    let s = Server::launch(o, dir, root, wrapper.to_str().unwrap());
    // The master itself still has it (it is only marked close-on-exec).
    assert!(
        std::path::Path::new(&format!("/proc/{}/fd/7", s.pid())).exists(),
        "the wrapper did open fd 7"
    );
    let r = s.get("/cgi-bin/fd7.sh");
    assert_eq!(r.status, 200);
    assert_eq!(r.text().trim(), "closed", "{}", r.text());
}

/// A graceful stop that runs past shutdown_timeout stops its workers so
/// that their CGI scripts go with them: a plain SIGKILL of the worker
/// left them running, orphaned, after corral had exited.
#[test]
fn shutdown_timeout_leaves_no_script_running() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let name = format!("302.{}", std::process::id());
    write_script(
        &root.join("long.cgi"),
        &format!("#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nstarted\\n'\nsleep {name}\n"),
    );
    let o = Opts {
        main: "workers = 1\nshutdown_timeout = \"1s\"".into(),
        server: "[[server.location]]\nmatch = \"~ \\\\.cgi$\"\ncgi = { extensions = [\".cgi\"] }\n".into(),
        ..Opts::default()
    };
    let mut s = Server::with_root(o, dir, root);
    let running = || any_process_named(&name);
    let port = s.port;
    let client = std::thread::spawn(move || curl(&["-m", "10", &format!("http://127.0.0.1:{port}/long.cgi")]));
    assert!(eventually(Duration::from_secs(5), running), "{}", s.error_log());
    s.signal("QUIT");
    assert!(s.wait_exit(Duration::from_secs(10)).is_some(), "{}", s.error_log());
    assert!(
        eventually(Duration::from_secs(3), || !running()),
        "a script outlived corral: {}",
        s.error_log()
    );
    let _ = client.join();
}

/// A script the workers' user may not reach is a 403 that says why in the
/// error log (it was silent).
#[test]
fn a_cgi_script_the_workers_cannot_reach_is_a_logged_403() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let dir = TempDir::new();
    let root = dir.path().join("www");
    let bin = dir.path().join("cgi-bin");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(bin.join("private")).unwrap();
    write_script(
        &bin.join("private/x.sh"),
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nx\\n'\n",
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("private"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let o = Opts {
        main: "user = \"nobody\"".into(),
        server: format!(
            "[[server.location]]\nmatch = \"^~ /cgi-bin/\"\ncgi = {{ dir = \"{}\" }}\n",
            bin.display()
        ),
        ..Opts::default()
    };
    let s = Server::with_root(o, dir, root);
    assert_eq!(s.get("/cgi-bin/private/x.sh").status, 403);
    assert!(
        eventually(Duration::from_secs(2), || s
            .error_log()
            .contains("Permission denied (13), refused with 403")),
        "{}",
        s.error_log()
    );
}
