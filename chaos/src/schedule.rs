//! The random schedule, in the spirit of Chaos Monkey: every `interval_ms`, with probability
//! `probability`, one fault of `faults` on one service of `targets`, only during
//! `allowed_hours_utc`. The draw is a pure function of the config, the time and a seeded
//! generator, so a schedule is reproducible and tested without a clock. What it draws goes
//! through `immune.chaos.requests` like any other request, so every guardrail still applies:
//! [`publish_draws`] is the stage's task that draws and publishes.

use std::collections::BTreeMap;
use std::time::Duration;

use immune_nats::envelope;
use immune_nats::{ChaosRequest, FaultKind, ServiceName};
use immune_runtime::{Bus, Shutdown};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleConfig {
    pub enabled: bool,
    /// How often a fault may be drawn.
    pub interval_ms: u64,
    /// Chance of a fault at each interval, 0 to 1.
    pub probability: f64,
    /// UTC hours (0-23) in which faults may be drawn; empty: never (opt in explicitly).
    pub allowed_hours_utc: Vec<u8>,
    /// Services that may be broken; empty: none.
    pub targets: Vec<ServiceName>,
    /// Faults to draw from.
    pub faults: Vec<FaultKind>,
    /// How long each drawn fault lasts.
    pub duration_ms: u64,
    /// Seed of the generator; unset: from the clock.
    pub seed: Option<u64>,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_ms: 60_000,
            probability: 0.1,
            allowed_hours_utc: (9..17).collect(),
            targets: Vec::new(),
            faults: vec![FaultKind::Kill, FaultKind::Latency, FaultKind::Errors],
            duration_ms: 30_000,
            seed: None,
        }
    }
}

impl ScheduleConfig {
    /// The first bad key, named.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.interval_ms < 1000 {
            return Err("schedule.interval_ms: must be at least 1000".into());
        }
        if !(0.0..=1.0).contains(&self.probability) {
            return Err("schedule.probability: must be between 0 and 1".into());
        }
        if let Some(h) = self.allowed_hours_utc.iter().find(|h| **h > 23) {
            return Err(format!(
                "schedule.allowed_hours_utc: {h} is not an hour (0-23)"
            ));
        }
        if self.targets.is_empty() {
            return Err("schedule.targets: name at least one service".into());
        }
        if self.faults.is_empty() {
            return Err("schedule.faults: name at least one fault".into());
        }
        if self.duration_ms == 0 {
            return Err("schedule.duration_ms: must be at least 1".into());
        }
        Ok(())
    }
}

/// SplitMix64: small, fast, seedable, and good enough to pick faults.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// The UTC hour of a time in milliseconds since the epoch.
pub fn hour_utc(now_ms: u64) -> u8 {
    ((now_ms / 3_600_000) % 24) as u8
}

/// Until `shutdown`: what the schedule draws is published as a request, like any client's.
pub(crate) async fn publish_draws(bus: Bus, config: ScheduleConfig, mut shutdown: Shutdown) {
    let seed = config.seed.unwrap_or_else(envelope::now_ms);
    let mut rng = Rng::seeded(seed);
    let mut tick = tokio::time::interval(Duration::from_millis(config.interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    tracing::info!(
        seed,
        interval_ms = config.interval_ms,
        probability = config.probability,
        "chaos schedule on"
    );
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let Some(request) = draw(&config, &mut rng, envelope::now_ms()) else {
            continue;
        };
        tracing::info!(service = %request.service, fault = %request.fault, "the schedule drew a fault");
        if let Err(e) = crate::follow::request(&bus, request).await {
            bus.telemetry().failed("publish_scheduled_request", &e);
        }
    }
}

/// What the schedule asks for at `now_ms`, if anything. Pure but for the generator's state.
pub fn draw(config: &ScheduleConfig, rng: &mut Rng, now_ms: u64) -> Option<ChaosRequest> {
    if !config.enabled || config.targets.is_empty() || config.faults.is_empty() {
        return None;
    }
    if !config.allowed_hours_utc.contains(&hour_utc(now_ms)) {
        return None;
    }
    // Always draw all three numbers, so the sequence does not depend on the hour gate.
    let roll = rng.unit();
    let target = rng.below(config.targets.len());
    let fault = rng.below(config.faults.len());
    (roll < config.probability).then(|| ChaosRequest {
        run_id: None,
        service: config.targets[target].clone(),
        fault: config.faults[fault],
        duration_ms: config.duration_ms,
        params: BTreeMap::from([("trigger".to_string(), "schedule".to_string())]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEN_UTC: u64 = 10 * 3_600_000;

    fn config() -> ScheduleConfig {
        ScheduleConfig {
            enabled: true,
            probability: 0.25,
            allowed_hours_utc: vec![10, 11],
            targets: vec![
                ServiceName::new("orders").expect("valid"),
                ServiceName::new("payments").expect("valid"),
            ],
            faults: vec![FaultKind::Kill, FaultKind::Latency],
            ..ScheduleConfig::default()
        }
    }

    #[test]
    fn the_same_seed_draws_the_same_faults() {
        let draws = |seed| {
            let mut rng = Rng::seeded(seed);
            (0..50)
                .map(|i| draw(&config(), &mut rng, TEN_UTC + i * 60_000))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }

    #[test]
    fn the_probability_is_honoured_and_only_allowed_targets_and_faults_come_out() {
        let mut rng = Rng::seeded(42);
        let n = 20_000;
        let drawn: Vec<ChaosRequest> = (0..n)
            .filter_map(|_| draw(&config(), &mut rng, TEN_UTC))
            .collect();
        let share = drawn.len() as f64 / n as f64;
        assert!((share - 0.25).abs() < 0.02, "share {share}");
        for request in &drawn {
            assert!(["orders", "payments"].contains(&request.service.as_str()));
            assert!([FaultKind::Kill, FaultKind::Latency].contains(&request.fault));
            assert_eq!(request.duration_ms, 30_000);
        }
        assert!(drawn.iter().any(|r| r.service.as_str() == "payments"));
        assert!(drawn.iter().any(|r| r.fault == FaultKind::Latency));
    }

    #[test]
    fn nothing_outside_the_allowed_hours_or_when_disabled() {
        let mut rng = Rng::seeded(1);
        let always = ScheduleConfig {
            probability: 1.0,
            ..config()
        };
        assert!(draw(&always, &mut rng, TEN_UTC).is_some());
        assert!(draw(&always, &mut rng, 12 * 3_600_000).is_none());
        assert!(draw(&always, &mut rng, 24 * 3_600_000 + TEN_UTC + 59 * 60_000).is_some());
        let off = ScheduleConfig {
            enabled: false,
            ..always
        };
        assert!(draw(&off, &mut rng, TEN_UTC).is_none());
    }

    #[test]
    fn bad_schedules_name_the_key() {
        let bad = |c: ScheduleConfig| c.validate().expect_err("invalid");
        assert!(bad(ScheduleConfig {
            probability: 1.5,
            ..config()
        })
        .starts_with("schedule.probability"));
        assert!(bad(ScheduleConfig {
            allowed_hours_utc: vec![24],
            ..config()
        })
        .starts_with("schedule.allowed_hours_utc"));
        assert!(bad(ScheduleConfig {
            targets: vec![],
            ..config()
        })
        .starts_with("schedule.targets"));
        assert!(
            ScheduleConfig::default().validate().is_ok(),
            "disabled needs nothing"
        );
    }
}
