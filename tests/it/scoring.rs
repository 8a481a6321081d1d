//! Input pre-processing (`docs/method.md#input-pre-processing` and
//! `docs/method.md#the-mahalanobis-detector`): for the Mahalanobis scores and the residual flow,
//! the reused-gradient scores equal a direct per-magnitude computation, and the gradient sign step
//! and scores equal PyTorch code (the reference's, transcribed) on the same weights.
use crate::common;
use crate::common::{max_abs_diff, resnet_width4 as resnet};
use crate::flow_ref;

use std::path::Path;

use flow_ref::{randn, randomise};
use resflow::detect::flow::{FlowModel, FlowSpec};
use resflow::detect::gaussian::{mahalanobis_scores, whitening};
use resflow::detect::preprocess::{gradient_step, preprocessed_scores, sign_step};
use resflow::models::checkpoint::read_tensors;
use resflow::models::NetType;
use resflow::models::{mean_pool, Classifier, NetConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

const STD: [f64; 3] = [0.2023, 0.1994, 0.2010];
const MAGNITUDES: [f64; 4] = [0.0, 0.01, 0.002, 0.0005];

/// The reference's get_Mahalanobis_score for one layer, transcribed (CPU instead of CUDA).
const SCRIPT: &str = r#"
import sys, torch
sys.path.insert(0, sys.argv[1] + "/scripts")
import reference_models as rm
from safetensors.torch import save_file
out, layer = sys.argv[2], int(sys.argv[3])
torch.manual_seed(7)
model = rm.build("resnet", 4, 10)
model.eval()
x = torch.randn(6, 3, 32, 32)
with torch.no_grad():
    d = model.intermediate_forward(x, layer).shape[1]
sample_mean = torch.randn(10, d) * 0.3
r = torch.randn(d, d)
precision = r @ r.t() / d + torch.eye(d)
inputs = x.clone().requires_grad_(True)
f = model.intermediate_forward(inputs, layer)
f = torch.mean(f.view(f.size(0), f.size(1), -1), 2)
gaussian_score = 0
for i in range(10):
    zero_f = f.data - sample_mean[i]
    term_gau = -0.5 * torch.mm(torch.mm(zero_f, precision), zero_f.t()).diag()
    gaussian_score = term_gau.view(-1, 1) if i == 0 else torch.cat((gaussian_score, term_gau.view(-1, 1)), 1)
sample_pred = gaussian_score.max(1)[1]
zero_f = f - sample_mean.index_select(0, sample_pred)
pure_gau = -0.5 * torch.mm(torch.mm(zero_f, precision), zero_f.t()).diag()
loss = torch.mean(-pure_gau)
loss.backward()
gradient = torch.ge(inputs.grad.data, 0)
gradient = (gradient.float() - 0.5) * 2
for j, s in enumerate([0.2023, 0.1994, 0.2010]):
    gradient[:, j] = gradient[:, j] / s
scores = {}
for k, magnitude in enumerate([0.0, 0.01, 0.002, 0.0005]):
    temp = torch.add(x.data, gradient, alpha=-magnitude)
    with torch.no_grad():
        g = model.intermediate_forward(temp, layer)
        g = torch.mean(g.view(g.size(0), g.size(1), -1), 2)
        cols = [(-0.5 * torch.mm(torch.mm(g - sample_mean[i], precision), (g - sample_mean[i]).t()).diag()).view(-1, 1) for i in range(10)]
        scores["scores%d" % k] = torch.cat(cols, 1).max(1)[0].contiguous()
tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(tensors, out + "/weights.safetensors")
save_file({"x": x, "mean": sample_mean, "precision": precision, "step": gradient.contiguous(), "grad": inputs.grad.contiguous(), **scores}, out + "/case.safetensors")
"#;

/// A width-4 ResNet with weights drawn from `seed`.
fn seeded_resnet(seed: u64) -> (VarStore, Box<dyn Classifier>) {
    let vs = VarStore::new(Device::Cpu);
    let net = NetConfig {
        net_type: NetType::Resnet,
        width: 4,
        num_classes: 10,
    }
    .build_seeded(&vs, seed)
    .unwrap();
    (vs, net)
}

#[test]
fn mahalanobis_preprocessing_matches_the_reference_pytorch_code() {
    for layer in [0usize, 2, 4] {
        let dir = tempfile::tempdir().unwrap();
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        common::run_python(SCRIPT, &[root, dir.path(), Path::new(&layer.to_string())]);
        let (_vs, net) = resnet(&dir.path().join("weights.safetensors"));
        let case = read_tensors(&dir.path().join("case.safetensors")).unwrap();
        let (x, mean, precision) = (&case["x"], &case["mean"], &case["precision"]);
        let score = |f: &Tensor| mahalanobis_scores(f, mean, precision);

        let step = gradient_step(net.as_ref(), x, layer, STD, &score).unwrap();
        // Signs agree wherever the reference gradient is clearly non-zero.
        let clear = case["grad"].abs().gt(1e-9);
        let disagree = step
            .ne_tensor(&case["step"])
            .logical_and(&clear)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(disagree, 0, "layer {layer}: sign steps differ");

        let ours = preprocessed_scores(net.as_ref(), x, layer, STD, &MAGNITUDES, &score).unwrap();
        for (k, scores) in ours.iter().enumerate() {
            let theirs = &case[&format!("scores{k}")];
            let best = scores.max_dim(1, false).0;
            let tol = 1e-4 * (1.0 + theirs.abs().max().double_value(&[]));
            assert!(
                max_abs_diff(&best, theirs) < tol,
                "layer {layer} eps {}: {}",
                MAGNITUDES[k],
                max_abs_diff(&best, theirs)
            );
        }
    }
}

/// Scores after pre-processing with magnitude `eps`, computed directly: a fresh gradient of the
/// loss written out per sample, the sign step by hand, then the perturbed scores.
fn direct_scores(
    net: &dyn Classifier,
    x: &Tensor,
    layer: usize,
    eps: f64,
    score: &dyn Fn(&Tensor) -> resflow::error::Result<Tensor>,
) -> Tensor {
    let n = x.size()[0];
    let input = x.detach().set_requires_grad(true);
    let f = mean_pool(&net.intermediate_forward(&input, layer).unwrap());
    let s = score(&f).unwrap();
    let mut loss = Tensor::zeros([], (s.kind(), Device::Cpu));
    for i in 0..n {
        let c = s.get(i).argmax(0, false).int64_value(&[]);
        loss -= s.get(i).get(c);
    }
    let grad = Tensor::run_backward(&[loss / n as f64], &[&input], false, false)
        .pop()
        .unwrap();
    let mut step = grad.sign();
    step = step.where_self(&grad.ne(0.0), &Tensor::ones_like(&step));
    let stds = Tensor::from_slice(&STD.map(|v| v as f32)).view([1, 3, 1, 1]);
    let perturbed = x - (step / stds) * eps;
    tch::no_grad(|| {
        let f = mean_pool(&net.intermediate_forward(&perturbed, layer).unwrap());
        score(&f).unwrap()
    })
}

#[test]
fn reused_gradient_equals_a_direct_computation_per_magnitude() {
    let (_vs, net) = seeded_resnet(11);
    let x = randn(&[5, 3, 32, 32], 12).to_kind(Kind::Float);
    let layer = 3;
    let d = net.layer_channels()[layer];
    let means = randn(&[10, d], 13) * 0.2;
    let precision = Tensor::eye(d, (Kind::Double, Device::Cpu)) * 2.0;
    let score = |f: &Tensor| mahalanobis_scores(f, &means, &precision);
    let reused = preprocessed_scores(net.as_ref(), &x, layer, STD, &MAGNITUDES, &score).unwrap();
    for (k, &eps) in MAGNITUDES.iter().enumerate() {
        let direct = direct_scores(net.as_ref(), &x, layer, eps, &score);
        assert!(
            max_abs_diff(&reused[k], &direct) < 1e-4,
            "eps {eps}: {}",
            max_abs_diff(&reused[k], &direct)
        );
    }
}

#[test]
fn sign_step_counts_zero_as_positive_and_divides_by_std() {
    let grad = Tensor::from_slice(&[0.0f32, -1e-12, 3.0, -2.0, 0.0, 5.0]).view([1, 3, 2, 1]);
    let step = sign_step(&grad, [0.5, 0.25, 2.0]);
    let expected = Tensor::from_slice(&[2.0f32, -2.0, 4.0, -4.0, 0.5, 0.5]).view([1, 3, 2, 1]);
    assert!(step.equal(&expected), "{step:?}");
}

/// The residual flow's pre-processing (`docs/method.md#input-pre-processing`) in PyTorch: the
/// ResNet and the reference's RealNVP flows of one layer in float64, gradient sign step and
/// class-max scores after each magnitude.
const FLOW_SCRIPT: &str = r#"
import sys, json, numpy as np, torch
sys.path.insert(0, sys.argv[1] + "/scripts")
sys.path.insert(0, sys.argv[1] + "/tests/it/flow_ref")
import reference_models as rm
from realnvp import load_flows
from safetensors.torch import load_file, save_file
d, layer = sys.argv[2], int(sys.argv[3])
torch.set_default_dtype(torch.float64)
model = rm.build("resnet", 4, 10).double()
model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in load_file(d + "/weights.safetensors").items()})
model.eval()
flows = load_flows(d + "/flow", json.load(open(d + "/flow/flow.json")))
case = load_file(d + "/input.safetensors")
x, means = case["x"].double(), case["means"].double()
def scores(inp):
    f = model.intermediate_forward(inp, layer)
    f = torch.mean(f.view(f.size(0), f.size(1), -1), 2)
    return torch.stack([flow.log_prob(f - means[c]) for c, flow in enumerate(flows)], 1)
inputs = x.clone().requires_grad_(True)
s = scores(inputs)
best = s.max(1)[1]
loss = torch.mean(-s.gather(1, best.view(-1, 1)))
loss.backward()
gradient = (torch.ge(inputs.grad.data, 0).double() - 0.5) * 2
for j, sd in enumerate([0.2023, 0.1994, 0.2010]):
    gradient[:, j] = gradient[:, j] / sd
out = {"grad": inputs.grad.contiguous(), "step": gradient.contiguous()}
for k, magnitude in enumerate([0.0, 0.01, 0.002, 0.0005]):
    with torch.no_grad():
        out["scores%d" % k] = scores(torch.add(x, gradient, alpha=-magnitude)).contiguous()
save_file(out, d + "/case.safetensors")
"#;

/// A seeded width-4 ResNet saved to `dir/weights.safetensors`, and a flow with random weights for
/// its layer `layer` (whitening of random features) saved to `dir/flow`, with class means.
fn resnet_and_flow(dir: &Path, layer: usize) -> (Box<dyn Classifier>, FlowModel, Tensor) {
    let (vs, net) = seeded_resnet(21);
    vs.save(dir.join("weights.safetensors")).unwrap();
    let d = net.layer_channels()[layer];
    let w = whitening(&(randn(&[400, d], 5) * 0.5)).unwrap();
    let spec = FlowSpec {
        num_classes: 10,
        length_hidden: 1.0,
        layer,
        net: "resnet".into(),
        dataset: "synthetic".into(),
    };
    let init = FlowModel::init(&spec, &w, 3, Kind::Float, Device::Cpu).unwrap();
    let flow_dir = dir.join("flow");
    let flow = randomise(&init, &flow_dir, 0.5, (0.2, 0.6), Kind::Float);
    let means = randn(&[10, d], 6).to_kind(Kind::Float) * 0.3;
    (net, flow, means)
}

#[test]
fn flow_preprocessing_matches_a_pytorch_implementation_of_the_reference() {
    let layer = 3;
    let dir = tempfile::tempdir().unwrap();
    let (net, flow, means) = resnet_and_flow(dir.path(), layer);
    let x = randn(&[6, 3, 32, 32], 7).to_kind(Kind::Float);
    let input = [("x", &x), ("means", &means)];
    Tensor::write_safetensors(&input, dir.path().join("input.safetensors")).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::run_python(
        FLOW_SCRIPT,
        &[root, dir.path(), Path::new(&layer.to_string())],
    );
    let case = read_tensors(&dir.path().join("case.safetensors")).unwrap();
    let score = |f: &Tensor| flow.log_prob(f, &means);

    // Signs agree wherever the reference gradient is clear of float32 rounding.
    let step = gradient_step(net.as_ref(), &x, layer, STD, &score).unwrap();
    let grad = &case["grad"];
    let clear = grad.abs().gt(1e-4 * grad.abs().max().double_value(&[]));
    let step = step.to_kind(Kind::Double);
    assert!(max_abs_diff(&step.abs(), &case["step"].abs()) < 1e-6);
    let disagree = step
        .gt(0.0)
        .ne_tensor(&case["step"].gt(0.0))
        .logical_and(&clear)
        .sum(Kind::Int64)
        .int64_value(&[]);
    let clear_count = clear.sum(Kind::Int64).int64_value(&[]);
    assert!(clear_count > 6 * 3 * 32 * 32 * 9 / 10, "{clear_count}");
    assert_eq!(disagree, 0, "sign steps differ");

    let ours = preprocessed_scores(net.as_ref(), &x, layer, STD, &MAGNITUDES, &score).unwrap();
    for (k, scores) in ours.iter().enumerate() {
        let theirs = &case[&format!("scores{k}")];
        let tol = 1e-4 * (1.0 + theirs.abs().max().double_value(&[]));
        let err = max_abs_diff(scores, theirs);
        assert!(err < tol, "eps {}: {err} (tolerance {tol})", MAGNITUDES[k]);
    }
}

#[test]
fn flow_reused_gradient_equals_a_direct_computation_per_magnitude() {
    let layer = 2;
    let dir = tempfile::tempdir().unwrap();
    let (net, flow, means) = resnet_and_flow(dir.path(), layer);
    let x = randn(&[5, 3, 32, 32], 8).to_kind(Kind::Float);
    let score = |f: &Tensor| flow.log_prob(f, &means);
    let reused = preprocessed_scores(net.as_ref(), &x, layer, STD, &MAGNITUDES, &score).unwrap();
    for (k, &eps) in MAGNITUDES.iter().enumerate() {
        let direct = direct_scores(net.as_ref(), &x, layer, eps, &score);
        let err = max_abs_diff(&reused[k], &direct);
        assert!(
            err < 1e-4 * (1.0 + direct.abs().max().double_value(&[])),
            "eps {eps}: {err}"
        );
    }
}
