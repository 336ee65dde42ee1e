//! The versioned threat library in one redb file: every change is one write transaction that appends a
//! full snapshot of the threats as a new version and moves the `current` pointer, so a crash leaves the
//! last committed version intact (redb commits are atomic and crash-safe). Does not embed flows (the
//! caller does, with the model) and does not detect (the detector reads [`ThreatLibrary::current`]).
//!
//! Tables: `meta` (`format`, `identity`: the model the library belongs to, as JSON, `id`: the
//! library's own id), `counters`
//! (`current`), `versions` (version → JSON [`LibraryVersion`]) and `ids` (every threat id ever
//! assigned → the version that assigned it; ids are never reused, even after a removal).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use metaids_model::ThreatModel;
use redb::{
    Database, ReadOnlyDatabase, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::error::{LibraryError, Result};
use crate::exchange::{ImportSummary, ThreatDocument, DOCUMENT_FORMAT};
use crate::reembed::{kernel_of, reembed_flows, reembed_threats, Reembedded};
use metaids_decide::site::{calibrate_jointly, JointReport, SiteProfile};
use metaids_decide::threat::{
    check_flows, check_name, check_severity, fit, seed_for, EnrolOptions, SupportFlow, Threat,
    ThreatDraft, SIGNATURE_BASE,
};
use metaids_decide::BenignReference;
pub use metaids_decide::MAX_THREAT_ID;
pub use metaids_model::io::ModelIdentity;

/// Library format of a file that holds a site profile, which this build writes packed
/// ([`metaids_decide::packed`]); builds that read only [`LIBRARY_FORMAT_PLAIN`] refuse such a file by
/// its format instead of calling its profile records damaged. This build reads both.
pub const LIBRARY_FORMAT: &str = "metaids-threat-library-v2";

/// Library format of a file without a site profile (what a new library is created as, and what
/// every file was before profiles were packed), read by every build.
pub const LIBRARY_FORMAT_PLAIN: &str = "metaids-threat-library-v1";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const VERSIONS: TableDefinition<u64, &str> = TableDefinition::new("versions");
const IDS: TableDefinition<u32, u64> = TableDefinition::new("ids");
/// Site profiles (`metaids baseline`), keyed by the version that stored them; versions refer to one.
const PROFILES: TableDefinition<u64, &str> = TableDefinition::new("profiles");

/// One version of the library: a full snapshot of its threats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LibraryVersion {
    /// Version number (1 = the empty library at creation); strictly increasing.
    pub version: u64,
    /// The version it was derived from (`None` for version 1).
    pub parent: Option<u64>,
    /// When (RFC 3339 UTC).
    pub created_at: String,
    /// Who made the change.
    pub author: String,
    /// What changed, in words (`add SSH brute force (id 3)`, `rollback to version 4`).
    pub change: String,
    /// The threats, by id.
    pub threats: Vec<Threat>,
    /// The site profile the threats are calibrated on (`None`: the model's benign reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<SiteRef>,
}

/// A version's pointer to the site profile it is calibrated on, with the profile's headline figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteRef {
    /// Key of the profile: the version that stored it.
    pub profile: u64,
    /// When the baseline was learnt (RFC 3339 UTC).
    pub created_at: String,
    /// Flows the profile kept (after the per-source cap), of those offered.
    pub flows_kept: usize,
    /// Flows offered.
    pub flows_offered: usize,
    /// Calibration rows.
    pub calibration_rows: usize,
    /// The budget α the threats and the unknown rule are jointly calibrated at.
    pub budget: f64,
    /// What the profile was learnt from (files or an interface).
    pub sources: Vec<String>,
}

/// What a commit does to a version's site profile.
enum SiteChange<'a> {
    /// Keep the parent's.
    Keep,
    /// Point at an earlier version's (rollback).
    Restore(Option<SiteRef>),
    /// Store a new profile, learnt from `sources`.
    New(&'a SiteProfile, Vec<String>),
}

/// What a baseline did: the new version, the refitted threats and the joint calibration's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    /// The new library version.
    pub version: u64,
    /// The threats, refitted on the profile.
    pub threats: Vec<Threat>,
    /// The joint calibration on the profile's calibration rows.
    pub report: JointReport,
    /// The threats' flows embedded again, when the profile's adaptation differs from the one the
    /// library had (`None`: the same adaptation, nothing to embed again).
    pub reembedded: Option<Reembedded>,
}

impl LibraryVersion {
    /// The threat named `name`.
    pub fn threat(&self, name: &str) -> Option<&Threat> {
        self.threats.iter().find(|t| t.name == name)
    }
}

/// A version without its threats, for `history`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    /// Version number.
    pub version: u64,
    /// Parent version.
    pub parent: Option<u64>,
    /// When.
    pub created_at: String,
    /// Who.
    pub author: String,
    /// What.
    pub change: String,
    /// Names of its threats.
    pub threats: Vec<String>,
    /// Whether it is the current version.
    pub current: bool,
}

/// The result of a change that fits a threat.
#[derive(Debug, Clone, PartialEq)]
pub struct Enrolment {
    /// The new library version.
    pub version: u64,
    /// The threat as stored (its `report` holds the guard's figures).
    pub threat: Threat,
}

impl Enrolment {
    /// The result of a change that stored `threat` (new or changed) in `version`.
    fn stamped(version: u64, mut threat: Threat) -> Self {
        threat.revision = version;
        Enrolment { version, threat }
    }
}

/// Ids assigned so far, within one write transaction.
struct Ids {
    used: BTreeSet<u32>,
    new: Vec<u32>,
}

impl Ids {
    /// A fresh id, or `wanted` if it was never assigned in this library.
    fn assign(&mut self, path: &Path, wanted: Option<u32>) -> Result<u32> {
        let id = match wanted {
            Some(w) if (1..=MAX_THREAT_ID).contains(&w) && !self.used.contains(&w) => w,
            _ => self.used.last().map_or(1, |m| m + 1),
        };
        if id > MAX_THREAT_ID {
            return Err(LibraryError::Invalid {
                field: "threat id".into(),
                message: format!(
                    "{}: all {MAX_THREAT_ID} threat ids are used",
                    path.display()
                ),
            });
        }
        self.used.insert(id);
        self.new.push(id);
        Ok(id)
    }

    /// The id the next fresh threat would get.
    fn peek(&self) -> u32 {
        self.used.last().map_or(1, |m| m + 1)
    }
}

/// Name of the thread that opens and checks a library file: the storage engine asserts (panics) on
/// some corrupt files instead of returning an error, and a panic there becomes
/// [`LibraryError::Corrupt`]. A binary's panic hook may stay silent for it.
pub const CHECK_THREAD: &str = "metaids-library-check";

/// How long opening waits for another process that holds the library (a writer, or readers while
/// this one wants to write) before giving up with [`LibraryError::Busy`].
pub const OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The open file: for changes, or read-only (any number of readers at once, and no header rewrite).
enum Db {
    Write(Database),
    Read(ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> std::result::Result<ReadTransaction, redb::TransactionError> {
        match self {
            Db::Write(d) => d.begin_read(),
            Db::Read(d) => d.begin_read(),
        }
    }
}

/// A threat library file, open.
pub struct ThreatLibrary {
    path: PathBuf,
    db: Db,
    identity: ModelIdentity,
    id: String,
}

impl std::fmt::Debug for ThreatLibrary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatLibrary")
            .field("path", &self.path)
            .field("identity", &self.identity)
            .field("id", &self.id)
            .finish()
    }
}

fn store<'a, E: Into<redb::Error>>(
    path: &'a Path,
    context: &'static str,
) -> impl FnOnce(E) -> LibraryError + 'a {
    move |e| LibraryError::Store {
        path: path.to_path_buf(),
        context,
        source: Box::new(e.into()),
    }
}

fn corrupt(path: &Path, record: impl Into<String>, message: impl Into<String>) -> LibraryError {
    LibraryError::Corrupt {
        path: path.to_path_buf(),
        record: record.into(),
        message: message.into(),
    }
}

fn to_json<T: Serialize>(path: &Path, record: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| corrupt(path, record, e.to_string()))
}

impl ThreatLibrary {
    /// Creates a library for `model` at `path` (refused if the path exists). The file is built under a
    /// temporary sibling name and renamed into place, so a crash never leaves a half-made library.
    pub fn create(path: &Path, model: &ThreatModel) -> Result<Self> {
        Self::create_with(path, ModelIdentity::of(model)?, "metaids")
    }

    /// [`ThreatLibrary::create`] for a known identity, recording `author`.
    pub fn create_with(path: &Path, identity: ModelIdentity, author: &str) -> Result<Self> {
        if path.exists() {
            return Err(LibraryError::Exists {
                path: path.to_path_buf(),
            });
        }
        let name = path
            .file_name()
            .map_or_else(|| "library".into(), |n| n.to_string_lossy().into_owned());
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(|source| LibraryError::Io {
                path: tmp.clone(),
                source,
            })?;
        }
        {
            let db = Database::create(&tmp).map_err(store(path, "creating the file"))?;
            let txn = db.begin_write().map_err(store(path, "starting a write"))?;
            {
                let mut meta = txn.open_table(META).map_err(store(path, "opening meta"))?;
                meta.insert("format", LIBRARY_FORMAT_PLAIN)
                    .map_err(store(path, "writing meta"))?;
                meta.insert("identity", to_json(path, "identity", &identity)?.as_str())
                    .map_err(store(path, "writing meta"))?;
                meta.insert("id", new_library_id(path).as_str())
                    .map_err(store(path, "writing meta"))?;
                let mut counters = txn
                    .open_table(COUNTERS)
                    .map_err(store(path, "opening counters"))?;
                counters
                    .insert("current", 1u64)
                    .map_err(store(path, "writing counters"))?;
                txn.open_table(IDS).map_err(store(path, "opening ids"))?;
                let first = LibraryVersion {
                    version: 1,
                    parent: None,
                    created_at: crate::time::now(),
                    author: author.to_string(),
                    change: format!(
                        "created for model {} ({} data, schema {})",
                        identity.model, identity.dataset, identity.schema_hash
                    ),
                    threats: Vec::new(),
                    site: None,
                };
                txn.open_table(PROFILES)
                    .map_err(store(path, "opening profiles"))?;
                let mut versions = txn
                    .open_table(VERSIONS)
                    .map_err(store(path, "opening versions"))?;
                versions
                    .insert(1u64, to_json(path, "version 1", &first)?.as_str())
                    .map_err(store(path, "writing version 1"))?;
            }
            txn.commit().map_err(store(path, "committing"))?;
        }
        if path.exists() {
            let _ = std::fs::remove_file(&tmp);
            return Err(LibraryError::Exists {
                path: path.to_path_buf(),
            });
        }
        std::fs::rename(&tmp, path).map_err(|source| LibraryError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::open_without_model(path)
    }

    /// Opens the library at `path` for `model`, refusing a library built for another model, feature
    /// schema or embedding size with an error naming the file and both identities.
    pub fn open(path: &Path, model: &ThreatModel) -> Result<Self> {
        let lib = Self::open_without_model(path)?;
        let found = ModelIdentity::of(model)?;
        let what = format!(
            "the model {}",
            model
                .path
                .as_ref()
                .map_or_else(|| "<in memory>".into(), |p| p.display().to_string())
        );
        lib.check_identity(&found, what)?;
        Ok(lib)
    }

    /// Opens the library for changes that score nothing (remove, rollback, history, import: an
    /// import is checked against the library's recorded identity). Waits up to [`OPEN_WAIT`] for
    /// another process holding it.
    pub fn open_without_model(path: &Path) -> Result<Self> {
        Self::open_mode(path, false)
    }

    /// Opens the library read-only: any number of readers at once, none of them changes the file,
    /// and a read-only file can be read. Changes through it fail with [`LibraryError::ReadOnly`].
    pub fn open_read_only(path: &Path) -> Result<Self> {
        Self::open_mode(path, true)
    }

    /// [`ThreatLibrary::open_read_only`], refusing a library of another model than `model`.
    pub fn open_read_only_for(path: &Path, model: &ThreatModel) -> Result<Self> {
        let lib = Self::open_read_only(path)?;
        lib.check_model(model)?;
        Ok(lib)
    }

    fn open_mode(path: &Path, read_only: bool) -> Result<Self> {
        if !path.exists() {
            return Err(LibraryError::Missing {
                path: path.to_path_buf(),
            });
        }
        // Opening and a full read of every table run on a helper thread: a panic in the storage
        // engine on a corrupt file is turned into an error naming the file.
        let outcome = std::thread::scope(|s| {
            let handle = std::thread::Builder::new()
                .name(CHECK_THREAD.into())
                .spawn_scoped(s, || -> Result<(Db, ModelIdentity, String)> {
                    let db = open_waiting(path, read_only)?;
                    let (identity, id) = check_file(&db, path)?;
                    Ok((db, identity, id))
                })
                .map_err(|source| LibraryError::Io {
                    path: path.to_path_buf(),
                    source,
                })?;
            Ok::<_, LibraryError>(handle.join())
        })?;
        let (db, identity, id) = match outcome {
            Ok(r) => r?,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "an internal check failed".into());
                return Err(corrupt(
                    path,
                    "file",
                    format!(
                        "the storage engine cannot read it ({what}): the file is damaged; restore a backup, or create a new library and `metaids threat import` the last `metaids threat export`"
                    ),
                ));
            }
        };
        Ok(ThreatLibrary {
            path: path.to_path_buf(),
            db,
            identity,
            id,
        })
    }

    /// Errors unless `found` is the library's model.
    pub fn check_identity(&self, found: &ModelIdentity, what: String) -> Result<()> {
        let id = &self.identity;
        if found.model != id.model || found.schema_hash != id.schema_hash || found.dim != id.dim {
            return Err(LibraryError::ModelMismatch {
                path: self.path.clone(),
                what,
                expected: Box::new(id.clone()),
                found: Box::new(found.clone()),
            });
        }
        Ok(())
    }

    /// The library file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The model the library belongs to.
    pub fn identity(&self) -> &ModelIdentity {
        &self.identity
    }

    /// The library's own identity: 16 hex digits drawn at creation and kept by every later
    /// version and by copies of the file, different for two libraries of the same model
    /// (libraries of earlier builds, which stored none, get the hash of their model identity and
    /// first version record). Alerts carry it, so feedback on an alert of another library is
    /// refused.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn parse_version(&self, version: u64, text: &str) -> Result<LibraryVersion> {
        let v: LibraryVersion = serde_json::from_str(text)
            .map_err(|e| corrupt(&self.path, format!("version {version}"), e.to_string()))?;
        if v.version != version {
            return Err(corrupt(
                &self.path,
                format!("version {version}"),
                format!("records version number {}", v.version),
            ));
        }
        Ok(v)
    }

    fn read_txn(&self) -> Result<ReadTransaction> {
        self.db
            .begin_read()
            .map_err(store(&self.path, "starting a read"))
    }

    /// The current version.
    pub fn current(&self) -> Result<LibraryVersion> {
        let path = &self.path;
        let txn = self.read_txn()?;
        let current = current_version(&txn, path)?;
        let versions = txn
            .open_table(VERSIONS)
            .map_err(store(path, "opening versions"))?;
        let text = versions
            .get(current)
            .map_err(store(path, "reading a version"))?
            .map(|v| v.value().to_string())
            .ok_or_else(|| corrupt(path, format!("version {current}"), "current but missing"))?;
        self.parse_version(current, &text)
    }

    /// One version (any, not only the current one).
    pub fn version(&self, version: u64) -> Result<LibraryVersion> {
        let path = &self.path;
        let txn = self.read_txn()?;
        let versions = txn
            .open_table(VERSIONS)
            .map_err(store(path, "opening versions"))?;
        let text = versions
            .get(version)
            .map_err(store(path, "reading a version"))?
            .map(|v| v.value().to_string());
        match text {
            Some(t) => self.parse_version(version, &t),
            None => {
                let latest = versions
                    .last()
                    .map_err(store(path, "reading versions"))?
                    .map_or(0, |(k, _)| k.value());
                Err(LibraryError::UnknownVersion {
                    path: path.clone(),
                    version,
                    latest,
                })
            }
        }
    }

    /// Every version, oldest first, without threat contents.
    pub fn history(&self) -> Result<Vec<VersionSummary>> {
        let path = &self.path;
        let current = self.current()?.version;
        let txn = self.read_txn()?;
        let versions = txn
            .open_table(VERSIONS)
            .map_err(store(path, "opening versions"))?;
        let mut out = Vec::new();
        for item in versions.iter().map_err(store(path, "reading versions"))? {
            let (k, v) = item.map_err(store(path, "reading versions"))?;
            let parsed = self.parse_version(k.value(), v.value())?;
            out.push(VersionSummary {
                version: parsed.version,
                parent: parsed.parent,
                created_at: parsed.created_at,
                author: parsed.author,
                change: parsed.change,
                threats: parsed.threats.into_iter().map(|t| t.name).collect(),
                current: k.value() == current,
            });
        }
        Ok(out)
    }

    /// One write transaction: reads the current snapshot, lets `change` edit its threats (and assign
    /// ids), appends the result as a new version and makes it current. Nothing is written when
    /// `change` fails.
    fn commit<T>(
        &self,
        author: &str,
        change: impl FnOnce(&mut Vec<Threat>, &mut Ids) -> Result<(String, T)>,
    ) -> Result<(u64, T)> {
        self.commit_with(author, SiteChange::Keep, change)
    }

    /// [`ThreatLibrary::commit`] that also sets the new version's site profile.
    fn commit_with<T>(
        &self,
        author: &str,
        site: SiteChange<'_>,
        change: impl FnOnce(&mut Vec<Threat>, &mut Ids) -> Result<(String, T)>,
    ) -> Result<(u64, T)> {
        let path = &self.path;
        let Db::Write(db) = &self.db else {
            return Err(LibraryError::ReadOnly { path: path.clone() });
        };
        let txn = db.begin_write().map_err(store(path, "starting a write"))?;
        let (version, out) = {
            let mut counters = txn
                .open_table(COUNTERS)
                .map_err(store(path, "opening counters"))?;
            let current = counters
                .get("current")
                .map_err(store(path, "reading counters"))?
                .map(|v| v.value())
                .ok_or_else(|| corrupt(path, "counters", "no current version"))?;
            let mut versions = txn
                .open_table(VERSIONS)
                .map_err(store(path, "opening versions"))?;
            let text = versions
                .get(current)
                .map_err(store(path, "reading a version"))?
                .map(|v| v.value().to_string())
                .ok_or_else(|| {
                    corrupt(path, format!("version {current}"), "current but missing")
                })?;
            let snapshot = self.parse_version(current, &text)?;
            let latest = versions
                .last()
                .map_err(store(path, "reading versions"))?
                .map_or(current, |(k, _)| k.value());
            let mut ids_table = txn.open_table(IDS).map_err(store(path, "opening ids"))?;
            let mut used = BTreeSet::new();
            for item in ids_table.iter().map_err(store(path, "reading ids"))? {
                used.insert(item.map_err(store(path, "reading ids"))?.0.value());
            }
            let mut ids = Ids {
                used,
                new: Vec::new(),
            };
            let before = snapshot.threats.clone();
            let mut threats = snapshot.threats;
            let (description, out) = change(&mut threats, &mut ids)?;
            threats.sort_by_key(|t| t.id);
            let version = latest + 1;
            stamp_revisions(&before, &mut threats, version);
            let site = match site {
                SiteChange::Keep => snapshot.site,
                SiteChange::Restore(s) => s,
                SiteChange::New(profile, sources) => {
                    let mut profiles = txn
                        .open_table(PROFILES)
                        .map_err(store(path, "opening profiles"))?;
                    profiles
                        .insert(version, to_json(path, "site profile", profile)?.as_str())
                        .map_err(store(path, "writing a site profile"))?;
                    // In the same transaction: the file now holds a packed profile.
                    txn.open_table(META)
                        .map_err(store(path, "opening meta"))?
                        .insert("format", LIBRARY_FORMAT)
                        .map_err(store(path, "writing meta"))?;
                    Some(SiteRef {
                        profile: version,
                        created_at: crate::time::now(),
                        flows_kept: profile.flows_kept,
                        flows_offered: profile.flows_offered,
                        calibration_rows: profile.calibration_rows(),
                        budget: profile.asked_budget(),
                        sources,
                    })
                }
            };
            for id in &ids.new {
                ids_table
                    .insert(*id, version)
                    .map_err(store(path, "writing ids"))?;
            }
            let next = LibraryVersion {
                version,
                parent: Some(current),
                created_at: crate::time::now(),
                author: author.to_string(),
                change: description,
                threats,
                site,
            };
            versions
                .insert(version, to_json(path, "new version", &next)?.as_str())
                .map_err(store(path, "writing a version"))?;
            counters
                .insert("current", version)
                .map_err(store(path, "writing counters"))?;
            (version, out)
        };
        txn.commit().map_err(store(path, "committing"))?;
        Ok((version, out))
    }

    fn unknown(&self, threats: &[Threat], name: &str, version: u64) -> LibraryError {
        LibraryError::UnknownThreat {
            path: self.path.clone(),
            name: name.to_string(),
            version,
            known: threats
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    fn check_model(&self, model: &ThreatModel) -> Result<()> {
        let what = format!(
            "the model {}",
            model
                .path
                .as_ref()
                .map_or_else(|| "<in memory>".into(), |p| p.display().to_string())
        );
        self.check_identity(&ModelIdentity::of(model)?, what)
    }

    /// Fits a draft without storing it: the threat the library would hold, whether or not the guard
    /// accepts it (its `report` holds the guard's figures; `id` is the one it would get).
    pub fn preview(
        &self,
        model: &ThreatModel,
        draft: &ThreatDraft,
        options: EnrolOptions,
    ) -> Result<Threat> {
        self.check_model(model)?;
        let current = self.current()?;
        let path = &self.path;
        let txn = self.read_txn()?;
        let ids_table = txn.open_table(IDS).map_err(store(path, "opening ids"))?;
        let next = ids_table
            .last()
            .map_err(store(path, "reading ids"))?
            .map_or(1, |(k, _)| k.value() + 1);
        let (reference, profile) = self.reference(model)?;
        build(
            model,
            (&reference, profile.as_ref()),
            draft,
            options,
            next,
            &current.threats,
            path,
        )
    }

    /// Enrols a threat (guarded): a new version holding it. Refused with
    /// [`LibraryError::Refused`] (nothing written) when the guard refuses and `options.force` is off.
    pub fn add(
        &self,
        model: &ThreatModel,
        draft: &ThreatDraft,
        options: EnrolOptions,
    ) -> Result<Enrolment> {
        self.check_model(model)?;
        let path = self.path.clone();
        let (reference, profile) = self.reference(model)?;
        let (version, threat) = self.commit(&draft.author, |threats, ids| {
            let mut threat = build(
                model,
                (&reference, profile.as_ref()),
                draft,
                options,
                ids.peek(),
                threats,
                &path,
            )?;
            threats.push(threat.clone());
            let checked = apply_forest_guard(
                model,
                profile.as_ref(),
                threats,
                threats.len() - 1,
                &mut threat.report,
            );
            threats.pop();
            checked?;
            if !threat.report.accepted && !options.force {
                return Err(LibraryError::Refused {
                    name: draft.name.clone(),
                    report: Box::new(threat.report),
                });
            }
            threat.report.forced = !threat.report.accepted;
            threat.id = ids.assign(&path, Some(threat.id))?;
            threat.signature_id = SIGNATURE_BASE + threat.id;
            threats.push(threat.clone());
            if let Some(p) = &profile {
                rejoin(&reference, threats, p.budget)?;
                if let Some(t) = threats.iter().find(|t| t.id == threat.id) {
                    threat = t.clone();
                }
            }
            let forced = if threat.report.forced { ", forced" } else { "" };
            Ok((
                format!(
                    "add {} (id {}, {} support flows{forced})",
                    threat.name,
                    threat.id,
                    threat.support.len()
                ),
                threat,
            ))
        })?;
        Ok(Enrolment::stamped(version, threat))
    }

    /// Removes the threat `name`: a new version without it (its id is never reused).
    pub fn remove(&self, name: &str, author: &str) -> Result<u64> {
        let (version, ()) = self.commit(author, |threats, _| {
            let Some(i) = threats.iter().position(|t| t.name == name) else {
                let v = self.current()?.version;
                return Err(self.unknown(threats, name, v));
            };
            let t = threats.remove(i);
            Ok((format!("remove {} (id {})", t.name, t.id), ()))
        })?;
        Ok(version)
    }

    /// Edits a threat's description, severity or category (`None`: unchanged): a new version.
    pub fn update_details(
        &self,
        name: &str,
        description: Option<&str>,
        severity: Option<u8>,
        category: Option<&str>,
        author: &str,
    ) -> Result<u64> {
        if let Some(s) = severity {
            check_severity(s)?;
        }
        let (version, ()) = self.commit(author, |threats, _| {
            let Some(t) = threats.iter_mut().find(|t| t.name == name) else {
                let v = self.current()?.version;
                return Err(self.unknown(threats, name, v));
            };
            if let Some(d) = description {
                t.description = d.to_string();
            }
            if let Some(s) = severity {
                t.severity = s;
            }
            if let Some(c) = category {
                t.category = c.to_string();
            }
            t.updated_at = crate::time::now();
            Ok((format!("update {} (id {})", t.name, t.id), ()))
        })?;
        Ok(version)
    }

    /// Makes a new version whose threats equal those of `version` (history is kept; ids assigned
    /// since are still never reused).
    pub fn rollback(&self, version: u64, author: &str) -> Result<u64> {
        let old = self.version(version)?;
        let (v, ()) = self.commit_with(author, SiteChange::Restore(old.site), |threats, _| {
            *threats = old.threats;
            Ok((format!("rollback to version {version}"), ()))
        })?;
        Ok(v)
    }

    /// Makes a new version in which the threat `name` is as it was in `version` (its support,
    /// negatives, details and id), the other threats unchanged: it replaces the threat of that name
    /// or comes back if it was removed since. When the site adaptation changed since `version`, its
    /// flows are embedded again under the current one (flows without feature values are dropped, as
    /// a baseline does); under a site profile the threats are calibrated jointly again, as `add` does.
    pub fn rollback_threat(
        &self,
        model: &ThreatModel,
        name: &str,
        version: u64,
        author: &str,
    ) -> Result<Enrolment> {
        self.check_model(model)?;
        let old = self.version(version)?;
        let old_adaptation = self.profile(&old)?.and_then(|p| p.adaptation);
        let Some(mut restored) = old.threats.iter().find(|t| t.name == name).cloned() else {
            return Err(self.unknown(&old.threats, name, version));
        };
        let (reference, profile) = self.reference(model)?;
        let adaptation = profile.as_ref().and_then(|p| p.adaptation.clone());
        if adaptation != old_adaptation {
            let normaliser = model.site_normaliser(adaptation.as_ref())?;
            reembed_threats(model, &normaliser, std::slice::from_mut(&mut restored))?;
        }
        let (v, threat) = self.commit(author, |threats, _| {
            let replaced = threats.iter().position(|t| t.name == name);
            if let Some(other) = threats
                .iter()
                .find(|t| t.id == restored.id && t.name != name)
            {
                return Err(LibraryError::Invalid {
                    field: "name".into(),
                    message: format!(
                        "threat id {} now belongs to {:?}: rename conflicts are not rolled back",
                        restored.id, other.name
                    ),
                });
            }
            let note = match replaced {
                Some(i) if threats[i].id != restored.id => format!(
                    ", replacing the later threat of that name (id {})",
                    threats[i].id
                ),
                Some(_) => String::new(),
                None => ", restored after its removal".to_string(),
            };
            match replaced {
                Some(i) => threats[i] = restored.clone(),
                None => threats.push(restored.clone()),
            }
            if let Some(p) = &profile {
                rejoin(&reference, threats, p.budget)?;
            }
            let t = threats
                .iter()
                .find(|t| t.id == restored.id)
                .cloned()
                .ok_or_else(|| self.unknown(threats, name, version))?;
            Ok((
                format!(
                    "rollback {name} (id {}) to version {version}{note}",
                    restored.id
                ),
                t,
            ))
        })?;
        Ok(Enrolment::stamped(v, threat))
    }

    /// The site profile `version` is calibrated on (`None`: none), checked against the library's
    /// embedding size.
    pub fn profile(&self, version: &LibraryVersion) -> Result<Option<SiteProfile>> {
        let Some(site) = &version.site else {
            return Ok(None);
        };
        let path = &self.path;
        let txn = self.read_txn()?;
        let table = txn
            .open_table(PROFILES)
            .map_err(store(path, "opening profiles"))?;
        let record = format!("site profile {}", site.profile);
        let text = table
            .get(site.profile)
            .map_err(store(path, "reading a site profile"))?
            .map(|v| v.value().to_string())
            .ok_or_else(|| corrupt(path, record.clone(), "referred to but missing"))?;
        let profile: SiteProfile = serde_json::from_str(&text)
            .map_err(|e| corrupt(path, record.clone(), e.to_string()))?;
        profile
            .validate(self.identity.dim)
            .map_err(|e| corrupt(path, record, e.to_string()))?;
        Ok(Some(profile))
    }

    /// The benign reference the current version decides with: its site profile's when it has one,
    /// else the model's.
    pub fn reference(&self, model: &ThreatModel) -> Result<(BenignReference, Option<SiteProfile>)> {
        let profile = self.profile(&self.current()?)?;
        Ok(match profile {
            Some(p) => (p.reference(), Some(p)),
            None => (model.reference.clone(), None),
        })
    }

    /// Stores `profile` (learnt from `sources`) as the library's site profile and refits every
    /// threat on it, jointly calibrated at the profile's budget: one new version.
    pub fn baseline(
        &self,
        model: &ThreatModel,
        profile: &SiteProfile,
        sources: Vec<String>,
        author: &str,
    ) -> Result<Baseline> {
        self.check_model(model)?;
        profile.validate(self.identity.dim)?;
        let normaliser = model.site_normaliser(profile.adaptation.as_ref())?;
        let before = self.profile(&self.current()?)?.and_then(|p| p.adaptation);
        let follow = before != profile.adaptation;
        let reference = profile.reference();
        let description = format!(
            "baseline from {} flows ({} kept, {} calibration rows, budget {})",
            profile.flows_offered,
            profile.flows_kept,
            profile.calibration_rows(),
            profile.asked_budget()
        );
        let (version, (_, report, reembedded)) =
            self.commit_with(author, SiteChange::New(profile, sources), |threats, _| {
                let reembedded = if follow {
                    Some(reembed_threats(model, &normaliser, threats)?)
                } else {
                    None
                };
                let (refit, report) = calibrate_jointly(&reference, threats, profile.budget)?;
                *threats = refit;
                // Under the forest rule the library must arm: every threat keeps flows with
                // feature values (refused here, before anything is stored, naming the threat).
                crate::site_forest(&normaliser, profile, threats)?;
                Ok((description, (threats.clone(), report, reembedded)))
            })?;
        // The threats as stored (their revisions stamped).
        let threats = self.version(version)?.threats;
        Ok(Baseline {
            version,
            threats,
            report,
            reembedded,
        })
    }

    fn refit(
        &self,
        model: &ThreatModel,
        name: &str,
        author: &str,
        options: EnrolOptions,
        what: &str,
        edit: impl FnOnce(&mut Threat),
    ) -> Result<Enrolment> {
        self.check_model(model)?;
        let (reference, profile) = self.reference(model)?;
        let budget = guard_budget(options, model, profile.as_ref());
        let (version, threat) = self.commit(author, |threats, _| {
            let Some(at) = threats.iter().position(|t| t.name == name) else {
                let v = self.current()?.version;
                return Err(self.unknown(threats, name, v));
            };
            edit(&mut threats[at]);
            let t = &threats[at];
            let mut f = fit(&reference, &t.support, &t.negatives, seed_for(t.id), budget)?;
            f.report.model_fpr = model_fpr(
                model,
                &reference,
                profile.as_ref(),
                &f.prototypes,
                f.threshold,
            );
            apply_forest_guard(model, profile.as_ref(), threats, at, &mut f.report)?;
            let t = &mut threats[at];
            if !f.report.accepted && !options.force {
                return Err(LibraryError::Refused {
                    name: name.to_string(),
                    report: Box::new(f.report),
                });
            }
            t.prototypes = f.prototypes;
            t.threshold = f.threshold;
            t.report = f.report;
            t.report.forced = !t.report.accepted;
            t.updated_at = crate::time::now();
            let id = t.id;
            let description = format!("{what} {} (id {})", t.name, t.id);
            if let Some(p) = &profile {
                rejoin(&reference, threats, p.budget)?;
            }
            let t = threats.iter().find(|t| t.id == id).cloned();
            Ok((
                description,
                t.ok_or_else(|| self.unknown(threats, name, 0))?,
            ))
        })?;
        Ok(Enrolment::stamped(version, threat))
    }

    /// Feedback `--confirm`: adds `flows` to the threat's support and refits it (guarded).
    pub fn add_support(
        &self,
        model: &ThreatModel,
        name: &str,
        flows: Vec<SupportFlow>,
        author: &str,
        options: EnrolOptions,
    ) -> Result<Enrolment> {
        check_flows("support", &flows, self.identity.dim)?;
        self.check_feedback(model, name, &flows, true)?;
        let n = flows.len();
        self.refit(
            model,
            name,
            author,
            options,
            &format!("confirm {n} flow(s) of"),
            |t| t.support.extend(flows),
        )
    }

    /// Feedback `--reject`: adds `flows` as negative examples and refits the threat, whose threshold
    /// then rises to at least their score, so they are no longer flagged.
    pub fn add_negative(
        &self,
        model: &ThreatModel,
        name: &str,
        flows: Vec<SupportFlow>,
        author: &str,
        options: EnrolOptions,
    ) -> Result<Enrolment> {
        check_flows("negatives", &flows, self.identity.dim)?;
        self.check_feedback(model, name, &flows, false)?;
        let n = flows.len();
        self.refit(
            model,
            name,
            author,
            options,
            &format!("reject {n} flow(s) of"),
            |t| t.negatives.extend(flows),
        )
    }

    /// Feedback checks before a refit: values within the model's embedding range; a flow already
    /// recorded the same way is [`LibraryError::AlreadyRecorded`] (feedback is idempotent); a flow
    /// recorded the other way (confirmed, then rejected) is [`LibraryError::Contradiction`].
    fn check_feedback(
        &self,
        model: &ThreatModel,
        name: &str,
        flows: &[SupportFlow],
        confirm: bool,
    ) -> Result<()> {
        let (reference, _) = self.reference(model)?;
        let limit = embedding_limit(model, &reference);
        for (i, f) in flows.iter().enumerate() {
            if f.embedding.iter().any(|v| v.abs() > limit) {
                return Err(LibraryError::Invalid {
                    field: format!("flows[{i}].embedding"),
                    message: format!(
                        "values beyond ±{limit:.1}, far outside the model's embedding range: not an embedding of this model ({} {})",
                        f.source, f.locator
                    ),
                });
            }
        }
        let current = self.current()?;
        let Some(t) = current.threat(name) else {
            return Ok(());
        };
        for f in flows {
            let in_support = t.support.iter().any(|s| s.embedding == f.embedding);
            let in_negatives = t.negatives.iter().any(|s| s.embedding == f.embedding);
            let (same, other) = if confirm {
                (in_support, in_negatives)
            } else {
                (in_negatives, in_support)
            };
            if other {
                return Err(LibraryError::Contradiction {
                    path: self.path.clone(),
                    threat: name.to_string(),
                    flow: format!("{} {}", f.source, f.locator),
                    was: if confirm { "rejected" } else { "confirmed" },
                });
            }
            if same {
                return Err(LibraryError::AlreadyRecorded {
                    path: self.path.clone(),
                    threat: name.to_string(),
                    flow: format!("{} {}", f.source, f.locator),
                    version: current.version,
                });
            }
        }
        Ok(())
    }

    /// The current version as an exchange document.
    pub fn export_document(&self) -> Result<ThreatDocument> {
        let current = self.current()?;
        let site = self.profile(&current)?;
        Ok(ThreatDocument {
            format: DOCUMENT_FORMAT.to_string(),
            format_version: ThreatDocument::version_for(site.as_ref()),
            model: self.identity.clone(),
            library_version: current.version,
            library_id: self.id.clone(),
            exported_at: crate::time::now(),
            adaptation: site.as_ref().and_then(|p| p.adaptation.clone()),
            site,
            threats: current.threats,
        })
    }

    /// The current version as pretty JSON.
    pub fn export_json(&self) -> Result<String> {
        to_json_pretty(&self.path, &self.export_document()?)
    }

    /// Writes the export document to `out` atomically (temporary file, then rename).
    pub fn export_to(&self, out: &Path) -> Result<usize> {
        self.export_to_with(out, false)
    }

    /// [`ThreatLibrary::export_to`], with [`ThreatDocument::redacted`] applied when `redact`.
    pub fn export_to_with(&self, out: &Path, redact: bool) -> Result<usize> {
        let mut doc = self.export_document()?;
        if redact {
            doc = doc.redacted();
        }
        let text = to_json_pretty(&self.path, &doc)?;
        crate::exchange::write_atomic(out, text.as_bytes())?;
        Ok(doc.threats.len())
    }

    /// Imports an exchange document (`source` names it in messages): refused if it was exported for
    /// another model; a name that exists already is an error unless `replace`. Imported threats keep
    /// their ids when this library never assigned them, else get fresh ones. One new version.
    ///
    /// Nothing in the document decides: each threat's prototypes, threshold and guard report are
    /// refitted from its own support and negative examples on this library's benign reference (its
    /// site profile, else the model's), and the guard refuses a threat that would flag more than the
    /// budget unless `options.force`. Examples whose values lie far outside the model's embedding
    /// range, and threats over the caps on prototypes and examples, are refused.
    pub fn import_json(
        &self,
        model: &ThreatModel,
        text: &str,
        source: &Path,
        replace: bool,
        author: &str,
        options: EnrolOptions,
    ) -> Result<ImportSummary> {
        self.import_json_with(model, text, source, replace, author, options, false)
    }

    /// [`ThreatLibrary::import_json`]; with `adopt_profile`, a library with no baseline takes the
    /// document's site profile in the same version (the threats are then guarded and calibrated
    /// on it). A profile is trusted data — it decides what is benign — so it is taken only when
    /// asked for (a backup or a move of one's own library), never from a shared document by
    /// default.
    #[allow(clippy::too_many_arguments)]
    pub fn import_json_with(
        &self,
        model: &ThreatModel,
        text: &str,
        source: &Path,
        replace: bool,
        author: &str,
        options: EnrolOptions,
        adopt_profile: bool,
    ) -> Result<ImportSummary> {
        self.check_model(model)?;
        let doc = ThreatDocument::parse(text, source)?;
        self.check_identity(&doc.model, format!("the document {}", source.display()))?;
        doc.validate(source)?;
        let (own_reference, own_profile) = self.reference(model)?;
        // A library with no baseline adopts the document's site profile, in the same version:
        // the threats are then guarded and calibrated on it.
        let adopt = adopt_profile && own_profile.is_none() && doc.site.is_some();
        let ignored = doc.site.is_some() && !adopt;
        let (reference, profile, site_change) = match (&doc.site, adopt) {
            (Some(site), true) => (
                site.reference(),
                Some(site.clone()),
                SiteChange::New(site, vec![format!("site profile of {}", source.display())]),
            ),
            _ => (own_reference, own_profile, SiteChange::Keep),
        };
        let budget = guard_budget(options, model, profile.as_ref());
        let limit = embedding_limit(model, &reference);
        let scale = limit / 100.0;
        let path = self.path.clone();
        // Embedded under another site adaptation than this library's: flows that keep their feature
        // values are embedded again under this library's; a flow without values cannot be.
        let target = profile.as_ref().and_then(|p| p.adaptation.clone());
        let follow = if doc.adaptation == target {
            None
        } else {
            Some((kernel_of(model)?, model.site_normaliser(target.as_ref())?))
        };
        let (version, summary) = self.commit_with(author, site_change, |threats, ids| {
            let mut summary = ImportSummary {
                profile_adopted: adopt,
                profile_ignored: ignored,
                ..ImportSummary::default()
            };
            for mut t in doc.threats {
                if let Some((kernel, normaliser)) = &follow {
                    for (field, flows) in
                        [("support", &mut t.support), ("negatives", &mut t.negatives)]
                    {
                        let without = reembed_flows(kernel, normaliser, flows)?;
                        if let Some(&i) = without.first() {
                            return Err(LibraryError::Document {
                                path: source.to_path_buf(),
                                field: format!("threat {:?}: {field}[{i}]", t.name),
                                message: format!(
                                    "{} {} keeps no feature values and was embedded under another site adaptation than this library's: it cannot be embedded again (enrol the threat again from its flows)",
                                    flows[i].source, flows[i].locator
                                ),
                            });
                        }
                    }
                }
                for (field, flows) in [("support", &t.support), ("negatives", &t.negatives)] {
                    if let Some((i, f)) = flows
                        .iter()
                        .enumerate()
                        .find(|(_, f)| f.embedding.iter().any(|v| v.abs() > limit))
                    {
                        return Err(LibraryError::Document {
                            path: source.to_path_buf(),
                            field: format!("threat {:?}: {field}[{i}].embedding", t.name),
                            message: format!(
                                "values beyond ±{limit:.1}, far outside the model's embedding range (its benign rows stay within ±{scale:.2}): not an embedding of this model ({} {})",
                                f.source, f.locator
                            ),
                        });
                    }
                }
                let mut f = fit(&reference, &t.support, &t.negatives, seed_for(t.id), budget)?;
                // The forest rule guards against the library's threats, the imported one
                // replacing a namesake.
                let mut beside: Vec<Threat> = threats
                    .iter()
                    .filter(|e| e.name != t.name)
                    .cloned()
                    .collect();
                beside.push(t.clone());
                let last = beside.len() - 1;
                apply_forest_guard(model, profile.as_ref(), &beside, last, &mut f.report)?;
                if !f.report.accepted && !options.force {
                    return Err(LibraryError::Refused {
                        name: t.name.clone(),
                        report: Box::new(f.report),
                    });
                }
                t.prototypes = f.prototypes;
                t.threshold = f.threshold;
                t.report = f.report;
                t.report.forced = !t.report.accepted;
                let keep_id = if let Some(i) = threats.iter().position(|e| e.name == t.name) {
                    if !replace {
                        return Err(LibraryError::DuplicateName {
                            path: path.clone(),
                            name: t.name.clone(),
                            id: threats[i].id,
                        });
                    }
                    let old = threats.remove(i);
                    summary.replaced.push(t.name.clone());
                    (old.id == t.id).then_some(old.id)
                } else {
                    summary.added.push(t.name.clone());
                    None
                };
                t.id = match keep_id {
                    Some(id) => id,
                    None => ids.assign(&path, Some(t.id))?,
                };
                t.signature_id = SIGNATURE_BASE + t.id;
                threats.push(t);
            }
            if let Some(p) = &profile {
                rejoin(&reference, threats, p.budget)?;
            }
            let description = format!(
                "import {} ({} added, {} replaced)",
                source.display(),
                summary.added.len(),
                summary.replaced.len()
            );
            Ok((description, summary))
        })?;
        Ok(ImportSummary { version, ..summary })
    }

    /// [`ThreatLibrary::import_json`] from a file.
    pub fn import_file(
        &self,
        model: &ThreatModel,
        source: &Path,
        replace: bool,
        author: &str,
        options: EnrolOptions,
    ) -> Result<ImportSummary> {
        let text = std::fs::read_to_string(source).map_err(|e| LibraryError::Io {
            path: source.to_path_buf(),
            source: e,
        })?;
        self.import_json(model, &text, source, replace, author, options)
    }
}

/// The largest embedding value an example may hold: a hundred times the largest value among the
/// model's and the reference's benign rows (embeddings live in a bounded region).
fn embedding_limit(model: &ThreatModel, reference: &BenignReference) -> f32 {
    let scale = model
        .reference
        .calibration
        .iter()
        .chain(&reference.calibration)
        .fold(1.0f32, |m, v| m.max(v.abs()));
    100.0 * scale
}

/// The current version number recorded in a read transaction.
fn current_version(txn: &ReadTransaction, path: &Path) -> Result<u64> {
    let counters = txn
        .open_table(COUNTERS)
        .map_err(store(path, "opening counters"))?;
    let current = counters
        .get("current")
        .map_err(store(path, "reading counters"))?
        .map(|v| v.value())
        .ok_or_else(|| corrupt(path, "counters", "no current version"))?;
    Ok(current)
}

/// Opens the file, waiting up to [`OPEN_WAIT`] while another process holds it.
fn open_waiting(path: &Path, read_only: bool) -> Result<Db> {
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(20);
    loop {
        let opened = if read_only {
            ReadOnlyDatabase::open(path).map(Db::Read)
        } else {
            Database::open(path).map(Db::Write)
        };
        match opened {
            Ok(db) => return Ok(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < OPEN_WAIT => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(250));
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(LibraryError::Busy {
                    path: path.to_path_buf(),
                    waited_s: started.elapsed().as_secs_f64(),
                })
            }
            Err(e) if read_only && e.to_string().contains("repair") => {
                // Not closed cleanly: only a writer may repair it. Repair, then read.
                drop(Database::open(path).map_err(store(path, "repairing"))?);
            }
            Err(e) => return Err(store(path, "opening")(e)),
        }
    }
}

/// Reads every table of the file once (the format, the identity, every version and profile record,
/// the ids), so damage anywhere is found at open; returns the model identity.
fn check_file(db: &Db, path: &Path) -> Result<(ModelIdentity, String)> {
    let txn = db.begin_read().map_err(store(path, "starting a read"))?;
    let not_lib = |message: String| LibraryError::NotALibrary {
        path: path.to_path_buf(),
        message,
    };
    let meta = txn
        .open_table(META)
        .map_err(|e| not_lib(format!("no meta table ({e})")))?;
    let format = meta
        .get("format")
        .map_err(store(path, "reading meta"))?
        .map(|v| v.value().to_string());
    match format.as_deref() {
        Some(LIBRARY_FORMAT | LIBRARY_FORMAT_PLAIN) => {}
        Some(other) => {
            return Err(not_lib(format!(
                "format {other:?}, this build reads {LIBRARY_FORMAT_PLAIN:?} and {LIBRARY_FORMAT:?}"
            )))
        }
        None => return Err(not_lib("no format record".into())),
    }
    let identity_text = meta
        .get("identity")
        .map_err(store(path, "reading meta"))?
        .map(|v| v.value().to_string())
        .ok_or_else(|| not_lib("no identity record".into()))?;
    let identity: ModelIdentity = serde_json::from_str(&identity_text)
        .map_err(|e| corrupt(path, "identity", e.to_string()))?;
    let stored_id = meta
        .get("id")
        .map_err(store(path, "reading meta"))?
        .map(|v| v.value().to_string());
    let current = current_version(&txn, path)?;
    let versions = txn
        .open_table(VERSIONS)
        .map_err(store(path, "opening versions"))?;
    let mut seen_current = false;
    let mut first: Option<String> = None;
    for item in versions.iter().map_err(store(path, "reading versions"))? {
        let (k, v) = item.map_err(store(path, "reading versions"))?;
        seen_current |= k.value() == current;
        if k.value() == 1 {
            first = Some(v.value().to_string());
        }
        if v.value().is_empty() {
            return Err(corrupt(
                path,
                format!("version {}", k.value()),
                "empty record",
            ));
        }
    }
    if !seen_current {
        return Err(corrupt(
            path,
            format!("version {current}"),
            "current but missing",
        ));
    }
    let ids = txn.open_table(IDS).map_err(store(path, "opening ids"))?;
    for item in ids.iter().map_err(store(path, "reading ids"))? {
        item.map_err(store(path, "reading ids"))?;
    }
    match txn.open_table(PROFILES) {
        Ok(profiles) => {
            for item in profiles.iter().map_err(store(path, "reading profiles"))? {
                item.map_err(store(path, "reading profiles"))?;
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(store(path, "opening profiles")(e)),
    }
    let id = match stored_id {
        Some(id) => id,
        None => {
            // Libraries of earlier builds stored no id: one derived from what they do store.
            let first =
                first.ok_or_else(|| corrupt(path, "version 1", "the first version is missing"))?;
            hex16(&[identity_text.as_bytes(), b"\n", first.as_bytes()])
        }
    };
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(corrupt(path, "id", format!("{id:?} is not 16 hex digits")));
    }
    Ok((identity, id))
}

/// 16 hex digits of the sha256 of `parts`.
fn hex16(parts: &[&[u8]]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh library id: the hash of the path, the process, the thread and the clock to the
/// nanosecond, so two libraries never share one in practice (an identity, not a secret).
fn new_library_id(path: &Path) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let thread = format!("{:?}", std::thread::current().id());
    hex16(&[
        path.as_os_str().as_encoded_bytes(),
        &std::process::id().to_le_bytes(),
        thread.as_bytes(),
        &nanos.to_le_bytes(),
    ])
}

fn to_json_pretty<T: Serialize>(path: &Path, value: &T) -> Result<String> {
    serde_json::to_string_pretty(value).map_err(|e| corrupt(path, "export", e.to_string()))
}

/// Fits a draft into a threat with id `id`; the caller applies the guard (`report.accepted`).
fn build(
    model: &ThreatModel,
    (reference, profile): (&BenignReference, Option<&SiteProfile>),
    draft: &ThreatDraft,
    options: EnrolOptions,
    id: u32,
    existing: &[Threat],
    path: &Path,
) -> Result<Threat> {
    check_name(&draft.name)?;
    check_severity(draft.severity)?;
    if let Some(t) = existing.iter().find(|t| t.name == draft.name) {
        return Err(LibraryError::DuplicateName {
            path: path.to_path_buf(),
            name: draft.name.clone(),
            id: t.id,
        });
    }
    let budget = guard_budget(options, model, profile);
    let mut threat = Threat::enrol(reference, id, draft, budget, crate::time::now())?;
    threat.report.model_fpr = model_fpr(
        model,
        reference,
        profile,
        &threat.prototypes,
        threat.threshold,
    );
    Ok(threat)
}

/// When the profile names threats with the forest, its guard for `threats[which]`
/// ([`crate::forest_guard`]) goes into `report` and decides `accepted` (the embedding's figures stay
/// beside it for reference); otherwise `report` is left as the embedding's guard made it.
fn apply_forest_guard(
    model: &ThreatModel,
    profile: Option<&SiteProfile>,
    threats: &[Threat],
    which: usize,
    report: &mut metaids_decide::EnrolmentReport,
) -> Result<()> {
    let Some(p) = profile.filter(|p| p.threat_rule == metaids_decide::ThreatRule::Forest) else {
        return Ok(());
    };
    let normaliser = model.site_normaliser(p.adaptation.as_ref())?;
    let check = crate::forest_guard(&normaliser, p, threats, which)?;
    report.site_forest = Some(check);
    report.accepted = check.accepts();
    Ok(())
}

/// The guard's budget: the user's, else the threats' share of the site profile's budget (half: the
/// unknown rule has the other half), else the model's.
fn guard_budget(options: EnrolOptions, model: &ThreatModel, profile: Option<&SiteProfile>) -> f64 {
    options.budget.unwrap_or(match profile {
        Some(p) => p.budget / 2.0,
        None => model.reference.fpr_budget,
    })
}

/// Share of the model's own benign reference rows a threat (centres, threshold) flags when decided
/// with `reference` (the site's): the second figure the guard reports on a baselined library.
/// `None` without a site profile (the model's rows are then the reference itself) and under a
/// profile that adapts the model (the model's rows are embeddings under its own normaliser, not
/// comparable with the threat's).
fn model_fpr(
    model: &ThreatModel,
    reference: &BenignReference,
    profile: Option<&SiteProfile>,
    prototypes: &[Vec<f32>],
    threshold: f32,
) -> Option<f64> {
    if profile.is_none_or(|p| p.adaptation.is_some()) {
        return None;
    }
    let dim = reference.dim;
    let rows: Vec<&[f32]> = model.reference.calibration.chunks_exact(dim).collect();
    let flagged = rows
        .iter()
        .filter(|c| {
            reference.benign_distance(c)
                - metaids_decide::geometry::min_distance(c, prototypes.iter().map(Vec::as_slice))
                > threshold
        })
        .count();
    Some(flagged as f64 / rows.len().max(1) as f64)
}

/// Refits every threat jointly on the site profile (after a change to one of them); each report
/// describes the threshold kept.
/// Sets `revision` to `version` on every threat that is new or differs from its copy in `before`
/// (same id; a restored older copy differs in its revision at least): EVE `alert.rev` then only
/// goes up, through refits, edits, joint recalibration and rollbacks alike.
fn stamp_revisions(before: &[Threat], threats: &mut [Threat], version: u64) {
    for t in threats.iter_mut() {
        let unchanged = before.iter().find(|b| b.id == t.id).is_some_and(|b| b == t);
        if !unchanged {
            t.revision = version;
        }
    }
}

fn rejoin(reference: &BenignReference, threats: &mut [Threat], budget: f64) -> Result<()> {
    let (refit, _) = calibrate_jointly(reference, threats, budget)?;
    for (t, r) in threats.iter_mut().zip(refit) {
        // `forced` and the model-reference FPR come from the guard that admitted the threat (the
        // latter measured at the guard's threshold, which the joint level only raises: an upper
        // bound).
        let (forced, model_fpr, forest) =
            (t.report.forced, t.report.model_fpr, t.report.site_forest);
        t.prototypes = r.prototypes;
        t.threshold = r.threshold;
        t.report = r.report;
        t.report.forced |= forced;
        t.report.model_fpr = model_fpr;
        // Under the forest rule, its guard's verdict stands (the joint level is the embedding's).
        t.report.site_forest = forest;
        if let Some(c) = forest {
            t.report.accepted = c.accepts();
            t.report.forced = forced;
        }
    }
    Ok(())
}
