//! The stand-in for [`LiveCapture`] when the crate is built without the `live` feature: same
//! API, every call fails with [`CaptureError::LiveUnavailable`]. It links no libpcap.

use std::sync::atomic::AtomicBool;

use metaids_flow::{FlowEngine, FlowError, FlowRecord};

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

    /// Unreachable in this build (no value can be created); fails like [`LiveCapture::open`].
    pub fn run<F>(
        &mut self,
        _engine: &mut FlowEngine,
        _stop: &AtomicBool,
        _on_flow: F,
    ) -> Result<LiveStats, CaptureError>
    where
        F: FnMut(FlowRecord) -> Result<(), FlowError>,
    {
        Err(CaptureError::LiveUnavailable)
    }
}
