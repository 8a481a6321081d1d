//! One flow-training iteration: our batched trainer against what a user runs today, a Python
//! training loop structured like the reference's `Residual_flow_train.py`
//! (`benches/reference_flow_train.py`: one RealNVP module, one `torch.optim.Adam` and one
//! DataLoader per class, full products with masks), on the same libtorch, side by side in one run,
//! at the reference's CIFAR-10 scale: 10 classes, 4000 training and 1000 validation features per
//! class, batch 256, k = h.
//!
//! `cargo bench --bench flow_train [-- [--threads N] [--rounds R] K...]` (default K = 16 32 64 128
//! 256 512, R = 2 alternating rounds of Python then Rust). Prints seconds per iteration (median
//! over rounds), the speed-up, and the time the mask-aware products would take at the measured
//! float32 matrix-product peak, with the fraction of that peak each side reaches.
mod common;

use common::{matmul_peaks, median, run_python};
use resflow::detect::flow::{FlowModel, FlowSpec, FlowTrainConfig, Trainer};
use resflow::detect::gaussian::whitening;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

const CLASSES: usize = 10;
const TRAIN: i64 = 4000;
const VALIDATION: i64 = 1000;

/// Multiply-accumulates of one s-net plus one t-net forward per sample.
fn coupling_macs(k: f64, h: f64, mask_aware: bool) -> f64 {
    let inner = if mask_aware { k / 2.0 } else { k };
    2.0 * (inner * h + h * h + h * inner)
}

/// FLOPs of one iteration: forward + backward (about 3 forwards) on the training rows, forward on
/// the validation rows, ten couplings each.
fn iteration_flops(k: usize, h: usize, mask_aware: bool) -> f64 {
    let fwd = 10.0 * coupling_macs(k as f64, h as f64, mask_aware) * 2.0;
    let per_class = TRAIN as f64 * 3.0 * fwd + VALIDATION as f64 * fwd;
    per_class * CLASSES as f64
}

/// Our trainer on random features of dimension k.
fn trainer(k: usize) -> Trainer {
    tch::manual_seed(0);
    let d = k as i64;
    let total = CLASSES as i64 * (TRAIN + VALIDATION);
    let x = Tensor::randn([total, d], (Kind::Float, Device::Cpu));
    let w = whitening(&x).expect("whitening");
    let spec = FlowSpec {
        num_classes: CLASSES,
        length_hidden: 1.0,
        layer: 0,
        net: "bench".into(),
        dataset: "bench".into(),
    };
    let model = FlowModel::init(&spec, &w, 1, Kind::Float, Device::Cpu).expect("init");
    let per = TRAIN + VALIDATION;
    let validation = (0..CLASSES as i64)
        .map(|c| x.narrow(0, c * per, VALIDATION))
        .collect();
    let train = (0..CLASSES as i64)
        .map(|c| x.narrow(0, c * per + VALIDATION, TRAIN))
        .collect();
    Trainer::new(model, train, validation, FlowTrainConfig::default()).expect("trainer")
}

/// Seconds per iteration of the Python reference-style loop (`iterations` timed after a warm-up).
fn python_iteration(k: usize, iterations: usize, threads: i32) -> f64 {
    let line = run_python(
        "reference_flow_train.py",
        &[k.to_string(), iterations.to_string(), threads.to_string()],
    );
    let seconds: Vec<f64> = line["seconds"]
        .as_array()
        .expect("seconds")
        .iter()
        .map(|v| v.as_f64().expect("a number"))
        .collect();
    seconds.iter().sum::<f64>() / seconds.len() as f64
}

/// Seconds per iteration of our trainer (`iterations` timed after a warm-up).
fn rust_iteration(trainer: &mut Trainer, iterations: usize) -> f64 {
    trainer.train_iteration().expect("iteration");
    let start = Instant::now();
    for _ in 0..iterations {
        trainer.train_iteration().expect("iteration");
    }
    start.elapsed().as_secs_f64() / iterations as f64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ks = Vec::new();
    let mut rounds = 2;
    let mut i = 0;
    while i < args.len() {
        let value = |i: usize| args.get(i + 1).and_then(|a| a.parse::<usize>().ok());
        match args[i].as_str() {
            "--threads" => {
                tch::set_num_threads(value(i).expect("--threads N") as i32);
                i += 1;
            }
            "--rounds" => {
                rounds = value(i).expect("--rounds R").max(1);
                i += 1;
            }
            a => {
                if let Ok(k) = a.parse::<usize>() {
                    ks.push(k);
                }
            }
        }
        i += 1;
    }
    let ks = if ks.is_empty() {
        vec![16, 32, 64, 128, 256, 512]
    } else {
        ks
    };
    let threads = tch::get_num_threads();
    let (peak_libtorch, peak_gemm) = matmul_peaks();
    let peak = peak_libtorch.max(peak_gemm);
    println!(
        "flow training iteration: {CLASSES} classes x {TRAIN} train + {VALIDATION} validation features, batch 256, h = k, {threads} threads, {rounds} alternating rounds"
    );
    println!(
        "float32 1024^3 matmul peak: {peak:.1} GFLOP/s (libtorch {peak_libtorch:.1}, gemm crate {peak_gemm:.1})"
    );
    println!();
    println!("| k | Python reference-style loop (s/it) | resflow (s/it) | speed-up | ideal at peak (s/it) | peak reached: reference, resflow |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for k in ks {
        let timed = if k <= 128 { 2 } else { 1 };
        let mut ours = trainer(k);
        let (mut py, mut rs) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            py.push(python_iteration(k, timed, threads));
            rs.push(rust_iteration(&mut ours, timed));
        }
        let (py, rs) = (median(py), median(rs));
        let ideal = iteration_flops(k, k, true) / (peak * 1e9);
        println!(
            "| {k} | {py:.3} | {rs:.3} | {:.2}x | {ideal:.3} | {:.1}%, {:.1}% |",
            py / rs,
            100.0 * ideal / py,
            100.0 * ideal / rs
        );
    }
}
