//! The classifier's final linear layer, which the post-hoc detectors apply to the penultimate
//! features `phi` (the mean-pooled last feature layer) to get the logits.
use tch::{Device, Tensor};

use super::contract::DetectorState;
use crate::error::Result;
use crate::models::Classifier;

/// The classifier's final linear layer on the scoring device.
#[derive(Debug)]
pub struct LinearHead {
    /// Weight `[C, d]`.
    pub weight: Tensor,
    /// Bias `[C]`.
    pub bias: Tensor,
}

impl LinearHead {
    /// The head of `net`, detached, on `device`; fails for a model without a known head.
    pub fn of(net: &dyn Classifier, device: Device) -> Result<LinearHead> {
        let (weight, bias) = net.linear_head()?;
        Ok(LinearHead {
            weight: weight.detach().to_device(device),
            bias: bias.detach().to_device(device),
        })
    }

    /// The logits `phi W^T + b` of penultimate features `phi` `[N, d]`, in `phi`'s kind.
    pub fn logits(&self, phi: &Tensor) -> Tensor {
        let k = phi.kind();
        phi.matmul(&self.weight.to_kind(k).tr()) + self.bias.to_kind(k)
    }

    /// Adds the head to a detector's saved state as `head.weight` and `head.bias`.
    pub fn save_into(&self, state: &mut DetectorState) {
        state.put("head.weight", &self.weight);
        state.put("head.bias", &self.bias);
    }

    /// The head saved by [`LinearHead::save_into`], on `device`.
    pub fn restore(state: &DetectorState, device: Device) -> Result<LinearHead> {
        Ok(LinearHead {
            weight: state.tensor("head.weight")?.to_device(device),
            bias: state.tensor("head.bias")?.to_device(device),
        })
    }
}
