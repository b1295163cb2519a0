//! `accept = "dispatch"` from the worker's side (note 000): the worker does
//! not watch the listening sockets; the master does, and tells it over a
//! socketpair how many connections to accept from which socket. The worker
//! publishes its connection count in shared memory for the master's
//! least-connections choice.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use nix::sys::socket::{MsgFlags, recv, send};

use crate::os::shm::SharedWords;

/// One message: which socket (its number in the master's list, the same
/// order as the worker's), and how many connections wait on it.
pub const MESSAGE_LEN: usize = 4;

pub fn encode(socket: u16, count: u16) -> [u8; MESSAGE_LEN] {
    let [a, b] = socket.to_le_bytes();
    let [c, d] = count.to_le_bytes();
    [a, b, c, d]
}

pub fn decode(m: &[u8]) -> Option<(usize, usize)> {
    (m.len() == MESSAGE_LEN).then(|| {
        (
            u16::from_le_bytes([m[0], m[1]]) as usize,
            u16::from_le_bytes([m[2], m[3]]) as usize,
        )
    })
}

/// Sends one message without blocking (a SOCK_SEQPACKET channel keeps the
/// boundaries). `WouldBlock`: the worker is not reading; a broken pipe or
/// refused connection: it is gone.
pub fn tell(chan: &OwnedFd, socket: u16, count: u16) -> io::Result<()> {
    send(
        std::os::fd::AsRawFd::as_raw_fd(chan),
        &encode(socket, count),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
    .map(|_| ())
    .map_err(io::Error::from)
}

/// How a worker learns that connections wait.
pub enum AcceptFrom {
    /// It watches its listening sockets itself.
    Watch,
    /// The master tells it (dispatch mode).
    Told(Told),
}

pub struct Told {
    pub channel: OwnedFd,
    /// The dispatch board and this worker's number in it.
    pub load: Option<(Arc<SharedWords>, usize)>,
}

/// Words per worker on the board: its connections, the messages it read.
pub const BOARD_WORDS: usize = 2;

impl Told {
    /// Reads every message waiting: `Ok(None)` when the master closed the
    /// channel (it no longer dispatches to this worker).
    pub fn take(&self, out: &mut Vec<(usize, usize)>) -> io::Result<Option<()>> {
        let mut buf = [0u8; MESSAGE_LEN];
        loop {
            match recv(
                std::os::fd::AsRawFd::as_raw_fd(&self.channel.as_fd()),
                &mut buf,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    out.extend(decode(&buf[..n]));
                    if let Some((board, i)) = &self.load
                        && let Some(w) = board.words().get(BOARD_WORDS * i + 1)
                    {
                        w.fetch_add(1, Ordering::Release);
                    }
                }
                Err(nix::errno::Errno::EAGAIN) => return Ok(Some(())),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Publishes how many connections this worker serves.
    pub fn publish(&self, connections: usize) {
        if let Some((board, i)) = &self.load
            && let Some(w) = board.words().get(BOARD_WORDS * i)
        {
            w.store(connections as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_round_trip() {
        assert_eq!(decode(&encode(3, 500)), Some((3, 500)));
        assert_eq!(decode(&[1, 2, 3]), None);
    }
}
