//! The detection metrics against the reference's algorithm (a numpy transcription of
//! `calMetric.py`), against independent definitions, and on hand-checked cases with ties.
use crate::common;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use resflow::fit::bootstrap::{self, BootstrapParams};
use resflow::fit::metrics::{self, Metrics};
use resflow::fit::openood;

/// The reference's `get_curve` + `metric`, transcribed line by line; reads a JSON list of
/// `{"in": [...], "out": [...]}` and prints a JSON list of `[TNR, AUROC, DTACC, AUIN, AUOUT]`.
const REFERENCE: &str = r#"
import json, sys
import numpy as np
trapz = getattr(np, "trapz", None) or np.trapezoid

def get_curve(known, novel):
    known = np.array(known, dtype=np.float64); novel = np.array(novel, dtype=np.float64)
    known.sort()
    novel.sort()
    num_k = known.shape[0]
    num_n = novel.shape[0]
    tp = -np.ones([num_k+num_n+1], dtype=int)
    fp = -np.ones([num_k+num_n+1], dtype=int)
    tp[0], fp[0] = num_k, num_n
    k, n = 0, 0
    for l in range(num_k+num_n):
        if k == num_k:
            tp[l+1:] = tp[l]
            fp[l+1:] = np.arange(fp[l]-1, -1, -1)
            break
        elif n == num_n:
            tp[l+1:] = np.arange(tp[l]-1, -1, -1)
            fp[l+1:] = fp[l]
            break
        else:
            if novel[n] < known[k]:
                n += 1
                tp[l+1] = tp[l]
                fp[l+1] = fp[l] - 1
            else:
                k += 1
                tp[l+1] = tp[l] - 1
                fp[l+1] = fp[l]
    tpr95_pos = np.abs(tp / num_k - .95).argmin()
    tnr_at_tpr95 = 1. - fp[tpr95_pos] / num_n
    return tp, fp, tnr_at_tpr95

def metric(known, novel):
    tp, fp, tnr = get_curve(known, novel)
    tpr = np.concatenate([[1.], tp/tp[0], [0.]])
    fpr = np.concatenate([[1.], fp/fp[0], [0.]])
    auroc = -trapz(1.-fpr, tpr)
    dtacc = .5 * (tp/tp[0] + 1.-fp/fp[0]).max()
    denom = tp+fp
    denom[denom == 0.] = -1.
    pin_ind = np.concatenate([[True], denom > 0., [True]])
    pin = np.concatenate([[.5], tp/denom, [0.]])
    auin = -trapz(pin[pin_ind], tpr[pin_ind])
    denom = tp[0]-tp+fp[0]-fp
    denom[denom == 0.] = -1.
    pout_ind = np.concatenate([[True], denom > 0., [True]])
    pout = np.concatenate([[0.], (fp[0]-fp)/denom, [.5]])
    auout = trapz(pout[pout_ind], 1.-fpr[pout_ind])
    return [float(tnr), float(auroc), float(dtacc), float(auin), float(auout)]

cases = json.load(open(sys.argv[1]))
print(json.dumps([metric(c["in"], c["out"]) for c in cases]))
"#;

/// One score set: in-distribution and OOD confidences.
struct Case {
    name: &'static str,
    in_dist: Vec<f64>,
    ood: Vec<f64>,
}

fn normal_scores(rng: &mut ChaCha8Rng, n: usize, mean: f64, std: f64) -> Vec<f64> {
    let dist = Normal::new(mean, std).unwrap();
    (0..n).map(|_| dist.sample(rng)).collect()
}

/// Scores rounded to a grid of `step`, so that ties (within and across the two sets) abound.
fn rounded(scores: Vec<f64>, step: f64) -> Vec<f64> {
    scores
        .into_iter()
        .map(|s| (s / step).round() * step)
        .collect()
}

/// Random score sets of many shapes, with and without ties.
fn random_cases() -> Vec<Case> {
    let mut rng = ChaCha8Rng::seed_from_u64(20201);
    let mut cases = Vec::new();
    let mut add = |name, in_dist, ood| cases.push(Case { name, in_dist, ood });
    add(
        "normal, tie-free",
        normal_scores(&mut rng, 500, 1.0, 1.0),
        normal_scores(&mut rng, 700, 0.0, 1.5),
    );
    add(
        "integer grid, many ties",
        rounded(normal_scores(&mut rng, 300, 1.0, 2.0), 1.0),
        rounded(normal_scores(&mut rng, 400, 0.0, 2.0), 1.0),
    );
    add(
        "coarse grid, few distinct values",
        rounded(normal_scores(&mut rng, 97, 0.5, 1.0), 0.5),
        rounded(normal_scores(&mut rng, 13, 0.0, 1.0), 0.5),
    );
    add(
        "reference sizes (10000 vs 26032)",
        normal_scores(&mut rng, 10000, -1.0, 3.0),
        rounded(normal_scores(&mut rng, 26032, -4.0, 3.0), 0.01),
    );
    add(
        "OOD scores higher",
        normal_scores(&mut rng, 200, -2.0, 1.0),
        normal_scores(&mut rng, 150, 1.0, 1.0),
    );
    add("single samples", vec![0.3], vec![0.7]);
    add("one tie", vec![0.5], vec![0.5]);
    add("all equal", vec![2.0; 7], vec![2.0; 4]);
    add(
        "probabilities, like -P(OOD)",
        (0..321).map(|_| -rng.random::<f64>().powi(4)).collect(),
        (0..123).map(|_| -rng.random::<f64>().sqrt()).collect(),
    );
    add(
        "separated",
        (0..40).map(|i| 10.0 + i as f64).collect(),
        (0..60).map(|i| i as f64 / 10.0).collect(),
    );
    cases
}

/// Runs `script` on `cases` (a JSON list of `{"in": [...], "out": [...]}`) and parses the JSON it
/// prints.
fn python_on_cases<T: serde::de::DeserializeOwned>(script: &str, cases: &[Case]) -> T {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.json");
    let json: Vec<serde_json::Value> = cases
        .iter()
        .map(|c| serde_json::json!({"in": c.in_dist, "out": c.ood}))
        .collect();
    std::fs::write(&path, serde_json::to_string(&json).unwrap()).unwrap();
    let out = common::run_python(script, &[path.as_path()]);
    serde_json::from_str(out.trim()).unwrap()
}

fn reference_metrics(cases: &[Case]) -> Vec<[f64; 5]> {
    python_on_cases(REFERENCE, cases)
}

#[test]
fn matches_reference_transcription() {
    let cases = random_cases();
    let expected = reference_metrics(&cases);
    let names = ["TNR", "AUROC", "DTACC", "AUIN", "AUOUT"];
    let mut worst = 0.0f64;
    for (case, want) in cases.iter().zip(&expected) {
        let got = metrics::compute(&case.in_dist, &case.ood)
            .unwrap()
            .as_array();
        for ((name, g), w) in names.iter().zip(got).zip(want) {
            let diff = (g - w).abs();
            worst = worst.max(diff);
            assert!(
                diff <= 1e-9,
                "{}: {name} = {g}, reference {w} (diff {diff:e})",
                case.name
            );
        }
    }
    println!("largest difference from the reference: {worst:e}");
}

/// Tie-free data: thresholds at every score give the same states as the sweep.
fn tie_free_cases() -> Vec<(Vec<f64>, Vec<f64>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    vec![
        (
            normal_scores(&mut rng, 400, 1.0, 1.0),
            normal_scores(&mut rng, 300, 0.0, 1.0),
        ),
        (
            normal_scores(&mut rng, 37, 0.0, 1.0),
            normal_scores(&mut rng, 1000, 0.5, 2.0),
        ),
        (
            normal_scores(&mut rng, 1000, 3.0, 1.0),
            normal_scores(&mut rng, 20, 0.0, 1.0),
        ),
    ]
}

/// (TPR, FPR) for "positive iff score >= threshold", for every score as threshold and +inf,
/// in increasing threshold order.
fn threshold_states(in_dist: &[f64], ood: &[f64]) -> Vec<(f64, f64)> {
    let mut thresholds: Vec<f64> = in_dist.iter().chain(ood).copied().collect();
    thresholds.sort_by(f64::total_cmp);
    thresholds.dedup();
    thresholds.push(f64::INFINITY);
    let rate = |scores: &[f64], t: f64| {
        scores.iter().filter(|&&s| s >= t).count() as f64 / scores.len() as f64
    };
    thresholds
        .iter()
        .map(|&t| (rate(in_dist, t), rate(ood, t)))
        .collect()
}

#[test]
fn tnr_matches_brute_force_threshold_sweep() {
    for (in_dist, ood) in tie_free_cases() {
        let states = threshold_states(&in_dist, &ood);
        let mut best = (f64::INFINITY, 0.0);
        for &(tpr, fpr) in &states {
            let gap = (tpr - 0.95).abs();
            if gap < best.0 - 1e-12 {
                best = (gap, 1.0 - fpr);
            }
        }
        let got = metrics::tnr_at_tpr95(&in_dist, &ood).unwrap();
        assert!(
            (got - best.1).abs() < 1e-12,
            "TNR {got} vs brute force {}",
            best.1
        );
        assert_eq!(got, metrics::compute(&in_dist, &ood).unwrap().tnr_at_tpr95);
    }
}

#[test]
fn dtacc_matches_brute_force_threshold_sweep() {
    // Holds with ties too: the sweep's intermediate states inside a tie never beat its ends.
    let mut cases = tie_free_cases();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    cases.push((
        rounded(normal_scores(&mut rng, 300, 1.0, 2.0), 1.0),
        rounded(normal_scores(&mut rng, 200, 0.0, 2.0), 1.0),
    ));
    for (in_dist, ood) in cases {
        let brute = threshold_states(&in_dist, &ood)
            .iter()
            .map(|&(tpr, fpr)| 0.5 * (tpr + 1.0 - fpr))
            .fold(f64::NEG_INFINITY, f64::max);
        let got = metrics::compute(&in_dist, &ood).unwrap().dtacc;
        assert!(
            (got - brute).abs() < 1e-12,
            "DTACC {got} vs brute force {brute}"
        );
    }
}

/// Fraction of (in, OOD) pairs with the in-distribution score strictly higher.
fn strict_mann_whitney(in_dist: &[f64], ood: &[f64]) -> f64 {
    let wins: usize = in_dist
        .iter()
        .map(|a| ood.iter().filter(|&&b| a > &b).count())
        .sum();
    wins as f64 / (in_dist.len() * ood.len()) as f64
}

#[test]
fn auroc_is_the_mann_whitney_statistic() {
    for (in_dist, ood) in tie_free_cases() {
        let got = metrics::compute(&in_dist, &ood).unwrap().auroc;
        let want = strict_mann_whitney(&in_dist, &ood);
        assert!(
            (got - want).abs() < 1e-12,
            "AUROC {got} vs Mann-Whitney {want}"
        );
    }
    // With ties the reference counts a tied pair as a loss (no half credit).
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let in_dist = rounded(normal_scores(&mut rng, 200, 1.0, 2.0), 1.0);
    let ood = rounded(normal_scores(&mut rng, 150, 0.0, 2.0), 1.0);
    let got = metrics::compute(&in_dist, &ood).unwrap().auroc;
    let want = strict_mann_whitney(&in_dist, &ood);
    assert!(
        (got - want).abs() < 1e-12,
        "tied AUROC {got} vs strict Mann-Whitney {want}"
    );
}

fn assert_metrics(got: Metrics, want: [f64; 5]) {
    for (g, w) in got.as_array().iter().zip(want) {
        assert!((g - w).abs() < 1e-15, "got {got:?}, want {want:?}");
    }
}

#[test]
fn hand_checked_tie_between_the_sets() {
    // K = [1, 2], N = [2, 3]: tp = [2,1,0,0,0], fp = [2,2,2,1,0] (the tie at 2 removes K first).
    let sweep = metrics::sweep(&[2.0, 1.0], &[3.0, 2.0]).unwrap();
    assert_eq!(sweep.tp, vec![2, 1, 0, 0, 0]);
    assert_eq!(sweep.fp, vec![2, 2, 2, 1, 0]);
    let got = metrics::compute(&[2.0, 1.0], &[3.0, 2.0]).unwrap();
    assert_metrics(got, [0.0, 0.0, 0.5, 7.0 / 24.0, 7.0 / 24.0]);
}

#[test]
fn hand_checked_all_scores_equal() {
    // Every pair tied: all in-distribution samples leave first.
    let sweep = metrics::sweep(&[5.0; 3], &[5.0; 2]).unwrap();
    assert_eq!(sweep.tp, vec![3, 2, 1, 0, 0, 0]);
    assert_eq!(sweep.fp, vec![2, 2, 2, 2, 1, 0]);
    let got = metrics::compute(&[5.0; 3], &[5.0; 2]).unwrap();
    assert_metrics(got, [0.0, 0.0, 0.5, 17.0 / 45.0, 9.0 / 40.0]);
}

#[test]
fn hand_checked_perfect_separation() {
    // tp = [2,2,2,1,0], fp = [2,1,0,0,0]. TPR 1.0 is 0.05 from 0.95 at steps 0, 1, 2: the first
    // (no OOD rejected) is taken, so TNR is 0. AUIN/AUOUT are 0.75 from the end padding.
    let got = metrics::compute(&[4.0, 3.0], &[1.0, 2.0]).unwrap();
    assert_metrics(got, [0.0, 1.0, 1.0, 0.75, 0.75]);
}

#[test]
fn tnr_at_exactly_95_percent() {
    // 20 in-distribution scores 1..=20: TPR hits 0.95 after one removal (score 1). OOD scores
    // 0.5 (below it) and 1.5, 30 (above): fp there is 2 of 3, so TNR = 1/3.
    let in_dist: Vec<f64> = (1..=20).map(f64::from).collect();
    let got = metrics::compute(&in_dist, &[30.0, 0.5, 1.5]).unwrap();
    assert!((got.tnr_at_tpr95 - 1.0 / 3.0).abs() < 1e-15, "{got:?}");
    // A tie at the threshold score: the in-distribution 1.0 leaves before the OOD 1.0.
    let got = metrics::compute(&in_dist, &[1.0, 0.5, 1.0]).unwrap();
    assert!((got.tnr_at_tpr95 - 1.0 / 3.0).abs() < 1e-15, "{got:?}");
}

#[test]
fn rejects_empty_and_nan_inputs() {
    let err = metrics::compute(&[], &[1.0]).unwrap_err().to_string();
    assert!(err.contains("no in-distribution scores"), "{err}");
    let err = metrics::compute(&[1.0], &[]).unwrap_err().to_string();
    assert!(err.contains("no OOD scores"), "{err}");
    let err = metrics::compute(&[1.0, f64::NAN], &[0.0])
        .unwrap_err()
        .to_string();
    assert!(err.contains("in-distribution score 1 is NaN"), "{err}");
    let err = metrics::tnr_at_tpr95(&[1.0], &[f64::NAN])
        .unwrap_err()
        .to_string();
    assert!(err.contains("OOD score 0 is NaN"), "{err}");
    // Infinite scores are ordinary (extreme) confidences.
    let got = metrics::compute(&[f64::INFINITY, 1.0], &[f64::NEG_INFINITY, 2.0]).unwrap();
    assert!((got.auroc - 0.75).abs() < 1e-15, "{got:?}");
}

/// OpenOOD v1.5's OOD-positive metrics with scikit-learn (`docs/method.md#openood-metrics`), per
/// case
/// `[FPR@95, AUROC, AUPR-in, AUPR-out]`.
const OPENOOD: &str = r#"
import json, sys
import numpy as np
from sklearn.metrics import roc_curve, precision_recall_curve, auc

def openood(conf_in, conf_out):
    conf = np.concatenate([np.asarray(conf_in, dtype=np.float64), np.asarray(conf_out, dtype=np.float64)])
    is_ood = np.concatenate([np.zeros(len(conf_in)), np.ones(len(conf_out))]).astype(int)
    fpr, tpr, _ = roc_curve(is_ood, -conf)
    fpr95 = fpr[np.argmax(tpr >= 0.95)]
    auroc = auc(fpr, tpr)
    p_in, r_in, _ = precision_recall_curve(1 - is_ood, conf)
    p_out, r_out, _ = precision_recall_curve(is_ood, -conf)
    return [float(fpr95), float(auroc), float(auc(r_in, p_in)), float(auc(r_out, p_out))]

cases = json.load(open(sys.argv[1]))
print(json.dumps([openood(c["in"], c["out"]) for c in cases]))
"#;

#[test]
fn ood_positive_metrics_equal_openoods_scikit_learn_computation() {
    let cases = random_cases();
    let expected: Vec<[f64; 4]> = python_on_cases(OPENOOD, &cases);
    for (c, e) in cases.iter().zip(&expected) {
        let ours = openood::compute(&c.in_dist, &c.ood).unwrap().as_array();
        for (k, (a, b)) in ours.iter().zip(e).enumerate() {
            assert!(
                (a - b).abs() <= 1e-9,
                "{}: metric {k}: ours {a}, scikit-learn {b}",
                c.name
            );
        }
    }
}

#[test]
fn bootstrap_intervals_are_reproducible_and_cover_the_estimate() {
    let cases = random_cases();
    let params = BootstrapParams {
        resamples: 200,
        seed: 7,
        ..BootstrapParams::default()
    };
    // The 10,000 + 26,032-row case is left out: slow to resample in a debug build.
    for c in cases
        .iter()
        .filter(|c| c.in_dist.len() >= 50 && c.in_dist.len() < 5000)
    {
        let a = bootstrap::intervals(&c.in_dist, &c.ood, &params).unwrap();
        let b = bootstrap::intervals(&c.in_dist, &c.ood, &params).unwrap();
        assert_eq!(a, b, "{}: same seed, same intervals", c.name);
        let other = BootstrapParams { seed: 8, ..params };
        let d = bootstrap::intervals(&c.in_dist, &c.ood, &other).unwrap();
        assert_ne!(
            a.paper, d.paper,
            "{}: another seed, other resamples",
            c.name
        );
        let paper = metrics::compute(&c.in_dist, &c.ood).unwrap().as_array();
        let ood = openood::compute(&c.in_dist, &c.ood).unwrap().as_array();
        for (i, v) in a.paper.iter().zip(paper).chain(a.openood.iter().zip(ood)) {
            assert!(i.0 <= i.1, "{}: {i:?}", c.name);
            assert!(i.contains(v), "{}: {v} outside {i:?}", c.name);
        }
    }
    // The interval narrows with more rows: the 500 + 700-row case is far tighter than the
    // 97 + 13-row one.
    let width = |c: &Case| {
        let i = bootstrap::intervals(&c.in_dist, &c.ood, &params).unwrap();
        i.openood[1].1 - i.openood[1].0
    };
    assert!(width(&cases[0]) < width(&cases[2]) / 2.0);
}
