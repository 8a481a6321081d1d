//! `rf-detect export` on the tiny run of `pipeline.rs` (called from `detect.rs` with its bundle and
//! its test and OOD images): every exported model, loaded in Python (`torch.jit.load`,
//! `torch.export.load`, the AOTInductor package) and, for TorchScript, with `tch::CModule`,
//! scores the images as `rf-detect score` does (1e-5 relative) with the same OOD flags: the
//! residual flow and Mahalanobis at a non-zero magnitude and at magnitude 0, and Energy. And what
//! cannot be exported is refused, saying why. `small_set.rs` checks the TorchScript export of a
//! user's TorchScript classifier the same way, `export_densenet.rs` both formats of a DenseNet run.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use resflow::data::folder::{read_resized, to_tensor};
use tch::{IValue, Kind, Tensor};

fn rf_detect(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rf-detect"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A copy of `bundle` whose residual flow and Mahalanobis detector pre-process at `eps`.
pub fn bundle_at(bundle: &Path, eps: f64, dir: &Path) -> PathBuf {
    let copy = dir.join(format!("bundle_eps_{eps}"));
    std::fs::create_dir_all(copy.join("detectors")).unwrap();
    for entry in std::fs::read_dir(bundle.join("detectors")).unwrap() {
        let path = entry.unwrap().path();
        let to = copy.join("detectors").join(path.file_name().unwrap());
        std::fs::copy(&path, to).unwrap();
    }
    let text = std::fs::read_to_string(bundle.join("bundle.json")).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    for d in manifest["detectors"].as_array_mut().unwrap() {
        if d["kind"] == "resflow" || d["kind"] == "mahalanobis" {
            d["eps"] = serde_json::json!(eps);
        }
    }
    std::fs::write(copy.join("bundle.json"), manifest.to_string()).unwrap();
    copy
}

/// rf-detect score's (score, percentile, OOD flag) per image.
fn reference(bundle: &Path, kind: &str, files: &[PathBuf]) -> Vec<(f64, f64, bool)> {
    let b = bundle.to_str().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    let (ok, csv, err) = rf_detect(
        &[
            &[
                "score",
                "--bundle",
                b,
                "--detector",
                kind,
                "--batch-size",
                "64",
            ][..],
            &paths,
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    csv.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[3].parse().unwrap(), f[4].parse().unwrap(), f[5] == "ood")
        })
        .collect()
}

fn assert_matches(what: &str, got: &[(f64, f64, bool)], want: &[(f64, f64, bool)]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g.0 - w.0).abs() <= 1e-5 * (1.0 + w.0.abs()),
            "{what} row {i}: score {} vs rf-detect {}",
            g.0,
            w.0
        );
        // The AOTInductor package's fused kernels move a score by ~3e-7 relative, which moves
        // the percentile by as much as the quantiles are steep there (0.02 points here).
        let pct_tolerance = if what.contains("aoti") { 0.1 } else { 1e-3 };
        assert!(
            (g.1 - w.1).abs() <= pct_tolerance,
            "{what} row {i}: percentile {} vs {}",
            g.1,
            w.1
        );
        assert_eq!(g.2, w.2, "{what} row {i}: OOD flag");
    }
}

const SCORE_EXPORTS: &str = r#"
import json, os, sys
import numpy as np, torch
out, images, result = sys.argv[1], sys.argv[2], sys.argv[3]
x_all = torch.from_numpy(np.load(images))
rows = {}
for name in ["detector.pt", "detector.pt2", "detector.aoti.pt2"]:
    path = os.path.join(out, name)
    if not os.path.exists(path):
        continue
    if name == "detector.pt":
        m = torch.jit.load(path)
    elif name == "detector.pt2":
        m = torch.export.load(path).module()
    else:
        m = torch._inductor.aoti_load_package(path)
    # rf-detect's batches (--batch-size 64): the pre-processing loss is a batch mean.
    with torch.no_grad():
        parts = [m(x_all[i:i + 64]) for i in range(0, x_all.shape[0], 64)]
    o = [torch.cat([p[j] for p in parts]) for j in range(4)]
    x = x_all
    assert o[0].shape[0] == x.shape[0] and o[1].dtype == torch.float64, [t.shape for t in o]
    rows[name] = [[float(s), float(p), bool(f)] for s, p, f in zip(o[1], o[2], o[3])]
json.dump(rows, open(result, "w"))
"#;

/// Exports `kind` of `bundle` in `format` (plus `extra` options), then checks each file against
/// rf-detect score; returns the files checked.
pub fn export_and_check(
    bundle: &Path,
    kind: &str,
    extra: &[&str],
    images: &Tensor,
    npy: &Path,
    files: &[PathBuf],
    scratch: &Path,
) -> Vec<String> {
    let out = scratch.join(format!(
        "export_{}_{kind}",
        bundle.file_name().unwrap().to_str().unwrap()
    ));
    let args = [
        &[
            "export",
            "--bundle",
            bundle.to_str().unwrap(),
            "--detector",
            kind,
        ][..],
        extra,
        &[out.to_str().unwrap()],
    ]
    .concat();
    let (ok, stdout, err) = rf_detect(&args);
    assert!(ok, "{kind} {extra:?}: {stdout}\n{err}");
    let want = reference(bundle, kind, files);
    let result = scratch.join("export_scores.json");
    common::run_python(SCORE_EXPORTS, &[&out, npy, &result]);
    let rows: std::collections::BTreeMap<String, Vec<(f64, f64, bool)>> =
        serde_json::from_str(&std::fs::read_to_string(&result).unwrap()).unwrap();
    for (file, got) in &rows {
        assert_matches(&format!("{kind} {file} (Python)"), got, &want);
    }
    let pt = out.join("detector.pt");
    if pt.is_file() {
        assert_matches(
            &format!("{kind} detector.pt (tch)"),
            &cmodule_scores(&pt, images),
            &want,
        );
        let pbtxt = std::fs::read_to_string(out.join("config.pbtxt")).unwrap();
        assert!(pbtxt.contains("pytorch_libtorch") && pbtxt.contains("max_batch_size"));
    }
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("detector.json")).unwrap()).unwrap();
    assert_eq!(meta["detector"], kind);
    assert_eq!(meta["bundle_format"], "resflow-bundle-1");
    assert_eq!(meta["classifier"]["sha256"].as_str().unwrap().len(), 64);
    rows.into_keys().collect()
}

/// The TorchScript model's rows through `tch::CModule`.
fn cmodule_scores(pt: &Path, images: &Tensor) -> Vec<(f64, f64, bool)> {
    let module = tch::CModule::load(pt).unwrap();
    let mut rows = Vec::new();
    // rf-detect's batches (--batch-size 64): the pre-processing loss is a batch mean.
    for batch in images.split(64, 0) {
        rows.extend(cmodule_batch(&module, &batch));
    }
    rows
}

/// One batch through the TorchScript model (grad mode on, tch's default).
fn cmodule_batch(module: &tch::CModule, images: &Tensor) -> Vec<(f64, f64, bool)> {
    let out = module
        .forward_is(&[IValue::Tensor(images.shallow_clone())])
        .unwrap();
    let IValue::Tuple(parts) = out else {
        panic!("the TorchScript model returned {out:?}, not a tuple")
    };
    let tensor = |i: usize| match &parts[i] {
        IValue::Tensor(t) => t.shallow_clone(),
        other => panic!("output {i} is {other:?}"),
    };
    let score = Vec::<f64>::try_from(tensor(1).detach()).unwrap();
    let pct = Vec::<f64>::try_from(tensor(2).detach()).unwrap();
    let ood = Vec::<bool>::try_from(tensor(3).detach()).unwrap();
    (0..score.len())
        .map(|i| (score[i], pct[i], ood[i]))
        .collect()
}

/// The 32x32 image `files` as a [0, 1] batch, also written to `scratch/images.npy` for Python.
pub fn images_of(files: &[PathBuf], scratch: &Path) -> (Tensor, PathBuf) {
    let decoded: Vec<_> = files.iter().map(|f| read_resized(f, 32).unwrap()).collect();
    let images = to_tensor(&decoded).to_kind(Kind::Float) / 255.0;
    let npy = scratch.join("images.npy");
    resflow::io::write_npy_f32(&npy, &images).unwrap();
    (images, npy)
}

/// Called by `small_set.rs` on the bundle of a user's TorchScript classifier (a torchvision
/// ResNet-18): the TorchScript export of the residual flow at a non-zero magnitude (the input
/// gradient taken through the user's model) and of Energy scores `files` as rf-detect does, in
/// Python and through `tch::CModule`; a `.pt2` is refused, saying why and what to do.
pub fn torchscript_classifier_exports_match(bundle: &Path, files: &[PathBuf], scratch: &Path) {
    let scratch = scratch.join("export");
    std::fs::create_dir_all(&scratch).unwrap();
    let (images, npy) = images_of(files, &scratch);
    let nonzero = bundle_at(bundle, 0.005, &scratch);
    let ts = ["--format", "torchscript"];
    for (b, kind) in [(&nonzero, "resflow"), (&bundle.to_path_buf(), "energy")] {
        let checked = export_and_check(b, kind, &ts, &images, &npy, files, &scratch);
        assert_eq!(checked, ["detector.pt"]);
    }
    let out = scratch.join("refused_pt2");
    let (ok, _, err) = rf_detect(&[
        "export",
        "--bundle",
        bundle.to_str().unwrap(),
        "--format",
        "pt2",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("is a TorchScript model") && err.contains("--format torchscript"),
        "{err}"
    );
    assert!(!out.exists());
}

/// Called by `detect.rs` on the finished run's bundle and its image files.
pub fn exports_match_rf_detect(bundle: &Path, files: &[PathBuf], scratch: &Path) {
    let scratch = scratch.join("export");
    std::fs::create_dir_all(&scratch).unwrap();
    let (images, npy) = images_of(files, &scratch);

    let nonzero = bundle_at(bundle, 0.005, &scratch);
    let zero = bundle_at(bundle, 0.0, &scratch);
    let ts = ["--format", "torchscript"];
    let both = ["--format", "both"];
    let checked = [
        export_and_check(&nonzero, "resflow", &both, &images, &npy, files, &scratch),
        export_and_check(&nonzero, "mahalanobis", &ts, &images, &npy, files, &scratch),
        export_and_check(&zero, "resflow", &ts, &images, &npy, files, &scratch),
        export_and_check(&zero, "mahalanobis", &both, &images, &npy, files, &scratch),
        export_and_check(
            bundle,
            "energy",
            &["--format", "both", "--aoti"],
            &images,
            &npy,
            files,
            &scratch,
        ),
    ];
    assert_eq!(checked[0], ["detector.pt", "detector.pt2"]);
    assert_eq!(checked[4].len(), 3, "{:?}", checked[4]);

    // Refused, saying why: a detector without a PyTorch transcription, a classifier without its
    // sidecar.
    let b = bundle.to_str().unwrap();
    let out = scratch.join("refused");
    let (ok, _, err) = rf_detect(&[
        "export",
        "--bundle",
        b,
        "--detector",
        "knn",
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("cannot be exported") && err.contains("resflow, mahalanobis"),
        "{err}"
    );
    let manifest = resflow::bundle::BundleManifest::read(bundle).unwrap();
    let lone = scratch.join("lone.safetensors");
    std::fs::copy(&manifest.classifier.path, &lone).unwrap();
    let (ok, _, err) = rf_detect(&[
        "export",
        "--bundle",
        b,
        "--classifier",
        lone.to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert!(
        !ok && err.contains("lone.json") && err.contains("sidecar"),
        "{err}"
    );
    assert!(!out.exists());
}
