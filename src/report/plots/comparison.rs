//! The detector comparison plot: per OOD set one point per detector with its interval, the legend
//! beside the chart.
use std::path::Path;

use plotters::prelude::*;

use super::{draw_chart, drawing_error, render_png, Frame, PALETTE, PLOT_SIZE};
use crate::error::Result;

/// One detector's points of [`plot_comparison`]: its label and, per OOD set, the value with its
/// interval `(value, low, high)` in percent (`None` where it has no result).
pub type ComparisonSeries = (String, Vec<Option<(f64, f64, f64)>>);

/// Width of the legend beside the comparison chart, in pixels.
const COMPARISON_LEGEND_WIDTH: u32 = 150;

/// The marker of series `j` in the legend, as in the chart: a circle for even `j`, a triangle for
/// odd, so that neighbours differ in shape as well as colour.
fn marker<'a, DB: DrawingBackend + 'a, C: Clone + 'a>(
    j: usize,
    at: C,
    size: i32,
) -> DynElement<'a, DB, C> {
    let c = PALETTE[j % PALETTE.len()].filled();
    if j.is_multiple_of(2) {
        (EmptyElement::at(at) + Circle::new((0, 0), size, c)).into_dyn()
    } else {
        (EmptyElement::at(at) + TriangleMarker::new((0, 0), size + 1, c)).into_dyn()
    }
}

/// The detector comparison of one metric: per OOD set (x axis) one point per detector with its
/// interval as a vertical bar, detectors side by side in table order, the legend beside the chart
/// (one line per detector, readable with sixteen detectors).
pub fn plot_comparison(
    path: &Path,
    title: &str,
    y_desc: &str,
    oods: &[String],
    series: &[ComparisonSeries],
) -> Result<()> {
    let lowest = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().map(|p| p.1))
        .fold(100.0f64, f64::min);
    let y_min = (lowest.floor() - 5.0).clamp(0.0, 95.0);
    let frame = Frame {
        // Drawn over the whole image, legend included (below).
        title: "",
        x: -0.5..oods.len() as f64 - 0.5,
        y: y_min..101.0,
        x_desc: "OOD set (group)",
        y_desc,
        y_label_area: 55,
        integer_x: true,
        x_names: oods,
        legend: None,
        legend_font: 14,
    };
    let n = series.len().max(1) as f64;
    // Smaller points when many detectors share a set's slot.
    let size = if series.len() > 8 { 3 } else { 4 };
    render_png(path, |root| {
        let root = root
            .titled(title, ("sans-serif", 22))
            .map_err(drawing_error)?;
        let (chart_area, legend_area) =
            root.split_horizontally(PLOT_SIZE.0 - COMPARISON_LEGEND_WIDTH);
        draw_chart(&chart_area, frame, |chart| {
            for (j, (_, points)) in series.iter().enumerate() {
                let c = PALETTE[j % PALETTE.len()];
                let offset = 0.8 * ((j as f64 + 0.5) / n - 0.5);
                let located: Vec<(f64, (f64, f64, f64))> = points
                    .iter()
                    .enumerate()
                    .filter_map(|(i, p)| p.map(|p| (i as f64 + offset, p)))
                    .collect();
                for &(x, (_, lo, hi)) in &located {
                    chart
                        .draw_series(LineSeries::new(vec![(x, lo), (x, hi)], c.stroke_width(2)))
                        .map_err(drawing_error)?;
                }
                let points = located.iter().map(|&(x, (v, _, _))| (x, v));
                if j.is_multiple_of(2) {
                    chart.draw_series(points.map(|p| Circle::new(p, size, c.filled())))
                } else {
                    chart.draw_series(points.map(|p| TriangleMarker::new(p, size + 1, c.filled())))
                }
                .map_err(drawing_error)?;
            }
            Ok(())
        })?;
        let line = 20;
        let top = 30;
        for (j, (label, _)) in series.iter().enumerate() {
            let y = top + line * j as i32;
            legend_area
                .draw(&marker(j, (12, y), 4))
                .map_err(drawing_error)?;
            legend_area
                .draw(&Text::new(label.as_str(), (24, y - 8), ("sans-serif", 14)))
                .map_err(drawing_error)?;
        }
        Ok(())
    })
}
