//! `accept = "dispatch"` from the master's side (note 000): the master
//! watches the listening sockets (edge-triggered) and, when connections
//! wait, reads how many from the kernel (one TCP_INFO) and tells workers of
//! the current generation to accept them, over one SOCK_SEQPACKET
//! socketpair each: round-robin, or the worker with the fewest connections
//! (each worker publishes its count in a shared board). A worker whose
//! channel is broken (it died) or full (it is stuck) is skipped.

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
}

#[derive(Default)]
pub struct Dispatcher {
    policy: Option<Dispatch>,
    /// Per slot of the current generation.
    lanes: Vec<Option<Lane>>,
    /// The board of connection counts for this generation (least_conn).
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
            Some(Dispatch::LeastConn) => SharedWords::new(n.max(1))
                .map_err(|e| crate::error!("cannot map the dispatch board: {e}; dispatching round-robin"))
                .ok()
                .map(Arc::new),
            _ => None,
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
        self.lanes[slot] = Some(Lane { pid: None, chan: ours });
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
                && let Some(w) = b.words().get(slot)
            {
                w.store(0, Ordering::Relaxed);
            }
            // What it was told and had not accepted waits in the queue.
            self.pending = true;
        }
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
        let mut share = vec![0u32; n];
        let load: Vec<u64> = match &self.board {
            Some(b) => (0..n)
                .map(|i| b.words().get(i).map_or(0, |w| w.load(Ordering::Relaxed)))
                .collect(),
            None => Vec::new(),
        };
        for _ in 0..count.min(MAX_COUNT * n as u32) {
            let Some(w) = self.pick(&load, &share) else { break };
            share[w] += 1;
        }
        let mut told_any = false;
        let mut undelivered = 0;
        for (w, k) in share.into_iter().enumerate() {
            if k == 0 {
                continue;
            }
            let Some(Some(lane)) = self.lanes.get(w) else { continue };
            match told::tell(&lane.chan, socket as u16, k.min(MAX_COUNT) as u16) {
                Ok(()) => told_any = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => undelivered += k,
                Err(_) => {
                    // Its end is closed: the worker died (reaped soon).
                    self.lanes[w] = None;
                    undelivered += k;
                }
            }
        }
        if undelivered > 0 && self.lanes.iter().any(Option::is_some) {
            // Someone else takes them, unless everyone is unreachable.
            self.pending = true;
        }
        told_any
    }

    /// The next worker: the least loaded (ties in turn), or in turn.
    fn pick(&mut self, load: &[u64], share: &[u32]) -> Option<usize> {
        let n = self.lanes.len();
        let start = self.next;
        let mut best: Option<usize> = None;
        for k in 0..n {
            let w = (start + k) % n;
            if self.lanes[w].is_none() {
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
