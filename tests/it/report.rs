//! Reports: the reference's table, results.json/md, plots, and rf-regress end to end.
use crate::synth;

use std::path::Path;
use std::process::Command;

use resflow::detect::DetectorKind;
use resflow::fit::detector::{EpsTrial, RowCounts, TestScores, Validation};
use resflow::fit::splits::IoSplitRule;
use resflow::pipeline::regress;
use resflow::report::plots::{self, LayerCurve, PLOT_SIZE};
use resflow::report::tables;
use resflow::store::history::{self, AurocHistory};
use resflow::store::results::{self, ResultRecord, ResultsFile};
use resflow::store::scores;
use resflow::store::scores::FGSM;
use resflow::store::RunDir;

fn record(detector: DetectorKind, ood: &str, m: [f64; 5], eps: f64) -> ResultRecord {
    ResultRecord {
        detector,
        validation: Validation::Ood,
        ood: ood.into(),
        eps,
        c: 21.544346900318846,
        coef: vec![1.0, -2.0],
        intercept: 0.5,
        scores_sha256: String::new(),
        features_sha256: None,
        layers: vec![0, 1],
        temperature: None,
        tnr_at_tpr95: m[0],
        auroc: m[1],
        dtacc: m[2],
        auin: m[3],
        auout: m[4],
        trials: vec![EpsTrial {
            eps,
            c: 1.0,
            select_tnr: 0.5,
            temperature: None,
        }],
        counts: RowCounts {
            split: IoSplitRule::Reference,
            fit: 1000,
            select: 1000,
            test_in: 9000,
            test_ood: 25032,
        },
        openood: None,
        intervals: None,
    }
}

#[test]
fn table_is_the_reference_layout() {
    let r = [
        record(
            DetectorKind::Resflow,
            "svhn",
            [0.91234, 0.98765, 0.95, 0.9, 1.0],
            0.0014,
        ),
        record(
            DetectorKind::Resflow,
            "lsun_resize",
            [0.05, 0.5, 0.5, 0.123456, 0.99999],
            0.0,
        ),
    ];
    let expected = "Residual flow detector, validation on OOD samples\n\
in_distribution: cifar10==========\n\
out_distribution: svhn\n \
TNR    AUROC  DTACC  AUIN   AUOUT \n \
91.23  98.77  95.00  90.00 100.00\n\
Input noise: 0.0014\n\n\
out_distribution: lsun_resize\n \
TNR    AUROC  DTACC  AUIN   AUOUT \n  \
5.00  50.00  50.00  12.35 100.00\n\
Input noise: 0.0\n\n";
    assert_eq!(tables::format_table("cifar10", &r), expected);
}

#[test]
fn results_merge_markdown_and_comparison() {
    let mut file = ResultsFile {
        net: "resnet".into(),
        dataset: "cifar10".into(),
        results: vec![record(DetectorKind::Resflow, "svhn", [0.1; 5], 0.0)],
        ..Default::default()
    };
    let new = [
        record(
            DetectorKind::Resflow,
            "svhn",
            [0.9, 0.95, 0.9, 0.9, 0.9],
            0.01,
        ),
        record(
            DetectorKind::Mahalanobis,
            "svhn",
            [0.8, 0.9, 0.85, 0.8, 0.8],
            0.002,
        ),
        record(
            DetectorKind::Mahalanobis,
            "lsun",
            [0.7, 0.9, 0.85, 0.8, 0.8],
            0.0,
        ),
    ];
    let dropped = file.merge(&new, &["svhn".into(), "lsun".into()]);
    assert!(dropped.is_empty(), "{dropped:?}");
    assert_eq!(file.results.len(), 3);
    assert_eq!(file.results[0].ood, "lsun");
    assert_eq!(file.results[2].detector, DetectorKind::Resflow);
    assert_eq!(file.results[2].eps, 0.01);

    // Records that no longer hold are dropped, each with a note: of the same detector, a set
    // that is no longer scored or other scores; of every detector, other features.
    let mut stale = file.clone();
    let mut fresh = record(DetectorKind::Mahalanobis, "svhn", [0.5; 5], 0.0);
    (fresh.scores_sha256, fresh.features_sha256) = ("s2".into(), Some("f2".into()));
    let dropped = stale.merge(&[fresh], &["svhn".into()]);
    assert_eq!(stale.results.len(), 1, "{:?}", stale.results);
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    assert!(
        dropped
            .iter()
            .any(|d| d.contains("Mahalanobis") && d.contains("`lsun`"))
            && dropped
                .iter()
                .any(|d| d.contains("Residual flow") && d.contains("`svhn`")),
        "{dropped:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("results.json");
    results::write_results(&p, &file).unwrap();
    assert_eq!(results::read_results(&p).unwrap().unwrap(), file);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(json["results"][2]["detector"], "resflow");
    assert_eq!(json["results"][2]["validation"], "ood");
    assert_eq!(json["results"][2]["auroc"], 0.95);
    assert!(results::read_results(&dir.path().join("none.json"))
        .unwrap()
        .is_none());

    let md = tables::markdown(&file);
    assert!(
        md.contains("## Mahalanobis (validation on OOD samples)"),
        "{md}"
    );
    assert!(
        md.contains("| lsun | 70.00 | 90.00 | 85.00 | 80.00 | 80.00 | 0.0 | 21.5443 |"),
        "{md}"
    );
    assert!(
        md.contains("| svhn | 80.00 / 90.00 | 90.00 / 95.00 | 85.00 / 90.00 | 80.00 / 90.00 | 80.00 / 90.00 | 0.002 / 0.01 |"),
        "{md}"
    );
    // Only OOD sets with both detectors are compared.
    assert!(!tables::comparison_markdown(&file.results, Validation::Ood).contains("lsun"));
    assert!(tables::comparison_markdown(&file.results, Validation::Fgsm).is_empty());
    let text = tables::comparison_text("cifar10", &file.results, Validation::Ood);
    assert!(
        text.contains("80.00 / 90.00") && text.contains("0.002 / 0.01"),
        "{text}"
    );
}

#[test]
fn histogram_and_roc_points() {
    let h = plots::histogram(&[0.0, 0.1, 0.5, 0.99, 1.0, 2.0, -1.0], 0.0, 1.0, 2);
    // Bins [0, .5) and [.5, 1]; values outside are clamped to the end bins.
    assert_eq!(h, [3.0 / 7.0, 4.0 / 7.0]);
    let pts = plots::roc_points(&[1.0, 2.0, 3.0], &[0.0, 0.5]).unwrap();
    assert_eq!(pts.first(), Some(&(1.0, 1.0)));
    assert_eq!(pts.last(), Some(&(0.0, 0.0)));
    assert!(pts.contains(&(0.0, 1.0)));
}

/// Decodes a PNG and returns (width, height, number of distinct colours).
fn png_info(path: &Path) -> (u32, u32, usize) {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    (img.width(), img.height(), colours.len())
}

fn assert_png(path: &Path) {
    let (w, h, colours) = png_info(path);
    assert_eq!((w, h), PLOT_SIZE, "{}", path.display());
    // Curves, text (anti-aliased) and background: far more than a blank image.
    assert!(colours > 20, "{}: only {colours} colours", path.display());
}

#[test]
fn plots_are_pngs_of_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let t = |shift: f64| TestScores {
        confidence_in: (0..300)
            .map(|i| -1.0 / (1.0 + (i as f64 / 30.0).exp()))
            .collect(),
        confidence_ood: (0..200)
            .map(|i| -1.0 / (1.0 + ((i as f64 - 60.0 * shift) / 30.0).exp()))
            .collect(),
        logit_in: (0..300).map(|i| i as f64 / 30.0).collect(),
        logit_ood: (0..200).map(|i| i as f64 / 30.0 - 2.0 * shift).collect(),
    };
    let (a, b) = (t(1.0), t(3.0));
    let roc = dir.path().join("roc.png");
    plots::plot_roc(
        &roc,
        "ROC",
        &[("Mahalanobis".into(), &a), ("Residual flow".into(), &b)],
    )
    .unwrap();
    assert_png(&roc);
    let hist = dir.path().join("hist.png");
    plots::plot_histogram(&hist, "Histogram", "score", &a.logit_in, &a.logit_ood).unwrap();
    assert_png(&hist);
    let curves: Vec<LayerCurve> = (0..3)
        .map(|l| LayerCurve {
            layer: l,
            history: AurocHistory {
                ood: "svhn".into(),
                iteration: (0..=10).map(|i| 20 * i).collect(),
                auroc: (0..=10)
                    .map(|i| 0.8 + 0.01 * l as f64 + 0.01 * i as f64)
                    .collect(),
            },
            mahalanobis: Some(0.8 + 0.01 * l as f64),
        })
        .collect();
    let hist2 = dir.path().join("sub/auroc.png");
    plots::plot_auroc_history(&hist2, "AUROC vs iteration", &curves).unwrap();
    assert_png(&hist2);
    let comparison = dir.path().join("comparison.png");
    let oods = vec!["svhn".to_string(), "lsun".to_string()];
    let series = vec![
        (
            "MSP".to_string(),
            vec![Some((90.0, 88.5, 91.2)), Some((70.0, 66.0, 73.0))],
        ),
        (
            "Residual flow".to_string(),
            vec![Some((97.0, 96.1, 97.8)), None],
        ),
    ];
    plots::plot_comparison(&comparison, "Comparison", "AUROC (%)", &oods, &series).unwrap();
    assert_png(&comparison);
    if let Some(keep) = std::env::var_os("RESFLOW_KEEP_PLOTS") {
        for p in [&roc, &hist, &hist2, &comparison] {
            std::fs::copy(p, Path::new(&keep).join(p.file_name().unwrap())).unwrap();
        }
    }
}

fn rf_regress(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rf-regress"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The table line of a record's metrics, as printed.
fn values_line(r: &serde_json::Value) -> String {
    let v: Vec<String> = ["tnr_at_tpr95", "auroc", "dtacc", "auin", "auout"]
        .iter()
        .map(|k| format!("{:6.2}", 100.0 * r[*k].as_f64().unwrap()))
        .collect();
    v.join(" ")
}

#[test]
fn rf_regress_end_to_end_on_synthetic_files() {
    let dir = tempfile::tempdir().unwrap();
    let outf = dir.path();
    let run = RunDir::new(outf, "resnet", "cifar10");
    let (n_out, n_in, layers) = (1060, 1100, 3);
    for (ood, best) in [("svhn", 0.0014), ("lsun_resize", 0.005)] {
        let sep = move |e: f64| if e == best { 2.5 } else { 0.4 };
        synth::write_mahalanobis(&run, ood, n_out, n_in, layers, 11, sep);
        synth::write_resflow(&run, ood, n_out, n_in, layers, 4, 12, sep);
    }
    let adv = |e: f64| if e == 0.01 { 4.0 } else { 0.2 };
    synth::write_mahalanobis(&run, FGSM, 200, 0, layers, 13, adv);
    synth::write_resflow(&run, FGSM, 200, 0, layers, 4, 14, adv);
    synth::seal(&run, DetectorKind::Mahalanobis, layers);
    synth::seal(&run, DetectorKind::Resflow, layers);
    for l in 0..layers {
        let h = AurocHistory {
            ood: "svhn".into(),
            iteration: vec![0, 20, 40, 60],
            auroc: vec![0.7, 0.75, 0.78, 0.8 + 0.01 * l as f64],
        };
        history::write_history(&run.history_path(l), &h).unwrap();
    }
    let outf_s = outf.to_str().unwrap();

    // A run folder without score files is skipped when the data sets are discovered.
    std::fs::create_dir_all(outf.join("resnet_other")).unwrap();
    let (ok, stdout, stderr) = rf_regress(&["--detector", "mahalanobis", "--outf", outf_s]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stderr.contains("skipping") && stderr.contains("resnet_other"),
        "{stderr}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["net"], "resnet");
    assert_eq!(json["dataset"], "cifar10");
    let recs = json["results"].as_array().unwrap();
    assert_eq!(recs.len(), 2);
    assert!(
        stdout.contains(
            "Mahalanobis detector, validation on OOD samples\nin_distribution: cifar10=========="
        ),
        "{stdout}"
    );
    for (r, ood, eps) in [
        (&recs[0], "lsun_resize", "0.005"),
        (&recs[1], "svhn", "0.0014"),
    ] {
        assert_eq!(r["ood"], ood);
        assert_eq!(r["detector"], "mahalanobis");
        assert_eq!(resflow::detect::eps_name(r["eps"].as_f64().unwrap()), eps);
        let block = format!(
            "out_distribution: {ood}\n TNR    AUROC  DTACC  AUIN   AUOUT \n{}\nInput noise: {eps}\n",
            values_line(r)
        );
        assert!(stdout.contains(&block), "missing\n{block}\nin\n{stdout}");
        assert_eq!(r["counts"]["test_in"], 100);
        assert_eq!(r["counts"]["test_ood"], 60);
        assert_eq!(r["trials"].as_array().unwrap().len(), 7);
        let auroc = r["auroc"].as_f64().unwrap();
        assert!(auroc > 0.9 && auroc <= 1.0, "{auroc}");
    }

    // The flow, with snake_case flags and explicit lists; now both detectors are compared.
    let (ok, stdout, stderr) = rf_regress(&[
        "--detector",
        "resflow",
        "--net_type",
        "resnet",
        "--dataset",
        "cifar10",
        "--ood",
        "svhn,lsun_resize",
        "--outf",
        outf_s,
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("Residual flow detector"), "{stdout}");
    assert!(stdout.contains("Mahalanobis / residual flow"), "{stdout}");
    let file = results::read_results(&run.path().join("results.json"))
        .unwrap()
        .unwrap();
    assert_eq!(file.results.len(), 4);
    let md = std::fs::read_to_string(run.path().join("results.md")).unwrap();
    assert!(
        md.contains("## Mahalanobis vs residual flow (validation on OOD samples)"),
        "{md}"
    );
    let plots = run.path().join("plots");
    for name in [
        "roc_ood_svhn.png",
        "roc_ood_lsun_resize.png",
        "hist_mahalanobis_ood_svhn.png",
        "hist_resflow_ood_lsun_resize.png",
        "auroc_vs_iteration.png",
    ] {
        assert_png(&plots.join(name));
    }
    assert!(run
        .test_scores_path(DetectorKind::Resflow, Validation::Ood, "svhn")
        .exists());

    // The AUROC plot's Mahalanobis lines: layer columns of eps 0 on the first 2000 rows per kind.
    let curves = regress::history_curves(&run).unwrap();
    assert_eq!(curves.len(), layers);
    let m = scores::read_scores(&run.mahalanobis_path("svhn", 0.0), false).unwrap();
    for c in &curves {
        let col = m.scores.column(c.layer).to_vec();
        let want = resflow::fit::metrics::compute(&col[n_out..], &col[..n_out])
            .unwrap()
            .auroc;
        assert_eq!(c.mahalanobis, Some(want));
        assert_eq!(c.history.auroc[3], 0.8 + 0.01 * c.layer as f64);
    }

    // FGSM validation, spelled as the reference did: the adversarially separated magnitude wins.
    let (ok, stdout, stderr) = rf_regress(&[
        "--detector",
        "mahalanobis",
        "--validation_src",
        "FGSM",
        "--ood",
        "svhn",
        "--outf",
        outf_s,
        "--no-plots",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("validation on FGSM adversarial samples"),
        "{stdout}"
    );
    assert!(stdout.contains("Input noise: 0.01\n"), "{stdout}");
    let file = results::read_results(&run.path().join("results.json"))
        .unwrap()
        .unwrap();
    let fg: Vec<_> = file
        .results
        .iter()
        .filter(|r| r.validation == Validation::Fgsm)
        .collect();
    assert_eq!(fg.len(), 1);
    assert_eq!(fg[0].eps, 0.01);
    // 200 rows per group (fewer than 500): the first 50 of each validate, 25 fit and 25 select.
    assert_eq!((fg[0].counts.fit, fg[0].counts.select), (75, 75));
    let (ok, stdout, stderr) = rf_regress(&[
        "--detector",
        "resflow",
        "--validation-src",
        "fgsm",
        "--ood",
        "svhn",
        "--outf",
        outf_s,
        "--no-plots",
    ]);
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Residual flow detector, validation on FGSM adversarial samples"),
        "{stdout}"
    );
    assert!(stdout.contains("Input noise: 0.01\n"), "{stdout}");
    // Both detectors now have FGSM results for svhn: the side-by-side table is printed.
    assert!(
        stdout.contains("validation on FGSM adversarial samples); Mahalanobis / residual flow"),
        "{stdout}"
    );

    if let Some(keep) = std::env::var_os("RESFLOW_KEEP_PLOTS") {
        for e in std::fs::read_dir(&plots).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, Path::new(&keep).join(p.file_name().unwrap())).unwrap();
        }
        std::fs::copy(
            run.path().join("results.md"),
            Path::new(&keep).join("results.md"),
        )
        .unwrap();
        std::fs::write(Path::new(&keep).join("stdout.txt"), &stdout).unwrap();
    }

    // Bad requests fail with a message naming what is missing.
    let (ok, _, stderr) = rf_regress(&[
        "--detector",
        "mahalanobis",
        "--ood",
        "mnist",
        "--outf",
        outf_s,
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("scores of OOD set `mnist`")
            && stderr.contains("(scored: lsun_resize, svhn)"),
        "{stderr}"
    );
    let (ok, _, stderr) = rf_regress(&["--outf", dir.path().join("empty").to_str().unwrap()]);
    assert!(!ok);
    assert!(
        stderr.contains("no resnet_{dataset} run folders"),
        "{stderr}"
    );
}

/// A user's small OOD set (200 images) next to a large one: both get results, the small one by
/// the proportional split with a warning; a set too small for any split is reported without
/// blocking the others (exit status 1, the others' results written).
#[test]
fn small_ood_sets_are_evaluated_next_to_large_ones() {
    let dir = tempfile::tempdir().unwrap();
    let outf = dir.path();
    let run = RunDir::new(outf, "resnet", "cifar10");
    let (n_in, layers) = (1100, 2);
    for (ood, n_out) in [("faces", 200), ("svhn", 1500), ("tiny", 30)] {
        let sep = |e: f64| if e == 0.0 { 2.0 } else { 0.5 };
        synth::write_mahalanobis(&run, ood, n_out, n_in, layers, 21, sep);
    }
    synth::seal(&run, DetectorKind::Mahalanobis, layers);
    let outf_s = outf.to_str().unwrap();
    let (ok, stdout, stderr) =
        rf_regress(&["--detector", "mahalanobis", "--outf", outf_s, "--no-plots"]);
    assert!(
        !ok,
        "a failed set gives a non-zero exit\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains("error: cifar10 vs tiny: io split: need at least 40 OOD")
            && stderr.contains("1 OOD set(s) could not be evaluated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("warning: cifar10 vs faces: 100 OOD test rows")
            && stderr.contains("proportional"),
        "{stderr}"
    );
    let results = results::read_results(&run.results_path()).unwrap().unwrap();
    let by_ood = |o: &str| results.results.iter().find(|r| r.ood == o).unwrap();
    assert_eq!(results.results.len(), 2);
    let faces = by_ood("faces");
    assert_eq!(faces.counts.split, IoSplitRule::Proportional);
    assert_eq!(
        (
            faces.counts.fit,
            faces.counts.select,
            faces.counts.test_in,
            faces.counts.test_ood
        ),
        (100, 100, 1000, 100)
    );
    let svhn = by_ood("svhn");
    assert_eq!(svhn.counts.split, IoSplitRule::Reference);
    assert_eq!(
        (
            svhn.counts.fit,
            svhn.counts.select,
            svhn.counts.test_in,
            svhn.counts.test_ood
        ),
        (1000, 1000, 100, 500)
    );
    for r in [faces, svhn] {
        assert!(r.auroc > 0.8, "{}: {}", r.ood, r.auroc);
    }
    let md = std::fs::read_to_string(run.results_markdown_path()).unwrap();
    assert!(
        md.contains("| faces (small set: proportional split) |"),
        "{md}"
    );
}

/// A record with OpenOOD's AUROC `auroc` and its interval `[lo, hi]`, on `test_ood` OOD test rows.
fn with_auroc(
    detector: DetectorKind,
    auroc: f64,
    lo: f64,
    hi: f64,
    test_ood: usize,
) -> ResultRecord {
    use resflow::fit::bootstrap::{BootstrapParams, Interval, MetricIntervals};
    use resflow::fit::openood::OodMetrics;
    let mut r = record(detector, "faces", [0.5; 5], 0.0);
    r.counts.test_ood = test_ood;
    r.openood = Some(OodMetrics {
        fpr_at_tpr95: 0.5,
        auroc,
        aupr_in: 0.5,
        aupr_out: 0.5,
    });
    r.intervals = Some(MetricIntervals {
        bootstrap: BootstrapParams::default(),
        paper: [Interval(0.0, 1.0); 5],
        openood: [
            Interval(0.4, 0.6),
            Interval(lo, hi),
            Interval(0.4, 0.6),
            Interval(0.4, 0.6),
        ],
    });
    r
}

/// Issue 32: two detectors whose AUROC intervals overlap on a small split are named with the
/// option that would tell them apart; apart, on a large split, or both perfect, they are not.
#[test]
fn a_split_too_small_to_tell_detectors_apart_is_warned_about() {
    use resflow::pipeline::warnings::indistinct_detectors;
    let close = [
        with_auroc(DetectorKind::Resflow, 0.95, 0.93, 0.97, 100),
        with_auroc(DetectorKind::Mahalanobis, 0.94, 0.92, 0.96, 100),
        with_auroc(DetectorKind::Msp, 0.70, 0.65, 0.75, 100),
    ];
    let w = indistinct_detectors(&close);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("faces")
            && w[0].contains("Residual flow")
            && w[0].contains("Mahalanobis")
            && w[0].contains("--max-ood"),
        "{w:?}"
    );
    let apart = [
        with_auroc(DetectorKind::Resflow, 0.99, 0.98, 1.0, 100),
        with_auroc(DetectorKind::Mahalanobis, 0.90, 0.88, 0.92, 100),
    ];
    assert!(indistinct_detectors(&apart).is_empty());
    let large = [
        with_auroc(DetectorKind::Resflow, 0.95, 0.93, 0.97, 5000),
        with_auroc(DetectorKind::Mahalanobis, 0.94, 0.92, 0.96, 5000),
    ];
    assert!(indistinct_detectors(&large).is_empty());
    let perfect = [
        with_auroc(DetectorKind::Resflow, 1.0, 1.0, 1.0, 100),
        with_auroc(DetectorKind::Mahalanobis, 1.0, 1.0, 1.0, 100),
    ];
    assert!(indistinct_detectors(&perfect).is_empty());
    // results.md carries the warnings next to the figures.
    let file = ResultsFile {
        net: "resnet".into(),
        dataset: "garments".into(),
        results: close.to_vec(),
        warnings: w,
        ..Default::default()
    };
    let md = tables::markdown(&file);
    assert!(
        md.contains("## Warnings: figures that mean little") && md.contains("- faces (ood)"),
        "{md}"
    );
}
