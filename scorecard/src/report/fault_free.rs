//! What the fault-free period showed: the false alarms (anomalies, incidents and actions
//! while nothing was broken) and the pipeline's figures (each stage's throughput, CPU and
//! memory, and the event latency from collector to executor).

use std::fmt::Write as _;

use super::Report;
use crate::measure::Trial;
use crate::stats::{per_hour, Summary};

impl Report {
    /// Anomalies, incidents and actions while nothing was broken.
    pub(super) fn false_alarms(&self, md: &mut String) {
        let c = &self.config;
        let ff = &self.fault_free;
        let _ = writeln!(md, "\n## False alarms under normal load\n");
        let _ = writeln!(
            md,
            "{:.0} s with no fault, load at {} requests/s, after the detector's first learned model.\n\n\
             | | count | per hour |\n|---|---:|---:|\n\
             | anomalies fired | {} | {:.1} |\n| incidents opened | {} | {:.1} |\n| actions requested | {} | {:.1} |\n",
            ff.period_s,
            c.load_rps,
            ff.anomalies,
            per_hour(ff.anomalies, ff.period_s),
            ff.incidents,
            per_hour(ff.incidents, ff.period_s),
            ff.actions,
            per_hour(ff.actions, ff.period_s),
        );
    }

    /// Each stage over the fault-free period, and the end-to-end latency.
    pub(super) fn pipeline(&self, md: &mut String) {
        let ff = &self.fault_free;
        let _ = writeln!(md, "\n## Pipeline\n");
        let _ = writeln!(
            md,
            "Over the fault-free period: events each stage received and published per second \
             (its own `immune_stage_events_total`), CPU (cores) and memory from Docker's stats \
             of each stage container. {} messages crossed the bus in that period.\n",
            ff.bus_events
        );
        let _ = writeln!(md, "| stage | received/s | published/s | CPU (cores) | memory (MiB) |\n|---|---:|---:|---:|---:|");
        for s in &ff.stages {
            let _ = writeln!(
                md,
                "| {} | {:.1} | {:.1} | {:.3} | {:.1} |",
                s.stage, s.received_per_s, s.published_per_s, s.cpu_cores, s.memory_mib
            );
        }
        let all: Vec<&Trial> = self.trials.iter().chain(&self.learning).collect();
        let lat = |f: fn(&crate::measure::StageLatency) -> f64| {
            Summary::of(
                &all.iter()
                    .filter_map(|t| t.latency.as_ref().map(f))
                    .collect::<Vec<_>>(),
            )
        };
        let _ = writeln!(
            md,
            "\nEnd-to-end event latency, collector publish of the observation that fired the \
             anomaly to the executor starting the action, over every injection that led to an \
             action (milliseconds):\n\n| leg | n | p50 | p95 | max |\n|---|---:|---:|---:|---:|"
        );
        for (name, s) in [
            ("collector → detector (anomaly)", lat(|l| l.detector_ms)),
            (
                "detector → decider (action requested)",
                lat(|l| l.decider_ms),
            ),
            (
                "decider → executor (action started)",
                lat(|l| l.executor_ms),
            ),
            ("end to end", lat(|l| l.end_to_end_ms())),
        ] {
            match s {
                Some(s) => {
                    let _ = writeln!(
                        md,
                        "| {name} | {} | {:.0} | {:.0} | {:.0} |",
                        s.n, s.p50, s.p95, s.max
                    );
                }
                None => {
                    let _ = writeln!(md, "| {name} | 0 | – | – | – |");
                }
            }
        }
    }
}
