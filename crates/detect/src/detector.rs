//! The detector: embeds preprocessed flows with the threat model and gives every flow a verdict —
//! benign, a known threat, or an unknown anomaly — at the calibrated false-positive budget, and
//! explains alerts (nearest prototypes, the features that moved the score most).
//!
//! It reads and writes nothing and keeps no per-flow state; the pipeline feeds it micro-batches.
//!
//! The verdict rule and its confidence are the decision core's ([`metaids_decide::verdict`]); this
//! module embeds, arms the threats in a [`Decider`] and explains alerts.

use std::sync::Arc;

use metaids_decide::geometry::sq_dist;
use metaids_decide::{Decider, Threat};
pub use metaids_decide::{Verdict, VerdictKind};
use metaids_model::io::ModelIdentity;
use metaids_model::ScoringKernel;
use metaids_model::ThreatModel;
use serde::{Deserialize, Serialize};

use crate::error::{DetectError, Result};

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
    /// Model version reported in alerts (default: the first 16 hex digits of the model's
    /// [`ModelIdentity`], as the threat library records it).
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
    /// The preprocessing: the model's normaliser, or a site profile's refit of it.
    normaliser: metaids_core::preprocess::Normaliser,
    /// The verdict rule over the armed threats, with the calibration ranks.
    decider: Decider,
    dim: usize,
    options: DetectorOptions,
    library_version: u64,
    library_id: String,
    model_version: String,
    input_names: Vec<String>,
    /// The inference kernel: the encoder's forward pass, hand-written for throughput (equal to
    /// candle's within 1e-4 per row; `metaids_model::score` tests the equivalence).
    kernel: ScoringKernel,
}

/// The model version alerts report: the first 16 hex digits of its [`ModelIdentity`].
pub fn model_version(model: &ThreatModel) -> Result<String> {
    let id =
        ModelIdentity::of(model).map_err(DetectError::model("computing the model identity"))?;
    Ok(id.model.chars().take(16).collect())
}

impl Detector {
    /// A detector for `threats` (each checked with [`Threat::validate`] against the model's
    /// embedding size), deciding with the model's benign reference.
    pub fn new(
        model: Arc<ThreatModel>,
        threats: Vec<Threat>,
        options: DetectorOptions,
        library_version: u64,
    ) -> Result<Self> {
        let reference = model.reference.clone();
        Self::with_reference(model, reference, threats, options, library_version)
    }

    /// A detector deciding with `reference` instead of the model's (a site profile's, whose
    /// calibration the threats' thresholds were fitted on).
    pub fn with_reference(
        model: Arc<ThreatModel>,
        reference: metaids_decide::BenignReference,
        threats: Vec<Threat>,
        options: DetectorOptions,
        library_version: u64,
    ) -> Result<Self> {
        let dim = model.dim();
        if reference.dim != dim {
            return Err(DetectError::Config {
                field: "reference",
                message: format!(
                    "a {}-d benign reference for a model embedding into {dim}",
                    reference.dim
                ),
            });
        }
        let reference = &reference;
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
        let decider = Decider::new(reference.clone(), threats, unknown_threshold)?;
        let model_version = match &options.model_version {
            Some(v) => v.clone(),
            None => model_version(&model)?,
        };
        let input_names = model.normaliser.output_names();
        let kernel = ScoringKernel::for_model(&model)
            .map_err(DetectError::model("building the scoring kernel"))?;
        Ok(Detector {
            kernel,
            normaliser: model.normaliser.clone(),
            model,
            decider,
            dim,
            options,
            library_version,
            library_id: String::new(),
            model_version,
            input_names,
        })
    }

    /// The detector for a set of armed threats: their site profile's reference and adaptation
    /// when they have one (else the model's), their library version and id. What `detect` and
    /// `serve` arm.
    pub fn from_armed(
        model: Arc<ThreatModel>,
        set: metaids_library::ArmedThreats,
        options: DetectorOptions,
    ) -> Result<Self> {
        let reference = set
            .profile
            .as_ref()
            .map_or_else(|| model.reference.clone(), |p| p.reference());
        let mut detector =
            Self::with_reference(model, reference, set.threats, options, set.library_version)?
                .with_adaptation(set.profile.as_ref().and_then(|p| p.adaptation.as_ref()))?;
        // The forest rule: the site forest fitted on the profile's rows and the threats' support
        // flows, preprocessed as the detector preprocesses.
        if let Some(profile) = &set.profile {
            let armed = metaids_library::site_forest(
                &detector.normaliser,
                profile,
                detector.decider.threats(),
            )
            .map_err(|e| DetectError::Config {
                field: "site forest",
                message: e.to_string(),
            })?;
            if let Some(a) = armed {
                // The analyst's rejections, where their alerts carried feature values, veto the
                // forest in its own feature space.
                detector.decider = detector
                    .decider
                    .with_site_forest(a.forest)?
                    .with_rejected_rows(a.vetoes)?;
            }
        }
        detector.set_library_id(set.library_id);
        Ok(detector)
    }

    /// The model.
    pub fn model(&self) -> &Arc<ThreatModel> {
        &self.model
    }

    /// Preprocesses with the site profile's `adaptation` of the model (its refit normaliser)
    /// instead of the model's own: what the profile's reference and the threats calibrated on it
    /// were embedded with. `None` keeps the model's.
    pub fn with_adaptation(
        mut self,
        adaptation: Option<&metaids_decide::NormaliserRefit>,
    ) -> Result<Self> {
        self.normaliser = self
            .model
            .site_normaliser(adaptation)
            .map_err(DetectError::model("the site profile's adaptation"))?;
        Ok(self)
    }

    /// Whether the site forest reads each flow's source context (`metaids_core::context`) after its
    /// preprocessed row: [`Detector::decide`] then takes rows of `input_dim + 3` values.
    pub fn source_context(&self) -> bool {
        // Its rows are wider than the model's input exactly when they carry the context.
        self.decider
            .site_forest()
            .is_some_and(|f| f.width() > self.normaliser.output_dim())
    }

    /// The normaliser flows are preprocessed with (the model's, or the site's refit).
    pub fn normaliser(&self) -> &metaids_core::preprocess::Normaliser {
        &self.normaliser
    }

    /// The armed threats.
    pub fn threats(&self) -> &[Threat] {
        self.decider.threats()
    }

    /// The decision core the detector decides with.
    pub fn decider(&self) -> &Decider {
        &self.decider
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The unknown threshold in use (`+inf` when the rule is off).
    pub fn unknown_threshold(&self) -> f32 {
        self.decider.unknown_threshold()
    }

    /// The settings.
    pub fn options(&self) -> &DetectorOptions {
        &self.options
    }

    /// Version of the threat library (reported in alerts).
    pub fn library_version(&self) -> u64 {
        self.library_version
    }

    /// Names the threat library the threats came from ([`metaids_library`]'s library id), so that
    /// alerts carry it and feedback on them can refuse another library; empty when unknown.
    pub fn set_library_id(&mut self, id: impl Into<String>) {
        self.library_id = id.into();
    }

    /// The threat library's id (reported in alerts); empty when unknown.
    pub fn library_id(&self) -> &str {
        &self.library_id
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

    /// The verdict of one flow from its embedding `e` and its preprocessed row `x` (the decision
    /// core's rule, with its confidence; `x` is read by a site forest, when the library names
    /// threats with one).
    ///
    /// # Shapes
    /// `e`: `dim`, `x`: `input_dim` → one [`Verdict`].
    pub fn decide(&self, e: &[f32], x: &[f32]) -> Verdict {
        self.decider.decide_flow(e, x)
    }

    /// Verdicts of a batch of flows (embeddings and their preprocessed rows), into a reused buffer.
    ///
    /// # Shapes
    /// `embeddings`: `n × dim`, `x`: `n × input_dim` → `n` verdicts.
    pub fn decide_batch(&self, embeddings: &[f32], x: &[f32], out: &mut Vec<Verdict>) {
        self.decider.decide_flows(embeddings, x, out);
    }

    /// The nearest prototypes of `e` among benign, armed-threat and known-family prototypes.
    ///
    /// # Shapes
    /// `e`: `dim`.
    pub fn nearest_prototypes(&self, e: &[f32]) -> Vec<NearestPrototype> {
        let dim = self.dim;
        // Benign prototypes are the decider's (a site profile's when there is one); known-family
        // prototypes are the model's.
        let reference = self.decider.reference();
        let known = &self.model.reference;
        let mut all: Vec<NearestPrototype> = Vec::new();
        for (j, b) in reference.prototypes.chunks_exact(dim).enumerate() {
            all.push(NearestPrototype {
                name: format!("benign#{j}"),
                distance: sq_dist(e, b),
            });
        }
        for t in self.decider.threats() {
            for (i, p) in t.prototypes.iter().enumerate() {
                all.push(NearestPrototype {
                    name: format!("{}#{i}", t.name),
                    distance: sq_dist(e, p),
                });
            }
        }
        for (i, (k, fam)) in known
            .known
            .chunks_exact(dim)
            .zip(&known.known_families)
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
    /// `x`: rows of `input_dim` preprocessed values; `forest_rows`: the rows the decision read
    /// (`x` itself, or with source context each row followed by its context, which an occlusion
    /// keeps); `embeddings`: rows of `dim`; `raw`: numeric rows of the layout. `alerts` index them.
    pub fn explain(
        &self,
        x: &[f32],
        forest_rows: &[f32],
        embeddings: &[f32],
        raw: &dyn Fn(usize) -> Vec<f64>,
        alerts: &[(usize, Verdict)],
    ) -> Result<Vec<Explanation>> {
        let d_in = self.normaliser.output_dim();
        let norm = &self.normaliser;
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
        let n = x.len().checked_div(d_in).unwrap_or(0);
        let fw = forest_rows
            .len()
            .checked_div(n.max(1))
            .unwrap_or(d_in)
            .max(d_in);
        for (&(r, v), plan) in alerts.iter().zip(plans) {
            let e = &embeddings[r * self.dim..(r + 1) * self.dim];
            let own = forest_rows.get(r * fw..(r + 1) * fw).unwrap_or(&[]);
            // An occluded row keeps the flow's context (the columns after the model's input).
            let with_tail = |p: &[f32]| -> Vec<f32> {
                let mut v = p.to_vec();
                v.extend_from_slice(own.get(d_in..).unwrap_or(&[]));
                v
            };
            let base = self.decider.margin_flow(e, own, v.kind, v.threat);
            let mut effects: Vec<FeatureEffect> = plan
                .into_iter()
                .map(|(name, value, z)| {
                    let pe = &probe_emb[next * self.dim..(next + 1) * self.dim];
                    let px = with_tail(&probes[next * d_in..(next + 1) * d_in]);
                    next += 1;
                    FeatureEffect {
                        name,
                        value: if value.is_finite() { value } else { 0.0 },
                        z,
                        effect: base - self.decider.margin_flow(pe, &px, v.kind, v.threat),
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
