//! The scoring worker: one thread that owns the detection pipeline. It scores the flows of a live
//! interface as they end, each new capture of the watched directory through the flow engine (or,
//! with a web-request model, by its HTTP requests, reassembled) and
//! each new flow file of the flow directory, reloads the threat library when it changed (an
//! API change, or the file changed under it by the CLI) between micro-batches, writes EVE `stats`
//! records, and on stop decides the flows it holds and syncs its outputs.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metaids_detect::{
    ArmedThreats, CaptureRequests, Detector, DetectorOptions, Pipeline, PipelineOptions,
    RequestRows, Seen, Summary,
};
use metaids_http::raw::Limits;
use std::sync::atomic::{AtomicBool, Ordering};

use metaids_capture::{LiveCapture, LiveConfig, LiveSource};
use metaids_flow::{CaptureSource, FlowConfig, FlowSource, ReaderConfig, Step};
use metaids_model::ThreatModel;

use crate::config::Checked;
use crate::error::{Result, ServeError};
use crate::eve_log::{lock, reopen_if_asked, EveLog, ServiceSink};
use crate::state::{ModelCell, Shared};
use crate::watch::{scan, Candidate, FileRecord, Kind, Progress};

/// How often the idle worker looks at the library file and the stats clock between wakes.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// Arms the current version of `library` for `model` (threats, site profile and its adaptation).
pub fn arm(
    model: &Arc<ThreatModel>,
    library: &Path,
    options: &DetectorOptions,
) -> Result<Detector> {
    let set = ArmedThreats::load(library, model)?;
    Ok(Detector::from_armed(
        Arc::clone(model),
        set,
        options.clone(),
    )?)
}

/// The responders the settings ask for (they see a batch after its alerts are on disk): nftables,
/// applied as alerts arrive, the webhook, and forwarding to syslog or unix sockets.
fn responders(cfg: &Checked) -> Result<Vec<Box<dyn metaids_detect::Sink>>> {
    let c = &cfg.config;
    let mut out: Vec<Box<dyn metaids_detect::Sink>> = Vec::new();
    if c.nft {
        let allow = c
            .nft_allow
            .iter()
            .map(|n| {
                n.parse().map_err(|e| ServeError::Config {
                    field: "nft_allow".into(),
                    message: format!("{n:?}: {e}"),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let config = metaids_detect::NftConfig {
            timeout_s: c.nft_timeout_s,
            include_unknown: c.nft_unknown,
            apply: true,
            allow,
            drop_rule: c.nft_drop_rule,
            ..metaids_detect::NftConfig::default()
        };
        let mut script = cfg.eve.clone().into_os_string();
        script.push(".nft");
        tracing::info!("{}", config.describe());
        out.push(Box::new(metaids_detect::NftablesSink::create(
            Path::new(&script),
            config,
        )?));
    }
    if let Some(url) = &c.webhook {
        let config = metaids_detect::WebhookConfig {
            header: c.webhook_header.clone(),
            ca_file: c.webhook_ca.clone(),
            ..metaids_detect::WebhookConfig::new(url)
        };
        out.push(Box::new(metaids_detect::WebhookSink::start(config)?));
    }
    for target in &c.forward {
        let target = metaids_detect::ForwardTarget::parse(target)?;
        out.push(Box::new(metaids_detect::ForwardSink::create(
            target,
            c.syslog_facility,
            &cfg.sensor,
        )?));
    }
    Ok(out)
}

/// The live capture the settings ask for: opened now, so a missing interface or privilege stops
/// the start with a message naming it.
fn open_live(cfg: &Checked) -> Result<Option<(LiveSource, Arc<AtomicBool>)>> {
    let Some(interface) = &cfg.config.interface else {
        return Ok(None);
    };
    let live = LiveConfig {
        filter: cfg.config.bpf.clone(),
        ..LiveConfig::new(interface)
    };
    let capture = LiveCapture::open(&live).map_err(|e| ServeError::Config {
        field: "interface".into(),
        message: format!("cannot capture on {interface}: {e}"),
    })?;
    let engine =
        metaids_flow::FlowEngine::new(FlowConfig::default()).map_err(|e| ServeError::Config {
            field: "interface".into(),
            message: e.to_string(),
        })?;
    let stop = Arc::new(AtomicBool::new(false));
    Ok(Some((
        LiveSource::new(capture, engine, Arc::clone(&stop)),
        stop,
    )))
}

/// What identifies a version of the library file on disk.
type Stamp = Option<(u64, SystemTime)>;

/// A model's files as they are now: where the path leads (a symbolic link swapped to another
/// model directory changes it) and the stamps of its manifest and weights.
type ModelStamp = (Option<PathBuf>, Stamp, Stamp);

fn model_stamp(path: &Path) -> ModelStamp {
    let dir = if path.is_file() {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        path.to_path_buf()
    };
    (
        std::fs::canonicalize(&dir).ok(),
        stamp(&dir.join(metaids_model::io::MANIFEST_FILE)),
        stamp(&dir.join(metaids_model::io::WEIGHTS_FILE)),
    )
}

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.len(), m.modified().unwrap_or(UNIX_EPOCH)))
}

/// The worker's state.
pub struct Worker {
    shared: Arc<Shared>,
    model: Arc<ThreatModel>,
    /// The model file (a model directory or its manifest), its stamp when loaded, and the cell the
    /// API reads the model from.
    model_path: PathBuf,
    model_stamp: ModelStamp,
    model_cell: Arc<ModelCell>,
    options: DetectorOptions,
    library: PathBuf,
    pipeline: Pipeline,
    eve: Arc<Mutex<EveLog>>,
    pcap_dir: Option<PathBuf>,
    flow_dir: Option<PathBuf>,
    /// The live capture, and the flag that ends it.
    live: Option<(LiveSource, Arc<AtomicBool>)>,
    state_path: PathBuf,
    progress: Progress,
    stamp: Stamp,
    generation: u64,
    retry_at: Option<Instant>,
    poll: Duration,
    settle: Duration,
    stats_every: Option<Duration>,
    next_stats: Instant,
    deadline: Option<Instant>,
    sensor: String,
    /// Requests decided per batch (the pipeline's batch size).
    batch: usize,
    /// When the model's files are looked at next (at most every `IDLE_CHECK`: three system calls,
    /// kept off the per-chunk path).
    next_model_check: Instant,
}

impl Worker {
    /// Arms the library and opens the outputs; every error here stops the start with a message
    /// naming the file.
    pub fn new(
        cfg: &Checked,
        model: Arc<ThreatModel>,
        model_cell: Arc<ModelCell>,
        shared: Arc<Shared>,
    ) -> Result<Self> {
        let model_stamp = model_stamp(&cfg.model);
        let options = DetectorOptions {
            model_version: Some(metaids_detect::model_version(&model)?),
            ..DetectorOptions::default()
        };
        let stamp0 = stamp(&cfg.library);
        let generation = shared.generation();
        let detector = arm(&model, &cfg.library, &options)?;
        let eve = Arc::new(Mutex::new(EveLog::open(&cfg.eve).map_err(|source| {
            ServeError::Io {
                path: cfg.eve.clone(),
                source,
            }
        })?));
        let progress = Progress::load(&cfg.state)?;
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let popts = PipelineOptions {
            batch_size: cfg.config.batch,
            run_id: format!("{us:x}"),
            sensor: cfg.sensor.clone(),
            ..PipelineOptions::default()
        };
        let sink = ServiceSink::new(Arc::clone(&eve), Arc::clone(&shared));
        let mut sinks: Vec<Box<dyn metaids_detect::Sink>> = vec![Box::new(sink)];
        sinks.extend(responders(cfg)?);
        let pipeline = Pipeline::new(detector, sinks, popts)?;
        let c = &cfg.config;
        let mut w = Worker {
            shared,
            model,
            model_path: cfg.model.clone(),
            model_stamp,
            model_cell,
            options,
            library: cfg.library.clone(),
            pipeline,
            eve,
            pcap_dir: cfg.pcap_dir.clone(),
            flow_dir: cfg.flow_dir.clone(),
            live: open_live(cfg)?,
            state_path: cfg.state.clone(),
            progress,
            stamp: stamp0,
            generation,
            retry_at: None,
            poll: Duration::from_millis(c.poll_ms),
            settle: Duration::from_millis(c.settle_ms),
            stats_every: (c.stats_interval_s > 0).then(|| Duration::from_secs(c.stats_interval_s)),
            next_stats: Instant::now(),
            deadline: (c.max_runtime_s > 0)
                .then(|| Instant::now() + Duration::from_secs(c.max_runtime_s)),
            sensor: cfg.sensor.clone(),
            batch: c.batch,
            next_model_check: Instant::now() + IDLE_CHECK,
        };
        if let Some(every) = w.stats_every {
            w.next_stats = Instant::now() + every;
        }
        w.publish_armed();
        Ok(w)
    }

    fn publish_armed(&self) {
        let d = self.pipeline.detector();
        let m = &self.shared.metrics;
        m.library_version
            .set(i64::try_from(d.library_version()).unwrap_or(i64::MAX));
        m.threats.set(d.threats().len() as i64);
        m.model
            .get_or_create(&crate::state::VersionLabel {
                version: d.model_version().to_string(),
            })
            .set(1);
        self.shared.set_armed(crate::state::ArmedView::new(
            d.library_version(),
            d.threats().to_vec(),
        ));
        let site = d.decider().reference().clone();
        let model_ref = &self.model.reference;
        self.shared.set_status(|s| {
            s.ready = true;
            s.library_version = d.library_version();
            s.threats = d.threats().len();
            s.model_version = d.model_version().to_string();
            s.site_profile = site != *model_ref;
        });
    }

    /// Reloads the library if it changed and a reload is due, and swaps the model if its file
    /// changed: the new model must read the same input (dataset and feature layout) and the
    /// library must open for it (a library is bound to one model: swap both, the library first or
    /// together); then both are armed at once, between two batches. A failed reload or swap (a
    /// file busy, damaged, of another layout or another model) keeps what is armed and is retried a
    /// second later.
    fn reload_if_changed(&mut self) {
        let now_stamp = stamp(&self.library);
        let generation = self.shared.generation();
        let now_model = if Instant::now() >= self.next_model_check {
            self.next_model_check = Instant::now() + IDLE_CHECK;
            model_stamp(&self.model_path)
        } else {
            self.model_stamp.clone()
        };
        let model_changed = now_model != self.model_stamp;
        if now_stamp == self.stamp && generation == self.generation && !model_changed {
            return;
        }
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        let swapped = if model_changed {
            match self.load_compatible() {
                Ok(m) => Some(m),
                Err(msg) => return self.reload_failed(&msg, true),
            }
        } else {
            None
        };
        let model = swapped.as_ref().map_or(&self.model, |(m, _)| m);
        let options = swapped
            .as_ref()
            .map_or_else(|| self.options.clone(), |(_, o)| o.clone());
        match arm(model, &self.library, &options) {
            Ok(detector) => {
                let before = self.pipeline.detector().library_version();
                let old_model = self.pipeline.detector().model_version().to_string();
                self.pipeline.replace_detector(detector);
                self.stamp = now_stamp;
                self.generation = generation;
                self.retry_at = None;
                if let Some((m, o)) = swapped {
                    self.shared
                        .metrics
                        .model
                        .get_or_create(&crate::state::VersionLabel { version: old_model })
                        .set(0);
                    self.model_cell.set(Arc::clone(&m));
                    self.model = m;
                    self.options = o;
                    self.model_stamp = now_model;
                    self.shared.metrics.model_swaps.inc();
                    tracing::info!(model = %self.model_path.display(), "model swapped");
                }
                self.shared.metrics.reloads.inc();
                self.publish_armed();
                tracing::info!(
                    from = before,
                    to = self.pipeline.detector().library_version(),
                    "threat library reloaded"
                );
            }
            Err(e) => {
                let msg = if model_changed {
                    format!(
                        "model swap refused, the armed model stays: {e} (a library is bound to its model: replace the library with one made for the new model)"
                    )
                } else {
                    format!("library reload failed, the armed version stays: {e}")
                };
                self.reload_failed(&msg, model_changed);
            }
        }
    }

    /// The model file's new content, if it reads the same input as the armed model; with the
    /// detector options for it.
    fn load_compatible(&self) -> std::result::Result<(Arc<ThreatModel>, DetectorOptions), String> {
        let path = self.model_path.display();
        let m = metaids_model::load(&self.model_path)
            .map_err(|e| format!("model swap refused, the armed model stays: {path}: {e}"))?;
        let (was, now) = (self.model.normaliser.kind, m.normaliser.kind);
        if was != now {
            return Err(format!(
                "model swap refused, the armed model stays: {path} was trained on {now} data, the armed model on {was} data"
            ));
        }
        m.check_layout(&was.layout()).map_err(|e| {
            format!("model swap refused, the armed model stays: {path}: another input layout: {e}")
        })?;
        let options = DetectorOptions {
            model_version: Some(
                metaids_detect::model_version(&m)
                    .map_err(|e| format!("model swap refused: {path}: {e}"))?,
            ),
            ..self.options.clone()
        };
        Ok((Arc::new(m), options))
    }

    fn reload_failed(&mut self, msg: &str, model: bool) {
        let m = &self.shared.metrics;
        if model {
            m.model_swap_failures.inc();
        } else {
            m.reload_failures.inc();
        }
        self.retry_at = Some(Instant::now() + Duration::from_secs(1));
        tracing::warn!("{msg}");
        let msg = msg.to_string();
        self.shared.set_status(|s| s.last_warning = Some(msg));
    }

    /// Between batches: reload, stats, EVE reopening. An EVE write error is fatal.
    fn tick(&mut self) -> Result<()> {
        self.reload_if_changed();
        let drift = self.pipeline.drift_report();
        if let Some(w) = drift.windows.last() {
            let m = &self.shared.metrics;
            m.unknown_share.set(w.unknown_share());
            m.drift_ks.set(w.ks);
            m.drift_warnings
                .set(i64::try_from(drift.warnings).unwrap_or(i64::MAX));
        }
        {
            let mut log = lock(&self.eve);
            let path = log.path().to_path_buf();
            reopen_if_asked(&mut log, &self.shared)
                .map_err(|source| ServeError::Io { path, source })?;
        }
        if let Some(every) = self.stats_every {
            if Instant::now() >= self.next_stats {
                self.next_stats = Instant::now() + every;
                self.write_stats()?;
            }
        }
        Ok(())
    }

    /// One EVE `stats` record in Suricata's shape (`uptime`, `decoder.pkts`, `flow.total`,
    /// `detect.alert`, `detect.alerts_suppressed`), valid under Suricata's schema, which allows
    /// nothing else there: metaids' own figures (verdicts by kind, files, reloads, drift) are on
    /// `/metrics`.
    fn write_stats(&mut self) -> Result<()> {
        let m = &self.shared.metrics;
        let s = self.pipeline.summary();
        let now_us = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
        )
        .unwrap_or(i64::MAX);
        let record = serde_json::json!({
            "timestamp": metaids_detect::eve_timestamp(now_us),
            "event_type": "stats",
            "host": self.sensor,
            "stats": {
                "uptime": self.shared.uptime().as_secs(),
                "decoder": { "pkts": m.packets.get() },
                "flow": { "total": m.flows.get() },
                "detect": { "alert": s.alerts, "alerts_suppressed": s.suppressed },
            }
        });
        let mut line = record.to_string();
        line.push('\n');
        let mut log = lock(&self.eve);
        let path = log.path().to_path_buf();
        reopen_if_asked(&mut log, &self.shared)
            .and_then(|()| log.append(line.as_bytes(), 1))
            .map_err(|source| ServeError::Io { path, source })
    }

    fn record(
        &mut self,
        c: &Candidate,
        status: &str,
        flows: u64,
        packets: u64,
        note: Option<String>,
    ) -> Result<()> {
        if status == "failed" {
            self.shared.metrics.files_failed.inc();
        }
        if let Some(n) = &note {
            tracing::warn!(file = %c.name, "{n}");
            self.shared
                .set_status(|s| s.last_warning = Some(format!("{}: {n}", c.name)));
        }
        self.progress.files.insert(
            c.name.clone(),
            FileRecord {
                size: c.size,
                mtime_ns: c.mtime_ns,
                status: status.into(),
                flows,
                packets,
                note,
            },
        );
        self.progress.save(&self.state_path)
    }

    /// Scores one flow file: read whole (rows of the model's dataset; a malformed row fails the
    /// file, recorded with its line), then decided batch by batch. The library is reloaded before
    /// and after it.
    fn process_flows(&mut self, c: &Candidate) -> Result<()> {
        let opts = metaids_ingest::ReadOptions {
            dataset: Some(self.model.normaliser.kind),
            ..metaids_ingest::ReadOptions::default()
        };
        let frame = match metaids_ingest::read_files(std::slice::from_ref(&c.path), &opts) {
            Ok((frame, _)) => frame,
            Err(e) => return self.record(c, "failed", 0, 0, Some(e.to_string())),
        };
        if let Err(e) = self.model.check_layout(&frame.layout) {
            return self.record(c, "failed", 0, 0, Some(e.to_string()));
        }
        self.tick()?;
        let flows_before = self.pipeline.summary().flows;
        self.pipeline.push_frame(&frame, &mut |_| {})?;
        self.pipeline.flush()?;
        let flows = self.pipeline.summary().flows - flows_before;
        self.shared.metrics.files_done.inc();
        self.shared.set_status(|s| s.files_done += 1);
        tracing::info!(file = %c.name, flows, "flow file scored");
        self.tick()?;
        self.record(c, "done", flows, 0, None)
    }

    /// Scores the HTTP requests of one capture with a web-request model: reassembled as its packets
    /// are read, decided a batch at a time; a body that breaks off ends the capture early (what
    /// was read is decided, and the capture is recorded as failed with the reason).
    fn process_requests(&mut self, c: &Candidate) -> Result<()> {
        let file = match File::open(&c.path) {
            Ok(f) => f,
            Err(e) => return self.record(c, "failed", 0, 0, Some(format!("cannot open: {e}"))),
        };
        let input = BufReader::with_capacity(1 << 20, metaids_ingest::decompressing(&c.path, file));
        let mut capture = match CaptureRequests::new(input, &c.name, Limits::default()) {
            Ok(s) => s,
            Err(e) => return self.record(c, "failed", 0, 0, Some(format!("not a capture: {e}"))),
        };
        let mut rows = RequestRows::new();
        let mut got = Vec::new();
        let before = self.pipeline.summary().flows;
        let batch = self.batch.max(1);
        let mut note = None;
        loop {
            let more = match capture.next_requests(&mut got) {
                Ok(more) => more,
                Err(e) => {
                    note = Some(format!("capture ended early: {e}"));
                    false
                }
            };
            let first = capture.requests() - got.len() as u64;
            for (k, r) in got.drain(..).enumerate() {
                rows.push(
                    &Seen::captured(&c.name, &r, first + k as u64 + 1),
                    "request",
                );
            }
            if rows.len() >= batch || !more {
                rows.score(&mut self.pipeline)?;
                self.tick()?;
            }
            if !more {
                break;
            }
        }
        self.pipeline.flush()?;
        let packets = capture.packets();
        let unscored = rows.without_values;
        let stats = capture.finish();
        self.shared.metrics.packets.inc_by(packets);
        let decided = self.pipeline.summary().flows - before;
        let status = if note.is_some() { "failed" } else { "done" };
        if note.is_none() {
            self.shared.metrics.files_done.inc();
            self.shared.set_status(|s| s.files_done += 1);
        }
        tracing::info!(
            file = %c.name,
            packets,
            requests = decided,
            without_values = unscored,
            connections_given_up = stats.not_http + stats.over_limit + stats.truncated + stats.incomplete + stats.idle + stats.table_full,
            "capture scored"
        );
        self.record(c, status, decided, packets, note)
    }

    /// Scores one capture to its end (a stop request waits for the capture in hand: its alerts are
    /// then complete and it is not scored twice after a restart).
    fn process(&mut self, c: &Candidate) -> Result<()> {
        if c.kind == Kind::Flows {
            return self.process_flows(c);
        }
        if self.model.normaliser.kind == metaids_core::schema::DatasetKind::HttpRequests {
            return self.process_requests(c);
        }
        let file = match File::open(&c.path) {
            Ok(f) => f,
            Err(e) => return self.record(c, "failed", 0, 0, Some(format!("cannot open: {e}"))),
        };
        let input = BufReader::with_capacity(1 << 20, metaids_ingest::decompressing(&c.path, file));
        let mut source = match CaptureSource::new(
            input,
            c.name.clone(),
            ReaderConfig::default(),
            FlowConfig::default(),
        ) {
            Ok(s) => s,
            Err(e) => return self.record(c, "failed", 0, 0, Some(format!("not a capture: {e}"))),
        };
        let origin: Arc<str> = Arc::from(c.name.as_str());
        let mut flows = Vec::new();
        let flows_before = self.pipeline.summary().flows;
        loop {
            let step = match source.next_flows(&mut flows) {
                Ok(s) => s,
                Err(e) => {
                    // The engine's own errors (not the capture's body, which ends it early).
                    self.pipeline.flush()?;
                    return self.record(c, "failed", 0, 0, Some(e.to_string()));
                }
            };
            for f in &flows {
                self.pipeline.push_record(f, &origin)?;
            }
            flows.clear();
            self.tick()?;
            if step == Step::Done {
                break;
            }
        }
        self.pipeline.flush()?;
        let report = source.report();
        self.shared.metrics.packets.inc_by(report.packets());
        let flows = self.pipeline.summary().flows - flows_before;
        let note = report
            .ended_early
            .as_ref()
            .map(|e| format!("capture ended early: {e}"));
        let status = if note.is_some() { "failed" } else { "done" };
        if note.is_none() {
            self.shared.metrics.files_done.inc();
            self.shared.set_status(|s| s.files_done += 1);
        }
        tracing::info!(file = %c.name, packets = report.packets(), flows, "capture scored");
        self.record(c, status, flows, report.packets(), note)
    }

    /// Scans the directories once and scores what is new; whether anything was.
    fn scan_once(&mut self) -> Result<bool> {
        let dirs = [
            (self.pcap_dir.clone(), Kind::Captures),
            (self.flow_dir.clone(), Kind::Flows),
        ];
        let mut did = false;
        let mut present = Vec::new();
        for (dir, kind) in dirs {
            let Some(dir) = dir else { continue };
            let (todo, here) = scan(&dir, kind, &self.progress, self.settle, SystemTime::now())?;
            present.extend(here);
            for c in &todo {
                if self.shared.stopping() {
                    break;
                }
                self.process(c)?;
                did = true;
            }
        }
        present.sort();
        let before = self.progress.files.len();
        self.progress.retain_present(&present);
        if self.progress.files.len() != before {
            self.progress.save(&self.state_path)?;
        }
        Ok(did)
    }

    /// Runs until a stop is asked (or the maximum run time passes); returns the run's counters.
    /// On the way out the flows held are decided and a last `stats` record is written.
    pub fn run(mut self) -> Result<Summary> {
        let mut result = self.run_loop();
        if result.is_err() {
            self.shared.request_stop();
        }
        if result.is_ok() {
            result = self.pipeline.flush().map_err(ServeError::from);
        }
        if result.is_ok() && self.stats_every.is_some() {
            result = self.write_stats();
        }
        let summary = self.pipeline.finish();
        result?;
        Ok(summary?)
    }

    /// With a live interface: its flows as they end (a partial batch decided at least once a
    /// second), the directories scanned every poll interval in between, until a stop is asked;
    /// then the capture's live flows are ended and decided.
    fn run_live(&mut self, mut live: LiveSource, stop: &AtomicBool) -> Result<()> {
        let origin: Arc<str> = Arc::from(live.name());
        let mut flows = Vec::new();
        let mut last_batch = Instant::now();
        let mut next_scan = Instant::now();
        let mut packets = 0;
        loop {
            if self.shared.stopping() || self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.shared.request_stop();
                stop.store(true, Ordering::SeqCst);
            }
            let step = live
                .next_flows(&mut flows)
                .map_err(|e| ServeError::Config {
                    field: "interface".into(),
                    message: format!("{}: {e}", live.name()),
                })?;
            for f in &flows {
                self.pipeline.push_record(f, &origin)?;
            }
            flows.clear();
            if step != Step::Flows || last_batch.elapsed() >= metaids_detect::LIVE_BATCH_INTERVAL {
                self.pipeline.flush()?;
                last_batch = Instant::now();
            }
            let stats = live.stats();
            self.shared
                .metrics
                .packets
                .inc_by(stats.packets.saturating_sub(packets));
            packets = stats.packets;
            self.shared
                .metrics
                .capture_dropped
                .set(i64::try_from(stats.dropped).unwrap_or(i64::MAX));
            self.tick()?;
            if step == Step::Done {
                return Ok(());
            }
            if Instant::now() >= next_scan && !self.shared.stopping() {
                self.scan_once()?;
                next_scan = Instant::now() + self.poll;
            }
        }
    }

    /// Idle until the next scan is due: asleep, but woken at once by a library change through the
    /// API (armed before the next capture), a stop or a reopen request; a change made outside
    /// the process (the CLI, another service) is seen at the latest `IDLE_CHECK` later.
    fn idle(&mut self) -> Result<()> {
        let until = Instant::now() + self.poll;
        loop {
            // Read the wake count before the flags, so a wake between the two is not missed.
            let seen = self.shared.wakes();
            self.tick()?;
            let now = Instant::now();
            if self.shared.stopping() || now >= until {
                return Ok(());
            }
            self.shared.wait(seen, (until - now).min(IDLE_CHECK));
        }
    }

    fn run_loop(&mut self) -> Result<()> {
        if let Some((live, stop)) = self.live.take() {
            return self.run_live(live, &stop);
        }
        while !self.shared.stopping() {
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::info!("maximum run time reached");
                self.shared.request_stop();
                break;
            }
            self.tick()?;
            if !self.scan_once()? {
                self.idle()?;
            }
        }
        Ok(())
    }
}
