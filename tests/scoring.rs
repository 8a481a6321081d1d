//! Input pre-processing (SPEC 6, 7): the reused-gradient scores equal a direct per-magnitude
//! computation, and the Mahalanobis gradient sign step and scores equal the reference's PyTorch
//! code on the same weights.
mod common;

use std::path::Path;

use resflow::cli::NetType;
use resflow::gaussian::mahalanobis_scores;
use resflow::models::checkpoint::read_tensors;
use resflow::models::{load_weights_strict, mean_pool, Classifier, NetConfig};
use resflow::scoring::{gradient_step, preprocessed_scores, sign_step};
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

fn resnet(weights: &Path) -> (VarStore, Box<dyn Classifier>) {
    let mut vs = VarStore::new(Device::Cpu);
    let net = NetConfig {
        net_type: NetType::Resnet,
        width: 4,
        num_classes: 10,
    }
    .build(&vs.root())
    .unwrap();
    load_weights_strict(&mut vs, weights).unwrap();
    (vs, net)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
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

#[test]
fn reused_gradient_equals_a_direct_computation_per_magnitude() {
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let net = NetConfig {
        net_type: NetType::Resnet,
        width: 4,
        num_classes: 10,
    }
    .build(&vs.root())
    .unwrap();
    let x = Tensor::randn([5, 3, 32, 32], (Kind::Float, Device::Cpu));
    let layer = 3;
    let d = net.layer_channels()[layer];
    let means = Tensor::randn([10, d], (Kind::Double, Device::Cpu)) * 0.2;
    let precision = Tensor::eye(d, (Kind::Double, Device::Cpu)) * 2.0;
    let score = |f: &Tensor| mahalanobis_scores(f, &means, &precision);
    let reused = preprocessed_scores(net.as_ref(), &x, layer, STD, &MAGNITUDES, &score).unwrap();
    for (k, &eps) in MAGNITUDES.iter().enumerate() {
        // Direct: a fresh gradient for this magnitude, loss written out per sample.
        let input = x.detach().set_requires_grad(true);
        let f = mean_pool(&net.intermediate_forward(&input, layer).unwrap());
        let s = mahalanobis_scores(&f, &means, &precision).unwrap();
        let mut loss = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for i in 0..5 {
            let c = s.get(i).argmax(0, false).int64_value(&[]);
            loss -= s.get(i).get(c);
        }
        let grad = Tensor::run_backward(&[loss / 5.0], &[&input], false, false)
            .pop()
            .unwrap();
        let mut step = grad.sign();
        step = step.where_self(&grad.ne(0.0), &Tensor::ones_like(&step));
        let stds = Tensor::from_slice(&STD.map(|v| v as f32)).view([1, 3, 1, 1]);
        let perturbed = &x - (step / stds) * eps;
        let direct = tch::no_grad(|| {
            let f = mean_pool(&net.intermediate_forward(&perturbed, layer).unwrap());
            mahalanobis_scores(&f, &means, &precision).unwrap()
        });
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
