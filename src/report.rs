//! Reports of the regression stage: the reference's printed table, `results.json`, Markdown
//! tables (per detector and side by side) and PNG plots.
//!
//! Files written by `rf-regress` in a run folder `{outf}/{net}_{dataset}/`:
//!
//! ```text
//! results.json                                 ResultsFile: every (detector, validation, OOD set) result
//! results.md                                   Markdown tables of results.json, side by side when both
//!                                              detectors are there
//! regression/{detector}_{validation}/{ood}.npz test-set outputs of the chosen detector (TestScores:
//!                                              confidence_in, confidence_ood, logit_in, logit_ood)
//! plots/roc_{validation}_{ood}.png             ROC curves of the detectors with test outputs
//! plots/hist_{detector}_{validation}_{ood}.png detector log-odds histogram, in-distribution vs OOD
//! plots/auroc_vs_iteration.png                 flow training's validation AUROC per layer
//! ```
//!
//! Plot text needs a TrueType font: `$RESFLOW_FONT`, else DejaVu Sans or Liberation Sans from the
//! usual system folders (`scripts/setup.sh` installs Debian's `fonts-dejavu-core`).
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ndarray::Array1;
use ndarray_npy::{NpzReader, NpzWriter};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artefacts::{self, AurocHistory, DetectorKind};
use crate::detector::{Counts, DetectorResult, EpsTrial, TestScores, Validation};
use crate::error::{Error, Result};
use crate::metrics;

/// Width and height of every plot, in pixels.
pub const PLOT_SIZE: (u32, u32) = (800, 600);

/// Metric names in the reference's print order.
pub const METRIC_NAMES: [&str; 5] = ["TNR", "AUROC", "DTACC", "AUIN", "AUOUT"];

/// One (detector, validation, OOD set) result as stored in `results.json` (metrics as fractions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The detector.
    pub detector: DetectorKind,
    /// How it was validated.
    pub validation: Validation,
    /// The OOD set.
    pub ood: String,
    /// The chosen magnitude.
    pub eps: f64,
    /// The regression's C.
    pub c: f64,
    /// Coefficients, one per layer.
    pub coef: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
    /// TNR at TPR 95%.
    pub tnr_at_tpr95: f64,
    /// AUROC.
    pub auroc: f64,
    /// Detection accuracy.
    pub dtacc: f64,
    /// AUPR with in-distribution positive.
    pub auin: f64,
    /// AUPR with OOD positive.
    pub auout: f64,
    /// Every magnitude tried.
    pub trials: Vec<EpsTrial>,
    /// Row counts.
    pub counts: Counts,
}

impl ResultRecord {
    /// The record of a detector result.
    pub fn from_result(r: &DetectorResult) -> Self {
        ResultRecord {
            detector: r.detector,
            validation: r.validation,
            ood: r.ood.clone(),
            eps: r.eps,
            c: r.c,
            coef: r.coef.clone(),
            intercept: r.intercept,
            tnr_at_tpr95: r.metrics.tnr_at_tpr95,
            auroc: r.metrics.auroc,
            dtacc: r.metrics.dtacc,
            auin: r.metrics.auin,
            auout: r.metrics.auout,
            trials: r.trials.clone(),
            counts: r.counts,
        }
    }

    /// The metrics in print order (fractions).
    pub fn metrics(&self) -> [f64; 5] {
        [
            self.tnr_at_tpr95,
            self.auroc,
            self.dtacc,
            self.auin,
            self.auout,
        ]
    }
}

/// The contents of `results.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    /// Network name.
    pub net: String,
    /// In-distribution set.
    pub dataset: String,
    /// All results, sorted by detector, validation, OOD set.
    pub results: Vec<ResultRecord>,
}

impl ResultsFile {
    /// Replaces the records with the same (detector, validation, OOD set) as a new one, adds the
    /// others, and keeps the list sorted.
    pub fn merge(&mut self, new: &[ResultRecord]) {
        self.results.retain(|r| {
            !new.iter()
                .any(|n| n.detector == r.detector && n.validation == r.validation && n.ood == r.ood)
        });
        self.results.extend_from_slice(new);
        self.results.sort_by(|a, b| {
            (a.detector, a.validation.name(), &a.ood).cmp(&(
                b.detector,
                b.validation.name(),
                &b.ood,
            ))
        });
    }
}

/// `{run}/results.json`.
pub fn results_path(run: &Path) -> PathBuf {
    run.join("results.json")
}

/// Reads `results.json`; `None` if it does not exist.
pub fn read_results(path: &Path) -> Result<Option<ResultsFile>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::format(path, format!("{e}; expected rf-regress's results.json"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `results` as pretty JSON (atomically).
pub fn write_results(path: &Path, results: &ResultsFile) -> Result<()> {
    let json =
        serde_json::to_string_pretty(results).map_err(|e| Error::format(path, e.to_string()))?;
    write_text(path, &json)
}

/// Writes `text` to `path` atomically.
pub fn write_text(path: &Path, text: &str) -> Result<()> {
    crate::io::write_buffered(path, |w| {
        w.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
    })
}

/// The reference's printed block for one in-distribution set: per OOD set the five metrics in
/// percent (`{:6.2}`) and the chosen magnitude, preceded by the detector and validation used.
pub fn format_table(dataset: &str, records: &[ResultRecord]) -> String {
    let mut s = String::new();
    let mut last: Option<(DetectorKind, Validation)> = None;
    for r in records {
        if last != Some((r.detector, r.validation)) {
            let _ = writeln!(
                s,
                "{} detector, {}",
                r.detector.label(),
                r.validation.label()
            );
            let _ = writeln!(s, "in_distribution: {dataset}==========");
            last = Some((r.detector, r.validation));
        }
        let _ = writeln!(s, "out_distribution: {}", r.ood);
        for name in METRIC_NAMES {
            let _ = write!(s, " {name:6}");
        }
        for (i, v) in r.metrics().iter().enumerate() {
            let sep = if i == 0 { "\n" } else { " " };
            let _ = write!(s, "{sep}{:6.2}", 100.0 * v);
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "Input noise: {}", artefacts::eps_name(r.eps));
        let _ = writeln!(s);
    }
    s
}

fn pct(v: f64) -> String {
    format!("{:.2}", 100.0 * v)
}

/// Markdown tables: one per (detector, validation), then a side-by-side comparison per
/// validation for the OOD sets that both detectors have.
pub fn markdown(results: &ResultsFile) -> String {
    let mut s = format!(
        "# OOD detection: {} on {}\n\nMetrics in percent on the test split; eps is the chosen \
         input pre-processing magnitude.\n",
        results.net, results.dataset
    );
    let mut groups: Vec<(DetectorKind, Validation)> = Vec::new();
    for r in &results.results {
        if !groups.contains(&(r.detector, r.validation)) {
            groups.push((r.detector, r.validation));
        }
    }
    for &(d, v) in &groups {
        let _ = write!(
            s,
            "\n## {} ({})\n\n| OOD set | TNR at TPR 95% | AUROC | DTACC | AUIN | AUOUT | eps | C |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
            d.label(),
            v.label()
        );
        for r in results
            .results
            .iter()
            .filter(|r| r.detector == d && r.validation == v)
        {
            let m = r.metrics().map(pct);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {:.4} |",
                r.ood,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                artefacts::eps_name(r.eps),
                r.c
            );
        }
    }
    for v in [Validation::Ood, Validation::Fgsm] {
        let table = comparison_markdown(&results.results, v);
        if !table.is_empty() {
            let _ = write!(
                s,
                "\n## Mahalanobis vs residual flow ({})\n\n{table}",
                v.label()
            );
        }
    }
    s
}

/// Pairs of (Mahalanobis, residual flow) records with validation `v`, per OOD set both have.
fn pairs(records: &[ResultRecord], v: Validation) -> Vec<(&ResultRecord, &ResultRecord)> {
    let find = |d, ood: &str| {
        records
            .iter()
            .find(|r| r.detector == d && r.validation == v && r.ood == ood)
    };
    records
        .iter()
        .filter(|r| r.detector == DetectorKind::Mahalanobis && r.validation == v)
        .filter_map(|m| find(DetectorKind::Resflow, &m.ood).map(|f| (m, f)))
        .collect()
}

/// Side-by-side Markdown table "Mahalanobis / residual flow" per OOD set (empty string if no OOD
/// set has both detectors with validation `v`).
pub fn comparison_markdown(records: &[ResultRecord], v: Validation) -> String {
    let pairs = pairs(records, v);
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = String::from("| OOD set |");
    for name in METRIC_NAMES {
        let _ = write!(s, " {name} (M / RF) |");
    }
    s.push_str(" eps (M / RF) |\n|---|");
    s.push_str(&"---:|".repeat(METRIC_NAMES.len() + 1));
    s.push('\n');
    for (m, f) in pairs {
        let _ = write!(s, "| {} |", m.ood);
        for (a, b) in m.metrics().iter().zip(f.metrics()) {
            let _ = write!(s, " {} / {} |", pct(*a), pct(b));
        }
        let _ = writeln!(
            s,
            " {} / {} |",
            artefacts::eps_name(m.eps),
            artefacts::eps_name(f.eps)
        );
    }
    s
}

/// Side-by-side plain-text table for the terminal (empty if no OOD set has both detectors).
pub fn comparison_text(dataset: &str, records: &[ResultRecord], v: Validation) -> String {
    let pairs = pairs(records, v);
    if pairs.is_empty() {
        return String::new();
    }
    let mut s = format!(
        "in-distribution: {dataset} ({}); Mahalanobis / residual flow, percent\n{:<18}",
        v.label(),
        "OOD set"
    );
    for name in METRIC_NAMES {
        let _ = write!(s, " {name:>15}");
    }
    let _ = writeln!(s, " {:>17}", "eps");
    for (m, f) in pairs {
        let _ = write!(s, "{:<18}", m.ood);
        for (a, b) in m.metrics().iter().zip(f.metrics()) {
            let _ = write!(s, " {:>15}", format!("{} / {}", pct(*a), pct(b)));
        }
        let _ = writeln!(
            s,
            " {:>17}",
            format!(
                "{} / {}",
                artefacts::eps_name(m.eps),
                artefacts::eps_name(f.eps)
            )
        );
    }
    s
}

/// `{run}/regression/{detector}_{validation}/{ood}.npz`.
pub fn test_scores_path(
    run: &Path,
    detector: DetectorKind,
    validation: Validation,
    ood: &str,
) -> PathBuf {
    run.join("regression")
        .join(format!("{}_{}", detector.name(), validation.name()))
        .join(format!("{ood}.npz"))
}

const TEST_ARRAYS: [&str; 4] = ["confidence_in", "confidence_ood", "logit_in", "logit_ood"];

/// Writes the test outputs as `.npz` (atomically).
pub fn write_test_scores(path: &Path, t: &TestScores) -> Result<()> {
    crate::io::write_buffered(path, |w| {
        let err = |e: ndarray_npy::WriteNpzError| Error::format(path, e.to_string());
        let mut npz = NpzWriter::new(w);
        for (name, v) in TEST_ARRAYS.iter().zip([
            &t.confidence_in,
            &t.confidence_ood,
            &t.logit_in,
            &t.logit_ood,
        ]) {
            npz.add_array(*name, &Array1::from(v.clone()))
                .map_err(err)?;
        }
        npz.finish().map_err(err)?;
        Ok(())
    })
}

/// Reads test outputs written by [`write_test_scores`].
pub fn read_test_scores(path: &Path) -> Result<TestScores> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(std::io::BufReader::new(f))
        .map_err(|e| Error::format(path, format!("not an .npz archive: {e}")))?;
    let mut arrays = Vec::new();
    for name in TEST_ARRAYS {
        let a: Array1<f64> = npz
            .by_name(name)
            .map_err(|e| Error::format(path, format!("`{name}`: {e}; expected f64 [N]")))?;
        arrays.push(a.to_vec());
    }
    let mut it = arrays.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(TestScores {
        confidence_in: next(),
        confidence_ood: next(),
        logit_in: next(),
        logit_ood: next(),
    })
}

/// Paths of TrueType fonts tried for plot text after `$RESFLOW_FONT`.
pub const FONT_CANDIDATES: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Loads and registers the plot font once (family `sans-serif`); errors say how to get one.
pub fn ensure_font() -> Result<()> {
    static FONT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let r = FONT.get_or_init(|| {
        let mut candidates: Vec<PathBuf> = Vec::new();
        if let Some(p) = std::env::var_os("RESFLOW_FONT") {
            candidates.push(PathBuf::from(p));
        }
        candidates.extend(FONT_CANDIDATES.iter().map(PathBuf::from));
        for path in &candidates {
            if let Ok(bytes) = std::fs::read(path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(path.clone());
                }
            }
        }
        Err(format!(
            "no TrueType font for plot text: set RESFLOW_FONT to a .ttf file or install one \
             (Debian: apt-get install fonts-dejavu-core; scripts/setup.sh does); tried {}",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    });
    r.as_ref()
        .map(|_| ())
        .map_err(|m| Error::Invalid(m.clone()))
}

/// Draws into an RGB buffer of [`PLOT_SIZE`] with `draw`, then writes it as PNG (atomically).
fn render_png(
    path: &Path,
    draw: impl FnOnce(
        &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    ) -> std::result::Result<(), String>,
) -> Result<()> {
    ensure_font()?;
    let (w, h) = PLOT_SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        draw(&root).map_err(|m| Error::format(path, format!("plot: {m}")))?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    crate::io::write_buffered(path, |out| {
        use image::ImageEncoder;
        image::codecs::png::PngEncoder::new(out)
            .write_image(&buf, w, h, image::ExtendedColorType::Rgb8)
            .map_err(|e| Error::format(path, format!("PNG encoding: {e}")))
    })
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::format(path, format!("plot: {e}"))
}

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// Colours of the series, in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The ROC curve `(FPR, TPR)` points of confidences (in-distribution positive), from the
/// reference's sweep, downsampled to at most about 2000 points.
pub fn roc_points(confidence_in: &[f64], confidence_ood: &[f64]) -> Result<Vec<(f64, f64)>> {
    let sw = metrics::sweep(confidence_in, confidence_ood)?;
    let (nk, nn) = (sw.tp[0] as f64, sw.fp[0] as f64);
    let step = sw.tp.len().div_ceil(2000).max(1);
    let mut pts: Vec<(f64, f64)> = sw
        .tp
        .iter()
        .zip(&sw.fp)
        .step_by(step)
        .map(|(&t, &f)| (f as f64 / nn, t as f64 / nk))
        .collect();
    pts.push((0.0, 0.0));
    pts.insert(0, (1.0, 1.0));
    Ok(pts)
}

/// ROC curves of several detectors (`(label, test outputs)`) on one OOD set.
pub fn plot_roc(path: &Path, title: &str, curves: &[(String, &TestScores)]) -> Result<()> {
    let mut series = Vec::new();
    for (label, t) in curves {
        let auroc = metrics::compute(&t.confidence_in, &t.confidence_ood)?.auroc;
        series.push((
            format!("{label} (AUROC {:.2}%)", 100.0 * auroc),
            roc_points(&t.confidence_in, &t.confidence_ood)?,
        ));
    }
    render_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("False positive rate (OOD accepted)")
            .y_desc("True positive rate (in-distribution accepted)")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(s)?;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                ShapeStyle::from(&RGBColor(150, 150, 150)),
            ))
            .map_err(s)?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(s)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(s)
    })
}

/// Bin counts of `values` over `[lo, hi]` in `bins` equal bins, as fractions of `values.len()`.
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> Vec<f64> {
    let mut counts = vec![0.0; bins];
    if values.is_empty() || bins == 0 {
        return counts;
    }
    let width = (hi - lo) / bins as f64;
    for &v in values {
        let b = if width > 0.0 {
            (((v - lo) / width).floor().max(0.0) as usize).min(bins - 1)
        } else {
            0
        };
        counts[b] += 1.0;
    }
    counts.iter_mut().for_each(|c| *c /= values.len() as f64);
    counts
}

/// Overlaid histograms of a detector score, in-distribution vs OOD (fractions per bin).
pub fn plot_histogram(
    path: &Path,
    title: &str,
    x_label: &str,
    in_dist: &[f64],
    ood: &[f64],
) -> Result<()> {
    const BINS: usize = 50;
    let finite = || in_dist.iter().chain(ood).copied().filter(|v| v.is_finite());
    let lo = finite().fold(f64::INFINITY, f64::min);
    let hi = finite().fold(f64::NEG_INFINITY, f64::max);
    if !lo.is_finite() || !hi.is_finite() {
        return Err(Error::format(path, "histogram: no finite scores"));
    }
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, hi + 0.5)
    };
    let h_in = histogram(in_dist, lo, hi, BINS);
    let h_ood = histogram(ood, lo, hi, BINS);
    let top = h_in.iter().chain(&h_ood).fold(0.0f64, |a, &b| a.max(b)) * 1.1 + 1e-9;
    let width = (hi - lo) / BINS as f64;
    render_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(lo..hi, 0f64..top)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc("Fraction of samples")
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(s)?;
        for (i, (label, h, n)) in [
            ("in-distribution", &h_in, in_dist.len()),
            ("OOD", &h_ood, ood.len()),
        ]
        .into_iter()
        .enumerate()
        {
            let c = PALETTE[i];
            chart
                .draw_series(h.iter().enumerate().map(|(b, &f)| {
                    let x0 = lo + b as f64 * width;
                    Rectangle::new([(x0, 0.0), (x0 + width, f)], c.mix(0.45).filled())
                }))
                .map_err(s)?
                .label(format!("{label} ({n})"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.mix(0.45).filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()
            .map_err(s)
    })
}

/// One layer's curve for [`plot_auroc_history`].
#[derive(Debug, Clone, PartialEq)]
pub struct LayerCurve {
    /// Layer index.
    pub layer: usize,
    /// The flow's monitoring history.
    pub history: AurocHistory,
    /// The Mahalanobis AUROC of that layer (drawn as a flat dashed line), if known.
    pub mahalanobis: Option<f64>,
}

/// Validation AUROC vs training iteration, one line per layer; the Mahalanobis AUROC of each
/// layer as a flat dashed line of the same colour (like the paper's figure).
pub fn plot_auroc_history(path: &Path, title: &str, layers: &[LayerCurve]) -> Result<()> {
    let max_iter = layers
        .iter()
        .flat_map(|l| l.history.iteration.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let values = layers
        .iter()
        .flat_map(|l| l.history.auroc.iter().copied().chain(l.mahalanobis));
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        return Err(Error::format(path, "AUROC history: no values"));
    }
    let pad = ((hi - lo) * 0.1).max(0.01);
    let (y0, y1) = ((lo - pad).max(0.0) * 100.0, (hi + pad).min(1.0) * 100.0);
    render_png(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, ("sans-serif", 24))
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..max_iter, y0..y1)
            .map_err(s)?;
        chart
            .configure_mesh()
            .x_desc("Training iteration")
            .y_desc("Validation AUROC (%)")
            .x_label_formatter(&|v| format!("{v:.0}"))
            .label_style(("sans-serif", 15))
            .draw()
            .map_err(s)?;
        for (i, l) in layers.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = l
                .history
                .iteration
                .iter()
                .zip(&l.history.auroc)
                .map(|(&it, &a)| (it as f64, 100.0 * a))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(s)?
                .label(format!("layer {} residual flow", l.layer))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            if let Some(m) = l.mahalanobis {
                chart
                    .draw_series(DashedLineSeries::new(
                        vec![(0.0, 100.0 * m), (max_iter, 100.0 * m)],
                        8,
                        5,
                        c.stroke_width(1),
                    ))
                    .map_err(s)?
                    .label(format!("layer {} Mahalanobis", l.layer))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                    });
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .draw()
            .map_err(s)
    })
}

/// What [`regress_dataset`] did for one in-distribution set.
#[derive(Debug, Clone)]
pub struct RegressOutcome {
    /// The new records (one per OOD set), in OOD-set order.
    pub records: Vec<ResultRecord>,
    /// `results.json` after merging them.
    pub results: ResultsFile,
    /// Plot files written.
    pub plots: Vec<PathBuf>,
    /// Problems that did not stop the run (plots that could not be drawn).
    pub warnings: Vec<String>,
}

/// The OOD sets with score files for `detector` in `run`, or `requested` (checked to exist).
pub fn ood_sets(run: &Path, detector: DetectorKind, requested: &[String]) -> Result<Vec<String>> {
    let found = artefacts::list_ood_sets(run, detector)?;
    if requested.is_empty() {
        if found.is_empty() {
            return Err(Error::format(
                run.join(detector.name()),
                format!(
                    "no OOD score folders for the {} detector; run {} first",
                    detector.label(),
                    match detector {
                        DetectorKind::Mahalanobis => "rf-mahalanobis",
                        DetectorKind::Resflow => "rf-score",
                    }
                ),
            ));
        }
        return Ok(found);
    }
    for r in requested {
        if !found.contains(r) {
            return Err(Error::format(
                run.join(detector.name()).join(r),
                format!(
                    "no score files for OOD set `{r}`; found: {}",
                    if found.is_empty() {
                        "none".to_string()
                    } else {
                        found.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(requested.to_vec())
}

/// The whole regression stage for one run folder: evaluates `detector` on each OOD set
/// ([`ood_sets`]), stores the test outputs, merges `results.json`, rewrites `results.md` and,
/// if `plots`, draws the plots of the module doc.
pub fn regress_dataset(
    run: &Path,
    net: &str,
    dataset: &str,
    detector: DetectorKind,
    validation: Validation,
    requested: &[String],
    plots: bool,
) -> Result<RegressOutcome> {
    let oods = ood_sets(run, detector, requested)?;
    let mut records = Vec::new();
    let mut results_by_ood = Vec::new();
    for ood in &oods {
        let r = crate::detector::evaluate_run(run, detector, ood, validation)?;
        records.push(ResultRecord::from_result(&r));
        results_by_ood.push(r);
    }
    // Outputs only once every OOD set has succeeded.
    for r in &results_by_ood {
        write_test_scores(
            &test_scores_path(run, detector, validation, &r.ood),
            &r.test,
        )?;
    }
    let path = results_path(run);
    let mut results = read_results(&path)?.unwrap_or(ResultsFile {
        net: net.to_string(),
        dataset: dataset.to_string(),
        results: Vec::new(),
    });
    results.merge(&records);
    write_results(&path, &results)?;
    write_text(&run.join("results.md"), &markdown(&results))?;
    let mut written = Vec::new();
    let mut warnings = Vec::new();
    if plots {
        fn attempt(
            written: &mut Vec<PathBuf>,
            warnings: &mut Vec<String>,
            p: PathBuf,
            r: Result<()>,
        ) {
            match r {
                Ok(()) => written.push(p),
                Err(e) => warnings.push(format!("plot not written: {e}")),
            }
        }
        let dir = run.join("plots");
        for r in &results_by_ood {
            let mut stored = Vec::new();
            for d in [DetectorKind::Mahalanobis, DetectorKind::Resflow] {
                let p = test_scores_path(run, d, validation, &r.ood);
                if d == detector {
                    stored.push((d.label().to_string(), r.test.clone()));
                } else if p.exists() {
                    match read_test_scores(&p) {
                        Ok(t) => stored.push((d.label().to_string(), t)),
                        Err(e) => warnings.push(format!("ignored: {e}")),
                    }
                }
            }
            let curves: Vec<(String, &TestScores)> =
                stored.iter().map(|(l, t)| (l.clone(), t)).collect();
            let p = dir.join(format!("roc_{}_{}.png", validation.name(), r.ood));
            let title = format!("{net} {dataset} vs {}, {}", r.ood, validation.label());
            attempt(
                &mut written,
                &mut warnings,
                p.clone(),
                plot_roc(&p, &title, &curves),
            );
            let p = dir.join(format!(
                "hist_{}_{}_{}.png",
                detector.name(),
                validation.name(),
                r.ood
            ));
            let title = format!("{}: {dataset} vs {} (test set)", detector.label(), r.ood);
            attempt(
                &mut written,
                &mut warnings,
                p.clone(),
                plot_histogram(
                    &p,
                    &title,
                    "Detector score -log-odds(OOD) (higher = in-distribution)",
                    &r.test.logit_in,
                    &r.test.logit_ood,
                ),
            );
        }
        match history_curves(run) {
            Ok(curves) if !curves.is_empty() => {
                let p = dir.join("auroc_vs_iteration.png");
                let title = format!(
                    "{net} {dataset}: validation AUROC vs {}",
                    curves[0].history.ood
                );
                attempt(
                    &mut written,
                    &mut warnings,
                    p.clone(),
                    plot_auroc_history(&p, &title, &curves),
                );
            }
            Ok(_) => {}
            Err(e) => warnings.push(format!("training history ignored: {e}")),
        }
    }
    Ok(RegressOutcome {
        records,
        results,
        plots: written,
        warnings,
    })
}

/// Rows per kind that the flow training's AUROC monitoring uses (SPEC 5): the first 2000
/// in-distribution test rows and the first 2000 OOD rows.
pub const MONITOR_ROWS: usize = 2000;

/// The flow training histories found in `run` (`history/layer_{l}.json`, consecutive layers
/// from 0), each with the Mahalanobis AUROC of its layer on the same monitoring rows (the first
/// [`MONITOR_ROWS`] of each kind) of the monitored OOD set at eps 0, when that score file exists.
pub fn history_curves(run: &Path) -> Result<Vec<LayerCurve>> {
    let mut curves = Vec::new();
    for layer in 0.. {
        let p = artefacts::history_path(run, layer);
        if !p.exists() {
            break;
        }
        let history = artefacts::read_history(&p)?;
        let m = artefacts::mahalanobis_path(run, &history.ood, 0.0);
        let mahalanobis = if m.exists() {
            let f = artefacts::read_scores(&m, false)?;
            if layer < f.scores.ncols() && f.n_out > 0 && f.n_out < f.n_rows() {
                let col = f.scores.column(layer);
                let out: Vec<f64> = col
                    .iter()
                    .take(f.n_out.min(MONITOR_ROWS))
                    .copied()
                    .collect();
                let inn: Vec<f64> = col
                    .iter()
                    .skip(f.n_out)
                    .take(MONITOR_ROWS)
                    .copied()
                    .collect();
                Some(metrics::compute(&inn, &out)?.auroc)
            } else {
                None
            }
        } else {
            None
        };
        curves.push(LayerCurve {
            layer,
            history,
            mahalanobis,
        });
    }
    Ok(curves)
}
