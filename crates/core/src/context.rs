//! Source context: what a flow's source did just before it, as three counts.
//!
//! One flow's CICFlowMeter columns cannot tell a flood GET from a client's GET of the same page; the
//! rate at which its source opens flows can. For each flow, in the order flows are produced, the
//! context counts the earlier flows of the same source (initiator address) that started within
//! [`WINDOW_US`] of its start, the distinct destination ports among them and the flow itself, and
//! the earlier flows of that source that started within [`SHORT_US`] of it. The address only groups flows:
//! it is never a feature. Memory is bounded: at most `max_sources` sources are tracked (the one
//! seen longest ago is forgotten first), each keeping only flows inside the window.

use std::collections::{HashMap, VecDeque};

/// The long window: 10 s.
pub const WINDOW_US: i64 = 10_000_000;
/// The short window: 1 s.
pub const SHORT_US: i64 = 1_000_000;
/// Width of a context row.
pub const CONTEXT_WIDTH: usize = 3;
/// Names of the context columns, in order.
pub const CONTEXT_NAMES: [&str; CONTEXT_WIDTH] = [
    "Source Flows 10s",
    "Source Distinct Dst Ports 10s",
    "Source Flows 1s",
];

/// The streaming source context.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Per source: (start µs, destination port) of its recent flows in arrival order, and the
    /// arrival counter when it was last seen.
    sources: HashMap<String, (VecDeque<(i64, u16)>, u64)>,
    max_sources: usize,
    arrivals: u64,
}

impl SourceContext {
    /// A context tracking at most `max_sources` sources (at least 1).
    pub fn new(max_sources: usize) -> Self {
        SourceContext {
            sources: HashMap::new(),
            max_sources: max_sources.max(1),
            arrivals: 0,
        }
    }

    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }

    /// The context of a flow from `source` that started at `start_us` towards `dst_port`, then the
    /// flow is remembered. Only flows produced before it count, by their start times within
    /// `[start − WINDOW, start + WINDOW]` (a long flow produced late counts the flows that started
    /// near its start).
    pub fn push(&mut self, source: &str, start_us: i64, dst_port: u16) -> [f32; CONTEXT_WIDTH] {
        self.arrivals += 1;
        if !self.sources.contains_key(source) && self.sources.len() >= self.max_sources {
            if let Some(oldest) = self
                .sources
                .iter()
                .min_by_key(|(_, (_, seen))| *seen)
                .map(|(k, _)| k.clone())
            {
                self.sources.remove(&oldest);
            }
        }
        let (flows, seen) = self
            .sources
            .entry(source.to_string())
            .or_insert_with(|| (VecDeque::new(), 0));
        *seen = self.arrivals;
        // Forget flows that started before the long window of the newest start seen.
        let newest = flows
            .iter()
            .map(|f| f.0)
            .max()
            .unwrap_or(start_us)
            .max(start_us);
        while flows.front().is_some_and(|f| f.0 < newest - WINDOW_US) {
            flows.pop_front();
        }
        let mut long = 0u32;
        let mut short = 0u32;
        let mut ports: Vec<u16> = vec![dst_port];
        for &(t, p) in flows.iter() {
            let gap = (t - start_us).abs();
            if gap <= WINDOW_US {
                long += 1;
                if !ports.contains(&p) {
                    ports.push(p);
                }
                if gap <= SHORT_US {
                    short += 1;
                }
            }
        }
        flows.push_back((start_us, dst_port));
        [long as f32, ports.len() as f32, short as f32]
    }

    /// The context of every flow of one stream, in order (`sources`, `starts_us` and `dst_ports`
    /// one per flow), as a row-major `n × CONTEXT_WIDTH` matrix.
    pub fn of_stream(
        sources: &[String],
        starts_us: &[i64],
        dst_ports: &[u16],
        max_sources: usize,
    ) -> Vec<f32> {
        let mut c = SourceContext::new(max_sources);
        sources
            .iter()
            .zip(starts_us)
            .zip(dst_ports)
            .flat_map(|((s, &t), &p)| c.push(s, t, p))
            .collect()
    }
}

/// Rows of `width` values (row-major), each followed by its context row: the rows a site forest
/// with source context reads.
pub fn with_context(x: &[f32], width: usize, context: &[f32]) -> Vec<f32> {
    x.chunks_exact(width.max(1))
        .zip(context.chunks_exact(CONTEXT_WIDTH))
        .flat_map(|(a, b)| a.iter().chain(b).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_sources_recent_flows_and_ports() {
        let mut c = SourceContext::new(10);
        assert_eq!(c.push("a", 0, 80), [0.0, 1.0, 0.0]);
        assert_eq!(c.push("a", 500_000, 80), [1.0, 1.0, 1.0]);
        assert_eq!(c.push("a", 2_000_000, 22), [2.0, 2.0, 0.0]);
        // Another source has its own counts.
        assert_eq!(c.push("b", 2_000_000, 80), [0.0, 1.0, 0.0]);
        // 11 s later the first two have left the long window.
        assert_eq!(c.push("a", 11_000_000, 443), [1.0, 2.0, 0.0]);
        // A flow produced late that started earlier counts the remembered flows near its start
        // (the first two were forgotten when the 11 s flow moved the window on).
        assert_eq!(c.push("a", 1_900_000, 80), [2.0, 3.0, 1.0]);
    }

    #[test]
    fn memory_is_bounded_by_sources_and_window() {
        let mut c = SourceContext::new(3);
        for i in 0..100i64 {
            c.push(&format!("s{}", i % 7), i * 1_000_000, 80);
        }
        assert!(c.len() <= 3);
        let mut one = SourceContext::new(3);
        for i in 0..10_000i64 {
            one.push("x", i * 100_000, (i % 50) as u16);
        }
        // 10 flows a second kept for 10 s at most.
        assert!(
            one.sources["x"].0.len() <= 101,
            "{}",
            one.sources["x"].0.len()
        );
        let m = SourceContext::of_stream(&["a".into(), "a".into()], &[0, 100], &[1, 2], 4);
        assert_eq!(m, vec![0.0, 1.0, 0.0, 1.0, 2.0, 1.0]);
        assert_eq!(
            with_context(&[7.0, 8.0], 1, &m),
            vec![7.0, 0.0, 1.0, 0.0, 8.0, 1.0, 2.0, 1.0]
        );
    }
}
