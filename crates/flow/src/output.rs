//! Output of flow records: the 91-column corrected-CIC-IDS2017 CSV and JSON lines, into any
//! [`std::io::Write`], plus the end-of-run counters as text. It does not open files.

use std::io::Write;

use metaids_core::schema::{cic_improved_header, CIC_FLOW_FEATURES};

use crate::engine::{EndReason, EngineStats, FlowRecord};
use crate::error::FlowError;
use crate::features::{FeatureKind, FEATURE_KINDS};
use crate::SkipReason;

/// The `Label` written when none is given.
pub const UNLABELLED: &str = "unlabelled";

/// Formats µs since the Unix epoch as `YYYY-MM-DD HH:MM:SS.ffffff` in UTC.
pub fn format_timestamp_us(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let frac = us.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{frac:06}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Formats one feature value: integers truncated toward zero, floats always with a decimal
/// point (`36.0`, `39.2`); non-finite values as `0`.
pub fn format_value(value: f64, kind: FeatureKind) -> String {
    let mut s = String::new();
    push_value(&mut s, value, kind);
    s
}

/// Appends [`format_value`]'s text to `out` without allocating: the per-flow output path.
pub fn push_value(out: &mut String, value: f64, kind: FeatureKind) {
    use std::fmt::Write as _;
    // Most flow features are zero; skip the formatter for them.
    if value == 0.0 || !value.is_finite() {
        out.push_str(if kind == FeatureKind::Float && value.is_finite() {
            "0.0"
        } else {
            "0"
        });
        return;
    }
    // Writing to a String cannot fail.
    let _ = match kind {
        FeatureKind::Int => write!(out, "{}", value.trunc() as i64),
        FeatureKind::Float if value == value.trunc() && value.abs() < 1e16 => {
            write!(out, "{value:.1}")
        }
        FeatureKind::Float => write!(out, "{value}"),
    };
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
        use std::fmt::Write as _;
        let line = &mut self.sink.line;
        // Writing to a String cannot fail.
        let _ = write!(
            line,
            "{},{},{},{},{},{},{},{}",
            r.id,
            r.flow_id(),
            r.src,
            r.src_port,
            r.dst,
            r.dst_port,
            r.protocol,
            r.timestamp()
        );
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
        use std::fmt::Write as _;
        let line = &mut self.sink.line;
        // Writing to a String cannot fail.
        let _ = write!(
            line,
            "{{\"id\":{},\"Flow ID\":{},\"Src IP\":{},\"Src Port\":{},\"Dst IP\":{},\"Dst Port\":{},\"Protocol\":{},\"Timestamp\":{}",
            r.id,
            json_str(&r.flow_id()),
            json_str(&r.src.to_string()),
            r.src_port,
            json_str(&r.dst.to_string()),
            r.dst_port,
            r.protocol,
            json_str(&r.timestamp())
        );
        for ((key, v), k) in self.keys.iter().zip(r.features.iter()).zip(FEATURE_KINDS) {
            line.push_str(key);
            push_value(line, *v, k);
        }
        let _ = writeln!(
            line,
            ",\"Label\":{},\"Attempted Category\":-1,\"End Reason\":{}}}",
            self.label,
            json_str(r.end_reason.name())
        );
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
    }
}
