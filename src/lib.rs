//! corral: an event-driven web server and application process manager.
//!
//! As a library, [`serve`] runs your own protocol under corral's master,
//! workers, accept modes, event loop, signals and reloads: implement
//! [`serve::Service`] and hand it to a [`serve::Builder`].
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
pub mod serve;
pub mod tls;
