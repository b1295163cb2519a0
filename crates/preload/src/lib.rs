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
#[path = "../../../src/pool/watch.rs"]
mod watch;

use record::{State, Words, s};
use watch::{Rules, Seen, Watch};

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

unsafe extern "C" {
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn __errno_location() -> *mut c_int;
    fn __libc_current_sigrtmin() -> c_int;
    fn mmap(addr: *mut c_void, len: usize, prot: c_int, flags: c_int, fd: c_int, off: i64) -> *mut c_void;
    fn sigaction(sig: c_int, act: *const SigAction, old: *mut SigAction) -> c_int;
    fn sendmsg(fd: c_int, msg: *const MsgHdr, flags: c_int) -> isize;
    fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
    fn getpeername(fd: c_int, addr: *mut c_void, len: *mut u32) -> c_int;
    fn getpid() -> c_int;
    fn pthread_sigmask(how: c_int, set: *const [u64; 16], old: *mut [u64; 16]) -> c_int;
}

const RTLD_NEXT: *mut c_void = -1isize as *mut c_void;
const EINTR: c_int = 4;
const EAGAIN: c_int = 11;
const EINVAL: c_int = 22;
const MSG_PEEK: c_int = 2;
const MSG_NOSIGNAL: c_int = 0x4000;
const F_SETFD: c_int = 2;
const F_DUPFD_CLOEXEC: c_int = 1030;
const SIG_BLOCK: c_int = 0;
const SIG_UNBLOCK: c_int = 1;
const FD_CLOEXEC: c_int = 1;
const POLLIN: i16 = 1;

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
    rules: Rules<'static>,
    listen: c_int,
    ctl: c_int,
    allowed: Vec<std::net::IpAddr>,
    /// The process that set up: a forked copy (a script's pcntl_fork)
    /// must not accept (the worker supervises only the program).
    pid: c_int,
    /// The stop signal, as a sigset_t.
    stop: [u64; 16],
}

static CONFIG: std::sync::OnceLock<Config> = std::sync::OnceLock::new();
/// The connection being watched (-1: none), read without the lock.
static WATCHED: AtomicI32 = AtomicI32::new(-1);
/// A connection handed to the worker, now read as closed (-1: none).
static HANDED: AtomicI32 = AtomicI32::new(-1);
/// A connection closed gracefully under the program, read as closed.
static CLOSED: AtomicI32 = AtomicI32::new(-1);
/// The worker asked the program to stop after its request in progress.
static STOP: AtomicBool = AtomicBool::new(false);
/// max_requests or max_memory reached: end after this request.
static RETIRE: AtomicBool = AtomicBool::new(false);
/// The watched connection's descriptor and what is followed of it.
static CONN: Mutex<Option<(c_int, Watch)>> = Mutex::new(None);

/// Set up at the first accept() on the pool's socket, in the process that
/// makes it: not at load time, so a wrapper (`/usr/bin/env php-cgi`, a
/// shell) passes the environment and descriptors on to the program.
fn init_once(fd: c_int) -> Option<&'static Config> {
    static TRIED: std::sync::Once = std::sync::Once::new();
    if let Some(c) = CONFIG.get() {
        return Some(c);
    }
    if fd != 0 {
        // corral passes the pool's socket as descriptor 0 (FastCGI's rule).
        return None;
    }
    TRIED.call_once(init);
    CONFIG.get()
}

fn init() {
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
    // SAFETY: the program is single-threaded at its first accept() (a
    // FastCGI server of one request at a time) and reads its environment
    // with getenv only.
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
    // corral's descriptor moved out of the program's way (a high number,
    // close-on-exec: no script's child keeps it).
    // SAFETY: fcntl and close on the descriptor corral passed.
    let ctl = unsafe {
        let high = fcntl(ctl as c_int, F_DUPFD_CLOEXEC, 900);
        if high >= 0 {
            close(ctl as c_int);
            high
        } else {
            fcntl(ctl as c_int, F_SETFD, FD_CLOEXEC);
            ctl as c_int
        }
    };
    let cfg = Config {
        rules: Rules {
            words: Words {
                words,
                slots: slots as usize,
            },
            slot: slot as usize,
            ping,
            status,
            extensions,
            max_requests,
            max_memory,
            usage,
            cpu_mark,
        },
        listen: listen as c_int,
        ctl,
        allowed,
        // SAFETY: getpid has no side effects.
        pid: unsafe { getpid() },
        stop: mask_of(__libc_current_sigrtmin_safe() + stop_sig as c_int),
    };
    if CONFIG.set(cfg).is_err() {
        return;
    }
    // The worker's "stop after this request": a signal of no meaning to
    // the program, handled without SA_RESTART and blocked except while the
    // library waits for a connection or a next request, so it interrupts
    // those waits and never the program's own (a script's sleep()).
    let act = SigAction {
        handler: on_stop as extern "C" fn(c_int) as usize,
        mask: [0; 16],
        flags: 0,
        restorer: 0,
    };
    // SAFETY: installs a handler that only stores to an atomic, then blocks it.
    unsafe {
        let sig = __libc_current_sigrtmin() + stop_sig as c_int;
        sigaction(sig, &act, std::ptr::null_mut());
        if let Some(c) = CONFIG.get() {
            pthread_sigmask(SIG_BLOCK, &c.stop, std::ptr::null_mut());
        }
    }
}

fn __libc_current_sigrtmin_safe() -> c_int {
    // SAFETY: a glibc query with no arguments.
    unsafe { __libc_current_sigrtmin() }
}

/// A sigset_t with one signal.
fn mask_of(sig: c_int) -> [u64; 16] {
    let mut m = [0u64; 16];
    if (1..=1024).contains(&sig) {
        let bit = (sig - 1) as usize;
        m[bit / 64] |= 1 << (bit % 64);
    }
    m
}

/// Runs `f` (a wait of the library's) with the stop signal deliverable.
fn with_stop_signal<T>(cfg: &Config, f: impl FnOnce() -> T) -> T {
    // SAFETY: changes this thread's mask for the stop signal only.
    unsafe { pthread_sigmask(SIG_UNBLOCK, &cfg.stop, std::ptr::null_mut()) };
    let r = f();
    let e = errno();
    // SAFETY: as above.
    unsafe { pthread_sigmask(SIG_BLOCK, &cfg.stop, std::ptr::null_mut()) };
    set_errno(e);
    r
}

extern "C" fn on_stop(_: c_int) {
    STOP.store(true, Relaxed);
}

fn ending() -> bool {
    STOP.load(Relaxed)
        || RETIRE.load(Relaxed)
        // The worker's word for it, in case its signal came before our
        // handler was in place (then it was ignored, see corral's spawn).
        || CONFIG
            .get()
            .is_some_and(|c| c.rules.words.sw(c.rules.slot, s::QUIT).load(Relaxed) != 0)
}

// ---- what the library measures ----

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

/// glibc's `struct rusage` on 64-bit Linux: two timevals, 14 longs.
#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    maxrss: i64,
    rest: [i64; 13],
}

unsafe extern "C" {
    fn getrusage(who: c_int, usage: *mut Rusage) -> c_int;
}

/// The process's CPU time (ns) at the last `usage`.
static LAST_CPU: AtomicU64 = AtomicU64::new(0);

/// CPU time (ns) and peak resident memory (bytes) of the process: one
/// system call per request, at its end (the start reuses the last one).
fn usage() -> (u64, u64) {
    let mut ru = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        maxrss: 0,
        rest: [0; 13],
    };
    // SAFETY: getrusage(RUSAGE_SELF) writes one rusage through the valid pointer.
    if unsafe { getrusage(0, &mut ru) } != 0 {
        return (LAST_CPU.load(Relaxed), 0);
    }
    let us = |t: &Timeval| t.sec as u64 * 1_000_000 + t.usec as u64;
    let cpu = (us(&ru.utime) + us(&ru.stime)) * 1000;
    LAST_CPU.store(cpu, Relaxed);
    (cpu, ru.maxrss.max(0) as u64 * 1024)
}

fn cpu_mark() -> u64 {
    LAST_CPU.load(Relaxed)
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
    let Some((_, watch)) = guard.as_mut().filter(|c| c.0 == fd) else {
        return n;
    };
    // SAFETY: the program's buffer holds the `n` bytes just read into it.
    let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, n as usize) };
    match watch.inbound(&cfg.rules, bytes) {
        Seen::Pass => n,
        Seen::HandOver(all) => {
            *guard = None;
            WATCHED.store(-1, Relaxed);
            if hand_over(cfg, fd, 1, &all) {
                HANDED.store(fd, Relaxed);
            }
            cfg.rules.words.set_state(cfg.rules.slot, State::Kept);
            0
        }
        Seen::Refuse => {
            *guard = None;
            WATCHED.store(-1, Relaxed);
            cfg.rules.words.set_state(cfg.rules.slot, State::Kept);
            0
        }
    }
}

/// Whether a read on the watched connection must see an end of file now:
/// between requests when the program is to end (after a graceful close,
/// once), or once handed over.
fn read_ends(fd: c_int) -> bool {
    if HANDED.load(Relaxed) == fd || CLOSED.load(Relaxed) == fd {
        return true;
    }
    if !watched(fd) || !ending() {
        return false;
    }
    let between = {
        let guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().is_some_and(|(f, w)| *f == fd && w.may_end())
    };
    if between {
        close_gracefully(fd);
        CLOSED.store(fd, Relaxed);
    }
    between
}

/// Ends a kept connection between requests as a php-fpm child does: our
/// side shut, then what still comes read and dropped until the web server
/// closes (at most 1 s). A request it sent just then is thus known not to
/// have run (an end of file, not a reset): nginx and corral send it again.
fn close_gracefully(fd: c_int) {
    let shutdown = real!("shutdown", ShutdownFn);
    let read = real!("read", ReadFn);
    let poll = real!("poll", PollFn);
    // SAFETY: shuts the writing side of the program's own connection.
    if unsafe { shutdown(fd, 1) } != 0 {
        return;
    }
    let until = std::time::Instant::now() + std::time::Duration::from_secs(1);
    let mut scratch = [0u8; 4096];
    loop {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let mut p = PollFd {
            fd,
            events: POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, then a read into the local buffer.
        unsafe {
            if poll(&mut p, 1, left.as_millis() as c_int + 1) <= 0 {
                if errno() == EINTR {
                    continue;
                }
                return;
            }
            if read(fd, scratch.as_mut_ptr().cast(), scratch.len()) <= 0 && errno() != EINTR {
                return;
            }
        }
    }
}

/// Whether the watched connection waits for its next request (a read now
/// may block until the web server sends one: the stop signal may wake it).
fn between_requests(fd: c_int) -> bool {
    let guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().is_some_and(|(f, w)| *f == fd && w.waiting())
}

/// A read of the watched (or handed-over) connection: `real` reads.
fn watched_read(fd: c_int, buf: *const c_void, real: impl Fn() -> isize) -> isize {
    /// Not a read: the connection ended under the program meanwhile.
    const ENDED: isize = isize::MIN;
    loop {
        if read_ends(fd) {
            return 0;
        }
        let r = match CONFIG.get() {
            Some(cfg) if between_requests(fd) => with_stop_signal(cfg, || if read_ends(fd) { ENDED } else { real() }),
            _ => real(),
        };
        if r == ENDED {
            return 0;
        }
        // Our stop signal: looked at again (the end of the connection, or
        // the read resumed); the program never sees it.
        if r < 0 && errno() == EINTR && STOP.load(Relaxed) {
            continue;
        }
        return after_read(fd, buf, r);
    }
}

fn after_write(fd: c_int, bytes: &[u8]) {
    let Some(cfg) = CONFIG.get() else { return };
    let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, watch)) = guard.as_mut().filter(|c| c.0 == fd)
        && let Some(retire) = watch.outbound(&cfg.rules, bytes)
    {
        if retire {
            RETIRE.store(true, Relaxed);
        }
        if ending() {
            // The last answer is out: shut our side at once, so a web
            // server that keeps the connection sees its end before it sends
            // the next request on it (nginx then takes a new connection);
            // the program's next read drains it (`close_gracefully`).
            let shutdown = real!("shutdown", ShutdownFn);
            // SAFETY: shuts the writing side of the program's own connection.
            unsafe { shutdown(fd, 1) };
        }
    }
}

// ---- the interposed functions ----

#[unsafe(no_mangle)]
pub unsafe extern "C" fn read(fd: c_int, buf: *mut c_void, n: usize) -> isize {
    let real = real!("read", ReadFn);
    if !watched(fd) && HANDED.load(Relaxed) != fd && CLOSED.load(Relaxed) != fd {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n) };
    }
    // SAFETY: as above.
    watched_read(fd, buf, || unsafe { real(fd, buf, n) })
}

unsafe extern "C" {
    fn __chk_fail() -> !;
}

/// `read` of a program built with _FORTIFY_SOURCE.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __read_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize) -> isize {
    if n > buflen {
        // SAFETY: glibc's own report of a buffer overflow (it aborts).
        unsafe { __chk_fail() }
    }
    // SAFETY: the caller's arguments, checked as glibc does.
    unsafe { read(fd, buf, n) }
}

/// `recv` of a program built with _FORTIFY_SOURCE.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn __recv_chk(fd: c_int, buf: *mut c_void, n: usize, buflen: usize, flags: c_int) -> isize {
    if n > buflen {
        // SAFETY: as above.
        unsafe { __chk_fail() }
    }
    // SAFETY: as above.
    unsafe { recv(fd, buf, n, flags) }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn recv(fd: c_int, buf: *mut c_void, n: usize, flags: c_int) -> isize {
    let real = real!("recv", RecvFn);
    if (!watched(fd) && HANDED.load(Relaxed) != fd && CLOSED.load(Relaxed) != fd) || flags & MSG_PEEK != 0 {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n, flags) };
    }
    // SAFETY: as above.
    watched_read(fd, buf, || unsafe { real(fd, buf, n, flags) })
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
    if (!watched(fd) && HANDED.load(Relaxed) != fd && CLOSED.load(Relaxed) != fd) || flags & MSG_PEEK != 0 {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, buf, n, flags, addr, len) };
    }
    // SAFETY: as above.
    watched_read(fd, buf, || unsafe { real(fd, buf, n, flags, addr, len) })
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
            if n > 0 {
                // SAFETY: each iovec's buffer holds its `len` bytes.
                after_write(fd, unsafe { std::slice::from_raw_parts(x.base as *const u8, n) });
            }
            left -= n;
        }
    }
    r
}

/// accept() on the pool's socket: never once the program is to end; a
/// refused client handed to the worker; the new connection watched.
fn accepting(fd: c_int, addr: *mut c_void, len: *mut u32, flags: c_int) -> c_int {
    let real = real!("accept4", Accept4Fn);
    let Some(cfg) = init_once(fd).filter(|c| c.listen == fd) else {
        // SAFETY: the caller's arguments, passed on.
        return unsafe { real(fd, addr, len, flags) };
    };
    // SAFETY: getpid has no side effects.
    if unsafe { getpid() } != cfg.pid {
        // A forked copy of the program: not under the worker's watch.
        set_errno(EINVAL);
        return -1;
    }
    {
        // A connection the program dropped without closing is no longer ours.
        let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        WATCHED.store(-1, Relaxed);
    }
    cfg.rules.words.set_state(cfg.rules.slot, State::Idle);
    /// Not accepted: the program is to end.
    const ENDING: c_int = c_int::MIN;
    loop {
        // SAFETY: as above.
        let c = with_stop_signal(cfg, || {
            if ending() {
                ENDING
            } else {
                unsafe { real(fd, addr, len, flags) }
            }
        });
        if c == ENDING {
            set_errno(EINVAL);
            return -1;
        }
        if c < 0 {
            match errno() {
                EINTR => continue,
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
                    with_stop_signal(cfg, || unsafe { poll(&mut p, 1, -1) });
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
        // A number reused: whatever was marked of the old one is gone.
        let _ = HANDED.compare_exchange(c, -1, Relaxed, Relaxed);
        let _ = CLOSED.compare_exchange(c, -1, Relaxed, Relaxed);
        let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        *guard = Some((c, Watch::default()));
        // The CPU clock a first request starts from.
        usage();
        WATCHED.store(c, Relaxed);
        let (words, slot) = (cfg.rules.words, cfg.rules.slot);
        words.sw(slot, s::CONN_FD).store(c as u64 + 1, Relaxed);
        words.set_state(slot, State::Kept);
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
    if CONFIG.get().is_some_and(|c| c.ctl == fd) {
        // corral's channel stays (a program closing every descriptor).
        return 0;
    }
    if fd >= 0 && HANDED.load(Relaxed) == fd {
        HANDED.store(-1, Relaxed);
    }
    if fd >= 0 && CLOSED.load(Relaxed) == fd {
        CLOSED.store(-1, Relaxed);
    }
    if watched(fd) {
        let mut guard = CONN.lock().unwrap_or_else(|e| e.into_inner());
        *guard = None;
        WATCHED.store(-1, Relaxed);
        if let Some(cfg) = CONFIG.get() {
            let (words, slot) = (cfg.rules.words, cfg.rules.slot);
            words.sw(slot, s::CONN_FD).store(0, Relaxed);
            words.set_state(slot, State::Idle);
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
