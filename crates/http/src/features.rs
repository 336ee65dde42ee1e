//! Web-request payloads as feature rows of the `http-requests` layout
//! ([`metaids_core::DatasetKind::HttpRequests`]), so that the few-shot protocol, its baselines and
//! the meta-learned model take them as they take flows.
//!
//! A payload's features, in layout order:
//! - seven shape counts of the bytes as given ([`HTTP_SHAPE_FEATURES`]): length, ASCII letters,
//!   digits, spaces, ASCII punctuation, bytes outside ASCII, `%XX` escapes;
//! - [`HTTP_NGRAM_BUCKETS`] counts of character 1-, 2- and 3-grams of the payload after one pass of
//!   percent-decoding and ASCII lower-casing (`%2E%2e%2F` and `../` give the same n-grams), each
//!   n-gram hashed (FNV-1a, 32-bit, with n mixed in) into a bucket.
//!
//! The hash is written out here rather than taken from `std` (whose hasher may change between
//! releases), so a stored model's features mean the same on every build; a test pins it. The
//! counts are raw: the normaliser fit on training rows log-scales and standardises them.

use metaids_core::frame::RowSource;
use metaids_core::record::{ColumnMap, RowBuf};
use metaids_core::schema::{ColumnRole, HTTP_NGRAM_BUCKETS, HTTP_SHAPE_FEATURES};
use metaids_core::{DatasetKind, FileFormat, FlowFrame};

use crate::payloads::Payload;

/// Features per payload.
pub const DIM: usize = HTTP_SHAPE_FEATURES.len() + HTTP_NGRAM_BUCKETS;

/// Longest n-gram.
const MAX_N: usize = 3;

/// FNV-1a over `n` then the bytes: the bucket of an n-gram.
fn bucket(n: usize, gram: &[u8]) -> usize {
    let mut h: u32 = 0x811c_9dc5;
    for &b in std::iter::once(&(n as u8)).chain(gram) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % HTTP_NGRAM_BUCKETS
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// `text` with `%XX` escapes decoded once and ASCII lower-cased, into `out`; returns the escapes.
fn decode_lower(text: &[u8], out: &mut Vec<u8>) -> usize {
    out.clear();
    let mut escapes = 0;
    let mut i = 0;
    while i < text.len() {
        let b = text[i];
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                text.get(i + 1).copied().and_then(hex),
                text.get(i + 2).copied().and_then(hex),
            ) {
                out.push((h << 4 | l).to_ascii_lowercase());
                escapes += 1;
                i += 3;
                continue;
            }
        }
        out.push(b.to_ascii_lowercase());
        i += 1;
    }
    escapes
}

/// Writes the features of `text` into `out` (length [`DIM`]); `scratch` is reused between calls.
pub fn featurise(text: &[u8], out: &mut [f32], scratch: &mut Vec<u8>) {
    assert_eq!(
        out.len(),
        DIM,
        "an http-requests feature row has {DIM} values"
    );
    out.fill(0.0);
    let escapes = decode_lower(text, scratch);
    let mut shape = [0u32; 6];
    for &b in text {
        let k = if b.is_ascii_alphabetic() {
            1
        } else if b.is_ascii_digit() {
            2
        } else if b == b' ' {
            3
        } else if b.is_ascii_punctuation() {
            4
        } else if !b.is_ascii() {
            5
        } else {
            0
        };
        shape[k] += 1;
    }
    out[0] = text.len() as f32;
    for k in 1..6 {
        out[k] = shape[k] as f32;
    }
    out[6] = escapes as f32;
    let grams = &mut out[HTTP_SHAPE_FEATURES.len()..];
    for n in 1..=MAX_N {
        for gram in scratch.windows(n) {
            grams[bucket(n, gram)] += 1.0;
        }
    }
}

/// The column map a payload file is read with: `family` the label, `source` the identifier
/// (shown in reports, never a feature), `payload` the text the features come from.
fn column_map() -> ColumnMap {
    ColumnMap {
        format: FileFormat::HttpPayloads,
        layout: DatasetKind::HttpRequests.layout(),
        roles: vec![
            ColumnRole::Label,
            ColumnRole::Identifier(0),
            ColumnRole::Ignored,
        ],
        names: vec!["family".into(), "source".into(), "payload".into()],
        identifier_names: vec!["source".into()],
        missing_numeric: Vec::new(),
        missing_categorical: Vec::new(),
        ignored: Vec::new(),
    }
}

/// Feature rows appended to a frame of the `http-requests` layout, with the buffers reused from
/// row to row.
#[derive(Debug, Default)]
pub struct RowWriter {
    row: RowBuf,
    scratch: Vec<u8>,
}

impl RowWriter {
    /// A writer.
    pub fn new() -> Self {
        let mut row = RowBuf::default();
        row.numeric.resize(DIM, 0.0);
        RowWriter {
            row,
            scratch: Vec::new(),
        }
    }

    /// Registers the source `path` with `frame` (its rows' identifier is `source`) and returns
    /// its file index for [`RowWriter::push`].
    pub fn add_file(frame: &mut FlowFrame, path: &str) -> u32 {
        frame.add_file(path, &column_map())
    }

    /// Appends the features of `text` as a row labelled `label`, identified by `source`, read
    /// from line `line` of file `file`.
    pub fn push(
        &mut self,
        frame: &mut FlowFrame,
        at: RowSource,
        label: &str,
        source: &str,
        text: &[u8],
    ) {
        featurise(text, &mut self.row.numeric, &mut self.scratch);
        self.row.label.clear();
        self.row.label.push_str(label);
        match self.row.identifiers.first_mut() {
            Some(id) => {
                id.clear();
                id.push_str(source);
            }
            None => self.row.identifiers.push(source.to_string()),
        }
        frame.push(&self.row, at);
    }
}

/// Appends the payloads of the file `path` to `frame` (of the `http-requests` layout), one row
/// each, labelled by family, with the line its row starts on.
pub fn push_payloads(frame: &mut FlowFrame, path: &str, payloads: &[Payload]) {
    let file = RowWriter::add_file(frame, path);
    let mut w = RowWriter::new();
    for p in payloads {
        w.push(
            frame,
            RowSource { file, line: p.line },
            &p.family,
            &p.source,
            p.payload.as_bytes(),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(text: &str) -> Vec<f32> {
        let mut out = vec![0.0; DIM];
        featurise(text.as_bytes(), &mut out, &mut Vec::new());
        out
    }

    #[test]
    fn the_layout_and_the_features_agree() {
        assert_eq!(DatasetKind::HttpRequests.layout().numeric.len(), DIM);
        let f = features("a=1 %27");
        assert_eq!(
            &f[..7],
            &[7.0, 1.0, 3.0, 1.0, 2.0, 0.0, 1.0],
            "the escape's hex digits count as sent"
        );
        // "a=1 '" decoded: 5 unigrams, 4 bigrams, 3 trigrams.
        assert_eq!(f[7..].iter().sum::<f32>(), 12.0);
    }

    #[test]
    fn encodings_and_case_give_the_same_ngrams() {
        let plain = features("../../ETC/passwd");
        let encoded = features("%2e%2E%2f..%2Fetc%2Fpasswd");
        assert_eq!(plain[7..], encoded[7..]);
        assert_ne!(
            plain[..7],
            encoded[..7],
            "the shape counts see the bytes as sent"
        );
    }

    /// The hash is part of every stored model's meaning: it must never change silently.
    #[test]
    fn the_bucket_hash_is_pinned() {
        assert_eq!(bucket(1, b"a"), 0x17);
        assert_eq!(bucket(3, b"' o"), 0x56);
        assert_eq!(bucket(2, b"<s"), 0x98);
    }

    #[test]
    fn a_frame_gets_one_labelled_row_per_payload() {
        let payloads = [
            Payload {
                family: "benign".into(),
                source: "x/a.csv:2".into(),
                payload: "campello, el".into(),
                line: 2,
            },
            Payload {
                family: "sqli".into(),
                source: "x/b.txt:9".into(),
                payload: "' OR 1=1--".into(),
                line: 3,
            },
        ];
        let mut frame = FlowFrame::new(DatasetKind::HttpRequests.layout());
        push_payloads(&mut frame, "payloads.csv.gz", &payloads);
        assert_eq!(frame.len(), 2);
        assert_eq!(frame.label(1), "sqli");
        assert_eq!(frame.numeric_row(1), features("' OR 1=1--"));
        assert_eq!(frame.identifiers(0), [("source", "x/a.csv:2")]);
        assert_eq!(frame.provenance(1), "payloads.csv.gz:3");
    }
}
