//! The bidirectional flow table and the flow engine: keys packets on their 5-tuple, applies the
//! fixed CICFlowMeter's flow start/end rules, expires idle flows in O(1) amortised time per
//! packet (an intrusive LRU list ordered by last activity) and caps the number of live flows.
//! It does not read captures or write output.
//!
//! End rules, checked for each packet of an existing flow, in this order:
//! 1. *active (flow) timeout*: packet ts − flow start > `flow_timeout_us` ends the flow; for TCP
//!    (unless the packet is a fresh SYN after teardown) the next flow keeps the old direction and
//!    carries Total TCP Flow Time;
//! 2. *TCP termination*: after an RST, or FINs in both directions followed by an ACK, the flow
//!    keeps absorbing packets until the next SYN, which starts a new flow;
//! 3. *ICMP*: a packet whose ICMP code and type both differ from the flow's starts a new flow.
//!
//! In addition a flow with no packet for more than `idle_timeout_us` (by capture time) is ended,
//! the least recently seen flow is evicted when `max_flows` are live, and
//! [`FlowEngine::finish`] ends the rest. The *activity timeout* does not end flows: as in
//! CICFlowMeter it splits active and idle periods.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::capture::{LinkType, Packet};
use crate::decode::{decode, tcp_flags, PacketInfo, SkipReason};
use crate::error::FlowError;
use crate::features::{FlowState, TcpState, FEATURE_COUNT};
use crate::text::{push_int, push_ip};

/// Flow engine settings. All times are microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// Active (flow) timeout, measured from the flow's first packet (default 120 s).
    pub flow_timeout_us: i64,
    /// Activity timeout separating active and idle periods (default 5 s).
    pub activity_timeout_us: i64,
    /// A flow with no packet for longer than this is ended (default 120 s, the flow timeout, so
    /// that idle expiry emits exactly what the flow timeout would).
    pub idle_timeout_us: i64,
    /// Most live flows; beyond it the least recently seen flow is ended early (default 1 Mi).
    pub max_flows: usize,
    /// Flows with fewer packets are counted but not emitted (default 1: emit all).
    pub min_packets: u64,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            flow_timeout_us: 120_000_000,
            activity_timeout_us: 5_000_000,
            idle_timeout_us: 120_000_000,
            max_flows: 1 << 20,
            min_packets: 1,
        }
    }
}

impl FlowConfig {
    /// Checks that the values are usable.
    pub fn validate(&self) -> Result<(), FlowError> {
        if self.flow_timeout_us <= 0 || self.activity_timeout_us <= 0 || self.idle_timeout_us <= 0 {
            return Err(FlowError::Config("timeouts must be positive".into()));
        }
        if self.max_flows == 0 || self.max_flows > u32::MAX as usize - 1 {
            return Err(FlowError::Config("max_flows must be in 1..2^32-1".into()));
        }
        Ok(())
    }
}

/// Why a flow ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EndReason {
    /// A SYN arrived after RST or the FIN/FIN/ACK teardown.
    TcpTermination,
    /// The flow timeout elapsed since its first packet.
    ActiveTimeout,
    /// No packet for longer than the idle timeout.
    IdleTimeout,
    /// An ICMP packet with a different code and type.
    IcmpChange,
    /// Evicted because the flow table was full.
    Evicted,
    /// Still live when [`FlowEngine::finish`] was called.
    EndOfCapture,
}

impl EndReason {
    /// Every reason, in counter order.
    pub const ALL: [EndReason; 6] = [
        EndReason::TcpTermination,
        EndReason::ActiveTimeout,
        EndReason::IdleTimeout,
        EndReason::IcmpChange,
        EndReason::Evicted,
        EndReason::EndOfCapture,
    ];

    /// A short snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            EndReason::TcpTermination => "tcp_termination",
            EndReason::ActiveTimeout => "active_timeout",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::IcmpChange => "icmp_change",
            EndReason::Evicted => "evicted",
            EndReason::EndOfCapture => "end_of_capture",
        }
    }
}

/// One finished flow: identifiers and the 81 feature values.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    /// Sequence number of the record (1-based, in emission order).
    pub id: u64,
    /// Forward source address (sender of the first packet).
    pub src: IpAddr,
    /// Forward source port (0 for port-less protocols).
    pub src_port: u16,
    /// Forward destination address.
    pub dst: IpAddr,
    /// Forward destination port.
    pub dst_port: u16,
    /// IP protocol number.
    pub protocol: u8,
    /// First packet's timestamp, µs since the Unix epoch.
    pub start_us: i64,
    /// Why the flow ended.
    pub end_reason: EndReason,
    /// Feature values in [`metaids_core::schema::CIC_FLOW_FEATURES`] order.
    pub features: [f64; FEATURE_COUNT],
    /// Σ frame lengths of the fwd packets, link-layer header included: the on-the-wire length
    /// (pcap `orig_len`) when pushed with [`FlowEngine::push`], the captured length with
    /// [`FlowEngine::push_packet`], 0 with [`FlowEngine::push_decoded`]. Not a feature column;
    /// it is what `tshark -z conv` calls bytes.
    pub fwd_frame_bytes: u64,
    /// Σ frame lengths of the bwd packets (see [`FlowRecord::fwd_frame_bytes`]).
    pub bwd_frame_bytes: u64,
}

impl FlowRecord {
    /// `src-dst-srcport-dstport-protocol`, in the flow's forward direction.
    pub fn flow_id(&self) -> String {
        let mut s = String::with_capacity(48);
        self.push_flow_id(&mut s);
        s
    }

    /// Appends [`FlowRecord::flow_id`] to `out` without allocating.
    pub fn push_flow_id(&self, out: &mut String) {
        push_ip(out, &self.src);
        out.push('-');
        push_ip(out, &self.dst);
        out.push('-');
        push_int(out, self.src_port);
        out.push('-');
        push_int(out, self.dst_port);
        out.push('-');
        push_int(out, self.protocol);
    }

    /// The start time as `YYYY-MM-DD HH:MM:SS.ffffff` (UTC), like the corrected CSVs.
    pub fn timestamp(&self) -> String {
        metaids_core::time::format_timestamp_us(self.start_us)
    }

    /// The value of a feature by its column name.
    pub fn feature(&self, name: &str) -> Option<f64> {
        metaids_core::schema::CIC_FLOW_FEATURES
            .iter()
            .position(|n| *n == name)
            .map(|i| self.features[i])
    }
}

/// Counters over the engine's life.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Frames pushed.
    pub packets: u64,
    /// Captured bytes of the frames pushed.
    pub bytes: u64,
    /// On-the-wire bytes of the frames pushed (pcap `orig_len` with [`FlowEngine::push`], the
    /// captured length otherwise).
    pub wire_bytes: u64,
    /// Frames that updated a flow.
    pub decoded: u64,
    /// Frames skipped, indexed like [`SkipReason::ALL`].
    pub skipped: [u64; 5],
    /// IP fragments (first and later) among decoded packets.
    pub fragments: u64,
    /// Decoded IPv4 packets with options.
    pub ipv4_options: u64,
    /// Decoded IPv6 packets with extension headers.
    pub ipv6_extension_headers: u64,
    /// Decoded packets with one or more VLAN tags.
    pub vlan_tagged: u64,
    /// Packets whose timestamp is earlier than an earlier packet's (each taken at the latest
    /// timestamp seen, so flow times never run backwards).
    pub out_of_order: u64,
    /// Flows started.
    pub flows_started: u64,
    /// Flows emitted.
    pub flows_emitted: u64,
    /// Flows ended but not emitted (fewer than `min_packets`).
    pub flows_suppressed: u64,
    /// Flows ended, indexed like [`EndReason::ALL`] (evictions are `[4]`).
    pub ended: [u64; 6],
    /// Most flows live at once.
    pub peak_live_flows: u64,
}

impl EngineStats {
    /// Skips for one reason.
    pub fn skipped_for(&self, reason: SkipReason) -> u64 {
        self.skipped[reason.index()]
    }

    /// Flows ended for one reason.
    pub fn ended_for(&self, reason: EndReason) -> u64 {
        self.ended[reason as usize]
    }

    /// Flows evicted because the table was full.
    pub fn evictions(&self) -> u64 {
        self.ended_for(EndReason::Evicted)
    }

    /// All skipped frames.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
}

/// Canonical (direction-free) flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    a: IpAddr,
    b: IpAddr,
    a_port: u16,
    b_port: u16,
    protocol: u8,
}

impl FlowKey {
    fn of(p: &PacketInfo) -> Self {
        if (p.src, p.src_port) <= (p.dst, p.dst_port) {
            FlowKey {
                a: p.src,
                b: p.dst,
                a_port: p.src_port,
                b_port: p.dst_port,
                protocol: p.protocol,
            }
        } else {
            FlowKey {
                a: p.dst,
                b: p.src,
                a_port: p.dst_port,
                b_port: p.src_port,
                protocol: p.protocol,
            }
        }
    }
}

const NIL: u32 = u32::MAX;

struct Slot {
    key: FlowKey,
    flow: Option<FlowState>,
    prev: u32,
    next: u32,
}

/// Slab of flows plus a doubly linked list from least to most recently seen.
struct FlowTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    index: HashMap<FlowKey, u32>,
    head: u32,
    tail: u32,
}

impl FlowTable {
    fn new() -> Self {
        FlowTable {
            slots: Vec::new(),
            free: Vec::new(),
            index: HashMap::new(),
            head: NIL,
            tail: NIL,
        }
    }

    fn len(&self) -> usize {
        self.index.len()
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_back(&mut self, i: u32) {
        self.slots[i as usize].prev = self.tail;
        self.slots[i as usize].next = NIL;
        if self.tail == NIL {
            self.head = i;
        } else {
            self.slots[self.tail as usize].next = i;
        }
        self.tail = i;
    }

    fn touch(&mut self, i: u32) {
        if self.tail != i {
            self.unlink(i);
            self.push_back(i);
        }
    }

    fn insert(&mut self, key: FlowKey, flow: FlowState) -> u32 {
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Slot {
                    key,
                    flow: Some(flow),
                    prev: NIL,
                    next: NIL,
                };
                i
            }
            None => {
                self.slots.push(Slot {
                    key,
                    flow: Some(flow),
                    prev: NIL,
                    next: NIL,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(key, i);
        self.push_back(i);
        i
    }

    fn remove(&mut self, i: u32) -> Option<FlowState> {
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        self.index.remove(&slot.key);
        self.free.push(i);
        slot.flow.take()
    }

    fn get_mut(&mut self, i: u32) -> Option<&mut FlowState> {
        self.slots.get_mut(i as usize).and_then(|s| s.flow.as_mut())
    }

    fn oldest(&self) -> Option<(u32, i64)> {
        if self.head == NIL {
            return None;
        }
        let s = &self.slots[self.head as usize];
        s.flow.as_ref().map(|f| (self.head, f.last_seen))
    }
}

/// Turns packets into finished [`FlowRecord`]s.
///
/// ```
/// use metaids_flow::{FlowConfig, FlowEngine, LinkType};
/// # fn demo(frames: &[(i64, Vec<u8>)]) -> Result<(), metaids_flow::FlowError> {
/// let mut engine = FlowEngine::new(FlowConfig::default())?;
/// let mut flows = Vec::new();
/// for (ts_us, frame) in frames {
///     flows.extend(engine.push_packet(LinkType::ETHERNET, *ts_us, frame));
/// }
/// flows.extend(engine.finish());
/// println!("{} flows, {} frames skipped", flows.len(), engine.stats().skipped_total());
/// # Ok(()) }
/// ```
pub struct FlowEngine {
    config: FlowConfig,
    table: FlowTable,
    out: Vec<FlowRecord>,
    stats: EngineStats,
    now: i64,
    next_id: u64,
}

impl FlowEngine {
    /// A new engine; fails with [`FlowError::Config`] on invalid settings.
    pub fn new(config: FlowConfig) -> Result<Self, FlowError> {
        config.validate()?;
        Ok(FlowEngine {
            config,
            table: FlowTable::new(),
            out: Vec::new(),
            stats: EngineStats::default(),
            now: i64::MIN,
            next_id: 1,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &FlowConfig {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Flows currently live.
    pub fn live_flows(&self) -> usize {
        self.table.len()
    }

    /// Decodes one frame (timestamp in µs since the epoch) and returns the flows it ended.
    ///
    /// Frames that cannot be decoded are counted in [`EngineStats::skipped`], never errors.
    /// The frame length counted in [`FlowRecord::fwd_frame_bytes`] is the captured length;
    /// use [`FlowEngine::push`] to count the on-the-wire length of snap-length-cut frames.
    pub fn push_packet(
        &mut self,
        link: LinkType,
        ts_us: i64,
        frame: &[u8],
    ) -> std::vec::Drain<'_, FlowRecord> {
        self.push_frame(link, ts_us, frame, frame.len() as u64)
    }

    /// Like [`FlowEngine::push_packet`] for a packet from a [`crate::CaptureReader`] (or a
    /// live capture): counts its on-the-wire length `orig_len` (or the captured length when
    /// larger) in [`FlowRecord::fwd_frame_bytes`] / [`EngineStats::wire_bytes`].
    pub fn push(&mut self, pkt: &Packet<'_>) -> std::vec::Drain<'_, FlowRecord> {
        let wire = u64::from(pkt.orig_len).max(pkt.data.len() as u64);
        self.push_frame(pkt.link_type, pkt.ts_us, pkt.data, wire)
    }

    /// Advances the engine's clock to `now_us` (µs since the epoch) without a packet and
    /// returns the flows idle for longer than the idle timeout at that time. A live capture
    /// calls it periodically with the wall clock so that idle flows are emitted even when
    /// traffic stops. A time earlier than the latest packet's is ignored (not counted as out
    /// of order).
    pub fn tick(&mut self, now_us: i64) -> std::vec::Drain<'_, FlowRecord> {
        if now_us > self.now {
            self.now = now_us;
        }
        self.expire();
        self.out.drain(..)
    }

    fn push_frame(
        &mut self,
        link: LinkType,
        ts_us: i64,
        frame: &[u8],
        wire_len: u64,
    ) -> std::vec::Drain<'_, FlowRecord> {
        self.stats.packets += 1;
        self.stats.bytes += frame.len() as u64;
        self.stats.wire_bytes += wire_len;
        match decode(link, frame) {
            Ok(info) => self.process(ts_us, &info, wire_len),
            Err(reason) => {
                self.stats.skipped[reason.index()] += 1;
                self.advance_clock(ts_us);
                self.expire();
            }
        }
        self.out.drain(..)
    }

    /// Like [`FlowEngine::push_packet`] for an already decoded packet (not counted in
    /// `packets`/`bytes`; adds 0 frame bytes).
    pub fn push_decoded(
        &mut self,
        ts_us: i64,
        info: &PacketInfo,
    ) -> std::vec::Drain<'_, FlowRecord> {
        self.process(ts_us, info, 0);
        self.out.drain(..)
    }

    /// Ends every live flow (oldest activity first) and returns them.
    pub fn finish(&mut self) -> std::vec::Drain<'_, FlowRecord> {
        while let Some((i, _)) = self.table.oldest() {
            if let Some(f) = self.table.remove(i) {
                self.emit(f, EndReason::EndOfCapture);
            }
        }
        self.out.drain(..)
    }

    fn process(&mut self, ts: i64, p: &PacketInfo, frame_len: u64) {
        self.stats.decoded += 1;
        self.advance_clock(ts);
        // A packet stamped before the capture clock (reordered capture, clock step) is taken at the
        // clock, so a flow's times never run backwards (no negative durations or inter-arrival
        // times); it is counted in `out_of_order`.
        let ts = ts.max(self.now);
        self.stats.fragments += u64::from(p.fragment);
        self.stats.ipv4_options += u64::from(p.ipv4_options);
        self.stats.ipv6_extension_headers += u64::from(p.ipv6_ext);
        self.stats.vlan_tagged += u64::from(p.vlan_tags > 0);
        let key = FlowKey::of(p);
        let act = self.config.activity_timeout_us;
        match self.table.index.get(&key).copied() {
            None => {
                // Idle flows go first, so that a full table evicts only live ones.
                self.expire();
                self.make_room();
                let f = FlowState::new(p.src, p.src_port, p.dst, p.dst_port, ts, p);
                self.start(key, f);
            }
            Some(i) => {
                let syn = p.has(tcp_flags::SYN);
                let ack = p.has(tcp_flags::ACK);
                let Some(flow) = self.table.get_mut(i) else {
                    return;
                };
                let timed_out = ts - flow.start > self.config.flow_timeout_us;
                let ready = flow.tcp_state == TcpState::Ready;
                if timed_out || (ready && syn) {
                    let Some(old) = self.table.remove(i) else {
                        return;
                    };
                    let fresh = (ready && syn && !ack) || p.protocol != 6;
                    let new = if fresh {
                        FlowState::new(p.src, p.src_port, p.dst, p.dst_port, ts, p)
                    } else {
                        let mut f =
                            FlowState::new(old.src, old.src_port, old.dst, old.dst_port, ts, p);
                        f.cumulative = old.total_tcp_time() + (ts - old.last_seen);
                        f
                    };
                    let reason = if timed_out {
                        EndReason::ActiveTimeout
                    } else {
                        EndReason::TcpTermination
                    };
                    self.emit(old, reason);
                    self.start(key, new);
                } else if p.has(tcp_flags::FIN) {
                    flow.add(ts, p, act);
                    match flow.tcp_state {
                        TcpState::Open => flow.tcp_state = TcpState::FirstFin,
                        TcpState::FirstFin if flow.fwd_fin > 0 && flow.bwd_fin > 0 => {
                            flow.tcp_state = TcpState::SecondFin
                        }
                        _ => {}
                    }
                    self.table.touch(i);
                } else if p.has(tcp_flags::RST) {
                    flow.add(ts, p, act);
                    flow.tcp_state = TcpState::Ready;
                    self.table.touch(i);
                } else if ack {
                    flow.add(ts, p, act);
                    if flow.tcp_state == TcpState::SecondFin {
                        flow.tcp_state = TcpState::Ready;
                    }
                    self.table.touch(i);
                } else if (flow.protocol == 1 || flow.protocol == 58)
                    && p.icmp.is_some_and(|(t, c)| {
                        i16::from(c) != flow.icmp_code && i16::from(t) != flow.icmp_type
                    })
                {
                    let Some(old) = self.table.remove(i) else {
                        return;
                    };
                    self.emit(old, EndReason::IcmpChange);
                    let f = FlowState::new(p.src, p.src_port, p.dst, p.dst_port, ts, p);
                    self.start(key, f);
                } else {
                    flow.add(ts, p, act);
                    self.table.touch(i);
                }
            }
        }
        // Every branch above leaves the packet's flow (new or updated) most recently seen,
        // i.e. at the tail of the LRU list, and nothing has expired it yet.
        let tail = self.table.tail;
        debug_assert!(self
            .table
            .slots
            .get(tail as usize)
            .is_some_and(|s| s.key == key));
        if let Some(flow) = self.table.get_mut(tail) {
            flow.add_frame_bytes(p, frame_len);
        }
        self.expire();
    }

    fn start(&mut self, key: FlowKey, f: FlowState) {
        self.table.insert(key, f);
        self.stats.flows_started += 1;
        self.stats.peak_live_flows = self.stats.peak_live_flows.max(self.table.len() as u64);
    }

    /// Evicts the least recently seen flow when the table is full.
    fn make_room(&mut self) {
        while self.table.len() >= self.config.max_flows {
            match self.table.oldest() {
                Some((i, _)) => {
                    if let Some(f) = self.table.remove(i) {
                        self.emit(f, EndReason::Evicted);
                    }
                }
                None => break,
            }
        }
    }

    /// Moves the capture clock forward to `ts`; an earlier timestamp is counted as out of order and
    /// leaves the clock where it is.
    fn advance_clock(&mut self, ts: i64) {
        if ts < self.now {
            self.stats.out_of_order += 1;
        } else {
            self.now = ts;
        }
    }

    fn expire(&mut self) {
        let limit = self.config.idle_timeout_us;
        while let Some((i, last)) = self.table.oldest() {
            if self.now.saturating_sub(last) <= limit {
                break;
            }
            if let Some(f) = self.table.remove(i) {
                self.emit(f, EndReason::IdleTimeout);
            }
        }
    }

    fn emit(&mut self, f: FlowState, reason: EndReason) {
        self.stats.ended[reason as usize] += 1;
        if f.packets() < self.config.min_packets {
            self.stats.flows_suppressed += 1;
            return;
        }
        self.stats.flows_emitted += 1;
        let id = self.next_id;
        self.next_id += 1;
        self.out.push(FlowRecord {
            id,
            src: f.src,
            src_port: f.src_port,
            dst: f.dst,
            dst_port: f.dst_port,
            protocol: f.protocol,
            start_us: f.start,
            end_reason: reason,
            features: f.features(),
            fwd_frame_bytes: f.fwd_frame_bytes,
            bwd_frame_bytes: f.bwd_frame_bytes,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11 (item 9): a packet stamped before an earlier one never makes a flow's times run
    /// backwards; it is counted.
    #[test]
    fn out_of_order_packets_give_no_negative_durations() {
        let p = PacketInfo {
            src_port: 5000,
            dst_port: 53,
            payload_len: 40,
            header_len: 8,
            ..PacketInfo::new(
                "10.0.0.1".parse().expect("ip"),
                "10.0.0.2".parse().expect("ip"),
                17,
            )
        };
        let mut e = FlowEngine::new(FlowConfig::default()).expect("engine");
        assert_eq!(e.push_decoded(10_000_000, &p).count(), 0);
        assert_eq!(e.push_decoded(10_500_000, &p).count(), 0);
        // 4,294 s earlier: a wrapped or reordered timestamp.
        assert_eq!(
            e.push_decoded(10_000_000 - 4_294_967_295_000, &p).count(),
            0
        );
        let flows: Vec<FlowRecord> = e.finish().collect();
        assert_eq!(flows.len(), 1);
        let duration = flows[0].features[0];
        assert!((0.0..=500_000.0).contains(&duration), "duration {duration}");
        assert!(flows[0].features.iter().all(|v| v.is_finite()));
        assert_eq!(e.stats().out_of_order, 1);
    }

    #[test]
    fn per_flow_memory_is_bounded() {
        let slot = std::mem::size_of::<Slot>();
        let index_entry = std::mem::size_of::<(FlowKey, u32)>();
        eprintln!("per-flow: slot {slot} B + index entry {index_entry} B");
        assert!(slot + index_entry <= 1024);
    }
}
