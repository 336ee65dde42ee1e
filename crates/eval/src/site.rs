//! The site protocol (`metaids site-eval`): how the product does on a network the model never saw,
//! run the way a SOC would run it.
//!
//! Per seeded repeat and budget `α`: a seeded share of the site's benign flows (at most
//! `baseline_max`) is the baseline window: the site profile is learnt from it exactly as
//! `metaids baseline` learns it ([`SiteProfile::learn`]: per-source cap, benign prototypes,
//! calibration rows, refusal of a budget the rows cannot support); `K` seeded flows of each attack
//! family are enrolled as one threat each and all threats are calibrated jointly on the profile
//! ([`calibrate_jointly`], as the library does); every other flow is decided by the one verdict rule
//! ([`Decider`]). No flow is both baseline or support and scored. Reported per budget: the share of
//! the scored benign flows flagged (threat or unknown), per family the share of its scored flows
//! named as its own threat (`named`) and flagged at all (`any alert`), their macro means over
//! families, each with a 95% interval over the repeats (Student t) and, for the benign share, the
//! Wilson interval of each repeat's count. Families with fewer than `K + 1` flows are listed and
//! skipped. Labels come from the caller (file names or a LABELS.md); nothing here reads files.

use std::collections::BTreeMap;

use metaids_core::metrics::{wilson95, Summary};
use metaids_decide::{
    calibrate_jointly, BenignReference, Decider, ProfileOptions, SiteProfile, Threat, ThreatDraft,
    Verdict, VerdictKind,
};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::EvalError;

fn err(message: String) -> EvalError {
    EvalError::Method {
        method: "site protocol".into(),
        message,
    }
}

/// The site's flows, embedded.
#[derive(Debug, Clone)]
pub struct SiteFlows {
    /// Embeddings, `n × dim`.
    pub embeddings: Vec<f32>,
    /// Embedding size.
    pub dim: usize,
    /// One label per flow; [`SiteFlows::benign`] marks the benign ones.
    pub labels: Vec<String>,
    /// One source (initiator address) per flow, for the baseline's per-source cap.
    pub sources: Vec<String>,
    /// The benign label.
    pub benign: String,
    /// The flows' preprocessed feature rows (`n × feature_dim`, the model's normaliser), which the
    /// site forest decides on; empty when not given.
    pub features: Vec<f32>,
    /// Feature row width (0 when no rows are given).
    pub feature_dim: usize,
}

/// The protocol's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Budgets `α` to report (each in `(0, 1)`).
    pub budgets: Vec<f64>,
    /// Flows enrolled per attack family.
    pub shots: usize,
    /// Seeded repeats.
    pub repeats: usize,
    /// Seed of every draw.
    pub seed: u64,
    /// Share of the benign flows in the baseline window.
    pub baseline_share: f64,
    /// Most flows in the baseline window.
    pub baseline_max: usize,
    /// How the profile is learnt (its `budget`, `seed` and `force` are set per run).
    pub profile: ProfileOptions,
    /// Calibrate budgets the baseline cannot support instead of reporting them refused.
    pub force: bool,
    /// Also decide every draw with the site forest's threats ([`metaids_decide::SiteForest`]; needs
    /// [`SiteFlows::features`]).
    pub site_forest: bool,
    /// Whether [`SiteFlows::features`] end with each flow's source context (reported with the
    /// site forest's rows).
    pub source_context: bool,
    /// The site forest's timing jitter for these feature rows (per column, preprocessed units:
    /// `Normaliser::timing_shift(TIMING_FACTOR)`, as `metaids baseline` arms it); empty for none.
    pub timing_shift: Vec<f32>,
    /// Keep every scored flow's verdict and each repeat's enrolled flows
    /// ([`RepeatOutcome::verdicts`], [`SiteResult::verdicts_csv`]): memory grows with flows ×
    /// repeats × budgets × rules, so only when asked.
    pub keep_verdicts: bool,
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            budgets: vec![0.01, 0.001],
            shots: 5,
            repeats: 5,
            seed: 2026,
            baseline_share: 0.5,
            baseline_max: 2000,
            profile: ProfileOptions::default(),
            force: false,
            site_forest: false,
            source_context: false,
            timing_shift: Vec::new(),
            keep_verdicts: false,
        }
    }
}

/// One family's counts in one repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyCounts {
    /// Flows scored.
    pub scored: usize,
    /// Named as its own threat.
    pub named: usize,
    /// Flagged at all (any threat or unknown).
    pub any: usize,
    /// Scored flows of other classes (benign or another family) named as this family's threat.
    pub wrongly_named: usize,
}

impl FamilyCounts {
    /// F1 of the family as a class: its flows named as its threat against the other flows named
    /// so and its flows named otherwise (0 when nothing is named and none is scored).
    pub fn f1(&self) -> f64 {
        f1(
            self.named,
            self.wrongly_named,
            self.scored.saturating_sub(self.named),
        )
    }
}

/// `2 tp / (2 tp + fp + fn)`, 0 when all three are 0.
fn f1(tp: usize, fp: usize, fn_: usize) -> f64 {
    let d = 2 * tp + fp + fn_;
    if d == 0 {
        0.0
    } else {
        2.0 * tp as f64 / d as f64
    }
}

/// One repeat at one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct RepeatOutcome {
    /// Baseline flows offered and kept after the per-source cap.
    pub baseline_offered: usize,
    /// Baseline flows kept.
    pub baseline_kept: usize,
    /// Calibration rows of the profile.
    pub calibration_rows: usize,
    /// Benign flows scored.
    pub benign_scored: usize,
    /// Benign flows named as some threat.
    pub benign_threat: usize,
    /// Benign flows called unknown anomalies.
    pub benign_unknown: usize,
    /// Threats the enrolment guard would refuse on the profile (before the joint calibration).
    pub guard_refused: usize,
    /// Per family, in [`SiteResult::families`] order.
    pub families: Vec<FamilyCounts>,
    /// Every scored flow's verdict, benign flows first then each family's, when
    /// [`SiteConfig::keep_verdicts`] (else empty).
    pub verdicts: Vec<FlowVerdict>,
    /// The flows enrolled, per family, when [`SiteConfig::keep_verdicts`] (else empty).
    pub support: Vec<Vec<usize>>,
}

/// One scored flow's verdict in a repeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowVerdict {
    /// The flow (index into [`SiteFlows`]).
    pub flow: usize,
    /// Benign, threat or unknown.
    pub kind: VerdictKind,
    /// The family (index into [`SiteResult::families`]) it was named as, for a threat verdict.
    pub named: Option<usize>,
}

impl RepeatOutcome {
    /// Benign flows flagged (threat or unknown).
    pub fn benign_flagged(&self) -> usize {
        self.benign_threat + self.benign_unknown
    }

    /// Share of the scored benign flows flagged.
    pub fn benign_rate(&self) -> f64 {
        self.benign_flagged() as f64 / self.benign_scored.max(1) as f64
    }

    fn macro_of(&self, f: impl Fn(&FamilyCounts) -> usize) -> f64 {
        if self.families.is_empty() {
            return 0.0;
        }
        self.families
            .iter()
            .map(|c| f(c) as f64 / c.scored.max(1) as f64)
            .sum::<f64>()
            / self.families.len() as f64
    }

    /// Mean over families of the share named as their own threat.
    pub fn macro_named(&self) -> f64 {
        self.macro_of(|c| c.named)
    }

    /// Mean over families of the share flagged at all.
    pub fn macro_any(&self) -> f64 {
        self.macro_of(|c| c.any)
    }

    /// Macro-F1 over the families and benign, each scored flow's verdict read as a class (its
    /// threat, benign; an unknown verdict is no class, so it counts against the flow's own): the
    /// benign class's false positives are the attack flows decided benign.
    pub fn macro_f1(&self) -> f64 {
        let missed: usize = self.families.iter().map(|c| c.scored - c.any).sum();
        let benign = f1(
            self.benign_scored - self.benign_flagged(),
            missed,
            self.benign_flagged(),
        );
        let sum: f64 = self.families.iter().map(FamilyCounts::f1).sum::<f64>() + benign;
        sum / (self.families.len() + 1) as f64
    }
}

/// Everything measured at one budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetResult {
    /// The budget `α`.
    pub budget: f64,
    /// Why the budget could not be calibrated (the profile's refusal), if so.
    pub refused: Option<String>,
    /// One per repeat (empty when refused).
    pub repeats: Vec<RepeatOutcome>,
}

/// The report.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteResult {
    /// The settings.
    pub config: SiteConfig,
    /// Benign flows in all.
    pub benign_flows: usize,
    /// Attack families evaluated, with their flows.
    pub families: Vec<(String, usize)>,
    /// Families skipped (fewer than `shots + 1` flows), with their flows.
    pub skipped: Vec<(String, usize)>,
    /// The same draws decided with the model's own reference and no baseline (`budget`: the
    /// model's), when asked for.
    pub without_baseline: Option<BudgetResult>,
    /// One per budget, in the configured order.
    pub budgets: Vec<BudgetResult>,
    /// The same draws with the site baseline learnt on adapted embeddings: the adaptation's
    /// name and one result per budget.
    pub adaptation: Option<(String, Vec<BudgetResult>)>,
    /// The same draws with the site baseline and the site forest's threats
    /// ([`SiteConfig::site_forest`]), one result per budget.
    pub forest: Option<Vec<BudgetResult>>,
}

/// One repeat's draws.
struct Draw<'a> {
    seed: u64,
    base: &'a [usize],
    base_src: &'a [String],
    benign_test: &'a [usize],
    support: &'a [Vec<usize>],
    scored: &'a [Vec<usize>],
}

/// One repeat with a site baseline learnt from the window, at every budget of `results` (a
/// budget the window cannot support is marked refused once and skipped after), deciding with the
/// embeddings `emb`. With `forest` (every flow's feature rows and their width), threats are named
/// by the site forest, as `metaids baseline --threat-rule forest` arms a library; else by their
/// prototypes, calibrated jointly.
fn with_baseline(
    emb: &[f32],
    dim: usize,
    forest: Option<(&[f32], usize)>,
    draw: &Draw<'_>,
    families: &[(String, usize)],
    cfg: &SiteConfig,
    results: &mut [BudgetResult],
) -> Result<(), EvalError> {
    let row = |r: usize| &emb[r * dim..(r + 1) * dim];
    let gather = |rows: &[usize]| rows_of(emb, dim, rows.iter().copied());
    let base_emb = gather(draw.base);
    for res in results.iter_mut() {
        if res.refused.is_some() {
            continue;
        }
        let options = ProfileOptions {
            budget: res.budget,
            seed: draw.seed,
            force: cfg.force,
            ..cfg.profile
        };
        let profile = match SiteProfile::learn(&base_emb, dim, draw.base_src, options) {
            Ok(p) => p,
            Err(e) => {
                // The refusal depends on the window's size, the same in every repeat.
                res.refused = Some(e.to_string());
                res.repeats.clear();
                continue;
            }
        };
        let reference = profile.reference();
        let kept = (
            profile.flows_offered,
            profile.flows_kept,
            profile.calibration_rows(),
        );
        let (threats, mut guard_refused) = enrol_all(
            &reference,
            families,
            draw.support,
            &gather,
            profile.budget / 2.0,
        )?;
        let mut out = match forest {
            None => {
                // The profile's budget: the one asked for, lowered to the split-conformal rank or
                // to a confidence's.
                let (threats, _) = calibrate_jointly(&reference, &threats, profile.budget)
                    .map_err(|e| err(format!("joint calibration: {e}")))?;
                let decider = Decider::new(reference, threats, profile.unknown_threshold)
                    .map_err(|e| err(format!("arming the threats: {e}")))?;
                score(
                    &|r| decider.decide(row(r)),
                    draw.benign_test,
                    draw.scored,
                    cfg.keep_verdicts,
                )
            }
            Some((features, fd)) => {
                let feat = |r: usize| &features[r * fd..(r + 1) * fd];
                // The profile keeps the window's feature rows beside its embeddings.
                let base_x = rows_of(features, fd, draw.base.iter().copied());
                let profile = profile
                    .with_forest_rows(&base_x, fd, draw.base_src, options)
                    .map_err(|e| err(format!("the site forest's rows: {e}")))?;
                let support: Vec<Vec<f32>> = draw
                    .support
                    .iter()
                    .map(|s| rows_of(features, fd, s.iter().copied()))
                    .collect();
                let site_forest = profile
                    .site_forest(&support, &cfg.timing_shift)
                    .map_err(|e| err(format!("the site forest: {e}")))?;
                // The enrolments this rule's guard would refuse (stored anyway, as with
                // `--force`, and counted) replace the prototype guard's count.
                guard_refused = 0;
                for t in 0..support.len() {
                    let check = profile
                        .forest_check(&support, t, &cfg.timing_shift)
                        .map_err(|e| err(format!("the site forest's guard: {e}")))?;
                    guard_refused += usize::from(!check.accepts());
                }
                let decider = Decider::new(reference, threats, profile.unknown_threshold)
                    .and_then(|d| d.with_site_forest(site_forest))
                    .map_err(|e| err(format!("arming the site forest: {e}")))?;
                score(
                    &|r| decider.decide_flow(row(r), feat(r)),
                    draw.benign_test,
                    draw.scored,
                    cfg.keep_verdicts,
                )
            }
        };
        (
            out.baseline_offered,
            out.baseline_kept,
            out.calibration_rows,
        ) = kept;
        out.guard_refused = guard_refused;
        if cfg.keep_verdicts {
            out.support = draw.support.to_vec();
        }
        res.repeats.push(out);
    }
    Ok(())
}

/// The rows `rows` of a row-major matrix of width `width`, gathered.
fn rows_of(data: &[f32], width: usize, rows: impl Iterator<Item = usize>) -> Vec<f32> {
    rows.flat_map(|r| data[r * width..(r + 1) * width].iter().copied())
        .collect()
}

/// One threat per family from its support rows (`gather` turns rows into embeddings), each fitted
/// on `reference` at `budget` as `Threat::enrol` does for the library; with the number the
/// enrolment guard would have refused.
fn enrol_all(
    reference: &BenignReference,
    families: &[(String, usize)],
    support: &[Vec<usize>],
    gather: &dyn Fn(&[usize]) -> Vec<f32>,
    budget: f64,
) -> Result<(Vec<Threat>, usize), EvalError> {
    let mut threats = Vec::with_capacity(families.len());
    let mut refused = 0;
    for (i, ((name, _), s)) in families.iter().zip(support).enumerate() {
        let draft =
            ThreatDraft::from_embeddings(name, &gather(s), reference.dim, "site-eval", "site-eval");
        let id = u32::try_from(i + 1).unwrap_or(u32::MAX);
        let t = Threat::enrol(reference, id, &draft, budget, String::new())
            .map_err(|e| err(format!("enrolling {name}: {e}")))?;
        refused += usize::from(!t.report.accepted);
        threats.push(t);
    }
    Ok((threats, refused))
}

/// An unsupervised adaptation of the model to the site: given the baseline window (flow indices),
/// every flow's embedding recomputed with something fit on those flows only.
pub type Adaptation<'a> = &'a dyn Fn(&[usize]) -> Result<Vec<f32>, EvalError>;

/// Decides the scored rows with `decide` (a flow index to its verdict): benign verdict counts and
/// per-family counts (the baseline fields left at 0).
fn score(
    decide: &dyn Fn(usize) -> Verdict,
    benign: &[usize],
    scored: &[Vec<usize>],
    keep: bool,
) -> RepeatOutcome {
    let mut out = RepeatOutcome {
        baseline_offered: 0,
        baseline_kept: 0,
        calibration_rows: 0,
        benign_scored: benign.len(),
        benign_threat: 0,
        benign_unknown: 0,
        guard_refused: 0,
        families: Vec::with_capacity(scored.len()),
        verdicts: Vec::new(),
        support: Vec::new(),
    };
    let mut kept = Vec::new();
    let mut decide = |r: usize| -> Verdict {
        let v = decide(r);
        if keep {
            kept.push(FlowVerdict {
                flow: r,
                kind: v.kind,
                named: v.flagged(),
            });
        }
        v
    };
    let mut wrongly = vec![0usize; scored.len()];
    for &r in benign {
        let v = decide(r);
        match v.kind {
            VerdictKind::Threat => out.benign_threat += 1,
            VerdictKind::Unknown => out.benign_unknown += 1,
            VerdictKind::Benign => {}
        }
        if let Some(w) = v.flagged().and_then(|t| wrongly.get_mut(t)) {
            *w += 1;
        }
    }
    for (f, rows) in scored.iter().enumerate() {
        let mut c = FamilyCounts {
            scored: rows.len(),
            named: 0,
            any: 0,
            wrongly_named: 0,
        };
        for &r in rows {
            let v = decide(r);
            match v.flagged() {
                Some(t) if t == f => c.named += 1,
                Some(t) => {
                    if let Some(w) = wrongly.get_mut(t) {
                        *w += 1;
                    }
                }
                None => {}
            }
            c.any += usize::from(v.kind != VerdictKind::Benign);
        }
        out.families.push(c);
    }
    for (c, w) in out.families.iter_mut().zip(wrongly) {
        c.wrongly_named = w;
    }
    out.verdicts = kept;
    out
}

/// Runs the protocol. With `model_reference` (the model's own benign reference, from its
/// training data), the same draws are also decided without a baseline, as a deployment that
/// skipped `metaids baseline` would: [`SiteResult::without_baseline`].
pub fn run(
    flows: &SiteFlows,
    cfg: &SiteConfig,
    model_reference: Option<&BenignReference>,
    adapt: Option<(&str, Adaptation<'_>)>,
) -> Result<SiteResult, EvalError> {
    let (adapt_name, adapt) = match adapt {
        Some((n, a)) => (Some(n.to_string()), Some(a)),
        None => (None, None),
    };
    let dim = flows.dim;
    let n = flows.labels.len();
    if dim == 0 || flows.embeddings.len() != n * dim || flows.sources.len() != n {
        return Err(err(format!(
            "{} labels, {} sources and {} embedding values of size {dim} do not match",
            n,
            flows.sources.len(),
            flows.embeddings.len()
        )));
    }
    if cfg.shots == 0 || cfg.repeats == 0 {
        return Err(err("shots and repeats must be at least 1".into()));
    }
    if !(cfg.baseline_share > 0.0 && cfg.baseline_share < 1.0) {
        return Err(err(format!(
            "baseline share {} must be in (0, 1): some benign flows must be scored",
            cfg.baseline_share
        )));
    }
    if cfg.budgets.is_empty() {
        return Err(err("no budget to report".into()));
    }
    if cfg.site_forest && (flows.feature_dim == 0 || flows.features.len() != n * flows.feature_dim)
    {
        return Err(err(format!(
            "the site forest needs every flow's feature row: {} values of width {} for {n} flows",
            flows.features.len(),
            flows.feature_dim
        )));
    }
    let mut by_label: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in flows.labels.iter().enumerate() {
        by_label.entry(l.as_str()).or_default().push(i);
    }
    let benign = by_label.remove(flows.benign.as_str()).unwrap_or_default();
    if benign.len() < 4 {
        return Err(err(format!(
            "{} flows labelled {:?}: the protocol needs the site's benign traffic for its baseline and to score",
            benign.len(),
            flows.benign
        )));
    }
    let mut families = Vec::new();
    let mut skipped = Vec::new();
    let mut family_rows = Vec::new();
    for (label, rows) in by_label {
        if rows.len() > cfg.shots {
            families.push((label.to_string(), rows.len()));
            family_rows.push(rows);
        } else {
            skipped.push((label.to_string(), rows.len()));
        }
    }
    if families.is_empty() {
        return Err(err(format!(
            "no attack family has more than {} flows: nothing to enrol and score",
            cfg.shots
        )));
    }
    let row = |r: usize| &flows.embeddings[r * dim..(r + 1) * dim];
    let gather = |rows: &[usize]| -> Vec<f32> {
        rows.iter().flat_map(|&r| row(r).iter().copied()).collect()
    };

    let mut budgets: Vec<BudgetResult> = cfg
        .budgets
        .iter()
        .map(|&budget| BudgetResult {
            budget,
            refused: None,
            repeats: Vec::new(),
        })
        .collect();
    let mut adapted: Vec<BudgetResult> = if adapt.is_some() {
        budgets.clone()
    } else {
        Vec::new()
    };
    let mut forest: Option<Vec<BudgetResult>> = cfg.site_forest.then(|| budgets.clone());
    let mut without_baseline = model_reference.map(|r| BudgetResult {
        budget: r.fpr_budget,
        refused: None,
        repeats: Vec::new(),
    });
    for rep in 0..cfg.repeats {
        let seed = cfg
            .seed
            .wrapping_add((rep as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut b = benign.clone();
        b.shuffle(&mut rng);
        let n_base = ((cfg.baseline_share * b.len() as f64).round() as usize)
            .clamp(1, b.len() - 1)
            .min(cfg.baseline_max.max(1));
        let (base, benign_test) = (&b[..n_base], &b[n_base..]);
        let base_src: Vec<String> = base.iter().map(|&r| flows.sources[r].clone()).collect();
        // Support and scored rows of each family.
        let mut support = Vec::new();
        let mut scored = Vec::new();
        for rows in &family_rows {
            let mut r = rows.clone();
            r.shuffle(&mut rng);
            let (s, t) = r.split_at(cfg.shots);
            support.push(s.to_vec());
            scored.push(t.to_vec());
        }
        let draw = Draw {
            seed,
            base,
            base_src: &base_src,
            benign_test,
            support: &support,
            scored: &scored,
        };
        with_baseline(
            &flows.embeddings,
            dim,
            None,
            &draw,
            &families,
            cfg,
            &mut budgets,
        )?;
        let adapted_emb = match adapt {
            Some(adapt) => {
                let emb = adapt(base)?;
                if emb.len() != flows.embeddings.len() {
                    return Err(err(format!(
                        "the adaptation returned {} embedding values for {}",
                        emb.len(),
                        flows.embeddings.len()
                    )));
                }
                Some(emb)
            }
            None => None,
        };
        if let Some(emb) = &adapted_emb {
            with_baseline(emb, dim, None, &draw, &families, cfg, &mut adapted)?;
        }
        // The site forest decides unknowns with the adapted embeddings when there are some (as
        // `metaids baseline` does by default); the forest itself reads the model's preprocessed
        // rows, which a refit of the normaliser changes only by a monotone map per column.
        if let Some(results) = forest.as_mut() {
            let emb = adapted_emb.as_deref().unwrap_or(&flows.embeddings);
            let features = Some((flows.features.as_slice(), flows.feature_dim));
            with_baseline(emb, dim, features, &draw, &families, cfg, results)?;
        }
        // The same draws without a baseline: the model's own reference decides, threats enrolled
        // on it at its budget, as a library with no baseline does.
        if let (Some(reference), Some(res)) = (model_reference, without_baseline.as_mut()) {
            let (threats, guard_refused) = enrol_all(
                reference,
                &families,
                &support,
                &gather,
                reference.fpr_budget,
            )?;
            let decider = Decider::new(reference.clone(), threats, reference.unknown_threshold)
                .map_err(|e| err(format!("arming the threats: {e}")))?;
            let mut out = score(
                &|r| decider.decide(row(r)),
                benign_test,
                &scored,
                cfg.keep_verdicts,
            );
            out.calibration_rows = reference.calibration_rows();
            out.guard_refused = guard_refused;
            if cfg.keep_verdicts {
                out.support = support.clone();
            }
            res.repeats.push(out);
        }
    }
    Ok(SiteResult {
        config: cfg.clone(),
        benign_flows: benign.len(),
        families,
        skipped,
        without_baseline,
        budgets,
        adaptation: adapt_name.map(|name| (name, adapted)),
        forest,
    })
}

fn summary_of(repeats: &[RepeatOutcome], f: impl Fn(&RepeatOutcome) -> f64) -> Summary {
    Summary::of(&repeats.iter().map(f).collect::<Vec<_>>())
}

fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({"mean": s.mean, "ci95": s.ci95, "n": s.n})
}

impl SiteResult {
    /// Every result with the name of the rule that decided it (`model's (no baseline)`, `site
    /// baseline`, `site baseline + ADAPTATION`, `site baseline[ + ADAPTATION][ + source context] +
    /// site forest`), one per budget, in the report's order.
    pub fn results_by_rule(&self) -> Vec<(String, &BudgetResult)> {
        let with = self.forest_with();
        self.without_baseline
            .iter()
            .map(|b| ("model's (no baseline)".to_string(), b))
            .chain(
                self.budgets
                    .iter()
                    .map(|b| ("site baseline".to_string(), b)),
            )
            .chain(self.adaptation.iter().flat_map(|(name, bs)| {
                bs.iter()
                    .map(move |b| (format!("site baseline + {name}"), b))
            }))
            .chain(self.forest.iter().flat_map(|bs| {
                let with = with.clone();
                bs.iter()
                    .map(move |b| (format!("site baseline{with} + site forest"), b))
            }))
            .collect()
    }

    /// Every kept verdict ([`SiteConfig::keep_verdicts`]) and enrolled flow as CSV: `rule`,
    /// `budget`, `repeat`, `role` (`scored` or `enrolled`), `flow` (index into [`SiteFlows`]),
    /// `label`, `verdict` (`benign`, `threat`, `unknown`; empty for an enrolled flow), `named` (the
    /// family a threat verdict names), `correct` (a benign flow decided benign, or an attack flow
    /// named as its own family), then `columns` from `describe(flow)` (where the flow came from).
    pub fn verdicts_csv(
        &self,
        labels: &[String],
        columns: &[&str],
        describe: &dyn Fn(usize) -> Vec<String>,
    ) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec![
            "rule", "budget", "repeat", "role", "flow", "label", "verdict", "named", "correct",
        ];
        header.extend_from_slice(columns);
        w.write_record(&header)?;
        let label = |f: usize| labels.get(f).map_or("", String::as_str);
        let family: std::collections::HashSet<&str> =
            self.families.iter().map(|(n, _)| n.as_str()).collect();
        for (rule, b) in self.results_by_rule() {
            for (rep, o) in b.repeats.iter().enumerate() {
                for (fam, rows) in o.support.iter().enumerate() {
                    for &f in rows {
                        let mut record = vec![
                            rule.clone(),
                            b.budget.to_string(),
                            rep.to_string(),
                            "enrolled".to_string(),
                            f.to_string(),
                            label(f).to_string(),
                            String::new(),
                            self.families
                                .get(fam)
                                .map_or(String::new(), |(n, _)| n.clone()),
                            String::new(),
                        ];
                        record.extend(describe(f));
                        w.write_record(&record)?;
                    }
                }
                for v in &o.verdicts {
                    let named = v
                        .named
                        .and_then(|t| self.families.get(t))
                        .map_or("", |(n, _)| n.as_str());
                    let own = label(v.flow);
                    let correct = if family.contains(own) {
                        named == own
                    } else {
                        v.kind == VerdictKind::Benign
                    };
                    let kind = match v.kind {
                        VerdictKind::Benign => "benign",
                        VerdictKind::Threat => "threat",
                        VerdictKind::Unknown => "unknown",
                    };
                    let mut record = vec![
                        rule.clone(),
                        b.budget.to_string(),
                        rep.to_string(),
                        "scored".to_string(),
                        v.flow.to_string(),
                        own.to_string(),
                        kind.to_string(),
                        named.to_string(),
                        correct.to_string(),
                    ];
                    record.extend(describe(v.flow));
                    w.write_record(&record)?;
                }
            }
        }
        w.into_inner().map_err(|e| e.into_error().into())
    }

    /// What the site forest's rows were decided with besides the baseline: ` + ADAPTATION` when
    /// the draws were adapted (its unknown rule then reads the adapted embeddings), else nothing.
    fn forest_with(&self) -> String {
        let adapted = self
            .adaptation
            .as_ref()
            .map_or_else(String::new, |(name, _)| format!(" + {name}"));
        if self.config.source_context {
            adapted + " + source context"
        } else {
            adapted
        }
    }

    /// The report as Markdown.
    pub fn markdown(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "Site protocol: {} benign flows ({} share, at most {} flows, as the baseline window; the rest scored), {} attack families with {} flows enrolled each ({} seeded repeats, seed {}); per-source cap {}, {} benign prototypes\n",
            self.benign_flows,
            c.baseline_share,
            c.baseline_max,
            self.families.len(),
            c.shots,
            c.repeats,
            c.seed,
            c.profile.per_source_cap,
            c.profile.prototypes
        );
        if c.site_forest {
            s += if c.timing_shift.iter().all(|&v| v == 0.0) {
                "site forest fitted on the enrolled flows as they are (no timing jitter)\n"
            } else {
                "site forest fitted on the enrolled flows and their timing-jittered copies\n"
            };
        }
        s += &match c.profile.confidence {
            Some(conf) => format!(
                "budgets calibrated to hold with confidence {conf} (exact binomial upper bound on each half)\n"
            ),
            None if c.profile.in_sample => "budgets calibrated at the calibration rows' own rate (each half: ⌊h n⌋ rows above its threshold)\n".to_string(),
            None => "budgets calibrated at the split-conformal rank (each half h: ⌊h (n + 1)⌋ − 1 of the n calibration rows above its threshold)\n".to_string(),
        };
        for (name, n) in &self.skipped {
            s += &format!(
                "skipped {name}: {n} flows, fewer than the {} needed\n",
                c.shots + 1
            );
        }
        s += "\n| reference, budget | baseline flows (kept) | calibration rows | benign flagged | Wilson 95% (first repeat) | as threat | as unknown | macro recall, named | macro recall, any alert | macro-F1 (families + benign) | guard refusals |\n|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
        let rows = self
            .results_by_rule()
            .into_iter()
            .map(|(rule, b)| (format!("{rule}, {}", b.budget), b));
        for (name, b) in rows {
            if let Some(why) = &b.refused {
                s += &format!("| {name} | refused: {why} ||||||||||\n");
                continue;
            }
            let r = &b.repeats;
            let first = &r[0];
            let (lo, hi) = wilson95(first.benign_flagged() as u64, first.benign_scored as u64);
            s += &format!(
                "| {name} | {} ({}) | {} | {} | [{lo:.4}, {hi:.4}] | {} | {} | {} | {} | {} | {:.1} |\n",
                first.baseline_offered,
                first.baseline_kept,
                first.calibration_rows,
                summary_of(r, RepeatOutcome::benign_rate).display4(),
                summary_of(r, |o| o.benign_threat as f64
                    / o.benign_scored.max(1) as f64)
                .display4(),
                summary_of(r, |o| o.benign_unknown as f64
                    / o.benign_scored.max(1) as f64)
                .display4(),
                summary_of(r, RepeatOutcome::macro_named).display(),
                summary_of(r, RepeatOutcome::macro_any).display(),
                summary_of(r, RepeatOutcome::macro_f1).display(),
                r.iter().map(|o| o.guard_refused as f64).sum::<f64>() / r.len() as f64,
            );
        }
        let live: Vec<(String, &BudgetResult)> = self
            .without_baseline
            .iter()
            .map(|b| ("no baseline".to_string(), b))
            .chain(self.budgets.iter().map(|b| (format!("{}", b.budget), b)))
            .chain(self.adaptation.iter().flat_map(|(name, bs)| {
                bs.iter()
                    .map(move |b| (format!("{} + {name}", b.budget), b))
            }))
            .chain(self.forest.iter().flat_map(|bs| {
                let with = self.forest_with();
                bs.iter()
                    .map(move |b| (format!("{}{with} + site forest", b.budget), b))
            }))
            .filter(|(_, b)| b.refused.is_none())
            .collect();
        if !live.is_empty() {
            s += "\n| family | flows |";
            for (name, _) in &live {
                s += &format!(" named @ {name} | any alert @ {name} |");
            }
            s += "\n|---|---:|";
            s += &"---:|---:|".repeat(live.len());
            s += "\n";
            for (f, (name, n)) in self.families.iter().enumerate() {
                s += &format!("| {name} | {n} |");
                for (_, b) in &live {
                    let named = summary_of(&b.repeats, |o| {
                        o.families[f].named as f64 / o.families[f].scored.max(1) as f64
                    });
                    let any = summary_of(&b.repeats, |o| {
                        o.families[f].any as f64 / o.families[f].scored.max(1) as f64
                    });
                    s += &format!(" {} | {} |", named.display(), any.display());
                }
                s += "\n";
            }
        }
        s += "\n(mean ± 95% interval over the repeats; benign flagged = threat or unknown verdicts on scored benign flows; named = the family's flows decided as its own threat; macro-F1 = mean F1 over the families and benign, each scored flow's verdict read as a class — its threat or benign, an unknown verdict counting against its own class)\n";
        s
    }

    /// The report as JSON, every repeat's counts included.
    pub fn to_json(&self) -> serde_json::Value {
        let c = &self.config;
        let budget_json = |b: &BudgetResult| {
            let r = &b.repeats;
            serde_json::json!({
                "budget": b.budget,
                "refused": b.refused,
                "benign_flagged_rate": (!r.is_empty()).then(|| summary_json(&summary_of(r, RepeatOutcome::benign_rate))),
                "macro_recall_named": (!r.is_empty()).then(|| summary_json(&summary_of(r, RepeatOutcome::macro_named))),
                "macro_recall_any_alert": (!r.is_empty()).then(|| summary_json(&summary_of(r, RepeatOutcome::macro_any))),
                "macro_f1": (!r.is_empty()).then(|| summary_json(&summary_of(r, RepeatOutcome::macro_f1))),
                "repeats": r.iter().map(|o| {
                    let (lo, hi) = wilson95(o.benign_flagged() as u64, o.benign_scored as u64);
                    serde_json::json!({
                        "baseline_offered": o.baseline_offered,
                        "baseline_kept": o.baseline_kept,
                        "calibration_rows": o.calibration_rows,
                        "benign_scored": o.benign_scored,
                        "benign_threat": o.benign_threat,
                        "benign_unknown": o.benign_unknown,
                        "benign_flagged_wilson95": [lo, hi],
                        "guard_refused": o.guard_refused,
                        "families": self.families.iter().zip(&o.families).map(|((name, _), f)| serde_json::json!({
                            "family": name, "scored": f.scored, "named": f.named, "any_alert": f.any,
                            "wrongly_named": f.wrongly_named, "f1": f.f1(),
                        })).collect::<Vec<_>>(),
                    })
                }).collect::<Vec<_>>(),
            })
        };
        let budgets: Vec<serde_json::Value> = self.budgets.iter().map(budget_json).collect();
        serde_json::json!({
            "metaids_version": env!("CARGO_PKG_VERSION"),
            "protocol": {
                "name": "site",
                "description": "per repeat: a seeded share of the benign flows is the baseline window (the site profile, as metaids baseline learns it); K seeded flows of each family enrolled as one threat; threats calibrated jointly on the profile at the budget; every other flow decided; no flow both enrolled or in the baseline and scored",
                "shots": c.shots,
                "repeats": c.repeats,
                "seed": c.seed,
                "baseline_share": c.baseline_share,
                "baseline_max": c.baseline_max,
                "per_source_cap": c.profile.per_source_cap,
                "prototype_share": c.profile.prototype_share,
                "timing_jitter": !c.timing_shift.iter().all(|&v| v == 0.0),
                "benign_prototypes": c.profile.prototypes,
                "confidence": c.profile.confidence,
                "rank": if c.profile.confidence.is_some() { "binomial upper bound" } else if c.profile.in_sample { "in-sample" } else { "split-conformal" },
                "forced": c.force,
                "interval": "mean ± 95% Student t over repeats; Wilson 95% per repeat for the benign count",
            },
            "benign_flows": self.benign_flows,
            "families": self.families.iter().map(|(f, n)| serde_json::json!({"family": f, "flows": n})).collect::<Vec<_>>(),
            "skipped": self.skipped.iter().map(|(f, n)| serde_json::json!({"family": f, "flows": n})).collect::<Vec<_>>(),
            "budgets": budgets,
            "without_baseline": self.without_baseline.as_ref().map(budget_json),
            "adaptation": self.adaptation.as_ref().map(|(name, bs)| serde_json::json!({
                "name": name,
                "budgets": bs.iter().map(budget_json).collect::<Vec<_>>(),
            })),
            "site_forest": self.forest.as_ref().map(|bs| serde_json::json!({
                "description": "threats named by a histogram random forest fitted on the profile's prototype rows and the supports in feature space, calibrated on the profile's calibration rows at half the budget; the embedding's unknown rule at the other half",
                "adaptation": self.adaptation.as_ref().map(|(name, _)| name),
                "source_context": c.source_context,
                "budgets": bs.iter().map(budget_json).collect::<Vec<_>>(),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    /// 2-d flows: benign around the origin from 20 sources, two attack families far apart.
    fn flows(benign: usize) -> SiteFlows {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut embeddings = Vec::new();
        let mut labels = Vec::new();
        let mut sources = Vec::new();
        let mut push = |x: f32, y: f32, l: &str, s: String, e: &mut Vec<f32>| {
            e.extend([x, y]);
            labels.push(l.to_string());
            sources.push(s);
        };
        use rand::Rng;
        for i in 0..benign {
            let (x, y): (f32, f32) = (rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0));
            push(
                x,
                y,
                "benign",
                format!("10.0.0.{}", i % 20),
                &mut embeddings,
            );
        }
        for i in 0..40 {
            let j = rng.random_range(-0.3..0.3f32);
            push(
                20.0 + j,
                0.0,
                "scan",
                format!("10.9.0.{}", i % 2),
                &mut embeddings,
            );
            push(0.0, -20.0 + j, "flood", "10.9.1.1".into(), &mut embeddings);
        }
        push(50.0, 50.0, "rare", "10.9.2.2".into(), &mut embeddings);
        SiteFlows {
            embeddings,
            dim: 2,
            labels,
            sources,
            benign: "benign".into(),
            features: Vec::new(),
            feature_dim: 0,
        }
    }

    /// [`flows`] with a third family, `hidden`, whose embeddings sit inside the benign cloud, and
    /// feature rows: the embedding's two values and a third column, 0 for every flow but `hidden`'s
    /// (1) — a family the embedding cannot tell from the site's own traffic and a raw column can.
    fn hidden_flows(benign: usize) -> SiteFlows {
        let mut f = flows(benign);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        for i in 0..40 {
            let (x, y) = (
                rng.random_range(-1.0..1.0f32),
                rng.random_range(-1.0..1.0f32),
            );
            f.embeddings.extend([x, y]);
            f.labels.push("hidden".into());
            f.sources.push(format!("10.9.3.{}", i % 4));
        }
        f.feature_dim = 3;
        f.features = f
            .embeddings
            .chunks_exact(2)
            .zip(&f.labels)
            .flat_map(|(e, l)| [e[0], e[1], f32::from(l == "hidden")])
            .collect();
        f
    }

    #[test]
    fn macro_f1_reads_every_verdict_as_a_class() {
        let fam = |scored, named, any, wrongly_named| FamilyCounts {
            scored,
            named,
            any,
            wrongly_named,
        };
        // Two benign flows named as family 0, one unknown; family 0: 8 of 10 named, 9 flagged;
        // family 1: 18 of 20 named, one as family 0, all flagged.
        let o = RepeatOutcome {
            baseline_offered: 0,
            baseline_kept: 0,
            calibration_rows: 0,
            benign_scored: 100,
            benign_threat: 2,
            benign_unknown: 1,
            guard_refused: 0,
            families: vec![fam(10, 8, 9, 3), fam(20, 18, 20, 0)],
            verdicts: Vec::new(),
            support: Vec::new(),
        };
        let f0 = 16.0 / 21.0;
        let f1 = 36.0 / 38.0;
        // Benign: 97 decided benign, one attack flow decided benign, three benign flagged.
        let fb = 194.0 / 198.0;
        assert!((o.families[0].f1() - f0).abs() < 1e-12);
        assert!(
            (o.macro_f1() - (f0 + f1 + fb) / 3.0).abs() < 1e-12,
            "{}",
            o.macro_f1()
        );
        assert_eq!(fam(0, 0, 0, 0).f1(), 0.0);
    }

    #[test]
    fn the_site_forest_names_a_family_the_embedding_puts_among_the_benign_flows() {
        let cfg = SiteConfig {
            budgets: vec![0.05],
            repeats: 3,
            site_forest: true,
            ..SiteConfig::default()
        };
        let r = run(&hidden_flows(1200), &cfg, None, None).expect("run");
        let names: Vec<&str> = r.families.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, vec!["flood", "hidden", "scan"]);
        let hidden = 1;
        let forest = r.forest.as_ref().expect("forest rows");
        for (protos, trees) in r.budgets[0].repeats.iter().zip(&forest[0].repeats) {
            assert_eq!(protos.benign_scored, trees.benign_scored, "the same draws");
            // In the embedding the hidden family is benign traffic: its threat cannot name it
            // without flagging the benign flows around it.
            let h = &protos.families[hidden];
            assert!(h.named * 2 < h.scored, "{protos:?}");
            // The forest finds the column, names every family and keeps the budget (from 5
            // shots the hidden family's scores spread: at the conformal rank one repeat names 29
            // of its 35 flows, against fewer than half for the prototypes).
            for c in &trees.families {
                assert!(c.named * 10 >= c.scored * 8, "{trees:?}");
            }
            assert!(trees.benign_rate() < 0.12, "{trees:?}");
            // Each family's left-out flows are named by the forest: its guard accepts all three.
            assert_eq!(trees.guard_refused, 0, "{trees:?}");
        }
        assert!(r.markdown().contains("site baseline + site forest, 0.05"));
        assert!(r.to_json()["site_forest"]["budgets"][0]["macro_recall_named"].is_object());
        // Without feature rows the forest is refused, naming what is missing.
        let e = run(&flows(400), &cfg, None, None).expect_err("no features");
        assert!(e.to_string().contains("feature row"), "{e}");
    }

    #[test]
    fn separable_families_are_named_and_the_benign_budget_holds_in_expectation() {
        let cfg = SiteConfig {
            budgets: vec![0.05],
            repeats: 3,
            ..SiteConfig::default()
        };
        let r = run(&flows(1200), &cfg, None, None).expect("run");
        assert_eq!(r.families.len(), 2);
        assert_eq!(r.skipped, vec![("rare".to_string(), 1)]);
        let b = &r.budgets[0];
        assert!(b.refused.is_none());
        assert_eq!(b.repeats.len(), 3);
        for o in &b.repeats {
            // 600 baseline flows, the other 600 scored; 35 scored per family.
            assert_eq!(o.baseline_offered, 600);
            assert_eq!(o.benign_scored, 600);
            assert!(o.families.iter().all(|f| f.scored == 35));
            assert!(o.macro_named() > 0.99, "{o:?}");
            // Calibrated at 5% on held-in rows: held-out benign stays near it.
            assert!(o.benign_rate() < 0.12, "{o:?}");
        }
        let md = r.markdown();
        assert!(
            md.contains("| scan | 40 |") && md.contains("skipped rare"),
            "{md}"
        );
        let j = r.to_json();
        assert_eq!(j["budgets"][0]["repeats"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn kept_verdicts_agree_with_the_counts_and_write_as_csv() {
        let f = flows(1200);
        let cfg = SiteConfig {
            budgets: vec![0.05],
            repeats: 2,
            ..SiteConfig::default()
        };
        let plain = run(&f, &cfg, None, None).expect("run");
        assert!(plain.budgets[0].repeats[0].verdicts.is_empty());
        let keep = SiteConfig {
            keep_verdicts: true,
            ..cfg
        };
        let r = run(&f, &keep, None, None).expect("run");
        for (o, p) in r.budgets[0].repeats.iter().zip(&plain.budgets[0].repeats) {
            // Keeping verdicts changes no figure.
            assert_eq!(
                (o.benign_threat, o.benign_unknown),
                (p.benign_threat, p.benign_unknown)
            );
            assert_eq!(o.families, p.families);
            let scored: usize = o.families.iter().map(|c| c.scored).sum();
            assert_eq!(o.verdicts.len(), o.benign_scored + scored);
            let flagged = o.verdicts[..o.benign_scored]
                .iter()
                .filter(|v| v.kind != VerdictKind::Benign)
                .count();
            assert_eq!(flagged, o.benign_flagged());
            for (fam, c) in o.families.iter().enumerate() {
                let named = o
                    .verdicts
                    .iter()
                    .filter(|v| f.labels[v.flow] == r.families[fam].0 && v.named == Some(fam))
                    .count();
                assert_eq!(named, c.named);
            }
            assert_eq!(o.support.len(), r.families.len());
            assert!(o.support.iter().all(|s| s.len() == keep.shots));
        }
        let csv = r
            .verdicts_csv(&f.labels, &["where"], &|i| vec![format!("flow {i}")])
            .expect("csv");
        let text = String::from_utf8(csv).expect("utf8");
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("rule,budget,repeat,role,flow,label,verdict,named,correct,where")
        );
        let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
        let o = &r.budgets[0].repeats;
        let scored: usize = o.iter().map(|o| o.verdicts.len()).sum();
        let enrolled = 2 * r.families.len() * keep.shots;
        assert_eq!(rows.len(), scored + enrolled);
        // Correct rows: benign decided benign plus each family's named flows.
        let correct = rows
            .iter()
            .filter(|c| c[3] == "scored" && c[8] == "true")
            .count();
        let expected: usize = o
            .iter()
            .map(|o| {
                o.benign_scored - o.benign_flagged()
                    + o.families.iter().map(|c| c.named).sum::<usize>()
            })
            .sum();
        assert_eq!(correct, expected);
        assert!(rows
            .iter()
            .all(|c| c[0] == "site baseline" && c[9].starts_with("flow ")));
    }

    #[test]
    fn a_budget_the_window_cannot_support_is_reported_refused_with_what_it_needs() {
        // 200 baseline flows: 150 calibration rows support 10/150 ≈ 0.067, not 0.001.
        let cfg = SiteConfig {
            budgets: vec![0.1, 0.001],
            repeats: 2,
            ..SiteConfig::default()
        };
        let r = run(&flows(400), &cfg, None, None).expect("run");
        assert!(r.budgets[0].refused.is_none());
        let why = r.budgets[1].refused.as_deref().expect("refused");
        assert!(why.contains("10000 calibration rows"), "{why}");
        assert!(r.budgets[1].repeats.is_empty());
        assert!(r.markdown().contains("refused"));
    }

    #[test]
    fn the_protocol_is_seeded() {
        let cfg = SiteConfig {
            budgets: vec![0.05],
            repeats: 2,
            ..SiteConfig::default()
        };
        let f = flows(600);
        assert_eq!(
            run(&f, &cfg, None, None).expect("a"),
            run(&f, &cfg, None, None).expect("b")
        );
        let other = SiteConfig { seed: 7, ..cfg };
        assert_ne!(
            run(&f, &other, None, None).expect("c").budgets[0].repeats,
            run(
                &f,
                &SiteConfig {
                    seed: 8,
                    ..other.clone()
                },
                None,
                None
            )
            .expect("d")
            .budgets[0]
                .repeats
        );
    }

    #[test]
    fn without_a_baseline_a_reference_from_elsewhere_floods_and_the_baseline_fixes_it() {
        // The model's benign reference sits at (5, 5); the site's benign flows around the origin.
        let cal: Vec<f32> = (0..400)
            .flat_map(|i| [5.0 + (i % 20) as f32 * 0.05, 5.0 + (i / 20) as f32 * 0.05])
            .collect();
        let model_ref = BenignReference::new(2, vec![5.5, 5.5], cal, 0.01);
        let cfg = SiteConfig {
            budgets: vec![0.05],
            repeats: 2,
            ..SiteConfig::default()
        };
        let r = run(&flows(1200), &cfg, Some(&model_ref), None).expect("run");
        let without = r.without_baseline.as_ref().expect("without baseline");
        let with = &r.budgets[0];
        for (a, b) in without.repeats.iter().zip(&with.repeats) {
            assert_eq!(a.benign_scored, b.benign_scored, "the same draws");
            assert!(a.benign_rate() > 0.5, "{a:?}");
            assert!(b.benign_rate() < 0.12, "{b:?}");
        }
        let md = r.markdown();
        assert!(md.contains("model's (no baseline), 0.01"), "{md}");
        assert!(r.to_json()["without_baseline"]["repeats"].is_array());
    }

    #[test]
    fn an_adaptation_sees_only_the_baseline_window_and_its_rows_are_reported() {
        let f = flows(600);
        let cfg = SiteConfig {
            budgets: vec![0.1],
            repeats: 2,
            ..SiteConfig::default()
        };
        let seen = std::cell::RefCell::new(Vec::new());
        let identity = |base: &[usize]| -> Result<Vec<f32>, EvalError> {
            seen.borrow_mut().push(base.to_vec());
            Ok(f.embeddings.clone())
        };
        let r = run(&f, &cfg, None, Some(("identity", &identity))).expect("run");
        let (name, adapted) = r.adaptation.as_ref().expect("adapted");
        assert_eq!(name, "identity");
        // The identity adaptation decides exactly as no adaptation.
        assert_eq!(adapted, &r.budgets);
        // It was given the baseline window: benign rows only, 300 of them, in each repeat.
        let seen = seen.borrow();
        assert_eq!(seen.len(), 2);
        for base in seen.iter() {
            assert_eq!(base.len(), 300);
            assert!(base.iter().all(|&i| f.labels[i] == "benign"));
        }
        assert!(r.markdown().contains("site baseline + identity, 0.1"));
        assert_eq!(r.to_json()["adaptation"]["name"], "identity");
    }

    #[test]
    fn bad_inputs_are_refused() {
        let mut f = flows(600);
        f.benign = "normal".into();
        assert!(run(&f, &SiteConfig::default(), None, None).is_err());
        let f = flows(600);
        let cfg = SiteConfig {
            shots: 100,
            ..SiteConfig::default()
        };
        assert!(run(&f, &cfg, None, None).is_err());
        let cfg = SiteConfig {
            baseline_share: 1.0,
            ..SiteConfig::default()
        };
        assert!(run(&f, &cfg, None, None).is_err());
    }
}
