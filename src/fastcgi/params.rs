//! The FastCGI parameters of a request: nginx's `fastcgi_params` and
//! `fastcgi.conf` set, encoded straight into name-value pairs.

use fastcgi_codec::encode_pair;

/// What the parameters are made from.
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as the client sent it.
    pub request_uri: &'a str,
    pub query: &'a str,
    /// The decoded URI being served (`$uri`: after rewrites and try_files).
    pub document_uri: &'a str,
    pub script_name: &'a str,
    pub script_filename: &'a str,
    pub path_info: &'a str,
    pub document_root: &'a str,
    pub server_name: &'a str,
    pub server_port: u16,
    pub server_addr: &'a str,
    pub remote_addr: &'a str,
    pub remote_port: u16,
    pub protocol: &'a str,
    pub https: bool,
    pub content_length: Option<u64>,
    /// The length is added once a chunked body is spooled: none now.
    pub length_later: bool,
    pub remote_user: Option<&'a str>,
    /// Request header fields as received.
    pub headers: &'a [httparse::Header<'a>],
    /// An absolute-form target's host and port: `HTTP_HOST`, instead of
    /// the Host field (RFC 9112 §3.2.2).
    pub authority: Option<&'a str>,
    /// The location's `params`: they replace a standard one of the same
    /// name; an empty value removes it.
    pub extra: &'a [(String, String)],
}

/// Appends the encoded pairs (the PARAMS stream's content) to `out`.
pub fn encode(r: &Request<'_>, out: &mut Vec<u8>) {
    let mut put = |name: &str, value: &[u8]| {
        if !r.extra.iter().any(|(k, _)| k == name) {
            encode_pair(out, name.as_bytes(), value);
        }
    };
    let mut num = itoa::Buffer::new();
    put("GATEWAY_INTERFACE", b"CGI/1.1");
    put(
        "SERVER_SOFTWARE",
        concat!("corral/", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    put("QUERY_STRING", r.query.as_bytes());
    put("REQUEST_METHOD", r.method.as_bytes());
    let mut content_type: Option<&[u8]> = None;
    for h in r.headers {
        if h.name.eq_ignore_ascii_case("content-type") {
            content_type = Some(h.value);
        }
    }
    put("CONTENT_TYPE", content_type.unwrap_or(b""));
    match r.content_length {
        _ if r.length_later => {}
        Some(n) => put("CONTENT_LENGTH", num.format(n).as_bytes()),
        None => put("CONTENT_LENGTH", b""),
    }
    put("SCRIPT_NAME", r.script_name.as_bytes());
    put("SCRIPT_FILENAME", r.script_filename.as_bytes());
    put("PATH_INFO", r.path_info.as_bytes());
    if !r.path_info.is_empty() {
        let mut t = String::with_capacity(r.document_root.len() + r.path_info.len());
        t.push_str(r.document_root.trim_end_matches('/'));
        t.push_str(r.path_info);
        put("PATH_TRANSLATED", t.as_bytes());
    }
    put("REQUEST_URI", r.request_uri.as_bytes());
    put("DOCUMENT_URI", r.document_uri.as_bytes());
    put("DOCUMENT_ROOT", r.document_root.as_bytes());
    put("SERVER_PROTOCOL", r.protocol.as_bytes());
    put("REQUEST_SCHEME", if r.https { b"https" } else { b"http" });
    if r.https {
        put("HTTPS", b"on");
    }
    put("REMOTE_ADDR", r.remote_addr.as_bytes());
    put("REMOTE_PORT", num.format(r.remote_port).as_bytes());
    if let Some(u) = r.remote_user {
        put("REMOTE_USER", u.as_bytes());
        put("AUTH_TYPE", b"Basic");
    }
    put("SERVER_ADDR", r.server_addr.as_bytes());
    put("SERVER_PORT", num.format(r.server_port).as_bytes());
    put("SERVER_NAME", r.server_name.as_bytes());
    // php-cgi's force-cgi-redirect check wants it.
    put("REDIRECT_STATUS", b"200");
    if let Some(a) = r.authority {
        put("HTTP_HOST", a.as_bytes());
    }
    headers(r.headers, r.authority.is_some(), &mut put);
    for (k, v) in r.extra {
        if !v.is_empty() {
            encode_pair(out, k.as_bytes(), v.as_bytes());
        }
    }
}

/// Every header as `HTTP_NAME`, repeated ones joined (cookies with "; ",
/// others with ", "). Names with an underscore are dropped, as nginx does
/// (they would be indistinguishable from the dash form); `Proxy` too
/// (httpoxy); Content-Type and Content-Length are the CONTENT_ params.
fn headers(list: &[httparse::Header<'_>], skip_host: bool, put: &mut impl FnMut(&str, &[u8])) {
    // Headers already joined into an earlier one (bit per header; the head
    // parser takes at most 100): no allocation per request.
    let mut done: u128 = 0;
    let mut name = String::with_capacity(64);
    let mut value: Vec<u8> = Vec::new();
    for i in 0..list.len() {
        let h = &list[i];
        // Only letters, digits and '-' (nginx's ignore_invalid_headers): an
        // `X_Forwarded_For`, or an `X.Forwarded.For` that PHP turns into
        // `_`, would reach the application as HTTP_X_FORWARDED_FOR.
        if (i < 128 && done & (1 << i) != 0)
            || h.name.is_empty()
            || !h.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        if ["proxy", "content-type", "content-length"]
            .iter()
            .any(|n| h.name.eq_ignore_ascii_case(n))
            || (skip_host && h.name.eq_ignore_ascii_case("host"))
        {
            continue;
        }
        name.clear();
        name.push_str("HTTP_");
        name.extend(
            h.name
                .chars()
                .map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }),
        );
        let repeated = list[i + 1..].iter().any(|o| o.name.eq_ignore_ascii_case(h.name));
        if !repeated {
            put(&name, h.value);
            continue;
        }
        let sep: &[u8] = if h.name.eq_ignore_ascii_case("cookie") {
            b"; "
        } else {
            b", "
        };
        value.clear();
        value.extend_from_slice(h.value);
        for (j, o) in list.iter().enumerate().skip(i + 1) {
            if o.name.eq_ignore_ascii_case(h.name) {
                value.extend_from_slice(sep);
                value.extend_from_slice(o.value);
                if j < 128 {
                    done |= 1 << j;
                }
            }
        }
        put(&name, &value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastcgi_codec::Pairs;

    fn decode(out: &[u8]) -> Vec<(String, String)> {
        Pairs::new(out)
            .map(|p| {
                let (k, v) = p.unwrap();
                (
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn standard_params_and_headers() {
        let hs = [
            httparse::Header {
                name: "Host",
                value: b"example.com",
            },
            httparse::Header {
                name: "Proxy",
                value: b"http://evil",
            },
            httparse::Header {
                name: "Cookie",
                value: b"a=1",
            },
            httparse::Header {
                name: "X_Spoof",
                value: b"1",
            },
            httparse::Header {
                name: "cookie",
                value: b"b=2",
            },
            httparse::Header {
                name: "Content-Type",
                value: b"text/plain",
            },
        ];
        let extra = vec![
            ("APP_ENV".to_string(), "prod".to_string()),
            ("SERVER_SOFTWARE".into(), String::new()),
        ];
        let r = Request {
            method: "POST",
            request_uri: "/app.php/x?y=1",
            query: "y=1",
            document_uri: "/app.php/x",
            script_name: "/app.php",
            script_filename: "/srv/www/app.php",
            path_info: "/x",
            document_root: "/srv/www",
            server_name: "example.com",
            server_port: 80,
            server_addr: "127.0.0.1",
            remote_addr: "127.0.0.2",
            remote_port: 5555,
            protocol: "HTTP/1.1",
            https: false,
            content_length: Some(3),
            length_later: false,
            remote_user: None,
            headers: &hs,
            authority: None,
            extra: &extra,
        };
        let mut out = Vec::new();
        encode(&r, &mut out);
        let absolute = Request {
            authority: Some("other.example:8080"),
            ..r
        };
        let mut out2 = Vec::new();
        encode(&absolute, &mut out2);
        let hosts: Vec<_> = decode(&out2).into_iter().filter(|(n, _)| n == "HTTP_HOST").collect();
        assert_eq!(hosts, [("HTTP_HOST".to_string(), "other.example:8080".to_string())]);
        let p = decode(&out);
        let get = |k: &str| p.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH_TRANSLATED"), Some("/srv/www/x"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(get("HTTP_COOKIE"), Some("a=1; b=2"));
        assert_eq!(get("HTTP_HOST"), Some("example.com"));
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!(get("HTTP_X_SPOOF"), None);
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);
        assert_eq!(get("APP_ENV"), Some("prod"));
        assert_eq!(get("SERVER_SOFTWARE"), None, "an empty value removes a param");
        assert_eq!(get("REDIRECT_STATUS"), Some("200"));
    }
}
