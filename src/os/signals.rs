//! Signals as events: they are blocked and read from a signalfd inside the
//! process's own event loop, never handled in an async signal handler.

use std::io;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals a master or worker consumes through its signalfd. SIGALRM
/// and SIGIO are read and ignored (nginx's workers ignore them too): their
/// default action would kill the process.
pub const HANDLED: [Signal; 10] = [
    Signal::SIGCHLD,
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGALRM,
    Signal::SIGIO,
];

fn handled_set() -> SigSet {
    let mut set = SigSet::empty();
    for s in HANDLED {
        set.add(s);
    }
    set
}

/// Blocks the handled signals and returns a nonblocking signalfd for them.
/// Children forked afterwards inherit the block and make their own fd.
pub fn signal_fd() -> io::Result<SignalFd> {
    let set = handled_set();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(io::Error::from)?;
    // What the launcher ignored goes back to the default action (blocked,
    // it never runs; the signal waits for the signalfd): an ignored
    // SIGCHLD makes the kernel reap children itself and send nothing, so
    // dead workers would never be seen or replaced; and ignored
    // dispositions would pass on to every process forked from here.
    for sig in HANDLED {
        // SAFETY: SIG_DFL installs no handler code; the signal is blocked.
        let _ = unsafe { nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigDfl) };
    }
    SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(io::Error::from)
}

/// A pool worker's signalfd: the handled signals but SIGCHLD, which goes
/// back to its default (nothing happens): the worker learns that its
/// program or script ended from their pipes and reaps them itself, and a
/// SIGCHLD per CGI request would wake it once more for nothing.
pub fn signal_fd_without_children() -> io::Result<SignalFd> {
    let fd = signal_fd()?;
    let mut set = handled_set();
    set.remove(Signal::SIGCHLD);
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_UNBLOCK, Some(&chld), None).map_err(io::Error::from)?;
    fd.set_mask(&set).map_err(io::Error::from)?;
    Ok(fd)
}

/// Reads every pending signal.
pub fn drain(fd: &SignalFd) -> Vec<Signal> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
            out.push(sig);
        }
    }
    out
}

/// Asks the kernel to send `sig` to this process when its parent dies, so
/// a worker never outlives a master killed with SIGKILL.
pub fn die_with_parent(sig: Signal) {
    let _ = nix::sys::prctl::set_pdeathsig(sig);
}
