//! Your own model and data (issue 11): image folders of any size and mode, read as PIL and
//! torchvision read them, and a torchvision ResNet-18 exported with scripts/export_torchscript.py,
//! run through every stage.
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::common::{max_abs_diff, run_binary, run_failing, run_python};
use resflow::data::folder::read_resized;
use resflow::detect::preprocess::input_gradient;
use resflow::models::load_checkpoint;
use resflow::store::results::read_results;
use resflow::store::RunDir;
use tch::{Device, Kind, Tensor};

/// The fixture of `own_model/make_toy.py`, written once per test process.
fn fixture() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("own_model_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts");
        let out = run_python(include_str!("own_model/make_toy.py"), &[&dir, &scripts]);
        assert_eq!(out.trim(), "42", "test images written");
        dir
    })
}

fn read_npy(path: &Path) -> Tensor {
    Tensor::read_npy(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `--net-type torchscript` with the fixture's model and data set, outputs under `outf`.
fn own_args(outf: &Path) -> Vec<String> {
    let f = fixture();
    vec![
        "--net-type".into(),
        "torchscript".into(),
        "--dataset".into(),
        format!("toy={}", f.join("data").display()),
        "--outf".into(),
        outf.display().to_string(),
    ]
}

fn run_stage(bin: &str, outf: &Path, extra: &[&str]) -> String {
    let mut args = own_args(outf);
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_binary(bin, &args, &[])
}

/// rf-prepare of the fixture's model and data set with OOD folder `ood` and `extra` flags.
fn prepare(outf: &Path, classifier: &Path, ood: &str, extra: &[&str]) -> String {
    let ood = format!("odd={}", fixture().join(ood).display());
    let classifier = classifier.display().to_string();
    let mut args = vec![
        "--classifier",
        &classifier,
        "--ood",
        &ood,
        "--batch-size",
        "16",
    ];
    args.extend(extra);
    run_stage(env!("CARGO_BIN_EXE_rf-prepare"), outf, &args)
}

#[test]
fn image_folders_decode_resize_and_crop_as_pil_and_torchvision() {
    let dir = tempfile::tempdir().unwrap();
    // Every mode PIL writes to PNG, sizes above, below and at the side, extreme aspect ratios;
    // then JPEG (another decoder than PIL's libjpeg-turbo, hence a tolerance).
    let script = r#"
import sys, os, numpy as np
from PIL import Image
from torchvision import transforms
out = sys.argv[1]
rng = np.random.default_rng(3)
sizes = [(32, 32), (45, 90), (200, 33), (17, 23), (64, 64), (97, 61), (3, 40)]
modes = ["L", "LA", "RGB", "RGBA", "P", "1"]
names = []
for i, (w, h) in enumerate(sizes * 2):
    mode = modes[i % len(modes)]
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3)).astype(np.uint8), "RGB")
    img = img.quantize(colors=20) if mode == "P" else img.convert(mode)
    if mode == "RGBA":
        img.putalpha(Image.fromarray(rng.integers(0, 256, (h, w)).astype(np.uint8), "L"))
    ext = "jpg" if i >= len(sizes) and mode in ("L", "RGB") else "png"
    name = "img_%02d_%s.%s" % (i, mode, ext)
    img.save(os.path.join(out, name), quality=95) if ext == "jpg" else img.save(os.path.join(out, name))
    names.append(name)
for side in (32, 50):
    t = transforms.Compose([transforms.Resize(side), transforms.CenterCrop(side)])
    for name in names:
        rgb = t(Image.open(os.path.join(out, name)).convert("RGB"))
        np.save(os.path.join(out, "%s.%d.npy" % (name, side)), np.asarray(rgb).transpose(2, 0, 1).copy())
print(" ".join(names))
"#;
    let names = run_python(script, &[dir.path()]);
    let names: Vec<&str> = names.split_whitespace().collect();
    assert_eq!(names.len(), 14);
    let (mut png, mut jpeg) = (0, 0);
    for side in [32, 50] {
        for name in &names {
            let ours = read_resized(&dir.path().join(name), side).unwrap();
            assert_eq!(ours.dimensions(), (side, side));
            let ours = Tensor::from_slice(ours.as_raw())
                .view([side as i64, side as i64, 3])
                .permute([2, 0, 1]);
            let pil = read_npy(&dir.path().join(format!("{name}.{side}.npy")));
            let diff = max_abs_diff(&ours, &pil);
            if name.ends_with(".png") {
                png += 1;
                assert_eq!(
                    diff, 0.0,
                    "{name} at {side}: PNG pixels differ from PIL's by {diff}"
                );
            } else {
                jpeg += 1;
                let mean = (ours.to_kind(Kind::Double) - pil.to_kind(Kind::Double))
                    .abs()
                    .mean(Kind::Double)
                    .double_value(&[]);
                assert!(
                    diff <= 8.0 && mean <= 1.0,
                    "{name} at {side}: JPEG pixels differ from PIL's by up to {diff} (mean {mean})"
                );
            }
        }
    }
    assert_eq!((png, jpeg), (24, 4));
}

#[test]
fn exported_resnet18_features_and_input_gradient_equal_pytorch() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let printed = prepare(out.path(), &f.join("model.pt"), "ood", &[]);
    assert!(printed.contains("layer 4: 512 channels"), "{printed}");
    let features = RunDir::new(out.path(), "torchscript", "toy").features();
    let manifest = features.manifest().unwrap();
    assert_eq!(manifest.layer_channels, vec![64, 64, 128, 256, 512]);
    assert_eq!(
        (
            manifest.sets["train"],
            manifest.sets["test"],
            manifest.sets["ood_odd"]
        ),
        (48, 42, 44)
    );
    for l in 0..5 {
        let ours = read_npy(&features.layer_path("test", l));
        let theirs = read_npy(&f.join(format!("ref_test_layer{l}.npy")));
        let diff = max_abs_diff(&ours, &theirs);
        assert!(
            diff <= 1e-4,
            "layer {l}: stored features differ from PyTorch's by {diff}"
        );
    }

    // The input gradient of pre-processing, through the TorchScript module.
    let loaded = load_checkpoint(&f.join("model.pt"), Device::Cpu).unwrap();
    let x = read_npy(&f.join("ref_x.npy"));
    let mu = read_npy(&f.join("ref_mu.npy"));
    let score = |feat: &Tensor| -> resflow::Result<Tensor> {
        let d = feat.unsqueeze(1) - mu.unsqueeze(0);
        Ok((d.square().sum_dim_intlist(-1, false, Kind::Float)) * -0.5)
    };
    let (grad, _) = input_gradient(loaded.net.as_ref(), &x, 2, &score).unwrap();
    let theirs = read_npy(&f.join("ref_grad.npy"));
    let scale = theirs.abs().max().double_value(&[]);
    let diff = max_abs_diff(&grad, &theirs);
    assert!(scale > 0.0);
    assert!(
        diff <= 1e-4 && diff <= 1e-4 * scale,
        "input gradient differs from autograd's by {diff} (largest component {scale})"
    );
}

#[test]
fn exported_resnet18_runs_through_every_stage() {
    let f = fixture();
    let out = tempfile::tempdir().unwrap();
    let outf = out.path();
    let model = f.join("model.pt").display().to_string();
    let attacked = run_stage(
        env!("CARGO_BIN_EXE_rf-fgsm"),
        outf,
        &["--classifier", &model],
    );
    assert!(attacked.contains("samples; written to"), "{attacked}");
    prepare(
        outf,
        &f.join("model.pt"),
        "ood",
        &["--validation-src", "fgsm"],
    );
    run_stage(
        env!("CARGO_BIN_EXE_rf-mahalanobis"),
        outf,
        &["--batch-size", "50", "--validation-src", "fgsm"],
    );
    let run = RunDir::new(outf, "torchscript", "toy");
    assert!(run.mahalanobis_path("fgsm", 0.0).exists());
    let layers = run_binary(
        env!("CARGO_BIN_EXE_rf-data"),
        &["layers", "--net-type", "torchscript"],
        &[("--classifier", &f.join("model.pt"))],
    );
    assert_eq!(layers.trim(), "0 1 2 3 4");
    for layer in layers.split_whitespace() {
        run_stage(
            env!("CARGO_BIN_EXE_rf-train"),
            outf,
            &[
                "--layer",
                layer,
                "--num-iter",
                "2",
                "--validation-total",
                "12",
            ],
        );
    }
    run_stage(
        env!("CARGO_BIN_EXE_rf-score"),
        outf,
        &["--batch-size", "50"],
    );
    run_stage(
        env!("CARGO_BIN_EXE_rf-baselines"),
        outf,
        &["--knn-k", "5", "--vim-dim", "16"],
    );
    for detector in resflow::detect::DetectorKind::ALL {
        let table = run_stage(
            env!("CARGO_BIN_EXE_rf-regress"),
            outf,
            &[
                "--detector",
                detector.name(),
                "--no-plots",
                "--bootstrap",
                "50",
            ],
        );
        assert!(table.contains("odd"), "{detector:?}: {table}");
    }
    let results = read_results(&run.results_path())
        .unwrap()
        .expect("results.json");
    // One record per detector (one OOD set, one validation).
    assert_eq!(
        results.results.len(),
        resflow::detect::DetectorKind::ALL.len()
    );
    for record in &results.results {
        assert_eq!(record.ood, "odd");
        assert_eq!((record.counts.test_in, record.counts.test_ood), (22, 24));
        for m in record.metrics() {
            assert!((-1e-12..=100.0 + 1e-9).contains(&m), "{record:?}");
        }
    }
}

/// rf-prepare with `classifier` and `ood` must fail, say `expected` (and name `file`), and
/// write no feature manifest.
fn refused(classifier: &Path, dataset: &Path, ood: &Path, expected: &[&str]) {
    let out = tempfile::tempdir().unwrap();
    let args: Vec<std::ffi::OsString> = vec![
        "--net-type".into(),
        "torchscript".into(),
        "--classifier".into(),
        classifier.into(),
        "--dataset".into(),
        format!("toy={}", dataset.display()).into(),
        "--ood".into(),
        format!("odd={}", ood.display()).into(),
        "--outf".into(),
        out.path().into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    let stderr = run_failing(env!("CARGO_BIN_EXE_rf-prepare"), &args);
    for e in expected {
        assert!(stderr.contains(e), "expected `{e}` in:\n{stderr}");
    }
    let manifest = RunDir::new(out.path(), "torchscript", "toy")
        .features()
        .manifest_path();
    assert!(!manifest.exists(), "{} written", manifest.display());
}

#[test]
fn bad_models_sidecars_and_folders_are_refused_by_name() {
    let f = fixture();
    let dir = tempfile::tempdir().unwrap();
    let (data, ood) = (f.join("data"), f.join("ood"));
    let sidecar: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("model.json")).unwrap()).unwrap();
    // A copy of the model with an edited sidecar.
    let variant = |name: &str, edit: &dyn Fn(&mut serde_json::Value)| -> PathBuf {
        let model = dir.path().join(format!("{name}.pt"));
        std::fs::copy(f.join("model.pt"), &model).unwrap();
        let mut s = sidecar.clone();
        edit(&mut s);
        std::fs::write(model.with_extension("json"), s.to_string()).unwrap();
        model
    };
    let no_features = f.join("no_features.pt");
    refused(
        &no_features,
        &data,
        &ood,
        &["no_features.pt", "feature_list", "export_torchscript.py"],
    );

    let classes = variant("classes", &|s| {
        s["class_names"] = serde_json::json!(["a", "b", "c", "d"])
    });
    refused(
        &classes,
        &data,
        &ood,
        &["classes.json", "4 classes", "class_names"],
    );
    let layers = variant("layers", &|s| {
        s["feature_layers"] = serde_json::json!(["layer3", "layer4"])
    });
    refused(
        &layers,
        &data,
        &ood,
        &["layers.json", "2 feature layers", "returns 5"],
    );
    let head = variant("head", &|s| {
        s["linear_head"] = serde_json::json!("extractor.nonesuch")
    });
    refused(
        &head,
        &data,
        &ood,
        &["head.json", "extractor.nonesuch.weight"],
    );
    // A model that only takes 32x32 inputs, its sidecar saying 48.
    let fixed = dir.path().join("fixed.pt");
    std::fs::copy(f.join("fixed.pt"), &fixed).unwrap();
    let mut s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(f.join("fixed.json")).unwrap()).unwrap();
    s["input_size"] = serde_json::json!(48);
    std::fs::write(fixed.with_extension("json"), s.to_string()).unwrap();
    refused(
        &fixed,
        &data,
        &ood,
        &["fixed.pt", "[2,3,48,48]", "input_size"],
    );
    // A sidecar that is missing, or not ours.
    let lonely = dir.path().join("lonely.pt");
    std::fs::copy(f.join("model.pt"), &lonely).unwrap();
    refused(
        &lonely,
        &data,
        &ood,
        &["lonely.json", "export_torchscript.py"],
    );
    let pickle = dir.path().join("weights.pth");
    std::fs::write(&pickle, b"not a zip archive").unwrap();
    std::fs::write(pickle.with_extension("json"), sidecar.to_string()).unwrap();
    refused(
        &pickle,
        &data,
        &ood,
        &["weights.pth", "not a TorchScript archive"],
    );

    // Folders: no images, an empty class, a test class missing from train, an undecodable image.
    let model = f.join("model.pt");
    refused(
        &model,
        &data,
        &f.join("empty"),
        &["empty", "no .jpg/.jpeg/.png images"],
    );
    let copy = |name: &str| -> PathBuf {
        let root = dir.path().join(name);
        for split in ["train", "test"] {
            for class in ["ant", "bee", "cat"] {
                let to = root.join(split).join(class);
                std::fs::create_dir_all(&to).unwrap();
                let from = data.join(split).join(class).join("img_000.png");
                std::fs::copy(&from, to.join("a.png")).unwrap();
            }
        }
        root
    };
    let empty_class = copy("empty_class");
    std::fs::remove_file(empty_class.join("train/bee/a.png")).unwrap();
    refused(&model, &empty_class, &ood, &["train/bee", "holds no"]);
    let extra_class = copy("extra_class");
    std::fs::create_dir_all(extra_class.join("test/dog")).unwrap();
    std::fs::copy(
        data.join("test/ant/img_000.png"),
        extra_class.join("test/dog/a.png"),
    )
    .unwrap();
    refused(
        &model,
        &extra_class,
        &ood,
        &["test/dog", "not a class of the train split"],
    );
    let broken = copy("broken");
    std::fs::write(broken.join("test/cat/b.png"), b"not a png").unwrap();
    refused(&model, &broken, &ood, &["test/cat/b.png", "cannot decode"]);
}
