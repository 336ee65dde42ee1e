//! Embedding geometry shared by every rule: squared distance, the budget quantile, row means, the
//! nearest centre and seeded k-means. Plain row-major `f32` slices in, numbers out; no rule lives here.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Squared Euclidean distance: the one distance function of every rule, so a threshold set from a
/// score at enrolment compares exactly with the score the detector computes for the same flow.
///
/// # Shapes
/// `a`, `b`: `dim` → scalar.
#[inline]
pub fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    // Eight independent accumulators let the compiler vectorise the reduction.
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| (x - y) * (x - y)).sum();
    acc.iter().sum::<f32>() + tail
}

/// The `(n − 1 − ⌊α n⌋)`-th smallest value: at most `⌊α n⌋` values are strictly greater, so a rule
/// "flag when the score exceeds it" flags at most a fraction `α` of the rows it was calibrated on.
///
/// `values` is reordered in place; an empty slice gives `-inf`.
pub fn upper_quantile(values: &mut [f32], alpha: f64) -> f32 {
    let n = values.len();
    if n == 0 {
        return f32::NEG_INFINITY;
    }
    let allowed = allowed_above(alpha, n).min(n - 1);
    let idx = n - 1 - allowed;
    let (_, v, _) = values.select_nth_unstable_by(idx, f32::total_cmp);
    *v
}

/// `⌊α n⌋`: how many of `n` calibration rows a rate `α` lets lie above a threshold. A rate given
/// as `k / n` gives `k` back even where the division rounded down (`0.29 · 100` is
/// `28.999…` in floating point).
pub fn allowed_above(alpha: f64, n: usize) -> usize {
    let x = alpha.clamp(0.0, 1.0) * n as f64;
    (x + x * 1e-12).floor() as usize
}

/// Mean of `n` row-major rows of width `dim`.
///
/// # Shapes
/// `rows`: `n × dim` → `dim`.
pub fn mean_row(rows: &[f32], dim: usize) -> Vec<f32> {
    let n = rows.len().checked_div(dim).unwrap_or(0);
    let mut m = vec![0f32; dim];
    for r in rows.chunks_exact(dim) {
        m.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    let inv = 1.0 / n.max(1) as f32;
    m.iter_mut().for_each(|a| *a *= inv);
    m
}

/// Index of and squared distance to the nearest of `centres`.
///
/// # Shapes
/// `x`: `dim`; `centres`: `m × dim` → `(index, distance)`; `(0, +inf)` when `m = 0`.
pub fn nearest(x: &[f32], centres: &[f32], dim: usize) -> (usize, f32) {
    centres
        .chunks_exact(dim)
        .map(|c| sq_dist(x, c))
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((0, f32::INFINITY))
}

/// Squared distance from `x` to the nearest of `centres` (`+inf` when there is none).
///
/// # Shapes
/// `x`: `dim`; each centre: `dim` → scalar.
pub fn min_distance<'a>(x: &[f32], centres: impl Iterator<Item = &'a [f32]>) -> f32 {
    centres.map(|c| sq_dist(x, c)).fold(f32::INFINITY, f32::min)
}

/// Seeded k-means (k-means++ seeding, then Lloyd iterations) returning `min(k, n)` centres.
///
/// # Shapes
/// `rows`: `n × dim` → `k' × dim` with `k' = min(k, n)`.
pub fn kmeans(rows: &[f32], dim: usize, k: usize, iterations: usize, seed: u64) -> Vec<f32> {
    let n = rows.len().checked_div(dim).unwrap_or(0);
    let k = k.min(n).max(usize::from(n > 0));
    if k == 0 {
        return Vec::new();
    }
    let row = |i: usize| &rows[i * dim..(i + 1) * dim];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut centres: Vec<f32> = row(rng.random_range(0..n)).to_vec();
    let mut best: Vec<f32> = (0..n).map(|i| sq_dist(row(i), &centres[..dim])).collect();
    while centres.len() / dim < k {
        let total: f64 = best.iter().map(|&v| f64::from(v)).sum();
        let pick = if total <= 0.0 {
            rng.random_range(0..n)
        } else {
            let mut target = rng.random::<f64>() * total;
            let mut chosen = n - 1;
            for (i, &v) in best.iter().enumerate() {
                target -= f64::from(v);
                if target <= 0.0 {
                    chosen = i;
                    break;
                }
            }
            chosen
        };
        let c = row(pick).to_vec();
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(sq_dist(row(i), &c));
        }
        centres.extend_from_slice(&c);
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..iterations {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let c = nearest(row(i), &centres, dim).0;
            if c != *a {
                *a = c;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            counts[a] += 1;
            for (s, &v) in sums[a * dim..(a + 1) * dim].iter_mut().zip(row(i)) {
                *s += f64::from(v);
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for j in 0..dim {
                    centres[c * dim + j] = (sums[c * dim + j] / counts[c] as f64) as f32;
                }
            }
        }
    }
    centres
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_of_k_rows_allows_k_rows() {
        for n in 1..3_000usize {
            for k in [0, 1, n / 7, n / 3, n - 1] {
                assert_eq!(allowed_above(k as f64 / n as f64, n), k, "{k}/{n}");
            }
        }
        assert_eq!(allowed_above(0.29, 100), 29);
        assert_eq!(allowed_above(0.015, 100), 1);
    }

    #[test]
    fn quantile_respects_the_budget() {
        let mut v: Vec<f32> = (0..200).map(|i| i as f32).collect();
        let t = upper_quantile(&mut v, 0.01);
        assert_eq!(t, 197.0);
        assert_eq!((0..200).filter(|&i| i as f32 > t).count(), 2);
        assert_eq!(upper_quantile(&mut [], 0.01), f32::NEG_INFINITY);
        assert_eq!(upper_quantile(&mut [3.0], 0.5), 3.0);
    }

    #[test]
    fn distance_matches_the_plain_sum() {
        let a: Vec<f32> = (0..19).map(|i| i as f32 * 0.3).collect();
        let b: Vec<f32> = (0..19).map(|i| (i * i) as f32 * 0.01).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((sq_dist(&a, &b) - plain).abs() <= 1e-4 * plain);
        assert_eq!(nearest(&[0.0, 0.0], &[], 2), (0, f32::INFINITY));
        assert_eq!(nearest(&[0.0, 0.0], &[3.0, 0.0, 1.0, 0.0], 2), (1, 1.0));
        assert_eq!(min_distance(&[0.0], [[2.0f32].as_slice()].into_iter()), 4.0);
    }
}
