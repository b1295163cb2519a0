//! A `[[server.location]]` as validated: how it matches and what it sets.

use std::path::PathBuf;

use regex::Regex;

use super::template::Template;

/// A location's `match`, as written.
#[derive(Debug, Clone)]
pub enum Match {
    Exact(String),
    /// A prefix; `true` for `^~` (no regex is tried when it is the longest).
    Prefix(String, bool),
    Regex(Regex),
    /// `@name`: no request path selects it; `try_files`, `error_page` and
    /// `X-Accel-Redirect` name it, and the URI stays as it was (nginx's
    /// named location).
    Named(String),
}

impl Match {
    /// Names a template in this location may use as captures.
    pub fn capture_names(&self) -> Vec<String> {
        match self {
            Match::Regex(re) => {
                let mut v: Vec<String> = (1..re.captures_len()).map(|n| n.to_string()).collect();
                v.extend(re.capture_names().flatten().map(str::to_string));
                v
            }
            _ => Vec::new(),
        }
    }

    /// Parses `"= /x"`, `"^~ /x"`, `"~ re"`, `"~* re"` or `"/x"`; the error
    /// says what is wrong (for a bad regex, the regex crate's message).
    pub fn parse(s: &str) -> Result<Match, String> {
        let s = s.trim();
        let (op, rest) = match s.split_once(char::is_whitespace) {
            Some((op @ ("=" | "^~" | "~" | "~*"), rest)) => (op, rest.trim()),
            // nginx's forms without the space: "=/a", "^~/a", "~\.php$".
            _ => ["~*", "~", "^~", "="]
                .into_iter()
                .find_map(|op| s.strip_prefix(op).map(|rest| (op, rest.trim())))
                .unwrap_or(("", s)),
        };
        if op.is_empty() && rest.starts_with('@') {
            let name = &rest[1..];
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
                return Err(format!(
                    "\"{rest}\": a named location is \"@\" and a name of letters, digits, '_', '-' and '.'"
                ));
            }
            return Ok(Match::Named(name.to_string()));
        }
        if rest.is_empty() {
            return Err(
                "is empty; expected \"/prefix\", \"= /exact\", \"^~ /prefix\", \"~ regex\" or \"~* regex\"".into(),
            );
        }
        match op {
            // The flag goes into the pattern, so the lookup can put every
            // location's regex into one set.
            "~" | "~*" => Regex::new(&if op == "~*" {
                format!("(?i){rest}")
            } else {
                rest.to_string()
            })
            .map(Match::Regex)
            .map_err(|e| format!("regex \"{rest}\" does not compile: {e}")),
            _ if !rest.starts_with('/') => Err(format!(
                "\"{rest}\" must start with \"/\" (or be a regex: \"~ {rest}\")"
            )),
            "=" => Ok(Match::Exact(rest.to_string())),
            op => Ok(Match::Prefix(rest.to_string(), op == "^~")),
        }
    }
}

/// What a location answers with.
#[derive(Debug, Clone)]
pub enum Handler {
    /// Files under `root` (the default).
    Static,
    /// A CGI program per request (`cgi = {...}`).
    Cgi(super::Cgi),
    /// Requests passed to a FastCGI application (`fastcgi = {...}`).
    FastCgi(super::fastcgi::FastCgi),
    /// `return = "301 https://..."`, `"403"`, `"200 text"`; 444 closes
    /// without a response.
    Return { code: u16, text: Option<Template> },
    /// The pools' status (`status = true`): text, JSON, OpenMetrics, HTML.
    Status,
}

/// One `[[server.location]]`: settings left `None` are the server's.
#[derive(Debug, Clone)]
pub struct Location {
    /// The `match` as written (for logs).
    pub pattern: String,
    pub matches: Match,
    pub root: Option<PathBuf>,
    pub index: Option<Vec<String>>,
    pub autoindex: Option<bool>,
    pub deny_hidden: Option<bool>,
    /// `Some(None)`: `charset = "off"` here.
    pub charset: Option<Option<String>>,
    pub handler: Handler,
    /// Files tried in order, then the last entry: a URI routed again, or `=code`.
    pub try_files: Vec<Template>,
    /// Replaces the server's whole list when set (nginx's inheritance).
    pub add_header: Option<Vec<super::AddHeader>>,
    /// `Some(None)`: `expires = "off"` here.
    pub expires: Option<Option<super::Expires>>,
    pub default_type: Option<String>,
    /// Replaces the server's rules when set.
    pub access: Option<Vec<super::access::Rule>>,
    /// Replaces the server's pages when set.
    pub error_page: Option<Vec<super::ErrorPage>>,
    /// This location's own `rewrite` rules (the server's run before).
    pub rewrite: Vec<super::Rewrite>,
    /// `alias`: files come from `root` (its fixed directory part) and
    /// this template, plus, in a prefix location, the path after the prefix.
    pub alias: Option<Template>,
    pub gzip_static: Option<bool>,
    /// `Some(None)`: `gzip = false` here.
    pub gzip: Option<Option<super::Gzip>>,
    /// `Some(None)`: `auth_basic = "off"` here.
    pub auth: Option<Option<super::Auth>>,
    /// Reachable only by internal redirects (X-Accel-Redirect, try_files,
    /// error_page, rewrite), never by a client's URI: 404 then.
    pub internal: bool,
}

#[cfg(test)]
mod tests {
    use super::Match;

    fn kind(s: &str) -> String {
        match Match::parse(s) {
            Ok(Match::Exact(p)) => format!("= {p}"),
            Ok(Match::Prefix(p, true)) => format!("^~ {p}"),
            Ok(Match::Prefix(p, false)) => p,
            Ok(Match::Regex(r)) => format!("~ {}", r.as_str()),
            Ok(Match::Named(n)) => format!("@{n}"),
            Err(e) => format!("error: {e}"),
        }
    }

    #[test]
    fn nginx_forms_with_and_without_the_space() {
        for (written, read) in [
            ("= /a", "= /a"),
            ("=/a", "= /a"),
            ("^~ /s/", "^~ /s/"),
            ("^~/s/", "^~ /s/"),
            ("~ \\.php$", "~ \\.php$"),
            ("~\\.php$", "~ \\.php$"),
            ("~* \\.png$", "~ (?i)\\.png$"),
            ("~*\\.png$", "~ (?i)\\.png$"),
            ("/plain", "/plain"),
        ] {
            assert_eq!(kind(written), read, "{written}");
        }
        assert!(kind("=").starts_with("error: is empty"));
        assert!(kind("~*").starts_with("error: is empty"));
        assert!(kind("=a").contains("must start with \"/\""));
        assert_eq!(kind("@app"), "@app");
        assert_eq!(kind(" @php-fpm.1 "), "@php-fpm.1");
        assert!(kind("@").contains("a named location is"));
        assert!(kind("@a b").contains("a named location is"));
    }
}
