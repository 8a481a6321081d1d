//! Parity with PyTorch: the reference modules (scripts/reference_models.py) with random weights and
//! non-trivial BatchNorm statistics give the same logits, layer features and input gradients in Rust
//! (eval mode, float32).
use crate::common;

use std::collections::HashMap;
use std::path::Path;

use resflow::models::checkpoint::read_tensors;
use resflow::models::NetType;
use resflow::models::{load_weights_strict, mean_pool, NetConfig};
use tch::{nn::VarStore, Device, Kind, Tensor};

const SCRIPT: &str = r#"
import sys
import torch
sys.path.insert(0, sys.argv[1] + "/scripts")
import reference_models as rm
from safetensors.torch import save_file

out, net, width, ncls, n = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
torch.manual_seed(20200614)
model = rm.build(net, width, ncls)
bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
with torch.no_grad():
    for m in bns:
        m.momentum = None  # cumulative averages: realistic running statistics
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-0.2, 0.2)
    model.train()
    for _ in range(2):
        model(torch.randn(8, 3, 32, 32))
    for m in bns:  # move them off the batch statistics so that eval mode is really tested
        m.running_mean.add_(0.05 * torch.randn_like(m.running_mean))
        m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25))
model.eval()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out + "/weights.safetensors")

x = torch.randn(n, 3, 32, 32)
labels = torch.randint(0, ncls, (n,))
expected = {"input": x, "labels": labels}
with torch.no_grad():
    logits, feats = model.feature_list(x)
expected["logits"] = logits
for l, f in enumerate(feats):
    expected["feature%d" % l] = f
    w = torch.randn(f.size(1))
    xg = x.clone().requires_grad_(True)
    act = model.intermediate_forward(xg, l)
    pooled = act.view(act.size(0), act.size(1), -1).mean(2)
    (pooled * w).sum().backward()
    expected["weight%d" % l] = w
    expected["grad%d" % l] = xg.grad
xg = x.clone().requires_grad_(True)
torch.nn.functional.cross_entropy(model(xg), labels).backward()
expected["grad_ce"] = xg.grad
save_file({k: v.contiguous() for k, v in expected.items()}, out + "/expected.safetensors")
print(len(feats))
"#;

/// Max |a - b| and max |b|.
fn diff(a: &Tensor, b: &Tensor) -> (f64, f64) {
    assert_eq!(a.size(), b.size(), "shape mismatch");
    let d = (a - b).abs().max().double_value(&[]);
    (d, b.abs().max().double_value(&[]))
}

fn check(what: &str, got: &Tensor, want: &Tensor, tol: f64) {
    let (d, scale) = diff(got, want);
    println!("{what}: max abs diff {d:.3e} (max |value| {scale:.3e})");
    assert!(
        d <= tol,
        "{what}: max abs diff {d} > {tol} (max |value| {scale})"
    );
}

fn parity(net_type: NetType, width: i64, num_classes: i64, batch: i64) {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (w, c, n) = (
        width.to_string(),
        num_classes.to_string(),
        batch.to_string(),
    );
    let args: Vec<&Path> = vec![
        root,
        dir.path(),
        Path::new(net_type.name()),
        Path::new(&w),
        Path::new(&c),
        Path::new(&n),
    ];
    let printed = common::run_python(SCRIPT, &args);

    let config = NetConfig {
        net_type,
        width,
        num_classes,
    };
    let mut vs = VarStore::new(Device::Cpu);
    let net = config.build(&vs.root()).unwrap();
    load_weights_strict(&mut vs, &dir.path().join("weights.safetensors")).unwrap();
    assert_eq!(printed.trim(), net.num_layers().to_string());
    let e: HashMap<String, Tensor> =
        read_tensors(&dir.path().join("expected.safetensors")).unwrap();
    let x = &e["input"];

    let (logits, feats) = tch::no_grad(|| net.feature_list(x));
    check("logits", &logits, &e["logits"], 1e-4);
    check(
        "logits (forward_t)",
        &tch::no_grad(|| net.forward_t(x, false)),
        &e["logits"],
        1e-4,
    );
    assert_eq!(feats.len(), net.num_layers());
    for (l, f) in feats.iter().enumerate() {
        assert_eq!(f.size()[1], net.layer_channels()[l]);
        check(&format!("feature {l}"), f, &e[&format!("feature{l}")], 1e-4);
        let alone = tch::no_grad(|| net.intermediate_forward(x, l).unwrap());
        check(&format!("intermediate_forward {l}"), &alone, f, 0.0);

        let xg = x.detach().set_requires_grad(true);
        let pooled = mean_pool(&net.intermediate_forward(&xg, l).unwrap());
        (pooled * &e[&format!("weight{l}")])
            .sum(Kind::Float)
            .backward();
        let want = &e[&format!("grad{l}")];
        let scale = want.abs().max().double_value(&[]);
        check(
            &format!("input gradient, layer {l}"),
            &xg.grad(),
            want,
            1e-4 * scale.max(1e-3),
        );
    }
    let xg = x.detach().set_requires_grad(true);
    net.forward_t(&xg, false)
        .cross_entropy_for_logits(&e["labels"])
        .backward();
    let want = &e["grad_ce"];
    let scale = want.abs().max().double_value(&[]);
    check(
        "input gradient, cross-entropy",
        &xg.grad(),
        want,
        1e-4 * scale.max(1e-3),
    );
    assert!(net.intermediate_forward(x, net.num_layers()).is_err());
}

#[test]
fn resnet_small_width_matches_pytorch() {
    parity(NetType::Resnet, 4, 10, 4);
}

#[test]
fn densenet_small_growth_matches_pytorch() {
    parity(NetType::Densenet, 3, 7, 4);
}

#[test]
fn resnet34_paper_size_matches_pytorch() {
    parity(NetType::Resnet, 64, 10, 2);
}

#[test]
fn densenet_bc100_paper_size_matches_pytorch() {
    parity(NetType::Densenet, 12, 100, 2);
}
