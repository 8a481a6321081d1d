//! Text and Markdown tables of the results: the reference's printed block and side-by-side
//! comparisons of the detectors.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::data::OodGroup;
use crate::detect::{eps_name, DetectorKind};
use crate::fit::bootstrap::Interval;
use crate::fit::splits::IoSplitRule;
use crate::fit::Validation;
use crate::report::compare::{
    accuracy_line, group_mean_cell, grouped_sets, paired_markdown, set_label, table_rank,
};
use crate::report::plots::ComparisonSeries;
use crate::store::results::{
    ood_sets, ResultRecord, ResultsFile, ALL_METRIC_NAMES, OPENOOD_AUROC, OPENOOD_FPR95, PAPER_TNR,
};

/// Metric names in the reference's print order.
pub const METRIC_NAMES: [&str; 5] = ["TNR", "AUROC", "DTACC", "AUIN", "AUOUT"];

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
        let _ = writeln!(s, "Input noise: {}", eps_name(r.eps));
        let _ = writeln!(s);
    }
    s
}

/// A fraction in percent with two decimals.
pub(crate) fn pct(v: f64) -> String {
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
    if results.test_accuracy.is_some() {
        let _ = write!(s, "\nThe {}", accuracy_line(results));
    }
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
            let small = if r.counts.split == IoSplitRule::Proportional {
                " (small set: proportional split)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "| {}{small} | {} | {} | {} | {} | {} | {} | {:.4} |",
                r.ood,
                m[0],
                m[1],
                m[2],
                m[3],
                m[4],
                eps_name(r.eps),
                r.c
            );
        }
    }
    for v in [Validation::Ood, Validation::Fgsm] {
        let table = detector_comparison_markdown(results, v);
        if !table.is_empty() {
            let _ = write!(
                s,
                "\n## Detector comparison ({}; percent, 95% bootstrap interval in brackets)\n{table}",
                v.label()
            );
        }
        let paired = paired_markdown(results, v);
        if !paired.is_empty() {
            let _ = write!(s, "\n## Paired comparison ({})\n{paired}", v.label());
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
    if !results.warnings.is_empty() {
        s.push_str("\n## Warnings: figures that mean little\n\n");
        for w in &results.warnings {
            let _ = writeln!(s, "- {w}");
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
        let _ = writeln!(s, " {} / {} |", eps_name(m.eps), eps_name(f.eps));
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
            format!("{} / {}", eps_name(m.eps), eps_name(f.eps))
        );
    }
    s
}

/// Indices into [`ResultRecord::all_metrics`] of the detector comparison's tables: the paper's
/// TNR at TPR 95%, OpenOOD's FPR at 95% TPR and AUROC.
pub const COMPARED_METRICS: [usize; 3] = [PAPER_TNR, OPENOOD_FPR95, OPENOOD_AUROC];

/// `value [low, high]` in percent, or the value alone without an interval.
pub(crate) fn with_interval(value: f64, interval: Option<Interval>) -> String {
    match interval {
        Some(Interval(lo, hi)) => format!("{} [{}, {}]", pct(value), pct(lo), pct(hi)),
        None => pct(value),
    }
}

/// Metric `k` of [`ResultRecord::all_metrics`] of detector `d` on `ood` with validation `v`, as
/// `value [low, high]` in percent; `-` when there is no such result.
fn comparison_cell(
    records: &[ResultRecord],
    v: Validation,
    d: DetectorKind,
    ood: &str,
    k: usize,
) -> String {
    records
        .iter()
        .find(|r| r.validation == v && r.detector == d && r.ood == ood)
        .and_then(|r| r.all_metrics()[k])
        .map_or("-".to_string(), |(value, i)| with_interval(value, i))
}

/// The detectors with validation `v` in `records` (in [`DetectorKind::ALL`] order) and their OOD
/// sets: near, then far, then ungrouped (`groups`), in record order within each.
pub(crate) fn comparison_axes<'a>(
    records: &'a [ResultRecord],
    v: Validation,
    groups: &BTreeMap<String, OodGroup>,
) -> (Vec<DetectorKind>, Vec<&'a str>) {
    let mine: Vec<&ResultRecord> = records.iter().filter(|r| r.validation == v).collect();
    let detectors = DetectorKind::ALL
        .iter()
        .copied()
        .filter(|d| mine.iter().any(|r| r.detector == *d))
        .collect();
    let mut oods = ood_sets(records, v);
    // Stable: record order within a group; ungrouped sets last.
    oods.sort_by_key(|o| table_rank(groups, o));
    (detectors, oods)
}

/// The detector comparison with validation `v`: per metric of [`COMPARED_METRICS`] one Markdown
/// table, rows = OOD sets (with their group) and each group's mean (OpenOOD's convention, with its
/// interval for AUROC; `-` for a detector without a result for every set of the group), columns =
/// detectors, cells `value [95% interval]` in percent (`-` where a detector has no result for a
/// set). Empty when no record has validation `v`.
pub fn detector_comparison_markdown(results: &ResultsFile, v: Validation) -> String {
    let (records, groups) = (&results.results, &results.ood_groups);
    let (detectors, oods) = comparison_axes(records, v, groups);
    if detectors.is_empty() {
        return String::new();
    }
    let mut s = String::new();
    for k in COMPARED_METRICS {
        let _ = write!(s, "\n### {}\n\n| OOD set |", ALL_METRIC_NAMES[k]);
        for d in &detectors {
            let _ = write!(s, " {} |", d.label());
        }
        s.push_str("\n|---|");
        s.push_str(&"---:|".repeat(detectors.len()));
        s.push('\n');
        for ood in &oods {
            let _ = write!(s, "| {} |", set_label(groups, ood));
            for d in &detectors {
                let cell = comparison_cell(records, v, *d, ood, k);
                let _ = write!(s, " {cell} |");
            }
            s.push('\n');
        }
        for (g, sets) in grouped_sets(groups, &oods) {
            let _ = write!(s, "| **{} mean** ({}) |", g.name(), sets.join(", "));
            for &d in &detectors {
                let mean = group_mean_cell(results, v, d, (g, &sets), k);
                let _ = write!(s, " {mean} |");
            }
            s.push('\n');
        }
    }
    s
}

/// The points of [`crate::report::plots::plot_comparison`] for metric `k` of
/// [`ResultRecord::all_metrics`] with validation `v`: the OOD sets and, per detector, its values
/// and intervals in percent (a point interval where none was computed).
pub fn comparison_points(
    results: &ResultsFile,
    v: Validation,
    k: usize,
) -> (Vec<String>, Vec<ComparisonSeries>) {
    let records = &results.results;
    let (detectors, oods) = comparison_axes(records, v, &results.ood_groups);
    let series = detectors
        .iter()
        .map(|&d| {
            let points = oods
                .iter()
                .map(|ood| {
                    let r = records
                        .iter()
                        .find(|r| r.validation == v && r.detector == d && r.ood == *ood)?;
                    let (value, interval) = r.all_metrics()[k]?;
                    let Interval(lo, hi) = interval.unwrap_or(Interval(value, value));
                    Some((100.0 * value, 100.0 * lo, 100.0 * hi))
                })
                .collect();
            (d.label().to_string(), points)
        })
        .collect();
    let names = oods
        .iter()
        .map(|o| set_label(&results.ood_groups, o))
        .collect();
    (names, series)
}
