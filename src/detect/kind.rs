//! The registry of detector kinds: every detector the pipeline knows, with its name, its label,
//! the stage that scores it, how its score files are laid out and how its scores are evaluated.
//!
//! [`DetectorKind::ALL`] is derived from the enum itself, and every property comes from one
//! exhaustive `match` ([`DetectorKind::info`]): a new kind is a new variant here, and the compiler
//! then names every other place that must handle it (its parameters in
//! [`super::params::DetectorParams`]). See the README's "Adding a detector".
use serde::{Deserialize, Serialize};
use strum::VariantArray;

/// How a detector's score files are laid out and become the evaluation's features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreLayout {
    /// One file per (set, magnitude), `[N, L * V]`: one column per (layer, variant), each the
    /// best class score of that layer.
    LayerColumns,
    /// One file per (set, layer, magnitude), `[N, C]`: every class score of the layer; the
    /// regression uses their maximum.
    ClassScoresPerLayer,
}

/// How a detector's scores become the figures of `rf-regress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evaluation {
    /// A logistic regression on one column per layer, its magnitude chosen on validation rows
    /// (`docs/method.md#the-regression-detector`).
    Regression,
    /// The score itself is the confidence; validation rows only choose among the score's
    /// variants and magnitudes (`docs/method.md#baseline-detectors`).
    Direct,
}

/// Everything the pipeline needs to know about a kind of detector, apart from its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The folder name and command-line spelling.
    pub name: &'static str,
    /// The name printed in tables and plots.
    pub label: &'static str,
    /// The binary that writes its score files.
    pub stage: &'static str,
    /// How its score files are laid out.
    pub layout: ScoreLayout,
    /// How its scores are evaluated.
    pub evaluation: Evaluation,
}

/// The binary that scores the post-hoc detectors (one score on the penultimate layer).
pub const BASELINES_STAGE: &str = "rf-baselines";

/// The detectors; each has its own score folder under a run.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, VariantArray,
)]
#[serde(rename_all = "lowercase")]
pub enum DetectorKind {
    /// Maximum softmax probability, the "Baseline" of Hendrycks & Gimpel 2017.
    Msp,
    /// ODIN (Liang et al. 2018): temperature scaling and input perturbation.
    Odin,
    /// The energy score (Liu et al. 2020) at temperature 1.
    Energy,
    /// The maximum logit (Hendrycks et al. 2022).
    MaxLogit,
    /// Deep nearest neighbours (Sun et al. 2022) on normalised penultimate features.
    Knn,
    /// Virtual-logit matching (Wang et al. 2022).
    Vim,
    /// Relative Mahalanobis distance (Ren et al. 2021).
    Rmds,
    /// ReAct (Sun et al. 2021): clipped activations, then the energy.
    React,
    /// ASH (Djurisic et al. 2023): activation shaping, then the energy.
    Ash,
    /// SCALE (Xu et al. 2024): activation scaling, then the energy.
    Scale,
    /// GEN (Liu et al. 2023): generalised entropy of the softmax.
    Gen,
    /// fDBD (Liu & Qin 2024): feature distance to the decision boundaries.
    Fdbd,
    /// NNGuide (Park et al. 2023): energy guided by nearest training neighbours.
    Nnguide,
    /// Lee et al.'s Mahalanobis detector.
    Mahalanobis,
    /// The residual flow (Zisselman & Tamar 2020).
    Resflow,
}

impl DetectorKind {
    /// Every detector, in table order (the order of the enum): the post-hoc baselines, then the
    /// two regression detectors.
    pub const ALL: &'static [DetectorKind] = <DetectorKind as VariantArray>::VARIANTS;

    /// The kind's properties.
    pub fn info(self) -> KindInfo {
        use Evaluation::{Direct, Regression};
        use ScoreLayout::{ClassScoresPerLayer, LayerColumns};
        let baseline = |name, label| KindInfo {
            name,
            label,
            stage: BASELINES_STAGE,
            layout: LayerColumns,
            evaluation: Direct,
        };
        match self {
            DetectorKind::Msp => baseline("msp", "MSP"),
            DetectorKind::Odin => baseline("odin", "ODIN"),
            DetectorKind::Energy => baseline("energy", "Energy"),
            DetectorKind::MaxLogit => baseline("maxlogit", "MaxLogit"),
            DetectorKind::Knn => baseline("knn", "KNN"),
            DetectorKind::Vim => baseline("vim", "ViM"),
            DetectorKind::Rmds => baseline("rmds", "RMDS"),
            DetectorKind::React => baseline("react", "ReAct"),
            DetectorKind::Ash => baseline("ash", "ASH"),
            DetectorKind::Scale => baseline("scale", "SCALE"),
            DetectorKind::Gen => baseline("gen", "GEN"),
            DetectorKind::Fdbd => baseline("fdbd", "fDBD"),
            DetectorKind::Nnguide => baseline("nnguide", "NNGuide"),
            DetectorKind::Mahalanobis => KindInfo {
                name: "mahalanobis",
                label: "Mahalanobis",
                stage: "rf-mahalanobis",
                layout: LayerColumns,
                evaluation: Regression,
            },
            DetectorKind::Resflow => KindInfo {
                name: "resflow",
                label: "Residual flow",
                stage: "rf-score",
                layout: ClassScoresPerLayer,
                evaluation: Regression,
            },
        }
    }

    /// The folder name (and command-line spelling).
    pub fn name(self) -> &'static str {
        self.info().name
    }

    /// The name printed in tables and plots.
    pub fn label(self) -> &'static str {
        self.info().label
    }

    /// The binary that writes this detector's score files.
    pub fn stage(self) -> &'static str {
        self.info().stage
    }

    /// How its score files are laid out.
    pub fn layout(self) -> ScoreLayout {
        self.info().layout
    }

    /// How its scores are evaluated.
    pub fn evaluation(self) -> Evaluation {
        self.info().evaluation
    }

    /// The kinds scored by the binary `stage` (e.g. [`BASELINES_STAGE`]), in table order.
    pub fn scored_by(stage: &str) -> Vec<DetectorKind> {
        Self::ALL
            .iter()
            .copied()
            .filter(|k| k.stage() == stage)
            .collect()
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
            .iter()
            .copied()
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
        for &d in DetectorKind::ALL {
            assert_eq!(d.name().parse::<DetectorKind>(), Ok(d));
        }
        assert_eq!(
            "MaxLogit".parse::<DetectorKind>(),
            Ok(DetectorKind::MaxLogit)
        );
        assert!("baseline".parse::<DetectorKind>().is_err());
    }

    #[test]
    fn names_and_labels_are_unique() {
        for (i, a) in DetectorKind::ALL.iter().enumerate() {
            for b in &DetectorKind::ALL[i + 1..] {
                assert_ne!(a.name(), b.name());
                assert_ne!(a.label(), b.label());
            }
        }
    }
}
