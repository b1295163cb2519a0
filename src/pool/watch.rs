//! What corral's preload library (crates/preload, `direct` pools) follows
//! in the bytes a FastCGI program reads and writes on the connection it
//! serves: the records, each request's stages and description written to
//! the worker's scoreboard slot, and the requests the pool answers itself
//! (ping, status, a script `limit_extensions` refuses), which are handed
//! over. Plain `std` only: the library includes this file; corral has it
//! for the fuzz target of these parsers of untrusted bytes.

use std::sync::atomic::Ordering::Relaxed;

use super::codec;
use super::record::{self, RequestInfo, State, Words, s};
use super::script_check;

/// What the pool's config says, and where to record.
pub struct Rules<'a> {
    pub words: Words<'a>,
    pub slot: usize,
    pub ping: Option<String>,
    pub status: Option<String>,
    pub extensions: Vec<String>,
    pub max_requests: u64,
    pub max_memory: u64,
    /// The process's CPU time (ns) and peak resident memory (bytes), now;
    /// and its CPU time at the last `usage` (no system call).
    pub usage: fn() -> (u64, u64),
    pub cpu_mark: fn() -> u64,
}

#[derive(Default)]
struct Framer {
    hdr: [u8; 8],
    have: usize,
    content_left: usize,
    pad_left: usize,
    kind: u8,
    id: u16,
}

enum Piece<'a> {
    /// A header is complete (kind, content length).
    Header(u8, usize),
    Content(&'a [u8]),
}

impl Framer {
    /// Walks `bytes`, calling `f` for each header and piece of content with
    /// the offset just past it; stops early when `f` returns false.
    fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(&Framer, Piece<'_>, usize) -> bool) {
        let total = bytes.len();
        while !bytes.is_empty() {
            if self.content_left == 0 && self.pad_left == 0 {
                let n = (8 - self.have).min(bytes.len());
                self.hdr[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 8 {
                    self.have = 0;
                    self.kind = self.hdr[1];
                    self.id = u16::from_be_bytes([self.hdr[2], self.hdr[3]]);
                    self.content_left = u16::from_be_bytes([self.hdr[4], self.hdr[5]]) as usize;
                    self.pad_left = self.hdr[6] as usize;
                    let len = self.content_left;
                    if !f(self, Piece::Header(self.kind, len), total - bytes.len()) {
                        return;
                    }
                }
            } else if self.content_left > 0 {
                let n = self.content_left.min(bytes.len());
                self.content_left -= n;
                let (c, rest) = bytes.split_at(n);
                bytes = rest;
                if !f(self, Piece::Content(c), total - bytes.len()) {
                    return;
                }
            } else {
                let n = self.pad_left.min(bytes.len());
                self.pad_left -= n;
                bytes = &bytes[n..];
            }
        }
    }

    /// Bytes of the current record not yet through (0 at a boundary;
    /// all ones in the middle of a header).
    fn left(&self) -> u64 {
        if self.have > 0 {
            0xffff_ffff
        } else {
            (self.content_left + self.pad_left) as u64
        }
    }
}

/// One connection as the library follows it.
#[derive(Default)]
pub struct Watch {
    inb: Framer,
    outb: Framer,
    /// Between BEGIN_REQUEST and the end of PARAMS: the request's bytes as
    /// read (for a hand-over), and its params.
    copy: Vec<u8>,
    params: Vec<u8>,
    reading_params: bool,
    /// A request runs (its params were passed on) until its END_REQUEST.
    in_request: bool,
    /// A request was answered on the connection.
    served: bool,
    /// An END_REQUEST not yet written whole (whether to retire after it).
    ended: Option<bool>,
    /// The running request's id, and whether its STDOUT began.
    id: u16,
    spoke: bool,
    started_cpu: u64,
    started_us: u64,
}

/// The most params a request may have (the relay's bound too).
pub const MAX_PARAMS: usize = 1 << 20;

/// A request bigger than this is not handed over (it cannot be a ping or
/// status request; a refused script that big is closed instead).
pub const MAX_HANDOVER: usize = 128 << 10;

/// What reading `bytes` from the connection decided.
pub enum Seen {
    Pass,
    /// Hand the connection over with these bytes; the program reads EOF.
    HandOver(Vec<u8>),
    /// Close it under the program (EOF): a refused request too big to hand over.
    Refuse,
}

impl Watch {
    /// Whether no request is begun or running: the next read waits for one.
    pub fn waiting(&self) -> bool {
        !self.in_request && !self.reading_params
    }

    /// Whether the connection may be ended under the program now: between
    /// requests, after one at least. A new connection's first request is
    /// served even when the program is to end (it was accepted, maybe just
    /// as the stop came: closed unanswered, its request could not be told
    /// from one that ran).
    pub fn may_end(&self) -> bool {
        self.served && !self.in_request && !self.reading_params
    }

    /// Follows bytes the program read.
    pub fn inbound(&mut self, cfg: &Rules<'_>, bytes: &[u8]) -> Seen {
        let mut seen = Seen::Pass;
        // Where this read's bytes of the request (kept for a hand-over,
        // padding and all) begin.
        let mut from = self.reading_params.then_some(0);
        let mut inb = std::mem::take(&mut self.inb);
        inb.feed(bytes, |fr, piece, at| {
            match piece {
                Piece::Header(codec::kind::BEGIN_REQUEST, _) if !self.in_request && !self.reading_params => {
                    cfg.words.set_state(cfg.slot, State::ReadingHeaders);
                    self.id = fr.id;
                    self.reading_params = true;
                    self.copy.clear();
                    self.copy.extend_from_slice(&fr.hdr);
                    from = Some(at);
                    self.params.clear();
                }
                Piece::Content(c)
                    if self.reading_params && fr.kind == codec::kind::PARAMS && self.params.len() <= MAX_PARAMS =>
                {
                    self.params.extend_from_slice(c);
                }
                // The params end at the empty PARAMS record, or (as php-cgi
                // reads them) at any other record.
                Piece::Header(kind, len) if self.reading_params && !(kind == codec::kind::PARAMS && len > 0) => {
                    self.reading_params = false;
                    self.copy.extend_from_slice(&bytes[from.take().unwrap_or(0)..]);
                    seen = self.params_done(cfg);
                    // Followed on when passed (the records after it frame the
                    // next request); the rest is the worker's otherwise.
                    return matches!(seen, Seen::Pass);
                }
                _ => {}
            }
            true
        });
        self.inb = inb;
        if let Some(f) = from {
            self.copy.extend_from_slice(&bytes[f..]);
        }
        if self.copy.len() > MAX_HANDOVER + (64 << 10) && self.reading_params {
            // Too big for a hand-over: no need to keep more.
            self.copy.truncate(MAX_HANDOVER + 1);
        }
        if !matches!(seen, Seen::Pass) {
            // The rest is the worker's (or nobody's): stop following.
            self.copy.clear();
        }
        seen
    }

    /// The request's params are complete: recorded, or handed over.
    fn params_done(&mut self, cfg: &Rules<'_>) -> Seen {
        if self.params.len() > MAX_PARAMS {
            return Seen::Refuse;
        }
        // The params wanted, in one pass; the last of each name counts, as
        // for php-cgi and libfcgi.
        const NAMES: [&[u8]; 7] = [
            b"SCRIPT_NAME",
            b"SCRIPT_FILENAME",
            b"PATH_TRANSLATED",
            b"REQUEST_URI",
            b"REQUEST_METHOD",
            b"REMOTE_USER",
            b"CONTENT_LENGTH",
        ];
        let mut v: [&[u8]; 7] = [b""; 7];
        for (n, val) in codec::Pairs::new(&self.params).filter_map(Result::ok) {
            if let Some(i) = NAMES.iter().position(|w| *w == n) {
                v[i] = val;
            }
        }
        let text = |b: &'_ [u8]| -> String { String::from_utf8_lossy(b).into_owned() };
        let name = v[0];
        let builtin = !name.is_empty()
            && [&cfg.ping, &cfg.status]
                .iter()
                .any(|p| p.as_deref().map(str::as_bytes) == Some(name));
        // The script as php-cgi opens it: the bytes sent.
        let path = if v[1].is_empty() { v[2] } else { v[1] };
        let denied = script_check::denied(path, &cfg.extensions).is_some();
        if builtin || denied {
            let all = std::mem::take(&mut self.copy);
            return if all.len() <= MAX_HANDOVER {
                Seen::HandOver(all)
            } else {
                Seen::Refuse
            };
        }
        let (script, uri, method, user) = (text(path), text(v[3]), text(v[4]), text(v[5]));
        let info = RequestInfo {
            method: &method,
            uri: &uri,
            script: &script,
            user: &user,
            content_length: std::str::from_utf8(v[6]).ok().and_then(|c| c.parse().ok()).unwrap_or(0),
        };
        cfg.words.begin_request(cfg.slot, &info);
        self.in_request = true;
        self.spoke = false;
        self.outb = Framer::default();
        self.note_out(cfg);
        self.started_cpu = (cfg.cpu_mark)();
        self.started_us = record::unix_us();
        // Kept for the next request's (no allocation per request).
        self.copy.clear();
        Seen::Pass
    }

    /// Follows bytes the program wrote. Once a request's END_REQUEST is
    /// written whole: `Some(retire)`, `retire` when the program must end
    /// after it (`max_requests`, `max_memory`).
    pub fn outbound(&mut self, cfg: &Rules<'_>, bytes: &[u8]) -> Option<bool> {
        let mut outb = std::mem::take(&mut self.outb);
        outb.feed(bytes, |fr, piece, _| {
            if let Piece::Header(codec::kind::STDOUT, 1..) = piece
                && fr.id == self.id
            {
                self.spoke = true;
            }
            if let Piece::Header(codec::kind::END_REQUEST, ..) = piece
                && self.in_request
            {
                self.in_request = false;
                self.served = true;
                let wall = record::unix_us().saturating_sub(self.started_us).max(1);
                let (now, memory) = (cfg.usage)();
                let cpu = now.saturating_sub(self.started_cpu);
                cfg.words.end_request(cfg.slot, cpu as f64 / 10.0 / wall as f64, memory);
                cfg.words.set_state(cfg.slot, State::Kept);
                let served = cfg.words.sw(cfg.slot, s::REQUESTS).load(Relaxed);
                let retire = (cfg.max_requests > 0 && served >= cfg.max_requests)
                    || (cfg.max_memory > 0 && memory > cfg.max_memory);
                self.ended = Some(retire);
            }
            true
        });
        self.outb = outb;
        self.note_out(cfg);
        if self.outb.left() == 0 { self.ended.take() } else { None }
    }

    /// The slot's OUT_LEFT: the rest of the record being written (bits
    /// 0-31, all ones mid-header), the request's id (32-47), whether its
    /// STDOUT began (48).
    fn note_out(&self, cfg: &Rules<'_>) {
        let left = self.outb.left().min(0xffff_ffff);
        let word = left | (self.id as u64) << 32 | (self.spoke as u64) << 48;
        cfg.words.sw(cfg.slot, s::OUT_LEFT).store(word, Relaxed);
    }
}
