//! The classifier stage (`rf-classifier`): trains a classifier from scratch on a data set's train
//! split ([`run`]) and measures a checkpoint's test accuracy ([`evaluate`]).
use std::path::PathBuf;

use super::Common;
use crate::data::{Split, IMAGE_SIDE};
use crate::error::{Error, Result};
use crate::models::train::{
    default_epochs, test_accuracy, train_classifier, ClassifierTrainConfig, RunOptions, Schedule,
    TrainReport, MIN_STEPS,
};
use crate::models::{default_width, NetConfig, NetType};
use crate::progress::Progress;

/// ResNet base width of the demo configuration (the paper's is 64).
pub const DEMO_RESNET_WIDTH: i64 = 4;

/// What to train; [`Default`] is the demo configuration: ResNet-34 at width 4, 3 epochs of SGD
/// (lr 0.1, cosine, momentum 0.9, weight decay 5e-4, batch 128) without augmentation; more epochs
/// on a small set ([`default_epochs`]: at least [`MIN_STEPS`] steps).
#[derive(Debug, Clone)]
pub struct Options {
    /// Run, data and device.
    pub common: Common,
    /// Number of epochs; `None`: [`default_epochs`] of the train set's size and the batch size
    /// (3 for Fashion-MNIST and CIFAR, more for a small set).
    pub epochs: Option<usize>,
    /// ResNet base width or DenseNet growth rate; `None`: [`DEMO_RESNET_WIDTH`] for ResNet, the
    /// paper's growth rate for DenseNet.
    pub width: Option<i64>,
    /// Initial learning rate.
    pub lr: f64,
    /// Learning-rate schedule.
    pub schedule: Schedule,
    /// SGD momentum.
    pub momentum: f64,
    /// L2 weight decay.
    pub weight_decay: f64,
    /// Zero padding before the random 32x32 crop (0: no cropping).
    pub crop_padding: i64,
    /// Random horizontal flips.
    pub flip: bool,
    /// Continue an interrupted run from its per-epoch checkpoint.
    pub resume: bool,
    /// Also measure test accuracy after every epoch.
    pub eval_each_epoch: bool,
    /// Stop after this many epochs, leaving the resumable checkpoint.
    pub stop_after: Option<usize>,
    /// Checkpoint to write; `None`: [`Common::default_classifier_path`].
    pub out: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            common: Common::default(),
            epochs: None,
            width: None,
            lr: 0.1,
            schedule: Schedule::Cosine,
            momentum: 0.9,
            weight_decay: 5e-4,
            crop_padding: 0,
            flip: false,
            resume: false,
            eval_each_epoch: false,
            stop_after: None,
            out: None,
        }
    }
}

/// What [`run`] did.
#[derive(Debug)]
pub struct Summary {
    /// The checkpoint written (or, for a stopped run, the one that will be written).
    pub out: PathBuf,
    /// The network's width.
    pub width: i64,
    /// The number of epochs (given or [`default_epochs`]).
    pub epochs: usize,
    /// Train and test images.
    pub images: (usize, usize),
    /// The training's report.
    pub report: TrainReport,
    /// Figures that mean nothing and what to do ([`super::warnings::chance_warning`]), for the binary to print.
    pub warnings: Vec<String>,
}

/// Trains the classifier of `options` and writes its checkpoint and sidecar.
pub fn run(options: &Options, progress: &mut dyn Progress) -> Result<Summary> {
    let common = &options.common;
    let source = common.dataset_source()?;
    let train_set = source.load(&common.dataroot, Split::Train, IMAGE_SIDE)?;
    let test_set = source.load(&common.dataroot, Split::Test, IMAGE_SIDE)?;
    let width = options.width.unwrap_or(match common.net_type {
        NetType::Resnet => DEMO_RESNET_WIDTH,
        other => default_width(other),
    });
    let batch_size = common.batch_size_or(128);
    let epochs = options
        .epochs
        .unwrap_or_else(|| default_epochs(train_set.len(), batch_size));
    let config = ClassifierTrainConfig {
        net: NetConfig {
            net_type: common.net_type,
            width,
            num_classes: train_set.num_classes as i64,
        },
        dataset: source.name.clone(),
        epochs,
        batch_size,
        lr: options.lr,
        momentum: options.momentum,
        weight_decay: options.weight_decay,
        schedule: options.schedule,
        crop_padding: options.crop_padding,
        flip: options.flip,
        seed: common.seed,
    };
    let out = options
        .out
        .clone()
        .unwrap_or_else(|| common.default_classifier_path());
    let why = if options.epochs.is_some() {
        String::new()
    } else {
        format!(" (the default: at least {MIN_STEPS} steps)")
    };
    progress.note(&format!(
        "training {} (width {width}) on {}: {} train / {} test images, {} epochs of {} steps{why}, \
         {} threads",
        common.net_type.name(),
        source.name,
        train_set.len(),
        test_set.len(),
        config.epochs,
        train_set.len().div_ceil(batch_size),
        tch::get_num_threads()
    ));
    let run_options = RunOptions {
        resume: options.resume,
        eval_each_epoch: options.eval_each_epoch,
        eval_batch_size: 256,
        stop_after: options.stop_after,
    };
    let report = train_classifier(
        &config,
        &train_set,
        &test_set,
        common.device,
        &out,
        &run_options,
        progress,
    )?;
    let warnings = report
        .meta
        .test_accuracy
        .and_then(|a| {
            super::warnings::chance_warning(
                a,
                train_set.num_classes,
                "train longer (--epochs N) or check the data",
            )
        })
        .into_iter()
        .collect();
    Ok(Summary {
        out,
        width,
        epochs,
        images: (train_set.len(), test_set.len()),
        report,
        warnings,
    })
}

/// A checkpoint's accuracy on a data set's test split.
#[derive(Debug, Clone)]
pub struct EvalSummary {
    /// The checkpoint.
    pub checkpoint: PathBuf,
    /// Test images.
    pub images: usize,
    /// Accuracy in [0, 1].
    pub accuracy: f64,
    /// Figures that mean nothing and what to do ([`super::warnings::chance_warning`]), for the binary to print.
    pub warnings: Vec<String>,
}

/// Measures the accuracy of `checkpoint` (default: [`Common::default_classifier_path`]) on the
/// test split of `common.dataset`.
pub fn evaluate(common: &Common, checkpoint: Option<&std::path::Path>) -> Result<EvalSummary> {
    let (path, loaded) = common.load_classifier(checkpoint)?;
    let side = loaded.net.input_side();
    let test_set = common
        .dataset_source()?
        .load(&common.dataroot, Split::Test, side)?;
    if test_set.num_classes as i64 != loaded.meta.num_classes {
        return Err(Error::provenance(
            &path,
            format!(
                "the network has {} classes, dataset `{}` {}",
                loaded.meta.num_classes,
                common.dataset_name(),
                test_set.num_classes
            ),
        ));
    }
    let accuracy = test_accuracy(
        loaded.net.as_ref(),
        &test_set,
        &loaded.meta.normalization,
        common.batch_size_or(256),
        common.device,
    );
    let warnings = super::warnings::chance_warning(
        accuracy,
        test_set.num_classes,
        "retrain longer (rf-classifier train --epochs N) or check that --dataset is the data the \
         classifier was trained on",
    )
    .into_iter()
    .collect();
    Ok(EvalSummary {
        checkpoint: path,
        images: test_set.len(),
        accuracy,
        warnings,
    })
}
