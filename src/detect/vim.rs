//! ViM (Wang et al. 2022, `docs/method.md#vim`): `logsumexp(f) - alpha * ||(phi - o) N||` with
//! `o = -pinv(W) b`, `N` the eigenvectors of the smallest eigenvalues of the uncentred covariance
//! of the training features `phi - o` (all but the principal `D`), and
//! `alpha = sum max_c f / sum ||(phi - o) N||` over the training rows. Computed in float64.
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::head::LinearHead;
use super::logit::single_layer;
use super::params::{DetectorParams, Fit};
use super::ScoreFn;
use crate::error::{Error, Result};

/// ViM's parameters.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VimParams {
    /// Dimension `D` of the principal subspace; `None`: [`vim_dimension`] of the feature size.
    pub dim: Option<usize>,
}

impl Fit for VimParams {
    fn check(&self) -> Result<()> {
        if self.dim == Some(0) {
            return Err(Error::bad_option(
                "--vim-dim",
                "the principal dimension must be at least 1",
            ));
        }
        Ok(())
    }

    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        let layer = data.last_layer();
        let train = data.train_features(layer)?;
        let vim = Vim::fit(&train, layer, data.linear_head()?, self.dim, data.device())?;
        Ok(Box::new(vim))
    }

    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>> {
        let meta: VimMeta = state.meta()?;
        Ok(Box::new(Vim {
            params: self.clone(),
            layer: single_layer(state)?,
            head: LinearHead::restore(state, device)?,
            origin: state.tensor("origin")?.to_device(device),
            null_space: state.tensor("null_space")?.to_device(device),
            alpha: meta.alpha,
        }))
    }
}

/// ViM's fitted facts that are not tensors.
#[derive(Debug, Serialize, Deserialize)]
struct VimMeta {
    alpha: f64,
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
    params: VimParams,
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
        let principal = dim.unwrap_or_else(|| vim_dimension(d));
        if principal == 0 || principal >= d {
            return Err(Error::bad_option(
                "--vim-dim",
                format!("principal dimension {principal} must lie in 1..{d} (the feature size)"),
            ));
        }
        let (w, b) = (cpu(&head.weight), cpu(&head.bias));
        let origin = -w.linalg_pinv(1e-15, false).matmul(&b);
        let centred = &x - &origin;
        let covariance = centred.tr().matmul(&centred) / m as f64;
        // Eigenvalues in ascending order: the first d - D vectors span the residual space.
        let (_, vectors) = covariance.linalg_eigh("L");
        let null_space = vectors.narrow(1, 0, (d - principal) as i64);
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
            return Err(Error::BadData(format!(
                "ViM: alpha = {alpha} (the training features lie in the principal subspace)"
            )));
        }
        Ok(Vim {
            params: VimParams { dim },
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

impl FittedDetector for Vim {
    fn params(&self) -> DetectorParams {
        DetectorParams::Vim(self.params.clone())
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

    fn state(&self) -> Result<DetectorState> {
        let meta = VimMeta { alpha: self.alpha };
        let mut state = DetectorState::new(self.params(), vec![self.layer], meta)?
            .with("origin", &self.origin)
            .with("null_space", &self.null_space);
        self.head.save_into(&mut state);
        Ok(state)
    }
}
