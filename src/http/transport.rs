//! The byte pipe under an HTTP connection: the socket itself, or a TLS
//! session over it. The connection reads and writes through this and knows
//! nothing of records or handshakes; the plain path costs one branch.

use std::fs::File;
use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::FileExt;

use crate::os::net;
use crate::tls::Session;

pub struct Transport {
    pub sock: TcpStream,
    tls: Option<Box<Session>>,
}

impl Transport {
    pub fn plain(sock: TcpStream) -> Transport {
        Transport { sock, tls: None }
    }

    pub fn tls(sock: TcpStream, session: Session) -> Transport {
        Transport {
            sock,
            tls: Some(Box::new(session)),
        }
    }

    /// A TLS port (handshake done or not, or plain HTTP sent to it).
    pub fn is_tls_port(&self) -> bool {
        self.tls.is_some()
    }

    /// Requests on this connection are `https`.
    pub fn is_secure(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_secure())
    }

    /// A plain HTTP request was sent to a TLS port.
    pub fn plain_on_tls_port(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.is_plain())
    }

    #[inline]
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => (&self.sock).read(buf),
            Some(t) => t.read(&self.sock, buf),
        }
    }

    /// After a read of `n` bytes into `space`: whether the next read may
    /// find more without a new readiness event (edge mode reads until
    /// then). TLS keeps decrypted bytes of its own.
    #[inline]
    pub fn may_read_more(&self, n: usize, space: usize) -> bool {
        match &self.tls {
            None => n == space,
            Some(t) => t.may_read_more(),
        }
    }

    /// Decrypted bytes wait inside (a read would not touch the socket).
    #[inline]
    pub fn has_buffered(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.has_plaintext())
    }

    #[inline]
    pub fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => (&self.sock).write(buf),
            Some(t) => t.write(&self.sock, buf),
        }
    }

    #[inline]
    pub fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => (&self.sock).write_vectored(bufs),
            Some(t) => t.write_vectored(&self.sock, bufs, false),
        }
    }

    /// A response head that a file body follows: held back in the kernel
    /// (`MSG_MORE`) so both leave in full segments.
    pub fn write_more(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => net::send_more(&self.sock, buf),
            Some(t) => t.write_vectored(&self.sock, &[IoSlice::new(buf)], true),
        }
    }

    /// Sends up to `count` bytes of `file` from `*offset`, advancing it:
    /// `sendfile(2)` on a plain socket; over TLS a bounded read, encrypt
    /// and write (a record at a time, at most two unsent: a slow client
    /// makes it wait, not grow).
    pub fn send_file(&mut self, file: &File, offset: &mut i64, count: usize) -> io::Result<usize> {
        let Some(t) = &mut self.tls else {
            return net::sendfile(&self.sock, file, offset, count);
        };
        let mut chunk = [0u8; 16 * 1024];
        let want = count.min(chunk.len());
        let got = file.read_at(&mut chunk[..want], *offset as u64)?;
        if got == 0 {
            return Ok(0);
        }
        let n = t.write(&self.sock, &chunk[..got])?;
        *offset += n as i64;
        Ok(n)
    }

    /// Sends what TLS holds encrypted. `Ok(true)`: nothing is left.
    #[inline]
    pub fn flush(&mut self) -> io::Result<bool> {
        match &mut self.tls {
            None => Ok(true),
            Some(t) => t.flush(&self.sock),
        }
    }

    /// Encrypted bytes wait for the socket (the handshake's or a response's).
    #[inline]
    pub fn wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Ends our side: TLS's close_notify, then a TCP half-close.
    pub fn shutdown_write(&mut self) {
        if let Some(t) = &mut self.tls {
            t.close_notify(&self.sock);
        }
        let _ = self.sock.shutdown(Shutdown::Write);
    }

    /// The connection is about to be closed: a TLS peer is told so.
    pub fn closing(&mut self) {
        if let Some(t) = &mut self.tls {
            t.close_notify(&self.sock);
        }
    }
}
