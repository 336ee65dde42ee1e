//! The site forest: threats named by a random forest learnt on the site, in the flows' feature space.
//!
//! A threat's prototypes live in the embedding of a model trained on another network; on a site,
//! an attack's flows can sit among the site's own there (an injection request beside the site's
//! API calls, a password guess beside its logins) while a few raw columns still tell them apart.
//! The site forest learns those columns from the site itself: a histogram random forest
//! ([`crate::forest`]) fitted on the site profile's prototype rows (benign, class 0) and every
//! threat's support flows (class `t + 1`; the support weighted so that all threats together weigh
//! as much as the benign rows), over the preprocessed feature rows the encoder reads. A flow's
//! attack score is one minus its benign probability; it is threat `t` when that score exceeds the
//! threshold and `t` is its most probable attack class. The threshold is calibrated on the
//! profile's calibration rows — which the forest never trained on — at the threats' share of the
//! budget, by the same quantile as every other rule ([`upper_quantile`]: at most `⌊α n⌋` of them
//! score above it). The embedding keeps the unknown rule at the other share.
//!
//! It is fitted when a library is armed (a deterministic function of the profile's rows, the
//! threats' support rows and the profile's seed), so nothing but those rows is stored.

use crate::error::{DecideError, Result};
use crate::forest::{BinnedData, ForestConfig, RandomForest};
use crate::geometry::upper_quantile;

/// Trees of the site forest (its other settings are [`ForestConfig`]'s defaults).
pub const SITE_FOREST_TREES: usize = 50;

/// The timing factor of the site forest's jitter ([`jittered`]): each support flow is also
/// learnt with its timing columns stretched and shrunk by this factor. Chosen on the validation
/// sites b and c (factors 2, 4 and 8 within a point of each other on both; 4 the middle).
pub const TIMING_FACTOR: f32 = 4.0;

/// Support rows with timing jitter: each row of `width` values, then for each of `−shift` and
/// `+shift` (per column, in preprocessed units — `Normaliser::timing_shift(TIMING_FACTOR)`, zero
/// beyond its length) a copy moved by it. A few shots of an attack show the timing of the moment
/// they were taken; a loaded server or another link stretches it, and a forest learns the shots'
/// range as part of the threat (site c's HTTP flood: the missed flows were the slower ones, past
/// the shots' durations). An empty or all-zero `shift` leaves the rows as they are.
pub fn jittered(support: &[Vec<f32>], width: usize, shift: &[f32]) -> Vec<Vec<f32>> {
    if width == 0 || shift.iter().all(|&v| v == 0.0) {
        return support.to_vec();
    }
    support
        .iter()
        .map(|rows| {
            let mut out = Vec::with_capacity(rows.len() * 3);
            out.extend_from_slice(rows);
            for sign in [-1.0f32, 1.0] {
                for r in rows.chunks_exact(width) {
                    out.extend(
                        r.iter()
                            .enumerate()
                            .map(|(j, v)| v + sign * shift.get(j).copied().unwrap_or(0.0)),
                    );
                }
            }
            out
        })
        .collect()
}

/// A site forest, fitted and calibrated.
#[derive(Debug, Clone)]
pub struct SiteForest {
    forest: RandomForest,
    width: usize,
    threats: usize,
    threshold: f32,
    /// Sorted attack scores of the calibration rows (for a verdict's confidence).
    calibration: Vec<f32>,
}

impl SiteForest {
    /// Fits on `benign` rows and one support set per threat (rows of `width` values, row-major),
    /// then calibrates on `calibration` rows at `budget`: at most `⌊budget · n⌋` of the `n`
    /// calibration rows score above the threshold. `seed` seeds the bootstrap and the features
    /// tried. Refuses no benign, calibration or support rows, a threat with none, ragged rows,
    /// non-finite values and a budget outside `(0, 1)`.
    pub fn learn(
        benign: &[f32],
        support: &[Vec<f32>],
        calibration: &[f32],
        width: usize,
        budget: f64,
        seed: u64,
    ) -> Result<Self> {
        if width == 0 {
            return Err(DecideError::invalid("width", "0: rows need values"));
        }
        let rows = |name: &str, v: &[f32]| -> Result<usize> {
            if !v.len().is_multiple_of(width) {
                return Err(DecideError::invalid(
                    name,
                    format!("{} values are not rows of {width}", v.len()),
                ));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(DecideError::invalid(
                    format!("{name}[{}]", i / width),
                    "a value is not finite",
                ));
            }
            Ok(v.len() / width)
        };
        let n_benign = rows("benign", benign)?;
        let n_cal = rows("calibration", calibration)?;
        if n_benign == 0 || n_cal == 0 {
            return Err(DecideError::invalid(
                "site forest",
                format!("{n_benign} benign and {n_cal} calibration rows: it needs both"),
            ));
        }
        if support.is_empty() {
            return Err(DecideError::invalid("support", "no threat to name"));
        }
        let mut n_support = 0;
        for (t, s) in support.iter().enumerate() {
            let n = rows(&format!("support[{t}]"), s)?;
            if n == 0 {
                return Err(DecideError::invalid(
                    format!("support[{t}]"),
                    "no flow with feature values: the forest cannot learn this threat",
                ));
            }
            n_support += n;
        }
        if !(budget.is_finite() && budget > 0.0 && budget < 1.0) {
            return Err(DecideError::invalid(
                "budget",
                format!("{budget}: expected a false-positive rate in (0, 1)"),
            ));
        }
        let mut x = benign.to_vec();
        let mut y = vec![0u32; n_benign];
        for (t, s) in support.iter().enumerate() {
            x.extend_from_slice(s);
            y.extend(std::iter::repeat_n(t as u32 + 1, s.len() / width));
        }
        let w_support = n_benign as f32 / n_support as f32;
        let w: Vec<f32> = y
            .iter()
            .map(|&c| if c == 0 { 1.0 } else { w_support })
            .collect();
        let cfg = ForestConfig {
            trees: SITE_FOREST_TREES,
            ..ForestConfig::default()
        };
        let data = BinnedData::new(&x, width, cfg.bins);
        let forest = RandomForest::fit(&data, &y, &w, support.len() + 1, &cfg, seed);
        let mut me = SiteForest {
            forest,
            width,
            threats: support.len(),
            threshold: f32::INFINITY,
            calibration: Vec::new(),
        };
        let mut scores: Vec<f32> = calibration
            .chunks_exact(width)
            .map(|r| me.score(r).0)
            .collect();
        me.threshold = upper_quantile(&mut scores, budget);
        scores.sort_by(f32::total_cmp);
        me.calibration = scores;
        Ok(me)
    }

    /// Feature row width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Threats it names (in the order of the support sets it was fitted on).
    pub fn threats(&self) -> usize {
        self.threats
    }

    /// The calibrated threshold on the attack score.
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Calibration rows it was calibrated on.
    pub fn calibration_rows(&self) -> usize {
        self.calibration.len()
    }

    /// A row's attack score (one minus its benign probability) and its most probable threat.
    ///
    /// # Shapes
    /// `row`: `width` → (score in `[0, 1]`, threat index).
    pub fn score(&self, row: &[f32]) -> (f32, usize) {
        if row.len() != self.width {
            // Not a row of this forest (a caller's bug): never named, never a panic.
            return (0.0, 0);
        }
        let p = self.forest.predict_proba(row);
        let threat = p
            .iter()
            .enumerate()
            .skip(1)
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map_or(0, |(c, _)| c - 1);
        (1.0 - p[0], threat)
    }

    /// The threat a row is named as, if its score exceeds the threshold.
    pub fn flag(&self, row: &[f32]) -> Option<usize> {
        let (s, t) = self.score(row);
        (s > self.threshold).then_some(t)
    }

    /// Fraction of the calibration rows scoring strictly below `score`.
    pub fn percentile(&self, score: f32) -> f32 {
        if self.calibration.is_empty() {
            return 0.5;
        }
        let below = self.calibration.partition_point(|&v| v < score);
        below as f32 / self.calibration.len() as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Benign rows: 3 columns uniform in [0, 1). Threat 0: column 2 at 5; threat 1: column 0 at -3.
    fn data(n: usize, seed: u64) -> (Vec<f32>, Vec<Vec<f32>>, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut row = || -> [f32; 3] { [rng.random(), rng.random(), rng.random()] };
        let benign: Vec<f32> = (0..n).flat_map(|_| row()).collect();
        let cal: Vec<f32> = (0..n).flat_map(|_| row()).collect();
        let a: Vec<f32> = (0..5)
            .flat_map(|_| {
                let mut r = row();
                r[2] = 5.0;
                r
            })
            .collect();
        let b: Vec<f32> = (0..5)
            .flat_map(|_| {
                let mut r = row();
                r[0] = -3.0;
                r
            })
            .collect();
        (benign, vec![a, b], cal)
    }

    #[test]
    fn jitter_adds_a_shrunk_and_a_stretched_copy_of_each_row() {
        let support = vec![vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], vec![0.0, 0.0, 0.0]];
        // Shorter than the width: the columns past it (the source context) are not moved.
        let shift = [0.5, 0.0];
        let j = jittered(&support, 3, &shift);
        assert_eq!(
            j[0],
            vec![
                1.0, 2.0, 3.0, 4.0, 5.0, 6.0, // the rows
                0.5, 2.0, 3.0, 3.5, 5.0, 6.0, // shrunk
                1.5, 2.0, 3.0, 4.5, 5.0, 6.0, // stretched
            ]
        );
        assert_eq!(j[1], vec![0.0, 0.0, 0.0, -0.5, 0.0, 0.0, 0.5, 0.0, 0.0]);
        assert_eq!(jittered(&support, 3, &[]), support);
        assert_eq!(jittered(&support, 3, &[0.0; 3]), support);
    }

    #[test]
    fn names_each_threat_by_its_column_and_is_seeded() {
        let (benign, support, cal) = data(400, 1);
        let f = SiteForest::learn(&benign, &support, &cal, 3, 0.01, 7).expect("learn");
        assert_eq!((f.width(), f.threats(), f.calibration_rows()), (3, 2, 400));
        assert_eq!(f.flag(&[0.5, 0.5, 5.0]), Some(0));
        assert_eq!(f.flag(&[-3.0, 0.5, 0.5]), Some(1));
        assert_eq!(f.flag(&[0.5, 0.5, 0.5]), None);
        let g = SiteForest::learn(&benign, &support, &cal, 3, 0.01, 7).expect("again");
        assert_eq!(f.threshold(), g.threshold());
        assert_eq!(f.score(&[0.2, 0.9, 0.4]), g.score(&[0.2, 0.9, 0.4]));
        assert!(f.percentile(1.0) > 0.9 && f.percentile(-1.0) == 0.0);
    }

    #[test]
    fn bad_inputs_are_refused_by_name() {
        let (benign, support, cal) = data(50, 2);
        let e = |r: Result<SiteForest>| r.expect_err("refused").to_string();
        assert!(e(SiteForest::learn(&benign, &support, &cal, 0, 0.01, 1)).contains("width"));
        assert!(e(SiteForest::learn(&benign[1..], &support, &cal, 3, 0.01, 1)).contains("benign"));
        assert!(e(SiteForest::learn(&benign, &[], &cal, 3, 0.01, 1)).contains("no threat"));
        let empty = vec![support[0].clone(), Vec::new()];
        assert!(e(SiteForest::learn(&benign, &empty, &cal, 3, 0.01, 1)).contains("support[1]"));
        let mut nan = cal.clone();
        nan[4] = f32::NAN;
        assert!(
            e(SiteForest::learn(&benign, &support, &nan, 3, 0.01, 1)).contains("calibration[1]")
        );
        assert!(e(SiteForest::learn(&benign, &support, &[], 3, 0.01, 1)).contains("calibration"));
        assert!(e(SiteForest::learn(&benign, &support, &cal, 3, 1.0, 1)).contains("budget"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Whatever the rows and the budget, at most ⌊α n⌋ calibration rows are flagged.
        #[test]
        fn at_most_the_budget_of_calibration_rows_is_flagged(
            seed in 0u64..1000, n in 20usize..300, alpha in 0.001f64..0.3,
        ) {
            let (benign, support, cal) = data(n, seed);
            let f = SiteForest::learn(&benign, &support, &cal, 3, alpha, seed).expect("learn");
            let flagged = cal.chunks_exact(3).filter(|r| f.flag(r).is_some()).count();
            prop_assert!(flagged <= (alpha * n as f64).floor() as usize, "{flagged} of {n} at {alpha}");
        }
    }
}
