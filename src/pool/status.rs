//! The pools' status, as php-fpm's status page has it (same field names,
//! text / JSON / OpenMetrics, `full` for every process) plus max children
//! and terminated requests; and the live HTML page that polls the JSON.

use std::fmt::Write as _;

use super::scoreboard::{Process, Scoreboard, unix_secs};
use crate::config::pool::Pool;

/// A pool as the status sees it.
pub struct PoolView<'a> {
    pub cfg: &'a Pool,
    pub sb: &'a Scoreboard,
}

/// What a status query asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    OpenMetrics,
    Prometheus,
    Html,
    Xml,
}

struct Query {
    format: Format,
    full: bool,
    pool: Option<String>,
}

fn parse(query: &str) -> Query {
    let mut q = Query {
        format: Format::Text,
        full: false,
        pool: None,
    };
    for part in query.split('&') {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        match k {
            "json" => q.format = Format::Json,
            "openmetrics" => q.format = Format::OpenMetrics,
            "prometheus" => q.format = Format::Prometheus,
            "html" => q.format = Format::Html,
            "xml" => q.format = Format::Xml,
            "full" => q.full = true,
            "pool" if !v.is_empty() => q.pool = Some(v.to_string()),
            _ => {}
        }
    }
    q
}

/// The live page: it fetches `?json&full` from its own path every second.
pub const HTML_PAGE: &str = include_str!("status_page.html");

/// corral's own status location: every pool (or `?pool=NAME`).
/// JSON is `{"pools": [...]}`, one php-fpm object per pool. `None`: no
/// pool has the name `?pool=` asks for (a 404, not an empty page).
pub fn render_all(pools: &[PoolView<'_>], query: &str) -> Option<(&'static str, Vec<u8>)> {
    let q = parse(query);
    let chosen: Vec<&PoolView<'_>> = pools
        .iter()
        .filter(|p| q.pool.as_deref().is_none_or(|n| n == p.cfg.name))
        .collect();
    if q.pool.is_some() && chosen.is_empty() {
        return None;
    }
    Some(match q.format {
        Format::Html => ("text/html; charset=utf-8", HTML_PAGE.as_bytes().to_vec()),
        Format::Json => {
            let objs: Vec<String> = chosen.iter().map(|p| json(p, q.full)).collect();
            (
                "application/json",
                format!("{{\"pools\":[{}]}}\n", objs.join(",")).into_bytes(),
            )
        }
        Format::OpenMetrics | Format::Prometheus => metrics(&chosen, q.full, q.format),
        Format::Xml => {
            let objs: String = chosen.iter().map(|p| xml(p, q.full)).collect();
            ("text/xml", format!("{XML_DECL}<pools>\n{objs}</pools>\n").into_bytes())
        }
        Format::Text => {
            let texts: Vec<String> = chosen.iter().map(|p| text(p, q.full)).collect();
            ("text/plain", texts.join("\n").into_bytes())
        }
    })
}

/// A pool's own `status_path`, answered by its workers as php-fpm does:
/// JSON is the single pool object.
pub fn render_fpm(p: &PoolView<'_>, query: &str) -> (&'static str, Vec<u8>) {
    let q = parse(query);
    match q.format {
        Format::Json => ("application/json", json(p, q.full).into_bytes()),
        Format::OpenMetrics => (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            fpm_openmetrics(p).into_bytes(),
        ),
        Format::Prometheus => metrics(&[p], q.full, q.format),
        Format::Html => ("text/html; charset=utf-8", HTML_PAGE.as_bytes().to_vec()),
        Format::Xml => ("text/xml", format!("{XML_DECL}{}", xml(p, q.full)).into_bytes()),
        Format::Text => ("text/plain", text(p, q.full).into_bytes()),
    }
}

/// php-fpm's own `?openmetrics` (PHP 8.1+), name for name, help for
/// help and type for type (counters without `_total`, as it writes them),
/// so a scraper of php-fpm reads a pool's `status_path` unchanged. It has
/// no per-process series; corral's status location has (`corral_pool_*`).
fn fpm_openmetrics(p: &PoolView<'_>) -> String {
    let f = p.sb.figures();
    let c = p.sb.counts();
    let since = unix_secs().saturating_sub(f.start_time);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP phpfpm_up Could pool {} using a {} PM on PHP-FPM be reached?\n# TYPE phpfpm_up gauge\nphpfpm_up 1",
        p.cfg.name,
        p.cfg.pm.name()
    );
    let rows: [(&str, &str, &str, u64); 11] = [
        (
            "start_since",
            "counter",
            "The number of seconds since FPM has started.",
            since,
        ),
        (
            "accepted_connections",
            "counter",
            "The number of requests accepted by the pool.",
            f.accepted,
        ),
        (
            "listen_queue",
            "gauge",
            "The number of requests in the queue of pending connections.",
            f.listen_queue,
        ),
        (
            "max_listen_queue",
            "counter",
            "The maximum number of requests in the queue of pending connections since FPM has started.",
            f.max_listen_queue,
        ),
        (
            "listen_queue_length",
            "gauge",
            "The size of the socket queue of pending connections.",
            f.listen_queue_len,
        ),
        (
            "idle_processes",
            "gauge",
            "The number of idle processes.",
            c.idle as u64,
        ),
        (
            "active_processes",
            "gauge",
            "The number of active processes.",
            c.active as u64,
        ),
        (
            "total_processes",
            "gauge",
            "The number of idle + active processes.",
            c.total as u64,
        ),
        (
            "max_active_processes",
            "counter",
            "The maximum number of active processes since FPM has started.",
            f.max_active,
        ),
        (
            "max_children_reached",
            "counter",
            "The number of times, the process limit has been reached, when pm tries to start more children (works only for pm 'dynamic' and 'ondemand').",
            f.max_children_reached,
        ),
        (
            "slow_requests",
            "counter",
            "The number of requests that exceeded your 'request_slowlog_timeout' value.",
            f.slow,
        ),
    ];
    for (name, ty, help, v) in rows {
        let _ = writeln!(
            out,
            "# HELP phpfpm_{name} {help}\n# TYPE phpfpm_{name} {ty}\nphpfpm_{name} {v}"
        );
    }
    out.push_str("# EOF\n");
    out
}

const XML_DECL: &str = "<?xml version=\"1.0\" ?>\n";

/// php-fpm's `?xml`: `<status>` with one element per field (spaces become
/// dashes, times are Unix seconds as in JSON), `<processes>` with `full`.
fn xml(p: &PoolView<'_>, full: bool) -> String {
    let put = |out: &mut String, fs: Vec<(&'static str, Value)>| {
        for (k, v) in fs {
            let tag = k.replace(' ', "-");
            let v = match v {
                Value::Str(s) => xml_text(&s),
                Value::Num(n) | Value::Time(n) => n.to_string(),
                Value::Float(f) if f.is_finite() => format!("{f:.2}"),
                Value::Float(_) => "0".into(),
            };
            let _ = write!(out, "<{tag}>{v}</{tag}>");
        }
    };
    let mut out = String::from("<status>\n");
    for f in fields(p) {
        put(&mut out, vec![f]);
        out.push('\n');
    }
    if full {
        out.push_str("<processes>\n");
        for pr in p.sb.processes() {
            out.push_str("<process>");
            put(&mut out, process_fields(&pr));
            out.push_str("</process>\n");
        }
        out.push_str("</processes>\n");
    }
    out.push_str("</status>\n");
    out
}

/// Text for an XML element: markup escaped as in HTML, control characters
/// (which XML 1.0 cannot carry) shown as `?`.
fn xml_text(s: &str) -> String {
    crate::http::escape_html(&s.replace(char::is_control, "?"))
}

/// The pool-wide fields in php-fpm's order, as (name, value) pairs.
fn fields(p: &PoolView<'_>) -> Vec<(&'static str, Value)> {
    let f = p.sb.figures();
    let c = p.sb.counts();
    let now = unix_secs();
    vec![
        ("pool", Value::Str(p.cfg.name.clone())),
        ("process manager", Value::Str(p.cfg.pm.name().into())),
        ("start time", Value::Time(f.start_time)),
        ("start since", Value::Num(now.saturating_sub(f.start_time))),
        ("accepted conn", Value::Num(f.accepted)),
        ("listen queue", Value::Num(f.listen_queue)),
        ("max listen queue", Value::Num(f.max_listen_queue)),
        ("listen queue len", Value::Num(f.listen_queue_len)),
        ("idle processes", Value::Num(c.idle as u64)),
        ("active processes", Value::Num(c.active as u64)),
        ("total processes", Value::Num(c.total as u64)),
        ("max active processes", Value::Num(f.max_active)),
        ("max children reached", Value::Num(f.max_children_reached)),
        ("slow requests", Value::Num(f.slow)),
        ("max children", Value::Num(p.cfg.max_children as u64)),
        ("terminated requests", Value::Num(f.terminated)),
    ]
}

fn process_fields(pr: &Process) -> Vec<(&'static str, Value)> {
    let now = unix_secs();
    vec![
        ("pid", Value::Num(pr.pid as u64)),
        ("state", Value::Str(pr.state.into())),
        ("start time", Value::Time(pr.started)),
        ("start since", Value::Num(now.saturating_sub(pr.started))),
        ("requests", Value::Num(pr.requests)),
        ("request duration", Value::Num(pr.request_duration_us)),
        ("request method", Value::Str(or_dash(&pr.method))),
        ("request uri", Value::Str(or_dash(&pr.uri))),
        ("content length", Value::Num(pr.content_length)),
        ("user", Value::Str(or_dash(&pr.user))),
        ("script", Value::Str(or_dash(&pr.script))),
        ("last request cpu", Value::Float(if pr.active { 0.0 } else { pr.cpu })),
        ("last request memory", Value::Num(if pr.active { 0 } else { pr.memory })),
    ]
}

fn or_dash(s: &str) -> String {
    if s.is_empty() { "-".into() } else { s.into() }
}

enum Value {
    Str(String),
    Num(u64),
    Float(f64),
    /// Unix seconds: a date in text, a number in JSON.
    Time(u64),
}

fn text(p: &PoolView<'_>, full: bool) -> String {
    let mut out = String::new();
    let line = |out: &mut String, k: &str, v: &Value| {
        let v = match v {
            Value::Str(s) => s.chars().map(|c| if c.is_control() { '?' } else { c }).collect(),
            Value::Num(n) => n.to_string(),
            Value::Float(f) => format!("{f:.2}"),
            Value::Time(t) => date(*t),
        };
        let _ = writeln!(out, "{:<22}{v}", format!("{k}:"));
    };
    for (k, v) in fields(p) {
        line(&mut out, k, &v);
    }
    if full {
        for pr in p.sb.processes() {
            out.push_str("\n************************\n");
            for (k, v) in process_fields(&pr) {
                line(&mut out, if k == "request uri" { "request URI" } else { k }, &v);
            }
        }
    }
    out
}

fn json(p: &PoolView<'_>, full: bool) -> String {
    let obj = |fs: Vec<(&'static str, Value)>| {
        let parts: Vec<String> = fs
            .into_iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::Str(s) => json_str(&s),
                    Value::Num(n) | Value::Time(n) => n.to_string(),
                    Value::Float(f) if f.is_finite() => format!("{f:.2}"),
                    Value::Float(_) => "0".into(),
                };
                format!("\"{k}\":{v}")
            })
            .collect();
        format!("{{{}}}", parts.join(","))
    };
    let mut s = obj(fields(p));
    if full {
        let procs: Vec<String> = p.sb.processes().iter().map(|pr| obj(process_fields(pr))).collect();
        s.pop();
        let _ = write!(s, ",\"processes\":[{}]}}", procs.join(","));
    }
    s
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// OpenMetrics (or Prometheus text): one series per pool field, labelled
/// by pool; with `full`, per-process series labelled by pid as well.
fn metrics(pools: &[&PoolView<'_>], full: bool, format: Format) -> (&'static str, Vec<u8>) {
    let mut out = String::new();
    let series: [(&str, &str, &str); 13] = [
        ("accepted conn", "accepted_connections", "counter"),
        ("listen queue", "listen_queue", "gauge"),
        ("max listen queue", "max_listen_queue", "gauge"),
        ("listen queue len", "listen_queue_length", "gauge"),
        ("idle processes", "idle_processes", "gauge"),
        ("active processes", "active_processes", "gauge"),
        ("total processes", "total_processes", "gauge"),
        ("max active processes", "max_active_processes", "gauge"),
        ("max children reached", "max_children_reached", "counter"),
        ("slow requests", "slow_requests", "counter"),
        ("max children", "max_children", "gauge"),
        ("terminated requests", "terminated_requests", "counter"),
        ("start since", "start_since_seconds", "gauge"),
    ];
    let all: Vec<Vec<(&'static str, Value)>> = pools.iter().map(|p| fields(p)).collect();
    for (field, name, ty) in series {
        let (family, suffix) = family(name, ty, format);
        let _ = writeln!(out, "# HELP corral_pool_{family} php-fpm's \"{field}\".");
        let _ = writeln!(out, "# TYPE corral_pool_{family} {ty}");
        for (p, fs) in pools.iter().zip(&all) {
            if let Some((_, Value::Num(n))) = fs.iter().find(|(k, _)| *k == field) {
                let _ = writeln!(out, "corral_pool_{name}{suffix}{{pool={}}} {n}", json_str(&p.cfg.name));
            }
        }
    }
    if full {
        let per: [(&str, &str, &str); 5] = [
            ("requests", "process_requests", "counter"),
            ("request duration", "process_request_duration_microseconds", "gauge"),
            ("last request cpu", "process_last_request_cpu_percent", "gauge"),
            ("last request memory", "process_last_request_memory_bytes", "gauge"),
            ("state", "process_state", "gauge"),
        ];
        let procs: Vec<(String, Vec<Process>)> = pools
            .iter()
            .map(|p| (json_str(&p.cfg.name), p.sb.processes()))
            .collect();
        for (field, name, ty) in per {
            let (family, suffix) = family(name, ty, format);
            let _ = writeln!(out, "# HELP corral_pool_{family} php-fpm's per-process \"{field}\".");
            let _ = writeln!(out, "# TYPE corral_pool_{family} {ty}");
            for (pool, list) in &procs {
                for pr in list {
                    let labels = format!("pool={pool},pid=\"{}\"", pr.pid);
                    let _ = match field {
                        "requests" => writeln!(out, "corral_pool_{name}{suffix}{{{labels}}} {}", pr.requests),
                        "request duration" => {
                            writeln!(out, "corral_pool_{name}{{{labels}}} {}", pr.request_duration_us)
                        }
                        "last request cpu" => writeln!(out, "corral_pool_{name}{{{labels}}} {:.2}", pr.cpu),
                        "last request memory" => writeln!(out, "corral_pool_{name}{{{labels}}} {}", pr.memory),
                        _ => writeln!(out, "corral_pool_{name}{{{labels},state={}}} 1", json_str(pr.state)),
                    };
                }
            }
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            out.into_bytes(),
        )
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", out.into_bytes())
    }
}

/// The name `# HELP` and `# TYPE` give a series, and the suffix of its
/// samples: a counter's samples end in `_total`; OpenMetrics names the
/// family without it, Prometheus text 0.0.4 with it (the sample's name).
fn family(name: &str, ty: &str, format: Format) -> (String, &'static str) {
    match (ty, format) {
        ("counter", Format::OpenMetrics) => (name.to_string(), "_total"),
        ("counter", _) => (format!("{name}_total"), "_total"),
        _ => (name.to_string(), ""),
    }
}

/// php-fpm's date format: `23/Nov/2026:06:40:00 +0000`.
fn date(secs: u64) -> String {
    let t = crate::core::clock::local(secs as i64);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} {}",
        t.day,
        MONTHS[(t.month as usize).saturating_sub(1).min(11)],
        t.year,
        t.hour,
        t.min,
        t.sec,
        offset(t.gmtoff)
    )
}

fn offset(gmtoff: i64) -> String {
    let sign = if gmtoff < 0 { '-' } else { '+' };
    let m = gmtoff.unsigned_abs() / 60;
    format!("{sign}{:02}{:02}", m / 60, m % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        let q = parse("json&full&pool=www");
        assert_eq!(q.format, Format::Json);
        assert!(q.full);
        assert_eq!(q.pool.as_deref(), Some("www"));
        assert_eq!(parse("").format, Format::Text);
        assert_eq!(json_str("a\"\n"), "\"a\\\"\\u000a\"");
        assert_eq!(parse("xml&full").format, Format::Xml);
        assert_eq!(xml_text("<a href=\"x\">&\u{1}"), "&lt;a href=&quot;x&quot;&gt;&amp;?");
    }
}
