//! RMDS, the relative Mahalanobis distance (Ren et al. 2021, `docs/method.md#rmds`): per class,
//! `-(phi - mu_c)^T P (phi - mu_c) + (phi - mu_0)^T P_0 (phi - mu_0)`, the class-conditional
//! Mahalanobis score minus that of one Gaussian (`mu_0`, `P_0`) fitted to every training row; the
//! detector's score is the best class. On the penultimate features, computed in float64.
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::gaussian::{pinv_symmetric, tied_covariance};
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::Result;

/// RMDS's parameters: none; this unit value is its [`Fit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RmdsParams;

impl Fit for RmdsParams {
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// The class means and tied precision of the last layer (rf-prepare's statistics), and the
    /// mean and precision of all its training rows.
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let layer = data.last_layer();
        let stats = data.layer_stats(layer)?;
        let train = data.train_features(layer)?.to_kind(Kind::Double);
        let whole_mean = train.mean_dim(0, false, Kind::Double);
        let whole_precision = pinv_symmetric(&tied_covariance(&(&train - &whole_mean))?)?;
        let device = data.device();
        Ok(Box::new(Rmds {
            layer,
            class_means: stats.means.to_device(device),
            class_precision: stats.precision.to_device(device),
            whole_mean: whole_mean.unsqueeze(0).to_device(device),
            whole_precision: whole_precision.to_device(device),
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let tensor = |name: &str| -> Result<Tensor> { Ok(state.tensor(name)?.to_device(device)) };
        Ok(Box::new(Rmds {
            layer: single_layer(state)?,
            class_means: tensor("class_means")?,
            class_precision: tensor("class_precision")?,
            whole_mean: tensor("whole_mean")?,
            whole_precision: tensor("whole_precision")?,
        }))
    }
}

/// The squared Mahalanobis distances `(phi - mu_c)^T P (phi - mu_c)` `[N, C]` of `phi` `[N, d]` to
/// every row of `means` `[C, d]` under `precision` `[d, d]`, all float64, expanded as
/// `phi^T P phi - 2 phi^T P mu_c + mu_c^T P mu_c`: one product by `P` per batch instead of one per
/// class (exact enough in float64; the tests hold it to numpy's direct form).
fn squared_distances(phi: &Tensor, means: &Tensor, precision: &Tensor) -> Tensor {
    let projected = phi.matmul(precision);
    let own = (&projected * phi).sum_dim_intlist(1, true, Kind::Double);
    let cross = projected.matmul(&means.tr());
    let offsets = (means.matmul(precision) * means).sum_dim_intlist(1, false, Kind::Double);
    own - cross * 2.0 + offsets.unsqueeze(0)
}

/// RMDS, fitted on the training features of the last layer.
pub struct Rmds {
    layer: usize,
    /// Class means `[C, d]`, float64.
    class_means: Tensor,
    /// Pseudo-inverse of the tied class-centred covariance `[d, d]`, float64.
    class_precision: Tensor,
    /// Mean of every training row `[1, d]`, float64.
    whole_mean: Tensor,
    /// Pseudo-inverse of the covariance of every training row `[d, d]`, float64.
    whole_precision: Tensor,
}

impl FittedDetector for Rmds {
    fn params(&self) -> DetectorParams {
        DetectorParams::Rmds
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let phi = phi.to_kind(Kind::Double);
            let class = squared_distances(&phi, &self.class_means, &self.class_precision);
            let whole = squared_distances(&phi, &self.whole_mean, &self.whole_precision);
            Ok(whole - class)
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        Ok(DetectorState::new(self.params(), vec![self.layer], ())?
            .with("class_means", &self.class_means)
            .with("class_precision", &self.class_precision)
            .with("whole_mean", &self.whole_mean)
            .with("whole_precision", &self.whole_precision))
    }
}
