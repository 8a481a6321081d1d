//! The batched flow against the Gaussian model, a per-class implementation, PyTorch, and a grid
//! integral; checkpoint round trips in the reference's names.
use crate::common;
use crate::common::max_abs_diff;
use crate::flow_ref;

use flow_ref::{randn, randomise, NaiveFlow};
use resflow::detect::flow::checkpoint::class_file;
use resflow::detect::flow::{default_length_hidden, hidden_size, FlowModel, FlowSpec};
use resflow::detect::gaussian::{centre_by_class, class_means, whitening, TiedGaussian};
use std::path::Path;
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

/// Labelled features of rank `rank` in `d` dimensions with class offsets (well conditioned).
fn features(n: i64, d: i64, rank: i64, classes: i64, seed: u64) -> (Tensor, Tensor) {
    let low = randn(&[n, rank], seed);
    let mix = randn(&[rank, d], seed + 1) * 0.5 + Tensor::eye_m(rank, d, (Kind::Double, CPU)) * 2.0;
    let labels = Tensor::arange(n, (Kind::Int64, CPU)).remainder(classes);
    let offsets = randn(&[classes, d], seed + 2) * 2.0;
    (low.matmul(&mix) + offsets.index_select(0, &labels), labels)
}

struct Setup {
    model: FlowModel,
    means: Tensor,
    features: Tensor,
    labels: Tensor,
}

fn setup(n: i64, d: i64, rank: i64, classes: i64, length_hidden: f64, kind: Kind) -> Setup {
    let (features, labels) = features(n, d, rank, classes, 11);
    let means = class_means(&features, &labels, classes as usize).unwrap();
    let w = whitening(&centre_by_class(&features, &labels, &means).unwrap()).unwrap();
    let spec = FlowSpec {
        num_classes: classes as usize,
        length_hidden,
        layer: 2,
        net: "resnet".into(),
        dataset: "cifar10".into(),
    };
    let model = FlowModel::init(&spec, &w, 5, kind, CPU).unwrap();
    Setup {
        model,
        means,
        features,
        labels,
    }
}

fn naive_flows(model: &FlowModel) -> Vec<NaiveFlow> {
    (0..model.num_classes())
        .map(|c| {
            NaiveFlow::new(
                model.class_state_dict(c).unwrap(),
                model.meta.log_abs_det_a_inv,
            )
        })
        .collect()
}

fn naive_log_prob(flows: &[NaiveFlow], q: &Tensor, means: &Tensor) -> Tensor {
    let cols: Vec<Tensor> = flows
        .iter()
        .enumerate()
        .map(|(c, f)| f.log_prob(&(q - means.get(c as i64))))
        .collect();
    Tensor::stack(&cols, 1)
}

/// Gaussian log-density with covariance A A^T on the column space of A, from A alone.
fn gaussian_from_a(a: &Tensor, x: &Tensor) -> Tensor {
    let ata = a.tr().matmul(a);
    let pinv = ata.inverse().matmul(&a.tr()); // [k, d]
    let k = a.size()[1] as f64;
    let logdet = -0.5 * f64::try_from(ata.logdet()).unwrap();
    let z = x.matmul(&pinv.tr());
    z.square().sum_dim_intlist(1, false, Kind::Double) * -0.5 + logdet
        - 0.5 * k * (2.0 * std::f64::consts::PI).ln()
}

#[test]
fn at_initialisation_log_p_is_the_gaussian_density() {
    for (d, rank) in [(6, 6), (7, 5)] {
        let s = setup(240, d, rank, 3, 1.0, Kind::Double);
        let q = randn(&[25, d], 101) * 2.0;
        let lp = s.model.log_prob(&q, &s.means).unwrap();
        assert_eq!(lp.size(), [25, 3]);
        for c in 0..3 {
            let want = gaussian_from_a(&s.model.a, &(&q - s.means.get(c)));
            let err = max_abs_diff(&lp.select(1, c), &want);
            assert!(err <= 1e-6, "d={d} class {c}: {err}");
        }
        if d == rank {
            // Full rank: log p_c - const = Mahalanobis score, so the max-class rankings coincide.
            let maha = TiedGaussian::fit(&s.features, &s.labels, 3)
                .unwrap()
                .scores(&q)
                .unwrap();
            let diff = &lp - &maha;
            let spread = max_abs_diff(&diff, &(diff.mean(Kind::Double) + diff.zeros_like()));
            let scale = f64::try_from(maha.abs().max()).unwrap().max(1.0);
            assert!(spread <= 1e-9 * scale, "{spread} (scale {scale})");
            assert!(lp.argmax(1, false).equal(&maha.argmax(1, false)));
        }
    }
}

#[test]
fn batched_model_equals_per_class_flows() {
    let s = setup(300, 10, 8, 3, 1.5, Kind::Double);
    assert_eq!((s.model.meta.k, s.model.meta.hidden), (8, 12));
    let dir = tempfile::tempdir().unwrap();
    let model = randomise(&s.model, dir.path(), 1.0, (0.5, 1.5), Kind::Double);
    let q = randn(&[40, 10], 102) * 2.0;
    let lp = model.log_prob(&q, &s.means).unwrap();
    let flows = naive_flows(&model);
    let want = naive_log_prob(&flows, &q, &s.means);
    let err = max_abs_diff(&lp, &want);
    assert!(err <= 1e-10, "{err}");
    // The random weights matter: the result is far from the initial Gaussian model.
    assert!(max_abs_diff(&lp, &s.model.log_prob(&q, &s.means).unwrap()) > 0.1);
    // A subset of classes in a different order, each with its own batch.
    let classes = [2i64, 0];
    let centred = Tensor::stack(&[&q - s.means.get(2), &q - s.means.get(0)], 0);
    let sub = model.log_prob_centred(&centred, Some(&classes)).unwrap();
    assert!(max_abs_diff(&sub.get(0), &lp.select(1, 2)) <= 1e-10);
    assert!(max_abs_diff(&sub.get(1), &lp.select(1, 0)) <= 1e-10);
    // Float32 model close to the float64 result, chunked evaluation equal to the plain one.
    let m32 = FlowModel::load(dir.path(), Kind::Float, CPU).unwrap();
    let lp32 = m32.log_prob(&q.to_kind(Kind::Float), &s.means).unwrap();
    assert_eq!(lp32.kind(), Kind::Float);
    let scale = f64::try_from(want.abs().max()).unwrap();
    assert!(max_abs_diff(&lp32, &want) <= 1e-5 * scale.max(1.0) * 10.0);
    let chunked = model.log_prob_chunked(&q, &s.means, 7).unwrap();
    assert!(max_abs_diff(&chunked, &lp) <= 1e-12);
}

const PYTORCH_FLOW: &str = r#"
import sys, json, numpy as np, torch
sys.path.insert(0, sys.argv[1])
from realnvp import load_flows
torch.set_default_dtype(torch.float64)
d = sys.argv[2]
meta = json.load(open(d + '/flow.json'))
q = torch.from_numpy(np.load(d + '/q.npy')); means = torch.from_numpy(np.load(d + '/means.npy'))
with torch.no_grad():
    cols = [flow.log_prob(q - means[c]) for c, flow in enumerate(load_flows(d, meta))]
np.save(d + '/lp.npy', torch.stack(cols, 1).numpy())
print('ok')
"#;

#[test]
fn batched_model_equals_a_pytorch_reimplementation_of_the_reference() {
    let s = setup(300, 10, 8, 3, 1.0, Kind::Double);
    let dir = tempfile::tempdir().unwrap();
    let model = randomise(&s.model, dir.path(), 1.0, (0.5, 1.5), Kind::Double);
    let q = randn(&[30, 10], 103) * 2.0;
    q.write_npy(dir.path().join("q.npy")).unwrap();
    s.means.write_npy(dir.path().join("means.npy")).unwrap();
    let flow_ref = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/flow_ref");
    let out = common::run_python(PYTORCH_FLOW, &[&flow_ref, dir.path()]);
    assert!(out.contains("ok"));
    let want = Tensor::read_npy(dir.path().join("lp.npy")).unwrap();
    let lp = model.log_prob(&q, &s.means).unwrap();
    let err = max_abs_diff(&lp, &want);
    assert!(err <= 1e-5, "{err}");
}

#[test]
fn density_of_a_random_2d_flow_integrates_to_one() {
    let s = setup(400, 2, 2, 2, 4.0, Kind::Double);
    let dir = tempfile::tempdir().unwrap();
    let model = randomise(&s.model, dir.path(), 0.5, (0.1, 0.4), Kind::Double);
    let (lo, hi, steps) = (-16.0f64, 16.0f64, 800i64);
    let dx = (hi - lo) / steps as f64;
    let axis = Tensor::arange(steps, (Kind::Double, CPU)) * dx + (lo + dx / 2.0);
    let grid = Tensor::stack(
        &[
            axis.repeat_interleave_self_int(steps, 0, None),
            axis.repeat([steps]),
        ],
        1,
    );
    let mut totals = [0.0f64; 2];
    let mut edge = 0.0f64;
    tch::no_grad(|| {
        let n = grid.size()[0];
        for start in (0..n).step_by(200_000) {
            let part = grid.narrow(0, start, 200_000.min(n - start));
            let centred = Tensor::stack(&[&part, &part], 0);
            let p = model.log_prob_centred(&centred, None).unwrap().exp();
            for (c, total) in totals.iter_mut().enumerate() {
                *total += f64::try_from(p.get(c as i64).sum(Kind::Double)).unwrap() * dx * dx;
            }
            let on_edge = part.abs().amax([1i64].as_slice(), false).gt(hi - 1.0);
            let edge_p = p.masked_select(&on_edge.unsqueeze(0).expand_as(&p));
            if edge_p.numel() > 0 {
                edge = edge.max(f64::try_from(edge_p.max()).unwrap());
            }
        }
    });
    eprintln!("integrals {totals:?}, border density {edge:e}");
    assert!(
        edge < 1e-6,
        "density not negligible at the grid border: {edge}"
    );
    for (c, total) in totals.iter().enumerate() {
        assert!((total - 1.0).abs() < 1e-3, "class {c}: integral {total}");
    }
    // The flow is far from the Gaussian it started as.
    let q = randn(&[50, 2], 104);
    assert!(
        max_abs_diff(
            &model.log_prob(&q, &s.means).unwrap(),
            &s.model.log_prob(&q, &s.means).unwrap()
        ) > 0.1
    );
}

fn reference_names(k: usize) -> Vec<String> {
    let _ = k;
    let mut names = flow_ref::trainable_names();
    names.push("mask".into());
    names.push("A".into());
    names.push("A_".into());
    for j in 0..5 {
        for b in ["perm", "inv_perm", "W"] {
            names.push(format!("perm.{j}.{b}"));
        }
    }
    names.sort();
    names
}

#[test]
fn checkpoints_round_trip_in_reference_names() {
    let s = setup(300, 10, 8, 3, 0.5, Kind::Double);
    let dir = tempfile::tempdir().unwrap();
    let model = randomise(&s.model, dir.path(), 1.0, (0.5, 1.5), Kind::Double);
    let dir2 = tempfile::tempdir().unwrap();
    model.save(dir2.path()).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir2.path().join("flow.json")).unwrap())
            .unwrap();
    for (key, want) in [
        ("k", serde_json::json!(8)),
        ("hidden", serde_json::json!(4)),
        ("length_hidden", serde_json::json!(0.5)),
        ("layer", serde_json::json!(2)),
        ("net", serde_json::json!("resnet")),
        ("dataset", serde_json::json!("cifar10")),
        ("num_classes", serde_json::json!(3)),
    ] {
        assert_eq!(meta[key], want, "{key}");
    }
    let loaded = FlowModel::load(dir2.path(), Kind::Double, CPU).unwrap();
    assert_eq!(loaded.meta, model.meta);
    for c in 0..3 {
        let file = Tensor::read_safetensors(class_file(dir2.path(), c)).unwrap();
        let mut names: Vec<String> = file.iter().map(|(n, _)| n.clone()).collect();
        names.sort();
        assert_eq!(names, reference_names(8));
        let a = model.class_state_dict(c).unwrap();
        let b = loaded.class_state_dict(c).unwrap();
        for ((na, ta), (nb, tb)) in a.iter().zip(&b) {
            assert_eq!(na, nb);
            assert!(ta.equal(tb), "{na} differs after the round trip");
        }
        // Layout of a few reference tensors.
        let get = |n: &str| file.iter().find(|(m, _)| m == n).unwrap().1.shallow_clone();
        assert_eq!(get("s.3.fc1.weight").size(), [4, 8]);
        assert_eq!(get("t.3.fc3.weight").size(), [8, 4]);
        assert_eq!(get("s.0.rescale.weight_g").size(), [1, 1]);
        assert_eq!(get("s.0.rescale.weight_v").size(), [1, 8]);
        assert_eq!(get("mask").size(), [10, 8]);
        let p = get("perm.1.perm");
        assert!(get("perm.1.W")
            .matmul(&Tensor::arange(8, (Kind::Double, CPU)))
            .equal(&p.to_kind(Kind::Double)));
        assert!(p
            .index_select(0, &get("perm.1.inv_perm"))
            .equal(&Tensor::arange(8, (Kind::Int64, CPU))));
    }
    let q = randn(&[9, 10], 105);
    assert!(loaded
        .log_prob(&q, &s.means)
        .unwrap()
        .equal(&model.log_prob(&q, &s.means).unwrap()));

    // A damaged permutation is an error, not a panic.
    let mut dict = model.class_state_dict(1).unwrap();
    for (n, t) in dict.iter_mut() {
        if n == "perm.2.perm" {
            *t = t.zeros_like();
        }
    }
    Tensor::write_safetensors(&dict, class_file(dir2.path(), 1)).unwrap();
    let err = FlowModel::load(dir2.path(), Kind::Double, CPU)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a permutation"), "{err}");
}

#[test]
fn initialisation_follows_the_reference() {
    let s = setup(300, 10, 8, 2, 1.0, Kind::Double);
    let dict = s.model.class_state_dict(1).unwrap();
    let get = |n: &str| dict.iter().find(|(m, _)| m == n).unwrap().1.shallow_clone();
    for i in 0..10 {
        for net in ["s", "t"] {
            assert_eq!(
                f64::try_from(get(&format!("{net}.{i}.fc3.weight")).abs().max()).unwrap(),
                0.0
            );
            assert_eq!(
                f64::try_from(get(&format!("{net}.{i}.fc3.bias")).abs().max()).unwrap(),
                0.0
            );
            let w1 = get(&format!("{net}.{i}.fc1.weight"));
            let bound = 1.0 / 8f64.sqrt();
            assert!(f64::try_from(w1.abs().max()).unwrap() <= bound);
            assert!(f64::try_from(w1.std(true)).unwrap() > 0.5 * bound / 3f64.sqrt());
        }
        assert!(
            (f64::try_from(get(&format!("s.{i}.rescale.weight_g")).sum(Kind::Double)).unwrap()
                - 8f64.sqrt())
            .abs()
                < 1e-12
        );
        assert!(get(&format!("s.{i}.rescale.weight_v"))
            .equal(&Tensor::ones([1, 8], (Kind::Double, CPU))));
    }
    // Seeded: the same seed gives the same flow, permutations differ between classes.
    let again = setup(300, 10, 8, 2, 1.0, Kind::Double);
    for ((n, a), (_, b)) in dict.iter().zip(again.model.class_state_dict(1).unwrap()) {
        assert!(a.equal(&b), "{n}");
    }
    let other = s.model.class_state_dict(0).unwrap();
    let p0 = other
        .iter()
        .find(|(m, _)| m == "perm.0.perm")
        .unwrap()
        .1
        .shallow_clone();
    assert!(!p0.equal(&get("perm.0.perm")));
}

#[test]
fn length_hidden_defaults_follow_the_reference_table() {
    assert_eq!(default_length_hidden("densenet", "cifar100", 3), 0.5);
    assert_eq!(default_length_hidden("resnet", "cifar100", 4), 0.2);
    assert_eq!(default_length_hidden("resnet", "svhn", 4), 0.5);
    assert_eq!(default_length_hidden("resnet", "cifar10", 4), 1.0);
    assert_eq!(default_length_hidden("densenet", "cifar100", 2), 1.0);
    assert_eq!(hidden_size(0.2, 512), 102);
    assert_eq!(hidden_size(0.5, 342), 171);
    assert_eq!(hidden_size(1.0, 64), 64);
}

#[test]
fn explicit_backward_pass_equals_autograd() {
    use resflow::detect::flow::backprop::class_losses_and_gradients;
    let s = setup(300, 10, 8, 3, 1.5, Kind::Double);
    let dir = tempfile::tempdir().unwrap();
    randomise(&s.model, dir.path(), 1.0, (0.5, 1.5), Kind::Double);
    let q = randn(&[37, 10], 7) * 2.0;
    let centred: Vec<Tensor> = (0..3).map(|c| &q - s.means.get(c)).collect();
    let centred = Tensor::stack(&centred, 0);
    for (kind, tol) in [(Kind::Double, 1e-12), (Kind::Float, 1e-5)] {
        let mut model = FlowModel::load(dir.path(), kind, CPU).unwrap();
        // Without gradient tracking the pass has nothing to differentiate: a clear error.
        assert!(class_losses_and_gradients(&model, &centred, 1).is_err());
        model.set_trainable(true);
        let lp = model.log_prob_centred(&centred, None).unwrap();
        let want_losses = -lp.sum_dim_intlist(1, false, kind);
        let params = model.parameters();
        let want = Tensor::run_backward(&[want_losses.sum(kind)], &params, false, false);
        for threads in [1, 2] {
            let (losses, grads) = class_losses_and_gradients(&model, &centred, threads).unwrap();
            let scale = f64::try_from(want_losses.abs().max()).unwrap();
            let err = max_abs_diff(&losses, &want_losses) / scale;
            assert!(err <= tol, "{kind:?} losses: relative error {err}");
            assert_eq!(grads.len(), want.len());
            for (j, (got, want)) in grads.iter().zip(&want).enumerate() {
                assert_eq!(got.size(), want.size(), "gradient {j}");
                let scale = f64::try_from(want.abs().max()).unwrap();
                // Random weights: every gradient is far from zero.
                assert!(scale > 1e-3, "gradient {j} is {scale}");
                let err = max_abs_diff(got, want) / scale;
                assert!(
                    err <= tol,
                    "{kind:?} gradient {j} ({threads} threads): {err}"
                );
            }
        }
    }
}
