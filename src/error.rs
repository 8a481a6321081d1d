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
    /// A request that cannot be satisfied (bad argument combination).
    #[error("{0}")]
    Invalid(String),
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

    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
