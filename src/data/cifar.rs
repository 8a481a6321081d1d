//! CIFAR-10 / CIFAR-100 binary batches (`data_batch_1.bin`, `train.bin`, ...).
use std::path::Path;

use tch::{Kind, Tensor};

use super::raw::read_maybe_gz;
use crate::error::{Error, Result};

/// Layout of one CIFAR record: how many label bytes precede the 3072 pixel bytes and which one to use.
#[derive(Debug, Clone, Copy)]
pub struct CifarFormat {
    /// Label bytes per record (1 for CIFAR-10, 2 for CIFAR-100: coarse then fine).
    pub label_bytes: usize,
    /// Which label byte to use (CIFAR-100: 1, the fine label).
    pub label_index: usize,
    /// Number of classes.
    pub num_classes: usize,
}

/// CIFAR-10 records.
pub const CIFAR10: CifarFormat = CifarFormat {
    label_bytes: 1,
    label_index: 0,
    num_classes: 10,
};
/// CIFAR-100 records, fine labels.
pub const CIFAR100: CifarFormat = CifarFormat {
    label_bytes: 2,
    label_index: 1,
    num_classes: 100,
};

const PIXELS: usize = 3 * 32 * 32;

/// Reads one binary batch file: `u8` images `[N,3,32,32]` and `i64` labels `[N]`.
pub fn read_cifar_batch(path: &Path, format: CifarFormat) -> Result<(Tensor, Tensor)> {
    let bytes = read_maybe_gz(path)?;
    let record = format.label_bytes + PIXELS;
    if bytes.is_empty() || bytes.len() % record != 0 {
        return Err(Error::format(
            path,
            format!(
                "{} bytes is not a whole number of {record}-byte CIFAR records ({} label byte(s) + 3072 pixels)",
                bytes.len(),
                format.label_bytes
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut labels = Vec::with_capacity(n);
    let mut pixels = Vec::with_capacity(n * PIXELS);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        let label = rec[format.label_index] as usize;
        if label >= format.num_classes {
            return Err(Error::format(
                path,
                format!(
                    "record {i} has label {label}, expected below {}",
                    format.num_classes
                ),
            ));
        }
        labels.push(label as i64);
        pixels.extend_from_slice(&rec[format.label_bytes..]);
    }
    Ok((
        Tensor::from_slice(&pixels).view([n as i64, 3, 32, 32]),
        Tensor::from_slice(&labels).to_kind(Kind::Int64),
    ))
}

/// Reads and concatenates several batch files in the order given.
pub fn read_cifar_batches(
    paths: &[std::path::PathBuf],
    format: CifarFormat,
) -> Result<(Tensor, Tensor)> {
    let parts = paths
        .iter()
        .map(|p| read_cifar_batch(p, format))
        .collect::<Result<Vec<_>>>()?;
    let (images, labels): (Vec<Tensor>, Vec<Tensor>) = parts.into_iter().unzip();
    Ok((Tensor::cat(&images, 0), Tensor::cat(&labels, 0)))
}
