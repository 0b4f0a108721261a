//! Scoring throughput and refit time of the learned detector, printed as figures.
//!
//! `cargo bench -p immune-detector --bench scoring`
//!
//! - scoring: MetricSnapshot envelopes encoded once, then, on one thread (one core): decode
//!   the MessagePack envelope, pick the model's features, score (SPE + T²). Vectors/s per core,
//!   with the full decode (every field built) and with the snapshot read in place
//!   ([`SnapshotView`]: walked byte by byte, strings borrowed). The running stage takes the
//!   full decode, since its rules read every field; its cost per message is JetStream's
//!   acknowledgement round trip.
//! - refit: a PCA fit with calibration on a 1-hour baseline at a 1 s interval (3600 vectors).

use std::hint::black_box;
use std::time::{Duration, Instant};

use immune_detector::baseline::{LearnedConfig, Model, Scratch};
use immune_nats::{decode, encode, feature, samples, Envelope, Event, SnapshotView, Stage};

use immune_testkit::Noise;

const FEATURES: [&str; 12] = [
    feature::REQUEST_RATE,
    feature::ERROR_RATIO,
    feature::LATENCY_P50_MS,
    feature::LATENCY_P95_MS,
    feature::LATENCY_P99_MS,
    feature::IN_FLIGHT,
    feature::CPU_CORES,
    feature::MEMORY_BYTES,
    feature::PROBE_LATENCY_MS,
    feature::REJECTED_RATE,
    feature::HEALTH_OK,
    feature::SCRAPE_OK,
];

fn vector(noise: &mut Noise) -> Vec<f64> {
    let load = 50.0 + 10.0 * noise.centred();
    vec![
        load,
        (0.002 * noise.centred()).abs(),
        5.0 + 0.05 * load + noise.centred(),
        12.0 + 0.1 * load + noise.centred(),
        20.0 + 0.2 * load + 2.0 * noise.centred(),
        load / 20.0 + noise.centred(),
        0.1 + 0.004 * load + 0.01 * noise.centred(),
        64e6 + 1e5 * noise.centred(),
        1.0 + 0.2 * noise.centred(),
        0.0,
        1.0,
        1.0,
    ]
}

fn main() {
    let config = LearnedConfig::default();
    let mut noise = Noise::seeded(42);
    let names: Vec<String> = FEATURES[..10].iter().map(|s| s.to_string()).collect();

    // Refit: 3600 vectors, the default config (variance kept 0.95, at most 8 components).
    let rows: Vec<Vec<f64>> = (0..3600)
        .map(|_| vector(&mut noise)[..10].to_vec())
        .collect();
    let refs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
    let mut fits = Vec::new();
    let mut model = None;
    for _ in 0..30 {
        let started = Instant::now();
        model = Some(Model::fit(names.clone(), &refs, &config).expect("fits"));
        fits.push(started.elapsed());
    }
    let model = model.expect("fitted");
    fits.sort();
    println!(
        "refit: 3600 vectors x {} features -> {} components: median {:.2} ms, min {:.2} ms, max {:.2} ms (30 fits, includes calibration)",
        names.len(),
        model.retained(),
        ms(fits[fits.len() / 2]),
        ms(fits[0]),
        ms(fits[fits.len() - 1])
    );

    // Encoded snapshots, as they arrive from the bus.
    let messages: Vec<Vec<u8>> = (0..4096)
        .map(|i| {
            let mut s = samples::metric_snapshot();
            s.observed_ms += i;
            s.features = FEATURES
                .iter()
                .zip(vector(&mut noise))
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let envelope: Envelope = samples::envelope(Stage::Collector, Event::MetricSnapshot(s));
            encode(&envelope).expect("encodes")
        })
        .collect();
    println!("message size: {} bytes", messages[0].len());
    let rounds = 100;
    let total = (messages.len() * rounds) as f64;

    // Score only (vectors already decoded).
    let vectors: Vec<Vec<f64>> = (0..4096)
        .map(|_| vector(&mut noise)[..10].to_vec())
        .collect();
    let mut scratch = Scratch::default();
    let started = Instant::now();
    let mut over = 0usize;
    for _ in 0..rounds {
        for v in &vectors {
            over += usize::from(
                black_box(model.score(black_box(v), &mut scratch)).score > model.threshold,
            );
        }
    }
    let took = started.elapsed();
    println!(
        "score only: {:.2} M vectors/s per core ({:.0} ns each; {over} over threshold)",
        total / took.as_secs_f64() / 1e6,
        took.as_nanos() as f64 / total
    );

    // Decode + pick features + score: the detector's path for one message.
    let mut window = vec![0.0; names.len()];
    let started = Instant::now();
    for _ in 0..rounds {
        for m in &messages {
            let envelope = decode(black_box(m)).expect("decodes");
            if let Event::MetricSnapshot(s) = &envelope.body {
                for (slot, name) in window.iter_mut().zip(&names) {
                    *slot = s.features.get(name).copied().unwrap_or(f64::NAN);
                }
                black_box(model.score(&window, &mut scratch));
            }
        }
    }
    let took = started.elapsed();
    println!(
        "decode (full envelope) + score: {:.2} M vectors/s per core ({:.0} ns each)",
        total / took.as_secs_f64() / 1e6,
        took.as_nanos() as f64 / total
    );

    // The same, with the snapshot read in place.
    let started = Instant::now();
    for _ in 0..rounds {
        for m in &messages {
            let view = SnapshotView::decode(black_box(m))
                .expect("decodes")
                .expect("a snapshot");
            for (slot, name) in window.iter_mut().zip(&names) {
                *slot = view.features.get(name).unwrap_or(f64::NAN);
            }
            black_box(model.score(&window, &mut scratch));
        }
    }
    let took = started.elapsed();
    println!(
        "decode (in place) + score: {:.2} M vectors/s per core ({:.0} ns each)",
        total / took.as_secs_f64() / 1e6,
        took.as_nanos() as f64 / total
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
