//! Near/far groups and the paired comparison: the group prefixes of `--ood`, the groups the
//! feature manifest records, OpenOOD's group means, and the paired bootstrap differences against
//! scikit-learn and numpy on the same resample draws.
use crate::common;

use std::collections::BTreeMap;

use ndarray::{Array1, Array2};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use resflow::data::group::{default_group, split_group};
use resflow::data::OodGroup;
use resflow::detect::DetectorKind;
use resflow::fit::bootstrap::{self, BootstrapParams, Interval};
use resflow::fit::detector::{EpsTrial, RowCounts, Validation};
use resflow::fit::openood;
use resflow::fit::paired;
use resflow::fit::splits::IoSplitRule;
use resflow::report::{self, tables};
use resflow::store::features::FeatureManifest;
use resflow::store::results::{ResultRecord, ResultsFile};

#[test]
fn group_prefixes_of_ood_specs() {
    assert_eq!(
        split_group("near:faces=/data/crops").unwrap(),
        (Some(OodGroup::Near), "faces=/data/crops")
    );
    assert_eq!(
        split_group("far:uniform").unwrap(),
        (Some(OodGroup::Far), "uniform")
    );
    assert_eq!(
        split_group("near:folder:/data/x").unwrap(),
        (Some(OodGroup::Near), "folder:/data/x")
    );
    // No group: registry names, folder specs, paths and names with a colon after `=` or `/`.
    for spec in ["mnist", "folder:/data/x", "faces=/data/a:b", "/data/a:b"] {
        assert_eq!(split_group(spec).unwrap(), (None, spec), "{spec}");
    }
    for (spec, says) in [
        ("nearby:faces=/x", "unknown group `nearby:`"),
        ("Far:uniform", "unknown group `Far:`"),
        ("near:", "names no set after `near:`"),
    ] {
        let e = split_group(spec).unwrap_err().to_string();
        assert!(
            e.contains("--ood") && e.contains(says) && e.contains("near:"),
            "{spec}: {e}"
        );
    }
    // The registry's defaults (OpenOOD's convention).
    use OodGroup::{Far, Near};
    for (id, ood, group) in [
        ("fashion-mnist", "mnist", Some(Near)),
        ("fashion-mnist", "digits", Some(Near)),
        ("fashion-mnist", "photos", Some(Far)),
        ("fashion-mnist", "gaussian", Some(Far)),
        ("cifar10", "cifar100", Some(Near)),
        ("cifar10", "imagenet_resize", Some(Near)),
        ("cifar10", "svhn", Some(Far)),
        ("cifar100", "lsun_resize", Some(Far)),
        ("flowers", "uniform", Some(Far)),
        ("flowers", "faces", None),
    ] {
        assert_eq!(default_group(id, ood), group, "{id} vs {ood}");
    }
}

#[test]
fn prepare_records_the_groups_and_old_manifests_read() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    common::root_with_classes(&root, 8, 20);
    let weights = dir.path().join("net.safetensors");
    common::random_classifier(&weights, &root, 10, 3);
    let classifier = resflow::models::load_checkpoint(&weights, tch::Device::Cpu).unwrap();
    let photos = dir.path().join("my_photos");
    std::fs::create_dir_all(&photos).unwrap();
    let image = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 0]));
    image.save(photos.join("a.png")).unwrap();
    let fdir = resflow::store::RunDir::new(dir.path(), "resnet", "fashion-mnist").features();
    let prepare = |ood_sets: &[String]| {
        let options = resflow::pipeline::prepare::FeatureOptions {
            dataroot: root.clone(),
            ood_sets: ood_sets.to_vec(),
            batch_size: 8,
            max_train: None,
            max_test: None,
            max_ood: Some(10),
            fgsm: None,
        };
        resflow::pipeline::prepare::prepare(
            &classifier,
            &weights,
            "fashion-mnist",
            &fdir,
            &options,
            tch::Device::Cpu,
            &mut resflow::progress::Quiet,
        )
    };
    let folder = |prefix: &str, name: &str| format!("{prefix}{name}={}", photos.display());
    let sets = [
        "mnist".to_string(),
        "far:digits".to_string(),
        "uniform".to_string(),
        folder("near:", "near_photos"),
        folder("", "plain_photos"),
    ];
    let manifest = prepare(&sets).unwrap();
    let want: BTreeMap<String, OodGroup> = [
        ("mnist", OodGroup::Near),
        ("digits", OodGroup::Far),
        ("uniform", OodGroup::Far),
        ("near_photos", OodGroup::Near),
    ]
    .into_iter()
    .map(|(n, g)| (n.to_string(), g))
    .collect();
    assert_eq!(manifest.ood_groups, want);
    assert_eq!(fdir.manifest().unwrap().ood_groups, want, "read back");
    let err = prepare(&["nearby:mnist".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--ood") && err.contains("`nearby:`"), "{err}");

    // A manifest of an older version, without `ood_groups`, reads with every set ungrouped.
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fdir.manifest_path()).unwrap()).unwrap();
    json.as_object_mut().unwrap().remove("ood_groups");
    let old: FeatureManifest = serde_json::from_value(json).unwrap();
    assert!(old.ood_groups.is_empty());
    assert_eq!(old.test_accuracy, manifest.test_accuracy);
}

fn record(detector: DetectorKind, ood: &str, auroc: f64) -> ResultRecord {
    let openood = openood::OodMetrics {
        fpr_at_tpr95: 0.5,
        auroc,
        aupr_in: 0.5,
        aupr_out: 0.5,
    };
    ResultRecord {
        detector,
        validation: Validation::Ood,
        ood: ood.into(),
        eps: 0.0,
        c: 0.0,
        coef: Vec::new(),
        intercept: 0.0,
        scores_sha256: String::new(),
        features_sha256: None,
        layers: Vec::new(),
        temperature: None,
        tnr_at_tpr95: 0.5,
        auroc,
        dtacc: 0.5,
        auin: 0.5,
        auout: 0.5,
        trials: vec![EpsTrial {
            eps: 0.0,
            c: 0.0,
            select_tnr: 0.5,
            temperature: None,
        }],
        counts: RowCounts {
            split: IoSplitRule::Reference,
            fit: 0,
            select: 1000,
            test_in: 100,
            test_ood: 100,
        },
        openood: Some(openood),
        intervals: None,
    }
}

#[test]
fn group_means_are_the_means_of_the_groups_sets() {
    let (msp, knn) = (DetectorKind::Msp, DetectorKind::Knn);
    let file = ResultsFile {
        net: "resnet".into(),
        dataset: "fashion-mnist".into(),
        results: vec![
            record(msp, "mnist", 0.80),
            record(msp, "digits", 0.90),
            record(msp, "uniform", 0.99),
            record(msp, "faces", 0.70),
            record(knn, "mnist", 0.60),
            // KNN has no `digits` result: no near mean.
            record(knn, "uniform", 0.95),
            record(knn, "faces", 0.75),
        ],
        test_accuracy: Some(0.9123),
        ood_groups: [
            ("mnist", OodGroup::Near),
            ("digits", OodGroup::Near),
            ("uniform", OodGroup::Far),
        ]
        .into_iter()
        .map(|(n, g)| (n.to_string(), g))
        .collect(),
        ..Default::default()
    };
    let text = report::auroc_table_text(&file, Validation::Ood);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1] == "classifier accuracy on the in-distribution test split: 91.23%",
        "{text}"
    );
    let cells = |line: &str| {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // Near sets, their mean, far sets, their mean, then the ungrouped set.
    assert_eq!(
        cells(lines[2]),
        [
            "detector",
            "mnist (near)",
            "digits (near)",
            "near mean (2)",
            "uniform (far)",
            "far mean (1)",
            "faces (ungrouped)"
        ]
    );
    // (0.80 + 0.90) / 2 = 0.85; KNN lacks digits.
    assert_eq!(
        cells(lines[3]),
        ["MSP", "80.00", "90.00", "85.00", "99.00", "99.00", "70.00"]
    );
    assert_eq!(
        cells(lines[4]),
        ["KNN", "60.00", "-", "-", "95.00", "95.00", "75.00"]
    );
    assert!(
        lines[5].starts_with("ungrouped (in no mean): faces"),
        "{text}"
    );
    let md = tables::markdown(&file);
    assert!(
        md.contains("The classifier accuracy on the in-distribution test split: 91.23%"),
        "{md}"
    );
    assert!(
        md.contains("| **near mean** (mnist, digits) | 85.00 | - |"),
        "{md}"
    );
    assert!(md.contains("| faces (ungrouped) |"), "{md}");
}

/// Confidences of `n` rows: `shift` plus uniform noise, rounded to `1 / levels` so that ties occur.
fn confidences(rng: &mut ChaCha8Rng, n: usize, shift: f64, levels: f64) -> Vec<f64> {
    (0..n)
        .map(|_| ((shift + rng.random::<f64>()) * levels).round() / levels)
        .collect()
}

#[test]
fn paired_differences_match_sklearn_and_numpy_on_the_same_draws() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (n_in, n_ood) = (60, 45);
    let best_in = confidences(&mut rng, n_in, 0.6, 20.0);
    let best_ood = confidences(&mut rng, n_ood, 0.0, 20.0);
    // Clearly worse: in-distribution rows barely above the OOD rows.
    let worse_in = confidences(&mut rng, n_in, 0.1, 20.0);
    let worse_ood = confidences(&mut rng, n_ood, 0.0, 20.0);
    // Nearly the same as the best: two rows changed.
    let mut close_in = best_in.clone();
    close_in[0] -= 0.5;
    let mut close_ood = best_ood.clone();
    close_ood[3] += 0.3;
    let params = BootstrapParams {
        resamples: 300,
        seed: 11,
        level: 0.95,
    };
    let got = paired::auroc_differences(
        (&best_in, &best_ood),
        &[(&worse_in, &worse_ood), (&close_in, &close_ood)],
        &params,
    )
    .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (draws_in, draws_ood): (Vec<Vec<usize>>, Vec<Vec<usize>>) =
        bootstrap::resamples(&params, n_in, n_ood).unzip();
    let matrix = |draws: &[Vec<usize>], n: usize| {
        Array2::from_shape_fn((draws.len(), n), |(r, i)| draws[r][i] as i64)
    };
    ndarray_npy::write_npy(dir.path().join("idx_in.npy"), &matrix(&draws_in, n_in)).unwrap();
    ndarray_npy::write_npy(dir.path().join("idx_ood.npy"), &matrix(&draws_ood, n_ood)).unwrap();
    for (name, v) in [
        ("best_in", &best_in),
        ("best_ood", &best_ood),
        ("o0_in", &worse_in),
        ("o0_ood", &worse_ood),
        ("o1_in", &close_in),
        ("o1_ood", &close_ood),
    ] {
        ndarray_npy::write_npy(
            dir.path().join(format!("{name}.npy")),
            &Array1::from(v.clone()),
        )
        .unwrap();
    }
    let script = r#"
import json, sys, numpy as np
from sklearn.metrics import roc_auc_score
d = sys.argv[1]
ld = lambda n: np.load(f"{d}/{n}.npy")
ii, io = ld("idx_in"), ld("idx_ood")
def auc(a, b):
    return roc_auc_score(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b])
bi, bo = ld("best_in"), ld("best_ood")
out = []
for k in range(2):
    oi, oo = ld(f"o{k}_in"), ld(f"o{k}_ood")
    diffs = [auc(bi[r_in], bo[r_ood]) - auc(oi[r_in], oo[r_ood]) for r_in, r_ood in zip(ii, io)]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    out.append([auc(bi, bo) - auc(oi, oo), lo, hi])
print(json.dumps(out))
"#;
    let out = common::run_python(script, &[dir.path()]);
    let want: Vec<[f64; 3]> = serde_json::from_str(out.trim()).unwrap();
    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
        let Interval(lo, hi) = g.interval;
        for (a, b) in [(g.difference, w[0]), (lo, w[1]), (hi, w[2])] {
            assert!((a - b).abs() < 1e-12, "detector {k}: {g:?} vs numpy {w:?}");
        }
        // The mark: numpy's interval excludes 0 exactly when ours is marked.
        assert_eq!(g.excludes_zero(), w[1] > 0.0 || w[2] < 0.0, "detector {k}");
    }
    assert!(
        got[0].excludes_zero(),
        "the clearly worse detector: {:?}",
        got[0]
    );
    assert!(!got[1].excludes_zero(), "the near copy: {:?}", got[1]);
    // The Mann-Whitney AUROC is OpenOOD's.
    let mw = paired::auroc((&worse_in, &worse_ood)).unwrap();
    let oo = openood::compute(&worse_in, &worse_ood).unwrap().auroc;
    assert!((mw - oo).abs() < 1e-12, "{mw} vs {oo}");
}
