//! Image-folder trees of JPEG/PNG files (Tiny-ImageNet resize, LSUN resize, photos).
use std::path::{Path, PathBuf};

use tch::Tensor;

use crate::error::{Error, Result};

/// All `.jpg`, `.jpeg` and `.png` files under `dir` (recursively), sorted by path.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                pending.push(path);
            } else if is_image(&path) {
                files.push(path);
            }
        }
    }
    files.sort();
    Ok(files)
}

fn is_image(path: &Path) -> bool {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png"))
}

/// Decodes an image file to 8-bit RGB (grayscale is replicated).
pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    image::open(path)
        .map(|img| img.to_rgb8())
        .map_err(|e| Error::format(path, format!("cannot decode image: {e}")))
}

/// Converts RGB images of one size to a `u8` tensor `[N,3,H,W]`.
pub fn to_tensor(images: &[image::RgbImage]) -> Tensor {
    let (w, h) = images.first().map(|i| i.dimensions()).unwrap_or((0, 0));
    let data: Vec<u8> = images
        .iter()
        .flat_map(|i| i.as_raw().iter().copied())
        .collect();
    Tensor::from_slice(&data)
        .view([images.len() as i64, h as i64, w as i64, 3])
        .permute([0, 3, 1, 2])
        .contiguous()
}

/// Reads every image under `dir`; each must be `side` x `side`. Returns `u8` `[N,3,side,side]`.
pub fn read_image_folder(dir: &Path, side: u32) -> Result<Tensor> {
    let files = image_files(dir)?;
    if files.is_empty() {
        return Err(Error::format(
            dir,
            "no .jpg/.jpeg/.png images in this folder",
        ));
    }
    let images = files
        .iter()
        .map(|f| {
            let img = read_rgb(f)?;
            if img.dimensions() != (side, side) {
                let (w, h) = img.dimensions();
                return Err(Error::format(
                    f,
                    format!("image is {w}x{h}, expected {side}x{side}"),
                ));
            }
            Ok(img)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(to_tensor(&images))
}
