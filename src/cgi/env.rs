//! The environment of a CGI script, built from scratch (RFC 3875 §4.1):
//! nothing of the server's own environment leaks into it.

/// What the environment is made from.
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent (REQUEST_URI).
    pub uri: &'a str,
    pub query: &'a str,
    pub script_name: &'a str,
    pub script_filename: &'a str,
    pub path_info: &'a str,
    pub document_root: &'a str,
    pub server_name: &'a str,
    pub server_port: u16,
    pub server_addr: String,
    pub remote_addr: String,
    pub remote_port: u16,
    pub protocol: &'a str,
    /// Over TLS: `HTTPS=on` and `REQUEST_SCHEME=https`.
    pub https: bool,
    pub content_length: Option<u64>,
    /// The user `auth_basic` let in (REMOTE_USER, and AUTH_TYPE "Basic").
    pub remote_user: Option<&'a str>,
    /// Request header fields, in order, as (name, value): values as sent
    /// (RFC 9110 §5.5: bytes that are not text pass as they are).
    pub headers: &'a [(String, Vec<u8>)],
    /// Extra entries from the configuration (they win).
    pub extra: &'a [(String, String)],
}

/// The meta-variables, in a stable order; values are bytes.
pub fn build(r: &Request<'_>) -> Vec<(String, Vec<u8>)> {
    let mut env: Vec<(String, Vec<u8>)> = Vec::with_capacity(32 + r.headers.len());
    fn put(env: &mut Vec<(String, Vec<u8>)>, k: &str, v: impl AsRef<[u8]>) {
        env.push((k.to_string(), v.as_ref().to_vec()));
    }
    put(&mut env, "GATEWAY_INTERFACE", "CGI/1.1");
    put(
        &mut env,
        "SERVER_SOFTWARE",
        concat!("corral/", env!("CARGO_PKG_VERSION")),
    );
    put(&mut env, "SERVER_PROTOCOL", r.protocol);
    put(&mut env, "REQUEST_SCHEME", if r.https { "https" } else { "http" });
    if r.https {
        put(&mut env, "HTTPS", "on");
    }
    put(&mut env, "SERVER_NAME", r.server_name);
    put(&mut env, "SERVER_PORT", r.server_port.to_string());
    put(&mut env, "SERVER_ADDR", &r.server_addr);
    put(&mut env, "REQUEST_METHOD", r.method);
    put(&mut env, "REQUEST_URI", r.uri);
    put(&mut env, "QUERY_STRING", r.query);
    put(&mut env, "SCRIPT_NAME", r.script_name);
    put(&mut env, "SCRIPT_FILENAME", r.script_filename);
    put(&mut env, "PATH_INFO", r.path_info);
    if !r.path_info.is_empty() {
        put(
            &mut env,
            "PATH_TRANSLATED",
            format!("{}{}", r.document_root.trim_end_matches('/'), r.path_info),
        );
    }
    put(&mut env, "DOCUMENT_ROOT", r.document_root);
    put(&mut env, "REMOTE_ADDR", &r.remote_addr);
    put(&mut env, "REMOTE_PORT", r.remote_port.to_string());
    // RFC 3875 §4.1.1 and §4.1.11: set when the server authenticated the client.
    match r.remote_user {
        Some(u) => {
            put(&mut env, "AUTH_TYPE", "Basic");
            put(&mut env, "REMOTE_USER", u);
        }
        None => put(&mut env, "AUTH_TYPE", ""),
    }
    // php-cgi refuses to run without it (its force-cgi-redirect check).
    put(&mut env, "REDIRECT_STATUS", "200");
    put(&mut env, "PATH", "/usr/local/bin:/usr/bin:/bin");
    if let Some(n) = r.content_length {
        put(&mut env, "CONTENT_LENGTH", n.to_string());
    }
    for (name, value) in r.headers {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "content-type" => {
                put(&mut env, "CONTENT_TYPE", value);
                continue;
            }
            // Framing is ours: the script gets CONTENT_LENGTH and a plain body.
            "content-length" | "transfer-encoding" | "connection" => continue,
            // httpoxy: a request header must never become HTTP_PROXY.
            "proxy" => continue,
            // Credentials stay with the server (RFC 3875 §4.1.18).
            "authorization" | "proxy-authorization" => continue,
            _ => {}
        }
        // An underscore would make `X_Forwarded_For` the same variable as
        // `X-Forwarded-For` (a header a front proxy strips could come back
        // that way): such names are dropped, as nginx and the FastCGI
        // params do.
        if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            continue;
        }
        let key = format!("HTTP_{}", name.to_ascii_uppercase().replace('-', "_"));
        // Repeated fields are joined, as RFC 9110 §5.3 allows; cookies
        // with "; " (RFC 6265 §5.4).
        if let Some(e) = env.iter_mut().find(|(k, _)| *k == key) {
            e.1.extend_from_slice(if lower == "cookie" { b"; " } else { b", " });
            e.1.extend_from_slice(value);
        } else {
            env.push((key, value.clone()));
        }
    }
    for (k, v) in r.extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone().into_bytes()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_variables_and_httpoxy() {
        let headers = vec![
            ("Host".to_string(), b"example.org".to_vec()),
            ("Proxy".to_string(), b"http://evil/".to_vec()),
            ("X-Multi".to_string(), b"a".to_vec()),
            ("X-Raw".to_string(), b"\xff\xfe".to_vec()),
            ("x-multi".to_string(), b"b".to_vec()),
            ("Content-Type".to_string(), b"text/plain".to_vec()),
            ("X_Multi".to_string(), b"spoofed".to_vec()),
            ("Transfer_Encoding".to_string(), b"chunked".to_vec()),
            ("Cookie".to_string(), b"a=1".to_vec()),
            ("cookie".to_string(), b"b=2".to_vec()),
        ];
        let extra = vec![("FOO".to_string(), "bar".to_string())];
        let env = build(&Request {
            method: "POST",
            uri: "/cgi-bin/t.cgi/x?y=1",
            query: "y=1",
            script_name: "/cgi-bin/t.cgi",
            script_filename: "/srv/cgi-bin/t.cgi",
            path_info: "/x",
            document_root: "/srv/www",
            server_name: "example.org",
            server_port: 80,
            server_addr: "127.0.0.1".into(),
            remote_addr: "127.0.0.2".into(),
            remote_port: 5555,
            protocol: "HTTP/1.1",
            https: true,
            content_length: Some(3),
            remote_user: Some("alice"),
            headers: &headers,
            extra: &extra,
        });
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| std::str::from_utf8(v).unwrap_or("(not UTF-8)"))
        };
        let raw = env.iter().find(|(n, _)| n == "HTTP_X_RAW").map(|(_, v)| v.as_slice());
        assert_eq!(raw, Some(&b"\xff\xfe"[..]), "bytes that are not text pass unchanged");
        assert_eq!(get("HTTP_PROXY"), None);
        assert_eq!((get("AUTH_TYPE"), get("REMOTE_USER")), (Some("Basic"), Some("alice")));
        assert_eq!(get("HTTPS"), Some("on"));
        assert_eq!(get("REQUEST_SCHEME"), Some("https"));
        assert_eq!(get("HTTP_X_MULTI"), Some("a, b"));
        assert_eq!(get("CONTENT_TYPE"), Some("text/plain"));
        assert_eq!(get("CONTENT_LENGTH"), Some("3"));
        assert_eq!(get("PATH_TRANSLATED"), Some("/srv/www/x"));
        assert_eq!(get("FOO"), Some("bar"));
        assert_eq!(get("HTTP_CONTENT_TYPE"), None);
        assert_eq!(get("HTTP_TRANSFER_ENCODING"), None);
        assert_eq!(get("HTTP_COOKIE"), Some("a=1; b=2"));
    }
}
