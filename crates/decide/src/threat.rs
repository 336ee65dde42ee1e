//! Threats as the library stores them, and how one is fitted from its examples: prototypes (one, or
//! several seeded k-means centres when the support is multimodal), the calibrated threshold, negative
//! examples and the enrolment guard. Pure: no file, no store (see `store`), no encoder (callers pass
//! embeddings).
//!
//! With `d` the squared Euclidean distance, `B_j` the model's benign prototypes, `c_i` the threat's
//! centres and `C` the model's held-out benign calibration embeddings (the **benign reference**):
//!
//! * score `s(x) = min_j d(x, B_j) − min_i d(x, c_i)`; `x` is **flagged** iff `s(x) > threshold`;
//! * calibrated threshold `τ_α`, the upper quantile of `s` over `C` at the budget `α`
//!   ([`crate::geometry::upper_quantile`], possibly negative, as the model's family rule): at
//!   most `⌊α n⌋` reference rows score above it;
//! * **support coverage**: the threshold must flag every support flow. When the weakest support flow
//!   scores at or below `τ_α`, the threshold is lowered to just below its score (`s_min.next_down()`);
//! * **negatives** (rejected alerts): the threshold is raised to the highest negative score, so a
//!   rejected flow is never flagged again (`s(neg) > threshold` is false). Support flows scoring at
//!   or below a negative are then no longer flagged; the report counts them;
//! * **guard**: `would_flag` = reference rows with `s(c) > threshold`, `fpr = would_flag / n`; the
//!   enrolment is accepted iff `fpr ≤ α`. A mislabelled or poisoned support set (benign flows called an
//!   attack) has weak support flows, so covering them would flag many benign flows: refused unless
//!   forced, with the weakest flows named. A genuine family scores far above the benign quantile:
//!   `threshold = τ_α` and at most `⌊α n⌋` reference rows are flagged.
//!
//! Number of centres: one for `K < 6`; for `K ≥ 6`, the smallest `k` in `2..=⌊K/3⌋` whose seeded
//! k-means within-cluster sum of squares is at most a tenth of the one-centre sum (clearly separate
//! modes), else one. The k-means seed is fixed per threat id, so refits are reproducible.

use serde::{Deserialize, Serialize};

use crate::error::{DecideError, Result};
use crate::geometry::{kmeans, mean_row, nearest, upper_quantile};
pub use crate::geometry::{min_distance, sq_dist};
use crate::reference::BenignReference;

/// First Suricata signature id of threats: gid 1's local range; a threat's `signature_id` is this
/// plus its id (the one signature scheme: ids never overlap [`UNKNOWN_SIGNATURE_ID`]).
pub const SIGNATURE_BASE: u32 = 9_100_000;
/// The EVE `signature_id` of unknown-anomaly alerts.
pub const UNKNOWN_SIGNATURE_ID: u32 = 9_000_000;
/// The largest threat id: [`SIGNATURE_BASE`] + id stays inside Suricata's 32-bit signature ids and
/// below the next local block.
pub const MAX_THREAT_ID: u32 = 899_999;
/// The most prototypes one threat may hold: more would make every verdict slow without describing a
/// family better (k-means keeps at most `K / 3`).
pub const MAX_PROTOTYPES: usize = 64;
/// The most support or negative examples one threat may hold.
pub const MAX_EXAMPLES: usize = 10_000;

/// A flow a threat was enrolled from (support) or told not to flag (negative).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupportFlow {
    /// Where it came from: a flow file's path or a capture's.
    pub source: String,
    /// Where in the source: `row 12 (line 13)` for a flow file, the flow id and start for a capture,
    /// `alert …` for feedback.
    pub locator: String,
    /// Its embedding under the library's model (kept so prototypes can be refitted).
    pub embedding: Vec<f32>,
    /// Its raw feature values (empty: not kept, as for flows confirmed from alerts), so that it can
    /// be embedded again when the site profile's adaptation of the model changes.
    #[serde(default, skip_serializing_if = "FlowValues::is_empty")]
    pub values: FlowValues,
    /// Its source context (`metaids_core::context`, counted within the capture or flow file it
    /// came from), which a site forest with source context reads; empty: not kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context: Vec<f32>,
}

/// A flow's raw feature values in the model's layout: numeric in layout order (non-finite values
/// kept: JSON writes them as the strings `NaN`, `inf`, `-inf`), categorical as strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowValues {
    /// Numeric features.
    #[serde(with = "finite_or_text")]
    pub numeric: Vec<f32>,
    /// Categorical features.
    pub categorical: Vec<String>,
}

impl FlowValues {
    /// No values kept.
    pub fn is_empty(&self) -> bool {
        self.numeric.is_empty() && self.categorical.is_empty()
    }
}

/// Serde for `f32` lists that may hold NaN and infinities (JSON numbers cannot).
mod finite_or_text {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Value {
        Number(f32),
        Text(String),
    }

    pub fn serialize<S: Serializer>(values: &[f32], s: S) -> Result<S::Ok, S::Error> {
        let v: Vec<Value> = values
            .iter()
            .map(|&x| {
                if x.is_finite() {
                    Value::Number(x)
                } else if x.is_nan() {
                    Value::Text("NaN".into())
                } else if x > 0.0 {
                    Value::Text("inf".into())
                } else {
                    Value::Text("-inf".into())
                }
            })
            .collect();
        v.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Vec::<Value>::deserialize(d)?
            .into_iter()
            .map(|v| match v {
                Value::Number(x) => Ok(x),
                Value::Text(t) => match t.as_str() {
                    "NaN" => Ok(f32::NAN),
                    "inf" => Ok(f32::INFINITY),
                    "-inf" => Ok(f32::NEG_INFINITY),
                    other => Err(serde::de::Error::custom(format!(
                        "{other:?} is not a feature value (a number, NaN, inf or -inf)"
                    ))),
                },
            })
            .collect()
    }
}

/// What the enrolment guard found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolmentReport {
    /// Benign reference rows (the model's held-out calibration embeddings).
    pub benign_reference_rows: usize,
    /// Reference rows the threat flags at its threshold.
    pub would_flag: usize,
    /// `would_flag / benign_reference_rows`.
    pub fpr: f64,
    /// The false-positive budget α.
    pub budget: f64,
    /// Whether `fpr ≤ budget`.
    pub accepted: bool,
    /// Whether it was stored although refused (`--force`).
    pub forced: bool,
    /// Threshold calibrated at the budget (`τ_α`).
    pub calibrated_threshold: f32,
    /// Threshold kept (after support coverage and negatives).
    pub threshold: f32,
    /// Support flows.
    pub support: usize,
    /// Support flows flagged at the kept threshold.
    pub support_flagged: usize,
    /// Negative examples.
    pub negatives: usize,
    /// Number of centres.
    pub prototypes: usize,
    /// The weakest support flows (lowest scores first, at most 3): `locator (score)`.
    pub weakest: Vec<String>,
    /// On a library with a site profile (where `fpr` is measured on the site's benign flows): the
    /// share of the model's own benign reference rows the threat flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_fpr: Option<f64>,
    /// On a library whose site profile names threats with the site forest: that rule's guard,
    /// which then decides `accepted` (the figures above are the embedding rule's, kept for
    /// reference).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_forest: Option<ForestCheck>,
}

/// The site forest's enrolment guard: each support flow left out in turn, the forest fitted
/// without it, and the flow decided. A threat the forest cannot name on flows it did not see looks
/// like the site's own traffic in feature space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForestCheck {
    /// Support flows named as the threat when left out.
    pub named: usize,
    /// Support flows left out (0 with a single flow: nothing would remain to fit on).
    pub left_out: usize,
}

impl ForestCheck {
    /// Whether the guard accepts: at least half the left-out flows named (a single flow cannot be
    /// checked and is accepted).
    pub fn accepts(&self) -> bool {
        self.left_out == 0 || 2 * self.named >= self.left_out
    }

    /// What the check found, as reports print it.
    pub fn describe(&self) -> String {
        match self.left_out {
            0 => "one support flow, nothing to check it against".to_string(),
            n => format!(
                "names {} of {n} support flows, each left out of its fit",
                self.named
            ),
        }
    }
}

/// Why the forest's guard refused a support set, as reports print it.
pub const FOREST_REFUSAL: &str =
    "the forest cannot tell these flows from the site's benign traffic — a mislabelled or poisoned support set?";

/// A rate as reports print it: rounded to six decimals (a budget lowered to a rank, `2k / n`,
/// prints as `0.007989`, not `0.007989347536617843`).
pub fn shown_rate(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl EnrolmentReport {
    /// One line: flagged reference rows against the budget, and why it was refused if it was.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "would flag {} of {} benign reference flows (FPR {:.4}, budget {}); flags {} of {} support flows",
            self.would_flag,
            self.benign_reference_rows,
            self.fpr,
            shown_rate(self.budget),
            self.support_flagged,
            self.support
        );
        if let Some(f) = &self.site_forest {
            s.push_str(&format!(
                "; site forest (the rule in force): {}",
                f.describe()
            ));
            if !self.accepted {
                s.push_str(&format!(": {FOREST_REFUSAL} Drop them, or force"));
            }
            return s;
        }
        if !self.accepted {
            s.push_str(&format!(
                "; the weakest support flows score like benign traffic ({}): a mislabelled or poisoned support set? Drop them, or force",
                self.weakest.join(", ")
            ));
        }
        s
    }
}

/// A threat in the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threat {
    /// Stable id, never reused within a library.
    pub id: u32,
    /// Signature id in alerts: [`SIGNATURE_BASE`] + `id`.
    pub signature_id: u32,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// 1 = high … 4 = low (Suricata's scale).
    pub severity: u8,
    /// Category (e.g. `brute-force`, `dos`).
    pub category: String,
    /// Centres in embedding space (one, or several for a multimodal support).
    pub prototypes: Vec<Vec<f32>>,
    /// Flagged iff `s(x) > threshold` (see the module documentation).
    pub threshold: f32,
    /// The examples it was enrolled from (and confirmed alerts).
    pub support: Vec<SupportFlow>,
    /// Rejected alerts: flows it must not flag.
    pub negatives: Vec<SupportFlow>,
    /// Who enrolled it.
    pub created_by: String,
    /// When (RFC 3339 UTC).
    pub created_at: String,
    /// Last change (RFC 3339 UTC).
    pub updated_at: String,
    /// The guard's figures at the last fit.
    pub report: EnrolmentReport,
    /// The library version in which the threat last changed (0: never stored in a library, or
    /// stored by an earlier build): EVE `alert.rev`, so it only goes up.
    #[serde(default)]
    pub revision: u64,
}

impl Threat {
    /// A threat with id `id` from a draft and its fit (`created_at` and `updated_at` set to `now`).
    pub fn new(id: u32, draft: &ThreatDraft, fit: Fit, now: String) -> Self {
        Threat {
            id,
            signature_id: SIGNATURE_BASE + id,
            name: draft.name.clone(),
            description: draft.description.clone(),
            severity: draft.severity,
            category: draft.category.clone(),
            prototypes: fit.prototypes,
            threshold: fit.threshold,
            support: draft.support.clone(),
            negatives: Vec::new(),
            created_by: draft.author.clone(),
            created_at: now.clone(),
            updated_at: now,
            report: fit.report,
            revision: 0,
        }
    }

    /// Enrols `draft` as threat `id`: fits its prototypes and threshold on `reference` at `budget`
    /// (k-means seed [`seed_for`]`(id)`) and records the guard's figures in `report`. Refusing a
    /// threat the guard does not accept (`report.accepted`) is the caller's decision.
    pub fn enrol(
        reference: &BenignReference,
        id: u32,
        draft: &ThreatDraft,
        budget: f64,
        now: String,
    ) -> Result<Self> {
        check_name(&draft.name)?;
        check_severity(draft.severity)?;
        let f = fit(reference, &draft.support, &[], seed_for(id), budget)?;
        Ok(Threat::new(id, draft, f, now))
    }

    /// EVE `alert.rev`: [`Threat::revision`], the library version of the threat's last change, so
    /// it goes up with every refit, edit or rollback of it; 1 for a threat never stored by this
    /// build.
    pub fn rev(&self) -> u32 {
        u32::try_from(self.revision).unwrap_or(u32::MAX).max(1)
    }

    /// The prototypes as one row-major `m × dim` block (what the verdict rule scans).
    pub fn flat_prototypes(&self) -> Vec<f32> {
        self.prototypes.iter().flatten().copied().collect()
    }

    /// Refuses a threat no rule can use with embeddings of size `dim`: a bad name or severity, no
    /// prototypes or too many, prototypes or examples of another size or with non-finite values, a
    /// non-finite threshold, an id out of range or a signature id other than [`SIGNATURE_BASE`] + id.
    /// Field names are relative to the threat (`prototypes[2]`, `threshold`).
    pub fn validate(&self, dim: usize) -> Result<()> {
        check_name(&self.name)?;
        check_severity(self.severity)?;
        if self.id == 0 || self.id > MAX_THREAT_ID {
            return Err(DecideError::invalid(
                "id",
                format!("{}: expected 1 to {MAX_THREAT_ID}", self.id),
            ));
        }
        if self.signature_id != SIGNATURE_BASE + self.id {
            return Err(DecideError::invalid(
                "signature_id",
                format!(
                    "{}: expected {} ({SIGNATURE_BASE} + id {})",
                    self.signature_id,
                    SIGNATURE_BASE + self.id,
                    self.id
                ),
            ));
        }
        if self.prototypes.is_empty() || self.prototypes.len() > MAX_PROTOTYPES {
            return Err(DecideError::invalid(
                "prototypes",
                format!(
                    "{} prototypes: expected 1 to {MAX_PROTOTYPES}",
                    self.prototypes.len()
                ),
            ));
        }
        for (j, p) in self.prototypes.iter().enumerate() {
            if p.len() != dim || p.iter().any(|v| !v.is_finite()) {
                return Err(DecideError::invalid(
                    format!("prototypes[{j}]"),
                    format!("{} values, expected {dim} finite values", p.len()),
                ));
            }
        }
        if !self.threshold.is_finite() {
            return Err(DecideError::invalid(
                "threshold",
                format!("{}: expected a finite number", self.threshold),
            ));
        }
        for (field, flows) in [("support", &self.support), ("negatives", &self.negatives)] {
            if flows.len() > MAX_EXAMPLES {
                return Err(DecideError::invalid(
                    field,
                    format!("{} examples: at most {MAX_EXAMPLES}", flows.len()),
                ));
            }
            check_flows(field, flows, dim)?;
        }
        Ok(())
    }

    /// Distance to the nearest centre.
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn centre_distance(&self, x: &[f32]) -> f32 {
        min_distance(x, self.prototypes.iter().map(Vec::as_slice))
    }

    /// Score `s(x) = benign_distance(x) − min_i d(x, c_i)`.
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn score(&self, reference: &BenignReference, x: &[f32]) -> f32 {
        reference.benign_distance(x) - self.centre_distance(x)
    }

    /// Whether the threat flags `x`: `score(x) > threshold`.
    ///
    /// # Shapes
    /// `x`: `dim` → bool.
    pub fn flags(&self, reference: &BenignReference, x: &[f32]) -> bool {
        self.score(reference, x) > self.threshold
    }

    /// Margin `score(x) − threshold` (positive iff flagged): the detector's ranking among threats.
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn margin(&self, reference: &BenignReference, x: &[f32]) -> f32 {
        self.score(reference, x) - self.threshold
    }
}

/// What a user supplies to enrol a threat.
#[derive(Debug, Clone, PartialEq)]
pub struct ThreatDraft {
    /// Unique name (1 to 128 characters, no control characters).
    pub name: String,
    /// Free text.
    pub description: String,
    /// 1 = high … 4 = low.
    pub severity: u8,
    /// Category.
    pub category: String,
    /// Support flows (at least one).
    pub support: Vec<SupportFlow>,
    /// Who enrols it.
    pub author: String,
}

impl ThreatDraft {
    /// A draft named `name` whose support is the rows of `embeddings` (`K × dim`), each located as
    /// `row i` of `source`; severity 2, category `Few-shot threat`, no description.
    ///
    /// # Shapes
    /// `embeddings`: `K × dim`.
    pub fn from_embeddings(
        name: &str,
        embeddings: &[f32],
        dim: usize,
        source: &str,
        author: &str,
    ) -> Self {
        let support = embeddings
            .chunks_exact(dim.max(1))
            .enumerate()
            .map(|(i, e)| SupportFlow {
                source: source.to_string(),
                locator: format!("row {i}"),
                embedding: e.to_vec(),
                values: FlowValues::default(),
                context: Vec::new(),
            })
            .collect();
        ThreatDraft {
            name: name.to_string(),
            description: String::new(),
            severity: 2,
            category: "Few-shot threat".to_string(),
            support,
            author: author.to_string(),
        }
    }
}

/// Enrolment options.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EnrolOptions {
    /// Store the threat even when the guard refuses it.
    pub force: bool,
    /// Budget instead of the model's (`None`: the model's `fpr_budget`).
    pub budget: Option<f64>,
}

/// A fitted threat's decision parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Fit {
    /// Centres.
    pub prototypes: Vec<Vec<f32>>,
    /// Kept threshold.
    pub threshold: f32,
    /// The guard's figures (`forced` false; the caller sets it).
    pub report: EnrolmentReport,
}

/// Checks a name: 1 to 128 characters, no control characters, not only spaces.
pub fn check_name(name: &str) -> Result<()> {
    let n = name.chars().count();
    if n == 0 || n > 128 || name.trim().is_empty() || name.chars().any(char::is_control) {
        return Err(DecideError::Invalid {
            field: "name".into(),
            message: format!("{name:?}: expected 1 to 128 characters without control characters"),
        });
    }
    Ok(())
}

/// Checks a severity: 1 (high) to 4 (low).
pub fn check_severity(severity: u8) -> Result<()> {
    if !(1..=4).contains(&severity) {
        return Err(DecideError::Invalid {
            field: "severity".into(),
            message: format!("{severity}: expected 1 (high) to 4 (low), Suricata's scale"),
        });
    }
    Ok(())
}

/// Checks that every flow has a finite embedding of `dim` values.
pub fn check_flows(field: &str, flows: &[SupportFlow], dim: usize) -> Result<()> {
    for (i, f) in flows.iter().enumerate() {
        if f.embedding.len() != dim || f.embedding.iter().any(|v| !v.is_finite()) {
            return Err(DecideError::Invalid {
                field: format!("{field}[{i}].embedding"),
                message: format!(
                    "{} values from {} {}: expected {dim} finite values",
                    f.embedding.len(),
                    f.source,
                    f.locator
                ),
            });
        }
    }
    Ok(())
}

/// Number of centres for `K` support rows (see the module documentation).
///
/// # Shapes
/// `rows`: `K × dim` → `k ∈ 1..=max(1, ⌊K/3⌋)`, with its centres (`k × dim`).
pub fn choose_centres(rows: &[f32], dim: usize, seed: u64) -> Vec<f32> {
    let k_rows = rows.len().checked_div(dim).unwrap_or(0);
    let one = mean_row(rows, dim);
    if k_rows < 6 {
        return one;
    }
    let sse = |centres: &[f32]| -> f64 {
        rows.chunks_exact(dim)
            .map(|r| f64::from(nearest(r, centres, dim).1))
            .sum()
    };
    let base = sse(&one);
    if base <= 0.0 {
        return one;
    }
    for k in 2..=k_rows / 3 {
        let c = kmeans(rows, dim, k, 50, seed);
        if sse(&c) <= 0.1 * base {
            return c;
        }
    }
    one
}

/// Fits a threat's prototypes and threshold from its examples and runs the guard (see the module
/// documentation for every rule).
///
/// # Shapes
/// every embedding: `reference.dim`.
pub fn fit(
    reference: &BenignReference,
    support: &[SupportFlow],
    negatives: &[SupportFlow],
    seed: u64,
    budget: f64,
) -> Result<Fit> {
    let dim = reference.dim;
    if support.is_empty() {
        return Err(DecideError::Invalid {
            field: "support".into(),
            message: "no support flows: a threat needs at least one example".into(),
        });
    }
    if !(budget.is_finite() && (0.0..1.0).contains(&budget)) {
        return Err(DecideError::Invalid {
            field: "budget".into(),
            message: format!("{budget}: expected a false-positive rate in [0, 1)"),
        });
    }
    check_flows("support", support, dim)?;
    check_flows("negatives", negatives, dim)?;
    if support.len() > MAX_EXAMPLES || negatives.len() > MAX_EXAMPLES {
        return Err(DecideError::invalid(
            "support",
            format!(
                "{} support and {} negative flows: at most {MAX_EXAMPLES} each",
                support.len(),
                negatives.len()
            ),
        ));
    }
    let rows: Vec<f32> = support
        .iter()
        .flat_map(|f| f.embedding.iter().copied())
        .collect();
    let centres = choose_centres(&rows, dim, seed);
    let score =
        |x: &[f32]| reference.benign_distance(x) - min_distance(x, centres.chunks_exact(dim));
    let mut reference_scores: Vec<f32> =
        reference.calibration.chunks_exact(dim).map(score).collect();
    let n = reference_scores.len();
    let calibrated = upper_quantile(&mut reference_scores.clone(), budget);
    let mut support_scores: Vec<(f32, &SupportFlow)> =
        support.iter().map(|f| (score(&f.embedding), f)).collect();
    support_scores.sort_by(|a, b| a.0.total_cmp(&b.0));
    let weakest = support_scores[0].0;
    let mut threshold = if weakest > calibrated {
        calibrated
    } else {
        weakest.next_down()
    };
    if let Some(neg) = negatives
        .iter()
        .map(|f| score(&f.embedding))
        .max_by(f32::total_cmp)
    {
        threshold = threshold.max(neg);
    }
    let would_flag = reference_scores
        .iter_mut()
        .filter(|s| **s > threshold)
        .count();
    let fpr = if n == 0 {
        0.0
    } else {
        would_flag as f64 / n as f64
    };
    let report = EnrolmentReport {
        benign_reference_rows: n,
        would_flag,
        fpr,
        budget,
        accepted: n > 0 && fpr <= budget,
        forced: false,
        calibrated_threshold: calibrated,
        threshold,
        support: support.len(),
        support_flagged: support_scores
            .iter()
            .filter(|(s, _)| *s > threshold)
            .count(),
        negatives: negatives.len(),
        prototypes: centres.len() / dim.max(1),
        weakest: support_scores
            .iter()
            .take(3)
            .map(|(s, f)| format!("{} {} ({s:.3})", f.source, f.locator))
            .collect(),
        model_fpr: None,
        site_forest: None,
    };
    Ok(Fit {
        prototypes: centres.chunks_exact(dim).map(<[f32]>::to_vec).collect(),
        threshold,
        report,
    })
}

/// Whether a flow an analyst confirms as an example of `threats[t]` looks like one: it must be
/// nearer that threat's prototypes than the nearest benign prototype and than every other threat's
/// prototypes. A flow that fails would drag the prototype (and lower the threshold) towards benign
/// traffic or towards another family — the UDP scan confirmed as SSH support. Returns why it fails,
/// with the distances, or `None` when it looks like the threat.
///
/// # Shapes
/// `x`: `reference.dim`.
pub fn confirmation_doubt(
    reference: &BenignReference,
    threats: &[Threat],
    t: usize,
    x: &[f32],
) -> Option<String> {
    let threat = threats.get(t)?;
    let dt = threat.centre_distance(x);
    let other = threats
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != t)
        .map(|(_, o)| (o, o.centre_distance(x)))
        .filter(|&(_, d)| d <= dt)
        .min_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((o, d)) = other {
        return Some(format!(
            "the flow is nearer threat {:?} (squared distance {d:.3}) than threat {:?} ({dt:.3})",
            o.name, threat.name
        ));
    }
    let db = reference.benign_distance(x);
    (dt.partial_cmp(&db) != Some(std::cmp::Ordering::Less)).then(|| {
        format!(
            "the flow is nearer benign traffic (squared distance {db:.3}) than threat {:?} ({dt:.3})",
            threat.name
        )
    })
}

/// k-means seed of a threat (fixed per id, so a refit is reproducible).
pub fn seed_for(id: u32) -> u64 {
    0x6d65_7461_6964_7300 ^ u64::from(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_values_keep_nan_and_infinities_through_json() {
        let mut f = flow(0, &[1.0, 2.0]);
        f.values = FlowValues {
            numeric: vec![
                1.5,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
                -0.0,
                3.4e38,
            ],
            categorical: vec!["tcp".into()],
        };
        let text = serde_json::to_string(&f).expect("json");
        assert!(text.contains("\"NaN\",\"inf\",\"-inf\""), "{text}");
        let back: SupportFlow = serde_json::from_str(&text).expect("parse");
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back.values.numeric), bits(&f.values.numeric));
        assert_eq!(back.values.categorical, f.values.categorical);
        // Flows without values write no field, and older documents without it still read.
        let plain = flow(1, &[1.0]);
        let text = serde_json::to_string(&plain).expect("json");
        assert!(!text.contains("values"), "{text}");
        assert_eq!(
            serde_json::from_str::<SupportFlow>(&text).expect("parse"),
            plain
        );
        let bad = r#"{"source":"s","locator":"l","embedding":[1.0],"values":{"numeric":["many"],"categorical":[]}}"#;
        let err = serde_json::from_str::<SupportFlow>(bad).expect_err("not a value");
        assert!(err.to_string().contains("many"), "{err}");
    }

    fn flow(i: usize, e: &[f32]) -> SupportFlow {
        SupportFlow {
            source: "t.csv".into(),
            locator: format!("row {i}"),
            embedding: e.to_vec(),
            values: FlowValues::default(),
            context: Vec::new(),
        }
    }

    /// Benign reference: 400 rows in a disc of radius 3 around (0, 0).
    fn reference() -> BenignReference {
        let mut cal = Vec::new();
        for i in 0..400 {
            let a = i as f32 * 0.37;
            let r = (i % 20) as f32 * 0.15;
            cal.extend_from_slice(&[r * a.cos(), r * a.sin()]);
        }
        BenignReference::new(2, vec![0.0, 0.0], cal, 0.01)
    }

    #[test]
    fn genuine_family_is_accepted_at_the_calibrated_threshold() {
        let r = reference();
        let support: Vec<_> = (0..5)
            .map(|i| flow(i, &[20.0 + i as f32 * 0.1, 0.0]))
            .collect();
        let fit = fit(&r, &support, &[], 1, 0.01).expect("fit");
        assert!(fit.report.accepted, "{:?}", fit.report);
        assert_eq!(fit.threshold, fit.report.calibrated_threshold);
        assert_eq!(fit.report.support_flagged, 5);
        assert!(fit.report.would_flag <= 4);
        assert_eq!(fit.prototypes.len(), 1);
    }

    #[test]
    fn poisoned_support_is_refused_and_names_the_weakest_flow() {
        let r = reference();
        let mut support: Vec<_> = (0..4)
            .map(|i| flow(i, &[20.0 + i as f32 * 0.1, 0.0]))
            .collect();
        support.push(flow(9, &[0.5, 0.5]));
        let fit = fit(&r, &support, &[], 1, 0.01).expect("fit");
        assert!(!fit.report.accepted, "{:?}", fit.report);
        assert!(fit.report.fpr > 0.01);
        assert_eq!(fit.report.support_flagged, 5);
        assert!(fit.report.weakest[0].contains("row 9"), "{:?}", fit.report);
        assert!(fit.report.summary().contains("poisoned"));
    }

    #[test]
    fn negatives_raise_the_threshold_above_their_score() {
        let r = reference();
        let support: Vec<_> = (0..5)
            .map(|i| flow(i, &[20.0 + i as f32 * 0.1, 0.0]))
            .collect();
        let neg = flow(7, &[12.0, 0.0]);
        let plain = fit(&r, &support, &[], 1, 0.01).expect("fit");
        let s_neg = r.benign_distance(&neg.embedding)
            - min_distance(&neg.embedding, plain.prototypes.iter().map(Vec::as_slice));
        assert!(s_neg > plain.threshold, "the negative is flagged before");
        let with = fit(&r, &support, std::slice::from_ref(&neg), 1, 0.01).expect("fit");
        let t = Threat {
            id: 1,
            signature_id: SIGNATURE_BASE + 1,
            name: "x".into(),
            description: String::new(),
            severity: 2,
            category: "c".into(),
            prototypes: with.prototypes.clone(),
            threshold: with.threshold,
            support: support.clone(),
            negatives: vec![neg.clone()],
            created_by: "t".into(),
            created_at: String::new(),
            updated_at: String::new(),
            report: with.report.clone(),
            revision: 0,
        };
        assert!(!t.flags(&r, &neg.embedding));
        assert!(t.flags(&r, &[21.0, 0.0]));
        assert_eq!(with.report.negatives, 1);
        assert!(with.report.accepted);
    }

    #[test]
    fn two_separate_modes_get_two_centres() {
        let r = reference();
        let mut support = Vec::new();
        for i in 0..4 {
            support.push(flow(i, &[20.0 + i as f32 * 0.1, 0.0]));
            support.push(flow(10 + i, &[0.0, -20.0 - i as f32 * 0.1]));
        }
        let fit = fit(&r, &support, &[], 3, 0.01).expect("fit");
        assert_eq!(fit.prototypes.len(), 2, "{:?}", fit.prototypes);
        assert_eq!(fit.report.support_flagged, 8);
        // A unimodal support of 8 keeps one centre.
        let uni: Vec<_> = (0..8)
            .map(|i| flow(i, &[20.0 + i as f32 * 0.1, 0.0]))
            .collect();
        assert_eq!(
            super::fit(&r, &uni, &[], 3, 0.01)
                .expect("fit")
                .prototypes
                .len(),
            1
        );
    }

    #[test]
    fn a_confirmed_flow_must_look_like_its_threat() {
        let r = reference();
        let mk = |id: u32, name: &str, at: [f32; 2]| {
            let rows: Vec<f32> = (0..5)
                .flat_map(|i| [at[0] + i as f32 * 0.1, at[1]])
                .collect();
            let d = ThreatDraft::from_embeddings(name, &rows, 2, "t.csv", "test");
            Threat::enrol(&r, id, &d, 0.01, String::new()).expect("enrol")
        };
        let threats = vec![mk(1, "ssh", [20.0, 0.0]), mk(2, "scan", [0.0, -20.0])];
        assert_eq!(confirmation_doubt(&r, &threats, 0, &[19.0, 1.0]), None);
        let why = confirmation_doubt(&r, &threats, 0, &[0.5, -18.0]).expect("another family");
        assert!(why.contains("\"scan\""), "{why}");
        let why = confirmation_doubt(&r, &threats, 0, &[0.5, 0.5]).expect("benign");
        assert!(why.contains("benign"), "{why}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let r = reference();
        assert!(fit(&r, &[], &[], 1, 0.01).is_err());
        assert!(fit(&r, &[flow(0, &[1.0])], &[], 1, 0.01).is_err());
        assert!(fit(&r, &[flow(0, &[f32::NAN, 0.0])], &[], 1, 0.01).is_err());
        assert!(fit(&r, &[flow(0, &[1.0, 0.0])], &[], 1, 1.5).is_err());
        assert!(check_name("").is_err() && check_name("a\nb").is_err() && check_name("ok").is_ok());
        assert!(check_severity(0).is_err() && check_severity(5).is_err());
        assert!(check_severity(1).is_ok());
    }
}
