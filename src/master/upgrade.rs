//! Binary upgrade, as nginx does it: SIGUSR2 starts the executable again as
//! a new master that inherits the listening sockets (named in
//! `CORRAL_LISTENERS`), while this master's pid file becomes
//! `<pid>.oldbin`. SIGWINCH then retires this master's workers, SIGQUIT ends
//! it; or SIGHUP brings its workers back and the new master is stopped
//! (roll back). If the new master exits, the pid file is given back.

use std::path::PathBuf;
use std::process::Command;

use nix::unistd::Pid;

use super::Master;
use super::listeners::INHERIT_ENV;
use crate::os::notify::notify;
use crate::os::pidfile;

fn oldbin(pid: &std::path::Path) -> PathBuf {
    let mut s = pid.as_os_str().to_owned();
    s.push(".oldbin");
    PathBuf::from(s)
}

impl Master {
    pub(super) fn start_upgrade(&mut self) {
        if let Some(pid) = self.upgrade {
            crate::warn!("SIGUSR2 ignored: the new binary started earlier (pid {pid}) is still running");
            return;
        }
        // This master is itself the new binary of an upgrade whose old
        // master still runs (nginx ignores it too): a third master would
        // take the .oldbin pid file and leave the first one unreachable.
        if let Some(pid) = pidfile::live_master(&oldbin(&self.pid_path)) {
            crate::warn!(
                "SIGUSR2 ignored: the old master (pid {pid}, {}) still runs; end it (QUIT) or this upgrade (QUIT to this master) first",
                oldbin(&self.pid_path).display()
            );
            return;
        }
        let exe = self.launch.exe.clone();
        crate::notice!("SIGUSR2 received, starting new binary {}", exe.display());
        let old = oldbin(&self.pid_path);
        if let Err(e) = std::fs::rename(&self.pid_path, &old) {
            crate::error!(
                "upgrade aborted: cannot rename {} to {}: {e}",
                self.pid_path.display(),
                old.display()
            );
            return;
        }
        self.listeners.set_inheritable(true);
        let pool_sockets = self.pools.export(true);
        let mut cmd = Command::new(&exe);
        cmd.args(self.launch.argv.iter().skip(1))
            .env(INHERIT_ENV, self.listeners.export())
            .env(super::pools::INHERIT_ENV, pool_sockets);
        // What the new binary says before it has a log of its own (a
        // config error that ends the upgrade) goes to this one's error log
        // when it is a daemon (its stderr is /dev/null); in the foreground
        // the terminal or the journal has it.
        if self.cfg.main.daemon
            && let crate::config::LogTarget::File(p) = &self.cfg.main.error_log
            && let Ok(f) = {
                use std::os::unix::fs::OpenOptionsExt;
                std::fs::OpenOptions::new()
                    .append(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(p)
            }
        {
            cmd.stderr(f);
        }
        let spawned = cmd.spawn();
        self.listeners.set_inheritable(false);
        self.pools.export(false);
        match spawned {
            Ok(child) => {
                let pid = Pid::from_raw(child.id() as i32);
                crate::notice!(
                    "binary upgrade: new master {pid} started with sockets {}; pid file moved to {}",
                    self.listeners.export(),
                    old.display()
                );
                self.upgrade = Some(pid);
                self.pid_path = old;
                // The new master serves on the same socket files now.
                self.pools.keep_socket_files(true);
            }
            Err(e) => {
                crate::error!("upgrade aborted: cannot start {}: {e}", exe.display());
                let _ = std::fs::rename(&old, &self.pid_path);
            }
        }
    }

    /// The new master exited: take the pid file back and make sure this
    /// master serves again.
    pub(super) fn upgrade_ended(&mut self, pid: Pid, how: &str) {
        self.upgrade = None;
        let main_pid = self.cfg.main.pid.clone();
        crate::notice!(
            "new master process {pid} {how}; this master ({}) takes over again",
            std::process::id()
        );
        if self.pid_path != main_pid {
            // Only if the new master left no pid file of a live process behind.
            if pidfile::live_master(&main_pid).is_none() {
                if let Err(e) = std::fs::rename(&self.pid_path, &main_pid) {
                    crate::error!("cannot rename {} back: {e}", self.pid_path.display());
                } else {
                    self.pid_path = main_pid;
                }
            }
        }
        // This master owns the pool socket files again.
        self.pools.keep_socket_files(false);
        notify(&format!("MAINPID={}", std::process::id()));
        if self.winched && self.stopping.is_none() {
            crate::notice!("starting workers again after the failed upgrade");
            self.winched = false;
            self.start_generation();
            self.watch_listening();
        }
    }
}
