//! The load profile: the rate the load generator aims at, as a pure function of time.
//!
//! A day compressed into `cycle_s` seconds (a sine around the base rate, `base * (1 ±
//! amplitude)`), short bursts users do not feel (`burst_multiplier` times the cycle for
//! `burst_s` at the end of every `burst_every_s`), and a quiet period (a tenth of the base for
//! `quiet_s` at the end of every `quiet_every_s`, over anything else). A [`Spike`] asked for
//! through the control endpoint multiplies all of it for a while: the chaos `overload` fault.
//! The defaults keep the fault-free profile within a demo service's capacity.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The shape of the load over time.
#[derive(Debug, Clone, Copy, PartialEq, clap::Args, Serialize)]
pub struct Profile {
    /// The base rate, requests a second.
    #[arg(long = "rps", default_value_t = 20.0)]
    pub base_rps: f64,
    /// The period of the daily cycle, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub cycle_s: f64,
    /// How far the cycle swings around the base (0..1): base * (1 ± amplitude).
    #[arg(long, default_value_t = 0.5)]
    pub cycle_amplitude: f64,
    /// A burst every this many seconds (0: none).
    #[arg(long, default_value_t = 120.0)]
    pub burst_every_s: f64,
    /// How long a burst lasts, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub burst_s: f64,
    /// The rate during a burst, times the cycle's.
    #[arg(long, default_value_t = 2.0)]
    pub burst_multiplier: f64,
    /// A quiet period every this many seconds (0: none).
    #[arg(long, default_value_t = 900.0)]
    pub quiet_every_s: f64,
    /// How long a quiet period lasts, seconds (at a tenth of the base rate).
    #[arg(long, default_value_t = 60.0)]
    pub quiet_s: f64,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            base_rps: 20.0,
            cycle_s: 600.0,
            cycle_amplitude: 0.5,
            burst_every_s: 120.0,
            burst_s: 5.0,
            burst_multiplier: 2.0,
            quiet_every_s: 900.0,
            quiet_s: 60.0,
        }
    }
}

/// A profile setting out of range, named by its flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--{flag} {value}: {expected}")]
pub struct ProfileError {
    pub flag: &'static str,
    pub value: f64,
    pub expected: &'static str,
}

/// A load spike asked for through the control endpoint: the base rate times `multiplier`
/// until `until` (time since the generator started), whatever the cycle's phase, so a spike
/// is as large at the cycle's low as at its high (times the cycle's rate, the same spike
/// came to a third of its size at the low and may not exceed a capacity at all).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    pub multiplier: f64,
    pub until: Duration,
}

/// Where the profile is at a moment, for `GET /load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Cycle,
    Burst,
    Quiet,
}

impl Profile {
    pub fn validate(&self) -> Result<(), ProfileError> {
        let check = |flag, value: f64, ok: bool, expected| {
            if ok && value.is_finite() {
                Ok(())
            } else {
                Err(ProfileError {
                    flag,
                    value,
                    expected,
                })
            }
        };
        check("rps", self.base_rps, self.base_rps >= 0.0, "0 or more")?;
        check("cycle-s", self.cycle_s, self.cycle_s > 0.0, "more than 0")?;
        check(
            "cycle-amplitude",
            self.cycle_amplitude,
            (0.0..=1.0).contains(&self.cycle_amplitude),
            "from 0 to 1",
        )?;
        check(
            "burst-every-s",
            self.burst_every_s,
            self.burst_every_s >= 0.0,
            "0 (none) or more",
        )?;
        check(
            "burst-s",
            self.burst_s,
            self.burst_s >= 0.0 && (self.burst_every_s == 0.0 || self.burst_s < self.burst_every_s),
            "0 or more, less than --burst-every-s",
        )?;
        check(
            "burst-multiplier",
            self.burst_multiplier,
            self.burst_multiplier >= 1.0,
            "1 or more",
        )?;
        check(
            "quiet-every-s",
            self.quiet_every_s,
            self.quiet_every_s >= 0.0,
            "0 (none) or more",
        )?;
        check(
            "quiet-s",
            self.quiet_s,
            self.quiet_s >= 0.0 && (self.quiet_every_s == 0.0 || self.quiet_s < self.quiet_every_s),
            "0 or more, less than --quiet-every-s",
        )
    }

    /// The highest rate the profile itself reaches (no spike): what capacity must cover.
    pub fn peak_rps(&self) -> f64 {
        let burst = if self.burst_every_s > 0.0 && self.burst_s > 0.0 {
            self.burst_multiplier
        } else {
            1.0
        };
        self.base_rps * (1.0 + self.cycle_amplitude) * burst
    }

    /// Which part of the profile is in force `t` into the run.
    pub fn phase(&self, t: Duration) -> Phase {
        let t = t.as_secs_f64();
        let in_last = |every: f64, length: f64| every > 0.0 && t % every >= every - length;
        if in_last(self.quiet_every_s, self.quiet_s) {
            Phase::Quiet
        } else if in_last(self.burst_every_s, self.burst_s) {
            Phase::Burst
        } else {
            Phase::Cycle
        }
    }

    /// The rate the profile asks for `t` into the run, without any spike.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let cycle = || {
            let angle = std::f64::consts::TAU * t.as_secs_f64() / self.cycle_s;
            self.base_rps * (1.0 + self.cycle_amplitude * angle.sin())
        };
        match self.phase(t) {
            Phase::Quiet => self.base_rps / 10.0,
            Phase::Burst => cycle() * self.burst_multiplier,
            Phase::Cycle => cycle(),
        }
    }
}

/// The target rate `t` into the run: the profile's, or the base rate times a spike's
/// multiplier while it lasts.
pub fn target_rps(profile: &Profile, spike: Option<Spike>, t: Duration) -> f64 {
    match spike.filter(|s| t < s.until) {
        Some(spike) => profile.base_rps * spike.multiplier,
        None => profile.rate_at(t),
    }
    .max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn flat(base: f64) -> Profile {
        Profile {
            base_rps: base,
            cycle_amplitude: 0.0,
            burst_every_s: 0.0,
            quiet_every_s: 0.0,
            ..Profile::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn the_defaults_are_valid_and_stay_within_one_service() {
        let profile = Profile::default();
        assert_eq!(profile.validate(), Ok(()));
        // 20 * 1.5 * 2: well under the 160 req/s of the smallest shipped service.
        assert!(close(profile.peak_rps(), 60.0));
    }

    #[test]
    fn the_cycle_swings_base_times_one_plus_or_minus_amplitude() {
        let profile = Profile {
            cycle_amplitude: 0.5,
            ..flat(20.0)
        };
        assert!(close(profile.rate_at(secs(0.0)), 20.0));
        assert!(close(profile.rate_at(secs(150.0)), 30.0), "a quarter: peak");
        assert!(close(profile.rate_at(secs(300.0)), 20.0));
        assert!(
            close(profile.rate_at(secs(450.0)), 10.0),
            "three quarters: trough"
        );
        assert!(close(profile.rate_at(secs(750.0)), 30.0), "the next day");
    }

    #[test]
    fn a_burst_multiplies_the_cycle_at_the_end_of_its_period() {
        let profile = Profile {
            burst_every_s: 120.0,
            burst_s: 5.0,
            burst_multiplier: 2.0,
            ..flat(20.0)
        };
        assert!(close(profile.rate_at(secs(114.9)), 20.0));
        assert_eq!(profile.phase(secs(115.0)), Phase::Burst);
        assert!(close(profile.rate_at(secs(117.0)), 40.0));
        assert!(close(profile.rate_at(secs(120.0)), 20.0), "over");
        assert!(close(profile.rate_at(secs(239.0)), 40.0), "and again");
    }

    #[test]
    fn a_quiet_period_is_a_tenth_of_the_base_over_a_burst() {
        let profile = Profile {
            cycle_amplitude: 0.5,
            burst_every_s: 60.0,
            burst_s: 30.0,
            quiet_every_s: 300.0,
            quiet_s: 60.0,
            ..flat(20.0)
        };
        assert_eq!(profile.phase(secs(250.0)), Phase::Quiet);
        assert!(close(profile.rate_at(secs(250.0)), 2.0));
        assert!(close(profile.rate_at(secs(299.0)), 2.0));
        assert_eq!(profile.phase(secs(300.0)), Phase::Cycle);
    }

    #[test]
    fn a_spike_multiplies_the_base_rate_until_it_ends() {
        let profile = flat(20.0);
        let spike = Some(Spike {
            multiplier: 10.0,
            until: secs(30.0),
        });
        assert!(close(target_rps(&profile, spike, secs(29.9)), 200.0));
        assert!(close(target_rps(&profile, spike, secs(30.0)), 20.0));
        assert!(close(target_rps(&profile, None, secs(1.0)), 20.0));
    }

    #[test]
    fn a_spike_is_as_large_at_the_cycles_low_as_at_its_high() {
        let profile = Profile {
            cycle_s: 600.0,
            cycle_amplitude: 0.5,
            ..flat(20.0)
        };
        let spike = |until| {
            Some(Spike {
                multiplier: 12.0,
                until,
            })
        };
        // the cycle's high at 150 s (30 req/s), its low at 450 s (10 req/s)
        assert!(close(profile.rate_at(secs(150.0)), 30.0));
        assert!(close(profile.rate_at(secs(450.0)), 10.0));
        assert!(close(
            target_rps(&profile, spike(secs(200.0)), secs(150.0)),
            240.0
        ));
        assert!(close(
            target_rps(&profile, spike(secs(500.0)), secs(450.0)),
            240.0
        ));
    }

    #[test]
    fn a_bad_setting_names_its_flag() {
        let cases = [
            (
                Profile {
                    base_rps: -1.0,
                    ..Profile::default()
                },
                "rps",
            ),
            (
                Profile {
                    cycle_s: 0.0,
                    ..Profile::default()
                },
                "cycle-s",
            ),
            (
                Profile {
                    cycle_amplitude: 1.5,
                    ..Profile::default()
                },
                "cycle-amplitude",
            ),
            (
                Profile {
                    burst_s: 120.0,
                    ..Profile::default()
                },
                "burst-s",
            ),
            (
                Profile {
                    burst_multiplier: 0.5,
                    ..Profile::default()
                },
                "burst-multiplier",
            ),
            (
                Profile {
                    quiet_s: 900.0,
                    ..Profile::default()
                },
                "quiet-s",
            ),
            (
                Profile {
                    base_rps: f64::NAN,
                    ..Profile::default()
                },
                "rps",
            ),
        ];
        for (profile, flag) in cases {
            let error = profile.validate().expect_err(flag);
            assert_eq!(error.flag, flag);
            assert!(error.to_string().starts_with(&format!("--{flag} ")));
        }
    }
}
