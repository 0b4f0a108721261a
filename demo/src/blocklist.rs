//! The source block list behind `POST /admin/block`: while it is on, a client the request
//! screen refused [`BLOCK_AFTER`] times within [`WINDOW`] is blocked, and its requests are
//! answered 403 before the screen reads them (counted as blocked, not as attacks). Users
//! whose requests the screen never refused are never blocked, and `/health` and `/metrics`
//! stay open to everyone (monitoring may share an attacker's address). Off unblocks everyone.
//!
//! Pure: the clock is passed in. Memory is bounded: at most [`MAX_SOURCES`] offenders are
//! remembered (the stalest go first) and at most as many blocked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Refusals within [`WINDOW`] that get a source blocked.
pub const BLOCK_AFTER: usize = 3;
/// How far back refusals count.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Sources remembered (offenders, and blocked ones), at most.
pub const MAX_SOURCES: usize = 1_024;

#[derive(Debug, Default)]
pub struct Blocklist {
    on: bool,
    /// Recent refusals of each source, oldest first (at most [`BLOCK_AFTER`] kept).
    offences: HashMap<IpAddr, VecDeque<Instant>>,
    blocked: HashSet<IpAddr>,
}

impl Blocklist {
    pub fn is_on(&self) -> bool {
        self.on
    }

    pub fn blocked(&self) -> usize {
        self.blocked.len()
    }

    /// Turns blocking on (every source already over the limit is blocked at once) or off
    /// (everyone unblocked; the refusals seen so far stay counted).
    pub fn set(&mut self, on: bool, now: Instant) {
        self.on = on;
        if !on {
            self.blocked.clear();
            return;
        }
        let over: Vec<IpAddr> = self
            .offences
            .iter()
            .filter(|(_, times)| recent(times, now) >= BLOCK_AFTER)
            .map(|(source, _)| *source)
            .collect();
        for source in over {
            self.block(source);
        }
    }

    pub fn is_blocked(&self, source: IpAddr) -> bool {
        self.on && self.blocked.contains(&source)
    }

    /// The screen refused a request of `source`.
    pub fn offence(&mut self, source: IpAddr, now: Instant) {
        if !self.offences.contains_key(&source) && self.offences.len() >= MAX_SOURCES {
            let stalest = self
                .offences
                .iter()
                .min_by_key(|(_, times)| times.back().copied())
                .map(|(s, _)| *s);
            if let Some(s) = stalest {
                self.offences.remove(&s);
            }
        }
        let times = self.offences.entry(source).or_default();
        times.push_back(now);
        while times.len() > BLOCK_AFTER {
            times.pop_front();
        }
        if self.on && recent(times, now) >= BLOCK_AFTER {
            self.block(source);
        }
    }

    fn block(&mut self, source: IpAddr) {
        if self.blocked.len() < MAX_SOURCES {
            self.blocked.insert(source);
        }
    }
}

fn recent(times: &VecDeque<Instant>, now: Instant) -> usize {
    times
        .iter()
        .filter(|&&t| now.saturating_duration_since(t) <= WINDOW)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([172, 18, 0, last])
    }

    #[test]
    fn a_repeat_offender_is_blocked_only_while_blocking_is_on() {
        let t0 = Instant::now();
        let mut b = Blocklist::default();
        for i in 0..5 {
            b.offence(ip(9), t0 + Duration::from_millis(i * 500));
        }
        assert!(!b.is_blocked(ip(9)), "off: nobody is blocked");
        b.set(true, t0 + Duration::from_secs(3));
        assert!(b.is_blocked(ip(9)), "already over the limit when turned on");
        assert!(!b.is_blocked(ip(2)), "a user never refused");
        b.set(false, t0 + Duration::from_secs(4));
        assert!(!b.is_blocked(ip(9)));
        assert_eq!(b.blocked(), 0);
    }

    #[test]
    fn refusals_spread_beyond_the_window_do_not_block() {
        let t0 = Instant::now();
        let mut b = Blocklist::default();
        b.set(true, t0);
        // one refusal every 6 s: never 3 within 10 s
        for i in 0..5 {
            b.offence(ip(7), t0 + Duration::from_secs(i * 6));
        }
        assert!(!b.is_blocked(ip(7)));
        // three quick ones do
        let t = t0 + Duration::from_secs(40);
        for i in 0..3 {
            b.offence(ip(7), t + Duration::from_millis(i * 100));
        }
        assert!(b.is_blocked(ip(7)));
    }

    #[test]
    fn memory_is_bounded_by_the_number_of_sources() {
        let t0 = Instant::now();
        let mut b = Blocklist::default();
        b.set(true, t0);
        for i in 0..(MAX_SOURCES as u32 + 500) {
            let source = IpAddr::from((0x0a00_0000u32 + i).to_be_bytes());
            for k in 0..BLOCK_AFTER as u64 {
                b.offence(source, t0 + Duration::from_millis(u64::from(i) + k));
            }
        }
        assert!(b.offences.len() <= MAX_SOURCES);
        assert!(b.blocked() <= MAX_SOURCES);
    }
}
