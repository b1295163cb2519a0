//! Shared memory: a mapping made before `fork` that parent and children
//! see alike, handed out as a slice of atomics so every access is a plain
//! atomic operation. Anonymous (`MAP_SHARED | MAP_ANONYMOUS`), or backed
//! by a memfd that a program exec'd later can map too.

use std::num::NonZeroUsize;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::sys::mman::{MapFlags, ProtFlags, mmap, mmap_anonymous, munmap};

/// `len` zeroed 64-bit atomics shared with every process forked later.
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    len: usize,
    /// The memfd behind the mapping, if it has one (close-on-exec).
    fd: Option<OwnedFd>,
}

// SAFETY: the mapping is only ever accessed through atomics, which any
// thread may use concurrently; the pointer stays valid until drop.
unsafe impl Send for SharedWords {}
// SAFETY: as above: `&SharedWords` hands out only `&[AtomicU64]`.
unsafe impl Sync for SharedWords {}

impl SharedWords {
    pub fn new(len: usize) -> std::io::Result<SharedWords> {
        let bytes = NonZeroUsize::new(len.max(1) * 8).expect("non-zero");
        // SAFETY: a fresh anonymous mapping aliases no Rust object; the
        // kernel zero-fills it, and all-zero bits are valid AtomicU64s.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                bytes,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }?;
        Ok(SharedWords {
            ptr: ptr.cast(),
            len: len.max(1),
            fd: None,
        })
    }

    /// As `new`, backed by a memfd named `name`, which `fd` lends out.
    pub fn new_memfd(len: usize, name: &str) -> std::io::Result<SharedWords> {
        use nix::sys::memfd::{MemFdCreateFlag, memfd_create};
        let bytes = len.max(1) * 8;
        let name = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
        let fd = memfd_create(&name, MemFdCreateFlag::MFD_CLOEXEC)?;
        nix::unistd::ftruncate(&fd, bytes as i64)?;
        // SAFETY: a fresh shared mapping of a new, zero-filled memfd of
        // `bytes` bytes aliases no Rust object; zero bits are valid AtomicU64s.
        let ptr = unsafe {
            mmap(
                None,
                NonZeroUsize::new(bytes).expect("non-zero"),
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }?;
        Ok(SharedWords {
            ptr: ptr.cast(),
            len: len.max(1),
            fd: Some(fd),
        })
    }

    /// The memfd behind the mapping (`new_memfd`).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(AsFd::as_fd)
    }

    pub fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping holds `len` aligned AtomicU64s (page-aligned
        // start) and lives until `self` is dropped; atomics may be shared.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for SharedWords {
    fn drop(&mut self) {
        // SAFETY: the mapping was made by `new` with this length, and the
        // slices lent out by `words` cannot outlive `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len * 8) };
    }
}
