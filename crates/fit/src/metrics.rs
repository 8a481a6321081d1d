//! OOD detection metrics (`docs/method.md#paper-metrics`), computed exactly as the reference's
//! `calMetric.py`.
//!
//! In-distribution samples are the positive class and a higher confidence means "more
//! in-distribution". The reference sweeps a threshold over both sorted score lists (ties count as
//! in-distribution first), builds the true/false positive counts `tp`, `fp`, and integrates them
//! with numpy's trapezoid rule. We follow every step, including the padding of the curves and the
//! `denominator == 0` conventions of AUIN/AUOUT, so that results agree with the reference to 1e-9.
use crate::{Error, Result};

/// Target true-positive rate of [`Metrics::tnr_at_tpr95`].
pub const TPR_TARGET: f64 = 0.95;

/// The five detection metrics of the reference, each a fraction in `[0, 1]` (not a percentage).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    /// True-negative rate (OOD rejected) at the threshold whose TPR is closest to 95%.
    pub tnr_at_tpr95: f64,
    /// Area under the ROC curve.
    pub auroc: f64,
    /// Best detection accuracy over all thresholds, `0.5 * max(TPR + TNR)`.
    pub dtacc: f64,
    /// Area under the precision-recall curve with in-distribution as positive.
    pub auin: f64,
    /// Area under the precision-recall curve with OOD as positive.
    pub auout: f64,
}

impl Metrics {
    /// The metrics in the reference's print order: TNR, AUROC, DTACC, AUIN, AUOUT.
    pub fn as_array(&self) -> [f64; 5] {
        [
            self.tnr_at_tpr95,
            self.auroc,
            self.dtacc,
            self.auin,
            self.auout,
        ]
    }
}

/// The reference's threshold sweep: `tp[i]`, `fp[i]` are the numbers of in-distribution and OOD
/// samples still counted as positive after `i` steps (both of length `nk + nn + 1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sweep {
    /// True positives per step, starting at the number of in-distribution samples.
    pub tp: Vec<usize>,
    /// False positives per step, starting at the number of OOD samples.
    pub fp: Vec<usize>,
}

/// Computes all five metrics from in-distribution and OOD confidences (higher = in-distribution).
///
/// Errors if either slice is empty or holds a NaN.
pub fn compute(in_dist: &[f64], ood: &[f64]) -> Result<Metrics> {
    let sweep = sweep(in_dist, ood)?;
    Ok(from_sweep(&sweep))
}

/// TNR at TPR 95% only (what the eps selection of `docs/method.md#magnitude-selection` needs).
///
/// Errors if either slice is empty or holds a NaN.
pub fn tnr_at_tpr95(in_dist: &[f64], ood: &[f64]) -> Result<f64> {
    Ok(tnr_from_sweep(&sweep(in_dist, ood)?))
}

/// Runs the reference's sweep over the sorted confidences.
///
/// Errors if either slice is empty or holds a NaN.
pub fn sweep(in_dist: &[f64], ood: &[f64]) -> Result<Sweep> {
    let known = sorted_scores(in_dist, "in-distribution")?;
    let novel = sorted_scores(ood, "OOD")?;
    let (nk, nn) = (known.len(), novel.len());
    let mut tp = Vec::with_capacity(nk + nn + 1);
    let mut fp = Vec::with_capacity(nk + nn + 1);
    let (mut t, mut f) = (nk, nn);
    tp.push(t);
    fp.push(f);
    let (mut k, mut n) = (0, 0);
    while k < nk || n < nn {
        // All in-distribution scores used: only OOD ones remain. Otherwise an OOD score strictly
        // below the current in-distribution one goes first; ties remove the in-distribution one.
        if k == nk || (n < nn && novel[n] < known[k]) {
            n += 1;
            f -= 1;
        } else {
            k += 1;
            t -= 1;
        }
        tp.push(t);
        fp.push(f);
    }
    Ok(Sweep { tp, fp })
}

/// The five metrics from a sweep made by [`sweep`] (non-empty on both sides).
fn from_sweep(sweep: &Sweep) -> Metrics {
    let (nk, nn) = counts(sweep);
    let tpr = padded_rate(&sweep.tp, nk);
    let fpr = padded_rate(&sweep.fp, nn);
    let one_minus_fpr: Vec<f64> = fpr.iter().map(|v| 1.0 - v).collect();
    Metrics {
        tnr_at_tpr95: tnr_from_sweep(sweep),
        auroc: -trapz(&one_minus_fpr, &tpr),
        dtacc: dtacc(sweep),
        auin: auin(sweep, &tpr),
        auout: auout(sweep, &one_minus_fpr),
    }
}

/// Checks the scores and returns them sorted ascending.
fn sorted_scores(scores: &[f64], what: &str) -> Result<Vec<f64>> {
    if scores.is_empty() {
        return Err(Error::BadData(format!(
            "metrics: no {what} scores (need at least one)"
        )));
    }
    if let Some(i) = scores.iter().position(|s| s.is_nan()) {
        return Err(Error::BadData(format!("metrics: {what} score {i} is NaN")));
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    Ok(sorted)
}

/// Numbers of in-distribution and OOD samples of a sweep (its first entries).
fn counts(sweep: &Sweep) -> (usize, usize) {
    (sweep.tp[0], sweep.fp[0])
}

/// `[1] ++ counts / total ++ [0]`, the reference's padded TPR or FPR curve.
fn padded_rate(counts: &[usize], total: usize) -> Vec<f64> {
    let mut rate = Vec::with_capacity(counts.len() + 2);
    rate.push(1.0);
    rate.extend(counts.iter().map(|&c| c as f64 / total as f64));
    rate.push(0.0);
    rate
}

/// TNR at the first step whose TPR is closest to 95%.
fn tnr_from_sweep(sweep: &Sweep) -> f64 {
    let (nk, nn) = counts(sweep);
    let mut best = 0;
    let mut best_gap = f64::INFINITY;
    for (i, &t) in sweep.tp.iter().enumerate() {
        let gap = (t as f64 / nk as f64 - TPR_TARGET).abs();
        if gap < best_gap {
            best_gap = gap;
            best = i;
        }
    }
    1.0 - sweep.fp[best] as f64 / nn as f64
}

/// `0.5 * max(tp / nk + 1 - fp / nn)`.
fn dtacc(sweep: &Sweep) -> f64 {
    let (nk, nn) = counts(sweep);
    let best = sweep
        .tp
        .iter()
        .zip(&sweep.fp)
        .map(|(&t, &f)| t as f64 / nk as f64 + 1.0 - f as f64 / nn as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    0.5 * best
}

/// Area under the in-distribution precision/recall curve (steps with no positives are skipped).
fn auin(sweep: &Sweep, tpr: &[f64]) -> f64 {
    let (mut y, mut x) = (vec![0.5], vec![tpr[0]]);
    for (i, (&t, &f)) in sweep.tp.iter().zip(&sweep.fp).enumerate() {
        let denom = t + f;
        if denom > 0 {
            y.push(t as f64 / denom as f64);
            x.push(tpr[i + 1]);
        }
    }
    y.push(0.0);
    x.push(tpr[tpr.len() - 1]);
    -trapz(&y, &x)
}

/// Area under the OOD precision/recall curve (steps with no negatives called yet are skipped).
fn auout(sweep: &Sweep, one_minus_fpr: &[f64]) -> f64 {
    let (nk, nn) = counts(sweep);
    let (mut y, mut x) = (vec![0.0], vec![one_minus_fpr[0]]);
    for (i, (&t, &f)) in sweep.tp.iter().zip(&sweep.fp).enumerate() {
        let denom = (nk - t) + (nn - f);
        if denom > 0 {
            y.push((nn - f) as f64 / denom as f64);
            x.push(one_minus_fpr[i + 1]);
        }
    }
    y.push(0.5);
    x.push(one_minus_fpr[one_minus_fpr.len() - 1]);
    trapz(&y, &x)
}

/// numpy's `trapz(y, x)`: `sum(diff(x) * (y[1:] + y[:-1]) / 2)`, summed like numpy's `add.reduce`.
pub(crate) fn trapz(y: &[f64], x: &[f64]) -> f64 {
    let terms: Vec<f64> = y
        .windows(2)
        .zip(x.windows(2))
        .map(|(yw, xw)| (xw[1] - xw[0]) * (yw[1] + yw[0]) / 2.0)
        .collect();
    pairwise_sum(&terms)
}

/// numpy's pairwise summation of float64 (blocks of 128, eight accumulators), so that sums of
/// many terms round like the reference's.
fn pairwise_sum(a: &[f64]) -> f64 {
    const BLOCK: usize = 128;
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, v| acc + v)
    } else if n <= BLOCK {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let whole = n - n % 8;
        for chunk in a[8..whole].chunks_exact(8) {
            for (acc, v) in r.iter_mut().zip(chunk) {
                *acc += v;
            }
        }
        let head = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        a[whole..].iter().fold(head, |acc, v| acc + v)
    } else {
        let half = n / 2;
        let half = half - half % 8;
        pairwise_sum(&a[..half]) + pairwise_sum(&a[half..])
    }
}
