//! What the workers' user will need at request time, checked when the
//! configuration is loaded by a root master (at `-t`, start and reload):
//! a path it cannot use fails only when a request comes (403, 500, 502),
//! so it is said up front, as warnings naming the path and the user.
//! Permission bits only (ACLs and capabilities are not read).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::{Config, Credentials};

const R: u32 = 4;
const W: u32 = 2;
const X: u32 = 1;

/// Warns about every path of `cfg` its workers' user cannot use.
pub fn check(cfg: &Config, file: &str) {
    let Some(user) = &cfg.main.user else { return };
    if user.uid == 0 || !nix::unistd::Uid::effective().is_root() {
        return;
    }
    let groups = groups_of(user);
    let who = |path: &Path, what: &str, outcome: &str| {
        crate::warn!(
            "{file}: the workers' user {} cannot {what} {} ({outcome}); see `user`",
            user.name,
            path.display()
        );
    };
    let temp = &cfg.http.client_body_temp_path;
    if !may(user, &groups, temp, W | X) {
        who(
            temp,
            "write in client_body_temp_path",
            "request bodies that must be spooled get 500",
        );
    }
    for s in &cfg.servers {
        if s.root.is_dir() && !may(user, &groups, &s.root, R | X) {
            who(&s.root, "read the root", "its files get 403");
        }
        for c in &s.cgi {
            if c.dir.is_dir() && !may(user, &groups, &c.dir, R | X) {
                who(&c.dir, "read the CGI directory", "its scripts get 403");
            }
        }
    }
    for u in &cfg.upstreams {
        for srv in &u.servers {
            if let super::fastcgi::Address::Unix(p) = &srv.address
                && p.exists()
                && !may(user, &groups, p, W)
            {
                who(p, "connect to the FastCGI socket", "requests get 502");
            }
        }
    }
}

fn groups_of(user: &Credentials) -> Vec<u32> {
    let name = std::ffi::CString::new(user.name.clone()).unwrap_or_default();
    nix::unistd::getgrouplist(&name, nix::unistd::Gid::from_raw(user.gid))
        .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_else(|_| vec![user.gid])
}

/// Whether `user` may reach `path` (search on every directory above it)
/// and use it as `want` (R, W, X bits).
fn may(user: &Credentials, groups: &[u32], path: &Path, want: u32) -> bool {
    let Ok(abs) = std::fs::canonicalize(path) else {
        return true;
    };
    let allowed = |p: &Path, want: u32| {
        let Ok(m) = std::fs::metadata(p) else { return true };
        let bits = if m.uid() == user.uid {
            m.mode() >> 6
        } else if groups.contains(&m.gid()) {
            m.mode() >> 3
        } else {
            m.mode()
        } & 7;
        bits & want == want
    };
    abs.ancestors().skip(1).all(|d| allowed(d, X)) && allowed(&abs, want)
}
