//! Reading a detector's score folder back (`rf-regress`), checked against its provenance
//! ([`ScoreFolder::open`]): which OOD sets, layers and magnitudes were scored, and the feature
//! matrix of one set at one magnitude, one column per layer ([`ScoreFolder::load_features`]), as
//! the evaluation takes it (`docs/method.md#the-regression-detector`). The files' format is
//! [`super::scores`].
use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};

use super::features::{FeatureManifest, PREPARE_STAGE};
use super::provenance::Provenance;
use super::scores::{
    read_score_manifest, read_scores, score_manifest_path, ScoreFile, ScoreManifest, FGSM,
};
use super::RunDir;
use crate::detect::{eps_name, DetectorKind, ScoreLayout};
use crate::error::{Error, Result};
use crate::fit::detector::{max_over_classes, LayerFeatures};

/// A detector's score folder in a run, checked: complete (its manifest there), made from the
/// run's current feature folder and other inputs it records.
#[derive(Debug, Clone)]
pub struct ScoreFolder {
    run: RunDir,
    kind: DetectorKind,
    /// The scoring stage's manifest.
    pub manifest: ScoreManifest,
    /// Rows of every set of the feature folder the scores were made from (absent for a folder
    /// whose manifest records no feature folder, e.g. hand-made scores).
    feature_rows: Option<std::collections::BTreeMap<String, usize>>,
}

impl ScoreFolder {
    /// Opens `kind`'s score folder of `run`: its manifest must exist and parse, and every input
    /// it records (the feature manifest, the FGSM summary, the trained flows; paths relative to
    /// the run folder) must have the digest it had when the scores were made.
    pub fn open(run: &RunDir, kind: DetectorKind) -> Result<ScoreFolder> {
        let dir = run.detector_dir(kind);
        let manifest = read_score_manifest(&dir, kind.stage())?;
        check_inputs(
            run,
            &manifest.provenance,
            &score_manifest_path(&dir),
            kind.stage(),
        )?;
        let features = run.features().manifest_path();
        let feature_rows = if manifest
            .provenance
            .inputs
            .contains_key("features/manifest.json")
        {
            let features: FeatureManifest =
                super::provenance::read_manifest(&features, PREPARE_STAGE)?;
            Some(features.sets)
        } else {
            None
        };
        Ok(ScoreFolder {
            run: run.clone(),
            kind,
            manifest,
            feature_rows,
        })
    }

    /// The OOD sets scored (the FGSM sets excluded), or `requested`, each checked to be one.
    pub fn ood_sets(&self, requested: &[String]) -> Result<Vec<String>> {
        let scored: Vec<String> = self
            .manifest
            .sets
            .iter()
            .filter(|s| s.as_str() != FGSM)
            .cloned()
            .collect();
        if requested.is_empty() {
            if scored.is_empty() {
                return Err(Error::missing(
                    score_manifest_path(&self.run.detector_dir(self.kind)),
                    format!(
                        "lists no OOD set; run {} with the OOD sets prepared",
                        self.kind.stage()
                    ),
                ));
            }
            return Ok(scored);
        }
        for r in requested {
            if !scored.contains(r) {
                return Err(Error::missing(
                    self.run.detector_dir(self.kind).join(r),
                    format!(
                        "no {} scores of OOD set `{r}` in the last {} run (scored: {}); prepare \
                         it with rf-prepare --ood, then rerun {}",
                        self.kind.label(),
                        self.kind.stage(),
                        if scored.is_empty() {
                            "none".to_string()
                        } else {
                            scored.join(", ")
                        },
                        self.kind.stage()
                    ),
                ));
            }
        }
        Ok(requested.to_vec())
    }

    /// The SHA-256 of the folder's manifest (results record which scores they come from).
    pub fn manifest_sha256(&self) -> Result<String> {
        crate::models::checkpoint::file_sha256(&score_manifest_path(
            &self.run.detector_dir(self.kind),
        ))
    }

    /// The SHA-256 of the feature manifest the scores were made from, if they record one.
    pub fn features_sha256(&self) -> Option<&str> {
        self.manifest
            .provenance
            .inputs
            .get("features/manifest.json")
            .map(String::as_str)
    }

    /// The layers with one score file each (empty for [`ScoreLayout::LayerColumns`]).
    pub fn file_layers(&self) -> Vec<usize> {
        match self.kind.layout() {
            ScoreLayout::LayerColumns => Vec::new(),
            ScoreLayout::ClassScoresPerLayer => self.manifest.layers.clone(),
        }
    }

    /// Reads the score files of `set` (an OOD set or [`FGSM`]) at `eps`, each checked against the
    /// digest the manifest records and (OOD sets) against the feature folder's row counts, and
    /// builds the feature matrix ([`build_features`]).
    pub fn load_features(&self, set: &str, eps: f64) -> Result<LayerFeatures> {
        if !self.manifest.sets.iter().any(|s| s == set) {
            return Err(Error::missing(
                self.run.detector_dir(self.kind).join(set),
                format!(
                    "not among the sets of the last {} run; rerun it",
                    self.kind.stage()
                ),
            ));
        }
        let dir = self.run.detector_dir(self.kind);
        let manifest_path = score_manifest_path(&dir);
        let mut files = Vec::new();
        for path in score_paths(&self.run, self.kind, set, &self.file_layers(), eps) {
            let name = relative_name(&dir, &path);
            self.manifest.provenance.verify_files(
                &dir,
                Some(&[name.as_str()]),
                &manifest_path,
                self.kind.stage(),
            )?;
            let file = read_scores(&path, set == FGSM)?;
            self.check_rows(set, &path, &file)?;
            files.push((path, file));
        }
        build_features(self.kind, eps, &files)
    }

    /// Refuses an OOD set's score file whose OOD or in-distribution row count is not the
    /// feature folder's.
    fn check_rows(&self, set: &str, path: &Path, file: &ScoreFile) -> Result<()> {
        let Some(rows) = &self.feature_rows else {
            return Ok(());
        };
        if set == FGSM {
            return Ok(());
        }
        let expected = (rows.get(&format!("ood_{set}")), rows.get("test"));
        let found = (file.n_out, file.n_rows() - file.n_out);
        if expected != (Some(&found.0), Some(&found.1)) {
            let count = |n: Option<&usize>| n.map_or("none".to_string(), usize::to_string);
            return Err(Error::provenance(
                path,
                format!(
                    "{} OOD and {} test rows, but the feature folder has {} and {}; rerun {}",
                    found.0,
                    found.1,
                    count(expected.0),
                    count(expected.1),
                    self.kind.stage()
                ),
            ));
        }
        Ok(())
    }
}

/// `path` relative to `dir`, as a manifest lists it.
fn relative_name(dir: &Path, path: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// Checks every input recorded in `provenance` (paths relative to the run folder: files, or
/// folders such as a trained flow) against its digest now; `artefact` is the manifest that
/// records them, `stage` the stage that remakes it.
pub fn check_inputs(
    run: &RunDir,
    provenance: &Provenance,
    artefact: &Path,
    stage: &str,
) -> Result<()> {
    for name in provenance.inputs.keys() {
        provenance.check_input(name, &run.path().join(name), artefact, stage)?;
    }
    Ok(())
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
