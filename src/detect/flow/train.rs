//! Training all class flows of one layer at once (SPEC section 5).
//!
//! One iteration is, for every class, one pass over its shuffled training batches (one Adam step
//! per batch) followed by the validation loss over its held-out features. The classes are trained
//! together: step `j` of an iteration runs batch `j` of every class that has one through the batched
//! model (padded to a common size, padded rows weigh zero), and the per-class Adam
//! ([`super::adam::ClassAdam`]) updates only those classes. The result equals training each class
//! alone with the same data order ([`epoch_order`]). On the CPU the classes are shared out over
//! lanes, one per thread (see [`Trainer`]).
use super::adam::{AdamConfig, ClassAdam, STEPS};
use super::backprop;
use super::class_rows;
use super::model::FlowModel;
use crate::device::libtorch_threads;
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::cell::OnceCell;
use std::ops::Range;
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// Training settings (defaults: the reference's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlowTrainConfig {
    /// Adam learning rate (1e-5).
    pub lr: f64,
    /// Batch size (256).
    pub batch_size: usize,
    /// Seed of the per-pass shuffling.
    pub seed: u64,
    /// Monitoring period in iterations (20); iteration `t` is monitored when `t % period == 0`.
    pub monitor_every: usize,
}

impl Default for FlowTrainConfig {
    fn default() -> Self {
        FlowTrainConfig {
            lr: 1e-5,
            batch_size: 256,
            seed: 0,
            monitor_every: 20,
        }
    }
}

impl FlowTrainConfig {
    /// Errors (naming the flag) unless the learning rate is finite and positive, the batch size
    /// and the monitoring period at least 1.
    pub fn check(&self) -> Result<()> {
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::Invalid(format!(
                "--lr must be a finite positive number, got {}",
                self.lr
            )));
        }
        if self.batch_size == 0 {
            return Err(Error::Invalid("--batch-size must be at least 1".into()));
        }
        if self.monitor_every == 0 {
            return Err(Error::Invalid("--monitor-every must be at least 1".into()));
        }
        Ok(())
    }
}

/// Splits each class's centred train features into (validation, train): the first
/// `floor(num_validation / C)` rows are held out (SPEC section 5). Fails when a class would have
/// no training rows left.
pub fn split_validation(
    per_class: &[Tensor],
    num_validation: usize,
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    if per_class.is_empty() {
        return Err(Error::Invalid("no classes to train".into()));
    }
    let per = (num_validation / per_class.len()) as i64;
    let mut validation = Vec::new();
    let mut train = Vec::new();
    for (c, x) in per_class.iter().enumerate() {
        let n = x.size()[0];
        if n <= per {
            return Err(Error::Invalid(format!(
                "class {c} has {n} train samples, not more than the {per} held out for \
                 validation (--validation-total {num_validation} over {} classes); lower \
                 --validation-total or prepare more train images",
                per_class.len()
            )));
        }
        validation.push(x.narrow(0, 0, per));
        train.push(x.narrow(0, per, n - per));
    }
    Ok((validation, train))
}

/// The order in which class `class` visits its `n` training rows in iteration `iteration`: a
/// permutation drawn from a ChaCha8 generator seeded by `(seed, iteration, class)`, so it does not
/// depend on how the classes are scheduled.
pub fn epoch_order(seed: u64, iteration: usize, class: usize, n: usize) -> Vec<i64> {
    let mixed = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((iteration as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9))
        .wrapping_add((class as u64).wrapping_mul(0x94D0_49BB_1331_11EB));
    let mut rng = ChaCha8Rng::seed_from_u64(mixed);
    let mut order: Vec<i64> = (0..n as i64).collect();
    order.shuffle(&mut rng);
    order
}

/// Monitoring figures of an iteration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorRecord {
    /// The caller's AUROC (max-class log p, in-distribution vs OOD), if it computed one.
    pub auroc: Option<f64>,
    /// Smallest per-coordinate std of the latent z over the classes' first training batches.
    pub latent_std_min: f64,
    /// Largest such std.
    pub latent_std_max: f64,
}

/// What one iteration logged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IterationRecord {
    /// Iteration index (from 0).
    pub iteration: usize,
    /// Training loss per sample: the sum of all batch losses over the number of training rows.
    pub train_loss: f64,
    /// Validation loss per sample.
    pub validation_loss: f64,
    /// Set on monitored iterations.
    pub monitor: Option<MonitorRecord>,
}

/// The batched trainer of one layer's flows.
///
/// On the CPU the classes are shared out over lanes: consecutive class ranges with about equal
/// numbers of training rows, one per libtorch thread (at most one per class), each a batched model
/// of its own trained on a thread of its own with one intra-op thread. A lane's kernels then run
/// without the thread pool's hand-offs, which at the small layers cost more than the work (see
/// README "Performance"). The classes' arithmetic does not depend on the lanes: every class has
/// its own parameters, data order and Adam state.
#[derive(Debug)]
pub struct Trainer {
    lanes: Vec<Lane>,
    /// All lanes' classes as one model, built when asked for and dropped when training changes it.
    joined: OnceCell<FlowModel>,
    config: FlowTrainConfig,
    history: Vec<IterationRecord>,
}

/// Consecutive classes trained together as one batched model.
#[derive(Debug)]
struct Lane {
    /// Index of the lane's first class among all classes.
    first: usize,
    model: FlowModel,
    adam: ClassAdam,
    /// Every class's training rows, class after class, then one row of zeros (the padding row):
    /// a step's batch is one `index_select` of it.
    train_rows: Tensor,
    /// Where each class's rows start in `train_rows`.
    train_offsets: Vec<i64>,
    /// Per-class views of `train_rows`.
    train: Vec<Tensor>,
    validation: Vec<Tensor>,
    backward: Backward,
}

const TRAINER_FILE: &str = "trainer.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Serialize, Deserialize)]
struct TrainerState {
    config: FlowTrainConfig,
    adam: AdamConfig,
    history: Vec<IterationRecord>,
    /// Held-out validation rows per class (absent in checkpoints of older versions).
    #[serde(default)]
    validation_rows: Option<Vec<i64>>,
}

/// Rows per class of per-class feature matrices.
fn rows_per_class(per_class: &[Tensor]) -> Vec<i64> {
    per_class.iter().map(|t| t.size()[0]).collect()
}

/// How a training step gets its gradients; both give the reference's gradients (to rounding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backward {
    /// libtorch's autograd through [`FlowModel::log_prob_centred`] (any device and kind).
    Autograd,
    /// [`backprop::class_losses_and_gradients`], with products by the `gemm` crate (CPU, float32
    /// or float64), whose forward pass also computes the validation losses. Steps over part of the
    /// classes (the last batches when class sizes differ) still use autograd.
    Explicit,
}

/// The [`Backward`] a trainer uses on `device` for a model of `kind`: explicit where it applies
/// (CPU, float32 or float64), autograd elsewhere.
pub fn default_backward(device: Device, kind: Kind) -> Backward {
    if backprop::explicit_pass_applies(device, kind) {
        Backward::Explicit
    } else {
        Backward::Autograd
    }
}

/// libtorch's intra-op thread count, set for a while: the caller's count comes back when this is
/// dropped, also when a lane panics.
struct ThreadCount(i32);

impl ThreadCount {
    /// Sets the count to `threads`, remembering the current one.
    fn set(threads: i32) -> Self {
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

/// The lanes [`Trainer::new`] uses for `num_classes` classes on `device`: on the CPU one per
/// libtorch thread, at most one per class; elsewhere one.
pub fn default_lanes(device: Device, num_classes: usize) -> usize {
    match device {
        Device::Cpu => libtorch_threads().min(num_classes.max(1)),
        _ => 1,
    }
}

/// `total / rows`, or 0 without rows.
fn per_row(total: f64, rows: i64) -> f64 {
    if rows > 0 {
        total / rows as f64
    } else {
        0.0
    }
}

/// A lane's training pass and validation of iteration `t`: `(sum of training losses, sum of
/// validation losses, validation rows)`.
fn lane_iteration(lane: &mut Lane, config: &FlowTrainConfig, t: usize) -> Result<(f64, f64, i64)> {
    let train = lane.train_pass(config, t)?;
    let (validation, rows) = lane.validation_sums(config.batch_size)?;
    Ok((train, validation, rows))
}

impl Lane {
    fn new(
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
    fn validation_sums(&self, batch_size: usize) -> Result<(f64, i64)> {
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
    fn classes(&self) -> Range<usize> {
        self.first..self.first + self.model.num_classes()
    }
}

impl Trainer {
    /// A trainer for `model` with per-class centred features `train` and `validation`
    /// (`[n_c, d]` each, see [`split_validation`]), in [`default_lanes`] lanes.
    pub fn new(
        model: FlowModel,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        config: FlowTrainConfig,
    ) -> Result<Self> {
        let lanes = default_lanes(model.device(), model.num_classes());
        Self::with_lanes(model, train, validation, config, lanes)
    }

    /// [`Trainer::new`] with the classes shared out over `lanes` lanes (at most one per class;
    /// 1: all classes batched together, on libtorch's threads).
    pub fn with_lanes(
        model: FlowModel,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        config: FlowTrainConfig,
        lanes: usize,
    ) -> Result<Self> {
        let c = model.num_classes();
        if train.len() != c || validation.len() != c {
            return Err(Error::Invalid(format!(
                "{} train and {} validation sets for {c} classes",
                train.len(),
                validation.len()
            )));
        }
        if config.batch_size == 0 {
            return Err(Error::Invalid("batch size must be positive".into()));
        }
        if lanes == 0 {
            return Err(Error::Invalid("a trainer needs at least one lane".into()));
        }
        let d = model.meta.dim as i64;
        let prep = |sets: Vec<Tensor>, what: &str| -> Result<Vec<Tensor>> {
            sets.into_iter()
                .enumerate()
                .map(|(cls, x)| {
                    if x.dim() != 2 || x.size()[1] != d {
                        return Err(Error::Invalid(format!(
                            "{what} features of class {cls} have shape {:?}, expected [n, {d}]",
                            x.size()
                        )));
                    }
                    Ok(x.to_kind(model.kind())
                        .to_device(model.device())
                        .contiguous())
                })
                .collect()
        };
        let mut train = prep(train, "train")?;
        let mut validation = prep(validation, "validation")?;
        if let Some(cls) = train.iter().position(|x| x.size()[0] == 0) {
            return Err(Error::Invalid(format!(
                "class {cls} has no training features"
            )));
        }
        let counts: Vec<usize> = train.iter().map(|x| x.size()[0] as usize).collect();
        let ranges = class_rows::balanced_ranges(&counts, lanes);
        let lanes = if ranges.len() == 1 {
            vec![Lane::new(model, 0, train, validation, config.lr)?]
        } else {
            let mut out = Vec::with_capacity(ranges.len());
            // Taken from the back, so that the remaining sets are the earlier classes'.
            for range in ranges.into_iter().rev() {
                let lane_train = train.split_off(range.start);
                let lane_validation = validation.split_off(range.start);
                let lane_model = model.select_classes(range.clone())?;
                out.push(Lane::new(
                    lane_model,
                    range.start,
                    lane_train,
                    lane_validation,
                    config.lr,
                )?);
            }
            out.reverse();
            out
        };
        Ok(Trainer {
            lanes,
            joined: OnceCell::new(),
            config,
            history: Vec::new(),
        })
    }

    /// The trainer computing its gradients the `backward` way (see [`default_backward`] for
    /// what `new` chooses); errors where [`Backward::Explicit`] does not apply.
    pub fn with_backward(mut self, backward: Backward) -> Result<Self> {
        if backward == Backward::Explicit {
            backprop::check_model(&self.lanes[0].model)?;
        }
        for lane in &mut self.lanes {
            lane.backward = backward;
        }
        Ok(self)
    }

    /// How the trainer computes its gradients.
    pub fn backward(&self) -> Backward {
        self.lanes[0].backward
    }

    /// The model being trained (all classes).
    pub fn model(&self) -> &FlowModel {
        match self.lanes.as_slice() {
            [lane] => &lane.model,
            lanes => self.joined.get_or_init(|| {
                let parts: Vec<&FlowModel> = lanes.iter().map(|l| &l.model).collect();
                FlowModel::join_classes(&parts).expect("lanes of one layer join")
            }),
        }
    }

    /// The trained model (gradient tracking off).
    pub fn into_model(mut self) -> FlowModel {
        let mut model = if self.lanes.len() == 1 {
            self.lanes.remove(0).model
        } else {
            self.model();
            self.joined.take().expect("model() joined the lanes")
        };
        model.set_trainable(false);
        model
    }

    /// The number of Adam steps each class has taken.
    pub fn class_steps(&self) -> Vec<u64> {
        self.lanes
            .iter()
            .flat_map(|l| l.adam.steps.iter().copied())
            .collect()
    }

    /// The number of lanes the classes are shared out over.
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// The settings.
    pub fn config(&self) -> &FlowTrainConfig {
        &self.config
    }

    /// Records of the completed iterations.
    pub fn history(&self) -> &[IterationRecord] {
        &self.history
    }

    /// Number of completed iterations (the index of the next one).
    pub fn iteration(&self) -> usize {
        self.history.len()
    }

    /// Runs one iteration (all classes' training passes, then validation) and records it.
    pub fn train_iteration(&mut self) -> Result<IterationRecord> {
        let t = self.iteration();
        let config = &self.config;
        self.joined = OnceCell::new();
        let sums: Vec<Result<(f64, f64, i64)>> = match self.lanes.as_mut_slice() {
            [lane] => vec![lane_iteration(lane, config, t)],
            lanes => {
                // One intra-op thread per lane while the lanes run, then the caller's again.
                let _restore = ThreadCount::set(1);
                std::thread::scope(|scope| {
                    let running: Vec<_> = lanes
                        .iter_mut()
                        .map(|lane| {
                            scope.spawn(move || {
                                tch::set_num_threads(1);
                                lane_iteration(lane, config, t)
                            })
                        })
                        .collect();
                    running
                        .into_iter()
                        .map(|r| r.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                        .collect()
                })
            }
        };
        let (mut train_loss, mut validation_loss, mut validation_rows) = (0.0, 0.0, 0);
        for lane in sums {
            let (train, validation, rows) = lane?;
            train_loss += train;
            validation_loss += validation;
            validation_rows += rows;
        }
        let n_train: i64 = self
            .lanes
            .iter()
            .flat_map(|l| l.train.iter().map(|x| x.size()[0]))
            .sum();
        let record = IterationRecord {
            iteration: t,
            train_loss: train_loss / n_train as f64,
            validation_loss: per_row(validation_loss, validation_rows),
            monitor: None,
        };
        self.history.push(record.clone());
        Ok(record)
    }

    /// Validation loss per sample over all classes' held-out features (0 when there are none).
    pub fn validation_loss(&self) -> Result<f64> {
        let (mut total, mut count) = (0.0, 0);
        for lane in &self.lanes {
            let (t, n) = lane.validation_sums(self.config.batch_size)?;
            total += t;
            count += n;
        }
        Ok(per_row(total, count))
    }

    /// Smallest and largest per-coordinate std (unbiased) of the latent z over each class's first
    /// `batch_size` training rows (monitoring).
    pub fn latent_std_range(&self) -> Result<(f64, f64)> {
        let bs = self.config.batch_size as i64;
        tch::no_grad(|| {
            let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
            for lane in &self.lanes {
                for (cls, x) in lane.train.iter().enumerate() {
                    let first = x.narrow(0, 0, bs.min(x.size()[0])).unsqueeze(0);
                    if first.size()[1] < 2 {
                        continue;
                    }
                    let (z, _) = lane.model.latent(&first, Some(&[cls as i64]))?;
                    let std = z.std_dim([1i64].as_slice(), true, false);
                    lo = lo.min(f64::try_from(std.min())?);
                    hi = hi.max(f64::try_from(std.max())?);
                }
            }
            Ok((lo, hi))
        })
    }

    /// Runs iterations until `num_iter` are complete. On monitored iterations (`t % monitor_every
    /// == 0`) the latent std range is computed and `auroc` is called with the model (it returns
    /// `None` to skip). `on_iteration` sees every record after it is stored (for progress output and
    /// checkpoints). Stops at the first error, leaving the model at its last good state.
    pub fn run<A, F>(&mut self, num_iter: usize, mut auroc: A, mut on_iteration: F) -> Result<()>
    where
        A: FnMut(&FlowModel) -> Result<Option<f64>>,
        F: FnMut(&Trainer, &IterationRecord) -> Result<()>,
    {
        while self.iteration() < num_iter {
            let mut record = self.train_iteration()?;
            let every = self.config.monitor_every.max(1);
            if record.iteration % every == 0 {
                let (latent_std_min, latent_std_max) = self.latent_std_range()?;
                let value = tch::no_grad(|| auroc(self.model()))?;
                record.monitor = Some(MonitorRecord {
                    auroc: value,
                    latent_std_min,
                    latent_std_max,
                });
                if let Some(last) = self.history.last_mut() {
                    *last = record.clone();
                }
            }
            on_iteration(self, &record)?;
        }
        Ok(())
    }

    /// Writes the model (see [`FlowModel::save`]), the optimizer state and the history to `dir`.
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        self.model().save(dir)?;
        Tensor::write_safetensors(&self.optimizer_state()?, dir.join(OPTIMIZER_FILE))?;
        let validation: Vec<i64> = self
            .lanes
            .iter()
            .flat_map(|l| rows_per_class(&l.validation))
            .collect();
        let state = TrainerState {
            config: self.config.clone(),
            adam: self.lanes[0].adam.config,
            history: self.history.clone(),
            validation_rows: Some(validation),
        };
        let path = dir.join(TRAINER_FILE);
        let json = serde_json::to_string_pretty(&state)
            .map_err(|e| Error::format(&path, e.to_string()))?;
        std::fs::write(&path, json).map_err(|e| Error::io(&path, e))
    }

    /// The Adam state of all classes as [`ClassAdam::state_tensors`] names it.
    fn optimizer_state(&self) -> Result<Vec<(String, Tensor)>> {
        let states: Vec<Vec<(String, Tensor)>> =
            self.lanes.iter().map(|l| l.adam.state_tensors()).collect();
        let counts: Vec<usize> = self.lanes.iter().map(|l| l.model.num_classes()).collect();
        states[0]
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let parts: Vec<&Tensor> = states.iter().map(|s| &s[i].1).collect();
                let joined = if name == STEPS {
                    Tensor::cat(&parts, 0)
                } else {
                    class_rows::join(&parts, &counts)?
                };
                Ok((name.clone(), joined))
            })
            .collect()
    }

    /// Loads the Adam state of all classes (as [`Trainer::optimizer_state`] writes it) into the
    /// lanes.
    fn load_optimizer_state(
        &mut self,
        named: &[(String, Tensor)],
        config: AdamConfig,
    ) -> Result<()> {
        let c: usize = self.lanes.iter().map(|l| l.model.num_classes()).sum();
        for lane in &mut self.lanes {
            let range = lane.classes();
            let part = named
                .iter()
                .map(|(name, t)| {
                    let t = if name == STEPS {
                        if t.size() != [c as i64] {
                            return Err(Error::Invalid(format!(
                                "optimizer state is for {:?} classes, not {c}",
                                t.size()
                            )));
                        }
                        t.narrow(0, range.start as i64, range.len() as i64)
                    } else {
                        class_rows::select(t, c, range.clone())?
                    };
                    Ok((name.clone(), t))
                })
                .collect::<Result<Vec<_>>>()?;
            lane.adam.config = config;
            lane.adam.load_state(&part)?;
        }
        Ok(())
    }

    /// Restores a trainer from a checkpoint written by [`Trainer::save_checkpoint`], with the same
    /// data; training continues exactly where it stopped. Errors when the validation hold-out
    /// differs from the checkpoint's (another `--validation-total`).
    pub fn resume(
        dir: &Path,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        kind: Kind,
        device: Device,
    ) -> Result<Self> {
        let lanes = default_lanes(device, train.len());
        Self::resume_in_lanes(dir, train, validation, kind, device, lanes)
    }

    /// [`Trainer::resume`] in `lanes` lanes (see [`Trainer::with_lanes`]); the checkpoint does
    /// not depend on the lanes it was written from.
    pub fn resume_in_lanes(
        dir: &Path,
        train: Vec<Tensor>,
        validation: Vec<Tensor>,
        kind: Kind,
        device: Device,
        lanes: usize,
    ) -> Result<Self> {
        let path = dir.join(TRAINER_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let state: TrainerState =
            serde_json::from_str(&text).map_err(|e| Error::format(&path, e.to_string()))?;
        if let Some(saved) = &state.validation_rows {
            let now = rows_per_class(&validation);
            if saved != &now {
                return Err(Error::format(
                    dir,
                    format!(
                        "this checkpoint held out {} validation rows ({saved:?} per class), the \
                         resumed run {} ({now:?}); resume with the same --validation-total",
                        saved.iter().sum::<i64>(),
                        now.iter().sum::<i64>()
                    ),
                ));
            }
        }
        let model = FlowModel::load(dir, kind, device)?;
        let mut trainer = Trainer::with_lanes(model, train, validation, state.config, lanes)?;
        let optimizer = dir.join(OPTIMIZER_FILE);
        trainer
            .load_optimizer_state(&Tensor::read_safetensors(&optimizer)?, state.adam)
            .map_err(|e| Error::format(&optimizer, e.to_string()))?;
        trainer.history = state.history;
        Ok(trainer)
    }
}
