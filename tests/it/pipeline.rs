//! The whole pipeline at a tiny size through the binaries: prepare, Mahalanobis, flow training of
//! one iteration at a learning rate of 1e-12 (the flows stay at their initialisation to far below
//! float32's resolution), flow scores, regression for both detectors. A residual flow at its
//! initialisation is the Gaussian model, so with full-rank features both detectors must report the
//! same metrics.
use crate::common;

use common::{random_classifier, root_with_classes, run_binary as run};

use std::collections::BTreeSet;
use std::path::Path;

use resflow::detect::DetectorKind;
use resflow::detect::MAGNITUDES;
use resflow::store::results::read_results;
use resflow::store::scores::read_scores;
use resflow::store::RunDir;

#[test]
fn untrained_flow_matches_mahalanobis_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    let outf = dir.path().join("output");
    root_with_classes(&root, 30, 300);
    let weights = dir.path().join("resnet_fashion-mnist.safetensors");
    random_classifier(&weights, &root, 10, 3);
    let io = [("--dataroot", root.as_path()), ("--outf", outf.as_path())];

    let prepared = run(
        env!("CARGO_BIN_EXE_rf-prepare"),
        &[
            "--ood",
            "uniform",
            "--max-ood",
            "300",
            "--batch-size",
            "100",
        ],
        &[io[0], io[1], ("--classifier", &weights)],
    );
    // Full rank in every layer: k = C_l.
    for (l, c) in [4, 4, 8, 16, 32].iter().enumerate() {
        assert!(
            prepared.contains(&format!("layer {l}: {c} channels, whitening rank k = {c}")),
            "{prepared}"
        );
    }
    run(
        env!("CARGO_BIN_EXE_rf-mahalanobis"),
        &["--batch_size", "100"],
        &io,
    );
    for layer in 0..5 {
        run(
            env!("CARGO_BIN_EXE_rf-train"),
            &[
                "--layer",
                &layer.to_string(),
                "--num_iter",
                "1",
                "--lr",
                "1e-12",
                "--validation-total",
                "100",
            ],
            &io,
        );
    }
    run(
        env!("CARGO_BIN_EXE_rf-score"),
        &["--batch-size", "100"],
        &io,
    );

    // Files and counts are consistent.
    let run_dir = RunDir::new(&outf, "resnet", "fashion-mnist");
    for &eps in &MAGNITUDES {
        let maha = read_scores(&run_dir.mahalanobis_path("uniform", eps), false).unwrap();
        assert_eq!(
            (maha.n_rows(), maha.n_out, maha.scores.ncols()),
            (600, 300, 5)
        );
        for layer in 0..5 {
            let flow = read_scores(&run_dir.resflow_path("uniform", layer, eps), false).unwrap();
            assert_eq!(
                (flow.n_rows(), flow.n_out, flow.scores.ncols()),
                (600, 300, 10)
            );
            // At initialisation log p_c = Mahalanobis score_c + a constant, so the class maxima
            // differ by that constant for every row, up to the float32 rounding of the flow at the
            // size of the largest score.
            let diff: Vec<f64> = (0..600)
                .map(|i| {
                    flow.scores.row(i).fold(f64::MIN, |a, &b| a.max(b)) - maha.scores[[i, layer]]
                })
                .collect();
            let mut sorted = diff.clone();
            sorted.sort_by(f64::total_cmp);
            let constant = sorted[sorted.len() / 2];
            let largest = maha.scores.column(layer).fold(0f64, |a, &b| a.max(b.abs()));
            let tolerance = 1e-3 * (1.0 + constant.abs()) + 2e-6 * largest;
            let off = diff
                .iter()
                .filter(|d| (*d - constant).abs() > tolerance)
                .count();
            // With pre-processing, a gradient component near zero can take another sign in the
            // float32 flow than in the float64 Gaussian, moving a few rows' perturbed inputs.
            let allowed = if eps == 0.0 { 0 } else { 11 };
            assert!(
                off <= allowed,
                "layer {layer} eps {eps}: {off} rows off by more than {tolerance}"
            );
        }
    }

    let maha_table = run(
        env!("CARGO_BIN_EXE_rf-regress"),
        &["--detector", "mahalanobis", "--no-plots"],
        &[io[1]],
    );
    let flow_table = run(
        env!("CARGO_BIN_EXE_rf-regress"),
        &["--detector", "resflow", "--no-plots"],
        &[io[1]],
    );
    assert!(
        maha_table.contains("uniform") && flow_table.contains("uniform"),
        "{maha_table}\n{flow_table}"
    );
    let results = read_results(&run_dir.results_path())
        .unwrap()
        .expect("results.json written");
    assert_eq!(results.results.len(), 2);
    let (maha, flow) = (&results.results[0], &results.results[1]);
    assert_eq!(
        (maha.ood.as_str(), flow.ood.as_str()),
        ("uniform", "uniform")
    );
    assert_eq!(maha.counts, flow.counts);
    // Issue 14, defect 3: the records say which layers the detector was built from.
    assert_eq!(
        (maha.layers.clone(), flow.layers.clone()),
        (vec![0, 1, 2, 3, 4], vec![0, 1, 2, 3, 4])
    );
    // numpy's trapezoid sum (the reference's) can exceed 1 by a rounding error on a perfect
    // separation (AUROC 1.0000000000000002 here), hence the slack on the range.
    let fraction = -1e-12..=1.0 + 1e-12;
    for (m, f) in maha.metrics().iter().zip(flow.metrics()) {
        assert!(
            fraction.contains(m) && fraction.contains(&f),
            "{maha:?}\n{flow:?}"
        );
        assert!(
            (m - f).abs() <= 0.001,
            "Mahalanobis {:?} vs residual flow {:?}",
            maha.metrics(),
            flow.metrics()
        );
    }

    every_kind_reaches_the_comparison_table(&run_dir, &io);
    crate::detect::bundle_scores_match_the_pipeline(&run_dir, &root, &outf, dir.path());

    // Resuming a flow with other settings, or after the features changed, is refused.
    let train = |extra: &[&str]| {
        let mut args = vec!["--layer", "4"];
        if !extra.contains(&"--num_iter") {
            args.extend_from_slice(&["--num_iter", "1"]);
        }
        if !extra.contains(&"--validation-total") {
            args.extend_from_slice(&["--validation-total", "100"]);
        }
        args.extend_from_slice(extra);
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rf-train"));
        cmd.args(&args);
        for (flag, path) in io {
            cmd.arg(flag).arg(path);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = train(&["--resume", "--lr", "1e-3"]);
    assert!(
        !ok && err.contains("layer_4") && err.contains("lr 0.001"),
        "{err}"
    );
    random_classifier(&weights, &root, 10, 4);
    run(
        env!("CARGO_BIN_EXE_rf-prepare"),
        &[
            "--ood",
            "uniform",
            "--max-ood",
            "100",
            "--batch-size",
            "100",
        ],
        &[io[0], io[1], ("--classifier", &weights)],
    );
    let (ok, err) = train(&["--resume"]);
    assert!(!ok && err.contains("trained on other features"), "{err}");
    let (ok, err) = train(&[]);
    assert!(ok, "{err}");

    // Issue 14, defect 1: scoring with flows trained on the old features is refused (layers 0-3
    // were trained before the new rf-prepare run).
    let err = common::run_failing(
        env!("CARGO_BIN_EXE_rf-score"),
        &[
            std::ffi::OsStr::new("--dataroot"),
            root.as_os_str(),
            std::ffi::OsStr::new("--outf"),
            outf.as_os_str(),
        ],
    );
    assert!(
        err.contains("layer_0")
            && err.contains("trained on other features")
            && err.contains("rf-train --layer 0"),
        "{err}"
    );

    // Issue 14, defect 5: `--num-iter 0` does not replace a trained flow with an untrained one
    // (nor saves one: it is refused as an option that means nothing).
    let (ok, err) = train(&["--num_iter", "3"]);
    assert!(ok, "{err}");
    let before = std::fs::read(run_dir.flow_dir(4).join("flow.json")).unwrap();
    let (ok, err) = train(&["--num_iter", "0"]);
    assert!(
        !ok && err.contains("--num-iter: 0 iterations would save an untrained flow"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(run_dir.flow_dir(4).join("flow.json")).unwrap(),
        before
    );

    // Issue 14, defect 7: resuming with another validation hold-out is refused.
    let (ok, err) = train(&["--resume", "--num_iter", "4", "--validation-total", "50"]);
    assert!(
        !ok && err.contains("held out 100 validation rows") && err.contains("--validation-total"),
        "{err}"
    );

    // Issue 14, defect 7: a second rf-train on a layer being trained stops at once, naming the
    // lock; a save interrupted between its renames (only `layer_4.old` left) is resumed, not
    // restarted from 0.
    let lock_path = outf.join("resnet_fashion-mnist/flow/layer_4.lock");
    let held = std::fs::File::open(&lock_path).unwrap();
    held.lock().unwrap();
    let (ok, err) = train(&["--resume", "--num_iter", "4"]);
    assert!(
        !ok && err.contains("layer_4.lock") && err.contains("another rf-train"),
        "{err}"
    );
    held.unlock().unwrap();
    let old = outf.join("resnet_fashion-mnist/flow/layer_4.old");
    std::fs::rename(run_dir.flow_dir(4), &old).unwrap();
    let (ok, err) = train(&["--resume", "--num_iter", "4"]);
    assert!(ok && !err.contains("found no checkpoint"), "{err}");
    assert!(run_dir.flow_dir(4).join("flow.json").exists() && !old.exists());

    // Issue 14, defect 7: `--resume` without a checkpoint says that it starts afresh.
    std::fs::remove_dir_all(run_dir.flow_dir(4)).unwrap();
    let (ok, err) = train(&["--resume"]);
    assert!(ok && err.contains("--resume found no checkpoint"), "{err}");
}

/// Every kind of the registry that `run_dir` has no scores of yet goes through its own stage
/// binary (each stage once) and `rf-regress`: then all of them are columns of the detector
/// comparison in `results.md`.
fn every_kind_reaches_the_comparison_table(run_dir: &RunDir, io: &[(&str, &Path)]) {
    let bin = |name: &str| {
        Path::new(env!("CARGO_BIN_EXE_rf-regress"))
            .with_file_name(name)
            .display()
            .to_string()
    };
    let unscored = |k: &&DetectorKind| !run_dir.detector_dir(**k).join("scores.json").exists();
    let stages: BTreeSet<&str> = DetectorKind::ALL
        .iter()
        .filter(unscored)
        .map(|k| k.stage())
        .collect();
    for stage in stages {
        run(&bin(stage), &["--batch-size", "100"], io);
    }
    let results = read_results(&run_dir.results_path()).unwrap().unwrap();
    for &kind in DetectorKind::ALL {
        if !results.results.iter().any(|r| r.detector == kind) {
            run(
                &bin("rf-regress"),
                &["--detector", kind.name(), "--no-plots", "--bootstrap", "0"],
                &io[1..],
            );
        }
    }
    let md = std::fs::read_to_string(run_dir.results_markdown_path()).unwrap();
    let comparison = &md[md.find("## Detector comparison").expect(&md)..];
    let header = comparison
        .lines()
        .find(|l| l.starts_with("| OOD set |"))
        .expect(comparison);
    for &kind in DetectorKind::ALL {
        assert!(
            header.contains(&format!(" {} |", kind.label())),
            "{kind} missing from {header}"
        );
    }
    // The registry's group of uniform noise, recorded by rf-prepare, and its group mean.
    assert!(comparison.contains("| uniform (far) |"), "{comparison}");
    assert!(
        comparison.contains("| **far mean** (uniform) |"),
        "{comparison}"
    );

    // With the bootstrap: the compact table and the paired comparison of every detector, and the
    // figure of AUROC with intervals.
    let out = run(
        &bin("rf-regress"),
        &["--detector", "msp", "--bootstrap", "200"],
        &io[1..],
    );
    assert!(
        out.contains("classifier accuracy on the in-distribution test split: ")
            && out.contains("uniform (far)")
            && out.contains("far mean (1)")
            && out.contains("paired comparison (validation on OOD samples)"),
        "{out}"
    );
    // `--summary` prints the same comparison from results.json and changes nothing.
    let stored = std::fs::read(run_dir.results_path()).unwrap();
    let summary = run(&bin("rf-regress"), &["--summary"], &io[1..]);
    let table = out.find("; AUROC (OOD positive), percent").expect(&out);
    let compact = &out[out[..table].rfind('\n').map_or(0, |i| i + 1)..];
    let end = ["\nin-distribution: ", "\nwrote "]
        .iter()
        .filter_map(|m| compact.find(m))
        .min()
        .unwrap_or(compact.len());
    let compact = &compact[..end];
    assert!(
        summary.contains(compact.trim_end()),
        "--summary:\n{summary}\nrf-regress:\n{compact}"
    );
    assert_eq!(std::fs::read(run_dir.results_path()).unwrap(), stored);
    let results = read_results(&run_dir.results_path()).unwrap().unwrap();
    let paired = &results.paired[0];
    assert_eq!((results.paired.len(), paired.ood.as_str()), (1, "uniform"));
    assert_eq!(paired.detectors(), DetectorKind::ALL.to_vec());
    assert!(paired.skipped.is_empty(), "{:?}", paired.skipped);
    // The far group's mean with its interval, for every detector; over one set it is that set's
    // AUROC interval (the same draws; AUROC of the resampled ROC curve there, as a pair count here).
    assert_eq!(results.group_means.len(), DetectorKind::ALL.len());
    let msp_mean = results
        .group_means
        .iter()
        .find(|m| m.detector == DetectorKind::Msp)
        .unwrap();
    let msp = results
        .results
        .iter()
        .find(|r| r.detector == DetectorKind::Msp && r.ood == "uniform")
        .unwrap();
    let own = msp.intervals.as_ref().unwrap().openood[1];
    assert_eq!(msp_mean.sets, ["uniform"]);
    assert!(
        (msp_mean.interval.0 - own.0).abs() < 1e-9 && (msp_mean.interval.1 - own.1).abs() < 1e-9,
        "{msp_mean:?} vs {own:?}"
    );
    let figure = run_dir.plots_dir().join("comparison_auroc_ood.png");
    assert!(figure.exists());
    if let Some(keep) = std::env::var_os("RESFLOW_KEEP_PLOTS") {
        std::fs::copy(&figure, Path::new(&keep).join("pipeline_comparison.png")).unwrap();
        std::fs::write(Path::new(&keep).join("pipeline_stdout.txt"), &out).unwrap();
    }
}
