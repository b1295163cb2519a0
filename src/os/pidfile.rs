//! The pid file: written at start, read by `corral -s`, removed at exit.

use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// Writes `pid` to `path` without ever following what sits there: a
/// temporary file in the same directory (created with `O_EXCL`, mode
/// 0644) renamed over it, so a symlink or file planted at the path is
/// replaced, never written through. A root master also refuses a directory
/// another user could plant things in.
pub fn write(path: &Path, pid: u32) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let euid = nix::unistd::Uid::effective();
    if euid.is_root() {
        check_dir(dir, euid.as_raw())?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{pid}.tmp"));
    let mut open = std::fs::OpenOptions::new();
    open.write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW);
    let mut f = match open.open(&tmp) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // Left by a crash, or planted: removed (unlink never follows).
            std::fs::remove_file(&tmp)?;
            open.open(&tmp)?
        }
        r => r?,
    };
    let written = f
        .write_all(format!("{pid}\n").as_bytes())
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A root master's pid-file directory must be its own (or root's) and
/// writable by no one else, unless sticky (as `/tmp`): otherwise another
/// user could swap the file under it or make it name another process.
fn check_dir(dir: &Path, euid: u32) -> io::Result<()> {
    let m = std::fs::metadata(dir)?;
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    if m.uid() != euid && m.uid() != 0 {
        return refuse(format!(
            "its directory {} belongs to uid {}, not to this master (uid {euid}); remove it or choose another \"pid\"",
            dir.display(),
            m.uid()
        ));
    }
    if m.mode() & 0o022 != 0 && m.mode() & 0o1000 == 0 {
        return refuse(format!(
            "its directory {} is writable by group or others (mode {:o}) and not sticky; make it 0755 or choose another \"pid\"",
            dir.display(),
            m.mode() & 0o7777
        ));
    }
    Ok(())
}

pub fn read(path: &Path) -> io::Result<i32> {
    let text = std::fs::read_to_string(path)?;
    text.trim().parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} does not hold a pid", path.display()),
        )
    })
}

/// Removes the pid file if it still names `pid` (a newer master may own it).
pub fn remove_if_ours(path: &Path, pid: u32) {
    if read(path).ok() == Some(pid as i32) {
        let _ = std::fs::remove_file(path);
    }
}

/// The pid in `path` if it names a live corral process.
pub fn live_master(path: &Path) -> Option<i32> {
    let pid = read(path).ok()?;
    if pid as u32 == std::process::id() {
        return None;
    }
    is_corral(pid).then_some(pid)
}

/// Whether `pid` is a live corral master: its title ("corral: master
/// process ..."), or a corral process that has not set one yet. A worker
/// ("corral: worker process") or a pool worker is not: a pid file naming
/// one must not get it signalled as if it were the master.
pub fn is_corral(pid: i32) -> bool {
    // A zombie (dead, not reaped yet) has an empty cmdline and still its
    // comm: it is not running.
    if zombie(pid) {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let title = String::from_utf8_lossy(&cmdline);
    if title.starts_with("corral: ") {
        return title.starts_with("corral: master process");
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    comm.trim() == "corral"
}

/// Whether `pid` has exited and waits to be reaped (state Z in its stat).
fn zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "PID (comm) STATE ...": comm may hold spaces and parentheses.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}
