//! The master's side of application pools: each pool's listening socket
//! (kept across reloads and handed to a new binary), its workers, the pm
//! rules applied from the scoreboard once a second (and at once when an
//! `ondemand` socket has a connection waiting), respawns with back-off,
//! the slow log, the request_terminate_timeout safety net and the
//! emergency restart. Reload: an unchanged pool keeps running, a changed
//! one gets a new generation of workers on the same socket while the old
//! one finishes, a removed one drains.

use std::collections::VecDeque;
use std::io::Write as _;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::fastcgi::Address;
use crate::config::pool::{Pm, Pool};
use crate::pool::manager::{self, PmState};
use crate::pool::registry::Running;
use crate::pool::scoreboard::{Scoreboard, mono_us};

/// Names the pool sockets a new binary inherits: `fd@address;...`.
pub const INHERIT_ENV: &str = "CORRAL_POOL_SOCKETS";

/// A worker that lived less than this before failing counts towards back-off.
const UNSTABLE: Duration = Duration::from_secs(1);

/// How long past request_terminate_timeout the master waits for a worker
/// to end the request itself before it kills the worker.
const TERMINATE_GRACE: Duration = Duration::from_secs(3);

pub struct PoolChild {
    pub pid: Pid,
    pub slot: usize,
    started: Instant,
    /// Asked to stop: killed if still running then.
    deadline: Option<Instant>,
    /// Its program's bad ends already counted (the slot's FAILURES word).
    failures_seen: u64,
    /// Told to stop now at its deadline: killed next.
    termed: bool,
}

/// A pool's listening socket; a unix socket's file goes with it.
pub struct PoolSocket {
    pub address: Address,
    pub sock: Socket,
    /// Remove the socket file when this is dropped (not after a hand-over).
    unlink: bool,
    /// Handed over by the master of this pid (a binary upgrade): the file
    /// is removed only once that master is gone (it may take over again
    /// while it is our parent), as nginx does for its unix sockets.
    inherited_from: Option<Pid>,
}

impl Drop for PoolSocket {
    fn drop(&mut self) {
        let unlink = self.unlink || self.inherited_from.is_some_and(|p| nix::unistd::getppid() != p);
        if let (Address::Unix(p), true) = (&self.address, unlink) {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub struct RunningPool {
    pub shared: Arc<Running>,
    pub socket: PoolSocket,
    pub children: Vec<PoolChild>,
    pm: PmState,
    /// Workers that exited on their own (max_requests, a crash), owed a respawn.
    owed: usize,
    failures: u32,
    respawn_at: Option<Instant>,
    /// Abnormal exits within emergency_restart_interval.
    crashes: VecDeque<Instant>,
}

/// An old generation finishing its requests.
struct Draining {
    shared: Arc<Running>,
    children: Vec<PoolChild>,
}

#[derive(Default)]
pub struct Pools {
    pub running: Vec<RunningPool>,
    draining: Vec<Draining>,
    /// SIGWINCH / stopping: no spawning.
    pub paused: bool,
    last_round: Option<Instant>,
}

impl Pools {
    /// The pools of `cfgs`: sockets taken from `keep` (by address) or opened.
    pub fn open(cfgs: &[Pool], keep: &mut Vec<PoolSocket>) -> Result<Vec<RunningPool>, String> {
        let mut out = Vec::new();
        for cfg in cfgs {
            let socket = match keep.iter().position(|s| s.address == cfg.listen) {
                Some(i) => {
                    let s = keep.remove(i);
                    let _ = s.sock.listen(cfg.backlog);
                    s
                }
                None => open_socket(cfg)?,
            };
            if let Address::Unix(p) = &cfg.listen {
                set_owner(p, cfg)?;
            }
            out.push(new_pool(cfg.clone(), socket)?);
        }
        Ok(out)
    }

    pub fn start(&mut self, pools: Vec<RunningPool>) {
        self.running = pools;
    }

    /// Every pool's config and scoreboard, for the processes forked next.
    pub fn shared(&self) -> Vec<Arc<Running>> {
        self.running.iter().map(|p| p.shared.clone()).collect()
    }

    /// Swaps in the pools of a new configuration: unchanged pools keep
    /// running, changed ones drain behind a new generation on the same
    /// socket, removed ones drain and their sockets close.
    pub fn reload(&mut self, cfgs: &[Pool], grace: Duration) -> Result<(), String> {
        // First the sockets of new addresses: if one cannot open, nothing
        // has changed (the new ones close again as `opened` drops).
        let mut opened: Vec<PoolSocket> = Vec::new();
        for c in cfgs {
            let have = self.running.iter().any(|p| p.socket.address == c.listen);
            if !have && !opened.iter().any(|s| s.address == c.listen) {
                let s = open_socket(c)?;
                if let Address::Unix(p) = &c.listen {
                    set_owner(p, c)?;
                }
                opened.push(s);
            }
        }
        let old = std::mem::take(&mut self.running);
        let (mut same, other): (Vec<RunningPool>, Vec<RunningPool>) =
            old.into_iter().partition(|p| cfgs.iter().any(|c| *c == p.shared.cfg));
        let mut sockets = opened;
        let mut retiring = Vec::new();
        for p in other {
            sockets.push(p.socket);
            retiring.push(Draining {
                shared: p.shared,
                children: p.children,
            });
        }
        let mut fresh = Vec::new();
        for c in cfgs {
            if let Some(i) = same.iter().position(|p| p.shared.cfg == *c) {
                fresh.push(same.remove(i));
                continue;
            }
            let Some(i) = sockets.iter().position(|s| s.address == c.listen) else {
                continue; // cannot happen: opened or kept above
            };
            let socket = sockets.remove(i);
            let _ = socket.sock.listen(c.backlog);
            if let Address::Unix(p) = &c.listen
                && let Err(e) = set_owner(p, c)
            {
                crate::error!("{e}");
            }
            match new_pool(c.clone(), socket) {
                Ok(p) => fresh.push(p),
                Err(e) => crate::crit!("{e}; the pool does not run"),
            }
        }
        for d in &mut retiring {
            crate::notice!(
                "[pool {}] {} worker(s) of the previous configuration finish their requests",
                d.shared.cfg.name,
                d.children.len()
            );
            retire(&mut d.children, Signal::SIGQUIT, grace);
        }
        self.draining.extend(retiring);
        // Sockets no new pool took close now (a unix socket file goes too).
        drop(sockets);
        self.running = fresh;
        Ok(())
    }

    /// Asks every worker to stop (`SIGQUIT` waits for the request in
    /// progress, `SIGTERM` does not), to be killed after `grace`.
    /// No new worker from now on (a stop is coming).
    pub fn pause(&mut self) {
        self.paused = true;
    }

    pub fn stop_all(&mut self, sig: Signal, grace: Duration) {
        self.paused = true;
        for p in &mut self.running {
            retire(&mut p.children, sig, grace);
        }
        for d in &mut self.draining {
            retire(&mut d.children, sig, grace);
        }
    }

    pub fn signal_all(&self, sig: Signal) {
        let all = self.running.iter().flat_map(|p| &p.children);
        for c in all.chain(self.draining.iter().flat_map(|d| &d.children)) {
            let _ = kill(c.pid, sig);
        }
    }

    pub fn alive(&self) -> usize {
        self.running.iter().map(|p| p.children.len()).sum::<usize>()
            + self.draining.iter().map(|d| d.children.len()).sum::<usize>()
    }

    /// A pool worker ended; false if `pid` is not one.
    pub fn exited(&mut self, pid: Pid, abnormal: bool, how: &str) -> bool {
        for d in &mut self.draining {
            if let Some(i) = d.children.iter().position(|c| c.pid == pid) {
                let c = d.children.swap_remove(i);
                released(&d.shared.sb, &c);
                crate::notice!("[pool {}] old worker {pid} {how}", d.shared.cfg.name);
                self.draining.retain(|d| !d.children.is_empty());
                return true;
            }
        }
        let now = Instant::now();
        for p in &mut self.running {
            let Some(i) = p.children.iter().position(|c| c.pid == pid) else {
                continue;
            };
            let c = p.children.swap_remove(i);
            // Failures of its program it recorded just before it ended (a
            // `direct` worker ends with its program) count as the others.
            let late = p.shared.sb.failures(c.slot).saturating_sub(c.failures_seen).min(1000);
            released(&p.shared.sb, &c);
            for _ in 0..late {
                failed(p, now);
            }
            let name = &p.shared.cfg.name;
            let asked = c.deadline.is_some();
            if asked && !abnormal {
                crate::info!("[pool {name}] worker {pid} {how}");
            } else if abnormal && !asked {
                crate::warn!("[pool {name}] worker {pid} {how}");
            } else {
                crate::notice!("[pool {name}] worker {pid} {how}");
            }
            if asked {
                return true;
            }
            // Exited on its own: a recycle (max_requests, max_memory) or a crash.
            if p.shared.cfg.pm != Pm::Ondemand {
                p.owed += 1;
            }
            if abnormal {
                let lived = c.started.elapsed();
                p.failures = if lived < UNSTABLE { p.failures + 1 } else { 0 };
                if p.failures > 1 {
                    let delay = Duration::from_millis(100)
                        .saturating_mul(1 << (p.failures - 2).min(7))
                        .min(Duration::from_secs(10));
                    crate::warn!(
                        "[pool {name}] workers keep failing soon after they start ({} in a row); next start in {} ms",
                        p.failures,
                        delay.as_millis()
                    );
                    p.respawn_at = Some(now + delay);
                }
                failed(p, now);
            } else {
                p.failures = 0;
            }
            return true;
        }
        false
    }

    /// The next time a pool needs the master (a round, a respawn, a kill).
    pub fn next_due(&self) -> Option<Instant> {
        if self.running.is_empty() && self.draining.is_empty() {
            return None;
        }
        let round = self
            .last_round
            .map_or_else(Instant::now, |t| t + Duration::from_secs(1));
        let kills = self
            .running
            .iter()
            .flat_map(|p| &p.children)
            .chain(self.draining.iter().flat_map(|d| &d.children))
            .filter_map(|c| c.deadline);
        let respawns = self.running.iter().filter_map(|p| p.respawn_at);
        let slow = self.running.iter().filter_map(slow_due);
        std::iter::once(round).chain(kills).chain(respawns).chain(slow).min()
    }

    /// The slow log and the request_terminate_timeout safety net, after
    /// every wake-up of the master (`next_due` wakes it when a running
    /// request turns slow, not at the next round: php-fpm checks at a third
    /// of its shortest timeout).
    pub fn watch(&mut self) {
        for p in &mut self.running {
            watch_requests(p);
        }
    }

    /// Kills workers past their stop deadline.
    pub fn kill_overdue(&mut self) {
        let now = Instant::now();
        let all = self.running.iter_mut().flat_map(|p| p.children.iter_mut());
        for c in all.chain(self.draining.iter_mut().flat_map(|d| d.children.iter_mut())) {
            if c.deadline.is_some_and(|d| d <= now) {
                let who = format!("pool worker {}", c.pid);
                super::children::stop_overdue(c.pid, &who, &mut c.deadline, &mut c.termed, now);
            }
        }
    }

    /// A pm round when one is due (or `force`d by a waiting connection):
    /// the pools that need workers, with how many.
    pub fn round(&mut self, force: Option<usize>) -> Vec<(usize, usize)> {
        let now = Instant::now();
        if force.is_none()
            && self
                .last_round
                .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return Vec::new();
        }
        if force.is_none() {
            self.last_round = Some(now);
        }
        let mono = mono_us();
        let mut spawn = Vec::new();
        for (i, p) in self.running.iter_mut().enumerate() {
            if force.is_some_and(|f| f != i) {
                continue;
            }
            program_failures(p, now);
            let cfg = &p.shared.cfg;
            let sb = &p.shared.sb;
            let waiting = match listen_queue(&p.socket.sock) {
                Some((waiting, backlog)) => {
                    // A forced round runs because a connection just
                    // arrived (ondemand): often the one asking for the
                    // status page, which an idle pool would then always
                    // show as queued.
                    if force.is_none() {
                        sb.set_listen_queue(waiting as u64, backlog as u64);
                    }
                    waiting as usize
                }
                None => 0,
            };
            // Woken by a connection: at least that one waits.
            let waiting = if force.is_some() { waiting.max(1) } else { waiting };
            if self.paused {
                continue;
            }
            let d = manager::decide(cfg, sb, &mut p.pm, mono, waiting);
            if d.reached {
                sb.count_max_children_reached();
                crate::warn!(
                    "[pool {}] server reached pm.max_children setting ({}), consider raising it ({} connection(s) wait)",
                    cfg.name,
                    cfg.max_children,
                    waiting
                );
            }
            for slot in d.retire {
                if let Some(c) = p.children.iter_mut().find(|c| c.slot == slot && c.deadline.is_none()) {
                    c.deadline = Some(now + Duration::from_secs(30));
                    let _ = kill(c.pid, Signal::SIGQUIT);
                }
            }
            let room = cfg.max_children.saturating_sub(sb.counts().total);
            let owed = p.owed.min(room);
            p.owed = 0;
            let mut n = d.spawn.max(owed);
            if p.respawn_at.is_some_and(|t| t > now) {
                p.owed = n;
                n = 0;
            } else {
                p.respawn_at = None;
            }
            if n > 0 {
                spawn.push((i, n));
            }
        }
        spawn
    }

    /// Replacements owed to pools (workers that exited on their own), to
    /// start now: within `max_children`, unless a back-off after repeated
    /// failures holds them (the round starts them when it ends).
    pub fn owed_now(&mut self) -> Vec<(usize, usize)> {
        if self.paused {
            return Vec::new();
        }
        let now = Instant::now();
        let mut spawn = Vec::new();
        for (i, p) in self.running.iter_mut().enumerate() {
            if p.owed == 0 || p.respawn_at.is_some_and(|t| t > now) {
                continue;
            }
            p.respawn_at = None;
            let room = p.shared.cfg.max_children.saturating_sub(p.shared.sb.counts().total);
            let n = p.owed.min(room);
            p.owed = 0;
            if n > 0 {
                spawn.push((i, n));
            }
        }
        spawn
    }

    /// The pool's first workers after it opened (`start_servers` for
    /// dynamic, all for static, none for ondemand).
    pub fn initial(&self) -> Vec<(usize, usize)> {
        self.running
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let c = &p.shared.cfg;
                let total = p.shared.sb.counts().total;
                let want = match c.pm {
                    Pm::Static => c.max_children,
                    Pm::Dynamic => c.start_servers,
                    Pm::Ondemand => 0,
                };
                (i, want.saturating_sub(total))
            })
            .filter(|&(_, n)| n > 0)
            .collect()
    }

    pub fn started(&mut self, pool: usize, slot: usize, pid: Pid) {
        if let Some(p) = self.running.get_mut(pool) {
            p.shared.sb.set_pid(slot, pid.as_raw() as u32);
            p.children.push(PoolChild {
                pid,
                slot,
                started: Instant::now(),
                deadline: None,
                failures_seen: 0,
                termed: false,
            });
        }
    }

    /// Descriptors of every pool socket, so children can close the ones
    /// they have no business with.
    pub fn raw_fds(&self) -> Vec<RawFd> {
        self.running.iter().map(|p| p.socket.sock.as_raw_fd()).collect()
    }

    /// The `CORRAL_POOL_SOCKETS` value for a new binary; with `yes` the
    /// sockets survive exec.
    pub fn export(&self, yes: bool) -> String {
        let mut parts = Vec::new();
        for p in &self.running {
            let fd = p.socket.sock.as_raw_fd();
            let flags = if yes { FdFlag::empty() } else { FdFlag::FD_CLOEXEC };
            let _ = fcntl(fd, FcntlArg::F_SETFD(flags));
            parts.push(format!("{fd}@{}", p.socket.address));
        }
        parts.join(";")
    }

    /// After a hand-over to a new binary, this master must not remove the
    /// socket files the new one serves on.
    pub fn keep_socket_files(&mut self, keep: bool) {
        for p in &mut self.running {
            p.socket.unlink = !keep;
            p.socket.inherited_from = None;
        }
    }
}

/// The pool sockets a previous binary handed over, by address.
pub fn inherited() -> Vec<PoolSocket> {
    let mut out = Vec::new();
    let Ok(v) = std::env::var(INHERIT_ENV) else {
        return out;
    };
    for part in v.split(';').filter(|p| !p.is_empty()) {
        let Some((fd, addr)) = part.split_once('@') else {
            continue;
        };
        let Ok(fd) = fd.parse::<RawFd>() else { continue };
        if fd <= 2 || fcntl(fd, FcntlArg::F_GETFD).is_err() {
            continue;
        }
        let address = match addr.strip_prefix("unix:") {
            Some(p) => Address::Unix(p.into()),
            None => match addr.parse() {
                Ok(a) => Address::Tcp(a),
                Err(_) => continue,
            },
        };
        // SAFETY: the previous binary passed this descriptor to us at exec
        // for exactly this purpose; nothing else here owns it.
        let sock = unsafe { Socket::from_raw_fd(fd) };
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        let _ = sock.set_nonblocking(true);
        // The previous master may take over again (a rolled-back upgrade):
        // its socket file must outlive this process. A file left behind is
        // replaced at the next start.
        out.push(PoolSocket {
            address,
            sock,
            unlink: false,
            inherited_from: Some(nix::unistd::getppid()),
        });
    }
    // SAFETY: called by the master at start, before any other thread exists.
    unsafe { std::env::remove_var(INHERIT_ENV) };
    out
}

fn new_pool(cfg: Pool, socket: PoolSocket) -> Result<RunningPool, String> {
    let sb = Scoreboard::new(cfg.max_children)
        .map_err(|e| format!("cannot map the scoreboard of pool {}: {e}", cfg.name))?;
    Ok(new_pool_parts(Arc::new(Running { cfg, sb }), socket))
}

fn new_pool_parts(shared: Arc<Running>, socket: PoolSocket) -> RunningPool {
    RunningPool {
        shared,
        socket,
        children: Vec::new(),
        pm: PmState::default(),
        owed: 0,
        failures: 0,
        respawn_at: None,
        crashes: VecDeque::new(),
    }
}

/// A worker or its program failed (killed by a signal, an exit code not
/// 0): php-fpm's emergency restart when too many do within the interval.
fn failed(p: &mut RunningPool, now: Instant) {
    let cfg = &p.shared.cfg;
    if cfg.emergency_restart_threshold == 0 {
        return;
    }
    p.crashes.push_back(now);
    while p
        .crashes
        .front()
        .is_some_and(|t| now.duration_since(*t) > cfg.emergency_restart_interval)
    {
        p.crashes.pop_front();
    }
    if p.crashes.len() >= cfg.emergency_restart_threshold as usize {
        crate::error!(
            "[pool {}] failed processes threshold ({} in {} sec) is reached, initiating an emergency restart of the pool",
            cfg.name,
            p.crashes.len(),
            cfg.emergency_restart_interval.as_secs()
        );
        p.crashes.clear();
        let n = p.children.iter().filter(|c| c.deadline.is_none()).count();
        // As php-fpm's reload: each worker finishes the request it runs
        // (a healthy one is not cut), then is replaced.
        retire(&mut p.children, Signal::SIGQUIT, Duration::from_secs(30));
        p.owed += n;
    }
}

/// Programs that ended badly inside their workers since the last look
/// (a worker restarts its own program, so the master does not see them
/// exit), counted as failures.
fn program_failures(p: &mut RunningPool, now: Instant) {
    let mut new = 0;
    for c in &mut p.children {
        let n = p.shared.sb.failures(c.slot);
        new += n.saturating_sub(c.failures_seen).min(1000);
        c.failures_seen = n;
    }
    for _ in 0..new {
        failed(p, now);
    }
}

fn retire(children: &mut [PoolChild], sig: Signal, grace: Duration) {
    let deadline = Instant::now() + grace;
    for c in children {
        let _ = kill(c.pid, sig);
        c.deadline = Some(c.deadline.map_or(deadline, |d| d.min(deadline)));
    }
}

/// When the first running request of `p` not yet in the slow log turns slow.
fn slow_due(p: &RunningPool) -> Option<Instant> {
    let t = p.shared.cfg.request_slowlog_timeout?;
    let sb = &p.shared.sb;
    let now = Instant::now();
    let mono = mono_us();
    p.children
        .iter()
        .filter(|c| !sb.slow_marked(c.slot))
        .filter_map(|c| {
            let busy = sb.busy_for_us(c.slot)?;
            let due = now + t.saturating_sub(Duration::from_micros(busy));
            // Not before the slot's last entry is `t` old (see `mark_slow`).
            let last = sb.slow_logged_at(c.slot);
            let next = if last == 0 {
                now
            } else {
                now + Duration::from_micros(last.saturating_add(t.as_micros() as u64).saturating_sub(mono))
            };
            Some(due.max(next))
        })
        .min()
}

/// The slow log and the request_terminate_timeout safety net.
fn watch_requests(p: &mut RunningPool) {
    let cfg = &p.shared.cfg;
    let sb = &p.shared.sb;
    for c in &mut p.children {
        let Some(busy) = sb.busy_for_us(c.slot) else { continue };
        let busy = Duration::from_micros(busy);
        if let Some(t) = cfg.request_slowlog_timeout
            && busy >= t
            && sb.mark_slow(c.slot, mono_us(), t.as_micros() as u64)
        {
            sb.count_slow();
            let pr = sb.process(c.slot).unwrap_or_default();
            crate::warn!(
                "[pool {}] child {}, {} executing too slow ({:.1} sec), logging",
                cfg.name,
                c.pid,
                crate::pool::app::describe_parts(&pr.script, &pr.method, &pr.uri),
                busy.as_secs_f64()
            );
            if let Some(path) = &cfg.slowlog {
                use crate::core::log::Esc;
                let entry = format!(
                    "\n[{}]  [pool {}] pid {}\nscript_filename = {}\nrequest = {} {}\nduration = {:.3} s\n",
                    crate::core::clock::error_log_time(),
                    cfg.name,
                    c.pid,
                    Esc(pr.script.as_bytes()),
                    Esc(pr.method.as_bytes()),
                    Esc(pr.uri.as_bytes()),
                    busy.as_secs_f64()
                );
                // As root: never through a link planted where it goes.
                use std::os::unix::fs::OpenOptionsExt;
                let w = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .and_then(|mut f| f.write_all(entry.as_bytes()));
                if let Err(e) = w {
                    crate::error!("[pool {}] cannot write the slow log {}: {e}", cfg.name, path.display());
                }
            }
        }
        if let Some(t) = cfg.request_terminate_timeout
            && busy >= t + TERMINATE_GRACE
            && c.deadline.is_none()
        {
            crate::warn!(
                "[pool {}] worker {} still runs a request after {:.1} s (request_terminate_timeout), killing it",
                cfg.name,
                c.pid,
                busy.as_secs_f64()
            );
            sb.count_terminated();
            let _ = kill(c.pid, Signal::SIGKILL);
            c.deadline = Some(Instant::now());
        }
    }
}

/// Opens a pool's listening socket. A unix socket file left by a process
/// that is gone is replaced; one that still accepts is refused.
fn open_socket(cfg: &Pool) -> Result<PoolSocket, String> {
    let (sock, unlink) = match &cfg.listen {
        Address::Tcp(a) => {
            let s = crate::os::listen::open(*a, cfg.backlog, false)
                .map_err(|e| format!("pool {}: bind() to {a} failed: {e}", cfg.name))?;
            (s, false)
        }
        Address::Unix(path) => {
            if let Some(dir) = path.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                use std::os::unix::fs::FileTypeExt;
                if !meta.file_type().is_socket() {
                    return Err(format!(
                        "pool {}: {} exists and is not a socket",
                        cfg.name,
                        path.display()
                    ));
                }
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(format!(
                        "pool {}: {} is in use by another process",
                        cfg.name,
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(path);
            }
            let s = Socket::new(Domain::UNIX, Type::STREAM.cloexec(), None)
                .map_err(|e| format!("pool {}: socket() failed: {e}", cfg.name))?;
            let addr = SockAddr::unix(path).map_err(|e| format!("pool {}: {e}", cfg.name))?;
            s.bind(&addr)
                .map_err(|e| format!("pool {}: bind() to {} failed: {e}", cfg.name, path.display()))?;
            s.listen(cfg.backlog)
                .map_err(|e| format!("pool {}: listen() failed: {e}", cfg.name))?;
            s.set_nonblocking(true).map_err(|e| e.to_string())?;
            (s, true)
        }
    };
    Ok(PoolSocket {
        address: cfg.listen.clone(),
        sock,
        unlink,
        inherited_from: None,
    })
}

/// Owner, group and mode of a unix socket file.
fn set_owner(path: &std::path::Path, cfg: &Pool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if (cfg.listen_owner.is_some() || cfg.listen_group.is_some()) && nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::chown(path, cfg.listen_owner, cfg.listen_group)
            .map_err(|e| format!("pool {}: chown({}) failed: {e}", cfg.name, path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.listen_mode))
        .map_err(|e| format!("pool {}: chmod({}) failed: {e}", cfg.name, path.display()))
}

/// Closes a descriptor in a freshly forked child (the parent's copy stays).
pub fn close_in_child(fd: RawFd) {
    // SAFETY: the descriptor was inherited across fork; the objects that own
    // it in the parent's memory are never used or dropped in the child,
    // which leaves through process::exit.
    let s = unsafe { Socket::from_raw_fd(fd) };
    drop(s);
}

/// Connections waiting in a listening socket's accept queue, and its backlog.
fn listen_queue(s: &Socket) -> Option<(u32, u32)> {
    crate::os::listen_queue::read(s.as_fd()).map(|q| (q.waiting, q.backlog))
}

/// What a pool worker that exited leaves behind is cleaned up (its
/// program's directory, a CGI script it ran) and its slot freed.
fn released(sb: &crate::pool::scoreboard::Scoreboard, c: &PoolChild) {
    remove_program_dir(c.pid);
    kill_orphaned_script(sb, c.slot);
    sb.free(c.slot);
}

/// The CGI script a pool worker was running when it died (SIGKILL, a
/// crash): its group is killed, or it would run on, orphaned, past every
/// timeout. The worker records the pid until just before it reaps it, so
/// the pid is still the script's (or its zombie's).
fn kill_orphaned_script(sb: &crate::pool::scoreboard::Scoreboard, slot: usize) {
    let pid = sb.child(slot);
    // Only a process that leads its own group (as a script does), not a
    // pid a faulty worker wrote.
    let leads_its_group = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            st.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(2).map(|g| g == pid.to_string()))
                .unwrap_or(false)
        })
    };
    if pid > 1 && leads_its_group() {
        crate::warn!("killing the CGI script {pid} its pool worker left running");
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Removes the program directory of pool worker `pid`, which a worker
/// killed (SIGKILL) could not remove itself.
fn remove_program_dir(pid: Pid) {
    let _ = std::fs::remove_dir_all(crate::pool::app::program_dir(pid.as_raw() as u32));
}
