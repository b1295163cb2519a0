//! The words of a pool's scoreboard and what a worker records in its own
//! slot: the layout, the states and the writes of a request's stages.
//! Plain `std` only: the library corral preloads into a pool's program
//! (`direct = true`, crates/preload) includes this file to record the
//! requests the program accepts itself, with the same layout and the same
//! sequence-word protocol as corral's own pool worker.

use std::sync::atomic::{AtomicU64, Ordering::*};

/// Header words.
pub mod h {
    pub const START_TIME: usize = 0;
    pub const ACCEPTED: usize = 1;
    pub const MAX_ACTIVE: usize = 2;
    pub const MAX_CHILDREN_REACHED: usize = 3;
    pub const SLOW: usize = 4;
    pub const TERMINATED: usize = 5;
    pub const LISTEN_QUEUE: usize = 6;
    pub const MAX_LISTEN_QUEUE: usize = 7;
    pub const LISTEN_QUEUE_LEN: usize = 8;
    /// Requests that found every worker busy at max_children and wait in
    /// corral's HTTP workers instead of the pool's queue (a running count).
    pub const HELD: usize = 9;
    pub const WORDS: usize = 16;
}

/// Slot words.
pub mod s {
    pub const SEQ: usize = 0;
    pub const PID: usize = 1;
    pub const STATE: usize = 2;
    pub const STARTED: usize = 3;
    pub const REQUESTS: usize = 4;
    pub const REQ_START: usize = 5;
    pub const REQ_DURATION: usize = 6;
    pub const CONTENT_LENGTH: usize = 7;
    /// f64 bits: CPU percent of the last request.
    pub const CPU: usize = 8;
    pub const MEMORY: usize = 9;
    /// Monotonic µs when the worker last became idle.
    pub const IDLE_SINCE: usize = 10;
    /// (Unused: the slow log's marks are in the master's trusted words.)
    pub const SPARE: usize = 11;
    pub const METHOD: usize = 12;
    pub const METHOD_WORDS: usize = 2;
    pub const URI: usize = METHOD + METHOD_WORDS;
    pub const URI_WORDS: usize = 24;
    pub const SCRIPT: usize = URI + URI_WORDS;
    pub const SCRIPT_WORDS: usize = 20;
    pub const USER: usize = SCRIPT + SCRIPT_WORDS;
    pub const USER_WORDS: usize = 4;
    /// (Unused: failures are counted in the master's trusted words.)
    pub const FAILURES: usize = USER + USER_WORDS;
    /// `direct` pools: the program's descriptor of the connection it
    /// serves, plus one (0: none), for the worker to take it over when it
    /// must break an answer off (request_terminate_timeout).
    pub const CONN_FD: usize = FAILURES + 1;
    /// `direct` pools: the bytes of the record the program is writing that
    /// it has not written yet, and that record's request id (high bits).
    pub const OUT_LEFT: usize = CONN_FD + 1;
    /// `direct` pools: set by the worker when its program must stop after
    /// the request in progress.
    pub const QUIT: usize = OUT_LEFT + 1;
    pub const WORDS: usize = 72;
    const _: () = assert!(QUIT < WORDS);
}

/// A worker's state, as php-fpm names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum State {
    Free = 0,
    /// Forked, not yet accepting: counts as idle for pm (it will accept).
    Starting = 1,
    /// Waiting in accept().
    Idle = 2,
    /// Waiting for the next request on a kept connection: idle, but it
    /// cannot take a new connection.
    Kept = 3,
    ReadingHeaders = 4,
    Running = 5,
    Finishing = 6,
}

impl State {
    pub fn from(n: u64) -> State {
        match n {
            1 => State::Starting,
            2 => State::Idle,
            3 => State::Kept,
            4 => State::ReadingHeaders,
            5 => State::Running,
            6 => State::Finishing,
            _ => State::Free,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Free => "Free",
            State::Starting => "Starting",
            State::Idle | State::Kept => "Idle",
            State::ReadingHeaders => "Reading headers",
            State::Running => "Running",
            State::Finishing => "Finishing",
        }
    }

    pub fn is_active(self) -> bool {
        matches!(self, State::ReadingHeaders | State::Running | State::Finishing)
    }
}

/// The pool's counts, derived from the slots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Idle in accept (or about to be): these take a new connection.
    pub accepting: usize,
    pub idle: usize,
    pub active: usize,
    pub total: usize,
}

impl Counts {
    /// The counts of slots in these states.
    pub fn of(states: impl Iterator<Item = State>) -> Counts {
        let mut c = Counts::default();
        for st in states {
            match st {
                State::Free => continue,
                State::Starting | State::Idle => {
                    c.accepting += 1;
                    c.idle += 1;
                }
                State::Kept => c.idle += 1,
                _ => c.active += 1,
            }
            c.total += 1;
        }
        c
    }
}

/// What the status page shows of a request.
pub struct RequestInfo<'a> {
    pub method: &'a str,
    pub uri: &'a str,
    pub script: &'a str,
    pub user: &'a str,
    pub content_length: u64,
}

/// A pool's words: the header, then `slots` slots.
#[derive(Clone, Copy)]
pub struct Words<'a> {
    pub words: &'a [AtomicU64],
    pub slots: usize,
}

impl<'a> Words<'a> {
    /// Words needed for the header and `slots` slots.
    pub const fn len(slots: usize) -> usize {
        h::WORDS + slots * s::WORDS
    }

    pub fn hw(&self, i: usize) -> &'a AtomicU64 {
        &self.words[i]
    }

    pub fn sw(&self, slot: usize, i: usize) -> &'a AtomicU64 {
        &self.words[h::WORDS + slot * s::WORDS + i]
    }

    pub fn state(&self, slot: usize) -> State {
        State::from(self.sw(slot, s::STATE).load(Acquire))
    }

    pub fn counts(&self) -> Counts {
        Counts::of((0..self.slots).map(|i| self.state(i)))
    }

    pub fn set_state(&self, slot: usize, st: State) {
        if matches!(st, State::Idle | State::Kept) {
            self.sw(slot, s::IDLE_SINCE).store(mono_us(), Relaxed);
        }
        if st == State::ReadingHeaders {
            // Busy from now: the master's timers must not count from an
            // earlier request (or from 0 in a fresh slot).
            self.sw(slot, s::REQ_START).store(unix_us(), Relaxed);
        }
        self.sw(slot, s::STATE).store(st as u64, Release);
    }

    /// A request begins: its description, and the pool's maximum of
    /// active workers updated from the slots. It counts now, in the pool's
    /// "accepted conn" and the process's "requests", as php-fpm counts a
    /// request once its headers are read (a kept connection's requests
    /// each count; a running first request shows 1).
    pub fn begin_request(&self, slot: usize, req: &RequestInfo<'_>) {
        self.hw(h::ACCEPTED).fetch_add(1, Relaxed);
        let seq = self.sw(slot, s::SEQ);
        seq.fetch_add(1, AcqRel);
        self.sw(slot, s::REQUESTS).fetch_add(1, Relaxed);
        self.sw(slot, s::REQ_START).store(unix_us(), Relaxed);
        self.sw(slot, s::CONTENT_LENGTH).store(req.content_length, Relaxed);
        self.put_text(slot, s::METHOD, s::METHOD_WORDS, req.method);
        self.put_text(slot, s::URI, s::URI_WORDS, req.uri);
        self.put_text(slot, s::SCRIPT, s::SCRIPT_WORDS, req.script);
        self.put_text(slot, s::USER, s::USER_WORDS, req.user);
        self.sw(slot, s::STATE).store(State::Running as u64, Release);
        seq.fetch_add(1, AcqRel);
        let active = self.counts().active as u64;
        self.hw(h::MAX_ACTIVE).fetch_max(active, Relaxed);
    }

    /// A request ended: its duration, CPU and memory.
    pub fn end_request(&self, slot: usize, cpu_percent: f64, memory: u64) {
        let start = self.sw(slot, s::REQ_START).load(Relaxed);
        self.sw(slot, s::REQ_DURATION)
            .store(unix_us().saturating_sub(start), Relaxed);
        self.sw(slot, s::CPU).store(cpu_percent.to_bits(), Relaxed);
        self.sw(slot, s::MEMORY).store(memory, Relaxed);
    }

    fn put_text(&self, slot: usize, at: usize, words: usize, text: &str) {
        let b = text.as_bytes();
        for i in 0..words {
            let mut w = [0u8; 8];
            let chunk = b.get(i * 8..).unwrap_or(&[]);
            let n = chunk.len().min(8);
            w[..n].copy_from_slice(&chunk[..n]);
            self.sw(slot, at + i).store(u64::from_le_bytes(w), Relaxed);
        }
    }
}

pub fn unix_secs() -> u64 {
    unix_us() / 1_000_000
}

pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
}

/// CLOCK_MONOTONIC in µs (the clock `IDLE_SINCE` is kept in, the same in
/// every process).
pub fn mono_us() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through the valid pointer;
    // CLOCK_MONOTONIC (1) always exists on Linux.
    if unsafe { clock_gettime(1, &mut ts) } != 0 {
        return 0;
    }
    ts.sec as u64 * 1_000_000 + ts.nsec as u64 / 1000
}
