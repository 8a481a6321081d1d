//! GEN, the generalised entropy of the softmax (Liu et al. 2023, `docs/method.md#gen`):
//! `-sum_{j in top M} p_j^gamma (1 - p_j)^gamma` over the `M` largest class probabilities `p` of
//! the logits; higher is more in-distribution.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// GEN's default number of classes `M` (OpenOOD's), used where the classifier has as many.
pub const GEN_TOP_CLASSES: usize = 100;

/// GEN's parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GenParams {
    /// The exponent `gamma` (OpenOOD: 0.1).
    pub gamma: f64,
    /// The number `M` of largest probabilities summed; `None`: [`GEN_TOP_CLASSES`], or every
    /// class where there are fewer.
    pub top: Option<usize>,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            gamma: 0.1,
            top: None,
        }
    }
}

/// GEN's fitted facts that are not tensors.
#[derive(Debug, Serialize, Deserialize)]
struct GenMeta {
    /// The `M` in use.
    top: usize,
}

impl Fit for GenParams {
    fn check(&self) -> Result<()> {
        if !(self.gamma.is_finite() && self.gamma > 0.0) {
            return Err(Error::bad_option(
                "--gen-gamma",
                format!("gamma {} is not a finite number > 0", self.gamma),
            ));
        }
        if self.top == Some(0) {
            return Err(Error::bad_option("--gen-m", "M must be at least 1"));
        }
        Ok(())
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let head = data.linear_head()?;
        let classes = head.weight.size()[0] as usize;
        let top = self.top.unwrap_or(GEN_TOP_CLASSES.min(classes));
        if top > classes {
            return Err(Error::bad_option(
                "--gen-m",
                format!("M = {top} is more than the classifier's {classes} classes"),
            ));
        }
        Ok(Box::new(Gen {
            params: self.clone(),
            layer: data.last_layer(),
            head,
            top,
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let meta: GenMeta = state.meta()?;
        Ok(Box::new(Gen {
            params: self.clone(),
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
            top: meta.top,
        }))
    }
}

/// GEN on the classifier's logits.
pub struct Gen {
    params: GenParams,
    layer: usize,
    head: LinearHead,
    top: usize,
}

impl FittedDetector for Gen {
    fn params(&self) -> DetectorParams {
        DetectorParams::Gen(self.params.clone())
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let p = self
                .head
                .logits(&phi.to_kind(Kind::Double))
                .softmax(1, Kind::Double);
            let top = p.topk(self.top as i64, 1, true, false).0;
            let gamma = self.params.gamma;
            let terms =
                top.pow_tensor_scalar(gamma) * top.neg().g_add_scalar(1.0).pow_tensor_scalar(gamma);
            Ok(-terms.sum_dim_intlist(1, true, Kind::Double))
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let meta = GenMeta { top: self.top };
        let mut state = DetectorState::new(self.params(), vec![self.layer], meta)?;
        self.head.save_into(&mut state);
        Ok(state)
    }
}
