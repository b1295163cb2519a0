//! Application pools (php-fpm's model): worker processes under the master
//! that each serve one FastCGI request at a time with the app they own,
//! a scoreboard in shared memory, the pm rules the master applies, and the
//! status the pools report.

pub mod app;
pub mod direct;
pub mod fuzz_api;
pub mod io;
pub mod manager;
pub mod preload;
pub mod record;
pub mod registry;
pub mod scoreboard;
pub mod script_check;
pub mod status;
pub mod watch;
pub mod worker;

/// The FastCGI codec, as `watch` (shared with crates/preload) names it.
use crate::fastcgi::codec;
