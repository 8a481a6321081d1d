//! IDX files (the MNIST / Fashion-MNIST format), raw or gzipped.
use std::path::Path;

use tch::{Kind, Tensor};

use super::raw::read_maybe_gz;
use crate::error::{Error, Result};

/// Reads an unsigned-byte IDX file: its dimensions and payload.
pub fn read_idx(path: &Path) -> Result<(Vec<usize>, Vec<u8>)> {
    let bytes = read_maybe_gz(path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 || bytes[2] != 0x08 {
        return Err(Error::format(
            path,
            "not an unsigned-byte IDX file (expected magic 00 00 08 <ndims>)",
        ));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if ndims == 0 || bytes.len() < header {
        return Err(Error::format(
            path,
            format!("IDX header truncated ({ndims} dimensions)"),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected: usize = dims.iter().product();
    let payload = bytes.len() - header;
    if payload != expected {
        return Err(Error::format(
            path,
            format!("IDX dimensions {dims:?} need {expected} bytes of data, found {payload}"),
        ));
    }
    Ok((dims, bytes[header..].to_vec()))
}

/// Reads IDX images: `u8` `[N,H,W]`.
pub fn read_idx_images(path: &Path) -> Result<Tensor> {
    let (dims, data) = read_idx(path)?;
    if dims.len() != 3 {
        return Err(Error::format(
            path,
            format!("expected images [N,H,W], found dimensions {dims:?}"),
        ));
    }
    let shape: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&data).view(&shape[..]))
}

/// Reads IDX labels: `i64` `[N]`, each checked to be below `num_classes`.
pub fn read_idx_labels(path: &Path, num_classes: usize) -> Result<Tensor> {
    let (dims, data) = read_idx(path)?;
    if dims.len() != 1 {
        return Err(Error::format(
            path,
            format!("expected labels [N], found dimensions {dims:?}"),
        ));
    }
    if let Some(pos) = data.iter().position(|&l| l as usize >= num_classes) {
        return Err(Error::format(
            path,
            format!(
                "label {} at index {pos} is not below {num_classes}",
                data[pos]
            ),
        ));
    }
    Ok(Tensor::from_slice(&data).to_kind(Kind::Int64))
}
