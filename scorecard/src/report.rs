//! The scorecard as data ([`Report`]) and as markdown: per-fault tables, the alternatives
//! side by side, false alarms, the learning curve, pipeline figures and the targets, with
//! the PNG plots beside it. Rendering is pure and tested.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use immune_nats::{feature, AnomalyState, Envelope, Event, FaultKind, SnapshotScope};
use serde::{Deserialize, Serialize};

use crate::baseline::BaselineRun;
use crate::measure::{HealedBy, Probe, Trial};
use crate::stats::{per_hour, Summary};
use crate::{Config, ScorecardError};

/// The configuration the figures were measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub runs: usize,
    pub faults: Vec<String>,
    pub target: String,
    pub fault_duration_s: f64,
    pub fault_free_s: f64,
    pub load_rps: u32,
    pub learning_fault: String,
    pub learning_runs: usize,
}

impl ConfigSummary {
    pub fn of(c: &Config) -> ConfigSummary {
        ConfigSummary {
            runs: c.runs,
            faults: c.faults.iter().map(|f| f.as_str().to_string()).collect(),
            target: c.target.clone(),
            fault_duration_s: c.fault_duration.as_secs_f64(),
            fault_free_s: c.fault_free.as_secs_f64(),
            load_rps: c.load_rps,
            learning_fault: c.learning_fault.as_str().to_string(),
            learning_runs: c.learning_runs,
        }
    }
}

/// One stage over the fault-free period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFigures {
    pub stage: String,
    pub received_per_s: f64,
    pub published_per_s: f64,
    pub cpu_cores: f64,
    pub memory_mib: f64,
}

/// What happened while nothing was broken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultFree {
    pub period_s: f64,
    pub incidents: usize,
    pub actions: usize,
    pub anomalies: usize,
    pub bus_events: usize,
    pub stages: Vec<StageFigures>,
}

/// The story of one injection, for its plot; seconds after the injection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timeline {
    pub fault: FaultKind,
    pub feature: String,
    pub metric: Vec<(f64, f64)>,
    /// (time, score, threshold, firing)
    pub anomalies: Vec<(f64, f64, f64, bool)>,
    pub actions: Vec<(f64, String)>,
    pub health: Vec<(f64, bool)>,
    pub fault_end_s: Option<f64>,
    pub detected_s: Option<f64>,
    pub healed_s: Option<f64>,
}

/// The metric that shows a fault best.
pub fn feature_of(fault: FaultKind) -> &'static str {
    match fault {
        FaultKind::Latency => feature::LATENCY_P95_MS,
        FaultKind::Errors => feature::ERROR_RATIO,
        FaultKind::MemoryLeak => feature::MEMORY_BYTES,
        FaultKind::CpuBurn => feature::CPU_CORES,
        _ => feature::HEALTH_OK,
    }
}

fn secs(ms: u64, t0: u64) -> f64 {
    (ms as f64 - t0 as f64) / 1000.0
}

impl Timeline {
    pub fn of(trial: &Trial, seen: &[Envelope], probes: &[Probe]) -> Timeline {
        let t0 = trial.injected_ms;
        let name = feature_of(trial.fault);
        let mut metric = Vec::new();
        let mut anomalies = Vec::new();
        let mut actions = Vec::new();
        for e in seen {
            match &e.body {
                Event::MetricSnapshot(s)
                    if s.scope == SnapshotScope::Instance && s.instance == trial.instance =>
                {
                    let value = if name == feature::HEALTH_OK {
                        Some(if s.health.as_ref().is_some_and(|h| h.ok) {
                            1.0
                        } else {
                            0.0
                        })
                    } else {
                        s.features.get(name).copied()
                    };
                    if let Some(v) = value {
                        let v = if name == feature::MEMORY_BYTES {
                            v / 1048576.0
                        } else {
                            v
                        };
                        metric.push((secs(s.observed_ms, t0), v));
                    }
                }
                Event::Anomaly(a) if a.service.as_str() == trial.service => {
                    anomalies.push((
                        secs(e.timestamp_ms, t0),
                        a.score,
                        a.threshold,
                        a.state == AnomalyState::Firing,
                    ));
                }
                Event::ActionRequest(r) if r.instance == trial.instance => {
                    actions.push((secs(e.timestamp_ms, t0), r.action.as_str().to_string()));
                }
                _ => {}
            }
        }
        Timeline {
            fault: trial.fault,
            feature: if name == feature::MEMORY_BYTES {
                "memory_mib".into()
            } else {
                name.into()
            },
            metric,
            anomalies,
            actions,
            // A pass is drawn when it was answered, a failure when it was sent.
            health: probes
                .iter()
                .map(|p| {
                    let at = if p.ok { p.answered_ms } else { p.sent_ms };
                    (secs(at, t0), p.ok)
                })
                .collect(),
            fault_end_s: trial.reverted_ms.map(|m| m as f64 / 1000.0),
            detected_s: trial.detected_ms.map(|m| m as f64 / 1000.0),
            healed_s: trial.healed_ms.map(|m| m as f64 / 1000.0),
        }
    }
}

/// Everything one scorecard run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub config: ConfigSummary,
    pub started_ms: u64,
    pub finished_ms: u64,
    pub trials: Vec<Trial>,
    pub timelines: Vec<Timeline>,
    pub learning: Vec<Trial>,
    pub baselines: Vec<BaselineRun>,
    pub fault_free: FaultFree,
    pub undecodable: u64,
}

fn ms_values(values: impl Iterator<Item = Option<u64>>) -> Vec<f64> {
    values.flatten().map(|v| v as f64).collect()
}

fn seconds(s: Option<Summary>) -> [String; 3] {
    match s {
        Some(s) => [s.p50, s.p95, s.max].map(|v| format!("{:.2}", v / 1000.0)),
        None => ["–".into(), "–".into(), "–".into()],
    }
}

/// A target and whether it was met.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub what: String,
    pub goal: String,
    pub measured: String,
    pub met: Option<bool>,
}

impl Report {
    pub fn of_fault(&self, fault: FaultKind) -> Vec<&Trial> {
        self.trials.iter().filter(|t| t.fault == fault).collect()
    }

    pub fn faults(&self) -> Vec<FaultKind> {
        let mut out: Vec<FaultKind> = Vec::new();
        for t in &self.trials {
            if !out.contains(&t.fault) {
                out.push(t.fault);
            }
        }
        out
    }

    pub fn summary(&self, fault: FaultKind, what: fn(&Trial) -> Option<u64>) -> Option<Summary> {
        Summary::of(&ms_values(self.of_fault(fault).into_iter().map(what)))
    }

    pub fn false_actions_per_hour(&self) -> f64 {
        per_hour(self.fault_free.actions, self.fault_free.period_s)
    }

    pub fn targets(&self) -> Vec<Target> {
        let crash = self.summary(FaultKind::Crash, |t| t.healed_ms);
        let hang = self.summary(FaultKind::Hang, |t| t.first_action_ms);
        let fmt = |s: Option<Summary>, f: fn(&Summary) -> f64| {
            s.map(|s| format!("{:.2} s", f(&s) / 1000.0))
                .unwrap_or_else(|| "not measured".into())
        };
        vec![
            Target {
                what: "crash healed (container healthy again), p50".into(),
                goal: "< 1.5 s".into(),
                measured: fmt(crash, |s| s.p50),
                met: crash.map(|s| s.p50 < 1500.0),
            },
            Target {
                what: "hang detected and restart issued, p50".into(),
                goal: "< 3 s".into(),
                measured: fmt(hang, |s| s.p50),
                met: hang.map(|s| s.p50 < 3000.0),
            },
            Target {
                what: "hang detected and restart issued, p95".into(),
                goal: "< 5 s".into(),
                measured: fmt(hang, |s| s.p95),
                met: hang.map(|s| s.p95 < 5000.0),
            },
            Target {
                what: "false actions per hour under normal load".into(),
                goal: "0".into(),
                measured: format!(
                    "{:.1} ({} actions in {:.0} s)",
                    self.false_actions_per_hour(),
                    self.fault_free.actions,
                    self.fault_free.period_s
                ),
                met: Some(self.fault_free.actions == 0),
            },
        ]
    }

    /// The markdown report; `plots` are the PNG files written beside it (relative paths).
    pub fn markdown(&self, plots: &BTreeMap<String, String>) -> String {
        let mut md = String::new();
        let c = &self.config;
        let _ = writeln!(md, "# Resilience scorecard\n");
        let _ = writeln!(
            md,
            "Written by `immune-scorecard` against the real deployment (the compose stack: NATS, \
             the five stages, the gateway/orders/payments/auth demo services and the load \
             generator at {} requests/s). Faults were injected through chaos into `{}`, {} time(s) \
             each, each lasting at most {:.0} s before chaos reverts it; fault-free period {:.0} s. \
             Run took {:.1} min. Times are seconds from the injection.\n",
            c.load_rps,
            c.target,
            c.runs,
            c.fault_duration_s,
            c.fault_free_s,
            (self.finished_ms.saturating_sub(self.started_ms)) as f64 / 60000.0
        );

        let _ = writeln!(md, "## Targets\n");
        let _ = writeln!(md, "| target | goal | measured | met |\n|---|---|---|---|");
        for t in self.targets() {
            let met = match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(md, "| {} | {} | {} | {} |", t.what, t.goal, t.measured, met);
        }

        let _ = writeln!(md, "\n## Per fault\n");
        let _ = writeln!(
            md,
            "TTD: injection to the first anomaly. Act: injection to the first action requested. \
             MTTR: injection to healthy again: the first `/health` 200 after the last failed \
             probe, when it was answered (polled every 100 ms from the host), or, for faults that leave `/health` \
             passing (latency, errors, memory, CPU), the incident recovered (the anomaly \
             cleared). Healed by immune: recovered before chaos reverted the \
             fault. First action right: the first action succeeded and the incident recovered \
             with no other action. Other actions: actions of other incidents while the \
             trial ran (another service's, or a stopgap lifted for an earlier incident).\n"
        );
        let _ = writeln!(
            md,
            "| fault | n | detected | TTD p50 / p95 / max | Act p50 / p95 / max | MTTR p50 / p95 / max | healed by immune | actions (first) | first action right | other actions in the window |\n|---|---:|---:|---|---|---|---:|---|---:|---:|"
        );
        for fault in self.faults() {
            let trials = self.of_fault(fault);
            let n = trials.len();
            let detected = trials.iter().filter(|t| t.detected_ms.is_some()).count();
            let ttd = seconds(self.summary(fault, |t| t.detected_ms));
            let act = seconds(self.summary(fault, |t| t.first_action_ms));
            let mttr = seconds(self.summary(fault, |t| t.healed_ms));
            let by_immune = trials
                .iter()
                .filter(|t| t.healed_by == HealedBy::Immune)
                .count();
            let mut firsts: BTreeMap<&str, usize> = BTreeMap::new();
            for t in &trials {
                *firsts
                    .entry(t.actions.first().map(String::as_str).unwrap_or("none"))
                    .or_default() += 1;
            }
            let firsts: Vec<String> = firsts.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
            let total: usize = trials.iter().map(|t| t.actions.len()).sum();
            let right = trials
                .iter()
                .filter(|t| t.first_action_right == Some(true))
                .count();
            let acted = trials
                .iter()
                .filter(|t| t.first_action_right.is_some())
                .count();
            let collateral: usize = trials.iter().map(|t| t.collateral_actions).sum();
            let _ = writeln!(
                md,
                "| {fault} | {n} | {detected}/{n} | {} | {} | {} | {by_immune}/{n} | {total} ({}) | {right}/{acted} | {collateral} |",
                ttd.join(" / "),
                act.join(" / "),
                mttr.join(" / "),
                firsts.join(", "),
            );
        }
        if let Some(p) = plots.get("mttr") {
            let _ = writeln!(md, "\n![MTTR and TTD per fault]({p})\n");
        }

        let _ = writeln!(md, "\n## immune next to the usual alternatives\n");
        let _ = writeln!(
            md,
            "Same run, same demo image: extra demo containers outside immune. Crash: Docker's \
             own `--restart always`. Hang: a Docker HEALTHCHECK with the common defaults \
             (interval 30 s, timeout 30 s, retries 3) and a poll-and-restart loop like \
             `autoheal` (inspect every 5 s, restart unhealthy with a 10 s stop timeout).\n"
        );
        let _ = writeln!(
            md,
            "| fault | who | n | restart issued p50 / p95 / max | healthy again p50 / p95 / max | failures |\n|---|---|---:|---|---|---|"
        );
        for (fault, name) in [(FaultKind::Crash, "crash"), (FaultKind::Hang, "hang")] {
            let trials = self.of_fault(fault);
            if !trials.is_empty() {
                let _ = writeln!(
                    md,
                    "| {name} | immune | {} | {} | {} | {} |",
                    trials.len(),
                    seconds(self.summary(fault, |t| t.first_action_ms)).join(" / "),
                    seconds(self.summary(fault, |t| t.healed_ms)).join(" / "),
                    trials.iter().filter(|t| t.healed_ms.is_none()).count()
                );
            }
            for b in self.baselines.iter().filter(|b| b.fault == name) {
                let _ = writeln!(
                    md,
                    "| {name} | {} | {} | {} | {} | {} |",
                    b.name,
                    b.healed_ms.len(),
                    seconds(Summary::of(&b.restart_issued_ms)).join(" / "),
                    seconds(Summary::of(&b.healed_ms)).join(" / "),
                    if b.failures.is_empty() {
                        "0".to_string()
                    } else {
                        b.failures.join("; ")
                    }
                );
            }
        }
        if self.baselines.is_empty() {
            let _ = writeln!(md, "\n(baselines skipped in this run)");
        }
        if let Some(p) = plots.get("baselines") {
            let _ = writeln!(md, "\n![immune next to the alternatives]({p})\n");
        }

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

        let _ = writeln!(md, "\n## Learning curve\n");
        let _ = writeln!(
            md,
            "`{}` injected {} times in a row into `{}` while the decider learns (values per \
             signature and action in `immune_decider_values`).\n",
            c.learning_fault,
            self.learning.len(),
            c.target
        );
        let _ = writeln!(md, "| injection | TTD | first action | actions | healed by | time to heal |\n|---:|---:|---|---|---|---:|");
        for (i, t) in self.learning.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                i + 1,
                t.detected_ms
                    .map(|v| format!("{:.2}", v as f64 / 1000.0))
                    .unwrap_or("–".into()),
                t.actions.first().map(String::as_str).unwrap_or("none"),
                if t.actions.is_empty() {
                    "–".to_string()
                } else {
                    t.actions.join(" → ")
                },
                t.healed_by.as_str(),
                t.healed_ms
                    .map(|v| format!("{:.2}", v as f64 / 1000.0))
                    .unwrap_or("–".into()),
            );
        }
        if let Some(p) = plots.get("learning") {
            let _ = writeln!(md, "\n![learning curve]({p})\n");
        }

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

        if !self.timelines.is_empty() {
            let _ = writeln!(md, "\n## One incident per fault\n");
            let _ = writeln!(
                md,
                "Upper panel: the metric that shows the fault (per snapshot of the target \
                 container) and `/health` probes (red ticks: failed). Lower panel: anomaly score \
                 (dots: firing, rings: cleared) against its threshold. Shaded: the fault in force \
                 (injection to chaos revert). Orange line: detected. Purple lines: actions. Green \
                 line: healthy again.\n"
            );
            for t in &self.timelines {
                if let Some(p) = plots.get(&format!("timeline_{}", t.fault)) {
                    let _ = writeln!(md, "### {}\n\n![{} timeline]({p})\n", t.fault, t.fault);
                }
            }
        }

        let _ = writeln!(md, "\n## Every injection\n");
        let _ = writeln!(md, "| fault | signature | TTD | act | MTTR | /health back | incident recovered | healed by | actions | first right | reverted |\n|---|---|---:|---:|---:|---:|---:|---|---|---|---:|");
        let s = |v: Option<u64>| {
            v.map(|v| format!("{:.2}", v as f64 / 1000.0))
                .unwrap_or("–".into())
        };
        for t in self.trials.iter().chain(&self.learning) {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.fault,
                t.signature.as_deref().unwrap_or("–"),
                s(t.detected_ms),
                s(t.first_action_ms),
                s(t.healed_ms),
                s(t.healthy_ms),
                s(t.recovered_ms),
                t.healed_by.as_str(),
                if t.actions.is_empty() {
                    "–".to_string()
                } else {
                    t.actions.join(" → ")
                },
                match t.first_action_right {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "–",
                },
                s(t.reverted_ms),
            );
        }
        if self.undecodable > 0 {
            let _ = writeln!(
                md,
                "\n{} messages on the bus could not be decoded.",
                self.undecodable
            );
        }
        md
    }
}

/// Reads a `report.json` written by [`write`], to render it again.
pub fn read(path: &Path) -> Result<Report, ScorecardError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ScorecardError::Config(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text)
        .map_err(|e| ScorecardError::Config(format!("{}: {e}", path.display())))
}

/// Writes `<out>/scorecard.md`, `<out>/scorecard/*.png` and `<out>/scorecard/report.json`.
pub fn write(report: &Report, out: &Path, font: &Path) -> Result<(), ScorecardError> {
    let dir = out.join("scorecard");
    std::fs::create_dir_all(&dir)
        .map_err(|e| ScorecardError::Write(format!("{}: {e}", dir.display())))?;
    let plots = crate::plot::all(report, &dir, font)?;
    let plots: BTreeMap<String, String> = plots
        .into_iter()
        .map(|(k, file)| (k, format!("scorecard/{file}")))
        .collect();
    let md = report.markdown(&plots);
    let path = out.join("scorecard.md");
    std::fs::write(&path, md)
        .map_err(|e| ScorecardError::Write(format!("{}: {e}", path.display())))?;
    let json =
        serde_json::to_string_pretty(report).map_err(|e| ScorecardError::Write(e.to_string()))?;
    std::fs::write(dir.join("report.json"), json)
        .map_err(|e| ScorecardError::Write(format!("report.json: {e}")))?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::measure::StageLatency;

    pub(crate) fn trial(
        fault: FaultKind,
        detected: u64,
        act: u64,
        healed: u64,
        actions: &[&str],
    ) -> Trial {
        Trial {
            fault,
            run_id: format!("{fault}-{healed}"),
            service: "payments".into(),
            instance: "immune-scorecard_payments_1".into(),
            injected_ms: 1_000_000,
            detected_ms: Some(detected),
            signature: Some("crashed".into()),
            first_action_ms: Some(act),
            healed_ms: Some(healed),
            healed_by: HealedBy::Immune,
            healthy_ms: Some(healed),
            recovered_ms: Some(healed + 500),
            actions: actions.iter().map(|a| a.to_string()).collect(),
            first_action_right: Some(actions.len() == 1),
            collateral_actions: 0,
            latency: Some(StageLatency {
                detector_ms: 40.0,
                decider_ms: 5.0,
                executor_ms: 3.0,
            }),
            reverted_ms: Some(30_000),
        }
    }

    pub(crate) fn report(false_actions: usize) -> Report {
        let crash = [900, 1_000, 1_400].map(|h| trial(FaultKind::Crash, 100, 120, h, &["restart"]));
        let hang = [2_800, 2_900, 5_200]
            .map(|a| trial(FaultKind::Hang, a - 50, a, a + 1_000, &["restart"]));
        let learning = vec![
            trial(
                FaultKind::Errors,
                3_000,
                3_100,
                40_000,
                &["circuit_breaker", "restart"],
            ),
            trial(FaultKind::Errors, 3_000, 3_100, 5_000, &["restart"]),
        ];
        let timeline = Timeline {
            fault: FaultKind::Crash,
            feature: "health_ok".into(),
            metric: vec![(-5.0, 1.0), (-1.0, 1.0), (0.5, 0.0), (1.5, 1.0), (8.0, 1.0)],
            anomalies: vec![(0.1, 1.0, 0.5, true), (1.6, 0.0, 0.5, false)],
            actions: vec![(0.12, "restart".into())],
            health: vec![(0.3, false), (0.6, false), (1.0, true)],
            fault_end_s: Some(30.0),
            detected_s: Some(0.1),
            healed_s: Some(1.0),
        };
        Report {
            config: ConfigSummary {
                runs: 3,
                faults: vec!["crash".into(), "hang".into()],
                target: "payments".into(),
                fault_duration_s: 30.0,
                fault_free_s: 600.0,
                load_rps: 20,
                learning_fault: "errors".into(),
                learning_runs: 2,
            },
            started_ms: 0,
            finished_ms: 600_000,
            trials: crash.into_iter().chain(hang).collect(),
            timelines: vec![timeline],
            learning,
            baselines: vec![
                BaselineRun {
                    name: "restart always".into(),
                    fault: "crash".into(),
                    restart_issued_ms: vec![],
                    healed_ms: vec![400.0, 450.0, 500.0],
                    failures: vec![],
                },
                BaselineRun {
                    name: "healthcheck".into(),
                    fault: "hang".into(),
                    restart_issued_ms: vec![95_000.0, 150_000.0],
                    healed_ms: vec![96_000.0, 151_000.0],
                    failures: vec![],
                },
            ],
            fault_free: FaultFree {
                period_s: 600.0,
                incidents: false_actions,
                actions: false_actions,
                anomalies: false_actions,
                bus_events: 6_000,
                stages: vec![StageFigures {
                    stage: "detector".into(),
                    received_per_s: 8.0,
                    published_per_s: 0.0,
                    cpu_cores: 0.01,
                    memory_mib: 12.0,
                }],
            },
            undecodable: 0,
        }
    }

    #[test]
    fn a_written_report_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let original = report(1);
        let font = Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf");
        write(&original, dir.path(), font).expect("written");
        let again = read(&dir.path().join("scorecard").join("report.json")).expect("read back");
        assert_eq!(again, original);
        assert!(dir.path().join("scorecard.md").is_file());
    }

    #[test]
    fn targets_are_judged_on_the_measured_percentiles() {
        let targets = report(0).targets();
        let met: Vec<Option<bool>> = targets.iter().map(|t| t.met).collect();
        // crash p50 1.0 s < 1.5; hang act p50 2.9 s < 3; p95 5.2 s is not < 5; no false actions.
        assert_eq!(met, vec![Some(true), Some(true), Some(false), Some(true)]);
        assert_eq!(targets[2].measured, "5.20 s");
        let noisy = report(1);
        assert_eq!(noisy.targets()[3].met, Some(false));
        assert_eq!(noisy.false_actions_per_hour(), 6.0);
    }

    #[test]
    fn markdown_has_every_section_and_the_figures() {
        let plots = BTreeMap::from([("mttr".to_string(), "scorecard/mttr.png".to_string())]);
        let md = report(0).markdown(&plots);
        for section in [
            "## Targets",
            "## Per fault",
            "## immune next to the usual alternatives",
            "## False alarms under normal load",
            "## Learning curve",
            "## Pipeline",
            "## Every injection",
        ] {
            assert!(md.contains(section), "missing {section}:\n{md}");
        }
        assert!(md.contains("| crash | 3 | 3/3 | 0.10 / 0.10 / 0.10 | 0.12 / 0.12 / 0.12 | 1.00 / 1.40 / 1.40 | 3/3 | 3 (restart ×3) | 3/3 | 0 |"), "{md}");
        assert!(
            md.contains("| crash | restart always | 3 | – / – / – | 0.45 / 0.50 / 0.50 | 0 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 1 | 3.00 | circuit_breaker | circuit_breaker → restart | immune | 40.00 |"
            ),
            "{md}"
        );
        assert!(md.contains("| end to end | 8 | 48 | 48 | 48 |"), "{md}");
        assert!(
            md.contains("![MTTR and TTD per fault](scorecard/mttr.png)"),
            "{md}"
        );
    }
}
