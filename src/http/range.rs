//! The `Range` header (RFC 9110 §14.2): one byte range, or several
//! (answered as `multipart/byteranges`, see `byteranges`).

#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// Serve the whole representation (no range, or one we choose to ignore).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// Several satisfiable ranges `(start, end)`, inclusive, in the order asked.
    Parts(Vec<(u64, u64)>),
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// More ranges than this in one header are served whole: a long list of
/// tiny ranges costs far more in part headers than it saves (RFC 9110
/// §14.3 lets a server ignore such a request).
pub const MAX_RANGES: usize = 100;

/// Interprets `header` against a representation of `len` bytes. Invalid
/// syntax is ignored (a full 200, as RFC 9110 §14.2 says). Ranges that
/// start past the end are dropped; when none is left, 416. Several ranges
/// that add up to more than the representation (overlaps: a small request
/// asking for many copies) are served whole, as nginx does.
pub fn parse(header: &str, len: u64) -> Range {
    let h = header.trim();
    let Some(spec) = h.get(..6).filter(|u| u.eq_ignore_ascii_case("bytes=")).map(|_| &h[6..]) else {
        return Range::Full;
    };
    // A list may hold empty elements (RFC 9110 §5.6.1).
    let mut parts = Vec::new();
    let mut seen = 0;
    for one in spec.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        seen += 1;
        if seen > MAX_RANGES {
            return Range::Full;
        }
        match element(one, len) {
            Element::Invalid => return Range::Full,
            Element::Unsatisfiable => {}
            Element::Part(start, end) => parts.push((start, end)),
        }
    }
    match parts.len() {
        0 if seen == 0 => Range::Full,
        0 => Range::Unsatisfiable,
        1 => Range::Part {
            start: parts[0].0,
            end: parts[0].1,
        },
        _ => {
            let total = parts.iter().try_fold(0u64, |t, (s, e)| t.checked_add(e - s + 1));
            if total.is_none_or(|t| t > len) {
                Range::Full
            } else {
                Range::Parts(parts)
            }
        }
    }
}

enum Element {
    Invalid,
    Unsatisfiable,
    Part(u64, u64),
}

/// One `first-last`, `first-` or `-suffix` element.
fn element(one: &str, len: u64) -> Element {
    let Some((a, b)) = one.split_once('-') else {
        return Element::Invalid;
    };
    let (a, b) = (a.trim(), b.trim());
    // Digits only; a position past u64 is as good as u64::MAX (a last
    // position past the end is clamped, a first one is unsatisfiable).
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            Some(s.parse().unwrap_or(u64::MAX))
        }
    };
    if a.is_empty() {
        let Some(n) = num(b) else { return Element::Invalid };
        if n == 0 || len == 0 {
            return Element::Unsatisfiable;
        }
        return Element::Part(len - n.min(len), len - 1);
    }
    let Some(start) = num(a) else { return Element::Invalid };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) if e >= start => e,
            _ => return Element::Invalid,
        }
    };
    if start >= len {
        return Element::Unsatisfiable;
    }
    Element::Part(start, end.min(len - 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(parse("bytes=0-9", 100), Range::Part { start: 0, end: 9 });
        assert_eq!(parse("bytes=90-", 100), Range::Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=-10", 100), Range::Part { start: 90, end: 99 });
        assert_eq!(parse("bytes=-1000", 100), Range::Part { start: 0, end: 99 });
        assert_eq!(parse("bytes=50-1000", 100), Range::Part { start: 50, end: 99 });
        assert_eq!(parse("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse("bytes=-0", 100), Range::Unsatisfiable);
        assert_eq!(parse("bytes=5-1", 100), Range::Full);
        assert_eq!(parse("items=0-1", 100), Range::Full);
        assert_eq!(parse("bytes=0-1,3-4", 100), Range::Parts(vec![(0, 1), (3, 4)]));
        assert_eq!(parse("bytes=0-1,-2", 100), Range::Parts(vec![(0, 1), (98, 99)]));
        // Unsatisfiable elements are dropped; one left is a plain range.
        assert_eq!(parse("bytes=0-1,200-300", 100), Range::Part { start: 0, end: 1 });
        assert_eq!(parse("bytes=200-300,100-", 100), Range::Unsatisfiable);
        // Overlaps adding up past the length, or one invalid element: whole.
        assert_eq!(parse("bytes=0-99,0-99", 100), Range::Full);
        assert_eq!(parse("bytes=0-60,40-99", 100), Range::Full);
        assert_eq!(parse("bytes=0-1,x-2", 100), Range::Full);
        assert_eq!(parse("bytes=0-1,5", 100), Range::Full);
        let many = vec!["0-0"; MAX_RANGES + 1].join(",");
        assert_eq!(parse(&format!("bytes={many}"), 1000), Range::Full);
        assert_eq!(parse("bytes=", 100), Range::Full);
        assert_eq!(parse("bytes=x-1", 100), Range::Full);
        assert_eq!(parse("bytes=0-4,", 100), Range::Part { start: 0, end: 4 });
        assert_eq!(parse("bytes=, 0-4 ,,", 100), Range::Part { start: 0, end: 4 });
        assert_eq!(
            parse("bytes=0-99999999999999999999999", 100),
            Range::Part { start: 0, end: 99 }
        );
        assert_eq!(parse("bytes=99999999999999999999-", 100), Range::Unsatisfiable);
        assert_eq!(
            parse("bytes=-99999999999999999999", 100),
            Range::Part { start: 0, end: 99 }
        );
    }
}
