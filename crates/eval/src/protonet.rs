//! [`ProtoNetMethod`]: the trained model as a [`FewShotMethod`], so it is scored on the very
//! same episodes as the baselines. Detection uses the calibrated family rule of `decision`; N-way
//! classification is nearest prototype. It does not train: it applies a trained [`ThreatModel`].

use std::sync::Arc;

use metaids_core::episode::{DetectionTask, Episode};
use metaids_decide::geometry::{mean_row, sq_dist, upper_quantile};
use metaids_model::ThreatModel;

use crate::method::{scored_rows, Detection, EvalContext, EvalError, FewShotMethod, Matrix};

/// The meta-learned model under evaluation.
#[derive(Debug)]
pub struct ProtoNetMethod {
    model: Arc<ThreatModel>,
    /// Also flag unknown anomalies (far from every benign and the family prototype) as attacks; the
    /// false-positive budget is then split in half between the two rules.
    with_unknown: bool,
    /// Use the known-family rule (also flag flows nearer a known attack-family prototype than benign).
    with_known: bool,
    /// Fine-tune a copy of the encoder on the support rows at enrolment (row `protonet+finetune`).
    with_finetune: bool,
    /// Ignore the support rows (row `protonet (zero-shot)`): known-family and unknown-anomaly rules only.
    zero_shot: bool,
    /// Threshold τ_K of the zero-shot known-family rule (set in `prepare`).
    known_half: f32,
    /// Unknown threshold at half the budget (set in `prepare`).
    unknown_half: f32,
    /// Preprocessed rows, when the model's normaliser differs from the benchmark's.
    own_x: Option<Matrix>,
    /// Frame row → slot in `emb` (u32::MAX: not embedded in advance).
    slot: Vec<u32>,
    emb: Vec<f32>,
}

impl ProtoNetMethod {
    /// Wraps a model. `with_unknown` adds the unknown-anomaly rule to detection.
    pub fn new(model: Arc<ThreatModel>, with_unknown: bool) -> Self {
        ProtoNetMethod {
            model,
            with_unknown,
            with_known: false,
            with_finetune: false,
            zero_shot: false,
            known_half: f32::INFINITY,
            unknown_half: f32::INFINITY,
            own_x: None,
            slot: Vec::new(),
            emb: Vec::new(),
        }
    }

    /// Wraps a model for the known-family rule (row `protonet+known`): a flow is flagged when it is
    /// closer to the new family's prototype or to any known attack-family prototype kept in the model
    /// than to the nearest benign prototype, by more than a margin calibrated on held-out benign rows.
    pub fn with_known(model: Arc<ThreatModel>) -> Self {
        ProtoNetMethod {
            with_known: true,
            ..ProtoNetMethod::new(model, false)
        }
    }

    /// Wraps a model for enrolment fine-tuning (row `protonet+finetune`): each task fine-tunes a copy
    /// of the model's fine-tuning initialisation for a few steps on the K support rows plus stored
    /// benign rows, then applies the calibrated family rule with that encoder. `None` when the model
    /// holds no fine-tuning material.
    pub fn with_finetune(model: Arc<ThreatModel>) -> Option<Self> {
        model.finetune.as_ref()?;
        Some(ProtoNetMethod {
            with_finetune: true,
            ..ProtoNetMethod::new(model, false)
        })
    }

    /// Wraps a model as a zero-shot detector (row `protonet (zero-shot)`): the support rows are never
    /// looked at. A flow is flagged when it is nearer a known attack-family prototype than the nearest
    /// benign prototype by more than `τ_K`, or farther than `u` from every benign and known prototype
    /// (an unknown anomaly); each threshold is calibrated on held-out benign rows at half the budget.
    pub fn zero_shot(model: Arc<ThreatModel>) -> Self {
        ProtoNetMethod {
            zero_shot: true,
            ..ProtoNetMethod::new(model, false)
        }
    }

    fn x<'a>(&'a self, ctx: &'a EvalContext<'_>) -> &'a Matrix {
        self.own_x.as_ref().unwrap_or(ctx.x)
    }

    /// Embeddings of `rows`, row-major; rows not embedded in `prepare` are embedded now.
    ///
    /// # Shapes
    /// `rows`: `n` indices → `n × embedding`.
    fn embeddings(&self, ctx: &EvalContext<'_>, rows: &[usize]) -> Vec<f32> {
        let d = self.model.dim();
        let mut out = Vec::with_capacity(rows.len() * d);
        let missing: Vec<usize> = rows
            .iter()
            .copied()
            .filter(|&r| self.slot.get(r).is_none_or(|&s| s == u32::MAX))
            .collect();
        let extra = if missing.is_empty() {
            Vec::new()
        } else {
            // The model was checked against this data in `prepare`; a failure here is a bug, and an
            // all-zero embedding (never flagged) is the conservative answer.
            self.model
                .embed(&self.x(ctx).gather(&missing))
                .unwrap_or_else(|_| vec![0.0; missing.len() * d])
        };
        let mut next_missing = 0;
        for &r in rows {
            match self.slot.get(r) {
                Some(&s) if s != u32::MAX => {
                    let s = s as usize;
                    out.extend_from_slice(&self.emb[s * d..(s + 1) * d]);
                }
                _ => {
                    out.extend_from_slice(&extra[next_missing * d..(next_missing + 1) * d]);
                    next_missing += 1;
                }
            }
        }
        out
    }
}

/// The headline row of `model`, fixed before evaluation from its validation families only:
/// `protonet+finetune` when the validation macro-F1 of the kept fine-tuning initialisation is above
/// that of the kept prototypical encoder, else `protonet`.
pub fn headline_row(model: &ThreatModel) -> &'static str {
    let r = &model.record;
    let finetuned = r
        .finetune_history
        .iter()
        .find(|p| p.step == r.finetune_best_step)
        .map(|p| p.f1);
    match finetuned {
        Some(f1) if model.finetune.is_some() && f1 > r.best_f1 => "protonet+finetune",
        _ => "protonet",
    }
}

impl FewShotMethod for ProtoNetMethod {
    fn is_model(&self) -> bool {
        true
    }

    fn embed(&self, ctx: &EvalContext<'_>, rows: &[usize]) -> Option<(usize, Vec<f32>)> {
        Some((self.model.dim(), self.embeddings(ctx, rows)))
    }

    fn is_headline(&self) -> bool {
        self.name() == headline_row(&self.model)
    }

    fn name(&self) -> String {
        if self.zero_shot {
            "protonet (zero-shot)".into()
        } else if self.with_unknown {
            "protonet+unknown".into()
        } else if self.with_known {
            "protonet+known".into()
        } else if self.with_finetune {
            "protonet+finetune".into()
        } else {
            "protonet".into()
        }
    }

    fn description(&self) -> String {
        let r = &self.model.record;
        format!(
            "meta-learned encoder ({} steps kept of {}, validation F1 {:.3}); support-mean prototype vs {} benign k-means prototypes, threshold calibrated on held-out benign rows at FPR {}{}",
            r.best_step,
            r.steps_run,
            r.best_f1,
            self.model.reference.prototypes.len() / self.model.dim().max(1),
            self.model.reference.fpr_budget,
            if self.zero_shot {
                format!(
                    "; zero-shot: support rows ignored, flagged when nearer one of {} known attack-family prototypes than benign, or an unknown anomaly (budget split in half)",
                    self.model.reference.known_prototypes()
                )
            } else if self.with_unknown {
                "; unknown anomalies also flagged (budget split in half between the two rules)".into()
            } else if self.with_known {
                format!(
                    "; also flagged when nearer one of {} known attack-family prototypes ({} per family, chosen on validation families) than benign, one threshold for both",
                    self.model.reference.known_prototypes(),
                    r.known_per_family
                )
            } else if let (true, Some(ft)) = (self.with_finetune, &self.model.finetune) {
                format!(
                    "; encoder fine-tuned per task ({} SGD steps, lr {}, first-order MAML initialisation kept at step {}) on the support rows and {} stored benign rows, recalibrated on {} stored held-out benign rows",
                    ft.config.steps,
                    ft.config.learning_rate,
                    r.finetune_best_step,
                    ft.benign_rows(),
                    ft.calibration_rows()
                )
            } else {
                String::new()
            }
        )
    }

    fn prepare(&mut self, ctx: &EvalContext<'_>, query_rows: &[usize]) -> Result<(), EvalError> {
        let method_err = |message: String| EvalError::Method {
            method: "protonet".into(),
            message,
        };
        self.model
            .check_layout(&ctx.frame.layout)
            .map_err(|e| method_err(e.to_string()))?;
        self.own_x = if self.model.normaliser == *ctx.normaliser {
            None
        } else {
            let all: Vec<usize> = (0..ctx.frame.len()).collect();
            Some(Matrix {
                data: self.model.normaliser.transform(ctx.frame, &all)?,
                dim: self.model.normaliser.output_dim(),
            })
        };
        let reference = &self.model.reference;
        self.unknown_half = reference.unknown_threshold_at(reference.fpr_budget / 2.0);
        if self.zero_shot {
            let mut scores: Vec<f32> = reference
                .calibration
                .chunks_exact(self.model.dim())
                .map(|c| reference.benign_distance(c) - reference.known_distance(c))
                .collect();
            self.known_half = upper_quantile(&mut scores, reference.fpr_budget / 2.0);
        }
        // Embed every row a task may query or draw support from (no labels are used here).
        let mut rows: Vec<usize> = query_rows.to_vec();
        rows.extend(ctx.split.novel.values().flatten());
        rows.sort_unstable();
        rows.dedup();
        self.slot = vec![u32::MAX; ctx.frame.len()];
        for (i, &r) in rows.iter().enumerate() {
            self.slot[r] = i as u32;
        }
        self.emb = self
            .model
            .embed(&self.x(ctx).gather(&rows))
            .map_err(|e| method_err(e.to_string()))?;
        Ok(())
    }

    /// Scores are margins over the rule's own thresholds (flagged iff positive); a rule that is an
    /// OR of two calibrated rules scores the larger of its two margins. The model's held-out benign
    /// calibration rows (those of the reference the rule uses) are scored the same way.
    fn detect(&self, ctx: &EvalContext<'_>, task: &DetectionTask) -> Detection {
        let d = self.model.dim();
        let reference = &self.model.reference;
        let rows: Vec<usize> = scored_rows(ctx, task).collect();
        let margins = |emb: &[f32], calibration: &[f32], score: &dyn Fn(&[f32]) -> f32| {
            let of = |e: &[f32]| e.chunks_exact(d).map(score).collect::<Vec<f32>>();
            Detection::from_margins(of(emb)).calibrated(of(calibration))
        };
        if let (true, Some(ft)) = (self.with_finetune, &self.model.finetune) {
            let x = self.x(ctx);
            // A failed adaptation (a bug, the data were checked in `prepare`) flags nothing.
            let Ok(a) = ft.adapt(&x.gather(&task.support)) else {
                return Detection::constant(ctx, task, false);
            };
            let Ok(q) = a.encoder.embed(&x.gather(&rows)) else {
                return Detection::constant(ctx, task, false);
            };
            return margins(&q, &a.reference.calibration, &|e| {
                a.reference.family_score(e, &a.family) - a.family.threshold
            });
        }
        let q = self.embeddings(ctx, &rows);
        let calibration = &reference.calibration;
        if self.zero_shot {
            return margins(&q, calibration, &|x| {
                let db = reference.benign_distance(x);
                let dk = reference.known_distance(x);
                (db - dk - self.known_half).max(db.min(dk) - self.unknown_half)
            });
        }
        let support = self.embeddings(ctx, &task.support);
        if self.with_known {
            let family = reference.enrol_known_at(&support, reference.fpr_budget);
            return margins(&q, calibration, &|x| match family.known_threshold {
                Some(tk) => {
                    let db = reference.benign_distance(x);
                    (db - sq_dist(x, &family.centre) - family.threshold)
                        .max(db - reference.known_distance(x) - tk)
                }
                None => reference.known_score(x, &family) - family.threshold,
            });
        }
        let family = if self.with_unknown {
            reference.enrol_at(&support, reference.fpr_budget / 2.0)
        } else {
            reference.enrol(&support)
        };
        margins(&q, calibration, &|x| {
            let db = reference.benign_distance(x);
            let df = sq_dist(x, &family.centre);
            let margin = db - df - family.threshold;
            if self.with_unknown {
                margin.max(db.min(df) - self.unknown_half)
            } else {
                margin
            }
        })
    }

    fn classify(&self, ctx: &EvalContext<'_>, episode: &Episode) -> Option<Vec<usize>> {
        if self.zero_shot {
            return None;
        }
        let d = self.model.dim();
        let protos: Vec<Vec<f32>> = episode
            .support
            .iter()
            .map(|s| mean_row(&self.embeddings(ctx, s), d))
            .collect();
        let rows: Vec<usize> = episode.query.iter().flatten().copied().collect();
        let q = self.embeddings(ctx, &rows);
        Some(
            q.chunks_exact(d)
                .map(|x| {
                    protos
                        .iter()
                        .map(|p| sq_dist(x, p))
                        .enumerate()
                        .min_by(|a, b| a.1.total_cmp(&b.1))
                        .map_or(0, |(i, _)| i)
                })
                .collect(),
        )
    }
}
