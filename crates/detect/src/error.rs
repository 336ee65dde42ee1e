//! The detector's error type: one enum whose variants name the file, threat, field or sink involved.
//! It defines no behaviour.

use std::path::PathBuf;

/// Everything that can go wrong while arming threats, scoring flows or writing outputs.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// A threat cannot be armed: inconsistent with the model or with itself.
    #[error("cannot arm the threats: {0}")]
    Threat(#[from] metaids_decide::DecideError),
    /// The model's identity could not be computed, or threats could not be read.
    #[error(transparent)]
    Library(Box<metaids_library::LibraryError>),
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The model failed (embedding, schema check).
    #[error("model: {context}: {source}")]
    Model {
        /// What the detector was doing.
        context: &'static str,
        /// The cause.
        source: Box<metaids_model::ModelError>,
    },
    /// Preprocessing failed (a frame of another schema).
    #[error("preprocessing: {0}")]
    Preprocess(#[from] metaids_core::CoreError),
    /// An option has an unusable value.
    #[error("option {field}: {message}")]
    Config {
        /// The option.
        field: &'static str,
        /// Expected vs found.
        message: String,
    },
    /// A capture could not be read (bad header, invalid flow settings).
    #[error("capture {name}: {source}")]
    Capture {
        /// The capture's name (its path).
        name: String,
        /// What failed, kept whole (offset, kind, I/O cause).
        #[source]
        source: metaids_flow::FlowError,
    },
    /// A sink failed to write.
    #[error("sink {sink}: {message}")]
    Sink {
        /// The sink's name.
        sink: String,
        /// What failed.
        message: String,
    },
}

/// Result alias of this crate.
pub type Result<T, E = DetectError> = std::result::Result<T, E>;

impl From<metaids_library::LibraryError> for DetectError {
    fn from(e: metaids_library::LibraryError) -> Self {
        DetectError::Library(Box::new(e))
    }
}

impl DetectError {
    /// Wraps an I/O error with its path.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DetectError {
        let path = path.into();
        move |source| DetectError::Io { path, source }
    }

    /// Wraps a model error with what the detector was doing.
    pub fn model(context: &'static str) -> impl FnOnce(metaids_model::ModelError) -> DetectError {
        move |source| DetectError::Model {
            context,
            source: Box::new(source),
        }
    }
}
