//! The residual flow detector (SPEC sections 4 and 6): per layer, the log-density `log p_c` of
//! the mean-pooled features under the flow of each class `c`.
use std::path::PathBuf;

use tch::{Device, Kind, Tensor};

use super::flow::FlowModel;
use super::gaussian::{same_whitening, LayerStats};
use super::{Detector, DetectorKind, ScoreFn};
use crate::error::{Error, Result};

/// One trained layer: its flow folder, the class means the flow's input is centred by, and the
/// layer's current whitening (the flow must have been trained on it).
struct FlowLayer {
    layer: usize,
    dir: PathBuf,
    means: Tensor,
    a_inv: Tensor,
}

/// The residual flow over the layers that have a trained flow; each flow is loaded when its
/// layer is scored.
pub struct ResidualFlow {
    layers: Vec<FlowLayer>,
    device: Device,
}

impl ResidualFlow {
    /// The detector of the trained layers `(layer, flow folder, the layer's statistics)`, in
    /// ascending layer order.
    pub fn new(layers: Vec<(usize, PathBuf, LayerStats)>, device: Device) -> ResidualFlow {
        let layers = layers
            .into_iter()
            .map(|(layer, dir, stats)| FlowLayer {
                layer,
                dir,
                means: stats.means,
                a_inv: stats.whitening.a_inv,
            })
            .collect();
        ResidualFlow { layers, device }
    }
}

impl Detector for ResidualFlow {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Resflow
    }

    fn layers(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.layer).collect()
    }

    /// Loads the layer's flow and checks it against the layer's classes, channels and whitening.
    fn layer_scores(&self, layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        let l = self
            .layers
            .iter()
            .find(|l| l.layer == layer)
            .ok_or_else(|| Error::Invalid(format!("no trained flow for layer {layer}")))?;
        let flow = FlowModel::load(&l.dir, Kind::Float, self.device)?;
        let (classes, channels) = (l.means.size()[0], l.means.size()[1]);
        if flow.meta.dim as i64 != channels || flow.num_classes() as i64 != classes {
            return Err(Error::format(
                &l.dir,
                format!(
                    "flow of {} classes in dimension {}, but layer {layer} has {classes} classes and {channels} channels; retrain it with rf-train",
                    flow.num_classes(), flow.meta.dim
                ),
            ));
        }
        if !same_whitening(&flow.a_inv, &l.a_inv) {
            return Err(Error::format(
                &l.dir,
                format!(
                    "this flow was trained on other features (layer {layer}'s whitening differs, \
                     e.g. after a new classifier or rf-prepare run); retrain it with \
                     `rf-train --layer {layer}`"
                ),
            ));
        }
        let means = l.means.to_kind(Kind::Float).to_device(self.device);
        Ok(Box::new(move |f: &Tensor| flow.log_prob(f, &means)))
    }
}
