//! What training a layer's flows is set up with and what it logs: the settings, the validation
//! hold-out, every pass's data order and the per-iteration records
//! (`docs/method.md#flow-training`).
use crate::error::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::Tensor;

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
            return Err(Error::bad_option(
                "--lr",
                format!("must be a finite positive number, got {}", self.lr),
            ));
        }
        if self.batch_size == 0 {
            return Err(Error::bad_option("--batch-size", "must be at least 1"));
        }
        if self.monitor_every == 0 {
            return Err(Error::bad_option("--monitor-every", "must be at least 1"));
        }
        Ok(())
    }
}

/// Splits each class's centred train features into (validation, train): the first
/// `floor(num_validation / C)` rows are held out (`docs/method.md#validation-hold-out`). Fails when
/// a class would have no training rows left.
pub fn split_validation(
    per_class: &[Tensor],
    num_validation: usize,
) -> Result<(Vec<Tensor>, Vec<Tensor>)> {
    if per_class.is_empty() {
        return Err(Error::BadData("no classes to train".into()));
    }
    let per = (num_validation / per_class.len()) as i64;
    let mut validation = Vec::new();
    let mut train = Vec::new();
    for (c, x) in per_class.iter().enumerate() {
        let n = x.size()[0];
        if n <= per {
            return Err(Error::bad_option(
                "--validation-total",
                format!(
                    "class {c} has {n} train samples, not more than the {per} held out for \
                 validation (--validation-total {num_validation} over {} classes); lower \
                 --validation-total or prepare more train images",
                    per_class.len()
                ),
            ));
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
