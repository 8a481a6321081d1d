//! The table of faults: each [`Case`] breaks a copy of the base run once and runs one or more
//! stages on it; every run must stop (non-zero status, no panic) with a message holding each of
//! its expected parts (the file or flag, and the fix), and leave every file of the run as it was
//! (the files the fault itself changed excepted). One `#[test]` per group of classes, so that the
//! groups run in parallel.
use std::fs::File;
use std::path::Path;
use std::time::Instant;

use super::{
    base, changes, copy_of_base, copy_tree, edit_json, hold_lock, prepare_args, snapshot, stage,
    stage_ok, texts, train_args, truncate, CLASSIFIER, OTHER, OTHER_CLASSIFIER, RUN,
};
use resflow::models::checkpoint::file_sha256;

/// What a fault did to a copy: the paths it changed (relative to the copy, left out of the
/// check that nothing changed) and a lock it holds while the stages run.
struct Broken {
    changed: Vec<String>,
    _lock: Option<File>,
}

impl Broken {
    fn changed(paths: &[&str]) -> Broken {
        Broken {
            changed: paths.iter().map(|p| p.to_string()).collect(),
            _lock: None,
        }
    }
}

type Fault = Box<dyn Fn(&Path) -> Broken + Send + Sync>;

/// One stage run on the broken copy, and the parts its message must hold.
struct Run {
    bin: &'static str,
    args: Vec<String>,
    expect: Vec<String>,
}

/// A fault and the stages run after it.
struct Case {
    class: &'static str,
    name: String,
    fault: Fault,
    runs: Vec<Run>,
}

fn run(bin: &'static str, args: &[&str], expect: &[&str]) -> Run {
    Run {
        bin,
        args: args.iter().map(|s| s.to_string()).collect(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
    }
}

fn case(class: &'static str, name: &str, fault: Fault, runs: Vec<Run>) -> Case {
    Case {
        class,
        name: name.to_string(),
        fault,
        runs,
    }
}

/// `{RUN}/{rel}`.
fn r(rel: &str) -> String {
    format!("{RUN}/{rel}")
}

/// Truncates `path` (relative to the copy) to half its size.
fn truncated(path: String) -> Fault {
    Box::new(move |dir| {
        truncate(&dir.join(&path));
        Broken::changed(&[&path])
    })
}

/// Removes the file or folder `path` (relative to the copy).
fn removed(path: String) -> Fault {
    Box::new(move |dir| {
        let p = dir.join(&path);
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
        Broken::changed(&[&path])
    })
}

/// Moves the run's `flow/layer_1/` to `flow/layer_1.{suffix}`, as `rf-train` leaves it when it is
/// stopped between the renames of a checkpoint swap (`old`) or before its first swap (`partial`).
fn flow_layer_1_left_as(suffix: &'static str) -> Fault {
    Box::new(move |dir| {
        let flow = dir.join(RUN).join("flow");
        std::fs::rename(flow.join("layer_1"), flow.join(format!("layer_1.{suffix}"))).unwrap();
        Broken::changed(&[&r("flow/layer_1")])
    })
}

/// Copies `rel` of the other run over the same file of the run.
fn from_other(rel: &'static str) -> Fault {
    Box::new(move |dir| {
        std::fs::copy(dir.join(OTHER).join(rel), dir.join(RUN).join(rel)).unwrap();
        Broken::changed(&[&r(rel)])
    })
}

/// Copies `from` over `to`, both relative to the run folder.
fn copied_within(from: &'static str, to: &'static str) -> Fault {
    Box::new(move |dir| {
        std::fs::copy(dir.join(RUN).join(from), dir.join(RUN).join(to)).unwrap();
        Broken::changed(&[&r(to)])
    })
}

/// Holds the lock file `lock` (relative to the run folder) while the stages run.
fn locked(lock: &'static str) -> Fault {
    Box::new(move |dir| Broken {
        changed: Vec::new(),
        _lock: Some(hold_lock(&dir.join(RUN).join(lock))),
    })
}

/// Nothing broken (the fault is in the options).
fn intact() -> Fault {
    Box::new(|_| Broken::changed(&[]))
}

/// Edits the JSON file `rel` of the run folder with `edit`.
fn edited(rel: &'static str, edit: fn(&mut serde_json::Value)) -> Fault {
    Box::new(move |dir| {
        edit_json(&dir.join(RUN).join(rel), edit);
        Broken::changed(&[&r(rel)])
    })
}

/// The classifier retrained in place: the other run's weights and sidecar over the run's.
fn classifier_retrained(dir: &Path) -> Broken {
    for ext in ["safetensors", "json"] {
        std::fs::copy(
            dir.join(OTHER_CLASSIFIER).with_extension(ext),
            dir.join(CLASSIFIER).with_extension(ext),
        )
        .unwrap();
    }
    Broken::changed(&["pre_trained"])
}

/// Runs every case, each on its own copy, and panics with every failure found (not only the
/// first).
fn check(cases: Vec<Case>) {
    base();
    let mut failures = Vec::new();
    for case in &cases {
        let copy = copy_of_base();
        let dir = copy.path();
        let broken = (case.fault)(dir);
        let before = snapshot(dir, &broken.changed);
        for run in &case.runs {
            let started = Instant::now();
            let args: Vec<&str> = run.args.iter().map(String::as_str).collect();
            let out = stage(dir, run.bin, &args);
            let (stdout, stderr) = texts(&out);
            let label = format!("[{}] {}: {} {:?}", case.class, case.name, run.bin, run.args);
            eprintln!("{label}: {:.1} s", started.elapsed().as_secs_f64());
            let mut wrong = Vec::new();
            if out.status.success() {
                wrong.push("exit status 0".to_string());
            }
            if out.status.code() == Some(101) || stderr.contains("panicked") {
                wrong.push("panicked".to_string());
            }
            for part in &run.expect {
                if !stderr.contains(part.as_str()) {
                    wrong.push(format!("message without `{part}`"));
                }
            }
            let changed = changes(&before, &snapshot(dir, &broken.changed));
            if !changed.is_empty() {
                wrong.push(format!("artefacts changed: {}", changed.join(", ")));
            }
            if !wrong.is_empty() {
                failures.push(format!(
                    "{label}: {}\n  stderr: {}\n  stdout: {}",
                    wrong.join("; "),
                    stderr.trim().replace('\n', "\n          "),
                    stdout.trim().lines().last().unwrap_or_default()
                ));
            }
        }
    }
    let runs: usize = cases.iter().map(|c| c.runs.len()).sum();
    assert!(
        failures.is_empty(),
        "{} of {runs} fault runs went wrong:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

const REGRESS_MAHALANOBIS: &[&str] = &["--detector", "mahalanobis"];
const REGRESS_RESFLOW: &[&str] = &["--detector", "resflow"];
const REGRESS_MSP: &[&str] = &["--detector", "msp"];

/// Score files from another run, another classifier, with another number of rows; FGSM samples
/// after the classifier was retrained in place; files copied in from another run; a flow
/// retrained after scoring; features rewritten by a second rf-prepare after the flows were
/// trained.
#[test]
fn faults_of_provenance() {
    let cases = vec![
        case(
            "another run",
            "an MSP score file of another run",
            from_other("msp/shapes/eps_0.0.npz"),
            vec![run(
                "rf-regress",
                REGRESS_MSP,
                &["msp/shapes/eps_0.0.npz", "rerun rf-baselines"],
            )],
        ),
        case(
            "another classifier",
            "the MSP score folder of a run with another classifier",
            Box::new(|dir| {
                let folder = dir.join(RUN).join("msp");
                std::fs::remove_dir_all(&folder).unwrap();
                copy_tree(&dir.join(OTHER).join("msp"), &folder);
                Broken::changed(&[&r("msp")])
            }),
            vec![run(
                "rf-regress",
                REGRESS_MSP,
                &[
                    "msp/scores.json",
                    "features/manifest.json",
                    "rerun rf-baselines",
                ],
            )],
        ),
        case(
            "another number of rows",
            "a score file of 60 + 100 rows, its digest recorded in the manifest",
            Box::new(|dir| {
                let name = "shapes/eps_0.0.npz";
                let to = dir.join(RUN).join("msp").join(name);
                std::fs::copy(dir.join(OTHER).join("msp").join(name), &to).unwrap();
                let bytes = std::fs::metadata(&to).unwrap().len();
                let sha = file_sha256(&to).unwrap();
                edit_json(&dir.join(RUN).join("msp/scores.json"), |m| {
                    m["provenance"]["files"][name] =
                        serde_json::json!({"sha256": sha, "bytes": bytes});
                });
                Broken::changed(&[&r("msp")])
            }),
            vec![run(
                "rf-regress",
                REGRESS_MSP,
                &[
                    "msp/shapes/eps_0.0.npz",
                    "60 OOD and 100 test rows",
                    "rerun rf-baselines",
                ],
            )],
        ),
        case(
            "another number of rows",
            "an MSP score file with 10 rows",
            Box::new(|dir| {
                let path = r("msp/shapes/eps_0.0.npz");
                let file = crate::synth::io_file(1, 5, 5, 1, 1.0);
                resflow::store::scores::write_scores(&dir.join(&path), &file).unwrap();
                Broken::changed(&[&path])
            }),
            vec![run(
                "rf-regress",
                REGRESS_MSP,
                &["msp/shapes/eps_0.0.npz", "rerun rf-baselines"],
            )],
        ),
        case(
            "another run",
            "a flow score file of layer 0 copied over layer 1's",
            copied_within(
                "resflow/shapes/layer_0/eps_0.0.npz",
                "resflow/shapes/layer_1/eps_0.0.npz",
            ),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/shapes/layer_1/eps_0.0.npz", "rerun rf-score"],
            )],
        ),
        case(
            "FGSM after retraining",
            "the classifier retrained in place after rf-fgsm and rf-prepare",
            Box::new(classifier_retrained),
            vec![
                run(
                    "rf-prepare",
                    &prepare_args(&[]),
                    &[
                        "fgsm/summary.json",
                        "other classifier weights",
                        "rerun rf-fgsm",
                    ],
                ),
                run(
                    "rf-mahalanobis",
                    &["--validation-src", "fgsm"],
                    &[CLASSIFIER, "rerun rf-prepare"],
                ),
                run("rf-score", &[], &[CLASSIFIER, "rerun rf-prepare"]),
                run(
                    "rf-baselines",
                    &["--detectors", "msp"],
                    &[CLASSIFIER, "rerun rf-prepare"],
                ),
            ],
        ),
        case(
            "copied from another run",
            "layer statistics of another run",
            from_other("features/stats_layer0.safetensors"),
            vec![
                run(
                    "rf-mahalanobis",
                    &[],
                    &["features/stats_layer0.safetensors", "rerun rf-prepare"],
                ),
                run(
                    "rf-train",
                    &train_args("0", &[]),
                    &["features/stats_layer0.safetensors", "rerun rf-prepare"],
                ),
            ],
        ),
        case(
            "copied from another run",
            "train features of another run",
            from_other("features/train_layer0.npy"),
            vec![run(
                "rf-train",
                &train_args("0", &[]),
                &["features/train_layer0.npy", "rerun rf-prepare"],
            )],
        ),
        case(
            "copied from another run",
            "test features of another run (100 rows)",
            from_other("features/test_layer0.npy"),
            vec![run(
                "rf-train",
                &train_args("0", &[]),
                &["features/test_layer0.npy", "rerun rf-prepare"],
            )],
        ),
        case(
            "copied from another run",
            "last-layer train features of another run",
            from_other("features/train_layer4.npy"),
            vec![run(
                "rf-baselines",
                &["--detectors", "knn"],
                &["features/train_layer4.npy", "rerun rf-prepare"],
            )],
        ),
        case(
            "copied from another run",
            "the feature manifest of another run over this run's features",
            from_other("features/manifest.json"),
            vec![
                run(
                    "rf-regress",
                    REGRESS_MAHALANOBIS,
                    &[
                        "mahalanobis/scores.json",
                        "features/manifest.json",
                        "rerun rf-mahalanobis",
                    ],
                ),
                run(
                    "rf-mahalanobis",
                    &[],
                    &["features/stats_layer0.safetensors", "rerun rf-prepare"],
                ),
            ],
        ),
        case(
            "copied from another run",
            "one class's flow copied from layer 1 into layer 0",
            copied_within(
                "flow/layer_1/flow_3.safetensors",
                "flow/layer_0/flow_3.safetensors",
            ),
            vec![run(
                "rf-score",
                &[],
                &["flow/layer_0/flow_3.safetensors", "rf-train --layer 0"],
            )],
        ),
        case(
            "copied from another run",
            "layer 1's flow folder copied over layer 0's",
            Box::new(|dir| {
                let flow = dir.join(RUN).join("flow");
                std::fs::remove_dir_all(flow.join("layer_0")).unwrap();
                copy_tree(&flow.join("layer_1"), &flow.join("layer_0"));
                Broken::changed(&[&r("flow/layer_0")])
            }),
            vec![run(
                "rf-score",
                &[],
                &[
                    "flow/layer_0/provenance.json",
                    "another layer's flow",
                    "rf-train --layer 0",
                ],
            )],
        ),
        case(
            "retrained flow",
            "layer 0's flow retrained (another seed) after rf-score",
            Box::new(|dir| {
                stage_ok(dir, "rf-train", &train_args("0", &["--seed", "5"]));
                Broken::changed(&[&r("flow/layer_0"), &r("history")])
            }),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/scores.json", "flow/layer_0", "rerun rf-score"],
            )],
        ),
        case(
            "retrained flow",
            "layer 1's flow trained on with --resume after rf-score",
            Box::new(|dir| {
                stage_ok(
                    dir,
                    "rf-train",
                    &train_args("1", &["--resume", "--num-iter", "2"]),
                );
                Broken::changed(&[&r("flow/layer_1"), &r("history")])
            }),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/scores.json", "flow/layer_1", "rerun rf-score"],
            )],
        ),
        case(
            "features rewritten",
            "a second rf-prepare (200 train images) after the flows were trained",
            Box::new(|dir| {
                stage_ok(dir, "rf-prepare", &prepare_args(&["--max-train", "200"]));
                Broken::changed(&[&r("features")])
            }),
            vec![
                run(
                    "rf-score",
                    &[],
                    &[
                        "flow/layer_0",
                        "trained on other features",
                        "rf-train --layer 0",
                    ],
                ),
                run(
                    "rf-train",
                    &train_args("0", &["--resume"]),
                    &[
                        "flow/layer_0",
                        "trained on other features",
                        "without --resume",
                    ],
                ),
                run(
                    "rf-regress",
                    REGRESS_MAHALANOBIS,
                    &[
                        "mahalanobis/scores.json",
                        "features/manifest.json",
                        "rerun rf-mahalanobis",
                    ],
                ),
                run(
                    "rf-regress",
                    REGRESS_RESFLOW,
                    &["resflow/scores.json", "rerun rf-score"],
                ),
                run(
                    "rf-regress",
                    REGRESS_MSP,
                    &["msp/scores.json", "rerun rf-baselines"],
                ),
            ],
        ),
    ];
    check(cases);
}

/// Interrupted stages (manifest missing), two writers of one folder, manifests missing a set,
/// and rf-regress with a layer's or an OOD set's folder removed.
#[test]
fn faults_of_interrupted_and_concurrent_stages() {
    let no_features = [
        "features/manifest.json",
        "rf-prepare has not run to its end",
        "run rf-prepare first",
    ];
    let cases = vec![
        case(
            "interrupted",
            "rf-prepare killed before its manifest",
            removed(r("features/manifest.json")),
            vec![
                run("rf-train", &train_args("0", &[]), &no_features),
                run("rf-mahalanobis", &[], &no_features),
                run("rf-score", &[], &no_features),
                run("rf-baselines", &["--detectors", "msp"], &no_features),
            ],
        ),
        case(
            "interrupted",
            "rf-fgsm killed before its summary",
            removed(r("fgsm/summary.json")),
            vec![
                run(
                    "rf-prepare",
                    &prepare_args(&[]),
                    &[
                        "fgsm/summary.json",
                        "rf-fgsm has not run to its end",
                        "run rf-fgsm first",
                    ],
                ),
                run(
                    "rf-mahalanobis",
                    &["--validation-src", "fgsm"],
                    &["fgsm/summary.json", "run rf-fgsm first"],
                ),
            ],
        ),
        case(
            "interrupted",
            "rf-mahalanobis killed before its manifest",
            removed(r("mahalanobis/scores.json")),
            vec![run(
                "rf-regress",
                REGRESS_MAHALANOBIS,
                &["mahalanobis/scores.json", "run rf-mahalanobis first"],
            )],
        ),
        case(
            "interrupted",
            "rf-score killed before its manifest",
            removed(r("resflow/scores.json")),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/scores.json", "run rf-score first"],
            )],
        ),
        case(
            "interrupted",
            "a flow folder without its flow.json",
            removed(r("flow/layer_1/flow.json")),
            vec![run(
                "rf-score",
                &[],
                &["flow/layer_1/flow.json", "rf-train"],
            )],
        ),
        case(
            "interrupted",
            "rf-train killed between the renames of its checkpoint swap",
            flow_layer_1_left_as("old"),
            vec![run(
                "rf-score",
                &[],
                &["flow/layer_1", "rf-train --layer 1 --resume"],
            )],
        ),
        case(
            "interrupted",
            "rf-train killed while it wrote a layer's first checkpoint",
            flow_layer_1_left_as("partial"),
            vec![run(
                "rf-score",
                &[],
                &["flow/layer_1.partial", "rf-train --layer 1`", "remove"],
            )],
        ),
        case(
            "two writers",
            "rf-prepare while another writes the features",
            locked("features.lock"),
            vec![run(
                "rf-prepare",
                &prepare_args(&[]),
                &[
                    "features.lock",
                    "another rf-prepare is writing these features now",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "two writers",
            "rf-fgsm while another writes the samples",
            locked("fgsm.lock"),
            vec![run(
                "rf-fgsm",
                &["--max-test", "200", "--seed", "3"],
                &[
                    "fgsm.lock",
                    "another rf-fgsm is writing these samples now",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "two writers",
            "rf-mahalanobis while another writes its scores",
            locked("mahalanobis.lock"),
            vec![run(
                "rf-mahalanobis",
                &[],
                &[
                    "mahalanobis.lock",
                    "another rf-mahalanobis is writing",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "two writers",
            "rf-score while another writes its scores",
            locked("resflow.lock"),
            vec![run(
                "rf-score",
                &[],
                &[
                    "resflow.lock",
                    "another rf-score is writing",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "two writers",
            "rf-baselines while another writes the KNN scores",
            locked("knn.lock"),
            vec![run(
                "rf-baselines",
                &["--detectors", "msp,knn,vim"],
                &[
                    "knn.lock",
                    "another rf-baselines is writing",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "two writers",
            "rf-train while another trains the layer",
            locked("flow/layer_0.lock"),
            vec![run(
                "rf-train",
                &train_args("0", &[]),
                &[
                    "flow/layer_0.lock",
                    "another rf-train is training this layer now",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "two writers",
            "rf-regress while another writes the results",
            locked("results.lock"),
            vec![run(
                "rf-regress",
                REGRESS_MAHALANOBIS,
                &[
                    "results.lock",
                    "another rf-regress is writing",
                    "wait for it to finish",
                ],
            )],
        ),
        case(
            "manifest missing a set",
            "a feature manifest without the test set",
            edited("features/manifest.json", |m| {
                m["sets"].as_object_mut().unwrap().remove("test");
            }),
            vec![run(
                "rf-mahalanobis",
                &[],
                &["features/manifest.json", "`test`", "rerun rf-prepare"],
            )],
        ),
        case(
            "manifest missing a set",
            "a feature manifest without the train set",
            edited("features/manifest.json", |m| {
                m["sets"].as_object_mut().unwrap().remove("train");
            }),
            vec![
                run(
                    "rf-train",
                    &train_args("0", &[]),
                    &["features/manifest.json", "`train`", "rerun rf-prepare"],
                ),
                run(
                    "rf-baselines",
                    &["--detectors", "knn"],
                    &["features/manifest.json", "`train`", "rerun rf-prepare"],
                ),
            ],
        ),
        case(
            "manifest missing a set",
            "a feature manifest without the OOD set faces",
            edited("features/manifest.json", |m| {
                m["sets"].as_object_mut().unwrap().remove("ood_faces");
            }),
            vec![
                run(
                    "rf-train",
                    &train_args("0", &["--monitor-ood", "faces"]),
                    &["--monitor-ood", "faces", "shapes", "rf-prepare"],
                ),
                run(
                    "rf-regress",
                    REGRESS_MAHALANOBIS,
                    &[
                        "mahalanobis/scores.json",
                        "features/manifest.json",
                        "rerun rf-mahalanobis",
                    ],
                ),
            ],
        ),
        case(
            "manifest missing a set",
            "a score manifest without the OOD set shapes",
            edited("mahalanobis/scores.json", |m| {
                m["sets"].as_array_mut().unwrap().retain(|s| s != "shapes");
            }),
            vec![run(
                "rf-regress",
                &["--detector", "mahalanobis", "--ood", "shapes"],
                &["mahalanobis/shapes", "rerun rf-mahalanobis"],
            )],
        ),
        case(
            "folder removed",
            "a layer's score folder removed",
            removed(r("resflow/shapes/layer_1")),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/shapes/layer_1", "rerun rf-score"],
            )],
        ),
        case(
            "folder removed",
            "an OOD set's Mahalanobis folder removed",
            removed(r("mahalanobis/faces")),
            vec![run(
                "rf-regress",
                REGRESS_MAHALANOBIS,
                &["mahalanobis/faces", "rerun rf-mahalanobis"],
            )],
        ),
        case(
            "folder removed",
            "an OOD set's flow score folder removed",
            removed(r("resflow/faces")),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/faces", "rerun rf-score"],
            )],
        ),
        case(
            "folder removed",
            "an OOD set's MSP folder removed",
            removed(r("msp/faces")),
            vec![run(
                "rf-regress",
                REGRESS_MSP,
                &["msp/faces", "rerun rf-baselines"],
            )],
        ),
        case(
            "folder removed",
            "a trained flow removed after scoring",
            removed(r("flow/layer_1")),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["flow/layer_1", "rf-score"],
            )],
        ),
    ];
    check(cases);
}

/// Truncated artefacts of every format the stages read (safetensors, npy, npz, JSON) and
/// truncated downloads (the IDX `.gz` files of Fashion-MNIST, a CSV `.gz`, images).
#[test]
fn faults_of_truncated_files() {
    let cases = vec![
        case(
            "truncated safetensors",
            "layer statistics",
            truncated(r("features/stats_layer0.safetensors")),
            vec![run(
                "rf-mahalanobis",
                &[],
                &[
                    "features/stats_layer0.safetensors",
                    "truncated",
                    "rerun rf-prepare",
                ],
            )],
        ),
        case(
            "truncated safetensors",
            "a class's flow",
            truncated(r("flow/layer_0/flow_0.safetensors")),
            vec![
                run(
                    "rf-score",
                    &[],
                    &["flow/layer_0/flow_0.safetensors", "rf-train"],
                ),
                run(
                    "rf-train",
                    &train_args("0", &["--resume", "--num-iter", "2"]),
                    &["flow/layer_0/flow_0.safetensors", "rf-train"],
                ),
            ],
        ),
        case(
            "truncated safetensors",
            "the flow's optimizer state",
            truncated(r("flow/layer_0/optimizer.safetensors")),
            vec![run(
                "rf-train",
                &train_args("0", &["--resume", "--num-iter", "2"]),
                &["flow/layer_0/optimizer.safetensors", "rf-train --layer 0"],
            )],
        ),
        case(
            "truncated safetensors",
            "the classifier's weights",
            truncated(CLASSIFIER.to_string()),
            vec![
                run(
                    "rf-mahalanobis",
                    &[],
                    &[CLASSIFIER, "truncated", "rf-classifier train"],
                ),
                run(
                    "rf-prepare",
                    &prepare_args(&[]),
                    &[CLASSIFIER, "rf-classifier train"],
                ),
                run(
                    "rf-fgsm",
                    &["--max-test", "200"],
                    &[CLASSIFIER, "rf-classifier train"],
                ),
            ],
        ),
        case(
            "truncated npy",
            "train features",
            truncated(r("features/train_layer0.npy")),
            vec![run(
                "rf-train",
                &train_args("0", &[]),
                &["features/train_layer0.npy", "truncated", "rerun rf-prepare"],
            )],
        ),
        case(
            "truncated npy",
            "FGSM adversarial samples",
            truncated(r("fgsm/adv.npy")),
            vec![
                run(
                    "rf-prepare",
                    &prepare_args(&[]),
                    &["fgsm/adv.npy", "rerun rf-fgsm"],
                ),
                run(
                    "rf-score",
                    &["--validation-src", "fgsm"],
                    &["fgsm/adv.npy", "rerun rf-fgsm"],
                ),
            ],
        ),
        case(
            "truncated npz",
            "a Mahalanobis score file",
            truncated(r("mahalanobis/shapes/eps_0.0.npz")),
            vec![run(
                "rf-regress",
                REGRESS_MAHALANOBIS,
                &[
                    "mahalanobis/shapes/eps_0.0.npz",
                    "truncated",
                    "rerun rf-mahalanobis",
                ],
            )],
        ),
        case(
            "truncated JSON",
            "the feature manifest",
            truncated(r("features/manifest.json")),
            vec![
                run(
                    "rf-mahalanobis",
                    &[],
                    &["features/manifest.json", "truncated", "rerun rf-prepare"],
                ),
                run(
                    "rf-train",
                    &train_args("0", &[]),
                    &["features/manifest.json", "rerun rf-prepare"],
                ),
            ],
        ),
        case(
            "truncated JSON",
            "the FGSM summary",
            truncated(r("fgsm/summary.json")),
            vec![run(
                "rf-prepare",
                &prepare_args(&[]),
                &["fgsm/summary.json", "truncated", "rerun rf-fgsm"],
            )],
        ),
        case(
            "truncated JSON",
            "a flow's flow.json",
            truncated(r("flow/layer_0/flow.json")),
            vec![
                run(
                    "rf-score",
                    &[],
                    &["flow/layer_0/flow.json", "rf-train --layer 0"],
                ),
                run(
                    "rf-train",
                    &train_args("0", &["--resume", "--num-iter", "2"]),
                    &["flow/layer_0/flow.json", "rf-train --layer 0"],
                ),
            ],
        ),
        case(
            "truncated JSON",
            "a flow's provenance.json",
            truncated(r("flow/layer_0/provenance.json")),
            vec![run(
                "rf-score",
                &[],
                &["flow/layer_0/provenance.json", "truncated", "rf-train"],
            )],
        ),
        case(
            "truncated JSON",
            "a flow's trainer.json",
            truncated(r("flow/layer_0/trainer.json")),
            vec![run(
                "rf-train",
                &train_args("0", &["--resume", "--num-iter", "2"]),
                &["flow/layer_0/trainer.json", "rf-train --layer 0"],
            )],
        ),
        case(
            "truncated JSON",
            "a score manifest",
            truncated(r("resflow/scores.json")),
            vec![run(
                "rf-regress",
                REGRESS_RESFLOW,
                &["resflow/scores.json", "truncated", "rerun rf-score"],
            )],
        ),
        case(
            "truncated JSON",
            "results.json",
            truncated(r("results.json")),
            vec![run(
                "rf-regress",
                REGRESS_MAHALANOBIS,
                &["results.json", "truncated", "rf-regress --detector"],
            )],
        ),
        case(
            "truncated JSON",
            "the classifier's sidecar",
            truncated("pre_trained/resnet_fashion-mnist.json".to_string()),
            vec![
                run(
                    "rf-prepare",
                    &prepare_args(&[]),
                    &[
                        "pre_trained/resnet_fashion-mnist.json",
                        "rf-classifier train",
                    ],
                ),
                run(
                    "rf-score",
                    &[],
                    &[
                        "pre_trained/resnet_fashion-mnist.json",
                        "rf-classifier train",
                    ],
                ),
            ],
        ),
        case(
            "truncated download",
            "Fashion-MNIST train images (.gz)",
            truncated("data/fashion-mnist/train-images-idx3-ubyte.gz".to_string()),
            vec![
                run(
                    "rf-prepare",
                    &prepare_args(&[]),
                    &["train-images-idx3-ubyte.gz", "scripts/fetch_data.sh"],
                ),
                run(
                    "rf-classifier",
                    &["train", "--dataroot", "data", "--epochs", "1"],
                    &["train-images-idx3-ubyte.gz", "scripts/fetch_data.sh"],
                ),
            ],
        ),
        case(
            "truncated download",
            "Fashion-MNIST train labels (.gz)",
            truncated("data/fashion-mnist/train-labels-idx1-ubyte.gz".to_string()),
            vec![run(
                "rf-prepare",
                &prepare_args(&[]),
                &["train-labels-idx1-ubyte.gz", "scripts/fetch_data.sh"],
            )],
        ),
        case(
            "truncated download",
            "Fashion-MNIST test images (uncompressed IDX)",
            truncated("data/fashion-mnist/t10k-images-idx3-ubyte".to_string()),
            vec![
                run(
                    "rf-mahalanobis",
                    &[],
                    &["t10k-images-idx3-ubyte", "scripts/fetch_data.sh"],
                ),
                run(
                    "rf-fgsm",
                    &["--max-test", "200"],
                    &["t10k-images-idx3-ubyte", "scripts/fetch_data.sh"],
                ),
            ],
        ),
        case(
            "truncated download",
            "MNIST (.csv.gz)",
            truncated("data/mnist/mnist_5k.csv.gz".to_string()),
            vec![run(
                "rf-prepare",
                &["--ood", "mnist"],
                &["mnist_5k.csv.gz", "scripts/fetch_data.sh"],
            )],
        ),
        case(
            "truncated image",
            "an image of the image-folder OOD set",
            truncated("faces/image_007.png".to_string()),
            vec![run(
                "rf-prepare",
                &prepare_args(&[]),
                &["faces/image_007.png", "replace"],
            )],
        ),
        case(
            "truncated image",
            "a photo of the registry's photos set",
            truncated("data/photos/p.png".to_string()),
            vec![run(
                "rf-prepare",
                &["--ood", "photos"],
                &["photos/p.png", "scripts/fetch_data.sh"],
            )],
        ),
    ];
    check(cases);
}

/// Options that mean nothing, each refused naming its flag before anything is written.
#[test]
fn faults_of_mistyped_options() {
    let option = |name: &str, bin: &'static str, args: &[&str], expect: &[&str]| {
        case(
            "mistyped option",
            name,
            intact(),
            vec![run(bin, args, expect)],
        )
    };
    let cases = vec![
        option(
            "--sigma -1",
            "rf-fgsm",
            &["--sigma", "-1"],
            &["--sigma", ">= 0"],
        ),
        option(
            "--sigma NaN",
            "rf-fgsm",
            &["--sigma", "NaN"],
            &["--sigma", ">= 0"],
        ),
        option(
            "rf-fgsm --max-test 0",
            "rf-fgsm",
            &["--max-test", "0"],
            &["--max-test", "at least 1"],
        ),
        option(
            "--num-iter 0",
            "rf-train",
            &["--layer", "0", "--num-iter", "0"],
            &["--num-iter", "at least 1"],
        ),
        option(
            "--ood faces=",
            "rf-prepare",
            &["--ood", "faces="],
            &["--ood", "NAME=PATH"],
        ),
        option(
            "--ood naming a missing folder",
            "rf-prepare",
            &["--ood", "shapes=shapes,/no/such/folder"],
            &["--ood", "/no/such/folder", "existing image folder"],
        ),
        option(
            "--ood with one set twice",
            "rf-prepare",
            &["--ood", "faces=faces,faces=faces"],
            &["--ood", "NAME=PATH"],
        ),
        option(
            "--length-hidden 0",
            "rf-train",
            &train_args("0", &["--length-hidden", "0"]),
            &["--length-hidden", "positive"],
        ),
        option(
            "--checkpoint-every 0",
            "rf-train",
            &train_args("0", &["--checkpoint-every", "0"]),
            &["--checkpoint-every", "at least 1"],
        ),
        option(
            "--monitor-every 0",
            "rf-train",
            &train_args("0", &["--monitor-every", "0"]),
            &["--monitor-every", "at least 1"],
        ),
        option(
            "--validation-total 0",
            "rf-train",
            &["--layer", "0", "--validation-total", "0"],
            &["--validation-total", "at least 1"],
        ),
        option(
            "--layer 9",
            "rf-train",
            &train_args("9", &[]),
            &["--layer", "0 to 4"],
        ),
        option(
            "--lr -1",
            "rf-train",
            &train_args("0", &["--lr", "-1"]),
            &["--lr", "positive"],
        ),
        option(
            "--monitor-ood of a set not prepared",
            "rf-train",
            &train_args("0", &["--monitor-ood", "nonesuch"]),
            &["--monitor-ood", "nonesuch", "shapes"],
        ),
        option(
            "--knn-k 0",
            "rf-baselines",
            &["--knn-k", "0"],
            &["--knn-k", "at least 1"],
        ),
        option(
            "--vim-dim 0",
            "rf-baselines",
            &["--vim-dim", "0"],
            &["--vim-dim", "at least 1"],
        ),
        option(
            "--knn-k beyond the train rows, after MSP",
            "rf-baselines",
            &["--detectors", "msp,knn,vim", "--knn-k", "100000"],
            &["--knn-k", "100000"],
        ),
        option(
            "--vim-dim beyond the feature size, after MSP and KNN",
            "rf-baselines",
            &["--detectors", "msp,knn,vim", "--vim-dim", "64"],
            &["--vim-dim", "64"],
        ),
        option(
            "--max-test 0",
            "rf-prepare",
            &prepare_args(&["--max-test", "0"]),
            &["--max-test 0", "at least one"],
        ),
        option(
            "--max-ood 0",
            "rf-prepare",
            &["--ood", "faces=faces", "--max-ood", "0"],
            &["--max-ood 0", "at least one"],
        ),
        option(
            "--batch-size 0",
            "rf-mahalanobis",
            &["--batch-size", "0"],
            &["--batch-size", "1.."],
        ),
        option(
            "rf-regress --ood of a set not scored",
            "rf-regress",
            &["--detector", "mahalanobis", "--ood", "nonesuch"],
            &["nonesuch", "rf-prepare --ood"],
        ),
        option(
            "rf-classifier train --lr -1",
            "rf-classifier",
            &["train", "--dataroot", "data", "--lr", "-1"],
            &["--lr", "positive"],
        ),
        option(
            "rf-classifier train --epochs 0",
            "rf-classifier",
            &["train", "--dataroot", "data", "--epochs", "0"],
            &["--epochs", "positive"],
        ),
    ];
    check(cases);
}
