//! The HTTP API (axum), JSON under `/api/v1`, Prometheus text at `/metrics`. Every route but
//! `/api/v1/health` needs a bearer token when a tokens file is configured (read role for reads,
//! write role for changes, which are recorded with the token's name as author); without one the
//! API is read-only. Errors are RFC 9457 problem documents; bodies are size-limited. Library work
//! runs on blocking threads: the scoring worker is never waited on.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metaids_library::{LibraryError, ThreatLibrary};
use serde::Deserialize;
use serde_json::{json, Value};

use metaids_detect::{
    apply_feedback, find_alerts, FeedbackError, FeedbackOutcome, FoundAlert, Judgement,
};

use crate::auth::{Role, Tokens};
use crate::enrol::{
    baseline_from_capture, enrol_from_alerts, enrol_from_capture, enrol_from_rows, BaselineRequest,
    EnrolFailure, EnrolRequest,
};
use crate::state::{threat_json, ArmedView, RouteLabel, Shared};

/// The OpenAPI document of this API (served at `/api/v1/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Largest page of `GET /alerts`.
pub const MAX_ALERT_PAGE: usize = 1000;

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// Worker and metrics state.
    pub shared: Arc<Shared>,
    /// Known tokens.
    pub tokens: Arc<Tokens>,
    /// The threat library file.
    pub library: PathBuf,
    /// The EVE file (feedback on an alert no longer among the recent ones reads it).
    pub eve: PathBuf,
    /// The model (library identity checks).
    pub model: Arc<crate::state::ModelCell>,
}

/// An RFC 9457 problem document.
#[derive(Debug)]
pub struct Problem {
    status: StatusCode,
    detail: String,
}

impl Problem {
    /// A problem with `status` and a sentence saying what is wrong.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            status,
            detail: detail.into(),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("Error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        let mut r = (self.status, body.to_string()).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"metaids\""),
            );
        }
        r
    }
}

type ApiResult = std::result::Result<Response, Problem>;

fn library_problem(e: LibraryError) -> Problem {
    let status = match &e {
        LibraryError::UnknownThreat { .. } | LibraryError::UnknownVersion { .. } => {
            StatusCode::NOT_FOUND
        }
        LibraryError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Problem::new(status, e.to_string())
}

/// The token's name when it may do `need`.
fn authorize(api: &Api, headers: &HeaderMap, need: Role) -> std::result::Result<String, Problem> {
    if !api.tokens.enabled() {
        return match need {
            Role::Read => Ok("anonymous".into()),
            Role::Write => Err(Problem::new(
                StatusCode::FORBIDDEN,
                "the API is read-only: no tokens file is configured (serve --tokens)",
            )),
        };
    }
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(presented) = presented else {
        return Err(Problem::new(
            StatusCode::UNAUTHORIZED,
            "an Authorization: Bearer TOKEN header is required",
        ));
    };
    match api.tokens.check(presented) {
        None => Err(Problem::new(StatusCode::UNAUTHORIZED, "unknown token")),
        Some((name, role)) if role >= need => Ok(name),
        Some((name, _)) => Err(Problem::new(
            StatusCode::FORBIDDEN,
            format!("token {name:?} has the read role; this change needs a write token"),
        )),
    }
}

/// Runs library work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::result::Result<T, Problem> + Send + 'static,
) -> std::result::Result<T, Problem> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("library task failed: {e}"),
        )
    })?
}

/// A library change: on a blocking thread, one writer at a time within the process; once it is
/// committed the worker is told, so it arms the new version at its next batch.
async fn change<T: Send + 'static>(
    api: Api,
    f: impl FnOnce(&Api) -> std::result::Result<T, Problem> + Send + 'static,
) -> std::result::Result<T, Problem> {
    let shared = Arc::clone(&api.shared);
    let done = blocking(move || {
        let _one = api
            .shared
            .library_write
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&api)
    })
    .await?;
    shared.library_changed();
    Ok(done)
}

/// A change through the library file itself (opened for writing, checked against the model).
fn open_write(api: &Api) -> std::result::Result<ThreatLibrary, Problem> {
    ThreatLibrary::open(&api.library, &api.model.get()).map_err(library_problem)
}

fn query_problem(e: QueryRejection) -> Problem {
    Problem::new(
        StatusCode::BAD_REQUEST,
        format!("bad query: {}", e.body_text()),
    )
}

fn open_read(api: &Api) -> std::result::Result<ThreatLibrary, Problem> {
    ThreatLibrary::open_read_only_for(&api.library, &api.model.get()).map_err(library_problem)
}

async fn health() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(api): State<Api>, headers: HeaderMap) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let s = api.shared.status();
    let ready = s.ready && !api.shared.stopping();
    let body = json!({
        "ready": ready,
        "library_version": s.library_version,
        "threats": s.threats,
        "model": s.model_version,
        "site_profile": s.site_profile,
        "files_done": s.files_done,
        "last_warning": s.last_warning,
        "uptime_s": api.shared.uptime().as_secs(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(body)).into_response())
}

fn armed(api: &Api) -> std::result::Result<Arc<ArmedView>, Problem> {
    api.shared.armed().ok_or_else(|| {
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no library version is armed yet",
        )
    })
}

/// The armed version's threats (what decides flows now; after a change, until the worker's next
/// batch arms it, the previous version — `library_version` says which).
async fn threats(State(api): State<Api>, headers: HeaderMap) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let view = armed(&api)?;
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        view.list_json.clone(),
    )
        .into_response())
}

async fn threat(State(api): State<Api>, headers: HeaderMap, Path(name): Path<String>) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let view = armed(&api)?;
    let Some(t) = view.threats.iter().find(|t| t.name == name) else {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            format!(
                "no threat {name:?} in the armed library version {}",
                view.version
            ),
        ));
    };
    let mut v = threat_json(t);
    v["enrolment"] = serde_json::to_value(&t.report).unwrap_or(Value::Null);
    v["library_version"] = json!(view.version);
    Ok(Json(v).into_response())
}

async fn threat_history(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let body = blocking(move || {
        let lib = open_read(&api)?;
        let all = lib.history().map_err(library_problem)?;
        // The versions that changed this threat: it appears, disappears, or the change names it.
        let mut out = Vec::new();
        let mut had = false;
        for v in all {
            let has = v.threats.contains(&name);
            if has != had || v.change.contains(&name) {
                out.push(v);
            }
            had = has;
        }
        if out.is_empty() {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("no version of the library has a threat {name:?}"),
            ));
        }
        Ok(json!({ "threat": name, "versions": out }))
    })
    .await?;
    Ok(Json(body).into_response())
}

async fn history(State(api): State<Api>, headers: HeaderMap) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let body = blocking(move || {
        let lib = open_read(&api)?;
        Ok(json!({ "versions": lib.history().map_err(library_problem)? }))
    })
    .await?;
    Ok(Json(body).into_response())
}

async fn remove_threat(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    let author = authorize(&api, &headers, Role::Write)?;
    let version = change(api, move |api| {
        open_write(api)?
            .remove(&name, &format!("api:{author}"))
            .map_err(library_problem)
    })
    .await?;
    Ok(Json(json!({ "library_version": version })).into_response())
}

/// `POST /threats` query: the threat and how its support is chosen from the uploaded capture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrolQuery {
    name: String,
    select: Option<String>,
    label: Option<String>,
    shots: Option<usize>,
    seed: Option<u64>,
    force: Option<bool>,
    budget: Option<f64>,
    severity: Option<u8>,
    category: Option<String>,
    description: Option<String>,
}

/// `POST /threats` JSON body: enrolment from alerts.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsBody {
    /// Alert ids (`alert.context.metaids.alert_id`) whose flows are the support.
    alerts: Vec<String>,
}

/// The alerts `ids`: from the recent alerts, the rest from the EVE file in one pass; 404 naming
/// those found in neither.
fn gather_alerts(api: &Api, ids: &[String]) -> std::result::Result<Vec<FoundAlert>, Problem> {
    let mut found = Vec::with_capacity(ids.len());
    let mut missing = Vec::new();
    for id in ids {
        match api.shared.find_alert(id) {
            Some(line) => found.push(FoundAlert {
                event: serde_json::from_str(&line).map_err(|e| {
                    Problem::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("recent alert {id} does not parse: {e}"),
                    )
                })?,
                place: format!("{} (recent alerts)", api.eve.display()),
            }),
            None => missing.push(id.as_str()),
        }
    }
    if !missing.is_empty() {
        let from_file = find_alerts(&api.eve, &missing).map_err(feedback_problem)?;
        let got: std::collections::BTreeSet<String> = from_file
            .iter()
            .filter_map(|f| f.event.metaids().and_then(|m| m.alert_id.clone()))
            .collect();
        let absent: Vec<&str> = missing
            .iter()
            .copied()
            .filter(|id| !got.contains(*id))
            .collect();
        if !absent.is_empty() {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!(
                    "alerts: not among the recent alerts nor in {}: {}",
                    api.eve.display(),
                    absent.join(", ")
                ),
            ));
        }
        found.extend(from_file);
    }
    Ok(found)
}

/// Enrols a threat: from K flows of the capture in the body (pcap or pcapng bytes, plain or
/// gzip-compressed), from K flow rows of a CSV body (`text/csv`, chosen by `label`), or from the
/// flows of the alerts a JSON body names; guarded as `threat add` is;
/// the worker arms it at its next micro-batch.
async fn enrol(
    State(api): State<Api>,
    headers: HeaderMap,
    query: std::result::Result<Query<EnrolQuery>, QueryRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult {
    let author = authorize(&api, &headers, Role::Write)?;
    let Query(q) = query.map_err(query_problem)?;
    let bytes = body.map_err(body_problem)?;
    // A JSON body names alerts whose flows are the support; a text/csv body holds flow rows; any
    // other body is a capture.
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let from_alerts = content_type.starts_with("application/json");
    let from_rows = content_type.starts_with("text/csv");
    if from_rows && q.select.is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "select applies to capture uploads; flow rows are chosen with label",
        ));
    }
    if !from_rows && q.label.is_some() {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "label applies to flow rows (a text/csv body)",
        ));
    }
    let label = q.label.clone();
    let ids = if from_alerts {
        if q.select.is_some() || q.shots.is_some() || q.seed.is_some() {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "select, shots and seed apply to capture uploads, not to enrolment from alerts",
            ));
        }
        let body: AlertsBody = serde_json::from_slice(&bytes)
            .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))?;
        if body.alerts.is_empty() || body.alerts.len() > MAX_ALERT_PAGE {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "alerts: expected 1 to {MAX_ALERT_PAGE} alert ids, found {}",
                    body.alerts.len()
                ),
            ));
        }
        Some(body.alerts)
    } else {
        None
    };
    let req = EnrolRequest {
        name: q.name,
        select: q.select.unwrap_or_default(),
        shots: q.shots.unwrap_or(5),
        seed: q.seed.unwrap_or(1),
        force: q.force.unwrap_or(false),
        budget: q.budget,
        severity: q.severity.unwrap_or(2),
        category: q.category.unwrap_or_else(|| "unclassified".into()),
        description: q.description.unwrap_or_default(),
        author: format!("api:{author}"),
    };
    let done = change(api, move |api| {
        let result = match ids {
            Some(ids) => {
                let alerts = gather_alerts(api, &ids)?;
                enrol_from_alerts(&api.model.get(), &api.library, &alerts, &req)
            }
            None if from_rows => {
                enrol_from_rows(&api.model.get(), &api.library, &bytes, label.as_deref(), &req)
            }
            None => enrol_from_capture(&api.model.get(), &api.library, &bytes, &req),
        };
        match result {
            Ok(e) => Ok(e),
            Err(EnrolFailure::Bad(m)) => Err(Problem::new(StatusCode::BAD_REQUEST, m)),
            Err(EnrolFailure::Refused(report)) => Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "enrolment of {:?} refused: flagging its support would flag {:.2}% of the benign reference (budget {:.2}%); weakest support flows: {}",
                    req.name,
                    report.fpr * 100.0,
                    report.budget * 100.0,
                    report.weakest.join("; ")
                ),
            )),
            Err(EnrolFailure::Library(e @ LibraryError::DuplicateName { .. })) => {
                Err(Problem::new(StatusCode::CONFLICT, e.to_string()))
            }
            Err(EnrolFailure::Library(e @ LibraryError::Invalid { .. })) => {
                Err(Problem::new(StatusCode::BAD_REQUEST, e.to_string()))
            }
            Err(EnrolFailure::Library(e)) => Err(library_problem(e)),
        }
    })
    .await?;
    let mut v = threat_json(&done.threat);
    v["enrolment"] = serde_json::to_value(&done.threat.report).unwrap_or(Value::Null);
    v["library_version"] = json!(done.version);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `POST /rollback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// The version whose threats (and site profile) the new version takes.
    version: u64,
}

fn body_problem(e: BytesRejection) -> Problem {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    Problem::new(status, format!("body: {}", e.body_text()))
}

fn json_problem(e: JsonRejection) -> Problem {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    Problem::new(status, format!("bad request body: {}", e.body_text()))
}

async fn rollback(
    State(api): State<Api>,
    headers: HeaderMap,
    body: std::result::Result<Json<RollbackBody>, JsonRejection>,
) -> ApiResult {
    let author = authorize(&api, &headers, Role::Write)?;
    let Json(body) = body.map_err(json_problem)?;
    let version = change(api, move |api| {
        open_write(api)?
            .rollback(body.version, &format!("api:{author}"))
            .map_err(library_problem)
    })
    .await?;
    Ok(Json(json!({ "library_version": version, "restored": body.version })).into_response())
}

/// `POST /threats/{name}/rollback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThreatRollbackBody {
    /// The version whose copy of the threat the new version takes.
    version: u64,
}

/// Restores one threat as it was in an earlier version; the others stay as they are.
async fn rollback_threat(
    State(api): State<Api>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: std::result::Result<Json<ThreatRollbackBody>, JsonRejection>,
) -> ApiResult {
    let author = authorize(&api, &headers, Role::Write)?;
    let Json(body) = body.map_err(json_problem)?;
    let done = change(api, move |api| {
        open_write(api)?
            .rollback_threat(
                &api.model.get(),
                &name,
                body.version,
                &format!("api:{author}"),
            )
            .map_err(|e| match e {
                e @ LibraryError::Invalid { .. } => {
                    Problem::new(StatusCode::CONFLICT, e.to_string())
                }
                e => library_problem(e),
            })
    })
    .await?;
    let mut v = threat_json(&done.threat);
    v["library_version"] = json!(done.version);
    v["restored_from"] = json!(body.version);
    Ok(Json(v).into_response())
}

/// `POST /feedback` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    /// The alert's `metaids.alert_id`.
    alert: String,
    /// `confirm` or `reject`.
    verdict: String,
    /// The threat the flow belongs to (needed for unknown-anomaly alerts).
    threat: Option<String>,
    /// Store a doubtful confirmation, or a refit the guard refuses.
    force: Option<bool>,
}

/// An analyst's verdict on an alert (from the recent alerts, else from the EVE file): the flow
/// becomes a support (`confirm`) or negative (`reject`) example of its threat, as `metaids
/// feedback` does.
async fn feedback(
    State(api): State<Api>,
    headers: HeaderMap,
    body: std::result::Result<Json<FeedbackBody>, JsonRejection>,
) -> ApiResult {
    let author = authorize(&api, &headers, Role::Write)?;
    let Json(body) = body.map_err(json_problem)?;
    let judgement = match body.verdict.as_str() {
        "confirm" => Judgement::Confirm,
        "reject" => Judgement::Reject,
        other => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("verdict: expected \"confirm\" or \"reject\", found {other:?}"),
            ))
        }
    };
    if body.alert.is_empty() || body.alert.len() > 128 {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "alert: expected an alert id (<run id>-<sequence>)",
        ));
    }
    let (status, out) = change(api, move |api| {
        let alert = gather_alerts(api, std::slice::from_ref(&body.alert))?
            .pop()
            .ok_or_else(|| Problem::new(StatusCode::NOT_FOUND, "alert: not found"))?;
        let lib = open_write(api)?;
        let outcome = apply_feedback(
            &lib,
            &api.model.get(),
            &alert,
            judgement,
            body.threat.as_deref(),
            body.force.unwrap_or(false),
            &format!("api:{author}"),
        )
        .map_err(feedback_problem)?;
        Ok(match outcome {
            FeedbackOutcome::AlreadyRecorded(what) => {
                (StatusCode::OK, json!({ "changed": false, "detail": what }))
            }
            FeedbackOutcome::Applied {
                enrolment,
                forced_doubt,
            } => {
                let mut v = threat_json(&enrolment.threat);
                v["changed"] = json!(true);
                v["library_version"] = json!(enrolment.version);
                v["forced_doubt"] = json!(forced_doubt);
                v["guard"] = serde_json::to_value(&enrolment.threat.report).unwrap_or(Value::Null);
                (StatusCode::OK, v)
            }
        })
    })
    .await?;
    Ok((status, Json(out)).into_response())
}

fn feedback_problem(e: FeedbackError) -> Problem {
    let e = match e {
        FeedbackError::Library(l)
            if !matches!(
                l,
                LibraryError::Refused { .. } | LibraryError::Contradiction { .. }
            ) =>
        {
            return library_problem(l)
        }
        e => e,
    };
    let status = match &e {
        FeedbackError::NotFound { .. } => StatusCode::NOT_FOUND,
        FeedbackError::NotAlert { .. } | FeedbackError::NoThreat { .. } => StatusCode::BAD_REQUEST,
        FeedbackError::Library(LibraryError::Contradiction { .. }) => StatusCode::CONFLICT,
        FeedbackError::Mismatch(_) | FeedbackError::Doubt { .. } | FeedbackError::Library(_) => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        FeedbackError::Read { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Problem::new(status, e.to_string())
}

/// `GET /alerts` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertsQuery {
    since: Option<u64>,
    limit: Option<usize>,
}

async fn alerts(
    State(api): State<Api>,
    headers: HeaderMap,
    query: std::result::Result<Query<AlertsQuery>, QueryRejection>,
) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let Query(q) = query.map_err(query_problem)?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_ALERT_PAGE {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            format!("limit: expected 1 to {MAX_ALERT_PAGE}, found {limit}"),
        ));
    }
    let page = api.shared.alerts(q.since.unwrap_or(0), limit);
    // The EVE lines are JSON already: spliced in, not parsed again.
    let mut body =
        String::with_capacity(64 + page.alerts.iter().map(|a| a.1.len() + 24).sum::<usize>());
    body.push_str("{\"alerts\":[");
    for (i, (seq, line)) in page.alerts.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("{{\"seq\":{seq},\"event\":{line}}}"));
    }
    body.push_str(&format!(
        "],\"next\":{},\"missed\":{}}}",
        page.next, page.missed
    ));
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

async fn baseline(State(api): State<Api>, headers: HeaderMap) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    let body = blocking(move || {
        let lib = open_read(&api)?;
        let current = lib.current().map_err(library_problem)?;
        match &current.site {
            Some(site) => Ok(json!({ "library_version": current.version, "site": site })),
            None => Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!(
                    "library version {} has no site profile: thresholds are calibrated on the model's training data (run metaids baseline)",
                    current.version
                ),
            )),
        }
    })
    .await?;
    Ok(Json(body).into_response())
}

/// `POST /baseline` query: how the profile is learnt from the uploaded capture (defaults as
/// `metaids baseline`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BaselineQuery {
    select: Option<String>,
    budget: Option<f64>,
    per_source_cap: Option<f64>,
    prototype_share: Option<f64>,
    confidence: Option<f64>,
    in_sample_rank: Option<bool>,
    seed: Option<u64>,
    adapt: Option<String>,
    threat_rule: Option<String>,
    source_context: Option<bool>,
    update: Option<bool>,
    force: Option<bool>,
}

/// Learns the site profile from the capture in the body (the site's benign traffic) and stores it
/// with every threat refit on it; the worker arms it at its next micro-batch.
async fn learn_baseline(
    State(api): State<Api>,
    headers: HeaderMap,
    query: std::result::Result<Query<BaselineQuery>, QueryRejection>,
    body: std::result::Result<Bytes, BytesRejection>,
) -> ApiResult {
    let author = authorize(&api, &headers, Role::Write)?;
    let Query(q) = query.map_err(query_problem)?;
    let bytes = body.map_err(body_problem)?;
    let defaults = metaids_decide::ProfileOptions::default();
    let adapt = match q.adapt.as_deref().unwrap_or("normaliser") {
        "normaliser" => true,
        "none" => false,
        other => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("adapt: expected normaliser or none, found {other:?}"),
            ))
        }
    };
    let threat_rule: metaids_decide::ThreatRule = q
        .threat_rule
        .as_deref()
        .unwrap_or("forest")
        .parse()
        .map_err(|e: metaids_decide::DecideError| {
            Problem::new(StatusCode::BAD_REQUEST, e.to_string())
        })?;
    let force = q.force.unwrap_or(false);
    let req = BaselineRequest {
        select: q.select.unwrap_or_default(),
        options: metaids_library::LearnOptions {
            profile: metaids_decide::ProfileOptions {
                budget: q.budget.unwrap_or(defaults.budget),
                per_source_cap: q.per_source_cap.unwrap_or(defaults.per_source_cap),
                prototype_share: q.prototype_share.unwrap_or(defaults.prototype_share),
                seed: q.seed.unwrap_or(defaults.seed),
                confidence: q.confidence,
                in_sample: q.in_sample_rank.unwrap_or(false),
                force,
                ..defaults
            },
            adapt,
            update: q.update.unwrap_or(false),
            force,
            threat_rule,
            source_context: threat_rule == metaids_decide::ThreatRule::Forest
                && q.source_context.unwrap_or(true),
        },
        author: format!("api:{author}"),
    };
    let done = change(api, move |api| {
        baseline_from_capture(&api.model.get(), &api.library, &bytes, &req).map_err(|e| match e {
            EnrolFailure::Bad(m) => Problem::new(StatusCode::BAD_REQUEST, m),
            EnrolFailure::Refused(_) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "refused by the guard")
            }
            EnrolFailure::Library(e @ LibraryError::BaselineExists { .. }) => {
                Problem::new(StatusCode::CONFLICT, e.to_string())
            }
            EnrolFailure::Library(e @ LibraryError::AttackWindow { .. }) => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
            }
            EnrolFailure::Library(e @ LibraryError::Invalid { .. }) => {
                Problem::new(StatusCode::BAD_REQUEST, e.to_string())
            }
            EnrolFailure::Library(e) => library_problem(e),
        })
    })
    .await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn metrics(State(api): State<Api>, headers: HeaderMap) -> ApiResult {
    authorize(&api, &headers, Role::Read)?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.shared.metrics.encode(),
    )
        .into_response())
}

async fn not_found(State(api): State<Api>, method: Method, uri: axum::http::Uri) -> Response {
    let r = Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route {method} {}", uri.path()),
    )
    .into_response();
    count(&api, "unmatched", &method, r.status());
    r
}

fn count(api: &Api, route: &str, method: &Method, status: StatusCode) {
    api.shared
        .metrics
        .requests
        .get_or_create(&RouteLabel {
            route: route.to_string(),
            method: method.as_str().to_string(),
            status: status.as_u16(),
        })
        .inc();
}

async fn count_requests(State(api): State<Api>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = req.method().clone();
    let r = next.run(req).await;
    count(&api, &route, &method, r.status());
    r
}

/// The API's routes.
pub fn router(api: Api, max_body_bytes: usize) -> Router {
    Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/ready", get(ready))
        .route("/api/v1/threats", get(threats).post(enrol))
        .route("/api/v1/threats/{name}", get(threat).delete(remove_threat))
        .route("/api/v1/threats/{name}/history", get(threat_history))
        .route("/api/v1/history", get(history))
        .route("/api/v1/threats/{name}/rollback", post(rollback_threat))
        .route("/api/v1/rollback", post(rollback))
        .route("/api/v1/feedback", post(feedback))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/baseline", get(baseline).post(learn_baseline))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(api.clone(), count_requests))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(api)
}
