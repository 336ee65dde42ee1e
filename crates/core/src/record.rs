//! Typed parsing of one CSV record (already split into fields) of a known format.
//!
//! Pure: takes byte slices, returns a typed row or an error naming the column, what was expected and
//! what was found. It does not split lines, track line numbers or read files (see `metaids-ingest`).

use crate::schema::{
    cic_canonical_label, cic_canonical_name, strip_bom, ColumnRole, DatasetKind, FeatureLayout,
    FileFormat, CIC_IDENTIFIERS, NSL_KDD_COLUMNS, UNSW_IDENTIFIER_LIKE,
};
use crate::CoreError;

/// How the columns of one file map onto a [`FeatureLayout`].
#[derive(Debug, Clone)]
pub struct ColumnMap {
    /// The file format.
    pub format: FileFormat,
    /// The layout rows are read into.
    pub layout: FeatureLayout,
    /// The role of each input column, in file order.
    pub roles: Vec<ColumnRole>,
    /// The name of each input column, in file order (synthesised for header-less NSL-KDD).
    pub names: Vec<String>,
    /// Names of the identifier columns, in the order their values are stored.
    pub identifier_names: Vec<String>,
    /// Numeric features this file lacks (only the original CIC releases may): read as NaN.
    pub missing_numeric: Vec<String>,
    /// Categorical features this file lacks: read as the empty value, which falls in the unknown bucket.
    pub missing_categorical: Vec<String>,
    /// Columns of the file that no role claims, and duplicates: read and discarded.
    pub ignored: Vec<String>,
}

impl ColumnMap {
    /// The fixed column map of header-less NSL-KDD files.
    pub fn nsl_kdd() -> Self {
        let layout = DatasetKind::NslKdd.layout();
        let mut names: Vec<String> = NSL_KDD_COLUMNS.iter().map(|s| s.to_string()).collect();
        names.push("label".into());
        names.push("difficulty".into());
        let roles = names
            .iter()
            .map(|n| match n.as_str() {
                "label" => ColumnRole::Label,
                // The difficulty level counts how many of 21 reference classifiers got the row right:
                // a feature made from labels, so never a feature.
                "difficulty" => ColumnRole::Ignored,
                _ => layout_role(&layout, n).unwrap_or(ColumnRole::Ignored),
            })
            .collect();
        ColumnMap {
            format: FileFormat::NslKdd,
            layout,
            roles,
            names,
            identifier_names: Vec::new(),
            missing_numeric: Vec::new(),
            missing_categorical: Vec::new(),
            ignored: vec!["difficulty".into()],
        }
    }

    /// Builds the column map of a file from its header line's fields.
    pub fn from_header(format: FileFormat, header: &[&[u8]]) -> Result<Self, CoreError> {
        if format == FileFormat::NslKdd {
            return Ok(Self::nsl_kdd());
        }
        if format == FileFormat::HttpPayloads {
            return Err(CoreError::Parse {
                what: "a flow file",
                message:
                    "this is a web-request payload file (family,source,payload): read it with \
                          --dataset http-requests"
                        .into(),
            });
        }
        let layout = format.kind().layout();
        let raw_names: Vec<String> = header
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let f = if i == 0 { strip_bom(f) } else { f };
                String::from_utf8_lossy(f).trim().to_string()
            })
            .collect();
        let mut roles = Vec::with_capacity(raw_names.len());
        let mut identifier_names = Vec::new();
        let mut ignored = Vec::new();
        let mut seen_numeric = vec![false; layout.numeric.len()];
        let mut seen_categorical = vec![false; layout.categorical.len()];
        let mut has_label = false;
        let mut has_binary = false;
        for name in &raw_names {
            let canonical: Option<String> = match format {
                FileFormat::UnswNb15 => Some(name.to_string()),
                FileFormat::CicImproved => Some(name.to_string()),
                FileFormat::CicOriginal => cic_canonical_name(name).map(str::to_string),
                // NSL-KDD files have no header: their map is `ColumnMap::nsl_kdd`, returned above.
                FileFormat::NslKdd => None,
                // Payloads are text: `metaids_http::features` reads them, this map refuses them.
                FileFormat::HttpPayloads => None,
            };
            let role = match canonical.as_deref() {
                None => None,
                Some("Label") if format.kind() == DatasetKind::Cic => Some(ColumnRole::Label),
                Some("attack_cat") if format == FileFormat::UnswNb15 => Some(ColumnRole::Label),
                Some("label") if format == FileFormat::UnswNb15 => Some(ColumnRole::BinaryLabel),
                Some("Attempted Category") => Some(ColumnRole::Ignored),
                Some(c) if is_identifier(format, c) => {
                    Some(ColumnRole::Identifier(identifier_names.len()))
                }
                Some(c) => layout_role(&layout, c),
            };
            let role = match role {
                Some(ColumnRole::Numeric(i)) if seen_numeric[i] => None,
                Some(ColumnRole::Categorical(j)) if seen_categorical[j] => None,
                Some(ColumnRole::Label) if has_label => None,
                Some(ColumnRole::Identifier(_))
                    if canonical
                        .as_ref()
                        .is_some_and(|c| identifier_names.contains(c)) =>
                {
                    None
                }
                r => r,
            };
            match role {
                Some(ColumnRole::Numeric(i)) => seen_numeric[i] = true,
                Some(ColumnRole::Categorical(j)) => seen_categorical[j] = true,
                Some(ColumnRole::Label) => has_label = true,
                Some(ColumnRole::BinaryLabel) => has_binary = true,
                Some(ColumnRole::Identifier(_)) => {
                    identifier_names.push(canonical.clone().unwrap_or_default())
                }
                Some(ColumnRole::Ignored) => ignored.push(name.clone()),
                None => ignored.push(name.clone()),
            }
            roles.push(role.unwrap_or(ColumnRole::Ignored));
        }
        let missing_numeric: Vec<String> = layout
            .numeric
            .iter()
            .zip(&seen_numeric)
            .filter(|(_, s)| !**s)
            .map(|(n, _)| n.clone())
            .collect();
        let missing_categorical: Vec<String> = layout
            .categorical
            .iter()
            .zip(&seen_categorical)
            .filter(|(_, s)| !**s)
            .map(|(n, _)| n.clone())
            .collect();
        let label_column = match format {
            FileFormat::UnswNb15 => "attack_cat",
            _ => "Label",
        };
        let mut missing_required: Vec<String> = Vec::new();
        if !has_label {
            missing_required.push(label_column.into());
        }
        if format == FileFormat::UnswNb15 && !has_binary {
            missing_required.push("label".into());
        }
        // Only the original CIC releases lack some corrected-schema features (ICMP code and type, RST flag
        // counts, Total TCP Flow Time); every other format must carry its whole layout.
        if format != FileFormat::CicOriginal {
            missing_required.extend(missing_numeric.iter().cloned());
            missing_required.extend(missing_categorical.iter().cloned());
        } else if seen_numeric.iter().filter(|s| **s).count() < layout.numeric.len() / 2 {
            missing_required.extend(missing_numeric.iter().cloned());
        }
        if !missing_required.is_empty() {
            return Err(CoreError::MissingColumns {
                format,
                columns: missing_required,
            });
        }
        Ok(ColumnMap {
            format,
            layout,
            roles,
            names: raw_names,
            identifier_names,
            missing_numeric,
            missing_categorical,
            ignored,
        })
    }

    /// Number of fields every record must have.
    pub fn width(&self) -> usize {
        self.roles.len()
    }
}

fn is_identifier(format: FileFormat, canonical: &str) -> bool {
    match format {
        FileFormat::UnswNb15 => canonical == "id" || UNSW_IDENTIFIER_LIKE.contains(&canonical),
        FileFormat::CicImproved | FileFormat::CicOriginal => CIC_IDENTIFIERS.contains(&canonical),
        FileFormat::NslKdd | FileFormat::HttpPayloads => false,
    }
}

fn layout_role(layout: &FeatureLayout, name: &str) -> Option<ColumnRole> {
    if let Some(i) = layout.numeric.iter().position(|c| c == name) {
        return Some(ColumnRole::Numeric(i));
    }
    layout
        .categorical
        .iter()
        .position(|c| c == name)
        .map(ColumnRole::Categorical)
}

/// One parsed row, reused across records to avoid allocation.
#[derive(Debug, Clone, Default)]
pub struct RowBuf {
    /// Numeric features in layout order; NaN where the file lacks the column or says `NaN`.
    pub numeric: Vec<f32>,
    /// Categorical values in layout order.
    pub categorical: Vec<String>,
    /// The family label, canonicalised.
    pub label: String,
    /// Identifier values in [`ColumnMap::identifier_names`] order.
    pub identifiers: Vec<String>,
    /// The raw bytes `label` was canonicalised from: consecutive rows mostly share a label, so the
    /// canonical form is only recomputed when they change.
    label_raw: Vec<u8>,
}

/// Parses a numeric field: decimal or scientific notation, surrounding spaces allowed, plus the
/// `Infinity`/`inf`/`NaN` spellings of the original CIC files. Returns `None` if it is not a number.
pub fn parse_number(field: &[u8]) -> Option<f64> {
    let f = field.trim_ascii();
    if f.is_empty() {
        return None;
    }
    if let Some(v) = parse_plain_decimal(f) {
        return Some(v);
    }
    let s = std::str::from_utf8(f).ok()?;
    match s {
        "Infinity" | "inf" | "+Infinity" | "+inf" | "Inf" => Some(f64::INFINITY),
        "-Infinity" | "-inf" | "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" | "NAN" => Some(f64::NAN),
        _ => {
            // Reject the spellings std accepts but no dataset uses ("infinity", "nAn" …).
            if !s
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E'))
            {
                return None;
            }
            s.parse::<f64>().ok()
        }
    }
}

/// Exact fast path for the bulk of dataset values: `[-]digits[.digits]` with at most 19 digits.
///
/// When the digits fit in 2^53 and there are at most 22 decimals, `m / 10^k` is correctly rounded
/// (Clinger's fast path), so the result equals `str::parse::<f64>`; anything else returns `None`
/// and takes the general parser.
fn parse_plain_decimal(f: &[u8]) -> Option<f64> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let (negative, digits) = match f.first()? {
        b'-' => (true, &f[1..]),
        _ => (false, f),
    };
    let (int, frac) = match digits.iter().position(|&b| b == b'.') {
        Some(dot) => (&digits[..dot], &digits[dot + 1..]),
        None => (digits, &digits[digits.len()..]),
    };
    // Up to 19 digits cannot overflow a u64; longer numbers take the general parser.
    if int.is_empty()
        || int.len() + frac.len() > 19
        || (frac.is_empty() && int.len() < digits.len())
    {
        return None;
    }
    let mut mantissa: u64 = 0;
    for &b in int.iter().chain(frac) {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        mantissa = mantissa * 10 + u64::from(d);
    }
    let k = frac.len();
    if mantissa > (1u64 << 53) || k >= POW10.len() {
        return None;
    }
    let v = if k == 0 {
        mantissa as f64
    } else {
        mantissa as f64 / POW10[k]
    };
    Some(if negative { -v } else { v })
}

impl ColumnMap {
    /// Parses one record's fields into `row`.
    ///
    /// # Errors
    /// [`CoreError::FieldCount`] when the record has the wrong number of fields, [`CoreError::Field`]
    /// naming the column, the expectation and the value when a field does not parse.
    pub fn parse_into<'a>(
        &self,
        fields: impl ExactSizeIterator<Item = &'a [u8]>,
        row: &mut RowBuf,
    ) -> Result<(), CoreError> {
        if fields.len() != self.width() {
            return Err(CoreError::FieldCount {
                expected: self.width(),
                found: fields.len(),
            });
        }
        row.numeric.clear();
        row.numeric.resize(self.layout.numeric.len(), f32::NAN);
        row.categorical
            .resize(self.layout.categorical.len(), String::new());
        row.categorical.iter_mut().for_each(String::clear);
        row.identifiers
            .resize(self.identifier_names.len(), String::new());
        let mut binary: Option<(usize, u8)> = None;
        for (col, (field, role)) in fields.zip(&self.roles).enumerate() {
            match *role {
                ColumnRole::Numeric(i) => {
                    let v = parse_number(field)
                        .ok_or_else(|| self.field_error(col, "a number", field))?;
                    row.numeric[i] = v as f32;
                }
                ColumnRole::Categorical(j) => {
                    let v = std::str::from_utf8(field.trim_ascii())
                        .map_err(|_| self.field_error(col, "UTF-8 text", field))?;
                    if v.is_empty() {
                        return Err(self.field_error(col, "a non-empty category", field));
                    }
                    row.categorical[j].push_str(v);
                }
                ColumnRole::Label => {
                    if !row.label.is_empty() && row.label_raw == field {
                        continue;
                    }
                    let raw = String::from_utf8_lossy(field);
                    let label = match self.format.kind() {
                        DatasetKind::Cic => cic_canonical_label(&raw),
                        _ => raw.trim().to_string(),
                    };
                    if label.is_empty() {
                        return Err(self.field_error(col, "a class label", field));
                    }
                    row.label = label;
                    row.label_raw.clear();
                    row.label_raw.extend_from_slice(field);
                }
                ColumnRole::BinaryLabel => match field.trim_ascii() {
                    b"0" => binary = Some((col, 0)),
                    b"1" => binary = Some((col, 1)),
                    _ => return Err(self.field_error(col, "0 or 1", field)),
                },
                ColumnRole::Identifier(k) => {
                    let id = &mut row.identifiers[k];
                    id.clear();
                    id.push_str(&String::from_utf8_lossy(field.trim_ascii()));
                }
                ColumnRole::Ignored => {
                    if self.format == FileFormat::NslKdd && self.names[col] == "difficulty" {
                        let d = parse_number(field)
                            .filter(|d| (0.0..=21.0).contains(d) && d.fract() == 0.0);
                        if d.is_none() {
                            return Err(self.field_error(col, "an integer difficulty 0-21", field));
                        }
                    }
                }
            }
        }
        if let Some((col, b)) = binary {
            let normal = row.label.eq_ignore_ascii_case("normal");
            if normal != (b == 0) {
                let found = format!("{b} with attack_cat {:?}", row.label);
                return Err(CoreError::Field {
                    column: self.names[col].clone(),
                    expected: "0 exactly when attack_cat is Normal",
                    found,
                });
            }
        }
        Ok(())
    }

    fn field_error(&self, col: usize, expected: &'static str, field: &[u8]) -> CoreError {
        let mut found = String::from_utf8_lossy(&field[..field.len().min(64)]).into_owned();
        if field.len() > 64 {
            found.push('…');
        }
        if found.is_empty() {
            found = "an empty field".into();
        } else {
            found = format!("{found:?}");
        }
        CoreError::Field {
            column: self.names[col].clone(),
            expected,
            found,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::cic_improved_header;

    fn split(line: &str) -> Vec<&[u8]> {
        line.split(',').map(str::as_bytes).collect()
    }

    const NSL: &str = "0,tcp,private,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,229,10,0.00,0.00,1.00,1.00,0.04,0.06,0.00,255,10,0.04,0.06,0.00,0.00,0.00,0.00,1.00,1.00,neptune,21";

    #[test]
    fn nsl_kdd_row_parses() {
        let map = ColumnMap::nsl_kdd();
        let mut row = RowBuf::default();
        map.parse_into(split(NSL).into_iter(), &mut row)
            .expect("parses");
        assert_eq!(row.label, "neptune");
        assert_eq!(row.categorical, vec!["tcp", "private", "REJ"]);
        assert_eq!(row.numeric.len(), 38);
        assert_eq!(row.numeric[0], 0.0);
        // `count` is the first numeric after the 19 zero counters.
        let count = map
            .layout
            .numeric
            .iter()
            .position(|c| c == "count")
            .expect("count");
        assert_eq!(row.numeric[count], 229.0);
    }

    #[test]
    fn wrong_field_count_is_reported() {
        let map = ColumnMap::nsl_kdd();
        let mut row = RowBuf::default();
        let err = map
            .parse_into(split("0,tcp,private").into_iter(), &mut row)
            .expect_err("short");
        assert!(
            matches!(
                err,
                CoreError::FieldCount {
                    expected: 43,
                    found: 3
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn non_numeric_field_names_the_column() {
        let map = ColumnMap::nsl_kdd();
        let mut row = RowBuf::default();
        let bad = NSL.replacen("0,tcp", "zero,tcp", 1);
        let err = map
            .parse_into(split(&bad).into_iter(), &mut row)
            .expect_err("bad");
        let msg = err.to_string();
        assert!(
            msg.contains("duration") && msg.contains("a number") && msg.contains("zero"),
            "{msg}"
        );
    }

    proptest::proptest! {
        #[test]
        fn fast_path_equals_std_parse(int in 0u64..(1u64 << 54), frac in proptest::option::of(0u32..8), neg: bool) {
            let text = match frac {
                Some(places) if places > 0 => {
                    let s = int.to_string();
                    let p = (places as usize).min(s.len().saturating_sub(1));
                    if p == 0 { s } else { format!("{}.{}", &s[..s.len() - p], &s[s.len() - p..]) }
                }
                _ => int.to_string(),
            };
            let text = if neg { format!("-{text}") } else { text };
            let expected: f64 = text.parse().expect("std");
            proptest::prop_assert_eq!(parse_number(text.as_bytes()), Some(expected), "{}", text);
        }
    }

    #[test]
    fn numbers_in_all_dataset_spellings() {
        assert_eq!(
            parse_number(b"27662.385301227576"),
            Some(27662.385301227576)
        );
        assert_eq!(parse_number(b"0.00"), Some(0.0));
        assert_eq!(parse_number(b"-1"), Some(-1.0));
        assert_eq!(parse_number(b"1."), Some(1.0));
        assert_eq!(parse_number(b"-"), None);
        assert_eq!(parse_number(b"1.2.3"), None);
        assert_eq!(parse_number(b"99999999999999999999"), Some(1e20));
        assert_eq!(
            parse_number(b"123456789012345678901234"),
            Some(1.2345678901234568e23)
        );
        assert_eq!(parse_number(b"42"), Some(42.0));
        assert_eq!(parse_number(b" 1.5e3 "), Some(1500.0));
        assert_eq!(parse_number(b"-3.25"), Some(-3.25));
        assert_eq!(parse_number(b"Infinity"), Some(f64::INFINITY));
        assert!(parse_number(b"NaN").is_some_and(f64::is_nan));
        assert_eq!(parse_number(b""), None);
        assert_eq!(parse_number(b"abc"), None);
        assert_eq!(parse_number(b"infinity"), None);
        assert_eq!(parse_number(b"1,2"), None);
    }

    #[test]
    fn cic_improved_header_maps_every_feature() {
        let header = cic_improved_header();
        let fields: Vec<&[u8]> = header.iter().map(|s| s.as_bytes()).collect();
        let map = ColumnMap::from_header(FileFormat::CicImproved, &fields).expect("map");
        assert!(map.missing_numeric.is_empty());
        assert_eq!(map.identifier_names, CIC_IDENTIFIERS.to_vec());
        assert_eq!(map.ignored, vec!["Attempted Category"]);
    }

    #[test]
    fn cic_original_header_with_duplicate_and_spaces() {
        let header = " Destination Port, Flow Duration, Total Fwd Packets, Total Backward Packets,Total Length of Fwd Packets, Total Length of Bwd Packets, Fwd Packet Length Max, Fwd Packet Length Min, Fwd Packet Length Mean, Fwd Packet Length Std,Bwd Packet Length Max, Bwd Packet Length Min, Bwd Packet Length Mean, Bwd Packet Length Std,Flow Bytes/s, Flow Packets/s, Flow IAT Mean, Flow IAT Std, Flow IAT Max, Flow IAT Min,Fwd IAT Total, Fwd IAT Mean, Fwd IAT Std, Fwd IAT Max, Fwd IAT Min,Bwd IAT Total, Bwd IAT Mean, Bwd IAT Std, Bwd IAT Max, Bwd IAT Min,Fwd PSH Flags, Bwd PSH Flags, Fwd URG Flags, Bwd URG Flags, Fwd Header Length, Bwd Header Length,Fwd Packets/s, Bwd Packets/s, Min Packet Length, Max Packet Length, Packet Length Mean, Packet Length Std, Packet Length Variance,FIN Flag Count, SYN Flag Count, RST Flag Count, PSH Flag Count, ACK Flag Count, URG Flag Count, CWE Flag Count, ECE Flag Count, Down/Up Ratio, Average Packet Size, Avg Fwd Segment Size, Avg Bwd Segment Size, Fwd Header Length,Fwd Avg Bytes/Bulk, Fwd Avg Packets/Bulk, Fwd Avg Bulk Rate, Bwd Avg Bytes/Bulk, Bwd Avg Packets/Bulk,Bwd Avg Bulk Rate,Subflow Fwd Packets, Subflow Fwd Bytes, Subflow Bwd Packets, Subflow Bwd Bytes,Init_Win_bytes_forward, Init_Win_bytes_backward, act_data_pkt_fwd, min_seg_size_forward,Active Mean, Active Std, Active Max, Active Min,Idle Mean, Idle Std, Idle Max, Idle Min, Label";
        let fields = split(header);
        assert_eq!(fields.len(), 79);
        let map = ColumnMap::from_header(FileFormat::CicOriginal, &fields).expect("map");
        assert_eq!(
            map.missing_numeric,
            vec![
                "Fwd RST Flags",
                "Bwd RST Flags",
                "ICMP Code",
                "ICMP Type",
                "Total TCP Flow Time"
            ]
        );
        assert_eq!(map.missing_categorical, vec!["Protocol"]);
        assert_eq!(map.ignored, vec!["Fwd Header Length"]);
        let mut values: Vec<String> = (0..78).map(|i| i.to_string()).collect();
        values[14] = "Infinity".into();
        values[15] = "NaN".into();
        values.push("Web Attack \u{fffd} XSS".into());
        let mut row = RowBuf::default();
        map.parse_into(values.iter().map(|s| s.as_bytes()), &mut row)
            .expect("row");
        assert_eq!(row.label, "Web Attack - XSS");
        assert_eq!(row.numeric[13], f32::INFINITY);
        assert!(row.numeric[14].is_nan());
        assert_eq!(row.categorical, vec!["0".to_string(), String::new()]);
    }

    #[test]
    fn unsw_binary_label_must_agree_with_family() {
        let mut header = vec!["\u{feff}id"];
        header.extend(crate::schema::UNSW_FEATURES);
        header.extend(["attack_cat", "label"]);
        let fields: Vec<&[u8]> = header.iter().map(|s| s.as_bytes()).collect();
        let map = ColumnMap::from_header(FileFormat::UnswNb15, &fields).expect("map");
        assert_eq!(map.identifier_names, vec!["id", "stcpb", "dtcpb"]);
        let mut values: Vec<String> = vec!["1".into()];
        for f in crate::schema::UNSW_FEATURES {
            values.push(if ["proto", "service", "state"].contains(&f) {
                "x".into()
            } else {
                "0".into()
            });
        }
        values.push("Normal".into());
        values.push("1".into());
        let mut row = RowBuf::default();
        let err = map
            .parse_into(values.iter().map(|s| s.as_bytes()), &mut row)
            .expect_err("mismatch");
        assert!(err.to_string().contains("label"), "{err}");
        *values.last_mut().expect("last") = "0".into();
        map.parse_into(values.iter().map(|s| s.as_bytes()), &mut row)
            .expect("ok");
        assert_eq!(row.label, "Normal");
    }

    #[test]
    fn missing_columns_are_named() {
        let fields: Vec<&[u8]> = vec![b"id", b"dur", b"attack_cat"];
        let err = ColumnMap::from_header(FileFormat::UnswNb15, &fields).expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("sbytes") && msg.contains("label"), "{msg}");
    }
}
