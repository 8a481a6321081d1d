//! Seeded OOD sets made here: uniform noise, Gaussian noise and 32x32 crops of photos.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use tch::Tensor;

use super::folder::to_tensor;

const PIXELS: usize = 3 * 32 * 32;

fn images_from_bytes(bytes: Vec<u8>, n: usize) -> Tensor {
    Tensor::from_slice(&bytes).view([n as i64, 3, 32, 32])
}

/// `n` images with every pixel drawn uniformly from 0..=255.
pub fn uniform_noise(n: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let bytes = (0..n * PIXELS).map(|_| rng.random::<u8>()).collect();
    images_from_bytes(bytes, n)
}

/// `n` images with every pixel (in [0, 1]) drawn from N(0.5, 0.25^2), clipped and quantised.
pub fn gaussian_noise(n: usize, seed: u64) -> Tensor {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = Normal::new(0.5f64, 0.25).expect("valid normal parameters");
    let bytes = (0..n * PIXELS)
        .map(|_| (normal.sample(&mut rng).clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect();
    images_from_bytes(bytes, n)
}

/// Each photo at scales 1, 1/2, 1/4, ... while its shorter side stays at least 48 pixels.
fn pyramid(photos: &[image::RgbImage]) -> Vec<image::RgbImage> {
    let mut levels = Vec::new();
    for photo in photos {
        let mut level = photo.clone();
        while level.width().min(level.height()) >= 48 {
            let (w, h) = (level.width() / 2, level.height() / 2);
            let next = image::imageops::resize(&level, w, h, image::imageops::FilterType::Triangle);
            levels.push(level);
            level = next;
        }
    }
    levels
}

/// `n` random 32x32 crops from `photos` at several scales, `u8` `[n,3,32,32]`.
/// Returns `None` when no photo is at least 48 pixels on its shorter side.
pub fn photo_crops(photos: &[image::RgbImage], n: usize, seed: u64) -> Option<Tensor> {
    let levels = pyramid(photos);
    if levels.is_empty() {
        return None;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let crops: Vec<image::RgbImage> = (0..n)
        .map(|_| {
            let level = &levels[rng.random_range(0..levels.len())];
            let x = rng.random_range(0..=level.width() - 32);
            let y = rng.random_range(0..=level.height() - 32);
            image::imageops::crop_imm(level, x, y, 32, 32).to_image()
        })
        .collect();
    Some(to_tensor(&crops))
}
