//! A preallocated table of connection slots with a free list. Each slot has
//! a generation bumped on every release, and the epoll token carries
//! (index, generation): an event queued for a connection that was closed,
//! and whose slot was reused within the same turn, no longer matches and is
//! dropped (the `instance` bit of nginx, the `generation` of GlusterFS).

pub struct Slot<C> {
    generation: u32,
    pub conn: Option<C>,
    /// For level-triggered mode: whether EPOLLOUT (true) or EPOLLIN is armed.
    pub want_write: bool,
}

pub struct Slots<C> {
    slots: Vec<Slot<C>>,
    free: Vec<u32>,
}

/// Token values at and above this are not connection slots.
pub const RESERVED: u64 = u64::MAX - 1024;

impl<C> Slots<C> {
    pub fn new(capacity: usize) -> Slots<C> {
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || Slot {
            generation: 0,
            conn: None,
            want_write: false,
        });
        // Pop from the end: lowest indices are handed out first.
        let free = (0..capacity as u32).rev().collect();
        Slots { slots, free }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    pub fn active(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    /// Stores `conn` and returns its token, or hands it back when full.
    pub fn insert(&mut self, conn: C) -> Result<u64, C> {
        let Some(idx) = self.free.pop() else { return Err(conn) };
        let slot = &mut self.slots[idx as usize];
        slot.conn = Some(conn);
        slot.want_write = false;
        Ok(token(idx, slot.generation))
    }

    /// The slot a token names, if it is still the same connection.
    pub fn get_mut(&mut self, tok: u64) -> Option<&mut Slot<C>> {
        let (idx, generation) = ((tok & 0xffff_ffff) as usize, (tok >> 32) as u32);
        let slot = self.slots.get_mut(idx)?;
        (slot.generation == generation && slot.conn.is_some()).then_some(slot)
    }

    /// Frees the slot; its next occupant gets a new generation.
    pub fn remove(&mut self, tok: u64) -> Option<C> {
        let idx = (tok & 0xffff_ffff) as usize;
        let slot = self.get_mut(tok)?;
        let conn = slot.conn.take();
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(idx as u32);
        conn
    }

    /// Tokens of every live connection.
    pub fn tokens(&self) -> Vec<u64> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(i, s)| token(i as u32, s.generation))
            .collect()
    }
}

fn token(idx: u32, generation: u32) -> u64 {
    ((generation as u64) << 32 | idx as u64).min(RESERVED - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_token_is_rejected_after_reuse() {
        let mut s: Slots<&str> = Slots::new(1);
        let a = s.insert("a").unwrap();
        assert!(s.insert("x").is_err(), "full table refuses");
        assert_eq!(s.remove(a), Some("a"));
        let b = s.insert("b").unwrap();
        assert_ne!(a, b, "same index, new generation");
        assert!(s.get_mut(a).is_none(), "event for the old connection is dropped");
        assert_eq!(s.get_mut(b).and_then(|x| x.conn), Some("b"));
    }
}
