//! The validity period of a certificate, read from its DER (just enough
//! of X.509 to warn an operator about an expired or expiring certificate).

/// `notBefore` and `notAfter` as Unix seconds; `None` if the DER does not
/// have the shape of a certificate.
pub fn period(der: &[u8]) -> Option<(i64, i64)> {
    let (cert, _) = element(der, 0x30)?;
    let (tbs, _) = element(cert, 0x30)?;
    let mut rest = tbs;
    // [0] version (optional), serial, signature algorithm, issuer.
    if rest.first() == Some(&0xa0) {
        rest = element(rest, 0xa0)?.1;
    }
    rest = element(rest, 0x02)?.1;
    rest = element(rest, 0x30)?.1;
    rest = element(rest, 0x30)?.1;
    let (validity, _) = element(rest, 0x30)?;
    let (not_before, rest) = time(validity)?;
    let (not_after, _) = time(rest)?;
    Some((not_before, not_after))
}

/// The element with `tag` at the start of `buf`: its contents and what follows.
fn element(buf: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    if *buf.first()? != tag {
        return None;
    }
    let first = *buf.get(1)? as usize;
    let (len, head) = if first < 0x80 {
        (first, 2)
    } else {
        let n = first & 0x7f;
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = buf.get(2..2 + n)?;
        (bytes.iter().fold(0usize, |a, &b| (a << 8) | b as usize), 2 + n)
    };
    let end = head.checked_add(len)?;
    Some((buf.get(head..end)?, buf.get(end..)?))
}

/// A UTCTime (`YYMMDDHHMMSSZ`) or GeneralizedTime (`YYYYMMDDHHMMSSZ`) at
/// the start of `buf`, as Unix seconds, and what follows it.
fn time(buf: &[u8]) -> Option<(i64, &[u8])> {
    let long = match buf.first()? {
        0x17 => false,
        0x18 => true,
        _ => return None,
    };
    let (text, rest) = element(buf, buf[0])?;
    let digits = text.strip_suffix(b"Z")?;
    let at = if long { 4 } else { 2 };
    if digits.len() != at + 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |from: usize, n: usize| {
        digits[from..from + n]
            .iter()
            .fold(0i64, |a, &b| a * 10 + i64::from(b - b'0'))
    };
    let year = if long {
        num(0, 4)
    } else {
        // RFC 5280: 50..99 are 19YY, 00..49 are 20YY.
        let y = num(0, 2);
        if y >= 50 { 1900 + y } else { 2000 + y }
    };
    let (month, day) = (num(at, 2), num(at + 2, 2));
    let (h, m, s) = (num(at + 4, 2), num(at + 6, 2), num(at + 8, 2));
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s, rest))
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A warning for an operator when the leaf certificate `der` (from `file`)
/// is expired, not yet valid, or expires within two weeks of `now`.
pub fn warning(file: &std::path::Path, der: &[u8], now: i64) -> Option<String> {
    let (not_before, not_after) = period(der)?;
    let date = |t: i64| {
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0) as u64);
        httpdate::fmt_http_date(at)
    };
    let f = file.display();
    if not_after < now {
        Some(format!(
            "{f}: the certificate expired on {}: clients will refuse it",
            date(not_after)
        ))
    } else if not_before > now {
        Some(format!("{f}: the certificate is not valid before {}", date(not_before)))
    } else if not_after - now < 14 * 86_400 {
        let days = (not_after - now + 86_399) / 86_400;
        Some(format!(
            "{f}: the certificate expires in {days} day(s), on {}",
            date(not_after)
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 23), 20_780);
    }

    #[test]
    fn times_and_garbage() {
        // UTCTime 2026-11-23 12:00:00Z, then GeneralizedTime 2050-01-01.
        let mut v = vec![0x17, 13];
        v.extend_from_slice(b"261123120000Z");
        let (t, rest) = time(&v).unwrap();
        assert_eq!(t, 20_780 * 86_400 + 12 * 3600);
        assert!(rest.is_empty());
        let mut g = vec![0x18, 15];
        g.extend_from_slice(b"20500101000000Z");
        assert_eq!(time(&g).unwrap().0, days_from_civil(2050, 1, 1) * 86_400);
        assert_eq!(time(&[0x17, 13, b'x']), None);
        assert_eq!(period(&[]), None);
        assert_eq!(period(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(period(&[0x30, 0x02, 0x30, 0x00]), None);
    }
}
