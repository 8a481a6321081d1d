//! The detector's logistic regression against scikit-learn's `LogisticRegressionCV` (defaults) and
//! `StratifiedKFold`, run in the setup's venv.
use crate::common;

use ndarray::{Array1, Array2};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resflow::fit::folds;
use resflow::fit::regression::{self, LogisticRegressionCv, SolverOptions};
use resflow_fit::Error as FitError;
use std::path::Path;

/// Fits scikit-learn on `X.npy`, `y.npy` and prints JSON: the default `LogisticRegressionCV`
/// (C, coef, intercept, P(label 1) per row, CV accuracy per fold and C), the same model fitted
/// to tolerance 1e-12 at its C, that fit finished with numpy Newton steps, and the fold of each
/// row under `StratifiedKFold(5)`.
const SKLEARN_FIT: &str = r#"
import json, sys, warnings
import numpy as np
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.model_selection import StratifiedKFold
warnings.simplefilter("ignore")
X = np.load(sys.argv[1]); y = np.load(sys.argv[2])
cv = LogisticRegressionCV().fit(X, y)
C = cv.C_[0]
tight = LogisticRegression(C=C, tol=1e-12, max_iter=100000).fit(X, y)
# Newton's method on C * sum(logloss) + ||w||^2 / 2 from scikit-learn's tight fit, to rounding.
A = np.hstack([X, np.ones((len(y), 1))])
theta = np.append(tight.coef_[0], tight.intercept_[0])
reg = np.append(np.full(X.shape[1], 1.0 / C), 0.0)
for _ in range(20):
    p = 1.0 / (1.0 + np.exp(-A @ theta))
    grad = A.T @ (p - y) + reg * theta
    hess = (A * (p * (1 - p))[:, None]).T @ A + np.diag(reg)
    theta = theta - np.linalg.solve(hess, grad)
folds = np.empty(len(y), dtype=int)
for f, (_, test) in enumerate(StratifiedKFold(5).split(X, y)):
    folds[test] = f
print(json.dumps({
    "C": float(cv.C_[0]),
    "Cs": cv.Cs_.tolist(),
    "coef": cv.coef_[0].tolist(),
    "intercept": float(cv.intercept_[0]),
    "proba": cv.predict_proba(X)[:, 1].tolist(),
    "scores": cv.scores_[1].reshape(5, -1).tolist(),
    "max_iter": int(cv.n_iter_.max()),
    "tight_coef": tight.coef_[0].tolist(),
    "tight_intercept": float(tight.intercept_[0]),
    "newton_coef": theta[:-1].tolist(),
    "newton_intercept": float(theta[-1]),
    "folds": folds.tolist(),
}))
"#;

/// Prints the `StratifiedKFold(k)` test fold of every label in `y.npy` as JSON, for k = argv[2].
const SKLEARN_FOLDS: &str = r#"
import json, sys
import numpy as np
from sklearn.model_selection import StratifiedKFold
y = np.load(sys.argv[1]); k = int(open(sys.argv[2]).read())
folds = np.empty(len(y), dtype=int)
for f, (_, test) in enumerate(StratifiedKFold(k).split(np.zeros((len(y), 1)), y)):
    folds[test] = f
print(json.dumps(folds.tolist()))
"#;

/// Column scales, like per-layer detector scores (deep layers have larger magnitudes).
const SCALES: [f64; 5] = [1.0, 4.0, 20.0, 60.0, 250.0];

/// A detector-like data set: `n_in` in-distribution rows (label 0) then `n_out` OOD rows
/// (label 1), 5 correlated columns on different scales, OOD shifted down and overlapping.
fn detector_like(n_in: usize, n_out: usize, seed: u64) -> (Array2<f64>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.0, 1.0).unwrap();
    let n = n_in + n_out;
    let mut x = Array2::zeros((n, SCALES.len()));
    let mut y = Vec::with_capacity(n);
    for i in 0..n {
        let ood = i >= n_in;
        y.push(u8::from(ood));
        let shared = normal.sample(&mut rng);
        for (j, &scale) in SCALES.iter().enumerate() {
            let (shift, spread) = if ood {
                (-1.0 - 0.15 * j as f64, 1.3)
            } else {
                (0.0, 1.0)
            };
            let own = normal.sample(&mut rng);
            x[[i, j]] = scale * (-3.0 + shift + spread * (0.6 * shared + 0.8 * own));
        }
    }
    (x, y)
}

fn write_npy_f64(path: &Path, x: &Array2<f64>) {
    ndarray_npy::write_npy(path, x).unwrap();
}

fn write_npy_labels(path: &Path, y: &[u8]) {
    let y: Array1<i64> = y.iter().map(|&v| i64::from(v)).collect();
    ndarray_npy::write_npy(path, &y).unwrap();
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn sklearn_fit(x: &Array2<f64>, y: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let (xp, yp) = (dir.path().join("X.npy"), dir.path().join("y.npy"));
    write_npy_f64(&xp, x);
    write_npy_labels(&yp, y);
    let out = common::run_python(SKLEARN_FIT, &[xp.as_path(), yp.as_path()]);
    serde_json::from_str(out.trim()).unwrap()
}

fn sklearn_folds(y: &[u8], k: usize) -> Vec<usize> {
    let dir = tempfile::tempdir().unwrap();
    let (yp, kp) = (dir.path().join("y.npy"), dir.path().join("k.txt"));
    write_npy_labels(&yp, y);
    std::fs::write(&kp, k.to_string()).unwrap();
    let out = common::run_python(SKLEARN_FOLDS, &[yp.as_path(), kp.as_path()]);
    serde_json::from_str(out.trim()).unwrap()
}

fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol,
            "{what}[{i}]: {g} vs scikit-learn {w} (diff {:e}, tolerance {tol:e})",
            (g - w).abs()
        );
    }
}

/// Checks our fit against scikit-learn's on one data set.
fn check_against_sklearn(x: &Array2<f64>, y: &[u8]) {
    let want = sklearn_fit(x, y);
    let got = regression::fit(x.view(), y).unwrap();
    println!(
        "C = {} (scikit-learn {}), coef {:?}, intercept {}, scikit-learn max n_iter {}",
        got.c, want["C"], got.coef, got.intercept, want["max_iter"]
    );
    assert_close("Cs", &regression::default_cs(), &floats(&want["Cs"]), 0.0);
    let c = want["C"].as_f64().unwrap();
    assert_eq!(
        got.c, c,
        "chosen C differs: ours {}, scikit-learn {c}",
        got.c
    );
    let scores: Vec<f64> = want["scores"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    assert_close(
        "CV accuracy (fold-major)",
        got.cv_accuracy.as_slice().unwrap(),
        &scores,
        0.0,
    );
    // Against the exact optimum (Newton in numpy): to rounding. Against scikit-learn's own
    // lbfgs at tolerance 1e-12, which stops on its relative cost change first: 1e-6.
    let coef = got.coef.to_vec();
    let newton_coef = floats(&want["newton_coef"]);
    let newton_intercept = want["newton_intercept"].as_f64().unwrap();
    assert_close("exact coef", &coef, &newton_coef, 1e-10);
    assert_close(
        "exact intercept",
        &[got.intercept],
        &[newton_intercept],
        1e-9,
    );
    assert_close("tight coef", &coef, &floats(&want["tight_coef"]), 1e-6);
    let tight_intercept = want["tight_intercept"].as_f64().unwrap();
    assert_close(
        "tight intercept",
        &[got.intercept],
        &[tight_intercept],
        1e-6,
    );
    // Against the default fit, which stops at gradient 1e-4: 1e-3 (relative for the intercept,
    // whose size is several units here).
    assert_close("coef", &coef, &floats(&want["coef"]), 1e-3);
    let intercept = want["intercept"].as_f64().unwrap();
    let tolerance = 1e-3 * intercept.abs().max(1.0);
    assert_close("intercept", &[got.intercept], &[intercept], tolerance);
    let proba = got.predict_proba(x.view()).unwrap().to_vec();
    assert_close("predict_proba", &proba, &floats(&want["proba"]), 1e-3);
    // Our optimum is stationary: the gradient of the mean objective vanishes.
    let grad = regression::objective_gradient(&got, x.view(), y).unwrap();
    let norm = grad.dot(&grad).sqrt();
    assert!(norm < 1e-9, "gradient norm at our optimum {norm:e}");
    let folds: Vec<usize> = serde_json::from_value(want["folds"].clone()).unwrap();
    assert_eq!(folds::stratified_kfold(y, 5).unwrap(), folds);
}

#[test]
fn matches_sklearn_on_detector_like_data() {
    // The regression stage's fit block: 500 in-distribution rows then 500 OOD rows.
    let (x, y) = detector_like(500, 500, 11);
    check_against_sklearn(&x, &y);
}

#[test]
fn matches_sklearn_on_unbalanced_data() {
    let (x, y) = detector_like(300, 170, 12);
    check_against_sklearn(&x, &y);
}

#[test]
fn stratified_folds_match_sklearn() {
    let mut cases: Vec<(Vec<u8>, usize)> = vec![
        // Balanced blocks, as in the fit block.
        ([0u8; 500].iter().chain(&[1u8; 500]).copied().collect(), 5),
        // OOD first, uneven sizes, not divisible by k.
        ([1u8; 23].iter().chain(&[0u8; 37]).copied().collect(), 5),
        // Three classes, interleaved, with a label order unlike the value order.
        (
            (0..101).map(|i| [2u8, 0, 1, 0, 2, 2, 1][i % 7]).collect(),
            4,
        ),
        // A class smaller than k (scikit-learn only warns).
        ((0..40).map(|i| u8::from(i % 13 == 0)).collect(), 5),
    ];
    cases.push(((0..57).map(|i| u8::from(i * 7 % 5 < 2)).collect(), 3));
    for (y, k) in cases {
        let want = sklearn_folds(&y, k);
        let got = folds::stratified_kfold(&y, k).unwrap();
        assert_eq!(got, want, "labels {y:?}, k = {k}");
    }
}

#[test]
fn predict_proba_is_the_sigmoid_of_the_decision_function() {
    let (x, y) = detector_like(60, 40, 13);
    let model = regression::fit_l2(x.view(), &y, 0.1, &SolverOptions::default()).unwrap();
    let z = model.decision_function(x.view()).unwrap();
    let p = model.predict_proba(x.view()).unwrap();
    for (z, p) in z.iter().zip(&p) {
        assert!((p - 1.0 / (1.0 + (-z).exp())).abs() < 1e-15);
    }
    let predicted = model.predict(x.view()).unwrap();
    let expected: Vec<u8> = z.iter().map(|&z| u8::from(z > 0.0)).collect();
    assert_eq!(predicted, expected);
    // Relabelling (swapping 0 and 1) negates the model.
    let flipped: Vec<u8> = y.iter().map(|v| 1 - v).collect();
    let other = regression::fit_l2(x.view(), &flipped, 0.1, &SolverOptions::default()).unwrap();
    assert!((other.intercept + model.intercept).abs() < 1e-8);
    for (a, b) in other.coef.iter().zip(&model.coef) {
        assert!((a + b).abs() < 1e-8, "{a} vs {b}");
    }
}

#[test]
fn rejects_bad_input() {
    let (x, y) = detector_like(20, 20, 14);
    let err = regression::fit(x.view(), &y[..39]).unwrap_err();
    assert!(matches!(err, FitError::Shape(_)), "{err}");
    let err = err.to_string();
    assert!(err.contains("40 feature rows but 39 labels"), "{err}");
    let mut bad = y.clone();
    bad[3] = 2;
    let err = regression::fit(x.view(), &bad).unwrap_err().to_string();
    assert!(err.contains("label at row 3 is 2"), "{err}");
    let err = regression::fit(x.view(), &[0; 40]).unwrap_err().to_string();
    assert!(err.contains("both 0 and 1"), "{err}");
    let mut nan = x.clone();
    nan[[5, 2]] = f64::NAN;
    let err = regression::fit(nan.view(), &y).unwrap_err();
    assert!(matches!(err, FitError::BadData(_)), "{err}");
    let err = err.to_string();
    assert!(err.contains("row 5, column 2 is not finite"), "{err}");
    let few: Vec<u8> = (0..40).map(|i| u8::from(i < 3)).collect();
    let err = regression::fit(x.view(), &few).unwrap_err().to_string();
    assert!(err.contains("got 37 of label 0 and 3 of label 1"), "{err}");
    let settings = LogisticRegressionCv {
        cs: vec![1.0, -1.0],
        ..LogisticRegressionCv::default()
    };
    let Err(FitError::BadOption { option, .. }) = settings.fit(x.view(), &y) else {
        panic!("a negative C accepted");
    };
    assert_eq!(option, "regression.cs");
    let model = regression::fit(x.view(), &y).unwrap();
    let err = model
        .predict_proba(x.slice(ndarray::s![.., ..3]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("5 features but the data has 3 columns"),
        "{err}"
    );
    let err = folds::stratified_kfold(&[0, 1, 0], 5)
        .unwrap_err()
        .to_string();
    assert!(err.contains("n_splits = 5 for 3 rows"), "{err}");
}

#[test]
fn separable_data_fits_without_error() {
    // Perfectly separated classes: the optimum exists (L2 penalty) but is large at big C.
    let n = 60;
    let x = Array2::from_shape_fn((n, 2), |(i, j)| {
        let side = if i < n / 2 { 1.0 } else { -1.0 };
        side * (1.0 + (i % 7) as f64) * if j == 0 { 1.0 } else { 30.0 }
    });
    let y: Vec<u8> = (0..n).map(|i| u8::from(i >= n / 2)).collect();
    let model = regression::fit(x.view(), &y).unwrap();
    assert_eq!(model.predict(x.view()).unwrap(), y);
    // Every C separates the folds perfectly, so the first C wins.
    assert_eq!(model.c, regression::default_cs()[0]);
    assert!(model.cv_accuracy.iter().all(|&a| a == 1.0));
    let grad = regression::objective_gradient(&model, x.view(), &y).unwrap();
    assert!(grad.dot(&grad).sqrt() < 1e-9, "gradient {grad}");
}
