//! The JSON exchange document (`metaids threat export` / `import`), so teams share threats the way they
//! share IoCs: format and version, the model identity the prototypes belong to, and the threats with
//! provenance. Parsing and validation only; the store applies an import in one transaction.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{LibraryError, Result};
use crate::store::ModelIdentity;
use crate::threat::{check_flows, check_name, check_severity, Threat};

/// `format` of an exchange document.
pub const DOCUMENT_FORMAT: &str = "metaids-threats";
/// `format_version` this build writes and reads.
pub const DOCUMENT_VERSION: u32 = 1;

/// An exported library version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatDocument {
    /// Always [`DOCUMENT_FORMAT`].
    pub format: String,
    /// Always [`DOCUMENT_VERSION`].
    pub format_version: u32,
    /// The model the prototypes belong to; an import into a library of another model is refused.
    pub model: ModelIdentity,
    /// The library version exported.
    pub library_version: u64,
    /// When (RFC 3339 UTC).
    pub exported_at: String,
    /// The threats.
    pub threats: Vec<Threat>,
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// The new library version.
    pub version: u64,
    /// Names added.
    pub added: Vec<String>,
    /// Names replaced (`--replace`).
    pub replaced: Vec<String>,
}

fn doc_err(path: &Path, field: impl Into<String>, message: impl Into<String>) -> LibraryError {
    LibraryError::Document {
        path: path.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

impl ThreatDocument {
    /// Parses a document, checking its format and version first so an unrelated JSON file gets a
    /// plain message rather than a missing-field one.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            doc_err(
                path,
                "<json>",
                format!("line {}, column {}: {e}", e.line(), e.column()),
            )
        })?;
        match raw.get("format").and_then(serde_json::Value::as_str) {
            Some(DOCUMENT_FORMAT) => {}
            Some(other) => {
                return Err(doc_err(
                    path,
                    "format",
                    format!("{other:?}, expected {DOCUMENT_FORMAT:?}"),
                ))
            }
            None => {
                return Err(doc_err(
                    path,
                    "format",
                    format!("missing: not a metaids threat export (expected {DOCUMENT_FORMAT:?})"),
                ))
            }
        }
        match raw
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
        {
            Some(v) if v == u64::from(DOCUMENT_VERSION) => {}
            Some(v) => {
                return Err(doc_err(
                    path,
                    "format_version",
                    format!("{v}, this build reads version {DOCUMENT_VERSION}"),
                ))
            }
            None => return Err(doc_err(path, "format_version", "missing or not a number")),
        }
        serde_json::from_value(raw).map_err(|e| doc_err(path, "<document>", e.to_string()))
    }

    /// Checks every threat: name, severity, unique names and ids, prototypes and flows of the
    /// model's embedding size, finite values, signature ids.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let dim = self.model.dim;
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (i, t) in self.threats.iter().enumerate() {
            let at = |field: &str| format!("threats[{i}].{field}");
            let wrap = |e: LibraryError| match e {
                LibraryError::Invalid { field, message } => doc_err(path, at(&field), message),
                other => other,
            };
            check_name(&t.name).map_err(wrap)?;
            check_severity(t.severity).map_err(wrap)?;
            if !names.insert(t.name.as_str()) {
                return Err(doc_err(
                    path,
                    at("name"),
                    format!("{:?} appears twice", t.name),
                ));
            }
            if !ids.insert(t.id) {
                return Err(doc_err(path, at("id"), format!("{} appears twice", t.id)));
            }
            if t.prototypes.is_empty() {
                return Err(doc_err(path, at("prototypes"), "empty"));
            }
            for (j, p) in t.prototypes.iter().enumerate() {
                if p.len() != dim || p.iter().any(|v| !v.is_finite()) {
                    return Err(doc_err(
                        path,
                        at(&format!("prototypes[{j}]")),
                        format!("{} values, expected {dim} finite values", p.len()),
                    ));
                }
            }
            if !t.threshold.is_finite() {
                return Err(doc_err(path, at("threshold"), "not a finite number"));
            }
            check_flows("support", &t.support, dim).map_err(wrap)?;
            check_flows("negatives", &t.negatives, dim).map_err(wrap)?;
        }
        Ok(())
    }
}

/// Writes `bytes` to a temporary sibling of `path`, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |p: &Path| {
        let p: PathBuf = p.to_path_buf();
        move |source| LibraryError::Io { path: p, source }
    };
    let name = path
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
        std::io::Write::write_all(&mut &f, bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
