//! Several ranges of one file in one 206: `multipart/byteranges`
//! (RFC 9110 §14.6). Each part is a boundary line, its own `Content-Type`
//! and `Content-Range`, a blank line and the bytes; the body ends with the
//! closing boundary. Its length is known before the first byte, so the
//! response keeps its `Content-Length`.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::reply::{Produce, Reply, ReplyBody, Source};

/// Bytes produced per turn, as for a compressed stream.
const STEP: usize = 32 * 1024;

/// The parts of one response, produced piece by piece as the client takes them.
pub struct Parts {
    src: Source,
    ranges: Vec<(u64, u64)>,
    /// The representation's length, for each `Content-Range`.
    len: u64,
    part_type: String,
    boundary: String,
    /// The part being sent, and how far into its bytes.
    next: usize,
    at: u64,
    done: bool,
}

/// A boundary that differs between responses (RFC 2046 §5.1.1: it must
/// not occur in the parts, which no choice can promise for arbitrary
/// bytes; 20 varying digits make a collision in a file unlikely).
fn boundary() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (seed ^ (u64::from(std::process::id()) << 40)).wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    format!("{mixed:020}")
}

impl Parts {
    fn part_head(&self, out: &mut Vec<u8>, i: usize) {
        let (start, end) = self.ranges[i];
        let _ = write!(out, "\r\n--{}\r\n", self.boundary);
        if !self.part_type.is_empty() {
            let _ = write!(out, "Content-Type: {}\r\n", self.part_type);
        }
        let _ = write!(out, "Content-Range: bytes {start}-{end}/{}\r\n\r\n", self.len);
    }

    fn tail(&self, out: &mut Vec<u8>) {
        let _ = write!(out, "\r\n--{}--\r\n", self.boundary);
    }

    /// The exact body length: every part's head and bytes, and the tail.
    fn body_len(&self) -> u64 {
        let mut head = Vec::new();
        let mut total = 0;
        for (i, (start, end)) in self.ranges.iter().enumerate() {
            head.clear();
            self.part_head(&mut head, i);
            total += head.len() as u64 + (end - start + 1);
        }
        head.clear();
        self.tail(&mut head);
        total + head.len() as u64
    }
}

impl Produce for Parts {
    fn produce(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        if self.done {
            return Ok(false);
        }
        while out.len() < STEP {
            let Some(&(start, end)) = self.ranges.get(self.next) else {
                self.tail(out);
                self.done = true;
                break;
            };
            if self.at == 0 {
                self.part_head(out, self.next);
            }
            let left = end - start + 1 - self.at;
            let n = left.min((STEP - out.len().min(STEP)).max(1) as u64) as usize;
            self.src.append(out, start + self.at, n)?;
            self.at += n as u64;
            if self.at > end - start {
                self.next += 1;
                self.at = 0;
            }
        }
        Ok(true)
    }
}

/// Turns a reply whose body is `Ranges` into its multipart form, once its
/// headers are final (the part type is the reply's, charset included).
pub fn finish(r: &mut Reply) {
    let body = std::mem::replace(&mut r.body, ReplyBody::Empty);
    let ReplyBody::Ranges { src, ranges, len } = body else {
        r.body = body;
        return;
    };
    let part_type = match r.content_type.take() {
        Some(ct) => match r.charset.take() {
            Some(cs) => format!("{ct}; charset={cs}"),
            None => ct.to_string(),
        },
        // A type carried from an application (X-Accel-Redirect) sits in
        // the extra lines: it moves into the parts.
        None => take_line(&mut r.extra, "Content-Type").unwrap_or_default(),
    };
    let parts = Parts {
        src,
        ranges,
        len,
        part_type,
        boundary: boundary(),
        next: 0,
        at: 0,
        done: false,
    };
    r.length = Some(parts.body_len());
    r.header(
        "Content-Type",
        format_args!("multipart/byteranges; boundary={}", parts.boundary),
    );
    r.body = ReplyBody::Stream(Box::new(parts));
}

/// Removes the header line `name` from `extra`; its value.
fn take_line(extra: &mut String, name: &str) -> Option<String> {
    let mut at = 0;
    for line in extra.split_inclusive("\r\n") {
        if let Some((n, v)) = line.split_once(':')
            && n.eq_ignore_ascii_case(name)
        {
            let value = v.trim().to_string();
            extra.replace_range(at..at + line.len(), "");
            return Some(value);
        }
        at += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(p: &mut Parts) -> Vec<u8> {
        let mut all = Vec::new();
        loop {
            let mut out = Vec::new();
            let more = p.produce(&mut out).expect("memory");
            all.extend_from_slice(&out);
            if !more {
                return all;
            }
        }
    }

    #[test]
    fn parts_and_length() {
        let data: std::sync::Arc<[u8]> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let ranges = vec![(0, 9), (100_000, 170_000), (199_990, 199_999)];
        let mut p = Parts {
            src: Source::Memory(data.clone()),
            ranges: ranges.clone(),
            len: data.len() as u64,
            part_type: "text/plain; charset=utf-8".into(),
            boundary: "B0".into(),
            next: 0,
            at: 0,
            done: false,
        };
        let want = p.body_len();
        let got = body(&mut p);
        assert_eq!(got.len() as u64, want);
        let mut expect = Vec::new();
        for (s, e) in ranges {
            expect.extend_from_slice(
                format!(
                    "\r\n--B0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Range: bytes {s}-{e}/200000\r\n\r\n"
                )
                .as_bytes(),
            );
            expect.extend_from_slice(&data[s as usize..=e as usize]);
        }
        expect.extend_from_slice(b"\r\n--B0--\r\n");
        assert!(got == expect, "multipart body differs");
    }

    #[test]
    fn carried_type_moves_into_parts() {
        let mut extra = "X-A: 1\r\nContent-Type: image/png\r\nX-B: 2\r\n".to_string();
        assert_eq!(take_line(&mut extra, "content-type").as_deref(), Some("image/png"));
        assert_eq!(extra, "X-A: 1\r\nX-B: 2\r\n");
        assert_eq!(take_line(&mut extra, "Content-Type"), None);
    }

    #[test]
    fn boundaries_differ() {
        let (a, b) = (boundary(), boundary());
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
    }
}
