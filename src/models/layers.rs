//! Conv, BatchNorm and Linear layers initialised like PyTorch's defaults where it matters.
use tch::nn::{self, ModuleT};
use tch::Tensor;

use super::train::recalibrate;

/// A bias-free 2-D convolution.
pub(crate) fn conv(
    p: nn::Path,
    c_in: i64,
    c_out: i64,
    kernel: i64,
    stride: i64,
    padding: i64,
) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ..Default::default()
    };
    nn::conv2d(p, c_in, c_out, kernel, config)
}

/// BatchNorm2d with PyTorch's defaults (weight 1, bias 0, eps 1e-5, momentum 0.1) whose
/// train-mode inputs a BatchNorm recalibration observes ([`recalibrate::recalibrate_batch_norm`]).
#[derive(Debug)]
pub(crate) struct BatchNorm(nn::BatchNorm);

impl ModuleT for BatchNorm {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        if train {
            recalibrate::observe(&self.0.running_mean, &self.0.running_var, xs);
        }
        self.0.forward_t(xs, train)
    }
}

/// A [`BatchNorm`] of `channels` channels under `p` (`weight`, `bias`, `running_mean`, `running_var`).
pub(crate) fn batch_norm(p: nn::Path, channels: i64) -> BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    BatchNorm(nn::batch_norm2d(p, channels, config))
}
