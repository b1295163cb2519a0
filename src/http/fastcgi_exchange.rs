//! A request passed to a FastCGI application, driven by readiness of the
//! client socket and of the connection to the application: choose a
//! server, connect (or reuse a kept connection), send the request's
//! records with the body streamed as STDIN, turn STDOUT into the response
//! and STDERR into log lines, then keep the connection for the next one.
//! Nothing here blocks; every buffer is bounded, so a slow client slows
//! the application instead of filling memory.
use super::lock;

use std::fs::File;
use std::io::{self, Seek};
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use super::HttpService;
use super::app_response::{Framing, write_out};
use super::body::{Body, BodyError};
use super::conn::{Conn, Exchange, Handler, Phase, Step};
use super::handler::spool_buffered;
use super::request::{Method, Request};
use crate::cgi::response::{self, Parsed};
use crate::config::fastcgi::NextUpstream;
use crate::event::{Io, Next, Ready};
use crate::fastcgi::codec::{self, ProtocolStatus, Role, kind};
use crate::fastcgi::inbox::{Inbox, Item};
use crate::fastcgi::params;
use crate::fastcgi::upstream::{Backend, Connect};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// One request per connection: its id is always 1.
const ID: u16 = 1;
/// STDERR logged per request: a flood (a debug dump, a loop) cannot fill the disk.
const STDERR_LOG_MAX: usize = 64 << 10;
/// The application's socket among the connection's descriptors.
const SUB: u8 = 1;
/// Request bytes kept to resend on a fresh connection when a kept one
/// turns out closed; a longer request is not retried.
const REPLAY_MAX: usize = 256 << 10;
/// Request bytes queued for the application before more body is read.
const TO_APP_HIGH: usize = 64 << 10;
/// Scripts remembered as existing, per site.
const SCRIPTS_SEEN: usize = 4096;
/// How soon a connect refused by a full unix listen queue is tried again.
const BUSY_RETRY: Duration = Duration::from_millis(5);
/// How often a request waiting for a saturated pool looks at its
/// scoreboard for another worker's request ending (its own worker's end
/// wakes it at once).
const POOL_RETRY: Duration = Duration::from_millis(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// A chunked body is written to a file first (the application needs
    /// CONTENT_LENGTH).
    Spooling,
    /// Choose a server and get a connection.
    Pick,
    /// Waiting for a place under the group's `max_conns`.
    Queued,
    /// The server's listen queue was full: try again at `retry_at`.
    Busy,
    /// A pool of this master has every worker busy at max_children (its
    /// scoreboard says so): look again at `retry_at`, until queue_timeout.
    PoolFull,
    /// A TCP connect is under way.
    Connecting,
    /// Records flow both ways.
    Talking,
}

/// The location's settings a request needs, copied once.
#[derive(Clone, Copy)]
struct Knobs {
    connect_timeout: Duration,
    send_timeout: Duration,
    read_timeout: Duration,
    header_limit: usize,
    keep_conn: bool,
    x_accel_redirect: bool,
    x_sendfile: bool,
    next_upstream: NextUpstream,
}

/// What a FastCGI exchange holds besides the response being written.
pub(super) struct FcgiState {
    stage: Stage,
    knobs: Knobs,
    group: usize,
    server: usize,
    /// Servers this request tried (bit per server).
    tried: u64,
    /// Counted in the server's requests in progress (least_conn).
    counted: bool,
    backend: Option<Backend>,
    /// The connection came from the pool (it may have been closed meanwhile).
    reused: bool,
    /// Its token, while queued under `max_conns`.
    queued_as: Option<u64>,
    retry_at: Instant,
    /// Since when a full listen queue has been refusing us.
    busy_since: Option<Instant>,
    /// When the request began waiting for a saturated pool.
    pool_wait_since: Option<Instant>,
    /// While it waits there: counted in the pool's listen queue.
    pool_held: Option<crate::pool::registry::HeldMark>,
    /// Encoded records not yet written are `to_app[to_app_off..]`; while
    /// `replayable`, everything sent is still there from the start.
    to_app: Vec<u8>,
    to_app_off: usize,
    replayable: bool,
    /// The STDIN stream's end record is queued.
    stdin_ended: bool,
    /// The spooled chunked body: the file, its length, and how much is sent.
    spool: Option<(File, u64, u64)>,
    /// The PARAMS pairs of a request whose body is still being spooled.
    pending_params: Vec<u8>,
    /// A chunked body: CONTENT_LENGTH joins them once it is spooled.
    length_later: bool,
    /// What the application sent, not yet handled.
    inbox: Inbox,
    /// Bytes came from the application on this connection.
    got: bool,
    hdr: Vec<u8>,
    /// Body bytes of small STDOUT records read in one go, framed together
    /// (one chunk, not one per record) once the inbox is empty.
    small: Vec<u8>,
    fr: Framing,
    /// END_REQUEST came.
    ended: bool,
    err_line: Vec<u8>,
    /// STDERR bytes logged, and those past `STDERR_LOG_MAX` that were not.
    err_logged: usize,
    err_dropped: u64,
    /// A record for another request id came: logged once, and the
    /// connection is not kept (the application lost track of its requests).
    foreign: bool,
    idempotent: bool,
    /// For STDERR lines in the log.
    client: std::net::IpAddr,
}

impl FcgiState {
    pub(super) fn reads_body(&self) -> bool {
        self.stage == Stage::Spooling
    }

    /// An event of the application's socket: what it says is worth a read.
    pub(super) fn ready(&mut self, ready: &Ready) {
        if let Some(b) = self.backend.as_mut() {
            if ready.hangup || ready.peer_closed {
                b.peer_closed = true;
            }
            b.readable |= ready.readable || b.peer_closed;
        }
    }

    fn name(&self) -> &str {
        &self.fr.name
    }
}

fn state(h: &mut Handler) -> Option<&mut FcgiState> {
    match h {
        Handler::FastCgi(st) => Some(st),
        _ => None,
    }
}

/// Splits the decoded URI into the script and PATH_INFO.
pub(super) fn split(uri: &str, re: Option<&regex::Regex>, index: &str) -> (String, String) {
    // nginx's order: split first (`/admin.php/a/` is /admin.php with
    // PATH_INFO /a/), then the index for a script name ending in "/".
    if let Some(caps) = re.and_then(|r| r.captures(uri)) {
        let script = caps.get(1).map_or("", |m| m.as_str());
        let info = caps.get(2).map_or("", |m| m.as_str());
        if !script.is_empty() {
            let script = if script.ends_with('/') {
                format!("{script}{index}")
            } else {
                script.to_string()
            };
            return (script, info.to_string());
        }
    }
    if uri.ends_with('/') {
        return (format!("{uri}{index}"), String::new());
    }
    (uri.to_string(), String::new())
}

impl HttpService {
    /// A request routed to a FastCGI location: checks its script and sets
    /// the exchange up. Gives the request back with the status to answer
    /// (404 for a missing script), or none for a malformed path.
    pub(super) fn begin_fastcgi(
        &mut self,
        c: &mut Conn,
        mut req: Box<Request>,
        site: usize,
        head: &[u8],
        _io: &mut Io<'_>,
    ) -> Result<(), (Box<Request>, Option<u16>)> {
        let Some(uri) = req.normalized().map(|n| String::from_utf8_lossy(&n).into_owned()) else {
            return Err((req, None));
        };
        let Some(f) = self.sites[site].cfg.fastcgi.as_ref() else {
            return Err((req, Some(500)));
        };
        let (script, path_info) = match req.fastcgi_split.take() {
            Some(found) => *found,
            None => split(&uri, f.split_path_info.as_ref(), &f.index),
        };
        // With `alias`, the script's file is the aliased path (nginx's
        // `$request_filename`), not the root and the URI.
        let script_path = match req.file.as_deref() {
            Some(file) => {
                let file = String::from_utf8_lossy(file);
                let mut p = format!("/{}", file.strip_suffix(path_info.as_str()).unwrap_or(&file));
                if p.ends_with('/') {
                    p.push_str(&f.index);
                }
                p
            }
            None => script.clone(),
        };
        if f.check_file
            && let Some(code) = self.script_status(site, &script_path)
        {
            if code == 404 {
                crate::info!(
                    "FastCGI script \"{}\" not found under {}, client: {}",
                    crate::core::log::Esc(script.as_bytes()),
                    self.sites[site].cfg.root.display(),
                    c.peer.ip()
                );
            }
            return Err((req, Some(code)));
        }
        let site_ref = &self.sites[site];
        let Some(f) = site_ref.cfg.fastcgi.as_ref() else {
            return Err((req, Some(500)));
        };
        let knobs = Knobs {
            connect_timeout: f.connect_timeout,
            send_timeout: f.send_timeout,
            read_timeout: f.read_timeout,
            header_limit: f.header_limit,
            keep_conn: f.keep_conn,
            x_accel_redirect: f.x_accel_redirect,
            x_sendfile: f.x_sendfile,
            next_upstream: f.next_upstream,
        };
        let group = f.upstream;
        let root = site_ref.cfg.root.display().to_string();
        let filename = format!("{}{}", root.trim_end_matches('/'), script_path);
        let mut hs = [httparse::EMPTY_HEADER; 100];
        let mut parsed = httparse::Request::new(&mut hs);
        let _ = parsed.parse(head);
        let headers = parsed.headers;
        let local = c.local_addr();
        // nginx's `$server_name`: the server's first name; without one, the Host.
        let server_name = site_ref
            .cfg
            .server_name
            .first()
            .cloned()
            .or_else(|| req.host.clone().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| local.map(|a| a.ip().to_string()).unwrap_or_default());
        let remote_user = match (&site_ref.cfg.auth, &req.authorization) {
            (Some(a), Some(given)) => a.users.check(given).map(str::to_string),
            _ => None,
        };
        let chunked = matches!(req.body, Some(Body::Chunked(_)));
        // A body not all here yet is read first (request_buffering): a
        // slow client then holds a temporary file, not the application.
        let spool = super::handler::spools(req.body.as_ref(), f.request_buffering, c.rend - c.rstart);
        let content_length = match &req.body {
            Some(Body::Length { left }) => Some(*left),
            // `Content-Length: 0` is said as "0", as nginx does.
            _ => req.content_length.filter(|&n| n == 0),
        };
        let server_addr = local.map(|a| a.ip().to_string()).unwrap_or_default();
        let remote_addr = c.peer.ip().to_string();
        let mut pairs = Vec::with_capacity(1024);
        params::encode(
            &params::Request {
                method: &req.method_name,
                request_uri: req.request_uri(),
                query: req.query().unwrap_or(""),
                document_uri: &uri,
                script_name: &script,
                script_filename: &filename,
                path_info: &path_info,
                document_root: &root,
                server_name: &server_name,
                server_port: local.map_or(0, |a| a.port()),
                server_addr: &server_addr,
                remote_addr: &remote_addr,
                remote_port: c.peer.port(),
                protocol: if req.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" },
                https: req.https,
                content_length,
                length_later: chunked,
                remote_user: remote_user.as_deref(),
                headers,
                authority: req.authority(),
                extra: &f.params,
            },
            &mut pairs,
        );
        let mut st = FcgiState {
            stage: Stage::Pick,
            knobs,
            group,
            server: 0,
            tried: 0,
            counted: false,
            backend: None,
            reused: false,
            queued_as: None,
            retry_at: self.clock.now,
            busy_since: None,
            pool_wait_since: None,
            pool_held: None,
            to_app: Vec::new(),
            to_app_off: 0,
            replayable: true,
            stdin_ended: false,
            spool: None,
            pending_params: Vec::new(),
            length_later: chunked,
            inbox: Inbox::with_buffer(self.inbox_buffers.pop().unwrap_or_default()),
            got: false,
            hdr: Vec::new(),
            small: Vec::new(),
            fr: Framing::new(format!("FastCGI {script}")),
            ended: false,
            err_line: Vec::new(),
            err_logged: 0,
            err_dropped: 0,
            foreign: false,
            client: c.peer.ip(),
            idempotent: matches!(
                req.method_name.as_ref(),
                "GET" | "HEAD" | "PUT" | "DELETE" | "OPTIONS" | "TRACE"
            ),
        };
        if spool {
            let file = match super::cgi::temp_file(&self.cfg.client_body_temp_path) {
                Ok(f) => f,
                Err(e) => {
                    crate::error!(
                        "cannot make a temporary file in {} for a request body: {e}",
                        self.cfg.client_body_temp_path.display()
                    );
                    return Err((req, Some(500)));
                }
            };
            st.spool = Some((file, 0, 0));
            st.pending_params = pairs;
            st.stage = Stage::Spooling;
            c.deadline = self.clock.now + self.cfg.client_body_timeout;
        } else {
            start_records(&mut st.to_app, &pairs, knobs.keep_conn);
            if req.body.is_none() {
                codec::end_stream(&mut st.to_app, kind::STDIN, ID);
                st.stdin_ended = true;
            }
        }
        let mut ex = Exchange::new(site, Vec::new());
        ex.keep_alive = req.keep_alive && self.may_keep_alive(c);
        ex.body = req.body.take();
        ex.out = self.wbufs.get_empty();
        // The access log counts body bytes in `file_sent`, not from `out`.
        ex.head_len = usize::MAX;
        if ex.body.is_some() && req.expect_continue {
            ex.out.extend_from_slice(CONTINUE);
        }
        ex.req = Some(req);
        ex.handler = Handler::FastCgi(Box::new(st));
        c.phase = Phase::Handler;
        c.ex = Some(ex);
        Ok(())
    }

    /// Whether `script` is a regular file under the site's root. A file
    /// seen is trusted for a second, so a busy script costs no system
    /// call per request (a deleted one reaches the application for at
    /// most that long, which then answers its own 404).
    /// `None` when the script is a file under the root, else the status
    /// to answer: 404 (missing, or a directory), 403 (it leaves the root
    /// through a symlink, logged as for static files; not readable).
    fn script_status(&mut self, site: usize, script: &str) -> Option<u16> {
        let now = self.clock.now;
        let seen = &mut self.scripts_seen[site];
        if seen.get(script).is_some_and(|&until| now < until) {
            return None;
        }
        let rel = script.trim_start_matches('/').as_bytes();
        let status = match self.sites[site].kind(rel) {
            Ok(Some(false)) => None,
            Ok(_) => Some(404),
            Err(e) => Some(super::static_file::errno_status(e, &self.sites[site], rel)),
        };
        let seen = &mut self.scripts_seen[site];
        if status.is_none() {
            if seen.len() >= SCRIPTS_SEEN {
                seen.clear();
            }
            seen.insert(script.to_string(), now + Duration::from_secs(1));
        } else {
            seen.remove(script);
        }
        status
    }

    /// Moves the exchange as far as it can go now.
    pub(super) fn fcgi_step(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Step {
        loop {
            let Some(stage) = c.ex.as_mut().and_then(|e| state(&mut e.handler)).map(|s| s.stage) else {
                return Step::Wait(Next::Close);
            };
            match stage {
                Stage::Spooling => {
                    if let Some(step) = self.fcgi_spool(c) {
                        return step;
                    }
                }
                Stage::Pick => {
                    if let Some(step) = self.fcgi_connect(c, io) {
                        return step;
                    }
                }
                // Woken by a place under max_conns coming free, or (PoolFull)
                // by one of our own connections to the pool coming free or
                // the timer for other workers' ones: look again.
                Stage::Queued | Stage::PoolFull => {
                    // Woken every few ms (PoolFull) or by a place coming
                    // free: queue_timeout is checked here, to the millisecond.
                    if Instant::now() >= c.deadline {
                        return self.queue_timed_out(c);
                    }
                    let st = c.ex.as_mut().and_then(|e| state(&mut e.handler)).expect("fastcgi");
                    if let Some(t) = st.queued_as.take() {
                        lock(&self.upstreams).unwait(st.group, st.server, t);
                    }
                    st.stage = Stage::Pick;
                    st.tried &= !(1 << st.server);
                }
                Stage::Busy => {
                    let st = c.ex.as_mut().and_then(|e| state(&mut e.handler)).expect("fastcgi");
                    if Instant::now() < st.retry_at {
                        return Step::Wait(Next::Pause);
                    }
                    st.stage = Stage::Pick;
                    st.tried &= !(1 << st.server);
                }
                Stage::Connecting => {
                    let st = c.ex.as_mut().and_then(|e| state(&mut e.handler)).expect("fastcgi");
                    let Some(b) = st.backend.as_ref() else {
                        st.stage = Stage::Pick;
                        continue;
                    };
                    match b.sock.take_error() {
                        Ok(None) if b.sock.peer_addr().is_ok() => st.stage = Stage::Talking,
                        Ok(None) => return Step::Wait(Next::Pause),
                        Ok(Some(e)) | Err(e) => {
                            if let Some(step) = self.connect_failed(c, &e.to_string()) {
                                return step;
                            }
                        }
                    }
                }
                Stage::Talking => return self.fcgi_talk(c, io),
            }
        }
    }

    /// Writes a chunked body to its spool file; once complete, queues the
    /// request's records with its length. `None`: go on.
    fn fcgi_spool(&mut self, c: &mut Conn) -> Option<Step> {
        loop {
            let ex = c.ex.as_mut()?;
            match write_out(&mut c.io, ex) {
                Ok((_, true)) => return Some(Step::Wait(Next::Write)),
                Ok(_) => {}
                Err(_) => return Some(Step::Wait(Next::Close)),
            }
            let Some(st) = state(&mut ex.handler) else {
                return Some(Step::Wait(Next::Close));
            };
            if c.rstart < c.rend
                && let Some(body) = ex.body.as_mut()
                && let Some((file, len, _)) = st.spool.as_mut()
            {
                let mut write = |d: &[u8]| {
                    file.write_all_at(d, *len)?;
                    *len += d.len() as u64;
                    Ok(())
                };
                match spool_buffered(&c.rbuf[c.rstart..c.rend], body, &mut write) {
                    Ok((n, done)) => {
                        c.rstart += n;
                        if done {
                            ex.body = None;
                        }
                    }
                    Err((code, why)) => return Some(self.fcgi_abort(c, code, &why)),
                }
                c.deadline = self.clock.now + self.cfg.client_body_timeout;
            }
            let ex = c.ex.as_mut()?;
            if ex.body.is_none() {
                let st = state(&mut ex.handler)?;
                let len = st.spool.as_ref().map_or(0, |s| s.1);
                let mut pairs = std::mem::take(&mut st.pending_params);
                if st.length_later {
                    codec::encode_pair(&mut pairs, b"CONTENT_LENGTH", len.to_string().as_bytes());
                }
                start_records(&mut st.to_app, &pairs, st.knobs.keep_conn);
                if let Some((f, _, _)) = st.spool.as_mut() {
                    let _ = f.rewind();
                }
                st.stage = Stage::Pick;
                return None;
            }
            if c.rstart == c.rend {
                match self.fill(c) {
                    Ok(true) => {}
                    Ok(false) => return Some(Step::Wait(Next::Read)),
                    Err(_) => return Some(self.body_cut(c)),
                }
            }
        }
    }

    /// Gets a connection for the request: a kept one, a new one, or a
    /// place in the queue. `None` when the stage moved on (go on).
    fn fcgi_connect(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Option<Step> {
        let now = Instant::now();
        let ex = c.ex.as_mut()?;
        let st = state(&mut ex.handler)?;
        let g = st.group;
        if st.counted {
            lock(&self.upstreams).end(g, st.server);
            st.counted = false;
        }
        let picked = lock(&self.upstreams).pick(g, st.tried, now);
        let Some(s) = picked else {
            let why = {
                let ups = lock(&self.upstreams);
                let cfg = ups.config(g);
                if cfg.implicit {
                    format!("FastCGI server {} cannot be reached", cfg.name)
                } else if st.tried == 0 {
                    format!("no live upstreams in \"{}\" (every server is down)", cfg.name)
                } else {
                    format!("every server of \"{}\" failed", cfg.name)
                }
            };
            return Some(self.fcgi_abort(c, 502, &why));
        };
        st.server = s;
        st.tried |= 1 << s;
        st.got = false;
        st.foreign = false;
        st.inbox.clear();
        let mut ups = lock(&self.upstreams);
        ups.begin(g, s);
        st.counted = true;
        if let Some(b) = ups.take_idle(g, s, now) {
            st.pool_held = None;
            ups.set_owner(&b, io.sub_token(SUB));
            st.backend = Some(b);
            st.reused = true;
            st.stage = Stage::Talking;
            c.deadline = self.clock.now + st.knobs.send_timeout;
            return None;
        }
        // A stopping worker's view of a pool is its generation's: after a
        // reload the pool may have new workers, so it just connects.
        if let Some(pool) = ups.config(g).name.strip_prefix("pool:")
            && !ups.is_draining()
            && crate::pool::registry::saturated(pool)
        {
            // Every worker busy and no room to start one: wait in corral
            // (the client may still leave) rather than in the pool's queue.
            if st.pool_wait_since.is_none() {
                crate::pool::registry::held(pool);
            }
            if st.pool_held.is_none() {
                st.pool_held = Some(crate::pool::registry::HeldMark::new(pool));
            }
            ups.end(g, s);
            st.counted = false;
            if st.pool_wait_since.is_none() {
                st.pool_wait_since = Some(now);
                c.deadline = self.clock.now + ups.queue_timeout(g);
            }
            let t = io.token();
            ups.wait(g, s, t);
            st.queued_as = Some(t);
            st.retry_at = now + POOL_RETRY;
            st.stage = Stage::PoolFull;
            io.wake_at(st.retry_at);
            return Some(Step::Wait(Next::Pause));
        }
        st.pool_held = None;
        if ups.full(g, s) {
            let t = io.token();
            ups.wait(g, s, t);
            st.queued_as = Some(t);
            st.stage = Stage::Queued;
            c.deadline = self.clock.now + ups.queue_timeout(g);
            io.wake_at(c.deadline);
            return Some(Step::Wait(Next::Pause));
        }
        st.reused = false;
        let connected = ups.connect(g, s, io.sub_token(SUB));
        drop(ups);
        match connected {
            Ok(Connect::Done(b)) | Ok(Connect::InProgress(b))
                if io.watch_handle(b.sock.as_fd(), b.handle, b.watch_out).is_err() =>
            {
                lock(&self.upstreams).release(g, s, Some(b), false, now);
                Some(self.fcgi_abort(c, 502, "cannot watch the connection to the application"))
            }
            Ok(Connect::Done(b)) => {
                st.busy_since = None;
                st.backend = Some(b);
                st.stage = Stage::Talking;
                c.deadline = self.clock.now + st.knobs.send_timeout;
                None
            }
            Ok(Connect::InProgress(b)) => {
                st.busy_since = None;
                st.backend = Some(b);
                st.stage = Stage::Connecting;
                c.deadline = self.clock.now + st.knobs.connect_timeout;
                Some(Step::Wait(Next::Pause))
            }
            Ok(Connect::Busy) => {
                // The first refusal starts the connect timeout.
                if st.busy_since.is_none() {
                    st.busy_since = Some(now);
                    c.deadline = self.clock.now + st.knobs.connect_timeout;
                }
                st.retry_at = now + BUSY_RETRY;
                st.stage = Stage::Busy;
                io.wake_at(st.retry_at);
                Some(Step::Wait(Next::Pause))
            }
            Err(e) => self.connect_failed(c, &e.to_string()),
        }
    }

    /// The connection to the current server failed before the request
    /// reached it: count it against the server and try the next one.
    fn connect_failed(&mut self, c: &mut Conn, why: &str) -> Option<Step> {
        let now = Instant::now();
        let ex = c.ex.as_mut()?;
        let st = state(&mut ex.handler)?;
        let (g, s) = (st.group, st.server);
        let addr = lock(&self.upstreams).address(g, s).to_string();
        crate::error!(
            "connecting to FastCGI server {addr} for {} failed: {why}, client: {}",
            st.name(),
            st.client
        );
        lock(&self.upstreams).release(g, s, st.backend.take(), false, now);
        lock(&self.upstreams).failed(g, s, now);
        st.stage = Stage::Pick;
        st.busy_since = None;
        if st.knobs.next_upstream.off {
            return Some(self.fcgi_abort(c, 502, &format!("{addr} is unreachable")));
        }
        None
    }

    /// The application side failed after the connection was made (`why`).
    /// A kept connection that was closed meanwhile, with nothing received,
    /// is retried on a fresh one; a new one counts as the server's failure
    /// and, if allowed, the next server is tried; otherwise 502.
    ///
    /// `unread`: the failure shows the application did not run the request:
    /// the connection refused its first byte, or the application shut its
    /// side and still drains (see `peer_draining`). A reset or a close
    /// after the request went in may come from a process that read it and
    /// died on it (a crash, request_terminate_timeout): a non-idempotent
    /// request is then never resent, so never run twice.
    fn app_failed(&mut self, c: &mut Conn, why: &str, unread: bool) -> Step {
        let now = Instant::now();
        let Some(st) = c.ex.as_mut().and_then(|e| state(&mut e.handler)) else {
            return Step::Wait(Next::Close);
        };
        let (g, s) = (st.group, st.server);
        let addr = lock(&self.upstreams).address(g, s).to_string();
        lock(&self.upstreams).release(g, s, st.backend.take(), false, now);
        let resend = !st.got && !st.fr.head_sent && st.replayable;
        if resend && st.reused && (st.idempotent || unread) {
            // The application closed an idle kept connection (php-fpm's
            // pm.max_requests, a restart): not a failure of the server.
            st.reused = false;
            st.to_app_off = 0;
            st.tried &= !(1 << s);
            st.stage = Stage::Pick;
            return Step::Again;
        }
        lock(&self.upstreams).failed(g, s, now);
        // (With no other server left, the failure itself is the log line.)
        if resend && st.idempotent && !st.knobs.next_upstream.off && lock(&self.upstreams).has_untried(g, st.tried, now)
        {
            crate::error!(
                "FastCGI server {addr} failed for {}: {why}; trying the next server, client: {}",
                st.name(),
                st.client
            );
            st.to_app_off = 0;
            st.stage = Stage::Pick;
            return Step::Again;
        }
        self.fcgi_abort(c, 502, &format!("FastCGI server {addr}: {why}"))
    }

    /// Records both ways, the response to the client, body from it.
    fn fcgi_talk(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Step {
        let mut moved = false;
        loop {
            let mut progress = false;
            let Some(ex) = c.ex.as_mut() else {
                return Step::Wait(Next::Close);
            };
            let head_only = ex.req.as_ref().is_some_and(|r| r.method == Method::Head);
            let Some(st) = state(&mut ex.handler) else {
                return Step::Wait(Next::Close);
            };

            // Request body into STDIN records, while little is queued.
            if !st.stdin_ended && st.to_app.len() - st.to_app_off < TO_APP_HIGH {
                compact_to_app(st);
                if let Some((file, len, sent)) = st.spool.as_mut() {
                    let mut buf = [0u8; 32 * 1024];
                    let want = ((*len - *sent) as usize).min(buf.len());
                    match file.read_at(&mut buf[..want], *sent) {
                        Ok(n) if n > 0 || want == 0 => {
                            codec::stream(&mut st.to_app, kind::STDIN, ID, &buf[..n]);
                            *sent += n as u64;
                            if *sent == *len {
                                codec::end_stream(&mut st.to_app, kind::STDIN, ID);
                                st.stdin_ended = true;
                            }
                            progress = true;
                        }
                        Ok(_) => {
                            return self.fcgi_abort(c, 500, "the spooled body is shorter than written");
                        }
                        Err(e) => return self.fcgi_abort(c, 500, &format!("reading the spooled body: {e}")),
                    }
                } else if c.rstart < c.rend
                    && let Some(body) = ex.body.as_mut()
                {
                    let to_app = &mut st.to_app;
                    match body.feed(&c.rbuf[c.rstart..c.rend], &mut |d| {
                        codec::stream(to_app, kind::STDIN, ID, d)
                    }) {
                        Ok((n, done)) => {
                            c.rstart += n;
                            progress = true;
                            if done {
                                ex.body = None;
                                codec::end_stream(&mut st.to_app, kind::STDIN, ID);
                                st.stdin_ended = true;
                            }
                        }
                        Err(e) => {
                            let code = if e == BodyError::TooLarge { 413 } else { 400 };
                            return self.fcgi_abort(c, code, "the request body is malformed or too large");
                        }
                    }
                }
            }

            // To the application.
            if st.to_app_off < st.to_app.len()
                && let Some(b) = st.backend.as_ref()
            {
                match b.sock.send_with_flags(&st.to_app[st.to_app_off..], libc::MSG_NOSIGNAL) {
                    Ok(n) => {
                        st.to_app_off += n;
                        progress = true;
                        if st.to_app_off == st.to_app.len() && b.unix {
                            // Sent: the peer's reads need not wake us any more.
                            let _ = watch_out(io, st.backend.as_mut().expect("checked"), false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if let Err(e) = watch_out(io, st.backend.as_mut().expect("checked"), true) {
                            return self.app_failed(c, &format!("watching the connection: {e}"), false);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // Refused before a byte of this request went in: it cannot have run.
                    Err(e) => {
                        let unread = st.replayable && st.to_app_off == 0;
                        return self.app_failed(c, &format!("sending the request: {e}"), unread);
                    }
                }
            }

            // From the application, once what it sent before is written out.
            let ex = c.ex.as_mut().expect("checked");
            let st = state(&mut ex.handler).expect("checked");
            if ex.out_off == ex.out.len() && !st.ended && st.backend.is_some() {
                ex.out.clear();
                ex.out_off = 0;
                match read_app(st) {
                    Ok(0) => {}
                    Ok(_) => {
                        progress = true;
                        if let Some(b) = st.backend.as_mut() {
                            lock(&self.upstreams).answered(st.group, st.server, b);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        if !st.got && !st.fr.head_sent {
                            let unread = st.backend.as_ref().is_some_and(peer_draining);
                            return self.app_failed(c, &e.to_string(), unread);
                        }
                        if st.fr.head_sent {
                            return self.truncated(c, &e.to_string());
                        }
                        return self.fcgi_abort(c, 502, &format!("the application closed the connection: {e}"));
                    }
                }
                match self.records(c, head_only, io) {
                    Ok(true) => progress = true,
                    Ok(false) => {}
                    Err(step) => return step,
                }
            }

            // To the client.
            let Some(ex) = c.ex.as_mut() else {
                return Step::Wait(Next::Close);
            };
            let blocked = match write_out(&mut c.io, ex) {
                Ok((wrote, blocked)) => {
                    progress |= wrote;
                    blocked
                }
                Err(e) => {
                    let name = state(&mut ex.handler).map(|s| s.name().to_string()).unwrap_or_default();
                    crate::info!("client {} went away during {name}: {e}", c.peer.ip());
                    return Step::Wait(Next::Close);
                }
            };
            let st = state(&mut ex.handler).expect("checked");
            if st.ended && ex.out_off == ex.out.len() {
                if !st.fr.framing_ok || ex.body.is_some() {
                    // Unsure where the next request starts, or the body was left unread.
                    ex.keep_alive = false;
                    ex.linger = true;
                }
                return self.finish(c, true);
            }

            // More body from the client, when the application can take it.
            let wants_body = ex.body.is_some()
                && st.spool.is_none()
                && st.to_app.len() - st.to_app_off < TO_APP_HIGH
                && c.rstart == c.rend;
            let waiting_app = st.to_app_off < st.to_app.len();
            let limit = if waiting_app {
                st.knobs.send_timeout
            } else {
                st.knobs.read_timeout
            };
            if wants_body && c.readable {
                match self.fill(c) {
                    Ok(true) => progress = true,
                    Ok(false) => {}
                    Err(_) => return self.body_cut(c),
                }
            }
            moved |= progress;
            if !progress {
                if moved {
                    c.deadline = self.clock.now
                        + if blocked {
                            self.cfg.send_timeout.max(limit)
                        } else {
                            limit
                        };
                }
                return Step::Wait(if blocked {
                    Next::Write
                } else if wants_body {
                    Next::Read
                } else {
                    Next::Pause
                });
            }
        }
    }

    /// Handles the complete records read so far. `Ok(true)` when any was
    /// handled; `Err` with the step to take when the exchange changed course.
    fn records(&mut self, c: &mut Conn, head_only: bool, io: &mut Io<'_>) -> Result<bool, Step> {
        let mut any = false;
        loop {
            let ex = c.ex.as_mut().expect("fastcgi exchange");
            let st = state(&mut ex.handler).expect("fastcgi exchange");
            let item = match st.inbox.take() {
                Ok(Some(item)) => item,
                Ok(None) => {
                    flush_small(ex, head_only);
                    return Ok(any);
                }
                Err(e) => {
                    let why = format!("the application broke the FastCGI protocol: {e}");
                    return Err(if st.fr.head_sent {
                        self.truncated(c, &why)
                    } else {
                        self.fcgi_abort(c, 502, &why)
                    });
                }
            };
            any = true;
            match item {
                Item::Stdout(ID, r) if !r.is_empty() => {
                    if let Some(step) = self.app_output(c, r, head_only, io) {
                        return Err(step);
                    }
                }
                Item::Stderr(ID, r) => log_stderr(st, r),
                Item::End(ID, status) => {
                    flush_small(ex, head_only);
                    return self.app_ended(c, status, head_only).map(|()| true);
                }
                Item::Stdout(id, _) | Item::Stderr(id, _) | Item::End(id, _) if id != ID => foreign(st, id),
                // Stream ends, management records: nothing to do.
                _ => {}
            }
        }
    }

    /// STDOUT bytes (`r` in the inbox): the header section, then body.
    fn app_output(&mut self, c: &mut Conn, r: Range<usize>, head_only: bool, io: &mut Io<'_>) -> Option<Step> {
        let ex = c.ex.as_mut()?;
        let st = state(&mut ex.handler)?;
        if st.fr.head_sent {
            let data = st.inbox.bytes(r.clone());
            if data.len() + st.small.len() < SMALL_RECORDS {
                st.small.extend_from_slice(data);
                return None;
            }
            flush_small(ex, head_only);
            let ex = c.ex.as_mut()?;
            let st = state(&mut ex.handler)?;
            let before = ex.out.len();
            st.fr.frame(st.inbox.bytes(r), &mut ex.out, head_only);
            ex.file_sent += (ex.out.len() - before) as u64;
            return None;
        }
        let from = st.hdr.len();
        st.hdr.extend_from_slice(st.inbox.bytes(r));
        // Parsed once its end is there (an application may send it a byte per record).
        let parsed = if response::has_end(&st.hdr, from) {
            response::parse(&st.hdr)
        } else {
            Parsed::Partial
        };
        let head_len = match &parsed {
            Parsed::Done(_, used) => *used,
            _ => st.hdr.len(),
        };
        if head_len > st.knobs.header_limit && !matches!(parsed, Parsed::Invalid(_)) {
            let why = format!(
                "the application sent a header section larger than header_limit ({} bytes)",
                st.knobs.header_limit
            );
            return Some(self.fcgi_abort(c, 502, &why));
        }
        let mut h = match parsed {
            Parsed::Done(h, used) => {
                let rest = st.hdr.split_off(used);
                st.hdr = rest;
                h
            }
            Parsed::Partial => return None,
            Parsed::Invalid(why) => return Some(self.fcgi_abort(c, 502, &format!("malformed response header: {why}"))),
        };
        let code = h
            .status
            .as_ref()
            .map_or(if h.location.is_some() { 302 } else { 200 }, |s| s.0);
        if st.knobs.next_upstream.on_status(code)
            && st.idempotent
            && st.replayable
            && !st.knobs.next_upstream.off
            && lock(&self.upstreams).has_untried(st.group, st.tried, Instant::now())
        {
            let addr = lock(&self.upstreams).address(st.group, st.server).to_string();
            crate::warn!(
                "FastCGI server {addr} answered {code} for {}; trying the next server, client: {}",
                st.name(),
                st.client
            );
            let now = Instant::now();
            lock(&self.upstreams).release(st.group, st.server, st.backend.take(), false, now);
            lock(&self.upstreams).failed(st.group, st.server, now);
            st.to_app_off = 0;
            st.hdr.clear();
            st.stage = Stage::Pick;
            return Some(Step::Again);
        }
        let field = |name: &str| super::app_response::field(&h, name);
        let accel = if st.knobs.x_accel_redirect {
            field("X-Accel-Redirect")
        } else {
            None
        };
        let sendfile = if st.knobs.x_sendfile { field("X-Sendfile") } else { None };
        if accel.is_some() || sendfile.is_some() {
            let target = match (accel, sendfile) {
                (Some(uri), _) => uri,
                (None, Some(path)) => {
                    let root = self.sites[ex.site].cfg.root.display().to_string();
                    match path
                        .strip_prefix(root.trim_end_matches('/'))
                        .filter(|r| r.starts_with('/'))
                    {
                        Some(rel) => super::path::encode(rel.as_bytes()),
                        None => {
                            let why = format!(
                                "X-Sendfile \"{}\" is not under the root {root}",
                                crate::core::log::Esc(path.as_bytes())
                            );
                            return Some(self.fcgi_abort(c, 403, &why));
                        }
                    }
                }
                (None, None) => unreachable!("one is set"),
            };
            if !target.starts_with(['/', '@']) {
                return Some(self.fcgi_abort(
                    c,
                    502,
                    "X-Accel-Redirect does not name a local URI (\"/...\") or a named location (\"@name\")",
                ));
            }
            let (carried, ctype) = super::app_response::carried_fields(&h);
            c.carried_type = ctype;
            self.settle_before_redirect(st);
            return Some(self.internal_redirect(c, &target, carried, io));
        }
        if h.status.is_none() && h.location.as_deref().is_some_and(super::app_response::is_local) {
            let loc = h.location.clone().unwrap_or_default();
            self.settle_before_redirect(st);
            return Some(self.internal_redirect(c, &loc, Vec::new(), io));
        }
        let mut fr = std::mem::take(&mut st.fr);
        let rest = std::mem::take(&mut st.hdr);
        super::app_response::drop_accel_fields(&mut h);
        h.fields.splice(0..0, std::mem::take(&mut c.carried));
        self.app_head(ex, &h, &mut fr, code, &rest, head_only);
        let st = state(&mut ex.handler)?;
        st.fr = fr;
        None
    }

    /// An internal redirect leaves the application's response unread. When
    /// the rest of it (a body to drop, END_REQUEST) is already here, as
    /// after PHP's `header("X-Accel-Redirect: ..."); exit;`, the kept
    /// connection goes back to the pool instead of being closed.
    fn settle_before_redirect(&mut self, st: &mut FcgiState) {
        loop {
            match st.inbox.take() {
                Ok(Some(Item::Stderr(ID, r))) => log_stderr(st, r),
                Ok(Some(Item::End(ID, ProtocolStatus::RequestComplete))) => break,
                Ok(Some(Item::Stdout(id, _) | Item::Stderr(id, _) | Item::End(id, _))) if id != ID => foreign(st, id),
                Ok(Some(Item::Stdout(..) | Item::Other | Item::Stderr(..))) => {}
                // Not all here, or not a plain end: the connection closes.
                _ => return,
            }
        }
        if reusable(st) {
            self.app_done(st);
        }
    }

    /// The application answered in full: its connection goes back to the
    /// pool (kept if `reusable`), the server counts a success.
    fn app_done(&mut self, st: &mut FcgiState) {
        let (g, s) = (st.group, st.server);
        let mut ups = lock(&self.upstreams);
        ups.release(g, s, st.backend.take(), reusable(st), Instant::now());
        ups.succeeded(g, s);
        if st.counted {
            ups.end(g, s);
            st.counted = false;
        }
        drop(ups);
        flush_err(st);
        st.ended = true;
    }

    /// END_REQUEST: the response is complete; the connection goes back to
    /// the pool if the whole request went out and nothing else is pending.
    fn app_ended(&mut self, c: &mut Conn, status: ProtocolStatus, head_only: bool) -> Result<(), Step> {
        let ex = c.ex.as_mut().expect("fastcgi exchange");
        let st = state(&mut ex.handler).expect("fastcgi exchange");
        if !st.fr.head_sent {
            let addr = lock(&self.upstreams).address(st.group, st.server).to_string();
            let (code, why) = match status {
                ProtocolStatus::Overloaded => (503, format!("FastCGI server {addr} is overloaded")),
                ProtocolStatus::CantMpxConn => (502, format!("FastCGI server {addr} refused a second request")),
                ProtocolStatus::UnknownRole => (502, format!("FastCGI server {addr} is not a responder")),
                _ => (
                    502,
                    "the application ended without a complete header section".to_string(),
                ),
            };
            return Err(self.fcgi_abort(c, code, &why));
        }
        self.app_done(st);
        let before = ex.out.len();
        st.fr.end(&mut ex.out, head_only);
        ex.file_sent += (ex.out.len() - before) as u64;
        Ok(())
    }

    /// The application went away in the middle of the body: what came is
    /// sent, then the connection closes without ending the body properly,
    /// so the client sees the truncation.
    fn truncated(&mut self, c: &mut Conn, why: &str) -> Step {
        let now = Instant::now();
        let Some(ex) = c.ex.as_mut() else {
            return Step::Wait(Next::Close);
        };
        // What came before the cut still goes out.
        let head_only = ex.req.as_ref().is_some_and(|r| r.method == Method::Head);
        flush_small(ex, head_only);
        if let Some(st) = state(&mut ex.handler) {
            let addr = lock(&self.upstreams).address(st.group, st.server).to_string();
            crate::error!(
                "FastCGI server {addr} stopped in the middle of the response of {}: {why}, client: {}",
                st.name(),
                st.client
            );
            lock(&self.upstreams).release(st.group, st.server, st.backend.take(), false, now);
            flush_err(st);
            st.fr.framing_ok = false;
            st.ended = true;
        }
        ex.keep_alive = false;
        ex.linger = false;
        match write_out(&mut c.io, ex) {
            Ok((_, false)) => Step::Wait(Next::Close),
            // What is left still goes out; `ended` closes after it.
            Ok((_, true)) => Step::Wait(Next::Write),
            Err(_) => Step::Wait(Next::Close),
        }
    }

    /// Gives up: answers `code` if nothing was sent yet, else closes.
    fn fcgi_abort(&mut self, c: &mut Conn, code: u16, why: &str) -> Step {
        let ex = c.ex.take();
        let name = ex
            .as_ref()
            .and_then(|e| match &e.handler {
                Handler::FastCgi(st) => Some(st.name().to_string()),
                _ => None,
            })
            .unwrap_or_default();
        if code >= 500 {
            crate::error!("{name}: {why}, client: {}", c.peer.ip());
        } else {
            crate::info!("{name}: {why}, client: {}", c.peer.ip());
        }
        let head_sent = ex.as_ref().is_some_and(|e| match &e.handler {
            Handler::FastCgi(st) => st.fr.head_sent,
            _ => false,
        });
        if head_sent {
            if let Some(mut ex) = ex {
                self.end_handler(&mut ex, true);
                self.wbufs.put(std::mem::take(&mut ex.out));
            }
            return Step::Wait(Next::Close);
        }
        c.ex = ex;
        if code >= 500 && self.app_error_page(c, code) {
            return Step::Again;
        }
        let ex = c.ex.take();
        self.fail(c, code, Vec::new(), ex);
        if code == 503
            && let Some(ex) = c.ex.as_mut()
        {
            // `fail` rendered the page; a retry hint helps clients back off.
            let at = ex.out.windows(4).position(|w| w == b"\r\n\r\n");
            if let Some(at) = at {
                let hint = b"\r\nRetry-After: 1";
                ex.out.splice(at..at, hint.iter().copied());
            }
        }
        Step::Again
    }

    /// queue_timeout passed while the request waited (max_conns, or a
    /// saturated pool): 503.
    fn queue_timed_out(&mut self, c: &mut Conn) -> Step {
        let Some(st) = c.ex.as_mut().and_then(|e| state(&mut e.handler)) else {
            return Step::Wait(Next::Close);
        };
        if let Some(t) = st.queued_as.take() {
            lock(&self.upstreams).unwait(st.group, st.server, t);
        }
        let ups = lock(&self.upstreams);
        let why = if st.stage == Stage::PoolFull {
            format!(
                "pool \"{}\" had no free worker within queue_timeout ({:?}; max_children busy)",
                ups.config(st.group).name.trim_start_matches("pool:"),
                ups.queue_timeout(st.group)
            )
        } else {
            format!(
                "no connection to {} came free within queue_timeout ({:?}; max_conns reached)",
                ups.address(st.group, st.server),
                ups.queue_timeout(st.group)
            )
        };
        drop(ups);
        self.fcgi_abort(c, 503, &why)
    }

    pub(super) fn fcgi_timeout(&mut self, c: &mut Conn) -> Option<Next> {
        let ex = c.ex.as_mut()?;
        let st = state(&mut ex.handler)?;
        let addr = lock(&self.upstreams).address(st.group, st.server).to_string();
        let step = match st.stage {
            Stage::Spooling => self.fcgi_abort(c, 408, "the client timed out sending the request body"),
            Stage::Queued | Stage::PoolFull => self.queue_timed_out(c),
            Stage::Pick => return Some(Next::Pause),
            Stage::Busy | Stage::Connecting => {
                let t = st.knobs.connect_timeout;
                match self.connect_failed(c, &format!("timed out after {t:?}")) {
                    Some(step) => step,
                    None => return Some(Next::Pause),
                }
            }
            Stage::Talking if ex.out_off < ex.out.len() => {
                // The application is waiting on us: the client stopped reading.
                crate::info!(
                    "client {} timed out receiving the response of {}",
                    c.peer.ip(),
                    st.name()
                );
                return Some(Next::Close);
            }
            Stage::Talking => {
                let waiting_app = st.to_app_off < st.to_app.len();
                let t = if waiting_app {
                    st.knobs.send_timeout
                } else {
                    st.knobs.read_timeout
                };
                let what = if waiting_app { "sending to" } else { "reading from" };
                let why = format!("timed out after {t:?} {what} FastCGI server {addr}");
                let retry = st.knobs.next_upstream.timeout
                    && !st.knobs.next_upstream.off
                    && st.idempotent
                    && st.replayable
                    && !st.fr.head_sent;
                if retry {
                    crate::error!("{}: {why}; trying the next server, client: {}", st.name(), st.client);
                    let now = Instant::now();
                    lock(&self.upstreams).release(st.group, st.server, st.backend.take(), false, now);
                    lock(&self.upstreams).failed(st.group, st.server, now);
                    st.to_app_off = 0;
                    st.stage = Stage::Pick;
                    return Some(Next::Pause);
                }
                if st.fr.head_sent {
                    self.truncated(c, &why);
                    return Some(Next::Close);
                }
                self.fcgi_abort(c, 504, &why)
            }
        };
        match step {
            Step::Again => Some(Next::Write),
            Step::Wait(n) => Some(n),
        }
    }

    /// Releases what the exchange holds. A request cut short is aborted:
    /// FCGI_ABORT_REQUEST goes out (best effort) and the connection closes.
    pub(super) fn fcgi_end(&mut self, ex: &mut Exchange, kill: bool) {
        let Some(st) = state(&mut ex.handler) else { return };
        let now = Instant::now();
        let (g, s) = (st.group, st.server);
        if let Some(t) = st.queued_as.take() {
            lock(&self.upstreams).unwait(g, s, t);
            // It may have been woken for a place it will not take now.
            lock(&self.upstreams).kick(g, s);
        }
        if st.counted {
            lock(&self.upstreams).end(g, s);
            st.counted = false;
        }
        if let Some(b) = st.backend.take() {
            // Nothing to abort once END_REQUEST came (the answer was refused, say).
            if kill && st.stage == Stage::Talking && !st.ended {
                let mut abort = Vec::with_capacity(8);
                codec::abort_request(&mut abort, ID);
                let _ = b.sock.send_with_flags(&abort, libc::MSG_NOSIGNAL);
            }
            lock(&self.upstreams).release(g, s, Some(b), false, now);
        }
        flush_err(st);
        if st.err_dropped > 0 {
            crate::warn!(
                "{}: {} more bytes written to stderr were not logged (more than {} KiB), client: {}",
                st.fr.name,
                st.err_dropped,
                STDERR_LOG_MAX >> 10,
                st.client
            );
            st.err_dropped = 0;
        }
        st.spool = None;
        if let Some(buf) = std::mem::take(&mut st.inbox).into_buffer()
            && self.inbox_buffers.len() < 64
        {
            self.inbox_buffers.push(buf);
        }
    }
}

/// BEGIN_REQUEST and the PARAMS stream.
fn start_records(out: &mut Vec<u8>, pairs: &[u8], keep_conn: bool) {
    out.reserve(pairs.len() + 64);
    codec::begin_request(out, ID, Role::Responder, keep_conn);
    codec::params(out, ID, pairs);
    codec::end_stream(out, kind::PARAMS, ID);
}

/// Drops what was sent from `to_app` when it need not be kept for a resend.
fn compact_to_app(st: &mut FcgiState) {
    if st.to_app_off == 0 {
        return;
    }
    if st.replayable && st.to_app.len() < REPLAY_MAX {
        return;
    }
    // Past this, a failure after sending cannot be retried.
    st.replayable = false;
    st.to_app.drain(..st.to_app_off);
    st.to_app_off = 0;
}

/// Below this, STDOUT records read together are framed as one piece.
const SMALL_RECORDS: usize = 8 << 10;

/// Frames the small records' bytes gathered so far.
fn flush_small(ex: &mut Exchange, head_only: bool) {
    let Some(st) = state(&mut ex.handler) else { return };
    if st.small.is_empty() {
        return;
    }
    let before = ex.out.len();
    st.fr.frame(&st.small, &mut ex.out, head_only);
    ex.file_sent += (ex.out.len() - before) as u64;
    st.small.clear();
}

/// After an end of file with no answer: whether the application's end of a
/// unix socket is still open, reading and dropping what comes. php's FastCGI
/// code (php-fpm, php-cgi) retires a child that way (`pm.max_requests`): it
/// shuts its side, then reads until the web server closes — a request that
/// arrived meanwhile is dropped, never run. A process that died (it may
/// have run the request) has closed its end: the probe, a management record
/// any FastCGI server would ignore, then fails. Over TCP a closed peer can
/// still take bytes before its reset comes back: no such test there.
fn peer_draining(b: &Backend) -> bool {
    // FCGI_GET_VALUES for request 0 with no names.
    const PROBE: [u8; 8] = [1, 9, 0, 0, 0, 0, 0, 0];
    b.unix
        && b.sock
            .send_with_flags(&PROBE, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT)
            .is_ok_and(|n| n == PROBE.len())
}

/// Reads what the application sent into the inbox: the bytes read,
/// `WouldBlock` when nothing is there, an error (EOF included) when the
/// connection is gone.
fn read_app(st: &mut FcgiState) -> io::Result<usize> {
    let Some(b) = st.backend.as_mut() else {
        return Ok(0);
    };
    if !b.readable {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    let mut total = 0;
    loop {
        let room = st.inbox.room();
        let room_len = room.len();
        if room_len == 0 {
            return Ok(total);
        }
        match (&b.sock).read_into(room) {
            Ok(0) => {
                if total > 0 {
                    return Ok(total);
                }
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"));
            }
            Ok(n) => {
                st.inbox.filled(n);
                st.got = true;
                total += n;
                // A short read emptied the socket (a new edge comes with more).
                if n < room_len {
                    b.readable = b.peer_closed;
                    return Ok(total);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                b.readable = b.peer_closed;
                return if total > 0 { Ok(total) } else { Err(e) };
            }
            // What came before an error is handled first (it may be the
            // whole response); the next read reports the error again.
            Err(_) if total > 0 => return Ok(total),
            Err(e) => return Err(e),
        }
    }
}

/// Complete STDERR lines to the error log, named after the script.
/// A record for a request id this connection did not send: dropped (it is
/// no part of this answer), said once, and the connection is not kept.
fn foreign(st: &mut FcgiState, id: u16) {
    if !st.foreign {
        st.foreign = true;
        crate::warn!(
            "{} sent a record for request id {id}, not {ID}: dropped, and the connection will not be kept, client: {}",
            st.fr.name,
            st.client
        );
    }
}

fn log_stderr(st: &mut FcgiState, r: Range<usize>) {
    let room = STDERR_LOG_MAX.saturating_sub(st.err_logged);
    if r.len() > room {
        st.err_dropped += (r.len() - room) as u64;
    }
    st.err_logged += r.len().min(room);
    for i in r.start..r.start + r.len().min(room) {
        let b = st.inbox.bytes(i..i + 1)[0];
        if b == b'\n' || st.err_line.len() >= 2048 {
            flush_err(st);
            if b != b'\n' {
                st.err_line.push(b);
            }
        } else {
            st.err_line.push(b);
        }
    }
}

/// Adds or removes writability in the backend's event registration.
fn watch_out(io: &mut Io<'_>, b: &mut Backend, on: bool) -> io::Result<()> {
    if b.watch_out != on {
        io.rewatch_handle(b.sock.as_fd(), b.handle, on)?;
        b.watch_out = on;
    }
    Ok(())
}

/// The connection can serve another request: kept by request, the whole
/// request sent, nothing unread behind the answer.
fn reusable(st: &FcgiState) -> bool {
    st.knobs.keep_conn && !st.foreign && st.stdin_ended && st.to_app_off == st.to_app.len() && st.inbox.is_empty()
}

fn flush_err(st: &mut FcgiState) {
    if !st.err_line.is_empty() {
        let line = st.err_line.strip_suffix(b"\r").unwrap_or(&st.err_line);
        crate::error!(
            "{} wrote to stderr: {}, client: {}",
            st.fr.name,
            crate::core::log::Text(line),
            st.client
        );
        st.err_line.clear();
    }
}

/// `read` on a shared socket reference.
trait ReadInto {
    fn read_into(self, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadInto for &socket2::Socket {
    fn read_into(self, buf: &mut [u8]) -> io::Result<usize> {
        use std::io::Read;
        let mut s = self;
        s.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn script_and_path_info() {
        let re = regex::Regex::new(r"^(.+?\.php)(/.*)$").unwrap();
        assert_eq!(
            split("/app.php/a/b", Some(&re), "index.php"),
            ("/app.php".into(), "/a/b".into())
        );
        assert_eq!(
            split("/app.php", Some(&re), "index.php"),
            ("/app.php".into(), "".into())
        );
        assert_eq!(
            split("/dir/", Some(&re), "index.php"),
            ("/dir/index.php".into(), "".into())
        );
        assert_eq!(split("/x.php/y", None, "index.php"), ("/x.php/y".into(), "".into()));
        assert_eq!(
            split("/admin.php/a/", Some(&re), "index.php"),
            ("/admin.php".into(), "/a/".into())
        );
    }
}
