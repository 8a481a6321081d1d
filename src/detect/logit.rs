//! MSP, Energy and MaxLogit: detectors that are a function of the logits alone
//! (`docs/method.md#baseline-detectors`). Their logits are the classifier's final linear layer
//! ([`LinearHead`]) applied to the penultimate features.
//!
//! - [`LogitScore::Msp`]: `max_c softmax(f)_c` (Hendrycks & Gimpel 2017);
//! - [`LogitScore::Energy`]: `logsumexp(f)` (Liu et al. 2020, T = 1);
//! - [`LogitScore::MaxLogit`]: `max_c f_c` (Hendrycks et al. 2022).
use tch::{Device, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::Result;

/// Which function of the logits; these detectors have no parameters, so this is also their
/// [`Fit`] value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitScore {
    /// Maximum softmax probability.
    Msp,
    /// `logsumexp` of the logits.
    Energy,
    /// Maximum logit.
    MaxLogit,
}

impl LogitScore {
    /// The class scores whose maximum is the detector's score: MSP softmax `[N, C]`, MaxLogit
    /// the logits `[N, C]`, Energy `logsumexp` `[N, 1]`.
    pub fn class_scores(self, logits: &Tensor) -> Tensor {
        match self {
            LogitScore::Msp => logits.softmax(1, logits.kind()),
            LogitScore::Energy => logits.logsumexp([1], true),
            LogitScore::MaxLogit => logits.shallow_clone(),
        }
    }

    fn params(self) -> DetectorParams {
        match self {
            LogitScore::Msp => DetectorParams::Msp,
            LogitScore::Energy => DetectorParams::Energy,
            LogitScore::MaxLogit => DetectorParams::MaxLogit,
        }
    }
}

impl Fit for LogitScore {
    fn check(&self) -> Result<()> {
        Ok(())
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        Ok(Box::new(LogitDetector {
            score: *self,
            layer: data.last_layer(),
            head: data.linear_head()?,
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        Ok(Box::new(LogitDetector {
            score: *self,
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
        }))
    }
}

/// The one layer of a post-hoc detector's saved state.
pub fn single_layer(state: &DetectorState) -> Result<usize> {
    match state.layers.as_slice() {
        [layer] => Ok(*layer),
        other => Err(crate::error::Error::BadData(format!(
            "{} detector state for layers {other:?}; it scores exactly one layer",
            state.params.kind().label()
        ))),
    }
}

/// MSP, Energy or MaxLogit on the last feature layer.
pub struct LogitDetector {
    score: LogitScore,
    layer: usize,
    head: LinearHead,
}

impl LogitDetector {
    /// The detector `score` on feature layer `layer` (the last) with the classifier's `head`.
    pub fn new(score: LogitScore, layer: usize, head: LinearHead) -> LogitDetector {
        LogitDetector { score, layer, head }
    }
}

impl FittedDetector for LogitDetector {
    fn params(&self) -> DetectorParams {
        self.score.params()
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            Ok(self.score.class_scores(&self.head.logits(phi)))
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let mut state = DetectorState::new(self.params(), vec![self.layer], ())?;
        self.head.save_into(&mut state);
        Ok(state)
    }
}
