//! The pools of the running configuration, as every process forked by the
//! master sees them: the master sets the list before forking, so HTTP
//! workers find each pool's config and scoreboard for the status handler.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use super::scoreboard::Scoreboard;
use super::status::PoolView;
use crate::config::pool::Pool;

/// A pool's config and its scoreboard (one generation of its workers).
pub struct Running {
    pub cfg: Pool,
    pub sb: Scoreboard,
}

/// This HTTP worker's column in the pools' front counts (see
/// `scoreboard::FRONTS`), set when it is forked.
static FRONT: AtomicUsize = AtomicUsize::new(0);

/// The front column of HTTP worker `slot` of `generation`.
pub fn front_column(slot: usize, generation: u32) -> usize {
    (generation as usize % 2) * (super::scoreboard::FRONTS / 2) + slot % (super::scoreboard::FRONTS / 2)
}

/// In a forked HTTP worker: its column.
pub fn set_front(column: usize) {
    FRONT.store(column, Relaxed);
}

/// In the master: the HTTP worker of `column` ended (or another is about
/// to take the column), so the requests it counted are over.
pub fn clear_front(column: usize) {
    for r in list().iter() {
        r.sb.front_clear(column);
    }
}

/// A request of this HTTP worker starts (or ends) on pool `name`.
pub fn front_add(name: &str, starts: bool) {
    if let Some(r) = list().iter().find(|r| r.cfg.name == name) {
        r.sb.front_add(FRONT.load(Relaxed), starts);
    }
}

/// Set by the master before forking; read by every thread of a worker.
static POOLS: RwLock<Vec<Arc<Running>>> = RwLock::new(Vec::new());

fn list() -> std::sync::RwLockReadGuard<'static, Vec<Arc<Running>>> {
    POOLS.read().unwrap_or_else(|e| e.into_inner())
}

pub fn set(pools: Vec<Arc<Running>>) {
    *POOLS.write().unwrap_or_else(|e| e.into_inner()) = pools;
}

/// Calls `f` with a view of every pool.
pub fn with<R>(f: impl FnOnce(&[PoolView<'_>]) -> R) -> R {
    let list = list();
    let views: Vec<PoolView<'_>> = list.iter().map(|r| PoolView { cfg: &r.cfg, sb: &r.sb }).collect();
    f(&views)
}

/// A request of this HTTP worker waiting in corral for saturated pool
/// `name`: counted in the pool's listen queue while it lives.
pub struct HeldMark {
    pool: String,
}

impl HeldMark {
    pub fn new(pool: &str) -> HeldMark {
        if let Some(r) = list().iter().find(|r| r.cfg.name == pool) {
            r.sb.front_held(FRONT.load(Relaxed), true);
        }
        HeldMark { pool: pool.to_string() }
    }
}

impl Drop for HeldMark {
    fn drop(&mut self) {
        if let Some(r) = list().iter().find(|r| r.cfg.name == self.pool) {
            r.sb.front_held(FRONT.load(Relaxed), false);
        }
    }
}

/// A request starts to wait in corral for saturated pool `name`: the
/// master counts it as a connection arriving at max_children.
pub fn held(name: &str) {
    if let Some(r) = list().iter().find(|r| r.cfg.name == name) {
        r.sb.count_held();
    }
}

/// Whether pool `name` can take no new connection now: every worker runs
/// a request and it has max_children already (so none will be started),
/// or corral's HTTP workers have more requests in progress on it (the one
/// asking included) than max_children: a burst, sent before any pool
/// worker woke up to be counted busy, waits in corral (under
/// queue_timeout), not in the socket's queue where no deadline applies.
/// Requests from corral's own locations then wait in corral. A worker idle
/// on someone's kept connection counts as free: it gives that connection
/// up when a new one waits.
pub fn saturated(name: &str) -> bool {
    list().iter().find(|r| r.cfg.name == name).is_some_and(|r| {
        let c = r.sb.counts();
        r.sb.front_total() > r.cfg.max_children as u64 || (c.idle == 0 && c.total >= r.cfg.max_children)
    })
}
