//! Analyst feedback on one alert: `confirm` makes the alert's flow a support example of its threat,
//! `reject` a negative example, as a new threat-library version (the library's guarded refit).
//! One implementation for `metaids feedback` (the alert read from an EVE file) and the service's
//! `POST /api/v1/feedback` (the alert from its recent alerts, else from its EVE file).
//!
//! An alert carries the flow's embedding (`metaids.embedding`), the model (a prefix of its weights'
//! sha256) and the library id that raised it: feedback is refused for another model or library,
//! since the embedding would not fit it, or would move a threat that never raised the alert. Under
//! a site forest an alert also carries the flow's raw feature values and source context
//! (`metaids.values`, `metaids.source_context`), kept with the example: a confirmed flow becomes
//! one of its threat's support rows for the forest, a rejected one vetoes the forest's name for
//! flows nearer it than any support row in the forest's feature space, and both are embedded again
//! when the site adaptation changes (examples without values are dropped then).

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
    let mut found = find_alerts(path, &[id])?;
    found.pop().ok_or_else(|| FeedbackError::NotFound {
        place: path.display().to_string(),
        id: id.to_string(),
    })
}

/// Finds the alerts `ids` in the EVE file at `path` in one pass, in the file's order; ids not in
/// the file are left out (the caller compares). Lines longer than [`MAX_LINE`] are an error.
pub fn find_alerts(path: &Path, ids: &[&str]) -> Result<Vec<FoundAlert>, FeedbackError> {
    let shown = path.display().to_string();
    let read_error = |line: usize, message: String| FeedbackError::Read {
        path: shown.clone(),
        line,
        message,
    };
    let file = File::open(path).map_err(|e| read_error(0, format!("cannot open: {e}")))?;
    let mut reader = BufReader::new(file);
    let mut wanted: std::collections::BTreeSet<&str> = ids.iter().copied().collect();
    let mut out = Vec::new();
    let mut line = Vec::new();
    let mut n = 0usize;
    while !wanted.is_empty() {
        line.clear();
        n += 1;
        let read = (&mut reader)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| read_error(n, e.to_string()))?;
        if read == 0 {
            break;
        }
        if line.len() > MAX_LINE {
            return Err(read_error(n, format!("longer than {MAX_LINE} bytes")));
        }
        // Cheap pre-filter before parsing: the line must name an alert id.
        if alert_id_on_line(&line).is_none_or(|id| !wanted.contains(id)) {
            continue;
        }
        let event: EveEvent = serde_json::from_slice(&line).map_err(|e| {
            read_error(
                n,
                format!("not a metaids EVE record (expected the fields metaids writes): {e}"),
            )
        })?;
        let id = event.metaids().and_then(|m| m.alert_id.clone());
        if let Some(id) = id.filter(|id| wanted.contains(id.as_str())) {
            wanted.remove(id.as_str());
            out.push(FoundAlert {
                event,
                place: format!("{shown} line {n}"),
            });
        }
    }
    Ok(out)
}

/// The value of the first `"alert_id":"…"` on an EVE line (alert ids hold no escapes), if any:
/// the cheap test before parsing a line, for the EVE file and the service's recent alerts alike.
pub fn alert_id_on_line(line: &[u8]) -> Option<&str> {
    const KEY: &[u8] = b"\"alert_id\":\"";
    let at = line.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let len = line[at..].iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&line[at..at + len]).ok()
}

/// The alert's flow as a support or negative example for `library`: its embedding, and its raw
/// feature values and source context where the alert carries them (alerts of a site forest), with
/// the alert and flow as its locator. Refused for a record that is not an
/// alert, or one raised by another model or library.
pub fn alert_flow(
    library: &ThreatLibrary,
    model: &ThreatModel,
    alert: &FoundAlert,
) -> Result<SupportFlow, FeedbackError> {
    let event = &alert.event;
    let info = match event.metaids() {
        Some(info) if event.event_type == "alert" => info,
        _ => return Err(not_alert(alert)),
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
    // Under a site forest the alert carries the flow's raw values and source context: kept (a
    // support row for the forest, or its veto; checked against the model's layout first).
    let values = info.values.clone().unwrap_or_default();
    if !values.is_empty() {
        let cats: Vec<&str> = values.categorical.iter().map(String::as_str).collect();
        let mut row = vec![0f32; model.normaliser.output_dim()];
        if let Err(e) = model
            .normaliser
            .transform_values(&values.numeric, &cats, &mut row)
        {
            return Err(FeedbackError::Mismatch(format!(
                "alert {id} ({}) carries feature values that do not fit the model: {e}",
                alert.place
            )));
        }
    }
    let context = &info.source_context;
    if !context.is_empty()
        && (context.len() != metaids_core::context::CONTEXT_WIDTH
            || context.iter().any(|v| !v.is_finite()))
    {
        return Err(FeedbackError::Mismatch(format!(
            "alert {id} ({}) carries a source context of {} values; expected {} finite values",
            alert.place,
            context.len(),
            metaids_core::context::CONTEXT_WIDTH
        )));
    }
    Ok(SupportFlow {
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
        values,
        context: context.clone(),
    })
}

fn not_alert(alert: &FoundAlert) -> FeedbackError {
    FeedbackError::NotAlert {
        place: alert.place.clone(),
        id: String::new(),
        event_type: alert.event.event_type.clone(),
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
    let flow = alert_flow(library, model, alert)?;
    let info = alert.event.metaids().ok_or_else(|| not_alert(alert))?;
    let id = info.alert_id.clone().unwrap_or_default();
    let threat = match (threat, &info.threat, info.verdict.name()) {
        (Some(t), _, _) => t.to_string(),
        (None, Some(t), "threat") => t.clone(),
        (None, _, verdict) => return Err(FeedbackError::NoThreat { id, verdict }),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn line(id: &str, under_alert: bool) -> String {
        let info = format!(
            r#"{{"alert_id":"{id}","verdict":"threat","threat":"t","distance":1.0,"benign_distance":2.0,"score":0.5,"confidence":0.9,"model":"m","library_version":2,"origin":"x:1"}}"#
        );
        let alert = r#""action":"allowed","gid":1,"signature_id":9100001,"rev":2,"signature":"metaids t","category":"c","severity":2,"metadata":{}"#;
        if under_alert {
            format!(
                r#"{{"timestamp":"2026-01-01T00:00:00.000000+0000","flow_id":7,"event_type":"alert","src_ip":"10.0.0.1","src_port":1,"dest_ip":"10.0.0.2","dest_port":22,"proto":"TCP","alert":{{{alert},"context":{{"metaids":{info}}}}}}}"#
            )
        } else {
            // An alert of an earlier build: metaids at the top level.
            format!(
                r#"{{"timestamp":"2026-01-01T00:00:00.000000+0000","flow_id":7,"event_type":"alert","src_ip":"10.0.0.1","src_port":1,"dest_ip":"10.0.0.2","dest_port":22,"proto":"TCP","alert":{{{alert}}},"metaids":{info}}}"#
            )
        }
    }

    #[test]
    fn alerts_are_found_in_one_pass_in_either_layout() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("eve.json");
        let stats = r#"{"timestamp":"2026-01-01T00:00:00.000000+0000","event_type":"stats","stats":{"uptime":1}}"#;
        let text = [
            line("r-1", true),
            stats.to_string(),
            line("r-2", false),
            line("r-3", true),
        ]
        .join("\n");
        std::fs::write(&path, text).expect("write");
        let found = find_alerts(&path, &["r-3", "r-1", "r-9"]).expect("read");
        let ids: Vec<_> = found
            .iter()
            .map(|f| f.event.metaids().and_then(|m| m.alert_id.clone()))
            .collect();
        assert_eq!(ids, [Some("r-1".to_string()), Some("r-3".to_string())]);
        assert!(found[1].place.ends_with("line 4"), "{}", found[1].place);
        let old = find_alert(&path, "r-2").expect("old layout");
        assert_eq!(old.event.metaids().map(|m| m.library_version), Some(2));
        assert!(matches!(
            find_alert(&path, "r-9"),
            Err(FeedbackError::NotFound { .. })
        ));
        // A damaged line that names a wanted id is an error naming its line, not a skip.
        std::fs::write(&path, "{\"metaids\":{\"alert_id\":\"r-5\"}\n").expect("write");
        let err = find_alert(&path, "r-5").expect_err("damaged");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(matches!(
            find_alert(&dir.path().join("none.json"), "r-1"),
            Err(FeedbackError::Read { line: 0, .. })
        ));
    }
}
