//! The post-hoc baselines (`docs/method.md#baseline-detectors`) against independent transcriptions
//! of their papers' formulas: MSP, Energy, MaxLogit and ODIN against PyTorch code on the
//! reference's network, KNN against a brute-force nearest-neighbour search, ViM against numpy
//! (OpenOOD's computation); and the baselines through `rf-baselines` and `rf-regress` into one
//! comparison table.
use crate::common;
use crate::common::{max_abs_diff, resnet_width4 as resnet};

use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resflow::detect::head::LinearHead;
use resflow::detect::knn::Knn;
use resflow::detect::logit::{LogitDetector, LogitScore};
use resflow::detect::odin::Odin;
use resflow::detect::preprocess::{gradient_step, preprocessed_scores};
use resflow::detect::vim::{self, Vim};
use resflow::detect::{DetectorKind, FittedDetector, BASELINES_STAGE};
use resflow::models::checkpoint::read_tensors;
use resflow::models::mean_pool;
use resflow::pipeline::score::{self, ScoringStage};
use resflow::pipeline::Common;
use resflow::store::results::read_results;
use resflow::store::RunDir;
use resflow::Error;
use tch::{Device, Kind, Tensor};

const STD: [f64; 3] = [0.2023, 0.1994, 0.2010];
const ODIN_MAGNITUDES: [f64; 3] = [0.0, 0.0014, 0.01];

/// The baselines in PyTorch on the reference's network: MSP, Energy and MaxLogit of the logits,
/// and ODIN as Lee et al.'s code runs it (cross-entropy with the predicted class at temperature T,
/// sign of the input gradient divided by the channel std, then the max softmax at T).
const SCRIPT: &str = r#"
import sys, torch
import torch.nn.functional as F
sys.path.insert(0, sys.argv[1] + "/scripts")
import reference_models as rm
from safetensors.torch import save_file
out = sys.argv[2]
torch.manual_seed(11)
model = rm.build("resnet", 4, 10)
model.eval()
x = torch.randn(8, 3, 32, 32)
with torch.no_grad():
    logits = model(x)
case = {"x": x, "msp": F.softmax(logits, dim=1).max(1)[0], "energy": torch.logsumexp(logits, dim=1),
        "maxlogit": logits.max(1)[0]}
for t, T in enumerate([1.0, 10.0, 100.0, 1000.0]):
    inputs = x.clone().requires_grad_(True)
    outputs = model(inputs) / T
    labels = outputs.data.max(1)[1]
    loss = torch.nn.CrossEntropyLoss()(outputs, labels)
    loss.backward()
    gradient = torch.ge(inputs.grad.data, 0)
    gradient = (gradient.float() - 0.5) * 2
    for j, s in enumerate([0.2023, 0.1994, 0.2010]):
        gradient[:, j] = gradient[:, j] / s
    case["grad%d" % t] = inputs.grad.contiguous()
    case["step%d" % t] = gradient.contiguous()
    for k, m in enumerate([0.0, 0.0014, 0.01]):
        temp = torch.add(inputs.data, gradient, alpha=-m)
        with torch.no_grad():
            o = model(temp) / T
        case["odin%d_%d" % (t, k)] = F.softmax(o, dim=1).max(1)[0].contiguous()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out + "/weights.safetensors")
save_file(case, out + "/case.safetensors")
"#;

#[test]
fn logit_baselines_and_odin_match_pytorch_on_the_reference_network() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::run_python(SCRIPT, &[root, dir.path()]);
    let (_vs, net) = resnet(&dir.path().join("weights.safetensors"));
    let case = read_tensors(&dir.path().join("case.safetensors")).unwrap();
    let x = &case["x"];
    let last = net.num_layers() - 1;
    let phi = tch::no_grad(|| mean_pool(&net.intermediate_forward(x, last).unwrap()));

    for (score, key) in [
        (LogitScore::Msp, "msp"),
        (LogitScore::Energy, "energy"),
        (LogitScore::MaxLogit, "maxlogit"),
    ] {
        let d = LogitDetector::new(
            score,
            last,
            LinearHead::of(net.as_ref(), Device::Cpu).unwrap(),
        );
        assert_eq!(d.layers(), vec![last]);
        let s = tch::no_grad(|| d.layer_scores(last, 0).unwrap()(&phi).unwrap());
        let score = s.max_dim(1, false).0;
        let diff = max_abs_diff(&score, &case[key]);
        assert!(diff < 1e-6, "{key}: {diff}");
    }

    let odin = Odin::new(last, LinearHead::of(net.as_ref(), Device::Cpu).unwrap());
    assert_eq!(odin.variants(), 4);
    for t in 0..4 {
        let score = odin.layer_scores(last, t).unwrap();
        // The input step: signs agree wherever PyTorch's gradient is clearly non-zero, so the
        // perturbed inputs x - m * step agree.
        let step = gradient_step(net.as_ref(), x, last, STD, score.as_ref()).unwrap();
        let clear = case[&format!("grad{t}")].abs().gt(1e-12);
        let disagree = step
            .ne_tensor(&case[&format!("step{t}")])
            .logical_and(&clear)
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert_eq!(disagree, 0, "temperature {t}: input steps differ");
        for &m in &ODIN_MAGNITUDES {
            let perturbed = x - &step * m;
            let theirs_input = x - &case[&format!("step{t}")] * m;
            assert!(max_abs_diff(&perturbed, &theirs_input) < 1e-5);
        }
        let ours =
            preprocessed_scores(net.as_ref(), x, last, STD, &ODIN_MAGNITUDES, score.as_ref())
                .unwrap();
        for (k, s) in ours.iter().enumerate() {
            // Stored as the log of the max softmax.
            let msp = s.max_dim(1, false).0.exp();
            let diff = max_abs_diff(&msp, &case[&format!("odin{t}_{k}")]);
            assert!(diff < 1e-5, "temperature {t}, magnitude {k}: {diff}");
        }
    }
}

fn relu_gaussian(rng: &mut ChaCha8Rng, rows: usize, cols: usize) -> Vec<f64> {
    let n: Normal<f64> = Normal::new(0.3, 1.0).unwrap();
    (0..rows * cols).map(|_| n.sample(rng).max(0.0)).collect()
}

fn tensor(values: &[f64], rows: usize, cols: usize) -> Tensor {
    Tensor::from_slice(values)
        .view([rows as i64, cols as i64])
        .to_kind(Kind::Float)
}

#[test]
fn knn_finds_the_brute_force_neighbours() {
    let (m, n, d, k) = (300, 40, 16, 50);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let train = relu_gaussian(&mut rng, m, d);
    let test = relu_gaussian(&mut rng, n, d);
    let knn = Knn::fit(&tensor(&train, m, d), 4, k, Device::Cpu).unwrap();
    let neighbours = knn.neighbours(&tensor(&test, n, d));
    let scores = knn.layer_scores(4, 0).unwrap()(&tensor(&test, n, d)).unwrap();
    let unit = |v: &[f64]| {
        let norm = v.iter().map(|a| a * a).sum::<f64>().sqrt();
        v.iter().map(|a| a / norm).collect::<Vec<f64>>()
    };
    let train_unit: Vec<Vec<f64>> = train.chunks(d).map(unit).collect();
    for (i, row) in test.chunks(d).enumerate() {
        let z = unit(row);
        let mut dist: Vec<(f64, usize)> = train_unit
            .iter()
            .enumerate()
            .map(|(j, t)| {
                let d2: f64 = z.iter().zip(t).map(|(a, b)| (a - b) * (a - b)).sum();
                (d2.sqrt(), j)
            })
            .collect();
        dist.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut expected: Vec<i64> = dist[..k].iter().map(|&(_, j)| j as i64).collect();
        let mut ours: Vec<i64> = Vec::<i64>::try_from(neighbours.get(i as i64)).unwrap();
        expected.sort_unstable();
        ours.sort_unstable();
        assert_eq!(ours, expected, "row {i}: neighbour sets differ");
        let score = scores.double_value(&[i as i64, 0]);
        assert!(
            (score + dist[k - 1].0).abs() < 1e-5,
            "row {i}: {score} vs -{}",
            dist[k - 1].0
        );
    }
    let Err(Error::BadOption { option, .. }) =
        Knn::fit(&tensor(&train, m, d), 4, m + 1, Device::Cpu)
    else {
        panic!("k larger than the training rows accepted");
    };
    assert_eq!(option, "--knn-k");
}

/// OpenOOD v1.5's ViM postprocessor in numpy, on features and a linear head given as .npy files.
const VIM: &str = r#"
import sys
import numpy as np
from scipy.special import logsumexp
d = sys.argv[1]
X, T, W, b = (np.load(d + "/" + n + ".npy") for n in ["train", "test", "w", "b"])
dim = int(sys.argv[2])
u = -np.matmul(np.linalg.pinv(W), b)
Xc = X - u
cov = Xc.T @ Xc / X.shape[0]
eig_vals, eigen_vectors = np.linalg.eig(cov)
NS = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T)
vlogit_train = np.linalg.norm(np.matmul(Xc, NS), axis=-1)
alpha = (X @ W.T + b).max(axis=-1).mean() / vlogit_train.mean()
logits = T @ W.T + b
score = logsumexp(logits, axis=-1) - alpha * np.linalg.norm(np.matmul(T - u, NS), axis=-1)
np.save(d + "/score.npy", score)
print(alpha)
"#;

#[test]
fn vim_matches_openoods_numpy_computation() {
    let (m, n, d, c) = (400, 30, 24, 6);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let train = relu_gaussian(&mut rng, m, d);
    let test = relu_gaussian(&mut rng, n, d);
    let w = Normal::new(0.0, 0.5).unwrap();
    let weight: Vec<f64> = (0..c * d).map(|_| w.sample(&mut rng)).collect();
    let bias: Vec<f64> = (0..c).map(|_| w.sample(&mut rng)).collect();
    let dir = tempfile::tempdir().unwrap();
    let save = |name: &str, v: &[f64], shape: &[usize]| {
        let a = ndarray::ArrayD::from_shape_vec(shape.to_vec(), v.to_vec()).unwrap();
        ndarray_npy::write_npy(dir.path().join(format!("{name}.npy")), &a).unwrap();
    };
    save("train", &train, &[m, d]);
    save("test", &test, &[n, d]);
    save("w", &weight, &[c, d]);
    save("b", &bias, &[c]);
    let dim = vim::vim_dimension(d);
    assert_eq!(dim, 12);
    let alpha: f64 = common::run_python(VIM, &[dir.path(), Path::new(&dim.to_string())])
        .trim()
        .parse()
        .unwrap();
    let expected: ndarray::Array1<f64> =
        ndarray_npy::read_npy(dir.path().join("score.npy")).unwrap();

    let head = LinearHead {
        weight: Tensor::from_slice(&weight).view([c as i64, d as i64]),
        bias: Tensor::from_slice(&bias),
    };
    let f64_tensor = |v: &[f64], rows: usize| Tensor::from_slice(v).view([rows as i64, d as i64]);
    let vim = Vim::fit(&f64_tensor(&train, m), 4, head, None, Device::Cpu).unwrap();
    assert!(
        (vim.alpha() - alpha).abs() <= 1e-9 * alpha.abs(),
        "{} vs {alpha}",
        vim.alpha()
    );
    let ours = vim.layer_scores(4, 0).unwrap()(&f64_tensor(&test, n)).unwrap();
    for (i, e) in expected.iter().enumerate() {
        let o = ours.double_value(&[i as i64, 0]);
        assert!((o - e).abs() < 1e-5, "row {i}: {o} vs {e}");
    }
}

/// `rf-baselines` then `rf-regress` for each baseline on a prepared run: one comparison with
/// every baseline, OpenOOD's metrics and bootstrap intervals in results.json and results.md.
#[test]
fn baselines_score_and_compare_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outf = dir.path().join("output");
    common::root_with_classes(&root, 30, 200);
    let weights = dir.path().join("resnet_fashion-mnist.safetensors");
    common::random_classifier(&weights, &root, 10, 3);
    let io = [("--dataroot", root.as_path()), ("--outf", outf.as_path())];
    common::run_binary(
        env!("CARGO_BIN_EXE_rf-prepare"),
        &[
            "--ood",
            "uniform",
            "--max-ood",
            "200",
            "--batch-size",
            "100",
        ],
        &[io[0], io[1], ("--classifier", &weights)],
    );
    let printed = common::run_binary(
        env!("CARGO_BIN_EXE_rf-baselines"),
        &["--batch-size", "100", "--knn-k", "5"],
        &io,
    );
    for d in DetectorKind::scored_by(BASELINES_STAGE) {
        assert!(
            printed.contains(&format!("{} scores for 1 set(s) (uniform)", d.label())),
            "{printed}"
        );
    }
    // Issue 14, defect 2: other weights of the same shape are refused by the scoring stages.
    let other = dir.path().join("other_fashion-mnist.safetensors");
    common::random_classifier(&other, &root, 10, 5);
    let os = |s: &'static str| std::ffi::OsStr::new(s);
    let err = common::run_failing(
        env!("CARGO_BIN_EXE_rf-baselines"),
        &[
            os("--detectors"),
            os("msp"),
            os("--classifier"),
            other.as_os_str(),
            os("--dataroot"),
            root.as_os_str(),
            os("--outf"),
            outf.as_os_str(),
        ],
    );
    assert!(
        err.contains("SHA-256 differs") && err.contains("other_fashion-mnist"),
        "{err}"
    );
    // The same refusal from the library is a provenance error; a run without features is a
    // missing artefact.
    let open = |outf: &Path, classifier: Option<&Path>| {
        let common = Common {
            dataroot: root.clone(),
            outf: outf.to_path_buf(),
            ..Common::default()
        };
        let options = score::Options {
            classifier: classifier.map(Path::to_path_buf),
            ..score::Options::for_kinds(common, &[DetectorKind::Msp])
        };
        match ScoringStage::open(&options) {
            Ok(_) => panic!("scoring stage opened"),
            Err(e) => e,
        }
    };
    let e = open(&outf, Some(&other));
    assert!(matches!(e, Error::Provenance { .. }), "{e}");
    let e = open(&dir.path().join("no_output"), None);
    assert!(
        matches!(e, Error::MissingArtefact { .. }) && e.to_string().contains("run rf-prepare"),
        "{e}"
    );

    let mut table = String::new();
    for d in DetectorKind::scored_by(BASELINES_STAGE) {
        table = common::run_binary(
            env!("CARGO_BIN_EXE_rf-regress"),
            &["--detector", d.name(), "--no-plots", "--bootstrap", "200"],
            &[io[1]],
        );
    }
    let run = RunDir::new(&outf, "resnet", "fashion-mnist");
    let results = read_results(&run.results_path()).unwrap().unwrap();
    assert_eq!(
        results.results.len(),
        DetectorKind::scored_by(BASELINES_STAGE).len()
    );
    for r in &results.results {
        assert_eq!(r.ood, "uniform");
        assert!(r.openood.is_some() && r.intervals.is_some(), "{r:?}");
        assert_eq!((r.counts.test_in, r.counts.test_ood), (100, 100));
        assert_eq!(r.temperature.is_some(), r.detector == DetectorKind::Odin);
        let trials = if r.detector == DetectorKind::Odin {
            44
        } else {
            1
        };
        assert_eq!(r.trials.len(), trials, "{:?}", r.detector);
    }
    // The last call prints the comparison of every detector run so far.
    for d in DetectorKind::scored_by(BASELINES_STAGE) {
        assert!(table.contains(d.label()), "{table}");
    }
    // The terminal's compact AUROC table and paired comparison; every metric in results.md.
    assert!(
        table.contains("AUROC (OOD positive)") && table.contains("paired comparison"),
        "{table}"
    );
    let md = std::fs::read_to_string(run.results_markdown_path()).unwrap();
    assert!(md.contains("## Detector comparison"), "{md}");
    assert!(md.contains("### FPR at 95% TPR (OOD positive)"), "{md}");
    assert!(md.contains("| uniform (far) |"), "{md}");

    // Issue 14, defect 3: a score file that the scoring stage wrote and that went missing is an
    // error naming it, not a detector built from the files that are left.
    let gone = run.score_path(DetectorKind::Odin, "uniform", 0, 0.01);
    std::fs::remove_file(&gone).unwrap();
    let err = common::run_failing(
        env!("CARGO_BIN_EXE_rf-regress"),
        &[
            os("--detector"),
            os("odin"),
            os("--no-plots"),
            os("--outf"),
            outf.as_os_str(),
        ],
    );
    assert!(
        err.contains("eps_0.01.npz") && err.contains("rf-baselines"),
        "{err}"
    );
}
