//! Bringing grayscale sets to the networks' `[N,3,32,32]` input, and 32x32 sets to another side.
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

/// Brings `u8` images `[N,3,H,W]` to `[N,3,side,side]` as torchvision's `Resize(side)` +
/// `CenterCrop(side)` would ([`super::resize::resize_and_center_crop`]).
pub fn to_side(images: &Tensor, side: i64) -> Tensor {
    let size = images.size();
    let (h, w) = (size[2] as u32, size[3] as u32);
    let pixels =
        Vec::<u8>::try_from(images.permute([0, 2, 3, 1]).contiguous().view(-1)).expect("u8 images");
    let resized: Vec<image::RgbImage> = pixels
        .chunks_exact((3 * h * w) as usize)
        .map(|raw| {
            let image = image::RgbImage::from_raw(w, h, raw.to_vec()).expect("h*w*3 bytes");
            super::resize::resize_and_center_crop(&image, side as u32)
        })
        .collect();
    super::folder::to_tensor(&resized)
}
