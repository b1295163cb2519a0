//! `[pool.NAME]`: application pools the master runs (php-fpm's pools, for
//! any FastCGI program or CGI script). Knobs keep php-fpm's names and
//! meaning; the checks are php-fpm's, with the key named on error.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fastcgi::{Address, parse_address};
use super::load::{Checker, ConfigError, Source};
use super::{Credentials, raw};

/// How a pool is sized (php-fpm's `pm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pm {
    /// Always `max_children` workers.
    Static,
    /// Between the spare bounds of idle workers, at most `max_children`.
    Dynamic,
    /// None until a connection waits; idle ones retire after `process_idle_timeout`.
    Ondemand,
}

impl Pm {
    pub fn name(self) -> &'static str {
        match self {
            Pm::Static => "static",
            Pm::Dynamic => "dynamic",
            Pm::Ondemand => "ondemand",
        }
    }
}

/// What a pool worker runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum App {
    /// A long-lived FastCGI program per worker (php-cgi, a libfcgi program),
    /// given a private listening socket as its fd 0.
    FastCgi { argv: Vec<String> },
    /// A CGI program per request: `SCRIPT_FILENAME` (fcgiwrap's rule), or
    /// the one `command` when set.
    Cgi { argv: Option<Vec<String>> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    pub listen: Address,
    /// Owner, group and mode of a unix socket.
    pub listen_owner: Option<u32>,
    pub listen_group: Option<u32>,
    pub listen_mode: u32,
    /// TCP clients allowed to connect (empty: any).
    pub allowed_clients: Vec<IpAddr>,
    pub backlog: i32,
    pub pm: Pm,
    pub max_children: usize,
    pub start_servers: usize,
    pub min_spare_servers: usize,
    pub max_spare_servers: usize,
    pub max_spawn_rate: usize,
    pub process_idle_timeout: Duration,
    /// Requests a worker serves before it is replaced (0: no limit).
    pub max_requests: u64,
    /// RSS (worker plus app) past which a worker is replaced after its request (0: no limit).
    pub max_memory: u64,
    pub request_terminate_timeout: Option<Duration>,
    pub request_slowlog_timeout: Option<Duration>,
    pub slowlog: Option<PathBuf>,
    pub emergency_restart_threshold: u32,
    pub emergency_restart_interval: Duration,
    pub user: Option<Credentials>,
    pub chdir: Option<PathBuf>,
    pub clear_env: bool,
    pub env: Vec<(String, String)>,
    pub catch_workers_output: bool,
    pub rlimit_files: Option<u64>,
    /// `Some(None)`: unlimited.
    pub rlimit_core: Option<Option<u64>>,
    pub priority: Option<i32>,
    /// Worker i (its slot) and its program on one CPU.
    pub cpu_affinity: super::Affinity,
    pub app: App,
    /// php-fpm's `security.limit_extensions`: the endings a FastCGI
    /// program's script may have (empty: any).
    pub limit_extensions: Vec<String>,
    pub status_path: Option<String>,
    pub ping_path: Option<String>,
    pub ping_response: String,
    /// How long a request from corral's own locations waits for a free worker.
    pub queue_timeout: Duration,
    /// The FastCGI program accepts on the pool's socket itself (no relay
    /// through the worker); corral's preload library records its requests.
    pub direct: bool,
}

/// A PHP interpreter by its file name: `php-cgi`, `php-cgi8.2`, `php`.
fn is_php(command: &str) -> bool {
    std::path::Path::new(command)
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("php"))
}

/// The `[pool.NAME]` tables, in name order. `http_user` is who corral's
/// HTTP workers run as: a unix socket belongs to it by default.
pub(super) fn build_pools(
    src: &Source,
    pools: BTreeMap<String, raw::Pool>,
    http_user: Option<&Credentials>,
) -> Result<Vec<Pool>, ConfigError> {
    let mut out: Vec<Pool> = Vec::new();
    for (name, p) in pools {
        let table = format!("pool.{name}");
        let c = Checker {
            src,
            table: &table,
            nth: 0,
        };
        let pool = build_pool(&c, src, name, p, http_user)?;
        if let Some(o) = out.iter().find(|o| o.listen == pool.listen) {
            return Err(c.err(
                "listen",
                format!("{} is already the listen address of pool {}", pool.listen, o.name),
            ));
        }
        out.push(pool);
    }
    Ok(out)
}

fn build_pool(
    c: &Checker<'_>,
    src: &Source,
    name: String,
    p: raw::Pool,
    http_user: Option<&Credentials>,
) -> Result<Pool, ConfigError> {
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return Err(c.err(
            "",
            format!("\"{name}\" is not a name of letters, digits, '_', '-' or '.'"),
        ));
    }
    let listen = match p.listen {
        None => {
            return Err(c.err(
                "listen",
                "is required: \"unix:/run/corral/NAME.sock\" or \"127.0.0.1:9000\"",
            ));
        }
        Some(l) => parse_address(&l, src).map_err(|e| c.err("listen", e))?,
    };
    // A root master never runs an application as root by default: the
    // pool's own user, else the HTTP workers' (`main.user`).
    let user = credentials(c, p.user, p.group)?.or_else(|| http_user.cloned());
    // By default the socket is corral's HTTP workers' (they connect as its
    // owner) and the pool's group's: the permission 502 cannot happen.
    let listen_owner = match &p.listen_owner {
        Some(n) => Some(find_user(c, "listen_owner", n)?.uid.as_raw()),
        None => http_user.map(|u| u.uid),
    };
    let listen_group = match &p.listen_group {
        Some(n) => Some(group_id(c, "listen_group", n)?),
        None => user.as_ref().or(http_user).map(|u| u.gid),
    };
    let listen_mode = match &p.listen_mode {
        None => 0o660,
        Some(m) => match u32::from_str_radix(m.trim_start_matches("0o"), 8) {
            Ok(n) if n <= 0o777 => n,
            _ => return Err(c.err("listen_mode", format!("\"{m}\" is not an octal mode such as \"0660\""))),
        },
    };
    if !matches!(listen, Address::Unix(_))
        && (p.listen_owner.is_some() || p.listen_group.is_some() || p.listen_mode.is_some())
    {
        let key = if p.listen_owner.is_some() {
            "listen_owner"
        } else if p.listen_group.is_some() {
            "listen_group"
        } else {
            "listen_mode"
        };
        return Err(c.err(key, "owner, group and mode apply to a unix socket only"));
    }
    let mut allowed_clients = Vec::new();
    for a in p.allowed_clients.map(raw::OneOrMany::into_vec).unwrap_or_default() {
        let ip: IpAddr = a
            .parse()
            .map_err(|_| c.err("allowed_clients", format!("\"{a}\" is not an IP address")))?;
        allowed_clients.push(ip);
    }
    if !allowed_clients.is_empty() && matches!(listen, Address::Unix(_)) {
        return Err(c.err("allowed_clients", "applies to a TCP listen address only"));
    }
    let pm = c.choice(
        "pm",
        p.pm,
        &[
            ("static", Pm::Static),
            ("dynamic", Pm::Dynamic),
            ("ondemand", Pm::Ondemand),
        ],
        Pm::Dynamic,
    )?;
    let max_children = c.int("max_children", p.max_children, 1, 10_000, 5)? as usize;
    let min_spare = c.int("min_spare_servers", p.min_spare_servers, 1, 10_000, 1)? as usize;
    let max_spare = c.int(
        "max_spare_servers",
        p.max_spare_servers,
        1,
        10_000,
        3.min(max_children as i64),
    )? as usize;
    if pm == Pm::Dynamic {
        if min_spare > max_spare {
            return Err(c.err(
                "min_spare_servers",
                format!("{min_spare} is more than max_spare_servers ({max_spare})"),
            ));
        }
        if max_spare > max_children {
            return Err(c.err(
                "max_spare_servers",
                format!("{max_spare} is more than max_children ({max_children})"),
            ));
        }
    }
    let start_default = (min_spare + (max_spare - min_spare.min(max_spare)) / 2) as i64;
    let start_servers = c.int("start_servers", p.start_servers, 0, 10_000, start_default)? as usize;
    if pm == Pm::Dynamic && !(min_spare..=max_spare).contains(&start_servers) {
        return Err(c.err(
            "start_servers",
            format!(
                "{start_servers} must lie between min_spare_servers ({min_spare}) and max_spare_servers ({max_spare})"
            ),
        ));
    }
    let opt_dur = |key: &str, v: Option<raw::NumOrStr>| -> Result<Option<Duration>, ConfigError> {
        let d = c.duration(key, v, Duration::ZERO)?;
        Ok((!d.is_zero()).then_some(d))
    };
    let request_slowlog_timeout = opt_dur("request_slowlog_timeout", p.request_slowlog_timeout)?;
    let slowlog = p.slowlog.as_deref().map(|s| src.path(s));
    if request_slowlog_timeout.is_some() && slowlog.is_none() {
        return Err(c.err(
            "slowlog",
            "is required with request_slowlog_timeout: the file slow requests are written to",
        ));
    }
    let process_idle_timeout = c.duration("process_idle_timeout", p.process_idle_timeout, Duration::from_secs(10))?;
    if pm == Pm::Ondemand && process_idle_timeout.is_zero() {
        return Err(c.err("process_idle_timeout", "must be more than 0 with pm = \"ondemand\""));
    }
    let command = p.command.map(raw::OneOrMany::into_vec);
    let app = match (p.app.as_deref(), command) {
        (Some("fastcgi") | None, Some(argv)) => App::FastCgi {
            argv: resolve_command(c, argv)?,
        },
        (Some("fastcgi") | None, None) => {
            return Err(c.err(
                "command",
                "is required: the FastCGI program each worker runs, such as command = [\"/usr/bin/php-cgi\"] (or app = \"cgi\")",
            ));
        }
        (Some("cgi"), argv) => App::Cgi {
            argv: argv.map(|a| resolve_command(c, a)).transpose()?,
        },
        (Some(other), _) => return Err(c.err("app", format!("\"{other}\" is not one of \"fastcgi\", \"cgi\""))),
    };
    // php-fpm's default for a PHP program; other programs (a Perl or C
    // app) have scripts of their own kinds, or none.
    let limit_extensions = match (p.limit_extensions, &app) {
        (Some(list), _) => {
            if let Some(e) = list.iter().find(|e| e.is_empty() || e.contains('/')) {
                return Err(c.err(
                    "limit_extensions",
                    format!("\"{e}\" is not a file name ending such as \".php\""),
                ));
            }
            list
        }
        // (`/usr/bin/env php-cgi` too.)
        (None, App::FastCgi { argv } | App::Cgi { argv: Some(argv) }) if argv.iter().take(2).any(|a| is_php(a)) => {
            vec![".php".into(), ".phar".into()]
        }
        (None, _) => Vec::new(),
    };
    // php-fpm's model for PHP (its speed: no relay hop); other programs
    // keep the relay's checks unless asked (see docs/pools.md).
    let direct = p
        .direct
        .unwrap_or_else(|| matches!(&app, App::FastCgi { argv } if argv.iter().take(2).any(|a| is_php(a))));
    if direct && !matches!(app, App::FastCgi { .. }) {
        return Err(c.err("direct", "applies to a FastCGI program (app = \"fastcgi\") only"));
    }
    let mut env = Vec::new();
    for (k, v) in p.env.unwrap_or_default() {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(c.err("env", format!("\"{k}\" is not an environment variable name")));
        }
        // As php-fpm: a value "$NAME" is the master's own NAME (empty when unset).
        // Only a whole `$NAME` (a variable name): `$2y$10$...` stays itself.
        let is_name = |n: &str| {
            n.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let v = match v.strip_prefix('$') {
            Some(name) if is_name(name) => std::env::var(name).unwrap_or_default(),
            _ => v,
        };
        env.push((k, v));
    }
    let path_key = |key: &str, v: Option<String>| -> Result<Option<String>, ConfigError> {
        match v {
            Some(s) if !s.starts_with('/') || s.bytes().any(|b| b <= b' ') => {
                Err(c.err(key, format!("\"{s}\" must be a path starting with \"/\"")))
            }
            other => Ok(other),
        }
    };
    if p.status_path.is_some() && p.status_path == p.ping_path {
        return Err(c.err("ping_path", "is the status_path too: one path answers one of them"));
    }
    if p.ping_response.as_deref() == Some("") {
        return Err(c.err(
            "ping_response",
            "is empty: a ping answers with some text (php-fpm: \"pong\")",
        ));
    }
    let rlimit_core = match p.rlimit_core {
        None => None,
        Some(raw::NumOrStr::Str(s)) if s == "unlimited" => Some(None),
        Some(raw::NumOrStr::Num(n)) if n >= 0 => Some(Some(n as u64)),
        Some(_) => return Err(c.err("rlimit_core", "expected a number of bytes or \"unlimited\"")),
    };
    let chdir = p.chdir.map(|d| src.path(&d));
    if let Some(d) = &chdir
        && !d.is_dir()
    {
        return Err(c.err("chdir", format!("{} is not a directory", d.display())));
    }
    Ok(Pool {
        name,
        listen,
        listen_owner,
        listen_group,
        listen_mode,
        allowed_clients,
        backlog: c.int("backlog", p.backlog, 1, 65_535, system_backlog())? as i32,
        pm,
        max_children,
        start_servers,
        min_spare_servers: min_spare,
        max_spare_servers: max_spare,
        max_spawn_rate: c.int("max_spawn_rate", p.max_spawn_rate, 1, 1024, 32)? as usize,
        process_idle_timeout,
        max_requests: c.int("max_requests", p.max_requests, 0, i64::MAX, 0)? as u64,
        max_memory: c.size("max_memory", p.max_memory, 0, 1 << 50, 0)?,
        request_terminate_timeout: opt_dur("request_terminate_timeout", p.request_terminate_timeout)?,
        request_slowlog_timeout,
        slowlog,
        emergency_restart_threshold: c.int(
            "emergency_restart_threshold",
            p.emergency_restart_threshold,
            0,
            10_000,
            0,
        )? as u32,
        emergency_restart_interval: c.duration(
            "emergency_restart_interval",
            p.emergency_restart_interval,
            Duration::from_secs(60),
        )?,
        user,
        chdir,
        clear_env: p.clear_env.unwrap_or(true),
        env,
        catch_workers_output: p.catch_workers_output.unwrap_or(false),
        rlimit_files: c
            .int("rlimit_files", p.rlimit_files, 0, 1 << 30, 0)
            .map(|n| (n > 0).then_some(n as u64))?,
        rlimit_core,
        priority: p
            .priority
            .map(|n| c.int("priority", Some(n), -20, 19, 0).map(|n| n as i32))
            .transpose()?,
        cpu_affinity: super::load::parse_affinity(c, "cpu_affinity", p.cpu_affinity)?,
        app,
        limit_extensions,
        status_path: path_key("status_path", p.status_path)?,
        ping_path: path_key("ping_path", p.ping_path)?,
        ping_response: p.ping_response.unwrap_or_else(|| "pong".into()),
        queue_timeout: c.duration("queue_timeout", p.queue_timeout, Duration::from_secs(30))?,
        direct,
    })
}

/// `user` and `group` (the user's own group by default), looked up now.
pub(super) fn credentials(
    c: &Checker<'_>,
    user: Option<String>,
    group: Option<String>,
) -> Result<Option<Credentials>, ConfigError> {
    let (name, group) = match (user, group) {
        (None, None) => return Ok(None),
        (None, Some(_)) => return Err(c.err("group", "needs `user` as well")),
        (Some(n), g) => (n, g),
    };
    let u = find_user(c, "user", &name)?;
    let gid = match group {
        None => u.gid.as_raw(),
        Some(g) => group_id(c, "group", &g)?,
    };
    Ok(Some(Credentials {
        name,
        uid: u.uid.as_raw(),
        gid,
    }))
}

fn find_user(c: &Checker<'_>, key: &str, name: &str) -> Result<nix::unistd::User, ConfigError> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .ok_or_else(|| c.err(key, format!("no such user \"{name}\"")))
}

fn group_id(c: &Checker<'_>, key: &str, name: &str) -> Result<u32, ConfigError> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
        .ok_or_else(|| c.err(key, format!("no such group \"{name}\"")))
}

/// The program of `argv` as an absolute path (searched in `PATH` when it
/// has no slash), checked to be an executable file now rather than at the
/// first request.
fn resolve_command(c: &Checker<'_>, mut argv: Vec<String>) -> Result<Vec<String>, ConfigError> {
    let Some(prog) = argv.first() else {
        return Err(c.err("command", "is empty; expected [\"/usr/bin/php-cgi\", ...]"));
    };
    let found = if prog.contains('/') {
        Some(c.src.path(prog))
    } else {
        std::env::var_os("PATH").and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(prog))
                .find(|f| is_executable(f))
        })
    };
    match found {
        Some(f) if is_executable(&f) => {
            argv[0] = f.display().to_string();
            Ok(argv)
        }
        Some(f) => Err(c.err("command", format!("{} is not an executable file", f.display()))),
        None => Err(c.err("command", format!("\"{prog}\" is not found in PATH"))),
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The default backlog of a pool socket: the system's largest
/// (`net.core.somaxconn`), as php-fpm's `listen.backlog = -1` on Linux, so
/// a burst waits in the queue rather than being refused.
fn system_backlog() -> i64 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .filter(|n| (1..=65_535).contains(n))
        .unwrap_or(4096)
}
