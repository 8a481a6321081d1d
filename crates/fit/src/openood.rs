//! OOD-positive detection metrics as OpenOOD v1.5 computes them with scikit-learn
//! (`docs/method.md#openood-metrics`).
//!
//! OOD rows are the positive class and the detector's confidence `conf` (higher = more
//! in-distribution) is negated into an OOD score:
//! `fpr, tpr, _ = roc_curve(is_ood, -conf)`; FPR at 95% TPR is `fpr` at the first point whose
//! `tpr >= 0.95`; AUROC is `auc(fpr, tpr)`; AUPR-in is `auc(recall, precision)` of
//! `precision_recall_curve(1 - is_ood, conf)` and AUPR-out the same of
//! `precision_recall_curve(is_ood, -conf)` (trapezoids, not average precision).
//!
//! Each step follows scikit-learn 1.9: counts at every distinct threshold in descending order,
//! `roc_curve`'s `drop_intermediate` (collinear points dropped) and its (0, 0) start,
//! `precision_recall_curve` reversed with the point (recall 0, precision 1) appended, and numpy's
//! trapezoid sum. Ties between the two kinds form one threshold, i.e. a diagonal step.
use super::metrics::{trapz, TPR_TARGET};
use crate::{Error, Result};

/// The four OOD-positive metrics of OpenOOD, each a fraction in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OodMetrics {
    /// Fraction of in-distribution rows flagged as OOD when 95% of the OOD rows are (lower is
    /// better).
    pub fpr_at_tpr95: f64,
    /// Area under the ROC curve (OOD positive).
    pub auroc: f64,
    /// Area under the precision-recall curve with in-distribution rows positive.
    pub aupr_in: f64,
    /// Area under the precision-recall curve with OOD rows positive.
    pub aupr_out: f64,
}

impl OodMetrics {
    /// The metrics in print order: FPR@95, AUROC, AUPR-in, AUPR-out.
    pub fn as_array(&self) -> [f64; 4] {
        [self.fpr_at_tpr95, self.auroc, self.aupr_in, self.aupr_out]
    }
}

/// Computes the four metrics from in-distribution and OOD confidences (higher = in-distribution).
///
/// Errors if either slice is empty or holds a NaN.
pub fn compute(in_dist: &[f64], ood: &[f64]) -> Result<OodMetrics> {
    for (scores, what) in [(in_dist, "in-distribution"), (ood, "OOD")] {
        if scores.is_empty() {
            return Err(Error::BadData(format!(
                "OOD-positive metrics: no {what} scores (need at least one)"
            )));
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(Error::BadData(format!(
                "OOD-positive metrics: {what} score {i} is NaN"
            )));
        }
    }
    let negated = |s: &[f64]| s.iter().map(|v| -v).collect::<Vec<f64>>();
    let (ood_score, in_score) = (negated(ood), negated(in_dist));
    let roc = roc_curve(&ood_score, &in_score);
    let first = roc
        .tpr
        .iter()
        .position(|&t| t >= TPR_TARGET)
        .expect("the ROC curve ends at TPR 1");
    Ok(OodMetrics {
        fpr_at_tpr95: roc.fpr[first],
        auroc: auc(&roc.fpr, &roc.tpr),
        aupr_in: pr_auc(in_dist, ood),
        aupr_out: pr_auc(&ood_score, &in_score),
    })
}

/// Counts at each distinct threshold, scores in descending order (scikit-learn's
/// `confusion_matrix_at_thresholds`): `(fps, tps)`, the negatives and positives scoring at least
/// the threshold.
fn counts_at_thresholds(positive: &[f64], negative: &[f64]) -> (Vec<u64>, Vec<u64>) {
    let mut rows: Vec<(f64, bool)> = positive
        .iter()
        .map(|&s| (s, true))
        .chain(negative.iter().map(|&s| (s, false)))
        .collect();
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut fps, mut tps) = (Vec::new(), Vec::new());
    let (mut f, mut t) = (0u64, 0u64);
    for (i, &(s, is_pos)) in rows.iter().enumerate() {
        if is_pos {
            t += 1;
        } else {
            f += 1;
        }
        if i + 1 == rows.len() || rows[i + 1].0 != s {
            fps.push(f);
            tps.push(t);
        }
    }
    (fps, tps)
}

/// A ROC curve from (0, 0) to (1, 1).
struct Roc {
    fpr: Vec<f64>,
    tpr: Vec<f64>,
}

/// scikit-learn's `roc_curve` with `drop_intermediate=True`.
fn roc_curve(positive: &[f64], negative: &[f64]) -> Roc {
    let (fps, tps) = counts_at_thresholds(positive, negative);
    let n = fps.len();
    let second_diff = |v: &[u64], i: usize| v[i - 1] as i64 - 2 * v[i] as i64 + v[i + 1] as i64;
    let keep: Vec<usize> = if n > 2 {
        (0..n)
            .filter(|&i| {
                i == 0 || i == n - 1 || second_diff(&fps, i) != 0 || second_diff(&tps, i) != 0
            })
            .collect()
    } else {
        (0..n).collect()
    };
    let (f_last, t_last) = (fps[n - 1] as f64, tps[n - 1] as f64);
    let mut fpr = vec![0.0];
    let mut tpr = vec![0.0];
    for i in keep {
        fpr.push(fps[i] as f64 / f_last);
        tpr.push(tps[i] as f64 / t_last);
    }
    Roc { fpr, tpr }
}

/// `auc(recall, precision)` of scikit-learn's `precision_recall_curve(labels, scores)` with the
/// `positive` rows labelled 1.
fn pr_auc(positive: &[f64], negative: &[f64]) -> f64 {
    let (fps, tps) = counts_at_thresholds(positive, negative);
    let t_last = *tps.last().expect("at least one threshold") as f64;
    let mut precision: Vec<f64> = fps
        .iter()
        .zip(&tps)
        .rev()
        .map(|(&f, &t)| {
            let ps = t + f;
            if ps == 0 {
                0.0
            } else {
                t as f64 / ps as f64
            }
        })
        .collect();
    let mut recall: Vec<f64> = tps.iter().rev().map(|&t| t as f64 / t_last).collect();
    precision.push(1.0);
    recall.push(0.0);
    auc(&recall, &precision)
}

/// scikit-learn's `auc(x, y)`: the trapezoid area, negated when `x` is decreasing.
fn auc(x: &[f64], y: &[f64]) -> f64 {
    let decreasing = x.windows(2).any(|w| w[1] < w[0]);
    let area = trapz(y, x);
    if decreasing {
        -area
    } else {
        area
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_separation_and_full_overlap() {
        let m = compute(&[3.0, 4.0, 5.0], &[0.0, 1.0]).unwrap();
        assert_eq!(m.as_array(), [0.0, 1.0, 1.0, 1.0]);
        // Every score tied: one threshold, a diagonal ROC and precision at the base rate.
        let m = compute(&[1.0; 3], &[1.0; 1]).unwrap();
        assert_eq!((m.fpr_at_tpr95, m.auroc), (1.0, 0.5));
    }

    #[test]
    fn empty_or_nan_scores_are_errors() {
        assert!(compute(&[], &[1.0]).is_err());
        assert!(compute(&[1.0], &[f64::NAN]).is_err());
    }
}
