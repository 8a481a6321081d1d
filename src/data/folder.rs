//! Image-folder trees of JPEG/PNG files: the offline OOD sets (Tiny-ImageNet resize, LSUN resize,
//! photos), any folder of images given as an OOD set, and in-distribution sets in torchvision's
//! ImageFolder layout (`train/<class>/*`, `test/<class>/*`). Images of any size and mode (gray,
//! RGB, RGBA, palette) are decoded to RGB (alpha dropped, as PIL's `convert("RGB")`) and brought to
//! the model's input side by [`resize_and_center_crop`].
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::resize::resize_and_center_crop;
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
    image::open(path).map(|img| img.to_rgb8()).map_err(|e| {
        Error::format(
            path,
            format!("cannot decode image ({e}): truncated, or not a PNG or JPEG image"),
        )
    })
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

/// Writes images `rows` of the `u8` images `[N,3,H,W]` as PNG files `{dir}/{prefix}_{row}.png`
/// (the inverse of reading an image folder: a classifier sees the same pixels); returns them.
pub fn write_pngs(
    images: &Tensor,
    rows: &[usize],
    dir: &Path,
    prefix: &str,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let size = images.size();
    let (h, w) = (size[2] as u32, size[3] as u32);
    rows.iter()
        .map(|&i| {
            let hwc = images
                .get(i as i64)
                .permute([1, 2, 0])
                .contiguous()
                .view(-1);
            let raw = Vec::<u8>::try_from(hwc)?;
            let path = dir.join(format!("{prefix}_{i:05}.png"));
            let image = image::RgbImage::from_raw(w, h, raw)
                .ok_or_else(|| Error::Shape(format!("image {i} of shape {size:?}")))?;
            crate::io::write_atomically(&path, |tmp| {
                image
                    .save_with_format(tmp, image::ImageFormat::Png)
                    .map_err(|e| Error::format(tmp, e.to_string()))
            })?;
            Ok(path)
        })
        .collect()
}

/// Decodes `path` to RGB and brings it to `side` x `side` ([`resize_and_center_crop`]).
pub fn read_resized(path: &Path, side: u32) -> Result<image::RgbImage> {
    Ok(resize_and_center_crop(&read_rgb(path)?, side))
}

/// Reads every image under `dir` (recursively, sorted by path), each resized and centre-cropped
/// to `side` x `side` ([`resize_and_center_crop`]). Returns `u8` `[N,3,side,side]`.
pub fn read_image_folder(dir: &Path, side: u32) -> Result<Tensor> {
    let files = image_files(dir)?;
    if files.is_empty() {
        return Err(Error::format(
            dir,
            "no .jpg/.jpeg/.png images in this folder (or its subfolders); point at a folder of images",
        ));
    }
    let images = files
        .iter()
        .map(|f| read_resized(f, side))
        .collect::<Result<Vec<_>>>()?;
    Ok(to_tensor(&images))
}

/// The class folders of an ImageFolder split (`dir/<class>/...`): every sub-folder, sorted by name.
pub fn class_folders(dir: &Path) -> Result<Vec<String>> {
    if !dir.is_dir() {
        return Err(Error::format(
            dir,
            "no such folder; an image-folder data set needs train/<class>/* and test/<class>/*",
        ));
    }
    let mut classes = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::format(&path, "a class folder's name must be valid UTF-8"))?;
            classes.push(name.to_string());
        }
    }
    classes.sort();
    if classes.is_empty() {
        return Err(Error::format(
            dir,
            "no class folders here; expected one sub-folder of images per class (torchvision's              ImageFolder layout)",
        ));
    }
    Ok(classes)
}

/// One split of an ImageFolder data set, `split_dir/<class>/*.{png,jpg,jpeg}`, labelled by the
/// position of its folder's name in `classes` (the train split's sorted class folders), each
/// image resized and centre-cropped to `side`. Returns `u8` images `[N,3,side,side]` and `i64`
/// labels `[N]`, classes in order and each class's files sorted by path. Fails on a class folder
/// that is not in `classes` (a test class missing from train) or holds no image.
pub fn read_class_folder(
    split_dir: &Path,
    classes: &[String],
    side: u32,
) -> Result<(Tensor, Tensor)> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for name in class_folders(split_dir)? {
        let label = classes.iter().position(|c| *c == name).ok_or_else(|| {
            Error::format(
                split_dir.join(&name),
                format!(
                    "class `{name}` is not a class of the train split (classes: {}); every test                      class needs a train folder of the same name",
                    classes.join(", ")
                ),
            )
        })?;
        let dir = split_dir.join(&name);
        let files = image_files(&dir)?;
        if files.is_empty() {
            return Err(Error::format(
                &dir,
                "this class folder holds no .jpg/.jpeg/.png image; add images or remove the folder",
            ));
        }
        for f in &files {
            images.push(read_resized(f, side)?);
            labels.push(label as i64);
        }
    }
    Ok((to_tensor(&images), Tensor::from_slice(&labels)))
}
