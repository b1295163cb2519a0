//! `fastcgi = {...}` in a location and the `[upstream.NAME]` groups it
//! passes to: the types and their checks.

use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use super::load::{Checker, ConfigError, Source};
use super::raw;

/// Where a FastCGI application listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            Address::Tcp(a) => write!(f, "{a}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Smooth weighted round robin (nginx's).
    RoundRobin,
    /// The fewest requests in progress (this worker's count), by weight.
    LeastConn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamServer {
    pub address: Address,
    pub weight: u32,
    /// Failures within `fail_timeout` that take the server out for `fail_timeout`.
    pub max_fails: u32,
    pub fail_timeout: Duration,
    /// Used only when every other server is down.
    pub backup: bool,
}

/// An `[upstream.NAME]` group, or the one-server group a direct `pass` makes.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub balance: Balance,
    /// Idle connections kept per worker and server (0: none).
    pub keepalive: usize,
    pub keepalive_timeout: Duration,
    /// Requests one kept connection serves before it is closed.
    pub keepalive_requests: u32,
    /// Connections per worker and server; 0: no limit. Past it requests wait.
    pub max_conns: usize,
    pub queue_timeout: Duration,
    pub servers: Vec<UpstreamServer>,
    /// Made by a `pass = "address"` rather than written as a group.
    pub implicit: bool,
}

/// What the next server is tried on, besides a connection failure.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NextUpstream {
    /// `["off"]`: never try another server.
    pub off: bool,
    pub timeout: bool,
    /// Application statuses 500, 502, 503, 504 (bit per status).
    pub statuses: [bool; 4],
}

impl NextUpstream {
    pub fn on_status(&self, code: u16) -> bool {
        match code {
            500 => self.statuses[0],
            502 => self.statuses[1],
            503 => self.statuses[2],
            504 => self.statuses[3],
            _ => false,
        }
    }
}

/// A location's `fastcgi = {...}`.
#[derive(Debug, Clone)]
pub struct FastCgi {
    /// Index into `Config::upstreams`.
    pub upstream: usize,
    /// Two groups: the script's path and PATH_INFO.
    pub split_path_info: Option<Regex>,
    pub index: String,
    /// Added to (or, with an empty value, removed from) the standard params.
    pub params: Vec<(String, String)>,
    pub check_file: bool,
    pub connect_timeout: Duration,
    pub send_timeout: Duration,
    pub read_timeout: Duration,
    pub header_limit: usize,
    pub keep_conn: bool,
    pub x_accel_redirect: bool,
    pub x_sendfile: bool,
    pub next_upstream: NextUpstream,
    /// Read the whole body before the application is asked (nginx's
    /// `fastcgi_request_buffering`): a slow upload holds no php-fpm child.
    pub request_buffering: bool,
}

/// How long a kept connection may sit idle by default. Short on purpose:
/// php-fpm gives each kept connection a child of its own until it closes,
/// so idle ones held by a quiet worker starve the others' requests.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_millis(500);

/// Requests a kept connection serves before it closes (nginx's upstream
/// `keepalive_requests`, there 1000): low enough that php-fpm children
/// rotate between workers every few milliseconds under load.
const KEEPALIVE_REQUESTS: i64 = 100;

/// Parses `"unix:/path"`, `"host:port"` or `"[v6]:port"`; host names are
/// resolved now (as nginx does at start), the first address is used.
pub(super) fn parse_address(s: &str, src: &Source) -> Result<Address, String> {
    if let Some(p) = s.strip_prefix("unix:") {
        if p.is_empty() {
            return Err("\"unix:\" needs a socket path".into());
        }
        let path = src.path(p);
        if path.as_os_str().len() > 107 {
            return Err(format!("socket path {} is longer than 107 bytes", path.display()));
        }
        return Ok(Address::Unix(path));
    }
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(Address::Tcp(a));
    }
    if !s.contains(':') {
        return Err(format!(
            "\"{s}\" is not an address such as \"unix:/run/php/php-fpm.sock\" or \"127.0.0.1:9000\" (nor an [upstream] name)"
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .map(Address::Tcp)
            .ok_or_else(|| format!("\"{s}\" resolves to no address")),
        Err(e) => Err(format!("\"{s}\" cannot be resolved: {e}")),
    }
}

/// The `[upstream.NAME]` tables, in name order.
pub(super) fn build_upstreams(
    src: &Source,
    groups: BTreeMap<String, raw::Upstream>,
) -> Result<Vec<Upstream>, ConfigError> {
    let mut out = Vec::new();
    for (name, u) in groups {
        let table = format!("upstream.{name}");
        let c = Checker {
            src,
            table: &table,
            nth: 0,
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
            return Err(c.err(
                "",
                format!("\"{name}\" is not a name of letters, digits, '_', '-' or '.'"),
            ));
        }
        let balance = c.choice(
            "balance",
            u.balance,
            &[("round_robin", Balance::RoundRobin), ("least_conn", Balance::LeastConn)],
            Balance::RoundRobin,
        )?;
        let list = u.servers.unwrap_or_default();
        if list.is_empty() {
            return Err(c.err(
                "servers",
                "needs at least one server, such as servers = [\"unix:/run/php/php-fpm.sock\"]",
            ));
        }
        let mut servers = Vec::new();
        for (i, s) in list.into_iter().enumerate() {
            // `servers[1]` for a plain address, `servers[1].weight` in a table.
            let (full, at) = match s {
                raw::UpstreamServer::Addr(a) => (
                    raw::UpstreamServerFull {
                        address: a,
                        ..Default::default()
                    },
                    None,
                ),
                raw::UpstreamServer::Full(f) => (f, Some(format!("servers[{i}]"))),
            };
            let key = |k: &str| at.as_ref().map_or(format!("servers[{i}]"), |t| format!("{t}.{k}"));
            let address = parse_address(&full.address, src).map_err(|e| c.err(&key("address"), e))?;
            servers.push(UpstreamServer {
                address,
                weight: c.int(&key("weight"), full.weight, 1, 1000, 1)? as u32,
                max_fails: c.int(&key("max_fails"), full.max_fails, 0, 1000, 1)? as u32,
                fail_timeout: c.duration(&key("fail_timeout"), full.fail_timeout, Duration::from_secs(10))?,
                backup: full.backup.unwrap_or(false),
            });
        }
        if servers.len() > 64 {
            return Err(c.err("servers", "a group holds at most 64 servers"));
        }
        if servers.iter().all(|s| s.backup) {
            return Err(c.err("servers", "every server is a backup: at least one must not be"));
        }
        out.push(Upstream {
            name,
            balance,
            keepalive: c.int("keepalive", u.keepalive, 0, 10_000, 8)? as usize,
            keepalive_timeout: c.duration("keepalive_timeout", u.keepalive_timeout, KEEPALIVE_TIMEOUT)?,
            keepalive_requests: c.int(
                "keepalive_requests",
                u.keepalive_requests,
                1,
                1 << 30,
                KEEPALIVE_REQUESTS,
            )? as u32,
            max_conns: c.int("max_conns", u.max_conns, 0, 1_000_000, 0)? as usize,
            queue_timeout: c.duration("queue_timeout", u.queue_timeout, Duration::from_secs(60))?,
            servers,
            implicit: false,
        });
    }
    Ok(out)
}

/// A location's `fastcgi` table; `ups` gains a group for a direct address.
pub(super) fn build_fastcgi(c: &Checker<'_>, f: raw::FastCgi, ups: &mut Vec<Upstream>) -> Result<FastCgi, ConfigError> {
    let err = |k: &str, m: String| c.err(&format!("fastcgi.{k}"), m);
    let pass = f.pass.ok_or_else(|| {
        err(
            "pass",
            "is required: \"unix:/path\", \"host:port\" or an [upstream] name".into(),
        )
    })?;
    let upstream = match ups.iter().position(|u| u.name == pass && !u.implicit) {
        Some(i) => i,
        None if pass.starts_with("pool:") => {
            return Err(err("pass", format!("there is no [{}] table", pass.replace(':', "."))));
        }
        None => {
            let address = parse_address(&pass, c.src).map_err(|e| err("pass", e))?;
            // One group per address, so every location passing there shares its pool.
            match ups
                .iter()
                .position(|u| u.implicit && u.servers.first().is_some_and(|s| s.address == address))
            {
                Some(i) => i,
                None => {
                    ups.push(Upstream {
                        name: pass.clone(),
                        balance: Balance::RoundRobin,
                        keepalive: 8,
                        keepalive_timeout: KEEPALIVE_TIMEOUT,
                        keepalive_requests: KEEPALIVE_REQUESTS as u32,
                        max_conns: 0,
                        queue_timeout: Duration::from_secs(60),
                        servers: vec![UpstreamServer {
                            address,
                            weight: 1,
                            // A lone server is never taken out (nginx's behaviour).
                            max_fails: 0,
                            fail_timeout: Duration::from_secs(10),
                            backup: false,
                        }],
                        implicit: true,
                    });
                    ups.len() - 1
                }
            }
        }
    };
    let split_path_info = match f.split_path_info {
        None => None,
        Some(re) => {
            let r =
                Regex::new(&re).map_err(|e| err("split_path_info", format!("regex \"{re}\" does not compile: {e}")))?;
            if r.captures_len() < 3 {
                return Err(err(
                    "split_path_info",
                    format!("\"{re}\" needs two groups: the script and the path info, as \"^(.+?\\.php)(/.*)$\""),
                ));
            }
            Some(r)
        }
    };
    let index = f.index.unwrap_or_else(|| "index.php".into());
    if index.is_empty() || index.contains('/') {
        return Err(err("index", format!("\"{index}\" must be a plain file name")));
    }
    let mut params = Vec::new();
    for (k, v) in f.params.unwrap_or_default() {
        if k.is_empty() || k.bytes().any(|b| b <= b' ' || b == b'=' || b >= 0x7f) {
            return Err(err("params", format!("\"{k}\" is not a parameter name")));
        }
        if v.bytes().any(|b| b == 0) {
            return Err(err("params", format!("the value of {k} holds a NUL byte")));
        }
        params.push((k, v));
    }
    let mut next_upstream = NextUpstream::default();
    for t in f.next_upstream.unwrap_or_default() {
        match t.as_str() {
            "error" => {}
            "off" => next_upstream.off = true,
            "timeout" => next_upstream.timeout = true,
            "http_500" => next_upstream.statuses[0] = true,
            "http_502" => next_upstream.statuses[1] = true,
            "http_503" => next_upstream.statuses[2] = true,
            "http_504" => next_upstream.statuses[3] = true,
            other => {
                return Err(err(
                    "next_upstream",
                    format!(
                        "\"{other}\" is not one of \"error\", \"timeout\", \"http_500\", \"http_502\", \"http_503\", \"http_504\", \"off\""
                    ),
                ));
            }
        }
    }
    let dur = |k: &str, v: Option<raw::NumOrStr>| {
        c.duration("fastcgi", v, Duration::from_secs(60))
            .map_err(|e| err(k, e.message))
    };
    let header_limit = c
        .size("fastcgi", f.header_limit, 1024, 16 << 20, 64 << 10)
        .map_err(|e| err("header_limit", e.message))? as usize;
    Ok(FastCgi {
        upstream,
        split_path_info,
        index,
        params,
        check_file: f.check_file.unwrap_or(true),
        connect_timeout: dur("connect_timeout", f.connect_timeout)?,
        send_timeout: dur("send_timeout", f.send_timeout)?,
        read_timeout: dur("read_timeout", f.read_timeout)?,
        header_limit,
        keep_conn: f.keep_conn.unwrap_or(true),
        x_accel_redirect: f.x_accel_redirect.unwrap_or(true),
        x_sendfile: f.x_sendfile.unwrap_or(false),
        request_buffering: f.request_buffering.unwrap_or(true),
        next_upstream,
    })
}
