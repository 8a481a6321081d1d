//! Score files: what every scoring stage writes and `rf-regress` reads
//! (`docs/method.md#score-files`).
//!
//! Every file is a numpy `.npz` archive (read it with `numpy.load(path)`), written to a temporary
//! file beside its destination and renamed into place, so a file that exists is complete.
//!
//! # Layout in a run folder ([`crate::store::RunDir`])
//!
//! ```text
//! {outf}/{net}_{dataset}/                         one "run": a classifier and its in-distribution set
//! mahalanobis/{ood}/eps_{eps}.npz               Mahalanobis scores
//! (`docs/method.md#the-mahalanobis-detector`) scores  f64 [N, L]   one column per feature layer:
//! max_c score_c of that layer labels  u8  [N]      1 = OOD, 0 = in-distribution n_out   i64 []
//! number of OOD rows (scalar array) resflow/{ood}/layer_{l}/eps_{eps}.npz         residual-flow
//! scores of layer l (`docs/method.md#input-pre-processing`) scores  f64 [N, C]   log p_c of every
//! class c labels, n_out        as above {mahalanobis,resflow}/fgsm/...                FGSM
//! validation sets (`docs/method.md#the-regression-detector` and `docs/method.md#fgsm-samples`),
//! same names, plus group   u8  [N]      0 = clean, 1 = noisy, 2 = adversarial (labels = 1 exactly
//! for group 2)
//! ```
//!
//! The layout of each detector is its [`crate::detect::ScoreLayout`].
//!
//! `{ood}` is the OOD set's registry name; the name [`FGSM`] is reserved for the FGSM sets.
//! `{eps}` is the input pre-processing magnitude written like Python's `str(float)`
//! ([`crate::detect::eps_name`]): `eps_0.0.npz`, `eps_0.0014.npz`, ... for the seven [`crate::detect::MAGNITUDES`].
//!
//! Rows: the OOD rows (adversarial rows for FGSM files) come first, then the in-distribution
//! rows, each in data-set order, as in the reference. `n_out` must equal the number of label-1
//! rows. FGSM files should order the in-distribution rows clean then noisy (any order is read:
//! the `group` column tells them apart). Scores must be finite.
use std::fs;
use std::path::Path;

use ndarray::{Array0, Array1, Array2, ArrayD, Ix2};
use ndarray_npy::{NpzReader, NpzWriter, ReadableElement};

use super::provenance::{read_manifest, Provenance};
use crate::detect::{DetectorParams, MAGNITUDES};
use crate::error::{Error, Result};
use crate::fit::splits::{GROUP_ADVERSARIAL, GROUP_CLEAN, GROUP_NOISY};
use crate::io;

/// The reserved "OOD set" name of the FGSM validation files.
pub const FGSM: &str = "fgsm";

/// The magnitude of a file name `eps_{eps}.npz`, if it is one.
pub fn parse_eps_file(file_name: &str) -> Option<f64> {
    let v: f64 = file_name
        .strip_prefix("eps_")?
        .strip_suffix(".npz")?
        .parse()
        .ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// Sorts magnitudes in the reference's order: those of [`MAGNITUDES`] first in its order, then
/// any others ascending.
pub fn sort_magnitudes(eps: &mut [f64]) {
    let key = |e: &f64| MAGNITUDES.iter().position(|m| m == e).unwrap_or(usize::MAX);
    eps.sort_by(|a, b| key(a).cmp(&key(b)).then(a.total_cmp(b)));
}

/// The contents of one score file.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreFile {
    /// `[N, columns]`: per-layer scores (Mahalanobis) or per-class log-densities (flow).
    pub scores: Array2<f64>,
    /// `[N]`, 1 = OOD (adversarial for FGSM files), OOD rows first.
    pub labels: Array1<u8>,
    /// Number of OOD rows.
    pub n_out: usize,
    /// `[N]` FGSM groups ([`GROUP_CLEAN`], [`GROUP_NOISY`], [`GROUP_ADVERSARIAL`]); FGSM files only.
    pub group: Option<Array1<u8>>,
}

impl ScoreFile {
    /// A score file for OOD rows `ood` (first) and in-distribution rows `in_dist`, both
    /// `[rows, columns]`. Errors on different column counts or non-finite scores.
    pub fn from_parts(ood: Array2<f64>, in_dist: Array2<f64>) -> Result<Self> {
        let n_out = ood.nrows();
        let scores = ndarray::concatenate(ndarray::Axis(0), &[ood.view(), in_dist.view()])
            .map_err(|e| {
                Error::Shape(format!(
                    "score file: OOD scores have {} columns, in-distribution scores {}: {e}",
                    ood.ncols(),
                    in_dist.ncols()
                ))
            })?;
        let labels = (0..scores.nrows()).map(|i| u8::from(i < n_out)).collect();
        let file = ScoreFile {
            scores,
            labels,
            n_out,
            group: None,
        };
        file.check().map_err(Error::BadData)?;
        Ok(file)
    }

    /// An FGSM score file: adversarial rows first, then clean, then noisy rows.
    pub fn fgsm_from_parts(
        adversarial: Array2<f64>,
        clean: Array2<f64>,
        noisy: Array2<f64>,
    ) -> Result<Self> {
        let in_dist = ndarray::concatenate(ndarray::Axis(0), &[clean.view(), noisy.view()])
            .map_err(|e| Error::Shape(format!("FGSM score file: clean vs noisy: {e}")))?;
        let mut file = Self::from_parts(adversarial, in_dist)?;
        let (na, nc) = (file.n_out, clean.nrows());
        file.group = Some(
            (0..file.scores.nrows())
                .map(|i| {
                    if i < na {
                        GROUP_ADVERSARIAL
                    } else if i < na + nc {
                        GROUP_CLEAN
                    } else {
                        GROUP_NOISY
                    }
                })
                .collect(),
        );
        file.check().map_err(Error::BadData)?;
        Ok(file)
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.scores.nrows()
    }

    /// Checks the invariants of the module doc; the message says what is wrong.
    fn check(&self) -> std::result::Result<(), String> {
        let n = self.scores.nrows();
        if n == 0 {
            return Err("`scores` has no rows".into());
        }
        if self.scores.ncols() == 0 {
            return Err("`scores` has no columns (expected one per layer or per class)".into());
        }
        if self.labels.len() != n {
            return Err(format!(
                "`labels` has {} entries but `scores` has {n} rows",
                self.labels.len()
            ));
        }
        if let Some((i, &l)) = self.labels.iter().enumerate().find(|(_, &l)| l > 1) {
            return Err(format!("`labels`[{i}] = {l}, expected 0 or 1"));
        }
        let ones = self.labels.iter().filter(|&&l| l == 1).count();
        if ones != self.n_out {
            return Err(format!(
                "`n_out` = {} but {ones} labels are 1 (OOD)",
                self.n_out
            ));
        }
        if let Some(i) = (0..n).find(|&i| self.labels[i] != u8::from(i < self.n_out)) {
            return Err(format!(
                "row {i} has label {} but the OOD rows must come first (rows 0..{} labelled 1, the rest 0)",
                self.labels[i], self.n_out
            ));
        }
        if let Some(((r, c), v)) = self.scores.indexed_iter().find(|(_, v)| !v.is_finite()) {
            return Err(format!("`scores`[{r}, {c}] = {v}; scores must be finite"));
        }
        if let Some(group) = &self.group {
            if group.len() != n {
                return Err(format!(
                    "`group` has {} entries but `scores` has {n} rows",
                    group.len()
                ));
            }
            for (i, (&g, &l)) in group.iter().zip(&self.labels).enumerate() {
                if g > GROUP_ADVERSARIAL {
                    return Err(format!(
                        "`group`[{i}] = {g}, expected 0 (clean), 1 (noisy) or 2 (adversarial)"
                    ));
                }
                if u8::from(g == GROUP_ADVERSARIAL) != l {
                    return Err(format!(
                        "row {i}: group {g} with label {l}; label must be 1 exactly for adversarial rows (group 2)"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Writes `file` to `path` (atomically, creating folders). Errors if the contents break the
/// invariants of the module doc.
pub fn write_scores(path: &Path, file: &ScoreFile) -> Result<()> {
    file.check().map_err(|m| Error::format(path, m))?;
    io::write_buffered(path, |w| {
        let err = |e: ndarray_npy::WriteNpzError| Error::format(path, e.to_string());
        let mut npz = NpzWriter::new(w);
        npz.add_array("scores", &file.scores).map_err(err)?;
        npz.add_array("labels", &file.labels).map_err(err)?;
        npz.add_array("n_out", &Array0::from_elem((), file.n_out as i64))
            .map_err(err)?;
        if let Some(group) = &file.group {
            npz.add_array("group", group).map_err(err)?;
        }
        npz.finish().map_err(err)?;
        Ok(())
    })
}

/// Reads and checks a score file. `fgsm` says whether the `group` array is required (FGSM
/// files) or must be absent. Errors name the file and what was expected.
pub fn read_scores(path: &Path, fgsm: bool) -> Result<ScoreFile> {
    let f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut npz = NpzReader::new(std::io::BufReader::new(f)).map_err(|e| {
        Error::format(
            path,
            format!("not a numpy .npz archive ({e}); expected arrays scores, labels, n_out"),
        )
    })?;
    let names = npz
        .names()
        .map_err(|e| Error::format(path, e.to_string()))?;
    let mut need = vec!["scores", "labels", "n_out"];
    if fgsm {
        need.push("group");
    }
    let missing: Vec<&str> = need
        .iter()
        .copied()
        .filter(|n| !names.iter().any(|m| m == n))
        .collect();
    if !missing.is_empty() {
        return Err(Error::format(
            path,
            format!(
                "missing array(s) {} (found: {}); expected scores f64 [N, columns], labels u8 [N], n_out{}",
                missing.join(", "),
                names.join(", "),
                if fgsm { ", group u8 [N] (FGSM file)" } else { "" }
            ),
        ));
    }
    if !fgsm && names.iter().any(|m| m == "group") {
        return Err(Error::format(
            path,
            "has a `group` array, which only FGSM files (OOD name `fgsm`) have",
        ));
    }
    let scores: ArrayD<f64> = match read_any::<f64>(&mut npz, "scores") {
        Ok(a) => a,
        Err(_) => read_any::<f32>(&mut npz, "scores")
            .map(|a| a.mapv(f64::from))
            .map_err(|e| {
                Error::format(path, format!("`scores`: {e}; expected f64 [N, columns]"))
            })?,
    };
    let dims = scores.shape().to_vec();
    let scores = scores.into_dimensionality::<Ix2>().map_err(|_| {
        Error::format(
            path,
            format!("`scores` has shape {dims:?}; expected 2 dimensions [N, columns]"),
        )
    })?;
    let labels = read_vector::<u8>(&mut npz, path, "labels")?;
    let n_out = read_count(&mut npz, path)?;
    let group = if fgsm {
        Some(read_vector::<u8>(&mut npz, path, "group")?)
    } else {
        None
    };
    let file = ScoreFile {
        scores,
        labels,
        n_out,
        group,
    };
    file.check().map_err(|m| Error::format(path, m))?;
    Ok(file)
}

fn read_any<T: ReadableElement>(
    npz: &mut NpzReader<std::io::BufReader<fs::File>>,
    name: &str,
) -> std::result::Result<ArrayD<T>, ndarray_npy::ReadNpzError> {
    npz.by_name(name)
}

fn read_vector<T: ReadableElement>(
    npz: &mut NpzReader<std::io::BufReader<fs::File>>,
    path: &Path,
    name: &str,
) -> Result<Array1<T>> {
    let a = read_any::<T>(npz, name).map_err(|e| {
        Error::format(
            path,
            format!("`{name}`: {e}; expected {} [N]", std::any::type_name::<T>()),
        )
    })?;
    let dims = a.shape().to_vec();
    a.into_dimensionality().map_err(|_| {
        Error::format(
            path,
            format!("`{name}` has shape {dims:?}; expected one dimension [N]"),
        )
    })
}

/// `n_out` as a scalar (or one-element) integer array of any common integer type.
fn read_count(npz: &mut NpzReader<std::io::BufReader<fs::File>>, path: &Path) -> Result<usize> {
    let values: Vec<i128> = if let Ok(a) = read_any::<i64>(npz, "n_out") {
        a.iter().map(|&v| v as i128).collect()
    } else if let Ok(a) = read_any::<u64>(npz, "n_out") {
        a.iter().map(|&v| v as i128).collect()
    } else if let Ok(a) = read_any::<i32>(npz, "n_out") {
        a.iter().map(|&v| v as i128).collect()
    } else {
        return Err(Error::format(
            path,
            "`n_out` is not an integer array; expected a scalar int64",
        ));
    };
    match values.as_slice() {
        [v] if *v >= 0 => Ok(*v as usize),
        _ => Err(Error::format(
            path,
            format!("`n_out` = {values:?}; expected one non-negative integer"),
        )),
    }
}

/// Magnitudes with an `eps_{eps}.npz` file in `dir`, in [`sort_magnitudes`] order.
pub fn list_magnitudes(dir: &Path) -> Result<Vec<f64>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut eps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if let Some(v) = entry.file_name().to_str().and_then(parse_eps_file) {
            eps.push(v);
        }
    }
    sort_magnitudes(&mut eps);
    Ok(eps)
}

/// What a scoring stage wrote for one detector (`{detector}/scores.json`), written last: the
/// magnitudes, layers and sets scored, the parameters, and the [`Provenance`] of the scores (the
/// classifier, the feature manifest and other artefacts they were made from, every score file's
/// digest), so that `rf-regress` uses exactly those files and refuses any that changed, went
/// missing or came from another run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreManifest {
    /// The magnitudes scored, in scoring order.
    pub magnitudes: Vec<f64>,
    /// The feature layers scored (the flow's trained layers; the last layer for the baselines).
    pub layers: Vec<usize>,
    /// The sets scored (OOD sets, and [`FGSM`] when validating on FGSM samples).
    pub sets: Vec<String>,
    /// The detector's parameters.
    pub params: DetectorParams,
    /// What the scores were made from, and every file's digest.
    pub provenance: Provenance,
}

/// The manifest's path in a detector's score folder.
pub fn score_manifest_path(detector_dir: &Path) -> std::path::PathBuf {
    detector_dir.join("scores.json")
}

/// Reads the manifest of `detector_dir`, written by `stage`; a missing or unreadable one is an
/// error naming the stage to run.
pub fn read_score_manifest(detector_dir: &Path, stage: &str) -> Result<ScoreManifest> {
    read_manifest(&score_manifest_path(detector_dir), stage)
}
