//! The NAB score, implemented from NAB's published scoring rules (its sweeper):
//!
//! - the first 15% of a file (at most 750 points) is a probation period: not scored;
//! - a detection inside a label window scores `tp * sigma(pos) / sigma(-1)`, where `pos` is
//!   `-(right - i + 1) / width` (-1 at the window's start, near 0 at its end) and
//!   `sigma(p) = 2 / (1 + e^(5p)) - 1`; only the best (earliest) detection of a window counts;
//! - a window with no detection costs `-fn`;
//! - a detection outside every window costs `fp * sigma(p)` with `p` the distance past the
//!   preceding window in window widths (`-1` when no window precedes it, or `p > 3`);
//! - a corpus score is normalised as `100 * (raw - null) / (perfect - null)`, with `null` the
//!   detector that never fires and `perfect` one detection at the start of every window.

use std::collections::BTreeMap;
use std::path::Path;

use super::EvalError;
use crate::baseline::{LearnedConfig, Learner, Track, Transition};

/// The cost matrix of one NAB application profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Profile {
    pub name: &'static str,
    pub tp: f64,
    pub fp: f64,
    pub fn_: f64,
}

/// NAB's `config/profiles.json`.
pub const PROFILES: [Profile; 3] = [
    Profile {
        name: "standard",
        tp: 1.0,
        fp: 0.11,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FP_rate",
        tp: 1.0,
        fp: 0.22,
        fn_: 1.0,
    },
    Profile {
        name: "reward_low_FN_rate",
        tp: 1.0,
        fp: 0.11,
        fn_: 2.0,
    },
];

fn scaled_sigmoid(position: f64) -> f64 {
    if position > 3.0 {
        -1.0
    } else {
        2.0 / (1.0 + (5.0 * position).exp()) - 1.0
    }
}

/// Points not scored at the start of a file of `len` points.
pub fn probation(len: usize) -> usize {
    ((0.15 * len as f64).floor()).min(0.15 * 5000.0) as usize
}

/// One file's score under one profile.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FileScore {
    pub raw: f64,
    /// Windows scored (at least one point after probation) and all windows.
    pub scored_windows: usize,
    pub windows: usize,
    pub tp: usize,
    pub fp: usize,
}

impl FileScore {
    /// The detector that never fires.
    pub fn null(&self, profile: &Profile) -> f64 {
        -profile.fn_ * self.scored_windows as f64
    }

    /// One detection at the start of every window.
    pub fn perfect(&self, profile: &Profile) -> f64 {
        profile.tp * self.windows as f64
    }
}

/// Scores `detections` (point indexes) of a file of `len` points with label `windows`
/// (inclusive index ranges, sorted).
pub fn score_file(
    len: usize,
    windows: &[(usize, usize)],
    detections: &[usize],
    profile: &Profile,
) -> FileScore {
    let probation = probation(len);
    let max_tp = scaled_sigmoid(-1.0);
    let mut parts: Vec<Option<f64>> = windows
        .iter()
        .map(|&(_, right)| (right >= probation).then_some(-profile.fn_))
        .collect();
    let mut fp_total = 0.0;
    let mut fp = 0;
    for &i in detections {
        if i >= len || i < probation {
            continue;
        }
        if let Some(w) = windows.iter().position(|&(l, r)| l <= i && i <= r) {
            let (left, right) = windows[w];
            let width = (right - left + 1) as f64;
            let position = -((right - i + 1) as f64) / width;
            let score = scaled_sigmoid(position) * profile.tp / max_tp;
            if let Some(part) = parts[w].as_mut() {
                *part = part.max(score);
            }
        } else {
            fp += 1;
            let preceding = windows.iter().rev().find(|&&(_, r)| r < i);
            let unweighted = match preceding {
                None => -1.0,
                Some(&(left, right)) => {
                    let width = (right - left + 1) as f64;
                    scaled_sigmoid((i - right) as f64 / (width - 1.0).max(1.0))
                }
            };
            fp_total += unweighted * profile.fp;
        }
    }
    let tp = parts
        .iter()
        .flatten()
        .filter(|&&p| p > -profile.fn_)
        .count();
    FileScore {
        raw: parts.iter().flatten().sum::<f64>() + fp_total,
        scored_windows: parts.iter().flatten().count(),
        windows: windows.len(),
        tp,
        fp,
    }
}

/// `100 * (raw - null) / (perfect - null)` over several files.
pub fn normalised(scores: &[FileScore], profile: &Profile) -> f64 {
    let raw: f64 = scores.iter().map(|s| s.raw).sum();
    let null: f64 = scores.iter().map(|s| s.null(profile)).sum();
    let perfect: f64 = scores.iter().map(|s| s.perfect(profile)).sum();
    if (perfect - null).abs() < 1e-12 {
        return 0.0;
    }
    100.0 * (raw - null) / (perfect - null)
}

/// One NAB data file with its label windows.
#[derive(Debug, Clone)]
pub struct NabFile {
    pub name: String,
    pub values: Vec<f64>,
    pub windows: Vec<(usize, usize)>,
}

/// Reads `<root>/data/<corpus>/*.csv` and the windows of `<root>/combined_windows.json`.
pub fn load(root: &Path, corpus: &str) -> Result<Vec<NabFile>, EvalError> {
    let labels_path = root.join("combined_windows.json");
    let text = std::fs::read_to_string(&labels_path).map_err(|e| EvalError::io(&labels_path, e))?;
    let labels: BTreeMap<String, Vec<(String, String)>> = serde_json::from_str(&text)
        .map_err(|e| EvalError::Format(format!("{}: {e}", labels_path.display())))?;
    let dir = root.join("data").join(corpus);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(|e| EvalError::io(&dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".csv"))
        .collect();
    names.sort();
    let mut files = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let text = std::fs::read_to_string(&path).map_err(|e| EvalError::io(&path, e))?;
        let mut stamps = Vec::new();
        let mut values = Vec::new();
        for (n, line) in text.lines().enumerate().skip(1) {
            let (stamp, value) = line.split_once(',').ok_or_else(|| {
                EvalError::Format(format!("{}:{}: no comma", path.display(), n + 1))
            })?;
            let value: f64 = value.trim().parse().map_err(|e| {
                EvalError::Format(format!("{}:{}: {value:?}: {e}", path.display(), n + 1))
            })?;
            stamps.push(stamp.trim().to_string());
            values.push(value);
        }
        let key = format!("{corpus}/{name}");
        let mut windows = Vec::new();
        for (from, to) in labels.get(&key).map(Vec::as_slice).unwrap_or_default() {
            let index = |t: &str| {
                let t = &t[..t.len().min(19)];
                stamps.iter().position(|s| s == t).ok_or_else(|| {
                    EvalError::Format(format!(
                        "{key}: window bound {t} is not a timestamp of the file"
                    ))
                })
            };
            windows.push((index(from)?, index(to)?));
        }
        windows.sort();
        files.push(NabFile {
            name,
            values,
            windows,
        });
    }
    Ok(files)
}

/// Runs the detector over one file as a stream: the probation period is its baseline (no
/// labels there), then it scores, opens episodes and refits as it goes. A detection is the
/// point where an episode opens.
pub fn detect(file: &NabFile, config: &LearnedConfig) -> Vec<usize> {
    let mut config = config.clone();
    config.baseline = probation(file.values.len())
        .saturating_sub(config.windows_before_first_vector())
        .max(10);
    config.history = config.history.max(config.baseline);
    let columns = crate::baseline::Lags::new(config.lags).columns(&["value".to_string()]);
    let mut learner = Learner::new(columns, config.clone());
    let mut track = Track::new(&config);
    let mut detections = Vec::new();
    for (i, v) in file.values.iter().enumerate() {
        let step = track.step(&mut learner, &[*v]);
        if step.transition == Transition::Opened {
            detections.push(i);
        }
    }
    detections
}

#[cfg(test)]
mod tests {
    use super::*;

    const STANDARD: Profile = PROFILES[0];

    #[test]
    fn the_scorer_matches_a_hand_computed_file() {
        // 100 points: probation is 15; one window 40..=49 (width 10).
        let windows = [(40, 49)];
        // Null and perfect.
        let none = score_file(100, &windows, &[], &STANDARD);
        assert_eq!(none.raw, -1.0);
        let perfect = score_file(100, &windows, &[40], &STANDARD);
        assert!((perfect.raw - 1.0).abs() < 1e-12);
        // A detection at 45: pos = -(49 - 45 + 1) / 10 = -0.5;
        // 2 / (1 + e^-2.5) - 1 = 0.848283..., / sigma(-1) = 0.986614... → 0.859792...
        let mid = score_file(100, &windows, &[45, 47], &STANDARD);
        let expected =
            (2.0 / (1.0 + (-2.5f64).exp()) - 1.0) / (2.0 / (1.0 + (-5.0f64).exp()) - 1.0);
        assert!((mid.raw - expected).abs() < 1e-12, "{}", mid.raw);
        assert!((expected - 0.859792).abs() < 1e-5);
        assert_eq!(mid.tp, 1);
        // A false positive before any window costs the full fp weight; one in probation
        // costs nothing; one right after the window costs almost nothing.
        let fp_before = score_file(100, &windows, &[10, 20], &STANDARD);
        assert!((fp_before.raw - (-1.0 - 0.11)).abs() < 1e-12);
        assert_eq!(fp_before.fp, 1);
        // 50 is 1 point past 49: p = 1 / 9 → sigma = 2 / (1 + e^(5/9)) - 1 = -0.27093...
        let fp_after = score_file(100, &windows, &[50], &STANDARD);
        let sigma = 2.0 / (1.0 + (5.0f64 / 9.0).exp()) - 1.0;
        assert!((fp_after.raw - (-1.0 + 0.11 * sigma)).abs() < 1e-12);
        assert!((sigma + 0.27093).abs() < 1e-4);
        // Far past the window (p > 3): the full cost.
        let far = score_file(100, &windows, &[90], &STANDARD);
        assert!((far.raw - (-1.11)).abs() < 1e-12);
    }

    #[test]
    fn normalisation_puts_null_at_0_and_perfect_at_100() {
        let windows = [(40, 49), (70, 79)];
        let null = score_file(100, &windows, &[], &STANDARD);
        let perfect = score_file(100, &windows, &[40, 70], &STANDARD);
        assert_eq!(normalised(&[null], &STANDARD), 0.0);
        assert!((normalised(&[perfect], &STANDARD) - 100.0).abs() < 1e-9);
        // One of two windows caught at its start: (0 - -2) / (2 - -2) = 50.
        let half = score_file(100, &windows, &[40], &STANDARD);
        assert!((normalised(&[half], &STANDARD) - 50.0).abs() < 1e-9);
        // Low-FN profile doubles the miss: (1 - 2 - -4) / (2 - -4) = 50 too, but a miss
        // alone costs more.
        let low_fn = PROFILES[2];
        let half = score_file(100, &windows, &[40], &low_fn);
        assert!((half.raw - (1.0 - 2.0)).abs() < 1e-12);
    }

    #[test]
    fn probation_is_15_percent_capped_at_750() {
        assert_eq!(probation(4032), 604);
        assert_eq!(probation(10_000), 750);
    }
}
