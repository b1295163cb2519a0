//! Pieces every process uses: the error log and the cached clock.

pub mod clock;
pub mod log;
