//! HTTP/1.1 as a [`Service`] of the reactor: the per-worker state shared by
//! every connection (sites, buffer pools, access logs, cached time).

mod access_log;
mod app_response;
mod autoindex;
mod body;
mod byteranges;
mod cgi;
mod cgi_exchange;
mod conn;
mod fastcgi_exchange;
mod file_cache;
#[doc(hidden)]
pub mod fuzz_api;
/// Markup escaping, shared with the pools' XML status.
pub(crate) use autoindex::escape_html;
mod gzip;
mod handler;
mod limits;
mod location;
mod path;
mod range;
mod reply;
mod request;
mod router;
mod static_file;
pub mod status;
mod transport;

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use crate::config::{self, Config, EventMode, LogTarget};
use crate::core::clock::Clock;
use crate::event::{BufPool, Io, Next, Ready, Service};
use access_log::AccessLog;
use conn::Conn;
use static_file::Site;

/// State every thread of a worker shares (`worker_threads`): FastCGI
/// groups, CGI children and counts. Locked for short calls only, never
/// across another lock of the same kind.
type Shared<T> = Arc<Mutex<T>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub struct HttpService {
    cfg: config::Http,
    mode: EventMode,
    /// Servers first (site `i` is server `i`), then their locations.
    sites: Vec<Site>,
    /// Per server: its locations.
    routes: Vec<location::Route>,
    /// Per listener: how its servers are chosen by name.
    names: Vec<config::server_name::Names>,
    /// Per site: its access log, if any.
    site_log: Vec<Option<usize>>,
    logs: Vec<AccessLog>,
    file_cache: file_cache::FileCache,
    /// Scripts running per site and CGI rule, against `max_concurrent`.
    cgi_running: Shared<Vec<Vec<usize>>>,
    /// Starts scripts off the event loop; only where CGI is configured.
    spawner: Option<Arc<crate::os::spawn::Spawner>>,
    children: Shared<crate::cgi::children::Children>,
    rbufs: BufPool,
    wbufs: BufPool,
    clock: Clock,
    draining: bool,
    server_header: String,
    parse_limits: request::Limits,
    /// limit_conn / limit_req, when a server sets them.
    limits: Option<limits::Limits>,
    /// FastCGI groups: balancing, health and kept connections.
    upstreams: Shared<crate::fastcgi::upstream::Upstreams>,
    /// Read buffers of finished FastCGI exchanges, for the next ones.
    inbox_buffers: Vec<Vec<u8>>,
    /// Per site: FastCGI scripts recently found, until when.
    scripts_seen: Vec<std::collections::HashMap<String, Instant>>,
    /// Some FastCGI group exists (kept connections to sweep on time).
    has_upstreams: bool,
    /// Per listener: its TLS settings, for a TLS address.
    tls: Vec<Option<Arc<crate::tls::Endpoint>>>,
}

impl HttpService {
    /// Starts the CGI spawner thread if a server has CGI locations. Called
    /// once the worker has its final user, nice value and CPU affinity, as
    /// the thread (and so every script) keeps those it was created with.
    pub fn start_spawner(&mut self) {
        if self.sites.iter().any(|s| !s.cgi.is_empty()) {
            self.spawner = crate::os::spawn::Spawner::new()
                .map_err(|e| crate::error!("cannot set up the CGI spawner: {e}"))
                .ok()
                .map(Arc::new);
        }
    }

    /// Another thread's service for the same worker (`worker_threads`): its
    /// own buffers, caches and logs, sharing FastCGI groups, CGI children
    /// and counts, and the spawner once started.
    pub fn sibling(&self, cfg: &Config) -> HttpService {
        let mut s = HttpService::new(cfg);
        s.upstreams = self.upstreams.clone();
        s.children = self.children.clone();
        s.cgi_running = self.cgi_running.clone();
        s.tls = self.tls.clone();
        s
    }

    /// Shares `first`'s spawner with a sibling (after `start_spawner`).
    pub fn share_spawner(&mut self, first: &HttpService) {
        self.spawner = first.spawner.clone();
    }

    /// Hands the spawner's outcomes (pids, failures) to the children.
    fn collect_spawned(&mut self) {
        if let Some(sp) = &self.spawner {
            for (id, outcome) in sp.take_done() {
                lock(&self.children).spawned(id, outcome);
            }
        }
    }

    pub fn new(cfg: &Config) -> HttpService {
        let mut logs: Vec<AccessLog> = Vec::new();
        let mut site_log = Vec::new();
        for s in &cfg.servers {
            let idx = match &s.access_log {
                LogTarget::Off => None,
                t => Some(match logs.iter().position(|l| l.target() == t) {
                    Some(i) => i,
                    None => {
                        logs.push(AccessLog::new(t.clone()));
                        logs.len() - 1
                    }
                }),
            };
            site_log.push(idx);
        }
        // Servers are sites 0..n; each location with settings of its own
        // is one more site after them, built from its server's settings.
        let mut sites: Vec<Site> = cfg.servers.iter().cloned().map(Site::new).collect();
        let mut routes = Vec::with_capacity(cfg.servers.len());
        for (i, s) in cfg.servers.iter().enumerate() {
            let mut locs = Vec::with_capacity(s.locations.len());
            for l in &s.locations {
                sites.push(Site::new(location::merged(s, l)));
                site_log.push(site_log[i]);
                locs.push(location::Loc::new(sites.len() - 1, l));
            }
            routes.push(location::Route::new(&s.locations, locs));
        }
        let server_header = if cfg.http.server_tokens {
            concat!("corral/", env!("CARGO_PKG_VERSION")).to_string()
        } else {
            "corral".to_string()
        };
        HttpService {
            cfg: cfg.http.clone(),
            mode: cfg.main.event_mode,
            cgi_running: Arc::new(Mutex::new(sites.iter().map(|s| vec![0; s.cgi.len()]).collect())),
            inbox_buffers: Vec::new(),
            scripts_seen: sites.iter().map(|_| Default::default()).collect(),
            file_cache: file_cache::FileCache::new(
                sites.len(),
                cfg.http.open_file_cache,
                cfg.http.open_file_cache_memory as usize,
            ),
            sites,
            routes,
            names: cfg.names_by_address(),
            tls: crate::tls::endpoints(cfg),
            has_upstreams: !cfg.upstreams.is_empty(),
            site_log,
            logs,
            spawner: None,
            children: Default::default(),
            rbufs: BufPool::new(cfg.http.max_header_size, 256),
            wbufs: BufPool::new(4096, 256),
            clock: Clock::new(),
            draining: false,
            server_header,
            limits: None,
            upstreams: Arc::new(Mutex::new(crate::fastcgi::upstream::Upstreams::new(&cfg.upstreams))),

            parse_limits: request::Limits {
                max_uri: cfg.http.max_uri_length,
                max_body: cfg.http.client_max_body_size,
            },
        }
    }

    /// The server for `host` among those on `listener`, by nginx's rules
    /// (`server_name`, then the address's default server).
    fn select_site(&self, listener: usize, host: Option<&str>) -> usize {
        self.select_site_caps(listener, host).0
    }

    /// Like `select_site`, with the captures of a regex server name.
    fn select_site_caps(&self, listener: usize, host: Option<&str>) -> (usize, Vec<(String, String)>) {
        self.names.get(listener).map_or((0, Vec::new()), |n| n.select(host))
    }
}

impl Service for HttpService {
    type Conn = Conn;

    fn fd(conn: &Conn) -> BorrowedFd<'_> {
        conn.io.sock.as_fd()
    }

    fn open(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) -> Conn {
        let _ = stream.set_nodelay(true);
        let io = match self.tls.get(listener) {
            Some(Some(ep)) => transport::Transport::tls(stream, crate::tls::Session::new(ep.clone(), peer.ip())),
            _ => transport::Transport::plain(stream),
        };
        Conn::new(io, peer, listener, self.clock.now + self.cfg.client_header_timeout)
    }

    fn ready(&mut self, conn: &mut Conn, ready: Ready, io: &mut Io<'_>) -> Next {
        // TLS bytes that waited for the socket go first, whatever phase
        // the connection is in.
        if conn.io.wants_write() && conn.io.flush().is_err() {
            return Next::Close;
        }
        let next = self.on_ready(conn, ready, io);
        // TLS bytes still to send (a handshake flight, the end of a
        // response) are waited for before anything else from the socket.
        if matches!(next, Next::Read | Next::Idle | Next::Pause) && conn.io.wants_write() {
            return Next::Write;
        }
        next
    }

    fn reclaim(&mut self, conn: &mut Conn) -> crate::event::Reclaim {
        self.on_reclaim(conn)
    }

    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) -> Option<Conn> {
        // A TLS client could not read a plain 503: it is closed.
        if matches!(self.tls.get(listener), Some(Some(_))) {
            return None;
        }
        Some(self.refuse_conn(stream, peer, listener))
    }

    fn expired(&mut self, conn: &mut Conn, now: Instant) -> Option<Next> {
        self.on_expired(conn, now)
    }

    fn deadline(&self, conn: &Conn) -> Option<Instant> {
        Some(conn.deadline)
    }

    fn drain(&mut self, conn: &mut Conn) -> Next {
        self.draining = true;
        lock(&self.upstreams).drain();
        self.on_drain(conn)
    }

    fn closed(&mut self, conn: Conn) {
        self.on_closed(conn);
    }

    fn drain_started(&mut self) {
        self.draining = true;
        lock(&self.upstreams).drain();
    }

    fn turn(&mut self) {
        self.clock.update();
        self.file_cache.new_turn();
    }

    fn child_exited(&mut self) {
        self.collect_spawned();
        lock(&self.children).reap(self.clock.now);
    }

    fn timed(&mut self, now: Instant) -> Option<Instant> {
        // Kept connections close when their keepalive_timeout is up, not
        // at the next once-a-second housekeeping: an idle one holds a
        // php-fpm child another worker's request may be queued for.
        if !self.has_upstreams {
            return None;
        }
        let mut ups = lock(&self.upstreams);
        ups.sweep(now);
        ups.next_expiry()
    }

    fn wakeups(&mut self, out: &mut Vec<u64>) {
        lock(&self.upstreams).take_wakeups(out);
    }

    fn handle_target(&mut self, handle: u64) -> Option<u64> {
        lock(&self.upstreams).target(handle)
    }

    fn housekeeping(&mut self) {
        lock(&self.upstreams).sweep(std::time::Instant::now());
        self.collect_spawned();
        lock(&self.children).reap(self.clock.now);
        self.limits_housekeeping();
        for l in &mut self.logs {
            l.flush();
        }
    }

    fn reopen_logs(&mut self) {
        let mut ok = true;
        if let Err(e) = crate::core::log::reopen() {
            crate::error!("reopening the error log failed: {e}; its lines keep going to the file open before");
            ok = false;
        }
        for l in &mut self.logs {
            ok &= l.reopen();
        }
        // Only a complete reopen is "reopened": a rotation script's check
        // must not be misled.
        if ok {
            crate::notice!("logs reopened");
        } else {
            crate::error!("logs not all reopened (see above)");
        }
    }

    fn shutdown(&mut self) {
        self.collect_spawned();
        lock(&self.children).reap(self.clock.now);
        lock(&self.children).kill_all();
        for l in &mut self.logs {
            l.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    /// The per-connection state preallocated in every slot; the benchmark
    /// README quotes this figure, keep it small.
    #[test]
    fn connection_state_is_small() {
        let size = std::mem::size_of::<Option<super::conn::Conn>>();
        println!("connection slot state: {size} bytes");
        assert!(size <= 512, "{size}");
    }
}
