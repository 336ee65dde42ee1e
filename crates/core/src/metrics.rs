//! Detection metrics and their confidence intervals.
//!
//! Binary counts → recall, false-positive rate, precision, F1; a [`Summary`] is a mean with a 95%
//! Student-t confidence half-width over independent episodes. Conventions for empty denominators are
//! fixed here (precision and F1 are 0 when nothing is flagged), so every method is scored alike.

use serde::{Deserialize, Serialize};

/// Confusion counts of one binary task (positive = attack).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinaryCounts {
    /// Attacks flagged.
    pub tp: u64,
    /// Benign flagged.
    pub fp: u64,
    /// Benign passed.
    pub tn: u64,
    /// Attacks missed.
    pub fn_: u64,
}

impl BinaryCounts {
    /// Counts predictions against ground truth.
    pub fn from_predictions(truth: &[bool], predicted: &[bool]) -> Self {
        let mut c = BinaryCounts::default();
        for (&t, &p) in truth.iter().zip(predicted) {
            match (t, p) {
                (true, true) => c.tp += 1,
                (false, true) => c.fp += 1,
                (false, false) => c.tn += 1,
                (true, false) => c.fn_ += 1,
            }
        }
        c
    }

    /// TP / (TP + FN); 0 with no attacks.
    pub fn recall(&self) -> f64 {
        ratio(self.tp, self.tp + self.fn_)
    }

    /// FP / (FP + TN); 0 with no benign.
    pub fn fpr(&self) -> f64 {
        ratio(self.fp, self.fp + self.tn)
    }

    /// TP / (TP + FP); 0 when nothing was flagged.
    pub fn precision(&self) -> f64 {
        ratio(self.tp, self.tp + self.fp)
    }

    /// Harmonic mean of precision and recall; 0 when both are 0.
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }

    /// Fraction of queries classified correctly.
    pub fn accuracy(&self) -> f64 {
        ratio(self.tp + self.tn, self.tp + self.tn + self.fp + self.fn_)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// A mean over independent samples with the half-width of its 95% confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% Student-t confidence interval of the mean (0 with fewer than 2 samples).
    pub ci95: f64,
    /// Number of samples.
    pub n: usize,
}

impl Summary {
    /// Summarises samples.
    pub fn of(samples: &[f64]) -> Self {
        let n = samples.len();
        if n == 0 {
            return Summary {
                mean: 0.0,
                ci95: 0.0,
                n,
            };
        }
        let mean = samples.iter().sum::<f64>() / n as f64;
        if n < 2 {
            return Summary { mean, ci95: 0.0, n };
        }
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        let ci95 = t975(n - 1) * (var / n as f64).sqrt();
        Summary { mean, ci95, n }
    }

    /// `0.861 ± 0.012`.
    pub fn display(&self) -> String {
        format!("{:.3} ± {:.3}", self.mean, self.ci95)
    }

    /// `0.0061 ± 0.0012`: for small rates (false-positive shares at low budgets).
    pub fn display4(&self) -> String {
        format!("{:.4} ± {:.4}", self.mean, self.ci95)
    }
}

/// The Wilson score 95% interval of a proportion of `k` in `n` (`(0, 1)` when `n` is 0). Unlike
/// the normal interval it stays inside `[0, 1]` and is not empty at `k = 0`: the interval to quote
/// for small false-positive counts.
pub fn wilson95(k: u64, n: u64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let z = 1.959_963_984_540_054_f64;
    let (k, n) = (k.min(n) as f64, n as f64);
    let p = k / n;
    let z2 = z * z;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// The 97.5% quantile of Student's t with `df` degrees of freedom (exact table to 30, then a
/// Cornish-Fisher expansion accurate to 1e-4).
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if df == 0 {
        return f64::INFINITY;
    }
    if df <= 30 {
        return TABLE[df - 1];
    }
    let z: f64 = 1.959_963_984_540_054;
    let d = df as f64;
    z + (z.powi(3) + z) / (4.0 * d)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
        + (3.0 * z.powi(7) + 19.0 * z.powi(5) + 17.0 * z.powi(3) - 15.0 * z) / (384.0 * d.powi(3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_rates() {
        let truth = [true, true, true, false, false, false, false];
        let pred = [true, true, false, true, false, false, false];
        let c = BinaryCounts::from_predictions(&truth, &pred);
        assert_eq!(
            c,
            BinaryCounts {
                tp: 2,
                fp: 1,
                tn: 3,
                fn_: 1
            }
        );
        assert!((c.recall() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.fpr() - 0.25).abs() < 1e-12);
        assert!((c.precision() - 2.0 / 3.0).abs() < 1e-12);
        assert!((c.f1() - 2.0 / 3.0).abs() < 1e-12);
        let none = BinaryCounts::from_predictions(&truth, &[false; 7]);
        assert_eq!((none.precision(), none.f1()), (0.0, 0.0));
    }

    #[test]
    fn summary_matches_hand_computation() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(s.mean, 2.5);
        // sd = 1.2910, se = 0.6455, t(3) = 3.182
        assert!((s.ci95 - 3.182 * (1.666_666_666_7f64 / 4.0).sqrt()).abs() < 1e-9);
        assert_eq!(Summary::of(&[0.5]).ci95, 0.0);
        assert!((t975(99) - 1.984).abs() < 1e-3);
        assert!((t975(1000) - 1.962).abs() < 1e-3);
    }

    #[test]
    fn wilson_interval_matches_known_values() {
        // Reference values of the Wilson score interval at 95%.
        let (lo, hi) = wilson95(0, 100);
        assert!(
            lo.abs() < 1e-12 && (hi - 0.036_994).abs() < 1e-5,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson95(5, 100);
        assert!(
            (lo - 0.021_543).abs() < 1e-5 && (hi - 0.111_752).abs() < 1e-5,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson95(100, 100);
        assert!((lo - 0.963_006).abs() < 1e-5 && hi == 1.0, "{lo}");
        assert_eq!(wilson95(0, 0), (0.0, 1.0));
    }
}
