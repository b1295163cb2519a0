//! The validated configuration every process works from.
//!
//! `raw` mirrors the TOML file one-to-one (serde, unknown keys refused);
//! `load` turns it into the types below, checking every value and naming
//! file, line and key when one is wrong.

pub mod access;
pub mod fastcgi;
pub mod htpasswd;
mod load;
mod location;
pub mod pool;
mod raw;
pub mod server_name;
mod spans;
pub mod template;
mod tls;
mod units;
mod worker_access;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use load::{ConfigError, load, load_default, load_str, pid_path};
pub use location::{Handler, Location, Match};

use crate::core::log::Level;

/// Where a log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stderr,
    Stdout,
    File(PathBuf),
}

impl std::fmt::Display for LogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogTarget::Off => f.write_str("off"),
            LogTarget::Stderr => f.write_str("stderr"),
            LogTarget::Stdout => f.write_str("stdout"),
            LogTarget::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// How worker sockets are registered with epoll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventMode {
    Edge,
    Level,
}

/// How the workers of one master share the listening sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accept {
    /// Every worker watches the shared socket with EPOLLEXCLUSIVE.
    Exclusive,
    /// Each worker accepts on its own SO_REUSEPORT socket.
    Reuseport,
    /// The master watches the sockets and tells one worker to accept.
    Dispatch,
}

/// Which worker the master picks in `accept = "dispatch"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dispatch {
    RoundRobin,
    /// The worker with the fewest connections (ties in turn).
    LeastConn,
}

/// The user and group workers run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// The kernel scheduling policy of the workers (`sched(7)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedPolicy {
    /// SCHED_OTHER, the normal policy: what corral was started with is kept.
    Other,
    /// SCHED_BATCH: a worker woken by a client or an application does not
    /// preempt the task running on that CPU; it runs at the next
    /// scheduling point and finds more events ready at once.
    Batch,
}

/// Which CPU each worker is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affinity {
    Off,
    /// Worker i on CPU i (modulo the CPU count).
    Auto,
    /// Worker i on the i-th CPU of the list (cycling).
    List(Vec<usize>),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from; `None` for the built-in default.
    pub file: Option<PathBuf>,
    pub main: Main,
    pub http: Http,
    pub servers: Vec<Server>,
    /// FastCGI groups: the `[upstream.NAME]` tables, then one per address
    /// a `pass` names directly.
    pub upstreams: Vec<fastcgi::Upstream>,
    /// `[pool.NAME]`: application pools the master runs, in name order.
    pub pools: Vec<pool::Pool>,
    /// Addresses of a service run through the library ([`crate::serve`]),
    /// where there are no HTTP servers.
    pub service_listen: Vec<SocketAddr>,
    /// Where each log file the master opens is named in the file (for
    /// its error when it cannot be opened): path, "file:line: key".
    pub log_files: Vec<(PathBuf, String)>,
}

#[derive(Debug, Clone)]
pub struct Main {
    pub workers: usize,
    pub worker_connections: usize,
    pub event_mode: EventMode,
    pub accept: Accept,
    pub dispatch: Dispatch,
    /// Threads per worker sharing its epoll instance.
    pub worker_threads: usize,
    pub pid: PathBuf,
    pub error_log: LogTarget,
    pub log_level: Level,
    pub daemon: bool,
    /// How long a graceful stop waits for workers before killing them.
    pub shutdown_timeout: Duration,
    pub listen_backlog: i32,
    pub user: Option<Credentials>,
    pub worker_rlimit_nofile: Option<u64>,
    pub worker_cpu_affinity: Affinity,
    pub worker_priority: Option<i32>,
    pub worker_sched_policy: SchedPolicy,
}

/// Protocol limits and timers shared by every server block.
#[derive(Debug, Clone)]
pub struct Http {
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u32,
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub send_timeout: Duration,
    pub lingering_timeout: Duration,
    /// During a graceful stop or retirement, how long an idle keep-alive
    /// connection stays open for a last request (answered with
    /// `Connection: close`) before it is closed.
    pub drain_idle_timeout: Duration,
    pub client_max_body_size: u64,
    /// Where chunked request bodies for CGI are spooled (unlinked files).
    pub client_body_temp_path: PathBuf,
    /// Largest request head (request line + headers) accepted; also the
    /// size of each pooled read buffer.
    pub max_header_size: usize,
    pub max_uri_length: usize,
    /// Files up to this size are read into memory and leave with the head
    /// in one `writev`; larger ones go by `sendfile`.
    pub inline_file_max: u64,
    /// Files up to `inline_file_max` kept in memory per worker and site
    /// (revalidated by `fstatat` on every hit); 0 disables.
    pub open_file_cache: usize,
    /// Bytes of file contents the cache may hold per worker; files up to
    /// 1/16 of it (at most 1 MiB) are kept in memory, larger ones by descriptor.
    pub open_file_cache_memory: u64,
    pub server_tokens: bool,
    /// Shared memory for the per-address state of `limit_conn` and
    /// `limit_req` (all servers of a generation share it).
    pub limit_zone_size: u64,
    pub limit_conn_status: u16,
    pub limit_req_status: u16,
}

#[derive(Debug, Clone)]
pub struct Server {
    pub listen: Vec<SocketAddr>,
    /// Those of `listen` marked `tls` here (an address is TLS when any
    /// server marks it, see [`Config::is_tls`]).
    pub tls_listen: Vec<SocketAddr>,
    /// Certificates and TLS settings, when it has a certificate.
    pub tls: Option<Tls>,
    /// Names as written (the first is `$host` without a Host header).
    pub server_name: Vec<String>,
    /// The same, parsed for matching.
    pub names: Vec<server_name::Pattern>,
    /// The server for requests whose Host no server claims, on its addresses.
    pub default_server: bool,
    pub root: PathBuf,
    pub index: Vec<String>,
    pub access_log: LogTarget,
    pub autoindex: bool,
    pub follow_symlinks_outside_root: bool,
    /// A `Location` corral makes (`/dir` → `/dir/`, `return 301 /x`,
    /// `rewrite ... redirect`) as `scheme://host[:port]/...` (nginx's
    /// `absolute_redirect`); the port unless the scheme's default
    /// (`port_in_redirect`); the host from the first `server_name` instead of
    /// the request's `Host` (`server_name_in_redirect`).
    pub absolute_redirect: bool,
    pub port_in_redirect: bool,
    pub server_name_in_redirect: bool,
    /// CGI locations, tried in order before static files.
    pub cgi: Vec<Cgi>,
    /// The FastCGI handler of a location's site (never a server's own).
    pub fastcgi: Option<fastcgi::FastCgi>,
    /// Requests in progress at once per client address.
    pub limit_conn: Option<u64>,
    /// Request rate per client address.
    pub limit_req: Option<RateLimit>,
    /// 404 for a path with a segment starting with `.` (but `/.well-known/`).
    pub deny_hidden: bool,
    /// Charset added to text types (`None`: `"off"`).
    pub charset: Option<String>,
    /// `[[server.location]]` blocks, and `[[server.cgi]]` ones turned into
    /// locations, in config order.
    pub locations: Vec<Location>,
    /// Response headers added (`add_header`), in config order.
    pub add_header: Vec<AddHeader>,
    pub expires: Option<Expires>,
    /// Type of files whose extension says nothing.
    pub default_type: String,
    /// `allow` / `deny` / `access` rules, first match wins.
    pub access: Vec<access::Rule>,
    /// `error_page`: per status, where its answer comes from.
    pub error_page: Vec<ErrorPage>,
    /// Server-level `rewrite` rules, run before a location is chosen.
    pub rewrite: Vec<Rewrite>,
    /// Serve `file.br` / `file.gz` to clients that accept them.
    pub gzip_static: bool,
    /// Compress responses on the fly (`gzip = true`).
    pub gzip: Option<Gzip>,
    /// `auth_basic`: the realm and the password file.
    pub auth: Option<Auth>,
}

/// A server's TLS settings.
#[derive(Debug, Clone)]
pub struct Tls {
    /// Certificate chains with their keys (and OCSP responses), in config
    /// order; a handshake gets the first the client can verify.
    pub certs: Vec<std::sync::Arc<rustls::sign::CertifiedKey>>,
    pub tls12: bool,
    pub tls13: bool,
    pub session_tickets: bool,
    /// Ticket lifetime and key rotation period.
    pub session_timeout: Duration,
}

/// HTTP Basic authentication against an htpasswd file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub realm: String,
    pub users: std::sync::Arc<htpasswd::Htpasswd>,
}

/// On-the-fly gzip settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gzip {
    /// Media types compressed (`"*"` for all).
    pub types: Vec<String>,
    /// Bodies shorter than this are sent as they are.
    pub min_length: u64,
    pub level: u32,
}

/// One `rewrite`: regex on the path, replacement, flag.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub regex: regex::Regex,
    pub replacement: template::Template,
    pub flag: RewriteFlag,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteFlag {
    /// Go on with the next rule; a changed path is routed again at the end.
    None,
    /// Stop, and choose the location again for the new path.
    Last,
    /// Stop, and serve the new path in this location.
    Break,
    /// 302 to the replacement.
    Redirect,
    /// 301 to the replacement.
    Permanent,
}

/// One status of an `error_page`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorPage {
    pub status: u16,
    /// A local URI (internal redirect) or an `http(s)://` URL (a redirect).
    pub uri: String,
    /// `=code` (`Some(Some(c))`), `=` alone: the page's own status
    /// (`Some(None)`), or the original status (`None`).
    pub answer: Option<Option<u16>>,
}

/// One `add_header`: on 2xx/3xx responses, or on every one with `always`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddHeader {
    pub name: String,
    pub value: String,
    pub always: bool,
}

/// `expires`, as nginx has it (on 2xx/3xx responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expires {
    /// `Expires: now + d`, `Cache-Control: max-age=d`.
    After(Duration),
    /// A negative time: `Expires` in the past, `Cache-Control: no-cache`.
    NoCache(Duration),
    /// `Expires: Thu, 01 Jan 1970 00:00:01 GMT`, `Cache-Control: no-cache`.
    Epoch,
    /// `Expires: Thu, 31 Dec 2037 23:55:55 GMT`, `Cache-Control: max-age=315360000`.
    Max,
}

/// A request rate with a burst, as nginx's `limit_req` has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per 1000 seconds (`10r/s` is 10,000; `30r/m` is 500).
    pub per_kilosecond: u64,
    /// Requests beyond the rate accepted (delayed, or at once with `nodelay`).
    pub burst: u64,
    pub nodelay: bool,
}

impl Config {
    /// Whether a server limits clients (the master then makes the zone).
    pub fn has_limits(&self) -> bool {
        self.servers
            .iter()
            .any(|s| s.limit_conn.is_some() || s.limit_req.is_some())
    }

    /// How long an address's rate state matters: the time the largest
    /// burst takes to drain.
    pub fn limit_memory_ms(&self) -> u64 {
        self.servers
            .iter()
            .filter_map(|s| s.limit_req)
            .map(|r| (r.burst + 1) * 1_000_000 / r.per_kilosecond.max(1))
            .max()
            .unwrap_or(0)
    }
}

/// A URL space whose requests run a CGI program.
#[derive(Debug, Clone)]
pub struct Cgi {
    /// URL prefix (starts and ends with `/`), if the location has one.
    pub prefix: Option<String>,
    /// Script name endings (`.cgi`); empty: any file under `dir`.
    pub extensions: Vec<String>,
    /// Directory scripts must live in.
    pub dir: PathBuf,
    /// One program serving the whole prefix (the rest of the URL is PATH_INFO).
    pub script: Option<PathBuf>,
    /// Interpreter per extension.
    pub interpreters: Vec<(String, PathBuf)>,
    pub timeout: Duration,
    /// Scripts running at once per worker; more get 503.
    pub max_concurrent: usize,
    pub env: Vec<(String, String)>,
    /// Read the whole body before the script starts: a slow upload holds
    /// a temporary file, not a script and one of `max_concurrent`.
    pub request_buffering: bool,
    /// A script's `X-Accel-Redirect` is followed (nginx in front of
    /// fcgiwrap); off, it is dropped.
    pub x_accel_redirect: bool,
}

impl Config {
    /// Per listening address (in `listen_addrs` order): its servers' names
    /// and its default server, for choosing the server of a request.
    pub fn names_by_address(&self) -> Vec<server_name::Names> {
        self.listen_addrs()
            .iter()
            .map(|a| {
                let on: Vec<usize> = (0..self.servers.len())
                    .filter(|&i| self.servers[i].listen.contains(a))
                    .collect();
                let default = on.iter().copied().find(|&i| self.servers[i].default_server);
                server_name::Names::new(
                    on.iter().map(|&i| (i, self.servers[i].names.clone())).collect(),
                    default,
                )
            })
            .collect()
    }

    /// Whether connections to `addr` speak TLS: some server marks it `tls`
    /// (as nginx's `ssl` on one `listen` applies to the whole address).
    pub fn is_tls(&self, addr: &SocketAddr) -> bool {
        self.servers.iter().any(|s| s.tls_listen.contains(addr))
    }

    /// Every distinct listening address, in first-seen order.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        let servers = self.servers.iter().map(|s| s.listen.as_slice());
        for listen in servers.chain([self.service_listen.as_slice()]) {
            for a in listen {
                if !out.contains(a) {
                    out.push(*a);
                }
            }
        }
        out
    }

    /// A short label for logs and the process title.
    pub fn source(&self) -> String {
        match &self.file {
            Some(p) => p.display().to_string(),
            None => "(built-in default)".to_string(),
        }
    }
}
