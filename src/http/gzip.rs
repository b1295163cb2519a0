//! On-the-fly gzip of a response body (`gzip = true`): the body is read,
//! compressed and framed a piece at a time as the socket drains, so a
//! large file is never held whole in memory.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::reply::{Produce, Reply, ReplyBody, Source};
use super::request::Request;
use crate::config;

/// Input read per step: one step's output stays small.
const STEP: usize = 16 * 1024;

pub struct Stream {
    /// The uncompressed bytes: `src` from `at` to `end`.
    src: Source,
    at: u64,
    end: u64,
    /// The bytes read for one step (kept: no allocation per step).
    input: Vec<u8>,
    enc: Option<GzEncoder<Vec<u8>>>,
    /// HTTP/1.1: chunked framing; else the connection's close ends it.
    chunked: bool,
}

impl Stream {
    pub fn new(src: Source, offset: u64, len: u64, level: u32, chunked: bool) -> Stream {
        Stream {
            src,
            at: offset,
            end: offset + len,
            input: Vec::with_capacity(STEP),
            enc: Some(GzEncoder::new(Vec::with_capacity(STEP), Compression::new(level))),
            chunked,
        }
    }
}

impl Produce for Stream {
    /// Appends the next framed piece of output to `out`; `Ok(false)` once
    /// the stream (and its last chunk) is complete.
    fn produce(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool> {
        let Some(enc) = self.enc.as_mut() else { return Ok(false) };
        // Deflate may hold back output: feed until some comes out or the input ends.
        let mut ended = false;
        while enc.get_ref().is_empty() {
            let n = (self.end - self.at).min(STEP as u64) as usize;
            if n == 0 {
                ended = true;
                break;
            }
            self.input.clear();
            self.src.append(&mut self.input, self.at, n)?;
            self.at += n as u64;
            enc.write_all(&self.input)?;
        }
        let mut piece = std::mem::take(enc.get_mut());
        if ended {
            let enc = self.enc.take().expect("present");
            piece.extend_from_slice(&enc.finish()?);
        }
        if self.chunked && !piece.is_empty() {
            let _ = write!(out, "{:x}\r\n", piece.len());
            out.extend_from_slice(&piece);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(&piece);
        }
        if ended && self.chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
        Ok(true)
    }
}

/// Bodies up to this size are compressed at once, not streamed.
const AT_ONCE: usize = 64 * 1024;

/// The `gzip` filter: a 200, 403 or 404 (nginx's statuses) of a listed type, long enough, to a client
/// that accepts gzip, and not already encoded (gzip_static), leaves
/// compressed. Its ETag becomes weak and ranges are no longer offered, as
/// nginx does; a streamed body is chunked (HTTP/1.1) or ends with the
/// connection (HTTP/1.0).
pub fn filter(r: &mut Reply, cfg: &config::Gzip, req: &Request) {
    let Some(ct) = r.content_type else { return };
    let len = r.length.unwrap_or(0);
    if !matches!(r.status, 200 | 403 | 404)
        || len < cfg.min_length.max(1)
        || !cfg.types.iter().any(|t| t == "*" || t == ct)
        || r.extra.contains("Content-Encoding:")
    {
        return;
    }
    // Caches must keep the two forms apart, whichever this client gets
    // (gzip_static may have said so already).
    if !r.extra.contains("Vary: Accept-Encoding") {
        r.header("Vary", "Accept-Encoding");
    }
    if !req.accepts("gzip") {
        return;
    }
    let body = std::mem::replace(&mut r.body, ReplyBody::Empty);
    let stream = |src, offset, len| Box::new(Stream::new(src, offset, len, cfg.level, req.minor >= 1));
    r.body = match body {
        ReplyBody::Bytes(b) => ReplyBody::Bytes(compress(&b, cfg.level)),
        ReplyBody::Shared { data, offset, len } if len <= AT_ONCE => {
            ReplyBody::Bytes(compress(&data[offset..offset + len], cfg.level))
        }
        ReplyBody::Shared { data, offset, len } => {
            ReplyBody::Stream(stream(Source::Memory(data), offset as u64, len as u64))
        }
        ReplyBody::File { file, offset, len } => ReplyBody::Stream(stream(Source::File(file), offset, len)),
        other => {
            r.body = other;
            return;
        }
    };
    match &r.body {
        ReplyBody::Bytes(b) => r.length = Some(b.len() as u64),
        _ => {
            r.length = None;
            if req.minor >= 1 {
                r.header("Transfer-Encoding", "chunked");
            } else {
                r.close = true;
            }
        }
    }
    if let Some(shared) = r.shared.take() {
        for line in shared.split("\r\n").filter(|l| !l.is_empty()) {
            match line.split_once(": ") {
                Some(("ETag", tag)) if !tag.starts_with("W/") => r.header("ETag", format_args!("W/{tag}")),
                Some(("Accept-Ranges", _)) => {}
                _ => {
                    r.extra.push_str(line);
                    r.extra.push_str("\r\n");
                }
            }
        }
    }
    r.header("Content-Encoding", "gzip");
}

/// Compresses a small body at once.
pub fn compress(data: &[u8], level: u32) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::with_capacity(data.len() / 2 + 64), Compression::new(level));
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
        out
    }

    /// Removes chunked framing.
    fn unchunk(mut b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        loop {
            let line = b.iter().position(|&c| c == b'\n').unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&b[..line - 1]).unwrap(), 16).unwrap();
            b = &b[line + 1..];
            if n == 0 {
                assert_eq!(b, b"\r\n");
                return out;
            }
            out.extend_from_slice(&b[..n]);
            b = &b[n + 2..];
        }
    }

    #[test]
    fn streams_a_large_body_in_pieces() {
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let len = data.len();
        let mut s = Stream::new(Source::Memory(data.clone().into()), 0, len as u64, 1, true);
        let mut all = Vec::new();
        let mut steps = 0;
        loop {
            let mut out = Vec::new();
            if !s.produce(&mut out).unwrap() {
                break;
            }
            assert!(out.len() < 4 * STEP, "one step's output stays small");
            all.extend_from_slice(&out);
            steps += 1;
        }
        assert!(steps > 10);
        assert_eq!(gunzip(&unchunk(&all)), data);
        assert_eq!(gunzip(&compress(b"abc", 6)), b"abc");
    }
}
