//! A fitted binary logistic regression, its predictions, and scikit-learn's penalised objective
//! at it (value, gradient, Hessian) that the regression's solver minimises.
use crate::{Error, Result};
use ndarray::{Array1, Array2, ArrayView2};

/// A fitted binary logistic regression: `P(label 1 | x) = sigmoid(x . coef + intercept)`.
#[derive(Debug, Clone, PartialEq)]
pub struct FittedLogistic {
    /// The inverse regularisation strength the model was fitted with.
    pub c: f64,
    /// One weight per feature column.
    pub coef: Array1<f64>,
    /// The (unpenalised) intercept.
    pub intercept: f64,
    /// Cross-validation accuracy per fold (rows) and candidate C (columns); empty for a plain fit.
    pub cv_accuracy: Array2<f64>,
}

impl FittedLogistic {
    /// The linear score `x . coef + intercept` per row (positive means label 1 is predicted).
    pub fn decision_function(&self, x: ArrayView2<f64>) -> Result<Array1<f64>> {
        if x.ncols() != self.coef.len() {
            return Err(Error::Shape(format!(
                "logistic regression: the model has {} features but the data has {} columns",
                self.coef.len(),
                x.ncols()
            )));
        }
        Ok(x.dot(&self.coef) + self.intercept)
    }

    /// `P(label 1 | x)` per row (scikit-learn's `predict_proba(x)[:, 1]`).
    pub fn predict_proba(&self, x: ArrayView2<f64>) -> Result<Array1<f64>> {
        Ok(self.decision_function(x)?.mapv(sigmoid))
    }

    /// Predicted labels: 1 where the decision function is strictly positive, else 0.
    pub fn predict(&self, x: ArrayView2<f64>) -> Result<Vec<u8>> {
        Ok(self
            .decision_function(x)?
            .iter()
            .map(|&z| u8::from(z > 0.0))
            .collect())
    }
}

/// `1 / (1 + exp(-z))` without overflow.
fn sigmoid(z: f64) -> f64 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// scikit-learn's objective divided by `C * n`: `(1/n) sum logloss + ||w||^2 / (2 C n)`.
pub(crate) fn mean_objective(model: &FittedLogistic, x: ArrayView2<f64>, y: &[u8]) -> f64 {
    let z = x.dot(&model.coef) + model.intercept;
    let loss: f64 = z
        .iter()
        .zip(y)
        .map(|(&z, &t)| softplus(z) - f64::from(t) * z)
        .sum();
    let n = y.len() as f64;
    (loss + model.coef.dot(&model.coef) / (2.0 * model.c)) / n
}

/// `ln(1 + exp(z))` without overflow.
fn softplus(z: f64) -> f64 {
    if z > 0.0 {
        z + (-z).exp().ln_1p()
    } else {
        z.exp().ln_1p()
    }
}

/// Gradient and Hessian of [`mean_objective`] in `[coef..., intercept]`.
pub(crate) fn gradient_and_hessian(
    model: &FittedLogistic,
    x: ArrayView2<f64>,
    y: &[u8],
) -> (Array1<f64>, Array2<f64>) {
    let (n, p) = (x.nrows(), x.ncols());
    let z = x.dot(&model.coef) + model.intercept;
    let mut grad = Array1::<f64>::zeros(p + 1);
    let mut hessian = Array2::<f64>::zeros((p + 1, p + 1));
    let mut row = vec![1.0; p + 1];
    for i in 0..n {
        let prob = sigmoid(z[i]);
        let (r, d) = (prob - f64::from(y[i]), prob * (1.0 - prob));
        for (j, v) in x.row(i).iter().enumerate() {
            row[j] = *v;
        }
        for a in 0..=p {
            grad[a] += r * row[a];
            for b in 0..=a {
                hessian[[a, b]] += d * row[a] * row[b];
            }
        }
    }
    for a in 0..p {
        grad[a] += model.coef[a] / model.c;
        hessian[[a, a]] += 1.0 / model.c;
    }
    for a in 0..=p {
        for b in 0..a {
            hessian[[b, a]] = hessian[[a, b]];
        }
    }
    (grad / n as f64, hessian / n as f64)
}

/// Gradient of [`mean_objective`] in `[coef..., intercept]` (shapes already checked).
pub(crate) fn mean_gradient(model: &FittedLogistic, x: ArrayView2<f64>, y: &[u8]) -> Array1<f64> {
    let z = x.dot(&model.coef) + model.intercept;
    let residual: Array1<f64> = z
        .iter()
        .zip(y)
        .map(|(&z, &t)| sigmoid(z) - f64::from(t))
        .collect();
    let n = y.len() as f64;
    let grad_w = (x.t().dot(&residual) + &model.coef / model.c) / n;
    let mut grad = grad_w.to_vec();
    grad.push(residual.sum() / n);
    Array1::from(grad)
}
