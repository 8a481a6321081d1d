//! The FGSM folder, `{outf}/{net}_{dataset}/fgsm/` ([`crate::store::RunDir::fgsm_dir`]):
//!
//! - `clean.npy`, `adv.npy`, `noisy.npy`: float32 `[K, 3, 32, 32]`, normalised inputs of the kept
//!   samples, in test-split order;
//! - `labels.npy`: int64 `[K]`;
//! - `summary.json` ([`FgsmSummary`]): counts, accuracies, mean L-inf perturbation, settings, and
//!   the folder's [`Provenance`] (the classifier's SHA-256, the options, every file's digest).
//!   Written last, so a folder with a summary is complete.
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::provenance::{read_manifest, Provenance};
use crate::data::Normalization;
use crate::detect::fgsm::{FgsmCounts, FgsmSets};
use crate::error::{Error, Result};
use crate::io;
use crate::models::{LoadedClassifier, NetType};

/// The stage that writes FGSM folders.
pub const FGSM_STAGE: &str = "rf-fgsm";
/// The FGSM folder's manifest.
pub const FGSM_SUMMARY: &str = "summary.json";
/// The FGSM folder's arrays.
const FGSM_FILES: [&str; 4] = ["clean.npy", "adv.npy", "noisy.npy", "labels.npy"];

fn paper_side() -> i64 {
    crate::data::IMAGE_SIDE
}

/// `summary.json` of an FGSM folder.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FgsmSummary {
    /// The classifier's architecture.
    pub net_type: NetType,
    /// The in-distribution data set.
    pub dataset: String,
    /// The classifier checkpoint.
    pub classifier: PathBuf,
    /// The normalisation of the stored inputs (the classifier's).
    pub normalization: Normalization,
    /// Side `S` of the stored inputs `[K,3,S,S]` (the classifier's; 32 in summaries of older
    /// versions).
    #[serde(default = "paper_side")]
    pub input_side: i64,
    /// Noise standard deviation.
    pub sigma: f64,
    /// Adversarial step ([`crate::detect::fgsm::ADVERSARIAL_STEP`]).
    pub step: f64,
    /// Clamp range ([`crate::detect::fgsm::clamp_range`]).
    pub clamp: [f64; 2],
    /// Seed of the noise.
    pub seed: u64,
    /// Counts and the mean perturbation.
    pub counts: FgsmCounts,
    /// Clean accuracy in [0, 1].
    pub clean_accuracy: f64,
    /// Adversarial accuracy in [0, 1].
    pub adversarial_accuracy: f64,
    /// Noisy accuracy in [0, 1].
    pub noisy_accuracy: f64,
    /// What the samples were made from, and every file's digest.
    pub provenance: Provenance,
}

impl FgsmSets {
    /// Writes the `.npy` files (see the module documentation), each atomically; returns their
    /// paths. The summary is the stage's to write last.
    pub fn save(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        let arrays = [&self.clean.images, &self.adv.images, &self.noisy.images];
        for (name, images) in FGSM_FILES.iter().zip(arrays) {
            io::write_npy_f32(&dir.join(name), images)?;
        }
        io::write_npy_i64(&dir.join(FGSM_FILES[3]), &self.labels)?;
        Ok(FGSM_FILES.iter().map(|n| dir.join(n)).collect())
    }

    /// Reads a folder written by `rf-fgsm`, checking every file against the summary's digests
    /// and shapes. Errors (naming the file) when it is incomplete, inconsistent or holds no
    /// sample.
    pub fn load(dir: &Path) -> Result<(FgsmSets, FgsmSummary)> {
        let summary_path = dir.join(FGSM_SUMMARY);
        let summary: FgsmSummary = read_manifest(&summary_path, FGSM_STAGE)?;
        summary
            .provenance
            .verify_files(dir, Some(&FGSM_FILES), &summary_path, FGSM_STAGE)?;
        let k = summary.counts.kept as i64;
        if k == 0 {
            return Err(Error::format(
                &summary_path,
                "rf-fgsm kept no sample (no image was classified right with and without noise and wrong after the attack)",
            ));
        }
        let side = summary.input_side;
        let images = |name: &str| -> Result<Tensor> {
            let path = dir.join(name);
            let t = io::read_npy_f32(&path)?;
            if t.size() != [k, 3, side, side] {
                return Err(Error::provenance(
                    &path,
                    format!(
                        "expected shape [{k}, 3, {side}, {side}] (summary.json), found {:?}",
                        t.size()
                    ),
                ));
            }
            Ok(t)
        };
        let (clean, adv, noisy) = (
            images("clean.npy")?,
            images("adv.npy")?,
            images("noisy.npy")?,
        );
        let labels_path = dir.join("labels.npy");
        let labels = io::read_npy_i64(&labels_path)?;
        if labels.size() != [k] {
            return Err(Error::provenance(
                &labels_path,
                format!(
                    "expected {k} labels (summary.json), found shape {:?}",
                    labels.size()
                ),
            ));
        }
        Ok((FgsmSets::new(clean, noisy, adv, labels), summary))
    }

    /// Loads the sets from `dir` and checks they were made with `classifier` (whose weights have
    /// `classifier_sha256`): its weights, normalisation and architecture.
    pub fn load_for(
        dir: &Path,
        classifier: &LoadedClassifier,
        classifier_sha256: &str,
    ) -> Result<FgsmSets> {
        let (sets, summary) = Self::load(dir)?;
        summary.provenance.check_classifier(
            classifier_sha256,
            &dir.join(FGSM_SUMMARY),
            "rf-fgsm with this classifier",
        )?;
        if summary.normalization != classifier.meta.normalization
            || summary.net_type != classifier.meta.architecture
            || summary.input_side != classifier.net.input_side()
        {
            return Err(Error::provenance(
                dir.join(FGSM_SUMMARY),
                format!(
                    "FGSM samples of a {} with normalisation {:?} at side {}, but the classifier is a {} with {:?} at side {}; rerun rf-fgsm with this classifier",
                    summary.net_type.name(),
                    summary.normalization,
                    summary.input_side,
                    classifier.meta.architecture.name(),
                    classifier.meta.normalization,
                    classifier.net.input_side()
                ),
            ));
        }
        Ok(sets)
    }
}
