//! Buffers lent to connections only while they have bytes to hold: an idle
//! keep-alive connection owns none.
//!
//! Buffers come back as they were left (no clearing, no zeroing): a read
//! buffer is used as a `size`-byte slice with its fill level kept by the
//! connection, a write buffer is cleared by whoever takes it.

pub struct BufPool {
    size: usize,
    free: Vec<Vec<u8>>,
    keep: usize,
}

impl BufPool {
    /// Buffers of `size` bytes; at most `keep` idle ones are retained.
    pub fn new(size: usize, keep: usize) -> BufPool {
        BufPool {
            size,
            free: Vec::new(),
            keep,
        }
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// A buffer whose length is `size` (contents unspecified).
    pub fn get(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(mut b) => {
                b.resize(self.size, 0);
                b
            }
            None => vec![0; self.size],
        }
    }

    /// An empty buffer with at least `size` bytes of capacity.
    pub fn get_empty(&mut self) -> Vec<u8> {
        match self.free.pop() {
            Some(mut b) => {
                b.clear();
                b
            }
            None => Vec::with_capacity(self.size),
        }
    }

    pub fn put(&mut self, buf: Vec<u8>) {
        if self.free.len() < self.keep && buf.capacity() >= self.size && buf.capacity() <= self.size * 4 {
            self.free.push(buf);
        }
    }
}
