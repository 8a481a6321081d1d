//! Feature-extraction throughput (images/s) of ResNet-34 at full width, eval mode, no gradients:
//! `feature_list` plus mean pooling of every layer, as the prepare step runs it.
//!
//! Usage: `feature_throughput BATCH BATCHES [THREADS]`; compare with `scripts/bench_features.py`
//! (same model and work in Python torch) via `scripts/bench_features.sh`.
use std::time::Instant;

use resflow::models::NetType;
use resflow::models::{mean_pool, NetConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, default: i64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(default);
    let (batch, batches, threads) = (arg(1, 64), arg(2, 5), arg(3, 0));
    if threads > 0 {
        tch::set_num_threads(threads as i32);
    }
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let net = NetConfig::paper(NetType::Resnet, 10)
        .build(&vs.root())
        .expect("valid config");
    let x = Tensor::randn([batch, 3, 32, 32], (Kind::Float, Device::Cpu));
    let run = || {
        tch::no_grad(|| {
            let (logits, feats) = net.feature_list(&x);
            let pooled: Vec<Tensor> = feats.iter().map(mean_pool).collect();
            (logits, pooled)
        })
    };
    let _ = run(); // warm-up
    let start = Instant::now();
    for _ in 0..batches {
        let _ = run();
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "rust batch {batch}: {:.1} img/s",
        (batch * batches) as f64 / seconds
    );
}
