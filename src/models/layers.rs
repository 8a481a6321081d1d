//! Conv, BatchNorm and Linear layers initialised like PyTorch's defaults where it matters.
use tch::nn;

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

/// BatchNorm2d with PyTorch's defaults (weight 1, bias 0, eps 1e-5, momentum 0.1).
pub(crate) fn batch_norm(p: nn::Path, channels: i64) -> nn::BatchNorm {
    let config = nn::BatchNormConfig {
        ws_init: nn::Init::Const(1.0),
        ..Default::default()
    };
    nn::batch_norm2d(p, channels, config)
}
