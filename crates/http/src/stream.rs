//! HTTP/1.x requests reassembled from the client side of TCP connections in a capture.
//!
//! A connection's client is the side that sent the SYN; when the handshake was not captured, the
//! side whose destination port is one of [`StreamConfig::ports`]. Its bytes are put back in
//! sequence order: retransmitted bytes are dropped, overlaps trimmed (the first copy wins, as most
//! stacks do), segments that arrive early are held (bounded per connection) until the gap fills.
//! The in-order bytes go through [`crate::raw::parse_request`]; a request is emitted as soon as it
//! is whole. Memory is bounded: per connection by [`StreamConfig::max_buffer`] and
//! [`StreamConfig::max_pending`], in all by [`StreamConfig::max_connections`] and an idle timeout.
//! Whatever cannot be read is counted in [`StreamStats`], never an error: a capture holds other
//! traffic, and one broken connection must not stop the rest.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use metaids_flow::{decode_segment, Packet, PacketInfo, TcpSegment};

use crate::raw::{parse_request, Limits, RawError};
use crate::HttpRequest;

/// Reassembly settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Server ports that mark the client side when the SYN was not captured.
    pub ports: Vec<u16>,
    /// Bounds on one request.
    pub limits: Limits,
    /// In-order bytes held for a request not yet whole; past it the connection is given up.
    pub max_buffer: usize,
    /// Out-of-order bytes held per connection; past it the connection is given up.
    pub max_pending: usize,
    /// Connections tracked at once; a new one past it is not tracked (counted).
    pub max_connections: usize,
    /// A connection with no packet for this long (capture time) is dropped.
    pub idle_timeout_us: i64,
}

impl Default for StreamConfig {
    /// Ports 80, 8000, 8008, 8080, 8888; default [`Limits`]; 256 KiB buffered and 256 KiB held
    /// out of order per connection; 65,536 connections; 120 s idle.
    fn default() -> Self {
        StreamConfig {
            ports: vec![80, 8000, 8008, 8080, 8888],
            limits: Limits::default(),
            max_buffer: 256 * 1024,
            max_pending: 256 * 1024,
            max_connections: 65_536,
            idle_timeout_us: 120_000_000,
        }
    }
}

/// A request and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssembledRequest {
    /// The request.
    pub request: HttpRequest,
    /// Client address and port.
    pub client: (IpAddr, u16),
    /// Server address and port.
    pub server: (IpAddr, u16),
    /// Capture time of the segment that completed the request (µs since the epoch).
    pub ts_us: i64,
}

/// What reassembly counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Client segments with payload seen.
    pub segments: u64,
    /// Requests emitted.
    pub requests: u64,
    /// Payload bytes already seen, dropped (retransmissions and overlaps).
    pub retransmitted_bytes: u64,
    /// Connections given up because their bytes are not HTTP/1.x requests (framing lost).
    pub not_http: u64,
    /// Connections given up because a request or the held bytes passed a bound.
    pub over_limit: u64,
    /// Connections closed or dropped with part of a request unread.
    pub incomplete: u64,
    /// Connections dropped idle.
    pub idle: u64,
    /// Connections not tracked because the table was full.
    pub table_full: u64,
    /// Segments whose captured payload was shorter than on the wire (a snap length): the
    /// connection is given up from there.
    pub truncated: u64,
}

/// One direction (client → server) of a connection.
#[derive(Debug)]
struct Conn {
    /// Next expected sequence number; `None` until the first data segment or SYN.
    next_seq: Option<u32>,
    /// In-order bytes not yet parsed.
    buf: Vec<u8>,
    /// Early segments (past a gap), by sequence number.
    pending: BTreeMap<u32, Vec<u8>>,
    pending_bytes: usize,
    /// Given up: the rest of the connection is ignored.
    dead: bool,
    last_us: i64,
}

type Key = (IpAddr, u16, IpAddr, u16);

/// The reassembler: push every packet of a capture in order, then [`RequestAssembler::finish`].
#[derive(Debug)]
pub struct RequestAssembler {
    config: StreamConfig,
    conns: HashMap<Key, Conn>,
    stats: StreamStats,
    last_sweep_us: i64,
}

const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const FIN: u8 = 0x01;
const ACK: u8 = 0x10;

impl RequestAssembler {
    /// An empty assembler.
    pub fn new(config: StreamConfig) -> Self {
        RequestAssembler {
            config,
            conns: HashMap::new(),
            stats: StreamStats::default(),
            last_sweep_us: i64::MIN,
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Connections tracked now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    /// Takes one captured packet; requests it completes go to `out`. Frames that do not decode
    /// are ignored (the flow engine counts them).
    pub fn push(&mut self, pkt: &Packet<'_>, out: &mut Vec<AssembledRequest>) {
        let Ok((info, Some(seg))) = decode_segment(pkt.link_type, pkt.data) else {
            return;
        };
        self.sweep(pkt.ts_us);
        self.push_segment(&info, seg, pkt.ts_us, out);
    }

    /// Takes one decoded TCP segment (what [`RequestAssembler::push`] does after decoding).
    pub fn push_segment(
        &mut self,
        info: &PacketInfo,
        seg: TcpSegment<'_>,
        ts_us: i64,
        out: &mut Vec<AssembledRequest>,
    ) {
        let fwd: Key = (info.src, info.src_port, info.dst, info.dst_port);
        let rev: Key = (info.dst, info.dst_port, info.src, info.src_port);
        let Self {
            config,
            conns,
            stats,
            ..
        } = self;
        // From the server: only a reset matters (it ends the connection).
        if conns.contains_key(&rev) {
            if info.has(RST) {
                close(conns, stats, &rev);
            }
            return;
        }
        let full = conns.len() >= config.max_connections;
        let conn = match conns.entry(fwd) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                // A new connection: from its SYN, or its first data to a server port.
                let syn_only = info.has(SYN) && !info.has(ACK);
                let to_server_port =
                    config.ports.contains(&info.dst_port) && !config.ports.contains(&info.src_port);
                if !(syn_only || (to_server_port && !seg.payload.is_empty())) {
                    return;
                }
                if full {
                    stats.table_full += 1;
                    return;
                }
                e.insert(Conn::new(ts_us))
            }
        };
        conn.last_us = ts_us;
        if info.has(SYN) {
            // The first data byte follows the SYN's sequence number.
            if conn.next_seq.is_none() {
                conn.next_seq = Some(seg.seq.wrapping_add(1));
            }
        } else if !seg.payload.is_empty() && !conn.dead {
            stats.segments += 1;
            if (seg.payload.len() as u64) < u64::from(info.payload_len) {
                stats.truncated += 1;
                give_up(conn);
            } else {
                take_segment(conn, seg, config, stats);
                drain(conn, info, ts_us, config, stats, out);
            }
        }
        if info.has(FIN) || info.has(RST) {
            close(conns, stats, &fwd);
        }
    }

    /// Drops connections idle past the timeout (at most once a second of capture time).
    fn sweep(&mut self, now: i64) {
        if now.saturating_sub(self.last_sweep_us) < 1_000_000 {
            return;
        }
        self.last_sweep_us = now;
        let limit = self.config.idle_timeout_us;
        let stale: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_us) > limit)
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            self.stats.idle += 1;
            close(&mut self.conns, &mut self.stats, &k);
        }
    }

    /// Ends the capture: every connection still open is closed (partial requests counted).
    pub fn finish(mut self) -> StreamStats {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for k in keys {
            close(&mut self.conns, &mut self.stats, &k);
        }
        self.stats
    }
}

impl Conn {
    fn new(ts_us: i64) -> Self {
        Conn {
            next_seq: None,
            buf: Vec::new(),
            pending: BTreeMap::new(),
            pending_bytes: 0,
            dead: false,
            last_us: ts_us,
        }
    }
}

/// Ends a connection, counting an unread partial request.
fn close(conns: &mut HashMap<Key, Conn>, stats: &mut StreamStats, key: &Key) {
    if let Some(c) = conns.remove(key) {
        if !c.dead && (!c.buf.is_empty() || !c.pending.is_empty()) {
            stats.incomplete += 1;
        }
    }
}

/// Signed distance from `b` to `a` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

/// Puts a segment's payload in place: appended when it is next (its already-seen head trimmed),
/// held when early, dropped when already seen; held segments that now fit are appended.
fn take_segment(
    conn: &mut Conn,
    seg: TcpSegment<'_>,
    config: &StreamConfig,
    stats: &mut StreamStats,
) {
    let next = *conn.next_seq.get_or_insert(seg.seq);
    let d = seq_diff(seg.seq, next);
    if d > 0 {
        if conn.pending.contains_key(&seg.seq) {
            stats.retransmitted_bytes += seg.payload.len() as u64;
            return;
        }
        conn.pending_bytes += seg.payload.len();
        if conn.pending_bytes > config.max_pending {
            stats.over_limit += 1;
            give_up(conn);
            return;
        }
        conn.pending.insert(seg.seq, seg.payload.to_vec());
        return;
    }
    append(conn, seg.seq, seg.payload, stats);
    // Held segments that are now due (or already covered).
    while let Some((&seq, _)) = conn
        .pending
        .iter()
        .find(|(&s, _)| seq_diff(s, conn.next_seq.unwrap_or(s)) <= 0)
    {
        let data = conn.pending.remove(&seq).unwrap_or_default();
        conn.pending_bytes -= data.len();
        append(conn, seq, &data, stats);
    }
}

/// Appends the part of `payload` (starting at `seq`) past `next_seq`.
fn append(conn: &mut Conn, seq: u32, payload: &[u8], stats: &mut StreamStats) {
    let next = conn.next_seq.unwrap_or(seq);
    let seen = usize::try_from(seq_diff(next, seq)).unwrap_or(0);
    if seen >= payload.len() {
        stats.retransmitted_bytes += payload.len() as u64;
        return;
    }
    stats.retransmitted_bytes += seen as u64;
    let fresh = &payload[seen..];
    conn.buf.extend_from_slice(fresh);
    conn.next_seq = Some(next.wrapping_add(fresh.len() as u32));
}

fn give_up(conn: &mut Conn) {
    conn.dead = true;
    conn.buf = Vec::new();
    conn.pending = BTreeMap::new();
    conn.pending_bytes = 0;
}

/// Parses every whole request at the front of the buffer.
fn drain(
    conn: &mut Conn,
    info: &PacketInfo,
    ts_us: i64,
    config: &StreamConfig,
    stats: &mut StreamStats,
    out: &mut Vec<AssembledRequest>,
) {
    let mut at = 0;
    loop {
        // Blank lines between requests are allowed (RFC 9112 §2.2).
        while conn.buf.get(at).is_some_and(|b| matches!(b, b'\r' | b'\n')) {
            at += 1;
        }
        if at >= conn.buf.len() {
            break;
        }
        match parse_request(&conn.buf[at..], &config.limits) {
            Ok((request, n)) => {
                at += n;
                stats.requests += 1;
                out.push(AssembledRequest {
                    request,
                    client: (info.src, info.src_port),
                    server: (info.dst, info.dst_port),
                    ts_us,
                });
            }
            Err(RawError::Incomplete { .. }) => {
                if conn.buf.len() - at > config.max_buffer {
                    stats.over_limit += 1;
                    give_up(conn);
                    return;
                }
                break;
            }
            Err(_) => {
                stats.not_http += 1;
                give_up(conn);
                return;
            }
        }
    }
    conn.buf.drain(..at);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(from_client: bool, flags: u8, payload_len: usize) -> PacketInfo {
        let (c, s): (IpAddr, IpAddr) = ([10, 0, 0, 2].into(), [10, 0, 0, 1].into());
        let (src, dst, sp, dp) = if from_client {
            (c, s, 40_000, 80)
        } else {
            (s, c, 80, 40_000)
        };
        PacketInfo {
            src_port: sp,
            dst_port: dp,
            payload_len: payload_len as u32,
            header_len: 20,
            tcp_flags: flags,
            ..PacketInfo::new(src, dst, 6)
        }
    }

    /// Feeds `(seq, payload)` client segments after a SYN at `isn`; returns the targets.
    fn run(isn: u32, segs: &[(u32, &[u8])], config: StreamConfig) -> (Vec<String>, StreamStats) {
        let mut a = RequestAssembler::new(config);
        let mut out = Vec::new();
        a.push_segment(
            &info(true, SYN, 0),
            TcpSegment {
                seq: isn,
                payload: &[],
            },
            0,
            &mut out,
        );
        for (i, (off, p)) in segs.iter().enumerate() {
            let seg = TcpSegment {
                seq: isn.wrapping_add(1).wrapping_add(*off),
                payload: p,
            };
            a.push_segment(&info(true, ACK, p.len()), seg, i as i64, &mut out);
            // Server data in between is ignored.
            a.push_segment(
                &info(false, ACK, 3),
                TcpSegment {
                    seq: 7,
                    payload: b"xyz",
                },
                0,
                &mut out,
            );
        }
        let stats = a.finish();
        (out.into_iter().map(|r| r.request.target).collect(), stats)
    }

    const TWO: &[u8] =
        b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";

    #[test]
    fn in_order_segments_give_each_request_once() {
        let segs: Vec<(u32, &[u8])> = TWO
            .chunks(7)
            .enumerate()
            .map(|(i, c)| ((i * 7) as u32, c))
            .collect();
        let (got, stats) = run(1000, &segs, StreamConfig::default());
        assert_eq!(got, ["/a", "/b"]);
        assert_eq!(
            (stats.requests, stats.incomplete, stats.not_http),
            (2, 0, 0)
        );
    }

    #[test]
    fn reordering_retransmission_overlap_and_wraparound_change_nothing() {
        let c = |a: usize, b: usize| -> (u32, &[u8]) { (a as u32, &TWO[a..b]) };
        let segs = [
            c(20, 40),
            c(0, 10),
            c(0, 10),
            c(5, 25),
            c(60, TWO.len()),
            c(40, 70),
            c(30, 35),
        ];
        for isn in [1000, u32::MAX - 30] {
            let (got, stats) = run(isn, &segs, StreamConfig::default());
            assert_eq!(got, ["/a", "/b"], "isn {isn}");
            assert!(
                stats.retransmitted_bytes >= 10 + 5 + 5 + 10 + 5,
                "{stats:?}"
            );
            assert_eq!(stats.incomplete, 0);
        }
    }

    #[test]
    fn not_http_and_over_the_bounds_give_up_the_connection() {
        let (got, stats) = run(1, &[(0, b"\x16\x03\x01 hello")], StreamConfig::default());
        assert!(got.is_empty());
        assert_eq!(stats.not_http, 1);
        let small = StreamConfig {
            max_pending: 8,
            max_buffer: 16,
            ..StreamConfig::default()
        };
        let (got, stats) = run(1, &[(100, b"0123456789")], small.clone());
        assert!(got.is_empty());
        assert_eq!(stats.over_limit, 1);
        let (got, stats) = run(
            1,
            &[(0, b"GET /a-long-path-over-the-buffer HTTP/1.1\r\n")],
            small,
        );
        assert!(got.is_empty());
        assert_eq!(stats.over_limit, 1);
        let (got, stats) = run(1, &[(0, b"GET /a HTTP/1.1\r\nHo")], StreamConfig::default());
        assert!(got.is_empty());
        assert_eq!(stats.incomplete, 1);
    }
}
