//! Fault injection ("a run folder that cannot lie", `docs/artefacts.md`): a small run is made
//! once per test process through the binaries ([`base`]); each case copies it, breaks the copy
//! (a truncated, missing or foreign file, a held lock, a stale input, a mistyped option), runs a
//! stage on it and asserts that the stage stops with a non-zero status and no panic, that its
//! message names the file or flag and the fix, and that no file of the run changed (a stage that
//! began writing before it found the problem would have emptied its folder).
//!
//! - [`cases`]: the table of faults, one `#[test]` per group of classes;
//! - [`manifest_keys`]: every reader of every manifest on a copy missing each of its keys;
//! - [`recovery`]: what must succeed: a rerun after an interrupted stage, `--allow-partial`.
mod cases;
mod manifest_keys;
mod recovery;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use crate::common::{random_classifier, root_labelled_by_net};
use resflow::models::checkpoint::file_sha256;

/// Test images of the base run (every one labelled as the classifier predicts it, so that
/// rf-fgsm keeps samples).
const TEST_IMAGES: usize = 200;
/// The OOD sets of the base run: two image folders (a registry set such as `uniform` would be
/// generated, 5,000 images, by every stage that reads it: seconds per run in a debug build).
pub const OOD_SETS: &str = "shapes=shapes,faces=faces";
/// The base run's folder, relative to the base (every stage runs in the base or a copy of it,
/// with relative paths, so that a copy is a run of its own).
pub const RUN: &str = "output/resnet_fashion-mnist";
/// A second run (another classifier, other row counts) whose files are copied into the first.
pub const OTHER: &str = "other/output/resnet_fashion-mnist";
/// The classifier, relative to the base (the default path of `--net-type resnet --dataset
/// fashion-mnist`).
pub const CLASSIFIER: &str = "pre_trained/resnet_fashion-mnist.safetensors";
/// The classifier of the other run.
pub const OTHER_CLASSIFIER: &str = "other/pre_trained/resnet_fashion-mnist.safetensors";

/// The path of binary `name` (e.g. `rf-score`).
pub fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_rf-regress")).with_file_name(name)
}

/// The flags every run of `name` gets in a run folder unless its arguments give them: the data
/// and output folders (relative to the working folder) and a batch size, or for `rf-regress`
/// the output folder, no plots and no bootstrap. `rf-classifier` and `rf-data` take
/// subcommands first and get nothing.
fn default_args(name: &str) -> &'static [(&'static str, Option<&'static str>)] {
    match name {
        "rf-regress" => &[
            ("--outf", Some("output")),
            ("--no-plots", None),
            ("--bootstrap", Some("0")),
        ],
        "rf-classifier" | "rf-data" => &[],
        _ => &[
            ("--dataroot", Some("data")),
            ("--outf", Some("output")),
            ("--batch-size", Some("100")),
        ],
    }
}

/// Runs binary `name` in `cwd` with `args`, after the [`default_args`] they do not give.
pub fn stage(cwd: &Path, name: &str, args: &[&str]) -> Output {
    let mut all: Vec<&str> = Vec::new();
    for (flag, value) in default_args(name) {
        if !args.contains(flag) {
            all.push(flag);
            all.extend(value);
        }
    }
    all.extend_from_slice(args);
    Command::new(bin(name))
        .args(&all)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

/// Runs a stage that must succeed; panics with its output otherwise.
pub fn stage_ok(cwd: &Path, name: &str, args: &[&str]) -> String {
    let out = stage(cwd, name, args);
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.success(),
        "{name} {args:?} failed in {}:\n{stdout}\n{stderr}",
        cwd.display()
    );
    stdout
}

/// Standard output and error as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The base run, made once per test process under the target's temporary folder:
///
/// - `data/`: Fashion-MNIST with 30 train images per class and [`TEST_IMAGES`] test images
///   labelled by the classifier, plus MNIST, digits and photos files;
/// - `faces/` (50 PNG images) and `shapes/` (80), image-folder OOD sets;
/// - [`CLASSIFIER`]: a random width-4 ResNet (seed 12), and [`OTHER_CLASSIFIER`] (seed 4);
/// - [`RUN`]: rf-fgsm, rf-prepare ([`OOD_SETS`], FGSM sets), rf-mahalanobis,
///   rf-baselines (MSP, KNN, ViM), rf-train of layers 0 and 1 (one iteration each), rf-score,
///   rf-regress of Mahalanobis, the residual flow and MSP;
/// - [`OTHER`]: rf-prepare (100 test and 60 `shapes` rows) and rf-baselines (MSP) with the
///   other classifier.
pub fn base() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let started = std::time::Instant::now();
        let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
        // The base runs of earlier test processes that have ended go.
        for entry in std::fs::read_dir(tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("faults_") {
                if !Path::new("/proc").join(pid).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("faults_{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("pre_trained")).unwrap();
        let (root, weights) = root_labelled_by_net(&dir, TEST_IMAGES);
        assert_eq!(root, dir.join("data"));
        std::fs::rename(&weights, dir.join(CLASSIFIER)).unwrap();
        std::fs::rename(
            weights.with_extension("json"),
            dir.join(CLASSIFIER).with_extension("json"),
        )
        .unwrap();
        image_folder(&dir.join("faces"), 50, 24, 20);
        image_folder(&dir.join("shapes"), 80, 30, 30);
        random_classifier(&dir.join(OTHER_CLASSIFIER), &root, 10, 4);

        stage_ok(&dir, "rf-fgsm", &["--max-test", "200", "--seed", "3"]);
        stage_ok(&dir, "rf-prepare", &prepare_args(&[]));
        stage_ok(&dir, "rf-mahalanobis", &[]);
        stage_ok(&dir, "rf-baselines", &["--detectors", "msp,knn,vim"]);
        for layer in ["0", "1"] {
            stage_ok(&dir, "rf-train", &train_args(layer, &[]));
        }
        stage_ok(&dir, "rf-score", &[]);
        for detector in ["mahalanobis", "resflow", "msp"] {
            stage_ok(&dir, "rf-regress", &["--detector", detector]);
        }

        let other = [
            "--outf",
            "other/output",
            "--classifier",
            OTHER_CLASSIFIER,
            "--ood",
            "shapes=shapes",
            "--max-ood",
            "60",
            "--max-test",
            "100",
        ];
        stage_ok(&dir, "rf-prepare", &other);
        stage_ok(
            &dir,
            "rf-baselines",
            &[other[0], other[1], "--detectors", "msp"],
        );
        eprintln!(
            "faults: base run made in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        dir
    })
}

/// rf-prepare's flags of the base run ([`OOD_SETS`], FGSM sets), then `extra`.
pub fn prepare_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--ood", OOD_SETS, "--validation-src", "fgsm"];
    args.extend_from_slice(extra);
    args
}

/// Writes `n` PNG images of `width` x `height` pixels, each another pattern, into `dir`.
fn image_folder(dir: &Path, n: usize, width: u32, height: u32) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n as u32 {
        image::RgbImage::from_fn(width, height, |x, y| {
            let v = (x * (7 + i % 5) + y * 11 + i * 29) % 256;
            image::Rgb([v as u8, (v * 3 % 256) as u8, (i * 5 % 256) as u8])
        })
        .save(dir.join(format!("image_{i:03}.png")))
        .unwrap();
    }
}

/// rf-train's flags for a quick training of `layer` (one iteration unless `extra` gives
/// `--num-iter`, 100 validation rows), then `extra`.
pub fn train_args<'a>(layer: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--layer", layer, "--validation-total", "100"];
    if !extra.contains(&"--num-iter") {
        args.extend_from_slice(&["--num-iter", "1"]);
    }
    args.extend_from_slice(extra);
    args
}

/// A fresh copy of the base run in a temporary folder.
pub fn copy_of_base() -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix("fault_case")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    copy_tree(base(), tmp.path());
    tmp
}

/// Copies the folder `from` into `to` (created), recursively.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file of the run and of the classifiers (lock files excluded), relative to `dir`, with
/// its SHA-256 and inode (a file rewritten through a rename has another inode even when its
/// bytes are the same). Paths starting with one of `except` are left out.
pub fn snapshot(dir: &Path, except: &[String]) -> BTreeMap<String, (String, u64)> {
    fn walk(dir: &Path, base: &Path, except: &[String], out: &mut BTreeMap<String, (String, u64)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if except.iter().any(|e| rel.starts_with(e.as_str())) || rel.ends_with(".lock") {
                continue;
            }
            if path.is_dir() {
                walk(&path, base, except, out);
            } else {
                let ino = std::fs::metadata(&path).unwrap().ino();
                out.insert(rel, (file_sha256(&path).unwrap(), ino));
            }
        }
    }
    let mut out = BTreeMap::new();
    for top in ["output", "pre_trained"] {
        walk(&dir.join(top), dir, except, &mut out);
    }
    out
}

/// What differs between two snapshots, one line per file.
pub fn changes(
    before: &BTreeMap<String, (String, u64)>,
    after: &BTreeMap<String, (String, u64)>,
) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, was) in before {
        match after.get(name) {
            None => lines.push(format!("{name} removed")),
            Some(now) if now.0 != was.0 => lines.push(format!("{name} rewritten")),
            Some(now) if now.1 != was.1 => lines.push(format!("{name} replaced (same bytes)")),
            Some(_) => {}
        }
    }
    for name in after.keys().filter(|n| !before.contains_key(*n)) {
        lines.push(format!("{name} added"));
    }
    lines
}

/// Truncates the file at `path` to half its size (a cut download or an interrupted copy).
pub fn truncate(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::write(path, &bytes[..bytes.len() / 2]).unwrap();
}

/// Holds the exclusive lock on the lock file `path` (as a running stage does) until dropped.
pub fn hold_lock(path: &Path) -> File {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .unwrap();
    file.lock().unwrap();
    file
}

/// Edits the JSON file at `path` with `edit`.
pub fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut value);
    std::fs::write(path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}
