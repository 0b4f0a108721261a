//! Service roll-ups: the replicas of one logical service summed into one snapshot per
//! interval, beside the per-instance snapshots.
//!
//! Rates, in-flight requests, CPU, memory and restarts add up; the error ratio is weighted by
//! each replica's traffic; latency quantiles are the slowest replica's (quantiles cannot be
//! merged without the buckets, and the worst replica is what an operator needs to see);
//! `health_ok` and `scrape_ok` become the share of replicas that passed.

use std::collections::{BTreeMap, HashMap};

use immune_nats::{
    feature, ContainerState, MetricSnapshot, Replicas, ServiceName, SnapshotScope, SERVICE_INSTANCE,
};

/// The latest snapshot of every instance, grouped by service.
#[derive(Debug, Default)]
pub struct Rollups {
    latest: HashMap<ServiceName, BTreeMap<String, MetricSnapshot>>,
}

const SUMMED: [&str; 6] = [
    feature::REQUEST_RATE,
    feature::REJECTED_RATE,
    feature::IN_FLIGHT,
    feature::CPU_CORES,
    feature::MEMORY_BYTES,
    feature::RESTARTS,
];
const WORST: [&str; 5] = [
    feature::LATENCY_P50_MS,
    feature::LATENCY_P95_MS,
    feature::LATENCY_P99_MS,
    feature::PROBE_LATENCY_MS,
    feature::MEMORY_RATIO,
];
const SHARE: [&str; 2] = [feature::HEALTH_OK, feature::SCRAPE_OK];

impl Rollups {
    /// Remembers an instance snapshot (the newest per instance wins).
    pub fn record(&mut self, snapshot: MetricSnapshot) {
        self.latest
            .entry(snapshot.service.clone())
            .or_default()
            .insert(snapshot.instance.clone(), snapshot);
    }

    /// One roll-up per service from the instances seen since `since_ms`; instances not seen
    /// since then are forgotten (they were removed or scaled in).
    pub fn roll_up(&mut self, now_ms: u64, since_ms: u64, interval_ms: u64) -> Vec<MetricSnapshot> {
        let mut out = Vec::with_capacity(self.latest.len());
        self.latest.retain(|service, instances| {
            instances.retain(|_, s| s.observed_ms >= since_ms);
            if instances.is_empty() {
                return false;
            }
            out.push(roll_up(service, instances.values(), now_ms, interval_ms));
            true
        });
        out
    }
}

/// The roll-up of the given instance snapshots of one service.
pub fn roll_up<'a>(
    service: &ServiceName,
    instances: impl Iterator<Item = &'a MetricSnapshot>,
    now_ms: u64,
    interval_ms: u64,
) -> MetricSnapshot {
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    let mut worst: BTreeMap<&str, f64> = BTreeMap::new();
    let mut shares: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    let mut replicas = Replicas {
        total: 0,
        running: 0,
        healthy: 0,
    };
    let mut errors = 0.0;
    let mut depends_on = Vec::new();
    for s in instances {
        for d in &s.depends_on {
            if !depends_on.contains(d) {
                depends_on.push(d.clone());
            }
        }
        replicas.total += 1;
        if s.state == ContainerState::Running {
            replicas.running += 1;
        }
        if s.health.as_ref().is_some_and(|h| h.ok) {
            replicas.healthy += 1;
        }
        let f = &s.features;
        if let (Some(rate), Some(ratio)) =
            (f.get(feature::REQUEST_RATE), f.get(feature::ERROR_RATIO))
        {
            errors += rate * ratio;
        }
        for name in SUMMED {
            if let Some(v) = f.get(name) {
                *sums.entry(name).or_default() += v;
            }
        }
        for name in WORST {
            if let Some(&v) = f.get(name) {
                let w = worst.entry(name).or_insert(v);
                *w = w.max(v);
            }
        }
        for name in SHARE {
            if let Some(v) = f.get(name) {
                let (passed, seen) = shares.entry(name).or_default();
                *passed += v;
                *seen += 1.0;
            }
        }
    }
    let mut features: BTreeMap<String, f64> = sums
        .into_iter()
        .chain(worst)
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for (name, (passed, seen)) in shares {
        features.insert(name.to_string(), passed / seen);
    }
    if let Some(&rate) = features.get(feature::REQUEST_RATE) {
        let ratio = if rate > 0.0 { errors / rate } else { 0.0 };
        features.insert(feature::ERROR_RATIO.to_string(), ratio.clamp(0.0, 1.0));
    }
    MetricSnapshot {
        service: service.clone(),
        instance: SERVICE_INSTANCE.to_string(),
        container_id: String::new(),
        observed_ms: now_ms,
        interval_ms,
        state: if replicas.running > 0 {
            ContainerState::Running
        } else {
            ContainerState::Exited
        },
        health: None,
        scrape: None,
        features,
        scope: SnapshotScope::Service,
        replicas: Some(replicas),
        depends_on,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::{samples, HealthProbe};

    fn replica(
        instance: &str,
        at: u64,
        rate: f64,
        ratio: f64,
        p99: f64,
        healthy: bool,
    ) -> MetricSnapshot {
        let mut s = samples::metric_snapshot();
        s.instance = instance.into();
        s.observed_ms = at;
        s.features = [
            (feature::REQUEST_RATE, rate),
            (feature::ERROR_RATIO, ratio),
            (feature::LATENCY_P99_MS, p99),
            (feature::HEALTH_OK, if healthy { 1.0 } else { 0.0 }),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        s.health = Some(HealthProbe {
            ok: healthy,
            status: None,
            latency_ms: 1.0,
            error: None,
        });
        s
    }

    #[test]
    fn replicas_add_up_under_their_service() {
        let mut rollups = Rollups::default();
        rollups.record(replica("orders-1", 1000, 100.0, 0.0, 20.0, true));
        rollups.record(replica("orders-2", 1000, 100.0, 0.5, 300.0, false));
        let out = rollups.roll_up(1500, 500, 1000);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(
            (r.scope, r.instance.as_str()),
            (SnapshotScope::Service, SERVICE_INSTANCE)
        );
        assert_eq!(
            r.replicas,
            Some(Replicas {
                total: 2,
                running: 2,
                healthy: 1
            })
        );
        assert_eq!(r.features[feature::REQUEST_RATE], 200.0);
        assert_eq!(r.features[feature::ERROR_RATIO], 0.25);
        assert_eq!(r.features[feature::LATENCY_P99_MS], 300.0);
        assert_eq!(r.features[feature::HEALTH_OK], 0.5);
    }

    #[test]
    fn a_replica_not_seen_lately_drops_out() {
        let mut rollups = Rollups::default();
        rollups.record(replica("orders-1", 1000, 10.0, 0.0, 20.0, true));
        rollups.record(replica("orders-2", 3000, 10.0, 0.0, 20.0, true));
        let out = rollups.roll_up(3500, 2500, 1000);
        assert_eq!(out[0].replicas.map(|r| r.total), Some(1));
        assert!(
            rollups.roll_up(9000, 8000, 1000).is_empty(),
            "everything gone"
        );
    }
}
