//! Training a classifier from scratch (SGD, cosine or step schedule, crop/flip augmentation),
//! with a resumable checkpoint after every epoch, BatchNorm statistics recalibrated before every
//! evaluation and the final checkpoint, and measuring test accuracy.
use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{nn::VarStore, Device, Kind, Tensor};

mod length;
pub mod recalibrate;
mod sgd;

use crate::data::{Batches, ImageSet, Normalization};
use crate::error::{Error, Result};
use crate::models::checkpoint::{
    assign_strict, read_tensors, save_checkpoint, write_tensors, CheckpointMeta,
};
use crate::models::{Classifier, NetConfig};
use crate::progress::Progress;
pub use length::{default_epochs, MIN_STEPS, REFERENCE_EPOCHS};
pub use recalibrate::recalibrate_batch_norm;
use sgd::Sgd;

/// Learning-rate schedule over the whole run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// Cosine decay from the initial rate to zero, updated every step.
    Cosine,
    /// The rate times 0.1 after 50% and again after 75% of the epochs.
    Step,
}

impl std::str::FromStr for Schedule {
    type Err = String;

    /// Parses `cosine` or `step`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cosine" => Ok(Schedule::Cosine),
            "step" => Ok(Schedule::Step),
            _ => Err(format!("unknown schedule `{s}`; expected cosine or step")),
        }
    }
}

impl std::fmt::Display for Schedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Schedule::Cosine => "cosine",
            Schedule::Step => "step",
        })
    }
}

/// Everything that defines a training run (stored with the resumable checkpoint).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassifierTrainConfig {
    /// The network to train.
    pub net: NetConfig,
    /// Registry name of the training set.
    pub dataset: String,
    /// Number of epochs ([`default_epochs`] gives the default).
    pub epochs: usize,
    /// Mini-batch size.
    pub batch_size: usize,
    /// Initial learning rate.
    pub lr: f64,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// Zero padding (pixels) before the random 32x32 crop; 0 disables cropping.
    pub crop_padding: i64,
    /// Random horizontal flips.
    pub flip: bool,
    /// Seed of initialisation, shuffling and augmentation.
    pub seed: u64,
}

impl ClassifierTrainConfig {
    /// Checks the numeric settings.
    pub fn validate(&self) -> Result<()> {
        self.net.validate()?;
        if self.epochs == 0 {
            return Err(Error::bad_option("--epochs", "must be positive"));
        }
        if self.batch_size == 0 {
            return Err(Error::bad_option("--batch-size", "must be positive"));
        }
        if self.lr.is_nan() || self.lr <= 0.0 {
            return Err(Error::bad_option(
                "--lr",
                format!("must be positive, got {}", self.lr),
            ));
        }
        let non_negative = [
            ("--momentum", self.momentum < 0.0, self.momentum),
            ("--weight-decay", self.weight_decay < 0.0, self.weight_decay),
            (
                "--crop-padding",
                self.crop_padding < 0,
                self.crop_padding as f64,
            ),
        ];
        if let Some((option, _, value)) = non_negative.into_iter().find(|(_, bad, _)| *bad) {
            return Err(Error::bad_option(
                option,
                format!("must not be negative, got {value}"),
            ));
        }
        Ok(())
    }

    /// Learning rate at `step` of `total` steps, in epoch `epoch`.
    pub fn learning_rate(&self, epoch: usize, step: usize, total: usize) -> f64 {
        match self.schedule {
            Schedule::Cosine => {
                0.5 * self.lr * (1.0 + (std::f64::consts::PI * step as f64 / total as f64).cos())
            }
            Schedule::Step => {
                let passed = [0.5, 0.75]
                    .iter()
                    .filter(|&&m| epoch as f64 >= m * self.epochs as f64)
                    .count();
                self.lr * 0.1f64.powi(passed as i32)
            }
        }
    }
}

/// Statistics of one finished epoch.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EpochLog {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss.
    pub loss: f64,
    /// Training accuracy (augmented images, train-mode BatchNorm).
    pub train_accuracy: f64,
    /// Test accuracy when measured after this epoch.
    pub test_accuracy: Option<f64>,
    /// Wall time of the epoch in seconds.
    pub seconds: f64,
}

/// The state saved after every epoch (JSON part; weights and momentum go to a safetensors file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct ResumeState {
    config: ClassifierTrainConfig,
    normalization: Normalization,
    epochs_done: usize,
    history: Vec<EpochLog>,
}

/// The outcome of [`train_classifier`].
#[derive(Debug)]
pub struct TrainReport {
    /// The sidecar written with the final checkpoint (test accuracy included; BatchNorm statistics
    /// recalibrated over the train set).
    pub meta: CheckpointMeta,
    /// Per-epoch statistics (including epochs of an earlier, resumed run).
    pub history: Vec<EpochLog>,
    /// Wall time of this invocation's training epochs, in seconds.
    pub seconds: f64,
    /// False when the run stopped early ([`RunOptions::stop_after`]); then only the resumable
    /// checkpoint was written and `meta.test_accuracy` is `None`.
    pub finished: bool,
}

/// Paths of the mid-run checkpoint of a run whose final checkpoint is `out`.
pub fn resume_paths(out: &Path) -> (PathBuf, PathBuf) {
    (
        out.with_extension("resume.safetensors"),
        out.with_extension("resume.json"),
    )
}

/// Options of a training invocation that do not change its result.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Continue from the mid-run checkpoint next to `out`.
    pub resume: bool,
    /// Measure test accuracy after every epoch (not only at the end).
    pub eval_each_epoch: bool,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Stop (leaving the resumable checkpoint) after this many epochs of this invocation.
    pub stop_after: Option<usize>,
}

/// Trains `config.net` on `train`, evaluates it on `test`, and writes the checkpoint `out` (+ sidecar).
/// After every epoch a resumable checkpoint is written next to `out`; it is removed at the end.
pub fn train_classifier(
    config: &ClassifierTrainConfig,
    train: &ImageSet,
    test: &ImageSet,
    device: Device,
    out: &Path,
    options: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<TrainReport> {
    config.validate()?;
    if train.num_classes as i64 != config.net.num_classes {
        return Err(Error::Shape(format!(
            "dataset `{}` has {} classes, the network {}",
            train.name, train.num_classes, config.net.num_classes
        )));
    }
    let vs = VarStore::new(device);
    let net = config.net.build_seeded(&vs, config.seed)?;
    let mut sgd = Sgd::new(&vs, config.momentum, config.weight_decay);
    let (resume_weights, resume_json) = resume_paths(out);
    let mut state = ResumeState {
        config: config.clone(),
        normalization: train.channel_stats(),
        epochs_done: 0,
        history: Vec::new(),
    };
    if options.resume {
        state = load_resume(&resume_weights, &resume_json, config, &vs, &sgd)?;
        progress.note(&format!(
            "resuming after epoch {} of {}",
            state.epochs_done, config.epochs
        ));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let norm = state.normalization;
    let steps_per_epoch = train.len().div_ceil(config.batch_size);
    let total_steps = steps_per_epoch * config.epochs;
    let started = Instant::now();
    let first_epoch = state.epochs_done;
    for epoch in state.epochs_done..config.epochs {
        let epoch_start = Instant::now();
        progress.start(
            &format!("epoch {}/{}", epoch + 1, config.epochs),
            steps_per_epoch,
        );
        let mut rng = ChaCha8Rng::seed_from_u64(
            config
                .seed
                .wrapping_mul(1_000_003)
                .wrapping_add(epoch as u64),
        );
        let mut order: Vec<i64> = (0..train.len() as i64).collect();
        order.shuffle(&mut rng);
        let (mut loss_sum, mut correct, mut seen) = (0.0, 0i64, 0usize);
        for (b, chunk) in order.chunks(config.batch_size).enumerate() {
            let index = Tensor::from_slice(chunk);
            let images = augment(
                &train.images.index_select(0, &index),
                config.crop_padding,
                config.flip,
                &mut rng,
            );
            let x = norm.apply(&images.to_device(device));
            let y = train.labels.index_select(0, &index).to_device(device);
            let logits = net.forward_t(&x, true);
            let loss = logits.cross_entropy_for_logits(&y);
            sgd.zero_grad();
            loss.backward();
            sgd.step(config.learning_rate(epoch, epoch * steps_per_epoch + b, total_steps));
            let n = chunk.len();
            loss_sum += loss.double_value(&[]) * n as f64;
            correct += logits
                .argmax(1, false)
                .eq_tensor(&y)
                .sum(Kind::Int64)
                .int64_value(&[]);
            seen += n;
            progress.advance(1);
            progress.message(&format!(
                "loss {:.4} acc {:.2}%",
                loss_sum / seen as f64,
                100.0 * correct as f64 / seen as f64
            ));
        }
        progress.finish();
        let test_accuracy = if options.eval_each_epoch && epoch + 1 < config.epochs {
            recalibrate(net.as_ref(), &vs, train, &norm, config, progress)?;
            Some(test_accuracy(
                net.as_ref(),
                test,
                &norm,
                options.eval_batch_size,
                device,
            ))
        } else {
            None
        };
        let log = EpochLog {
            epoch: epoch + 1,
            loss: loss_sum / seen as f64,
            train_accuracy: correct as f64 / seen as f64,
            test_accuracy,
            seconds: epoch_start.elapsed().as_secs_f64(),
        };
        progress.note(&format!(
            "epoch {}/{}: loss {:.4}, train acc {:.2}%{}, {:.0} s",
            log.epoch,
            config.epochs,
            log.loss,
            100.0 * log.train_accuracy,
            log.test_accuracy
                .map(|a| format!(", test acc {:.2}%", 100.0 * a))
                .unwrap_or_default(),
            log.seconds
        ));
        state.history.push(log);
        state.epochs_done = epoch + 1;
        save_resume(&resume_weights, &resume_json, &state, &vs, &sgd)?;
        let run_here = state.epochs_done - first_epoch;
        if options.stop_after.is_some_and(|n| run_here >= n) && state.epochs_done < config.epochs {
            return Ok(TrainReport {
                meta: CheckpointMeta::new(config.net, norm, &config.dataset),
                history: state.history,
                seconds: started.elapsed().as_secs_f64(),
                finished: false,
            });
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    recalibrate(net.as_ref(), &vs, train, &norm, config, progress)?;
    let accuracy = test_accuracy(net.as_ref(), test, &norm, options.eval_batch_size, device);
    if let Some(last) = state.history.last_mut() {
        last.test_accuracy = Some(accuracy);
    }
    let mut meta = CheckpointMeta::new(config.net, norm, &config.dataset);
    meta.test_accuracy = Some(accuracy);
    meta.batch_norm_recalibrated = true;
    save_checkpoint(out, &vs, &meta)?;
    let _ = std::fs::remove_file(&resume_weights);
    let _ = std::fs::remove_file(&resume_json);
    Ok(TrainReport {
        meta,
        history: state.history,
        seconds,
        finished: true,
    })
}

/// [`recalibrate_batch_norm`] over the train set with the training's batch size and a shuffle of
/// its own (from the training's seed), noted in the log.
fn recalibrate(
    net: &dyn Classifier,
    vs: &VarStore,
    train: &ImageSet,
    norm: &Normalization,
    config: &ClassifierTrainConfig,
    progress: &mut dyn Progress,
) -> Result<()> {
    let started = Instant::now();
    let seed = config.seed.wrapping_mul(1_000_003).wrapping_sub(1);
    let count = recalibrate_batch_norm(net, vs, train, norm, config.batch_size, seed, progress)?;
    progress.note(&format!(
        "BatchNorm statistics of {count} layers recalibrated: exact mean and variance over the {} \
         train images, {:.0} s",
        train.len(),
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Accuracy in [0, 1] of `net` (eval mode) on `set` normalised with `norm`.
pub fn test_accuracy(
    net: &dyn Classifier,
    set: &ImageSet,
    norm: &Normalization,
    batch_size: usize,
    device: Device,
) -> f64 {
    let correct: i64 = tch::no_grad(|| {
        Batches::new(set, *norm, batch_size.max(1), device, None)
            .map(|b| {
                net.forward_t(&b.images, false)
                    .argmax(1, false)
                    .eq_tensor(&b.labels)
                    .sum(Kind::Int64)
                    .int64_value(&[])
            })
            .sum()
    });
    correct as f64 / set.len() as f64
}

/// Random crop with `padding` zero pixels around `u8` images `[B,3,S,S]`, and random horizontal
/// flips when `flip`; one draw per image from `rng`.
pub fn augment(images: &Tensor, padding: i64, flip: bool, rng: &mut impl Rng) -> Tensor {
    if padding == 0 && !flip {
        return images.shallow_clone();
    }
    let padded = if padding > 0 {
        images.constant_pad_nd([padding, padding, padding, padding])
    } else {
        images.shallow_clone()
    };
    let side = images.size()[3];
    let crops: Vec<Tensor> = (0..images.size()[0])
        .map(|i| {
            let (dy, dx) = (
                rng.random_range(0..=2 * padding),
                rng.random_range(0..=2 * padding),
            );
            let crop = padded.get(i).narrow(1, dy, side).narrow(2, dx, side);
            if flip && rng.random_bool(0.5) {
                crop.flip([2])
            } else {
                crop
            }
        })
        .collect();
    Tensor::stack(&crops, 0)
}

fn save_resume(
    weights: &Path,
    json: &Path,
    state: &ResumeState,
    vs: &VarStore,
    sgd: &Sgd,
) -> Result<()> {
    let mut tensors: std::collections::HashMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (format!("model/{n}"), t))
        .collect();
    tensors.extend(
        sgd.buffers()
            .into_iter()
            .map(|(n, t)| (format!("momentum/{n}"), t)),
    );
    write_tensors(weights, &tensors)?;
    crate::io::write_json(json, state)
}

fn load_resume(
    weights: &Path,
    json: &Path,
    config: &ClassifierTrainConfig,
    vs: &VarStore,
    sgd: &Sgd,
) -> Result<ResumeState> {
    let text = std::fs::read_to_string(json).map_err(|e| Error::io(json, e))?;
    let state: ResumeState = serde_json::from_str(&text)
        .map_err(|e| Error::format(json, format!("not a resume state: {e}")))?;
    if &state.config != config {
        return Err(Error::provenance(
            json,
            format!(
                "the interrupted run used different settings; rerun with the same flags or without --resume.\nstored: {:?}\ngiven:  {:?}",
                state.config, config
            ),
        ));
    }
    let mut model = std::collections::HashMap::new();
    let mut momentum = std::collections::HashMap::new();
    for (name, t) in read_tensors(weights)? {
        if let Some(n) = name.strip_prefix("model/") {
            model.insert(n.to_string(), t);
        } else if let Some(n) = name.strip_prefix("momentum/") {
            momentum.insert(n.to_string(), t);
        } else {
            return Err(Error::format(weights, format!("unexpected tensor {name}")));
        }
    }
    assign_strict(&vs.variables(), &model, weights)?;
    assign_strict(&sgd.buffers(), &momentum, weights)?;
    Ok(state)
}
