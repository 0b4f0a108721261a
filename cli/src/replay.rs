//! `immune replay`: the detector's replay ([`immune_detector::replay`]) over a stored range
//! of the metrics stream, with a detector configuration of the operator's choosing. Nothing is
//! published and no live target is touched: it answers "which anomalies would this
//! configuration have raised?".

use std::path::Path;

use immune_detector::replay::{self, Range, ReplayReport};
use immune_nats::ServiceName;
use immune_runtime::{config, Bus};
use serde::Serialize;

use crate::CliError;

/// The detector configuration: the file given (or `IMMUNE_CONFIG`-style defaults and
/// `IMMUNE_DETECTOR__*` overrides), validated as the detector validates it.
pub fn detector_config(path: Option<&Path>) -> Result<immune_detector::Config, CliError> {
    let config: immune_detector::Config = config::load(immune_detector::STAGE, path)
        .map_err(|e| CliError::Usage(format!("detector config: {e}")))?;
    config
        .validate()
        .map_err(|e| CliError::Usage(format!("detector config: {e}")))?;
    Ok(config)
}

/// One finding as `--json` writes it.
#[derive(Debug, Clone, Serialize)]
pub struct FindingLine<'a> {
    pub correlation_id: &'a str,
    pub anomaly: &'a immune_nats::Anomaly,
}

pub async fn run(
    bus: &Bus,
    config: &immune_detector::Config,
    from_seq: Option<u64>,
    to_seq: Option<u64>,
    service: Option<ServiceName>,
) -> Result<ReplayReport, CliError> {
    let range = Range {
        from_seq,
        to_seq,
        service,
    };
    replay::run(bus, config, &range)
        .await
        .map_err(|e| CliError::Stream {
            stream: immune_nats::streams::METRICS.name.to_string(),
            reason: e.to_string(),
        })
}

/// The summary line.
pub fn summary(report: &ReplayReport) -> String {
    format!(
        "replayed {} snapshots ({} undecodable), {} findings, fits {:?}",
        report.snapshots,
        report.undecodable,
        report.findings.len(),
        report.fits
    )
}
