//! Classical baselines on the preprocessed features: nearest centroid, k-nearest neighbours and a
//! random forest, each zero-shot (seen families and benign only) and/or with the K support rows.
//!
//! They fit only on a seeded, capped sample of the training rows (benign training pool and seen
//! families) plus each task's support rows. Hyper-parameters are fixed defaults, never tuned on
//! evaluation data.

use std::collections::BTreeMap;

use metaids_core::episode::{episode_rng, seeded_subsample, DetectionTask, Episode};
use rand::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::forest::{BinnedData, ForestConfig, RandomForest};
use crate::method::{sq_dist, EvalContext, EvalError, FewShotMethod};

/// Settings shared by the baselines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BaselineConfig {
    /// At most this many benign training rows in a baseline's training sample.
    pub max_benign: usize,
    /// At most this many rows of each seen family in it.
    pub max_per_family: usize,
    /// k of k-nearest neighbours.
    pub knn_k: usize,
    /// Random forest settings.
    pub forest: ForestConfig,
}

impl Default for BaselineConfig {
    fn default() -> Self {
        BaselineConfig {
            max_benign: 3000,
            max_per_family: 500,
            knn_k: 5,
            forest: ForestConfig::default(),
        }
    }
}

/// The capped training sample: rows and whether each is an attack, sorted by row.
fn training_sample(ctx: &EvalContext<'_>, cfg: &BaselineConfig) -> (Vec<usize>, Vec<bool>, f64) {
    let mut rows: Vec<(usize, bool)> =
        seeded_subsample(&ctx.split.benign_train, cfg.max_benign, ctx.seed)
            .into_iter()
            .map(|r| (r, false))
            .collect();
    let families: BTreeMap<&String, &Vec<usize>> =
        ctx.split.seen.iter().chain(&ctx.split.validation).collect();
    let mut attack_rows = 0usize;
    for (i, fam_rows) in families.values().enumerate() {
        let sub = seeded_subsample(
            fam_rows,
            cfg.max_per_family,
            ctx.seed.wrapping_add(1 + i as u64),
        );
        attack_rows += sub.len();
        rows.extend(sub.into_iter().map(|r| (r, true)));
    }
    rows.sort_unstable();
    let mean_family = attack_rows as f64 / families.len().max(1) as f64;
    let (r, a) = rows.into_iter().unzip();
    (r, a, mean_family)
}

fn seed_for(ctx: &EvalContext<'_>, tag: &str, task: &DetectionTask) -> u64 {
    episode_rng(
        ctx.seed,
        &format!("{tag}:{}", task.family),
        task.shots,
        task.episode,
    )
    .random()
}

/// Nearest centroid: a query is an attack when it is closer to the mean of the K support rows than to
/// the mean of the benign training pool.
#[derive(Debug, Default)]
pub struct NearestCentroid {
    benign: Vec<f32>,
}

impl FewShotMethod for NearestCentroid {
    fn name(&self) -> String {
        "nearest-centroid".into()
    }

    fn description(&self) -> String {
        "support-mean vs benign-training-pool-mean, squared Euclidean on preprocessed features"
            .into()
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, _query_rows: &[usize]) -> Result<(), EvalError> {
        self.benign = ctx.x.centroid(&ctx.split.benign_train);
        Ok(())
    }

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Vec<bool> {
        let s = ctx.x.centroid(&task.support);
        task.queries
            .iter()
            .map(|&q| sq_dist(ctx.x.row(q), &s) < sq_dist(ctx.x.row(q), &self.benign))
            .collect()
    }

    fn classify(&self, ctx: &EvalContext<'_>, episode: &Episode) -> Option<Vec<usize>> {
        let centroids: Vec<Vec<f32>> = episode.support.iter().map(|s| ctx.x.centroid(s)).collect();
        Some(
            episode
                .query
                .iter()
                .flatten()
                .map(|&q| nearest(centroids.iter().map(|c| sq_dist(ctx.x.row(q), c))))
                .collect(),
        )
    }
}

fn nearest(dists: impl Iterator<Item = f32>) -> usize {
    dists
        .enumerate()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(0, |(i, _)| i)
}

/// k-nearest neighbours with distance-weighted votes over the capped training sample (benign vs
/// seen attacks), optionally with the support rows added as attacks.
#[derive(Debug)]
pub struct Knn {
    cfg: BaselineConfig,
    with_shots: bool,
    /// Frame row → slot in `neighbours` (u32::MAX: not a query row).
    slot: Vec<u32>,
    /// Per query row, its k nearest training rows: (squared distance, is attack).
    neighbours: Vec<Vec<(f32, bool)>>,
}

impl Knn {
    /// A k-NN baseline; `with_shots` adds each task's support rows to the reference set.
    pub fn new(cfg: BaselineConfig, with_shots: bool) -> Self {
        Knn {
            cfg,
            with_shots,
            slot: Vec::new(),
            neighbours: Vec::new(),
        }
    }

    fn vote(&self, neighbours: &[(f32, bool)]) -> bool {
        let (mut attack, mut benign) = (0f64, 0f64);
        for &(d, a) in neighbours.iter().take(self.cfg.knn_k) {
            let w = 1.0 / (f64::from(d).sqrt() + 1e-6);
            if a {
                attack += w;
            } else {
                benign += w;
            }
        }
        attack > benign
    }
}

fn insert_top_k(top: &mut Vec<(f32, bool)>, k: usize, item: (f32, bool)) {
    if top.len() == k && top.last().is_some_and(|l| l.0 <= item.0) {
        return;
    }
    let pos = top.partition_point(|x| x.0 <= item.0);
    top.insert(pos, item);
    top.truncate(k);
}

impl FewShotMethod for Knn {
    fn name(&self) -> String {
        if self.with_shots {
            "knn+shots".into()
        } else {
            "knn (zero-shot)".into()
        }
    }

    fn description(&self) -> String {
        format!(
            "{}-NN, 1/distance-weighted vote, reference = benign pool + seen families (capped){}",
            self.cfg.knn_k,
            if self.with_shots {
                " + K support rows"
            } else {
                ""
            }
        )
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, query_rows: &[usize]) -> Result<(), EvalError> {
        let (rows, attack, _) = training_sample(ctx, &self.cfg);
        let k = self.cfg.knn_k.max(1);
        self.slot = vec![u32::MAX; ctx.frame.len()];
        for (i, &q) in query_rows.iter().enumerate() {
            self.slot[q] = i as u32;
        }
        self.neighbours = query_rows
            .par_iter()
            .map(|&q| {
                let x = ctx.x.row(q);
                let mut top = Vec::with_capacity(k + 1);
                for (&r, &a) in rows.iter().zip(&attack) {
                    insert_top_k(&mut top, k, (sq_dist(x, ctx.x.row(r)), a));
                }
                top
            })
            .collect();
        Ok(())
    }

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Vec<bool> {
        let k = self.cfg.knn_k.max(1);
        task.queries
            .iter()
            .map(|&q| {
                let slot = self.slot[q];
                let mut top = if slot == u32::MAX {
                    Vec::new()
                } else {
                    self.neighbours[slot as usize].clone()
                };
                if self.with_shots {
                    for &s in &task.support {
                        insert_top_k(&mut top, k, (sq_dist(ctx.x.row(q), ctx.x.row(s)), true));
                    }
                }
                self.vote(&top)
            })
            .collect()
    }

    fn classify(&self, ctx: &EvalContext<'_>, episode: &Episode) -> Option<Vec<usize>> {
        if !self.with_shots {
            return None;
        }
        let support: Vec<(usize, usize)> = episode
            .support
            .iter()
            .enumerate()
            .flat_map(|(w, s)| s.iter().map(move |&r| (w, r)))
            .collect();
        let k = self.cfg.knn_k.clamp(1, support.len().max(1));
        Some(
            episode
                .query
                .iter()
                .flatten()
                .map(|&q| {
                    let mut d: Vec<(f32, usize)> = support
                        .iter()
                        .map(|&(w, r)| (sq_dist(ctx.x.row(q), ctx.x.row(r)), w))
                        .collect();
                    d.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let mut votes = vec![0f64; episode.classes.len()];
                    for &(dist, w) in d.iter().take(k) {
                        votes[w] += 1.0 / (f64::from(dist).sqrt() + 1e-6);
                    }
                    nearest(votes.iter().map(|v| -(*v as f32)))
                })
                .collect(),
        )
    }
}

/// A random forest (benign vs attack) on the capped training sample; with shots, refit in every task
/// with the K support rows added as attacks, weighted so the new family counts as much as an average
/// seen family in the sample.
#[derive(Debug)]
pub struct Forest {
    cfg: BaselineConfig,
    with_shots: bool,
    data: Option<BinnedData>,
    y: Vec<u32>,
    mean_family: f64,
    slot: Vec<u32>,
    zero_shot: Vec<bool>,
}

impl Forest {
    /// A forest baseline; `with_shots` refits it per task with the support rows.
    pub fn new(cfg: BaselineConfig, with_shots: bool) -> Self {
        Forest {
            cfg,
            with_shots,
            data: None,
            y: Vec::new(),
            mean_family: 1.0,
            slot: Vec::new(),
            zero_shot: Vec::new(),
        }
    }
}

impl FewShotMethod for Forest {
    fn name(&self) -> String {
        if self.with_shots {
            "random-forest+shots".into()
        } else {
            "random-forest (zero-shot)".into()
        }
    }

    fn description(&self) -> String {
        let f = &self.cfg.forest;
        format!(
            "{} trees, depth ≤ {}, √d features/split, {}-bin histograms; benign vs attack on benign pool + seen families (capped){}",
            f.trees,
            f.max_depth,
            f.bins,
            if self.with_shots { " + K support rows weighted as one average seen family, refit per task" } else { "" }
        )
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, query_rows: &[usize]) -> Result<(), EvalError> {
        let (rows, attack, mean_family) = training_sample(ctx, &self.cfg);
        if !attack.iter().any(|&a| a) || attack.iter().all(|&a| a) {
            return Err(EvalError::Method {
                method: self.name(),
                message: "the training sample needs both benign rows and seen-family rows".into(),
            });
        }
        let x = ctx.x.gather(&rows);
        let data = BinnedData::new(&x, ctx.x.dim, self.cfg.forest.bins);
        self.y = attack.iter().map(|&a| u32::from(a)).collect();
        self.mean_family = mean_family;
        if !self.with_shots {
            let w = vec![1.0; self.y.len()];
            let forest = RandomForest::fit(&data, &self.y, &w, 2, &self.cfg.forest, ctx.seed);
            self.slot = vec![u32::MAX; ctx.frame.len()];
            for (i, &q) in query_rows.iter().enumerate() {
                self.slot[q] = i as u32;
            }
            self.zero_shot = query_rows
                .par_iter()
                .map(|&q| forest.predict(ctx.x.row(q)) == 1)
                .collect();
        }
        self.data = Some(data);
        Ok(())
    }

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Vec<bool> {
        let Some(data) = &self.data else {
            return vec![false; task.queries.len()];
        };
        if !self.with_shots {
            return task
                .queries
                .iter()
                .map(|&q| {
                    let s = self.slot[q];
                    s != u32::MAX && self.zero_shot[s as usize]
                })
                .collect();
        }
        let support = ctx.x.gather(&task.support);
        let data = data.with_rows(&support);
        let mut y = self.y.clone();
        y.extend(std::iter::repeat_n(1, task.support.len()));
        let mut w = vec![1.0f32; self.y.len()];
        let support_weight = (self.mean_family / task.support.len().max(1) as f64).max(1.0) as f32;
        w.extend(std::iter::repeat_n(support_weight, task.support.len()));
        let forest = RandomForest::fit(
            &data,
            &y,
            &w,
            2,
            &self.cfg.forest,
            seed_for(ctx, "forest", task),
        );
        task.queries
            .iter()
            .map(|&q| forest.predict(ctx.x.row(q)) == 1)
            .collect()
    }

    fn classify(&self, ctx: &EvalContext<'_>, episode: &Episode) -> Option<Vec<usize>> {
        if !self.with_shots {
            return None;
        }
        let data = self.data.as_ref()?;
        let rows: Vec<usize> = episode.support.iter().flatten().copied().collect();
        let y: Vec<u32> = episode
            .support
            .iter()
            .enumerate()
            .flat_map(|(w, s)| s.iter().map(move |_| w as u32))
            .collect();
        let base = BinnedData::empty(data.binner.clone(), data.d);
        let fit_data = base.with_rows(&ctx.x.gather(&rows));
        let seed = episode_rng(ctx.seed, "forest-nway", episode.support[0].len(), rows[0]).random();
        let forest = RandomForest::fit(
            &fit_data,
            &y,
            &vec![1.0; y.len()],
            episode.classes.len(),
            &self.cfg.forest,
            seed,
        );
        Some(
            episode
                .query
                .iter()
                .flatten()
                .map(|&q| forest.predict(ctx.x.row(q)) as usize)
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_the_k_smallest_in_order() {
        let mut top = Vec::new();
        for d in [5.0, 1.0, 4.0, 2.0, 3.0, 0.5] {
            insert_top_k(&mut top, 3, (d, false));
        }
        assert_eq!(
            top.iter().map(|t| t.0).collect::<Vec<_>>(),
            vec![0.5, 1.0, 2.0]
        );
    }
}
