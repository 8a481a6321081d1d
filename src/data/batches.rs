//! Deterministic batching of an [`ImageSet`] into normalised tensors on a device.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::{ImageSet, Normalization};

/// One batch: normalised `f32` images `[B,3,32,32]` and `i64` labels `[B]`, on the device.
#[derive(Debug)]
pub struct Batch {
    /// Normalised images.
    pub images: Tensor,
    /// Labels.
    pub labels: Tensor,
}

/// Iterator over the batches of a set, in stored order unless a shuffle seed is given.
pub struct Batches<'a> {
    set: &'a ImageSet,
    norm: Normalization,
    order: Option<Tensor>,
    batch_size: usize,
    position: usize,
    device: Device,
}

impl<'a> Batches<'a> {
    /// Batches of `batch_size` (the last may be smaller); `shuffle_seed` permutes the order reproducibly.
    pub fn new(
        set: &'a ImageSet,
        norm: Normalization,
        batch_size: usize,
        device: Device,
        shuffle_seed: Option<u64>,
    ) -> Self {
        assert!(batch_size > 0, "batch size must be positive");
        let order = shuffle_seed.map(|seed| {
            let mut index: Vec<i64> = (0..set.len() as i64).collect();
            index.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
            Tensor::from_slice(&index)
        });
        Batches {
            set,
            norm,
            order,
            batch_size,
            position: 0,
            device,
        }
    }

    /// Number of batches in one pass.
    pub fn num_batches(&self) -> usize {
        self.set.len().div_ceil(self.batch_size)
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        let n = self.set.len();
        if self.position >= n {
            return None;
        }
        let size = self.batch_size.min(n - self.position) as i64;
        let (images, labels) = match &self.order {
            None => (
                self.set.images.narrow(0, self.position as i64, size),
                self.set.labels.narrow(0, self.position as i64, size),
            ),
            Some(order) => {
                let index = order.narrow(0, self.position as i64, size);
                (
                    self.set.images.index_select(0, &index),
                    self.set.labels.index_select(0, &index),
                )
            }
        };
        self.position += size as usize;
        Some(Batch {
            images: self.norm.apply(&images.to_device(self.device)),
            labels: labels.to_device(self.device),
        })
    }
}

/// Images already normalised for a classifier: `f32` `[N,3,32,32]` with `i64` labels `[N]`, on the
/// CPU (the FGSM sets, for example).
#[derive(Debug)]
pub struct NormalizedSet {
    /// Name shown in progress output.
    pub name: String,
    /// Normalised images.
    pub images: Tensor,
    /// Labels.
    pub labels: Tensor,
}

impl NormalizedSet {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.images.size()[0] as usize
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a stage runs a network over: a `u8` [`ImageSet`] (normalised batch by batch) or a
/// [`NormalizedSet`] (used as it is).
#[derive(Debug, Clone, Copy)]
pub enum BatchSource<'a> {
    /// Raw images, normalised with the normalisation passed to [`BatchSource::batches`].
    Images(&'a ImageSet),
    /// Images that are already normalised.
    Normalized(&'a NormalizedSet),
}

impl<'a> From<&'a ImageSet> for BatchSource<'a> {
    fn from(set: &'a ImageSet) -> Self {
        BatchSource::Images(set)
    }
}

impl<'a> From<&'a NormalizedSet> for BatchSource<'a> {
    fn from(set: &'a NormalizedSet) -> Self {
        BatchSource::Normalized(set)
    }
}

impl<'a> BatchSource<'a> {
    /// The set's name.
    pub fn name(&self) -> &'a str {
        match self {
            BatchSource::Images(s) => &s.name,
            BatchSource::Normalized(s) => &s.name,
        }
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        match self {
            BatchSource::Images(s) => s.len(),
            BatchSource::Normalized(s) => s.len(),
        }
    }

    /// True when there is no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All labels, `i64` `[N]`, on the CPU.
    pub fn labels(&self) -> Tensor {
        match self {
            BatchSource::Images(s) => s.labels.shallow_clone(),
            BatchSource::Normalized(s) => s.labels.shallow_clone(),
        }
    }

    /// Batches in stored order; `norm` applies to [`BatchSource::Images`] only.
    pub fn batches(
        &self,
        norm: Normalization,
        batch_size: usize,
        device: Device,
    ) -> Box<dyn Iterator<Item = Batch> + 'a> {
        let batch_size = batch_size.max(1);
        match *self {
            BatchSource::Images(set) => Box::new(Batches::new(set, norm, batch_size, device, None)),
            BatchSource::Normalized(set) => {
                let n = set.len();
                Box::new((0..n).step_by(batch_size).map(move |start| {
                    let size = batch_size.min(n - start) as i64;
                    Batch {
                        images: set
                            .images
                            .narrow(0, start as i64, size)
                            .to_kind(tch::Kind::Float)
                            .to_device(device),
                        labels: set.labels.narrow(0, start as i64, size).to_device(device),
                    }
                }))
            }
        }
    }
}
