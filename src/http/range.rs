//! The `Range` header (RFC 9110 §14.2), single byte ranges.

#[derive(Debug, PartialEq, Eq)]
pub enum Range {
    /// Serve the whole representation (no range, or one we choose to ignore).
    Full,
    /// Bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Interprets `header` against a representation of `len` bytes. Invalid
/// syntax and multiple ranges are ignored (a full 200 is allowed).
pub fn parse(header: &str, len: u64) -> Range {
    let h = header.trim();
    let Some(spec) = h.get(..6).filter(|u| u.eq_ignore_ascii_case("bytes=")).map(|_| &h[6..]) else {
        return Range::Full;
    };
    // A list may hold empty elements (RFC 9110 §5.6.1); more than one
    // range is served whole.
    let mut ranges = spec.split(',').map(str::trim).filter(|r| !r.is_empty());
    let (Some(one), None) = (ranges.next(), ranges.next()) else {
        return Range::Full;
    };
    let Some((a, b)) = one.split_once('-') else {
        return Range::Full;
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
        let Some(n) = num(b) else { return Range::Full };
        if n == 0 || len == 0 {
            return Range::Unsatisfiable;
        }
        return Range::Part {
            start: len - n.min(len),
            end: len - 1,
        };
    }
    let Some(start) = num(a) else { return Range::Full };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match num(b) {
            Some(e) if e >= start => e,
            _ => return Range::Full,
        }
    };
    if start >= len {
        return Range::Unsatisfiable;
    }
    Range::Part {
        start,
        end: end.min(len - 1),
    }
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
        assert_eq!(parse("bytes=0-1,3-4", 100), Range::Full);
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
