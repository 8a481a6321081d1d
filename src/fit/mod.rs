//! Fitting and judging a detector from its scores (SPEC sections 8 and 10): scikit-learn's
//! cross-validated logistic regression ([`regression`]), the row splits ([`splits`]), the
//! regression detector with magnitude selection ([`detector`]), the metrics of the paper
//! ([`metrics`]) and of OpenOOD ([`openood`]), and their bootstrap intervals ([`bootstrap`]).
//! Everything here works on in-memory matrices; reading score files is [`crate::pipeline::regress`].
pub mod bootstrap;
pub mod detector;
pub mod metrics;
pub mod openood;
pub mod regression;
pub mod splits;

pub use detector::{evaluate_detector, DetectorResult, Validation};
pub use metrics::Metrics;
