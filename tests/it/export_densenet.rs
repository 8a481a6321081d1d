//! `rf-detect export` of a DenseNet-BC-100 run (issue 31): a DenseNet (growth rate 3) trained for
//! one epoch by `rf-classifier` on a small colour image folder (`classifier_small::tinted_folder`),
//! then rf-prepare, rf-mahalanobis, rf-baselines (Energy), rf-regress and `rf-detect fit`; its
//! Mahalanobis detector at a non-zero magnitude (the input gradient through every dense block), in
//! both formats, and Energy as TorchScript score test and noise images as `rf-detect score` does
//! (1e-5 relative, the same OOD flags; Python and `tch::CModule`, as in `export.rs`).
//!
//! Colour images, because the mean-pooled first layer of a DenseNet is its first convolution
//! alone, a linear map of the image: on grey images padded with a constant (MNIST-like sets) its
//! features have rank 1, which rf-prepare's whitening refuses.
use crate::classifier_small::tinted_folder;
use crate::common::run_binary as run;
use crate::export::{bundle_at, export_and_check, images_of};

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};

#[test]
fn densenet_run_exports_score_like_rf_detect() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("garments");
    tinted_folder(&data, 60, 40, [110, 30], [8..=40, 8..=24], 32);
    let dataset = format!("garments={}", data.display());
    let outf = dir.path().join("output");
    let classifier = dir.path().join("densenet_garments.safetensors");
    let io = [("--outf", outf.as_path())];
    let with = |extra: &[&str]| -> Vec<String> {
        ["--net-type", "densenet", "--dataset", &dataset]
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let stage = |bin: &str, args: Vec<String>, paths: &[(&str, &std::path::Path)]| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(bin, &args, paths)
    };
    stage(
        env!("CARGO_BIN_EXE_rf-classifier"),
        [
            vec!["train".to_string()],
            with(&["--width", "3", "--epochs", "1"]),
        ]
        .concat(),
        &[("--out", &classifier)],
    );
    stage(
        env!("CARGO_BIN_EXE_rf-prepare"),
        with(&["--ood", "uniform"]),
        &[io[0], ("--classifier", &classifier)],
    );
    stage(env!("CARGO_BIN_EXE_rf-mahalanobis"), with(&[]), &io);
    stage(
        env!("CARGO_BIN_EXE_rf-baselines"),
        with(&["--detectors", "energy"]),
        &io,
    );
    for detector in ["mahalanobis", "energy"] {
        stage(
            env!("CARGO_BIN_EXE_rf-regress"),
            with(&["--detector", detector, "--no-plots", "--bootstrap", "0"]),
            &io,
        );
    }
    let bundle = dir.path().join("bundle");
    stage(
        env!("CARGO_BIN_EXE_rf-detect"),
        [
            vec!["fit".to_string()],
            with(&["--validation", "ood", "--ood-set", "uniform"]),
        ]
        .concat(),
        &[io[0], ("--out", &bundle)],
    );

    // Test images of each class, and noise.
    let scratch = dir.path().join("export");
    let noise = scratch.join("noise");
    std::fs::create_dir_all(&noise).unwrap();
    let mut files = Vec::new();
    for class in ["red", "green", "blue"] {
        for i in 0..6 {
            files.push(data.join("test").join(class).join(format!("{i}.png")));
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    for i in 0..12 {
        let image = RgbImage::from_fn(32, 32, |_, _| Rgb([0; 3].map(|_: u8| rng.random())));
        let path = noise.join(format!("{i}.png"));
        image.save(&path).unwrap();
        files.push(path);
    }
    let (images, npy) = images_of(&files, &scratch);

    let nonzero = bundle_at(&bundle, 0.005, &scratch);
    let both = ["--format", "both"];
    let checked = export_and_check(
        &nonzero,
        "mahalanobis",
        &both,
        &images,
        &npy,
        &files,
        &scratch,
    );
    assert_eq!(checked, ["detector.pt", "detector.pt2"]);
    let ts = ["--format", "torchscript"];
    export_and_check(&bundle, "energy", &ts, &images, &npy, &files, &scratch);
}
