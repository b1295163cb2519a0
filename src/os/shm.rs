//! Anonymous shared memory: a mapping made before `fork` that parent and
//! children see alike (`MAP_SHARED | MAP_ANONYMOUS`), handed out as a
//! slice of atomics so every access is a plain atomic operation.

use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;

use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// `len` zeroed 64-bit atomics shared with every process forked later.
pub struct SharedWords {
    ptr: NonNull<AtomicU64>,
    len: usize,
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
        })
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
