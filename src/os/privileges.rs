//! What a worker does to itself before serving: limits, CPU, priority, and
//! dropping root for the configured user and group.

use std::ffi::CString;

use nix::sched::{CpuSet, sched_setaffinity};
use nix::sys::resource::{Resource, setrlimit};
use nix::unistd::{Gid, Pid, Uid, initgroups, setgid, setuid};

use crate::config::{Affinity, Credentials, Main};

/// Applies `worker_rlimit_nofile`, `worker_cpu_affinity` and
/// `worker_priority` for worker number `slot`, then drops privileges.
pub fn prepare_worker(main: &Main, slot: usize) -> Result<(), String> {
    if let Some(n) = main.worker_rlimit_nofile {
        limit(Resource::RLIMIT_NOFILE, n)?;
    }
    pin(&main.worker_cpu_affinity, slot)?;
    if let Some(prio) = main.worker_priority {
        set_priority(prio)?;
    }
    if let Some(c) = &main.user {
        drop_to(c)?;
    }
    Ok(())
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

/// Pins this process (and the children it starts later) to the CPU the
/// affinity gives worker number `slot`.
pub fn pin(affinity: &Affinity, slot: usize) -> Result<(), String> {
    let cpu = match affinity {
        Affinity::Off => None,
        Affinity::Auto => Some(slot % std::thread::available_parallelism().map_or(1, |n| n.get())),
        Affinity::List(cpus) => cpus.get(slot % cpus.len().max(1)).copied(),
    };
    if let Some(cpu) = cpu {
        let mut set = CpuSet::new();
        set.set(cpu).map_err(|e| format!("CPU {cpu}: {e}"))?;
        sched_setaffinity(Pid::from_raw(0), &set).map_err(|e| format!("sched_setaffinity(CPU {cpu}) failed: {e}"))?;
    }
    Ok(())
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
