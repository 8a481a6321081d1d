//! BatchNorm recalibration: the running mean and variance it sets equal the exact per-channel mean
//! and unbiased variance of every BatchNorm's inputs over the whole set, computed independently by
//! PyTorch (the reference modules in train mode, their BatchNorm inputs caught by forward hooks).
use std::collections::HashMap;
use std::path::Path;

use crate::common::{max_abs_diff, run_python};
use rand::{Rng, SeedableRng};
use resflow::data::{Batches, ImageSet};
use resflow::models::checkpoint::{read_tensors, write_tensors};
use resflow::models::train::recalibrate_batch_norm;
use resflow::models::{NetConfig, NetType};
use resflow::progress::Quiet;
use tch::{nn::VarStore, Device, Kind, Tensor};

const SCRIPT: &str = r#"
import sys
import torch
sys.path.insert(0, sys.argv[1] + "/scripts")
import reference_models as rm
from safetensors.torch import load_file, save_file

out, net, width, ncls = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
model = rm.build(net, width, ncls)
missing, unexpected = model.load_state_dict(load_file(out + "/weights.safetensors"), strict=False)
assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), (missing, unexpected)
inputs = {}
for name, m in model.named_modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        inputs[name] = []
        m.register_forward_pre_hook(lambda m, i, name=name: inputs[name].append(i[0].double()))
batches = load_file(out + "/batches.safetensors")
model.train()
with torch.no_grad():
    for b in range(len(batches)):
        model(batches["batch%d" % b])
expected = {}
for name, xs in inputs.items():
    x = torch.cat(xs).transpose(0, 1).reshape(xs[0].size(1), -1)  # [C, all values]
    expected[name + ".running_mean"] = x.mean(1)
    expected[name + ".running_var"] = x.var(1, correction=1)
save_file(expected, out + "/expected.safetensors")
print(len(inputs))
"#;

/// `n` images of noise from a seeded generator (not libtorch's global one, which the tests running
/// in parallel share), 3 classes.
fn noise_set(n: i64) -> ImageSet {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
    let pixels: Vec<u8> = (0..n * 3 * 32 * 32).map(|_| rng.random()).collect();
    let images = Tensor::from_slice(&pixels).view([n, 3, 32, 32]);
    let labels = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(3);
    ImageSet::new("noise", Path::new("noise"), images, labels, 3).unwrap()
}

fn exact_moments(net_type: NetType, width: i64, batch_norms: usize) {
    let dir = tempfile::tempdir().unwrap();
    let set = noise_set(70);
    let norm = set.channel_stats();
    let vs = VarStore::new(Device::Cpu);
    let config = NetConfig {
        net_type,
        width,
        num_classes: 3,
    };
    let net = config.build_seeded(&vs, 3).unwrap();
    // BatchNorm scales and shifts away from 1 and 0, so that the later BatchNorms' inputs depend
    // on them; running statistics far from anything, which the recalibration must not depend on.
    tch::no_grad(|| {
        for (name, mut t) in vs.variables() {
            let size = t.size();
            if name.ends_with("running_mean") {
                let _ = t.fill_(5.0);
            } else if name.ends_with("running_var") {
                let _ = t.fill_(7.0);
            } else if name.ends_with("bn1.weight") || name.ends_with("bn2.weight") {
                t.copy_(&(Tensor::rand(size, (Kind::Float, Device::Cpu)) + 0.5));
            } else if name.ends_with("bn1.bias") || name.ends_with("bn2.bias") {
                t.copy_(&((Tensor::rand(size, (Kind::Float, Device::Cpu)) - 0.5) * 0.4));
            }
        }
    });
    let before: HashMap<String, Tensor> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.copy()))
        .collect();
    write_tensors(&dir.path().join("weights.safetensors"), &before).unwrap();
    // The batches the recalibration sees (70 = 32 + 32 + 6: the small last batch weighs 6 images).
    let seed = 8;
    let batches: HashMap<String, Tensor> = Batches::new(&set, norm, 32, Device::Cpu, Some(seed))
        .enumerate()
        .map(|(i, b)| (format!("batch{i}"), b.images))
        .collect();
    assert_eq!(batches.len(), 3);
    write_tensors(&dir.path().join("batches.safetensors"), &batches).unwrap();

    let count =
        recalibrate_batch_norm(net.as_ref(), &vs, &set, &norm, 32, seed, &mut Quiet).unwrap();
    assert_eq!(count, batch_norms);

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = run_python(
        SCRIPT,
        &[
            root,
            dir.path(),
            Path::new(net_type.name()),
            Path::new(&width.to_string()),
            Path::new("3"),
        ],
    );
    assert_eq!(out.trim(), batch_norms.to_string(), "BatchNorms in PyTorch");
    let expected = read_tensors(&dir.path().join("expected.safetensors")).unwrap();
    assert_eq!(expected.len(), 2 * batch_norms);
    let now = vs.variables();
    let mut worst = 0.0f64;
    for (name, want) in &expected {
        let got = &now[name];
        let scale = want.abs().max().double_value(&[]).max(1.0);
        let d = max_abs_diff(got, want) / scale;
        worst = worst.max(d);
        // float32 rounding of the same kernels (5e-8 here); dividing by n instead of n - 1
        // would be off by 1e-5 already in layer1.
        assert!(d <= 2e-6, "{name}: differs by {d} (relative to {scale})");
    }
    println!("largest relative difference {worst:.2e}");
    // Nothing else changed.
    for (name, t) in &before {
        if !expected.contains_key(name) {
            assert!(t.equal(&now[name]), "{name} changed");
        }
    }
}

#[test]
fn recalibrated_resnet_statistics_are_the_exact_moments_of_the_batch_norm_inputs() {
    // ResNet-34: stem, 16 blocks of two, 3 shortcuts.
    exact_moments(NetType::Resnet, 2, 1 + 16 * 2 + 3);
}

#[test]
fn recalibrated_densenet_statistics_are_the_exact_moments_of_the_batch_norm_inputs() {
    // DenseNet-BC-100: 48 bottleneck layers of two, 2 transitions, the final one.
    exact_moments(NetType::Densenet, 2, 48 * 2 + 2 + 1);
}
