//! PNG plots of the results: ROC curves, score histograms, the flow training's validation AUROC
//! per iteration, and the detector comparison with intervals.
//!
//! Plot text needs a TrueType font: `$RESFLOW_FONT`, else DejaVu Sans or Liberation Sans from the
//! usual system folders (`scripts/setup.sh` installs Debian's `fonts-dejavu-core`).
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::fit::detector::TestScores;
use crate::fit::metrics;
use crate::store::history::AurocHistory;

mod comparison;
pub use comparison::{plot_comparison, ComparisonSeries};

/// Width and height of every plot, in pixels.
pub const PLOT_SIZE: (u32, u32) = (800, 600);

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
    // On failure: the first font path tried and what to do.
    static FONT: OnceLock<std::result::Result<PathBuf, (PathBuf, String)>> = OnceLock::new();
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
        Err((
            candidates[0].clone(),
            format!(
                "no TrueType font for plot text: set RESFLOW_FONT to a .ttf file or install one \
                 (Debian: apt-get install fonts-dejavu-core; scripts/setup.sh does); tried {}",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ))
    });
    r.as_ref()
        .map(|_| ())
        .map_err(|(path, m)| Error::missing(path, m.clone()))
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

/// A drawing error as text (plotters' errors are generic over the backend).
fn drawing_error<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The frame every plot shares: title, axes and where the legend goes.
struct Frame<'a> {
    title: &'a str,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
    x_desc: &'a str,
    y_desc: &'a str,
    /// Width of the y labels' area, in pixels.
    y_label_area: u32,
    /// Label the x axis with whole numbers.
    integer_x: bool,
    /// Names of the whole-number x positions (categories); empty for a numeric axis.
    x_names: &'a [String],
    /// Where the legend goes in the chart; `None`: no legend there (drawn beside it).
    legend: Option<SeriesLabelPosition>,
    legend_font: u32,
}

/// A chart drawn on by [`render_chart`].
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws `frame` (caption, mesh, axis labels), then the series of `draw`, then the legend, and
/// writes the PNG ([`render_png`]).
fn render_chart(
    path: &Path,
    frame: Frame<'_>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> std::result::Result<(), String>,
) -> Result<()> {
    render_png(path, |root| draw_chart(root, frame, draw))
}

/// [`render_chart`] on a part of the image: `frame`, the series of `draw`, the legend (none
/// without [`Frame::legend`]).
fn draw_chart(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    frame: Frame<'_>,
    draw: impl FnOnce(&mut Chart<'_, '_>) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let mut builder = ChartBuilder::on(area);
    if !frame.title.is_empty() {
        builder.caption(frame.title, ("sans-serif", 24));
    }
    let mut chart = builder
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(frame.y_label_area)
        .build_cartesian_2d(frame.x.clone(), frame.y.clone())
        .map_err(drawing_error)?;
    let whole = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(frame.x_desc)
        .y_desc(frame.y_desc)
        .label_style(("sans-serif", 15));
    let names = frame.x_names;
    let name = |v: &f64| {
        let i = v.round();
        if (v - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < names.len() {
            names[i as usize].clone()
        } else {
            String::new()
        }
    };
    if !names.is_empty() {
        mesh.x_label_formatter(&name).x_labels(names.len() * 2 + 1);
    } else if frame.integer_x {
        mesh.x_label_formatter(&whole);
    }
    mesh.draw().map_err(drawing_error)?;
    draw(&mut chart)?;
    let Some(position) = frame.legend else {
        return Ok(());
    };
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", frame.legend_font))
        .draw()
        .map_err(drawing_error)
}

/// Colours of the series, in order: matplotlib's ten, then six more that stay apart from them,
/// so that a comparison of sixteen detectors repeats no colour.
const PALETTE: [RGBColor; 16] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
    RGBColor(0, 128, 128),
    RGBColor(255, 215, 0),
    RGBColor(0, 0, 0),
    RGBColor(154, 205, 50),
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
    let frame = Frame {
        title,
        x: 0.0..1.0,
        y: 0.0..1.0001,
        x_desc: "False positive rate (OOD accepted)",
        y_desc: "True positive rate (in-distribution accepted)",
        y_label_area: 55,
        integer_x: false,
        x_names: &[],
        legend: Some(SeriesLabelPosition::LowerRight),
        legend_font: 16,
    };
    render_chart(path, frame, |chart| {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                6,
                4,
                ShapeStyle::from(&RGBColor(150, 150, 150)),
            ))
            .map_err(drawing_error)?;
        for (i, (label, pts)) in series.iter().enumerate() {
            let c = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
                .map_err(drawing_error)?
                .label(label.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
        }
        Ok(())
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
        return Err(Error::BadData(format!(
            "{}: histogram: no finite scores",
            path.display()
        )));
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
    let frame = Frame {
        title,
        x: lo..hi,
        y: 0.0..top,
        x_desc: x_label,
        y_desc: "Fraction of samples",
        y_label_area: 60,
        integer_x: false,
        x_names: &[],
        legend: Some(SeriesLabelPosition::UpperLeft),
        legend_font: 16,
    };
    render_chart(path, frame, |chart| {
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
                .map_err(drawing_error)?
                .label(format!("{label} ({n})"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], c.mix(0.45).filled())
                });
        }
        Ok(())
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
        return Err(Error::BadData(format!(
            "{}: AUROC history: no values",
            path.display()
        )));
    }
    let pad = ((hi - lo) * 0.1).max(0.01);
    let (y0, y1) = ((lo - pad).max(0.0) * 100.0, (hi + pad).min(1.0) * 100.0);
    let frame = Frame {
        title,
        x: 0.0..max_iter,
        y: y0..y1,
        x_desc: "Training iteration",
        y_desc: "Validation AUROC (%)",
        y_label_area: 55,
        integer_x: true,
        x_names: &[],
        legend: Some(SeriesLabelPosition::LowerRight),
        legend_font: 14,
    };
    render_chart(path, frame, |chart| {
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
                .map_err(drawing_error)?
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
                    .map_err(drawing_error)?
                    .label(format!("layer {} Mahalanobis", l.layer))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(1))
                    });
            }
        }
        Ok(())
    })
}
