//! A worker's CGI processes from submission to reaping. A script is known
//! by an id from the moment it is queued; its pid arrives later from the
//! spawner thread. A script that exits while its exchange runs stays a
//! zombie until the exchange ends: the zombie keeps its pid, which names
//! its process group, from being reused, so a timeout can still kill what
//! it left running (`sleep 300 &` holding its output) without any risk of
//! signalling someone else's group.

use std::collections::HashMap;
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

struct Entry {
    name: String,
    pid: Option<i32>,
    /// Reaped (or never started): its pid may name another process now.
    exited: bool,
    /// Kill the group as soon as the pid is known.
    kill: bool,
    /// The exchange is over; kill the group if it still runs by then.
    detached: Option<Instant>,
}

#[derive(Default)]
pub struct Children {
    next: u64,
    entries: HashMap<u64, Entry>,
    by_pid: HashMap<i32, u64>,
}

impl Children {
    /// A new script named `name` (for log lines); returns its id.
    pub fn register(&mut self, name: &str) -> u64 {
        self.next += 1;
        self.entries.insert(
            self.next,
            Entry {
                name: name.to_string(),
                pid: None,
                exited: false,
                kill: false,
                detached: None,
            },
        );
        self.next
    }

    /// Forgets a script that was never submitted.
    pub fn abandon(&mut self, id: u64) {
        self.entries.remove(&id);
    }

    /// The spawner's outcome for `id`.
    pub fn spawned(&mut self, id: u64, outcome: Result<i32, Errno>) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        match outcome {
            Err(err) => {
                crate::error!("cannot start CGI {}: {err}", e.name);
                e.exited = true;
            }
            Ok(pid) => {
                e.pid = Some(pid);
                self.by_pid.insert(pid, id);
                if e.kill {
                    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
        self.forget_if_done(id);
    }

    /// Kills the script's whole process group (now, or once it has a pid).
    pub fn kill(&mut self, id: u64) {
        let Some(e) = self.entries.get_mut(&id) else { return };
        e.kill = true;
        // Not reaped (running, or a zombie held for this): the pgid is the
        // script's. Once reaped it may name someone else's group.
        if let (Some(pid), false) = (e.pid, e.exited) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// The exchange no longer needs the script; it is killed if it still
    /// runs at `deadline`, and forgotten once reaped.
    pub fn detach(&mut self, id: u64, deadline: Instant) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.detached = Some(deadline);
            if let (Some(pid), false) = (e.pid, e.exited) {
                Self::try_reap(e, pid);
                if e.exited {
                    self.by_pid.remove(&pid);
                }
            }
        }
        self.forget_if_done(id);
    }

    /// Reaps `e`'s process if it has exited.
    fn try_reap(e: &mut Entry, pid: i32) {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => {
                e.exited = true;
                log_end(&e.name, pid, status);
            }
            // Not our child any more (reaped elsewhere): nothing to hold.
            Err(_) => e.exited = true,
        }
    }

    /// The worker is exiting: no script outlives it.
    pub fn kill_all(&mut self) {
        for e in self.entries.values_mut() {
            if let (Some(pid), false) = (e.pid, e.exited) {
                crate::info!("CGI {} (pid {pid}) killed: the worker is exiting", e.name);
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    /// Reaps the exited children whose exchange is over (or that were
    /// killed); the others stay zombies until then (see the module's
    /// comment). Kills detached ones past their deadline.
    pub fn reap(&mut self, now: Instant) {
        let mut done = Vec::new();
        for (&pid, &id) in &self.by_pid {
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            if e.detached.is_none() && !e.kill {
                continue;
            }
            Self::try_reap(e, pid);
            if e.exited {
                done.push((pid, id));
            }
        }
        for (pid, id) in done {
            self.by_pid.remove(&pid);
            self.forget_if_done(id);
        }
        for e in self.entries.values_mut() {
            if let (Some(pid), Some(deadline), false, false) = (e.pid, e.detached, e.exited, e.kill)
                && now >= deadline
            {
                crate::warn!("CGI {} (pid {pid}) still runs after its exchange ended, killed", e.name);
                e.kill = true;
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }

    fn forget_if_done(&mut self, id: u64) {
        if let Some(e) = self.entries.get(&id)
            && e.exited
            && e.detached.is_some()
        {
            self.entries.remove(&id);
        }
    }
}

fn log_end(name: &str, pid: i32, status: WaitStatus) {
    match status {
        WaitStatus::Exited(_, 0) => {}
        WaitStatus::Exited(_, code) => crate::info!("CGI {name} (pid {pid}) exited with status {code}"),
        WaitStatus::Signaled(_, sig, _) => crate::info!("CGI {name} (pid {pid}) was killed by {sig}"),
        _ => {}
    }
}
