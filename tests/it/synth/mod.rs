//! Synthetic score files for the regression tests (deterministic).
#![allow(dead_code)]

use ndarray::Array2;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::path::{Path, PathBuf};

use resflow::detect::{DetectorKind, DetectorParams};
use resflow::store::provenance::{FileDigest, Provenance};
use resflow::store::scores::{self, ScoreFile, ScoreManifest};
use resflow::store::RunDir;

/// `[n, cols]` of N(mean, 1) draws.
pub fn gauss(seed: u64, n: usize, cols: usize, mean: f64) -> Array2<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let d = Normal::new(mean, 1.0).unwrap();
    Array2::from_shape_simple_fn((n, cols), || d.sample(&mut rng))
}

/// A score file whose OOD rows are shifted down by `sep` in every column.
pub fn io_file(seed: u64, n_out: usize, n_in: usize, cols: usize, sep: f64) -> ScoreFile {
    ScoreFile::from_parts(
        gauss(seed, n_out, cols, -sep),
        gauss(seed + 1, n_in, cols, 0.0),
    )
    .unwrap()
}

/// An FGSM file (adversarial rows shifted down by `sep`, clean and noisy at 0).
pub fn fgsm_file(seed: u64, n_each: usize, cols: usize, sep: f64) -> ScoreFile {
    ScoreFile::fgsm_from_parts(
        gauss(seed, n_each, cols, -sep),
        gauss(seed + 1, n_each, cols, 0.0),
        gauss(seed + 2, n_each, cols, 0.0),
    )
    .unwrap()
}

/// Separation per magnitude: `sep_at(eps)`; writes Mahalanobis files with `layers` columns for
/// every magnitude of MAGNITUDES.
pub fn write_mahalanobis(
    run: &RunDir,
    ood: &str,
    n_out: usize,
    n_in: usize,
    layers: usize,
    seed: u64,
    sep_at: impl Fn(f64) -> f64,
) {
    for (k, &eps) in resflow::detect::MAGNITUDES.iter().enumerate() {
        let f = if ood == scores::FGSM {
            fgsm_file(seed + 10 * k as u64, n_out, layers, sep_at(eps))
        } else {
            io_file(seed + 10 * k as u64, n_out, n_in, layers, sep_at(eps))
        };
        scores::write_scores(&run.mahalanobis_path(ood, eps), &f).unwrap();
    }
}

/// Flow files: per layer `[N, classes]`, OOD rows shifted down by `sep_at(eps)`.
#[allow(clippy::too_many_arguments)]
pub fn write_resflow(
    run: &RunDir,
    ood: &str,
    n_out: usize,
    n_in: usize,
    layers: usize,
    classes: usize,
    seed: u64,
    sep_at: impl Fn(f64) -> f64,
) {
    for (k, &eps) in resflow::detect::MAGNITUDES.iter().enumerate() {
        for l in 0..layers {
            let s = seed + 100 * k as u64 + 7 * l as u64;
            let f = if ood == scores::FGSM {
                fgsm_file(s, n_out, classes, sep_at(eps))
            } else {
                io_file(s, n_out, n_in, classes, sep_at(eps))
            };
            scores::write_scores(&run.resflow_path(ood, l, eps), &f).unwrap();
        }
    }
}

/// Completes `kind`'s hand-written score folder in `run` as a scoring stage would: a manifest
/// (`scores.json`) listing every set folder, `layers` layers, the magnitudes of MAGNITUDES and
/// each file's digest, with no upstream inputs (the scores are made up).
pub fn seal(run: &RunDir, kind: DetectorKind, layers: usize) {
    let dir = run.detector_dir(kind);
    let mut provenance = Provenance::new(kind.stage(), "synthetic");
    let mut sets = Vec::new();
    fn files(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                files(&p, base, out);
            } else if p.file_name().unwrap() != "scores.json" {
                out.push(p.strip_prefix(base).unwrap().to_path_buf());
            }
        }
    }
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sets.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    sets.sort();
    let mut all = Vec::new();
    files(&dir, &dir, &mut all);
    for f in all {
        provenance.files.insert(
            f.to_string_lossy().into_owned(),
            FileDigest::of(&dir.join(&f)).unwrap(),
        );
    }
    let manifest = ScoreManifest {
        magnitudes: resflow::detect::MAGNITUDES.to_vec(),
        layers: (0..layers).collect(),
        sets,
        params: DetectorParams::default_for(kind),
        provenance,
    };
    resflow::io::write_json(&scores::score_manifest_path(&dir), &manifest).unwrap();
}
