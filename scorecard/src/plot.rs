//! PNG plots of a report with plotters' bitmap backend. Text is drawn with ab_glyph from a
//! TTF file (Debian's `fonts-dejavu-core`), so no system font library is needed.

use std::collections::BTreeMap;
use std::error::Error;
use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::measure::Trial;
use crate::report::{Report, Timeline};
use crate::stats::Summary;
use crate::ScorecardError;

type Plot = Result<(), Box<dyn Error>>;

const FONT: &str = "sans-serif";
const IMMUNE: RGBColor = RGBColor(31, 119, 180);
const ALTERNATIVE: RGBColor = RGBColor(150, 150, 150);
const DETECTED: RGBColor = RGBColor(230, 140, 0);
const ACTION: RGBColor = RGBColor(128, 0, 160);
const HEALED: RGBColor = RGBColor(0, 150, 60);
const FAULT: RGBColor = RGBColor(220, 40, 40);

fn register(font: &Path) -> Result<(), ScorecardError> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes: &'static [u8] = Box::leak(font_bytes(font)?.into_boxed_slice());
            for style in [FontStyle::Normal, FontStyle::Bold] {
                plotters::style::register_font(FONT, style, bytes)
                    .map_err(|_| format!("font {}: not a usable TTF", font.display()))?;
            }
            Ok(())
        })
        .clone()
        .map_err(ScorecardError::Write)
}

fn font_bytes(font: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(font).map_err(|e| {
        format!(
            "font {}: {e} (install fonts-dejavu-core, or pass --font FILE.ttf)",
            font.display()
        )
    })
}

/// Draws every plot into `dir`; returns plot name → file name.
pub fn all(
    report: &Report,
    dir: &Path,
    font: &Path,
) -> Result<BTreeMap<String, String>, ScorecardError> {
    register(font)?;
    let mut written = BTreeMap::new();
    let mut draw = |name: String, plot: &dyn Fn(&Path) -> Plot| -> Result<(), ScorecardError> {
        let file = format!("{name}.png");
        plot(&dir.join(&file)).map_err(|e| ScorecardError::Write(format!("{file}: {e}")))?;
        written.insert(name, file);
        Ok(())
    };
    if !report.trials.is_empty() {
        draw("mttr".into(), &|p| per_fault(report, p))?;
    }
    if !report.baselines.is_empty() {
        draw("baselines".into(), &|p| baselines(report, p))?;
    }
    for (fault, runs) in report.learning_by_fault() {
        draw(format!("learning_{fault}"), &|p| learning(&fault, &runs, p))?;
    }
    for t in &report.timelines {
        draw(format!("timeline_{}", t.fault), &|p| timeline(t, p))?;
    }
    Ok(written)
}

/// One bar: its label, colour and figures.
type Bar = (String, RGBColor, Option<Summary>);
/// Bars side by side under one group label (a fault).
type Group = (String, Vec<Bar>);

/// Bars at p50 with a whisker to the max (tick at p95), one pair of bars per group.
fn bars(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    caption: &str,
    y_desc: &str,
    groups: &[Group],
) -> Plot {
    let slots: Vec<Bar> = groups
        .iter()
        .flat_map(|(_, bars)| bars.iter().cloned())
        .collect();
    let labels: Vec<String> = groups
        .iter()
        .flat_map(|(g, bars)| bars.iter().map(move |(b, _, _)| format!("{g}: {b}")))
        .collect();
    let top = slots
        .iter()
        .filter_map(|(_, _, s)| s.map(|s| s.max))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 22))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((0..slots.len().max(2) - 1).into_segmented(), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc(y_desc)
        .x_labels(slots.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .label_style((FONT, 14))
        .draw()?;
    for (i, (_, color, summary)) in slots.iter().enumerate() {
        let Some(s) = summary else { continue };
        chart.draw_series(
            Histogram::vertical(&chart)
                .style(color.filled())
                .margin(14)
                .data(std::iter::once((i, s.p50))),
        )?;
        chart.draw_series(std::iter::once(ErrorBar::new_vertical(
            SegmentValue::CenterOf(i),
            s.p50,
            s.p95,
            s.max,
            BLACK.stroke_width(2),
            14,
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            format!("p50 {:.2} / max {:.2}", s.p50, s.max),
            (SegmentValue::Exact(i), s.max + top * 0.06),
            (FONT, 13).into_font().color(&BLACK),
        )))?;
    }
    Ok(())
}

fn per_fault(report: &Report, path: &Path) -> Plot {
    let root = BitMapBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let groups: Vec<Group> = report
        .faults()
        .into_iter()
        .map(|f| {
            let secs = |s: Option<Summary>| {
                s.map(|s| Summary {
                    p50: s.p50 / 1e3,
                    p95: s.p95 / 1e3,
                    max: s.max / 1e3,
                    n: s.n,
                })
            };
            (
                f.as_str().replace('_', " "),
                vec![
                    (
                        "TTD".to_string(),
                        DETECTED,
                        secs(report.summary(f, |t| t.detected_ms)),
                    ),
                    (
                        "MTTR".to_string(),
                        IMMUNE,
                        secs(report.summary(f, |t| t.healed_ms)),
                    ),
                ],
            )
        })
        .collect();
    bars(
        &root,
        "Time to detect and time to healthy again per fault (bar p50, whisker p95 tick to max)",
        "seconds after injection",
        &groups,
    )?;
    root.present()?;
    Ok(())
}

fn baselines(report: &Report, path: &Path) -> Plot {
    let root = BitMapBackend::new(path, (1000, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let secs = |v: &[f64]| Summary::of(&v.iter().map(|x| x / 1e3).collect::<Vec<_>>());
    let mut groups = Vec::new();
    for (fault, kind) in [
        ("crash", immune_nats::FaultKind::Crash),
        ("hang", immune_nats::FaultKind::Hang),
    ] {
        let mut bars = Vec::new();
        let immune: Vec<f64> = report
            .of_fault(kind)
            .iter()
            .filter_map(|t| t.healed_ms.map(|v| v as f64))
            .collect();
        if !immune.is_empty() {
            bars.push(("immune".to_string(), IMMUNE, secs(&immune)));
        }
        for b in report.baselines.iter().filter(|b| b.fault == fault) {
            let who = if fault == "crash" {
                "restart always"
            } else {
                "healthcheck+autoheal"
            };
            bars.push((who.to_string(), ALTERNATIVE, secs(&b.healed_ms)));
        }
        if !bars.is_empty() {
            groups.push((fault.to_string(), bars));
        }
    }
    bars(
        &root,
        "Healthy again after the fault: immune and the usual alternatives",
        "seconds after injection",
        &groups,
    )?;
    root.present()?;
    Ok(())
}

fn learning(fault: &str, runs: &[&Trial], path: &Path) -> Plot {
    let root = BitMapBackend::new(path, (1000, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64, bool, String)> = runs
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            Some((
                (i + 1) as f64,
                t.healed_ms? as f64 / 1e3,
                t.first_action_right == Some(true),
                t.actions.first().cloned().unwrap_or_else(|| "none".into()),
            ))
        })
        .collect();
    let top = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.2;
    let n = runs.len() as f64;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("Learning curve: time to heal over repeated {fault} injections"),
            (FONT, 22),
        )
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0.5..n + 0.5, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("injection")
        .y_desc("seconds to healthy again")
        .x_labels(runs.len() + 1)
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 0.01 {
                format!("{x:.0}")
            } else {
                String::new()
            }
        })
        .label_style((FONT, 14))
        .draw()?;
    chart.draw_series(LineSeries::new(
        points.iter().map(|p| (p.0, p.1)),
        IMMUNE.stroke_width(2),
    ))?;
    for (x, y, right, first) in &points {
        let color = if *right { HEALED } else { FAULT };
        chart.draw_series(std::iter::once(Circle::new((*x, *y), 6, color.filled())))?;
        chart.draw_series(std::iter::once(Text::new(
            first.clone(),
            (*x, *y + top * 0.04),
            (FONT, 13).into_font().color(&BLACK),
        )))?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("first action right")
        .legend(|(x, y)| Circle::new((x + 10, y), 6, HEALED.filled()));
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("first action not enough")
        .legend(|(x, y)| Circle::new((x + 10, y), 6, FAULT.filled()));
    chart
        .configure_series_labels()
        .label_font((FONT, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

/// Vertical marker lines over the whole height of a chart.
fn markers<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    t: &Timeline,
    y: (f64, f64),
) -> Result<(), Box<dyn Error>>
where
    DB::ErrorType: 'static,
{
    let line = |x: f64, c: RGBColor| PathElement::new(vec![(x, y.0), (x, y.1)], c.stroke_width(2));
    if let Some(d) = t.detected_s {
        chart.draw_series(std::iter::once(line(d, DETECTED)))?;
    }
    for (a, _) in &t.actions {
        chart.draw_series(std::iter::once(line(*a, ACTION)))?;
    }
    if let Some(h) = t.healed_s {
        chart.draw_series(std::iter::once(line(h, HEALED)))?;
    }
    Ok(())
}

fn timeline(t: &Timeline, path: &Path) -> Plot {
    let root = BitMapBackend::new(path, (1100, 680)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "One {} incident: fault, detection, action, recovery",
            t.fault
        ),
        (FONT, 24),
    )?;
    let (upper, lower) = root.split_vertically(390);
    let end = [t.healed_s, t.fault_end_s, t.actions.last().map(|a| a.0)]
        .into_iter()
        .flatten()
        .fold(10.0f64, f64::max);
    let x = (-10.0f64, (end + 10.0).min(end * 1.3 + 10.0));
    let metric: Vec<(f64, f64)> = t
        .metric
        .iter()
        .copied()
        .filter(|p| p.0 >= x.0 && p.0 <= x.1)
        .collect();
    let top = metric.iter().map(|p| p.1).fold(0.0f64, f64::max).max(1.0) * 1.15;
    let fault_end = t.fault_end_s.unwrap_or(x.1).min(x.1);

    let mut chart = ChartBuilder::on(&upper)
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(x.0..x.1, 0.0..top)?;
    chart
        .configure_mesh()
        .y_desc(t.feature.as_str())
        .label_style((FONT, 14))
        .draw()?;
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (fault_end, top)],
            FAULT.mix(0.12).filled(),
        )))?
        .label("fault in force")
        .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 20, y + 6)], FAULT.mix(0.25).filled()));
    chart
        .draw_series(LineSeries::new(
            metric.iter().copied(),
            IMMUNE.stroke_width(2),
        ))?
        .label(format!("{} (target container)", t.feature))
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], IMMUNE.stroke_width(2)));
    chart
        .draw_series(
            t.health
                .iter()
                .filter(|(s, ok)| !ok && *s >= x.0 && *s <= x.1)
                .map(|(s, _)| PathElement::new(vec![(*s, 0.0), (*s, top * 0.05)], FAULT)),
        )?
        .label("failed /health probe")
        .legend(|(x, y)| PathElement::new(vec![(x + 10, y - 6), (x + 10, y + 6)], FAULT));
    markers(&mut chart, t, (0.0, top))?;
    for (at, name) in &t.actions {
        chart.draw_series(std::iter::once(Text::new(
            name.clone(),
            (*at + 0.3, top * 0.93),
            (FONT, 14).into_font().color(&ACTION),
        )))?;
    }
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("detected")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], DETECTED.stroke_width(2)));
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("action requested")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], ACTION.stroke_width(2)));
    chart
        .draw_series(std::iter::empty::<PathElement<(f64, f64)>>())?
        .label("healthy again")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], HEALED.stroke_width(2)));
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;

    let score_top = t
        .anomalies
        .iter()
        .map(|a| a.1.max(a.2))
        .fold(1.0f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&lower)
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x.0..x.1, 0.0..score_top)?;
    chart
        .configure_mesh()
        .x_desc("seconds after injection")
        .y_desc("anomaly score")
        .label_style((FONT, 14))
        .draw()?;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (fault_end, score_top)],
        FAULT.mix(0.12).filled(),
    )))?;
    markers(&mut chart, t, (0.0, score_top))?;
    // The threshold as a step line between the anomaly events that carry it.
    let mut threshold: Vec<(f64, f64)> = Vec::new();
    for (at, _, th, _) in t.anomalies.iter().filter(|a| a.0 >= x.0 && a.0 <= x.1) {
        if let Some(&(_, last)) = threshold.last() {
            threshold.push((*at, last));
        }
        threshold.push((*at, *th));
    }
    if let Some(&(_, last)) = threshold.last() {
        threshold.push((x.1, last));
    }
    chart
        .draw_series(LineSeries::new(threshold, BLACK.stroke_width(2)))?
        .label("threshold")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.stroke_width(2)));
    chart
        .draw_series(
            t.anomalies
                .iter()
                .filter(|a| a.3 && a.0 >= x.0 && a.0 <= x.1)
                .map(|a| Circle::new((a.0, a.1), 7, DETECTED.filled())),
        )?
        .label("score when firing")
        .legend(|(x, y)| Circle::new((x + 10, y), 6, DETECTED.filled()));
    chart
        .draw_series(
            t.anomalies
                .iter()
                .filter(|a| !a.3 && a.0 >= x.0 && a.0 <= x.1)
                .map(|a| Circle::new((a.0, a.1), 7, HEALED.stroke_width(3))),
        )?
        .label("score when cleared")
        .legend(|(x, y)| Circle::new((x + 10, y), 6, HEALED.stroke_width(3)));
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEJAVU: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

    #[test]
    fn every_plot_is_a_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = crate::report::tests::report(0);
        let written = all(&report, dir.path(), Path::new(DEJAVU))
            .expect("plots drawn (is fonts-dejavu-core installed?)");
        let names: Vec<&str> = written.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            vec!["baselines", "learning_errors", "mttr", "timeline_crash"]
        );
        for file in written.values() {
            let bytes = std::fs::read(dir.path().join(file)).expect("plot file");
            assert!(
                bytes.starts_with(b"\x89PNG") && bytes.len() > 5_000,
                "{file}: not a drawn PNG"
            );
        }
    }

    #[test]
    fn a_missing_font_is_a_clear_error() {
        let err = font_bytes(Path::new("/nonexistent/font.ttf")).expect_err("no such file");
        assert!(
            err.contains("/nonexistent/font.ttf") && err.contains("--font"),
            "{err}"
        );
    }
}
