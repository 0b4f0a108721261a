//! The scorecard end to end on a tiny configuration: its own compose stack (real NATS, the
//! five stages, the demo services on the real Docker engine), one crash, a 20 s fault-free
//! period, no baselines; the report and the crash timeline plot must be written and say
//! that the crash was detected, repaired with a restart and healthy again, and the stack's
//! logs must be saved.
//! Needs the images from `scripts/images.sh debug`.

use std::time::Duration;

use clap::Parser;
use immune_nats::FaultKind;
use immune_scorecard::measure::HealedBy;

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    config: immune_scorecard::Config,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_scorecard_runs_against_the_real_stack() {
    let out = tempfile::tempdir().expect("temp dir");
    let compose = concat!(env!("CARGO_MANIFEST_DIR"), "/../docker-compose.yml");
    let out_dir = out.path().to_str().expect("utf-8 temp path");
    let cli = Cli::parse_from([
        "immune-scorecard",
        "--runs",
        "1",
        "--faults",
        "crash",
        "--fault-free",
        "20s",
        "--fault-duration",
        "20s",
        "--learning-runs",
        "0",
        "--skip-baselines",
        "--no-model-wait",
        "--compose-file",
        compose,
        "--compose-project",
        "immune-scorecard-test",
        "--demo-project",
        "immune-scorecard-test",
        "--nats-port",
        "24222",
        "--nats-monitor-port",
        "28222",
        "--out",
        out_dir,
        "--logs",
        &format!("{out_dir}/logs"),
    ]);
    let report = tokio::time::timeout(Duration::from_secs(240), immune_scorecard::run(cli.config))
        .await
        .expect("the scorecard did not finish within 240 s: compose stack slow to start?")
        .expect("the scorecard ran");

    assert_eq!(
        report.trials.len(),
        1,
        "one crash trial: {:#?}",
        report.trials
    );
    let crash = &report.trials[0];
    assert_eq!(crash.fault, FaultKind::Crash);
    assert!(
        crash.detected_ms.is_some(),
        "the crash was not detected: {crash:#?}"
    );
    assert_eq!(
        crash.actions.first().map(String::as_str),
        Some("restart"),
        "{crash:#?}"
    );
    assert_eq!(crash.healed_by, HealedBy::Immune, "{crash:#?}");
    let healed = crash.healed_ms.expect("healthy again");
    let probes: Vec<String> = report
        .timelines
        .iter()
        .filter(|t| t.fault == FaultKind::Crash)
        .flat_map(|t| &t.health)
        .filter(|(at, _)| (-0.5..3.0).contains(at))
        .map(|(at, ok)| format!("{at:.3}{}", if *ok { "" } else { " FAIL" }))
        .collect();
    assert!(
        healed >= crash.detected_ms.unwrap_or(0),
        "healed before detected: {crash:#?}\nprobes (s from injection; a pass when answered): {probes:?}"
    );
    assert!(
        crash.latency.is_some(),
        "no stage latency for the crash: {crash:#?}"
    );
    assert_eq!(report.fault_free.period_s, 20.0);
    assert_eq!(
        report.fault_free.stages.len(),
        5,
        "{:#?}",
        report.fault_free.stages
    );
    assert!(
        report
            .fault_free
            .stages
            .iter()
            .any(|s| s.received_per_s > 0.0),
        "no stage received events in the fault-free period: {:#?}",
        report.fault_free.stages
    );

    let md =
        std::fs::read_to_string(out.path().join("scorecard.md")).expect("scorecard.md written");
    assert!(
        md.contains("## Targets") && md.contains("| crash | 1 | 1/1 |"),
        "{md}"
    );
    for png in ["timeline_crash.png", "mttr.png"] {
        let bytes = std::fs::read(out.path().join("scorecard").join(png)).expect(png);
        assert!(bytes.starts_with(b"\x89PNG"), "{png} is not a PNG");
    }
    // The stack's logs outlive it, to explain a slow trial afterwards.
    for (service, says) in [
        ("nats", "Server is ready"),
        ("collector", "collector"),
        ("detector", "detector running"),
        ("decider", "decider"),
        ("executor", "executor"),
        ("chaos", "chaos"),
    ] {
        let log = std::fs::read_to_string(out.path().join("logs").join(format!("{service}.log")))
            .unwrap_or_else(|e| panic!("{service}.log: {e}"));
        assert!(log.contains(says), "{service}.log lacks {says:?}:\n{log}");
    }
}
