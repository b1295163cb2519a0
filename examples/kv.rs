//! A line-protocol key-value server under corral's master and workers.
//!
//! `cargo run --release --example kv -- 127.0.0.1:7001 [pid file]`, then:
//!
//! ```text
//! SET name corral      -> OK
//! GET name             -> VALUE corral
//! DEL name             -> DELETED | NOT_FOUND
//! QUIT                 -> BYE (and the server closes)
//! ```
//!
//! Each worker process has its own store, so it runs one worker; connections
//! still get corral's event loop, limits, signals and graceful reload (the
//! store starts empty in the new worker).

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};

use corral::serve::{Builder, Io, Next, Ready, Service};

/// Longest line accepted; a longer one is answered with an error and closed.
const MAX_LINE: usize = 64 * 1024;

#[derive(Default)]
struct Kv {
    store: HashMap<String, String>,
}

struct Conn {
    stream: TcpStream,
    input: Vec<u8>,
    output: Vec<u8>,
    closing: bool,
}

impl Kv {
    fn answer(&mut self, line: &str) -> (String, bool) {
        let mut words = line.splitn(3, ' ');
        match (words.next().unwrap_or(""), words.next(), words.next()) {
            ("SET", Some(k), Some(v)) => {
                self.store.insert(k.to_string(), v.to_string());
                ("OK".into(), false)
            }
            ("GET", Some(k), None) => match self.store.get(k) {
                Some(v) => (format!("VALUE {v}"), false),
                None => ("NOT_FOUND".into(), false),
            },
            ("DEL", Some(k), None) => match self.store.remove(k) {
                Some(_) => ("DELETED".into(), false),
                None => ("NOT_FOUND".into(), false),
            },
            ("QUIT", None, None) => ("BYE".into(), true),
            _ => ("ERROR expected SET key value | GET key | DEL key | QUIT".into(), false),
        }
    }
}

impl Service for Kv {
    type Conn = Conn;

    fn fd(c: &Conn) -> BorrowedFd<'_> {
        c.stream.as_fd()
    }

    fn open(&mut self, stream: TcpStream, _peer: SocketAddr, _listener: usize) -> Conn {
        Conn {
            stream,
            input: Vec::new(),
            output: Vec::new(),
            closing: false,
        }
    }

    fn ready(&mut self, c: &mut Conn, _ready: Ready, _io: &mut Io<'_>) -> Next {
        let mut buf = [0u8; 4096];
        loop {
            while !c.output.is_empty() {
                match c.stream.write(&c.output) {
                    Ok(n) => drop(c.output.drain(..n)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Write,
                    Err(_) => return Next::Close,
                }
            }
            if c.closing {
                return Next::Close;
            }
            while let Some(end) = c.input.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = c.input.drain(..=end).collect();
                let text = String::from_utf8_lossy(&line);
                let (reply, quit) = self.answer(text.trim_end_matches(['\r', '\n']));
                c.output.extend_from_slice(reply.as_bytes());
                c.output.push(b'\n');
                if quit {
                    c.closing = true;
                    break;
                }
            }
            if !c.output.is_empty() {
                continue;
            }
            if c.input.len() > MAX_LINE {
                c.output.extend_from_slice(b"ERROR line too long\n");
                c.closing = true;
                continue;
            }
            match c.stream.read(&mut buf) {
                Ok(0) => return Next::Close,
                Ok(n) => c.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Next::Idle,
                Err(_) => return Next::Close,
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map_or("127.0.0.1:7001", String::as_str);
    let mut b = Builder::new("corral-kv")
        .listen(addr.parse().expect("an address such as 127.0.0.1:7001"))
        .workers(1);
    if let Some(pid) = args.get(2) {
        b = b.pid_file(pid);
    }
    std::process::exit(b.run(|_worker| Kv::default()));
}
