//! TF-IDF of character n-grams with logistic regression: the classical baseline of web-payload
//! detection (issue 16), on the `http-requests` layout's hashed n-gram buckets.
//!
//! - **TF-IDF**: each row's raw n-gram bucket counts (the layout's `ngram_*` columns; the shape
//!   counts are left out) times the smoothed inverse document frequency `ln((1 + n) / (1 + df)) + 1`
//!   fit on the training sample, then scaled to unit L2 norm (scikit-learn's `TfidfVectorizer`
//!   defaults).
//! - **Logistic regression**: benign versus attack on the capped training sample (benign training
//!   pool and seen families, as the other baselines) plus the K support rows, weighted as one
//!   average seen family (as the forest does); L2 penalty [`LAMBDA`]; full-batch gradient descent
//!   with step `1 / L` (rows of unit norm bound the loss's curvature by 1/4), [`PREPARE_STEPS`]
//!   steps for the fit without support and [`TASK_STEPS`] more from it per task.
//! - **Decision**: the attack logit above a threshold calibrated on held-out benign training rows
//!   (rows outside the sample, never the query pool) so that at most the budget of them are
//!   flagged — the same false-positive rule as the model and `forest+shots @budget`.
//!
//! Every setting is a fixed default set before any evaluation and never tuned.

use metaids_core::episode::DetectionTask;

use crate::baselines::{calibration_rows, training_sample, BaselineConfig};
use crate::method::{
    scored_rows, upper_quantile, Detection, EvalContext, EvalError, FewShotMethod,
};
use crate::text::Tfidf;

/// L2 penalty on the weights (not the bias).
pub const LAMBDA: f32 = 1e-4;
/// Gradient steps of the fit on the training sample.
pub const PREPARE_STEPS: usize = 400;
/// Gradient steps per task, from the training-sample fit, with the support rows added.
pub const TASK_STEPS: usize = 100;
/// At most this many held-out benign rows calibrate the threshold.
const CALIBRATION_ROWS: usize = 2000;

/// The baseline.
#[derive(Debug)]
pub struct TfidfLogReg {
    cfg: BaselineConfig,
    budget: f64,
    tfidf: Tfidf,
    /// TF-IDF rows of the training sample, its labels and weights.
    x: Vec<f32>,
    y: Vec<f32>,
    mean_family: f64,
    /// Weights then bias, fit on the training sample.
    base: Vec<f32>,
    /// TF-IDF rows of the calibration rows.
    calibration: Vec<f32>,
}

impl TfidfLogReg {
    /// The baseline at false-positive budget `budget`.
    pub fn new(cfg: BaselineConfig, budget: f64) -> Self {
        TfidfLogReg {
            cfg,
            budget,
            tfidf: Tfidf::default(),
            x: Vec::new(),
            y: Vec::new(),
            mean_family: 1.0,
            base: Vec::new(),
            calibration: Vec::new(),
        }
    }

    fn logit(w: &[f32], x: &[f32]) -> f32 {
        let d = x.len();
        w[..d].iter().zip(x).map(|(a, b)| a * b).sum::<f32>() + w[d]
    }
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// `steps` of full-batch gradient descent on the weighted, L2-penalised logistic loss of rows `x`
/// (unit norm), labels `y` and weights `wt`, from `w` (weights then bias).
fn descend(w: &mut [f32], x: &[f32], y: &[f32], wt: &[f32], steps: usize) {
    let d = w.len() - 1;
    let total: f32 = wt.iter().sum::<f32>().max(f32::MIN_POSITIVE);
    // ‖x‖ ≤ 1 with the bias's constant 1: curvature at most (1 + 1) / 4, plus the penalty.
    let step = 1.0 / (0.5 + LAMBDA);
    let mut grad = vec![0.0f32; d + 1];
    for _ in 0..steps {
        grad.iter_mut().for_each(|g| *g = 0.0);
        for ((row, &label), &weight) in x.chunks_exact(d).zip(y).zip(wt) {
            let e = weight * (sigmoid(TfidfLogReg::logit(w, row)) - label) / total;
            for (g, v) in grad[..d].iter_mut().zip(row) {
                *g += e * v;
            }
            grad[d] += e;
        }
        for (k, (wk, g)) in w.iter_mut().zip(&grad).enumerate() {
            let penalty = if k < d { LAMBDA * *wk } else { 0.0 };
            *wk -= step * (g + penalty);
        }
    }
}

impl FewShotMethod for TfidfLogReg {
    fn name(&self) -> String {
        format!("tfidf-logreg+shots @{}% FPR", self.budget * 100.0)
    }

    fn description(&self) -> String {
        format!(
            "TF-IDF of the hashed character n-gram counts (idf smoothed on the training sample, unit L2 norm); logistic regression (L2 {LAMBDA}, {PREPARE_STEPS} + {TASK_STEPS} gradient steps) of benign vs attack on benign pool + seen families (capped) + K support rows weighted as one average seen family; logit thresholded so that at most {} of up to {CALIBRATION_ROWS} held-out benign training rows are flagged",
            self.budget
        )
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, _query_rows: &[usize]) -> Result<(), EvalError> {
        let (rows, attack, mean_family) = training_sample(ctx, &self.cfg);
        if !attack.iter().any(|&a| a) || attack.iter().all(|&a| a) {
            return Err(EvalError::Method {
                method: self.name(),
                message: "the training sample needs both benign rows and seen-family rows".into(),
            });
        }
        self.tfidf = Tfidf::fit(ctx, &rows).ok_or_else(|| EvalError::Method {
            method: self.name(),
            message: "needs character n-gram columns (the http-requests layout)".into(),
        })?;
        self.x = self.tfidf.rows(ctx, &rows);
        self.y = attack.iter().map(|&a| f32::from(u8::from(a))).collect();
        self.mean_family = mean_family;
        let cal = calibration_rows(
            ctx,
            self.name(),
            &rows,
            CALIBRATION_ROWS,
            ctx.seed.wrapping_add(0x7f1d),
        )?;
        self.calibration = self.tfidf.rows(ctx, &cal);
        self.base = vec![0.0; self.tfidf.dim() + 1];
        let wt = vec![1.0; self.y.len()];
        descend(&mut self.base, &self.x, &self.y, &wt, PREPARE_STEPS);
        Ok(())
    }

    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection {
        if self.base.is_empty() {
            return Detection::constant(ctx, task, false);
        }
        let d = self.tfidf.dim();
        let mut x = self.x.clone();
        x.extend(self.tfidf.rows(ctx, &task.support));
        let mut y = self.y.clone();
        y.extend(std::iter::repeat_n(1.0, task.support.len()));
        let mut wt = vec![1.0f32; self.y.len()];
        let support_weight = (self.mean_family / task.support.len().max(1) as f64).max(1.0) as f32;
        wt.extend(std::iter::repeat_n(support_weight, task.support.len()));
        let mut w = self.base.clone();
        descend(&mut w, &x, &y, &wt, TASK_STEPS);
        let calibration: Vec<f32> = self
            .calibration
            .chunks_exact(d)
            .map(|row| Self::logit(&w, row))
            .collect();
        let threshold = upper_quantile(&mut calibration.clone(), self.budget);
        let mut row = vec![0.0; d];
        let (scores, flagged) = scored_rows(ctx, task)
            .map(|q| {
                self.tfidf.row(ctx, q, &mut row);
                let s = Self::logit(&w, &row);
                (s, s > threshold)
            })
            .unzip();
        Detection {
            scores,
            flagged,
            calibration,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_descent_separates_separable_rows() {
        // Two unit rows per class, apart on the first axis.
        let x = [1.0, 0.0, 0.8, 0.6, -1.0, 0.0, -0.8, 0.6];
        let y = [1.0, 1.0, 0.0, 0.0];
        let mut w = vec![0.0; 3];
        descend(&mut w, &x, &y, &[1.0; 4], 200);
        let logits: Vec<f32> = x.chunks(2).map(|r| TfidfLogReg::logit(&w, r)).collect();
        assert!(logits[0] > 0.0 && logits[1] > 0.0, "{logits:?}");
        assert!(logits[2] < 0.0 && logits[3] < 0.0, "{logits:?}");
        // Weighting a class up moves the boundary toward the other.
        let mut heavy = vec![0.0; 3];
        descend(&mut heavy, &x, &y, &[5.0, 5.0, 1.0, 1.0], 200);
        assert!(TfidfLogReg::logit(&heavy, &[0.0, 1.0]) > TfidfLogReg::logit(&w, &[0.0, 1.0]));
    }
}
