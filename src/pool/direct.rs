//! A pool worker of a `direct` pool: its FastCGI program accepts on the
//! pool's socket itself, as php-fpm's children do, so no byte of a request
//! passes through corral (the relay of the default mode costs a process
//! wake-up each way). The program runs with corral's preload library
//! (crates/preload), which records each request in the worker's slot and
//! hands over what the pool answers itself (ping, status, a refused script
//! or client). The worker supervises: it stops the program gracefully on
//! SIGQUIT, kills it past `request_terminate_timeout` (breaking its answer
//! off as a crash would), serves what is handed over, and ends when the
//! program ends (`max_requests`, `max_memory`, a crash): the master starts
//! the next worker as pm says.

use std::ffi::OsString;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use nix::poll::PollFlags;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, recvmsg, socketpair};
use nix::unistd::Pid;
use socket2::Socket;

use super::io::{readable, wait};
use super::scoreboard::State;
use super::worker::Spec;
use crate::config::pool::App as AppCfg;
use crate::os::signals;

/// Largest message the library hands over: its request bytes, plus the
/// kind byte.
const HANDOVER_MAX: usize = super::watch::MAX_HANDOVER + 1;

/// How soon the program's first accept() must have marked the slot.
const LOADED_WITHIN: Duration = Duration::from_secs(10);

/// Runs the worker until its program ends; returns its exit code.
pub fn run(spec: Spec<'_>, sigfd: &SignalFd) -> i32 {
    let pool = spec.pool;
    let claimed = spec.sb.claimed_at(spec.slot);
    let spawned_at = super::scoreboard::mono_us();
    let (mut child, pidfd, ctl) = match spawn(&spec) {
        Ok(x) => x,
        Err(e) => {
            crate::crit!("[pool {}] cannot start the application: {e}", pool.name);
            return 2;
        }
    };
    let pid = child.id();
    super::worker::log_ready(pool, claimed, spawned_at);
    let started = Instant::now();
    let (sb, slot) = (spec.sb, spec.slot);
    let mut quitting = false;
    // The library marks the slot at the program's first accept(): still
    // "Starting" long after, the program did not load it.
    let mut check_loaded = Some(started + LOADED_WITHIN);
    loop {
        let terminate = pool.request_terminate_timeout.map(|t| {
            let left = match sb.busy_for_us(slot) {
                Some(busy) => t.saturating_sub(Duration::from_micros(busy)),
                None => t,
            };
            Instant::now() + left.min(Duration::from_secs(1))
        });
        // Stopping: asked again each second (a signal that came before
        // the library's handler was in place was ignored).
        let again = quitting.then(|| Instant::now() + Duration::from_secs(1));
        let timeout = [terminate, check_loaded, again].into_iter().flatten().min();
        if quitting {
            ask_to_stop(pid);
        }
        let fds = [
            (sigfd.as_fd(), PollFlags::POLLIN),
            (pidfd.as_fd(), PollFlags::POLLIN),
            (ctl.as_fd(), PollFlags::POLLIN),
        ];
        let Ok(ev) = wait(&fds, timeout) else {
            continue;
        };
        if readable(ev[0]) {
            for s in signals::drain(sigfd) {
                match s {
                    Signal::SIGQUIT if !quitting => {
                        quitting = true;
                        begin_quit(&spec, pid);
                    }
                    Signal::SIGTERM | Signal::SIGINT => {
                        return end_now(&spec, &mut child, &pidfd, None, "the pool worker was told to stop now");
                    }
                    Signal::SIGUSR1 => {
                        let _ = crate::core::log::reopen();
                    }
                    _ => {}
                }
            }
        }
        if readable(ev[2]) {
            while let Some((conn, bytes)) = take_handed(&ctl) {
                let Some((&kind, bytes)) = bytes.split_first() else {
                    continue;
                };
                let (quit, exit) = super::worker::serve_handed(pool, sb, slot, sigfd, conn, bytes, kind == 2);
                // Signals read meanwhile, by the code that served it.
                if quit && !quitting {
                    quitting = true;
                    begin_quit(&spec, pid);
                }
                if exit {
                    return end_now(&spec, &mut child, &pidfd, None, "the pool worker was told to stop now");
                }
            }
        }
        if readable(ev[1]) {
            let status = child.wait();
            // What it left in its group (a script's pcntl_fork) goes with it.
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            if let Ok(st) = status
                && super::app::note_end(&pool.name, pid, st, true, started)
            {
                sb.add_failures(slot, 1);
            }
            let served = sb.requests(slot);
            if !quitting && pool.max_requests > 0 && served >= pool.max_requests {
                crate::info!(
                    "[pool {}] child {pid} served {served} requests (max_requests), exiting to be replaced",
                    pool.name
                );
            } else if !quitting && pool.max_memory > 0 {
                let memory = sb.process(slot).map_or(0, |p| p.memory);
                if memory > pool.max_memory {
                    crate::notice!(
                        "[pool {}] child {pid} uses {} KiB, more than max_memory ({} KiB): exiting to be replaced",
                        pool.name,
                        memory >> 10,
                        pool.max_memory >> 10
                    );
                }
            }
            return 0;
        }
        if let Some(at) = check_loaded
            && (Instant::now() >= at || sb.state(slot) != State::Starting)
        {
            check_loaded = None;
            if sb.state(slot) == State::Starting {
                crate::warn!(
                    "[pool {}] program {pid} has not loaded corral's preload library (statically linked?): it serves, but its requests are not recorded (direct = true)",
                    pool.name
                );
            }
        }
        if let Some(t) = pool.request_terminate_timeout
            && let Some(busy) = sb.busy_for_us(slot)
            && Duration::from_micros(busy) >= t
        {
            let pr = sb.process(slot).unwrap_or_default();
            crate::warn!(
                "[pool {}] child {pid}, {} execution timed out ({:.1} sec), terminating",
                pool.name,
                super::app::describe_parts(&pr.script, &pr.method, &pr.uri),
                Duration::from_micros(busy).as_secs_f64()
            );
            sb.count_terminated();
            return end_now(
                &spec,
                &mut child,
                &pidfd,
                Some(504),
                "the request ran past request_terminate_timeout",
            );
        }
    }
}

/// Starts the program on the pool's socket with the preload library; its
/// pidfd and the worker's end of the hand-over channel.
fn spawn(spec: &Spec<'_>) -> Result<(std::process::Child, OwnedFd, OwnedFd), String> {
    let pool = spec.pool;
    let AppCfg::FastCgi { argv } = &pool.app else {
        return Err("a direct pool runs a FastCGI program".into());
    };
    let (ours, theirs) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )
    .map_err(|e| format!("socketpair(): {e}"))?;
    // The program's end blocks (its sends are small and rare).
    nix::fcntl::fcntl(
        theirs.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| format!("fcntl(): {e}"))?;
    let lib = super::preload::library().map_err(|e| format!("cannot write the preload library: {e}"))?;
    let (sb_fd, words) = spec
        .sb
        .memfd()
        .ok_or_else(|| "the scoreboard has no memfd".to_string())?;
    let listen = spec.listen.try_clone().map_err(|e| format!("dup(): {e}"))?;
    // A blocking accept() for the program (the flag is the socket's own,
    // shared with the pool's other workers, which are all direct).
    listen.set_nonblocking(false).map_err(|e| format!("fcntl(): {e}"))?;
    let me = format!("/proc/self/fd/{}", lib.as_raw_fd());
    let mut env = super::app::program_env(pool);
    let preload = match env.iter().position(|(k, _)| k == "LD_PRELOAD") {
        Some(i) => {
            let (_, v) = env.remove(i);
            let mut v = v;
            v.push(":");
            v.push(&me);
            v
        }
        None => OsString::from(&me),
    };
    // One process accepting (the slot is one worker's): not php-cgi's own
    // children, whatever the pool's `env` says.
    env.retain(|(k, _)| k != "PHP_FCGI_CHILDREN");
    env.push(("LD_PRELOAD".into(), preload));
    env.push(("CORRAL_PRELOAD_SELF".into(), me.clone().into()));
    env.push((
        "CORRAL_PRELOAD".into(),
        format!(
            "{} {words} {} {} 0 {} {} {} {} {}",
            sb_fd.as_raw_fd(),
            spec.sb.slots(),
            spec.slot,
            theirs.as_raw_fd(),
            pool.max_requests,
            pool.max_memory,
            lib.as_raw_fd(),
            super::preload::STOP_SIGNAL_OFFSET
        )
        .into(),
    ));
    let opt = |v: &Option<String>| OsString::from(v.clone().unwrap_or_default());
    env.push(("CORRAL_PRELOAD_PING".into(), opt(&pool.ping_path)));
    env.push(("CORRAL_PRELOAD_STATUS".into(), opt(&pool.status_path)));
    env.push(("CORRAL_PRELOAD_EXT".into(), pool.limit_extensions.join("\n").into()));
    let allow: Vec<String> = pool.allowed_clients.iter().map(|a| a.to_string()).collect();
    env.push(("CORRAL_PRELOAD_ALLOW".into(), allow.join(" ").into()));
    let mut cmd = super::app::program_command(argv, &env, OwnedFd::from(listen), spec.output.as_ref())?;
    let keep: [RawFd; 3] = [lib.as_raw_fd(), sb_fd.as_raw_fd(), theirs.as_raw_fd()];
    let stop = super::preload::stop_signal();
    // SAFETY: the closure only calls prctl, fcntl, sigprocmask, signal and
    // rt_sigaction, which are async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The program dies with its worker, even on SIGKILL.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The three descriptors the library takes, across exec.
            for fd in keep {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            crate::os::spawn::reset_signals_in_child()?;
            // Ignored until the library's handler is in place: sent before,
            // it must not kill the program (the QUIT word still tells it).
            if libc::signal(stop, libc::SIG_IGN) == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("{}: {e}", argv[0]))?;
    drop(theirs);
    drop(lib);
    let pidfd = crate::os::spawn::pidfd_open(child.id() as i32).map_err(|e| format!("pidfd_open(): {e}"))?;
    Ok((child, pidfd, ours))
}

/// SIGQUIT (or a stop read while a handed-over request was served): the
/// program ends after its request in progress.
fn begin_quit(spec: &Spec<'_>, pid: u32) {
    spec.sb.ask_program_to_quit(spec.slot);
    ask_to_stop(pid);
}

/// Ends the program now (its request broken off, see `break_off`), with
/// whatever is left in its group; the worker's exit code.
fn end_now(spec: &Spec<'_>, child: &mut std::process::Child, pidfd: &OwnedFd, status: Option<u16>, why: &str) -> i32 {
    let pid = child.id();
    break_off(spec, pid, pidfd, status, why);
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = child.wait();
    0
}

/// The library's "stop after the request in progress": the slot's QUIT
/// word (set first) says it; the signal wakes a blocking accept() or read().
fn ask_to_stop(pid: u32) {
    // SAFETY: kill with a real-time signal number, no memory involved.
    unsafe { libc::kill(pid as i32, super::preload::stop_signal()) };
}

/// One connection the library handed over, with its bytes.
fn take_handed(ctl: &OwnedFd) -> Option<(Socket, Vec<u8>)> {
    let mut buf = vec![0u8; HANDOVER_MAX];
    let mut space = nix::cmsg_space!(RawFd);
    let (n, fd) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(ctl.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC).ok()?;
        let fd = msg.cmsgs().ok()?.find_map(|c| match c {
            ControlMessageOwned::ScmRights(fds) => fds.first().copied(),
            _ => None,
        });
        (msg.bytes, fd)
    };
    if n == 0 {
        return None;
    }
    // A message without a descriptor: nothing to serve (read and dropped).
    let fd = fd?;
    // SAFETY: SCM_RIGHTS gave this process a new descriptor it owns now.
    let conn = Socket::from(unsafe { OwnedFd::from_raw_fd(fd) });
    buf.truncate(n);
    Some((conn, buf))
}

/// Before the program is killed in the middle of a request: takes its
/// connection (pidfd_getfd) and ends the request as the relay does: an
/// error answer of the worker's own (`status`) when the program had not
/// begun its answer, else the answer broken off, so the web server sees a
/// failure, not a short answer that ended cleanly.
fn break_off(spec: &Spec<'_>, pid: u32, pidfd: &OwnedFd, status: Option<u16>, why: &str) {
    let (sb, slot) = (spec.sb, spec.slot);
    // Stopped first, and for sure (the slot is read after): it must not
    // write, or end its request, while its record's rest is sent.
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGSTOP);
    let _ = nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(Pid::from_raw(pid as i32)),
        nix::sys::wait::WaitPidFlag::WSTOPPED
            | nix::sys::wait::WaitPidFlag::WEXITED
            | nix::sys::wait::WaitPidFlag::WNOWAIT,
    );
    let Some(fd) = sb.program_conn(slot) else { return };
    if !sb.state(slot).is_active() {
        return;
    }
    // SAFETY: pidfd_getfd duplicates the program's descriptor into this
    // process (a new descriptor, owned from here on) or fails.
    let dup = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
    if dup < 0 {
        return;
    }
    // SAFETY: as above: a new descriptor nobody else owns.
    let conn = Socket::from(unsafe { OwnedFd::from_raw_fd(dup as i32) });
    let answer = sb.program_answer(slot);
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    let _ = conn.set_nonblocking(true);
    match (answer.began, answer.rest, status) {
        (false, Some(0), Some(status)) => {
            super::app::answer_error(&conn, answer.id, status, why);
        }
        (false, _, None) => {}
        (_, rest, _) => {
            let rest = vec![0; rest.unwrap_or(0)];
            super::worker::break_answer(&conn, answer.id, why, &rest);
        }
    }
}
