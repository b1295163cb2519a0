//! Entry point for cargo-fuzz (`fuzz/fuzz_targets/pool_params.rs`): what a
//! pool worker does with the PARAMS stream a web server sends, from the
//! name-value pairs to the scoreboard slot and every status format that
//! shows it. Not part of the server's API.

use std::sync::OnceLock;

use super::app::Request;
use super::scoreboard::{Scoreboard, State};
use super::status::{PoolView, render_fpm};
use crate::config::pool::Pool;

/// The status queries a client may send, picked by the input's first byte.
const QUERIES: [&str; 7] = [
    "",
    "full",
    "json&full",
    "openmetrics&full",
    "prometheus&full",
    "html&full",
    "xml&full",
];

fn pool() -> &'static (Pool, Scoreboard) {
    static P: OnceLock<(Pool, Scoreboard)> = OnceLock::new();
    P.get_or_init(|| {
        let text = "[pool.www]\nlisten = \"127.0.0.1:1\"\napp = \"cgi\"\npm = \"static\"\nmax_children = 2\n";
        let cfg =
            crate::config::load_str("fuzz.toml", text, std::path::Path::new("/")).expect("the fuzz pool config loads");
        let pool = cfg.pools.into_iter().next().expect("one pool");
        let sb = Scoreboard::new(2).expect("a scoreboard");
        for slot in 0..2 {
            let s = sb.claim().expect("a free slot");
            sb.set_pid(s, 1000 + slot as u32);
        }
        (pool, sb)
    })
}

/// Returns the status answers rendered after the request began (query,
/// content type, body), for the target's checks of each format.
pub fn pool_params(data: &[u8]) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let Some((&pick, params)) = data.split_first() else {
        return Vec::new();
    };
    let Some(req) = Request::decode(1, params.to_vec()) else {
        return Vec::new();
    };
    let info = req.info();
    let (cfg, sb) = pool();
    let slot = (pick & 1) as usize;
    sb.set_state(slot, State::ReadingHeaders);
    sb.begin_request(slot, &info);
    // What the slot shows is a prefix of what was sent (cut to its size,
    // at a NUL, or inside a character, which then shows as U+FFFD).
    if let Some(p) = sb.process(slot) {
        let shown = p.uri.trim_end_matches('\u{fffd}');
        let sent = info.uri.split('\0').next().unwrap_or("");
        assert!(sent.starts_with(shown), "slot shows {:?} for {:?}", p.uri, info.uri);
    }
    let view = PoolView { cfg, sb };
    let mut out = Vec::new();
    for (i, q) in QUERIES.iter().enumerate() {
        if pick as usize % (QUERIES.len() + 1) == i || pick as usize % (QUERIES.len() + 1) == QUERIES.len() {
            let (ct, body) = render_fpm(&view, q);
            out.push((*q, ct, body));
        }
    }
    sb.end_request(slot, f64::from(pick), u64::from(pick));
    sb.set_state(slot, State::Idle);
    out
}

/// Entry point for `fuzz/fuzz_targets/direct_watch.rs`: what the preload
/// library of a `direct` pool follows in a program's byte streams, fed in
/// pieces of every size. Checks that a request handed to the worker is the
/// request's own records, whole (padding and all) up to its params' end.
pub fn direct_watch(data: &[u8]) {
    use super::watch::{MAX_HANDOVER, Rules, Seen, Watch};
    use crate::fastcgi::codec;
    static SB: OnceLock<Scoreboard> = OnceLock::new();
    let sb = SB.get_or_init(|| {
        let sb = Scoreboard::new(1).expect("a scoreboard");
        sb.claim().expect("a free slot");
        sb
    });
    let Some((&seed, rest)) = data.split_first() else {
        return;
    };
    let rules = Rules {
        words: sb.words(),
        slot: 0,
        ping: Some("/ping".into()),
        status: Some("/status".into()),
        // A file that exists (`/`-rooted): its ending decides.
        extensions: vec![".php".into()],
        max_requests: 3,
        max_memory: 1 << 40,
        usage: || (1, 1 << 20),
        cpu_mark: || 0,
    };
    // Piece sizes from the seed: 1..=64 bytes, or all at once.
    let mut x = u32::from(seed) | 1;
    let mut next = |left: usize| {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        if seed & 0x80 != 0 {
            left
        } else {
            1 + (x >> 16) as usize % 64
        }
    };
    let mut w = Watch::default();
    let mut at = 0;
    while at < rest.len() {
        let n = next(rest.len() - at).min(rest.len() - at);
        match w.inbound(&rules, &rest[at..at + n]) {
            Seen::Pass => {}
            Seen::Refuse => w = Watch::default(),
            Seen::HandOver(all) => {
                assert!(all.len() <= MAX_HANDOVER);
                // The request's bytes exactly as sent (padding and all),
                // from its BEGIN_REQUEST on: a slice of the stream.
                assert!(all.len() >= 16 && all[1] == codec::kind::BEGIN_REQUEST, "{all:?}");
                assert!(
                    rest.windows(all.len()).any(|win| win == &all[..]),
                    "not the bytes sent: {all:?}"
                );
                w = Watch::default();
            }
        }
        at += n;
        // The same bytes as the program's answer.
        let _ = w.outbound(&rules, &rest[at - n..at]);
    }
}
