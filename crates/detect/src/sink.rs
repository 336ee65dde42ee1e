//! Where verdicts and alerts go: one [`Sink`] trait, with the recording sinks (EVE alerts, verdict
//! lines) that run first and the responders (nftables, webhook) that run only after the recording
//! sinks have made a batch durable. Also the streamed output file ([`StreamFile`]: `OUT.partial`,
//! fsync per batch, renamed to `OUT` at the end, so a crash never leaves a half file under the final
//! name).
//!
//! Sinks do not decide anything; the pipeline hands them finished batches.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::detector::{Verdict, VerdictKind};
use crate::error::{DetectError, Result};
use crate::eve::{flow_event, AlertContext, EveEvent, FlowMeta};

/// When a sink runs within a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Records verdicts or alerts (durably) — runs first.
    Record,
    /// Acts on alerts (blocks, notifies) — runs after every recording sink wrote the batch.
    Respond,
}

/// One alert that passed deduplication.
#[derive(Debug, Clone)]
pub struct Alert {
    /// Index of the flow within the batch.
    pub index: usize,
    /// The EVE record.
    pub event: EveEvent,
    /// The same record as one JSON line (no newline).
    pub line: String,
}

/// A finished micro-batch.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// The flows.
    pub flows: &'a [FlowMeta],
    /// Their verdicts (same order).
    pub verdicts: &'a [Verdict],
    /// Alerts to write (after deduplication), in flow order.
    pub alerts: &'a [Alert],
    /// Context for formatting records.
    pub context: AlertContext<'a>,
}

/// A sink's end-of-run counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Sink name.
    pub sink: String,
    /// `(counter, value)` pairs.
    pub counters: Vec<(String, u64)>,
    /// Notes for the user (e.g. where a file was written).
    pub notes: Vec<String>,
}

/// A destination for finished batches.
pub trait Sink: Send {
    /// Name used in reports and errors.
    fn name(&self) -> &str;
    /// When it runs within a batch.
    fn stage(&self) -> Stage;
    /// Handles one batch. Recording sinks return only once the batch is durable.
    fn write_batch(&mut self, batch: &Batch<'_>) -> Result<()>;
    /// Ends the run (flush, rename, drain) and reports counters.
    fn finish(&mut self) -> Result<SinkReport>;
}

/// An output file written as a stream: `OUT.partial` while running, synced per batch, renamed to
/// `OUT` by [`StreamFile::commit`] (`metaids_durable`: a device, FIFO or socket is written through,
/// a symlink followed). Dropped without commit (a failed run), the partial file is removed.
#[derive(Debug)]
pub struct StreamFile {
    file: metaids_durable::DurableFile,
}

impl StreamFile {
    /// Creates (truncates) `OUT.partial`.
    pub fn create(path: &Path) -> Result<Self> {
        let file = metaids_durable::DurableFile::create(path, metaids_durable::Staging::Partial)
            .map_err(DetectError::io(path))?;
        Ok(StreamFile { file })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        let staging = self.file.staging_path().to_path_buf();
        self.file.write_all(bytes).map_err(DetectError::io(staging))
    }

    /// Flushes and fsyncs the data written so far.
    pub fn sync(&mut self) -> Result<()> {
        let staging = self.file.staging_path().to_path_buf();
        self.file.sync().map_err(DetectError::io(staging))
    }

    /// Syncs and renames `OUT.partial` to `OUT` (and syncs the directory, where possible).
    pub fn commit(&mut self) -> Result<()> {
        let path = self.file.path().to_path_buf();
        self.file.commit_in_place().map_err(DetectError::io(path))
    }

    /// Bytes written.
    pub fn bytes(&self) -> u64 {
        self.file.bytes()
    }
}

/// Writes `bytes` to `path` durably (`metaids_durable::write_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    metaids_durable::write_atomic(path, bytes).map_err(DetectError::io(path))
}

/// EVE JSON lines: every alert, and with `flow_events` an `event_type: "flow"` record per flow.
/// Each batch is flushed and fsynced before [`Sink::write_batch`] returns, so responders fire only
/// for alerts already on disk.
#[derive(Debug)]
pub struct EveSink {
    file: StreamFile,
    flow_events: bool,
    alerts: u64,
    flows: u64,
    line: Vec<u8>,
}

impl EveSink {
    /// Streams to `path` (through `path.partial`).
    pub fn create(path: &Path, flow_events: bool) -> Result<Self> {
        Ok(EveSink {
            file: StreamFile::create(path)?,
            flow_events,
            alerts: 0,
            flows: 0,
            line: Vec::with_capacity(4096),
        })
    }
}

fn json_line<T: Serialize>(buf: &mut Vec<u8>, value: &T, sink: &str) -> Result<()> {
    buf.clear();
    serde_json::to_writer(&mut *buf, value).map_err(|e| DetectError::Sink {
        sink: sink.to_string(),
        message: e.to_string(),
    })?;
    buf.push(b'\n');
    Ok(())
}

impl Sink for EveSink {
    fn name(&self) -> &str {
        "eve"
    }

    fn stage(&self) -> Stage {
        Stage::Record
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        for a in batch.alerts {
            self.file.write_all(a.line.as_bytes())?;
            self.file.write_all(b"\n")?;
            self.alerts += 1;
        }
        if self.flow_events {
            for (f, v) in batch.flows.iter().zip(batch.verdicts) {
                let ev = flow_event(&batch.context, f, v);
                let mut line = std::mem::take(&mut self.line);
                json_line(&mut line, &ev, "eve")?;
                self.file.write_all(&line)?;
                self.line = line;
                self.flows += 1;
            }
        }
        if !batch.alerts.is_empty() || self.flow_events {
            self.file.sync()?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.file.commit()?;
        Ok(SinkReport {
            sink: "eve".into(),
            counters: vec![
                ("alerts_written".into(), self.alerts),
                ("flow_records_written".into(), self.flows),
            ],
            notes: vec![format!(
                "wrote {} alerts to {}",
                self.alerts,
                self.file.path().display()
            )],
        })
    }
}

/// One line of the verdicts file.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct VerdictLine {
    /// The flow's id, as in the EVE records: stable across runs (5-tuple and start).
    pub flow_id: u64,
    /// Flow number within the run (1-based, in detection order).
    pub seq: u64,
    /// Start of the flow (EVE timestamp format; `null` when unknown).
    pub start: Option<String>,
    /// Forward source address (the first packet's sender).
    pub src_ip: String,
    /// Forward source port.
    pub src_port: u16,
    /// Forward destination address.
    pub dest_ip: String,
    /// Forward destination port.
    pub dest_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Where the flow came from (`file:line`, or `capture:flow-id`).
    pub origin: String,
    /// `benign`, `threat` or `unknown`.
    pub verdict: VerdictKind,
    /// The flagged threat, else the nearest one (`null` without threats).
    pub threat: Option<String>,
    /// Squared distance to that threat's nearest prototype (`null` without threats).
    pub distance: Option<f32>,
    /// Margin of the deciding rule.
    pub score: f32,
    /// Percentile among benign calibration rows.
    pub confidence: f32,
}

/// Every flow's verdict as JSON lines (before deduplication).
#[derive(Debug)]
pub struct VerdictSink {
    file: StreamFile,
    lines: u64,
    buf: Vec<u8>,
}

impl VerdictSink {
    /// Streams to `path` (through `path.partial`).
    pub fn create(path: &Path) -> Result<Self> {
        Ok(VerdictSink {
            file: StreamFile::create(path)?,
            lines: 0,
            buf: Vec::with_capacity(256),
        })
    }
}

impl Sink for VerdictSink {
    fn name(&self) -> &str {
        "verdicts"
    }

    fn stage(&self) -> Stage {
        Stage::Record
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> Result<()> {
        for (f, v) in batch.flows.iter().zip(batch.verdicts) {
            let line = VerdictLine {
                flow_id: f.flow_id,
                seq: f.seq,
                start: f.start_us.map(crate::eve::eve_timestamp),
                src_ip: f.src_ip.clone(),
                src_port: f.src_port,
                dest_ip: f.dest_ip.clone(),
                dest_port: f.dest_port,
                proto: f.proto,
                origin: f.origin.clone(),
                verdict: v.kind,
                threat: v
                    .threat
                    .and_then(|t| batch.context.threats.get(t))
                    .map(|t| t.name.clone()),
                distance: v.distance.is_finite().then_some(v.distance),
                score: if v.score.is_finite() { v.score } else { 0.0 },
                confidence: v.confidence,
            };
            let mut buf = std::mem::take(&mut self.buf);
            json_line(&mut buf, &line, "verdicts")?;
            self.file.write_all(&buf)?;
            self.buf = buf;
            self.lines += 1;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.file.commit()?;
        Ok(SinkReport {
            sink: "verdicts".into(),
            counters: vec![("verdicts_written".into(), self.lines)],
            notes: vec![format!(
                "wrote {} verdicts to {}",
                self.lines,
                self.file.path().display()
            )],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_file_is_partial_until_commit() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("alerts.json");
        let mut f = StreamFile::create(&p).expect("create");
        f.write_all(b"{}\n").expect("write");
        f.sync().expect("sync");
        assert!(!p.exists());
        assert!(dir.path().join("alerts.json.partial").exists());
        f.commit().expect("commit");
        assert_eq!(std::fs::read_to_string(&p).expect("read"), "{}\n");
        assert!(!dir.path().join("alerts.json.partial").exists());
        assert_eq!(f.bytes(), 3);
        assert!(f.write_all(b"x").is_err());
    }
}
