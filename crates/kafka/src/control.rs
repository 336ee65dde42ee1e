//! The control topic: the threat library's current version as a threat document (what `threat
//! export` writes), under one key so log compaction keeps only the newest. `threat publish`
//! writes it; every worker reads the topic to its end before scoring and then follows it,
//! swapping in a newer version between batches.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use metaids_library::{ArmedThreats, ThreatDocument, ThreatLibrary};
use metaids_model::ThreatModel;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::sensor::{client_config, client_err, Outbox};
use crate::{KafkaError, KafkaSettings, Result, LIBRARY_KEY};

/// Longest a metadata or watermark request waits.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a topic must stay quiet past its reported end before a reader takes it as read:
/// a broker's reported end can trail what it holds (Tansu 0.6 reports a compressed batch's base
/// offset + 1 as the end, whatever the batch's length), so the end alone does not say a reader
/// is done.
const QUIET: Duration = Duration::from_secs(2);

/// [`QUIET`] for a worker's catch-up read of the control topic, whose one-record batches have a
/// true reported end: the wait only covers a library published during the read.
const CATCH_UP_QUIET: Duration = Duration::from_millis(500);

/// Creates `topics` (`(name, partitions, compacted)`) unless they exist, and waits for the
/// broker's answer. An existing topic is left as it is.
pub fn ensure_topics(settings: &KafkaSettings, topics: &[(&str, i32, bool)]) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = client_config(settings)
        .create()
        .map_err(client_err("creating the admin client".into()))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions, compacted)| {
            let t = NewTopic::new(name, *partitions, TopicReplication::Fixed(1));
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| KafkaError::Client {
            what: "starting the admin runtime".into(),
            message: e.to_string(),
        })?;
    let options = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    let results = runtime
        .block_on(admin.create_topics(&new, &options))
        .map_err(client_err("creating topics".into()))?;
    for r in results {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(KafkaError::Client {
                    what: format!("creating topic {name}"),
                    message: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Publishes the current version of the library at `library` to `topic` (created compacted when
/// missing) and waits for the broker's acknowledgement. Returns the version published.
pub fn publish_library(settings: &KafkaSettings, library: &Path, topic: &str) -> Result<u64> {
    crate::check_name("control topic", topic)?;
    let lib = ThreatLibrary::open_read_only(library)?;
    let doc = lib.export_document()?;
    let version = doc.library_version;
    let text = serde_json::to_vec(&doc).map_err(|e| KafkaError::Client {
        what: format!("encoding library {}", library.display()),
        message: e.to_string(),
    })?;
    ensure_topics(settings, &[(topic, 1, true)])?;
    let mut outbox = Outbox::new(
        settings,
        &[("acks", "all"), ("message.max.bytes", "67108864")],
        &format!("control topic {topic}"),
    )?;
    outbox.send(topic, LIBRARY_KEY.as_bytes(), &text, None)?;
    outbox.flush()?;
    Ok(version)
}

/// Reads the control topic: the newest library document, checked against the model.
pub struct LibraryFollower {
    consumer: BaseConsumer,
    topic: String,
    model: std::sync::Arc<ThreatModel>,
}

impl LibraryFollower {
    /// A reader of `topic`'s single partition from its beginning (no consumer group: every worker
    /// reads the whole topic).
    pub fn new(
        settings: &KafkaSettings,
        topic: &str,
        model: std::sync::Arc<ThreatModel>,
    ) -> Result<Self> {
        let mut config = client_config(settings);
        config
            .set("group.id", "metaids-control-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            // A topic that comes back shorter (a broker that lost it) is read from its start.
            .set("auto.offset.reset", "earliest")
            .set("fetch.message.max.bytes", "67108864")
            .set("receive.message.max.bytes", "134217728");
        for (k, v) in &settings.options {
            config.set(k, v);
        }
        let consumer: BaseConsumer = config
            .create()
            .map_err(client_err("creating the control reader".into()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(client_err(format!("assigning {topic}")))?;
        consumer
            .assign(&tpl)
            .map_err(client_err(format!("assigning {topic}")))?;
        Ok(LibraryFollower {
            consumer,
            topic: topic.to_string(),
            model,
        })
    }

    /// Reads to the end of the topic as it is now (its high watermark, then [`CATCH_UP_QUIET`]) and returns the newest
    /// library there (`None`: the topic holds none). A document that cannot be used is an error
    /// naming the topic and offset.
    pub fn catch_up(&mut self) -> Result<Option<ArmedThreats>> {
        let (_, high) = self
            .consumer
            .fetch_watermarks(&self.topic, 0, REQUEST_TIMEOUT)
            .map_err(client_err(format!("reading {}'s end", self.topic)))?;
        let mut newest = None;
        let started = Instant::now();
        let mut next = 0;
        let mut last = Instant::now();
        while next < high || last.elapsed() < CATCH_UP_QUIET {
            if started.elapsed() > REQUEST_TIMEOUT * 3 {
                return Err(KafkaError::Client {
                    what: format!("reading {}", self.topic),
                    message: format!("stopped at offset {next} of {high} after 30 s"),
                });
            }
            if let Some(m) = self.consumer.poll(Duration::from_millis(50)) {
                let m = match m {
                    Ok(m) => m,
                    Err(e) => {
                        // The client reconnects by itself; the time bound above still holds.
                        tracing::warn!("reading {}: {e}", self.topic);
                        continue;
                    }
                };
                next = m.offset() + 1;
                last = Instant::now();
                if let Some(armed) = self.parse(&m)? {
                    newest = Some(armed);
                }
            }
        }
        Ok(newest)
    }

    /// The newest library that arrives within `wait` (or is already waiting). A connection
    /// problem is logged and retried by the client; a document that cannot be used is an error,
    /// and the caller keeps the library it has.
    pub fn wait(&mut self, wait: Duration) -> Result<Option<ArmedThreats>> {
        let mut newest = None;
        let mut timeout = wait;
        while let Some(m) = self.consumer.poll(timeout) {
            timeout = Duration::ZERO;
            match m {
                Ok(m) => {
                    if let Some(armed) = self.parse(&m)? {
                        newest = Some(armed);
                    }
                }
                Err(e) => {
                    tracing::warn!("reading {}: {e}", self.topic);
                    break;
                }
            }
        }
        Ok(newest)
    }

    fn parse(&self, m: &rdkafka::message::BorrowedMessage<'_>) -> Result<Option<ArmedThreats>> {
        if m.key() != Some(LIBRARY_KEY.as_bytes()) {
            return Ok(None);
        }
        let source = PathBuf::from(format!("kafka:{}@{}", self.topic, m.offset()));
        let Some(payload) = m.payload() else {
            return Ok(None); // a tombstone
        };
        let text = std::str::from_utf8(payload).map_err(|e| KafkaError::Client {
            what: format!("reading {}", source.display()),
            message: format!("the library document is not UTF-8: {e}"),
        })?;
        let doc = ThreatDocument::parse(text, &source)?;
        Ok(Some(ArmedThreats::from_document(
            doc,
            &source,
            &self.model,
        )?))
    }
}

/// How often the follower thread reads the control topic afresh with a new reader, besides
/// following it: a safety net for a reader that stopped receiving (a broker that reports stale
/// ends, a lost connection).
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// A [`LibraryFollower`] on its own thread: it follows the control topic (and reads it afresh
/// every [`REFRESH_EVERY`]) and hands each library version that differs from the last one it
/// handed over to the worker, which takes it between two batches ([`FollowerThread::latest`]).
/// A document that cannot be used is logged and skipped: the worker keeps the library it has.
pub struct FollowerThread {
    updates: std::sync::mpsc::Receiver<ArmedThreats>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl FollowerThread {
    /// Starts following `follower`'s topic; `current` is the version the worker starts with.
    pub fn start(
        settings: KafkaSettings,
        mut follower: LibraryFollower,
        current: u64,
    ) -> Result<Self> {
        use std::sync::atomic::Ordering;

        let (tx, updates) = std::sync::mpsc::channel();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let handle = std::thread::Builder::new()
            .name("library".into())
            .spawn(move || {
                let mut last = current;
                let mut refreshed = Instant::now();
                while !flag.load(Ordering::SeqCst) {
                    let mut found = follower.wait(Duration::from_millis(200));
                    if refreshed.elapsed() >= REFRESH_EVERY {
                        refreshed = Instant::now();
                        let fresh = LibraryFollower::new(
                            &settings,
                            &follower.topic,
                            std::sync::Arc::clone(&follower.model),
                        )
                        .and_then(|mut f| f.catch_up());
                        match fresh {
                            Ok(Some(a)) => found = Ok(Some(a)),
                            Ok(None) => {}
                            Err(e) => found = Err(e),
                        }
                    }
                    match found {
                        Ok(Some(a)) if a.library_version != last => {
                            last = a.library_version;
                            if tx.send(a).is_err() {
                                return;
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::error!("library update skipped: {e}"),
                    }
                }
            })
            .map_err(|e| KafkaError::Client {
                what: "starting the library follower".into(),
                message: e.to_string(),
            })?;
        Ok(FollowerThread {
            updates,
            stop,
            handle: Some(handle),
        })
    }

    /// The newest library handed over since the last call, if any (returns at once).
    pub fn latest(&self) -> Option<ArmedThreats> {
        self.updates.try_iter().last()
    }
}

impl Drop for FollowerThread {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// One message read back by [`read_topic`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRecord {
    /// Partition.
    pub partition: i32,
    /// Offset within it.
    pub offset: i64,
    /// Key (empty when none).
    pub key: Vec<u8>,
    /// Value (empty when none).
    pub payload: Vec<u8>,
    /// Headers, `(name, value)`.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The message's timestamp (ms since the epoch: the producer's create time unless the topic
    /// says log-append time).
    pub timestamp_ms: Option<i64>,
}

/// Every message of `topic` up to its partitions' high watermarks as they are now, read without a
/// consumer group (nothing committed): what a test or an operator's check reads back. Gives up
/// after `timeout` with an error naming how far it got.
pub fn read_topic(
    settings: &KafkaSettings,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<TopicRecord>> {
    use rdkafka::message::Headers;

    let mut config = client_config(settings);
    config
        .set("group.id", "metaids-reader")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    let consumer: BaseConsumer = config
        .create()
        .map_err(client_err("creating a reader".into()))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
        .map_err(client_err(format!("reading {topic}'s metadata")))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = std::collections::BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, p, REQUEST_TIMEOUT)
            .map_err(client_err(format!("reading {topic}[{p}]'s end")))?;
        if high > low {
            ends.insert(p, high);
            tpl.add_partition_offset(topic, p, Offset::Offset(low))
                .map_err(client_err(format!("assigning {topic}[{p}]")))?;
        }
    }
    consumer
        .assign(&tpl)
        .map_err(client_err(format!("assigning {topic}")))?;
    let mut out = Vec::new();
    let started = Instant::now();
    let mut last = Instant::now();
    // Done when every partition has reached the end it reported and nothing more has come for
    // QUIET (see there).
    while !ends.is_empty() || last.elapsed() < QUIET {
        if started.elapsed() > timeout {
            return Err(KafkaError::Client {
                what: format!("reading {topic}"),
                message: format!(
                    "{} message(s) read in {} s; partitions {:?} not at their end",
                    out.len(),
                    timeout.as_secs(),
                    ends.keys().collect::<Vec<_>>()
                ),
            });
        }
        let Some(m) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let m = m.map_err(client_err(format!("reading {topic}")))?;
        last = Instant::now();
        let headers = m.headers().map_or_else(Vec::new, |h| {
            h.iter()
                .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                .collect()
        });
        out.push(TopicRecord {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().unwrap_or_default().to_vec(),
            payload: m.payload().unwrap_or_default().to_vec(),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
        });
        if ends
            .get(&m.partition())
            .is_some_and(|&end| m.offset() + 1 >= end)
        {
            ends.remove(&m.partition());
        }
    }
    Ok(out)
}
