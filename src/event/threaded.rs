//! `worker_threads = N` (note 001): N threads of one worker share one epoll
//! instance and one table of connection slots. Any thread may handle any
//! connection:
//!
//! - A connection's socket is registered with EPOLLONESHOT: one event
//!   reaches one thread, and the socket is re-armed after its handling.
//! - Each slot carries note 001's generation and reference count in one
//!   word: a thread takes a reference before it looks at a slot, an event
//!   whose generation no longer matches is dropped, and a closed slot goes
//!   back to the free list only when the last reference is given back.
//! - Events for a connection another thread is running (from its pipes,
//!   its upstream socket, a timer) are recorded in the slot's state word
//!   and run by that thread before it lets go: a connection is never run
//!   by two threads at once, and no event is lost.
//! - One thread at a time blocks in epoll_wait; it wakes another to poll
//!   next only when it got a batch (leader and followers), so a lone event
//!   costs no second thread's wake-up.
//!
//! Each thread has its own service value (buffers, caches, timers); what
//! the service shares between its threads is its own business (corral's
//! HTTP shares its FastCGI groups and CGI children behind short locks).

use std::cell::UnsafeCell;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Instant;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::signal::Signal;
use socket2::Socket;

use super::reactor::{
    ACCEPT_BATCH, CHANNEL_TOKEN, EVENTS, HANDLE_BASE, Io, LISTENER_BASE, Next, Ready, SIGNAL_TOKEN, Service, Shed,
    Signals, Timers,
};
use super::slots::{sub_of, with_sub};
use super::{AcceptFrom, Told};
use crate::os::{net, signals};

/// Woken when the worker stops: level-triggered, never cleared, so every
/// thread sees it.
const STOP_TOKEN: u64 = u64::MAX - 2;

// The state word of a slot: pending event bits, then flags.
/// Per descriptor of the connection (0..=3), four bits: in, out, hang-up, peer closed.
const EV_BITS: u32 = 0xffff;
const WOKEN: u32 = 1 << 16;
/// The once-a-second look at timeouts.
const TICK: u32 = 1 << 17;
/// Graceful stop: `Service::drain`.
const DRAIN: u32 = 1 << 18;
/// The table is full: `Service::reclaim` (close this idle connection?).
const RECLAIM: u32 = 1 << 19;
const PENDING: u32 = EV_BITS | WOKEN | TICK | DRAIN | RECLAIM;
/// How many of the longest-idle connections a full table offers to close.
const RECLAIM_SCAN: usize = 32;
/// A thread is running the connection.
const RUN: u32 = 1 << 29;
/// The connection is closed; the slot returns to the free list when its
/// last reference goes.
const CLOSED: u32 = 1 << 30;
/// On the free list.
const FREE: u32 = 1 << 31;

const GEN_MASK: u64 = (1 << 29) - 1;

/// Events taken per epoll_wait by one thread.
const BATCH: usize = EVENTS / 4;

/// Three batches in a row from epoll_wait of at least a quarter of the
/// most one can hold wake a parked thread to poll (and so serve) alongside
/// the one that got them: a backlog that lasts, not a burst. Smaller or
/// isolated batches are cheaper to serve alone than to share. Measured on
/// 2 cores (wrk on the same cores), CPU per request against one thread: a
/// threshold of 4 cost +14% on keep-alive, 16 cost +4-7%, 32 +3-9% but
/// +17% under connection churn (bursts of accepts wake the follower for
/// little work); 32 three times in a row: +1% under churn, +5% on
/// keep-alive with the second thread's throughput kept (+23% req/s).
const BATCH_FOR_TWO: usize = BATCH / 4;
const BIG_IN_A_ROW: u32 = 3;

struct CellData<C> {
    conn: Option<C>,
    /// What is armed (0 in, 1 out, 2 nothing but a hang-up).
    want: u8,
    reserve: bool,
    /// The peer's FIN was reported: not asked for again (it would fire at
    /// every re-arm).
    peer_closed: bool,
}

struct Cell<C> {
    /// Generation (bits 32..) and references (bits 0..32).
    tag: AtomicU64,
    state: AtomicU32,
    /// Since when (ms after `Shared::base`, plus one) the connection is
    /// idle; 0 while busy. What a full table looks at to make room.
    idle_since: AtomicU64,
    data: UnsafeCell<CellData<C>>,
}

// SAFETY: `data` is only touched by the one thread holding RUN in `state`
// (taken with a compare-and-swap, released with Release ordering), or by
// the thread that took the slot off the free list before publishing its
// token; the connection moves between threads, hence `C: Send`.
unsafe impl<C: Send> Sync for Cell<C> {}

struct Shared<C> {
    epoll: Epoll,
    cells: Box<[Cell<C>]>,
    free: Mutex<Vec<u32>>,
    /// Live connections other than refused ones finishing their close.
    serving: AtomicUsize,
    live: AtomicUsize,
    limit: usize,
    listeners: Vec<(Socket, usize)>,
    told: Option<Told>,
    /// A thread is blocked in epoll_wait. The others park meanwhile, and
    /// that thread wakes one when it got more than one event (leader and
    /// followers): a lone event then wakes no second thread, and a batch
    /// is shared out.
    polling: AtomicBool,
    /// Big batches in a row (see `BATCH_FOR_TWO`).
    big_in_a_row: AtomicU32,
    park: Mutex<()>,
    unpark: Condvar,
    draining: AtomicBool,
    stop: AtomicBool,
    stop_fd: EventFd,
    /// Bumped on SIGUSR1: each thread reopens its logs when it sees it move.
    reopen: AtomicU64,
    /// Milliseconds since `base` of the last sweep (one thread sweeps).
    last_sweep: AtomicU64,
    /// ... of the earliest connection deadline the last sweep saw (the
    /// next sweep comes then, or a second after the last at the latest).
    next_sweep: AtomicU64,
    /// ... of the last connection refused for want of a slot (0: none in
    /// this burst), of the burst's first, and how many: one line when a
    /// burst starts, one with the total when a second passes without one.
    last_refusal: AtomicU64,
    burst_start: AtomicU64,
    refused: AtomicU64,
    /// The burst's reason: out of descriptors (else: no slot).
    refusing_for_fds: AtomicBool,
    /// A full table stopped accepting until then (ms since `base`; 0: not
    /// paused), so other workers on the shared socket take new connections.
    paused_until: AtomicU64,
    /// The reserve descriptor: out of descriptors, it is closed to accept
    /// one connection and refuse it, so the queue moves (as in the reactor).
    spare: Mutex<Option<std::fs::File>>,
    base: Instant,
}

/// How the `i`-th listening socket is watched: edge-triggered, one waiter
/// woken per connection across the workers.
fn listener_event(i: usize) -> EpollEvent {
    EpollEvent::new(
        EpollFlags::EPOLLIN | EpollFlags::EPOLLET | EpollFlags::EPOLLEXCLUSIVE,
        LISTENER_BASE + i as u64,
    )
}

fn token(idx: u32, generation: u64) -> u64 {
    ((generation & GEN_MASK) << 34) | idx as u64
}

/// Runs `services.len()` threads (each with its service) until a stop
/// signal, or until drained after SIGQUIT. Connection sockets are armed
/// one-shot for what the service waits for, so the service should read
/// as in level mode (once per event is enough); listeners are
/// edge-triggered.
pub fn run_threaded<S>(
    services: Vec<S>,
    listeners: Vec<(Socket, usize)>,
    connections: usize,
    signals: Signals,
    accept: AcceptFrom,
) -> io::Result<()>
where
    S: Service + Send,
    S::Conn: Send,
{
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    let et = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
    epoll.add(signals.fd.as_fd(), EpollEvent::new(et, SIGNAL_TOKEN))?;
    let stop_fd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)?;
    epoll.add(stop_fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, STOP_TOKEN))?;
    let told = match accept {
        AcceptFrom::Watch => {
            for (i, (sock, _)) in listeners.iter().enumerate() {
                epoll.add(sock.as_fd(), listener_event(i))?;
            }
            None
        }
        AcceptFrom::Told(t) => {
            epoll.add(t.channel.as_fd(), EpollEvent::new(et, CHANNEL_TOKEN))?;
            Some(t)
        }
    };
    let capacity = connections + (connections / 16).clamp(8, 1024);
    let cells = (0..capacity)
        .map(|_| Cell {
            tag: AtomicU64::new(0),
            state: AtomicU32::new(FREE),
            idle_since: AtomicU64::new(0),
            data: UnsafeCell::new(CellData {
                conn: None,
                want: 0,
                reserve: false,
                peer_closed: false,
            }),
        })
        .collect();
    let shared = Shared {
        epoll,
        cells,
        free: Mutex::new((0..capacity as u32).rev().collect()),
        spare: Mutex::new(super::reactor::open_spare()),
        serving: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        limit: connections,
        listeners,
        told,
        polling: AtomicBool::new(false),
        big_in_a_row: AtomicU32::new(0),
        park: Mutex::new(()),
        unpark: Condvar::new(),
        draining: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        stop_fd,
        reopen: AtomicU64::new(0),
        last_sweep: AtomicU64::new(0),
        next_sweep: AtomicU64::new(u64::MAX),
        last_refusal: AtomicU64::new(0),
        burst_start: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        refusing_for_fds: AtomicBool::new(false),
        paused_until: AtomicU64::new(0),
        base: Instant::now(),
    };
    let shared = &shared;
    let sigfd = &signals;
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        let mut services = services.into_iter();
        let first = services.next();
        for (i, svc) in services.enumerate() {
            let t = std::thread::Builder::new()
                .name(format!("worker-{}", i + 1))
                .spawn_scoped(scope, move || Thread::new(shared, svc).run(sigfd));
            match t {
                Ok(h) => handles.push(h),
                Err(e) => crate::error!("cannot start a worker thread: {e}; running with fewer"),
            }
        }
        let mut result = match first {
            Some(svc) => Thread::new(shared, svc).run(sigfd),
            None => Ok(()),
        };
        // The first thread is done: the worker is stopping.
        shared.request_stop();
        for h in handles {
            match h.join() {
                Ok(Err(e)) if result.is_ok() => result = Err(e),
                Ok(_) => {}
                Err(_) => crate::crit!("a worker thread panicked"),
            }
        }
        result
    })
}

fn refusal_reason(for_fds: bool) -> &'static str {
    if for_fds {
        "the worker is out of file descriptors"
    } else {
        "all worker_connections are busy"
    }
}

impl<C> Shared<C> {
    fn now_ms(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    fn full(&self) -> bool {
        self.serving.load(Ordering::Acquire) >= self.limit
    }

    /// Counts a refused connection: one line when a burst starts, one with
    /// the total when a second has passed without one (a flood of clients
    /// must not flood the log).
    fn count_refusal(&self, for_fds: bool) {
        let now = self.now_ms();
        self.refused.fetch_add(1, Ordering::AcqRel);
        if self.last_refusal.swap(now, Ordering::AcqRel) == 0 {
            self.burst_start.store(now, Ordering::Release);
            self.refusing_for_fds.store(for_fds, Ordering::Release);
            crate::warn!(
                "{} ({} connections): refusing new connections with 503",
                refusal_reason(for_fds),
                self.live.load(Ordering::Relaxed)
            );
        }
    }

    /// Takes the listening sockets out of the shared epoll (a graceful
    /// stop, a full table's pause).
    fn unwatch_listeners(&self) {
        for (sock, _) in &self.listeners {
            let _ = self.epoll.delete(sock.as_fd());
        }
    }

    /// A graceful stop: this worker's copies of the listening sockets go
    /// (the socket closes once the master's and every worker's have), while
    /// other threads may still hold their numbers. Each is replaced, in one
    /// atomic dup3, by a socket that never listens: a late accept fails
    /// instead of reaching a descriptor reused for something else.
    fn close_listeners(&self) {
        use std::os::fd::AsRawFd;
        for (sock, _) in &self.listeners {
            match Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None) {
                Ok(idle) => {
                    if let Err(e) = nix::unistd::dup3(idle.as_raw_fd(), sock.as_raw_fd(), nix::fcntl::OFlag::O_CLOEXEC)
                    {
                        crate::error!("cannot close a listening socket: dup3() failed: {e}");
                    }
                }
                Err(e) => crate::error!("cannot close a listening socket: socket() failed: {e}"),
            }
        }
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
        self.wake_follower(true);
    }

    /// Wakes one parked thread (or all). Taking the lock first means a
    /// thread between its last look at `polling` and its wait is not missed.
    fn wake_follower(&self, all: bool) {
        drop(self.park.lock().unwrap_or_else(|p| p.into_inner()));
        if all {
            self.unpark.notify_all();
        } else {
            self.unpark.notify_one();
        }
    }

    /// Waits for events as the thread that polls, or parks until woken
    /// (or `timeout_ms`, for this thread's own timers) while another polls.
    fn wait(&self, events: &mut [EpollEvent], timeout_ms: u16) -> io::Result<usize> {
        if timeout_ms == 0 {
            return self.epoll_wait(events, 0);
        }
        if self.polling.swap(true, Ordering::AcqRel) {
            let guard = self.park.lock().unwrap_or_else(|p| p.into_inner());
            if self.polling.load(Ordering::Acquire) && !self.stop.load(Ordering::Acquire) {
                let limit = std::time::Duration::from_millis(timeout_ms as u64);
                drop(self.unpark.wait_timeout(guard, limit));
            }
            return Ok(0);
        }
        let n = self.epoll_wait(events, timeout_ms);
        self.polling.store(false, Ordering::Release);
        if n.as_ref().is_ok_and(|&n| n >= BATCH_FOR_TWO) {
            // More than this thread can take at once: a follower polls next.
            if self.big_in_a_row.fetch_add(1, Ordering::Relaxed) + 1 >= BIG_IN_A_ROW {
                self.wake_follower(false);
            }
        } else {
            self.big_in_a_row.store(0, Ordering::Relaxed);
        }
        n
    }

    fn epoll_wait(&self, events: &mut [EpollEvent], timeout_ms: u16) -> io::Result<usize> {
        match self.epoll.wait(events, timeout_ms) {
            Ok(n) => Ok(n),
            Err(Errno::EINTR) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    fn cell(&self, tok: u64) -> Option<&Cell<C>> {
        self.cells.get((tok & 0xffff_ffff) as usize)
    }

    /// Gives back a reference; the last one frees a closed slot.
    fn release(&self, idx: usize) {
        let cell = &self.cells[idx];
        let prev = cell.tag.fetch_sub(1, Ordering::AcqRel);
        if prev & 0xffff_ffff == 1
            && cell
                .state
                .compare_exchange(CLOSED, FREE, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.free.lock().unwrap_or_else(|p| p.into_inner()).push(idx as u32);
        }
    }

    /// Arms a connection's socket for one event of what it waits for (in
    /// both event modes: a one-shot registration is re-evaluated when
    /// re-armed, so it behaves as level-triggered).
    /// While paused (the connection waits on its application), the peer's
    /// FIN is still asked for, so a client that leaves is seen at once.
    fn arm(&self, fd: std::os::fd::BorrowedFd<'_>, tok: u64, next: Next, add: bool, fin_seen: bool) -> io::Result<()> {
        let fin = if fin_seen {
            EpollFlags::empty()
        } else {
            EpollFlags::EPOLLRDHUP
        };
        let flags = match next {
            Next::Read | Next::Idle => EpollFlags::EPOLLIN | fin,
            Next::Write => EpollFlags::EPOLLOUT,
            _ => fin,
        } | EpollFlags::EPOLLONESHOT;
        let mut ev = EpollEvent::new(flags, tok);
        if add {
            self.epoll.add(fd, ev)
        } else {
            self.epoll.modify(fd, &mut ev)
        }
        .map_err(io::Error::from)
    }
}

/// One thread's part: its service, timers and accept backlog.
struct Thread<'a, S: Service> {
    shared: &'a Shared<S::Conn>,
    service: S,
    timers: Timers,
    pending_accept: Vec<usize>,
    /// Listeners to try again after a second (out of descriptors).
    accept_later: Vec<usize>,
    drained: bool,
    reopen_seen: u64,
    last_housekeeping: Instant,
}

impl<'a, S: Service> Thread<'a, S>
where
    S::Conn: Send,
{
    fn new(shared: &'a Shared<S::Conn>, service: S) -> Self {
        Thread {
            shared,
            service,
            timers: Timers::new(),
            pending_accept: Vec::new(),
            accept_later: Vec::new(),
            drained: false,
            reopen_seen: 0,
            last_housekeeping: Instant::now(),
        }
    }

    fn run(mut self, signals: &Signals) -> io::Result<()> {
        let result = self.run_loop(signals);
        self.service.shutdown();
        result
    }

    fn run_loop(&mut self, signals: &Signals) -> io::Result<()> {
        let sh = self.shared;
        let mut events = vec![EpollEvent::empty(); BATCH];
        let mut woken = Vec::new();
        loop {
            if sh.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            let timeout: u16 = if !self.pending_accept.is_empty() {
                0
            } else {
                let now = Instant::now();
                let due = self.service.timed(now);
                let timer = super::reactor::next_due_ms(&self.timers, due, now).unwrap_or(1000);
                // The next sweep, or the end of a full table's pause.
                let paused = match sh.paused_until.load(Ordering::Relaxed) {
                    0 => u64::MAX,
                    t => t,
                };
                let sweep = sh
                    .next_sweep
                    .load(Ordering::Relaxed)
                    .min(paused)
                    .saturating_sub(sh.now_ms());
                timer.min(sweep).clamp(1, 1000) as u16
            };
            let n = sh.wait(&mut events, timeout)?;
            self.service.turn();
            for ev in &events[..n] {
                match ev.data() {
                    STOP_TOKEN => return Ok(()),
                    SIGNAL_TOKEN => {
                        for sig in signals::drain(&signals.fd) {
                            self.on_signal(sig);
                        }
                    }
                    CHANNEL_TOKEN => self.on_told(),
                    t if t >= LISTENER_BASE => self.accept((t - LISTENER_BASE) as usize, None),
                    t if t >= HANDLE_BASE => {
                        if let Some(tok) = self.service.handle_target(t - HANDLE_BASE) {
                            self.deliver(with_sub(tok, 0), bits_of(sub_of(tok), ev.events()));
                        }
                    }
                    t => self.deliver(with_sub(t, 0), bits_of(sub_of(t), ev.events())),
                }
            }
            for i in std::mem::take(&mut self.pending_accept) {
                self.accept(i, None);
            }
            self.fire_timers();
            loop {
                self.service.wakeups(&mut woken);
                if woken.is_empty() {
                    break;
                }
                for tok in std::mem::take(&mut woken) {
                    self.deliver(tok, WOKEN);
                }
            }
            self.every_second();
            if let Some(t) = &sh.told {
                t.publish(sh.serving.load(Ordering::Relaxed));
            }
            if sh.draining.load(Ordering::Acquire) {
                if !self.drained {
                    self.drained = true;
                    self.service.drain_started();
                }
                if sh.live.load(Ordering::Acquire) == 0 {
                    sh.request_stop();
                    return Ok(());
                }
            }
        }
    }

    fn on_signal(&mut self, sig: Signal) {
        let sh = self.shared;
        match sig {
            Signal::SIGTERM | Signal::SIGINT => {
                crate::info!("worker received {sig}, exiting");
                sh.request_stop();
            }
            Signal::SIGQUIT if !sh.draining.swap(true, Ordering::AcqRel) => {
                crate::info!("gracefully shutting down");
                sh.unwatch_listeners();
                sh.close_listeners();
                self.drained = true;
                self.service.drain_started();
                self.for_each_live(DRAIN);
            }
            Signal::SIGUSR1 => {
                sh.reopen.fetch_add(1, Ordering::AcqRel);
            }
            Signal::SIGCHLD => self.service.child_exited(),
            _ => {}
        }
    }

    /// Once a second: this thread's housekeeping and logs; one thread also
    /// sweeps every connection for timeouts.
    fn every_second(&mut self) {
        let sh = self.shared;
        let paused = sh.paused_until.load(Ordering::Acquire);
        if paused != 0
            && (sh.now_ms() >= paused || !sh.full())
            && sh
                .paused_until
                .compare_exchange(paused, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            && !sh.draining.load(Ordering::Acquire)
        {
            for (i, (sock, _)) in sh.listeners.iter().enumerate() {
                let _ = sh.epoll.add(sock.as_fd(), listener_event(i));
                // Connections queued meanwhile raise no new edge.
                self.pending_accept.push(i);
            }
            // A graceful stop that began meanwhile keeps them out.
            if sh.draining.load(Ordering::Acquire) {
                sh.unwatch_listeners();
            }
        }
        let reopen = sh.reopen.load(Ordering::Acquire);
        if reopen != self.reopen_seen {
            self.reopen_seen = reopen;
            self.service.reopen_logs();
        }
        if self.last_housekeeping.elapsed().as_millis() >= 1000 {
            self.last_housekeeping = Instant::now();
            self.service.housekeeping();
            self.pending_accept.append(&mut self.accept_later);
        }
        let now_ms = sh.base.elapsed().as_millis() as u64;
        let last = sh.last_sweep.load(Ordering::Relaxed);
        if now_ms < last + 1000 && now_ms < sh.next_sweep.load(Ordering::Relaxed) {
            return;
        }
        if sh
            .last_sweep
            .compare_exchange(last, now_ms, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            // The connections' deadlines, as the TICKs reach them, make the next.
            sh.next_sweep.store(u64::MAX, Ordering::Relaxed);
            self.for_each_live(TICK);
            let last = sh.last_refusal.load(Ordering::Acquire);
            if last != 0 && sh.now_ms() >= last + 1000 {
                sh.last_refusal.store(0, Ordering::Release);
                let n = sh.refused.swap(0, Ordering::AcqRel);
                let secs = last.saturating_sub(sh.burst_start.load(Ordering::Acquire)) as f64 / 1000.0;
                let why = refusal_reason(sh.refusing_for_fds.load(Ordering::Acquire));
                crate::warn!("{n} connections refused in {secs:.1}s ({why})");
            }
        }
    }

    /// Delivers `bits` to every live connection.
    fn for_each_live(&mut self, bits: u32) {
        for i in 0..self.shared.cells.len() {
            let c = &self.shared.cells[i];
            if c.state.load(Ordering::Acquire) & (FREE | CLOSED) == 0 {
                let generation = c.tag.load(Ordering::Acquire) >> 32;
                self.deliver(token(i as u32, generation), bits);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, tok))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.deliver(tok, WOKEN);
        }
    }

    fn on_told(&mut self) {
        let Some(t) = &self.shared.told else { return };
        let mut msgs = Vec::new();
        let _ = t.take(&mut msgs);
        for (i, n) in msgs {
            if !self.shared.draining.load(Ordering::Acquire) {
                self.accept(i, Some(n.max(1)));
            }
        }
    }

    fn accept(&mut self, i: usize, told: Option<usize>) {
        let sh = self.shared;
        let budget = told.unwrap_or(ACCEPT_BATCH * 4);
        for _ in 0..budget {
            if sh.draining.load(Ordering::Acquire) {
                return;
            }
            let Some((sock, addr)) = sh.listeners.get(i) else {
                return;
            };
            if sh.full() {
                self.reclaim();
            }
            match net::accept(sock) {
                Ok((stream, peer)) if sh.full() => {
                    sh.count_refusal(false);
                    if let Some(conn) = self.service.refuse(stream, peer, *addr) {
                        self.insert(conn, true);
                    }
                    // Step aside (nginx's 500 ms): other workers on the
                    // shared socket take the next ones, or a slot frees.
                    if told.is_none() {
                        let until = sh.now_ms() + super::reactor::FULL_PAUSE.as_millis() as u64;
                        if sh.paused_until.swap(until, Ordering::AcqRel) == 0 {
                            sh.unwatch_listeners();
                        }
                        return;
                    }
                }
                Ok((stream, peer)) => self.open(stream, peer, *addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    match e.raw_os_error() {
                        Some(libc::EMFILE | libc::ENFILE) => match self.shed(i) {
                            Shed::Again => continue,
                            Shed::Empty => return,
                            Shed::Stuck => {}
                        },
                        Some(libc::ENOBUFS | libc::ENOMEM) => {}
                        _ => continue,
                    }
                    // No new edge will come for what is queued: look again later.
                    crate::error!("accept() failed: {e}; pausing accepts for a second");
                    if !self.accept_later.contains(&i) {
                        self.accept_later.push(i);
                    }
                    return;
                }
            }
        }
        if told.is_none() {
            // Budget spent before EAGAIN: no new edge will come for these.
            self.pending_accept.push(i);
        }
    }

    /// Out of descriptors: closes an idle connection if one can go, else
    /// spends the reserve descriptor on accepting one connection to refuse
    /// it.
    fn shed(&mut self, i: usize) -> Shed {
        let sh = self.shared;
        let before = sh.live.load(Ordering::Acquire);
        self.reclaim();
        if sh.live.load(Ordering::Acquire) < before {
            return Shed::Again;
        }
        let Some((sock, addr)) = sh.listeners.get(i) else {
            return Shed::Empty;
        };
        let mut spare = sh.spare.lock().unwrap_or_else(|p| p.into_inner());
        let (outcome, refused) = super::reactor::shed_one(&mut spare, &mut self.service, sock, *addr);
        if refused {
            sh.count_refusal(true);
        }
        outcome
    }

    /// Offers the longest-idle connections to the service for closing,
    /// until one closes.
    fn reclaim(&mut self) {
        let sh = self.shared;
        let mut idle: Vec<(u64, usize)> = sh
            .cells
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let t = c.idle_since.load(Ordering::Acquire);
                (t != 0).then_some((t, i))
            })
            .collect();
        idle.sort_unstable();
        for &(_, i) in idle.iter().take(RECLAIM_SCAN) {
            let generation = sh.cells[i].tag.load(Ordering::Acquire) >> 32;
            self.deliver(token(i as u32, generation), RECLAIM);
            if !sh.full() {
                return;
            }
        }
    }

    fn open(&mut self, stream: TcpStream, peer: SocketAddr, addr: usize) {
        let conn = self.service.open(stream, peer, addr);
        self.insert(conn, false);
    }

    /// Takes a free slot for `conn`, publishes it and arms its socket.
    fn insert(&mut self, conn: S::Conn, reserve: bool) {
        let sh = self.shared;
        let idx = sh.free.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(idx) = idx else {
            self.service.closed(conn);
            return;
        };
        let cell = &sh.cells[idx as usize];
        // SAFETY: the slot came off the free list: no thread runs it, and
        // none will until its token is published below (epoll add).
        let data = unsafe { &mut *cell.data.get() };
        data.conn = Some(conn);
        data.want = 0;
        data.reserve = reserve;
        data.peer_closed = false;
        sh.live.fetch_add(1, Ordering::AcqRel);
        if !reserve {
            sh.serving.fetch_add(1, Ordering::AcqRel);
        }
        let generation = cell.tag.load(Ordering::Acquire) >> 32;
        let tok = token(idx, generation);
        // Nothing is in progress on a new connection until it sends.
        let since = if reserve { 0 } else { sh.now_ms() };
        cell.idle_since.store(since, Ordering::Release);
        // RUN while arming: an event may arrive before `arm` returns.
        cell.state.store(RUN, Ordering::Release);
        cell.tag.fetch_add(1, Ordering::AcqRel);
        let fd = S::fd(data.conn.as_ref().expect("just stored"));
        if let Err(e) = sh.arm(fd, tok, Next::Read, true, false) {
            crate::error!("epoll_ctl(ADD) failed: {e}");
            self.close(idx as usize);
            sh.release(idx as usize);
            return;
        }
        self.finish(idx as usize, tok, 0);
    }

    /// Hands `bits` to the connection `tok`: runs it now, or leaves the
    /// bits to the thread running it.
    fn deliver(&mut self, tok: u64, bits: u32) {
        let sh = self.shared;
        let Some(cell) = sh.cell(tok) else { return };
        let idx = (tok & 0xffff_ffff) as usize;
        let tag = cell.tag.fetch_add(1, Ordering::AcqRel);
        if (tag >> 32) & GEN_MASK != (tok >> 34) & GEN_MASK {
            sh.release(idx); // stale: the slot was closed (and maybe reused)
            return;
        }
        let mut cur = cell.state.load(Ordering::Acquire);
        loop {
            if cur & (CLOSED | FREE) != 0 {
                sh.release(idx);
                return;
            }
            let want = if cur & RUN != 0 { cur | bits } else { cur | RUN };
            match cell
                .state
                .compare_exchange_weak(cur, want, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) if cur & RUN != 0 => {
                    sh.release(idx); // the running thread takes them
                    return;
                }
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.finish(idx, tok, bits);
    }

    /// Runs the connection (holding RUN and a reference) with `bits` and
    /// whatever other threads add meanwhile, then lets go.
    fn finish(&mut self, idx: usize, tok: u64, mut bits: u32) {
        let sh = self.shared;
        let cell = &sh.cells[idx];
        loop {
            if bits != 0 && !self.run_conn(idx, tok, bits) {
                break; // closed
            }
            match cell.state.compare_exchange(RUN, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(_) => {
                    bits = cell.state.fetch_and(!PENDING, Ordering::AcqRel) & PENDING;
                    // Events another thread's wake-up collected, maybe after
                    // this thread's: a turn of their own (fresh file checks).
                    self.service.turn();
                }
            }
        }
        sh.release(idx);
    }

    /// One pass over the pending `bits`; false if the connection closed.
    fn run_conn(&mut self, idx: usize, tok: u64, bits: u32) -> bool {
        let sh = self.shared;
        // SAFETY: this thread holds RUN for the slot (see `Cell`).
        let data = unsafe { &mut *sh.cells[idx].data.get() };
        let Some(conn) = data.conn.as_mut() else { return false };
        let mut next = None;
        if bits & RECLAIM != 0 {
            match self.service.reclaim(conn) {
                super::Reclaim::Close => next = Some(Next::Close),
                super::Reclaim::Busy => sh.cells[idx].idle_since.store(0, Ordering::Release),
                super::Reclaim::Keep => {}
            }
            if next.is_some() {
                self.close(idx);
                return false;
            }
        }
        let mut io = Io {
            epoll: &sh.epoll,
            token: tok,
            timers: &mut self.timers,
        };
        // The service's latest answer wins, as in the one-thread loop.
        let mut call = |service: &mut S, conn: &mut S::Conn, ready: Ready, next: &mut Option<Next>| {
            *next = Some(service.ready(conn, ready, &mut io));
        };
        if bits & DRAIN != 0 {
            next = Some(self.service.drain(conn));
        }
        if bits & TICK != 0 {
            match self.service.expired(conn, Instant::now()) {
                Some(Next::Close) => next = Some(Next::Close),
                Some(_) => call(&mut self.service, conn, Ready::WRITABLE, &mut next),
                None => {}
            }
            if next != Some(Next::Close)
                && let Some(d) = self.service.deadline(conn).filter(|&d| d > Instant::now())
            {
                // Not sooner than 10 ms from now (as the one-thread loop).
                let at = (d.saturating_duration_since(sh.base).as_millis() as u64).max(sh.now_ms() + 10);
                sh.next_sweep.fetch_min(at, Ordering::Relaxed);
            }
        }
        for sub in 0..4u8 {
            let b = (bits >> (sub * 4)) & 0xf;
            if b != 0 && next != Some(Next::Close) {
                call(
                    &mut self.service,
                    conn,
                    Ready::from_events(events_of(b), sub),
                    &mut next,
                );
            }
        }
        if bits & WOKEN != 0 && next != Some(Next::Close) {
            call(&mut self.service, conn, Ready::WOKEN, &mut next);
        }
        let Some(next) = next else { return true };
        if next == Next::Close {
            self.close(idx);
            return false;
        }
        // The idle list of a full table: idle since now, or busy (refused
        // connections finishing their close are never offered).
        let since = if next == Next::Idle && !data.reserve {
            sh.now_ms()
        } else {
            0
        };
        sh.cells[idx].idle_since.store(since, Ordering::Release);
        // Re-arm the socket after one of its events was consumed (one-shot),
        // or when level mode now waits for something else.
        let want = match next {
            Next::Read | Next::Idle => 0,
            Next::Write => 1,
            _ => 2,
        };
        let socket_fired = bits & 0xf != 0;
        let changed = want != data.want;
        data.peer_closed |= bits & 0b1000 != 0;
        if socket_fired || changed {
            data.want = want;
            let fd = S::fd(data.conn.as_ref().expect("live"));
            if let Err(e) = sh.arm(fd, tok, next, false, data.peer_closed) {
                crate::error!("epoll_ctl(MOD) failed: {e}");
                self.close(idx);
                return false;
            }
        }
        true
    }

    /// Closes the connection in slot `idx` (RUN held): its events from now
    /// on find another generation.
    fn close(&mut self, idx: usize) {
        let sh = self.shared;
        let cell = &sh.cells[idx];
        // SAFETY: this thread holds RUN for the slot.
        let data = unsafe { &mut *cell.data.get() };
        let conn = data.conn.take();
        cell.tag.fetch_add(1 << 32, Ordering::AcqRel);
        cell.idle_since.store(0, Ordering::Release);
        sh.live.fetch_sub(1, Ordering::AcqRel);
        if !data.reserve {
            sh.serving.fetch_sub(1, Ordering::AcqRel);
        }
        cell.state.store(CLOSED, Ordering::Release);
        if let Some(c) = conn {
            // Dropping the socket closes it, which also removes it from epoll.
            self.service.closed(c);
        }
    }
}

/// The pending bits for an epoll event on descriptor `sub`.
fn bits_of(sub: u8, ev: EpollFlags) -> u32 {
    let mut b = 0;
    if ev.intersects(EpollFlags::EPOLLIN) {
        b |= 0b0001;
    }
    if ev.contains(EpollFlags::EPOLLOUT) {
        b |= 0b0010;
    }
    if ev.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR) {
        b |= 0b0100;
    }
    if ev.contains(EpollFlags::EPOLLRDHUP) {
        b |= 0b1000;
    }
    b << (sub as u32 * 4)
}

/// The epoll events one descriptor's four pending bits stand for.
fn events_of(b: u32) -> EpollFlags {
    let mut ev = EpollFlags::empty();
    for (bit, flag) in [
        (0b0001, EpollFlags::EPOLLIN),
        (0b0010, EpollFlags::EPOLLOUT),
        (0b0100, EpollFlags::EPOLLHUP),
        (0b1000, EpollFlags::EPOLLRDHUP),
    ] {
        if b & bit != 0 {
            ev |= flag;
        }
    }
    ev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_bits_per_descriptor() {
        assert_eq!(bits_of(0, EpollFlags::EPOLLIN), 1);
        assert_eq!(bits_of(2, EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP), 0b1010 << 8);
        assert_eq!(bits_of(3, EpollFlags::EPOLLHUP) & EV_BITS, 0b0100 << 12);
        let ev = EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP;
        assert_eq!(events_of(bits_of(0, ev)), ev, "the bits keep the events");
        assert_eq!(token(5, 3) >> 34, 3);
        assert_eq!(sub_of(with_sub(token(5, 3), 2)), 2);
    }
}
