//! Detector parameters: one validated value per kind ([`DetectorParams`]), the one constructor
//! path from parameters to a fitted detector ([`DetectorParams::fit`]) and back from a saved
//! state ([`DetectorParams::restore`]), for the scoring stages and saved detectors alike.
//!
//! Each kind's parameters implement [`Fit`] in the kind's own file; the `match`es here are
//! exhaustive, so a new kind in [`DetectorKind`] makes the compiler name each place to fill.
use serde::{Deserialize, Serialize};
use tch::Device;

use super::contract::{DetectorState, FittedDetector, TrainingData};
use super::entropy::GenParams;
use super::fdbd::FdbdParams;
use super::knn::KnnParams;
use super::logit::LogitScore;
use super::mahalanobis::MahalanobisParams;
use super::nnguide::NnguideParams;
use super::odin::OdinParams;
use super::resflow::ResflowParams;
use super::rmds::RmdsParams;
use super::shaping::{AshParams, ReactParams, ScaleParams};
use super::vim::VimParams;
use super::DetectorKind;
use crate::error::{Error, Result};

/// What every kind's parameters can do (after linfa's `ParamGuard` + `Fit`): check themselves,
/// fit a detector on training data, and rebuild a fitted detector from its saved state.
pub trait Fit {
    /// Checks the values that need no data (ranges, non-empty lists); an
    /// [`Error::BadOption`] names the parameter.
    fn check(&self) -> Result<()>;

    /// The input pre-processing magnitudes the detector is scored at
    /// (`docs/method.md#input-pre-processing`); `[0]` for none.
    fn magnitudes(&self) -> Vec<f64> {
        vec![0.0]
    }

    /// The temperature of each score variant, for detectors whose variants are temperatures.
    fn temperatures(&self) -> Option<&[f64]> {
        None
    }

    /// Fits the detector on `data` (parameters already checked).
    fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>>;

    /// The fitted detector saved as `state`, on `device`.
    fn restore(&self, state: &DetectorState, device: Device) -> Result<Box<dyn FittedDetector>>;
}

/// A detector's hyper-parameters; the JSON form carries the kind's name as `"kind"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum DetectorParams {
    /// [`DetectorKind::Msp`] (no parameters).
    Msp,
    /// [`DetectorKind::Odin`].
    Odin(OdinParams),
    /// [`DetectorKind::Energy`] (no parameters).
    Energy,
    /// [`DetectorKind::MaxLogit`] (no parameters).
    MaxLogit,
    /// [`DetectorKind::Knn`].
    Knn(KnnParams),
    /// [`DetectorKind::Vim`].
    Vim(VimParams),
    /// [`DetectorKind::Rmds`] (no parameters).
    Rmds,
    /// [`DetectorKind::React`].
    React(ReactParams),
    /// [`DetectorKind::Ash`].
    Ash(AshParams),
    /// [`DetectorKind::Scale`].
    Scale(ScaleParams),
    /// [`DetectorKind::Gen`].
    Gen(GenParams),
    /// [`DetectorKind::Fdbd`] (no parameters).
    Fdbd,
    /// [`DetectorKind::Nnguide`].
    Nnguide(NnguideParams),
    /// [`DetectorKind::Mahalanobis`].
    Mahalanobis(MahalanobisParams),
    /// [`DetectorKind::Resflow`].
    Resflow(ResflowParams),
}

impl DetectorParams {
    /// The defaults of `kind` (the reference's, or the method's published ones).
    pub fn default_for(kind: DetectorKind) -> DetectorParams {
        match kind {
            DetectorKind::Msp => DetectorParams::Msp,
            DetectorKind::Odin => DetectorParams::Odin(OdinParams::default()),
            DetectorKind::Energy => DetectorParams::Energy,
            DetectorKind::MaxLogit => DetectorParams::MaxLogit,
            DetectorKind::Knn => DetectorParams::Knn(KnnParams::default()),
            DetectorKind::Vim => DetectorParams::Vim(VimParams::default()),
            DetectorKind::Rmds => DetectorParams::Rmds,
            DetectorKind::React => DetectorParams::React(ReactParams::default()),
            DetectorKind::Ash => DetectorParams::Ash(AshParams::default()),
            DetectorKind::Scale => DetectorParams::Scale(ScaleParams::default()),
            DetectorKind::Gen => DetectorParams::Gen(GenParams::default()),
            DetectorKind::Fdbd => DetectorParams::Fdbd,
            DetectorKind::Nnguide => DetectorParams::Nnguide(NnguideParams::default()),
            DetectorKind::Mahalanobis => DetectorParams::Mahalanobis(MahalanobisParams::default()),
            DetectorKind::Resflow => DetectorParams::Resflow(ResflowParams::default()),
        }
    }

    /// Which detector these parameters are for.
    pub fn kind(&self) -> DetectorKind {
        match self {
            DetectorParams::Msp => DetectorKind::Msp,
            DetectorParams::Odin(_) => DetectorKind::Odin,
            DetectorParams::Energy => DetectorKind::Energy,
            DetectorParams::MaxLogit => DetectorKind::MaxLogit,
            DetectorParams::Knn(_) => DetectorKind::Knn,
            DetectorParams::Vim(_) => DetectorKind::Vim,
            DetectorParams::Rmds => DetectorKind::Rmds,
            DetectorParams::React(_) => DetectorKind::React,
            DetectorParams::Ash(_) => DetectorKind::Ash,
            DetectorParams::Scale(_) => DetectorKind::Scale,
            DetectorParams::Gen(_) => DetectorKind::Gen,
            DetectorParams::Fdbd => DetectorKind::Fdbd,
            DetectorParams::Nnguide(_) => DetectorKind::Nnguide,
            DetectorParams::Mahalanobis(_) => DetectorKind::Mahalanobis,
            DetectorParams::Resflow(_) => DetectorKind::Resflow,
        }
    }

    /// The kind's [`Fit`] implementation.
    fn as_fit(&self) -> &dyn Fit {
        match self {
            DetectorParams::Msp => &LogitScore::Msp,
            DetectorParams::Odin(p) => p,
            DetectorParams::Energy => &LogitScore::Energy,
            DetectorParams::MaxLogit => &LogitScore::MaxLogit,
            DetectorParams::Knn(p) => p,
            DetectorParams::Vim(p) => p,
            DetectorParams::Rmds => &RmdsParams,
            DetectorParams::React(p) => p,
            DetectorParams::Ash(p) => p,
            DetectorParams::Scale(p) => p,
            DetectorParams::Gen(p) => p,
            DetectorParams::Fdbd => &FdbdParams,
            DetectorParams::Nnguide(p) => p,
            DetectorParams::Mahalanobis(p) => p,
            DetectorParams::Resflow(p) => p,
        }
    }

    /// Checks the values ([`Fit::check`]).
    pub fn check(&self) -> Result<()> {
        self.as_fit().check()
    }

    /// The magnitudes the detector is scored at ([`Fit::magnitudes`]).
    pub fn magnitudes(&self) -> Vec<f64> {
        self.as_fit().magnitudes()
    }

    /// The temperature of each score variant, if its variants are temperatures.
    pub fn temperatures(&self) -> Option<&[f64]> {
        self.as_fit().temperatures()
    }

    /// Checks the parameters, then fits the detector on `data`: the one way every stage builds
    /// a detector.
    pub fn fit(&self, data: &dyn TrainingData) -> Result<Box<dyn FittedDetector>> {
        self.check()?;
        self.as_fit().fit(data)
    }

    /// The fitted detector saved as `state` ([`super::contract::load_detector`]), on `device`.
    pub fn restore(
        &self,
        state: &DetectorState,
        device: Device,
    ) -> Result<Box<dyn FittedDetector>> {
        self.as_fit().restore(state, device)
    }
}

/// Checks a list of input pre-processing magnitudes: at least one, each finite and `>= 0`.
pub fn check_magnitudes(option: &str, magnitudes: &[f64]) -> Result<()> {
    if magnitudes.is_empty() {
        return Err(Error::bad_option(option, "needs at least one magnitude"));
    }
    if let Some(m) = magnitudes.iter().find(|m| !m.is_finite() || **m < 0.0) {
        return Err(Error::bad_option(
            option,
            format!("magnitude {m} is not a finite number >= 0"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_of_their_kind() {
        for &kind in DetectorKind::ALL {
            let p = DetectorParams::default_for(kind);
            assert_eq!(p.kind(), kind);
            p.check().unwrap();
            assert!(!p.magnitudes().is_empty());
        }
    }

    #[test]
    fn params_round_trip_through_json_with_the_kind_named() {
        for &kind in DetectorKind::ALL {
            let p = DetectorParams::default_for(kind);
            let json = serde_json::to_value(&p).unwrap();
            assert_eq!(json["kind"], kind.name(), "{json}");
            assert_eq!(serde_json::from_value::<DetectorParams>(json).unwrap(), p);
        }
    }

    #[test]
    fn magnitudes_must_be_finite_and_not_negative() {
        assert!(check_magnitudes("m", &[0.0, 0.01]).is_ok());
        for bad in [&[][..], &[-0.1], &[f64::NAN]] {
            let Err(Error::BadOption { option, .. }) = check_magnitudes("m", bad) else {
                panic!("{bad:?} accepted");
            };
            assert_eq!(option, "m");
        }
    }
}
