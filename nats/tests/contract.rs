//! The wire contract: every event round-trips, the committed fixtures keep decoding, and bad
//! input is refused with a reason instead of a panic.
//!
//! To write fixtures for a new schema version: `IMMUNE_WRITE_FIXTURES=1 cargo test -p immune-nats`.

use std::path::PathBuf;

use immune_nats::{
    decode, encode, samples, CodecError, Event, Replicas, ServiceName, SnapshotScope, Subject,
    MAX_MESSAGE_BYTES, SCHEMA_VERSION, SERVICE_INSTANCE,
};

fn fixture_dir(version: u16) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/v{version}"))
}

#[test]
fn every_event_round_trips() {
    for (name, envelope) in samples::all() {
        assert_eq!(envelope.body.kind(), name, "sample named after its kind");
        let bytes = encode(&envelope).expect("encodes");
        let back = decode(&bytes).expect("decodes");
        assert_eq!(back, envelope, "{name} changed in a round trip");
    }
}

#[test]
fn committed_fixtures_keep_decoding() {
    let dir = fixture_dir(SCHEMA_VERSION);
    if std::env::var_os("IMMUNE_WRITE_FIXTURES").is_some() {
        std::fs::create_dir_all(&dir).expect("fixture dir");
        for (name, envelope) in samples::all() {
            std::fs::write(
                dir.join(format!("{name}.msgpack")),
                encode(&envelope).expect("encodes"),
            )
            .expect("write fixture");
        }
    }
    let samples = samples::all();
    for (name, expected) in &samples {
        let path = dir.join(format!("{name}.msgpack"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "fixture {} missing ({e}); every event kind needs one",
                path.display()
            )
        });
        let decoded =
            decode(&bytes).unwrap_or_else(|e| panic!("fixture {name} no longer decodes: {e}"));
        assert_eq!(
            &decoded, expected,
            "fixture {name} decodes to something else"
        );
    }
    let files = std::fs::read_dir(&dir).expect("fixture dir").count();
    assert_eq!(
        files,
        samples.len(),
        "a fixture file without a sample, or the reverse"
    );
}

#[test]
fn fields_are_named_on_the_wire() {
    let bytes = encode(&samples::all()[0].1).expect("encodes");
    let text = String::from_utf8_lossy(&bytes);
    for field in [
        "schema_version",
        "event_id",
        "correlation_id",
        "kind",
        "metric_snapshot",
        "features",
    ] {
        assert!(text.contains(field), "{field} not encoded by name");
    }
}

#[test]
fn a_newer_producer_with_extra_fields_still_decodes() {
    // A v1 envelope as a future producer might write it: an extra top-level field and an
    // extra field inside the body. Built as a generic msgpack map, not with our types.
    use rmp_serde::to_vec_named;
    use std::collections::BTreeMap;
    #[derive(serde::Serialize)]
    struct Body {
        kind: &'static str,
        data: BTreeMap<&'static str, rmpv_like::Value>,
    }
    mod rmpv_like {
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        pub enum Value {
            S(&'static str),
            N(u64),
            Nil(Option<u8>),
        }
    }
    use rmpv_like::Value::*;
    #[derive(serde::Serialize)]
    struct Env {
        schema_version: u16,
        event_id: &'static str,
        timestamp_ms: u64,
        producer: BTreeMap<&'static str, &'static str>,
        correlation_id: Option<&'static str>,
        body: Body,
        added_in_a_later_version: &'static str,
    }
    let env = Env {
        schema_version: 1,
        event_id: "e-1",
        timestamp_ms: 1,
        producer: BTreeMap::from([("stage", "chaos"), ("instance", "x")]),
        correlation_id: None,
        body: Body {
            kind: "chaos_rejected",
            data: BTreeMap::from([
                ("run_id", S("r")),
                ("service", S("orders")),
                ("fault", S("kill")),
                ("reason", S("no label")),
                ("severity_added_later", N(3)),
                ("also_new", Nil(None)),
            ]),
        },
        added_in_a_later_version: "ignored",
    };
    let decoded = decode(&to_vec_named(&env).expect("encodes")).expect("newer message decodes");
    assert!(matches!(decoded.body, Event::ChaosRejected(ref r) if r.reason == "no label"));
}

#[test]
fn bad_input_is_refused_with_a_reason() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "malformed"),
        (
            "garbage",
            b"definitely not msgpack \xc1\xc1".to_vec(),
            "malformed",
        ),
        ("json", br#"{"schema_version":1}"#.to_vec(), "malformed"),
        (
            "truncated",
            {
                let b = encode(&samples::all()[0].1).expect("encodes");
                b[..b.len() / 2].to_vec()
            },
            "malformed",
        ),
        ("oversize", vec![0x90; MAX_MESSAGE_BYTES + 1], "too_large"),
    ];
    for (name, bytes, kind) in cases {
        let err = decode(&bytes).expect_err(name);
        assert_eq!(err.kind(), kind, "{name}: {err}");
        assert!(!err.to_string().is_empty());
    }
}

#[test]
fn a_future_schema_version_is_refused_as_such() {
    let mut envelope = samples::all()[0].1.clone();
    envelope.schema_version = SCHEMA_VERSION + 1;
    let bytes = rmp_serde::to_vec_named(&envelope).expect("encodes");
    let err = decode(&bytes).expect_err("future version");
    assert!(
        matches!(err, CodecError::UnsupportedVersion { found, .. } if found == SCHEMA_VERSION + 1),
        "{err}"
    );
}

#[test]
fn an_unknown_event_kind_is_refused_not_guessed() {
    let mut bytes = encode(&samples::all()[2].1).expect("encodes");
    let pos = bytes
        .windows(7)
        .position(|w| w == b"anomaly")
        .expect("kind on the wire");
    bytes[pos..pos + 7].copy_from_slice(b"anomalX");
    let err = decode(&bytes).expect_err("unknown kind");
    assert_eq!(err.kind(), "malformed");
}

#[test]
fn subjects_come_from_the_event() {
    let expected = [
        ("metric_snapshot", "immune.metrics.orders"),
        ("container_event", "immune.events.orders"),
        ("anomaly", "immune.anomalies.orders"),
        ("incident", "immune.incidents.orders"),
        ("action_request", "immune.actions.orders"),
        ("action_result", "immune.results.orders"),
        ("chaos_request", "immune.chaos.requests"),
        ("chaos_injected", "immune.chaos.injected.orders"),
        ("chaos_reverted", "immune.chaos.reverted.orders"),
        ("chaos_rejected", "immune.chaos.rejected.orders"),
        ("audit", "immune.audit.decider.orders"),
        ("dead_letter", "immune.deadletter.detector"),
    ];
    for ((name, envelope), (want_name, want)) in samples::all().iter().zip(expected) {
        assert_eq!(*name, want_name);
        let subject = Subject::of(&envelope.body);
        assert_eq!(subject.as_str(), want);
        // every subject is captured by exactly one stream
        let streams = immune_nats::streams::ALL_STREAMS
            .iter()
            .filter(|s| {
                s.subjects
                    .iter()
                    .any(|f| immune_nats::subject::matches(f, want))
            })
            .count();
        assert_eq!(streams, 1, "{want} must belong to exactly one stream");
    }
}

#[test]
fn service_names_are_validated_when_decoded() {
    let envelope = samples::all()[0].1.clone();
    let Event::MetricSnapshot(ref m) = envelope.body else {
        unreachable!()
    };
    let service = m.service.as_str().to_string();
    let bytes = encode(&envelope).expect("encodes");
    let mut bad = bytes.clone();
    let pos = bad
        .windows(service.len())
        .position(|w| w == service.as_bytes())
        .expect("service on the wire");
    bad[pos + 1] = b'.'; // "o.ders": would split the subject
    assert_eq!(
        decode(&bad).expect_err("dotted service").kind(),
        "malformed"
    );
}

#[test]
fn roll_ups_and_dependencies_round_trip_and_old_snapshots_default_to_instances() {
    let mut s = samples::metric_snapshot();
    s.scope = SnapshotScope::Service;
    s.instance = SERVICE_INSTANCE.into();
    s.replicas = Some(Replicas {
        total: 3,
        running: 3,
        healthy: 2,
    });
    s.depends_on = vec![ServiceName::new("payments").expect("valid")];
    let envelope = samples::envelope(immune_nats::Stage::Collector, Event::MetricSnapshot(s));
    let back = decode(&encode(&envelope).expect("encode")).expect("decode");
    assert_eq!(back, envelope);
    // A v1 snapshot written before roll-ups existed is an instance snapshot with no
    // dependencies.
    let old = std::fs::read(fixture_dir(1).join("metric_snapshot.msgpack")).expect("fixture");
    let Event::MetricSnapshot(old) = decode(&old).expect("decodes").body else {
        panic!("not a snapshot");
    };
    assert_eq!(
        (old.scope, old.replicas, old.depends_on.len()),
        (SnapshotScope::Instance, None, 0)
    );
}

#[test]
fn every_fault_kind_round_trips_by_name_and_on_the_wire() {
    use immune_nats::{ChaosRequest, FaultKind, Stage};
    for name in [
        "crash",
        "hang",
        "kill",
        "stop",
        "pause",
        "restart",
        "network_disconnect",
        "latency",
        "errors",
        "memory_leak",
        "cpu_burn",
        "attack",
    ] {
        let fault: FaultKind = name.parse().expect("a known fault");
        assert_eq!(fault.as_str(), name);
        let request = ChaosRequest {
            fault,
            ..samples::chaos_request()
        };
        let envelope = samples::envelope(Stage::Client, Event::ChaosRequest(request.clone()));
        let decoded = decode(&encode(&envelope).expect("encode")).expect("decode");
        assert_eq!(decoded.body, Event::ChaosRequest(request));
    }
    assert!("meteor_strike".parse::<FaultKind>().is_err());
}

#[test]
fn an_oversize_event_is_refused_by_its_kind_s_limit_on_both_sides() {
    use immune_nats::{max_bytes, MAX_SNAPSHOT_BYTES};
    // 50,000 features, 0.8 MB: under the server's max_payload (1 MB), so NATS delivers it,
    // and thousands of times what a collector writes, so a stage refuses it.
    let mut snapshot = samples::metric_snapshot();
    snapshot.features = (0..50_000).map(|i| (format!("f{i:05}"), 1.0)).collect();
    let envelope = samples::envelope(
        immune_nats::Stage::Collector,
        Event::MetricSnapshot(snapshot),
    );
    let err = encode(&envelope).expect_err("a huge snapshot is not sent");
    assert!(
        matches!(err, CodecError::TooLarge { max, .. } if max == MAX_SNAPSHOT_BYTES),
        "{err}"
    );
    // As another producer might still send it: refused before the body is decoded.
    let bytes = rmp_serde::to_vec_named(&envelope).expect("encodes");
    assert!(
        bytes.len() > 700_000 && bytes.len() < MAX_MESSAGE_BYTES,
        "{}",
        bytes.len()
    );
    let err = decode(&bytes).expect_err("a huge snapshot is not read");
    assert_eq!(err.kind(), "too_large");
    assert!(
        err.to_string().contains(&MAX_SNAPSHOT_BYTES.to_string()),
        "{err}"
    );
    // An incident's story may be longer than a snapshot.
    let mut incident = samples::incident();
    incident.timeline = (0..4_000)
        .map(|i| immune_nats::TimelineEntry {
            at_ms: i,
            what: format!("step {i}: waited for the steady state"),
        })
        .collect();
    let envelope = samples::envelope(immune_nats::Stage::Decider, Event::Incident(incident));
    let bytes = encode(&envelope).expect("a long incident is sent");
    assert!(bytes.len() > MAX_SNAPSHOT_BYTES && bytes.len() <= max_bytes("incident"));
    assert_eq!(decode(&bytes).expect("and read"), envelope);
}
