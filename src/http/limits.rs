//! `limit_req` and `limit_conn` for requests: asked once per request from
//! the client (internal redirects are not asked again), before routing.
//! The counting itself is [`crate::limit::Zone`], shared by the workers.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::HttpService;
use super::conn::Conn;
use super::request::Request;
use crate::limit::{Rate, Zone};

/// What a request may do now.
pub(super) enum Admit {
    Pass,
    Delay(Duration),
    Refuse(u16),
}

/// The zone and this worker's column in it, and the refusals being
/// counted for the log (one line when a burst starts, one when it ends).
/// The threads of a worker share all of it.
#[derive(Clone)]
pub(super) struct Limits {
    /// Every update of the zone is atomic.
    zone: std::sync::Arc<Zone>,
    worker: usize,
    /// Per site: limit_req, limit_conn.
    bursts: std::sync::Arc<std::sync::Mutex<Vec<[Option<Burst>; 2]>>>,
}

struct Burst {
    count: u64,
    since: Instant,
    last: Instant,
}

const KIND: [&str; 2] = ["limit_req", "limit_conn"];

impl Limits {
    pub(super) fn new(zone: std::sync::Arc<Zone>, worker: usize, sites: usize) -> Limits {
        Limits {
            zone,
            worker,
            bursts: std::sync::Arc::new(std::sync::Mutex::new((0..sites).map(|_| [None, None]).collect())),
        }
    }

    fn refused(&mut self, site: usize, kind: usize, addr: IpAddr, what: &str, status: u16) {
        let mut bursts = super::lock(&self.bursts);
        let Some(b) = bursts.get_mut(site) else { return };
        let now = Instant::now();
        match &mut b[kind] {
            Some(b) => {
                b.count += 1;
                b.last = now;
            }
            none => {
                crate::warn!(
                    "{} of server #{site} ({what}) reached by client {addr}: answering {status} until it calms down",
                    KIND[kind]
                );
                *none = Some(Burst {
                    count: 1,
                    since: now,
                    last: now,
                });
            }
        }
    }

    /// Ends the bursts that have been quiet for a second.
    pub(super) fn housekeeping(&mut self) {
        for (site, b) in super::lock(&self.bursts).iter_mut().enumerate() {
            for (kind, slot) in b.iter_mut().enumerate() {
                if slot
                    .as_ref()
                    .is_some_and(|b| b.last.elapsed() >= Duration::from_secs(1))
                {
                    let b = slot.take().expect("checked");
                    crate::warn!(
                        "{} of server #{site} refused {} request(s) in {:.1}s",
                        KIND[kind],
                        b.count,
                        b.last.duration_since(b.since).as_secs_f64()
                    );
                }
            }
        }
    }
}

impl HttpService {
    /// The zone made by the master for this generation, and this worker's
    /// number in it.
    pub fn set_limits(&mut self, zone: Zone, worker: usize) {
        self.limits = Some(Limits::new(std::sync::Arc::new(zone), worker, self.sites.len()));
    }

    /// Another thread of the same worker: the same zone column and bursts.
    pub fn share_limits(&mut self, first: &HttpService) {
        self.limits = first.limits.clone();
    }

    /// limit_req first (a refused request is not counted as in progress),
    /// then limit_conn, whose place the connection holds until the
    /// response is over.
    pub(super) fn admit(&mut self, c: &mut Conn, req: &Request) -> Admit {
        if self.limits.is_none() {
            return Admit::Pass;
        }
        let site = self.select_site(c.listener, req.host.as_deref());
        let Some(l) = self.limits.as_mut() else {
            return Admit::Pass;
        };
        let cfg = &self.sites[site].cfg;
        let addr = canonical(c.peer.ip());
        if let Some(r) = cfg.limit_req {
            match l.zone.rate(site as u32 * 2, addr, &r) {
                Rate::Pass => {}
                Rate::Delay(ms) => return Admit::Delay(Duration::from_millis(ms)),
                Rate::Reject => {
                    let what = format!("{} r/s, burst {}", r.per_kilosecond as f64 / 1000.0, r.burst);
                    l.refused(site, 0, addr, &what, self.cfg.limit_req_status);
                    return Admit::Refuse(self.cfg.limit_req_status);
                }
            }
        }
        if let Some(max) = cfg.limit_conn {
            match l.zone.acquire(site as u32 * 2 + 1, addr, l.worker, max) {
                Some(e) => c.limit_held = e as u32 + 1,
                None => {
                    l.refused(site, 1, addr, &format!("{max} at once"), self.cfg.limit_conn_status);
                    return Admit::Refuse(self.cfg.limit_conn_status);
                }
            }
        }
        Admit::Pass
    }

    /// The request's limit_conn place is given back.
    pub(super) fn release_limit(&mut self, c: &mut Conn) {
        if c.limit_held != 0
            && let Some(l) = self.limits.as_ref()
        {
            l.zone.release(c.limit_held as usize - 1, l.worker);
        }
        c.limit_held = 0;
    }

    pub(super) fn limits_housekeeping(&mut self) {
        if let Some(l) = self.limits.as_mut() {
            l.housekeeping();
        }
    }
}

/// An IPv4 client on an IPv6 socket is the same client as on IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
