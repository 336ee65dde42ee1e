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
use crate::method::{
    scored_rows, sq_dist, upper_quantile, Detection, EvalContext, EvalError, FewShotMethod, Matrix,
};

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
pub(crate) fn training_sample(
    ctx: &EvalContext<'_>,
    cfg: &BaselineConfig,
) -> (Vec<usize>, Vec<bool>, f64) {
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

/// Up to `max` benign training rows outside the training sample `sample` (sorted), drawn with
/// `seed`: the rows a budget-matched baseline calibrates its threshold on (never the query pool).
/// An error naming `method` when none is left.
pub(crate) fn calibration_rows(
    ctx: &EvalContext<'_>,
    method: String,
    sample: &[usize],
    max: usize,
    seed: u64,
) -> Result<Vec<usize>, EvalError> {
    let held_out: Vec<usize> = ctx
        .split
        .benign_train
        .iter()
        .copied()
        .filter(|r| sample.binary_search(r).is_err())
        .collect();
    let cal = seeded_subsample(&held_out, max, seed);
    if cal.is_empty() {
        return Err(EvalError::Method {
            method,
            message: "no benign training rows are left outside the training sample to calibrate the threshold".into(),
        });
    }
    Ok(cal)
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

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection {
        // Score: how much nearer the support mean than the benign mean (flagged when positive).
        let s = ctx.x.centroid(&task.support);
        Detection::from_margins(
            scored_rows(ctx, task)
                .map(|q| sq_dist(ctx.x.row(q), &self.benign) - sq_dist(ctx.x.row(q), &s))
                .collect(),
        )
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

    /// The distance-weighted vote: the attack share of the weights minus one half (the score) and
    /// whether attacks outweigh benign rows (the decision).
    fn vote(&self, neighbours: &[(f32, bool)]) -> (f32, bool) {
        let (mut attack, mut benign) = (0f64, 0f64);
        for &(d, a) in neighbours.iter().take(self.cfg.knn_k) {
            let w = 1.0 / (f64::from(d).sqrt() + 1e-6);
            if a {
                attack += w;
            } else {
                benign += w;
            }
        }
        let total = attack + benign;
        let share = if total > 0.0 { attack / total } else { 0.0 };
        ((share - 0.5) as f32, attack > benign)
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

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection {
        let k = self.cfg.knn_k.max(1);
        let (scores, flagged) = scored_rows(ctx, task)
            .map(|q| {
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
            .unzip();
        Detection {
            scores,
            flagged,
            calibration: Vec::new(),
        }
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
///
/// By default a query is an attack when most trees vote so. The **budget-matched** variant
/// ([`Forest::budget_matched`]) instead flags a query when its attack probability exceeds a threshold
/// calibrated, per fitted forest, on held-out benign training rows (rows of the benign training pool
/// that are not in the forest's training sample, never the query pool) so that at most a fraction α
/// of them are flagged: the same false-positive rule as the meta-learned model, so the two are
/// compared at the same budget.
#[derive(Debug)]
pub struct Forest {
    cfg: BaselineConfig,
    with_shots: bool,
    budget: Option<f64>,
    data: Option<BinnedData>,
    y: Vec<u32>,
    mean_family: f64,
    slot: Vec<u32>,
    /// The zero-shot forest's score and decision per prepared row.
    zero_shot: Vec<(f32, bool)>,
    /// The zero-shot forest's scores of its calibration rows.
    zero_shot_calibration: Vec<f32>,
    calibration: Vec<f32>,
    /// Fit on the TF-IDF rows of the n-gram counts ([`Forest::on_tfidf`]) instead of the normalised
    /// features; those rows, for every frame row, once prepared.
    on_tfidf: bool,
    tfidf_x: Option<Matrix>,
}

/// At most this many held-out benign rows calibrate a budget-matched forest.
const FOREST_CALIBRATION_ROWS: usize = 2000;

impl Forest {
    /// A forest baseline; `with_shots` refits it per task with the support rows.
    pub fn new(cfg: BaselineConfig, with_shots: bool) -> Self {
        Forest {
            cfg,
            with_shots,
            budget: None,
            data: None,
            y: Vec::new(),
            mean_family: 1.0,
            slot: Vec::new(),
            zero_shot: Vec::new(),
            zero_shot_calibration: Vec::new(),
            calibration: Vec::new(),
            on_tfidf: false,
            tfidf_x: None,
        }
    }

    /// The budget-matched forest with shots on the TF-IDF rows of the character n-gram counts
    /// (`crate::text::Tfidf`, idf fit on the training sample): the "TF-IDF with a forest"
    /// web-payload baseline, beside `tfidf-logreg`.
    pub fn on_tfidf(cfg: BaselineConfig, alpha: f64) -> Self {
        Forest {
            on_tfidf: true,
            ..Forest::budget_matched(cfg, true, alpha)
        }
    }

    /// The rows the forest sees: the TF-IDF rows, or the normalised features.
    fn x<'a>(&'a self, ctx: &'a EvalContext<'_>) -> &'a Matrix {
        self.tfidf_x.as_ref().unwrap_or(ctx.x)
    }

    /// The budget-matched forest: attack probability thresholded at false-positive budget `alpha` on
    /// held-out benign training rows.
    pub fn budget_matched(cfg: BaselineConfig, with_shots: bool, alpha: f64) -> Self {
        Forest {
            budget: Some(alpha),
            ..Forest::new(cfg, with_shots)
        }
    }

    /// Attack probabilities of `forest` on the calibration rows (none for the majority vote) and
    /// the threshold at the budget (`None`: majority vote).
    fn calibrate(&self, forest: &RandomForest, dim: usize) -> (Vec<f32>, Option<f32>) {
        let Some(alpha) = self.budget else {
            return (Vec::new(), None);
        };
        let scores: Vec<f32> = self
            .calibration
            .chunks_exact(dim)
            .map(|row| forest.predict_proba(row)[1])
            .collect();
        let threshold = upper_quantile(&mut scores.clone(), alpha);
        (scores, Some(threshold))
    }

    /// The attack probability of `row` (the score) and whether it is flagged: probability above the
    /// calibrated threshold, or the majority vote.
    fn score(forest: &RandomForest, threshold: Option<f32>, row: &[f32]) -> (f32, bool) {
        let p = forest.predict_proba(row);
        let flagged = match threshold {
            Some(t) => p[1] > t,
            None => forest.predict(row) == 1,
        };
        (p[1], flagged)
    }
}

impl FewShotMethod for Forest {
    fn name(&self) -> String {
        let base = if self.on_tfidf {
            "tfidf-forest+shots".to_string()
        } else if self.with_shots {
            "random-forest+shots".to_string()
        } else {
            "random-forest (zero-shot)".to_string()
        };
        match self.budget {
            Some(alpha) => format!("{base} @{}% FPR", alpha * 100.0),
            None => base,
        }
    }

    fn description(&self) -> String {
        let f = &self.cfg.forest;
        format!(
            "{}{} trees, depth ≤ {}, √d features/split, {}-bin histograms; benign vs attack on benign pool + seen families (capped){}",
            if self.on_tfidf { "on the TF-IDF rows of the character n-gram counts (idf smoothed on the training sample, unit L2 norm): " } else { "" },
            f.trees,
            f.max_depth,
            f.bins,
            if self.with_shots { " + K support rows weighted as one average seen family, refit per task" } else { "" }
        ) + &match self.budget {
            Some(alpha) => format!(
                "; attack probability thresholded so that at most {alpha} of up to {FOREST_CALIBRATION_ROWS} held-out benign training rows are flagged"
            ),
            None => String::new(),
        }
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, query_rows: &[usize]) -> Result<(), EvalError> {
        let (rows, attack, mean_family) = training_sample(ctx, &self.cfg);
        if !attack.iter().any(|&a| a) || attack.iter().all(|&a| a) {
            return Err(EvalError::Method {
                method: self.name(),
                message: "the training sample needs both benign rows and seen-family rows".into(),
            });
        }
        if self.on_tfidf {
            let tfidf = crate::text::Tfidf::fit(ctx, &rows).ok_or_else(|| EvalError::Method {
                method: self.name(),
                message: "needs character n-gram columns (the http-requests layout)".into(),
            })?;
            let all: Vec<usize> = (0..ctx.frame.len()).collect();
            self.tfidf_x = Some(Matrix {
                data: tfidf.rows(ctx, &all),
                dim: tfidf.dim(),
            });
        }
        let fx = self.tfidf_x.as_ref().unwrap_or(ctx.x);
        let x = fx.gather(&rows);
        let data = BinnedData::new(&x, fx.dim, self.cfg.forest.bins);
        self.y = attack.iter().map(|&a| u32::from(a)).collect();
        self.mean_family = mean_family;
        if self.budget.is_some() {
            // Benign training rows the forest never fits on: `rows` is sorted.
            let cal = calibration_rows(
                ctx,
                self.name(),
                &rows,
                FOREST_CALIBRATION_ROWS,
                ctx.seed.wrapping_add(0xca1),
            )?;
            self.calibration = fx.gather(&cal);
        }
        if !self.with_shots {
            let w = vec![1.0; self.y.len()];
            let forest = RandomForest::fit(&data, &self.y, &w, 2, &self.cfg.forest, ctx.seed);
            let (calibration, threshold) = self.calibrate(&forest, fx.dim);
            self.zero_shot_calibration = calibration;
            self.slot = vec![u32::MAX; ctx.frame.len()];
            for (i, &q) in query_rows.iter().enumerate() {
                self.slot[q] = i as u32;
            }
            self.zero_shot = query_rows
                .par_iter()
                .map(|&q| Self::score(&forest, threshold, fx.row(q)))
                .collect();
        }
        self.data = Some(data);
        Ok(())
    }

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection {
        let Some(data) = &self.data else {
            return Detection::constant(ctx, task, false);
        };
        if !self.with_shots {
            let (scores, flagged) = scored_rows(ctx, task)
                .map(|q| match self.slot[q] {
                    u32::MAX => (0.0, false),
                    s => self.zero_shot[s as usize],
                })
                .unzip();
            return Detection {
                scores,
                flagged,
                calibration: self.zero_shot_calibration.clone(),
            };
        }
        let fx = self.x(ctx);
        let support = fx.gather(&task.support);
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
        let (calibration, threshold) = self.calibrate(&forest, fx.dim);
        let (scores, flagged) = scored_rows(ctx, task)
            .map(|q| Self::score(&forest, threshold, fx.row(q)))
            .unzip();
        Detection {
            scores,
            flagged,
            calibration,
        }
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
        let fit_data = base.with_rows(&self.x(ctx).gather(&rows));
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
                .map(|&q| forest.predict(self.x(ctx).row(q)) as usize)
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

    /// Overlapping two-class data in 2-d: class 1 is shifted by 1.5 along both axes.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let mut x = Vec::with_capacity(2 * n);
        let mut y = Vec::with_capacity(n);
        for i in 0..n {
            let c = (i % 2) as u32;
            for _ in 0..2 {
                x.push(rng.random_range(-1.0f32..1.0) * 1.5 + 1.5 * c as f32);
            }
            y.push(c);
        }
        (x, y)
    }

    #[test]
    fn budget_matched_forest_flags_at_most_the_budget_of_its_calibration_rows() {
        let (x, y) = blobs(400, 1);
        let data = BinnedData::new(&x, 2, 32);
        let cfg = ForestConfig {
            trees: 15,
            ..ForestConfig::default()
        };
        let forest = RandomForest::fit(&data, &y, &vec![1.0; y.len()], 2, &cfg, 7);
        // Benign-only calibration rows drawn like class 0, some inside the overlap.
        let (cal, cal_y) = blobs(1000, 2);
        let benign: Vec<f32> = cal
            .chunks_exact(2)
            .zip(&cal_y)
            .filter(|(_, &c)| c == 0)
            .flat_map(|(r, _)| r.to_vec())
            .collect();
        let n = benign.len() / 2;
        for alpha in [0.01, 0.05, 0.2] {
            let mut f = Forest::budget_matched(BaselineConfig::default(), false, alpha);
            f.calibration = benign.clone();
            let t = f.calibrate(&forest, 2).1;
            let flagged = benign
                .chunks_exact(2)
                .filter(|r| Forest::score(&forest, t, r).1)
                .count();
            assert!(
                flagged <= (alpha * n as f64).floor() as usize,
                "alpha {alpha}: {flagged} of {n} calibration rows flagged"
            );
        }
        // The majority-vote forest flags more of these overlapping benign rows than a 1% budget allows.
        let vote = benign
            .chunks_exact(2)
            .filter(|r| Forest::score(&forest, None, r).1)
            .count();
        assert!(vote > n / 100, "majority vote flagged only {vote} of {n}");
        assert!(
            Forest::budget_matched(BaselineConfig::default(), true, 0.01)
                .name()
                .ends_with("@1% FPR")
        );
    }
}
