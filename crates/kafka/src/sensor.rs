//! The sensor side: flow records published to the flows topic, and the one producer every part of
//! this crate sends through ([`Outbox`]: delivery reports counted, a full queue waited on, a flush
//! that says how many messages the broker did not acknowledge).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metaids_flow::{wire, FlowRecord};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError as RdError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;

use crate::{KafkaError, KafkaSettings, Result, SENSOR_DEFAULTS};

/// How long [`Outbox::flush`] waits for the broker's acknowledgements.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(60);

/// Counts delivery reports: acknowledged and failed messages, and the first failure's text.
#[derive(Default)]
pub struct Deliveries {
    acked: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// A producer whose sends wait while the local queue is full and whose [`Outbox::flush`] reports
/// every message the broker did not acknowledge.
pub struct Outbox {
    producer: BaseProducer<Deliveries>,
    sent: u64,
    what: String,
}

impl Outbox {
    /// A producer on `settings` with the given defaults (overridden by the settings' options).
    pub fn new(settings: &KafkaSettings, defaults: &[(&str, &str)], what: &str) -> Result<Self> {
        let mut config = client_config(settings);
        for (k, v) in defaults {
            config.set(*k, *v);
        }
        for (k, v) in &settings.options {
            config.set(k, v);
        }
        let producer = config
            .create_with_context(Deliveries::default())
            .map_err(client_err(format!("creating the {what} producer")))?;
        Ok(Outbox {
            producer,
            sent: 0,
            what: what.to_string(),
        })
    }

    /// Queues one message, waiting (serving delivery reports) while the local queue is full.
    pub fn send(
        &mut self,
        topic: &str,
        key: &[u8],
        payload: &[u8],
        headers: Option<OwnedHeaders>,
    ) -> Result<()> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        if let Some(h) = headers {
            record = record.headers(h);
        }
        let started = Instant::now();
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((RdError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    if started.elapsed() > FLUSH_TIMEOUT {
                        return Err(KafkaError::Client {
                            what: format!("sending to {topic}"),
                            message: format!(
                                "the local queue stayed full for {} s: is the broker reachable?",
                                FLUSH_TIMEOUT.as_secs()
                            ),
                        });
                    }
                    record = back;
                    self.producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => {
                    return Err(KafkaError::Client {
                        what: format!("sending to {topic}"),
                        message: e.to_string(),
                    })
                }
            }
        }
        self.sent += 1;
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits until every queued message is acknowledged or failed; an error names how many were
    /// not acknowledged. Counters restart after each flush.
    pub fn flush(&mut self) -> Result<u64> {
        // Not `Producer::flush`: it waits in steps of 100 ms, a floor on every worker batch. Polling
        // in 1 ms steps returns as soon as the last acknowledgement is in.
        let started = Instant::now();
        while self.producer.in_flight_count() > 0 {
            if started.elapsed() > FLUSH_TIMEOUT {
                return Err(KafkaError::Client {
                    what: format!("flushing the {} producer", self.what),
                    message: format!(
                        "{} message(s) still unacknowledged after {} s",
                        self.producer.in_flight_count(),
                        FLUSH_TIMEOUT.as_secs()
                    ),
                });
            }
            self.producer.poll(Duration::from_millis(1));
        }
        let ctx = self.producer.context();
        let failed = ctx.failed.swap(0, Ordering::Relaxed);
        let acked = ctx.acked.swap(0, Ordering::Relaxed);
        let first = ctx
            .first_error
            .lock()
            .ok()
            .and_then(|mut f| f.take())
            .unwrap_or_default();
        let sent = std::mem::take(&mut self.sent);
        if failed > 0 || acked < sent {
            return Err(KafkaError::Undelivered {
                topic: self.what.clone(),
                count: failed.max(sent - acked.min(sent)),
                first,
            });
        }
        Ok(acked)
    }
}

/// The client settings every producer and consumer starts from.
pub fn client_config(settings: &KafkaSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers)
        .set("client.id", "metaids");
    c
}

/// Maps a client error to [`KafkaError::Client`] with what was being done.
pub fn client_err(what: String) -> impl FnOnce(RdError) -> KafkaError {
    move |e| KafkaError::Client {
        what,
        message: e.to_string(),
    }
}

/// What a flow record's message key (hence its partition) is made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FlowKey {
    /// Its source address ([`wire::source_key`]): a source's flows share a partition, so one worker
    /// counts each source's context over all its flows, as `detect` does.
    #[default]
    Source,
    /// Its two endpoints and protocol ([`wire::partition_key`]): flows spread more evenly (one busy
    /// source no longer weighs on one partition), but a worker then counts a source's context
    /// over the flows of its own partitions only.
    Conversation,
}

impl std::str::FromStr for FlowKey {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "source" => Ok(FlowKey::Source),
            "conversation" => Ok(FlowKey::Conversation),
            other => Err(format!("{other:?}: expected source or conversation")),
        }
    }
}

/// Publishes flow records to the flows topic, keyed as its [`FlowKey`] says.
pub struct FlowPublisher {
    outbox: Outbox,
    topic: String,
    key: FlowKey,
    buf: Vec<u8>,
    published: u64,
}

impl FlowPublisher {
    /// A publisher to `topic` with [`SENSOR_DEFAULTS`], keying records by `key`.
    pub fn new(settings: &KafkaSettings, topic: &str, key: FlowKey) -> Result<Self> {
        crate::check_name("flows topic", topic)?;
        Ok(FlowPublisher {
            outbox: Outbox::new(settings, SENSOR_DEFAULTS, &format!("flows topic {topic}"))?,
            topic: topic.to_string(),
            key,
            buf: Vec::with_capacity(wire::V6_LEN),
            published: 0,
        })
    }

    /// Queues one flow record.
    pub fn publish(&mut self, record: &FlowRecord) -> Result<()> {
        wire::encode_into(record, &mut self.buf);
        let key = match self.key {
            FlowKey::Source => wire::source_key(record),
            FlowKey::Conversation => wire::partition_key(record),
        };
        self.outbox.send(&self.topic, &key, &self.buf, None)?;
        self.published += 1;
        Ok(())
    }

    /// Records queued so far.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Waits for every record's acknowledgement; returns how many were published.
    pub fn finish(mut self) -> Result<u64> {
        self.outbox.flush()?;
        Ok(self.published)
    }
}
