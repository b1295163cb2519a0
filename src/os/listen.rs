//! Listening sockets, opened by the master before it forks so every worker
//! (and every respawned worker) inherits them.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Opens a nonblocking, close-on-exec listening TCP socket on `addr`.
pub fn open(addr: SocketAddr, backlog: i32) -> io::Result<Socket> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `[::]:80` and `0.0.0.0:80` can then both be configured, as in nginx.
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())?;
    sock.listen(backlog)?;
    sock.set_nonblocking(true)?;
    Ok(sock)
}
