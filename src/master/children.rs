//! The master's table of worker processes: who runs in which slot, how each
//! one ended, and when a crashed one may be started again (back-off when a
//! worker keeps crashing soon after it starts).

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// A worker that lived less than this before dying counts as a failure.
const UNSTABLE: Duration = Duration::from_secs(5);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Exit {
    pub slot: usize,
    pub lived: Duration,
    pub abnormal: bool,
}

#[derive(Default)]
struct Slot {
    pid: Option<(Pid, Instant)>,
    failures: u32,
    respawn_at: Option<Instant>,
}

pub struct Children {
    slots: Vec<Slot>,
}

impl Children {
    pub fn new(n: usize) -> Children {
        Children {
            slots: (0..n).map(|_| Slot::default()).collect(),
        }
    }

    pub fn started(&mut self, slot: usize, pid: Pid) {
        let s = &mut self.slots[slot];
        s.pid = Some((pid, Instant::now()));
        s.respawn_at = None;
    }

    pub fn failed_to_start(&mut self, slot: usize) {
        self.slots[slot].respawn_at = Some(Instant::now() + Duration::from_secs(1));
    }

    pub fn alive(&self) -> usize {
        self.slots.iter().filter(|s| s.pid.is_some()).count()
    }

    pub fn signal_all(&self, sig: Signal) {
        for (pid, _) in self.slots.iter().filter_map(|s| s.pid) {
            if let Err(e) = kill(pid, sig) {
                crate::error!("kill({pid}, {sig}) failed: {e}");
            }
        }
    }

    /// Collects every exited child, logging how it ended.
    pub fn reap(&mut self) -> Vec<Exit> {
        let mut out = Vec::new();
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(s) => s,
            };
            let (pid, abnormal, how) = match status {
                WaitStatus::Exited(pid, code) => (pid, code != 0, format!("exited with code {code}")),
                WaitStatus::Signaled(pid, sig, core) => (
                    pid,
                    true,
                    format!(
                        "exited on signal {} ({sig}){}",
                        sig as i32,
                        if core { " (core dumped)" } else { "" }
                    ),
                ),
                _ => continue,
            };
            let Some(slot) = self.slots.iter().position(|s| s.pid.is_some_and(|(p, _)| p == pid)) else {
                crate::info!("process {pid} {how}");
                continue;
            };
            let (_, started) = self.slots[slot].pid.take().expect("matched above");
            if abnormal {
                crate::warn!("worker process {pid} (#{slot}) {how}");
            } else {
                crate::notice!("worker process {pid} (#{slot}) {how}");
            }
            out.push(Exit {
                slot,
                lived: started.elapsed(),
                abnormal,
            });
        }
        out
    }

    pub fn schedule_respawn(&mut self, slot: usize, lived: Duration, abnormal: bool) {
        let s = &mut self.slots[slot];
        if abnormal && lived < UNSTABLE {
            s.failures = s.failures.saturating_add(1);
        } else {
            s.failures = 0;
        }
        let delay = if s.failures == 0 {
            Duration::ZERO
        } else {
            BACKOFF_FIRST
                .saturating_mul(1 << (s.failures - 1).min(16))
                .min(BACKOFF_MAX)
        };
        if !delay.is_zero() {
            crate::warn!(
                "worker #{slot} crashed {} time(s) in a row soon after starting; respawning in {} ms",
                s.failures,
                delay.as_millis()
            );
        }
        s.respawn_at = Some(Instant::now() + delay);
    }

    pub fn next_respawn(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.respawn_at).min()
    }

    pub fn due_respawns(&mut self) -> Vec<usize> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.pid.is_none() && s.respawn_at.is_some_and(|t| t <= now) {
                s.respawn_at = None;
                due.push(i);
            }
        }
        due
    }

    pub fn cancel_respawns(&mut self) {
        for s in &mut self.slots {
            s.respawn_at = None;
        }
    }
}
