//! Your own small data set with default options: `rf-classifier train` on an image folder of 3
//! classes with 150 train and 60 test images each trains long enough (the default epochs give at
//! least MIN_STEPS steps), recalibrates its BatchNorm statistics and learns the classes; a test
//! accuracy at chance is named in a warning.
use std::path::Path;
use std::process::{Command, Output};

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use resflow::data::Normalization;
use resflow::models::train::default_epochs;
use resflow::models::{save_checkpoint, CheckpointMeta, NetConfig, NetType};
use tch::{nn::VarStore, Device, Tensor};

/// An ImageFolder tree under `root` with 3 classes (`red`, `green`, `blue`: 32x32 images of their
/// colour plus uniform noise of +-40 grey levels per pixel from a seeded generator), `train` and
/// `test` images per class.
fn colour_folder(root: &Path, train: usize, test: usize) {
    tinted_folder(root, train, test, [50, 40], [150..=150, 150..=150], 21);
}

/// An ImageFolder tree under `root` with 3 classes `red`, `green` and `blue` of `train` and
/// `test` 32x32 images each: every channel at grey level `base`, the class's own channel lifted by
/// a level drawn for each image from `lifts[0]` (train) or `lifts[1]` (test), plus uniform noise
/// of +-`noise` grey levels per pixel and channel, from a generator seeded with `seed`
/// (`[base, noise]`; the train images are drawn first).
pub fn tinted_folder(
    root: &Path,
    train: usize,
    test: usize,
    [base, noise]: [i32; 2],
    lifts: [std::ops::RangeInclusive<i32>; 2],
    seed: u64,
) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let tint = |channel: usize, lift: i32| {
        let mut colour = [base; 3];
        colour[channel] += lift;
        colour
    };
    for ((split, n), lift) in [("train", train), ("test", test)].into_iter().zip(lifts) {
        for (channel, name) in ["red", "green", "blue"].into_iter().enumerate() {
            let dir = root.join(split).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let colour = tint(channel, rng.random_range(lift.clone()));
                let image = RgbImage::from_fn(32, 32, |_, _| {
                    Rgb(colour
                        .map(|v: i32| (v + rng.random_range(-noise..=noise)).clamp(0, 255) as u8))
                });
                image.save(dir.join(format!("{i}.png"))).unwrap();
            }
        }
    }
}

/// Runs `rf-classifier` with `args`; panics with its output unless it succeeds.
fn rf_classifier(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_rf-classifier"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rf-classifier {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn warnings(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn default_options_train_a_small_image_folder_well_above_chance() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("colours");
    colour_folder(&data, 150, 60);
    let dataset = format!("colours={}", data.display());
    let weights = dir.path().join("colours.safetensors");
    let weights_arg = weights.display().to_string();
    let out = rf_classifier(&["train", "--dataset", &dataset, "--out", &weights_arg]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 450 images at batch 128: 4 steps per epoch, so the default is 25 epochs (100 steps).
    let epochs = default_epochs(450, 128);
    assert_eq!(epochs, 25);
    assert!(
        stdout.contains(&format!("after {epochs} epochs")),
        "{stdout}"
    );
    assert!(
        stderr.contains("BatchNorm statistics of 36 layers recalibrated"),
        "{stderr}"
    );
    let meta = CheckpointMeta::read(&weights.with_extension("json")).unwrap();
    assert!(meta.batch_norm_recalibrated);
    let accuracy = meta.test_accuracy.unwrap();
    // The classes differ by 150 grey levels in one channel against noise of +-40: separable by
    // any trained network, far above chance (33.3%).
    assert!(accuracy > 0.7, "test accuracy {accuracy}");
    assert!(warnings(&out).is_empty(), "{stderr}");
    // `eval` measures the same accuracy from the checkpoint, without a warning.
    let eval = rf_classifier(&["eval", "--dataset", &dataset, "--checkpoint", &weights_arg]);
    let printed = String::from_utf8_lossy(&eval.stdout);
    assert!(
        printed.contains(&format!("{:.2}%", 100.0 * accuracy)),
        "{printed}"
    );
    assert!(warnings(&eval).is_empty());
}

#[test]
fn an_accuracy_at_chance_is_named_in_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("tiny");
    colour_folder(&data, 2, 5);
    // An untrained network whose head says class 0 whatever the image: exactly 1/3 of the
    // balanced test split.
    let vs = VarStore::new(Device::Cpu);
    let config = NetConfig {
        net_type: NetType::Resnet,
        width: 2,
        num_classes: 3,
    };
    let _net = config.build_seeded(&vs, 1).unwrap();
    tch::no_grad(|| {
        let mut vars = vs.variables();
        let _ = vars.get_mut("linear.weight").unwrap().zero_();
        vars.get_mut("linear.bias")
            .unwrap()
            .copy_(&Tensor::from_slice(&[1.0f32, 0.0, 0.0]));
    });
    let norm = Normalization {
        mean: [0.5; 3],
        std: [0.25; 3],
    };
    let weights = dir.path().join("untrained.safetensors");
    save_checkpoint(&weights, &vs, &CheckpointMeta::new(config, norm, "tiny")).unwrap();
    let dataset = format!("tiny={}", data.display());
    let out = rf_classifier(&[
        "eval",
        "--dataset",
        &dataset,
        "--checkpoint",
        &weights.display().to_string(),
    ]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("33.33%"));
    assert_eq!(
        warnings(&out),
        vec![
            "warning: test accuracy 33.3% is within 5 points of chance (33.3% for 3 classes): \
             retrain longer (rf-classifier train --epochs N) or check that --dataset is the data \
             the classifier was trained on"
                .to_string()
        ]
    );
}
