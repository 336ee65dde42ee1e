//! metaids-flow: pcap/pcapng captures to bidirectional flows with the corrected CICFlowMeter
//! feature set (Engelen et al. 2021), so that models trained on the corrected CIC-IDS2017 CSVs
//! can score flows from any capture. Pure: no file or socket I/O, no system libraries; callers
//! hand it an [`std::io::Read`] or byte slices.
//!
//! Pipeline: [`CaptureReader`] (pcap/pcapng records, bounded memory) → [`FlowEngine`]
//! (decoding with etherparse, the bidirectional flow table, the fixed CICFlowMeter's end rules)
//! → [`FlowRecord`] (identifiers + 81 features, see [`features`] for every formula) →
//! [`CsvWriter`] (the 91-column corrected CSV) or [`JsonLinesWriter`].
//!
//! # Wiring `metaids extract --pcap FILE --out flows.csv`
//!
//! ```no_run
//! use std::fs::File;
//! use std::io::{BufReader, BufWriter};
//! use metaids_flow::{extract_csv, FlowConfig, ReaderConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let input = BufReader::new(File::open("capture.pcapng")?);
//! let output = BufWriter::new(File::create("flows.csv")?);
//! let report = extract_csv(input, output, ReaderConfig::default(), FlowConfig::default(), None)?;
//! eprintln!("{} flows from {} packets", report.rows, report.engine.packets);
//! if let Some(e) = &report.capture_error {
//!     eprintln!("warning: capture ended early: {e}");
//! }
//! for w in report.reader.warnings() {
//!     eprintln!("warning: capture.pcapng: {w}");
//! }
//! eprint!("{}", metaids_flow::output::capture_summary(&report.engine, &report.reader));
//! # Ok(()) }
//! ```
//!
//! Or drive the pieces yourself:
//!
//! ```no_run
//! use metaids_flow::{CaptureReader, CsvWriter, FlowConfig, FlowEngine, ReaderConfig};
//! # fn run(bytes: &[u8]) -> Result<(), metaids_flow::FlowError> {
//! let mut reader = CaptureReader::new(bytes, ReaderConfig::default())?;
//! let mut engine = FlowEngine::new(FlowConfig::default())?;
//! let mut csv = CsvWriter::new(std::io::stdout(), Some("BENIGN"))?;
//! while let Some(pkt) = reader.next_packet()? {
//!     for flow in engine.push_packet(pkt.link_type, pkt.ts_us, pkt.data) {
//!         csv.write(&flow)?;
//!     }
//! }
//! for flow in engine.finish() {
//!     csv.write(&flow)?;
//! }
//! # Ok(()) }
//! ```

pub mod capture;
pub mod decode;
pub mod engine;
pub mod error;
pub mod features;
pub mod output;
pub mod row;
pub mod select;
pub mod source;
pub mod stats;
pub mod text;
pub mod wire;

use std::io::{Read, Write};

pub use capture::{CaptureFormat, CaptureReader, LinkType, Packet, ReaderConfig, ReaderStats};
pub use decode::{decode, decode_segment, PacketInfo, SkipReason, TcpSegment};
pub use engine::{EndReason, EngineStats, FlowConfig, FlowEngine, FlowRecord};
pub use error::FlowError;
pub use features::{FeatureKind, FEATURE_COUNT, FEATURE_KINDS};
pub use output::{CsvWriter, JsonLinesWriter};
pub use row::{fill_row, FrameBuilder};
pub use select::{FlowSelector, SelectError};
pub use source::{for_each_flow, CaptureSource, FlowSource, KernelStats, SourceReport, Step};

/// What [`extract_csv`] did.
#[derive(Debug)]
pub struct ExtractReport {
    /// CSV rows written.
    pub rows: u64,
    /// Engine counters (packets, bytes, skips by reason, flows, evictions).
    pub engine: EngineStats,
    /// Reader counters.
    pub reader: ReaderStats,
    /// A capture error met after some packets (e.g. a truncated last record): every flow up to
    /// it was still written. Header errors and output errors are returned as `Err` instead.
    pub capture_error: Option<std::sync::Arc<FlowError>>,
}

/// Reads a whole capture, writes the 91-column CSV (header included) and returns the counters.
///
/// `label` fills the `Label` column (`None`: `unlabelled`). Fails on an unreadable file header
/// ([`FlowError::BadMagic`], [`FlowError::TooShort`], ...), invalid configuration or a write
/// error; a corrupt or truncated capture body ends the capture early and is reported in
/// [`ExtractReport::capture_error`].
pub fn extract_csv<R: Read, W: Write>(
    input: R,
    output: W,
    reader_config: ReaderConfig,
    flow_config: FlowConfig,
    label: Option<&str>,
) -> Result<ExtractReport, FlowError> {
    let mut source = CaptureSource::new(input, "capture", reader_config, flow_config)?;
    let mut csv = CsvWriter::new(output, label)?;
    let report = for_each_flow(&mut source, |flow| csv.write(&flow))?;
    let rows = csv.rows();
    csv.finish()?;
    Ok(ExtractReport {
        rows,
        engine: report.engine,
        reader: report.reader.unwrap_or_default(),
        capture_error: report.ended_early,
    })
}
