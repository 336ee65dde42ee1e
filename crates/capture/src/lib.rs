//! metaids-capture: live capture from a network interface (libpcap, behind the `live` feature)
//! into the very same [`metaids_flow::FlowEngine`] as capture files. It does not decode
//! packets, compute features or write output itself: frames go to the engine, finished flows
//! to the caller's sink.
//!
//! Flow expiry is driven by packet timestamps (as for files) plus a periodic wall-clock
//! [`metaids_flow::FlowEngine::tick`], so that idle flows are emitted even when traffic stops.
//! A capture stops cleanly when the caller's stop flag is set, or after a packet or time limit;
//! live flows are then ended and emitted, as at the end of a file.
//!
//! Built without `live`, [`LiveCapture::open`] returns [`CaptureError::LiveUnavailable`].
//!
//! ```no_run
//! use std::sync::atomic::AtomicBool;
//! use std::sync::Arc;
//! use metaids_capture::{LiveCapture, LiveConfig, LiveSource};
//! use metaids_flow::{for_each_flow, CsvWriter, FlowConfig, FlowEngine, FlowError};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stop = Arc::new(AtomicBool::new(false)); // set it from a Ctrl-C handler
//! let capture = LiveCapture::open(&LiveConfig {
//!     filter: Some("tcp or udp".into()),
//!     ..LiveConfig::new("eth0")
//! })?;
//! let engine = FlowEngine::new(FlowConfig::default())?;
//! let mut source = LiveSource::new(capture, engine, stop);
//! let mut csv = CsvWriter::new(std::io::stdout(), None)?;
//! for_each_flow::<FlowError, _>(&mut source, |flow| csv.write(&flow))?;
//! let stats = source.stats();
//! eprintln!("{} packets, {} flows, {} dropped", stats.packets, stats.flows, stats.dropped);
//! # Ok(()) }
//! ```

pub mod error;
#[cfg(feature = "live")]
mod live;
#[cfg(not(feature = "live"))]
mod unavailable;

use std::time::Duration;

pub use error::CaptureError;
#[cfg(feature = "live")]
pub use live::{LiveCapture, LiveSource};
#[cfg(not(feature = "live"))]
pub use unavailable::{LiveCapture, LiveSource};

/// Whether this build can capture live (the `live` feature).
pub const LIVE_SUPPORTED: bool = cfg!(feature = "live");

/// Live capture settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveConfig {
    /// Interface name (`eth0`, `lo`, `any`, ...).
    pub interface: String,
    /// Put the interface in promiscuous mode (default true).
    pub promiscuous: bool,
    /// Bytes captured per packet (default 262144). Flow features need only the headers, but
    /// frame byte counts use the on-the-wire length either way.
    pub snaplen: i32,
    /// A BPF filter in tcpdump syntax (default none).
    pub filter: Option<String>,
    /// libpcap's read timeout (default 100 ms). The capture is non-blocking: when no packet
    /// waits, the loop sleeps for the smaller of this and 2 ms, then checks the stop flag and
    /// the tick.
    pub read_timeout: Duration,
    /// Interval of the wall-clock tick that expires idle flows (default 1 s).
    pub tick_interval: Duration,
    /// Kernel buffer size in bytes (default: libpcap's).
    pub buffer_size: Option<i32>,
    /// Stop after this many packets (default: no limit).
    pub max_packets: Option<u64>,
    /// Stop after this long (default: no limit).
    pub max_duration: Option<Duration>,
}

impl LiveConfig {
    /// Defaults for one interface.
    pub fn new(interface: &str) -> Self {
        LiveConfig {
            interface: interface.to_string(),
            promiscuous: true,
            snaplen: 262_144,
            filter: None,
            read_timeout: Duration::from_millis(100),
            tick_interval: Duration::from_secs(1),
            buffer_size: None,
            max_packets: None,
            max_duration: None,
        }
    }

    /// Checks that the values are usable.
    pub fn validate(&self) -> Result<(), CaptureError> {
        if self.interface.is_empty() {
            return Err(CaptureError::Config("interface name is empty".into()));
        }
        if self.snaplen <= 0 {
            return Err(CaptureError::Config("snaplen must be positive".into()));
        }
        if self.read_timeout.is_zero() || self.read_timeout > Duration::from_secs(60) {
            return Err(CaptureError::Config(
                "read_timeout must be in (0, 60 s]".into(),
            ));
        }
        if self.tick_interval.is_zero() {
            return Err(CaptureError::Config(
                "tick_interval must be positive".into(),
            ));
        }
        Ok(())
    }
}

/// Why a [`LiveSource`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The stop flag was set.
    Requested,
    /// [`LiveConfig::max_packets`] packets were read.
    PacketLimit,
    /// [`LiveConfig::max_duration`] elapsed.
    TimeLimit,
}

/// What a live capture did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveStats {
    /// Packets read from libpcap and pushed to the engine.
    pub packets: u64,
    /// Flows handed to the sink (including those ended at the stop).
    pub flows: u64,
    /// Wall-clock ticks run.
    pub ticks: u64,
    /// Packets libpcap reports as received by the filter.
    pub received: u64,
    /// Packets dropped for lack of buffer space (libpcap).
    pub dropped: u64,
    /// Packets dropped by the interface or its driver (libpcap).
    pub if_dropped: u64,
    /// Why the capture stopped.
    pub stop: StopReason,
}

impl LiveStats {
    /// Nothing captured yet.
    pub const START: LiveStats = LiveStats {
        packets: 0,
        flows: 0,
        ticks: 0,
        received: 0,
        dropped: 0,
        if_dropped: 0,
        stop: StopReason::Requested,
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        assert!(LiveConfig::new("lo").validate().is_ok());
        assert!(LiveConfig::new("").validate().is_err());
        let c = LiveConfig {
            snaplen: 0,
            ..LiveConfig::new("lo")
        };
        assert!(c.validate().is_err());
    }

    #[cfg(not(feature = "live"))]
    #[test]
    fn without_live_open_says_so() {
        match LiveCapture::open(&LiveConfig::new("lo")) {
            Err(e @ CaptureError::LiveUnavailable) => {
                assert!(e.to_string().contains("built without the `live` feature"))
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("live capture without the feature"),
        }
    }
}
