//! scripts/convert_weights.py on files written by PyTorch in the published (legacy) forms: a
//! DataParallel ResNet state dict and a whole pickled DenseNet module whose classes carry the
//! reference's names (`models.densenet.DenseNet3`, ...), with PyTorch 0.3 traits (no
//! `num_batches_tracked`, no `padding_mode`), saved with `_use_new_zipfile_serialization=False`.
use crate::common;
use crate::flow_ref;

use std::path::Path;
use std::process::Command;

use flow_ref::{randn, randomise};
use resflow::data::Normalization;
use resflow::detect::flow::{FlowModel, FlowSpec};
use resflow::detect::gaussian::whitening;
use resflow::models::checkpoint::read_tensors;
use resflow::models::load_checkpoint;
use resflow::models::NetType;
use tch::{Device, Kind};

const MAKE: &str = r#"
import sys, types, torch
from safetensors.torch import save_file
sys.path.insert(0, sys.argv[1] + "/scripts")
import reference_models as rm
out = sys.argv[2]
torch.manual_seed(0)

def randomize(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()

x = torch.randn(3, 3, 32, 32)
r = randomize(rm.build("resnet", 4, 10))
torch.save({"module." + k: v for k, v in r.state_dict().items()}, out + "/resnet.pth",
           _use_new_zipfile_serialization=False)

pkg = types.ModuleType("models")
pkg.densenet = rm
sys.modules["models"] = pkg
sys.modules["models.densenet"] = rm
for cls in (rm.DenseNet3, rm.DenseBlock, rm.BottleneckBlock, rm.TransitionBlock):
    cls.__module__ = "models.densenet"
d = randomize(rm.build("densenet", 3, 100))
with torch.no_grad():
    expected = {"input": x, "resnet": r(x), "densenet": d(x)}
for m in d.modules():
    if isinstance(m, torch.nn.BatchNorm2d):
        del m._buffers["num_batches_tracked"]
    if isinstance(m, torch.nn.Conv2d):
        del m.padding_mode
torch.save(d, out + "/densenet.pth", _use_new_zipfile_serialization=False)

bad = r.state_dict()
del bad["layer3.1.conv2.weight"]
torch.save(bad, out + "/bad.pth", _use_new_zipfile_serialization=False)

save_file({k: v.contiguous() for k, v in expected.items()}, out + "/expected.safetensors")
"#;

fn convert(args: &[&str]) -> std::process::Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/convert_weights.py");
    Command::new(common::python())
        .arg(script)
        .args(args)
        .output()
        .expect("cannot start the setup's Python")
}

fn convert_ok(args: &[&str]) {
    let out = convert(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn converted_legacy_files_load_and_give_pytorch_logits() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::run_python(MAKE, &[root, dir.path()]);
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let expected = read_tensors(&dir.path().join("expected.safetensors")).unwrap();
    let x = &expected["input"];

    for (net, dataset, classes, norm) in [
        (NetType::Resnet, "cifar10", 10, Normalization::RESNET),
        (NetType::Densenet, "cifar100", 100, Normalization::DENSENET),
    ] {
        let name = net.name();
        let out = d(&format!("converted/{name}_{dataset}.safetensors"));
        convert_ok(&[
            "classifier",
            "--net-type",
            name,
            "--dataset",
            dataset,
            &d(&format!("{name}.pth")),
            &out,
        ]);
        let loaded = load_checkpoint(Path::new(&out), Device::Cpu).unwrap();
        assert_eq!(loaded.meta.architecture, net);
        assert_eq!(loaded.meta.num_classes, classes);
        assert_eq!(
            loaded.meta.width,
            if net == NetType::Resnet { 4 } else { 3 }
        );
        assert_eq!(loaded.meta.dataset, dataset);
        for j in 0..3 {
            assert!((loaded.meta.normalization.mean[j] - norm.mean[j]).abs() < 1e-12);
            assert!((loaded.meta.normalization.std[j] - norm.std[j]).abs() < 1e-12);
        }
        let logits = tch::no_grad(|| loaded.net.forward_t(x, false));
        let diff = (logits - &expected[name]).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "{name}: logits differ by {diff}");
        // The counters were filled, so the file also loads into PyTorch strictly.
        let tensors = read_tensors(Path::new(&out)).unwrap();
        assert_eq!(tensors["bn1.num_batches_tracked"].int64_value(&[]), 0);
    }

    let args = ["classifier", "--net-type", "resnet", "--dataset", "cifar10"];
    let out = d("bad.safetensors");
    convert_refused(&args, &[&d("bad.pth"), &out], "layer3.1.conv2.weight", &out);
}

/// The conversion fails, naming `bad.pth` and `mentions`, and writes nothing at `output`.
fn convert_refused(args: &[&str], paths: &[&str], mentions: &str, output: &str) {
    let all: Vec<&str> = args.iter().chain(paths).copied().collect();
    let bad = convert(&all);
    assert!(!bad.status.success());
    let message = String::from_utf8_lossy(&bad.stderr);
    assert!(
        message.contains("bad.pth") && message.contains(mentions),
        "{message}"
    );
    assert!(!Path::new(output).exists());
}

/// Our flow's per-class safetensors written back as legacy `.pth` state dicts (the published form).
const FLOWS_TO_PTH: &str = r#"
import sys, glob, torch
from safetensors.torch import load_file
src, out = sys.argv[1], sys.argv[2]
for c in range(3):
    sd = load_file("%s/flow_%d.safetensors" % (src, c))
    torch.save(sd, "%s/class%d.pth" % (out, c), _use_new_zipfile_serialization=False)
bad = load_file(src + "/flow_0.safetensors")
del bad["A_"]
torch.save(bad, out + "/bad.pth", _use_new_zipfile_serialization=False)
"#;

#[test]
fn converted_published_flows_form_a_flow_folder_with_the_same_densities() {
    let dir = tempfile::tempdir().unwrap();
    let d = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let features = randn(&[300, 8], 1);
    let w = whitening(&features).unwrap();
    let spec = FlowSpec {
        num_classes: 3,
        length_hidden: 0.5,
        layer: 2,
        net: "resnet".into(),
        dataset: "cifar10".into(),
    };
    let init = FlowModel::init(&spec, &w, 4, Kind::Double, Device::Cpu).unwrap();
    let original = randomise(
        &init,
        &dir.path().join("ours"),
        0.5,
        (0.2, 0.6),
        Kind::Double,
    );
    common::run_python(FLOWS_TO_PTH, &[&dir.path().join("ours"), dir.path()]);

    let classes = [d("class0.pth"), d("class1.pth"), d("class2.pth")];
    let mut args = vec![
        "flow",
        "--net_type",
        "resnet",
        "--dataset",
        "cifar10",
        "--layer",
        "2",
    ];
    let folder = d("output/resnet_cifar10/flow/layer_2");
    args.push(&folder);
    args.extend(classes.iter().map(String::as_str));
    convert_ok(&args);
    let converted = FlowModel::load(Path::new(&folder), Kind::Double, Device::Cpu).unwrap();
    // log |det A_inv| comes from the singular values of `A_` (not in the published files).
    let (ours, theirs) = (&original.meta, &converted.meta);
    assert!((ours.log_abs_det_a_inv - theirs.log_abs_det_a_inv).abs() < 1e-9);
    let same = resflow::detect::flow::FlowMeta {
        log_abs_det_a_inv: ours.log_abs_det_a_inv,
        ..theirs.clone()
    };
    assert_eq!(&same, ours);
    let means = randn(&[3, 8], 2);
    let q = randn(&[20, 8], 3);
    let want = original.log_prob(&q, &means).unwrap();
    let got = converted.log_prob(&q, &means).unwrap();
    let err = (got - want).abs().max().double_value(&[]);
    assert!(err < 1e-9, "{err}");

    let out = d("bad_out");
    let args = [
        "flow",
        "--net-type",
        "resnet",
        "--dataset",
        "cifar10",
        "--layer",
        "2",
    ];
    convert_refused(&args, &[&out, &classes[0], &d("bad.pth")], "`A_`", &out);
}
