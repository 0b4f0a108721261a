//! The Application Server Dataset: 12 servers, 19 metrics each. The detector learns from
//! `train/` only (its threshold too); `test_label/` is read only to count hits afterwards.

use std::path::Path;

use super::EvalError;
use crate::baseline::{LearnedConfig, Learner, Track};

#[derive(Debug, Clone)]
pub struct Server {
    pub name: String,
    pub train: Vec<Vec<f64>>,
    pub test: Vec<Vec<f64>>,
    pub labels: Vec<bool>,
}

fn rows(path: &Path) -> Result<Vec<Vec<f64>>, EvalError> {
    let text = std::fs::read_to_string(path).map_err(|e| EvalError::io(path, e))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| {
            line.split(',')
                .map(|v| {
                    v.trim().parse::<f64>().map_err(|e| {
                        EvalError::Format(format!("{}:{}: {v:?}: {e}", path.display(), n + 1))
                    })
                })
                .collect()
        })
        .collect()
}

/// Reads `omi-1` .. `omi-12` (in that order) from `root`.
pub fn load(root: &Path) -> Result<Vec<Server>, EvalError> {
    let mut servers = Vec::new();
    for i in 1..=12 {
        let name = format!("omi-{i}");
        let file = format!("{name}.txt");
        let train = rows(&root.join("train").join(&file))?;
        let test = rows(&root.join("test").join(&file))?;
        let labels: Vec<bool> = rows(&root.join("test_label").join(&file))?
            .into_iter()
            .map(|r| r.first().is_some_and(|v| *v > 0.5))
            .collect();
        if labels.len() != test.len() {
            return Err(EvalError::Format(format!(
                "{name}: {} test rows but {} labels",
                test.len(),
                labels.len()
            )));
        }
        servers.push(Server {
            name,
            train,
            test,
            labels,
        });
    }
    Ok(servers)
}

/// What the detector said about every test point: in an episode or not, and its score.
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    pub flagged: Vec<bool>,
    pub scores: Vec<f64>,
    pub threshold: f64,
    pub components: usize,
}

/// Fits on the whole train period (its baseline and threshold), then streams the test period:
/// a point is flagged while an episode is open.
pub fn detect(server: &Server, config: &LearnedConfig) -> Verdicts {
    let mut config = config.clone();
    config.baseline = server
        .train
        .len()
        .saturating_sub(config.windows_before_first_vector())
        .max(10);
    config.history = config.history.max(config.baseline);
    let dims = server.train.first().map_or(0, Vec::len);
    let base: Vec<String> = (0..dims).map(|j| format!("m{j}")).collect();
    let mut learner = Learner::new(
        crate::baseline::Lags::new(config.lags).columns(&base),
        config.clone(),
    );
    let mut track = Track::new(&config);
    for row in &server.train {
        track.step(&mut learner, row);
    }
    let mut verdicts = Verdicts {
        threshold: learner.model().map_or(f64::NAN, |m| m.threshold),
        components: learner.model().map_or(0, |m| m.retained()),
        ..Default::default()
    };
    for row in &server.test {
        let step = track.step(&mut learner, row);
        verdicts.flagged.push(track.is_open());
        verdicts
            .scores
            .push(step.judgement.map_or(0.0, |j| j.level));
    }
    verdicts
}

/// Point-wise precision, recall and F1.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PointWise {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

pub fn point_wise(flagged: &[bool], labels: &[bool]) -> PointWise {
    let tp = flagged
        .iter()
        .zip(labels)
        .filter(|(f, l)| **f && **l)
        .count() as f64;
    let flagged_n = flagged.iter().filter(|f| **f).count() as f64;
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let precision = if flagged_n > 0.0 { tp / flagged_n } else { 0.0 };
    let recall = if positives > 0.0 { tp / positives } else { 0.0 };
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    PointWise {
        precision,
        recall,
        f1,
    }
}

/// Area under the precision-recall curve as average precision: the mean of the precision at
/// each positive, ranking points by score (ties broken against the detector).
pub fn auprc(scores: &[f64], labels: &[bool]) -> f64 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(labels[a].cmp(&labels[b]))
    });
    let positives = labels.iter().filter(|l| **l).count();
    if positives == 0 {
        return 0.0;
    }
    let mut tp = 0usize;
    let mut sum = 0.0;
    for (rank, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
            sum += tp as f64 / (rank + 1) as f64;
        }
    }
    sum / positives as f64
}

/// The best point-wise F1 any threshold on `scores` reaches (flagging the points at or above
/// it), with that threshold. It is chosen on the labels: an upper bound, not a result.
pub fn best_f1(scores: &[f64], labels: &[bool]) -> (f64, f64) {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let positives = labels.iter().filter(|l| **l).count() as f64;
    let (mut tp, mut best) = (0.0, (0.0, f64::INFINITY));
    for (rank, &i) in order.iter().enumerate() {
        tp += f64::from(u8::from(labels[i]));
        // a threshold sits only between distinct scores
        let last_of_tie = order
            .get(rank + 1)
            .is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie && tp > 0.0 {
            let (precision, recall) = (tp / (rank + 1) as f64, tp / positives);
            let f1 = 2.0 * precision * recall / (precision + recall);
            if f1 > best.0 {
                best = (f1, scores[i]);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_wise_counts_by_hand() {
        let flagged = [true, true, false, false, true];
        let labels = [true, false, true, false, true];
        let m = point_wise(&flagged, &labels);
        assert!((m.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.recall - 2.0 / 3.0).abs() < 1e-12);
        assert!((m.f1 - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn average_precision_by_hand() {
        // ranks: 0.9 (pos) 0.8 (neg) 0.7 (pos) → (1/1 + 2/3) / 2
        let ap = auprc(&[0.9, 0.8, 0.7], &[true, false, true]);
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12);
        assert!((auprc(&[0.9, 0.1], &[true, false]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn best_f1_by_hand() {
        // at >= 0.7: 2 of 3 flagged are positive, 2 of 2 positives → P 2/3, R 1, F1 0.8;
        // at >= 0.9: P 1, R 1/2, F1 2/3
        let (f1, at) = best_f1(&[0.9, 0.8, 0.7, 0.1], &[true, false, true, false]);
        assert!((f1 - 0.8).abs() < 1e-12, "{f1}");
        assert_eq!(at, 0.7);
        // a tie cannot be split: both 0.5s are flagged together, P 1/2, R 1, F1 2/3
        let (f1, _) = best_f1(&[0.5, 0.5], &[true, false]);
        assert!((f1 - 2.0 / 3.0).abs() < 1e-12, "{f1}");
        assert_eq!(best_f1(&[0.3], &[false]).0, 0.0);
    }
}
