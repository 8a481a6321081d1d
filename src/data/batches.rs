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
