//! The service's errors: each names the file, setting or line it is about.

use std::path::PathBuf;

/// What can stop the service from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting is missing or out of range.
    #[error("setting {field}: {message}")]
    Config {
        /// The setting (or the config file).
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A line of the tokens file.
    #[error("{path}:{line}: {message}")]
    Tokens {
        /// The tokens file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model.
    #[error("model {path}: {source}")]
    Model {
        /// The model directory.
        path: PathBuf,
        /// The cause.
        source: Box<metaids_model::ModelError>,
    },
    /// The threat library.
    #[error(transparent)]
    Library(Box<metaids_library::LibraryError>),
    /// Detection.
    #[error(transparent)]
    Detect(Box<metaids_detect::DetectError>),
}

impl From<metaids_library::LibraryError> for ServeError {
    fn from(e: metaids_library::LibraryError) -> Self {
        ServeError::Library(Box::new(e))
    }
}

impl From<metaids_detect::DetectError> for ServeError {
    fn from(e: metaids_detect::DetectError) -> Self {
        ServeError::Detect(Box::new(e))
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, ServeError>;
