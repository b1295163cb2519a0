//! The master process: owns the config, the listening sockets and the pid
//! file, forks the workers and supervises them from its own small event
//! loop, where signals arrive as events through a signalfd. It never
//! serves a request.
//!
//! Lifecycle: start -> serve; SIGHUP reloads (new generation of workers,
//! old one retired gracefully); SIGUSR2 starts a new binary that inherits
//! the listening sockets; SIGWINCH retires every worker (old master during
//! an upgrade); SIGQUIT / SIGTERM stop.

mod children;
mod dispatch;
mod listeners;
pub mod log_files;
pub mod pools;
pub(crate) mod program;
mod upgrade;
pub mod worker_output;

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use nix::unistd::Pid;

use crate::config::{self, Config, LogTarget};
use crate::core::log;
use crate::os::notify::{monotonic_usec, notify};
use crate::os::{daemon, pidfile, signals, title};
use children::{Children, Exit};
use listeners::Listeners;

/// How the master was started: for its process title and to start the
/// same command line again on a binary upgrade.
pub struct Launch {
    pub argv: Vec<String>,
    /// The executable, resolved at start (before an upgrade replaces it).
    pub exe: PathBuf,
}

/// Why the master is stopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// SIGQUIT: workers finish in-flight requests first.
    Graceful,
    /// SIGTERM / SIGINT: workers exit now.
    Fast,
}

/// How long a fast stop waits before SIGKILL.
const FAST_STOP_GRACE: Duration = Duration::from_secs(5);

pub struct Master {
    cfg: Config,
    launch: Launch,
    listeners: Listeners,
    signals: Option<SignalFd>,
    children: Children,
    generation: u32,
    /// The pid file in use: `<pid>.oldbin` while a new binary runs.
    pid_path: PathBuf,
    stopping: Option<Stop>,
    /// A graceful stop began then; its pools are stopped once the HTTP
    /// workers are gone (`pools_stopped`).
    stop_began: Option<Instant>,
    pools_stopped: bool,
    /// SIGWINCH retired every worker; no respawn until SIGHUP.
    winched: bool,
    /// Started with `daemon = true` (a daemon, or the new master of a
    /// daemon's upgrade): no terminal sends it SIGWINCH.
    daemonized: bool,
    /// The new master started by SIGUSR2, while it runs.
    upgrade: Option<Pid>,
    /// The current generation's shared state of client limits.
    zone: Option<crate::limit::Zone>,
    /// Application pools and their workers.
    pools: pools::Pools,
    /// The master's epoll (children close it) and the pool sockets it watches.
    epoll: Option<Epoll>,
    watched: Vec<RawFd>,
    /// What the workers run.
    program: Box<dyn program::Program>,
    /// `accept = "dispatch"`: the channels to the current workers, and the
    /// listening sockets the master's epoll watches for them.
    dispatcher: dispatch::Dispatcher,
    listening_watched: Vec<RawFd>,
    last_queue_check: Instant,
    /// Pool programs' stdout and stderr (`catch_workers_output`).
    outputs: worker_output::Outputs,
}

/// Master epoll tokens: 0 signals, 1.. pool sockets, from here listeners.
const LISTENER_TOKEN: u64 = 1 << 40;
/// From here: pipes of pool programs' output (`catch_workers_output`).
const OUTPUT_TOKEN: u64 = 1 << 48;

/// Runs the master until it is stopped; returns the process exit code.
pub fn run(cfg: Config, launch: Launch) -> i32 {
    run_program(cfg, launch, Box::new(program::Http))
}

/// [`run`] with workers that run `program`.
pub(crate) fn run_program(cfg: Config, launch: Launch, program: Box<dyn program::Program>) -> i32 {
    // A new binary started by a daemon's SIGUSR2 is detached already and
    // must stay the old master's child, which watches it (nginx alike).
    let upgrading = std::env::var_os(listeners::INHERIT_ENV).is_some();
    // Whatever the launcher left open must not reach workers and scripts.
    crate::os::fds::cloexec_inherited();
    // Before anything opens a descriptor that could be mistaken for one.
    let inherited = listeners::inherited();
    let inherited_pools = pools::inherited();
    if !upgrading && let Some(w) = log_files::lost_log_warning(&cfg) {
        // Said while stderr is still the terminal.
        eprintln!("corral: [warn] {w}");
    }
    if cfg.main.daemon
        && !upgrading
        && let Err(e) = daemon::daemonize()
    {
        let msg = format!("cannot daemonize: {e}");
        daemon::report_failure(&msg);
        eprintln!("corral: [emerg] {msg}");
        return 1;
    }
    if let Err(e) = log::init(&cfg.main.error_log, cfg.main.log_level) {
        let msg = format!("cannot open error_log {}: {e}", cfg.main.error_log);
        daemon::report_failure(&msg);
        eprintln!("corral: [emerg] {msg}");
        return 1;
    }
    let logs_to_stderr = cfg.main.error_log == LogTarget::Stderr;
    // Every worker, of this and later generations, derives the same TLS
    // session ticket keys from it.
    crate::tls::tickets::init();
    match start(cfg, launch, inherited, inherited_pools, program) {
        Ok(mut m) => {
            let code = m.run_loop();
            pidfile::remove_if_ours(&m.pid_path, std::process::id());
            crate::notice!("exit");
            code
        }
        Err(msg) => {
            crate::emerg!("{msg}");
            daemon::report_failure(&msg);
            if !logs_to_stderr {
                eprintln!("corral: [emerg] {msg}");
            }
            1
        }
    }
}

fn start(
    cfg: Config,
    launch: Launch,
    inherited: Vec<listeners::Inherited>,
    mut inherited_pools: Vec<pools::PoolSocket>,
    program: Box<dyn program::Program>,
) -> Result<Master, String> {
    let pid_path = cfg.main.pid.clone();
    if let Some(pid) = pidfile::live_master(&pid_path) {
        return Err(format!(
            "pid file {} names a running corral master (pid {pid}); stop it first or use another pid file",
            pid_path.display()
        ));
    }
    let mut pool = Vec::new();
    for i in inherited {
        crate::notice!("using {} {} for {}", i.from, i.sock.as_raw_fd(), i.addr);
        pool.push((i.addr, i.sock));
    }
    let listeners = Listeners::build(&cfg.listen_addrs(), cfg.main.listen_backlog, &mut pool, reuseport(&cfg))?;
    for (addr, _) in pool {
        crate::notice!("inherited socket for {addr} is not configured; closing it");
    }
    let app_pools = pools::Pools::open(&cfg.pools, &mut inherited_pools)?;
    for s in inherited_pools {
        crate::notice!("inherited socket for {} is not a pool's; closing it", s.address);
    }
    if cfg.main.user.is_some() && !nix::unistd::Uid::effective().is_root() {
        crate::warn!("\"user\" only takes effect when the master runs as root; workers keep this user");
    }
    log_files::open_all(&cfg, log_files::Owner::HandOver)?;
    let sigfd = signals::signal_fd().map_err(|e| format!("cannot set up signals: {e}"))?;
    // The title first: whoever reads the pid file finds the process named.
    title::set(&format!("corral: master process {}", launch.argv.join(" ")));
    pidfile::write(&pid_path, std::process::id())
        .map_err(|e| format!("cannot write pid file {}: {e}", pid_path.display()))?;
    // Listening, pid file written: `daemon = true`'s launching process may exit 0.
    daemon::report_ready();
    let serving = if cfg.servers.is_empty() {
        // Behind another web server: the pools are all there is.
        format!("no HTTP workers, pools: {}", pool_names(&cfg))
    } else {
        format!(
            "workers: {}, accept: {}, listening on {}",
            cfg.main.workers,
            accept_name(&cfg),
            join(&listeners.addrs())
        )
    };
    crate::notice!(
        "corral/{} master {} started with {} ({serving})",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        cfg.source(),
    );
    let daemonized = cfg.main.daemon;
    let mut m = Master {
        cfg,
        launch,
        listeners,
        signals: Some(sigfd),
        children: Children::default(),
        generation: 0,
        pid_path,
        stopping: None,
        stop_began: None,
        pools_stopped: false,
        winched: false,
        daemonized,
        upgrade: None,
        zone: None,
        pools: pools::Pools::default(),
        epoll: None,
        watched: Vec::new(),
        program,
        dispatcher: dispatch::Dispatcher::default(),
        listening_watched: Vec::new(),
        outputs: worker_output::Outputs::default(),
        last_queue_check: Instant::now(),
    };
    m.pools.start(app_pools);
    crate::pool::registry::set(m.pools.shared());
    // Pools first: the HTTP workers may pass requests to them at once.
    for (p, n) in m.pools.initial() {
        m.spawn_pool_workers(p, n);
    }
    m.start_generation();
    notify(&format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id()));
    Ok(m)
}

/// With `accept = "reuseport"`, how many sockets each address gets.
fn reuseport(cfg: &Config) -> Option<usize> {
    (cfg.main.accept == config::Accept::Reuseport).then_some(cfg.main.workers)
}

fn accept_name(cfg: &Config) -> &'static str {
    match cfg.main.accept {
        config::Accept::Exclusive => "exclusive",
        config::Accept::Reuseport => "reuseport",
        config::Accept::Dispatch if cfg.main.workers == 1 => "dispatch, one worker: it accepts itself",
        config::Accept::Dispatch => "dispatch",
    }
}

/// The pools' names, for the start and reload lines of a pools-only master.
fn pool_names(cfg: &Config) -> String {
    cfg.pools.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
}

fn join(addrs: &[std::net::SocketAddr]) -> String {
    addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
}

impl Master {
    /// Starts a new generation of `workers` workers with the current config.
    fn start_generation(&mut self) {
        self.generation += 1;
        // A fresh zone per generation: its workers' columns are its own.
        self.zone = None;
        if self.cfg.has_limits() {
            let bytes = self.cfg.http.limit_zone_size;
            match crate::limit::Zone::new(bytes, self.cfg.main.workers, self.cfg.limit_memory_ms()) {
                Ok(z) => self.zone = Some(z),
                Err(e) => crate::crit!("cannot map {bytes} bytes for limit_conn/limit_req: {e}; limits are off"),
            }
        }
        // Pools only (behind another web server): no HTTP workers.
        let n = if self.cfg.listen_addrs().is_empty() {
            0
        } else {
            self.cfg.main.workers
        };
        self.children.set_slots(n);
        // One worker leaves the master nothing to choose: it accepts itself
        // (as `exclusive`), without a master wake-up per burst of arrivals.
        let policy = (self.cfg.main.accept == config::Accept::Dispatch && n > 1).then_some(self.cfg.main.dispatch);
        self.dispatcher.new_generation(n, policy);
        for slot in 0..n {
            self.spawn(slot);
        }
    }

    /// Descriptors a child must not keep: the master's epoll and every
    /// pool socket but `keep`.
    fn close_master_fds(&mut self, keep: Option<RawFd>) {
        // The child's copy of the master's epoll closes; the master's stays.
        drop(self.epoll.take());
        self.dispatcher.close_in_child();
        self.outputs.close_in_child();
        for fd in self.pools.raw_fds() {
            if Some(fd) != keep {
                pools::close_in_child(fd);
            }
        }
    }

    /// Forks `n` workers of pool `p`.
    fn spawn_pool_workers(&mut self, p: usize, n: usize) {
        for _ in 0..n {
            let Some(pool) = self.pools.running.get(p) else { return };
            let Some(slot) = pool.shared.sb.claim() else { return };
            let keep = pool.socket.sock.as_raw_fd();
            let mut pipes = None;
            if pool.shared.cfg.catch_workers_output {
                match worker_output::Outputs::pipes() {
                    Ok(p) => pipes = Some(p),
                    Err(e) => crate::error!(
                        "[pool {}] pipe() failed: {e}; the next worker's output is not caught",
                        pool.shared.cfg.name
                    ),
                }
            }
            // SAFETY: the master is single-threaded, so the child starts with
            // consistent heap and lock state; it never returns to this code.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => {
                    drop(self.signals.take());
                    drop(self.listeners.take_sockets());
                    self.close_master_fds(Some(keep));
                    let output = pipes.map(|(_, _, ends)| ends);
                    let pool = &self.pools.running[p];
                    let shared = pool.shared.clone();
                    let code = match pool.socket.sock.try_clone() {
                        Ok(listen) => crate::pool::worker::run(crate::pool::worker::Spec {
                            pool: &shared.cfg,
                            sb: &shared.sb,
                            slot,
                            listen,
                            output,
                        }),
                        Err(e) => {
                            crate::crit!("[pool {}] cannot use the pool socket: {e}", shared.cfg.name);
                            2
                        }
                    };
                    std::process::exit(code);
                }
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    crate::info!("[pool {}] start worker {child}", pool.shared.cfg.name);
                    if let Some((out, err, _ends)) = pipes {
                        let name = pool.shared.cfg.name.clone();
                        self.outputs
                            .watch(self.epoll.as_ref(), OUTPUT_TOKEN, &name, child, out, err);
                    }
                    self.pools.started(p, slot, child);
                }
                Err(e) => {
                    crate::crit!("fork() failed: {e}; retrying later");
                    pool.shared.sb.free(slot);
                    return;
                }
            }
        }
    }

    /// Stops watching pool sockets (before a reload may close them).
    fn unwatch_pool_sockets(&mut self) {
        let Some(ep) = &self.epoll else { return };
        for fd in self.watched.drain(..) {
            // SAFETY: the descriptor is still open: pool sockets are
            // unwatched before a reload can close them; the borrow ends
            // with the call.
            let _ = ep.delete(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        }
    }

    /// Watches the sockets of `ondemand` pools for waiting connections.
    fn watch_pool_sockets(&mut self) {
        self.unwatch_pool_sockets();
        let Some(ep) = &self.epoll else { return };
        for (i, p) in self.pools.running.iter().enumerate() {
            if p.shared.cfg.pm != crate::config::pool::Pm::Ondemand {
                continue;
            }
            let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, 1 + i as u64);
            match ep.add(p.socket.sock.as_fd(), ev) {
                Ok(()) => self.watched.push(p.socket.sock.as_raw_fd()),
                Err(e) => crate::error!("[pool {}] cannot watch its socket: {e}", p.shared.cfg.name),
            }
        }
    }

    fn spawn(&mut self, slot: usize) {
        let told = match self.dispatcher.prepare(slot) {
            Ok(t) => t,
            Err(e) => {
                crate::crit!("socketpair() for worker #{slot} failed: {e}; retrying later");
                self.children.failed_to_start(slot);
                return;
            }
        };
        let front = crate::pool::registry::front_column(slot, self.generation);
        crate::pool::registry::clear_front(front);
        // SAFETY: the master is single-threaded, so the child starts with
        // consistent heap and lock state; it never returns to this code.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                crate::pool::registry::set_front(front);
                let code = self.become_worker(slot, told);
                std::process::exit(code);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                crate::notice!("start worker process {child} (#{slot}, generation {})", self.generation);
                self.children.started(slot, self.generation, child);
                self.dispatcher.started(slot, child);
                // Connections may have waited while no worker could take them.
                self.dispatcher.pending |= told.is_some();
            }
            Err(e) => {
                crate::crit!("fork() failed: {e}; retrying later");
                self.children.failed_to_start(slot);
                self.dispatcher.gone(slot, None);
            }
        }
    }

    /// Runs in the forked child: drop the master's handles, run the
    /// program on this worker's share of the listening sockets, exit.
    fn become_worker(&mut self, slot: usize, told: Option<crate::event::Told>) -> i32 {
        drop(self.signals.take());
        self.close_master_fds(None);
        title::set("corral: worker process");
        let sigfd = match signals::signal_fd() {
            Ok(fd) => fd,
            Err(e) => {
                crate::crit!("worker #{slot}: cannot set up signals: {e}");
                return 2;
            }
        };
        let listeners = self.listeners.share(self.cfg.main.accept, slot, self.cfg.main.workers);
        let start = program::WorkerStart {
            slot,
            listeners,
            accept: match told {
                Some(t) => crate::event::AcceptFrom::Told(t),
                None => crate::event::AcceptFrom::Watch,
            },
            signals: crate::event::Signals { fd: sigfd },
            zone: self.zone.take(),
        };
        self.program.worker(&self.cfg, start)
    }

    fn run_loop(&mut self) -> i32 {
        let epoll = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(e) => e,
            Err(e) => {
                crate::crit!("epoll_create failed: {e}");
                return 1;
            }
        };
        let Some(sigfd) = self.signals.take() else { return 1 };
        if let Err(e) = epoll.add(sigfd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0)) {
            crate::crit!("epoll_ctl failed: {e}");
            return 1;
        }
        self.signals = Some(sigfd);
        self.outputs.arm_all(&epoll);
        self.epoll = Some(epoll);
        self.watch_pool_sockets();
        self.watch_listening();
        let mut events = [EpollEvent::empty(); 8];
        loop {
            let timeout = self.next_timeout();
            let Some(ep) = &self.epoll else { return 1 };
            let n = match ep.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => {
                    crate::crit!("epoll_wait failed: {e}");
                    return 1;
                }
            };
            // Signals and children only when the signalfd fired (or on a
            // timeout, as a safety net): dispatch wakes this loop per burst
            // of connections, which must cost no more than it has to.
            if n == 0 || events[..n].iter().any(|e| e.data() == 0) {
                let sigs = self.signals.as_ref().map(signals::drain).unwrap_or_default();
                for sig in sigs {
                    self.on_signal(sig);
                }
                self.reap();
            }
            for ev in &events[..n] {
                if ev.data() >= OUTPUT_TOKEN {
                    self.outputs.readable(self.epoll.as_ref(), ev.data());
                    continue;
                }
                // Connections wait on a listening socket (dispatch mode).
                if ev.data() >= LISTENER_TOKEN {
                    self.dispatch_waiting(Some((ev.data() - LISTENER_TOKEN) as usize));
                    continue;
                }
                // A connection waits on an ondemand pool's socket.
                if ev.data() > 0 && self.stopping.is_none() {
                    let p = (ev.data() - 1) as usize;
                    for (i, k) in self.pools.round(Some(p)) {
                        self.spawn_pool_workers(i, k);
                    }
                }
            }
            if let Some(code) = self.after_events() {
                return code;
            }
        }
    }

    /// Dispatch mode: watches the listening sockets (edge-triggered: one
    /// event per burst of arrivals; the queue length says how many).
    fn watch_listening(&mut self) {
        self.unwatch_listening();
        if !self.dispatcher.active() || self.winched || self.stopping.is_some() {
            return;
        }
        let Some(ep) = &self.epoll else { return };
        for (i, sock) in self.listeners.iter().enumerate() {
            let ev = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLET, LISTENER_TOKEN + i as u64);
            match ep.add(sock.as_fd(), ev) {
                Ok(()) => self.listening_watched.push(sock.as_raw_fd()),
                Err(e) => crate::error!("cannot watch a listening socket: {e}"),
            }
        }
        // Connections queued before the edge was armed raise none.
        self.dispatcher.pending = true;
    }

    fn unwatch_listening(&mut self) {
        let Some(ep) = &self.epoll else {
            self.listening_watched.clear();
            return;
        };
        for fd in self.listening_watched.drain(..) {
            // SAFETY: the listeners are unwatched before a reload can close
            // them, so the descriptor is open; the borrow ends with the call.
            let _ = ep.delete(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        }
    }

    /// Tells workers to accept what waits on listening socket `which`
    /// (`None`: every one).
    fn dispatch_waiting(&mut self, which: Option<usize>) {
        if self.stopping.is_some() || self.winched {
            return;
        }
        for (i, sock) in self.listeners.iter().enumerate() {
            if which.is_some_and(|w| w != i) {
                continue;
            }
            let waiting = crate::os::listen_queue::read_tcp(sock.as_fd()).map_or(1, |q| q.waiting);
            if waiting == 0 {
                continue;
            }
            if !self.dispatcher.dispatch(i, waiting) {
                self.dispatcher.pending = true;
            }
        }
    }

    fn queue_check_interval(&self) -> Duration {
        if self.dispatcher.any_behind() {
            Duration::from_millis(50)
        } else {
            Duration::from_secs(1)
        }
    }

    fn next_timeout(&self) -> u16 {
        let now = Instant::now();
        let retry = if self.dispatcher.pending {
            Some(now + Duration::from_millis(5))
        } else if self.dispatcher.active() && !self.listening_watched.is_empty() {
            Some(self.last_queue_check + self.queue_check_interval())
        } else {
            None
        };
        let next = [self.children.next_due(), self.pools.next_due(), retry]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(now + Duration::from_secs(1));
        next.saturating_duration_since(now).as_millis().clamp(1, 1000) as u16
    }

    fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGTERM | Signal::SIGINT => self.stop(Stop::Fast, sig),
            Signal::SIGQUIT => self.stop(Stop::Graceful, sig),
            Signal::SIGUSR1 => {
                crate::notice!("reopening logs");
                if let Err(e) = log_files::open_all(&self.cfg, log_files::Owner::HandOver) {
                    crate::error!("{e}");
                }
                if let Err(e) = log::reopen() {
                    crate::error!("reopening the error log failed: {e}; its lines keep going to the file open before");
                }
                self.children.signal_all(Signal::SIGUSR1, None);
                self.pools.signal_all(Signal::SIGUSR1);
            }
            Signal::SIGHUP if self.stopping.is_none() => {
                if self.winched {
                    crate::notice!("SIGHUP received, starting workers again without re-reading the configuration");
                    self.winched = false;
                    self.start_generation();
                    self.watch_listening();
                    self.pools.paused = false;
                    for (p, n) in self.pools.initial() {
                        self.spawn_pool_workers(p, n);
                    }
                } else {
                    self.reload();
                }
            }
            Signal::SIGUSR2 if self.stopping.is_none() => self.start_upgrade(),
            // A terminal resize sends SIGWINCH to a foreground master: only
            // an upgrade's old master or a daemon (nginx's rule) retires its
            // workers on it.
            Signal::SIGWINCH if self.stopping.is_none() && self.upgrade.is_none() && !self.daemonized => {
                crate::notice!(
                    "SIGWINCH ignored: no binary upgrade in progress and not a daemon (a terminal resize sends it)"
                );
            }
            Signal::SIGWINCH if self.stopping.is_none() => {
                crate::notice!("SIGWINCH received, gracefully stopping worker processes");
                self.winched = true;
                self.unwatch_listening();
                self.children.cancel_respawns();
                self.generation += 1;
                self.children.set_slots(0);
                self.children
                    .retire_older(self.generation, Signal::SIGQUIT, self.cfg.main.shutdown_timeout);
                self.pools.stop_all(Signal::SIGQUIT, self.cfg.main.shutdown_timeout);
            }
            other => crate::info!("{other} ignored"),
        }
    }

    /// SIGHUP: re-read the config; start a new generation of workers with
    /// it and retire the old one, or keep everything as it is if it is bad.
    fn reload(&mut self) {
        notify(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
        let source = self.cfg.source();
        crate::notice!("SIGHUP received, reloading configuration from {source}");
        let new = match self.program.reload(&self.cfg) {
            Ok(c) => c,
            Err(e) => {
                crate::error!("reload refused, keeping the running configuration: {e}");
                notify("READY=1\nSTATUS=reload refused");
                return;
            }
        };
        if let Err(e) = log_files::open_all(&new, log_files::Owner::HandOver) {
            crate::error!("reload refused, keeping the running configuration: {e}");
            notify("READY=1\nSTATUS=reload refused");
            return;
        }
        // Pools first: a pool that cannot open refuses the reload untouched.
        self.unwatch_pool_sockets();
        if let Err(e) = self.pools.reload(&new.pools, self.cfg.main.shutdown_timeout) {
            crate::error!("reload refused, keeping the running configuration: {e}");
            self.watch_pool_sockets();
            notify("READY=1\nSTATUS=reload refused");
            return;
        }
        self.watch_pool_sockets();
        crate::pool::registry::set(self.pools.shared());
        self.unwatch_listening();
        let mut pool = std::mem::take(&mut self.listeners).into_pool();
        match Listeners::build(&new.listen_addrs(), new.main.listen_backlog, &mut pool, reuseport(&new)) {
            Ok(l) => {
                for (addr, _) in &pool {
                    crate::notice!("no longer listening on {addr}");
                }
                // The removed sockets close here; retiring workers close
                // their own copies when they stop accepting.
                drop(pool);
                self.listeners = l;
            }
            Err(e) => {
                crate::error!("reload refused, keeping the running configuration: {e}");
                self.listeners = Listeners::build(
                    &self.cfg.listen_addrs(),
                    self.cfg.main.listen_backlog,
                    &mut pool,
                    reuseport(&self.cfg),
                )
                .unwrap_or_default();
                self.watch_listening();
                notify("READY=1\nSTATUS=reload refused");
                return;
            }
        }
        if new.main.pid != self.cfg.main.pid {
            crate::warn!("a changed \"pid\" takes effect at the next start, not on reload");
        }
        if (new.main.error_log != self.cfg.main.error_log || new.main.log_level != self.cfg.main.log_level)
            && let Err(e) = log::init(&new.main.error_log, new.main.log_level)
        {
            crate::error!(
                "cannot open the new error_log {}: {e}; keeping the old one",
                new.main.error_log
            );
        }
        let mut new = new;
        new.main.pid = self.cfg.main.pid.clone();
        self.cfg = new;
        self.winched = false;
        self.pools.paused = false;
        self.start_generation();
        self.watch_listening();
        self.children
            .retire_older(self.generation, Signal::SIGQUIT, self.cfg.main.shutdown_timeout);
        for (p, n) in self.pools.initial() {
            self.spawn_pool_workers(p, n);
        }
        if self.cfg.servers.is_empty() {
            crate::notice!(
                "reload applied: generation {}, pools: {}",
                self.generation,
                pool_names(&self.cfg)
            );
        } else {
            crate::notice!(
                "reload applied: generation {} with {} worker(s), listening on {}",
                self.generation,
                self.cfg.main.workers,
                join(&self.listeners.addrs())
            );
        }
        notify("READY=1\nSTATUS=serving");
    }

    fn stop(&mut self, how: Stop, sig: Signal) {
        match (self.stopping, how) {
            (Some(Stop::Fast), _) | (Some(Stop::Graceful), Stop::Graceful) => return,
            _ => {}
        }
        let (wsig, grace, what) = match how {
            Stop::Graceful => (
                Signal::SIGQUIT,
                self.cfg.main.shutdown_timeout,
                "gracefully shutting down",
            ),
            Stop::Fast => (Signal::SIGTERM, FAST_STOP_GRACE, "shutting down"),
        };
        crate::notice!("{sig} received, {what}");
        notify("STOPPING=1");
        self.stopping = Some(how);
        self.unwatch_listening();
        // New clients are refused at once (nginx's
        // ngx_close_listening_sockets) rather than queued for no one: the
        // workers close their copies on SIGQUIT/SIGTERM, in-flight requests
        // go on. During an upgrade the other master holds its own copies,
        // so the sockets stay open for it; a reload never comes here.
        drop(self.listeners.take_sockets());
        self.children.cancel_respawns();
        self.children.signal_all(wsig, Some(grace));
        // A graceful stop lets the pools serve the HTTP workers' requests
        // in flight (some not yet accepted by a pool worker): the pools
        // stop when those workers are gone. A fast stop stops all now.
        self.stop_began.get_or_insert_with(Instant::now);
        if how == Stop::Fast {
            self.pools.stop_all(wsig, grace);
            self.pools_stopped = true;
        } else {
            // No new pool worker meanwhile.
            self.pools.pause();
        }
    }

    fn reap(&mut self) {
        for exit in self.children.reap() {
            match exit {
                Exit::Worker {
                    pid,
                    slot,
                    generation,
                    lived,
                    abnormal,
                } => {
                    if generation == self.generation
                        && let Some(z) = &self.zone
                    {
                        // Its requests in progress are over: uncount them.
                        z.clear_worker(slot);
                    }
                    crate::pool::registry::clear_front(crate::pool::registry::front_column(slot, generation));
                    if generation == self.generation {
                        self.dispatcher.gone(slot, Some(pid));
                    }
                    if self.stopping.is_none() && !self.winched && generation == self.generation {
                        self.children.schedule_respawn(slot, lived, abnormal);
                    }
                }
                Exit::Other { pid, how, .. } if Some(pid) == self.upgrade => self.upgrade_ended(pid, &how),
                Exit::Other { pid, how, abnormal } => {
                    if !self.pools.exited(pid, abnormal, &how) {
                        crate::info!("process {pid} {how}");
                    }
                }
            }
        }
    }

    /// Respawns due workers, kills overdue ones; ends the master when
    /// stopping is complete.
    fn after_events(&mut self) -> Option<i32> {
        self.children.kill_overdue();
        self.pools.kill_overdue();
        if self.stopping.is_some() {
            if !self.pools_stopped && self.children.alive() == 0 {
                self.pools_stopped = true;
                let spent = self.stop_began.map_or(Duration::ZERO, |t| t.elapsed());
                let grace = self
                    .cfg
                    .main
                    .shutdown_timeout
                    .saturating_sub(spent)
                    .max(Duration::from_secs(1));
                self.pools.stop_all(Signal::SIGQUIT, grace);
            }
            return (self.children.alive() == 0 && self.pools.alive() == 0).then_some(0);
        }
        for slot in self.children.due_respawns() {
            self.spawn(slot);
        }
        // Dispatch: connections that found no worker, and a look at the
        // queues in case a told worker died or stalls before accepting
        // (every 50 ms while one has not read its last message, else every
        // second).
        if self.dispatcher.active()
            && !self.listening_watched.is_empty()
            && (std::mem::take(&mut self.dispatcher.pending)
                || self.last_queue_check.elapsed() >= self.queue_check_interval())
        {
            self.last_queue_check = Instant::now();
            self.dispatch_waiting(None);
        }
        self.pools.watch();
        for (p, n) in self.pools.round(None) {
            self.spawn_pool_workers(p, n);
        }
        // A worker that left on its own (max_requests) is replaced now,
        // not at the next round: its pool is short of it meanwhile.
        for (p, n) in self.pools.owed_now() {
            self.spawn_pool_workers(p, n);
        }
        None
    }
}
