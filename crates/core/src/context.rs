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
use std::hash::{DefaultHasher, Hash, Hasher};

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

/// Flows remembered per source at most (the counts saturate there: a source opening more flows
/// than this within the window is already far beyond any benign rate).
pub const MAX_PER_SOURCE: usize = 512;

/// One source's recent flows.
#[derive(Debug, Clone, Default)]
struct Recent {
    /// (start µs, destination port) in arrival order.
    flows: VecDeque<(i64, u16)>,
    /// How many of `flows` go to each destination port.
    ports: HashMap<u16, u32>,
    /// The arrival counter when the source was last seen.
    seen: u64,
}

impl Recent {
    fn pop_front(&mut self) {
        if let Some((_, p)) = self.flows.pop_front() {
            if let Some(n) = self.ports.get_mut(&p) {
                *n -= 1;
                if *n == 0 {
                    self.ports.remove(&p);
                }
            }
        }
    }
}

/// The streaming source context.
#[derive(Debug, Clone)]
pub struct SourceContext {
    /// Per source, by the 64-bit hash of its key (so a flow costs no allocation).
    sources: HashMap<u64, Recent>,
    /// Sources in the order they were last seen, with the arrival counter of that sighting; an
    /// entry whose counter is not its source's latest is stale (skipped when evicting, dropped when
    /// the queue is compacted), so eviction is amortised O(1) even when every flow has a new source.
    order: VecDeque<(u64, u64)>,
    max_sources: usize,
    arrivals: u64,
}

impl SourceContext {
    /// A context tracking at most `max_sources` sources (at least 1).
    pub fn new(max_sources: usize) -> Self {
        SourceContext {
            sources: HashMap::new(),
            order: VecDeque::new(),
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

    /// A source's key: a fixed 64-bit hash (SipHash with zero keys, the same in every run) of
    /// whatever names it — an address, or its text. One context must name sources one way.
    pub fn key<K: Hash + ?Sized>(source: &K) -> u64 {
        let mut h = DefaultHasher::new();
        source.hash(&mut h);
        h.finish()
    }

    /// The context of a flow from the source keyed `source` ([`SourceContext::key`]) that started at
    /// `start_us` towards `dst_port`, then the flow is remembered. Counted over the flows of that source produced before it and still
    /// remembered: flows are forgotten once they started more than the long window before a later
    /// flow's start (in arrival order), and beyond [`MAX_PER_SOURCE`]. Amortised O(1) per flow, plus
    /// the flows of the short window (at most [`MAX_PER_SOURCE`]).
    pub fn push_key(&mut self, source: u64, start_us: i64, dst_port: u16) -> [f32; CONTEXT_WIDTH] {
        self.arrivals += 1;
        if !self.sources.contains_key(&source) && self.sources.len() >= self.max_sources {
            // Forget the source seen longest ago: the first entry of the queue that is current.
            while let Some((name, at)) = self.order.pop_front() {
                if self.sources.get(&name).is_some_and(|r| r.seen == at) {
                    self.sources.remove(&name);
                    break;
                }
            }
        }
        self.order.push_back((source, self.arrivals));
        if self.order.len() > 2 * self.max_sources + 16 {
            let sources = &self.sources;
            let arrivals = self.arrivals;
            self.order.retain(|(name, at)| {
                *at == arrivals || sources.get(name).is_some_and(|r| r.seen == *at)
            });
        }
        let recent = self.sources.entry(source).or_default();
        recent.seen = self.arrivals;
        while recent
            .flows
            .front()
            .is_some_and(|f| f.0 < start_us - WINDOW_US)
        {
            recent.pop_front();
        }
        let long = recent.flows.len();
        let ports = recent.ports.len() + usize::from(!recent.ports.contains_key(&dst_port));
        let short = recent
            .flows
            .iter()
            .rev()
            .take_while(|f| f.0 >= start_us - SHORT_US)
            .count();
        if recent.flows.len() >= MAX_PER_SOURCE {
            recent.pop_front();
        }
        recent.flows.push_back((start_us, dst_port));
        *recent.ports.entry(dst_port).or_insert(0) += 1;
        [long as f32, ports as f32, short as f32]
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

    impl SourceContext {
        /// [`SourceContext::push_key`] for a source named by text.
        fn push(&mut self, source: &str, start_us: i64, dst_port: u16) -> [f32; CONTEXT_WIDTH] {
            self.push_key(Self::key(source), start_us, dst_port)
        }
    }

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
        // A flow produced late that started earlier counts what is still remembered.
        assert_eq!(c.push("a", 10_500_000, 80), [2.0, 3.0, 1.0]);
    }

    #[test]
    fn memory_is_bounded_by_sources_and_window() {
        let mut c = SourceContext::new(3);
        for i in 0..100i64 {
            c.push(&format!("s{}", i % 7), i * 1_000_000, 80);
        }
        assert!(c.len() <= 3);
        // The source seen longest ago goes first: s1 was seen after s0, so s0 is forgotten.
        let mut lru = SourceContext::new(2);
        lru.push("s0", 0, 80);
        lru.push("s1", 0, 80);
        lru.push("s0", 1, 80);
        lru.push("s2", 2, 80);
        let k = SourceContext::key;
        assert!(lru.sources.contains_key(&k("s0")) && !lru.sources.contains_key(&k("s1")));
        // A new source per flow (spoofed addresses): the queue stays bounded too.
        let mut spoofed = SourceContext::new(100);
        for i in 0..20_000i64 {
            spoofed.push(
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                i,
                80,
            );
            spoofed.push("steady", i, 80);
        }
        assert!(spoofed.len() <= 100 && spoofed.order.len() <= 2 * 100 + 16);
        let mut one = SourceContext::new(3);
        for i in 0..2_000i64 {
            one.push("x", i * 100_000, (i % 50) as u16);
        }
        // 10 flows a second kept for 10 s at most.
        assert!(
            one.sources[&SourceContext::key("x")].flows.len() <= 101,
            "{}",
            one.sources[&SourceContext::key("x")].flows.len()
        );
        // A flood saturates at the cap instead of growing.
        let mut flood = SourceContext::new(3);
        let mut last = [0.0; CONTEXT_WIDTH];
        for i in 0..5_000i64 {
            last = flood.push("x", i, (i % 7) as u16);
        }
        let cap = MAX_PER_SOURCE as f32;
        assert_eq!(last, [cap, 7.0, cap]);
        let mut two = SourceContext::new(4);
        let m: Vec<f32> = [("a", 0, 1), ("a", 100, 2)]
            .into_iter()
            .flat_map(|(s, t, p)| two.push(s, t, p))
            .collect();
        assert_eq!(m, vec![0.0, 1.0, 0.0, 1.0, 2.0, 1.0]);
        assert_eq!(
            with_context(&[7.0, 8.0], 1, &m),
            vec![7.0, 0.0, 1.0, 0.0, 8.0, 1.0, 2.0, 1.0]
        );
    }
}
