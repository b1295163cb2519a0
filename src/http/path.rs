//! Turning a request target's path into a path under the root: percent-
//! decoding, then RFC 3986 dot-segment removal over the decoded bytes, so
//! `%2e%2e`, `%2f` and friends cannot climb out.

/// Whether the request path names a hidden file or directory: a segment
/// starting with `.` (after decoding and dot-segment removal), except a
/// first segment `.well-known` (RFC 8615). Paths without `/.` or an encoded
/// dot are answered without decoding.
pub fn is_hidden(raw: &[u8]) -> bool {
    let maybe = raw.windows(2).any(|w| w == b"/.") || raw.windows(3).any(|w| w.eq_ignore_ascii_case(b"%2e"));
    if !maybe {
        return false;
    }
    let Some(norm) = resolve(raw) else {
        return false; // refused as malformed later
    };
    norm[1..]
        .split(|&b| b == b'/')
        .enumerate()
        .any(|(i, seg)| seg.first() == Some(&b'.') && !(i == 0 && seg == b".well-known"))
}

/// `raw` percent-decoded and dot-segment-resolved: the path a request
/// names. `None` for a broken escape, an encoded NUL or a climb above `/`.
pub fn resolve(raw: &[u8]) -> Option<Vec<u8>> {
    let d = decode(raw)?;
    // Most paths are normal already: keep the decoded bytes as they are.
    if is_normal(&d) { Some(d) } else { normalize(&d) }
}

/// True when `normalize` would return `path` unchanged: it starts with `/`
/// and has no empty, `.` or `..` segment (no `//`, no `/.`; a name that
/// merely starts with a dot takes the slow path, which keeps it).
fn is_normal(path: &[u8]) -> bool {
    path.first() == Some(&b'/') && !path.windows(2).any(|w| w[0] == b'/' && (w[1] == b'/' || w[1] == b'.'))
}

/// Percent-decodes `raw`. `None` for a broken escape or an encoded NUL.
pub fn decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            let v = hi << 4 | lo;
            if v == 0 {
                return None;
            }
            out.push(v);
            i += 3;
        } else {
            if b == 0 {
                return None;
            }
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Removes `.` and `..` segments and merges repeated slashes. The result
/// starts with `/` and keeps a trailing slash. `None` if `..` would climb
/// above the root or the path is not absolute.
pub fn normalize(path: &[u8]) -> Option<Vec<u8>> {
    if is_normal(path) {
        return Some(path.to_vec());
    }
    if path.first() != Some(&b'/') {
        return None;
    }
    let mut segs: Vec<&[u8]> = Vec::new();
    let mut trailing = false;
    for seg in path[1..].split(|&b| b == b'/') {
        trailing = false;
        match seg {
            b"" => trailing = true,
            b"." => trailing = true,
            b".." => {
                segs.pop()?;
                trailing = true;
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    for s in &segs {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if trailing || segs.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

/// Percent-encodes a decoded path for a `Location` header or a link.
pub fn encode(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_segments() {
        for p in [
            "/.git/config",
            "/.env",
            "/a/.htpasswd",
            "/%2egit/HEAD",
            "/a/%2Eenv",
            "/.well-known/.x",
            "/a/.well-known/x",
        ] {
            assert!(is_hidden(p.as_bytes()), "{p}");
        }
        for p in [
            "/",
            "/a.b/c",
            "/.well-known/acme-challenge/t",
            "/a/./b",
            "/a/../b",
            "/x.",
            "/%2e%2e/",
        ] {
            assert!(!is_hidden(p.as_bytes()), "{p}");
        }
    }

    fn n(p: &str) -> Option<String> {
        normalize(&decode(p.as_bytes())?).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn dot_segments() {
        assert_eq!(n("/a/b/../c").as_deref(), Some("/a/c"));
        assert_eq!(n("/a/./b/").as_deref(), Some("/a/b/"));
        assert_eq!(n("//a///b").as_deref(), Some("/a/b"));
        assert_eq!(n("/a/..").as_deref(), Some("/"));
        assert_eq!(n("/").as_deref(), Some("/"));
    }

    #[test]
    fn escapes_are_refused() {
        assert_eq!(n("/../etc/passwd"), None);
        assert_eq!(n("/%2e%2e/etc/passwd"), None);
        assert_eq!(n("/a/%2E%2E%2f%2e%2e/etc"), None);
        assert_eq!(n("/a%00b"), None);
        assert_eq!(n("/a%zz"), None);
        assert_eq!(n("/a%2"), None);
    }
}
