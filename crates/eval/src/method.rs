//! The seam between the evaluation harness and anything it evaluates: the [`FewShotMethod`] trait.
//!
//! A method is prepared once on the training view of a split, then answers detection tasks and N-way
//! episodes. Baselines and the meta-learned model implement the same trait, so they are scored on the
//! very same episodes. This module holds no method of its own.

use metaids_core::episode::{DetectionTask, Episode};
use metaids_core::preprocess::Normaliser;
use metaids_core::split::Split;
use metaids_core::FlowFrame;

/// A dense row-major matrix of preprocessed features.
#[derive(Debug, Clone, Default)]
pub struct Matrix {
    /// Values, `rows × dim`.
    pub data: Vec<f32>,
    /// Columns.
    pub dim: usize,
}

impl Matrix {
    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.dim..(r + 1) * self.dim]
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.data.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Gathers `rows` into a new row-major buffer.
    pub fn gather(&self, rows: &[usize]) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            out.extend_from_slice(self.row(r));
        }
        out
    }

    /// Mean of `rows`.
    pub fn centroid(&self, rows: &[usize]) -> Vec<f32> {
        let mut c = vec![0f64; self.dim];
        for &r in rows {
            c.iter_mut()
                .zip(self.row(r))
                .for_each(|(a, &b)| *a += f64::from(b));
        }
        let n = rows.len().max(1) as f64;
        c.into_iter().map(|v| (v / n) as f32).collect()
    }
}

/// The budget quantile and the squared distance of the decision core (one copy, shared with every
/// rule the baselines are compared against).
pub use metaids_decide::geometry::{sq_dist, upper_quantile};

/// Everything a method may look at.
///
/// Methods must fit only on [`Split::training_rows`] (benign training pool, seen and validation
/// families) and on the support rows of each task; query rows and novel families are off limits.
#[derive(Debug)]
pub struct EvalContext<'a> {
    /// The raw rows (for methods with their own preprocessing).
    pub frame: &'a FlowFrame,
    /// The class-disjoint split.
    pub split: &'a Split,
    /// The normaliser fit on the training rows.
    pub normaliser: &'a Normaliser,
    /// Every row of `frame`, transformed by `normaliser`.
    pub x: &'a Matrix,
    /// The run's seed.
    pub seed: u64,
    /// The benign query-pool rows every detection task also scores ([`scored_rows`]; the plan's).
    pub pool: &'a [usize],
}

/// Errors a method may raise while preparing.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The method cannot run on this data.
    #[error("{method}: {message}")]
    Method {
        /// The method's name.
        method: String,
        /// What went wrong.
        message: String,
    },
    /// The core refused something (schema mismatch, split).
    #[error(transparent)]
    Core(#[from] metaids_core::CoreError),
}

/// A method's answer to a detection task, over the rows [`scored_rows`] lists (the task's queries,
/// then every benign query-pool row): a score per row (higher = more attack-like; comparable within
/// one task) and the method's own decision at its own calibrated operating point; plus the scores of
/// the method's own held-out benign calibration rows for this task, if it keeps any, from which the
/// protocol reads a threshold for any false-positive rate without looking at the query rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Detection {
    /// One score per scored row.
    pub scores: Vec<f32>,
    /// One decision per scored row (true = attack).
    pub flagged: Vec<bool>,
    /// The same score of each of the method's own benign calibration rows (rows it never fits on
    /// and never queried); empty for a method without calibration rows.
    pub calibration: Vec<f32>,
}

impl Detection {
    /// The same decision for every scored row (a method that could not run flags nothing), with the
    /// score of a flag.
    pub fn constant(ctx: &EvalContext<'_>, task: &DetectionTask, flag: bool) -> Self {
        let n = task.queries.len() + ctx.pool.len();
        Detection {
            scores: vec![if flag { 1.0 } else { 0.0 }; n],
            flagged: vec![flag; n],
            calibration: Vec::new(),
        }
    }

    /// From scores whose sign is the decision (flagged iff the score is above 0).
    pub fn from_margins(scores: Vec<f32>) -> Self {
        let flagged = scores.iter().map(|&s| s > 0.0).collect();
        Detection {
            scores,
            flagged,
            calibration: Vec::new(),
        }
    }

    /// With the scores of the method's own calibration rows.
    pub fn calibrated(self, calibration: Vec<f32>) -> Self {
        Detection {
            calibration,
            ..self
        }
    }
}

/// The rows a detection task scores: its queries (attack first, then benign, as
/// [`DetectionTask::truth`] says), then the plan's benign pool rows ([`EvalContext::pool`]: every
/// distinct benign query row, or a seeded sample of `pool_max`), so that a false-positive rate is
/// measured on far more benign rows than the task's sample.
pub fn scored_rows<'a>(
    ctx: &'a EvalContext<'_>,
    task: &'a DetectionTask,
) -> impl Iterator<Item = usize> + 'a {
    task.queries.iter().chain(ctx.pool).copied()
}

/// A few-shot detector under evaluation.
pub trait FewShotMethod: Send + Sync {
    /// Short name for tables (`nearest-centroid`, `random-forest+shots`, …).
    fn name(&self) -> String;

    /// One line on what it does, for the report.
    fn description(&self) -> String;

    /// A row of the meta-learned model (its figures are paired against the best baseline's).
    fn is_model(&self) -> bool {
        false
    }

    /// The headline row: fixed before any novel family is scored; every other model row is an
    /// ablation.
    fn is_headline(&self) -> bool {
        false
    }

    /// Fits on the training rows. `query_rows` lists every row any task may query, so a method may
    /// cache per-row work that does not depend on the support set (it must not fit on them).
    fn prepare(&mut self, ctx: &EvalContext<'_>, query_rows: &[usize]) -> Result<(), EvalError>;

    /// Scores and flags each row of [`scored_rows`] (the task's queries, then the benign query pool).
    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection;

    /// Classifies each query of an N-way episode among its ways (queries in way order, flattened);
    /// `None` if the method cannot tell families apart (a zero-shot detector).
    fn classify(&self, ctx: &EvalContext<'_>, episode: &Episode) -> Option<Vec<usize>> {
        let _ = (ctx, episode);
        None
    }

    /// The method's embedding of `rows` (dimension, row-major values), for the report's map;
    /// `None` for a method without one.
    fn embed(&self, ctx: &EvalContext<'_>, rows: &[usize]) -> Option<(usize, Vec<f32>)> {
        let _ = (ctx, rows);
        None
    }
}
