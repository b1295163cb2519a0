//! Sizes and durations as operators write them: `1024`, `"16k"`, `"1m"`,
//! `"30s"`, `"500ms"`, `"2m"`.

use std::time::Duration;

/// Parses a byte size: a plain number, or a number with `k`, `m` or `g`.
pub fn size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (digits, mult) = match s.char_indices().last()? {
        (i, 'k' | 'K') => (&s[..i], 1u64 << 10),
        (i, 'm' | 'M') => (&s[..i], 1 << 20),
        (i, 'g' | 'G') => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses a duration: a plain number of seconds, or a number with `ms`,
/// `s`, `m` or `h`.
pub fn duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        "w" => n.checked_mul(7 * 86_400_000)?,
        "y" => n.checked_mul(365 * 86_400_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size("1024"), Some(1024));
        assert_eq!(size("16k"), Some(16384));
        assert_eq!(size("1M"), Some(1 << 20));
        assert_eq!(size("k"), None);
        assert_eq!(size("-1"), None);
        assert_eq!(size("1.5m"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(duration("30"), Some(Duration::from_secs(30)));
        assert_eq!(duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(duration("s"), None);
        assert_eq!(duration("3x"), None);
    }
}
