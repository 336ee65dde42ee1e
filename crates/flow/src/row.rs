//! Flow records as rows of a metaids-core [`FlowFrame`] in the CIC layout, so that flows from
//! captures are preprocessed and scored in memory without a CSV round trip.
//!
//! The values are exactly those a reader would get from the CSV that [`crate::CsvWriter`] writes:
//! integer features truncated toward zero, non-finite values as 0, then stored as `f32`; the
//! categorical features are `Dst Port` and `Protocol` as decimal text. Identifier columns are not
//! filled (the caller keeps the [`FlowRecord`] itself for reports). It does no I/O.

use metaids_core::record::{ColumnMap, RowBuf};
use metaids_core::schema::{cic_improved_header, DatasetKind, FileFormat};
use metaids_core::{FlowFrame, RowSource};

use crate::engine::FlowRecord;
use crate::features::{FeatureKind, FEATURE_KINDS};
use crate::output::UNLABELLED;

/// The value a CSV reader would read back for one feature written by [`crate::CsvWriter`].
#[inline]
pub fn csv_value(value: f64, kind: FeatureKind) -> f32 {
    if !value.is_finite() {
        return 0.0;
    }
    match kind {
        FeatureKind::Int => value.trunc() as f32,
        FeatureKind::Float => value as f32,
    }
}

/// Fills `row` with `record`'s 81 features and its `Dst Port` / `Protocol` categories (label
/// `unlabelled`, no identifiers), reusing the row's buffers.
pub fn fill_row(record: &FlowRecord, row: &mut RowBuf) {
    row.numeric.clear();
    row.numeric.extend(
        record
            .features
            .iter()
            .zip(FEATURE_KINDS)
            .map(|(&v, k)| csv_value(v, k)),
    );
    row.categorical.resize(2, String::new());
    row.categorical[0].clear();
    row.categorical[1].clear();
    // Writing to a String cannot fail.
    crate::text::push_int(&mut row.categorical[0], record.dst_port);
    crate::text::push_int(&mut row.categorical[1], record.protocol);
    if row.label != UNLABELLED {
        row.label.clear();
        row.label.push_str(UNLABELLED);
    }
    row.identifiers.clear();
}

/// Appends flow records to a [`FlowFrame`] of the CIC layout (one registered source named by the
/// caller), with a reused row buffer.
#[derive(Debug)]
pub struct FrameBuilder {
    frame: FlowFrame,
    file: u32,
    row: RowBuf,
    /// Identifier names of the registered file (the CSV header's, in its order).
    identifier_names: Vec<String>,
    /// Whether rows keep their identifiers.
    keep_identifiers: bool,
}

impl FrameBuilder {
    /// An empty frame of the CIC layout whose rows come from a source called `name`.
    pub fn new(name: &str) -> Self {
        let header: Vec<&[u8]> = cic_improved_header()
            .into_iter()
            .map(str::as_bytes)
            .collect();
        let mut frame = FlowFrame::new(DatasetKind::Cic.layout());
        // The corrected header always maps (a unit test checks it); without a map the frame
        // simply has no registered file.
        let (file, identifier_names) =
            match ColumnMap::from_header(FileFormat::CicImproved, &header) {
                Ok(map) => (frame.add_file(name, &map), map.identifier_names),
                Err(_) => (0, Vec::new()),
            };
        FrameBuilder {
            frame,
            file,
            row: RowBuf::default(),
            identifier_names,
            keep_identifiers: false,
        }
    }

    /// [`FrameBuilder::new`], and every row keeps its identifiers (`id`, `Flow ID`, `Src IP`,
    /// `Src Port`, `Dst IP`, `Timestamp`, as the CSV writer writes them), so
    /// [`FlowFrame::identifiers`] answers as for the extracted CSV. Identifiers are never features;
    /// this is for callers that group or locate flows by them (the baseline's per-source cap).
    /// Costs a few string writes per flow, which the detection hot path does without.
    pub fn with_identifiers(name: &str) -> Self {
        FrameBuilder {
            keep_identifiers: true,
            ..Self::new(name)
        }
    }

    /// Appends one record (its row's `line` is its position, 1-based).
    pub fn push(&mut self, record: &FlowRecord) {
        fill_row(record, &mut self.row);
        if self.keep_identifiers {
            // The CSV writer's own formatting (`output`), so the values are the CSV's.
            for name in &self.identifier_names {
                let mut v = String::new();
                match name.as_str() {
                    "id" => crate::text::push_int(&mut v, record.id),
                    "Flow ID" => record.push_flow_id(&mut v),
                    "Src IP" => crate::text::push_ip(&mut v, &record.src),
                    "Src Port" => crate::text::push_int(&mut v, record.src_port),
                    "Dst IP" => crate::text::push_ip(&mut v, &record.dst),
                    "Timestamp" => {
                        metaids_core::time::push_timestamp_us(&mut v, record.start_us, ' ')
                    }
                    _ => {}
                }
                self.row.identifiers.push(v);
            }
        }
        let line = self.frame.len() as u64 + 1;
        self.frame.push(
            &self.row,
            RowSource {
                file: self.file,
                line,
            },
        );
    }

    /// Rows so far.
    pub fn len(&self) -> usize {
        self.frame.len()
    }

    /// Whether no row was pushed.
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }

    /// The frame built so far.
    pub fn frame(&self) -> &FlowFrame {
        &self.frame
    }

    /// Takes the frame, leaving an empty one for the same source.
    pub fn take(&mut self) -> FlowFrame {
        let name = self
            .frame
            .files
            .first()
            .map_or_else(|| "flows".to_string(), |f| f.path.clone());
        let fresh = FrameBuilder::new(&name);
        self.file = fresh.file;
        std::mem::replace(&mut self.frame, fresh.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EndReason;
    use crate::features::FEATURE_COUNT;
    use metaids_core::schema::CIC_FLOW_FEATURES;

    fn record() -> FlowRecord {
        let mut features = [0.0; FEATURE_COUNT];
        for (i, f) in features.iter_mut().enumerate() {
            *f = i as f64 * 1.75;
        }
        features[13] = f64::INFINITY;
        FlowRecord {
            id: 7,
            src: "10.0.0.1".parse().expect("ip"),
            src_port: 40000,
            dst: "10.0.0.2".parse().expect("ip"),
            dst_port: 22,
            protocol: 6,
            start_us: 1_499_434_776_267_908,
            end_reason: EndReason::TcpTermination,
            features,
            fwd_frame_bytes: 0,
            bwd_frame_bytes: 0,
        }
    }

    #[test]
    fn rows_equal_what_the_csv_reader_reads() {
        let r = record();
        // The CSV path: write, then parse the data line with the reader's column map.
        let mut csv = crate::CsvWriter::new(Vec::new(), None).expect("csv");
        csv.write(&r).expect("write");
        let bytes = csv.finish().expect("finish");
        let text = String::from_utf8(bytes).expect("utf8");
        let mut lines = text.lines();
        let header: Vec<&[u8]> = lines
            .next()
            .expect("header")
            .split(',')
            .map(str::as_bytes)
            .collect();
        let map = ColumnMap::from_header(FileFormat::CicImproved, &header).expect("map");
        let mut parsed = RowBuf::default();
        let line = lines.next().expect("row");
        let fields: Vec<&[u8]> = line.split(',').map(str::as_bytes).collect();
        map.parse_into(fields.into_iter(), &mut parsed)
            .expect("parse");
        let mut b = FrameBuilder::new("mem");
        b.push(&r);
        b.push(&r);
        assert_eq!(b.len(), 2);
        let frame = b.take();
        assert!(b.is_empty());
        assert_eq!(frame.layout, DatasetKind::Cic.layout());
        assert_eq!(frame.numeric_row(1), parsed.numeric.as_slice());
        assert_eq!(
            frame.categorical_row(0).collect::<Vec<_>>(),
            parsed.categorical
        );
        assert_eq!(frame.label(0), UNLABELLED);
        assert_eq!(frame.numeric_row(0).len(), CIC_FLOW_FEATURES.len());
        assert_eq!(frame.numeric_row(0)[13], 0.0);
        assert_eq!(frame.files.len(), 1);
        // Without identifiers by default; with them, exactly the CSV's.
        assert!(frame.identifiers(0).is_empty());
        let mut b = FrameBuilder::with_identifiers("mem");
        b.push(&r);
        let frame = b.take();
        let ids: Vec<String> = frame
            .identifiers(0)
            .into_iter()
            .map(|(_, v)| v.to_string())
            .collect();
        assert_eq!(ids, parsed.identifiers);
        assert!(frame.identifiers(0).contains(&("Src IP", "10.0.0.1")));
        assert_eq!(frame.numeric_row(0), parsed.numeric.as_slice());
    }
}
