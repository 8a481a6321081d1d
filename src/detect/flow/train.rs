//! Training all class flows of one layer at once (`docs/method.md#flow-training`).
//!
//! One iteration is, for every class, one pass over its shuffled training batches (one Adam step
//! per batch) followed by the validation loss over its held-out features. The classes are trained
//! together: step `j` of an iteration runs batch `j` of every class that has one through the batched
//! model (padded to a common size, padded rows weigh zero), and the per-class Adam
//! ([`super::adam::ClassAdam`]) updates only those classes. The result equals training each class
//! alone with the same data order ([`super::epoch_order`]). On the CPU the classes are shared out over
//! lanes, one per thread (see [`Trainer`], `lanes`); checkpoints and resuming are in `resume`.
use super::backprop::{self, Backward};
use super::class_rows;
use super::lanes::{default_lanes, lane_iteration, per_row, Lane, ThreadCount};
use super::model::FlowModel;
use super::train_config::{FlowTrainConfig, IterationRecord, MonitorRecord};
use crate::error::{Error, Result};
use std::cell::OnceCell;
use tch::Tensor;

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
    pub(super) lanes: Vec<Lane>,
    /// All lanes' classes as one model, built when asked for and dropped when training changes it.
    joined: OnceCell<FlowModel>,
    pub(super) config: FlowTrainConfig,
    pub(super) history: Vec<IterationRecord>,
}

impl Trainer {
    /// A trainer for `model` with per-class centred features `train` and `validation`
    /// (`[n_c, d]` each, see [`super::split_validation`]), in [`default_lanes`] lanes.
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
            return Err(Error::Shape(format!(
                "{} train and {} validation sets for {c} classes",
                train.len(),
                validation.len()
            )));
        }
        if config.batch_size == 0 {
            return Err(Error::bad_option("--batch-size", "must be positive"));
        }
        if lanes == 0 {
            return Err(Error::bad_option(
                "lanes",
                "a trainer needs at least one lane",
            ));
        }
        let d = model.meta.dim as i64;
        let prep = |sets: Vec<Tensor>, what: &str| -> Result<Vec<Tensor>> {
            sets.into_iter()
                .enumerate()
                .map(|(cls, x)| {
                    if x.dim() != 2 || x.size()[1] != d {
                        return Err(Error::Shape(format!(
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
            return Err(Error::BadData(format!(
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

    /// The trainer computing its gradients the `backward` way (see [`super::default_backward`] for
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
}
