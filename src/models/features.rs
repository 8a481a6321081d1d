//! Features of a classifier (`docs/method.md#feature-layers`): the mean-pooled activation of every
//! feature layer over an image set, extracted in one eval pass per batch, and the train features
//! grouped by class. Where they are stored: [`crate::store::features`].
use tch::{Device, Kind, Tensor};

use crate::data::{BatchSource, Normalization};
use crate::models::{mean_pool, Classifier};

/// Mean-pooled features of every layer for one image set, on the CPU.
#[derive(Debug)]
pub struct Features {
    /// One float32 `[N, C_l]` matrix per layer.
    pub layers: Vec<Tensor>,
    /// The images' labels, int64 `[N]`.
    pub labels: Tensor,
    /// How many images the classifier got right (meaningful for labelled in-distribution sets).
    pub correct: usize,
}

impl Features {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.size()[0] as usize
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Fraction of correctly classified images.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.len().max(1) as f64
    }

    /// The rows reordered so that classes are contiguous (class 0 first), each in stored order.
    pub fn grouped_by_class(&self) -> Features {
        let order = self.labels.argsort_stable(true, 0, false);
        Features {
            layers: self
                .layers
                .iter()
                .map(|l| l.index_select(0, &order))
                .collect(),
            labels: self.labels.index_select(0, &order),
            correct: self.correct,
        }
    }
}

/// Runs `net` (eval mode, no gradients) over `set` in stored order (raw images normalised with
/// `norm`) and collects the mean-pooled activation of every layer. `on_batch` is called with each batch's size (for progress bars).
pub fn extract(
    net: &dyn Classifier,
    set: BatchSource<'_>,
    norm: Normalization,
    batch_size: usize,
    device: Device,
    on_batch: &mut dyn FnMut(usize),
) -> Features {
    let mut layers: Vec<Vec<Tensor>> = (0..net.num_layers()).map(|_| Vec::new()).collect();
    let mut correct = 0i64;
    tch::no_grad(|| {
        for batch in set.batches(norm, batch_size, device) {
            let (logits, activations) = net.feature_list(&batch.images);
            correct += logits
                .argmax(1, false)
                .eq_tensor(&batch.labels)
                .sum(Kind::Int64)
                .int64_value(&[]);
            for (store, act) in layers.iter_mut().zip(&activations) {
                store.push(mean_pool(act).to_kind(Kind::Float).to_device(Device::Cpu));
            }
            on_batch(batch.labels.size()[0] as usize);
        }
    });
    Features {
        layers: layers.iter().map(|parts| Tensor::cat(parts, 0)).collect(),
        labels: set.labels(),
        correct: correct as usize,
    }
}
