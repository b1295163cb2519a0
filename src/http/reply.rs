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
        data: std::rc::Rc<[u8]>,
        offset: usize,
        len: usize,
    },
    /// `len` bytes of `file` from `offset`.
    File {
        file: File,
        offset: u64,
        len: u64,
    },
}

pub struct Reply {
    pub status: u16,
    pub content_type: Option<&'static str>,
    /// `Content-Length`; `None` for statuses that carry no body (304).
    pub length: Option<u64>,
    /// Extra header lines, each ending in CRLF.
    pub extra: String,
    pub body: ReplyBody,
    /// The connection must close after this response (framing unsure).
    pub close: bool,
}

impl Reply {
    pub fn error(code: u16, tokens: bool) -> Reply {
        let page = status::error_page(code, tokens);
        Reply {
            status: code,
            content_type: Some("text/html"),
            length: Some(page.len() as u64),
            extra: String::new(),
            body: ReplyBody::Bytes(page),
            close: false,
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
    let mut s = String::with_capacity(256);
    let _ = write!(
        s,
        "HTTP/1.1 {} {}\r\nServer: {server}\r\nDate: {date}\r\n",
        r.status,
        status::reason(r.status)
    );
    if let Some(ct) = r.content_type {
        let _ = write!(s, "Content-Type: {ct}\r\n");
    }
    if let Some(len) = r.length {
        let _ = write!(s, "Content-Length: {len}\r\n");
    }
    s.push_str(&r.extra);
    if !keep_alive {
        s.push_str("Connection: close\r\n");
    } else if minor == 0 {
        s.push_str("Connection: keep-alive\r\n");
    }
    s.push_str("\r\n");
    buf.extend_from_slice(s.as_bytes());
}
