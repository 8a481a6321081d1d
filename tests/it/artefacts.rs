//! Score files: names, round trips (also through numpy), and clear errors on malformed files.
use crate::common;
use crate::synth;

use std::path::Path;

use ndarray::{array, Array0, Array1, Array2};
use ndarray_npy::NpzWriter;
use resflow::detect::{DetectorKind, MAGNITUDES};
use resflow::store::history::{self, AurocHistory};
use resflow::store::scores::{self, ScoreFile, FGSM};
use resflow::store::{self as store, RunDir};

#[test]
fn eps_names_follow_python_str() {
    let names: Vec<String> = MAGNITUDES
        .iter()
        .map(|&e| resflow::detect::eps_name(e))
        .collect();
    assert_eq!(
        names,
        ["0.0", "0.01", "0.005", "0.002", "0.0014", "0.001", "0.0005"]
    );
    for &e in &MAGNITUDES {
        let file = format!("eps_{}.npz", resflow::detect::eps_name(e));
        assert_eq!(scores::parse_eps_file(&file), Some(e));
    }
    assert_eq!(scores::parse_eps_file("eps_x.npz"), None);
    assert_eq!(scores::parse_eps_file("eps_0.1.npy"), None);
    let mut eps = vec![0.0005, 0.3, 0.0, 0.002, 0.2];
    scores::sort_magnitudes(&mut eps);
    assert_eq!(eps, [0.0, 0.002, 0.0005, 0.2, 0.3]);
}

#[test]
fn paths_follow_the_documented_layout() {
    let run = RunDir::new(Path::new("out"), "resnet", "cifar10");
    assert_eq!(run.path(), Path::new("out/resnet_cifar10"));
    assert_eq!(
        run.mahalanobis_path("svhn", 0.0014),
        Path::new("out/resnet_cifar10/mahalanobis/svhn/eps_0.0014.npz")
    );
    assert_eq!(
        run.resflow_path(FGSM, 3, 0.0),
        Path::new("out/resnet_cifar10/resflow/fgsm/layer_3/eps_0.0.npz")
    );
    assert_eq!(
        run.history_path(2),
        Path::new("out/resnet_cifar10/history/layer_2.json")
    );
}

#[test]
fn round_trip_plain_and_fgsm() {
    let dir = tempfile::tempdir().unwrap();
    let f = synth::io_file(1, 3, 5, 4, 1.0);
    assert_eq!(f.n_out, 3);
    assert_eq!(f.labels.to_vec(), [1, 1, 1, 0, 0, 0, 0, 0]);
    let p = dir.path().join("a/b/eps_0.0.npz");
    scores::write_scores(&p, &f).unwrap();
    assert_eq!(scores::read_scores(&p, false).unwrap(), f);
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
    assert_eq!(names.len(), 1);

    let g = synth::fgsm_file(2, 4, 2, 1.0);
    assert_eq!(
        g.group.as_ref().unwrap().to_vec(),
        [2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 1, 1]
    );
    let q = dir.path().join("fgsm.npz");
    scores::write_scores(&q, &g).unwrap();
    assert_eq!(scores::read_scores(&q, true).unwrap(), g);
    // An FGSM file read as a plain one (and vice versa) is refused.
    let e = scores::read_scores(&q, false).unwrap_err().to_string();
    assert!(e.contains("fgsm.npz") && e.contains("`group`"), "{e}");
    let e = scores::read_scores(&p, true).unwrap_err().to_string();
    assert!(e.contains("missing array(s) group"), "{e}");
}

#[test]
fn numpy_reads_what_we_write_and_we_read_what_numpy_writes() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("ours.npz");
    let f = ScoreFile::from_parts(array![[-1.5, 2.0]], array![[0.25, 3.0], [4.0, -5.0]]).unwrap();
    scores::write_scores(&ours, &f).unwrap();
    let theirs = dir.path().join("theirs.npz");
    let out = common::run_python(
        "import sys, numpy as np\n\
         d = np.load(sys.argv[1])\n\
         print(sorted(d.files), d['scores'].dtype, d['scores'].shape, d['scores'].tolist(), \
         d['labels'].dtype, d['labels'].tolist(), int(d['n_out']))\n\
         np.savez(sys.argv[2], scores=np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=np.float32), \
         labels=np.array([1, 0], dtype=np.uint8), n_out=np.int64(1))\n",
        &[&ours, &theirs],
    );
    assert_eq!(
        out.trim(),
        "['labels', 'n_out', 'scores'] float64 (3, 2) [[-1.5, 2.0], [0.25, 3.0], [4.0, -5.0]] uint8 [1, 0, 0] 1"
    );
    let back = scores::read_scores(&theirs, false).unwrap();
    assert_eq!(back.scores, array![[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
    assert_eq!(back.n_out, 1);
}

/// Writes arrays as given (no checks) to `path`.
fn raw(
    path: &Path,
    scores: Option<ndarray::ArrayD<f64>>,
    labels: Option<Array1<u8>>,
    n_out: Option<i64>,
    group: Option<Array1<u8>>,
) {
    let mut npz = NpzWriter::new(std::fs::File::create(path).unwrap());
    if let Some(s) = scores {
        npz.add_array("scores", &s).unwrap();
    }
    if let Some(l) = labels {
        npz.add_array("labels", &l).unwrap();
    }
    if let Some(n) = n_out {
        npz.add_array("n_out", &Array0::from_elem((), n)).unwrap();
    }
    if let Some(g) = group {
        npz.add_array("group", &g).unwrap();
    }
    npz.finish().unwrap();
}

fn err_of(path: &Path, fgsm: bool) -> String {
    scores::read_scores(path, fgsm).unwrap_err().to_string()
}

#[test]
fn malformed_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.npz");
    let s2 = |v: Array2<f64>| Some(v.into_dyn());
    let ok_scores = || s2(array![[1.0], [2.0], [3.0]]);
    type Case<'a> = (&'a str, Box<dyn Fn() + 'a>, bool);
    let cases: Vec<Case> = vec![
        (
            "missing array(s) n_out",
            Box::new(|| raw(&p, ok_scores(), Some(array![1, 0, 0]), None, None)),
            false,
        ),
        (
            "`labels` has 2 entries but `scores` has 3 rows",
            Box::new(|| raw(&p, ok_scores(), Some(array![1, 0]), Some(1), None)),
            false,
        ),
        (
            "`n_out` = 2 but 1 labels are 1",
            Box::new(|| raw(&p, ok_scores(), Some(array![1, 0, 0]), Some(2), None)),
            false,
        ),
        (
            "OOD rows must come first",
            Box::new(|| raw(&p, ok_scores(), Some(array![0, 1, 0]), Some(1), None)),
            false,
        ),
        (
            "`labels`[1] = 3, expected 0 or 1",
            Box::new(|| raw(&p, ok_scores(), Some(array![1, 3, 0]), Some(1), None)),
            false,
        ),
        (
            "scores must be finite",
            Box::new(|| {
                raw(
                    &p,
                    s2(array![[1.0], [f64::NAN], [3.0]]),
                    Some(array![1, 0, 0]),
                    Some(1),
                    None,
                )
            }),
            false,
        ),
        (
            "scores must be finite",
            Box::new(|| {
                raw(
                    &p,
                    s2(array![[1.0], [f64::INFINITY], [3.0]]),
                    Some(array![1, 0, 0]),
                    Some(1),
                    None,
                )
            }),
            false,
        ),
        (
            "`scores` has shape [3]; expected 2 dimensions",
            Box::new(|| {
                raw(
                    &p,
                    Some(array![1.0, 2.0, 3.0].into_dyn()),
                    Some(array![1, 0, 0]),
                    Some(1),
                    None,
                )
            }),
            false,
        ),
        (
            "`n_out` = [-1]",
            Box::new(|| raw(&p, ok_scores(), Some(array![1, 0, 0]), Some(-1), None)),
            false,
        ),
        (
            "label must be 1 exactly for adversarial rows",
            Box::new(|| {
                raw(
                    &p,
                    ok_scores(),
                    Some(array![1, 0, 0]),
                    Some(1),
                    Some(array![2, 2, 0]),
                )
            }),
            true,
        ),
        (
            "`group`[2] = 5",
            Box::new(|| {
                raw(
                    &p,
                    ok_scores(),
                    Some(array![1, 0, 0]),
                    Some(1),
                    Some(array![2, 0, 5]),
                )
            }),
            true,
        ),
    ];
    for (expected, write, fgsm) in cases {
        write();
        let e = err_of(&p, fgsm);
        assert!(e.contains("bad.npz"), "{e}");
        assert!(e.contains(expected), "expected `{expected}` in: {e}");
    }
    std::fs::write(&p, b"not a zip").unwrap();
    let e = err_of(&p, false);
    assert!(
        e.contains("bad.npz") && e.contains("not a numpy .npz archive"),
        "{e}"
    );
    let e = err_of(&dir.path().join("absent.npz"), false);
    assert!(e.contains("absent.npz"), "{e}");
}

#[test]
fn invalid_contents_are_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("x.npz");
    let bad = ScoreFile {
        scores: array![[1.0], [f64::NAN]],
        labels: array![1, 0],
        n_out: 1,
        group: None,
    };
    let e = scores::write_scores(&p, &bad).unwrap_err().to_string();
    assert!(e.contains("x.npz") && e.contains("finite"), "{e}");
    assert!(!p.exists());
    assert!(ScoreFile::from_parts(array![[1.0, 2.0]], array![[1.0]]).is_err());
}

#[test]
fn discovery_lists_runs_ood_sets_layers_and_magnitudes() {
    let dir = tempfile::tempdir().unwrap();
    let outf = dir.path();
    let run = RunDir::new(outf, "resnet", "cifar10");
    std::fs::create_dir_all(outf.join("densenet_svhn")).unwrap();
    let f = synth::io_file(3, 2, 2, 1, 1.0);
    for ood in ["svhn", "lsun_resize"] {
        for eps in [0.0005, 0.0] {
            scores::write_scores(&run.mahalanobis_path(ood, eps), &f).unwrap();
        }
    }
    for l in [1, 0, 10] {
        scores::write_scores(&run.resflow_path("svhn", l, 0.01), &f).unwrap();
    }
    let g = synth::fgsm_file(3, 2, 1, 1.0);
    scores::write_scores(&run.mahalanobis_path(FGSM, 0.0), &g).unwrap();
    assert_eq!(store::list_datasets(outf, "resnet").unwrap(), ["cifar10"]);
    assert_eq!(store::list_datasets(outf, "densenet").unwrap(), ["svhn"]);
    assert_eq!(
        run.list_ood_sets(DetectorKind::Mahalanobis).unwrap(),
        ["lsun_resize", "svhn"]
    );
    assert_eq!(run.list_ood_sets(DetectorKind::Resflow).unwrap(), ["svhn"]);
    assert_eq!(
        run.list_layers(DetectorKind::Resflow, "svhn").unwrap(),
        [0, 1, 10]
    );
    assert_eq!(
        scores::list_magnitudes(&run.path().join("mahalanobis/svhn")).unwrap(),
        [0.0, 0.0005]
    );
    assert!(scores::list_magnitudes(&run.path().join("nothing"))
        .unwrap()
        .is_empty());
}

#[test]
fn history_round_trip_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("history/layer_0.json");
    let h = AurocHistory {
        ood: "svhn".into(),
        iteration: vec![0, 20, 40],
        auroc: vec![0.9, 0.92, 0.95],
    };
    history::write_history(&p, &h).unwrap();
    assert_eq!(history::read_history(&p).unwrap(), h);
    std::fs::write(&p, r#"{"ood":"svhn","iteration":[0,1],"auroc":[0.5]}"#).unwrap();
    let e = history::read_history(&p).unwrap_err().to_string();
    assert!(
        e.contains("layer_0.json") && e.contains("2 iterations but 1 AUROC"),
        "{e}"
    );
    std::fs::write(&p, r#"{"ood":"svhn","iteration":[0],"auroc":[1.5]}"#).unwrap();
    assert!(history::read_history(&p)
        .unwrap_err()
        .to_string()
        .contains("not in [0, 1]"));
}
