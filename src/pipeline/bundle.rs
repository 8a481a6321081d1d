//! The bundle stage (`rf-detect fit`): writes a run's [`crate::bundle`]; for each detector with a result of the
//! chosen validation, the detector refitted from its score folder's parameters through the
//! detector contract, the record's magnitude, variant and regression, and the operating
//! threshold and in-distribution quantiles from the record's test rows (rows used neither to fit
//! nor to select anything).
use std::path::{Path, PathBuf};

use super::score::{self, ScoringStage};
use super::Common;
use crate::bundle::{
    quantile, BundleDetector, BundleManifest, ClassifierIdentity, BUNDLE_FORMAT, BUNDLE_MANIFEST,
    QUANTILES,
};
use crate::detect::{save_detector, DetectorKind, Evaluation, FittedDetector};
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::progress::Progress;
use crate::store::results::{read_results, read_test_scores, ResultRecord};
use crate::store::score_sets::ScoreFolder;
use crate::store::training_data::RunTrainingData;

/// What `rf-detect fit` writes and from which results.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// The run (network, data set, output folder) and device.
    pub common: Common,
    /// Classifier checkpoint; `None`: the one `rf-prepare` used.
    pub classifier: Option<PathBuf>,
    /// The results to take: FGSM-validated (no OOD data; the default) or OOD-validated.
    pub validation: Validation,
    /// With OOD validation, the OOD set whose record to take.
    pub ood_set: Option<String>,
    /// The share of in-distribution images the threshold lets pass.
    pub tpr: f64,
    /// The detectors to bundle; empty: every one with a result of the chosen validation.
    pub detectors: Vec<DetectorKind>,
    /// The bundle folder; `None`: `{run}/bundle`.
    pub out: Option<PathBuf>,
}

impl FitOptions {
    /// Checks the options that need no files, naming the flag.
    pub fn check(&self) -> Result<()> {
        if !(self.tpr > 0.0 && self.tpr < 1.0) {
            return Err(Error::bad_option(
                "--tpr",
                format!(
                    "{} is not a share of images strictly between 0 and 1",
                    self.tpr
                ),
            ));
        }
        match (self.validation, &self.ood_set) {
            (Validation::Ood, None) => Err(Error::bad_option(
                "--ood-set",
                "OOD validation takes the detector tuned on one OOD set: name it",
            )),
            (Validation::Fgsm, Some(_)) => Err(Error::bad_option(
                "--ood-set",
                "FGSM-validated detectors are tuned on no OOD set; drop --ood-set or pass \
                 --validation ood",
            )),
            (Validation::Ood, Some(_)) | (Validation::Fgsm, None) => Ok(()),
        }
    }
}

/// Writes the bundle of `options`' run (see the module documentation); returns its folder and
/// manifest.
pub fn fit(options: &FitOptions, progress: &mut dyn Progress) -> Result<(PathBuf, BundleManifest)> {
    options.check()?;
    let common = &options.common;
    let run = common.run_dir();
    let results_path = run.results_path();
    let results = read_results(&results_path)?.ok_or_else(|| {
        Error::missing(
            &results_path,
            "no results here; run the pipeline up to rf-regress for this network and data set first",
        )
    })?;
    let stage = ScoringStage::open(&score::Options {
        common: common.clone(),
        detectors: Vec::new(),
        validation: Validation::Ood,
        classifier: options.classifier.clone(),
    })?;
    let data = RunTrainingData::new(
        &stage.run,
        &stage.features,
        &stage.manifest,
        stage.classifier.net.as_ref(),
        stage.device,
    );
    let kinds: Vec<DetectorKind> = if options.detectors.is_empty() {
        DetectorKind::ALL
            .iter()
            .copied()
            .filter(|&k| chosen_record(&results.results, k, options).is_some())
            .collect()
    } else {
        options.detectors.clone()
    };
    if kinds.is_empty() {
        return Err(Error::missing(
            &results_path,
            no_record_message(options, "any detector"),
        ));
    }
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| run.path().join("bundle"));
    progress.start("bundle", kinds.len());
    let mut parts = Vec::new();
    for kind in kinds {
        let record = chosen_record(&results.results, kind, options).ok_or_else(|| {
            Error::missing(&results_path, no_record_message(options, kind.label()))
        })?;
        let folder = ScoreFolder::open(&run, kind)?;
        if folder.manifest_sha256()? != record.scores_sha256 {
            return Err(Error::provenance(
                &results_path,
                format!(
                    "its {} result was computed from other scores than those in {} now; rerun \
                     rf-regress --detector {}{}",
                    kind.label(),
                    run.detector_dir(kind).display(),
                    kind.name(),
                    if options.validation == Validation::Fgsm {
                        " --validation-src fgsm"
                    } else {
                        ""
                    }
                ),
            ));
        }
        let fitted = folder.manifest.params.fit(&data)?;
        parts.push((
            bundle_detector(&run, record, fitted.as_ref(), options)?,
            fitted,
        ));
        progress.advance(1);
    }
    progress.finish();
    let default_detector = [DetectorKind::Resflow, DetectorKind::Mahalanobis]
        .into_iter()
        .find(|k| parts.iter().any(|(d, _)| d.kind == *k))
        .unwrap_or(parts[0].0.kind);
    let classifier_path = options
        .classifier
        .clone()
        .unwrap_or_else(|| stage.manifest.classifier.clone());
    let manifest = BundleManifest {
        format: BUNDLE_FORMAT.to_string(),
        classifier: ClassifierIdentity {
            path: std::fs::canonicalize(&classifier_path)
                .map_err(|e| Error::io(&classifier_path, e))?,
            sha256: stage.classifier_sha256.clone(),
            net_type: stage.classifier.meta.architecture,
            normalization: stage.classifier.meta.normalization,
            input_side: stage.classifier.net.input_side(),
            num_classes: stage.manifest.num_classes,
        },
        run: std::fs::canonicalize(run.path()).map_err(|e| Error::io(run.path(), e))?,
        dataset: stage.manifest.dataset_name(),
        features_sha256: crate::models::checkpoint::file_sha256(&stage.features.manifest_path())?,
        validation: options.validation,
        ood_set: options.ood_set.clone(),
        default_detector,
        detectors: parts.iter().map(|(d, _)| d.clone()).collect(),
        library_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let _lock = crate::store::lock::exclusive(
        &crate::io::sibling(&out, "lock"),
        "rf-detect fit is writing this bundle",
    )?;
    crate::io::write_folder_atomically(&out, |dir| {
        for (d, fitted) in &parts {
            save_detector(fitted.as_ref(), &dir.join(&d.file))?;
        }
        crate::io::write_json(&dir.join(BUNDLE_MANIFEST), &manifest)
    })?;
    Ok((out, manifest))
}

/// The results record `rf-detect fit` takes for `kind`: of the chosen validation and, for OOD
/// validation, the chosen OOD set (FGSM-validated records of all OOD sets share one fit: the
/// first is taken).
fn chosen_record<'a>(
    records: &'a [ResultRecord],
    kind: DetectorKind,
    options: &FitOptions,
) -> Option<&'a ResultRecord> {
    records.iter().find(|r| {
        r.detector == kind
            && r.validation == options.validation
            && options.ood_set.as_ref().is_none_or(|o| &r.ood == o)
    })
}

/// Why there is no record to take, and what makes one.
fn no_record_message(options: &FitOptions, what: &str) -> String {
    match options.validation {
        Validation::Fgsm => format!(
            "no FGSM-validated result of {what}; run rf-fgsm, rf-prepare, the scoring stages and \
             rf-regress with --validation-src fgsm, or bundle an OOD-tuned detector with \
             --validation ood --ood-set NAME"
        ),
        Validation::Ood => format!(
            "no result of {what} tuned on OOD set `{}`; run rf-regress for it",
            options.ood_set.as_deref().unwrap_or_default()
        ),
    }
}

/// The bundle's description of `fitted` as `record` chose it: magnitude, variant, regression,
/// and the threshold and quantiles of the record's in-distribution test scores.
fn bundle_detector(
    run: &crate::store::RunDir,
    record: &ResultRecord,
    fitted: &dyn FittedDetector,
    options: &FitOptions,
) -> Result<BundleDetector> {
    let kind = record.detector;
    let layers = match kind.evaluation() {
        Evaluation::Regression if record.layers.is_empty() => (0..record.coef.len()).collect(),
        Evaluation::Regression => record.layers.clone(),
        Evaluation::Direct => fitted.layers(),
    };
    if layers.iter().any(|l| !fitted.layers().contains(l)) {
        return Err(Error::provenance(
            run.results_path(),
            format!(
                "its {} result uses layers {layers:?}, but the fitted detector has {:?}; rerun \
                 rf-regress --detector {}",
                kind.label(),
                fitted.layers(),
                kind.name()
            ),
        ));
    }
    let variant = match (record.temperature, fitted.params().temperatures()) {
        (Some(t), Some(all)) => all.iter().position(|&x| x == t).ok_or_else(|| {
            Error::provenance(
                run.results_path(),
                format!(
                    "its {} result chose temperature {t}, which was not scored",
                    kind.label()
                ),
            )
        })?,
        _ => 0,
    };
    let test_path = run.test_scores_path(kind, record.validation, &record.ood);
    let mut id_scores = read_test_scores(&test_path)?.logit_in;
    if id_scores.is_empty() || id_scores.iter().any(|s| !s.is_finite()) {
        return Err(Error::format(
            &test_path,
            "no finite in-distribution test scores to set the threshold on; rerun rf-regress",
        ));
    }
    id_scores.sort_by(f64::total_cmp);
    let id_quantiles = (0..QUANTILES)
        .map(|i| quantile(&id_scores, i as f64 / (QUANTILES - 1) as f64))
        .collect();
    Ok(BundleDetector {
        kind,
        file: Path::new("detectors").join(format!("{}.safetensors", kind.name())),
        eps: record.eps,
        variant,
        layers,
        coef: record.coef.clone(),
        intercept: record.intercept,
        threshold: quantile(&id_scores, 1.0 - options.tpr),
        tpr: options.tpr,
        id_quantiles,
        threshold_rows: format!(
            "the {} in-distribution test rows of the `{}` record, used neither to fit nor to \
             select the detector",
            id_scores.len(),
            record.ood
        ),
        record_ood: record.ood.clone(),
        record_metrics: [record.tnr_at_tpr95, record.auroc],
        scores_sha256: record.scores_sha256.clone(),
    })
}
