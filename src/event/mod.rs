//! The reactor: one epoll loop per worker over a fixed pool of connection
//! slots. It knows sockets, readiness and timers, nothing of HTTP; a
//! protocol plugs in by implementing [`Service`].

mod buffers;
mod reactor;
mod slots;
mod threaded;
pub mod told;

pub use buffers::BufPool;
pub use reactor::{Io, Next, Ready, Reclaim, Service, Signals, run};
pub use slots::Slots;
pub use threaded::run_threaded;
pub use told::{AcceptFrom, Told};
