//! Real FastCGI application servers for tests: a php-fpm master or a
//! `php-cgi -b` parent in a process group of its own, started in the
//! test's directory and stopped (by its group id) when dropped.

use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{alive, eventually};

/// A php-fpm master or a `php-cgi -b` parent, in a process group of its own;
/// the group is stopped (by its id) when dropped.
pub struct Php {
    child: Option<Child>,
    /// As corral's `pass` takes it: `unix:/path` or `host:port`.
    pub pass: String,
    log: PathBuf,
}

fn fpm_binary() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/sbin")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("php-fpm"))
        })
        .collect();
    found.sort();
    found.pop().expect("php-fpm is installed (/usr/sbin/php-fpm*)")
}

fn pass_for(listen: &str) -> String {
    if listen.starts_with('/') {
        format!("unix:{listen}")
    } else {
        listen.to_string()
    }
}

fn accepts(listen: &str) -> bool {
    if listen.starts_with('/') {
        UnixStream::connect(listen).is_ok()
    } else {
        TcpStream::connect(listen).is_ok()
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory effects; pid is a process (group) this test started.
    unsafe {
        libc::kill(pid, sig);
    }
}

impl Php {
    /// A php-fpm with one pool `name` on `listen` (a socket path or `host:port`),
    /// `pm = static` with `children`; `extra` lines go into the pool.
    pub fn fpm(dir: &Path, name: &str, listen: &str, children: u32, extra: &str) -> Php {
        let conf = dir.join(format!("{name}-fpm.conf"));
        let log = dir.join(format!("{name}-fpm.log"));
        std::fs::write(
            &conf,
            format!(
                "[global]\npid = {pid}\nerror_log = {log}\ndaemonize = no\n\n\
                 [{name}]\nlisten = {listen}\npm = static\npm.max_children = {children}\n\
                 catch_workers_output = yes\nenv[POOL] = {name}\n\
                 php_admin_value[upload_max_filesize] = 16M\nphp_admin_value[post_max_size] = 16M\n\
                 php_admin_value[output_buffering] = 0\nphp_admin_value[display_errors] = 0\n{extra}\n",
                pid = dir.join(format!("{name}-fpm.pid")).display(),
                log = log.display(),
            ),
        )
        .unwrap();
        // -n: no php.ini (Debian's sets output_buffering); posix for posix_kill().
        let child = Command::new(fpm_binary())
            .args(["-F", "-R", "-n", "-d", "extension=posix", "-y"])
            .arg(&conf)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Php::ready(child, listen, log)
    }

    /// `php-cgi -b listen` with PHP_FCGI_CHILDREN and PHP_FCGI_MAX_REQUESTS.
    pub fn cgi(dir: &Path, listen: &str, children: u32, max_requests: u32) -> Php {
        let log = dir.join("php-cgi.log");
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new("php-cgi")
            .args(["-n", "-d", "extension=posix", "-b", listen])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("PHP_FCGI_CHILDREN", children.to_string())
            .env("PHP_FCGI_MAX_REQUESTS", max_requests.to_string())
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("php-cgi is installed");
        Php::ready(child, listen, log)
    }

    fn ready(child: Child, listen: &str, log: PathBuf) -> Php {
        let php = Php {
            child: Some(child),
            pass: pass_for(listen),
            log,
        };
        let up = eventually(Duration::from_secs(10), || accepts(listen));
        assert!(up, "{listen} does not accept: {}", php.log());
        php
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// php-fpm's graceful stop (SIGQUIT to the master), waited for.
    pub fn quit(&mut self) {
        let pid = self.pid();
        signal(pid, libc::SIGQUIT);
        let gone = eventually(Duration::from_secs(10), || !alive(pid));
        assert!(gone, "php-fpm {pid} did not stop on SIGQUIT");
        self.stop();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            signal(-pid, libc::SIGTERM);
            eventually(Duration::from_secs(5), || !alive(pid));
            // Whatever is left of the group (the master is not reaped yet,
            // so its id is still this group's).
            signal(-pid, libc::SIGKILL);
            let _ = c.wait();
        }
    }
}

impl Drop for Php {
    fn drop(&mut self) {
        self.stop();
    }
}
