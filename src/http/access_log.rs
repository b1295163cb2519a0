//! The access log in nginx's `combined` format, buffered per worker and
//! flushed when the buffer fills, about every second, and at exit.

use std::fs::File;
use std::io::Write;
use std::net::IpAddr;

use crate::config::LogTarget;

const FLUSH_AT: usize = 32 * 1024;

pub struct AccessLog {
    target: LogTarget,
    file: Option<File>,
    buf: Vec<u8>,
}

fn open(target: &LogTarget) -> std::io::Result<Option<File>> {
    match target {
        LogTarget::File(p) => crate::core::log::open_append(p).map(Some),
        _ => Ok(None),
    }
}

pub enum RequestLine<'a> {
    Parsed(&'a str, &'a str, u8),
    Raw(&'a [u8]),
}

/// One entry's fields.
pub struct Entry<'a> {
    pub addr: IpAddr,
    pub time: &'a str,
    /// The request line: (method, target, minor version) of a parsed
    /// request, or the raw first line of one that was refused.
    pub request: RequestLine<'a>,
    pub status: u16,
    pub body_bytes: u64,
    pub referer: Option<&'a [u8]>,
    pub user_agent: Option<&'a [u8]>,
    /// `$remote_user`: the user of Basic credentials, as nginx logs it
    /// (checked or not).
    pub user: Option<&'a str>,
}

impl AccessLog {
    pub fn new(target: LogTarget) -> AccessLog {
        let file = open(&target).unwrap_or_else(|e| {
            crate::error!("cannot open access_log {target}: {e}");
            None
        });
        AccessLog {
            target,
            file,
            buf: Vec::new(),
        }
    }

    pub fn target(&self) -> &LogTarget {
        &self.target
    }

    pub fn log(&mut self, e: &Entry<'_>) {
        let b = &mut self.buf;
        let _ = write!(b, "{} - ", e.addr);
        match e.user.filter(|u| !u.is_empty()) {
            Some(u) => escape(b, u.as_bytes()),
            None => b.push(b'-'),
        }
        let _ = write!(b, " [{}] \"", e.time);
        match e.request {
            RequestLine::Parsed(m, t, minor) => {
                escape(b, m.as_bytes());
                b.push(b' ');
                escape(b, t.as_bytes());
                b.extend_from_slice(if minor == 0 { b" HTTP/1.0" } else { b" HTTP/1.1" });
            }
            RequestLine::Raw(line) => escape(b, line),
        }
        let _ = write!(b, "\" {} {} \"", e.status, e.body_bytes);
        escape(b, e.referer.unwrap_or(b"-"));
        b.extend_from_slice(b"\" \"");
        escape(b, e.user_agent.unwrap_or(b"-"));
        b.extend_from_slice(b"\"\n");
        if self.buf.len() >= FLUSH_AT {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let r = match (&self.target, self.file.as_mut()) {
            (LogTarget::File(_), Some(f)) => f.write_all(&self.buf),
            (LogTarget::Stdout, _) => std::io::stdout().write_all(&self.buf),
            (LogTarget::Stderr, _) => std::io::stderr().write_all(&self.buf),
            _ => Ok(()),
        };
        if let Err(err) = r {
            crate::error!("writing access log failed: {err}");
        }
        self.buf.clear();
    }

    /// Reopens the file by its path; false (logged) if it cannot be, and
    /// lines keep going to the file open so far.
    pub fn reopen(&mut self) -> bool {
        self.flush();
        match open(&self.target) {
            Ok(Some(f)) => self.file = Some(f),
            Ok(None) => {}
            Err(e) => {
                crate::error!(
                    "cannot reopen access log {}: {e}; its lines keep going to the file open before",
                    self.target
                );
                return false;
            }
        }
        true
    }
}

/// nginx-style escaping: `"`, `\` and non-printable bytes become `\xHH`.
fn escape(out: &mut Vec<u8>, s: &[u8]) {
    for &b in s {
        if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
            let _ = write!(out, "\\x{b:02X}");
        } else {
            out.push(b);
        }
    }
}
