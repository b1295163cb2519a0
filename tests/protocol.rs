//! HTTP/1.1 framing, keep-alive, pipelining and malformed input, each run
//! under both epoll trigger modes.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

fn server(mode: &str) -> Server {
    let s = Server::with(Opts {
        main: format!("event_mode = \"{mode}\""),
        http: "client_max_body_size = \"64k\"\nmax_header_size = \"4k\"\nmax_uri_length = 2048".into(),
        ..Opts::default()
    });
    std::fs::write(s.root.join("a.txt"), "AAAA").unwrap();
    std::fs::write(s.root.join("b.txt"), "BB").unwrap();
    s
}

fn status_of(raw: &[u8]) -> u16 {
    String::from_utf8_lossy(raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Sends `req` and expects `code`, then that the server closed the connection.
fn expect_close(s: &Server, req: &str, code: u16) {
    let mut c = s.connect();
    c.write_all(req.as_bytes()).unwrap();
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    assert_eq!(
        rs.len(),
        1,
        "exactly one response for {req:?}: {}",
        String::from_utf8_lossy(&out)
    );
    assert_eq!(rs[0].status, code, "{req:?}");
    assert_eq!(rs[0].header("connection"), Some("close"), "{req:?}");
}

macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod edge { $( #[test] fn $name() { super::$name("edge") } )* }
        mod level { $( #[test] fn $name() { super::$name("level") } )* }
    };
}

both_modes!(
    keep_alive_and_pipelining,
    http10_keep_alive_rules,
    bodies_are_framed_when_discarded,
    expect_continue,
    smuggling_and_malformed_heads,
    options_asterisk,
    later_minor_version,
    limits,
    split_writes_and_slow_client,
    many_concurrent_connections,
);

fn keep_alive_and_pipelining(mode: &str) {
    let s = server(mode);
    // Three pipelined requests in one write; responses come back in order.
    let mut c = s.connect();
    c.write_all(
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let rs = parse_responses(&read_to_close(&mut c), false);
    let bodies: Vec<String> = rs.iter().map(|r| r.text()).collect();
    assert_eq!(bodies, ["AAAA", "BB", "AAAA"]);
    assert_eq!(rs[0].header("connection"), None, "HTTP/1.1 keeps alive by default");
    assert_eq!(rs[2].header("connection"), Some("close"));

    // Sequential requests on one kept-alive connection.
    let mut c = s.connect();
    for _ in 0..20 {
        c.write_all(b"GET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 1024];
        let mut got = Vec::new();
        while !got.ends_with(b"BB") {
            let n = c.read_retry(&mut buf).unwrap();
            assert!(n > 0, "connection closed early");
            got.extend_from_slice(&buf[..n]);
        }
        assert_eq!(status_of(&got), 200);
    }
}

fn http10_keep_alive_rules(mode: &str) {
    let s = server(mode);
    // 1.0 without keep-alive: closed after the response.
    let out = s.raw(b"GET /a.txt HTTP/1.0\r\n\r\n");
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].text(), "AAAA");
    // 1.0 with keep-alive: the connection stays for a second request.
    let out = s.raw(b"GET /a.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b.txt HTTP/1.0\r\n\r\n");
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].header("connection"), Some("keep-alive"));
    assert_eq!(rs[1].text(), "BB");
    // A `close` among the options wins (RFC 9112 §9.6).
    let out = s.raw(b"GET /a.txt HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\nGET /b.txt HTTP/1.0\r\n\r\n");
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 1);
    assert_eq!(rs[0].header("connection"), Some("close"));
}

fn bodies_are_framed_when_discarded(mode: &str) {
    let s = server(mode);
    // Content-Length body on a GET, then the next request must parse cleanly.
    let out = s.raw(
        b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nGET /GET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let rs = parse_responses(&out, false);
    assert_eq!(rs.iter().map(|r| r.text()).collect::<Vec<_>>(), ["AAAA", "BB"]);
    // Chunked body with an extension and a trailer.
    let out = s.raw(
        b"POST /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4;ext=1\r\nGET \r\n3\r\n/b.\r\n0\r\nX-Trailer: y\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 2, "{}", String::from_utf8_lossy(&out));
    assert_eq!(rs[0].status, 405);
    assert_eq!(rs[1].text(), "BB");
    // A body over the limit: 413 and close.
    expect_close(
        &s,
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n",
        413,
    );
    let big_chunked = format!(
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n0\r\n\r\n",
        70000,
        "a".repeat(70000)
    );
    // A chunked body only shows its size while it comes: 413 if the part
    // already read passes the limit, else the answer (which reads no body)
    // went first, as nginx's; either way the connection closes.
    let mut c = s.connect();
    c.write_all(big_chunked.as_bytes()).unwrap();
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert!(
        rs[0].status == 413 || (rs[0].status, rs[0].text().as_str()) == (200, "AAAA"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    // A body that is slow to come does not hold the answer back; the
    // connection goes on once the body is in.
    let mut c = s.connect();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /missing HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello")
        .unwrap();
    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
    let (code, _) = read_response(&mut r).expect("the 404 before the body is complete");
    assert_eq!(code, 404);
    c.write_all(b"worldPOST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n")
        .unwrap();
    let (code, _) = read_response(&mut r).expect("405 before its body");
    assert_eq!(code, 405);
    c.write_all(b"abcGET /b.txt HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let (code, body) = read_response(&mut r).unwrap();
    assert_eq!((code, body.as_slice()), (200, &b"BB"[..]));
}

fn expect_continue(mode: &str) {
    let s = server(mode);
    let mut c = s.connect();
    c.write_all(b"GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = c.read_retry(&mut buf).unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    c.write_all(b"abcdGET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut rest = buf[n..n].to_vec();
    rest.extend(read_to_close(&mut c));
    let rs = parse_responses(&rest, false);
    assert_eq!(rs.iter().map(|r| r.text()).collect::<Vec<_>>(), ["AAAA", "BB"]);
    // A request that will be refused gets no 100 Continue, only the final status.
    let mut c = s.connect();
    c.write_all(b"POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut c);
    assert_eq!(status_of(&out), 405, "{}", String::from_utf8_lossy(&out));
    assert!(!String::from_utf8_lossy(&out).contains("100 Continue"));
}

fn smuggling_and_malformed_heads(mode: &str) {
    let s = server(mode);
    let cases: &[(&str, u16)] = &[
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde",
            400,
        ),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcde",
            400,
        ),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: -4\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            400,
        ),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n",
            400,
        ),
        // Content-Type is a singleton: two would be read differently by
        // CGI, FastCGI and a filter in front.
        (
            "POST /a.txt HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 3\r\n\r\na=1",
            400,
        ),
        // No fragment in a request-target, in the query either.
        ("GET /a.txt?q#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /a.txt#frag HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (
            "GET /a.txt HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
        ),
        (
            "GET /a.txt HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcdXX",
            400,
        ),
        ("GET /a.txt HTTP/1.1\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1\r\nHost : x\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Fold: a\r\n  b\r\n\r\n", 400),
        ("GET  /a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /a.txt\r\nHost: x\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1 extra\r\nHost: x\r\n\r\n", 400),
        ("\x01\x02\x03 garbage\r\n\r\n", 400),
        ("GET /a.txt HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        ("GET /a.txt HTTP/3.1\r\nHost: x\r\n\r\n", 505),
        ("GET /a.txt HTTP/1.10\r\nHost: x\r\n\r\n", 400),
        ("GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417),
        // A malformed line is a 400 even with a version at its end.
        ("GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        ("GET /a.txt HTTP/1\r\nHost: x\r\n\r\n", 400),
        // An http URI with an empty host (RFC 9110 §4.2.1).
        ("GET http:///a.txt HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    ];
    for (req, code) in cases {
        expect_close(&s, req, *code);
    }
    // A HEAD refused while its head is parsed gets no content either.
    for (req, code) in [
        ("HEAD /a.txt HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417),
        ("HEAD /a.txt HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        ("HEAD /a.txt HTTP/2.0\r\nHost: x\r\n\r\n", 505),
    ] {
        let mut c = s.connect();
        c.write_all(req.as_bytes()).unwrap();
        let out = read_to_close(&mut c);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(status_of(&out), code, "{req:?}");
        assert!(text.ends_with("\r\n\r\n"), "no body after the head: {text:?}");
    }
    // Refused before routing, the page still names its charset (docs/config.md `charset`).
    for req in ["GET /a b HTTP/1.1\r\n\r\n", "GET /a.txt HTTP/2.0\r\nHost: x\r\n\r\n"] {
        let mut c = s.connect();
        c.write_all(req.as_bytes()).unwrap();
        let out = read_to_close(&mut c);
        let r = &parse_responses(&out, false)[0];
        assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"), "{req:?}");
    }
    // The server is still fine afterwards.
    assert_eq!(s.get("/a.txt").text(), "AAAA");
    assert_eq!(s.workers().len(), 2, "no worker died");
    assert!(!s.error_log().contains("panicked"));
}

/// `OPTIONS *` asks about the server (RFC 9110 §9.3.7): 200 with `Allow`,
/// no body, and the connection goes on.
fn options_asterisk(mode: &str) {
    let s = server(mode);
    let mut c = s.connect();
    c.write_all(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nGET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let rs = parse_responses(&read_to_close(&mut c), false);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].status, 200);
    assert_eq!(rs[0].header("allow"), Some("GET, HEAD, POST, OPTIONS"));
    assert_eq!(rs[0].header("content-length"), Some("0"));
    assert_eq!(rs[1].text(), "BB");
    // `*` is the target of OPTIONS only.
    expect_close(&s, "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

/// A later HTTP/1 minor version is served as HTTP/1.1 (RFC 9110 §2.5).
fn later_minor_version(mode: &str) {
    let s = server(mode);
    let mut c = s.connect();
    c.write_all(b"GET /a.txt HTTP/1.2\r\nHost: x\r\n\r\nGET /b.txt HTTP/1.9\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    assert_eq!(rs.len(), 2, "{}", String::from_utf8_lossy(&out));
    assert!(out.starts_with(b"HTTP/1.1 200 "));
    assert_eq!((rs[0].text(), rs[1].text()), ("AAAA".to_string(), "BB".to_string()));
    // Behind an empty line too (RFC 9112 §2.2).
    let mut c = s.connect();
    c.write_all(b"\r\nGET /a.txt HTTP/1.2\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let rs = parse_responses(&read_to_close(&mut c), false);
    assert_eq!((rs.len(), rs[0].status), (1, 200));
}

/// TRACE and CONNECT are refused whatever the location, a `return` too
/// (a 2xx to CONNECT would be a tunnel to the client); empty and HTTP/1.0
/// expectations are no expectations.
#[test]
fn trace_connect_and_expectations() {
    let s = Server::with(Opts {
        server: "[[server.location]]\nmatch = \"/ret\"\nreturn = \"200 ok\"\n".into(),
        ..Opts::default()
    });
    std::fs::write(s.root.join("a.txt"), "AAAA").unwrap();
    let r = s.request("TRACE /ret HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    expect_close(
        &s,
        "CONNECT /ret HTTP/1.1\r\nHost: x\r\n\r\nGET /a.txt HTTP/1.1\r\nHost: x\r\n\r\n",
        405,
    );
    assert_eq!(s.get("/ret").text(), "ok");
    for head in [
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect:\r\nConnection: close\r\n\r\n",
        "GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: , \r\nConnection: close\r\n\r\n",
        "GET /a.txt HTTP/1.0\r\nExpect: teapot\r\n\r\n",
    ] {
        let r = s.request(head);
        assert_eq!((r.status, r.text().as_str()), (200, "AAAA"), "{head:?}");
    }
    assert_eq!(
        s.request("GET /a.txt HTTP/1.1\r\nHost: x\r\nExpect: 100-continue, teapot\r\nConnection: close\r\n\r\n")
            .status,
        417
    );
}

fn limits(mode: &str) {
    let s = server(mode);
    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(3000));
    expect_close(&s, &long_uri, 414);
    let endless_line = format!("GET /{}", "a".repeat(5000));
    expect_close(&s, &endless_line, 414);
    let big_head = format!("GET /a.txt HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(5000));
    expect_close(&s, &big_head, 431);
    let many = (0..120).map(|i| format!("X-H{i}: v\r\n")).collect::<String>();
    expect_close(&s, &format!("GET /a.txt HTTP/1.1\r\nHost: x\r\n{many}\r\n"), 431);
    assert_eq!(s.get("/a.txt").text(), "AAAA");
}

fn split_writes_and_slow_client(mode: &str) {
    let s = server(mode);
    let mut c = s.connect();
    c.set_nodelay(true).unwrap();
    for b in b"GET /a.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".chunks(3) {
        c.write_all(b).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    let rs = parse_responses(&read_to_close(&mut c), false);
    assert_eq!(rs[0].text(), "AAAA");

    // A 4 MiB body read slowly must arrive intact (partial writes resume).
    let big: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 253) as u8).collect();
    std::fs::write(s.root.join("big.bin"), &big).unwrap();
    let mut c = s.connect();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = read_to_close(&mut c);
    let rs = parse_responses(&out, false);
    assert!(rs[0].body == big, "slow reader got a different body");
}

fn many_concurrent_connections(mode: &str) {
    let s = server(mode);
    let conns: Vec<_> = (0..200).map(|_| s.connect()).collect();
    for mut c in conns {
        c.write_all(b"GET /b.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let rs = parse_responses(&read_to_close(&mut c), false);
        assert_eq!(rs[0].text(), "BB");
    }
}

#[test]
fn idle_keep_alive_is_closed_after_timeout() {
    let s = Server::with(Opts {
        http: "keepalive_timeout = 1".into(),
        ..Opts::default()
    });
    let mut c = s.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let start = std::time::Instant::now();
    let out = read_to_close(&mut c);
    assert_eq!(status_of(&out), 200);
    let waited = start.elapsed();
    // On time: the loop looks at the earliest deadline, not at its next
    // once-a-second pass (up to 2 s before).
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(1600),
        "closed by the keep-alive timer, took {waited:?}"
    );
}

#[test]
fn stalled_head_and_stalled_reader_time_out() {
    let s = Server::with(Opts {
        http: "client_header_timeout = 1\nsend_timeout = 1\ninline_file_max = 0\nopen_file_cache = 0".into(),
        ..Opts::default()
    });
    // Slowloris: half a head, then nothing.
    let mut c = s.connect();
    c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = std::time::Instant::now();
    let out = read_to_close(&mut c);
    assert!(out.is_empty(), "no response to a head that never completes");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_millis(1600),
        "closed by client_header_timeout, on time: {waited:?}"
    );
    // Logged as nginx does: 408 with the request line so far.
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .contains("\"GET / HTTP/1.1\" 408 0")),
        "{}",
        s.access_log()
    );
    // A client that never reads a large response.
    std::fs::write(s.root.join("big.bin"), vec![7u8; 64 << 20]).unwrap();
    let c = s.connect();
    (&c).write_all(b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(
        eventually(Duration::from_secs(8), || s
            .error_log()
            .contains("timed out receiving the response")),
        "{}",
        s.error_log()
    );
    drop(c);
}

/// A request answered before its body came (a 404 needs none): the answer
/// goes at once, the rest of the body is waited for lingering_timeout
/// between reads (as nginx discards one), not client_body_timeout, and the
/// access log has the answered request when the client never sends it.
#[test]
fn a_body_that_never_comes_after_its_answer_is_logged_and_dropped() {
    let s = Server::with(Opts {
        http: "lingering_timeout = \"1s\"\nclient_body_timeout = \"30s\"".into(),
        ..Opts::default()
    });
    let mut c = s.connect();
    c.write_all(b"POST /missing HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        .unwrap();
    let start = std::time::Instant::now();
    let out = read_to_close(&mut c);
    let waited = start.elapsed();
    assert_eq!(status_of(&out), 404, "{}", String::from_utf8_lossy(&out));
    assert!(
        waited < Duration::from_secs(3),
        "lingering_timeout, not 30 s: {waited:?}"
    );
    assert!(
        eventually(Duration::from_secs(3), || s
            .access_log()
            .contains("\"POST /missing HTTP/1.1\" 404")),
        "{}\n{}",
        s.access_log(),
        s.error_log()
    );
}
