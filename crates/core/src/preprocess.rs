//! Preprocessing fit on training rows only: one-hot categoricals with an unknown bucket, a signed log1p
//! for heavy-tailed columns, standardisation with clipping.
//!
//! A [`Normaliser`] remembers the schema hash of the layout it was fit on and refuses a frame of another
//! layout. It never looks at labels, and it only ever sees the rows the caller passes to
//! [`Normaliser::fit`]: the split decides which those are.

use serde::{Deserialize, Serialize};

use crate::frame::FlowFrame;
use crate::schema::{DatasetKind, FeatureLayout};
use crate::CoreError;

/// Preprocessing parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreprocessConfig {
    /// Standardised values are clipped to `[-clip, clip]`; infinities map to the bounds.
    pub clip: f32,
    /// A category needs at least this many training rows to get its own one-hot column.
    pub min_category_count: usize,
    /// At most this many one-hot columns per categorical feature (most frequent first), plus unknown.
    pub max_categories: usize,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig {
            clip: 8.0,
            min_category_count: 3,
            max_categories: 64,
        }
    }
}

/// How one numeric column is transformed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericColumn {
    /// Column name.
    pub name: String,
    /// Whether the signed log1p is applied before standardising. Chosen at fit time: columns whose
    /// training values leave [-1, 1] (counts, bytes, rates, durations) are log-scaled; ratios are not.
    pub log: bool,
    /// Mean of the (log-scaled) finite training values.
    pub mean: f32,
    /// Standard deviation of the same; 1 for constant columns.
    pub std: f32,
}

/// How one categorical column is one-hot encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalColumn {
    /// Column name.
    pub name: String,
    /// The values with their own one-hot column, in output order. Any other value, and a missing one,
    /// goes to a final unknown column.
    pub values: Vec<String>,
}

/// A preprocessing transform fit on training rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normaliser {
    /// Format version of this serialisation.
    pub version: u32,
    /// Dataset kind of the layout it was fit on.
    pub kind: DatasetKind,
    /// Schema hash of that layout ([`FeatureLayout::hash`]).
    pub schema_hash: String,
    /// Parameters used.
    pub config: PreprocessConfig,
    /// Numeric columns, in layout order.
    pub numeric: Vec<NumericColumn>,
    /// Categorical columns, in layout order.
    pub categorical: Vec<CategoricalColumn>,
    /// Number of rows it was fit on.
    pub fit_rows: usize,
}

/// Mean and standard deviation of the finite `values` after the signed log1p when `log` (a
/// [`NumericColumn`]'s parameters; the deviation is 1 for a constant column), or `None` without a
/// finite value.
pub fn standardisation(values: impl Iterator<Item = f32>, log: bool) -> Option<(f32, f32)> {
    let (mut n, mut sum, mut sumsq) = (0usize, 0f64, 0f64);
    for v in values.filter(|v| v.is_finite()) {
        let t = f64::from(if log { signed_log1p(v) } else { v });
        n += 1;
        sum += t;
        sumsq += t * t;
    }
    if n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    let std = (sumsq / n as f64 - mean * mean).max(0.0).sqrt();
    Some((mean as f32, if std < 1e-9 { 1.0 } else { std as f32 }))
}

/// Whether a numeric column measures time (a duration, an inter-arrival time, an active or idle
/// period, a flow time) or a per-second rate — what a loaded server or a slower link stretches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimingKind {
    /// Grows with the flow's timing.
    Time,
    /// Shrinks with it (`…/s`).
    Rate,
}

/// [`TimingKind`] of a column by its (CICFlowMeter) name, case-insensitive; `None` for the rest.
pub fn timing_kind(name: &str) -> Option<TimingKind> {
    let n = name.to_ascii_lowercase();
    if n.ends_with("/s") {
        Some(TimingKind::Rate)
    } else if ["iat", "duration", "active", "idle", "flow time"]
        .iter()
        .any(|k| n.contains(k))
    {
        Some(TimingKind::Time)
    } else {
        None
    }
}

/// Signed log1p: `sign(x) · ln(1 + |x|)`, defined on the whole real line (`±inf` for `±inf`,
/// NaN for NaN).
///
/// The preprocessing hot path (one logarithm per non-zero logged feature of every flow): computed
/// inline rather than through libm's `log1pf`, within 1 ulp of `f32::ln_1p` (property test
/// `fast_log1p_matches_the_library`).
#[inline]
pub fn signed_log1p(x: f32) -> f32 {
    // Flow features are mostly zeros; skip the logarithm for them.
    if x == 0.0 {
        return 0.0;
    }
    let a = x.abs();
    if !a.is_finite() {
        return x;
    }
    fast_ln_1p(a).copysign(x)
}

/// `ln(1 + a)` for finite `a > 0`, computed in `f64` and rounded once: `ln(1 + a) = 2 atanh(s)`
/// with `s = a / (2 + a)` for `a < √2 − 1`, else `u = 1 + a` split into `2^e · m` with `m` in
/// `[√½, √2)` and `s = (m − 1)/(m + 1)`; `|s| < 0.172`, odd series to `s⁹` (relative error below
/// 3e-9, a twentieth of an `f32` ulp). Within 1 ulp of `f32::ln_1p` for every positive finite
/// `f32` (checked exhaustively when written; the former all-`f32` version was off by up to 4 ulp
/// on 0.03% of them, which made its 2-ulp property test fail now and then).
#[inline]
fn fast_ln_1p(a: f32) -> f32 {
    let a = f64::from(a);
    let (s, e) = if a < std::f64::consts::SQRT_2 - 1.0 {
        (a / (2.0 + a), 0.0)
    } else {
        let bits = (1.0 + a).to_bits();
        let mut e = ((bits >> 52) & 0x7ff) as i32 - 1023;
        let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
        if m > std::f64::consts::SQRT_2 {
            m *= 0.5;
            e += 1;
        }
        ((m - 1.0) / (m + 1.0), f64::from(e))
    };
    let s2 = s * s;
    let series = 1.0 + s2 * (1.0 / 3.0 + s2 * (1.0 / 5.0 + s2 * (1.0 / 7.0 + s2 * (1.0 / 9.0))));
    (e * std::f64::consts::LN_2 + 2.0 * s * series) as f32
}

impl Normaliser {
    /// Fits on `rows` of `frame` (and nothing else).
    ///
    /// # Errors
    /// [`CoreError::Preprocess`] when `rows` is empty or the config is invalid.
    pub fn fit(
        frame: &FlowFrame,
        rows: &[usize],
        config: PreprocessConfig,
    ) -> Result<Self, CoreError> {
        if rows.is_empty() {
            return Err(CoreError::Preprocess(
                "cannot fit on zero training rows".into(),
            ));
        }
        if !(config.clip.is_finite() && config.clip > 0.0) {
            return Err(CoreError::Preprocess(format!(
                "clip must be positive, got {}",
                config.clip
            )));
        }
        let d = frame.layout.numeric.len();
        let mut numeric = Vec::with_capacity(d);
        for (i, name) in frame.layout.numeric.iter().enumerate() {
            let values = rows
                .iter()
                .map(|&r| frame.numeric[r * d + i])
                .filter(|v| v.is_finite());
            let log = values.clone().any(|v| v.abs() > 1.0);
            let (mean, std) = standardisation(values, log).unwrap_or((0.0, 1.0));
            numeric.push(NumericColumn {
                name: name.clone(),
                log,
                mean,
                std,
            });
        }
        let dc = frame.layout.categorical.len();
        let mut categorical = Vec::with_capacity(dc);
        for (j, name) in frame.layout.categorical.iter().enumerate() {
            let interner = &frame.categories[j];
            let mut counts = vec![0usize; interner.len()];
            for &r in rows {
                counts[frame.categorical[r * dc + j] as usize] += 1;
            }
            let mut kept: Vec<(usize, &str)> = counts
                .iter()
                .enumerate()
                .filter(|(code, &c)| {
                    c >= config.min_category_count.max(1) && !interner.name(*code as u32).is_empty()
                })
                .map(|(code, &c)| (c, interner.name(code as u32)))
                .collect();
            kept.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            kept.truncate(config.max_categories);
            categorical.push(CategoricalColumn {
                name: name.clone(),
                values: kept.into_iter().map(|(_, v)| v.to_string()).collect(),
            });
        }
        Ok(Normaliser {
            version: 1,
            kind: frame.layout.kind,
            schema_hash: frame.layout.hash(),
            config,
            numeric,
            categorical,
            fit_rows: rows.len(),
        })
    }

    /// Per output column, the shift in preprocessed units that multiplies a flow's timing by
    /// `factor`: `+ln(factor)/std` for the log-scaled durations, inter-arrival times, active and idle
    /// periods and TCP flow time, `−ln(factor)/std` for the log-scaled per-second rates, 0 for every
    /// other column (counts, sizes, flags, one-hot). On the log scale `ln(1 + f·x) ≈ ln(1 + x) +
    /// ln f` once `x` is well above 1, as durations in microseconds are. The site forest's timing
    /// jitter ([`timing_kind`] says which columns).
    pub fn timing_shift(&self, factor: f32) -> Vec<f32> {
        let mut out = vec![0.0; self.output_dim()];
        let step = if factor.is_finite() && factor > 0.0 {
            factor.ln()
        } else {
            0.0
        };
        for (o, c) in out.iter_mut().zip(&self.numeric) {
            if !c.log || c.std <= 0.0 {
                continue;
            }
            match timing_kind(&c.name) {
                Some(TimingKind::Time) => *o = step / c.std,
                Some(TimingKind::Rate) => *o = -step / c.std,
                None => {}
            }
        }
        out
    }

    /// Width of a transformed row.
    pub fn output_dim(&self) -> usize {
        self.numeric.len()
            + self
                .categorical
                .iter()
                .map(|c| c.values.len() + 1)
                .sum::<usize>()
    }

    /// Names of the output columns (`name`, `name=value`, `name=<unknown>`).
    pub fn output_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.numeric.iter().map(|c| c.name.clone()).collect();
        for c in &self.categorical {
            names.extend(c.values.iter().map(|v| format!("{}={v}", c.name)));
            names.push(format!("{}=<unknown>", c.name));
        }
        names
    }

    /// Refuses a layout other than the one it was fit on.
    pub fn check(&self, layout: &FeatureLayout) -> Result<(), CoreError> {
        let found_hash = layout.hash();
        if found_hash != self.schema_hash {
            return Err(CoreError::SchemaMismatch {
                what: "the normaliser",
                expected_kind: self.kind,
                expected_hash: self.schema_hash.clone(),
                found_kind: layout.kind,
                found_hash,
            });
        }
        Ok(())
    }

    /// A transformer bound to `frame` (its category codes resolved once).
    pub fn bind<'a>(&'a self, frame: &'a FlowFrame) -> Result<BoundNormaliser<'a>, CoreError> {
        self.check(&frame.layout)?;
        let lookup = self
            .categorical
            .iter()
            .enumerate()
            .map(|(j, c)| {
                let index: std::collections::HashMap<&str, u32> = c
                    .values
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (v.as_str(), k as u32))
                    .collect();
                let unknown = c.values.len() as u32;
                frame.categories[j]
                    .names()
                    .iter()
                    .map(|name| index.get(name.as_str()).copied().unwrap_or(unknown))
                    .collect()
            })
            .collect();
        let numeric: Vec<(bool, f32, f32)> = self
            .numeric
            .iter()
            .map(|c| (c.log, c.mean, c.std.recip()))
            .collect();
        let clip = self.config.clip;
        let at_zero = numeric
            .iter()
            .map(|&(log, mean, inv_std)| standardise(0.0, log, mean, inv_std, clip))
            .collect();
        let sparse = self.kind == DatasetKind::HttpRequests;
        // Only the sparse path reads the small-count table: dense (flow) rows do not build it.
        let small = if sparse {
            small_counts(&numeric, clip)
        } else {
            Vec::new()
        };
        Ok(BoundNormaliser {
            norm: self,
            frame,
            lookup,
            numeric,
            at_zero,
            small,
            sparse,
        })
    }

    /// Transforms `rows` of `frame` into a row-major `rows.len() × output_dim()` matrix.
    pub fn transform(&self, frame: &FlowFrame, rows: &[usize]) -> Result<Vec<f32>, CoreError> {
        let mut out = Vec::new();
        self.transform_into(frame, rows, &mut out)?;
        Ok(out)
    }

    /// Like [`Normaliser::transform`], into a reused buffer (resized to `rows.len() × output_dim()`).
    pub fn transform_into(
        &self,
        frame: &FlowFrame,
        rows: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<(), CoreError> {
        let bound = self.bind(frame)?;
        let dim = self.output_dim();
        out.resize(rows.len() * dim, 0.0);
        for (k, &r) in rows.iter().enumerate() {
            bound.transform_row(r, &mut out[k * dim..(k + 1) * dim]);
        }
        Ok(())
    }

    /// A copy with every numeric column's mean and standard deviation refit on `rows` (each a raw
    /// numeric row of this normaliser's layout), keeping the log choices, the clip and the one-hot
    /// columns; a column with no finite value among them keeps its training parameters. The
    /// unsupervised site adaptation `metaids baseline` applies (a site's benign window).
    pub fn refit_numeric<'a, I>(&self, rows: I) -> Normaliser
    where
        I: Iterator<Item = &'a [f32]> + Clone,
    {
        let mut n = self.clone();
        for (i, col) in n.numeric.iter_mut().enumerate() {
            let values = rows.clone().filter_map(|r| r.get(i).copied());
            if let Some((mean, std)) = standardisation(values, col.log) {
                col.mean = mean;
                col.std = std;
            }
        }
        n
    }

    /// Transforms one flow given by its raw values (numeric in layout order, categorical as
    /// strings in layout order) into `out` (length [`Normaliser::output_dim`]): what
    /// [`Normaliser::transform`] writes for a frame row holding those values. Errors name a width
    /// that does not fit.
    pub fn transform_values(
        &self,
        numeric: &[f32],
        categorical: &[&str],
        out: &mut [f32],
    ) -> Result<(), CoreError> {
        let (d, dc) = (self.numeric.len(), self.categorical.len());
        if numeric.len() != d || categorical.len() != dc || out.len() != self.output_dim() {
            return Err(CoreError::Parse {
                what: "flow values",
                message: format!(
                    "{} numeric and {} categorical values into {} outputs; the normaliser takes {d}, {dc} and writes {}",
                    numeric.len(),
                    categorical.len(),
                    out.len(),
                    self.output_dim()
                ),
            });
        }
        let clip = self.config.clip;
        for ((o, &x), c) in out[..d].iter_mut().zip(numeric).zip(&self.numeric) {
            *o = standardise(x, c.log, c.mean, c.std.recip(), clip);
        }
        let mut offset = d;
        for (c, v) in self.categorical.iter().zip(categorical) {
            let width = c.values.len() + 1;
            let hot = c
                .values
                .iter()
                .position(|x| x == v)
                .unwrap_or(c.values.len());
            out[offset..offset + width]
                .iter_mut()
                .enumerate()
                .for_each(|(k, o)| *o = if k == hot { 1.0 } else { 0.0 });
            offset += width;
        }
        Ok(())
    }

    /// Serialises to pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses JSON written by [`Normaliser::to_json`].
    pub fn from_json(text: &str) -> Result<Self, CoreError> {
        serde_json::from_str(text).map_err(|e| CoreError::Parse {
            what: "normaliser",
            message: e.to_string(),
        })
    }
}

/// One numeric value standardised: NaN → 0; ±inf → ±clip (signed_log1p keeps infinities,
/// 1/std > 0 keeps their sign); else `(t − mean) / std`, clipped, `t` the value after the signed
/// log1p when `log`.
#[inline]
fn standardise(x: f32, log: bool, mean: f32, inv_std: f32, clip: f32) -> f32 {
    let t = if log { signed_log1p(x) } else { x };
    let z = (t - mean) * inv_std;
    if z.is_nan() {
        0.0
    } else {
        z.clamp(-clip, clip)
    }
}

/// A [`Normaliser`] bound to one frame's category codes.
#[derive(Debug)]
pub struct BoundNormaliser<'a> {
    norm: &'a Normaliser,
    frame: &'a FlowFrame,
    /// Per categorical column: frame code → one-hot offset within that column.
    lookup: Vec<Vec<u32>>,
    /// Per numeric column: (log-scaled, mean, 1 / std).
    numeric: Vec<(bool, f32, f32)>,
    /// Per numeric column: what +0.0 becomes (most flow and n-gram values are zeros).
    at_zero: Vec<f32>,
    /// Per numeric column, [`SMALL_COUNTS`] values: what the counts 1, 2, … become (most non-zero
    /// n-gram values are small counts).
    small: Vec<f32>,
    /// Whether rows are mostly zeros (web-request n-gram rows): their non-zeros are found by bit
    /// mask. Chosen by layout on the two benches (`detect`: CIC flow rows, `requests`: n-gram
    /// rows): the mask path made request scoring 32% faster and flow preprocessing 15% slower;
    /// choosing per row by counting its non-zeros cost a tenth of the gain on both.
    sparse: bool,
}

/// Counts 1 to this many take their column's precomputed value instead of a logarithm (sparse
/// rows).
const SMALL_COUNTS: usize = 8;

/// Per numeric column `(log, mean, 1/std)`, what the counts 1 to [`SMALL_COUNTS`] standardise to.
fn small_counts(numeric: &[(bool, f32, f32)], clip: f32) -> Vec<f32> {
    numeric
        .iter()
        .flat_map(|&(log, mean, inv_std)| {
            (1..=SMALL_COUNTS).map(move |k| standardise(k as f32, log, mean, inv_std, clip))
        })
        .collect()
}

impl BoundNormaliser<'_> {
    /// The same, taking the sparse (bit mask) or the dense path for every row: both give the same
    /// bits (a test checks it), only the speed differs.
    pub fn with_sparse_path(mut self, sparse: bool) -> Self {
        if sparse && self.small.is_empty() {
            self.small = small_counts(&self.numeric, self.norm.config.clip);
        }
        self.sparse = sparse;
        self
    }

    /// Transforms row `r` of the frame into `out` (length [`Normaliser::output_dim`]).
    pub fn transform_row(&self, r: usize, out: &mut [f32]) {
        let clip = self.norm.config.clip;
        let d = self.norm.numeric.len();
        let raw = self.frame.numeric_row(r);
        // NaN → 0; ±inf → ±clip (signed_log1p keeps infinities, 1/std > 0 keeps their sign);
        // else the standardised value, clipped. Zeros (+0.0; −0.0 can differ in sign) take their
        // column's precomputed value, the bits `standardise` gives them, copied in one pass.
        out[..d].copy_from_slice(&self.at_zero);
        if self.sparse {
            // Sparse rows (n-gram counts): the non-zeros are found 64 columns at a time as a
            // bit mask (a branch per column mispredicts on these rows), and the counts 1 to
            // SMALL_COUNTS take their column's precomputed value, the bits `standardise` gives.
            for (c, xs) in raw.chunks(64).enumerate() {
                let mut mask = xs
                    .iter()
                    .enumerate()
                    .fold(0u64, |m, (i, x)| m | (u64::from(x.to_bits() != 0) << i));
                while mask != 0 {
                    let i = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    let j = c * 64 + i;
                    let x = xs[i];
                    let k = x as usize;
                    out[j] = if (1..=SMALL_COUNTS).contains(&k) && k as f32 == x {
                        self.small[j * SMALL_COUNTS + k - 1]
                    } else {
                        let (log, mean, inv_std) = self.numeric[j];
                        standardise(x, log, mean, inv_std, clip)
                    };
                }
            }
        } else {
            // Dense rows (flow statistics): column by column.
            for ((o, &x), &(log, mean, inv_std)) in out[..d].iter_mut().zip(raw).zip(&self.numeric)
            {
                if x.to_bits() != 0 {
                    *o = standardise(x, log, mean, inv_std, clip);
                }
            }
        }
        let dc = self.norm.categorical.len();
        let codes = &self.frame.categorical[r * dc..(r + 1) * dc];
        let mut offset = d;
        for (j, c) in self.norm.categorical.iter().enumerate() {
            let width = c.values.len() + 1;
            out[offset..offset + width]
                .iter_mut()
                .for_each(|v| *v = 0.0);
            out[offset + self.lookup[j][codes[j] as usize] as usize] = 1.0;
            offset += width;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place between two finite floats of one sign.
    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    proptest::proptest! {
        #[test]
        fn fast_log1p_matches_the_library(bits in 1u32..0x7f80_0000) {
            // Every positive finite f32 is reachable.
            let x = f32::from_bits(bits);
            let want = x.ln_1p();
            let got = signed_log1p(x);
            proptest::prop_assert!(ulps(got, want) <= 1, "{x}: {got} vs {want}");
            proptest::prop_assert_eq!(signed_log1p(-x), -got);
        }
    }

    #[test]
    fn fast_log1p_on_the_values_flows_have() {
        let mut worst = 0;
        for x in (0..2_000_000u32)
            .map(|i| i as f32 * 0.5)
            .chain([1e-30, 1e-7, 3.4e38, 0.1, 0.7, 1.4])
        {
            let (got, want) = (signed_log1p(x), x.ln_1p());
            worst = worst.max(ulps(got, want));
        }
        assert!(worst <= 1, "worst {worst} ulp");
        assert_eq!(signed_log1p(0.0), 0.0);
        assert_eq!(signed_log1p(f32::INFINITY), f32::INFINITY);
        assert_eq!(signed_log1p(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(signed_log1p(f32::NAN).is_nan());
    }
    use crate::frame::RowSource;
    use crate::record::{ColumnMap, RowBuf};

    fn frame_from(lines: &[&str]) -> FlowFrame {
        let map = ColumnMap::nsl_kdd();
        let mut frame = FlowFrame::new(map.layout.clone());
        let f = frame.add_file("t", &map);
        let mut row = RowBuf::default();
        for (i, l) in lines.iter().enumerate() {
            map.parse_into(
                l.split(',')
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

    fn line(duration: u32, proto: &str, service: &str, label: &str) -> String {
        format!("{duration},{proto},{service},SF,100,0,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,2,2,0.00,0.00,0.00,0.00,1.00,0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,{label},20")
    }

    #[test]
    fn fit_uses_only_given_rows_and_clips() {
        let lines: Vec<String> = vec![
            line(0, "tcp", "http", "normal"),
            line(10, "tcp", "http", "normal"),
            line(100, "tcp", "http", "normal"),
            line(1_000_000, "udp", "domain", "x"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let frame = frame_from(&refs);
        let norm = Normaliser::fit(&frame, &[0, 1, 2], PreprocessConfig::default()).expect("fit");
        assert_eq!(norm.fit_rows, 3);
        let duration = &norm.numeric[0];
        assert!(duration.log);
        // Only rows 0..3 contribute: mean of ln(1), ln(11), ln(101).
        let expected = (0f32 + 11f32.ln() + 101f32.ln()) / 3.0;
        assert!((duration.mean - expected).abs() < 1e-5);
        // udp never appeared in the fit rows: it goes to the unknown bucket.
        assert_eq!(norm.categorical[0].values, vec!["tcp"]);
        let out = norm.transform(&frame, &[3]).expect("transform");
        assert_eq!(out.len(), norm.output_dim());
        assert!(out.iter().all(|v| v.abs() <= norm.config.clip));
        let names = norm.output_names();
        let unknown = names
            .iter()
            .position(|n| n == "protocol_type=<unknown>")
            .expect("unknown column");
        assert_eq!(out[unknown], 1.0);
        // Rates in [0, 1] are not log-scaled.
        let rate = norm
            .numeric
            .iter()
            .find(|c| c.name == "same_srv_rate")
            .expect("rate");
        assert!(!rate.log);
    }

    #[test]
    fn the_timing_shift_moves_timing_columns_as_a_slower_flow_would() {
        assert_eq!(timing_kind("Flow Duration"), Some(TimingKind::Time));
        assert_eq!(timing_kind("Bwd IAT Mean"), Some(TimingKind::Time));
        assert_eq!(timing_kind("Idle Max"), Some(TimingKind::Time));
        assert_eq!(timing_kind("Total TCP Flow Time"), Some(TimingKind::Time));
        assert_eq!(timing_kind("Flow Packets/s"), Some(TimingKind::Rate));
        assert_eq!(timing_kind("Fwd Act Data Pkts"), None);
        assert_eq!(timing_kind("Total Fwd Packet"), None);
        let lines: Vec<String> = [3_000, 40_000, 200_000, 9_000]
            .iter()
            .map(|&d| line(d, "tcp", "http", "normal"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let frame = frame_from(&refs);
        let norm =
            Normaliser::fit(&frame, &[0, 1, 2, 3], PreprocessConfig::default()).expect("fit");
        let shift = norm.timing_shift(4.0);
        assert_eq!(shift.len(), norm.output_dim());
        let names = norm.output_names();
        let at = |n: &str| names.iter().position(|x| x == n).expect("column");
        let d = &norm.numeric[at("duration")];
        assert!(d.log);
        assert!((shift[at("duration")] - 4f32.ln() / d.std).abs() < 1e-6);
        // Everything else stays: byte counts, rates in [0, 1], the one-hot columns.
        let moved = shift.iter().filter(|&&v| v != 0.0).count();
        assert_eq!(moved, 1, "{shift:?}");
        // A flow four times slower is where the shift says, on the log scale.
        let slow = frame_from(&[line(160_000, "tcp", "http", "normal").as_str()]);
        let fast = frame_from(&[line(40_000, "tcp", "http", "normal").as_str()]);
        let (a, b) = (
            norm.transform(&fast, &[0]).expect("fast")[at("duration")],
            norm.transform(&slow, &[0]).expect("slow")[at("duration")],
        );
        assert!((b - a - shift[at("duration")]).abs() < 1e-3, "{a} {b}");
        assert!(norm.timing_shift(f32::NAN).iter().all(|&v| v == 0.0));
    }

    #[test]
    fn transform_maps_nan_to_zero_infinities_to_the_clip_and_values_by_the_formula() {
        let lines: Vec<String> = (0..6)
            .map(|i| line(i * 37, "tcp", "http", "normal"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut frame = frame_from(&refs);
        let norm =
            Normaliser::fit(&frame, &[0, 1, 2, 3], PreprocessConfig::default()).expect("fit");
        let d = frame.layout.numeric.len();
        let clip = norm.config.clip;
        // Row 4: NaN, +inf, -inf in the first three columns (duration is log-scaled).
        frame.numeric[4 * d] = f32::NAN;
        frame.numeric[4 * d + 1] = f32::INFINITY;
        frame.numeric[4 * d + 2] = f32::NEG_INFINITY;
        let out = norm.transform(&frame, &[4, 5]).expect("transform");
        assert_eq!(out[0], 0.0);
        assert_eq!(out[1], clip);
        assert_eq!(out[2], -clip);
        // Row 5 against the textbook formula with libm's log1p.
        let dim = norm.output_dim();
        for (j, c) in norm.numeric.iter().enumerate() {
            let x = frame.numeric[5 * d + j];
            let t = if c.log {
                x.signum() * x.abs().ln_1p()
            } else {
                x
            };
            let want = ((t - c.mean) / c.std).clamp(-clip, clip);
            let got = out[dim + j];
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{}: {got} vs {want}",
                c.name
            );
        }
    }

    use proptest::strategy::Strategy as _;

    proptest::proptest! {
        #[test]
        fn frame_rows_transform_bit_for_bit_like_their_values(
            cells in proptest::collection::vec(
                proptest::prop_oneof![
                    (0u32..12).prop_map(|k| k as f32),
                    proptest::num::f32::ANY,
                    proptest::strategy::Just(-0.0f32),
                ],
                1..400,
            )
        ) {
            let lines: Vec<String> = (0..4).map(|i| line(i * 37, "tcp", "http", "normal")).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut frame = frame_from(&refs);
            let norm = Normaliser::fit(&frame, &[0, 1, 2, 3], PreprocessConfig::default())
                .expect("fit");
            let d = frame.layout.numeric.len();
            for (i, v) in cells.iter().enumerate() {
                frame.numeric[i % (4 * d)] = *v;
            }
            let dim = norm.output_dim();
            let mut got = vec![f32::NAN; dim];
            let mut want = vec![f32::NAN; dim];
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for sparse in [false, true] {
                let bound = norm.bind(&frame).expect("bind").with_sparse_path(sparse);
                for r in 0..frame.len() {
                    let cats: Vec<&str> = frame.categorical_row(r).collect();
                    norm.transform_values(frame.numeric_row(r), &cats, &mut want).expect("values");
                    bound.transform_row(r, &mut got);
                    proptest::prop_assert_eq!(bits(&got), bits(&want), "row {} sparse {}", r, sparse);
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn sparse_request_rows_transform_bit_for_bit_like_their_values(
            cells in proptest::collection::vec(
                (0usize..2_000, proptest::prop_oneof![
                    (1u32..12).prop_map(|k| k as f32),
                    proptest::num::f32::ANY,
                ]),
                1..300,
            )
        ) {
            // Rows of the web-request layout (263 columns: more than one 64-column mask),
            // mostly zeros, as n-gram rows are; the normaliser fit on the first four.
            let layout = DatasetKind::HttpRequests.layout();
            let d = layout.numeric.len();
            let mut frame = FlowFrame::new(layout);
            let mut row = RowBuf::default();
            row.numeric.resize(d, 0.0);
            row.label.push_str("benign");
            for r in 0..8 {
                row.numeric.fill(0.0);
                for (i, v) in &cells {
                    if i / d % 8 == r {
                        row.numeric[i % d] = *v;
                    }
                }
                row.numeric[r * 31 % d] = (r + 1) as f32;
                frame.push(&row, RowSource { file: 0, line: r as u64 + 1 });
            }
            let norm = Normaliser::fit(&frame, &[0, 1, 2, 3], PreprocessConfig::default())
                .expect("fit");
            let bound = norm.bind(&frame).expect("bind");
            proptest::prop_assert!(bound.sparse, "request rows take the sparse path");
            let dim = norm.output_dim();
            let (mut got, mut want) = (vec![f32::NAN; dim], vec![f32::NAN; dim]);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for sparse in [true, false] {
                let bound = norm.bind(&frame).expect("bind").with_sparse_path(sparse);
                for r in 0..frame.len() {
                    norm.transform_values(frame.numeric_row(r), &[], &mut want).expect("values");
                    bound.transform_row(r, &mut got);
                    proptest::prop_assert_eq!(bits(&got), bits(&want), "row {} sparse {}", r, sparse);
                }
            }
        }
    }

    #[test]
    fn values_transform_like_frame_rows_and_a_refit_on_the_fit_rows_changes_nothing() {
        let lines: Vec<String> = (0..6)
            .map(|i| line(i * 37, "tcp", "http", "normal"))
            .chain([
                line(5, "udp", "private", "normal"),
                line(9, "icmp", "ecr_i", "x"),
            ])
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut frame = frame_from(&refs);
        let norm =
            Normaliser::fit(&frame, &[0, 1, 2, 3], PreprocessConfig::default()).expect("fit");
        let d = frame.layout.numeric.len();
        frame.numeric[4 * d] = f32::NAN;
        frame.numeric[4 * d + 1] = f32::INFINITY;
        frame.numeric[5 * d + 2] = f32::NEG_INFINITY;
        frame.numeric[6 * d + 3] = 1e30;
        frame.numeric[6 * d + 4] = -0.0;
        // Small counts (precomputed), their neighbours and negatives (computed).
        for (j, v) in [1.0, 2.0, 8.0, 9.0, 1.5, -1.0, 0.999_999_9, 7.000_001]
            .into_iter()
            .enumerate()
        {
            frame.numeric[7 * d + 5 + j] = v;
        }
        let rows: Vec<usize> = (0..frame.len()).collect();
        let want = norm.transform(&frame, &rows).expect("transform");
        let dim = norm.output_dim();
        let mut got = vec![f32::NAN; dim];
        for &r in &rows {
            let cats: Vec<&str> = frame.categorical_row(r).collect();
            norm.transform_values(frame.numeric_row(r), &cats, &mut got)
                .expect("values");
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want[r * dim..(r + 1) * dim]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                "row {r}"
            );
        }
        let cats: Vec<&str> = frame.categorical_row(0).collect();
        assert!(norm
            .transform_values(&frame.numeric_row(0)[1..], &cats, &mut got)
            .is_err());
        // Refit on the rows it was fit on: the same parameters.
        let fit_rows = [0usize, 1, 2, 3].map(|r| frame.numeric_row(r));
        let same = norm.refit_numeric(fit_rows.iter().copied());
        for (a, b) in norm.numeric.iter().zip(&same.numeric) {
            assert_eq!(a.log, b.log);
            assert!(
                (a.mean - b.mean).abs() <= 1e-5 * a.mean.abs().max(1.0),
                "{}",
                a.name
            );
            assert!(
                (a.std - b.std).abs() <= 1e-5 * a.std.abs().max(1.0),
                "{}",
                a.name
            );
        }
        // Refit on other rows: the site's rows standardise to mean 0.
        let site = [6usize, 7].map(|r| frame.numeric_row(r));
        let refit = norm.refit_numeric(site.iter().copied());
        let x = refit.transform(&frame, &[7]).expect("transform");
        assert_eq!(refit.categorical, norm.categorical);
        assert!(x.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn normaliser_refuses_another_schema() {
        let lines = [line(1, "tcp", "http", "normal")];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let frame = frame_from(&refs);
        let norm = Normaliser::fit(&frame, &[0], PreprocessConfig::default()).expect("fit");
        let other = FlowFrame::new(DatasetKind::Cic.layout());
        let err = norm.transform(&other, &[]).expect_err("mismatch");
        let msg = err.to_string();
        assert!(
            msg.contains("schema mismatch") && msg.contains("nsl-kdd") && msg.contains("cic"),
            "{msg}"
        );
    }

    #[test]
    fn json_round_trip() {
        let lines = [
            line(1, "tcp", "http", "normal"),
            line(5, "udp", "http", "normal"),
        ];
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let frame = frame_from(&refs);
        let norm = Normaliser::fit(
            &frame,
            &[0, 1],
            PreprocessConfig {
                min_category_count: 1,
                ..Default::default()
            },
        )
        .expect("fit");
        let back = Normaliser::from_json(&norm.to_json()).expect("parse");
        assert_eq!(back, norm);
        assert!(Normaliser::from_json("{").is_err());
    }

    #[test]
    fn empty_fit_is_an_error() {
        let frame = FlowFrame::new(DatasetKind::NslKdd.layout());
        assert!(Normaliser::fit(&frame, &[], PreprocessConfig::default()).is_err());
    }

    proptest::proptest! {
        #[test]
        fn transformed_values_are_finite_and_bounded(values in proptest::collection::vec(proptest::num::f32::ANY, 2..20)) {
            let lines: Vec<String> = (0..values.len()).map(|_| line(1, "tcp", "http", "normal")).collect();
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let mut frame = frame_from(&refs);
            for (r, v) in values.iter().enumerate() {
                frame.numeric[r * 38] = *v;
            }
            let rows: Vec<usize> = (0..values.len()).collect();
            let norm = Normaliser::fit(&frame, &rows[..1.max(rows.len() / 2)], PreprocessConfig::default()).expect("fit");
            let out = norm.transform(&frame, &rows).expect("transform");
            for v in out {
                proptest::prop_assert!(v.is_finite() && v.abs() <= norm.config.clip);
            }
        }
    }
}
