//! The error log: nginx-style lines (`2026/11/22 17:52:53 [warn] 1234#0: ...`)
//! to stderr or a file, reopened on SIGUSR1 so logrotate works.
//!
//! Each process is single-threaded; the mutex only makes the global safe.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
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
        LogTarget::File(p) => {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).append(true).open(p)?;
            Ok(Some(f))
        }
        _ => Ok(None),
    }
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
    let line = format!(
        "{} [{}] {}#0: {}\n",
        clock::error_log_time(),
        level.name(),
        std::process::id(),
        args
    );
    // One write per line: with O_APPEND, lines from several processes never interleave.
    let _ = match (&l.target, l.file.as_mut()) {
        (LogTarget::File(_), Some(f)) => f.write_all(line.as_bytes()),
        (LogTarget::Stdout, _) => std::io::stdout().write_all(line.as_bytes()),
        (LogTarget::Off, _) => Ok(()),
        _ => std::io::stderr().write_all(line.as_bytes()),
    };
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
