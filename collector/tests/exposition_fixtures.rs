//! Real-world expositions (the Go client with node_exporter series, the Python client, our
//! demo's Rust client) read by the collector's strict reader: the same samples as
//! `prometheus-parse` reads, the features the collector needs, and every truncation refused.

use immune_collector::exposition::{self, ErrorKind};
use immune_collector::features::{self, SeriesNames};
use prometheus_parse::{Scrape, Value};

const FIXTURES: [(&str, &str); 3] = [
    ("go_client", include_str!("fixtures/go_client.prom")),
    ("python_client", include_str!("fixtures/python_client.prom")),
    ("immune_demo", include_str!("fixtures/immune_demo.prom")),
];

/// (name, value) of every sample as our reader sees it, sorted.
fn ours(text: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    exposition::read(text, |s| out.push((s.name.to_string(), s.value.to_bits())))
        .expect("a real-world exposition is valid");
    out.sort();
    out
}

/// The same from prometheus-parse, whose histograms and summaries are flattened back into
/// one sample per bucket or quantile line.
fn theirs(text: &str) -> Vec<(String, u64)> {
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let mut out = Vec::new();
    for s in scrape.samples {
        match s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => {
                out.push((s.metric, v.to_bits()))
            }
            Value::Histogram(buckets) => out.extend(
                buckets
                    .iter()
                    .map(|b| (format!("{}_bucket", s.metric), b.count.to_bits())),
            ),
            Value::Summary(quantiles) => out.extend(
                quantiles
                    .iter()
                    .map(|q| (s.metric.clone(), q.count.to_bits())),
            ),
        }
    }
    out.sort();
    out
}

#[test]
fn reads_the_same_samples_as_prometheus_parse() {
    for (name, text) in FIXTURES {
        let ours = ours(text);
        assert!(ours.len() > 10, "{name}: only {} samples", ours.len());
        assert_eq!(ours, theirs(text), "{name}");
    }
}

#[test]
fn finds_the_signals_in_each_client_s_naming() {
    let names = SeriesNames::default();
    let go = features::read(FIXTURES[0].1, &names, 0).expect("go");
    assert_eq!(go.counters.requests, 1_027_000.0 + 3.0 + 17.0 + 2.0);
    assert_eq!(
        go.counters.errors, 19.0,
        "500 and 503 are server errors, 400 is not"
    );
    assert_eq!(go.counters.latency_buckets.len(), 9);
    assert_eq!(
        go.in_flight, None,
        "promhttp's gauge counts scrapes, not requests"
    );
    let py = features::read(FIXTURES[1].1, &names, 0).expect("python");
    assert_eq!(
        py.counters.requests,
        1200.0 + 13.0 + 300.0 + 4.0 + 7.0 + 1.0
    );
    assert_eq!(py.counters.errors, 17.0);
    assert_eq!(py.counters.rejected, 2.0);
    assert_eq!(py.in_flight, Some(3.0));
    assert_eq!(
        py.counters.latency_buckets.last().map(|b| b.1),
        Some(2000.0)
    );
    let demo = features::read(FIXTURES[2].1, &names, 0).expect("demo");
    assert_eq!(demo.counters.requests, 60.0);
    assert_eq!(demo.counters.latency_buckets.len(), 12);
}

#[test]
fn every_cut_inside_a_line_is_refused_as_truncated() {
    for (name, text) in FIXTURES {
        let mut refused = 0;
        for cut in 1..text.len() {
            if !text.is_char_boundary(cut) || text.as_bytes()[cut - 1] == b'\n' {
                continue;
            }
            let e = exposition::read(&text[..cut], |_| {}).expect_err("a cut exposition");
            assert_eq!(e.kind, ErrorKind::Truncated, "{name} cut at {cut}");
            refused += 1;
        }
        assert!(refused > 500, "{name}: {refused}");
    }
}
