//! Your own small data set with default options, end to end (issue 32): an ImageFolder of 3
//! classes with 150 train and 60 test images each (made here, seeded), an OOD folder of 60 images
//! of another kind plus `uniform`, and every stage with its default options, FGSM validation
//! included, for our ResNet trained by `rf-classifier` and for a torchvision ResNet-18 exported by
//! `scripts/export_torchscript.py`: every stage succeeds, the classifier is well above chance and
//! `results.md` compares every detector under both validations. The ResNet-18's bundle is also
//! exported as TorchScript with the user's model inside (`export.rs`, issue 31).
//!
//! The one option changed from its default is `rf-train --num-iter 20` (default 1000), which keeps
//! the flows' training to seconds; the flows still go through every later stage. The stages take
//! only the flags that name the data, the model and the output (`--dataset`, `--ood`,
//! `--net-type`, `--classifier`, `--outf`, `--out`), the stage's subject (`--layer`,
//! `--detector`, `--validation-src`) and nothing else. `rf-baselines` runs next to the
//! Mahalanobis and flow stages (they are independent; two cores).
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use image::{Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use resflow::detect::DetectorKind;
use resflow::fit::Validation;
use resflow::store::fgsm::FGSM_SUMMARY;
use resflow::store::results::read_results;
use resflow::store::RunDir;

use crate::classifier_small::tinted_folder;
use crate::common::{python, run_python};

/// Train and test images per class, and OOD images of the other kind.
const TRAIN: usize = 150;
const TEST: usize = 60;
const OOD: usize = 60;

/// The data set's name (`--dataset garments=PATH`).
const NAME: &str = "garments";

/// The small set under `dir`: `garments/{train,test}/{blue,green,red}/*.png`, 32x32 grey images
/// whose class's channel is lifted (per image: 8 to 40 levels in train, 8 to 24 in test) under
/// noise of +-30 levels per pixel, and `other/*.png`: 60 grey diagonal stripes with noise, OOD.
///
/// Easy for a network, which averages the noise away (the channels' means differ by the lift
/// +-1.5 levels). The FGSM step (`docs/method.md#fgsm-samples`, 0.05 of the pixel range, 12.75
/// levels per pixel) moves the channels' means by up to 25.5 levels against the class, enough to
/// fool the ideal classifier (comparing the channels' means) on every test image; a trained
/// network's gradient signs agree less, so it is fooled on fewer, but on the low lifts whatever
/// margins training happened to find. With a fixed lift of 40 the FGSM set ranged from 3 to 150
/// of 180 images by CPU kernel setting; with test lifts of 8 to 40, from 23 to 90.
fn small_set(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join(NAME);
    tinted_folder(&data, TRAIN, TEST, [110, 30], [8..=40, 8..=24], 32);
    let ood = dir.join("other");
    std::fs::create_dir_all(&ood).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    for i in 0..OOD {
        let phase = i as u32 % 8;
        let image = RgbImage::from_fn(32, 32, |x, y| {
            let level = if ((x + y + phase) / 4).is_multiple_of(2) {
                60
            } else {
                180
            };
            Rgb([0; 3].map(|_: u8| (level + rng.random_range(-30..=30)).clamp(0, 255) as u8))
        });
        image.save(ood.join(format!("{i}.png"))).unwrap();
    }
    (data, ood)
}

/// Starts binary `bin` (a `CARGO_BIN_EXE_` path) with `args`.
fn start(bin: &str, args: &[String]) -> Child {
    Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"))
}

/// Waits for `child` (started by [`start`] with `args`); panics with its output unless it
/// succeeded. Prints how long it took since `began`.
fn finish(child: Child, bin: &str, args: &[String], began: Instant) -> Output {
    let out = child.wait_with_output().unwrap();
    let name = Path::new(bin).file_name().unwrap().to_string_lossy();
    // The arguments that say what the stage did (not the paths).
    let what: Vec<&str> = args
        .iter()
        .map(String::as_str)
        .filter(|a| !a.contains('/') && !["--net-type", "--dataset", "--outf"].contains(a))
        .collect();
    eprintln!(
        "{name} {}: {:.1} s",
        what.join(" "),
        began.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "{name} {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs binary `bin` with `args` to the end (see [`finish`]); returns its standard output.
fn stage(bin: &str, args: &[String]) -> String {
    let began = Instant::now();
    let out = finish(start(bin, args), bin, args, began);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The run of one model: `--net-type`, `--dataset`, `--outf` (the flags every stage takes).
struct SmallRun {
    net_type: &'static str,
    data: PathBuf,
    ood: PathBuf,
    /// `uniform` is an OOD set too.
    uniform: bool,
    outf: PathBuf,
    classifier: PathBuf,
    /// `rf-train --num-iter`.
    num_iter: &'static str,
}

impl SmallRun {
    /// The OOD sets' names.
    fn ood_sets(&self) -> &'static [&'static str] {
        if self.uniform {
            &["other", "uniform"]
        } else {
            &["other"]
        }
    }

    /// `--net-type N --dataset garments=PATH --outf OUTF` and `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args = strings(&[
            "--net-type",
            self.net_type,
            "--dataset",
            &format!("{NAME}={}", self.data.display()),
            "--outf",
            &self.outf.display().to_string(),
        ]);
        args.extend(strings(extra));
        args
    }

    fn classifier_arg(&self) -> String {
        self.classifier.display().to_string()
    }

    fn run_dir(&self) -> RunDir {
        RunDir::new(&self.outf, self.net_type, NAME)
    }

    /// Every stage after the classifier, with default options (but `rf-train --num-iter 20`), then
    /// the checks of the module's doc comment. Returns the layers `rf-data layers` listed.
    fn every_stage(&self) -> Vec<String> {
        let classifier = self.classifier_arg();
        let mut ood = format!("other={}", self.ood.display());
        if self.uniform {
            ood.push_str(",uniform");
        }
        stage(
            env!("CARGO_BIN_EXE_rf-fgsm"),
            &self.args(&["--classifier", &classifier]),
        );
        stage(
            env!("CARGO_BIN_EXE_rf-prepare"),
            &self.args(&[
                "--classifier",
                &classifier,
                "--ood",
                &ood,
                "--validation-src",
                "fgsm",
            ]),
        );
        let manifest = self.run_dir().features().manifest().unwrap();
        let fgsm = std::fs::read_to_string(self.run_dir().fgsm_dir().join(FGSM_SUMMARY)).unwrap();
        let counts = &serde_json::from_str::<serde_json::Value>(&fgsm).unwrap()["counts"];
        eprintln!(
            "test accuracy {:.3}; FGSM counts {counts}",
            manifest.test_accuracy
        );
        assert!(
            manifest.test_accuracy > 0.7,
            "test accuracy {} (chance 1/3)",
            manifest.test_accuracy
        );
        assert_eq!(
            (manifest.sets["test"], manifest.sets["ood_other"]),
            (3 * TEST, OOD)
        );
        if self.uniform {
            // As many images as the test split, not the generated set's 5,000.
            assert_eq!(manifest.sets["ood_uniform"], 3 * TEST);
        }

        // rf-baselines and rf-mahalanobis next to the flows (independent stages).
        let fgsm = self.args(&["--validation-src", "fgsm"]);
        let began = Instant::now();
        let baselines = start(env!("CARGO_BIN_EXE_rf-baselines"), &fgsm);
        let mahalanobis = start(env!("CARGO_BIN_EXE_rf-mahalanobis"), &fgsm);
        let layers = stage(
            env!("CARGO_BIN_EXE_rf-data"),
            &strings(&[
                "layers",
                "--net-type",
                self.net_type,
                "--classifier",
                &classifier,
            ]),
        );
        let layers: Vec<String> = layers.split_whitespace().map(str::to_string).collect();
        for layer in &layers {
            stage(
                env!("CARGO_BIN_EXE_rf-train"),
                &self.args(&["--layer", layer, "--num-iter", self.num_iter]),
            );
        }
        stage(env!("CARGO_BIN_EXE_rf-score"), &fgsm);
        finish(
            mahalanobis,
            env!("CARGO_BIN_EXE_rf-mahalanobis"),
            &fgsm,
            began,
        );
        finish(baselines, env!("CARGO_BIN_EXE_rf-baselines"), &fgsm, began);

        let names = stage(env!("CARGO_BIN_EXE_rf-data"), &strings(&["baselines"]));
        let mut detectors: Vec<&str> = names.split_whitespace().collect();
        detectors.extend(["mahalanobis", "resflow"]);
        assert_eq!(detectors.len(), DetectorKind::ALL.len());
        let outf = self.outf.display().to_string();
        for detector in &detectors {
            for validation in ["ood", "fgsm"] {
                stage(
                    env!("CARGO_BIN_EXE_rf-regress"),
                    &strings(&[
                        "--net-type",
                        self.net_type,
                        "--dataset",
                        NAME,
                        "--outf",
                        &outf,
                        "--detector",
                        detector,
                        "--validation-src",
                        validation,
                    ]),
                );
            }
        }
        self.check_results();
        self.use_the_detector();
        layers
    }

    /// `results.json` holds every detector under both validations for both OOD sets, and
    /// `results.md` compares them, every detector a column.
    fn check_results(&self) {
        let run = self.run_dir();
        let results = read_results(&run.results_path())
            .unwrap()
            .expect("results.json");
        for validation in [Validation::Ood, Validation::Fgsm] {
            for &kind in DetectorKind::ALL {
                for &ood in self.ood_sets() {
                    let record = results
                        .results
                        .iter()
                        .find(|r| r.detector == kind && r.validation == validation && r.ood == ood)
                        .unwrap_or_else(|| panic!("no {kind:?} {validation:?} {ood} result"));
                    for m in record.metrics() {
                        assert!((-1e-12..=1.0 + 1e-12).contains(&m), "{record:?}");
                    }
                }
            }
        }
        let md = std::fs::read_to_string(run.path().join("results.md")).expect("results.md");
        let header = format!(
            "| OOD set | {} |",
            DetectorKind::ALL
                .iter()
                .map(|k| k.label())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        for validation in ["OOD samples", "FGSM adversarial samples"] {
            let title = format!("## Detector comparison (validation on {validation}");
            let start = md
                .find(&title)
                .unwrap_or_else(|| panic!("no `{title}` in results.md:\n{md}"));
            let rest = &md[start + title.len()..];
            let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
            // Each set with its group (the folder given without one is ungrouped).
            let rows = self.ood_sets().iter().map(|o| format!("| {o} ("));
            assert!(
                section.contains(&header) && rows.into_iter().all(|r| section.contains(&r)),
                "`{title}` lacks a column or a row:\n{section}"
            );
        }
        // No warning that the classifier is near chance or the features too few.
        assert!(
            !md.contains("of chance") && !md.contains("whitening rank"),
            "{md}"
        );
    }

    /// The bundle `rf-detect fit` writes.
    fn bundle(&self) -> PathBuf {
        self.run_dir().path().join("bundle")
    }

    /// Three test images and three OOD images.
    fn detector_images(&self) -> Vec<PathBuf> {
        vec![
            self.data.join("test/red/0.png"),
            self.data.join("test/green/1.png"),
            self.data.join("test/blue/2.png"),
            self.ood.join("0.png"),
            self.ood.join("1.png"),
            self.ood.join("2.png"),
        ]
    }

    /// `rf-detect fit` (FGSM-validated, the default) and `rf-detect score` on three test images
    /// and three OOD images.
    fn use_the_detector(&self) {
        let mut fit = strings(&["fit"]);
        fit.extend(self.args(&[]));
        stage(env!("CARGO_BIN_EXE_rf-detect"), &fit);
        let bundle = self.bundle();
        let mut args = strings(&["score", "--bundle", &bundle.display().to_string()]);
        for image in self.detector_images() {
            args.push(image.display().to_string());
        }
        let csv = stage(env!("CARGO_BIN_EXE_rf-detect"), &args);
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 6, "{csv}");
        for row in rows {
            // path,class,probability,score,percentile,verdict,error: no error.
            assert!(row.ends_with(','), "{row}");
        }
    }
}

/// Our ResNet (`rf-classifier train` with its defaults) on the small set, then every stage.
#[test]
fn our_resnet_on_a_small_image_folder_runs_every_stage_with_default_options() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (data, ood) = small_set(dir.path());
    let run = SmallRun {
        net_type: "resnet",
        data,
        ood,
        uniform: true,
        outf: dir.path().join("output"),
        classifier: dir.path().join("resnet_garments.safetensors"),
        num_iter: "20",
    };
    stage(
        env!("CARGO_BIN_EXE_rf-classifier"),
        &strings(&[
            "train",
            "--dataset",
            &format!("{NAME}={}", run.data.display()),
            "--out",
            &run.classifier_arg(),
        ]),
    );
    let layers = run.every_stage();
    assert_eq!(layers, ["0", "1", "2", "3", "4"]);
    eprintln!("total {:.1} s", began.elapsed().as_secs_f64());
}

/// A torchvision ResNet-18 trained on the small set (one epoch in PyTorch, as a user fine-tunes
/// their model) and exported at input size 32 with `scripts/export_torchscript.py --layers
/// layer1,layer4`, then every stage. Two taps instead of the paper's five keep the test short
/// (the pre-processing gradients of rf-mahalanobis and rf-score are one pass per tap and
/// magnitude); `layer4` must be one, the last, as the baselines read the linear head from it.
#[test]
fn exported_resnet18_on_a_small_image_folder_runs_every_stage_with_default_options() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let (data, ood) = small_set(dir.path());
    let (mean, std) = ("0.485,0.456,0.406", "0.229,0.224,0.225");
    let weights = dir.path().join("resnet18_garments.pth");
    let accuracy = run_python(
        include_str!("small_set/train_resnet18.py"),
        &[&data, &weights, Path::new(mean), Path::new(std)],
    );
    let accuracy: f64 = accuracy.trim().parse().unwrap();
    assert!(accuracy > 0.7, "PyTorch's test accuracy {accuracy}");
    let model = dir.path().join("garments.pt");
    let export = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/export_torchscript.py"))
        .args(["--model", "torchvision:resnet18", "--weights"])
        .arg(&weights)
        .args([
            "--class-names",
            "blue,green,red",
            "--input-size",
            "32",
            "--mean",
            mean,
            "--std",
            std,
            "--layers",
            "layer1,layer4",
            "--dataset",
            NAME,
        ])
        .arg(&model)
        .output()
        .unwrap();
    assert!(
        export.status.success(),
        "export_torchscript.py failed:\n{}",
        String::from_utf8_lossy(&export.stderr)
    );
    eprintln!(
        "PyTorch training and export: {:.1} s",
        began.elapsed().as_secs_f64()
    );
    let run = SmallRun {
        net_type: "torchscript",
        data,
        ood,
        uniform: false,
        outf: dir.path().join("output"),
        classifier: model,
        num_iter: "5",
    };
    let layers = run.every_stage();
    assert_eq!(layers, ["0", "1"]);
    // The fitted detector exported with the user's model inside (issue 31).
    crate::export::torchscript_classifier_exports_match(
        &run.bundle(),
        &run.detector_images(),
        dir.path(),
    );
    // rf-prepare measures what PyTorch measured.
    let manifest = run.run_dir().features().manifest().unwrap();
    assert_eq!(manifest.layer_channels, vec![64, 512]);
    assert!(
        (manifest.test_accuracy - accuracy).abs() < 1e-9,
        "{} against PyTorch's {accuracy}",
        manifest.test_accuracy
    );
    eprintln!("total {:.1} s", began.elapsed().as_secs_f64());
}
