//! Per-connection socket calls used on the hot path.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;

use socket2::Socket;

/// One `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`.
pub fn accept(listener: &Socket) -> io::Result<(TcpStream, SocketAddr)> {
    let (sock, addr) = listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let addr = addr
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an IP peer"))?;
    Ok((TcpStream::from(sock), addr))
}

/// `sendfile` from `file` at `*offset`, advancing it.
pub fn sendfile(out: &TcpStream, file: &std::fs::File, offset: &mut i64, count: usize) -> io::Result<usize> {
    nix::sys::sendfile::sendfile64(out.as_fd(), file.as_fd(), Some(offset), count).map_err(io::Error::from)
}

/// `send(MSG_MORE)`: the head waits in the kernel for the `sendfile` body
/// so both leave in full segments.
pub fn send_more(out: &TcpStream, buf: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(out).send_with_flags(buf, libc::MSG_MORE | libc::MSG_NOSIGNAL)
}
