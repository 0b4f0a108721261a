//! [`Lags`]: appends the previous windows to a vector, so a single series has shape to
//! learn, and temporal anomalies show in multivariate data.

use std::collections::VecDeque;

/// Appends the previous `lags - 1` windows to each vector.
#[derive(Debug, Clone, Default)]
pub struct Lags {
    lags: usize,
    past: VecDeque<Vec<f64>>,
    pub(super) out: Vec<f64>,
}

impl Lags {
    pub fn new(lags: usize) -> Self {
        Self {
            lags: lags.max(1),
            past: VecDeque::new(),
            out: Vec::new(),
        }
    }

    /// Column names of the lagged vector built from `base` names.
    pub fn columns(&self, base: &[String]) -> Vec<String> {
        let mut columns = base.to_vec();
        for lag in 1..self.lags {
            columns.extend(base.iter().map(|b| format!("{b}@lag{lag}")));
        }
        columns
    }

    /// The lagged vector for `current`, or `None` until enough windows were seen.
    pub fn push(&mut self, current: &[f64]) -> Option<&[f64]> {
        if self.lags == 1 {
            self.out.clear();
            self.out.extend_from_slice(current);
            return Some(&self.out);
        }
        // the current window plus the lags - 1 before it, newest first
        let mut slot = if self.past.len() == self.lags {
            self.past.pop_back().unwrap_or_default()
        } else {
            Vec::new()
        };
        slot.clear();
        slot.extend_from_slice(current);
        self.past.push_front(slot);
        if self.past.len() < self.lags {
            return None;
        }
        self.out.clear();
        for window in &self.past {
            self.out.extend_from_slice(window);
        }
        Some(&self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lags_build_windows_of_the_recent_past() {
        let mut lags = Lags::new(3);
        assert_eq!(lags.columns(&["v".to_string()]), ["v", "v@lag1", "v@lag2"]);
        assert!(lags.push(&[1.0]).is_none());
        assert!(lags.push(&[2.0]).is_none());
        assert_eq!(lags.push(&[3.0]).expect("full"), [3.0, 2.0, 1.0]);
        assert_eq!(lags.push(&[4.0]).expect("full"), [4.0, 3.0, 2.0]);
    }
}
