//! Scoring with input pre-processing (`docs/method.md#input-pre-processing` and
//! `docs/method.md#the-mahalanobis-detector`), `rf-score` and `rf-mahalanobis`, against what a user
//! runs today: Python loops structured like the reference's
//! `get_resflow_score` and `get_Mahalanobis_score` (`benches/reference_scoring.py`: a gradient
//! for every magnitude, zero included, with `loss.backward()` also computing the parameters'
//! gradients as the reference's does; one RealNVP module per class, scored class by class; the
//! Mahalanobis term as `diag((f - mu_c) P (f - mu_c)^T)` class by class), on the same libtorch,
//! side by side in one run. Ours is the stages' path: `preprocessed_scores` (one input gradient
//! per batch and layer reused for every magnitude, the perturbed copies in one forward) with the
//! residual flow's batched `FlowModel::log_prob` or the `Mahalanobis` detector's class scores.
//!
//! Two scales, the reference's ResNet-34 on 3x32x32 inputs with 10 classes and random weights
//! (the timing does not depend on their values) on both sides: the demo's (width 4, the
//! Fashion-MNIST classifier of `scripts/demo.sh`; ours at the demo's `--batch-size 200`) and
//! CIFAR's (the paper's width 64; ours at `rf-score`'s default batch 100). The Python side uses
//! the reference's batch sizes: 32 for the flow (`Residual_flow_test_processing.py`), 20 for
//! Mahalanobis (`OOD_Generate_Mahalanobis.py`). Every feature layer (0-4) and all seven
//! magnitudes; each side scores max(1, N / its batch) batches of random normalised images (N: 100
//! at the demo's scale, 32 at CIFAR's: one batch per side there). Data loading is not timed on
//! either side; each side is warmed up first.
//!
//! With `--magnitudes 0.0014` (one magnitude) both sides do a deployed detector's work per image,
//! what `rf-detect score` runs at the bundle's chosen magnitude.
//!
//! `cargo bench --bench scoring [-- [--threads N] [--rounds R] [--scale demo|cifar|all]
//! [--layers 0,1,2,3,4] [--images N] [--batch B] [--magnitudes LIST]]` (defaults: all seven
//! magnitudes, 2 threads on both sides, R = 2
//! alternating rounds of Python then Rust per scale, both scales, every layer; `--batch` sets our
//! batch size at every scale). Prints at the end the measured float32 peaks (a 1024^3 matrix
//! product, and a 3x3 convolution, the network's kind of work; the better of a measurement before
//! and one after the rounds) and the load average before and after, then per scale and detector
//! the seconds per image of each side (median over rounds) and the speed-up, the network's
//! convolution work per image of each scheme (reference: 7 x (forward + backward for the input and
//! the weights + forward) = 28 forwards; ours: forward + input backward + 6 forwards = 8 forwards;
//! summed over the layers scored; the flow and Mahalanobis heads are not counted) and the fraction
//! of the convolution peak that work reaches on each side; then each round's seconds per image.
mod common;

use std::time::Instant;

use common::{best_gflops, matmul_peaks, median, run_python};
use resflow::detect::flow::{default_length_hidden, FlowModel, FlowSpec};
use resflow::detect::gaussian::LayerStats;
use resflow::detect::mahalanobis::Mahalanobis;
use resflow::detect::preprocess::{preprocessed_scores, ScoreFn};
use resflow::detect::{FittedDetector, MAGNITUDES};
use resflow::models::resnet::{BLOCKS, PAPER_WIDTH};
use resflow::models::{Classifier, NetConfig, NetType};
use resflow::pipeline::classifier::DEMO_RESNET_WIDTH;
use resflow::pipeline::score::SCORING_BATCH_SIZE;
use tch::{nn::VarStore, Device, Kind, Tensor};

const CLASSES: i64 = 10;
/// The ResNet normalisation std (the sign step's divisor; its value does not affect the timing).
const STD: [f64; 3] = [0.2023, 0.1994, 0.2010];
/// The reference's batch sizes: `Residual_flow_test_processing.py`, `OOD_Generate_Mahalanobis.py`.
const REFERENCE_FLOW_BATCH: i64 = 32;
const REFERENCE_MAHALANOBIS_BATCH: i64 = 20;
/// The batch size `scripts/demo.sh` passes to `rf-score` and `rf-mahalanobis`.
const DEMO_BATCH: i64 = 200;

/// One scale of the comparison.
struct Scale {
    name: &'static str,
    width: i64,
    /// Our batch size.
    batch: i64,
    /// Images per side (at least one batch each).
    images: i64,
}

/// One scale and detector's seconds per image, per round.
struct Measured<'a> {
    scale: &'a Scale,
    detector: &'static str,
    /// The Python side's batch size.
    reference_batch: i64,
    python: Vec<f64>,
    ours: Vec<f64>,
}

/// Multiply-accumulates per image of the ResNet-34 convolutions up to feature layer `layer`.
fn resnet_macs(width: i64, layer: usize) -> f64 {
    let w = width as f64;
    let mut macs = 32.0 * 32.0 * 3.0 * w * 9.0;
    let mut c_in = w;
    for (stage, &blocks) in BLOCKS.iter().enumerate().take(layer) {
        let planes = w * (1 << stage) as f64;
        let positions = (32.0 / (1 << stage) as f64).powi(2);
        for b in 0..blocks {
            macs += positions * 9.0 * (c_in * planes + planes * planes);
            if b == 0 && c_in != planes {
                macs += positions * c_in * planes;
            }
            c_in = planes;
        }
    }
    macs
}

/// Network FLOPs per image of `(reference scheme, ours)` over `layers` for `magnitudes`, in
/// forward passes: 4 per magnitude (forward, input + weight backward, forward) and forward + input
/// backward + one forward per non-zero magnitude (all seven: 28 and 8).
fn network_flops(width: i64, layers: &[usize], magnitudes: &[f64]) -> (f64, f64) {
    let forward: f64 = layers.iter().map(|&l| 2.0 * resnet_macs(width, l)).sum();
    let perturbed = magnitudes.iter().filter(|&&m| m != 0.0).count() as f64;
    (
        4.0 * magnitudes.len() as f64 * forward,
        (2.0 + perturbed) * forward,
    )
}

/// Float32 GFLOP/s of a 3x3 convolution (oneDNN) of ResNet-34's layer-2 shape, 128 channels at
/// 16x16, batch 32 (best of 5 x 4): the hardware limit of the network's work, which on CPUs where
/// MKL's matrix product does not use every vector unit (AMD) lies well above the matmul peak.
fn conv_peak() -> f64 {
    let x = Tensor::randn([32, 128, 16, 16], (Kind::Float, Device::Cpu));
    let w = Tensor::randn([128, 128, 3, 3], (Kind::Float, Device::Cpu));
    let flops = 2.0 * (32 * 16 * 16 * 128 * 128 * 9) as f64;
    best_gflops(flops, 5, 4, &|| {
        let _ = x.conv2d(&w, None::<&Tensor>, [1, 1], [1, 1], [1, 1], 1);
    })
}

/// Our two detectors at every layer of `net`, on random features: the flows of `rf-score`
/// (`FlowModel`, frozen, float32, with the class means) and `rf-mahalanobis`'s detector.
struct Ours {
    flows: Vec<(FlowModel, Tensor)>,
    mahalanobis: Mahalanobis,
}

impl Ours {
    fn new(net: &dyn Classifier) -> Ours {
        let mut flows = Vec::new();
        let mut stats = Vec::new();
        for (layer, &d) in net.layer_channels().iter().enumerate() {
            let n = (4 * d).max(10 * CLASSES);
            let features = Tensor::randn([n, d], (Kind::Double, Device::Cpu));
            let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(CLASSES);
            let s = LayerStats::fit(&features, &labels, CLASSES as usize).expect("statistics");
            let spec = FlowSpec {
                num_classes: CLASSES as usize,
                length_hidden: default_length_hidden("resnet", "cifar10", layer),
                layer,
                net: "resnet".into(),
                dataset: "bench".into(),
            };
            let mut flow =
                FlowModel::init(&spec, &s.whitening, 2, Kind::Float, Device::Cpu).expect("flow");
            flow.set_trainable(false);
            flows.push((flow, s.means.to_kind(Kind::Float)));
            stats.push(s);
        }
        Ours {
            flows,
            mahalanobis: Mahalanobis::new(&stats, Device::Cpu),
        }
    }

    /// Scores `batches` at every layer of `layers` and magnitude with `detector` ("resflow" or
    /// "mahalanobis"); returns the seconds taken.
    fn score(
        &self,
        net: &dyn Classifier,
        detector: &str,
        layers: &[usize],
        batches: &[Tensor],
        magnitudes: &[f64],
    ) -> f64 {
        let start = Instant::now();
        for &layer in layers {
            let score: Box<ScoreFn> = if detector == "resflow" {
                let (flow, means) = &self.flows[layer];
                Box::new(move |f: &Tensor| flow.log_prob(f, means))
            } else {
                self.mahalanobis.layer_scores(layer, 0).expect("scores")
            };
            for x in batches {
                let scores = preprocessed_scores(net, x, layer, STD, magnitudes, score.as_ref())
                    .expect("scores");
                assert_eq!(scores.len(), magnitudes.len());
            }
        }
        start.elapsed().as_secs_f64()
    }
}

fn parse_list(v: &str) -> Vec<usize> {
    v.split(',')
        .map(|s| s.trim().parse().expect("a list of layers: 0,1,2,3,4"))
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut threads, mut rounds, mut scale) = (2i32, 2usize, "all".to_string());
    let (mut images, mut batch) = (None, None);
    let mut layers = vec![0, 1, 2, 3, 4];
    let mut magnitudes = MAGNITUDES.to_vec();
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--threads" => threads = value().parse().expect("--threads N"),
            "--rounds" => rounds = value().parse::<usize>().expect("--rounds R").max(1),
            "--scale" => scale = value(),
            "--layers" => layers = parse_list(&value()),
            "--images" => images = Some(value().parse::<i64>().expect("--images N")),
            "--batch" => batch = Some(value().parse::<i64>().expect("--batch B")),
            "--magnitudes" => {
                magnitudes = value()
                    .split(',')
                    .map(|m| m.trim().parse().expect("--magnitudes 0.0,0.0014,..."))
                    .collect()
            }
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    let scales: Vec<Scale> = [
        Scale {
            name: "demo",
            width: DEMO_RESNET_WIDTH,
            batch: batch.unwrap_or(DEMO_BATCH),
            images: images.unwrap_or(100),
        },
        Scale {
            name: "cifar",
            width: PAPER_WIDTH,
            batch: batch.unwrap_or(SCORING_BATCH_SIZE as i64),
            images: images.unwrap_or(REFERENCE_FLOW_BATCH),
        },
    ]
    .into_iter()
    .filter(|s| scale == "all" || scale == s.name)
    .collect();
    assert!(!scales.is_empty(), "--scale demo, cifar or all");
    tch::set_num_threads(threads);
    let peaks = || {
        let (libtorch, gemm) = matmul_peaks();
        (libtorch.max(gemm), conv_peak())
    };
    let (matmul_start, conv_start) = peaks();
    let load = || {
        let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let load_start = load();
    let layer_list = layers
        .iter()
        .map(|l| l.to_string())
        .collect::<Vec<_>>()
        .join(",");
    println!(
        "scoring with input pre-processing: ResNet-34 on 3x32x32, {CLASSES} classes, layers {layer_list}, magnitudes {magnitudes:?}, {threads} threads on both sides, {rounds} alternating rounds (Python, then Rust)"
    );
    let mut results: Vec<Measured> = Vec::new();
    for s in &scales {
        let vs = VarStore::new(Device::Cpu);
        let config = NetConfig {
            net_type: NetType::Resnet,
            width: s.width,
            num_classes: CLASSES,
        };
        let net = config.build_seeded(&vs, 1).expect("network");
        let ours = Ours::new(net.as_ref());
        tch::manual_seed(0);
        let n_batches = (s.images / s.batch).max(1);
        let batches: Vec<Tensor> = (0..n_batches)
            .map(|_| Tensor::randn([s.batch, 3, 32, 32], (Kind::Float, Device::Cpu)))
            .collect();
        let warm = [Tensor::randn([8, 3, 32, 32], (Kind::Float, Device::Cpu))];
        let detectors = [
            ("resflow", REFERENCE_FLOW_BATCH),
            ("mahalanobis", REFERENCE_MAHALANOBIS_BATCH),
        ];
        for (d, _) in detectors {
            ours.score(net.as_ref(), d, &layers, &warm, &magnitudes);
        }
        let python_args = [
            "--width".to_string(),
            s.width.to_string(),
            "--classes".into(),
            CLASSES.to_string(),
            "--layers".into(),
            layer_list.clone(),
            "--images".into(),
            s.images.to_string(),
            "--flow-batch".into(),
            REFERENCE_FLOW_BATCH.to_string(),
            "--maha-batch".into(),
            REFERENCE_MAHALANOBIS_BATCH.to_string(),
            "--threads".into(),
            threads.to_string(),
            "--magnitudes".into(),
            magnitudes
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ];
        let mut py: Vec<Vec<f64>> = vec![Vec::new(); detectors.len()];
        let mut rs: Vec<Vec<f64>> = vec![Vec::new(); detectors.len()];
        for _ in 0..rounds {
            let line = run_python("reference_scoring.py", &python_args);
            for (j, (d, _)) in detectors.iter().enumerate() {
                py[j].push(
                    line[d]["seconds_per_image"]
                        .as_f64()
                        .expect("seconds_per_image"),
                );
            }
            for (j, (d, _)) in detectors.iter().enumerate() {
                let seconds = ours.score(net.as_ref(), d, &layers, &batches, &magnitudes);
                rs[j].push(seconds / (n_batches * s.batch) as f64);
            }
        }
        for (((detector, reference_batch), python), ours) in detectors.into_iter().zip(py).zip(rs) {
            results.push(Measured {
                scale: s,
                detector,
                reference_batch,
                python,
                ours,
            });
        }
    }
    // The peaks once more: on a shared machine, the better of the two measurements.
    let (matmul_end, conv_end) = peaks();
    let (peak, conv) = (matmul_start.max(matmul_end), conv_start.max(conv_end));
    println!(
        "float32 peaks (best of start and end): 1024^3 matmul {peak:.1} GFLOP/s, 3x3 conv {conv:.1} GFLOP/s; load average at start {load_start}, at end {}",
        load()
    );
    println!();
    println!("| scale | detector | layers | batch: reference, resflow | reference-style Python (s/image) | resflow (s/image) | speed-up | network GFLOP/image: reference, resflow | conv peak reached: reference, resflow |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|");
    let seconds = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.4}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut per_round = Vec::new();
    for m in &results {
        let (s, d, ref_batch, py, rs) =
            (m.scale, m.detector, m.reference_batch, &m.python, &m.ours);
        let (flops_ref, flops_ours) = network_flops(s.width, &layers, &magnitudes);
        let (p, r) = (median(py.clone()), median(rs.clone()));
        println!(
            "| {} (width {}) | {d} | {layer_list} | {ref_batch}, {} | {p:.4} | {r:.4} | {:.2}x | {:.2}, {:.2} | {:.1}%, {:.1}% |",
            s.name,
            s.width,
            s.batch,
            p / r,
            flops_ref / 1e9,
            flops_ours / 1e9,
            100.0 * flops_ref / (p * conv * 1e9),
            100.0 * flops_ours / (r * conv * 1e9),
        );
        per_round.push(format!(
            "{} {d}: Python {}; resflow {}",
            s.name,
            seconds(py),
            seconds(rs)
        ));
    }
    println!();
    println!("s/image per round:");
    for line in per_round {
        println!("  {line}");
    }
}
