//! The safety rules' state, pure: rate budgets (token buckets) and the run-time controls
//! (kill switch, maintenance windows) as read from the control bucket.

use std::collections::BTreeMap;

use immune_nats::ServiceName;
use serde::{Deserialize, Serialize};

/// A rate budget: `burst` actions at once, refilled at `per_minute`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub burst: u32,
    pub per_minute: f64,
}

/// Rounding slack: refills in many small steps must add up to whole tokens.
const EPSILON: f64 = 1e-9;

/// A token bucket on the caller's clock.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    budget: Budget,
    tokens: f64,
    last_ms: u64,
}

impl TokenBucket {
    pub fn new(budget: Budget, now_ms: u64) -> Self {
        Self {
            budget,
            tokens: f64::from(budget.burst),
            last_ms: now_ms,
        }
    }

    /// Tokens left and when they were counted: what a restarted decider carries over.
    pub fn level(&self) -> (f64, u64) {
        (self.tokens, self.last_ms)
    }

    /// Carries over a level read by [`TokenBucket::level`], within this budget's burst.
    pub fn set_level(&mut self, tokens: f64, last_ms: u64) {
        self.tokens = tokens.clamp(0.0, f64::from(self.budget.burst));
        self.last_ms = last_ms;
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms) as f64;
        self.tokens = (self.tokens + elapsed * self.budget.per_minute / 60_000.0)
            .min(f64::from(self.budget.burst));
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Whether a token is there now (without taking it).
    pub fn available(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.tokens >= 1.0 - EPSILON
    }

    pub fn take(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

/// Key of the kill switch in the control bucket: `on` stops every action.
pub use immune_nats::control::KILL_SWITCH as KILL_SWITCH_KEY;
/// Prefix of a maintenance window key: `maintenance.<service>` = `<from_ms>..<until_ms>`.
pub use immune_nats::control::MAINTENANCE_PREFIX;
use immune_nats::control::{maintenance_service, OFF, ON};

/// The run-time switches, changed while the decider runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Controls {
    pub kill_switch: bool,
    pub maintenance: BTreeMap<ServiceName, (u64, u64)>,
}

impl Controls {
    /// Applies one entry of the control bucket (`None`: deleted). Returns what changed, or
    /// why the entry was refused (the previous setting stays).
    pub fn apply(&mut self, key: &str, value: Option<&str>) -> Result<String, String> {
        if key == KILL_SWITCH_KEY {
            self.kill_switch = match value.map(str::trim) {
                None | Some(OFF) => false,
                Some(ON) => true,
                Some(v) => return Err(format!("{key}={v:?}: expected on or off")),
            };
            return Ok(format!(
                "kill switch {}",
                if self.kill_switch { "on" } else { "off" }
            ));
        }
        let Some(service) = maintenance_service(key) else {
            return Err(format!(
                "{key}: unknown control (expected {KILL_SWITCH_KEY} or {MAINTENANCE_PREFIX}<service>)"
            ));
        };
        let service = ServiceName::new(service).map_err(|e| format!("{key}: {e}"))?;
        let Some(value) = value else {
            self.maintenance.remove(&service);
            return Ok(format!("maintenance window of {service} removed"));
        };
        let window = value
            .trim()
            .split_once("..")
            .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
            .filter(|(a, b)| a < b)
            .ok_or_else(|| {
                format!("{key}={value:?}: expected <from_ms>..<until_ms> in Unix ms, from < until")
            })?;
        self.maintenance.insert(service.clone(), window);
        Ok(format!(
            "maintenance window of {service}: {}..{}",
            window.0, window.1
        ))
    }

    /// The end of the maintenance window `service` is in at `now_ms`, if any.
    pub fn in_maintenance(&self, service: &ServiceName, now_ms: u64) -> Option<u64> {
        self.maintenance
            .get(service)
            .filter(|(from, until)| (*from..*until).contains(&now_ms))
            .map(|(_, until)| *until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_bucket_allows_a_burst_then_refills_at_its_rate() {
        let mut b = TokenBucket::new(
            Budget {
                burst: 2,
                per_minute: 6.0,
            },
            0,
        );
        assert!(b.take(0) && b.take(0));
        assert!(!b.take(0), "burst spent");
        assert!(!b.take(9_999), "one token per 10 s");
        assert!(b.take(10_000));
        assert!(b.available(1_000_000) && b.take(1_000_000) && b.take(1_000_000));
        assert!(!b.take(1_000_000), "never more than the burst");
    }

    #[test]
    fn controls_read_the_kill_switch_and_maintenance_windows() {
        let mut c = Controls::default();
        c.apply(KILL_SWITCH_KEY, Some("on")).expect("as set up");
        assert!(c.kill_switch);
        c.apply(KILL_SWITCH_KEY, None).expect("as set up");
        assert!(!c.kill_switch);
        let err = c
            .apply(KILL_SWITCH_KEY, Some("maybe"))
            .expect_err("refused");
        assert!(err.contains("on or off"), "{err}");

        c.apply("maintenance.orders", Some("100..200"))
            .expect("as set up");
        let orders = ServiceName::new("orders").expect("as set up");
        assert_eq!(c.in_maintenance(&orders, 150), Some(200));
        assert_eq!(c.in_maintenance(&orders, 200), None);
        assert!(c.apply("maintenance.orders", Some("200..100")).is_err());
        assert!(c.apply("maintenance.Bad Name", Some("1..2")).is_err());
        assert!(c.apply("something", Some("1")).is_err());
        c.apply("maintenance.orders", None).expect("as set up");
        assert_eq!(c.in_maintenance(&orders, 150), None);
    }
}
