//! The Mahalanobis detector (Lee et al. 2018, `docs/method.md#the-mahalanobis-detector`): per
//! layer, the tied-covariance Gaussian class scores `-0.5 (f - mu_c)^T P (f - mu_c)` of the
//! mean-pooled features, with input pre-processing; a logistic regression over the layers'
//! best class scores is the detector.
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::gaussian::{mahalanobis_scores, LayerStats};
use super::params::{check_magnitudes, DetectorParams, Fit};
use super::{ScoreFn, MAGNITUDES};
use crate::error::{Error, Result};

/// The Mahalanobis detector's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MahalanobisParams {
    /// Input pre-processing magnitudes.
    pub magnitudes: Vec<f64>,
}

impl Default for MahalanobisParams {
    /// The reference's seven magnitudes ([`MAGNITUDES`]).
    fn default() -> Self {
        MahalanobisParams {
            magnitudes: MAGNITUDES.to_vec(),
        }
    }
}

impl Fit for MahalanobisParams {
    fn check(&self) -> Result<()> {
        check_magnitudes("mahalanobis.magnitudes", &self.magnitudes)
    }

    fn magnitudes(&self) -> Vec<f64> {
        self.magnitudes.clone()
    }

    /// The class means and tied precision of every layer (rf-prepare's statistics).
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let stats = (0..data.num_layers())
            .map(|l| data.layer_stats(l))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(Mahalanobis {
            params: self.clone(),
            ..Mahalanobis::new(&stats, data.device())
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let layers = state
            .layers
            .iter()
            .map(|l| {
                Ok((
                    state.tensor(&format!("layer_{l}.means"))?.to_device(device),
                    state
                        .tensor(&format!("layer_{l}.precision"))?
                        .to_device(device),
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        if state.layers != (0..layers.len()).collect::<Vec<_>>() {
            return Err(Error::BadData(format!(
                "Mahalanobis detector state for layers {:?}; it scores layers 0, 1, ... in order",
                state.layers
            )));
        }
        Ok(Box::new(Mahalanobis {
            params: self.clone(),
            layers,
        }))
    }
}

/// Lee et al.'s detector over every feature layer, its statistics on the compute device.
pub struct Mahalanobis {
    params: MahalanobisParams,
    /// Per layer: class means `[C, d]` and tied precision `[d, d]`, float64.
    layers: Vec<(Tensor, Tensor)>,
}

impl Mahalanobis {
    /// The detector of the layers whose statistics are `stats` (layer `l` at index `l`), with
    /// the default magnitudes.
    pub fn new(stats: &[LayerStats], device: Device) -> Mahalanobis {
        let layers = stats
            .iter()
            .map(|s| (s.means.to_device(device), s.precision.to_device(device)))
            .collect();
        Mahalanobis {
            params: MahalanobisParams::default(),
            layers,
        }
    }
}

impl FittedDetector for Mahalanobis {
    fn params(&self) -> DetectorParams {
        DetectorParams::Mahalanobis(self.params.clone())
    }

    fn layers(&self) -> Vec<usize> {
        (0..self.layers.len()).collect()
    }

    fn layer_scores(&self, layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        let (means, precision) = self.layers.get(layer).ok_or_else(|| {
            Error::Shape(format!(
                "the Mahalanobis detector has layers 0..{}, no layer {layer}",
                self.layers.len()
            ))
        })?;
        Ok(Box::new(move |f: &Tensor| {
            mahalanobis_scores(f, means, precision)
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let mut state = DetectorState::new(self.params(), self.layers(), ())?;
        for (l, (means, precision)) in self.layers.iter().enumerate() {
            state.put(format!("layer_{l}.means"), means);
            state.put(format!("layer_{l}.precision"), precision);
        }
        Ok(state)
    }
}
