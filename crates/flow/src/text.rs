//! Text of numbers, addresses and times without per-field allocation (itoa, ryu): the leaf the
//! record's identifiers ([`crate::engine`]) and the CSV and JSON writers ([`crate::output`]) share.

use std::net::IpAddr;

use crate::features::FeatureKind;

/// Formats µs since the Unix epoch as `YYYY-MM-DD HH:MM:SS.ffffff` in UTC.
pub fn format_timestamp_us(us: i64) -> String {
    metaids_core::time::format_timestamp_us(us)
}

/// Formats one feature value: integers truncated toward zero, floats always with a decimal
/// point (`36.0`, `39.2`); non-finite values as `0`.
pub fn format_value(value: f64, kind: FeatureKind) -> String {
    let mut s = String::new();
    push_value(&mut s, value, kind);
    s
}

/// Appends an integer in decimal (itoa: no allocation, no formatter).
pub fn push_int<I: itoa::Integer>(out: &mut String, value: I) {
    out.push_str(itoa::Buffer::new().format(value));
}

/// Appends [`format_value`]'s text to `out` without allocating: the per-flow output path.
///
/// The text is what the standard formatter writes (`{}` for integers, `{:.1}` for integral
/// floats, `{}` for the rest) through itoa and ryu, with the formatter only where ryu would
/// choose exponent notation (below 1e-5). Both write the shortest decimal that reads back as
/// the same `f64`; where two such decimals are equally near, ryu may pick the other one (an
/// equivalence property test holds the fast path to that).
pub fn push_value(out: &mut String, value: f64, kind: FeatureKind) {
    // Most flow features are zero; skip the formatter for them.
    if value == 0.0 || !value.is_finite() {
        out.push_str(if kind == FeatureKind::Float && value.is_finite() {
            "0.0"
        } else {
            "0"
        });
        return;
    }
    let integral = value == value.trunc();
    match kind {
        // Saturating: |value| ≥ 2^63 writes i64::MIN/MAX, as the formatter path did.
        FeatureKind::Int => push_int(out, value.trunc() as i64),
        FeatureKind::Float if integral && value.abs() < 1e16 => {
            push_int(out, value as i64);
            out.push_str(".0");
        }
        FeatureKind::Float => {
            let mut buf = ryu::Buffer::new();
            let text = buf.format_finite(value);
            if text.contains('e') {
                use std::fmt::Write as _;
                // Writing to a String cannot fail.
                let _ = write!(out, "{value}");
            } else {
                out.push_str(text);
            }
        }
    }
}

/// Appends an address as `Display` writes it; IPv4 without the formatter.
pub fn push_ip(out: &mut String, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_int(out, octet);
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}
