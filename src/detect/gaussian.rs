//! Class statistics and the linear (Gaussian) part of the model
//! (`docs/method.md#class-statistics-and-whitening` and `docs/method.md#the-mahalanobis-detector`).
//!
//! Everything here works in float64 internally: class means, the whitening SVD with the rank rule of
//! the reference, the tied covariance and its pseudo-inverse. Mahalanobis class scores are computed
//! in the kind of the features they are given and stay differentiable with respect to them.
use crate::error::{Error, Result};
use tch::{Kind, Tensor};

/// Singular values at or below this are dropped from the whitening (`docs/method.md#whitening`).
pub const SINGULAR_VALUE_CUTOFF: f64 = 1e-5;

/// The whitening of class-centred features: `z = A_inv x` has identity covariance on the kept subspace.
#[derive(Debug)]
pub struct Whitening {
    /// `A = Vh[keep]^T diag(s[keep])`, shape `[d, k]`, float64.
    pub a: Tensor,
    /// `A_inv = diag(1 / s[keep]) Vh[keep]`, shape `[k, d]`, float64.
    pub a_inv: Tensor,
    /// `sum(log(1 / s[keep]))`.
    pub log_abs_det_a_inv: f64,
    /// The number of kept singular values (always even).
    pub k: usize,
}

/// Fails with [`Error::BadData`] when `features` holds a NaN or an infinity; `what` names the data.
pub fn check_finite(features: &Tensor, what: &str) -> Result<()> {
    let bad = i64::try_from(features.isfinite().logical_not().sum(Kind::Int64))?;
    if bad > 0 {
        return Err(Error::BadData(format!(
            "{what}: {bad} NaN or infinite value(s)"
        )));
    }
    Ok(())
}

/// Whether two whitening matrices (`A_inv`) are the same up to float32 storage: a flow trained on
/// one layer's whitening fits features whitened by the other.
pub fn same_whitening(saved: &Tensor, current: &Tensor) -> bool {
    saved.size() == current.size() && {
        let current = current.to_kind(Kind::Double).to_device(tch::Device::Cpu);
        let diff = (saved.to_kind(Kind::Double).to_device(tch::Device::Cpu) - &current)
            .abs()
            .max()
            .double_value(&[]);
        diff <= 1e-5 * (1.0 + current.abs().max().double_value(&[]))
    }
}

fn check_matrix(features: &Tensor, what: &str) -> Result<(i64, i64)> {
    match features.size().as_slice() {
        [n, d] => Ok((*n, *d)),
        other => Err(Error::Shape(format!(
            "{what}: expected a [N, d] matrix, got shape {other:?}"
        ))),
    }
}

/// Class means of `features` (`[N, d]`) with integer `labels` (`[N]`, values in `0..num_classes`).
/// Returns a float64 `[num_classes, d]` tensor. Fails on NaN/inf features, a label out of range
/// or a class without samples.
pub fn class_means(features: &Tensor, labels: &Tensor, num_classes: usize) -> Result<Tensor> {
    let (n, d) = check_matrix(features, "class_means features")?;
    check_finite(features, "class_means features")?;
    if labels.size() != [n] {
        return Err(Error::Shape(format!(
            "labels have shape {:?}, expected [{n}]",
            labels.size()
        )));
    }
    let labels = labels.to_kind(Kind::Int64).to_device(features.device());
    if n > 0 {
        let (lo, hi) = (i64::try_from(labels.min())?, i64::try_from(labels.max())?);
        if lo < 0 || hi >= num_classes as i64 {
            return Err(Error::Shape(format!(
                "labels span {lo}..={hi}, outside 0..{num_classes}"
            )));
        }
    }
    let counts = labels
        .bincount(None::<Tensor>, num_classes as i64)
        .to_kind(Kind::Double);
    let counts_vec = Vec::<f64>::try_from(&counts)?;
    if let Some(c) = counts_vec.iter().position(|&k| k == 0.0) {
        return Err(Error::BadData(format!("class {c} has no samples")));
    }
    let sums = Tensor::zeros([num_classes as i64, d], (Kind::Double, features.device())).index_add(
        0,
        &labels,
        &features.to_kind(Kind::Double),
    );
    Ok(sums / counts.unsqueeze(1))
}

/// `features - means[labels]`: every row minus its own class mean, in float64.
pub fn centre_by_class(features: &Tensor, labels: &Tensor, means: &Tensor) -> Result<Tensor> {
    check_matrix(features, "centre_by_class features")?;
    let labels = labels.to_kind(Kind::Int64).to_device(features.device());
    Ok(features.to_kind(Kind::Double) - means.to_kind(Kind::Double).index_select(0, &labels))
}

/// The whitening of class-centred features `centred` (`[N, d]`, `docs/method.md#whitening`): SVD of
/// `centred / sqrt(N)` in float64, keeping singular values above [`SINGULAR_VALUE_CUTOFF`] and
/// dropping the last kept one when their number is odd. Fails on NaN/inf input or when nothing is kept.
pub fn whitening(centred: &Tensor) -> Result<Whitening> {
    let (n, d) = check_matrix(centred, "whitening input")?;
    check_finite(centred, "whitening input")?;
    if n == 0 {
        return Err(Error::BadData(
            "whitening of an empty feature matrix".into(),
        ));
    }
    let x = centred.to_kind(Kind::Double) / (n as f64).sqrt();
    // X = U diag(s) V^T, s descending; Vh = V^T.
    let (_u, s, v) = x.svd(true, true);
    let s_vec = Vec::<f64>::try_from(&s)?;
    let mut k = s_vec.iter().filter(|&&x| x > SINGULAR_VALUE_CUTOFF).count();
    k -= k % 2;
    if k == 0 {
        return Err(Error::BadData(format!(
            "whitening: fewer than two singular values above {SINGULAR_VALUE_CUTOFF} (d = {d})"
        )));
    }
    let s_k = s.narrow(0, 0, k as i64);
    let v_k = v.narrow(1, 0, k as i64); // [d, k] = Vh[keep]^T
    let a = &v_k * s_k.unsqueeze(0);
    let a_inv = (&v_k / s_k.unsqueeze(0)).transpose(0, 1).contiguous();
    let log_abs_det_a_inv = -s_vec[..k].iter().map(|x| x.ln()).sum::<f64>();
    Ok(Whitening {
        a,
        a_inv,
        log_abs_det_a_inv,
        k,
    })
}

/// The maximum-likelihood covariance (divide by N) of class-centred features `centred` (`[N, d]`),
/// in float64. Like scikit-learn's `EmpiricalCovariance(assume_centered=False)`, the (numerically
/// zero) overall mean is subtracted first.
pub fn tied_covariance(centred: &Tensor) -> Result<Tensor> {
    let (n, _) = check_matrix(centred, "tied_covariance input")?;
    check_finite(centred, "tied_covariance input")?;
    if n == 0 {
        return Err(Error::BadData(
            "covariance of an empty feature matrix".into(),
        ));
    }
    let x = centred.to_kind(Kind::Double);
    let x = &x - x.mean_dim(0, true, Kind::Double);
    Ok(x.transpose(0, 1).matmul(&x) / n as f64)
}

/// The pseudo-inverse of a symmetric positive semi-definite matrix (float64), as scipy's `pinvh`:
/// eigenvalues at or below `max|lambda| * d * f64::EPSILON` are treated as zero.
pub fn pinv_symmetric(matrix: &Tensor) -> Result<Tensor> {
    let (n, d) = check_matrix(matrix, "pinv_symmetric input")?;
    if n != d {
        return Err(Error::Shape(format!(
            "pinv_symmetric: matrix is {n} x {d}, not square"
        )));
    }
    check_finite(matrix, "pinv_symmetric input")?;
    let m = matrix.to_kind(Kind::Double);
    let m = (&m + m.transpose(0, 1)) * 0.5;
    let (eigvals, eigvecs) = m.linalg_eigh("L");
    let max_abs = f64::try_from(eigvals.abs().max())?;
    let cutoff = max_abs * d as f64 * f64::EPSILON;
    let keep = eigvals.abs().gt(cutoff);
    let inv = eigvals
        .reciprocal()
        .where_self(&keep, &eigvals.zeros_like());
    Ok((&eigvecs * inv.unsqueeze(0)).matmul(&eigvecs.transpose(0, 1)))
}

/// The tied-covariance Gaussian model of the Mahalanobis detector
/// (`docs/method.md#the-mahalanobis-detector`).
#[derive(Debug)]
pub struct TiedGaussian {
    /// Class means, `[C, d]`, float64.
    pub means: Tensor,
    /// The pseudo-inverse of the tied covariance, `[d, d]`, float64.
    pub precision: Tensor,
}

impl TiedGaussian {
    /// Fits class means and the tied precision from train `features` (`[N, d]`) and `labels`.
    pub fn fit(features: &Tensor, labels: &Tensor, num_classes: usize) -> Result<Self> {
        let means = class_means(features, labels, num_classes)?;
        let centred = centre_by_class(features, labels, &means)?;
        let precision = pinv_symmetric(&tied_covariance(&centred)?)?;
        Ok(TiedGaussian { means, precision })
    }

    /// Class scores of `features`, see [`mahalanobis_scores`].
    pub fn scores(&self, features: &Tensor) -> Result<Tensor> {
        mahalanobis_scores(features, &self.means, &self.precision)
    }
}

/// Mahalanobis class scores `score_c(f) = -0.5 (f - mu_c)^T P (f - mu_c)` for `features` (`[N, d]`),
/// `means` (`[C, d]`) and `precision` P (`[d, d]`): an `[N, C]` tensor in the kind of `features`,
/// differentiable with respect to `features`.
pub fn mahalanobis_scores(features: &Tensor, means: &Tensor, precision: &Tensor) -> Result<Tensor> {
    let (_, d) = check_matrix(features, "mahalanobis features")?;
    let (c, dm) = check_matrix(means, "mahalanobis means")?;
    if dm != d || precision.size() != [d, d] {
        return Err(Error::Shape(format!(
            "mahalanobis: features have {d} columns, means {:?}, precision {:?}",
            means.size(),
            precision.size()
        )));
    }
    let (kind, device) = (features.kind(), features.device());
    let means = means.to_kind(kind).to_device(device);
    let precision = precision.to_kind(kind).to_device(device);
    let columns: Vec<Tensor> = (0..c)
        .map(|class| {
            let centred = features - means.get(class);
            (centred.matmul(&precision) * &centred).sum_dim_intlist(1, false, kind) * -0.5
        })
        .collect();
    Ok(Tensor::stack(&columns, 1))
}

/// The statistics of one layer, fitted on the train features.
#[derive(Debug)]
pub struct LayerStats {
    /// Class means, float64 `[C, C_l]`.
    pub means: Tensor,
    /// The whitening (the flow's linear part).
    pub whitening: Whitening,
    /// Pseudo-inverse of the tied covariance, float64 `[C_l, C_l]` (the Mahalanobis detector).
    pub precision: Tensor,
}

impl LayerStats {
    /// Fits means, whitening and tied precision on train `features` `[N, d]` with `labels`.
    pub fn fit(features: &Tensor, labels: &Tensor, num_classes: usize) -> Result<LayerStats> {
        let means = class_means(features, labels, num_classes)?;
        let centred = centre_by_class(features, labels, &means)?;
        let whitening = whitening(&centred)?;
        let precision = pinv_symmetric(&tied_covariance(&centred)?)?;
        Ok(LayerStats {
            means,
            whitening,
            precision,
        })
    }
}
