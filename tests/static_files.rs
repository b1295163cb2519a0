//! Static file serving through the real binary.

mod common;

use common::*;

fn site() -> Server {
    let s = Server::with(Opts {
        server: "index = [\"index.html\", \"index.htm\"]".into(),
        ..Opts::default()
    });
    let r = &s.root;
    std::fs::create_dir_all(r.join("sub")).unwrap();
    std::fs::write(r.join("sub/index.htm"), "sub index\n").unwrap();
    std::fs::create_dir_all(r.join("noindex")).unwrap();
    std::fs::write(r.join("style.css"), "body{}\n").unwrap();
    std::fs::write(r.join("data.json"), "{}\n").unwrap();
    std::fs::write(r.join("digits.txt"), "0123456789").unwrap();
    std::fs::write(r.join("empty.txt"), "").unwrap();
    s
}

#[test]
fn index_file_and_content_types() {
    let s = site();
    let r = s.get("/");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "<h1>hello</h1>\n");
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("content-length"), Some("15"));
    assert!(r.header("date").is_some());
    assert_eq!(
        s.get("/style.css").header("content-type"),
        Some("text/css; charset=utf-8")
    );
    assert_eq!(
        s.get("/data.json").header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(s.get("/sub/").text(), "sub index\n", "second index name is tried");
    assert_eq!(s.get("/missing").status, 404);
    assert_eq!(
        s.get("/noindex/").status,
        403,
        "directory without index and autoindex off"
    );
    // An index name that is a directory is redirected to with its slash (nginx).
    std::fs::create_dir_all(s.root.join("dirindex/index.html")).unwrap();
    let r = s.get("/dirindex/");
    let at = format!("http://localhost:{}/dirindex/index.html/", s.port);
    assert_eq!((r.status, r.header("location")), (301, Some(at.as_str())));
}

#[test]
fn directory_without_slash_redirects() {
    let s = site();
    let r = s.get("/sub?x=1");
    assert_eq!(r.status, 301);
    let at = format!("http://localhost:{}/sub/?x=1", s.port);
    assert_eq!(r.header("location"), Some(at.as_str()));
    // An empty query adds nothing; the Host names the server in the URL.
    let r = s.request("GET /sub? HTTP/1.1\r\nHost: Example.ORG:8080\r\nConnection: close\r\n\r\n");
    let at = format!("http://example.org:{}/sub/", s.port);
    assert_eq!((r.status, r.header("location")), (301, Some(at.as_str())));
    // HTTP/1.0 without Host: the address the client reached.
    let r = s.request("GET /sub HTTP/1.0\r\n\r\n");
    let at = format!("http://127.0.0.1:{}/sub/", s.port);
    assert_eq!(r.header("location"), Some(at.as_str()));
}

#[test]
fn relative_redirects_when_absolute_redirect_is_off() {
    let s = Server::with(Opts {
        server: "absolute_redirect = false".into(),
        ..Opts::default()
    });
    std::fs::create_dir_all(s.root.join("sub")).unwrap();
    let r = s.get("/sub?x=1");
    assert_eq!((r.status, r.header("location")), (301, Some("/sub/?x=1")));
    let s = Server::with(Opts {
        server: "server_name = [\"www.example.org\", \"example.org\"]\nserver_name_in_redirect = true\nport_in_redirect = false".into(),
        ..Opts::default()
    });
    std::fs::create_dir_all(s.root.join("sub")).unwrap();
    let r = s.get("/sub");
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("http://www.example.org/sub/"))
    );
}

#[test]
fn head_has_length_but_no_body() {
    let s = site();
    let raw = s.raw(b"HEAD /digits.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.contains("Content-Length: 10\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body after a HEAD response: {text:?}");
}

#[test]
fn methods_other_than_get_and_head() {
    let s = site();
    let r = s.request("POST /digits.txt HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    assert_eq!(r.status, 405);
    let allow = r.header("allow").unwrap_or("");
    assert!(allow.contains("GET") && allow.contains("HEAD"), "{allow}");
    let r = s.request("DELETE /digits.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 405);
    let r = s.request("FROB /digits.txt HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 501);
}

#[test]
fn conditional_requests() {
    let s = site();
    let r = s.get("/digits.txt");
    let etag = r.header("etag").unwrap().to_string();
    let lm = r.header("last-modified").unwrap().to_string();
    let cond = |h: &str| {
        s.request(&format!(
            "GET /digits.txt HTTP/1.1\r\nHost: a\r\n{h}\r\nConnection: close\r\n\r\n"
        ))
    };
    let r = cond(&format!("If-None-Match: {etag}"));
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(
        cond(&format!("If-None-Match: \"x\", W/{etag}")).status,
        304,
        "weak comparison"
    );
    assert_eq!(cond("If-None-Match: \"other\"").status, 200);
    // Repeated lines are one list (RFC 9110 §5.3).
    assert_eq!(
        cond(&format!("If-None-Match: {etag}\r\nIf-None-Match: \"a\"")).status,
        304
    );
    assert_eq!(cond(&format!("If-Match: {etag}\r\nIf-Match: \"a\"")).status, 200);
    assert_eq!(cond(&format!("If-Modified-Since: {lm}")).status, 304);
    assert_eq!(cond("If-Modified-Since: Thu, 01 Jan 1970 00:00:01 GMT").status, 200);
    // If-None-Match wins over If-Modified-Since.
    assert_eq!(
        cond(&format!("If-None-Match: \"other\"\r\nIf-Modified-Since: {lm}")).status,
        200
    );
    assert_eq!(cond("If-Match: \"other\"").status, 412);
    assert_eq!(cond(&format!("If-Match: {etag}")).status, 200);
    assert_eq!(cond("If-Unmodified-Since: Thu, 01 Jan 1970 00:00:01 GMT").status, 412);
    // A day name that is not the date's is still a date (RFC 9110 §5.6.7;
    // 1 Jan 1970 was a Thursday), in each of the three forms.
    assert_eq!(cond("If-Unmodified-Since: Mon, 01 Jan 1970 00:00:01 GMT").status, 412);
    assert_eq!(cond("If-Unmodified-Since: Monday, 01-Jan-70 00:00:01 GMT").status, 412);
    assert_eq!(cond("If-Unmodified-Since: Mon Jan  1 00:00:01 1970").status, 412);
    assert_eq!(cond("If-Unmodified-Since: Xyz, 01 Jan 1970 00:00:01 GMT").status, 200);
}

#[test]
fn byte_ranges() {
    let s = site();
    let range = |h: &str| {
        s.request(&format!(
            "GET /digits.txt HTTP/1.1\r\nHost: a\r\n{h}\r\nConnection: close\r\n\r\n"
        ))
    };
    let r = range("Range: bytes=2-4");
    assert_eq!(r.status, 206);
    assert_eq!(r.text(), "234");
    assert_eq!(r.header("content-range"), Some("bytes 2-4/10"));
    assert_eq!(r.header("content-length"), Some("3"));
    assert_eq!(range("Range: bytes=7-").text(), "789");
    assert_eq!(range("Range: bytes=-3").text(), "789");
    assert_eq!(range("Range: bytes=8-100").text(), "89");
    let r = range("Range: bytes=10-");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */10"));
    assert_eq!(range("Range: bytes=-0").status, 416);
    assert_eq!(range("Range: lines=1-2").status, 200, "unknown unit ignored");
    let etag = s.get("/digits.txt").header("etag").unwrap().to_string();
    assert_eq!(range(&format!("Range: bytes=0-0\r\nIf-Range: {etag}")).status, 206);
    let r = range("Range: bytes=0-0\r\nIf-Range: \"stale\"");
    assert_eq!((r.status, r.text().as_str()), (200, "0123456789"));
    assert_eq!(
        range("Range: bytes=0-0\r\nIf-Range: Thu, 01 Jan 1970 00:00:01 GMT").status,
        200
    );
    assert_eq!(
        s.request("GET /empty.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=0-\r\nConnection: close\r\n\r\n")
            .status,
        416
    );
}

/// The parts of a `multipart/byteranges` body: (Content-Type, Content-Range, bytes).
fn byteranges(body: &[u8], ctype: &str) -> Vec<(String, String, Vec<u8>)> {
    let boundary = ctype
        .strip_prefix("multipart/byteranges; boundary=")
        .unwrap_or_else(|| panic!("not a multipart: {ctype}"));
    let sep = format!("\r\n--{boundary}");
    let text = body;
    let mut parts = Vec::new();
    let find = |hay: &[u8], from: usize, needle: &[u8]| {
        hay[from..]
            .windows(needle.len())
            .position(|w| w == needle)
            .map(|p| p + from)
    };
    let mut at = find(text, 0, sep.as_bytes()).expect("a first boundary");
    assert_eq!(at, 0, "nothing before the first boundary");
    loop {
        at += sep.len();
        if text[at..].starts_with(b"--\r\n") {
            assert_eq!(at + 4, text.len(), "nothing after the closing boundary");
            return parts;
        }
        let head_end = find(text, at, b"\r\n\r\n").expect("a part head");
        let head = String::from_utf8_lossy(&text[at + 2..head_end]).to_string();
        let field = |n: &str| {
            head.split("\r\n")
                .find_map(|l| l.strip_prefix(n))
                .unwrap_or_default()
                .to_string()
        };
        let next = find(text, head_end + 4, sep.as_bytes()).expect("a next boundary");
        parts.push((
            field("Content-Type: "),
            field("Content-Range: "),
            text[head_end + 4..next].to_vec(),
        ));
        at = next;
    }
}

#[test]
fn several_byte_ranges_make_a_multipart() {
    let s = site();
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(s.root.join("big.bin"), &big).unwrap();
    // Two requests on one connection: the multipart's length is exact.
    let raw = s.raw(
        b"GET /digits.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=0-1, 5-6,-2\r\n\r\n\
          GET /digits.txt HTTP/1.1\r\nHost: a\r\nRange: bytes=3-3\r\nConnection: close\r\n\r\n",
    );
    let rs = parse_responses(&raw, false);
    assert_eq!(rs.len(), 2);
    assert_eq!(rs[0].status, 206);
    let parts = byteranges(&rs[0].body, rs[0].header("content-type").unwrap());
    let want = [("bytes 0-1/10", "01"), ("bytes 5-6/10", "56"), ("bytes 8-9/10", "89")];
    assert_eq!(parts.len(), 3);
    for ((ct, cr, bytes), (want_cr, want_bytes)) in parts.iter().zip(want) {
        assert_eq!(ct, "text/plain; charset=utf-8");
        assert_eq!((cr.as_str(), bytes.as_slice()), (want_cr, want_bytes.as_bytes()));
    }
    assert_eq!((rs[1].status, rs[1].text().as_str()), (206, "3"));

    // A large file (sent from the file, not a cache), ranges out of order.
    let r = s
        .request("GET /big.bin HTTP/1.1\r\nHost: a\r\nRange: bytes=250000-299999,0-99999\r\nConnection: close\r\n\r\n");
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-length"), Some(r.body.len().to_string().as_str()));
    let parts = byteranges(&r.body, r.header("content-type").unwrap());
    assert_eq!(parts.len(), 2);
    assert_eq!(parts[0].1, "bytes 250000-299999/300000");
    assert!(parts[0].2 == big[250_000..], "first part's bytes");
    assert_eq!(parts[1].1, "bytes 0-99999/300000");
    assert!(parts[1].2 == big[..100_000], "second part's bytes");
    assert_eq!(parts[1].0, "application/octet-stream");

    let range = |h: &str| {
        s.request(&format!(
            "GET /digits.txt HTTP/1.1\r\nHost: a\r\nRange: {h}\r\nConnection: close\r\n\r\n"
        ))
    };
    // Unsatisfiable elements are dropped: one left is a plain 206.
    let r = range("bytes=2-3,50-60");
    assert_eq!((r.status, r.text().as_str()), (206, "23"));
    assert_eq!(r.header("content-range"), Some("bytes 2-3/10"));
    assert_eq!(range("bytes=20-30,40-").status, 416);
    // Overlaps adding up past the file, or too many ranges: the whole file.
    let r = range("bytes=0-8,1-9");
    assert_eq!((r.status, r.text().as_str()), (200, "0123456789"));
    let many = vec!["0-0"; 101].join(",");
    assert_eq!(range(&format!("bytes={many}")).status, 200);
    // If-Range decides for several ranges as for one.
    let etag = s.get("/digits.txt").header("etag").unwrap().to_string();
    let r = range(&format!("bytes=0-0,2-2\r\nIf-Range: {etag}"));
    assert_eq!(r.status, 206);
    let r = range("bytes=0-0,2-2\r\nIf-Range: \"stale\"");
    assert_eq!((r.status, r.text().as_str()), (200, "0123456789"));
}

#[test]
fn traversal_is_refused() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(dir.path().join("secret.txt"), "SECRET").unwrap();
    std::fs::write(root.join("ok.txt"), "ok").unwrap();
    let s = Server::with_root(Opts::default(), dir, root);
    for p in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/a/../../secret.txt",
        "/..%2fsecret.txt",
        "/.%2e/secret.txt",
        "/..\\secret.txt",
        "/%2e%2e%5csecret.txt",
        "/ok.txt%00.html",
        "/ok.txt/..%00/../secret.txt",
    ] {
        let raw = s.raw(format!("GET {p} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").as_bytes());
        let text = String::from_utf8_lossy(&raw);
        assert!(!text.contains("SECRET"), "{p} leaked: {text}");
        let status: u16 = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        assert!(status == 400 || status == 404, "{p} -> {status}");
    }
    assert_eq!(
        s.get("/sub/../ok.txt").text(),
        "ok",
        "dot segments inside the root are fine"
    );
    assert_eq!(s.get("/%6Fk.txt").text(), "ok", "percent-decoding");
}

#[test]
fn symlinks_leaving_root_are_refused_unless_allowed() {
    for allow in [false, true] {
        let dir = TempDir::new();
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(dir.path().join("outside.txt"), "OUTSIDE").unwrap();
        std::fs::write(root.join("inside.txt"), "INSIDE").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside.txt"), root.join("out-link")).unwrap();
        std::os::unix::fs::symlink("inside.txt", root.join("in-link")).unwrap();
        let o = Opts {
            server: format!("follow_symlinks_outside_root = {allow}"),
            ..Opts::default()
        };
        let s = Server::with_root(o, dir, root);
        assert_eq!(s.get("/in-link").text(), "INSIDE");
        let r = s.get("/out-link");
        if allow {
            assert_eq!(r.text(), "OUTSIDE");
        } else {
            assert_eq!(r.status, 403);
            assert!(!r.text().contains("OUTSIDE"));
        }
    }
}

#[test]
fn autoindex_escapes_names() {
    let s = Server::with(Opts {
        server: "autoindex = true".into(),
        ..Opts::default()
    });
    std::fs::create_dir_all(s.root.join("list")).unwrap();
    std::fs::write(s.root.join("list/<b>&x\".txt"), "x").unwrap();
    std::fs::create_dir_all(s.root.join("list/child dir")).unwrap();
    let r = s.get("/list/");
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("&lt;b&gt;&amp;x&quot;.txt"), "{html}");
    assert!(!html.contains("<b>&x"), "{html}");
    assert!(html.contains("href=\"child%20dir/\""), "{html}");
    assert!(html.contains("href=\"%3Cb%3E%26x%22.txt\""), "{html}");
    std::fs::write(s.root.join("list/a+b;c.txt"), "x").unwrap();
    assert!(s.get("/list/").text().contains("href=\"a%2Bb%3Bc.txt\""));
}

#[test]
fn large_file_by_sendfile_with_curl() {
    let s = site();
    let big: Vec<u8> = (0..5_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(s.root.join("big.bin"), &big).unwrap();
    let url = format!("http://127.0.0.1:{}/big.bin", s.port);
    let (ok, body) = curl(&[&url]);
    assert!(ok);
    assert_eq!(body.len(), big.len());
    assert!(body == big, "content differs");
    let (ok, part) = curl(&["-r", "1000000-1000009", &url]);
    assert!(ok);
    assert_eq!(part, &big[1_000_000..1_000_010]);
    // Two downloads over one keep-alive connection.
    let (ok, both) = curl(&[&url, &url]);
    assert!(ok);
    assert_eq!(both.len(), 2 * big.len());
}

#[test]
fn access_log_is_combined_format() {
    let s = site();
    let r = s.request(
        "GET /digits.txt?q=1 HTTP/1.1\r\nHost: a\r\nReferer: http://ref/\r\nUser-Agent: tester \"x\"\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        eventually(std::time::Duration::from_secs(5), || s
            .access_log()
            .contains("GET /digits.txt?q=1")),
        "flushed within a second or so"
    );
    let log = s.access_log();
    let line = log.lines().find(|l| l.contains("digits.txt")).unwrap();
    assert!(line.starts_with("127.0.0.1 - - ["), "{line}");
    assert!(
        line.ends_with("\"GET /digits.txt?q=1 HTTP/1.1\" 200 10 \"http://ref/\" \"tester \\x22x\\x22\""),
        "{line}"
    );
}

#[test]
fn cached_small_files_are_never_stale() {
    let dir = TempDir::new();
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(dir.path().join("outside.txt"), "OUTSIDE").unwrap();
    std::fs::write(root.join("f.txt"), "version-1").unwrap();
    let s = Server::with_root(
        Opts {
            main: "workers = 1".into(),
            ..Opts::default()
        },
        dir,
        root.clone(),
    );
    assert_eq!(s.get("/f.txt").text(), "version-1");
    assert_eq!(s.get("/f.txt").text(), "version-1");
    // Same size, rewritten in place within the same second.
    std::fs::write(root.join("f.txt"), "version-2").unwrap();
    assert_eq!(s.get("/f.txt").text(), "version-2");
    // Replaced by a new file (rename over it).
    std::fs::write(root.join("g.tmp"), "version-3!").unwrap();
    std::fs::rename(root.join("g.tmp"), root.join("f.txt")).unwrap();
    let r = s.get("/f.txt");
    assert_eq!(r.text(), "version-3!");
    assert_eq!(r.header("content-length"), Some("10"));
    // Swapped for a symlink leaving the root: refused, not served from memory.
    std::fs::remove_file(root.join("f.txt")).unwrap();
    std::os::unix::fs::symlink(s.dir.path().join("outside.txt"), root.join("f.txt")).unwrap();
    let r = s.get("/f.txt");
    assert_eq!(r.status, 403);
    std::fs::remove_file(root.join("f.txt")).unwrap();
    assert_eq!(s.get("/f.txt").status, 404);

    // A large file (served from a cached descriptor) edited in place.
    let big_a = vec![b'a'; 200_000];
    let big_b = vec![b'b'; 200_000];
    std::fs::write(root.join("big.bin"), &big_a).unwrap();
    assert!(s.get("/big.bin").body == big_a);
    assert!(s.get("/big.bin").body == big_a);
    std::fs::write(root.join("big.bin"), &big_b).unwrap();
    assert!(
        s.get("/big.bin").body == big_b,
        "no stale bytes from the cached descriptor"
    );
    std::fs::write(root.join("big.bin"), &big_b[..1000]).unwrap();
    assert_eq!(s.get("/big.bin").body.len(), 1000);
}

/// Text types carry the server's charset (utf-8 unless turned off);
/// binary types never do; autoindex pages are text too.
#[test]
fn charset_on_text_types() {
    let s = Server::with(Opts {
        server: "autoindex = true".into(),
        ..Opts::default()
    });
    std::fs::write(s.root.join("caf\u{e9}.txt"), "caf\u{e9}\n").unwrap();
    std::fs::write(s.root.join("logo.png"), [0x89u8, b'P', b'N', b'G']).unwrap();
    std::fs::create_dir_all(s.root.join("dir")).unwrap();
    assert_eq!(
        s.get("/caf%C3%A9.txt").header("content-type"),
        Some("text/plain; charset=utf-8")
    );
    assert_eq!(s.get("/logo.png").header("content-type"), Some("image/png"));
    assert_eq!(s.get("/dir/").header("content-type"), Some("text/html; charset=utf-8"));
    let off = Server::with(Opts {
        server: "charset = \"off\"".into(),
        ..Opts::default()
    });
    assert_eq!(off.get("/").header("content-type"), Some("text/html"));
    let latin = Server::with(Opts {
        server: "charset = \"ISO-8859-1\"".into(),
        ..Opts::default()
    });
    assert_eq!(
        latin.get("/").header("content-type"),
        Some("text/html; charset=iso-8859-1")
    );
}

/// Dotfiles (`.git`, `.env`, `.htpasswd`, encoded or not) answer 404 by
/// default, `/.well-known/` stays served, and `deny_hidden = false` serves them.
#[test]
fn hidden_files_are_denied() {
    let s = Server::start();
    std::fs::create_dir_all(s.root.join(".git")).unwrap();
    std::fs::write(s.root.join(".git/config"), "[core]\n").unwrap();
    std::fs::write(s.root.join(".env"), "SECRET=1\n").unwrap();
    std::fs::create_dir_all(s.root.join(".well-known/acme-challenge")).unwrap();
    std::fs::write(s.root.join(".well-known/acme-challenge/tok"), "tok\n").unwrap();
    std::fs::create_dir_all(s.root.join("sub")).unwrap();
    std::fs::write(s.root.join("sub/.htpasswd"), "u:x\n").unwrap();
    for p in [
        "/.git/config",
        "/.env",
        "/%2egit/config",
        "/sub/.htpasswd",
        "/sub/%2Ehtpasswd",
        "/.git/",
        "/sub/../.env",
    ] {
        assert_eq!(s.get(p).status, 404, "{p}");
    }
    assert_eq!(s.get("/.well-known/acme-challenge/tok").text(), "tok\n");
    let open = Server::with(Opts {
        server: "deny_hidden = false".into(),
        ..Opts::default()
    });
    std::fs::write(open.root.join(".env"), "SECRET=1\n").unwrap();
    assert_eq!(open.get("/.env").status, 200);
}

/// The cache checks a file once per wake-up of the worker, not once per
/// request: a change is still seen by the next request on a kept
/// connection and on a new one, while other clients keep the worker busy
/// with the same file (so its wake-ups serve many requests each).
#[test]
fn cached_files_are_fresh_under_load() {
    use std::io::{BufReader, Write};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let s = Server::with(Opts {
        main: "workers = 1".into(),
        ..Opts::default()
    });
    let f = s.root.join("f.txt");
    std::fs::write(&f, "v-start").unwrap();
    let port = s.port;
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..3)
        .map(|_| {
            let (stop, served) = (stop.clone(), served.clone());
            std::thread::spawn(move || {
                let connect = || BufReader::new(std::net::TcpStream::connect(("127.0.0.1", port)).unwrap());
                let mut r = connect();
                while !stop.load(Ordering::Relaxed) {
                    r.get_mut()
                        .write_all(b"GET /f.txt HTTP/1.1\r\nHost: x\r\n\r\n")
                        .unwrap();
                    let (status, _, close) = read_response_full(&mut r).unwrap();
                    assert_eq!(status, 200);
                    served.fetch_add(1, Ordering::Relaxed);
                    // keepalive_requests (1000) ends a connection: take a new one.
                    if close {
                        r = connect();
                    }
                }
            })
        })
        .collect();
    let mut kept = BufReader::new(s.connect());
    for i in 0..60 {
        let body = format!("v-{i:03}");
        if i % 2 == 0 {
            std::fs::write(&f, &body).unwrap(); // in place, same size
        } else {
            let tmp = s.root.join("f.tmp");
            std::fs::write(&tmp, &body).unwrap();
            std::fs::rename(&tmp, &f).unwrap(); // replaced
        }
        kept.get_mut()
            .write_all(b"GET /f.txt HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (status, got) = read_response(&mut kept).unwrap();
        assert_eq!(
            (status, String::from_utf8_lossy(&got).to_string()),
            (200, body.clone()),
            "kept connection, round {i}"
        );
        assert_eq!(s.get("/f.txt").text(), body, "new connection, round {i}");
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert!(served.load(Ordering::Relaxed) > 100, "the load ran");
}

/// A file the workers' user may not read: 403, and an error line that says
/// why (nginx's `open() "..." failed (13: Permission denied)`).
#[test]
fn an_unreadable_file_is_a_403_with_a_reason_in_the_error_log() {
    if !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let s = Server::with(Opts {
        main: "user = \"nobody\"".into(),
        ..Opts::default()
    });
    let secret = s.root.join("secret.txt");
    std::fs::write(&secret, "no\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(s.root.join("open.txt"), "yes\n").unwrap();
    assert_eq!(s.get("/open.txt").status, 200, "{}", s.error_log());
    assert_eq!(s.get("/secret.txt").status, 403);
    assert!(
        eventually(std::time::Duration::from_secs(2), || s
            .error_log()
            .contains("secret.txt\" failed (13: Permission denied)")),
        "{}",
        s.error_log()
    );
}
