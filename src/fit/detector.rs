//! The regression detector end to end (`docs/method.md#the-regression-detector`) for one
//! in-distribution set, one OOD set and one detector.
//!
//! Per magnitude the score files become a feature matrix with one column per layer
//! ([`build_features`]: the Mahalanobis per-layer columns as they are, the flow's per-class
//! matrices reduced by the max over classes). A logistic regression
//! ([`LogisticRegressionCv`], scikit-learn's defaults) is fitted on the fit block, the magnitude
//! with the highest TNR at TPR 95% on the selection block wins (the first on ties), and the
//! metrics of `docs/method.md#paper-metrics` are computed on the test rows with confidence
//! `-P(OOD)`.
//!
//! Validation ([`Validation`]): `Ood` ("IO") fits and selects on the first 1000 rows of each kind
//! of the OOD set's own file ([`splits::io_split`]); `Fgsm` fits and selects on the FGSM file
//! ([`fgsm_split`]) and still tests on the IO test split.
//!
//! The post-hoc baselines have no regression ([`evaluate_direct`]): their score is the
//! confidence, and the selection rows only choose ODIN's temperature and magnitude.
use ndarray::{Array1, Array2, ArrayView2, Axis};

use super::metrics::{self, Metrics};
use super::regression::{FittedLogistic, LogisticRegressionCv};
use super::splits::{self, fgsm_split, IoSplitRule};
use crate::detect::{eps_name, DetectorKind};
use crate::error::{Error, Result};

/// Where the detector is fitted and its magnitude selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Validation {
    /// On the OOD set itself (the reference's default, "IO").
    Ood,
    /// On FGSM adversarial samples, no OOD data (`docs/method.md#the-regression-detector` and
    /// `docs/method.md#fgsm-samples`).
    Fgsm,
}

impl Validation {
    /// The command-line spelling.
    pub fn name(self) -> &'static str {
        match self {
            Validation::Ood => "ood",
            Validation::Fgsm => "fgsm",
        }
    }

    /// A description for printed output.
    pub fn label(self) -> &'static str {
        match self {
            Validation::Ood => "validation on OOD samples",
            Validation::Fgsm => "validation on FGSM adversarial samples",
        }
    }
}

impl std::fmt::Display for Validation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Validation {
    type Err = String;

    /// Parses `ood` (alias `io`, the reference's name) or `fgsm`, in any case.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "ood" | "io" => Ok(Validation::Ood),
            "fgsm" => Ok(Validation::Fgsm),
            _ => Err(format!(
                "unknown validation source `{s}`; expected ood (alias io) or fgsm"
            )),
        }
    }
}

/// The detector's input for one magnitude: one column per layer, rows as in the score files.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerFeatures {
    /// The pre-processing magnitude.
    pub eps: f64,
    /// `[N, layers]`.
    pub x: Array2<f64>,
    /// `[N]`, 1 = OOD (or adversarial), OOD rows first.
    pub labels: Vec<u8>,
    /// Number of OOD rows.
    pub n_out: usize,
    /// FGSM groups, for FGSM sets.
    pub group: Option<Vec<u8>>,
}

/// The max over columns of each row: the flow's per-layer feature from a `[N, C]` matrix of
/// class log-densities. NaN-free input assumed (score files are checked finite).
pub fn max_over_classes(scores: ArrayView2<f64>) -> Array1<f64> {
    scores.map_axis(Axis(1), |row| {
        row.iter().copied().fold(f64::NEG_INFINITY, f64::max)
    })
}

/// One magnitude's inputs: the OOD set's features and, for FGSM validation, the FGSM features.
#[derive(Debug, Clone)]
pub struct EpsInput {
    /// The OOD set's features (test rows, and fit/select rows for IO validation).
    pub io: LayerFeatures,
    /// The FGSM features (fit/select rows for FGSM validation).
    pub fgsm: Option<LayerFeatures>,
}

/// The outcome of one magnitude on the selection block.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpsTrial {
    /// The magnitude.
    pub eps: f64,
    /// The regularisation strength chosen by cross-validation.
    pub c: f64,
    /// TNR at TPR 95% on the selection block (fraction).
    pub select_tnr: f64,
    /// ODIN's temperature of this trial (absent for every other detector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// Test-set outputs of the chosen detector (for plots).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TestScores {
    /// Confidence `-P(OOD)` of the in-distribution test rows.
    pub confidence_in: Vec<f64>,
    /// Confidence of the OOD test rows.
    pub confidence_ood: Vec<f64>,
    /// Negated log-odds `-(x . coef + b)` of the in-distribution test rows (higher = in-dist).
    pub logit_in: Vec<f64>,
    /// Negated log-odds of the OOD test rows.
    pub logit_ood: Vec<f64>,
}

/// The detector's result for one (in-distribution set, OOD set).
#[derive(Debug, Clone)]
pub struct DetectorResult {
    /// The detector.
    pub detector: DetectorKind,
    /// The OOD set.
    pub ood: String,
    /// How it was validated.
    pub validation: Validation,
    /// The chosen magnitude.
    pub eps: f64,
    /// The regression's C at that magnitude.
    pub c: f64,
    /// Coefficients (one per layer) at that magnitude.
    pub coef: Vec<f64>,
    /// Intercept at that magnitude.
    pub intercept: f64,
    /// ODIN's chosen temperature (`None` for every other detector).
    pub temperature: Option<f64>,
    /// The feature layers behind `coef`, in order (set by the caller that knows them; empty for
    /// the baselines).
    pub layers: Vec<usize>,
    /// Test metrics (fractions).
    pub metrics: Metrics,
    /// Every magnitude tried, in order.
    pub trials: Vec<EpsTrial>,
    /// Rows in the fit, selection and test sets (test: in-distribution, OOD).
    pub counts: RowCounts,
    /// Test confidences for plots.
    pub test: TestScores,
}

/// Row counts of the parts used, and the rule of the IO split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RowCounts {
    /// How the OOD set's rows were split (results files without it used the reference's rule).
    #[serde(default)]
    pub split: IoSplitRule,
    /// Rows the regression was fitted on.
    pub fit: usize,
    /// Rows the magnitude was selected on.
    pub select: usize,
    /// In-distribution test rows.
    pub test_in: usize,
    /// OOD test rows.
    pub test_ood: usize,
}

fn rows(x: &Array2<f64>, idx: &[usize]) -> Array2<f64> {
    x.select(Axis(0), idx)
}

fn labels_of(labels: &[u8], idx: &[usize]) -> Vec<u8> {
    idx.iter().map(|&i| labels[i]).collect()
}

/// `(in-distribution, OOD)` confidences `-P(OOD)` of rows `idx`.
fn confidences(
    model: &FittedLogistic,
    f: &LayerFeatures,
    idx: &[usize],
) -> Result<(Vec<f64>, Vec<f64>)> {
    let p = model.predict_proba(rows(&f.x, idx).view())?;
    Ok(split_by_label(
        &p.mapv(|v| -v).to_vec(),
        &labels_of(&f.labels, idx),
    ))
}

fn split_by_label(values: &[f64], labels: &[u8]) -> (Vec<f64>, Vec<f64>) {
    let mut a = (Vec::new(), Vec::new());
    for (&v, &l) in values.iter().zip(labels) {
        if l == 0 { &mut a.0 } else { &mut a.1 }.push(v);
    }
    a
}

/// The rows that fit and select a detector at one magnitude: the OOD set's own file split by
/// [`splits::io_split`], or the FGSM file split by [`fgsm_split`].
fn validation_rows<'a>(
    detector: DetectorKind,
    ood: &str,
    validation: Validation,
    input: &'a EpsInput,
) -> Result<(&'a LayerFeatures, splits::RowSplit)> {
    let (val, split) = match validation {
        Validation::Ood => (
            &input.io,
            splits::io_split(input.io.x.nrows(), input.io.n_out)?,
        ),
        Validation::Fgsm => {
            let f = input.fgsm.as_ref().ok_or_else(|| {
                Error::BadData(format!(
                    "FGSM validation of {} vs {ood} at eps {}: no FGSM features",
                    detector.label(),
                    eps_name(input.io.eps)
                ))
            })?;
            let group = f
                .group
                .as_deref()
                .ok_or_else(|| Error::BadData("FGSM features without groups".to_string()))?;
            (f, fgsm_split(group)?)
        }
    };
    if val.x.ncols() != input.io.x.ncols() {
        return Err(Error::Shape(format!(
            "{} at eps {}: FGSM features have {} columns but the {ood} features {}",
            detector.label(),
            eps_name(input.io.eps),
            val.x.ncols(),
            input.io.x.ncols()
        )));
    }
    Ok((val, split))
}

/// `(in-distribution, OOD)` values of column `column` of `f` at rows `idx`.
fn column_by_label(f: &LayerFeatures, column: usize, idx: &[usize]) -> (Vec<f64>, Vec<f64>) {
    let values: Vec<f64> = idx.iter().map(|&i| f.x[[i, column]]).collect();
    split_by_label(&values, &labels_of(&f.labels, idx))
}

/// `docs/method.md#baseline-evaluation` on in-memory scores of a detector without regression (a
/// baseline): each column of the score matrices is a candidate score (ODIN: one per temperature),
/// the (magnitude, column) with the highest TNR at TPR 95% on the selection rows wins (the first on
/// ties), and its scores on the IO test rows are the confidences. A single candidate wins
/// unopposed.
/// `temperatures` names the temperature of each column for detectors whose variants are
/// temperatures (recorded with the result).
pub fn evaluate_direct(
    detector: DetectorKind,
    ood: &str,
    validation: Validation,
    inputs: &[EpsInput],
    temperatures: Option<&[f64]>,
) -> Result<DetectorResult> {
    let temperature = |column: usize| temperatures.and_then(|t| t.get(column).copied());
    let mut trials = Vec::new();
    let mut best: Option<(usize, usize, f64, usize)> = None;
    for (k, input) in inputs.iter().enumerate() {
        let (val, split) = validation_rows(detector, ood, validation, input)?;
        for column in 0..val.x.ncols() {
            let (sel_in, sel_ood) = column_by_label(val, column, &split.select);
            let tnr = metrics::tnr_at_tpr95(&sel_in, &sel_ood)?;
            trials.push(EpsTrial {
                eps: input.io.eps,
                c: 0.0,
                select_tnr: tnr,
                temperature: temperature(column),
            });
            if best.as_ref().is_none_or(|b| tnr > b.2) {
                best = Some((k, column, tnr, split.select.len()));
            }
        }
    }
    let Some((k, column, _, n_select)) = best else {
        return Err(Error::BadData(format!(
            "{} vs {ood}: no scores to evaluate",
            detector.label()
        )));
    };
    let io = &inputs[k].io;
    let test = splits::io_split(io.x.nrows(), io.n_out)?.test;
    let (confidence_in, confidence_ood) = column_by_label(io, column, &test);
    let metrics = metrics::compute(&confidence_in, &confidence_ood)?;
    Ok(DetectorResult {
        detector,
        ood: ood.to_string(),
        validation,
        eps: io.eps,
        c: 0.0,
        coef: Vec::new(),
        intercept: 0.0,
        temperature: temperature(column),
        layers: Vec::new(),
        metrics,
        trials,
        counts: RowCounts {
            split: IoSplitRule::for_counts(io.x.nrows() - io.n_out, io.n_out),
            fit: 0,
            select: n_select,
            test_in: confidence_in.len(),
            test_ood: confidence_ood.len(),
        },
        test: TestScores {
            logit_in: confidence_in.clone(),
            logit_ood: confidence_ood.clone(),
            confidence_in,
            confidence_ood,
        },
    })
}

/// Runs `docs/method.md#the-regression-detector` on in-memory features: per magnitude, fit on the
/// fit block, TNR on the selection block; the best magnitude (first on ties) is evaluated on the IO
/// test split.
pub fn evaluate_detector(
    detector: DetectorKind,
    ood: &str,
    validation: Validation,
    inputs: &[EpsInput],
    regression: &LogisticRegressionCv,
) -> Result<DetectorResult> {
    if inputs.is_empty() {
        return Err(Error::BadData(format!(
            "{} vs {ood}: no magnitudes to evaluate",
            detector.label()
        )));
    }
    let mut trials = Vec::with_capacity(inputs.len());
    let mut best: Option<(usize, f64, FittedLogistic, (usize, usize))> = None;
    for (k, input) in inputs.iter().enumerate() {
        let (val, split) = validation_rows(detector, ood, validation, input)?;
        let model = regression.fit(
            rows(&val.x, &split.fit).view(),
            &labels_of(&val.labels, &split.fit),
        )?;
        let (sel_in, sel_ood) = confidences(&model, val, &split.select)?;
        let tnr = metrics::tnr_at_tpr95(&sel_in, &sel_ood)?;
        trials.push(EpsTrial {
            eps: input.io.eps,
            c: model.c,
            select_tnr: tnr,
            temperature: None,
        });
        if best.as_ref().is_none_or(|b| tnr > b.1) {
            best = Some((k, tnr, model, (split.fit.len(), split.select.len())));
        }
    }
    let Some((k, _, model, (n_fit, n_select))) = best else {
        return Err(Error::BadData("no magnitude evaluated".into()));
    };
    let io = &inputs[k].io;
    let test = splits::io_split(io.x.nrows(), io.n_out)?.test;
    let (confidence_in, confidence_ood) = confidences(&model, io, &test)?;
    let metrics = metrics::compute(&confidence_in, &confidence_ood)?;
    let logit = model.decision_function(rows(&io.x, &test).view())?;
    let (logit_in, logit_ood) =
        split_by_label(&logit.mapv(|v| -v).to_vec(), &labels_of(&io.labels, &test));
    Ok(DetectorResult {
        detector,
        ood: ood.to_string(),
        validation,
        eps: io.eps,
        c: model.c,
        coef: model.coef.to_vec(),
        intercept: model.intercept,
        temperature: None,
        layers: Vec::new(),
        metrics,
        trials,
        counts: RowCounts {
            split: IoSplitRule::for_counts(io.x.nrows() - io.n_out, io.n_out),
            fit: n_fit,
            select: n_select,
            test_in: confidence_in.len(),
            test_ood: confidence_ood.len(),
        },
        test: TestScores {
            confidence_in,
            confidence_ood,
            logit_in,
            logit_ood,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::Validation;

    #[test]
    fn validation_sources_parse_with_the_references_alias() {
        for (text, v) in [
            ("ood", Validation::Ood),
            ("IO", Validation::Ood),
            ("FGSM", Validation::Fgsm),
        ] {
            assert_eq!(text.parse::<Validation>(), Ok(v));
        }
        assert!("adv".parse::<Validation>().is_err());
    }
}
