//! The process manager's rules (php-fpm's pm), as decisions the master
//! takes from the scoreboard once a second and when an `ondemand` socket
//! has a connection waiting. Pure: the master carries them out.

use super::scoreboard::{Scoreboard, State};
use crate::config::pool::{Pm, Pool};

/// What the rules keep between rounds.
#[derive(Debug, Clone)]
pub struct PmState {
    /// Workers `dynamic` may fork this round (doubles while short of spares).
    pub spawn_rate: usize,
    /// "max children reached" is counted once per episode.
    pub at_max: bool,
    /// The scoreboard's count of requests held in corral, last round.
    pub held_seen: u64,
}

impl Default for PmState {
    fn default() -> PmState {
        PmState {
            spawn_rate: 1,
            at_max: false,
            held_seen: 0,
        }
    }
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub spawn: usize,
    /// Slots of idle workers to retire.
    pub retire: Vec<usize>,
    /// The pool is at max_children while it needs more (count and warn).
    pub reached: bool,
}

/// One round of the rules. `waiting` is the pool socket's accept queue.
pub fn decide(cfg: &Pool, sb: &Scoreboard, st: &mut PmState, now_mono_us: u64, waiting: usize) -> Decision {
    // Requests held in corral since the last round wait too (they never
    // reach the socket while the pool is saturated): ondemand counts them
    // as arrivals at max_children, as php-fpm counts a connection.
    let held = sb.held();
    let waiting = if held != st.held_seen { waiting.max(1) } else { waiting };
    st.held_seen = held;
    let c = sb.counts();
    let room = cfg.max_children.saturating_sub(c.total);
    let mut d = Decision::default();
    let mut short = false;
    match cfg.pm {
        Pm::Static => d.spawn = room,
        Pm::Dynamic => {
            if c.accepting > cfg.max_spare_servers {
                // One per round, as php-fpm: a load that comes and goes
                // does not have the whole surplus stopped and started again.
                d.retire = longest_idle(sb, 1, now_mono_us, 0);
                st.spawn_rate = 1;
            } else if c.accepting < cfg.min_spare_servers {
                short = true;
                let want = (cfg.min_spare_servers - c.accepting).min(st.spawn_rate).min(room);
                d.spawn = want;
                if want == st.spawn_rate && st.spawn_rate < cfg.max_spawn_rate {
                    st.spawn_rate = (st.spawn_rate * 2).min(cfg.max_spawn_rate);
                } else if want < st.spawn_rate {
                    st.spawn_rate = 1;
                }
            } else {
                st.spawn_rate = 1;
            }
        }
        Pm::Ondemand => {
            if waiting > c.accepting {
                short = true;
                d.spawn = (waiting - c.accepting).min(room);
            }
            let idle_us = cfg.process_idle_timeout.as_micros() as u64;
            d.retire = longest_idle(sb, usize::MAX, now_mono_us, idle_us);
        }
    }
    // An episode lasts while the pool is short of workers: a worker
    // recycled meanwhile (max_requests) makes room for a moment, which does
    // not end it. An ondemand pool at max_children stays in it until a
    // worker stops for idleness (room again): a worker that is idle just
    // when one connection comes is no end of it (every connection at the
    // limit was a new episode and a warning, hundreds a second).
    if short && room == 0 {
        if !st.at_max {
            st.at_max = true;
            d.reached = true;
        }
    } else if !short && (cfg.pm != Pm::Ondemand || room > 0) {
        st.at_max = false;
    }
    d
}

/// Up to `n` workers waiting in accept for longer than `min_us`, the
/// longest idle first (a worker bound to a kept connection is left alone).
fn longest_idle(sb: &Scoreboard, n: usize, now_mono_us: u64, min_us: u64) -> Vec<usize> {
    let mut idle: Vec<(u64, usize)> = (0..sb.slots())
        .filter(|&i| sb.state(i) == State::Idle)
        .filter_map(|i| sb.idle_for_us(i, now_mono_us).map(|t| (t, i)))
        .filter(|&(t, _)| t >= min_us)
        .collect();
    idle.sort_by_key(|&(t, _)| std::cmp::Reverse(t));
    idle.into_iter().take(n).map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::scoreboard::{RequestInfo, mono_us};

    fn pool(pm: &str, extra: &str) -> Pool {
        let text = format!(
            "[pool.p]\nlisten = \"127.0.0.1:1\"\ncommand = [\"/bin/sh\"]\npm = \"{pm}\"\nmax_children = 4\n{extra}\n"
        );
        crate::config::load_str("t.toml", &text, std::path::Path::new("/"))
            .unwrap()
            .pools
            .remove(0)
    }

    fn busy(sb: &Scoreboard, slot: usize) {
        sb.begin_request(
            slot,
            &RequestInfo {
                method: "GET",
                uri: "/",
                script: "-",
                user: "-",
                content_length: 0,
            },
        );
    }

    #[test]
    fn dynamic_doubles_its_rate_and_counts_max_children_once() {
        let cfg = pool(
            "dynamic",
            "min_spare_servers = 2\nmax_spare_servers = 3\nstart_servers = 2",
        );
        let sb = Scoreboard::new(4).unwrap();
        let mut st = PmState::default();
        let d = decide(&cfg, &sb, &mut st, mono_us(), 0);
        assert_eq!(d.spawn, 1, "rate starts at 1");
        assert_eq!(st.spawn_rate, 2);
        for _ in 0..4 {
            let s = sb.claim().unwrap();
            busy(&sb, s);
        }
        let d = decide(&cfg, &sb, &mut st, mono_us(), 0);
        assert_eq!((d.spawn, d.reached), (0, true));
        let d = decide(&cfg, &sb, &mut st, mono_us(), 0);
        assert!(!d.reached, "counted once per episode");
        // A worker recycled in the middle of it: room for a moment, then
        // full again, still the same episode.
        sb.free(0);
        assert_eq!(decide(&cfg, &sb, &mut st, mono_us(), 0).spawn, 1);
        busy(&sb, sb.claim().unwrap());
        assert!(
            !decide(&cfg, &sb, &mut st, mono_us(), 0).reached,
            "a recycle does not start an episode"
        );
        // Spares again: the episode is over, the next one counts.
        for i in 0..4 {
            sb.set_state(i, State::Idle);
        }
        assert!(!decide(&cfg, &sb, &mut st, mono_us(), 0).reached);
        for i in 0..4 {
            busy(&sb, i);
        }
        assert!(decide(&cfg, &sb, &mut st, mono_us(), 0).reached);
    }

    #[test]
    fn an_ondemand_episode_at_max_children_ends_only_with_room() {
        let cfg = pool("ondemand", "process_idle_timeout = \"10s\"");
        let sb = Scoreboard::new(4).unwrap();
        let mut st = PmState::default();
        for _ in 0..3 {
            let s = sb.claim().unwrap();
            busy(&sb, s);
        }
        let b = sb.claim().unwrap();
        busy(&sb, b);
        assert!(decide(&cfg, &sb, &mut st, mono_us(), 1).reached);
        // One worker idle when the next connection comes, then busy again:
        // the same episode, not a new warning per connection.
        sb.set_state(b, State::Idle);
        assert!(!decide(&cfg, &sb, &mut st, mono_us(), 1).reached);
        busy(&sb, b);
        assert!(!decide(&cfg, &sb, &mut st, mono_us(), 1).reached);
        // A worker stopped for idleness: room, the episode is over.
        sb.free(b);
        assert!(!decide(&cfg, &sb, &mut st, mono_us(), 0).reached);
        busy(&sb, sb.claim().unwrap());
        assert!(decide(&cfg, &sb, &mut st, mono_us(), 1).reached);
    }

    #[test]
    fn dynamic_retires_one_spare_above_the_maximum_per_round() {
        let cfg = pool(
            "dynamic",
            "min_spare_servers = 1\nmax_spare_servers = 2\nstart_servers = 1",
        );
        let sb = Scoreboard::new(4).unwrap();
        for _ in 0..4 {
            let s = sb.claim().unwrap();
            sb.set_state(s, State::Idle);
        }
        let mut st = PmState::default();
        // Two above the maximum: one round stops one (php-fpm's pace).
        let d = decide(&cfg, &sb, &mut st, mono_us() + 1, 0);
        assert_eq!(d.retire.len(), 1);
        sb.free(d.retire[0]);
        let d = decide(&cfg, &sb, &mut st, mono_us() + 1, 0);
        assert_eq!(d.retire.len(), 1);
        sb.free(d.retire[0]);
        assert!(decide(&cfg, &sb, &mut st, mono_us() + 1, 0).retire.is_empty());
    }

    #[test]
    fn ondemand_spawns_for_waiting_connections_and_retires_idle_ones() {
        let cfg = pool("ondemand", "process_idle_timeout = \"1s\"");
        let sb = Scoreboard::new(4).unwrap();
        let mut st = PmState::default();
        assert_eq!(decide(&cfg, &sb, &mut st, mono_us(), 0).spawn, 0);
        assert_eq!(decide(&cfg, &sb, &mut st, mono_us(), 2).spawn, 2);
        let s = sb.claim().unwrap();
        sb.set_state(s, State::Idle);
        assert!(decide(&cfg, &sb, &mut st, mono_us(), 0).retire.is_empty());
        assert_eq!(decide(&cfg, &sb, &mut st, mono_us() + 2_000_000, 0).retire, vec![s]);
    }
}
