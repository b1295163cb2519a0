//! `catch_workers_output`: what a pool's programs write to their stdout and
//! stderr reaches the master through one pipe per stream and worker, and is
//! logged line by line, as php-fpm does: `[pool www] child 1234 said into
//! stderr: "..."`, the pid being the pool worker's (the one the status page
//! lists). One writer per pipe, so partial lines of two programs never mix;
//! the logger escapes control bytes, so a program cannot forge log lines.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags};
use nix::unistd::Pid;

/// Longest line logged in one piece (php-fpm's `log_limit` default); a
/// longer one is logged in pieces of this size.
const LINE_LIMIT: usize = 1024;

/// The write ends a pool worker gives its program as stdout and stderr.
pub struct Ends {
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

struct Stream {
    pool: String,
    pid: Pid,
    name: &'static str,
    pipe: std::fs::File,
    partial: Vec<u8>,
}

/// The read ends the master watches, by epoll token.
#[derive(Default)]
pub struct Outputs {
    streams: HashMap<u64, Stream>,
    next: u64,
}

impl Outputs {
    /// Two pipes for a worker about to be forked: the read ends stay here
    /// (close-on-exec, non-blocking), the write ends go to the worker.
    pub fn pipes() -> std::io::Result<(OwnedFd, OwnedFd, Ends)> {
        let flags = OFlag::O_CLOEXEC;
        let (out_r, out_w) = nix::unistd::pipe2(flags)?;
        let (err_r, err_w) = nix::unistd::pipe2(flags)?;
        Ok((
            out_r,
            err_r,
            Ends {
                stdout: out_w,
                stderr: err_w,
            },
        ))
    }

    /// Watches the read ends of worker `pid` of `pool`; `base` is the
    /// first token of the range this module owns.
    pub fn watch(&mut self, ep: Option<&Epoll>, base: u64, pool: &str, pid: Pid, out: OwnedFd, err: OwnedFd) {
        for (name, fd) in [("stdout", out), ("stderr", err)] {
            let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
            let token = base + self.next;
            self.next += 1;
            // Without an epoll yet, `arm_all` registers it later.
            if let Some(ep) = ep
                && let Err(e) = ep.add(fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
            {
                crate::error!("[pool {pool}] cannot watch the output of worker {pid}: {e}");
                continue;
            }
            self.streams.insert(
                token,
                Stream {
                    pool: pool.to_string(),
                    pid,
                    name,
                    pipe: std::fs::File::from(fd),
                    partial: Vec::new(),
                },
            );
        }
    }

    /// Reads what came on `token` and logs its complete lines; at the end
    /// of the stream (the worker and its program are gone), the rest too.
    pub fn readable(&mut self, ep: Option<&Epoll>, token: u64) {
        let Some(s) = self.streams.get_mut(&token) else { return };
        let mut buf = [0u8; 4096];
        // At most 64 KiB per wake-up: a program flooding its stderr must not
        // keep the master from its signals and children (the pipe stays
        // readable, level-triggered, for the next turn).
        let mut turns = 16;
        let ended = loop {
            if turns == 0 {
                break false;
            }
            turns -= 1;
            match s.pipe.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => {
                    s.partial.extend_from_slice(&buf[..n]);
                    s.log_lines(false);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if ended {
            s.log_lines(true);
            if let Some(ep) = ep {
                let _ = ep.delete(s.pipe.as_fd());
            }
            self.streams.remove(&token);
        }
    }

    /// The read ends, for a forked child to close.
    pub fn close_in_child(&mut self) {
        self.streams.clear();
    }

    /// Registers every stream with the master's epoll once it exists
    /// (the first workers are forked before the event loop starts).
    pub fn arm_all(&self, ep: &Epoll) {
        for (token, s) in &self.streams {
            let _ = ep.add(s.pipe.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, *token));
        }
    }
}

impl Stream {
    /// Logs every complete line (and, with `all`, what is left).
    fn log_lines(&mut self, all: bool) {
        let mut start = 0;
        loop {
            let rest = &self.partial[start..];
            let end = match rest.iter().position(|&b| b == b'\n') {
                Some(i) if i <= LINE_LIMIT => Some((i, i + 1)),
                _ if rest.len() >= LINE_LIMIT => Some((LINE_LIMIT, LINE_LIMIT)),
                _ if all && !rest.is_empty() => Some((rest.len(), rest.len())),
                _ => None,
            };
            let Some((line_end, next)) = end else { break };
            let line = &rest[..line_end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            crate::warn!(
                "[pool {}] child {} said into {}: \"{}\"",
                self.pool,
                self.pid,
                self.name,
                crate::core::log::Text(line)
            );
            start += next;
        }
        self.partial.drain(..start);
    }
}
