//! Per-client-address limits shared by every worker of a generation:
//! concurrent requests (`limit_conn`) and a request rate with a burst
//! (`limit_req`, a leaky bucket), as nginx's zones keep them.
//!
//! The state lives in one shared mapping the master makes before it forks
//! a generation's workers, so a limit holds across workers. Every update
//! is a single atomic operation or CAS loop: no lock a killed worker could
//! leave held. In-progress counts are kept per worker (one column each),
//! so the master can wipe a dead worker's share before its replacement
//! starts, and a crash never leaves an address counted forever.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::time::Instant;

use crate::os::shm::SharedWords;

/// Slots probed for a key before the table counts as full there.
const PROBE: usize = 16;
/// Bytes of shared memory per address state (key, bucket, counts).
const FIXED_WORDS: usize = 2;
/// Bucket state flag: the entry has seen a request (its `last` is set).
const SEEN: u64 = 1 << 31;

/// What `limit_req` decided for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rate {
    Pass,
    /// Within the burst: serve after this many milliseconds.
    Delay(u64),
    Reject,
}

pub use crate::config::RateLimit;

pub struct Zone {
    mem: SharedWords,
    entries: usize,
    workers: usize,
    /// Keyed hashing with a seed drawn by the master: clients cannot aim
    /// their addresses at one probe window.
    seed: std::collections::hash_map::RandomState,
    base: Instant,
    /// An entry with no request in progress and no use for this long may
    /// be given to another address (the longest burst drains by then).
    stale_ms: u64,
}

impl Zone {
    /// A zone of about `bytes` for a generation of `workers` workers.
    pub fn new(bytes: u64, workers: usize, stale_ms: u64) -> std::io::Result<Zone> {
        let per_entry = FIXED_WORDS + workers.div_ceil(2);
        let want = (bytes as usize / 8 / per_entry).max(PROBE);
        let entries = want.next_power_of_two() / if want.is_power_of_two() { 1 } else { 2 };
        let entries = entries.max(PROBE);
        Ok(Zone {
            mem: SharedWords::new(entries * per_entry)?,
            entries,
            workers,
            seed: std::collections::hash_map::RandomState::new(),
            base: Instant::now(),
            stale_ms: stale_ms.max(1000),
        })
    }

    pub fn entries(&self) -> usize {
        self.entries
    }

    fn now_ms(&self) -> u32 {
        self.base.elapsed().as_millis() as u32
    }

    fn key(&self, limit: u32, addr: IpAddr) -> u64 {
        let h = self.seed.hash_one((limit, addr));
        if h == 0 { 1 } else { h }
    }

    fn key_word(&self, e: usize) -> &std::sync::atomic::AtomicU64 {
        &self.mem.words()[e]
    }

    fn bucket(&self, e: usize) -> &std::sync::atomic::AtomicU64 {
        &self.mem.words()[self.entries + e]
    }

    /// The word holding worker `w`'s count for entry `e` (two 32-bit
    /// counts per word) and the shift of its half.
    fn count_word(&self, e: usize, w: usize) -> (&std::sync::atomic::AtomicU64, u32) {
        let per = self.workers.div_ceil(2);
        let word = &self.mem.words()[2 * self.entries + e * per + w / 2];
        (word, (w as u32 % 2) * 32)
    }

    fn in_progress(&self, e: usize) -> u64 {
        let per = self.workers.div_ceil(2);
        let base = 2 * self.entries + e * per;
        self.mem.words()[base..base + per]
            .iter()
            .map(|w| {
                let v = w.load(Acquire);
                (v & 0xffff_ffff) + (v >> 32)
            })
            .sum()
    }

    fn stale(&self, e: usize, now: u32) -> bool {
        let b = self.bucket(e).load(Acquire);
        let idle = now.wrapping_sub((b >> 32) as u32) as u64;
        self.in_progress(e) == 0 && (b & SEEN == 0 || idle > self.stale_ms)
    }

    /// The entry for `key`, claimed if new; `None` when its probe window
    /// is full of live entries.
    fn entry(&self, key: u64) -> Option<usize> {
        let mask = self.entries - 1;
        let start = key as usize & mask;
        let now = self.now_ms();
        let mut reusable = None;
        for i in 0..PROBE {
            let e = (start + i) & mask;
            let k = self.key_word(e).load(Acquire);
            if k == key {
                return Some(e);
            }
            if k == 0 {
                // Keys are never removed, only replaced: the key is not further on.
                match self.key_word(e).compare_exchange(0, key, AcqRel, Acquire) {
                    Ok(_) => return Some(e),
                    Err(k) if k == key => return Some(e),
                    Err(_) => continue,
                }
            }
            if reusable.is_none() && self.stale(e, now) {
                reusable = Some((e, k));
            }
        }
        let (e, old) = reusable?;
        match self.key_word(e).compare_exchange(old, key, AcqRel, Acquire) {
            Ok(_) => {
                self.bucket(e).store(0, Relaxed);
                Some(e)
            }
            Err(k) if k == key => Some(e),
            Err(_) => None,
        }
    }

    /// Counts a request in progress for `addr` under limit `limit` in
    /// worker `w`; refused (and not counted) beyond `max`. The entry
    /// returned goes back to [`Zone::release`] when the request ends.
    pub fn acquire(&self, limit: u32, addr: IpAddr, w: usize, max: u64) -> Option<usize> {
        let e = self.entry(self.key(limit, addr))?;
        let (word, shift) = self.count_word(e, w.min(self.workers - 1));
        word.fetch_add(1 << shift, AcqRel);
        if self.in_progress(e) > max {
            word.fetch_sub(1 << shift, AcqRel);
            return None;
        }
        Some(e)
    }

    pub fn release(&self, e: usize, w: usize) {
        let (word, shift) = self.count_word(e, w.min(self.workers - 1));
        // Never below zero, even if the master wiped this column meanwhile.
        let _ = word.fetch_update(AcqRel, Acquire, |v| {
            ((v >> shift) & 0xffff_ffff != 0).then(|| v - (1 << shift))
        });
    }

    /// nginx's leaky bucket: excess (in thousandths of a request) drains
    /// at the rate; a request adds one; beyond the burst it is refused and
    /// leaves the state as it was.
    pub fn rate(&self, limit: u32, addr: IpAddr, r: &RateLimit) -> Rate {
        let Some(e) = self.entry(self.key(limit, addr)) else {
            return Rate::Reject;
        };
        let now = self.now_ms();
        let bucket = self.bucket(e);
        let mut old = bucket.load(Acquire);
        loop {
            let excess = if old & SEEN == 0 {
                0
            } else {
                let elapsed = now.wrapping_sub((old >> 32) as u32) as u64;
                let drained = r.per_kilosecond.saturating_mul(elapsed) / 1000;
                (old & (SEEN - 1)).saturating_sub(drained) + 1000
            };
            if excess > r.burst * 1000 {
                return Rate::Reject;
            }
            let new = (now as u64) << 32 | SEEN | excess.min(SEEN - 1);
            match bucket.compare_exchange_weak(old, new, AcqRel, Acquire) {
                Ok(_) if excess == 0 || r.nodelay => return Rate::Pass,
                Ok(_) => return Rate::Delay(excess * 1000 / r.per_kilosecond.max(1)),
                Err(cur) => old = cur,
            }
        }
    }

    /// A worker of this generation ended: forget its in-progress counts
    /// before a replacement takes its column.
    pub fn clear_worker(&self, w: usize) {
        if w >= self.workers {
            return;
        }
        let keep: u64 = if w.is_multiple_of(2) {
            0xffff_ffff << 32
        } else {
            0xffff_ffff
        };
        for e in 0..self.entries {
            let (word, _) = self.count_word(e, w);
            word.fetch_and(keep, AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn concurrent_requests_are_counted_across_workers() {
        let z = Zone::new(64 << 10, 3, 1000).unwrap();
        let a = z.acquire(1, addr(1), 0, 2).unwrap();
        let b = z.acquire(1, addr(1), 2, 2).unwrap();
        assert_eq!(a, b);
        assert!(z.acquire(1, addr(1), 1, 2).is_none(), "third over a limit of 2");
        assert!(z.acquire(2, addr(1), 1, 2).is_some(), "another limit is counted apart");
        assert!(z.acquire(1, addr(2), 1, 2).is_some(), "another address too");
        z.release(a, 0);
        let c = z.acquire(1, addr(1), 1, 2).unwrap();
        // Worker 2 dies: its count goes, the others stay.
        z.clear_worker(2);
        assert!(z.acquire(1, addr(1), 0, 2).is_some());
        assert!(z.acquire(1, addr(1), 0, 2).is_none());
        z.release(b, 2); // after the wipe: no underflow
        z.release(c, 1);
        z.release(c, 0);
        assert!(z.acquire(1, addr(1), 0, 2).is_some());
    }

    #[test]
    fn leaky_bucket_passes_the_burst_then_refuses() {
        let z = Zone::new(64 << 10, 1, 1000).unwrap();
        let r = RateLimit {
            per_kilosecond: 1000,
            burst: 2,
            nodelay: true,
        };
        let got: Vec<Rate> = (0..5).map(|_| z.rate(7, addr(1), &r)).collect();
        assert_eq!(got, [Rate::Pass, Rate::Pass, Rate::Pass, Rate::Reject, Rate::Reject]);
        let delayed = RateLimit { nodelay: false, ..r };
        assert_eq!(z.rate(8, addr(1), &delayed), Rate::Pass);
        assert!(matches!(z.rate(8, addr(1), &delayed), Rate::Delay(ms) if ms > 900 && ms <= 1000));
    }

    #[test]
    fn a_full_window_takes_over_stale_entries_only() {
        let z = Zone::new(0, 1, 1000).unwrap();
        assert_eq!(z.entries(), PROBE);
        let held: Vec<usize> = (0..PROBE as u8)
            .map(|i| z.acquire(1, addr(i), 0, 10).unwrap())
            .collect();
        assert!(
            z.acquire(1, addr(200), 0, 10).is_none(),
            "every entry has a request in progress"
        );
        z.release(held[3], 0);
        // Not stale yet: its last use is recent only if it was rated; never rated = stale.
        assert!(z.acquire(1, addr(200), 0, 10).is_some());
    }
}
