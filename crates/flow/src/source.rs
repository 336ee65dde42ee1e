//! Where flows come from: the one seam between inputs and the commands that consume flows.
//!
//! A [`FlowSource`] hands out finished [`FlowRecord`]s a few at a time and reports its counters.
//! [`CaptureSource`] reads a pcap/pcapng stream through its own [`FlowEngine`] (flows do not span
//! captures); the live capture of `metaids-capture` implements the same trait. Consumers drive a
//! source with [`for_each_flow`] (extract, threat add, baseline) or with the detection pipeline's
//! loop, which also flushes partial batches while a live source is quiet.

use std::io::Read;
use std::sync::Arc;

use crate::capture::{CaptureReader, ReaderConfig, ReaderStats};
use crate::engine::{EngineStats, FlowConfig, FlowEngine, FlowRecord};
use crate::error::FlowError;

/// What one call of [`FlowSource::next_flows`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Packets were read (zero or more flows were appended); call again.
    Flows,
    /// A live source waited and no packet came; call again (a consumer may flush what it holds).
    Idle,
    /// The source has ended and its live flows were appended; later calls append nothing.
    Done,
}

/// Packet counters of a live capture's kernel side (libpcap's statistics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the filter received.
    pub received: u64,
    /// Packets dropped for lack of buffer space.
    pub dropped: u64,
    /// Packets dropped by the interface or its driver.
    pub if_dropped: u64,
}

/// A source's counters.
#[derive(Debug, Clone, Default)]
pub struct SourceReport {
    /// The source's name (a capture's path, `live:IFACE`).
    pub name: String,
    /// The flow engine's counters (packets pushed, skips, flows emitted, ...).
    pub engine: EngineStats,
    /// The capture reader's counters (capture files only).
    pub reader: Option<ReaderStats>,
    /// The kernel's counters (live captures only, read when the capture ends).
    pub kernel: Option<KernelStats>,
    /// A corrupt or truncated body that ended a capture early: every flow up to it was handed out.
    pub ended_early: Option<Arc<FlowError>>,
}

impl SourceReport {
    /// Packets read.
    pub fn packets(&self) -> u64 {
        self.engine.packets
    }

    /// Flows handed out.
    pub fn flows(&self) -> u64 {
        self.engine.flows_emitted
    }

    /// Data-quality warnings: an early end, dropped blocks, guessed or clamped timestamps and
    /// kernel drops, one line each (without the source's name).
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.ended_early {
            out.push(format!(
                "capture ended early ({e}); flows up to there were kept"
            ));
        }
        if let Some(r) = &self.reader {
            out.extend(r.warnings());
        }
        if let Some(k) = &self.kernel {
            if k.dropped + k.if_dropped > 0 {
                out.push(format!(
                    "{} packets dropped by the kernel buffer and {} by the interface: flows are missing packets",
                    k.dropped, k.if_dropped
                ));
            }
        }
        out
    }

    /// Every counter as `name value` lines: the engine's, the reader's (`reader_*`) and the
    /// kernel's (`kernel_*`).
    pub fn counters(&self) -> String {
        let mut s = match &self.reader {
            Some(r) => crate::output::capture_summary(&self.engine, r),
            None => crate::output::summary(&self.engine),
        };
        if let Some(k) = &self.kernel {
            s.push_str(&format!(
                "kernel_received {}\nkernel_dropped {}\nkernel_if_dropped {}\n",
                k.received, k.dropped, k.if_dropped
            ));
        }
        s
    }
}

/// A source of finished flows.
pub trait FlowSource {
    /// The name used in messages and flow origins.
    fn name(&self) -> &str;

    /// Appends the flows that finished since the last call to `out` (possibly none) and says
    /// whether to call again. Errors stop the source (a corrupt capture body is not an error: it
    /// ends the capture, see [`SourceReport::ended_early`]).
    fn next_flows(&mut self, out: &mut Vec<FlowRecord>) -> Result<Step, FlowError>;

    /// The counters so far.
    fn report(&self) -> SourceReport;

    /// Whether flows arrive in real time, so that a consumer should not hold a partial batch for
    /// long (default false).
    fn is_live(&self) -> bool {
        false
    }
}

/// Drives `source` to its end, handing every flow to `on_flow` in order, and returns its
/// counters. The first error of the source or of `on_flow` stops it.
pub fn for_each_flow<E, F>(source: &mut dyn FlowSource, mut on_flow: F) -> Result<SourceReport, E>
where
    E: From<FlowError>,
    F: FnMut(FlowRecord) -> Result<(), E>,
{
    let mut flows = Vec::new();
    loop {
        let step = source.next_flows(&mut flows)?;
        for f in flows.drain(..) {
            on_flow(f)?;
        }
        if step == Step::Done {
            return Ok(source.report());
        }
    }
}

/// Packets read per [`CaptureSource::next_flows`] call at most.
const PACKETS_PER_STEP: usize = 4096;

/// A pcap/pcapng capture read through its own flow engine: at its end (or at a corrupt body) the
/// live flows are ended and handed out, so flows never span captures.
pub struct CaptureSource<R: Read> {
    name: String,
    reader: CaptureReader<R>,
    engine: FlowEngine,
    done: bool,
    ended_early: Option<Arc<FlowError>>,
}

impl<R: Read> std::fmt::Debug for CaptureSource<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureSource")
            .field("name", &self.name)
            .field("done", &self.done)
            .field("ended_early", &self.ended_early)
            .finish_non_exhaustive()
    }
}

impl<R: Read> CaptureSource<R> {
    /// Reads the capture header of `input`. Errors: an unreadable header ([`FlowError::BadMagic`],
    /// [`FlowError::TooShort`], ...) or an invalid configuration.
    pub fn new(
        input: R,
        name: impl Into<String>,
        reader_config: ReaderConfig,
        flow_config: FlowConfig,
    ) -> Result<Self, FlowError> {
        let engine = FlowEngine::new(flow_config)?;
        let reader = CaptureReader::new(input, reader_config)?;
        Ok(CaptureSource {
            name: name.into(),
            reader,
            engine,
            done: false,
            ended_early: None,
        })
    }

    /// The flow engine (its counters so far).
    pub fn engine(&self) -> &FlowEngine {
        &self.engine
    }
}

impl<R: Read> FlowSource for CaptureSource<R> {
    fn name(&self) -> &str {
        &self.name
    }

    fn next_flows(&mut self, out: &mut Vec<FlowRecord>) -> Result<Step, FlowError> {
        if self.done {
            return Ok(Step::Done);
        }
        for _ in 0..PACKETS_PER_STEP {
            match self.reader.next_packet() {
                Ok(Some(pkt)) => out.extend(self.engine.push(&pkt)),
                Ok(None) => {
                    self.done = true;
                    break;
                }
                Err(e) => {
                    self.ended_early = Some(Arc::new(e));
                    self.done = true;
                    break;
                }
            }
        }
        if self.done {
            out.extend(self.engine.finish());
            return Ok(Step::Done);
        }
        Ok(Step::Flows)
    }

    fn report(&self) -> SourceReport {
        SourceReport {
            name: self.name.clone(),
            engine: self.engine.stats().clone(),
            reader: Some(self.reader.stats()),
            kernel: None,
            ended_early: self.ended_early.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap (Ethernet, µs) of `n` TCP SYNs from distinct source ports, one per second.
    fn syn_capture(n: u16) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65_535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for i in 0..n {
            let mut frame = Vec::new();
            etherparse::PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(10_000 + i, 80, 1, 1024)
                .syn()
                .write(&mut frame, &[])
                .expect("frame");
            out.extend_from_slice(&(1_000_000 + u32::from(i)).to_le_bytes());
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            out.extend_from_slice(&frame);
        }
        out
    }

    fn source<'a>(bytes: &'a [u8], name: &str) -> CaptureSource<&'a [u8]> {
        CaptureSource::new(bytes, name, ReaderConfig::default(), FlowConfig::default())
            .expect("source")
    }

    #[test]
    fn a_capture_source_hands_out_every_flow_once_and_then_stays_done() {
        let bytes = syn_capture(10_000);
        let mut src = source(&bytes, "syn.pcap");
        let mut ports = Vec::new();
        let report = for_each_flow::<FlowError, _>(&mut src, |f| {
            ports.push(f.src_port);
            Ok(())
        })
        .expect("drive");
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 10_000);
        assert_eq!(report.packets(), 10_000);
        assert_eq!(report.flows(), 10_000);
        assert!(report.ended_early.is_none());
        assert!(report.warnings().is_empty());
        assert_eq!(report.name, "syn.pcap");
        let mut more = Vec::new();
        assert_eq!(src.next_flows(&mut more).expect("again"), Step::Done);
        assert!(more.is_empty());
    }

    #[test]
    fn a_truncated_capture_ends_early_with_its_flows_and_a_warning() {
        let mut bytes = syn_capture(3);
        bytes.truncate(bytes.len() - 10);
        let mut src = source(&bytes, "cut.pcap");
        let mut n = 0;
        let report = for_each_flow::<FlowError, _>(&mut src, |_| {
            n += 1;
            Ok(())
        })
        .expect("drive");
        assert_eq!(n, 2);
        assert!(matches!(
            report.ended_early.as_deref(),
            Some(FlowError::Truncated { .. })
        ));
        assert!(report.warnings()[0].contains("capture ended early"));
        assert!(report.counters().contains("reader_packets 2"));
    }

    #[test]
    fn a_consumer_error_stops_the_source() {
        let bytes = syn_capture(5);
        let mut src = source(&bytes, "syn.pcap");
        let mut n = 0;
        let r = for_each_flow::<FlowError, _>(&mut src, |_| {
            n += 1;
            if n == 2 {
                Err(FlowError::Config("stop".into()))
            } else {
                Ok(())
            }
        });
        assert!(r.is_err());
        assert_eq!(n, 2);
    }
}
