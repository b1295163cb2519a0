//! A pool worker process (php-fpm's child): accepts on its pool's socket,
//! serves one FastCGI request at a time with the app it owns, and records
//! each stage in its scoreboard slot. It stops after `max_requests`, past
//! `max_memory`, or when the master asks (SIGQUIT: after the request in
//! progress; SIGTERM: now).

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use socket2::Socket;

use super::app::{self, App, Outcome, Request, Stop};
use super::io::{Filled, RecordBuf, readable, wait};
use super::scoreboard::{Scoreboard, State};
use crate::config::pool::Pool;
use crate::fastcgi::codec::{self, ProtocolStatus, Record, Role};
use crate::os::{signals, title};

/// How long a new connection may take to send its request's params.
const FIRST_RECORD: Duration = Duration::from_secs(30);
/// How long a new connection may stay silent before it yields its worker
/// to another connection waiting on the pool socket.
const FIRST_GRACE: Duration = Duration::from_secs(1);
/// How long a kept connection must have been idle before it yields its
/// worker that way. Closing a kept connection races with the web server
/// sending on it (a lost request: nginx retries none that is not
/// idempotent); a web server reuses its recent connections within
/// microseconds, so only ones it left idle are given up.
const KEPT_GRACE: Duration = Duration::from_millis(100);
/// How long a kept connection may wait between requests (above the
/// upstream keepalive timeouts of nginx (60 s) and corral (2 s)).
const KEPT_IDLE: Duration = Duration::from_secs(120);

/// The most PARAMS bytes one request may send (a `direct` program's alike).
use super::watch::MAX_PARAMS;

/// The web server at the other end, for log lines ("unix" for a unix socket).
fn peer_of(conn: &Socket) -> String {
    match conn.peer_addr().ok().and_then(|a| a.as_socket()) {
        Some(a) => a.to_string(),
        None => "unix".to_string(),
    }
}

/// Everything a worker needs, handed over by the master after fork.
pub struct Spec<'a> {
    pub pool: &'a Pool,
    pub sb: &'a Scoreboard,
    pub slot: usize,
    pub listen: Socket,
    /// Where the program's stdout and stderr go (`catch_workers_output`).
    pub output: Option<crate::master::worker_output::Ends>,
}

struct Worker<'a> {
    pool: &'a Pool,
    sb: &'a Scoreboard,
    slot: usize,
    sigfd: &'a SignalFd,
    app: App,
    /// A `direct` pool's worker serving one request its program handed
    /// over (ping, status, a refused script): the slot is the program's.
    handed: bool,
    /// SIGQUIT came: stop after the request in progress.
    quit: bool,
    /// SIGTERM came: stop now.
    exit: bool,
}

/// Runs the worker; returns its exit code.
pub fn run(spec: Spec<'_>) -> i32 {
    let pool = spec.pool;
    title::set(&format!("corral: pool {}", pool.name));
    let sigfd = match signals::signal_fd_without_children() {
        Ok(fd) => fd,
        Err(e) => {
            crate::crit!("[pool {}] cannot set up signals: {e}", pool.name);
            return 2;
        }
    };
    if let Err(e) = prepare(pool) {
        crate::crit!("[pool {}] {e}", pool.name);
        return 2;
    }
    crate::os::privileges::pin(&pool.cpu_affinity, spec.slot, &format!("[pool {}]", pool.name));
    signals::die_with_parent(Signal::SIGTERM);
    if pool.direct {
        return super::direct::run(spec, &sigfd);
    }
    let claimed = spec.sb.claimed_at(spec.slot);
    let ready = super::scoreboard::mono_us();
    let mut app = App::new(pool, spec.output);
    if let Err(e) = app.start() {
        crate::crit!("[pool {}] cannot start the application: {e}", pool.name);
        return 2;
    }
    log_ready(pool, claimed, ready);
    let mut w = Worker {
        pool,
        sb: spec.sb,
        slot: spec.slot,
        sigfd: &sigfd,
        app,
        handed: false,
        quit: false,
        exit: false,
    };
    let code = w.serve(&spec.listen);
    w.app.stop();
    code
}

/// corral's own cost of a new worker (fork to accept), apart from its
/// program's spawn, which began at `spawn_began` (monotonic µs, as the
/// slot's `claimed`). bench/pools.sh reads this line.
pub(super) fn log_ready(pool: &Pool, claimed: u64, spawn_began: u64) {
    let now = super::scoreboard::mono_us();
    crate::info!(
        "[pool {}] worker {} ready to accept {} us after the master started it (program spawn {} us)",
        pool.name,
        std::process::id(),
        now.saturating_sub(claimed),
        now.saturating_sub(spawn_began)
    );
}

/// Whether `peer` may use the pool (`allowed_clients`); logged when not.
fn allowed(pool: &Pool, peer: &socket2::SockAddr) -> bool {
    if pool.allowed_clients.is_empty() {
        return true;
    }
    let ip = peer.as_socket().map(|a| a.ip());
    let ip = ip.map(|i| match i {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(i, std::net::IpAddr::V4),
        v4 => v4,
    });
    if ip.is_some_and(|i| pool.allowed_clients.contains(&i)) {
        return true;
    }
    crate::error!(
        "[pool {}] connection disallowed: IP address '{}' is not in allowed_clients",
        pool.name,
        ip.map_or("-".into(), |i| i.to_string())
    );
    false
}

/// Serves, for a `direct` pool's worker, a connection its program handed
/// over: `bytes` it read already (the request up to its params, maybe
/// more), `refused` a client not in `allowed_clients` (logged, closed).
/// One request, then the connection is closed as a php-fpm child does.
/// Returns the stops asked meanwhile (SIGQUIT, SIGTERM), for the caller.
pub(super) fn serve_handed(
    pool: &Pool,
    sb: &Scoreboard,
    slot: usize,
    sigfd: &SignalFd,
    conn: Socket,
    bytes: &[u8],
    refused: bool,
) -> (bool, bool) {
    if refused {
        if let Ok(peer) = conn.peer_addr() {
            allowed(pool, &peer);
        }
        return (false, false);
    }
    let _ = conn.set_nonblocking(true);
    let mut w = Worker {
        pool,
        sb,
        slot,
        sigfd,
        app: App::new(pool, None),
        handed: true,
        quit: false,
        exit: false,
    };
    let mut buf = RecordBuf::default();
    buf.preload(bytes);
    w.connection(&conn, None, buf);
    close_gracefully(&conn);
    (w.quit, w.exit)
}

/// How long a closing connection is drained for the web server to see
/// the close and close its side.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Ends a connection the way a php-fpm child does: shuts the writing side,
/// then reads and drops what comes until the web server closes (or
/// `CLOSE_DRAIN`). A web server that sent its next request on a kept
/// connection just as this worker left (max_requests, a reload, giving an
/// idle connection up) then finds it still read, not reset, and knows the
/// request did not run: corral's front sends it again on a new connection,
/// a POST too. Closed at once, the unread request would turn into a reset
/// the front cannot tell from a crash in the middle of it (then a 502).
fn close_gracefully(conn: &Socket) {
    if conn.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let until = Instant::now() + CLOSE_DRAIN;
    let mut scratch = [0u8; 4096];
    while Instant::now() < until {
        match wait(&[(conn.as_fd(), PollFlags::POLLIN)], Some(until)) {
            Ok(ev) if readable(ev[0]) => {}
            _ => return,
        }
        match std::io::Read::read(&mut &*conn, &mut scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Makes an answer that broke after it began look broken to the web
/// server, as a php-fpm child dying in it does (its connection resets): a
/// plain close after part of STDOUT would end the answer cleanly for
/// nginx, which then passes a truncated 200 on as complete. A TCP
/// connection is reset. A unix socket cannot be: there the record in
/// progress is finished (`rest`), then come the reason as FCGI_STDERR
/// (the web server's error log) and a record of no FastCGI version, which
/// every client takes for a broken upstream. corral's own HTTP workers
/// already take an answer with no END_REQUEST for a broken one.
pub(super) fn break_answer(conn: &Socket, id: u16, why: &str, rest: &[u8]) {
    if conn.local_addr().is_ok_and(|a| a.as_socket().is_some()) {
        let _ = conn.set_linger(Some(Duration::ZERO));
        return;
    }
    if from_our_http_worker(conn) {
        return;
    }
    let mut out = rest.to_vec();
    codec::stream(&mut out, codec::kind::STDERR, id, why.as_bytes());
    out.extend_from_slice(&[0, codec::kind::STDOUT, (id >> 8) as u8, id as u8, 0, 0, 0, 0]);
    let _ = app::blocking_write(conn, &out);
}

/// Whether the peer of unix socket `conn` is an HTTP worker of this
/// corral (a child of our master, which is not a pool worker).
fn from_our_http_worker(conn: &Socket) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    let Ok(cred) = getsockopt(conn, PeerCredentials) else {
        return false;
    };
    let pid = cred.pid();
    if pid <= 0 {
        return false;
    }
    // /proc/PID/stat: "pid (comm) state ppid ...", comm may hold spaces.
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let ppid = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|p| p.parse::<i32>().ok());
    let title = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    ppid == Some(nix::unistd::getppid().as_raw()) && title.starts_with(b"corral: worker process")
}

/// Limits, priority, directory and user, as the pool's config says.
fn prepare(pool: &Pool) -> Result<(), String> {
    use crate::os::privileges::{limit_or_go_on, set_priority};
    use nix::sys::resource::{RLIM_INFINITY, Resource};
    let who = format!("[pool {}] worker {}", pool.name, std::process::id());
    if let Some(n) = pool.rlimit_files {
        limit_or_go_on(Resource::RLIMIT_NOFILE, n, &who);
    }
    if let Some(core) = pool.rlimit_core {
        limit_or_go_on(Resource::RLIMIT_CORE, core.unwrap_or(RLIM_INFINITY), &who);
    }
    if let Some(p) = pool.priority {
        set_priority(p)?;
    }
    if let Some(c) = &pool.user {
        crate::os::privileges::drop_to(c)?;
    }
    if let Some(d) = &pool.chdir {
        std::env::set_current_dir(d).map_err(|e| format!("chdir({}) failed: {e}", d.display()))?;
    }
    Ok(())
}

impl Worker<'_> {
    fn on_signal(&mut self, s: Signal) {
        match s {
            Signal::SIGQUIT => self.quit = true,
            Signal::SIGTERM | Signal::SIGINT => self.exit = true,
            Signal::SIGUSR1 => {
                let _ = crate::core::log::reopen();
            }
            _ => {}
        }
    }

    fn signals(&mut self) {
        for s in signals::drain(self.sigfd) {
            self.on_signal(s);
        }
    }

    /// Waits (until `deadline`) for bytes from the web server or a signal,
    /// and reads what came; false when the connection is over.
    /// With `listen` (a connection idle past its grace), a connection
    /// waiting on the pool socket while no worker accepts ends the idle
    /// one: it must not starve other clients.
    fn read_more(&mut self, conn: &Socket, buf: &mut RecordBuf, deadline: Instant, listen: Option<&Socket>) -> bool {
        let mut fds = vec![
            (conn.as_fd(), PollFlags::POLLIN),
            (self.sigfd.as_fd(), PollFlags::POLLIN),
        ];
        if let Some(l) = listen {
            fds.push((l.as_fd(), PollFlags::POLLIN));
        }
        let Ok(ev) = wait(&fds, Some(deadline)) else {
            return false;
        };
        if readable(ev[1]) {
            self.signals();
        }
        let mut ready = readable(ev[0]);
        if !ready && ev.get(2).is_some_and(|e| readable(*e)) && self.sb.counts().accepting == 0 {
            // Last look: a request that came meanwhile is served, not lost.
            ready = wait(&[(conn.as_fd(), PollFlags::POLLIN)], Some(Instant::now())).is_ok_and(|e| readable(e[0]));
            if !ready {
                crate::debug!("[pool {}] a connection waits: closing an idle kept one", self.pool.name);
                return false;
            }
        }
        !ready || matches!(buf.fill(conn), Ok(Filled::Bytes | Filled::WouldBlock))
    }

    /// The accept loop.
    fn serve(&mut self, listen: &Socket) -> i32 {
        // Nonblocking (the flag is the socket's, shared: a `direct` pool
        // of an earlier generation may have made it blocking).
        let _ = listen.set_nonblocking(true);
        // EPOLLEXCLUSIVE: one idle worker wakes per connection, not all.
        let ep = match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
            Ok(e) => e,
            Err(e) => {
                crate::crit!("[pool {}] epoll_create failed: {e}", self.pool.name);
                return 2;
            }
        };
        let ok = ep
            .add(
                listen.as_fd(),
                EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, 0),
            )
            .and_then(|_| ep.add(self.sigfd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 1)));
        if let Err(e) = ok {
            crate::crit!("[pool {}] epoll_ctl failed: {e}", self.pool.name);
            return 2;
        }
        self.sb.set_state(self.slot, State::Idle);
        let mut events = [EpollEvent::empty(); 2];
        loop {
            if self.quit || self.exit {
                return 0;
            }
            let n = match ep.wait(&mut events, nix::sys::epoll::EpollTimeout::NONE) {
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    crate::crit!("[pool {}] epoll_wait failed: {e}", self.pool.name);
                    return 2;
                }
            };
            if events[..n].iter().any(|e| e.data() == 1) {
                self.signals();
                continue;
            }
            let (conn, peer) = match listen.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    crate::error!("[pool {}] accept() failed: {e}", self.pool.name);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    continue;
                }
            };
            if !allowed(self.pool, &peer) {
                continue;
            }
            // Not a request yet: a connection that says nothing is not timed
            // as one (slowlog, request_terminate_timeout).
            self.sb.set_state(self.slot, State::Kept);
            let (recycle, kept) = self.connection(&conn, Some(listen), RecordBuf::default());
            // Only a kept connection may carry a next request already.
            if kept && !self.exit {
                close_gracefully(&conn);
            }
            drop(conn);
            if self.exit || self.quit || recycle {
                return 0;
            }
            self.sb.set_state(self.slot, State::Idle);
        }
    }

    /// Serves one connection until it closes: whether the worker must be
    /// replaced now (max_requests, max_memory), and whether it ends between
    /// requests of a kept connection (the next one may be on its way).
    fn connection(&mut self, conn: &Socket, listen: Option<&Socket>, mut buf: RecordBuf) -> (bool, bool) {
        let mut first = true;
        // Between requests: wait for the next request, not forever (a client
        // that connects and says nothing, or only management records, must
        // not hold a worker). The time runs from the accept or the last
        // request, whatever comes meanwhile.
        let accepted = Instant::now();
        let mut idle_deadline = accepted + FIRST_RECORD;
        let mut yield_at = accepted + FIRST_GRACE;
        // corral's own HTTP workers retry a request on a fresh connection
        // when a kept one closes under it: theirs may be given up at once.
        // (Asked once a connection is kept, not for every one accepted.)
        let mut kept_grace: Option<Duration> = None;
        // The web server kept the connection (FCGI_KEEP_CONN) and its last
        // request was answered: a next one may be on its way.
        let mut kept = false;
        loop {
            let (rec_len, action) = loop {
                match buf.peek() {
                    Err(e) => {
                        crate::error!(
                            "[pool {}] bad FastCGI record from the web server {}: {e}",
                            self.pool.name,
                            peer_of(conn)
                        );
                        return (false, kept);
                    }
                    Ok(Some((rec, n))) => break (n, Between::from(rec)),
                    Ok(None) => {}
                }
                if buf.eof || self.exit || (self.quit && !first) {
                    return (false, kept);
                }
                if Instant::now() >= idle_deadline {
                    crate::info!(
                        "[pool {}] closing a connection that sent no request in time",
                        self.pool.name
                    );
                    return (false, kept);
                }
                // An idle connection gives its worker up to one that waits,
                // after a grace (a silent client otherwise holds it for
                // FIRST_RECORD, a kept one for KEPT_IDLE, while others queue).
                let (watch, until) = if Instant::now() >= yield_at {
                    (listen, idle_deadline)
                } else {
                    (None, idle_deadline.min(yield_at))
                };
                if !self.read_more(conn, &mut buf, until, watch) {
                    return (false, kept);
                }
            };
            buf.consume(rec_len);
            let mut out = Vec::new();
            match action {
                Between::GetValues(names) => {
                    let mut pairs = Vec::new();
                    for n in names {
                        match n.as_str() {
                            "FCGI_MAX_CONNS" | "FCGI_MAX_REQS" => pairs.push((n, "1")),
                            "FCGI_MPXS_CONNS" => pairs.push((n, "0")),
                            _ => {}
                        }
                    }
                    let refs: Vec<(&str, &str)> = pairs.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                    codec::get_values_result(&mut out, &refs);
                }
                Between::Unknown(k) => codec::unknown_type(&mut out, k),
                Between::Begin { id, role, keep } if role != Role::Responder => {
                    codec::end_request(&mut out, id, 0, ProtocolStatus::UnknownRole);
                    if app::blocking_write(conn, &out).is_err() || !keep {
                        return (false, kept);
                    }
                    continue;
                }
                Between::Begin { id, keep, .. } => {
                    first = false;
                    // A request that failed (its program died in it) ends
                    // the connection at once: drained, its close would tell
                    // corral's front the request never ran, and a POST
                    // would run again.
                    if !self.request(conn, &mut buf, id) || !keep || self.handed {
                        return (!self.handed && self.must_recycle(), false);
                    }
                    kept = true;
                    if self.must_recycle() {
                        return (true, kept);
                    }
                    self.mark(State::Kept);
                    idle_deadline = Instant::now() + KEPT_IDLE;
                    let grace = *kept_grace.get_or_insert_with(|| {
                        if from_our_http_worker(conn) {
                            Duration::ZERO
                        } else {
                            KEPT_GRACE
                        }
                    });
                    yield_at = Instant::now() + grace;
                    continue;
                }
                Between::Ignore => continue,
            }
            if app::blocking_write(conn, &out).is_err() {
                return (false, kept);
            }
        }
    }

    /// One request: its params, then the app (or the built-in ping and
    /// status answers). False when the connection cannot go on.
    fn request(&mut self, conn: &Socket, buf: &mut RecordBuf, id: u16) -> bool {
        self.mark(State::ReadingHeaders);
        let mut params = Vec::new();
        let deadline = Instant::now() + FIRST_RECORD;
        loop {
            let step = match buf.peek() {
                Err(_) => return false,
                Ok(Some((rec, n))) => Some((
                    n,
                    match rec {
                        Record::Params { id: i, data } if i == id => {
                            if data.is_empty() {
                                ParamStep::Done
                            } else {
                                params.extend_from_slice(data);
                                ParamStep::More
                            }
                        }
                        Record::AbortRequest { id: i } if i == id => ParamStep::Abort,
                        Record::BeginRequest { id: i, .. } if i != id => ParamStep::OtherBegin(i),
                        _ => ParamStep::More,
                    },
                )),
                Ok(None) => None,
            };
            match step {
                Some((n, s)) => {
                    buf.consume(n);
                    match s {
                        ParamStep::Done => break,
                        ParamStep::More => {}
                        ParamStep::Abort => {
                            let mut out = Vec::new();
                            codec::end_request(&mut out, id, 0, ProtocolStatus::RequestComplete);
                            return app::blocking_write(conn, &out).is_ok();
                        }
                        ParamStep::OtherBegin(other) => {
                            let mut out = Vec::new();
                            codec::end_request(&mut out, other, 0, ProtocolStatus::CantMpxConn);
                            if app::blocking_write(conn, &out).is_err() {
                                return false;
                            }
                        }
                    }
                    // A web server's params are its request head and a few
                    // dozen variables (nginx's stay under its header buffers):
                    // 1 MiB is far past any, and bounds what a worker holds.
                    if params.len() > MAX_PARAMS {
                        crate::error!(
                            "[pool {}] more than {} KiB of params from {}: closing",
                            self.pool.name,
                            MAX_PARAMS >> 10,
                            peer_of(conn)
                        );
                        return false;
                    }
                }
                None => {
                    if buf.eof || self.exit || Instant::now() >= deadline {
                        return false;
                    }
                    if !self.read_more(conn, buf, deadline, None) {
                        return false;
                    }
                }
            }
        }
        let Some(req) = Request::decode(id, params) else {
            crate::error!(
                "[pool {}] malformed params from the web server {}",
                self.pool.name,
                peer_of(conn)
            );
            return false;
        };
        let get = |n| req.param(n).unwrap_or("");
        let name = req.param("SCRIPT_NAME").unwrap_or("");
        let mut info = req.info();
        if !name.is_empty()
            && [&self.pool.ping_path, &self.pool.status_path]
                .iter()
                .any(|p| p.as_deref() == Some(name))
        {
            // A built-in answer runs no script (php-fpm shows "-").
            info.script = "-";
        }
        if self.handed {
            self.sb.count_accepted();
        } else {
            self.sb.begin_request(self.slot, &info);
        }
        let builtin = if !name.is_empty() && self.pool.ping_path.as_deref() == Some(name) {
            Some((
                "text/plain".to_string(),
                // As php-fpm: the response as configured, no newline added.
                self.pool.ping_response.clone().into_bytes(),
            ))
        } else if !name.is_empty() && self.pool.status_path.as_deref() == Some(name) {
            let view = super::status::PoolView {
                cfg: self.pool,
                sb: self.sb,
            };
            let (ct, body) = super::status::render_fpm(&view, get("QUERY_STRING"));
            Some((ct.to_string(), body))
        } else {
            None
        };
        let head_only = get("REQUEST_METHOD").eq_ignore_ascii_case("HEAD");
        let outcome = match builtin {
            Some((ct, body)) => self.builtin(conn, buf, id, &ct, &body, head_only),
            None => {
                let deadline = self.pool.request_terminate_timeout.map(|t| Instant::now() + t);
                let mut signals_seen = Vec::new();
                let (sb, slot) = (self.sb, self.slot);
                let mark = move |pid| sb.set_child(slot, pid);
                let r = self.app.serve(
                    &req,
                    conn,
                    buf,
                    self.sigfd,
                    deadline,
                    &mut |s| signals_seen.push(s),
                    &mark,
                );
                for s in signals_seen {
                    self.on_signal(s);
                }
                let failed = self.app.take_failures();
                if failed > 0 {
                    self.sb.add_failures(self.slot, failed);
                }
                match r {
                    Ok(o) => o,
                    Err(Stop::Exit(broken)) => {
                        self.exit = true;
                        match broken {
                            // An answer cut by the stop must not end cleanly.
                            Some(rest) => Outcome::Broken("the pool worker was told to stop now".into(), rest),
                            None => Outcome::CloseClient,
                        }
                    }
                }
            }
        };
        self.mark(State::Finishing);
        if std::mem::take(&mut self.app.terminated) {
            self.sb.count_terminated();
        }
        let (done, cpu_percent, memory) = match outcome {
            Outcome::Done { cpu_percent, memory } => (true, cpu_percent, memory),
            Outcome::CloseClient => (false, 0.0, 0),
            Outcome::Broken(why, rest) => {
                break_answer(conn, id, &why, &rest);
                (false, 0.0, 0)
            }
        };
        if !self.handed {
            self.sb.end_request(self.slot, cpu_percent, memory);
        }
        done
    }

    /// The worker's stage in its slot (not while it serves a request its
    /// `direct` program handed over: the slot tells of the program).
    fn mark(&self, st: State) {
        if !self.handed {
            self.sb.set_state(self.slot, st);
        }
    }

    /// A built-in answer (ping, status): the body is read and dropped first;
    /// a HEAD gets the head alone.
    fn builtin(
        &mut self,
        conn: &Socket,
        buf: &mut RecordBuf,
        id: u16,
        ct: &str,
        body: &[u8],
        head_only: bool,
    ) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match buf.peek() {
                Err(_) => return Outcome::CloseClient,
                Ok(Some((rec, n))) => {
                    let end = matches!(rec, Record::Stdin { id: i, data } if i == id && data.is_empty());
                    buf.consume(n);
                    if end {
                        break;
                    }
                }
                Ok(None) => {
                    if buf.eof || Instant::now() >= deadline || !self.read_more(conn, buf, deadline, None) {
                        return Outcome::CloseClient;
                    }
                }
            }
        }
        let mut page = format!(
            "Content-Type: {ct}\r\nExpires: Thu, 01 Jan 1970 00:00:00 GMT\r\nCache-Control: no-cache, no-store, must-revalidate, max-age=0\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            page.extend_from_slice(body);
        }
        app::answer(conn, id, &page)
    }

    /// `max_requests` reached or `max_memory` passed.
    fn must_recycle(&self) -> bool {
        let p = self.pool;
        let served = self.sb.requests(self.slot);
        if p.max_requests > 0 && served >= p.max_requests {
            crate::info!(
                "[pool {}] child {} served {served} requests (max_requests), exiting to be replaced",
                p.name,
                std::process::id()
            );
            return true;
        }
        if p.max_memory > 0 {
            let mut rss = app::rss(std::process::id());
            if let Some(pid) = self.app.pid() {
                rss += app::rss(pid);
            }
            if rss > p.max_memory {
                crate::notice!(
                    "[pool {}] child {} uses {} KiB, more than max_memory ({} KiB): exiting to be replaced",
                    p.name,
                    std::process::id(),
                    rss >> 10,
                    p.max_memory >> 10
                );
                return true;
            }
        }
        false
    }
}

/// A record between requests.
enum Between {
    GetValues(Vec<String>),
    Unknown(u8),
    Begin { id: u16, role: Role, keep: bool },
    Ignore,
}

impl From<Record<'_>> for Between {
    fn from(rec: Record<'_>) -> Between {
        match rec {
            Record::GetValues { data } => Between::GetValues(
                codec::Pairs::new(data)
                    .filter_map(Result::ok)
                    .map(|(n, _)| String::from_utf8_lossy(n).into_owned())
                    .collect(),
            ),
            Record::Unknown { kind, .. } => Between::Unknown(kind),
            Record::BeginRequest { id, role, keep_conn } => Between::Begin {
                id,
                role,
                keep: keep_conn,
            },
            _ => Between::Ignore,
        }
    }
}

enum ParamStep {
    Done,
    More,
    Abort,
    OtherBegin(u16),
}
