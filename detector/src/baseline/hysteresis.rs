//! [`Hysteresis`]: k exceedances among the last n windows open an episode, n quiet windows
//! close it, so one noisy point does not open an incident.

use serde::{Deserialize, Serialize};

/// k of the last n windows above the threshold open an episode; n quiet windows close it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hysteresis {
    k: u32,
    n: u32,
    window: u64,
    open: bool,
}

/// What one window did to the episode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened,
    Closed,
    /// Closed after `max_episode` windows: the shift was taken as the new normal.
    Accepted,
    Unchanged,
}

impl Hysteresis {
    pub fn new(k: u32, n: u32) -> Self {
        let n = n.clamp(1, 64);
        Self {
            k: k.clamp(1, n),
            n,
            window: 0,
            open: false,
        }
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// An episode opened before (by an earlier life of the detector): it closes after n
    /// quiet windows, as if every recent window had been over the threshold.
    pub fn reopen(&mut self) {
        self.open = true;
        self.window = self.mask();
    }

    fn mask(&self) -> u64 {
        if self.n == 64 {
            u64::MAX
        } else {
            (1u64 << self.n) - 1
        }
    }

    /// Ends the episode now, as if the last n windows had been quiet.
    pub fn close(&mut self) {
        self.open = false;
        self.window = 0;
    }

    pub fn push(&mut self, exceeds: bool) -> Transition {
        self.window = ((self.window << 1) | u64::from(exceeds)) & self.mask();
        let count = self.window.count_ones();
        if !self.open && count >= self.k {
            self.open = true;
            Transition::Opened
        } else if self.open && count == 0 {
            self.open = false;
            Transition::Closed
        } else {
            Transition::Unchanged
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hysteresis_needs_k_of_n_to_open_and_n_quiet_to_close() {
        let mut h = Hysteresis::new(3, 5);
        let steps = [true, false, true, false, false, true, true];
        let got: Vec<Transition> = steps.iter().map(|&e| h.push(e)).collect();
        // two of five is noise, and the first exceedance slides out of the window
        assert_eq!(got[..6], [Transition::Unchanged; 6]);
        assert_eq!(got[6], Transition::Opened, "three of the last five");
        for _ in 0..4 {
            assert_eq!(h.push(false), Transition::Unchanged);
        }
        assert_eq!(h.push(false), Transition::Closed, "five quiet windows");
        let mut single = Hysteresis::new(1, 1);
        assert_eq!(single.push(true), Transition::Opened);
        assert_eq!(single.push(false), Transition::Closed);
    }
}
