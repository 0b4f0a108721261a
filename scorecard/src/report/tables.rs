//! The per-fault tables of the report: each fault's detection, action and repair times, immune
//! next to the usual alternatives (Docker's restart policy, a healthcheck with autoheal), and
//! every injection one row.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use immune_nats::FaultKind;

use super::Report;
use crate::measure::HealedBy;
use crate::stats::Summary;

/// p50, p95 and max in seconds, or dashes when nothing was measured.
fn seconds(s: Option<Summary>) -> [String; 3] {
    match s {
        Some(s) => [s.p50, s.p95, s.max].map(|v| format!("{:.2}", v / 1000.0)),
        None => ["–".into(), "–".into(), "–".into()],
    }
}

impl Report {
    /// Detection, action and repair times of each fault.
    pub(super) fn per_fault_table(&self, md: &mut String, plots: &BTreeMap<String, String>) {
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
    }

    /// immune next to the alternatives, on crash and hang.
    pub(super) fn alternatives_table(&self, md: &mut String, plots: &BTreeMap<String, String>) {
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
    }

    /// Every injection, one row.
    pub(super) fn injections_table(&self, md: &mut String) {
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
    }
}
