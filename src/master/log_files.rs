//! The log files a configuration names, opened (and created) by the master
//! before it starts or reloads with it, as nginx does: a log that cannot be
//! written stops a start, refuses a reload and fails `-t`, instead of
//! losing its lines unseen.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::config::Config;
use crate::core::log;

/// What to do with the files once open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// `corral -t`: a check changes no ownership.
    Keep,
    /// Start, reload, reopen: hand plain files to the workers' user.
    HandOver,
}

/// Creates every log file of `cfg` (error log, access logs, pool slow
/// logs); with [`Owner::HandOver`], hands each to the workers' user, so a
/// worker that dropped root can still reopen it after a rotation. The first
/// that cannot be opened is the error.
pub fn open_all(cfg: &Config, owner: Owner) -> Result<(), String> {
    for (p, at) in &cfg.log_files {
        if let Some(d) = p.parent()
            && !d.as_os_str().is_empty()
        {
            std::fs::create_dir_all(d).map_err(|e| {
                format!(
                    "{at}: cannot create the directory of {}: {}",
                    p.display(),
                    log::dir_error(d, &e)
                )
            })?;
        }
        let (f, via_symlink) =
            open(p).map_err(|e| format!("{at}: cannot open {}: {}", p.display(), log::os_error(&e)))?;
        if owner == Owner::HandOver
            && let Some(c) = &cfg.main.user
            && nix::unistd::Uid::effective().is_root()
        {
            hand_over(&f, p, via_symlink, c);
        }
    }
    Ok(())
}

/// Opens `p` for appending without following a final symlink; a symlink is
/// then opened through (`/dev/stdout`, a link an operator made), and the
/// second value says so.
fn open(p: &Path) -> io::Result<(File, bool)> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    match o.clone().custom_flags(libc::O_NOFOLLOW).open(p) {
        Ok(f) => Ok((f, through_a_symlink(p))),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            // A link an operator made (`/dev/stdout`) sits in a directory
            // only root may change; one in a directory others can write
            // may have been planted there (CVE-2016-1247): followed as
            // root it would create or append to any file.
            if nix::unistd::Uid::effective().is_root() && !only_root_writes(p.parent()) {
                return Err(io::Error::other(
                    "it is a symlink in a directory other users can write: not followed (make the link in a directory only root can change, or name its target)",
                ));
            }
            Ok((o.open(p)?, true))
        }
        Err(e) => Err(e),
    }
}

/// Whether only root can add or replace entries in `dir` (owned by root,
/// not writable by group or others unless sticky: there a link stays its
/// owner's, and the kernel's protected_symlinks applies).
fn only_root_writes(dir: Option<&Path>) -> bool {
    let dir = match dir {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::metadata(dir).is_ok_and(|m| m.uid() == 0 && (m.mode() & 0o022 == 0 || m.mode() & 0o1000 != 0))
}

/// Whether a directory above `p` is a symlink (O_NOFOLLOW covers the last
/// component only): a link planted as `logs/sub` would lead the hand-over
/// to a file in a directory the workers' user may not write.
fn through_a_symlink(p: &Path) -> bool {
    use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    match openat2(libc::AT_FDCWD, p, how) {
        Ok(fd) => {
            let _ = nix::unistd::close(fd);
            false
        }
        // ELOOP: a symlink on the way; anything else: not provably plain.
        Err(_) => true,
    }
}

/// fchown of the open file, only for a regular file reached without a
/// symlink and with no other name: a link planted where the log goes (in a
/// directory the workers' user can write, CVE-2016-1247's pattern), a
/// terminal or `/dev/null` must never change owner.
fn hand_over(f: &File, p: &Path, via_symlink: bool, user: &crate::config::Credentials) {
    let Ok(m) = f.metadata() else { return };
    if via_symlink || !m.file_type().is_file() || m.nlink() > 1 {
        crate::info!(
            "{} is not a plain file of its own (a symlink, a device, a pipe or a hard link): its owner is left as it is",
            p.display()
        );
        return;
    }
    if m.uid() == user.uid && m.gid() == user.gid {
        return;
    }
    if let Err(e) = nix::unistd::fchown(
        f.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(user.uid)),
        Some(nix::unistd::Gid::from_raw(user.gid)),
    ) {
        crate::error!("fchown({}) for user {} failed: {e}", p.display(), user.name);
    }
}

/// `daemon = true` with the error log on stderr or stdout: the daemon's are
/// `/dev/null`, so nothing it logs would be seen (checked at `-t` and start).
pub fn lost_log_warning(cfg: &Config) -> Option<String> {
    let lost = matches!(
        cfg.main.error_log,
        crate::config::LogTarget::Stderr | crate::config::LogTarget::Stdout
    );
    (cfg.main.daemon && lost).then(|| {
        format!(
            "daemon = true with error_log = \"{}\": the daemon's stdio is /dev/null, so nothing would be logged; set error_log to a file",
            cfg.main.error_log
        )
    })
}
