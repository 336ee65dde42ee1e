//! metaids-detect: the detector behind `metaids detect`. Every flow gets a verdict — benign, a known
//! threat (name, distance, confidence) or an unknown anomaly (nearest threat and distance) — at the
//! model's calibrated false-positive budget; alerts are written as Suricata EVE JSON lines, so SIEM
//! pipelines ingest them unchanged, deduplicated per (source, signature, window), and responders
//! (nftables sets, a webhook) fire only after the alerts are on disk.
//!
//! Pipeline: flows from the flow engine ([`metaids_flow::FlowRecord`]) or a CIC frame → micro-batch
//! → preprocessing ([`metaids_core::preprocess::Normaliser`]) → embedding ([`Detector::embed`]) →
//! [`Detector::decide`] → [`Deduplicator`] → explanation → [`Sink`]s ([`EveSink`], [`VerdictSink`],
//! then [`NftablesSink`], [`WebhookSink`]). Threats are the decision core's one [`Threat`] type, read
//! from a threat library or an exported threat document ([`ArmedThreats`]); the verdict rule is the
//! decision core's ([`metaids_decide::verdict`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use metaids_detect::{ArmedThreats, Detector, DetectorOptions, EveSink, Pipeline, PipelineOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Arc::new(metaids_model::load("cic.model".as_ref())?);
//! // A threat library file, or what `metaids threat export` wrote.
//! let set = ArmedThreats::load("threats.json".as_ref(), &model)?;
//! let detector = Detector::new(model, set.threats, DetectorOptions::default(), set.library_version)?;
//! let eve = EveSink::create("alerts.json".as_ref(), false)?;
//! let mut pipeline = Pipeline::new(detector, vec![Box::new(eve)], PipelineOptions::default())?;
//! let capture = std::io::BufReader::new(std::fs::File::open("capture.pcap")?);
//! pipeline.push_capture(capture, "capture.pcap", Default::default())?;
//! print!("{}", pipeline.finish()?);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

pub mod dedup;
pub mod detector;
pub mod drift;
pub mod error;
pub mod eve;
pub mod feedback;
pub mod forward;
pub mod nft;
pub mod pipeline;
pub mod requests;
pub mod sink;
pub mod webhook;

pub use dedup::{Deduplicator, RateLimit};
pub use detector::{
    model_version, Detector, DetectorOptions, Explanation, FeatureEffect, NearestPrototype,
    Verdict, VerdictKind,
};
pub use drift::{DriftConfig, DriftMonitor, DriftReport, WindowDrift};
pub use error::{DetectError, Result};
pub use eve::{
    eve_timestamp, excerpt, ip_text, proto_name, stable_flow_id, EveAlert, EveEvent, EveFlow,
    EveHttp, FlowMeta, FrameColumns, HttpFacts, MatchedValue, MetaidsInfo, Origin,
};
pub use feedback::{
    alert_flow, alert_id_on_line, apply_feedback, find_alert, find_alerts, FeedbackError,
    FeedbackOutcome, FoundAlert, Judgement,
};
pub use forward::{ForwardSink, Target as ForwardTarget};
pub use metaids_decide::{Threat, SIGNATURE_BASE, UNKNOWN_SIGNATURE_ID};
pub use metaids_library::{ArmedThreats, ThreatOrigin};
pub use nft::{NftConfig, NftablesSink};
pub use pipeline::{AlertIds, Pipeline, PipelineOptions, Relay, Summary, LIVE_BATCH_INTERVAL};
pub use requests::{CaptureRequests, RequestRows, Seen};
pub use sink::{
    push_verdict_line, Alert, Batch, Counter, EveSink, Sink, SinkReport, Stage, StreamFile,
    VerdictLine, VerdictSink,
};
pub use webhook::{WebhookConfig, WebhookSink};
