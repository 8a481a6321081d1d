//! OpenOOD's leaderboard detectors (RMDS, ReAct, ASH-S/B/P, SCALE, GEN, fDBD, NNGuide) against
//! independent numpy transcriptions of their published definitions (written for this test from
//! the papers and OpenOOD's postprocessors, not from our Rust), on the same training features,
//! test features and last layer, to 1e-5 relative.
use crate::common;

use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resflow::detect::entropy::GenParams;
use resflow::detect::gaussian::LayerStats;
use resflow::detect::head::LinearHead;
use resflow::detect::nnguide::NnguideParams;
use resflow::detect::shaping::{AshParams, AshVariant, ReactParams, ScaleParams};
use resflow::detect::{DetectorParams, TrainedFlow, TrainingData};
use resflow::models::checkpoint::{read_tensors, write_tensors};
use resflow::Error;
use tch::{Device, Kind, Tensor};

const CLASSES: usize = 6;
const TRAIN: usize = 300;
const TEST: usize = 40;
const DIM: usize = 24;

/// The transcriptions; argv[1] holds `case.safetensors` (train, labels, test, weight, bias) and
/// receives `theirs.safetensors`, one score vector per detector.
const SCRIPT: &str = r#"
import sys
import numpy as np
from safetensors.numpy import load_file, save_file
d = sys.argv[1]
case = load_file(d + "/case.safetensors")
train, test = case["train"].astype(np.float64), case["test"].astype(np.float64)
labels = case["labels"].astype(np.int64)
W, b = case["weight"].astype(np.float64), case["bias"].astype(np.float64)
C = W.shape[0]

def logsumexp(x):
    m = x.max(axis=1, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]

def energy(feat):
    return logsumexp(feat @ W.T + b)

def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)

out = {}

# RMDS (Ren et al. 2021; OpenOOD's rmds postprocessor): class-conditional Mahalanobis with the
# tied covariance of class-centred rows, minus the one-Gaussian background score.
means = np.stack([train[labels == c].mean(0) for c in range(C)])
centred = train - means[labels]
centred = centred - centred.mean(0)
P = np.linalg.pinv(centred.T @ centred / len(train))
mu0 = train.mean(0)
whole = train - mu0
P0 = np.linalg.pinv(whole.T @ whole / len(train))
background = -np.einsum("ij,jk,ik->i", test - mu0, P0, test - mu0)
cls = np.stack([-np.einsum("ij,jk,ik->i", test - means[c], P, test - means[c]) - background
                for c in range(C)], axis=1)
out["rmds"] = cls.max(1)

# ReAct (Sun et al. 2021): clip at the 90th percentile of every training activation, energy.
t = np.percentile(train.flatten(), 90)
out["react"] = energy(np.minimum(test, t))

# ASH (Djurisic et al. 2023), the paper's three shapings of the top 10%.
def top_mask(x, percentile):
    n = x.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    order = np.argsort(-x, axis=1, kind="stable")[:, :k]
    mask = np.zeros_like(x, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask, k

def ash(x, percentile, variant):
    mask, k = top_mask(x, percentile)
    s1 = x.sum(1, keepdims=True)
    kept = np.where(mask, x, 0.0)
    if variant == "p":
        return kept
    if variant == "b":
        return np.where(mask, s1 / k, 0.0)
    return kept * np.exp(s1 / kept.sum(1, keepdims=True))

for v in "sbp":
    out["ash_" + v] = energy(ash(test, 90, v))

# SCALE (Xu et al. 2024): the whole row times exp(sum / sum of the top 15%), energy.
mask, _ = top_mask(test, 85)
out["scale"] = energy(test * np.exp(test.sum(1, keepdims=True)
                                    / np.where(mask, test, 0.0).sum(1, keepdims=True)))

# GEN (Liu et al. 2023): -sum over the top M = min(100, C) probabilities of p^g (1 - p)^g.
p = np.sort(softmax(test @ W.T + b), axis=1)[:, -min(100, C):]
out["gen"] = -(p ** 0.1 * (1 - p) ** 0.1).sum(1)
out["gen_g05_m3"] = -(p[:, -3:] ** 0.5 * (1 - p[:, -3:]) ** 0.5).sum(1)

# fDBD (Liu & Qin 2024): mean over c != m of |f_m - f_c| / ||w_m - w_c||, over ||z - mean||.
f = test @ W.T + b
m = f.argmax(1)
dist = np.zeros(len(test))
for i in range(len(test)):
    for c in range(C):
        if c != m[i]:
            dist[i] += abs(f[i, m[i]] - f[i, c]) / np.linalg.norm(W[m[i]] - W[c])
out["fdbd"] = dist / (C - 1) / np.linalg.norm(test - train.mean(0), axis=1)

# NNGuide (Park et al. 2023): bank of ceil(alpha * M) evenly spaced training rows, guides
# z_j * energy_j, score = mean of the K largest z . g_j times the energy.
alpha, K = 0.2, 10
size = int(np.ceil(alpha * len(train)))
bank = train[[i * len(train) // size for i in range(size)]]
normed = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
guides = normed(bank) * energy(bank)[:, None]
sim = normed(test) @ guides.T
out["nnguide"] = np.sort(sim, axis=1)[:, -K:].mean(1) * energy(test)

save_file({k: np.ascontiguousarray(v) for k, v in out.items()}, d + "/theirs.safetensors")
"#;

/// Training data of one feature layer: ReLU features whose means differ by class, and a random
/// last layer.
struct LastLayer {
    train: Tensor,
    labels: Tensor,
    head: (Tensor, Tensor),
}

impl TrainingData for LastLayer {
    fn num_layers(&self) -> usize {
        1
    }

    fn train_features(&self, _layer: usize) -> resflow::Result<Tensor> {
        Ok(self.train.shallow_clone())
    }

    fn layer_stats(&self, _layer: usize) -> resflow::Result<LayerStats> {
        LayerStats::fit(&self.train, &self.labels, CLASSES)
    }

    fn linear_head(&self) -> resflow::Result<LinearHead> {
        Ok(LinearHead {
            weight: self.head.0.shallow_clone(),
            bias: self.head.1.shallow_clone(),
        })
    }

    fn trained_flows(&self, _kind: Kind) -> resflow::Result<Vec<TrainedFlow>> {
        Err(Error::BadData("no flows here".into()))
    }

    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// `rows x cols` values of `max(0, N(mean_r, 1))`, float32.
fn relu_rows(
    rng: &mut ChaCha8Rng,
    rows: usize,
    cols: usize,
    mean: impl Fn(usize) -> f32,
) -> Tensor {
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let values: Vec<f32> = (0..rows * cols)
        .map(|i| (normal.sample(rng) + mean(i)).max(0.0))
        .collect();
    Tensor::from_slice(&values).view([rows as i64, cols as i64])
}

/// Scores of `params` fitted on `data` for `test` (the best class score per row).
fn scores(params: DetectorParams, data: &LastLayer, test: &Tensor) -> Tensor {
    let fitted = params.fit(data).unwrap();
    let scores = fitted.layer_scores(0, 0).unwrap()(test).unwrap();
    scores.max_dim(1, false).0.to_kind(Kind::Double)
}

#[test]
fn openood_detectors_match_numpy_transcriptions_of_their_definitions() {
    let mut rng = ChaCha8Rng::seed_from_u64(27);
    let labels: Vec<i64> = (0..TRAIN).map(|i| (i % CLASSES) as i64).collect();
    // Feature j of class c has mean 0.3 + 0.4 * [j % CLASSES == c]: every class its own features.
    let train = relu_rows(&mut rng, TRAIN, DIM, |i| {
        0.3 + 0.4 * f32::from((i % DIM) % CLASSES == labels[i / DIM] as usize)
    });
    let test = relu_rows(&mut rng, TEST, DIM, |i| {
        if i / DIM < TEST / 2 {
            0.5
        } else {
            1.5
        }
    });
    let normal = Normal::new(0.0f32, 0.3).unwrap();
    let weight: Vec<f32> = (0..CLASSES * DIM)
        .map(|_| normal.sample(&mut rng))
        .collect();
    let bias: Vec<f32> = (0..CLASSES).map(|_| normal.sample(&mut rng)).collect();
    let data = LastLayer {
        train,
        labels: Tensor::from_slice(&labels),
        head: (
            Tensor::from_slice(&weight).view([CLASSES as i64, DIM as i64]),
            Tensor::from_slice(&bias),
        ),
    };

    let dir = tempfile::tempdir().unwrap();
    let case: HashMap<String, Tensor> = [
        ("train", &data.train),
        ("labels", &data.labels),
        ("test", &test),
        ("weight", &data.head.0),
        ("bias", &data.head.1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.shallow_clone()))
    .collect();
    write_tensors(&dir.path().join("case.safetensors"), &case).unwrap();
    common::run_python(SCRIPT, &[dir.path()]);
    let theirs = read_tensors(&Path::new(dir.path()).join("theirs.safetensors")).unwrap();

    let ash = |variant| {
        DetectorParams::Ash(AshParams {
            percentile: 90.0,
            variant,
        })
    };
    let cases = [
        ("rmds", DetectorParams::Rmds),
        ("react", DetectorParams::React(ReactParams::default())),
        ("ash_s", ash(AshVariant::S)),
        ("ash_b", ash(AshVariant::B)),
        ("ash_p", ash(AshVariant::P)),
        ("scale", DetectorParams::Scale(ScaleParams::default())),
        ("gen", DetectorParams::Gen(GenParams::default())),
        (
            "gen_g05_m3",
            DetectorParams::Gen(GenParams {
                gamma: 0.5,
                top: Some(3),
            }),
        ),
        ("fdbd", DetectorParams::Fdbd),
        (
            "nnguide",
            DetectorParams::Nnguide(NnguideParams {
                alpha: 0.2,
                k: Some(10),
            }),
        ),
    ];
    for (name, params) in cases {
        let ours = scores(params, &data, &test);
        let theirs = &theirs[name];
        let relative = ((&ours - theirs).abs() / theirs.abs().clamp_min(1e-3))
            .max()
            .double_value(&[]);
        assert!(
            relative < 1e-5,
            "{name}: relative difference {relative}\nours {ours}\ntheirs {theirs}"
        );
        // Not a constant: the scores tell rows apart.
        assert!(ours.std(false).double_value(&[]) > 1e-6, "{name}: {ours}");
    }
}

#[test]
fn openood_detectors_refuse_bad_parameters_naming_the_option() {
    let bad = [
        (
            DetectorParams::React(ReactParams { percentile: 101.0 }),
            "--react-percentile",
        ),
        (
            DetectorParams::Ash(AshParams {
                percentile: -1.0,
                variant: AshVariant::S,
            }),
            "--ash-percentile",
        ),
        (
            DetectorParams::Scale(ScaleParams {
                percentile: f64::NAN,
            }),
            "--scale-percentile",
        ),
        (
            DetectorParams::Gen(GenParams {
                gamma: 0.0,
                top: None,
            }),
            "--gen-gamma",
        ),
        (
            DetectorParams::Gen(GenParams {
                gamma: 0.1,
                top: Some(0),
            }),
            "--gen-m",
        ),
        (
            DetectorParams::Nnguide(NnguideParams {
                alpha: 1.5,
                k: None,
            }),
            "--nnguide-alpha",
        ),
        (
            DetectorParams::Nnguide(NnguideParams {
                alpha: 0.1,
                k: Some(0),
            }),
            "--nnguide-k",
        ),
    ];
    for (params, option) in bad {
        match params.check() {
            Err(Error::BadOption { option: named, .. }) => assert_eq!(named, option),
            other => panic!("{params:?}: {other:?}"),
        }
    }
}

#[test]
fn openood_detectors_refuse_what_the_data_cannot_support() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let labels: Vec<i64> = (0..TRAIN).map(|i| (i % CLASSES) as i64).collect();
    let weight = Tensor::ones([CLASSES as i64, DIM as i64], (Kind::Float, Device::Cpu));
    let data = LastLayer {
        train: relu_rows(&mut rng, TRAIN, DIM, |_| 0.5),
        labels: Tensor::from_slice(&labels),
        head: (
            weight,
            Tensor::zeros([CLASSES as i64], (Kind::Float, Device::Cpu)),
        ),
    };
    let message = |params: DetectorParams| match params.fit(&data) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("{params:?} fitted"),
    };
    // Pruning every feature leaves none to keep.
    let ash = message(DetectorParams::Ash(AshParams {
        percentile: 100.0,
        variant: AshVariant::S,
    }));
    assert!(
        ash.contains("--ash-percentile") && ash.contains("leaves none"),
        "{ash}"
    );
    let gen = message(DetectorParams::Gen(GenParams {
        gamma: 0.1,
        top: Some(CLASSES + 1),
    }));
    assert!(
        gen.contains("--gen-m") && gen.contains("6 classes"),
        "{gen}"
    );
    // alpha 0.01 of 300 rows is a bank of 3.
    let nnguide = message(DetectorParams::Nnguide(NnguideParams {
        alpha: 0.01,
        k: Some(4),
    }));
    assert!(
        nnguide.contains("--nnguide-k") && nnguide.contains("3 rows"),
        "{nnguide}"
    );
    // Every class has the same weights: no decision boundary.
    let fdbd = message(DetectorParams::Fdbd);
    assert!(fdbd.contains("same weights"), "{fdbd}");
}
