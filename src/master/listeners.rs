//! The master's listening sockets: opened once, kept across reloads when
//! their address stays, handed to a new binary on upgrade, or taken over
//! from the previous binary or from systemd socket activation.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, RawFd};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use socket2::Socket;

use crate::os::listen;

/// The variable naming the sockets a new binary inherits: `fd@addr;...`.
pub const INHERIT_ENV: &str = "CORRAL_LISTENERS";

#[derive(Default)]
pub struct Listeners {
    socks: Vec<(SocketAddr, Socket)>,
}

impl Listeners {
    /// Sockets for `addrs`, in that order: taken from `pool` (inherited or
    /// kept) when the address matches, opened otherwise.
    pub fn build(
        addrs: &[SocketAddr],
        backlog: i32,
        pool: &mut Vec<(SocketAddr, Socket)>,
    ) -> Result<Listeners, String> {
        let mut socks = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let sock = match pool.iter().position(|(a, _)| *a == addr) {
                Some(i) => {
                    let (_, s) = pool.remove(i);
                    // A changed backlog applies to a kept socket too.
                    let _ = s.listen(backlog);
                    s
                }
                None => match listen::open(addr, backlog) {
                    Ok(s) => s,
                    Err(e) => {
                        // Give the kept ones back so the caller can restore.
                        pool.extend(socks);
                        return Err(format!("bind() to {addr} failed: {e}"));
                    }
                },
            };
            socks.push((addr, sock));
        }
        Ok(Listeners { socks })
    }

    /// Gives the sockets up (to rebuild a new set from them).
    pub fn into_pool(self) -> Vec<(SocketAddr, Socket)> {
        self.socks
    }

    pub fn take_sockets(&mut self) -> Vec<Socket> {
        std::mem::take(&mut self.socks).into_iter().map(|(_, s)| s).collect()
    }

    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.socks.iter().map(|(a, _)| *a).collect()
    }

    /// The `CORRAL_LISTENERS` value describing these sockets.
    pub fn export(&self) -> String {
        let parts: Vec<String> = self
            .socks
            .iter()
            .map(|(a, s)| format!("{}@{a}", s.as_raw_fd()))
            .collect();
        parts.join(";")
    }

    /// Lets the sockets survive (or not) an `exec`.
    pub fn set_inheritable(&self, yes: bool) {
        for (_, s) in &self.socks {
            let flags = if yes { FdFlag::empty() } else { FdFlag::FD_CLOEXEC };
            let _ = fcntl(s.as_raw_fd(), FcntlArg::F_SETFD(flags));
        }
    }
}

/// A socket handed to this process, and who handed it.
pub struct Inherited {
    pub addr: SocketAddr,
    pub sock: Socket,
    pub from: &'static str,
}

/// Takes over a descriptor passed to us, if it is a TCP socket; anything
/// else is left untouched (never closed: it may not be ours to close).
fn adopt(fd: RawFd, from: &'static str) -> Option<Inherited> {
    fcntl(fd, FcntlArg::F_GETFD).ok()?;
    // SAFETY: the descriptor was passed to this process at exec (by the
    // previous corral binary or by systemd) and nothing else here owns it;
    // it is released again below if it is not a socket.
    let sock = unsafe { Socket::from_raw_fd(fd) };
    let Some(addr) = sock.local_addr().ok().and_then(|a| a.as_socket()) else {
        let _ = sock.into_raw_fd();
        return None;
    };
    let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let _ = sock.set_nonblocking(true);
    Some(Inherited { addr, sock, from })
}

/// Sockets handed to this process: by a previous corral binary
/// (`CORRAL_LISTENERS`) or by systemd (`LISTEN_FDS` for our `LISTEN_PID`).
/// The variables are removed so they do not leak to children. Must run
/// before the process opens any descriptor of its own.
pub fn inherited() -> Vec<Inherited> {
    let mut out = Vec::new();
    if let Ok(v) = std::env::var(INHERIT_ENV) {
        for part in v.split(';').filter(|p| !p.is_empty()) {
            let fd = part.split('@').next().and_then(|f| f.parse::<RawFd>().ok());
            if let Some(s) = fd.filter(|fd| *fd > 2).and_then(|fd| adopt(fd, "inherited socket")) {
                out.push(s);
            }
        }
    }
    let ours = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
    let n = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse::<i32>().ok())
        .unwrap_or(0);
    if ours && n > 0 {
        for fd in 3..3 + n {
            if let Some(s) = adopt(fd, "socket-activated descriptor") {
                out.push(s);
            }
        }
    }
    for var in [INHERIT_ENV, "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        if std::env::var_os(var).is_some() {
            // SAFETY: called by the master at start, before any other
            // thread exists that could read the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
    }
    out
}
