//! The detectors: what turns a classifier's features into OOD scores.
//!
//! - [`gaussian`]: class means, whitening and tied precision of a layer's train features (SPEC 3, 7);
//! - [`preprocess`]: input pre-processing, one gradient per batch and layer reused for every
//!   magnitude (SPEC 6);
//! - [`mahalanobis`] and [`resflow`]: the two regression [`Detector`]s; [`flow`]: the residual
//!   flow model, its checkpoints and its trainer (SPEC 4, 5);
//! - [`baselines`]: the post-hoc detectors MSP, ODIN, Energy, MaxLogit, KNN and ViM (SPEC 12);
//! - [`fgsm`]: FGSM adversarial and noisy samples for validation without OOD data (SPEC 9).
//!
//! A new detector is one file: a type implementing [`Detector`] plus its [`DetectorKind`] entry
//! (folder name, label, score layout); the scoring stage ([`crate::pipeline::score`]), the score
//! files ([`crate::store::RunDir::score_path`]) and the regression ([`crate::fit::detector`])
//! follow from those.
pub mod baselines;
pub mod fgsm;
pub mod flow;
pub mod gaussian;
pub mod mahalanobis;
pub mod preprocess;
pub mod resflow;

use serde::{Deserialize, Serialize};

use crate::error::Result;
pub use preprocess::ScoreFn;

/// The input pre-processing magnitudes of SPEC section 6, in the reference's order.
pub const MAGNITUDES: [f64; 7] = [0.0, 0.01, 0.005, 0.002, 0.0014, 0.001, 0.0005];

/// A magnitude `eps` written like Python's `str(float)` for the magnitudes used here: `0.0`, `0.0014`.
pub fn eps_name(eps: f64) -> String {
    let s = format!("{eps}");
    if s.contains('.') || s.contains('e') || !eps.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// A detector that scores the feature layers of a classifier: per layer (and variant), a
/// differentiable map from mean-pooled features `[N, d]` to class scores `[N, C]` (higher = more
/// in-distribution; the detector's score is their maximum), which the scoring stage runs with
/// input pre-processing. Detectors of a single score return `[N, 1]`.
pub trait Detector {
    /// Which detector this is: its score folder, label and file layout.
    fn kind(&self) -> DetectorKind;

    /// The feature layers it scores, ascending.
    fn layers(&self) -> Vec<usize>;

    /// Number of score variants per layer (ODIN: one per temperature), each a column of the
    /// score files of a [`ScoreLayout::LayerColumns`] detector; 1 for most detectors.
    fn variants(&self) -> usize {
        1
    }

    /// The class scores of feature layer `layer` (one of [`Detector::layers`]) in variant
    /// `variant` (below [`Detector::variants`]), ready on the detector's device.
    fn layer_scores(&self, layer: usize, variant: usize) -> Result<Box<ScoreFn<'_>>>;
}

/// How a detector's score files are laid out and become the regression's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreLayout {
    /// One file per (set, magnitude), `[N, L]`: column `l` is layer `l`'s best class score.
    LayerColumns,
    /// One file per (set, layer, magnitude), `[N, C]`: every class score of the layer; the
    /// regression uses their maximum.
    ClassScoresPerLayer,
}

/// The detectors; each has its own score folder under a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// Maximum softmax probability, the "Baseline" of Hendrycks & Gimpel 2017 (SPEC 12).
    Msp,
    /// ODIN (Liang et al. 2018): temperature scaling and input perturbation (SPEC 12).
    Odin,
    /// The energy score (Liu et al. 2020) at temperature 1 (SPEC 12).
    Energy,
    /// The maximum logit (Hendrycks et al. 2022) (SPEC 12).
    MaxLogit,
    /// Deep nearest neighbours (Sun et al. 2022) on normalised penultimate features (SPEC 12).
    Knn,
    /// Virtual-logit matching (Wang et al. 2022) (SPEC 12).
    Vim,
    /// Lee et al.'s Mahalanobis detector (SPEC section 7).
    Mahalanobis,
    /// The residual flow (SPEC sections 4-6).
    Resflow,
}

impl DetectorKind {
    /// Every detector, in table order: the post-hoc baselines, then the two regression detectors.
    pub const ALL: [DetectorKind; 8] = [
        DetectorKind::Msp,
        DetectorKind::Odin,
        DetectorKind::Energy,
        DetectorKind::MaxLogit,
        DetectorKind::Knn,
        DetectorKind::Vim,
        DetectorKind::Mahalanobis,
        DetectorKind::Resflow,
    ];

    /// The post-hoc baselines of SPEC 12 (scored by `rf-baselines`).
    pub const BASELINES: [DetectorKind; 6] = [
        DetectorKind::Msp,
        DetectorKind::Odin,
        DetectorKind::Energy,
        DetectorKind::MaxLogit,
        DetectorKind::Knn,
        DetectorKind::Vim,
    ];

    /// The folder name (and command-line spelling).
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Msp => "msp",
            DetectorKind::Odin => "odin",
            DetectorKind::Energy => "energy",
            DetectorKind::MaxLogit => "maxlogit",
            DetectorKind::Knn => "knn",
            DetectorKind::Vim => "vim",
            DetectorKind::Mahalanobis => "mahalanobis",
            DetectorKind::Resflow => "resflow",
        }
    }

    /// The name printed in tables and plots.
    pub fn label(self) -> &'static str {
        match self {
            DetectorKind::Msp => "MSP",
            DetectorKind::Odin => "ODIN",
            DetectorKind::Energy => "Energy",
            DetectorKind::MaxLogit => "MaxLogit",
            DetectorKind::Knn => "KNN",
            DetectorKind::Vim => "ViM",
            DetectorKind::Mahalanobis => "Mahalanobis",
            DetectorKind::Resflow => "Residual flow",
        }
    }

    /// The binary that writes this detector's score files.
    pub fn stage(self) -> &'static str {
        match self {
            DetectorKind::Mahalanobis => "rf-mahalanobis",
            DetectorKind::Resflow => "rf-score",
            _ => "rf-baselines",
        }
    }

    /// How its score files are laid out.
    pub fn layout(self) -> ScoreLayout {
        match self {
            DetectorKind::Resflow => ScoreLayout::ClassScoresPerLayer,
            _ => ScoreLayout::LayerColumns,
        }
    }

    /// Whether its layer scores feed the logistic regression of SPEC 8 (Mahalanobis, residual
    /// flow); the baselines' one score per row is evaluated as it is (SPEC 12).
    pub fn regression(self) -> bool {
        matches!(self, DetectorKind::Mahalanobis | DetectorKind::Resflow)
    }
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for DetectorKind {
    type Err = String;

    /// Parses a detector's [`DetectorKind::name`] (any case).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        DetectorKind::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                let names: Vec<&str> = DetectorKind::ALL.iter().map(|d| d.name()).collect();
                format!(
                    "unknown detector `{s}`; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detector_names_parse_back() {
        for d in DetectorKind::ALL {
            assert_eq!(d.name().parse::<DetectorKind>(), Ok(d));
        }
        assert_eq!(
            "MaxLogit".parse::<DetectorKind>(),
            Ok(DetectorKind::MaxLogit)
        );
        assert!("baseline".parse::<DetectorKind>().is_err());
    }

    #[test]
    fn magnitudes_are_named_like_python_floats() {
        let names: Vec<String> = MAGNITUDES.iter().map(|&e| eps_name(e)).collect();
        assert_eq!(
            names,
            ["0.0", "0.01", "0.005", "0.002", "0.0014", "0.001", "0.0005"]
        );
    }
}
