//! The scorecard as data: a [`Report`] holds everything one run measured (the trials, the
//! learning runs, the baselines, the fault-free period) and answers the questions the
//! rendering asks of it. The rest is apart, one concept a file:
//!
//! - `timeline`: the story of one injection, for its plot;
//! - `targets`: the targets and whether they were met;
//! - `markdown`: the document, section by section, with the PNG plots beside it;
//! - `tables`: the per-fault tables (per fault, the alternatives, every injection);
//! - `fault_free`: the false alarms and the pipeline figures of the fault-free period;
//! - `learning`: the learning curve;
//! - `files`: reading and writing `report.json`, `scorecard.md` and the plots.
//!
//! Rendering is pure and tested.

mod fault_free;
mod files;
mod learning;
mod markdown;
mod tables;
mod targets;
mod timeline;

use immune_nats::FaultKind;
use serde::{Deserialize, Serialize};

use crate::baseline::BaselineRun;
use crate::measure::Trial;
use crate::stats::{per_hour, Summary};
use crate::Config;

pub use files::{read, write};
pub use targets::Target;
pub use timeline::{feature_of, Timeline};

/// The configuration the figures were measured with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub runs: usize,
    pub faults: Vec<String>,
    pub target: String,
    pub fault_duration_s: f64,
    pub fault_free_s: f64,
    pub load_rps: u32,
    /// The learning curves' faults, comma-separated.
    #[serde(alias = "learning_fault")]
    pub learning_faults: String,
    pub learning_runs: usize,
}

impl ConfigSummary {
    pub fn of(c: &Config) -> ConfigSummary {
        ConfigSummary {
            runs: c.runs,
            faults: c.faults.iter().map(|f| f.to_string()).collect(),
            target: c.target.clone(),
            fault_duration_s: c.fault_duration.as_secs_f64(),
            fault_free_s: c.fault_free.as_secs_f64(),
            load_rps: c.load_rps,
            learning_faults: c
                .learning_faults
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join(","),
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
}

#[cfg(test)]
pub(crate) mod tests;
