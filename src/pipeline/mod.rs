//! The pipeline's stages, one file each, run in this order ([`STAGES`]): every stage takes its
//! options (with [`Default`]) and a [`crate::progress::Progress`], and returns a summary that the
//! binary prints.
//!
//! | stage | binary | reads | writes |
//! | --- | --- | --- | --- |
//! | [`classifier`] | `rf-classifier` | data | `pre_trained/{net}_{dataset}.safetensors` |
//! | [`prepare`] | `rf-prepare` | classifier, data | `features/` |
//! | [`fgsm`] | `rf-fgsm` | classifier, test split | `fgsm/` |
//! | [`train_flow`] | `rf-train` | `features/` | `flow/layer_{l}/`, `history/` |
//! | [`score`] | `rf-mahalanobis`, `rf-score`, `rf-baselines` | classifier, `features/`, `flow/` | score files |
//! | [`regress`] | `rf-regress` | score files | `results.json`, `results.md`, `plots/` |
//!
//! [`compare`] is part of `rf-regress`: the paired comparison of the detectors on each OOD set.
pub mod bundle;
pub mod classifier;
pub mod compare;
pub mod detect;
pub mod export;
pub mod fgsm;
pub mod prepare;
pub mod regress;
pub mod score;
pub mod train_flow;
pub mod warnings;

use std::path::{Path, PathBuf};

use tch::Device;

use crate::data::DataSource;
use crate::error::{Error, Result};
use crate::models::{load_checkpoint, LoadedClassifier, NetType};
use crate::store::RunDir;

/// The stages' binaries in pipeline order (`rf-train` once per layer; `rf-fgsm` only for FGSM
/// validation). Scripts read this list from `rf-data stages`.
pub const STAGES: [&str; 8] = [
    "rf-classifier",
    "rf-prepare",
    "rf-fgsm",
    "rf-mahalanobis",
    "rf-baselines",
    "rf-train",
    "rf-score",
    "rf-regress",
];

/// Settings every stage shares: which run, where the data and outputs are, on what device.
#[derive(Debug, Clone)]
pub struct Common {
    /// In-distribution data set: a registry name, `folder:PATH` or `NAME=PATH`
    /// ([`crate::data::source`]).
    pub dataset: String,
    /// Classifier architecture.
    pub net_type: NetType,
    /// Folder holding the data sets.
    pub dataroot: PathBuf,
    /// Folder for the pipeline's outputs.
    pub outf: PathBuf,
    /// Compute device.
    pub device: Device,
    /// Random seed (shuffling, initialisation, noise).
    pub seed: u64,
    /// Batch size; `None` for the stage's default.
    pub batch_size: Option<usize>,
}

impl Default for Common {
    /// The demo's settings: ResNet on Fashion-MNIST, `data/`, `output/`, CPU, seed 0.
    fn default() -> Self {
        Common {
            dataset: "fashion-mnist".to_string(),
            net_type: NetType::Resnet,
            dataroot: PathBuf::from("data"),
            outf: PathBuf::from("output"),
            device: Device::Cpu,
            seed: 0,
            batch_size: None,
        }
    }
}

impl Common {
    /// The in-distribution set's name (the registry name, or the name of an image folder).
    pub fn dataset_name(&self) -> String {
        crate::data::source::name_of(&self.dataset)
    }

    /// The in-distribution set, parsed and (for folders) located.
    pub fn dataset_source(&self) -> Result<DataSource> {
        DataSource::parse(&self.dataset)
    }

    /// The run folder `{outf}/{net}_{dataset name}`.
    pub fn run_dir(&self) -> RunDir {
        RunDir::new(&self.outf, self.net_type.name(), &self.dataset_name())
    }

    /// The batch size given, or `default`.
    pub fn batch_size_or(&self, default: usize) -> usize {
        self.batch_size.unwrap_or(default)
    }

    /// Where the classifier of this network and data set lives unless `--classifier` says
    /// otherwise: `pre_trained/{net}_{dataset name}.safetensors` (`.pt` for TorchScript models).
    pub fn default_classifier_path(&self) -> PathBuf {
        let extension = match self.net_type {
            NetType::TorchScript => "pt",
            _ => "safetensors",
        };
        PathBuf::from("pre_trained").join(format!(
            "{}_{}.{extension}",
            self.net_type.name(),
            self.dataset_name()
        ))
    }

    /// Loads the classifier at `explicit` or at [`Common::default_classifier_path`]; returns its
    /// path too. Refuses an unknown data set (before looking for a checkpoint), and a classifier
    /// whose sidecar says another architecture or training set than the options (the run folder
    /// is named after them; a TorchScript sidecar without a data set is not checked).
    pub fn load_classifier(&self, explicit: Option<&Path>) -> Result<(PathBuf, LoadedClassifier)> {
        let dataset = self.dataset_source()?.name;
        let path = explicit
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.default_classifier_path());
        let classifier = load_checkpoint(&path, self.device)?;
        let meta = &classifier.meta;
        if meta.architecture != self.net_type {
            return Err(Error::provenance(
                &path,
                format!(
                    "a {} classifier, but --net-type {} was given; pass --net-type {} (outputs go \
                     to {}_{}/)",
                    meta.architecture.name(),
                    self.net_type.name(),
                    meta.architecture.name(),
                    meta.architecture.name(),
                    dataset
                ),
            ));
        }
        if !meta.dataset.is_empty() && meta.dataset != dataset {
            return Err(Error::provenance(
                &path,
                format!(
                    "a classifier trained on `{}`, but --dataset {} was given; pass the classifier \
                     trained on `{}` (--classifier PATH) or --dataset {}",
                    meta.dataset, self.dataset, dataset, meta.dataset
                ),
            ));
        }
        Ok((path, classifier))
    }
}
