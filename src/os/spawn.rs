//! Starting programs without stalling the event loop.
//!
//! `posix_spawn` (glibc: `clone(CLONE_VM|CLONE_VFORK)`) never copies the
//! worker's address space, but vfork semantics suspend the calling thread
//! until the child has exec'd — a few hundred microseconds in which a
//! worker would serve nobody. So the spawn runs on a helper thread; the
//! loop hands it a [`Job`] and collects the pid when it needs it (to reap
//! or to kill): the thread never has to wake the loop.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use nix::errno::Errno;
use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};

/// A program to start, with the child's ends of its standard streams.
pub struct Job {
    pub id: u64,
    pub program: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: Option<CString>,
    /// `None`: stdin is /dev/null.
    pub stdin: Option<OwnedFd>,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

/// The outcome of a job: the pid (also the child's process group), or
/// why it could not start.
pub type Done = (u64, Result<i32, Errno>);

type Shared = Mutex<Vec<Done>>;

pub struct Spawner {
    tx: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    devnull: Arc<OwnedFd>,
}

impl Spawner {
    /// Starts the helper thread. If no thread can be made, jobs run on the
    /// caller's thread instead (correct, only slower). One thread: a second
    /// measured no faster on two cores.
    pub fn new() -> io::Result<Spawner> {
        let devnull = Arc::new(OwnedFd::from(std::fs::File::open("/dev/null")?));
        let shared = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<Job>();
        let (sh, dn) = (shared.clone(), devnull.clone());
        // The thread must never take the worker's signals (they are read
        // from a signalfd): it starts with every signal blocked.
        let mut old = SigSet::empty();
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), Some(&mut old))?;
        let thread = std::thread::Builder::new()
            .name("spawner".into())
            .stack_size(64 * 1024)
            .spawn(move || {
                for job in rx {
                    run_job(job, &dn, &sh);
                }
            });
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None)?;
        let tx = match thread {
            Ok(_) => Some(tx),
            Err(e) => {
                crate::warn!("no spawner thread ({e}); CGI scripts start from the event loop");
                None
            }
        };
        Ok(Spawner { tx, shared, devnull })
    }

    /// Queues `job`; its outcome comes back through [`Spawner::take_done`].
    pub fn submit(&self, job: Job) {
        let job = match &self.tx {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        run_job(job, &self.devnull, &self.shared);
    }

    /// The outcomes since the last call.
    pub fn take_done(&self) -> Vec<Done> {
        std::mem::take(&mut *self.shared.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// A pipe to a child's standard stream: our end (the read end when
/// `ours_reads`) nonblocking, the child's end blocking as programs expect
/// (`O_NONBLOCK` belongs to the open file, which the two ends do not share).
pub fn child_pipe(ours_reads: bool) -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let (ours, theirs) = if ours_reads { (r, w) } else { (w, r) };
    nix::fcntl::fcntl(
        ours.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok((ours, theirs))
}

/// Spawns `job` on the calling thread (a pool worker, which has nothing
/// else to serve meanwhile): the pid, which is also the child's group.
pub fn spawn_now(job: Job) -> Result<i32, Errno> {
    // Opened once per process, not per script.
    static DEVNULL: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    let devnull = DEVNULL
        .get_or_init(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from))
        .as_ref()
        .ok_or(Errno::ENOENT)?;
    spawn(&job, devnull).1
}

/// Resets, between fork and exec, what a child must not inherit from a
/// corral process: its blocked signals (read from a signalfd) and ignored
/// ones (SIGPIPE). Only async-signal-safe calls.
pub fn reset_signals_in_child() -> io::Result<()> {
    // SAFETY: sigemptyset, sigprocmask and the rt_sigaction system call are
    // async-signal-safe; SIG_DFL installs no handler code, and `dfl` is as
    // large as the kernel's sigaction (handler, flags, restorer, 8-byte mask).
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        if libc::sigprocmask(libc::SIG_SETMASK, &empty, ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The raw call: glibc's `signal` refuses its own 32 and 33, which
        // its posix_spawn leaves ignored. An all-zero kernel sigaction is
        // SIG_DFL with no flags and an empty mask, whatever the field order.
        let dfl = [0u64; 4];
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    ptr::null_mut::<u64>(),
                    8usize,
                );
            }
        }
    }
    Ok(())
}

/// Spawns `job`, closes the child's ends of its pipes, posts the outcome.
fn run_job(job: Job, devnull: &OwnedFd, sh: &Shared) {
    let done = spawn(&job, devnull);
    drop(job);
    sh.lock().unwrap_or_else(|p| p.into_inner()).push(done);
}

/// The signals reset to their default action in the child: all of them.
/// Ignored signals survive exec: SIGPIPE (Rust ignores it), glibc's two
/// internal ones, 32 and 33, which its posix_spawn leaves ignored, and
/// whatever the shell that started corral ignored (`nohup`: SIGHUP).
/// `sigfillset` leaves out 32 and 33, so the set is built from its words
/// (SIGKILL and SIGSTOP in it are skipped by posix_spawn).
fn default_signals() -> libc::sigset_t {
    let mut words: [libc::c_ulong; 16] = [0; 16];
    words[0] = !0; // signals 1..=64
    // SAFETY: glibc's sigset_t on Linux is exactly `unsigned long __val[16]`
    // with signal n at bit n-1 (transmute checks the size at compile time).
    unsafe { std::mem::transmute::<[libc::c_ulong; 16], libc::sigset_t>(words) }
}

/// posix_spawn with the child in a new process group, an empty signal
/// mask, default dispositions, and the job's streams on fds 0, 1 and 2.
fn spawn(job: &Job, devnull: &OwnedFd) -> Done {
    let mut argv: Vec<*mut libc::c_char> = job.argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv.push(ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = job.envp.iter().map(|a| a.as_ptr() as *mut _).collect();
    envp.push(ptr::null_mut());
    let stdin = job.stdin.as_ref().map_or(devnull.as_raw_fd(), |f| f.as_raw_fd());
    let mut pid: libc::pid_t = 0;
    // SAFETY: the attribute and file-action objects are initialised before
    // use and destroyed on every path; every pointer handed to posix_spawn
    // (program, argv, envp, cwd) points into `job`, which outlives the call,
    // and argv/envp are NULL-terminated. The descriptors are open and owned
    // by `job` or `devnull` for the duration of the call.
    let rc = unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut acts: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawnattr_init(&mut attr);
        libc::posix_spawn_file_actions_init(&mut acts);
        let mut rc = 0;
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        let dfl = default_signals();
        rc |= libc::posix_spawnattr_setsigmask(&mut attr, &empty);
        rc |= libc::posix_spawnattr_setsigdefault(&mut attr, &dfl);
        rc |= libc::posix_spawnattr_setpgroup(&mut attr, 0);
        let mut flags = libc::POSIX_SPAWN_SETPGROUP | libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF;
        if super::privileges::children_reset_policy() {
            let param = libc::sched_param { sched_priority: 0 };
            rc |= libc::posix_spawnattr_setschedpolicy(&mut attr, libc::SCHED_OTHER);
            rc |= libc::posix_spawnattr_setschedparam(&mut attr, &param);
            flags |= libc::POSIX_SPAWN_SETSCHEDULER;
        }
        rc |= libc::posix_spawnattr_setflags(&mut attr, flags as libc::c_short);
        rc |= libc::posix_spawn_file_actions_adddup2(&mut acts, stdin, 0);
        rc |= libc::posix_spawn_file_actions_adddup2(&mut acts, job.stdout.as_raw_fd(), 1);
        rc |= libc::posix_spawn_file_actions_adddup2(&mut acts, job.stderr.as_raw_fd(), 2);
        if let Some(cwd) = &job.cwd {
            rc |= libc::posix_spawn_file_actions_addchdir_np(&mut acts, cwd.as_ptr());
        }
        if rc == 0 {
            rc = libc::posix_spawn(
                &mut pid,
                job.program.as_ptr(),
                &acts,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            );
        }
        libc::posix_spawn_file_actions_destroy(&mut acts);
        libc::posix_spawnattr_destroy(&mut attr);
        rc
    };
    if rc == 0 {
        (job.id, Ok(pid))
    } else {
        (job.id, Err(Errno::from_raw(rc)))
    }
}

/// A pidfd for child `pid` (readable once it exits).
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new
    // descriptor (or -1), owned from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by the kernel and nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::OFlag;
    use std::io::Read;

    fn cstr(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn run(program: &str, args: &[&str], cwd: Option<&str>) -> (Result<i32, Errno>, String) {
        let sp = Spawner::new().unwrap();
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (_er, ew) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut argv = vec![cstr(program)];
        argv.extend(args.iter().map(|a| cstr(a)));
        sp.submit(Job {
            id: 7,
            program: cstr(program),
            argv,
            envp: vec![cstr("ONLY=this")],
            cwd: cwd.map(cstr),
            stdin: None,
            stdout: w,
            stderr: ew,
        });
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        let done = loop {
            let d = sp.take_done();
            if !d.is_empty() {
                break d;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].0, 7);
        if let Ok(pid) = done[0].1 {
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        }
        (done[0].1, out)
    }

    #[test]
    fn child_gets_clean_environment_group_mask_and_cwd() {
        let (r, out) = run(
            "/bin/sh",
            &[
                "-c",
                "env; pwd; echo pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$; grep -E 'Sig(Blk|Ign)' /proc/self/status",
            ],
            Some("/tmp"),
        );
        let pid = r.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"ONLY=this"), "{out}");
        assert!(!out.contains("PATH=/"), "{out}");
        assert!(lines.contains(&"/tmp"), "{out}");
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        assert!(out.contains("SigIgn:\t0000000000000000"), "{out}");
        assert!(out.contains(&format!("pgid={pid} pid={pid}")), "{out}");
    }

    #[test]
    fn missing_program_reports_its_errno() {
        let (r, out) = run("/nonexistent/program", &[], None);
        assert_eq!(r, Err(Errno::ENOENT));
        assert!(out.is_empty());
    }
}
