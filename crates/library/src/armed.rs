//! The threats a detector arms, from either place they are kept: the current version of a threat
//! library file, or a threat document written by `metaids threat export` (one document format for
//! export, import and detection). Both are refused unless they belong to the model that will score
//! them. It reads; it never changes a library.

use std::io::Read;
use std::path::{Path, PathBuf};

use metaids_decide::{SiteProfile, Threat};
use metaids_model::ThreatModel;

use crate::error::{LibraryError, Result};
use crate::exchange::ThreatDocument;
use crate::store::{ModelIdentity, ThreatLibrary};

/// Where armed threats came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreatOrigin {
    /// A threat library file (its current version).
    Library,
    /// An exported threat document.
    Document,
}

/// Threats ready to arm, with the library version they were taken from.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmedThreats {
    /// The file read.
    pub path: PathBuf,
    /// Library or document.
    pub origin: ThreatOrigin,
    /// The library version (for a document, the version it was exported from).
    pub library_version: u64,
    /// The library's id ([`ThreatLibrary::id`]; for a document, the library it was exported
    /// from, empty for documents of older builds).
    pub library_id: String,
    /// The threats, by id.
    pub threats: Vec<Threat>,
    /// The site profile the threats are calibrated on (a library's, or the one a document was
    /// exported with; `None` without a baseline: the model's benign reference then decides).
    pub profile: Option<SiteProfile>,
}

impl ArmedThreats {
    /// Reads the threats of `path` for `model`: a threat document when the file's first non-blank
    /// byte is `{`, else a threat library. Either is checked against `model`'s identity, and every
    /// threat with [`Threat::validate`].
    pub fn load(path: &Path, model: &ThreatModel) -> Result<Self> {
        let io = |source| LibraryError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut head = [0u8; 64];
        let n = std::fs::File::open(path)
            .and_then(|mut f| f.read(&mut head))
            .map_err(io)?;
        let is_json = head[..n]
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .is_some_and(|&b| b == b'{');
        if !is_json {
            let library = ThreatLibrary::open_read_only_for(path, model)?;
            let current = library.current()?;
            let profile = library.profile(&current)?;
            return Ok(ArmedThreats {
                path: path.to_path_buf(),
                origin: ThreatOrigin::Library,
                library_version: current.version,
                library_id: library.id().to_string(),
                threats: current.threats,
                profile,
            });
        }
        Self::from_document(ThreatDocument::load(path)?, path, model)
    }

    /// The threats of a threat document already read (`source` names where it came from: a file,
    /// or a message of a Kafka control topic), checked against `model`'s identity.
    pub fn from_document(doc: ThreatDocument, source: &Path, model: &ThreatModel) -> Result<Self> {
        doc.validate(source)?;
        doc.check_model(&ModelIdentity::of(model)?, source, model)?;
        Ok(ArmedThreats {
            path: source.to_path_buf(),
            origin: ThreatOrigin::Document,
            library_version: doc.library_version,
            library_id: doc.library_id.clone(),
            profile: doc.site.clone(),
            threats: doc.threats,
        })
    }
}
