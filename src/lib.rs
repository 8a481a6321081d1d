//! resflow: Deep Residual Flow (Zisselman & Tamar, CVPR 2020) and Mahalanobis (Lee et al. 2018)
//! out-of-distribution detection for image classifiers, on libtorch via `tch`.
//!
//! The modules follow the data, each depending only on those before it:
//!
//! | module | owns |
//! | --- | --- |
//! | [`data`] | image sets: readers, registry, batching, normalisation |
//! | [`models`] | classifiers: architectures, checkpoints, feature extraction, training |
//! | [`detect`] | detectors: Gaussian statistics, input pre-processing, Mahalanobis, residual flow, FGSM |
//! | [`fit`] | the regression detector: logistic regression, splits, metrics |
//! | [`store`] | files on disk: a run's paths ([`store::RunDir`]) and artefact formats |
//! | [`bundle`] | the fitted detectors of a run as one deployable folder; [`bundle::OodDetector`] |
//! | [`pipeline`] | the stages, one file each: options, `run`, summary |
//! | [`report`] | tables and plots of the results |
//! | [`cli`] | the binaries' shared flags (clap), and the scoring binaries' `main` |
//!
//! beside the shared [`error`], [`io`] (atomic writes, `.npy`), [`device`] and [`progress`].
//! The binaries in `src/bin/` parse flags ([`cli`]), call a [`pipeline`] stage and print its
//! summary. What each stage computes, and why, is `docs/method.md`.
pub mod bundle;
pub mod cli;
pub mod data;
pub mod detect;
pub mod device;
pub mod error;
pub mod fit;
pub mod io;
pub mod models;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod store;

pub use error::{Error, Result};
