//! Exact duplicates among a frame's rows: rows whose feature values (every numeric value bit for bit
//! and every categorical value; identifiers and labels excluded) repeat another row's. A benchmark
//! whose novel-family rows are copies of training rows measures memory, not generalisation; these
//! counts say how much of a dataset is repeated, carries conflicting labels, or has twins in the
//! rows a model trains on.
//!
//! Rows are compared by a 128-bit fingerprint of their values (two independently keyed 64-bit
//! hashes); a false match needs a 128-bit collision.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use crate::frame::FlowFrame;

/// A 128-bit fingerprint of row `r`'s feature values.
pub fn fingerprint(frame: &FlowFrame, r: usize) -> (u64, u64) {
    let hash = |key: u64| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        for v in frame.numeric_row(r) {
            // -0.0 and 0.0 are one value; every NaN is one value.
            let bits = if *v == 0.0 {
                0
            } else if v.is_nan() {
                f32::NAN.to_bits()
            } else {
                v.to_bits()
            };
            bits.hash(&mut h);
        }
        for c in frame.categorical_row(r) {
            c.hash(&mut h);
        }
        h.finish()
    };
    (hash(0x9e37_79b9_7f4a_7c15), hash(0xc2b2_ae3d_27d4_eb4f))
}

/// Duplicate counts over a set of rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DuplicateCounts {
    /// Rows counted.
    pub rows: usize,
    /// Distinct feature vectors among them.
    pub distinct: usize,
    /// Rows whose feature vector is also a row of another label anywhere in the frame.
    pub conflicting: usize,
    /// Rows whose feature vector is also one of the `reference` rows (e.g. the training rows).
    pub twins_in_reference: usize,
}

impl DuplicateCounts {
    /// Rows that repeat an earlier row of the set (`rows − distinct`).
    pub fn repeated(&self) -> usize {
        self.rows - self.distinct
    }
}

/// The fingerprints of a frame, with the labels each fingerprint carries.
#[derive(Debug)]
pub struct DuplicateIndex {
    prints: Vec<(u64, u64)>,
    /// Fingerprint → (first label id, whether a second label was seen).
    labels: HashMap<(u64, u64), (u32, bool)>,
}

impl DuplicateIndex {
    /// Fingerprints every row of `frame`.
    pub fn new(frame: &FlowFrame) -> Self {
        let prints: Vec<(u64, u64)> = (0..frame.len()).map(|r| fingerprint(frame, r)).collect();
        let mut labels: HashMap<(u64, u64), (u32, bool)> = HashMap::with_capacity(prints.len());
        for (p, &l) in prints.iter().zip(&frame.labels) {
            let e = labels.entry(*p).or_insert((l, false));
            if e.0 != l {
                e.1 = true;
            }
        }
        DuplicateIndex { prints, labels }
    }

    /// The fingerprints of `rows`, to look twins up in (built once, used for any number of
    /// [`DuplicateIndex::counts`]).
    pub fn reference(&self, rows: &[usize]) -> Reference {
        let mut prints: HashMap<(u64, u64), usize> = HashMap::with_capacity(rows.len());
        for &r in rows {
            *prints.entry(self.prints[r]).or_default() += 1;
        }
        Reference {
            prints,
            rows: rows.iter().copied().collect(),
        }
    }

    /// Whether row `r` has an exact twin among the `reference` rows (a reference row needs another
    /// one: a row is not its own twin).
    pub fn has_twin(&self, r: usize, reference: &Reference) -> bool {
        let n = reference.prints.get(&self.prints[r]).copied().unwrap_or(0);
        n > usize::from(reference.rows.contains(&r))
    }

    /// Whether rows `a` and `b` carry the same feature values.
    pub fn same_values(&self, a: usize, b: usize) -> bool {
        self.prints[a] == self.prints[b]
    }

    /// Counts over `rows`, with twins looked up in `reference` (a row is not its own twin).
    pub fn counts(&self, rows: &[usize], reference: &Reference) -> DuplicateCounts {
        let mut distinct: HashSet<(u64, u64)> = HashSet::with_capacity(rows.len());
        let (mut conflicting, mut twins) = (0, 0);
        for &r in rows {
            let p = self.prints[r];
            distinct.insert(p);
            if self.labels.get(&p).is_some_and(|e| e.1) {
                conflicting += 1;
            }
            twins += usize::from(self.has_twin(r, reference));
        }
        DuplicateCounts {
            rows: rows.len(),
            distinct: distinct.len(),
            conflicting,
            twins_in_reference: twins,
        }
    }
}

/// Rows to look twins up in ([`DuplicateIndex::reference`]).
#[derive(Debug, Default)]
pub struct Reference {
    prints: HashMap<(u64, u64), usize>,
    rows: HashSet<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::RowSource;
    use crate::record::{ColumnMap, RowBuf};

    fn frame(rows: &[(&str, &str)]) -> FlowFrame {
        let map = ColumnMap::nsl_kdd();
        let mut frame = FlowFrame::new(map.layout.clone());
        let f = frame.add_file("t", &map);
        let mut row = RowBuf::default();
        for (i, (duration, label)) in rows.iter().enumerate() {
            let line = format!("{duration},tcp,http,SF,100,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,2,2,0.00,0.00,0.00,0.00,1.00,0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,{label},20");
            map.parse_into(
                line.split(',')
                    .map(str::as_bytes)
                    .collect::<Vec<_>>()
                    .into_iter(),
                &mut row,
            )
            .expect("row");
            frame.push(
                &row,
                RowSource {
                    file: f,
                    line: i as u64 + 1,
                },
            );
        }
        frame
    }

    #[test]
    fn repeats_conflicts_and_twins_are_counted() {
        // Rows 0, 1, 2 share values (labels a, a, b); row 3 is unique; row 4 repeats row 3 with its label.
        let f = frame(&[("1", "a"), ("1", "a"), ("1", "b"), ("2", "c"), ("2", "c")]);
        let idx = DuplicateIndex::new(&f);
        let all = idx.counts(&[0, 1, 2, 3, 4], &idx.reference(&[]));
        assert_eq!((all.rows, all.distinct, all.repeated()), (5, 2, 3));
        assert_eq!(all.conflicting, 3);
        assert_eq!(all.twins_in_reference, 0);
        // "Novel" rows 3, 4 against "training" rows 0, 1, 2: no twins; row 2 against 0, 1: a twin.
        assert_eq!(
            idx.counts(&[3, 4], &idx.reference(&[0, 1, 2]))
                .twins_in_reference,
            0
        );
        assert_eq!(
            idx.counts(&[2], &idx.reference(&[0, 1])).twins_in_reference,
            1
        );
        // Inside the reference: row 3 has another reference row (4) with its values, row 0 alone none.
        assert_eq!(
            idx.counts(&[3], &idx.reference(&[3, 4])).twins_in_reference,
            1
        );
        assert_eq!(
            idx.counts(&[0], &idx.reference(&[0, 3])).twins_in_reference,
            0
        );
    }

    #[test]
    fn zero_signs_and_nans_do_not_split_values() {
        let f = frame(&[("0", "a"), ("-0", "a")]);
        assert_eq!(fingerprint(&f, 0), fingerprint(&f, 1));
    }
}
