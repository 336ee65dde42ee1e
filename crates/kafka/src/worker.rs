//! `metaids worker`: one member of a consumer group on the flows topic. Each batch of records is
//! decoded, decided by the detect [`Pipeline`] (alert ids per flow, no rate-limit suppression: a
//! partition's owner can change between batches, so suppression would depend on who scored what),
//! its alerts and verdicts produced, and its offsets committed only once the broker has
//! acknowledged every message the batch produced (at-least-once).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metaids_detect::{
    push_verdict_line, AlertIds, Batch, Counter, Detector, DetectorOptions, Pipeline,
    PipelineOptions, RateLimit, Sink, SinkReport, Stage,
};
use metaids_flow::{wire, FrameBuilder};
use metaids_library::ArmedThreats;
use metaids_model::ThreatModel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::control::{ensure_topics, FollowerThread, LibraryFollower};
use crate::metrics::WorkerMetrics;
use crate::sensor::{client_config, client_err, Outbox};
use crate::{KafkaError, Result, WorkerConfig, REASON_HEADER};

/// Producer settings of a worker's outputs (overridable with the settings' options).
const OUTPUT_DEFAULTS: &[(&str, &str)] = &[
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
    ("acks", "all"),
    ("queue.buffering.max.kbytes", "65536"),
];

/// Partitions of the output topics a worker creates when they are missing.
const OUTPUT_PARTITIONS: i32 = 6;

/// Partitions of the flows topic when a worker creates it (as `extract --kafka-partitions`'s
/// default).
pub const FLOWS_PARTITIONS: i32 = 12;

/// What a worker did, for its closing line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Flow records decided.
    pub flows: u64,
    /// Alerts produced.
    pub alerts: u64,
    /// Verdicts produced.
    pub verdicts: u64,
    /// Records sent to the dead-letter topic.
    pub dead_letters: u64,
    /// Batches committed.
    pub batches: u64,
    /// Offset commits the broker refused.
    pub commit_failures: u64,
    /// The library version in use at the end.
    pub library_version: u64,
    /// Library swaps while running.
    pub library_swaps: u64,
}

/// The recording sink of a worker: alerts (keyed by alert id) and verdicts (keyed by the flow's
/// origin) produced through the shared [`Outbox`].
struct KafkaOutput {
    outbox: Arc<Mutex<Outbox>>,
    alerts_topic: String,
    verdicts_topic: Option<String>,
    buf: Vec<u8>,
    text: String,
    key: String,
    alerts: u64,
    verdicts: u64,
    metrics: Arc<WorkerMetrics>,
}

impl KafkaOutput {
    fn outbox(&self) -> metaids_detect::Result<std::sync::MutexGuard<'_, Outbox>> {
        self.outbox
            .lock()
            .map_err(|_| sink_err("the producer lock"))
    }
}

fn sink_err(message: impl std::fmt::Display) -> metaids_detect::DetectError {
    metaids_detect::DetectError::Sink {
        sink: "kafka".into(),
        message: message.to_string(),
    }
}

impl Sink for KafkaOutput {
    fn name(&self) -> &str {
        "kafka"
    }

    fn stage(&self) -> Stage {
        Stage::Record
    }

    fn write_batch(&mut self, batch: &Batch<'_>) -> metaids_detect::Result<()> {
        let mut buf = std::mem::take(&mut self.buf);
        let mut text = std::mem::take(&mut self.text);
        let mut key = std::mem::take(&mut self.key);
        let result = (|| {
            let mut outbox = self.outbox()?;
            for a in batch.alerts {
                let id = metaids_detect::alert_id_on_line(a.line.as_bytes()).unwrap_or_default();
                outbox
                    .send(&self.alerts_topic, id.as_bytes(), a.line.as_bytes(), None)
                    .map_err(sink_err)?;
            }
            if let Some(topic) = &self.verdicts_topic {
                for (f, v) in batch.flows.iter().zip(batch.verdicts) {
                    let threat = v
                        .threat
                        .and_then(|t| batch.context.threats.get(t))
                        .map(|t| t.name.as_str());
                    buf.clear();
                    push_verdict_line(&mut buf, &mut text, f, v, threat)?;
                    while buf.last() == Some(&b'\n') {
                        buf.pop();
                    }
                    key.clear();
                    write!(key, "{}", f.origin).map_err(sink_err)?;
                    outbox
                        .send(topic, key.as_bytes(), &buf, None)
                        .map_err(sink_err)?;
                }
            }
            Ok(())
        })();
        if result.is_ok() {
            self.alerts += batch.alerts.len() as u64;
            self.metrics.alerts.inc_by(batch.alerts.len() as u64);
            if self.verdicts_topic.is_some() {
                self.verdicts += batch.flows.len() as u64;
            }
        }
        self.buf = buf;
        self.text = text;
        self.key = key;
        result
    }

    fn finish(&mut self) -> metaids_detect::Result<SinkReport> {
        self.outbox()?.flush().map_err(sink_err)?;
        Ok(SinkReport {
            sink: "kafka".into(),
            counters: vec![
                (Counter::AlertsWritten, self.alerts),
                (Counter::VerdictsWritten, self.verdicts),
            ],
            notes: Vec::new(),
        })
    }
}

/// Runs a worker until `stop` is set or, with [`WorkerConfig::idle_exit`], until no record has
/// arrived for that long. `library` is used only when the control topic holds no library yet.
pub fn run(
    config: &WorkerConfig,
    model: Arc<ThreatModel>,
    library: Option<&Path>,
    options: DetectorOptions,
    stop: &AtomicBool,
    on_ready: &mut dyn FnMut(&str),
) -> Result<WorkerSummary> {
    config.validate()?;
    model.check_layout(&FrameBuilder::new("probe").take().layout)?;
    let metrics = WorkerMetrics::new();
    if let Some(addr) = config.metrics_addr {
        let bound = crate::metrics::serve(addr, Arc::clone(&metrics))?;
        on_ready(&format!("metrics on http://{bound}/metrics"));
    }
    // The flows topic too (with the sensor's default partition count), so a worker started before
    // any sensor subscribes to a topic that exists.
    let mut outputs: Vec<(&str, i32, bool)> = vec![
        (config.flows_topic.as_str(), FLOWS_PARTITIONS, false),
        (config.alerts_topic.as_str(), OUTPUT_PARTITIONS, false),
        (config.dead_letter_topic.as_str(), 1, false),
        (config.control_topic.as_str(), 1, true),
    ];
    if let Some(v) = &config.verdicts_topic {
        outputs.push((v.as_str(), OUTPUT_PARTITIONS, false));
    }
    ensure_topics(&config.kafka, &outputs)?;

    // The newest library on the control topic wins over the file: a worker started with an older
    // library catches up before it scores anything.
    let mut follower =
        LibraryFollower::new(&config.kafka, &config.control_topic, Arc::clone(&model))?;
    let armed = match (follower.catch_up()?, library) {
        (Some(a), _) => a,
        (None, Some(path)) => ArmedThreats::load(path, &model)?,
        (None, None) => {
            return Err(KafkaError::Config {
                field: "library",
                message: format!(
                    "the control topic {} holds no library: publish one with `metaids threat \
                     publish` or pass --library",
                    config.control_topic
                ),
            })
        }
    };
    let mut summary = WorkerSummary {
        library_version: armed.library_version,
        ..WorkerSummary::default()
    };
    let follower = FollowerThread::start(config.kafka.clone(), follower, armed.library_version)?;
    metrics.library_version.set(armed.library_version as i64);
    let detector = Detector::from_armed(Arc::clone(&model), armed, options.clone())?;

    let outbox = Arc::new(Mutex::new(Outbox::new(
        &config.kafka,
        OUTPUT_DEFAULTS,
        "worker outputs",
    )?));
    let sink = KafkaOutput {
        outbox: Arc::clone(&outbox),
        alerts_topic: config.alerts_topic.clone(),
        verdicts_topic: config.verdicts_topic.clone(),
        buf: Vec::new(),
        text: String::new(),
        key: String::new(),
        alerts: 0,
        verdicts: 0,
        metrics: Arc::clone(&metrics),
    };
    let mut pipeline = Pipeline::new(
        detector,
        vec![Box::new(sink)],
        PipelineOptions {
            batch_size: config.batch_size,
            rate_limit: RateLimit {
                max_per_window: 0,
                ..RateLimit::default()
            },
            alert_unknown: config.alert_unknown,
            run_id: config.group.clone(),
            alert_ids: AlertIds::PerFlow,
            sensor: config.sensor.clone(),
            ..PipelineOptions::default()
        },
    )?;

    let consumer = group_consumer(config)?;
    on_ready(&format!(
        "worker of group {} on {} (library version {})",
        config.group, config.flows_topic, summary.library_version
    ));

    let mut sources: BTreeMap<i32, Arc<str>> = BTreeMap::new();
    let mut offsets: BTreeMap<i32, i64> = BTreeMap::new();
    let mut pending = 0usize;
    let mut batch_started: Option<Instant> = None;
    let mut last_record = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let now = Instant::now();
                last_record = now;
                batch_started.get_or_insert(now);
                let (partition, offset) = (m.partition(), m.offset());
                match m.payload().map(wire::decode) {
                    Some(Ok(mut record)) => {
                        // The origin `<topic>-<partition>:<offset>` names the message, so a
                        // redelivered record gets the alert id it got before.
                        record.id = u64::try_from(offset).unwrap_or_default();
                        let source = sources.entry(partition).or_insert_with(|| {
                            Arc::from(format!("{}-{partition}", config.flows_topic))
                        });
                        pipeline.push_record(&record, source)?;
                        summary.flows += 1;
                        metrics.flows.inc();
                    }
                    bad => {
                        let reason = match bad {
                            Some(Err(e)) => e.to_string(),
                            _ => "empty message".to_string(),
                        };
                        dead_letter(&outbox, config, &m, &reason)?;
                        summary.dead_letters += 1;
                        metrics.dead_letters.inc();
                    }
                }
                offsets.insert(partition, offset + 1);
                pending += 1;
            }
            Some(Err(e)) => {
                tracing::warn!("reading {}: {e}", config.flows_topic);
            }
            None => {
                // Quiet: a rebalance may have changed the assignment.
                if let Ok(a) = consumer.assignment() {
                    metrics.partitions.set(a.count() as i64);
                }
            }
        }
        let due = batch_started.is_some_and(|t| t.elapsed() >= config.batch_wait);
        if pending > 0 && (pending >= config.batch_size || due) {
            commit_batch(
                &mut pipeline,
                &outbox,
                &consumer,
                config,
                &mut offsets,
                &mut summary,
                &metrics,
            )?;
            pending = 0;
            batch_started = None;
            if let Ok(a) = consumer.assignment() {
                metrics.partitions.set(a.count() as i64);
            }
        }
        if pending == 0 {
            if let Some(armed) = follower.latest() {
                if armed.library_version != summary.library_version {
                    tracing::info!(
                        "library version {} → {}",
                        summary.library_version,
                        armed.library_version
                    );
                    summary.library_version = armed.library_version;
                    summary.library_swaps += 1;
                    metrics.library_version.set(armed.library_version as i64);
                    pipeline.replace_detector(Detector::from_armed(
                        Arc::clone(&model),
                        armed,
                        options.clone(),
                    )?);
                }
            }
            if config.idle_exit.is_some_and(|d| last_record.elapsed() >= d) {
                break;
            }
        }
    }
    if pending > 0 {
        commit_batch(
            &mut pipeline,
            &outbox,
            &consumer,
            config,
            &mut offsets,
            &mut summary,
            &metrics,
        )?;
    }
    let run = pipeline.finish()?;
    summary.alerts = run.counter(Counter::AlertsWritten);
    summary.verdicts = run.counter(Counter::VerdictsWritten);
    consumer.unsubscribe();
    Ok(summary)
}

/// The consumer-group member on the flows topic: offsets committed by hand after each batch.
fn group_consumer(config: &WorkerConfig) -> Result<BaseConsumer> {
    let mut c = client_config(&config.kafka);
    c.set("group.id", &config.group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // A dead member is noticed within 6 s; a rebalance waits at most 30 s for the others.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "30000")
        .set("partition.assignment.strategy", "range");
    for (k, v) in &config.kafka.options {
        c.set(k, v);
    }
    let consumer: BaseConsumer = c
        .create()
        .map_err(client_err("creating the flows consumer".into()))?;
    consumer
        .subscribe(&[config.flows_topic.as_str()])
        .map_err(client_err(format!("subscribing to {}", config.flows_topic)))?;
    Ok(consumer)
}

/// Ends a batch: decides what is gathered, waits for the broker to acknowledge every alert,
/// verdict and dead letter, then commits the batch's offsets. An unacknowledged message stops the
/// worker with nothing committed (its records are redelivered); a refused commit is counted and
/// the records redelivered to the partition's next owner, who gives the same ids.
fn commit_batch(
    pipeline: &mut Pipeline,
    outbox: &Mutex<Outbox>,
    consumer: &BaseConsumer,
    config: &WorkerConfig,
    offsets: &mut BTreeMap<i32, i64>,
    summary: &mut WorkerSummary,
    metrics: &WorkerMetrics,
) -> Result<()> {
    pipeline.flush()?;
    outbox
        .lock()
        .map_err(|_| KafkaError::Client {
            what: "flushing outputs".into(),
            message: "the producer lock is poisoned".into(),
        })?
        .flush()?;
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets.iter() {
        tpl.add_partition_offset(&config.flows_topic, p, Offset::Offset(o))
            .map_err(client_err("listing offsets".into()))?;
    }
    offsets.clear();
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => {
            summary.batches += 1;
            metrics.batches.inc();
        }
        Err(e) => {
            summary.commit_failures += 1;
            metrics.commit_failures.inc();
            tracing::warn!("offset commit refused ({e}): the batch will be redelivered");
        }
    }
    Ok(())
}

/// Sends an unusable record to the dead-letter topic: its key and bytes as they came, the reason
/// and its place in headers.
fn dead_letter(
    outbox: &Mutex<Outbox>,
    config: &WorkerConfig,
    m: &rdkafka::message::BorrowedMessage<'_>,
    reason: &str,
) -> Result<()> {
    let place = format!("{}-{}:{}", m.topic(), m.partition(), m.offset());
    tracing::warn!("dead letter {place}: {reason}");
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: REASON_HEADER,
            value: Some(reason),
        })
        .insert(Header {
            key: "metaids-origin",
            value: Some(&place),
        });
    outbox
        .lock()
        .map_err(|_| KafkaError::Client {
            what: "dead letter".into(),
            message: "the producer lock is poisoned".into(),
        })?
        .send(
            &config.dead_letter_topic,
            m.key().unwrap_or_default(),
            m.payload().unwrap_or_default(),
            Some(headers),
        )
}
