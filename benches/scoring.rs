//! Input pre-processing for the residual flow (SPEC section 6): one gradient per batch reused for
//! every magnitude (`resflow::detect::preprocess::preprocessed_scores`) against recomputing the gradient for
//! each magnitude: as the reference does (a gradient for all seven magnitudes, zero included) and
//! with magnitude 0 skipped. Same network, flow, batch and magnitudes.
//!
//! `cargo bench --bench scoring [-- [--threads N] [--width W] [--batch B] LAYER...]` (defaults:
//! ResNet-34 width 16, batch 64, layers 1 and 4). Prints seconds per batch and the speed-up.
use std::time::Instant;

use resflow::detect::flow::{FlowModel, FlowSpec};
use resflow::detect::gaussian::whitening;
use resflow::detect::preprocess::{gradient_step, preprocessed_scores};
use resflow::detect::MAGNITUDES;
use resflow::models::NetType;
use resflow::models::{mean_pool, Classifier, NetConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

const STD: [f64; 3] = [0.2023, 0.1994, 0.2010];

/// A fresh gradient for every magnitude (the reference's scheme), or for every non-zero one.
fn recomputed(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    score: &dyn Fn(&Tensor) -> resflow::error::Result<Tensor>,
    gradient_at_zero: bool,
) -> Vec<Tensor> {
    MAGNITUDES
        .iter()
        .map(|&eps| {
            let input = if eps == 0.0 && !gradient_at_zero {
                x.shallow_clone()
            } else {
                x - gradient_step(net, x, layer, STD, score).expect("gradient") * eps
            };
            tch::no_grad(|| {
                let f = mean_pool(&net.intermediate_forward(&input, layer).expect("forward"));
                score(&f).expect("scores")
            })
        })
        .collect()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut width, mut batch, mut layers) = (16i64, 64i64, Vec::new());
    let mut i = 0;
    while i < args.len() {
        let value = || args.get(i + 1).and_then(|a| a.parse::<i64>().ok());
        match args[i].as_str() {
            "--threads" => tch::set_num_threads(value().expect("--threads N") as i32),
            "--width" => width = value().expect("--width W"),
            "--batch" => batch = value().expect("--batch B"),
            "--bench" => {
                i += 1;
                continue;
            }
            other => {
                if let Ok(l) = other.parse::<usize>() {
                    layers.push(l);
                }
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if layers.is_empty() {
        layers = vec![1, 4];
    }
    let vs = VarStore::new(Device::Cpu);
    let config = NetConfig {
        net_type: NetType::Resnet,
        width,
        num_classes: 10,
    };
    let net = config.build_seeded(&vs, 1).expect("network");
    tch::manual_seed(0);
    let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    println!(
        "input pre-processing, ResNet-34 width {width}, batch {batch}, {} magnitudes, {} threads",
        MAGNITUDES.len(),
        tch::get_num_threads()
    );
    for layer in layers {
        let d = net.layer_channels()[layer];
        let w = whitening(&Tensor::randn([4 * d, d], (Kind::Double, Device::Cpu))).expect("A");
        let spec = FlowSpec {
            num_classes: 10,
            length_hidden: 1.0,
            layer,
            net: "resnet".into(),
            dataset: "bench".into(),
        };
        let flow = FlowModel::init(&spec, &w, 2, Kind::Float, Device::Cpu).expect("flow");
        let means = Tensor::zeros([10, d], (Kind::Float, Device::Cpu));
        let score = |f: &Tensor| flow.log_prob(f, &means);
        // Warm-up, then one timed batch each.
        let _ = preprocessed_scores(net.as_ref(), &x, layer, STD, &MAGNITUDES, &score);
        let start = Instant::now();
        let reused =
            preprocessed_scores(net.as_ref(), &x, layer, STD, &MAGNITUDES, &score).expect("scores");
        let fast = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let reference = recomputed(net.as_ref(), &x, layer, &score, true);
        let slowest = start.elapsed().as_secs_f64();
        let start = Instant::now();
        let direct = recomputed(net.as_ref(), &x, layer, &score, false);
        let slow = start.elapsed().as_secs_f64();
        let diff = reused
            .iter()
            .zip(&direct)
            .chain(reused.iter().zip(&reference))
            .map(|(a, b)| (a - b.to_kind(Kind::Double)).abs().max().double_value(&[]))
            .fold(0.0, f64::max);
        println!(
            "layer {layer} (d = {d}): gradient per magnitude {slowest:6.3} s (reference) / {slow:6.3} s (none at 0), reused gradient {fast:6.3} s, speed-up {:.2}x / {:.2}x (max score difference {diff:.1e})",
            slowest / fast,
            slow / fast
        );
    }
}
