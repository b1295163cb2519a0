//! Run your own protocol under corral's process model.
//!
//! Implement [`Service`] for your protocol and hand a factory of it to a
//! [`Builder`]: you get what corral's HTTP server has, nginx's model —
//! a master process that opens the listening sockets and supervises
//! worker processes (respawned with back-off when they crash), each
//! running an epoll loop over a preallocated table of connections; the
//! accept modes of [`Accept`]; and nginx's signals:
//!
//! | signal | effect |
//! | --- | --- |
//! | `SIGTERM`, `SIGINT` | stop now |
//! | `SIGQUIT` | stop gracefully: workers stop accepting, [`Service::drain`] each connection, exit when none is left |
//! | `SIGHUP` | new workers (the factory is called again), old ones drain; no connection is refused |
//! | `SIGUSR2`, then `SIGWINCH`, `SIGQUIT` | binary upgrade: the program is started again and inherits the sockets |
//! | `SIGUSR1` | [`Service::reopen_logs`] |
//!
//! ```no_run
//! use std::io::{Read, Write};
//! use std::net::{SocketAddr, TcpStream};
//! use std::os::fd::{AsFd, BorrowedFd};
//! use corral::serve::{Builder, Io, Next, Ready, Service};
//!
//! struct Echo;
//!
//! impl Service for Echo {
//!     type Conn = TcpStream;
//!     fn fd(conn: &TcpStream) -> BorrowedFd<'_> {
//!         conn.as_fd()
//!     }
//!     fn open(&mut self, stream: TcpStream, _: SocketAddr, _: usize) -> TcpStream {
//!         stream
//!     }
//!     fn ready(&mut self, conn: &mut TcpStream, _: Ready, _: &mut Io<'_>) -> Next {
//!         let mut buf = [0u8; 4096];
//!         loop {
//!             match conn.read(&mut buf) {
//!                 Ok(0) => return Next::Close,
//!                 // A real service keeps what the peer cannot take yet.
//!                 Ok(n) => { if conn.write_all(&buf[..n]).is_err() { return Next::Close } }
//!                 Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Next::Idle,
//!                 Err(_) => return Next::Close,
//!             }
//!         }
//!     }
//! }
//!
//! let code = Builder::new("echo")
//!     .listen("127.0.0.1:7000".parse().unwrap())
//!     .workers(2)
//!     .run(|_worker| Echo);
//! std::process::exit(code);
//! ```
//!
//! Runnable examples are in the repository's `examples/`: an echo server
//! and a line-protocol key-value server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use crate::config::{Accept, Dispatch, EventMode};
pub use crate::event::{Io, Next, Ready, Reclaim, Service};

use crate::config::{Config, LogTarget};
use crate::master::program::{self, Program, WorkerStart};

/// Settings of the master and its workers; [`Builder::run`] starts them.
pub struct Builder {
    cfg: Config,
    name: String,
}

impl Builder {
    /// Defaults: one worker, 1024 connections per worker, `exclusive`
    /// accept, edge-triggered epoll, errors to stderr, the pid file
    /// `<temp dir>/<name>.pid`, 60 s for a graceful stop.
    pub fn new(name: &str) -> Builder {
        let mut cfg = crate::config::load_default();
        cfg.servers.clear();
        cfg.upstreams.clear();
        cfg.pools.clear();
        cfg.main.pid = std::env::temp_dir().join(format!("{name}.pid"));
        cfg.main.error_log = LogTarget::Stderr;
        Builder {
            cfg,
            name: name.to_string(),
        }
    }

    /// Adds an address to listen on (the service's `listener` numbers
    /// them in the order added).
    pub fn listen(mut self, addr: SocketAddr) -> Builder {
        if !self.cfg.service_listen.contains(&addr) {
            self.cfg.service_listen.push(addr);
        }
        self
    }

    /// How many worker processes (1..=512).
    pub fn workers(mut self, n: usize) -> Builder {
        self.cfg.main.workers = n.clamp(1, 512);
        self
    }

    /// Threads per worker sharing its epoll instance and connection table
    /// (1..=64); the factory is called once per thread.
    pub fn threads(mut self, n: usize) -> Builder {
        self.cfg.main.worker_threads = n.clamp(1, 64);
        self
    }

    /// Connections each worker serves at once.
    pub fn worker_connections(mut self, n: usize) -> Builder {
        self.cfg.main.worker_connections = n.max(8);
        self
    }

    /// How workers share the listening sockets.
    pub fn accept(mut self, mode: Accept) -> Builder {
        self.cfg.main.accept = mode;
        self
    }

    /// Which worker the master picks with [`Accept::Dispatch`].
    pub fn dispatch(mut self, policy: Dispatch) -> Builder {
        self.cfg.main.dispatch = policy;
        self
    }

    /// Edge- or level-triggered epoll.
    pub fn event_mode(mut self, mode: EventMode) -> Builder {
        self.cfg.main.event_mode = mode;
        self
    }

    /// Where the master writes its pid (and `.oldbin` during an upgrade).
    pub fn pid_file(mut self, path: impl Into<PathBuf>) -> Builder {
        self.cfg.main.pid = path.into();
        self
    }

    /// The error log file (default: stderr).
    pub fn error_log(mut self, path: impl Into<PathBuf>) -> Builder {
        let path = path.into();
        self.cfg.log_files.retain(|(_, at)| at != "error_log");
        self.cfg.log_files.push((path.clone(), "error_log".into()));
        self.cfg.main.error_log = LogTarget::File(path);
        self
    }

    /// How long a graceful stop waits before killing workers.
    pub fn shutdown_timeout(mut self, t: Duration) -> Builder {
        self.cfg.main.shutdown_timeout = t;
        self
    }

    /// Runs the master until it is stopped and returns the exit code.
    /// `factory` is called in each new worker process with the worker's
    /// number (0..workers) and builds its service (once per thread).
    pub fn run<S, F>(self, factory: F) -> i32
    where
        S: Service + Send,
        S::Conn: Send,
        F: Fn(usize) -> S + 'static,
    {
        let argv: Vec<String> = std::env::args().collect();
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from(&argv[0]));
        if self.cfg.service_listen.is_empty() {
            eprintln!("{}: [emerg] no address to listen on", self.name);
            return 1;
        }
        crate::master::run_program(self.cfg, crate::master::Launch { argv, exe }, Box::new(Custom(factory)))
    }
}

/// A library user's service as the workers' program.
struct Custom<F>(F);

impl<S, F> Program for Custom<F>
where
    S: Service + Send,
    S::Conn: Send,
    F: Fn(usize) -> S,
{
    fn worker(&self, cfg: &Config, w: WorkerStart) -> i32 {
        let services = (0..cfg.main.worker_threads).map(|_| (self.0)(w.slot)).collect();
        program::serve(cfg, w, services, |_, _| {})
    }

    fn reload(&self, current: &Config) -> Result<Config, String> {
        Ok(current.clone())
    }
}
