//! The crate's single error type, [`ModelError`]. Every variant carries enough context (file, field,
//! expected and found values) to act on without a debugger. This module defines no behaviour.

use std::path::PathBuf;

/// Everything that can go wrong while building, training, saving, loading or applying a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A tensor operation failed inside candle (shape bug, allocation).
    #[error("tensor operation failed while {context}: {source}")]
    Tensor {
        /// What the model was doing.
        context: String,
        /// candle's error.
        #[source]
        source: candle_core::Error,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {field} = {value} ({reason})")]
    Config {
        /// The field.
        field: &'static str,
        /// Its value, as text.
        value: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The split or data cannot support meta-training (too few families, rows).
    #[error("cannot train: {0}")]
    Data(String),
    /// The core refused something (schema mismatch, normaliser).
    #[error(transparent)]
    Core(#[from] metaids_core::CoreError),
    /// Reading or writing a model file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A model file is malformed, corrupted or does not match what it must match.
    #[error("model file {path}: field `{field}`: {message}")]
    Format {
        /// The file.
        path: PathBuf,
        /// The manifest field or tensor name at fault.
        field: String,
        /// Expected versus found.
        message: String,
    },
    /// The model was trained on another dataset or feature schema than the data it is applied to.
    #[error("model {path} was trained on {expected} data (schema {expected_hash}), but the data is {found} (schema {found_hash}); train a model on this dataset")]
    SchemaMismatch {
        /// The model file (or `<memory>`).
        path: PathBuf,
        /// The model's dataset kind.
        expected: String,
        /// The model's feature-schema hash.
        expected_hash: String,
        /// The data's dataset kind.
        found: String,
        /// The data's feature-schema hash.
        found_hash: String,
    },
}

impl ModelError {
    /// Wraps a candle error with what was being done.
    pub fn tensor(context: impl Into<String>) -> impl FnOnce(candle_core::Error) -> ModelError {
        let context = context.into();
        move |source| ModelError::Tensor { context, source }
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, ModelError>;
