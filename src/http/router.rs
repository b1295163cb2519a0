//! From a request to the location that serves it: the location lookup,
//! `try_files`, `return`, and the variables their strings use. The
//! connection asks `route` once per request (and again after an internal
//! redirect); what comes back names the site and the handler.

use super::HttpService;
use super::location::{Captures, Kind};
use super::path;
use super::reply::{Reply, ReplyBody};
use super::request::Request;
use crate::config::RewriteFlag;
use crate::config::template::{Part, Template, Var};

use super::conn::MAX_REDIRECTS;

/// Where a request goes.
pub(super) enum Routed {
    /// Serve it from `site` with its handler: static files, or (`cgi`)
    /// the location's application, CGI or FastCGI.
    Serve { site: usize, cgi: bool },
    /// Answer with this reply (a `return`, a `try_files` `=code`, a refusal).
    Reply { site: usize, reply: Reply },
    /// `return 444`: close without answering.
    Close { site: usize },
}

/// What a template's variables stand for in one request.
struct Vars<'a> {
    req: &'a Request,
    uri: &'a str,
    host: &'a str,
    remote: std::net::IpAddr,
    caps: &'a Captures,
    /// `$fastcgi_script_name` and `$fastcgi_path_info`, in a FastCGI location.
    split: Option<&'a (String, String)>,
}

fn expand(t: &Template, v: &Vars<'_>) -> String {
    let mut out = String::new();
    for p in &t.0 {
        match p {
            Part::Lit(s) => out.push_str(s),
            Part::Var(var) => push_var(&mut out, var, v),
        }
    }
    out
}

/// A `rewrite` replacement as (path, query): the query starts at the
/// replacement's own first `?`, never at one a variable brings (a decoded
/// `%3F` stays in the path, as in nginx), and the decoded values that land
/// in the query (`$1`, `$uri`) are escaped there, so `%26` cannot add a
/// parameter.
fn expand_split(t: &Template, v: &Vars<'_>) -> (String, Option<String>) {
    let mut path = String::new();
    let mut query: Option<String> = None;
    for p in &t.0 {
        match (p, query.as_mut()) {
            (Part::Lit(s), None) => match s.split_once('?') {
                Some((before, after)) => {
                    path.push_str(before);
                    query = Some(after.to_string());
                }
                None => path.push_str(s),
            },
            (Part::Lit(s), Some(q)) => q.push_str(s),
            (Part::Var(var), None) => push_var(&mut path, var, v),
            (Part::Var(var @ (Var::Capture(_) | Var::Uri)), Some(q)) => {
                let mut raw = String::new();
                push_var(&mut raw, var, v);
                escape_arg(q, &raw);
            }
            (Part::Var(var), Some(q)) => push_var(q, var, v),
        }
    }
    (path, query)
}

/// Percent-encodes what would change a query's structure or is not URI text.
fn escape_arg(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_graphic() && !b"%&+?#\"<>\\^`{|}".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn push_var(out: &mut String, var: &Var, v: &Vars<'_>) {
    match var {
        Var::Uri => out.push_str(v.uri),
        Var::Args => out.push_str(v.req.query().unwrap_or("")),
        Var::IsArgs => out.push_str(if v.req.query().is_some_and(|q| !q.is_empty()) {
            "?"
        } else {
            ""
        }),
        Var::RequestUri => out.push_str(v.req.request_uri()),
        Var::Host => out.push_str(v.host),
        Var::Scheme => out.push_str(if v.req.https { "https" } else { "http" }),
        Var::RemoteAddr => out.push_str(&v.remote.to_string()),
        Var::RequestMethod => out.push_str(&v.req.method_name),
        Var::FastcgiScriptName => out.push_str(v.split.map_or(v.uri, |s| s.0.as_str())),
        Var::FastcgiPathInfo => out.push_str(v.split.map_or("", |s| s.1.as_str())),
        Var::Capture(name) => out.push_str(v.caps.get(name).unwrap_or("")),
    }
}

impl HttpService {
    /// Routes `req` on `server`; `redirects` counts internal redirects.
    pub(super) fn route(
        &mut self,
        server: usize,
        server_caps: &[(String, String)],
        req: &mut Request,
        peer: std::net::IpAddr,
        redirects: &mut u8,
    ) -> Routed {
        // After a location's `last`, nginx chooses the location again
        // without running the server's rewrites a second time.
        let mut server_rewrites = true;
        let mut rewritten = false;
        loop {
            let tokens = self.cfg.server_tokens;
            // A named location is served as it is asked: no server rewrite,
            // no matching, the URI unchanged.
            let named = match req.named.take() {
                None => None,
                Some(name) => match self.routes[server].named.iter().find(|(n, _)| **n == *name) {
                    Some(&(_, i)) => {
                        server_rewrites = false;
                        rewritten = true;
                        Some(i)
                    }
                    None => {
                        crate::error!(
                            "no named location \"@{}\" in the server that serves \"{}\"",
                            crate::core::log::Esc(name.as_bytes()),
                            crate::core::log::Esc(req.request_uri().as_bytes())
                        );
                        return Routed::Reply {
                            site: server,
                            reply: Reply::error(500, tokens),
                        };
                    }
                },
            };
            let server_rules = !self.sites[server].cfg.rewrite.is_empty() && server_rewrites;
            if self.routes[server].matcher.is_empty() && !server_rules && named.is_none() {
                // No locations: no path to decode here (the static handler does).
                if self.sites[server].cfg.deny_hidden && path::is_hidden(req.path().as_bytes()) {
                    return Routed::Reply {
                        site: server,
                        reply: Reply::error(404, tokens),
                    };
                }
                if let Some(denied) = self.guard(server, peer, req) {
                    return denied;
                }
                return Routed::Serve {
                    site: server,
                    cgi: false,
                };
            }
            if server_rules {
                server_rewrites = false;
                match self.rewrite(server, None, req, peer) {
                    Rewritten::Redirect(r) => return r,
                    Rewritten::Unchanged => {}
                    // A rewritten URI is an internal one: it may reach an
                    // `internal` location (nginx marks the request so).
                    Rewritten::Changed | Rewritten::Last | Rewritten::Break => rewritten = true,
                }
            }
            let Some(mut norm) = path::resolve(req.path().as_bytes()) else {
                // The static handler answers a malformed path with 400.
                return Routed::Serve {
                    site: server,
                    cgi: false,
                };
            };
            let routes = &self.routes[server];
            let at = String::from_utf8_lossy(&norm);
            if named.is_none() && routes.slash_redirect.iter().any(|p| *p == at) && !routes.matcher.names(&at) {
                let reply = super::static_file::slash_redirect(at.as_bytes(), req, tokens);
                return Routed::Reply { site: server, reply };
            }
            let found = match named {
                Some(i) => Some((i, Captures::default())),
                None => routes.matcher.find(&at),
            };
            let (site, loc, mut caps) = match found {
                Some((i, caps)) => (routes.locs[i].site, Some(i), caps),
                None => (server, None, Captures::default()),
            };
            // The server name's captures come after the location's: a
            // number the location's regex also has is the location's.
            caps.0.extend(server_caps.iter().cloned());
            if self.sites[site].cfg.deny_hidden && path::is_hidden(req.path().as_bytes()) {
                return Routed::Reply {
                    site,
                    reply: Reply::error(404, tokens),
                };
            }
            if let Some(i) = loc
                && !self.routes[server].locs[i].rewrite.is_empty()
            {
                match self.rewrite(server, Some(i), req, peer) {
                    Rewritten::Redirect(r) => return r,
                    Rewritten::Unchanged => {}
                    Rewritten::Changed | Rewritten::Last => {
                        *redirects += 1;
                        if *redirects > MAX_REDIRECTS {
                            return self.cycle(site, req);
                        }
                        continue;
                    }
                    // Served here, as the new path.
                    Rewritten::Break => match path::resolve(req.path().as_bytes()) {
                        Some(n) => norm = n,
                        None => return Routed::Serve { site, cgi: false },
                    },
                }
            }
            let returns = loc.is_some_and(|i| matches!(self.routes[server].locs[i].kind, Kind::Return { .. }));
            // nginx's phases: `return` (rewrite) comes before allow/deny (access).
            if !returns && let Some(denied) = self.guard(site, peer, req) {
                return denied;
            }
            let Some(loc) = loc.map(|i| &self.routes[server].locs[i]) else {
                req.norm = Some(norm);
                return Routed::Serve { site, cgi: false };
            };
            if loc.internal && *redirects == 0 && !rewritten {
                return Routed::Reply {
                    site,
                    reply: Reply::error(404, tokens),
                };
            }
            if matches!(loc.kind, Kind::Status) {
                return Routed::Reply {
                    site,
                    reply: pool_status(req, tokens),
                };
            }
            let cgi = matches!(loc.kind, Kind::Cgi | Kind::FastCgi);
            if let Some(alias) = &loc.alias
                && !returns
            {
                let uri = String::from_utf8_lossy(&norm).into_owned();
                let mut file = self.expand_in(server, alias, req, &uri, peer, &caps);
                if let Some(n) = loc.prefix_len {
                    file.push_str(uri.get(n..).unwrap_or(""));
                }
                req.file = Some(file.trim_start_matches('/').as_bytes().to_vec());
                req.norm = Some(norm);
                return Routed::Serve { site, cgi };
            }
            if loc.try_files.is_empty() && !returns {
                // The common case: nothing below needs the variables.
                req.norm = Some(norm);
                return Routed::Serve { site, cgi };
            }
            let uri = String::from_utf8_lossy(&norm).into_owned();
            let host = self.host_of(server, req);
            let split = match (&loc.kind, &self.sites[site].cfg.fastcgi) {
                (Kind::FastCgi, Some(f)) => Some(super::fastcgi_exchange::split(
                    &uri,
                    f.split_path_info.as_ref(),
                    &f.index,
                )),
                _ => None,
            };
            let vars = Vars {
                req,
                uri: &uri,
                host: &host,
                remote: peer,
                caps: &caps,
                split: split.as_ref(),
            };
            if let Kind::Return { code, text } = &loc.kind {
                let text = text.as_ref().map(|t| expand(t, &vars));
                return returned(site, *code, text, tokens);
            }
            let Some((last, files)) = loc.try_files.split_last() else {
                return Routed::Serve { site, cgi };
            };
            // As nginx: an entry written with a trailing "/" ("$uri/") looks
            // for a directory, any other for a file ("$uri" of "/" is no file).
            let found = files
                .iter()
                .map(|t| {
                    (
                        expand(t, &vars),
                        matches!(t.0.last(), Some(Part::Lit(l)) if l.ends_with('/')),
                    )
                })
                .find(|(f, want_dir)| {
                    path::normalize(f.as_bytes()).is_some_and(|n| self.sites[site].is_dir(&n[1..]) == Some(*want_dir))
                });
            let fallback = expand(last, &vars);
            // A directory found as "/dir/" from a URI without its slash
            // ("$uri/" of "/dir") gets nginx's 301 to "/dir/", so that
            // the index page's relative links resolve.
            if let Some((f, true)) = &found
                && let Some(bare) = f.strip_suffix('/')
                && !bare.ends_with('/')
            {
                let reply = super::static_file::slash_redirect(bare.as_bytes(), req, tokens);
                return Routed::Reply { site, reply };
            }
            if let Some((f, _)) = found {
                // Served by this location, as the file found.
                let mut target = path::encode(f.as_bytes());
                if let Some(q) = req.query() {
                    target.push('?');
                    target.push_str(q);
                }
                req.rewrite(&target);
                // The script was found: PATH_INFO is what followed it in
                // the URI (nginx loses it here).
                if let Some(sp) = split.filter(|sp| sp.0 == f) {
                    req.fastcgi_split = Some(Box::new(sp));
                }
                return Routed::Serve { site, cgi };
            }
            if let Some(code) = fallback.strip_prefix('=').and_then(|n| n.parse::<u16>().ok()) {
                return Routed::Reply {
                    site,
                    reply: Reply::error(code, tokens),
                };
            }
            *redirects += 1;
            if *redirects > MAX_REDIRECTS {
                return self.cycle(site, req);
            }
            if let Some(name) = fallback.strip_prefix('@') {
                req.named = Some(name.into());
                continue;
            }
            server_rewrites = true;
            // An internal redirect: the URI (with its own query, else the
            // request's) is routed again from the top.
            let mut target = match fallback.split_once('?') {
                Some((p, q)) => format!("{}?{q}", encode_path(p)),
                None => encode_path(&fallback),
            };
            if !fallback.contains('?')
                && let Some(q) = req.query()
            {
                target.push('?');
                target.push_str(q);
            }
            req.rewrite(&target);
        }
    }
}

/// What a list of `rewrite` rules did.
enum Rewritten {
    Unchanged,
    /// Rules without a flag changed the path: choose the location again.
    Changed,
    Last,
    Break,
    Redirect(Routed),
}

impl HttpService {
    fn cycle(&self, site: usize, req: &Request) -> Routed {
        crate::error!(
            "rewrite or internal redirection cycle while processing \"{}\"",
            crate::core::log::Esc(req.request_uri().as_bytes())
        );
        Routed::Reply {
            site,
            reply: Reply::error(500, self.cfg.server_tokens),
        }
    }

    /// Runs the server's rules (`loc` None) or a location's on `req`.
    fn rewrite(&self, server: usize, loc: Option<usize>, req: &mut Request, peer: std::net::IpAddr) -> Rewritten {
        let rules = match loc {
            Some(i) => &self.routes[server].locs[i].rewrite,
            None => &self.sites[server].cfg.rewrite,
        };
        let mut changed = false;
        for rule in rules {
            let Some(norm) = path::resolve(req.path().as_bytes()) else {
                return Rewritten::Unchanged;
            };
            let uri = String::from_utf8_lossy(&norm).into_owned();
            let Some(m) = rule.regex.captures(&uri) else { continue };
            let mut caps = Vec::new();
            for (n, name) in rule.regex.capture_names().enumerate().skip(1) {
                let v = m.get(n).map_or("", |x| x.as_str()).to_string();
                if let Some(name) = name {
                    caps.push((name.to_string(), v.clone()));
                }
                caps.push((n.to_string(), v));
            }
            let host = self.host_of(server, req);
            let vars = Vars {
                req,
                uri: &uri,
                host: &host,
                remote: peer,
                caps: &Captures(caps),
                split: None,
            };
            let (new_path, own_query) = expand_split(&rule.replacement, &vars);
            // The request's query follows, unless the replacement has one of
            // its own (then it goes after it) or ends in "?" (then it is dropped).
            let orig = req.query().filter(|q| !q.is_empty());
            let query = match (own_query, orig) {
                (Some(q), _) if q.is_empty() => None,
                (Some(q), Some(o)) => Some(format!("{q}&{o}")),
                (Some(q), None) => Some(q),
                (None, o) => o.map(str::to_string),
            };
            let absolute = new_path.starts_with("http://") || new_path.starts_with("https://");
            // A path is sent percent-encoded, whatever its captures decoded.
            let mut t = if absolute {
                encode_absolute(&new_path)
            } else {
                encode_path(&new_path)
            };
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            if absolute || matches!(rule.flag, RewriteFlag::Redirect | RewriteFlag::Permanent) {
                let code = if rule.flag == RewriteFlag::Permanent { 301 } else { 302 };
                return Rewritten::Redirect(returned(server, code, Some(t), self.cfg.server_tokens));
            }
            req.rewrite(&t);
            changed = true;
            match rule.flag {
                RewriteFlag::Last => return Rewritten::Last,
                RewriteFlag::Break => return Rewritten::Break,
                _ => {}
            }
        }
        if changed {
            Rewritten::Changed
        } else {
            Rewritten::Unchanged
        }
    }

    /// `t` with the variables of `req` on `server`.
    fn expand_in(
        &self,
        server: usize,
        t: &Template,
        req: &Request,
        uri: &str,
        peer: std::net::IpAddr,
        caps: &Captures,
    ) -> String {
        let host = self.host_of(server, req);
        expand(
            t,
            &Vars {
                req,
                uri,
                host: &host,
                remote: peer,
                caps,
                split: None,
            },
        )
    }

    /// `$host`: the request's Host, else the server's first name.
    fn host_of(&self, server: usize, req: &Request) -> String {
        req.host
            .clone()
            .filter(|h| !h.is_empty())
            .or_else(|| self.sites[server].cfg.server_name.first().cloned())
            .unwrap_or_default()
    }

    /// nginx's access phase: `allow`/`deny`, then `auth_basic`.
    fn guard(&self, site: usize, peer: std::net::IpAddr, req: &Request) -> Option<Routed> {
        self.access(site, peer, req)
            .or_else(|| self.authenticate(site, peer, req))
    }

    /// The site's `auth_basic`: `Some(401)` without valid credentials.
    fn authenticate(&self, site: usize, peer: std::net::IpAddr, req: &Request) -> Option<Routed> {
        let auth = self.sites[site].cfg.auth.as_ref()?;
        if let Some(given) = &req.authorization {
            use crate::config::htpasswd::Refusal;
            use crate::core::log::Esc;
            // nginx's words, so fail2ban-style filters written for it match.
            let why = match auth.users.verify_basic(given) {
                Ok(_) => return None,
                Err(Refusal::NoSuchUser(u)) => format!("user \"{}\" was not found", Esc(u.as_bytes())),
                Err(Refusal::Mismatch(u)) => format!("user \"{}\": password mismatch", Esc(u.as_bytes())),
                Err(Refusal::Malformed) => "no user/password was provided for basic authentication".into(),
            };
            crate::error!(
                "auth_basic \"{}\": {why}, client: {peer}, request: \"{}\"",
                auth.realm,
                Esc(req.request_uri().as_bytes())
            );
        }
        let mut reply = Reply::error(401, self.cfg.server_tokens);
        reply.header(
            "WWW-Authenticate",
            format_args!("Basic realm=\"{}\", charset=\"UTF-8\"", auth.realm),
        );
        Some(Routed::Reply { site, reply })
    }

    /// The site's `allow` / `deny`: `Some(403)` for a client it refuses.
    fn access(&self, site: usize, peer: std::net::IpAddr, req: &Request) -> Option<Routed> {
        let rules = &self.sites[site].cfg.access;
        if rules.is_empty() || crate::config::access::allowed(rules, peer) {
            return None;
        }
        crate::error!(
            "access forbidden by rule, client: {peer}, request: \"{}\"",
            crate::core::log::Esc(req.request_uri().as_bytes())
        );
        Some(Routed::Reply {
            site,
            reply: Reply::error(403, self.cfg.server_tokens),
        })
    }
}

/// A decoded path (as variables give it) in the form a target carries.
fn encode_path(p: &str) -> String {
    path::encode(p.as_bytes())
}

/// An absolute URL a rewrite made: its path percent-encoded as a relative
/// one's (captures are decoded), scheme and authority as written with any
/// byte that cannot be in them escaped (no space or CR/LF reaches `Location`).
fn encode_absolute(url: &str) -> String {
    let after = url.find("://").map_or(0, |i| i + 3);
    let path_at = url[after..].find('/').map_or(url.len(), |i| after + i);
    let mut out = String::with_capacity(url.len() + 8);
    for &b in &url.as_bytes()[..path_at] {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@[]%/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str(&encode_path(&url[path_at..]));
    out
}

/// `return`: a redirect with its Location, a status with a text body, or
/// the status's own page.
/// The pools' status page (the `status` handler): no caching, GET/HEAD only.
fn pool_status(req: &Request, tokens: bool) -> Reply {
    if !matches!(req.method_name.as_ref(), "GET" | "HEAD") {
        let mut r = Reply::error(405, tokens);
        r.header("Allow", "GET, HEAD");
        return r;
    }
    let Some((ct, body)) =
        crate::pool::registry::with(|pools| crate::pool::status::render_all(pools, req.query().unwrap_or("")))
    else {
        return Reply::error(404, tokens);
    };
    let mut r = Reply::error(200, tokens);
    r.content_type = Some(ct);
    r.length = Some(body.len() as u64);
    r.body = ReplyBody::Bytes(body);
    r.header("Cache-Control", "no-cache, no-store, must-revalidate, max-age=0");
    r
}

fn returned(site: usize, code: u16, text: Option<String>, tokens: bool) -> Routed {
    if code == 444 {
        return Routed::Close { site };
    }
    let mut reply = Reply::error(code, tokens);
    match text {
        Some(url) if matches!(code, 301 | 302 | 303 | 307 | 308) => {
            // A decoded `$uri` or capture may hold CR/LF: never a header break.
            let mut safe = String::with_capacity(url.len());
            for ch in url.chars() {
                if ch.is_control() {
                    let mut b = [0; 4];
                    for byte in ch.encode_utf8(&mut b).bytes() {
                        safe.push_str(&format!("%{byte:02X}"));
                    }
                } else {
                    safe.push(ch);
                }
            }
            reply.location = Some(safe);
        }
        Some(body) if super::status::has_content(code) => {
            reply.content_type = Some("text/plain");
            reply.length = Some(body.len() as u64);
            reply.body = ReplyBody::Bytes(body.into_bytes());
            reply.own_body = true;
        }
        // A success without text is an empty answer (nginx), not a page.
        None if code < 300 && super::status::has_content(code) => {
            reply.content_type = None;
            reply.length = Some(0);
            reply.body = ReplyBody::Empty;
        }
        _ => {}
    }
    Routed::Reply { site, reply }
}
