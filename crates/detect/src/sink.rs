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
    /// From the batch's first preprocessing step to its alerts being formatted (before any sink).
    pub latency: std::time::Duration,
}

/// Every counter a sink reports (printed as `name value` lines by [`Counter::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Counter {
    /// EVE alert records written.
    AlertsWritten,
    /// EVE flow records written.
    FlowRecordsWritten,
    /// Verdict lines written.
    VerdictsWritten,
    /// Addresses in the nftables script.
    NftElements,
    /// Alert addresses nftables could not take.
    NftInvalidAddresses,
    /// `nft -f` runs that succeeded.
    NftBatchesApplied,
    /// `nft -f` runs that failed.
    NftApplyFailures,
    /// Alert addresses not blocked because the allow-list holds them.
    NftAllowListed,
    /// Elements re-added with a fresh timeout (the address alerted again).
    NftRefreshed,
    /// Alerts forwarded to syslog or a unix socket.
    ForwardSent,
    /// Alerts that could not be forwarded (dropped, counted).
    ForwardDropped,
    /// Webhook posts accepted by the receiver.
    WebhookSent,
    /// Webhook posts that failed after their retries.
    WebhookFailed,
    /// Alerts dropped because the webhook queue was full.
    WebhookDropped,
    /// Webhook retries.
    WebhookRetries,
}

impl Counter {
    /// The counter's name in summaries.
    pub fn name(self) -> &'static str {
        match self {
            Counter::AlertsWritten => "alerts_written",
            Counter::FlowRecordsWritten => "flow_records_written",
            Counter::VerdictsWritten => "verdicts_written",
            Counter::NftElements => "nft_elements",
            Counter::NftInvalidAddresses => "nft_invalid_addresses",
            Counter::NftBatchesApplied => "nft_batches_applied",
            Counter::NftApplyFailures => "nft_apply_failures",
            Counter::NftAllowListed => "nft_allow_listed",
            Counter::NftRefreshed => "nft_refreshed",
            Counter::ForwardSent => "forward_sent",
            Counter::ForwardDropped => "forward_dropped",
            Counter::WebhookSent => "webhook_sent",
            Counter::WebhookFailed => "webhook_failed",
            Counter::WebhookDropped => "webhook_dropped",
            Counter::WebhookRetries => "webhook_retries",
        }
    }
}

/// A sink's end-of-run counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SinkReport {
    /// Sink name.
    pub sink: String,
    /// `(counter, value)` pairs.
    pub counters: Vec<(Counter, u64)>,
    /// Notes for the user (e.g. where a file was written).
    pub notes: Vec<String>,
}

impl SinkReport {
    /// A counter's value (0 when this sink does not report it).
    pub fn get(&self, counter: Counter) -> u64 {
        self.counters
            .iter()
            .find(|(c, _)| *c == counter)
            .map_or(0, |(_, v)| *v)
    }
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
                (Counter::AlertsWritten, self.alerts),
                (Counter::FlowRecordsWritten, self.flows),
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
    /// `"http"` for a web request's verdict (absent for a flow's): a run that scores a capture's
    /// flows and its requests writes both to one file, and a request carries its connection's
    /// addresses, ports and flow id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<String>,
}

/// Every flow's verdict as JSON lines (before deduplication).
#[derive(Debug)]
pub struct VerdictSink {
    file: StreamFile,
    lines: u64,
    buf: Vec<u8>,
    text: String,
}

impl VerdictLine {
    /// The line of flow `f` with verdict `v` (`threat`: the name of `v.threat`).
    pub fn new(f: &FlowMeta, v: &Verdict, threat: Option<&str>) -> Self {
        VerdictLine {
            flow_id: f.flow_id,
            seq: f.seq,
            start: f.start_us.map(crate::eve::eve_timestamp),
            src_ip: crate::eve::ip_text(f.src_ip),
            src_port: f.src_port,
            dest_ip: crate::eve::ip_text(f.dest_ip),
            dest_port: f.dest_port,
            proto: f.proto,
            origin: f.origin.to_string(),
            verdict: v.kind,
            threat: threat.map(str::to_string),
            distance: v.distance.is_finite().then_some(v.distance),
            score: if v.score.is_finite() { v.score } else { 0.0 },
            confidence: v.confidence,
            app_proto: f.http.as_ref().map(|_| "http".to_string()),
        }
    }
}

fn push_f32(buf: &mut Vec<u8>, v: f32) {
    // serde_json's own float text (writing a number into a Vec cannot fail).
    if serde_json::to_writer(&mut *buf, &v).is_err() {
        buf.extend_from_slice(b"null");
    }
}

fn push_ip(buf: &mut Vec<u8>, text: &mut String, ip: Option<std::net::IpAddr>) {
    buf.push(b'"');
    if let Some(ip) = ip {
        text.clear();
        metaids_flow::text::push_ip(text, &ip);
        buf.extend_from_slice(text.as_bytes());
    }
    buf.push(b'"');
}

/// Appends flow `f`'s verdict line to `buf` as serde_json writes a [`VerdictLine`] (field order,
/// escapes, float text; test `the_fast_verdict_line_is_serde_s_line`), without allocating per flow:
/// integers through itoa, floats and strings through serde_json's writer, addresses and times through `text`, strings escaped by serde_json.
pub fn push_verdict_line(
    buf: &mut Vec<u8>,
    text: &mut String,
    f: &FlowMeta,
    v: &Verdict,
    threat: Option<&str>,
) -> Result<()> {
    fn escape<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) -> Result<()> {
        serde_json::to_writer(buf, value).map_err(|e| DetectError::Sink {
            sink: "verdicts".into(),
            message: e.to_string(),
        })
    }
    let mut int = itoa::Buffer::new();
    buf.extend_from_slice(b"{\"flow_id\":");
    buf.extend_from_slice(int.format(f.flow_id).as_bytes());
    buf.extend_from_slice(b",\"seq\":");
    buf.extend_from_slice(int.format(f.seq).as_bytes());
    buf.extend_from_slice(b",\"start\":");
    match f.start_us {
        Some(us) => {
            text.clear();
            metaids_core::time::push_timestamp_us(text, us, 'T');
            buf.push(b'"');
            buf.extend_from_slice(text.as_bytes());
            buf.extend_from_slice(b"+0000\"");
        }
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"src_ip\":");
    push_ip(buf, text, f.src_ip);
    buf.extend_from_slice(b",\"src_port\":");
    buf.extend_from_slice(int.format(f.src_port).as_bytes());
    buf.extend_from_slice(b",\"dest_ip\":");
    push_ip(buf, text, f.dest_ip);
    buf.extend_from_slice(b",\"dest_port\":");
    buf.extend_from_slice(int.format(f.dest_port).as_bytes());
    buf.extend_from_slice(b",\"proto\":");
    buf.extend_from_slice(int.format(f.proto).as_bytes());
    buf.extend_from_slice(b",\"origin\":");
    escape(buf, &f.origin)?;
    buf.extend_from_slice(b",\"verdict\":\"");
    buf.extend_from_slice(v.kind.name().as_bytes());
    buf.extend_from_slice(b"\",\"threat\":");
    match threat {
        Some(t) => escape(buf, t)?,
        None => buf.extend_from_slice(b"null"),
    }
    buf.extend_from_slice(b",\"distance\":");
    push_f32(
        buf,
        if v.distance.is_finite() {
            v.distance
        } else {
            f32::NAN
        },
    );
    buf.extend_from_slice(b",\"score\":");
    push_f32(buf, if v.score.is_finite() { v.score } else { 0.0 });
    buf.extend_from_slice(b",\"confidence\":");
    push_f32(buf, v.confidence);
    if f.http.is_some() {
        buf.extend_from_slice(b",\"app_proto\":\"http\"");
    }
    buf.extend_from_slice(b"}\n");
    Ok(())
}

impl VerdictSink {
    /// Streams to `path` (through `path.partial`).
    pub fn create(path: &Path) -> Result<Self> {
        Ok(VerdictSink {
            file: StreamFile::create(path)?,
            lines: 0,
            buf: Vec::with_capacity(1 << 16),
            text: String::with_capacity(64),
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
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        for (f, v) in batch.flows.iter().zip(batch.verdicts) {
            let threat = v
                .threat
                .and_then(|t| batch.context.threats.get(t))
                .map(|t| t.name.as_str());
            push_verdict_line(&mut buf, &mut self.text, f, v, threat)?;
            self.lines += 1;
        }
        let written = self.file.write_all(&buf);
        self.buf = buf;
        written
    }

    fn finish(&mut self) -> Result<SinkReport> {
        self.file.commit()?;
        Ok(SinkReport {
            sink: "verdicts".into(),
            counters: vec![(Counter::VerdictsWritten, self.lines)],
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

    fn verdict_strategy(
    ) -> impl proptest::strategy::Strategy<Value = (FlowMeta, Verdict, Option<String>)> {
        use proptest::prelude::*;
        let ip = prop_oneof![
            Just(None),
            any::<[u8; 4]>().prop_map(|b| Some(std::net::IpAddr::from(b))),
            any::<[u8; 16]>().prop_map(|b| Some(std::net::IpAddr::from(b))),
        ];
        let float = prop_oneof![
            any::<f32>(),
            Just(f32::INFINITY),
            Just(f32::NAN),
            (-1e6f32..1e6),
            (-1e-6f32..1e-6)
        ];
        (
            (
                any::<u64>(),
                any::<u64>(),
                ip.clone(),
                any::<u16>(),
                ip,
                any::<u16>(),
                any::<u8>(),
            ),
            (
                proptest::option::of(-62_135_596_800_000_000i64..253_402_300_799_999_999),
                "[ -~\\PC]{0,24}",
                any::<u64>(),
            ),
            (
                0u8..3,
                proptest::option::of(0usize..4),
                float.clone(),
                float.clone(),
                0f32..=1.0,
            ),
            proptest::option::of("[ -~\\PC\u{1}\u{1f}]{0,16}"),
            proptest::bool::ANY,
        )
            .prop_map(
                |(
                    (flow_id, seq, src, sport, dst, dport, proto),
                    (start, source, index),
                    (kind, t, d, sc, conf),
                    threat,
                    request,
                )| {
                    let meta = FlowMeta {
                        flow_id,
                        seq,
                        src_ip: src,
                        src_port: sport,
                        dest_ip: dst,
                        dest_port: dport,
                        proto,
                        icmp: None,
                        start_us: start,
                        duration_us: 0.0,
                        pkts_toserver: 0,
                        pkts_toclient: 0,
                        bytes_toserver: 0,
                        bytes_toclient: 0,
                        origin: crate::eve::Origin {
                            source: std::sync::Arc::from(source.as_str()),
                            index,
                        },
                        http: request
                            .then(|| std::sync::Arc::new(crate::eve::HttpFacts::default())),
                    };
                    let verdict = Verdict {
                        kind: [
                            VerdictKind::Benign,
                            VerdictKind::Threat,
                            VerdictKind::Unknown,
                        ][kind as usize],
                        threat: t,
                        distance: d,
                        benign_distance: 0.0,
                        score: sc,
                        confidence: conf,
                    };
                    (meta, verdict, threat)
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn the_fast_verdict_line_is_serde_s_line((meta, verdict, threat) in verdict_strategy()) {
            let mut fast = Vec::new();
            let mut text = String::new();
            push_verdict_line(&mut fast, &mut text, &meta, &verdict, threat.as_deref()).expect("fast");
            let mut slow = Vec::new();
            json_line(&mut slow, &VerdictLine::new(&meta, &verdict, threat.as_deref()), "verdicts")
                .expect("serde");
            proptest::prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&slow));
            let back: VerdictLine = serde_json::from_slice(&fast).expect("parses");
            proptest::prop_assert_eq!(back.seq, meta.seq);
            proptest::prop_assert_eq!(back.app_proto.is_some(), meta.http.is_some());
        }
    }
}
