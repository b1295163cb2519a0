//! A pool's scoreboard: one shared mapping made by the master before it
//! forks, with a header of pool-wide figures and one fixed-size slot per
//! worker. A slot is written only by its worker (the master only claims
//! and frees it), with atomics; text fields sit behind a sequence word so
//! a reader never shows half of one URI and half of the next.
//! Idle / active / total are counted from the slots when asked, never kept
//! as counters of their own, so they cannot drift.

use std::sync::atomic::{AtomicU64, Ordering::*};

use crate::os::shm::SharedWords;

/// Header words.
mod h {
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
mod s {
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
    /// Set by the master when the slow log has the current request.
    pub const SLOW_LOGGED: usize = 11;
    pub const METHOD: usize = 12;
    pub const METHOD_WORDS: usize = 2;
    pub const URI: usize = METHOD + METHOD_WORDS;
    pub const URI_WORDS: usize = 24;
    pub const SCRIPT: usize = URI + URI_WORDS;
    pub const SCRIPT_WORDS: usize = 20;
    pub const USER: usize = SCRIPT + SCRIPT_WORDS;
    pub const USER_WORDS: usize = 4;
    /// Times the worker's program ended badly (emergency_restart_threshold).
    pub const FAILURES: usize = USER + USER_WORDS;
    /// The pid of the CGI script the worker runs (`app = "cgi"`), else 0.
    pub const CHILD: usize = FAILURES + 1;
    pub const WORDS: usize = 64;
    const _: () = assert!(CHILD < WORDS);
}

/// Words after the slots: requests in progress on the pool from corral's
/// own HTTP workers, one column per HTTP worker slot (64) and generation
/// parity, so a column is cleared when its worker ends without touching
/// the others' counts.
pub const FRONTS: usize = 128;

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
    fn from(n: u64) -> State {
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

pub struct Scoreboard {
    mem: SharedWords,
    slots: usize,
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

/// One slot as read for the status page.
#[derive(Debug, Clone, Default)]
pub struct Process {
    pub pid: u32,
    pub state: &'static str,
    pub started: u64,
    pub requests: u64,
    pub request_start_us: u64,
    pub request_duration_us: u64,
    pub active: bool,
    pub method: String,
    pub uri: String,
    pub script: String,
    pub user: String,
    pub content_length: u64,
    pub cpu: f64,
    pub memory: u64,
}

/// The pool-wide figures of the header.
#[derive(Debug, Clone, Copy, Default)]
pub struct Figures {
    pub start_time: u64,
    pub accepted: u64,
    pub max_active: u64,
    pub max_children_reached: u64,
    pub slow: u64,
    pub terminated: u64,
    pub listen_queue: u64,
    pub max_listen_queue: u64,
    pub listen_queue_len: u64,
}

impl Scoreboard {
    pub fn new(slots: usize) -> std::io::Result<Scoreboard> {
        // Two columns per HTTP worker: requests in progress, requests held.
        let mem = SharedWords::new(h::WORDS + slots * s::WORDS + 2 * FRONTS)?;
        let sb = Scoreboard { mem, slots };
        sb.hw(h::START_TIME).store(unix_secs(), Relaxed);
        Ok(sb)
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    fn hw(&self, i: usize) -> &AtomicU64 {
        &self.mem.words()[i]
    }

    fn sw(&self, slot: usize, i: usize) -> &AtomicU64 {
        &self.mem.words()[h::WORDS + slot * s::WORDS + i]
    }

    fn fw(&self, front: usize) -> &AtomicU64 {
        &self.mem.words()[h::WORDS + self.slots * s::WORDS + front % FRONTS]
    }

    fn held_w(&self, front: usize) -> &AtomicU64 {
        &self.mem.words()[h::WORDS + self.slots * s::WORDS + FRONTS + front % FRONTS]
    }

    // --- corral's HTTP workers ---

    /// A request from HTTP worker column `front` starts (or ends) on the pool.
    pub fn front_add(&self, front: usize, starts: bool) {
        step(self.fw(front), starts);
    }

    /// Requests in progress on the pool from all of corral's HTTP workers.
    pub fn front_total(&self) -> u64 {
        (0..FRONTS).map(|i| self.fw(i).load(Relaxed)).sum()
    }

    /// The HTTP worker of column `front` ended: its requests are over.
    pub fn front_clear(&self, front: usize) {
        self.fw(front).store(0, Relaxed);
        self.held_w(front).store(0, Relaxed);
    }

    /// A request of HTTP worker column `front` starts (or stops) waiting
    /// in corral for the saturated pool.
    pub fn front_held(&self, front: usize, starts: bool) {
        step(self.held_w(front), starts);
    }

    /// Requests waiting in corral's HTTP workers for the saturated pool
    /// now (they never reach its socket's queue meanwhile).
    pub fn held_now(&self) -> u64 {
        (0..FRONTS).map(|i| self.held_w(i).load(Relaxed)).sum()
    }

    // --- the master ---

    /// A free slot, claimed for a worker about to be forked.
    pub fn claim(&self) -> Option<usize> {
        let slot = (0..self.slots).find(|&i| self.state(i) == State::Free)?;
        let w = |i| self.sw(slot, i);
        for i in 1..s::WORDS {
            w(i).store(0, Relaxed);
        }
        w(s::STATE).store(State::Starting as u64, Relaxed);
        w(s::STARTED).store(unix_secs(), Relaxed);
        w(s::IDLE_SINCE).store(mono_us(), Relaxed);
        Some(slot)
    }

    pub fn set_pid(&self, slot: usize, pid: u32) {
        self.sw(slot, s::PID).store(pid as u64, Relaxed);
    }

    pub fn free(&self, slot: usize) {
        self.sw(slot, s::STATE).store(State::Free as u64, Release);
    }

    pub fn state(&self, slot: usize) -> State {
        State::from(self.sw(slot, s::STATE).load(Acquire))
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for i in 0..self.slots {
            let st = self.state(i);
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

    /// Monotonic µs since the slot's worker became idle (`None` if busy).
    pub fn idle_for_us(&self, slot: usize, now_mono_us: u64) -> Option<u64> {
        match self.state(slot) {
            State::Idle | State::Kept => Some(now_mono_us.saturating_sub(self.sw(slot, s::IDLE_SINCE).load(Relaxed))),
            _ => None,
        }
    }

    /// µs the current request has run, if one runs.
    pub fn busy_for_us(&self, slot: usize) -> Option<u64> {
        if !self.state(slot).is_active() {
            return None;
        }
        Some(unix_us().saturating_sub(self.sw(slot, s::REQ_START).load(Relaxed)))
    }

    /// Whether the slot's current request is in the slow log already.
    pub fn slow_marked(&self, slot: usize) -> bool {
        self.sw(slot, s::SLOW_LOGGED).load(Relaxed) == self.sw(slot, s::REQ_START).load(Relaxed)
    }

    /// True the first time it is called for the slot's current request.
    pub fn mark_slow(&self, slot: usize) -> bool {
        let start = self.sw(slot, s::REQ_START).load(Relaxed);
        self.sw(slot, s::SLOW_LOGGED).swap(start, Relaxed) != start
    }

    pub fn count_max_children_reached(&self) {
        self.hw(h::MAX_CHILDREN_REACHED).fetch_add(1, Relaxed);
    }

    /// A request from corral's own locations waits for the saturated pool.
    pub fn count_held(&self) {
        self.hw(h::HELD).fetch_add(1, Relaxed);
    }

    pub fn held(&self) -> u64 {
        self.hw(h::HELD).load(Relaxed)
    }

    pub fn count_slow(&self) {
        self.hw(h::SLOW).fetch_add(1, Relaxed);
    }

    pub fn count_terminated(&self) {
        self.hw(h::TERMINATED).fetch_add(1, Relaxed);
    }

    /// The socket's accept queue as the master found it in a regular round
    /// (a forced one, woken by the arriving connection, records nothing:
    /// an idle ondemand pool would count its own scrape).
    pub fn set_listen_queue(&self, waiting: u64, backlog: u64) {
        self.hw(h::LISTEN_QUEUE).store(waiting, Relaxed);
        self.hw(h::MAX_LISTEN_QUEUE)
            .fetch_max(waiting + self.held_now(), Relaxed);
        self.hw(h::LISTEN_QUEUE_LEN).store(backlog, Relaxed);
    }

    /// The pool-wide figures. The listen queue counts the requests held in
    /// corral's HTTP workers too: they wait for the pool as those in the
    /// socket's queue do, and "listen queue" is what php-fpm's dashboards
    /// and alerts watch.
    pub fn figures(&self) -> Figures {
        let r = |i| self.hw(i).load(Relaxed);
        let held = self.held_now();
        Figures {
            start_time: r(h::START_TIME),
            accepted: r(h::ACCEPTED),
            max_active: r(h::MAX_ACTIVE),
            max_children_reached: r(h::MAX_CHILDREN_REACHED),
            slow: r(h::SLOW),
            terminated: r(h::TERMINATED),
            listen_queue: r(h::LISTEN_QUEUE) + held,
            max_listen_queue: r(h::MAX_LISTEN_QUEUE).max(r(h::LISTEN_QUEUE) + held),
            listen_queue_len: r(h::LISTEN_QUEUE_LEN),
        }
    }

    /// Every worker's slot, for the status page.
    pub fn processes(&self) -> Vec<Process> {
        (0..self.slots).filter_map(|i| self.process(i)).collect()
    }

    pub fn process(&self, slot: usize) -> Option<Process> {
        let w = |i| self.sw(slot, i).load(Acquire);
        for _ in 0..64 {
            let seq = w(s::SEQ);
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let state = State::from(w(s::STATE));
            // Free, or claimed by a fork whose pid the master has not noted yet.
            if state == State::Free || w(s::PID) == 0 {
                return None;
            }
            let active = state.is_active();
            let start = w(s::REQ_START);
            let p = Process {
                pid: w(s::PID) as u32,
                state: state.name(),
                started: w(s::STARTED),
                requests: w(s::REQUESTS),
                request_start_us: start,
                request_duration_us: if active {
                    unix_us().saturating_sub(start)
                } else {
                    w(s::REQ_DURATION)
                },
                active,
                method: self.text(slot, s::METHOD, s::METHOD_WORDS),
                uri: self.text(slot, s::URI, s::URI_WORDS),
                script: self.text(slot, s::SCRIPT, s::SCRIPT_WORDS),
                user: self.text(slot, s::USER, s::USER_WORDS),
                content_length: w(s::CONTENT_LENGTH),
                cpu: f64::from_bits(w(s::CPU)),
                memory: w(s::MEMORY),
            };
            if w(s::SEQ) == seq {
                return Some(p);
            }
        }
        None
    }

    fn text(&self, slot: usize, at: usize, words: usize) -> String {
        let mut bytes = Vec::with_capacity(words * 8);
        for i in 0..words {
            bytes.extend_from_slice(&self.sw(slot, at + i).load(Relaxed).to_le_bytes());
        }
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        String::from_utf8_lossy(&bytes[..end]).into_owned()
    }

    // --- the worker, in its own slot ---

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

    /// When the master claimed the slot (monotonic µs), until the worker
    /// first goes idle.
    pub fn claimed_at(&self, slot: usize) -> u64 {
        self.sw(slot, s::IDLE_SINCE).load(Relaxed)
    }

    /// The worker's program ended badly `n` more times.
    pub fn add_failures(&self, slot: usize, n: u32) {
        self.sw(slot, s::FAILURES).fetch_add(n as u64, Relaxed);
    }

    /// The worker's CGI script started (its pid) or is about to be reaped (0).
    pub fn set_child(&self, slot: usize, pid: i32) {
        self.sw(slot, s::CHILD).store(pid.max(0) as u64, Relaxed);
    }

    pub fn child(&self, slot: usize) -> i32 {
        self.sw(slot, s::CHILD).load(Relaxed) as i32
    }

    pub fn failures(&self, slot: usize) -> u64 {
        self.sw(slot, s::FAILURES).load(Relaxed)
    }

    pub fn requests(&self, slot: usize) -> u64 {
        self.sw(slot, s::REQUESTS).load(Relaxed)
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

/// One up or down for an HTTP worker's column; never below zero, even
/// after the column was cleared under it.
fn step(w: &AtomicU64, up: bool) {
    if up {
        w.fetch_add(1, Relaxed);
    } else {
        let _ = w.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
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

pub fn unix_secs() -> u64 {
    unix_us() / 1_000_000
}

pub fn unix_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

pub fn mono_us() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_the_slots_and_text_round_trips() {
        let sb = Scoreboard::new(3).unwrap();
        let a = sb.claim().unwrap();
        let b = sb.claim().unwrap();
        assert_ne!(a, b);
        sb.set_pid(a, 42);
        assert_eq!(sb.counts().total, 2);
        assert_eq!(sb.counts().accepting, 2);
        let long = format!("/x.php?{}", "q".repeat(500));
        sb.begin_request(
            a,
            &RequestInfo {
                method: "POST",
                uri: &long,
                script: "/srv/x.php",
                user: "-",
                content_length: 5,
            },
        );
        let c = sb.counts();
        assert_eq!((c.active, c.idle, c.total), (1, 1, 2));
        let p = sb.process(a).unwrap();
        assert_eq!(p.method, "POST");
        assert_eq!(p.uri, long[..s::URI_WORDS * 8]);
        assert_eq!(p.script, "/srv/x.php");
        assert_eq!(p.state, "Running");
        assert_eq!(p.requests, 1, "counted once its headers are read");
        assert_eq!(sb.figures().accepted, 1);
        sb.end_request(a, 1.5, 42);
        sb.set_state(a, State::Idle);
        sb.free(b);
        let c = sb.counts();
        assert_eq!((c.active, c.idle, c.total), (0, 1, 1));
        assert_eq!(sb.requests(a), 1);
        assert_eq!(sb.figures().max_active, 1);
        assert!(sb.mark_slow(a));
        assert!(!sb.mark_slow(a));
    }
}
