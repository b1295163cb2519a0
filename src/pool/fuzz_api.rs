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
