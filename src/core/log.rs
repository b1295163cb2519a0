//! The error log: nginx-style lines (`2026/11/22 17:52:53 [warn] 1234#0: ...`)
//! to stderr or a file, reopened on SIGUSR1 so logrotate works.
//!
//! Each process is single-threaded; the mutex only makes the global safe.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;

use crate::config::LogTarget;
use crate::core::clock;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Notice,
    Warn,
    Error,
    Crit,
    Alert,
    Emerg,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Crit => "crit",
            Level::Alert => "alert",
            Level::Emerg => "emerg",
        }
    }
}

struct Logger {
    target: LogTarget,
    level: Level,
    file: Option<File>,
}

static LOGGER: Mutex<Logger> = Mutex::new(Logger {
    target: LogTarget::Stderr,
    level: Level::Info,
    file: None,
});

fn open(target: &LogTarget) -> std::io::Result<Option<File>> {
    match target {
        LogTarget::File(p) => open_append(p).map(Some),
        _ => Ok(None),
    }
}

/// Opens (creates) a log file for appending, creating its directory; the
/// error's text says what failed, in words an operator reads (no
/// " (os error N)", the component that is not a directory named).
pub fn open_append(p: &Path) -> io::Result<File> {
    if let Some(dir) = p.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create the directory {}: {}", dir.display(), dir_error(dir, &e)),
            )
        })?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .map_err(|e| io::Error::new(e.kind(), os_error(&e)))
}

/// An OS error as its text alone, without Rust's " (os error N)".
pub fn os_error(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
        None => e.to_string(),
    }
}

/// Why `dir` could not be created: `create_dir_all` says "File exists"
/// when a component is a file, so that component is named instead.
pub fn dir_error(dir: &Path, e: &io::Error) -> String {
    if e.kind() == io::ErrorKind::AlreadyExists || e.raw_os_error() == Some(libc::ENOTDIR) {
        let mut at: Vec<&Path> = dir.ancestors().collect();
        at.reverse();
        for a in at {
            if let Ok(m) = std::fs::metadata(a)
                && !m.is_dir()
            {
                return format!("{} is not a directory", a.display());
            }
        }
    }
    os_error(e)
}

/// Points the log at `target`; on failure the previous target stays.
pub fn init(target: &LogTarget, level: Level) -> std::io::Result<()> {
    let file = open(target)?;
    let mut l = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    l.target = target.clone();
    l.level = level;
    l.file = file;
    Ok(())
}

/// Reopens the log file by its path (after logrotate moved it).
pub fn reopen() -> std::io::Result<()> {
    let mut l = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    let file = open(&l.target)?;
    if file.is_some() {
        l.file = file;
    }
    Ok(())
}

pub fn enabled(level: Level) -> bool {
    LOGGER.lock().map_or(true, |l| level >= l.level)
}

pub fn log(level: Level, args: fmt::Arguments<'_>) {
    let mut guard = LOGGER.lock().unwrap_or_else(|e| e.into_inner());
    let l: &mut Logger = &mut guard;
    if level < l.level {
        return;
    }
    let mut line = format!(
        "{} [{}] {}#0: ",
        clock::error_log_time(),
        level.name(),
        std::process::id()
    );
    let start = line.len();
    let _ = fmt::write(&mut line, args);
    // No message may break or forge a line, whatever bytes it quotes.
    if line[start..].chars().any(char::is_control) {
        let msg = line.split_off(start);
        line.extend(msg.chars().map(|c| match c {
            c if c.is_control() && (c as u32) < 0x100 => format!("\\x{:02X}", c as u32),
            c if c.is_control() => format!("\\u{{{:04X}}}", c as u32),
            c => c.to_string(),
        }));
    }
    line.push('\n');
    // One write per line: with O_APPEND, lines from several processes never interleave.
    let _ = match (&l.target, l.file.as_mut()) {
        (LogTarget::File(_), Some(f)) => f.write_all(line.as_bytes()),
        (LogTarget::Stdout, _) => std::io::stdout().write_all(line.as_bytes()),
        (LogTarget::Off, _) => Ok(()),
        _ => std::io::stderr().write_all(line.as_bytes()),
    };
}

/// Client-controlled bytes in a log message: printable ASCII as it is,
/// everything else (controls, non-ASCII, invalid UTF-8) and `\\` as `\\xHH`,
/// as the access log writes them.
pub struct Esc<'a>(pub &'a [u8]);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in self.0 {
            if (0x20..0x7f).contains(&b) && b != b'\\' {
                fmt::Write::write_char(f, b as char)?;
            } else {
                write!(f, "\\x{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// A line from a program: its UTF-8 text as it is, each byte that is not
/// UTF-8 as `\xNN` (control characters are the log's to escape).
pub struct Text<'a>(pub &'a [u8]);

impl fmt::Display for Text<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            f.write_str(chunk.valid())?;
            for b in chunk.invalid() {
                write!(f, "\\x{b:02X}")?;
            }
        }
        Ok(())
    }
}

#[macro_export]
macro_rules! log_at {
    ($lvl:ident, $($arg:tt)*) => {
        $crate::core::log::log($crate::core::log::Level::$lvl, format_args!($($arg)*))
    };
}
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { if $crate::core::log::enabled($crate::core::log::Level::Debug) { $crate::log_at!(Debug, $($arg)*) } }; }
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log_at!(Info, $($arg)*) }; }
#[macro_export]
macro_rules! notice { ($($arg:tt)*) => { $crate::log_at!(Notice, $($arg)*) }; }
#[macro_export]
macro_rules! warn { ($($arg:tt)*) => { $crate::log_at!(Warn, $($arg)*) }; }
#[macro_export]
macro_rules! error { ($($arg:tt)*) => { $crate::log_at!(Error, $($arg)*) }; }
#[macro_export]
macro_rules! crit { ($($arg:tt)*) => { $crate::log_at!(Crit, $($arg)*) }; }
#[macro_export]
macro_rules! alert { ($($arg:tt)*) => { $crate::log_at!(Alert, $($arg)*) }; }
#[macro_export]
macro_rules! emerg { ($($arg:tt)*) => { $crate::log_at!(Emerg, $($arg)*) }; }

#[cfg(test)]
mod tests {
    use super::Esc;

    #[test]
    fn escapes_what_could_forge_a_line() {
        assert_eq!(
            Esc(b"/a b\nFORGED\r\x1b[31m").to_string(),
            "/a b\\x0AFORGED\\x0D\\x1B[31m"
        );
        assert_eq!(Esc("/é\\".as_bytes()).to_string(), "/\\xC3\\xA9\\x5C");
        assert_eq!(Esc(b"/\xff").to_string(), "/\\xFF");
    }
}
