//! Command-line flags shared by every binary, defined once.
//!
//! Flags are kebab-case; the original scripts' snake_case spellings (`--net_type`, `--batch_size`)
//! are accepted as aliases so that old commands keep working with the binary name swapped.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use crate::detector::Validation;
use crate::device::{select_device, DeviceChoice};
use crate::error::{Error, Result};
use crate::models::{load_checkpoint, LoadedClassifier};

/// The classifier architectures of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetType {
    /// ResNet-34 for 32x32 inputs.
    Resnet,
    /// DenseNet-BC-100.
    Densenet,
}

impl NetType {
    /// The lowercase name used in file names and by the original scripts.
    pub fn name(self) -> &'static str {
        match self {
            NetType::Resnet => "resnet",
            NetType::Densenet => "densenet",
        }
    }
}

/// Flags common to the pipeline stages.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// In-distribution dataset (see `rf-data list`).
    #[arg(long, default_value = "fashion-mnist")]
    pub dataset: String,
    /// Classifier architecture.
    #[arg(long = "net-type", alias = "net_type", value_enum, default_value_t = NetType::Resnet)]
    pub net_type: NetType,
    /// CUDA device index; the CPU is used (and said so) when CUDA or that device is missing.
    #[arg(long)]
    pub gpu: Option<usize>,
    /// Folder holding the datasets.
    #[arg(long, default_value = "data")]
    pub dataroot: PathBuf,
    /// Folder for the pipeline's outputs.
    #[arg(long, default_value = "output")]
    pub outf: PathBuf,
    /// Random seed (shuffling, initialisation, noise).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Batch size; each stage has its own default.
    #[arg(long = "batch-size", alias = "batch_size")]
    pub batch_size: Option<usize>,
}

impl CommonArgs {
    /// The device for this run; prints the notice when the CPU replaces a missing GPU.
    pub fn device(&self) -> DeviceChoice {
        let choice = select_device(self.gpu);
        if let Some(notice) = &choice.notice {
            eprintln!("note: {notice}");
        }
        choice
    }

    /// Where the classifier of this network and data set lives unless `--classifier` says
    /// otherwise: `pre_trained/{net}_{dataset}.safetensors`.
    pub fn default_classifier_path(&self) -> PathBuf {
        PathBuf::from("pre_trained").join(format!(
            "{}_{}.safetensors",
            self.net_type.name(),
            self.dataset
        ))
    }

    /// Loads the classifier at `explicit` (`--classifier`) or at
    /// [`CommonArgs::default_classifier_path`]; returns its path too. A failure says how to train one.
    pub fn load_classifier(
        &self,
        explicit: Option<&Path>,
        device: tch::Device,
    ) -> Result<(PathBuf, LoadedClassifier)> {
        let path = explicit
            .map(Path::to_path_buf)
            .unwrap_or_else(|| self.default_classifier_path());
        let classifier = load_checkpoint(&path, device).map_err(|e| {
            Error::Invalid(format!(
                "{e}\n(train one with `rf-classifier train --dataset {}`)",
                self.dataset
            ))
        })?;
        Ok((path, classifier))
    }

    /// The batch size given, or `default`.
    pub fn batch_size_or(&self, default: usize) -> usize {
        self.batch_size.unwrap_or(default)
    }
}

/// `--validation-src` (alias `--validation_src`, case-insensitive): `ood` (alias `io`, the
/// default) or `fgsm`, which makes the stages also process the FGSM sets written by rf-fgsm.
#[derive(Debug, Clone, Copy, Args)]
pub struct ValidationArgs {
    /// Validation data: the OOD sets themselves (`ood`, alias `io`) or FGSM samples (`fgsm`).
    #[arg(
        long = "validation-src",
        alias = "validation_src",
        value_enum,
        ignore_case = true,
        default_value_t = Validation::Ood
    )]
    pub validation_src: Validation,
}

impl ValidationArgs {
    /// True for `fgsm`.
    pub fn fgsm(&self) -> bool {
        self.validation_src == Validation::Fgsm
    }
}

/// Flags of the scoring stages (`rf-mahalanobis`, `rf-score`).
#[derive(Debug, Clone, Args)]
pub struct ScoringArgs {
    /// The shared flags.
    #[command(flatten)]
    pub common: CommonArgs,
    /// In-distribution validation source.
    #[command(flatten)]
    pub validation: ValidationArgs,
    /// Classifier checkpoint (default: the one rf-prepare used, from the feature manifest).
    #[arg(long)]
    pub classifier: Option<PathBuf>,
}
