//! A pool's scoreboard: one shared mapping made by the master before it
//! forks, with a header of pool-wide figures and one fixed-size slot per
//! worker. A slot is written only by its worker (the master only claims
//! and frees it), with atomics; text fields sit behind a sequence word so
//! a reader never shows half of one URI and half of the next.
//! Idle / active / total are counted from the slots when asked, never kept
//! as counters of their own, so they cannot drift.

use std::sync::atomic::{AtomicU64, Ordering::*};

pub use super::record::{Counts, RequestInfo, State, mono_us, unix_secs, unix_us};
use super::record::{Words, h, s};
use crate::os::shm::SharedWords;

/// Trusted words of a slot.
mod t {
    /// 1 while the master has a worker on the slot.
    pub const CLAIMED: usize = 0;
    /// The pid of the CGI script the worker runs (`app = "cgi"`), else 0.
    pub const CHILD: usize = 1;
    /// Times the worker's program ended badly (emergency_restart_threshold).
    pub const FAILURES: usize = 2;
    /// The request start (`s::REQ_START`) the slow log has, and when it
    /// last wrote for the slot (monotonic µs).
    pub const SLOW_START: usize = 3;
    pub const SLOW_AT: usize = 4;
    pub const WORDS: usize = 5;
}

/// Words after the slots: requests in progress on the pool from corral's
/// own HTTP workers, one column per HTTP worker slot (64) and generation
/// parity, so a column is cleared when its worker ends without touching
/// the others' counts.
pub const FRONTS: usize = 128;

/// A pool's scoreboard. `mem` is a memfd a `direct` pool's program maps
/// (to record the requests it accepts itself): nothing in it is trusted
/// beyond the pool's own figures. What the master counts or acts on (which
/// slots are taken, a CGI script's pid to kill, failures, when the slow log
/// last wrote) is in `trusted`, an anonymous mapping no program sees.
pub struct Scoreboard {
    mem: SharedWords,
    trusted: SharedWords,
    slots: usize,
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
        let mem = SharedWords::new_memfd(Words::len(slots), "corral-scoreboard")?;
        let trusted = SharedWords::new(slots * t::WORDS + 2 * FRONTS)?;
        let sb = Scoreboard { mem, trusted, slots };
        sb.hw(h::START_TIME).store(unix_secs(), Relaxed);
        Ok(sb)
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// The memfd of the words, and how many there are (a program maps it).
    pub fn memfd(&self) -> Option<(std::os::fd::BorrowedFd<'_>, usize)> {
        self.mem.fd().map(|fd| (fd, self.mem.words().len()))
    }

    /// The header and slots, as the recording code sees them.
    pub fn words(&self) -> Words<'_> {
        Words {
            words: self.mem.words(),
            slots: self.slots,
        }
    }

    fn hw(&self, i: usize) -> &AtomicU64 {
        self.words().hw(i)
    }

    fn sw(&self, slot: usize, i: usize) -> &AtomicU64 {
        self.words().sw(slot, i)
    }

    fn tw(&self, slot: usize, i: usize) -> &AtomicU64 {
        &self.trusted.words()[slot * t::WORDS + i]
    }

    /// corral's HTTP workers' columns, in the trusted words (what the front
    /// decides from must not be a program's to write).
    fn fw(&self, front: usize) -> &AtomicU64 {
        &self.trusted.words()[self.slots * t::WORDS + front % FRONTS]
    }

    fn held_w(&self, front: usize) -> &AtomicU64 {
        &self.trusted.words()[self.slots * t::WORDS + FRONTS + front % FRONTS]
    }

    // --- corral's HTTP workers ---

    /// A request from HTTP worker column `front` starts (or ends) on the pool.
    pub fn front_add(&self, front: usize, starts: bool) {
        step(self.fw(front), starts);
    }

    /// Requests in progress on the pool from all of corral's HTTP workers.
    pub fn front_total(&self) -> u64 {
        (0..FRONTS).fold(0u64, |a, i| a.saturating_add(self.fw(i).load(Relaxed)))
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
        (0..FRONTS).fold(0u64, |a, i| a.saturating_add(self.held_w(i).load(Relaxed)))
    }

    // --- the master ---

    /// A free slot, claimed for a worker about to be forked.
    pub fn claim(&self) -> Option<usize> {
        let slot = (0..self.slots).find(|&i| self.tw(i, t::CLAIMED).load(Acquire) == 0)?;
        let w = |i| self.sw(slot, i);
        for i in 1..s::WORDS {
            w(i).store(0, Relaxed);
        }
        for i in 0..t::WORDS {
            self.tw(slot, i).store(0, Relaxed);
        }
        self.tw(slot, t::CLAIMED).store(1, Release);
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
        self.tw(slot, t::CLAIMED).store(0, Release);
    }

    /// The slot's state; a slot the master has a worker on is never Free
    /// (a program could write that: it counts as starting).
    pub fn state(&self, slot: usize) -> State {
        match (self.words().state(slot), self.tw(slot, t::CLAIMED).load(Acquire) != 0) {
            (_, false) => State::Free,
            (State::Free, true) => State::Starting,
            (st, true) => st,
        }
    }

    /// The counts, from the slots the master has workers on (the total
    /// cannot be made to drift by what a program writes).
    pub fn counts(&self) -> Counts {
        Counts::of((0..self.slots).map(|i| self.state(i)))
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
        self.tw(slot, t::SLOW_START).load(Relaxed) == self.sw(slot, s::REQ_START).load(Relaxed)
    }

    /// Monotonic µs when the slow log last wrote for the slot (0: never).
    pub fn slow_logged_at(&self, slot: usize) -> u64 {
        self.tw(slot, t::SLOW_AT).load(Relaxed)
    }

    /// True the first time it is called for the slot's current request, at
    /// most once per `gap_us` (a `direct` program could rewrite its
    /// request's start to flood the slow log: a real one cannot turn slow
    /// more often than that).
    pub fn mark_slow(&self, slot: usize, now_mono_us: u64, gap_us: u64) -> bool {
        let start = self.sw(slot, s::REQ_START).load(Relaxed);
        let last = self.slow_logged_at(slot);
        if self.tw(slot, t::SLOW_START).load(Relaxed) == start
            || (last != 0 && now_mono_us < last.saturating_add(gap_us))
        {
            return false;
        }
        self.tw(slot, t::SLOW_START).store(start, Relaxed);
        self.tw(slot, t::SLOW_AT).store(now_mono_us.max(1), Relaxed);
        true
    }

    /// A request the worker answers itself for its `direct` program.
    pub fn count_accepted(&self) {
        self.hw(h::ACCEPTED).fetch_add(1, Relaxed);
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
            .fetch_max(waiting.saturating_add(self.held_now()), Relaxed);
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
            listen_queue: r(h::LISTEN_QUEUE).saturating_add(held),
            max_listen_queue: r(h::MAX_LISTEN_QUEUE).max(r(h::LISTEN_QUEUE).saturating_add(held)),
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
            let state = self.state(slot);
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
        self.words().set_state(slot, st);
    }

    /// A request begins (see `Words::begin_request`).
    pub fn begin_request(&self, slot: usize, req: &RequestInfo<'_>) {
        self.words().begin_request(slot, req);
    }

    /// A request ended: its duration, CPU and memory.
    pub fn end_request(&self, slot: usize, cpu_percent: f64, memory: u64) {
        self.words().end_request(slot, cpu_percent, memory);
    }

    /// When the master claimed the slot (monotonic µs), until the worker
    /// first goes idle.
    pub fn claimed_at(&self, slot: usize) -> u64 {
        self.sw(slot, s::IDLE_SINCE).load(Relaxed)
    }

    /// The worker's program ended badly `n` more times.
    pub fn add_failures(&self, slot: usize, n: u32) {
        self.tw(slot, t::FAILURES).fetch_add(n as u64, Relaxed);
    }

    /// A `direct` program's connection descriptor (see `s::CONN_FD`).
    pub fn program_conn(&self, slot: usize) -> Option<i32> {
        let n = self.sw(slot, s::CONN_FD).load(Relaxed);
        (1..=i32::MAX as u64).contains(&n).then(|| (n - 1) as i32)
    }

    /// A `direct` program is to stop after its request in progress.
    pub fn ask_program_to_quit(&self, slot: usize) {
        self.sw(slot, s::QUIT).store(1, Relaxed);
    }

    /// A `direct` program's answer in progress (see `s::OUT_LEFT`).
    pub fn program_answer(&self, slot: usize) -> ProgramAnswer {
        let w = self.sw(slot, s::OUT_LEFT).load(Relaxed);
        // Written by the program's side: never more than a record's rest.
        let left = w & 0xffff_ffff;
        ProgramAnswer {
            rest: (left <= 0xffff + 0xff).then_some(left as usize),
            id: (w >> 32) as u16,
            began: w >> 48 & 1 == 1,
        }
    }

    /// The worker's CGI script started (its pid) or is about to be reaped (0).
    pub fn set_child(&self, slot: usize, pid: i32) {
        self.tw(slot, t::CHILD).store(pid.max(0) as u64, Relaxed);
    }

    pub fn child(&self, slot: usize) -> i32 {
        self.tw(slot, t::CHILD).load(Relaxed) as i32
    }

    pub fn failures(&self, slot: usize) -> u64 {
        self.tw(slot, t::FAILURES).load(Relaxed)
    }

    pub fn requests(&self, slot: usize) -> u64 {
        self.sw(slot, s::REQUESTS).load(Relaxed)
    }
}

/// Where a `direct` program is in its answer.
pub struct ProgramAnswer {
    /// Bytes left of the record it was writing (`None`: mid-header).
    pub rest: Option<usize>,
    /// The request's id.
    pub id: u16,
    /// Its STDOUT began.
    pub began: bool,
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
        assert!(sb.mark_slow(a, 10, 1000));
        assert!(!sb.mark_slow(a, 20, 1000));
    }
}
