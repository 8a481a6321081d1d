//! What must succeed after a fault: rerunning an interrupted stage (its manifest missing, the
//! temporary files of its killed writes left behind) removes the leftovers and completes the
//! folder; `rf-regress --allow-partial` writes the sets it can evaluate and names the one left
//! out.
use std::path::Path;

use super::{copy_of_base, prepare_args, snapshot, stage, stage_ok, texts, train_args, RUN};

/// Every temporary file (`.{name}.tmp{pid}`) and partial folder (`*.partial`) under `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if resflow::io::is_temporary_name(&name) || name.ends_with(".partial") {
            found.push(path.display().to_string());
        } else if path.is_dir() {
            found.extend(leftovers(&path));
        }
    }
    found
}

#[test]
fn rerunning_an_interrupted_stage_removes_its_leftovers_and_succeeds() {
    let copy = copy_of_base();
    let dir = copy.path();
    let run = dir.join(RUN);
    // Killed stages: no manifest, temporary files of their last writes.
    let killed = [
        ("fgsm", "summary.json", "adv.npy"),
        ("features", "manifest.json", "test_layer0.npy"),
        ("mahalanobis", "scores.json", "shapes/eps_0.0.npz"),
        ("msp", "scores.json", "faces/eps_0.0.npz"),
    ];
    for (folder, manifest, file) in killed {
        std::fs::remove_file(run.join(folder).join(manifest)).unwrap();
        let file = run.join(folder).join(file);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        std::fs::write(file.with_file_name(format!(".{name}.tmp4242")), b"partial").unwrap();
        std::fs::write(run.join(folder).join(format!(".{manifest}.tmp4242")), b"{").unwrap();
    }
    // rf-train killed while writing a checkpoint, rf-regress while writing its results.
    std::fs::create_dir_all(run.join("flow/layer_0.partial")).unwrap();
    std::fs::write(run.join("flow/layer_0.partial/flow.json"), b"{").unwrap();
    std::fs::write(run.join("history/.layer_0.json.tmp4242"), b"{").unwrap();
    std::fs::write(run.join(".results.json.tmp4242"), b"{").unwrap();
    std::fs::write(run.join(".results.md.tmp4242"), b"#").unwrap();
    assert_eq!(leftovers(dir).len(), 12, "{:?}", leftovers(dir));

    stage_ok(dir, "rf-fgsm", &["--max-test", "200", "--seed", "3"]);
    stage_ok(dir, "rf-prepare", &prepare_args(&[]));
    stage_ok(dir, "rf-mahalanobis", &[]);
    stage_ok(dir, "rf-baselines", &["--detectors", "msp"]);
    stage_ok(
        dir,
        "rf-train",
        &train_args("0", &["--resume", "--num-iter", "2"]),
    );
    stage_ok(dir, "rf-regress", &["--detector", "mahalanobis"]);
    stage_ok(dir, "rf-regress", &["--detector", "msp"]);
    assert_eq!(leftovers(dir), Vec::<String>::new());
    for (folder, manifest, _) in killed {
        assert!(
            run.join(folder).join(manifest).is_file(),
            "{folder}/{manifest}"
        );
    }
}

#[test]
fn allow_partial_writes_the_other_sets_and_names_the_one_left_out() {
    let copy = copy_of_base();
    let dir = copy.path();
    std::fs::remove_dir_all(dir.join(RUN).join("mahalanobis/faces")).unwrap();
    let before = snapshot(dir, &[]);
    let out = stage(
        dir,
        "rf-regress",
        &["--detector", "mahalanobis", "--allow-partial"],
    );
    let (stdout, stderr) = texts(&out);
    assert!(
        out.status.code() != Some(101) && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(
        stderr.contains("left out: fashion-mnist vs faces") && stderr.contains("mahalanobis/faces"),
        "{stderr}"
    );
    assert!(stdout.contains("shapes"), "{stdout}");
    let after = snapshot(dir, &[]);
    // The results were written again (a new file), with the shapes set's Mahalanobis record.
    let results = format!("{RUN}/results.json");
    assert_ne!(
        before[&results].1, after[&results].1,
        "results.json not rewritten"
    );
    let written = resflow::store::results::read_results(&dir.join(&results))
        .unwrap()
        .unwrap();
    assert!(written
        .results
        .iter()
        .any(|r| r.ood == "shapes" && r.detector.name() == "mahalanobis"));
}
