//! Reading a detector's score files back (`rf-regress`): which OOD sets, layers and magnitudes
//! were scored ([`scored_files`]), and the feature matrix of one set at one magnitude, one column
//! per layer ([`load_features`]), as the evaluation takes it
//! (`docs/method.md#the-regression-detector`). The files' format is [`super::scores`].
use std::path::PathBuf;

use ndarray::{Array2, Axis};

use super::scores::{
    list_magnitudes, read_score_manifest, read_scores, score_manifest_path, ScoreFile, FGSM,
};
use super::RunDir;
use crate::detect::{eps_name, DetectorKind, DetectorParams, ScoreLayout};
use crate::error::{Error, Result};
use crate::fit::detector::{max_over_classes, LayerFeatures};

/// The OOD sets with score files for `detector` in `run`, or `requested` (checked to exist).
pub fn scored_ood_sets(
    run: &RunDir,
    detector: DetectorKind,
    requested: &[String],
) -> Result<Vec<String>> {
    let found = run.list_ood_sets(detector)?;
    if requested.is_empty() {
        if found.is_empty() {
            return Err(Error::missing(
                run.detector_dir(detector),
                format!(
                    "no OOD score folders for the {} detector; run {} first",
                    detector.label(),
                    detector.stage()
                ),
            ));
        }
        return Ok(found);
    }
    for r in requested {
        if !found.contains(r) {
            return Err(Error::missing(
                run.detector_dir(detector).join(r),
                format!(
                    "no score files for OOD set `{r}`; found: {}",
                    if found.is_empty() {
                        "none".to_string()
                    } else {
                        found.join(", ")
                    }
                ),
            ));
        }
    }
    Ok(requested.to_vec())
}

/// The feature columns one score file contributes ([`ScoreLayout`]): a file of layer columns
/// holds them already; a file of one layer's class scores is reduced to their max.
fn layer_columns(detector: DetectorKind, file: &ScoreFile) -> Array2<f64> {
    match detector.layout() {
        ScoreLayout::LayerColumns => file.scores.clone(),
        ScoreLayout::ClassScoresPerLayer => {
            max_over_classes(file.scores.view()).insert_axis(Axis(1))
        }
    }
}

/// Builds the feature matrix of one magnitude from its score files (`(path, file)` pairs: the one
/// file of a [`ScoreLayout::LayerColumns`] detector, or one file per layer in layer order). All files must agree on rows,
/// labels, `n_out` and groups.
pub fn build_features(
    detector: DetectorKind,
    eps: f64,
    files: &[(PathBuf, ScoreFile)],
) -> Result<LayerFeatures> {
    let Some((first_path, first)) = files.first() else {
        return Err(Error::Shape(format!(
            "{} scores at eps {}: no score files",
            detector.label(),
            eps_name(eps)
        )));
    };
    if detector.layout() == ScoreLayout::LayerColumns && files.len() != 1 {
        return Err(Error::Shape(format!(
            "{} scores at eps {}: expected one file, got {}",
            detector.label(),
            eps_name(eps),
            files.len()
        )));
    }
    let mut columns = Vec::with_capacity(files.len());
    for (path, file) in files {
        if file.labels != first.labels || file.n_out != first.n_out || file.group != first.group {
            return Err(Error::provenance(
                path,
                format!(
                    "rows differ from {}: {} rows with {} OOD, expected {} rows with {} OOD and the same labels{}",
                    first_path.display(),
                    file.n_rows(),
                    file.n_out,
                    first.n_rows(),
                    first.n_out,
                    if first.group.is_some() { " and groups" } else { "" }
                ),
            ));
        }
        columns.push(layer_columns(detector, file));
    }
    let views: Vec<_> = columns.iter().map(|c| c.view()).collect();
    let x = ndarray::concatenate(Axis(1), &views)
        .map_err(|e| Error::Shape(format!("feature columns: {e}")))?;
    Ok(LayerFeatures {
        eps,
        x,
        labels: first.labels.to_vec(),
        n_out: first.n_out,
        group: first.group.as_ref().map(|g| g.to_vec()),
    })
}

/// The score files of `set` (an OOD set name or [`FGSM`]) at `eps`: the one file of a
/// [`ScoreLayout::LayerColumns`] detector, or the files of `layers`.
pub fn score_paths(
    run: &RunDir,
    detector: DetectorKind,
    set: &str,
    layers: &[usize],
    eps: f64,
) -> Vec<PathBuf> {
    match detector.layout() {
        ScoreLayout::LayerColumns => vec![run.score_path(detector, set, 0, eps)],
        ScoreLayout::ClassScoresPerLayer => layers
            .iter()
            .map(|&l| run.score_path(detector, set, l, eps))
            .collect(),
    }
}

/// Reads and builds the features of `set` at `eps` (see [`score_paths`], [`build_features`]).
pub fn load_features(
    run: &RunDir,
    detector: DetectorKind,
    set: &str,
    layers: &[usize],
    eps: f64,
) -> Result<LayerFeatures> {
    let fgsm = set == FGSM;
    let mut files = Vec::new();
    for path in score_paths(run, detector, set, layers, eps) {
        if !path.exists() {
            return Err(Error::missing(
                &path,
                format!(
                    "missing score file; {} writes it (needed for {} at eps {})",
                    detector.stage(),
                    set,
                    eps_name(eps)
                ),
            ));
        }
        let file = read_scores(&path, fgsm)?;
        files.push((path, file));
    }
    build_features(detector, eps, &files)
}

/// What a detector's scores of one set are made of: the layers (empty for
/// [`ScoreLayout::LayerColumns`]), the magnitudes and the detector's parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredFiles {
    /// The layers with one file each (empty for [`ScoreLayout::LayerColumns`]).
    pub layers: Vec<usize>,
    /// The magnitudes scored, in scoring order.
    pub magnitudes: Vec<f64>,
    /// The parameters the detector was scored with.
    pub params: DetectorParams,
}

/// The layers, magnitudes and parameters of `detector`'s scores of `set` in `run`: those of the
/// scoring stage's manifest ([`super::scores::ScoreManifest`]); for score folders without one (older versions,
/// hand-made files), the layers with files, the magnitudes of the first layer and the kind's
/// default parameters. Errors if there are none.
pub fn scored_files(run: &RunDir, detector: DetectorKind, set: &str) -> Result<ScoredFiles> {
    // The scoring stage's manifest names the files exactly; every one must then exist
    // ([`load_features`] names a missing one).
    if let Some(m) = read_score_manifest(&run.detector_dir(detector))? {
        if !m.sets.iter().any(|s| s == set) {
            return Err(Error::provenance(
                score_manifest_path(&run.detector_dir(detector)),
                format!(
                    "{} scores of `{set}` are not part of the last scoring run (sets: {}); rerun {}",
                    detector.label(),
                    m.sets.join(", "),
                    detector.stage()
                ),
            ));
        }
        let layers = match detector.layout() {
            ScoreLayout::LayerColumns => Vec::new(),
            ScoreLayout::ClassScoresPerLayer => m.layers,
        };
        return Ok(ScoredFiles {
            layers,
            magnitudes: m.magnitudes,
            params: m
                .params
                .unwrap_or_else(|| DetectorParams::default_for(detector)),
        });
    }
    let (layers, dir) = match detector.layout() {
        ScoreLayout::LayerColumns => (Vec::new(), run.scores_dir(detector, set, 0)),
        ScoreLayout::ClassScoresPerLayer => {
            let layers = run.list_layers(detector, set)?;
            let Some(first) = layers.first().copied() else {
                return Err(Error::missing(
                    run.detector_dir(detector).join(set),
                    format!(
                        "no layer_{{l}} folders of {} scores; run {} first",
                        detector.label(),
                        detector.stage()
                    ),
                ));
            };
            (layers, run.scores_dir(detector, set, first))
        }
    };
    let eps = list_magnitudes(&dir)?;
    if eps.is_empty() {
        return Err(Error::missing(
            &dir,
            format!(
                "no eps_{{eps}}.npz score files; run {} first",
                detector.stage()
            ),
        ));
    }
    Ok(ScoredFiles {
        layers,
        magnitudes: eps,
        params: DetectorParams::default_for(detector),
    })
}
