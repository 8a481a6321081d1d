//! Bootstrap confidence intervals of the detection metrics over the test rows.
//!
//! A figure on 500 + 500 test rows can move by several points with another sample; the interval
//! says how much. Each resample draws, with replacement, as many in-distribution rows as there are
//! from the in-distribution test rows and as many OOD rows from the OOD test rows (a stratified
//! bootstrap: the class balance stays that of the test set), recomputes every metric of both
//! conventions ([`metrics`](super::metrics), [`openood`](super::openood)), and the interval is the
//! percentile interval of the resampled values (numpy's default linear interpolation). Resamples
//! come from a ChaCha8 generator seeded with [`BootstrapParams::seed`]: the same seed gives the
//! same intervals on every machine.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::metrics;
use super::openood;
use crate::{Error, Result};

/// Settings of the bootstrap, validated by [`BootstrapParams::check`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapParams {
    /// Number of resamples (1,000 by default).
    pub resamples: usize,
    /// Seed of the resampling generator.
    pub seed: u64,
    /// Coverage of the two-sided interval (0.95 by default).
    pub level: f64,
}

impl Default for BootstrapParams {
    fn default() -> Self {
        BootstrapParams {
            resamples: 1000,
            seed: 0,
            level: 0.95,
        }
    }
}

impl BootstrapParams {
    /// Errors unless there are at least 2 resamples and the level lies strictly between 0 and 1.
    pub fn check(&self) -> Result<()> {
        if self.resamples < 2 {
            return Err(Error::bad_option(
                "bootstrap.resamples",
                format!("need at least 2 resamples, got {}", self.resamples),
            ));
        }
        if !(self.level > 0.0 && self.level < 1.0) {
            return Err(Error::bad_option(
                "bootstrap.level",
                format!(
                    "the interval's level must lie strictly between 0 and 1, got {}",
                    self.level
                ),
            ));
        }
        Ok(())
    }
}

/// A two-sided interval `[low, high]` (stored as a two-element array).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval(pub f64, pub f64);

impl Interval {
    /// Whether `v` lies in the interval (ends included).
    pub fn contains(&self, v: f64) -> bool {
        self.0 <= v && v <= self.1
    }
}

/// The bootstrap intervals of every metric of both conventions, with the settings that made them.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricIntervals {
    /// How they were computed.
    pub bootstrap: BootstrapParams,
    /// The paper's metrics (in-distribution positive), in [`metrics::Metrics::as_array`] order:
    /// TNR at TPR 95%, AUROC, DTACC, AUIN, AUOUT.
    pub paper: [Interval; 5],
    /// OpenOOD's metrics (OOD positive), in [`openood::OodMetrics::as_array`] order: FPR at 95%
    /// TPR, AUROC, AUPR-in, AUPR-out.
    pub openood: [Interval; 4],
}

/// The intervals of every metric of the confidences `in_dist` and `ood` (higher = in-distribution).
pub fn intervals(
    in_dist: &[f64],
    ood: &[f64],
    params: &BootstrapParams,
) -> Result<MetricIntervals> {
    params.check()?;
    // Errors on empty or NaN input come from the metrics of the whole sample.
    metrics::compute(in_dist, ood)?;
    let mut paper: Vec<[f64; 5]> = Vec::with_capacity(params.resamples);
    let mut ood_positive: Vec<[f64; 4]> = Vec::with_capacity(params.resamples);
    let pick = |rows: &[f64], idx: &[usize]| -> Vec<f64> { idx.iter().map(|&r| rows[r]).collect() };
    for (idx_in, idx_ood) in resamples(params, in_dist.len(), ood.len()) {
        let i = pick(in_dist, &idx_in);
        let o = pick(ood, &idx_ood);
        paper.push(metrics::compute(&i, &o)?.as_array());
        ood_positive.push(openood::compute(&i, &o)?.as_array());
    }
    Ok(MetricIntervals {
        bootstrap: *params,
        paper: std::array::from_fn(|k| {
            percentile_interval(paper.iter().map(|m| m[k]).collect(), params)
        }),
        openood: std::array::from_fn(|k| {
            percentile_interval(ood_positive.iter().map(|m| m[k]).collect(), params)
        }),
    })
}

/// The row draws of the stratified bootstrap, one `(in-distribution rows, OOD rows)` pair of
/// index lists per resample: `n_in` indices drawn with replacement from `0..n_in`, then `n_ood`
/// from `0..n_ood`, from a ChaCha8 generator seeded with `params.seed`. The same settings and
/// counts give the same draws everywhere: [`intervals`] and the paired comparison
/// ([`super::paired`]) of the same test rows resample them alike.
pub fn resamples(
    params: &BootstrapParams,
    n_in: usize,
    n_ood: usize,
) -> impl Iterator<Item = (Vec<usize>, Vec<usize>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
    (0..params.resamples).map(move |_| {
        let draw = |n: usize, rng: &mut ChaCha8Rng| -> Vec<usize> {
            (0..n).map(|_| rng.random_range(0..n)).collect()
        };
        let i = draw(n_in, &mut rng);
        let o = draw(n_ood, &mut rng);
        (i, o)
    })
}

/// The two-sided percentile interval of level `params.level` of resampled `values` (numpy's
/// linear [`quantile`]s at `(1 - level) / 2` and `(1 + level) / 2`).
pub fn percentile_interval(mut values: Vec<f64>, params: &BootstrapParams) -> Interval {
    let tail = (1.0 - params.level) / 2.0;
    values.sort_by(f64::total_cmp);
    Interval(quantile(&values, tail), quantile(&values, 1.0 - tail))
}

/// numpy's `quantile(v, q)` (method "linear", with numpy's lerp that interpolates from the upper
/// end when the fraction is at least 0.5) of ascending, non-empty `v`.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let lo = (pos.floor() as usize).min(sorted.len() - 1);
    let hi = (lo + 1).min(sorted.len() - 1);
    let (a, b, t) = (sorted[lo], sorted[hi], pos - lo as f64);
    if t >= 0.5 {
        b - (b - a) * (1.0 - t)
    } else {
        a + (b - a) * t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        let v = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 1.0), 8.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.025), 1.075);
    }

    #[test]
    fn settings_are_checked() {
        let p = BootstrapParams {
            resamples: 1,
            ..Default::default()
        };
        assert!(p.check().is_err());
        let p = BootstrapParams {
            level: 1.0,
            ..Default::default()
        };
        assert!(p.check().is_err());
        assert!(BootstrapParams::default().check().is_ok());
    }
}
