//! Analyst feedback on one alert: `confirm` makes the alert's flow a support example of its threat,
//! `reject` a negative example, as a new threat-library version (the library's guarded refit).
//! One implementation for `metaids feedback` (the alert read from an EVE file) and the service's
//! `POST /api/v1/feedback` (the alert from its recent alerts, else from its EVE file).
//!
//! An alert carries the flow's embedding (`metaids.embedding`), the model (a prefix of its weights'
//! sha256) and the library id that raised it: feedback is refused for another model or library,
//! since the embedding would not fit it, or would move a threat that never raised the alert.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use metaids_library::{EnrolOptions, Enrolment, LibraryError, SupportFlow, ThreatLibrary};
use metaids_model::ThreatModel;

use crate::eve::EveEvent;

/// Longest EVE line read (alerts with a 32–64-d embedding are a few kB).
pub const MAX_LINE: usize = 1 << 20;

/// What the analyst says about the alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    /// The alert is right: its flow joins the threat's support.
    Confirm,
    /// The alert is wrong: its flow becomes a negative example, no longer flagged.
    Reject,
}

/// An alert found for feedback, with where it was found (recorded as the flow's source).
#[derive(Debug, Clone)]
pub struct FoundAlert {
    /// The alert record.
    pub event: EveEvent,
    /// Where it came from (a file and line, or `recent alerts`).
    pub place: String,
}

/// Why feedback was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FeedbackError {
    /// The EVE file could not be read, or a line is not an EVE record.
    #[error("{path}: line {line}: {message}")]
    Read {
        /// The file.
        path: String,
        /// 1-based line (0: opening the file).
        line: usize,
        /// What failed.
        message: String,
    },
    /// No alert with that id.
    #[error(
        "{place}: no alert with metaids.alert_id {id:?} (alert ids look like <run id>-<sequence>)"
    )]
    NotFound {
        /// Where it was looked for.
        place: String,
        /// The id.
        id: String,
    },
    /// The record is not an alert.
    #[error("{place} ({id}) is a {event_type:?} record, not an alert")]
    NotAlert {
        /// Where it was found.
        place: String,
        /// The id.
        id: String,
        /// Its event type.
        event_type: String,
    },
    /// The alert was raised by another model or library.
    #[error("{0}")]
    Mismatch(String),
    /// An unknown verdict names no threat, and none was given.
    #[error("alert {id} is an {verdict} verdict with no threat of its own: name the threat it belongs to")]
    NoThreat {
        /// The alert id.
        id: String,
        /// Its verdict.
        verdict: &'static str,
    },
    /// Confirming would pull the threat towards other traffic (refused unless forced).
    #[error("alert {id} does not look like threat {threat:?}: {why}. Confirming it would pull the threat towards other traffic; name the right threat, reject the alert, or force it")]
    Doubt {
        /// The alert id.
        id: String,
        /// The threat.
        threat: String,
        /// Why.
        why: String,
    },
    /// The library refused or failed (unknown threat, guard refusal, contradiction, busy, …).
    #[error(transparent)]
    Library(#[from] LibraryError),
}

/// What feedback did.
#[derive(Debug)]
pub enum FeedbackOutcome {
    /// A new library version.
    Applied {
        /// The refit threat and the version.
        enrolment: Box<Enrolment>,
        /// A doubt overridden by `force`.
        forced_doubt: Option<String>,
    },
    /// The same judgement was recorded before: nothing changed (feedback is idempotent).
    AlreadyRecorded(String),
}

/// Finds the alert `id` in the EVE file at `path` (lines longer than [`MAX_LINE`] are an error).
pub fn find_alert(path: &Path, id: &str) -> Result<FoundAlert, FeedbackError> {
    let shown = path.display().to_string();
    let read_error = |line: usize, message: String| FeedbackError::Read {
        path: shown.clone(),
        line,
        message,
    };
    let file = File::open(path).map_err(|e| read_error(0, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut line = Vec::new();
    let mut n = 0usize;
    loop {
        line.clear();
        n += 1;
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| read_error(n, e.to_string()))?;
        if read == 0 {
            return Err(FeedbackError::NotFound {
                place: shown,
                id: id.to_string(),
            });
        }
        if line.len() > MAX_LINE {
            return Err(read_error(n, format!("longer than {MAX_LINE} bytes")));
        }
        // Cheap pre-filter before parsing: the id must appear on the line.
        if !line.windows(id.len()).any(|w| w == id.as_bytes()) {
            continue;
        }
        let event: EveEvent = serde_json::from_slice(&line).map_err(|e| {
            read_error(
                n,
                format!("not a metaids EVE record (expected the fields metaids writes): {e}"),
            )
        })?;
        if event.metaids().and_then(|m| m.alert_id.as_deref()) == Some(id) {
            return Ok(FoundAlert {
                event,
                place: format!("{shown} line {n}"),
            });
        }
    }
}

/// Applies `judgement` on `alert` to `library` (opened for writing). `threat` names the threat the
/// flow belongs to (needed for `unknown` alerts; else the alert's own threat); `force` stores a
/// doubtful confirmation or a refit the guard refuses.
pub fn apply_feedback(
    library: &ThreatLibrary,
    model: &ThreatModel,
    alert: &FoundAlert,
    judgement: Judgement,
    threat: Option<&str>,
    force: bool,
    author: &str,
) -> Result<FeedbackOutcome, FeedbackError> {
    let event = &alert.event;
    let info = match event.metaids() {
        Some(info) if event.event_type == "alert" => info,
        _ => {
            return Err(FeedbackError::NotAlert {
                place: alert.place.clone(),
                id: String::new(),
                event_type: event.event_type.clone(),
            })
        }
    };
    let id = info.alert_id.clone().unwrap_or_default();
    if info.embedding.len() != model.dim() {
        return Err(FeedbackError::Mismatch(format!(
            "alert {id} ({}) carries a {}-value embedding; the model embeds into {} values (was the alert written with another model?)",
            alert.place,
            info.embedding.len(),
            model.dim()
        )));
    }
    // Alerts name the model by a prefix of its weights' sha256 (the library's model identity).
    let identity = &library.identity().model;
    if !info.model.is_empty() && !identity.starts_with(&info.model) {
        return Err(FeedbackError::Mismatch(format!(
            "alert {id} ({}) was raised by model {}, but the library {} belongs to model {identity}: its embedding does not fit this library",
            alert.place,
            info.model,
            library.path().display()
        )));
    }
    // Alerts of older builds carry no library id.
    if !info.library.is_empty() && info.library != library.id() {
        return Err(FeedbackError::Mismatch(format!(
            "alert {id} ({}) was raised with threat library {} (version {}), but {} is library {}: feedback goes to the library that raised the alert",
            alert.place,
            info.library,
            info.library_version,
            library.path().display(),
            library.id()
        )));
    }
    let threat = match (threat, &info.threat, info.verdict.name()) {
        (Some(t), _, _) => t.to_string(),
        (None, Some(t), "threat") => t.clone(),
        (None, _, verdict) => return Err(FeedbackError::NoThreat { id, verdict }),
    };
    let flow = SupportFlow {
        source: alert.place.clone(),
        locator: format!(
            "alert {id} (flow {} {}:{} → {}:{} {}, {})",
            event.flow_id,
            event.src_ip,
            event.src_port(),
            event.dest_ip,
            event.dest_port(),
            event.proto,
            event.timestamp
        ),
        embedding: info.embedding.clone(),
        // An alert carries the flow's embedding, not its feature values.
        values: metaids_decide::FlowValues::default(),
    };
    let mut forced_doubt = None;
    if judgement == Judgement::Confirm {
        let current = library.current()?;
        if let Some(t) = current.threats.iter().position(|t| t.name == threat) {
            if let Some(why) = metaids_decide::confirmation_doubt(
                &model.reference,
                &current.threats,
                t,
                &flow.embedding,
            ) {
                if !force {
                    return Err(FeedbackError::Doubt { id, threat, why });
                }
                forced_doubt = Some(why);
            }
        }
    }
    let options = EnrolOptions {
        force,
        budget: None,
    };
    let result = match judgement {
        Judgement::Confirm => library.add_support(model, &threat, vec![flow], author, options),
        Judgement::Reject => library.add_negative(model, &threat, vec![flow], author, options),
    };
    match result {
        Ok(enrolment) => Ok(FeedbackOutcome::Applied {
            enrolment: Box::new(enrolment),
            forced_doubt,
        }),
        Err(e @ LibraryError::AlreadyRecorded { .. }) => {
            Ok(FeedbackOutcome::AlreadyRecorded(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}
