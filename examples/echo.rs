//! An echo server under corral's master and workers.
//!
//! `cargo run --release --example echo -- 127.0.0.1:7000 [workers] [accept] [pid file]`
//! then `nc 127.0.0.1 7000`; stop with Ctrl-C, reload with `kill -HUP`.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};

use corral::serve::{Accept, Builder, Io, Next, Ready, Service};

struct Echo;

/// A connection and the bytes its peer has not taken yet.
struct Conn {
    stream: TcpStream,
    unsent: Vec<u8>,
}

impl Service for Echo {
    type Conn = Conn;

    fn fd(c: &Conn) -> BorrowedFd<'_> {
        c.stream.as_fd()
    }

    fn open(&mut self, stream: TcpStream, _peer: SocketAddr, _listener: usize) -> Conn {
        Conn {
            stream,
            unsent: Vec::new(),
        }
    }

    fn ready(&mut self, c: &mut Conn, _ready: Ready, _io: &mut Io<'_>) -> Next {
        let mut buf = [0u8; 16 * 1024];
        loop {
            // Send what is pending first; read more only when it is gone
            // (a peer that does not read cannot make us buffer without end).
            while !c.unsent.is_empty() {
                match c.stream.write(&c.unsent) {
                    Ok(n) => drop(c.unsent.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Write,
                    Err(_) => return Next::Close,
                }
            }
            match c.stream.read(&mut buf) {
                Ok(0) => return Next::Close,
                Ok(n) => c.unsent.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Idle,
                Err(_) => return Next::Close,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:7000", String::as_str);
    let accept = match args.get(3).map(String::as_str) {
        Some("reuseport") => Accept::Reuseport,
        Some("dispatch") => Accept::Dispatch,
        _ => Accept::Exclusive,
    };
    let mut b = Builder::new("corral-echo")
        .listen(addr.parse().expect("an address such as 127.0.0.1:7000"))
        .workers(args.get(2).and_then(|n| n.parse().ok()).unwrap_or(2))
        .accept(accept);
    if let Some(pid) = args.get(4) {
        b = b.pid_file(pid);
    }
    std::process::exit(b.run(|_worker| Echo));
}
