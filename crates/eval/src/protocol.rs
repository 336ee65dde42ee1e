//! The novel-family protocol: plans the episodes once, runs every method on the same ones, and
//! aggregates metrics (macro over families per episode, then mean and 95% CI over episodes).
//!
//! For every novel family with at least K + `min_extra_rows` rows and every K: `episodes` detection
//! tasks, each with K support rows of the family and up to `max_queries` other rows of it plus as many
//! benign query-pool rows; and N-way K-shot episodes among the evaluable novel families. Families too
//! small for a K are listed, not dropped silently. This module does not load data or print.

use std::collections::BTreeMap;

use metaids_core::duplicates::DuplicateIndex;
use metaids_core::episode::{
    episode_rng, sample_detection_task, seeded_subsample, ClassRows, DetectionTask, Episode,
    EpisodeSampler,
};
use metaids_core::metrics::{BinaryCounts, Summary};
use metaids_core::split::Split;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::method::{upper_quantile, Detection, EvalContext, EvalError, FewShotMethod};

/// Protocol parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalConfig {
    /// The K values.
    pub shots: Vec<usize>,
    /// Episodes per family and K.
    pub episodes: usize,
    /// At most this many attack queries (and as many benign) per task.
    pub max_queries: usize,
    /// A family needs K + this many rows to be evaluated at K.
    pub min_extra_rows: usize,
    /// N of the N-way episodes (capped by the number of evaluable families).
    pub ways: usize,
    /// Queries per way in N-way episodes.
    pub nway_queries: usize,
    /// Seed of every episode.
    pub seed: u64,
    /// False-positive budget α of the budget-matched baselines (the model's rows calibrate to their own
    /// model's budget).
    #[serde(default = "default_fpr_budget")]
    pub fpr_budget: f64,
    /// Most benign query-pool rows every task scores for the operating points (a seeded sample when
    /// the pool is larger): 2,000 resolve an FPR of 0.001 with two rows above the threshold (coarse:
    /// raise it for finer figures) and keep a benchmark's cost within a few times the 1:1
    /// protocol's.
    #[serde(default = "default_pool_max")]
    pub pool_max: usize,
    /// Keep queries that repeat a training row or the task's support rows exactly (`--keep-twins`;
    /// by default they are removed, [`crate::Benchmark::new`]). Reports of earlier builds kept them.
    #[serde(default = "twins_kept_before")]
    pub keep_twins: bool,
}

fn twins_kept_before() -> bool {
    true
}

fn default_fpr_budget() -> f64 {
    0.01
}

fn default_pool_max() -> usize {
    2000
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            shots: vec![1, 5, 10],
            episodes: 100,
            max_queries: 50,
            min_extra_rows: 10,
            ways: 5,
            nway_queries: 10,
            seed: 2026,
            fpr_budget: default_fpr_budget(),
            pool_max: default_pool_max(),
            keep_twins: false,
        }
    }
}

/// A family left out at some K for having too few rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TooSmall {
    /// The family.
    pub family: String,
    /// Its rows.
    pub rows: usize,
    /// The K it could not be evaluated at.
    pub shots: usize,
    /// Rows needed (K + min_extra_rows).
    pub needed: usize,
}

/// All episodes of a run, fixed before any method runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Binary detection tasks.
    pub detection: Vec<DetectionTask>,
    /// N-way episodes, with their K.
    pub nway: Vec<(usize, Episode)>,
    /// Families evaluated at each K.
    pub evaluable: BTreeMap<usize, Vec<String>>,
    /// Families left out, per K.
    pub too_small: Vec<TooSmall>,
    /// The benign query-pool rows every task also scores (all of them, or a seeded sample of
    /// `pool_max`).
    pub pool: Vec<usize>,
    /// Attack queries dropped from their task for repeating one of its support rows exactly (with
    /// as many of the task's benign queries, to keep it balanced).
    pub support_twins_removed: usize,
}

impl Plan {
    /// Draws every episode from the split. With `twins` (the frame's duplicate index), a task's
    /// attack queries that repeat one of its support rows exactly are dropped, with as many benign
    /// queries.
    pub fn new(split: &Split, cfg: &EvalConfig, twins: Option<&DuplicateIndex>) -> Self {
        let mut plan = Plan {
            support_twins_removed: 0,
            detection: Vec::new(),
            nway: Vec::new(),
            evaluable: BTreeMap::new(),
            too_small: Vec::new(),
            pool: seeded_subsample(
                &split.benign_query,
                cfg.pool_max.max(1),
                cfg.seed ^ 0x706f_6f6c,
            ),
        };
        for &k in &cfg.shots {
            let needed = k + cfg.min_extra_rows;
            let mut fams = Vec::new();
            for (family, rows) in &split.novel {
                if rows.len() < needed {
                    plan.too_small.push(TooSmall {
                        family: family.clone(),
                        rows: rows.len(),
                        shots: k,
                        needed,
                    });
                    continue;
                }
                for e in 0..cfg.episodes {
                    let mut rng = episode_rng(cfg.seed, &format!("detect:{family}"), k, e);
                    if let Some(t) = sample_detection_task(
                        family,
                        rows,
                        &split.benign_query,
                        k,
                        cfg.max_queries,
                        &mut rng,
                        e,
                    ) {
                        let t = match twins {
                            Some(index) => {
                                let (t, dropped) = without_support_twins(t, index);
                                plan.support_twins_removed += dropped;
                                t
                            }
                            None => t,
                        };
                        if t.truth.iter().any(|&a| a) {
                            plan.detection.push(t);
                        }
                    }
                }
                fams.push(family.clone());
            }
            let ways = cfg.ways.min(fams.len());
            if ways >= 2 {
                let classes: Vec<ClassRows<'_>> = fams
                    .iter()
                    .map(|f| ClassRows {
                        name: f.as_str(),
                        rows: split.novel[f].as_slice(),
                    })
                    .collect();
                let sampler = EpisodeSampler {
                    ways,
                    shots: k,
                    queries: cfg.nway_queries,
                };
                for e in 0..cfg.episodes {
                    let mut rng = episode_rng(cfg.seed, "nway", k, e);
                    if let Some(ep) = sampler.sample(&classes, None, &mut rng) {
                        plan.nway.push((k, ep));
                    }
                }
            }
            plan.evaluable.insert(k, fams);
        }
        plan
    }

    /// Every row any task queries, sorted and unique.
    pub fn query_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self
            .detection
            .iter()
            .flat_map(|t| t.queries.iter().copied())
            .collect();
        rows.extend(
            self.nway
                .iter()
                .flat_map(|(_, e)| e.query.iter().flatten().copied()),
        );
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// Number of units of work per method (for progress bars).
    pub fn work(&self) -> u64 {
        (self.detection.len() + self.nway.len()) as u64
    }
}

/// `task` without the attack queries that repeat one of its support rows exactly, and without as
/// many of its benign queries (the last ones); with the number of attack queries dropped.
fn without_support_twins(task: DetectionTask, index: &DuplicateIndex) -> (DetectionTask, usize) {
    let twin = |q: usize| task.support.iter().any(|&s| index.same_values(q, s));
    let dropped = task
        .queries
        .iter()
        .zip(&task.truth)
        .filter(|(&q, &attack)| attack && twin(q))
        .count();
    if dropped == 0 {
        return (task, 0);
    }
    let mut benign_left = task.truth.iter().filter(|&&a| !a).count() - dropped;
    let (queries, truth) = task
        .queries
        .iter()
        .zip(&task.truth)
        .filter(|(&q, &attack)| {
            if attack {
                !twin(q)
            } else if benign_left > 0 {
                benign_left -= 1;
                true
            } else {
                false
            }
        })
        .map(|(&q, &a)| (q, a))
        .unzip();
    (
        DetectionTask {
            queries,
            truth,
            ..task
        },
        dropped,
    )
}

/// False-positive rates recall is read at (keys of `recall_at_fpr` and `recall_at_fpr_oracle`).
pub const ORACLE_FPRS: [f64; 2] = [0.001, 0.01];
/// The false-positive rates of the ROC curve (`roc`): recall read at each, per task, then averaged
/// over tasks (vertical averaging); contains [`ORACLE_FPRS`].
pub const ROC_FPRS: [f64; 10] = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5];
/// Base rates (share of attack flows) precision is stated at (keys of `precision_at_base_rate`).
pub const BASE_RATES: [f64; 3] = [0.5, 0.01, 0.001];

/// Operating points of one task, measured on the plan's benign pool rows.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TaskPoints {
    /// Share of the pool the method's own decision flags.
    pool_fpr: f64,
    /// Average precision of the scores: the task's attack queries against the whole pool.
    pr_auc: f64,
    /// Recall with the threshold at which the pool's scores give each [`ROC_FPRS`].
    oracle: [f64; ROC_FPRS.len()],
    /// Recall, then the pool's FPR, with the threshold at which the method's own calibration rows
    /// give each [`ORACLE_FPRS`] (NaN for a method without calibration rows).
    calibrated: [[f64; 2]; 2],
    /// Precision of the method's own decision at each [`BASE_RATES`], from its recall on the
    /// task and its FPR on the pool.
    precision: [f64; 3],
    /// F1 of the method's own decision at each [`BASE_RATES`] (that precision, the task's recall).
    f1: [f64; 3],
}

/// Average precision of `positives` against `negatives` (higher score = more attack-like); ties
/// are broken against the method (negatives first).
pub fn average_precision(positives: &[f32], negatives: &[f32]) -> f64 {
    if positives.is_empty() {
        return 0.0;
    }
    let mut all: Vec<(f32, bool)> = positives
        .iter()
        .map(|&s| (s, true))
        .chain(negatives.iter().map(|&s| (s, false)))
        .collect();
    // Descending score; at equal scores negatives first.
    all.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let (mut tp, mut sum) = (0usize, 0f64);
    for (i, &(_, positive)) in all.iter().enumerate() {
        if positive {
            tp += 1;
            sum += tp as f64 / (i + 1) as f64;
        }
    }
    sum / positives.len() as f64
}

/// Precision at base rate `pi` of a detector with recall `recall` and false-positive rate `fpr`
/// (0 when it flags nothing).
pub fn precision_at_base_rate(recall: f64, fpr: f64, pi: f64) -> f64 {
    let flagged = pi * recall + (1.0 - pi) * fpr;
    if flagged > 0.0 {
        pi * recall / flagged
    } else {
        0.0
    }
}

impl TaskPoints {
    /// From a task's detection over its queries then the pool, and its counts on the queries.
    fn of(task: &DetectionTask, det: &Detection, counts: &BinaryCounts) -> Self {
        let q = task.queries.len();
        let attack: Vec<f32> = det.scores[..q]
            .iter()
            .zip(&task.truth)
            .filter(|(_, &t)| t)
            .map(|(&s, _)| s)
            .collect();
        let pool = &det.scores[q..];
        let pool_flagged = det.flagged[q..].iter().filter(|&&f| f).count();
        let pool_fpr = pool_flagged as f64 / pool.len().max(1) as f64;
        // One copy of the pool's scores, reordered in place by each quantile.
        let mut p = pool.to_vec();
        let above = |rows: &[f32], t: f32| {
            rows.iter().filter(|&&s| s > t).count() as f64 / rows.len().max(1) as f64
        };
        let oracle = ROC_FPRS.map(|alpha| above(&attack, upper_quantile(&mut p, alpha)));
        let mut c = det.calibration.clone();
        let calibrated = ORACLE_FPRS.map(|alpha| {
            if c.is_empty() {
                return [f64::NAN; 2];
            }
            let t = upper_quantile(&mut c, alpha);
            [above(&attack, t), above(pool, t)]
        });
        let recall = counts.recall();
        TaskPoints {
            pool_fpr,
            pr_auc: average_precision(&attack, pool),
            oracle,
            calibrated,
            precision: BASE_RATES.map(|pi| precision_at_base_rate(recall, pool_fpr, pi)),
            f1: BASE_RATES.map(|pi| {
                let p = precision_at_base_rate(recall, pool_fpr, pi);
                if p + recall > 0.0 {
                    2.0 * p * recall / (p + recall)
                } else {
                    0.0
                }
            }),
        }
    }

    /// The task's metrics in [`episode_columns`] order: F1, recall, FPR and precision of `counts`
    /// (the task's queries), then these operating points.
    fn row(&self, counts: &BinaryCounts) -> [f64; COLUMNS] {
        let mut v = [0f64; COLUMNS];
        v[..col::ROC].copy_from_slice(&[
            counts.f1(),
            counts.recall(),
            counts.fpr(),
            counts.precision(),
            self.pool_fpr,
            self.pr_auc,
        ]);
        v[col::ROC..col::PRECISION_AT].copy_from_slice(&self.oracle);
        v[col::PRECISION_AT..col::CAL_RECALL].copy_from_slice(&self.precision);
        v[col::CAL_RECALL..col::CAL_FPR].copy_from_slice(&self.calibrated.map(|[r, _]| r));
        v[col::CAL_FPR..col::F1_AT].copy_from_slice(&self.calibrated.map(|[_, f]| f));
        v[col::F1_AT..].copy_from_slice(&self.f1);
        v
    }
}

/// Column offsets of a task's metrics ([`EpisodeRow::values`], [`episode_columns`]).
pub mod col {
    use super::{BASE_RATES, ORACLE_FPRS, ROC_FPRS};
    /// F1 on the task's queries.
    pub const F1: usize = 0;
    /// Own FPR on the benign pool.
    pub const POOL_FPR: usize = 4;
    /// PR-AUC.
    pub const PR_AUC: usize = 5;
    /// Recall at each [`ROC_FPRS`] (oracle thresholds).
    pub const ROC: usize = 6;
    /// Precision at each [`BASE_RATES`].
    pub const PRECISION_AT: usize = ROC + ROC_FPRS.len();
    /// Recall at each [`ORACLE_FPRS`] from the method's own calibration rows.
    pub const CAL_RECALL: usize = PRECISION_AT + BASE_RATES.len();
    /// The pool FPR of those thresholds.
    pub const CAL_FPR: usize = CAL_RECALL + ORACLE_FPRS.len();
    /// F1 at each [`BASE_RATES`].
    pub const F1_AT: usize = CAL_FPR + ORACLE_FPRS.len();
    /// Columns in all.
    pub const COUNT: usize = F1_AT + BASE_RATES.len();

    /// The column of the oracle recall at FPR `fpr` (one of [`ROC_FPRS`]).
    pub fn roc(fpr: f64) -> usize {
        ROC + ROC_FPRS.iter().position(|&f| f == fpr).unwrap_or(0)
    }
}

/// One point of a ROC curve: recall at a false-positive rate, mean and 95% CI over tasks (vertical
/// averaging of the per-task curves, each read off the task's benign pool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RocPoint {
    /// False-positive rate on the benign pool.
    pub fpr: f64,
    /// Recall at that rate.
    pub recall: Summary,
}

/// Operating points at realistic base rates, from the plan's benign pool rows (mean and 95% CI over
/// episodes; per family, or macro over families per episode).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OperatingPoints {
    /// Benign query-pool rows every task scored.
    pub pool_rows: usize,
    /// FPR of the method's own decision on the pool.
    pub pool_fpr: Summary,
    /// Average precision (PR-AUC) of the scores: attack queries against the pool.
    pub pr_auc: Summary,
    /// Recall at a threshold chosen on the pool's own scores to give FPR 0.001 and 0.01 — an
    /// oracle: the threshold is read off the rows it is measured on.
    pub recall_at_fpr_oracle: BTreeMap<String, Summary>,
    /// Precision of the method's own decision at base rates 0.5, 0.01 and 0.001 (attack share).
    pub precision_at_base_rate: BTreeMap<String, Summary>,
    /// Recall at a threshold read off the method's own benign calibration rows to give FPR 0.001
    /// and 0.01 (`None` for a method without calibration rows, and in reports of earlier builds).
    #[serde(default)]
    pub recall_at_fpr: Option<BTreeMap<String, Summary>>,
    /// The FPR those calibrated thresholds give on the pool (what the budget became).
    #[serde(default)]
    pub pool_fpr_at_calibrated: Option<BTreeMap<String, Summary>>,
    /// F1 of the method's own decision at base rates 0.5, 0.01 and 0.001 (absent in reports of
    /// earlier builds).
    #[serde(default)]
    pub f1_at_base_rate: BTreeMap<String, Summary>,
    /// The ROC curve at [`ROC_FPRS`], each task's threshold read off its pool (absent in reports
    /// of earlier builds). Precision at a base rate π follows from any point:
    /// π·recall / (π·recall + (1 − π)·fpr), so the PR curve at a stated base rate is this curve.
    #[serde(default)]
    pub roc: Vec<RocPoint>,
}

impl OperatingPoints {
    /// From the summaries of the [`episode_columns`] (`col(i)`: column `i`).
    fn of(pool_rows: usize, col: impl Fn(usize) -> Summary) -> Self {
        let keyed = |keys: &[f64], first: usize| {
            keys.iter()
                .enumerate()
                .map(|(i, k)| (k.to_string(), col(first + i)))
                .collect()
        };
        // A method without calibration rows has NaN there in every task.
        let calibrated = |first: usize| {
            let m: BTreeMap<String, Summary> = keyed(&ORACLE_FPRS, first);
            m.values().all(|s| s.mean.is_finite()).then_some(m)
        };
        OperatingPoints {
            pool_rows,
            pool_fpr: col(col::POOL_FPR),
            pr_auc: col(col::PR_AUC),
            recall_at_fpr_oracle: ORACLE_FPRS
                .iter()
                .map(|&f| (f.to_string(), col(col::roc(f))))
                .collect(),
            precision_at_base_rate: keyed(&BASE_RATES, col::PRECISION_AT),
            recall_at_fpr: calibrated(col::CAL_RECALL),
            pool_fpr_at_calibrated: calibrated(col::CAL_FPR),
            f1_at_base_rate: keyed(&BASE_RATES, col::F1_AT),
            roc: ROC_FPRS
                .iter()
                .map(|&fpr| RocPoint {
                    fpr,
                    recall: col(col::roc(fpr)),
                })
                .collect(),
        }
    }
}

/// Metrics per task.
const COLUMNS: usize = col::COUNT;

/// Column names of [`EpisodeRow::values`], in order.
pub fn episode_columns() -> Vec<String> {
    let mut names: Vec<String> = ["f1", "recall", "fpr", "precision", "pool_fpr", "pr_auc"]
        .map(String::from)
        .to_vec();
    let keyed = |prefix: &str, keys: &[f64]| {
        keys.iter()
            .map(move |k| format!("{prefix}_{k}"))
            .collect::<Vec<_>>()
    };
    names.extend(keyed("recall_at_fpr_oracle", &ROC_FPRS));
    names.extend(keyed("precision_at_base_rate", &BASE_RATES));
    names.extend(keyed("recall_at_fpr", &ORACLE_FPRS));
    names.extend(keyed("pool_fpr_at_calibrated", &ORACLE_FPRS));
    names.extend(keyed("f1_at_base_rate", &BASE_RATES));
    names
}

/// One task's metrics (one family, one K, one episode), for per-episode export. Equal when every
/// value is bit for bit (a figure a method cannot give is NaN in both).
#[derive(Debug, Clone)]
pub struct EpisodeRow {
    /// Index of the trained model the row comes from (0 for a single run; with several training
    /// seeds, the seed's position in `train_seeds`).
    pub run: usize,
    /// The novel family.
    pub family: String,
    /// The episode index.
    pub episode: usize,
    /// The metrics, named by [`episode_columns`].
    pub values: [f64; COLUMNS],
}

impl PartialEq for EpisodeRow {
    fn eq(&self, other: &Self) -> bool {
        self.run == other.run
            && self.family == other.family
            && self.episode == other.episode
            && self.values.map(f64::to_bits) == other.values.map(f64::to_bits)
    }
}

/// Metrics of one family at one K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FamilyResult {
    /// The family.
    pub family: String,
    /// Its rows in the data.
    pub rows: usize,
    /// Episodes run.
    pub episodes: usize,
    /// F1 over episodes.
    pub f1: Summary,
    /// Recall over episodes.
    pub recall: Summary,
    /// False-positive rate over episodes.
    pub fpr: Summary,
    /// Precision over episodes.
    pub precision: Summary,
    /// Operating points on the whole benign query pool (absent in reports of earlier builds).
    #[serde(default)]
    pub operating: Option<OperatingPoints>,
}

/// Metrics of one method at one K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// Method name.
    pub method: String,
    /// What it does.
    pub description: String,
    /// K.
    pub shots: usize,
    /// Macro-F1 over families, mean and CI over episodes.
    pub macro_f1: Summary,
    /// Macro recall.
    pub recall: Summary,
    /// Macro false-positive rate.
    pub fpr: Summary,
    /// Macro precision.
    pub precision: Summary,
    /// N-way accuracy among novel families (None for zero-shot detectors).
    pub nway_accuracy: Option<Summary>,
    /// N of the N-way episodes.
    pub ways: usize,
    /// Per-family rows.
    pub per_family: Vec<FamilyResult>,
    /// Macro operating points on the whole benign query pool (absent in reports of earlier builds).
    #[serde(default)]
    pub operating: Option<OperatingPoints>,
    /// Every task's metrics (not in the JSON report: `evaluate --episodes-csv` writes them).
    #[serde(skip)]
    pub episodes: Vec<EpisodeRow>,
    /// Every N-way episode's accuracy, with its run (not in the JSON report).
    #[serde(skip)]
    pub nway_episodes: Vec<(usize, f64)>,
    /// A row of the meta-learned model (not a baseline).
    #[serde(default)]
    pub model_row: bool,
    /// The headline row: the model row fixed before evaluation (chosen on validation families);
    /// every other model row is an ablation.
    #[serde(default)]
    pub headline: bool,
    /// Training seeds the row's figures pool (empty: one model, or a baseline).
    #[serde(default)]
    pub train_seeds: Vec<u64>,
    /// The N-way confusion matrix over every N-way query at this K (absent for a method that cannot
    /// tell families apart, and in reports of earlier builds).
    #[serde(default)]
    pub confusion: Option<Confusion>,
}

/// Counts of N-way predictions: `counts[t][p]` queries of family `families[t]` classified as
/// `families[p]`, summed over every N-way episode (and training seed) at one K.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    /// The families, in row and column order (sorted).
    pub families: Vec<String>,
    /// Row: the true family; column: the predicted one.
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    /// Adds one episode's predictions (`pred[i]` a way index; queries in way order) and returns how
    /// many were right.
    pub fn add(&mut self, episode: &Episode, pred: &[usize]) -> usize {
        let truth = episode
            .query
            .iter()
            .enumerate()
            .flat_map(|(w, q)| q.iter().map(move |_| w));
        let mut right = 0;
        for (t, &p) in truth.zip(pred) {
            right += usize::from(t == p);
            let (Some(t), Some(p)) = (episode.classes.get(t), episode.classes.get(p)) else {
                continue;
            };
            let ti = self.index(t);
            let pi = self.index(p);
            self.counts[ti][pi] += 1;
        }
        right
    }

    /// Adds another matrix's counts.
    pub fn merge(&mut self, other: &Confusion) {
        for (t, row) in other.families.iter().zip(&other.counts) {
            let ti = self.index(t);
            for (p, &n) in other.families.iter().zip(row) {
                let pi = self.index(p);
                self.counts[ti][pi] += n;
            }
        }
    }

    /// Queries counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// The family's index, inserted in sorted order when new.
    fn index(&mut self, family: &str) -> usize {
        match self.families.binary_search_by(|f| f.as_str().cmp(family)) {
            Ok(i) => i,
            Err(i) => {
                self.families.insert(i, family.to_string());
                for row in &mut self.counts {
                    row.insert(i, 0);
                }
                let n = self.families.len();
                self.counts.insert(i, vec![0; n]);
                i
            }
        }
    }
}

/// Runs every method on the plan. `progress` is called with units of work done.
pub fn run(
    ctx: &EvalContext<'_>,
    methods: &mut [Box<dyn FewShotMethod>],
    plan: &Plan,
    cfg: &EvalConfig,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<Vec<MethodResult>, EvalError> {
    // Every benign query-pool row is scored in every task (the operating points), so methods
    // prepare them too.
    let mut query_rows = plan.query_rows();
    query_rows.extend(ctx.pool);
    query_rows.sort_unstable();
    query_rows.dedup();
    let mut results = Vec::new();
    for method in methods.iter_mut() {
        let name = method.name();
        method.prepare(ctx, &query_rows)?;
        let method: &dyn FewShotMethod = method.as_ref();
        let pool = ctx.pool.len();
        let counts: Vec<(BinaryCounts, TaskPoints)> = plan
            .detection
            .par_iter()
            .map(|t| {
                let det = method.detect(ctx, t);
                progress(&name, 1);
                let n = t.queries.len() + pool;
                if det.scores.len() != n || det.flagged.len() != n {
                    return Err(EvalError::Method {
                        method: name.clone(),
                        message: format!(
                            "answered {} scores and {} decisions for {n} scored rows",
                            det.scores.len(),
                            det.flagged.len()
                        ),
                    });
                }
                let c = BinaryCounts::from_predictions(&t.truth, &det.flagged[..t.queries.len()]);
                Ok((c, TaskPoints::of(t, &det, &c)))
            })
            .collect::<Result<_, _>>()?;
        let nway: Vec<Option<Vec<usize>>> = plan
            .nway
            .par_iter()
            .map(|(_, ep)| {
                let out = method.classify(ctx, ep);
                progress(&name, 1);
                out
            })
            .collect();
        for &k in &cfg.shots {
            results.push(aggregate(method, k, plan, &counts, &nway, ctx.split, cfg));
        }
    }
    Ok(results)
}

fn aggregate(
    method: &dyn FewShotMethod,
    k: usize,
    plan: &Plan,
    counts: &[(BinaryCounts, TaskPoints)],
    nway: &[Option<Vec<usize>>],
    split: &Split,
    cfg: &EvalConfig,
) -> MethodResult {
    let episodes: Vec<EpisodeRow> = plan
        .detection
        .iter()
        .zip(counts)
        .filter(|(t, _)| t.shots == k)
        .map(|(t, (c, p))| EpisodeRow {
            run: 0,
            family: t.family.clone(),
            episode: t.episode,
            values: p.row(c),
        })
        .collect();
    let mut accs: Vec<(usize, f64)> = Vec::new();
    let mut confusion = Confusion::default();
    for ((_, ep), pred) in plan.nway.iter().zip(nway).filter(|((kk, _), _)| *kk == k) {
        let Some(pred) = pred else { continue };
        let right = confusion.add(ep, pred);
        accs.push((0, right as f64 / pred.len().max(1) as f64));
    }
    let ways = plan
        .nway
        .iter()
        .find(|(kk, _)| *kk == k)
        .map_or(0, |(_, e)| e.classes.len().min(cfg.ways));
    summarise(
        MethodResult {
            method: method.name(),
            description: method.description(),
            shots: k,
            model_row: method.is_model(),
            headline: method.is_headline(),
            confusion: (confusion.total() > 0).then_some(confusion),
            ..MethodResult::empty()
        },
        episodes,
        accs,
        ways,
        split,
        plan.pool.len(),
    )
}

/// `row` (name, description, K, role) with every figure computed from `episodes` and the N-way
/// accuracies `accs`: per family over its tasks, macro over the families of each (run, episode),
/// then mean and 95% CI over those.
fn summarise(
    row: MethodResult,
    episodes: Vec<EpisodeRow>,
    accs: Vec<(usize, f64)>,
    ways: usize,
    split: &Split,
    pool_rows: usize,
) -> MethodResult {
    let mut by_family: BTreeMap<&str, Vec<&[f64; COLUMNS]>> = BTreeMap::new();
    for e in &episodes {
        by_family.entry(&e.family).or_default().push(&e.values);
    }
    let by_episode = group_by_episode(&episodes);
    let per_family = by_family
        .iter()
        .map(|(family, vals)| {
            let col = |i: usize| Summary::of(&vals.iter().map(|v| v[i]).collect::<Vec<_>>());
            FamilyResult {
                family: family.to_string(),
                rows: split.novel.get(*family).map_or(0, Vec::len),
                episodes: vals.len(),
                f1: col(0),
                recall: col(1),
                fpr: col(2),
                precision: col(3),
                operating: Some(OperatingPoints::of(pool_rows, col)),
            }
        })
        .collect();
    let macro_of = |i: usize| {
        Summary::of(
            &macro_by_episode(&by_episode, i)
                .into_values()
                .collect::<Vec<_>>(),
        )
    };
    let nway: Vec<f64> = accs.iter().map(|&(_, a)| a).collect();
    MethodResult {
        macro_f1: macro_of(0),
        recall: macro_of(1),
        fpr: macro_of(2),
        precision: macro_of(3),
        operating: Some(OperatingPoints::of(pool_rows, macro_of)),
        nway_accuracy: (!nway.is_empty()).then(|| Summary::of(&nway)),
        ways: if nway.is_empty() { 0 } else { ways },
        per_family,
        episodes,
        nway_episodes: accs,
        ..row
    }
}

/// Task rows grouped by (run, episode).
type ByEpisode<'a> = BTreeMap<(usize, usize), Vec<&'a [f64; COLUMNS]>>;

fn group_by_episode(episodes: &[EpisodeRow]) -> ByEpisode<'_> {
    let mut out: ByEpisode<'_> = BTreeMap::new();
    for e in episodes {
        out.entry((e.run, e.episode)).or_default().push(&e.values);
    }
    out
}

/// Column `i` macro-averaged over the families of each (run, episode).
fn macro_by_episode(groups: &ByEpisode<'_>, i: usize) -> BTreeMap<(usize, usize), f64> {
    groups
        .iter()
        .map(|(k, fams)| {
            (
                *k,
                fams.iter().map(|v| v[i]).sum::<f64>() / fams.len() as f64,
            )
        })
        .collect()
}

impl MethodResult {
    /// The name in tables: model rows say whether they are the headline or an ablation, and how
    /// many training seeds they pool.
    pub fn label(&self) -> String {
        let seeds = if self.train_seeds.len() > 1 {
            format!(", {} seeds", self.train_seeds.len())
        } else {
            String::new()
        };
        match (self.model_row, self.headline) {
            (true, true) => format!("**{}** (headline{seeds})", self.method),
            (true, false) => format!("{} (ablation{seeds})", self.method),
            _ => self.method.clone(),
        }
    }

    /// A row with no figures yet.
    fn empty() -> Self {
        let zero = Summary::of(&[]);
        MethodResult {
            method: String::new(),
            description: String::new(),
            shots: 0,
            macro_f1: zero,
            recall: zero,
            fpr: zero,
            precision: zero,
            nway_accuracy: None,
            ways: 0,
            per_family: Vec::new(),
            operating: None,
            episodes: Vec::new(),
            nway_episodes: Vec::new(),
            model_row: false,
            headline: false,
            train_seeds: Vec::new(),
            confusion: None,
        }
    }
}

/// One row per method and K pooling the runs of several trained models (`runs[i]` the results of
/// the model trained with `seeds[i]`, on the same plan): every figure over seeds × episodes, so its
/// CI includes the training-seed variance. Rows are matched by method name and K; a pooled row is
/// the headline when it was the headline of most seeds' models.
pub fn merge_seeds(
    runs: &[Vec<MethodResult>],
    seeds: &[u64],
    split: &Split,
    pool_rows: usize,
) -> Vec<MethodResult> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .map(|r| {
            let mut episodes = Vec::new();
            let mut accs = Vec::new();
            let mut headline_votes = 0;
            let mut confusion: Option<Confusion> = None;
            for (run, results) in runs.iter().enumerate() {
                let Some(m) = results
                    .iter()
                    .find(|m| m.method == r.method && m.shots == r.shots)
                else {
                    continue;
                };
                headline_votes += usize::from(m.headline);
                episodes.extend(m.episodes.iter().map(|e| EpisodeRow { run, ..e.clone() }));
                accs.extend(m.nway_episodes.iter().map(|&(_, a)| (run, a)));
                if let Some(c) = &m.confusion {
                    confusion.get_or_insert_with(Confusion::default).merge(c);
                }
            }
            summarise(
                MethodResult {
                    method: r.method.clone(),
                    description: r.description.clone(),
                    shots: r.shots,
                    model_row: r.model_row,
                    // Each seed's model picks its headline row on its validation families; the
                    // pooled row is the headline when most seeds picked it.
                    headline: 2 * headline_votes > runs.len(),
                    train_seeds: seeds.to_vec(),
                    confusion,
                    ..MethodResult::empty()
                },
                episodes,
                accs,
                r.ways,
                split,
                pool_rows,
            )
        })
        .collect()
}

/// Metrics paired differences are reported for: (key in the report, [`episode_columns`] index).
pub const PAIRED_METRICS: [(&str, usize); 4] = [
    ("pr_auc", col::PR_AUC),
    ("recall_at_fpr_oracle_0.001", col::ROC + 1),
    ("recall_at_fpr_0.001", col::CAL_RECALL),
    ("f1", col::F1),
];

/// A model row against the best baseline on one metric at one K, paired on the same episodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// The model row.
    pub method: String,
    /// K.
    pub shots: usize,
    /// The metric (a key of [`PAIRED_METRICS`]).
    pub metric: String,
    /// The baseline with the highest mean of the metric at this K (the hardest to beat).
    pub baseline: String,
    /// Model minus baseline, macro over families, per (training seed, episode): mean and 95% CI.
    pub difference: Summary,
}

/// Paired differences of every model row against the best baseline of each metric and K. A
/// baseline's episode `e` pairs with episode `e` of every training seed of the model row.
pub fn paired_differences(results: &[MethodResult]) -> Vec<PairedDifference> {
    let macro_of = |r: &MethodResult, i: usize| macro_by_episode(&group_by_episode(&r.episodes), i);
    let mut out = Vec::new();
    for m in results.iter().filter(|r| r.model_row) {
        for (metric, i) in PAIRED_METRICS {
            let best = results
                .iter()
                .filter(|b| !b.model_row && b.shots == m.shots)
                .map(|b| (b, macro_of(b, i)))
                .filter(|(_, v)| !v.is_empty() && v.values().all(|x| x.is_finite()))
                .max_by(|a, b| mean(&a.1).total_cmp(&mean(&b.1)));
            let Some((b, base)) = best else { continue };
            let diffs: Vec<f64> = macro_of(m, i)
                .into_iter()
                .filter_map(|((_, e), v)| base.get(&(0, e)).map(|x| v - x))
                .collect();
            if diffs.is_empty() || diffs.iter().any(|d| !d.is_finite()) {
                continue;
            }
            out.push(PairedDifference {
                method: m.method.clone(),
                shots: m.shots,
                metric: metric.to_string(),
                baseline: b.method.clone(),
                difference: Summary::of(&diffs),
            });
        }
    }
    out
}

fn mean(v: &BTreeMap<(usize, usize), f64>) -> f64 {
    v.values().sum::<f64>() / v.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_precision_by_hand() {
        // Ranked: p(0.9) n(0.8) p(0.7) n(0.1): AP = (1/1 + 2/3) / 2.
        let ap = average_precision(&[0.9, 0.7], &[0.8, 0.1]);
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-12, "{ap}");
        assert_eq!(average_precision(&[1.0, 2.0], &[0.0]), 1.0);
        // A tie counts against the method: the negative ranks first.
        assert_eq!(average_precision(&[0.5], &[0.5]), 0.5);
        assert_eq!(average_precision(&[], &[1.0]), 0.0);
    }

    #[test]
    fn precision_at_a_base_rate() {
        // Recall 0.9 and FPR 1% at one attack per thousand flows: 0.0009 / (0.0009 + 0.00999).
        let p = precision_at_base_rate(0.9, 0.01, 0.001);
        assert!((p - 0.0009 / (0.0009 + 0.999 * 0.01)).abs() < 1e-12, "{p}");
        assert_eq!(precision_at_base_rate(1.0, 0.0, 0.001), 1.0);
        assert_eq!(precision_at_base_rate(0.0, 0.0, 0.5), 0.0);
    }

    /// A row whose every task has F1 (and every other column) `value`, per (run, episode, family).
    fn row(method: &str, model: bool, tasks: &[(usize, usize, &str, f64)]) -> MethodResult {
        MethodResult {
            method: method.into(),
            shots: 5,
            model_row: model,
            episodes: tasks
                .iter()
                .map(|&(run, episode, family, v)| EpisodeRow {
                    run,
                    family: family.into(),
                    episode,
                    values: [v; COLUMNS],
                })
                .collect(),
            ..MethodResult::empty()
        }
    }

    fn no_split() -> Split {
        Split {
            benign: "benign".into(),
            benign_train: Vec::new(),
            benign_query: Vec::new(),
            seen: BTreeMap::new(),
            validation: BTreeMap::new(),
            novel: BTreeMap::new(),
            absent: Vec::new(),
        }
    }

    #[test]
    fn seeds_pool_into_one_row_over_seeds_times_episodes() {
        let one = |v: f64| {
            row(
                "m",
                true,
                &[
                    (0, 0, "a", v),
                    (0, 0, "b", v + 0.2),
                    (0, 1, "a", v),
                    (0, 1, "b", v),
                ],
            )
        };
        let runs = vec![vec![one(0.5)], vec![one(0.7)]];
        let merged = merge_seeds(&runs, &[11, 12], &no_split(), 100);
        assert_eq!(merged.len(), 1);
        let m = &merged[0];
        assert_eq!(m.train_seeds, vec![11, 12]);
        // Macro samples per (seed, episode): 0.6, 0.5, 0.8, 0.7.
        assert_eq!(m.macro_f1.n, 4);
        assert!((m.macro_f1.mean - 0.65).abs() < 1e-12, "{:?}", m.macro_f1);
        assert_eq!(m.per_family[0].f1.n, 4);
        assert_eq!(m.episodes.iter().filter(|e| e.run == 1).count(), 4);
        assert!(m.label().contains("2 seeds"));
        // Headline when most seeds' models picked it: one of two is not most, two of three are.
        let pick = |headline: bool| MethodResult {
            headline,
            ..one(0.5)
        };
        let votes = |picks: &[bool]| {
            let runs: Vec<Vec<MethodResult>> = picks.iter().map(|&h| vec![pick(h)]).collect();
            merge_seeds(&runs, &[1, 2, 3][..picks.len()], &no_split(), 100)[0].headline
        };
        assert!(!votes(&[true, false]));
        assert!(votes(&[true, false, true]));
        assert!(!votes(&[false, false, true]));
    }

    #[test]
    fn paired_differences_use_the_best_baseline_on_the_same_episodes() {
        let weak = row("weak", false, &[(0, 0, "a", 0.1), (0, 1, "a", 0.2)]);
        let strong = row("strong", false, &[(0, 0, "a", 0.6), (0, 1, "a", 0.9)]);
        // Two training seeds of the model: episode e pairs with the baseline's episode e.
        let model = row(
            "model",
            true,
            &[
                (0, 0, "a", 0.7),
                (0, 1, "a", 0.9),
                (1, 0, "a", 0.5),
                (1, 1, "a", 1.0),
            ],
        );
        let paired = paired_differences(&[weak, strong, model]);
        assert_eq!(paired.len(), PAIRED_METRICS.len());
        for d in &paired {
            assert_eq!(
                (d.method.as_str(), d.baseline.as_str()),
                ("model", "strong")
            );
            // Differences 0.1, 0.0, −0.1, 0.1.
            assert_eq!(d.difference.n, 4);
            assert!(
                (d.difference.mean - 0.025).abs() < 1e-12,
                "{:?}",
                d.difference
            );
        }
    }

    #[test]
    fn task_points_read_the_pool() {
        // Two attack queries and two benign queries, then a pool of 1,000 benign rows scored 0..1.
        let task = DetectionTask {
            family: "f".into(),
            shots: 1,
            episode: 0,
            support: vec![0],
            queries: vec![1, 2, 3, 4],
            truth: vec![true, true, false, false],
        };
        let mut scores = vec![0.9995, 0.5, 0.1, 0.2];
        scores.extend((0..1000).map(|i| i as f32 / 1000.0));
        // Own decision: flagged above 0.99 (nine pool rows: 0.991 … 0.999).
        let flagged: Vec<bool> = scores.iter().map(|&s| s > 0.99).collect();
        // Calibration rows scored 0 … 0.999: at 0.001 the threshold is 0.998 (pool rows above: 0.999),
        // at 0.01 it is 0.989.
        let calibration = (0..1000).map(|i| i as f32 / 1000.0).collect();
        let det = Detection {
            scores,
            flagged,
            calibration,
        };
        let counts = BinaryCounts::from_predictions(&task.truth, &det.flagged[..4]);
        let p = TaskPoints::of(&task, &det, &counts);
        assert!((p.pool_fpr - 0.009).abs() < 1e-12, "{}", p.pool_fpr);
        // FPR 0.001 allows one pool row above the threshold (0.998): only 0.9995 passes.
        assert_eq!(p.oracle[col::roc(0.001) - col::ROC], 0.5);
        // FPR 0.01 allows ten (threshold 0.989): still only 0.9995.
        assert_eq!(p.oracle[col::roc(0.01) - col::ROC], 0.5);
        // FPR 0.5 (threshold 0.499): both attack queries.
        assert_eq!(p.oracle[col::roc(0.5) - col::ROC], 1.0);
        let names = episode_columns();
        assert_eq!(names.len(), COLUMNS);
        assert_eq!(names[col::ROC + 1], "recall_at_fpr_oracle_0.001");
        assert_eq!(names[PAIRED_METRICS[2].1], "recall_at_fpr_0.001");
        assert_eq!(names[col::F1_AT], "f1_at_base_rate_0.5");
        assert_eq!(p.precision[0], precision_at_base_rate(0.5, 0.009, 0.5));
        let (pr, r) = (p.precision[2], 0.5);
        assert!((p.f1[2] - 2.0 * pr * r / (pr + r)).abs() < 1e-12);
        assert!(p.pr_auc > 0.5 && p.pr_auc < 1.0, "{}", p.pr_auc);
        assert_eq!(p.calibrated[0], [0.5, 0.001]);
        assert_eq!(p.calibrated[1][0], 0.5);
        assert!(
            (p.calibrated[1][1] - 0.010).abs() < 1e-12,
            "{:?}",
            p.calibrated
        );
        // Without calibration rows: not a number, so the report leaves the figure out.
        let bare = Detection {
            calibration: Vec::new(),
            ..det
        };
        assert!(TaskPoints::of(&task, &bare, &counts).calibrated[0][0].is_nan());
    }
}
