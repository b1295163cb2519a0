//! The byte plumbing of a pool worker: a nonblocking descriptor read into
//! a buffer that hands out whole FastCGI records, an output queue, and a
//! poll over a few descriptors plus the signalfd.

use std::io::{self, Read, Write};
use std::os::fd::BorrowedFd;
use std::time::Instant;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::fastcgi::codec::{self, Record};

/// Bytes read from a peer, taken out from the front as records.
#[derive(Default)]
pub struct RecordBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The peer closed its side.
    pub eof: bool,
}

/// What one read gave.
pub enum Filled {
    Bytes,
    WouldBlock,
    Eof,
}

impl RecordBuf {
    /// Forgets what is buffered (keeps the allocation).
    pub fn reset(&mut self) {
        self.start = 0;
        self.end = 0;
        self.eof = false;
    }

    /// Starts with `bytes` (read by someone else already).
    pub fn preload(&mut self, bytes: &[u8]) {
        self.buf = bytes.to_vec();
        self.buf.resize(bytes.len().max(16 << 10), 0);
        self.start = 0;
        self.end = bytes.len();
        self.eof = false;
    }

    /// One nonblocking read from `src`.
    pub fn fill(&mut self, mut src: impl Read) -> io::Result<Filled> {
        if self.buf.is_empty() {
            self.buf = vec![0; 16 << 10];
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        } else if self.start > 0 && self.buf.len() - self.end < 8 << 10 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            // A record (at most 64 KiB + 263) larger than the room left.
            self.buf.resize(self.buf.len() + (72 << 10), 0);
        }
        match src.read(&mut self.buf[self.end..]) {
            Ok(0) => {
                self.eof = true;
                Ok(Filled::Eof)
            }
            Ok(n) => {
                self.end += n;
                Ok(Filled::Bytes)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Filled::WouldBlock),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Filled::WouldBlock),
            Err(e) => Err(e),
        }
    }

    /// The record at the front, if whole; `consume` it after use.
    pub fn peek(&self) -> Result<Option<(Record<'_>, usize)>, codec::Error> {
        codec::decode(&self.buf[self.start..self.end])
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
    }

    pub fn raw(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Takes every buffered byte (the raw stream of a CGI child).
    pub fn take_raw(&mut self) -> Vec<u8> {
        let v = self.buf[self.start..self.end].to_vec();
        self.start = self.end;
        v
    }
}

/// Bytes waiting to be written to a peer.
#[derive(Default)]
pub struct Outbox {
    pub buf: Vec<u8>,
    pub sent: usize,
}

impl Outbox {
    /// The unsent rest of the record being sent when the buffer holds
    /// whole records (what goes to the web server): empty at a boundary.
    pub fn rest_of_record(&self) -> Vec<u8> {
        let mut at = 0;
        while at + 8 <= self.buf.len() {
            let len = u16::from_be_bytes([self.buf[at + 4], self.buf[at + 5]]) as usize;
            let end = at + 8 + len + self.buf[at + 6] as usize;
            if end > self.sent {
                return if at < self.sent {
                    self.buf[self.sent..end.min(self.buf.len())].to_vec()
                } else {
                    Vec::new()
                };
            }
            at = end;
        }
        Vec::new()
    }

    pub fn pending(&self) -> usize {
        self.buf.len() - self.sent
    }

    /// Writes what it can without blocking; `Ok(true)` when all is out.
    pub fn flush(&mut self, mut dst: impl Write) -> io::Result<bool> {
        while self.sent < self.buf.len() {
            match dst.write(&self.buf[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.buf.clear();
        self.sent = 0;
        Ok(true)
    }
}

/// Waits for events on `fds` (descriptor, wanted events) until `deadline`;
/// returns the events seen, in the same order (empty on timeout).
pub fn wait(fds: &[(BorrowedFd<'_>, PollFlags)], deadline: Option<Instant>) -> io::Result<Vec<PollFlags>> {
    let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|(fd, ev)| PollFd::new(*fd, *ev)).collect();
    let timeout = match deadline {
        None => PollTimeout::NONE,
        Some(d) => {
            let ms = d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32;
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
        }
    };
    match poll(&mut pfds, timeout) {
        Ok(_) => Ok(pfds.iter().map(|p| p.revents().unwrap_or(PollFlags::empty())).collect()),
        Err(nix::errno::Errno::EINTR) => Ok(vec![PollFlags::empty(); fds.len()]),
        Err(e) => Err(e.into()),
    }
}

pub fn readable(ev: PollFlags) -> bool {
    ev.intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
}
