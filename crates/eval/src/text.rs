//! Text features of web payloads for the classical baselines: TF-IDF of the `http-requests`
//! layout's hashed character n-gram counts (the shape counts left out), smoothed inverse document
//! frequency `ln((1 + n) / (1 + df)) + 1` fit on the rows given, each row scaled to unit L2 norm
//! (scikit-learn's `TfidfVectorizer` defaults). Used by `tfidf-logreg` ([`crate::tfidf`]) and the
//! forest on TF-IDF rows ([`crate::baselines::Forest::on_tfidf`]).

use crate::method::EvalContext;

/// The TF-IDF featuriser: the `ngram_*` columns' raw counts times their smoothed inverse document
/// frequency on the rows it was fit on, each row scaled to unit L2 norm.
#[derive(Debug, Clone, Default)]
pub struct Tfidf {
    /// Frame columns of the n-gram buckets.
    cols: Vec<usize>,
    idf: Vec<f32>,
}

impl Tfidf {
    /// Fits the inverse document frequencies on frame rows `rows`; `None` when the frame has no
    /// n-gram columns (not the http-requests layout).
    pub fn fit(ctx: &EvalContext<'_>, rows: &[usize]) -> Option<Self> {
        let cols: Vec<usize> = ctx
            .frame
            .layout
            .numeric
            .iter()
            .enumerate()
            .filter(|(_, n)| n.starts_with("ngram_"))
            .map(|(i, _)| i)
            .collect();
        if cols.is_empty() {
            return None;
        }
        let n = rows.len() as f32;
        let idf = cols
            .iter()
            .map(|&c| {
                let df = rows
                    .iter()
                    .filter(|&&r| ctx.frame.numeric_row(r)[c] > 0.0)
                    .count() as f32;
                ((1.0 + n) / (1.0 + df)).ln() + 1.0
            })
            .collect();
        Some(Tfidf { cols, idf })
    }

    /// Columns of a TF-IDF row.
    pub fn dim(&self) -> usize {
        self.cols.len()
    }

    /// The TF-IDF row of frame row `r` into `out`.
    pub fn row(&self, ctx: &EvalContext<'_>, r: usize, out: &mut [f32]) {
        let raw = ctx.frame.numeric_row(r);
        let mut norm = 0.0f32;
        for ((o, &c), &idf) in out.iter_mut().zip(&self.cols).zip(&self.idf) {
            let tf = raw[c];
            *o = if tf.is_finite() && tf > 0.0 {
                tf * idf
            } else {
                0.0
            };
            norm += *o * *o;
        }
        if norm > 0.0 {
            let inv = norm.sqrt().recip();
            out.iter_mut().for_each(|v| *v *= inv);
        }
    }

    /// The TF-IDF rows of frame rows `rows`, row-major.
    pub fn rows(&self, ctx: &EvalContext<'_>, rows: &[usize]) -> Vec<f32> {
        let d = self.dim();
        let mut out = vec![0.0; rows.len() * d];
        for (o, &r) in out.chunks_exact_mut(d).zip(rows) {
            self.row(ctx, r, o);
        }
        out
    }
}
