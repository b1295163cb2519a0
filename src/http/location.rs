//! Which `location` of a server serves a path, by nginx's rules: an exact
//! match (`= /path`) wins at once; otherwise the longest matching prefix is
//! remembered, and if it is a `^~` prefix it wins; otherwise the regexes
//! (`~`, `~*` for case-insensitive) are tried in config order and the first
//! that matches wins; otherwise the longest prefix does. Every regex is
//! compiled once, when the config is loaded.

use regex::Regex;

pub use crate::config::Match;
use crate::config::template::Template;
use crate::config::{self, Handler, Location};

/// A server's locations as a worker holds them.
pub struct Route {
    pub matcher: Matcher,
    pub locs: Vec<Loc>,
    /// `/app` for each application location `/app/` (CGI, FastCGI): a
    /// request for exactly `/app` is redirected to `/app/`, as nginx does
    /// for a prefix location ending in "/" that passes to an application.
    pub slash_redirect: Vec<String>,
    /// Named locations (`@name`): the name and the location's index.
    pub named: Vec<(String, usize)>,
}

impl Route {
    pub fn new(locations: &[Location], locs: Vec<Loc>) -> Route {
        let matches: Vec<_> = locations.iter().map(|l| l.matches.clone()).collect();
        let slash_redirect = locations
            .iter()
            .filter(|l| matches!(l.handler, Handler::Cgi(_) | Handler::FastCgi(_)))
            .filter_map(|l| match &l.matches {
                Match::Prefix(p, _) if p.len() > 1 => p.strip_suffix('/').map(str::to_string),
                _ => None,
            })
            .collect();
        let named = matches
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match m {
                Match::Named(n) => Some((n.clone(), i)),
                _ => None,
            })
            .collect();
        Route {
            matcher: Matcher::new(&matches),
            locs,
            slash_redirect,
            named,
        }
    }
}

/// One location: the site holding its settings, and what answers.
pub struct Loc {
    pub site: usize,
    pub kind: Kind,
    pub try_files: Vec<Template>,
    pub rewrite: Vec<config::Rewrite>,
    pub alias: Option<Template>,
    /// For an exact or prefix location: the length of its path, which
    /// `alias` replaces.
    pub prefix_len: Option<usize>,
    /// Only internal redirects reach it.
    pub internal: bool,
}

pub enum Kind {
    Static,
    Cgi,
    FastCgi,
    Return { code: u16, text: Option<Template> },
    Status,
}

impl Loc {
    pub fn new(site: usize, l: &Location) -> Loc {
        Loc {
            site,
            kind: match &l.handler {
                Handler::Static => Kind::Static,
                Handler::Cgi(_) => Kind::Cgi,
                Handler::FastCgi(_) => Kind::FastCgi,
                Handler::Return { code, text } => Kind::Return {
                    code: *code,
                    text: text.clone(),
                },
                Handler::Status => Kind::Status,
            },
            try_files: l.try_files.clone(),
            rewrite: l.rewrite.clone(),
            alias: l.alias.clone(),
            internal: l.internal,
            prefix_len: match &l.matches {
                Match::Exact(p) | Match::Prefix(p, _) => Some(p.len()),
                Match::Regex(_) | Match::Named(_) => None,
            },
        }
    }
}

/// The server's settings with the location's own on top.
pub fn merged(server: &config::Server, l: &Location) -> config::Server {
    let mut s = config::Server {
        locations: Vec::new(),
        cgi: Vec::new(),
        fastcgi: None,
        rewrite: Vec::new(),
        ..server.clone()
    };
    if let Some(r) = &l.root {
        s.root = r.clone();
    }
    if let Some(i) = &l.index {
        s.index = i.clone();
    }
    if let Some(a) = l.autoindex {
        s.autoindex = a;
    }
    if let Some(d) = l.deny_hidden {
        s.deny_hidden = d;
    }
    if let Some(c) = &l.charset {
        s.charset = c.clone();
    }
    if let Some(h) = &l.add_header {
        s.add_header = h.clone();
    }
    if let Some(e) = l.expires {
        s.expires = e;
    }
    if let Some(a) = &l.auth {
        s.auth = a.clone();
    }
    if let Some(g) = &l.gzip {
        s.gzip = g.clone();
    }
    if let Some(g) = l.gzip_static {
        s.gzip_static = g;
    }
    if let Some(e) = &l.error_page {
        s.error_page = e.clone();
    }
    if let Some(a) = &l.access {
        s.access = a.clone();
    }
    if let Some(t) = &l.default_type {
        s.default_type = t.clone();
    }
    match &l.handler {
        Handler::Cgi(c) => s.cgi = vec![c.clone()],
        Handler::FastCgi(f) => s.fastcgi = Some(f.clone()),
        _ => {}
    }
    s
}

/// The locations of one server, arranged for lookup.
#[derive(Debug, Default)]
pub struct Matcher {
    exact: Vec<(String, usize)>,
    /// Longest first, so the first hit is the longest prefix.
    prefixes: Vec<(String, bool, usize)>,
    regexes: Vec<(Regex, usize)>,
    /// The same regexes in one set: one pass over the path tells which match.
    set: Option<regex::RegexSet>,
}

/// A regex location's captures: `$1`.. by number, `$name` by name.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captures(pub Vec<(String, String)>);

impl Captures {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

impl Matcher {
    /// `matches[i]` is the match of location `i`.
    pub fn new(matches: &[Match]) -> Matcher {
        let mut m = Matcher::default();
        for (i, k) in matches.iter().enumerate() {
            match k {
                Match::Exact(p) => m.exact.push((p.clone(), i)),
                Match::Prefix(p, stop) => m.prefixes.push((p.clone(), *stop, i)),
                Match::Regex(r) => m.regexes.push((r.clone(), i)),
                // Reached by name only (`Route::named`).
                Match::Named(_) => {}
            }
        }
        // Stable: of two equal prefixes (refused at load anyway) the first stays first.
        m.prefixes.sort_by_key(|(p, _, _)| std::cmp::Reverse(p.len()));
        if m.regexes.len() > 1 {
            m.set = regex::RegexSet::new(m.regexes.iter().map(|(r, _)| r.as_str())).ok();
        }
        m
    }

    /// Whether an exact or prefix location is exactly `path`.
    pub fn names(&self, path: &str) -> bool {
        self.exact.iter().any(|(p, _)| p == path) || self.prefixes.iter().any(|(p, _, _)| p == path)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.regexes.is_empty()
    }

    /// The location serving `path` (decoded and normalised), with the
    /// captures of a regex location; `None` when no location matches.
    pub fn find(&self, path: &str) -> Option<(usize, Captures)> {
        if let Some((_, i)) = self.exact.iter().find(|(p, _)| p == path) {
            return Some((*i, Captures::default()));
        }
        let prefix = self.prefixes.iter().find(|(p, _, _)| path.starts_with(p.as_str()));
        if let Some((_, true, i)) = prefix {
            return Some((*i, Captures::default()));
        }
        let first = match &self.set {
            Some(set) => set.matches(path).iter().next(),
            None => self.regexes.iter().position(|(re, _)| re.is_match(path)),
        };
        if let Some(k) = first {
            let (re, i) = &self.regexes[k];
            if re.captures_len() <= 1 {
                return Some((*i, Captures::default()));
            }
            if let Some(caps) = re.captures(path) {
                let mut out = Vec::new();
                for (n, name) in re.capture_names().enumerate().skip(1) {
                    let v = caps.get(n).map_or("", |m| m.as_str()).to_string();
                    if let Some(name) = name {
                        out.push((name.to_string(), v.clone()));
                    }
                    out.push((n.to_string(), v));
                }
                return Some((*i, Captures(out)));
            }
        }
        prefix.map(|(_, _, i)| (*i, Captures::default()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_precedence() {
        let list = [
            "/",
            "= /",
            "/images/",
            "^~ /static/",
            "~* \\.(gif|jpg|png)$",
            "~ ^/static/.*\\.css$",
            "/documents/",
            "~ ^/documents/(?<year>\\d{4})/(.*)$",
            "= /exact",
            "/app",
        ];
        let ms: Vec<Match> = list.iter().map(|s| Match::parse(s).unwrap()).collect();
        let m = Matcher::new(&ms);
        let at = |p: &str| m.find(p).map(|(i, _)| list[i]);
        assert_eq!(at("/"), Some("= /"), "exact beats the / prefix");
        assert_eq!(at("/index.html"), Some("/"));
        assert_eq!(at("/images/a.txt"), Some("/images/"));
        assert_eq!(
            at("/images/a.GIF"),
            Some("~* \\.(gif|jpg|png)$"),
            "regex beats prefix, caseless"
        );
        assert_eq!(at("/static/a.png"), Some("^~ /static/"), "^~ stops the regexes");
        assert_eq!(at("/static/a.css"), Some("^~ /static/"));
        assert_eq!(
            at("/documents/x.jpg"),
            Some("~* \\.(gif|jpg|png)$"),
            "regexes in file order"
        );
        assert_eq!(
            at("/documents/2024/report"),
            Some("~ ^/documents/(?<year>\\d{4})/(.*)$")
        );
        assert_eq!(at("/documents/old"), Some("/documents/"), "no regex: longest prefix");
        assert_eq!(at("/exact"), Some("= /exact"));
        assert_eq!(at("/exact/more"), Some("/"));
        assert_eq!(at("/application"), Some("/app"), "a prefix is a plain string prefix");
        let (_, caps) = m.find("/documents/2024/q/r").unwrap();
        assert_eq!(caps.get("year"), Some("2024"));
        assert_eq!(caps.get("1"), Some("2024"));
        assert_eq!(caps.get("2"), Some("q/r"));
        let none = Matcher::new(&[Match::parse("/a/").unwrap()]);
        assert_eq!(none.find("/b"), None);
    }

    #[test]
    fn bad_matches_are_refused() {
        assert!(Match::parse("~ (unclosed").unwrap_err().contains("(unclosed"));
        assert!(Match::parse("images").unwrap_err().contains("must start with"));
        assert!(Match::parse("= ").is_err());
        assert!(Match::parse("").is_err());
    }
}
