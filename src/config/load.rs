//! Reading a config file and checking every value in it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, NumOrStr};
use super::{Accept, Affinity, Config, Dispatch, EventMode, Http, LogTarget, Main, SchedPolicy, Server, units};
use crate::core::log::Level;

/// A config problem, located as precisely as the file allows.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl ConfigError {
    /// Where it is: "file:line: key" (without what is wrong).
    pub fn place(&self) -> String {
        let mut at = match self.line {
            Some(l) => format!("{}:{l}", self.file),
            None => self.file.clone(),
        };
        if !self.key.is_empty() {
            at.push_str(": ");
            at.push_str(&self.key);
        }
        at
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.place(), self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The configuration used when no file is given and `./corral.toml` is absent.
pub fn load_default() -> Config {
    let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut src = Source::new("(built-in default)".into(), String::new(), base);
    src.builtin = true;
    build(&src, raw::File::default()).expect("the built-in default is valid")
}

/// Reads and validates `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (name, text, abs, base) = read(path)?;
    let mut cfg = load_str(&name, &text, &base)?;
    cfg.file = Some(abs.file_name().map_or(abs.clone(), |f| base.join(f)));
    Ok(cfg)
}

/// The pid file `path` names, from its syntax alone: what `-s` needs,
/// so that a directory or certificate gone since the start does not keep
/// an operator from stopping the server.
pub fn pid_path(path: &Path) -> Result<PathBuf, ConfigError> {
    let (name, text, _, base) = read(path)?;
    let src = Source::new(name, text, base);
    let file: raw::File = toml::from_str(&src.text).map_err(|e| src.syntax_error(&e))?;
    let pid = file.main.and_then(|m| m.pid);
    Ok(src.path(pid.as_deref().unwrap_or(DEFAULT_PID)))
}

/// Where the pid file goes when `main.pid` is not set.
const DEFAULT_PID: &str = "/tmp/corral/corral.pid";

/// A config file's name, text, absolute path and directory.
fn read(path: &Path) -> Result<(String, String, PathBuf, PathBuf), ConfigError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: name.clone(),
        line: None,
        key: String::new(),
        message: format!("cannot read: {e}"),
    })?;
    // A truncated file (`> file`, a template that rendered nothing, a full
    // disk) must not pass as the built-in default, which listens elsewhere.
    if text.is_empty() {
        return Err(ConfigError {
            file: name,
            line: None,
            key: String::new(),
            message: "empty configuration".into(),
        });
    }
    let abs = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    };
    let base = abs
        .parent()
        .map(|dir| resolve(Path::new("/"), dir))
        .unwrap_or_else(|| PathBuf::from("/"));
    Ok((name, text, abs, base))
}

/// Validates `text` as a config file called `name` whose relative paths
/// are taken from `base` (also the fuzz target's entry point).
pub fn load_str(name: &str, text: &str, base: &Path) -> Result<Config, ConfigError> {
    let src = Source::new(name.to_string(), text.to_string(), base.to_path_buf());
    let file: raw::File = toml::from_str(&src.text).map_err(|e| src.syntax_error(&e))?;
    build(&src, file)
}

/// The file being checked: its text for locating keys, and the directory
/// relative paths are taken from.
pub(super) struct Source {
    name: String,
    text: String,
    base: PathBuf,
    /// The text parsed with positions, once a line is asked for.
    doc: std::cell::OnceCell<Option<toml_edit::ImDocument<String>>>,
    /// The built-in default (no file given, no `./corral.toml`), never a
    /// file that happens to be empty.
    builtin: bool,
}

impl Source {
    fn new(name: String, text: String, base: PathBuf) -> Source {
        Source {
            name,
            text,
            base,
            doc: std::cell::OnceCell::new(),
            builtin: false,
        }
    }

    fn syntax_error(&self, e: &toml::de::Error) -> ConfigError {
        let (line, key) = match e.span() {
            Some(span) => {
                let line = self.text[..span.start.min(self.text.len())].matches('\n').count() + 1;
                let text = self.text.lines().nth(line - 1).unwrap_or("");
                let key = text.split('=').next().unwrap_or("").trim();
                let key = if text.contains('=') { key } else { "" };
                // Qualify with the table the line sits in: `main.workers`.
                let table = self
                    .text
                    .lines()
                    .take(line - 1)
                    .filter_map(|l| {
                        let t = l.trim();
                        t.starts_with('[')
                            .then(|| t.trim_matches(|c| c == '[' || c == ']').trim())
                    })
                    .last();
                let key = match (table, key.is_empty()) {
                    (Some(t), false) => format!("{t}.{key}"),
                    _ => key.to_string(),
                };
                (Some(line), key)
            }
            None => (None, String::new()),
        };
        let msg = e.message().trim();
        let message = if msg.contains("untagged enum NumOrStr") {
            "expected a number or a string".to_string()
        } else if msg.contains("untagged enum StrOrInts") {
            "expected \"auto\", \"off\" or a list of CPU numbers".to_string()
        } else if msg.contains("untagged enum UpstreamServer") {
            "expected an address (\"unix:/path\", \"host:port\") or { address = ..., weight = .., max_fails = .., fail_timeout = .., backup = .. }".to_string()
        } else if msg.contains("untagged enum OneOrMany") {
            "expected a string or a list of strings".to_string()
        } else if msg.contains("untagged enum HeaderValue") {
            "expected a string or { value = \"...\", always = true } (and no other key)".to_string()
        } else if msg.contains("expected struct LimitReq") {
            "expected a table: { rate = \"10r/s\", burst = 20, nodelay = true }".to_string()
        } else {
            // serde's Rust type names, in an operator's words.
            msg.replace("expected i64", "expected an integer")
                .replace("expected u64", "expected an integer")
                .replace("expected f64", "expected a number")
        };
        ConfigError {
            file: self.name.clone(),
            line,
            key,
            message,
        }
    }

    /// An error for `key` in the `nth` occurrence of `table`.
    pub(super) fn err(&self, table: &str, nth: usize, key: &str, message: String) -> ConfigError {
        ConfigError {
            file: self.name.clone(),
            // A key that is missing (or set in an inline table) has no
            // line of its own: the line of its table then.
            line: self.locate(table, nth, key).or_else(|| self.locate(table, nth, "")),
            key: if key.is_empty() {
                format!("[{table}]")
            } else {
                format!("{table}.{key}")
            },
            message,
        }
    }

    /// The line of `key` (dotted for sub-tables, `servers[1].weight` for
    /// an array's element) inside the `nth` table named `table` (counted
    /// across the file: `server.location` numbers every server's locations
    /// in order), or of that table when `key` is empty or not written.
    pub(super) fn locate(&self, table: &str, nth: usize, key: &str) -> Option<usize> {
        let doc = self
            .doc
            .get_or_init(|| toml_edit::ImDocument::parse(self.text.clone()).ok())
            .as_ref()?;
        let at = super::spans::offset(doc, &super::spans::path(table), nth, key)?;
        // (Counted in bytes: an offset inside a character cannot panic.)
        let before = &self.text.as_bytes()[..at.min(self.text.len())];
        Some(before.iter().filter(|&&b| b == b'\n').count() + 1)
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            resolve(&self.base, p)
        }
    }

    fn log_target(&self, v: &str) -> LogTarget {
        match v {
            "off" => LogTarget::Off,
            "stderr" => LogTarget::Stderr,
            "stdout" => LogTarget::Stdout,
            p => LogTarget::File(self.path(p)),
        }
    }
}

/// `base` joined with `rel`, without `.` or `..` components (a `..` in
/// SCRIPT_FILENAME makes php-cgi answer "No input file specified"), and
/// meaning what the kernel would make of it: leading `..` go up from
/// `base`; the part up to a later `..` is resolved on disk (it may go
/// through a symlink), so only what follows the last `..` is kept as
/// written (a `root` that is a symlink stays one).
fn resolve(base: &Path, rel: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = base.to_path_buf();
    let mut comps = rel.components().peekable();
    while let Some(c) = comps.peek() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::Prefix(_) => out = PathBuf::from(c.as_os_str()),
            Component::Normal(_) => break,
        }
        comps.next();
    }
    let rest: Vec<Component<'_>> = comps.collect();
    let Some(last_up) = rest.iter().rposition(|c| *c == Component::ParentDir) else {
        return rest.iter().fold(out, |p, c| p.join(c));
    };
    let head = rest[..=last_up].iter().fold(out, |p, c| p.join(c));
    let head = std::fs::canonicalize(&head).unwrap_or_else(|_| lexical(&head));
    rest[last_up + 1..].iter().fold(head, |p, c| p.join(c))
}

/// `a/b/../c` as `a/c`, for a path not on disk (nothing to resolve).
fn lexical(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// Checks one table's values; knows which table and occurrence it is in so
/// every error points at the right line.
pub(super) struct Checker<'a> {
    pub(super) src: &'a Source,
    pub(super) table: &'a str,
    pub(super) nth: usize,
}

impl Checker<'_> {
    pub(super) fn err(&self, key: &str, message: impl Into<String>) -> ConfigError {
        self.src.err(self.table, self.nth, key, message.into())
    }

    pub(super) fn int(&self, key: &str, v: Option<i64>, min: i64, max: i64, default: i64) -> Result<i64, ConfigError> {
        match v {
            None => Ok(default),
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(n) => Err(self.err(key, format!("{n} is out of range, expected {min}..={max}"))),
        }
    }

    pub(super) fn size(
        &self,
        key: &str,
        v: Option<NumOrStr>,
        min: u64,
        max: u64,
        default: u64,
    ) -> Result<u64, ConfigError> {
        let n = match v {
            None => return Ok(default),
            Some(NumOrStr::Num(n)) => u64::try_from(n).ok(),
            Some(NumOrStr::Str(s)) => units::size(&s),
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(n) => Err(self.err(key, format!("{n} bytes is out of range, expected {min}..={max}"))),
            None => Err(self.err(key, "expected a size such as 8192, \"16k\" or \"1m\"")),
        }
    }

    pub(super) fn duration(&self, key: &str, v: Option<NumOrStr>, default: Duration) -> Result<Duration, ConfigError> {
        let d = match v {
            None => return Ok(default),
            Some(NumOrStr::Num(n)) => u64::try_from(n).ok().map(Duration::from_secs),
            Some(NumOrStr::Str(s)) => units::duration(&s),
        };
        match d {
            Some(d) if d <= Duration::from_secs(86_400) => Ok(d),
            Some(_) => Err(self.err(key, "longer than a day")),
            None => Err(self.err(key, "expected a duration such as 60, \"30s\", \"500ms\" or \"2m\"")),
        }
    }

    pub(super) fn choice<T: Copy>(
        &self,
        key: &str,
        v: Option<String>,
        options: &[(&str, T)],
        default: T,
    ) -> Result<T, ConfigError> {
        let Some(v) = v else { return Ok(default) };
        options
            .iter()
            .find(|(name, _)| *name == v)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
                self.err(key, format!("\"{v}\" is not one of {}", names.join(", ")))
            })
    }
}

fn build(src: &Source, file: raw::File) -> Result<Config, ConfigError> {
    let main = build_main(src, file.main.unwrap_or_default())?;
    let mut raw_http = file.http.unwrap_or_default();
    let tls_defaults = super::tls::defaults(
        &Checker {
            src,
            table: "http",
            nth: 0,
        },
        super::tls::Keys {
            certificate: raw_http.certificate.take(),
            certificate_key: raw_http.certificate_key.take(),
            ocsp_staple: raw_http.ocsp_staple.take(),
            tls_protocols: raw_http.tls_protocols.take(),
            tls_session_tickets: raw_http.tls_session_tickets.take(),
            tls_session_timeout: raw_http.tls_session_timeout.take(),
        },
    )?;
    let http = build_http(src, raw_http)?;
    let raw_servers = match file.server {
        Some(v) if !v.is_empty() => v,
        Some(_) => {
            return Err(src.err("server", 0, "", "at least one [[server]] is required".into()));
        }
        None if src.builtin => vec![raw::Server::default()],
        // Pools only: corral as php-fpm, behind another web server.
        None if file.pool.as_ref().is_some_and(|p| !p.is_empty()) => Vec::new(),
        None => {
            return Err(ConfigError {
                file: src.name.clone(),
                line: None,
                key: "[[server]]".into(),
                message: "at least one [[server]] block is required".into(),
            });
        }
    };
    let mut upstreams = super::fastcgi::build_upstreams(src, file.upstream.unwrap_or_default())?;
    let pools = super::pool::build_pools(src, file.pool.unwrap_or_default(), main.user.as_ref())?;
    // `pass = "pool:NAME"` names this group: the pool's socket; when the
    // pool is saturated requests wait in corral up to its queue_timeout.
    for p in &pools {
        upstreams.push(super::fastcgi::Upstream {
            name: format!("pool:{}", p.name),
            balance: super::fastcgi::Balance::RoundRobin,
            // Kept (idle) connections hold a pool worker each: together
            // the HTTP workers keep no more than the pool has.
            keepalive: (p.max_children / main.workers).max(1),
            keepalive_timeout: Duration::from_secs(2),
            keepalive_requests: 100,
            // Admission comes from the pool's scoreboard (every worker
            // busy at max_children: wait in corral), not a per-worker cap.
            max_conns: 0,
            queue_timeout: p.queue_timeout,
            servers: vec![super::fastcgi::UpstreamServer {
                address: p.listen.clone(),
                weight: 1,
                max_fails: 0,
                fail_timeout: Duration::from_secs(10),
                backup: false,
            }],
            implicit: false,
        });
    }
    let mut servers = Vec::with_capacity(raw_servers.len());
    let (mut cgi_seen, mut loc_seen) = (0, 0);
    for (i, s) in raw_servers.into_iter().enumerate() {
        servers.push(build_server(
            src,
            i,
            s,
            &tls_defaults,
            &mut cgi_seen,
            &mut loc_seen,
            &mut upstreams,
        )?);
    }
    check_listen_overlaps(src, &servers, &pools, main.accept == Accept::Reuseport)?;
    let mut log_files = Vec::new();
    let mut named = |p: &PathBuf, table: &str, nth: usize, key: &str| {
        log_files.push((p.clone(), src.err(table, nth, key, String::new()).place()));
    };
    if let LogTarget::File(p) = &main.error_log {
        named(p, "main", 0, "error_log");
    }
    for (i, s) in servers.iter().enumerate() {
        if let LogTarget::File(p) = &s.access_log {
            named(p, "server", i, "access_log");
        }
    }
    for p in &pools {
        if let Some(s) = &p.slowlog {
            named(s, &format!("pool.{}", p.name), 0, "slowlog");
        }
    }
    let cfg = Config {
        file: None,
        main,
        http,
        servers,
        upstreams,
        pools,
        service_listen: Vec::new(),
        log_files,
    };
    for (a, names) in cfg.listen_addrs().iter().zip(cfg.names_by_address()) {
        let defaults: Vec<usize> = (0..cfg.servers.len())
            .filter(|&i| cfg.servers[i].default_server && cfg.servers[i].listen.contains(a))
            .collect();
        if defaults.len() > 1 {
            return Err(src.err(
                "server",
                defaults[1],
                "default_server",
                format!("a second default server for {a} (the first is server #{})", defaults[0]),
            ));
        }
        for w in names.conflicts() {
            crate::warn!("{}: {w} on {a}", src.name);
        }
        if cfg.is_tls(a)
            && let Some(i) =
                (0..cfg.servers.len()).find(|&i| cfg.servers[i].listen.contains(a) && cfg.servers[i].tls.is_none())
        {
            return Err(src.err(
                "server",
                i,
                "listen",
                format!("{a} is a TLS address, and this server on it has no `certificate`"),
            ));
        }
    }
    super::worker_access::check(&cfg, &src.name);
    Ok(cfg)
}

/// Addresses that `-t` would pass and the start would fail to bind: a
/// pool on a server's address, or a wildcard `*:P` next to a specific
/// `127.0.0.1:P` (corral binds each address it is given, and Linux
/// refuses the second, unless both have SO_REUSEPORT: `accept =
/// "reuseport"`). Servers sharing one address is fine.
fn check_listen_overlaps(
    src: &Source,
    servers: &[Server],
    pools: &[super::pool::Pool],
    reuseport: bool,
) -> Result<(), ConfigError> {
    // (table, occurrence, what to call it, address)
    let mut all: Vec<(String, usize, String, SocketAddr)> = Vec::new();
    for (i, s) in servers.iter().enumerate() {
        let line = src
            .locate("server", i, "listen")
            .or_else(|| src.locate("server", i, ""));
        let name = format!("the [[server]] at line {}", line.unwrap_or(0));
        all.extend(s.listen.iter().map(|a| ("server".to_string(), i, name.clone(), *a)));
    }
    for p in pools {
        if let super::fastcgi::Address::Tcp(a) = p.listen {
            let table = format!("pool.{}", p.name);
            let line = src.locate(&table, 0, "listen").unwrap_or(0);
            all.push((table, 0, format!("pool {} (line {line})", p.name), a));
        }
    }
    for (x, (table, nth, _, a)) in all.iter().enumerate() {
        for (t2, _, other, b) in &all[..x] {
            let both_servers = table == "server" && t2 == "server";
            let why = if a == b && !both_servers {
                format!("{} is also the listen address of {other}", show_addr(a))
            } else if a != b
                && (!reuseport || !both_servers)
                && a.port() == b.port()
                && a.is_ipv4() == b.is_ipv4()
                && (a.ip().is_unspecified() || b.ip().is_unspecified())
            {
                format!(
                    "{} overlaps {} of {other}: the second cannot be bound; listen on the same address in both",
                    show_addr(a),
                    show_addr(b)
                )
            } else {
                continue;
            };
            return Err(src.err(table, *nth, "listen", why));
        }
    }
    Ok(())
}

fn build_main(src: &Source, m: raw::Main) -> Result<Main, ConfigError> {
    let c = Checker {
        src,
        table: "main",
        nth: 0,
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = match m.workers {
        None => 1,
        Some(NumOrStr::Str(s)) if s == "auto" => cpus,
        Some(NumOrStr::Num(n)) if (1..=512).contains(&n) => n as usize,
        Some(NumOrStr::Num(n)) => {
            return Err(c.err("workers", format!("{n} is out of range, expected 1..=512 or \"auto\"")));
        }
        Some(NumOrStr::Str(s)) => return Err(c.err("workers", format!("\"{s}\" is not a number or \"auto\""))),
    };
    let levels = [
        ("debug", Level::Debug),
        ("info", Level::Info),
        ("notice", Level::Notice),
        ("warn", Level::Warn),
        ("error", Level::Error),
        ("crit", Level::Crit),
        ("alert", Level::Alert),
        ("emerg", Level::Emerg),
    ];
    let error_log = match m.error_log {
        None => LogTarget::Stderr,
        Some(s) if s == "off" => return Err(c.err("error_log", "cannot be \"off\"; use \"stderr\" or a file path")),
        Some(s) => src.log_target(&s),
    };
    let user = super::pool::credentials(&c, m.user, m.group)?;
    if user.is_none() && nix::unistd::Uid::effective().is_root() && !src.builtin {
        // Kept root, as corral always did: a default that changed who
        // runs the workers would turn existing sites (roots under 0700
        // directories, root-owned sockets) into 403s and 502s at the next
        // restart. Said at -t and at every start instead.
        crate::warn!(
            "{}: no \"user\" in [main]: the workers, CGI scripts and pools run as root; set user = \"www-data\" (or \"nobody\", nginx's default) unless root is meant",
            src.name
        );
    }
    let worker_cpu_affinity = parse_affinity(&c, "worker_cpu_affinity", m.worker_cpu_affinity)?;
    let main = Main {
        user,
        worker_rlimit_nofile: c
            .int("worker_rlimit_nofile", m.worker_rlimit_nofile, 0, 1 << 30, 0)
            .map(|n| (n > 0).then_some(n as u64))?,
        worker_cpu_affinity,
        worker_priority: m
            .worker_priority
            .map(|p| c.int("worker_priority", Some(p), -20, 19, 0).map(|p| p as i32))
            .transpose()?,
        worker_sched_policy: c.choice(
            "worker_sched_policy",
            m.worker_sched_policy,
            &[("other", SchedPolicy::Other), ("batch", SchedPolicy::Batch)],
            SchedPolicy::Other,
        )?,
        workers,
        worker_connections: c.int("worker_connections", m.worker_connections, 8, 1_048_576, 1024)? as usize,
        event_mode: c.choice(
            "event_mode",
            m.event_mode,
            &[("edge", EventMode::Edge), ("level", EventMode::Level)],
            EventMode::Edge,
        )?,
        accept: c.choice(
            "accept",
            m.accept,
            &[
                ("exclusive", Accept::Exclusive),
                ("reuseport", Accept::Reuseport),
                ("dispatch", Accept::Dispatch),
            ],
            Accept::Exclusive,
        )?,
        dispatch: c.choice(
            "dispatch",
            m.dispatch,
            &[
                ("least_conn", Dispatch::LeastConn),
                ("round_robin", Dispatch::RoundRobin),
            ],
            Dispatch::LeastConn,
        )?,
        worker_threads: c.int("worker_threads", m.worker_threads, 1, 64, 1)? as usize,
        pid: src.path(m.pid.as_deref().unwrap_or(DEFAULT_PID)),
        error_log,
        log_level: c.choice("log_level", m.log_level, &levels, Level::Info)?,
        daemon: m.daemon.unwrap_or(false),
        shutdown_timeout: c.duration("shutdown_timeout", m.shutdown_timeout, Duration::from_secs(60))?,
        listen_backlog: c.int("listen_backlog", m.listen_backlog, 1, 65_535, 511)? as i32,
    };
    // Each connection is a descriptor: said at -t, not only by the workers.
    let files = main.worker_rlimit_nofile.or_else(|| {
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .ok()
            .map(|(soft, _)| soft)
    });
    if let Some(files) = files.filter(|&f| (f as usize) < main.worker_connections) {
        crate::warn!(
            "{}: worker_connections {} exceed the open file limit of {files}{}: raise worker_rlimit_nofile",
            src.name,
            main.worker_connections,
            if main.worker_rlimit_nofile.is_some() {
                " (worker_rlimit_nofile)"
            } else {
                " (ulimit -n)"
            }
        );
    }
    Ok(main)
}

/// `"auto"`, `"off"` or a list of CPU numbers.
pub(super) fn parse_affinity(c: &Checker<'_>, key: &str, v: Option<raw::StrOrInts>) -> Result<Affinity, ConfigError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(match v {
        None => Affinity::Off,
        Some(raw::StrOrInts::Str(s)) if s == "auto" => Affinity::Auto,
        Some(raw::StrOrInts::Str(s)) if s == "off" => Affinity::Off,
        Some(raw::StrOrInts::Str(s)) => {
            return Err(c.err(key, format!("\"{s}\" is not \"auto\", \"off\" or a list of CPUs")));
        }
        Some(raw::StrOrInts::Ints(v)) => {
            if v.is_empty() || v.iter().any(|&n| n < 0 || n as usize >= cpus.max(1024)) {
                return Err(c.err(key, "expected a non-empty list of CPU numbers"));
            }
            let list: Vec<usize> = v.into_iter().map(|n| n as usize).collect();
            // Not an error: the machine may change under a config (a VM
            // resized, a cpuset moved); workers given such a CPU run unpinned.
            let allowed = crate::os::privileges::allowed_cpus();
            let missing: Vec<String> = list
                .iter()
                .filter(|n| !allowed.is_empty() && !allowed.contains(n))
                .map(|n| n.to_string())
                .collect();
            if !missing.is_empty() {
                crate::warn!(
                    "{}",
                    c.err(
                        key,
                        format!(
                            "CPU {} not available to this process (it may use {}): workers given it run unpinned",
                            missing.join(", "),
                            cpu_ranges(&allowed)
                        )
                    )
                );
            }
            Affinity::List(list)
        }
    })
}

/// `[0, 1, 2, 5]` as "0-2, 5".
fn cpu_ranges(cpus: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let mut j = i;
        while j + 1 < cpus.len() && cpus[j + 1] == cpus[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            cpus[i].to_string()
        } else {
            format!("{}-{}", cpus[i], cpus[j])
        });
        i = j + 1;
    }
    out.join(", ")
}

fn build_http(src: &Source, h: raw::Http) -> Result<Http, ConfigError> {
    let c = Checker {
        src,
        table: "http",
        nth: 0,
    };
    let max_header_size = c.size("max_header_size", h.max_header_size, 1024, 1 << 20, 16 << 10)? as usize;
    let max_uri_length = c.size("max_uri_length", h.max_uri_length, 64, 1 << 20, 8 << 10)? as usize;
    if max_uri_length > max_header_size {
        return Err(c.err(
            "max_uri_length",
            format!("{max_uri_length} is larger than max_header_size ({max_header_size})"),
        ));
    }
    let temp = src.path(h.client_body_temp_path.as_deref().unwrap_or("/tmp"));
    if !temp.is_dir() {
        return Err(c.err(
            "client_body_temp_path",
            format!("{} is not a directory", temp.display()),
        ));
    }
    Ok(Http {
        client_body_temp_path: temp,
        keepalive_timeout: c.duration("keepalive_timeout", h.keepalive_timeout, Duration::from_secs(75))?,
        keepalive_requests: c.int("keepalive_requests", h.keepalive_requests, 0, 1 << 30, 1000)? as u32,
        client_header_timeout: c.duration(
            "client_header_timeout",
            h.client_header_timeout,
            Duration::from_secs(60),
        )?,
        client_body_timeout: c.duration("client_body_timeout", h.client_body_timeout, Duration::from_secs(60))?,
        send_timeout: c.duration("send_timeout", h.send_timeout, Duration::from_secs(60))?,
        lingering_timeout: c.duration("lingering_timeout", h.lingering_timeout, Duration::from_secs(5))?,
        drain_idle_timeout: c.duration("drain_idle_timeout", h.drain_idle_timeout, Duration::from_secs(2))?,
        client_max_body_size: c.size("client_max_body_size", h.client_max_body_size, 0, 1 << 50, 1 << 20)?,
        max_header_size,
        max_uri_length,
        inline_file_max: c.size("inline_file_max", h.inline_file_max, 0, 1 << 20, 32 << 10)?,
        open_file_cache: c.int("open_file_cache", h.open_file_cache, 0, 1_000_000, 1000)? as usize,
        open_file_cache_memory: c.size("open_file_cache_memory", h.open_file_cache_memory, 0, 1 << 40, 32 << 20)?,
        server_tokens: h.server_tokens.unwrap_or(true),
        limit_zone_size: c.size("limit_zone_size", h.limit_zone_size, 0, 1 << 34, 1 << 20)?,
        limit_conn_status: c.int("limit_conn_status", h.limit_conn_status, 400, 599, 503)? as u16,
        limit_req_status: c.int("limit_req_status", h.limit_req_status, 400, 599, 503)? as u16,
    })
}

fn build_cgi(src: &Source, nth: usize, root: &Path, g: raw::Cgi) -> Result<super::Cgi, ConfigError> {
    let c = Checker {
        src,
        table: "server.cgi",
        nth,
    };
    build_cgi_in(&c, src, root, g)
}

fn build_cgi_in(c: &Checker<'_>, src: &Source, root: &Path, g: raw::Cgi) -> Result<super::Cgi, ConfigError> {
    if let Some(p) = &g.prefix
        && (!p.starts_with('/') || !p.ends_with('/'))
    {
        return Err(c.err("prefix", format!("\"{p}\" must start and end with \"/\"")));
    }
    let extensions = g.extensions.map(raw::OneOrMany::into_vec).unwrap_or_default();
    for e in &extensions {
        if !e.starts_with('.') || e.len() < 2 || e.contains('/') {
            return Err(c.err("extensions", format!("\"{e}\" is not an extension such as \".cgi\"")));
        }
    }
    if g.prefix.is_none() && extensions.is_empty() {
        return Err(c.err("", "needs `prefix`, `extensions` or both"));
    }
    let script = g.script.map(|p| src.path(&p));
    if let Some(p) = &script {
        use std::os::unix::fs::PermissionsExt;
        let ok = std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if !ok {
            return Err(c.err("script", format!("{} is not an executable file", p.display())));
        }
        if g.prefix.is_none() {
            return Err(c.err("script", "needs a `prefix`"));
        }
    }
    let dir = match &g.dir {
        Some(d) => src.path(d),
        None if g.prefix.is_some() && script.is_none() => {
            return Err(c.err("dir", "a `prefix` location needs the `dir` its scripts live in"));
        }
        None => root.to_path_buf(),
    };
    if script.is_none() && !dir.is_dir() {
        return Err(c.err("dir", format!("{} is not a directory", dir.display())));
    }
    let mut interpreters = Vec::new();
    for (ext, prog) in g.interpreters.unwrap_or_default() {
        let p = src.path(&prog);
        if !ext.starts_with('.') {
            return Err(c.err("interpreters", format!("\"{ext}\" is not an extension such as \".py\"")));
        }
        if !p.is_file() {
            return Err(c.err("interpreters", format!("{} (for {ext}) is not a file", p.display())));
        }
        interpreters.push((ext, p));
    }
    let mut env = Vec::new();
    for (k, v) in g.env.unwrap_or_default() {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return Err(c.err("env", format!("\"{k}\" is not an environment variable name")));
        }
        env.push((k, v));
    }
    Ok(super::Cgi {
        prefix: g.prefix,
        extensions,
        dir,
        script,
        interpreters,
        timeout: c.duration("timeout", g.timeout, Duration::from_secs(60))?,
        max_concurrent: c.int("max_concurrent", g.max_concurrent, 1, 100_000, 64)? as usize,
        env,
        request_buffering: g.request_buffering.unwrap_or(true),
        x_accel_redirect: g.x_accel_redirect.unwrap_or(true),
    })
}

fn build_server(
    src: &Source,
    nth: usize,
    mut s: raw::Server,
    tls_defaults: &super::tls::Defaults,
    cgi_seen: &mut usize,
    loc_seen: &mut usize,
    ups: &mut Vec<super::fastcgi::Upstream>,
) -> Result<Server, ConfigError> {
    let c = Checker {
        src,
        table: "server",
        nth,
    };
    let listen_raw = s
        .listen
        .take()
        .map(raw::OneOrMany::into_vec)
        .unwrap_or_else(|| vec!["127.0.0.1:8080".into()]);
    if listen_raw.is_empty() {
        return Err(c.err("listen", "needs at least one address"));
    }
    let mut listen = Vec::new();
    let mut tls_listen = Vec::new();
    for a in &listen_raw {
        // "*:443 tls" (nginx's "ssl" reads the same).
        let mut words = a.split_whitespace();
        let addr = words.next().and_then(parse_listen).ok_or_else(|| {
            c.err(
                "listen",
                format!(
                    "\"{a}\" is not an address such as \"127.0.0.1:8080\", \"[::1]:8080\", \"8080\" or \"*:443 tls\""
                ),
            )
        })?;
        for flag in words {
            match flag {
                "tls" | "ssl" => {
                    if !tls_listen.contains(&addr) {
                        tls_listen.push(addr);
                    }
                }
                _ => {
                    return Err(c.err(
                        "listen",
                        format!("\"{a}\": unknown parameter \"{flag}\", expected \"tls\""),
                    ));
                }
            }
        }
        // nginx: "duplicate listen" (`"*:443"` and `"*:443 tls"` too).
        if listen.contains(&addr) {
            return Err(c.err("listen", format!("duplicate listen {}", show_addr(&addr))));
        }
        listen.push(addr);
    }
    let tls_keys = super::tls::Keys {
        certificate: s.certificate.take(),
        certificate_key: s.certificate_key.take(),
        ocsp_staple: s.ocsp_staple.take(),
        tls_protocols: s.tls_protocols.take(),
        tls_session_tickets: s.tls_session_tickets.take(),
        tls_session_timeout: s.tls_session_timeout.take(),
    };
    let tls = super::tls::build(&c, tls_keys, tls_defaults)?;
    let root = src.path(s.root.as_deref().unwrap_or("www"));
    if s.root.is_none() {
        // A root not written (the built-in default, a server that only
        // redirects) may be missing: nothing is served from it then (404).
    } else if !root.is_dir() {
        return Err(c.err("root", format!("{} is not a directory", root.display())));
    }
    let index = s
        .index
        .map(raw::OneOrMany::into_vec)
        .unwrap_or_else(|| vec!["index.html".into()]);
    for name in &index {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(c.err("index", format!("\"{name}\" must be a plain file name")));
        }
    }
    let server_name = s.server_name.map(raw::OneOrMany::into_vec).unwrap_or_default();
    let mut names = Vec::with_capacity(server_name.len());
    for n in &server_name {
        names.push(super::server_name::parse(n).map_err(|e| c.err("server_name", e))?);
    }
    // Captures of regex server names, usable in the locations' strings.
    let server_caps: Vec<String> = names
        .iter()
        .filter_map(|n| match n {
            super::server_name::Pattern::Regex(re) => Some(super::Match::Regex(re.clone()).capture_names()),
            _ => None,
        })
        .flatten()
        .collect();
    let mut locations = Vec::new();
    // `[[server.cgi]]` is shorthand for a location: a prefix one stops the
    // regexes (`^~`), an extension one is a regex on the extensions.
    for g in s.cgi.unwrap_or_default() {
        let cgi = build_cgi(src, *cgi_seen, &root, g)?;
        *cgi_seen += 1;
        let (pattern, matches) = match &cgi.prefix {
            Some(p) => (format!("^~ {p}"), super::Match::Prefix(p.clone(), true)),
            None => {
                let alts: Vec<String> = cgi.extensions.iter().map(|e| regex::escape(e)).collect();
                let re = format!("({})(/|$)", alts.join("|"));
                (
                    format!("~ {re}"),
                    super::Match::Regex(regex::Regex::new(&re).expect("escaped extensions")),
                )
            }
        };
        locations.push(super::Location {
            pattern,
            matches,
            root: None,
            index: None,
            autoindex: None,
            deny_hidden: None,
            charset: None,
            handler: super::Handler::Cgi(cgi),
            try_files: Vec::new(),
            add_header: None,
            expires: None,
            default_type: None,
            access: None,
            error_page: None,
            rewrite: Vec::new(),
            alias: None,
            gzip_static: None,
            gzip: None,
            auth: None,
            internal: false,
        });
    }
    let raw_locations = s.location.unwrap_or_default();
    let n_locations = raw_locations.len();
    for (k, l) in raw_locations.into_iter().enumerate() {
        let loc = build_location(src, *loc_seen + k, &root, &server_caps, l, ups)?;
        // nginx: "duplicate location"; the second could never be chosen.
        if let Some(first) = locations
            .iter()
            .position(|o: &super::Location| same_match(&o.matches, &loc.matches))
        {
            let lc = Checker {
                src,
                table: "server.location",
                nth: *loc_seen + k,
            };
            let at = match first.checked_sub(locations.len() - k) {
                Some(j) => format!(
                    "line {}",
                    src.locate("server.location", *loc_seen + j, "match").unwrap_or(0)
                ),
                None => "a [[server.cgi]] of this server".to_string(),
            };
            return Err(lc.err(
                "match",
                format!("duplicate location \"{}\" (also at {at})", loc.pattern),
            ));
        }
        locations.push(loc);
    }
    let error_page = parse_error_page(&c, s.error_page.take())?.unwrap_or_default();
    check_named(src, &c, &error_page, &locations, *loc_seen, n_locations)?;
    // Counts `[[server.location]]` headers only, as `locate` does.
    *loc_seen += n_locations;
    let cgi = Vec::new();
    Ok(Server {
        listen,
        tls_listen,
        tls,
        server_name,
        names,
        default_server: s.default_server.unwrap_or(false),
        root,
        index,
        access_log: s.access_log.map_or(LogTarget::Off, |a| src.log_target(&a)),
        autoindex: s.autoindex.unwrap_or(false),
        follow_symlinks_outside_root: s.follow_symlinks_outside_root.unwrap_or(false),
        absolute_redirect: s.absolute_redirect.unwrap_or(true),
        port_in_redirect: s.port_in_redirect.unwrap_or(true),
        server_name_in_redirect: s.server_name_in_redirect.unwrap_or(false),
        cgi,
        fastcgi: None,
        limit_conn: match s.limit_conn {
            None => None,
            Some(n) => Some(c.int("limit_conn", Some(n), 1, 1 << 30, 0)? as u64),
        },
        limit_req: s.limit_req.map(|r| build_limit_req(&c, r)).transpose()?,
        deny_hidden: s.deny_hidden.unwrap_or(true),
        charset: parse_charset(&c, s.charset.as_deref())?,
        locations,
        add_header: parse_add_header(&c, s.add_header)?.unwrap_or_default(),
        expires: parse_expires(&c, s.expires)?.flatten(),
        default_type: parse_type(&c, s.default_type)?.unwrap_or_else(|| "application/octet-stream".into()),
        access: parse_access(&c, s.allow, s.deny, s.access)?.unwrap_or_default(),
        error_page,
        rewrite: parse_rewrite(&c, s.rewrite)?,
        gzip_static: s.gzip_static.unwrap_or(false),
        gzip: parse_gzip(&c, s.gzip, s.gzip_types, s.gzip_min_length, s.gzip_comp_level)?.flatten(),
        auth: parse_auth(&c, src, s.auth_basic, s.auth_basic_user_file)?.flatten(),
    })
}

/// Every `@name` that a `try_files` fallback or an `error_page` of this
/// server names is one of its named locations (nginx refuses the rest
/// only when a request gets there; corral at load).
fn check_named(
    src: &Source,
    c: &Checker<'_>,
    server_pages: &[super::ErrorPage],
    locations: &[super::Location],
    loc_seen: usize,
    n_locations: usize,
) -> Result<(), ConfigError> {
    use super::template::Part;
    let named: Vec<&str> = locations
        .iter()
        .filter_map(|l| match &l.matches {
            super::Match::Named(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    let unknown = |target: &str| {
        target
            .strip_prefix('@')
            .filter(|n| !named.contains(n))
            .map(|n| format!("no named location \"@{n}\" in this server"))
    };
    for page in server_pages {
        if let Some(e) = unknown(&page.uri) {
            return Err(c.err("error_page", e));
        }
    }
    let first = locations.len() - n_locations;
    for (j, l) in locations.iter().enumerate().skip(first) {
        let lc = Checker {
            src,
            table: "server.location",
            nth: loc_seen + j - first,
        };
        if let Some(t) = l.try_files.last() {
            match t.0.as_slice() {
                [Part::Lit(name)] => {
                    if let Some(e) = unknown(name) {
                        return Err(lc.err("try_files", e));
                    }
                }
                [Part::Lit(at), ..] if at.starts_with('@') => {
                    return Err(lc.err("try_files", "a named location (\"@name\") cannot hold variables"));
                }
                _ => {}
            }
        }
        for page in l.error_page.iter().flatten() {
            if let Some(e) = unknown(&page.uri) {
                return Err(lc.err("error_page", e));
            }
        }
    }
    Ok(())
}

/// Two `match`es that select the same requests: nginx's "duplicate
/// location" (`/a` and `^~ /a` are one prefix).
fn same_match(a: &super::Match, b: &super::Match) -> bool {
    use super::Match;
    match (a, b) {
        (Match::Exact(x), Match::Exact(y)) => x == y,
        (Match::Prefix(x, _), Match::Prefix(y, _)) => x == y,
        (Match::Regex(x), Match::Regex(y)) => x.as_str() == y.as_str(),
        (Match::Named(x), Match::Named(y)) => x == y,
        _ => false,
    }
}

/// `0.0.0.0:80` as `*:80`, as an operator writes it.
fn show_addr(a: &SocketAddr) -> String {
    if a.ip().is_unspecified() && a.is_ipv4() {
        format!("*:{}", a.port())
    } else {
        a.to_string()
    }
}

/// `charset`: a name, `"off"` (None), or absent (utf-8).
fn parse_charset(c: &Checker<'_>, v: Option<&str>) -> Result<Option<String>, ConfigError> {
    match v {
        None => Ok(Some("utf-8".to_string())),
        Some("off") => Ok(None),
        Some(cs) if !cs.is_empty() && cs.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b)) => {
            Ok(Some(cs.to_ascii_lowercase()))
        }
        Some(cs) => Err(c.err(
            "charset",
            format!("\"{cs}\" is not a charset name such as \"utf-8\" or \"off\""),
        )),
    }
}

fn build_location(
    src: &Source,
    nth: usize,
    root: &Path,
    server_caps: &[String],
    l: raw::Location,
    ups: &mut Vec<super::fastcgi::Upstream>,
) -> Result<super::Location, ConfigError> {
    let c = Checker {
        src,
        table: "server.location",
        nth,
    };
    let pattern = l.matches.ok_or_else(|| {
        c.err(
            "match",
            "every location needs a `match`, such as \"/images/\" or \"~ \\\\.php$\"",
        )
    })?;
    let matches = super::Match::parse(&pattern).map_err(|e| c.err("match", e))?;
    let mut caps = matches.capture_names();
    caps.extend(server_caps.iter().cloned());
    // `alias`: its fixed directory part becomes the root files are confined
    // to; what follows (captures in a regex location) is expanded per request.
    let mut alias = None;
    let mut alias_root = None;
    if let Some(a) = &l.alias {
        if l.root.is_some() {
            return Err(c.err("alias", "a location has `root` or `alias`, not both"));
        }
        if l.try_files.is_some() {
            return Err(c.err("alias", "`try_files` with `alias` is not supported; use `root`"));
        }
        let abs = src.path(a);
        let text = abs.to_string_lossy().into_owned();
        // The directory part: up to the last "/" before the first variable;
        // a literal alias is that directory, or a file in it.
        let dir_end = match text.find('$') {
            Some(v) => text[..v].rfind('/').unwrap_or(0),
            None if text.ends_with('/') || abs.is_dir() => text.trim_end_matches('/').len(),
            None => text.rfind('/').unwrap_or(0),
        };
        let dir = std::path::PathBuf::from(if dir_end == 0 { "/" } else { &text[..dir_end] });
        if !dir.is_dir() {
            return Err(c.err("alias", format!("{} is not a directory", dir.display())));
        }
        let rest = text[dir_end..].trim_start_matches('/').to_string();
        alias = Some(super::template::Template::parse(&rest, &matches.capture_names()).map_err(|e| c.err("alias", e))?);
        alias_root = Some(dir);
    }
    let root_dir = match l.root {
        Some(r) => {
            let p = src.path(&r);
            if !p.is_dir() {
                return Err(c.err("root", format!("{} is not a directory", p.display())));
            }
            Some(p)
        }
        None => alias_root,
    };
    let index = l.index.map(raw::OneOrMany::into_vec);
    for name in index.iter().flatten() {
        if name.is_empty() || name.contains('/') || name == "." || name == ".." {
            return Err(c.err("index", format!("\"{name}\" must be a plain file name")));
        }
    }
    let charset = match l.charset.as_deref() {
        None => None,
        v => Some(parse_charset(&c, v)?),
    };
    // The keys of the content handlers given (more than one is an error).
    let mut given: Vec<&str> = Vec::new();
    let mut handler = super::Handler::Static;
    if let Some(r) = l.ret {
        given.push("return");
        let text = match r {
            NumOrStr::Num(n) => n.to_string(),
            NumOrStr::Str(s) => s,
        };
        let (code, rest) = match text.split_once(' ') {
            Some((a, b)) => (a, Some(b.trim_start())),
            None => (text.as_str(), None),
        };
        let (code, rest) = match code.parse::<u16>() {
            Ok(n) => (n, rest),
            // nginx: `return URL` is a 302.
            Err(_) if text.starts_with("http://") || text.starts_with("https://") || text.starts_with('$') => {
                (302, Some(text.as_str()))
            }
            Err(_) => {
                return Err(c.err(
                    "return",
                    format!("\"{text}\" does not start with a status code (or a URL)"),
                ));
            }
        };
        if !(200..=599).contains(&code) && code != 444 {
            return Err(c.err(
                "return",
                format!("{code} is not a status code (200..=599, or 444 to close)"),
            ));
        }
        if matches!(code, 301 | 302 | 303 | 307 | 308) && rest.is_none() {
            return Err(c.err("return", format!("a {code} needs the URL to redirect to")));
        }
        let text = rest
            .map(|t| super::template::Template::parse(t, &caps))
            .transpose()
            .map_err(|e| c.err("return", e))?;
        handler = super::Handler::Return { code, text };
    }
    if let Some(g) = l.cgi {
        given.push("cgi");
        if g.prefix.is_some() {
            return Err(c.err(
                "cgi",
                "a location's CGI takes its URL prefix from `match`: remove `prefix`",
            ));
        }
        let mut g = g;
        match &matches {
            super::Match::Prefix(p, _) if p.ends_with('/') => g.prefix = Some(p.clone()),
            super::Match::Regex(_) if g.extensions.is_some() => {}
            _ => {
                return Err(c.err(
                    "cgi",
                    "needs a prefix location ending in \"/\" (scripts under it), or `extensions` in a regex location",
                ));
            }
        }
        // Its keys are the `cgi` table's, on the `cgi = {...}` line.
        let cgi = build_cgi_in(&c, src, root_dir.as_deref().unwrap_or(root), g).map_err(|mut e| {
            let key = e.key.strip_prefix("server.location.").unwrap_or("").to_string();
            e.key = format!("server.location.cgi.{key}");
            e.line = src.locate(c.table, c.nth, &format!("cgi.{key}")).or(e.line);
            e
        })?;
        handler = super::Handler::Cgi(cgi);
    }
    if l.status == Some(true) {
        given.push("status");
        handler = super::Handler::Status;
    }
    if let Some(f) = l.fastcgi {
        given.push("fastcgi");
        handler = super::Handler::FastCgi(super::fastcgi::build_fastcgi(&c, f, ups)?);
    }
    if given.len() > 1 {
        // Blamed on the one written last.
        let key = given
            .iter()
            .max_by_key(|k| src.locate(c.table, c.nth, k))
            .copied()
            .unwrap_or("return");
        return Err(c.err(
            key,
            "a location has one content handler: `return`, `cgi`, `fastcgi` or `status`, not more",
        ));
    }
    let mut try_files = Vec::new();
    if let Some(list) = l.try_files {
        if list.len() < 2 {
            return Err(c.err(
                "try_files",
                "needs the files to try and a final fallback: a URI (\"/index.php?$query_string\") or \"=404\"",
            ));
        }
        for (k, t) in list.iter().enumerate() {
            if k + 1 == list.len() {
                let code_ok = t
                    .strip_prefix('=')
                    .map(|n| n.parse::<u16>().is_ok_and(|n| (200..=599).contains(&n)));
                match code_ok {
                    Some(true) => {}
                    Some(false) => {
                        return Err(c.err("try_files", format!("\"{t}\" is not \"=code\" with a status code")));
                    }
                    None if t.starts_with('/') || t.starts_with('$') || t.starts_with('@') => {}
                    None => {
                        return Err(c.err(
                            "try_files",
                            format!(
                                "the last entry \"{t}\" must be a URI starting with \"/\", a named location \"@name\" or \"=code\""
                            ),
                        ));
                    }
                }
            }
            try_files.push(super::template::Template::parse(t, &caps).map_err(|e| c.err("try_files", e))?);
        }
    }
    Ok(super::Location {
        pattern,
        matches,
        root: root_dir,
        index,
        autoindex: l.autoindex,
        deny_hidden: l.deny_hidden,
        charset,
        handler,
        try_files,
        add_header: parse_add_header(&c, l.add_header)?,
        expires: parse_expires(&c, l.expires)?,
        default_type: parse_type(&c, l.default_type)?,
        access: parse_access(&c, l.allow, l.deny, l.access)?,
        error_page: parse_error_page(&c, l.error_page)?,
        rewrite: parse_rewrite(&c, l.rewrite)?,
        alias,
        gzip_static: l.gzip_static,
        gzip: parse_gzip(&c, l.gzip, l.gzip_types, l.gzip_min_length, l.gzip_comp_level)?,
        auth: parse_auth(&c, src, l.auth_basic, l.auth_basic_user_file)?,
        internal: l.internal.unwrap_or(false),
    })
}

/// `auth_basic = "realm"` with `auth_basic_user_file`; `"off"` is `Some(None)`.
fn parse_auth(
    c: &Checker<'_>,
    src: &Source,
    realm: Option<String>,
    file: Option<String>,
) -> Result<Option<Option<super::Auth>>, ConfigError> {
    match (realm, file) {
        (None, None) => Ok(None),
        (Some(r), _) if r == "off" => Ok(Some(None)),
        (None, Some(_)) => Err(c.err("auth_basic_user_file", "needs `auth_basic = \"realm\"` beside it")),
        (Some(_), None) => Err(c.err("auth_basic", "needs `auth_basic_user_file`, the htpasswd file")),
        (Some(realm), Some(f)) => {
            if realm.contains(['"', '\\']) || realm.chars().any(char::is_control) {
                return Err(c.err(
                    "auth_basic",
                    "the realm may not hold quotes, backslashes or control characters",
                ));
            }
            let users = super::htpasswd::Htpasswd::load(&src.path(&f)).map_err(|e| c.err("auth_basic_user_file", e))?;
            Ok(Some(Some(super::Auth {
                realm,
                users: std::sync::Arc::new(users),
            })))
        }
    }
}

/// `gzip = true` and its knobs; `Some(None)` for `gzip = false`.
fn parse_gzip(
    c: &Checker<'_>,
    on: Option<bool>,
    types: Option<raw::OneOrMany>,
    min_length: Option<NumOrStr>,
    level: Option<i64>,
) -> Result<Option<Option<super::Gzip>>, ConfigError> {
    if on.is_none() {
        let set = [
            ("gzip_types", types.is_some()),
            ("gzip_min_length", min_length.is_some()),
            ("gzip_comp_level", level.is_some()),
        ];
        if let Some((key, _)) = set.iter().find(|(_, on)| *on) {
            return Err(c.err(
                key,
                "gzip_types, gzip_min_length and gzip_comp_level need `gzip = true` here",
            ));
        }
        return Ok(None);
    }
    if on == Some(false) {
        return Ok(Some(None));
    }
    let types = types.map(raw::OneOrMany::into_vec).unwrap_or_else(|| {
        [
            "text/html",
            "text/plain",
            "text/css",
            "text/xml",
            "text/javascript",
            "application/javascript",
            "application/json",
            "application/xml",
            "application/rss+xml",
            "application/atom+xml",
            "image/svg+xml",
            "application/wasm",
        ]
        .map(str::to_string)
        .to_vec()
    });
    for t in &types {
        if t != "*" && !t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()) {
            return Err(c.err(
                "gzip_types",
                format!("\"{t}\" is not a media type such as \"text/css\" (or \"*\")"),
            ));
        }
    }
    Ok(Some(Some(super::Gzip {
        types,
        min_length: c.size("gzip_min_length", min_length, 0, 1 << 40, 256)?,
        level: c.int("gzip_comp_level", level, 1, 9, 1)? as u32,
    })))
}

/// `rewrite = [["^/old/(.*)$", "/new/$1", "last"], ...]`.
fn parse_rewrite(c: &Checker<'_>, v: Option<Vec<Vec<String>>>) -> Result<Vec<super::Rewrite>, ConfigError> {
    let mut out = Vec::new();
    for rule in v.unwrap_or_default() {
        let (re, replacement, flag) = match rule.as_slice() {
            [re, rep] => (re, rep, "".to_string()),
            [re, rep, flag] => (re, rep, flag.clone()),
            _ => {
                return Err(c.err(
                    "rewrite",
                    format!("{rule:?} must be [regex, replacement] or [regex, replacement, flag]"),
                ));
            }
        };
        let regex =
            regex::Regex::new(re).map_err(|e| c.err("rewrite", format!("regex \"{re}\" does not compile: {e}")))?;
        let flag = match flag.as_str() {
            "" => super::RewriteFlag::None,
            "last" => super::RewriteFlag::Last,
            "break" => super::RewriteFlag::Break,
            "redirect" => super::RewriteFlag::Redirect,
            "permanent" => super::RewriteFlag::Permanent,
            f => {
                return Err(c.err(
                    "rewrite",
                    format!("unknown flag \"{f}\" (expected last, break, redirect or permanent)"),
                ));
            }
        };
        let caps = super::Match::Regex(regex.clone()).capture_names();
        let replacement = super::template::Template::parse(replacement, &caps).map_err(|e| c.err("rewrite", e))?;
        out.push(super::Rewrite {
            regex,
            replacement,
            flag,
        });
    }
    Ok(out)
}

/// `error_page = { 404 = "/404.html", "500 502 503 504" = "/50x.html",
/// 403 = "=200 /empty.gif", 410 = "https://example.org/gone" }`.
fn parse_error_page(
    c: &Checker<'_>,
    v: Option<std::collections::BTreeMap<String, String>>,
) -> Result<Option<Vec<super::ErrorPage>>, ConfigError> {
    let Some(map) = v else { return Ok(None) };
    let mut out: Vec<super::ErrorPage> = Vec::new();
    for (codes, target) in map {
        let target = target.trim();
        let (answer, uri) = match target.strip_prefix('=') {
            Some(rest) => {
                let (code, uri) = rest.split_once(' ').unwrap_or(("", rest));
                let uri = uri.trim();
                if code.is_empty() {
                    (Some(None), uri)
                } else {
                    let n = code
                        .parse::<u16>()
                        .ok()
                        .filter(|n| (200..=599).contains(n))
                        .ok_or_else(|| c.err("error_page", format!("\"={code}\" is not a status code")))?;
                    (Some(Some(n)), uri)
                }
            }
            None => (None, target),
        };
        if !(uri.starts_with('/') || uri.starts_with('@') || uri.starts_with("http://") || uri.starts_with("https://"))
        {
            return Err(c.err(
                "error_page",
                format!(
                    "\"{target}\" must be a URI starting with \"/\", a named location \"@name\" or a URL (optionally after \"=code\")"
                ),
            ));
        }
        for code in codes.split_whitespace() {
            let status = code
                .parse::<u16>()
                .ok()
                .filter(|n| (300..=599).contains(n))
                .ok_or_else(|| c.err("error_page", format!("\"{code}\" is not a status code 300..=599")))?;
            if out.iter().any(|e| e.status == status) {
                return Err(c.err("error_page", format!("{status} is given twice")));
            }
            out.push(super::ErrorPage {
                status,
                uri: uri.to_string(),
                answer,
            });
        }
    }
    Ok(Some(out))
}

/// `access = ["allow 10.0.0.0/8", "deny all"]` in nginx's order, or the
/// short forms: `allow = [...]` alone allows those and denies the rest,
/// `deny = [...]` alone denies those; with both, `deny` entries are checked
/// first, then `allow`, then the rest is denied.
fn parse_access(
    c: &Checker<'_>,
    allow: Option<raw::OneOrMany>,
    deny: Option<raw::OneOrMany>,
    access: Option<Vec<String>>,
) -> Result<Option<Vec<super::access::Rule>>, ConfigError> {
    use super::access::Rule;
    if access.is_some() && (allow.is_some() || deny.is_some()) {
        return Err(c.err(
            "access",
            "use either `access` (an ordered list) or `allow` / `deny`, not both",
        ));
    }
    if let Some(list) = access {
        let mut rules = Vec::new();
        for item in list {
            let (verb, what) = item.trim().split_once(char::is_whitespace).unwrap_or((item.trim(), ""));
            let allow = match verb {
                "allow" => true,
                "deny" => false,
                _ => {
                    return Err(c.err(
                        "access",
                        format!("\"{item}\" must be \"allow ADDRESS\" or \"deny ADDRESS\" (or \"... all\")"),
                    ));
                }
            };
            rules.push(Rule::parse(allow, what).map_err(|e| c.err("access", e))?);
        }
        return Ok(Some(rules));
    }
    if allow.is_none() && deny.is_none() {
        return Ok(None);
    }
    let mut rules = Vec::new();
    for d in deny.map(raw::OneOrMany::into_vec).unwrap_or_default() {
        rules.push(Rule::parse(false, &d).map_err(|e| c.err("deny", e))?);
    }
    if let Some(a) = allow {
        for a in a.into_vec() {
            rules.push(Rule::parse(true, &a).map_err(|e| c.err("allow", e))?);
        }
        rules.push(Rule::parse(false, "all").expect("all"));
    }
    Ok(Some(rules))
}

fn parse_add_header(
    c: &Checker<'_>,
    v: Option<std::collections::BTreeMap<String, raw::HeaderValue>>,
) -> Result<Option<Vec<super::AddHeader>>, ConfigError> {
    let Some(map) = v else { return Ok(None) };
    let mut out = Vec::new();
    for (name, v) in map {
        let (value, always) = match v {
            raw::HeaderValue::Plain(v) => (v, false),
            raw::HeaderValue::Full(raw::HeaderFull { value, always }) => (value, always.unwrap_or(false)),
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || !name.bytes().all(token) {
            return Err(c.err("add_header", format!("\"{name}\" is not a header name")));
        }
        if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
            return Err(c.err("add_header", format!("the value of {name} has a control character")));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "content-length" | "transfer-encoding" | "connection" | "date" | "server" | "content-type"
        ) {
            return Err(c.err(
                "add_header",
                format!("{name} is set by corral itself and cannot be added"),
            ));
        }
        out.push(super::AddHeader { name, value, always });
    }
    Ok(Some(out))
}

/// `expires`: `"30d"`, `"-1h"`, `"epoch"`, `"max"`, `"off"` (`Some(None)`).
fn parse_expires(c: &Checker<'_>, v: Option<NumOrStr>) -> Result<Option<Option<super::Expires>>, ConfigError> {
    let s = match v {
        None => return Ok(None),
        Some(NumOrStr::Num(n)) => n.to_string(),
        Some(NumOrStr::Str(s)) => s,
    };
    let e = match s.trim() {
        "off" => None,
        "epoch" => Some(super::Expires::Epoch),
        "max" => Some(super::Expires::Max),
        t => {
            let (neg, t) = match t.strip_prefix('-') {
                Some(rest) => (true, rest),
                None => (false, t.strip_prefix('+').unwrap_or(t)),
            };
            let d = units::duration(t)
                .filter(|d| d.as_secs() <= 10 * 365 * 86_400)
                .ok_or_else(|| {
                    c.err(
                        "expires",
                        format!(
                            "\"{s}\" is not a time such as \"30d\", \"12h\", \"-1\", \"epoch\", \"max\" or \"off\""
                        ),
                    )
                })?;
            Some(if neg {
                super::Expires::NoCache(d)
            } else {
                super::Expires::After(d)
            })
        }
    };
    Ok(Some(e))
}

fn parse_type(c: &Checker<'_>, v: Option<String>) -> Result<Option<String>, ConfigError> {
    match v {
        None => Ok(None),
        Some(t)
            if t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty())
                && !t.bytes().any(|b| b.is_ascii_control() || b == b' ') =>
        {
            Ok(Some(t))
        }
        Some(t) => Err(c.err(
            "default_type",
            format!("\"{t}\" is not a media type such as \"text/plain\""),
        )),
    }
}

fn build_limit_req(c: &Checker<'_>, r: raw::LimitReq) -> Result<super::RateLimit, ConfigError> {
    let rate = r
        .rate
        .ok_or_else(|| c.err("limit_req", "needs a rate, such as rate = \"10r/s\" or \"30r/m\""))?;
    let per_kilosecond = parse_rate(&rate).ok_or_else(|| {
        c.err(
            "limit_req",
            format!("rate \"{rate}\" is not a rate such as \"10r/s\" or \"30r/m\""),
        )
    })?;
    let burst = match r.burst {
        None => 0,
        Some(b) if (0..=1_000_000).contains(&b) => b as u64,
        Some(b) => return Err(c.err("limit_req", format!("burst {b} is out of range, expected 0..=1000000"))),
    };
    Ok(super::RateLimit {
        per_kilosecond,
        burst,
        nodelay: r.nodelay.unwrap_or(false),
    })
}

/// `"10r/s"` or `"30r/m"` as requests per 1000 seconds.
fn parse_rate(s: &str) -> Option<u64> {
    let (n, unit) = s.trim().split_once("r/")?;
    let n: u64 = n.trim().parse().ok().filter(|n| (1..=1_000_000).contains(n))?;
    match unit.trim() {
        "s" => Some(n * 1000),
        "m" => Some((n * 1000).div_ceil(60)),
        _ => None,
    }
}

/// `"127.0.0.1:80"`, `"[::1]:80"`, `"*:80"` or a bare port.
fn parse_listen(s: &str) -> Option<SocketAddr> {
    if let Ok(port) = s.parse::<u16>() {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port));
    }
    if let Some(port) = s.strip_prefix("*:") {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port.parse().ok()?));
    }
    if let Some(port) = s.strip_prefix("[::]:") {
        return Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port.parse().ok()?));
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<Config, ConfigError> {
        let src = Source::new("t.toml".into(), text.into(), std::env::temp_dir());
        let file: raw::File = toml::from_str(text).map_err(|e| src.syntax_error(&e))?;
        build(&src, file)
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = check("[main]\nworkers = 1\nwrkers = 2\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().contains("wrkers"), "{e}");
    }

    #[test]
    fn wrong_type_names_line_and_key() {
        let e = check("[main]\nworkers = 1\ndaemon = \"yes\"\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert_eq!(e.key, "main.daemon");
    }

    #[test]
    fn impossible_value_names_line_and_key() {
        let text = "[[server]]\nroot = \"/tmp\"\n[[server]]\nroot = \"/tmp\"\nlisten = \"nowhere\"\n";
        let e = check(text).unwrap_err();
        assert_eq!(e.line, Some(5), "{e}");
        assert_eq!(e.key, "server.listen");
        let e = check("[main]\n\nworkers = 0\n[[server]]\nroot=\"/tmp\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "main.workers"), "{e}");
    }

    #[test]
    fn errors_in_sub_tables_and_arrays_name_their_own_line() {
        let e = check(
            "[[server]]\nroot = \"/tmp\"\n[[server.location]]\nmatch = \"/\"\n\
             [server.location.fastcgi]\npass = \"unix:/x\"\nconnect_timeout = \"5x\"\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(7), "server.location.fastcgi.connect_timeout"),
            "{e}"
        );
        // The second server's location, not the first's.
        let e = check(
            "[[server]]\nroot = \"/tmp\"\n[[server.location]]\nmatch = \"/a\"\n[[server]]\nroot = \"/tmp\"\n\
             [[server.location]]\nmatch = \"/b\"\nfastcgi = { pass = \"unix:/x\", index = \"a/b\" }\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(9), "server.location.fastcgi.index"),
            "{e}"
        );
        let e = check(
            "[upstream.php]\nservers = [\n  \"unix:/a\",\n  { address = \"unix:/b\", weight = 0 },\n]\n\
             [[server]]\nroot = \"/tmp\"\n",
        )
        .unwrap_err();
        assert_eq!(
            (e.line, e.key.as_str()),
            (Some(4), "upstream.php.servers[1].weight"),
            "{e}"
        );
        // A quoted (dotted) table name is found too.
        let e =
            check("[pool.\"php.8\"]\nlisten = \"unix:/tmp/x.sock\"\ncommand = \"/bin/sh\"\npm = \"x\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(4), "pool.php.8.pm"), "{e}");
    }

    #[test]
    fn listen_forms() {
        assert_eq!(parse_listen("8080"), Some("0.0.0.0:8080".parse().unwrap()));
        assert_eq!(parse_listen("[::1]:81"), Some("[::1]:81".parse().unwrap()));
        assert_eq!(parse_listen("*:82"), Some("0.0.0.0:82".parse().unwrap()));
        assert_eq!(parse_listen("host:80"), None);
    }
}
