//! The benign reference (benign prototypes and held-out benign calibration rows), family enrolment by
//! support mean, and the calibrated family, known-family and union rules the benchmark compares.
//! The verdict rule itself is [`crate::rule`]'s.
//!
//! Everything here works on plain row-major `f32` embeddings; it never runs the encoder and never
//! sees query labels. The rules, with `d` the squared Euclidean distance, `B₁…B_m` the benign
//! prototypes, `p` a family prototype (mean of its K support embeddings), `C` the held-out benign
//! calibration embeddings (never the evaluation query pool) and `α` the false-positive budget:
//!
//! * family score `s(x) = min_j d(x, B_j) − d(x, p)` (positive when `x` is closer to the family than to
//!   the nearest benign prototype);
//! * family threshold `τ_p` is the `(n − 1 − ⌊α n⌋)`-th smallest of `s(c)` over the `n` rows
//!   `c ∈ C`, so that at most `⌊α n⌋` calibration rows have `s(c) > τ_p`. It may be negative: a flow
//!   somewhat nearer a benign prototype than the family's is still flagged when benign rows seldom
//!   come that near the family. The budget, not the sign of `s`, draws the line: an earlier floor at
//!   0 left most of the budget unused (0.1% FPR at a 1% budget on CIC-IDS2017) and lowered the K=5 F1
//!   on the validation families (NSL-KDD 0.907 without it, 0.867 with it);
//! * `x` is **flagged for the family** iff `s(x) > τ_p`;
//! * unknown threshold `u` = the `(n − 1 − ⌊α n⌋)`-th smallest of `min_j d(c, B_j)` over `C`;
//! * `x` is an **unknown anomaly** iff it is flagged for no enrolled family and
//!   `min(min_j d(x, B_j), min_f d(x, p_f)) > u` (farther than `u` from every benign and every enrolled
//!   family prototype).
//!
//! The evaluation row `protonet+unknown` flags a query when either rule fires, each calibrated at half
//! the budget (`α/2`), so at most `α` of the calibration rows are flagged in all.
//!
//! The **known-family rule** (row `protonet+known`) also keeps prototypes `A_1…A_r` of the attack
//! families known at training time (seeded k-means per family, so a multimodal family gets several):
//!
//! * known score `s_A(x) = min_j d(x, B_j) − min(d(x, p), min_i d(x, A_i))` (positive when `x` is closer
//!   to the new family or to any known attack prototype than to the nearest benign prototype);
//! * threshold `τ_A`, the same upper quantile of `s_A(c)` over `C`, so at most `⌊α n⌋` calibration
//!   rows are flagged;
//! * `x` is flagged iff `s_A(x) > τ_A`. Without known prototypes it is the family rule.
//!
//! The **union rule** gives each of several prototypes `p_1…p_m` (known-family and enrolled ones) the
//! family score `s_i(x) = min_j d(x, B_j) − d(x, p_i)` and its own threshold at one common level:
//!
//! * over `C`, `m_i` is the median of `s_i` and `σ_i = q_i − m_i` its tail spread, `q_i` the upper
//!   quantile at the budget `α` (the prototype's own threshold were it alone);
//! * `z(c) = max_i (s_i(c) − m_i) / σ_i`, and `t` its upper quantile at `α` over `C`;
//! * `τ_i = m_i + t σ_i`, and `x` is flagged iff `s_i(x) > τ_i` for some `i`, so at most
//!   `⌊α n⌋` calibration rows are flagged by the union (`t` is raised to the next value of `z` should
//!   rounding flag more).
//!
//! A prototype close to the benign rows thus gets a high threshold of its own (its median is high)
//! instead of lifting every other prototype's threshold to its scale, as one shared threshold on
//! `min_j d(x, B_j) − min_i d(x, p_i)` would. A common allowance in calibration rows (every `τ_i` its
//! own upper quantile at `k` rows) is too coarse with many prototypes: their top rows differ, so `k`
//! falls to 0 and the budget goes unused; the standardised level `t` is continuous.
//!
//! With a **known share** `σ ∈ (0, 1)` the budget is split instead: `x` is flagged iff `s(x) > τ_p`
//! (family rule at budget `(1 − σ) α`) or `min_j d(x, B_j) − min_i d(x, A_i) > τ_K` (`τ_K` the upper
//! quantile at budget `σ α` over `C`), so at most `⌊(1 − σ) α n⌋ + ⌊σ α n⌋ ≤ ⌊α n⌋` calibration rows
//! are flagged.

use crate::geometry::{mean_row, nearest, sq_dist, upper_quantile};
use crate::rule::{rule, Verdict};

/// Benign side of the decision: prototypes, calibration rows and the unknown threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct BenignReference {
    /// Embedding size.
    pub dim: usize,
    /// Benign prototypes, `m × dim`.
    pub prototypes: Vec<f32>,
    /// Held-out benign calibration embeddings, `n × dim`.
    pub calibration: Vec<f32>,
    /// `min_j d(c, B_j)` per calibration row.
    calibration_benign_distance: Vec<f32>,
    /// False-positive budget α.
    pub fpr_budget: f64,
    /// Unknown-anomaly threshold `u`.
    pub unknown_threshold: f32,
    /// Known attack-family prototypes `A_i`, `r × dim` (empty: none kept).
    pub known: Vec<f32>,
    /// The family of each known prototype (`r` names).
    pub known_families: Vec<String>,
    /// `min_i d(c, A_i)` per calibration row (`+inf` without known prototypes).
    calibration_known_distance: Vec<f32>,
    /// Share σ of the budget given to a separate known-prototype rule (0: one combined score).
    pub known_share: f64,
}

/// A family enrolled from its support rows.
#[derive(Debug, Clone, PartialEq)]
pub struct FamilyPrototype {
    /// Prototype: mean of the support embeddings.
    pub centre: Vec<f32>,
    /// Calibrated threshold `τ_p` on the family score (or `τ_A` on the known score).
    pub threshold: f32,
    /// Threshold `τ_K` of the separate known-prototype rule (known rule with a budget share only).
    pub known_threshold: Option<f32>,
}

impl BenignReference {
    /// Builds the reference from benign prototypes and calibration embeddings.
    ///
    /// # Shapes
    /// `prototypes`: `m × dim`; `calibration`: `n × dim`.
    pub fn new(dim: usize, prototypes: Vec<f32>, calibration: Vec<f32>, fpr_budget: f64) -> Self {
        let calibration_benign_distance: Vec<f32> = calibration
            .chunks_exact(dim)
            .map(|c| nearest(c, &prototypes, dim).1)
            .collect();
        let mut tmp = calibration_benign_distance.clone();
        let unknown_threshold = upper_quantile(&mut tmp, fpr_budget);
        let calibration_known_distance = vec![f32::INFINITY; calibration_benign_distance.len()];
        BenignReference {
            dim,
            prototypes,
            calibration,
            calibration_benign_distance,
            fpr_budget,
            unknown_threshold,
            known: Vec::new(),
            known_families: Vec::new(),
            calibration_known_distance,
            known_share: 0.0,
        }
    }

    /// Adds known attack-family prototypes (replacing any), for the known-family rule; `share` is the
    /// budget share σ of a separate known-prototype rule (0: one combined score; clamped to `[0, 1)`).
    ///
    /// # Shapes
    /// `prototypes`: `r × dim`; `families`: `r` names, one per prototype.
    pub fn with_known(mut self, families: Vec<String>, prototypes: Vec<f32>, share: f64) -> Self {
        self.known_share = if share.is_finite() {
            share.clamp(0.0, 0.999)
        } else {
            0.0
        };
        self.calibration_known_distance = self
            .calibration
            .chunks_exact(self.dim)
            .map(|c| nearest(c, &prototypes, self.dim).1)
            .collect();
        self.known = prototypes;
        self.known_families = families;
        self
    }

    /// Number of known attack-family prototypes.
    pub fn known_prototypes(&self) -> usize {
        self.known.len().checked_div(self.dim).unwrap_or(0)
    }

    /// Distance to the nearest known attack-family prototype (`+inf` without any).
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn known_distance(&self, x: &[f32]) -> f32 {
        nearest(x, &self.known, self.dim).1
    }

    /// Enrols a family for the known-family rule: prototype = support mean; threshold `τ_A`
    /// calibrated on the held-out benign rows at `budget` for the score
    /// `s_A(x) = min_j d(x, B_j) − min(d(x, p), min_i d(x, A_i))`.
    ///
    /// # Shapes
    /// `support`: `K × dim`.
    pub fn enrol_known_at(&self, support: &[f32], budget: f64) -> FamilyPrototype {
        if self.known_share > 0.0 && !self.known.is_empty() {
            let mut fam = self.enrol_at(support, budget * (1.0 - self.known_share));
            let mut scores: Vec<f32> = self
                .calibration_benign_distance
                .iter()
                .zip(&self.calibration_known_distance)
                .map(|(&db, &dk)| db - dk)
                .collect();
            fam.known_threshold = Some(upper_quantile(&mut scores, budget * self.known_share));
            return fam;
        }
        let centre = mean_row(support, self.dim);
        let mut scores: Vec<f32> = self
            .calibration
            .chunks_exact(self.dim)
            .zip(&self.calibration_benign_distance)
            .zip(&self.calibration_known_distance)
            .map(|((c, &db), &dk)| db - sq_dist(c, &centre).min(dk))
            .collect();
        let t = upper_quantile(&mut scores, budget);
        FamilyPrototype {
            centre,
            threshold: t,
            known_threshold: None,
        }
    }

    /// Known-family score `s_A(x)`.
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn known_score(&self, x: &[f32], family: &FamilyPrototype) -> f32 {
        self.benign_distance(x) - sq_dist(x, &family.centre).min(self.known_distance(x))
    }

    /// Whether `x` is flagged by the known-family rule for `family` (enrolled with
    /// [`BenignReference::enrol_known_at`]): `s_A(x) > τ_A`.
    ///
    /// # Shapes
    /// `x`: `dim` → bool.
    pub fn flags_known(&self, x: &[f32], family: &FamilyPrototype) -> bool {
        match family.known_threshold {
            Some(tk) => {
                let db = self.benign_distance(x);
                db - sq_dist(x, &family.centre) > family.threshold
                    || db - self.known_distance(x) > tk
            }
            None => self.known_score(x, family) > family.threshold,
        }
    }

    /// Number of calibration rows.
    pub fn calibration_rows(&self) -> usize {
        self.calibration_benign_distance.len()
    }

    /// The unknown-anomaly threshold at another budget than the model's.
    pub fn unknown_threshold_at(&self, budget: f64) -> f32 {
        let mut tmp = self.calibration_benign_distance.clone();
        upper_quantile(&mut tmp, budget)
    }

    /// Distance to the nearest benign prototype.
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn benign_distance(&self, x: &[f32]) -> f32 {
        nearest(x, &self.prototypes, self.dim).1
    }

    /// Enrols a family from its support embeddings: prototype = their mean; threshold calibrated on
    /// the held-out benign rows.
    ///
    /// # Shapes
    /// `support`: `K × dim`.
    pub fn enrol(&self, support: &[f32]) -> FamilyPrototype {
        self.enrol_at(support, self.fpr_budget)
    }

    /// [`BenignReference::enrol`] with another budget (e.g. half of it, when the unknown-anomaly rule
    /// takes the other half).
    ///
    /// # Shapes
    /// `support`: `K × dim`.
    pub fn enrol_at(&self, support: &[f32], budget: f64) -> FamilyPrototype {
        let centre = mean_row(support, self.dim);
        let mut scores: Vec<f32> = self
            .calibration
            .chunks_exact(self.dim)
            .zip(&self.calibration_benign_distance)
            .map(|(c, &db)| db - sq_dist(c, &centre))
            .collect();
        let t = upper_quantile(&mut scores, budget);
        FamilyPrototype {
            centre,
            threshold: t,
            known_threshold: None,
        }
    }

    /// Per-prototype thresholds under one union budget (the union rule of the module docs): one
    /// [`FamilyPrototype`] per row of `centres`, with `τ_i = m_i + t σ_i` at the common level
    /// `t`, the smallest for which at most `⌊budget · n⌋` calibration rows are flagged by any of them.
    /// Returns the prototypes and `t`.
    ///
    /// # Shapes
    /// `centres`: `m × dim` → `m` prototypes.
    pub fn enrol_union(&self, centres: &[f32], budget: f64) -> (Vec<FamilyPrototype>, f32) {
        let n = self.calibration_rows();
        let scores: Vec<Vec<f32>> = centres
            .chunks_exact(self.dim)
            .map(|p| {
                self.calibration
                    .chunks_exact(self.dim)
                    .zip(&self.calibration_benign_distance)
                    .map(|(c, &db)| db - sq_dist(c, p))
                    .collect()
            })
            .collect();
        // Each prototype's median and tail spread over the calibration rows.
        let spread: Vec<(f32, f32)> = scores
            .iter()
            .map(|s| {
                let m = upper_quantile(&mut s.clone(), 0.5);
                let q = upper_quantile(&mut s.clone(), budget);
                (m, (q - m).max(1e-6))
            })
            .collect();
        let thresholds =
            |t: f32| -> Vec<f32> { spread.iter().map(|&(m, sd)| m + t * sd).collect() };
        let flagged = |tau: &[f32]| -> usize {
            (0..n)
                .filter(|&c| scores.iter().zip(tau).any(|(s, &ti)| s[c] > ti))
                .count()
        };
        let allowed = crate::geometry::allowed_above(budget, n);
        // Standardised score of each calibration row under its most alarming prototype, decreasing.
        let mut z: Vec<f32> = (0..n)
            .map(|c| {
                scores
                    .iter()
                    .zip(&spread)
                    .map(|(s, &(m, sd))| (s[c] - m) / sd)
                    .fold(f32::NEG_INFINITY, f32::max)
            })
            .collect();
        let t = budget_level(&mut z, allowed, f32::NEG_INFINITY, |t| {
            flagged(&thresholds(t))
        })
        .unwrap_or(0.0);
        let families = centres
            .chunks_exact(self.dim)
            .zip(thresholds(t))
            .map(|(p, threshold)| FamilyPrototype {
                centre: p.to_vec(),
                threshold,
                known_threshold: None,
            })
            .collect();
        (families, t)
    }

    /// Whether any of `families` flags `x` (`s(x) > τ_p` for some family), with the benign distance
    /// computed once.
    ///
    /// # Shapes
    /// `x`: `dim` → bool.
    pub fn flags_any(&self, x: &[f32], families: &[FamilyPrototype]) -> bool {
        self.flags_any_at(x, self.benign_distance(x), families)
    }

    /// [`BenignReference::flags_any`] for a caller that already holds `x`'s benign distance
    /// `min_j d(x, B_j)`.
    ///
    /// # Shapes
    /// `x`: `dim` → bool.
    pub fn flags_any_at(
        &self,
        x: &[f32],
        benign_distance: f32,
        families: &[FamilyPrototype],
    ) -> bool {
        families
            .iter()
            .any(|f| benign_distance - sq_dist(x, &f.centre) > f.threshold)
    }

    /// Family score `s(x) = min_j d(x, B_j) − d(x, p)`.
    ///
    /// # Shapes
    /// `x`: `dim` → scalar.
    pub fn family_score(&self, x: &[f32], family: &FamilyPrototype) -> f32 {
        self.benign_distance(x) - sq_dist(x, &family.centre)
    }

    /// Whether `x` is flagged for `family`: `s(x) > τ_p`.
    ///
    /// # Shapes
    /// `x`: `dim` → bool.
    pub fn flags(&self, x: &[f32], family: &FamilyPrototype) -> bool {
        self.family_score(x, family) > family.threshold
    }

    /// The verdict among enrolled `families`, with the unknown-anomaly rule: the one verdict rule
    /// ([`crate::verdict::rule`]) over the families' prototypes and thresholds. The bare rule holds
    /// no calibration ranks, so `confidence` is 0 (a [`crate::Decider`] fills it).
    ///
    /// # Shapes
    /// `x`: `dim` → one [`Verdict`].
    pub fn decide(&self, x: &[f32], families: &[FamilyPrototype]) -> Verdict {
        rule(
            self.benign_distance(x),
            families
                .iter()
                .map(|f| (sq_dist(x, &f.centre), f.threshold)),
            self.unknown_threshold,
        )
    }
}

/// The smallest standardised level at which at most `allowed` rows are flagged: the
/// `(allowed + 1)`-th largest of the rows' levels `z` (raised to `floor`), or the next one up should
/// rounding in `m + t σ` flag more rows (`flags_at` counts the rows flagged at a level). `None`
/// without rows. Shared by the union rule and the site's joint calibration; `z` is reordered.
pub(crate) fn budget_level(
    z: &mut [f32],
    allowed: usize,
    floor: f32,
    flags_at: impl Fn(f32) -> usize,
) -> Option<f32> {
    z.sort_unstable_by(|a, b| b.total_cmp(a));
    let mut level = None;
    for &cand in z
        .iter()
        .take(allowed.min(z.len().saturating_sub(1)) + 1)
        .rev()
    {
        let l = cand.max(floor);
        level = Some(l);
        if flags_at(l) <= allowed {
            break;
        }
    }
    level
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::kmeans;
    use crate::verdict::VerdictKind;

    /// Calibration rows (2-d) that the known-family rule flags.
    fn known_flagged(reference: &BenignReference, cal: &[f32], family: &FamilyPrototype) -> usize {
        cal.chunks_exact(2)
            .filter(|c| reference.flags_known(c, family))
            .count()
    }

    #[test]
    fn kmeans_finds_two_clusters_and_rules_hold() {
        let mut rows = Vec::new();
        for i in 0..50 {
            let e = (i % 5) as f32 * 0.01;
            rows.extend_from_slice(&[0.0 + e, 0.0]);
            rows.extend_from_slice(&[10.0 + e, 0.0]);
        }
        let c = kmeans(&rows, 2, 2, 20, 1);
        let mut xs: Vec<f32> = c.chunks_exact(2).map(|r| r[0]).collect();
        xs.sort_by(f32::total_cmp);
        assert!(xs[0] < 0.1 && xs[1] > 9.9, "{xs:?}");
        assert_eq!(c, kmeans(&rows, 2, 2, 20, 1));
        let reference = BenignReference::new(2, c, rows.clone(), 0.01);
        let fam = reference.enrol(&[5.0, 8.0, 5.0, 8.2]);
        assert!(reference.flags(&[5.0, 8.1], &fam));
        assert!(!reference.flags(&[0.0, 0.0], &fam));
        let flagged = rows
            .chunks_exact(2)
            .filter(|r| reference.flags(r, &fam))
            .count();
        assert!(flagged <= 1);
        let v = reference.decide(&[5.0, 8.1], std::slice::from_ref(&fam));
        assert_eq!((v.kind, v.flagged()), (VerdictKind::Threat, Some(0)));
        let v = reference.decide(&[0.0, 0.0], std::slice::from_ref(&fam));
        assert_eq!((v.kind, v.flagged()), (VerdictKind::Benign, None));
        let v = reference.decide(&[-50.0, -50.0], &[fam]);
        assert_eq!(v.kind, VerdictKind::Unknown);
    }

    #[test]
    fn union_rule_holds_the_budget_and_keeps_thresholds_apart() {
        // Benign rows on a segment of the y axis, benign prototype at the origin.
        let cal: Vec<f32> = (0..400)
            .flat_map(|i| [(i % 7) as f32 * 0.01, -4.0 + i as f32 * 0.02])
            .collect();
        let reference = BenignReference::new(2, vec![0.0, 0.0], cal.clone(), 0.02);
        let budget = 0.01;
        // A known prototype beside the benign rows, and one enrolled among them (benign-looking).
        let known = [6.0f32, 0.0];
        let near = [0.0f32, 4.0];
        let (alone, _) = reference.enrol_union(&known, budget);
        let both: Vec<f32> = known.iter().chain(&near).copied().collect();
        let (fams, _) = reference.enrol_union(&both, budget);
        for fs in [&alone, &fams] {
            let flagged = cal
                .chunks_exact(2)
                .filter(|c| reference.flags_any(c, fs))
                .count();
            assert!(flagged <= 4, "{flagged}");
        }
        // The benign-looking prototype's threshold is its own: the known one's is unchanged.
        assert_eq!(fams[0].threshold, alone[0].threshold);
        assert!(fams[1].threshold > 10.0, "{}", fams[1].threshold);
        let q = [3.5f32, 0.0];
        assert!(reference.flags_any(&q, &alone));
        assert!(reference.flags_any(&q, &fams));
        assert!(!reference.flags_any(&[0.0, 0.5], &fams));
        // Prototypes flagging different calibration rows share the budget, and use it.
        let two = [0.0f32, 4.0, 0.0, -4.0];
        let (fams, t) = reference.enrol_union(&two, budget);
        let flagged = cal
            .chunks_exact(2)
            .filter(|c| reference.flags_any(c, &fams))
            .count();
        assert!((3..=4).contains(&flagged), "{flagged} {t}");
        assert!(fams[0].threshold > 0.0 && fams[1].threshold > 0.0);
        assert_eq!(reference.enrol_union(&[], budget).0, Vec::new());
    }

    #[test]
    fn known_family_rule_flags_known_attacks_within_budget() {
        // Benign rows around (0, 0) with a spread; a known attack family at (20, 0); the new family at
        // (0, 20).
        let mut cal = Vec::new();
        for i in 0..400 {
            let a = i as f32 * 0.37;
            let r = (i % 20) as f32 * 0.15;
            cal.extend_from_slice(&[r * a.cos(), r * a.sin()]);
        }
        let reference = BenignReference::new(2, vec![0.0, 0.0], cal.clone(), 0.01);
        assert_eq!(reference.known_prototypes(), 0);
        let plain = reference.enrol(&[0.0, 20.0, 0.2, 20.0]);
        let near_known = [19.5, 0.3];
        assert!(!reference.flags(&near_known, &plain));
        // Without known prototypes the known rule is the family rule.
        let same = reference.enrol_known_at(&[0.0, 20.0, 0.2, 20.0], 0.01);
        assert_eq!(same, plain);

        let reference = reference.with_known(
            vec!["dos".into(), "dos".into()],
            vec![20.0, 0.0, 20.0, 3.0],
            0.0,
        );
        assert_eq!(reference.known_prototypes(), 2);
        let fam = reference.enrol_known_at(&[0.0, 20.0, 0.2, 20.0], 0.01);
        assert!(reference.flags_known(&near_known, &fam));
        assert!(reference.flags_known(&[0.1, 19.8], &fam));
        assert!(!reference.flags_known(&[0.1, 0.1], &fam));
        // The calibration budget holds: at most ⌊0.01 · 400⌋ = 4 calibration rows flagged.
        let flagged = known_flagged(&reference, &cal, &fam);
        assert!(flagged <= 4, "{flagged}");
        // A benign row pulled towards a known prototype raises the threshold rather than the FPR.
        let mut cal2 = cal.clone();
        for _ in 0..20 {
            cal2.extend_from_slice(&[12.0, 0.0]);
        }
        let r2 = BenignReference::new(2, vec![0.0, 0.0], cal2.clone(), 0.01).with_known(
            vec!["dos".into()],
            vec![20.0, 0.0],
            0.0,
        );
        let f2 = r2.enrol_known_at(&[0.0, 20.0], 0.01);
        let flagged = known_flagged(&r2, &cal2, &f2);
        assert!(flagged <= 4, "{flagged}");
        assert!(r2.flags_known(&[19.0, 0.0], &f2));
        // Split budget: both rules fire, and the union stays within ⌊α n⌋ calibration rows.
        let r3 = BenignReference::new(2, vec![0.0, 0.0], cal2.clone(), 0.02).with_known(
            vec!["dos".into()],
            vec![20.0, 0.0],
            0.5,
        );
        let f3 = r3.enrol_known_at(&[0.0, 20.0], 0.02);
        assert!(f3.known_threshold.is_some());
        assert!(r3.flags_known(&[19.0, 0.0], &f3));
        assert!(r3.flags_known(&[0.0, 19.5], &f3));
        assert!(!r3.flags_known(&[0.1, 0.1], &f3));
        let flagged = known_flagged(&r3, &cal2, &f3);
        assert!(flagged <= 8, "{flagged}");
    }
}
