//! The stand-ins for [`LiveCapture`] and [`LiveSource`] when the crate is built without the `live`
//! feature: same API, opening fails with [`CaptureError::LiveUnavailable`]. It links no libpcap.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use metaids_flow::{FlowEngine, FlowError, FlowRecord, FlowSource, SourceReport, Step};

use crate::{CaptureError, LiveConfig, LiveStats};

/// A live capture handle; this build cannot create one (no `live` feature).
#[derive(Debug)]
pub struct LiveCapture {
    _private: (),
}

impl LiveCapture {
    /// Always [`CaptureError::LiveUnavailable`] (or [`CaptureError::Config`]) in this build.
    pub fn open(config: &LiveConfig) -> Result<Self, CaptureError> {
        config.validate()?;
        Err(CaptureError::LiveUnavailable)
    }
}

/// The live flow source; this build cannot create one (no [`LiveCapture`] exists).
pub struct LiveSource {
    capture: LiveCapture,
    engine: FlowEngine,
}

impl std::fmt::Debug for LiveSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveSource").finish_non_exhaustive()
    }
}

impl LiveSource {
    /// Wraps a capture (unreachable in this build: no capture can be opened).
    pub fn new(capture: LiveCapture, engine: FlowEngine, _stop: Arc<AtomicBool>) -> Self {
        LiveSource { capture, engine }
    }

    /// Unreachable in this build.
    pub fn stats(&self) -> LiveStats {
        let _ = &self.capture;
        LiveStats::START
    }

    /// The flow engine.
    pub fn engine(&self) -> &FlowEngine {
        &self.engine
    }
}

impl FlowSource for LiveSource {
    fn name(&self) -> &str {
        "live"
    }

    fn next_flows(&mut self, _out: &mut Vec<FlowRecord>) -> Result<Step, FlowError> {
        Err(FlowError::Source {
            name: "live".into(),
            source: Box::new(CaptureError::LiveUnavailable),
        })
    }

    fn report(&self) -> SourceReport {
        SourceReport::default()
    }

    fn is_live(&self) -> bool {
        true
    }
}
