//! A report on disk: `report.json` (the data, to render again), `scorecard.md` and the PNG
//! plots beside it.

use std::collections::BTreeMap;
use std::path::Path;

use super::Report;
use crate::ScorecardError;

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
