//! Accept-queue depth of listening sockets: how many connections wait for a
//! worker to accept() them, and how many the kernel queues before new
//! connections stall or fail.

use std::mem::{MaybeUninit, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;
use socket2::{Domain, SockRef};

/// A listening socket's accept queue: connections waiting for accept() and the backlog limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub waiting: u32,
    pub backlog: u32,
}

/// Reads the accept queue of the listening socket `fd` (TCP over IPv4/IPv6,
/// or a unix stream/seqpacket socket).
///
/// Returns None when the kernel cannot tell: `fd` is not a listening socket
/// (connected and unbound sockets included), or sock_diag netlink is
/// unavailable for unix sockets.
pub fn read(fd: BorrowedFd<'_>) -> Option<Queue> {
    read_many(&[fd]).pop().flatten()
}

/// [`read`] for several sockets at once; the unix ones share one netlink dump.
pub fn read_many(fds: &[BorrowedFd<'_>]) -> Vec<Option<Queue>> {
    let mut out = vec![None; fds.len()];
    let mut unix = Vec::new(); // (index in `fds`, socket inode)
    for (i, fd) in fds.iter().enumerate() {
        let sock = SockRef::from(fd);
        if !sock.is_listener().unwrap_or(false) {
            continue;
        }
        match sock.domain() {
            Ok(d) if d == Domain::IPV4 || d == Domain::IPV6 => out[i] = tcp(*fd),
            Ok(d) if d == Domain::UNIX => {
                if let Ok(st) = nix::sys::stat::fstat(fd.as_raw_fd()) {
                    unix.push((i, st.st_ino));
                }
            }
            _ => {}
        }
    }
    if !unix.is_empty() {
        let mut left = unix.len();
        unix_dump(|ino, q| {
            for &(i, _) in unix.iter().filter(|&&(_, want)| want == ino) {
                if out[i].replace(q).is_none() {
                    left -= 1;
                }
            }
            left == 0
        });
    }
    out
}

const TCP_LISTEN: u8 = 10;

/// [`read`] for a socket known to be a TCP listener: one system call.
pub fn read_tcp(fd: BorrowedFd<'_>) -> Option<Queue> {
    tcp(fd)
}

/// For a LISTEN socket the kernel reuses tcpi_unacked for the accept queue
/// length and tcpi_sacked for the backlog.
fn tcp(fd: BorrowedFd<'_>) -> Option<Queue> {
    let mut info = MaybeUninit::<libc::tcp_info>::zeroed();
    let mut len = size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: `info` is a writable buffer of `len` bytes that outlives the
    // call; tcp_info holds only integers, so bytes an older kernel leaves
    // unwritten stay zero, which is a valid value.
    let info = unsafe {
        let ptr = info.as_mut_ptr().cast();
        let rc = libc::getsockopt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_INFO, ptr, &mut len);
        if rc != 0 {
            return None;
        }
        info.assume_init()
    };
    // tcpi_sacked ends at byte 32; a shorter answer would leave it unset.
    (len >= 32 && info.tcpi_state == TCP_LISTEN).then_some(Queue {
        waiting: info.tcpi_unacked,
        backlog: info.tcpi_sacked,
    })
}

// Netlink / sock_diag ABI (linux/netlink.h, linux/sock_diag.h, linux/unix_diag.h).
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const UDIAG_SHOW_RQLEN: u32 = 0x10;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_MSG_LEN: usize = 16;
const NLA_TYPE_MASK: u16 = 0x3fff;
const SEQ: u32 = 1;

/// Dumps every listening unix socket in this network namespace, calling
/// `each(inode, queue)` until it returns true. A dump (rather than an
/// exact-inode request) lets [`read_many`] serve all pools with one query.
/// Returns None if netlink failed before the dump was complete.
fn unix_dump(mut each: impl FnMut(u64, Queue) -> bool) -> Option<()> {
    let (nl, raw, cloexec) = (AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC);
    let sock = socket(nl, raw, cloexec, SockProtocol::NetlinkSockDiag).ok()?;
    // Never let a status request hang on the kernel.
    setsockopt(&sock, sockopt::ReceiveTimeout, &TimeVal::new(0, 200_000)).ok()?;
    sendto(sock.as_raw_fd(), &request(), &NetlinkAddr::new(0, 0), MsgFlags::empty()).ok()?;
    // The kernel caps dump chunks at 32 KiB, so whole messages always fit.
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match recv(sock.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(0) => return None,
            Ok(n) => n,
            // SO_RCVTIMEO makes recv fail with EINTR even under SA_RESTART.
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        };
        if parse(buf.get(..n)?, &mut each)? {
            return Some(());
        }
    }
}

/// nlmsghdr + struct unix_diag_req asking for all listeners' queue lengths.
fn request() -> Vec<u8> {
    let mut r = ((NLMSG_HDRLEN + 24) as u32).to_ne_bytes().to_vec();
    r.extend(
        [SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP]
            .map(u16::to_ne_bytes)
            .concat(),
    );
    r.extend([SEQ, 0].map(u32::to_ne_bytes).concat()); // seq, pid (0: kernel fills in ours)
    r.extend([libc::AF_UNIX as u8, 0, 0, 0]); // family, protocol, pad
    // udiag_states, udiag_ino (ignored by dumps), udiag_show, udiag_cookie = INET_DIAG_NOCOOKIE
    r.extend(
        [1 << TCP_LISTEN, 0, UDIAG_SHOW_RQLEN, !0, !0]
            .map(u32::to_ne_bytes)
            .concat(),
    );
    r
}

/// Parses one recv() worth of netlink messages. Some(true): finished (dump
/// done or `each` satisfied); Some(false): more to read; None: error reply or
/// malformed input.
fn parse(mut buf: &[u8], each: &mut impl FnMut(u64, Queue) -> bool) -> Option<bool> {
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32_at(buf, 0)? as usize;
        let msg = buf.get(NLMSG_HDRLEN..len)?; // also rejects len < NLMSG_HDRLEN
        if u32_at(buf, 8)? != SEQ {
            return None;
        }
        match u16_at(buf, 4)? {
            NLMSG_DONE => return Some(true),
            NLMSG_ERROR => return None,
            SOCK_DIAG_BY_FAMILY => {
                if let Some((ino, q)) = parse_diag(msg)
                    && each(ino, q)
                {
                    return Some(true);
                }
            }
            _ => {}
        }
        buf = buf.get(align4(len)..).unwrap_or_default();
    }
    Some(false)
}

/// struct unix_diag_msg followed by rtattrs; only listeners carry the
/// accept queue in UNIX_DIAG_RQLEN (for others it is the receive queue).
fn parse_diag(msg: &[u8]) -> Option<(u64, Queue)> {
    let (&family, &state) = (msg.first()?, msg.get(2)?);
    if family != libc::AF_UNIX as u8 || state != TCP_LISTEN {
        return None;
    }
    let ino = u64::from(u32_at(msg, 4)?);
    let mut attrs = msg.get(UNIX_DIAG_MSG_LEN..)?;
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let body = attrs.get(4..len)?;
        if u16_at(attrs, 2)? & NLA_TYPE_MASK == UNIX_DIAG_RQLEN {
            let (waiting, backlog) = (u32_at(body, 0)?, u32_at(body, 4)?);
            return Some((ino, Queue { waiting, backlog }));
        }
        attrs = attrs.get(align4(len)..).unwrap_or_default();
    }
    None
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{SockAddr, Socket, Type};
    use std::os::fd::{AsFd, OwnedFd};
    use std::os::unix::net::{UnixListener, UnixStream};
    use std::time::{Duration, Instant};
    use std::{net::TcpListener, net::TcpStream};

    fn q(waiting: u32) -> Option<Queue> {
        Some(Queue { waiting, backlog: 16 })
    }

    /// Polls because a TCP handshake's last ACK may land after connect() returns.
    fn read_until(fd: BorrowedFd<'_>, want: Option<Queue>) -> Option<Queue> {
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut got = read(fd);
        while got != want && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
            got = read(fd);
        }
        got
    }

    fn listener(domain: Domain, addr: SockAddr) -> OwnedFd {
        let sock = Socket::new(domain, Type::STREAM, None).unwrap();
        sock.bind(&addr).unwrap();
        sock.listen(16).unwrap();
        sock.into()
    }

    #[test]
    fn tcp_listener() {
        let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
        let listener = TcpListener::from(listener(Domain::IPV4, addr.into()));
        assert_eq!(read(listener.as_fd()), q(0));
        let addr = listener.local_addr().unwrap();
        let clients: Vec<_> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
        assert_eq!(read_until(listener.as_fd(), q(3)), q(3));
        let _accepted = listener.accept().unwrap();
        assert_eq!(read(listener.as_fd()), q(2));
        // Not listening: None rather than a misleading 0.
        assert_eq!(read(clients[0].as_fd()), None);
    }

    #[test]
    fn unix_listener() {
        let path = std::env::temp_dir().join(format!("corral-lq-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let addr = SockAddr::unix(&path).unwrap();
        let listener = UnixListener::from(listener(Domain::UNIX, addr));
        assert_eq!(read(listener.as_fd()), q(0));
        let clients: Vec<_> = (0..3).map(|_| UnixStream::connect(&path).unwrap()).collect();
        assert_eq!(read(listener.as_fd()), q(3));
        let _accepted = listener.accept().unwrap();
        assert_eq!(read(listener.as_fd()), q(2));
        assert_eq!(read(clients[0].as_fd()), None);
        let (a, _b) = UnixStream::pair().unwrap();
        let many = read_many(&[listener.as_fd(), a.as_fd(), listener.as_fd()]);
        assert_eq!(many, [q(2), None, q(2)]);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn parser_survives_truncated_and_odd_input() {
        let hdr = |len: usize, ty: u16| {
            let mut h = (len as u32).to_ne_bytes().to_vec();
            h.extend([ty, 0].map(u16::to_ne_bytes).concat());
            h.extend([SEQ, 0].map(u32::to_ne_bytes).concat());
            h
        };
        let mut diag = vec![libc::AF_UNIX as u8, 1, TCP_LISTEN, 0];
        diag.extend([42u32, 0, 0].map(u32::to_ne_bytes).concat());
        diag.extend([12u16, UNIX_DIAG_RQLEN].map(u16::to_ne_bytes).concat());
        diag.extend([5u32, 7].map(u32::to_ne_bytes).concat());
        let mut buf = hdr(NLMSG_HDRLEN + diag.len(), SOCK_DIAG_BY_FAMILY);
        buf.extend(diag);
        buf.extend(hdr(NLMSG_HDRLEN, NLMSG_DONE));
        let mut seen = Vec::new();
        let got = parse(&buf, &mut |ino, q| {
            seen.push((ino, q));
            false
        });
        assert_eq!(
            (got, &seen[..]),
            (Some(true), &[(42, Queue { waiting: 5, backlog: 7 })][..])
        );
        for cut in 0..buf.len() {
            let _ = parse(&buf[..cut], &mut |_, _| false);
            let mut odd = buf.clone();
            odd[cut] ^= 0xff;
            let _ = parse(&odd, &mut |_, _| false);
        }
    }
}
