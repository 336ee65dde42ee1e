//! Large `f32` arrays of a profile (its feature rows, its calibration rows) written compactly in
//! JSON: one string `f32le+deflate+base64:<count>:<data>`, the values' little-endian bytes
//! deflated and base64-encoded — exact (bit for bit) and about a seventh of the JSON numbers'
//! size on a site's rows. Reading accepts that string or a plain array of numbers (what profiles
//! written before it hold). The count bounds what is inflated: a string that inflates to more or
//! fewer bytes than it declares, declares more than [`MAX_VALUES`], or is not base64 or deflate is
//! an error naming what is wrong, never a panic or an unbounded allocation.
//!
//! Use as `#[serde(with = "crate::packed")]` on a `Vec<f32>` field.

use std::fmt;
use std::io::{Read, Write};

use base64::Engine as _;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserializer, Serializer};

/// The tag every packed array starts with.
pub const TAG: &str = "f32le+deflate+base64";

/// Most values one packed array may declare (1 GiB of `f32`).
pub const MAX_VALUES: usize = 1 << 28;

/// The packed string of `values`.
pub fn pack(values: &[f32]) -> String {
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(values.len()),
        flate2::Compression::default(),
    );
    for v in values {
        // Writing into a Vec cannot fail.
        let _ = z.write_all(&v.to_le_bytes());
    }
    let bytes = z.finish().unwrap_or_default();
    format!(
        "{TAG}:{}:{}",
        values.len(),
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// The values of a packed string, or what is wrong with it.
pub fn unpack(text: &str) -> Result<Vec<f32>, String> {
    let mut parts = text.splitn(3, ':');
    let (Some(tag), Some(count), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("expected \"{TAG}:<count>:<data>\""));
    };
    if tag != TAG {
        return Err(format!("packed as {tag:?}, expected {TAG:?}"));
    }
    let count: usize = count
        .parse()
        .map_err(|_| format!("count {count:?} is not a number"))?;
    if count > MAX_VALUES {
        return Err(format!("{count} values declared, more than {MAX_VALUES}"));
    }
    let deflated = base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|e| format!("not base64: {e}"))?;
    let want = count * 4;
    let mut bytes = Vec::with_capacity(want.min(deflated.len().saturating_mul(64)));
    flate2::read::DeflateDecoder::new(deflated.as_slice())
        .take(want as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("not deflate data: {e}"))?;
    if bytes.len() != want {
        return Err(format!(
            "{count} values declared, {} inflated",
            if bytes.len() > want {
                "more bytes than that".to_string()
            } else {
                format!("{} bytes", bytes.len())
            }
        ));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}

/// Serde: writes the packed string.
pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&pack(values))
}

/// Serde: reads a packed string or an array of numbers.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
    struct Either;

    impl<'de> Visitor<'de> for Either {
        type Value = Vec<f32>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "an array of numbers or a \"{TAG}:<count>:<data>\" string"
            )
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<f32>, E> {
            unpack(v).map_err(E::custom)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<f32>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
            while let Some(v) = seq.next_element::<f32>()? {
                out.push(v);
            }
            Ok(out)
        }
    }

    d.deserialize_any(Either)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Holder {
        #[serde(with = "crate::packed")]
        rows: Vec<f32>,
    }

    #[test]
    fn old_arrays_still_read_and_new_strings_are_smaller() {
        let old: Holder = serde_json::from_str(r#"{"rows": [1.5, -2.0, 0.0, 3.25]}"#).expect("old");
        assert_eq!(old.rows, vec![1.5, -2.0, 0.0, 3.25]);
        // A site's rows: many zeros (one-hot columns) and repeated values.
        let rows: Vec<f32> = (0..30_000)
            .map(|i| match i % 5 {
                0 | 1 => 0.0,
                2 => 1.0,
                _ => (i as f32 * 0.618).sin(),
            })
            .collect();
        let packed = serde_json::to_string(&Holder { rows: rows.clone() }).expect("write");
        let plain = serde_json::to_string(&rows).expect("plain");
        assert!(
            packed.len() * 3 < plain.len(),
            "{} vs {}",
            packed.len(),
            plain.len()
        );
        let back: Holder = serde_json::from_str(&packed).expect("read");
        assert_eq!(back.rows, rows);
    }

    #[test]
    fn corrupt_strings_are_errors_naming_the_fault() {
        let good = pack(&[1.0, 2.0, 3.0]);
        let data = good.rsplit(':').next().expect("data");
        for (text, needle) in [
            ("nonsense".to_string(), "expected"),
            (format!("f64le+deflate+base64:3:{data}"), "packed as"),
            (format!("{TAG}:x:{data}"), "not a number"),
            (format!("{TAG}:{}:{data}", MAX_VALUES + 1), "more than"),
            (format!("{TAG}:3:%%%"), "not base64"),
            (format!("{TAG}:3:AAAA"), "deflate"),
            (format!("{TAG}:4:{data}"), "inflated"),
            (format!("{TAG}:2:{data}"), "inflated"),
        ] {
            let e = unpack(&text).expect_err(&text);
            assert!(e.contains(needle), "{text}: {e}");
            let json = format!("{{\"rows\": {}}}", serde_json::to_string(&text).expect("s"));
            assert!(serde_json::from_str::<Holder>(&json).is_err());
        }
        // A bomb: a million declared values of zeros inflate only up to what is declared.
        let zeros = pack(&vec![0.0; 1_000_000]);
        let bomb = zeros.replacen(":1000000:", ":10:", 1);
        assert!(unpack(&bomb).expect_err("bomb").contains("more bytes"));
    }

    proptest! {
        #[test]
        fn packing_is_exact(values in proptest::collection::vec(any::<f32>(), 0..300)) {
            let back = unpack(&pack(&values)).expect("round trip");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(&back), bits(&values));
        }

        #[test]
        fn unpacking_never_panics(text in ".{0,200}") {
            let _ = unpack(&text);
            let _ = unpack(&format!("{TAG}:{text}"));
        }
    }
}
