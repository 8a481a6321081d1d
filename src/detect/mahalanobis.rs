//! The Mahalanobis detector (SPEC section 7): per layer, the tied-covariance Gaussian class scores
//! `-0.5 (f - mu_c)^T P (f - mu_c)` of the mean-pooled features.
use tch::{Device, Tensor};

use super::gaussian::{mahalanobis_scores, LayerStats};
use super::{Detector, DetectorKind, ScoreFn};
use crate::error::Result;

/// Lee et al.'s detector over every feature layer, its statistics on the compute device.
pub struct Mahalanobis {
    /// Per layer: class means `[C, d]` and tied precision `[d, d]`, float64.
    layers: Vec<(Tensor, Tensor)>,
}

impl Mahalanobis {
    /// The detector of the layers whose statistics are `stats` (layer `l` at index `l`).
    pub fn new(stats: &[LayerStats], device: Device) -> Mahalanobis {
        let layers = stats
            .iter()
            .map(|s| (s.means.to_device(device), s.precision.to_device(device)))
            .collect();
        Mahalanobis { layers }
    }
}

impl Detector for Mahalanobis {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Mahalanobis
    }

    fn layers(&self) -> Vec<usize> {
        (0..self.layers.len()).collect()
    }

    fn layer_scores(&self, layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        let (means, precision) = &self.layers[layer];
        Ok(Box::new(move |f: &Tensor| {
            mahalanobis_scores(f, means, precision)
        }))
    }
}
