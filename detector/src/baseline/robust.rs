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
        | feature::PROBE_LATENCY_MS => 1.0_f64.max(0.05 * level),
        feature::ERROR_RATIO | feature::MEMORY_RATIO => 0.01,
        feature::REQUEST_RATE | feature::REJECTED_RATE | feature::IN_FLIGHT => {
            0.5_f64.max(0.05 * level)
        }
        _ => 0.0,
    }
}
