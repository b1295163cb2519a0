//! A worker's view of its FastCGI groups: which server takes the next
//! request (smooth weighted round robin or least connections, backups
//! last), which servers are down after failures (nginx's `max_fails` /
//! `fail_timeout`), and the idle connections kept per server for reuse.
//! Nothing here is shared between workers: each balances and pools on its
//! own, as nginx's do.

use std::io;
use std::time::{Duration, Instant};

use socket2::{Domain, SockAddr, Socket, Type};

use crate::config::fastcgi::{Address, Balance, Upstream};

/// A connection to an application server.
pub struct Backend {
    pub sock: Socket,
    /// Requests already served on it (0 for a new one).
    pub served: u32,
    idle_since: Instant,
    /// New, and no answer on it yet: it may still wait in the server's
    /// listen queue for a process to take it.
    fresh: bool,
    /// Its event-loop handle (see `Io::watch_handle`).
    pub handle: u64,
    /// An event said a `read` may find something (bytes, end of file, an
    /// error). Off after a read that emptied the socket: the next answer
    /// comes with an edge, so nothing is read in vain after a send.
    pub readable: bool,
    /// Writability is in its event registration: always for TCP (connect
    /// completes that way; TCP signals write space only after a full
    /// buffer), for a unix socket only while a send waits for room.
    pub watch_out: bool,
    pub unix: bool,
    /// An event said the peer closed or the socket failed: reads go on
    /// until they say so (a short read before the end of file drains
    /// nothing, and no further edge comes).
    pub peer_closed: bool,
}

/// How a new connection's `connect` went.
pub enum Connect {
    /// Connected (a unix socket, or loopback TCP that finished at once).
    Done(Backend),
    /// TCP handshake under way: wait for the socket to be writable.
    InProgress(Backend),
    /// The unix socket's listen queue is full: try again shortly.
    Busy,
}

struct ServerState {
    /// Failures counted since `first_fail`.
    fails: u32,
    first_fail: Instant,
    /// Not chosen before this time (after `max_fails` failures).
    down_until: Option<Instant>,
    /// Requests this worker has in progress on the server.
    active: usize,
    /// Connections open to it: in use plus idle.
    open: usize,
    /// New connections of this worker with no answer yet (see `release`).
    fresh: usize,
    idle: Vec<Backend>,
    /// Smooth weighted round robin's running weight.
    current: i64,
}

struct Group {
    cfg: Upstream,
    servers: Vec<ServerState>,
    /// Tokens of requests waiting for a connection under `max_conns`, by server.
    waiting: Vec<std::collections::VecDeque<u64>>,
    /// For `pool:NAME`, NAME: its requests in progress are counted in the
    /// pool's scoreboard too (admission across HTTP workers).
    pool: Option<String>,
}

/// Every group of the configuration, in `Config::upstreams` order.
pub struct Upstreams {
    groups: Vec<Group>,
    /// Connections woken because a place under `max_conns` came free.
    wake: Vec<u64>,
    /// The worker is stopping: nothing more is kept.
    draining: bool,
    /// Per connection handle: the token its events go to (0: none, idle).
    owners: Vec<u64>,
    free_handles: Vec<u64>,
}

/// An idle connection that had an event still has nothing to read: the
/// application did not close it (end of file, a reset) or send stray bytes.
fn quiet(sock: &Socket) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    matches!(
        sock.recv_with_flags(&mut byte, libc::MSG_PEEK | libc::MSG_DONTWAIT),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock
    )
}

/// The servers a request already tried (bit per server; groups hold at most 64).
pub type Tried = u64;

impl Upstreams {
    pub fn new(cfgs: &[Upstream]) -> Upstreams {
        let now = Instant::now();
        Upstreams {
            groups: cfgs
                .iter()
                .map(|u| Group {
                    cfg: u.clone(),
                    servers: u
                        .servers
                        .iter()
                        .map(|_| ServerState {
                            fails: 0,
                            first_fail: now,
                            down_until: None,
                            active: 0,
                            open: 0,
                            fresh: 0,
                            idle: Vec::new(),
                            current: 0,
                        })
                        .collect(),
                    waiting: vec![Default::default(); u.servers.len()],
                    pool: u.name.strip_prefix("pool:").map(str::to_string),
                })
                .collect(),
            wake: Vec::new(),
            draining: false,
            owners: Vec::new(),
            free_handles: Vec::new(),
        }
    }

    /// Where the events of the connection watched as `handle` go.
    pub fn target(&mut self, handle: u64) -> Option<u64> {
        let owner = self.owners.get(handle as usize).copied()?;
        if owner == 0 {
            self.idle_event(handle);
            return None;
        }
        Some(owner)
    }

    /// An event of an idle kept connection: if the application closed it
    /// (or shut its side, as a recycled php-fpm child does before waiting
    /// for ours), or sent stray bytes, it is closed now, as nginx does:
    /// never reused, and the child is not held until `keepalive_timeout`.
    fn idle_event(&mut self, handle: u64) {
        for group in &mut self.groups {
            for st in &mut group.servers {
                if let Some(i) = st.idle.iter().position(|b| b.handle == handle) {
                    if !quiet(&st.idle[i].sock) {
                        let b = st.idle.swap_remove(i);
                        st.open = st.open.saturating_sub(1);
                        Self::close(&mut self.owners, &mut self.free_handles, b);
                    }
                    return;
                }
            }
        }
    }

    /// `b`'s events go to `token` from now on.
    pub fn set_owner(&mut self, b: &Backend, token: u64) {
        if let Some(o) = self.owners.get_mut(b.handle as usize) {
            *o = token;
        }
    }

    /// Closes `b` and frees its handle.
    fn close(owners: &mut [u64], free: &mut Vec<u64>, b: Backend) {
        if let Some(o) = owners.get_mut(b.handle as usize) {
            *o = 0;
        }
        free.push(b.handle);
    }

    /// The worker is stopping: kept connections close now. An application
    /// such as php-fpm gives each kept connection a process of its own, so
    /// an old worker must not hold them while new ones need them.
    pub fn drain(&mut self) {
        if self.draining {
            return;
        }
        self.draining = true;
        for group in &mut self.groups {
            for st in &mut group.servers {
                st.open -= st.idle.len();
                for b in st.idle.drain(..) {
                    Self::close(&mut self.owners, &mut self.free_handles, b);
                }
            }
            // The new workers count their own connections: a request queued
            // here must not wait behind this worker's old ones while the
            // application (a reloaded pool with new processes) has room.
            for w in &mut group.waiting {
                self.wake.extend(w.drain(..));
            }
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining
    }

    pub fn config(&self, g: usize) -> &Upstream {
        &self.groups[g].cfg
    }

    pub fn address(&self, g: usize, s: usize) -> &Address {
        &self.groups[g].cfg.servers[s].address
    }

    /// Chooses a server for a request that already tried `tried`: the
    /// primaries that are up, else the backups that are up; `None` when
    /// none is left.
    pub fn pick(&mut self, g: usize, tried: Tried, now: Instant) -> Option<usize> {
        let group = &mut self.groups[g];
        for backup in [false, true] {
            let eligible: Vec<usize> = (0..group.servers.len())
                .filter(|&i| {
                    let cfg = &group.cfg.servers[i];
                    cfg.backup == backup
                        && tried & (1 << i) == 0
                        && group.servers[i].down_until.is_none_or(|t| t <= now)
                })
                .collect();
            if eligible.is_empty() {
                continue;
            }
            let chosen = match group.cfg.balance {
                Balance::RoundRobin => smooth_rr(group, &eligible),
                Balance::LeastConn => {
                    // Fewest in progress per weight; ties go round robin.
                    let load = |i: usize| group.servers[i].active as u64 * 1000 / group.cfg.servers[i].weight as u64;
                    let best = eligible.iter().map(|&i| load(i)).min().unwrap_or(0);
                    let tied: Vec<usize> = eligible.iter().copied().filter(|&i| load(i) == best).collect();
                    smooth_rr(group, &tied)
                }
            };
            return Some(chosen);
        }
        None
    }

    /// Whether a server the request has not tried is up (without choosing it).
    pub fn has_untried(&self, g: usize, tried: Tried, now: Instant) -> bool {
        let group = &self.groups[g];
        (0..group.servers.len()).any(|i| tried & (1 << i) == 0 && group.servers[i].down_until.is_none_or(|t| t <= now))
    }

    /// Whether a new connection to `s` must wait (`max_conns` reached).
    pub fn full(&self, g: usize, s: usize) -> bool {
        let group = &self.groups[g];
        !self.draining
            && group.cfg.max_conns > 0
            && group.servers[s].open >= group.cfg.max_conns
            && group.servers[s].idle.is_empty()
    }

    /// Queues the connection `token` until a place on `s` comes free.
    pub fn wait(&mut self, g: usize, s: usize, token: u64) {
        self.groups[g].waiting[s].push_back(token);
    }

    /// Forgets a waiting connection (it gave up or went away).
    pub fn unwait(&mut self, g: usize, s: usize, token: u64) {
        self.groups[g].waiting[s].retain(|&t| t != token);
    }

    /// A waiting request left without taking its place (its client went):
    /// the next one may go if there is room.
    pub fn kick(&mut self, g: usize, s: usize) {
        if !self.full(g, s)
            && let Some(t) = self.groups[g].waiting[s].pop_front()
        {
            self.wake.push(t);
        }
    }

    /// The connections to wake now; empties the list.
    pub fn take_wakeups(&mut self, out: &mut Vec<u64>) {
        out.append(&mut self.wake);
    }

    /// A request starts on `s` (for least_conn).
    pub fn begin(&mut self, g: usize, s: usize) {
        self.groups[g].servers[s].active += 1;
        if let Some(p) = &self.groups[g].pool {
            crate::pool::registry::front_add(p, true);
        }
    }

    /// A request on `s` is over.
    pub fn end(&mut self, g: usize, s: usize) {
        let group = &mut self.groups[g];
        let st = &mut group.servers[s];
        if st.active > 0
            && let Some(p) = &group.pool
        {
            crate::pool::registry::front_add(p, false);
        }
        st.active = st.active.saturating_sub(1);
    }

    /// A kept connection to `s`, the most recently used first; ones idle
    /// past `keepalive_timeout` are closed on the way.
    pub fn take_idle(&mut self, g: usize, s: usize, now: Instant) -> Option<Backend> {
        let timeout = self.groups[g].cfg.keepalive_timeout;
        let st = &mut self.groups[g].servers[s];
        while let Some(b) = st.idle.pop() {
            if now.duration_since(b.idle_since) < timeout {
                return Some(b);
            }
            st.open = st.open.saturating_sub(1);
            Self::close(&mut self.owners, &mut self.free_handles, b);
        }
        None
    }

    /// Opens a nonblocking connection to `s` for the connection `owner`.
    pub fn connect(&mut self, g: usize, s: usize, owner: u64) -> io::Result<Connect> {
        let addr = &self.groups[g].cfg.servers[s].address;
        let (domain, sa) = match addr {
            Address::Unix(p) => (Domain::UNIX, SockAddr::unix(p)?),
            Address::Tcp(a) => (Domain::for_address(*a), SockAddr::from(*a)),
        };
        let sock = Socket::new(domain, Type::STREAM.nonblocking().cloexec(), None)?;
        if domain != Domain::UNIX {
            sock.set_tcp_nodelay(true)?;
        }
        let handle = match self.free_handles.pop() {
            Some(h) => h,
            None => {
                self.owners.push(0);
                self.owners.len() as u64 - 1
            }
        };
        self.owners[handle as usize] = owner;
        let b = Backend {
            sock,
            served: 0,
            idle_since: Instant::now(),
            fresh: true,
            handle,
            readable: false,
            peer_closed: false,
            watch_out: domain != Domain::UNIX,
            unix: domain == Domain::UNIX,
        };
        let result = match b.sock.connect(&sa) {
            Ok(()) => Connect::Done(b),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => Connect::InProgress(b),
            // A unix socket's full backlog answers EAGAIN to a nonblocking connect.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && domain == Domain::UNIX => {
                Self::close(&mut self.owners, &mut self.free_handles, b);
                return Ok(Connect::Busy);
            }
            Err(e) => {
                Self::close(&mut self.owners, &mut self.free_handles, b);
                return Err(e);
            }
        };
        let st = &mut self.groups[g].servers[s];
        st.open += 1;
        st.fresh += 1;
        Ok(result)
    }

    /// The first answer came on `b`: a process of the server has it.
    pub fn answered(&mut self, g: usize, s: usize, b: &mut Backend) {
        if std::mem::take(&mut b.fresh) {
            let st = &mut self.groups[g].servers[s];
            st.fresh = st.fresh.saturating_sub(1);
        }
    }

    /// A connection is done with: kept for reuse when `reusable` and the
    /// pool has room, else closed. `None`: the request held none (a
    /// connect that failed at once); a waiting request may still go.
    ///
    /// Not kept either while another request of this worker waits on a
    /// new connection to the same server: an application like php-fpm
    /// gives each connection a process until it closes, so keeping this
    /// one idle could leave that request in the listen queue for good.
    pub fn release(&mut self, g: usize, s: usize, b: Option<Backend>, reusable: bool, now: Instant) {
        let group = &mut self.groups[g];
        let keep = group.cfg.keepalive;
        let max_requests = group.cfg.keepalive_requests;
        let st = &mut group.servers[s];
        if let Some(b) = &b
            && b.fresh
        {
            st.fresh = st.fresh.saturating_sub(1);
        }
        // Under `max_conns` the operator sized the pool: no request of ours
        // waits in the listen queue.
        let starving = st.fresh > 0 && group.cfg.max_conns == 0;
        match b {
            // After `keepalive_requests` the connection closes even under
            // load: its php-fpm child then takes the next connection from
            // the listen queue, which may be another worker's. Without this
            // a busy worker could hold every child for as long as it stays
            // busy.
            // Not one the application closed (php-fpm's children shut their
            // side and wait for ours when recycled): no further event
            // would say so once it is kept.
            Some(mut b)
                if reusable
                    && !b.peer_closed
                    && st.idle.len() < keep
                    && b.served + 1 < max_requests
                    && !starving
                    && !self.draining =>
            {
                b.served += 1;
                b.idle_since = now;
                b.readable = false;
                // Events while idle go to `idle_event`.
                self.owners[b.handle as usize] = 0;
                st.idle.push(b);
            }
            Some(b) => {
                st.open = st.open.saturating_sub(1);
                Self::close(&mut self.owners, &mut self.free_handles, b);
            }
            None => {}
        }
        if let Some(t) = group.waiting[s].pop_front() {
            self.wake.push(t);
        }
    }

    /// A connection attempt or exchange with `s` failed.
    pub fn failed(&mut self, g: usize, s: usize, now: Instant) {
        let group = &mut self.groups[g];
        let cfg = &group.cfg.servers[s];
        // A lone server is never taken out: there is nothing to go to instead.
        if cfg.max_fails == 0 || group.servers.len() == 1 {
            return;
        }
        let st = &mut group.servers[s];
        if now.duration_since(st.first_fail) > cfg.fail_timeout || st.fails == 0 {
            st.fails = 0;
            st.first_fail = now;
        }
        st.fails += 1;
        if st.fails >= cfg.max_fails {
            st.fails = 0;
            st.down_until = Some(now + cfg.fail_timeout);
            // Its kept connections are as suspect as the server.
            st.open = st.open.saturating_sub(st.idle.len());
            for b in st.idle.drain(..) {
                Self::close(&mut self.owners, &mut self.free_handles, b);
            }
            crate::warn!(
                "upstream server {} of \"{}\" is down for {:?} after {} failure(s)",
                cfg.address,
                group.cfg.name,
                cfg.fail_timeout,
                cfg.max_fails
            );
        }
    }

    /// An exchange with `s` worked: its failure count starts over.
    pub fn succeeded(&mut self, g: usize, s: usize) {
        let st = &mut self.groups[g].servers[s];
        st.fails = 0;
        st.down_until = None;
    }

    /// Closes kept connections idle for longer than their group allows.
    pub fn sweep(&mut self, now: Instant) {
        for group in &mut self.groups {
            let timeout = group.cfg.keepalive_timeout;
            for st in &mut group.servers {
                while st
                    .idle
                    .first()
                    .is_some_and(|b| now.duration_since(b.idle_since) >= timeout)
                {
                    // The oldest are first: the pool is used from its end.
                    let b = st.idle.remove(0);
                    st.open -= 1;
                    Self::close(&mut self.owners, &mut self.free_handles, b);
                }
            }
        }
    }

    /// When `sweep` next has a kept connection to close.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.groups
            .iter()
            .flat_map(|g| {
                g.servers
                    .iter()
                    .filter_map(move |st| st.idle.first().map(|b| b.idle_since + g.cfg.keepalive_timeout))
            })
            .min()
    }

    /// The longest any group keeps a request waiting for a connection.
    pub fn queue_timeout(&self, g: usize) -> Duration {
        self.groups[g].cfg.queue_timeout
    }
}

/// nginx's smooth weighted round robin over `among` (non-empty).
fn smooth_rr(group: &mut Group, among: &[usize]) -> usize {
    let mut total = 0i64;
    let mut best = among[0];
    for &i in among {
        let w = group.cfg.servers[i].weight as i64;
        group.servers[i].current += w;
        total += w;
        if group.servers[i].current > group.servers[best].current {
            best = i;
        }
    }
    group.servers[best].current -= total;
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fastcgi::UpstreamServer;

    fn group(weights: &[(u32, bool)], balance: Balance) -> Upstreams {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &(weight, backup))| UpstreamServer {
                address: Address::Tcp(format!("127.0.0.1:{}", 9000 + i).parse().unwrap()),
                weight,
                max_fails: 1,
                fail_timeout: Duration::from_secs(10),
                backup,
            })
            .collect();
        Upstreams::new(&[Upstream {
            name: "t".into(),
            balance,
            keepalive: 2,
            keepalive_timeout: Duration::from_secs(60),
            keepalive_requests: 100,
            max_conns: 0,
            queue_timeout: Duration::from_secs(1),
            servers,
            implicit: false,
        }])
    }

    #[test]
    fn weighted_round_robin_is_smooth() {
        let mut u = group(&[(5, false), (1, false), (1, false)], Balance::RoundRobin);
        let now = Instant::now();
        let seq: Vec<usize> = (0..7).map(|_| u.pick(0, 0, now).unwrap()).collect();
        assert_eq!(seq.iter().filter(|&&s| s == 0).count(), 5);
        // nginx's sequence for 5,1,1: a a b a c a a
        assert_eq!(seq, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn down_servers_and_backups() {
        let mut u = group(&[(1, false), (1, false), (1, true)], Balance::RoundRobin);
        let now = Instant::now();
        u.failed(0, 0, now);
        for _ in 0..4 {
            assert_eq!(u.pick(0, 0, now), Some(1), "server 0 is down");
        }
        // The tried primary aside, the backup takes over.
        assert_eq!(u.pick(0, 1 << 1, now), Some(2));
        assert_eq!(u.pick(0, 0b111, now), None);
        // After fail_timeout it is tried again.
        assert!(u.pick(0, 1 << 1, now + Duration::from_secs(11)) == Some(0));
    }

    #[test]
    fn least_conn_prefers_the_idle_server() {
        let mut u = group(&[(1, false), (1, false)], Balance::LeastConn);
        let now = Instant::now();
        u.begin(0, 0);
        u.begin(0, 0);
        u.begin(0, 1);
        assert_eq!(u.pick(0, 0, now), Some(1));
        u.end(0, 0);
        u.end(0, 0);
        assert_eq!(u.pick(0, 0, now), Some(0));
    }
}
