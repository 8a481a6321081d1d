//! The detector comparison of a run as `rf-regress` ends it: OOD sets in their near/far groups
//! with OpenOOD's per-group means (`docs/method.md#near-and-far-ood`), the classifier's test
//! accuracy, and the paired comparison of the best detector with each other one
//! (`docs/method.md#paired-comparison`). The terminal gets one compact AUROC table and the paired
//! differences; `results.md` gets every metric and the paired intervals.
use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::data::OodGroup;
use crate::detect::DetectorKind;
use crate::fit::Validation;
use crate::report::tables::{comparison_axes, pct, with_interval};
use crate::store::results::{PairedComparison, ResultRecord, ResultsFile, OPENOOD_AUROC};

/// The group of OOD set `ood` (`None`: ungrouped).
pub fn group_of(groups: &BTreeMap<String, OodGroup>, ood: &str) -> Option<OodGroup> {
    groups.get(ood).copied()
}

/// The place of `ood`'s group in the tables' order: near, far, then ungrouped sets.
pub fn table_rank(groups: &BTreeMap<String, OodGroup>, ood: &str) -> usize {
    group_of(groups, ood).map_or(OodGroup::ALL.len(), |g| g as usize)
}

/// `ood (near)`, `ood (far)` or `ood (ungrouped)`.
pub fn set_label(groups: &BTreeMap<String, OodGroup>, ood: &str) -> String {
    let group = group_of(groups, ood).map_or("ungrouped", OodGroup::name);
    format!("{ood} ({group})")
}

/// The sets of `oods` in each group, in group order; groups without a set are left out.
pub fn grouped_sets<'a>(
    groups: &BTreeMap<String, OodGroup>,
    oods: &[&'a str],
) -> Vec<(OodGroup, Vec<&'a str>)> {
    OodGroup::ALL
        .into_iter()
        .map(|g| {
            let sets = oods
                .iter()
                .copied()
                .filter(|o| group_of(groups, o) == Some(g))
                .collect::<Vec<_>>();
            (g, sets)
        })
        .filter(|(_, sets)| !sets.is_empty())
        .collect()
}

/// Metric `k` of [`ResultRecord::all_metrics`] of detector `d` on `ood` with validation `v`.
fn value(
    records: &[ResultRecord],
    v: Validation,
    d: DetectorKind,
    ood: &str,
    k: usize,
) -> Option<f64> {
    records
        .iter()
        .find(|r| r.validation == v && r.detector == d && r.ood == ood)
        .and_then(|r| r.all_metrics()[k])
        .map(|(value, _)| value)
}

/// OpenOOD's group mean: the mean of metric `k` of detector `d` over `sets` (fraction); `None`
/// when the detector lacks a result for one of them (a mean over fewer sets would not compare).
pub fn group_mean(
    records: &[ResultRecord],
    v: Validation,
    d: DetectorKind,
    sets: &[&str],
    k: usize,
) -> Option<f64> {
    if sets.is_empty() {
        return None;
    }
    let values = sets
        .iter()
        .map(|ood| value(records, v, d, ood, k))
        .collect::<Option<Vec<f64>>>()?;
    Some(values.iter().sum::<f64>() / values.len() as f64)
}

/// The cell of detector `d`'s group mean of metric `k` over `sets` (group `g`) with validation
/// `v`, in percent: with the interval of [`ResultsFile::group_means`] for AUROC where `rf-regress`
/// computed one for exactly these sets, else the point mean; `-` without a result for every set.
pub fn group_mean_cell(
    results: &ResultsFile,
    v: Validation,
    d: DetectorKind,
    (g, sets): (OodGroup, &[&str]),
    k: usize,
) -> String {
    let Some(mean) = group_mean(&results.results, v, d, sets, k) else {
        return "-".to_string();
    };
    let interval = (k == OPENOOD_AUROC)
        .then(|| {
            results
                .group_means
                .iter()
                .find(|m| m.detector == d && m.validation == v && m.group == g && m.sets == sets)
        })
        .flatten()
        .map(|m| m.interval);
    with_interval(mean, interval)
}

/// The header line of the classifier's in-distribution test accuracy (empty when unknown).
pub fn accuracy_line(results: &ResultsFile) -> String {
    results.test_accuracy.map_or(String::new(), |a| {
        format!(
            "classifier accuracy on the in-distribution test split: {}%\n",
            pct(a)
        )
    })
}

/// A column of the compact table: an OOD set or a group's mean.
enum Column<'a> {
    Set(&'a str),
    Mean(OodGroup, Vec<&'a str>),
}

/// The compact comparison for the terminal, one table for any number of detectors: rows =
/// detectors, columns = the OOD sets (near, then far, then ungrouped), each group followed by its
/// mean; cells OpenOOD's AUROC in percent with its 95% interval (means without one). Empty when no
/// record has validation `v`.
pub fn auroc_table_text(results: &ResultsFile, v: Validation) -> String {
    let groups = &results.ood_groups;
    let (detectors, oods) = comparison_axes(&results.results, v, groups);
    if detectors.is_empty() {
        return String::new();
    }
    let mut columns = Vec::new();
    for (g, sets) in grouped_sets(groups, &oods) {
        columns.extend(sets.iter().map(|s| Column::Set(s)));
        columns.push(Column::Mean(g, sets));
    }
    let ungrouped: Vec<&str> = oods
        .iter()
        .copied()
        .filter(|o| group_of(groups, o).is_none())
        .collect();
    columns.extend(ungrouped.iter().map(|s| Column::Set(s)));
    let records = &results.results;
    let cell = |d: DetectorKind, c: &Column| match c {
        Column::Set(ood) => records
            .iter()
            .find(|r| r.validation == v && r.detector == d && r.ood == *ood)
            .and_then(|r| r.all_metrics()[OPENOOD_AUROC])
            .map_or("-".to_string(), |(value, i)| {
                with_interval(value, i).replace(", ", ",")
            }),
        Column::Mean(g, sets) => {
            group_mean_cell(results, v, d, (*g, sets), OPENOOD_AUROC).replace(", ", ",")
        }
    };
    let header = |c: &Column| match c {
        Column::Set(ood) => set_label(groups, ood),
        Column::Mean(g, sets) => format!("{} mean ({})", g.name(), sets.len()),
    };
    let mut s = format!(
        "in-distribution: {} ({}); AUROC (OOD positive), percent, 95% bootstrap interval in \
         brackets; near / far means over their sets (OpenOOD's convention)\n{}",
        results.dataset,
        v.label(),
        accuracy_line(results)
    );
    write_grid(&mut s, &detectors, &columns, header, cell);
    if !ungrouped.is_empty() {
        let _ = writeln!(
            s,
            "ungrouped (in no mean): {}; rf-prepare records the groups (--ood near:SET, \
             far:SET; the registry's sets have defaults)",
            ungrouped.join(", ")
        );
    }
    s
}

/// Writes a table to `s`: a header line (`detector`, then `header` of each column), then one line
/// per detector (its label, then `cell` of each column), columns right-aligned to their widest
/// entry.
fn write_grid<C>(
    s: &mut String,
    detectors: &[DetectorKind],
    columns: &[C],
    header: impl Fn(&C) -> String,
    cell: impl Fn(DetectorKind, &C) -> String,
) {
    let label_width = detectors
        .iter()
        .map(|d| d.label().len())
        .max()
        .unwrap_or(0)
        .max(8);
    let widths: Vec<usize> = columns
        .iter()
        .map(|c| {
            detectors
                .iter()
                .map(|&d| cell(d, c).len())
                .chain([header(c).len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let _ = write!(s, "{:<label_width$}", "detector");
    for (c, w) in columns.iter().zip(&widths) {
        let _ = write!(s, "  {:>w$}", header(c));
    }
    s.push('\n');
    for &d in detectors {
        let _ = write!(s, "{:<label_width$}", d.label());
        for (c, w) in columns.iter().zip(&widths) {
            let _ = write!(s, "  {:>w$}", cell(d, c));
        }
        s.push('\n');
    }
}

/// The paired comparisons of `results` with validation `v`, their sets in the compact table's
/// order: near, then far, then ungrouped (by name within each).
fn paired_of(results: &ResultsFile, v: Validation) -> Vec<&PairedComparison> {
    let mut paired: Vec<&PairedComparison> = results
        .paired
        .iter()
        .filter(|p| p.validation == v)
        .collect();
    let rank = |ood: &str| table_rank(&results.ood_groups, ood);
    paired.sort_by(|a, b| (rank(&a.ood), &a.ood).cmp(&(rank(&b.ood), &b.ood)));
    paired
}

/// What a paired comparison's cell says of detector `d`: `best`, the difference `best - d` in
/// points with `*` where its interval excludes 0, `skipped`, or `-` (no result).
fn paired_cell(p: &PairedComparison, d: DetectorKind) -> String {
    if p.best == d {
        return "best".to_string();
    }
    if let Some(e) = p.others.iter().find(|e| e.detector == d) {
        let mark = if e.excludes_zero { "*" } else { "" };
        return format!("{}{mark}", pct(e.paired.difference));
    }
    if p.skipped.iter().any(|s| s.detector == d) {
        return "skipped".to_string();
    }
    "-".to_string()
}

/// The paired comparison for the terminal: rows = detectors, columns = OOD sets, cells the AUROC
/// points the detector is behind the best one (`*`: the 95% interval of the difference excludes
/// 0), then the reasons of detectors left out. Empty without paired comparisons for `v`.
pub fn paired_text(results: &ResultsFile, v: Validation) -> String {
    let paired = paired_of(results, v);
    let Some(first) = paired.first() else {
        return String::new();
    };
    let detectors: Vec<DetectorKind> = DetectorKind::ALL
        .iter()
        .copied()
        .filter(|&d| paired.iter().any(|p| p.detectors().contains(&d)))
        .collect();
    let mut s = format!(
        "\npaired comparison ({}): AUROC points behind the best detector of each set, on the same \
         {} bootstrap resamples of the same test rows; * = the 95% interval of the difference \
         excludes 0\n",
        v.label(),
        first.bootstrap.resamples,
    );
    let header = |p: &&PairedComparison| set_label(&results.ood_groups, &p.ood);
    write_grid(&mut s, &detectors, &paired, header, |d, p| {
        paired_cell(p, d)
    });
    for p in &paired {
        for k in &p.skipped {
            let _ = writeln!(
                s,
                "skipped {} on {}: {}",
                k.detector.label(),
                p.ood,
                k.reason
            );
        }
    }
    s
}

/// The paired comparison as Markdown for `results.md`: per OOD set its best detector, then every
/// other one with its AUROC, the difference `best - detector` and its 95% interval in points, and
/// whether the interval excludes 0. Empty without paired comparisons for `v`.
pub fn paired_markdown(results: &ResultsFile, v: Validation) -> String {
    let paired = paired_of(results, v);
    let Some(first) = paired.first() else {
        return String::new();
    };
    let b = first.bootstrap;
    let mut s = format!(
        "\nAUROC (OOD positive) of the best detector of each set against every other one, on the \
         same {} bootstrap resamples (seed {}) of the same test rows; difference = best - \
         detector in percentage points, {}% percentile interval; **yes** where it excludes 0 \
         (README: \"Which detector is really better\").\n\n\
         | OOD set | best (AUROC) | detector | AUROC | difference [interval] | excludes 0 |\n\
         |---|---|---|---:|---:|---|\n",
        b.resamples,
        b.seed,
        100.0 * b.level
    );
    for p in paired {
        let best = format!("{} ({})", p.best.label(), pct(p.best_auroc));
        for e in &p.others {
            let _ = writeln!(
                s,
                "| {} | {best} | {} | {} | {} | {} |",
                set_label(&results.ood_groups, &p.ood),
                e.detector.label(),
                pct(e.auroc),
                with_interval(e.paired.difference, Some(e.paired.interval)),
                if e.excludes_zero { "**yes**" } else { "no" }
            );
        }
        for k in &p.skipped {
            let _ = writeln!(
                s,
                "| {} | {best} | {} | - | skipped: {} | - |",
                set_label(&results.ood_groups, &p.ood),
                k.detector.label(),
                k.reason
            );
        }
    }
    s
}
