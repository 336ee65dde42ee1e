//! The novel-family protocol: plans the episodes once, runs every method on the same ones, and
//! aggregates metrics (macro over families per episode, then mean and 95% CI over episodes).
//!
//! For every novel family with at least K + `min_extra_rows` rows and every K: `episodes` detection
//! tasks, each with K support rows of the family and up to `max_queries` other rows of it plus as many
//! benign query-pool rows; and N-way K-shot episodes among the evaluable novel families. Families too
//! small for a K are listed, not dropped silently. This module does not load data or print.

use std::collections::BTreeMap;

use metaids_core::episode::{
    episode_rng, sample_detection_task, ClassRows, DetectionTask, Episode, EpisodeSampler,
};
use metaids_core::metrics::{BinaryCounts, Summary};
use metaids_core::split::Split;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::method::{EvalContext, EvalError, FewShotMethod};

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
}

fn default_fpr_budget() -> f64 {
    0.01
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
}

impl Plan {
    /// Draws every episode from the split.
    pub fn new(split: &Split, cfg: &EvalConfig) -> Self {
        let mut plan = Plan {
            detection: Vec::new(),
            nway: Vec::new(),
            evaluable: BTreeMap::new(),
            too_small: Vec::new(),
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
                        plan.detection.push(t);
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
}

/// Runs every method on the plan. `progress` is called with units of work done.
pub fn run(
    ctx: &EvalContext<'_>,
    methods: &mut [Box<dyn FewShotMethod>],
    plan: &Plan,
    cfg: &EvalConfig,
    progress: &(dyn Fn(&str, u64) + Sync),
) -> Result<Vec<MethodResult>, EvalError> {
    let query_rows = plan.query_rows();
    let mut results = Vec::new();
    for method in methods.iter_mut() {
        let name = method.name();
        method.prepare(ctx, &query_rows)?;
        let method: &dyn FewShotMethod = method.as_ref();
        let counts: Vec<BinaryCounts> = plan
            .detection
            .par_iter()
            .map(|t| {
                let predicted = method.detect(ctx, t);
                progress(&name, 1);
                BinaryCounts::from_predictions(&t.truth, &predicted)
            })
            .collect();
        let nway: Vec<Option<f64>> = plan
            .nway
            .par_iter()
            .map(|(_, ep)| {
                let out = method.classify(ctx, ep).map(|pred| {
                    let truth = ep
                        .query
                        .iter()
                        .enumerate()
                        .flat_map(|(w, q)| q.iter().map(move |_| w));
                    let right = truth.zip(&pred).filter(|(t, p)| t == *p).count();
                    right as f64 / pred.len().max(1) as f64
                });
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
    counts: &[BinaryCounts],
    nway: &[Option<f64>],
    split: &Split,
    cfg: &EvalConfig,
) -> MethodResult {
    // family → episode → counts
    let mut by_family: BTreeMap<&str, Vec<(usize, BinaryCounts)>> = BTreeMap::new();
    for (t, c) in plan.detection.iter().zip(counts) {
        if t.shots == k {
            by_family
                .entry(t.family.as_str())
                .or_default()
                .push((t.episode, *c));
        }
    }
    type Metric = fn(&BinaryCounts) -> f64;
    let metrics: [Metric; 4] = [
        BinaryCounts::f1,
        BinaryCounts::recall,
        BinaryCounts::fpr,
        BinaryCounts::precision,
    ];
    let mut per_episode: BTreeMap<usize, Vec<[f64; 4]>> = BTreeMap::new();
    let mut per_family = Vec::new();
    for (family, eps) in &by_family {
        let vals: Vec<[f64; 4]> = eps.iter().map(|(_, c)| metrics.map(|m| m(c))).collect();
        for ((e, _), v) in eps.iter().zip(&vals) {
            per_episode.entry(*e).or_default().push(*v);
        }
        let col = |i: usize| Summary::of(&vals.iter().map(|v| v[i]).collect::<Vec<_>>());
        per_family.push(FamilyResult {
            family: family.to_string(),
            rows: split.novel.get(*family).map_or(0, Vec::len),
            episodes: eps.len(),
            f1: col(0),
            recall: col(1),
            fpr: col(2),
            precision: col(3),
        });
    }
    let macro_of = |i: usize| {
        let samples: Vec<f64> = per_episode
            .values()
            .map(|fams| fams.iter().map(|v| v[i]).sum::<f64>() / fams.len() as f64)
            .collect();
        Summary::of(&samples)
    };
    let accs: Vec<f64> = plan
        .nway
        .iter()
        .zip(nway)
        .filter(|((kk, _), _)| *kk == k)
        .filter_map(|(_, a)| *a)
        .collect();
    let ways = plan
        .nway
        .iter()
        .find(|(kk, _)| *kk == k)
        .map_or(0, |(_, e)| e.classes.len());
    MethodResult {
        method: method.name(),
        description: method.description(),
        shots: k,
        macro_f1: macro_of(0),
        recall: macro_of(1),
        fpr: macro_of(2),
        precision: macro_of(3),
        nway_accuracy: if accs.is_empty() {
            None
        } else {
            Some(Summary::of(&accs))
        },
        ways: if accs.is_empty() {
            0
        } else {
            ways.min(cfg.ways)
        },
        per_family,
    }
}
