//! Features of one scrape: request rate, error ratio, latency quantiles from histogram
//! buckets, in-flight requests, rejected (malicious) requests. Rates are taken over the
//! interval since the previous scrape of the same instance; a counter that went down (the
//! process restarted) counts from zero, so a restart never yields a negative or huge rate.

use std::collections::BTreeMap;

use immune_nats::feature;

use crate::exposition::{self, ExpositionError};

/// Which series carry the signals; suffixes, so `http_requests_total` and
/// `demo_http_requests_total` both match.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SeriesNames {
    pub requests_suffix: String,
    pub status_labels: Vec<String>,
    pub latency_histogram_suffix: String,
    pub in_flight_suffix: String,
    /// Requests refused as malicious (injection, traversal, oversized); feeds `rejected_rate`.
    pub rejected_suffix: String,
}

impl Default for SeriesNames {
    fn default() -> Self {
        Self {
            requests_suffix: "http_requests_total".into(),
            status_labels: vec!["status".into(), "code".into()],
            latency_histogram_suffix: "http_request_duration_seconds".into(),
            in_flight_suffix: "in_flight_requests".into(),
            rejected_suffix: "rejected_requests_total".into(),
        }
    }
}

/// The cumulative counters of one scrape, kept to compute the next interval's rates.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    pub at_ms: u64,
    pub requests: f64,
    pub errors: f64,
    pub rejected: f64,
    /// (upper bound, cumulative count), sorted by bound.
    pub latency_buckets: Vec<(f64, f64)>,
}

/// What one exposition says: the cumulative counters and the in-flight gauge.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    pub counters: Counters,
    pub in_flight: Option<f64>,
    /// Samples in the exposition.
    pub samples: usize,
}

/// Reads the counters and gauges of one exposition; a malformed exposition is refused whole.
pub fn read(text: &str, names: &SeriesNames, at_ms: u64) -> Result<Reading, ExpositionError> {
    let mut counters = Counters {
        at_ms,
        ..Default::default()
    };
    let mut in_flight = None;
    // Few distinct bounds (about a dozen): a vector beats a map.
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    let bucket_suffix = format!("{}_bucket", names.latency_histogram_suffix);
    let samples = exposition::read(text, |sample| {
        let name = sample.name;
        let v = sample.value;
        if name.ends_with(names.requests_suffix.as_str()) {
            counters.requests += v;
            let server_error = names
                .status_labels
                .iter()
                .find_map(|l| sample.label(l))
                .is_some_and(|s| s.starts_with('5'));
            if server_error {
                counters.errors += v;
            }
        } else if name.ends_with(bucket_suffix.as_str()) {
            // Summed across label sets (methods, routes) into one distribution.
            let Some(bound) = sample.label("le").and_then(|le| parse_bound(le.as_ref())) else {
                return;
            };
            match buckets.iter_mut().find(|(b, _)| *b == bound) {
                Some((_, count)) => *count += v,
                None => buckets.push((bound, v)),
            }
        } else if name.ends_with(names.in_flight_suffix.as_str()) {
            *in_flight.get_or_insert(0.0) += v;
        } else if name.ends_with(names.rejected_suffix.as_str()) {
            counters.rejected += v;
        }
    })?;
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    counters.latency_buckets = buckets;
    Ok(Reading {
        counters,
        in_flight,
        samples,
    })
}

fn parse_bound(le: &str) -> Option<f64> {
    match le {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

/// The increase of a counter from `prev` to `cur`; a decrease means a reset.
fn increase(prev: f64, cur: f64) -> f64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// The `q` quantile of a cumulative histogram, interpolating linearly inside the bucket
/// (as Prometheus' `histogram_quantile` does). `None` without observations.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower_bound = 0.0;
    let mut lower_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(lower_bound);
            }
            let in_bucket = count - lower_count;
            let fraction = if in_bucket > 0.0 {
                (rank - lower_count) / in_bucket
            } else {
                0.0
            };
            return Some(lower_bound + (bound - lower_bound) * fraction);
        }
        lower_bound = bound;
        lower_count = count;
    }
    Some(lower_bound)
}

/// The features of the interval from `prev` to `cur`.
pub fn interval_features(
    prev: Option<&Counters>,
    cur: &Counters,
    in_flight: Option<f64>,
) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    if let Some(v) = in_flight {
        out.insert(feature::IN_FLIGHT.to_string(), v);
    }
    let Some(prev) = prev else {
        return out;
    };
    let seconds = cur.at_ms.saturating_sub(prev.at_ms) as f64 / 1000.0;
    if seconds <= 0.0 {
        return out;
    }
    let reset = cur.requests < prev.requests;
    let requests = increase(prev.requests, cur.requests);
    let errors = if reset {
        cur.errors
    } else {
        increase(prev.errors, cur.errors)
    };
    out.insert(feature::REQUEST_RATE.to_string(), requests / seconds);
    let ratio = if requests > 0.0 {
        (errors / requests).clamp(0.0, 1.0)
    } else {
        0.0
    };
    out.insert(feature::ERROR_RATIO.to_string(), ratio);
    let rejected = if reset {
        cur.rejected
    } else {
        increase(prev.rejected, cur.rejected)
    };
    out.insert(feature::REJECTED_RATE.to_string(), rejected / seconds);
    let same_buckets = prev.latency_buckets.len() == cur.latency_buckets.len()
        && prev
            .latency_buckets
            .iter()
            .zip(&cur.latency_buckets)
            .all(|(a, b)| a.0 == b.0);
    let delta: Vec<(f64, f64)> = if same_buckets && !reset {
        cur.latency_buckets
            .iter()
            .zip(&prev.latency_buckets)
            .map(|(c, p)| (c.0, increase(p.1, c.1)))
            .collect()
    } else {
        cur.latency_buckets.clone()
    };
    for (name, q) in [
        (feature::LATENCY_P50_MS, 0.5),
        (feature::LATENCY_P95_MS, 0.95),
        (feature::LATENCY_P99_MS, 0.99),
    ] {
        if let Some(v) = quantile(&delta, q) {
            out.insert(name.to_string(), v * 1000.0);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Reading {
        read(text, &SeriesNames::default(), 1000).expect("well-formed")
    }

    const EXPOSITION: &str = "# TYPE http_requests_total counter
http_requests_total{status=\"200\"} 90
http_requests_total{status=\"503\"} 10
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_bucket{le=\"0.01\"} 50
http_request_duration_seconds_bucket{le=\"0.1\"} 90
http_request_duration_seconds_bucket{le=\"1\"} 100
http_request_duration_seconds_bucket{le=\"+Inf\"} 100
http_request_duration_seconds_sum 5
http_request_duration_seconds_count 100
# TYPE http_in_flight_requests gauge
http_in_flight_requests 3
";

    #[test]
    fn reads_requests_errors_histogram_and_gauge() {
        let Reading {
            counters: c,
            in_flight,
            samples,
        } = parse(EXPOSITION);
        assert_eq!(samples, 9);
        assert_eq!((c.requests, c.errors), (100.0, 10.0));
        assert_eq!(in_flight, Some(3.0));
        assert_eq!(c.latency_buckets.len(), 4);
    }

    #[test]
    fn only_screened_attacks_count_as_rejected_not_load_shed_by_a_repair() {
        let text = "demo_rejected_requests_total{reason=\"sql_injection\"} 4\n\
                    demo_shed_requests_total{reason=\"throttled\"} 50\n";
        assert_eq!(parse(text).counters.rejected, 4.0);
    }

    #[test]
    fn rates_and_quantiles_over_the_interval() {
        let prev = Counters {
            at_ms: 0,
            requests: 0.0,
            errors: 0.0,
            rejected: 0.0,
            latency_buckets: vec![(0.01, 0.0), (0.1, 0.0), (1.0, 0.0), (f64::INFINITY, 0.0)],
        };
        let mut cur = parse(EXPOSITION).counters;
        cur.at_ms = 2000;
        let f = interval_features(Some(&prev), &cur, None);
        assert_eq!(f[feature::REQUEST_RATE], 50.0);
        assert!((f[feature::ERROR_RATIO] - 0.1).abs() < 1e-9);
        // p50 is the top of the first bucket; p95 halfway into (0.1, 1]
        assert!((f[feature::LATENCY_P50_MS] - 10.0).abs() < 1e-6, "{f:?}");
        assert!((f[feature::LATENCY_P95_MS] - 550.0).abs() < 1e-6, "{f:?}");
    }

    #[test]
    fn a_counter_reset_is_not_a_negative_or_huge_rate() {
        let before = Counters {
            at_ms: 0,
            requests: 1_000_000.0,
            errors: 10.0,
            rejected: 0.0,
            latency_buckets: vec![(0.1, 1_000_000.0), (f64::INFINITY, 1_000_000.0)],
        };
        let after = Counters {
            at_ms: 1000,
            requests: 5.0,
            errors: 1.0,
            rejected: 0.0,
            latency_buckets: vec![(0.1, 5.0), (f64::INFINITY, 5.0)],
        };
        let f = interval_features(Some(&before), &after, None);
        assert_eq!(f[feature::REQUEST_RATE], 5.0);
        assert!((f[feature::ERROR_RATIO] - 0.2).abs() < 1e-9);
        assert!(f[feature::LATENCY_P99_MS] <= 100.0);
    }

    #[test]
    fn no_traffic_means_zero_errors_and_no_latency() {
        let c = Counters {
            at_ms: 1000,
            ..Default::default()
        };
        let prev = Counters::default();
        let f = interval_features(Some(&prev), &c, None);
        assert_eq!(f[feature::REQUEST_RATE], 0.0);
        assert_eq!(f[feature::ERROR_RATIO], 0.0);
        assert!(!f.contains_key(feature::LATENCY_P50_MS));
    }
}
