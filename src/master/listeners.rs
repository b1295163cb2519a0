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

/// The listening sockets, in configured address order. With
/// `accept = "reuseport"` an address has one socket per worker (a
/// SO_REUSEPORT group); otherwise usually one, but sockets inherited from
/// such a group are all kept: closing one would drop its queued connections.
#[derive(Default)]
pub struct Listeners {
    socks: Vec<(SocketAddr, Socket)>,
}

/// A worker's share of the listening sockets: each with the number of its
/// address in configured order (what the service's `listener` means).
pub type Share = Vec<(Socket, usize)>;

impl Listeners {
    /// Sockets for `addrs`, in that order: taken from `pool` (inherited or
    /// kept) when the address matches, opened otherwise. With `reuseport`,
    /// each address gets at least `per_addr` sockets in one SO_REUSEPORT
    /// group.
    pub fn build(
        addrs: &[SocketAddr],
        backlog: i32,
        pool: &mut Vec<(SocketAddr, Socket)>,
        reuseport: Option<usize>,
    ) -> Result<Listeners, String> {
        let mut socks: Vec<(SocketAddr, Socket)> = Vec::with_capacity(addrs.len());
        for &addr in addrs {
            let before = socks.len();
            while let Some(i) = pool.iter().position(|(a, _)| *a == addr) {
                let (_, s) = pool.remove(i);
                // A changed backlog applies to a kept socket too.
                let _ = s.listen(backlog);
                socks.push((addr, s));
            }
            let want = reuseport.unwrap_or(1).max(1);
            if let Some(n) = reuseport {
                // A socket kept from another mode joins the group: the kernel
                // forms it when the next member binds.
                for (_, s) in &socks[before..] {
                    let _ = s.set_reuse_port(true);
                }
                if n > 1 && socks.len() - before == 1 && !socks[before].1.reuse_port().unwrap_or(false) {
                    crate::warn!("cannot make the socket for {addr} a SO_REUSEPORT group member");
                }
            }
            while socks.len() - before < want {
                match listen::open(addr, backlog, reuseport.is_some()) {
                    Ok(s) => socks.push((addr, s)),
                    Err(e) if socks.len() > before => {
                        // Workers share the sockets there are (EPOLLEXCLUSIVE).
                        crate::error!(
                            "bind() of another SO_REUSEPORT socket to {addr} failed: {e}; workers share {} socket(s)",
                            socks.len() - before
                        );
                        break;
                    }
                    Err(e) => {
                        // Give the kept ones back so the caller can restore.
                        pool.extend(socks);
                        return Err(format!("bind() to {addr} failed: {e}"));
                    }
                }
            }
        }
        Ok(Listeners { socks })
    }

    /// What worker `slot` of `workers` accepts from. Every worker gets
    /// every socket, except in reuseport mode, where worker i gets the
    /// sockets i, i + workers, ... of each address (so sockets left by a
    /// smaller generation are still served), or shares one when an address
    /// has fewer sockets than workers.
    pub fn share(&mut self, accept: crate::config::Accept, slot: usize, workers: usize) -> Share {
        let addrs = self.addrs();
        let mut out = Vec::new();
        let mut nth = vec![0usize; addrs.len()];
        let counts: Vec<usize> = addrs
            .iter()
            .map(|a| self.socks.iter().filter(|(b, _)| b == a).count())
            .collect();
        for (addr, sock) in std::mem::take(&mut self.socks) {
            let i = addrs.iter().position(|a| *a == addr).unwrap_or(0);
            let j = nth[i];
            nth[i] += 1;
            let mine = match accept {
                crate::config::Accept::Reuseport if counts[i] >= workers => j % workers == slot % workers.max(1),
                crate::config::Accept::Reuseport => j == slot % counts[i],
                _ => true,
            };
            if mine {
                out.push((sock, i));
            }
        }
        out
    }

    /// Every socket with its address number, in order (what the dispatch
    /// messages between master and workers count in).
    pub fn iter(&self) -> impl Iterator<Item = &Socket> {
        self.socks.iter().map(|(_, s)| s)
    }

    /// Gives the sockets up (to rebuild a new set from them).
    pub fn into_pool(self) -> Vec<(SocketAddr, Socket)> {
        self.socks
    }

    pub fn take_sockets(&mut self) -> Vec<Socket> {
        std::mem::take(&mut self.socks).into_iter().map(|(_, s)| s).collect()
    }

    /// The distinct addresses, in order.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        for (a, _) in &self.socks {
            if !out.contains(a) {
                out.push(*a);
            }
        }
        out
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
