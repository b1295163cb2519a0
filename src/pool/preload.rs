//! The library a `direct` pool's program is started with (crates/preload,
//! built by build.rs and embedded here): it is written to a sealed memfd
//! that the program's dynamic loader opens as `/proc/self/fd/N`, so no file
//! on disk can be swapped under it and no program can change it for the
//! next one.

use std::io::{self, Write};
use std::os::fd::OwnedFd;

static LIBRARY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/libcorral_preload.so"));

/// `SIGRTMIN` + this: the worker's "stop after the request in progress"
/// to the library (a signal no FastCGI program uses).
pub const STOP_SIGNAL_OFFSET: i32 = 6;

pub fn stop_signal() -> i32 {
    libc::SIGRTMIN() + STOP_SIGNAL_OFFSET
}

/// The library in a sealed, close-on-exec memfd.
pub fn library() -> io::Result<OwnedFd> {
    use nix::fcntl::{FcntlArg, SealFlag, fcntl};
    use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
    let fd = memfd_create(
        c"corral-preload",
        MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING,
    )?;
    let mut f = std::fs::File::from(fd);
    f.write_all(LIBRARY)?;
    let seals = SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE;
    fcntl(std::os::fd::AsRawFd::as_raw_fd(&f), FcntlArg::F_ADD_SEALS(seals))?;
    Ok(f.into())
}
