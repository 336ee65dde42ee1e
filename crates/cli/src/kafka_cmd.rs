//! The Kafka commands: `extract --kafka-brokers` (publishing flows), `worker` and `threat
//! publish`, through `metaids-kafka`. A build without the `kafka` feature has the flags and says
//! how to get the client.

use anyhow::Result;

use crate::args::KafkaPublishArgs;
#[cfg(feature = "kafka")]
use crate::args::{KafkaAuditArgs, ThreatPublishArgs, WorkerArgs};

#[cfg(not(feature = "kafka"))]
const NO_CLIENT: &str = "this build has no Kafka client: rebuild with `cargo build --release --features kafka` \
     (librdkafka is compiled from the rdkafka crate's bundled source; it needs a C compiler and make)";

/// The sensor's flow publisher, when `extract` is asked to publish.
#[cfg(feature = "kafka")]
pub struct Publisher {
    inner: metaids_kafka::sensor::FlowPublisher,
    topic: String,
    /// `(flows a second, when publishing began)` with --kafka-rate.
    pace: Option<(f64, std::time::Instant)>,
}

#[cfg(feature = "kafka")]
impl Publisher {
    /// A publisher for `--kafka-brokers`/`--flows-topic` (`None` when not asked), with the flows
    /// topic created when missing.
    pub fn open(a: &KafkaPublishArgs) -> Result<Option<Self>> {
        let (Some(brokers), Some(topic)) = (&a.kafka_brokers, &a.flows_topic) else {
            return Ok(None);
        };
        if !(1..=10_000).contains(&a.kafka_partitions) {
            anyhow::bail!(
                "--kafka-partitions must be 1 to 10000, got {}",
                a.kafka_partitions
            );
        }
        if let Some(r) = a.kafka_rate {
            if !(r.is_finite() && r > 0.0) {
                anyhow::bail!("--kafka-rate must be a positive number of flows a second, got {r}");
            }
        }
        let key: metaids_kafka::sensor::FlowKey = a
            .kafka_key
            .parse()
            .map_err(|e| anyhow::anyhow!("--kafka-key {e}"))?;
        let settings = metaids_kafka::KafkaSettings::new(brokers, &a.kafka_options)?;
        metaids_kafka::check_name("flows topic", topic)?;
        metaids_kafka::control::ensure_topics(&settings, &[(topic, a.kafka_partitions, false)])?;
        Ok(Some(Publisher {
            inner: metaids_kafka::sensor::FlowPublisher::new(&settings, topic, key)?,
            topic: topic.clone(),
            pace: a.kafka_rate.map(|r| (r, std::time::Instant::now())),
        }))
    }

    /// Queues one flow (with --kafka-rate, not before its time: flow n at n / rate seconds).
    pub fn publish(&mut self, flow: &metaids_flow::FlowRecord) -> Result<()> {
        if let Some((rate, started)) = self.pace {
            let due = std::time::Duration::from_secs_f64(self.inner.published() as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok(self.inner.publish(flow)?)
    }

    /// Waits for every acknowledgement: the count published and the topic.
    pub fn finish(self) -> Result<(u64, String)> {
        Ok((self.inner.finish()?, self.topic))
    }
}

/// Without the client: asking to publish is an error.
#[cfg(not(feature = "kafka"))]
pub struct Publisher;

#[cfg(not(feature = "kafka"))]
impl Publisher {
    /// `None` when not asked to publish; an error naming the missing feature otherwise.
    pub fn open(a: &KafkaPublishArgs) -> Result<Option<Self>> {
        if a.kafka_brokers.is_some() {
            anyhow::bail!("{NO_CLIENT}");
        }
        Ok(None)
    }

    /// Never called: [`Publisher::open`] returns no publisher.
    pub fn publish(&mut self, _: &metaids_flow::FlowRecord) -> Result<()> {
        Ok(())
    }

    /// Never called.
    pub fn finish(self) -> Result<(u64, String)> {
        Ok((0, String::new()))
    }
}

/// `metaids worker`.
#[cfg(feature = "kafka")]
pub fn worker(a: WorkerArgs) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use anyhow::Context;

    let settings = metaids_kafka::KafkaSettings::new(&a.kafka_brokers, &a.kafka_options)?;
    let idle_exit = match a.idle_exit {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--idle-exit must be a positive number of seconds, got {s}"),
        None => None,
    };
    let config = metaids_kafka::WorkerConfig {
        kafka: settings,
        group: a.group.clone(),
        dead_letter_topic: a
            .dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", a.flows_topic)),
        flows_topic: a.flows_topic,
        alerts_topic: a.alerts_topic,
        verdicts_topic: a.verdicts_topic,
        control_topic: a.control_topic,
        batch_size: a.batch_size,
        batch_wait: Duration::from_millis(a.batch_wait_ms),
        idle_exit,
        sensor: a.sensor.unwrap_or_else(metaids_serve::config::host_name),
        alert_unknown: !a.no_unknown_alerts,
        metrics_addr: a.metrics,
    };
    config.validate()?;
    let model = Arc::new(
        metaids_model::load(&a.model)
            .with_context(|| format!("cannot load model {}", a.model.display()))?,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("cannot install the Ctrl-C handler")?;
    let summary = metaids_kafka::worker::run(
        &config,
        model,
        a.library.as_deref(),
        metaids_detect::DetectorOptions::default(),
        &stop,
        &mut |line| eprintln!("{line}"),
    )?;
    println!(
        "worker {}: flows {} alerts {} verdicts {} dead_letters {} batches {} commit_failures {} \
         library_version {} library_swaps {}",
        config.group,
        summary.flows,
        summary.alerts,
        summary.verdicts,
        summary.dead_letters,
        summary.batches,
        summary.commit_failures,
        summary.library_version,
        summary.library_swaps
    );
    Ok(())
}

/// `metaids worker` without the client.
#[cfg(not(feature = "kafka"))]
pub fn worker(_: crate::args::WorkerArgs) -> Result<()> {
    anyhow::bail!("{NO_CLIENT}")
}

/// `metaids kafka-audit`.
#[cfg(feature = "kafka")]
pub fn audit(a: KafkaAuditArgs) -> Result<()> {
    let settings = metaids_kafka::KafkaSettings::new(&a.kafka_brokers, &[])?;
    let dlq = a
        .dead_letter_topic
        .clone()
        .unwrap_or_else(|| format!("{}.dlq", a.flows_topic));
    let r = metaids_kafka::audit::audit(
        &settings,
        &a.flows_topic,
        &dlq,
        &a.verdicts_topic,
        std::time::Duration::from_secs(a.timeout),
    )?;
    println!(
        "flows={} verdicts={} lost={} duplicates_after_dedup={}",
        r.flows, r.verdicts, r.lost, r.conflicting
    );
    let ms = |q| {
        r.latency_quantile(q)
            .map_or_else(|| "-".into(), |v: i64| v.to_string())
    };
    println!(
        "dead_letters={} redelivered={} latency_ms_p50={} latency_ms_p99={} latency_ms_max={} \
         verdict_rate_flows_per_s={}",
        r.dead_letters,
        r.redelivered,
        ms(0.5),
        ms(0.99),
        ms(1.0),
        r.verdict_rate()
            .map_or_else(|| "-".into(), |v| format!("{v:.0}"))
    );
    if r.lost > 0 || r.conflicting > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `metaids kafka-audit` without the client.
#[cfg(not(feature = "kafka"))]
pub fn audit(_: crate::args::KafkaAuditArgs) -> Result<()> {
    anyhow::bail!("{NO_CLIENT}")
}

/// `metaids threat publish`.
#[cfg(feature = "kafka")]
pub fn publish(a: ThreatPublishArgs) -> Result<()> {
    let settings = metaids_kafka::KafkaSettings::new(&a.kafka_brokers, &a.kafka_options)?;
    let version =
        metaids_kafka::control::publish_library(&settings, &a.lib.library, &a.control_topic)?;
    println!(
        "published library version {version} of {} to {}",
        a.lib.library.display(),
        a.control_topic
    );
    Ok(())
}

/// `metaids threat publish` without the client.
#[cfg(not(feature = "kafka"))]
pub fn publish(_: crate::args::ThreatPublishArgs) -> Result<()> {
    anyhow::bail!("{NO_CLIENT}")
}
