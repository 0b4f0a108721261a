//! The learning curve: one fault injected again and again while the decider learns which
//! action heals it, one row per injection.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Report;

impl Report {
    /// The repeated injections, in order.
    pub(super) fn learning_curve(&self, md: &mut String, plots: &BTreeMap<String, String>) {
        let c = &self.config;
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
    }
}
