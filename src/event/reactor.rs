//! The worker's event loop: accept, dispatch readiness, sweep timers,
//! consume signals, and drain gracefully on SIGQUIT.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;
use socket2::Socket;

use super::slots::{RESERVED, Slots};
use crate::config::EventMode;
use crate::os::{net, signals};

/// What a connection waits for after a handler call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Read,
    /// Like `Read`, with nothing in progress (waiting for a request, or
    /// lingering): the loop may close it to make room for a new one.
    Idle,
    Write,
    /// Nothing wanted from the socket for now (other descriptors of the
    /// connection drive it); only errors and hang-ups are reported.
    Pause,
    Close,
}

/// Whether an idle connection may be closed to make room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reclaim {
    Close,
    /// A request arrived: it is busy now (its event is on the way).
    Busy,
    /// Not yet (a new connection whose first bytes may be in flight).
    Keep,
}

/// What epoll reported for a connection.
#[derive(Debug, Clone, Copy)]
pub struct Ready {
    pub readable: bool,
    pub writable: bool,
    /// Peer hung up or the socket has an error.
    pub hangup: bool,
    /// The peer shut its write side (EPOLLRDHUP): after the bytes already
    /// queued, a read returns end-of-file. In edge mode no further event
    /// comes for it, so a short read must not be taken as "drained".
    pub peer_closed: bool,
    /// Which descriptor of the connection: 0 for its socket, 1..=3 for
    /// ones it added with [`Io::watch`].
    pub source: u8,
    /// A wake-up the connection asked for with [`Io::wake_at`] is due.
    pub woken: bool,
}

impl Ready {
    /// A wake-up: nothing reported by epoll.
    pub(super) const WOKEN: Ready = Ready {
        readable: false,
        writable: false,
        hangup: false,
        peer_closed: false,
        source: 0,
        woken: true,
    };

    /// A connection whose timeout changed its course acts now: as if its
    /// socket were writable (no edge will come for it).
    pub(super) const WRITABLE: Ready = Ready {
        readable: false,
        writable: true,
        hangup: false,
        peer_closed: false,
        source: 0,
        woken: false,
    };

    /// What epoll's `ev` means for descriptor `source` of a connection.
    pub(super) fn from_events(ev: EpollFlags, source: u8) -> Ready {
        Ready {
            readable: ev.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP),
            writable: ev.contains(EpollFlags::EPOLLOUT),
            hangup: ev.intersects(EpollFlags::EPOLLHUP | EpollFlags::EPOLLERR),
            peer_closed: ev.contains(EpollFlags::EPOLLRDHUP),
            source,
            woken: false,
        }
    }
}

/// Lets a service add descriptors of its own (pipes to a child process)
/// to the loop, on behalf of one connection. They are edge-triggered in
/// every mode; events for them come back to that connection's `ready`.
pub struct Io<'a> {
    pub(super) epoll: &'a Epoll,
    pub(super) token: u64,
    pub(super) timers: &'a mut Timers,
}

/// Wake-ups asked for by connections, soonest first. An entry for a
/// connection closed meanwhile finds a stale token and is dropped.
pub(super) type Timers = std::collections::BinaryHeap<std::cmp::Reverse<(Instant, u64)>>;

/// Milliseconds until the earliest of the connections' timers and the
/// service's own timed work (rounded up), if any is set.
pub(super) fn next_due_ms(timers: &Timers, service_due: Option<Instant>, now: Instant) -> Option<u64> {
    timers
        .peek()
        .map(|t| t.0.0)
        .into_iter()
        .chain(service_due)
        .min()
        .map(|at| at.saturating_duration_since(now).as_millis() as u64 + 1)
}

impl Io<'_> {
    /// Watches `fd` as descriptor `sub` (1..=3) for reading or writing.
    pub fn watch(&self, fd: BorrowedFd<'_>, sub: u8, write: bool) -> io::Result<()> {
        let dir = if write {
            EpollFlags::EPOLLOUT
        } else {
            EpollFlags::EPOLLIN
        };
        let ev = EpollEvent::new(dir | EpollFlags::EPOLLET, super::slots::with_sub(self.token, sub));
        self.epoll.add(fd, ev).map_err(io::Error::from)
    }

    /// Watches a socket that outlives connections (one to an application
    /// server, kept in a pool) under `handle`, edge-triggered, once for its
    /// whole life: its events go to whichever connection
    /// [`Service::handle_target`] names at the time, so changing hands
    /// costs no `epoll_ctl`. `write`: writability too; without it a unix
    /// socket's peer reading what was sent (which signals write space every
    /// time) wakes nobody.
    pub fn watch_handle(&self, fd: BorrowedFd<'_>, handle: u64, write: bool) -> io::Result<()> {
        debug_assert!(handle < LISTENER_BASE - HANDLE_BASE);
        self.epoll
            .add(fd, Self::handle_event(handle, write))
            .map_err(io::Error::from)
    }

    /// Adds or removes writability on a socket watched with
    /// [`watch_handle`](Self::watch_handle). Adding reports the socket at
    /// once if it is writable already, so no edge is lost.
    pub fn rewatch_handle(&self, fd: BorrowedFd<'_>, handle: u64, write: bool) -> io::Result<()> {
        let mut ev = Self::handle_event(handle, write);
        self.epoll.modify(fd, &mut ev).map_err(io::Error::from)
    }

    fn handle_event(handle: u64, write: bool) -> EpollEvent {
        let flags = if write {
            Self::SOCKET_FLAGS
        } else {
            Self::SOCKET_FLAGS.difference(EpollFlags::EPOLLOUT)
        };
        EpollEvent::new(flags, HANDLE_BASE + handle)
    }

    const SOCKET_FLAGS: EpollFlags = EpollFlags::EPOLLIN
        .union(EpollFlags::EPOLLOUT)
        .union(EpollFlags::EPOLLRDHUP)
        .union(EpollFlags::EPOLLET);

    /// This connection's token, for another one to wake it (see
    /// [`Service::wakeups`]).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The token of this connection's descriptor `sub` (1..=3), for
    /// [`Service::handle_target`].
    pub fn sub_token(&self, sub: u8) -> u64 {
        super::slots::with_sub(self.token, sub)
    }

    /// Calls the connection back (with `woken`) at `at`, to the millisecond.
    pub fn wake_at(&mut self, at: Instant) {
        self.timers.push(std::cmp::Reverse((at, self.token)));
    }
}

/// A protocol served by the reactor: one value per worker process, called
/// for every event of every connection it accepted.
///
/// Only [`fd`](Service::fd), [`open`](Service::open) and
/// [`ready`](Service::ready) are required; the rest have defaults suited
/// to a simple protocol (close idle connections when the table is full or
/// the worker drains, drop a connection there is no room for).
pub trait Service {
    /// The state of one connection.
    type Conn;

    /// The connection's socket, as registered with epoll.
    fn fd(conn: &Self::Conn) -> BorrowedFd<'_>;
    /// A connection was accepted (nonblocking) on the `listener`-th
    /// configured address.
    fn open(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) -> Self::Conn;
    /// The socket (or a descriptor added with [`Io::watch`]) is ready, or a
    /// wake-up is due. In edge mode the socket is watched both ways once,
    /// so read and write until `WouldBlock`; say what to wait for next.
    fn ready(&mut self, conn: &mut Self::Conn, ready: Ready, io: &mut Io<'_>) -> Next;
    /// Every slot is taken: may this idle connection be closed now to
    /// make room?
    fn reclaim(&mut self, _conn: &mut Self::Conn) -> Reclaim {
        Reclaim::Close
    }
    /// Every slot is taken and none is idle: answer this new connection
    /// briefly, without reading a request. A connection returned is kept
    /// (in a reserve slot, if one is free) until it finishes closing.
    fn refuse(&mut self, _stream: TcpStream, _peer: SocketAddr, _listener: usize) -> Option<Self::Conn> {
        None
    }
    /// Called about once a second per connection, and at the earliest
    /// [`Service::deadline`]: `None` while nothing is due, else what the
    /// connection does now (usually close).
    fn expired(&mut self, _conn: &mut Self::Conn, _now: Instant) -> Option<Next> {
        None
    }
    /// When [`Service::expired`] next has something to do for this
    /// connection, if the service knows: the loop then looks at that time
    /// (to within 10 ms) rather than at its next once-a-second pass.
    fn deadline(&self, _conn: &Self::Conn) -> Option<Instant> {
        None
    }
    /// Graceful stop began (SIGQUIT, a reload, an upgrade): the connection
    /// should end soon; the worker exits when none is left.
    fn drain(&mut self, _conn: &mut Self::Conn) -> Next {
        Next::Close
    }
    /// The connection is gone; give back what it held.
    fn closed(&mut self, _conn: Self::Conn) {}
    /// Graceful stop began: called once on the service (on each thread's
    /// service with `worker_threads`) before [`Service::drain`] reaches
    /// its connections.
    fn drain_started(&mut self) {}
    /// Start of a loop turn (refresh cached time): what the loop handles
    /// until the next call arrived before it. The threaded loop also calls
    /// it before running events another thread collected.
    fn turn(&mut self) {}
    /// About once a second (flush buffered logs).
    fn housekeeping(&mut self) {}
    /// Timed work of the service's own that is due now (not tied to a
    /// connection); returns when it next is, so the loop wakes for it.
    fn timed(&mut self, _now: Instant) -> Option<Instant> {
        None
    }
    /// SIGUSR1.
    fn reopen_logs(&mut self) {}
    /// The process is about to exit.
    fn shutdown(&mut self) {}
    /// SIGCHLD: a child of this process changed state.
    fn child_exited(&mut self) {}
    /// Connections (by [`Io::token`]) to call back with `woken` now, for
    /// example ones waiting for a resource another connection released.
    fn wakeups(&mut self, _out: &mut Vec<u64>) {}
    /// Which connection's descriptor (a token from [`Io::token`] with its
    /// sub-descriptor, see [`Io::sub_token`]) the socket watched as
    /// `handle` serves now; `None` drops the event.
    fn handle_target(&mut self, _handle: u64) -> Option<u64> {
        None
    }
}

/// Where the reactor learns of signals.
pub struct Signals {
    pub fd: SignalFd,
}

pub(super) const SIGNAL_TOKEN: u64 = u64::MAX;
/// The master's dispatch channel (see [`super::told`]).
pub(super) const CHANNEL_TOKEN: u64 = u64::MAX - 1;
pub(super) const LISTENER_BASE: u64 = RESERVED;
/// Tokens from here to `LISTENER_BASE` are handles (see `Io::watch_handle`):
/// bit 63 is never set in a connection's token.
pub(super) const HANDLE_BASE: u64 = 1 << 63;
pub(super) const EVENTS: usize = 512;
pub(super) const ACCEPT_BATCH: usize = 64;
/// How many idle connections a full table looks at to free one.
const RECLAIM_SCAN: usize = 32;

struct Listener {
    sock: Socket,
    /// Which configured address it listens on (the service's `listener`).
    addr: usize,
    armed: bool,
}

struct Reactor<S: Service> {
    epoll: Epoll,
    mode: EventMode,
    service: S,
    slots: Slots<S::Conn>,
    /// worker_connections: the slots beyond it are a reserve where refused
    /// connections finish closing.
    limit: usize,
    listeners: Vec<Listener>,
    /// Edge mode: listeners that may still have connections queued.
    pending_accept: Vec<usize>,
    draining: bool,
    timers: Timers,
    /// A full table or a descriptor shortage is refusing connections; the
    /// count is logged when it ends.
    refusing: Option<Refusals>,
    /// A descriptor held in reserve: when accept() fails for want of
    /// descriptors, it is closed to accept and refuse one connection, so
    /// clients get an answer instead of waiting in the kernel's queue.
    spare: Option<std::fs::File>,
    /// Dispatch mode: accepts only when the master says so.
    told: Option<super::Told>,
    told_buf: Vec<(usize, usize)>,
    /// Accepting stopped until then (listeners out of this epoll); `true`:
    /// also until a slot frees (the table was full).
    paused: Option<(Instant, bool)>,
}

/// How long a full worker stops accepting after refusing a connection
/// (nginx's 500 ms): on a shared socket, the other workers take the next
/// ones instead of this one refusing them all while they have room.
pub(super) const FULL_PAUSE: Duration = Duration::from_millis(500);

struct Refusals {
    why: &'static str,
    count: u64,
    since: Instant,
    last: Instant,
}

/// Runs the loop until a stop signal, or until drained after SIGQUIT.
/// `listeners` are sockets with the number of the address each listens on.
pub fn run<S: Service>(
    service: S,
    listeners: Vec<(Socket, usize)>,
    mode: EventMode,
    connections: usize,
    signals: Signals,
    accept: super::AcceptFrom,
) -> io::Result<()> {
    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
    epoll.add(signals.fd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, SIGNAL_TOKEN))?;
    let told = match accept {
        super::AcceptFrom::Watch => None,
        super::AcceptFrom::Told(t) => {
            epoll.add(t.channel.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, CHANNEL_TOKEN))?;
            Some(t)
        }
    };
    let mut r = Reactor {
        epoll,
        mode,
        service,
        // A reserve of 1/16 (8..=1024 slots) for refused connections.
        slots: Slots::new(connections + (connections / 16).clamp(8, 1024)),
        limit: connections,
        listeners: listeners
            .into_iter()
            .map(|(sock, addr)| Listener {
                sock,
                addr,
                armed: false,
            })
            .collect(),
        pending_accept: Vec::new(),
        draining: false,
        timers: Timers::new(),
        refusing: None,
        spare: open_spare(),
        told,
        told_buf: Vec::new(),
        paused: None,
    };
    r.arm_listeners()?;
    let result = r.run_loop(&signals);
    r.service.shutdown();
    result
}

/// The reserve descriptor spent to refuse a connection when the process
/// is out of descriptors.
pub(super) fn open_spare() -> Option<std::fs::File> {
    std::fs::File::open("/dev/null").ok()
}

/// What spending the reserve descriptor on one accept() gave.
pub(super) enum Shed {
    /// A waiting connection was refused (or had gone): look for more.
    Again,
    /// Nothing waits. accept() fails with EMFILE on an empty queue too, so
    /// looking again would spin; the next connection raises a new event.
    Empty,
    /// No descriptor even with the reserve spent: pause accepting.
    Stuck,
}

/// Out of descriptors: spends the reserve descriptor `spare` on one
/// accept() from `sock` and refuses what it finds at once (no lingering:
/// the descriptor is needed back), then reopens the reserve. True beside
/// the outcome when a client was refused (the caller counts it). Both
/// event loops shed through this.
pub(super) fn shed_one<S: Service>(
    spare: &mut Option<std::fs::File>,
    service: &mut S,
    sock: &Socket,
    listener: usize,
) -> (Shed, bool) {
    if spare.take().is_none() {
        *spare = open_spare();
        return (Shed::Stuck, false);
    }
    let (outcome, refused) = match net::accept(sock) {
        Ok((stream, peer)) => {
            if let Some(conn) = service.refuse(stream, peer, listener) {
                service.closed(conn);
            }
            (Shed::Again, true)
        }
        Err(e) => match e.raw_os_error() {
            Some(libc::EAGAIN) => (Shed::Empty, false),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => (Shed::Stuck, false),
            // The peer gave up before we got to it.
            _ => (Shed::Again, false),
        },
    };
    *spare = open_spare();
    (if spare.is_none() { Shed::Stuck } else { outcome }, refused)
}

impl<S: Service> Reactor<S> {
    fn listener_flags(&self) -> EpollFlags {
        let f = EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE;
        match self.mode {
            EventMode::Edge => f | EpollFlags::EPOLLET,
            EventMode::Level => f,
        }
    }

    fn arm_listeners(&mut self) -> io::Result<()> {
        if self.told.is_some() {
            return Ok(()); // the master watches them
        }
        let flags = self.listener_flags();
        for (i, l) in self.listeners.iter_mut().enumerate() {
            if !l.armed {
                self.epoll
                    .add(l.sock.as_fd(), EpollEvent::new(flags, LISTENER_BASE + i as u64))?;
                l.armed = true;
                if self.mode == EventMode::Edge {
                    // Connections queued while disarmed raise no new edge.
                    self.pending_accept.push(i);
                }
            }
        }
        Ok(())
    }

    fn disarm_listeners(&mut self) {
        for l in &mut self.listeners {
            if l.armed {
                let _ = self.epoll.delete(l.sock.as_fd());
                l.armed = false;
            }
        }
        self.pending_accept.clear();
    }

    fn run_loop(&mut self, signals: &Signals) -> io::Result<()> {
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let mut last_housekeeping = Instant::now();
        let mut next_sweep = last_housekeeping + Duration::from_secs(1);
        let mut woken = Vec::new();
        loop {
            let timeout: u16 = if !self.pending_accept.is_empty() {
                0
            } else {
                let now = Instant::now();
                let sweep = next_sweep.saturating_duration_since(now).as_millis() as u64;
                let due = self.service.timed(now);
                let timer = next_due_ms(&self.timers, due, now).unwrap_or(u64::MAX);
                sweep.min(timer).max(1) as u16
            };
            let n = match self.epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            self.service.turn();
            for ev in &events[..n] {
                match ev.data() {
                    SIGNAL_TOKEN => {
                        for sig in signals::drain(&signals.fd) {
                            if self.on_signal(sig) {
                                return Ok(());
                            }
                        }
                    }
                    CHANNEL_TOKEN => self.on_told(),
                    t if t >= LISTENER_BASE => {
                        let i = (t - LISTENER_BASE) as usize;
                        self.accept(i, None);
                    }
                    t if t >= HANDLE_BASE => {
                        if let Some(tok) = self.service.handle_target(t - HANDLE_BASE) {
                            self.dispatch(tok, ev.events());
                        }
                    }
                    t => self.dispatch(t, ev.events()),
                }
            }
            for i in std::mem::take(&mut self.pending_accept) {
                self.accept(i, None);
            }
            self.fire_timers();
            // Connections a release this turn made ready go now, not
            // after another wait (what they wake may wake more).
            loop {
                self.service.wakeups(&mut woken);
                if woken.is_empty() {
                    break;
                }
                for tok in std::mem::take(&mut woken) {
                    self.call(tok, Ready::WOKEN);
                }
            }
            let now = Instant::now();
            if let Some((until, _)) = self.paused {
                next_sweep = next_sweep.min(until);
            }
            if now >= next_sweep {
                next_sweep = next_sweep_at(self.sweep(), now);
                if now.duration_since(last_housekeeping) >= Duration::from_secs(1) {
                    last_housekeeping = now;
                    self.service.housekeeping();
                }
            }
            if let Some(t) = &self.told {
                t.publish(self.slots.serving());
            }
            if self.draining && self.slots.active() == 0 {
                return Ok(());
            }
        }
    }

    /// Dispatch mode: the master says connections wait.
    fn on_told(&mut self) {
        let Some(t) = &self.told else { return };
        let mut msgs = std::mem::take(&mut self.told_buf);
        match t.take(&mut msgs) {
            Ok(Some(())) => {}
            Ok(None) | Err(_) => {
                // The master closed our channel: it no longer dispatches to
                // this worker (retired, or the master is gone).
                if let Some(t) = self.told.take() {
                    let _ = self.epoll.delete(t.channel.as_fd());
                }
            }
        }
        for (i, n) in msgs.drain(..) {
            if !self.draining {
                self.accept(i, Some(n.max(1)));
            }
        }
        self.told_buf = msgs;
    }

    /// Returns true when the process must exit now.
    fn on_signal(&mut self, sig: Signal) -> bool {
        match sig {
            Signal::SIGTERM | Signal::SIGINT => {
                crate::info!("worker received {sig}, exiting");
                true
            }
            Signal::SIGQUIT => {
                if !self.draining {
                    crate::info!("gracefully shutting down");
                    self.start_drain();
                }
                false
            }
            Signal::SIGUSR1 => {
                self.service.reopen_logs();
                false
            }
            Signal::SIGCHLD => {
                self.service.child_exited();
                false
            }
            _ => false,
        }
    }

    fn start_drain(&mut self) {
        self.draining = true;
        self.service.drain_started();
        self.disarm_listeners();
        // Closing our copies stops this worker accepting; the master keeps its own.
        self.listeners.clear();
        for tok in self.slots.tokens() {
            if let Some(slot) = self.slots.get_mut(tok) {
                let next = match slot.conn.as_mut() {
                    Some(c) => self.service.drain(c),
                    None => continue,
                };
                self.apply(tok, next);
            }
        }
    }

    /// Accepts from listener `i`: `told` connections in dispatch mode,
    /// else a batch.
    fn accept(&mut self, i: usize, told: Option<usize>) {
        let budget = match (told, self.mode) {
            (Some(n), _) => n,
            (None, EventMode::Edge) => ACCEPT_BATCH * 4,
            (None, EventMode::Level) => ACCEPT_BATCH,
        };
        for _ in 0..budget {
            if self.full() {
                self.reclaim();
            }
            let Some(l) = self.listeners.get(i) else { return };
            let addr = l.addr;
            match net::accept(&l.sock) {
                Ok((stream, peer)) if self.full() => {
                    self.refused("all worker_connections are busy");
                    self.refuse(stream, peer, addr);
                    if told.is_none() {
                        self.pause_accepting(FULL_PAUSE, true);
                        return;
                    }
                }
                Ok((stream, peer)) => self.register(stream, peer, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => match e.raw_os_error() {
                    Some(libc::EMFILE | libc::ENFILE) => {
                        if self.reclaim() {
                            continue;
                        }
                        match self.shed(i) {
                            Shed::Again => {}
                            Shed::Empty => return,
                            Shed::Stuck => {
                                crate::error!("accept() failed: {e}; pausing accepts for a second");
                                self.pause_accepting(Duration::from_secs(1), false);
                                return;
                            }
                        }
                    }
                    Some(libc::ENOBUFS | libc::ENOMEM) => {
                        crate::error!("accept() failed: {e}; pausing accepts for a second");
                        self.pause_accepting(Duration::from_secs(1), false);
                        return;
                    }
                    // The peer gave up before we got to it; try the next one.
                    _ => continue,
                },
            }
        }
        if self.mode == EventMode::Edge && told.is_none() {
            // Budget spent before EAGAIN: come back next turn, no edge will.
            self.pending_accept.push(i);
        }
    }

    /// Stops accepting for `d` (and, `until_room`, until a slot frees).
    fn pause_accepting(&mut self, d: Duration, until_room: bool) {
        self.disarm_listeners();
        self.paused = Some((Instant::now() + d, until_room));
    }

    fn resume_accepting(&mut self) {
        self.paused = None;
        if !self.draining {
            let _ = self.arm_listeners();
        }
    }

    /// worker_connections are all taken (the reserve aside).
    fn full(&self) -> bool {
        self.slots.serving() >= self.limit
    }

    /// Closes the longest-idle connection that may go; true if one went.
    /// Only one: a new connection needs one slot, and the next-oldest idle
    /// ones may still be served. (Refused connections finishing their
    /// close in the reserve are not on the idle list.)
    fn reclaim(&mut self) -> bool {
        for tok in self.slots.oldest_idle(RECLAIM_SCAN) {
            let verdict = match self.slots.get_mut(tok).and_then(|s| s.conn.as_mut()) {
                Some(c) => self.service.reclaim(c),
                None => Reclaim::Keep,
            };
            match verdict {
                Reclaim::Close => {
                    self.close(tok);
                    return true;
                }
                Reclaim::Busy => self.slots.set_idle(tok, false),
                Reclaim::Keep => {}
            }
        }
        false
    }

    /// Answers a connection there is no room for; the service's lingering
    /// close runs in a reserve slot when one is free.
    fn refuse(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) {
        if let Some(conn) = self.service.refuse(stream, peer, listener) {
            match self.slots.insert_reserve(conn) {
                Ok(tok) => self.watch(tok),
                Err(conn) => self.service.closed(conn),
            }
        }
    }

    /// Out of descriptors and nothing idle to close: spend the reserve
    /// descriptor on accepting one connection to refuse it.
    fn shed(&mut self, i: usize) -> Shed {
        let Some(l) = self.listeners.get(i) else {
            return Shed::Empty;
        };
        let (outcome, refused) = shed_one(&mut self.spare, &mut self.service, &l.sock, l.addr);
        if refused {
            self.refused("the worker is out of file descriptors");
        }
        outcome
    }

    /// Counts a refusal: the first of a burst is logged at once, the total
    /// when a second has passed without one.
    fn refused(&mut self, why: &'static str) {
        match &mut self.refusing {
            Some(r) if r.why == why => {
                r.count += 1;
                r.last = Instant::now();
            }
            _ => {
                self.end_refusals();
                crate::warn!(
                    "{why} ({} connections, {} idle): refusing new connections with 503",
                    self.slots.active(),
                    self.slots.idle()
                );
                let now = Instant::now();
                self.refusing = Some(Refusals {
                    why,
                    count: 1,
                    since: now,
                    last: now,
                });
            }
        }
    }

    fn end_refusals(&mut self) {
        if let Some(r) = self.refusing.take() {
            crate::warn!(
                "{} connections refused in {:.1}s ({})",
                r.count,
                r.since.elapsed().as_secs_f64(),
                r.why
            );
        }
    }

    fn register(&mut self, stream: TcpStream, peer: SocketAddr, listener: usize) {
        let conn = self.service.open(stream, peer, listener);
        match self.slots.insert(conn) {
            Ok(tok) => self.watch(tok),
            Err(c) => self.service.closed(c),
        }
    }

    /// Adds a new connection's socket to epoll.
    fn watch(&mut self, tok: u64) {
        let flags = match self.mode {
            EventMode::Edge => {
                EpollFlags::EPOLLIN | EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLET
            }
            EventMode::Level => EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
        };
        let slot = self.slots.get_mut(tok).expect("just inserted");
        let fd = S::fd(slot.conn.as_ref().expect("just inserted"));
        if let Err(e) = self.epoll.add(fd, EpollEvent::new(flags, tok)) {
            crate::error!("epoll_ctl(ADD) failed: {e}");
            self.close(tok);
            return;
        }
        // Nothing is in progress on a new connection until it sends.
        self.slots.set_idle(tok, true);
    }

    fn dispatch(&mut self, tok: u64, ev: EpollFlags) {
        let ready = Ready::from_events(ev, super::slots::sub_of(tok));
        self.call(super::slots::with_sub(tok, 0), ready);
    }

    fn fire_timers(&mut self) {
        if self.timers.is_empty() {
            return;
        }
        let now = Instant::now();
        while let Some(std::cmp::Reverse((at, tok))) = self.timers.peek().copied() {
            if at > now {
                break;
            }
            self.timers.pop();
            self.call(tok, Ready::WOKEN);
        }
    }

    /// Hands `ready` to the connection's service and applies its answer.
    fn call(&mut self, tok: u64, ready: Ready) {
        let Some(slot) = self.slots.get_mut(tok) else {
            return; // stale: the slot was closed (and maybe reused) this turn
        };
        let Some(conn) = slot.conn.as_mut() else { return };
        let mut io = Io {
            epoll: &self.epoll,
            token: tok,
            timers: &mut self.timers,
        };
        let next = self.service.ready(conn, ready, &mut io);
        self.apply(tok, next);
    }

    fn apply(&mut self, tok: u64, next: Next) {
        if next == Next::Close {
            self.close(tok);
            return;
        }
        self.slots.set_idle(tok, next == Next::Idle);
        if self.mode == EventMode::Edge {
            return; // registered once for both directions
        }
        let Some(slot) = self.slots.get_mut(tok) else { return };
        let want = match next {
            Next::Read | Next::Idle => 0,
            Next::Write => 1,
            _ => 2,
        };
        if slot.want == want {
            return;
        }
        slot.want = want;
        let flags = match next {
            Next::Read | Next::Idle => EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP,
            Next::Write => EpollFlags::EPOLLOUT,
            _ => EpollFlags::empty(),
        };
        let fd = S::fd(slot.conn.as_ref().expect("live slot"));
        let mut ev = EpollEvent::new(flags, tok);
        if let Err(e) = self.epoll.modify(fd, &mut ev) {
            crate::error!("epoll_ctl(MOD) failed: {e}");
            self.close(tok);
        }
    }

    fn close(&mut self, tok: u64) {
        if let Some(conn) = self.slots.remove(tok) {
            // Dropping the socket closes it, which also removes it from epoll.
            self.service.closed(conn);
            if matches!(self.paused, Some((_, true))) && !self.full() {
                self.resume_accepting();
            }
        }
    }

    /// Times out what is due; the earliest deadline still to come.
    fn sweep(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let mut earliest: Option<Instant> = None;
        for tok in self.slots.tokens() {
            let due = match self.slots.get_mut(tok).and_then(|s| s.conn.as_mut()) {
                Some(c) => self.service.expired(c, now),
                None => None,
            };
            match due {
                Some(Next::Close) => self.close(tok),
                // The connection changed course (e.g. a timeout answered with
                // an error page): let it act now, no edge will come for it.
                Some(_) => self.call(tok, Ready::WRITABLE),
                None => {}
            }
            if let Some(d) = self
                .slots
                .get_mut(tok)
                .and_then(|s| s.conn.as_ref())
                .and_then(|c| self.service.deadline(c))
                // One still past was just dealt with (a state no timeout moves
                // on): the once-a-second pass looks at it again, not every 10 ms.
                .filter(|&d| d > now)
            {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
        }
        // Resume accepting after a pause (a full table, a descriptor
        // shortage); a full table pauses again at its next refusal.
        if self.paused.is_some_and(|(until, _)| now >= until) {
            self.resume_accepting();
        }
        if self.spare.is_none() {
            self.spare = open_spare();
        }
        if self
            .refusing
            .as_ref()
            .is_some_and(|r| r.last.elapsed() >= Duration::from_secs(1))
        {
            self.end_refusals();
        }
        earliest
    }
}

/// When the loop next looks for timeouts: at the earliest deadline a sweep
/// saw (not sooner than 10 ms from now, so connections near their deadline
/// cost at most a hundred passes a second), at the latest in a second
/// (deadlines set meanwhile).
fn next_sweep_at(earliest: Option<Instant>, now: Instant) -> Instant {
    let latest = now + Duration::from_secs(1);
    earliest.map_or(latest, |d| d.clamp(now + Duration::from_millis(10), latest))
}
