//! Small files kept in memory per worker, like nginx's `open_file_cache`
//! but holding the bytes too. A hit is revalidated with one `fstatat`
//! against the identity the file had when cached (device, inode, size,
//! mtime, ctime, all to the nanosecond): an edited, replaced, re-permissioned
//! or re-linked file misses and is opened again through the confined path,
//! so the cache never serves a version older than the worker's wake-up and
//! never bypasses root confinement.
//!
//! Why once per turn and not once per request: a request is read when the
//! readiness event its arrival raised comes out of `epoll_wait`, so it was
//! received before the wake-up that started the turn (a new connection is
//! read at a later wake-up than the one that accepted it), and a change
//! that preceded it preceded the turn's first `fstatat` of the file. A busy
//! worker serves many requests per wake-up; a hot file costs one `fstatat`
//! per turn instead of one per request. [`FileCache::new_turn`] starts a
//! turn. (The exception: bytes beyond the ones that raised the event, a
//! pipelined or slowly sent request read in the same turn, may postdate
//! the check by the length of that turn.)

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::fd::RawFd;
use std::sync::Arc;

use nix::fcntl::AtFlags;
use nix::sys::stat::{FileStat, fstatat};

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Identity {
    pub fn of_meta(m: &std::fs::Metadata) -> Identity {
        use std::os::unix::fs::MetadataExt;
        Identity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size() as i64,
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }

    pub fn of(st: &FileStat) -> Identity {
        Identity {
            dev: st.st_dev,
            ino: st.st_ino,
            size: st.st_size,
            mtime: (st.st_mtime, st.st_mtime_nsec),
            ctime: (st.st_ctime, st.st_ctime_nsec),
        }
    }
}

/// What is kept of a cached file: the bytes of a small one, the open
/// descriptor of a larger one (sent with `sendfile` at explicit offsets, so
/// concurrent responses can share it).
#[derive(Clone)]
pub enum Cached {
    Bytes(Arc<[u8]>),
    File(Arc<File>),
}

/// Open descriptors kept per worker at most, whatever `open_file_cache` says.
const MAX_FDS: usize = 64;

/// A cached file with its precomputed validators.
pub struct Entry {
    pub id: Identity,
    /// The turn in which `id` was last found current.
    pub checked: u64,
    pub body: Cached,
    pub meta: FileMeta,
}

/// What a response says of a file, computed once per version of it.
pub struct FileMeta {
    pub len: u64,
    pub mtime: u64,
    pub etag: Arc<str>,
    pub last_modified: Arc<str>,
    /// `Last-Modified`, `ETag` and `Accept-Ranges` lines of a 200 or 206.
    pub headers: Arc<str>,
    pub ctype: &'static str,
}

/// FNV-1a: paths are short and trusted to be ours, so a fast hash is fine.
#[derive(Default)]
pub struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        self.0 = h;
    }
}

type Map = HashMap<Vec<u8>, Entry, BuildHasherDefault<Fnv>>;

pub struct FileCache {
    /// One map per site, keyed by the path relative to its root.
    maps: Vec<Map>,
    /// Entries per site at most; 0 disables the cache.
    max: usize,
    fds: usize,
    /// Bytes of file contents held, and the most allowed.
    bytes: usize,
    budget: usize,
    /// The current turn (see the module's notes).
    turn: u64,
}

impl FileCache {
    pub fn new(sites: usize, max: usize, budget: usize) -> FileCache {
        FileCache {
            maps: (0..sites).map(|_| Map::default()).collect(),
            max,
            fds: 0,
            bytes: 0,
            budget,
            turn: 1,
        }
    }

    /// Entries checked before now are checked again at their next hit.
    pub fn new_turn(&mut self) {
        self.turn += 1;
    }

    /// The turn an entry made now is current for.
    pub fn turn(&self) -> u64 {
        self.turn
    }

    /// Whether a file of `len` bytes may be held in memory now.
    pub fn fits_in_memory(&self, len: u64) -> bool {
        let per_file = (self.budget / 16).min(1 << 20) as u64;
        len <= per_file && self.bytes + len as usize <= self.budget
    }

    fn forget(&mut self, e: &Entry) {
        match &e.body {
            Cached::File(_) => self.fds -= 1,
            Cached::Bytes(b) => self.bytes -= b.len(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.max > 0
    }

    /// The entry for `rel` in site `site` if the file is still the same.
    pub fn get(&mut self, site: usize, root: RawFd, rel: &[u8]) -> Option<&Entry> {
        let turn = self.turn;
        let e = self.maps.get_mut(site)?.get_mut(rel)?;
        if e.checked != turn {
            if !fstatat(Some(root), rel, AtFlags::empty()).is_ok_and(|st| Identity::of(&st) == e.id) {
                if let Some(old) = self.maps[site].remove(rel) {
                    self.forget(&old);
                }
                return None;
            }
            e.checked = turn;
        }
        self.maps[site].get(rel)
    }

    pub fn insert(&mut self, site: usize, rel: &[u8], entry: Entry) {
        let is_fd = matches!(entry.body, Cached::File(_));
        if self.max == 0 || (is_fd && self.fds >= MAX_FDS) || site >= self.maps.len() {
            return;
        }
        if self.maps[site].len() >= self.max {
            // Evict an arbitrary entry: cheap, and hot files come straight back.
            let victim = self.maps[site].keys().next().cloned();
            if let Some(old) = victim.and_then(|k| self.maps[site].remove(&k)) {
                self.forget(&old);
            }
        }
        match &entry.body {
            Cached::File(_) => self.fds += 1,
            Cached::Bytes(b) => self.bytes += b.len(),
        }
        if let Some(old) = self.maps[site].insert(rel.to_vec(), entry) {
            self.forget(&old);
        }
    }
}
