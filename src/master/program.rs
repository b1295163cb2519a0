//! What a worker process runs. The master knows processes, sockets and
//! signals; the program knows the protocol: corral's HTTP, or a service
//! linked in by a library user (see [`crate::serve`]).

use socket2::Socket;

use crate::config::Config;
use crate::event::{AcceptFrom, Service, Signals};
use crate::os::privileges;

/// Everything the master hands a new worker.
pub struct WorkerStart {
    pub slot: usize,
    /// Its listening sockets, each with the number of its address.
    pub listeners: Vec<(Socket, usize)>,
    pub accept: AcceptFrom,
    pub signals: Signals,
    /// The generation's shared client limits, if any.
    pub zone: Option<crate::limit::Zone>,
}

pub trait Program {
    /// Runs worker `w.slot` in the forked child; returns its exit code.
    fn worker(&self, cfg: &Config, w: WorkerStart) -> i32;
    /// SIGHUP: the configuration of the next generation.
    fn reload(&self, current: &Config) -> Result<Config, String>;
}

/// The common part of every worker: drop privileges (the services were
/// built before, while files that need them could be opened), set up,
/// serve until stopped: one service on the worker's thread, or one per
/// thread with `worker_threads`.
pub fn serve<S>(
    cfg: &Config,
    w: WorkerStart,
    mut services: Vec<S>,
    after_privileges: impl FnOnce(&mut [S], Option<crate::limit::Zone>),
) -> i32
where
    S: Service + Send,
    S::Conn: Send,
{
    let slot = w.slot;
    if let Err(e) = privileges::prepare_worker(&cfg.main, slot) {
        crate::crit!("worker #{slot}: {e}");
        return 2;
    }
    if let Ok((soft, _)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        && (soft as usize) < cfg.main.worker_connections
    {
        crate::warn!(
            "{} worker_connections exceed the open file limit of {soft}: raise worker_rlimit_nofile",
            cfg.main.worker_connections
        );
    }
    // After setuid: the kernel clears the parent-death signal then.
    crate::os::signals::die_with_parent(nix::sys::signal::Signal::SIGTERM);
    after_privileges(&mut services, w.zone);
    let m = &cfg.main;
    let result = if services.len() > 1 {
        crate::event::run_threaded(services, w.listeners, m.worker_connections, w.signals, w.accept)
    } else {
        let Some(service) = services.pop() else { return 2 };
        crate::event::run(
            service,
            w.listeners,
            m.event_mode,
            m.worker_connections,
            w.signals,
            w.accept,
        )
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            crate::crit!("worker #{slot} failed: {e}");
            2
        }
    }
}

/// corral's own program: HTTP from the configuration file.
pub struct Http;

impl Program for Http {
    fn worker(&self, cfg: &Config, w: WorkerStart) -> i32 {
        // Threads arm sockets one-shot for what each connection waits for:
        // the service reads as in level mode.
        let threaded;
        let cfg = if cfg.main.worker_threads > 1 {
            let mut c = cfg.clone();
            c.main.event_mode = crate::config::EventMode::Level;
            threaded = c;
            &threaded
        } else {
            cfg
        };
        // Opened while still privileged: access logs and document roots.
        let first = crate::http::HttpService::new(cfg);
        let mut services: Vec<_> = (1..cfg.main.worker_threads).map(|_| first.sibling(cfg)).collect();
        services.insert(0, first);
        let slot = w.slot;
        serve(cfg, w, services, |ss, zone| {
            let (first, rest) = ss.split_first_mut().expect("one service at least");
            first.start_spawner();
            if let Some(zone) = zone {
                first.set_limits(zone, slot);
            }
            for s in rest.iter_mut() {
                s.share_spawner(first);
                s.share_limits(first);
            }
        })
    }

    fn reload(&self, current: &Config) -> Result<Config, String> {
        match &current.file {
            Some(p) => crate::config::load(p),
            None => Ok(crate::config::load_default()),
        }
        .map_err(|e| e.to_string())
    }
}
