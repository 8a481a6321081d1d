//! Every binary that reads a manifest, run on a copy of the base run whose manifest misses one
//! of its keys, for each key (the top-level keys; for the feature manifest those of its
//! `provenance` record too): none may panic, and one that stops names the manifest (or, having
//! read everything, stops at its output's lock, held by the test so that a stage that would
//! succeed does not spend its time rewriting the run). Where a reader checks the manifest's
//! digest before it parses it (`rf-regress` the feature manifest, `rf-score` a flow's
//! `flow.json`), the digest is recorded anew, so that the parser itself meets the missing key.
use std::path::Path;

use super::{
    copy_of_base, edit_json, hold_lock, prepare_args, stage, texts, train_args, CLASSIFIER,
    OOD_SETS, RUN,
};
use resflow::models::checkpoint::file_sha256;
use resflow::store::provenance::FileDigest;

/// A binary that reads the manifest: its flags, the lock (relative to the run folder) held
/// while it runs, if any, and what to record anew after the manifest was edited.
struct Reader {
    bin: &'static str,
    args: Vec<&'static str>,
    lock: Option<&'static str>,
    fixup: Option<fn(&Path)>,
}

fn reader(bin: &'static str, args: &[&'static str], lock: Option<&'static str>) -> Reader {
    Reader {
        bin,
        args: args.to_vec(),
        lock,
        fixup: None,
    }
}

/// The feature manifest's digest recorded anew in the Mahalanobis score manifest.
fn rerecord_features(dir: &Path) {
    let run = dir.join(RUN);
    let sha = file_sha256(&run.join("features/manifest.json")).unwrap();
    edit_json(&run.join("mahalanobis/scores.json"), |m| {
        m["provenance"]["inputs"]["features/manifest.json"] = serde_json::json!(sha);
    });
}

/// The digest of layer 0's `flow.json` recorded anew in its `provenance.json`.
fn rerecord_flow(dir: &Path) {
    let flow = dir.join(RUN).join("flow/layer_0");
    let digest = FileDigest::of(&flow.join("flow.json")).unwrap();
    edit_json(&flow.join("provenance.json"), |p| {
        p["files"]["flow.json"] = serde_json::to_value(&digest).unwrap();
    });
}

/// The key paths of the JSON object at `path` (relative to the copy): every top-level key, and
/// `{outer}.{key}` for every key of each object or first array element named in `nested`.
fn key_paths(dir: &Path, path: &str, nested: &[&str]) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(path)).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut keys = Vec::new();
    for (key, inner) in value.as_object().unwrap() {
        keys.push(vec![key.clone()]);
        if nested.contains(&key.as_str()) {
            let object = match inner {
                serde_json::Value::Array(items) => items.first().and_then(|v| v.as_object()),
                other => other.as_object(),
            };
            for inner_key in object.into_iter().flat_map(|o| o.keys()) {
                keys.push(vec![key.clone(), inner_key.clone()]);
            }
        }
    }
    keys
}

/// Removes the key at `key` (a path of keys; an array on the way means its first element).
fn remove_key(value: &mut serde_json::Value, key: &[String]) {
    let mut at = value;
    for k in &key[..key.len() - 1] {
        at = &mut at[k.as_str()];
        if at.is_array() {
            at = &mut at[0];
        }
    }
    at.as_object_mut()
        .unwrap()
        .remove(&key[key.len() - 1])
        .unwrap();
}

/// Runs every reader on a fresh copy whose manifest `path` misses each of its keys in turn.
fn every_key_missing(path: &str, nested: &[&str], readers: &[Reader]) {
    let file_name = Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let keys = key_paths(super::base(), path, nested);
    assert!(keys.len() >= 3, "{path}: {keys:?}");
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    let mut runs = 0;
    for key in &keys {
        for reader in readers {
            let copy = copy_of_base();
            let dir = copy.path();
            edit_json(&dir.join(path), |v| remove_key(v, key));
            if let Some(fixup) = reader.fixup {
                fixup(dir);
            }
            let _lock = reader.lock.map(|l| hold_lock(&dir.join(RUN).join(l)));
            let out = stage(dir, reader.bin, &reader.args);
            runs += 1;
            let (_, stderr) = texts(&out);
            let panicked = out.status.code() == Some(101) || stderr.contains("panicked");
            let named = stderr.contains(&file_name) || stderr.contains(".lock");
            if panicked || (!out.status.success() && !named) {
                failures.push(format!(
                    "{path} without `{}`: {} {:?}: {}\n  {}",
                    key.join("."),
                    reader.bin,
                    reader.args,
                    if panicked {
                        "panicked"
                    } else {
                        "the error does not name the file"
                    },
                    stderr.trim().replace('\n', "\n  ")
                ));
            }
        }
    }
    eprintln!(
        "{path}: {runs} runs without a key in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {runs} runs went wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_reader_of_the_feature_manifest_survives_a_missing_key() {
    every_key_missing(
        &format!("{RUN}/features/manifest.json"),
        &["provenance"],
        &[
            reader("rf-train", &train_args("0", &[]), Some("flow/layer_0.lock")),
            reader("rf-mahalanobis", &[], Some("mahalanobis.lock")),
            reader("rf-score", &[], Some("resflow.lock")),
            reader("rf-baselines", &["--detectors", "msp"], Some("msp.lock")),
            Reader {
                fixup: Some(rerecord_features),
                ..reader("rf-regress", &["--detector", "mahalanobis"], None)
            },
        ],
    );
}

#[test]
fn every_reader_of_the_fgsm_summary_survives_a_missing_key() {
    let fgsm = ["--validation-src", "fgsm"];
    every_key_missing(
        &format!("{RUN}/fgsm/summary.json"),
        &[],
        &[
            reader("rf-prepare", &prepare_args(&[]), Some("features.lock")),
            reader("rf-mahalanobis", &fgsm, Some("mahalanobis.lock")),
            reader("rf-score", &fgsm, Some("resflow.lock")),
            reader(
                "rf-baselines",
                &["--validation-src", "fgsm", "--detectors", "msp"],
                Some("msp.lock"),
            ),
        ],
    );
}

#[test]
fn every_reader_of_a_trained_flow_survives_a_missing_key() {
    let readers = |fixup: Option<fn(&Path)>| {
        [
            Reader {
                fixup,
                ..reader("rf-score", &[], Some("resflow.lock"))
            },
            Reader {
                fixup,
                ..reader(
                    "rf-train",
                    &train_args("0", &["--resume", "--num-iter", "2"]),
                    None,
                )
            },
        ]
    };
    every_key_missing(
        &format!("{RUN}/flow/layer_0/flow.json"),
        &[],
        &readers(Some(rerecord_flow)),
    );
    every_key_missing(
        &format!("{RUN}/flow/layer_0/provenance.json"),
        &[],
        &readers(None),
    );
}

#[test]
fn rf_regress_survives_a_score_manifest_or_results_file_missing_a_key() {
    for detector in ["mahalanobis", "resflow", "msp"] {
        every_key_missing(
            &format!("{RUN}/{detector}/scores.json"),
            &[],
            &[reader("rf-regress", &["--detector", detector], None)],
        );
    }
    every_key_missing(
        &format!("{RUN}/results.json"),
        &[],
        &[reader("rf-regress", &["--detector", "mahalanobis"], None)],
    );
}

#[test]
fn every_reader_of_the_classifier_sidecar_survives_a_missing_key() {
    let sidecar = Path::new(CLASSIFIER)
        .with_extension("json")
        .display()
        .to_string();
    every_key_missing(
        &sidecar,
        &[],
        &[
            reader("rf-prepare", &["--ood", OOD_SETS], Some("features.lock")),
            reader("rf-fgsm", &["--max-test", "200"], Some("fgsm.lock")),
            reader("rf-mahalanobis", &[], Some("mahalanobis.lock")),
            reader("rf-score", &[], Some("resflow.lock")),
            reader("rf-baselines", &["--detectors", "msp"], Some("msp.lock")),
            reader("rf-classifier", &["eval", "--dataroot", "data"], None),
        ],
    );
}
