//! The TOML file as written: every key optional, unknown keys refused.

use serde::Deserialize;

/// A value that may be written as a number or as a string with a unit
/// (`"16k"`, `"30s"`) or a keyword (`"auto"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum NumOrStr {
    Num(i64),
    Str(String),
}

/// `listen` and `index` accept a single string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub main: Option<Main>,
    pub http: Option<Http>,
    pub server: Option<Vec<Server>>,
    pub upstream: Option<std::collections::BTreeMap<String, Upstream>>,
    pub pool: Option<std::collections::BTreeMap<String, Pool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Main {
    pub workers: Option<NumOrStr>,
    pub worker_connections: Option<i64>,
    pub event_mode: Option<String>,
    pub accept: Option<String>,
    pub dispatch: Option<String>,
    pub worker_threads: Option<i64>,
    pub pid: Option<String>,
    pub error_log: Option<String>,
    pub log_level: Option<String>,
    pub daemon: Option<bool>,
    pub shutdown_timeout: Option<NumOrStr>,
    pub listen_backlog: Option<i64>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub worker_rlimit_nofile: Option<i64>,
    pub worker_cpu_affinity: Option<StrOrInts>,
    pub worker_priority: Option<i64>,
    pub worker_sched_policy: Option<String>,
}

/// `"auto"` / `"off"` or a list of CPU numbers.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StrOrInts {
    Str(String),
    Ints(Vec<i64>),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub keepalive_timeout: Option<NumOrStr>,
    pub keepalive_requests: Option<i64>,
    pub client_header_timeout: Option<NumOrStr>,
    pub client_body_timeout: Option<NumOrStr>,
    pub send_timeout: Option<NumOrStr>,
    pub lingering_timeout: Option<NumOrStr>,
    pub drain_idle_timeout: Option<NumOrStr>,
    pub client_max_body_size: Option<NumOrStr>,
    pub client_body_temp_path: Option<String>,
    pub max_header_size: Option<NumOrStr>,
    pub max_uri_length: Option<NumOrStr>,
    pub inline_file_max: Option<NumOrStr>,
    pub open_file_cache: Option<i64>,
    pub open_file_cache_memory: Option<NumOrStr>,
    pub server_tokens: Option<bool>,
    pub limit_zone_size: Option<NumOrStr>,
    pub limit_conn_status: Option<i64>,
    pub limit_req_status: Option<i64>,
    pub certificate: Option<OneOrMany>,
    pub certificate_key: Option<OneOrMany>,
    pub ocsp_staple: Option<OneOrMany>,
    pub tls_protocols: Option<OneOrMany>,
    pub tls_session_tickets: Option<bool>,
    pub tls_session_timeout: Option<NumOrStr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: Option<OneOrMany>,
    pub server_name: Option<OneOrMany>,
    pub default_server: Option<bool>,
    pub root: Option<String>,
    pub index: Option<OneOrMany>,
    pub access_log: Option<String>,
    pub autoindex: Option<bool>,
    pub follow_symlinks_outside_root: Option<bool>,
    pub absolute_redirect: Option<bool>,
    pub port_in_redirect: Option<bool>,
    pub server_name_in_redirect: Option<bool>,
    pub cgi: Option<Vec<Cgi>>,
    pub limit_conn: Option<i64>,
    pub limit_req: Option<LimitReq>,
    pub deny_hidden: Option<bool>,
    pub charset: Option<String>,
    pub location: Option<Vec<Location>>,
    pub add_header: Option<std::collections::BTreeMap<String, HeaderValue>>,
    pub expires: Option<NumOrStr>,
    pub default_type: Option<String>,
    pub allow: Option<OneOrMany>,
    pub deny: Option<OneOrMany>,
    pub access: Option<Vec<String>>,
    pub error_page: Option<std::collections::BTreeMap<String, String>>,
    pub rewrite: Option<Vec<Vec<String>>>,
    pub gzip_static: Option<bool>,
    pub gzip: Option<bool>,
    pub gzip_types: Option<OneOrMany>,
    pub gzip_min_length: Option<NumOrStr>,
    pub gzip_comp_level: Option<i64>,
    pub auth_basic: Option<String>,
    pub auth_basic_user_file: Option<String>,
    pub certificate: Option<OneOrMany>,
    pub certificate_key: Option<OneOrMany>,
    pub ocsp_staple: Option<OneOrMany>,
    pub tls_protocols: Option<OneOrMany>,
    pub tls_session_tickets: Option<bool>,
    pub tls_session_timeout: Option<NumOrStr>,
}

/// `add_header` values: `"DENY"` or `{ value = "DENY", always = true }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum HeaderValue {
    Plain(String),
    Full(HeaderFull),
}

/// The table form of an `add_header` value (a typo in it is an error).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderFull {
    pub value: String,
    pub always: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    #[serde(rename = "match")]
    pub matches: Option<String>,
    pub root: Option<String>,
    pub alias: Option<String>,
    pub index: Option<OneOrMany>,
    pub autoindex: Option<bool>,
    pub deny_hidden: Option<bool>,
    pub charset: Option<String>,
    #[serde(rename = "return")]
    pub ret: Option<NumOrStr>,
    pub try_files: Option<Vec<String>>,
    pub cgi: Option<Cgi>,
    pub fastcgi: Option<FastCgi>,
    pub internal: Option<bool>,
    pub status: Option<bool>,
    pub add_header: Option<std::collections::BTreeMap<String, HeaderValue>>,
    pub expires: Option<NumOrStr>,
    pub default_type: Option<String>,
    pub allow: Option<OneOrMany>,
    pub deny: Option<OneOrMany>,
    pub access: Option<Vec<String>>,
    pub error_page: Option<std::collections::BTreeMap<String, String>>,
    pub rewrite: Option<Vec<Vec<String>>>,
    pub gzip_static: Option<bool>,
    pub gzip: Option<bool>,
    pub gzip_types: Option<OneOrMany>,
    pub gzip_min_length: Option<NumOrStr>,
    pub gzip_comp_level: Option<i64>,
    pub auth_basic: Option<String>,
    pub auth_basic_user_file: Option<String>,
}

/// `limit_req = { rate = "10r/s", burst = 20, nodelay = true }`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitReq {
    pub rate: Option<String>,
    pub burst: Option<i64>,
    pub nodelay: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cgi {
    pub prefix: Option<String>,
    pub extensions: Option<OneOrMany>,
    pub dir: Option<String>,
    pub script: Option<String>,
    pub interpreters: Option<std::collections::BTreeMap<String, String>>,
    pub timeout: Option<NumOrStr>,
    pub max_concurrent: Option<i64>,
    pub env: Option<std::collections::BTreeMap<String, String>>,
    pub request_buffering: Option<bool>,
    pub x_accel_redirect: Option<bool>,
}

/// `[upstream.NAME]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub balance: Option<String>,
    pub keepalive: Option<i64>,
    pub keepalive_timeout: Option<NumOrStr>,
    pub keepalive_requests: Option<i64>,
    pub max_conns: Option<i64>,
    pub queue_timeout: Option<NumOrStr>,
    pub servers: Option<Vec<UpstreamServer>>,
}

/// A server of a group: `"unix:/path"` or `{ address = ..., weight = 2 }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum UpstreamServer {
    Addr(String),
    Full(UpstreamServerFull),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamServerFull {
    pub address: String,
    pub weight: Option<i64>,
    pub max_fails: Option<i64>,
    pub fail_timeout: Option<NumOrStr>,
    pub backup: Option<bool>,
}

/// A location's `fastcgi = { pass = ..., ... }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FastCgi {
    pub pass: Option<String>,
    pub split_path_info: Option<String>,
    pub index: Option<String>,
    pub params: Option<std::collections::BTreeMap<String, String>>,
    pub check_file: Option<bool>,
    pub connect_timeout: Option<NumOrStr>,
    pub send_timeout: Option<NumOrStr>,
    pub read_timeout: Option<NumOrStr>,
    pub header_limit: Option<NumOrStr>,
    pub keep_conn: Option<bool>,
    pub x_accel_redirect: Option<bool>,
    pub x_sendfile: Option<bool>,
    pub next_upstream: Option<Vec<String>>,
    pub request_buffering: Option<bool>,
}

/// `[pool.NAME]`: an application pool the master runs.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pool {
    pub listen: Option<String>,
    pub listen_owner: Option<String>,
    pub listen_group: Option<String>,
    pub listen_mode: Option<String>,
    pub allowed_clients: Option<OneOrMany>,
    pub backlog: Option<i64>,
    pub pm: Option<String>,
    pub max_children: Option<i64>,
    pub start_servers: Option<i64>,
    pub min_spare_servers: Option<i64>,
    pub max_spare_servers: Option<i64>,
    pub max_spawn_rate: Option<i64>,
    pub process_idle_timeout: Option<NumOrStr>,
    pub max_requests: Option<i64>,
    pub max_memory: Option<NumOrStr>,
    pub request_terminate_timeout: Option<NumOrStr>,
    pub request_slowlog_timeout: Option<NumOrStr>,
    pub slowlog: Option<String>,
    pub emergency_restart_threshold: Option<i64>,
    pub emergency_restart_interval: Option<NumOrStr>,
    pub user: Option<String>,
    pub group: Option<String>,
    pub chdir: Option<String>,
    pub clear_env: Option<bool>,
    pub env: Option<std::collections::BTreeMap<String, String>>,
    pub catch_workers_output: Option<bool>,
    pub rlimit_files: Option<i64>,
    pub rlimit_core: Option<NumOrStr>,
    pub priority: Option<i64>,
    pub cpu_affinity: Option<StrOrInts>,
    pub app: Option<String>,
    pub command: Option<OneOrMany>,
    pub limit_extensions: Option<Vec<String>>,
    pub status_path: Option<String>,
    pub ping_path: Option<String>,
    pub ping_response: Option<String>,
    pub queue_timeout: Option<NumOrStr>,
    pub direct: Option<bool>,
}
