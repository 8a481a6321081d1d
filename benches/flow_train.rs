//! One flow-training iteration, batched trainer vs a per-class loop, at the reference's CIFAR-10
//! scale: 10 classes, 4000 training and 1000 validation features per class, batch 256.
//!
//! The per-class loop is the reference's scheme: one flow per class with full weight matrices and
//! multiplicative masks, one libtorch Adam per class, classes one after another. The batched trainer
//! runs all classes in one model with mask-aware products and a per-class Adam.
//!
//! `cargo bench --bench flow_train [-- [--threads N] K...]` (default K = 64 512; on a loaded machine
//! `--threads 1` avoids OpenMP oversubscription). Prints seconds per iteration,
//! the speed-up and the achieved GFLOP/s next to a measured float32 matrix-product peak.
#[path = "../tests/it/flow_ref/mod.rs"]
mod flow_ref;

use flow_ref::{trainable_names, NaiveFlow};
use resflow::detect::flow::{epoch_order, FlowModel, FlowSpec, FlowTrainConfig, Trainer};
use resflow::detect::gaussian::whitening;
use std::time::Instant;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

const CLASSES: usize = 10;
const TRAIN: i64 = 4000;
const VALIDATION: i64 = 1000;
const BATCH: usize = 256;

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

fn matmul_peak() -> f64 {
    let n = 1024;
    let a = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let b = Tensor::randn([n, n], (Kind::Float, Device::Cpu));
    let _ = a.matmul(&b);
    let reps = 20;
    let start = Instant::now();
    for _ in 0..reps {
        let _ = a.matmul(&b);
    }
    2.0 * (n * n * n) as f64 * reps as f64 / start.elapsed().as_secs_f64() / 1e9
}

struct Setup {
    model: FlowModel,
    train: Vec<Tensor>,
    validation: Vec<Tensor>,
}

fn setup(k: usize) -> Setup {
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
    Setup {
        model,
        train,
        validation,
    }
}

/// The per-class loop: flow and Adam of each class, trained one class after another.
struct PerClass {
    flows: Vec<NaiveFlow>,
    opts: Vec<nn::Optimizer>,
    _stores: Vec<nn::VarStore>,
}

impl PerClass {
    fn new(model: &FlowModel) -> Self {
        let trainable = trainable_names();
        let mut flows = Vec::new();
        let mut opts = Vec::new();
        let mut stores = Vec::new();
        for c in 0..model.num_classes() {
            let vs = nn::VarStore::new(Device::Cpu);
            let mut tensors = std::collections::HashMap::new();
            for (name, t) in model.class_state_dict(c).expect("state dict") {
                if trainable.contains(&name) {
                    let mut var =
                        vs.root()
                            .var(&name.replace('.', "_"), &t.size(), nn::Init::Const(0.0));
                    tch::no_grad(|| var.copy_(&t));
                    tensors.insert(name, var);
                } else {
                    tensors.insert(name, t);
                }
            }
            flows.push(NaiveFlow {
                tensors,
                log_abs_det_a_inv: model.meta.log_abs_det_a_inv,
            });
            opts.push(nn::Adam::default().build(&vs, 1e-5).expect("adam"));
            stores.push(vs);
        }
        PerClass {
            flows,
            opts,
            _stores: stores,
        }
    }

    fn iteration(&mut self, t: usize, train: &[Tensor], validation: &[Tensor]) -> f64 {
        let mut total = 0.0;
        for (c, (flow, opt)) in self.flows.iter().zip(self.opts.iter_mut()).enumerate() {
            let order = epoch_order(0, t, c, train[c].size()[0] as usize);
            for chunk in order.chunks(BATCH) {
                let x = train[c].index_select(0, &Tensor::from_slice(chunk));
                let loss = -flow.log_prob(&x).sum(Kind::Float);
                opt.backward_step(&loss);
                total += f64::try_from(loss).unwrap_or(f64::NAN);
            }
            tch::no_grad(|| {
                for s in (0..validation[c].size()[0]).step_by(BATCH) {
                    let n = (BATCH as i64).min(validation[c].size()[0] - s);
                    total += f64::try_from(
                        flow.log_prob(&validation[c].narrow(0, s, n))
                            .sum(Kind::Float),
                    )
                    .unwrap_or(0.0);
                }
            });
        }
        total
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut ks = Vec::new();
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--threads" {
            let n: i32 = args
                .get(i + 1)
                .and_then(|a| a.parse().ok())
                .expect("--threads N");
            tch::set_num_threads(n);
            i += 1;
        } else if let Ok(k) = args[i].parse::<usize>() {
            ks.push(k);
        }
        i += 1;
    }
    let ks = if ks.is_empty() { vec![64, 512] } else { ks };
    let peak = matmul_peak();
    println!(
        "flow training iteration: {CLASSES} classes x {TRAIN} train + {VALIDATION} validation features, batch {BATCH}, {} threads",
        tch::get_num_threads()
    );
    println!("float32 1024^3 matmul peak: {peak:.1} GFLOP/s");
    for k in ks {
        let timed = if k <= 128 { 3 } else { 1 };
        let s = setup(k);
        let mut per_class = PerClass::new(&s.model);
        let mut trainer = Trainer::new(
            s.model,
            s.train.iter().map(|t| t.shallow_clone()).collect(),
            s.validation.iter().map(|t| t.shallow_clone()).collect(),
            FlowTrainConfig::default(),
        )
        .expect("trainer");
        // Warm-up (allocator, thread pools), then timed iterations.
        if k <= 128 {
            per_class.iteration(0, &s.train, &s.validation);
            trainer.train_iteration().expect("iteration");
        }
        let start = Instant::now();
        for t in 0..timed {
            trainer.train_iteration().expect("iteration");
            let _ = t;
        }
        let batched = start.elapsed().as_secs_f64() / timed as f64;
        let start = Instant::now();
        for t in 0..timed {
            per_class.iteration(t + 1, &s.train, &s.validation);
        }
        let looped = start.elapsed().as_secs_f64() / timed as f64;
        let (useful, done_batched) = (iteration_flops(k, k, false), iteration_flops(k, k, true));
        println!(
            "k = {k:4}: per-class loop {looped:8.3} s ({:6.1} GFLOP/s), batched {batched:8.3} s ({:6.1} GFLOP/s executed, {:6.1} reference-equivalent), speed-up {:.2}x",
            useful / looped / 1e9,
            done_batched / batched / 1e9,
            useful / batched / 1e9,
            looped / batched
        );
    }
}
