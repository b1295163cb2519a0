//! Detaching from the terminal for `daemon = true`.
//!
//! The launching process waits until the daemon reports, through a pipe,
//! that it is listening (exit 0) or why it could not start (the reason on
//! its stderr, exit 1), so a start script sees the failure.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;

use nix::fcntl::OFlag;
use nix::unistd::{ForkResult, dup2, fork, pipe2, setsid};

/// The daemon's end of the pipe to the launching process, until it reported.
static REPORT: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// The first byte the daemon writes: it started; anything else starts
/// the reason it did not.
const READY: u8 = 0;

/// Forks; the parent waits for the child's report and exits with it, the
/// child becomes a session leader with its stdio on /dev/null. Must run
/// before any thread is started.
pub fn daemonize() -> io::Result<()> {
    let (r, w) = pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: called from the single-threaded master before anything else
    // runs, so the child inherits no lock held by another thread.
    match unsafe { fork() }.map_err(io::Error::from)? {
        ForkResult::Parent { .. } => {
            drop(w);
            std::process::exit(wait_for_report(r));
        }
        ForkResult::Child => drop(r),
    }
    *REPORT.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
    setsid().map_err(io::Error::from)?;
    let null = OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for fd in 0..=2 {
        dup2(null.as_raw_fd(), fd).map_err(io::Error::from)?;
    }
    Ok(())
}

/// In the launching process: 0 once the daemon says it started, else 1
/// with its reason on stderr.
fn wait_for_report(r: OwnedFd) -> i32 {
    let mut f = File::from(r);
    let mut first = [0u8; 1];
    // EOF without a word: the daemon died before it could say why.
    let n = loop {
        match f.read(&mut first) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            r => break r.unwrap_or(0),
        }
    };
    if n == 1 && first[0] == READY {
        return 0;
    }
    let mut rest = Vec::new();
    let _ = f.read_to_end(&mut rest);
    let mut msg = if n == 1 { vec![first[0]] } else { Vec::new() };
    msg.extend_from_slice(&rest);
    let msg = String::from_utf8_lossy(&msg);
    if msg.trim().is_empty() {
        eprintln!("corral: [emerg] the daemon exited before it started; see the error log");
    } else {
        eprintln!("corral: [emerg] {}", msg.trim_end());
    }
    1
}

/// The daemon is listening and wrote its pid file: the launching process
/// exits 0. Closes the pipe, so no worker forked later holds it.
pub fn report_ready() {
    report(&[READY]);
}

/// The daemon cannot start: the launching process prints `msg` and exits 1.
pub fn report_failure(msg: &str) {
    report(msg.as_bytes());
}

fn report(bytes: &[u8]) {
    if let Some(w) = REPORT.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = File::from(w).write_all(bytes);
    }
}
