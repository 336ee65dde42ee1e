//! Reads a flows topic, its dead-letter topic and a verdicts topic back and checks the
//! at-least-once promise: every flow record has a verdict, a redelivered record the same decision,
//! and how long each flow took from the sensor's publish to its verdict (the messages' create
//! times). What `metaids kafka-audit`, the end-to-end script and the scale-out benchmark print.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::control::read_topic;
use crate::{KafkaSettings, Result};

/// What an audit found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Audit {
    /// Records in the flows topic.
    pub flows: u64,
    /// Records of it the workers sent to the dead-letter topic (they get no verdict).
    pub dead_letters: u64,
    /// Verdict messages, repeats included.
    pub verdicts: u64,
    /// Flows (not dead-lettered) with no verdict.
    pub lost: u64,
    /// Flows whose verdict came more than once (a redelivered batch).
    pub redelivered: u64,
    /// Flows that still have more than one decision after dedup by key (a redelivered record
    /// decided otherwise): must be 0.
    pub conflicting: u64,
    /// Sensor publish → first verdict, ms, sorted.
    pub latencies_ms: Vec<i64>,
    /// Create times of the first and last verdict, ms since the epoch.
    pub verdict_span_ms: Option<(i64, i64)>,
}

impl Audit {
    /// The `q` quantile of the latencies (nearest rank), ms.
    pub fn latency_quantile(&self, q: f64) -> Option<i64> {
        if self.latencies_ms.is_empty() {
            return None;
        }
        let rank = ((q * self.latencies_ms.len() as f64).ceil() as usize)
            .clamp(1, self.latencies_ms.len());
        Some(self.latencies_ms[rank - 1])
    }

    /// Flows with a verdict per second between the first and the last verdict.
    pub fn verdict_rate(&self) -> Option<f64> {
        let (a, b) = self.verdict_span_ms?;
        (b > a)
            .then(|| (self.flows - self.dead_letters - self.lost) as f64 * 1000.0 / (b - a) as f64)
    }
}

/// A verdict line without `seq` (the worker's own counter): the decision to compare.
fn decision(line: &[u8]) -> Option<serde_json::Value> {
    let mut v: serde_json::Value = serde_json::from_slice(line).ok()?;
    v.as_object_mut()?.remove("seq");
    Some(v)
}

/// Audits `flows_topic` (its dead letters in `dead_letter_topic`) against `verdicts_topic`.
pub fn audit(
    settings: &KafkaSettings,
    flows_topic: &str,
    dead_letter_topic: &str,
    verdicts_topic: &str,
    timeout: Duration,
) -> Result<Audit> {
    let flows = read_topic(settings, flows_topic, timeout)?;
    let dead: BTreeSet<String> = read_topic(settings, dead_letter_topic, timeout)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|r| {
            r.headers
                .iter()
                .find(|(k, _)| k == "metaids-origin")
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
        })
        .collect();
    let verdicts = read_topic(settings, verdicts_topic, timeout)?;
    let mut by_key: BTreeMap<&[u8], Vec<&crate::control::TopicRecord>> = BTreeMap::new();
    for v in &verdicts {
        by_key.entry(&v.key).or_default().push(v);
    }
    let mut out = Audit {
        flows: flows.len() as u64,
        verdicts: verdicts.len() as u64,
        ..Audit::default()
    };
    let mut key = String::new();
    for f in &flows {
        key.clear();
        key.push_str(&format!("{flows_topic}-{}:{}", f.partition, f.offset));
        if dead.contains(&key) {
            out.dead_letters += 1;
            continue;
        }
        let Some(vs) = by_key.get(key.as_bytes()) else {
            out.lost += 1;
            continue;
        };
        if vs.len() > 1 {
            out.redelivered += 1;
            let decisions: BTreeSet<String> = vs
                .iter()
                .map(|v| decision(&v.payload).map_or_else(String::new, |d| d.to_string()))
                .collect();
            if decisions.len() > 1 {
                out.conflicting += 1;
            }
        }
        let first = vs.iter().filter_map(|v| v.timestamp_ms).min();
        if let (Some(v), Some(s)) = (first, f.timestamp_ms) {
            out.latencies_ms.push(v - s);
            out.verdict_span_ms = Some(match out.verdict_span_ms {
                Some((a, b)) => (a.min(v), b.max(v)),
                None => (v, v),
            });
        }
    }
    out.latencies_ms.sort_unstable();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rate() {
        let a = Audit {
            flows: 10,
            latencies_ms: (1..=10).collect(),
            verdict_span_ms: Some((1000, 3000)),
            ..Audit::default()
        };
        assert_eq!(a.latency_quantile(0.5), Some(5));
        assert_eq!(a.latency_quantile(0.99), Some(10));
        assert_eq!(a.verdict_rate(), Some(5.0));
        assert_eq!(Audit::default().latency_quantile(0.5), None);
        assert_eq!(
            decision(br#"{"flow_id":1,"seq":7,"verdict":"benign"}"#),
            decision(br#"{"flow_id":1,"seq":9,"verdict":"benign"}"#)
        );
    }
}
