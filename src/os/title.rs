//! Process titles that `ps` shows (`corral: master process ...`), made the
//! way nginx makes them: by overwriting the argv strings in place, after
//! moving the environment strings that follow them out of the way.

use std::ffi::{CStr, CString, c_char, c_int};
use std::sync::Mutex;
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

static ARGC: AtomicUsize = AtomicUsize::new(0);
static ARGV: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());
static ENVP: AtomicPtr<*mut c_char> = AtomicPtr::new(std::ptr::null_mut());

/// glibc calls `.init_array` entries with (argc, argv, envp) before `main`,
/// which is the only portable way to reach the original argv memory.
extern "C" fn capture(argc: c_int, argv: *mut *mut c_char, envp: *mut *mut c_char) {
    ARGC.store(argc.max(0) as usize, Ordering::Relaxed);
    ARGV.store(argv, Ordering::Relaxed);
    ENVP.store(envp, Ordering::Relaxed);
}

#[used]
#[unsafe(link_section = ".init_array")]
static CAPTURE: extern "C" fn(c_int, *mut *mut c_char, *mut *mut c_char) = capture;

/// The writable span `[start, start+len)` once the environment was moved.
static AREA: Mutex<Option<(usize, usize)>> = Mutex::new(None);

/// Finds the contiguous argv+environ string block and moves the environment
/// strings to the heap so the whole block can hold the title.
fn prepare() -> Option<(usize, usize)> {
    let argc = ARGC.load(Ordering::Relaxed);
    let argv = ARGV.load(Ordering::Relaxed);
    let envp = ENVP.load(Ordering::Relaxed);
    if argc == 0 || argv.is_null() {
        return None;
    }
    // SAFETY: argv holds argc valid NUL-terminated strings (the C runtime's
    // contract); we only read them here.
    let start = unsafe { *argv } as usize;
    let mut end = start;
    for i in 0..argc {
        // SAFETY: i < argc, see above.
        let p = unsafe { *argv.add(i) };
        if p as usize != end && i > 0 {
            break;
        }
        // SAFETY: p is a valid C string from the kernel-built argv block.
        end = p as usize + unsafe { CStr::from_ptr(p) }.to_bytes().len() + 1;
    }
    if !envp.is_null() {
        let mut i = 0;
        loop {
            // SAFETY: envp is NULL-terminated; we stop at the terminator.
            let p = unsafe { *envp.add(i) };
            if p.is_null() {
                break;
            }
            if p as usize == end {
                // SAFETY: p is a valid C string; the copy is leaked on purpose
                // because the environment must outlive the process.
                let copy = CString::from(unsafe { CStr::from_ptr(p) });
                end += copy.as_bytes().len() + 1;
                // SAFETY: single-threaded at this point (called before any
                // thread is spawned); std reads environ through this array.
                unsafe { *envp.add(i) = copy.into_raw() };
            }
            i += 1;
        }
    }
    Some((start, end - start))
}

/// Sets what `ps` shows for this process.
pub fn set(title: &str) {
    let mut area = AREA.lock().unwrap_or_else(|e| e.into_inner());
    if area.is_none() {
        *area = prepare();
    }
    let Some((start, len)) = *area else { return };
    if len < 2 {
        return;
    }
    let bytes = title.as_bytes();
    let n = bytes.len().min(len - 1);
    // SAFETY: [start, start+len) is the argv/environ string block this
    // process owns; nothing references it any more (environ was moved).
    unsafe {
        let dst = start as *mut u8;
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, n);
        std::ptr::write_bytes(dst.add(n), 0, len - n);
    }
}
