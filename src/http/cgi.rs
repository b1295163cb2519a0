//! CGI from the event loop: find the script a URL names, spawn it with
//! nonblocking pipes watched by the worker's own epoll, stream the request
//! body to its stdin and its stdout to the client, each side with
//! backpressure. The worker never waits on a script.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};

use super::app_response::Framing;
use crate::cgi::response::{self, Parsed};
use crate::config;
use crate::os::spawn::Job;

/// A CGI location as a worker holds it: its settings and an open handle on
/// the directory scripts must live in.
pub struct Rule {
    pub cfg: config::Cgi,
    dir: Option<OwnedFd>,
}

impl Rule {
    pub fn new(cfg: config::Cgi) -> Rule {
        let dir = if cfg.script.is_some() {
            None
        } else {
            nix::fcntl::open(
                &cfg.dir,
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            // SAFETY: open returned a fresh descriptor that nothing else owns.
            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
            .map_err(|e| crate::error!("CGI dir {} cannot be opened: {e}", cfg.dir.display()))
            .ok()
        };
        Rule { cfg, dir }
    }
}

/// The script a request runs.
pub struct Target {
    pub rule: usize,
    pub program: PathBuf,
    pub interpreter: Option<PathBuf>,
    pub script_name: String,
    pub script_filename: String,
    pub path_info: String,
}

pub enum Route {
    /// Not a CGI URL: serve it as a static file.
    Static,
    Run(Target),
    Refuse(u16),
}

/// Matches the decoded, normalised path `norm` against the rules in order.
pub fn route(rules: &[Rule], norm: &str) -> Route {
    for (i, rule) in rules.iter().enumerate() {
        let exts = &rule.cfg.extensions;
        let (url_base, rest) = match &rule.cfg.prefix {
            Some(p) => match norm.strip_prefix(p.as_str()) {
                Some(rest) => (p.as_str(), rest),
                None => continue,
            },
            None => {
                let named = norm
                    .split('/')
                    .any(|seg| exts.iter().any(|e| seg.ends_with(e.as_str())));
                if !named {
                    continue;
                }
                ("/", &norm[1..])
            }
        };
        if let Some(script) = &rule.cfg.script {
            // SCRIPT_NAME is the prefix without its slash, PATH_INFO all
            // that follows it: "/git/" is "/git" + "/" (git http-backend
            // refuses an empty PATH_INFO).
            let name = url_base.trim_end_matches('/').to_string();
            let path_info = norm.get(name.len()..).unwrap_or("").to_string();
            return Route::Run(Target {
                rule: i,
                program: script.clone(),
                interpreter: None,
                script_name: name,
                script_filename: script.display().to_string(),
                path_info,
            });
        }
        return walk(i, rule, url_base, rest);
    }
    Route::Static
}

/// Finds the first path prefix of `rest` that is a script file under the
/// rule's directory; what follows it is PATH_INFO.
fn walk(i: usize, rule: &Rule, url_base: &str, rest: &str) -> Route {
    let Some(dir) = rule.dir.as_ref() else {
        return Route::Refuse(500);
    };
    let exts = &rule.cfg.extensions;
    let ends: Vec<usize> = rest.match_indices('/').map(|(k, _)| k).chain([rest.len()]).collect();
    for end in ends {
        let cand = &rest[..end];
        let last = cand.rsplit('/').next().unwrap_or("");
        if last.is_empty() {
            continue;
        }
        let named = exts.is_empty() || exts.iter().any(|e| last.ends_with(e.as_str()));
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = match openat2(dir.as_raw_fd(), cand, how) {
            // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd) },
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Route::Refuse(404),
            Err(e @ (Errno::EXDEV | Errno::ELOOP)) => {
                crate::error!(
                    "CGI script \"{}\" {} {}, refused",
                    crate::core::log::Esc(cand.as_bytes()),
                    if e == Errno::ELOOP {
                        "is a symlink loop (too many levels of symbolic links) in"
                    } else {
                        "resolves outside"
                    },
                    rule.cfg.dir.display()
                );
                return Route::Refuse(403);
            }
            Err(e) => {
                // Most often EACCES: the workers' `user` may not search a
                // directory on the way (nginx logs its open() failure too).
                crate::error!(
                    "CGI script \"{}\" under {}: {} ({}), refused with 403",
                    crate::core::log::Esc(cand.as_bytes()),
                    rule.cfg.dir.display(),
                    e.desc(),
                    e as i32
                );
                return Route::Refuse(403);
            }
        };
        let Ok(meta) = std::fs::File::from(fd).metadata() else {
            return Route::Refuse(403);
        };
        if meta.is_dir() {
            continue;
        }
        if !named {
            return Route::Refuse(404);
        }
        if !meta.is_file() {
            return Route::Refuse(403);
        }
        let interpreter = rule
            .cfg
            .interpreters
            .iter()
            .find(|(e, _)| last.ends_with(e.as_str()))
            .map(|(_, p)| p.clone());
        if interpreter.is_none() && meta.permissions().mode() & 0o111 == 0 {
            crate::error!(
                "CGI script \"{}\" is not executable",
                crate::core::log::Esc(cand.as_bytes())
            );
            return Route::Refuse(403);
        }
        let filename = rule.cfg.dir.join(cand);
        return Route::Run(Target {
            rule: i,
            program: filename.clone(),
            interpreter,
            script_name: format!("{url_base}{cand}"),
            script_filename: filename.display().to_string(),
            path_info: rest[end..].to_string(),
        });
    }
    Route::Refuse(404)
}

/// What the script reads on stdin.
pub enum Stdin {
    /// No request body: /dev/null.
    Null,
    /// The body, streamed through a pipe as it arrives.
    Pipe,
    /// A body spooled to a file, read from its start.
    File(File),
}

/// A chunked request body being written to an unlinked temporary file
/// before its script starts: RFC 3875 §4.1.2 wants CONTENT_LENGTH for
/// every body, and chunked ones have no length until they end.
pub struct Spool {
    pub file: File,
    pub target: Target,
    pub env: Vec<(String, Vec<u8>)>,
}

/// An anonymous file in `dir` (O_TMPFILE; where the file system lacks it,
/// a named file removed at once).
pub fn temp_file(dir: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let anon = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match anon {
        Ok(f) => Ok(f),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EISDIR)) => {
            static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!(".corral-body-{}-{n}", std::process::id()));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
            std::fs::remove_file(&path)?;
            Ok(f)
        }
        Err(e) => Err(e),
    }
}

/// Makes the pipes for `t` and the spawn job that runs it with the
/// environment `env`, in its own process group, with nothing but those
/// pipes open. The worker keeps the nonblocking ends in the returned
/// `Run`; the job carries the child's ends to the spawner.
pub fn prepare(t: &Target, env: &[(String, Vec<u8>)], stdin: Stdin, id: u64) -> io::Result<(Run, Job)> {
    let cstr = |s: &[u8]| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut argv = Vec::with_capacity(2);
    let program = match &t.interpreter {
        Some(i) => {
            argv.push(cstr(i.as_os_str().as_bytes())?);
            i
        }
        None => &t.program,
    };
    argv.push(cstr(t.program.as_os_str().as_bytes())?);
    let envp = env
        .iter()
        .map(|(k, v)| cstr(&[k.as_bytes(), b"=", v].concat()))
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = match t.program.parent() {
        Some(d) if !d.as_os_str().is_empty() => Some(cstr(d.as_os_str().as_bytes())?),
        _ => None,
    };
    let pipe = |ours_reads: bool| -> io::Result<(File, OwnedFd)> {
        let (ours, theirs) = crate::os::spawn::child_pipe(ours_reads)?;
        Ok((File::from(ours), theirs))
    };
    let (stdin, child_in) = match stdin {
        Stdin::Pipe => {
            let (a, b) = pipe(false)?;
            (Some(a), Some(b))
        }
        Stdin::File(f) => (None, Some(OwnedFd::from(f))),
        Stdin::Null => (None, None),
    };
    let (stdout, child_out) = pipe(true)?;
    let (stderr, child_err) = pipe(true)?;
    let job = Job {
        id,
        program: cstr(program.as_os_str().as_bytes())?,
        argv,
        envp,
        cwd,
        stdin: child_in,
        stdout: child_out,
        stderr: child_err,
    };
    let run = Run {
        id,
        stdin,
        stdout: Some(stdout),
        stderr: Some(stderr),
        stdin_ready: true,
        stdout_ready: true,
        stderr_ready: true,
        to_script: Vec::new(),
        to_script_off: 0,
        hdr: Vec::new(),
        fr: Framing::new(format!("CGI {}", t.script_name)),
        stdout_eof: false,
        err_line: Vec::new(),
        err_logged: 0,
        err_dropped: 0,
        name: t.script_name.clone(),
    };
    Ok((run, job))
}

/// Pipe numbers within the connection (see `event::Io::watch`).
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const STDIN: u8 = 3;

/// A running script and the state of both streams.
pub struct Run {
    /// The script's id in the worker's `Children`.
    pub id: u64,
    pub stdin: Option<File>,
    pub stdout: Option<File>,
    pub stderr: Option<File>,
    pub stdin_ready: bool,
    pub stdout_ready: bool,
    pub stderr_ready: bool,
    /// Request body bytes decoded and not yet written to stdin.
    pub to_script: Vec<u8>,
    pub to_script_off: usize,
    /// Output collected until the header section is complete.
    pub hdr: Vec<u8>,
    /// How the output's body goes to the client.
    pub fr: Framing,
    pub stdout_eof: bool,
    err_line: Vec<u8>,
    /// stderr bytes logged, and those past `STDERR_LOG_MAX` that were not
    /// (a script may write without end: the log must not follow it).
    err_logged: usize,
    err_dropped: u64,
    pub name: String,
}

/// The most of one script's stderr that reaches the error log (as for FastCGI).
const STDERR_LOG_MAX: usize = 64 << 10;

/// Largest CGI header section accepted.
pub const MAX_HEAD: usize = 16 * 1024;

impl Run {
    /// Registers the pipes with the worker's loop.
    pub fn watch(&self, io: &crate::event::Io<'_>) -> io::Result<()> {
        if let Some(s) = &self.stdout {
            io.watch(s.as_fd(), STDOUT, false)?;
        }
        if let Some(s) = &self.stderr {
            io.watch(s.as_fd(), STDERR, false)?;
        }
        if let Some(s) = &self.stdin {
            io.watch(s.as_fd(), STDIN, true)?;
        }
        Ok(())
    }

    /// Writes pending body bytes to stdin; closes it once the body is done.
    /// Returns whether anything moved.
    pub fn feed_stdin(&mut self, body_done: bool) -> bool {
        let mut moved = false;
        while self.stdin_ready && self.to_script_off < self.to_script.len() {
            let Some(stdin) = self.stdin.as_mut() else {
                // The script closed its stdin: the rest of the body is dropped.
                self.to_script_off = self.to_script.len();
                break;
            };
            match stdin.write(&self.to_script[self.to_script_off..]) {
                Ok(n) => {
                    self.to_script_off += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stdin_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.stdin = None,
            }
        }
        if self.to_script_off == self.to_script.len() {
            self.to_script.clear();
            self.to_script_off = 0;
            if body_done && self.stdin.is_some() {
                self.stdin = None; // EOF for the script
                moved = true;
            }
        }
        moved
    }

    /// Sends complete stderr lines to the error log.
    pub fn drain_stderr(&mut self) {
        let mut buf = [0u8; 4096];
        while self.stderr_ready {
            let Some(err) = self.stderr.as_mut() else { return };
            match err.read(&mut buf) {
                Ok(0) => {
                    self.flush_err_line();
                    self.stderr = None;
                }
                Ok(n) => {
                    for &b in &buf[..n] {
                        if b == b'\n' || self.err_line.len() >= 2048 {
                            self.flush_err_line();
                        } else {
                            self.err_line.push(b);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.stderr_ready = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.stderr = None,
            }
        }
    }

    /// Logs what is in the stderr pipe now, even a last unfinished line:
    /// what the script wrote before its stdout ended may not have been
    /// signalled yet, and the pipe is about to go.
    pub fn last_stderr(&mut self) {
        self.stderr_ready = true;
        self.drain_stderr();
        self.flush_err_line();
        if self.err_dropped > 0 {
            crate::warn!(
                "CGI {}: {} more bytes written to stderr were not logged (more than {} KiB)",
                self.name,
                self.err_dropped,
                STDERR_LOG_MAX >> 10
            );
            self.err_dropped = 0;
        }
    }

    fn flush_err_line(&mut self) {
        if !self.err_line.is_empty() {
            if self.err_logged >= STDERR_LOG_MAX {
                self.err_dropped += self.err_line.len() as u64;
            } else {
                self.err_logged += self.err_line.len();
                let line = self.err_line.strip_suffix(b"\r").unwrap_or(&self.err_line);
                crate::error!("CGI {}: {}", self.name, crate::core::log::Text(line));
            }
            self.err_line.clear();
        }
    }

    /// Reads what stdout has (up to `buf.len()`); `Ok(0)` at its end,
    /// `None` when nothing is available now.
    pub fn read_stdout(&mut self, buf: &mut [u8]) -> Option<usize> {
        if !self.stdout_ready {
            return None;
        }
        let out = self.stdout.as_mut()?;
        match out.read(buf) {
            Ok(0) => {
                self.stdout = None;
                self.stdout_eof = true;
                Some(0)
            }
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.stdout_ready = false;
                None
            }
            Err(_) => {
                self.stdout = None;
                self.stdout_eof = true;
                Some(0)
            }
        }
    }
}

/// What became of the header section.
pub enum Head {
    More,
    Bad(String),
    Ready(response::Head, usize),
}

pub fn parse_head(run: &Run, from: usize) -> Head {
    if !response::has_end(&run.hdr, from) {
        return if run.hdr.len() > MAX_HEAD {
            Head::Bad("header section too large".into())
        } else {
            Head::More
        };
    }
    match response::parse(&run.hdr) {
        Parsed::Done(_, n) if n > MAX_HEAD => Head::Bad("header section too large".into()),
        Parsed::Done(h, n) => Head::Ready(h, n),
        Parsed::Partial if run.hdr.len() > MAX_HEAD => Head::Bad("header section too large".into()),
        Parsed::Partial => Head::More,
        Parsed::Invalid(e) => Head::Bad(e),
    }
}
