//! Files on disk: every path of a run in one place ([`RunDir`]) and the formats of what the
//! stages write there (features, FGSM samples, score files, flow histories, results).
//!
//! ```text
//! {outf}/{net}_{dataset}/              one run: a classifier and its in-distribution set
//!   features/                          rf-prepare       (features)
//!   fgsm/                              rf-fgsm          (fgsm)
//!   flow/layer_{l}/                    rf-train         (crate::detect::flow::checkpoint)
//!   history/layer_{l}.json, _loss.npy  rf-train         (history)
//!   mahalanobis/{ood}/eps_{eps}.npz    rf-mahalanobis   (scores)
//!   resflow/{ood}/layer_{l}/eps_*.npz  rf-score         (scores)
//!   regression/{detector}_{validation}/{ood}.npz        rf-regress (results)
//!   results.json, results.md, plots/   rf-regress       (results, crate::report)
//! ```
pub mod features;
pub mod fgsm;
pub mod history;
pub mod lock;
pub mod provenance;
pub mod results;
pub mod score_sets;
pub mod scores;
pub mod training_data;

use std::path::{Path, PathBuf};

use crate::detect::eps_name;
use crate::detect::{DetectorKind, ScoreLayout};
use crate::error::Result;
use crate::fit::Validation;
use features::FeatureDir;
use scores::FGSM;

/// The folder of one run, `{outf}/{net}_{dataset}`, and every path in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// The run of network `net` (its name, e.g. `resnet`) on `dataset` under `outf`.
    pub fn new(outf: &Path, net: &str, dataset: &str) -> RunDir {
        RunDir {
            path: outf.join(format!("{net}_{dataset}")),
        }
    }

    /// The run folder itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The feature folder, `features/`.
    pub fn features(&self) -> FeatureDir {
        FeatureDir::new(self.path.join("features"))
    }

    /// The FGSM samples' folder, `fgsm/`.
    pub fn fgsm_dir(&self) -> PathBuf {
        self.path.join(FGSM)
    }

    /// The trained flows' folder, `flow/`.
    pub fn flows_dir(&self) -> PathBuf {
        self.path.join("flow")
    }

    /// The trained flow of `layer`, `flow/layer_{layer}/`.
    pub fn flow_dir(&self, layer: usize) -> PathBuf {
        self.flows_dir().join(format!("layer_{layer}"))
    }

    /// The flow training's monitoring history of `layer`, `history/layer_{layer}.json`.
    pub fn history_path(&self, layer: usize) -> PathBuf {
        self.path
            .join("history")
            .join(format!("layer_{layer}.json"))
    }

    /// The flow training's loss history of `layer`, `history/layer_{layer}_loss.npy`.
    pub fn loss_history_path(&self, layer: usize) -> PathBuf {
        self.path
            .join("history")
            .join(format!("layer_{layer}_loss.npy"))
    }

    /// A detector's score folder, `{detector}/`.
    pub fn detector_dir(&self, detector: DetectorKind) -> PathBuf {
        self.path.join(detector.name())
    }

    /// The folder of a detector's score files of `set` (an OOD set or [`FGSM`]) for `layer`:
    /// `{detector}/{set}/` for one file per magnitude with a column per layer,
    /// `{detector}/{set}/layer_{layer}/` for one file per layer and magnitude.
    pub fn scores_dir(&self, detector: DetectorKind, set: &str, layer: usize) -> PathBuf {
        let dir = self.detector_dir(detector).join(set);
        match detector.layout() {
            ScoreLayout::LayerColumns => dir,
            ScoreLayout::ClassScoresPerLayer => dir.join(format!("layer_{layer}")),
        }
    }

    /// The score file of `set` at magnitude `eps` (and `layer`, where the layout has one file per
    /// layer): `.../eps_{eps}.npz` in [`RunDir::scores_dir`].
    pub fn score_path(&self, detector: DetectorKind, set: &str, layer: usize, eps: f64) -> PathBuf {
        self.scores_dir(detector, set, layer)
            .join(format!("eps_{}.npz", eps_name(eps)))
    }

    /// `mahalanobis/{set}/eps_{eps}.npz`.
    pub fn mahalanobis_path(&self, set: &str, eps: f64) -> PathBuf {
        self.score_path(DetectorKind::Mahalanobis, set, 0, eps)
    }

    /// `resflow/{set}/layer_{layer}/eps_{eps}.npz`.
    pub fn resflow_path(&self, set: &str, layer: usize, eps: f64) -> PathBuf {
        self.score_path(DetectorKind::Resflow, set, layer, eps)
    }

    /// `results.json`.
    pub fn results_path(&self) -> PathBuf {
        self.path.join("results.json")
    }

    /// `results.md`.
    pub fn results_markdown_path(&self) -> PathBuf {
        self.path.join("results.md")
    }

    /// The plots' folder, `plots/`.
    pub fn plots_dir(&self) -> PathBuf {
        self.path.join("plots")
    }

    /// The chosen detector's test outputs, `regression/{detector}_{validation}/{ood}.npz`.
    pub fn test_scores_path(
        &self,
        detector: DetectorKind,
        validation: Validation,
        ood: &str,
    ) -> PathBuf {
        self.path
            .join("regression")
            .join(format!("{}_{}", detector.name(), validation.name()))
            .join(format!("{ood}.npz"))
    }

    /// The OOD sets with score folders of `detector` (the FGSM folder excluded), sorted.
    pub fn list_ood_sets(&self, detector: DetectorKind) -> Result<Vec<String>> {
        Ok(subfolders(&self.detector_dir(detector))?
            .into_iter()
            .filter(|n| n != FGSM)
            .collect())
    }

    /// The layers (`layer_{l}` folders) of `detector`'s scores of `set`, ascending; empty for a
    /// layout with one file for all layers.
    pub fn list_layers(&self, detector: DetectorKind, set: &str) -> Result<Vec<usize>> {
        let mut layers: Vec<usize> = subfolders(&self.detector_dir(detector).join(set))?
            .iter()
            .filter_map(|n| n.strip_prefix("layer_")?.parse().ok())
            .collect();
        layers.sort_unstable();
        Ok(layers)
    }
}

/// The data sets with a run folder (`{net}_{dataset}`) of network `net` under `outf`, sorted.
pub fn list_datasets(outf: &Path, net: &str) -> Result<Vec<String>> {
    let prefix = format!("{net}_");
    Ok(subfolders(outf)?
        .into_iter()
        .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
        .filter(|d| !d.is_empty())
        .collect())
}

/// Sorted names of the sub-folders of `dir` (empty if `dir` does not exist).
fn subfolders(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in crate::io::dir_entries(dir)? {
        if entry.path().is_dir() {
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_paths_follow_each_detectors_layout() {
        let run = RunDir::new(Path::new("out"), "resnet", "svhn");
        assert_eq!(
            run.score_path(DetectorKind::Mahalanobis, "lsun", 3, 0.0),
            Path::new("out/resnet_svhn/mahalanobis/lsun/eps_0.0.npz")
        );
        assert_eq!(
            run.score_path(DetectorKind::Resflow, FGSM, 3, 0.0014),
            Path::new("out/resnet_svhn/resflow/fgsm/layer_3/eps_0.0014.npz")
        );
        assert_eq!(
            run.test_scores_path(DetectorKind::Resflow, Validation::Fgsm, "lsun"),
            Path::new("out/resnet_svhn/regression/resflow_fgsm/lsun.npz")
        );
        assert_eq!(
            run.features().manifest_path(),
            Path::new("out/resnet_svhn/features/manifest.json")
        );
    }
}
