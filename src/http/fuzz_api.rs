//! Entry points for the fuzz targets under `fuzz/`: each feeds untrusted
//! bytes to one parser. Not part of the server's API.
//!
//! Every function must be total: any input returns normally unless a
//! parser panics or breaks one of the invariants asserted here, which is
//! what libFuzzer reports as a crash. They live in the library (not in the
//! fuzz crate) so they can reach the private modules of `crate::http`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use super::body::{Body, BodyError, Chunked};
use super::file_cache::FileCache;
use super::path;
use super::range::{self, Range};
use super::reply::{Reply, ReplyBody};
use super::request::{self, Limits, Method, Parsed};
use super::static_file::{self, Ctx, Site};
use crate::config;

/// The server's defaults and a tight pair, so the 413/414 paths are reached
/// without the fuzzer having to grow inputs past 8 KiB.
const LIMITS: [Limits; 2] = [
    Limits {
        max_uri: 8192,
        max_body: 1 << 20,
    },
    Limits {
        max_uri: 64,
        max_body: 100,
    },
];

/// `request::parse` on a raw request head, then the body framing it chose
/// over the bytes that follow and the path handling static files apply.
pub fn request_head(data: &[u8]) {
    for limits in &LIMITS {
        check_head(data, limits);
    }
}

fn check_head(data: &[u8], limits: &Limits) {
    let (mut r, len) = match request::parse(data, limits) {
        Parsed::Done(r, len) => (r, len),
        Parsed::Partial => return,
        Parsed::Error(code, _line) => {
            assert!(matches!(code, 400 | 413 | 414 | 417 | 431 | 501 | 505), "status {code}");
            return;
        }
    };
    assert!(len > 0 && len <= data.len(), "head of {len} bytes in {}", data.len());
    // The connection parses whatever has arrived: the verdict on a complete
    // head must not depend on what follows it, and one byte less is not done.
    match request::parse(&data[..len], limits) {
        Parsed::Done(_, again) => assert_eq!(again, len),
        _ => panic!("the head alone does not parse"),
    }
    let line_end = data.iter().position(|&b| b == b'\n').unwrap_or(0);
    for cut in [len - 1, len / 2, line_end] {
        // A valid request arriving in pieces must not be refused early.
        assert!(
            matches!(request::parse(&data[..cut], limits), Parsed::Partial),
            "a prefix of {cut} bytes of a valid head is not partial"
        );
    }
    assert!(r.path_start <= r.path_end && r.path_end <= r.target.len());
    assert!(
        r.target.len() <= limits.max_uri + 1,
        "target of {} bytes",
        r.target.len()
    );
    let p = r.path();
    assert!(p.starts_with('/') || p == "*", "path {p:?}");
    assert!(!p.contains(['?', '#']), "path {p:?}");
    let _ = r.query();
    let _ = (r.accepts("gzip"), r.accepts("br"));
    if let Some(a) = &r.authorization {
        // Basic credentials from the client against a cheap ({SHA}) entry.
        static USERS: OnceLock<crate::config::htpasswd::Htpasswd> = OnceLock::new();
        let users = USERS.get_or_init(|| {
            crate::config::htpasswd::Htpasswd::parse("u:{SHA}xjbo4jj9evl+LlAPjG8PTAvtr7A=\n").expect("valid")
        });
        if let Some(user) = users.check(a) {
            assert_eq!(user, "u");
        }
    }
    if r.method == Method::Other {
        assert!(!matches!(r.method_name.as_ref(), "GET" | "HEAD"));
    }
    if let Some(cl) = r.content_length {
        assert!(matches!(r.body, Some(Body::Length { .. })) || cl == 0);
        assert!(cl <= limits.max_body);
    }
    if let Some(mut body) = r.body.take() {
        let rest = &data[len..];
        let declared = match body {
            Body::Length { left } => left,
            Body::Chunked(_) => limits.max_body,
        };
        let mut out = 0u64;
        if let Ok((used, done)) = body.feed(rest, &mut |d| out += d.len() as u64) {
            assert!(used <= rest.len());
            assert!(done || used == rest.len(), "stopped early without finishing");
        }
        assert!(out <= declared, "{out} body bytes, {declared} allowed");
        assert!(out <= rest.len() as u64);
    }
    check_path(r.path().as_bytes());
}

/// The decoding and dot-segment removal `static_file::serve` applies to a
/// request path before it touches the file system.
fn check_path(raw: &[u8]) {
    let Some(decoded) = path::decode(raw) else { return };
    assert!(!decoded.contains(&0), "NUL survived decoding");
    assert!(decoded.len() <= raw.len());
    let Some(norm) = path::normalize(&decoded) else { return };
    assert!(norm.starts_with(b"/"));
    for seg in norm[1..].split(|&b| b == b'/') {
        assert!(seg != b"." && seg != b"..", "dot segment left in {norm:?}");
    }
    assert!(!norm.windows(2).any(|w| w == b"//"), "empty segment in {norm:?}");
    // Redirects spell the path out again: it must come back unchanged.
    let enc = path::encode(&norm);
    assert_eq!(path::decode(enc.as_bytes()).as_deref(), Some(&norm[..]));
    assert_eq!(path::normalize(&norm).as_deref(), Some(&norm[..]), "not idempotent");
}

/// The data limit of the chunked decoder in this target and a small one
/// that must give the same answer up to the point where it refuses.
const CHUNKED_LIMIT: u64 = 1 << 20;
const CHUNKED_SMALL: u64 = 64;

/// The chunked decoder on a message body, in one piece and split into
/// small pieces (it is fed whatever each read returned).
pub fn chunked_body(data: &[u8]) {
    let whole = decode_chunked(data, CHUNKED_LIMIT, data.len().max(1));
    let (ref out, used, ref res) = whole;
    assert!(used <= data.len());
    assert!(out.len() as u64 <= CHUNKED_LIMIT);
    assert!(out.len() <= data.len());
    assert!(
        res.is_err() || out.len() <= used,
        "{} data bytes from {used} consumed",
        out.len()
    );
    if let Ok(false) = res {
        assert_eq!(used, data.len(), "stopped early without finishing");
    }
    for piece in [1, 2, 7] {
        assert_eq!(decode_chunked(data, CHUNKED_LIMIT, piece), whole, "pieces of {piece}");
    }
    // A smaller limit may only cut the same decoding short.
    let small = decode_chunked(data, CHUNKED_SMALL, data.len().max(1));
    assert!(out.starts_with(&small.0));
    match small.2 {
        Ok(_) => assert_eq!(small, whole),
        Err(BodyError::Malformed) => assert_eq!(res, &Err(BodyError::Malformed)),
        Err(BodyError::TooLarge) => {}
    }
    // What was decoded, re-encoded canonically, decodes to itself.
    if let Ok(true) = res {
        let mut enc = Vec::new();
        for c in out.chunks(1000) {
            enc.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            enc.extend_from_slice(c);
            enc.extend_from_slice(b"\r\n");
        }
        enc.extend_from_slice(b"0\r\n\r\n");
        let again = decode_chunked(&enc, CHUNKED_LIMIT, enc.len());
        assert_eq!(again, (out.clone(), enc.len(), Ok(true)));
    }
}

/// Data out, bytes consumed, and done or the error.
type Decoded = (Vec<u8>, usize, Result<bool, BodyError>);

fn decode_chunked(data: &[u8], limit: u64, piece: usize) -> Decoded {
    let mut c = Chunked::new(limit);
    let mut out = Vec::new();
    let mut used = 0;
    for p in data.chunks(piece) {
        match c.feed(p, &mut |d| out.extend_from_slice(d)) {
            Ok((n, done)) => {
                assert!(n <= p.len());
                used += n;
                if done {
                    return (out, used, Ok(true));
                }
                assert_eq!(n, p.len(), "stopped early without finishing");
            }
            // An error reports no count: the connection is closed anyway.
            Err(e) => return (out, 0, Err(e)),
        }
    }
    (out, used, Ok(false))
}

/// Lengths every Range header is also tried against: the edges.
const RANGE_LENGTHS: [u64; 8] = [0, 1, 2, 10, 1000, 1 << 32, u64::MAX - 1, u64::MAX];

/// `range::parse`. The first line is the header; an optional second line
/// is the representation length in decimal, tried with the edge lengths.
pub fn range_header(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (header, len) = match text.split_once('\n') {
        Some((h, l)) => (h, l.trim().parse::<u64>().ok()),
        None => (&*text, None),
    };
    for len in len.into_iter().chain(RANGE_LENGTHS) {
        match range::parse(header, len) {
            Range::Full => {}
            Range::Part { start, end } => {
                assert!(start <= end && end < len, "{start}-{end} of {len}");
                assert!(range_syntax(header), "{header:?} is not a byte range");
            }
            Range::Parts(parts) => {
                assert!(parts.len() > 1 && parts.len() <= range::MAX_RANGES);
                let total = parts.iter().try_fold(0u64, |t, (s, e)| {
                    assert!(s <= e && *e < len, "{s}-{e} of {len}");
                    t.checked_add(e - s + 1)
                });
                assert!(total.is_some_and(|t| t <= len), "{parts:?} add up past {len}");
                assert!(range_syntax(header), "{header:?} is not a byte range");
            }
            Range::Unsatisfiable => assert!(range_syntax(header), "{header:?} is not a byte range"),
        }
    }
}

/// Whether `h` looks like a byte range list: `bytes=` and non-empty list
/// elements (empty ones allowed between them), each with a `-`.
fn range_syntax(h: &str) -> bool {
    let h = h.trim();
    if !h.get(..6).is_some_and(|p| p.eq_ignore_ascii_case("bytes=")) {
        return false;
    }
    let elements: Vec<&str> = h[6..].split(',').map(str::trim).filter(|e| !e.is_empty()).collect();
    !elements.is_empty() && elements.iter().all(|e| e.contains('-'))
}

/// The file the conditional target serves, its mtime, and an empty one.
const FILE_LEN: u64 = 1000;
const FILE_MTIME: u64 = 784_111_777;

/// A root with `f.txt` (1000 bytes, mtime 1994-11-06 08:49:37 GMT) and an
/// empty `e.txt`, made once per process under the temporary directory.
fn fuzz_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("corral-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("www")).expect("fuzz root");
        let body: Vec<u8> = (0..FILE_LEN).map(|i| b'a' + (i % 26) as u8).collect();
        let mtime = UNIX_EPOCH + Duration::from_secs(FILE_MTIME);
        for (name, data) in [("f.txt", &body[..]), ("e.txt", &[][..])] {
            let p = dir.join("www").join(name);
            std::fs::write(&p, data).expect("fuzz file");
            let f = std::fs::File::options().write(true).open(&p).expect("fuzz file");
            f.set_modified(mtime).expect("fuzz file mtime");
        }
        dir
    })
}

thread_local! {
    /// Site holds descriptors and Rc's: one per thread, built on first use.
    static SITE: RefCell<Option<Site>> = const { RefCell::new(None) };
}

fn with_site<T>(f: impl FnOnce(&Site) -> T) -> T {
    SITE.with(|s| {
        let mut s = s.borrow_mut();
        let site = s.get_or_insert_with(|| {
            Site::new(config::Server {
                listen: Vec::new(),
                tls_listen: Vec::new(),
                tls: None,
                server_name: Vec::new(),
                names: Vec::new(),
                default_server: false,
                root: fuzz_root().join("www"),
                index: vec!["index.html".into()],
                access_log: config::LogTarget::Off,
                autoindex: false,
                follow_symlinks_outside_root: false,
                absolute_redirect: true,
                port_in_redirect: true,
                server_name_in_redirect: false,
                cgi: Vec::new(),
                fastcgi: None,
                limit_conn: None,
                limit_req: None,
                deny_hidden: true,
                charset: Some("utf-8".into()),
                locations: Vec::new(),
                add_header: Vec::new(),
                expires: None,
                default_type: "application/octet-stream".into(),
                access: Vec::new(),
                error_page: Vec::new(),
                rewrite: Vec::new(),
                gzip_static: false,
                gzip: None,
                auth: None,
            })
        });
        f(site)
    })
}

/// Header names of the conditional target's input lines, in order.
const CONDITIONAL: [&str; 6] = [
    "If-None-Match",
    "If-Modified-Since",
    "If-Match",
    "If-Unmodified-Since",
    "Range",
    "If-Range",
];

/// `static_file::serve` on a request whose validators and range come from
/// the input, one value per line in the order of `CONDITIONAL` (an empty
/// line leaves that header out). A seventh line holds flags: `H` sends HEAD
/// instead of GET, `E` asks for the empty file.
pub fn conditional_headers(data: &[u8]) {
    let mut lines = data.split(|&b| b == b'\n');
    let mut head = Vec::new();
    let mut sent = [false; 6];
    let values: Vec<&[u8]> = lines.by_ref().take(CONDITIONAL.len()).collect();
    let flags = lines.next().unwrap_or(b"");
    let method = if flags.contains(&b'H') { "HEAD" } else { "GET" };
    let (file, file_len) = if flags.contains(&b'E') {
        ("e.txt", 0)
    } else {
        ("f.txt", FILE_LEN)
    };
    head.extend_from_slice(format!("{method} /{file} HTTP/1.1\r\nHost: fuzz\r\n").as_bytes());
    for (i, v) in values.iter().enumerate() {
        // Only bytes a field value may hold: anything else is a 400 that
        // would hide the code under test.
        let v: Vec<u8> = v
            .iter()
            .copied()
            .filter(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f))
            .collect();
        if v.is_empty() {
            continue;
        }
        sent[i] = true;
        head.extend_from_slice(CONDITIONAL[i].as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(&v);
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let limits = &LIMITS[0];
    let req = match request::parse(&head, limits) {
        Parsed::Done(r, len) if len == head.len() => r,
        Parsed::Done(_, len) => panic!("head of {len} bytes, {} sent", head.len()),
        Parsed::Partial => panic!("a complete head is partial"),
        Parsed::Error(code, _) => panic!("status {code} for a well-formed head"),
    };
    let [inm, ims, im, ius, rng, _ir] = sent;
    with_site(|site| {
        // Uncached (file descriptor), then twice through a cache: the miss
        // that fills it and the hit that serves from memory.
        let mut off = FileCache::new(1, 0, 0);
        let mut on = FileCache::new(1, 16, 1 << 20);
        let plain = serve(site, &mut off, &req);
        let filled = serve(site, &mut on, &req);
        let hit = serve(site, &mut on, &req);
        for r in [&plain, &filled, &hit] {
            check_reply(r, file_len);
            assert_eq!(r.status, plain.status);
            assert_eq!(r.length, plain.length);
            assert_eq!(r.extra, plain.extra);
        }
        let s = plain.status;
        assert!(s != 412 || im || ius, "412 without If-Match or If-Unmodified-Since");
        assert!(s != 304 || inm || ims, "304 without If-None-Match or If-Modified-Since");
        assert!(
            !matches!(s, 206 | 416) || rng && req.method == Method::Get,
            "{s} without a GET Range"
        );
    });
}

fn serve(site: &Site, cache: &mut FileCache, req: &request::Request) -> Reply {
    let mut ctx = Ctx {
        site,
        site_idx: 0,
        cache,
        tokens: false,
    };
    static_file::serve(&mut ctx, req)
}

fn check_reply(r: &Reply, file_len: u64) {
    assert!(matches!(r.status, 200 | 206 | 304 | 412 | 416), "status {}", r.status);
    let (offset, count) = match &r.body {
        ReplyBody::Empty => (0, 0),
        ReplyBody::Shared { data, offset, len } => {
            assert_eq!(data.len() as u64, file_len, "cached bytes are not the file");
            (*offset as u64, *len as u64)
        }
        ReplyBody::File { offset, len, .. } => (*offset, *len),
        ReplyBody::Bytes(b) => {
            assert!(r.status >= 400, "{} with a generated body", r.status);
            assert_eq!(r.length, Some(b.len() as u64));
            return;
        }
        ReplyBody::Stream(_) => panic!("the static handler never compresses (a filter after it does)"),
        ReplyBody::Ranges { ranges, len, .. } => {
            assert_eq!(r.status, 206);
            assert_eq!(*len, file_len);
            assert!(ranges.len() > 1, "one range is not a multipart");
            let total: u64 = ranges.iter().map(|(s, e)| e - s + 1).sum();
            assert!(total <= file_len, "ranges add up past the file");
            for (s, e) in ranges {
                assert!(s <= e && *e < file_len, "{s}-{e} of {file_len}");
            }
            return;
        }
    };
    assert!(
        offset.checked_add(count).is_some_and(|e| e <= file_len),
        "{offset}+{count} of {file_len}"
    );
    match r.status {
        200 => {
            assert_eq!(r.length, Some(file_len));
            // (A HEAD carries the body for the filters; it is never sent.)
            assert_eq!(count, file_len);
        }
        206 => {
            let len = r.length.expect("206 without a length");
            assert!(len >= 1 && count == len);
            let want = format!("Content-Range: bytes {offset}-{}/{file_len}\r\n", offset + len - 1);
            assert!(r.extra.contains(&want), "{:?} lacks {want:?}", r.extra);
        }
        304 => assert!(r.length.is_none() && count == 0),
        s => panic!("status {s} without a generated body"),
    }
}

/// `config::load_str` on a whole config file, relative paths taken from a
/// scratch directory that has a `www/` (the default root).
pub fn config_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match config::load_str("fuzz.toml", text, fuzz_root()) {
        Ok(cfg) => {
            assert!(!cfg.servers.is_empty());
            assert!((1..=512).contains(&cfg.main.workers));
            assert!(cfg.http.max_uri_length <= cfg.http.max_header_size);
            for s in &cfg.servers {
                assert!(!s.listen.is_empty());
                assert!(s.root.is_dir());
            }
        }
        Err(e) => {
            let lines = text.lines().count() + 1;
            assert!(
                e.line.is_none_or(|l| l >= 1 && l <= lines),
                "line {:?} of {lines}",
                e.line
            );
            assert!(!e.to_string().is_empty());
        }
    }
}

/// `cgi::response::parse` on a script's output.
pub fn cgi_response(data: &[u8]) {
    use crate::cgi::response::{Parsed, parse};
    let Parsed::Done(head, len) = parse(data) else { return };
    assert!(len >= 1 && len <= data.len());
    let section = &data[..len];
    assert!(section == b"\n" || section == b"\r\n" || section.ends_with(b"\n\n") || section.ends_with(b"\n\r\n"));
    if let Some((code, reason)) = &head.status {
        assert!((200..=599).contains(code));
        assert!(!reason.bytes().any(|b| b < 0x20 && b != b'\t'));
    }
    for (name, value) in &head.fields {
        assert!(!name.is_empty() && !name.contains(':'));
        assert!(!value.iter().any(|&b| b == b'\r' || b == b'\n'));
    }
    for v in [&head.location, &head.content_type].into_iter().flatten() {
        assert!(!v.bytes().any(|b| b == b'\r' || b == b'\n'));
    }
    // Output arrives in pieces: the head must not depend on what follows,
    // and no shorter prefix may be complete.
    assert_eq!(parse(&data[..len]), Parsed::Done(head, len));
    for cut in [len - 1, len / 2] {
        assert_eq!(parse(&data[..cut]), Parsed::Partial, "prefix of {cut}");
    }
}

/// An application's FastCGI byte stream as the client side takes it in:
/// records out of an [`crate::fastcgi::inbox::Inbox`] fed in pieces (the
/// first byte sets their size), STDOUT into the CGI-style header parser.
/// Whatever the pieces, the same records come out, and nothing panics.
pub fn fastcgi_stream(data: &[u8]) {
    use crate::fastcgi::inbox::{Inbox, Item};
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let run = |piece: usize| {
        let mut inbox = Inbox::default();
        let mut items = Vec::new();
        let mut stdout = Vec::new();
        for chunk in stream.chunks(piece.max(1)) {
            let mut rest = chunk;
            while !rest.is_empty() {
                let room = inbox.room();
                assert!(!room.is_empty(), "no room after records were taken");
                let n = room.len().min(rest.len());
                room[..n].copy_from_slice(&rest[..n]);
                inbox.filled(n);
                rest = &rest[n..];
                loop {
                    match inbox.take() {
                        Ok(Some(item)) => {
                            let desc = match &item {
                                Item::Stdout(id, r) => {
                                    stdout.extend_from_slice(inbox.bytes(r.clone()));
                                    format!("out {id} {}", r.len())
                                }
                                Item::Stderr(id, r) => format!("err {id} {:?}", inbox.bytes(r.clone())),
                                other => format!("{other:?}"),
                            };
                            items.push(desc);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            items.push(format!("error {e}"));
                            return (items, stdout);
                        }
                    }
                }
            }
        }
        (items, stdout)
    };
    let whole = run(stream.len());
    assert_eq!(run(split as usize + 1), whole, "records depend on how the bytes arrive");
    let _ = crate::cgi::response::parse(&whole.1);
}
