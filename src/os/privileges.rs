//! What a worker does to itself before serving: limits, CPU, priority, and
//! dropping root for the configured user and group.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Pid, Uid, initgroups, setgid, setuid};

use crate::config::{Affinity, Credentials, Main, SchedPolicy};

/// This process put itself under SCHED_BATCH (`worker_sched_policy`):
/// the programs it starts go back to the normal policy.
static BATCH_SET: AtomicBool = AtomicBool::new(false);

/// Applies `worker_rlimit_nofile`, `worker_cpu_affinity`,
/// `worker_priority` and `worker_sched_policy` for worker number `slot`,
/// then drops privileges. Called before the worker starts its threads,
/// which inherit the policy.
pub fn prepare_worker(main: &Main, slot: usize) -> Result<(), String> {
    if let Some(n) = main.worker_rlimit_nofile {
        limit_or_go_on(Resource::RLIMIT_NOFILE, n, &format!("worker #{slot}"));
    }
    pin(&main.worker_cpu_affinity, slot, &format!("worker #{slot}"));
    if let Some(prio) = main.worker_priority {
        set_priority(prio)?;
    }
    if main.worker_sched_policy == SchedPolicy::Batch {
        set_batch()?;
    }
    if let Some(c) = &main.user {
        drop_to(c)?;
    }
    Ok(())
}

/// [`limit`], or an alert and the limit as it is: a limit above what this
/// master may set (a container without CAP_SYS_RESOURCE) must not stop
/// every worker from serving (nginx goes on too).
pub fn limit_or_go_on(res: Resource, n: u64, who: &str) {
    if let Err(e) = limit(res, n) {
        let now = nix::sys::resource::getrlimit(res).map_or(0, |(soft, _)| soft);
        crate::alert!("{who}: {e}; going on with the limit of {now}");
    }
}

/// Sets both the soft and the hard limit of `res` to `n`.
pub fn limit(res: Resource, n: u64) -> Result<(), String> {
    setrlimit(res, n, n).map_err(|e| format!("setrlimit({res:?}, {n}) failed: {e}"))
}

/// The nice value of this process (its children inherit it).
pub fn set_priority(prio: i32) -> Result<(), String> {
    // SAFETY: setpriority only reads its integer arguments.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, prio) };
    if rc != 0 {
        return Err(format!(
            "setpriority({prio}) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Puts the calling thread (and the threads it starts later) under
/// SCHED_BATCH. No privilege is needed for it.
fn set_batch() -> Result<(), String> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param`, a live local, and keeps no
    // reference to it.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        return Err(format!(
            "sched_setscheduler(SCHED_BATCH) failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    BATCH_SET.store(true, Ordering::Relaxed);
    Ok(())
}

/// Whether programs started from here must be put back under the normal
/// policy (this worker chose SCHED_BATCH for itself, not for CGI scripts).
pub fn children_reset_policy() -> bool {
    BATCH_SET.load(Ordering::Relaxed)
}

/// Pins this process (and the children it starts later) to the CPU the
/// affinity gives worker number `slot`. A CPU this process may not run on
/// (absent, offline, outside its cpuset) is logged and the worker runs
/// unpinned, as nginx does: exiting would restart it in a loop.
pub fn pin(affinity: &Affinity, slot: usize, who: &str) {
    let cpu = match affinity {
        Affinity::Off => None,
        // The slot-th CPU this process may use: CPU numbers need not start at 0.
        Affinity::Auto => {
            let allowed = allowed_cpus();
            allowed.get(slot % allowed.len().max(1)).copied()
        }
        Affinity::List(cpus) => cpus.get(slot % cpus.len().max(1)).copied(),
    };
    let Some(cpu) = cpu else { return };
    let mut set = CpuSet::new();
    let r = set.set(cpu).and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    if let Err(e) = r {
        crate::error!("{who}: sched_setaffinity(CPU {cpu}) failed: {e}; running unpinned");
    }
}

/// The CPUs this process may run on, in order (what `sched_setaffinity`
/// accepts); empty if the kernel cannot tell.
pub fn allowed_cpus() -> Vec<usize> {
    let Ok(set) = nix::sched::sched_getaffinity(Pid::from_raw(0)) else {
        return Vec::new();
    };
    (0..CpuSet::count())
        .filter(|&i| set.is_set(i).unwrap_or(false))
        .collect()
}

/// setgroups (via initgroups), setgid, setuid: in that order, so no
/// supplementary group or gid of root's survives.
pub fn drop_to(c: &Credentials) -> Result<(), String> {
    if !Uid::effective().is_root() {
        return Ok(()); // nothing to drop; the master warned at start
    }
    let name = CString::new(c.name.clone()).map_err(|_| format!("bad user name {:?}", c.name))?;
    let gid = Gid::from_raw(c.gid);
    initgroups(&name, gid).map_err(|e| format!("initgroups({}, {gid}) failed: {e}", c.name))?;
    setgid(gid).map_err(|e| format!("setgid({gid}) failed: {e}"))?;
    setuid(Uid::from_raw(c.uid)).map_err(|e| format!("setuid({}) failed: {e}", c.uid))?;
    Ok(())
}
