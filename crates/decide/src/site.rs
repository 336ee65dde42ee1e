//! The site profile: what `metaids baseline` learns from the benign traffic of the network metaids
//! guards — benign prototypes and calibration rows in the model's embedding, the unknown threshold at
//! the budget — and the joint calibration that holds the false-positive budget on that traffic for
//! every threat and the unknown rule together. Pure: callers pass embeddings and each flow's source.
//!
//! Learning, from `n` offered flows with their source addresses:
//!
//! * **per-source cap**: one source keeps at most `max(⌈c · n⌉, 1)` of its flows (seeded draw), so a
//!   chatty host or a scan inside the window cannot dominate the profile;
//! * the kept flows are shuffled (seeded) and split: a share (default ¼, at least 1) gives the
//!   benign prototypes (seeded k-means), the rest are the **calibration rows**; a row never serves
//!   both, so calibration measures distances to prototypes it did not shape;
//! * the smallest budget `n_cal` calibration rows support is `10 / n_cal` (ten calibration rows above
//!   the threshold); a smaller one is refused with the number of flows it needs.
//!
//! **Joint calibration** ([`calibrate_jointly`]) over the calibration rows `C` at budget `α`: the
//! unknown rule gets `α/2` (its threshold `u` the upper quantile of `min_j d(c, B_j)`); each threat
//! `t` is fitted alone at `α/2` (threshold `τ_t`, lowered to cover its support flows), and then all
//! thresholds are raised together to one standardised level (`τ'_t = m_t + λ (τ_t − m_t)`, `m_t` the
//! median score of `t` over `C`, `λ ≥ 1` the smallest level at which at most `⌊α n / 2⌋` rows are
//! flagged by any threat), so `n` threats cannot spend `n` budgets. Every flow is then judged by the
//! one verdict rule; at most `⌊α n⌋` calibration rows get a non-benign verdict.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{DecideError, Result};
use crate::geometry::{kmeans, upper_quantile};
use crate::reference::BenignReference;
use crate::site_forest::SiteForest;
use crate::threat::{fit, seed_for, ForestCheck, Threat};
use crate::verdict::{rule, VerdictKind};

/// How a profile is learnt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProfileOptions {
    /// False-positive budget α on the site's benign traffic (threats and unknown rule together).
    pub budget: f64,
    /// Largest share of the kept flows one source may contribute.
    pub per_source_cap: f64,
    /// Share of the kept flows that give the benign prototypes (the rest calibrate).
    pub prototype_share: f64,
    /// Benign prototypes (k of k-means).
    pub prototypes: usize,
    /// Seed of the draws and of k-means.
    pub seed: u64,
    /// Accept a budget the calibration rows cannot support.
    pub force: bool,
    /// Calibrate so that the budget holds with this confidence (each half — threats, unknown rule —
    /// at the exact binomial upper bound, [`held_budget`]) rather than on average; `None`: on
    /// average, at the split-conformal rank ([`conformal_rate`]).
    pub confidence: Option<f64>,
    /// Without a confidence, calibrate each half at the calibration rows' own rate (at most
    /// `⌊α n / 2⌋` rows above each threshold) instead of the split-conformal rank: the calibration
    /// the project used before the rank, which flags a flow it never saw with probability up to
    /// `(⌊α n / 2⌋ + 1) / (n + 1)` per half — above the budget. Kept to compare.
    pub in_sample: bool,
}

impl Default for ProfileOptions {
    fn default() -> Self {
        ProfileOptions {
            budget: 0.01,
            per_source_cap: 0.1,
            prototype_share: 0.25,
            prototypes: 16,
            seed: 2026,
            force: false,
            confidence: None,
            in_sample: false,
        }
    }
}

/// A source whose flows the per-source cap cut.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CappedSource {
    /// The source (an address).
    pub source: String,
    /// Its flows offered.
    pub offered: usize,
    /// Its flows kept.
    pub kept: usize,
}

/// The benign side of a site, learnt from its traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteProfile {
    /// Embedding size.
    pub dim: usize,
    /// Flows offered.
    pub flows_offered: usize,
    /// Flows kept after the per-source cap.
    pub flows_kept: usize,
    /// The per-source cap used.
    pub per_source_cap: f64,
    /// Sources the cap cut, most offered first (at most 20).
    pub capped: Vec<CappedSource>,
    /// The rate α the calibration rows are calibrated at (each half: threats, unknown rule): the
    /// budget asked for, lowered to the split-conformal rank or to a confidence's
    /// ([`SiteProfile::learn`]).
    pub budget: f64,
    /// The budget asked for ([`SiteProfile::asked_budget`]); `None` in a profile written before
    /// it was kept, when [`SiteProfile::budget`] was both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_budget: Option<f64>,
    /// Seed of the draws.
    pub seed: u64,
    /// Benign prototypes, `m × dim`.
    pub prototypes: Vec<f32>,
    /// Calibration rows, `n × dim` (packed in JSON: [`crate::packed`]).
    #[serde(with = "crate::packed")]
    pub calibration: Vec<f32>,
    /// Unknown threshold `u` (at `α/2` over the calibration rows).
    pub unknown_threshold: f32,
    /// The unsupervised adaptation of the model the profile's flows (and every threat calibrated
    /// on it) are embedded with; `None`: the model as trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptation: Option<NormaliserRefit>,
    /// How threats are named on the site (a profile written before the choice existed: by
    /// prototypes).
    #[serde(default, skip_serializing_if = "ThreatRule::is_prototypes")]
    pub threat_rule: ThreatRule,
    /// With the forest rule: the window's preprocessed feature rows (under the profile's
    /// adaptation), its prototype rows then its calibration rows in the order the embeddings were
    /// split ([`window_rows`]), `(p + n) × row_width`: what the site forest is fitted and
    /// calibrated on when a library is armed. Empty with the prototype rule.
    /// Packed in JSON ([`crate::packed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "crate::packed")]
    pub rows: Vec<f32>,
    /// Width of [`SiteProfile::rows`] (the model's preprocessed input, plus the source context's
    /// columns with [`SiteProfile::source_context`]; 0 without rows).
    #[serde(default)]
    pub row_width: usize,
    /// With the forest rule: each row ends with its flow's source context
    /// (`metaids_core::context`: its source's recent flows and ports), which the forest reads too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_context: bool,
}

/// How a site's threats are named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ThreatRule {
    /// In the embedding: each threat's prototypes at its threshold, all calibrated jointly on the
    /// profile ([`calibrate_jointly`]).
    #[default]
    Prototypes,
    /// By the site forest ([`crate::site_forest`]), fitted on the profile's rows and the threats'
    /// support flows when the library is armed; the embedding keeps the unknown rule.
    Forest,
}

impl ThreatRule {
    /// Whether it is the prototype rule (a profile's default, left out of its JSON).
    pub fn is_prototypes(&self) -> bool {
        *self == ThreatRule::Prototypes
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            ThreatRule::Prototypes => "prototypes",
            ThreatRule::Forest => "forest",
        }
    }
}

impl std::str::FromStr for ThreatRule {
    type Err = DecideError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prototypes" => Ok(ThreatRule::Prototypes),
            "forest" => Ok(ThreatRule::Forest),
            other => Err(DecideError::invalid(
                "threat rule",
                format!("{other:?}: expected forest or prototypes"),
            )),
        }
    }
}

/// The site adaptation `metaids baseline` applies by default: the model's numeric columns
/// standardised with the mean and spread of the site's kept baseline flows (chosen on a validation
/// site; README "Adapting the model to a site").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormaliserRefit {
    /// One entry per numeric column of the model's normaliser, in its order.
    pub columns: Vec<ColumnRefit>,
}

/// One numeric column's refit parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRefit {
    /// Column name (as in the model's normaliser).
    pub name: String,
    /// Mean of the (log-scaled) values on the site.
    pub mean: f32,
    /// Their standard deviation (> 0).
    pub std: f32,
}

impl NormaliserRefit {
    /// Checks every value is finite and every spread positive.
    pub fn validate(&self) -> Result<()> {
        for (i, c) in self.columns.iter().enumerate() {
            if !(c.mean.is_finite() && c.std.is_finite() && c.std > 0.0) {
                return Err(DecideError::invalid(
                    format!("adaptation.columns[{i}] ({})", c.name),
                    format!(
                        "mean {} and std {}: expected finite values, std > 0",
                        c.mean, c.std
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The flows the per-source cap keeps (sorted indices into `sources`): exactly the flows
/// [`SiteProfile::learn`] keeps with the same options, for fitting anything else on them first.
pub fn kept_flows(sources: &[String], options: ProfileOptions) -> Vec<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (mut kept, _) = cap_sources(sources, options.per_source_cap, &mut rng);
    kept.sort_unstable();
    kept
}

/// The per-source cap: each source keeps at most `max(⌈cap · n⌉, 1)` of its flows (seeded draw).
/// Returns the kept flows (source by source) and the sources cut, most offered first (at most 20).
fn cap_sources(
    sources: &[String],
    cap: f64,
    rng: &mut ChaCha8Rng,
) -> (Vec<usize>, Vec<CappedSource>) {
    let n = sources.len();
    let limit = ((cap * n as f64).ceil() as usize).max(1);
    let mut by_source: std::collections::BTreeMap<&str, Vec<usize>> = Default::default();
    for (i, s) in sources.iter().enumerate() {
        by_source.entry(s.as_str()).or_default().push(i);
    }
    let mut kept = Vec::with_capacity(n);
    let mut capped = Vec::new();
    for (source, mut rows) in by_source {
        if rows.len() > limit {
            rows.shuffle(rng);
            capped.push(CappedSource {
                source: source.to_string(),
                offered: rows.len(),
                kept: limit,
            });
            rows.truncate(limit);
        }
        kept.extend(rows);
    }
    capped.sort_by(|a, b| b.offered.cmp(&a.offered).then(a.source.cmp(&b.source)));
    capped.truncate(20);
    (kept, capped)
}

/// The smallest budget `n` calibration rows support: ten rows above the threshold.
pub fn smallest_budget(n: usize) -> f64 {
    10.0 / n.max(1) as f64
}

/// `P(X ≤ k)` for `X ~ Binomial(n, p)`, summed in log space (no underflow at large `n`).
fn binomial_cdf(k: usize, n: usize, p: f64) -> f64 {
    if p <= 0.0 {
        return 1.0;
    }
    if p >= 1.0 {
        return if k >= n { 1.0 } else { 0.0 };
    }
    let (ln_q, ln_odds) = ((-p).ln_1p(), (p / (1.0 - p)).ln());
    let mut log_pmf = n as f64 * ln_q;
    let mut max = log_pmf;
    let mut terms = Vec::with_capacity(k.min(n) + 1);
    terms.push(log_pmf);
    for i in 0..k.min(n) {
        log_pmf += ((n - i) as f64 / (i + 1) as f64).ln() + ln_odds;
        max = max.max(log_pmf);
        terms.push(log_pmf);
    }
    let sum: f64 = terms.iter().map(|t| (t - max).exp()).sum();
    (max + sum.ln()).exp().min(1.0)
}

/// The exact (Clopper–Pearson) one-sided upper confidence bound on a rate seen `k` times in `n`
/// rows, at `confidence`: the rate `p` with `P(X ≤ k) = 1 − confidence`.
pub fn rate_upper_bound(k: usize, n: usize, confidence: f64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    let alpha = 1.0 - confidence;
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if binomial_cdf(k, n, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// The budget to calibrate `n` rows at so that `budget` holds with `confidence`: `k / n` for the
/// largest `k` whose upper confidence bound ([`rate_upper_bound`]) is within `budget`. `None` when
/// even no flagged row would not show it (too few rows: about `ln(1/(1 − confidence)) / budget`
/// are needed).
pub fn held_budget(budget: f64, n: usize, confidence: f64) -> Option<f64> {
    let fits = |k: usize| rate_upper_bound(k, n, confidence) <= budget;
    if n == 0 || !fits(0) {
        return None;
    }
    // The bound grows with k: the largest k that fits, by bisection on [0, budget·n].
    let (mut lo, mut hi) = (0usize, (budget * n as f64).floor() as usize);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo as f64 / n as f64)
}

/// The rate to calibrate `n` rows at so that a flow of the same traffic outside them is flagged
/// with probability at most `rate` (the split-conformal rank): `k / n` for the largest
/// `k` with `(k + 1) / (n + 1) ≤ rate`. With at most `k` of `n` exchangeable scores above a
/// threshold, a new one lies above it with probability at most `(k + 1) / (n + 1)` (its rank among
/// the `n + 1` is uniform; ties only lower it). Calibrating at `⌊rate · n⌋` rows instead — the rows'
/// own rate — overshoots by about `1 / n` per threshold. `None` when not even `k = 0` fits
/// (`n + 1 < 1 / rate`).
pub fn conformal_rate(rate: f64, n: usize) -> Option<f64> {
    let slots = crate::geometry::allowed_above(rate, n + 1);
    (slots >= 1 && n > 0).then(|| (slots - 1) as f64 / n as f64)
}

/// The window's flows kept after the per-source cap, in the seeded order the profile uses them,
/// with how many of the first are its prototype rows (the rest are its calibration rows), and the
/// sources the cap cut. [`SiteProfile::learn`] splits a window this way; a decision learnt beside
/// the profile (the site forest) trains and calibrates on the same two parts through it.
fn split_window(
    sources: &[String],
    options: ProfileOptions,
) -> (Vec<usize>, usize, Vec<CappedSource>) {
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (mut kept, capped) = cap_sources(sources, options.per_source_cap, &mut rng);
    kept.sort_unstable();
    kept.shuffle(&mut rng);
    let share = options.prototype_share.clamp(0.05, 0.9);
    let n_proto = ((share * kept.len() as f64).round() as usize)
        .clamp(usize::from(!kept.is_empty()), kept.len());
    (kept, n_proto, capped)
}

/// The window's prototype rows and calibration rows (indices into `sources`), exactly as
/// [`SiteProfile::learn`] splits a window of these sources with these options.
pub fn window_rows(sources: &[String], options: ProfileOptions) -> (Vec<usize>, Vec<usize>) {
    let (kept, n_proto, _) = split_window(sources, options);
    (kept[..n_proto].to_vec(), kept[n_proto..].to_vec())
}

/// Calibration rows (hence flows, at the default prototype share) a budget needs.
pub fn rows_needed(budget: f64) -> usize {
    (10.0 / budget).ceil() as usize
}

impl SiteProfile {
    /// Learns a profile from `embeddings` (`n × dim`) of benign flows whose sources are `sources`
    /// (one per flow). Refuses no flows, a budget outside `(0, 1)`, and a budget the calibration rows
    /// cannot support (unless `force`), naming how many flows it needs.
    pub fn learn(
        embeddings: &[f32],
        dim: usize,
        sources: &[String],
        options: ProfileOptions,
    ) -> Result<Self> {
        let n = embeddings.len().checked_div(dim).unwrap_or(0);
        if n == 0 || dim == 0 {
            return Err(DecideError::invalid(
                "baseline",
                "no flows: a baseline needs the site's benign traffic",
            ));
        }
        if sources.len() != n {
            return Err(DecideError::invalid(
                "sources",
                format!("{} sources for {n} flows", sources.len()),
            ));
        }
        if let Some(i) = embeddings.iter().position(|v| !v.is_finite()) {
            return Err(DecideError::invalid(
                format!("embeddings[{}]", i / dim),
                "not finite",
            ));
        }
        let b = options.budget;
        if !(b.is_finite() && b > 0.0 && b < 1.0) {
            return Err(DecideError::invalid(
                "budget",
                format!("{b}: expected a false-positive rate in (0, 1)"),
            ));
        }
        let cap = options.per_source_cap;
        if !(cap.is_finite() && cap > 0.0 && cap <= 1.0) {
            return Err(DecideError::invalid(
                "per_source_cap",
                format!("{cap}: expected a share in (0, 1]"),
            ));
        }
        let (kept, n_proto, capped) = split_window(sources, options);
        let share = options.prototype_share.clamp(0.05, 0.9);
        let n_cal = kept.len() - n_proto;
        let smallest = smallest_budget(n_cal);
        if n_cal == 0 || (b < smallest && !options.force) {
            return Err(DecideError::invalid(
                "budget",
                format!(
                    "{b} needs at least {} calibration rows ({} baseline flows at a prototype share of {share}); \
                     this baseline has {n_cal} calibration rows from {} kept flows (of {n} offered), enough for a budget of {smallest:.4}. \
                     Record a longer baseline, raise the budget, or force",
                    rows_needed(b),
                    (rows_needed(b) as f64 / (1.0 - share)).ceil() as usize,
                    kept.len()
                ),
            ));
        }
        // With a confidence, each half of the budget is calibrated at the rate whose upper bound
        // is that half (so, by the union bound, the whole holds with at least 2·confidence − 1);
        // without, at the split-conformal rank, so that each half holds on average for flows the
        // calibration never saw (the rows' own rate would overshoot by about 1/n per half).
        let target = b;
        // A rate of no row at all is kept positive (a profile's budget is), below one row.
        let rate_of = |half: f64| 2.0 * half.max(0.25 / n_cal as f64);
        let b = match options.confidence {
            None if options.in_sample => b,
            None => rate_of(conformal_rate(b / 2.0, n_cal).unwrap_or(0.0)),
            Some(c) if !(c.is_finite() && (0.5..1.0).contains(&c)) => {
                return Err(DecideError::invalid(
                    "confidence",
                    format!("{c}: expected a probability in [0.5, 1)"),
                ))
            }
            Some(c) => match held_budget(b / 2.0, n_cal, c) {
                Some(half) if half > 0.0 || options.force => rate_of(half),
                _ => {
                    let needed = ((1.0 / (1.0 - c)).ln() / (b / 2.0)).ceil() as usize;
                    return Err(DecideError::invalid(
                        "budget",
                        format!(
                            "{b} with confidence {c}: {n_cal} calibration rows cannot show it (not even with no row flagged; about {needed} are needed). \
                             Record a longer baseline, raise the budget, or lower the confidence"
                        ),
                    ));
                }
            },
        };
        let gather = |rows: &[usize]| -> Vec<f32> {
            rows.iter()
                .flat_map(|&r| embeddings[r * dim..(r + 1) * dim].iter().copied())
                .collect()
        };
        let proto_rows = gather(&kept[..n_proto]);
        let calibration = gather(&kept[n_proto..]);
        let prototypes = kmeans(
            &proto_rows,
            dim,
            options.prototypes.max(1),
            50,
            options.seed,
        );
        let reference = BenignReference::new(dim, prototypes.clone(), calibration.clone(), b / 2.0);
        Ok(SiteProfile {
            dim,
            flows_offered: n,
            flows_kept: kept.len(),
            per_source_cap: cap,
            capped,
            budget: b,
            target_budget: Some(target),
            seed: options.seed,
            prototypes,
            calibration,
            unknown_threshold: reference.unknown_threshold,
            adaptation: None,
            threat_rule: ThreatRule::Prototypes,
            rows: Vec::new(),
            row_width: 0,
            source_context: false,
        })
    }

    /// Switches the profile to the forest rule, keeping the window's preprocessed feature rows
    /// `x` (`n × width`, one per flow of the window it was learnt from, in the same order, with the
    /// same `sources` and `options`): its prototype rows then its calibration rows.
    pub fn with_forest_rows(
        mut self,
        x: &[f32],
        width: usize,
        sources: &[String],
        options: ProfileOptions,
    ) -> Result<Self> {
        if width == 0 || x.len() != sources.len() * width {
            return Err(DecideError::invalid(
                "rows",
                format!(
                    "{} values are not {} rows of {width}",
                    x.len(),
                    sources.len()
                ),
            ));
        }
        let (proto, cal) = window_rows(sources, options);
        if cal.len() != self.calibration_rows() {
            return Err(DecideError::invalid(
                "rows",
                format!(
                    "the window splits into {} calibration rows, the profile has {}: learnt from other flows or options",
                    cal.len(),
                    self.calibration_rows()
                ),
            ));
        }
        self.rows = proto
            .iter()
            .chain(&cal)
            .flat_map(|&r| x[r * width..(r + 1) * width].iter().copied())
            .collect();
        self.row_width = width;
        self.threat_rule = ThreatRule::Forest;
        Ok(self)
    }

    /// The site forest of a profile with the forest rule: fitted on its prototype rows and the
    /// threats' support rows (`support[t]`: threat `t`'s, preprocessed like the profile's rows),
    /// each with its timing jitter (`shift`: [`crate::site_forest::jittered`]; empty for none),
    /// calibrated on its calibration rows at the threats' half of its budget, seeded by its seed.
    /// What arming a library and the site protocol both call.
    pub fn site_forest(&self, support: &[Vec<f32>], shift: &[f32]) -> Result<SiteForest> {
        let Some((benign, calibration)) = self.forest_rows() else {
            return Err(DecideError::invalid(
                "site profile",
                "it keeps no feature rows: learnt with the prototype rule",
            ));
        };
        let support = crate::site_forest::jittered(support, self.row_width, shift);
        SiteForest::learn(
            benign,
            &support,
            calibration,
            self.row_width,
            self.budget / 2.0,
            self.seed,
        )
    }

    /// The site forest's enrolment guard for threat `which` of `support` (every threat's support
    /// rows, and the jitter `shift`, as for [`SiteProfile::site_forest`]): each of its rows is left
    /// out in turn — with its jittered copies — the forest fitted without it, and the row decided.
    /// With a single row nothing remains to fit on: none is left out.
    pub fn forest_check(
        &self,
        support: &[Vec<f32>],
        which: usize,
        shift: &[f32],
    ) -> Result<ForestCheck> {
        let d = self.row_width.max(1);
        let mut support = support.to_vec();
        let Some(own) = support.get_mut(which).map(std::mem::take) else {
            return Err(DecideError::invalid(
                "support",
                format!("no threat {which} among {}", support.len()),
            ));
        };
        let k = own.len() / d;
        if k < 2 {
            return Ok(ForestCheck {
                named: 0,
                left_out: 0,
            });
        }
        let mut named = 0;
        for i in 0..k {
            support[which] = own
                .chunks_exact(d)
                .enumerate()
                .filter(|&(j, _)| j != i)
                .flat_map(|(_, r)| r.iter().copied())
                .collect();
            let forest = self.site_forest(&support, shift)?;
            named += usize::from(forest.flag(&own[i * d..(i + 1) * d]) == Some(which));
        }
        Ok(ForestCheck { named, left_out: k })
    }

    /// With the forest rule, the rows the site forest trains on (the prototype rows) and those it
    /// is calibrated on (the calibration rows); `None` with the prototype rule.
    pub fn forest_rows(&self) -> Option<(&[f32], &[f32])> {
        if self.threat_rule != ThreatRule::Forest || self.row_width == 0 {
            return None;
        }
        let cal = self.calibration_rows() * self.row_width;
        let split = self.rows.len().checked_sub(cal)?;
        Some(self.rows.split_at(split))
    }

    /// The profile as the benign reference every rule decides with (budget `α/2`: the unknown
    /// rule's share).
    pub fn reference(&self) -> BenignReference {
        let mut r = BenignReference::new(
            self.dim,
            self.prototypes.clone(),
            self.calibration.clone(),
            self.budget / 2.0,
        );
        r.unknown_threshold = self.unknown_threshold;
        r
    }

    /// Calibration rows.
    pub fn calibration_rows(&self) -> usize {
        self.calibration.len().checked_div(self.dim).unwrap_or(0)
    }

    /// The budget the profile was asked for (what it holds the site's benign flows to);
    /// [`SiteProfile::budget`] is the rate its calibration rows are calibrated at.
    pub fn asked_budget(&self) -> f64 {
        self.target_budget.unwrap_or(self.budget)
    }

    /// Checks the profile's shapes and values (a profile read from a file).
    pub fn validate(&self, dim: usize) -> Result<()> {
        let bad = |field: &str, message: String| Err(DecideError::invalid(field, message));
        if self.dim != dim {
            return bad("dim", format!("{}, the model embeds into {dim}", self.dim));
        }
        if self.prototypes.is_empty() || !self.prototypes.len().is_multiple_of(dim) {
            return bad("prototypes", format!("{} values", self.prototypes.len()));
        }
        if self.calibration.is_empty() || !self.calibration.len().is_multiple_of(dim) {
            return bad("calibration", format!("{} values", self.calibration.len()));
        }
        if self
            .prototypes
            .iter()
            .chain(&self.calibration)
            .any(|v| !v.is_finite())
        {
            return bad("prototypes", "non-finite values".into());
        }
        if !(self.budget > 0.0 && self.budget < 1.0) || self.unknown_threshold.is_nan() {
            return bad("budget", format!("{}", self.budget));
        }
        if let Some(t) = self.target_budget {
            if !(t > 0.0 && t < 1.0) {
                return bad("target_budget", format!("{t}"));
            }
        }
        if let Some(a) = &self.adaptation {
            a.validate()?;
        }
        match self.threat_rule {
            ThreatRule::Prototypes if !self.rows.is_empty() || self.source_context => {
                return bad(
                    "rows",
                    "feature rows kept under the prototype rule: only the forest rule uses them"
                        .into(),
                )
            }
            ThreatRule::Prototypes => {}
            ThreatRule::Forest => {
                let w = self.row_width;
                let n = self.rows.len().checked_div(w).unwrap_or(0);
                if w == 0 || !self.rows.len().is_multiple_of(w) || n <= self.calibration_rows() {
                    return bad(
                        "rows",
                        format!(
                            "{} values of width {w}: the forest rule needs prototype rows and the {} calibration rows",
                            self.rows.len(),
                            self.calibration_rows()
                        ),
                    );
                }
                if let Some(i) = self.rows.iter().position(|v| !v.is_finite()) {
                    return bad(&format!("rows[{}]", i / w), "a value is not finite".into());
                }
            }
        }
        Ok(())
    }
}

/// What the joint calibration found on the calibration rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JointReport {
    /// Calibration rows.
    pub rows: usize,
    /// The budget α.
    pub budget: f64,
    /// The common level λ the threat thresholds were raised to (1: none raised).
    pub level: f32,
    /// Rows flagged by some threat.
    pub threat_flagged: usize,
    /// Rows the unknown rule flags (and no threat).
    pub unknown_flagged: usize,
    /// `(threat_flagged + unknown_flagged) / rows`.
    pub fpr: f64,
    /// Per threat (in order): support flows still flagged after raising, of its support.
    pub support_flagged: Vec<(usize, usize)>,
}

/// Refits every threat on `reference` (the site's) at `α/2` from its own examples, then raises the
/// thresholds together until the threats flag at most `⌊α n / 2⌋` calibration rows (module
/// documentation). Returns the threats with their new thresholds and reports, and the figures.
pub fn calibrate_jointly(
    reference: &BenignReference,
    threats: &[Threat],
    budget: f64,
) -> Result<(Vec<Threat>, JointReport)> {
    let dim = reference.dim;
    let half = budget / 2.0;
    let mut out = Vec::with_capacity(threats.len());
    for t in threats {
        let f = fit(reference, &t.support, &t.negatives, seed_for(t.id), half)?;
        let mut t = t.clone();
        t.prototypes = f.prototypes;
        t.threshold = f.threshold;
        t.report = f.report;
        t.report.forced = !t.report.accepted;
        out.push(t);
    }
    let cal: Vec<&[f32]> = reference.calibration.chunks_exact(dim).collect();
    let n = cal.len();
    let db: Vec<f32> = cal.iter().map(|c| reference.benign_distance(c)).collect();
    // scores[t][c] = s_t(c).
    let scores: Vec<Vec<f32>> = out
        .iter()
        .map(|t| {
            cal.iter()
                .zip(&db)
                .map(|(c, &b)| b - t.centre_distance(c))
                .collect()
        })
        .collect();
    let spread: Vec<(f32, f32)> = out
        .iter()
        .zip(&scores)
        .map(|(t, s)| {
            let m = upper_quantile(&mut s.clone(), 0.5);
            (m, (t.threshold - m).max(1e-6))
        })
        .collect();
    let allowed = crate::geometry::allowed_above(half, n);
    // Each row's standardised level under its most alarming threat; rows above 1 are flagged now.
    let mut z: Vec<f32> = (0..n)
        .map(|c| {
            scores
                .iter()
                .zip(&spread)
                .map(|(s, &(m, sd))| (s[c] - m) / sd)
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let flagged_at = |lambda: f32| -> usize {
        (0..n)
            .filter(|&c| {
                scores
                    .iter()
                    .zip(&spread)
                    .any(|(s, &(m, sd))| s[c] > m + lambda * sd)
            })
            .count()
    };
    let mut level = 1.0f32;
    if !out.is_empty() && flagged_at(1.0) > allowed {
        level = crate::reference::budget_level(&mut z, allowed, 1.0, flagged_at).unwrap_or(1.0);
        for ((t, &(m, sd)), s) in out.iter_mut().zip(&spread).zip(&scores) {
            t.threshold = m + level * sd;
            // The guard's figures follow the raised threshold.
            let covered = t
                .support
                .iter()
                .filter(|f| t.score(reference, &f.embedding) > t.threshold)
                .count();
            let r = &mut t.report;
            r.threshold = t.threshold;
            r.would_flag = s.iter().filter(|&&v| v > t.threshold).count();
            r.fpr = r.would_flag as f64 / n.max(1) as f64;
            r.support_flagged = covered;
        }
    }
    let mut threat_flagged = 0;
    let mut unknown_flagged = 0;
    let protos: Vec<Vec<f32>> = out.iter().map(Threat::flat_prototypes).collect();
    for (c, &b) in cal.iter().zip(&db) {
        let v = rule(
            b,
            protos
                .iter()
                .zip(&out)
                .map(|(p, t)| (crate::geometry::nearest(c, p, dim).1, t.threshold)),
            reference.unknown_threshold,
        );
        match v.kind {
            VerdictKind::Threat => threat_flagged += 1,
            VerdictKind::Unknown => unknown_flagged += 1,
            VerdictKind::Benign => {}
        }
    }
    let support_flagged = out
        .iter()
        .map(|t| {
            let k = t
                .support
                .iter()
                .filter(|f| t.flags(reference, &f.embedding))
                .count();
            (k, t.support.len())
        })
        .collect();
    let report = JointReport {
        rows: n,
        budget,
        level,
        threat_flagged,
        unknown_flagged,
        fpr: (threat_flagged + unknown_flagged) as f64 / n.max(1) as f64,
        support_flagged,
    };
    Ok((out, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_upper_bound_is_clopper_pearson() {
        // No flag in n rows: 1 − (1 − c)^(1/n), in closed form.
        let ub = rate_upper_bound(0, 100, 0.95);
        assert!((ub - (1.0 - 0.05f64.powf(0.01))).abs() < 1e-9, "{ub}");
        // k flags: the rate at which k or fewer happen with probability 1 − c.
        for (k, n) in [(5usize, 1000usize), (12, 63_000), (3000, 60_000)] {
            let ub = rate_upper_bound(k, n, 0.95);
            assert!(ub > k as f64 / n as f64);
            assert!(
                (binomial_cdf(k, n, ub) - 0.05).abs() < 1e-6,
                "{k}/{n}: {ub}"
            );
        }
        // Five flags in a thousand: the one-sided 95% bound is about 1.05%.
        assert!((rate_upper_bound(5, 1000, 0.95) - 0.01051).abs() < 5e-5);
    }

    #[test]
    fn the_conformal_rate_is_the_largest_rank_whose_next_fits() {
        for (rate, n) in [
            (0.005f64, 1_500usize),
            (0.0005, 63_000),
            (0.05, 19),
            (0.01, 99),
        ] {
            let r = conformal_rate(rate, n).expect("enough rows");
            let k = crate::geometry::allowed_above(r, n);
            assert!(
                (k + 1) as f64 / (n + 1) as f64 <= rate + 1e-12,
                "{rate} {n}: {k}"
            );
            assert!((k + 2) as f64 / (n + 1) as f64 > rate, "{rate} {n}: {k}");
            assert!(r < rate);
        }
        // 1,500 rows at 0.005: six rows above (seven of 1,501), not the rows' own seven.
        assert_eq!(conformal_rate(0.005, 1_500), Some(6.0 / 1_500.0));
        // Fewer than 1/rate − 1 rows: not even a threshold above every row holds it.
        assert_eq!(conformal_rate(0.01, 98), None);
        assert_eq!(conformal_rate(0.01, 0), None);
    }

    /// Exchangeable scores: a threshold at the conformal rank flags new scores at most at the
    /// rate on average; at the rows' own rate it overshoots by about one row in `n`.
    #[test]
    fn the_conformal_rank_holds_the_rate_on_scores_it_never_saw() {
        use rand::Rng;
        let (n, m, trials, rate) = (150usize, 200usize, 2_000usize, 0.02f64);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut conformal, mut own) = (0usize, 0usize);
        for _ in 0..trials {
            let mut cal: Vec<f32> = (0..n).map(|_| rng.random()).collect();
            let fresh: Vec<f32> = (0..m).map(|_| rng.random()).collect();
            let t_conf = upper_quantile(&mut cal, conformal_rate(rate, n).expect("rows"));
            let t_own = upper_quantile(&mut cal, rate);
            conformal += fresh.iter().filter(|&&v| v > t_conf).count();
            own += fresh.iter().filter(|&&v| v > t_own).count();
        }
        let per = |c: usize| c as f64 / (m * trials) as f64;
        // Expected: 3/151 ≈ 0.0199 and 4/151 ≈ 0.0265; the mean's standard error is about 0.0003.
        assert!(per(conformal) <= rate + 0.001, "{}", per(conformal));
        assert!(per(own) >= rate + 0.004, "{}", per(own));
    }

    #[test]
    fn a_held_budget_is_the_largest_rate_whose_bound_fits() {
        for (budget, n) in [(0.0005f64, 63_000usize), (0.005, 4_000), (0.025, 60_000)] {
            let held = held_budget(budget, n, 0.95).expect("enough rows");
            let k = (held * n as f64).round() as usize;
            assert!(held < budget);
            assert!(rate_upper_bound(k, n, 0.95) <= budget);
            assert!(
                rate_upper_bound(k + 1, n, 0.95) > budget,
                "{budget} {n}: {k}"
            );
        }
        // 0.001 from 1,000 rows: even no flag leaves a bound of 0.3%.
        assert_eq!(held_budget(0.001, 1_000, 0.95), None);
    }

    #[test]
    fn a_profile_with_a_confidence_calibrates_below_the_budget_and_refuses_too_few_rows() {
        let (e, sources) = benign(4_000, 100);
        let dim = 2;
        let o = ProfileOptions {
            budget: 0.02,
            per_source_cap: 1.0,
            ..ProfileOptions::default()
        };
        let plain = SiteProfile::learn(&e, dim, &sources, o).expect("plain");
        let in_sample = SiteProfile::learn(
            &e,
            dim,
            &sources,
            ProfileOptions {
                in_sample: true,
                ..o
            },
        )
        .expect("in-sample");
        let held = SiteProfile::learn(
            &e,
            dim,
            &sources,
            ProfileOptions {
                confidence: Some(0.95),
                ..o
            },
        )
        .expect("held");
        // 3,000 calibration rows: the conformal rank allows ⌊0.01 · 3001⌋ − 1 = 29 per half.
        assert_eq!(plain.calibration_rows(), 3_000);
        assert_eq!(in_sample.budget, 0.02);
        assert!(
            (plain.budget - 2.0 * 29.0 / 3_000.0).abs() < 1e-12,
            "{}",
            plain.budget
        );
        for p in [&plain, &in_sample, &held] {
            assert_eq!(p.asked_budget(), 0.02);
        }
        assert!(
            held.budget < plain.budget && held.budget > 0.005,
            "{}",
            held.budget
        );
        let too_few = SiteProfile::learn(
            &e,
            dim,
            &sources,
            ProfileOptions {
                budget: 0.004,
                confidence: Some(0.99),
                ..o
            },
        );
        assert!(too_few.is_err());
        assert!(SiteProfile::learn(
            &e,
            dim,
            &sources,
            ProfileOptions {
                confidence: Some(1.0),
                ..o
            }
        )
        .is_err());
    }
    use crate::threat::ThreatDraft;
    use proptest::prelude::*;

    /// `n` benign embeddings in a ring around the origin (2-d), from `hosts` sources round-robin.
    fn benign(n: usize, hosts: usize) -> (Vec<f32>, Vec<String>) {
        let mut e = Vec::with_capacity(2 * n);
        let mut s = Vec::with_capacity(n);
        for i in 0..n {
            let a = i as f32 * 0.618;
            let r = 1.0 + (i % 17) as f32 * 0.1;
            e.extend_from_slice(&[r * a.cos(), r * a.sin()]);
            s.push(format!("10.0.0.{}", i % hosts));
        }
        (e, s)
    }

    fn threat(r: &BenignReference, id: u32, at: [f32; 2]) -> Threat {
        let rows: Vec<f32> = (0..5)
            .flat_map(|i| [at[0] + i as f32 * 0.05, at[1]])
            .collect();
        let d = ThreatDraft::from_embeddings(&format!("t{id}"), &rows, 2, "t.csv", "test");
        Threat::enrol(r, id, &d, 0.01, String::new()).expect("enrol")
    }

    #[test]
    fn a_profile_packs_its_rows_and_reads_the_plain_arrays_of_older_files() {
        let (e, sources) = benign(2_000, 50);
        let o = ProfileOptions {
            per_source_cap: 1.0,
            ..ProfileOptions::default()
        };
        let x: Vec<f32> = e.iter().map(|v| v * 3.0).collect();
        let p = SiteProfile::learn(&e, 2, &sources, o)
            .expect("learn")
            .with_forest_rows(&x, 2, &sources, o)
            .expect("rows");
        let json = serde_json::to_string(&p).expect("write");
        assert_eq!(
            json.matches(crate::packed::TAG).count(),
            2,
            "rows and calibration"
        );
        assert_eq!(serde_json::from_str::<SiteProfile>(&json).expect("read"), p);
        // A profile written before the packing: the same arrays as JSON numbers.
        let mut old = serde_json::to_value(&p).expect("value");
        old["rows"] = serde_json::json!(p.rows);
        old["calibration"] = serde_json::json!(p.calibration);
        let old_text = old.to_string();
        assert!(
            old_text.len() > 3 * json.len(),
            "{} vs {}",
            old_text.len(),
            json.len()
        );
        assert_eq!(
            serde_json::from_str::<SiteProfile>(&old_text).expect("old"),
            p
        );
        // A corrupt packed array is an error saying what is wrong and where.
        let n = p.calibration.len();
        let declared = format!("{}:{n}:", crate::packed::TAG);
        assert!(json.contains(&declared));
        let bad = json.replacen(&declared, &format!("{}:{}:", crate::packed::TAG, n + 1), 1);
        let e = serde_json::from_str::<SiteProfile>(&bad).expect_err("corrupt");
        assert!(
            e.to_string().contains("values declared") && e.to_string().contains("column"),
            "{e}"
        );
    }

    #[test]
    fn learning_refuses_what_it_cannot_calibrate() {
        let o = ProfileOptions::default();
        let e = SiteProfile::learn(&[], 2, &[], o).expect_err("empty");
        assert!(e.to_string().contains("no flows"), "{e}");
        let (emb, src) = benign(1500, 50);
        let small = ProfileOptions { budget: 0.001, ..o };
        let e = SiteProfile::learn(&emb, 2, &src, small).expect_err("too small");
        let msg = e.to_string();
        assert!(msg.contains("10000 calibration rows"), "{msg}");
        assert!(msg.contains("13334 baseline flows"), "{msg}");
        let forced = ProfileOptions {
            force: true,
            ..small
        };
        assert!(SiteProfile::learn(&emb, 2, &src, forced).is_ok());
        let p = SiteProfile::learn(&emb, 2, &src, o).expect("learn");
        assert_eq!(p.flows_kept, 1500);
        assert_eq!(p.calibration_rows(), 1125);
        assert!(p.validate(2).is_ok() && p.validate(3).is_err());
        assert_eq!(p, SiteProfile::learn(&emb, 2, &src, o).expect("again"));
    }

    /// A support row's own jittered copies never vouch for it in the guard: a threat of two
    /// unlike rows, jittered along a column that says nothing, names neither row when it is left
    /// out (each copy would name its row if it stayed in the fit).
    #[test]
    fn the_forest_guard_leaves_a_row_out_with_its_jittered_copies() {
        let (emb, src) = benign(800, 40);
        let o = ProfileOptions {
            budget: 0.05,
            ..ProfileOptions::default()
        };
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let x: Vec<f32> = (0..800 * 3).map(|_| rng.random::<f32>()).collect();
        let p = SiteProfile::learn(&emb, 2, &src, o)
            .and_then(|p| p.with_forest_rows(&x, 3, &src, o))
            .expect("profile");
        let other: Vec<f32> = (0..5).flat_map(|i| [-3.0, 0.1 * i as f32, 0.5]).collect();
        let support = vec![vec![0.2, 0.8, 5.0, 0.9, 0.1, -5.0], other];
        let shift = [0.0, 0.01, 0.0];
        let check = p.forest_check(&support, 0, &shift).expect("check");
        assert_eq!((check.named, check.left_out), (0, 2));
        // Fitted with both rows (and their copies), each is named.
        let f = p.site_forest(&support, &shift).expect("forest");
        assert_eq!(f.flag(&[0.2, 0.8, 5.0]), Some(0));
        assert_eq!(f.flag(&[0.9, 0.1, -5.0]), Some(0));
    }

    #[test]
    fn one_chatty_source_is_capped() {
        let (mut emb, mut src) = benign(1000, 50);
        // A scanner: 3,000 flows from one address, far from the benign ring.
        for i in 0..3000 {
            emb.extend_from_slice(&[30.0 + (i % 7) as f32 * 0.01, 30.0]);
            src.push("192.0.2.66".into());
        }
        let p = SiteProfile::learn(&emb, 2, &src, ProfileOptions::default()).expect("learn");
        assert_eq!(p.capped[0].source, "192.0.2.66");
        assert_eq!(p.capped[0].kept, 400);
        assert_eq!(p.flows_kept, 1400);
        // The scan is a minority of the profile, so a flow like it stays far from benign.
        let r = p.reference();
        let uncapped = ProfileOptions {
            per_source_cap: 1.0,
            ..ProfileOptions::default()
        };
        let all = SiteProfile::learn(&emb, 2, &src, uncapped).expect("learn");
        assert!(all.capped.is_empty());
        assert!(r.calibration_rows() < all.reference().calibration_rows());
    }

    #[test]
    fn joint_calibration_holds_the_budget_for_many_threats() {
        let (emb, src) = benign(4000, 100);
        let p = SiteProfile::learn(&emb, 2, &src, ProfileOptions::default()).expect("learn");
        let r = p.reference();
        // Ten threats around the benign ring: alone, each may flag up to α/2 of the rows.
        let threats: Vec<Threat> = (0..10)
            .map(|i| {
                let a = i as f32 * 0.628;
                threat(&r, i + 1, [4.5 * a.cos(), 4.5 * a.sin()])
            })
            .collect();
        let (fitted, rep) = calibrate_jointly(&r, &threats, p.budget).expect("joint");
        assert_eq!(rep.rows, p.calibration_rows());
        let allowed = crate::geometry::allowed_above(p.budget, rep.rows);
        assert!(
            rep.threat_flagged + rep.unknown_flagged <= allowed,
            "{rep:?}"
        );
        assert!(rep.threat_flagged <= allowed / 2, "{rep:?}");
        // Each threat's guard report describes the threshold it keeps.
        for t in &fitted {
            assert_eq!(t.report.threshold, t.threshold);
            let flagged = r
                .calibration
                .chunks_exact(2)
                .filter(|c| t.flags(&r, c))
                .count();
            assert_eq!(t.report.would_flag, flagged);
        }
        // The same count from the decider's own verdicts on the calibration rows.
        let d = crate::Decider::new(r.clone(), fitted.clone(), r.unknown_threshold).expect("arm");
        let flagged = r
            .calibration
            .chunks_exact(2)
            .filter(|c| d.decide(c).kind != VerdictKind::Benign)
            .count();
        assert_eq!(flagged, rep.threat_flagged + rep.unknown_flagged);
        // A flow at a threat's support is still named as it.
        let v = d.decide(&[4.55, 0.0]);
        assert_eq!(v.flagged(), Some(0), "{v:?}");
        assert!(
            calibrate_jointly(&r, &[], 0.01)
                .expect("none")
                .1
                .threat_flagged
                == 0
        );
    }

    proptest! {
        /// Whatever the threats, the calibration rows keep the budget.
        #[test]
        fn the_budget_holds_on_the_calibration_rows(
            centres in proptest::collection::vec((-6.0f32..6.0, -6.0f32..6.0), 1..8),
            budget in 0.01f64..0.2,
        ) {
            let (emb, src) = benign(2000, 40);
            let o = ProfileOptions { budget, ..ProfileOptions::default() };
            let p = SiteProfile::learn(&emb, 2, &src, o).expect("learn");
            let r = p.reference();
            let threats: Vec<Threat> = centres
                .iter()
                .enumerate()
                .map(|(i, &(x, y))| threat(&r, i as u32 + 1, [x, y]))
                .collect();
            let (_, rep) = calibrate_jointly(&r, &threats, budget).expect("joint");
            let allowed = (budget * rep.rows as f64).floor() as usize;
            prop_assert!(rep.threat_flagged + rep.unknown_flagged <= allowed, "{:?}", rep);
        }
    }
}
