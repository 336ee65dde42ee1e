//! Enrolment through the API: a threat from K flows of an uploaded capture, chosen by a flow
//! filter and a seeded draw, embedded under the library's site adaptation and guarded exactly as
//! `metaids threat add --pcap` does (the library's `add`: refused past the budget unless forced).

use std::io::Cursor;

use metaids_core::episode::seeded_subsample;
use metaids_flow::{
    for_each_flow, CaptureSource, FlowConfig, FlowRecord, FlowSelector, FrameBuilder, ReaderConfig,
};
use metaids_library::{EnrolOptions, Enrolment, LibraryError, ThreatDraft, ThreatLibrary};
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

/// Enrols `req` from the capture `bytes` into the library at `path` (opened for writing).
pub fn enrol_from_capture(
    model: &ThreatModel,
    path: &std::path::Path,
    bytes: &[u8],
    req: &EnrolRequest,
) -> Result<Enrolment, EnrolFailure> {
    if req.shots == 0 || req.shots > 1000 {
        return Err(EnrolFailure::Bad(format!(
            "shots: expected 1 to 1000, found {}",
            req.shots
        )));
    }
    let selector =
        FlowSelector::parse(&req.select).map_err(|e| EnrolFailure::Bad(format!("select: {e}")))?;
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
            "select: no flow of the capture ({} flows) matches {:?}",
            report.flows(),
            req.select
        )));
    }
    let frame = rows.take();
    let all: Vec<usize> = (0..frame.len()).collect();
    let chosen = seeded_subsample(&all, req.shots, req.seed);
    let lib = ThreatLibrary::open(path, model).map_err(EnrolFailure::Library)?;
    // Embedded as the library's flows are: under its site profile's adaptation, if any.
    let (_, profile) = lib.reference(model).map_err(EnrolFailure::Library)?;
    let adaptation = profile.and_then(|p| p.adaptation);
    let normaliser = model
        .site_normaliser(adaptation.as_ref())
        .map_err(|e| EnrolFailure::Library(LibraryError::Model(Box::new(e))))?;
    let support = metaids_library::support_flows(model, &normaliser, &frame, &chosen, &locators)
        .map_err(EnrolFailure::Library)?;
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
