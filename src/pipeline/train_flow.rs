//! The flow-training stage (`rf-train`, `docs/method.md#flow-training`) for one layer: data from
//! the feature folder, the batched trainer, monitoring AUROC on test vs OOD features, checkpoints,
//! history files.
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::warnings::classes_below_batch;
use super::Common;
use crate::detect::flow::{
    checkpoint::{FLOW_PROVENANCE, META_FILE},
    default_backward, default_lanes, default_length_hidden, split_validation, Backward, FlowModel,
    FlowSpec, FlowTrainConfig, IterationRecord, Trainer,
};
use crate::detect::gaussian::{same_whitening, LayerStats};
use crate::error::{Error, Result};
use crate::fit::metrics;
use crate::io::{previous_folder, recover_folder_swap, sibling, write_folder_atomically};
use crate::progress::Progress;
use crate::store::features::{FeatureDir, FeatureManifest};
use crate::store::history::{write_history, AurocHistory};
use crate::store::provenance::{remove_temporary_siblings, FileDigest, Provenance};
use crate::store::training_data::verify_flow_files;
use crate::store::{lock, RunDir};

/// The reference's number of held-out validation samples (divided evenly over the classes).
pub const VALIDATION_TOTAL: usize = 10_000;
/// The fewest held-out validation rows per class by default.
pub const MIN_VALIDATION_PER_CLASS: usize = 10;

/// The default number of held-out validation rows of a layer with `train_rows` train rows over
/// `classes` classes: the reference holds out 10,000 of CIFAR's 50,000, a fifth; so a fifth of the
/// train rows, at most the reference's [`VALIDATION_TOTAL`] (every set of 50,000 train rows or
/// more keeps the reference's value) and at least [`MIN_VALIDATION_PER_CLASS`] per class.
pub fn default_validation_total(train_rows: usize, classes: usize) -> usize {
    (train_rows / 5)
        .min(VALIDATION_TOTAL)
        .max(MIN_VALIDATION_PER_CLASS * classes)
}
/// Rows per kind that the AUROC monitoring uses (`docs/method.md#monitoring-and-checkpoints`): the
/// first 2000 in-distribution test rows and the first 2000 OOD rows.
pub const MONITOR_ROWS: usize = 2000;

/// The stage's options; [`Default`] is the reference's training of layer 0 (1000 iterations).
///
/// Every setting lives in one place: the run, the device, the seed and the batch size in
/// `common` (the batch size defaulting to [`FlowTrainConfig`]'s 256), everything else about the
/// layer's training in `flow`. [`Options::train_config`] puts the trainer's settings together.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Run, device, seed (of the shuffling and the initialisation) and batch size.
    pub common: Common,
    /// Everything else about the layer's training.
    pub flow: FlowTrainOptions,
}

impl Options {
    /// The trainer's settings: the learning rate and monitoring period of `flow`, the batch size
    /// (default 256) and seed of `common`.
    pub fn train_config(&self) -> FlowTrainConfig {
        FlowTrainConfig {
            lr: self.flow.lr,
            batch_size: self
                .common
                .batch_size_or(FlowTrainConfig::default().batch_size),
            seed: self.common.seed,
            monitor_every: self.flow.monitor_every,
        }
    }
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Every iteration's record (those of an earlier, resumed run included).
    pub history: Vec<IterationRecord>,
    /// The last monitored AUROC.
    pub last_auroc: Option<f64>,
    /// The flow's checkpoint folder.
    pub flow_dir: PathBuf,
    /// `--resume` was asked for but there was no checkpoint: training started from iteration 0.
    pub resume_found_nothing: bool,
    /// Figures that mean little ([`super::warnings`]): classes smaller than the batch.
    pub warnings: Vec<String>,
}

/// Runs the stage for `options.flow.layer`, showing one task of `num_iter` steps with the
/// current losses and monitored AUROC.
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    let (common, flow) = (&options.common, &options.flow);
    let config = options.train_config();
    config.check()?;
    flow.check()?;
    let run_dir = common.run_dir();
    let dir = run_dir.flow_dir(flow.layer);
    let resume_found_nothing = flow.resume
        && !dir.join(META_FILE).exists()
        && !previous_folder(&dir).join(META_FILE).exists();
    let classes = run_dir.features().manifest()?.num_classes;
    progress.note(&lanes_note(common.device, classes));
    progress.start(&format!("layer {} flow", flow.layer), flow.num_iter);
    let (mut position, mut last_auroc) = (0, None);
    let mut warnings = Vec::new();
    let history = train_layer(
        &run_dir,
        flow,
        &config,
        common.device,
        &mut warnings,
        &mut |record| {
            if let Some(a) = record.monitor.as_ref().and_then(|m| m.auroc) {
                last_auroc = Some(a);
            }
            progress.advance((record.iteration + 1).saturating_sub(position));
            position = position.max(record.iteration + 1);
            progress.message(&format!(
                "loss {:.3} val {:.3} AUROC {}",
                record.train_loss,
                record.validation_loss,
                last_auroc.map_or("-".to_string(), |a| format!("{:.2}%", 100.0 * a))
            ));
        },
    );
    progress.finish();
    Ok(Summary {
        history: history?,
        last_auroc,
        flow_dir: run_dir.flow_dir(flow.layer),
        resume_found_nothing,
        warnings,
    })
}

/// How the classes' flows are spread over the compute threads and how their gradients are
/// computed (see [`Trainer`]; the stage trains in float32).
fn lanes_note(device: Device, classes: usize) -> String {
    let lanes = default_lanes(device, classes);
    let spread = match device {
        Device::Cpu if lanes > 1 => {
            format!("training {classes} class flows in {lanes} lanes of one compute thread each")
        }
        Device::Cpu => format!(
            "training {classes} class flows together on {} compute thread(s)",
            tch::get_num_threads()
        ),
        other => format!("training {classes} class flows together on {other:?}"),
    };
    match default_backward(device, Kind::Float) {
        Backward::Explicit => format!("{spread}, gradients by the explicit CPU pass"),
        Backward::Autograd => format!("{spread}, gradients by autograd"),
    }
}

/// Options of one layer's training (the seed, batch size and device are [`Options::common`]'s).
#[derive(Debug, Clone)]
pub struct FlowTrainOptions {
    /// Feature layer.
    pub layer: usize,
    /// Train until this many iterations are done.
    pub num_iter: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Monitoring period in iterations; iteration `t` is monitored when `t % monitor_every == 0`.
    pub monitor_every: usize,
    /// Hidden width factor (default: the reference's table).
    pub length_hidden: Option<f64>,
    /// Checkpoint every this many iterations (and at the end).
    pub checkpoint_every: usize,
    /// Continue from the layer's checkpoint.
    pub resume: bool,
    /// Held-out validation samples in total, divided evenly over the classes; `None`:
    /// [`default_validation_total`] (the reference's 10,000 on sets of 50,000 train rows or more).
    pub validation_total: Option<usize>,
    /// OOD set whose features are monitored (default: the first prepared one).
    pub monitor_ood: Option<String>,
}

impl FlowTrainOptions {
    /// Checks the values that mean nothing (the learning rate, batch size and monitoring period
    /// are [`FlowTrainConfig::check`]'s), naming the flag.
    pub fn check(&self) -> Result<()> {
        if self.num_iter == 0 {
            return Err(Error::bad_option(
                "--num-iter",
                "0 iterations would save an untrained flow (which rf-score would then use); give \
                 at least 1",
            ));
        }
        if self.checkpoint_every == 0 {
            return Err(Error::bad_option(
                "--checkpoint-every",
                "must be at least 1",
            ));
        }
        if self.validation_total == Some(0) {
            return Err(Error::bad_option(
                "--validation-total",
                "must be at least 1 (the validation loss needs held-out rows)",
            ));
        }
        if let Some(h) = self.length_hidden {
            if !(h.is_finite() && h > 0.0) {
                return Err(Error::bad_option(
                    "--length-hidden",
                    format!("must be a finite positive number, got {h}"),
                ));
            }
        }
        Ok(())
    }
}

impl Default for FlowTrainOptions {
    /// The reference's settings for layer 0: 1000 iterations, learning rate 1e-5, monitoring
    /// every 20 iterations, checkpoints every 500, 10,000 validation samples, the first prepared
    /// OOD set monitored.
    fn default() -> Self {
        let trainer = FlowTrainConfig::default();
        FlowTrainOptions {
            layer: 0,
            num_iter: 1000,
            lr: trainer.lr,
            monitor_every: trainer.monitor_every,
            length_hidden: None,
            checkpoint_every: 500,
            resume: false,
            validation_total: None,
            monitor_ood: None,
        }
    }
}

/// Per-class train features of `layer`, centred by their class means, in stored order.
fn centred_per_class(
    features: &FeatureDir,
    layer: usize,
    stats: &LayerStats,
) -> Result<Vec<Tensor>> {
    let manifest = features.manifest()?;
    let x = features
        .read_layer(&manifest, "train", layer)?
        .to_kind(Kind::Double);
    let labels = features.read_labels(&manifest, "train")?;
    (0..manifest.num_classes as i64)
        .map(|c| {
            let rows = labels.eq(c).nonzero().squeeze_dim(1);
            if rows.size()[0] == 0 {
                return Err(Error::format(
                    features.labels_path("train"),
                    format!("class {c} has no train features"),
                ));
            }
            Ok((x.index_select(0, &rows) - stats.means.get(c)).to_kind(Kind::Float))
        })
        .collect()
}

/// Writes the trainer's checkpoint and its provenance (with every file's digest) into the
/// layer's flow folder `dir` through a swap, so that a crash never leaves a half-written
/// checkpoint in place.
fn save_checkpoint(trainer: &Trainer, provenance: &Provenance, dir: &Path) -> Result<()> {
    write_folder_atomically(dir, |partial| {
        trainer.save_checkpoint(partial)?;
        let mut provenance = provenance.clone();
        for entry in std::fs::read_dir(partial).map_err(|e| Error::io(partial, e))? {
            let path = entry.map_err(|e| Error::io(partial, e))?.path();
            if path.is_file() {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                provenance.files.insert(name, FileDigest::of(&path)?);
            }
        }
        crate::io::write_json(&partial.join(FLOW_PROVENANCE), &provenance)
    })
}

/// What the flow of `layer` is trained from: the classifier, the layer's statistics, train
/// features and labels (their digests as the feature manifest records them) and the options.
fn flow_provenance(
    manifest: &FeatureManifest,
    features: &FeatureDir,
    layer: usize,
    options: &FlowTrainOptions,
    config: &FlowTrainConfig,
    validation_total: usize,
) -> Result<Provenance> {
    let mut provenance = Provenance::new("rf-train", &manifest.provenance.classifier_sha256);
    for path in [
        features.stats_path(layer),
        features.layer_path("train", layer),
        features.labels_path("train"),
    ] {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(digest) = manifest.provenance.files.get(&name) {
            provenance
                .inputs
                .insert(format!("features/{name}"), digest.sha256.clone());
        }
    }
    provenance.option("lr", config.lr)?;
    provenance.option("batch_size", config.batch_size)?;
    provenance.option("seed", config.seed)?;
    provenance.option("length_hidden", options.length_hidden)?;
    provenance.option("validation_total", validation_total)?;
    Ok(provenance)
}

/// Writes the monitoring AUROC history (for plots) and the loss history as `.npy`
/// (`[iteration, train loss, validation loss]` rows).
fn write_histories(
    run: &RunDir,
    layer: usize,
    ood: &str,
    history: &[IterationRecord],
) -> Result<()> {
    let monitored: Vec<(usize, f64)> = history
        .iter()
        .filter_map(|r| {
            r.monitor
                .as_ref()
                .and_then(|m| m.auroc)
                .map(|a| (r.iteration, a))
        })
        .collect();
    write_history(
        &run.history_path(layer),
        &AurocHistory {
            ood: ood.to_string(),
            iteration: monitored.iter().map(|m| m.0).collect(),
            auroc: monitored.iter().map(|m| m.1).collect(),
        },
    )?;
    let rows: Vec<f64> = history
        .iter()
        .flat_map(|r| [r.iteration as f64, r.train_loss, r.validation_loss])
        .collect();
    let losses = Tensor::from_slice(&rows).view([history.len() as i64, 3]);
    crate::io::write_npy_f64(&run.loss_history_path(layer), &losses)
}

/// Refuses to resume a checkpoint made from other features (another whitening of the layer) or
/// with another learning rate, batch size or seed: continuing it would silently mix two runs.
fn check_resumable(
    trainer: &Trainer,
    stats: &LayerStats,
    config: &FlowTrainConfig,
    dir: &Path,
) -> Result<()> {
    if !same_whitening(&trainer.model().a_inv, &stats.whitening.a_inv) {
        return Err(Error::provenance(
            dir,
            "this flow was trained on other features (the layer's whitening differs, e.g. after a new \
             classifier or rf-prepare run); train without --resume to start afresh"
                .to_string(),
        ));
    }
    let saved = trainer.config();
    let weights_of = |c: &FlowTrainConfig| (c.lr, c.batch_size, c.seed);
    if weights_of(saved) != weights_of(config) {
        return Err(Error::provenance(
            dir,
            format!(
                "this flow was trained with lr {}, batch size {}, seed {}, not the requested lr {}, \
                 batch size {}, seed {}; resume with the same settings or train without --resume",
                saved.lr, saved.batch_size, saved.seed, config.lr, config.batch_size, config.seed
            ),
        ));
    }
    Ok(())
}

/// The OOD set whose features the training monitors: `requested` (`--monitor-ood`), which must
/// be one of the prepared sets, or the first prepared one.
fn monitored_set(
    manifest: &FeatureManifest,
    features: &FeatureDir,
    requested: Option<&str>,
) -> Result<String> {
    let prepared = manifest.ood_names();
    match requested {
        Some(name) if prepared.iter().any(|p| p == name) => Ok(name.to_string()),
        Some(name) => Err(Error::bad_option(
            "--monitor-ood",
            format!(
                "`{name}` is not an OOD set of {} (prepared: {}); name one of those, or prepare \
                 `{name}` with rf-prepare --ood",
                features.manifest_path().display(),
                if prepared.is_empty() {
                    "none".to_string()
                } else {
                    prepared.join(", ")
                }
            ),
        )),
        None => prepared.into_iter().next().ok_or_else(|| {
            Error::missing(
                features.manifest_path(),
                "no OOD features prepared to monitor; run rf-prepare with --ood",
            )
        }),
    }
}

/// Trains (or resumes) the flow of one layer of `run` with the trainer's settings `config` on
/// `device`; `on_iteration` sees every iteration's record.
fn train_layer(
    run: &RunDir,
    options: &FlowTrainOptions,
    config: &FlowTrainConfig,
    device: Device,
    warnings: &mut Vec<String>,
    on_iteration: &mut dyn FnMut(&IterationRecord),
) -> Result<Vec<IterationRecord>> {
    let features = run.features();
    let manifest = features.manifest()?;
    let l = options.layer;
    if l >= manifest.layer_channels.len() {
        return Err(Error::bad_option(
            "--layer",
            format!(
                "{l} is out of range: the {} has feature layers 0 to {}",
                manifest.net_type.name(),
                manifest.layer_channels.len() - 1
            ),
        ));
    }
    let ood = monitored_set(&manifest, &features, options.monitor_ood.as_deref())?;
    let stats = features.read_stats(&manifest, l)?;
    let per_class = centred_per_class(&features, l, &stats)?;
    let rows: Vec<usize> = per_class.iter().map(|x| x.size()[0] as usize).collect();
    let validation_total = options
        .validation_total
        .unwrap_or_else(|| default_validation_total(rows.iter().sum(), manifest.num_classes));
    let (validation, train) = split_validation(&per_class, validation_total)?;
    let train_rows: Vec<usize> = train.iter().map(|x| x.size()[0] as usize).collect();
    warnings.extend(classes_below_batch(&train_rows, config.batch_size));
    let dir = run.flow_dir(l);
    // A second rf-train on the same layer stops at once.
    let _lock = lock::exclusive(&sibling(&dir, "lock"), "rf-train is training this layer")?;
    recover_folder_swap(&dir, |old| old.join(META_FILE).exists())?;
    remove_temporary_siblings(&run.history_path(l))?;
    remove_temporary_siblings(&run.loss_history_path(l))?;
    let provenance = flow_provenance(&manifest, &features, l, options, config, validation_total)?;

    let take = |set: &str| -> Result<Tensor> {
        let x = features.read_layer(&manifest, set, l)?;
        let n = x.size()[0].min(MONITOR_ROWS as i64);
        Ok(x.narrow(0, 0, n).to_device(device))
    };
    let (test_x, ood_x) = (take("test")?, take(&format!("ood_{ood}"))?);
    let means = stats.means.to_kind(Kind::Float).to_device(device);

    let mut trainer = if options.resume && dir.join(META_FILE).exists() {
        verify_flow_files(&dir, l)?;
        let trainer = Trainer::resume(&dir, train, validation, Kind::Float, device)?;
        check_resumable(&trainer, &stats, config, &dir)?;
        trainer
    } else {
        let spec = FlowSpec {
            num_classes: manifest.num_classes,
            length_hidden: options.length_hidden.unwrap_or_else(|| {
                default_length_hidden(manifest.net_type.name(), &manifest.dataset_name(), l)
            }),
            layer: l,
            net: manifest.net_type.name().to_string(),
            dataset: manifest.dataset_name(),
        };
        let model = FlowModel::init(&spec, &stats.whitening, config.seed, Kind::Float, device)?;
        Trainer::new(model, train, validation, config.clone())?
    };
    let auroc = |model: &FlowModel| -> Result<Option<f64>> {
        let best = |x: &Tensor| -> Result<Vec<f64>> {
            let s = model.log_prob_chunked(x, &means, 1000)?.max_dim(1, false).0;
            Ok(Vec::<f64>::try_from(
                s.to_kind(Kind::Double).to_device(Device::Cpu),
            )?)
        };
        Ok(Some(
            metrics::compute(&best(&test_x)?, &best(&ood_x)?)?.auroc,
        ))
    };
    let every = options.checkpoint_every.max(1);
    let result = trainer.run(options.num_iter, auroc, |t, record| {
        on_iteration(record);
        if record.iteration % every == 0 {
            save_checkpoint(t, &provenance, &dir)?;
            write_histories(run, l, &ood, t.history())?;
        }
        Ok(())
    });
    result?;
    save_checkpoint(&trainer, &provenance, &dir)?;
    write_histories(run, l, &ood, trainer.history())?;
    Ok(trainer.history().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed and batch size come from `common` only (there is no other place to set them,
    /// nor the device), the learning rate and monitoring period from `flow` only.
    #[test]
    fn each_trainer_setting_comes_from_one_place() {
        let mut options = Options::default();
        assert_eq!(options.train_config(), FlowTrainConfig::default());
        options.common.seed = 7;
        options.common.batch_size = Some(64);
        options.flow.lr = 1e-3;
        options.flow.monitor_every = 5;
        let want = FlowTrainConfig {
            lr: 1e-3,
            batch_size: 64,
            seed: 7,
            monitor_every: 5,
        };
        assert_eq!(options.train_config(), want);
        options.common.batch_size = Some(0);
        let err = options.train_config().check().unwrap_err().to_string();
        assert!(err.contains("--batch-size"), "{err}");
    }
}
