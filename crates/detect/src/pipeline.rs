//! The streaming detection pipeline: flows (from the flow engine or from a CIC frame) are gathered in
//! micro-batches, preprocessed and embedded a batch at a time, given verdicts, deduplicated into
//! alerts, explained, and handed to the sinks — recording sinks first (durable), responders after —
//! with summary counters for the end of the run.
//!
//! It opens no files itself (sinks do) and holds one batch of flows at a time.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metaids_core::context::SourceContext;
use metaids_core::FlowFrame;
use metaids_flow::{
    CaptureSource, FlowConfig, FlowRecord, FlowSource, FrameBuilder, ReaderConfig, SourceReport,
    Step,
};

use crate::dedup::{Deduplicator, RateLimit};
use crate::detector::{Detector, Verdict, VerdictKind};
use crate::drift::{DriftConfig, DriftMonitor, DriftReport};
use crate::error::{DetectError, Result};
use crate::eve::{alert_event, AlertContext, FlowMeta, FrameColumns};
use crate::sink::{Alert, Batch, Counter, Sink, SinkReport};
use crate::UNKNOWN_SIGNATURE_ID;

/// Pipeline settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOptions {
    /// Flows per micro-batch (default 1024).
    pub batch_size: usize,
    /// Deduplication and rate limit of alerts.
    pub rate_limit: RateLimit,
    /// Whether unknown anomalies raise alerts (default true; they always get verdicts).
    pub alert_unknown: bool,
    /// EVE severity of unknown-anomaly alerts (default 2).
    pub unknown_severity: u8,
    /// Run id: alert ids are `<run id>-<sequence>` (see [`PipelineOptions::alert_ids`]).
    pub run_id: String,
    /// How alert ids are made.
    pub alert_ids: AlertIds,
    /// Drift windows and bounds.
    pub drift: DriftConfig,
    /// The sensor's name, written as EVE `host` (empty: omitted).
    pub sensor: String,
}

impl Default for PipelineOptions {
    fn default() -> Self {
        PipelineOptions {
            batch_size: 1024,
            rate_limit: RateLimit::default(),
            alert_unknown: true,
            unknown_severity: 2,
            run_id: "run".into(),
            alert_ids: AlertIds::Sequence,
            drift: DriftConfig::default(),
            sensor: String::new(),
        }
    }
}

/// How the pipeline names its alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertIds {
    /// `<run id>-<n>`: the n-th alert of the run (unique within a run).
    #[default]
    Sequence,
    /// `<source>-<index>` of the flow's [`crate::Origin`]: the same id whenever the same flow is
    /// decided again, so a redelivered message (a Kafka worker's at-least-once input) gives the
    /// alert it gave before and a consumer can drop the repeat.
    PerFlow,
}

/// End-of-run counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Flows given a verdict.
    pub flows: u64,
    /// Benign verdicts.
    pub benign: u64,
    /// Unknown-anomaly verdicts.
    pub unknown: u64,
    /// Threat verdicts per threat name.
    pub threats: BTreeMap<String, u64>,
    /// Alerts handed to the sinks (after deduplication).
    pub alerts: u64,
    /// Alerts suppressed by deduplication.
    pub suppressed: u64,
    /// Micro-batches run.
    pub batches: u64,
    /// Each sink's counters.
    pub sinks: Vec<SinkReport>,
    /// Earliest flow start and latest flow end seen (µs since the epoch; `None`: no timed flow).
    pub span_us: Option<(i64, i64)>,
    /// Drift per window ([`crate::drift`]).
    pub drift: DriftReport,
    /// The drift settings used.
    pub drift_config: DriftConfig,
    /// One line per window that warned (the first [`MAX_DRIFT_MESSAGES`]; all are counted in
    /// `drift.warnings`).
    pub drift_messages: Vec<String>,
}

/// Longest a live source's flows wait for their batch.
pub const LIVE_BATCH_INTERVAL: Duration = Duration::from_secs(1);

/// Drift warnings kept as text in the summary.
pub const MAX_DRIFT_MESSAGES: usize = 20;

impl Summary {
    /// Seconds of traffic the flows cover (first start to last end), when known and positive.
    pub fn traffic_seconds(&self) -> Option<f64> {
        self.span_us
            .map(|(a, b)| (b - a) as f64 / 1e6)
            .filter(|s| *s > 0.0)
    }

    /// Alerts a day at the observed flow rate: alerts × 86,400 / traffic seconds (what a SOC would
    /// handle if this traffic were typical of the day).
    pub fn alerts_per_day(&self) -> Option<f64> {
        self.traffic_seconds()
            .map(|s| self.alerts as f64 * 86_400.0 / s)
    }

    /// Threat verdicts over all threats.
    pub fn threat_total(&self) -> u64 {
        self.threats.values().sum()
    }

    /// A sink counter summed over the sinks (0 when none reports it).
    pub fn counter(&self, counter: Counter) -> u64 {
        self.sinks.iter().map(|s| s.get(counter)).sum()
    }
}

impl Summary {
    /// The counters as `name value` lines, the first counting `unit` (`flows`, or `requests` for
    /// a web-request model's run), every name after `prefix`; then the sinks' counters, unprefixed
    /// (a run with two pipelines has one set of sinks).
    pub fn lines(&self, unit: &str, prefix: &str) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let mut line = |name: &str, value: &dyn fmt::Display| {
            let _ = writeln!(out, "{prefix}{name} {value}");
        };
        line(unit, &self.flows);
        line("benign", &self.benign);
        line("threat", &self.threat_total());
        for (name, n) in &self.threats {
            line(&format!("threat[{name}]"), n);
        }
        line("unknown", &self.unknown);
        line("alerts", &self.alerts);
        line("suppressed", &self.suppressed);
        line("batches", &self.batches);
        if let (Some(secs), Some(per_day)) = (self.traffic_seconds(), self.alerts_per_day()) {
            line("traffic_seconds", &format_args!("{secs:.1}"));
            line(
                &format!("{unit}_per_second"),
                &format_args!("{:.2}", self.flows as f64 / secs),
            );
            line("alerts_per_day", &format_args!("{per_day:.0}"));
        }
        let d = &self.drift;
        line("drift_windows", &d.closed);
        line("drift_warnings", &d.warnings);
        if let Some(ks) = d.max_ks(self.drift_config.min_flows) {
            line("drift_max_ks", &format_args!("{ks:.3}"));
        }
        if let Some(u) = d.max_unknown_share(self.drift_config.min_flows) {
            line("drift_max_unknown_share", &format_args!("{u:.4}"));
        }
        for s in &self.sinks {
            for (k, v) in &s.counters {
                let _ = writeln!(out, "{} {v}", k.name());
            }
        }
        out
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lines("flows", ""))
    }
}

/// The sinks and counters one pipeline hands to the next of the same run ([`Pipeline::relay`]).
pub struct Relay {
    sinks: Vec<Box<dyn Sink>>,
    next_flow: u64,
    next_alert: u64,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("next_flow", &self.next_flow)
            .field("next_alert", &self.next_alert)
            .finish()
    }
}

/// The detection pipeline.
pub struct Pipeline {
    detector: Detector,
    sinks: Vec<Box<dyn Sink>>,
    options: PipelineOptions,
    dedup: Deduplicator,
    builder: FrameBuilder,
    drift: DriftMonitor,
    drift_warnings: Vec<String>,
    pending: Vec<FlowMeta>,
    next_flow: u64,
    next_alert: u64,
    /// When the last batch ran (a live source's partial batch waits at most [`LIVE_BATCH_INTERVAL`]).
    last_batch: Instant,
    x: Vec<f32>,
    /// With a site forest that reads source context: the context of the flows seen so far, and the
    /// batch's rows with their context appended.
    context: SourceContext,
    xc: Vec<f32>,
    verdicts: Vec<Verdict>,
    summary: Summary,
}

impl fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("options", &self.options)
            .field(
                "sinks",
                &self.sinks.iter().map(|s| s.name()).collect::<Vec<_>>(),
            )
            .field("summary", &self.summary)
            .finish_non_exhaustive()
    }
}

/// The benign distances of the detector's calibration rows: what drift compares windows against.
fn reference_distances(detector: &Detector) -> Vec<f32> {
    let reference = detector.decider().reference();
    reference
        .calibration
        .chunks_exact(reference.dim.max(1))
        .map(|c| reference.benign_distance(c))
        .collect()
}

/// How strongly `a` points at an attack compared with `b`: threat over unknown over benign, then
/// the larger margin.
fn stronger(a: &Verdict, b: &Verdict) -> std::cmp::Ordering {
    let rank = |v: &Verdict| match v.kind {
        VerdictKind::Benign => 0,
        VerdictKind::Unknown => 1,
        VerdictKind::Threat => 2,
    };
    rank(a).cmp(&rank(b)).then(a.score.total_cmp(&b.score))
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Pipeline {
    /// A pipeline; sinks run in stage order (recording before responding), then in the given order.
    pub fn new(
        detector: Detector,
        mut sinks: Vec<Box<dyn Sink>>,
        options: PipelineOptions,
    ) -> Result<Self> {
        if options.batch_size == 0 || options.batch_size > 1 << 20 {
            return Err(DetectError::Config {
                field: "batch size",
                message: format!("expected 1 to 1048576, found {}", options.batch_size),
            });
        }
        if !(1..=4).contains(&options.unknown_severity) {
            return Err(DetectError::Config {
                field: "unknown severity",
                message: format!("expected 1 to 4, found {}", options.unknown_severity),
            });
        }
        sinks.sort_by_key(|s| s.stage());
        let mut summary = Summary {
            drift_config: options.drift,
            ..Summary::default()
        };
        for t in detector.threats() {
            summary.threats.insert(t.name.clone(), 0);
        }
        let drift = DriftMonitor::new(reference_distances(&detector), options.drift);
        Ok(Pipeline {
            drift,
            drift_warnings: Vec::new(),
            dedup: Deduplicator::new(options.rate_limit)?,
            detector,
            sinks,
            builder: FrameBuilder::new("capture"),
            pending: Vec::new(),
            next_flow: 1,
            next_alert: 1,
            last_batch: Instant::now(),
            x: Vec::new(),
            context: SourceContext::new(metaids_library::CONTEXT_SOURCES),
            xc: Vec::new(),
            verdicts: Vec::new(),
            summary,
            options,
        })
    }

    /// The detector.
    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    /// Replaces the detector (a new library version, site profile or model) between batches: flows
    /// gathered but not yet decided are decided by the new one, so none is lost or decided twice.
    /// Drift is measured against the new reference from the next window on (the open window is
    /// closed first); the new detector's threats join the summary's per-threat counters.
    pub fn replace_detector(&mut self, detector: Detector) {
        for t in detector.threats() {
            self.summary.threats.entry(t.name.clone()).or_insert(0);
        }
        if let Some(w) = self.drift.set_reference(reference_distances(&detector)) {
            if w.warned && self.drift_warnings.len() < MAX_DRIFT_MESSAGES {
                self.drift_warnings.push(w.describe(self.drift.config()));
            }
        }
        self.detector = detector;
    }

    /// Drift windows closed so far (the run summary gets the final report from
    /// [`Pipeline::finish`]).
    pub fn drift_report(&self) -> &DriftReport {
        self.drift.report()
    }

    /// Counters so far (sink counters come with [`Pipeline::finish`]).
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Adds one flow from the flow engine (`source` names its capture); runs a batch when full.
    pub fn push_record(&mut self, record: &FlowRecord, source: &Arc<str>) -> Result<()> {
        self.pending
            .push(FlowMeta::from_record(self.next_flow, record, source));
        self.next_flow += 1;
        self.builder.push(record);
        if self.pending.len() >= self.options.batch_size {
            self.flush()?;
        }
        Ok(())
    }

    /// Runs the gathered flows as a (possibly short) batch.
    pub fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let frame = self.builder.take();
        let metas = std::mem::take(&mut self.pending);
        let rows: Vec<usize> = (0..frame.len()).collect();
        let r = self.process(&frame, &rows, None, &metas);
        self.pending = metas;
        self.pending.clear();
        r
    }

    /// Scores every row of a CIC frame (read from flow CSVs) in batches, after the flows pushed so
    /// far; `progress` gets the number of rows done after each batch.
    pub fn push_frame(&mut self, frame: &FlowFrame, progress: &mut dyn FnMut(usize)) -> Result<()> {
        self.detector
            .model()
            .check_layout(&frame.layout)
            .map_err(DetectError::model("checking the flows' schema"))?;
        self.flush()?;
        let columns = FrameColumns::new(frame);
        let all: Vec<usize> = (0..frame.len()).collect();
        for rows in all.chunks(self.options.batch_size) {
            let metas: Vec<FlowMeta> = rows
                .iter()
                .enumerate()
                .map(|(k, &r)| FlowMeta::from_frame(self.next_flow + k as u64, frame, r, &columns))
                .collect();
            self.next_flow += rows.len() as u64;
            self.process(frame, rows, None, &metas)?;
            progress(rows.len());
        }
        Ok(())
    }

    /// Scores web requests after the flows pushed so far: `frame` holds the feature rows of their
    /// values (the `http-requests` layout), `counts[i]` consecutive rows for request `i`, and
    /// `metas[i]` its facts ([`FlowMeta::http`] set; `seq` is given here). A request's verdict is
    /// the strongest of its values' — a threat over an unknown over benign, among equals the larger
    /// margin — and its alert names that value (`matched`). Requests go in batches of at most the
    /// batch size; a request with no value has nothing to score and is refused.
    pub fn push_requests(
        &mut self,
        frame: &FlowFrame,
        counts: &[usize],
        mut metas: Vec<FlowMeta>,
    ) -> Result<()> {
        self.detector
            .model()
            .check_layout(&frame.layout)
            .map_err(DetectError::model("checking the requests' schema"))?;
        if counts.len() != metas.len()
            || counts.contains(&0)
            || counts.iter().sum::<usize>() != frame.len()
        {
            return Err(DetectError::Config {
                field: "requests",
                message: format!(
                    "{} requests with {} row counts over {} rows (each request needs at least one value row)",
                    metas.len(),
                    counts.len(),
                    frame.len()
                ),
            });
        }
        self.flush()?;
        let mut first_row = 0;
        let mut first = 0;
        while first < metas.len() {
            let end = (first + self.options.batch_size).min(metas.len());
            let n_rows: usize = counts[first..end].iter().sum();
            let rows: Vec<usize> = (first_row..first_row + n_rows).collect();
            for m in &mut metas[first..end] {
                m.seq = self.next_flow;
                self.next_flow += 1;
            }
            self.process(frame, &rows, Some(&counts[first..end]), &metas[first..end])?;
            first_row += n_rows;
            first = end;
        }
        Ok(())
    }

    /// Scores every flow of `source` to its end and returns its counters: the one driving loop of
    /// captures, live interfaces and benches. Flows are named `SOURCE:FLOW-ID` in verdicts and
    /// alerts. A live source gets a (possibly short) batch at least once a second and whenever it
    /// is quiet, so alerts do not wait for a full batch.
    pub fn push_source(&mut self, source: &mut dyn FlowSource) -> Result<SourceReport> {
        let name = source.name().to_string();
        let origin: Arc<str> = Arc::from(name.as_str());
        let live = source.is_live();
        let mut flows = Vec::new();
        self.last_batch = Instant::now();
        loop {
            let step = source
                .next_flows(&mut flows)
                .map_err(|e| DetectError::Capture {
                    name: name.clone(),
                    source: e,
                })?;
            // By reference: a record is ~700 bytes, not worth another move.
            for f in &flows {
                self.push_record(f, &origin)?;
            }
            flows.clear();
            if live && (step == Step::Idle || self.last_batch.elapsed() >= LIVE_BATCH_INTERVAL) {
                self.flush()?;
            }
            if step == Step::Done {
                return Ok(source.report());
            }
        }
    }

    /// Reads a pcap/pcapng capture through a fresh flow engine ([`CaptureSource`]: flows do not
    /// span captures) and scores its flows. A corrupt or truncated body ends the capture early
    /// ([`SourceReport::ended_early`]); an unreadable header is an error.
    pub fn push_capture<R: Read>(
        &mut self,
        input: R,
        name: &str,
        flow_config: FlowConfig,
    ) -> Result<SourceReport> {
        let mut source = CaptureSource::new(input, name, ReaderConfig::default(), flow_config)
            .map_err(|source| DetectError::Capture {
                name: name.to_string(),
                source,
            })?;
        self.push_source(&mut source)
    }

    /// Decides `metas`, one per row of `rows`, or with `groups` one per group of consecutive rows
    /// (a web request's values: its verdict is the strongest of theirs).
    fn process(
        &mut self,
        frame: &FlowFrame,
        rows: &[usize],
        groups: Option<&[usize]>,
        metas: &[FlowMeta],
    ) -> Result<()> {
        let started = Instant::now();
        let d = &self.detector;
        d.normaliser().transform_into(frame, rows, &mut self.x)?;
        let emb = d.embed(&self.x)?;
        // A site forest with source context reads each flow's row and its source's recent flows,
        // counted over the stream in the order flows arrive (as the baseline counted its window).
        // Web requests (grouped rows) have no forest.
        let din = d.normaliser().output_dim();
        let with_context = d.source_context() && groups.is_none();
        let forest_rows: &[f32] = if with_context {
            self.xc.clear();
            for (row, m) in self.x.chunks_exact(din).zip(metas) {
                self.xc.extend_from_slice(row);
                // Keyed by the address itself: no text, no allocation per flow.
                let source = m.src_ip.map_or_else(
                    || SourceContext::key(&("flow", m.flow_id)),
                    |ip| SourceContext::key(&ip),
                );
                self.xc.extend(
                    self.context
                        .push_key(source, m.start_us.unwrap_or(0), m.dest_port),
                );
            }
            &self.xc
        } else {
            &self.x
        };
        d.decide_batch(&emb, forest_rows, &mut self.verdicts);
        // For each decided unit: the position of its deciding row among `rows`, and that row's
        // place within its group.
        // Web requests: each unit's deciding row among `rows` and its place within its group.
        // Flows decide one row each and need no table (`pick(i)` is then `(i, 0)`).
        let picks: Option<Vec<(usize, usize)>> = groups.map(|counts| {
            let mut start = 0;
            let picks: Vec<(usize, usize)> = counts
                .iter()
                .map(|&n| {
                    let best = (start..start + n)
                        .max_by(|&a, &b| stronger(&self.verdicts[a], &self.verdicts[b]))
                        .unwrap_or(start);
                    let pick = (best, best - start);
                    start += n;
                    pick
                })
                .collect();
            let chosen: Vec<Verdict> = picks.iter().map(|&(r, _)| self.verdicts[r]).collect();
            self.verdicts = chosen;
            picks
        });
        let pick = |i: usize| picks.as_ref().map_or((i, 0), |p| p[i]);
        let now = now_us();
        let mut candidates: Vec<(usize, Verdict)> = Vec::new();
        for (i, (v, m)) in self.verdicts.iter().zip(metas).enumerate() {
            self.summary.flows += 1;
            if let Some(w) = self.drift.observe(
                m.start_us,
                v.benign_distance,
                v.kind == VerdictKind::Unknown,
            ) {
                if w.warned && self.drift_warnings.len() < MAX_DRIFT_MESSAGES {
                    self.drift_warnings.push(w.describe(self.drift.config()));
                }
            }
            if let Some(start) = m.start_us {
                let end = start.saturating_add(m.duration_us.max(0.0) as i64);
                self.summary.span_us = Some(match self.summary.span_us {
                    Some((a, b)) => (a.min(start), b.max(end)),
                    None => (start, end),
                });
            }
            let sig = match v.kind {
                VerdictKind::Benign => {
                    self.summary.benign += 1;
                    continue;
                }
                VerdictKind::Unknown => {
                    self.summary.unknown += 1;
                    if !self.options.alert_unknown {
                        continue;
                    }
                    UNKNOWN_SIGNATURE_ID
                }
                VerdictKind::Threat => {
                    let t = v.threat.and_then(|t| d.threats().get(t));
                    if let Some(t) = t {
                        *self.summary.threats.entry(t.name.clone()).or_default() += 1;
                    }
                    t.map_or(UNKNOWN_SIGNATURE_ID, |t| t.signature_id)
                }
            };
            if self.dedup.admit(m.src_ip, sig, m.start_us.unwrap_or(now)) {
                candidates.push((i, *v));
            } else {
                self.summary.suppressed += 1;
            }
        }
        let raw = |r: usize| -> Vec<f64> {
            frame
                .numeric_row(rows[r])
                .iter()
                .map(|&v| f64::from(v))
                .collect()
        };
        let forest_rows: &[f32] = if with_context { &self.xc } else { &self.x };
        let explanations = match &picks {
            None => d.explain(&self.x, forest_rows, &emb, &raw, &candidates)?,
            Some(p) => {
                let by_row: Vec<(usize, Verdict)> =
                    candidates.iter().map(|&(i, v)| (p[i].0, v)).collect();
                d.explain(&self.x, forest_rows, &emb, &raw, &by_row)?
            }
        };
        let context = AlertContext {
            threats: d.threats(),
            model: d.model_version(),
            library_version: d.library_version(),
            library: d.library_id(),
            unknown_severity: self.options.unknown_severity,
            now_us: now,
            host: &self.options.sensor,
        };
        let dim = d.dim();
        // Under a site forest a flow's alert carries its raw values and source context, so that
        // feedback on it reaches the forest's feature space (a web request's alert does not).
        let forest_width = d
            .decider()
            .site_forest()
            .filter(|_| groups.is_none())
            .map(|f| f.width());
        let mut alerts = Vec::with_capacity(candidates.len());
        for ((i, v), explanation) in candidates.into_iter().zip(explanations) {
            let alert_id = match self.options.alert_ids {
                AlertIds::Sequence => format!("{}-{}", self.options.run_id, self.next_alert),
                AlertIds::PerFlow => {
                    format!("{}-{}", metas[i].origin.source, metas[i].origin.index)
                }
            };
            self.next_alert += 1;
            let (row, within) = pick(i);
            let mut event = alert_event(
                &context,
                &metas[i],
                &v,
                alert_id,
                explanation,
                &emb[row * dim..(row + 1) * dim],
            );
            if let (Some(w), Some(c)) = (
                forest_width,
                event.alert.as_mut().and_then(|a| a.context.as_mut()),
            ) {
                c.metaids.values = Some(metaids_decide::FlowValues {
                    numeric: frame.numeric_row(rows[row]).to_vec(),
                    categorical: frame.categorical_row(rows[row]).map(String::from).collect(),
                });
                if with_context {
                    c.metaids.source_context = self.xc[row * w + din..(row + 1) * w].to_vec();
                }
            }
            if let (Some(http), Some(alert)) = (&metas[i].http, &mut event.alert) {
                if let Some(c) = &mut alert.context {
                    c.metaids.matched = http.values.get(within).cloned();
                }
            }
            let line = serde_json::to_string(&event).map_err(|e| DetectError::Sink {
                sink: "eve".into(),
                message: e.to_string(),
            })?;
            alerts.push(Alert {
                index: i,
                event,
                line,
            });
        }
        self.summary.alerts += alerts.len() as u64;
        self.summary.batches += 1;
        self.last_batch = Instant::now();
        let batch = Batch {
            flows: metas,
            verdicts: &self.verdicts,
            alerts: &alerts,
            context,
            latency: started.elapsed(),
        };
        for s in &mut self.sinks {
            s.write_batch(&batch)?;
        }
        Ok(())
    }

    /// Runs the last batch and closes the drift window, then hands the sinks, unfinished, to the
    /// next pipeline of the same run ([`Pipeline::after`]): a detect run scoring a capture's flows
    /// with a flow model and its HTTP requests with a web-request model writes one alert file, one
    /// verdict file and one nftables script, with flow numbers and alert ids that do not repeat.
    /// The summary has no sink counters; the last pipeline's [`Pipeline::finish`] reports them.
    /// On an error the sinks are dropped unfinished (a partial output is removed, never renamed).
    pub fn relay(mut self) -> Result<(Summary, Relay)> {
        self.close()?;
        Ok((
            self.summary,
            Relay {
                sinks: self.sinks,
                next_flow: self.next_flow,
                next_alert: self.next_alert,
            },
        ))
    }

    /// A pipeline that goes on from `relay`: its sinks, and flow numbers and alert ids after the
    /// previous pipeline's.
    pub fn after(detector: Detector, relay: Relay, options: PipelineOptions) -> Result<Self> {
        let mut p = Pipeline::new(detector, relay.sinks, options)?;
        p.next_flow = relay.next_flow;
        p.next_alert = relay.next_alert;
        Ok(p)
    }

    /// Runs the last batch and closes the drift window.
    fn close(&mut self) -> Result<()> {
        let flushed = self.flush();
        if let Some(w) = self.drift.close() {
            if w.warned && self.drift_warnings.len() < MAX_DRIFT_MESSAGES {
                self.drift_warnings.push(w.describe(self.drift.config()));
            }
        }
        self.summary.drift = self.drift.report().clone();
        self.summary.drift_messages = std::mem::take(&mut self.drift_warnings);
        flushed
    }

    /// Runs the last batch, finishes every sink (renames outputs, drains the webhook queue) and
    /// returns the counters. Every sink is finished even when one fails; the first error is returned.
    pub fn finish(mut self) -> Result<Summary> {
        let mut first_err = self.close().err();
        for s in &mut self.sinks {
            match s.finish() {
                Ok(r) => self.summary.sinks.push(r),
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(self.summary),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(kind: VerdictKind, score: f32) -> Verdict {
        Verdict {
            kind,
            score,
            ..Verdict::default()
        }
    }

    #[test]
    fn summary_lines_name_their_unit_and_keep_sink_counters_unprefixed() {
        let mut s = Summary {
            flows: 3,
            benign: 2,
            unknown: 1,
            ..Summary::default()
        };
        s.threats.insert("ssti".into(), 0);
        s.sinks.push(SinkReport {
            sink: "eve".into(),
            counters: vec![(Counter::AlertsWritten, 1)],
            notes: Vec::new(),
        });
        let flows = s.to_string();
        assert!(flows.starts_with("flows 3\nbenign 2\nthreat 0\nthreat[ssti] 0\nunknown 1\n"));
        let requests = s.lines("requests", "http_");
        assert!(requests.starts_with("http_requests 3\nhttp_benign 2\nhttp_threat 0\n"));
        assert!(requests.contains("http_threat[ssti] 0\n"));
        assert!(requests.ends_with("\nalerts_written 1\n"), "{requests}");
        assert_eq!(flows.lines().count(), requests.lines().count());
    }

    #[test]
    fn a_request_is_decided_by_its_strongest_value() {
        let values = [
            verdict(VerdictKind::Benign, -0.5),
            verdict(VerdictKind::Unknown, 3.0),
            verdict(VerdictKind::Threat, 0.1),
            verdict(VerdictKind::Threat, 0.4),
            verdict(VerdictKind::Benign, -0.1),
        ];
        let best = (0..values.len())
            .max_by(|&a, &b| stronger(&values[a], &values[b]))
            .expect("values");
        assert_eq!(
            best, 3,
            "a threat beats a larger unknown margin; then the margin"
        );
        let benign = [values[0], values[4]];
        assert_eq!(
            stronger(&benign[0], &benign[1]),
            std::cmp::Ordering::Less,
            "among benign values, the one nearest a flag"
        );
        let nan = verdict(VerdictKind::Benign, f32::NAN);
        assert_eq!(stronger(&nan, &nan), std::cmp::Ordering::Equal);
    }
}
