//! Library changes from an uploaded capture. Enrolment: a threat from K flows, chosen by a flow
//! filter and a seeded draw, embedded under the library's site adaptation and guarded exactly as
//! `metaids threat add --pcap` does (the library's `add`: refused past the budget unless forced).
//! Baseline: the site profile learnt from the capture's flows as `metaids baseline --pcap` learns
//! it (the library's `learn_site_profile` and `baseline`).

use std::io::Cursor;

use metaids_core::episode::seeded_subsample;
use metaids_flow::{
    for_each_flow, CaptureSource, FlowConfig, FlowRecord, FlowSelector, FrameBuilder, ReaderConfig,
};
use metaids_library::{
    learn_site_profile, source_addresses, EnrolOptions, Enrolment, LearnOptions, LibraryError,
    ThreatDraft, ThreatLibrary,
};
use metaids_model::ThreatModel;

/// Most flows of an upload that a filter may select (as `threat add`).
pub const MAX_SELECTED: usize = 100_000;

/// What to enrol.
#[derive(Debug, Clone, PartialEq)]
pub struct EnrolRequest {
    /// Threat name.
    pub name: String,
    /// Flow filter (`dport 22 and src 10.0.0.5`; empty: every flow).
    pub select: String,
    /// Support flows drawn (K).
    pub shots: usize,
    /// Seed of the draw.
    pub seed: u64,
    /// Store even when the guard refuses.
    pub force: bool,
    /// Budget instead of the profile's or model's.
    pub budget: Option<f64>,
    /// 1 (high) … 4 (low).
    pub severity: u8,
    /// Category.
    pub category: String,
    /// Free text.
    pub description: String,
    /// Who asks (recorded as the author).
    pub author: String,
}

/// Why an enrolment did not happen.
#[derive(Debug)]
pub enum EnrolFailure {
    /// The request or the upload is unusable (400): the message says which part.
    Bad(String),
    /// The guard refused it (422), with its figures.
    Refused(Box<metaids_library::EnrolmentReport>),
    /// The library said no (busy, damaged, name taken, …).
    Library(LibraryError),
}

impl From<metaids_flow::FlowError> for EnrolFailure {
    fn from(e: metaids_flow::FlowError) -> Self {
        EnrolFailure::Bad(format!("body: {e}"))
    }
}

/// Largest content a gzip-compressed upload may expand to.
pub const MAX_DECOMPRESSED: u64 = 512 << 20;

/// An upload's content (a capture or flow rows): the bytes, or what they expand to when
/// gzip-compressed (at most [`MAX_DECOMPRESSED`]).
fn upload_bytes(bytes: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, EnrolFailure> {
    use std::io::Read;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(std::borrow::Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .take(MAX_DECOMPRESSED + 1)
        .read_to_end(&mut out)
        .map_err(|e| EnrolFailure::Bad(format!("body: gzip data does not decompress: {e}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED {
        return Err(EnrolFailure::Bad(format!(
            "body: the gzip-compressed capture expands past {MAX_DECOMPRESSED} bytes"
        )));
    }
    Ok(std::borrow::Cow::Owned(out))
}

/// The flows of the uploaded capture `bytes` (pcap or pcapng, plain or gzip-compressed) that the
/// flow filter `select` matches (empty: all), as a frame with identifiers, and each one's
/// `(source, locator)`. At most [`MAX_SELECTED`].
pub fn flows_of_upload(
    bytes: &[u8],
    select: &str,
) -> Result<(metaids_core::FlowFrame, Vec<(String, String)>), EnrolFailure> {
    let bytes = upload_bytes(bytes)?;
    let bytes: &[u8] = &bytes;
    let selector =
        FlowSelector::parse(select).map_err(|e| EnrolFailure::Bad(format!("select: {e}")))?;
    let mut source = CaptureSource::new(
        Cursor::new(bytes),
        "upload",
        ReaderConfig::default(),
        FlowConfig::default(),
    )
    .map_err(|e| EnrolFailure::Bad(format!("body: not a pcap or pcapng capture: {e}")))?;
    let mut rows = FrameBuilder::with_identifiers("upload");
    let mut locators: Vec<(String, String)> = Vec::new();
    let report = for_each_flow(
        &mut source,
        |flow: FlowRecord| -> Result<(), EnrolFailure> {
            if selector.matches(&flow) {
                if locators.len() >= MAX_SELECTED {
                    return Err(EnrolFailure::Bad(format!(
                        "select: more than {MAX_SELECTED} flows match; narrow it"
                    )));
                }
                locators.push((
                    "upload".to_string(),
                    format!("flow {} at {}", flow.flow_id(), flow.timestamp()),
                ));
                rows.push(&flow);
            }
            Ok(())
        },
    )?;
    if let Some(e) = &report.ended_early {
        tracing::warn!("uploaded capture ended early: {e}");
    }
    if locators.is_empty() {
        return Err(EnrolFailure::Bad(format!(
            "select: no flow of the capture ({} flows) matches {select:?}",
            report.flows()
        )));
    }
    Ok((rows.take(), locators))
}

/// Flows of an upload: the frame, the rows to draw from, and every row's `(source, locator)`.
pub type UploadRows = (metaids_core::FlowFrame, Vec<usize>, Vec<(String, String)>);

/// The rows of an uploaded flow file `bytes` (CSV of the model's dataset, plain or
/// gzip-compressed) whose label is `label` (`None`: all), with `("upload", "row N")` locators. A
/// malformed row is an error naming its line.
pub fn rows_of_upload(
    model: &ThreatModel,
    bytes: &[u8],
    label: Option<&str>,
) -> Result<UploadRows, EnrolFailure> {
    let bytes = upload_bytes(bytes)?;
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let header = metaids_core::schema::strip_bom(first);
    let format = metaids_core::schema::FileFormat::detect(header).ok_or_else(|| {
        EnrolFailure::Bad(format!(
            "body: the first line is not the header of a known flow format: {:?}",
            String::from_utf8_lossy(&header[..header.len().min(80)])
        ))
    })?;
    let kind = model.normaliser.kind;
    if format.kind() != kind {
        return Err(EnrolFailure::Bad(format!(
            "body: {} rows, but the model was trained on {kind} data",
            format.kind()
        )));
    }
    let mut frame = metaids_core::FlowFrame::new(kind.layout());
    let mut skips = metaids_ingest::SkipLog::default();
    metaids_ingest::read_from(
        &mut frame,
        &bytes[..],
        "upload",
        format,
        metaids_ingest::BadRowPolicy::Error,
        &mut skips,
    )
    .map_err(|e| EnrolFailure::Bad(format!("body: {e}")))?;
    let rows: Vec<usize> = (0..frame.len())
        .filter(|&r| label.is_none_or(|l| frame.label(r) == l))
        .collect();
    if rows.is_empty() {
        return Err(EnrolFailure::Bad(format!(
            "label: no row of the upload ({} rows) is labelled {:?}",
            frame.len(),
            label.unwrap_or_default()
        )));
    }
    let locators = (0..frame.len())
        .map(|r| ("upload".to_string(), format!("row {}", r + 1)))
        .collect();
    Ok((frame, rows, locators))
}

/// Enrols `req` from K of the flow-file rows `bytes` labelled `label` (all when `None`).
pub fn enrol_from_rows(
    model: &ThreatModel,
    path: &std::path::Path,
    bytes: &[u8],
    label: Option<&str>,
    req: &EnrolRequest,
) -> Result<Enrolment, EnrolFailure> {
    flows_model(model, "threat add")?;
    check_shots(req)?;
    let (frame, rows, locators) = rows_of_upload(model, bytes, label)?;
    enrol_from_frame(model, path, &frame, &rows, &locators, req)
}

/// Uploads are flows (a capture's or flow rows): a web-request model's service is taught from the
/// CLI, whose changes it reloads.
fn flows_model(model: &ThreatModel, what: &str) -> Result<(), EnrolFailure> {
    if model.normaliser.kind == metaids_core::schema::DatasetKind::HttpRequests {
        return Err(EnrolFailure::Bad(format!(
            "body: this service's model scores web requests, and {what} from an upload takes flows; use `metaids {what} --model MODEL --library LIBRARY --pcap FILE` (or --access-log, --request-file) on the library: the service arms the new version at once"
        )));
    }
    Ok(())
}

fn check_shots(req: &EnrolRequest) -> Result<(), EnrolFailure> {
    if req.shots == 0 || req.shots > 1000 {
        return Err(EnrolFailure::Bad(format!(
            "shots: expected 1 to 1000, found {}",
            req.shots
        )));
    }
    Ok(())
}

/// Enrols `req` from the capture `bytes` into the library at `path` (opened for writing).
pub fn enrol_from_capture(
    model: &ThreatModel,
    path: &std::path::Path,
    bytes: &[u8],
    req: &EnrolRequest,
) -> Result<Enrolment, EnrolFailure> {
    flows_model(model, "threat add")?;
    check_shots(req)?;
    let (frame, locators) = flows_of_upload(bytes, &req.select)?;
    let all: Vec<usize> = (0..frame.len()).collect();
    enrol_from_frame(model, path, &frame, &all, &locators, req)
}

/// Enrols `req` from K of `rows` of `frame` (a seeded draw), embedded under the library's site
/// adaptation.
fn enrol_from_frame(
    model: &ThreatModel,
    path: &std::path::Path,
    frame: &metaids_core::FlowFrame,
    rows: &[usize],
    locators: &[(String, String)],
    req: &EnrolRequest,
) -> Result<Enrolment, EnrolFailure> {
    let chosen = seeded_subsample(rows, req.shots, req.seed);
    let lib = ThreatLibrary::open(path, model).map_err(EnrolFailure::Library)?;
    // Embedded as the library's flows are: under its site profile's adaptation, if any.
    let (_, profile) = lib.reference(model).map_err(EnrolFailure::Library)?;
    let adaptation = profile.and_then(|p| p.adaptation);
    let normaliser = model
        .site_normaliser(adaptation.as_ref())
        .map_err(|e| EnrolFailure::Library(LibraryError::Model(Box::new(e))))?;
    let support = metaids_library::support_flows(model, &normaliser, frame, &chosen, locators)
        .map_err(EnrolFailure::Library)?;
    add_guarded(model, &lib, support, req)
}

/// What `POST /baseline` learns from.
#[derive(Debug, Clone, PartialEq)]
pub struct BaselineRequest {
    /// Flow filter (empty: every flow).
    pub select: String,
    /// Budget, per-source cap, prototype share, seed, adaptation, update, force.
    pub options: LearnOptions,
    /// Who asks (recorded as the author).
    pub author: String,
}

/// Learns the site profile from the capture `bytes` and stores it in the library at `path` with
/// every threat refit on it: the new version, the profile's figures and the joint calibration.
pub fn baseline_from_capture(
    model: &ThreatModel,
    path: &std::path::Path,
    bytes: &[u8],
    req: &BaselineRequest,
) -> Result<serde_json::Value, EnrolFailure> {
    flows_model(model, "baseline")?;
    let (frame, _) = flows_of_upload(bytes, &req.select)?;
    let rows: Vec<usize> = (0..frame.len()).collect();
    let sources = source_addresses(&frame, &rows);
    let lib = ThreatLibrary::open(path, model).map_err(EnrolFailure::Library)?;
    let learnt = learn_site_profile(model, Some(&lib), &frame, &rows, &sources, req.options)
        .map_err(EnrolFailure::Library)?;
    let p = &learnt.profile;
    let b = lib
        .baseline(model, p, vec!["api upload".to_string()], &req.author)
        .map_err(EnrolFailure::Library)?;
    let r = &b.report;
    Ok(serde_json::json!({
        "library_version": b.version,
        "flows_offered": p.flows_offered,
        "flows_kept": p.flows_kept,
        "per_source_cap": p.per_source_cap,
        "capped_sources": p.capped.len(),
        "calibration_rows": p.calibration_rows(),
        "budget": p.asked_budget(),
        "calibrated_at": p.budget,
        "adaptation": p.adaptation.is_some(),
        "threat_rule": p.threat_rule.name(),
        "flagged_before": learnt.flagged_before,
        "reembedded_flows": b.reembedded.as_ref().map(|x| x.flows),
        "joint": {
            "rows": r.rows,
            "level": r.level,
            "threat_flagged": r.threat_flagged,
            "unknown_flagged": r.unknown_flagged,
            "fpr": r.fpr,
        },
        "threats": b.threats.iter().zip(&r.support_flagged).map(|(t, (k, n))| serde_json::json!({
            "name": t.name,
            "threshold": t.threshold,
            "support_flagged": k,
            "support": n,
        })).collect::<Vec<_>>(),
    }))
}

/// Enrols `req` from the flows of `alerts` (their embeddings; alerts keep no feature values, so a
/// later change of the site adaptation cannot carry them), each checked to come from this model and
/// library, guarded as any enrolment.
pub fn enrol_from_alerts(
    model: &ThreatModel,
    path: &std::path::Path,
    alerts: &[metaids_detect::FoundAlert],
    req: &EnrolRequest,
) -> Result<Enrolment, EnrolFailure> {
    let lib = ThreatLibrary::open(path, model).map_err(EnrolFailure::Library)?;
    let support = alerts
        .iter()
        .map(|a| metaids_detect::alert_flow(&lib, model, a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EnrolFailure::Bad(format!("alerts: {e}")))?;
    add_guarded(model, &lib, support, req)
}

/// Stores the threat of `req` with `support` through the library's guard.
fn add_guarded(
    model: &ThreatModel,
    lib: &ThreatLibrary,
    support: Vec<metaids_library::SupportFlow>,
    req: &EnrolRequest,
) -> Result<Enrolment, EnrolFailure> {
    let draft = ThreatDraft {
        name: req.name.clone(),
        description: req.description.clone(),
        severity: req.severity,
        category: req.category.clone(),
        support,
        author: req.author.clone(),
    };
    let options = EnrolOptions {
        force: req.force,
        budget: req.budget,
    };
    match lib.add(model, &draft, options) {
        Ok(e) => Ok(e),
        Err(LibraryError::Refused { report, .. }) => Err(EnrolFailure::Refused(report)),
        Err(e) => Err(EnrolFailure::Library(e)),
    }
}
