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
    /// Other fields to pass on, as (name, value); a value is bytes as the
    /// application sent them (obs-text such as a Latin-1 file name passes).
    pub fields: Vec<(String, Vec<u8>)>,
}

/// Whether `buf` holds the empty line that ends a header section, looking
/// only at the bytes from `from` on (and the two before): a section that
/// comes in tiny pieces is then parsed once, not again for every piece.
pub fn has_end(buf: &[u8], from: usize) -> bool {
    if buf.starts_with(b"\n") || buf.starts_with(b"\r\n") {
        return true;
    }
    let tail = &buf[from.saturating_sub(2).min(buf.len())..];
    tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n")
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
            // RFC 3875 §6.2 wants one of Status, Location or Content-Type;
            // like nginx, a section with none is a 200 (an X-Accel-Redirect
            // alone, or no header at all).
            return Parsed::Done(head, pos);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Parsed::Invalid(format!(
                "header line without a colon: \"{}\"",
                crate::core::log::Esc(&line[..line.len().min(60)])
            ));
        };
        let (name, raw_value) = (&line[..colon], &line[colon + 1..]);
        let Ok(name) = std::str::from_utf8(name) else {
            return Parsed::Invalid("header name is not text".into());
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            return Parsed::Invalid(format!("invalid header name {:?}", truncate(name)));
        }
        let raw_value = raw_value.trim_ascii();
        if raw_value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
            return Parsed::Invalid(format!("control character in {name}"));
        }
        let lower = name.to_ascii_lowercase();
        // Hop-by-hop and framing fields are the server's business.
        if matches!(
            lower.as_str(),
            "connection" | "keep-alive" | "transfer-encoding" | "te" | "trailer" | "upgrade" | "server" | "date"
        ) {
            continue;
        }
        let Ok(value) = std::str::from_utf8(raw_value) else {
            // Bytes that are not UTF-8 are fine in other fields (obs-text,
            // RFC 9110 §5.5), not in those corral reads.
            if matches!(
                lower.as_str(),
                "status" | "location" | "content-type" | "content-length"
            ) || lower.starts_with("x-accel-")
                || lower == "x-sendfile"
            {
                return Parsed::Invalid(format!("{name} is not text"));
            }
            head.fields.push((name.to_string(), raw_value.to_vec()));
            continue;
        };
        match lower.as_str() {
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
            _ => head.fields.push((name.to_string(), value.as_bytes().to_vec())),
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

    #[test]
    fn the_end_of_a_head_is_found_in_any_pieces() {
        let head = b"Status: 200\r\nX-A: 1\r\n\r\nbody";
        for split in 0..head.len() {
            let end = head[..split].windows(4).any(|w| w == b"\r\n\r\n");
            // Fed a byte at a time up to `split`: found exactly when there.
            let mut found = false;
            for k in 1..=split {
                found |= has_end(&head[..k], k - 1);
            }
            assert_eq!(found, end, "split {split}");
        }
        assert!(has_end(b"\r\n", 0) && has_end(b"\n", 0));
        assert!(has_end(b"A: 1\n\n", 5) && has_end(b"A: 1\n\n", 6));
        assert!(!has_end(b"A: 1\r\nB: 2\r\n", 0));
    }

    use super::*;

    #[test]
    fn parses_fields() {
        let out = b"Status: 201 Made\r\nContent-Type: text/plain\nX-A: 1\nConnection: close\n\nbody";
        let Parsed::Done(h, n) = parse(out) else { panic!() };
        assert_eq!(&out[n..], b"body");
        assert_eq!(h.status, Some((201, "Made".into())));
        assert_eq!(h.content_type.as_deref(), Some("text/plain"));
        assert_eq!(h.fields, vec![("X-A".to_string(), b"1".to_vec())]);
    }

    #[test]
    fn rejects_bad_output() {
        assert!(matches!(parse(b"garbage line\n\n"), Parsed::Invalid(_)));
        // None of Status, Location, Content-Type: a 200, as behind nginx.
        let Parsed::Done(h, _) = parse(b"X-Only: 1\n\n") else {
            panic!()
        };
        assert_eq!(h.status, None);
        assert!(matches!(parse(b"\n"), Parsed::Done(..)));
        // obs-text passes in other fields, not in those corral reads.
        let Parsed::Done(h, _) =
            parse(b"Content-Type: a/b\nContent-Disposition: attachment; filename=\"r\xe9sum\xe9.pdf\"\n\n")
        else {
            panic!()
        };
        assert_eq!(h.fields[0].1, b"attachment; filename=\"r\xe9sum\xe9.pdf\"".to_vec());
        assert!(matches!(parse(b"Location: /\xe9\n\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"X-Accel-Redirect: /\xe9\n\n"), Parsed::Invalid(_)));
        assert!(matches!(parse(b"X-A: a\x7fb\n\n"), Parsed::Invalid(_)));
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
