//! Descriptors the master inherited from whoever started it.

use std::os::fd::RawFd;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Marks every descriptor above 2 close-on-exec, so nothing the launcher
/// left open (a secret file, its own sockets) reaches workers' CGI scripts
/// or pool programs. The descriptors corral takes over on purpose (a
/// previous binary's sockets, systemd's `LISTEN_FDS`) are close-on-exec
/// once taken anyway; a binary upgrade clears the flag on exactly those it
/// passes on.
pub fn cloexec_inherited() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets descriptor
    // flags; it takes no pointer and closes nothing.
    let rc = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) };
    if rc == 0 {
        return;
    }
    // Kernels before 5.11 (ENOSYS, EINVAL): one by one.
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<RawFd> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    // The directory's own descriptor is closed by now: EBADF, ignored.
    for fd in fds {
        let _ = fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    }
}
