//! Bringing grayscale sets to the networks' `[N,3,32,32]` input.
use tch::{Kind, Tensor};

use super::IMAGE_SIDE;

/// Zero-pads `u8` images `[N,H,W]` (H, W <= 32) to 32x32, centred.
pub fn pad_to_32(images: &Tensor) -> Tensor {
    let size = images.size();
    let (h, w) = (size[1], size[2]);
    let top = (IMAGE_SIDE - h) / 2;
    let left = (IMAGE_SIDE - w) / 2;
    images.constant_pad_nd([left, IMAGE_SIDE - w - left, top, IMAGE_SIDE - h - top])
}

/// Bilinearly upsamples `f32` images `[N,H,W]` with values in [0, 255] to 32x32 `u8`.
pub fn upsample_to_32(images: &Tensor) -> Tensor {
    images
        .to_kind(Kind::Float)
        .unsqueeze(1)
        .upsample_bilinear2d([IMAGE_SIDE, IMAGE_SIDE], false, None, None)
        .squeeze_dim(1)
        .round()
        .clamp(0.0, 255.0)
        .to_kind(Kind::Uint8)
}

/// Replicates `u8` grayscale images `[N,32,32]` to 3 channels `[N,3,32,32]`.
pub fn gray_to_rgb(images: &Tensor) -> Tensor {
    images
        .unsqueeze(1)
        .expand([-1, 3, -1, -1], false)
        .contiguous()
}
