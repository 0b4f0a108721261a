//! Explanations: which metrics carry a vector's score ([`Model::explain`]), which way they
//! moved, and what kind of trouble that is ([`classify`]).

use immune_nats::{feature, Contribution, Direction, Signature};

use super::{Model, Scratch};

impl Model {
    /// Why `x` scored as it did: each base metric's share of the score (residual and T²
    /// parts, lags folded into their metric), its value, the baseline median, and which way
    /// it moved. Largest share first; shares sum to 1.
    pub fn explain(&self, x: &[f64]) -> Vec<Contribution> {
        let mut scratch = Scratch::default();
        self.score(x, &mut scratch);
        let d = self.dims();
        let k = self.retained();
        let mut parts = vec![0.0; d];
        for (j, part) in parts.iter_mut().enumerate() {
            let mut reconstructed = 0.0;
            let mut t2_part = 0.0;
            for i in 0..k {
                let p = self.components[i * d + j];
                reconstructed += p * scratch.t[i];
                t2_part += scratch.t[i] / self.variances[i] * p * scratch.z[j];
            }
            let r = scratch.z[j] - reconstructed;
            *part = r * r / self.spe_unit + t2_part.max(0.0) / self.t2_unit;
        }
        let total: f64 = parts.iter().sum::<f64>().max(1e-12);
        let mut by_metric: Vec<Contribution> = Vec::new();
        for (j, column) in self.columns.iter().enumerate() {
            let base = column.split('@').next().unwrap_or(column);
            let share = parts[j] / total;
            match by_metric.iter_mut().find(|c| c.metric == base) {
                Some(c) => c.share += share,
                None => {
                    let value = if x[j].is_finite() {
                        x[j]
                    } else {
                        self.median[j]
                    };
                    by_metric.push(Contribution {
                        metric: base.to_string(),
                        value,
                        expected: self.median[j],
                        share,
                        direction: if value >= self.median[j] {
                            Direction::Up
                        } else {
                            Direction::Down
                        },
                    })
                }
            }
        }
        by_metric.sort_by(|a, b| b.share.total_cmp(&a.share));
        by_metric
    }

    /// How many robust scales `value` of column `j` is from its median.
    fn deviation(&self, contribution: &Contribution) -> f64 {
        self.columns
            .iter()
            .position(|c| *c == contribution.metric)
            .map_or(0.0, |j| {
                (contribution.value - self.median[j]) / self.scale[j]
            })
    }
}

/// In flight this many times what the request rate explains (its normal level scaled by
/// the rate's rise, at least one request) is requests piling up.
const PILING_FACTOR: f64 = 2.0;

/// Names the kind of trouble from the explanation. A metric counts when it carries at least
/// 10% of the score and moved at least 3 robust scales; requests piling up in flight count
/// as latency; a request rate 3 robust scales above normal with latency or errors up is an
/// overload (the load causes the rest); otherwise
/// errors outrank latency (errors usually bring latency with them), latency outranks
/// resources, traffic comes last.
pub fn classify(model: &Model, contributions: &[Contribution]) -> Signature {
    let moved = |name: &str, direction: Direction| {
        contributions.iter().any(|c| {
            c.share >= 0.10
                && c.direction == direction
                && c.metric == name
                && model.deviation(c).abs() >= 3.0
        })
    };
    let latency = [
        feature::LATENCY_P50_MS,
        feature::LATENCY_P95_MS,
        feature::LATENCY_P99_MS,
        feature::PROBE_LATENCY_MS,
    ];
    // More requests than usual, well beyond the noise, whatever their share of the score
    // (latency or errors, which they cause, usually carry most of it).
    let busier = contributions.iter().any(|c| {
        c.metric == feature::REQUEST_RATE
            && c.direction == Direction::Up
            && model.deviation(c) >= 3.0
    });
    // Requests piling up: more in flight than the request rate explains (Little's law: in
    // flight = rate x time in the service, so each request takes longer), latency that the
    // quantiles of the requests already finished do not show yet.
    let rate_rise = contributions
        .iter()
        .find(|c| c.metric == feature::REQUEST_RATE)
        .map_or(1.0, |r| r.value / r.expected.max(1e-9))
        .max(1.0);
    let piling = moved(feature::IN_FLIGHT, Direction::Up)
        && contributions.iter().any(|c| {
            c.metric == feature::IN_FLIGHT
                && c.value > PILING_FACTOR * rate_rise * c.expected.max(1.0)
        });
    let slower = piling || latency.iter().any(|m| moved(m, Direction::Up));
    let suffering = moved(feature::ERROR_RATIO, Direction::Up) || slower;
    if busier && suffering {
        Signature::Overload
    } else if moved(feature::ERROR_RATIO, Direction::Up) {
        Signature::ErrorsUp
    } else if moved(feature::REJECTED_RATE, Direction::Up) {
        Signature::AttackBurst
    } else if slower {
        Signature::LatencyUp
    } else if moved(feature::CPU_CORES, Direction::Up)
        || moved(feature::MEMORY_BYTES, Direction::Up)
    {
        Signature::ResourceExhaustion
    } else if moved(feature::REQUEST_RATE, Direction::Down) {
        Signature::TrafficDrop
    } else {
        Signature::Unknown
    }
}

/// Only the load moved: more users (a burst) or fewer (a quiet night), all served as usual.
/// Every metric that carries the score (10% of it or more) follows the load (request rate,
/// in-flight, CPU) and moved the same way as the request rate, which is among them; latency,
/// errors, refusals or memory carrying a share make it something users feel (an overload,
/// when it is the load).
pub fn only_the_load_moved(contributions: &[Contribution]) -> bool {
    let follows_load = [
        feature::REQUEST_RATE,
        feature::IN_FLIGHT,
        feature::CPU_CORES,
    ];
    let carrying = || contributions.iter().filter(|c| c.share >= 0.10);
    let Some(way) = carrying()
        .find(|c| c.metric == feature::REQUEST_RATE)
        .map(|c| c.direction)
    else {
        return false;
    };
    carrying().all(|c| c.direction == way && follows_load.contains(&c.metric.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::fixtures::{fitted, normal, Noise};
    use crate::baseline::LearnedConfig;

    #[test]
    fn the_explanation_names_the_metric_that_moved_and_its_direction() {
        let config = LearnedConfig::default();
        let (model, mut noise) = fitted(&config);
        let mut slow = normal(&mut noise);
        slow[3] = 400.0;
        let why = model.explain(&slow);
        assert_eq!(why[0].metric, feature::LATENCY_P99_MS);
        assert_eq!(why[0].direction, Direction::Up);
        assert!(why[0].share > 0.5, "{why:?}");
        assert!((why.iter().map(|c| c.share).sum::<f64>() - 1.0).abs() < 1e-9);
        assert_eq!(classify(&model, &why), Signature::LatencyUp);

        let mut quiet = normal(&mut noise);
        quiet[0] = 2.0; // traffic fell away, latency follows it down a little
        quiet[2] = 5.1;
        quiet[3] = 20.4;
        let why = model.explain(&quiet);
        assert_eq!(why[0].metric, feature::REQUEST_RATE);
        assert_eq!(why[0].direction, Direction::Down);
        assert_eq!(classify(&model, &why), Signature::TrafficDrop);
    }

    #[test]
    fn signatures_follow_the_metrics_that_moved() {
        let config = LearnedConfig::default();
        let (model, mut noise) = fitted(&config);
        let mut failing = normal(&mut noise);
        failing[1] = 0.4; // errors up, and latency with them
        failing[3] *= 3.0;
        assert_eq!(
            classify(&model, &model.explain(&failing)),
            Signature::ErrorsUp
        );
        let calm = normal(&mut noise);
        assert_eq!(classify(&model, &model.explain(&calm)), Signature::Unknown);
    }

    #[test]
    fn more_load_than_capacity_is_an_overload_not_a_latency_fault() {
        let config = LearnedConfig::default();
        let (model, mut noise) = fitted(&config);
        let mut slow = normal(&mut noise);
        slow[3] *= 10.0; // the same load, ten times slower: the service itself
        assert_eq!(
            classify(&model, &model.explain(&slow)),
            Signature::LatencyUp
        );
        let mut swamped = normal(&mut noise);
        swamped[0] *= 3.0; // three times the load, and latency through the roof
        swamped[3] *= 10.0;
        assert_eq!(
            classify(&model, &model.explain(&swamped)),
            Signature::Overload
        );
        let mut busy = normal(&mut noise);
        busy[0] *= 3.0; // more load, served as fast as ever: no trouble of its own
        assert_ne!(classify(&model, &model.explain(&busy)), Signature::Overload);
    }

    #[test]
    fn requests_piling_up_in_flight_are_latency_before_the_quantiles_show_it() {
        let mut noise = Noise::seeded(11);
        // rate, p50 latency (ms), in flight = rate x latency
        let row = |noise: &mut Noise| {
            let rate = 20.0 + 2.0 * noise.centred();
            let p50 = 17.0 + noise.centred();
            vec![
                rate,
                p50,
                (rate * p50 / 1000.0 + 0.3 * noise.centred()).max(0.0),
            ]
        };
        let rows: Vec<Vec<f64>> = (0..600).map(|_| row(&mut noise)).collect();
        let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
        let columns = [
            feature::REQUEST_RATE,
            feature::LATENCY_P50_MS,
            feature::IN_FLIGHT,
        ]
        .map(String::from)
        .to_vec();
        let model = Model::fit(columns, &refs, &LearnedConfig::default()).expect("fits");
        let signature = |x: &[f64]| classify(&model, &model.explain(x));
        // the same load, 22 in flight where 1 is usual, the finished ones still fast
        assert_eq!(signature(&[21.0, 17.5, 22.0]), Signature::LatencyUp);
        // twice the load and 22 in flight: more than the load explains, an overload
        assert_eq!(signature(&[40.0, 17.5, 22.0]), Signature::Overload);
        // twice the load, twice in flight: served as usual, no latency of its own
        let busy = signature(&[40.0, 17.5, 0.7]);
        assert!(
            ![Signature::LatencyUp, Signature::Overload].contains(&busy),
            "{busy}"
        );
    }

    #[test]
    fn the_load_alone_is_told_from_what_users_feel() {
        let c = |metric: &str, share: f64, direction: Direction| Contribution {
            metric: metric.into(),
            value: 0.0,
            expected: 0.0,
            share,
            direction,
        };
        // seen live on a burst of the demo's load profile: served as usual
        let burst = [
            c(feature::REQUEST_RATE, 0.74, Direction::Up),
            c(feature::CPU_CORES, 0.10, Direction::Up),
            c(feature::IN_FLIGHT, 0.09, Direction::Up),
            c(feature::LATENCY_P99_MS, 0.05, Direction::Up),
        ];
        assert!(only_the_load_moved(&burst));
        let quiet = [
            c(feature::REQUEST_RATE, 0.8, Direction::Down),
            c(feature::CPU_CORES, 0.2, Direction::Down),
        ];
        assert!(only_the_load_moved(&quiet));
        let overload = [
            c(feature::REQUEST_RATE, 0.6, Direction::Up),
            c(feature::LATENCY_P99_MS, 0.3, Direction::Up),
        ];
        assert!(!only_the_load_moved(&overload));
        let burning = [
            c(feature::CPU_CORES, 0.9, Direction::Up),
            c(feature::REQUEST_RATE, 0.1, Direction::Down),
        ];
        assert!(!only_the_load_moved(&burning), "CPU up while the load fell");
        let leak = [c(feature::MEMORY_BYTES, 1.0, Direction::Up)];
        assert!(!only_the_load_moved(&leak));
    }
}
