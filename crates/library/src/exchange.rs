//! The JSON exchange document (`metaids threat export` / `import`), so teams share threats the way they
//! share IoCs: format and version, the model identity the prototypes belong to, and the threats with
//! provenance. Parsing and validation only; the store applies an import in one transaction.

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{LibraryError, Result};
use metaids_decide::threat::Threat;
use metaids_decide::SiteProfile;
use metaids_model::io::ModelIdentity;

/// `format` of an exchange document.
pub const DOCUMENT_FORMAT: &str = "metaids-threats";
/// `format_version` this build writes for a document that carries a site profile, and the newest
/// it reads. Version 2 marks a profile whose rows are packed ([`metaids_decide::packed`]), which
/// builds that read only version 1 cannot parse: they refuse it by its version instead of failing
/// on a field. A document without a profile is written as [`DOCUMENT_VERSION_PLAIN`], which every
/// build reads.
pub const DOCUMENT_VERSION: u32 = 2;

/// `format_version` of a document without a site profile (and of every document written before
/// profiles were packed); read by this build too.
pub const DOCUMENT_VERSION_PLAIN: u32 = 1;

/// An exported library version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatDocument {
    /// Always [`DOCUMENT_FORMAT`].
    pub format: String,
    /// [`DOCUMENT_VERSION`] with a site profile, [`DOCUMENT_VERSION_PLAIN`] without
    /// ([`ThreatDocument::version_for`]).
    pub format_version: u32,
    /// The model the prototypes belong to; an import into a library of another model is refused.
    pub model: ModelIdentity,
    /// The library version exported.
    pub library_version: u64,
    /// The id of the library exported ([`crate::ThreatLibrary::id`]); absent in documents of
    /// older builds.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub library_id: String,
    /// When (RFC 3339 UTC).
    pub exported_at: String,
    /// The threats.
    pub threats: Vec<Threat>,
    /// The site profile the exported version was calibrated on (absent without a baseline, in
    /// documents of older builds, and in redacted documents: a profile describes one site).
    /// `detect --library DOC` decides with it; `threat import` adopts it into a library that has
    /// no baseline of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteProfile>,
    /// The site adaptation the threats' flows are embedded under (absent: the model as trained);
    /// kept in redacted documents, so an import into a library with another adaptation knows to
    /// embed the flows again from their feature values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<metaids_decide::NormaliserRefit>,
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
    /// The document's site profile became the library's (it had none).
    pub profile_adopted: bool,
    /// The document carried a site profile the library did not take (it keeps its own).
    pub profile_ignored: bool,
}

fn doc_err(path: &Path, field: impl Into<String>, message: impl Into<String>) -> LibraryError {
    LibraryError::Document {
        path: path.to_path_buf(),
        field: field.into(),
        message: message.into(),
    }
}

impl ThreatDocument {
    /// The `format_version` a document with (or without) a site profile is written as.
    pub fn version_for(site: Option<&SiteProfile>) -> u32 {
        if site.is_some() {
            DOCUMENT_VERSION
        } else {
            DOCUMENT_VERSION_PLAIN
        }
    }

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
            Some(v)
                if (u64::from(DOCUMENT_VERSION_PLAIN)..=u64::from(DOCUMENT_VERSION)).contains(&v) => {}
            Some(v) => {
                return Err(doc_err(
                    path,
                    "format_version",
                    format!(
                        "{v}, this build reads versions {DOCUMENT_VERSION_PLAIN} to {DOCUMENT_VERSION} \
                         (written by a newer metaids?)"
                    ),
                ))
            }
            None => return Err(doc_err(path, "format_version", "missing or not a number")),
        }
        serde_json::from_value(raw).map_err(|e| doc_err(path, "<document>", e.to_string()))
    }

    /// Reads, parses and validates the document at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| LibraryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let doc = Self::parse(&text, path)?;
        doc.validate(path)?;
        Ok(doc)
    }

    /// Refuses the document (at `path`) unless its threats were enrolled with `model`, whose
    /// identity is `found`: prototypes of one model mean nothing to another.
    pub fn check_model(
        &self,
        found: &ModelIdentity,
        path: &Path,
        model: &metaids_model::ThreatModel,
    ) -> Result<()> {
        let id = &self.model;
        if found.model != id.model || found.schema_hash != id.schema_hash || found.dim != id.dim {
            return Err(LibraryError::ModelMismatch {
                path: path.to_path_buf(),
                what: format!(
                    "the model {}",
                    model
                        .path
                        .as_ref()
                        .map_or_else(|| "<in memory>".into(), |p| p.display().to_string())
                ),
                expected: Box::new(id.clone()),
                found: Box::new(found.clone()),
            });
        }
        Ok(())
    }

    /// Checks every threat with [`Threat::validate`] (name, severity, id and signature id, prototypes
    /// and flows of the model's embedding size, finite values, caps on prototypes and examples) and
    /// that names and ids are unique.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let dim = self.model.dim;
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for (i, t) in self.threats.iter().enumerate() {
            let at = |field: &str| format!("threats[{i}].{field}");
            t.validate(dim).map_err(|e| match e {
                metaids_decide::DecideError::Invalid { field, message } => {
                    doc_err(path, at(&field), message)
                }
            })?;
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
        }
        if let Some(site) = &self.site {
            site.validate(dim).map_err(|e| match e {
                metaids_decide::DecideError::Invalid { field, message } => {
                    doc_err(path, format!("site.{field}"), message)
                }
            })?;
        }
        Ok(())
    }
}

/// Replaces every IP address (and `address:port`) in `text` with `redacted`.
fn redact_addresses(text: &str) -> String {
    let is_addr_char = |c: char| c.is_ascii_hexdigit() || c == '.' || c == ':';
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.parse::<std::net::IpAddr>().is_ok() || run.parse::<std::net::SocketAddr>().is_ok() {
            out.push_str("redacted");
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if is_addr_char(c) {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

impl ThreatDocument {
    /// The document with what a team should not share outside the site removed: each example's
    /// source keeps only its file name (no directories), and every IP address in a locator becomes
    /// `redacted`; the site profile is left out. Embeddings, prototypes and thresholds are untouched.
    pub fn redacted(mut self) -> Self {
        // The site profile describes this site's traffic (and names its chattiest addresses).
        self.site = None;
        self.format_version = Self::version_for(None);
        for t in &mut self.threats {
            // Each source path, longest first, with the name it is cut to.
            let mut paths: Vec<(String, String)> = Vec::new();
            for f in t.support.iter_mut().chain(t.negatives.iter_mut()) {
                let short = Path::new(&f.source)
                    .file_name()
                    .map_or_else(|| "redacted".into(), |n| n.to_string_lossy().into_owned());
                paths.push((std::mem::replace(&mut f.source, short.clone()), short));
                f.locator = redact_addresses(&f.locator);
            }
            paths.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
            paths.dedup();
            // The guard's report and the description quote sources too.
            let cut = |text: &str| -> String {
                let mut s = text.to_string();
                for (long, short) in &paths {
                    if !long.is_empty() {
                        s = s.replace(long.as_str(), short);
                    }
                }
                redact_addresses(&s)
            };
            for w in &mut t.report.weakest {
                *w = cut(w);
            }
            t.description = cut(&t.description);
        }
        self
    }
}

/// Writes `bytes` to `path` durably (`metaids_durable::write_atomic`: temporary sibling, sync,
/// rename; special files written through, symlinks followed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    metaids_durable::write_atomic(path, bytes).map_err(|source| LibraryError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_drops_directories_and_addresses() {
        assert_eq!(
            redact_addresses("flow 192.168.56.1-40022-10.0.0.5-22-6 at 2015-03-30 14:44:49"),
            "flow redacted-40022-redacted-22-6 at 2015-03-30 14:44:49"
        );
        assert_eq!(
            redact_addresses("alert ab-12 (line 3, flow 77 1.2.3.4:22 → fe80::1:443 TCP)"),
            "alert ab-12 (line 3, flow 77 redacted → redacted TCP)"
        );
        assert_eq!(redact_addresses("row 12 (line 13)"), "row 12 (line 13)");
    }
}
