//! The master process: owns the config, the listening sockets and the pid
//! file, forks the workers and supervises them from its own small event
//! loop, where signals arrive as events through a signalfd. It never
//! serves a request.

mod children;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use socket2::Socket;

use crate::config::Config;
use crate::core::log;
use crate::os::{daemon, listen, pidfile, signals, title};
use children::Children;

/// How the master was started, for its process title.
pub struct Launch {
    pub argv: Vec<String>,
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
    listeners: Vec<Socket>,
    signals: Option<SignalFd>,
    children: Children,
    pid_path: PathBuf,
    stopping: Option<(Stop, Instant)>,
}

/// Runs the master until it is stopped; returns the process exit code.
pub fn run(cfg: Config, launch: Launch) -> i32 {
    if cfg.main.daemon
        && let Err(e) = daemon::daemonize()
    {
        eprintln!("corral: [emerg] cannot daemonize: {e}");
        return 1;
    }
    if let Err(e) = log::init(&cfg.main.error_log, cfg.main.log_level) {
        eprintln!("corral: [emerg] cannot open error log {:?}: {e}", cfg.main.error_log);
        return 1;
    }
    let logs_to_stderr = cfg.main.error_log == crate::config::LogTarget::Stderr;
    match start(cfg, launch) {
        Ok(mut m) => {
            let code = m.run_loop();
            pidfile::remove_if_ours(&m.pid_path, std::process::id());
            crate::notice!("exit");
            code
        }
        Err(msg) => {
            crate::crit!("{msg}");
            if !logs_to_stderr {
                eprintln!("corral: [emerg] {msg}");
            }
            1
        }
    }
}

fn start(cfg: Config, launch: Launch) -> Result<Master, String> {
    let pid_path = cfg.main.pid.clone();
    if let Some(pid) = pidfile::live_master(&pid_path) {
        return Err(format!(
            "pid file {} names a running corral master (pid {pid}); stop it first or use another pid file",
            pid_path.display()
        ));
    }
    let mut listeners = Vec::new();
    for addr in cfg.listen_addrs() {
        let sock = listen::open(addr, cfg.main.listen_backlog).map_err(|e| format!("bind() to {addr} failed: {e}"))?;
        listeners.push(sock);
    }
    let sigfd = signals::signal_fd().map_err(|e| format!("cannot set up signals: {e}"))?;
    pidfile::write(&pid_path, std::process::id())
        .map_err(|e| format!("cannot write pid file {}: {e}", pid_path.display()))?;
    title::set(&format!("corral: master process {}", launch.argv.join(" ")));
    crate::notice!(
        "corral/{} master started with {} (workers: {}, listening on {})",
        env!("CARGO_PKG_VERSION"),
        cfg.source(),
        cfg.main.workers,
        cfg.listen_addrs()
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let workers = cfg.main.workers;
    let mut m = Master {
        cfg,
        listeners,
        signals: Some(sigfd),
        children: Children::new(workers),
        pid_path,
        stopping: None,
    };
    for slot in 0..workers {
        m.spawn(slot);
    }
    Ok(m)
}

impl Master {
    fn spawn(&mut self, slot: usize) {
        // SAFETY: the master is single-threaded, so the child starts with
        // consistent heap and lock state; it never returns to this code.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let code = self.become_worker(slot);
                std::process::exit(code);
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                crate::notice!("start worker process {child} (#{slot})");
                self.children.started(slot, child);
            }
            Err(e) => {
                crate::crit!("fork() failed: {e}; retrying later");
                self.children.failed_to_start(slot);
            }
        }
    }

    /// Runs in the forked child: drop the master's handles, serve, exit.
    fn become_worker(&mut self, slot: usize) -> i32 {
        signals::die_with_parent(Signal::SIGTERM);
        drop(self.signals.take());
        title::set("corral: worker process");
        let sigfd = match signals::signal_fd() {
            Ok(fd) => fd,
            Err(e) => {
                crate::crit!("worker #{slot}: cannot set up signals: {e}");
                return 2;
            }
        };
        let listeners = std::mem::take(&mut self.listeners);
        match crate::http::worker(&self.cfg, listeners, crate::event::Signals { fd: sigfd }) {
            Ok(()) => 0,
            Err(e) => {
                crate::crit!("worker #{slot} failed: {e}");
                2
            }
        }
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
        let mut events = [EpollEvent::empty(); 8];
        loop {
            let timeout = self.next_timeout();
            match epoll.wait(&mut events, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    crate::crit!("epoll_wait failed: {e}");
                    return 1;
                }
            }
            for sig in signals::drain(&sigfd) {
                self.on_signal(sig);
            }
            self.reap();
            if let Some(code) = self.after_events() {
                return code;
            }
        }
    }

    fn next_timeout(&self) -> u16 {
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        if let Some(t) = self.children.next_respawn() {
            next = next.min(t);
        }
        if let Some((_, deadline)) = self.stopping {
            next = next.min(deadline);
        }
        next.saturating_duration_since(now).as_millis().clamp(1, 1000) as u16
    }

    fn on_signal(&mut self, sig: Signal) {
        match sig {
            Signal::SIGCHLD => {}
            Signal::SIGTERM | Signal::SIGINT => self.stop(Stop::Fast, sig),
            Signal::SIGQUIT => self.stop(Stop::Graceful, sig),
            Signal::SIGUSR1 => {
                crate::notice!("reopening logs");
                if let Err(e) = log::reopen() {
                    crate::error!("reopening the error log failed: {e}");
                }
                self.children.signal_all(Signal::SIGUSR1);
            }
            Signal::SIGHUP => {
                crate::warn!("SIGHUP received: reloading the configuration is not supported yet; ignored");
            }
            other => crate::info!("{other} ignored"),
        }
    }

    fn stop(&mut self, how: Stop, sig: Signal) {
        match (self.stopping, how) {
            (Some((Stop::Fast, _)), _) | (Some((Stop::Graceful, _)), Stop::Graceful) => return,
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
        self.stopping = Some((how, Instant::now() + grace));
        self.children.cancel_respawns();
        self.children.signal_all(wsig);
    }

    fn reap(&mut self) {
        for exit in self.children.reap() {
            if self.stopping.is_none() {
                self.children.schedule_respawn(exit.slot, exit.lived, exit.abnormal);
            }
        }
    }

    /// Respawns due workers; ends the master when stopping is complete.
    fn after_events(&mut self) -> Option<i32> {
        if let Some((_, deadline)) = self.stopping {
            if self.children.alive() == 0 {
                return Some(0);
            }
            if Instant::now() >= deadline {
                crate::warn!(
                    "{} worker(s) still running after the shutdown timeout, killing them",
                    self.children.alive()
                );
                self.children.signal_all(Signal::SIGKILL);
                self.stopping = Some((Stop::Fast, Instant::now() + Duration::from_secs(10)));
            }
            return None;
        }
        for slot in self.children.due_respawns() {
            self.spawn(slot);
        }
        None
    }
}
