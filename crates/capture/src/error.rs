//! The crate's single error type. It says what failed (no `live` support, libpcap, the flow
//! engine or the flow sink); it does not log or retry.

use metaids_flow::FlowError;
use thiserror::Error;

/// Everything that can go wrong while capturing live.
#[derive(Debug, Error)]
pub enum CaptureError {
    /// The binary was built without the `live` feature (no libpcap linked).
    #[error(
        "live capture is unavailable: this binary was built without the `live` feature of \
         metaids-capture (rebuild with `--features live`; it needs libpcap)"
    )]
    LiveUnavailable,
    /// libpcap refused an operation (opening the interface, setting the filter, reading).
    #[error("libpcap: {context}: {message}")]
    Pcap {
        /// What was being done (`open interface lo`, `set BPF filter "udp"`, ...).
        context: String,
        /// libpcap's message.
        message: String,
    },
    /// A configuration value is out of range.
    #[error("invalid live capture configuration: {0}")]
    Config(String),
    /// The flow engine or the flow sink (e.g. a CSV writer) failed.
    #[error(transparent)]
    Flow(#[from] FlowError),
}
