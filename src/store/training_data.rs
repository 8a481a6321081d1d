//! A run folder as the detectors' training data ([`TrainingData`]): the train features and
//! class statistics written by `rf-prepare`, the flows trained by `rf-train`, and the loaded
//! classifier's final linear layer.
use std::cell::RefCell;
use std::collections::BTreeMap;

use tch::{Device, Kind, Tensor};

use super::features::{FeatureDir, FeatureManifest};
use super::provenance::{folder_digest, read_manifest, Provenance};
use super::RunDir;
use crate::detect::contract::{TrainedFlow, TrainingData};
use crate::detect::flow::checkpoint::{FLOW_PROVENANCE, META_FILE};
use crate::detect::flow::FlowModel;
use crate::detect::gaussian::LayerStats;
use crate::detect::head::LinearHead;
use crate::error::{Error, Result};
use crate::models::Classifier;

/// The training data of one run folder for one loaded classifier, on one device. Train features
/// are read once per layer; every file is checked against the feature manifest, and the trained
/// flows against the features they were trained on.
pub struct RunTrainingData<'a> {
    run: &'a RunDir,
    features: &'a FeatureDir,
    manifest: &'a FeatureManifest,
    classifier: &'a dyn Classifier,
    device: Device,
    train_features: RefCell<BTreeMap<usize, Tensor>>,
    /// The run's artefacts beyond the feature folder read so far (path relative to the run
    /// folder, digest): the provenance of what is fitted from them.
    read: RefCell<BTreeMap<String, String>>,
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
            read: RefCell::new(BTreeMap::new()),
        }
    }

    /// The artefacts beyond the feature folder that fitting has read (e.g. `flow/layer_2`), with
    /// their digests, for the provenance of the scores; cleared for the next detector.
    pub fn take_inputs_read(&self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.read.borrow_mut())
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
        self.features.read_stats(self.manifest, layer)
    }

    fn linear_head(&self) -> Result<LinearHead> {
        LinearHead::of(self.classifier, self.device)
    }

    /// The layers with a flow folder (`flow/layer_{l}/`), each checked against the statistics it
    /// was trained on (where `rf-train` recorded them) and loaded. A layer whose folder is missing
    /// while `rf-train` left its `.old` (a stopped swap) or `.partial` (a stopped first
    /// checkpoint) is an error, not a layer silently left out.
    fn trained_flows(&self, kind: Kind) -> Result<Vec<TrainedFlow>> {
        let mut flows = Vec::new();
        for layer in 0..self.num_layers() {
            let dir = self.run.flow_dir(layer);
            if let Some(e) = left_by_a_stopped_rf_train(&dir, layer) {
                return Err(e);
            }
            if dir.exists() {
                check_flow_provenance(&dir, layer, self.features, self.manifest)?;
                self.read
                    .borrow_mut()
                    .insert(format!("flow/layer_{layer}"), folder_digest(&dir)?);
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

/// The error for flow folder `dir` of `layer` when it is missing while `rf-train` left a sibling:
/// `.old` (stopped between the renames of a checkpoint swap) or `.partial` (stopped before its
/// first swap, or writing it now); `None` otherwise.
fn left_by_a_stopped_rf_train(dir: &std::path::Path, layer: usize) -> Option<Error> {
    if dir.exists() {
        return None;
    }
    let previous = crate::io::previous_folder(dir);
    let partial = crate::io::partial_folder(dir);
    let (left, what) = if previous.join(META_FILE).exists() {
        let what = format!(
            "rf-train was stopped while it swapped in a new checkpoint of layer {layer}; complete \
             it with `rf-train --layer {layer} --resume`, then rerun this stage"
        );
        (previous, what)
    } else if partial.exists() {
        let what = format!(
            "rf-train --layer {layer} was stopped while it wrote its first checkpoint (or is \
             writing it now); train the layer to the end with `rf-train --layer {layer}`, or \
             remove {} to go on without layer {layer}",
            partial.display()
        );
        (partial, what)
    } else {
        return None;
    };
    Some(Error::missing(
        dir,
        format!("not here, but {} is: {what}", left.display()),
    ))
}

/// Reads the provenance of the trained flow in `dir` (`provenance.json`, written by `rf-train`;
/// `None` for flows without one, such as converted published flows) and checks every file it
/// lists against its digest: a truncated file, or one copied in from another layer or run, is
/// refused with the `rf-train` run that remakes the layer.
pub fn verify_flow_files(dir: &std::path::Path, layer: usize) -> Result<Option<Provenance>> {
    let path = dir.join(FLOW_PROVENANCE);
    if !path.exists() {
        return Ok(None);
    }
    let retrain = format!("rf-train --layer {layer}");
    let trained: Provenance = read_manifest(&path, &retrain)?;
    trained.verify_files(dir, None, &path, &retrain)?;
    Ok(Some(trained))
}

/// Refuses a trained flow whose files differ from those its provenance lists
/// ([`verify_flow_files`]), or whose provenance records other statistics of its layer than the
/// feature folder's: it was trained on other features. Flows without one (converted published
/// flows) are checked by their whitening when fitted.
fn check_flow_provenance(
    dir: &std::path::Path,
    layer: usize,
    features: &FeatureDir,
    manifest: &FeatureManifest,
) -> Result<()> {
    let Some(trained) = verify_flow_files(dir, layer)? else {
        return Ok(());
    };
    let stats = features.stats_path(layer);
    let name = stats
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The statistics as the feature manifest lists them (an error naming it when it does not),
    // and as the flow's provenance records them.
    features.verify(manifest, &stats)?;
    let current = manifest.provenance.files.get(&name).map(|d| &d.sha256);
    let input = format!("features/{name}");
    let Some(recorded) = trained.inputs.get(&input) else {
        let other = trained.inputs.keys().find_map(|k| {
            k.strip_prefix("features/stats_layer")?
                .strip_suffix(".safetensors")
                .map(str::to_string)
        });
        let what = match other {
            Some(k) => format!(
                "records the statistics of layer {k}, not of layer {layer}: another layer's flow \
                 (copied from flow/layer_{k}?)"
            ),
            None => format!(
                "records no `{input}` among its inputs, so what the flow was trained on is unknown"
            ),
        };
        return Err(Error::provenance(
            dir.join(FLOW_PROVENANCE),
            format!("{what}; retrain it with `rf-train --layer {layer}`"),
        ));
    };
    if Some(recorded) != current {
        return Err(Error::provenance(
            dir,
            format!(
                "this flow was trained on other features (layer {layer}'s statistics differ, e.g. \
                 after a new classifier or rf-prepare run); retrain it with `rf-train --layer \
                 {layer}`"
            ),
        ));
    }
    Ok(())
}
