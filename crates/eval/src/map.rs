//! A 2-D map of the model's embedding for the report: a seeded sample of benign, seen-family and
//! novel-family rows, embedded by the headline model and projected on the first two principal
//! components of the plotted rows. It shows whether novel families land apart from benign traffic
//! before any support row is seen; distances in the plane are a projection, not the model's own.

use serde::{Deserialize, Serialize};

use metaids_core::episode::seeded_subsample;

use crate::method::{EvalContext, FewShotMethod};

/// Rows sampled per group.
const BENIGN_TRAIN: usize = 300;
const BENIGN_POOL: usize = 200;
const PER_SEEN: usize = 40;
const PER_NOVEL: usize = 80;

/// One plotted row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapPoint {
    /// First principal component.
    pub x: f32,
    /// Second principal component.
    pub y: f32,
    /// `benign-train`, `benign-pool`, `seen` or `novel`.
    pub role: String,
    /// The row's label.
    pub family: String,
}

/// The map in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingMap {
    /// The model row whose embedding is drawn.
    pub method: String,
    /// How the plane is made.
    pub projection: String,
    /// Share of the plotted rows' variance on each axis.
    pub explained_variance: [f64; 2],
    /// The rows.
    pub points: Vec<MapPoint>,
}

/// The map of `method`'s embedding, or `None` when it embeds nothing (a baseline).
pub fn embedding_map(method: &dyn FewShotMethod, ctx: &EvalContext<'_>) -> Option<EmbeddingMap> {
    let split = ctx.split;
    let mut rows: Vec<(usize, &'static str, String)> = Vec::new();
    let seed = ctx.seed ^ 0x6d61_7000;
    let mut take = |group: &[usize], cap: usize, role: &'static str, family: &str, salt: u64| {
        for r in seeded_subsample(group, cap, seed.wrapping_add(salt)) {
            rows.push((r, role, family.to_string()));
        }
    };
    take(
        &split.benign_train,
        BENIGN_TRAIN,
        "benign-train",
        &split.benign,
        1,
    );
    take(ctx.pool, BENIGN_POOL, "benign-pool", &split.benign, 2);
    for (i, (family, r)) in split.seen.iter().chain(&split.validation).enumerate() {
        take(r, PER_SEEN, "seen", family, 100 + i as u64);
    }
    for (i, (family, r)) in split.novel.iter().enumerate() {
        take(r, PER_NOVEL, "novel", family, 1000 + i as u64);
    }
    let ids: Vec<usize> = rows.iter().map(|(r, _, _)| *r).collect();
    let (dim, emb) = method.embed(ctx, &ids)?;
    if dim == 0 || emb.len() != ids.len() * dim || ids.len() < 3 {
        return None;
    }
    let (axes, explained) = principal_axes(&emb, dim);
    let mean = column_means(&emb, dim);
    let points = rows
        .into_iter()
        .enumerate()
        .map(|(i, (_, role, family))| {
            let v = &emb[i * dim..(i + 1) * dim];
            let proj = |a: &[f64]| {
                v.iter()
                    .zip(&mean)
                    .zip(a)
                    .map(|((&x, m), w)| (f64::from(x) - m) * w)
                    .sum::<f64>() as f32
            };
            MapPoint {
                x: proj(&axes[0]),
                y: proj(&axes[1]),
                role: role.to_string(),
                family,
            }
        })
        .collect();
    Some(EmbeddingMap {
        method: method.name(),
        projection: format!(
            "PCA of the trained encoder's embedding (per-task fine-tuning not applied; first two principal components of the plotted rows): a seeded sample of up to {BENIGN_TRAIN} benign training rows, {BENIGN_POOL} benign query-pool rows, {PER_SEEN} rows per seen or validation family and {PER_NOVEL} per novel family"
        ),
        explained_variance: explained,
        points,
    })
}

fn column_means(x: &[f32], dim: usize) -> Vec<f64> {
    let n = (x.len() / dim).max(1) as f64;
    let mut mean = vec![0.0f64; dim];
    for row in x.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(row) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n);
    mean
}

/// The two leading eigenvectors of the covariance of `x` (`n × dim`, row-major) by power iteration
/// with deflation, and the share of the total variance each carries.
pub fn principal_axes(x: &[f32], dim: usize) -> ([Vec<f64>; 2], [f64; 2]) {
    let mean = column_means(x, dim);
    let n = (x.len() / dim).max(2) as f64;
    let mut cov = vec![0.0f64; dim * dim];
    for row in x.chunks_exact(dim) {
        let c: Vec<f64> = row
            .iter()
            .zip(&mean)
            .map(|(&v, m)| f64::from(v) - m)
            .collect();
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] += c[i] * c[j];
            }
        }
    }
    for i in 0..dim {
        for j in i..dim {
            let v = cov[i * dim + j] / (n - 1.0);
            cov[i * dim + j] = v;
            cov[j * dim + i] = v;
        }
    }
    let total: f64 = (0..dim).map(|i| cov[i * dim + i]).sum();
    let mut axes: [Vec<f64>; 2] = [vec![0.0; dim], vec![0.0; dim]];
    let mut explained = [0.0; 2];
    for a in 0..2 {
        // A fixed start vector not orthogonal to typical leading directions.
        let mut v: Vec<f64> = (0..dim).map(|i| 1.0 + (i as f64) * 0.01).collect();
        normalise(&mut v);
        let mut lambda = 0.0;
        for _ in 0..500 {
            let mut w: Vec<f64> = (0..dim)
                .map(|i| (0..dim).map(|j| cov[i * dim + j] * v[j]).sum())
                .collect();
            lambda = w.iter().zip(&v).map(|(a, b)| a * b).sum();
            if normalise(&mut w) == 0.0 {
                break;
            }
            let change: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
            v = w;
            if change < 1e-10 {
                break;
            }
        }
        // Deflate so the next axis is the next direction.
        for i in 0..dim {
            for j in 0..dim {
                cov[i * dim + j] -= lambda * v[i] * v[j];
            }
        }
        explained[a] = if total > 0.0 {
            (lambda / total).max(0.0)
        } else {
            0.0
        };
        axes[a] = v;
    }
    (axes, explained)
}

fn normalise(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principal_axes_find_the_spread_directions() {
        // Points spread far along (1, 1, 0)/√2, a little along (1, −1, 0)/√2, none along z.
        let mut x = Vec::new();
        for i in 0..25 {
            let t = (i as f32 - 12.0) / 5.0;
            for s in [0.3, -0.3] {
                x.extend([t + s, t - s, 2.0]);
            }
        }
        let (axes, explained) = principal_axes(&x, 3);
        let h = std::f64::consts::FRAC_1_SQRT_2;
        assert!((axes[0][0].abs() - h).abs() < 1e-6 && (axes[0][1].abs() - h).abs() < 1e-6);
        assert!(axes[0][0] * axes[0][1] > 0.0, "first axis along (1, 1)");
        assert!(axes[1][0] * axes[1][1] < 0.0, "second axis along (1, −1)");
        assert!(axes[0][2].abs() < 1e-6 && axes[1][2].abs() < 1e-6);
        assert!(
            explained[0] > 0.9 && explained[0] + explained[1] > 0.999,
            "{explained:?}"
        );
        let dot: f64 = axes[0].iter().zip(&axes[1]).map(|(a, b)| a * b).sum();
        assert!(dot.abs() < 1e-6, "orthogonal axes");
    }
}
