//! Property tests of the codec with many generated inputs: arbitrary bytes and every committed
//! fixture mutated (bit flips, cuts, extensions, fields spliced in from other fixtures, wrong
//! types, huge declared lengths) are either decoded or refused with a typed error, never a
//! panic; whatever decodes re-encodes to a message that decodes the same; and generated valid
//! events of every kind survive a round trip unchanged.
//!
//! Cases per property are set below (about 10,000 in all, a few seconds);
//! `PROPTEST_CASES=100000 cargo test -p immune-nats --release --test fuzz_codec` runs more.
//! That allocation stays bounded is checked in `bounded_allocation.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use immune_nats::*;
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

/// `cases` per property, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // A failing case found once is tried first on every later run.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fuzz_codec.proptest-regressions"
        )))),
        ..ProptestConfig::default()
    }
}

/// Every committed fixture of this schema version, in name order.
fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/v{SCHEMA_VERSION}"));
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("fixture dir")
        .map(|e| {
            let path = e.expect("dir entry").path();
            let name = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, std::fs::read(&path).expect("fixture readable"))
        })
        .collect();
    out.sort();
    assert!(out.len() >= 14, "fixtures missing in {}", dir.display());
    out
}

/// Decoded, or refused with one of the codec's kinds; whatever decodes must encode again and
/// decode to the same message (compared as bytes, since a flipped bit may make a NaN).
fn decodes_or_is_refused(bytes: &[u8]) -> Result<(), TestCaseError> {
    let view = SnapshotView::decode(bytes);
    match decode(bytes) {
        Ok(envelope) => {
            let again = encode(&envelope).map_err(|e| {
                TestCaseError::fail(format!("decoded but does not encode again: {e}"))
            })?;
            let back = decode(&again).map_err(|e| {
                TestCaseError::fail(format!("re-encoded message does not decode: {e}"))
            })?;
            prop_assert_eq!(&encode(&back).expect("encodes"), &again);
            prop_assert!(view.is_ok(), "decodes, but not in place: {view:?}");
            view_agrees(&again, &back)?;
            // And read in place from the changed bytes themselves, it says the same.
            view_agrees(bytes, &envelope)?;
        }
        Err(e) => {
            // The view checks less (it skips what it does not read), but never lets through
            // a message of the wrong size or version.
            if ["unsupported_version", "too_large"].contains(&e.kind()) {
                prop_assert_eq!(view.map(|_| ()).map_err(|v| v.kind()), Err(e.kind()));
            }
            prop_assert!(
                ["malformed", "unsupported_version", "too_large"].contains(&e.kind()),
                "unexpected error kind {} ({e})",
                e.kind()
            );
            prop_assert!(!e.to_string().is_empty());
        }
    }
    Ok(())
}

/// The snapshot read in place from `bytes` (as [`encode`] wrote them) says what the full
/// decode of the same bytes says; any other kind is not read in place.
fn view_agrees(bytes: &[u8], envelope: &Envelope) -> Result<(), TestCaseError> {
    let view = SnapshotView::decode(bytes)
        .map_err(|e| TestCaseError::fail(format!("not read in place: {e}")))?;
    let (Event::MetricSnapshot(s), Some(v)) = (&envelope.body, &view) else {
        prop_assert!(
            view.is_none() && !matches!(envelope.body, Event::MetricSnapshot(_)),
            "a {} read in place as {view:?}",
            envelope.body.kind()
        );
        return Ok(());
    };
    prop_assert_eq!(v.event_id, envelope.event_id.0.as_str());
    prop_assert_eq!(v.correlation_id, envelope.correlation_id.as_deref());
    prop_assert_eq!(v.service, s.service.as_str());
    prop_assert_eq!(v.instance, s.instance.as_str());
    prop_assert_eq!(v.container_id, s.container_id.as_str());
    prop_assert_eq!(v.observed_ms, s.observed_ms);
    prop_assert_eq!(v.state, s.state);
    prop_assert_eq!(v.health_ok, s.health.as_ref().map(|h| h.ok));
    prop_assert_eq!(v.scrape_ok, s.scrape.as_ref().map(|p| p.ok));
    prop_assert_eq!(v.scope, s.scope);
    let bits = |pairs: Vec<(&str, f64)>| -> Vec<(String, u64)> {
        pairs
            .into_iter()
            .map(|(k, x)| (k.to_string(), x.to_bits()))
            .collect()
    };
    prop_assert_eq!(
        bits(v.features.0.clone()),
        bits(s.features.iter().map(|(k, x)| (k.as_str(), *x)).collect())
    );
    Ok(())
}

/// Length headers claiming 4 GiB: array 32, map 32, str 32, bin 32, ext 32.
const HUGE_HEADERS: [u8; 5] = [0xdd, 0xdf, 0xdb, 0xc6, 0xc9];

/// Markers of other types than the field may expect: nil, false, true, f64, u64, i8,
/// fixstr "", fixarray [], fixmap {}, str8 of 255 bytes, negative fixint.
const WRONG_TYPES: [u8; 11] = [
    0xc0, 0xc2, 0xc3, 0xcb, 0xcf, 0xd0, 0xa0, 0x90, 0x80, 0xd9, 0xff,
];

/// One change to a message; positions are taken modulo its current length.
#[derive(Debug, Clone)]
enum Mutation {
    Flip {
        at: usize,
        bit: u8,
    },
    Truncate {
        at: usize,
    },
    Extend(Vec<u8>),
    Delete {
        at: usize,
        len: usize,
    },
    /// Overwrites bytes at `at` with a chunk of another fixture (a field of another kind).
    Splice {
        source: usize,
        from: usize,
        len: usize,
        at: usize,
    },
    WrongType {
        at: usize,
        marker: u8,
    },
    HugeLength {
        at: usize,
        header: u8,
    },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<usize>(), 0u8..8).prop_map(|(at, bit)| Mutation::Flip { at, bit }),
        1 => any::<usize>().prop_map(|at| Mutation::Truncate { at }),
        1 => prop::collection::vec(any::<u8>(), 1..32).prop_map(Mutation::Extend),
        1 => (any::<usize>(), 1usize..16).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (any::<usize>(), any::<usize>(), 1usize..48, any::<usize>()).prop_map(
            |(source, from, len, at)| Mutation::Splice { source, from, len, at }
        ),
        2 => (any::<usize>(), prop::sample::select(WRONG_TYPES.to_vec()))
            .prop_map(|(at, marker)| Mutation::WrongType { at, marker }),
        2 => (any::<usize>(), prop::sample::select(HUGE_HEADERS.to_vec()))
            .prop_map(|(at, header)| Mutation::HugeLength { at, header }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation, fixtures: &[(String, Vec<u8>)]) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match m {
        Mutation::Flip { at: i, bit } => {
            if !bytes.is_empty() {
                let i = at(*i, bytes.len());
                bytes[i] ^= 1 << bit;
            }
        }
        Mutation::Truncate { at: i } => bytes.truncate(at(*i, bytes.len())),
        Mutation::Extend(more) => bytes.extend_from_slice(more),
        Mutation::Delete { at: i, len } => {
            let start = at(*i, bytes.len());
            let end = (start + len).min(bytes.len());
            bytes.drain(start..end);
        }
        Mutation::Splice {
            source,
            from,
            len,
            at: i,
        } => {
            let src = &fixtures[source % fixtures.len()].1;
            let from = at(*from, src.len());
            let chunk = &src[from..(from + len).min(src.len())];
            let start = at(*i, bytes.len());
            let end = (start + chunk.len()).min(bytes.len());
            bytes.splice(start..end, chunk.iter().copied());
        }
        Mutation::WrongType { at: i, marker } => {
            if !bytes.is_empty() {
                let i = at(*i, bytes.len());
                bytes[i] = *marker;
            }
        }
        Mutation::HugeLength { at: i, header } => {
            let start = at(*i, bytes.len());
            let end = (start + 5).min(bytes.len());
            bytes.splice(start..end, [*header, 0xff, 0xff, 0xff, 0xff]);
        }
    }
}

proptest! {
    #![proptest_config(config(3_000))]

    #[test]
    fn arbitrary_bytes_are_decoded_or_refused(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        decodes_or_is_refused(&bytes)?;
    }

    /// Bytes that open like an envelope, so the decoder gets past the first marker.
    #[test]
    fn arbitrary_bytes_after_an_envelope_header_are_decoded_or_refused(
        tail in prop::collection::vec(any::<u8>(), 0..512),
        fields in 0u8..16,
    ) {
        let mut bytes = vec![0x80 | fields];
        bytes.extend_from_slice(b"\xaeschema_version\x01");
        bytes.extend_from_slice(&tail);
        decodes_or_is_refused(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(5_000))]

    #[test]
    fn mutated_fixtures_are_decoded_or_refused(
        which in any::<usize>(),
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let fixtures = fixtures();
        let mut bytes = fixtures[which % fixtures.len()].1.clone();
        for m in &mutations {
            apply(&mut bytes, m, &fixtures);
        }
        decodes_or_is_refused(&bytes)?;
    }
}

// ---- generated valid events -------------------------------------------------------------

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..24).prop_map(|c| c.into_iter().collect())
}

fn service() -> impl Strategy<Value = ServiceName> {
    "[A-Za-z0-9_-]{1,64}".prop_map(|s| ServiceName::new(s).expect("generated valid"))
}

/// Any float but NaN, which is not equal to itself.
fn number() -> impl Strategy<Value = f64> {
    use prop::num::f64::*;
    POSITIVE | NEGATIVE | NORMAL | SUBNORMAL | ZERO | INFINITE
}

fn params() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..6)
}

fn one_of<T: Clone + std::fmt::Debug + 'static>(all: &[T]) -> impl Strategy<Value = T> {
    prop::sample::select(all.to_vec())
}

fn fault() -> impl Strategy<Value = FaultKind> {
    use FaultKind::*;
    one_of(&[
        Crash,
        Hang,
        Kill,
        Stop,
        Pause,
        Restart,
        NetworkDisconnect,
        Latency,
        Errors,
        MemoryLeak,
        CpuBurn,
        Attack,
    ])
}

fn action() -> impl Strategy<Value = ActionKind> {
    use ActionKind::*;
    one_of(&[
        Restart,
        Recreate,
        ScaleOut,
        ScaleIn,
        Pause,
        Unpause,
        UpdateLimits,
        Rollback,
        ReconnectNetwork,
        Throttle,
        CircuitBreaker,
        FeatureFlag,
        BlockSources,
    ])
}

fn signature() -> impl Strategy<Value = Signature> {
    use Signature::*;
    one_of(&[
        Crashed,
        OomKilled,
        Unresponsive,
        TargetDown,
        LatencyUp,
        ErrorsUp,
        TrafficDrop,
        ResourceExhaustion,
        AttackBurst,
        Unknown,
    ])
}

fn stage() -> impl Strategy<Value = Stage> {
    use Stage::*;
    one_of(&[Collector, Detector, Decider, Executor, Chaos, Client])
}

fn timeline() -> impl Strategy<Value = Vec<TimelineEntry>> {
    prop::collection::vec(
        (any::<u64>(), text()).prop_map(|(at_ms, what)| TimelineEntry { at_ms, what }),
        0..6,
    )
}

fn metric_snapshot() -> impl Strategy<Value = Event> {
    use ContainerState::*;
    let health = prop::option::of(
        (
            any::<bool>(),
            prop::option::of(any::<u16>()),
            number(),
            prop::option::of(text()),
        )
            .prop_map(|(ok, status, latency_ms, error)| HealthProbe {
                ok,
                status,
                latency_ms,
                error,
            }),
    );
    let scrape = prop::option::of(
        (
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            number(),
            prop::option::of(text()),
        )
            .prop_map(|(ok, samples, bytes, latency_ms, error)| ScrapeOutcome {
                ok,
                samples,
                bytes,
                latency_ms,
                error,
            }),
    );
    let replicas = prop::option::of((any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(total, running, healthy)| Replicas {
            total,
            running,
            healthy,
        },
    ));
    (
        (service(), text(), text(), any::<u64>(), any::<u64>()),
        one_of(&[
            Created, Running, Paused, Restarting, Removing, Exited, Dead, Unknown,
        ]),
        health,
        scrape,
        prop::collection::btree_map(text(), number(), 0..20),
        one_of(&[SnapshotScope::Instance, SnapshotScope::Service]),
        replicas,
        prop::collection::vec(service(), 0..4),
    )
        .prop_map(
            |(
                (service, instance, container_id, observed_ms, interval_ms),
                state,
                health,
                scrape,
                features,
                scope,
                replicas,
                depends_on,
            )| {
                Event::MetricSnapshot(MetricSnapshot {
                    service,
                    instance,
                    container_id,
                    observed_ms,
                    interval_ms,
                    state,
                    health,
                    scrape,
                    features,
                    scope,
                    replicas,
                    depends_on,
                })
            },
        )
}

fn container_event() -> impl Strategy<Value = Event> {
    use ContainerEventKind::*;
    (
        service(),
        text(),
        text(),
        one_of(&[
            Started, Died, OomKilled, Restarted, Paused, Unpaused, Healthy, Unhealthy, Destroyed,
        ]),
        prop::option::of(any::<i64>()),
        any::<u64>(),
    )
        .prop_map(
            |(service, instance, container_id, kind, exit_code, observed_ms)| {
                Event::ContainerEvent(ContainerEvent {
                    service,
                    instance,
                    container_id,
                    kind,
                    exit_code,
                    observed_ms,
                })
            },
        )
}

fn anomaly() -> impl Strategy<Value = Event> {
    let contribution = (
        text(),
        number(),
        number(),
        number(),
        one_of(&[Direction::Up, Direction::Down]),
    )
        .prop_map(|(metric, value, expected, share, direction)| Contribution {
            metric,
            value,
            expected,
            share,
            direction,
        });
    (
        (text(), service(), text(), text()),
        one_of(&[AnomalyState::Firing, AnomalyState::Cleared]),
        signature(),
        (text(), number(), number()),
        prop::collection::vec(contribution, 0..5),
        (text(), any::<u64>()),
        prop::collection::vec(service(), 0..3),
    )
        .prop_map(
            |(
                (anomaly_id, service, instance, container_id),
                state,
                signature,
                (detector, score, threshold),
                contributions,
                (reason, started_ms),
                depends_on,
            )| {
                Event::Anomaly(Anomaly {
                    anomaly_id,
                    service,
                    instance,
                    container_id,
                    state,
                    signature,
                    detector,
                    score,
                    threshold,
                    contributions,
                    reason,
                    started_ms,
                    depends_on,
                })
            },
        )
}

fn incident() -> impl Strategy<Value = Event> {
    use IncidentState::*;
    (
        text(),
        service(),
        one_of(&[Opened, Acting, Verifying, Recovered, Escalated, Closed]),
        signature(),
        prop::option::of(text()),
        any::<u64>(),
        timeline(),
    )
        .prop_map(
            |(incident_id, service, state, signature, chaos_run, opened_ms, timeline)| {
                Event::Incident(Incident {
                    incident_id,
                    service,
                    state,
                    signature,
                    chaos_run,
                    opened_ms,
                    timeline,
                })
            },
        )
}

fn action_request() -> impl Strategy<Value = Event> {
    (
        (text(), text(), service(), text(), text()),
        action(),
        params(),
        any::<u64>(),
        text(),
    )
        .prop_map(
            |(
                (action_id, incident_id, service, instance, container_id),
                action,
                params,
                timeout_ms,
                reason,
            )| {
                Event::ActionRequest(ActionRequest {
                    action_id,
                    incident_id,
                    service,
                    instance,
                    container_id,
                    action,
                    params,
                    timeout_ms,
                    reason,
                })
            },
        )
}

fn action_result() -> impl Strategy<Value = Event> {
    use ActionOutcome::*;
    (
        (text(), text(), service(), text()),
        action(),
        one_of(&[Succeeded, Failed, Refused]),
        prop::option::of(text()),
        any::<u64>(),
        any::<u64>(),
        prop::option::of(text()),
    )
        .prop_map(
            |(
                (action_id, incident_id, service, instance),
                action,
                outcome,
                error,
                duration_ms,
                finished_ms,
                replaced_by,
            )| {
                Event::ActionResult(ActionResult {
                    action_id,
                    incident_id,
                    service,
                    instance,
                    action,
                    outcome,
                    error,
                    duration_ms,
                    finished_ms,
                    replaced_by,
                })
            },
        )
}

fn chaos_events() -> impl Strategy<Value = Event> {
    let request = (
        prop::option::of(text()),
        service(),
        fault(),
        any::<u64>(),
        params(),
    )
        .prop_map(|(run_id, service, fault, duration_ms, params)| {
            Event::ChaosRequest(ChaosRequest {
                run_id,
                service,
                fault,
                duration_ms,
                params,
            })
        });
    let injected = (
        (text(), service(), text(), text()),
        fault(),
        params(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                (run_id, service, instance, container_id),
                fault,
                params,
                injected_ms,
                revert_at_ms,
            )| {
                Event::ChaosInjected(ChaosInjected {
                    run_id,
                    service,
                    instance,
                    container_id,
                    fault,
                    params,
                    injected_ms,
                    revert_at_ms,
                })
            },
        );
    let reverted = (text(), service(), text(), fault(), text(), any::<u64>()).prop_map(
        |(run_id, service, instance, fault, note, reverted_ms)| {
            Event::ChaosReverted(ChaosReverted {
                run_id,
                service,
                instance,
                fault,
                note,
                reverted_ms,
            })
        },
    );
    let rejected =
        (text(), service(), fault(), text()).prop_map(|(run_id, service, fault, reason)| {
            Event::ChaosRejected(ChaosRejected {
                run_id,
                service,
                fault,
                reason,
            })
        });
    prop_oneof![request, injected, reverted, rejected]
}

fn operator_events() -> impl Strategy<Value = Event> {
    let audit = (
        stage(),
        service(),
        text(),
        text(),
        text(),
        prop::option::of(text()),
    )
        .prop_map(|(stage, service, what, why, outcome, about)| {
            Event::Audit(AuditRecord {
                stage,
                service,
                what,
                why,
                outcome,
                about: about.map(EventId),
                action_id: None,
            })
        });
    let dead_letter = (
        stage(),
        text(),
        text(),
        text(),
        prop::collection::vec(any::<u8>(), 0..256),
        any::<u64>(),
    )
        .prop_map(
            |(stage, subject, reason, reason_kind, payload, payload_len)| {
                Event::DeadLetter(DeadLetter {
                    stage,
                    subject,
                    reason,
                    reason_kind,
                    payload,
                    payload_len,
                })
            },
        );
    let tried = (text(), action(), text(), text(), any::<u64>()).prop_map(
        |(action_id, action, outcome, detail, requested_ms)| ActionTried {
            action_id,
            action,
            outcome,
            detail,
            requested_ms,
        },
    );
    let escalation = (
        (
            text(),
            service(),
            signature(),
            prop::option::of(text()),
            text(),
        ),
        prop::collection::vec(text(), 0..4),
        prop::collection::vec(tried, 0..4),
        timeline(),
        (any::<u64>(), any::<u64>()),
    )
        .prop_map(
            |(
                (incident_id, service, signature, chaos_run, reason),
                signals,
                actions,
                timeline,
                (opened_ms, escalated_ms),
            )| {
                Event::Escalation(Escalation {
                    incident_id,
                    service,
                    signature,
                    chaos_run,
                    reason,
                    signals,
                    actions,
                    timeline,
                    opened_ms,
                    escalated_ms,
                })
            },
        );
    let approval = (service(), text(), text(), any::<bool>(), text()).prop_map(
        |(service, incident_id, action_id, approved, by)| {
            Event::Approval(Approval {
                service,
                incident_id,
                action_id,
                approved,
                by,
            })
        },
    );
    prop_oneof![audit, dead_letter, escalation, approval]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        metric_snapshot(),
        container_event(),
        anomaly(),
        incident(),
        action_request(),
        action_result(),
        chaos_events(),
        operator_events(),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (
        text(),
        any::<u64>(),
        stage(),
        text(),
        prop::option::of(text()),
        event(),
    )
        .prop_map(
            |(id, timestamp_ms, stage, instance, correlation_id, body)| Envelope {
                schema_version: SCHEMA_VERSION,
                event_id: EventId(id),
                timestamp_ms,
                producer: Producer { stage, instance },
                correlation_id,
                body,
            },
        )
}

proptest! {
    #![proptest_config(config(2_000))]

    #[test]
    fn generated_events_of_every_kind_round_trip(envelope in envelope()) {
        let bytes = encode(&envelope).expect("a generated event encodes");
        prop_assert!(bytes.len() <= max_bytes(envelope.body.kind()));
        let back = decode(&bytes).expect("what we encode decodes");
        view_agrees(&bytes, &back)?;
        prop_assert_eq!(back, envelope);
    }
}

#[test]
fn the_generators_cover_every_kind() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = envelope();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..2_000 {
        let tree = strategy.new_tree(&mut runner).expect("a value");
        seen.insert(tree.current().body.kind());
    }
    let all: std::collections::BTreeSet<_> = samples::all().into_iter().map(|(k, _)| k).collect();
    assert_eq!(seen, all, "a kind the generators never make");
}
