//! The detector's logistic regression (`docs/method.md#logistic-regression`): scikit-learn's
//! `LogisticRegressionCV` with its defaults, built on `linfa-logistic`.
//!
//! scikit-learn minimises `C * sum_i logloss_i + 0.5 * ||w||^2` (intercept not penalised) for each
//! `C` in `logspace(-4, 4, 10)`, scores each `C` by accuracy over a 5-fold stratified split
//! (`StratifiedKFold` without shuffling), picks the `C` with the best summed accuracy (the first on
//! ties) and refits on all rows. `linfa-logistic` minimises `sum_i logloss_i + 0.5 * alpha *
//! ||w||^2` (intercept not penalised either): the same minimiser for `alpha = 1 / C`.
//!
//! We solve to a much tighter tolerance than scikit-learn's default (`tol = 1e-4` on the
//! gradient of the mean objective, `max_iter = 100`): `linfa-logistic`'s L-BFGS gets close, then a
//! few damped Newton steps (the problem has only `features + 1` parameters) reach the optimum to
//! rounding. L-BFGS alone stalls short of it when the columns have very different scales, as the
//! detector's per-layer scores do. Our coefficients are thus the exact optimum; scikit-learn's
//! default fit agrees with them to its own tolerance (about 1e-3 relative).
use crate::folds::stratified_kfold;
pub use crate::logistic::FittedLogistic;
use crate::logistic::{gradient_and_hessian, mean_gradient, mean_objective};
use crate::{Error, Result};
use linfa::traits::Fit;
use linfa::DatasetBase;
use linfa_linalg::cholesky::SolveCInplace;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2, ArrayView2, Axis};

/// Number of regularisation strengths scikit-learn tries by default (`Cs = 10`).
pub const DEFAULT_N_CS: usize = 10;
/// Number of cross-validation folds scikit-learn uses by default (`cv = None`).
pub const DEFAULT_N_FOLDS: usize = 5;

/// `numpy.logspace(start, stop, num)`: `10 ** linspace(start, stop, num)`, the last exponent
/// being exactly `stop`.
pub fn logspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    let step = if num > 1 {
        (stop - start) / (num - 1) as f64
    } else {
        0.0
    };
    (0..num)
        .map(|i| {
            let exponent = if i + 1 == num && num > 1 {
                stop
            } else {
                i as f64 * step + start
            };
            10f64.powf(exponent)
        })
        .collect()
}

/// scikit-learn's default grid of inverse regularisation strengths, `logspace(-4, 4, 10)`.
pub fn default_cs() -> Vec<f64> {
    logspace(-4.0, 4.0, DEFAULT_N_CS)
}

/// Mean-objective gradient norm at which L-BFGS hands over to Newton's method (see
/// [`SolverOptions::gradient_tolerance`]).
const LBFGS_TOLERANCE: f64 = 1e-4;

/// Settings of the cross-validated logistic regression; [`Default`] is scikit-learn's.
#[derive(Debug, Clone, PartialEq)]
pub struct LogisticRegressionCv {
    /// Inverse regularisation strengths to try, in order (ties go to the earlier one).
    pub cs: Vec<f64>,
    /// Number of stratified folds.
    pub n_folds: usize,
    /// Solver settings of each single fit.
    pub solver: SolverOptions,
}

impl Default for LogisticRegressionCv {
    fn default() -> Self {
        LogisticRegressionCv {
            cs: default_cs(),
            n_folds: DEFAULT_N_FOLDS,
            solver: SolverOptions::default(),
        }
    }
}

/// Stopping rules of one fit: `linfa-logistic`'s L-BFGS, then damped Newton steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SolverOptions {
    /// Stop when the gradient norm of the mean objective `(1/n) * (sum logloss + ||w||^2 / (2C))`
    /// falls below this. L-BFGS stops at `max(gradient_tolerance, 1e-4)` (scikit-learn's `tol`); Newton's method
    /// takes it from there.
    pub gradient_tolerance: f64,
    /// Most L-BFGS iterations per fit (scikit-learn's `max_iter`); Newton's method finishes what
    /// L-BFGS leaves.
    pub max_iterations: u64,
}

impl Default for SolverOptions {
    fn default() -> Self {
        SolverOptions {
            gradient_tolerance: 1e-10,
            max_iterations: 100,
        }
    }
}

/// Fits scikit-learn's default `LogisticRegressionCV` on rows `x` with labels `y` (0 or 1).
pub fn fit(x: ArrayView2<f64>, y: &[u8]) -> Result<FittedLogistic> {
    LogisticRegressionCv::default().fit(x, y)
}

impl LogisticRegressionCv {
    /// Cross-validates every C, then refits on all rows with the best one.
    ///
    /// Errors on mismatched shapes, non-finite features, labels other than 0/1, or fewer than
    /// `n_folds` rows of either label.
    pub fn fit(&self, x: ArrayView2<f64>, y: &[u8]) -> Result<FittedLogistic> {
        self.check_settings()?;
        check_data(x, y)?;
        let counts = [0u8, 1].map(|label| y.iter().filter(|&&v| v == label).count());
        if counts.iter().any(|&n| n < self.n_folds) {
            return Err(Error::BadData(format!(
                "logistic regression: {}-fold stratified CV needs at least {} rows of each label, \
                 got {} of label 0 and {} of label 1",
                self.n_folds, self.n_folds, counts[0], counts[1]
            )));
        }
        let test_fold = stratified_kfold(y, self.n_folds)?;
        let mut accuracy = Array2::zeros((self.n_folds, self.cs.len()));
        let mut fold_paths = Vec::with_capacity(self.n_folds);
        for fold in 0..self.n_folds {
            let (train, test): (Vec<usize>, Vec<usize>) =
                (0..y.len()).partition(|&i| test_fold[i] != fold);
            let (path, fold_accuracy) = self.fold_path(x, y, &train, &test)?;
            accuracy.row_mut(fold).assign(&Array1::from(fold_accuracy));
            fold_paths.push(path);
        }
        let best = best_c_index(accuracy.view());
        let init = mean_params(fold_paths.iter().map(|path| &path[best]));
        let mut model = fit_l2_from(x, y, self.cs[best], &self.solver, Some(&init))?;
        model.cv_accuracy = accuracy;
        Ok(model)
    }

    /// Fits every C on the `train` rows (each starting from the previous solution, like
    /// scikit-learn's path) and returns the models and their accuracies on the `test` rows.
    fn fold_path(
        &self,
        x: ArrayView2<f64>,
        y: &[u8],
        train: &[usize],
        test: &[usize],
    ) -> Result<(Vec<FittedLogistic>, Vec<f64>)> {
        let rows = |idx: &[usize]| (x.select(Axis(0), idx), idx.iter().map(|&i| y[i]).collect());
        let (x_train, y_train): (Array2<f64>, Vec<u8>) = rows(train);
        let (x_test, y_test): (Array2<f64>, Vec<u8>) = rows(test);
        let mut path: Vec<FittedLogistic> = Vec::with_capacity(self.cs.len());
        let mut accuracy = Vec::with_capacity(self.cs.len());
        for &c in &self.cs {
            let warm = path.last().map(stacked);
            let model = fit_l2_from(x_train.view(), &y_train, c, &self.solver, warm.as_ref())?;
            accuracy.push(accuracy_of(&model, x_test.view(), &y_test)?);
            path.push(model);
        }
        Ok((path, accuracy))
    }

    /// Rejects settings scikit-learn would reject.
    fn check_settings(&self) -> Result<()> {
        if self.cs.is_empty() || self.cs.iter().any(|c| !(c.is_finite() && *c > 0.0)) {
            return Err(Error::bad_option(
                "regression.cs",
                format!("must be positive and finite, got {:?}", self.cs),
            ));
        }
        if self.n_folds < 2 {
            return Err(Error::bad_option(
                "regression.n_folds",
                format!("need at least 2 folds, got {}", self.n_folds),
            ));
        }
        Ok(())
    }
}

/// Index of the C with the largest accuracy summed over folds (in fold order); first on ties.
fn best_c_index(accuracy: ArrayView2<f64>) -> usize {
    let mut best = 0;
    let mut best_sum = f64::NEG_INFINITY;
    for (j, column) in accuracy.axis_iter(Axis(1)).enumerate() {
        let sum = column.iter().fold(0.0, |acc, v| acc + v);
        if sum > best_sum {
            best_sum = sum;
            best = j;
        }
    }
    best
}

/// Fraction of rows whose predicted label equals `y`.
fn accuracy_of(model: &FittedLogistic, x: ArrayView2<f64>, y: &[u8]) -> Result<f64> {
    let predicted = model.predict(x)?;
    let correct = predicted.iter().zip(y).filter(|(p, t)| p == t).count();
    Ok(correct as f64 / y.len() as f64)
}

/// `[coef..., intercept]`, the layout of warm starts.
fn stacked(model: &FittedLogistic) -> Array1<f64> {
    let mut params = model.coef.to_vec();
    params.push(model.intercept);
    Array1::from(params)
}

/// Element-wise mean of the stacked parameters of several models (scikit-learn's refit start).
fn mean_params<'a>(models: impl Iterator<Item = &'a FittedLogistic>) -> Array1<f64> {
    let all: Vec<Array1<f64>> = models.map(stacked).collect();
    let n = all.len() as f64;
    all.into_iter()
        .reduce(|a, b| a + b)
        .map(|sum| sum / n)
        .unwrap_or_else(|| Array1::zeros(0))
}

/// Fits one L2-penalised logistic regression with inverse strength `c` (no cross-validation).
///
/// Errors on mismatched shapes, non-finite features, labels other than 0/1, a single label, or a
/// non-positive `c`.
pub fn fit_l2(
    x: ArrayView2<f64>,
    y: &[u8],
    c: f64,
    solver: &SolverOptions,
) -> Result<FittedLogistic> {
    check_data(x, y)?;
    if !(c.is_finite() && c > 0.0) {
        return Err(Error::bad_option(
            "c",
            format!(
                "the inverse regularisation strength of a logistic regression must be positive \
                 and finite, got {c}"
            ),
        ));
    }
    fit_l2_from(x, y, c, solver, None)
}

/// [`fit_l2`] on checked data, starting from `init = [coef..., intercept]` (zeros if `None`).
fn fit_l2_from(
    x: ArrayView2<f64>,
    y: &[u8],
    c: f64,
    solver: &SolverOptions,
    init: Option<&Array1<f64>>,
) -> Result<FittedLogistic> {
    // linfa's positive class is the more frequent label (the first one seen on ties); its
    // parameters predict that class. We convert to and from "label 1 is positive".
    let sign = if linfa_positive_label(y) == 1 {
        1.0
    } else {
        -1.0
    };
    let n = y.len() as f64;
    let mut params = LogisticRegression::default()
        .alpha(1.0 / c)
        .with_intercept(true)
        .gradient_tolerance(solver.gradient_tolerance.max(LBFGS_TOLERANCE) * n)
        .max_iterations(solver.max_iterations);
    if let Some(init) = init {
        params = params.initial_params(init * sign);
    }
    let dataset = DatasetBase::new(x, Array1::from(y.to_vec()));
    let fitted = params
        .fit(&dataset)
        .map_err(|e| Error::BadData(format!("logistic regression (C = {c}): {e}")))?;
    let sign = if fitted.labels().pos.class == 1 {
        1.0
    } else {
        -1.0
    };
    let mut model = FittedLogistic {
        c,
        coef: fitted.params() * sign,
        intercept: fitted.intercept() * sign,
        cv_accuracy: Array2::zeros((0, 0)),
    };
    newton_polish(&mut model, x, y, solver);
    Ok(model)
}

/// Damped Newton steps from L-BFGS's end point until the mean objective's gradient norm is below
/// the tolerance. L-BFGS stalls short of it when columns have very different scales (the
/// Hessian is then badly conditioned); with a handful of parameters Newton's method finishes the
/// job in a few steps. Stops early (keeping the best point) if a step cannot decrease the
/// objective or the Hessian cannot be factorised.
fn newton_polish(model: &mut FittedLogistic, x: ArrayView2<f64>, y: &[u8], solver: &SolverOptions) {
    const MAX_STEPS: usize = 100;
    let mut value = mean_objective(model, x, y);
    for _ in 0..MAX_STEPS {
        let (grad, hessian) = gradient_and_hessian(model, x, y);
        let grad_norm = norm(&grad);
        if grad_norm < solver.gradient_tolerance {
            return;
        }
        let Some(step) = solve_spd(hessian, &grad) else {
            return;
        };
        // Near the optimum the objective changes by less than its rounding error: there the full
        // step is taken when the objective does not rise beyond rounding and the gradient shrinks.
        let full = shifted(model, &step, 1.0);
        let full_value = mean_objective(&full, x, y);
        let slack = 16.0 * f64::EPSILON * value.abs();
        if full_value <= value + slack && norm(&mean_gradient(&full, x, y)) < grad_norm {
            *model = full;
            value = full_value;
            continue;
        }
        match backtrack(model, &step, value, x, y) {
            Some((better, better_value)) => {
                *model = better;
                value = better_value;
            }
            None => return,
        }
    }
}

/// Halves the Newton step until the objective strictly decreases; `None` if it never does.
fn backtrack(
    model: &FittedLogistic,
    step: &Array1<f64>,
    value: f64,
    x: ArrayView2<f64>,
    y: &[u8],
) -> Option<(FittedLogistic, f64)> {
    const MAX_HALVINGS: i32 = 60;
    (0..MAX_HALVINGS).find_map(|k| {
        let trial = shifted(model, step, 0.5f64.powi(k));
        let trial_value = mean_objective(&trial, x, y);
        (trial_value < value).then_some((trial, trial_value))
    })
}

/// Euclidean norm.
fn norm(v: &Array1<f64>) -> f64 {
    v.dot(v).sqrt()
}

/// `model` with `[coef, intercept] -= scale * step`.
fn shifted(model: &FittedLogistic, step: &Array1<f64>, scale: f64) -> FittedLogistic {
    let p = model.coef.len();
    let mut trial = model.clone();
    for (w, s) in trial.coef.iter_mut().zip(step.iter()) {
        *w -= scale * s;
    }
    trial.intercept -= scale * step[p];
    trial
}

/// Solves `h s = g` for a symmetric positive definite `h` (Jacobi-scaled Cholesky, by
/// `linfa-linalg`); `None` if `h` is not numerically positive definite.
fn solve_spd(mut h: Array2<f64>, g: &Array1<f64>) -> Option<Array1<f64>> {
    let m = g.len();
    let d: Vec<f64> = (0..m).map(|i| h[[i, i]]).collect();
    if d.iter().any(|&v| !(v > 0.0 && v.is_finite())) {
        return None;
    }
    let scale = Array1::from_iter(d.iter().map(|v| 1.0 / v.sqrt()));
    for a in 0..m {
        for b in 0..m {
            h[[a, b]] *= scale[a] * scale[b];
        }
    }
    let mut v = (g * &scale).insert_axis(Axis(1));
    h.solvec_inplace(&mut v).ok()?;
    let step = v.remove_axis(Axis(1)) * &scale;
    step.iter().all(|x| x.is_finite()).then_some(step)
}

/// The label linfa-logistic treats as positive: the more frequent one, the first seen on ties.
fn linfa_positive_label(y: &[u8]) -> u8 {
    let first = y.first().copied().unwrap_or(1);
    let n_first = y.iter().filter(|&&v| v == first).count();
    if n_first * 2 < y.len() {
        1 - first
    } else {
        first
    }
}

/// Checks shapes, finiteness and 0/1 labels with both labels present.
fn check_data(x: ArrayView2<f64>, y: &[u8]) -> Result<()> {
    if x.nrows() != y.len() {
        return Err(Error::Shape(format!(
            "logistic regression: {} feature rows but {} labels",
            x.nrows(),
            y.len()
        )));
    }
    if x.ncols() == 0 {
        return Err(Error::Shape(
            "logistic regression: the feature matrix has no columns".into(),
        ));
    }
    if let Some((i, _)) = x.indexed_iter().find(|(_, v)| !v.is_finite()) {
        return Err(Error::BadData(format!(
            "logistic regression: feature at row {}, column {} is not finite",
            i.0, i.1
        )));
    }
    if let Some(i) = y.iter().position(|&v| v > 1) {
        return Err(Error::BadData(format!(
            "logistic regression: label at row {i} is {} (labels must be 0 or 1)",
            y[i]
        )));
    }
    if !(y.contains(&0) && y.contains(&1)) {
        return Err(Error::BadData(
            "logistic regression: the labels must contain both 0 and 1".into(),
        ));
    }
    Ok(())
}

/// Gradient of scikit-learn's objective divided by `C * n`, i.e. of the mean objective
/// `(1/n) * sum logloss + ||w||^2 / (2 C n)`, at `model` (`[d/dw..., d/db]`): zero at the optimum.
pub fn objective_gradient(
    model: &FittedLogistic,
    x: ArrayView2<f64>,
    y: &[u8],
) -> Result<Array1<f64>> {
    check_data(x, y)?;
    if x.ncols() != model.coef.len() {
        return Err(Error::Shape(format!(
            "logistic regression: the model has {} features but the data has {} columns",
            model.coef.len(),
            x.ncols()
        )));
    }
    Ok(mean_gradient(model, x, y))
}
