//! Strings with nginx variables (`"https://$host$request_uri"`,
//! `"/index.php?$query_string"`, `"/new/$1"`), parsed once at load so an
//! unknown variable is a config error, not a surprise at request time.

/// A variable a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `$uri`: the decoded, normalised path being served.
    Uri,
    /// `$args` / `$query_string`: the query, without `?`.
    Args,
    /// `$is_args`: `?` when there is a query, else empty.
    IsArgs,
    /// `$request_uri`: the target as the client sent it.
    RequestUri,
    /// `$host`: the Host header (lowercased, no port), else the first server name.
    Host,
    Scheme,
    RemoteAddr,
    RequestMethod,
    /// `$fastcgi_script_name` / `$fastcgi_path_info`: `$uri` split by the
    /// FastCGI location's `split_path_info` (outside one: `$uri` and "").
    FastcgiScriptName,
    FastcgiPathInfo,
    /// A regex capture: `$1`..`$9` or `$name`.
    Capture(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Lit(String),
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template(pub Vec<Part>);

impl Template {
    /// Parses `s`; `captures` are the names a regex of the location defines
    /// (numbers are checked against their count). `$name` and `${name}` both work.
    pub fn parse(s: &str, captures: &[String]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(at) = rest.find('$') {
            lit.push_str(&rest[..at]);
            rest = &rest[at + 1..];
            let (name, after) = if let Some(r) = rest.strip_prefix('{') {
                let end = r.find('}').ok_or_else(|| format!("unclosed \"${{\" in \"{s}\""))?;
                (&r[..end], &r[end + 1..])
            } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
                rest.split_at(1)
            } else {
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                rest.split_at(end)
            };
            if name.is_empty() {
                return Err(format!("a \"$\" without a variable name in \"{s}\""));
            }
            let var = match name {
                "uri" | "document_uri" => Var::Uri,
                "args" | "query_string" => Var::Args,
                "is_args" => Var::IsArgs,
                "request_uri" => Var::RequestUri,
                "host" => Var::Host,
                "scheme" => Var::Scheme,
                "remote_addr" => Var::RemoteAddr,
                "request_method" => Var::RequestMethod,
                "fastcgi_script_name" => Var::FastcgiScriptName,
                "fastcgi_path_info" => Var::FastcgiPathInfo,
                n if captures.iter().any(|c| c == n) => Var::Capture(n.to_string()),
                n if n.bytes().all(|b| b.is_ascii_digit()) => {
                    return Err(format!("\"${n}\" in \"{s}\": the location's regex has no capture {n}"));
                }
                n => return Err(format!("unknown variable \"${n}\" in \"{s}\"")),
            };
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Var(var));
            rest = after;
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template(parts))
    }

    /// The text when the template has no variable.
    pub fn literal(&self) -> Option<&str> {
        match self.0.as_slice() {
            [] => Some(""),
            [Part::Lit(s)] => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_and_captures() {
        let caps = vec!["1".to_string(), "year".to_string()];
        let t = Template::parse("https://$host$request_uri", &caps).unwrap();
        assert_eq!(
            t.0,
            [
                Part::Lit("https://".into()),
                Part::Var(Var::Host),
                Part::Var(Var::RequestUri)
            ]
        );
        let t = Template::parse("/new/$1/${year}x?$args", &caps).unwrap();
        assert_eq!(
            t.0,
            [
                Part::Lit("/new/".into()),
                Part::Var(Var::Capture("1".into())),
                Part::Lit("/".into()),
                Part::Var(Var::Capture("year".into())),
                Part::Lit("x?".into()),
                Part::Var(Var::Args),
            ]
        );
        assert_eq!(Template::parse("=404", &[]).unwrap().literal(), Some("=404"));
        assert!(
            Template::parse("$nope", &caps)
                .unwrap_err()
                .contains("unknown variable \"$nope\"")
        );
        assert!(Template::parse("/$2", &caps).unwrap_err().contains("no capture 2"));
        assert!(Template::parse("/${uri", &caps).is_err());
        assert!(Template::parse("a$", &caps).is_err());
    }
}
