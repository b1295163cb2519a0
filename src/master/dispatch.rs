//! `accept = "dispatch"` from the master's side (note 000): the master
//! watches the listening sockets (edge-triggered) and, when connections
//! wait, reads how many from the kernel (one TCP_INFO) and tells workers of
//! the current generation to accept them, over one SOCK_SEQPACKET
//! socketpair each: round-robin, or the worker with the fewest connections.
//! Each worker publishes in a shared board its connection count and how
//! many messages it has read: a worker that has not read the last one yet
//! (busy, or stuck) is passed over while another is ready, and one whose
//! channel is broken (it died) or full is skipped.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use nix::unistd::Pid;

use crate::config::Dispatch;
use crate::event::told;
use crate::os::shm::SharedWords;

/// The master's end of one worker's channel.
struct Lane {
    pid: Option<Pid>,
    chan: OwnedFd,
    /// Messages sent, to compare with those the worker says it read.
    sent: u64,
}

#[derive(Default)]
pub struct Dispatcher {
    policy: Option<Dispatch>,
    /// Per slot of the current generation.
    lanes: Vec<Option<Lane>>,
    /// This generation's board: per worker, its connections and the
    /// messages it read (see [`told::Told`]).
    board: Option<Arc<SharedWords>>,
    next: usize,
    /// Connections could not be handed to anyone: look again soon.
    pub pending: bool,
}

/// Largest count in one message.
const MAX_COUNT: u32 = u16::MAX as u32;

impl Dispatcher {
    /// A new generation of `n` workers: the old lanes close, so retiring
    /// workers are told nothing more.
    pub fn new_generation(&mut self, n: usize, policy: Option<Dispatch>) {
        self.policy = policy;
        self.lanes = (0..n).map(|_| None).collect();
        self.next = 0;
        self.board = match policy {
            Some(_) => SharedWords::new(told::BOARD_WORDS * n.max(1))
                .map_err(|e| crate::error!("cannot map the dispatch board: {e}; dispatching round-robin"))
                .ok()
                .map(Arc::new),
            None => None,
        };
    }

    pub fn active(&self) -> bool {
        self.policy.is_some()
    }

    /// Before forking worker `slot`: its channel. The master keeps one end;
    /// the worker gets the returned [`told::Told`].
    pub fn prepare(&mut self, slot: usize) -> io::Result<Option<told::Told>> {
        if self.policy.is_none() || slot >= self.lanes.len() {
            return Ok(None);
        }
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        )?;
        if let Some(b) = &self.board {
            for w in &b.words()[told::BOARD_WORDS * slot..][..told::BOARD_WORDS] {
                w.store(0, Ordering::Relaxed);
            }
        }
        self.lanes[slot] = Some(Lane {
            pid: None,
            chan: ours,
            sent: 0,
        });
        Ok(Some(told::Told {
            channel: theirs,
            load: self.board.clone().map(|b| (b, slot)),
        }))
    }

    pub fn started(&mut self, slot: usize, pid: Pid) {
        if let Some(Some(l)) = self.lanes.get_mut(slot) {
            l.pid = Some(pid);
        }
    }

    /// Forking failed or the worker ended: its lane closes.
    pub fn gone(&mut self, slot: usize, pid: Option<Pid>) {
        if let Some(l) = self.lanes.get_mut(slot)
            && l.as_ref().is_some_and(|l| pid.is_none() || l.pid == pid)
        {
            *l = None;
            if let Some(b) = &self.board
                && let Some(w) = b.words().get(told::BOARD_WORDS * slot)
            {
                w.store(0, Ordering::Relaxed);
            }
            // What it was told and had not accepted waits in the queue.
            self.pending = true;
        }
    }

    /// Whether a worker has not read the last message it was sent: what it
    /// was told may still wait in the queue, so the master looks again soon.
    pub fn any_behind(&self) -> bool {
        let Some(b) = &self.board else { return false };
        self.lanes.iter().enumerate().any(|(i, l)| {
            l.as_ref().is_some_and(|l| {
                b.words()
                    .get(told::BOARD_WORDS * i + 1)
                    .is_some_and(|r| l.sent > r.load(Ordering::Acquire))
            })
        })
    }

    /// In a forked child: the master's ends are not its to keep.
    pub fn close_in_child(&mut self) {
        self.lanes.clear();
        self.board = None;
    }

    /// Hands `count` waiting connections of socket `socket` to workers.
    /// Returns false when no worker could be told.
    pub fn dispatch(&mut self, socket: usize, count: u32) -> bool {
        let n = self.lanes.len();
        if n == 0 || self.policy.is_none() {
            return false;
        }
        let word = |i: usize, k: usize| {
            self.board.as_ref().and_then(|b| {
                b.words()
                    .get(told::BOARD_WORDS * i + k)
                    .map(|w| w.load(Ordering::Acquire))
            })
        };
        let load: Vec<u64> = match self.policy {
            Some(Dispatch::LeastConn) if self.board.is_some() => (0..n).map(|i| word(i, 0).unwrap_or(0)).collect(),
            _ => Vec::new(),
        };
        // Workers still holding an unread message are passed over while
        // another is ready; those whose channel is full or broken, for the
        // rest of this burst (their share goes to the others).
        let behind: Vec<bool> = (0..n)
            .map(|i| match (&self.lanes[i], word(i, 1)) {
                (Some(l), Some(read)) => l.sent > read,
                _ => false,
            })
            .collect();
        let ready = (0..n).any(|i| self.lanes[i].is_some() && !behind[i]);
        let mut skip: Vec<bool> = behind.iter().map(|&b| b && ready).collect();
        let mut left = count.min(MAX_COUNT * n as u32);
        let mut told_any = false;
        while left > 0 {
            let mut share = vec![0u32; n];
            for _ in 0..left {
                let Some(w) = self.pick(&load, &share, &skip) else {
                    break;
                };
                share[w] += 1;
            }
            if share.iter().all(|&k| k == 0) {
                break; // nobody left to tell
            }
            left = 0;
            for (w, k) in share.into_iter().enumerate() {
                if k == 0 {
                    continue;
                }
                let Some(Some(lane)) = self.lanes.get_mut(w) else {
                    continue;
                };
                match told::tell(&lane.chan, socket as u16, k.min(MAX_COUNT) as u16) {
                    Ok(()) => {
                        lane.sent += 1;
                        told_any = true;
                    }
                    Err(e) => {
                        if e.kind() != io::ErrorKind::WouldBlock {
                            // Its end is closed: the worker died (reaped soon).
                            self.lanes[w] = None;
                        }
                        skip[w] = true;
                        left += k;
                    }
                }
            }
        }
        if left > 0 && self.lanes.iter().any(Option::is_some) {
            // Look again soon, unless nobody can be reached at all.
            self.pending = true;
        }
        told_any
    }

    /// The next worker: the least loaded (ties in turn), or in turn.
    fn pick(&mut self, load: &[u64], share: &[u32], skip: &[bool]) -> Option<usize> {
        let n = self.lanes.len();
        let start = self.next;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let w = (start + k) % n;
            if self.lanes[w].is_none() || skip[w] {
                continue;
            }
            if load.is_empty() {
                best = Some(w);
                break;
            }
            let cost = load[w] + share[w] as u64;
            if best.is_none_or(|b| cost < load[b] + share[b] as u64) {
                best = Some(w);
            }
        }
        let w = best?;
        self.next = (w + 1) % n;
        Some(w)
    }
}
