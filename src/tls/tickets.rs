//! Session tickets every worker of one master can open.
//!
//! The master draws a random secret once, before it forks; each worker
//! derives the ticket key of a period (`now / lifetime`) from it with
//! HMAC-SHA256, so the keys rotate every period with no message between
//! processes, and a ticket sealed by one worker is opened by any other,
//! before and after a reload. A ticket is accepted during its own period
//! and the next, so it lives between one and two lifetimes. A binary
//! upgrade starts a new secret: its clients make one full handshake.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

static SECRET: OnceLock<[u8; 32]> = OnceLock::new();

/// Draws the master's secret. Called by the master before it forks; a
/// process that never called it draws its own on first use.
pub fn init() {
    secret();
}

fn secret() -> &'static [u8; 32] {
    SECRET.get_or_init(|| {
        let mut s = [0u8; 32];
        SystemRandom::new().fill(&mut s).expect("the kernel's random source");
        s
    })
}

/// Seals and opens the tickets of one server.
pub struct Ticketer {
    /// Key derivation key of this server (tickets of one server do not
    /// open on another).
    base: hmac::Key,
    lifetime: u32,
    /// The last key derived, with its period (one HMAC and key schedule
    /// per period instead of per ticket).
    cached: Mutex<Option<(u64, Arc<LessSafeKey>)>>,
}

impl std::fmt::Debug for Ticketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticketer")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

const PERIOD_LEN: usize = 8;

impl Ticketer {
    /// `label` names the server (its names and addresses); `lifetime` in
    /// seconds, at least 1.
    pub fn new(label: &str, lifetime: u32) -> Ticketer {
        let root = hmac::Key::new(hmac::HMAC_SHA256, secret());
        let tag = hmac::sign(&root, format!("corral ticket key\0{label}").as_bytes());
        Ticketer {
            base: hmac::Key::new(hmac::HMAC_SHA256, tag.as_ref()),
            lifetime: lifetime.max(1),
            cached: Mutex::new(None),
        }
    }

    fn period_now(&self) -> u64 {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        now / u64::from(self.lifetime)
    }

    fn key(&self, period: u64) -> Arc<LessSafeKey> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((p, k)) = cached.as_ref()
            && *p == period
        {
            return k.clone();
        }
        let k = hmac::sign(&self.base, &period.to_be_bytes());
        let key = Arc::new(LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, k.as_ref()).expect("a 32-byte key"),
        ));
        // Tickets of the previous period are opened rarely: keep the current.
        if cached.as_ref().is_none_or(|(p, _)| period > *p) {
            *cached = Some((period, key.clone()));
        }
        key
    }

    fn seal(&self, period: u64, plain: &[u8]) -> Option<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).ok()?;
        let head = period.to_be_bytes();
        let mut out = Vec::with_capacity(PERIOD_LEN + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&head);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key(period)
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(head), &mut body)
            .ok()?;
        out.extend_from_slice(&body);
        Some(out)
    }

    fn open(&self, now: u64, ticket: &[u8]) -> Option<Vec<u8>> {
        if ticket.len() < PERIOD_LEN + NONCE_LEN + 16 {
            return None;
        }
        let (head, rest) = ticket.split_at(PERIOD_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let period = u64::from_be_bytes(head.try_into().ok()?);
        if period != now && period + 1 != now {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut body = sealed.to_vec();
        let plain = self.key(period).open_in_place(nonce, Aad::from(head), &mut body).ok()?;
        Some(plain.to_vec())
    }
}

impl rustls::server::ProducesTickets for Ticketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.seal(self.period_now(), plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.open(self.period_now(), cipher)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_rotation_and_tampering() {
        let t = Ticketer::new("a", 60);
        let sealed = t.seal(100, b"state").unwrap();
        assert_eq!(t.open(100, &sealed).as_deref(), Some(&b"state"[..]));
        // Valid through the next period, not after.
        assert_eq!(t.open(101, &sealed).as_deref(), Some(&b"state"[..]));
        assert_eq!(t.open(102, &sealed), None);
        assert_eq!(t.open(99, &sealed), None);
        // Another server's tickets do not open.
        assert_eq!(Ticketer::new("b", 60).open(100, &sealed), None);
        // The same server in another process of this master does.
        assert!(Ticketer::new("a", 60).open(100, &sealed).is_some());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(t.open(100, &bad), None);
        // A forged period is caught by the tag (it is authenticated data).
        let mut moved = sealed.clone();
        moved[7] ^= 1;
        assert_eq!(t.open(101, &moved), None);
        assert_eq!(t.open(100, &sealed[..10]), None);
    }
}
