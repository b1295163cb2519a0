//! The handlers an exchange can have besides a plain reply (a CGI script,
//! a FastCGI application), behind one face for the connection: readiness
//! of their own descriptors, a step, a timeout, an end. Also what they
//! share: the internal redirect an application's answer can ask for.

use super::HttpService;
use super::body::{Body, BodyError};
use super::conn::{Conn, Handler, Step};
use super::request;
use crate::event::{Io, Next, Ready};

impl Handler {
    /// A descriptor the handler added (1..=3) is ready.
    pub(super) fn ready(&mut self, ready: &Ready) {
        match self {
            Handler::Cgi(st) => st.ready(ready.source),
            Handler::FastCgi(st) => st.ready(ready),
            Handler::Reply => {}
        }
    }

    /// The handler is still reading the request body from the socket.
    pub(super) fn reads_body(&self) -> bool {
        match self {
            Handler::Cgi(st) => st.reads_body(),
            Handler::FastCgi(st) => st.reads_body(),
            Handler::Reply => false,
        }
    }
}

impl HttpService {
    /// An application's response head, as the client gets it (the
    /// location's added headers, the `gzip` filter), and the first body
    /// bytes `rest` that came with it, framed by `fr`.
    pub(super) fn app_head(
        &self,
        ex: &mut super::conn::Exchange,
        h: &crate::cgi::response::Head,
        fr: &mut super::app_response::Framing,
        code: u16,
        rest: &[u8],
        head_only: bool,
    ) {
        let minor = ex.req.as_ref().map_or(1, |r| r.minor);
        let date = self.clock.http_date().to_string();
        let site = &self.sites[ex.site];
        let mut added = String::new();
        site.added_headers(code, self.clock.unix(), &mut added);
        let gzip = site.cfg.gzip.as_ref();
        super::app_response::write_head(ex, h, fr, &date, &self.server_header, minor, head_only, &added, gzip);
        let before = ex.out.len();
        fr.frame(rest, &mut ex.out, head_only);
        ex.file_sent += (ex.out.len() - before) as u64;
    }

    /// Moves whatever can move for the exchange's handler.
    pub(super) fn handler_step(&mut self, c: &mut Conn, io: &mut Io<'_>) -> Step {
        match c.ex.as_ref().map(|e| &e.handler) {
            Some(Handler::FastCgi(_)) => self.fcgi_step(c, io),
            _ => self.cgi_step(c, io),
        }
    }

    /// The connection's deadline passed while the handler runs.
    pub(super) fn handler_timeout(&mut self, c: &mut Conn) -> Option<Next> {
        match c.ex.as_ref().map(|e| &e.handler) {
            Some(Handler::FastCgi(_)) => self.fcgi_timeout(c),
            _ => self.cgi_timeout(c),
        }
    }

    /// Releases what the handler holds; `kill` when it did not finish.
    pub(super) fn end_handler(&mut self, ex: &mut super::conn::Exchange, kill: bool) {
        match &ex.handler {
            Handler::Cgi(_) => self.cgi_end(ex, kill),
            Handler::FastCgi(_) => self.fcgi_end(ex, kill),
            Handler::Reply => {}
        }
    }

    /// An application's failure (`code`, nothing sent yet) answered with
    /// the server's `error_page` for it, when it has one (nginx's
    /// `error_page 502 /50x.html`): the exchange ends and the request is
    /// routed to the page on the loop's next step. False: no such page.
    pub(super) fn app_error_page(&mut self, c: &mut Conn, code: u16) -> bool {
        let Some(ex) = c.ex.as_ref() else { return false };
        let Some(req) = ex.req.as_ref().filter(|r| r.error_status.is_none()) else {
            return false;
        };
        let server = self.select_site(c.listener, req.host.as_deref());
        if !self.sites[server].cfg.error_page.iter().any(|e| e.status == code) {
            return false;
        }
        let Some(mut ex) = c.ex.take() else { return false };
        let Some(mut req) = ex.req.take() else { return false };
        // A body left unread cannot be skipped reliably: close after the page.
        if ex.body.is_some() {
            req.keep_alive = false;
        }
        self.end_handler(&mut ex, true);
        self.wbufs.put(std::mem::take(&mut ex.out));
        c.pending_error = Some((req, code, std::mem::take(&mut ex.raw_head)));
        true
    }

    /// Serves `loc` (a local URI an application named) instead, as a GET
    /// with the same Host; `carried` are header fields of the application's
    /// answer to keep on the new one (nginx keeps them in the redirected
    /// request, whoever answers it: a file, or an application whose own
    /// fields follow them).
    pub(super) fn internal_redirect(
        &mut self,
        c: &mut Conn,
        loc: &str,
        carried: Vec<(String, Vec<u8>)>,
        io: &mut Io<'_>,
    ) -> Step {
        let Some(mut ex) = c.ex.take() else {
            return Step::Wait(Next::Close);
        };
        let (keep, head) = ex
            .req
            .as_ref()
            .map_or((false, false), |r| (r.keep_alive, r.method == request::Method::Head));
        let body_pending = ex.body.is_some();
        self.end_handler(&mut ex, true);
        self.wbufs.put(std::mem::take(&mut ex.out));
        c.redirects += 1;
        if c.redirects > super::conn::MAX_REDIRECTS || loc.bytes().any(|b| b <= b' ' || b >= 0x7f) {
            crate::error!(
                "internal redirect to \"{}\" refused (a loop, or not a valid URI)",
                crate::core::log::Esc(loc.as_bytes())
            );
            self.fail(c, 500, Vec::new(), None);
            return Step::Again;
        }
        // The same request, as a GET of `loc`: the client's headers (Range,
        // conditionals, Host) still apply, as nginx's internal redirects keep them.
        let Some(mut req) = ex.req.take() else {
            self.fail(c, 500, Vec::new(), None);
            return Step::Again;
        };
        if !head {
            req.method = request::Method::Get;
            req.method_name = "GET".into();
        }
        req.body = None;
        req.expect_continue = false;
        req.error_status = None;
        req.redirect_to(loc);
        // The application's fault, not the client's: 500, not routing's 400.
        if req.normalized().is_none() {
            crate::error!(
                "internal redirect to \"{}\" refused (its path climbs above the root or is malformed)",
                crate::core::log::Esc(loc.as_bytes())
            );
            self.fail(c, 500, Vec::new(), None);
            return Step::Again;
        }
        req.keep_alive = keep && !body_pending;
        c.carried = carried;
        // The client's head (its headers, for a script reached this way).
        let head = std::mem::take(&mut ex.raw_head);
        self.begin_owned(c, req, head, io);
        Step::Again
    }
}

/// Whether a request body is read into a spool file before the script or
/// application is asked: a chunked one always (its length is needed), one
/// with a Content-Length when `buffering` (request_buffering) and it has
/// not all come with the head (`buffered` bytes are here).
pub(super) fn spools(body: Option<&super::body::Body>, buffering: bool, buffered: usize) -> bool {
    match body {
        Some(super::body::Body::Chunked(_)) => true,
        Some(super::body::Body::Length { left }) => buffering && (buffered as u64) < *left,
        None => false,
    }
}

/// Moves the buffered bytes `data` of a chunked request body, de-chunked,
/// into a spool through `write`: the bytes used and whether the body is
/// complete, or the status to answer and why.
pub(super) fn spool_buffered(
    data: &[u8],
    body: &mut Body,
    write: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> Result<(usize, bool), (u16, String)> {
    let mut failed = None;
    let fed = body.feed(data, &mut |d| {
        if failed.is_none()
            && let Err(e) = write(d)
        {
            failed = Some(e);
        }
    });
    let (n, done) = fed.map_err(|e| {
        let code = if e == BodyError::TooLarge { 413 } else { 400 };
        (code, "the request body is malformed or too large".to_string())
    })?;
    match failed {
        Some(e) => Err((500, format!("cannot spool the request body: {e}"))),
        None => Ok((n, done)),
    }
}
