//! The log files a configuration names, opened (and created) by the master
//! before it starts or reloads with it, as nginx does: a log that cannot be
//! written stops a start, refuses a reload and fails `-t`, instead of
//! losing its lines unseen.

use std::path::Path;

use crate::config::{Config, LogTarget};

/// Creates every log file of `cfg` (error log, access logs, pool slow
/// logs) and hands it to the workers' user, so a worker that dropped root
/// can still reopen it after a rotation; the first that cannot be opened
/// is the error.
pub fn open_all(cfg: &Config) -> Result<(), String> {
    let mut files: Vec<(&str, &Path)> = Vec::new();
    if let LogTarget::File(p) = &cfg.main.error_log {
        files.push(("error_log", p));
    }
    for s in &cfg.servers {
        if let LogTarget::File(p) = &s.access_log {
            files.push(("access_log", p));
        }
    }
    for p in &cfg.pools {
        if let Some(s) = &p.slowlog {
            files.push(("slowlog", s));
        }
    }
    for (key, p) in files {
        if let Some(d) = p.parent()
            && !d.as_os_str().is_empty()
        {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create the directory of {key} {}: {e}", p.display()))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| format!("cannot open {key} {}: {e}", p.display()))?;
        if let Some(c) = &cfg.main.user
            && nix::unistd::Uid::effective().is_root()
            && let Err(e) = std::os::unix::fs::chown(p, Some(c.uid), Some(c.gid))
        {
            crate::error!("chown({}) for user {} failed: {e}", p.display(), c.name);
        }
    }
    Ok(())
}
