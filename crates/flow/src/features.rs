//! Per-flow accumulators and the 81 corrected-CICFlowMeter features, in the order of
//! [`metaids_core::schema::CIC_FLOW_FEATURES`]. It does not decide when flows start or end
//! (see [`crate::engine`]) and does not format output (see [`crate::output`]).
//!
//! The semantics follow the fixed CICFlowMeter of Engelen et al. (2021) at the revision that
//! produced the corrected CIC-IDS2017 CSVs (91 columns: ICMP code/type and Total TCP Flow Time
//! present, no retransmission or backward act-data columns), *including its quirks*, so that a
//! model trained on those CSVs sees the same numbers. Every packet is `fwd` when its source
//! (address and port) is the flow's source, the sender of the flow's first packet.
//!
//! Units: times and durations in microseconds, lengths in bytes, rates per second.
//! "len" below is the transport payload length and "hdr" the transport header length
//! (see [`crate::decode`]); statistics use the sample standard deviation (n − 1). Columns
//! of kind **int** are written as integers, truncated toward zero (as in the published CSVs);
//! **float** columns are written with a decimal point. Empty statistics are 0.
//!
//! | # | Column | Kind | Definition |
//! |---|---|---|---|
//! | 0 | Flow Duration | int | last packet ts − first packet ts |
//! | 1 | Total Fwd Packet | int | fwd packets |
//! | 2 | Total Bwd packets | int | bwd packets |
//! | 3 | Total Length of Fwd Packet | int | Σ len over fwd packets |
//! | 4 | Total Length of Bwd Packet | int | Σ len over bwd packets |
//! | 5–8 | Fwd Packet Length Max/Min/Mean/Std | int,int,float,float | stats of len over fwd packets |
//! | 9–12 | Bwd Packet Length Max/Min/Mean/Std | int,int,float,float | stats of len over bwd packets |
//! | 13 | Flow Bytes/s | float | (Σ len) / (duration / 10⁶); −1 when duration is 0 |
//! | 14 | Flow Packets/s | float | packets / (duration / 10⁶); −1 when duration is 0 |
//! | 15–18 | Flow IAT Mean/Std/Max/Min | float,float,int,int | gaps between consecutive packets of the flow |
//! | 19–23 | Fwd IAT Total/Mean/Std/Max/Min | int,float,float,int,int | gaps between consecutive fwd packets (0 with < 2 fwd packets) |
//! | 24–28 | Bwd IAT Total/Mean/Std/Max/Min | int,float,float,int,int | same for bwd packets |
//! | 29, 30 | Fwd/Bwd PSH Flags | int | packets with PSH, per direction |
//! | 31, 32 | Fwd/Bwd URG Flags | int | packets with URG, per direction |
//! | 33, 34 | Fwd/Bwd RST Flags | int | packets with RST, per direction, *not counting the flow's first packet* |
//! | 35, 36 | Fwd/Bwd Header Length | int | Σ hdr per direction |
//! | 37, 38 | Fwd/Bwd Packets/s | float | direction packets / (duration / 10⁶); 0 when duration is 0 |
//! | 39–43 | Packet Length Min/Max/Mean/Std/Variance | int,int,float,float,float | stats of len over all packets |
//! | 44–51 | FIN/SYN/RST/PSH/ACK/URG/CWR/ECE Flag Count | int | packets with that TCP flag, both directions |
//! | 52 | Down/Up Ratio | float | bwd packets / fwd packets (0 without fwd packets) |
//! | 53 | Average Packet Size | float | Σ len / packets |
//! | 54, 55 | Fwd/Bwd Segment Size Avg | float | Σ len / packets, per direction |
//! | 56–58 | Fwd Bytes/Bulk Avg, Fwd Packet/Bulk Avg, Fwd Bulk Rate Avg | int | bulk = ≥ 4 consecutive fwd packets with len > 0, no gap > 1 s between them and no bwd bulk packet in between; bytes/bulks, packets/bulks, bytes / bulk seconds |
//! | 59–61 | Bwd Bytes/Bulk Avg, Bwd Packet/Bulk Avg, Bwd Bulk Rate Avg | int | same for bwd |
//! | 62–65 | Subflow Fwd Packets/Fwd Bytes/Bwd Packets/Bwd Bytes | int | direction packets (bytes) / subflow count, where that generator's subflow count equals the packet count (an operator-precedence slip), i.e. fwd packets / packets etc. |
//! | 66 | FWD Init Win Bytes | int | TCP window of the flow's first packet when it is fwd, else 0 |
//! | 67 | Bwd Init Win Bytes | int | TCP window of the *last* bwd packet (that generator overwrote it on every bwd packet) |
//! | 68 | Fwd Act Data Pkts | int | fwd packets with len ≥ 1, *not counting the flow's first packet* |
//! | 69 | Fwd Seg Size Min | int | min hdr over fwd packets (0 when the first packet is bwd) |
//! | 70–73 | Active Mean/Std/Max/Min | float,float,int,int | active periods: runs of packets with gaps ≤ activity timeout (5 s); a run is recorded when a longer gap ends it and it lasted > 0 µs; the final run is not recorded |
//! | 74–77 | Idle Mean/Std/Max/Min | float,float,int,int | the gaps > activity timeout |
//! | 78, 79 | ICMP Code, ICMP Type | int | code and type of the flow's first ICMP/ICMPv6 packet; −1 otherwise |
//! | 80 | Total TCP Flow Time | int | TCP only (else 0): duration plus, for a connection split by the flow timeout, the durations of its earlier flows and the gaps between them |

use std::net::IpAddr;

use crate::decode::{tcp_flags, PacketInfo};
use crate::stats::RunningStats;

/// Number of feature columns.
pub const FEATURE_COUNT: usize = 81;

/// How a feature column is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    /// Integer, truncated toward zero.
    Int,
    /// Floating point, always with a decimal point.
    Float,
}

use FeatureKind::{Float as F, Int as I};

/// The kind of each column, in [`metaids_core::schema::CIC_FLOW_FEATURES`] order.
pub const FEATURE_KINDS: [FeatureKind; FEATURE_COUNT] = [
    I, I, I, I, I, // duration, packets, lengths
    I, I, F, F, // fwd len
    I, I, F, F, // bwd len
    F, F, // rates
    F, F, I, I, // flow iat
    I, F, F, I, I, // fwd iat
    I, F, F, I, I, // bwd iat
    I, I, I, I, I, I, // psh urg rst
    I, I, // header lengths
    F, F, // pkts/s
    I, I, F, F, F, // packet length
    I, I, I, I, I, I, I, I, // flags
    F, F, F, F, // ratio, avg sizes
    I, I, I, I, I, I, // bulk
    I, I, I, I, // subflow
    I, I, I, I, // init win, act data, seg min
    F, F, I, I, // active
    F, F, I, I, // idle
    I, I, I, // icmp, tcp time
];

/// TCP teardown tracking, as in the fixed CICFlowMeter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum TcpState {
    /// No FIN or RST yet.
    #[default]
    Open,
    /// One FIN seen.
    FirstFin,
    /// FINs seen in both directions.
    SecondFin,
    /// RST seen, or the ACK after both FINs: the next SYN starts a new flow.
    Ready,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bulk {
    duration: i64,
    packet_count: i64,
    size_total: i64,
    state_count: i64,
    packet_count_helper: i64,
    start_helper: i64,
    size_helper: i64,
    last_ts: i64,
}

impl Bulk {
    /// `other_last`: timestamp of the other direction's last bulk packet.
    fn update(&mut self, ts: i64, size: i64, other_last: i64) {
        if other_last > self.start_helper {
            self.start_helper = 0;
        }
        if size <= 0 {
            return;
        }
        if self.start_helper == 0 || (ts - self.last_ts) as f64 / 1e6 > 1.0 {
            self.start_helper = ts;
            self.last_ts = ts;
            self.packet_count_helper = 1;
            self.size_helper = size;
            return;
        }
        self.packet_count_helper += 1;
        self.size_helper += size;
        if self.packet_count_helper == 4 {
            self.state_count += 1;
            self.packet_count += self.packet_count_helper;
            self.size_total += self.size_helper;
            self.duration += ts - self.start_helper;
        } else if self.packet_count_helper > 4 {
            self.packet_count += 1;
            self.size_total += size;
            self.duration += ts - self.last_ts;
        }
        self.last_ts = ts;
    }

    fn avg_bytes(&self) -> f64 {
        ratio(self.size_total as f64, self.state_count as f64)
    }
    fn avg_packets(&self) -> f64 {
        ratio(self.packet_count as f64, self.state_count as f64)
    }
    fn rate(&self) -> f64 {
        ratio(self.size_total as f64, self.duration as f64 / 1e6)
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 {
        0.0
    } else {
        a / b
    }
}

/// Running state of one bidirectional flow: O(1) memory, no packet lists.
#[derive(Debug, Clone)]
pub(crate) struct FlowState {
    pub(crate) src: IpAddr,
    pub(crate) dst: IpAddr,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) protocol: u8,
    pub(crate) start: i64,
    pub(crate) last_seen: i64,
    fwd_last_seen: i64,
    bwd_last_seen: i64,
    fwd_len: RunningStats,
    bwd_len: RunningStats,
    all_len: RunningStats,
    flow_iat: RunningStats,
    fwd_iat: RunningStats,
    bwd_iat: RunningStats,
    active: RunningStats,
    idle: RunningStats,
    fwd_hdr: i64,
    bwd_hdr: i64,
    flag_counts: [u32; 8],
    fwd_psh: u32,
    bwd_psh: u32,
    fwd_urg: u32,
    bwd_urg: u32,
    pub(crate) fwd_fin: u32,
    pub(crate) bwd_fin: u32,
    fwd_rst: u32,
    bwd_rst: u32,
    act_data_fwd: u32,
    min_seg_fwd: u32,
    init_win_fwd: u16,
    init_win_bwd: u16,
    start_active: i64,
    end_active: i64,
    fwd_bulk: Bulk,
    bwd_bulk: Bulk,
    pub(crate) tcp_state: TcpState,
    /// Total TCP Flow Time carried from earlier flows of the same connection.
    pub(crate) cumulative: i64,
    pub(crate) icmp_code: i16,
    pub(crate) icmp_type: i16,
    /// On-the-wire frame bytes (link layer included) of fwd packets; not a feature.
    pub(crate) fwd_frame_bytes: u64,
    /// On-the-wire frame bytes (link layer included) of bwd packets; not a feature.
    pub(crate) bwd_frame_bytes: u64,
}

/// Direction test: the packet's source is the flow's source.
pub(crate) fn is_forward(flow_src: IpAddr, flow_src_port: u16, p: &PacketInfo) -> bool {
    p.src == flow_src && p.src_port == flow_src_port
}

impl FlowState {
    /// A flow whose forward direction is `(src, src_port) → (dst, dst_port)`, started by `p`.
    pub(crate) fn new(
        src: IpAddr,
        src_port: u16,
        dst: IpAddr,
        dst_port: u16,
        ts: i64,
        p: &PacketInfo,
    ) -> Self {
        let (icmp_type, icmp_code) = match p.icmp {
            Some((t, c)) => (i16::from(t), i16::from(c)),
            None => (-1, -1),
        };
        let mut f = FlowState {
            src,
            dst,
            src_port,
            dst_port,
            protocol: p.protocol,
            start: ts,
            last_seen: ts,
            fwd_last_seen: 0,
            bwd_last_seen: 0,
            fwd_len: RunningStats::default(),
            bwd_len: RunningStats::default(),
            all_len: RunningStats::default(),
            flow_iat: RunningStats::default(),
            fwd_iat: RunningStats::default(),
            bwd_iat: RunningStats::default(),
            active: RunningStats::default(),
            idle: RunningStats::default(),
            fwd_hdr: 0,
            bwd_hdr: 0,
            flag_counts: [0; 8],
            fwd_psh: 0,
            bwd_psh: 0,
            fwd_urg: 0,
            bwd_urg: 0,
            fwd_fin: 0,
            bwd_fin: 0,
            fwd_rst: 0,
            bwd_rst: 0,
            act_data_fwd: 0,
            min_seg_fwd: 0,
            init_win_fwd: 0,
            init_win_bwd: 0,
            start_active: ts,
            end_active: ts,
            fwd_bulk: Bulk::default(),
            bwd_bulk: Bulk::default(),
            tcp_state: TcpState::Open,
            cumulative: 0,
            icmp_code,
            icmp_type,
            fwd_frame_bytes: 0,
            bwd_frame_bytes: 0,
        };
        let fwd = is_forward(src, src_port, p);
        f.update_bulk(ts, p, fwd);
        f.count_flags(p);
        f.all_len.push(f64::from(p.payload_len));
        let psh = u32::from(p.has(tcp_flags::PSH));
        let urg = u32::from(p.has(tcp_flags::URG));
        if fwd {
            f.min_seg_fwd = p.header_len;
            f.init_win_fwd = p.tcp_window;
            f.fwd_len.push(f64::from(p.payload_len));
            f.fwd_hdr = i64::from(p.header_len);
            f.fwd_last_seen = ts;
            f.fwd_psh += psh;
            f.fwd_urg += urg;
        } else {
            f.init_win_bwd = p.tcp_window;
            f.bwd_len.push(f64::from(p.payload_len));
            f.bwd_hdr = i64::from(p.header_len);
            f.bwd_last_seen = ts;
            f.bwd_psh += psh;
            f.bwd_urg += urg;
        }
        f
    }

    fn update_bulk(&mut self, ts: i64, p: &PacketInfo, fwd: bool) {
        let size = i64::from(p.payload_len);
        if fwd {
            let other = self.bwd_bulk.last_ts;
            self.fwd_bulk.update(ts, size, other);
        } else {
            let other = self.fwd_bulk.last_ts;
            self.bwd_bulk.update(ts, size, other);
        }
    }

    fn count_flags(&mut self, p: &PacketInfo) {
        const ORDER: [u8; 8] = [
            tcp_flags::FIN,
            tcp_flags::SYN,
            tcp_flags::RST,
            tcp_flags::PSH,
            tcp_flags::ACK,
            tcp_flags::URG,
            tcp_flags::CWR,
            tcp_flags::ECE,
        ];
        for (count, flag) in self.flag_counts.iter_mut().zip(ORDER) {
            *count += u32::from(p.has(flag));
        }
    }

    /// Active/idle bookkeeping with the activity timeout (µs), before adding a packet.
    pub(crate) fn update_active_idle(&mut self, ts: i64, activity_timeout: i64) {
        if ts - self.end_active > activity_timeout {
            if self.end_active - self.start_active > 0 {
                self.active
                    .push((self.end_active - self.start_active) as f64);
            }
            self.idle.push((ts - self.end_active) as f64);
            self.start_active = ts;
        }
        self.end_active = ts;
    }

    /// Adds a later packet of the flow.
    pub(crate) fn add(&mut self, ts: i64, p: &PacketInfo, activity_timeout: i64) {
        self.update_active_idle(ts, activity_timeout);
        let fwd = is_forward(self.src, self.src_port, p);
        self.update_bulk(ts, p, fwd);
        self.count_flags(p);
        let len = f64::from(p.payload_len);
        self.all_len.push(len);
        let psh = u32::from(p.has(tcp_flags::PSH));
        let urg = u32::from(p.has(tcp_flags::URG));
        let fin = u32::from(p.has(tcp_flags::FIN));
        let rst = u32::from(p.has(tcp_flags::RST));
        if fwd {
            if p.payload_len >= 1 {
                self.act_data_fwd += 1;
            }
            self.fwd_len.push(len);
            self.fwd_hdr += i64::from(p.header_len);
            if self.fwd_len.count() > 1 {
                self.fwd_iat.push((ts - self.fwd_last_seen) as f64);
            }
            self.fwd_last_seen = ts;
            self.min_seg_fwd = self.min_seg_fwd.min(p.header_len);
            self.fwd_psh += psh;
            self.fwd_urg += urg;
            self.fwd_fin += fin;
            self.fwd_rst += rst;
        } else {
            self.bwd_len.push(len);
            self.init_win_bwd = p.tcp_window;
            self.bwd_hdr += i64::from(p.header_len);
            if self.bwd_len.count() > 1 {
                self.bwd_iat.push((ts - self.bwd_last_seen) as f64);
            }
            self.bwd_last_seen = ts;
            self.bwd_psh += psh;
            self.bwd_urg += urg;
            self.bwd_fin += fin;
            self.bwd_rst += rst;
        }
        self.flow_iat.push((ts - self.last_seen) as f64);
        self.last_seen = ts;
    }

    /// Adds a packet's frame length (already added with [`FlowState::new`] or
    /// [`FlowState::add`]) to the per-direction frame byte counters.
    pub(crate) fn add_frame_bytes(&mut self, p: &PacketInfo, frame_len: u64) {
        if is_forward(self.src, self.src_port, p) {
            self.fwd_frame_bytes += frame_len;
        } else {
            self.bwd_frame_bytes += frame_len;
        }
    }

    /// Packets in the flow.
    pub(crate) fn packets(&self) -> u64 {
        self.fwd_len.count() + self.bwd_len.count()
    }

    /// Duration in µs.
    pub(crate) fn duration(&self) -> i64 {
        self.last_seen - self.start
    }

    /// Total TCP Flow Time at the end of this flow.
    pub(crate) fn total_tcp_time(&self) -> i64 {
        if self.protocol == 6 {
            self.cumulative + self.duration()
        } else {
            0
        }
    }

    /// The 81 feature values (see the module table).
    pub(crate) fn features(&self) -> [f64; FEATURE_COUNT] {
        let dur = self.duration() as f64;
        let secs = dur / 1e6;
        let fwd_n = self.fwd_len.count() as f64;
        let bwd_n = self.bwd_len.count() as f64;
        let n = fwd_n + bwd_n;
        let fwd_bytes = self.fwd_len.sum();
        let bwd_bytes = self.bwd_len.sum();
        let per_sec = |x: f64, none: f64| if dur == 0.0 { none } else { x / secs };
        let iat = |s: &RunningStats, pkts: f64| {
            if pkts > 1.0 {
                [s.sum(), s.mean(), s.std(), s.max(), s.min()]
            } else {
                [0.0; 5]
            }
        };
        let fi = iat(&self.fwd_iat, fwd_n);
        let bi = iat(&self.bwd_iat, bwd_n);
        let fc = self.flag_counts.map(f64::from);
        [
            dur,
            fwd_n,
            bwd_n,
            fwd_bytes,
            bwd_bytes,
            self.fwd_len.max(),
            self.fwd_len.min(),
            self.fwd_len.mean(),
            self.fwd_len.std(),
            self.bwd_len.max(),
            self.bwd_len.min(),
            self.bwd_len.mean(),
            self.bwd_len.std(),
            per_sec(fwd_bytes + bwd_bytes, -1.0),
            per_sec(n, -1.0),
            self.flow_iat.mean(),
            self.flow_iat.std(),
            self.flow_iat.max(),
            self.flow_iat.min(),
            fi[0],
            fi[1],
            fi[2],
            fi[3],
            fi[4],
            bi[0],
            bi[1],
            bi[2],
            bi[3],
            bi[4],
            f64::from(self.fwd_psh),
            f64::from(self.bwd_psh),
            f64::from(self.fwd_urg),
            f64::from(self.bwd_urg),
            f64::from(self.fwd_rst),
            f64::from(self.bwd_rst),
            self.fwd_hdr as f64,
            self.bwd_hdr as f64,
            per_sec(fwd_n, 0.0),
            per_sec(bwd_n, 0.0),
            self.all_len.min(),
            self.all_len.max(),
            self.all_len.mean(),
            self.all_len.std(),
            self.all_len.variance(),
            fc[0],
            fc[1],
            fc[2],
            fc[3],
            fc[4],
            fc[5],
            fc[6],
            fc[7],
            ratio(bwd_n, fwd_n),
            ratio(fwd_bytes + bwd_bytes, n),
            ratio(fwd_bytes, fwd_n),
            ratio(bwd_bytes, bwd_n),
            self.fwd_bulk.avg_bytes(),
            self.fwd_bulk.avg_packets(),
            self.fwd_bulk.rate(),
            self.bwd_bulk.avg_bytes(),
            self.bwd_bulk.avg_packets(),
            self.bwd_bulk.rate(),
            ratio(fwd_n, n),
            ratio(fwd_bytes, n),
            ratio(bwd_n, n),
            ratio(bwd_bytes, n),
            f64::from(self.init_win_fwd),
            f64::from(self.init_win_bwd),
            f64::from(self.act_data_fwd),
            f64::from(self.min_seg_fwd),
            self.active.mean(),
            self.active.std(),
            self.active.max(),
            self.active.min(),
            self.idle.mean(),
            self.idle.std(),
            self.idle.max(),
            self.idle.min(),
            f64::from(self.icmp_code),
            f64::from(self.icmp_type),
            self.total_tcp_time() as f64,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metaids_core::schema::CIC_FLOW_FEATURES;

    #[test]
    fn kinds_cover_every_column() {
        assert_eq!(FEATURE_KINDS.len(), CIC_FLOW_FEATURES.len());
        let float_cols: Vec<&str> = CIC_FLOW_FEATURES
            .iter()
            .zip(FEATURE_KINDS)
            .filter(|(_, k)| *k == FeatureKind::Float)
            .map(|(n, _)| *n)
            .collect();
        for name in float_cols {
            assert!(
                name.contains("Mean")
                    || name.contains("Std")
                    || name.contains("/s")
                    || name.contains("Variance")
                    || name.contains("Ratio")
                    || name.contains("Avg")
                    || name.contains("Average"),
                "{name}"
            );
        }
    }
}
