//! A response before it is serialised: status, a few headers, and where
//! the body comes from. `write_head` turns it into bytes.

use std::fmt::Write as _;
use std::fs::File;

use super::status;

pub enum ReplyBody {
    Empty,
    Bytes(Vec<u8>),
    /// `len` bytes of cached file contents from `offset`.
    Shared {
        data: std::sync::Arc<[u8]>,
        offset: usize,
        len: usize,
    },
    /// `len` bytes of `file` from `offset`.
    File {
        file: std::sync::Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Made as it is sent (compressed, or a multipart of ranges).
    Stream(Box<dyn Produce + Send>),
    /// Several ranges of a file, made into `multipart/byteranges` by
    /// `byteranges::finish` once the reply's headers are final.
    Ranges {
        src: Source,
        ranges: Vec<(u64, u64)>,
        len: u64,
    },
}

/// Where a file's bytes come from.
pub enum Source {
    File(std::sync::Arc<File>),
    Memory(std::sync::Arc<[u8]>),
}

impl Source {
    /// Appends the `n` bytes at `off` to `out` (a positioned read: the
    /// descriptor may be shared with the cache). A file that no longer
    /// has them (it shrank while being sent) is an error.
    pub fn append(&self, out: &mut Vec<u8>, off: u64, n: usize) -> std::io::Result<()> {
        match self {
            Source::Memory(data) => {
                let part = usize::try_from(off)
                    .ok()
                    .and_then(|o| data.get(o..o.checked_add(n)?))
                    .ok_or_else(shrank)?;
                out.extend_from_slice(part);
            }
            Source::File(file) => {
                use std::os::unix::fs::FileExt;
                let have = out.len();
                out.resize(have + n, 0);
                if let Err(e) = file.read_exact_at(&mut out[have..], off) {
                    out.truncate(have);
                    return Err(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        shrank()
                    } else {
                        e
                    });
                }
            }
        }
        Ok(())
    }
}

fn shrank() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank")
}

/// A body made piece by piece as the client takes it.
pub trait Produce {
    /// Appends the next piece to `out`; `Ok(false)` once the body is complete.
    fn produce(&mut self, out: &mut Vec<u8>) -> std::io::Result<bool>;
}

pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// `; charset=...` after a text type (the server's `charset`).
    pub charset: Option<std::sync::Arc<str>>,
    /// `Content-Length`; `None` for statuses that carry no body (304).
    pub length: Option<u64>,
    /// `Location` (made absolute before it is sent, see `absolute_redirect`).
    pub location: Option<String>,
    /// Extra header lines, each ending in CRLF.
    pub extra: String,
    /// Precomputed header lines shared by every response for a cached file.
    pub shared: Option<std::sync::Arc<str>>,
    pub body: ReplyBody,
    /// The connection must close after this response (framing unsure).
    pub close: bool,
    /// The body is the handler's own (`return 404 "text"`), not the
    /// status's page: `error_page` leaves it alone, as nginx does.
    pub own_body: bool,
}

impl Reply {
    pub fn error(code: u16, tokens: bool) -> Reply {
        // 204 and 304 end at their head (RFC 9110 §15.3.5, §15.4.5).
        let page = status::has_content(code).then(|| status::error_page(code, tokens));
        Reply {
            status: code,
            content_type: page.as_ref().map(|_| "text/html"),
            charset: None,
            length: page.as_ref().map(|p| p.len() as u64),
            location: None,
            extra: String::new(),
            shared: None,
            body: page.map_or(ReplyBody::Empty, ReplyBody::Bytes),
            close: false,
            own_body: false,
        }
    }

    /// An error after which the connection is closed.
    pub fn fatal(code: u16, tokens: bool) -> Reply {
        let mut r = Reply::error(code, tokens);
        r.close = true;
        r
    }

    pub fn header(&mut self, name: &str, value: impl std::fmt::Display) {
        let _ = write!(self.extra, "{name}: {value}\r\n");
    }
}

/// Serialises the status line and headers into `buf`.
pub fn write_head(buf: &mut Vec<u8>, r: &Reply, date: &str, server: &str, keep_alive: bool, minor: u8) {
    let mut num = itoa::Buffer::new();
    buf.extend_from_slice(b"HTTP/1.1 ");
    buf.extend_from_slice(num.format(r.status).as_bytes());
    buf.push(b' ');
    buf.extend_from_slice(status::reason(r.status).as_bytes());
    buf.extend_from_slice(b"\r\nServer: ");
    buf.extend_from_slice(server.as_bytes());
    buf.extend_from_slice(b"\r\nDate: ");
    buf.extend_from_slice(date.as_bytes());
    buf.extend_from_slice(b"\r\n");
    if let Some(ct) = r.content_type {
        buf.extend_from_slice(b"Content-Type: ");
        buf.extend_from_slice(ct.as_bytes());
        if let Some(cs) = &r.charset {
            buf.extend_from_slice(b"; charset=");
            buf.extend_from_slice(cs.as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(len) = r.length {
        buf.extend_from_slice(b"Content-Length: ");
        buf.extend_from_slice(num.format(len).as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(l) = &r.location {
        buf.extend_from_slice(b"Location: ");
        buf.extend_from_slice(l.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(shared) = &r.shared {
        buf.extend_from_slice(shared.as_bytes());
    }
    buf.extend_from_slice(r.extra.as_bytes());
    if !keep_alive {
        buf.extend_from_slice(b"Connection: close\r\n");
    } else if minor == 0 {
        buf.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    buf.extend_from_slice(b"\r\n");
}
