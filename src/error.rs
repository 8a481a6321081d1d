//! The library's error type: every variant names the file or dataset it is about.
use std::path::PathBuf;

/// Errors raised by the resflow library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file exists but does not hold what was expected.
    #[error("{}: {message}", path.display())]
    Format { path: PathBuf, message: String },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A dataset's files are not where the registry expects them.
    #[error("dataset `{name}`: {missing} not found under {}.\nExpected layout:\n{layout}", root.display())]
    MissingDataset {
        name: String,
        root: PathBuf,
        missing: String,
        layout: String,
    },
    /// A dataset name the registry does not know.
    #[error("unknown dataset `{name}`; known datasets: {known}")]
    UnknownDataset { name: String, known: String },
    /// An artefact a stage needs is not there: the stage that makes it has not run, or its
    /// output was removed. The message says which stage writes it.
    #[error("{}: {message}", path.display())]
    MissingArtefact { path: PathBuf, message: String },
    /// An artefact made from other inputs than those in use (another classifier, other
    /// features, another run's files). The message names what differs and the stage to rerun.
    #[error("{}: {message}", path.display())]
    Provenance { path: PathBuf, message: String },
    /// Arrays or sizes that do not fit together (rows, columns, classes, layers).
    #[error("{0}")]
    Shape(String),
    /// An option or hyper-parameter with a value it cannot take; `option` names it as the user
    /// gave it (a flag such as `--knn-k`, or a parameter such as `knn.k`).
    #[error("{option}: {message}")]
    BadOption { option: String, message: String },
    /// Data whose values cannot be used (NaN or infinite values, too few rows, an empty class).
    #[error("{0}")]
    BadData(String),
    /// Scores or settings the detector's fitting code (`resflow-fit`) cannot use.
    #[error(transparent)]
    Fit(#[from] resflow_fit::Error),
    /// Flow training produced a NaN or infinite loss; nothing was updated with it.
    #[error("non-finite loss ({loss}) at iteration {iteration}, class {class}, batch {batch}: training stopped")]
    NonFiniteLoss {
        iteration: usize,
        class: usize,
        batch: usize,
        loss: f64,
    },
    /// An error reported by libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Result alias for the library.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A [`Error::Format`] for `path`.
    pub fn format(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            message: message.into(),
        }
    }

    /// The same error naming `to` where it named `from` (a temporary file that the user never
    /// sees is reported as the file being written).
    pub fn renamed(self, from: &std::path::Path, to: &std::path::Path) -> Self {
        match self {
            Error::Format { path, message } if path == from => Error::Format {
                path: to.to_path_buf(),
                message,
            },
            Error::Io { path, source } if path == from => Error::Io {
                path: to.to_path_buf(),
                source,
            },
            other => other,
        }
    }

    /// The same error with `hint` on a line of its own after its message, for the kinds that
    /// name a file (a missing artefact, a provenance mismatch, a file's content); others are
    /// returned as they are.
    pub fn with_hint(self, hint: &str) -> Self {
        let add = |message: String| format!("{message}\n{hint}");
        match self {
            Error::MissingArtefact { path, message } => Error::missing(path, add(message)),
            Error::Provenance { path, message } => Error::provenance(path, add(message)),
            Error::Format { path, message } => Error::format(path, add(message)),
            other @ (Error::Io { .. }
            | Error::MissingDataset { .. }
            | Error::UnknownDataset { .. }
            | Error::Shape(_)
            | Error::BadOption { .. }
            | Error::BadData(_)
            | Error::Fit(_)
            | Error::NonFiniteLoss { .. }
            | Error::Torch(_)) => other,
        }
    }

    /// An [`Error::MissingArtefact`] for `path`.
    pub fn missing(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::MissingArtefact {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Provenance`] for `path`.
    pub fn provenance(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Provenance {
            path: path.into(),
            message: message.into(),
        }
    }

    /// An [`Error::BadOption`] for `option`.
    pub fn bad_option(option: impl Into<String>, message: impl Into<String>) -> Self {
        Error::BadOption {
            option: option.into(),
            message: message.into(),
        }
    }

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
