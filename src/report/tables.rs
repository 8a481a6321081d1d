//! Text and Markdown tables of the results: the reference's printed block and side-by-side
//! comparisons of the detectors.
use std::fmt::Write as _;

use crate::detect::{eps_name, DetectorKind};
use crate::fit::splits::IoSplitRule;
use crate::fit::Validation;
use crate::store::results::{ResultRecord, ResultsFile};

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
