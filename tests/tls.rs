//! HTTPS end to end with real clients: curl, `openssl s_client` and
//! Python's `ssl`, against certificates made here with `openssl req`.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A certificate and its key: `kind` is "ec" (P-256) or "rsa".
fn make_cert(dir: &Path, name: &str, kind: &str, cn: &str, serial: u32) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let mut args: Vec<String> = vec!["req".into(), "-x509".into(), "-nodes".into()];
    match kind {
        "ec" => args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"].map(String::from)),
        _ => args.extend(["-newkey", "rsa:2048"].map(String::from)),
    }
    args.extend([
        "-keyout".into(),
        key.display().to_string(),
        "-out".into(),
        cert.display().to_string(),
        "-days".into(),
        "30".into(),
        "-subj".into(),
        format!("/CN={cn}"),
        "-addext".into(),
        format!("subjectAltName=DNS:{cn}"),
        "-set_serial".into(),
        serial.to_string(),
    ]);
    let out = Command::new("openssl")
        .args(&args)
        .output()
        .expect("openssl is installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// A server on a TLS port (its `port`) with `certs` (cert, key) pairs.
fn tls_server(dir: TempDir, server: &str, main: &str) -> Server {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
    Server::with_root(
        Opts {
            main: main.into(),
            server: format!("listen = \"127.0.0.1:{{port}} tls\"\n{server}"),
            ..Opts::default()
        },
        dir,
        root,
    )
}

fn certificate_keys(c: &Path, k: &Path) -> String {
    format!(
        "certificate = \"{}\"\ncertificate_key = \"{}\"\n",
        c.display(),
        k.display()
    )
}

/// `openssl s_client` with `args`, stdin from `input`; its stdout and stderr.
fn s_client(port: u16, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input).unwrap();
    drop(stdin);
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            kill(pid, "KILL");
            panic!("s_client {args:?} hangs");
        }
    };
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// The subject CN of the certificate the server sends for `sni` (none: no SNI).
fn served_cn(port: u16, sni: Option<&str>) -> String {
    let mut args = vec!["-brief"];
    match sni {
        Some(n) => args.extend(["-servername", n]),
        None => args.push("-noservername"),
    }
    let out = s_client(port, &args, b"");
    out.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: CN = "))
        .unwrap_or_else(|| panic!("no peer certificate in: {out}"))
        .trim()
        .to_string()
}

fn curl_https(port: u16, host: &str, ca: &Path, extra: &[&str], path: &str) -> (bool, String) {
    let resolve = format!("{host}:{port}:127.0.0.1");
    let url = format!("https://{host}:{port}{path}");
    let mut args = vec!["--cacert", ca.to_str().unwrap(), "--resolve", &resolve];
    args.extend_from_slice(extra);
    args.push(&url);
    let (ok, out) = curl(&args);
    (ok, String::from_utf8_lossy(&out).into_owned())
}

fn both_versions(mode: &str) {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let s = tls_server(dir, &certificate_keys(&c, &k), &format!("event_mode = \"{mode}\""));
    for v in [["--tlsv1.2", "--tls-max", "1.2"], ["--tlsv1.3", "--tls-max", "1.3"]] {
        let (ok, body) = curl_https(s.port, "site.test", &c, &v, "/");
        assert!(ok, "{v:?}: {}", s.error_log());
        assert_eq!(body, "<h1>hello</h1>\n");
        let (ok, proto) = curl_https(
            s.port,
            "site.test",
            &c,
            &[
                v[0],
                v[1],
                v[2],
                "-o",
                "/dev/null",
                "-w",
                "%{http_version} %{ssl_verify_result}",
            ],
            "/",
        );
        assert!(ok);
        assert_eq!(proto, "1.1 0", "{v:?}");
    }
    // A large file, range and HEAD through the record layer.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(s.root.join("big.bin"), &big).unwrap();
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "--cacert", c.to_str().unwrap(), "--resolve"])
        .arg(format!("site.test:{}:127.0.0.1", s.port))
        .arg(format!("https://site.test:{}/big.bin", s.port))
        .output()
        .unwrap();
    assert!(
        out.status.success() && out.stdout == big,
        "big file: {} bytes",
        out.stdout.len()
    );
    let (ok, part) = curl_https(s.port, "site.test", &c, &["-r", "1000-1009"], "/big.bin");
    assert!(ok && part == String::from_utf8_lossy(&big[1000..1010]));
    let (ok, head) = curl_https(s.port, "site.test", &c, &["-I"], "/big.bin");
    assert!(ok && head.to_lowercase().contains("content-length: 3000000"), "{head}");
    // Access log entries as for plain HTTP.
    assert!(eventually(Duration::from_secs(3), || s
        .access_log()
        .contains("\"GET /big.bin HTTP/1.1\" 200 3000000")));
}

#[test]
fn https_tls12_and_tls13_edge() {
    both_versions("edge");
}

#[test]
fn https_tls12_and_tls13_level() {
    both_versions("level");
}

#[test]
fn pipelined_requests_and_close_notify() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let s = tls_server(dir, &certificate_keys(&c, &k), "");
    std::fs::write(s.root.join("mid.bin"), vec![b'x'; 100_000]).unwrap();
    let reqs = b"GET /index.html HTTP/1.1\r\nHost: a\r\n\r\nGET /mid.bin HTTP/1.1\r\nHost: a\r\n\r\nGET /index.html HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
    let out = s_client(s.port, &["-quiet", "-ign_eof"], reqs);
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 3, "{out}");
    assert!(out.contains(&"x".repeat(100_000)));
}

#[test]
fn sni_selects_server_and_unknown_names_get_the_default() {
    let dir = TempDir::new();
    let (ca, ka) = make_cert(dir.path(), "a", "ec", "a.test", 1);
    let (cb, kb) = make_cert(dir.path(), "b", "ec", "b.test", 2);
    let (cw, kw) = make_cert(dir.path(), "w", "ec", "x.wild.test", 3);
    let root_b = dir.path().join("www-b");
    std::fs::create_dir_all(&root_b).unwrap();
    std::fs::write(root_b.join("index.html"), "site b\n").unwrap();
    let s = tls_server(
        dir,
        &format!("server_name = \"a.test\"\n{}", certificate_keys(&ca, &ka)),
        "",
    );
    // Two more servers on the same TLS port (`{port}` is replaced).
    let more = format!(
        "[[server]]\nlisten = \"127.0.0.1:{}\"\nserver_name = \"b.test\"\nroot = \"{}\"\n{}\
         [[server]]\nlisten = \"127.0.0.1:{}\"\nserver_name = \"*.wild.test\"\nroot = \"{}\"\n{}",
        s.port,
        root_b.display(),
        certificate_keys(&cb, &kb),
        s.port,
        root_b.display(),
        certificate_keys(&cw, &kw),
    );
    let text = std::fs::read_to_string(&s.config).unwrap() + &more;
    std::fs::write(&s.config, text).unwrap();
    s.signal("HUP");
    assert!(
        eventually(Duration::from_secs(5), || served_cn(s.port, Some("b.test")) == "b.test"),
        "{}",
        s.error_log()
    );
    assert_eq!(served_cn(s.port, Some("a.test")), "a.test");
    assert_eq!(served_cn(s.port, Some("x.wild.test")), "x.wild.test");
    // Unknown and absent names: the default (first) server's certificate.
    assert_eq!(served_cn(s.port, Some("nobody.test")), "a.test");
    assert_eq!(served_cn(s.port, None), "a.test");
    // The request goes to the server of its Host, verified against its certificate.
    let (ok, body) = curl_https(s.port, "b.test", &cb, &[], "/");
    assert!(ok);
    assert_eq!(body, "site b\n");
    // A client verifying a.test while asking for an unknown name fails on
    // the name, not on the handshake: the default certificate came.
    let (ok, _) = curl_https(s.port, "nobody.test", &ca, &[], "/");
    assert!(!ok);
    let (ok, _) = curl_https(s.port, "nobody.test", &ca, &["-k"], "/");
    assert!(ok);
}

#[test]
fn protocols_tls11_refused_and_tls13_only() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let s = tls_server(dir, &certificate_keys(&c, &k), "");
    let out = s_client(s.port, &["-tls1_1", "-brief"], b"");
    assert!(!out.contains("Protocol version: TLSv1.1"), "{out}");
    assert!(out.to_lowercase().contains("alert") || out.contains("error"), "{out}");
    assert!(s_client(s.port, &["-tls1_2", "-brief"], b"").contains("Protocol version: TLSv1.2"));
    let out = s_client(s.port, &["-alpn", "h2,http/1.1"], b"");
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    // Handshake failures are info lines with the client and the reason, not errors.
    assert!(eventually(Duration::from_secs(3), || s.error_log().contains("[info]")
        && s.error_log().contains("TLS error with client 127.0.0.1")));
    assert!(!s.error_log().contains("[error]"), "{}", s.error_log());

    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let s = tls_server(
        dir,
        &format!("{}tls_protocols = [\"TLSv1.3\"]\n", certificate_keys(&c, &k)),
        "",
    );
    assert!(!s_client(s.port, &["-tls1_2", "-brief"], b"").contains("Protocol version: TLSv1.2"));
    assert!(s_client(s.port, &["-tls1_3", "-brief"], b"").contains("Protocol version: TLSv1.3"));
}

#[test]
fn rsa_and_ecdsa_certificates_by_signature_scheme() {
    let dir = TempDir::new();
    let (ce, ke) = make_cert(dir.path(), "ec", "ec", "ecdsa.test", 1);
    let (cr, kr) = make_cert(dir.path(), "rsa", "rsa", "rsa.test", 2);
    let s = tls_server(
        dir,
        &format!(
            "certificate = [\"{}\", \"{}\"]\ncertificate_key = [\"{}\", \"{}\"]\n",
            ce.display(),
            cr.display(),
            ke.display(),
            kr.display()
        ),
        "",
    );
    let cn_for = |sigalgs: &str| {
        let out = s_client(s.port, &["-brief", "-sigalgs", sigalgs], b"");
        out.lines()
            .find_map(|l| l.strip_prefix("Peer certificate: CN = "))
            .unwrap_or_else(|| panic!("{sigalgs}: {out}"))
            .to_string()
    };
    assert_eq!(cn_for("ECDSA+SHA256"), "ecdsa.test");
    assert_eq!(cn_for("rsa_pss_rsae_sha256"), "rsa.test");
    assert_eq!(cn_for("rsa_pss_rsae_sha256:ECDSA+SHA256"), "ecdsa.test");
}

/// Session resumption with tickets, across the workers of one master and
/// across a reload.
#[test]
fn sessions_resume_across_workers_and_reloads() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let sess = dir.path().join("sess.pem");
    let s = tls_server(dir, &certificate_keys(&c, &k), "workers = 4");
    for version in ["-tls1_3", "-tls1_2"] {
        let sess_s = sess.to_str().unwrap();
        let first = s_client(
            s.port,
            &[version, "-ign_eof", "-sess_out", sess_s],
            b"GET / HTTP/1.0\r\n\r\n",
        );
        assert!(first.contains("New, TLS"), "{first}");
        // Connections land on any of the 4 workers.
        for i in 0..8 {
            let again = s_client(
                s.port,
                &[version, "-ign_eof", "-sess_in", sess_s],
                b"GET / HTTP/1.0\r\n\r\n",
            );
            assert!(again.contains("Reused, TLS"), "{version} attempt {i}: {again}");
            assert!(again.contains("<h1>hello</h1>"));
        }
        s.signal("HUP");
        let gen2 = eventually(Duration::from_secs(5), || {
            s.error_log().matches("generation 2").count() >= 4
        });
        assert!(gen2 || s.error_log().contains("generation 3"), "{}", s.error_log());
        std::thread::sleep(Duration::from_millis(300));
        let after = s_client(
            s.port,
            &[version, "-ign_eof", "-sess_in", sess_s],
            b"GET / HTTP/1.0\r\n\r\n",
        );
        assert!(after.contains("Reused, TLS"), "after reload, {version}: {after}");
    }
}

#[test]
fn tickets_can_be_turned_off() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let sess = dir.path().join("sess.pem");
    let s = tls_server(
        dir,
        &format!("{}tls_session_tickets = false\n", certificate_keys(&c, &k)),
        "workers = 1",
    );
    let sess_s = sess.to_str().unwrap();
    let _ = s_client(
        s.port,
        &["-tls1_3", "-ign_eof", "-sess_out", sess_s],
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let again = s_client(
        s.port,
        &["-tls1_3", "-ign_eof", "-sess_in", sess_s],
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(!again.contains("Reused, TLS"), "{again}");
}

#[test]
fn ocsp_response_is_stapled() {
    let dir = TempDir::new();
    let d = dir.path().to_path_buf();
    let sh = format!(
        "set -e; cd {d}; \
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem -days 30 -subj /CN=testca 2>/dev/null; \
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout site.key -out site.csr -subj /CN=site.test 2>/dev/null; \
         printf 'subjectAltName=DNS:site.test\\n' > ext.cnf; \
         openssl x509 -req -in site.csr -CA ca.pem -CAkey ca.key -set_serial 77 -days 30 -extfile ext.cnf -out site.pem 2>/dev/null; \
         printf 'V\\t301231235959Z\\t\\t4D\\tunknown\\t/CN=site.test\\n' > index.txt; \
         openssl ocsp -issuer ca.pem -cert site.pem -reqout req.der -no_nonce 2>/dev/null; \
         openssl ocsp -index index.txt -rsigner ca.pem -rkey ca.key -CA ca.pem -reqin req.der -respout resp.der -ndays 7 2>/dev/null",
        d = d.display()
    );
    let st = Command::new("sh").arg("-c").arg(&sh).status().unwrap();
    assert!(st.success());
    let s = tls_server(
        dir,
        &format!(
            "{}ocsp_staple = \"{}\"\n",
            certificate_keys(&d.join("site.pem"), &d.join("site.key")),
            d.join("resp.der").display()
        ),
        "",
    );
    let out = s_client(s.port, &["-status"], b"");
    assert!(out.contains("OCSP Response Status: successful"), "{out}");
    assert!(out.contains("Cert Status: good"), "{out}");
}

#[test]
fn plain_http_to_the_tls_port_gets_nginx_400() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let s = tls_server(dir, &certificate_keys(&c, &k), "");
    let r = s.get("/");
    assert_eq!(r.status, 400);
    assert!(
        r.text().contains("The plain HTTP request was sent to HTTPS port"),
        "{}",
        r.text()
    );
    assert_eq!(r.header("Connection"), Some("close"));
    assert!(eventually(Duration::from_secs(3), || s
        .access_log()
        .contains("\"GET / HTTP/1.1\" 400")));
}

/// Redirect recipe, `$scheme`, and what CGI scripts see over TLS.
#[test]
fn scheme_https_for_return_and_cgi() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let cgi_dir = dir.path().join("cgi");
    std::fs::create_dir_all(&cgi_dir).unwrap();
    let script = cgi_dir.join("env.cgi");
    write_script(
        &script,
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\n\\nHTTPS=%s SCHEME=%s PORT=%s\\n' \"$HTTPS\" \"$REQUEST_SCHEME\" \"$SERVER_PORT\"\n",
    );
    let plain = free_port();
    let s = tls_server(
        dir,
        &format!(
            "server_name = \"site.test\"\n{}add_header = {{ Strict-Transport-Security = \"max-age=63072000\" }}\n\
             [[server.location]]\nmatch = \"= /scheme\"\nreturn = \"200 $scheme\"\n\
             [[server.cgi]]\nprefix = \"/cgi/\"\ndir = \"{}\"\n\
             [[server]]\nlisten = \"127.0.0.1:{plain}\"\nserver_name = \"site.test\"\n\
             [[server.location]]\nmatch = \"/\"\nreturn = \"301 https://$host$request_uri\"\n",
            certificate_keys(&c, &k),
            cgi_dir.display()
        ),
        "",
    );
    let (ok, body) = curl_https(s.port, "site.test", &c, &[], "/scheme");
    assert!(ok && body == "https", "{body} {}", s.error_log());
    let (ok, head) = curl_https(s.port, "site.test", &c, &["-I"], "/");
    assert!(
        ok && head
            .to_lowercase()
            .contains("strict-transport-security: max-age=63072000"),
        "{head}"
    );
    let (ok, env) = curl_https(s.port, "site.test", &c, &[], "/cgi/env.cgi");
    assert!(ok, "{}", s.error_log());
    assert_eq!(
        env,
        format!("HTTPS=on SCHEME=https PORT={}\n", s.port),
        "{}",
        s.error_log()
    );
    let r = get_on(plain, "/a/b?c=d").expect("the plain server answers");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("Location"), Some("https://x/a/b?c=d"));
}

/// Python's ssl module, verifying the chain and the name.
#[test]
fn python_ssl_client() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "rsa", "site.test", 9);
    let s = tls_server(dir, &certificate_keys(&c, &k), "");
    let py = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile='{ca}')\n\
         for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):\n\
         \x20   ctx.minimum_version = ctx.maximum_version = v\n\
         \x20   with socket.create_connection(('127.0.0.1', {port})) as raw:\n\
         \x20       with ctx.wrap_socket(raw, server_hostname='site.test') as t:\n\
         \x20           t.sendall(b'GET / HTTP/1.1\\r\\nHost: site.test\\r\\nConnection: close\\r\\n\\r\\n')\n\
         \x20           data = b''\n\
         \x20           while True:\n\
         \x20               b = t.recv(65536)\n\
         \x20               if not b: break\n\
         \x20               data += b\n\
         \x20           print(t.version(), t.getpeercert()['serialNumber'], data.split(b'\\r\\n')[0].decode(), data.endswith(b'<h1>hello</h1>\\n'))\n",
        ca = c.display(),
        port = s.port
    );
    let out = Command::new("python3").arg("-c").arg(&py).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", text, String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        text,
        "TLSv1.2 09 HTTP/1.1 200 OK True\nTLSv1.3 09 HTTP/1.1 200 OK True\n"
    );
}

/// The hardening checks on the TLS port: half-close and slowloris during
/// the handshake, garbage instead of a ClientHello.
#[test]
fn handshake_abuse_is_closed_promptly() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
    let s = Server::with_root(
        Opts {
            http: "client_header_timeout = \"2s\"".into(),
            server: format!("listen = \"127.0.0.1:{{port}} tls\"\n{}", certificate_keys(&c, &k)),
            ..Opts::default()
        },
        dir,
        root,
    );
    let closes_within = |mut t: TcpStream, limit: Duration| {
        t.set_read_timeout(Some(limit)).unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            match t.read_retry(&mut buf) {
                Ok(0) => return Some(start.elapsed()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(start.elapsed()),
                Err(_) => return None,
            }
        }
    };
    // A partial ClientHello record header, then FIN.
    let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    (&t).write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]).unwrap();
    t.shutdown(Shutdown::Write).unwrap();
    assert!(
        closes_within(t, Duration::from_secs(1)).is_some(),
        "half-close during handshake"
    );
    // Garbage that claims to be a handshake record.
    let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    (&t).write_all(&[0x16, 0x03, 0x03, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00])
        .unwrap();
    assert!(
        closes_within(t, Duration::from_secs(1)).is_some(),
        "garbage ClientHello"
    );
    // Random bytes with the high bit: an SSLv2-style hello rustls refuses.
    let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    (&t).write_all(&[0x80, 0x2e, 0x01, 0x03, 0x01, 0xff, 0xff, 0xff])
        .unwrap();
    assert!(closes_within(t, Duration::from_secs(1)).is_some(), "SSLv2 hello");
    // A real ClientHello with a forged record behind it in the same segment.
    let hello = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fuzz/corpus/tls_client_bytes/clienthello13"
    ))
    .unwrap();
    let mut t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    let mut bytes = hello.clone();
    bytes.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x10]);
    bytes.extend_from_slice(&[0x41; 16]);
    t.write_all(&bytes).unwrap();
    assert!(
        closes_within(t, Duration::from_secs(2)).is_some(),
        "forged record after the ClientHello"
    );
    // Slowloris: a handshake started, then silence: closed at the header timeout.
    let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    (&t).write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    let took = closes_within(t, Duration::from_secs(8)).expect("slow handshake closed");
    assert!(took >= Duration::from_millis(1500), "{took:?}");
    // An idle connection that never sends a byte: the same.
    let t = TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    assert!(closes_within(t, Duration::from_secs(8)).is_some());
    // Still serving.
    let out = s_client(s.port, &["-quiet"], b"GET / HTTP/1.0\r\n\r\n");
    assert!(out.contains("<h1>hello</h1>"), "{out}");
    let log = s.error_log();
    assert!(log.contains("TLS error with client 127.0.0.1"), "{log}");
    assert!(
        !log.contains("[error]") && !log.contains("[crit]") && !log.contains("panick"),
        "{log}"
    );
}

#[test]
fn config_errors_name_file_line_and_key() {
    let dir = TempDir::new();
    let d = dir.path();
    let (c1, k1) = make_cert(d, "one", "ec", "one.test", 1);
    let (_c2, k2) = make_cert(d, "two", "ec", "two.test", 2);
    std::fs::write(d.join("garbage.pem"), "not a certificate\n").unwrap();
    let enc = d.join("enc.key");
    let out = Command::new("openssl")
        .args(["pkey", "-aes256", "-passout", "pass:x", "-in"])
        .arg(&k1)
        .arg("-out")
        .arg(&enc)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let www = d.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let cases = [
        (
            format!(
                "listen = \"127.0.0.1:9 tls\"\ncertificate = \"{}/missing.pem\"\ncertificate_key = \"{}\"\n",
                d.display(),
                k1.display()
            ),
            ":5: server.certificate:",
            "missing.pem",
        ),
        (
            format!(
                "listen = \"127.0.0.1:9 tls\"\ncertificate = \"{}\"\ncertificate_key = \"{}\"\n",
                c1.display(),
                k2.display()
            ),
            ":6: server.certificate_key:",
            "does not match",
        ),
        (
            format!(
                "listen = \"127.0.0.1:9 tls\"\ncertificate = \"{}/garbage.pem\"\ncertificate_key = \"{}\"\n",
                d.display(),
                k1.display()
            ),
            ":5: server.certificate:",
            "no certificate found",
        ),
        (
            "listen = \"127.0.0.1:9 tls\"\n".to_string(),
            ":4: server.listen:",
            "no `certificate`",
        ),
        (
            format!(
                "listen = \"127.0.0.1:9 tls\"\ncertificate = \"{}\"\ncertificate_key = \"{}\"\n",
                c1.display(),
                enc.display()
            ),
            ":6: server.certificate_key:",
            "the private key is encrypted",
        ),
        (
            format!(
                "listen = \"127.0.0.1:9 tls\"\ncertificate = \"{}\"\ncertificate_key = \"{}\"\ntls_protocols = [\"TLSv1.1\"]\n",
                c1.display(),
                k1.display()
            ),
            ":7: server.tls_protocols:",
            "TLSv1.1 is not supported",
        ),
        (
            "listen = \"127.0.0.1:9 tls\"\ncertificate_key = \"x.key\"\n".to_string(),
            ":5: server.certificate_key:",
            "needs `certificate`",
        ),
        (
            "listen = \"127.0.0.1:9 tsl\"\n".to_string(),
            ":4: server.listen:",
            "unknown parameter \"tsl\"",
        ),
    ];
    for (server, at, what) in cases {
        let conf = d.join("c.toml");
        std::fs::write(
            &conf,
            format!(
                "[main]\nworkers = 1\n[[server]]\n{server}root = \"{}\"\n",
                www.display()
            ),
        )
        .unwrap();
        let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
        assert_eq!(code, 1, "{server}: {out}");
        assert!(
            out.contains(&format!("c.toml{at}")) && out.contains(what),
            "{server}\nwanted {at} {what}\ngot: {out}"
        );
    }
    // A certificate about to expire: a warning naming it, the test still passes.
    let (c3, k3) = {
        let cert = d.join("soon.pem");
        let key = d.join("soon.key");
        let st = Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "3",
                "-subj",
                "/CN=soon",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        (cert, key)
    };
    let conf = d.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[[server]]\nlisten = \"127.0.0.1:9 tls\"\nroot = \"{}\"\n{}",
            www.display(),
            certificate_keys(&c3, &k3)
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("c.toml:4: server.certificate:") && out.contains("soon.pem: the certificate expires in 3 day(s)"),
        "{out}"
    );
    // A server on a plain address of the same port as a TLS one elsewhere: the address is TLS.
    let conf = d.join("c.toml");
    std::fs::write(
        &conf,
        format!(
            "[[server]]\nlisten = \"127.0.0.1:9 tls\"\nroot = \"{w}\"\n{ck}[[server]]\nlisten = \"127.0.0.1:9\"\nroot = \"{w}\"\n",
            w = www.display(),
            ck = certificate_keys(&c1, &k1)
        ),
    )
    .unwrap();
    let (code, out) = run_corral(&["-t", "-c", conf.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(":7: server.listen:") && out.contains("no `certificate`"),
        "{out}"
    );
}

/// A reload swaps the certificate (the new serial is seen) while clients
/// make new TLS connections and keep-alive requests: none fails.
#[test]
fn reload_swaps_certificate_under_load() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let s = tls_server(dir, &certificate_keys(&c, &k), "");
    let script = s.dir.path().join("load.py");
    std::fs::write(
        &script,
        r#"import socket, ssl, sys, threading, time
port, ca, seconds = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
ok = fail = 0
serials = set()
lock = threading.Lock()
errors = []
def worker(keep):
    global ok, fail
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    end = time.time() + seconds
    while time.time() < end:
        try:
            with socket.create_connection(('127.0.0.1', port), timeout=10) as raw:
                with ctx.wrap_socket(raw, server_hostname='site.test') as t:
                    serial = t.getpeercert(binary_form=True)
                    f = t.makefile('rb')
                    for i in range(5 if keep else 1):
                        last = i == (4 if keep else 0)
                        t.sendall(b'GET / HTTP/1.1\r\nHost: site.test\r\n' + (b'Connection: close\r\n' if last else b'') + b'\r\n')
                        line = f.readline()
                        length = 0
                        close = False
                        while True:
                            h = f.readline()
                            if h in (b'\r\n', b''): break
                            if h.lower().startswith(b'content-length:'): length = int(h.split(b':')[1])
                            if h.lower() == b'connection: close\r\n': close = True
                        body = f.read(length)
                        good = line.startswith(b'HTTP/1.1 200') and body == b'<h1>hello</h1>\n'
                        with lock:
                            if good: ok += 1
                            else:
                                fail += 1; errors.append(repr(line))
                        # A retiring worker ends keep-alive: go on on a new connection.
                        if close: break
                    with lock: serials.add(serial)
        except Exception as e:
            with lock:
                fail += 1; errors.append(repr(e))
threads = [threading.Thread(target=worker, args=(i % 2 == 0,)) for i in range(6)]
for t in threads: t.start()
for t in threads: t.join()
print(ok, fail, len(serials), errors[:3])
"#,
    )
    .unwrap();
    let mut load = Command::new("python3")
        .arg(&script)
        .arg(s.port.to_string())
        .arg(&c)
        .arg("4")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    // Renew: a new serial in place of the old files, then reload.
    let (c2, k2) = make_cert(s.dir.path(), "renewed", "ec", "site.test", 2);
    std::fs::copy(&c2, &c).unwrap();
    std::fs::copy(&k2, &k).unwrap();
    s.signal("HUP");
    std::thread::sleep(Duration::from_millis(1200));
    s.signal("HUP");
    let mut out = String::new();
    load.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(load.wait().unwrap().success());
    let f: Vec<&str> = out.split_whitespace().collect();
    let (ok, fail, serials): (usize, usize, usize) =
        (f[0].parse().unwrap(), f[1].parse().unwrap(), f[2].parse().unwrap());
    assert_eq!(fail, 0, "{out}\n{}", s.error_log());
    assert!(ok > 100, "{out}");
    assert_eq!(serials, 2, "both certificates were served: {out}");
    let serial = s_client(s.port, &["-showcerts"], b"");
    let pem_end = serial.find("-----END CERTIFICATE-----").unwrap();
    let pem_start = serial.find("-----BEGIN CERTIFICATE-----").unwrap();
    let mut x = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    x.stdin
        .take()
        .unwrap()
        .write_all(&serial.as_bytes()[pem_start..pem_end + 25])
        .unwrap();
    let mut sn = String::new();
    x.stdout.take().unwrap().read_to_string(&mut sn).unwrap();
    x.wait().unwrap();
    assert_eq!(sn.trim(), "serial=02");
}

/// php-fpm behind a TLS port sees HTTPS=on, the https scheme and the port.
#[test]
fn php_fpm_sees_https() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(
        root.join("env.php"),
        "<?php echo $_SERVER['HTTPS'] ?? '-', ' ', $_SERVER['REQUEST_SCHEME'], ' ', $_SERVER['SERVER_PORT'], ' ', strlen(file_get_contents('php://input')), \"\\n\";\n",
    )
    .unwrap();
    let sock = dir.path().join("fpm.sock");
    let fpm = common::php::Php::fpm(dir.path(), "tls", sock.to_str().unwrap(), 2, "");
    let s = Server::with_root(
        Opts {
            server: format!(
                "listen = \"127.0.0.1:{{port}} tls\"\n{}\
                 [[server.location]]\nmatch = \"~ \\\\.php$\"\nfastcgi = {{ pass = \"{}\" }}\n",
                certificate_keys(&c, &k),
                fpm.pass
            ),
            ..Opts::default()
        },
        dir,
        root,
    );
    let (ok, out) = curl_https(s.port, "site.test", &c, &[], "/env.php");
    assert!(ok, "{}", s.error_log());
    assert_eq!(out, format!("on https {} 0\n", s.port));
    // A 300 KiB POST body through the record layer to FCGI_STDIN.
    let file = s.dir.path().join("body.bin");
    std::fs::write(&file, vec![b'a'; 300 * 1024]).unwrap();
    let at = format!("@{}", file.display());
    let (ok, out) = curl_https(
        s.port,
        "site.test",
        &c,
        &["--data-binary", &at, "-H", "Content-Type: application/octet-stream"],
        "/env.php",
    );
    assert!(ok, "{}", s.error_log());
    assert_eq!(out, format!("on https {} {}\n", s.port, 300 * 1024));
}

/// Each accept mode, with new TLS connections landing on both workers and
/// tickets resuming wherever they land.
#[test]
fn every_accept_mode_serves_tls() {
    for mode in ["exclusive", "reuseport", "dispatch"] {
        let dir = TempDir::new();
        let (c, k) = make_cert(dir.path(), "site", "ec", "site.test", 1);
        let sess = dir.path().join("sess.pem");
        let s = tls_server(
            dir,
            &certificate_keys(&c, &k),
            &format!("workers = 2\naccept = \"{mode}\""),
        );
        for _ in 0..10 {
            let (ok, body) = curl_https(s.port, "site.test", &c, &[], "/");
            assert!(ok && body == "<h1>hello</h1>\n", "{mode}: {}", s.error_log());
        }
        let sess_s = sess.to_str().unwrap();
        let _ = s_client(s.port, &["-ign_eof", "-sess_out", sess_s], b"GET / HTTP/1.0\r\n\r\n");
        for _ in 0..4 {
            let again = s_client(s.port, &["-ign_eof", "-sess_in", sess_s], b"GET / HTTP/1.0\r\n\r\n");
            assert!(
                again.contains("Reused, TLS") && again.contains("<h1>hello</h1>"),
                "{mode}: {again}"
            );
        }
    }
}

/// A binary upgrade (USR2, WINCH, QUIT) keeps the TLS port serving; the
/// new master's tickets are its own (documented: one full handshake).
#[test]
fn binary_upgrade_keeps_serving_tls() {
    let certs = TempDir::new();
    let (c, k) = make_cert(certs.path(), "site", "ec", "site.test", 1);
    let (mut s, _bin) = start_copy(Opts {
        server: format!("listen = \"127.0.0.1:{{port}} tls\"\n{}", certificate_keys(&c, &k)),
        ..Opts::default()
    });
    let (ok, body) = curl_https(s.port, "site.test", &c, &[], "/");
    assert!(ok && body == "hello", "{}", s.error_log());
    let old_workers = s.workers();
    let new = upgrade(&s);
    s.signal("WINCH");
    assert!(eventually(Duration::from_secs(10), || old_workers
        .iter()
        .all(|w| !alive(*w))));
    for _ in 0..5 {
        let (ok, body) = curl_https(s.port, "site.test", &c, &[], "/");
        assert!(ok && body == "hello", "{}", s.error_log());
    }
    s.signal("QUIT");
    assert_eq!(s.wait_exit(Duration::from_secs(10)), Some(0));
    let (ok, _) = curl_https(s.port, "site.test", &c, &[], "/");
    assert!(ok);
    stop_pid(new);
}

/// A real browser: headless Chromium (BoringSSL, GREASE, a post-quantum key
/// share) loads a page over HTTPS, its script fetching more over the same
/// origin.
#[test]
fn chromium_loads_a_page_over_https() {
    let dir = TempDir::new();
    let (c, k) = make_cert(dir.path(), "site", "ec", "localhost", 1);
    let s = tls_server(dir, &certificate_keys(&c, &k), "");
    std::fs::write(
        s.root.join("page.html"),
        "<html><body><p id=a>static</p><script>fetch('/data.txt').then(r => r.text()).then(t => { document.getElementById('a').textContent = 'fetched ' + t.trim() + ' ' + location.protocol; });</script></body></html>\n",
    )
    .unwrap();
    std::fs::write(s.root.join("data.txt"), "over tls\n").unwrap();
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--ignore-certificate-errors",
            "--virtual-time-budget=3000",
            "--dump-dom",
        ])
        .arg(format!("https://localhost:{}/page.html", s.port))
        .stderr(Stdio::null())
        .output()
        .expect("chromium is installed (.ci/run installs it)");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("fetched over tls https:"), "{dom}\n{}", s.error_log());
    assert!(eventually(Duration::from_secs(3), || s
        .access_log()
        .contains("\"GET /data.txt HTTP/1.1\" 200")));
}

/// `[http]` holds defaults for every server (nginx's `ssl_*` at `http`
/// level): a server without its own certificate uses `[http]`'s, one with
/// its own keeps it; protocols come from `[http]` unless the server says.
#[test]
fn http_level_defaults() {
    let dir = TempDir::new();
    let (cd, kd) = make_cert(dir.path(), "default", "ec", "default.test", 1);
    let (co, ko) = make_cert(dir.path(), "own", "ec", "own.test", 2);
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "<h1>hello</h1>\n").unwrap();
    let s = Server::with_root(
        Opts {
            http: format!("{}tls_protocols = \"TLSv1.3\"\n", certificate_keys(&cd, &kd)),
            server: "listen = \"127.0.0.1:{port} tls\"\nserver_name = \"default.test\"\n".into(),
            more: format!(
                "[[server]]\nlisten = \"127.0.0.1:{{port}} tls\"\nserver_name = \"own.test\"\nroot = \"{}\"\n{}tls_protocols = [\"TLSv1.2\", \"TLSv1.3\"]\n",
                root.display(),
                certificate_keys(&co, &ko)
            ),
            ..Opts::default()
        },
        dir,
        root,
    );
    assert_eq!(served_cn(s.port, Some("default.test")), "default.test");
    assert_eq!(served_cn(s.port, Some("own.test")), "own.test");
    // [http]'s TLS 1.3-only for the first server, both for the second.
    let v12 = |sni: &str| {
        s_client(s.port, &["-tls1_2", "-brief", "-servername", sni], b"").contains("Protocol version: TLSv1.2")
    };
    assert!(!v12("default.test"));
    assert!(v12("own.test"));
    let (ok, body) = curl_https(s.port, "default.test", &cd, &[], "/");
    assert!(ok && body == "<h1>hello</h1>\n", "{}", s.error_log());
}

/// A request and the client's close_notify in one packet (no FIN): the
/// answer, then the connection ends at once (nginx too), in edge and level
/// mode; it was held open until keepalive_timeout, as no event followed.
#[test]
fn close_notify_behind_the_request_ends_the_connection() {
    const CLIENT: &str = r#"
import ssl, socket, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(i, o, server_hostname="localhost")
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
while True:
    try:
        obj.do_handshake(); s.sendall(o.read()); break
    except ssl.SSLWantReadError:
        s.sendall(o.read()); i.write(s.recv(65536))
obj.write(b"GET /index.html HTTP/1.1\r\nHost: localhost\r\n\r\n")
try:
    obj.unwrap()
except ssl.SSLWantReadError:
    pass
s.sendall(o.read())
s.settimeout(10)
raw, t0 = b"", time.time()
try:
    while True:
        d = s.recv(65536)
        if not d:
            break
        raw += d
    end = "EOF"
except socket.timeout:
    end = "TIMEOUT"
i.write(raw)
plain = b""
try:
    while True:
        r = obj.read(65536)
        if not r:
            break
        plain += r
except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
    pass
print(plain.split(b"\r\n")[0].decode(), end, "%.1f" % (time.time() - t0))
"#;
    for mode in ["edge", "level"] {
        let dir = TempDir::new();
        let (c, k) = make_cert(dir.path(), "server", "ec", "localhost", 1);
        let s = tls_server(dir, &certificate_keys(&c, &k), &format!("event_mode = \"{mode}\""));
        let out = Command::new("python3")
            .args(["-c", CLIENT, &s.port.to_string()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            text.starts_with("HTTP/1.1 200 OK EOF"),
            "{mode}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
