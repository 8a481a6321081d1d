//! The detector contract, the same for every kind: validated parameters
//! ([`DetectorParams`]) are fitted on a classifier's in-distribution training data
//! ([`TrainingData`]) into a [`FittedDetector`], a value that scores a batch of features and
//! saves to, and loads from, one safetensors file with a JSON sidecar ([`save_detector`],
//! [`load_detector`]).
//!
//! ```text
//! DetectorParams::default_for(kind) / parsed options
//!   --check--> DetectorParams::fit(&dyn TrainingData) --> Box<dyn FittedDetector>
//!   FittedDetector::layer_scores(layer, variant)  --> class scores of a batch of features
//!   save_detector / load_detector                 <-> {name}.safetensors + {name}.json
//! ```
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::flow::FlowModel;
use super::gaussian::LayerStats;
use super::head::LinearHead;
use super::params::DetectorParams;
use super::{DetectorKind, ScoreFn};
use crate::error::{Error, Result};
use crate::models::checkpoint::{file_sha256, read_tensors, sidecar_path, write_tensors};

/// The in-distribution training data a detector is fitted on: a classifier's train features and
/// what the earlier stages made from them. Detectors read only what they need.
pub trait TrainingData {
    /// Number of feature layers of the classifier.
    fn num_layers(&self) -> usize;

    /// The train features of `layer`, `[M, C_l]` on the CPU, in stored order.
    fn train_features(&self, layer: usize) -> Result<Tensor>;

    /// The class statistics of `layer`: class means, whitening, tied precision
    /// (`docs/method.md#class-statistics-and-whitening`).
    fn layer_stats(&self, layer: usize) -> Result<LayerStats>;

    /// The classifier's final linear layer, on [`TrainingData::device`].
    fn linear_head(&self) -> Result<LinearHead>;

    /// The trained flows (`rf-train`) of every layer that has one, ascending, in `kind` on
    /// [`TrainingData::device`]; an error naming where they belong when there is none.
    fn trained_flows(&self, kind: Kind) -> Result<Vec<TrainedFlow>>;

    /// The device the fitted detector computes on.
    fn device(&self) -> Device;

    /// The last feature layer (the penultimate features of the post-hoc detectors).
    fn last_layer(&self) -> usize {
        self.num_layers().saturating_sub(1)
    }
}

/// One layer's trained flow, as [`TrainingData::trained_flows`] finds it.
pub struct TrainedFlow {
    /// The feature layer.
    pub layer: usize,
    /// Where it was read from (named in errors).
    pub source: PathBuf,
    /// The flows of every class of the layer.
    pub model: FlowModel,
}

/// A fitted detector: per feature layer (and variant), a differentiable map from mean-pooled
/// features `[N, d]` to class scores `[N, C]` (higher = more in-distribution; the detector's
/// score is their maximum), which the scoring stage runs with input pre-processing. Detectors of
/// a single score return `[N, 1]`.
pub trait FittedDetector {
    /// The parameters it was fitted with.
    fn params(&self) -> DetectorParams;

    /// The feature layers it scores, ascending.
    fn layers(&self) -> Vec<usize>;

    /// Number of score variants per layer (ODIN: one per temperature), each a column of the
    /// score files of a [`super::ScoreLayout::LayerColumns`] detector; 1 for most detectors.
    fn variants(&self) -> usize {
        1
    }

    /// The class scores of feature layer `layer` (one of [`FittedDetector::layers`]) in variant
    /// `variant` (below [`FittedDetector::variants`]), ready on the detector's device.
    fn layer_scores(&self, layer: usize, variant: usize) -> Result<Box<ScoreFn<'_>>>;

    /// Everything it needs to score again: what [`save_detector`] writes.
    fn state(&self) -> Result<DetectorState>;

    /// Which detector this is.
    fn kind(&self) -> DetectorKind {
        self.params().kind()
    }
}

/// A fitted detector's contents: its parameters, layers, small facts (JSON) and named tensors.
#[derive(Debug)]
pub struct DetectorState {
    /// The parameters it was fitted with.
    pub params: DetectorParams,
    /// The feature layers it scores.
    pub layers: Vec<usize>,
    /// Facts of the fitted value that are not tensors (e.g. ViM's `alpha`), as JSON.
    pub meta: serde_json::Value,
    /// Named tensors (CPU).
    pub tensors: HashMap<String, Tensor>,
}

impl DetectorState {
    /// A state with no tensors yet.
    pub fn new(params: DetectorParams, layers: Vec<usize>, meta: impl Serialize) -> Result<Self> {
        let meta = serde_json::to_value(meta)
            .map_err(|e| Error::BadData(format!("detector state: {e}")))?;
        Ok(DetectorState {
            params,
            layers,
            meta,
            tensors: HashMap::new(),
        })
    }

    /// Adds tensor `name` (detached, on the CPU).
    pub fn with(mut self, name: impl Into<String>, tensor: &Tensor) -> Self {
        self.put(name, tensor);
        self
    }

    /// Adds tensor `name` (detached, on the CPU).
    pub fn put(&mut self, name: impl Into<String>, tensor: &Tensor) {
        self.tensors
            .insert(name.into(), tensor.detach().to_device(Device::Cpu));
    }

    /// Tensor `name`; an error names it when it is missing.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .map(Tensor::shallow_clone)
            .ok_or_else(|| {
                Error::BadData(format!(
                    "{} detector state without tensor `{name}`",
                    self.params.kind().label()
                ))
            })
    }

    /// The facts in `meta` as `T`.
    pub fn meta<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.meta).map_err(|e| {
            Error::BadData(format!(
                "{} detector state: `meta`: {e}",
                self.params.kind().label()
            ))
        })
    }
}

/// The version of the saved-detector layout ([`SavedDetector::format`]).
pub const DETECTOR_FORMAT: &str = "resflow-detector-1";

/// The JSON sidecar of a saved detector (`{name}.json` next to `{name}.safetensors`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedDetector {
    /// [`DETECTOR_FORMAT`].
    pub format: String,
    /// The detector kind (also the `kind` field of `params`).
    pub kind: DetectorKind,
    /// Its parameters.
    pub params: DetectorParams,
    /// The feature layers it scores.
    pub layers: Vec<usize>,
    /// Facts of the fitted value that are not tensors.
    pub meta: serde_json::Value,
    /// Name, dtype and shape of every tensor in the safetensors file.
    pub tensors: BTreeMap<String, (String, Vec<i64>)>,
    /// SHA-256 of the safetensors file, checked on loading.
    pub tensors_sha256: String,
    /// Version of resflow that wrote it.
    pub library_version: String,
}

/// Saves `detector` as `weights` (a `.safetensors` file of its tensors) and its sidecar
/// (`weights` with extension `.json`), each written atomically, the sidecar last.
pub fn save_detector(detector: &dyn FittedDetector, weights: &Path) -> Result<()> {
    let state = detector.state()?;
    if let Some(dir) = weights.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    write_tensors(weights, &state.tensors)?;
    let saved = SavedDetector {
        format: DETECTOR_FORMAT.to_string(),
        kind: state.params.kind(),
        tensors: state
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), (format!("{:?}", t.kind()), t.size())))
            .collect(),
        params: state.params,
        layers: state.layers,
        meta: state.meta,
        tensors_sha256: file_sha256(weights)?,
        library_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    crate::io::write_json(&sidecar_path(weights), &saved)
}

/// Loads a detector saved by [`save_detector`] onto `device`. Refuses a sidecar of another
/// format, tensors that are not the ones the sidecar describes (their SHA-256 differs) and
/// parameters that do not pass their checks.
pub fn load_detector(weights: &Path, device: Device) -> Result<Box<dyn FittedDetector>> {
    let sidecar: PathBuf = sidecar_path(weights);
    let saved: SavedDetector = crate::io::read_json_with(
        &sidecar,
        "save the detector again (its .safetensors and .json are written together)",
    )?;
    if saved.format != DETECTOR_FORMAT {
        return Err(Error::format(
            &sidecar,
            format!(
                "format `{}`, expected `{DETECTOR_FORMAT}`; save the detector again with this version",
                saved.format
            ),
        ));
    }
    if !weights.is_file() {
        return Err(Error::missing(
            weights,
            format!(
                "the tensors of {} are not here; save the detector again",
                sidecar.display()
            ),
        ));
    }
    if saved.kind != saved.params.kind() {
        return Err(Error::format(
            &sidecar,
            format!(
                "`kind` is {} but `params` are those of {}",
                saved.kind,
                saved.params.kind()
            ),
        ));
    }
    if file_sha256(weights)? != saved.tensors_sha256 {
        return Err(Error::provenance(
            weights,
            format!(
                "not the tensors {} describes (their SHA-256 differs); save the detector again",
                sidecar.display()
            ),
        ));
    }
    saved
        .params
        .check()
        .map_err(|e| Error::format(&sidecar, e.to_string()))?;
    let state = DetectorState {
        params: saved.params.clone(),
        layers: saved.layers,
        meta: saved.meta,
        tensors: read_tensors(weights)?,
    };
    saved
        .params
        .restore(&state, device)
        .map_err(|e| Error::format(weights, e.to_string()))
}
