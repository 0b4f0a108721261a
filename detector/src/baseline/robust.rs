//! Robust standardisation: the median and robust scale (1.4826 MAD, with floors) of a
//! baseline column, the operational floor below which a move of a collector feature does
//! not matter, and the quantile the threshold is taken from.

pub(super) fn median_of(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// The `q` quantile (linear interpolation) of `values`, which it sorts.
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (values.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

/// Median and robust scale of one column. The scale falls back to the mean absolute
/// deviation when most values are equal (MAD 0), and never goes below 1% of the level, so a
/// feature that is flat in the baseline (error ratio 0) does not turn every wiggle into an
/// anomaly, yet a real move still stands out.
pub(super) fn robust_stats(column: &mut [f64], name: &str) -> (f64, f64) {
    let median = median_of(column);
    let mean_abs = column.iter().map(|v| (v - median).abs()).sum::<f64>() / column.len() as f64;
    let mut dev: Vec<f64> = column.iter().map(|v| (v - median).abs()).collect();
    let mad = median_of(&mut dev);
    let floor = (0.01 * (1.0 + median.abs())).max(operational_floor(name, median));
    (median, (1.4826 * mad).max(1.2533 * mean_abs).max(floor))
}

/// The smallest move of a collector feature that matters to an operator, as a scale: a
/// flat baseline must not turn an irrelevant change into many robust deviations (a
/// restarted process holding 1 MB more memory, a millisecond of probe jitter on a busy
/// host), while a fault still stands out by far (a leak of MiB a second, a core burned, an
/// error ratio of 0.5, hundreds of milliseconds of latency). Other columns (the datasets'
/// `value`) keep the relative floor alone.
///
/// Latency quantiles come from histograms whose buckets grow about twofold (Prometheus's
/// defaults: 5, 10, 25, 50, 100 ms ...), so a few slower requests move a quantile by up to a
/// bucket: +70% live, p99 from 25 to 42 ms during a burst users did not feel. Their floor is
/// half their level (at least 5 ms), so 3 robust scales means latency 2.5 times its normal
/// (a 400 ms fault on a 25 ms service is 32 scales). The collector's `/health` probe takes
/// under a millisecond and a few more on a busy host (0.8 to 4.2 ms seen live, fault-free):
/// the same floor; a hung service is the rules' (failed probes), not a latency.
fn operational_floor(column: &str, median: f64) -> f64 {
    use immune_nats::feature;
    let base = column.split('@').next().unwrap_or(column);
    let level = median.abs();
    match base {
        feature::MEMORY_BYTES => (4.0 * 1024.0 * 1024.0_f64).max(0.05 * level),
        feature::CPU_CORES => 0.02,
        feature::LATENCY_P50_MS
        | feature::LATENCY_P95_MS
        | feature::LATENCY_P99_MS
        | feature::PROBE_LATENCY_MS => 5.0_f64.max(0.5 * level),
        feature::ERROR_RATIO | feature::MEMORY_RATIO => 0.01,
        feature::REQUEST_RATE | feature::REJECTED_RATE | feature::IN_FLIGHT => {
            0.5_f64.max(0.05 * level)
        }
        _ => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use immune_nats::feature;

    /// Seen live: a burst moved p99 from 25 to 42 ms (a bucket of the histogram); the
    /// injected 400 ms fault stands out by far.
    #[test]
    fn a_latency_quantile_moving_by_a_bucket_is_within_the_noise() {
        let mut p99: Vec<f64> = (0..300).map(|i| 24.5 + f64::from(i % 3) * 0.2).collect();
        let (median, scale) = robust_stats(&mut p99, feature::LATENCY_P99_MS);
        assert!(
            (42.5 - median) / scale < 3.0,
            "a bucket's move: {median} ± {scale}"
        );
        assert!((425.0 - median) / scale > 30.0, "a 400 ms fault");
        // the probe on a busy host, seen live fault-free: 0.84 then 4.2 ms
        let mut probe: Vec<f64> = vec![0.84; 300];
        let (median, scale) = robust_stats(&mut probe, feature::PROBE_LATENCY_MS);
        assert!(
            (4.2 - median) / scale < 1.0,
            "probe jitter: {median} ± {scale}"
        );
    }
}
