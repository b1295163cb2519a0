//! The pools of the running configuration, as every process forked by the
//! master sees them: the master sets the list before forking, so HTTP
//! workers find each pool's config and scoreboard for the status handler.

use std::cell::RefCell;
use std::rc::Rc;

use super::scoreboard::Scoreboard;
use super::status::PoolView;
use crate::config::pool::Pool;

/// A pool's config and its scoreboard (one generation of its workers).
pub struct Running {
    pub cfg: Pool,
    pub sb: Scoreboard,
}

thread_local! {
    static POOLS: RefCell<Vec<Rc<Running>>> = const { RefCell::new(Vec::new()) };
}

pub fn set(pools: Vec<Rc<Running>>) {
    POOLS.with(|p| *p.borrow_mut() = pools);
}

/// Calls `f` with a view of every pool.
pub fn with<R>(f: impl FnOnce(&[PoolView<'_>]) -> R) -> R {
    POOLS.with(|p| {
        let list = p.borrow();
        let views: Vec<PoolView<'_>> = list.iter().map(|r| PoolView { cfg: &r.cfg, sb: &r.sb }).collect();
        f(&views)
    })
}

/// Whether pool `name` can take no new connection now: every worker runs
/// a request and it has max_children already (so none will be started).
/// Requests from corral's own locations then wait in corral. A worker idle
/// on someone's kept connection counts as free: it gives that connection
/// up when a new one waits.
pub fn saturated(name: &str) -> bool {
    POOLS.with(|p| {
        p.borrow().iter().find(|r| r.cfg.name == name).is_some_and(|r| {
            let c = r.sb.counts();
            c.idle == 0 && c.total >= r.cfg.max_children
        })
    })
}
