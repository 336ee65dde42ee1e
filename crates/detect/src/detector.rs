//! The detector: embeds preprocessed flows with the threat model and gives every flow a verdict —
//! benign, a known threat, or an unknown anomaly — at the calibrated false-positive budget, and
//! explains alerts (nearest prototypes, the features that moved the score most).
//!
//! It reads and writes nothing and keeps no per-flow state; the pipeline feeds it micro-batches.
//!
//! The rule (the model's `decision` rule, over armed threats), with `d` the squared Euclidean
//! distance, `B_j` the benign prototypes and `p_{t,i}` the prototypes of threat `t`:
//!
//! * `db(x) = min_j d(x, B_j)`, `dt(x) = min_i d(x, p_{t,i})`, score `s_t(x) = db(x) − dt(x)`;
//! * **threat** `t` iff `s_t(x) > τ_t`, the highest margin `s_t(x) − τ_t` winning;
//! * else **unknown** iff `min(db(x), min_t dt(x)) > u` (the model's unknown threshold, or the one at
//!   [`DetectorOptions::unknown_budget`]); else **benign**.
//!
//! `Verdict::score` is the margin of the deciding rule (`s_t − τ_t` for a threat, `min(db, dt) − u`
//! for an unknown; for a benign flow the larger of both margins, ≤ 0). `Verdict::confidence` is a
//! monotone map of that statistic: the fraction of the model's held-out benign calibration rows whose
//! same statistic is lower (for a threat ≥ 1 − α by construction; for a benign flow, one minus that
//! fraction for the closer rule).

use std::sync::Arc;

use metaids_eval::method::sq_dist;
use metaids_model::decision::nearest;
use metaids_model::ScoringKernel;
use metaids_model::ThreatModel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DetectError, Result};
use crate::threat::ArmedThreat;

/// Detector settings.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorOptions {
    /// Whether the unknown-anomaly rule is on (default true).
    pub unknown: bool,
    /// False-positive budget of the unknown rule (default: the model's calibrated threshold).
    pub unknown_budget: Option<f64>,
    /// Features reported per alert (default 5).
    pub top_features: usize,
    /// Numeric features tried per alert: those with the largest |standardised value| (default 12).
    pub explain_candidates: usize,
    /// Nearest prototypes reported per alert (default 3).
    pub nearest: usize,
    /// Model version reported in alerts (default: a sha256 prefix of the encoder parameters; the
    /// CLI passes the model file's `weights.sha256` prefix).
    pub model_version: Option<String>,
}

impl Default for DetectorOptions {
    fn default() -> Self {
        DetectorOptions {
            unknown: true,
            unknown_budget: None,
            top_features: 5,
            explain_candidates: 12,
            nearest: 3,
            model_version: None,
        }
    }
}

/// The kind of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    /// Neither a threat nor anomalous.
    Benign,
    /// Flagged for an armed threat.
    Threat,
    /// Far from every benign and armed prototype.
    Unknown,
}

impl VerdictKind {
    /// `benign`, `threat` or `unknown`.
    pub fn name(self) -> &'static str {
        match self {
            VerdictKind::Benign => "benign",
            VerdictKind::Threat => "threat",
            VerdictKind::Unknown => "unknown",
        }
    }
}

/// What the detector says about one flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The kind.
    pub kind: VerdictKind,
    /// Index into the detector's threats: the flagged threat, else the nearest one (`None` without
    /// threats).
    pub threat: Option<usize>,
    /// Squared distance to the nearest prototype of that threat (`+inf` without threats).
    pub distance: f32,
    /// Squared distance to the nearest benign prototype.
    pub benign_distance: f32,
    /// Margin of the deciding rule (> 0 exactly for threats and unknowns).
    pub score: f32,
    /// Empirical percentile of the deciding statistic among benign calibration rows, in `[0, 1]`.
    pub confidence: f32,
}

/// One prototype near a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearestPrototype {
    /// `benign#j`, `<threat>#i` or `known:<family>#i`.
    pub name: String,
    /// Squared distance.
    pub distance: f32,
}

/// One input feature's part in an alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureEffect {
    /// Feature name (a numeric column, or a categorical column with its value).
    pub name: String,
    /// Raw value (NaN-free; categorical features: 1).
    pub value: f64,
    /// Standardised value the model saw.
    pub z: f32,
    /// Drop of the alert's margin when this feature is reset to the training mean (numeric) or to
    /// the unknown category (categorical); larger means it moved the verdict more.
    pub effect: f32,
}

/// Why an alert fired.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Explanation {
    /// The nearest prototypes (benign, armed threats, known families), nearest first.
    pub nearest: Vec<NearestPrototype>,
    /// The features that moved the margin most (positive effects only), largest effect first.
    pub top_features: Vec<FeatureEffect>,
}

/// The detector: a model, armed threats and calibrated thresholds.
#[derive(Debug)]
pub struct Detector {
    model: Arc<ThreatModel>,
    threats: Vec<ArmedThreat>,
    dim: usize,
    unknown_threshold: f32,
    /// Per threat, sorted `s_t(c)` over the calibration rows.
    calibration_scores: Vec<Vec<f32>>,
    /// Sorted `min(db(c), min_t dt(c))` over the calibration rows.
    calibration_unknown: Vec<f32>,
    options: DetectorOptions,
    library_version: u64,
    model_version: String,
    input_names: Vec<String>,
    /// The inference kernel: the encoder's forward pass, hand-written for throughput (equal to
    /// candle's within 1e-4 per row; `metaids_model::score` tests the equivalence).
    kernel: ScoringKernel,
}

/// Fraction of the sorted `values` strictly below `x`.
fn percentile(sorted: &[f32], x: f32) -> f32 {
    if sorted.is_empty() {
        return 0.5;
    }
    let below = sorted.partition_point(|&v| v < x);
    below as f32 / sorted.len() as f32
}

/// A sha256 prefix (16 hex digits) of the encoder parameters: the model version when none is given.
pub fn model_fingerprint(model: &ThreatModel) -> Result<String> {
    let mut h = Sha256::new();
    for (name, shape, values) in model
        .encoder
        .export()
        .map_err(DetectError::model("exporting parameters"))?
    {
        h.update(name.as_bytes());
        for s in shape {
            h.update((s as u64).to_le_bytes());
        }
        for v in values {
            h.update(v.to_le_bytes());
        }
    }
    Ok(metaids_core::schema::hex(&h.finalize())[..16].to_string())
}

impl Detector {
    /// A detector for `threats` (each validated against the model's embedding size).
    pub fn new(
        model: Arc<ThreatModel>,
        threats: Vec<ArmedThreat>,
        options: DetectorOptions,
        library_version: u64,
    ) -> Result<Self> {
        let dim = model.dim();
        for t in &threats {
            t.validate(dim)?;
        }
        let reference = &model.reference;
        let unknown_threshold = match (options.unknown, options.unknown_budget) {
            (false, _) => f32::INFINITY,
            (true, None) => reference.unknown_threshold,
            (true, Some(b)) if b > 0.0 && b < 1.0 => reference.unknown_threshold_at(b),
            (true, Some(b)) => {
                return Err(DetectError::Config {
                    field: "unknown_budget",
                    message: format!("expected a false-positive budget in (0, 1), found {b}"),
                })
            }
        };
        let cal_db: Vec<f32> = reference
            .calibration
            .chunks_exact(dim)
            .map(|c| reference.benign_distance(c))
            .collect();
        let cal_dt: Vec<Vec<f32>> = threats
            .iter()
            .map(|t| {
                reference
                    .calibration
                    .chunks_exact(dim)
                    .map(|c| nearest(c, &t.prototypes, dim).1)
                    .collect()
            })
            .collect();
        let sorted = |mut v: Vec<f32>| {
            v.sort_by(f32::total_cmp);
            v
        };
        let calibration_scores = cal_dt
            .iter()
            .map(|dt| sorted(cal_db.iter().zip(dt).map(|(b, t)| b - t).collect()))
            .collect();
        let calibration_unknown = sorted(
            cal_db
                .iter()
                .enumerate()
                .map(|(i, &b)| cal_dt.iter().fold(b, |m, dt| m.min(dt[i])))
                .collect(),
        );
        let model_version = match &options.model_version {
            Some(v) => v.clone(),
            None => model_fingerprint(&model)?,
        };
        let input_names = model.normaliser.output_names();
        let kernel = ScoringKernel::for_model(&model)
            .map_err(DetectError::model("building the scoring kernel"))?;
        Ok(Detector {
            kernel,
            model,
            threats,
            dim,
            unknown_threshold,
            calibration_scores,
            calibration_unknown,
            options,
            library_version,
            model_version,
            input_names,
        })
    }

    /// The model.
    pub fn model(&self) -> &Arc<ThreatModel> {
        &self.model
    }

    /// The armed threats.
    pub fn threats(&self) -> &[ArmedThreat] {
        &self.threats
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The unknown threshold in use (`+inf` when the rule is off).
    pub fn unknown_threshold(&self) -> f32 {
        self.unknown_threshold
    }

    /// The settings.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Version of the threat library (reported in alerts).
    pub fn library_version(&self) -> u64 {
        self.library_version
    }

    /// Version of the model (reported in alerts).
    pub fn model_version(&self) -> &str {
        &self.model_version
    }

    /// Embeds preprocessed rows: the one embedding step of the detector, through the model's
    /// [`ScoringKernel`] (the candle encoder's forward pass, hand-written; sparse one-hot inputs).
    ///
    /// # Shapes
    /// `x`: `n × input_dim` → `n × dim`.
    pub fn embed(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.kernel
            .embed(x)
            .map_err(DetectError::model("embedding a batch"))
    }

    /// The verdict of one embedding.
    ///
    /// # Shapes
    /// `e`: `dim` → one [`Verdict`].
    pub fn decide(&self, e: &[f32]) -> Verdict {
        let db = self.model.reference.benign_distance(e);
        let mut best: Option<(usize, f32, f32)> = None;
        let mut closest: Option<(usize, f32)> = None;
        let mut best_margin = f32::NEG_INFINITY;
        for (t, threat) in self.threats.iter().enumerate() {
            let dt = nearest(e, &threat.prototypes, self.dim).1;
            if closest.is_none_or(|(_, d)| dt < d) {
                closest = Some((t, dt));
            }
            let margin = db - dt - threat.threshold;
            best_margin = best_margin.max(margin);
            if margin > 0.0 && best.is_none_or(|(_, m, _)| margin > m) {
                best = Some((t, margin, dt));
            }
        }
        if let Some((t, margin, dt)) = best {
            return Verdict {
                kind: VerdictKind::Threat,
                threat: Some(t),
                distance: dt,
                benign_distance: db,
                score: margin,
                confidence: percentile(&self.calibration_scores[t], db - dt),
            };
        }
        let (threat, distance) = match closest {
            Some((t, d)) => (Some(t), d),
            None => (None, f32::INFINITY),
        };
        let stat = db.min(distance);
        let unknown_margin = stat - self.unknown_threshold;
        if unknown_margin > 0.0 {
            return Verdict {
                kind: VerdictKind::Unknown,
                threat,
                distance,
                benign_distance: db,
                score: unknown_margin,
                confidence: percentile(&self.calibration_unknown, stat),
            };
        }
        // Benign: the closer of the two rules says how far from alerting the flow is.
        let (score, pct) = match threat {
            Some(t) if best_margin >= unknown_margin || !self.options.unknown => (
                best_margin,
                percentile(
                    &self.calibration_scores[t],
                    best_margin + self.threats[t].threshold,
                ),
            ),
            _ => (
                if self.options.unknown {
                    unknown_margin
                } else {
                    f32::NEG_INFINITY
                },
                percentile(&self.calibration_unknown, stat),
            ),
        };
        Verdict {
            kind: VerdictKind::Benign,
            threat,
            distance,
            benign_distance: db,
            score,
            confidence: 1.0 - pct,
        }
    }

    /// Verdicts of a batch of embeddings, into a reused buffer.
    ///
    /// # Shapes
    /// `embeddings`: `n × dim` → `n` verdicts.
    pub fn decide_batch(&self, embeddings: &[f32], out: &mut Vec<Verdict>) {
        out.clear();
        out.extend(embeddings.chunks_exact(self.dim).map(|e| self.decide(e)));
    }

    /// The margin the verdict's rule gives `e` (threat `t`'s margin, or the unknown margin).
    fn margin(&self, e: &[f32], kind: VerdictKind, threat: Option<usize>) -> f32 {
        let db = self.model.reference.benign_distance(e);
        match (kind, threat) {
            (VerdictKind::Threat, Some(t)) => {
                let th = &self.threats[t];
                db - nearest(e, &th.prototypes, self.dim).1 - th.threshold
            }
            _ => {
                let dt = self
                    .threats
                    .iter()
                    .map(|th| nearest(e, &th.prototypes, self.dim).1)
                    .fold(f32::INFINITY, f32::min);
                db.min(dt) - self.unknown_threshold
            }
        }
    }

    /// The nearest prototypes of `e` among benign, armed-threat and known-family prototypes.
    ///
    /// # Shapes
    /// `e`: `dim`.
    pub fn nearest_prototypes(&self, e: &[f32]) -> Vec<NearestPrototype> {
        let dim = self.dim;
        let reference = &self.model.reference;
        let mut all: Vec<NearestPrototype> = Vec::new();
        for (j, b) in reference.prototypes.chunks_exact(dim).enumerate() {
            all.push(NearestPrototype {
                name: format!("benign#{j}"),
                distance: sq_dist(e, b),
            });
        }
        for t in &self.threats {
            for (i, p) in t.prototypes.chunks_exact(dim).enumerate() {
                all.push(NearestPrototype {
                    name: format!("{}#{i}", t.name),
                    distance: sq_dist(e, p),
                });
            }
        }
        for (i, (k, fam)) in reference
            .known
            .chunks_exact(dim)
            .zip(&reference.known_families)
            .enumerate()
        {
            all.push(NearestPrototype {
                name: format!("known:{fam}#{i}"),
                distance: sq_dist(e, k),
            });
        }
        all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        all.truncate(self.options.nearest);
        all
    }

    /// Explains alerts: for each `(row of x, raw numeric row, verdict)` the nearest prototypes and
    /// the features whose reset lowers the verdict's margin most (occlusion over the
    /// [`DetectorOptions::explain_candidates`] numeric features with the largest |z| and every
    /// categorical feature, embedded in one batch).
    ///
    /// # Shapes
    /// `x`: rows of `input_dim` preprocessed values; `embeddings`: rows of `dim`; `raw`: numeric
    /// rows of the layout. `alerts` index them.
    pub fn explain(
        &self,
        x: &[f32],
        embeddings: &[f32],
        raw: &dyn Fn(usize) -> Vec<f64>,
        alerts: &[(usize, Verdict)],
    ) -> Result<Vec<Explanation>> {
        let d_in = self.model.normaliser.output_dim();
        let norm = &self.model.normaliser;
        let n_num = norm.numeric.len();
        // Categorical groups: (first column, width, name).
        let mut groups = Vec::new();
        let mut offset = n_num;
        for c in &norm.categorical {
            groups.push((offset, c.values.len() + 1, c.name.clone()));
            offset += c.values.len() + 1;
        }
        let mut probes: Vec<f32> = Vec::new();
        // Per alert: (candidate descriptions, first probe row).
        let mut plans: Vec<Vec<(String, f64, f32)>> = Vec::with_capacity(alerts.len());
        for &(r, _) in alerts {
            let row = &x[r * d_in..(r + 1) * d_in];
            let values = raw(r);
            let mut order: Vec<usize> = (0..n_num).filter(|&j| row[j] != 0.0).collect();
            order.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()).then(a.cmp(&b)));
            order.truncate(self.options.explain_candidates);
            let mut plan = Vec::new();
            for j in order {
                let mut p = row.to_vec();
                p[j] = 0.0;
                probes.extend_from_slice(&p);
                plan.push((
                    self.input_names[j].clone(),
                    values.get(j).copied().unwrap_or(f64::NAN),
                    row[j],
                ));
            }
            for &(start, width, ref name) in &groups {
                let hot = (0..width).find(|&k| row[start + k] != 0.0);
                let unknown = start + width - 1;
                let Some(k) = hot.filter(|&k| start + k != unknown) else {
                    continue;
                };
                let mut p = row.to_vec();
                p[start..start + width].iter_mut().for_each(|v| *v = 0.0);
                p[unknown] = 1.0;
                probes.extend_from_slice(&p);
                let label = self
                    .input_names
                    .get(start + k)
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                plan.push((label, 1.0, 1.0));
            }
            plans.push(plan);
        }
        let probe_emb = if probes.is_empty() {
            Vec::new()
        } else {
            self.embed(&probes)?
        };
        let mut out = Vec::with_capacity(alerts.len());
        let mut next = 0usize;
        for (&(r, v), plan) in alerts.iter().zip(plans) {
            let e = &embeddings[r * self.dim..(r + 1) * self.dim];
            let base = self.margin(e, v.kind, v.threat);
            let mut effects: Vec<FeatureEffect> = plan
                .into_iter()
                .map(|(name, value, z)| {
                    let pe = &probe_emb[next * self.dim..(next + 1) * self.dim];
                    next += 1;
                    FeatureEffect {
                        name,
                        value: if value.is_finite() { value } else { 0.0 },
                        z,
                        effect: base - self.margin(pe, v.kind, v.threat),
                    }
                })
                .collect();
            // Only features whose reset lowers the margin pushed the flow towards the alert.
            effects.retain(|f| f.effect > 0.0);
            effects.sort_by(|a, b| b.effect.total_cmp(&a.effect));
            effects.truncate(self.options.top_features);
            out.push(Explanation {
                nearest: self.nearest_prototypes(e),
                top_features: effects,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_is_monotone() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.0), 0.0);
        assert_eq!(percentile(&s, 2.5), 0.5);
        assert_eq!(percentile(&s, 9.0), 1.0);
        assert!(percentile(&s, 3.0) <= percentile(&s, 3.5));
        assert_eq!(percentile(&[], 1.0), 0.5);
    }
}
