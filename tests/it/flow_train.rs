//! The batched trainer against independent per-class training (full reference weights, libtorch's
//! own Adam through `tch::nn::Adam`), resume, and error handling.
use crate::common::max_abs_diff;
use crate::flow_ref;

use flow_ref::{trainable_names, NaiveFlow};
use resflow::detect::flow::{
    default_backward, epoch_order, split_validation, Backward, FlowModel, FlowSpec,
    FlowTrainConfig, Trainer,
};
use resflow::detect::gaussian::{centre_by_class, class_means, whitening};
use resflow::Error;
use std::collections::HashMap;
use tch::nn::OptimizerConfig;
use tch::{nn, Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

fn randn(shape: &[i64], seed: u64) -> Tensor {
    use rand::SeedableRng;
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: i64 = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| StandardNormal.sample(&mut rng)).collect();
    Tensor::from_slice(&v).view(shape)
}

/// Three classes with different sample counts (so different batch counts and partial batches).
struct Data {
    model: FlowModel,
    validation: Vec<Tensor>,
    train: Vec<Tensor>,
}

fn data(kind: Kind) -> Data {
    data_with_hidden(kind, 1.5)
}

fn data_with_hidden(kind: Kind, length_hidden: f64) -> Data {
    let counts = [700i64, 540, 610];
    let d = 10;
    let mix = randn(&[8, d], 1) * 0.5 + Tensor::eye_m(8, d, (Kind::Double, CPU)) * 2.0;
    let mut feats = Vec::new();
    let mut labels = Vec::new();
    for (c, &n) in counts.iter().enumerate() {
        let x = randn(&[n, 8], 10 + c as u64);
        // Class-dependent non-Gaussian shape so the flows have something to learn.
        let x = &x + x.square() * (0.3 * (c as f64 + 1.0)) + c as f64 * 3.0;
        feats.push(x.matmul(&mix));
        labels.push(Tensor::full([n], c as i64, (Kind::Int64, CPU)));
    }
    let features = Tensor::cat(&feats, 0);
    let labels = Tensor::cat(&labels, 0);
    let means = class_means(&features, &labels, 3).unwrap();
    let w = whitening(&centre_by_class(&features, &labels, &means).unwrap()).unwrap();
    let spec = FlowSpec {
        num_classes: 3,
        length_hidden,
        layer: 1,
        net: "resnet".into(),
        dataset: "toy".into(),
    };
    let model = FlowModel::init(&spec, &w, 3, kind, CPU).unwrap();
    let centred: Vec<Tensor> = feats
        .iter()
        .enumerate()
        .map(|(c, f)| f - means.get(c as i64))
        .collect();
    let (validation, train) = split_validation(&centred, 300).unwrap();
    Data {
        model,
        validation,
        train,
    }
}

fn config(lr: f64) -> FlowTrainConfig {
    FlowTrainConfig {
        lr,
        batch_size: 256,
        seed: 42,
        monitor_every: 2,
    }
}

/// Trains class `c` alone on the reference's full state dict with libtorch's Adam.
fn reference_train(
    model: &FlowModel,
    c: usize,
    train: &Tensor,
    cfg: &FlowTrainConfig,
    iters: usize,
) -> HashMap<String, Tensor> {
    let kind = model.kind();
    let dict = model.class_state_dict(c).unwrap();
    let trainable = trainable_names();
    let mut vs = nn::VarStore::new(CPU);
    vs.set_kind(kind);
    let mut tensors = HashMap::new();
    for (name, t) in dict {
        if trainable.contains(&name) {
            let mut var = vs
                .root()
                .var(&name.replace('.', "_"), &t.size(), nn::Init::Const(0.0));
            tch::no_grad(|| var.copy_(&t));
            tensors.insert(name, var);
        } else {
            tensors.insert(name, t);
        }
    }
    let flow = NaiveFlow {
        tensors,
        log_abs_det_a_inv: model.meta.log_abs_det_a_inv,
    };
    let mut opt = nn::Adam::default().build(&vs, cfg.lr).unwrap();
    let n = train.size()[0] as usize;
    for t in 0..iters {
        let order = epoch_order(cfg.seed, t, c, n);
        for chunk in order.chunks(cfg.batch_size) {
            let x = train
                .to_kind(kind)
                .index_select(0, &Tensor::from_slice(chunk));
            let loss = -flow.log_prob(&x).sum(kind);
            opt.backward_step(&loss);
        }
    }
    flow.tensors
}

fn copies(v: &[Tensor]) -> Vec<Tensor> {
    v.iter().map(|t| t.copy()).collect()
}

fn compare_with_reference(kind: Kind, lr: f64, iters: usize, tol: f64, min_moved: f64) {
    compare_with_reference_at(data(kind), lr, iters, tol, min_moved, 1)
}

/// Trains `data` in `lanes` lanes and compares every class with the per-class reference loop.
fn compare_with_reference_at(
    data: Data,
    lr: f64,
    iters: usize,
    tol: f64,
    min_moved: f64,
    lanes: usize,
) {
    let Data {
        model,
        validation,
        train,
    } = data;
    let kind = model.kind();
    let initial: Vec<Vec<(String, Tensor)>> =
        (0..3).map(|c| model.class_state_dict(c).unwrap()).collect();
    let cfg = config(lr);
    let want: Vec<HashMap<String, Tensor>> = (0..3)
        .map(|c| reference_train(&model, c, &train[c], &cfg, iters))
        .collect();
    let mut trainer = Trainer::with_lanes(model, train, validation, cfg, lanes).unwrap();
    assert_eq!(trainer.lanes(), lanes);
    for _ in 0..iters {
        trainer.train_iteration().unwrap();
    }
    assert_eq!(
        trainer.class_steps(),
        vec![3 * iters as u64, 2 * iters as u64, 2 * iters as u64]
    );
    let trained = trainer.into_model();
    let mut moved = 0.0f64;
    let mut worst = 0.0f64;
    for c in 0..3 {
        let got = trained.class_state_dict(c).unwrap();
        for ((name, g), (_, init)) in got.iter().zip(&initial[c]) {
            let w = &want[c][name];
            let err = max_abs_diff(g, w);
            assert!(err <= tol, "{kind:?} class {c} {name}: {err}");
            worst = worst.max(err);
            moved = moved.max(max_abs_diff(g, init));
        }
    }
    // Training did change the weights, by far more than the tolerance.
    eprintln!("{kind:?}: largest difference {worst:e}, largest change {moved:e}");
    assert!(moved > min_moved, "{moved}");
}

#[test]
fn batched_training_equals_per_class_training_f64() {
    compare_with_reference(Kind::Double, 1e-3, 3, 1e-9, 5e-3);
}

#[test]
fn training_in_one_lane_per_class_equals_per_class_training() {
    compare_with_reference_at(data(Kind::Double), 1e-3, 3, 1e-9, 5e-3, 3);
    compare_with_reference_at(data(Kind::Float), 1e-4, 3, 1e-5, 5e-4, 2);
}

#[test]
fn batched_training_equals_per_class_training_with_wide_hidden_layers() {
    // h = 256: the hidden-to-hidden rows are large enough for the row-by-row Adam update.
    let data = data_with_hidden(Kind::Double, 32.0);
    assert_eq!(data.model.meta.hidden, 256);
    compare_with_reference_at(data, 1e-3, 1, 1e-9, 1e-3, 1);
}

#[test]
fn batched_training_equals_per_class_training_f32() {
    compare_with_reference(Kind::Float, 1e-4, 3, 1e-5, 5e-4);
}

#[test]
fn losses_are_per_sample_sums_and_monitoring_runs() {
    let Data {
        model,
        validation,
        train,
    } = data(Kind::Double);
    let means_zero = Tensor::zeros([3, 10], (Kind::Double, CPU));
    // Reference figures before training: the validation loss of the initial model.
    let before: f64 = validation
        .iter()
        .enumerate()
        .map(|(c, v)| {
            let lp = model.log_prob(v, &means_zero).unwrap().select(1, c as i64);
            -f64::try_from(lp.sum(Kind::Double)).unwrap()
        })
        .sum::<f64>()
        / 300.0;
    let mut trainer = Trainer::new(model, train, validation, config(1e-4)).unwrap();
    assert!((trainer.validation_loss().unwrap() - before).abs() < 1e-9);
    let mut seen = Vec::new();
    let mut calls = 0;
    trainer
        .run(
            3,
            |m| {
                calls += 1;
                assert_eq!(m.num_classes(), 3);
                Ok(Some(0.5))
            },
            |_, r| {
                seen.push(r.clone());
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(calls, 2); // iterations 0 and 2
    assert_eq!(seen.len(), 3);
    assert!(seen[0].monitor.as_ref().unwrap().auroc == Some(0.5));
    assert!(seen[1].monitor.is_none());
    let m = seen[2].monitor.as_ref().unwrap();
    assert!(m.latent_std_min > 0.0 && m.latent_std_min <= m.latent_std_max);
    assert_eq!(trainer.history(), seen.as_slice());
    // Losses go down with training on this easy problem.
    assert!(seen[2].train_loss < seen[0].train_loss);
    assert!(seen[2].validation_loss < before);
}

#[test]
fn resume_continues_exactly() {
    let Data {
        model,
        validation,
        train,
    } = data(Kind::Double);
    let dir = tempfile::tempdir().unwrap();
    let mut straight = Trainer::new(
        FlowModel::load(
            {
                model.save(dir.path()).unwrap();
                dir.path()
            },
            Kind::Double,
            CPU,
        )
        .unwrap(),
        copies(&train),
        copies(&validation),
        config(1e-3),
    )
    .unwrap();
    for _ in 0..4 {
        straight.train_iteration().unwrap();
    }
    let mut first = Trainer::new(model, copies(&train), copies(&validation), config(1e-3)).unwrap();
    first.train_iteration().unwrap();
    first.train_iteration().unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    first.save_checkpoint(ckpt.path()).unwrap();
    let mut resumed = Trainer::resume(ckpt.path(), train, validation, Kind::Double, CPU).unwrap();
    assert_eq!(resumed.iteration(), 2);
    assert_eq!(resumed.class_steps(), vec![6, 4, 4]);
    resumed.train_iteration().unwrap();
    resumed.train_iteration().unwrap();
    assert_eq!(resumed.history(), straight.history());
    assert_same_classes(&resumed.into_model(), &straight.into_model(), 0.0);
}

#[test]
fn checkpoints_do_not_depend_on_the_lanes() {
    // Trained in 3 lanes, saved, resumed in 2 and in 1: both continue as the 3-lane run does.
    let d = data(Kind::Double);
    let (mut straight, mut first) = (trainer_in_lanes(&d, 3), trainer_in_lanes(&d, 3));
    for _ in 0..3 {
        straight.train_iteration().unwrap();
    }
    first.train_iteration().unwrap();
    first.train_iteration().unwrap();
    let ckpt = tempfile::tempdir().unwrap();
    first.save_checkpoint(ckpt.path()).unwrap();
    let want = straight.into_model();
    for lanes in [2, 1] {
        let (train, validation) = (copies(&d.train), copies(&d.validation));
        let mut resumed =
            Trainer::resume_in_lanes(ckpt.path(), train, validation, Kind::Double, CPU, lanes)
                .unwrap();
        assert_eq!(
            (resumed.lanes(), resumed.class_steps()),
            (lanes, vec![6, 4, 4])
        );
        resumed.train_iteration().unwrap();
        assert_same_classes(&resumed.into_model(), &want, 1e-12);
    }
}

#[test]
fn explicit_and_autograd_backward_passes_train_alike() {
    // The CPU's default, the explicit pass, against libtorch's autograd: same losses and weights
    // over three iterations (the last batches of the smaller classes go through autograd in both).
    let d = data(Kind::Double);
    let run = |backward: Backward| {
        let mut trainer = trainer_in_lanes(&d, 2).with_backward(backward).unwrap();
        assert_eq!(trainer.backward(), backward);
        let records: Vec<_> = (0..3).map(|_| trainer.train_iteration().unwrap()).collect();
        (records, trainer.into_model())
    };
    let (explicit, explicit_model) = run(Backward::Explicit);
    let (autograd, autograd_model) = run(Backward::Autograd);
    for (a, b) in explicit.iter().zip(&autograd) {
        assert!(
            (a.train_loss - b.train_loss).abs() <= 1e-9,
            "{a:?} vs {b:?}"
        );
        assert!(
            (a.validation_loss - b.validation_loss).abs() <= 1e-9,
            "{a:?} vs {b:?}"
        );
    }
    assert!(explicit[2].train_loss < explicit[0].train_loss);
    assert_same_classes(&explicit_model, &autograd_model, 1e-9);
    assert_eq!(default_backward(CPU, Kind::Float), Backward::Explicit);
    assert_eq!(default_backward(CPU, Kind::Half), Backward::Autograd);
    assert_eq!(
        default_backward(Device::Cuda(0), Kind::Float),
        Backward::Autograd
    );
}

/// A trainer over copies of `d`'s model and features in `lanes` lanes, learning rate 1e-3.
fn trainer_in_lanes(d: &Data, lanes: usize) -> Trainer {
    let model = FlowModel::select_classes(&d.model, 0..3).unwrap();
    let (train, validation) = (copies(&d.train), copies(&d.validation));
    Trainer::with_lanes(model, train, validation, config(1e-3), lanes).unwrap()
}

/// Every class's state dict of `a` is within `tol` of `b`'s (0: equal).
fn assert_same_classes(a: &FlowModel, b: &FlowModel, tol: f64) {
    for c in 0..a.num_classes() {
        let (x, y) = (
            a.class_state_dict(c).unwrap(),
            b.class_state_dict(c).unwrap(),
        );
        for ((n, x), (_, y)) in x.iter().zip(&y) {
            let err = max_abs_diff(x, y);
            assert!(
                err <= tol && (tol > 0.0 || x.equal(y)),
                "class {c} {n}: {err}"
            );
        }
    }
}

#[test]
fn non_finite_loss_names_iteration_and_class() {
    let Data {
        model,
        validation,
        mut train,
    } = data(Kind::Double);
    let before = model.class_state_dict(1).unwrap();
    let bad = train[1].copy();
    let _ = bad.get(17).get(3).fill_(f64::NAN);
    train[1] = bad;
    let mut trainer = Trainer::new(model, train, validation, config(1e-3)).unwrap();
    let err = trainer.train_iteration().unwrap_err();
    match &err {
        Error::NonFiniteLoss {
            iteration, class, ..
        } => assert_eq!((*iteration, *class), (0, 1)),
        other => panic!("unexpected error {other}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("iteration 0") && text.contains("class 1"),
        "{text}"
    );
    // Class 1 was never updated with the bad loss.
    let after = trainer.model().class_state_dict(1).unwrap();
    let step = trainer.class_steps()[1];
    if step == 0 {
        for ((n, x), (_, y)) in after.iter().zip(&before) {
            assert!(x.equal(y), "{n}");
        }
    }
}

#[test]
fn validation_split_and_orders() {
    let x: Vec<Tensor> = (0..3)
        .map(|c| Tensor::arange(20 + c, (Kind::Double, CPU)).view([-1, 1]))
        .collect();
    let (val, train) = split_validation(&x, 31).unwrap();
    for c in 0..3 {
        assert_eq!(val[c].size(), [10, 1]);
        assert_eq!(train[c].size()[0], 10 + c as i64);
        assert_eq!(f64::try_from(train[c].get(0).get(0)).unwrap(), 10.0);
    }
    assert!(split_validation(&x, 60).is_err());
    let o = epoch_order(1, 2, 3, 50);
    let mut sorted = o.clone();
    sorted.sort();
    assert_eq!(sorted, (0..50).collect::<Vec<i64>>());
    assert_eq!(o, epoch_order(1, 2, 3, 50));
    assert_ne!(o, epoch_order(1, 3, 3, 50));
    assert_ne!(o, epoch_order(1, 2, 4, 50));
}

/// Issue 14, defect 11: too few train rows for the validation hold-out names the flag to change.
#[test]
fn the_validation_size_error_names_its_flag() {
    let per_class: Vec<tch::Tensor> = (0..4)
        .map(|_| tch::Tensor::zeros([5, 3], (tch::Kind::Float, tch::Device::Cpu)))
        .collect();
    let Err(e) = resflow::detect::flow::split_validation(&per_class, 40) else {
        panic!("5 rows cannot hold out 10");
    };
    assert!(
        matches!(&e, Error::BadOption { option, .. } if option == "--validation-total"),
        "{e}"
    );
    let e = e.to_string();
    assert!(e.contains("--validation-total 40 over 4 classes"), "{e}");
    assert!(resflow::detect::flow::split_validation(&per_class, 16).is_ok());
}

fn refs(v: &[Tensor]) -> Vec<&Tensor> {
    v.iter().collect()
}

/// Asserts that two Adam runs (parameters, state) ended within `tolerance` of each other in
/// every parameter and moment.
fn assert_same_adam(
    (params_a, a): (&[Tensor], &resflow::detect::flow::adam::ClassAdam),
    (params_b, b): (&[Tensor], &resflow::detect::flow::adam::ClassAdam),
    tolerance: f64,
    label: &str,
) {
    for i in 0..params_a.len() {
        for (x, y, what) in [
            (&params_a[i], &params_b[i], "parameter"),
            (&a.m[i], &b.m[i], "m"),
            (&a.v[i], &b.v[i], "v"),
        ] {
            let err = max_abs_diff(x, y);
            assert!(err <= tolerance, "{label}: {what} {i}: {err}");
        }
    }
}

/// Adam over one flat buffer (every class stepping, with equal and with unequal step counts)
/// equals Adam tensor by tensor, on parameters with two and one stacked copies of 3 classes.
#[test]
fn flat_adam_equals_adam_tensor_by_tensor() {
    use resflow::detect::flow::adam::{AdamConfig, ClassAdam, CpuStep};
    let c = 3;
    let shapes: [&[i64]; 3] = [&[6, 4, 5], &[6, 1, 4], &[3, 1, 7]];
    let config = AdamConfig::with_lr(0.01);
    // Separate tensors, and the same values as consecutive views of one buffer.
    let separate: Vec<Tensor> = shapes
        .iter()
        .enumerate()
        .map(|(i, s)| randn(s, 10 + i as u64))
        .collect();
    let flat = Tensor::cat(
        &separate.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
        0,
    );
    let mut offset = 0;
    let views: Vec<Tensor> = separate
        .iter()
        .map(|t| {
            let n = t.numel() as i64;
            let v = flat.narrow(0, offset, n).view(t.size().as_slice());
            offset += n;
            v
        })
        .collect();
    let mut plain = ClassAdam::new(&refs(&separate), c, config)
        .unwrap()
        .with_cpu_step(CpuStep::TensorOps);
    let mut fused = ClassAdam::new(&refs(&views), c, config)
        .unwrap()
        .with_flat_parameters(&refs(&views), &flat)
        .unwrap()
        .with_cpu_step(CpuStep::TensorOps);
    // All classes twice (equal counts), class 1 alone (now unequal), then all again: the fused
    // step takes the scalar, the per-tensor and the per-row-coefficient paths in turn.
    for (round, active) in [
        vec![0, 1, 2],
        vec![0, 1, 2],
        vec![1],
        vec![0, 1, 2],
        vec![0, 1, 2],
    ]
    .iter()
    .enumerate()
    {
        let grads: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| randn(s, 100 * round as u64 + i as u64))
            .collect();
        plain.step(&refs(&separate), &grads, active).unwrap();
        fused.step(&refs(&views), &grads, active).unwrap();
    }
    assert_eq!(plain.steps, vec![4, 5, 4]);
    assert_eq!(fused.steps, plain.steps);
    assert_same_adam((&separate, &plain), (&views, &fused), 1e-12, "flat");
    // The parameters moved, by far more than the tolerance.
    assert!(max_abs_diff(&separate[0], &randn(shapes[0], 10)) > 1e-3);
    // A buffer the parameters are not views of is refused.
    let other = flat.copy();
    assert!(ClassAdam::new(&refs(&views), c, config)
        .unwrap()
        .with_flat_parameters(&refs(&views), &other)
        .is_err());
}

/// The CPU's one-pass Adam loop equals the tensor-operation step (float64: to 1e-12; float32: to
/// rounding), with all classes, one class alone (unequal step counts after it), and a gradient
/// that is not contiguous (a transposed view, as the flow's weight gradients are).
#[test]
fn cpu_adam_loop_equals_tensor_operations() {
    use resflow::detect::flow::adam::{AdamConfig, ClassAdam, CpuStep};
    let c = 3;
    let shapes: [&[i64]; 3] = [&[6, 4, 5], &[6, 1, 4], &[3, 1, 7]];
    let config = AdamConfig::with_lr(0.01);
    for (kind, tolerance) in [(Kind::Double, 1e-12), (Kind::Float, 1e-5)] {
        let start: Vec<Tensor> = shapes
            .iter()
            .enumerate()
            .map(|(i, s)| randn(s, 10 + i as u64).to_kind(kind))
            .collect();
        let looped: Vec<Tensor> = start.iter().map(|t| t.copy()).collect();
        let tensor_ops: Vec<Tensor> = start.iter().map(|t| t.copy()).collect();
        let mut by_loop = ClassAdam::new(&refs(&looped), c, config)
            .unwrap()
            .with_cpu_step(CpuStep::Loop);
        let mut by_ops = ClassAdam::new(&refs(&tensor_ops), c, config)
            .unwrap()
            .with_cpu_step(CpuStep::TensorOps);
        for (round, active) in [vec![0, 1, 2], vec![1], vec![0, 1, 2], vec![2, 0]]
            .iter()
            .enumerate()
        {
            let grads: Vec<Tensor> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    let g = randn(s, 100 * round as u64 + i as u64).to_kind(kind);
                    if i == 0 {
                        // Same values, transposed storage.
                        g.transpose(1, 2).contiguous().transpose(1, 2)
                    } else {
                        g
                    }
                })
                .collect();
            assert!(!grads[0].is_contiguous());
            by_loop.step(&refs(&looped), &grads, active).unwrap();
            by_ops.step(&refs(&tensor_ops), &grads, active).unwrap();
        }
        assert_eq!(by_loop.steps, vec![3, 3, 3]);
        assert_eq!(by_loop.steps, by_ops.steps);
        let label = format!("{kind:?} loop");
        assert_same_adam(
            (&tensor_ops, &by_ops),
            (&looped, &by_loop),
            tolerance,
            &label,
        );
        for (after, before) in looped.iter().zip(&start) {
            // The parameters moved, by far more than the tolerance.
            assert!(max_abs_diff(after, before) > 1e-3);
        }
    }
}
