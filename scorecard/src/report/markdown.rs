//! The markdown report: the introduction and the targets, then each section in order, the
//! PNG plots linked beside the figures they show.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;

impl Report {
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

        self.targets_table(&mut md);
        self.per_fault_table(&mut md, plots);
        self.alternatives_table(&mut md, plots);
        self.false_alarms(&mut md);
        self.learning_curve(&mut md, plots);
        self.pipeline(&mut md);
        self.timelines_section(&mut md, plots);
        self.injections_table(&mut md);
        if self.undecodable > 0 {
            let _ = writeln!(
                md,
                "\n{} messages on the bus could not be decoded.",
                self.undecodable
            );
        }
        md
    }

    /// The targets and whether each was met.
    pub(super) fn targets_table(&self, md: &mut String) {
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
    }

    /// One incident per fault, as its timeline plot.
    pub(super) fn timelines_section(&self, md: &mut String, plots: &BTreeMap<String, String>) {
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
    }
}
