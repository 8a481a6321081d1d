//! NNGuide, nearest-neighbour guidance (Park et al. 2023, `docs/method.md#nnguide`): the energy
//! `logsumexp(f)` of the logits times the mean of the `K` largest similarities `z . g_j` of the
//! normalised feature `z = phi / ||phi||` to a bank of guides `g_j = z_j * logsumexp(f_j)`, made
//! from a fraction `alpha` of the training rows. Computed in float64.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::knn::normalise;
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// NNGuide's default number of neighbours `K` (OpenOOD's), used where the bank has as many rows.
pub const NNGUIDE_NEIGHBOURS: usize = 100;

/// NNGuide's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NnguideParams {
    /// Fraction of the training rows in the bank, evenly spaced in stored order (OpenOOD: 0.01).
    pub alpha: f64,
    /// Number `K` of most similar guides averaged; `None`: [`NNGUIDE_NEIGHBOURS`], or the whole
    /// bank where it is smaller.
    pub k: Option<usize>,
}

impl Default for NnguideParams {
    fn default() -> Self {
        NnguideParams {
            alpha: 0.01,
            k: None,
        }
    }
}

/// NNGuide's fitted facts that are not tensors.
#[derive(Debug, Serialize, Deserialize)]
struct NnguideMeta {
    /// The `K` in use.
    k: usize,
}

/// The rows of the bank: `ceil(alpha * rows)` (at least one) evenly spaced row indices.
pub fn bank_rows(rows: usize, alpha: f64) -> Vec<i64> {
    let size = ((alpha * rows as f64).ceil() as usize).clamp(1, rows.max(1));
    (0..size).map(|i| (i * rows / size) as i64).collect()
}

impl Fit for NnguideParams {
    fn check(&self) -> Result<()> {
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return Err(Error::bad_option(
                "--nnguide-alpha",
                format!("alpha {} is not a fraction in (0, 1]", self.alpha),
            ));
        }
        if self.k == Some(0) {
            return Err(Error::bad_option("--nnguide-k", "K must be at least 1"));
        }
        Ok(())
    }

    /// The bank of guides from the training rows of [`bank_rows`].
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let layer = data.last_layer();
        let train = data.train_features(layer)?;
        let rows = train.size()[0] as usize;
        if rows == 0 {
            return Err(Error::BadData("NNGuide: no training rows".into()));
        }
        let index = Tensor::from_slice(&bank_rows(rows, self.alpha));
        let bank = train.index_select(0, &index).to_kind(Kind::Double);
        let head = data.linear_head()?;
        let device = data.device();
        let head = LinearHead {
            weight: head.weight.to_kind(Kind::Double).to_device(device),
            bias: head.bias.to_kind(Kind::Double).to_device(device),
        };
        let bank = bank.to_device(device);
        let guides = normalise(&bank) * head.logits(&bank).logsumexp([1], true);
        let size = guides.size()[0] as usize;
        let k = self.k.unwrap_or(NNGUIDE_NEIGHBOURS.min(size));
        if k > size {
            return Err(Error::bad_option(
                "--nnguide-k",
                format!(
                    "K = {k} is more than the bank's {size} rows (alpha {} of {rows})",
                    self.alpha
                ),
            ));
        }
        Ok(Box::new(Nnguide {
            params: self.clone(),
            layer,
            head,
            guides,
            k,
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let meta: NnguideMeta = state.meta()?;
        Ok(Box::new(Nnguide {
            params: self.clone(),
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
            guides: state.tensor("guides")?.to_device(device),
            k: meta.k,
        }))
    }
}

/// NNGuide, fitted on a bank of training rows.
pub struct Nnguide {
    params: NnguideParams,
    layer: usize,
    head: LinearHead,
    /// The guides `[B, d]`, float64.
    guides: Tensor,
    k: usize,
}

impl FittedDetector for Nnguide {
    fn params(&self) -> DetectorParams {
        DetectorParams::Nnguide(self.params.clone())
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let phi = phi.to_kind(Kind::Double);
            let similarity = normalise(&phi).matmul(&self.guides.tr());
            let guidance =
                similarity
                    .topk(self.k as i64, 1, true, false)
                    .0
                    .mean_dim(1, true, Kind::Double);
            let energy = self.head.logits(&phi).logsumexp([1], true);
            Ok(guidance * energy)
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let meta = NnguideMeta { k: self.k };
        let mut state =
            DetectorState::new(self.params(), vec![self.layer], meta)?.with("guides", &self.guides);
        self.head.save_into(&mut state);
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bank_rows_are_evenly_spaced_and_never_empty() {
        assert_eq!(
            bank_rows(1000, 0.01),
            (0..10).map(|i| i * 100).collect::<Vec<i64>>()
        );
        assert_eq!(bank_rows(50, 0.01), vec![0]);
        assert_eq!(bank_rows(3, 1.0), vec![0, 1, 2]);
    }
}
