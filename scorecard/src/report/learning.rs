//! The learning curves: each fault injected again and again while the decider learns which
//! action heals it, one table per fault, one row per injection.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Report, Trial};

impl Report {
    /// The learning runs of each fault, in the order they ran.
    pub fn learning_by_fault(&self) -> Vec<(String, Vec<&Trial>)> {
        let mut curves: Vec<(String, Vec<&Trial>)> = Vec::new();
        for t in &self.learning {
            let fault = t.fault.as_str();
            match curves.iter_mut().find(|(f, _)| f == fault) {
                Some((_, runs)) => runs.push(t),
                None => curves.push((fault.to_string(), vec![t])),
            }
        }
        curves
    }

    /// The repeated injections, one table (and plot) per fault.
    pub(super) fn learning_curve(&self, md: &mut String, plots: &BTreeMap<String, String>) {
        if self.learning.is_empty() {
            return;
        }
        let _ = writeln!(md, "\n## Learning curves\n");
        let _ = writeln!(
            md,
            "Each fault injected {} times in a row while the decider learns (values per \
             signature and action in `immune_decider_values`, kept from the trials above).",
            self.config.learning_runs
        );
        for (fault, runs) in self.learning_by_fault() {
            let into = runs.first().map(|t| t.service.as_str()).unwrap_or("?");
            let _ = writeln!(md, "\n### `{fault}` into `{into}`\n");
            let _ = writeln!(md, "| injection | TTD | first action | actions | healed by | time to heal |\n|---:|---:|---|---|---|---:|");
            for (i, t) in runs.iter().enumerate() {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {} |",
                    i + 1,
                    seconds(t.detected_ms),
                    t.actions.first().map(String::as_str).unwrap_or("none"),
                    if t.actions.is_empty() {
                        "–".to_string()
                    } else {
                        t.actions.join(" → ")
                    },
                    t.healed_by.as_str(),
                    seconds(t.healed_ms),
                );
            }
            if let Some(p) = plots.get(&format!("learning_{fault}")) {
                let _ = writeln!(md, "\n![learning curve of {fault}]({p})\n");
            }
        }
    }
}

fn seconds(ms: Option<u64>) -> String {
    ms.map(|v| format!("{:.2}", v as f64 / 1000.0))
        .unwrap_or("–".into())
}
