//! Scale-out over Kafka: sensors publish flow records (the [`metaids_flow::wire`] format) to a
//! flows topic; the members of one consumer group (`metaids worker`) score them with the one detect
//! [`metaids_detect::Pipeline`] and produce EVE alerts, verdicts and dead letters; the threat
//! library reaches every worker through a compacted control topic.
//!
//! Delivery is **at-least-once**: a worker commits a batch's offsets only after every alert,
//! verdict and dead letter of the batch has been acknowledged by the broker. A batch redelivered
//! after a crash or a rebalance is decided again with the same alert ids (`<topic>-<partition>-
//! <offset>`, [`metaids_detect::AlertIds::PerFlow`]) and verdict keys, so a consumer drops repeats
//! by id. Kafka transactions (exactly-once) are not used.
//!
//! Everything that talks to a broker needs the `client` feature (rdkafka, librdkafka built from
//! the crate's bundled source). Without it the crate holds only the settings and names.

#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod audit;
#[cfg(feature = "client")]
pub mod control;
#[cfg(feature = "client")]
pub mod metrics;
#[cfg(feature = "client")]
pub mod sensor;
#[cfg(feature = "client")]
pub mod worker;

use std::time::Duration;

use thiserror::Error;

/// The key of the library document on the control topic (compaction keeps its last value).
pub const LIBRARY_KEY: &str = "library";
/// Default control topic.
pub const DEFAULT_CONTROL_TOPIC: &str = "metaids.library";
/// Header naming why a message went to the dead-letter topic.
pub const REASON_HEADER: &str = "metaids-reason";

/// Everything that can stop a sensor, a worker or a library publication.
#[derive(Debug, Error)]
pub enum KafkaError {
    /// A setting is out of range or missing.
    #[error("{field}: {message}")]
    Config {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The Kafka client failed.
    #[error("kafka: {what}: {message}")]
    Client {
        /// What was being done.
        what: String,
        /// The client's error.
        message: String,
    },
    /// The broker did not acknowledge some messages: nothing was committed for them.
    #[error("kafka: {count} message(s) to {topic} were not acknowledged (first error: {first})")]
    Undelivered {
        /// The topic (or topics) written.
        topic: String,
        /// Messages not acknowledged.
        count: u64,
        /// The first delivery error.
        first: String,
    },
    /// Scoring failed.
    #[error(transparent)]
    Detect(Box<metaids_detect::DetectError>),
    /// The library or a library document is unusable.
    #[error(transparent)]
    Library(Box<metaids_library::LibraryError>),
    /// The model cannot score flow records.
    #[error(transparent)]
    Model(Box<metaids_model::ModelError>),
}

impl From<metaids_detect::DetectError> for KafkaError {
    fn from(e: metaids_detect::DetectError) -> Self {
        KafkaError::Detect(Box::new(e))
    }
}

impl From<metaids_library::LibraryError> for KafkaError {
    fn from(e: metaids_library::LibraryError) -> Self {
        KafkaError::Library(Box::new(e))
    }
}

impl From<metaids_model::ModelError> for KafkaError {
    fn from(e: metaids_model::ModelError) -> Self {
        KafkaError::Model(Box::new(e))
    }
}

/// Result with [`KafkaError`].
pub type Result<T> = std::result::Result<T, KafkaError>;

/// Connection settings shared by producers and consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSettings {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// Extra librdkafka properties (`key=value`), applied last: they override every default here.
    pub options: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Settings from the brokers and `key=value` options, checked.
    pub fn new(brokers: &str, options: &[String]) -> Result<Self> {
        if brokers.trim().is_empty() {
            return Err(KafkaError::Config {
                field: "kafka brokers",
                message: "expected host:port[,host:port…], found nothing".into(),
            });
        }
        let options = options
            .iter()
            .map(|o| match o.split_once('=') {
                Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
                _ => Err(KafkaError::Config {
                    field: "kafka option",
                    message: format!("{o:?}: expected KEY=VALUE (a librdkafka property)"),
                }),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(KafkaSettings {
            brokers: brokers.trim().to_string(),
            options,
        })
    }
}

/// Producer settings of the sensor: batching and compression (librdkafka properties; any of them
/// can be overridden with `--kafka-option KEY=VALUE`).
///
/// | property | default | why |
/// |---|---|---|
/// | `compression.type` | `lz4` | flow records are mostly zero bytes: lz4 cuts them several-fold at little CPU |
/// | `linger.ms` | `20` | a batch waits at most 20 ms for more records (latency stays far under a second) |
/// | `batch.num.messages` | `10000` | up to 10,000 records a request |
/// | `queue.buffering.max.kbytes` | `65536` | the send queue holds at most 64 MiB, then `publish` waits |
/// | `acks` | `all` | a record counts as sent once every in-sync replica has it |
pub const SENSOR_DEFAULTS: &[(&str, &str)] = &[
    ("compression.type", "lz4"),
    ("linger.ms", "20"),
    ("batch.num.messages", "10000"),
    ("queue.buffering.max.kbytes", "65536"),
    ("acks", "all"),
];

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Connection.
    pub kafka: KafkaSettings,
    /// Consumer group.
    pub group: String,
    /// Topic the sensors publish flow records to.
    pub flows_topic: String,
    /// Topic EVE alerts go to (keyed by alert id).
    pub alerts_topic: String,
    /// Topic every flow's verdict goes to (keyed by the flow's `<topic>-<partition>:<offset>`).
    pub verdicts_topic: Option<String>,
    /// Topic undecodable records go to, with the reason in a header.
    pub dead_letter_topic: String,
    /// The compacted topic the library document is published on.
    pub control_topic: String,
    /// Flows decided per batch (and per offset commit).
    pub batch_size: usize,
    /// Longest a partial batch waits for more records.
    pub batch_wait: Duration,
    /// Stop after this long without a record (`None`: run until stopped).
    pub idle_exit: Option<Duration>,
    /// EVE `host` of the alerts.
    pub sensor: String,
    /// Whether unknown anomalies raise alerts.
    pub alert_unknown: bool,
    /// Where to serve Prometheus metrics (`None`: not served).
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl WorkerConfig {
    /// Checks ranges and names.
    pub fn validate(&self) -> Result<()> {
        if !(1..=1 << 20).contains(&self.batch_size) {
            return Err(KafkaError::Config {
                field: "batch size",
                message: format!("expected 1 to 1048576, found {}", self.batch_size),
            });
        }
        for (field, name) in [
            ("group", self.group.as_str()),
            ("flows topic", self.flows_topic.as_str()),
            ("alerts topic", self.alerts_topic.as_str()),
            ("dead-letter topic", self.dead_letter_topic.as_str()),
            ("control topic", self.control_topic.as_str()),
        ]
        .into_iter()
        .chain(
            self.verdicts_topic
                .as_deref()
                .map(|v| ("verdicts topic", v)),
        ) {
            check_name(field, name)?;
        }
        Ok(())
    }
}

/// A topic or group name as Kafka takes it: 1 to 249 characters of `[A-Za-z0-9._-]`.
pub fn check_name(field: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 249
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KafkaError::Config {
            field,
            message: format!("{name:?}: expected 1 to 249 characters of A-Z a-z 0-9 . _ -"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_and_names_are_checked() {
        assert!(KafkaSettings::new(" ", &[]).is_err());
        let s = KafkaSettings::new("127.0.0.1:9092", &["linger.ms=5".into()]).expect("settings");
        assert_eq!(s.options, vec![("linger.ms".to_string(), "5".to_string())]);
        let e = KafkaSettings::new("b:1", &["linger.ms".into()]).expect_err("refused");
        assert!(e.to_string().contains("KEY=VALUE"), "{e}");
        assert!(check_name("flows topic", "metaids.flows-1_a").is_ok());
        assert!(check_name("flows topic", "bad topic").is_err());
        assert!(check_name("flows topic", "").is_err());
    }
}
