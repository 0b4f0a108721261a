//! [`Track`]: one scored series, window by window: seasonal adjustment, lags, the judged
//! level, the episode it opens or closes, what the learner learns from it, and a shift that
//! lasts `max_episode` windows accepted as the new normal.

use super::{
    Hysteresis, Judgement, Lags, Learned, LearnedConfig, Learner, Model, Seasonal, Smoother,
    Transition,
};

/// One scored series (an instance, a NAB file, an ASD server): its lag window and episode
/// state. The model it is judged by may be shared ([`Learner`] per service).
#[derive(Debug, Clone)]
pub struct Track {
    seasonal: Seasonal,
    lags: Lags,
    smoother: Smoother,
    hysteresis: Hysteresis,
    /// Windows the current episode has been open.
    open_windows: u32,
    max_episode: u32,
}

/// What one window did.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// `None` during warm-up (no model yet, or the lag window is not full).
    pub judgement: Option<Judgement>,
    pub transition: Transition,
    pub learned: Learned,
}

impl Track {
    pub fn new(config: &LearnedConfig) -> Self {
        Self {
            seasonal: Seasonal::new(config.season, config.seasons),
            lags: Lags::new(config.lags),
            smoother: Smoother::default(),
            hysteresis: Hysteresis::new(config.k, config.n),
            open_windows: 0,
            max_episode: config.max_episode,
        }
    }

    pub fn lags(&self) -> &Lags {
        &self.lags
    }

    pub fn is_open(&self) -> bool {
        self.hysteresis.is_open()
    }

    /// Takes back an episode opened by an earlier life of the detector.
    pub fn reopen(&mut self) {
        self.hysteresis.reopen();
    }

    /// The vector last built (lags included), for explanations.
    pub fn last_vector(&self) -> &[f64] {
        &self.lags.out
    }

    /// Judges one window, moves the episode, and learns from it when it looked normal.
    pub fn step(&mut self, learner: &mut Learner, window: &[f64]) -> Step {
        self.step_learning(learner, window, true, |_, _| false)
    }

    /// [`Track::step`], learning from the window only when `learn` (false: the window is
    /// judged but never enters a baseline or a refit, and a long episode is not taken as
    /// the new normal: a chaos injection in force, a hard fault the rules see).
    ///
    /// `served(model, x)`: while an episode is open, a window over the threshold still counts
    /// as quiet when it says users are served as usual (more load than normal, the latency
    /// and errors back: capacity was added), so an overload's episode closes once the repair
    /// works, not only once the load falls.
    pub fn step_learning(
        &mut self,
        learner: &mut Learner,
        window: &[f64],
        learn: bool,
        served: fn(&Model, &[f64]) -> bool,
    ) -> Step {
        let Some(x) = self
            .seasonal
            .push(window)
            .and_then(|adjusted| self.lags.push(adjusted))
        else {
            return Step {
                judgement: None,
                transition: Transition::Unchanged,
                learned: Learned::Nothing,
            };
        };
        let judgement = learner.judge(x, &mut self.smoother);
        let transition = match (judgement, learner.model()) {
            (Some(j), Some(model)) => {
                let quiet_enough = j.exceeds && self.hysteresis.is_open() && served(model, x);
                self.hysteresis.push(j.exceeds && !quiet_enough)
            }
            _ => Transition::Unchanged,
        };
        // Only an episode is left out of later fits: a lone exceedance is the normal tail
        // the next threshold is calibrated on.
        let normal = !self.hysteresis.is_open();
        let mut learned = if learn {
            learner.learn(x, normal)
        } else {
            Learned::Nothing
        };
        self.open_windows = if self.hysteresis.is_open() {
            self.open_windows.saturating_add(1)
        } else {
            0
        };
        let mut transition = transition;
        if learn && self.max_episode > 0 && self.open_windows >= self.max_episode {
            // A shift this lasting is the service's new normal: learn it, end the episode.
            self.hysteresis.close();
            self.open_windows = 0;
            self.smoother = Smoother::default();
            transition = Transition::Accepted;
            learned = match learner.accept_recent(self.max_episode as usize) {
                Ok(()) => Learned::Fitted { refit: true },
                Err(e) => Learned::Failed(e),
            };
        }
        Step {
            judgement,
            transition,
            learned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::fixtures::{names, normal, Noise};

    #[test]
    fn a_shift_that_lasts_max_episode_windows_becomes_the_new_normal() {
        let config = LearnedConfig {
            baseline: 200,
            history: 1000,
            refit_every: 0,
            max_episode: 50,
            ..Default::default()
        };
        let mut noise = Noise::seeded(5);
        let mut learner = Learner::new(names(), config.clone());
        let mut track = Track::new(&config);
        for _ in 0..200 {
            track.step(&mut learner, &normal(&mut noise));
        }
        assert!(learner.model().is_some());
        // p99 latency three times as high from now on, for good.
        let shifted = |noise: &mut Noise| {
            let mut x = normal(noise);
            x[3] *= 3.0;
            x
        };
        let transitions: Vec<Transition> = (0..60)
            .map(|_| track.step(&mut learner, &shifted(&mut noise)).transition)
            .collect();
        let opened = transitions
            .iter()
            .position(|t| *t == Transition::Opened)
            .expect("the shift opens an episode");
        let accepted = transitions
            .iter()
            .position(|t| *t == Transition::Accepted)
            .expect("and is accepted");
        assert_eq!(
            accepted - opened + 1,
            50,
            "accepted in its 50th open window (the opening one counts)"
        );
        assert!(!track.is_open());
        // The new level is normal now: no episode opens on it.
        let reopened = (0..200)
            .filter(|_| {
                track.step(&mut learner, &shifted(&mut noise)).transition == Transition::Opened
            })
            .count();
        assert_eq!(reopened, 0);

        // max_episode 0: the episode stays open.
        let never = LearnedConfig {
            max_episode: 0,
            ..config
        };
        let mut learner = Learner::new(names(), never.clone());
        let mut track = Track::new(&never);
        for _ in 0..200 {
            track.step(&mut learner, &normal(&mut noise));
        }
        for _ in 0..300 {
            track.step(&mut learner, &shifted(&mut noise));
        }
        assert!(
            track.is_open(),
            "without the guard the shift is never learned"
        );
    }
}
