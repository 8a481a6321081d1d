//! The post-hoc detectors of `rf-baselines` (`docs/method.md#baseline-detectors`) against what a
//! user runs today: OpenOOD v1.5's postprocessors as OpenOOD structures them
//! (`benches/reference_detectors.py`: `setup` on the training features, `postprocess` per test
//! batch, torch and numpy on the same libtorch), side by side in one run, on the same features.
//!
//! CIFAR's scale: 50,000 training and 10,000 test rows of the ResNet-34's penultimate features
//! (512 wide, non-negative like ReLU activations, class means apart), 10 classes, a random last
//! layer (the timing does not depend on the values). Fit: `DetectorParams::fit` on the training
//! rows (the class statistics of RMDS, which `rf-prepare` computes once for every detector, are
//! timed separately, as "class statistics"; OpenOOD's RMDS computes its own, so its fit includes
//! them). Score: every test row in batches of `--batch` (default 200, OpenOOD's test batch) without
//! gradients. ODIN is left out: its cost is the network's (see the scoring bench).
//!
//! `cargo bench --bench detectors [-- [--threads N] [--rounds R] [--train M] [--test N]
//! [--batch B] [--detectors LIST]]` (defaults: 2 threads on both sides, 1 round, every detector
//! but ODIN). Prints per detector the fit and
//! scoring seconds of both sides (median over rounds) and the scoring speed-up.
#[allow(dead_code)] // the peaks are the other benches'
mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use common::{median, run_python};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resflow::detect::gaussian::{LayerStats, Whitening};
use resflow::detect::head::LinearHead;
use resflow::detect::{DetectorKind, DetectorParams, TrainedFlow, TrainingData, BASELINES_STAGE};
use resflow::models::checkpoint::write_tensors;
use tch::{Device, Kind, Tensor};

const CLASSES: i64 = 10;
const DIM: i64 = 512;

/// The penultimate features of a classifier's train split and its last layer, with the class
/// statistics computed once (as `rf-prepare` stores them).
struct Features {
    train: Tensor,
    head: LinearHead,
    stats: LayerStats,
}

impl TrainingData for Features {
    fn num_layers(&self) -> usize {
        1
    }

    fn train_features(&self, _layer: usize) -> resflow::Result<Tensor> {
        Ok(self.train.shallow_clone())
    }

    fn layer_stats(&self, _layer: usize) -> resflow::Result<LayerStats> {
        let w = &self.stats.whitening;
        Ok(LayerStats {
            means: self.stats.means.shallow_clone(),
            whitening: Whitening {
                a: w.a.shallow_clone(),
                a_inv: w.a_inv.shallow_clone(),
                log_abs_det_a_inv: w.log_abs_det_a_inv,
                k: w.k,
            },
            precision: self.stats.precision.shallow_clone(),
        })
    }

    fn linear_head(&self) -> resflow::Result<LinearHead> {
        Ok(LinearHead {
            weight: self.head.weight.shallow_clone(),
            bias: self.head.bias.shallow_clone(),
        })
    }

    fn trained_flows(&self, _kind: Kind) -> resflow::Result<Vec<TrainedFlow>> {
        Err(resflow::Error::BadData("no flows in this bench".into()))
    }

    fn device(&self) -> Device {
        Device::Cpu
    }
}

/// `rows x DIM` values `max(0, N(0.3 + 0.5 [j % CLASSES == label], 1))`, float32.
fn features(rng: &mut ChaCha8Rng, labels: &[i64]) -> Tensor {
    let normal = Normal::new(0.0f32, 1.0).unwrap();
    let d = DIM as usize;
    let values: Vec<f32> = (0..labels.len() * d)
        .map(|i| {
            let own = (i % d) as i64 % CLASSES == labels[i / d];
            (normal.sample(rng) + 0.3 + if own { 0.5 } else { 0.0 }).max(0.0)
        })
        .collect();
    Tensor::from_slice(&values).view([labels.len() as i64, DIM])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let option = |name: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| {
                v.parse().unwrap_or_else(|_| panic!("{name} N"))
            })
    };
    let threads = option("--threads", 2);
    let rounds = option("--rounds", 1).max(1);
    let (train_rows, test_rows) = (option("--train", 50_000), option("--test", 10_000));
    let batch = option("--batch", 200) as i64;
    tch::set_num_threads(threads as i32);

    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let train_labels: Vec<i64> = (0..train_rows).map(|i| i as i64 % CLASSES).collect();
    let test_labels: Vec<i64> = (0..test_rows).map(|i| i as i64 % CLASSES).collect();
    let train = features(&mut rng, &train_labels);
    let test = features(&mut rng, &test_labels);
    let labels = Tensor::from_slice(&train_labels);
    let normal = Normal::new(0.0f32, 0.05).unwrap();
    let weight: Vec<f32> = (0..CLASSES * DIM)
        .map(|_| normal.sample(&mut rng))
        .collect();
    let bias: Vec<f32> = (0..CLASSES).map(|_| normal.sample(&mut rng)).collect();
    let head = LinearHead {
        weight: Tensor::from_slice(&weight).view([CLASSES, DIM]),
        bias: Tensor::from_slice(&bias),
    };
    let start = Instant::now();
    let stats = LayerStats::fit(&train, &labels, CLASSES as usize).expect("class statistics");
    let stats_seconds = start.elapsed().as_secs_f64();

    let dir = tempfile::tempdir().expect("temporary folder");
    let path = dir.path().join("features.safetensors");
    let tensors = [
        ("train", &train),
        ("labels", &labels),
        ("test", &test),
        ("weight", &head.weight),
        ("bias", &head.bias),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.shallow_clone()))
    .collect();
    write_tensors(&path, &tensors).expect("write the features");
    let data = Features { train, head, stats };

    let only: Option<Vec<String>> = args
        .iter()
        .position(|a| a == "--detectors")
        .and_then(|i| args.get(i + 1))
        .map(|v| v.split(',').map(str::to_string).collect());
    let kinds: Vec<DetectorKind> = DetectorKind::scored_by(BASELINES_STAGE)
        .into_iter()
        .filter(|k| *k != DetectorKind::Odin)
        .filter(|k| {
            only.as_ref()
                .is_none_or(|o| o.iter().any(|n| n == k.name()))
        })
        .collect();
    let mut ours: BTreeMap<&str, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut theirs: BTreeMap<String, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for round in 0..rounds {
        let python = run_python(
            "reference_detectors.py",
            &[
                path.display().to_string(),
                "--threads".into(),
                threads.to_string(),
                "--batch".into(),
                batch.to_string(),
            ],
        );
        for (name, fit) in python["fit"].as_object().expect("fit times") {
            let entry = theirs.entry(name.clone()).or_default();
            entry.0.push(fit.as_f64().unwrap());
            entry.1.push(python["score"][name].as_f64().unwrap());
        }
        tch::no_grad(|| {
            for &kind in &kinds {
                let start = Instant::now();
                let fitted = DetectorParams::default_for(kind)
                    .fit(&data)
                    .unwrap_or_else(|e| panic!("{kind}: {e}"));
                let fit = start.elapsed().as_secs_f64();
                let start = Instant::now();
                let score = fitted.layer_scores(0, 0).expect("scores");
                for chunk in test.split(batch, 0) {
                    let _ = score(&chunk).expect("score a batch").max_dim(1, false);
                }
                let entry = ours.entry(kind.name()).or_default();
                entry.0.push(fit);
                entry.1.push(start.elapsed().as_secs_f64());
            }
        });
        eprintln!("round {} of {rounds} done", round + 1);
    }

    println!(
        "post-hoc detectors at CIFAR scale: {train_rows} train and {test_rows} test rows of \
         {DIM} features, {CLASSES} classes, batch {batch}, {threads} threads, median of {rounds} \
         round(s); class statistics (rf-prepare, once for all detectors): {stats_seconds:.2} s"
    );
    println!(
        "| detector | fit: OpenOOD-style | fit: resflow | score {test_rows} rows: OpenOOD-style | \
         score: resflow | scoring speed-up |\n|---|---:|---:|---:|---:|---:|"
    );
    for kind in kinds {
        let (fit, score) = &ours[kind.name()];
        let (their_fit, their_score) = &theirs[kind.name()];
        let (f, s) = (median(fit.clone()), median(score.clone()));
        let (tf, ts) = (median(their_fit.clone()), median(their_score.clone()));
        println!(
            "| {} | {tf:.3} s | {f:.3} s | {ts:.3} s | {s:.3} s | {:.2}x |",
            kind.label(),
            ts / s
        );
    }
}
