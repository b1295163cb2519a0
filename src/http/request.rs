//! Parsing and checking a request head (RFC 9110, RFC 9112). The head is
//! tokenised by `httparse`; this module applies the rules that keep framing
//! unambiguous and turns every violation into the right status code.

use super::body::{Body, Chunked};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    /// A method we know but do not allow on static files (405).
    Other,
}

/// What the connection needs to know about one request.
#[derive(Debug)]
pub struct Request {
    pub method: Method,
    /// As sent (known methods borrow a static name: no allocation).
    pub method_name: std::borrow::Cow<'static, str>,
    /// The request target as sent.
    pub target: String,
    /// Path part of the target (still percent-encoded), and the query.
    pub path_end: usize,
    pub path_start: usize,
    pub minor: u8,
    /// Host without port, lowercased.
    pub host: Option<String>,
    pub keep_alive: bool,
    pub body: Option<Body>,
    pub content_length: Option<u64>,
    pub expect_continue: bool,
    pub if_none_match: Option<String>,
    pub if_modified_since: Option<String>,
    pub if_match: Option<String>,
    pub if_unmodified_since: Option<String>,
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// As sent (for the access log, which escapes what is not text).
    pub referer: Option<Box<[u8]>>,
    pub user_agent: Option<Box<[u8]>>,
    pub accept_encoding: Option<String>,
    pub authorization: Option<String>,
    /// The target as sent and its path start, once `rewrite` replaced it.
    pub sent: Option<Box<(String, usize)>>,
    /// The decoded, normalised path, once routing has computed it.
    pub norm: Option<Vec<u8>>,
    /// With `alias`: the file's path under the location's root (no leading
    /// slash), where it differs from the URL path.
    pub file: Option<Vec<u8>>,
    /// Serving an `error_page`: the status the answer gets (0: the page's own).
    pub error_status: Option<u16>,
    /// The script and PATH_INFO a FastCGI location's `try_files` found,
    /// split before it rewrote the URI to the script (so PATH_INFO lives on).
    pub fastcgi_split: Option<Box<(String, String)>>,
    /// A named location (`@name`) to serve the request next, its URI unchanged.
    pub named: Option<Box<str>>,
    /// It came over TLS (`$scheme` https, `HTTPS=on`).
    pub https: bool,
}

impl Request {
    /// Whether the client accepts content coding `coding` (RFC 9110
    /// §12.5.3): listed, or covered by `*`, with a non-zero q-value.
    pub fn accepts(&self, coding: &str) -> bool {
        let Some(list) = &self.accept_encoding else {
            return false;
        };
        let mut star = false;
        for item in list.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or("").trim();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or_else(|| p.trim().strip_prefix("Q=")))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if name.eq_ignore_ascii_case(coding) {
                return q > 0.0;
            }
            if name == "*" {
                star = q > 0.0;
            }
        }
        star
    }

    /// Routes the request to `uri` (an internal redirect: `try_files`);
    /// the target as sent stays for the access log and REQUEST_URI.
    pub fn rewrite(&mut self, uri: &str) {
        if self.sent.is_none() {
            let sent = std::mem::take(&mut self.target);
            self.sent = Some(Box::new((sent, self.path_start)));
        }
        self.target = uri.to_string();
        self.norm = None;
        self.file = None;
        self.fastcgi_split = None;
        self.path_start = 0;
        self.path_end = uri.find(['?', '#']).unwrap_or(uri.len());
    }

    /// An internal redirect: to `target`, a URI, or to a named location
    /// (`@name`), which keeps the URI as it is (nginx).
    pub fn redirect_to(&mut self, target: &str) {
        match target.strip_prefix('@') {
            Some(name) => self.named = Some(name.into()),
            None => self.rewrite(target),
        }
    }

    /// The decoded, normalised path: the one routing computed, else now.
    pub fn normalized(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match &self.norm {
            Some(n) => Some(std::borrow::Cow::Borrowed(n.as_slice())),
            None => super::path::resolve(self.path().as_bytes()).map(std::borrow::Cow::Owned),
        }
    }

    /// The request target as the client sent it.
    pub fn sent_target(&self) -> &str {
        self.sent.as_ref().map_or(self.target.as_str(), |s| s.0.as_str())
    }

    /// `$request_uri`: the sent target from its path on (no scheme or host).
    pub fn request_uri(&self) -> &str {
        match &self.sent {
            Some(s) => &s.0[s.1..],
            None => &self.target[self.path_start..],
        }
    }

    /// The host and port of an absolute-form target (`http://h:p/...`):
    /// what names the host, whatever the Host field says (RFC 9112
    /// §3.2.2), so applications get it as `HTTP_HOST`.
    pub fn authority(&self) -> Option<&str> {
        let (t, start) = match &self.sent {
            Some(s) => (s.0.as_str(), s.1),
            None => (self.target.as_str(), self.path_start),
        };
        if start == 0 {
            return None;
        }
        let rest = strip_scheme(t)?;
        t.get(t.len() - rest.len()..start)
    }

    pub fn path(&self) -> &str {
        &self.target[self.path_start..self.path_end]
    }

    pub fn query(&self) -> Option<&str> {
        self.target
            .get(self.path_end + 1..)
            .filter(|_| self.target.as_bytes().get(self.path_end) == Some(&b'?'))
    }
}

/// The outcome of looking at the buffered bytes.
pub enum Parsed {
    /// A complete head of `len` bytes.
    Done(Box<Request>, usize),
    Partial,
    /// Reject with this status and close; `line` is the request line if one
    /// could be read (for the access log).
    Error(u16, Vec<u8>),
}

const MAX_HEADERS: usize = 100;

pub struct Limits {
    pub max_uri: usize,
    pub max_body: u64,
}

pub fn parse(buf: &[u8], limits: &Limits) -> Parsed {
    // Left uninitialised: httparse fills what it uses (no 3 KiB memset per request).
    let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let len = match req.parse_with_uninit_headers(buf, &mut headers) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            // A request line that is already too long need not be waited for.
            let line_len = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
            if line_len > limits.max_uri + 32 {
                return Parsed::Error(414, Vec::new());
            }
            return Parsed::Partial;
        }
        Err(httparse::Error::Version) => {
            // Empty lines before the request line are skipped (RFC 9112 §2.2), as httparse does.
            let skip = buf.iter().take_while(|&&b| b == b'\r' || b == b'\n').count();
            let line = &buf[skip..];
            // A later HTTP/1 minor (1.2, ...) is read as 1.1 (RFC 9110 §2.5).
            if let Some(at) = later_minor(line) {
                let mut copy = buf.to_vec();
                copy[skip + at] = b'1';
                return parse(&copy, limits);
            }
            if later_minor_pending(line) {
                return Parsed::Partial;
            }
            return Parsed::Error(version_status(line), first_line(line));
        }
        Err(httparse::Error::TooManyHeaders) => return Parsed::Error(431, first_line(buf)),
        Err(_) => return Parsed::Error(400, first_line(buf)),
    };
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    let sent = req.method.unwrap_or("");
    let method_name: std::borrow::Cow<'static, str> = match KNOWN.iter().find(|&&k| k == sent) {
        Some(k) => std::borrow::Cow::Borrowed(k),
        None => std::borrow::Cow::Owned(sent.to_string()),
    };
    let target = req.path.unwrap_or("").to_string();
    let minor = req.version.unwrap_or(1);
    // The request line is only spelled out again when refusing (for the log).
    let line = |m: &str, t: &str| format!("{m} {t} HTTP/1.{minor}").into_bytes();
    if target.len() > limits.max_uri {
        return Parsed::Error(414, line(&method_name, &target));
    }
    let method = match method_name.as_ref() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" | "PUT" | "DELETE" | "OPTIONS" | "PATCH" | "TRACE" | "CONNECT" => Method::Other,
        _ => return Parsed::Error(501, line(&method_name, &target)),
    };

    let mut r = Request {
        method,
        method_name,
        target,
        path_end: 0,
        path_start: 0,
        minor,
        host: None,
        keep_alive: minor >= 1,
        body: None,
        content_length: None,
        expect_continue: false,
        if_none_match: None,
        if_modified_since: None,
        if_match: None,
        if_unmodified_since: None,
        range: None,
        if_range: None,
        referer: None,
        accept_encoding: None,
        authorization: None,
        user_agent: None,
        sent: None,
        norm: None,
        file: None,
        error_status: None,
        fastcgi_split: None,
        named: None,
        https: false,
    };
    macro_rules! fail {
        ($code:expr) => {
            Parsed::Error($code, line(&r.method_name, &r.target))
        };
    }

    let mut hosts = 0u32;
    let mut content_types = 0u32;
    let mut close = false;
    let mut te: Option<String> = None;
    for h in req.headers.iter() {
        if is(h.name, "referer") {
            r.referer = Some(h.value.trim_ascii().into());
            continue;
        } else if is(h.name, "user-agent") {
            r.user_agent = Some(h.value.trim_ascii().into());
            continue;
        }
        let Ok(value) = std::str::from_utf8(h.value) else {
            // obs-text in a header we read must not confuse us; others are ignored.
            if is(h.name, "host") || is(h.name, "content-length") || is(h.name, "transfer-encoding") {
                return fail!(400);
            }
            continue;
        };
        let value = value.trim_matches([' ', '\t']);
        let name = h.name;
        if is(name, "host") {
            hosts += 1;
            // An http URI with an empty host is invalid (RFC 9110 §4.2.1),
            // so is a Host that names none ("" or ":80"), as for nginx.
            match host_name(value) {
                Some(hn) if !hn.is_empty() => r.host = Some(hn),
                _ => return fail!(400),
            }
        } else if is(name, "content-length") {
            for part in value.split(',') {
                let part = part.trim_matches([' ', '\t']);
                if part.is_empty() || part.len() > 64 || !part.bytes().all(|b| b.is_ascii_digit()) {
                    return fail!(400);
                }
                // 1*DIGIT: leading zeros are fine; the value has at most 18 digits.
                let part = match part.trim_start_matches('0') {
                    "" => "0",
                    p if p.len() > 18 => return fail!(400),
                    p => p,
                };
                let n: u64 = match part.parse() {
                    Ok(n) => n,
                    Err(_) => return fail!(400),
                };
                if r.content_length.is_some_and(|c| c != n) {
                    return fail!(400);
                }
                r.content_length = Some(n);
            }
        } else if is(name, "transfer-encoding") {
            let t = te.get_or_insert_with(String::new);
            if !t.is_empty() {
                t.push(',');
            }
            t.push_str(value);
        } else if is(name, "connection") {
            for tok in value.split(',') {
                let tok = tok.trim_matches([' ', '\t']);
                if tok.eq_ignore_ascii_case("close") {
                    r.keep_alive = false;
                    close = true;
                } else if tok.eq_ignore_ascii_case("keep-alive") && minor == 0 && !close {
                    // A `close` anywhere wins (RFC 9112 §9.6).
                    r.keep_alive = true;
                }
            }
        } else if is(name, "expect") && minor >= 1 {
            // A list (RFC 9110 §10.1.1), empty elements allowed (§5.6.1);
            // an HTTP/1.0 request's expectations are ignored, as nginx does.
            for e in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                if e.eq_ignore_ascii_case("100-continue") {
                    r.expect_continue = true;
                } else {
                    return fail!(417);
                }
            }
        } else if is(name, "if-none-match") {
            // Lists: repeated lines are one list (RFC 9110 §5.3).
            join_list(&mut r.if_none_match, value);
        } else if is(name, "if-modified-since") {
            r.if_modified_since = Some(value.to_string());
        } else if is(name, "if-match") {
            join_list(&mut r.if_match, value);
        } else if is(name, "if-unmodified-since") {
            r.if_unmodified_since = Some(value.to_string());
        } else if is(name, "range") {
            r.range = Some(value.to_string());
        } else if is(name, "if-range") {
            r.if_range = Some(value.to_string());
        } else if is(name, "accept-encoding") {
            // Several fields combine into one list (RFC 9110 §5.3).
            match &mut r.accept_encoding {
                Some(v) => {
                    v.push(',');
                    v.push_str(value);
                }
                None => r.accept_encoding = Some(value.to_string()),
            }
        } else if is(name, "authorization") {
            // One set of credentials (RFC 9110 §11.6.2 gives it no list
            // form): with two, auth_basic would check one and an
            // application (PHP_AUTH_USER) take the other. nginx: 400.
            if r.authorization.is_some() {
                return fail!(400);
            }
            r.authorization = Some(value.to_string());
        } else if is(name, "content-type") {
            // A singleton (RFC 9110 §8.3): with two, CGI's environment
            // would hold both (getenv takes the first, a shell the last)
            // and FastCGI one of them, while a filter in front read the
            // other. nginx takes the first; refusing is the safe answer.
            content_types += 1;
            if content_types > 1 {
                return fail!(400);
            }
        }
    }
    if hosts > 1 {
        return fail!(400);
    }

    // Framing (RFC 9112 §6.3): chunked alone, or a single length.
    if let Some(te) = te {
        if minor == 0 || r.content_length.is_some() {
            return fail!(400);
        }
        let codings: Vec<&str> = te.split(',').map(|c| c.trim_matches([' ', '\t'])).collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return fail!(400);
        }
        r.body = Some(Body::Chunked(Chunked::new(limits.max_body)));
    } else if let Some(n) = r.content_length {
        if n > limits.max_body {
            return fail!(413);
        }
        if n > 0 {
            r.body = Some(Body::Length { left: n });
        }
    }
    if r.body.is_none() {
        r.expect_continue = false;
    }

    // Request target forms (RFC 9112 §3.2).
    let t = r.target.as_bytes();
    if t.first() == Some(&b'/') {
        r.path_start = 0;
    } else if let Some(rest) = strip_scheme(&r.target).map(str::to_string) {
        let rest = rest.as_str();
        let off = r.target.len() - rest.len();
        // The authority ends at the first "/", "?" or "#" (RFC 3986 §3.2).
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        // An http URI with an empty host is invalid (RFC 9110 §4.2.1).
        match host_name(authority) {
            Some(h) if !authority.contains('@') && !h.is_empty() => r.host = Some(h),
            _ => return fail!(400),
        }
        if rest.as_bytes().get(end) != Some(&b'/') {
            // "http://host" and "http://host?q" have the empty path: "/".
            r.target.insert(off + end, '/');
        }
        r.path_start = off + end;
    } else if r.target == "*" && r.method_name == "OPTIONS" {
        r.path_start = 0;
    } else {
        return fail!(400);
    }
    if minor >= 1 && hosts == 0 {
        return fail!(400);
    }
    let tail = &r.target.as_bytes()[r.path_start..];
    r.path_end = r.path_start + tail.iter().position(|&b| b == b'?').unwrap_or(tail.len());
    // A request-target has no fragment (RFC 9112 §3.2), in the path or in
    // the query: an application must not see a query a cache keyed
    // without it did not.
    if tail.contains(&b'#') {
        return fail!(400);
    }
    Parsed::Done(Box::new(r), len)
}

fn is(name: &str, want: &str) -> bool {
    name.eq_ignore_ascii_case(want)
}

fn strip_scheme(t: &str) -> Option<&str> {
    let (scheme, rest) = t.split_once("://")?;
    (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")).then_some(rest)
}

/// Validates a Host value (`name`, `name:port`, `[v6]:port`) and returns
/// the name part, lowercased (empty for "" or ":80": the caller refuses it).
fn host_name(v: &str) -> Option<String> {
    let name = if let Some(rest) = v.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !inside.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.') {
            return None;
        }
        port_ok(after)?;
        return Some(format!("[{}]", inside.to_ascii_lowercase()));
    } else {
        match v.rsplit_once(':') {
            Some((n, p)) => {
                (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
                n
            }
            None => v,
        }
    };
    // Two dots in a row name no host (nginx refuses them too).
    let ok = !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b));
    ok.then(|| name.trim_end_matches('.').to_ascii_lowercase())
}

fn port_ok(after: &str) -> Option<()> {
    if after.is_empty() {
        return Some(());
    }
    let p = after.strip_prefix(':')?;
    (p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())).then_some(())
}

/// Adds the field line `value` to a list field seen before.
fn join_list(field: &mut Option<String>, value: &str) {
    match field {
        Some(v) => {
            v.push_str(", ");
            v.push_str(value);
        }
        None => *field = Some(value.to_string()),
    }
}

/// Where the minor digit of a well-formed `HTTP/1.2`..`HTTP/1.9` request line is.
fn later_minor(buf: &[u8]) -> Option<usize> {
    let nl = buf.iter().position(|&b| b == b'\n')?;
    let end = if nl > 0 && buf[nl - 1] == b'\r' { nl - 1 } else { nl };
    let ver = buf.get(end.checked_sub(8)?..end)?;
    (ver.starts_with(b"HTTP/1.") && (b'2'..=b'9').contains(&ver[7]) && version_status(buf) == 505).then_some(end - 1)
}

/// A first line still arriving that ends in a later HTTP/1 minor (its line
/// end not read yet): wait for it rather than refuse.
fn later_minor_pending(buf: &[u8]) -> bool {
    let t = buf.strip_suffix(b"\r").unwrap_or(buf);
    !buf.contains(&b'\n')
        && t.len() >= 8
        && t[t.len() - 8..].starts_with(b"HTTP/1.")
        && (b'2'..=b'9').contains(&t[t.len() - 1])
}

/// 505 for a well-formed version we do not speak, 400 for garbage: only
/// a request line that is otherwise right (method, one space, a
/// target, one space, `HTTP/` DIGIT `.` DIGIT: RFC 9112 §3 and §2.3)
/// gets 505.
fn version_status(buf: &[u8]) -> u16 {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(ver), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return 400;
    };
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    if method.is_empty()
        || !method.iter().all(token)
        || target.is_empty()
        || target.iter().any(|b| b.is_ascii_control())
    {
        return 400;
    }
    match ver {
        [b'H', b'T', b'T', b'P', b'/', d, b'.', m] if d.is_ascii_digit() && m.is_ascii_digit() => 505,
        _ => 400,
    }
}

/// The first line of what was received, for the access log of a bad request.
fn first_line(buf: &[u8]) -> Vec<u8> {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    line[..line.len().min(1024)].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        max_uri: 8192,
        max_body: 1 << 20,
    };

    fn status(raw: &str) -> u16 {
        match parse(raw.as_bytes(), &L) {
            Parsed::Done(..) => 200,
            Parsed::Partial => 0,
            Parsed::Error(c, _) => c,
        }
    }

    #[test]
    fn a_later_minor_version_is_read_as_http_1_1_from_any_split() {
        let head = "GET http://Example.COM:80/a/b?x=1 HTTP/1.2\r\nHost: other\r\n\r\n";
        assert_eq!(status(head), 200);
        for n in 0..head.len() {
            assert_eq!(status(&head[..n]), 0, "a prefix of {n} bytes is partial");
        }
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        // Behind empty lines too (RFC 9112 §2.2).
        assert_eq!(status("\r\n\nGET / HTTP/1.2\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("\r\nGET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
    }

    #[test]
    fn framing_rules() {
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\n\r\n"), 400, "missing Host");
        assert_eq!(status("GET / HTTP/1.1\r\nHost: \r\n\r\n"), 400, "empty Host");
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: :80\r\n\r\n"),
            400,
            "Host without a name"
        );
        assert_eq!(status("GET / HTTP/1.0\r\nHost:\r\n\r\n"), 400, "empty Host in 1.0");
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\n\r\n"), 200);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n"), 400);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 00000000000000000002\r\n\r\n"),
            200,
            "leading zeros"
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000000000000000\r\n\r\n"),
            400,
            "19 digits"
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
            400
        );
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"),
            400
        );
        assert_eq!(status("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400, "space before colon");
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nX: b\r\n c\r\n\r\n"),
            400,
            "obs-fold"
        );
        assert_eq!(status("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 505);
        assert_eq!(status("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET /a  HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/2\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / FOO/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("BREW / HTTP/1.1\r\nHost: a\r\n\r\n"), 501);
        assert_eq!(
            status("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999\r\n\r\n"),
            413
        );
        assert_eq!(status("GET http://x.y/p?q HTTP/1.1\r\nHost: a\r\n\r\n"), 200);
        assert_eq!(status("GET x HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        for (conn, keep) in [
            ("close, keep-alive", false),
            ("keep-alive, close", false),
            ("keep-alive", true),
        ] {
            let head = format!("GET / HTTP/1.0\r\nConnection: {conn}\r\n\r\n");
            let Parsed::Done(r, _) = parse(head.as_bytes(), &L) else {
                panic!("not parsed")
            };
            assert_eq!(r.keep_alive, keep, "{conn}");
        }
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a..example.com\r\n\r\n"), 400);
        assert_eq!(status("GET http://a..b/ HTTP/1.1\r\nHost: a\r\n\r\n"), 400);
        assert_eq!(status("GET / HTTP/1.1\r\nHost: a\r\n"), 0);
    }

    #[test]
    fn absolute_form_sets_host_and_path() {
        let Parsed::Done(r, _) = parse(b"GET http://Example.COM:80/a/b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n", &L) else {
            panic!("not parsed")
        };
        assert_eq!(r.host.as_deref(), Some("example.com"));
        assert_eq!(r.authority(), Some("Example.COM:80"));
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query(), Some("x=1"));
        assert_eq!(status("GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n"), 400, "empty host");
        let Parsed::Done(r, _) = parse(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n", &L) else {
            panic!("not parsed")
        };
        assert_eq!(r.authority(), None);
        // Found by reading for the fuzz target: a query right after the
        // authority, with or without a slash in it, keeps the empty path.
        for (target, query) in [("http://h?x=1", "x=1"), ("http://h?x=/y", "x=/y")] {
            let head = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let Parsed::Done(r, _) = parse(head.as_bytes(), &L) else {
                panic!("{target} not parsed")
            };
            assert_eq!((r.path(), r.query()), ("/", Some(query)), "{target}");
        }
    }
}

#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::http::body::Chunked;

    /// A tiny deterministic generator: no dependency, same inputs each run.
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            self.0 >> 33
        }
    }

    const PIECES: &[&[u8]] = &[
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"/",
        b"/a/../b",
        b"%2e%2e",
        b"%00",
        b"?q=1",
        b" HTTP/1.1",
        b" HTTP/1.0",
        b" HTTP/9.9",
        b"\r\n",
        b"\n",
        b"\r",
        b"Host: a",
        b"Host: ",
        b"Content-Length: 5",
        b"Content-Length: -1",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: gzip",
        b": ",
        b" ",
        b"\t",
        b"\x00",
        b"\xff",
        b"0\r\n",
        b"ffffffffffffffffffff",
        b"Expect: 100-continue",
        b"Range: bytes=0-",
        b"http://x/",
        b"*",
        b"X: y",
    ];

    #[test]
    fn mutated_heads_never_panic() {
        let mut rng = Lcg(42);
        let limits = Limits {
            max_uri: 64,
            max_body: 100,
        };
        for _ in 0..50_000 {
            let mut msg = Vec::new();
            for _ in 0..rng.next() % 24 {
                if rng.next().is_multiple_of(5) {
                    msg.push(rng.next() as u8);
                } else {
                    msg.extend_from_slice(PIECES[rng.next() as usize % PIECES.len()]);
                }
            }
            if let Parsed::Done(mut r, n) = parse(&msg, &limits) {
                assert!(n <= msg.len());
                let _ = (r.path(), r.query());
                if let Some(mut body) = r.body.take() {
                    let _ = body.feed(&msg[n..], &mut |_| {});
                }
            }
            let mut c = Chunked::new(1000);
            let _ = c.feed(&msg, &mut |_| {});
            if let Some(d) = crate::http::path::decode(&msg) {
                let _ = crate::http::path::normalize(&d);
            }
            let _ = crate::http::range::parse(&String::from_utf8_lossy(&msg), rng.next() % 100);
        }
    }
}
