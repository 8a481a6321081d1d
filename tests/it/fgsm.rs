//! FGSM samples (`docs/method.md#fgsm-samples`): the adversarial step equals the reference's
//! PyTorch code on the same weights and inputs, the selection keeps exactly the samples satisfying
//! the rule, samples stay in the pixel range, and rf-fgsm feeds the FGSM validation of rf-regress
//! end to end.
use crate::common;
use crate::common::max_abs_diff;

use std::path::Path;

use common::{root_labelled_by_net, run_binary as run};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use resflow::data::{self, Normalization, Split};
use resflow::detect::fgsm::{
    adversarial, attack, clamp_range, keep_mask, noise_sigma, noisy, standard_noise, FgsmOptions,
    FgsmSets,
};
use resflow::detect::MAGNITUDES;
use resflow::models::checkpoint::read_tensors;
use resflow::models::load_checkpoint;
use resflow::models::NetType;
use resflow::progress::Quiet;
use resflow::store::fgsm::FgsmSummary;
use resflow::store::results::read_results;
use resflow::store::scores::{read_scores, FGSM};
use resflow::store::RunDir;
use tch::{Device, Kind, Tensor};

/// The reference's FGSM step (ADV_Samples.py, `adv_type == 'FGSM'`, ResNet branch), transcribed
/// for the CPU, plus its noisy samples with noise saved for the Rust side.
const SCRIPT: &str = r#"
import sys, torch
import torch.nn as nn
sys.path.insert(0, sys.argv[1] + "/scripts")
import reference_models as rm
from safetensors.torch import save_file
out = sys.argv[2]
torch.manual_seed(5)
model = rm.build("resnet", 4, 10)
# Non-trivial BatchNorm statistics so that eval mode differs from a plain pass.
for m in model.modules():
    if isinstance(m, nn.BatchNorm2d):
        m.running_mean.uniform_(-0.2, 0.2)
        m.running_var.uniform_(0.5, 1.5)
model.eval()
mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]
min_pixel = min((0 - m) / s for m, s in zip(mean, std))
max_pixel = max((1 - m) / s for m, s in zip(mean, std))
data = torch.randn(8, 3, 32, 32) * 1.5
target = torch.randint(0, 10, (8,))
noise = torch.randn(8, 3, 32, 32)
random_noise_size = 0.25 / 4
noisy_data = torch.add(data, noise, alpha=random_noise_size)
noisy_data = torch.clamp(noisy_data, min_pixel, max_pixel)
criterion = nn.CrossEntropyLoss()
model.zero_grad()
inputs = data.clone().requires_grad_(True)
output = model(inputs)
loss = criterion(output, target)
loss.backward()
gradient = torch.ge(inputs.grad.data, 0)
gradient = (gradient.float() - 0.5) * 2
for j, s in enumerate(std):
    gradient[:, j] = gradient[:, j] / s
adv_data = torch.add(inputs.data, gradient, alpha=0.05)
adv_data = torch.clamp(adv_data, min_pixel, max_pixel)
tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(tensors, out + "/weights.safetensors")
save_file({"x": data, "y": target, "noise": noise, "noisy": noisy_data, "adv": adv_data,
           "grad": inputs.grad.contiguous(), "range": torch.tensor([min_pixel, max_pixel], dtype=torch.float64)},
          out + "/case.safetensors")
"#;

#[test]
fn adversarial_and_noisy_samples_match_the_reference_pytorch_code() {
    let dir = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    common::run_python(SCRIPT, &[root, dir.path()]);
    let (_vs, net) = common::resnet_width4(&dir.path().join("weights.safetensors"));
    let case = read_tensors(&dir.path().join("case.safetensors")).unwrap();
    let norm = Normalization::RESNET;

    // The clamp range is the reference's hard-coded (min_pixel, max_pixel) for ResNet.
    let (lo, hi) = clamp_range(&norm);
    // (The reference's constants were rounded in float32.)
    assert!(
        (lo - -2.42906570435).abs() < 1e-7 && (hi - 2.75373125076).abs() < 1e-7,
        "{lo} {hi}"
    );
    assert!((lo - case["range"].double_value(&[0])).abs() < 1e-12);
    assert!((hi - case["range"].double_value(&[1])).abs() < 1e-12);

    let adv = adversarial(net.as_ref(), &case["x"], &case["y"], &norm).unwrap();
    // Identical wherever the reference gradient is clearly non-zero (elsewhere the sign of a
    // rounding-level gradient may differ).
    let clear = case["grad"].abs().gt(1e-9);
    assert!(
        clear
            .to_kind(Kind::Double)
            .mean(Kind::Double)
            .double_value(&[])
            > 0.9
    );
    let diff = (&adv - &case["adv"]).abs().gt(1e-5).logical_and(&clear);
    assert_eq!(
        diff.sum(Kind::Int64).int64_value(&[]),
        0,
        "adversarial samples differ"
    );
    // Some values were clamped on both sides, and the step is 0.05 / std elsewhere.
    let count = |t: Tensor| t.sum(Kind::Int64).int64_value(&[]);
    assert!(count(adv.le(lo + 1e-6)) > 0 && count(adv.ge(hi - 1e-6)) > 0);
    let step = (&adv - &case["x"]).abs();
    let inside = case["x"].gt(lo + 0.3).logical_and(&case["x"].lt(hi - 0.3));
    let expected = Tensor::from_slice(&norm.std.map(|s| (0.05 / s) as f32))
        .view([1, 3, 1, 1])
        .expand_as(&step);
    assert!(
        max_abs_diff(
            &step.masked_select(&inside),
            &expected.masked_select(&inside)
        ) < 1e-5
    );

    let ours = noisy(&case["x"], &case["noise"], 0.25 / 4.0, &norm);
    assert!(max_abs_diff(&ours, &case["noisy"]) < 1e-6);
}

#[test]
fn noise_sigma_follows_the_reference_table() {
    assert_eq!(noise_sigma(NetType::Resnet, "cifar10"), 0.25 / 4.0);
    assert_eq!(noise_sigma(NetType::Resnet, "svhn"), 0.25 / 4.0);
    assert_eq!(noise_sigma(NetType::Resnet, "cifar100"), 0.25 / 8.0);
    assert_eq!(noise_sigma(NetType::Densenet, "cifar10"), 0.21 / 4.0);
    assert_eq!(noise_sigma(NetType::Densenet, "cifar100"), 0.21 / 8.0);
}

#[test]
fn keep_mask_is_clean_and_noisy_right_and_adversarial_wrong() {
    let labels = Tensor::from_slice(&[1i64, 1, 1, 1, 2, 2, 2, 2]);
    let clean = Tensor::from_slice(&[1i64, 1, 0, 1, 2, 2, 2, 0]);
    let noisy = Tensor::from_slice(&[1i64, 0, 1, 1, 2, 2, 1, 0]);
    let adv = Tensor::from_slice(&[0i64, 0, 0, 1, 0, 2, 0, 0]);
    let mask = Vec::<bool>::try_from(keep_mask(&labels, &clean, &noisy, &adv)).unwrap();
    assert_eq!(mask, [true, false, false, false, true, false, false, false]);
}

#[test]
fn selection_keeps_exactly_the_samples_satisfying_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (root, weights) = root_labelled_by_net(dir.path(), 300);
    let classifier = load_checkpoint(&weights, Device::Cpu).unwrap();
    let set = data::load("fashion-mnist", &root, Split::Test).unwrap();
    // Half of the labels made wrong, so that clean errors occur too.
    let labels = Vec::<i64>::try_from(&set.labels).unwrap();
    let labels: Vec<i64> = labels
        .iter()
        .enumerate()
        .map(|(i, &l)| if i % 2 == 0 { l } else { (l + 1) % 10 })
        .collect();
    let set = data::ImageSet::new(
        "fashion-mnist",
        &root,
        set.images.shallow_clone(),
        Tensor::from_slice(&labels),
        10,
    )
    .unwrap();
    // Large enough that some noisy values are clamped, small enough that most noisy images keep
    // their class (with 2.0 only 13 of 150 did, leaving 4 kept samples: too thin a margin).
    let sigma = 0.5;
    let options = FgsmOptions {
        sigma,
        batch_size: 64,
        seed: 9,
        device: Device::Cpu,
    };
    let attacked = attack(&classifier, &set, &options, &mut Quiet).unwrap();
    let (kept, counts) = attacked.select();

    // Independent check: predictions recomputed here, one image at a time.
    let net = classifier.net.as_ref();
    let predict = |x: &Tensor, i: i64| -> i64 {
        tch::no_grad(|| {
            net.forward_t(&x.narrow(0, i, 1), false)
                .argmax(1, false)
                .int64_value(&[0])
        })
    };
    let all = &attacked.sets;
    let mut expected = Vec::new();
    let (mut clean_ok, mut noisy_ok, mut adv_ok) = (0, 0, 0);
    for i in 0..set.len() as i64 {
        let y = labels[i as usize];
        let (c, n, a) = (
            predict(&all.clean.images, i) == y,
            predict(&all.noisy.images, i) == y,
            predict(&all.adv.images, i) == y,
        );
        clean_ok += c as usize;
        noisy_ok += n as usize;
        adv_ok += a as usize;
        if c && n && !a {
            expected.push(i);
        }
    }
    assert_eq!(
        (
            counts.clean_correct,
            counts.noisy_correct,
            counts.adv_correct
        ),
        (clean_ok, noisy_ok, adv_ok)
    );
    assert_eq!(counts.total, 300);
    assert_eq!(counts.kept, expected.len());
    // Every reason for dropping a sample occurs, and some samples are kept.
    // Clean errors, adversarial errors and kept samples all occur (this small random network is
    // robust to the noise: the noisy rule is covered by `keep_mask`'s own test).
    assert!(
        clean_ok < 300 && adv_ok < clean_ok && !expected.is_empty(),
        "{counts:?}"
    );
    let index = Tensor::from_slice(&expected);
    assert!(kept
        .labels
        .equal(&Tensor::from_slice(&labels).index_select(0, &index)));
    for (ours, whole) in kept.named().iter().zip(all.named()) {
        assert!(
            ours.images.equal(&whole.images.index_select(0, &index)),
            "{}",
            ours.name
        );
    }
    // The clean set is the normalised test split itself.
    assert!(all
        .clean
        .images
        .equal(&classifier.meta.normalization.apply(&set.images)));

    // In the pixel range; noisy = clean + sigma * noise where not clamped; adversarial steps of
    // exactly 0.05 / std_j where not clamped.
    let (lo, hi) = clamp_range(&classifier.meta.normalization);
    for s in all.named() {
        assert!(
            s.images.min().double_value(&[]) >= lo - 1e-6
                && s.images.max().double_value(&[]) <= hi + 1e-6,
            "{}",
            s.name
        );
    }
    // The noise stream is one seeded ChaCha8 generator read batch after batch.
    let noise = standard_noise(&[300, 3, 32, 32], &mut ChaCha8Rng::seed_from_u64(9));
    let expected_noisy = noisy(
        &all.clean.images,
        &noise,
        sigma,
        &classifier.meta.normalization,
    );
    assert!(max_abs_diff(&expected_noisy, &all.noisy.images) < 1e-6);
    let clamped = (&all.clean.images + &noise * sigma)
        .lt(lo)
        .sum(Kind::Int64)
        .int64_value(&[]);
    assert!(clamped > 0, "some noisy values are clamped");
    let linf = (&all.adv.images - &all.clean.images)
        .abs()
        .flatten(1, -1)
        .max_dim(1, false)
        .0;
    let std = classifier.meta.normalization.std;
    let max_step = 0.05 / std.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(linf.max().double_value(&[]) <= max_step + 1e-5);
    assert!((linf.mean(Kind::Double).double_value(&[]) - counts.mean_linf).abs() < 1e-9);

    // The noise is seeded: the same seed gives the same samples, another seed others.
    let again = attack(&classifier, &set, &options, &mut Quiet).unwrap();
    assert!(again.sets.noisy.images.equal(&all.noisy.images));
    let other = attack(
        &classifier,
        &set,
        &FgsmOptions {
            seed: 10,
            ..options
        },
        &mut Quiet,
    )
    .unwrap();
    assert!(!other.sets.noisy.images.equal(&all.noisy.images));
    assert!(other.sets.adv.images.equal(&all.adv.images));
}

#[test]
fn fgsm_validation_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let (root, weights) = root_labelled_by_net(dir.path(), 400);
    let outf = dir.path().join("output");
    let io = [("--dataroot", root.as_path()), ("--outf", outf.as_path())];

    // FGSM samples of the 400 test images; the IO sets (400 + 400 rows) are split in proportion.
    let printed = run(
        env!("CARGO_BIN_EXE_rf-fgsm"),
        &["--seed", "3", "--max_test", "400"],
        &[io[0], io[1], ("--classifier", &weights)],
    );
    let fdir = RunDir::new(&outf, NetType::Resnet.name(), "fashion-mnist").fgsm_dir();
    let (sets, summary): (FgsmSets, FgsmSummary) = FgsmSets::load(&fdir).unwrap();
    let c = summary.counts;
    assert_eq!((c.total, c.clean_correct), (400, 400));
    assert_eq!(sets.len(), c.kept);
    assert!(c.kept >= 40, "{c:?}");
    assert_eq!(
        (summary.sigma, summary.step, summary.seed),
        (0.25 / 4.0, 0.05, 3)
    );
    assert!(
        printed.contains(&format!("kept {} of 400 samples", c.kept)),
        "{printed}"
    );
    assert!(
        printed.contains("clean accuracy 400/400 (100.00%)"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("mean L-inf perturbation {:.4}", c.mean_linf)),
        "{printed}"
    );

    let prepared = run(
        env!("CARGO_BIN_EXE_rf-prepare"),
        &[
            "--ood",
            "uniform",
            "--max-ood",
            "400",
            "--batch-size",
            "100",
            "--validation_src",
            "FGSM",
        ],
        &[io[0], io[1], ("--classifier", &weights)],
    );
    for name in ["fgsm_clean", "fgsm_noisy", "fgsm_adv"] {
        assert!(
            prepared.contains(&format!("{name}: {} FGSM samples", c.kept)),
            "{prepared}"
        );
    }
    run(
        env!("CARGO_BIN_EXE_rf-mahalanobis"),
        &["--batch_size", "100", "--validation-src", "fgsm"],
        &io,
    );
    // One flow (layer 0, one iteration) keeps the runtime modest.
    for layer in 0..1 {
        run(
            env!("CARGO_BIN_EXE_rf-train"),
            &[
                "--layer",
                &layer.to_string(),
                "--num_iter",
                "1",
                "--validation-total",
                "100",
            ],
            &io,
        );
    }
    run(
        env!("CARGO_BIN_EXE_rf-score"),
        &["--batch-size", "100", "--validation-src", "fgsm"],
        &io,
    );

    // FGSM score files: adversarial rows first, then clean, then noisy.
    let run_path = RunDir::new(&outf, "resnet", "fashion-mnist");
    let k = c.kept;
    let groups: Vec<u8> = (0..3 * k).map(|i| [2u8, 0, 1][i / k]).collect();
    for &eps in &MAGNITUDES {
        let maha = read_scores(&run_path.mahalanobis_path(FGSM, eps), true).unwrap();
        assert_eq!(
            (maha.n_rows(), maha.n_out, maha.scores.ncols()),
            (3 * k, k, 5)
        );
        assert_eq!(maha.group.as_ref().unwrap().to_vec(), groups);
        let flow = read_scores(&run_path.resflow_path(FGSM, 0, eps), true).unwrap();
        assert_eq!(
            (flow.n_rows(), flow.n_out, flow.scores.ncols()),
            (3 * k, k, 10)
        );
        assert_eq!(flow.group.as_ref().unwrap().to_vec(), groups);
    }

    for detector in ["mahalanobis", "resflow"] {
        let table = run(
            env!("CARGO_BIN_EXE_rf-regress"),
            &[
                "--detector",
                detector,
                "--no-plots",
                "--validation-src",
                "fgsm",
            ],
            &[io[1]],
        );
        assert!(table.contains("uniform"), "{table}");
    }
    let results = read_results(&run_path.results_path())
        .unwrap()
        .expect("results.json written");
    assert_eq!(results.results.len(), 2);
    for r in &results.results {
        assert_eq!(r.ood, "uniform");
        assert_eq!(r.validation, resflow::fit::Validation::Fgsm);
        for m in r.metrics() {
            assert!((0.0..=1.0).contains(&m), "{:?}", r.metrics());
        }
    }
}
