//! The library corral preloads (`LD_PRELOAD`) into the FastCGI program of a
//! pool with `direct = true`. Such a program accepts the web server's
//! connections on the pool's socket itself, as php-fpm's children do, with
//! no corral process relaying its bytes; this library watches the bytes it
//! reads and writes on the connection it serves and records each request
//! in the worker's scoreboard slot (stages, method, URI, script, duration,
//! CPU, memory), as corral's own pool worker does in relay mode.
//!
//! It changes what the program sees only where the pool must decide:
//! - a request for the pool's `ping_path` or `status_path`, or for a script
//!   `limit_extensions` refuses, is handed to corral's pool worker with its
//!   connection (the program reads an end of file and closes its copy);
//!   so is a connection from an address `allowed_clients` does not list;
//! - past `max_requests` or `max_memory`, or when the worker asks it to
//!   stop (a reload, a graceful stop), the program reads an end of file on
//!   its kept connection between requests and a failed accept(), so it
//!   ends cleanly after the request in progress.
//!
//! Everything else is passed through unchanged. Only one connection is
//! watched at a time (these programs serve one request at a time).

#![allow(clippy::missing_safety_doc)]
// Nothing to unit-test here (tests/pools.rs drives it through php-cgi),
// and the codec's own tests need its dev-dependencies.
#![cfg(not(test))]

use std::ffi::{c_char, c_int, c_void};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering::*};

#[allow(dead_code)]
#[path = "../../fastcgi/src/lib.rs"]
mod codec;
#[allow(dead_code)]
#[path = "../../../src/pool/record.rs"]
mod record;
#[path = "../../../src/pool/script_check.rs"]
mod script_check;

use record::{RequestInfo, State, Words, s};

// ---- libc, declared here: this library is built by rustc alone ----

#[repr(C)]
pub struct IoVec {
    base: *mut c_void,
    len: usize,
}

#[repr(C)]
pub struct PollFd {
    fd: c_int,
    events: i16,
    revents: i16,
}

#[repr(C)]
struct MsgHdr {
    name: *mut c_void,
    namelen: u32,
    iov: *const IoVec,
    iovlen: usize,
    control: *mut c_void,
    controllen: usize,
    flags: c_int,
}

/// A cmsghdr carrying one descriptor (CMSG_SPACE(4) = 24 bytes).
#[repr(C)]
struct FdCmsg {
    len: usize,
    level: c_int,
    kind: c_int,
    fd: c_int,
    pad: c_int,
}

/// glibc's `struct sigaction` on Linux (x86_64, aarch64).
#[repr(C)]
struct SigAction {
    handler: usize,
    mask: [u64; 16],
    flags: c_int,
    restorer: usize,
}

#[repr(C)]
struct Timespec {
    sec: i64,
    nsec: i64,
}

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn __errno_location() -> *mut c_int;
    fn __libc_current_sigrtmin() -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    fn sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
    fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn getpeername(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int;
    fn clock_gettime(clock: c_int, ts: *mut Timespec) -> c_int;
    fn sysconf(name: c_int) -> i64;
}

const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;
const EINTR: c_int = 4;
const EAGAIN: c_int = 11;
const EINVAL: c_int = 22;
const MSG_PEEK: c_int = 2;
const MSG_NOSIGNAL: c_int = 0x4000;
const F_SETFD: c_int = 2;
const FD_CLOEXEC: c_int = 1;
const POLLIN: i16 = 1;
const CLOCK_PROCESS_CPUTIME_ID: c_int = 2;

fn errno() -> c_int {
    // SAFETY: glibc's per-thread errno location is always valid.
    unsafe { *__errno_location() }
}

fn set_errno(e: c_int) {
    // SAFETY: as above.
    unsafe { *__errno_location() = e }
}

/// The next definition of a libc function (the real one), looked up once.
macro_rules! real {
    ($name:literal, $ty:ty) => {{
        static PTR: AtomicUsize = AtomicUsize::new(0);
        let mut p = PTR.load(Relaxed);
        if p == 0 {
            // SAFETY: dlsym with RTLD_NEXT and a NUL-terminated name.
            p = unsafe { dlsym(RTLD_NEXT, concat!($name, "\0").as_ptr().cast()) } as usize;
            PTR.store(p, Relaxed);
        }
        // SAFETY: `p` is libc's own symbol of that name, of type `$ty`
        // (glibc always defines it: a null pointer never happens).
        unsafe { std::mem::transmute::<usize, $ty>(p) }
    }};
}

type ReadFn = unsafe extern "C" fn(c_int, *mut c_void, usize) -> isize;
type WriteFn = unsafe extern "C" fn(c_int, *const c_void, usize) -> isize;
type WritevFn = unsafe extern "C" fn(c_int, *const IoVec, c_int) -> isize;
type RecvFn = unsafe extern "C" fn(c_int, *mut c_void, usize, c_int) -> isize;
type RecvfromFn = unsafe extern "C" fn(c_int, *mut c_void, usize, c_int, *mut c_void, *mut u32) -> isize;
type SendFn = unsafe extern "C" fn(c_int, *const c_void, usize, c_int) -> isize;
type SendtoFn = unsafe extern "C" fn(c_int, *const c_void, usize, c_int, *const c_void, u32) -> isize;
type Accept4Fn = unsafe extern "C" fn(c_int, *mut c_void, *mut u32, c_int) -> c_int;
type CloseFn = unsafe extern "C" fn(c_int) -> c_int;
type ShutdownFn = unsafe extern "C" fn(c_int, c_int) -> c_int;
type PollFn = unsafe extern "C" fn(*mut PollFd, u64, c_int) -> c_int;

// ---- what corral's pool worker told us (CORRAL_PRELOAD*) ----

struct Config {
    words: Words<'static>,
    slot: usize,
    listen: c_int,
    ctl: c_int,
    max_requests: u64,
    max_memory: u64,
    ping: Option<String>,
    status: Option<String>,
    extensions: Vec<String>,
    allowed: Vec<std::net::IpAddr>,
}

static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
/// The connection being watched (-1: none), read without the lock.
static WATCHED: AtomicI32 = AtomicI32::new(-1);
/// A connection handed to the worker, now read as closed (-1: none).
static HANDED: AtomicI32 = AtomicI32::new(-1);
/// The worker asked the program to stop after its request in progress.
static STOP: AtomicBool = AtomicBool::new(false);
/// max_requests or max_memory reached: end after this request.
static RETIRE: AtomicBool = AtomicBool::new(false);
static CONN: Mutex<Option<Conn>> = Mutex::new(None);
static STATM: AtomicI32 = AtomicI32::new(-1);
static PAGE: AtomicU64 = AtomicU64::new(4096);

#[used]
#[unsafe(link_section = ".init_array")]
static INIT: extern "C" fn() = init;

extern "C" fn init() {
    let Ok(spec) = std::env::var("CORRAL_PRELOAD") else {
        return;
    };
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.is_empty());
    let ping = var("CORRAL_PRELOAD_PING");
    let status = var("CORRAL_PRELOAD_STATUS");
    let extensions: Vec<String> = var("CORRAL_PRELOAD_EXT")
        .map(|v| v.split('\n').map(str::to_string).collect())
        .unwrap_or_default();
    let allowed = var("CORRAL_PRELOAD_ALLOW")
        .map(|v| v.split(' ').filter_map(|a| a.parse().ok()).collect())
        .unwrap_or_default();
    let me = var("CORRAL_PRELOAD_SELF");
    // Gone from the program's environment: its scripts and the processes
    // they start never see them (nor load this library).
    // SAFETY: a constructor runs before the program has threads.
    unsafe {
        for n in [
            "CORRAL_PRELOAD",
            "CORRAL_PRELOAD_PING",
            "CORRAL_PRELOAD_STATUS",
            "CORRAL_PRELOAD_EXT",
            "CORRAL_PRELOAD_ALLOW",
            "CORRAL_PRELOAD_SELF",
        ] {
            std::env::remove_var(n);
        }
        if let (Some(me), Ok(all)) = (&me, std::env::var("LD_PRELOAD")) {
            let rest: Vec<&str> = all.split([' ', ':']).filter(|p| !p.is_empty() && p != me).collect();
            if rest.is_empty() {
                std::env::remove_var("LD_PRELOAD");
            } else {
                std::env::set_var("LD_PRELOAD", rest.join(":"));
            }
        }
    }
    let n: Vec<u64> = spec.split(' ').filter_map(|x| x.parse().ok()).collect();
    let [
        sb_fd,
        words,
        slots,
        slot,
        listen,
        ctl,
        max_requests,
        max_memory,
        lib_fd,
        stop_sig,
    ] = n[..]
    else {
        return;
    };
    let close: CloseFn = real!("close", CloseFn);
    // SAFETY: maps the scoreboard memfd corral passed (`words` u64s), shared
    // and writable; the mapping is never unmapped, so 'static holds.
    let words = unsafe {
        let p = mmap(std::ptr::null_mut(), words as usize * 8, 3, 1, sb_fd as c_int, 0);
        close(sb_fd as c_int);
        close(lib_fd as c_int);
        if p as isize == -1 {
            return;
        }
        std::slice::from_raw_parts(p as *const AtomicU64, words as usize)
    };
    if (slot as usize) >= slots as usize || words.len() < Words::len(slots as usize) {
        return;
    }
    // SAFETY: marks corral's descriptor close-on-exec (no script's child keeps it).
    unsafe { fcntl(ctl as c_int, F_SETFD, FD_CLOEXEC) };
    // SAFETY: sysconf(_SC_PAGESIZE) has no side effects.
    PAGE.store(unsafe { sysconf(30) }.max(1) as u64, Relaxed);
    let cfg = Config {
        words: Words {
            words,
            slots: slots as usize,
        },
        slot: slot as usize,
        listen: listen as c_int,
        ctl: ctl as c_int,
        max_requests,
        max_memory,
        ping,
        status,
        extensions,
        allowed,
    };
    if CONFIG.set(cfg).is_err() {
        return;
    }
    // The worker's "stop after this request": a signal of no meaning to
    // the program, without SA_RESTART, so a blocking accept() or read()
    // returns to look at STOP.
    let act = SigAction {
        handler: on_stop as extern "C" fn(c_int) as usize,
        mask: [0; 16],
        flags: 0,
        restorer: 0,
    };
    // SAFETY: installs a handler that only stores to an atomic.
    unsafe {
        let sig = __libc_current_sigrtmin() + stop_sig as c_int;
        sigaction(sig, &act, std::ptr::null_mut());
    }
}

extern "C" fn on_stop(_: c_int) {
    STOP.store(true, Relaxed);
}

fn ending() -> bool {
    STOP.load(Relaxed) || RETIRE.load(Relaxed)
}

// ---- a record stream, followed byte by byte ----

#[derive(Default)]
struct Framer {
    hdr: [u8; 8],
    have: usize,
    content_left: usize,
    pad_left: usize,
    kind: u8,
    id: u16,
}

enum Piece<'a> {
    /// A header is complete (kind, id, content length).
    Header(u8, usize),
    Content(&'a [u8]),
}

impl Framer {
    /// Walks `bytes`, calling `f` for each header and piece of content with
    /// the offset just past it; stops early when `f` returns false.
    fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(&Framer, Piece<'_>, usize) -> bool) {
        let total = bytes.len();
        while !bytes.is_empty() {
            if self.content_left == 0 && self.pad_left == 0 {
                let n = (8 - self.have).min(bytes.len());
                self.hdr[self.have..self.have + n].copy_from_slice(&bytes[..n]);
                self.have += n;
                bytes = &bytes[n..];
                if self.have == 8 {
                    self.have = 0;
                    self.kind = self.hdr[1];
                    self.id = u16::from_be_bytes([self.hdr[2], self.hdr[3]]);
                    self.content_left = u16::from_be_bytes([self.hdr[4], self.hdr[5]]) as usize;
                    self.pad_left = self.hdr[6] as usize;
                    let len = self.content_left;
                    if !f(self, Piece::Header(self.kind, len), total - bytes.len()) {
                        return;
                    }
                }
            } else if self.content_left > 0 {
                let n = self.content_left.min(bytes.len());
                self.content_left -= n;
                let (c, rest) = bytes.split_at(n);
                bytes = rest;
                if !f(self, Piece::Content(c), total - bytes.len()) {
                    return;
                }
            } else {
                let n = self.pad_left.min(bytes.len());
                self.pad_left -= n;
                bytes = &bytes[n..];
            }
        }
    }

    /// Bytes of the current record not yet through (0 at a boundary;
    /// all ones in the middle of a header).
    fn left(&self) -> u64 {
        if self.have > 0 {
            0xffff_ffff
        } else {
            (self.content_left + self.pad_left) as u64
        }
    }
}

// ---- the watched connection ----

struct Conn {
    fd: c_int,
    inb: Framer,
    outb: Framer,
    /// Between BEGIN_REQUEST and the end of PARAMS: the request's bytes as
    /// read (for a hand-over), its BEGIN body and its params.
    copy: Vec<u8>,
    begin: Vec<u8>,
    params: Vec<u8>,
    reading_params: bool,
    /// A request runs (its params were passed on) until its END_REQUEST.
    in_request: bool,
    /// The running request's id, and whether its STDOUT began.
    id: u16,
    spoke: bool,
    started_cpu: u64,
    started_us: u64,
}

impl Conn {
    fn new(fd: c_int) -> Conn {
        Conn {
            fd,
            inb: Framer::default(),
            outb: Framer::default(),
            copy: Vec::new(),
            begin: Vec::new(),
            params: Vec::new(),
            reading_params: false,
            in_request: false,
            id: 0,
            spoke: false,
            started_cpu: 0,
            started_us: 0,
        }
    }
}

/// A request bigger than this is not handed over (it cannot be a ping or
/// status request; a refused script that big is closed instead).
const MAX_HANDOVER: usize = 128 << 10;

/// What reading `bytes` from the connection decided.
enum Seen {
    Pass,
    /// Hand the connection over with these bytes; the program reads EOF.
    HandOver(Vec<u8>),
    /// Close it under the program (EOF): a refused request too big to hand over.
    Refuse,
}

fn cpu_ns() -> u64 {
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: writes one timespec through the valid pointer.
    unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.sec as u64 * 1_000_000_000 + ts.nsec as u64
}

/// Resident bytes of this process (/proc/self/statm, kept open).
fn rss() -> u64 {
    let mut fd = STATM.load(Relaxed);
    if fd < 0 {
        // SAFETY: opens a fixed NUL-terminated path read-only, close-on-exec.
        fd = unsafe { libc_open(c"/proc/self/statm".as_ptr(), 0o2000000) };
        if fd < 0 {
            return 0;
        }
        STATM.store(fd, Relaxed);
    }
    let mut buf = [0u8; 128];
    // SAFETY: reads into the local buffer.
    let n = unsafe { pread(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n <= 0 {
        return 0;
    }
    let text = std::str::from_utf8(&buf[..n as usize]).unwrap_or("");
    let pages: u64 = text.split(' ').nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * PAGE.load(Relaxed)
}

unsafe extern "C" {
    #[link_name = "open"]
    fn libc_open(path: *const c_char, flags: c_int, ...) -> c_int;
    fn pread(fd: c_int, buf: *mut c_void, n: usize, off: i64) -> isize;
}

impl Conn {
    /// Follows bytes the program read.
    fn inbound(&mut self, cfg: &Config, bytes: &[u8]) -> Seen {
        let mut seen = Seen::Pass;
        // Where this read's bytes of the request (kept for a hand-over,
        // padding and all) begin.
        let mut from = self.reading_params.then_some(0);
        let mut inb = std::mem::take(&mut self.inb);
        inb.feed(bytes, |fr, piece, at| {
            match piece {
                Piece::Header(codec::kind::BEGIN_REQUEST, _) if !self.in_request => {
                    cfg.words.set_state(cfg.slot, State::ReadingHeaders);
                    self.id = fr.id;
                    self.reading_params = true;
                    self.copy.clear();
                    self.copy.extend_from_slice(&fr.hdr);
                    from = Some(at);
                    self.begin.clear();
                    self.params.clear();
                }
                Piece::Content(c) if self.reading_params && fr.kind == codec::kind::BEGIN_REQUEST => {
                    self.begin.extend_from_slice(c);
                }
                Piece::Content(c) if self.reading_params && fr.kind == codec::kind::PARAMS => {
                    self.params.extend_from_slice(c);
                }
                Piece::Header(codec::kind::PARAMS, 0) if self.reading_params => {
                    self.reading_params = false;
                    self.copy.extend_from_slice(&bytes[from.take().unwrap_or(0)..]);
                    seen = self.params_done(cfg);
                    return false;
                }
                _ => {}
            }
            true
        });
        self.inb = inb;
        if let Some(f) = from {
            self.copy.extend_from_slice(&bytes[f..]);
        }
        if self.copy.len() > MAX_HANDOVER + (64 << 10) && self.reading_params {
            // Too big for a hand-over: no need to keep more.
            self.copy.truncate(MAX_HANDOVER + 1);
        }
        if !matches!(seen, Seen::Pass) {
            // The rest is the worker's (or nobody's): stop following.
            self.copy = Vec::new();
        }
        seen
    }

    /// The request's params are complete: recorded, or handed over.
    fn params_done(&mut self, cfg: &Config) -> Seen {
        let get = |want: &[u8]| -> &str {
            codec::Pairs::new(&self.params)
                .filter_map(Result::ok)
                .find(|(n, _)| *n == want)
                .and_then(|(_, v)| std::str::from_utf8(v).ok())
                .unwrap_or("")
        };
        let name = get(b"SCRIPT_NAME");
        let builtin = !name.is_empty() && [&cfg.ping, &cfg.status].iter().any(|p| p.as_deref() == Some(name));
        let mut path = get(b"SCRIPT_FILENAME");
        if path.is_empty() {
            path = get(b"PATH_TRANSLATED");
        }
        let denied = script_check::denied(path, &cfg.extensions).is_some();
        if builtin || denied {
            let all = std::mem::take(&mut self.copy);
            return if all.len() <= MAX_HANDOVER {
                Seen::HandOver(all)
            } else {
                Seen::Refuse
            };
        }
        let uri = get(b"REQUEST_URI");
        let info = RequestInfo {
            method: get(b"REQUEST_METHOD"),
            uri,
            script: path,
            user: get(b"REMOTE_USER"),
            content_length: get(b"CONTENT_LENGTH").parse().unwrap_or(0),
        };
        cfg.words.begin_request(cfg.slot, &info);
        self.in_request = true;
        self.spoke = false;
        self.outb = Framer::default();
        self.note_out(cfg);
        self.started_cpu = cpu_ns();
        self.started_us = record::unix_us();
        self.copy = Vec::new();
        Seen::Pass
    }

    /// Follows bytes the program wrote.
    fn outbound(&mut self, cfg: &Config, bytes: &[u8]) {
        let mut outb = std::mem::take(&mut self.outb);
        outb.feed(bytes, |fr, piece, _| {
            if let Piece::Header(codec::kind::STDOUT, 1..) = piece
                && fr.id == self.id
            {
                self.spoke = true;
            }
            if let Piece::Header(codec::kind::END_REQUEST, ..) = piece
                && self.in_request
            {
                self.in_request = false;
                let wall = record::unix_us().saturating_sub(self.started_us).max(1);
                let cpu = cpu_ns().saturating_sub(self.started_cpu);
                let memory = rss();
                cfg.words.end_request(cfg.slot, cpu as f64 / 10.0 / wall as f64, memory);
                cfg.words.set_state(cfg.slot, State::Kept);
                let served = cfg.words.sw(cfg.slot, s::REQUESTS).load(Relaxed);
                if (cfg.max_requests > 0 && served >= cfg.max_requests)
                    || (cfg.max_memory > 0 && memory > cfg.max_memory)
                {
                    RETIRE.store(true, Relaxed);
                }
            }
            true
        });
        self.outb = outb;
        self.note_out(cfg);
    }

    /// The slot's OUT_LEFT: the rest of the record being written (bits
    /// 0-31, all ones mid-header), the request's id (32-47), whether its
    /// STDOUT began (48).
    fn note_out(&self, cfg: &Config) {
        let left = self.outb.left().min(0xffff_ffff);
        let word = left | (self.id as u64) << 32 | (self.spoke as u64) << 48;
        cfg.words.sw(cfg.slot, s::OUT_LEFT).store(word, Relaxed);
    }
}

/// Gives the connection (and the bytes read of its request) to corral's
/// pool worker: kind 1 a request, 2 a refused client.
fn hand_over(cfg: &Config, fd: c_int, kind: u8, bytes: &[u8]) -> bool {
    let mut payload = Vec::with_capacity(1 + bytes.len());
    payload.push(kind);
    payload.extend_from_slice(bytes);
    let iov = IoVec {
        base: payload.as_ptr() as *mut c_void,
        len: payload.len(),
    };
    let mut cm = FdCmsg {
        len: 20,
        level: 1,
        kind: 1,
        fd,
        pad: 0,
    };
    let msg = MsgHdr {
        name: std::ptr::null_mut(),
        namelen: 0,
        iov: &iov,
        iovlen: 1,
        control: (&mut cm as *mut FdCmsg).cast(),
        controllen: std::mem::size_of::<FdCmsg>(),
        flags: 0,
    };
    // SAFETY: every pointer in `msg` points at a live local for the call.
    unsafe { sendmsg(cfg.ctl, &msg, MSG_NOSIGNAL) >= 0 }
}

fn watched(fd: c_int) -> bool {
    fd >= 0 && WATCHED.load(Relaxed) == fd
}

/// A read of `n` bytes (or an error) on the watched connection: followed.
fn after_read(fd: c_int, buf: *const c_void, n: isize) -> isize {
    let Some(cfg) = CONFIG.get() else { return n };
    if n <= 0 {
        return n;
    }
    let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
    let Some(conn) = guard.as_mut().filter(|c| c.fd == fd) else {
        return n;
    };
    // SAFETY: the program's buffer holds the `n` bytes just read into it.
    let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) };
    match conn.inbound(cfg, bytes) {
        Seen::Pass => n,
        Seen::HandOver(all) => {
            *guard = None;
            WATCHED.store(-1, Relaxed);
            if hand_over(cfg, fd, 1, &all) {
                HANDED.store(fd, Relaxed);
            }
            cfg.words.set_state(cfg.slot, State::Kept);
            0
        }
        Seen::Refuse => {
            *guard = None;
            WATCHED.store(-1, Relaxed);
            cfg.words.set_state(cfg.slot, State::Kept);
            0
        }
    }
}

/// Whether a read on the watched connection must see an end of file now:
/// between requests when the program is to end, or once handed over.
fn read_ends(fd: c_int) -> bool {
    if HANDED.load(Relaxed) == fd {
        return true;
    }
    if !watched(fd) || !ending() {
        return false;
    }
    let guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()
        .is_some_and(|c| c.fd == fd && !c.in_request && !c.reading_params)
}

/// A read interrupted by the worker's stop signal, in the middle of a
/// request: tried again (the program never sees our signal).
fn retry(r: isize, fd: c_int) -> bool {
    r < 0 && errno() == EINTR && STOP.load(Relaxed) && watched(fd) && !read_ends(fd)
}

fn after_write(fd: c_int, bytes: &[u8]) {
    let Some(cfg) = CONFIG.get() else { return };
    let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(conn) = guard.as_mut().filter(|c| c.fd == fd) {
        conn.outbound(cfg, bytes);
    }
}

// ---- the interposed functions ----

#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    let real = real!("read", ReadFn);
    if !watched(fd) && HANDED.load(Relaxed) != fd {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n) };
    }
    loop {
        if read_ends(fd) {
            return 0;
        }
        // SAFETY: as above.
        let r = unsafe { real(fd, buf, n) };
        if retry(r, fd) {
            continue;
        }
        return after_read(fd, buf, r);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> isize {
    let real = real!("recv", RecvFn);
    if (!watched(fd) && HANDED.load(Relaxed) != fd) || flags & MSG_PEEK != 0 {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n, flags) };
    }
    loop {
        if read_ends(fd) {
            return 0;
        }
        // SAFETY: as above.
        let r = unsafe { real(fd, buf, n, flags) };
        if retry(r, fd) {
            continue;
        }
        return after_read(fd, buf, r);
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recvfrom(
    fd: c_int,
    buf: *mut c_void,
    n: usize,
    flags: c_int,
    addr: *mut c_void,
    len: *mut u32,
) -> isize {
    let real = real!("recvfrom", RecvfromFn);
    if (!watched(fd) && HANDED.load(Relaxed) != fd) || flags & MSG_PEEK != 0 {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n, flags, addr, len) };
    }
    loop {
        if read_ends(fd) {
            return 0;
        }
        // SAFETY: as above.
        let r = unsafe { real(fd, buf, n, flags, addr, len) };
        if retry(r, fd) {
            continue;
        }
        return after_read(fd, buf, r);
    }
}

/// A write to a connection handed over: dropped (the worker answers).
fn handed_write(fd: c_int, n: usize) -> Option<isize> {
    (HANDED.load(Relaxed) == fd).then_some(n as isize)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn write(fd: c_int, buf: *const c_void, n: usize) -> isize {
    let real = real!("write", WriteFn);
    if !watched(fd) {
        if let Some(r) = handed_write(fd, n) {
            return r;
        }
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n) };
    }
    // SAFETY: as above.
    let r = unsafe { real(fd, buf, n) };
    if r > 0 {
        // SAFETY: the caller's buffer holds at least the `r` bytes written.
        after_write(fd, unsafe { std::slice::from_raw_parts(buf as *const u8, r as usize) });
    }
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn send(fd: c_int, buf: *const c_void, n: usize, flags: c_int) -> isize {
    let real = real!("send", SendFn);
    if !watched(fd) {
        if let Some(r) = handed_write(fd, n) {
            return r;
        }
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n, flags) };
    }
    // SAFETY: as above.
    let r = unsafe { real(fd, buf, n, flags) };
    if r > 0 {
        // SAFETY: the caller's buffer holds at least the `r` bytes written.
        after_write(fd, unsafe { std::slice::from_raw_parts(buf as *const u8, r as usize) });
    }
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn sendto(
    fd: c_int,
    buf: *const c_void,
    n: usize,
    flags: c_int,
    addr: *const c_void,
    len: u32,
) -> isize {
    let real = real!("sendto", SendtoFn);
    if !watched(fd) {
        if let Some(r) = handed_write(fd, n) {
            return r;
        }
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: as above.
    let r = unsafe { real(fd, buf, n, flags, addr, len) };
    if r > 0 {
        // SAFETY: the caller's buffer holds at least the `r` bytes written.
        after_write(fd, unsafe { std::slice::from_raw_parts(buf as *const u8, r as usize) });
    }
    r
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn writev(fd: c_int, iov: *const IoVec, count: c_int) -> isize {
    let real = real!("writev", WritevFn);
    if !watched(fd) {
        if HANDED.load(Relaxed) == fd && count >= 0 {
            // SAFETY: the caller's `count` iovecs.
            let v = unsafe { std::slice::from_raw_parts(iov, count as usize) };
            return v.iter().map(|x| x.len as isize).sum();
        }
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, iov, count) };
    }
    // SAFETY: as above.
    let r = unsafe { real(fd, iov, count) };
    if r > 0 && count > 0 {
        // SAFETY: the caller's `count` iovecs, of which `r` bytes were written in order.
        let v = unsafe { std::slice::from_raw_parts(iov, count as usize) };
        let mut left = r as usize;
        for x in v {
            if left == 0 {
                break;
            }
            let n = x.len.min(left);
            // SAFETY: each iovec's buffer holds its `len` bytes.
            after_write(fd, unsafe { std::slice::from_raw_parts(x.base as *const u8, n) });
            left -= n;
        }
    }
    r
}

/// accept() on the pool's socket: never once the program is to end; a
/// refused client handed to the worker; the new connection watched.
fn accepting(fd: c_int, addr: *mut c_void, len: *mut u32, flags: c_int) -> c_int {
    let real = real!("accept4", Accept4Fn);
    let Some(cfg) = CONFIG.get().filter(|c| c.listen == fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, addr, len, flags) };
    };
    {
        // A connection the program dropped without closing is no longer ours.
        let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        WATCHED.store(-1, Relaxed);
    }
    cfg.words.set_state(cfg.slot, State::Idle);
    loop {
        if ending() {
            set_errno(EINVAL);
            return -1;
        }
        // SAFETY: as above.
        let c = unsafe { real(fd, addr, len, flags) };
        if c < 0 {
            match errno() {
                EINTR if ending() => {
                    set_errno(EINVAL);
                    return -1;
                }
                EAGAIN => {
                    // The pool's socket is shared: another took the
                    // connection. Wait for the next, as a blocking accept.
                    let poll = real!("poll", PollFn);
                    let mut p = PollFd {
                        fd,
                        events: POLLIN,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { poll(&mut p, 1, -1) };
                    continue;
                }
                _ => return c,
            }
        }
        if !cfg.allowed.is_empty() && !allowed(cfg, c) {
            hand_over(cfg, c, 2, &[]);
            let close = real!("close", CloseFn);
            // SAFETY: closes the descriptor just accepted here.
            unsafe { close(c) };
            continue;
        }
        let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some(Conn::new(c));
        WATCHED.store(c, Relaxed);
        cfg.words.sw(cfg.slot, s::CONN_FD).store(c as u64 + 1, Relaxed);
        cfg.words.set_state(cfg.slot, State::Kept);
        return c;
    }
}

/// Whether the peer of TCP connection `c` is in `allowed_clients`.
fn allowed(cfg: &Config, c: c_int) -> bool {
    let mut sa = [0u8; 128];
    let mut len = sa.len() as u32;
    // SAFETY: getpeername writes at most `len` bytes into the local buffer.
    if unsafe { getpeername(c, sa.as_mut_ptr().cast(), &mut len) } != 0 {
        return true;
    }
    let family = u16::from_ne_bytes([sa[0], sa[1]]);
    let ip: std::net::IpAddr = match family {
        2 => std::net::Ipv4Addr::new(sa[4], sa[5], sa[6], sa[7]).into(),
        10 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&sa[8..24]);
            let v6 = std::net::Ipv6Addr::from(a);
            v6.to_ipv4_mapped().map_or(v6.into(), Into::into)
        }
        // A unix socket: allowed_clients is for TCP.
        _ => return true,
    };
    cfg.allowed.contains(&ip)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int {
    accepting(fd, addr, len, 0)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn accept4(fd: c_int, addr: *mut c_void, len: *mut u32, flags: c_int) -> c_int {
    accepting(fd, addr, len, flags)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn close(fd: c_int) -> c_int {
    let real = real!("close", CloseFn);
    if fd >= 0 && HANDED.load(Relaxed) == fd {
        HANDED.store(-1, Relaxed);
    }
    if watched(fd) {
        let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        WATCHED.store(-1, Relaxed);
        if let Some(cfg) = CONFIG.get() {
            cfg.words.sw(cfg.slot, s::CONN_FD).store(0, Relaxed);
            cfg.words.set_state(cfg.slot, State::Idle);
        }
    }
    // SAFETY: the caller's argument, passed on.
    unsafe { real(fd) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn shutdown(fd: c_int, how: c_int) -> c_int {
    // A handed-over connection is the worker's now: the program's
    // shutdown would end the worker's answer too.
    if fd >= 0 && HANDED.load(Relaxed) == fd {
        return 0;
    }
    let real = real!("shutdown", ShutdownFn);
    // SAFETY: the caller's arguments, passed on.
    unsafe { real(fd, how) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn poll(fds: *mut PollFd, n: u64, timeout: c_int) -> c_int {
    let real = real!("poll", PollFn);
    loop {
        // SAFETY: the caller's arguments, passed on.
        let r = unsafe { real(fds, n, timeout) };
        // php-cgi polls a new connection for its first bytes: our stop
        // signal must not make it drop one it just accepted.
        // SAFETY: `n` >= 1 pollfds at `fds` (the caller's).
        if r < 0 && errno() == EINTR && STOP.load(Relaxed) && n == 1 && watched(unsafe { (*fds).fd }) {
            continue;
        }
        return r;
    }
}
