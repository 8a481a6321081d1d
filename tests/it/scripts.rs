//! The shell tooling of the benchmark sweeps: `scripts/benchmark.sh` (dry runs, GPU round-robin,
//! resuming from markers, the missing-classifier error, a full run with stand-in binaries),
//! `scripts/slurm/submit.sh` (generated job scripts and their dependencies) and
//! `scripts/benchmark_table.py` (the final table). No GPU and no real binaries are needed.
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `bash script args...` in `cwd` with extra environment variables.
fn bash(script: &str, args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join(script)).args(args).current_dir(cwd);
    // The scripts ask rf-data for the networks' layers.
    cmd.env("RF_DATA", env!("CARGO_BIN_EXE_rf-data"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("running bash")
}

fn stdout_ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "failed ({:?}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The Python that runs the table script: the project's venv when set up, else python3.
fn python() -> String {
    let home = std::env::var("RESFLOW_HOME").unwrap_or_else(|_| {
        format!(
            "{}/.cache/resflow",
            std::env::var("HOME").unwrap_or_default()
        )
    });
    let venv = format!("{home}/venv/bin/python");
    if Path::new(&venv).exists() {
        venv
    } else {
        "python3".to_string()
    }
}

/// A temp folder with stand-in classifier checkpoints for the (net, dataset) pairs given.
fn workdir(pairs: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("pre_trained")).unwrap();
    for (net, ds) in pairs {
        fs::write(
            dir.path()
                .join("pre_trained")
                .join(format!("{net}_{ds}.safetensors")),
            b"",
        )
        .unwrap();
    }
    dir
}

/// The command lines of a dry run: (where, binary name, arguments).
fn commands(stdout: &str) -> Vec<(String, String, Vec<String>)> {
    stdout
        .lines()
        .filter(|l| l.starts_with('['))
        .map(|l| {
            let (tag, rest) = l.split_once("] ").unwrap();
            let mut words = rest.split_whitespace().map(str::to_string);
            let bin = words.next().unwrap();
            let mut args: Vec<String> = words.collect();
            // The table step runs `python script.py`: name it by the script.
            let name = if bin.ends_with("python") || bin.ends_with("python3") {
                args.remove(0).rsplit('/').next().unwrap().to_string()
            } else {
                bin.rsplit('/').next().unwrap().to_string()
            };
            (tag[1..].to_string(), name, args)
        })
        .collect()
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].as_str())
}

const RESNET_CIFAR10: &[&str] = &[
    "rf-fgsm",
    "rf-prepare",
    "rf-mahalanobis",
    "rf-train",
    "rf-train",
    "rf-train",
    "rf-train",
    "rf-train",
    "rf-score",
    "rf-regress",
    "rf-regress",
    "rf-regress",
    "rf-regress",
    "benchmark_table.py",
];

fn dry_run(dir: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "--nets",
        "resnet",
        "--datasets",
        "cifar10",
        "--gpus",
        "0,1",
        "--dry-run",
        "--outf",
        "out",
        "--bin",
        "/nonexistent/bin",
    ];
    args.extend_from_slice(extra);
    stdout_ok(&bash("scripts/benchmark.sh", &args, dir, &[]))
}

#[test]
fn benchmark_dry_run_lists_the_grid_in_order() {
    let dir = workdir(&[("resnet", "cifar10")]);
    let cmds = commands(&dry_run(dir.path(), &[]));
    let names: Vec<&str> = cmds.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(names, RESNET_CIFAR10);
    for (tag, name, args) in &cmds {
        if name.starts_with("rf-") && name != "rf-regress" {
            assert_eq!(flag(args, "--net-type"), Some("resnet"), "{name}");
            assert_eq!(flag(args, "--dataset"), Some("cifar10"), "{name}");
            assert_eq!(flag(args, "--outf"), Some("out"), "{name}");
        }
        match name.as_str() {
            "rf-fgsm" | "rf-prepare" => {
                assert_eq!(tag, "gpu 0");
                assert_eq!(
                    flag(args, "--classifier"),
                    Some("pre_trained/resnet_cifar10.safetensors")
                );
            }
            "rf-train" => {
                // Round-robin: layer L on GPU L mod 2.
                let layer: usize = flag(args, "--layer").unwrap().parse().unwrap();
                let gpu = (layer % 2).to_string();
                assert_eq!(tag, &format!("gpu {gpu}"));
                assert_eq!(flag(args, "--gpu"), Some(gpu.as_str()));
                assert_eq!(flag(args, "--num-iter"), Some("2000"));
                assert!(args.iter().any(|a| a == "--resume"));
                // Two jobs at a time share the cores.
                let threads = (cores() / 2).max(1).to_string();
                assert_eq!(flag(args, "--threads"), Some(threads.as_str()));
            }
            "rf-regress" => assert_eq!(tag, "cpu"),
            _ => {}
        }
        if matches!(name.as_str(), "rf-prepare" | "rf-mahalanobis" | "rf-score") {
            assert_eq!(flag(args, "--validation-src"), Some("fgsm"), "{name}");
        }
    }
    let layers: Vec<&str> = cmds
        .iter()
        .filter(|c| c.1 == "rf-train")
        .map(|c| flag(&c.2, "--layer").unwrap())
        .collect();
    assert_eq!(layers, ["0", "1", "2", "3", "4"]);
    let regress: Vec<(&str, &str)> = cmds
        .iter()
        .filter(|c| c.1 == "rf-regress")
        .map(|c| {
            (
                flag(&c.2, "--detector").unwrap(),
                flag(&c.2, "--validation-src").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        regress,
        [
            ("mahalanobis", "ood"),
            ("resflow", "ood"),
            ("mahalanobis", "fgsm"),
            ("resflow", "fgsm")
        ]
    );

    // DenseNet has 4 layers; --validation io drops rf-fgsm and the FGSM flags; 3 GPUs.
    let dir = workdir(&[("densenet", "svhn")]);
    let out = stdout_ok(&bash(
        "scripts/benchmark.sh",
        &[
            "--nets",
            "densenet",
            "--datasets",
            "svhn",
            "--gpus",
            "2,5,7",
            "--validation",
            "io",
            "--num-iter",
            "30",
            "--dry-run",
        ],
        dir.path(),
        &[],
    ));
    let cmds = commands(&out);
    assert!(!cmds.iter().any(|c| c.1 == "rf-fgsm"));
    assert!(!cmds
        .iter()
        .any(|c| flag(&c.2, "--validation-src") == Some("fgsm")));
    let train: Vec<(String, String)> = cmds
        .iter()
        .filter(|c| c.1 == "rf-train")
        .map(|c| (c.0.clone(), flag(&c.2, "--layer").unwrap().to_string()))
        .collect();
    assert_eq!(
        train,
        [
            ("gpu 2".into(), "0".into()),
            ("gpu 5".into(), "1".into()),
            ("gpu 7".into(), "2".into()),
            ("gpu 2".into(), "3".into())
        ]
    );
    assert_eq!(cmds.iter().filter(|c| c.1 == "rf-regress").count(), 2);

    // --jobs 3 on one GPU (or the CPU): three lanes, a third of the cores each.
    let dir = workdir(&[("resnet", "cifar10")]);
    let cmds = commands(&dry_run(dir.path(), &["--gpus", "0", "--jobs", "3"]));
    let threads = (cores() / 3).max(1).to_string();
    let train: Vec<(&str, &str, &str)> = cmds
        .iter()
        .filter(|c| c.1 == "rf-train")
        .map(|c| {
            (
                c.0.as_str(),
                flag(&c.2, "--layer").unwrap(),
                flag(&c.2, "--threads").unwrap(),
            )
        })
        .collect();
    let expected: Vec<(&str, &str, &str)> = ["0", "1", "2", "3", "4"]
        .into_iter()
        .map(|l| ("gpu 0", l, threads.as_str()))
        .collect();
    assert_eq!(train, expected);
    let out = bash(
        "scripts/benchmark.sh",
        &["--jobs", "0", "--dry-run"],
        dir.path(),
        &[],
    );
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--jobs: '0'"),
        "{out:?}"
    );
}

/// The CPU cores as benchmark.sh counts them (`nproc`).
fn cores() -> usize {
    let out = Command::new("nproc").output().expect("nproc");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn benchmark_skips_finished_steps() {
    let dir = workdir(&[("resnet", "cifar10")]);
    // Mark prepare, mahalanobis and layers 0, 3 as done, by hand, as a finished run leaves them.
    let bench = dir.path().join("out/resnet_cifar10/.bench");
    fs::create_dir_all(&bench).unwrap();
    let common = "--net-type resnet --dataset cifar10 --dataroot data";
    let cls = "--classifier pre_trained/resnet_cifar10.safetensors";
    fs::write(bench.join("fgsm.done"), format!("rf-fgsm {common} {cls}\n")).unwrap();
    fs::write(
        bench.join("prepare.done"),
        format!("rf-prepare {common} {cls} --validation-src fgsm\n"),
    )
    .unwrap();
    fs::write(
        bench.join("mahalanobis.done"),
        format!("rf-mahalanobis {common} --validation-src fgsm\n"),
    )
    .unwrap();
    for l in [0, 3] {
        fs::write(
            bench.join(format!("train_layer{l}.done")),
            format!("rf-train {common} --layer {l} --num-iter 2000 --resume\n"),
        )
        .unwrap();
    }
    fs::write(
        bench.join("regress_mahalanobis_ood.done"),
        "rf-regress --detector mahalanobis --net-type resnet --dataset cifar10 --validation-src ood\n",
    )
    .unwrap();
    let out = dry_run(dir.path(), &[]);
    let cmds = commands(&out);
    let names: Vec<&str> = cmds.iter().map(|c| c.1.as_str()).collect();
    assert_eq!(
        names,
        [
            "rf-train",
            "rf-train",
            "rf-train",
            "rf-score",
            "rf-regress",
            "rf-regress",
            "rf-regress",
            "benchmark_table.py"
        ],
        "{out}"
    );
    let layers: Vec<&str> = cmds
        .iter()
        .filter(|c| c.1 == "rf-train")
        .map(|c| flag(&c.2, "--layer").unwrap())
        .collect();
    assert_eq!(layers, ["1", "2", "4"]);
    for step in [
        "fgsm",
        "prepare",
        "mahalanobis",
        "train_layer0",
        "train_layer3",
    ] {
        assert!(
            out.contains(&format!("# skip resnet_cifar10/{step} ")),
            "{step}: {out}"
        );
    }
    // A marker for other settings does not count: a new --num-iter retrains every layer.
    let names: Vec<String> = commands(&dry_run(dir.path(), &["--num-iter", "10"]))
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(names.iter().filter(|n| *n == "rf-train").count(), 5);
    // --force redoes everything.
    let names: Vec<String> = commands(&dry_run(dir.path(), &["--force"]))
        .into_iter()
        .map(|c| c.1)
        .collect();
    assert_eq!(names, RESNET_CIFAR10);
}

/// Stand-in binaries that log their arguments (and `fail_on`, if given, fails).
fn fake_bin(dir: &Path, fail_on: Option<&str>) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    for name in [
        "rf-fgsm",
        "rf-prepare",
        "rf-mahalanobis",
        "rf-train",
        "rf-score",
        "rf-regress",
    ] {
        let fail = if fail_on == Some(name) { "exit 3" } else { "" };
        let script = format!(
            "#!/usr/bin/env bash\nif [ \"$1\" = --help ]; then echo \"  --validation-src <V>\"; exit 0; fi\necho \"{name} $*\" >>\"{}\"\necho fake {name}\n{fail}\n",
            dir.join("calls.log").display()
        );
        let path = bin.join(name);
        fs::write(&path, script).unwrap();
        Command::new("chmod").arg("+x").arg(&path).status().unwrap();
    }
    bin
}

#[test]
fn benchmark_runs_resumes_and_stops_on_failure() {
    let dir = workdir(&[("resnet", "cifar10")]);
    let bin = fake_bin(dir.path(), None);
    let args = [
        "--nets",
        "resnet",
        "--datasets",
        "cifar10",
        "--gpus",
        "0,1",
        "--outf",
        "out",
        "--bin",
        bin.to_str().unwrap(),
    ];
    let env = [("RESFLOW_HOME", "/nonexistent")];
    stdout_ok(&bash("scripts/benchmark.sh", &args, dir.path(), &env));
    let calls = fs::read_to_string(dir.path().join("calls.log")).unwrap();
    let lines: Vec<&str> = calls.lines().collect();
    assert_eq!(lines.len(), 13, "{calls}");
    assert!(lines[0].starts_with("rf-fgsm"));
    assert!(lines[1].starts_with("rf-prepare"));
    assert!(lines[2].starts_with("rf-mahalanobis"));
    for l in &lines[3..8] {
        let args: Vec<String> = l.split_whitespace().map(str::to_string).collect();
        let layer: usize = flag(&args, "--layer").unwrap().parse().unwrap();
        assert_eq!(flag(&args, "--gpu"), Some((layer % 2).to_string().as_str()));
    }
    assert!(lines[8].starts_with("rf-score"));
    let run = dir.path().join("out/resnet_cifar10");
    assert!(run.join("logs/train_layer4.log").exists());
    assert!(dir.path().join("out/benchmark.md").exists());
    // Everything is done: a dry run lists only the table, a real rerun calls nothing.
    let cmds = commands(&dry_run(dir.path(), &[]));
    assert_eq!(cmds.len(), 1, "{cmds:?}");
    stdout_ok(&bash("scripts/benchmark.sh", &args, dir.path(), &env));
    assert_eq!(
        fs::read_to_string(dir.path().join("calls.log")).unwrap(),
        calls
    );
    // --force retrains the flows from scratch: their old checkpoints are removed first.
    let stale = run.join("flow/layer_0/flow.json");
    fs::create_dir_all(stale.parent().unwrap()).unwrap();
    fs::write(&stale, "{}").unwrap();
    let mut forced = args.to_vec();
    forced.push("--force");
    stdout_ok(&bash("scripts/benchmark.sh", &forced, dir.path(), &env));
    assert!(!stale.exists());

    // A failing training stops the sweep before scoring, and leaves no marker.
    let dir = workdir(&[("resnet", "cifar10")]);
    let bin = fake_bin(dir.path(), Some("rf-train"));
    let mut args = args.to_vec();
    let b = bin.to_str().unwrap().to_string();
    *args.last_mut().unwrap() = &b;
    let out = bash("scripts/benchmark.sh", &args, dir.path(), &env);
    assert!(!out.status.success());
    let calls = fs::read_to_string(dir.path().join("calls.log")).unwrap();
    assert!(!calls.contains("rf-score"), "{calls}");
    assert!(!dir
        .path()
        .join("out/resnet_cifar10/.bench/train_layer0.done")
        .exists());
    assert!(String::from_utf8_lossy(&out.stderr).contains("train_layer"));
    // The failed layer's checkpoint is kept for the next attempt to resume.
    let partial = dir.path().join("out/resnet_cifar10/flow/layer_0/flow.json");
    fs::create_dir_all(partial.parent().unwrap()).unwrap();
    fs::write(&partial, "{}").unwrap();
    let out = bash("scripts/benchmark.sh", &args, dir.path(), &env);
    assert!(!out.status.success());
    assert!(partial.exists());
}

#[test]
fn benchmark_missing_classifier_is_a_clear_error() {
    let dir = workdir(&[("resnet", "cifar10")]);
    let out = bash(
        "scripts/benchmark.sh",
        &[
            "--nets",
            "resnet,densenet",
            "--datasets",
            "cifar10",
            "--dry-run",
        ],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing may run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("missing classifier checkpoint pre_trained/densenet_cifar10.safetensors"),
        "{err}"
    );
    assert!(!err.contains("resnet_cifar10.safetensors"), "{err}");
    assert!(
        err.contains("scripts/convert_weights.py classifier --net-type densenet --dataset cifar10")
    );
    assert!(err.contains("rf-classifier train --net-type densenet --dataset cifar10"));
}

#[test]
fn slurm_dry_run_generates_the_array_and_dependencies() {
    let pairs = [
        ("resnet", "cifar10"),
        ("resnet", "svhn"),
        ("densenet", "cifar10"),
        ("densenet", "svhn"),
    ];
    let dir = workdir(&pairs);
    let out = stdout_ok(&bash(
        "scripts/slurm/submit.sh",
        &[
            "--nets",
            "resnet,densenet",
            "--datasets",
            "cifar10,svhn",
            "--num-iter",
            "77",
            "--partition",
            "gpu-long",
            "--account",
            "proj42",
            "--dry-run",
        ],
        dir.path(),
        &[],
    ));
    let sbatch: Vec<&str> = out.lines().filter(|l| l.starts_with("sbatch ")).collect();
    // 4 prepare jobs, 1 array, 4 scoring jobs, 1 table job.
    assert_eq!(sbatch.len(), 10, "{out}");
    for (i, l) in sbatch[..4].iter().enumerate() {
        assert!(!l.contains("--dependency"), "{l}");
        let (net, ds) = pairs_in_order()[i];
        assert!(l.ends_with(&format!("prepare_{net}_{ds}.sh ")), "{l}");
    }
    assert!(sbatch[4].contains("--dependency=afterok:1001:1002:1003:1004 "));
    assert!(sbatch[4].contains("train_array.sh"));
    for l in &sbatch[5..9] {
        assert!(l.contains("--dependency=afterok:1005 "), "{l}");
        assert!(l.contains("/score_"), "{l}");
    }
    assert!(sbatch[9].contains("--dependency=afterok:1006:1007:1008:1009 "));
    assert!(sbatch[9].contains("table.sh"));

    let jobs = dir.path().join("output/slurm");
    let array = fs::read_to_string(jobs.join("train_array.sh")).unwrap();
    // 2 x (5 + 4) layers: 18 tasks.
    assert!(array.contains("#SBATCH --array=0-17\n"), "{array}");
    assert!(array.contains("#SBATCH --partition=gpu-long\n"));
    assert!(array.contains("#SBATCH --account=proj42\n"));
    assert!(array.contains("#SBATCH --gres=gpu:1\n"));
    let mut expected = Vec::new();
    for (net, ds) in pairs_in_order() {
        let n = if net == "resnet" { 5 } else { 4 };
        for l in 0..n {
            expected.push((net, ds, l));
        }
    }
    assert_eq!(expected.len(), 18);
    for (i, (net, ds, l)) in expected.iter().enumerate() {
        let id = i.to_string();
        let cmd = stdout_ok(&bash(
            jobs.join("train_array.sh").to_str().unwrap(),
            &[],
            dir.path(),
            &[("RF_DRY_RUN", "1"), ("SLURM_ARRAY_TASK_ID", &id)],
        ));
        let args: Vec<String> = cmd.split_whitespace().map(str::to_string).collect();
        assert!(args[0].ends_with("/rf-train"), "{cmd}");
        assert_eq!(flag(&args, "--net-type"), Some(*net), "task {i}");
        assert_eq!(flag(&args, "--dataset"), Some(*ds), "task {i}");
        assert_eq!(
            flag(&args, "--layer"),
            Some(l.to_string().as_str()),
            "task {i}"
        );
        assert_eq!(flag(&args, "--num-iter"), Some("77"));
        assert_eq!(flag(&args, "--gpu"), Some("0"));
        assert!(args.iter().any(|a| a == "--resume"));
    }
    let prep = stdout_ok(&bash(
        jobs.join("prepare_densenet_svhn.sh").to_str().unwrap(),
        &[],
        dir.path(),
        &[("RF_DRY_RUN", "1")],
    ));
    let lines: Vec<&str> = prep.lines().collect();
    assert_eq!(lines.len(), 2, "{prep}");
    assert!(lines[0].contains("/rf-fgsm --net-type densenet --dataset svhn"));
    assert!(lines[1].contains("/rf-prepare --net-type densenet --dataset svhn"));
    assert!(lines[1].ends_with("--validation-src fgsm"));
    let score = stdout_ok(&bash(
        jobs.join("score_resnet_svhn.sh").to_str().unwrap(),
        &[],
        dir.path(),
        &[("RF_DRY_RUN", "1")],
    ));
    let bins: Vec<&str> = score
        .lines()
        .map(|l| {
            l.split_whitespace()
                .next()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
        })
        .collect();
    assert_eq!(
        bins,
        [
            "rf-mahalanobis",
            "rf-score",
            "rf-regress",
            "rf-regress",
            "rf-regress",
            "rf-regress"
        ]
    );
}

fn pairs_in_order() -> [(&'static str, &'static str); 4] {
    [
        ("resnet", "cifar10"),
        ("resnet", "svhn"),
        ("densenet", "cifar10"),
        ("densenet", "svhn"),
    ]
}

#[test]
fn slurm_missing_classifier_is_an_error() {
    let dir = workdir(&[]);
    let out = bash(
        "scripts/slurm/submit.sh",
        &["--nets", "resnet", "--datasets", "cifar10", "--dry-run"],
        dir.path(),
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("resnet_cifar10.safetensors"));
}

fn record(detector: &str, validation: &str, ood: &str, m: [f64; 3]) -> String {
    format!(
        r#"{{"detector":"{detector}","validation":"{validation}","ood":"{ood}","eps":0.0,"c":1.0,"coef":[1.0],"intercept":0.0,"tnr_at_tpr95":{},"auroc":{},"dtacc":{},"auin":0.5,"auout":0.5,"trials":[],"counts":{{}}}}"#,
        m[0], m[1], m[2]
    )
}

#[test]
fn results_table_from_synthetic_results() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("out/resnet_cifar10");
    fs::create_dir_all(&run).unwrap();
    let records = [
        record("mahalanobis", "ood", "svhn", [0.91234, 0.98765, 0.95]),
        record("resflow", "ood", "svhn", [0.95, 0.99125, 0.96049]),
        record("mahalanobis", "fgsm", "svhn", [0.7, 0.9, 0.85]),
        record("resflow", "ood", "lsun_resize", [1.0, 0.9999, 0.99]),
    ];
    fs::write(
        run.join("results.json"),
        format!(
            r#"{{"net":"resnet","dataset":"cifar10","results":[{}]}}"#,
            records.join(",")
        ),
    )
    .unwrap();
    let out = Command::new(python())
        .arg(repo().join("scripts/benchmark_table.py"))
        .args([
            "--outf",
            "out",
            "--nets",
            "resnet,densenet",
            "--datasets",
            "cifar10",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = stdout_ok(&out);
    let md = fs::read_to_string(dir.path().join("out/benchmark.md")).unwrap();
    assert_eq!(text, md);
    let row = |ood: &str| -> Vec<String> {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| ResNet | CIFAR-10 | {ood} |")))
            .unwrap_or_else(|| panic!("no row for {ood}:\n{md}"));
        line.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let svhn = row("SVHN");
    assert_eq!(svhn.len(), 9);
    // IO: TNR, AUROC, DTACC; then FGSM: TNR, AUROC, DTACC.
    assert_eq!(svhn[3], "**96.4** / 91.2 / 95.0");
    assert_eq!(svhn[4], "**99.1** / 98.8 / 99.1");
    assert_eq!(svhn[5], "**95.8** / 95.0 / 96.0");
    assert_eq!(svhn[6], "**75.8** / 70.0 / -");
    assert_eq!(svhn[7], "**95.5** / 90.0 / -");
    assert_eq!(svhn[8], "**89.1** / 85.0 / -");
    let lsun = row("LSUN");
    assert_eq!(lsun[3], "**98.9** / - / 100.0");
    assert_eq!(lsun[4], "**99.7** / - / 100.0");
    let tin = row("TinyImageNet");
    assert_eq!(tin[3], "**97.1** / - / -");
    // Header, rows in the paper's order, and the missing DenseNet run named.
    let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ResNet")).collect();
    assert_eq!(rows.len(), 3);
    assert!(
        rows[0].contains("| SVHN |")
            && rows[1].contains("TinyImageNet")
            && rows[2].contains("LSUN")
    );
    assert!(md.contains("| Network | In-dist | OOD | TNR at TPR 95% (OOD samples) |"));
    assert!(md.contains("No results.json yet for: densenet_cifar10."));
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| DenseNet")).count(),
        3
    );
}

#[test]
fn seed_spread_reports_mean_std_and_range_per_detector() {
    let dir = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, tnr) in [0.9, 0.8, 0.7].iter().enumerate() {
        let path = dir.path().join(format!("seed_{i}.json"));
        let records = [
            record("mahalanobis", "ood", "mnist", [*tnr, 0.95, 0.9]),
            record("msp", "ood", "mnist", [0.5, 0.6 + 0.1 * i as f64, 0.7]),
            record("mahalanobis", "fgsm", "mnist", [0.0, 0.0, 0.0]),
        ];
        fs::write(
            &path,
            format!(
                r#"{{"net":"resnet","dataset":"fashion-mnist","results":[{}]}}"#,
                records.join(",")
            ),
        )
        .unwrap();
        paths.push(path);
    }
    let out = Command::new(python())
        .arg(repo().join("scripts/seed_spread.py"))
        .args(&paths)
        .output()
        .unwrap();
    let md = stdout_ok(&out);
    // Sample std of 90, 80, 70 is 10; of 60, 70, 80 too. FGSM-validated records are left out.
    assert!(md.contains("Spread over 3 classifier seeds"), "{md}");
    assert!(
        md.contains("| OOD set | mahalanobis | msp |")
            && md.contains("| mnist | 80.0 ± 10.0 [70.0, 90.0] | 50.0 ± 0.0 [50.0, 50.0] |")
            && md.contains("| mnist | 95.0 ± 0.0 [95.0, 95.0] | 70.0 ± 10.0 [60.0, 80.0] |"),
        "{md}"
    );
}

#[test]
fn scripts_pass_shellcheck() {
    if Command::new("shellcheck")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("shellcheck not installed; skipped");
        return;
    }
    let out = Command::new("shellcheck")
        .args([
            "--external-sources",
            "scripts/benchmark.sh",
            "scripts/slurm/submit.sh",
            "scripts/grid.sh",
            "scripts/seed_spread.sh",
            "scripts/demo.sh",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    stdout_ok(&out);
}
