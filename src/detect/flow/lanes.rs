//! The trainer's lanes: consecutive classes trained together as one batched model, each on a
//! thread of its own on the CPU (see [`super::Trainer`]), and a lane's training pass and
//! validation.
use super::adam::{AdamConfig, ClassAdam};
use super::backprop::{self, default_backward, Backward};
use super::model::FlowModel;
use super::train_config::{epoch_order, FlowTrainConfig};
use crate::device::libtorch_threads;
use crate::error::{Error, Result};
use std::ops::Range;
use tch::{Device, Kind, Tensor};

/// Consecutive classes trained together as one batched model.
#[derive(Debug)]
pub(super) struct Lane {
    /// Index of the lane's first class among all classes.
    first: usize,
    /// The lane's classes' flows.
    pub(super) model: FlowModel,
    /// Their Adam state.
    pub(super) adam: ClassAdam,
    /// Every class's training rows, class after class, then one row of zeros (the padding row):
    /// a step's batch is one `index_select` of it.
    train_rows: Tensor,
    /// Where each class's rows start in `train_rows`.
    train_offsets: Vec<i64>,
    /// Per-class views of `train_rows`.
    pub(super) train: Vec<Tensor>,
    /// Per-class held-out features.
    pub(super) validation: Vec<Tensor>,
    /// How the lane's steps get their gradients.
    pub(super) backward: Backward,
}

/// Rows per class of per-class feature matrices.
pub(super) fn rows_per_class(per_class: &[Tensor]) -> Vec<i64> {
    per_class.iter().map(|t| t.size()[0]).collect()
}

/// libtorch's intra-op thread count, set for a while: the caller's count comes back when this is
/// dropped, also when a lane panics.
pub(super) struct ThreadCount(i32);

impl ThreadCount {
    /// Sets the count to `threads`, remembering the current one.
    pub(super) fn set(threads: i32) -> Self {
        let before = tch::get_num_threads();
        tch::set_num_threads(threads);
        ThreadCount(before)
    }
}

impl Drop for ThreadCount {
    fn drop(&mut self) {
        tch::set_num_threads(self.0);
    }
}

/// The lanes [`super::Trainer::new`] uses for `num_classes` classes on `device`: on the CPU one per
/// libtorch thread, at most one per class; elsewhere one.
pub fn default_lanes(device: Device, num_classes: usize) -> usize {
    match device {
        Device::Cpu => libtorch_threads().min(num_classes.max(1)),
        _ => 1,
    }
}

/// `total / rows`, or 0 without rows.
pub(super) fn per_row(total: f64, rows: i64) -> f64 {
    if rows > 0 {
        total / rows as f64
    } else {
        0.0
    }
}

/// A lane's training pass and validation of iteration `t`: `(sum of training losses, sum of
/// validation losses, validation rows)`.
pub(super) fn lane_iteration(
    lane: &mut Lane,
    config: &FlowTrainConfig,
    t: usize,
) -> Result<(f64, f64, i64)> {
    let train = lane.train_pass(config, t)?;
    let (validation, rows) = lane.validation_sums(config.batch_size)?;
    Ok((train, validation, rows))
}

impl Lane {
    /// A lane of `model`'s classes, the first of them class `first` of the layer, with their
    /// centred `train` and `validation` features and a fresh Adam of learning rate `lr`.
    pub(super) fn new(
        mut model: FlowModel,
        first: usize,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        lr: f64,
    ) -> Result<Self> {
        let d = model.meta.dim as i64;
        let padding = Tensor::zeros([1, d], (model.kind(), model.device()));
        let parts: Vec<&Tensor> = train.iter().chain([&padding]).collect();
        let train_rows = Tensor::cat(&parts, 0);
        let counts = rows_per_class(&train);
        let train_offsets: Vec<i64> = counts
            .iter()
            .scan(0, |next, &n| {
                *next += n;
                Some(*next - n)
            })
            .collect();
        let train = train_offsets
            .iter()
            .zip(&counts)
            .map(|(&start, &n)| train_rows.narrow(0, start, n))
            .collect();
        let flat = model.flatten_parameters();
        model.set_trainable(true);
        let params = model.parameters();
        let adam = ClassAdam::new(&params, model.num_classes(), AdamConfig::with_lr(lr))?
            .with_flat_parameters(&params, &flat)?;
        let backward = default_backward(model.device(), model.kind());
        Ok(Lane {
            first,
            model,
            adam,
            train_rows,
            train_offsets,
            train,
            validation,
            backward,
        })
    }

    /// One pass over the lane's classes' shuffled training batches of iteration `t`, one Adam
    /// step per batch; returns the sum of the batch losses.
    fn train_pass(&mut self, config: &FlowTrainConfig, t: usize) -> Result<f64> {
        let c = self.model.num_classes();
        let bs = config.batch_size;
        let counts: Vec<usize> = self.train.iter().map(|x| x.size()[0] as usize).collect();
        let orders: Vec<Vec<i64>> = (0..c)
            .map(|cls| epoch_order(config.seed, t, self.first + cls, counts[cls]))
            .collect();
        let num_batches: Vec<usize> = counts.iter().map(|n| n.div_ceil(bs)).collect();
        let max_batches = num_batches.iter().copied().max().unwrap_or(0);
        let (kind, device) = (self.model.kind(), self.model.device());
        let mut total_loss = 0.0;
        for j in 0..max_batches {
            let active: Vec<usize> = (0..c).filter(|&cls| j < num_batches[cls]).collect();
            let sizes: Vec<usize> = active
                .iter()
                .map(|&cls| bs.min(counts[cls] - j * bs))
                .collect();
            let width = *sizes.iter().max().unwrap_or(&0);
            let padded = sizes.iter().any(|&s| s != width);
            // Row numbers in `train_rows` of every active class's batch, padded with the zero row.
            let padding_row = self.train_rows.size()[0] - 1;
            let mut rows = Vec::with_capacity(active.len() * width);
            for (&cls, &size) in active.iter().zip(&sizes) {
                let order = &orders[cls][j * bs..j * bs + size];
                rows.extend(order.iter().map(|r| r + self.train_offsets[cls]));
                rows.extend(std::iter::repeat_n(padding_row, width - size));
            }
            let x = self
                .train_rows
                .index_select(0, &Tensor::from_slice(&rows).to_device(device))
                .view([active.len() as i64, width as i64, -1]);
            let classes: Vec<i64> = active.iter().map(|&cls| cls as i64).collect();
            let subset = (active.len() < c).then_some(classes.as_slice());
            let params = self.model.parameters();
            let (class_loss, grads) =
                if self.backward == Backward::Explicit && subset.is_none() && !padded {
                    backprop::class_losses_and_gradients(&self.model, &x, libtorch_threads())?
                } else {
                    let log_p = self.model.log_prob_centred(&x, subset)?;
                    let log_p = if padded {
                        let w: Vec<f64> = sizes
                            .iter()
                            .flat_map(|&s| (0..width).map(move |r| if r < s { 1.0 } else { 0.0 }))
                            .collect();
                        let w = Tensor::from_slice(&w)
                            .view([active.len() as i64, width as i64])
                            .to_kind(kind)
                            .to_device(device);
                        log_p * w
                    } else {
                        log_p
                    };
                    let class_loss = -log_p.sum_dim_intlist(1, false, kind);
                    let grads =
                        Tensor::f_run_backward(&[class_loss.sum(kind)], &params, false, false)?;
                    (class_loss, grads)
                };
            let values = Vec::<f64>::try_from(&class_loss.detach().to_kind(Kind::Double))?;
            for (&cls, &loss) in active.iter().zip(&values) {
                if !loss.is_finite() {
                    return Err(Error::NonFiniteLoss {
                        iteration: t,
                        class: self.first + cls,
                        batch: j,
                        loss,
                    });
                }
                total_loss += loss;
            }
            self.adam.step(&params, &grads, &active)?;
        }
        Ok(total_loss)
    }

    /// `(sum of -log p, number of rows)` over the lane's held-out features, `batch_size` rows of
    /// every class at a time.
    pub(super) fn validation_sums(&self, batch_size: usize) -> Result<(f64, i64)> {
        let bs = batch_size as i64;
        let mut total = 0.0;
        let mut count = 0i64;
        tch::no_grad(|| -> Result<()> {
            let n = self
                .validation
                .iter()
                .map(|v| v.size()[0])
                .max()
                .unwrap_or(0);
            for start in (0..n).step_by(bs as usize) {
                let (classes, parts): (Vec<i64>, Vec<Tensor>) = self
                    .validation
                    .iter()
                    .enumerate()
                    .filter(|(_, v)| v.size()[0] > start)
                    .map(|(cls, v)| (cls as i64, v.narrow(0, start, bs.min(v.size()[0] - start))))
                    .unzip();
                // Classes with the same remaining length are evaluated together.
                let mut lengths: Vec<i64> = parts.iter().map(|p| p.size()[0]).collect();
                lengths.sort_unstable();
                lengths.dedup();
                for len in lengths {
                    let (sel, xs): (Vec<i64>, Vec<&Tensor>) = classes
                        .iter()
                        .zip(&parts)
                        .filter(|(_, p)| p.size()[0] == len)
                        .map(|(c, p)| (*c, p))
                        .unzip();
                    let x = Tensor::stack(&xs, 0);
                    let lp = if self.backward == Backward::Explicit
                        && sel.len() == self.model.num_classes()
                    {
                        backprop::log_prob_centred(&self.model, &x, libtorch_threads())?
                    } else {
                        self.model.log_prob_centred(&x, Some(&sel))?
                    };
                    total -= f64::try_from(lp.sum(Kind::Double))?;
                    count += len * sel.len() as i64;
                }
            }
            Ok(())
        })?;
        Ok((total, count))
    }

    /// The lane's classes.
    pub(super) fn classes(&self) -> Range<usize> {
        self.first..self.first + self.model.num_classes()
    }
}
