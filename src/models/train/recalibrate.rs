//! BatchNorm statistics that match the weights: every BatchNorm's running mean and variance set to
//! the exact moments of its inputs over a training set, measured in one pass without gradients.
//!
//! During training a BatchNorm's running statistics are an exponential average (momentum 0.1) of
//! the batch statistics of *earlier* weights. After a short run they lag behind the weights, and
//! the eval-mode network, which normalises with them, can be at chance while the train-mode one
//! is accurate. As `torch.optim.swa_utils.update_bn` and timm's BatchNorm recalibration do, we
//! run the train set through the network once in train mode (every BatchNorm normalises with its
//! batch's statistics, as in training), without augmentation and without gradients; instead of
//! averaging the batches' statistics, each BatchNorm accumulates the exact per-channel count,
//! mean and sum of squared deviations of all its inputs (Chan et al.'s pairwise update, in
//! float64), and its running mean and variance become that mean and the unbiased variance (the
//! kind PyTorch's `running_var` holds).
//!
//! The batches are shuffled: an ImageFolder set is sorted by class, and a batch of one class
//! would give the later BatchNorms other inputs than the mixed batches of training did.
use std::cell::RefCell;
use std::collections::HashMap;

use tch::{nn::VarStore, Kind, Tensor};

use crate::data::{Batches, ImageSet, Normalization};
use crate::error::{Error, Result};
use crate::models::Classifier;
use crate::progress::Progress;

/// The inputs one BatchNorm has seen during a recalibration, and its buffers to set.
struct Moments {
    running_mean: Tensor,
    running_var: Tensor,
    /// Values seen per channel.
    count: f64,
    /// Per-channel mean `[C]`, float64.
    mean: Tensor,
    /// Per-channel sum of squared deviations from `mean` `[C]`, float64.
    m2: Tensor,
}

impl Moments {
    /// Adds `n` values per channel with mean `mean` and sum of squared deviations `m2`.
    fn add(&mut self, n: f64, mean: &Tensor, m2: &Tensor) {
        let total = self.count + n;
        let delta = mean - &self.mean;
        self.m2 = &self.m2 + m2 + delta.square() * (self.count * n / total);
        self.mean = &self.mean + delta * (n / total);
        self.count = total;
    }
}

thread_local! {
    /// The BatchNorms seen by the recalibration running on this thread, by the address of their
    /// running mean; `None` outside a recalibration.
    static RECORDING: RefCell<Option<HashMap<usize, Moments>>> = const { RefCell::new(None) };
}

/// Called by every train-mode BatchNorm forward with its buffers and its input `[N,C,...]`:
/// accumulates the input's per-channel moments while a recalibration runs on this thread, does
/// nothing otherwise.
pub(crate) fn observe(running_mean: &Tensor, running_var: &Tensor, input: &Tensor) {
    RECORDING.with_borrow_mut(|recording| {
        let Some(seen) = recording else { return };
        let channels = input.size()[1];
        let dims: Vec<i64> = (0..input.dim() as i64).filter(|&d| d != 1).collect();
        // libtorch's one-pass (Welford) moments of the batch; combined across batches in float64.
        let (var, mean) = input.detach().var_mean_dim(dims.as_slice(), false, false);
        let n = (input.numel() as i64 / channels) as f64;
        let (mean, m2) = (mean.to_kind(Kind::Double), var.to_kind(Kind::Double) * n);
        seen.entry(running_mean.data_ptr() as usize)
            .or_insert_with(|| Moments {
                running_mean: running_mean.shallow_clone(),
                running_var: running_var.shallow_clone(),
                count: 0.0,
                mean: Tensor::zeros([channels], (Kind::Double, input.device())),
                m2: Tensor::zeros([channels], (Kind::Double, input.device())),
            })
            .add(n, &mean, &m2);
    });
}

/// Starts recording on this thread; dropping it stops, also when the pass panics.
struct Recording;

impl Recording {
    fn start() -> Self {
        RECORDING.with_borrow_mut(|r| {
            assert!(r.is_none(), "BatchNorm recalibrations do not nest");
            *r = Some(HashMap::new());
        });
        Recording
    }

    fn finish(self) -> HashMap<usize, Moments> {
        RECORDING.with_borrow_mut(|r| r.take().unwrap_or_default())
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        RECORDING.with_borrow_mut(|r| *r = None);
    }
}

/// Sets the running mean and variance of every BatchNorm of `net` (whose variables are in `vs`, on
/// its device)
/// to the exact per-channel mean and unbiased variance of its inputs over `set`: one pass in
/// train mode without gradients, the images normalised with `norm` (no augmentation) in batches
/// of `batch_size` (use the training's) shuffled by `seed`. Returns the number of BatchNorms set.
///
/// Fails when `set` is empty.
pub fn recalibrate_batch_norm(
    net: &dyn Classifier,
    vs: &VarStore,
    set: &ImageSet,
    norm: &Normalization,
    batch_size: usize,
    seed: u64,
    progress: &mut dyn Progress,
) -> Result<usize> {
    let device = vs.device();
    let expected = vs
        .variables()
        .keys()
        .filter(|name| name.ends_with("running_mean"))
        .count();
    if expected == 0 {
        return Ok(0);
    }
    if set.is_empty() {
        return Err(Error::BadData(format!(
            "data set `{}` has no train images to measure the BatchNorm statistics on",
            set.name
        )));
    }
    let batch_size = batch_size.max(1);
    progress.start("BatchNorm statistics", set.len().div_ceil(batch_size));
    let recording = Recording::start();
    tch::no_grad(|| {
        for batch in Batches::new(set, *norm, batch_size, device, Some(seed)) {
            let _ = net.forward_t(&batch.images, true);
            progress.advance(1);
        }
    });
    let seen = recording.finish();
    progress.finish();
    assert_eq!(
        seen.len(),
        expected,
        "every BatchNorm of the network must be a models::layers::BatchNorm"
    );
    tch::no_grad(|| {
        for m in seen.values() {
            let kind = m.running_mean.kind();
            let mut running_mean = m.running_mean.shallow_clone();
            let mut running_var = m.running_var.shallow_clone();
            running_mean.copy_(&m.mean.to_kind(kind));
            running_var.copy_(&(&m.m2 / (m.count - 1.0)).to_kind(kind));
        }
    });
    Ok(seen.len())
}
