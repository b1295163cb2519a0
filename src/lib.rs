//! corral: an event-driven web server and application process manager.
//!
//! Arrows point one way: `event` knows nothing of HTTP, `http` plugs a
//! service into `event`, `master` knows processes and config, not requests.

pub mod cgi;
pub mod config;
pub mod core;
pub mod event;
pub mod fastcgi;
pub mod http;
pub mod limit;
pub mod master;
pub mod os;
pub mod pool;
