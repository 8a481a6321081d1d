//! resflow: Deep Residual Flow (Zisselman & Tamar, CVPR 2020) and Mahalanobis (Lee et al. 2018)
//! out-of-distribution detection for image classifiers, on libtorch via `tch`.
//!
//! The pipeline stages are binaries in `src/bin/`; this library holds everything they compute.
pub mod artefacts;
pub mod cli;
pub mod data;
pub mod detector;
pub mod device;
pub mod error;
pub mod features;
pub mod fgsm;
pub mod flow;
pub mod flow_stage;
pub mod gaussian;
pub mod io;
pub mod mahalanobis;
pub mod metrics;
pub mod models;
pub mod prepare;
pub mod progress;
pub mod regression;
pub mod report;
pub mod resflow_scores;
pub mod scoring;
pub mod splits;
pub mod stage;

pub use error::{Error, Result};
