//! Detaching from the terminal for `daemon = true`.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::AsRawFd;

use nix::unistd::{ForkResult, dup2, fork, setsid};

/// Forks; the parent exits 0, the child becomes a session leader with its
/// stdio on /dev/null. Must run before any thread is started.
pub fn daemonize() -> io::Result<()> {
    // SAFETY: called from the single-threaded master before anything else
    // runs, so the child inherits no lock held by another thread.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    setsid().map_err(io::Error::from)?;
    let null = OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        dup2(null.as_raw_fd(), fd).map_err(io::Error::from)?;
    }
    Ok(())
}
