//! The paired bootstrap comparison of detectors' AUROC on the same test rows
//! (`docs/method.md#paired-comparison`).
//!
//! Two detectors' intervals overlap far more often than their difference is uncertain: both are
//! measured on the same rows, so a hard row is hard for both, and their AUROCs move together from
//! one resample to the next. Resampling the rows once and measuring every detector on the same
//! draw keeps that correlation: on each resample of [`bootstrap::resamples`] (the same draws as the
//! detectors' own intervals) the difference `AUROC(best) - AUROC(other)` is recomputed, and its
//! percentile interval says whether the best detector is better on the population of rows the test
//! set was drawn from, not just on these rows.
//!
//! AUROC here is the Mann-Whitney statistic: the share of (in-distribution, OOD) row pairs in which
//! the in-distribution row has the higher confidence, ties counting one half. It equals the area
//! under the ROC curve of every threshold (OpenOOD's AUROC, [`super::openood`]) up to rounding, and
//! with resampled rows counted by their multiplicity it needs one sort per detector rather than one
//! per resample.
use super::bootstrap::{self, BootstrapParams, Interval};
use crate::{Error, Result};

/// One detector's test confidences (higher = in-distribution): `(in-distribution rows, OOD rows)`.
pub type Confidences<'a> = (&'a [f64], &'a [f64]);

/// The AUROC difference `best - other` on the same rows.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PairedDifference {
    /// The difference on the test rows themselves (fraction, not percent).
    pub difference: f64,
    /// Its percentile interval over the paired resamples.
    pub interval: Interval,
}

impl PairedDifference {
    /// Whether the interval excludes 0: the two detectors differ beyond the choice of test rows.
    pub fn excludes_zero(&self) -> bool {
        !self.interval.contains(0.0)
    }
}

/// One detector's rows sorted by confidence once, in groups of equal confidence: for each group
/// its in-distribution and OOD row indices.
struct Ranked {
    groups: Vec<(Vec<usize>, Vec<usize>)>,
}

impl Ranked {
    fn new((in_dist, ood): Confidences<'_>) -> Ranked {
        let mut rows: Vec<(f64, bool, usize)> = in_dist
            .iter()
            .enumerate()
            .map(|(i, &v)| (v, true, i))
            .chain(ood.iter().enumerate().map(|(i, &v)| (v, false, i)))
            .collect();
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut groups: Vec<(Vec<usize>, Vec<usize>)> = Vec::new();
        let mut last = None;
        for (v, is_in, i) in rows {
            if last != Some(v) {
                groups.push((Vec::new(), Vec::new()));
                last = Some(v);
            }
            let g = groups.last_mut().expect("a group was just pushed");
            if is_in { &mut g.0 } else { &mut g.1 }.push(i);
        }
        Ranked { groups }
    }

    /// The AUROC with row `i` of each kind counted `w_in[i]` / `w_ood[i]` times: twice the
    /// Mann-Whitney count is summed in integers (exact), then divided once.
    fn auroc(&self, w_in: &[u64], w_ood: &[u64]) -> f64 {
        let (mut below, mut twice) = (0u64, 0u64);
        for (g_in, g_ood) in &self.groups {
            let n_in: u64 = g_in.iter().map(|&i| w_in[i]).sum();
            let n_ood: u64 = g_ood.iter().map(|&i| w_ood[i]).sum();
            twice += n_in * (2 * below + n_ood);
            below += n_ood;
        }
        let (total_in, total_ood): (u64, u64) = (w_in.iter().sum(), w_ood.iter().sum());
        twice as f64 / (2.0 * total_in as f64 * total_ood as f64)
    }
}

/// AUROC of confidences (higher = in-distribution) as the Mann-Whitney statistic, ties one half.
pub fn auroc(conf: Confidences<'_>) -> Result<f64> {
    check(conf, "confidences")?;
    let ones = |n: usize| vec![1u64; n];
    Ok(Ranked::new(conf).auroc(&ones(conf.0.len()), &ones(conf.1.len())))
}

fn check((in_dist, ood): Confidences<'_>, what: &str) -> Result<()> {
    if in_dist.is_empty() || ood.is_empty() {
        return Err(Error::BadData(format!(
            "{what}: need in-distribution and OOD rows, got {} and {}",
            in_dist.len(),
            ood.len()
        )));
    }
    if in_dist.iter().chain(ood).any(|v| v.is_nan()) {
        return Err(Error::BadData(format!("{what}: NaN confidence")));
    }
    Ok(())
}

/// The paired comparison of `best` with each of `others`, all measured on the same test rows (row
/// `i` of each kind is the same image for every detector; the caller checks that): for each other
/// detector the AUROC difference `best - other` on the rows and its percentile interval over the
/// resamples of [`bootstrap::resamples`], each resample's rows the same for every detector.
/// Errors when a detector's row counts differ from `best`'s, on empty or NaN confidences, and on
/// bad `params`.
pub fn auroc_differences(
    best: Confidences<'_>,
    others: &[Confidences<'_>],
    params: &BootstrapParams,
) -> Result<Vec<PairedDifference>> {
    params.check()?;
    check(best, "the best detector's confidences")?;
    for (k, other) in others.iter().enumerate() {
        check(*other, &format!("detector {k}'s confidences"))?;
        if (other.0.len(), other.1.len()) != (best.0.len(), best.1.len()) {
            return Err(Error::Shape(format!(
                "paired comparison: detector {k} has {} in-distribution and {} OOD test rows, the \
                 best detector {} and {}; a paired comparison needs the same rows",
                other.0.len(),
                other.1.len(),
                best.0.len(),
                best.1.len()
            )));
        }
    }
    let (n_in, n_ood) = (best.0.len(), best.1.len());
    let ranked_best = Ranked::new(best);
    let ranked: Vec<Ranked> = others.iter().map(|&o| Ranked::new(o)).collect();
    let ones = |n: usize| vec![1u64; n];
    let whole_best = ranked_best.auroc(&ones(n_in), &ones(n_ood));
    let mut diffs: Vec<Vec<f64>> = vec![Vec::with_capacity(params.resamples); others.len()];
    let (mut w_in, mut w_ood) = (vec![0u64; n_in], vec![0u64; n_ood]);
    for (idx_in, idx_ood) in bootstrap::resamples(params, n_in, n_ood) {
        w_in.iter_mut().for_each(|w| *w = 0);
        w_ood.iter_mut().for_each(|w| *w = 0);
        idx_in.iter().for_each(|&i| w_in[i] += 1);
        idx_ood.iter().for_each(|&i| w_ood[i] += 1);
        let b = ranked_best.auroc(&w_in, &w_ood);
        for (d, r) in diffs.iter_mut().zip(&ranked) {
            d.push(b - r.auroc(&w_in, &w_ood));
        }
    }
    Ok(ranked
        .iter()
        .zip(diffs)
        .map(|(r, d)| PairedDifference {
            difference: whole_best - r.auroc(&ones(n_in), &ones(n_ood)),
            interval: bootstrap::percentile_interval(d, params),
        })
        .collect())
}

/// OpenOOD's group mean of AUROC over several OOD sets and its percentile interval: on resample
/// `b`, each set's rows are drawn by [`bootstrap::resamples`] for that set's counts (the draws of
/// the set's own interval), its AUROC recomputed, and the mean over the sets taken; the interval is
/// that of the resampled means. Returns the mean on the test rows themselves and the interval.
/// Errors on no set, empty or NaN confidences and bad `params`.
pub fn mean_auroc_interval(
    sets: &[Confidences<'_>],
    params: &BootstrapParams,
) -> Result<(f64, Interval)> {
    params.check()?;
    if sets.is_empty() {
        return Err(Error::BadData("a group mean of no OOD set".into()));
    }
    for (k, set) in sets.iter().enumerate() {
        check(*set, &format!("set {k}'s confidences"))?;
    }
    let ranked: Vec<Ranked> = sets.iter().map(|&s| Ranked::new(s)).collect();
    let ones = |n: usize| vec![1u64; n];
    let whole = ranked
        .iter()
        .zip(sets)
        .map(|(r, s)| r.auroc(&ones(s.0.len()), &ones(s.1.len())))
        .sum::<f64>()
        / sets.len() as f64;
    let mut means = vec![0.0; params.resamples];
    for (r, s) in ranked.iter().zip(sets) {
        let (mut w_in, mut w_ood) = (vec![0u64; s.0.len()], vec![0u64; s.1.len()]);
        for (mean, (idx_in, idx_ood)) in
            means
                .iter_mut()
                .zip(bootstrap::resamples(params, s.0.len(), s.1.len()))
        {
            w_in.iter_mut().for_each(|w| *w = 0);
            w_ood.iter_mut().for_each(|w| *w = 0);
            idx_in.iter().for_each(|&i| w_in[i] += 1);
            idx_ood.iter().for_each(|&i| w_ood[i] += 1);
            *mean += r.auroc(&w_in, &w_ood) / sets.len() as f64;
        }
    }
    Ok((whole, bootstrap::percentile_interval(means, params)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_counts_pairs_with_ties_as_halves() {
        // Pairs (in, ood): 3>1, 3>2, 2=2 (half), 2>1; 4 pairs -> 3.5 / 4.
        assert_eq!(auroc((&[3.0, 2.0], &[1.0, 2.0])).unwrap(), 0.875);
        assert!(auroc((&[], &[1.0])).is_err());
    }

    #[test]
    fn group_mean_interval_is_that_of_the_mean_of_each_sets_resampled_auroc() {
        let a: Confidences = (&[0.9, 0.4, 0.7, 0.2, 0.8], &[0.1, 0.5, 0.3]);
        let b: Confidences = (&[0.6, 0.35, 0.95], &[0.3, 0.7, 0.2, 0.4]);
        let p = BootstrapParams {
            resamples: 200,
            ..Default::default()
        };
        let (mean, interval) = mean_auroc_interval(&[a, b], &p).unwrap();
        assert_eq!(mean, (auroc(a).unwrap() + auroc(b).unwrap()) / 2.0);
        // Brute force: pick each set's rows of resample k, AUROC of the picked rows.
        let picked = |(i, o): Confidences<'_>, (ri, ro): (Vec<usize>, Vec<usize>)| {
            let i: Vec<f64> = ri.iter().map(|&r| i[r]).collect();
            let o: Vec<f64> = ro.iter().map(|&r| o[r]).collect();
            auroc((&i, &o)).unwrap()
        };
        let means: Vec<f64> = bootstrap::resamples(&p, 5, 3)
            .zip(bootstrap::resamples(&p, 3, 4))
            .map(|(da, db)| picked(a, da) / 2.0 + picked(b, db) / 2.0)
            .collect();
        let brute = bootstrap::percentile_interval(means, &p);
        assert!((interval.0 - brute.0).abs() < 1e-12 && (interval.1 - brute.1).abs() < 1e-12);
        assert!(interval.contains(mean) && interval.0 < interval.1);
        assert!(mean_auroc_interval(&[], &p).is_err());
    }

    #[test]
    fn a_detector_against_itself_differs_by_exactly_zero() {
        let conf: Confidences = (&[0.9, 0.4, 0.7, 0.2], &[0.1, 0.5, 0.3]);
        let p = BootstrapParams {
            resamples: 50,
            ..Default::default()
        };
        let d = auroc_differences(conf, &[conf], &p).unwrap();
        assert_eq!(d[0].difference, 0.0);
        assert_eq!(d[0].interval, Interval(0.0, 0.0));
        assert!(!d[0].excludes_zero());
        let short: Confidences = (&[0.9], &[0.1, 0.5, 0.3]);
        assert!(auroc_differences(conf, &[short], &p).is_err());
    }
}
