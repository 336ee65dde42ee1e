//! The crate's single error type, [`LibraryError`]. Every variant names the library (or document)
//! file and carries what was expected and what was found. This module defines no behaviour.

use std::path::PathBuf;

use metaids_decide::threat::EnrolmentReport;
use metaids_model::io::ModelIdentity;

/// Everything that can go wrong while creating, opening, changing, exporting or importing a library.
#[derive(Debug, thiserror::Error)]
pub enum LibraryError {
    /// The redb store failed (I/O, corruption it detected, a lock held by another process).
    #[error("threat library {path}: {context}: {source}")]
    Store {
        /// The library file.
        path: PathBuf,
        /// What was being done.
        context: &'static str,
        /// redb's error (boxed: it is large).
        #[source]
        source: Box<redb::Error>,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Feedback already recorded: the same flow confirmed (or rejected) twice changes nothing.
    #[error("threat library {path}: {flow} is already recorded that way for {threat:?} (version {version}): nothing to change")]
    AlreadyRecorded {
        /// The file.
        path: PathBuf,
        /// The threat.
        threat: String,
        /// The flow.
        flow: String,
        /// The current version.
        version: u64,
    },
    /// Feedback contradicting earlier feedback on the same flow.
    #[error("threat library {path}: {flow} was {was} for {threat:?} before; a flow cannot be both an example and a negative. Roll back the earlier feedback (`metaids threat history`, `threat rollback`) first")]
    Contradiction {
        /// The file.
        path: PathBuf,
        /// The threat.
        threat: String,
        /// The flow.
        flow: String,
        /// What was recorded before (`confirmed` or `rejected`).
        was: &'static str,
    },
    /// A change was asked of a library opened read-only.
    #[error("threat library {path} was opened read-only: open it for changes")]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// Another process held the library for longer than opening waits.
    #[error("threat library {path} is held by another metaids process (waited {waited_s:.1} s): try again once it finishes")]
    Busy {
        /// The file.
        path: PathBuf,
        /// Seconds waited.
        waited_s: f64,
    },
    /// `create` was asked to overwrite an existing file.
    #[error("threat library {path} already exists; open it instead (or choose another path)")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// `open` was given a path where no file exists.
    #[error("threat library {path} does not exist: `metaids threat add --library {path} --model M …` creates it with its first threat, `metaids threat import --library {path} DOC` from an exported document")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file is a redb database but not a metaids threat library of a format this build reads.
    #[error("{path} is not a metaids threat library this build reads: {message}")]
    NotALibrary {
        /// The file.
        path: PathBuf,
        /// Expected versus found.
        message: String,
    },
    /// A stored record does not parse or breaks an invariant (should never happen: redb commits are
    /// atomic; this means the file was altered by something else).
    #[error("threat library {path}: {record}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The record at fault (e.g. `version 12`).
        record: String,
        /// What is wrong.
        message: String,
    },
    /// The library (or an exported document) belongs to another model or feature schema.
    #[error("{path} was built for model {} ({} data, schema {}, {}-d embeddings), but {what} is model {} ({} data, schema {}, {}-d); prototypes of one model mean nothing to another: enrol the threats again with this model, or use the model the library was built for",
        expected.model, expected.dataset, expected.schema_hash, expected.dim,
        found.model, found.dataset, found.schema_hash, found.dim)]
    ModelMismatch {
        /// The library file (or document) whose model is `expected`.
        path: PathBuf,
        /// What was compared against it (`the model /x/cic.model`, `the document y.json`).
        what: String,
        /// The identity the library records.
        expected: Box<ModelIdentity>,
        /// The identity found.
        found: Box<ModelIdentity>,
    },
    /// The model crate refused something (reading the model's manifest, embedding).
    #[error(transparent)]
    Model(Box<metaids_model::ModelError>),
    /// No threat of that name in the current version.
    #[error(
        "threat library {path}: no threat named {name:?} in version {version} (threats: {known})"
    )]
    UnknownThreat {
        /// The file.
        path: PathBuf,
        /// The name asked for.
        name: String,
        /// The current version.
        version: u64,
        /// The names there are, comma-separated.
        known: String,
    },
    /// A threat of that name exists already.
    #[error("threat library {path}: a threat named {name:?} exists already (id {id}); remove it first, or import with --replace")]
    DuplicateName {
        /// The file.
        path: PathBuf,
        /// The name.
        name: String,
        /// The existing threat's id.
        id: u32,
    },
    /// No such library version.
    #[error("threat library {path}: no version {version} (versions 1 to {latest})")]
    UnknownVersion {
        /// The file.
        path: PathBuf,
        /// The version asked for.
        version: u64,
        /// The newest version.
        latest: u64,
    },
    /// Guarded enrolment refused the threat: flagging its support would flag more benign reference
    /// flows than the false-positive budget allows.
    #[error("enrolment of {name:?} refused: {}", report.summary())]
    Refused {
        /// The threat.
        name: String,
        /// The guard's figures.
        report: Box<EnrolmentReport>,
    },
    /// A baseline was asked for a library that has one, without asking to replace it.
    #[error("{} already has a baseline (from version {profile}, {flows_kept} flows, budget {budget}): pass --update (API: update=true) to learn a new one (the old one stays in the history)", path.display())]
    BaselineExists {
        /// The library file.
        path: PathBuf,
        /// The version whose profile is current.
        profile: u64,
        /// Flows it kept.
        flows_kept: usize,
        /// Its budget.
        budget: f64,
    },
    /// The baseline window looks like attack traffic: the library's threats flag most of it.
    #[error("{flagged} of the {total} baseline flows ({:.1}%) are flagged by the library's threats: the window looks like attack traffic, not the site's benign traffic. Choose another window, or pass --force (API: force=true)", 100.0 * *flagged as f64 / (*total).max(1) as f64)]
    AttackWindow {
        /// Flows a threat flags.
        flagged: usize,
        /// Flows in the window.
        total: usize,
    },
    /// A value given to the library is out of range or malformed.
    #[error("invalid {field}: {message}")]
    Invalid {
        /// The field (e.g. `severity`, `support[2].embedding`).
        field: String,
        /// Expected versus found.
        message: String,
    },
    /// An exported document does not parse or does not describe a library of this format.
    #[error("threat document {path}: {field}: {message}")]
    Document {
        /// The document.
        path: PathBuf,
        /// The field at fault (or `<json>` with line and column in the message).
        field: String,
        /// Expected versus found.
        message: String,
    },
}

impl From<metaids_decide::DecideError> for LibraryError {
    fn from(e: metaids_decide::DecideError) -> Self {
        match e {
            metaids_decide::DecideError::Invalid { field, message } => {
                LibraryError::Invalid { field, message }
            }
        }
    }
}

impl From<metaids_model::ModelError> for LibraryError {
    fn from(e: metaids_model::ModelError) -> Self {
        LibraryError::Model(Box::new(e))
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, LibraryError>;
