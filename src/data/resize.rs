//! Bringing images of any size to a model's square input, as torchvision's
//! `Compose([Resize(side), CenterCrop(side)])` does on PIL images: the shorter side is resized to
//! `side` with PIL's bilinear filter, then the centre `side` x `side` square is cut out.
//!
//! The resampling is PIL's `ImagingResample` for 8-bit images, transcribed: a triangle filter
//! whose support widens with the down-scaling factor (so shrinking averages, antialiased),
//! coefficients in 22-bit fixed point, the horizontal pass first and rounded to 8 bits, then the
//! vertical pass. The same file therefore gives the same pixels here as in a torchvision pipeline.
use image::RgbImage;

/// Fixed-point precision of PIL's 8-bit resampling coefficients (`PRECISION_BITS`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// PIL's bilinear (triangle) filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// For each output position: the first input index, and the fixed-point weights of the inputs
/// from there on (PIL's `precompute_coeffs` followed by `normalize_coeffs_8bpc`).
fn coefficients(in_size: u32, out_size: u32) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's support (1) widened by the scale
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C's (int) conversion truncates towards zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| triangle((x as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    let scaled = w * (1u32 << PRECISION_BITS) as f64;
                    if w < 0.0 {
                        (scaled - 0.5) as i32
                    } else {
                        (scaled + 0.5) as i32
                    }
                })
                .collect();
            (xmin as usize, fixed)
        })
        .collect()
}

/// Rounds a fixed-point accumulator to 8 bits (PIL's `clip8`).
fn clip8(value: i32) -> u8 {
    (value >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One line (row or column) of a resampling pass: `pixel(i)` reads input pixel `i` of the line,
/// and each output pixel is the fixed-point weighted sum of its inputs, per channel.
fn resample_line(weights: &[(usize, Vec<i32>)], pixel: impl Fn(usize) -> [u8; 3]) -> Vec<[u8; 3]> {
    weights
        .iter()
        .map(|(start, k)| {
            let mut sum = [1i32 << (PRECISION_BITS - 1); 3];
            for (i, w) in k.iter().enumerate() {
                let p = pixel(start + i);
                for c in 0..3 {
                    sum[c] += p[c] as i32 * w;
                }
            }
            sum.map(clip8)
        })
        .collect()
}

/// Resizes `image` to `width` x `height` with PIL's bilinear filter (`Image.resize(size,
/// Image.BILINEAR)`): identical pixels for 8-bit RGB.
pub fn resize_bilinear(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = image.dimensions();
    let horizontal = if width != in_w {
        let weights = coefficients(in_w, width);
        let mut out = RgbImage::new(width, in_h);
        for y in 0..in_h {
            let line = resample_line(&weights, |x| image.get_pixel(x as u32, y).0);
            for (x, p) in line.into_iter().enumerate() {
                out.put_pixel(x as u32, y, image::Rgb(p));
            }
        }
        out
    } else {
        image.clone()
    };
    if height == in_h {
        return horizontal;
    }
    let weights = coefficients(in_h, height);
    let mut out = RgbImage::new(width, height);
    for x in 0..width {
        let column = resample_line(&weights, |y| horizontal.get_pixel(x, y as u32).0);
        for (y, p) in column.into_iter().enumerate() {
            out.put_pixel(x, y as u32, image::Rgb(p));
        }
    }
    out
}

/// The size torchvision's `Resize(side)` gives an image of `width` x `height`: the shorter side
/// becomes `side`, the longer one `int(side * long / short)`.
pub fn shorter_side_size(width: u32, height: u32, side: u32) -> (u32, u32) {
    let (short, long) = if width <= height {
        (width, height)
    } else {
        (height, width)
    };
    let new_long = (side as f64 * long as f64 / short as f64) as u32;
    if width <= height {
        (side, new_long)
    } else {
        (new_long, side)
    }
}

/// torchvision's `Compose([Resize(side), CenterCrop(side)])` on a PIL RGB image: the shorter side
/// resized to `side` (bilinear, [`resize_bilinear`]), then the centre square, its offsets rounded
/// half to even as Python's `round` does. An image already `side` x `side` is returned unchanged.
pub fn resize_and_center_crop(image: &RgbImage, side: u32) -> RgbImage {
    let (w, h) = image.dimensions();
    if (w, h) == (side, side) {
        return image.clone();
    }
    let (new_w, new_h) = shorter_side_size(w, h, side);
    let resized = if (new_w, new_h) == (w, h) {
        image.clone()
    } else {
        resize_bilinear(image, new_w, new_h)
    };
    let top = ((new_h - side) as f64 / 2.0).round_ties_even() as u32;
    let left = ((new_w - side) as f64 / 2.0).round_ties_even() as u32;
    image::imageops::crop_imm(&resized, left, top, side, side).to_image()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_sizes_follow_torchvision() {
        assert_eq!(shorter_side_size(100, 50, 32), (64, 32));
        assert_eq!(shorter_side_size(50, 100, 32), (32, 64));
        // int(32 * 77 / 45) = int(54.755...) = 54
        assert_eq!(shorter_side_size(77, 45, 32), (54, 32));
        assert_eq!(shorter_side_size(20, 20, 32), (32, 32));
    }

    #[test]
    fn same_size_is_the_identity_and_weights_sum_to_one() {
        let mut img = RgbImage::new(5, 3);
        for (i, p) in img.pixels_mut().enumerate() {
            *p = image::Rgb([i as u8 * 10, 255 - i as u8, 7]);
        }
        assert_eq!(resize_bilinear(&img, 5, 3), img);
        for (in_size, out_size) in [(7, 3), (3, 7), (100, 32), (32, 224)] {
            for (_, k) in coefficients(in_size, out_size) {
                let total: i64 = k.iter().map(|&w| w as i64).sum();
                assert!(
                    (total - (1 << PRECISION_BITS)).abs() <= k.len() as i64,
                    "{total}"
                );
            }
        }
        // A constant image stays constant through both passes.
        let flat = RgbImage::from_pixel(9, 13, image::Rgb([200, 3, 255]));
        let out = resize_and_center_crop(&flat, 4);
        assert!(out.pixels().all(|p| p.0 == [200, 3, 255]));
        assert_eq!(out.dimensions(), (4, 4));
    }
}
