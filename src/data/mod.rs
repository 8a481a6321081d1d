//! Datasets: readers for the canonical file formats, the offline OOD sets, a name registry,
//! image folders of any size ([`source`]), and deterministic batching into normalised tensors.
//!
//! Every set is held in memory as `u8` images `[N,3,S,S]` on the CPU, `S` the model's input side
//! (32 for the paper's networks); batches are converted to `f32`, normalised per channel and moved
//! to the device one at a time.
pub mod batches;
pub mod cifar;
pub mod csv_images;
pub mod folder;
pub mod group;
pub mod idx;
mod raw;
pub mod registry;
pub mod resize;
pub mod source;
pub mod svhn;
pub mod synthetic;
pub mod transform;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};

pub use batches::{Batch, BatchSource, Batches, NormalizedSet};
pub use group::OodGroup;
pub use registry::{load, DatasetInfo, Role, DATASETS};
pub use source::{load_in_distribution, load_ood, DataSource};

/// Side of the square images the registry's sets have and the paper's networks see.
pub const IMAGE_SIDE: i64 = 32;

/// Which part of a dataset to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// The training split.
    Train,
    /// The test split (for OOD-only sets: the whole set).
    Test,
}

impl Split {
    /// "train" or "test".
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// A labelled image set: square `u8` images `[N,3,S,S]` and `i64` labels `[N]`, on the CPU.
#[derive(Debug)]
pub struct ImageSet {
    /// Name of the set (registry name, or the name given to an image folder).
    pub name: String,
    /// Images, `u8`, `[N,3,S,S]`.
    pub images: Tensor,
    /// Labels, `i64`, `[N]`, each in `0..num_classes` (all 0 for unlabelled sets).
    pub labels: Tensor,
    /// Number of classes (1 for unlabelled sets).
    pub num_classes: usize,
}

impl ImageSet {
    /// Checks shapes, kinds and label range, naming `source` in the error.
    pub fn new(
        name: impl Into<String>,
        source: &std::path::Path,
        images: Tensor,
        labels: Tensor,
        num_classes: usize,
    ) -> Result<Self> {
        let size = images.size();
        if images.kind() != Kind::Uint8 || size.len() != 4 || size[1] != 3 || size[2] != size[3] {
            return Err(Error::format(
                source,
                format!(
                    "expected square u8 images [N,3,S,S], got {:?} {size:?}",
                    images.kind()
                ),
            ));
        }
        if labels.size() != [size[0]] {
            return Err(Error::format(
                source,
                format!(
                    "{} images but {} labels",
                    size[0],
                    labels.size().first().copied().unwrap_or(0)
                ),
            ));
        }
        if size[0] == 0 {
            return Err(Error::format(source, "the set holds no images"));
        }
        let labels = labels.to_kind(Kind::Int64);
        let (min, max) = (labels.min().int64_value(&[]), labels.max().int64_value(&[]));
        if min < 0 || max >= num_classes as i64 {
            return Err(Error::format(
                source,
                format!("labels must lie in 0..{num_classes}, found {min}..={max}"),
            ));
        }
        Ok(ImageSet {
            name: name.into(),
            images,
            labels,
            num_classes,
        })
    }

    /// Side `S` of the square images.
    pub fn side(&self) -> i64 {
        self.images.size()[3]
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// Always false: an empty set is rejected by [`ImageSet::new`].
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first `n` images (all of them when `n` exceeds the size).
    pub fn take(&self, n: usize) -> ImageSet {
        let n = n.min(self.len()) as i64;
        ImageSet {
            name: self.name.clone(),
            images: self.images.narrow(0, 0, n),
            labels: self.labels.narrow(0, 0, n),
            num_classes: self.num_classes,
        }
    }

    /// Per-channel mean and (population) standard deviation of the pixels scaled to [0, 1], from
    /// exact integer sums over chunks: bounded memory, and the same bits whatever the thread count.
    pub fn channel_stats(&self) -> Normalization {
        let (mut sum, mut sum_sq) = ([0u64; 3], [0u64; 3]);
        let pixels = (self.side() * self.side()) as usize;
        for chunk in self.images.split(4096, 0) {
            let bytes = Vec::<u8>::try_from(chunk.contiguous().view(-1)).expect("u8 images");
            for image in bytes.chunks_exact(3 * pixels) {
                for (j, channel) in image.chunks_exact(pixels).enumerate() {
                    sum[j] += channel.iter().map(|&v| v as u64).sum::<u64>();
                    sum_sq[j] += channel
                        .iter()
                        .map(|&v| (v as u64) * (v as u64))
                        .sum::<u64>();
                }
            }
        }
        let n = (self.len() * pixels) as f64;
        let mean = sum.map(|s| s as f64 / n / 255.0);
        let std = [0, 1, 2].map(|j| {
            let var = sum_sq[j] as f64 / n / (255.0 * 255.0) - mean[j] * mean[j];
            var.max(0.0).sqrt()
        });
        Normalization { mean, std }
    }
}

/// Per-channel input normalisation: `x = (pixel / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalization {
    /// Channel means of pixels in [0, 1].
    pub mean: [f64; 3],
    /// Channel standard deviations of pixels in [0, 1].
    pub std: [f64; 3],
}

impl Normalization {
    /// The reference's ResNet normalisation (CIFAR statistics).
    pub const RESNET: Normalization = Normalization {
        mean: [0.4914, 0.4822, 0.4465],
        std: [0.2023, 0.1994, 0.2010],
    };
    /// The reference's DenseNet normalisation.
    pub const DENSENET: Normalization = Normalization {
        mean: [125.3 / 255.0, 123.0 / 255.0, 113.9 / 255.0],
        std: [63.0 / 255.0, 62.1 / 255.0, 66.7 / 255.0],
    };

    /// Normalises `u8` images `[N,3,H,W]` to `f32`.
    pub fn apply(&self, images: &Tensor) -> Tensor {
        let device = images.device();
        let mean = Tensor::from_slice(&self.mean)
            .to_kind(Kind::Float)
            .view([1, 3, 1, 1])
            .to_device(device);
        let std = Tensor::from_slice(&self.std)
            .to_kind(Kind::Float)
            .view([1, 3, 1, 1])
            .to_device(device);
        (images.to_kind(Kind::Float) / 255.0 - mean) / std
    }

    /// The smallest and largest normalised value of each channel (pixels 0 and 255).
    pub fn pixel_range(&self) -> ([f64; 3], [f64; 3]) {
        (
            [0, 1, 2].map(|j| -self.mean[j] / self.std[j]),
            [0, 1, 2].map(|j| (1.0 - self.mean[j]) / self.std[j]),
        )
    }
}
