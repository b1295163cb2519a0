//! Listening sockets, opened by the master before it forks so every worker
//! (and every respawned worker) inherits them.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Opens a nonblocking, close-on-exec listening TCP socket on `addr`; with
/// `reuseport`, one member of a SO_REUSEPORT group (the kernel spreads
/// new connections over the members by a hash of the addresses).
pub fn open(addr: SocketAddr, backlog: i32, reuseport: bool) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if reuseport {
        sock.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        // `[::]:80` and `0.0.0.0:80` can then both be configured, as in nginx.
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}
