//! Suricata EVE JSON records for metaids verdicts: the per-flow facts an alert needs ([`FlowMeta`]),
//! the `alert` and `flow` event types with Suricata's field names and types, and metaids' own
//! `metaids` object (alert id, verdict, distances, nearest prototypes, top features, versions and
//! the flow's embedding, so a confirmed or rejected alert can become a support or negative example).
//!
//! It formats records; it does not open files or decide anything.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use metaids_core::FlowFrame;
use metaids_flow::FlowRecord;
use serde::{Deserialize, Serialize};

use crate::detector::{Explanation, FeatureEffect, NearestPrototype, Verdict, VerdictKind};

/// Where a flow came from: a capture or live source and the engine's flow number, or a flow file
/// and its line. Written `SOURCE:INDEX`; the source's name is shared, not copied, per flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The capture's path, `live:IFACE`, or the flow file's path.
    pub source: Arc<str>,
    /// The flow number within a capture, or the 1-based line of a flow file.
    pub index: u64,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.index)
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where [`FlowMeta::from_frame`] finds a frame's flow facts: per file, the positions of `Src IP`,
/// `Src Port`, `Dst IP` and `Timestamp` among its identifiers; the categorical `Dst Port` and
/// `Protocol`; the files' names (shared by every origin).
#[derive(Debug, Clone)]
pub struct FrameColumns {
    identifiers: Vec<[Option<usize>; 4]>,
    dst_port: Option<usize>,
    protocol: Option<usize>,
    icmp_code: Option<usize>,
    icmp_type: Option<usize>,
    files: Vec<Arc<str>>,
}

/// Positions of `ICMP Code` and `ICMP Type` among the flow engine's features
/// ([`metaids_core::schema::CIC_FLOW_FEATURES`]; a test checks them).
const ICMP_CODE: usize = 78;
const ICMP_TYPE: usize = 79;

impl FrameColumns {
    /// Finds the columns of `frame` (names compared ignoring ASCII case for identifiers).
    pub fn new(frame: &FlowFrame) -> Self {
        let identifiers = frame
            .files
            .iter()
            .map(|f| {
                ["Src IP", "Src Port", "Dst IP", "Timestamp"].map(|want| {
                    f.identifier_names
                        .iter()
                        .position(|n| n.eq_ignore_ascii_case(want))
                })
            })
            .collect();
        let cat = |name: &str| frame.layout.categorical.iter().position(|c| c == name);
        let num = |name: &str| frame.layout.numeric.iter().position(|c| c == name);
        FrameColumns {
            identifiers,
            dst_port: cat("Dst Port"),
            protocol: cat("Protocol"),
            icmp_code: num("ICMP Code"),
            icmp_type: num("ICMP Type"),
            files: frame
                .files
                .iter()
                .map(|f| Arc::from(f.path.as_str()))
                .collect(),
        }
    }
}

/// The facts about one flow that verdicts and alerts report: numbers and addresses, formatted only
/// by the writers.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowMeta {
    /// EVE `flow_id`: [`stable_flow_id`] of the 5-tuple and start, the same for the same flow in
    /// every run (feedback, SIEM joins and re-runs agree on it).
    pub flow_id: u64,
    /// Run-wide flow number (1-based, in detection order).
    pub seq: u64,
    /// Forward source address (the first packet's sender); `None` when a flow row has none.
    pub src_ip: Option<IpAddr>,
    /// Forward source port.
    pub src_port: u16,
    /// Forward destination address.
    pub dest_ip: Option<IpAddr>,
    /// Forward destination port.
    pub dest_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// ICMP or ICMPv6 `(type, code)` of the flow's first ICMP packet (`None` for other protocols,
    /// or when a flow row does not say).
    pub icmp: Option<(u8, u8)>,
    /// Start of the flow, µs since the Unix epoch (`None`: unknown, the detection time is used).
    pub start_us: Option<i64>,
    /// Flow duration, µs.
    pub duration_us: f64,
    /// Packets from source to destination.
    pub pkts_toserver: u64,
    /// Packets from destination to source.
    pub pkts_toclient: u64,
    /// Bytes from source to destination (frame bytes from captures, payload bytes from CSVs).
    pub bytes_toserver: u64,
    /// Bytes from destination to source.
    pub bytes_toclient: u64,
    /// Where the flow came from.
    pub origin: Origin,
    /// The request, when the unit decided is a web request rather than a flow (its EVE `http`
    /// object and the values its verdict was chosen among).
    pub http: Option<Arc<HttpFacts>>,
}

/// A web request's facts: Suricata's EVE `http` object and the values the payload model scored,
/// in the order of the request's feature rows.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HttpFacts {
    /// EVE `http`.
    pub http: EveHttp,
    /// The scored values (field and length-capped, escaped excerpt), one per feature row.
    pub values: Vec<MatchedValue>,
}

/// Longest excerpt of a matched value in an alert, in bytes of the escaped text.
pub const MAX_EXCERPT: usize = 256;

/// `text` made safe to show: control characters written as `\xNN` (a backslash doubled), cut at
/// [`MAX_EXCERPT`] bytes at a character boundary; the flag says it was cut.
pub fn excerpt(text: &str) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len().min(MAX_EXCERPT));
    let mut piece = String::with_capacity(16);
    for c in text.chars() {
        piece.clear();
        if c == '\\' {
            piece.push_str("\\\\");
        } else if c.is_control() {
            let mut utf8 = [0u8; 4];
            for b in c.encode_utf8(&mut utf8).bytes() {
                let _ = write!(piece, "\\x{b:02x}");
            }
        } else {
            piece.push(c);
        }
        if out.len() + piece.len() > MAX_EXCERPT {
            return (out, true);
        }
        out.push_str(&piece);
    }
    (out, false)
}

/// Suricata's EVE `http` object, the fields metaids knows of a request (the others omitted).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct EveHttp {
    /// The `Host` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The request target as sent.
    pub url: String,
    /// The method.
    pub http_method: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The `User-Agent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_user_agent: Option<String>,
    /// The `Referer` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_refer: Option<String>,
    /// The `Content-Type` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_content_type: Option<String>,
    /// The response status (access logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The response length (access logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
}

/// The request value a web-request verdict was decided on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedValue {
    /// `query:NAME`, `form:NAME` or `body` (a bare name: `query:`).
    pub field: String,
    /// The decoded value, escaped and cut ([`excerpt`]).
    pub excerpt: String,
    /// The excerpt was cut (or the value itself was, before scoring).
    pub truncated: bool,
}

impl MatchedValue {
    /// The value `text` of `field`, its excerpt made ([`excerpt`]); `cut`: the value itself was cut
    /// before scoring.
    pub fn new(field: String, text: &str, cut: bool) -> Self {
        let (excerpt, truncated) = excerpt(text);
        MatchedValue {
            field,
            excerpt,
            truncated: truncated || cut,
        }
    }
}

/// The `(type, code)` pair from the flow features `ICMP Code` and `ICMP Type` (−1: none) of an
/// ICMP or ICMPv6 flow.
fn icmp_pair(proto: u8, code: f64, kind: f64) -> Option<(u8, u8)> {
    let byte = |v: f64| (v.is_finite() && (0.0..=255.0).contains(&v)).then_some(v as u8);
    match proto {
        1 | 58 => Some((byte(kind)?, byte(code)?)),
        _ => None,
    }
}

fn count(v: f64) -> u64 {
    if v.is_finite() && v > 0.0 {
        v as u64
    } else {
        0
    }
}

/// An address as EVE writes it (`""` when unknown).
pub fn ip_text(ip: Option<IpAddr>) -> String {
    ip.map_or_else(String::new, |ip| ip.to_string())
}

impl FlowMeta {
    /// From a flow engine record; `source` names its capture.
    pub fn from_record(seq: u64, r: &FlowRecord, source: &Arc<str>) -> Self {
        let f = &r.features;
        FlowMeta {
            flow_id: stable_flow_id(r.src, r.src_port, r.dst, r.dst_port, r.protocol, r.start_us),
            seq,
            src_ip: Some(r.src),
            src_port: r.src_port,
            dest_ip: Some(r.dst),
            dest_port: r.dst_port,
            proto: r.protocol,
            icmp: icmp_pair(r.protocol, f[ICMP_CODE], f[ICMP_TYPE]),
            start_us: Some(r.start_us),
            duration_us: f[0].max(0.0),
            pkts_toserver: count(f[1]),
            pkts_toclient: count(f[2]),
            bytes_toserver: if r.fwd_frame_bytes > 0 {
                r.fwd_frame_bytes
            } else {
                count(f[3])
            },
            bytes_toclient: if r.bwd_frame_bytes > 0 {
                r.bwd_frame_bytes
            } else {
                count(f[4])
            },
            origin: Origin {
                source: Arc::clone(source),
                index: r.id,
            },
            http: None,
        }
    }

    /// A web request (TCP from `client` to `server`, either unknown) sent at `ts_us`, named by
    /// `origin`, with its facts. Its id is [`stable_flow_id`] of the addresses and the time; a
    /// request without a time (a request file) is told apart by its origin's index instead.
    pub fn request(
        origin: Origin,
        client: Option<(IpAddr, u16)>,
        server: Option<(IpAddr, u16)>,
        ts_us: Option<i64>,
        http: HttpFacts,
    ) -> Self {
        let unspecified = IpAddr::from([0u8; 4]);
        let (src, src_port) = client.unwrap_or((unspecified, 0));
        let (dst, dest_port) = server.unwrap_or((unspecified, 0));
        FlowMeta {
            flow_id: stable_flow_id(
                src,
                src_port,
                dst,
                dest_port,
                6,
                ts_us.unwrap_or(origin.index as i64),
            ),
            seq: 0,
            src_ip: client.map(|c| c.0),
            src_port,
            dest_ip: server.map(|s| s.0),
            dest_port,
            proto: 6,
            icmp: None,
            start_us: ts_us,
            duration_us: 0.0,
            pkts_toserver: 0,
            pkts_toclient: 0,
            bytes_toserver: 0,
            bytes_toclient: 0,
            origin,
            http: Some(Arc::new(http)),
        }
    }

    /// From row `r` of a CIC frame read from a CSV (identifiers `Src IP`, `Src Port`, `Dst IP`,
    /// `Timestamp`; categorical `Dst Port`, `Protocol`), with `columns` found once per frame.
    /// Missing or unparsable values read as `None` or 0; an unparsable timestamp as `None`.
    pub fn from_frame(seq: u64, frame: &FlowFrame, r: usize, columns: &FrameColumns) -> Self {
        let source = frame.sources[r];
        let mut ids = [""; 4];
        if let Some(want) = columns.identifiers.get(source.file as usize) {
            for (k, v) in frame.identifier_values(r).enumerate() {
                for (slot, w) in ids.iter_mut().zip(want) {
                    if *w == Some(k) {
                        *slot = v;
                    }
                }
            }
        }
        let [src_ip, src_port, dest_ip, timestamp] = ids;
        let cat = |j: Option<usize>| j.map_or("", |j| frame.categorical_value(r, j));
        let num = frame.numeric_row(r);
        let f = |i: usize| num.get(i).map_or(0.0, |&v| f64::from(v));
        let src_ip: Option<IpAddr> = src_ip.parse().ok();
        let dest_ip: Option<IpAddr> = dest_ip.parse().ok();
        let (src_port, dest_port) = (
            src_port.parse().unwrap_or(0),
            cat(columns.dst_port).parse().unwrap_or(0),
        );
        let proto = cat(columns.protocol).parse().unwrap_or(0);
        let start_us = parse_timestamp_us(timestamp);
        let unspecified = IpAddr::from([0u8; 4]);
        FlowMeta {
            flow_id: stable_flow_id(
                src_ip.unwrap_or(unspecified),
                src_port,
                dest_ip.unwrap_or(unspecified),
                dest_port,
                proto,
                start_us.unwrap_or(0),
            ),
            seq,
            src_ip,
            src_port,
            dest_ip,
            dest_port,
            proto,
            icmp: icmp_pair(
                proto,
                columns.icmp_code.map_or(-1.0, f),
                columns.icmp_type.map_or(-1.0, f),
            ),
            start_us,
            duration_us: f(0).max(0.0),
            pkts_toserver: count(f(1)),
            pkts_toclient: count(f(2)),
            bytes_toserver: count(f(3)),
            bytes_toclient: count(f(4)),
            origin: Origin {
                source: columns
                    .files
                    .get(source.file as usize)
                    .cloned()
                    .unwrap_or_else(|| Arc::from("flows")),
                index: source.line,
            },
            http: None,
        }
    }
}

/// A flow id stable across runs: FNV-1a over the forward 5-tuple and the start time (µs), cut to 52
/// bits so every JSON reader (JavaScript's included) reads it exactly. A flow keeps its id whichever
/// run, batch or file order sees it; two flows share one only if they share 5-tuple and start.
pub fn stable_flow_id(
    src: IpAddr,
    src_port: u16,
    dst: IpAddr,
    dst_port: u16,
    proto: u8,
    start_us: i64,
) -> u64 {
    fn addr(ip: IpAddr) -> [u8; 16] {
        match ip {
            IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
            IpAddr::V6(a) => a.octets(),
        }
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&addr(src));
    eat(&src_port.to_be_bytes());
    eat(&addr(dst));
    eat(&dst_port.to_be_bytes());
    eat(&[proto]);
    eat(&start_us.to_be_bytes());
    // Never 0, which readers take for "no flow".
    (h & ((1 << 52) - 1)).max(1)
}

pub use metaids_core::time::parse_timestamp_us;

/// Suricata's timestamp format: `2026-11-28T23:35:53.123456+0000` (UTC).
pub fn eve_timestamp(us: i64) -> String {
    let mut s = String::with_capacity(31);
    metaids_core::time::push_timestamp_us(&mut s, us, 'T');
    s.push_str("+0000");
    s
}

/// Suricata's protocol names: `TCP`, `UDP`, `ICMP`, `IPv6-ICMP`, `SCTP`, `GRE`, else the number.
pub fn proto_name(proto: u8) -> String {
    match proto {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "IPv6-ICMP".into(),
        132 => "SCTP".into(),
        47 => "GRE".into(),
        n => n.to_string(),
    }
}

/// EVE `alert` object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EveAlert {
    /// Always `allowed`: metaids detects; responses act on later traffic.
    pub action: String,
    /// Generator id (1, as Suricata's rules).
    pub gid: u32,
    /// Stable per threat; [`crate::UNKNOWN_SIGNATURE_ID`] for unknown anomalies.
    pub signature_id: u32,
    /// Revision of the threat.
    pub rev: u32,
    /// `metaids <threat name>` or `metaids unknown anomaly`.
    pub signature: String,
    /// The threat's category, or `Unknown anomaly`.
    pub category: String,
    /// 1 (high) … 4 (low).
    pub severity: u8,
    /// Suricata-style metadata: each key maps to a list of strings.
    pub metadata: BTreeMap<String, Vec<String>>,
    /// Suricata's open object for extra context: metaids' own details under `metaids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<EveAlertContext>,
}

/// `alert.context` of metaids alerts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EveAlertContext {
    /// metaids' verdict, versions, explanation and the flow's embedding.
    pub metaids: MetaidsInfo,
}

/// EVE `flow` object (for `event_type: "flow"` records).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EveFlow {
    /// Packets source → destination.
    pub pkts_toserver: u64,
    /// Packets destination → source.
    pub pkts_toclient: u64,
    /// Bytes source → destination.
    pub bytes_toserver: u64,
    /// Bytes destination → source.
    pub bytes_toclient: u64,
    /// First packet.
    pub start: String,
    /// Last packet.
    pub end: String,
    /// Duration in whole seconds.
    pub age: u64,
    /// Always `closed`.
    pub state: String,
    /// Always `timeout` (Suricata's wording for a flow ended by the engine).
    pub reason: String,
    /// Whether metaids alerted on the flow.
    pub alerted: bool,
}

/// metaids' own object in every record it writes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetaidsInfo {
    /// Unique within the file: `<run id>-<sequence>` (alerts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert_id: Option<String>,
    /// `benign`, `threat` or `unknown`.
    pub verdict: VerdictKind,
    /// The flagged threat (threat verdicts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat: Option<String>,
    /// Library id of the flagged threat (threat verdicts only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threat_id: Option<u32>,
    /// The nearest threat of a benign or unknown verdict (none without threats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nearest_threat: Option<String>,
    /// Squared distance to the flagged or nearest threat's nearest prototype (`null` without
    /// threats).
    pub distance: Option<f32>,
    /// Squared distance to the nearest benign prototype.
    pub benign_distance: f32,
    /// Margin of the deciding rule.
    pub score: f32,
    /// Percentile of the deciding statistic among benign calibration rows.
    pub confidence: f32,
    /// Nearest prototypes (alerts only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nearest: Vec<NearestPrototype>,
    /// Features that moved the margin most (alerts only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub top_features: Vec<FeatureEffect>,
    /// Model version (weights sha256 prefix).
    pub model: String,
    /// Threat library version.
    pub library_version: u64,
    /// The threat library's id (empty when the threats came from no library).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub library: String,
    /// Where the flow came from.
    pub origin: String,
    /// How `app_proto` was found: `port` (a guess from the server port), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_proto_by: Option<String>,
    /// The flow's embedding (alerts only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embedding: Vec<f32>,
    /// The flow's raw feature values (alerts of flows whose threats a site forest names), so that
    /// a flow `metaids feedback` confirms or rejects reaches the forest's feature space (a support
    /// row, a veto) and survives a change of the site adaptation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<metaids_decide::FlowValues>,
    /// The flow's source context as the forest read it (with `values`, when it reads one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_context: Vec<f32>,
    /// For a web request: the value its verdict was decided on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub matched: Option<MatchedValue>,
}

/// One EVE record, with Suricata's field names and types: alert, flow and stats records validate
/// against the JSON schema in Suricata's repository (`etc/schema.json`), except the top-level
/// `metaids` object of flow records, for which the schema has no open place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EveEvent {
    /// `YYYY-MM-DDTHH:MM:SS.ffffff+0000`: for alerts, the flow's last packet (when metaids could
    /// decide it, in the traffic's clock, as Suricata stamps alerts with packet time); for flow
    /// records, the flow's start.
    pub timestamp: String,
    /// [`stable_flow_id`] of the flow: the same in every run.
    pub flow_id: u64,
    /// `alert` or `flow`.
    pub event_type: String,
    /// The capture interface, for flows captured live (`live:IFACE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_iface: Option<String>,
    /// Source address.
    pub src_ip: String,
    /// Source port (omitted for ICMP, as Suricata does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// Destination address.
    pub dest_ip: String,
    /// Destination port (omitted for ICMP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    /// `TCP`, `UDP`, `ICMP`, ….
    pub proto: String,
    /// ICMP type of the flow's first ICMP packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    /// ICMP code of the flow's first ICMP packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// The Community ID of the flow ([`community_id`]; omitted where it cannot be computed: an
    /// unknown address, or an ICMP flow whose type and code are unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub community_id: Option<String>,
    /// The application protocol, guessed from the server port ([`app_proto_guess`]; metaids does
    /// not parse payloads: `metaids.app_proto_by` says `port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_proto: Option<String>,
    /// The sensor that wrote the record (omitted when none is configured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The alert (`event_type: "alert"`), metaids' details under `alert.context.metaids`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<EveAlert>,
    /// The flow: packets and bytes each way, start and end (`flow` records, and alerts of flows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<EveFlow>,
    /// The request (`http` records, and alerts of web requests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<EveHttp>,
    /// metaids' verdict details of a flow record (alerts keep theirs in `alert.context`; alerts
    /// written by earlier builds have it here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metaids: Option<MetaidsInfo>,
}

impl EveEvent {
    /// metaids' details: `alert.context.metaids` of an alert, else the record's own `metaids`.
    pub fn metaids(&self) -> Option<&MetaidsInfo> {
        self.alert
            .as_ref()
            .and_then(|a| a.context.as_ref())
            .map(|c| &c.metaids)
            .or(self.metaids.as_ref())
    }

    /// The source port, 0 when omitted (ICMP).
    pub fn src_port(&self) -> u16 {
        self.src_port.unwrap_or(0)
    }

    /// The destination port, 0 when omitted (ICMP).
    pub fn dest_port(&self) -> u16 {
        self.dest_port.unwrap_or(0)
    }
}

/// What [`alert_event`] needs besides the flow and the verdict.
#[derive(Debug, Clone, Copy)]
pub struct AlertContext<'a> {
    /// The threat names, ids, signatures of the detector.
    pub threats: &'a [crate::Threat],
    /// Model version.
    pub model: &'a str,
    /// Library version.
    pub library_version: u64,
    /// The library's id (empty when unknown).
    pub library: &'a str,
    /// Severity of unknown-anomaly alerts.
    pub unknown_severity: u8,
    /// Timestamp used when the flow's own is unknown (µs since the epoch).
    pub now_us: i64,
    /// The sensor's name (EVE `host`; empty: omitted).
    pub host: &'a str,
}

fn fmt_f(v: f32) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        "inf".into()
    }
}

fn info(
    ctx: &AlertContext<'_>,
    flow: &FlowMeta,
    v: &Verdict,
    alert_id: Option<String>,
) -> MetaidsInfo {
    let t = v.threat.and_then(|i| ctx.threats.get(i));
    let flagged = (v.kind == VerdictKind::Threat).then_some(t).flatten();
    let nearest = (v.kind != VerdictKind::Threat).then_some(t).flatten();
    MetaidsInfo {
        alert_id,
        verdict: v.kind,
        threat: flagged.map(|t| t.name.clone()),
        threat_id: flagged.map(|t| t.id),
        nearest_threat: nearest.map(|t| t.name.clone()),
        distance: v.distance.is_finite().then_some(v.distance),
        benign_distance: v.benign_distance,
        score: v.score,
        confidence: v.confidence,
        nearest: Vec::new(),
        top_features: Vec::new(),
        model: ctx.model.to_string(),
        library_version: ctx.library_version,
        library: ctx.library.to_string(),
        origin: flow.origin.to_string(),
        app_proto_by: (flow.http.is_none())
            .then(|| app_proto_guess(flow.proto, flow.dest_port).map(|_| "port".to_string()))
            .flatten(),
        embedding: Vec::new(),
        values: None,
        source_context: Vec::new(),
        matched: None,
    }
}

/// The Community ID (version 1, seed 0) of a flow's 5-tuple, through the `community-id` crate:
/// the same string Suricata, Zeek and other sensors write for the same connection, so a SIEM can
/// join their records. `None` without both addresses, for ICMP without its type and code, and
/// where the crate refuses the tuple.
pub fn community_id(flow: &FlowMeta) -> Option<String> {
    let (src, dst) = (flow.src_ip?, flow.dest_ip?);
    let (sport, dport) = match flow.proto {
        1 | 58 => {
            let (kind, code) = flow.icmp?;
            (Some(u16::from(kind)), Some(u16::from(code)))
        }
        6 | 17 | 132 => (Some(flow.src_port), Some(flow.dest_port)),
        _ => (None, None),
    };
    community_id::calculate_community_id(0, src, dst, sport, dport, flow.proto, false).ok()
}

/// Suricata's `app_proto` name for a well-known server port of TCP or UDP, or `None`. A guess:
/// nothing checks that the traffic speaks it.
pub fn app_proto_guess(proto: u8, dest_port: u16) -> Option<&'static str> {
    let name = match (proto, dest_port) {
        (6, 80 | 8080 | 8000) => "http",
        (6, 443 | 8443) => "tls",
        (6, 22) => "ssh",
        (6, 21) => "ftp",
        (6, 25 | 587) => "smtp",
        (6, 143) => "imap",
        (6, 110) => "pop3",
        (6, 445 | 139) => "smb",
        (6, 3389) => "rdp",
        (6, 1883) => "mqtt",
        (6, 502) => "modbus",
        (6 | 17, 53) => "dns",
        (6 | 17, 88) => "krb5",
        (6 | 17, 2049) => "nfs",
        (17, 123) => "ntp",
        (17, 161) => "snmp",
        (17, 67 | 68) => "dhcp",
        (17, 69) => "tftp",
        (17, 500 | 4500) => "ike",
        (6 | 17, 5060) => "sip",
        _ => return None,
    };
    Some(name)
}

/// The EVE `flow` object of a flow.
fn eve_flow(ctx: &AlertContext<'_>, flow: &FlowMeta, alerted: bool) -> EveFlow {
    let start = flow.start_us.unwrap_or(ctx.now_us);
    let end = start.saturating_add(flow.duration_us as i64);
    EveFlow {
        pkts_toserver: flow.pkts_toserver,
        pkts_toclient: flow.pkts_toclient,
        bytes_toserver: flow.bytes_toserver,
        bytes_toclient: flow.bytes_toclient,
        start: eve_timestamp(start),
        end: eve_timestamp(end),
        age: (flow.duration_us / 1e6) as u64,
        state: "closed".into(),
        reason: "timeout".into(),
        alerted,
    }
}

/// The record's fields that say which flow it is, for `event_type`, stamped `timestamp_us`.
fn header(
    ctx: &AlertContext<'_>,
    flow: &FlowMeta,
    event_type: &str,
    timestamp_us: i64,
) -> EveEvent {
    // A request from an access log knows no ports: they are left out rather than written as 0.
    let ports = flow.icmp.is_none()
        && !matches!(flow.proto, 1 | 58)
        && !(flow.http.is_some() && flow.src_port == 0 && flow.dest_port == 0);
    EveEvent {
        timestamp: eve_timestamp(timestamp_us),
        flow_id: flow.flow_id,
        event_type: event_type.into(),
        in_iface: flow.origin.source.strip_prefix("live:").map(str::to_string),
        src_ip: ip_text(flow.src_ip),
        src_port: ports.then_some(flow.src_port),
        dest_ip: ip_text(flow.dest_ip),
        dest_port: ports.then_some(flow.dest_port),
        proto: proto_name(flow.proto),
        icmp_type: flow.icmp.map(|(t, _)| t),
        icmp_code: flow.icmp.map(|(_, c)| c),
        community_id: community_id(flow),
        app_proto: match &flow.http {
            Some(_) => Some("http".to_string()),
            None => app_proto_guess(flow.proto, flow.dest_port).map(str::to_string),
        },
        host: (!ctx.host.is_empty()).then(|| ctx.host.to_string()),
        alert: None,
        flow: None,
        http: flow.http.as_ref().map(|h| h.http.clone()),
        metaids: None,
    }
}

/// An `event_type: "alert"` record for a threat or unknown verdict.
pub fn alert_event(
    ctx: &AlertContext<'_>,
    flow: &FlowMeta,
    v: &Verdict,
    alert_id: String,
    explanation: Explanation,
    embedding: &[f32],
) -> EveEvent {
    let threat = v.threat.and_then(|i| ctx.threats.get(i));
    let (signature_id, rev, signature, category, severity) = match (v.kind, threat) {
        (VerdictKind::Threat, Some(t)) => (
            t.signature_id,
            t.rev(),
            format!("metaids {}", t.name),
            t.category.clone(),
            t.severity,
        ),
        _ => (
            crate::UNKNOWN_SIGNATURE_ID,
            1,
            "metaids unknown anomaly".to_string(),
            "Unknown anomaly".to_string(),
            ctx.unknown_severity,
        ),
    };
    let mut metadata = BTreeMap::new();
    let mut put = |k: &str, v: Vec<String>| {
        metadata.insert(k.to_string(), v);
    };
    put("verdict", vec![v.kind.name().to_string()]);
    if let Some(t) = threat {
        let key = if v.kind == VerdictKind::Threat {
            "threat"
        } else {
            "nearest_threat"
        };
        put(key, vec![t.name.clone()]);
    }
    put("distance", vec![fmt_f(v.distance)]);
    put("benign_distance", vec![fmt_f(v.benign_distance)]);
    put("score", vec![fmt_f(v.score)]);
    put("confidence", vec![fmt_f(v.confidence)]);
    put(
        "nearest_prototypes",
        explanation
            .nearest
            .iter()
            .map(|p| format!("{} {}", p.name, fmt_f(p.distance)))
            .collect(),
    );
    put(
        "top_features",
        explanation
            .top_features
            .iter()
            .map(|f| format!("{} (z {:.2}, effect {})", f.name, f.z, fmt_f(f.effect)))
            .collect(),
    );
    put("model_version", vec![ctx.model.to_string()]);
    put("library_version", vec![ctx.library_version.to_string()]);
    if !ctx.library.is_empty() {
        put("library_id", vec![ctx.library.to_string()]);
    }
    let mut m = info(ctx, flow, v, Some(alert_id));
    m.nearest = explanation.nearest;
    m.top_features = explanation.top_features;
    m.embedding = embedding.to_vec();
    let start = flow.start_us.unwrap_or(ctx.now_us);
    let last_packet = start.saturating_add(flow.duration_us as i64);
    let mut e = header(ctx, flow, "alert", last_packet);
    e.alert = Some(EveAlert {
        action: "allowed".into(),
        gid: 1,
        signature_id,
        rev,
        signature,
        category,
        severity,
        metadata,
        context: Some(EveAlertContext { metaids: m }),
    });
    if flow.http.is_none() {
        e.flow = Some(eve_flow(ctx, flow, true));
    }
    e
}

/// An `event_type: "flow"` record for any verdict (`"http"`, without a `flow` object, for a web
/// request).
pub fn flow_event(ctx: &AlertContext<'_>, flow: &FlowMeta, v: &Verdict) -> EveEvent {
    let at = flow.start_us.unwrap_or(ctx.now_us);
    let mut e = match flow.http {
        Some(_) => header(ctx, flow, "http", at),
        None => {
            let mut e = header(ctx, flow, "flow", at);
            e.flow = Some(eve_flow(ctx, flow, v.kind != VerdictKind::Benign));
            e
        }
    };
    e.metaids = Some(info(ctx, flow, v, None));
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpts_are_escaped_and_capped() {
        assert_eq!(
            excerpt("a\\b\n\u{1b}[31m{{7*7}}"),
            ("a\\\\b\\x0a\\x1b[31m{{7*7}}".to_string(), false)
        );
        let long = "é".repeat(MAX_EXCERPT);
        let (cut, truncated) = excerpt(&long);
        assert!(truncated);
        assert_eq!(
            cut.len(),
            MAX_EXCERPT,
            "two-byte characters fill it exactly"
        );
        let (cut, truncated) = excerpt(&"\u{7f}".repeat(MAX_EXCERPT));
        assert!(truncated && cut.len() <= MAX_EXCERPT && cut.len() % 4 == 0);
    }

    #[test]
    fn timestamps_round_trip_in_suricata_format() {
        let us = 1_499_434_776_267_908;
        assert_eq!(eve_timestamp(us), "2017-07-07T13:39:36.267908+0000");
        assert_eq!(parse_timestamp_us("2017-07-07 13:39:36.267908"), Some(us));
        assert_eq!(
            parse_timestamp_us("2017-07-07T13:39:36"),
            Some(us - 267_908)
        );
        assert_eq!(
            parse_timestamp_us("2000-02-29 00:00:00.5"),
            Some(951_782_400_500_000)
        );
        assert_eq!(parse_timestamp_us("7/7/2017 1:39"), None);
        assert_eq!(parse_timestamp_us(""), None);
        assert_eq!(eve_timestamp(0), "1970-01-01T00:00:00.000000+0000");
    }

    #[test]
    fn community_id_matches_the_published_test_vectors() {
        // The Community ID specification's baseline vectors (seed 0), both directions of a flow
        // giving the same ID.
        let meta = |src: &str, sp: u16, dst: &str, dp: u16, proto: u8| FlowMeta {
            flow_id: 1,
            seq: 1,
            src_ip: Some(src.parse().expect("ip")),
            src_port: sp,
            dest_ip: Some(dst.parse().expect("ip")),
            dest_port: dp,
            proto,
            icmp: None,
            start_us: None,
            duration_us: 0.0,
            pkts_toserver: 0,
            pkts_toclient: 0,
            bytes_toserver: 0,
            bytes_toclient: 0,
            origin: Origin {
                source: Arc::from("t"),
                index: 1,
            },
            http: None,
        };
        let tcp = meta("128.232.110.120", 34855, "66.35.250.204", 80, 6);
        assert_eq!(
            community_id(&tcp).as_deref(),
            Some("1:LQU9qZlK+B5F3KDmev6m5PMibrg=")
        );
        let back = meta("66.35.250.204", 80, "128.232.110.120", 34855, 6);
        assert_eq!(community_id(&back), community_id(&tcp));
        let udp = meta("192.168.1.52", 54585, "8.8.8.8", 53, 17);
        assert_eq!(
            community_id(&udp).as_deref(),
            Some("1:d/FP5EW3wiY1vCndhwleRRKHowQ=")
        );
        // ICMP: the type and code stand in for ports (the specification's echo-request vector).
        let mut icmp = meta("1.2.3.4", 0, "5.6.7.8", 0, 1);
        assert_eq!(community_id(&icmp), None, "ICMP without its type and code");
        icmp.icmp = Some((8, 0));
        assert_eq!(
            community_id(&icmp).as_deref(),
            Some("1:crodRHL2FEsHjbv3UkRrfbs4bZ0=")
        );
        assert_eq!(
            metaids_core::schema::CIC_FLOW_FEATURES[ICMP_CODE],
            "ICMP Code"
        );
        assert_eq!(
            metaids_core::schema::CIC_FLOW_FEATURES[ICMP_TYPE],
            "ICMP Type"
        );
        assert_eq!(icmp_pair(1, 0.0, 8.0), Some((8, 0)));
        assert_eq!(icmp_pair(1, -1.0, -1.0), None);
        assert_eq!(icmp_pair(6, 0.0, 8.0), None);
        let mut unknown = tcp.clone();
        unknown.src_ip = None;
        assert_eq!(community_id(&unknown), None);
        assert_eq!(app_proto_guess(6, 22), Some("ssh"));
        assert_eq!(app_proto_guess(17, 53), Some("dns"));
        assert_eq!(app_proto_guess(6, 31337), None);
    }

    #[test]
    fn protocol_names() {
        assert_eq!(proto_name(6), "TCP");
        assert_eq!(proto_name(17), "UDP");
        assert_eq!(proto_name(1), "ICMP");
        assert_eq!(proto_name(58), "IPv6-ICMP");
        assert_eq!(proto_name(200), "200");
    }
}
