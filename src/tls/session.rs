//! One connection's TLS state, driven by the connection's own reads and
//! writes (rustls does no I/O of its own): the first byte tells TLS from
//! plain HTTP sent to the TLS port, the ClientHello picks the server (SNI),
//! then records are decrypted into the connection's read buffer and
//! responses encrypted on their way out.

use std::io::{self, IoSlice, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::sync::Arc;

use rustls::ServerConnection;
use rustls::server::Acceptor;

use super::Endpoint;

/// Plaintext taken per write: one full record.
const CHUNK: usize = 16 * 1024;
/// Encrypted bytes rustls may hold unsent; beyond this a write takes
/// nothing until they have left (the backpressure of a slow client).
const UNSENT_LIMIT: usize = 32 * 1024;

pub struct Session {
    state: State,
    peer: IpAddr,
    /// The last read of the socket came back short or empty.
    drained: bool,
    /// Decrypted bytes may be waiting in rustls (the last read filled the
    /// caller's buffer).
    buffered: bool,
    /// The socket reached end of file.
    eof: bool,
    /// The peer's close_notify was read (maybe with the request before it,
    /// in one packet: no later event announces it).
    closed: bool,
}

enum State {
    /// Nothing read yet.
    Sniff(Arc<Endpoint>),
    /// Reading the ClientHello.
    Hello(Box<Acceptor>, Arc<Endpoint>),
    Live(Box<ServerConnection>),
    /// A plain HTTP request on the TLS port: answered in plain text (400).
    Plain,
    /// The handshake failed (logged); only a close is left.
    Failed,
}

/// Reads the socket for rustls, noting a short read (the socket is
/// drained, as the plain path judges it).
struct Probe<'a> {
    sock: &'a TcpStream,
    drained: bool,
}

impl Read for Probe<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (&*self.sock).read(buf) {
            Ok(n) => {
                self.drained = n < buf.len();
                Ok(n)
            }
            Err(e) => {
                if e.kind() == io::ErrorKind::WouldBlock {
                    self.drained = true;
                }
                Err(e)
            }
        }
    }
}

/// `MSG_NOSIGNAL` writes: a peer that reset must not raise SIGPIPE
/// (workers ignore it, but a library user's process might not).
struct Out<'a>(&'a TcpStream);

impl Write for Out<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_with_flags(buf, libc::MSG_NOSIGNAL)
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_vectored_with_flags(bufs, libc::MSG_NOSIGNAL)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn would_block() -> io::Error {
    io::ErrorKind::WouldBlock.into()
}

impl Session {
    pub fn new(endpoint: Arc<Endpoint>, peer: IpAddr) -> Session {
        Session {
            state: State::Sniff(endpoint),
            peer,
            drained: false,
            buffered: false,
            eof: false,
            closed: false,
        }
    }

    /// The handshake is done: requests on it are `https`.
    pub fn is_secure(&self) -> bool {
        matches!(self.state, State::Live(_))
    }

    /// A plain HTTP request was sent to this TLS port.
    pub fn is_plain(&self) -> bool {
        matches!(self.state, State::Plain)
    }

    /// Decrypted bytes wait inside (the last read filled its buffer).
    pub fn has_plaintext(&self) -> bool {
        // After close_notify a read returns the end without the socket.
        self.buffered || self.closed
    }

    /// Whether another read may find bytes without waiting for the socket:
    /// decrypted ones inside, or the socket was not seen drained.
    pub fn may_read_more(&self) -> bool {
        self.buffered || !self.drained || self.closed
    }

    /// Like `read(2)` on the socket, with plaintext: `Ok(0)` at the end
    /// (close_notify or end of file), `WouldBlock` when nothing more is
    /// there yet. The handshake runs inside, its answers written as they
    /// come.
    pub fn read(&mut self, sock: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match &mut self.state {
                State::Sniff(_) => {
                    let n = match (&*sock).read(buf) {
                        Ok(n) => n,
                        Err(e) => {
                            if e.kind() == io::ErrorKind::WouldBlock {
                                self.drained = true;
                            }
                            return Err(e);
                        }
                    };
                    self.drained = n < buf.len();
                    if n == 0 {
                        self.eof = true;
                        return Ok(0);
                    }
                    // A TLS handshake record (22), or an SSLv2-style hello
                    // (high bit), as nginx tells them from HTTP.
                    if buf[0] != 0x16 && buf[0] & 0x80 == 0 {
                        self.state = State::Plain;
                        return Ok(n);
                    }
                    let State::Sniff(ep) = std::mem::replace(&mut self.state, State::Failed) else {
                        unreachable!()
                    };
                    self.state = State::Hello(Box::default(), ep);
                    // These bytes came into the caller's buffer: they go to
                    // the ClientHello, and what follows it to the handshake.
                    let mut first: &[u8] = &buf[..n];
                    while !first.is_empty() && matches!(self.state, State::Hello(..) | State::Live(_)) {
                        if self.feed(sock, &mut first)? == 0 {
                            return Err(self.failed("during the TLS handshake", "more bytes than it takes at once"));
                        }
                    }
                }
                State::Hello(..) => {
                    let mut probe = Probe { sock, drained: false };
                    match self.feed(sock, &mut probe) {
                        Ok(0) => {
                            self.eof = true;
                            crate::info!("client {} closed the connection during the TLS handshake", self.peer);
                            self.state = State::Failed;
                            return Ok(0);
                        }
                        Ok(_) => self.drained = probe.drained,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.drained = true;
                            return Err(e);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                State::Live(conn) => {
                    match conn.reader().read(buf) {
                        Ok(n) => {
                            self.buffered = n == buf.len() && n > 0;
                            return Ok(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // End of file without close_notify: an end all the same.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                        Err(e) => return Err(e),
                    }
                    self.buffered = false;
                    if self.eof {
                        return Ok(0);
                    }
                    let handshaking = conn.is_handshaking();
                    let mut probe = Probe { sock, drained: false };
                    match self.feed(sock, &mut probe) {
                        Ok(0) => {
                            self.eof = true;
                            if handshaking {
                                crate::info!("client {} closed the connection during the TLS handshake", self.peer);
                                return Ok(0);
                            }
                        }
                        Ok(_) => self.drained = probe.drained,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            self.drained = true;
                            // Nothing to answer yet: what waits (a ticket) goes now.
                            self.flush(sock)?;
                            return Err(e);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
                State::Plain => {
                    let n = (&*sock).read(buf)?;
                    self.drained = n < buf.len();
                    return Ok(n);
                }
                State::Failed => return Ok(0),
            }
        }
    }

    /// Hands bytes from `rd` (the socket, or what the first read took) to
    /// the ClientHello or to the record layer; `Ok(0)`: nothing came. A
    /// TLS failure is logged and returned as an error.
    fn feed(&mut self, sock: &TcpStream, rd: &mut dyn Read) -> io::Result<usize> {
        match &mut self.state {
            State::Hello(acc, _) => {
                let n = match acc.read_tls(rd) {
                    Ok(n) => n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {
                        return Err(e);
                    }
                    Err(e) => return Err(self.failed("reading the ClientHello", &e.to_string())),
                };
                if n > 0 {
                    self.try_accept(sock)?;
                }
                Ok(n)
            }
            State::Live(conn) => {
                let n = conn.read_tls(rd)?;
                self.process(sock)?;
                Ok(n)
            }
            _ => Ok(0),
        }
    }

    /// With a whole ClientHello: picks the server by SNI and starts the
    /// handshake. A failure is logged and returned as an error.
    fn try_accept(&mut self, sock: &TcpStream) -> io::Result<()> {
        let State::Hello(acc, ep) = &mut self.state else {
            return Ok(());
        };
        let (e, mut alert, when) = match acc.accept() {
            Ok(None) => return Ok(()),
            Ok(Some(accepted)) => {
                let config = ep.config_for(accepted.client_hello().server_name());
                match accepted.into_connection(config) {
                    Ok(mut conn) => {
                        conn.set_buffer_limit(Some(UNSENT_LIMIT));
                        self.state = State::Live(Box::new(conn));
                        // Records that came behind the ClientHello wait in
                        // rustls: no readiness event will announce them.
                        return self.process(sock);
                    }
                    Err((e, alert)) => (e, alert, "during the TLS handshake"),
                }
            }
            Err((e, alert)) => (e, alert, "in the ClientHello"),
        };
        let _ = alert.write(&mut Out(sock));
        Err(self.failed(when, &e.to_string()))
    }

    /// Runs the records rustls holds. A failure sends rustls's alert, is
    /// logged and returned as an error. The server's handshake flights
    /// leave at once; what follows the handshake (a session ticket) shares
    /// the write of the response to the request that came with it.
    fn process(&mut self, sock: &TcpStream) -> io::Result<()> {
        let State::Live(conn) = &mut self.state else {
            return Ok(());
        };
        let handshaking = conn.is_handshaking();
        let state = conn.process_new_packets();
        if let Ok(st) = &state {
            self.closed |= st.peer_has_closed();
        }
        if let Err(e) = state {
            let _ = conn.write_tls(&mut Out(sock));
            let what = if handshaking {
                "during the TLS handshake"
            } else {
                "in a TLS record"
            };
            return Err(self.failed(what, &e.to_string()));
        }
        if handshaking && conn.wants_write() {
            self.flush(sock)?;
        }
        Ok(())
    }

    /// Logs a failed handshake at info (clients do this all the time) and
    /// leaves the session closed.
    fn failed(&mut self, when: &str, why: &str) -> io::Error {
        crate::info!(
            "TLS error with client {} {when}: {}",
            self.peer,
            crate::core::log::Esc(why.as_bytes())
        );
        self.state = State::Failed;
        io::Error::new(io::ErrorKind::InvalidData, "TLS error")
    }

    /// Sends what rustls has encrypted. `Ok(true)`: nothing is left.
    pub fn flush(&mut self, sock: &TcpStream) -> io::Result<bool> {
        let State::Live(conn) = &mut self.state else {
            return Ok(true);
        };
        while conn.wants_write() {
            match conn.write_tls(&mut Out(sock)) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    /// Encrypted bytes wait to be sent.
    pub fn wants_write(&self) -> bool {
        match &self.state {
            State::Live(conn) => conn.wants_write(),
            _ => false,
        }
    }

    /// Like `write(2)`: encrypts up to one record of plaintext and sends
    /// it with what waited before; `WouldBlock` while too much is unsent.
    pub fn write(&mut self, sock: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(sock, &[IoSlice::new(buf)], false)
    }

    /// Like `writev(2)`; the slices leave in shared records. With `more`,
    /// the records wait for the next write (a head before its file body),
    /// as `MSG_MORE` holds them on a plain socket.
    pub fn write_vectored(&mut self, sock: &TcpStream, bufs: &[IoSlice<'_>], more: bool) -> io::Result<usize> {
        let conn = match &mut self.state {
            State::Live(conn) => conn,
            State::Plain => return (&*sock).write_vectored(bufs),
            _ => return Err(io::ErrorKind::NotConnected.into()),
        };
        // At most one record's worth from the first slices (no allocation:
        // responses come as a head and a body).
        let mut take = [IoSlice::new(&[]); 4];
        let mut used = 0;
        let mut room = CHUNK;
        for b in bufs.iter().take(take.len()) {
            if room == 0 {
                break;
            }
            let n = b.len().min(room);
            take[used] = IoSlice::new(&b[..n]);
            used += 1;
            room -= n;
        }
        let take = &take[..used];
        let mut n = conn.writer().write_vectored(take)?;
        if n == 0 && room < CHUNK {
            // Full: what waits must leave first.
            if !self.flush(sock)? {
                return Err(would_block());
            }
            let State::Live(conn) = &mut self.state else {
                unreachable!()
            };
            n = conn.writer().write_vectored(take)?;
        }
        if more {
            return Ok(n);
        }
        match self.flush(sock) {
            Ok(_) => Ok(n),
            // The bytes were taken; the error shows on the next write.
            Err(_) if n > 0 => Ok(n),
            Err(e) => Err(e),
        }
    }

    /// Sends close_notify (once), as far as the socket takes it now.
    pub fn close_notify(&mut self, sock: &TcpStream) {
        if let State::Live(conn) = &mut self.state {
            if !conn.is_handshaking() {
                conn.send_close_notify();
            }
            let _ = self.flush(sock);
        }
    }
}
