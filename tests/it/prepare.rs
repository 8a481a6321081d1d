//! The prepare stage on a small data root and a small random-weight ResNet: stored features equal a
//! direct forward pass, train rows are grouped by class, statistics match an independent
//! recomputation, and the binary writes the documented folder.
use crate::common;
use crate::common::max_abs_diff;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{random_classifier, root_with_classes};
use resflow::data::{self, Split};
use resflow::detect::gaussian::LayerStats;
use resflow::models::NetType;
use resflow::models::{load_checkpoint, mean_pool, LoadedClassifier};
use resflow::pipeline::prepare::{prepare, FeatureOptions};
use resflow::progress::Quiet;
use resflow::store::features::FeatureDir;
use resflow::store::RunDir;
use tch::{Device, Kind, Tensor};

#[test]
fn prepared_features_and_statistics_are_right() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    root_with_classes(&root, 8, 20);
    let weights = dir.path().join("net.safetensors");
    random_classifier(&weights, &root, 10, 3);
    let classifier = load_checkpoint(&weights, Device::Cpu).unwrap();
    let fdir = RunDir::new(
        &dir.path().join("out"),
        NetType::Resnet.name(),
        "fashion-mnist",
    )
    .features();
    let options = FeatureOptions {
        dataroot: root.clone(),
        ood_sets: vec!["mnist".into(), "uniform".into()],
        batch_size: 7,
        max_train: None,
        max_test: None,
        max_ood: Some(50),
        fgsm: None,
    };
    let manifest = prepare(
        &classifier,
        &weights,
        "fashion-mnist",
        &fdir,
        &options,
        Device::Cpu,
        &mut Quiet,
    )
    .unwrap();
    let counts: Vec<(String, usize)> = manifest.sets.clone().into_iter().collect();
    assert_eq!(
        counts,
        [
            ("ood_mnist".into(), 2),
            ("ood_uniform".into(), 50),
            ("test".into(), 20),
            ("train".into(), 80)
        ]
    );
    assert_eq!(manifest.layer_channels, [4, 4, 8, 16, 32]);
    assert_eq!(
        fdir.manifest().unwrap(),
        manifest,
        "the manifest on disk is the one returned"
    );

    // Test features equal one direct forward pass over the whole normalised set.
    let test = data::load("fashion-mnist", &root, Split::Test).unwrap();
    let x = classifier.meta.normalization.apply(&test.images);
    let (logits, acts) = tch::no_grad(|| classifier.net.feature_list(&x));
    for (l, act) in acts.iter().enumerate() {
        let stored = fdir.read_layer(&manifest, "test", l).unwrap();
        assert!(max_abs_diff(&stored, &mean_pool(act)) < 1e-5, "layer {l}");
    }
    let correct = logits
        .argmax(1, false)
        .eq_tensor(&test.labels)
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!((manifest.test_accuracy - correct as f64 / 20.0).abs() < 1e-12);

    // Train rows are grouped by class, each class in stored order.
    let labels = Vec::<i64>::try_from(fdir.read_labels(&manifest, "train").unwrap()).unwrap();
    let expected: Vec<i64> = (0..10).flat_map(|c| std::iter::repeat_n(c, 8)).collect();
    assert_eq!(labels, expected);
    let train = data::load("fashion-mnist", &root, Split::Train).unwrap();
    let x = classifier.meta.normalization.apply(&train.images);
    let (_, acts) = tch::no_grad(|| classifier.net.feature_list(&x));
    let layer3 = mean_pool(&acts[3]);
    let stored3 = fdir.read_layer(&manifest, "train", 3).unwrap();
    // Stored row 8 is the first class-1 image, i.e. image 1; row 9 is image 11.
    assert!(max_abs_diff(&stored3.get(8), &layer3.get(1)) < 1e-5);
    assert!(max_abs_diff(&stored3.get(9), &layer3.get(11)) < 1e-5);

    // Statistics: means by brute force; the rest equals a refit on the stored features.
    for l in 0..5 {
        let stats = LayerStats::load(&fdir.stats_path(l)).unwrap();
        let feats = fdir
            .read_layer(&manifest, "train", l)
            .unwrap()
            .to_kind(Kind::Double);
        for c in 0..10i64 {
            let mean = feats.narrow(0, c * 8, 8).mean_dim(0, false, Kind::Double);
            assert!(
                max_abs_diff(&stats.means.get(c), &mean) < 1e-6,
                "layer {l} class {c}"
            );
        }
        let refit = LayerStats::fit(
            &feats.to_kind(Kind::Float),
            &Tensor::from_slice(&labels),
            10,
        )
        .unwrap();
        assert_eq!(stats.whitening.k, refit.whitening.k);
        assert_eq!(stats.whitening.k, manifest.layer_ranks[l]);
        assert!(
            max_abs_diff(&stats.precision, &refit.precision)
                < 1e-6 * (1.0 + refit.precision.abs().max().double_value(&[]))
        );
        assert!(
            (stats.whitening.log_abs_det_a_inv - refit.whitening.log_abs_det_a_inv).abs() < 1e-6
        );
        // A_inv whitens: the covariance of A_inv x over centred train features is the identity.
        let centred = &feats - stats.means.index_select(0, &Tensor::from_slice(&labels));
        let z = centred.matmul(&stats.whitening.a_inv.transpose(0, 1));
        let cov = z.transpose(0, 1).matmul(&z) / 80.0;
        let eye = Tensor::eye(stats.whitening.k as i64, (Kind::Double, Device::Cpu));
        assert!(max_abs_diff(&cov, &eye) < 1e-6, "layer {l}");
    }
}

/// A small data root in `dir` (8 train images per class, 20 test images), a random classifier
/// with `num_classes` classes, the run's feature folder (not yet written) and options without
/// limits for `ood_sets`.
fn small_run(
    dir: &Path,
    num_classes: i64,
    ood_sets: &[&str],
) -> (PathBuf, LoadedClassifier, FeatureDir, FeatureOptions) {
    let root = dir.join("data");
    root_with_classes(&root, 8, 20);
    let weights = dir.join("net.safetensors");
    random_classifier(&weights, &root, num_classes, 3);
    let classifier = load_checkpoint(&weights, Device::Cpu).unwrap();
    let fdir = RunDir::new(dir, NetType::Resnet.name(), "fashion-mnist").features();
    let options = FeatureOptions {
        dataroot: root,
        ood_sets: ood_sets.iter().map(|s| s.to_string()).collect(),
        batch_size: 8,
        max_train: None,
        max_test: None,
        max_ood: None,
        fgsm: None,
    };
    (weights, classifier, fdir, options)
}

#[test]
fn a_classifier_with_the_wrong_number_of_classes_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classifier, fdir, options) = small_run(dir.path(), 7, &[]);
    let err = prepare(
        &classifier,
        &weights,
        "fashion-mnist",
        &fdir,
        &options,
        Device::Cpu,
        &mut Quiet,
    )
    .unwrap_err();
    assert!(
        matches!(err, resflow::Error::Provenance { .. })
            && err
                .to_string()
                .contains("7 classes but `fashion-mnist` has 10"),
        "{err}"
    );
    assert!(!fdir.path.exists(), "nothing is written");
    let err = fdir.manifest().unwrap_err();
    assert!(
        matches!(err, resflow::Error::MissingArtefact { .. })
            && err.to_string().contains("run rf-prepare"),
        "{err}"
    );
}

#[test]
fn rf_prepare_binary_writes_the_feature_folder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    root_with_classes(&root, 8, 20);
    let weights = dir.path().join("pre/resnet_fashion-mnist.safetensors");
    random_classifier(&weights, &root, 10, 3);
    let out = Command::new(env!("CARGO_BIN_EXE_rf-prepare"))
        .args([
            "--dataset",
            "fashion-mnist",
            "--net_type",
            "resnet",
            "--ood",
            "digits,gaussian",
            "--max-ood",
            "30",
        ])
        .arg("--classifier")
        .arg(&weights)
        .arg("--dataroot")
        .arg(&root)
        .arg("--outf")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("layer 4: 32 channels"), "{stdout}");
    let fdir = RunDir::new(
        &dir.path().join("out"),
        NetType::Resnet.name(),
        "fashion-mnist",
    )
    .features();
    let manifest = fdir.manifest().unwrap();
    assert_eq!(manifest.sets["ood_digits"], 1);
    assert_eq!(manifest.sets["ood_gaussian"], 30);
    assert_eq!(manifest.classifier, weights);
    // numpy reads every artefact.
    let script = "import sys, numpy as np\nx = np.load(sys.argv[1]); y = np.load(sys.argv[2])\nprint(x.shape, x.dtype, y.shape, y.dtype)";
    let printed = common::run_python(
        script,
        &[&fdir.layer_path("train", 2), &fdir.labels_path("train")],
    );
    assert_eq!(printed.trim(), "(80, 8) float32 (80,) int64");

    let missing = Command::new(env!("CARGO_BIN_EXE_rf-prepare"))
        .arg("--classifier")
        .arg(dir.path().join("nope.safetensors"))
        .output()
        .unwrap();
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("nope") && stderr.contains("rf-classifier train"),
        "{stderr}"
    );

    // Issue 14, defects 2, 4 and 11: the sidecar's architecture and training set must match
    // --net-type and --dataset (the run folder is named after them), and an unknown data set is
    // named before any classifier is looked for.
    let refused = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rf-prepare"))
            .args(args)
            .arg("--classifier")
            .arg(&weights)
            .arg("--dataroot")
            .arg(&root)
            .arg("--outf")
            .arg(dir.path().join("other"))
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(!dir.path().join("other").exists(), "nothing is written");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let e = refused(&["--net-type", "densenet"]);
    assert!(
        e.contains("a resnet classifier, but --net-type densenet"),
        "{e}"
    );
    let e = refused(&["--dataset", "cifar10"]);
    assert!(
        e.contains("trained on `fashion-mnist`, but --dataset cifar10"),
        "{e}"
    );
    let e = refused(&["--dataset", "imagenet"]);
    assert!(
        e.contains("imagenet") && !e.contains("rf-classifier train"),
        "{e}"
    );

    // Issue 14, defect 12: a classifier path that is not UTF-8 is refused before any work (it
    // failed at the final manifest write).
    use std::os::unix::ffi::OsStrExt;
    let odd = dir
        .path()
        .join(std::ffi::OsStr::from_bytes(b"clf\xff.safetensors"));
    std::fs::copy(&weights, &odd).unwrap();
    std::fs::copy(weights.with_extension("json"), odd.with_extension("json")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rf-prepare"))
        .arg("--classifier")
        .arg(&odd)
        .arg("--dataroot")
        .arg(&root)
        .arg("--outf")
        .arg(dir.path().join("odd"))
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("not valid UTF-8"),
        "{e}"
    );
    assert!(!dir.path().join("odd").exists());

    // Issue 14, defect 12: past the file-size limit (`ulimit -f`, 1 KiB here) rf-prepare fails
    // with a message naming the file, not killed by SIGXFSZ, and leaves no temporary file.
    let limited = dir.path().join("limited");
    let out = Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 1; exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_rf-prepare"))
        .arg("--classifier")
        .arg(&weights)
        .arg("--dataroot")
        .arg(&root)
        .arg("--outf")
        .arg(&limited)
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{e}");
    assert!(
        e.contains("File too large") && e.contains(limited.to_str().unwrap()),
        "{e}"
    );
    let mut leftovers = Vec::new();
    let mut stack = vec![limited.clone()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if resflow::io::is_temporary_name(&p.file_name().unwrap().to_string_lossy()) {
                leftovers.push(p);
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Issue 14, defect 6: an empty set (`--max-train 0`, `--max-test 0`, `--max-ood 0`) is refused
/// with a message naming the set and the flag, before anything is written (it used to panic).
#[test]
fn empty_sets_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (weights, classifier, fdir, base) = small_run(dir.path(), 10, &["uniform"]);
    let cases = [
        (
            FeatureOptions {
                max_train: Some(0),
                ..base.clone()
            },
            "`train` has no images",
            "--max-train 0",
        ),
        (
            FeatureOptions {
                max_test: Some(0),
                ..base.clone()
            },
            "`test` has no images",
            "--max-test 0",
        ),
        (
            FeatureOptions {
                max_ood: Some(0),
                ..base.clone()
            },
            "`uniform` has no images",
            "--max-ood 0",
        ),
    ];
    for (options, what, flag) in cases {
        let err = prepare(
            &classifier,
            &weights,
            "fashion-mnist",
            &fdir,
            &options,
            Device::Cpu,
            &mut Quiet,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(what) && err.contains(flag), "{err}");
        assert!(!fdir.path.exists(), "nothing is written");
    }
}

/// Issue 14, defect 10: a NaN in a stats file is caught when it is loaded, naming the file and
/// the tensor (it used to surface late, without a file or layer).
#[test]
fn stats_with_nan_are_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let features = Tensor::randn([40, 6], (Kind::Float, Device::Cpu));
    let labels = Tensor::from_slice(&(0..40).map(|i| i % 4).collect::<Vec<i64>>());
    let stats = LayerStats::fit(&features, &labels, 4).unwrap();
    let path = dir.path().join("stats_layer_2.safetensors");
    stats.save(&path).unwrap();
    assert!(LayerStats::load(&path).is_ok());
    let _ = stats.precision.get(1).get(2).fill_(f64::NAN);
    stats.save(&path).unwrap();
    let Err(e) = LayerStats::load(&path) else {
        panic!("NaN refused");
    };
    let e = e.to_string();
    assert!(
        e.contains("stats_layer_2.safetensors") && e.contains("tensor `precision`"),
        "{e}"
    );
}
