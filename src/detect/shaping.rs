//! Activation shaping, then the energy score: detectors that change the penultimate features
//! `phi` before the classifier's last layer and score `logsumexp` of the resulting logits
//! (`docs/method.md#activation-shaping`).
//!
//! - ReAct (Sun et al. 2021): `min(phi, t)`, `t` the `percentile`-th percentile of every
//!   activation of the training rows ([`ReactParams`]);
//! - ASH (Djurisic et al. 2023): keep the top `100 - percentile` percent of each row's activations
//!   and zero the rest, then ASH-P leaves them, ASH-B sets each kept one to `sum(phi) / k` and
//!   ASH-S multiplies them by `exp(sum(phi) / sum(kept))` ([`AshParams`]);
//! - SCALE (Xu et al. 2024): the whole row times `exp(sum(phi) / sum(kept))`, nothing pruned
//!   ([`ScaleParams`]).
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// ReAct's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReactParams {
    /// Percentile of the training activations at which they are clipped (OpenOOD: 90).
    pub percentile: f64,
}

impl Default for ReactParams {
    fn default() -> Self {
        ReactParams { percentile: 90.0 }
    }
}

/// ASH's three ways of shaping the kept activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AshVariant {
    /// ASH-B: every kept activation becomes `sum(phi) / k` (binarised).
    B,
    /// ASH-P: the kept activations stay as they are (pruned only).
    P,
    /// ASH-S: the kept activations times `exp(sum(phi) / sum(kept))` (scaled).
    S,
}

impl std::str::FromStr for AshVariant {
    type Err = String;

    /// `b`, `p` or `s` (any case, `ash-` prefix allowed).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        match lower.strip_prefix("ash-").unwrap_or(&lower) {
            "b" => Ok(AshVariant::B),
            "p" => Ok(AshVariant::P),
            "s" => Ok(AshVariant::S),
            _ => Err(format!("unknown ASH variant `{s}`; expected b, p or s")),
        }
    }
}

/// ASH's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AshParams {
    /// Percentage of each row's activations pruned (OpenOOD: 90).
    pub percentile: f64,
    /// How the kept activations are shaped (the default: ASH-S).
    pub variant: AshVariant,
}

impl Default for AshParams {
    fn default() -> Self {
        AshParams {
            percentile: 90.0,
            variant: AshVariant::S,
        }
    }
}

/// SCALE's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleParams {
    /// Percentage of each row's activations left out of the kept sum (OpenOOD: 85).
    pub percentile: f64,
}

impl Default for ScaleParams {
    fn default() -> Self {
        ScaleParams { percentile: 85.0 }
    }
}

/// A percentile option must lie in `[0, 100]`.
fn check_percentile(option: &str, percentile: f64) -> Result<()> {
    if !(0.0..=100.0).contains(&percentile) {
        return Err(Error::bad_option(
            option,
            format!("percentile {percentile} is not in [0, 100]"),
        ));
    }
    Ok(())
}

/// The number of activations kept of `d` when `percentile` percent are pruned, as OpenOOD counts
/// them (`d - round(d * percentile / 100)`, ties to even like numpy); an error when none is left.
pub fn kept_count(option: &str, d: usize, percentile: f64) -> Result<usize> {
    let pruned = (d as f64 * percentile / 100.0).round_ties_even() as usize;
    match d.checked_sub(pruned) {
        Some(k) if k >= 1 => Ok(k),
        _ => Err(Error::bad_option(
            option,
            format!("pruning {percentile}% of {d} features leaves none"),
        )),
    }
}

/// The `q`-th percentile (`0..=100`) of every value of `values`, interpolated linearly between
/// the two nearest ranks like numpy's default; the ranks are selected in the values' own kind
/// (exactly), the interpolation is in float64.
pub fn percentile(values: &Tensor, q: f64) -> Result<f64> {
    let flat = values.flatten(0, -1);
    let n = flat.size()[0];
    if n == 0 {
        return Err(Error::BadData("percentile of no values".into()));
    }
    let position = q / 100.0 * (n - 1) as f64;
    let (lo, hi) = (position.floor() as i64, position.ceil() as i64);
    // One selection: the value of rank `hi` is the one of rank `lo` when that value fills rank `hi`
    // too (ties), else the smallest value above it.
    let a = f64::try_from(flat.kthvalue(lo + 1, 0, false).0)?;
    let b = if hi == lo || i64::try_from(flat.le(a).sum(Kind::Int64))? > hi {
        a
    } else {
        f64::try_from(flat.masked_select(&flat.gt(a)).min())?
    };
    Ok(a + (b - a) * (position - lo as f64))
}

/// How a fitted shaping detector changes the features.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Shaping {
    /// ReAct: clip at the threshold.
    Clip(f64),
    /// ASH: keep the top `k`, shaped by the variant.
    Ash(AshVariant, usize),
    /// SCALE: scale by `exp(sum / sum of the top k)`.
    Scale(usize),
}

impl Shaping {
    /// The shaped features of `phi` `[N, d]`.
    fn apply(self, phi: &Tensor) -> Tensor {
        let top = |k: usize| phi.topk(k as i64, 1, true, false);
        let total = || phi.sum_dim_intlist(1, true, phi.kind());
        // exp(sum / kept sum); a row whose kept sum is 0 (all zero) is left unscaled.
        let sharpen = |kept: &Tensor| {
            let kept_sum = kept.sum_dim_intlist(1, true, phi.kind());
            let ratio = total() / &kept_sum;
            ratio
                .where_self(&kept_sum.ne(0.0), &ratio.zeros_like())
                .exp()
        };
        match self {
            Shaping::Clip(threshold) => phi.clamp_max(threshold),
            Shaping::Ash(variant, k) => {
                let (values, indices) = top(k);
                let kept = match variant {
                    AshVariant::B => (total() / k as f64).expand_as(&values),
                    AshVariant::P | AshVariant::S => values,
                };
                let pruned = phi.zeros_like().scatter(1, &indices, &kept);
                match variant {
                    AshVariant::S => {
                        let scale = sharpen(&pruned);
                        pruned * scale
                    }
                    AshVariant::B | AshVariant::P => pruned,
                }
            }
            Shaping::Scale(k) => phi * sharpen(&top(k).0),
        }
    }
}

/// ReAct, ASH or SCALE: shaped penultimate features, then the energy of their logits.
pub struct ShapedEnergy {
    params: DetectorParams,
    layer: usize,
    head: LinearHead,
    shaping: Shaping,
}

/// The fitted facts of a shaping detector that are not tensors.
#[derive(Debug, Serialize, Deserialize)]
struct ShapingMeta {
    /// ReAct's clipping threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    threshold: Option<f64>,
    /// ASH's and SCALE's number of kept activations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kept: Option<usize>,
}

impl ShapedEnergy {
    fn meta(&self) -> ShapingMeta {
        match self.shaping {
            Shaping::Clip(t) => ShapingMeta {
                threshold: Some(t),
                kept: None,
            },
            Shaping::Ash(_, k) | Shaping::Scale(k) => ShapingMeta {
                threshold: None,
                kept: Some(k),
            },
        }
    }

    /// The detector with `params` saved as `state`, on `device`; `shaping` rebuilds the shaping
    /// from the saved facts.
    fn restore(
        params: DetectorParams,
        state: &DetectorState,
        device: Device,
        shaping: impl FnOnce(&ShapingMeta) -> Option<Shaping>,
    ) -> Result<Box<dyn FittedDetector>> {
        let meta: ShapingMeta = state.meta()?;
        let shaping = shaping(&meta).ok_or_else(|| {
            Error::BadData(format!(
                "{} detector state: `meta` lacks its threshold or kept count",
                params.kind().label()
            ))
        })?;
        Ok(Box::new(ShapedEnergy {
            params,
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
            shaping,
        }))
    }

    /// The detector with `params` and `shaping` on the last layer of `data`.
    fn fit(
        params: DetectorParams,
        data: &dyn TrainingData,
        shaping: Shaping,
    ) -> Result<Box<dyn FittedDetector>> {
        Ok(Box::new(ShapedEnergy {
            params,
            layer: data.last_layer(),
            head: data.linear_head()?,
            shaping,
        }))
    }

    /// The feature size of the last layer (the head's input size).
    fn feature_size(data: &dyn TrainingData) -> Result<usize> {
        Ok(data.linear_head()?.weight.size()[1] as usize)
    }
}

impl Fit for ReactParams {
    fn check(&self) -> Result<()> {
        check_percentile("--react-percentile", self.percentile)
    }

    /// The threshold: the percentile of every activation of the training rows.
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let train = data.train_features(data.last_layer())?;
        let threshold = percentile(&train, self.percentile)?;
        let params = DetectorParams::React(self.clone());
        ShapedEnergy::fit(params, data, Shaping::Clip(threshold))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let params = DetectorParams::React(self.clone());
        ShapedEnergy::restore(params, state, device, |m| m.threshold.map(Shaping::Clip))
    }
}

impl Fit for AshParams {
    fn check(&self) -> Result<()> {
        check_percentile("--ash-percentile", self.percentile)
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let d = ShapedEnergy::feature_size(data)?;
        let k = kept_count("--ash-percentile", d, self.percentile)?;
        let params = DetectorParams::Ash(self.clone());
        ShapedEnergy::fit(params, data, Shaping::Ash(self.variant, k))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let params = DetectorParams::Ash(self.clone());
        let variant = self.variant;
        ShapedEnergy::restore(params, state, device, |m| {
            m.kept.map(|k| Shaping::Ash(variant, k))
        })
    }
}

impl Fit for ScaleParams {
    fn check(&self) -> Result<()> {
        check_percentile("--scale-percentile", self.percentile)
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let d = ShapedEnergy::feature_size(data)?;
        let k = kept_count("--scale-percentile", d, self.percentile)?;
        ShapedEnergy::fit(DetectorParams::Scale(self.clone()), data, Shaping::Scale(k))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let params = DetectorParams::Scale(self.clone());
        ShapedEnergy::restore(params, state, device, |m| m.kept.map(Shaping::Scale))
    }
}

impl FittedDetector for ShapedEnergy {
    fn params(&self) -> DetectorParams {
        self.params.clone()
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let shaped = self.shaping.apply(phi);
            Ok(self.head.logits(&shaped).logsumexp([1], true))
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let mut state = DetectorState::new(self.params(), vec![self.layer], self.meta())?;
        self.head.save_into(&mut state);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_count_rounds_like_numpy_and_refuses_none() {
        assert_eq!(kept_count("o", 512, 90.0).unwrap(), 51);
        assert_eq!(kept_count("o", 512, 85.0).unwrap(), 77);
        // 10 * 65% = 6.5 rounds to even (6), as np.round does.
        assert_eq!(kept_count("o", 10, 65.0).unwrap(), 4);
        assert!(kept_count("o", 4, 100.0).is_err());
    }

    #[test]
    fn percentile_interpolates_like_numpy() {
        let v = Tensor::from_slice(&[4.0f32, 1.0, 3.0, 2.0, 10.0]);
        // numpy.percentile([1, 2, 3, 4, 10], 90) = 4 + 0.6 * 6 = 7.6
        assert!((percentile(&v, 90.0).unwrap() - 7.6).abs() < 1e-12);
        assert_eq!(percentile(&v, 0.0).unwrap(), 1.0);
        assert_eq!(percentile(&v, 100.0).unwrap(), 10.0);
    }

    #[test]
    fn percentile_with_ties_matches_a_sorted_brute_force() {
        // Values on a coarse grid, so that many ranks tie.
        let values: Vec<f32> = (0..997u32)
            .map(|i| ((i * 7919) % 61) as f32 / 4.0)
            .collect();
        let mut sorted: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        sorted.sort_by(f64::total_cmp);
        let t = Tensor::from_slice(&values);
        for q in [0.0, 12.5, 50.0, 85.0, 90.0, 97.3, 99.9, 100.0] {
            let pos = q / 100.0 * (sorted.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            let want = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64);
            assert!((percentile(&t, q).unwrap() - want).abs() < 1e-12, "q {q}");
        }
    }

    #[test]
    fn ash_variants_parse() {
        assert_eq!("S".parse::<AshVariant>(), Ok(AshVariant::S));
        assert_eq!("ash-b".parse::<AshVariant>(), Ok(AshVariant::B));
        assert!("x".parse::<AshVariant>().is_err());
    }
}
