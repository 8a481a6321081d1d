//! `rf-detect` on a finished run (the tiny run of `pipeline.rs`): the bundle's detectors score the
//! run's own test and OOD images (written out as PNG files) exactly as the pipeline's final
//! detector scored them (`regression/{detector}_ood/{ood}.npz`), every kind of the registry; the
//! verdicts reproduce the pipeline's TNR at TPR 95%; and what must be refused is, naming the file
//! and the fix.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use resflow::bundle::BundleManifest;
use resflow::data::{self, Split};
use resflow::detect::DetectorKind;
use resflow::fit::{splits, Validation};
use resflow::store::results::{read_results, read_test_scores};
use resflow::store::RunDir;

fn rf_detect(args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rf-detect"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Writes images `rows` of the u8 set `images` as PNG files; returns their paths.
fn write_pngs(images: &tch::Tensor, rows: &[usize], dir: &Path, prefix: &str) -> Vec<PathBuf> {
    resflow::data::folder::write_pngs(images, rows, dir, prefix).unwrap()
}

/// The `score` column of rf-detect's CSV rows, in row order.
fn scores_of(csv: &str) -> Vec<f64> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').nth(3).unwrap().parse().unwrap())
        .collect()
}

/// Called by the end-to-end pipeline test on its finished run (OOD set `uniform`, OOD-validated
/// results of every kind).
pub fn bundle_scores_match_the_pipeline(run: &RunDir, root: &Path, outf: &Path, scratch: &Path) {
    let outf_s = outf.to_str().unwrap();
    let io = ["--dataroot", root.to_str().unwrap(), "--outf", outf_s];
    // The default bundle is FGSM-validated; this run has no FGSM results: refused, saying how.
    let (ok, _, err) = rf_detect(&[&["fit"][..], &io].concat(), "");
    assert!(
        !ok && err.contains("no FGSM-validated result") && err.contains("--ood-set"),
        "{err}"
    );
    let bundle = scratch.join("bundle");
    let b = bundle.to_str().unwrap();
    let fit_args = [
        &[
            "fit",
            "--validation",
            "ood",
            "--ood-set",
            "uniform",
            "--out",
            b,
        ][..],
        &io,
    ]
    .concat();
    let (ok, out, err) = rf_detect(&fit_args, "");
    assert!(ok, "{out}\n{err}");
    let manifest = BundleManifest::read(&bundle).unwrap();
    assert_eq!(manifest.detectors.len(), DetectorKind::ALL.len());
    assert_eq!(manifest.default_detector, DetectorKind::Resflow);

    // The run's own test rows as PNG files, in-distribution then OOD.
    let results = read_results(&run.results_path()).unwrap().unwrap();
    let test = data::load_in_distribution("fashion-mnist", root, Split::Test, 32).unwrap();
    let ood = data::load_ood("uniform", root, 32).unwrap();
    let record = &results.results[0];
    let (n_in, n_out) = (record.counts.test_in, record.counts.test_ood);
    let n_ood_rows = 300;
    let split = splits::io_split(300 + n_ood_rows, n_ood_rows).unwrap();
    let in_rows: Vec<usize> = split.test[..n_in].iter().map(|r| r - n_ood_rows).collect();
    let ood_rows: Vec<usize> = split.test[n_in..].to_vec();
    assert_eq!(ood_rows.len(), n_out);
    let images = scratch.join("images");
    let mut files = write_pngs(&test.images, &in_rows, &images, "test");
    files.extend(write_pngs(&ood.images, &ood_rows, &images, "ood"));
    let list: String = files.iter().map(|f| format!("{}\n", f.display())).collect();

    for d in &manifest.detectors {
        let (ok, csv, err) = rf_detect(
            &[
                "score",
                "--bundle",
                b,
                "--detector",
                d.kind.name(),
                "--batch-size",
                "64",
                "-",
            ],
            &list,
        );
        assert!(ok, "{}: {err}", d.kind);
        let ours = scores_of(&csv);
        let stored =
            read_test_scores(&run.test_scores_path(d.kind, Validation::Ood, "uniform")).unwrap();
        let theirs: Vec<f64> = stored
            .logit_in
            .iter()
            .chain(&stored.logit_ood)
            .copied()
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{}", d.kind);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                "{} row {i}: rf-detect {a} vs the pipeline {b}",
                d.kind
            );
        }
        // The verdicts at the bundle's threshold (TPR 95% of these in-distribution rows) give
        // the pipeline's TNR at TPR 95% on the OOD rows, up to where the threshold falls between
        // tied or adjacent rows.
        let verdicts: Vec<&str> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').nth(5).unwrap())
            .collect();
        let tnr = verdicts[n_in..].iter().filter(|v| **v == "ood").count() as f64 / n_out as f64;
        let record = results
            .results
            .iter()
            .find(|r| r.detector == d.kind && r.ood == "uniform")
            .unwrap();
        assert!(
            (tnr - record.tnr_at_tpr95).abs() <= 2.0 / n_out as f64 + 0.02,
            "{}: TNR {tnr} vs {}",
            d.kind,
            record.tnr_at_tpr95
        );
    }

    // Issue 31: the bundle exported as TorchScript and torch.export models scores these images
    // as rf-detect score does.
    crate::export::exports_match_rf_detect(&bundle, &files, scratch);

    // JSON Lines, an unreadable image among readable ones: a row with an error, exit status 1.
    let broken = images.join("broken.png");
    std::fs::write(&broken, b"not a png").unwrap();
    let two = [files[0].to_str().unwrap(), broken.to_str().unwrap()];
    let (ok, out, err) = rf_detect(
        &[&["score", "--bundle", b, "--format", "jsonl"][..], &two].concat(),
        "",
    );
    let rows: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!ok && err.contains("1 input(s) could not be read"), "{err}");
    assert_eq!(rows.len(), 2);
    assert!(rows[0]["error"].is_null() && rows[0]["verdict"].is_string());
    assert!(
        rows[1]["error"].as_str().unwrap().contains("broken.png"),
        "{out}"
    );
    // A folder is searched for images; an empty list of paths is refused.
    let (ok, out, _) = rf_detect(&["score", "--bundle", b, images.to_str().unwrap()], "");
    assert!(!ok && out.lines().count() == files.len() + 2, "{out}");
    let (ok, _, err) = rf_detect(&["score", "--bundle", b, "-"], "");
    assert!(!ok && err.contains("no image among the inputs"), "{err}");

    // Refused, naming the file and the fix: another classifier, an unknown format, a corrupt
    // detector file.
    let other = scratch.join("other.safetensors");
    common::random_classifier(&other, root, 10, 11);
    let one = files[0].to_str().unwrap();
    let (ok, _, err) = rf_detect(
        &[
            "score",
            "--bundle",
            b,
            "--classifier",
            other.to_str().unwrap(),
            one,
        ],
        "",
    );
    assert!(
        !ok && err.contains("other.safetensors") && err.contains("SHA-256 differs"),
        "{err}"
    );
    let manifest_path = bundle.join("bundle.json");
    let text = std::fs::read_to_string(&manifest_path).unwrap();
    std::fs::write(
        &manifest_path,
        text.replace("resflow-bundle-1", "resflow-bundle-9"),
    )
    .unwrap();
    let (ok, _, err) = rf_detect(&["score", "--bundle", b, one], "");
    assert!(
        !ok && err.contains("bundle.json") && err.contains("rf-detect fit"),
        "{err}"
    );
    std::fs::write(&manifest_path, text).unwrap();
    // A missing part is named, with the fix.
    let part = bundle.join("detectors/mahalanobis.safetensors");
    std::fs::rename(&part, scratch.join("aside.safetensors")).unwrap();
    let (ok, _, err) = rf_detect(
        &["score", "--bundle", b, "--detector", "mahalanobis", one],
        "",
    );
    assert!(
        !ok && err.contains("mahalanobis.safetensors") && err.contains("rf-detect fit"),
        "{err}"
    );
    let weights = bundle.join("detectors/resflow.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let (ok, _, err) = rf_detect(&["score", "--bundle", b, one], "");
    assert!(
        !ok && err.contains("resflow.safetensors") && err.contains("save the detector again"),
        "{err}"
    );
}
