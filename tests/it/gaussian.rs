//! Class statistics, whitening, tied covariance and Mahalanobis scores against numpy/scikit-learn.
use crate::common;
use crate::common::max_abs_diff;

use resflow::detect::gaussian::{
    centre_by_class, class_means, mahalanobis_scores, pinv_symmetric, tied_covariance, whitening,
    TiedGaussian,
};
use resflow::Error;
use tch::{Kind, Tensor};

/// Features `[n, d]` of rank `rank` (plus per-class offsets), labels cycling over `classes`.
fn data(n: i64, d: i64, rank: i64, classes: i64, seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let low = Tensor::randn([n, rank], (Kind::Double, tch::Device::Cpu));
    let mix = Tensor::randn([rank, d], (Kind::Double, tch::Device::Cpu));
    let labels = Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(classes);
    let offsets = Tensor::randn([classes, d], (Kind::Double, tch::Device::Cpu)) * 3.0;
    (low.matmul(&mix) + offsets.index_select(0, &labels), labels)
}

const NUMPY_STATS: &str = r#"
import sys, numpy as np
from sklearn.covariance import EmpiricalCovariance
dirp = sys.argv[1]
f = np.load(dirp + '/f.npy'); y = np.load(dirp + '/y.npy'); C = int(y.max()) + 1
means = np.stack([f[y == c].mean(0) for c in range(C)])
X = f - means[y]
u, s, vh = np.linalg.svd(X / np.sqrt(X.shape[0]), full_matrices=False)
valid = s > 1e-5
if valid.sum() % 2 > 0:
    valid[valid.sum() - 1] = False
A = vh[valid].T @ np.diag(s[valid])
A_inv = np.diag(1 / s[valid]) @ vh[valid]
np.save(dirp + '/means.npy', means)
np.save(dirp + '/AAt.npy', A @ A.T)
np.save(dirp + '/AinvtAinv.npy', A_inv.T @ A_inv)
ec = EmpiricalCovariance(assume_centered=False).fit(X)
np.save(dirp + '/cov.npy', ec.covariance_)
np.save(dirp + '/prec.npy', ec.precision_)
q = np.load(dirp + '/q.npy')
sc = np.stack([-0.5 * np.einsum('nd,de,ne->n', q - m, ec.precision_, q - m) for m in means], 1)
np.save(dirp + '/scores.npy', sc)
print(int(valid.sum()), repr(float(np.sum(np.log(1 / s[valid])))))
"#;

fn check_against_numpy(n: i64, d: i64, rank: i64, classes: i64) {
    let (f, y) = data(n, d, rank, classes, 7);
    let dir = tempfile::tempdir().unwrap();
    f.write_npy(dir.path().join("f.npy")).unwrap();
    y.write_npy(dir.path().join("y.npy")).unwrap();
    let q = Tensor::randn([13, d], (Kind::Double, tch::Device::Cpu)) * 2.0;
    q.write_npy(dir.path().join("q.npy")).unwrap();
    let out = common::run_python(NUMPY_STATS, &[dir.path()]);
    let mut parts = out.split_whitespace();
    let k_np: usize = parts.next().unwrap().parse().unwrap();
    let logdet_np: f64 = parts.next().unwrap().parse().unwrap();
    let load = |name: &str| Tensor::read_npy(dir.path().join(name)).unwrap();

    let means = class_means(&f, &y, classes as usize).unwrap();
    assert!(max_abs_diff(&means, &load("means.npy")) < 1e-12);
    let centred = centre_by_class(&f, &y, &means).unwrap();
    let w = whitening(&centred).unwrap();
    assert_eq!(w.k, k_np);
    assert_eq!(w.k % 2, 0);
    assert_eq!(w.a.size(), [d, w.k as i64]);
    assert_eq!(w.a_inv.size(), [w.k as i64, d]);
    assert!(
        (w.log_abs_det_a_inv - logdet_np).abs() < 1e-9,
        "{} vs {logdet_np}",
        w.log_abs_det_a_inv
    );
    // Sign-invariant comparisons (singular vectors are defined up to sign).
    assert!(max_abs_diff(&w.a.matmul(&w.a.tr()), &load("AAt.npy")) < 1e-9);
    assert!(max_abs_diff(&w.a_inv.tr().matmul(&w.a_inv), &load("AinvtAinv.npy")) < 1e-8);
    let eye = Tensor::eye(w.k as i64, (Kind::Double, tch::Device::Cpu));
    assert!(max_abs_diff(&w.a_inv.matmul(&w.a), &eye) < 1e-9);
    // The whitened training features have identity covariance on the kept subspace.
    let z = centred.matmul(&w.a_inv.tr());
    assert!(max_abs_diff(&(z.tr().matmul(&z) / n as f64), &eye) < 1e-8);

    let cov = tied_covariance(&centred).unwrap();
    assert!(max_abs_diff(&cov, &load("cov.npy")) < 1e-10);
    let prec = pinv_symmetric(&cov).unwrap();
    assert!(
        max_abs_diff(&prec, &load("prec.npy"))
            < 1e-6 * f64::try_from(prec.abs().max()).unwrap().max(1.0)
    );
    let scores = mahalanobis_scores(&q, &means, &prec).unwrap();
    assert_eq!(scores.size(), [13, classes]);
    let want = load("scores.npy");
    let scale = f64::try_from(want.abs().max()).unwrap().max(1.0);
    assert!(max_abs_diff(&scores, &want) < 1e-8 * scale);

    let model = TiedGaussian::fit(&f, &y, classes as usize).unwrap();
    assert!(max_abs_diff(&model.scores(&q).unwrap(), &scores) < 1e-9 * scale);
}

#[test]
fn full_rank_statistics_match_numpy_and_sklearn() {
    check_against_numpy(300, 8, 8, 3);
}

#[test]
fn rank_rule_drops_small_and_odd_singular_values() {
    // Rank 5 in 7 dimensions: 5 singular values kept by the threshold, the fifth dropped for parity.
    check_against_numpy(200, 7, 5, 4);
    let (f, y) = data(200, 7, 5, 4, 7);
    let means = class_means(&f, &y, 4).unwrap();
    let w = whitening(&centre_by_class(&f, &y, &means).unwrap()).unwrap();
    assert_eq!(w.k, 4);
}

#[test]
fn scores_are_differentiable_in_the_features() {
    let (f, y) = data(100, 5, 5, 3, 3);
    let model = TiedGaussian::fit(&f, &y, 3).unwrap();
    let q = Tensor::randn([4, 5], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
    let s = model.scores(&q).unwrap();
    // Brute force: d score_c / d f = -P (f - mu_c), summed over the classes.
    s.sum(Kind::Double).backward();
    let grad = q.grad();
    let mut want = Tensor::zeros([4, 5], (Kind::Double, tch::Device::Cpu));
    for c in 0..3 {
        want -= (q.detach() - model.means.get(c)).matmul(&model.precision);
    }
    assert!(max_abs_diff(&grad, &want) < 1e-10);
    // Float32 features give float32 scores close to the float64 ones.
    let s32 = model.scores(&q.detach().to_kind(Kind::Float)).unwrap();
    assert_eq!(s32.kind(), Kind::Float);
    assert!(max_abs_diff(&s32, &s.detach()) < 1e-3);
}

#[test]
fn bad_inputs_are_errors() {
    let (f, y) = data(30, 4, 4, 3, 1);
    let bad = f.copy();
    let _ = bad.get(3).get(2).fill_(f64::NAN);
    let err = class_means(&bad, &y, 3).unwrap_err();
    assert!(
        matches!(err, Error::BadData(_)) && err.to_string().contains("NaN"),
        "{err}"
    );
    assert!(whitening(&bad).is_err());
    let _ = bad.get(3).get(2).fill_(f64::INFINITY);
    assert!(tied_covariance(&bad).is_err());
    // Class 3 of 4 has no samples.
    let err = class_means(&f, &y, 4).unwrap_err();
    assert!(
        matches!(err, Error::BadData(_)) && err.to_string().contains("class 3 has no samples"),
        "{err}"
    );
    // Labels out of range.
    assert!(class_means(&f, &(&y + 5), 3).is_err());
    // Means of other features than the precision's.
    let g = TiedGaussian::fit(&f, &y, 3).unwrap();
    let err = mahalanobis_scores(&f.narrow(1, 0, 3), &g.means, &g.precision).unwrap_err();
    assert!(matches!(err, Error::Shape(_)), "{err}");
}
