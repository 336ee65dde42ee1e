//! In-memory labelled flows: a column-typed table that rows parsed by [`crate::record`] are appended to.
//!
//! Holds raw feature values, interned categories and family labels, and for every row where it came
//! from (file, line) and its identifiers, kept for reports and never exposed as features. It does not
//! transform values: that is [`crate::preprocess`].

use std::collections::{BTreeMap, HashMap};

use crate::record::{ColumnMap, RowBuf};
use crate::schema::{FeatureLayout, FileFormat};

/// Maps strings to dense ids in first-seen order.
#[derive(Debug, Clone, Default)]
pub struct Interner {
    names: Vec<String>,
    ids: HashMap<String, u32>,
}

impl Interner {
    /// The id of `name`, adding it if new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    /// The id of `name`, if present.
    pub fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// The name of `id`.
    pub fn name(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// All names, by id.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no name was interned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// Where a row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSource {
    /// Index into [`FlowFrame::files`].
    pub file: u32,
    /// 1-based line number in that file.
    pub line: u64,
}

/// A file that contributed rows.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as given by the caller.
    pub path: String,
    /// Format it was read as.
    pub format: FileFormat,
    /// Names of its identifier columns.
    pub identifier_names: Vec<String>,
    /// Layout features the file lacks (read as NaN or as the unknown category).
    pub missing_features: Vec<String>,
    /// Rows read from it.
    pub rows: usize,
    /// Malformed rows skipped (only when the caller asked to skip).
    pub skipped: usize,
}

/// Labelled flows of one [`FeatureLayout`], row-major.
#[derive(Debug, Clone)]
pub struct FlowFrame {
    /// The feature layout every row follows.
    pub layout: FeatureLayout,
    /// Raw numeric features, `rows × layout.numeric.len()`, row-major. NaN means missing.
    pub numeric: Vec<f32>,
    /// Categorical codes, `rows × layout.categorical.len()`, indexing `categories[column]`.
    pub categorical: Vec<u32>,
    /// Per categorical column, its interned values.
    pub categories: Vec<Interner>,
    /// Family id of each row, indexing `families`.
    pub labels: Vec<u32>,
    /// Interned family labels.
    pub families: Interner,
    /// Origin of each row.
    pub sources: Vec<RowSource>,
    /// Files read, in order.
    pub files: Vec<SourceFile>,
    /// Identifier values of all rows, each value followed by U+001F, for reports only.
    identifier_text: String,
    /// Start of each row's identifiers in `identifier_text` (one more entry than rows).
    identifier_starts: Vec<usize>,
}

impl FlowFrame {
    /// An empty frame of `layout`.
    pub fn new(layout: FeatureLayout) -> Self {
        let categories = vec![Interner::default(); layout.categorical.len()];
        FlowFrame {
            layout,
            numeric: Vec::new(),
            categorical: Vec::new(),
            categories,
            labels: Vec::new(),
            families: Interner::default(),
            sources: Vec::new(),
            files: Vec::new(),
            identifier_text: String::new(),
            identifier_starts: vec![0],
        }
    }

    /// Registers a file about to be read with `map`; returns its index for [`FlowFrame::push`].
    pub fn add_file(&mut self, path: &str, map: &ColumnMap) -> u32 {
        let mut missing_features = map.missing_numeric.clone();
        missing_features.extend(map.missing_categorical.iter().cloned());
        self.files.push(SourceFile {
            path: path.to_string(),
            format: map.format,
            identifier_names: map.identifier_names.clone(),
            missing_features,
            rows: 0,
            skipped: 0,
        });
        (self.files.len() - 1) as u32
    }

    /// Drops every row, keeping the layout, the files read and the interned categories and labels:
    /// what a streaming reader does after handing a chunk on, so memory is bounded by the chunk.
    pub fn clear_rows(&mut self) {
        self.numeric.clear();
        self.categorical.clear();
        self.labels.clear();
        self.sources.clear();
        self.identifier_text.clear();
        self.identifier_starts.clear();
        self.identifier_starts.push(0);
    }

    /// Appends a parsed row.
    pub fn push(&mut self, row: &RowBuf, source: RowSource) {
        debug_assert_eq!(row.numeric.len(), self.layout.numeric.len());
        self.numeric.extend_from_slice(&row.numeric);
        let dc = self.layout.categorical.len();
        for (j, v) in row.categorical.iter().enumerate() {
            // Consecutive rows mostly repeat a category: reuse the previous row's code when it matches.
            let code = match self
                .categorical
                .len()
                .checked_sub(dc)
                .map(|i| self.categorical[i])
            {
                Some(prev) if self.categories[j].name(prev) == v => prev,
                _ => self.categories[j].intern(v),
            };
            self.categorical.push(code);
        }
        let label = match self.labels.last() {
            Some(&prev) if self.families.name(prev) == row.label => prev,
            _ => self.families.intern(&row.label),
        };
        self.labels.push(label);
        self.sources.push(source);
        for id in &row.identifiers {
            self.identifier_text.push_str(id);
            self.identifier_text.push('\u{1f}');
        }
        self.identifier_starts.push(self.identifier_text.len());
        if let Some(f) = self.files.get_mut(source.file as usize) {
            f.rows += 1;
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the frame has no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Numeric features of row `r`.
    pub fn numeric_row(&self, r: usize) -> &[f32] {
        let d = self.layout.numeric.len();
        &self.numeric[r * d..(r + 1) * d]
    }

    /// Categorical values of row `r`, as strings.
    pub fn categorical_row(&self, r: usize) -> impl Iterator<Item = &str> + '_ {
        let d = self.layout.categorical.len();
        self.categorical[r * d..(r + 1) * d]
            .iter()
            .enumerate()
            .map(|(j, &c)| self.categories[j].name(c))
    }

    /// Family label of row `r`.
    pub fn label(&self, r: usize) -> &str {
        self.families.name(self.labels[r])
    }

    /// Identifier (name, value) pairs of row `r`: for reports, never for features.
    pub fn identifiers(&self, r: usize) -> Vec<(&str, &str)> {
        let names = &self.files[self.sources[r].file as usize].identifier_names;
        let values =
            &self.identifier_text[self.identifier_starts[r]..self.identifier_starts[r + 1]];
        names
            .iter()
            .map(String::as_str)
            .zip(values.split_terminator('\u{1f}'))
            .collect()
    }

    /// Row `r`'s identifier values, in its file's `identifier_names` order.
    pub fn identifier_values(&self, r: usize) -> impl Iterator<Item = &str> + '_ {
        self.identifier_text[self.identifier_starts[r]..self.identifier_starts[r + 1]]
            .split_terminator('\u{1f}')
    }

    /// Row `r`'s value of categorical column `j` of the layout.
    pub fn categorical_value(&self, r: usize, j: usize) -> &str {
        let d = self.layout.categorical.len();
        self.categories[j].name(self.categorical[r * d + j])
    }

    /// A short human reference to row `r`: `file:line`.
    pub fn provenance(&self, r: usize) -> String {
        let s = self.sources[r];
        format!("{}:{}", self.files[s.file as usize].path, s.line)
    }

    /// Row indices of each family, by family name (sorted by name for determinism).
    pub fn rows_by_family(&self) -> BTreeMap<String, Vec<usize>> {
        let mut by_id: Vec<Vec<usize>> = vec![Vec::new(); self.families.len()];
        for (r, &l) in self.labels.iter().enumerate() {
            by_id[l as usize].push(r);
        }
        by_id
            .into_iter()
            .enumerate()
            .map(|(id, rows)| (self.families.name(id as u32).to_string(), rows))
            .collect()
    }

    /// Row count of each family.
    pub fn family_counts(&self) -> BTreeMap<String, usize> {
        self.rows_by_family()
            .into_iter()
            .map(|(k, v)| (k, v.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_read_back() {
        let map = ColumnMap::nsl_kdd();
        let mut frame = FlowFrame::new(map.layout.clone());
        let f = frame.add_file("a.txt", &map);
        let mut row = RowBuf::default();
        let line = "0,tcp,private,REJ,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,229,10,0.00,0.00,1.00,1.00,0.04,0.06,0.00,255,10,0.04,0.06,0.00,0.00,0.00,0.00,1.00,1.00,neptune,21";
        map.parse_into(
            line.split(',')
                .map(str::as_bytes)
                .collect::<Vec<_>>()
                .into_iter(),
            &mut row,
        )
        .expect("row");
        frame.push(&row, RowSource { file: f, line: 1 });
        frame.push(&row, RowSource { file: f, line: 2 });
        assert_eq!(frame.len(), 2);
        assert_eq!(frame.label(1), "neptune");
        assert_eq!(
            frame.categorical_row(0).collect::<Vec<_>>(),
            vec!["tcp", "private", "REJ"]
        );
        assert_eq!(frame.family_counts().get("neptune"), Some(&2));
        assert_eq!(frame.provenance(1), "a.txt:2");
        assert!(frame.identifiers(0).is_empty());
        assert_eq!(frame.files[0].rows, 2);
    }
}
