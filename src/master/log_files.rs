//! The log files a configuration names, opened (and created) by the master
//! before it starts or reloads with it, as nginx does: a log that cannot be
//! written stops a start, refuses a reload and fails `-t`, instead of
//! losing its lines unseen.

use crate::config::Config;

/// Creates every log file of `cfg` (error log, access logs, pool slow
/// logs) and hands it to the workers' user, so a worker that dropped root
/// can still reopen it after a rotation; the first that cannot be opened
/// is the error.
pub fn open_all(cfg: &Config) -> Result<(), String> {
    for (p, at) in &cfg.log_files {
        if let Some(d) = p.parent()
            && !d.as_os_str().is_empty()
        {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("{at}: cannot create the directory of {}: {e}", p.display()))?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p)
            .map_err(|e| format!("{at}: cannot open {}: {e}", p.display()))?;
        if let Some(c) = &cfg.main.user
            && nix::unistd::Uid::effective().is_root()
            && let Err(e) = std::os::unix::fs::chown(p, Some(c.uid), Some(c.gid))
        {
            crate::error!("chown({}) for user {} failed: {e}", p.display(), c.name);
        }
    }
    Ok(())
}
