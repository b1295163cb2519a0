//! What a pool worker runs for a request: its own long-lived FastCGI
//! program (php-cgi, a libfcgi program) on a private socket, or a CGI
//! program per request (fcgiwrap's job). Either way one request is relayed
//! at a time: STDIN records from the web server go to the app as they
//! come, the app's output comes back as STDOUT/STDERR records, both ways
//! with bounded buffers so neither side can block the other.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use socket2::Socket;

use super::io::{Filled, Outbox, RecordBuf, readable, wait};
use super::scoreboard::RequestInfo;
use crate::config::pool::{App as AppCfg, Pool};
use crate::fastcgi::codec::{self, ProtocolStatus, Record, Role, kind};

/// Largest amount buffered toward either side before reading from the
/// other one pauses.
const BUFFERED: usize = 256 << 10;

/// How long a program may take to stop after its client left (PHP stops
/// at its next output; one that never writes again is restarted).
const ABORT_GRACE: Duration = Duration::from_secs(30);

/// How long the start of a request (BEGIN and PARAMS) or the last of its
/// body waits for the record that follows (the first STDIN record, the
/// empty one ending STDIN) to go with it to a FastCGI program. libfcgi
/// (C, Perl's FCGI) never reads the end of a STDIN it did not need (a
/// GET's, the rest after CONTENT_LENGTH bytes): arriving on its own after
/// the answer, it is taken for the next request's first record and the
/// program drops the connection. In the same write, it is read with the
/// rest. The web server normally sends them together; a client that
/// waits longer gets them relayed apart.
const HOLD: Duration = Duration::from_millis(50);

/// A request as the web server sent its head.
pub struct Request {
    pub id: u16,
    /// The raw PARAMS stream (name-value pairs).
    pub params: Vec<u8>,
    pub pairs: Vec<(String, String)>,
}

impl Request {
    /// Request `id` from its PARAMS stream; `None` if the pairs are malformed.
    pub fn decode(id: u16, params: Vec<u8>) -> Option<Request> {
        let mut pairs = Vec::new();
        for p in codec::Pairs::new(&params) {
            let (n, v) = p.ok()?;
            pairs.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ));
        }
        Some(Request { id, params, pairs })
    }

    /// A param's value; the last one when it comes more than once (php-cgi
    /// and libfcgi keep the last).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// A param's value as the bytes sent (the last one, as `param`).
    pub fn param_bytes(&self, name: &str) -> Option<&[u8]> {
        codec::Pairs::new(&self.params)
            .filter_map(Result::ok)
            .filter(|(n, _)| *n == name.as_bytes())
            .last()
            .map(|(_, v)| v)
    }

    /// What the scoreboard shows of it.
    pub fn info(&self) -> RequestInfo<'_> {
        RequestInfo {
            method: self.param("REQUEST_METHOD").unwrap_or(""),
            uri: self.param("REQUEST_URI").unwrap_or("-"),
            script: self
                .param("SCRIPT_FILENAME")
                .or(self.param("SCRIPT_NAME"))
                .unwrap_or("-"),
            user: self.param("REMOTE_USER").filter(|u| !u.is_empty()).unwrap_or("-"),
            content_length: self.param("CONTENT_LENGTH").unwrap_or("").parse().unwrap_or(0),
        }
    }
}

/// How a relayed request ended.
pub enum Outcome {
    /// Answered; the connection can serve another request.
    Done { cpu_percent: f64, memory: u64 },
    /// The web server's connection is unusable (gone, or an answer was
    /// cut), or the application failed before answering: then the
    /// connection ends without an answer, as when a php-fpm child dies,
    /// and the web server answers its own 502 (with its `error_page`),
    /// where an answer of ours would be passed on as the application's.
    CloseClient,
    /// The application failed after its answer had begun: the web server
    /// must see the answer broken, never a clean end (see
    /// `worker::break_answer`). The reason goes to its error log. With it,
    /// the rest of the record the web server was in the middle of (an
    /// answer cut between two writes): what follows must start at a
    /// record boundary.
    Broken(String, Vec<u8>),
}

/// Why the relay stopped early.
pub enum Stop {
    /// SIGTERM / SIGINT: exit now. With the rest of the record in progress
    /// when the answer had begun (see `Outcome::Broken`): it is broken off.
    Exit(Option<Vec<u8>>),
}

pub struct App {
    kind: Kind,
    pool_name: String,
    /// `limit_extensions`: what a FastCGI program's script may end with.
    limit_extensions: Vec<String>,
    /// The last request was killed past `request_terminate_timeout`.
    pub terminated: bool,
}

enum Kind {
    FastCgi(Box<Program>),
    Cgi {
        argv: Option<Vec<String>>,
        env: Vec<(String, String)>,
        clear_env: bool,
    },
}

/// A FastCGI program owned by the worker.
struct Program {
    argv: Vec<String>,
    env: Vec<(OsString, OsString)>,
    dir: PathBuf,
    child: Option<Child>,
    conn: Option<UnixStream>,
    /// The write ends of the master's pipes for the program's stdout and
    /// stderr (`catch_workers_output`); else they go to /dev/null.
    output: Option<crate::master::worker_output::Ends>,
    /// The program's CPU clock and its /proc statm, kept open: one
    /// syscall each per request instead of open, read, close.
    cpu_clock: Option<nix::time::ClockId>,
    statm: Option<std::fs::File>,
    /// What the program sent, kept between requests for its buffer.
    inbox: RecordBuf,
    /// `conn` served an earlier request (a failed first write retries).
    conn_reused: bool,
    /// The id of the last request sent: each request gets the next one, so
    /// late records of an earlier request (a program that wrote after its
    /// END_REQUEST) are told apart and never reach the next client.
    last_id: u16,
    /// The program sent a record of the request in progress.
    spoke: bool,
    /// The program sent what does not belong to the request in progress:
    /// its connection is closed after it (nothing on it can be trusted).
    suspect: bool,
    pool: String,
    started: Instant,
    /// Times the program ended badly on its own (a signal, an exit code
    /// not 0), not yet told to the master (emergency_restart_threshold).
    failures: u32,
}

/// `USER` and `HOME` of the pool's user, as php-fpm sets them (after
/// `clear_env`, so a program run as www-data never sees root's HOME).
fn user_env(pool: &Pool) -> Vec<(String, String)> {
    let Some(c) = &pool.user else { return Vec::new() };
    let mut env = vec![("USER".to_string(), c.name.clone())];
    if let Ok(Some(u)) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(c.uid)) {
        env.push(("HOME".to_string(), u.dir.to_string_lossy().into_owned()));
    }
    env
}

/// The environment of a pool's FastCGI program.
pub fn program_env(pool: &Pool) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = if pool.clear_env {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    // php-cgi exits after 500 requests by default: the pool's
    // max_requests decides instead.
    env.push(("PHP_FCGI_MAX_REQUESTS".into(), "0".into()));
    env.retain(|(k, _)| k != "PHP_FCGI_CHILDREN");
    let user = user_env(pool);
    if !user.is_empty() {
        env.retain(|(k, _)| k != "USER" && k != "HOME");
    }
    env.extend(user.into_iter().map(|(k, v)| (k.into(), v.into())));
    env.extend(pool.env.iter().map(|(k, v)| (k.into(), v.into())));
    env
}

/// A pool's FastCGI program to start: `listen` as its descriptor 0 (the
/// FastCGI convention), `env` only, a process group of its own, its stdout
/// and stderr to the master's pipes (`catch_workers_output`, clones: a
/// restarted program gets the same) or /dev/null.
pub fn program_command(
    argv: &[String],
    env: &[(OsString, OsString)],
    listen: OwnedFd,
    output: Option<&crate::master::worker_output::Ends>,
) -> Result<Command, String> {
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::from(listen))
        .process_group(0);
    match output {
        Some(o) => {
            let out = o.stdout.try_clone().map_err(|e| format!("dup(): {e}"))?;
            let err = o.stderr.try_clone().map_err(|e| format!("dup(): {e}"))?;
            cmd.stdout(Stdio::from(out)).stderr(Stdio::from(err));
        }
        None => {
            cmd.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    Ok(cmd)
}

impl App {
    pub fn new(pool: &Pool, output: Option<crate::master::worker_output::Ends>) -> App {
        let kind = match &pool.app {
            AppCfg::FastCgi { argv } => {
                let env = program_env(pool);
                let dir = program_dir(std::process::id());
                Kind::FastCgi(Box::new(Program {
                    argv: argv.clone(),
                    env,
                    dir,
                    child: None,
                    conn: None,
                    output,
                    cpu_clock: None,
                    statm: None,
                    inbox: RecordBuf::default(),
                    conn_reused: false,
                    last_id: 0,
                    spoke: false,
                    suspect: false,
                    pool: pool.name.clone(),
                    started: Instant::now(),
                    failures: 0,
                }))
            }
            AppCfg::Cgi { argv } => Kind::Cgi {
                argv: argv.clone(),
                env: user_env(pool).into_iter().chain(pool.env.iter().cloned()).collect(),
                clear_env: pool.clear_env,
            },
        };
        App {
            kind,
            pool_name: pool.name.clone(),
            limit_extensions: pool.limit_extensions.clone(),
            terminated: false,
        }
    }

    /// Starts a FastCGI program now (so the first request does not wait for it).
    pub fn start(&mut self) -> Result<(), String> {
        match &mut self.kind {
            Kind::FastCgi(p) => p.start(),
            Kind::Cgi { .. } => Ok(()),
        }
    }

    /// The program's pid, when one runs.
    pub fn pid(&self) -> Option<u32> {
        match &self.kind {
            Kind::FastCgi(p) => p.child.as_ref().map(Child::id),
            Kind::Cgi { .. } => None,
        }
    }

    /// Times the program ended badly since the last call.
    pub fn take_failures(&mut self) -> u32 {
        match &mut self.kind {
            Kind::FastCgi(p) => std::mem::take(&mut p.failures),
            Kind::Cgi { .. } => 0,
        }
    }

    pub fn stop(&mut self) {
        if let Kind::FastCgi(p) = &mut self.kind {
            p.stop();
        }
    }

    /// Relays `req` to the app and its answer back to `client`.
    #[allow(clippy::too_many_arguments)]
    pub fn serve(
        &mut self,
        req: &Request,
        client: &Socket,
        cbuf: &mut RecordBuf,
        sigfd: &nix::sys::signalfd::SignalFd,
        deadline: Option<Instant>,
        on_signal: &mut dyn FnMut(Signal),
        mark_child: &dyn Fn(i32),
    ) -> Result<Outcome, Stop> {
        let started = Instant::now();
        if let Some(denied) = self.denied_script(req) {
            crate::warn!(
                "[pool {}] access to the script '{}' has been denied (see limit_extensions), {}",
                self.pool_name,
                crate::core::log::Text(denied.as_bytes()),
                describe(req)
            );
            let note = format!("Access to the script '{denied}' has been denied (see limit_extensions)");
            return Ok(answer_noted(
                client,
                req.id,
                b"Status: 403 Forbidden\r\nContent-Type: text/html\r\n\r\nAccess denied.\n",
                note.as_bytes(),
            ));
        }
        let mut peer = match open(&mut self.kind, req, mark_child) {
            Ok(p) => p,
            Err(e) => {
                crate::error!(
                    "[pool {}] cannot start the app for {}: {e}",
                    self.pool_name,
                    describe(req)
                );
                // No answer of ours (see `Outcome::CloseClient`).
                return Ok(Outcome::CloseClient);
            }
        };
        let cpu_before = peer.cpu_ns();
        let mut to_app = Outbox::default();
        let mut to_client = Outbox::default();
        if let Peer::FastCgi { id, .. } = peer {
            codec::begin_request(&mut to_app.buf, id, Role::Responder, true);
            codec::params(&mut to_app.buf, id, &req.params);
            codec::end_stream(&mut to_app.buf, kind::PARAMS, id);
        }
        let mut stdin_done = false;
        // Body bytes relayed, against the CONTENT_LENGTH announced.
        let body_len: Option<u64> = req.param("CONTENT_LENGTH").and_then(|v| v.trim().parse().ok());
        let mut stdin_got: u64 = 0;
        // What was sent to a FastCGI program on a kept connection, while
        // small: sent again on a fresh one if the program closed the kept
        // one before answering (see `closed_unanswered`).
        let idempotent = matches!(
            req.param("REQUEST_METHOD").unwrap_or("GET"),
            "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE"
        );
        let mut replay: Option<Vec<u8>> = match &peer {
            Peer::FastCgi { program, .. } if program.conn_reused => Some(to_app.buf.clone()),
            _ => None,
        };
        let mut hold_until: Option<Instant> = None;
        let mut hold_for: u8 = 0;
        let mut client_gone = false;
        let mut head_sent = false;
        let mut ended: Option<u32> = None;
        let mut aborted = false;
        let mut gone_handled = false;
        // The program was told to abort: php-cgi ends such a connection,
        // so the next request gets a fresh one.
        let mut app_aborted = false;
        // Then its connection was closed: its writes fail (EPIPE), which is
        // how PHP learns its client left (it ignores FCGI_ABORT_REQUEST) and
        // stops the script at its next output, as under php-fpm. A fresh
        // connection asking FCGI_GET_VALUES is answered (or closed) once
        // the program accepts again, i.e. is done. Bounded by `give_up`.
        let mut app_shut = false;
        let mut give_up: Option<Instant> = None;
        // The client sent its next request (the same id, after this one's
        // body) before this answer: it stays buffered for the next turn,
        // and nothing more is read meanwhile.
        let mut next_waiting = false;
        loop {
            if ended.is_some() && to_client.pending() == 0 {
                break;
            }
            if client_gone && ended.is_some() {
                break;
            }
            // The web server's records, read earlier or just now.
            if !client_gone && !next_waiting {
                loop {
                    let (taken, next) = match cbuf.peek() {
                        Ok(Some((rec, n))) => (n, Some(classify(rec, req.id))),
                        Ok(None) => (0, None),
                        Err(_) => {
                            client_gone = true;
                            (0, None)
                        }
                    };
                    let Some(next) = next else { break };
                    match next {
                        FromClient::Stdin(range) => {
                            let data = &cbuf.raw()[range];
                            if stdin_done {
                            } else if data.is_empty() {
                                stdin_done = true;
                                let from = to_app.buf.len();
                                peer.stdin_end(&mut to_app);
                                keep_for_replay(&mut replay, &to_app.buf[from..]);
                            } else {
                                stdin_got += data.len() as u64;
                                let from = to_app.buf.len();
                                peer.stdin(&mut to_app, data);
                                keep_for_replay(&mut replay, &to_app.buf[from..]);
                            }
                        }
                        FromClient::Abort => {
                            aborted = true;
                            client_gone = true;
                        }
                        FromClient::OtherBegin(id) => {
                            codec::end_request(&mut to_client.buf, id, 0, ProtocolStatus::CantMpxConn);
                        }
                        FromClient::SameBegin if stdin_done => {
                            next_waiting = true;
                            break;
                        }
                        FromClient::SameBegin | FromClient::Ignore => {}
                    }
                    cbuf.consume(taken);
                }
            }
            if client_gone && !gone_handled && ended.is_none() {
                // Nobody waits for the answer (an ABORT, or the web server
                // closed): a CGI child is stopped; a FastCGI program is told
                // to abort — which also ends its input — and drained.
                gone_handled = true;
                match &mut peer {
                    Peer::Cgi { .. } => {
                        peer.kill();
                        return Ok(if aborted {
                            let mut out = Vec::new();
                            codec::end_request(&mut out, req.id, 0, ProtocolStatus::RequestComplete);
                            let _ = blocking_write(client, &out);
                            Outcome::Done {
                                cpu_percent: 0.0,
                                memory: 0,
                            }
                        } else {
                            Outcome::CloseClient
                        });
                    }
                    Peer::FastCgi { id, .. } => {
                        codec::abort_request(&mut to_app.buf, *id);
                        app_aborted = true;
                    }
                }
            }
            // See HOLD: the head until STDIN starts, a complete body until
            // STDIN's end record, for a short while.
            let holding = matches!(peer, Peer::FastCgi { .. })
                && !stdin_done
                && !client_gone
                && (stdin_got == 0 || body_len.is_some_and(|n| stdin_got >= n))
                && to_app.pending() < BUFFERED;
            // (A new wait for each: the head's, then the whole body's.)
            let holding = if holding {
                // 1: the head waits for STDIN; 2: the whole body for its end.
                let phase = if stdin_got == 0 { 1 } else { 2 };
                if hold_for != phase {
                    hold_for = phase;
                    hold_until = None;
                }
                Instant::now() < *hold_until.get_or_insert_with(|| Instant::now() + HOLD)
            } else {
                hold_until = None;
                false
            };
            // Write first, poll only for what would block: a request and
            // its answer then cost one wait each.
            if to_app.pending() > 0
                && !holding
                && let Err(e) = peer.flush_app(&mut to_app)
            {
                crate::error!(
                    "[pool {}] cannot send the request to the application: {e}",
                    self.pool_name
                );
                // No answer of ours (see `Outcome::CloseClient`).
                peer.kill();
                return Ok(Outcome::CloseClient);
            }
            if !client_gone && to_client.pending() > 0 && to_client.flush(client).is_err() {
                client_gone = true;
            }
            if app_aborted
                && !app_shut
                && to_app.pending() == 0
                && let Peer::FastCgi { program, .. } = &mut peer
            {
                program.conn = None;
                let probe = program.connect().and_then(|()| {
                    let mut q = Vec::new();
                    codec::get_values(&mut q, &["FCGI_MPXS_CONNS"]);
                    match &program.conn {
                        // A few bytes into a fresh socket: they fit at once.
                        Some(c) => std::io::Write::write_all(&mut &*c, &q).map_err(|e| e.to_string()),
                        None => Err("no connection".into()),
                    }
                });
                if probe.is_err() {
                    // Nothing to wait on: the program is restarted next time.
                    program.stop();
                    break;
                }
                app_shut = true;
                give_up = Some(Instant::now() + ABORT_GRACE);
            }
            // A CGI child sees the end of its input as soon as the body is
            // written (a script may read to EOF before it prints a line).
            if stdin_done && to_app.pending() == 0 {
                peer.close_stdin();
            }
            if ended.is_some() && to_client.pending() == 0 {
                continue;
            }
            // The client went (an abort, a failed write) after the answer
            // ended: nothing is left to wait for (the poll below would have
            // neither the client nor the program, and no deadline).
            if client_gone && ended.is_some() {
                break;
            }
            // What to wait for.
            let mut fds = Vec::with_capacity(5);
            let mut cev = PollFlags::empty();
            if !client_gone && !next_waiting && to_app.pending() < BUFFERED {
                cev |= PollFlags::POLLIN;
            }
            if !client_gone && to_client.pending() > 0 {
                cev |= PollFlags::POLLOUT;
            }
            // A gone client stays out of the set (its POLLHUP would be
            // reported whatever is asked: a spin); the signalfd with no
            // events holds its place.
            fds.push((if client_gone { sigfd.as_fd() } else { client.as_fd() }, cev));
            fds.push((sigfd.as_fd(), PollFlags::POLLIN));
            // A gone client's answer is dropped, never waited on: a full
            // buffer for it must not stop the program's side being heard
            // (the end of an aborted request, the probe's answer).
            if client_gone {
                to_client.buf.clear();
                to_client.sent = 0;
            }
            let app_in = ended.is_none() && to_client.pending() < BUFFERED;
            let app_out = to_app.pending() > 0 && !holding;
            // Once the answer ended the program is not heard any more: a
            // program that closes its connection after END_REQUEST would
            // report a hang-up (even with no events asked) while the
            // answer still drains to the web server.
            if ended.is_none() {
                peer.poll_fds(&mut fds, app_in, app_out);
            }
            let wake = deadline
                .into_iter()
                .chain(give_up)
                .chain(hold_until.filter(|_| holding))
                .min();
            let ev = match wait(&fds, wake) {
                Ok(ev) => ev,
                Err(e) => {
                    crate::error!("[pool {}] poll failed: {e}", self.pool_name);
                    peer.kill();
                    return Ok(Outcome::CloseClient);
                }
            };
            if deadline.is_some_and(|d| Instant::now() >= d) {
                let secs = started.elapsed().as_secs_f64();
                crate::warn!(
                    "[pool {}] child {}, {} execution timed out ({secs:.1} sec), terminating",
                    self.pool_name,
                    std::process::id(),
                    describe(req)
                );
                peer.kill();
                self.terminated = true;
                return Ok(cut_short(
                    client,
                    req.id,
                    head_sent.then(|| to_client.rest_of_record()),
                    504,
                    "the request ran past request_terminate_timeout",
                ));
            }
            if give_up.is_some_and(|t| Instant::now() >= t) && ended.is_none() {
                crate::warn!(
                    "[pool {}] child {}, {}: the program did not stop within {}s of its client leaving, restarting it",
                    self.pool_name,
                    std::process::id(),
                    describe(req),
                    ABORT_GRACE.as_secs()
                );
                peer.kill();
                return Ok(Outcome::CloseClient);
            }
            if readable(ev[1]) {
                for s in crate::os::signals::drain(sigfd) {
                    if matches!(s, Signal::SIGTERM | Signal::SIGINT) {
                        peer.kill();
                        return Err(Stop::Exit(head_sent.then(|| to_client.rest_of_record())));
                    }
                    on_signal(s);
                }
            }
            // The web server's side.
            if !client_gone && readable(ev[0]) {
                match cbuf.fill(client) {
                    Ok(Filled::Eof) | Err(_) => client_gone = true,
                    Ok(_) => {}
                }
            }
            // (What became writable is written at the top of the loop.)
            // The app's side.
            if app_shut {
                // The program's answer to the probe (or its close): done.
                if ev.get(2).is_some_and(|e| readable(*e)) {
                    ended = Some(0);
                }
                continue;
            }
            if ended.is_some() {
                continue;
            }
            match peer.pump(&ev[2..], &mut to_client, req.id, &mut head_sent) {
                Ok(Some(status)) => ended = Some(status),
                Ok(None) => {}
                Err(_)
                    if !head_sent
                        && to_client.buf.is_empty()
                        && let Some(bytes) = replay.take()
                        && let Peer::FastCgi { program, .. } = &mut peer
                        && !program.spoke
                        && program.closed_unanswered(idempotent) =>
                {
                    crate::info!(
                        "[pool {}] child {}: the program closed its kept connection before answering {}; sent again on a new one",
                        self.pool_name,
                        std::process::id(),
                        describe(req)
                    );
                    if let Err(e) = program.connect() {
                        crate::error!("[pool {}] cannot reconnect to the program: {e}", self.pool_name);
                        peer.kill();
                        return Ok(Outcome::CloseClient);
                    }
                    program.inbox.reset();
                    to_app.buf = bytes;
                    to_app.sent = 0;
                }
                Err(e) => {
                    crate::error!(
                        "[pool {}] the application failed during {}: {e}",
                        self.pool_name,
                        describe(req)
                    );
                    peer.kill();
                    // No answer of ours (see `Outcome::CloseClient`).
                    return Ok(if head_sent {
                        Outcome::Broken(
                            format!("the application failed during {}", describe(req)),
                            to_client.rest_of_record(),
                        )
                    } else {
                        Outcome::CloseClient
                    });
                }
            }
        }
        if let Peer::FastCgi { program, .. } = &mut peer
            && (app_aborted || program.suspect)
        {
            if program.suspect {
                crate::warn!(
                    "[pool {}] child {}: the program sent records of another request or after its END_REQUEST during {}; its connection is closed",
                    self.pool_name,
                    std::process::id(),
                    describe(req)
                );
            }
            program.conn = None;
        }
        if client_gone && !aborted {
            return Ok(Outcome::CloseClient);
        }
        if aborted {
            let mut out = Vec::new();
            codec::end_request(&mut out, req.id, ended.unwrap_or(0), ProtocolStatus::RequestComplete);
            if blocking_write(client, &out).is_err() {
                return Ok(Outcome::CloseClient);
            }
        }
        let secs = started.elapsed().as_secs_f64().max(1e-6);
        let cpu = peer.cpu_ns().saturating_sub(cpu_before);
        let cpu_percent = cpu as f64 / 1e9 / secs * 100.0;
        let memory = peer.memory();
        Ok(Outcome::Done { cpu_percent, memory })
    }
}

/// The private directory of the program of pool worker `pid` (its socket).
pub fn program_dir(pid: u32) -> PathBuf {
    std::env::temp_dir().join(format!("corral-app.{pid}"))
}

/// Most of a request kept to be sent again (see `replay` in `serve`).
const REPLAY_MAX: usize = 64 << 10;

/// Adds `bytes` to the copy kept for a replay, or drops the copy once the
/// request is larger than `REPLAY_MAX`.
fn keep_for_replay(replay: &mut Option<Vec<u8>>, bytes: &[u8]) {
    if let Some(r) = replay {
        if r.len() + bytes.len() > REPLAY_MAX {
            *replay = None;
        } else {
            r.extend_from_slice(bytes);
        }
    }
}

impl App {
    /// The file a FastCGI program would run for `req` when its ending is
    /// not one of `limit_extensions` (php-fpm's security.limit_extensions).
    /// With php's `cgi.fix_pathinfo` (on by default) the script is the
    /// longest leading part of SCRIPT_FILENAME that is a file: for
    /// `/up/evil.jpg/x.php`, `/up/evil.jpg`, an upload run as PHP.
    fn denied_script(&self, req: &Request) -> Option<String> {
        let path = req
            .param_bytes("SCRIPT_FILENAME")
            .filter(|p| !p.is_empty())
            .or_else(|| req.param_bytes("PATH_TRANSLATED"))?;
        super::script_check::denied(path, &self.limit_extensions).map(|p| String::from_utf8_lossy(p).into_owned())
    }
}

/// The peer for one request: the owned program's connection, or a CGI child.
/// `mark` is told a CGI script's pid when it starts and 0 just before it
/// is reaped (see `Peer::Cgi::mark`).
fn open<'k>(kind: &'k mut Kind, req: &Request, mark: &'k dyn Fn(i32)) -> Result<Peer<'k>, String> {
    match kind {
        Kind::FastCgi(p) => {
            p.ensure_running()?;
            if p.conn.is_none() {
                p.connect()?;
            } else {
                p.conn_reused = true;
            }
            // The buffer stays with the program: no 64 KiB allocation per request.
            p.inbox.reset();
            p.suspect = false;
            p.spoke = false;
            p.last_id = p.last_id.checked_add(1).unwrap_or(1);
            let id = p.last_id;
            Ok(Peer::FastCgi { program: p, id })
        }
        Kind::Cgi { argv, env, clear_env } => {
            use std::ffi::CString;
            use std::os::unix::ffi::OsStrExt;
            let (program, args) = match argv {
                Some(a) => (a[0].clone(), a[1..].to_vec()),
                None => {
                    let f = req
                        .param("SCRIPT_FILENAME")
                        .filter(|f| !f.is_empty())
                        .ok_or("no SCRIPT_FILENAME parameter")?;
                    (f.to_string(), Vec::new())
                }
            };
            let cstr = |b: &[u8]| CString::new(b).map_err(|_| format!("{program}: a NUL byte in its command"));
            // The environment: the worker's (unless clear_env), the pool's
            // `env`, then the params as sent (values that are not UTF-8 pass
            // unchanged); a later value of a name replaces an earlier one.
            let mut vars: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            let mut set = |k: &[u8], v: &[u8]| match vars.iter_mut().find(|(n, _)| n == k) {
                Some(slot) => slot.1 = v.to_vec(),
                None => vars.push((k.to_vec(), v.to_vec())),
            };
            if !*clear_env {
                for (k, v) in std::env::vars_os() {
                    set(k.as_bytes(), v.as_bytes());
                }
            }
            for (k, v) in env.iter() {
                set(k.as_bytes(), v.as_bytes());
            }
            for (k, v) in codec::Pairs::new(&req.params).flatten() {
                if !k.is_empty() && !k.contains(&b'=') && !k.contains(&0) && !v.contains(&0) {
                    set(k, v);
                }
            }
            let envp = vars
                .into_iter()
                .filter_map(|(mut k, v)| {
                    k.push(b'=');
                    k.extend_from_slice(&v);
                    CString::new(k).ok()
                })
                .collect();
            let mut argv_c = vec![cstr(program.as_bytes())?];
            for a in &args {
                argv_c.push(cstr(a.as_bytes())?);
            }
            let cwd = std::path::Path::new(&program)
                .parent()
                .filter(|d| d.is_dir())
                .and_then(|d| CString::new(d.as_os_str().as_bytes()).ok());
            let pipe = |ours_reads| crate::os::spawn::child_pipe(ours_reads).map_err(|e| format!("pipe: {e}"));
            let (in_w, in_r) = pipe(false)?;
            let (out_r, out_w) = pipe(true)?;
            let (err_r, err_w) = pipe(true)?;
            // posix_spawn with an empty signal mask and default dispositions
            // (the worker blocks its signals for its signalfd and ignores
            // SIGPIPE: neither may reach a script), in its own group.
            let pid = crate::os::spawn::spawn_now(crate::os::spawn::Job {
                id: 0,
                program: cstr(program.as_bytes())?,
                argv: argv_c,
                envp,
                cwd,
                stdin: Some(in_r),
                stdout: out_w,
                stderr: err_w,
            })
            .map_err(|e| format!("{program}: {}", io::Error::from(e)))?;
            mark(pid);
            let stdin = Some(ChildStdin::from(in_w));
            let stdout = Some(ChildStdout::from(out_r));
            let stderr = Some(ChildStderr::from(err_r));
            Ok(Peer::Cgi {
                pid,
                mark,
                stdin,
                stdout,
                stderr,
                out: RecordBuf::default(),
                err: RecordBuf::default(),
                rusage: None,
            })
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Program {
    fn start(&mut self) -> Result<(), String> {
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| format!("cannot create {}: {e}", self.dir.display()))?;
        let path = self.dir.join("app.sock");
        let l = UnixListener::bind(&path).map_err(|e| format!("cannot bind {}: {e}", path.display()))?;
        let mut cmd = program_command(&self.argv, &self.env, OwnedFd::from(l), self.output.as_ref())?;
        // SAFETY: the closure only calls prctl, sigprocmask and rt_sigaction,
        // which are async-signal-safe, between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                // The program dies with its worker, even on SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // Not the worker's blocked and ignored signals: a program
                // must stop on SIGTERM.
                crate::os::spawn::reset_signals_in_child()
            });
        }
        let child = cmd.spawn().map_err(|e| format!("{}: {e}", self.argv[0]))?;
        let pid = Pid::from_raw(child.id() as i32);
        self.cpu_clock = nix::time::ClockId::pid_cpu_clock_id(pid).ok();
        self.statm = std::fs::File::open(format!("/proc/{pid}/statm")).ok();
        self.child = Some(child);
        self.conn = None;
        self.started = Instant::now();
        Ok(())
    }

    /// A fresh connection to the program.
    fn connect(&mut self) -> Result<(), String> {
        let s = UnixStream::connect(self.dir.join("app.sock")).map_err(|e| format!("connect: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        self.conn = Some(s);
        self.conn_reused = false;
        Ok(())
    }

    /// The kept connection turned out closed before it took a byte of
    /// this request (php-cgi ends one it saw an abort on; a program that
    /// restarted): a fresh one, with the program restarted if it died.
    fn reconnect(&mut self) -> io::Result<()> {
        self.conn = None;
        self.ensure_running().map_err(io::Error::other)?;
        self.connect().map_err(io::Error::other)
    }

    /// Whether the kept connection the program just closed, having sent
    /// nothing for the request on it, can take the request again on a new
    /// one: the program is still running (it refused the connection's
    /// next record, as libfcgi does with an unread end of an earlier
    /// request's STDIN), not dead in the middle of it. A dying process
    /// closes its descriptors just before it can be reaped: a short wait
    /// tells the two apart.
    ///
    /// A program of several processes (PHP_FCGI_CHILDREN, a forking
    /// server) stays alive when the child running the request dies in it:
    /// then only a method that may run twice (`idempotent`) is sent again.
    fn closed_unanswered(&mut self, idempotent: bool) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        std::thread::sleep(Duration::from_millis(10));
        if !matches!(child.try_wait(), Ok(None)) {
            return false;
        }
        let pid = child.id();
        idempotent
            || std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).is_ok_and(|c| c.trim().is_empty())
    }

    /// Starts the program again if it is not running (never started,
    /// exited, killed).
    fn ensure_running(&mut self) -> Result<(), String> {
        if self.child.as_mut().is_none_or(|c| !matches!(c.try_wait(), Ok(None))) {
            self.stop();
            self.start()?;
        }
        Ok(())
    }

    fn stop(&mut self) {
        self.conn = None;
        self.cpu_clock = None;
        self.statm = None;
        if let Some(mut c) = self.child.take() {
            // Ended on its own, or killed here (its own end if it was
            // already dying: a SIGKILL does not change that).
            let own = c.try_wait().ok().flatten();
            let status = own.or_else(|| {
                let _ = killpg(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
                c.wait().ok()
            });
            if let Some(st) = status {
                self.note_end(c.id(), st, own.is_some());
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    fn note_end(&mut self, pid: u32, st: std::process::ExitStatus, on_its_own: bool) {
        if note_end(&self.pool, pid, st, on_its_own, self.started) {
            self.failures += 1;
        }
    }
}

/// Logs a program that ended badly, in php-fpm's words (the line its
/// users grep for); true when it counts as a failure.
pub fn note_end(pool: &str, pid: u32, st: std::process::ExitStatus, on_its_own: bool, started: Instant) -> bool {
    use std::os::unix::process::ExitStatusExt;
    let how = match (st.signal(), st.code()) {
        (Some(libc::SIGKILL), _) if !on_its_own => return false,
        (Some(sig), _) => {
            let name = Signal::try_from(sig).map_or("?", Signal::as_str);
            format!(
                "exited on signal {sig} ({name}{})",
                if st.core_dumped() { " - core dumped" } else { "" }
            )
        }
        (None, Some(0)) | (None, None) => return false,
        (None, Some(code)) => format!("exited with code {code}"),
    };
    crate::warn!(
        "[pool {pool}] child {pid} {how} after {:.6} seconds from start",
        started.elapsed().as_secs_f64()
    );
    true
}

use std::os::unix::fs::DirBuilderExt;

/// One request's other end.
enum Peer<'a> {
    FastCgi {
        program: &'a mut Program,
        /// This request's id toward the program.
        id: u16,
    },
    Cgi {
        pid: i32,
        /// Records the running script's pid in the worker's scoreboard
        /// slot, so the master can kill its group if the worker is killed
        /// (it would be orphaned, past request_terminate_timeout); 0 is
        /// recorded before the reap, while the pid is still the script's.
        mark: &'a dyn Fn(i32),
        stdin: Option<ChildStdin>,
        stdout: Option<ChildStdout>,
        stderr: Option<ChildStderr>,
        out: RecordBuf,
        err: RecordBuf,
        rusage: Option<Box<libc::rusage>>,
    },
}

impl Peer<'_> {
    /// Adds the app's descriptors to the poll set (after the client and signalfd).
    fn poll_fds<'f>(&'f self, fds: &mut Vec<(std::os::fd::BorrowedFd<'f>, PollFlags)>, app_in: bool, app_out: bool) {
        match self {
            Peer::FastCgi { program, .. } => {
                if let Some(c) = &program.conn {
                    let mut ev = PollFlags::empty();
                    if app_in {
                        ev |= PollFlags::POLLIN;
                    }
                    if app_out {
                        ev |= PollFlags::POLLOUT;
                    }
                    fds.push((c.as_fd(), ev));
                }
            }
            Peer::Cgi {
                stdin, stdout, stderr, ..
            } => {
                let flag = |on: bool, f: PollFlags| if on { f } else { PollFlags::empty() };
                // Fixed positions: stdin, stdout, stderr (absent ones skipped by index).
                if let Some(s) = stdin {
                    fds.push((s.as_fd(), flag(app_out, PollFlags::POLLOUT)));
                }
                if let Some(s) = stdout {
                    fds.push((s.as_fd(), flag(app_in, PollFlags::POLLIN)));
                }
                if let Some(s) = stderr {
                    fds.push((s.as_fd(), flag(app_in, PollFlags::POLLIN)));
                }
            }
        }
    }

    /// Writes what the app takes now. A CGI script that does not read its
    /// body is within its rights: the rest is dropped.
    fn flush_app(&mut self, to_app: &mut Outbox) -> io::Result<()> {
        match self {
            Peer::FastCgi { program, .. } => {
                let Some(c) = &program.conn else {
                    return Err(io::Error::other("no connection to the program"));
                };
                match to_app.flush(c) {
                    Err(e)
                        if program.conn_reused
                            && to_app.sent == 0
                            && matches!(e.kind(), io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset) =>
                    {
                        program.reconnect()?;
                        let c = program.conn.as_ref().expect("connected");
                        to_app.flush(c).map(drop)
                    }
                    r => r.map(drop),
                }
            }
            Peer::Cgi { stdin: Some(s), .. } => {
                if to_app.flush(&*s).is_err() {
                    to_app.buf.clear();
                    to_app.sent = 0;
                }
                Ok(())
            }
            Peer::Cgi { .. } => {
                to_app.buf.clear();
                to_app.sent = 0;
                Ok(())
            }
        }
    }

    fn stdin(&mut self, to_app: &mut Outbox, data: &[u8]) {
        match self {
            Peer::FastCgi { id, .. } => codec::stream(&mut to_app.buf, kind::STDIN, *id, data),
            Peer::Cgi { .. } => to_app.buf.extend_from_slice(data),
        }
    }

    fn stdin_end(&mut self, to_app: &mut Outbox) {
        if let Peer::FastCgi { id, .. } = self {
            codec::end_stream(&mut to_app.buf, kind::STDIN, *id);
        }
    }

    /// The body is all written: a CGI child sees the end of its input.
    fn close_stdin(&mut self) {
        if let Peer::Cgi { stdin, .. } = self {
            *stdin = None;
        }
    }

    /// Moves bytes between the app and the two queues after a poll;
    /// `Some(app_status)` once the app's answer is complete.
    fn pump(
        &mut self,
        ev: &[PollFlags],
        to_client: &mut Outbox,
        id: u16,
        head_sent: &mut bool,
    ) -> io::Result<Option<u32>> {
        match self {
            Peer::FastCgi { program, id: app_id } => {
                let app_id = *app_id;
                let Program {
                    conn,
                    inbox: buf,
                    suspect,
                    spoke,
                    ..
                } = &mut **program;
                let Some(conn) = &*conn else {
                    return Err(io::Error::other("no connection to the program"));
                };
                let e = ev.first().copied().unwrap_or(PollFlags::empty());
                if readable(e) {
                    buf.fill(conn)?;
                }
                loop {
                    let (n, end) = match buf.peek().map_err(|e| io::Error::other(e.to_string()))? {
                        None => break,
                        Some((rec, n)) => match rec {
                            // Another request's (a late answer to an earlier one): dropped.
                            Record::Stdout { id: i, .. }
                            | Record::Stderr { id: i, .. }
                            | Record::EndRequest { id: i, .. }
                                if i != app_id =>
                            {
                                *suspect = true;
                                (n, None)
                            }
                            Record::Stdout { data, .. } => {
                                *spoke = true;
                                if data.is_empty() {
                                    codec::end_stream(&mut to_client.buf, kind::STDOUT, id);
                                } else {
                                    *head_sent = true;
                                    codec::stream(&mut to_client.buf, kind::STDOUT, id, data);
                                }
                                (n, None)
                            }
                            Record::Stderr { data, .. } => {
                                *spoke = true;
                                if data.is_empty() {
                                    codec::end_stream(&mut to_client.buf, kind::STDERR, id);
                                } else {
                                    codec::stream(&mut to_client.buf, kind::STDERR, id, data);
                                }
                                (n, None)
                            }
                            Record::EndRequest {
                                app_status,
                                protocol_status,
                                ..
                            } => {
                                codec::end_request(&mut to_client.buf, id, app_status, protocol_status);
                                (n, Some(app_status))
                            }
                            _ => (n, None),
                        },
                    };
                    buf.consume(n);
                    if let Some(s) = end {
                        // Bytes behind the END_REQUEST belong to no request.
                        if !buf.raw().is_empty() {
                            *suspect = true;
                        }
                        return Ok(Some(s));
                    }
                }
                if buf.eof {
                    return Err(io::Error::other(
                        "the program closed its connection before ending the request",
                    ));
                }
                Ok(None)
            }
            Peer::Cgi {
                pid,
                mark,
                stdin,
                stdout,
                stderr,
                out,
                err,
                rusage,
            } => {
                if rusage.is_some() {
                    return Ok(None); // reaped: the answer is complete
                }
                // stdin's place in the poll set comes first (written by `flush_app`).
                let mut i = usize::from(stdin.is_some());
                if stdout.is_some() {
                    if readable(ev.get(i).copied().unwrap_or(PollFlags::empty())) {
                        let s = stdout.as_mut().expect("checked");
                        // The script closed its output (it is done): read to
                        // the end now, so its answer and its end leave in one
                        // write, not two turns later.
                        let hup = ev.get(i).is_some_and(|e| e.contains(PollFlags::POLLHUP));
                        while matches!(out.fill(&mut *s)?, Filled::Bytes) && hup {}
                        let data = out.take_raw();
                        if !data.is_empty() {
                            *head_sent = true;
                            codec::stream(&mut to_client.buf, kind::STDOUT, id, &data);
                        }
                        if out.eof {
                            *stdout = None;
                        }
                    }
                    i += 1;
                }
                if stderr.is_some() && readable(ev.get(i).copied().unwrap_or(PollFlags::empty())) {
                    let s = stderr.as_mut().expect("checked");
                    err.fill(s)?;
                    let data = err.take_raw();
                    codec::stream(&mut to_client.buf, kind::STDERR, id, &data);
                    if err.eof {
                        *stderr = None;
                    }
                }
                if stdout.is_none() && stderr.is_none() {
                    let (status, ru) = wait_child(*pid, *mark)?;
                    *rusage = Some(Box::new(ru));
                    codec::end_stream(&mut to_client.buf, kind::STDOUT, id);
                    codec::end_request(&mut to_client.buf, id, status, ProtocolStatus::RequestComplete);
                    return Ok(Some(status));
                }
                Ok(None)
            }
        }
    }

    fn kill(&mut self) {
        match self {
            Peer::FastCgi { program, .. } => program.stop(),
            Peer::Cgi { pid, mark, .. } => {
                let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
                let _ = wait_child(*pid, *mark);
            }
        }
    }

    /// CPU time the app used so far, in nanoseconds.
    fn cpu_ns(&self) -> u64 {
        match self {
            Peer::FastCgi { program, .. } => program
                .cpu_clock
                .and_then(|c| nix::time::clock_gettime(c).ok())
                .map_or(0, |t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64),
            Peer::Cgi { rusage, .. } => rusage.as_ref().map_or(0, |r| {
                let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
                ns(r.ru_utime) + ns(r.ru_stime)
            }),
        }
    }

    /// Resident memory of the app after the request.
    fn memory(&self) -> u64 {
        match self {
            Peer::FastCgi { program, .. } => program.statm.as_ref().map_or(0, statm_rss),
            Peer::Cgi { rusage, .. } => rusage.as_ref().map_or(0, |r| r.ru_maxrss as u64 * 1024),
        }
    }
}

/// What a record from the web server means during a request.
enum FromClient {
    Stdin(std::ops::Range<usize>),
    Abort,
    OtherBegin(u16),
    /// A BEGIN_REQUEST with the running request's id.
    SameBegin,
    Ignore,
}

fn classify(rec: Record<'_>, id: u16) -> FromClient {
    match rec {
        Record::Stdin { id: i, data } if i == id => {
            // The data's place in the buffer: records are header + data.
            let start = codec::HEADER_LEN;
            FromClient::Stdin(start..start + data.len())
        }
        Record::AbortRequest { id: i } if i == id => FromClient::Abort,
        Record::BeginRequest { id: i, .. } if i != id => FromClient::OtherBegin(i),
        Record::BeginRequest { .. } => FromClient::SameBegin,
        _ => FromClient::Ignore,
    }
}

/// Reaps a CGI child: its exit status (128 + signal when killed) and its
/// resource use. Its output is closed, so it is exiting: wait for that
/// on a pidfd (no polling sleep), at most 10 s, then kill it.
fn wait_child(pid: i32, mark: &dyn Fn(i32)) -> io::Result<(u32, libc::rusage)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut pidfd: Option<OwnedFd> = None;
    loop {
        // Exited (not yet reaped: its pid is still its own)? Then its
        // record goes first, so the master never kills a reused pid.
        let flags = nix::sys::wait::WaitPidFlag::WEXITED
            | nix::sys::wait::WaitPidFlag::WNOHANG
            | nix::sys::wait::WaitPidFlag::WNOWAIT;
        if matches!(
            nix::sys::wait::waitid(nix::sys::wait::Id::Pid(Pid::from_raw(pid)), flags),
            Ok(s) if s != nix::sys::wait::WaitStatus::StillAlive
        ) {
            mark(0);
        }
        let mut status = 0;
        // SAFETY: an all-zero rusage is a valid value of this plain C struct.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes only through the two valid pointers given.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            let code = if libc::WIFEXITED(status) {
                libc::WEXITSTATUS(status) as u32
            } else {
                128 + libc::WTERMSIG(status) as u32
            };
            return Ok((code, ru));
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            mark(0);
            return Err(e);
        }
        if Instant::now() >= deadline {
            // Output closed but still running: it has had its chance.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if pidfd.is_none() {
            pidfd = crate::os::spawn::pidfd_open(pid).ok();
        }
        match &pidfd {
            Some(fd) => {
                let until = deadline.max(Instant::now() + Duration::from_millis(100));
                wait(&[(fd.as_fd(), PollFlags::POLLIN)], Some(until))?;
            }
            None => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

/// Writes all of `out` to a nonblocking socket, waiting as needed (at most 10 s).
pub fn blocking_write(client: &Socket, out: &[u8]) -> io::Result<()> {
    let mut ob = Outbox {
        buf: out.to_vec(),
        sent: 0,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ob.flush(client)? {
        if Instant::now() >= deadline {
            return Err(io::ErrorKind::TimedOut.into());
        }
        wait(&[(client.as_fd(), PollFlags::POLLOUT)], Some(deadline))?;
    }
    Ok(())
}

/// Answers a request with an error status of the worker's own.
pub fn answer_error(client: &Socket, id: u16, status: u16, why: &str) -> Outcome {
    let page = format!(
        "Status: {status} {}\r\nContent-Type: text/plain\r\n\r\n{why}\n",
        crate::http::status::reason(status)
    );
    answer(client, id, page.as_bytes())
}

/// Answers request `id` with `page` (a CGI head and body) of the worker's
/// own: the whole STDOUT stream and END_REQUEST.
pub fn answer(client: &Socket, id: u16, page: &[u8]) -> Outcome {
    answer_noted(client, id, page, b"")
}

/// [`answer`] with `note` (when not empty) as FCGI_STDERR before it, for
/// the web server's error log; all in one write.
fn answer_noted(client: &Socket, id: u16, page: &[u8], note: &[u8]) -> Outcome {
    let mut out = Vec::new();
    if !note.is_empty() {
        codec::stream(&mut out, kind::STDERR, id, note);
    }
    codec::stream(&mut out, kind::STDOUT, id, page);
    codec::end_stream(&mut out, kind::STDOUT, id);
    codec::end_request(&mut out, id, 0, ProtocolStatus::RequestComplete);
    match blocking_write(client, &out) {
        Ok(()) => Outcome::Done {
            cpu_percent: 0.0,
            memory: 0,
        },
        Err(_) => Outcome::CloseClient,
    }
}

/// A request cut short (it ran past its time): a cut connection when the
/// answer had begun (the client sees a truncation, never a clean end),
/// else an error of the worker's own.
fn cut_short(client: &Socket, id: u16, cut: Option<Vec<u8>>, status: u16, why: &str) -> Outcome {
    if let Some(rest) = cut {
        return Outcome::Broken(why.to_string(), rest);
    }
    answer_error(client, id, status, why)
}

/// "GET /x.php?a=1 (script /srv/x.php)" for logs, with control bytes escaped.
pub fn describe(req: &Request) -> String {
    let p = |n| req.param(n).unwrap_or("-");
    describe_parts(p("SCRIPT_FILENAME"), p("REQUEST_METHOD"), p("REQUEST_URI"))
}

/// php-fpm's way of naming a request in its log lines (the pool's error
/// lines and the master's slow-request lines alike).
pub fn describe_parts(script: &str, method: &str, uri: &str) -> String {
    use crate::core::log::Esc;
    format!(
        "script '{}' (request: \"{} {}\")",
        Esc(script.as_bytes()),
        Esc(method.as_bytes()),
        Esc(uri.as_bytes())
    )
}

/// Resident set size of a process, in bytes.
pub fn rss(pid: u32) -> u64 {
    std::fs::File::open(format!("/proc/{pid}/statm")).map_or(0, |f| statm_rss(&f))
}

/// Resident bytes from an open /proc/PID/statm (read again from its start).
fn statm_rss(f: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 128];
    let n = f.read_at(&mut buf, 0).unwrap_or(0);
    let s = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let pages: u64 = s.split(' ').nth(1).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf only reads its argument.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page
}
