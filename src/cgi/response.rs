//! A CGI script's response header section (RFC 3875 §6): `Status`,
//! `Content-Type`, `Location` and other fields, ended by an empty line.

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The header section is complete: it used `len` bytes of the input.
    Done(Head, usize),
    /// More output is needed.
    Partial,
    Invalid(String),
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Head {
    pub status: Option<(u16, String)>,
    pub location: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<u64>,
    /// Other fields to pass on, as (name, value).
    pub fields: Vec<(String, String)>,
}

/// Parses the header section at the start of `buf` (lines end in LF or CRLF).
pub fn parse(buf: &[u8]) -> Parsed {
    let mut head = Head::default();
    let mut pos = 0;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            return Parsed::Partial;
        };
        let line = &buf[pos..pos + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        pos += nl + 1;
        if line.is_empty() {
            if head.status.is_none() && head.location.is_none() && head.content_type.is_none() {
                return Parsed::Invalid("no Status, Location or Content-Type".into());
            }
            return Parsed::Done(head, pos);
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return Parsed::Invalid("header line is not text".into());
        };
        let Some((name, value)) = line.split_once(':') else {
            return Parsed::Invalid(format!("header line without a colon: {:?}", truncate(line)));
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Parsed::Invalid(format!("invalid header name {:?}", truncate(name)));
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|b| b < 0x20 && b != b'\t') {
            return Parsed::Invalid(format!("control character in {name}"));
        }
        match name.to_ascii_lowercase().as_str() {
            "status" => {
                let code = value
                    .get(..3)
                    .and_then(|c| c.parse::<u16>().ok())
                    // A script gives the final response: no 1xx, nothing past 599.
                    .filter(|c| (200..=599).contains(c));
                let Some(code) = code.filter(|_| value.len() == 3 || value.as_bytes()[3] == b' ') else {
                    return Parsed::Invalid(format!("bad Status {:?}", truncate(value)));
                };
                // The first one counts, as behind nginx (fcgiwrap, php-fpm).
                if head.status.is_none() {
                    head.status = Some((code, value.get(4..).unwrap_or("").trim().to_string()));
                }
            }
            "location" => head.location = Some(value.to_string()),
            "content-type" => head.content_type = Some(value.to_string()),
            "content-length" => match value.parse::<u64>() {
                // Two different lengths cannot both frame the body (RFC 9110 §8.6).
                Ok(n) if head.content_length.is_some_and(|m| m != n) => {
                    return Parsed::Invalid(format!("two different Content-Length values, {:?}", truncate(value)));
                }
                Ok(n) if value.bytes().all(|b| b.is_ascii_digit()) => head.content_length = Some(n),
                _ => return Parsed::Invalid(format!("bad Content-Length {:?}", truncate(value))),
            },
            // Hop-by-hop and framing fields are the server's business.
            "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "server" | "date" => {}
            _ => head.fields.push((name.to_string(), value.to_string())),
        }
    }
}

fn truncate(s: &str) -> &str {
    let mut end = s.len().min(60);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields() {
        let out = b"Status: 201 Made\r\nContent-Type: text/plain\nX-A: 1\nConnection: close\n\nbody";
        let Parsed::Done(h, n) = parse(out) else { panic!() };
        assert_eq!(&out[n..], b"body");
        assert_eq!(h.status, Some((201, "Made".into())));
        assert_eq!(h.content_type.as_deref(), Some("text/plain"));
        assert_eq!(h.fields, vec![("X-A".to_string(), "1".to_string())]);
    }

    #[test]
    fn rejects_bad_output() {
        assert!(matches!(parse(b"garbage line\n\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"X-Only: 1\n\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"Status: abc\n\n"), Parsed::Invalid(_)));
        let Parsed::Done(h, _) = parse(b"Status: 404 Gone\nStatus: 200\n\n") else {
            panic!()
        };
        assert_eq!(h.status, Some((404, "Gone".to_string())));
        assert!(matches!(parse(b"Status: 100 Continue\n\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"Status: 600\n\n"), Parsed::Invalid(_)));
        assert!(matches!(
            parse(b"Content-Type: a/b\nContent-Length: 10\nContent-Length: 5\n\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(
            parse(b"Content-Type: a/b\nContent-Length: 5\nContent-Length: 5\n\n"),
            Parsed::Done(..)
        ));
        assert!(matches!(
            parse(b"Content-Length: 1x\nStatus: 200\n\n"),
            Parsed::Invalid(_)
        ));
        assert!(matches!(parse(b"Bad Name: x\n\n"), Parsed::Invalid(_)));
        assert_eq!(parse(b"Content-Type: text/html\n"), Parsed::Partial);
    }
}
