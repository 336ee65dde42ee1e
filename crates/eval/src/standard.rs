//! The NSL-KDD standard split (`metaids standard`). A model meta-trained on KDDTrain+ only (validation
//! families held out from KDDTrain+ choose the kept weights and the known-family prototypes) labels
//! every KDDTest+ row benign or attack, with no shots and with a few flows of each test-only family
//! enrolled; the forest baseline of `metaids-eval` runs under the same protocol.
//!
//! Rules (`d` squared distance, `B` benign prototypes, `A` known-family prototypes, `P_f` enrolled
//! prototypes, `C` the model's held-out KDDTrain+ benign calibration rows, `α` the model's budget), two
//! of them reported side by side:
//!
//! * **τ per prototype** (the headline rule): attack iff `min d(x, B) − d(x, p) > τ_p` for some
//!   `p ∈ A ∪ P` (the model's union rule, [`BenignReference::enrol_union`]: `τ_p = m_p + t σ_p`, `m_p`
//!   and `σ_p` the median and tail spread of the prototype's margin over `C`, `t` one common level
//!   such that the union of the prototype rules flags at most `α/2` of `C`), or
//!   `min d(x, B ∪ A ∪ P) > u`;
//! * **one shared τ** (the earlier rule): attack iff `min d(x, B) − min d(x, A ∪ P) > τ` or
//!   `min d(x, B ∪ A ∪ P) > u`, `τ` the upper quantile at `α/2` of the margin over `C`.
//!
//! `u` is the upper quantile at `α/2` of `min d(c, B ∪ A ∪ P)` over `C`, so either rule flags at most
//! `α` of `C`. Thresholds are recomputed after enrolment. The per-prototype rule is chosen a priori:
//! with one shared `τ`, a prototype close to the benign rows lifts the threshold of every other; no
//! KDDTest+ row is used for training, calibration or any choice, and the enrolled rows are excluded
//! from scoring. This module holds the protocol and its report; the CLI loads the files, trains or loads the
//! model and prints.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use metaids_core::episode::seeded_subsample;
use metaids_core::metrics::Summary;
use metaids_core::split::Split;
use metaids_core::FlowFrame;
use metaids_decide::geometry::{kmeans, mean_row, nearest, upper_quantile};
use metaids_decide::BenignReference;
use metaids_model::{ScoringKernel, Scratch, ThreatModel, TrainConfig};

use crate::forest::{BinnedData, ForestConfig, RandomForest};
use crate::{BaselineConfig, EvalError};

/// Seen families held out from KDDTrain+ for model selection (those of `splits/nsl-kdd.toml`).
pub const VALIDATION: [&str; 3] = ["back", "portsweep", "warezclient"];
/// The benign label.
pub const BENIGN: &str = "normal";

/// Which rows are where.
#[derive(Debug, Clone)]
pub struct Rows {
    /// KDDTrain+ rows.
    pub train: Vec<usize>,
    /// KDDTest+ rows.
    pub test: Vec<usize>,
    /// Families found only in KDDTest+, with their test rows.
    pub test_only: BTreeMap<String, Vec<usize>>,
}

/// Binary counts over a set of rows, with per-family recall.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// Attacks flagged.
    pub tp: usize,
    /// Attacks missed.
    pub fn_: usize,
    /// Benign rows flagged.
    pub fp: usize,
    /// Benign rows passed.
    pub tn: usize,
    /// family → (flagged, rows)
    pub per_family: BTreeMap<String, (usize, usize)>,
}

impl Outcome {
    fn of(frame: &FlowFrame, rows: &[usize], flagged: &[bool]) -> Self {
        let mut o = Outcome::default();
        for (&r, &f) in rows.iter().zip(flagged) {
            let label = frame.label(r);
            let attack = label != BENIGN;
            match (attack, f) {
                (true, true) => o.tp += 1,
                (true, false) => o.fn_ += 1,
                (false, true) => o.fp += 1,
                (false, false) => o.tn += 1,
            }
            let e = o.per_family.entry(label.to_string()).or_default();
            e.0 += usize::from(f);
            e.1 += 1;
        }
        o
    }
    /// Rows scored.
    pub fn n(&self) -> usize {
        self.tp + self.fn_ + self.fp + self.tn
    }
    /// (tp + tn) / n.
    pub fn accuracy(&self) -> f64 {
        (self.tp + self.tn) as f64 / self.n().max(1) as f64
    }
    /// tp / attacks.
    pub fn detection(&self) -> f64 {
        self.tp as f64 / (self.tp + self.fn_).max(1) as f64
    }
    /// fp / benign rows.
    pub fn fpr(&self) -> f64 {
        self.fp as f64 / (self.fp + self.tn).max(1) as f64
    }
}

/// Splits the frame's rows by file (KDDTrain+ / KDDTest+).
pub fn rows_by_file(frame: &FlowFrame) -> Result<Rows, EvalError> {
    let role: Vec<Option<bool>> = frame
        .files
        .iter()
        .map(|f| {
            let name = Path::new(&f.path)
                .file_name()
                .map(|n| n.to_string_lossy().to_string())
                .unwrap_or_default();
            if name.starts_with("KDDTest+") {
                Some(true)
            } else if name.starts_with("KDDTrain+") && !name.contains("20Percent") {
                Some(false)
            } else {
                None
            }
        })
        .collect();
    let (mut train, mut test) = (Vec::new(), Vec::new());
    for (r, s) in frame.sources.iter().enumerate() {
        match role.get(s.file as usize).copied().flatten() {
            Some(true) => test.push(r),
            Some(false) => train.push(r),
            None => {}
        }
    }
    if train.is_empty() || test.is_empty() {
        return Err(protocol_error(format!(
            "the standard split needs KDDTrain+.txt and KDDTest+.txt; read {} training and {} test rows",
            train.len(),
            test.len()
        )));
    }
    let train_families: BTreeSet<&str> = train.iter().map(|&r| frame.label(r)).collect();
    let mut test_only: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &r in &test {
        let l = frame.label(r);
        if !train_families.contains(l) {
            test_only.entry(l.to_string()).or_default().push(r);
        }
    }
    Ok(Rows {
        train,
        test,
        test_only,
    })
}

/// The training split: KDDTrain+ only (benign pool, seen and validation families); no query pool and
/// no novel family, so nothing of KDDTest+ can reach training.
pub fn training_split(frame: &FlowFrame, rows: &Rows) -> Split {
    let mut split = Split {
        benign: BENIGN.into(),
        benign_train: Vec::new(),
        benign_query: Vec::new(),
        seen: BTreeMap::new(),
        validation: BTreeMap::new(),
        novel: BTreeMap::new(),
        absent: Vec::new(),
    };
    for &r in &rows.train {
        let l = frame.label(r);
        if l == BENIGN {
            split.benign_train.push(r);
        } else if VALIDATION.contains(&l) {
            split.validation.entry(l.to_string()).or_default().push(r);
        } else {
            split.seen.entry(l.to_string()).or_default().push(r);
        }
    }
    split
}

/// The detector's distances for one set of embeddings.
struct Distances {
    /// To the nearest benign prototype.
    benign: Vec<f32>,
    /// To the nearest known-family prototype.
    known: Vec<f32>,
}

fn distances(emb: &[f32], dim: usize, benign: &[f32], known: &[f32]) -> Distances {
    Distances {
        benign: emb
            .chunks_exact(dim)
            .map(|x| nearest(x, benign, dim).1)
            .collect(),
        known: emb
            .chunks_exact(dim)
            .map(|x| nearest(x, known, dim).1)
            .collect(),
    }
}

/// How the attack prototypes are thresholded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// One threshold on `min d(x, B) − min d(x, A ∪ P)`.
    Shared,
    /// A threshold per prototype, one union budget (the model's union rule).
    PerPrototype,
}

/// What [`detect`] found, with its thresholds.
#[derive(Debug, Clone)]
pub struct Detection {
    /// Per row: flagged as attack.
    pub flags: Vec<bool>,
    /// The shared threshold `τ` ([`Rule::Shared`]).
    pub tau: Option<f32>,
    /// The common standardised level `t` of the per-prototype thresholds ([`Rule::PerPrototype`]).
    pub level: Option<f32>,
    /// The unknown threshold `u`.
    pub u: f32,
}

/// Flags of rows with embeddings `emb` (distances `d` to the benign and known prototypes `known`),
/// with the enrolled prototypes `extra`, under `rule` calibrated on `reference`'s calibration rows
/// (distances `c`) at `α/2` for the prototype rules and `α/2` for the unknown rule.
fn detect(
    reference: &BenignReference,
    c: &Distances,
    d: &Distances,
    emb: &[f32],
    known: &[f32],
    extra: &[f32],
    rule: Rule,
) -> Detection {
    let dim = reference.dim;
    let half = reference.fpr_budget / 2.0;
    let attack_dist = |dk: f32, x: &[f32]| dk.min(nearest(x, extra, dim).1);
    let cal = &reference.calibration;
    let mut s_cal = Vec::with_capacity(c.benign.len());
    let mut v_cal = Vec::with_capacity(c.benign.len());
    for ((&db, &dk), x) in c.benign.iter().zip(&c.known).zip(cal.chunks_exact(dim)) {
        let da = attack_dist(dk, x);
        s_cal.push(db - da);
        v_cal.push(db.min(da));
    }
    let u = upper_quantile(&mut v_cal, half);
    let rows = d.benign.iter().zip(&d.known).zip(emb.chunks_exact(dim));
    match rule {
        Rule::Shared => {
            let tau = upper_quantile(&mut s_cal, half);
            let flags = rows
                .map(|((&db, &dk), x)| {
                    let da = attack_dist(dk, x);
                    db - da > tau || db.min(da) > u
                })
                .collect();
            Detection {
                flags,
                tau: Some(tau),
                level: None,
                u,
            }
        }
        Rule::PerPrototype => {
            let centres: Vec<f32> = known.iter().chain(extra).copied().collect();
            let (protos, t) = reference.enrol_union(&centres, half);
            let flags = rows
                .map(|((&db, &dk), x)| {
                    reference.flags_any_at(x, db, &protos) || db.min(attack_dist(dk, x)) > u
                })
                .collect();
            Detection {
                flags,
                tau: None,
                level: Some(t),
                u,
            }
        }
    }
}

/// The forest baseline's capped training sample (as `metaids-eval`'s: at most `max_benign` benign
/// training rows and `max_per_family` rows per training family, seeded), labels and the mean family
/// size in it.
fn forest_sample(split: &Split, cfg: &BaselineConfig, seed: u64) -> (Vec<usize>, Vec<u32>, f64) {
    let mut rows: Vec<(usize, u32)> = seeded_subsample(&split.benign_train, cfg.max_benign, seed)
        .into_iter()
        .map(|r| (r, 0))
        .collect();
    let families: BTreeMap<&String, &Vec<usize>> =
        split.seen.iter().chain(&split.validation).collect();
    let mut attack = 0usize;
    for (i, fam) in families.values().enumerate() {
        let sub = seeded_subsample(fam, cfg.max_per_family, seed.wrapping_add(1 + i as u64));
        attack += sub.len();
        rows.extend(sub.into_iter().map(|r| (r, 1)));
    }
    rows.sort_unstable();
    let mean = attack as f64 / families.len().max(1) as f64;
    let (r, y) = rows.into_iter().unzip();
    (r, y, mean)
}

/// Seed of the enrolment draw of family `i` in repeat `rep`.
fn draw_seed(seed: u64, rep: usize, i: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((rep as u64) << 20)
        .wrapping_add(i as u64)
}

fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({"mean": s.mean, "ci95": s.ci95, "n": s.n})
}

fn outcome_json(o: &Outcome, test_only: &BTreeMap<String, Vec<usize>>) -> serde_json::Value {
    let fams: Vec<serde_json::Value> = o
        .per_family
        .iter()
        .map(|(f, (hit, n))| {
            serde_json::json!({
                "family": f,
                "rows": n,
                "flagged": hit,
                "rate": *hit as f64 / (*n).max(1) as f64,
                "test_only": test_only.contains_key(f),
            })
        })
        .collect();
    serde_json::json!({
        "rows": o.n(), "accuracy": o.accuracy(), "detection_rate": o.detection(), "fpr": o.fpr(),
        "tp": o.tp, "fn": o.fn_, "fp": o.fp, "tn": o.tn, "per_family": fams,
    })
}

/// Per-family mean rate over repeats.
pub fn mean_rates(outcomes: &[Outcome]) -> BTreeMap<String, (f64, usize)> {
    let mut m: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for o in outcomes {
        for (f, (hit, n)) in &o.per_family {
            let e = m.entry(f.clone()).or_default();
            e.0 += *hit as f64 / (*n).max(1) as f64;
            e.1 += 1;
        }
    }
    m.into_iter()
        .map(|(f, (s, k))| (f, (s / k.max(1) as f64, k)))
        .collect()
}

/// The rules reported, headline first.
pub const RULES: [(Rule, &str); 2] = [
    (Rule::PerPrototype, "τ per prototype"),
    (Rule::Shared, "one shared τ"),
];

/// One rule's outcomes.
#[derive(Debug, Clone)]
pub struct RuleResult {
    /// The rule's name in tables.
    pub name: &'static str,
    /// No shots.
    pub zero: Outcome,
    /// No shots: flags and thresholds.
    pub zero_detection: Detection,
    /// Per repeat, with the enrolled rows excluded from scoring.
    pub enrolled: Vec<Outcome>,
    /// The per-prototype level `t` of each enrolled repeat ([`Rule::PerPrototype`]).
    pub levels: Vec<f32>,
}

/// The model's known-family prototypes, or (for a model that kept none) four k-means prototypes per
/// KDDTrain+ attack family.
fn known_prototypes(
    model: &ThreatModel,
    frame: &FlowFrame,
    split: &Split,
) -> Result<Vec<f32>, EvalError> {
    if model.reference.known_prototypes() > 0 {
        return Ok(model.reference.known.clone());
    }
    let dim = model.dim();
    let mut out = Vec::new();
    for (i, rows) in split
        .seen
        .values()
        .chain(split.validation.values())
        .enumerate()
    {
        let sub = seeded_subsample(rows, 2000, 0x6b6e ^ i as u64);
        let emb = model.embed_rows(frame, &sub).map_err(model_error)?;
        out.extend(kmeans(&emb, dim, 4, 30, 0x6b61 ^ i as u64));
    }
    Ok(out)
}

/// The forest baseline's outcomes: no shots, then per enrolled repeat.
pub type ForestOutcome = (Outcome, Vec<Outcome>);

/// The forest baseline: zero-shot on the capped KDDTrain+ sample, and refit per repeat with the
/// enrolled rows added as attacks (weighted so the enrolled rows of one family count as one average
/// training family).
fn forest_baseline(
    model: &ThreatModel,
    frame: &FlowFrame,
    split: &Split,
    rows: &Rows,
    x_test: &[f32],
    draws: &[Vec<usize>],
    seed: u64,
) -> Result<ForestOutcome, EvalError> {
    let cfg = BaselineConfig::default();
    let fc: ForestConfig = cfg.forest;
    let d = model.normaliser.output_dim();
    let (train_rows, y, mean_family) = forest_sample(split, &cfg, seed);
    let x_train = model.normaliser.transform(frame, &train_rows)?;
    let data = BinnedData::new(&x_train, d, fc.bins);
    let w = vec![1f32; y.len()];
    let forest = RandomForest::fit(&data, &y, &w, 2, &fc, seed);
    let predict = |f: &RandomForest, keep: &[usize]| -> Vec<bool> {
        keep.iter()
            .map(|&i| f.predict(&x_test[i * d..(i + 1) * d]) == 1)
            .collect()
    };
    let all: Vec<usize> = (0..rows.test.len()).collect();
    let zero = Outcome::of(frame, &rows.test, &predict(&forest, &all));
    let slot: BTreeMap<usize, usize> = rows.test.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let mut enrolled = Vec::new();
    for (rep, support) in draws.iter().enumerate() {
        let mut extra = Vec::with_capacity(support.len() * d);
        for r in support {
            let i = slot[r];
            extra.extend_from_slice(&x_test[i * d..(i + 1) * d]);
        }
        let data = data.with_rows(&extra);
        let mut yy = y.clone();
        yy.extend(std::iter::repeat_n(1, support.len()));
        let mut ww = w.clone();
        // Rows per enrolled family: shots (fewer for tiny families); weight as in forest+shots.
        let per_family = support.len() as f64 / rows.test_only.len().max(1) as f64;
        let sw = (mean_family / per_family.max(1.0)).max(1.0) as f32;
        ww.extend(std::iter::repeat_n(sw, support.len()));
        let f = RandomForest::fit(&data, &yy, &ww, 2, &fc, draw_seed(seed, rep, 999));
        let keep: Vec<usize> = (0..rows.test.len())
            .filter(|&i| support.binary_search(&rows.test[i]).is_err())
            .collect();
        let scored: Vec<usize> = keep.iter().map(|&i| rows.test[i]).collect();
        enrolled.push(Outcome::of(frame, &scored, &predict(&f, &keep)));
    }
    Ok((zero, enrolled))
}

fn protocol_error(message: String) -> EvalError {
    EvalError::Method {
        method: "standard split".into(),
        message,
    }
}

fn model_error(e: metaids_model::ModelError) -> EvalError {
    protocol_error(e.to_string())
}

/// The protocol's settings.
#[derive(Debug, Clone, Copy)]
pub struct StandardConfig {
    /// Flows enrolled per test-only family (fewer when it has fewer).
    pub enrol_shots: usize,
    /// Seeded enrolment draws.
    pub repeats: usize,
    /// Seed of the draws and of the forest.
    pub seed: u64,
    /// Run the forest baseline.
    pub forest: bool,
}

/// The training settings of a model for this protocol: the defaults, with known-family
/// prototypes always kept (how many per family and the budget share are chosen on the
/// validation families).
pub fn training_config(seed: u64, steps: Option<usize>) -> TrainConfig {
    let defaults = TrainConfig::default();
    TrainConfig {
        seed,
        steps: steps.unwrap_or(defaults.steps),
        known_per_family: vec![1, 2, 4, 8],
        ..defaults
    }
}

/// Refuses a model trained on anything but KDDTrain+ (the test file, or the 20% subset), naming
/// the file.
pub fn check_trained_on_train_only(model: &ThreatModel) -> Result<(), EvalError> {
    match model
        .record
        .provenance
        .files
        .iter()
        .find(|f| !f.path.contains("KDDTrain+") || f.path.contains("20Percent"))
    {
        Some(f) => Err(protocol_error(format!(
            "the model was trained on {} as well as KDDTrain+: the standard split needs a model trained on KDDTrain+ only (run `metaids standard --save-model DIR`)",
            f.path
        ))),
        None => Ok(()),
    }
}

/// Everything the protocol measured.
#[derive(Debug, Clone)]
pub struct StandardResult {
    /// The rows of each file and the test-only families.
    pub rows: Rows,
    /// One entry per rule of [`RULES`], in that order.
    pub rules: Vec<RuleResult>,
    /// The forest baseline, when run.
    pub forest: Option<ForestOutcome>,
    /// Known-family prototypes used.
    pub known_prototypes: usize,
    /// The model's held-out benign calibration rows.
    pub calibration_rows: usize,
    /// The model's FPR budget α.
    pub fpr_budget: f64,
    /// Seconds to embed KDDTest+ with the scoring kernel.
    pub embed_seconds: f64,
    /// The settings.
    pub config: StandardConfig,
}

/// Runs the protocol on a frame holding KDDTrain+ and KDDTest+ with a model trained on
/// KDDTrain+ only ([`check_trained_on_train_only`]).
pub fn run(
    frame: &FlowFrame,
    model: &ThreatModel,
    cfg: StandardConfig,
) -> Result<StandardResult, EvalError> {
    if cfg.enrol_shots == 0 || cfg.repeats == 0 {
        return Err(protocol_error(
            "--enrol-shots and --repeats must be at least 1".into(),
        ));
    }
    let rows = rows_by_file(frame)?;
    let split = training_split(frame, &rows);
    model.check_layout(&frame.layout).map_err(model_error)?;
    let dim = model.dim();
    let known = known_prototypes(model, frame, &split)?;

    // Embed every KDDTest+ row with the scoring kernel.
    let t = Instant::now();
    let x = model.normaliser.transform(frame, &rows.test)?;
    let kernel = ScoringKernel::for_model(model).map_err(model_error)?;
    let mut emb = vec![0f32; rows.test.len() * dim];
    kernel
        .embed_into(&x, &mut Scratch::default(), &mut emb)
        .map_err(model_error)?;
    let embed_seconds = t.elapsed().as_secs_f64();
    let slot: BTreeMap<usize, usize> = rows.test.iter().enumerate().map(|(i, &r)| (r, i)).collect();
    let reference = &model.reference;
    let c = distances(&reference.calibration, dim, &reference.prototypes, &known);
    let d = distances(&emb, dim, &reference.prototypes, &known);

    // Zero-shot, per rule.
    let mut results: Vec<RuleResult> = RULES
        .iter()
        .map(|&(rule, name)| {
            let z = detect(reference, &c, &d, &emb, &known, &[], rule);
            RuleResult {
                name,
                zero: Outcome::of(frame, &rows.test, &z.flags),
                zero_detection: z,
                enrolled: Vec::new(),
                levels: Vec::new(),
            }
        })
        .collect();

    // Enrolled, over repeats (the same draws for every rule and the forest).
    let mut draws: Vec<Vec<usize>> = Vec::new();
    for rep in 0..cfg.repeats {
        let mut support = Vec::new();
        let mut protos = Vec::new();
        for (i, fam) in rows.test_only.values().enumerate() {
            let s = seeded_subsample(fam, cfg.enrol_shots, draw_seed(cfg.seed, rep, i));
            let mut se = Vec::with_capacity(s.len() * dim);
            for r in &s {
                se.extend_from_slice(&emb[slot[r] * dim..(slot[r] + 1) * dim]);
            }
            protos.extend(mean_row(&se, dim));
            support.extend(s);
        }
        support.sort_unstable();
        let keep: Vec<usize> = (0..rows.test.len())
            .filter(|&i| support.binary_search(&rows.test[i]).is_err())
            .collect();
        let scored: Vec<usize> = keep.iter().map(|&i| rows.test[i]).collect();
        for (r, &(rule, _)) in results.iter_mut().zip(&RULES) {
            let det = detect(reference, &c, &d, &emb, &known, &protos, rule);
            let f: Vec<bool> = keep.iter().map(|&i| det.flags[i]).collect();
            r.enrolled.push(Outcome::of(frame, &scored, &f));
            r.levels.extend(det.level);
        }
        draws.push(support);
    }

    // Forest baseline, same rows and draws.
    let forest = if cfg.forest {
        Some(forest_baseline(
            model, frame, &split, &rows, &x, &draws, cfg.seed,
        )?)
    } else {
        None
    };
    Ok(StandardResult {
        known_prototypes: known.len() / dim.max(1),
        calibration_rows: reference.calibration_rows(),
        fpr_budget: reference.fpr_budget,
        rows,
        rules: results,
        forest,
        embed_seconds,
        config: cfg,
    })
}

fn summ(os: &[Outcome], f: fn(&Outcome) -> f64) -> Summary {
    Summary::of(&os.iter().map(f).collect::<Vec<_>>())
}

impl StandardResult {
    /// The report as markdown: the headline table (accuracy, detection rate, FPR per detector)
    /// and the per-family table.
    pub fn markdown(&self) -> String {
        use std::fmt::Write as _;
        let rows = &self.rows;
        let shots = self.config.enrol_shots;
        let mut s = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            s,
            "NSL-KDD standard split: trained on KDDTrain+ ({} rows), tested on KDDTest+ ({} rows; {} test-only families, {} rows)",
            rows.train.len(),
            rows.test.len(),
            rows.test_only.len(),
            rows.test_only.values().map(Vec::len).sum::<usize>()
        );
        let _ = writeln!(
            s,
            "enrolled: {shots} flows of each test-only family (fewer when it has fewer), excluded from scoring; {} seeds; FPR budget {} on {} held-out KDDTrain+ benign rows; {} known prototypes\n",
            self.config.repeats, self.fpr_budget, self.calibration_rows, self.known_prototypes
        );
        s.push_str("| detector | accuracy | detection rate | FPR |\n|---|---|---|---|\n");
        let line = |s: &mut String, name: &str, z: &Outcome| {
            let _ = writeln!(
                s,
                "| {name} | {:.4} | {:.4} | {:.4} |",
                z.accuracy(),
                z.detection(),
                z.fpr()
            );
        };
        let line_e = |s: &mut String, name: &str, os: &[Outcome]| {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} |",
                summ(os, Outcome::accuracy).display(),
                summ(os, Outcome::detection).display(),
                summ(os, Outcome::fpr).display()
            );
        };
        for r in &self.rules {
            line(&mut s, &format!("model ({}), no shots", r.name), &r.zero);
            line_e(
                &mut s,
                &format!("model ({}), {shots} enrolled", r.name),
                &r.enrolled,
            );
        }
        if let Some((fz, fe)) = &self.forest {
            line(&mut s, "random forest, no shots", fz);
            line_e(&mut s, &format!("random forest, {shots} enrolled"), fe);
        }
        let model_rates: Vec<BTreeMap<String, (f64, usize)>> =
            self.rules.iter().map(|r| mean_rates(&r.enrolled)).collect();
        let forest_rates = self.forest.as_ref().map(|(_, fe)| mean_rates(fe));
        let mut head = String::from("\n| family | test rows | test-only |");
        for r in &self.rules {
            head += &format!(" model ({0}) no shots | model ({0}) enrolled |", r.name);
        }
        head += " forest no shots | forest enrolled |\n|---|---:|---|";
        head += &"---:|".repeat(2 * self.rules.len() + 2);
        let _ = writeln!(s, "{head}");
        let rate = |h: usize, n: usize| format!("{:.3}", h as f64 / n.max(1) as f64);
        let Some(first) = self.rules.first() else {
            return s;
        };
        for (fam, n) in first.zero.per_family.iter().map(|(f, &(_, n))| (f, n)) {
            let mut model_cols = String::new();
            for (r, m) in self.rules.iter().zip(&model_rates) {
                let z = r.zero.per_family.get(fam).map_or(0, |&(h, _)| h);
                let e = m.get(fam).map_or("-".into(), |(x, _)| format!("{x:.3}"));
                model_cols += &format!(" {} | {e} |", rate(z, n));
            }
            let fz = self
                .forest
                .as_ref()
                .and_then(|(fz, _)| fz.per_family.get(fam))
                .map_or("-".into(), |&(h, n)| rate(h, n));
            let fe = forest_rates
                .as_ref()
                .and_then(|m| m.get(fam))
                .map_or("-".into(), |(r, _)| format!("{r:.3}"));
            let test_only = if rows.test_only.contains_key(fam) {
                "yes"
            } else {
                ""
            };
            let _ = writeln!(s, "| {fam} | {n} | {test_only} |{model_cols} {fz} | {fe} |");
        }
        let _ = writeln!(
            s,
            "\n(family rows: the rate flagged as attack; for `{BENIGN}` that is the false-positive rate)"
        );
        s
    }

    /// The report as JSON: protocol, per rule and forest, every repeat. `model_path` is the
    /// model file when one was given, `model` the model the protocol ran.
    pub fn to_json(&self, model: &ThreatModel, model_path: Option<&str>) -> serde_json::Value {
        let rows = &self.rows;
        let enrolled_json = |os: &[Outcome]| {
            serde_json::json!({
                "accuracy": summary_json(&summ(os, Outcome::accuracy)),
                "detection_rate": summary_json(&summ(os, Outcome::detection)),
                "fpr": summary_json(&summ(os, Outcome::fpr)),
                "per_family_rate": mean_rates(os).into_iter().map(|(f, (r, _))| (f, r)).collect::<BTreeMap<_, _>>(),
                "repeats": os.iter().map(|o| outcome_json(o, &rows.test_only)).collect::<Vec<_>>(),
            })
        };
        let rule_json = |r: &RuleResult| {
            serde_json::json!({
                "rule": r.name,
                "zero_shot": outcome_json(&r.zero, &rows.test_only),
                "zero_shot_thresholds": {
                    "tau": r.zero_detection.tau,
                    "per_prototype_level": r.zero_detection.level,
                    "u": r.zero_detection.u,
                },
                "enrolled": enrolled_json(&r.enrolled),
                "enrolled_per_prototype_level": r.levels,
            })
        };
        serde_json::json!({
            "metaids_version": env!("CARGO_PKG_VERSION"),
            "protocol": {
                "dataset": "nsl-kdd",
                "train_file": "KDDTrain+", "test_file": "KDDTest+",
                "train_rows": rows.train.len(), "test_rows": rows.test.len(),
                "validation_families": VALIDATION,
                "test_only_families": rows.test_only.iter().map(|(f, r)| serde_json::json!({"family": f, "rows": r.len()})).collect::<Vec<_>>(),
                "shots": self.config.enrol_shots, "repeats": self.config.repeats, "seed": self.config.seed,
                "fpr_budget": self.fpr_budget,
                "rules": {
                    "per_prototype": "attack iff min d(x,B) - d(x,p) > tau_p for some p in A ∪ P, or min d(x, B ∪ A ∪ P) > u; tau_p = m_p + t s_p with m_p the median of d(c,B) - d(c,p) over the calibration rows and s_p its upper quantile at budget/2 minus m_p; t the upper quantile at budget/2 of max_p (score_p(c) - m_p)/s_p over the calibration rows, so the union of the prototype rules flags at most floor(n budget/2) of them; u: upper quantile at budget/2",
                    "shared": "attack iff min d(x,B) - min d(x, A ∪ P) > tau or min d(x, B ∪ A ∪ P) > u; tau, u: upper quantiles at budget/2",
                    "calibration": "held-out KDDTrain+ benign rows of the model",
                },
                "calibration_rows": self.calibration_rows,
                "known_prototypes": self.known_prototypes,
                "model": model_path,
                "model_best_step": model.record.best_step,
                "model_validation_f1": model.record.best_f1,
                "training_seconds": model.record.seconds,
            },
            "model": self.rules.first().map(rule_json),
            "model_shared_threshold": self.rules.get(1).map(rule_json),
            "forest": self.forest.as_ref().map(|(fz, fe)| serde_json::json!({
                "description": "metaids-eval histogram random forest (50 trees, depth ≤ 20), benign vs attack on a capped seeded KDDTrain+ sample (≤3000 benign, ≤500 per family); enrolled: refit with the same enrolled rows as attacks, weighted as one average family",
                "zero_shot": outcome_json(fz, &rows.test_only),
                "enrolled": enrolled_json(fe),
            })),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Flags of the rows `q` (1-d or 2-d embeddings `dim`) under `rule`.
    fn flags(
        reference: &BenignReference,
        known: &[f32],
        q: &[f32],
        extra: &[f32],
        rule: Rule,
    ) -> Vec<bool> {
        let dim = reference.dim;
        let c = distances(&reference.calibration, dim, &reference.prototypes, known);
        let d = distances(q, dim, &reference.prototypes, known);
        detect(reference, &c, &d, q, known, extra, rule).flags
    }

    #[test]
    fn detect_holds_the_budget_on_calibration_rows() {
        // 1-d embeddings: benign prototype at 0, known prototype at 10; budget 0.02 of 200 rows, so
        // at most 2 rows per rule and 4 in all.
        let cal: Vec<f32> = (0..200).map(|i| (i as f32) / 40.0).collect();
        let reference = BenignReference::new(1, vec![0.0], cal.clone(), 0.02);
        for rule in [Rule::Shared, Rule::PerPrototype] {
            for extra in [&[][..], &[-4.0], &[4.5, -1.0, 2.0]] {
                let f = flags(&reference, &[10.0], &cal, extra, rule);
                let n = f.iter().filter(|&&f| f).count();
                assert!(n <= 4, "{rule:?} {extra:?}: {n}");
            }
            let f = flags(&reference, &[10.0], &[9.5, 0.1, 30.0], &[], rule);
            assert_eq!(f, vec![true, false, true], "{rule:?}");
            // An enrolled prototype at -4 catches a row there that neither rule flagged before.
            assert_eq!(flags(&reference, &[10.0], &[-4.0], &[], rule), vec![false]);
            assert_eq!(
                flags(&reference, &[10.0], &[-4.0], &[-4.0], rule),
                vec![true]
            );
        }
    }

    #[test]
    fn a_benign_looking_prototype_keeps_its_threshold_to_itself() {
        // 2-d: benign rows on a segment of the y axis around the benign prototype at the origin; a
        // known prototype at (6, 0) beside them; an enrolled prototype at (0, 4), among them.
        let cal: Vec<f32> = (0..400)
            .flat_map(|i| [(i % 7) as f32 * 0.01, -4.0 + i as f32 * 0.02])
            .collect();
        let reference = BenignReference::new(2, vec![0.0, 0.0], cal.clone(), 0.02);
        let known = [6.0f32, 0.0];
        let benign_looking = [0.0f32, 4.0];
        // Between the benign rows and the known prototype, nearer the known one.
        let q = [3.5f32, 0.0];
        for rule in [Rule::Shared, Rule::PerPrototype] {
            assert_eq!(flags(&reference, &known, &q, &[], rule), vec![true]);
            let f = flags(&reference, &known, &cal, &benign_looking, rule);
            assert!(f.iter().filter(|&&f| f).count() <= 8, "{rule:?}");
        }
        // One shared threshold: enrolling the benign-looking prototype lifts it above q's margin.
        assert_eq!(
            flags(&reference, &known, &q, &benign_looking, Rule::Shared),
            vec![false]
        );
        // A threshold per prototype: q is still flagged.
        assert_eq!(
            flags(&reference, &known, &q, &benign_looking, Rule::PerPrototype),
            vec![true]
        );
    }
}
