//! ODIN (Liang et al. 2018) as Lee et al. ran it (`docs/method.md#odin`): `max_c softmax(f(x~) / T)_c`
//! after the input step of `docs/method.md#input-pre-processing` on the loss
//! `CE(f / T, argmax f)`; one score variant per temperature, scored at every magnitude of its
//! grid, the (temperature, magnitude) chosen on the validation rows. The stored score is its
//! logarithm, `max_c log_softmax(f / T)_c` (monotone: the same metrics, no underflow).
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::logit::single_layer;
use super::params::{check_magnitudes, DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// ODIN's temperatures (Lee et al.'s grid).
pub const ODIN_TEMPERATURES: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// ODIN's input-perturbation magnitudes (Lee et al.'s grid).
pub const ODIN_MAGNITUDES: [f64; 11] = [
    0.0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01, 0.05, 0.1, 0.2,
];

/// ODIN's grid of temperatures and magnitudes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OdinParams {
    /// Temperatures `T`, one score variant each.
    pub temperatures: Vec<f64>,
    /// Input-perturbation magnitudes.
    pub magnitudes: Vec<f64>,
}

impl Default for OdinParams {
    /// Lee et al.'s grid ([`ODIN_TEMPERATURES`] x [`ODIN_MAGNITUDES`]).
    fn default() -> Self {
        OdinParams {
            temperatures: ODIN_TEMPERATURES.to_vec(),
            magnitudes: ODIN_MAGNITUDES.to_vec(),
        }
    }
}

impl Fit for OdinParams {
    fn check(&self) -> Result<()> {
        if self.temperatures.is_empty() {
            return Err(Error::bad_option(
                "odin.temperatures",
                "needs at least one temperature",
            ));
        }
        if let Some(t) = self
            .temperatures
            .iter()
            .find(|t| !t.is_finite() || **t <= 0.0)
        {
            return Err(Error::bad_option(
                "odin.temperatures",
                format!("temperature {t} is not a finite number > 0"),
            ));
        }
        check_magnitudes("odin.magnitudes", &self.magnitudes)
    }

    fn magnitudes(&self) -> Vec<f64> {
        self.magnitudes.clone()
    }

    fn temperatures(&self) -> Option<&[f64]> {
        Some(&self.temperatures)
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        Ok(Box::new(Odin {
            params: self.clone(),
            layer: data.last_layer(),
            head: data.linear_head()?,
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        Ok(Box::new(Odin {
            params: self.clone(),
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
        }))
    }
}

/// ODIN at each of its temperatures (one variant each).
pub struct Odin {
    params: OdinParams,
    layer: usize,
    head: LinearHead,
}

impl Odin {
    /// ODIN on feature layer `layer` (the last) with Lee et al.'s grid.
    pub fn new(layer: usize, head: LinearHead) -> Odin {
        Odin {
            params: OdinParams::default(),
            layer,
            head,
        }
    }
}

impl FittedDetector for Odin {
    fn params(&self) -> DetectorParams {
        DetectorParams::Odin(self.params.clone())
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn variants(&self) -> usize {
        self.params.temperatures.len()
    }

    /// `log_softmax(f / T)`: its maximum is the log of ODIN's score, and the pre-processing loss
    /// `-mean(log_softmax(f / T)_{argmax})` is ODIN's cross-entropy with the predicted class.
    fn layer_scores(&self, _layer: usize, variant: usize) -> Result<Box<ScoreFn<'_>>> {
        let t = *self.params.temperatures.get(variant).ok_or_else(|| {
            Error::Shape(format!(
                "ODIN has {} temperatures, no variant {variant}",
                self.params.temperatures.len()
            ))
        })?;
        Ok(Box::new(move |phi: &Tensor| {
            let logits = self.head.logits(phi) / t;
            Ok(logits.log_softmax(1, logits.kind()))
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let mut state = DetectorState::new(self.params(), vec![self.layer], ())?;
        self.head.save_into(&mut state);
        Ok(state)
    }
}
