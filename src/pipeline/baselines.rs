//! The baselines' scoring stage (`rf-baselines`, SPEC 12): MSP, ODIN, Energy, MaxLogit, KNN and
//! ViM ([`crate::detect::baselines`]) on the classifier's last feature layer, for the test split,
//! each prepared OOD set and, with FGSM validation, the FGSM sets. Each writes one score file per
//! (set, magnitude) under its own folder, `[N, 1]` (ODIN: one column per temperature, one file
//! per magnitude of its grid), through the same scoring code as the other detectors
//! ([`super::score::score`]).
use std::path::PathBuf;

use tch::Tensor;

use super::score::{self, ScoringStage};
use super::Common;
use crate::detect::baselines::{self, BaselineParams};
use crate::detect::DetectorKind;
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::progress::Progress;

/// The stage's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run, data and device (batch size default [`score::SCORING_BATCH_SIZE`]).
    pub common: Common,
    /// The baselines to score, each one of [`DetectorKind::BASELINES`].
    pub detectors: Vec<DetectorKind>,
    /// With [`Validation::Fgsm`], also the FGSM sets written by `rf-fgsm`.
    pub validation: Validation,
    /// Classifier checkpoint; `None`: the one `rf-prepare` used (from the feature manifest).
    pub classifier: Option<PathBuf>,
    /// KNN's and ViM's settings.
    pub params: BaselineParams,
}

impl Default for Options {
    /// Every baseline on the OOD sets.
    fn default() -> Self {
        Options {
            common: Common::default(),
            detectors: DetectorKind::BASELINES.to_vec(),
            validation: Validation::Ood,
            classifier: None,
            params: BaselineParams::default(),
        }
    }
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per baseline: its score folder.
    pub written: Vec<(DetectorKind, PathBuf)>,
    /// The sets scored (OOD sets, then the FGSM sets' name when validating on them).
    pub sets: Vec<String>,
}

/// Runs the stage: opens the inputs once, then builds and scores each baseline.
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    if options.detectors.is_empty() {
        return Err(Error::Invalid("no baseline to score".into()));
    }
    if let Some(d) = options.detectors.iter().find(|d| d.regression()) {
        return Err(Error::Invalid(format!(
            "{} is not a baseline; score it with {}",
            d.label(),
            d.stage()
        )));
    }
    let stage = ScoringStage::open(&score::Options {
        common: options.common.clone(),
        detector: options.detectors[0],
        validation: options.validation,
        classifier: options.classifier.clone(),
        magnitudes: vec![0.0],
    })?;
    let inputs = stage.inputs()?;
    let last = stage.manifest.layer_channels.len() - 1;
    let needs_train = options
        .detectors
        .iter()
        .any(|d| matches!(d, DetectorKind::Knn | DetectorKind::Vim));
    let train = if needs_train {
        stage.features.read_layer(&stage.manifest, "train", last)?
    } else {
        Tensor::zeros([0, 0], (tch::Kind::Float, tch::Device::Cpu))
    };
    let mut written = Vec::new();
    let mut sets = Vec::new();
    for &kind in &options.detectors {
        let detector = baselines::build(
            kind,
            stage.classifier.net.as_ref(),
            &train,
            &options.params,
            stage.device,
        )?;
        sets = score::score(
            &stage,
            &inputs,
            detector.as_ref(),
            &baselines::magnitudes(kind),
            progress,
        )?;
        written.push((kind, stage.run.detector_dir(kind)));
    }
    Ok(Summary { written, sets })
}
