//! The post-hoc baselines of SPEC 12, each a [`Detector`] on the last feature layer: its
//! mean-pooled activation `phi` is the penultimate feature, and the classifier's final linear
//! layer ([`LinearHead`]) turns it into the logits `f`. Every score is higher for
//! in-distribution inputs.
//!
//! - [`DetectorKind::Msp`]: `max_c softmax(f)_c` (Hendrycks & Gimpel 2017).
//! - [`DetectorKind::Odin`]: `max_c softmax(f(x~) / T)_c` after the input step of SPEC 6 on the
//!   loss `CE(f / T, argmax f)` (Liang et al. 2018); one variant per temperature of
//!   [`ODIN_TEMPERATURES`], scored at every magnitude of [`ODIN_MAGNITUDES`]. The stored score is
//!   its logarithm, `max_c log_softmax(f / T)_c` (monotone: the same metrics, no underflow).
//! - [`DetectorKind::Energy`]: `logsumexp(f)` (Liu et al. 2020, T = 1).
//! - [`DetectorKind::MaxLogit`]: `max_c f_c` (Hendrycks et al. 2022).
//! - [`DetectorKind::Knn`]: `-||z - z_(k)||` with `z = phi / ||phi||` and `z_(k)` the k-th
//!   nearest normalised training feature (Sun et al. 2022); exact search by one matrix product
//!   per batch against every training row.
//! - [`DetectorKind::Vim`]: `logsumexp(f) - alpha * ||(phi - o) N||` with `o = -pinv(W) b`, `N`
//!   the eigenvectors of the smallest eigenvalues of the uncentred covariance of the training
//!   features `phi - o` (all but the principal `D`), `alpha = sum max_c f / sum ||(phi - o) N||`
//!   over the training rows (Wang et al. 2022).
use tch::{Device, Kind, Tensor};

use super::{Detector, DetectorKind, ScoreFn};
use crate::error::{Error, Result};
use crate::models::Classifier;

/// ODIN's temperatures (Lee et al.'s grid).
pub const ODIN_TEMPERATURES: [f64; 4] = [1.0, 10.0, 100.0, 1000.0];

/// ODIN's input-perturbation magnitudes (Lee et al.'s grid).
pub const ODIN_MAGNITUDES: [f64; 11] = [
    0.0, 0.0005, 0.001, 0.0014, 0.002, 0.0024, 0.005, 0.01, 0.05, 0.1, 0.2,
];

/// KNN's default number of neighbours `k`.
pub const KNN_NEIGHBOURS: usize = 50;

/// The magnitudes a baseline is scored at: ODIN's grid, or none (0) for the others.
pub fn magnitudes(kind: DetectorKind) -> Vec<f64> {
    if kind == DetectorKind::Odin {
        ODIN_MAGNITUDES.to_vec()
    } else {
        vec![0.0]
    }
}

/// The temperature of ODIN's score column `column`, `None` for every other detector.
pub fn temperature(kind: DetectorKind, column: usize) -> Option<f64> {
    (kind == DetectorKind::Odin).then(|| ODIN_TEMPERATURES[column])
}

/// The classifier's final linear layer on the scoring device.
#[derive(Debug)]
pub struct LinearHead {
    /// Weight `[C, d]`.
    pub weight: Tensor,
    /// Bias `[C]`.
    pub bias: Tensor,
}

impl LinearHead {
    /// The head of `net`, detached, on `device`; fails for a model without a known head.
    pub fn of(net: &dyn Classifier, device: Device) -> Result<LinearHead> {
        let (weight, bias) = net.linear_head()?;
        Ok(LinearHead {
            weight: weight.detach().to_device(device),
            bias: bias.detach().to_device(device),
        })
    }

    /// The logits `phi W^T + b` of penultimate features `phi` `[N, d]`, in `phi`'s kind.
    pub fn logits(&self, phi: &Tensor) -> Tensor {
        let k = phi.kind();
        phi.matmul(&self.weight.to_kind(k).tr()) + self.bias.to_kind(k)
    }
}

/// MSP, Energy or MaxLogit: a function of the logits.
pub struct LogitDetector {
    kind: DetectorKind,
    layer: usize,
    head: LinearHead,
}

impl LogitDetector {
    /// The detector `kind` (MSP, Energy or MaxLogit) on feature layer `layer` (the last).
    pub fn new(kind: DetectorKind, layer: usize, head: LinearHead) -> Result<LogitDetector> {
        if !matches!(
            kind,
            DetectorKind::Msp | DetectorKind::Energy | DetectorKind::MaxLogit
        ) {
            return Err(Error::Invalid(format!(
                "{} is not a function of the logits alone",
                kind.label()
            )));
        }
        Ok(LogitDetector { kind, layer, head })
    }
}

/// The class scores whose maximum is the detector's score: MSP softmax `[N, C]`, MaxLogit the
/// logits `[N, C]`, Energy `logsumexp` `[N, 1]`.
pub fn logit_scores(kind: DetectorKind, logits: &Tensor) -> Tensor {
    match kind {
        DetectorKind::Msp => logits.softmax(1, logits.kind()),
        DetectorKind::Energy => logits.logsumexp([1], true),
        _ => logits.shallow_clone(),
    }
}

impl Detector for LogitDetector {
    fn kind(&self) -> DetectorKind {
        self.kind
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            Ok(logit_scores(self.kind, &self.head.logits(phi)))
        }))
    }
}

/// ODIN at each of its temperatures (one variant each).
pub struct Odin {
    layer: usize,
    head: LinearHead,
    temperatures: Vec<f64>,
}

impl Odin {
    /// ODIN on feature layer `layer` (the last) with Lee et al.'s temperatures.
    pub fn new(layer: usize, head: LinearHead) -> Odin {
        Odin {
            layer,
            head,
            temperatures: ODIN_TEMPERATURES.to_vec(),
        }
    }
}

impl Detector for Odin {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Odin
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn variants(&self) -> usize {
        self.temperatures.len()
    }

    /// `log_softmax(f / T)`: its maximum is the log of ODIN's score, and the pre-processing loss
    /// `-mean(log_softmax(f / T)_{argmax})` is ODIN's cross-entropy with the predicted class.
    fn layer_scores(&self, _layer: usize, variant: usize) -> Result<Box<ScoreFn<'_>>> {
        let t = *self.temperatures.get(variant).ok_or_else(|| {
            Error::Invalid(format!(
                "ODIN has {} temperatures, no variant {variant}",
                self.temperatures.len()
            ))
        })?;
        Ok(Box::new(move |phi: &Tensor| {
            let logits = self.head.logits(phi) / t;
            Ok(logits.log_softmax(1, logits.kind()))
        }))
    }
}

/// `phi / ||phi||` per row (a zero row stays zero).
pub fn normalise(phi: &Tensor) -> Tensor {
    phi / phi.norm_scalaropt_dim(2.0, [1], true).clamp_min(1e-12)
}

/// KNN on normalised penultimate features.
pub struct Knn {
    layer: usize,
    /// Normalised training features `[M, d]`, float32 on the device.
    train: Tensor,
    k: usize,
}

impl Knn {
    /// Fits KNN on the training features `train` `[M, d]` of layer `layer` with `k` neighbours.
    /// Errors unless `1 <= k <= M`.
    pub fn fit(train: &Tensor, layer: usize, k: usize, device: Device) -> Result<Knn> {
        let m = train.size()[0] as usize;
        if k == 0 || k > m {
            return Err(Error::Invalid(format!(
                "KNN: k = {k} neighbours need 1 <= k <= the {m} training rows"
            )));
        }
        let train = normalise(&train.to_kind(Kind::Float)).to_device(device);
        Ok(Knn { layer, train, k })
    }

    /// Squared distances `[N, M]` of the normalised `phi` to every normalised training row
    /// (`2 - 2 z . t`, as both have norm 1).
    fn squared_distances(&self, phi: &Tensor) -> Tensor {
        let z = normalise(&phi.to_kind(Kind::Float));
        (z.matmul(&self.train.tr()) * -2.0 + 2.0).clamp_min(0.0)
    }

    /// Indices `[N, k]` of the `k` nearest training rows of each row of `phi`, nearest first.
    pub fn neighbours(&self, phi: &Tensor) -> Tensor {
        self.squared_distances(phi)
            .topk(self.k as i64, 1, false, true)
            .1
    }
}

impl Detector for Knn {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Knn
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let kth = self
                .squared_distances(phi)
                .kthvalue(self.k as i64, 1, true)
                .0;
            Ok(-kth.sqrt())
        }))
    }
}

/// ViM's principal-subspace dimension for feature size `d` (the paper's rule): 1000 if
/// `d >= 2048`, 512 if `d >= 768`, else `d / 2`.
pub fn vim_dimension(d: usize) -> usize {
    if d >= 2048 {
        1000
    } else if d >= 768 {
        512
    } else {
        d / 2
    }
}

/// ViM, fitted on the training features; computed in float64.
pub struct Vim {
    layer: usize,
    head: LinearHead,
    /// `o = -pinv(W) b`, `[d]`.
    origin: Tensor,
    /// Eigenvectors outside the principal subspace, `[d, d - D]`.
    null_space: Tensor,
    /// Scale of the residual norm.
    alpha: f64,
}

impl Vim {
    /// Fits ViM on the training features `train` `[M, d]` of layer `layer` (the last) with
    /// principal dimension `dim` (default [`vim_dimension`]). Errors unless `1 <= dim < d`.
    pub fn fit(
        train: &Tensor,
        layer: usize,
        head: LinearHead,
        dim: Option<usize>,
        device: Device,
    ) -> Result<Vim> {
        let cpu = |t: &Tensor| t.to_device(Device::Cpu).to_kind(Kind::Double);
        let x = cpu(train);
        let (m, d) = (x.size()[0], x.size()[1] as usize);
        let dim = dim.unwrap_or_else(|| vim_dimension(d));
        if dim == 0 || dim >= d {
            return Err(Error::Invalid(format!(
                "ViM: principal dimension {dim} must lie in 1..{d} (the feature size)"
            )));
        }
        let (w, b) = (cpu(&head.weight), cpu(&head.bias));
        let origin = -w.linalg_pinv(1e-15, false).matmul(&b);
        let centred = &x - &origin;
        let covariance = centred.tr().matmul(&centred) / m as f64;
        // Eigenvalues in ascending order: the first d - D vectors span the residual space.
        let (_, vectors) = covariance.linalg_eigh("L");
        let null_space = vectors.narrow(1, 0, (d - dim) as i64);
        let residual = centred
            .matmul(&null_space)
            .norm_scalaropt_dim(2.0, [1], false);
        let max_logit = x
            .matmul(&w.tr())
            .g_add(&b)
            .max_dim(1, false)
            .0
            .sum(Kind::Double)
            .double_value(&[]);
        let alpha = max_logit / residual.sum(Kind::Double).double_value(&[]);
        if !alpha.is_finite() {
            return Err(Error::Invalid(format!(
                "ViM: alpha = {alpha} (the training features lie in the principal subspace)"
            )));
        }
        Ok(Vim {
            layer,
            head: LinearHead {
                weight: w.to_device(device),
                bias: b.to_device(device),
            },
            origin: origin.to_device(device),
            null_space: null_space.to_device(device),
            alpha,
        })
    }

    /// The scale `alpha` of the residual norm.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }
}

impl Detector for Vim {
    fn kind(&self) -> DetectorKind {
        DetectorKind::Vim
    }

    fn layers(&self) -> Vec<usize> {
        vec![self.layer]
    }

    fn layer_scores(&self, _layer: usize, _variant: usize) -> Result<Box<ScoreFn<'_>>> {
        Ok(Box::new(move |phi: &Tensor| {
            let phi = phi.to_kind(Kind::Double);
            let energy = self.head.logits(&phi).logsumexp([1], true);
            let residual = (&phi - &self.origin)
                .matmul(&self.null_space)
                .norm_scalaropt_dim(2.0, [1], true);
            Ok(energy - residual * self.alpha)
        }))
    }
}

/// Settings of the baselines that have any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BaselineParams {
    /// KNN's number of neighbours.
    pub knn_neighbours: usize,
    /// ViM's principal dimension (`None`: [`vim_dimension`]).
    pub vim_dimension: Option<usize>,
}

impl Default for BaselineParams {
    fn default() -> Self {
        BaselineParams {
            knn_neighbours: KNN_NEIGHBOURS,
            vim_dimension: None,
        }
    }
}

/// Builds baseline `kind` for `net` on `device`; KNN and ViM fit on `train`, the training
/// features `[M, d]` of the last layer.
pub fn build(
    kind: DetectorKind,
    net: &dyn Classifier,
    train: &Tensor,
    params: &BaselineParams,
    device: Device,
) -> Result<Box<dyn Detector>> {
    let layer = net.num_layers() - 1;
    let head = LinearHead::of(net, device)?;
    Ok(match kind {
        DetectorKind::Odin => Box::new(Odin::new(layer, head)),
        DetectorKind::Knn => Box::new(Knn::fit(train, layer, params.knn_neighbours, device)?),
        DetectorKind::Vim => Box::new(Vim::fit(train, layer, head, params.vim_dimension, device)?),
        _ => Box::new(LogitDetector::new(kind, layer, head)?),
    })
}
