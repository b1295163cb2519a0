//! The pid file: written at start, read by `corral -s`, removed at exit.

use std::io;
use std::path::Path;

pub fn write(path: &Path, pid: u32) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, format!("{pid}\n"))
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
