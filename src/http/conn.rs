//! One HTTP/1.1 connection: read a head, frame (and discard) the body,
//! produce the response, write it, then keep-alive, pipeline or close.
//! This is where a request becomes a response.

use std::fs::File;
use std::io::{self, IoSlice, Read};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use super::body::{Body, BodyError};
use super::limits::Admit;
use super::reply::{self, Reply, ReplyBody};
use super::request::{self, Method, Parsed, Request};
use super::router::Routed;
use super::transport::Transport;
use super::{HttpService, static_file};
use crate::config::EventMode;
use crate::event::{Io, Next, Ready, Reclaim};

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// How long a new connection may stay silent before a full worker may
/// close it to make room.
const FRESH_GRACE: std::time::Duration = std::time::Duration::from_secs(1);
/// Internal redirects (try_files, error_page) one request may go through.
pub(super) const MAX_REDIRECTS: u8 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for (the rest of) a request head; idle when no byte is buffered.
    Head,
    /// Reading the request body (discarded for static files).
    Body,
    /// Writing the response.
    Send,
    /// A handler drives the exchange (a CGI script: the body to its stdin,
    /// its output to the client).
    Handler,
    /// `limit_req` holds the request back; a timer resumes it.
    Delay,
    /// Response sent, write side shut: read and drop until the peer closes,
    /// so unread input never turns our close into a reset.
    Linger,
}

pub struct Conn {
    /// The socket, or TLS over it.
    pub io: Transport,
    pub peer: SocketAddr,
    pub listener: usize,
    pub phase: Phase,
    /// Read buffer from the pool, empty (no allocation) while idle.
    pub(super) rbuf: Vec<u8>,
    /// Unconsumed bytes are `rbuf[rstart..rend]`.
    pub(super) rstart: usize,
    pub(super) rend: usize,
    /// The socket may have unread bytes (edge mode: until EAGAIN).
    pub(super) readable: bool,
    /// The peer shut its write side and we read up to its end.
    pub(super) eof: bool,
    /// epoll reported the peer's shutdown: its end-of-file waits behind
    /// the queued bytes, so reading goes on until it is seen.
    pub(super) fin_pending: bool,
    pub deadline: Instant,
    served: u32,
    pub(super) ex: Option<Exchange>,
    /// Internal redirects followed for the current request.
    pub(super) redirects: u8,
    /// The limit_conn entry (+1) the request in progress holds, 0 for none.
    pub(super) limit_held: u32,
    /// A request `limit_req` delays, and where its head is.
    delayed: Option<Box<(Box<Request>, std::ops::Range<usize>)>>,
    /// Header fields an application's X-Accel-Redirect keeps for the
    /// response of the URI it named (text values only), and its
    /// Content-Type (which replaces the file's).
    pub(super) carried: Vec<(String, Vec<u8>)>,
    pub(super) carried_type: Option<String>,
    /// The local address, once asked for (CGI and FastCGI want it per request).
    local: Option<SocketAddr>,
    /// A request whose application failed, to answer with the status's
    /// `error_page` (see `app_error_page`).
    pub(super) pending_error: Option<(Box<Request>, u16, Vec<u8>)>,
}

/// The request in flight and its response.
pub(super) struct Exchange {
    pub(super) req: Option<Box<Request>>,
    /// The raw request line of a request refused before it was parsed.
    line: Vec<u8>,
    pub(super) site: usize,
    pub(super) status: u16,
    pub(super) keep_alive: bool,
    /// Lingering close after the response (unread input may follow).
    pub(super) linger: bool,
    pub(super) body: Option<Body>,
    /// The answer may go before the whole body came (nothing reads it).
    pub(super) early: bool,
    /// The answer went before the body was read; the body is dropped.
    pub(super) answered: bool,
    pub(super) continue_left: usize,
    pub(super) out: Vec<u8>,
    pub(super) out_off: usize,
    pub(super) head_len: usize,
    /// What produces the response: the state of its handler.
    pub(super) handler: Handler,
    file: Option<(Arc<File>, i64, u64)>,
    pub(super) file_sent: u64,
    /// A body held in (cache) memory, `data[off..end]` still to send; it
    /// leaves with the head in one `writev`, without being copied.
    mem: Option<(Arc<[u8]>, usize, usize)>,
    /// A body made as the socket drains (compressed, multipart ranges).
    /// (Boxed twice: a thin pointer keeps every slot's state small.)
    #[allow(clippy::redundant_allocation)]
    stream: Option<Box<Box<dyn super::reply::Produce + Send>>>,
    /// The request head as received, kept while an application answers:
    /// the URI it redirects to internally (X-Accel-Redirect, a local
    /// Location, an error_page) gets the client's headers, as in nginx.
    pub(super) raw_head: Vec<u8>,
}

impl Exchange {
    /// An exchange on `site`; `line` is the raw request line of a request
    /// refused before its head could be parsed (else empty).
    pub(super) fn new(site: usize, line: Vec<u8>) -> Exchange {
        Exchange {
            req: None,
            line,
            site,
            status: 0,
            keep_alive: false,
            linger: false,
            body: None,
            early: false,
            answered: false,
            continue_left: 0,
            out: Vec::new(),
            out_off: 0,
            head_len: 0,
            file: None,
            file_sent: 0,
            mem: None,
            stream: None,
            handler: Handler::Reply,
            raw_head: Vec::new(),
        }
    }

    /// The request target, for log messages.
    fn target(&self) -> std::borrow::Cow<'_, str> {
        self.req
            .as_ref()
            .map_or_else(|| String::from_utf8_lossy(&self.line), |r| r.sent_target().into())
    }
}

/// The handler of an exchange, each arm owned by its module: the
/// connection only writes what it produces.
pub(super) enum Handler {
    /// A reply rendered at once (static files, `return`, errors).
    Reply,
    /// A CGI script ([`super::cgi_exchange`]).
    Cgi(Box<super::cgi_exchange::CgiState>),
    /// A FastCGI application ([`super::fastcgi_exchange`]).
    FastCgi(Box<super::fastcgi_exchange::FcgiState>),
}

/// Where the bytes of a request head are (only CGI needs them again).
pub(super) enum HeadBytes {
    InBuf(std::ops::Range<usize>),
    Owned(Vec<u8>),
}

pub(super) enum Step {
    Again,
    Wait(Next),
}

impl Conn {
    pub fn new(io: Transport, peer: SocketAddr, listener: usize, deadline: Instant) -> Conn {
        Conn {
            io,
            peer,
            listener,
            phase: Phase::Head,
            rbuf: Vec::new(),
            rstart: 0,
            rend: 0,
            readable: false,
            eof: false,
            fin_pending: false,
            deadline,
            served: 0,
            ex: None,
            redirects: 0,
            limit_held: 0,
            delayed: None,
            carried: Vec::new(),
            carried_type: None,
            local: None,
            pending_error: None,
        }
    }

    /// The address the client connected to (one `getsockname` per connection).
    pub(super) fn local_addr(&mut self) -> Option<SocketAddr> {
        if self.local.is_none() {
            self.local = self.io.sock.local_addr().ok();
        }
        self.local
    }

    pub fn is_idle(&self) -> bool {
        self.phase == Phase::Head && self.rstart == self.rend
    }
}

impl HttpService {
    pub(super) fn on_ready(&mut self, c: &mut Conn, ready: Ready, io: &mut Io<'_>) -> Next {
        if ready.source != 0 {
            // A pipe of the running script.
            // A descriptor of the handler's own (a script's pipe).
            if let Some(ex) = c.ex.as_mut() {
                ex.handler.ready(&ready);
            }
        } else {
            if ready.readable {
                c.readable = true;
            }
            if ready.peer_closed {
                c.fin_pending = true;
                if self.client_left_application(c) {
                    return Next::Close;
                }
            }
            if ready.hangup && c.phase != Phase::Send {
                // A reset while a script or application has the request:
                // logged as the client cutting its body short (400) or
                // leaving (499), as when its FIN is read.
                if c.phase == Phase::Handler
                    && let Some(ex) = c.ex.as_mut()
                    && ex.status == 0
                {
                    ex.status = if ex.body.is_some() { 400 } else { 499 };
                }
                return Next::Close;
            }
        }
        loop {
            if let Some((req, code, head)) = c.pending_error.take() {
                self.begin_refused(c, req, HeadBytes::Owned(head), io, code);
                continue;
            }
            let step = match c.phase {
                Phase::Head => self.read_head(c, io),
                Phase::Body => self.read_body(c),
                Phase::Send => self.send(c),
                Phase::Handler => self.handler_step(c, io),
                Phase::Delay => match c.delayed.take() {
                    Some(d) if ready.woken => {
                        let (req, head) = *d;
                        self.begin(c, req, HeadBytes::InBuf(head), io);
                        Step::Again
                    }
                    d => {
                        c.delayed = d;
                        Step::Wait(Next::Pause)
                    }
                },
                Phase::Linger => self.linger(c),
            };
            match step {
                Step::Again => continue,
                // A FIN that came with the request itself (before there was
                // an application to leave) counts as the client leaving
                // too: the same answer whatever the timing.
                Step::Wait(_) if c.fin_pending && c.phase == Phase::Handler && self.client_left_application(c) => {
                    return Next::Close;
                }
                Step::Wait(next) => return next,
            }
        }
    }

    /// The client closed before its whole request body came (for a script
    /// or an application, which is stopped): logged as nginx does, 400
    /// when nothing was answered yet.
    pub(super) fn body_cut(&self, c: &mut Conn) -> Step {
        crate::info!("client {} closed before sending the whole body", c.peer.ip());
        if let Some(ex) = c.ex.as_mut()
            && ex.status == 0
        {
            ex.status = 400;
        }
        Step::Wait(Next::Close)
    }

    /// The client closed its side while a CGI script or a FastCGI
    /// application works on its request, with nothing more to read: it is
    /// gone, as nginx takes it (499). Closing kills the script, aborts the
    /// FastCGI request (FCGI_ABORT_REQUEST) or drops it from the queue
    /// before it reaches the application.
    fn client_left_application(&mut self, c: &mut Conn) -> bool {
        let gone = c.phase == Phase::Handler
            && c.rstart == c.rend
            && !c.io.has_buffered()
            && c.ex
                .as_ref()
                .is_some_and(|e| e.body.is_none() && matches!(e.handler, Handler::FastCgi(_) | Handler::Cgi(_)));
        if gone && let Some(ex) = c.ex.as_mut() {
            if ex.status == 0 {
                ex.status = 499;
            }
            crate::info!(
                "client {} closed the connection before the application answered \"{}\"",
                c.peer.ip(),
                crate::core::log::Esc(ex.target().as_bytes())
            );
        }
        gone
    }

    /// Reads more bytes into the buffer. `Ok(false)` means nothing was read
    /// now (wait for readiness); errors and EOF are reported as `Err`.
    pub(super) fn fill(&mut self, c: &mut Conn) -> io::Result<bool> {
        if !c.readable {
            return Ok(false);
        }
        if c.rbuf.is_empty() {
            c.rbuf = self.rbufs.get();
        }
        if c.rstart == c.rend {
            c.rstart = 0;
            c.rend = 0;
        } else if c.rend == c.rbuf.len() && c.rstart > 0 {
            c.rbuf.copy_within(c.rstart..c.rend, 0);
            c.rend -= c.rstart;
            c.rstart = 0;
        }
        let space = c.rbuf.len() - c.rend;
        if space == 0 {
            return Ok(false);
        }
        match c.io.read(&mut c.rbuf[c.rend..]) {
            Ok(0) => {
                c.eof = true;
                c.readable = false;
                Err(io::ErrorKind::UnexpectedEof.into())
            }
            Ok(n) => {
                c.rend += n;
                // A short read drained the socket, unless the peer's FIN is
                // still queued behind it (no new edge will announce it);
                // level mode reads once per event (TLS may hold decrypted
                // bytes no event announces).
                if (!c.io.may_read_more(n, space) && !c.fin_pending)
                    || (self.mode == EventMode::Level && !c.io.has_buffered())
                {
                    c.readable = false;
                }
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                c.readable = false;
                Ok(false)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }

    fn release_rbuf_if_empty(&mut self, c: &mut Conn) {
        if c.rstart == c.rend && !c.rbuf.is_empty() {
            self.rbufs.put(std::mem::take(&mut c.rbuf));
            c.rstart = 0;
            c.rend = 0;
        }
    }

    fn read_head(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Step {
        loop {
            if c.rstart < c.rend {
                match request::parse(&c.rbuf[c.rstart..c.rend], &self.parse_limits) {
                    Parsed::Done(mut req, len) => {
                        let head = c.rstart..c.rstart + len;
                        c.rstart += len;
                        c.redirects = 0;
                        c.carried.clear();
                        c.carried_type = None;
                        if c.io.is_tls_port() {
                            if c.io.plain_on_tls_port() {
                                self.plain_to_tls_port(c, req);
                                return Step::Again;
                            }
                            req.https = c.io.is_secure();
                        }
                        match self.admit(c, &req) {
                            Admit::Pass => self.begin(c, req, HeadBytes::InBuf(head), io),
                            Admit::Refuse(code) => self.begin_refused(c, req, HeadBytes::InBuf(head), io, code),
                            Admit::Delay(d) => {
                                // The head stays in the buffer: nothing reads meanwhile.
                                c.delayed = Some(Box::new((req, head)));
                                c.phase = Phase::Delay;
                                c.deadline = self.clock.now + d + self.cfg.send_timeout;
                                io.wake_at(std::time::Instant::now() + d);
                                return Step::Wait(Next::Pause);
                            }
                        }
                        return Step::Again;
                    }
                    Parsed::Error(code, line) => {
                        self.fail(c, code, line, None);
                        return Step::Again;
                    }
                    Parsed::Partial => {
                        if c.rend - c.rstart >= self.rbufs.size() {
                            let has_line = c.rbuf[c.rstart..c.rend].contains(&b'\n');
                            let code = if has_line { 431 } else { 414 };
                            self.fail(c, code, Vec::new(), None);
                            return Step::Again;
                        }
                    }
                }
            }
            let was_empty = c.rstart == c.rend;
            match self.fill(c) {
                Ok(true) => {
                    if was_empty {
                        c.deadline = self.clock.now + self.cfg.client_header_timeout;
                    }
                }
                Ok(false) => {
                    if c.rstart == c.rend {
                        self.release_rbuf_if_empty(c);
                        return Step::Wait(Next::Idle);
                    }
                    return Step::Wait(Next::Read);
                }
                Err(e) => {
                    if c.rstart < c.rend {
                        crate::info!(
                            "client {} closed the connection in the middle of a request head ({})",
                            c.peer.ip(),
                            if c.eof {
                                "end of file".to_string()
                            } else {
                                e.to_string()
                            }
                        );
                    }
                    return Step::Wait(Next::Close);
                }
            }
        }
    }

    /// A complete head: route it, build the response, decide on the body.
    /// Like `begin`, for a request head that is not in the read buffer.
    pub(super) fn begin_owned(&mut self, c: &mut Conn, req: Box<Request>, head: Vec<u8>, io: &mut Io<'_>) {
        self.begin(c, req, HeadBytes::Owned(head), io)
    }

    pub(super) fn begin(&mut self, c: &mut Conn, req: Box<Request>, head: HeadBytes, io: &mut Io<'_>) {
        self.begin_refused(c, req, head, io, 0)
    }

    /// Like `begin`; a non-zero `refusal` answers with that status instead
    /// of routing (a client limit was reached).
    fn begin_refused(&mut self, c: &mut Conn, mut req: Box<Request>, head: HeadBytes, io: &mut Io<'_>, refusal: u16) {
        let (server, server_caps) = self.select_site_caps(c.listener, req.host.as_deref());
        let mut refused = None;
        let (site, cgi) = if refusal != 0 {
            refused = Some(Reply::error(refusal, self.cfg.server_tokens));
            (server, false)
        } else if req.target == "*" {
            // `OPTIONS *` asks about the server, not a resource (RFC 9110 §9.3.7).
            refused = Some(server_options(self.cfg.server_tokens));
            (server, false)
        } else {
            match self.route(server, &server_caps, &mut req, c.peer.ip(), &mut c.redirects) {
                Routed::Serve { site, cgi } => {
                    // A directory's index file is another URI, routed again
                    // as nginx's index does: `/` finds index.php and the PHP
                    // location runs it (never sends its source).
                    if !cgi
                        && c.redirects < MAX_REDIRECTS
                        && !self.routes[server].matcher.is_empty()
                        && let Some(target) = self.index_uri(site, &req)
                    {
                        c.redirects += 1;
                        req.rewrite(&target);
                        return self.begin_refused(c, req, head, io, 0);
                    }
                    (site, cgi)
                }
                Routed::Reply { site, reply } => {
                    refused = Some(reply);
                    (site, false)
                }
                Routed::Close { site } => {
                    // `return 444`: nothing is sent; the access log says 444.
                    let mut ex = Exchange::new(site, Vec::new());
                    ex.status = 444;
                    ex.req = Some(req);
                    c.phase = Phase::Send;
                    c.deadline = self.clock.now + self.cfg.send_timeout;
                    c.ex = Some(ex);
                    return;
                }
            }
        };
        // Never served, whatever the location (a `return` included, as
        // nginx refuses them first): TRACE would echo credentials back, a
        // 2xx to CONNECT would start a tunnel (RFC 9110 §9.3.6, §9.3.8).
        let cgi = if matches!(req.method_name.as_ref(), "TRACE" | "CONNECT") {
            let mut r = Reply::error(405, self.cfg.server_tokens);
            r.header("Allow", "GET, HEAD, POST");
            r.close = req.method_name.as_ref() == "CONNECT";
            refused = Some(r);
            false
        } else {
            cgi
        };
        if cgi {
            let head_bytes = match &head {
                HeadBytes::InBuf(r) => c.rbuf.get(r.clone()).map(<[u8]>::to_vec).unwrap_or_default(),
                HeadBytes::Owned(v) => v.clone(),
            };
            let started = if self.sites[site].cfg.fastcgi.is_some() {
                self.begin_fastcgi(c, req, site, &head_bytes, io)
            } else {
                self.begin_cgi(c, req, site, &head_bytes, io)
            };
            match started {
                Ok(()) => {
                    if let Some(ex) = c.ex.as_mut() {
                        ex.raw_head = head_bytes;
                    }
                    return;
                }
                Err((r, code)) => {
                    req = r;
                    refused = code.map(|code| Reply::error(code, self.cfg.server_tokens));
                }
            }
        }
        let reply = match refused {
            Some(reply) => reply,
            None => {
                let mut ctx = static_file::Ctx {
                    site: &self.sites[site],
                    site_idx: site,
                    cache: &mut self.file_cache,
                    tokens: self.cfg.server_tokens,
                };
                static_file::serve(&mut ctx, &req)
            }
        };
        let mut reply = reply;
        if reply.status >= 300
            && !reply.own_body
            && req.error_status.is_none()
            && let Some(ep) = self.sites[site]
                .cfg
                .error_page
                .iter()
                .find(|e| e.status == reply.status)
        {
            if !ep.uri.starts_with(['/', '@']) {
                let code = match ep.answer {
                    Some(Some(n @ (301 | 302 | 303 | 307 | 308))) => n,
                    _ => 302,
                };
                let uri = ep.uri.clone();
                reply = Reply::error(code, self.cfg.server_tokens);
                reply.location = Some(uri);
            } else if c.redirects < MAX_REDIRECTS {
                // The page is routed as a GET of its URI; its answer gets the
                // error's status unless `=code` / `=` says otherwise.
                c.redirects += 1;
                req.error_status = Some(match ep.answer {
                    None => reply.status,
                    Some(Some(n)) => n,
                    Some(None) => 0,
                });
                // To a URI as a GET; to a named location with its own
                // method (nginx).
                if req.method != Method::Head && !ep.uri.starts_with('@') {
                    req.method = Method::Get;
                    req.method_name = "GET".into();
                }
                let uri = ep.uri.clone();
                req.redirect_to(&uri);
                return self.begin_refused(c, req, head, io, 0);
            }
        }
        // The page's content takes the error's status; an error or a
        // redirect of the page's own (missing, a directory, a `return`)
        // is answered as itself, as nginx does.
        if let Some(st) = req.error_status.filter(|&st| st != 0)
            && (reply.status < 300 || reply.own_body)
        {
            reply.status = st;
        }
        if let Some(l) = reply.location.take() {
            reply.location = Some(self.absolute_location(c, &req, site, l));
        }
        self.sites[site].set_charset(&mut reply);
        self.sites[site].added_headers(reply.status, self.clock.unix(), &mut reply.extra);
        // The application's Content-Type names what it sends, unless the
        // answer is an error page of ours.
        if let Some(ct) = c.carried_type.take()
            && reply.status < 300
        {
            reply.content_type = None;
            reply.charset = None;
            reply.header("Content-Type", ct);
        }
        for (name, value) in std::mem::take(&mut c.carried) {
            reply.header(&name, String::from_utf8_lossy(&value));
        }
        if let Some(gz) = &self.sites[site].cfg.gzip {
            super::gzip::filter(&mut reply, gz, &req);
        }
        let mut keep_alive = req.keep_alive && !reply.close && self.may_keep_alive(c);
        let mut linger = reply.close;
        // A refusal that closes the connection does not read the body.
        let mut body = req.body.take().filter(|_| !reply.close);
        let mut continue_left = 0;
        if body.is_some() && req.expect_continue {
            if reply.status >= 300 {
                // Do not invite a body we would only discard: answer, then close.
                body = None;
                keep_alive = false;
                linger = true;
            } else {
                continue_left = CONTINUE.len();
            }
        }
        let mut ex = Exchange::new(site, Vec::new());
        ex.keep_alive = keep_alive;
        ex.linger = linger;
        ex.body = body;
        ex.continue_left = continue_left;
        let head_only = req.method == Method::Head;
        let minor = req.minor;
        ex.req = Some(req);
        self.render(&mut ex, reply, head_only, minor);
        // A body nobody reads is dropped first as far as it has come (bad
        // framing there is still a 400); then the answer goes without
        // waiting for the rest, which is dropped after it (nginx alike). After
        // "100 Continue" the whole body comes first, as invited.
        ex.early = continue_left == 0;
        c.phase = if ex.body.is_some() {
            c.deadline = self.clock.now + self.cfg.client_body_timeout;
            Phase::Body
        } else {
            c.deadline = self.clock.now + self.cfg.send_timeout;
            Phase::Send
        };
        c.ex = Some(ex);
    }

    /// For a directory URI, the URI of its first index entry that exists
    /// (with the request's query).
    fn index_uri(&self, site: usize, req: &Request) -> Option<String> {
        // nginx's index takes GET, HEAD and POST (a form posted to "/").
        if !matches!(req.method_name.as_ref(), "GET" | "HEAD" | "POST") {
            return None;
        }
        let norm = req.normalized()?;
        if !norm.ends_with(b"/") {
            return None;
        }
        // The directory: the URI's under the root, or the one `alias` names.
        let mut dir = req.file.as_deref().unwrap_or(&norm[1..]).to_vec();
        if !dir.is_empty() && !dir.ends_with(b"/") {
            dir.push(b'/');
        }
        let s = &self.sites[site];
        let name = s.cfg.index.iter().find(|name| {
            let mut rel = dir.clone();
            rel.extend_from_slice(name.as_bytes());
            // A directory counts too (nginx): it is then redirected to
            // with its slash.
            s.is_dir(&rel).is_some()
        })?;
        let mut target = super::path::encode(&norm);
        target.push_str(&super::path::encode(name.as_bytes()));
        if let Some(q) = req.query() {
            target.push('?');
            target.push_str(q);
        }
        Some(target)
    }

    /// A `Location` of corral's own that is a path, as nginx's
    /// `absolute_redirect` writes it: `scheme://host[:port]` before it.
    /// (A bare `//host/x` or `/\\host` could otherwise send a browser away.)
    fn absolute_location(&self, c: &mut Conn, req: &Request, site: usize, loc: String) -> String {
        let cfg = &self.sites[site].cfg;
        if !loc.starts_with('/') || !cfg.absolute_redirect {
            return loc;
        }
        let named = cfg
            .server_name
            .first()
            .filter(|n| cfg.server_name_in_redirect && !n.is_empty() && !n.starts_with('~') && !n.contains('*'));
        let local = c.local_addr();
        let host = match (named, req.host.as_deref().filter(|h| !h.is_empty()), local) {
            (Some(n), _, _) => n.trim_start_matches('.').to_string(),
            (None, Some(h), _) => h.to_string(),
            (None, None, Some(SocketAddr::V6(a))) => format!("[{}]", a.ip()),
            (None, None, Some(a)) => a.ip().to_string(),
            (None, None, None) => return loc,
        };
        let scheme = if req.https { "https" } else { "http" };
        let port = local.map_or(0, |a| a.port());
        let default = if req.https { 443 } else { 80 };
        if cfg.port_in_redirect && port != default && port != 0 {
            format!("{scheme}://{host}:{port}{loc}")
        } else {
            format!("{scheme}://{host}{loc}")
        }
    }

    pub(super) fn may_keep_alive(&self, c: &Conn) -> bool {
        !self.draining && !c.eof && !self.cfg.keepalive_timeout.is_zero() && c.served + 1 < self.cfg.keepalive_requests
    }

    /// Answers with an error status and closes afterwards. `ex` is the
    /// exchange being replaced, if the request head had been accepted.
    pub(super) fn fail(&mut self, c: &mut Conn, code: u16, line: Vec<u8>, ex: Option<Exchange>) {
        // A HEAD refused while its head was parsed still gets no content
        // (RFC 9110 §9.3.2): the head, still in the buffer, says what it was.
        let head_line = c.rbuf.get(c.rstart..c.rend).is_some_and(|b| b.starts_with(b"HEAD "));
        let mut ex = ex.unwrap_or_else(|| Exchange::new(self.select_site(c.listener, None), line));
        if ex.out.capacity() > 0 {
            self.wbufs.put(std::mem::take(&mut ex.out));
        }
        ex.file = None;
        ex.mem = None;
        ex.stream = None;
        ex.body = None;
        self.end_handler(&mut ex, true);
        ex.keep_alive = false;
        ex.linger = true;
        ex.out_off = 0;
        let head_only = ex.req.as_ref().map_or(head_line, |r| r.method == Method::Head);
        let mut reply = Reply::fatal(code, self.cfg.server_tokens);
        self.sites[ex.site].set_charset(&mut reply);
        self.render(&mut ex, reply, head_only, 1);
        c.phase = Phase::Send;
        c.deadline = self.clock.now + self.cfg.send_timeout;
        c.ex = Some(ex);
    }

    /// A plain HTTP request sent to a TLS port: nginx's 400 page, then close.
    fn plain_to_tls_port(&mut self, c: &mut Conn, req: Box<Request>) {
        crate::info!("client {} sent a plain HTTP request to a TLS port", c.peer.ip());
        let mut ex = Exchange::new(self.select_site(c.listener, req.host.as_deref()), Vec::new());
        let (head_only, minor) = (req.method == Method::Head, req.minor);
        ex.req = Some(req);
        ex.linger = true;
        let mut reply = Reply::fatal(400, self.cfg.server_tokens);
        let page = super::status::plain_http_page(self.cfg.server_tokens);
        reply.length = Some(page.len() as u64);
        reply.body = ReplyBody::Bytes(page);
        self.sites[ex.site].set_charset(&mut reply);
        self.render(&mut ex, reply, head_only, minor);
        c.phase = Phase::Send;
        c.deadline = self.clock.now + self.cfg.send_timeout;
        c.ex = Some(ex);
    }

    /// Serialises `reply` into the exchange's output: the head, plus the
    /// body when it is small enough to leave in the same write.
    fn render(&mut self, ex: &mut Exchange, mut reply: Reply, head_only: bool, minor: u8) {
        super::byteranges::finish(&mut reply);
        ex.status = reply.status;
        ex.out = self.wbufs.get_empty();
        let keep = ex.keep_alive && !reply.close;
        reply::write_head(
            &mut ex.out,
            &reply,
            self.clock.http_date(),
            &self.server_header,
            keep,
            minor,
        );
        ex.head_len = ex.out.len();
        if head_only || !super::status::has_content(reply.status) {
            return;
        }
        match reply.body {
            ReplyBody::Empty => {}
            ReplyBody::Bytes(b) => ex.out.extend_from_slice(&b),
            ReplyBody::Shared { data, offset, len } => {
                if len as u64 <= self.cfg.inline_file_max {
                    ex.out.extend_from_slice(&data[offset..offset + len]);
                } else {
                    ex.mem = Some((data, offset, offset + len));
                }
            }
            ReplyBody::Stream(stream) => ex.stream = Some(Box::new(stream)),
            // Made into a stream by `byteranges::finish` above.
            ReplyBody::Ranges { .. } => {}
            ReplyBody::File { file, offset, len } => {
                if len <= self.cfg.inline_file_max {
                    // Positioned read: the descriptor may be shared with the cache.
                    let start = ex.out.len();
                    ex.out.resize(start + len as usize, 0);
                    if let Err(e) = file.read_exact_at(&mut ex.out[start..], offset) {
                        crate::error!("reading \"{}\" failed: {e}", ex.target());
                        // The head promised a length we cannot deliver: send
                        // nothing and close.
                        ex.out.clear();
                        ex.head_len = 0;
                        ex.keep_alive = false;
                        ex.linger = false;
                    }
                } else {
                    ex.file = Some((file, offset as i64, len));
                }
            }
        }
    }

    fn read_body(&mut self, c: &mut Conn) -> Step {
        loop {
            let Some(ex) = c.ex.as_mut() else {
                return Step::Wait(Next::Close);
            };
            if ex.continue_left > 0 {
                let from = CONTINUE.len() - ex.continue_left;
                match c.io.write(&CONTINUE[from..]) {
                    Ok(n) => ex.continue_left -= n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait(Next::Write),
                    Err(_) => return Step::Wait(Next::Close),
                }
                continue;
            }
            if c.rstart < c.rend {
                let Some(body) = ex.body.as_mut() else {
                    c.phase = Phase::Send;
                    return Step::Again;
                };
                match body.feed(&c.rbuf[c.rstart..c.rend], &mut |_| {}) {
                    Ok((n, done)) => {
                        c.rstart += n;
                        if done {
                            ex.body = None;
                            c.phase = Phase::Send;
                            c.deadline = self.clock.now + self.cfg.send_timeout;
                            return Step::Again;
                        }
                    }
                    Err(e) if ex.answered => {
                        // Too late for an error page: the answer is out.
                        crate::info!("client {} sent a bad request body after its answer: {e:?}", c.peer.ip());
                        ex.body = None;
                        ex.keep_alive = false;
                        ex.linger = true;
                        c.phase = Phase::Send;
                        return Step::Again;
                    }
                    Err(e) => {
                        let code = if e == BodyError::TooLarge { 413 } else { 400 };
                        let ex = c.ex.take();
                        self.fail(c, code, Vec::new(), ex);
                        return Step::Again;
                    }
                }
            }
            match self.fill(c) {
                // A body dropped after the answer gets lingering_timeout
                // between reads, as nginx discards one.
                Ok(true) if c.ex.as_ref().is_some_and(|e| e.answered) => {
                    c.deadline = self.clock.now + self.cfg.lingering_timeout
                }
                Ok(true) => c.deadline = self.clock.now + self.cfg.client_body_timeout,
                // (`early` was set only where no "100 Continue" was owed.)
                Ok(false) if c.ex.as_ref().is_some_and(|e| e.early && !e.answered) => {
                    c.phase = Phase::Send;
                    c.deadline = self.clock.now + self.cfg.send_timeout;
                    return Step::Again;
                }
                Ok(false) => return Step::Wait(Next::Read),
                Err(e) => {
                    crate::info!(
                        "client {} closed the connection before sending the whole request body ({})",
                        c.peer.ip(),
                        if c.eof {
                            "end of file".to_string()
                        } else {
                            e.to_string()
                        }
                    );
                    if c.ex.as_ref().is_some_and(|ex| ex.answered) {
                        return self.finish(c, false);
                    }
                    // Logged as nginx does: 400, nothing sent.
                    if let Some(ex) = c.ex.as_mut() {
                        ex.status = 400;
                        ex.out_off = ex.head_len;
                    }
                    if let Some(ex) = c.ex.as_ref() {
                        self.log_exchange(c, ex);
                    }
                    return Step::Wait(Next::Close);
                }
            }
        }
    }

    fn send(&mut self, c: &mut Conn) -> Step {
        let Some(ex) = c.ex.as_mut() else {
            return Step::Wait(Next::Close);
        };
        let mut progressed = false;
        let result: io::Result<()> = loop {
            if let Some((data, off, end)) = ex.mem.as_mut()
                && *off < *end
            {
                let head = &ex.out[ex.out_off..];
                let r = if head.is_empty() {
                    c.io.write(&data[*off..*end])
                } else {
                    c.io.write_vectored(&[IoSlice::new(head), IoSlice::new(&data[*off..*end])])
                };
                match r {
                    Ok(n) => {
                        let from_head = n.min(head.len());
                        ex.out_off += from_head;
                        *off += n - from_head;
                        ex.file_sent += (n - from_head) as u64;
                        progressed = true;
                    }
                    Err(e) => break Err(e),
                }
                continue;
            }
            if ex.out_off < ex.out.len() {
                let buf = &ex.out[ex.out_off..];
                let r = if ex.file.is_some() {
                    c.io.write_more(buf)
                } else {
                    c.io.write(buf)
                };
                match r {
                    Ok(n) => {
                        ex.out_off += n;
                        progressed = true;
                    }
                    Err(e) => break Err(e),
                }
                continue;
            }
            if let Some((file, off, left)) = ex.file.as_mut() {
                if *left == 0 {
                    ex.file = None;
                    continue;
                }
                match c.io.send_file(file, off, (*left).min(1 << 30) as usize) {
                    Ok(0) => {
                        break Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
                    }
                    Ok(n) => {
                        *left -= n as u64;
                        ex.file_sent += n as u64;
                        progressed = true;
                    }
                    Err(e) => break Err(e),
                }
                continue;
            }
            if let Some(stream) = ex.stream.as_mut() {
                // The next piece, once the previous one is out.
                ex.file_sent += (ex.out.len() - ex.head_len) as u64;
                ex.head_len = 0;
                ex.out.clear();
                ex.out_off = 0;
                match stream.produce(&mut ex.out) {
                    Ok(true) => {}
                    Ok(false) => ex.stream = None,
                    Err(e) => break Err(e),
                }
                continue;
            }
            break Ok(());
        };
        match result {
            Ok(()) if ex.body.is_some() => {
                // Answered before the body came: read it (and drop it) next,
                // once TLS has let the answer go too.
                if c.io.wants_write() {
                    match c.io.flush() {
                        Ok(true) => {}
                        Ok(false) => return Step::Wait(Next::Write),
                        Err(_) => return self.finish(c, false),
                    }
                }
                ex.answered = true;
                c.phase = Phase::Body;
                c.deadline = self.clock.now + self.cfg.lingering_timeout;
                Step::Again
            }
            Ok(()) => self.finish(c, true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if progressed {
                    c.deadline = self.clock.now + self.cfg.send_timeout;
                }
                Step::Wait(Next::Write)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Step::Again,
            Err(e) => {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    crate::error!("{} while sending \"{}\" to {}", e, ex.target(), c.peer.ip());
                } else {
                    crate::info!("writing to {} failed: {e}", c.peer.ip());
                }
                self.finish(c, false)
            }
        }
    }

    /// The response is out (or failed): log it, then keep-alive or close.
    pub(super) fn finish(&mut self, c: &mut Conn, mut ok: bool) -> Step {
        // TLS may still hold the end of the response, encrypted: it leaves
        // before the exchange ends (the send phase comes back here).
        if ok && c.io.wants_write() {
            match c.io.flush() {
                Ok(true) => {}
                Ok(false) => {
                    if c.phase != Phase::Send {
                        c.phase = Phase::Send;
                        c.deadline = self.clock.now + self.cfg.send_timeout;
                    }
                    return Step::Wait(Next::Write);
                }
                Err(_) => ok = false,
            }
        }
        let Some(mut ex) = c.ex.take() else {
            return Step::Wait(Next::Close);
        };
        self.end_handler(&mut ex, false);
        self.release_limit(c);
        self.log_exchange(c, &ex);
        self.wbufs.put(std::mem::take(&mut ex.out));
        c.served += 1;
        // A response that promised keep-alive is honoured even while
        // draining: the client may already be sending its next request,
        // which gets `Connection: close`. Closing here instead is the race
        // that makes reloads lose requests.
        if ok && ex.keep_alive {
            c.phase = Phase::Head;
            if c.rstart == c.rend {
                c.deadline = self.clock.now + self.idle_timeout();
                self.release_rbuf_if_empty(c);
            } else {
                c.deadline = self.clock.now + self.cfg.client_header_timeout;
            }
            return Step::Again;
        }
        if ok && (ex.linger || c.rstart < c.rend || c.readable) {
            self.start_linger(c);
            return Step::Again;
        }
        Step::Wait(Next::Close)
    }

    /// Idle keep-alive lifetime: short while draining.
    fn idle_timeout(&self) -> std::time::Duration {
        if self.draining {
            self.cfg.drain_idle_timeout.min(self.cfg.keepalive_timeout)
        } else {
            self.cfg.keepalive_timeout
        }
    }

    /// Shut our side, then read and drop until the peer closes.
    fn start_linger(&mut self, c: &mut Conn) {
        c.io.shutdown_write();
        c.phase = Phase::Linger;
        c.deadline = self.clock.now + self.cfg.lingering_timeout;
    }

    fn linger(&mut self, c: &mut Conn) -> Step {
        c.rstart = 0;
        c.rend = 0;
        if c.rbuf.is_empty() {
            c.rbuf = self.rbufs.get();
        }
        loop {
            // Raw bytes, dropped undecrypted.
            match (&c.io.sock).read(&mut c.rbuf) {
                Ok(0) => return Step::Wait(Next::Close),
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait(Next::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Step::Wait(Next::Close),
            }
        }
    }

    pub(super) fn log_exchange(&mut self, c: &Conn, ex: &Exchange) {
        let Some(log) = self.site_log[ex.site] else { return };
        let req = ex.req.as_deref();
        let body_bytes = (ex.out_off.saturating_sub(ex.head_len)) as u64 + ex.file_sent;
        let user = req
            .and_then(|r| r.authorization.as_deref())
            .and_then(crate::config::htpasswd::basic_credentials)
            .map(|(u, _)| u);
        let entry = super::access_log::Entry {
            addr: c.peer.ip(),
            time: self.clock.log_time(),
            request: match req {
                Some(r) => super::access_log::RequestLine::Parsed(&r.method_name, r.sent_target(), r.minor),
                None => super::access_log::RequestLine::Raw(&ex.line),
            },
            status: ex.status,
            body_bytes,
            referer: req.and_then(|r| r.referer.as_deref()),
            user_agent: req.and_then(|r| r.user_agent.as_deref()),
            user: user.as_deref(),
        };
        self.logs[log].log(&entry);
    }

    /// Graceful stop: no new keep-alive; an idle connection gets a short
    /// grace for a last request, a busy one ends after its response.
    pub(super) fn on_drain(&mut self, c: &mut Conn) -> Next {
        match c.phase {
            Phase::Head if c.rstart == c.rend => {
                c.deadline = c.deadline.min(self.clock.now + self.idle_timeout());
                Next::Idle
            }
            Phase::Linger => Next::Idle,
            Phase::Send => Next::Write,
            // A spooling body still comes from the socket.
            Phase::Handler if c.ex.as_ref().is_some_and(|e| e.handler.reads_body()) => Next::Read,
            Phase::Handler | Phase::Delay => Next::Pause,
            Phase::Body if c.ex.as_ref().is_some_and(|e| e.continue_left > 0) => Next::Write,
            _ => Next::Read,
        }
    }

    /// The worker is full: an idle connection may go unless a request
    /// just arrived on it; a lingering one goes after a last read. A new
    /// connection gets a second to send its first bytes, which may still
    /// be on their way (closing it then would reset a request in flight).
    pub(super) fn on_reclaim(&mut self, c: &mut Conn) -> Reclaim {
        match c.phase {
            Phase::Head if c.rstart == c.rend => match c.io.sock.peek(&mut [0u8; 1]) {
                Ok(n) if n > 0 => Reclaim::Busy,
                Ok(_) => Reclaim::Close, // the peer is gone
                // A new connection's deadline is its accept time plus the header timeout.
                Err(_)
                    if c.served == 0 && self.clock.now + self.cfg.client_header_timeout < c.deadline + FRESH_GRACE =>
                {
                    Reclaim::Keep
                }
                Err(_) => Reclaim::Close,
            },
            Phase::Linger => {
                let _ = self.linger(c);
                Reclaim::Close
            }
            _ => Reclaim::Busy,
        }
    }

    /// The worker is full and nothing idle can go: a short 503 without
    /// reading the request, then a lingering close (what the client sends
    /// meanwhile is read and dropped, so the close does not reset the 503
    /// away before the client reads it).
    pub(super) fn refuse_conn(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) -> Conn {
        let body = "<html>\r\n<head><title>503 Service Unavailable</title></head>\r\n<body>\r\n<center><h1>503 Service Unavailable</h1></center>\r\n</body>\r\n</html>\r\n";
        let msg = format!(
            "HTTP/1.1 503 Service Unavailable\r\nServer: {}\r\nDate: {}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}",
            self.server_header,
            self.clock.http_date(),
            body.len()
        );
        // A new socket's send buffer takes this whole.
        let mut io = Transport::plain(stream);
        let _ = io.write(msg.as_bytes());
        let mut c = Conn::new(io, peer, listener, self.clock.now);
        self.start_linger(&mut c);
        c
    }

    /// The connection is going away; give its buffers back and log a
    /// response that was cut short.
    pub(super) fn on_closed(&mut self, mut c: Conn) {
        c.io.closing();
        self.release_limit(&mut c);
        if let Some(mut ex) = c.ex.take() {
            self.end_handler(&mut ex, true);
            if c.phase == Phase::Send || c.phase == Phase::Handler {
                self.log_exchange(&c, &ex);
            }
            self.wbufs.put(std::mem::take(&mut ex.out));
        }
        if !c.rbuf.is_empty() {
            self.rbufs.put(std::mem::take(&mut c.rbuf));
        }
    }

    pub(super) fn on_expired(&mut self, c: &mut Conn, now: Instant) -> Option<Next> {
        if now < c.deadline {
            return None;
        }
        match c.phase {
            Phase::Head if c.rstart == c.rend => {
                if self.draining {
                    // The client may be sending right now: no reset, no loss of
                    // what it already sent being misread as our answer.
                    self.start_linger(c);
                    return Some(Next::Read);
                }
            }
            Phase::Head => {
                crate::info!("client {} timed out reading the request head", c.peer.ip());
                // nginx logs it as 408 (slowloris shows in the access log):
                // with what the request line was so far.
                let got = &c.rbuf[c.rstart..c.rend];
                let line = got.split(|&b| b == b'\n').next().unwrap_or(b"");
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let mut ex = Exchange::new(
                    self.select_site(c.listener, None),
                    line[..line.len().min(2048)].to_vec(),
                );
                ex.status = 408;
                self.log_exchange(c, &ex);
            }
            Phase::Body if c.ex.as_ref().is_some_and(|e| e.answered) => {
                crate::info!(
                    "client {} timed out sending the rest of a request body after its answer",
                    c.peer.ip()
                );
                // Its answer went out: the access log has it.
                if let Some(ex) = c.ex.as_ref() {
                    self.log_exchange(c, ex);
                }
            }
            Phase::Body => crate::info!("client {} timed out sending the request body", c.peer.ip()),
            Phase::Send => crate::info!("client {} timed out receiving the response", c.peer.ip()),
            Phase::Handler => return self.handler_timeout(c),
            Phase::Delay | Phase::Linger => {}
        }
        Some(Next::Close)
    }
}

/// The answer to `OPTIONS *`: what the server as a whole may accept.
fn server_options(tokens: bool) -> Reply {
    let mut r = Reply::error(200, tokens);
    r.content_type = None;
    r.length = Some(0);
    r.body = ReplyBody::Empty;
    r.header("Allow", "GET, HEAD, POST, OPTIONS");
    r
}
