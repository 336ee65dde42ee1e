//! Output of flow records: the 91-column corrected-CIC-IDS2017 CSV and JSON lines, into any
//! [`std::io::Write`], plus the end-of-run counters as text. It does not open files.

use std::io::Write;

use metaids_core::schema::{cic_improved_header, CIC_FLOW_FEATURES};

use crate::capture::ReaderStats;
use crate::engine::{EndReason, EngineStats, FlowRecord};
use crate::error::FlowError;
use crate::features::FEATURE_KINDS;
use crate::SkipReason;

/// The `Label` written when none is given.
pub const UNLABELLED: &str = "unlabelled";

pub use crate::text::{format_timestamp_us, format_value, push_int, push_ip, push_value};

/// Appends [`FlowRecord::flow_id`] (`src-dst-srcport-dstport-protocol`) without allocating.
pub fn push_flow_id(out: &mut String, r: &FlowRecord) {
    r.push_flow_id(out);
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// A sink of text lines: one reused line buffer and the row count, shared by both writers.
struct LineSink<W: Write> {
    out: W,
    line: String,
    rows: u64,
}

impl<W: Write> LineSink<W> {
    fn new(out: W) -> Self {
        LineSink {
            out,
            line: String::with_capacity(2048),
            rows: 0,
        }
    }

    /// Writes the buffered line, then clears it for the next row.
    fn commit(&mut self) -> Result<(), FlowError> {
        self.out
            .write_all(self.line.as_bytes())
            .map_err(FlowError::Write)?;
        self.line.clear();
        self.rows += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<W, FlowError> {
        self.out.flush().map_err(FlowError::Write)?;
        Ok(self.out)
    }
}

/// Writes the 91-column CSV: `id`, `Flow ID`, `Src IP`, `Src Port`, `Dst IP`, `Dst Port`,
/// `Protocol`, `Timestamp`, the 81 features, `Label`, `Attempted Category` (always −1).
pub struct CsvWriter<W: Write> {
    sink: LineSink<W>,
    label: String,
}

impl<W: Write> CsvWriter<W> {
    /// Writes the header line. `label` fills the `Label` column (`None`: `unlabelled`).
    pub fn new(mut out: W, label: Option<&str>) -> Result<Self, FlowError> {
        let header: Vec<String> = cic_improved_header().into_iter().map(csv_field).collect();
        writeln!(out, "{}", header.join(",")).map_err(FlowError::Write)?;
        Ok(CsvWriter {
            sink: LineSink::new(out),
            label: csv_field(label.unwrap_or(UNLABELLED)),
        })
    }

    /// Writes one row.
    pub fn write(&mut self, r: &FlowRecord) -> Result<(), FlowError> {
        let line = &mut self.sink.line;
        push_int(line, r.id);
        line.push(',');
        push_flow_id(line, r);
        line.push(',');
        push_ip(line, &r.src);
        line.push(',');
        push_int(line, r.src_port);
        line.push(',');
        push_ip(line, &r.dst);
        line.push(',');
        push_int(line, r.dst_port);
        line.push(',');
        push_int(line, r.protocol);
        line.push(',');
        metaids_core::time::push_timestamp_us(line, r.start_us, ' ');
        for (v, k) in r.features.iter().zip(FEATURE_KINDS) {
            line.push(',');
            push_value(line, *v, k);
        }
        line.push(',');
        line.push_str(&self.label);
        line.push_str(",-1\n");
        self.sink.commit()
    }

    /// Rows written.
    pub fn rows(&self) -> u64 {
        self.sink.rows
    }

    /// Flushes and returns the sink.
    pub fn finish(self) -> Result<W, FlowError> {
        self.sink.finish()
    }
}

fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Writes one JSON object per line with the same 91 keys as the CSV header, plus
/// `"End Reason"`. Numbers are JSON numbers, identifiers strings.
pub struct JsonLinesWriter<W: Write> {
    sink: LineSink<W>,
    label: String,
    /// `,"<feature name>":` for each feature, escaped once.
    keys: Vec<String>,
}

impl<W: Write> JsonLinesWriter<W> {
    /// A writer; `label` fills `Label` (`None`: `unlabelled`).
    pub fn new(out: W, label: Option<&str>) -> Self {
        JsonLinesWriter {
            sink: LineSink::new(out),
            label: json_str(label.unwrap_or(UNLABELLED)),
            keys: CIC_FLOW_FEATURES
                .iter()
                .map(|name| format!(",{}:", json_str(name)))
                .collect(),
        }
    }

    /// Writes one line.
    pub fn write(&mut self, r: &FlowRecord) -> Result<(), FlowError> {
        let line = &mut self.sink.line;
        // Identifiers are digits, hex, '.', ':' and '-': nothing to escape.
        line.push_str("{\"id\":");
        push_int(line, r.id);
        line.push_str(",\"Flow ID\":\"");
        push_flow_id(line, r);
        line.push_str("\",\"Src IP\":\"");
        push_ip(line, &r.src);
        line.push_str("\",\"Src Port\":");
        push_int(line, r.src_port);
        line.push_str(",\"Dst IP\":\"");
        push_ip(line, &r.dst);
        line.push_str("\",\"Dst Port\":");
        push_int(line, r.dst_port);
        line.push_str(",\"Protocol\":");
        push_int(line, r.protocol);
        line.push_str(",\"Timestamp\":\"");
        metaids_core::time::push_timestamp_us(line, r.start_us, ' ');
        line.push('"');
        for ((key, v), k) in self.keys.iter().zip(r.features.iter()).zip(FEATURE_KINDS) {
            line.push_str(key);
            push_value(line, *v, k);
        }
        line.push_str(",\"Label\":");
        line.push_str(&self.label);
        line.push_str(",\"Attempted Category\":-1,\"End Reason\":\"");
        line.push_str(r.end_reason.name());
        line.push_str("\"}\n");
        self.sink.commit()
    }

    /// Lines written.
    pub fn rows(&self) -> u64 {
        self.sink.rows
    }

    /// Flushes and returns the sink.
    pub fn finish(self) -> Result<W, FlowError> {
        self.sink.finish()
    }
}

/// The end-of-run counters of a capture file: the engine's ([`summary`]) followed by every
/// reader counter as `reader_NAME value` lines. Every command that reads a capture prints this
/// one, so no counter goes unseen.
pub fn capture_summary(engine: &EngineStats, reader: &ReaderStats) -> String {
    let mut s = summary(engine);
    s.push_str(&reader_summary(reader));
    s
}

/// The reader counters as `reader_NAME value` lines, in [`ReaderStats::counters`] order.
pub fn reader_summary(stats: &ReaderStats) -> String {
    let mut s = String::new();
    for (name, value) in stats.counters() {
        s.push_str(&format!("reader_{name} {value}\n"));
    }
    s
}

/// The end-of-run counters as `name value` lines (for logs or stderr).
pub fn summary(stats: &EngineStats) -> String {
    let mut s = format!(
        "packets {}\nbytes {}\ndecoded {}\nflows_started {}\nflows_emitted {}\nflows_suppressed {}\npeak_live_flows {}\nfragments {}\nipv4_options {}\nipv6_extension_headers {}\nvlan_tagged {}\nout_of_order {}\n",
        stats.packets,
        stats.bytes,
        stats.decoded,
        stats.flows_started,
        stats.flows_emitted,
        stats.flows_suppressed,
        stats.peak_live_flows,
        stats.fragments,
        stats.ipv4_options,
        stats.ipv6_extension_headers,
        stats.vlan_tagged,
        stats.out_of_order
    );
    for r in SkipReason::ALL {
        s.push_str(&format!("skipped_{} {}\n", r.name(), stats.skipped_for(r)));
    }
    for r in EndReason::ALL {
        s.push_str(&format!("ended_{} {}\n", r.name(), stats.ended_for(r)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureKind;
    use std::net::IpAddr;

    #[test]
    fn capture_summary_prints_every_reader_counter() {
        let reader = ReaderStats {
            packets: 1,
            bytes_consumed: 2,
            unknown_interface: 3,
            bad_tsresol: 4,
            timestamp_out_of_range: 5,
            other_blocks: 6,
        };
        let s = capture_summary(&EngineStats::default(), &reader);
        assert!(s.starts_with(&summary(&EngineStats::default())), "{s}");
        for line in [
            "reader_packets 1",
            "reader_bytes_consumed 2",
            "reader_unknown_interface 3",
            "reader_bad_tsresol 4",
            "reader_timestamp_out_of_range 5",
            "reader_other_blocks 6",
        ] {
            assert!(s.lines().any(|l| l == line), "{line} missing from\n{s}");
        }
    }

    #[test]
    fn timestamp_like_the_csvs() {
        // 2017-07-07 13:39:36.267908 UTC
        assert_eq!(
            format_timestamp_us(1_499_434_776_267_908),
            "2017-07-07 13:39:36.267908"
        );
        assert_eq!(format_timestamp_us(0), "1970-01-01 00:00:00.000000");
        assert_eq!(
            format_timestamp_us(951_782_400_000_001),
            "2000-02-29 00:00:00.000001"
        );
    }

    #[test]
    fn values() {
        assert_eq!(format_value(36.0, FeatureKind::Float), "36.0");
        assert_eq!(format_value(39.2, FeatureKind::Float), "39.2");
        assert_eq!(format_value(21.78, FeatureKind::Int), "21");
        assert_eq!(format_value(-1.0, FeatureKind::Int), "-1");
        assert_eq!(format_value(f64::NAN, FeatureKind::Float), "0");
        assert_eq!(format_value(0.0, FeatureKind::Float), "0.0");
        assert_eq!(format_value(-0.0, FeatureKind::Int), "0");
        assert_eq!(format_value(0.0, FeatureKind::Int), "0");
        assert_eq!(format_value(1e-7, FeatureKind::Float), "0.0000001");
        assert_eq!(
            format_value(2.5e17, FeatureKind::Float),
            "250000000000000000"
        );
        assert_eq!(format_value(1e300, FeatureKind::Int), i64::MAX.to_string());
    }

    /// The fast path against the formatter path it replaced: integers and integral floats
    /// identical text; other floats identical text, or — where the shortest decimal has two
    /// candidates at equal distance and ryu and the standard library break the tie apart —
    /// another shortest text of the same length naming the same `f64`. Never exponents.
    fn same_value_text(fast: &str, reference: &str, value: f64) -> Result<(), String> {
        if fast == reference {
            return Ok(());
        }
        let parsed: f64 = fast.parse().map_err(|e| format!("{fast:?}: {e}"))?;
        if parsed.to_bits() != value.to_bits() {
            return Err(format!("{fast:?} is not {value:e} ({reference:?})"));
        }
        if fast.len() != reference.len() || fast.contains('e') {
            return Err(format!("{fast:?} is not shaped as {reference:?}"));
        }
        Ok(())
    }

    /// What the formatter path wrote before itoa and ryu: the reference for the fast path.
    fn reference(value: f64, kind: FeatureKind) -> String {
        if value == 0.0 || !value.is_finite() {
            return if kind == FeatureKind::Float && value.is_finite() {
                "0.0".into()
            } else {
                "0".into()
            };
        }
        match kind {
            FeatureKind::Int => format!("{}", value.trunc() as i64),
            FeatureKind::Float if value == value.trunc() && value.abs() < 1e16 => {
                format!("{value:.1}")
            }
            FeatureKind::Float => format!("{value}"),
        }
    }

    fn record(src: IpAddr, dst: IpAddr) -> FlowRecord {
        FlowRecord {
            id: 7,
            src,
            src_port: 40_000,
            dst,
            dst_port: 443,
            protocol: 6,
            start_us: 1_499_434_776_267_908,
            end_reason: EndReason::IdleTimeout,
            features: [0.0; crate::FEATURE_COUNT],
            fwd_frame_bytes: 0,
            bwd_frame_bytes: 0,
        }
    }

    #[test]
    fn identifiers_as_display_writes_them() {
        for (src, dst) in [
            ("10.0.0.1", "255.255.255.255"),
            ("0.0.0.0", "192.168.10.50"),
            ("fe80::1", "2001:db8::ff00:42:8329"),
        ] {
            let r = record(
                src.parse().expect("test value"),
                dst.parse().expect("test value"),
            );
            let mut s = String::new();
            push_flow_id(&mut s, &r);
            assert_eq!(
                s,
                format!(
                    "{}-{}-{}-{}-{}",
                    r.src, r.dst, r.src_port, r.dst_port, r.protocol
                )
            );
            assert_eq!(s, r.flow_id());
        }
    }

    #[test]
    fn json_lines_are_json_with_the_csv_values() {
        let mut r = record(
            "10.0.0.1".parse().expect("test value"),
            "fe80::1".parse().expect("test value"),
        );
        r.features[0] = 1234.0;
        let float = FEATURE_KINDS
            .iter()
            .position(|k| *k == FeatureKind::Float)
            .expect("test value");
        r.features[float] = 0.125;
        let mut w = JsonLinesWriter::new(Vec::new(), Some("a \"quoted\" label"));
        w.write(&r).expect("test value");
        let bytes = w.finish().expect("test value");
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("test value");
        assert_eq!(v["Flow ID"], "10.0.0.1-fe80::1-40000-443-6");
        assert_eq!(v["Dst IP"], "fe80::1");
        assert_eq!(v["Timestamp"], "2017-07-07 13:39:36.267908");
        assert_eq!(v["Label"], "a \"quoted\" label");
        assert_eq!(v["End Reason"], "idle_timeout");
        assert_eq!(v[CIC_FLOW_FEATURES[float]], 0.125);
        assert_eq!(v[CIC_FLOW_FEATURES[0]], 1234.0);
        assert_eq!(v.as_object().expect("test value").len(), 92);
    }

    proptest::proptest! {
        /// The itoa/ryu path writes exactly what the standard formatter wrote, for any bits.
        #[test]
        fn fast_values_match_the_formatter(bits in proptest::num::u64::ANY, int in proptest::bool::ANY) {
            let value = f64::from_bits(bits);
            let kind = if int { FeatureKind::Int } else { FeatureKind::Float };
            let fast = format_value(value, kind);
            if kind == FeatureKind::Int || value == value.trunc() || !value.is_finite() {
                proptest::prop_assert_eq!(fast, reference(value, kind));
            } else {
                let check = same_value_text(&fast, &reference(value, kind), value);
                proptest::prop_assert!(check.is_ok(), "{:?}", check);
            }
        }

        /// The same over the magnitudes flows have (counts, bytes, µs, rates).
        #[test]
        fn fast_feature_values_match_the_formatter(m in 0.0f64..1e12, e in -9i32..18, int in proptest::bool::ANY) {
            let value = m * 10f64.powi(e - 6);
            let kind = if int { FeatureKind::Int } else { FeatureKind::Float };
            for value in [value, -value] {
                let fast = format_value(value, kind);
                if kind == FeatureKind::Int || value == value.trunc() {
                    proptest::prop_assert_eq!(fast, reference(value, kind));
                } else {
                    let check = same_value_text(&fast, &reference(value, kind), value);
                    proptest::prop_assert!(check.is_ok(), "{:?}", check);
                }
            }
        }
    }
}
