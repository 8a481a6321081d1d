//! SVHN `train_32x32.mat` / `test_32x32.mat` (MATLAB v5, as distributed).
use std::path::Path;

use matfile::{MatFile, NumericData};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

/// Reads an SVHN `.mat` file: `u8` images `[N,3,32,32]` and labels `[N]` with 10 mapped to 0.
pub fn read_svhn_mat(path: &Path) -> Result<(Tensor, Tensor)> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mat = MatFile::parse(std::io::BufReader::new(file))
        .map_err(|e| Error::format(path, format!("not a readable MATLAB v5 file: {e}")))?;
    let x = mat
        .find_by_name("X")
        .ok_or_else(|| Error::format(path, "no variable `X` (images 32x32x3xN)"))?;
    let y = mat
        .find_by_name("y")
        .ok_or_else(|| Error::format(path, "no variable `y` (labels Nx1)"))?;
    let size = x.size();
    if size.len() != 4 || size[..3] != [32, 32, 3] {
        return Err(Error::format(
            path,
            format!("`X` must be 32x32x3xN, found {size:?}"),
        ));
    }
    let n = size[3];
    let pixels = match x.data() {
        NumericData::UInt8 { real, .. } => real,
        _ => return Err(Error::format(path, "`X` must hold uint8 pixels")),
    };
    let labels =
        numeric_as_i64(y.data()).ok_or_else(|| Error::format(path, "`y` must be numeric"))?;
    if labels.len() != n {
        return Err(Error::format(
            path,
            format!("{n} images but {} labels", labels.len()),
        ));
    }
    if let Some(pos) = labels.iter().position(|l| !(1..=10).contains(l)) {
        return Err(Error::format(
            path,
            format!(
                "label {} at index {pos}; SVHN labels are 1..=10",
                labels[pos]
            ),
        ));
    }
    let labels: Vec<i64> = labels.into_iter().map(|l| l % 10).collect();
    // MATLAB is column-major: X(h, w, c, n) is stored at h + 32 (w + 32 (c + 3 n)).
    let images = Tensor::from_slice(pixels)
        .view([n as i64, 3, 32, 32])
        .transpose(2, 3)
        .contiguous();
    Ok((images, Tensor::from_slice(&labels).to_kind(Kind::Int64)))
}

fn numeric_as_i64(data: &NumericData) -> Option<Vec<i64>> {
    Some(match data {
        NumericData::UInt8 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::Int8 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::UInt16 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::Int16 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::UInt32 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::Int32 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::UInt64 { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::Int64 { real, .. } => real.clone(),
        NumericData::Single { real, .. } => real.iter().map(|&v| v as i64).collect(),
        NumericData::Double { real, .. } => real.iter().map(|&v| v as i64).collect(),
    })
}
