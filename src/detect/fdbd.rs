//! fDBD, feature distance to the decision boundaries (Liu & Qin 2024, `docs/method.md#fdbd`):
//! with `f = W phi + b` and `m` the predicted class, the mean over the other classes `c` of the
//! distance `|f_m - f_c| / ||w_m - w_c||` from `phi` to the boundary between `m` and `c`, divided
//! by `||phi - mu||`, `mu` the mean training feature. Computed in float64.
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// fDBD's parameters: none; this unit value is its [`Fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbdParams;

impl Fit for FdbdParams {
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The mean training feature and the distances between the classes' weight vectors.
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let layer = data.last_layer();
        let train = data.train_features(layer)?.to_kind(Kind::Double);
        let head = data.linear_head()?;
        let device = data.device();
        let w = head.weight.to_device(Device::Cpu).to_kind(Kind::Double);
        let classes = w.size()[0];
        if classes < 2 {
            return Err(Error::BadData(
                "fDBD needs a classifier of at least two classes".into(),
            ));
        }
        // ||w_m - w_c|| for every pair; the diagonal (m = c) is never used and set to 1.
        let distances = (w.unsqueeze(1) - w.unsqueeze(0)).norm_scalaropt_dim(2.0, [2], false);
        let off_diagonal = Tensor::eye(classes, (Kind::Bool, Device::Cpu)).logical_not();
        let min_off = f64::try_from(distances.masked_select(&off_diagonal).min())?;
        if min_off <= 0.0 {
            return Err(Error::BadData(
                "fDBD: two classes of the classifier's last layer have the same weights, so \
                 their decision boundary is undefined"
                    .into(),
            ));
        }
        let distances = distances.where_self(&off_diagonal, &distances.ones_like());
        Ok(Box::new(Fdbd {
            layer,
            head: LinearHead {
                weight: head.weight.to_kind(Kind::Double).to_device(device),
                bias: head.bias.to_kind(Kind::Double).to_device(device),
            },
            train_mean: train.mean_dim(0, true, Kind::Double).to_device(device),
            weight_distances: distances.to_device(device),
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        Ok(Box::new(Fdbd {
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
            train_mean: state.tensor("train_mean")?.to_device(device),
            weight_distances: state.tensor("weight_distances")?.to_device(device),
        }))
    }
}

/// fDBD, fitted on the training features of the last layer.
pub struct Fdbd {
    layer: usize,
    head: LinearHead,
    /// Mean training feature `[1, d]`, float64.
    train_mean: Tensor,
    /// `||w_m - w_c||` `[C, C]` (1 on the diagonal), float64.
    weight_distances: Tensor,
}

impl FittedDetector for Fdbd {
    fn params(&self) -> DetectorParams {
        DetectorParams::Fdbd
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let phi = phi.to_kind(Kind::Double);
            let logits = self.head.logits(&phi);
            let (best, predicted) = logits.max_dim(1, true);
            let classes = logits.size()[1];
            // The predicted class's own term is 0 / 1.
            let to_boundary = (&best - &logits).abs()
                / self
                    .weight_distances
                    .index_select(0, &predicted.squeeze_dim(1));
            let mean = to_boundary.sum_dim_intlist(1, true, Kind::Double) / (classes - 1) as f64;
            let from_mean = (&phi - &self.train_mean).norm_scalaropt_dim(2.0, [1], true);
            Ok(mean / from_mean)
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let mut state = DetectorState::new(self.params(), vec![self.layer], ())?
            .with("train_mean", &self.train_mean)
            .with("weight_distances", &self.weight_distances);
        self.head.save_into(&mut state);
        Ok(state)
    }
}
