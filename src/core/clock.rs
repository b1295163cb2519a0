//! Time as the event loop sees it: read once per loop turn, with the HTTP
//! `Date` value and the access-log timestamp re-formatted only when the
//! second changes.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Broken-down local time.
pub struct LocalTime {
    pub year: i32,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub min: u32,
    pub sec: u32,
    /// Seconds east of UTC.
    pub gmtoff: i64,
}

/// Converts a Unix time to local time (honours `TZ` and /etc/localtime).
pub fn local(secs: i64) -> LocalTime {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value for the out-parameter.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r is the
    // re-entrant form and keeps no reference to them.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        return LocalTime {
            year: 1970,
            month: 1,
            day: 1,
            hour: 0,
            min: 0,
            sec: 0,
            gmtoff: 0,
        };
    }
    LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        min: tm.tm_min as u32,
        sec: tm.tm_sec as u32,
        gmtoff: tm.tm_gmtoff,
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `2026/11/22 17:52:53`, the error log's timestamp.
pub fn error_log_time() -> String {
    let t = local(unix_now());
    format!(
        "{:04}/{:02}/{:02} {:02}:{:02}:{:02}",
        t.year, t.month, t.day, t.hour, t.min, t.sec
    )
}

/// `22/Nov/2026:17:52:53 +0000`, the access log's `$time_local`.
fn access_log_time(secs: i64) -> String {
    let t = local(secs);
    let off = t.gmtoff.abs() / 60;
    format!(
        "{:02}/{}/{:04}:{:02}:{:02}:{:02} {}{:02}{:02}",
        t.day,
        MONTHS[(t.month as usize).saturating_sub(1) % 12],
        t.year,
        t.hour,
        t.min,
        t.sec,
        if t.gmtoff < 0 { '-' } else { '+' },
        off / 60,
        off % 60
    )
}

pub struct Clock {
    pub now: Instant,
    unix: i64,
    http_date: String,
    log_time: String,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Clock {
        let mut c = Clock {
            now: Instant::now(),
            unix: -1,
            http_date: String::new(),
            log_time: String::new(),
        };
        c.update();
        c
    }

    /// Called once per loop turn.
    pub fn update(&mut self) {
        self.now = Instant::now();
        let unix = unix_now();
        if unix != self.unix {
            self.unix = unix;
            self.http_date = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(unix as u64));
            self.log_time = access_log_time(unix);
        }
    }

    /// The `Date` header value for this second.
    pub fn http_date(&self) -> &str {
        &self.http_date
    }

    pub fn log_time(&self) -> &str {
        &self.log_time
    }

    /// Seconds since the epoch, as of this loop turn.
    pub fn unix(&self) -> i64 {
        self.unix
    }
}
