//! The FGSM stage (`rf-fgsm`, `docs/method.md#fgsm-samples`): attacks the test split, keeps the
//! usable samples and writes the FGSM folder ([`crate::store::fgsm`]).
use std::path::{Path, PathBuf};

use super::Common;
use crate::data::{ImageSet, Split};
use crate::detect::fgsm::{
    attack, clamp_range, noise_sigma, FgsmOptions, ADVERSARIAL_STEP, DEFAULT_BATCH_SIZE,
};
use crate::error::{Error, Result};
use crate::models::checkpoint::file_sha256;
use crate::models::LoadedClassifier;
use crate::progress::Progress;
use crate::store::fgsm::{FgsmSummary, FGSM_STAGE, FGSM_SUMMARY};
use crate::store::provenance::{Provenance, StageOutput};
use crate::store::RunDir;

/// The stage's options.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run, data and device (batch size default: the reference's 50).
    pub common: Common,
    /// Classifier checkpoint; `None`: [`Common::default_classifier_path`].
    pub classifier: Option<PathBuf>,
    /// Use only the first N test images.
    pub max_test: Option<usize>,
    /// Noise standard deviation; `None`: [`noise_sigma`] of the network and data set.
    pub sigma: Option<f64>,
}

/// What [`run`] wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    /// The FGSM folder.
    pub dir: PathBuf,
    /// Its `summary.json`.
    pub summary: FgsmSummary,
    /// Figures that mean little ([`super::warnings`]): too few samples kept.
    pub warnings: Vec<String>,
}

/// Runs the stage: attacks the (first `max_test` images of the) test split and writes the run's
/// FGSM folder.
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    let common = &options.common;
    if let Some(sigma) = options.sigma.filter(|s| !s.is_finite() || *s < 0.0) {
        return Err(Error::bad_option(
            "--sigma",
            format!("{sigma} is not a noise standard deviation (a finite number >= 0)"),
        ));
    }
    if options.max_test == Some(0) {
        return Err(Error::bad_option(
            "--max-test",
            "0 test images leave nothing to attack; give at least 1",
        ));
    }
    let (classifier_path, classifier) = common.load_classifier(options.classifier.as_deref())?;
    let side = classifier.net.input_side();
    let source = common.dataset_source()?;
    let mut test = source.load(&common.dataroot, Split::Test, side)?;
    if let Some(n) = options.max_test {
        test = test.take(n);
    }
    let fgsm = FgsmOptions {
        sigma: options
            .sigma
            .unwrap_or_else(|| noise_sigma(classifier.meta.architecture, &source.name)),
        batch_size: common.batch_size_or(DEFAULT_BATCH_SIZE),
        seed: common.seed,
        device: common.device,
    };
    // The checkpoint's architecture names the run folder.
    let dir = RunDir::new(
        &common.outf,
        classifier.meta.architecture.name(),
        &source.name,
    )
    .fgsm_dir();
    let summary = generate(
        &classifier,
        &classifier_path,
        &source.name,
        &test,
        &fgsm,
        &dir,
        progress,
    )?;
    let warnings = super::warnings::few_fgsm_samples(&summary.counts)
        .into_iter()
        .collect();
    Ok(Summary {
        dir,
        summary,
        warnings,
    })
}

/// Generates, selects and saves the FGSM sets of `set` (the test split) into `dir`; returns the
/// summary written.
pub fn generate(
    classifier: &LoadedClassifier,
    classifier_path: &Path,
    dataset: &str,
    set: &ImageSet,
    options: &FgsmOptions,
    dir: &Path,
    progress: &mut dyn Progress,
) -> Result<FgsmSummary> {
    if set.num_classes != classifier.meta.num_classes as usize {
        return Err(Error::provenance(
            classifier_path,
            format!(
                "the classifier has {} classes but `{dataset}` has {}; pass the classifier trained on `{dataset}`",
                classifier.meta.num_classes, set.num_classes
            ),
        ));
    }
    let mut provenance = Provenance::new(FGSM_STAGE, &file_sha256(classifier_path)?);
    provenance.option("dataset", dataset)?;
    provenance.option("test_images", set.len())?;
    provenance.option("sigma", options.sigma)?;
    provenance.option("seed", options.seed)?;
    provenance.option("batch_size", options.batch_size)?;
    // From here on the folder is incomplete (no summary) until the end.
    let mut out = StageOutput::begin(
        dir,
        &dir.join(FGSM_SUMMARY),
        provenance,
        "rf-fgsm is writing these samples",
    )?;
    let attacked = attack(classifier, set, options, progress)?;
    let (sets, counts) = attacked.select();
    let (lo, hi) = clamp_range(&classifier.meta.normalization);
    for path in sets.save(dir)? {
        out.record(&path)?;
    }
    out.finish(|provenance| FgsmSummary {
        net_type: classifier.meta.architecture,
        dataset: dataset.to_string(),
        classifier: classifier_path.to_path_buf(),
        normalization: classifier.meta.normalization,
        input_side: classifier.net.input_side(),
        sigma: options.sigma,
        step: ADVERSARIAL_STEP,
        clamp: [lo, hi],
        seed: options.seed,
        counts,
        clean_accuracy: counts.fraction(counts.clean_correct),
        adversarial_accuracy: counts.fraction(counts.adv_correct),
        noisy_accuracy: counts.fraction(counts.noisy_correct),
        provenance,
    })
}
