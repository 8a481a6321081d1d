//! The scoring stages (`rf-mahalanobis`, `rf-score`, `rf-baselines`;
//! `docs/method.md#input-pre-processing`): each detector is fitted on the run's training data
//! ([`RunTrainingData`], through [`DetectorParams::fit`]), then its class scores of every layer
//! with input pre-processing at every magnitude are computed for the test split, each prepared
//! OOD set and, with FGSM validation, the FGSM sets; they are written as score files in the
//! detector's [`crate::detect::ScoreLayout`] ([`crate::store::scores`]), with the provenance of
//! what they were made from ([`crate::store::provenance`]). The test split is scored once for all
//! OOD sets.
//!
//! - [`inputs`]: what the stage reads ([`ScoringStage`]), checked against its provenance;
//! - [`write`]: scoring every set with one fitted detector and writing its score folder.
pub mod inputs;
pub mod write;

use std::path::PathBuf;

use super::Common;
use crate::detect::{DetectorKind, DetectorParams};
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::progress::Progress;
use crate::store::training_data::RunTrainingData;
pub use inputs::{ScoredInputs, ScoringStage};
pub use write::score;

/// Default batch size of the scoring stages.
pub const SCORING_BATCH_SIZE: usize = 100;

/// The stage's options.
#[derive(Debug, Clone)]
pub struct Options {
    /// Run, data and device (batch size default [`SCORING_BATCH_SIZE`]).
    pub common: Common,
    /// The detectors to fit and score, each with its parameters (magnitudes included).
    pub detectors: Vec<DetectorParams>,
    /// With [`Validation::Fgsm`], also the FGSM sets written by `rf-fgsm`.
    pub validation: Validation,
    /// Classifier checkpoint; `None`: the one `rf-prepare` used (from the feature manifest).
    pub classifier: Option<PathBuf>,
}

impl Options {
    /// The stage's options for the detectors `kinds` with their default parameters.
    pub fn for_kinds(common: Common, kinds: &[DetectorKind]) -> Options {
        Options {
            common,
            detectors: kinds
                .iter()
                .map(|&k| DetectorParams::default_for(k))
                .collect(),
            validation: Validation::Ood,
            classifier: None,
        }
    }
}

impl Default for Options {
    /// The residual flow on the OOD sets at the seven magnitudes of
    /// `docs/method.md#input-pre-processing`.
    fn default() -> Self {
        Options::for_kinds(Common::default(), &[DetectorKind::Resflow])
    }
}

/// What [`run`] wrote for one detector.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The detector.
    pub kind: DetectorKind,
    /// The layers scored.
    pub layers: Vec<usize>,
    /// The magnitudes scored.
    pub magnitudes: Vec<f64>,
    /// The detector's score folder.
    pub dir: PathBuf,
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Per detector, in the options' order.
    pub detectors: Vec<Scored>,
    /// The sets scored (OOD sets, then [`FGSM`] when validating on it).
    pub sets: Vec<String>,
}

/// Runs the stage: checks every detector's parameters, opens the inputs once
/// ([`ScoringStage::open`]), fits every detector on the run's training data and takes every
/// score folder's lock, all before any folder is emptied (a detector that cannot be fitted, or
/// a folder that another process writes, stops the stage with the run as it was); then scores
/// every set with each detector in turn ([`score`]).
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    if options.detectors.is_empty() {
        return Err(Error::bad_option("--detectors", "no detector to score"));
    }
    for params in &options.detectors {
        params.check()?;
    }
    let stage = ScoringStage::open(options)?;
    let inputs = stage.inputs()?;
    let data = RunTrainingData::new(
        &stage.run,
        &stage.features,
        &stage.manifest,
        stage.classifier.net.as_ref(),
        stage.device,
    );
    let mut fitted = Vec::new();
    for params in &options.detectors {
        let detector = params.fit(&data)?;
        fitted.push((params, detector, data.take_inputs_read()));
    }
    let mut locked = Vec::new();
    for (params, detector, read) in fitted {
        let output = stage.lock_output(detector.as_ref(), read)?;
        locked.push((params, detector, output));
    }
    let mut detectors = Vec::new();
    let mut sets = Vec::new();
    for (params, detector, output) in locked {
        let magnitudes = params.magnitudes();
        sets = score(
            &stage,
            &inputs,
            detector.as_ref(),
            &magnitudes,
            output.begin()?,
            progress,
        )?;
        detectors.push(Scored {
            kind: params.kind(),
            layers: detector.layers(),
            magnitudes,
            dir: stage.run.detector_dir(params.kind()),
        });
    }
    Ok(Summary { detectors, sets })
}
