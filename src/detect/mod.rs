//! The detectors: what turns a classifier's features into OOD scores.
//!
//! Every detector follows one contract ([`contract`]): validated parameters ([`DetectorParams`])
//! are fitted on in-distribution training data ([`TrainingData`]) into a [`FittedDetector`] that
//! scores a batch and saves and loads the same way for every kind. The kinds are listed once, in
//! the registry ([`kind`]).
//!
//! - [`gaussian`]: class means, whitening and tied precision of a layer's train features
//!   (`docs/method.md#class-statistics-and-whitening`);
//! - [`preprocess`]: input pre-processing, one gradient per batch and layer reused for every
//!   magnitude (`docs/method.md#input-pre-processing`);
//! - the regression detectors [`mahalanobis`] and [`resflow`], with [`flow`]: the residual flow
//!   model, its checkpoints and its trainer (`docs/method.md#the-residual-flow`);
//! - the post-hoc detectors (`docs/method.md#baseline-detectors`): [`logit`] (MSP, Energy,
//!   MaxLogit), [`odin`], [`knn`], [`vim`], and OpenOOD's leaderboard: [`rmds`], [`shaping`]
//!   (ReAct, ASH, SCALE), [`entropy`] (GEN), [`fdbd`], [`nnguide`]; the classifier's last layer is in
//!   [`head`];
//! - [`fgsm`]: FGSM adversarial and noisy samples for validation without OOD data
//!   (`docs/method.md#fgsm-samples`).
pub mod contract;
pub mod entropy;
pub mod fdbd;
pub mod fgsm;
pub mod flow;
pub mod gaussian;
pub mod head;
pub mod kind;
pub mod knn;
pub mod logit;
pub mod mahalanobis;
pub mod nnguide;
pub mod odin;
pub mod params;
pub mod preprocess;
pub mod resflow;
pub mod rmds;
pub mod shaping;
pub mod vim;

pub use contract::{
    load_detector, save_detector, DetectorState, FittedDetector, TrainedFlow, TrainingData,
};
pub use kind::{DetectorKind, Evaluation, ScoreLayout, BASELINES_STAGE};
pub use params::DetectorParams;
pub use preprocess::ScoreFn;

/// The input pre-processing magnitudes of `docs/method.md#input-pre-processing`, in the
/// reference's order.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitudes_are_named_like_python_floats() {
        let names: Vec<String> = MAGNITUDES.iter().map(|&e| eps_name(e)).collect();
        assert_eq!(
            names,
            ["0.0", "0.01", "0.005", "0.002", "0.0014", "0.001", "0.0005"]
        );
    }
}
