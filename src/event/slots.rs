//! A preallocated table of connection slots with a free list. Each slot has
//! a generation bumped on every release, and the epoll token carries
//! (index, generation): an event queued for a connection that was closed,
//! and whose slot was reused within the same turn, no longer matches and is
//! dropped (the `instance` bit of nginx, the `generation` of GlusterFS).
//!
//! Slots whose connection is idle (waiting for a request, or lingering)
//! are also on a list ordered by when they became idle, so that a full
//! table can close the longest-idle ones in O(1) to make room.

pub struct Slot<C> {
    generation: u32,
    pub conn: Option<C>,
    /// For level-triggered mode, what is armed: 0 EPOLLIN, 1 EPOLLOUT, 2 nothing.
    pub want: u8,
    idle: bool,
    /// Holds a refused connection finishing its close (not counted
    /// against the limit of connections served).
    reserve: bool,
    /// Neighbours on the idle list (towards older, towards newer).
    older: u32,
    newer: u32,
}

pub struct Slots<C> {
    slots: Vec<Slot<C>>,
    free: Vec<u32>,
    /// The idle list: oldest first.
    oldest: u32,
    newest: u32,
    idle_count: usize,
    reserve_count: usize,
}

const NIL: u32 = u32::MAX;

/// Token values at and above this are not connection slots.
pub const RESERVED: u64 = u64::MAX - 1024;

/// Layout of a token: slot index in bits 0..32, which descriptor of the
/// connection (0 = its socket, 1..=3 = descriptors it added) in bits 32..34,
/// generation (29 bits, wrapping) in bits 34..63; bit 63 stays clear so
/// no token reaches `RESERVED`.
const GEN_MASK: u32 = (1 << 29) - 1;

/// The descriptor number (0..=3) a token names within its connection.
pub fn sub_of(tok: u64) -> u8 {
    ((tok >> 32) & 3) as u8
}

/// The token of descriptor `sub` of the connection whose socket token is `tok`.
pub fn with_sub(tok: u64, sub: u8) -> u64 {
    (tok & !(3 << 32)) | ((sub as u64 & 3) << 32)
}

impl<C> Slots<C> {
    pub fn new(capacity: usize) -> Slots<C> {
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || Slot {
            generation: 0,
            conn: None,
            want: 0,
            idle: false,
            reserve: false,
            older: NIL,
            newer: NIL,
        });
        // Pop from the end: lowest indices are handed out first.
        let free = (0..capacity as u32).rev().collect();
        Slots {
            slots,
            free,
            oldest: NIL,
            newest: NIL,
            idle_count: 0,
            reserve_count: 0,
        }
    }

    /// How many connections are on the idle list.
    pub fn idle(&self) -> usize {
        self.idle_count
    }

    /// Puts the connection on the idle list as the newest (it was just
    /// active: a keep-alive connection answers a request within one event
    /// and is idle again after it) or takes it off.
    pub fn set_idle(&mut self, tok: u64, idle: bool) {
        let idx = (tok & 0xffff_ffff) as u32;
        let Some(slot) = self.get_mut(tok) else { return };
        // A reserve connection frees no serving slot: never a candidate.
        if (!idle && !slot.idle) || (idle && slot.reserve) {
            return;
        }
        if idle && self.newest == idx {
            return; // already the newest
        }
        self.unlink(idx);
        if !idle {
            return;
        }
        let newest = self.newest;
        let slot = &mut self.slots[idx as usize];
        slot.idle = true;
        slot.older = newest;
        slot.newer = NIL;
        match newest {
            NIL => self.oldest = idx,
            n => self.slots[n as usize].newer = idx,
        }
        self.newest = idx;
        self.idle_count += 1;
    }

    fn unlink(&mut self, idx: u32) {
        let slot = &mut self.slots[idx as usize];
        if !slot.idle {
            return;
        }
        slot.idle = false;
        let (older, newer) = (slot.older, slot.newer);
        slot.older = NIL;
        slot.newer = NIL;
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        self.idle_count -= 1;
    }

    /// Up to `n` tokens of the longest-idle connections, oldest first.
    pub fn oldest_idle(&self, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n.min(self.idle_count));
        let mut i = self.oldest;
        while i != NIL && out.len() < n {
            let s = &self.slots[i as usize];
            out.push(token(i, s.generation));
            i = s.newer;
        }
        out
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
        slot.want = 0;
        slot.reserve = false;
        Ok(token(idx, slot.generation))
    }

    /// Like `insert`, for a connection that only finishes closing: it is
    /// not counted by [`Slots::serving`].
    pub fn insert_reserve(&mut self, conn: C) -> Result<u64, C> {
        let tok = self.insert(conn)?;
        self.slots[(tok & 0xffff_ffff) as usize].reserve = true;
        self.reserve_count += 1;
        Ok(tok)
    }

    /// Live connections other than reserve ones.
    pub fn serving(&self) -> usize {
        self.active() - self.reserve_count
    }

    /// The slot a token names, if it is still the same connection.
    pub fn get_mut(&mut self, tok: u64) -> Option<&mut Slot<C>> {
        let (idx, generation) = ((tok & 0xffff_ffff) as usize, ((tok >> 34) as u32) & GEN_MASK);
        let slot = self.slots.get_mut(idx)?;
        (slot.generation == generation && slot.conn.is_some()).then_some(slot)
    }

    /// Frees the slot; its next occupant gets a new generation.
    pub fn remove(&mut self, tok: u64) -> Option<C> {
        let idx = (tok & 0xffff_ffff) as usize;
        self.get_mut(tok)?;
        self.unlink(idx as u32);
        let slot = &mut self.slots[idx];
        if slot.reserve {
            slot.reserve = false;
            self.reserve_count -= 1;
        }
        let conn = slot.conn.take();
        slot.generation = slot.generation.wrapping_add(1) & GEN_MASK;
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
    ((generation & GEN_MASK) as u64) << 34 | idx as u64
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
        assert!(s.get_mut(with_sub(a, 2)).is_none(), "also for its other descriptors");
        assert!(s.get_mut(with_sub(b, 2)).is_some());
        assert_eq!(sub_of(with_sub(b, 3)), 3);
        assert_eq!(s.get_mut(b).and_then(|x| x.conn), Some("b"));
    }

    #[test]
    fn idle_list_is_ordered_by_last_activity() {
        let mut s: Slots<u32> = Slots::new(4);
        let t: Vec<u64> = (0..4).map(|i| s.insert(i).unwrap()).collect();
        s.set_idle(t[2], true);
        s.set_idle(t[0], true);
        s.set_idle(t[3], true);
        s.set_idle(t[3], true); // the newest stays the newest
        assert_eq!(s.oldest_idle(10), vec![t[2], t[0], t[3]]);
        s.set_idle(t[0], true); // active again: now the newest
        assert_eq!(s.oldest_idle(10), vec![t[2], t[3], t[0]]);
        s.set_idle(t[0], false);
        assert_eq!(s.oldest_idle(10), vec![t[2], t[3]]);
        assert_eq!(s.remove(t[2]), Some(2));
        assert_eq!(s.oldest_idle(1), vec![t[3]]);
        assert_eq!(s.idle(), 1);
        let u = s.insert(9).unwrap();
        assert_eq!(s.oldest_idle(10), vec![t[3]], "a reused slot starts busy");
        s.set_idle(u, true);
        s.set_idle(t[3], false);
        s.set_idle(t[3], true);
        assert_eq!(s.oldest_idle(10), vec![u, t[3]]);
        s.set_idle(t[2], true); // stale token: ignored
        assert_eq!(s.idle(), 2);
    }

    #[test]
    fn reserve_connections_are_not_served_nor_idle() {
        let mut s: Slots<u32> = Slots::new(3);
        let a = s.insert(1).unwrap();
        let r = s.insert_reserve(2).unwrap();
        assert_eq!((s.active(), s.serving()), (2, 1));
        s.set_idle(r, true);
        assert_eq!(s.idle(), 0);
        s.remove(r);
        assert_eq!((s.active(), s.serving()), (1, 1));
        let b = s.insert(3).unwrap();
        assert_eq!(s.serving(), 2, "a reused slot is not reserve");
        s.remove(a);
        s.remove(b);
        assert_eq!(s.serving(), 0);
    }
}
