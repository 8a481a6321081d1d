//! A run folder as the detectors' training data ([`TrainingData`]): the train features and
//! class statistics written by `rf-prepare`, the flows trained by `rf-train`, and the loaded
//! classifier's final linear layer.
use std::cell::RefCell;
use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::features::{FeatureDir, FeatureManifest};
use super::RunDir;
use crate::detect::contract::{TrainedFlow, TrainingData};
use crate::detect::flow::FlowModel;
use crate::detect::gaussian::LayerStats;
use crate::detect::head::LinearHead;
use crate::error::{Error, Result};
use crate::models::Classifier;

/// The training data of one run folder for one loaded classifier, on one device. Train features
/// are read once per layer.
pub struct RunTrainingData<'a> {
    run: &'a RunDir,
    features: &'a FeatureDir,
    manifest: &'a FeatureManifest,
    classifier: &'a dyn Classifier,
    device: Device,
    train_features: RefCell<BTreeMap<usize, Tensor>>,
}

impl<'a> RunTrainingData<'a> {
    /// The data of `run` (its feature folder `features` with `manifest`) for `classifier`,
    /// whose detectors compute on `device`.
    pub fn new(
        run: &'a RunDir,
        features: &'a FeatureDir,
        manifest: &'a FeatureManifest,
        classifier: &'a dyn Classifier,
        device: Device,
    ) -> Self {
        RunTrainingData {
            run,
            features,
            manifest,
            classifier,
            device,
            train_features: RefCell::new(BTreeMap::new()),
        }
    }
}

impl TrainingData for RunTrainingData<'_> {
    fn num_layers(&self) -> usize {
        self.manifest.layer_channels.len()
    }

    fn train_features(&self, layer: usize) -> Result<Tensor> {
        if let Some(t) = self.train_features.borrow().get(&layer) {
            return Ok(t.shallow_clone());
        }
        let t = self.features.read_layer(self.manifest, "train", layer)?;
        self.train_features
            .borrow_mut()
            .insert(layer, t.shallow_clone());
        Ok(t)
    }

    fn layer_stats(&self, layer: usize) -> Result<LayerStats> {
        LayerStats::load(&self.features.stats_path(layer))
    }

    fn linear_head(&self) -> Result<LinearHead> {
        LinearHead::of(self.classifier, self.device)
    }

    /// The layers with a flow folder (`flow/layer_{l}/`), each loaded.
    fn trained_flows(&self, kind: Kind) -> Result<Vec<TrainedFlow>> {
        let mut flows = Vec::new();
        for layer in 0..self.num_layers() {
            let dir = self.run.flow_dir(layer);
            if dir.exists() {
                let model = FlowModel::load(&dir, kind, self.device)?;
                flows.push(TrainedFlow {
                    layer,
                    source: dir,
                    model,
                });
            }
        }
        if flows.is_empty() {
            return Err(Error::missing(
                self.run.flows_dir(),
                "no trained flow here; train one per layer with `rf-train --layer L`",
            ));
        }
        Ok(flows)
    }

    fn device(&self) -> Device {
        self.device
    }
}
