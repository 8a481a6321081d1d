//! The detector bundle: the fitted detectors of one finished run as one self-describing, versioned
//! folder that scores new images without the run folder (`docs/artefacts.md#the-detector-bundle`).
//!
//! ```text
//! bundle/
//!   bundle.json                    BundleManifest: classifier identity, validation, and per
//!                                  detector its magnitude, variant, regression, threshold and
//!                                  in-distribution score quantiles
//!   detectors/{kind}.safetensors   the fitted detector (the detector contract's one code path,
//!   detectors/{kind}.json            crate::detect::save_detector)
//! ```
//!
//! [`detector`]: [`OodDetector`], a bundle loaded to score batches of images (`rf-detect score`
//! and the library API). `crate::pipeline::bundle` writes bundles from runs (`rf-detect fit`).
pub mod detector;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::Normalization;
use crate::detect::{DetectorKind, Evaluation};
use crate::error::{Error, Result};
use crate::fit::Validation;
use crate::models::NetType;
use crate::store::provenance::read_manifest;
pub use detector::{OodDetector, Scores};

/// The version of the bundle layout ([`BundleManifest::format`]).
pub const BUNDLE_FORMAT: &str = "resflow-bundle-1";

/// The manifest's file name in a bundle folder.
pub const BUNDLE_MANIFEST: &str = "bundle.json";

/// Number of in-distribution score quantiles a bundle stores per detector (every 0.1 %).
pub const QUANTILES: usize = 1001;

/// The classifier a bundle's detectors belong to: found by path, recognised by its SHA-256.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassifierIdentity {
    /// Where the classifier was when the bundle was written (absolute).
    pub path: PathBuf,
    /// SHA-256 of its weights file; a classifier with other weights is refused.
    pub sha256: String,
    /// Its architecture.
    pub net_type: NetType,
    /// Its input normalisation.
    pub normalization: Normalization,
    /// Side of its square inputs.
    pub input_side: i64,
    /// Number of classes.
    pub num_classes: usize,
}

/// One detector of a bundle: what turns the fitted detector's class scores into one score per
/// image, and where that score's operating point lies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleDetector {
    /// The detector.
    pub kind: DetectorKind,
    /// The fitted detector's file, relative to the bundle (a `.safetensors` with its `.json`).
    pub file: PathBuf,
    /// The input pre-processing magnitude chosen on the validation rows.
    pub eps: f64,
    /// The score variant chosen (ODIN's temperature index; 0 for the others).
    pub variant: usize,
    /// The feature layers, in the order of `coef`.
    pub layers: Vec<usize>,
    /// The logistic regression over the layers' best class scores (empty for detectors whose
    /// score is used as it is).
    pub coef: Vec<f64>,
    /// Its intercept.
    pub intercept: f64,
    /// The score below which an image is called OOD: the in-distribution rows at or above it are
    /// `tpr` of them.
    pub threshold: f64,
    /// The share of in-distribution rows the threshold lets pass.
    pub tpr: f64,
    /// The in-distribution scores' quantiles at 0 %, 0.1 %, ..., 100 % ([`QUANTILES`] values),
    /// for the percentile of a new score and to move the operating point without refitting.
    pub id_quantiles: Vec<f64>,
    /// Which rows the threshold and quantiles come from.
    pub threshold_rows: String,
    /// The OOD set of the results record the detector was taken from.
    pub record_ood: String,
    /// That record's TNR at TPR 95% and AUROC (paper's convention, fractions), for reference.
    pub record_metrics: [f64; 2],
    /// SHA-256 of the score manifest the record was computed from.
    pub scores_sha256: String,
}

impl BundleDetector {
    /// How the detector's layer scores become its score.
    pub fn evaluation(&self) -> Evaluation {
        self.kind.evaluation()
    }

    /// The in-distribution percentile of `score`: the share (in percent) of in-distribution
    /// scores at or below it, interpolated between the stored quantiles.
    pub fn percentile(&self, score: f64) -> f64 {
        percentile(&self.id_quantiles, score)
    }
}

/// A bundle's manifest, `bundle.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BundleManifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The classifier.
    pub classifier: ClassifierIdentity,
    /// The run folder the bundle was written from.
    pub run: PathBuf,
    /// The in-distribution data set.
    pub dataset: String,
    /// SHA-256 of the run's feature manifest the detectors were fitted on.
    pub features_sha256: String,
    /// Where the detectors were tuned: FGSM samples (no OOD data, the default) or an OOD set.
    pub validation: Validation,
    /// The OOD set they were tuned on, for OOD validation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ood_set: Option<String>,
    /// The detector `rf-detect score` uses unless told otherwise.
    pub default_detector: DetectorKind,
    /// The detectors.
    pub detectors: Vec<BundleDetector>,
    /// Version of resflow that wrote it.
    pub library_version: String,
}

impl BundleManifest {
    /// Reads `bundle.json` of the bundle folder `dir`, refusing another format version.
    pub fn read(dir: &Path) -> Result<BundleManifest> {
        let path = dir.join(BUNDLE_MANIFEST);
        let format: serde_json::Value = read_manifest(&path, "rf-detect fit")?;
        if format.get("format").and_then(|f| f.as_str()) != Some(BUNDLE_FORMAT) {
            return Err(Error::format(
                &path,
                format!(
                    "bundle format {}, but this version of resflow reads `{BUNDLE_FORMAT}`; write \
                     the bundle again with rf-detect fit",
                    format.get("format").unwrap_or(&serde_json::Value::Null)
                ),
            ));
        }
        read_manifest(&path, "rf-detect fit")
    }

    /// The detector `kind`, or the default one.
    pub fn detector(&self, kind: Option<DetectorKind>, dir: &Path) -> Result<&BundleDetector> {
        let kind = kind.unwrap_or(self.default_detector);
        self.detectors
            .iter()
            .find(|d| d.kind == kind)
            .ok_or_else(|| {
                let have: Vec<&str> = self.detectors.iter().map(|d| d.kind.name()).collect();
                Error::bad_option(
                    "--detector",
                    format!(
                        "the bundle {} has no {} detector (it has: {})",
                        dir.display(),
                        kind.name(),
                        have.join(", ")
                    ),
                )
            })
    }
}

/// numpy's `quantile(sorted, q)` of ascending, non-empty `sorted` (the bootstrap's).
pub use crate::fit::bootstrap::quantile;

/// The percentile (0..=100) of `score` among the quantiles `quantiles` (equally spaced from 0 %
/// to 100 %), interpolated linearly; 0 below the smallest, 100 above the largest.
pub fn percentile(quantiles: &[f64], score: f64) -> f64 {
    let n = quantiles.len();
    if n < 2 || score.is_nan() {
        return f64::NAN;
    }
    let step = 100.0 / (n - 1) as f64;
    // The last quantile at or below the score.
    let above = quantiles.partition_point(|&q| q <= score);
    if above == 0 {
        return 0.0;
    }
    if above == n {
        return 100.0;
    }
    let (lo, hi) = (quantiles[above - 1], quantiles[above]);
    let within = if hi > lo {
        (score - lo) / (hi - lo)
    } else {
        1.0
    };
    ((above - 1) as f64 + within) * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy_and_percentiles_invert_them() {
        let sorted = [1.0, 2.0, 4.0, 8.0];
        assert_eq!(quantile(&sorted, 0.0), 1.0);
        assert_eq!(quantile(&sorted, 1.0), 8.0);
        // numpy.quantile([1, 2, 4, 8], 0.5) = 3.0; 0.25 -> 1.75
        assert_eq!(quantile(&sorted, 0.5), 3.0);
        assert_eq!(quantile(&sorted, 0.25), 1.75);
        let table: Vec<f64> = (0..QUANTILES)
            .map(|i| quantile(&sorted, i as f64 / (QUANTILES - 1) as f64))
            .collect();
        assert_eq!(percentile(&table, 0.5), 0.0);
        assert_eq!(percentile(&table, 9.0), 100.0);
        assert!((percentile(&table, 3.0) - 50.0).abs() < 1e-9);
        assert!((percentile(&table, 1.75) - 25.0).abs() < 1e-9);
    }
}
