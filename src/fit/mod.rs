//! Fitting and judging a detector from its scores (`docs/method.md#the-regression-detector` and
//! `docs/method.md#paper-metrics`). The numeric core lives in the `resflow-fit` crate
//! (`crates/fit`, built optimised in the tests) and is re-exported here: scikit-learn's
//! cross-validated logistic regression ([`regression`], its folds in [`folds`]), the row splits
//! ([`splits`]), the metrics of the paper ([`metrics`]) and of OpenOOD ([`openood`]), and their
//! bootstrap intervals ([`bootstrap`]). This module adds the regression detector with magnitude
//! selection ([`detector`]). Everything here works on in-memory matrices; reading score files is
//! [`crate::pipeline::regress`].
pub mod detector;
pub use resflow_fit::{bootstrap, folds, metrics, openood, paired, regression, splits};

pub use detector::{evaluate_detector, DetectorResult, Validation};
pub use metrics::Metrics;
