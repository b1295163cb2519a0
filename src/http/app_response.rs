//! An application's response (a CGI script's or a FastCGI app's) on its
//! way to the client: its header section becomes the HTTP head, and its
//! body is framed by the length it gave or, without one, chunked; the
//! `gzip` filter compresses it on the way (then always chunked).

use std::fmt::Write as _;
use std::io::{self, Write as _};

use super::conn::Exchange;
use super::status;
use crate::cgi::response::Head;

/// How the body of an application's response is framed for the client.
#[derive(Default)]
pub struct Framing {
    pub head_sent: bool,
    pub chunked: bool,
    /// Body bytes still expected when the application gave a Content-Length.
    pub remaining: Option<u64>,
    /// All output is framed and queued.
    pub ended: bool,
    /// False when the body could not be delimited as promised: close after.
    pub framing_ok: bool,
    /// Output of a bodiless response (204, 304) is read and dropped.
    pub discard: bool,
    /// The script, for log lines.
    pub name: String,
    /// Output past the Content-Length was dropped (and logged, once).
    overflowed: bool,
    /// The `gzip` filter's compressor: each piece of output is compressed
    /// and flushed (a sync flush) as it comes, so streamed output still
    /// reaches the client piece by piece.
    gz: Option<flate2::write::GzEncoder<Vec<u8>>>,
}

impl Framing {
    pub fn new(name: String) -> Framing {
        Framing {
            framing_ok: true,
            name,
            ..Default::default()
        }
    }

    /// Frames body bytes for the client into `out`.
    pub fn frame(&mut self, data: &[u8], out: &mut Vec<u8>, head_only: bool) {
        if head_only || self.discard || data.is_empty() {
            return;
        }
        let data = match self.remaining {
            Some(r) => {
                let n = (r as usize).min(data.len());
                if n < data.len() && !std::mem::replace(&mut self.overflowed, true) {
                    crate::warn!("{} wrote more than its Content-Length; extra bytes dropped", self.name);
                }
                self.remaining = Some(r - n as u64);
                &data[..n]
            }
            None => data,
        };
        if data.is_empty() {
            return;
        }
        let packed;
        let data = match &mut self.gz {
            Some(gz) => {
                if gz.write_all(data).and_then(|()| gz.flush()).is_err() {
                    return;
                }
                packed = std::mem::take(gz.get_mut());
                if packed.is_empty() {
                    return;
                }
                &packed[..]
            }
            None => data,
        };
        if self.chunked {
            let _ = write!(ChunkSize(out), "{:x}\r\n", data.len());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        } else {
            out.extend_from_slice(data);
        }
    }

    /// Ends the body: the last chunk, or a check that the promised length came.
    pub fn end(&mut self, out: &mut Vec<u8>, head_only: bool) {
        self.ended = true;
        if head_only || self.discard {
            return;
        }
        if self.remaining.is_some_and(|r| r > 0) {
            // No last chunk: the client sees the truncation.
            crate::error!("{} ended before its Content-Length; closing the connection", self.name);
            self.framing_ok = false;
            return;
        }
        if let Some(gz) = self.gz.take()
            && let Ok(tail) = gz.finish()
            && !tail.is_empty()
        {
            if self.chunked {
                let _ = write!(ChunkSize(out), "{:x}\r\n", tail.len());
                out.extend_from_slice(&tail);
                out.extend_from_slice(b"\r\n");
            } else {
                out.extend_from_slice(&tail);
            }
        }
        if self.chunked {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

/// Lets `write!` append to a byte vector.
struct ChunkSize<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for ChunkSize<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// A `Location` without `Status` that is a local redirect (RFC 3875
/// §6.2.2: an abs-path): `/x`, not the network-path `//host/x` (nor
/// `/\host`, which browsers read alike): those are sent to the client.
/// The header fields of an application's answer that an internal
/// redirect it asked for (X-Accel-Redirect, X-Sendfile) keeps for the
/// file's answer: nginx's list (the download's name, cookies, caching),
/// and its Content-Type. A value that is not text is dropped.
pub fn carried_fields(h: &Head) -> (Vec<(String, Vec<u8>)>, Option<String>) {
    let mut carried = Vec::new();
    for (n, v) in &h.fields {
        if ["content-disposition", "set-cookie", "cache-control", "expires"]
            .iter()
            .any(|k| n.eq_ignore_ascii_case(k))
            && std::str::from_utf8(v).is_ok()
        {
            carried.push((n.clone(), v.clone()));
        }
    }
    let ctype = h.content_type.clone().filter(|t| !t.contains(['\r', '\n']));
    (carried, ctype)
}

/// The text value of field `name` of an application's answer (the
/// parser refused these unless they are text).
pub fn field(h: &Head, name: &str) -> Option<String> {
    h.fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Drops the X-Accel-* fields: instructions to the server, never for the
/// client (nginx hides them too).
pub fn drop_accel_fields(h: &mut Head) {
    h.fields
        .retain(|(n, _)| !n.get(..8).is_some_and(|p| p.eq_ignore_ascii_case("x-accel-")));
}

pub fn is_local(location: &str) -> bool {
    location.starts_with('/') && !location.starts_with("//") && !location.starts_with("/\\")
}

/// What the `gzip` filter does with a response: `(vary, level)`: whether
/// it could be compressed (so `Vary: Accept-Encoding`), and the level when
/// this client gets it compressed. nginx's rules, as for static files: a
/// 200, 403 or 404 of the `gzip_types`, not shorter than `gzip_min_length` when its
/// length is known, not already encoded.
fn gzip_choice(h: &Head, code: u16, cfg: Option<&crate::config::Gzip>, accepts: bool) -> (bool, Option<u32>) {
    let Some(cfg) = cfg else { return (false, None) };
    let ct = h
        .content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
    // 200, 403 and 404: nginx's gzip compresses these (an application's
    // large error pages too), no other status.
    let eligible = matches!(code, 200 | 403 | 404)
        && ct.is_some_and(|t| cfg.types.iter().any(|x| x == "*" || *x == t))
        && !h.fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        && h.content_length.is_none_or(|l| l >= cfg.min_length.max(1));
    (eligible, (eligible && accepts).then_some(cfg.level))
}

/// Writes the HTTP response head for an application's header section
/// into `ex.out` and sets up `fr` for its body (compressed when `gzip`
/// says so for this client).
#[allow(clippy::too_many_arguments)]
pub fn write_head(
    ex: &mut Exchange,
    h: &Head,
    fr: &mut Framing,
    date: &str,
    server: &str,
    minor: u8,
    head_only: bool,
    added: &str,
    gzip: Option<&crate::config::Gzip>,
) {
    let (code, reason) = match (&h.status, &h.location) {
        (Some((c, r)), _) => (
            *c,
            if r.is_empty() {
                status::reason(*c).to_string()
            } else {
                r.clone()
            },
        ),
        (None, Some(_)) => (302, status::reason(302).to_string()),
        (None, None) => (200, "OK".to_string()),
    };
    // An error_page served by an application answers with the error's status.
    let (code, reason) = match ex.req.as_ref().and_then(|r| r.error_status).filter(|&st| st != 0) {
        Some(st) => (st, status::reason(st).to_string()),
        None => (code, reason),
    };
    let bodiless = !status::has_content(code);
    let accepts = ex.req.as_ref().is_some_and(|r| r.accepts("gzip"));
    let (vary, level) = gzip_choice(h, code, gzip, accepts);
    // Bytes: the application's field values need not be UTF-8.
    let mut s: Vec<u8> = Vec::with_capacity(256);
    let _ = write!(s, "HTTP/1.1 {code} {reason}\r\nServer: {server}\r\nDate: {date}\r\n");
    if let Some(ct) = &h.content_type {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    if let Some(l) = &h.location {
        let _ = write!(s, "Location: {l}\r\n");
    }
    let mut varies = false;
    for (n, v) in &h.fields {
        // A compressed body is another representation: its ETag is weak;
        // one that is no entity-tag (`6.1.9`, unquoted) cannot be made
        // weak and is dropped (nginx alike).
        let etag = level.is_some() && n.eq_ignore_ascii_case("etag");
        if etag && !v.starts_with(b"\"") && !v.starts_with(b"W/\"") {
            continue;
        }
        s.extend_from_slice(n.as_bytes());
        s.extend_from_slice(b": ");
        if etag && !v.starts_with(b"W/") {
            s.extend_from_slice(b"W/");
        }
        s.extend_from_slice(v);
        s.extend_from_slice(b"\r\n");
        varies |= n.eq_ignore_ascii_case("vary")
            && String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("accept-encoding");
    }
    // add_header / expires of the location.
    s.extend_from_slice(added.as_bytes());
    if vary && !varies {
        s.extend_from_slice(b"Vary: Accept-Encoding\r\n");
    }
    if let Some(level) = level {
        s.extend_from_slice(b"Content-Encoding: gzip\r\n");
        fr.gz = Some(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::new(level),
        ));
        // The application's length is still checked, on what it writes.
        fr.remaining = h.content_length;
    }
    if bodiless {
        fr.remaining = Some(0);
    } else if let (Some(len), None) = (h.content_length, level) {
        let _ = write!(s, "Content-Length: {len}\r\n");
        fr.remaining = Some(len);
    } else if minor >= 1 {
        if !head_only {
            s.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
            fr.chunked = true;
        }
    } else {
        // HTTP/1.0 without a length: the body ends when the connection does.
        ex.keep_alive = false;
    }
    if !ex.keep_alive {
        s.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        s.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    s.extend_from_slice(b"\r\n");
    ex.out.extend_from_slice(&s);
    ex.status = code;
    fr.head_sent = true;
    if bodiless {
        fr.remaining = None;
        fr.chunked = false;
        fr.gz = None;
        // Output after a bodiless status is read and dropped.
        fr.discard = true;
    }
}

/// Writes what `ex.out` holds to the client: whether anything moved and
/// whether the socket is full.
pub fn write_out(io: &mut super::transport::Transport, ex: &mut Exchange) -> io::Result<(bool, bool)> {
    let mut wrote = false;
    while ex.out_off < ex.out.len() {
        match io.write(&ex.out[ex.out_off..]) {
            Ok(n) => {
                ex.out_off += n;
                wrote = true;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((wrote, true)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // TLS: blocked until what it encrypted has left too.
    Ok((wrote, !io.flush()?))
}
