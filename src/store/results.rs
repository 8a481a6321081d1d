//! What `rf-regress` stores in a run folder: `results.json` ([`ResultsFile`], every
//! (detector, validation, OOD set) result, the OOD sets' groups and the paired comparisons) and
//! the chosen detector's test outputs `regression/{detector}_{validation}/{ood}.npz`
//! ([`TestScores`], for plots).
use std::collections::BTreeMap;
use std::path::Path;

use ndarray::Array1;
use ndarray_npy::{NpzReader, NpzWriter};
use serde::{Deserialize, Serialize};

use super::score_sets::ScoreFolder;
use crate::data::OodGroup;
use crate::detect::DetectorKind;
use crate::error::{Error, Result};
use crate::fit::bootstrap::{self, BootstrapParams, Interval, MetricIntervals};
use crate::fit::detector::{DetectorResult, EpsTrial, RowCounts, TestScores, Validation};
use crate::fit::openood::{self, OodMetrics};
use crate::fit::paired::PairedDifference;

/// Names of [`ResultRecord::all_metrics`]: the paper's (in-distribution positive), then
/// OpenOOD's (OOD positive).
pub const ALL_METRIC_NAMES: [&str; 9] = [
    "TNR at TPR 95%",
    "AUROC",
    "DTACC",
    "AUIN",
    "AUOUT",
    "FPR at 95% TPR (OOD positive)",
    "AUROC (OOD positive)",
    "AUPR-in",
    "AUPR-out",
];

/// Index of the paper's TNR at TPR 95% in [`ALL_METRIC_NAMES`].
pub const PAPER_TNR: usize = 0;
/// Index of OpenOOD's FPR at 95% TPR in [`ALL_METRIC_NAMES`].
pub const OPENOOD_FPR95: usize = 5;
/// Index of OpenOOD's AUROC in [`ALL_METRIC_NAMES`].
pub const OPENOOD_AUROC: usize = 6;

/// One (detector, validation, OOD set) result as stored in `results.json` (metrics as fractions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    /// The detector.
    pub detector: DetectorKind,
    /// How it was validated.
    pub validation: Validation,
    /// The OOD set.
    pub ood: String,
    /// The chosen magnitude.
    pub eps: f64,
    /// The regression's C.
    pub c: f64,
    /// Coefficients, one per layer.
    pub coef: Vec<f64>,
    /// Intercept.
    pub intercept: f64,
    /// SHA-256 of the score manifest (`{detector}/scores.json`) the record was computed from
    /// (empty in files of older versions).
    #[serde(default)]
    pub scores_sha256: String,
    /// SHA-256 of the feature manifest those scores were made from (absent for hand-made
    /// scores that record none): records of other feature folders are stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features_sha256: Option<String>,
    /// The feature layers of the regression's coefficients, in order (absent for the baselines
    /// and in files of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<usize>,
    /// ODIN's chosen temperature (absent for every other detector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// TNR at TPR 95%.
    pub tnr_at_tpr95: f64,
    /// AUROC.
    pub auroc: f64,
    /// Detection accuracy.
    pub dtacc: f64,
    /// AUPR with in-distribution positive.
    pub auin: f64,
    /// AUPR with OOD positive.
    pub auout: f64,
    /// Every magnitude tried.
    pub trials: Vec<EpsTrial>,
    /// Row counts.
    pub counts: RowCounts,
    /// OpenOOD's OOD-positive metrics on the same test rows (absent in files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openood: Option<OodMetrics>,
    /// Bootstrap intervals of every metric over the test rows (absent when not computed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intervals: Option<MetricIntervals>,
}

impl ResultRecord {
    /// The record of a detector result.
    pub fn from_result(r: &DetectorResult) -> Self {
        ResultRecord {
            detector: r.detector,
            validation: r.validation,
            ood: r.ood.clone(),
            eps: r.eps,
            c: r.c,
            coef: r.coef.clone(),
            intercept: r.intercept,
            scores_sha256: String::new(),
            features_sha256: None,
            layers: r.layers.clone(),
            temperature: r.temperature,
            tnr_at_tpr95: r.metrics.tnr_at_tpr95,
            auroc: r.metrics.auroc,
            dtacc: r.metrics.dtacc,
            auin: r.metrics.auin,
            auout: r.metrics.auout,
            trials: r.trials.clone(),
            counts: r.counts,
            openood: None,
            intervals: None,
        }
    }

    /// Records that the result was computed from the scores of `folder`.
    pub fn made_from(mut self, folder: &ScoreFolder) -> Result<Self> {
        self.scores_sha256 = folder.manifest_sha256()?;
        self.features_sha256 = folder.features_sha256().map(str::to_string);
        Ok(self)
    }

    /// Adds OpenOOD's metrics of the test confidences `test` and, with `bootstrap`, the intervals
    /// of every metric.
    pub fn with_uncertainty(
        mut self,
        test: &TestScores,
        bootstrap: Option<&BootstrapParams>,
    ) -> Result<Self> {
        let (inn, out) = (&test.confidence_in, &test.confidence_ood);
        self.openood = Some(openood::compute(inn, out)?);
        self.intervals = match bootstrap {
            Some(p) => Some(bootstrap::intervals(inn, out, p)?),
            None => None,
        };
        Ok(self)
    }

    /// Every metric of both conventions with its bootstrap interval when computed, in
    /// [`ALL_METRIC_NAMES`] order: the paper's five, then OpenOOD's four (`None` when the record
    /// has no OpenOOD metrics).
    pub fn all_metrics(&self) -> [Option<(f64, Option<Interval>)>; 9] {
        let paper = self.metrics();
        let openood = self.openood.map(|m| m.as_array());
        std::array::from_fn(|k| {
            let interval =
                self.intervals
                    .as_ref()
                    .map(|i| if k < 5 { i.paper[k] } else { i.openood[k - 5] });
            if k < 5 {
                Some((paper[k], interval))
            } else {
                openood.map(|m| (m[k - 5], interval))
            }
        })
    }

    /// The metrics in print order (fractions).
    pub fn metrics(&self) -> [f64; 5] {
        [
            self.tnr_at_tpr95,
            self.auroc,
            self.dtacc,
            self.auin,
            self.auout,
        ]
    }
}

/// The contents of `results.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResultsFile {
    /// Network name.
    pub net: String,
    /// In-distribution set.
    pub dataset: String,
    /// All results, sorted by detector, validation, OOD set.
    pub results: Vec<ResultRecord>,
    /// Figures that mean little, as the last `rf-regress` saw the run (a classifier near chance,
    /// low whitening ranks, few FGSM samples, detectors a small split cannot tell apart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The classifier's accuracy on the in-distribution test split, from the feature manifest
    /// (absent for hand-made score folders and in files of older versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_accuracy: Option<f64>,
    /// The group (near or far) of each OOD set that has one, from the feature manifest; the other
    /// sets are ungrouped and in no group mean.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ood_groups: BTreeMap<String, OodGroup>,
    /// The paired comparison per (validation, OOD set) with results of two detectors or more
    /// (absent without bootstrap and in files of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paired: Vec<PairedComparison>,
    /// OpenOOD's group mean of AUROC with its bootstrap interval per (detector, validation, group)
    /// whose every set has a result (absent without bootstrap and in files of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_means: Vec<GroupMean>,
}

/// A detector's mean AUROC over the OOD sets of one group, with its interval
/// (`docs/method.md#near-and-far-ood`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupMean {
    /// The detector.
    pub detector: DetectorKind,
    /// How it was validated.
    pub validation: Validation,
    /// The group.
    pub group: OodGroup,
    /// The group's OOD sets the mean is over.
    pub sets: Vec<String>,
    /// The mean AUROC on the test rows (fraction).
    pub auroc: f64,
    /// Its percentile interval over the resamples of each set's rows.
    pub interval: Interval,
    /// The resampling (the same seed and count as the sets' own intervals).
    pub bootstrap: BootstrapParams,
}

/// The paired comparison of one (validation, OOD set) (`docs/method.md#paired-comparison`): the
/// detector with the highest OpenOOD AUROC and, for every other one measured on the same test
/// rows, the AUROC difference `best - other` with its interval over the same resamples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedComparison {
    /// How the detectors were validated.
    pub validation: Validation,
    /// The OOD set.
    pub ood: String,
    /// The detector with the highest AUROC (the first in table order on ties).
    pub best: DetectorKind,
    /// Its OpenOOD AUROC (fraction).
    pub best_auroc: f64,
    /// In-distribution and OOD test rows every compared detector was measured on.
    pub test_in: usize,
    /// See `test_in`.
    pub test_ood: usize,
    /// The resampling (the same seed and count as the detectors' intervals).
    pub bootstrap: BootstrapParams,
    /// Every other detector compared, in table order.
    pub others: Vec<PairedEntry>,
    /// Detectors with a result for the set that could not be compared, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<SkippedDetector>,
}

impl PairedComparison {
    /// Every detector the comparison names (best, compared, skipped), in table order.
    pub fn detectors(&self) -> Vec<DetectorKind> {
        let mut all: Vec<DetectorKind> = std::iter::once(self.best)
            .chain(self.others.iter().map(|o| o.detector))
            .chain(self.skipped.iter().map(|s| s.detector))
            .collect();
        all.sort();
        all
    }
}

/// One detector of a [`PairedComparison`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedEntry {
    /// The detector.
    pub detector: DetectorKind,
    /// Its OpenOOD AUROC (fraction).
    pub auroc: f64,
    /// `AUROC(best) - AUROC(detector)` and its interval (fractions).
    pub paired: PairedDifference,
    /// Whether the interval excludes 0 (the `*` of the tables).
    pub excludes_zero: bool,
}

/// A detector left out of a [`PairedComparison`] and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SkippedDetector {
    /// The detector.
    pub detector: DetectorKind,
    /// Why (other test rows, missing or changed test outputs).
    pub reason: String,
}

impl ResultsFile {
    /// Replaces the records with the same (detector, validation, OOD set) as a new one, adds the
    /// others, and keeps the list sorted. Drops the records that no longer hold (returning a note
    /// for each): of the new records' detector and validation, those of OOD sets that are not
    /// among `scored` (the sets of the current scores) or that come from other scores; of every
    /// detector, those made from another feature folder than the new records.
    pub fn merge(&mut self, new: &[ResultRecord], scored: &[String]) -> Vec<String> {
        let mut dropped = Vec::new();
        if let Some(first) = new.first() {
            self.results.retain(|r| {
                let same_run = r.detector == first.detector && r.validation == first.validation;
                let stale = if same_run {
                    !scored.contains(&r.ood) || r.scores_sha256 != first.scores_sha256
                } else {
                    r.features_sha256 != first.features_sha256
                };
                let replaced = new.iter().any(|n| {
                    n.detector == r.detector && n.validation == r.validation && n.ood == r.ood
                });
                if stale && !replaced {
                    dropped.push(format!(
                        "dropped the earlier {} result ({}) for `{}`: it was computed from other \
                         scores or features than the current ones; rerun rf-regress --detector {}",
                        r.detector.label(),
                        r.validation.name(),
                        r.ood,
                        r.detector.name()
                    ));
                }
                !stale && !replaced
            });
        }
        self.results.extend_from_slice(new);
        self.results.sort_by(|a, b| {
            (a.detector, a.validation.name(), &a.ood).cmp(&(
                b.detector,
                b.validation.name(),
                &b.ood,
            ))
        });
        dropped
    }
}

/// The OOD sets of the `records` with validation `v`, each once, in record order.
pub fn ood_sets(records: &[ResultRecord], v: Validation) -> Vec<&str> {
    let mut oods: Vec<&str> = Vec::new();
    for r in records.iter().filter(|r| r.validation == v) {
        if !oods.contains(&r.ood.as_str()) {
            oods.push(&r.ood);
        }
    }
    oods
}

/// Reads `results.json`; `None` if it does not exist. One that does not parse is an error that
/// says to delete it and compute the results again.
pub fn read_results(path: &Path) -> Result<Option<ResultsFile>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map(Some).map_err(|e| {
            Error::format(
                path,
                format!(
                    "not rf-regress's results.json ({e}): truncated, corrupt or written by \
                     another version; delete it (and results.md), then rerun rf-regress \
                     --detector NAME for each detector to compare"
                ),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Writes `results` as pretty JSON (atomically).
pub fn write_results(path: &Path, results: &ResultsFile) -> Result<()> {
    crate::io::write_json(path, results)
}

const TEST_ARRAYS: [&str; 4] = ["confidence_in", "confidence_ood", "logit_in", "logit_ood"];

/// Writes the test outputs as `.npz` (atomically).
pub fn write_test_scores(path: &Path, t: &TestScores) -> Result<()> {
    crate::io::write_buffered(path, |w| {
        let err = |e: ndarray_npy::WriteNpzError| Error::format(path, e.to_string());
        let mut npz = NpzWriter::new(w);
        for (name, v) in TEST_ARRAYS.iter().zip([
            &t.confidence_in,
            &t.confidence_ood,
            &t.logit_in,
            &t.logit_ood,
        ]) {
            npz.add_array(*name, &Array1::from(v.clone()))
                .map_err(err)?;
        }
        npz.finish().map_err(err)?;
        Ok(())
    })
}

/// Reads test outputs written by [`write_test_scores`].
pub fn read_test_scores(path: &Path) -> Result<TestScores> {
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(std::io::BufReader::new(f))
        .map_err(|e| Error::format(path, format!("not an .npz archive: {e}")))?;
    let mut arrays = Vec::new();
    for name in TEST_ARRAYS {
        let a: Array1<f64> = npz
            .by_name(name)
            .map_err(|e| Error::format(path, format!("`{name}`: {e}; expected f64 [N]")))?;
        arrays.push(a.to_vec());
    }
    let mut it = arrays.into_iter();
    let mut next = || it.next().unwrap_or_default();
    Ok(TestScores {
        confidence_in: next(),
        confidence_ood: next(),
        logit_in: next(),
        logit_ood: next(),
    })
}
