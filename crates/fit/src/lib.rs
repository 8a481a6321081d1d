//! The numeric core of fitting and judging a detector from its scores
//! (`docs/method.md#the-regression-detector` and `docs/method.md#paper-metrics`), on in-memory
//! matrices and score lists: scikit-learn's cross-validated logistic regression ([`regression`],
//! its folds in [`folds`]), the row splits ([`splits`]), the metrics of the paper ([`metrics`]) and
//! of OpenOOD ([`openood`]), their bootstrap intervals ([`bootstrap`]) and the paired comparison of
//! two detectors on the same rows ([`paired`]). No libtorch, no files.
//!
//! `resflow` re-exports these modules as `resflow::fit::*`; the regression detector that uses them
//! (magnitude selection, validation rules) is `resflow::fit::detector`.
pub mod bootstrap;
pub mod folds;
mod logistic;
pub mod metrics;
pub mod openood;
pub mod paired;
pub mod regression;
pub mod splits;

/// What the fitting code reports: input that cannot be fitted or judged, with the reason.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting with a value it cannot take; `option` names the parameter (`n_splits`,
    /// `bootstrap.resamples`, ...).
    #[error("{option}: {message}")]
    BadOption { option: String, message: String },
    /// Arrays whose sizes do not fit together (rows and labels, columns and coefficients).
    #[error("{0}")]
    Shape(String),
    /// Values that cannot be fitted or judged: NaN or infinite values, too few rows, one label
    /// only, no scores.
    #[error("{0}")]
    BadData(String),
}

impl Error {
    /// An [`Error::BadOption`] for `option`.
    pub fn bad_option(option: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadOption {
            option: option.into(),
            message: message.into(),
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
