//! Password files for `auth_basic`, as Apache's `htpasswd` writes them:
//! `user:hash` lines with bcrypt (`$2y$`), `{SHA}` (base64 SHA-1) or apr1
//! (`$apr1$`, Apache's MD5 crypt) hashes. Read at config load, so a
//! missing or malformed file is a `corral -t` error.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use sha1::Sha1;

/// bcrypt costs above this would let each request burn a lot of CPU
/// (cost 12 is about a quarter of a second); `htpasswd -B` uses 5.
const MAX_BCRYPT_COST: u32 = 12;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Hash {
    Bcrypt(String),
    Sha1([u8; 20]),
    Apr1 { salt: String, hash: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Htpasswd {
    users: Vec<(String, Hash)>,
}

impl Htpasswd {
    pub fn load(path: &std::path::Path) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Htpasswd::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Htpasswd, String> {
        let mut users = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.trim_start().starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| format!("line {}: expected user:hash", n + 1))?;
            let hash = parse_hash(hash).map_err(|e| format!("line {} ({user}): {e}", n + 1))?;
            users.push((user.to_string(), hash));
        }
        Ok(Htpasswd { users })
    }

    /// The user an `Authorization: Basic ...` value names, if its password
    /// is right (RFC 7617; the scheme is case-insensitive).
    pub fn check(&self, authorization: &str) -> Option<&str> {
        self.verify_basic(authorization).ok()
    }

    /// [`check`](Self::check), saying why not: `Err(Some(user))` when a
    /// user was named (not found, or a wrong password: `Mismatch`),
    /// `Err(None)` when the value holds no Basic credentials.
    pub fn verify_basic(&self, authorization: &str) -> Result<&str, Refusal> {
        let (user, password) = basic_credentials(authorization).ok_or(Refusal::Malformed)?;
        let Some((name, hash)) = self.users.iter().find(|(u, _)| *u == user) else {
            return Err(Refusal::NoSuchUser(user));
        };
        if verify(hash, password.as_bytes()) {
            Ok(name.as_str())
        } else {
            Err(Refusal::Mismatch(user))
        }
    }
}

/// Why credentials were refused (for the error log).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    NoSuchUser(String),
    Mismatch(String),
}

/// The user and password of an `Authorization: Basic ...` value, unchecked.
pub fn basic_credentials(authorization: &str) -> Option<(String, String)> {
    let (scheme, cred) = authorization.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = STANDARD.decode(cred.trim()).ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (user, password) = raw.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

fn parse_hash(h: &str) -> Result<Hash, String> {
    if let Some(rest) = h.strip_prefix("{SHA}") {
        let bytes = STANDARD
            .decode(rest)
            .map_err(|_| "bad base64 in a {SHA} hash".to_string())?;
        return bytes
            .try_into()
            .map(Hash::Sha1)
            .map_err(|_| "a {SHA} hash must be 20 bytes".to_string());
    }
    if let Some(rest) = h.strip_prefix("$apr1$") {
        let (salt, hash) = rest.split_once('$').ok_or("malformed $apr1$ hash")?;
        if salt.is_empty() || salt.len() > 8 || hash.len() != 22 {
            return Err("malformed $apr1$ hash".into());
        }
        return Ok(Hash::Apr1 {
            salt: salt.to_string(),
            hash: hash.to_string(),
        });
    }
    if ["$2y$", "$2a$", "$2b$"].iter().any(|p| h.starts_with(p)) {
        let cost: u32 = h
            .get(4..6)
            .and_then(|c| c.parse().ok())
            .ok_or("malformed bcrypt hash")?;
        if cost > MAX_BCRYPT_COST {
            return Err(format!(
                "bcrypt cost {cost} is above {MAX_BCRYPT_COST}: every request would spend seconds of CPU (use htpasswd -B -C 5..{MAX_BCRYPT_COST})"
            ));
        }
        return Ok(Hash::Bcrypt(h.to_string()));
    }
    if h.len() == 13 {
        return Err("DES crypt is not supported; re-create the entry with htpasswd -B".into());
    }
    Err("unknown hash format (expected bcrypt, {SHA} or $apr1$; re-create with htpasswd -B)".into())
}

fn verify(hash: &Hash, password: &[u8]) -> bool {
    match hash {
        Hash::Bcrypt(h) => bcrypt::verify(password, h).unwrap_or(false),
        Hash::Sha1(want) => same(&Sha1::digest(password)[..], want),
        Hash::Apr1 { salt, hash } => same(apr1(password, salt.as_bytes()).as_bytes(), hash.as_bytes()),
    }
}

/// Compares without stopping at the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Apache's apr1: the FreeBSD MD5 crypt with the magic `$apr1$`; returns
/// the 22 characters after the salt.
fn apr1(pw: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let mut alt = Md5::new();
    alt.update(pw);
    alt.update(salt);
    alt.update(pw);
    let alt = alt.finalize();
    let mut ctx = Md5::new();
    ctx.update(pw);
    ctx.update(MAGIC);
    ctx.update(salt);
    let mut left = pw.len();
    while left > 0 {
        ctx.update(&alt[..left.min(16)]);
        left = left.saturating_sub(16);
    }
    let mut i = pw.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&pw[..1]);
        }
        i >>= 1;
    }
    let mut fin = ctx.finalize();
    for r in 0..1000 {
        let mut c = Md5::new();
        if r & 1 == 1 {
            c.update(pw);
        } else {
            c.update(fin);
        }
        if r % 3 != 0 {
            c.update(salt);
        }
        if r % 7 != 0 {
            c.update(pw);
        }
        if r & 1 == 1 {
            c.update(fin);
        } else {
            c.update(pw);
        }
        fin = c.finalize();
    }
    const ITOA64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out.push(ITOA64[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let f = |i: usize| fin[i] as u32;
    put(f(0) << 16 | f(6) << 8 | f(12), 4);
    put(f(1) << 16 | f(7) << 8 | f(13), 4);
    put(f(2) << 16 | f(8) << 8 | f(14), 4);
    put(f(3) << 16 | f(9) << 8 | f(15), 4);
    put(f(4) << 16 | f(10) << 8 | f(5), 4);
    put(f(11), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user_pass: &str) -> String {
        format!("Basic {}", STANDARD.encode(user_pass))
    }

    #[test]
    fn apr1_matches_openssl_and_htpasswd() {
        // `openssl passwd -apr1 -salt abcdefgh secret`
        assert_eq!(apr1(b"secret", b"abcdefgh"), "h9FWgUz3n9YxylKLlR5SQ/");
        // `htpasswd -nbm carol 'se:cret3'`
        assert_eq!(apr1(b"se:cret3", b"anTEhENe"), "INptIR5rXl8xPHD2dVfjQ1");
    }

    #[test]
    fn each_format_and_bad_values() {
        let f = Htpasswd::parse(
            "# users\n\ncarol:$apr1$anTEhENe$INptIR5rXl8xPHD2dVfjQ1\nbob:{SHA}xjbo4jj9evl+LlAPjG8PTAvtr7A=\n",
        )
        .unwrap();
        assert_eq!(
            f.check(&basic("carol:se:cret3")),
            Some("carol"),
            "a password may hold ':'"
        );
        assert_eq!(f.check(&basic("carol:wrong")), None);
        // {SHA} of "secret2"
        assert_eq!(f.check(&basic("bob:secret2")), Some("bob"));
        assert_eq!(
            f.check(&format!("basic {}", STANDARD.encode("bob:secret2"))),
            Some("bob")
        );
        assert_eq!(f.check(&basic("nobody:secret2")), None);
        for bad in [
            "",
            "Basic",
            "Basic !!!",
            "Bearer abc",
            &format!("Basic {}", STANDARD.encode("nocolon")),
        ] {
            assert_eq!(f.check(bad), None, "{bad}");
        }
        assert!(Htpasswd::parse("alice\n").unwrap_err().contains("line 1"));
        assert!(Htpasswd::parse("old:abJnggxhB/yWI\n").unwrap_err().contains("DES"));
        assert!(
            Htpasswd::parse("x:$2y$15$abcdefghijklmnopqrstuu5Xv1vK1p9RkqgGqWmqkqf1aQ0bq7Ryy\n")
                .unwrap_err()
                .contains("cost 15")
        );
    }
}
