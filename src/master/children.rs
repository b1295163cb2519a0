//! The master's table of worker processes. Each worker belongs to a
//! generation: a reload starts generation N+1 and retires the older ones,
//! which finish their in-flight requests while the new ones already serve.
//! Only the current generation is respawned when a worker dies, with
//! back-off when a slot keeps crashing soon after it starts.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// A worker that lived less than this before dying counts as a failure.
/// (A crash loop dies within milliseconds of the start; a worker killed
/// from outside every few seconds is not one.)
const UNSTABLE: Duration = Duration::from_secs(1);
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A child that ended.
pub enum Exit {
    Worker {
        pid: Pid,
        slot: usize,
        generation: u32,
        lived: Duration,
        abnormal: bool,
    },
    /// A child that is not a worker (a new master started by an upgrade).
    Other { pid: Pid, how: String, abnormal: bool },
}

/// How long a worker told to stop now has before it is killed.
const TERM_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// A worker (`who`, for the log) past its stop deadline: first told to
/// stop now (SIGTERM: an HTTP worker kills its CGI scripts, a pool worker
/// breaks off an answer it is in; a SIGKILL would leave the scripts
/// orphaned and the answer looking complete), killed `TERM_GRACE` later.
pub(super) fn stop_overdue(pid: Pid, who: &str, deadline: &mut Option<Instant>, termed: &mut bool, now: Instant) {
    if !*termed {
        crate::warn!("{who} did not stop in time, stopping it now");
        send(pid, Signal::SIGTERM);
        *termed = true;
        *deadline = Some(now + TERM_GRACE);
    } else {
        crate::warn!("{who} did not stop in time, killing it");
        send(pid, Signal::SIGKILL);
        *deadline = None;
    }
}

struct Worker {
    pid: Pid,
    slot: usize,
    generation: u32,
    started: Instant,
    /// Set once asked to stop: killed if still running at this time.
    deadline: Option<Instant>,
    /// Told to stop now (SIGTERM) at its deadline: SIGKILL next.
    termed: bool,
}

#[derive(Default, Clone)]
struct Slot {
    failures: u32,
    respawn_at: Option<Instant>,
}

#[derive(Default)]
pub struct Children {
    workers: Vec<Worker>,
    /// Respawn state of the current generation's slots.
    slots: Vec<Slot>,
}

impl Children {
    /// Sizes the slot table for a generation of `n` workers.
    pub fn set_slots(&mut self, n: usize) {
        self.slots = vec![Slot::default(); n];
    }

    pub fn started(&mut self, slot: usize, generation: u32, pid: Pid) {
        self.workers.push(Worker {
            pid,
            slot,
            generation,
            started: Instant::now(),
            deadline: None,
            termed: false,
        });
        if let Some(s) = self.slots.get_mut(slot) {
            s.respawn_at = None;
        }
    }

    pub fn failed_to_start(&mut self, slot: usize) {
        if let Some(s) = self.slots.get_mut(slot) {
            s.respawn_at = Some(Instant::now() + Duration::from_secs(1));
        }
    }

    pub fn alive(&self) -> usize {
        self.workers.len()
    }

    /// Asks every worker older than `generation` to stop with `sig`, to be
    /// killed if still running after `grace`.
    pub fn retire_older(&mut self, generation: u32, sig: Signal, grace: Duration) {
        let deadline = Instant::now() + grace;
        for w in self.workers.iter_mut().filter(|w| w.generation < generation) {
            if w.deadline.is_none() {
                w.deadline = Some(deadline);
                send(w.pid, sig);
            }
        }
    }

    /// Sends `sig` to every worker; with a `grace`, they are also marked to
    /// be killed after it.
    pub fn signal_all(&mut self, sig: Signal, grace: Option<Duration>) {
        let deadline = grace.map(|g| Instant::now() + g);
        for w in &mut self.workers {
            send(w.pid, sig);
            if let Some(d) = deadline {
                w.deadline = Some(w.deadline.map_or(d, |old| old.min(d)));
            }
        }
    }

    /// Kills workers still running past their deadline.
    pub fn kill_overdue(&mut self) {
        let now = Instant::now();
        for w in self.workers.iter_mut().filter(|w| w.deadline.is_some_and(|d| d <= now)) {
            let who = format!("worker process {} (#{})", w.pid, w.slot);
            stop_overdue(w.pid, &who, &mut w.deadline, &mut w.termed, now);
        }
    }

    /// The next time something is due: a respawn or a kill.
    pub fn next_due(&self) -> Option<Instant> {
        let r = self.slots.iter().filter_map(|s| s.respawn_at);
        let k = self.workers.iter().filter_map(|w| w.deadline);
        r.chain(k).min()
    }

    /// Collects every exited child, logging how workers ended.
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
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                out.push(Exit::Other { pid, how, abnormal });
                continue;
            };
            let w = self.workers.swap_remove(i);
            // A worker asked to stop that exits 0 did what it was told.
            let expected = w.deadline.is_some() && !abnormal;
            if abnormal && w.deadline.is_none() {
                // A crash: shown whatever log_level says (nginx's alert).
                crate::alert!("worker process {pid} (#{}) {how}", w.slot);
            } else {
                crate::notice!("worker process {pid} (#{}) {how}", w.slot);
            }
            out.push(Exit::Worker {
                pid,
                slot: w.slot,
                generation: w.generation,
                lived: w.started.elapsed(),
                abnormal: abnormal && !expected,
            });
        }
        out
    }

    pub fn schedule_respawn(&mut self, slot: usize, lived: Duration, abnormal: bool) {
        let Some(s) = self.slots.get_mut(slot) else { return };
        if abnormal && lived < UNSTABLE {
            s.failures = s.failures.saturating_add(1);
        } else {
            s.failures = 0;
        }
        // One early death (a kill, the OOM killer) is restarted at once, as
        // nginx does; back-off starts when it happens again.
        let delay = if s.failures <= 1 {
            Duration::ZERO
        } else {
            BACKOFF_FIRST
                .saturating_mul(1 << (s.failures - 2).min(16))
                .min(BACKOFF_MAX)
        };
        if !delay.is_zero() {
            crate::warn!(
                "worker #{slot} died {} times in a row soon after starting; respawning in {} ms",
                s.failures,
                delay.as_millis()
            );
        }
        s.respawn_at = Some(Instant::now() + delay);
    }

    pub fn due_respawns(&mut self) -> Vec<usize> {
        let now = Instant::now();
        let mut due = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.respawn_at.is_some_and(|t| t <= now) {
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

fn send(pid: Pid, sig: Signal) {
    if let Err(e) = kill(pid, sig) {
        crate::error!("kill({pid}, {sig}) failed: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_early_death_respawns_at_once_a_crash_loop_backs_off() {
        let mut c = Children::default();
        c.set_slots(1);
        let early = Duration::from_millis(10);
        c.schedule_respawn(0, early, true);
        assert_eq!(c.due_respawns(), vec![0], "first early death: at once");
        c.schedule_respawn(0, early, true);
        assert!(c.due_respawns().is_empty(), "second in a row: after a back-off");
        // A worker that lived past the unstable window resets the count,
        // even when it was killed (a chaos test, the OOM killer).
        c.schedule_respawn(0, Duration::from_secs(2), true);
        assert_eq!(c.due_respawns(), vec![0]);
        c.schedule_respawn(0, early, true);
        assert_eq!(c.due_respawns(), vec![0]);
    }
}
