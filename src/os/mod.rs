//! Thin, safe wrappers over the Linux calls the rest of corral needs.

pub mod daemon;
pub mod fds;
pub mod listen;
pub mod listen_queue;
pub mod net;
pub mod notify;
pub mod pidfile;
pub mod privileges;
pub mod shm;
pub mod signals;
pub mod spawn;
pub mod title;
