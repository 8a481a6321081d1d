//! The residual flow detector (`docs/method.md#the-residual-flow`): per layer, the log-density
//! `log p_c` of the mean-pooled features under the flow of each class `c`, with input
//! pre-processing; a logistic regression over the layers' best class scores is the detector.
//! Its flows are trained by `rf-train` (`docs/method.md#flow-training`); fitting collects them
//! with each layer's class means and checks that they were trained on the current features.
use std::collections::HashMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainedFlow, TrainingData};
use super::flow::{FlowMeta, FlowModel};
use super::gaussian::same_whitening;
use super::params::{check_magnitudes, DetectorParams, Fit};
use super::{ScoreFn, MAGNITUDES};
use crate::error::{Error, Result};

/// The residual flow detector's parameters (the flows' own are `rf-train`'s options).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResflowParams {
    /// Input pre-processing magnitudes.
    pub magnitudes: Vec<f64>,
}

impl Default for ResflowParams {
    /// The reference's seven magnitudes ([`MAGNITUDES`]).
    fn default() -> Self {
        ResflowParams {
            magnitudes: MAGNITUDES.to_vec(),
        }
    }
}

/// The kind the flows score in.
const FLOW_KIND: Kind = Kind::Float;

impl Fit for ResflowParams {
    fn check(&self) -> Result<()> {
        check_magnitudes("resflow.magnitudes", &self.magnitudes)
    }

    fn magnitudes(&self) -> Vec<f64> {
        self.magnitudes.clone()
    }

    /// The trained flow of every layer that has one, each checked against the layer's classes,
    /// channels and whitening.
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let mut layers = Vec::new();
        for TrainedFlow {
            layer,
            source,
            model,
        } in data.trained_flows(FLOW_KIND)?
        {
            let stats = data.layer_stats(layer)?;
            check_flow(&model, layer, &stats.means, &source)?;
            if !same_whitening(&model.a_inv, &stats.whitening.a_inv) {
                return Err(Error::provenance(
                    &source,
                    format!(
                        "this flow was trained on other features (layer {layer}'s whitening \
                         differs, e.g. after a new classifier or rf-prepare run); retrain it with \
                         `rf-train --layer {layer}`"
                    ),
                ));
            }
            layers.push(FlowLayer::new(layer, model, stats.means, data.device()));
        }
        Ok(Box::new(ResidualFlow {
            params: self.clone(),
            layers,
        }))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let metas: Vec<FlowMeta> = state.meta::<ResflowMeta>()?.flows;
        if metas.len() != state.layers.len() {
            return Err(Error::BadData(format!(
                "residual flow state: {} flow descriptions for layers {:?}",
                metas.len(),
                state.layers
            )));
        }
        let mut layers = Vec::new();
        for (&layer, meta) in state.layers.iter().zip(&metas) {
            let source = PathBuf::from(format!("layer_{layer}"));
            let dicts = (0..meta.spec.num_classes)
                .map(|c| {
                    let prefix = format!("layer_{layer}.class_{c}.");
                    let dict: HashMap<String, Tensor> = state
                        .tensors
                        .iter()
                        .filter_map(|(n, t)| {
                            n.strip_prefix(&prefix)
                                .map(|name| (name.to_string(), t.shallow_clone()))
                        })
                        .collect();
                    (source.join(format!("class_{c}")), dict)
                })
                .collect::<Vec<_>>();
            let model = FlowModel::from_state_dicts(meta, &dicts, FLOW_KIND, device)?;
            let means = state.tensor(&format!("layer_{layer}.means"))?;
            check_flow(&model, layer, &means, &source)?;
            layers.push(FlowLayer::new(layer, model, means, device));
        }
        Ok(Box::new(ResidualFlow {
            params: self.clone(),
            layers,
        }))
    }
}

/// Refuses a flow whose classes or dimension are not those of `layer`'s class means `[C, d]`.
fn check_flow(
    flow: &FlowModel,
    layer: usize,
    means: &Tensor,
    source: &std::path::Path,
) -> Result<()> {
    let (classes, channels) = (means.size()[0], means.size()[1]);
    if flow.meta.dim as i64 != channels || flow.num_classes() as i64 != classes {
        return Err(Error::provenance(
            source,
            format!(
                "flow of {} classes in dimension {}, but layer {layer} has {classes} classes and \
                 {channels} channels; retrain it with rf-train",
                flow.num_classes(),
                flow.meta.dim
            ),
        ));
    }
    Ok(())
}

/// The residual flow's fitted facts that are not tensors: each layer's flow description.
#[derive(Debug, Serialize, Deserialize)]
struct ResflowMeta {
    flows: Vec<FlowMeta>,
}

/// One trained layer: its flow, and the class means the flow's input is centred by.
struct FlowLayer {
    layer: usize,
    flow: FlowModel,
    /// Class means `[C, d]`, float64 (as saved).
    means: Tensor,
    /// The same in the flow's kind on the scoring device.
    scoring_means: Tensor,
}

impl FlowLayer {
    fn new(layer: usize, flow: FlowModel, means: Tensor, device: Device) -> FlowLayer {
        let scoring_means = means.to_kind(FLOW_KIND).to_device(device);
        FlowLayer {
            layer,
            flow,
            means,
            scoring_means,
        }
    }
}

/// The residual flow over the layers that have a trained flow.
pub struct ResidualFlow {
    params: ResflowParams,
    layers: Vec<FlowLayer>,
}

impl FittedDetector for ResidualFlow {
    fn params(&self) -> DetectorParams {
        DetectorParams::Resflow(self.params.clone())
    }

    fn layers(&self) -> Vec<usize> {
        self.layers.iter().map(|l| l.layer).collect()
    }

    fn layer_scores(&self, layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        let l = self
            .layers
            .iter()
            .find(|l| l.layer == layer)
            .ok_or_else(|| Error::Shape(format!("no trained flow for layer {layer}")))?;
        Ok(Box::new(move |f: &Tensor| {
            l.flow.log_prob(f, &l.scoring_means)
        }))
    }

    fn state(&self) -> Result<DetectorState> {
        let meta = ResflowMeta {
            flows: self.layers.iter().map(|l| l.flow.meta.clone()).collect(),
        };
        let mut state = DetectorState::new(self.params(), self.layers(), meta)?;
        for l in &self.layers {
            state.put(format!("layer_{}.means", l.layer), &l.means);
            for c in 0..l.flow.num_classes() {
                for (name, t) in l.flow.class_state_dict(c)? {
                    state.put(format!("layer_{}.class_{c}.{name}", l.layer), &t);
                }
            }
        }
        Ok(state)
    }
}
