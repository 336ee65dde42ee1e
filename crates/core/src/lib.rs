//! metaids-core: the pure core of metaids.
//!
//! Dataset schemas, typed parsing of records, in-memory flow frames, preprocessing fit on training rows,
//! class-disjoint splits, episode sampling and detection metrics. Nothing here reads a file, opens a
//! socket or links a system library: callers hand it bytes and rows.

pub mod context;
pub mod duplicates;
pub mod episode;
pub mod frame;
pub mod metrics;
pub mod preprocess;
pub mod record;
pub mod schema;
pub mod split;
pub mod time;

pub use frame::{FlowFrame, RowSource};
pub use schema::{DatasetKind, FeatureLayout, FileFormat};

use schema::FileFormat as Format;

/// Errors of the pure core. Each carries what a user needs to fix the input.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// A name given on the command line or in a file is not one of the known ones.
    #[error("unknown {what} {found:?}: expected one of {expected}")]
    UnknownName {
        /// What was being named (dataset, format, …).
        what: &'static str,
        /// The name given.
        found: String,
        /// The accepted names.
        expected: &'static str,
    },
    /// A record has the wrong number of fields.
    #[error("expected {expected} fields, found {found}")]
    FieldCount {
        /// Fields the format has.
        expected: usize,
        /// Fields the record has.
        found: usize,
    },
    /// A field does not parse as its column requires.
    #[error("column {column:?}: expected {expected}, found {found}")]
    Field {
        /// The column's name as the file spells it.
        column: String,
        /// What the column holds.
        expected: &'static str,
        /// The offending value (truncated), or "an empty field".
        found: String,
    },
    /// A header lacks columns its format requires.
    #[error("{format} header lacks required column(s): {}", columns.join(", "))]
    MissingColumns {
        /// The format the header was read as.
        format: Format,
        /// The missing columns.
        columns: Vec<String>,
    },
    /// Data of one feature layout was given to something fit on another.
    #[error(
        "feature schema mismatch: {what} was built for {expected_kind} data (schema {expected_hash:.12}), \
         but this data is {found_kind} (schema {found_hash:.12}); use data of the same dataset kind or refit"
    )]
    SchemaMismatch {
        /// What refused the data (a normaliser, a model).
        what: &'static str,
        /// Kind it was built for.
        expected_kind: DatasetKind,
        /// Schema hash it was built for.
        expected_hash: String,
        /// Kind of the data given.
        found_kind: DatasetKind,
        /// Schema hash of the data given.
        found_hash: String,
    },
    /// A split file is invalid.
    #[error("split file: {0}")]
    Split(String),
    /// Preprocessing was asked to fit on no rows, or given bad parameters.
    #[error("preprocessing: {0}")]
    Preprocess(String),
    /// A serialised object (split file, normaliser) does not parse.
    #[error("cannot parse {what}: {message}")]
    Parse {
        /// What was being parsed.
        what: &'static str,
        /// The parser's message, with its line and column.
        message: String,
    },
}
