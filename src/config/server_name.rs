//! Virtual server selection by `server_name`, with nginx's rules: exact
//! names, `*.example.org` / `.example.org` leading wildcards, `www.example.*`
//! trailing wildcards and `~regex` names, tried in that order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// One `server_name` entry as written in the config.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// `example.org`, lowercased.
    Exact(String),
    /// `*.example.org` or `.example.org`: `suffix` is `.example.org`;
    /// `apex` is set for the `.example.org` form, which also matches
    /// `example.org` itself.
    Leading { suffix: String, apex: bool },
    /// `www.example.*`: the prefix `www.example.`.
    Trailing(String),
    /// `~^(?<user>.+)\.example\.net$`, without the `~`.
    Regex(Regex),
}

impl fmt::Display for Pattern {
    /// The name as it would be written in the config (lowercased).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Exact(s) => f.write_str(s),
            Pattern::Leading { suffix, apex: true } => f.write_str(suffix),
            Pattern::Leading { suffix, apex: false } => write!(f, "*{suffix}"),
            Pattern::Trailing(p) => write!(f, "{p}*"),
            Pattern::Regex(re) => write!(f, "~{}", re.as_str()),
        }
    }
}

/// Parses one name; `Err` says what is wrong, for `-t` to refuse it.
pub fn parse(name: &str) -> Result<Pattern, String> {
    if let Some(re) = name.strip_prefix('~') {
        if re.is_empty() {
            return Err(format!("\"{name}\" is an empty regex"));
        }
        // nginx's rule: a regex with an uppercase letter is compiled caseless
        // (hosts are lowercase, so it could not match otherwise); one without
        // is case-sensitive.
        let caseless = re.bytes().any(|b| b.is_ascii_uppercase());
        return RegexBuilder::new(re)
            .case_insensitive(caseless)
            .build()
            .map(Pattern::Regex)
            .map_err(|e| format!("regex \"{re}\" does not compile: {e}"));
    }
    // nginx's `server_name ""`: the requests that name no host (HTTP/1.0).
    if name.is_empty() {
        return Ok(Pattern::Exact(String::new()));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
        return Err(format!("\"{name}\" is not a host name"));
    }
    let lower = name.to_ascii_lowercase();
    if lower.contains("..") {
        return Err(format!("\"{name}\" has an empty label (\"..\")"));
    }
    // A Host loses its trailing dot before matching, so such a name never could.
    if lower.ends_with('.') {
        return Err(format!("\"{name}\" ends with \".\" and would never match"));
    }
    let wildcard_err = || {
        format!(
            "\"{name}\" is not a valid wildcard: \"*\" is allowed only as \"*.example.org\" or \
             \"www.example.*\" (use a regex such as \"~^www\\..+\\.example\\.org$\" otherwise)"
        )
    };
    if let Some(rest) = lower.strip_prefix("*.") {
        if rest.is_empty() || rest.contains('*') {
            return Err(wildcard_err());
        }
        return Ok(Pattern::Leading {
            suffix: lower[1..].to_string(),
            apex: false,
        });
    }
    if let Some(rest) = lower.strip_suffix(".*") {
        // `.x.*` would be both forms at once, which nginx does not have.
        if rest.is_empty() || rest.contains('*') || rest.starts_with('.') {
            return Err(wildcard_err());
        }
        return Ok(Pattern::Trailing(lower[..lower.len() - 1].to_string()));
    }
    if lower.contains('*') {
        return Err(wildcard_err());
    }
    if lower.starts_with('.') {
        return Ok(Pattern::Leading {
            suffix: lower,
            apex: true,
        });
    }
    Ok(Pattern::Exact(lower))
}

/// A regex name and what its captures are called, computed once.
struct RegexName {
    re: Regex,
    site: usize,
    /// `(group index, variable name)`: "1".."9" and the named groups.
    vars: Vec<(usize, String)>,
}

/// The servers on one listening address and their names, indexed for
/// [`Names::select`].
pub struct Names {
    /// Exact names, and the apex of every `.example.org`.
    exact: HashMap<Box<str>, usize>,
    /// Leading wildcards by suffix, with its dot: `.example.org`.
    leading: HashMap<Box<str>, usize>,
    /// Trailing wildcards by prefix, with its dot: `www.example.`.
    trailing: HashMap<Box<str>, usize>,
    regexes: Vec<RegexName>,
    default: usize,
    conflicts: Vec<String>,
}

impl Names {
    /// `servers` are `(site id, names)` in config order; `default` is the
    /// site id of the `default_server`, else the first server is the
    /// default. Panics if both `servers` is empty and `default` is `None`.
    pub fn new(servers: Vec<(usize, Vec<Pattern>)>, default: Option<usize>) -> Names {
        let default = default
            .or_else(|| servers.first().map(|s| s.0))
            .expect("a listening address has at least one server");
        let mut names = Names {
            exact: HashMap::new(),
            leading: HashMap::new(),
            trailing: HashMap::new(),
            regexes: Vec::new(),
            default,
            conflicts: Vec::new(),
        };
        for (site, patterns) in servers {
            for p in patterns {
                names.add(site, p);
            }
        }
        names
    }

    /// Registers one name; a name already claimed by an earlier entry is
    /// ignored and recorded, as nginx does ("conflicting server name").
    fn add(&mut self, site: usize, p: Pattern) {
        let claimed = match &p {
            Pattern::Exact(s) => claim(&mut self.exact, s, site),
            Pattern::Leading { suffix, apex: false } => claim(&mut self.leading, suffix, site),
            Pattern::Leading { suffix, apex: true } => {
                // nginx treats `.example.org` as both `example.org` and
                // `*.example.org`: it conflicts with either, and is then
                // ignored as a whole.
                let apex = &suffix[1..];
                if self.exact.contains_key(apex) || self.leading.contains_key(suffix.as_str()) {
                    false
                } else {
                    claim(&mut self.exact, apex, site) && claim(&mut self.leading, suffix, site)
                }
            }
            Pattern::Trailing(prefix) => claim(&mut self.trailing, prefix, site),
            Pattern::Regex(re) => {
                let mut vars: Vec<(usize, String)> =
                    (1..re.captures_len().min(10)).map(|i| (i, i.to_string())).collect();
                for (i, n) in re.capture_names().enumerate() {
                    if let Some(n) = n {
                        vars.push((i, n.to_string()));
                    }
                }
                self.regexes.push(RegexName {
                    re: re.clone(),
                    site,
                    vars,
                });
                true
            }
        };
        if !claimed {
            self.conflicts.push(format!("conflicting server name \"{p}\", ignored"));
        }
    }

    /// Warnings for names ignored because an earlier server (or the same one)
    /// already has them, for `-t` to print.
    pub fn conflicts(&self) -> &[String] {
        &self.conflicts
    }

    /// The site for a request's host (lowercase, port removed; absent or
    /// empty for none) and the captures of the regex name that chose it,
    /// as `(variable, value)` with positional ones named "1".."9".
    /// Precedence: exact name, longest `*.x`, longest `x.*`, first regex in
    /// config order, then the default server. Allocates only for captures.
    pub fn select(&self, host: Option<&str>) -> (usize, Vec<(String, String)>) {
        // No host: the server named "" if there is one, else the default.
        let nameless = || (self.exact.get("").copied().unwrap_or(self.default), Vec::new());
        let Some(host) = host else {
            return nameless();
        };
        // nginx strips one trailing dot: "example.org." is "example.org".
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return nameless();
        }
        // The caller lowercases; stay correct (at the cost of a copy) if not.
        let host: Cow<str> = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let host = host.as_ref();

        if let Some(&site) = self.exact.get(host) {
            return (site, Vec::new());
        }
        // Leftmost dot first gives the longest suffix first.
        if !self.leading.is_empty() {
            for (i, _) in host.match_indices('.') {
                if let Some(&site) = self.leading.get(&host[i..]) {
                    return (site, Vec::new());
                }
            }
        }
        // Rightmost dot first gives the longest prefix first; the `*` must
        // stand for at least one character.
        if !self.trailing.is_empty() {
            for (i, _) in host.rmatch_indices('.') {
                if i + 1 < host.len()
                    && let Some(&site) = self.trailing.get(&host[..=i])
                {
                    return (site, Vec::new());
                }
            }
        }
        for r in &self.regexes {
            if r.vars.is_empty() {
                if r.re.is_match(host) {
                    return (r.site, Vec::new());
                }
                continue;
            }
            if let Some(caps) = r.re.captures(host) {
                // A group that did not take part is empty, as in nginx.
                let vars = r
                    .vars
                    .iter()
                    .map(|(i, n)| (n.clone(), caps.get(*i).map_or("", |m| m.as_str()).to_string()))
                    .collect();
                return (r.site, vars);
            }
        }
        (self.default, Vec::new())
    }
}

/// Inserts `key -> site` unless the key is taken; says whether it was free.
fn claim(map: &mut HashMap<Box<str>, usize>, key: &str, site: usize) -> bool {
    match map.entry(key.into()) {
        Entry::Occupied(_) => false,
        Entry::Vacant(v) => {
            v.insert(site);
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(servers: &[(usize, &[&str])], default: Option<usize>) -> Names {
        let servers = servers
            .iter()
            .map(|(site, ns)| (*site, ns.iter().map(|n| parse(n).unwrap()).collect()))
            .collect();
        Names::new(servers, default)
    }

    fn site(n: &Names, host: &str) -> usize {
        n.select(Some(host)).0
    }

    fn caps(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn parses_each_form() {
        assert!(matches!(parse("Example.ORG"), Ok(Pattern::Exact(s)) if s == "example.org"));
        assert!(matches!(parse("*.Example.org"),
            Ok(Pattern::Leading { suffix, apex: false }) if suffix == ".example.org"));
        assert!(matches!(parse(".example.org"),
            Ok(Pattern::Leading { suffix, apex: true }) if suffix == ".example.org"));
        assert!(matches!(parse("WWW.example.*"), Ok(Pattern::Trailing(p)) if p == "www.example."));
        assert!(matches!(parse("~^www\\d+\\.example\\.net$"), Ok(Pattern::Regex(_))));
        // `_`, the conventional catch-all, is just a name nothing matches.
        assert!(matches!(parse("_"), Ok(Pattern::Exact(s)) if s == "_"));
        for n in [
            "example.org",
            "*.example.org",
            ".example.org",
            "www.example.*",
            "~^a\\.b$",
        ] {
            assert_eq!(parse(n).unwrap().to_string(), n);
        }
    }

    #[test]
    fn refuses_invalid_names() {
        for bad in [
            " ",
            "example .org",
            "exa\tmple.org",
            "example.org/",
            "/x",
            "*",
            "*.",
            ".",
            ".*",
            "www.*.org",
            "w*.example.org",
            "*example.org",
            "www.example*",
            "*.example.*",
            "*.*.org",
            ".example.*",
            "a..b",
            "example.org.",
            "~",
        ] {
            let err = parse(bad).expect_err(bad);
            assert!(!err.is_empty());
        }
        let err = parse("www.*.org").unwrap_err();
        assert!(err.contains("www.*.org") && err.contains("wildcard"), "{err}");
    }

    #[test]
    fn the_empty_name_takes_requests_without_a_host() {
        let n = names(&[(1, &["a.example"]), (2, &["", "b.example"])], Some(1));
        assert_eq!(n.select(None).0, 2);
        assert_eq!(site(&n, ""), 2);
        assert_eq!(site(&n, "other.example"), 1, "a host nobody names: the default");
        let n = names(&[(1, &["a.example"]), (2, &["b.example"])], Some(2));
        assert_eq!(n.select(None).0, 2, "no \"\" name: the default");
    }

    #[test]
    fn bad_regex_names_the_regex_and_the_cause() {
        let err = parse("~^(www\\.example$").unwrap_err();
        assert!(err.contains("^(www\\.example$"), "{err}");
        assert!(err.contains("unclosed group"), "{err}");
        // PCRE-only syntax the regex crate lacks is refused, not mis-read.
        assert!(parse("~^(?!www).*$").is_err());
    }

    #[test]
    fn exact_beats_wildcards_and_regex() {
        let n = names(
            &[
                (1, &["~^www\\.example\\.org$"]),
                (2, &["www.example.*"]),
                (3, &["*.example.org"]),
                (4, &["www.example.org"]),
            ],
            None,
        );
        assert_eq!(site(&n, "www.example.org"), 4);
    }

    #[test]
    fn leading_wildcard_beats_trailing_and_regex() {
        let n = names(
            &[(1, &["~^www\\..*$"]), (2, &["www.example.*"]), (3, &["*.example.org"])],
            None,
        );
        assert_eq!(site(&n, "www.example.org"), 3);
        assert_eq!(site(&n, "www.example.net"), 2);
        assert_eq!(site(&n, "www.other.net"), 1);
    }

    #[test]
    fn trailing_wildcard_beats_regex() {
        let n = names(&[(1, &["~^mail\\."]), (2, &["mail.*"])], None);
        assert_eq!(site(&n, "mail.example.org"), 2);
    }

    #[test]
    fn longest_leading_wildcard_wins() {
        let n = names(
            &[(1, &["*.org"]), (2, &["*.example.org"]), (3, &["*.sub.example.org"])],
            None,
        );
        assert_eq!(site(&n, "a.sub.example.org"), 3);
        assert_eq!(site(&n, "a.b.sub.example.org"), 3);
        assert_eq!(site(&n, "sub.example.org"), 2);
        assert_eq!(site(&n, "www.example.org"), 2);
        assert_eq!(site(&n, "example.org"), 1);
        // The `*` stands for at least one label: no match for the bare suffix.
        assert_eq!(site(&n, "org"), 1); // the default (first server)
    }

    #[test]
    fn longest_trailing_wildcard_wins() {
        let n = names(&[(1, &["www.*"]), (2, &["www.example.*"]), (3, &["x.y"])], None);
        assert_eq!(site(&n, "www.example.org"), 2);
        assert_eq!(site(&n, "www.example.co.uk"), 2);
        assert_eq!(site(&n, "www.other.org"), 1);
        // `www.example.*` needs something after "www.example.".
        assert_eq!(site(&n, "www.example"), 1);
        let n = names(&[(3, &["x.y"]), (2, &["www.example.*"])], None);
        assert_eq!(site(&n, "www"), 3);
    }

    #[test]
    fn dot_form_matches_apex_and_subdomains() {
        let n = names(&[(1, &["x.y"]), (2, &[".example.org"]), (3, &["*.org"])], None);
        assert_eq!(site(&n, "example.org"), 2);
        assert_eq!(site(&n, "www.example.org"), 2);
        assert_eq!(site(&n, "a.b.example.org"), 2);
        assert_eq!(site(&n, "other.org"), 3);
        assert_eq!(site(&n, "notexample.org"), 3);
    }

    #[test]
    fn dot_form_beats_trailing_wildcard_on_the_apex() {
        let n = names(&[(1, &["example.*"]), (2, &[".example.org"])], None);
        assert_eq!(site(&n, "example.org"), 2);
        assert_eq!(site(&n, "example.net"), 1);
    }

    #[test]
    fn regexes_are_tried_in_config_order() {
        let n = names(
            &[
                (1, &["x.y"]),
                (2, &["~^www\\d+\\.example\\.net$", "~^(.+)\\.example\\.net$"]),
                (3, &["~^www1\\.example\\.net$"]),
            ],
            None,
        );
        assert_eq!(site(&n, "www1.example.net"), 2);
        assert_eq!(site(&n, "mail.example.net"), 2);
        assert_eq!(site(&n, "example.net"), 1);
    }

    #[test]
    fn regex_captures_named_and_positional() {
        let n = names(
            &[
                (1, &["x.y"]),
                (2, &["~^(?<user>[^.]+)\\.(www\\.)?(?P<zone>example\\.net)$"]),
            ],
            None,
        );
        let (s, c) = n.select(Some("alice.example.net"));
        assert_eq!(s, 2);
        // The group `(www\.)?` did not take part: it is empty, like nginx.
        assert_eq!(
            c,
            caps(&[
                ("1", "alice"),
                ("2", ""),
                ("3", "example.net"),
                ("user", "alice"),
                ("zone", "example.net"),
            ])
        );
        // No captures for non-regex matches nor for regexes without groups.
        let n = names(&[(1, &["a.b", "~^c\\.d$"])], None);
        assert_eq!(n.select(Some("a.b")), (1, Vec::new()));
        assert_eq!(n.select(Some("c.d")), (1, Vec::new()));
    }

    #[test]
    fn positional_captures_stop_at_nine() {
        let re = format!("~^{}$", "(.)".repeat(10));
        let n = names(&[(1, &[re.as_str()])], None);
        let (_, c) = n.select(Some("abcdefghij"));
        assert_eq!(c.len(), 9);
        assert_eq!(c[8], ("9".to_string(), "i".to_string()));
    }

    #[test]
    fn regex_case_follows_nginx() {
        // Without uppercase letters the regex is case-sensitive, and hosts
        // are lowercase; with one it is compiled caseless.
        let n = names(&[(1, &["x.y"]), (2, &["~^WWW\\.example\\.org$"])], None);
        assert_eq!(site(&n, "www.example.org"), 2);
        let n = names(&[(1, &["x.y"]), (2, &["~^www\\.example\\.org$"])], None);
        assert_eq!(site(&n, "www.example.org"), 2);
    }

    #[test]
    fn hosts_are_compared_case_insensitively() {
        let n = names(
            &[(1, &["x.y"]), (2, &["WWW.Example.ORG"]), (3, &["*.Example.NET"])],
            None,
        );
        assert_eq!(site(&n, "www.example.org"), 2);
        assert_eq!(site(&n, "WWW.EXAMPLE.ORG"), 2);
        assert_eq!(site(&n, "a.example.net"), 3);
    }

    #[test]
    fn trailing_dot_in_host_is_ignored() {
        let n = names(&[(1, &["x.y"]), (2, &["example.org"]), (3, &["*.example.net"])], None);
        assert_eq!(site(&n, "example.org."), 2);
        assert_eq!(site(&n, "www.example.net."), 3);
        assert_eq!(site(&n, "."), 1);
    }

    #[test]
    fn default_is_first_server_without_default_server() {
        let n = names(&[(7, &["a.org"]), (8, &["b.org"]), (9, &["~.*"])], None);
        assert_eq!(n.select(None), (7, Vec::new()));
        assert_eq!(n.select(Some("")), (7, Vec::new()));
        assert_eq!(site(&n, "a.org"), 7);
        // Unknown hosts fall to the default unless a regex catches them.
        let n = names(&[(7, &["a.org"]), (8, &["b.org"])], None);
        assert_eq!(site(&n, "unknown.example"), 7);
    }

    #[test]
    fn default_server_overrides_the_first() {
        let n = names(&[(7, &["a.org"]), (8, &["b.org"]), (9, &["c.org"])], Some(8));
        assert_eq!(n.select(None).0, 8);
        assert_eq!(n.select(Some("")).0, 8);
        assert_eq!(site(&n, "unknown.example"), 8);
        assert_eq!(site(&n, "a.org"), 7);
        assert_eq!(site(&n, "c.org"), 9);
    }

    #[test]
    fn no_regex_is_tried_without_a_host() {
        // nginx tries regexes only on a non-empty host.
        let n = names(&[(1, &["a.org"]), (2, &["~^$", "~.*"])], None);
        assert_eq!(n.select(None).0, 1);
        assert_eq!(n.select(Some("")).0, 1);
        assert_eq!(n.select(Some("z")).0, 2);
    }

    #[test]
    fn conflicting_names_keep_the_first() {
        let n = names(
            &[
                (1, &["a.org", "*.b.org", "c.org"]),
                (2, &["a.org", ".b.org", ".c.org", "*.d.org", "e.*"]),
                (3, &["d.org", ".d.org", "e.*"]),
            ],
            None,
        );
        assert_eq!(site(&n, "a.org"), 1);
        assert_eq!(site(&n, "x.b.org"), 1);
        // `.b.org` was ignored as a whole, so its apex matches nothing.
        assert_eq!(site(&n, "b.org"), 1); // the default
        assert_eq!(site(&n, "c.org"), 1);
        assert_eq!(site(&n, "x.c.org"), 1); // `.c.org` ignored: default
        assert_eq!(site(&n, "x.d.org"), 2);
        assert_eq!(site(&n, "d.org"), 3);
        assert_eq!(site(&n, "e.net"), 2);
        assert_eq!(
            n.conflicts(),
            [
                "conflicting server name \"a.org\", ignored",
                "conflicting server name \".b.org\", ignored",
                "conflicting server name \".c.org\", ignored",
                "conflicting server name \".d.org\", ignored",
                "conflicting server name \"e.*\", ignored",
            ]
        );
    }
}
