//! A request served by a CGI script, driven by readiness of the client
//! socket and of the script's pipes: start, step, time out, clean up.
use super::lock;

use std::io::{Seek, Write};

use super::HttpService;
use super::app_response::write_out;
use super::body::BodyError;
use super::cgi::{self, Head, Run, Stdin, Target};
use super::conn::{Conn, Exchange, Handler, Phase, Step};
use super::handler::spool_buffered;
use super::request::{Method, Request};
use crate::event::{Io, Next};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// What a CGI exchange holds besides the response being written.
#[derive(Default)]
pub(super) struct CgiState {
    /// The script, while it runs.
    run: Option<Box<Run>>,
    /// Which CGI rule of the site (for the per-worker concurrency count).
    rule: usize,
    /// A chunked body spooled before the script starts.
    spool: Option<Box<cgi::Spool>>,
    /// Holds one of the rule's `max_concurrent` places.
    slot: bool,
}

/// The exchange's CGI state, made on first use.
fn cgi_of(h: &mut Handler) -> &mut CgiState {
    if !matches!(h, Handler::Cgi(_)) {
        *h = Handler::Cgi(Box::default());
    }
    match h {
        Handler::Cgi(st) => st,
        _ => unreachable!("just set"),
    }
}

fn cgi_ref(h: &Handler) -> Option<&CgiState> {
    match h {
        Handler::Cgi(st) => Some(st),
        _ => None,
    }
}

impl CgiState {
    /// A pipe of the script (1..=3) is ready.
    pub(super) fn ready(&mut self, source: u8) {
        if let Some(run) = self.run.as_mut() {
            match source {
                cgi::STDOUT => run.stdout_ready = true,
                cgi::STDERR => run.stderr_ready = true,
                _ => run.stdin_ready = true,
            }
        }
    }

    /// Still reading the request body from the socket (spooling it).
    pub(super) fn reads_body(&self) -> bool {
        self.spool.is_some()
    }
}

impl HttpService {
    /// A request routed to a CGI location: finds its script and starts it.
    /// Gives the request back with the status to answer, or none when the
    /// path names no script of the location (then it is a static file).
    pub(super) fn begin_cgi(
        &mut self,
        c: &mut Conn,
        req: Box<Request>,
        site: usize,
        head: &[u8],
        io: &mut Io<'_>,
    ) -> Result<(), (Box<Request>, Option<u16>)> {
        let Some(path) = req.normalized().map(|n| String::from_utf8_lossy(&n).into_owned()) else {
            return Err((req, None));
        };
        match cgi::route(&self.sites[site].cgi, &path) {
            cgi::Route::Static => Err((req, None)),
            cgi::Route::Run(t) => self
                .start_cgi(c, req, site, t, head, io)
                .map_err(|(r, code)| (r, Some(code))),
            cgi::Route::Refuse(code) => Err((req, Some(code))),
        }
    }

    /// Spawns the script for `req`; on refusal gives the request back with
    /// the status to answer.
    fn start_cgi(
        &mut self,
        c: &mut Conn,
        mut req: Box<Request>,
        site: usize,
        t: Target,
        head: &[u8],
        io: &mut Io<'_>,
    ) -> Result<(), (Box<Request>, u16)> {
        if !self.cgi_place_free(site, t.rule, &t.script_name) {
            return Err((req, 503));
        }
        let rule = self.cgi_cfg(site, t.rule);
        let mut hs = [httparse::EMPTY_HEADER; 100];
        let mut parsed = httparse::Request::new(&mut hs);
        let _ = parsed.parse(head);
        // An absolute-form target names the host (RFC 9112 §3.2.2).
        let authority = req.authority();
        let mut headers: Vec<(String, Vec<u8>)> = parsed
            .headers
            .iter()
            .filter(|h| !h.name.is_empty())
            .filter(|h| authority.is_none() || !h.name.eq_ignore_ascii_case("host"))
            .map(|h| (h.name.to_string(), h.value.trim_ascii().to_vec()))
            .collect();
        if let Some(a) = authority {
            headers.push(("Host".to_string(), a.as_bytes().to_vec()));
        }
        let local = c.local_addr();
        let site_cfg = &self.sites[site].cfg;
        let server_name = req
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| site_cfg.server_name.first().cloned())
            .unwrap_or_else(|| local.map(|a| a.ip().to_string()).unwrap_or_default());
        let content_length = match &req.body {
            Some(super::body::Body::Length { left }) => Some(*left),
            _ => None,
        };
        let root = site_cfg.root.display().to_string();
        let remote_user = match (&site_cfg.auth, &req.authorization) {
            (Some(a), Some(given)) => a.users.check(given),
            _ => None,
        };
        let env = crate::cgi::env::build(&crate::cgi::env::Request {
            method: &req.method_name,
            uri: req.request_uri(),
            query: req.query().unwrap_or(""),
            script_name: &t.script_name,
            script_filename: &t.script_filename,
            path_info: &t.path_info,
            document_root: &root,
            server_name: &server_name,
            server_port: local.map_or(0, |a| a.port()),
            server_addr: local.map(|a| a.ip().to_string()).unwrap_or_default(),
            remote_addr: c.peer.ip().to_string(),
            remote_port: c.peer.port(),
            protocol: if req.minor == 0 { "HTTP/1.0" } else { "HTTP/1.1" },
            https: req.https,
            content_length,
            remote_user,
            headers: &headers,
            extra: &rule.env,
        });
        // A body not all here yet is read first (request_buffering).
        let spool = super::handler::spools(req.body.as_ref(), rule.request_buffering, c.rend - c.rstart);
        let timeout = rule.timeout;
        let mut ex = Exchange::new(site, Vec::new());
        cgi_of(&mut ex.handler).rule = t.rule;
        if spool {
            let file = match cgi::temp_file(&self.cfg.client_body_temp_path) {
                Ok(f) => f,
                Err(e) => {
                    crate::error!(
                        "cannot make a temporary file in {} for a request body: {e}",
                        self.cfg.client_body_temp_path.display()
                    );
                    return Err((req, 500));
                }
            };
            cgi_of(&mut ex.handler).spool = Some(Box::new(cgi::Spool { file, target: t, env }));
            c.deadline = self.clock.now + self.cfg.client_body_timeout;
        } else {
            let stdin = if req.body.is_some() { Stdin::Pipe } else { Stdin::Null };
            match self.spawn_script(&t, &env, stdin, io) {
                Some(run) => cgi_of(&mut ex.handler).run = Some(Box::new(run)),
                None => return Err((req, 500)),
            }
            c.deadline = self.clock.now + timeout;
            // A spooled body's script takes its place when it starts.
            self.take_cgi_place(site, cgi_of(&mut ex.handler));
        }
        ex.keep_alive = req.keep_alive && self.may_keep_alive(c);
        ex.body = req.body.take();
        ex.out = self.wbufs.get_empty();
        // The access log counts body bytes in `file_sent` for CGI, not from `out`.
        ex.head_len = usize::MAX;
        if ex.body.is_some() && req.expect_continue {
            ex.out.extend_from_slice(CONTINUE);
        }
        ex.req = Some(req);
        c.phase = Phase::Handler;
        c.ex = Some(ex);
        Ok(())
    }

    /// Whether a script of `rule` may start now (`max_concurrent`); the
    /// log says so when not (the request is then answered 503).
    fn cgi_place_free(&self, site: usize, rule: usize, script_name: &str) -> bool {
        let max = self.cgi_cfg(site, rule).max_concurrent;
        let free = lock(&self.cgi_running)[site][rule] < max;
        if !free {
            crate::warn!("{max} CGI scripts already running for {script_name}, answering 503");
        }
        free
    }

    /// Counts the script starting for `st` against its rule's
    /// `max_concurrent` (given back by `cgi_end`).
    fn take_cgi_place(&self, site: usize, st: &mut CgiState) {
        lock(&self.cgi_running)[site][st.rule] += 1;
        st.slot = true;
    }

    fn cgi_cfg(&self, site: usize, rule: usize) -> &crate::config::Cgi {
        &self.sites[site].cgi[rule].cfg
    }

    /// Starts `t`'s process; its pipes are watched by this connection.
    fn spawn_script(&mut self, t: &Target, env: &[(String, Vec<u8>)], stdin: Stdin, io: &Io<'_>) -> Option<Run> {
        let Some(spawner) = self.spawner.as_ref() else {
            crate::error!("cannot start CGI {}: no spawner in this worker", t.script_name);
            return None;
        };
        let id = lock(&self.children).register(&t.script_name);
        let prepared = cgi::prepare(t, env, stdin, id).and_then(|(run, job)| {
            run.watch(io)?;
            Ok((run, job))
        });
        match prepared {
            Ok((run, job)) => {
                spawner.submit(job);
                Some(run)
            }
            Err(e) => {
                crate::error!("cannot start CGI {}: {e}", t.program.display());
                lock(&self.children).abandon(id);
                None
            }
        }
    }

    /// Writes a chunked body to its spool file; once it is complete, starts
    /// the script on it. `None` when the script runs (go on with it).
    fn spool_step(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Option<Step> {
        loop {
            let ex = c.ex.as_mut()?;
            // `100 Continue`, if asked for.
            match write_out(&mut c.io, ex) {
                Ok((_, true)) => return Some(Step::Wait(Next::Write)),
                Ok(_) => {}
                Err(_) => return Some(Step::Wait(Next::Close)),
            }
            let spool = cgi_of(&mut ex.handler).spool.as_mut()?;
            if c.rstart < c.rend
                && let Some(body) = ex.body.as_mut()
            {
                let mut write = |d: &[u8]| spool.file.write_all(d);
                match spool_buffered(&c.rbuf[c.rstart..c.rend], body, &mut write) {
                    Ok((n, done)) => {
                        c.rstart += n;
                        if done {
                            ex.body = None;
                        }
                    }
                    Err((code, why)) => return Some(self.cgi_abort(c, code, &why)),
                }
                c.deadline = self.clock.now + self.cfg.client_body_timeout;
            }
            if ex.body.is_none() {
                let spool = *cgi_of(&mut ex.handler).spool.take()?;
                return self.start_spooled(c, spool, io);
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

    /// The spooled body is complete: run the script with it as stdin.
    fn start_spooled(&mut self, c: &mut Conn, spool: cgi::Spool, io: &mut Io<'_>) -> Option<Step> {
        let cgi::Spool {
            mut file,
            target,
            mut env,
        } = spool;
        // The de-chunked length is where writing stopped.
        let len = match file.stream_position().and_then(|n| file.rewind().map(|()| n)) {
            Ok(n) => n,
            Err(e) => return Some(self.cgi_abort(c, 500, &format!("cannot rewind the spooled body: {e}"))),
        };
        // Configured `env` entries still win, as for any other variable
        // (a body with a Content-Length has it already).
        let site = c.ex.as_ref()?.site;
        let rule = self.cgi_cfg(site, target.rule);
        if !env.iter().any(|(k, _)| k == "CONTENT_LENGTH") {
            env.push(("CONTENT_LENGTH".into(), len.to_string().into_bytes()));
        }
        let timeout = rule.timeout;
        if !self.cgi_place_free(site, target.rule, &target.script_name) {
            return Some(self.cgi_abort(c, 503, "max_concurrent scripts are running"));
        }
        self.take_cgi_place(site, cgi_of(&mut c.ex.as_mut()?.handler));
        let Some(run) = self.spawn_script(&target, &env, Stdin::File(file), io) else {
            return Some(self.cgi_abort(c, 500, "cannot start the script"));
        };
        cgi_of(&mut c.ex.as_mut()?.handler).run = Some(Box::new(run));
        c.deadline = self.clock.now + timeout;
        None
    }

    /// Moves whatever can move: body to stdin, stderr to the log, stdout to
    /// the client; returns what the socket must wait for.
    pub(super) fn cgi_step(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Step {
        if c.ex.as_ref().is_some_and(|e| e.handler.reads_body())
            && let Some(step) = self.spool_step(c, io)
        {
            return step;
        }
        let mut moved = false;
        loop {
            let mut progress = false;
            let Some(ex) = c.ex.as_mut() else {
                return Step::Wait(Next::Close);
            };
            let accel = self.cgi_cfg(ex.site, cgi_of(&mut ex.handler).rule).x_accel_redirect;
            let Some(run) = cgi_of(&mut ex.handler).run.as_mut() else {
                return Step::Wait(Next::Close);
            };
            let head_only = ex.req.as_ref().is_some_and(|r| r.method == Method::Head);

            // Request body, de-chunked, into the stdin buffer (only when it is empty).
            if run.to_script.is_empty()
                && c.rstart < c.rend
                && let Some(body) = ex.body.as_mut()
            {
                match body.feed(&c.rbuf[c.rstart..c.rend], &mut |d| run.to_script.extend_from_slice(d)) {
                    Ok((n, done)) => {
                        c.rstart += n;
                        progress = true;
                        if done {
                            ex.body = None;
                        }
                    }
                    Err(e) => {
                        let code = if e == BodyError::TooLarge { 413 } else { 400 };
                        return self.cgi_abort(c, code, "the request body is malformed or too large");
                    }
                }
            }
            progress |= run.feed_stdin(ex.body.is_none());
            run.drain_stderr();

            // Script output, only once what we had is written (backpressure).
            if ex.out_off == ex.out.len() && !run.fr.ended {
                ex.out.clear();
                ex.out_off = 0;
                let mut buf = [0u8; 16 * 1024];
                match run.read_stdout(&mut buf) {
                    None => {}
                    Some(0) if !run.fr.head_sent => {
                        return self.cgi_abort(c, 502, "the script ended without a complete header section");
                    }
                    Some(0) => {
                        run.fr.end(&mut ex.out, head_only);
                        progress = true;
                    }
                    Some(n) if !run.fr.head_sent => {
                        progress = true;
                        let from = run.hdr.len();
                        run.hdr.extend_from_slice(&buf[..n]);
                        match cgi::parse_head(run, from) {
                            Head::More => {}
                            Head::Bad(why) => return self.cgi_abort(c, 502, &format!("malformed output: {why}")),
                            Head::Ready(mut h, used) => {
                                // As nginx in front of fcgiwrap: the script
                                // has corral send a file or location.
                                if let Some(target) =
                                    super::app_response::field(&h, "X-Accel-Redirect").filter(|_| accel)
                                {
                                    if !target.starts_with(['/', '@']) {
                                        return self.cgi_abort(
                                            c,
                                            502,
                                            "X-Accel-Redirect does not name a local URI (\"/...\") or a named location (\"@name\")",
                                        );
                                    }
                                    let (carried, ctype) = super::app_response::carried_fields(&h);
                                    c.carried_type = ctype;
                                    return self.internal_redirect(c, &target, carried, io);
                                }
                                if h.status.is_none()
                                    && h.location.as_deref().is_some_and(super::app_response::is_local)
                                {
                                    let loc = h.location.unwrap_or_default();
                                    return self.cgi_redirect(c, &loc, io);
                                }
                                super::app_response::drop_accel_fields(&mut h);
                                let rest = run.hdr.split_off(used);
                                let code = h
                                    .status
                                    .as_ref()
                                    .map_or(if h.location.is_some() { 302 } else { 200 }, |s| s.0);
                                let mut fr =
                                    std::mem::take(&mut cgi_of(&mut ex.handler).run.as_mut().expect("running").fr);
                                h.fields.splice(0..0, std::mem::take(&mut c.carried));
                                self.app_head(ex, &h, &mut fr, code, &rest, head_only);
                                cgi_of(&mut ex.handler).run.as_mut().expect("running").fr = fr;
                            }
                        }
                    }
                    Some(n) => {
                        progress = true;
                        let before = ex.out.len();
                        run.fr.frame(&buf[..n], &mut ex.out, head_only);
                        ex.file_sent += (ex.out.len() - before) as u64;
                    }
                }
            }

            // To the client.
            let blocked = match write_out(&mut c.io, ex) {
                Ok((wrote, blocked)) => {
                    progress |= wrote;
                    blocked
                }
                Err(e) => {
                    crate::info!("client {} went away during CGI {}: {e}", c.peer.ip(), run_name(ex));
                    return Step::Wait(Next::Close);
                }
            };
            let run = cgi_of(&mut ex.handler).run.as_mut().expect("running");
            if run.fr.ended && ex.out_off == ex.out.len() {
                if !run.fr.framing_ok {
                    // Unsure where the next request starts.
                    ex.keep_alive = false;
                    ex.linger = true;
                } else if ex.body.is_some() {
                    if ex.keep_alive {
                        // The script did not read the whole body: the rest is
                        // read and dropped, and the connection goes on (its
                        // response promised so; a pipelined request waits).
                        ex.answered = true;
                        c.phase = Phase::Body;
                        c.deadline = self.clock.now + self.cfg.client_body_timeout;
                        return Step::Again;
                    }
                    ex.linger = true;
                }
                return self.finish(c, true);
            }

            // More request body from the socket, when the script can take it.
            let wants_body = ex.body.is_some() && run.to_script.is_empty() && c.rstart == c.rend;
            let limit = self.cgi_cfg(ex.site, cgi_of(&mut ex.handler).rule).timeout;
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
                    // The timeout bounds silence, not the whole exchange: a
                    // long download that keeps moving is not cut off.
                    c.deadline = self.clock.now + limit;
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

    /// Kills the script and answers `code` if nothing was sent yet, else
    /// closes the connection.
    fn cgi_abort(&mut self, c: &mut Conn, code: u16, why: &str) -> Step {
        let ex = c.ex.take();
        let name = ex.as_ref().map(run_name).unwrap_or_default();
        // A client's fault (4xx) is news, not an error of the server (as for FastCGI).
        if code >= 500 {
            crate::error!("CGI {name}: {why}, client: {}", c.peer.ip());
        } else {
            crate::info!("CGI {name}: {why}, client: {}", c.peer.ip());
        }
        let head_sent = ex
            .as_ref()
            .and_then(|e| cgi_ref(&e.handler))
            .and_then(|st| st.run.as_ref())
            .is_some_and(|r| r.fr.head_sent);
        if head_sent {
            if let Some(mut ex) = ex {
                self.end_handler(&mut ex, true);
                self.wbufs.put(std::mem::take(&mut ex.out));
            }
            return Step::Wait(Next::Close);
        }
        self.fail(c, code, Vec::new(), ex);
        Step::Again
    }

    /// `Location: /local/path` without a Status: serve that path instead
    /// (RFC 3875 §6.2.2), as a GET.
    fn cgi_redirect(&mut self, c: &mut Conn, loc: &str, io: &mut Io<'_>) -> Step {
        self.internal_redirect(c, loc, Vec::new(), io)
    }

    pub(super) fn cgi_timeout(&mut self, c: &mut Conn) -> Option<Next> {
        let ex = c.ex.as_ref()?;
        let st = cgi_ref(&ex.handler)?;
        let (code, why) = if st.spool.is_some() {
            (408, "the client timed out sending the request body".to_string())
        } else {
            let limit = self.cgi_cfg(ex.site, st.rule).timeout;
            (504, format!("timed out after {limit:?}, killed"))
        };
        match self.cgi_abort(c, code, &why) {
            Step::Again => Some(Next::Write),
            Step::Wait(n) => Some(n),
        }
    }

    /// Detaches the script from the exchange: kill it if asked, release its
    /// concurrency slot, and keep its process until it is reaped.
    pub(super) fn cgi_end(&mut self, ex: &mut Exchange, kill: bool) {
        if !matches!(ex.handler, Handler::Cgi(_)) {
            return;
        }
        cgi_of(&mut ex.handler).spool = None;
        if std::mem::take(&mut cgi_of(&mut ex.handler).slot) {
            let rule = cgi_of(&mut ex.handler).rule;
            if let Some(n) = lock(&self.cgi_running).get_mut(ex.site).and_then(|v| v.get_mut(rule)) {
                *n = n.saturating_sub(1);
            }
        }
        if let Some(mut run) = cgi_of(&mut ex.handler).run.take() {
            run.last_stderr();
            if kill {
                self.collect_spawned();
                lock(&self.children).kill(run.id);
            }
            let timeout = self.cgi_cfg(ex.site, cgi_of(&mut ex.handler).rule).timeout;
            lock(&self.children).detach(run.id, self.clock.now + timeout);
        }
    }
}

fn run_name(ex: &Exchange) -> String {
    let Some(st) = cgi_ref(&ex.handler) else {
        return String::new();
    };
    match (&st.run, &st.spool) {
        (Some(r), _) => r.name.clone(),
        (None, Some(s)) => s.target.script_name.clone(),
        (None, None) => String::new(),
    }
}
