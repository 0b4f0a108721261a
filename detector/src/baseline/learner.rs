//! [`Learner`]: one service's model and the recent vectors it is refitted from. With a
//! `warmup`, a first conservative model is fitted on that many normal vectors and refitted
//! each time they double, its threshold widened by `sqrt(baseline / vectors)`; once the
//! baseline is long enough it refits every `refit_every` vectors on those judged normal, so
//! an incident does not become the new normal.

use std::collections::VecDeque;

use super::{FitError, LearnedConfig, Model, Score, Scratch, Smoother};

/// What the learner said about one vector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Judgement {
    pub score: Score,
    /// What is compared with the threshold: the score smoothed over the model's `smooth`
    /// windows ([`Smoother`]); the score itself when `smooth` is 1.
    pub level: f64,
    pub threshold: f64,
    /// `level > threshold`.
    pub exceeds: bool,
}

/// What happened to the model while learning from one vector.
#[derive(Debug, Clone, PartialEq)]
pub enum Learned {
    Nothing,
    /// The first fit (end of warm-up) or a refit.
    Fitted {
        refit: bool,
    },
    Failed(FitError),
}

/// One service's model and the recent vectors it is refitted from.
#[derive(Debug, Clone)]
pub struct Learner {
    config: LearnedConfig,
    columns: Vec<String>,
    model: Option<Model>,
    /// Recent vectors, each with whether it was judged normal.
    history: VecDeque<(Vec<f64>, bool)>,
    since_fit: usize,
    /// Refining a warm-up model: refitted as its normal vectors double, its threshold
    /// widened, until one is fitted on the whole baseline.
    warming: bool,
    scratch: Scratch,
}

impl Learner {
    pub fn new(columns: Vec<String>, config: LearnedConfig) -> Self {
        let warming = config.warmup > 0;
        Self {
            config,
            columns,
            model: None,
            history: VecDeque::new(),
            since_fit: 0,
            warming,
            scratch: Scratch::default(),
        }
    }

    /// Resumes from a stored model: scoring starts at once, no warm-up.
    pub fn resume(model: Model, config: LearnedConfig) -> Self {
        let mut learner = Self::new(model.columns.clone(), config);
        learner.warming &= model.fitted_on < learner.config.baseline;
        learner.model = Some(model);
        learner
    }

    pub fn columns(&self) -> &[String] {
        &self.columns
    }

    pub fn model(&self) -> Option<&Model> {
        self.model.as_ref()
    }

    /// Scores `x` against the current model and judges the level of its series, which
    /// `smoother` keeps (`None` during warm-up).
    pub fn judge(&mut self, x: &[f64], smoother: &mut Smoother) -> Option<Judgement> {
        let model = self.model.as_ref()?;
        let score = model.score(x, &mut self.scratch);
        let level = smoother.push(score.score, model.smooth);
        Some(Judgement {
            score,
            level,
            threshold: model.threshold,
            exceeds: level > model.threshold,
        })
    }

    /// Keeps `x` for later fits (`normal` = it may be learned from) and fits when it is time.
    pub fn learn(&mut self, x: &[f64], normal: bool) -> Learned {
        if self.history.len() == self.config.history.max(1) {
            if let Some((mut old, _)) = self.history.pop_front() {
                old.clear();
                old.extend_from_slice(x);
                self.history.push_back((old, normal));
            }
        } else {
            self.history.push_back((x.to_vec(), normal));
        }
        self.since_fit += 1;
        let due = match &self.model {
            None => self.normal_count() >= self.first_fit(),
            // warming up: refit when the normal vectors have doubled (or reach the baseline)
            Some(m) if self.warming => {
                self.normal_count() >= (2 * m.fitted_on).min(self.config.baseline)
            }
            Some(_) => self.config.refit_every > 0 && self.since_fit >= self.config.refit_every,
        };
        if !due {
            return Learned::Nothing;
        }
        let refit = self.model.is_some();
        match self.refit() {
            Ok(()) => Learned::Fitted { refit },
            Err(e) => Learned::Failed(e),
        }
    }

    /// Normal vectors the first fit waits for.
    fn first_fit(&self) -> usize {
        match self.config.warmup {
            0 => self.config.baseline,
            w => w.min(self.config.baseline),
        }
    }

    fn normal_count(&self) -> usize {
        self.history.iter().filter(|(_, normal)| *normal).count()
    }

    /// Takes the last `recent` vectors of the history as normal (a lasting shift accepted)
    /// and refits on the normal vectors now.
    pub fn accept_recent(&mut self, recent: usize) -> Result<(), FitError> {
        for (_, normal) in self.history.iter_mut().rev().take(recent) {
            *normal = true;
        }
        self.refit()
    }

    /// Fits on the normal vectors in the history, now.
    pub fn refit(&mut self) -> Result<(), FitError> {
        self.since_fit = 0;
        let rows: Vec<&[f64]> = self
            .history
            .iter()
            .filter(|(_, normal)| *normal)
            .map(|(v, _)| v.as_slice())
            .collect();
        let mut model = Model::fit(self.columns.clone(), &rows, &self.config)?;
        if self.warming {
            model.threshold *= warmup_margin(model.fitted_on, self.config.baseline);
            self.warming = model.fitted_on < self.config.baseline;
        }
        self.model = Some(model);
        Ok(())
    }
}

/// How much wider a threshold fitted on `fitted_on` vectors is than one fitted on the full
/// `baseline`: `sqrt(baseline / fitted_on)`, at least 1 (the spread of a quantile estimate
/// shrinks with the square root of the sample).
pub fn warmup_margin(fitted_on: usize, baseline: usize) -> f64 {
    if fitted_on == 0 || fitted_on >= baseline {
        return 1.0;
    }
    (baseline as f64 / fitted_on as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::fixtures::{names, normal, Noise};
    use crate::baseline::{Track, Transition};

    #[test]
    fn a_refit_leaves_out_the_anomalous_windows() {
        let config = LearnedConfig {
            warmup: 0, // the first fit on the full baseline
            baseline: 200,
            history: 1000,
            refit_every: 400,
            ..Default::default()
        };
        let mut noise = Noise::seeded(11);
        let mut learner = Learner::new(names(), config.clone());
        let mut series = Smoother::default();
        for _ in 0..200 {
            let x = normal(&mut noise);
            assert!(
                learner.judge(&x, &mut series).is_none(),
                "no score during warm-up"
            );
            learner.learn(&x, true);
        }
        let first = learner.model().expect("fitted after the baseline").clone();
        // An incident: latency ten times higher for 300 windows, judged anomalous and so left
        // out; then 100 normal windows trigger the refit.
        let mut fired = 0;
        for i in 0..400 {
            let mut x = normal(&mut noise);
            if i < 300 {
                x[3] *= 10.0;
            }
            let judged = learner.judge(&x, &mut series).expect("scored");
            fired += usize::from(judged.exceeds);
            let outcome = learner.learn(&x, !judged.exceeds);
            if i == 399 {
                assert_eq!(outcome, Learned::Fitted { refit: true });
            }
        }
        assert_eq!(fired, 300);
        let refitted = learner.model().expect("refitted");
        assert_eq!(
            refitted.fitted_on, 300,
            "200 + 100 normal, 300 anomalous left out"
        );
        let p99 = 3;
        assert!(
            (refitted.median[p99] - first.median[p99]).abs() < 2.0,
            "the incident did not become normal: median {} vs {}",
            refitted.median[p99],
            first.median[p99]
        );
        let mut slow = normal(&mut noise);
        slow[3] *= 10.0;
        assert!(learner.judge(&slow, &mut series).expect("scored").exceeds);

        // Had the incident been learned from, it would look normal now.
        let mut naive = Learner::new(names(), config);
        let mut noise = Noise::seeded(11);
        for i in 0..600 {
            let mut x = normal(&mut noise);
            if (200..500).contains(&i) {
                x[3] *= 10.0;
            }
            naive.learn(&x, true);
        }
        assert!(naive.model().expect("fitted").median[p99] > 100.0);
    }

    #[test]
    fn refits_on_steady_traffic_keep_the_threshold_where_it_was() {
        // Calibrating a refit without the windows that merely exceeded (no episode) cuts off
        // the tail the quantile is taken from: each refit lowered the threshold a little,
        // and a steady service started to alarm after enough refits.
        let config = LearnedConfig {
            warmup: 0, // the first fit on the full baseline
            baseline: 300,
            history: 1200,
            refit_every: 300,
            max_episode: 0,
            ..Default::default()
        };
        let mut noise = Noise::seeded(3);
        let mut learner = Learner::new(names(), config.clone());
        let mut track = Track::new(&config);
        let mut thresholds = Vec::new();
        let mut opened = 0;
        for _ in 0..30_000 {
            // Latency with a long (exponential) tail, as real latency has.
            let mut x = normal(&mut noise);
            x[3] -= 3.0 * (0.5 - noise.centred()).ln();
            let step = track.step(&mut learner, &x);
            if matches!(step.learned, Learned::Fitted { .. }) {
                thresholds.push(learner.model().expect("fitted").threshold);
            }
            opened += usize::from(step.transition == Transition::Opened);
        }
        assert_eq!(thresholds.len(), 100);
        let lowest = thresholds.iter().copied().fold(f64::INFINITY, f64::min);
        assert!(
            lowest > 0.5 * thresholds[0],
            "a refit's threshold fell to {lowest:.1} from {:.1}: {thresholds:.1?}",
            thresholds[0]
        );
        assert_eq!(opened, 0, "steady traffic opened {opened} episodes");
    }

    #[test]
    fn a_warm_up_model_is_refined_as_the_normal_vectors_double() {
        let config = LearnedConfig {
            warmup: 30,
            baseline: 300,
            refit_every: 600,
            ..Default::default()
        };
        let mut noise = Noise::seeded(5);
        let mut learner = Learner::new(names(), config);
        let mut fits = Vec::new();
        for i in 1..=1000 {
            if let Learned::Fitted { .. } = learner.learn(&normal(&mut noise), true) {
                let model = learner.model().expect("fitted");
                fits.push((i, model.fitted_on));
            }
        }
        assert_eq!(
            fits,
            [
                (30, 30),
                (60, 60),
                (120, 120),
                (240, 240),
                (300, 300),
                (900, 900)
            ],
            "30, then each doubling up to the baseline, then every refit_every"
        );
        assert!((warmup_margin(30, 300) - 10f64.sqrt()).abs() < 1e-12);
        assert_eq!(warmup_margin(300, 300), 1.0);
        assert_eq!(warmup_margin(600, 300), 1.0);
        assert_eq!(warmup_margin(0, 300), 1.0);
    }
}
