//! The [`Decider`]: threats armed against one benign reference, decided by [`rule`] (written once,
//! in [`crate::rule`]) at their calibrated thresholds, with each verdict ranked among the benign
//! calibration rows ([`Verdict::confidence`]).
//!
//! It reads no file and runs no encoder: callers pass embeddings.

use crate::error::{DecideError, Result};
use crate::geometry::nearest;
use crate::reference::BenignReference;
pub use crate::rule::{rule, Verdict, VerdictKind};
use crate::site_forest::SiteForest;
use crate::threat::Threat;

/// Whether `p` is nearer one of the `rejected` rows than any of the `support` rows (rows of `p`'s
/// width, row-major; never without a rejected row).
fn nearer_a_rejection(p: &[f32], support: &[f32], rejected: &[f32]) -> bool {
    let w = p.len().max(1);
    !rejected.is_empty()
        && crate::geometry::min_distance(p, rejected.chunks_exact(w))
            < crate::geometry::min_distance(p, support.chunks_exact(w))
}

/// Fraction of the sorted `values` strictly below `x`.
fn percentile(sorted: &[f32], x: f32) -> f32 {
    if sorted.is_empty() {
        return 0.5;
    }
    let below = sorted.partition_point(|&v| v < x);
    below as f32 / sorted.len() as f32
}

/// Threats armed against one benign reference: the [`rule`] at their thresholds, with each verdict
/// ranked among the reference's calibration rows.
#[derive(Debug, Clone)]
pub struct Decider {
    reference: BenignReference,
    threats: Vec<Threat>,
    /// Per threat, its prototypes row-major (`m × dim`).
    prototypes: Vec<Vec<f32>>,
    unknown_threshold: f32,
    /// Per threat, sorted `s_t(c)` over the calibration rows.
    calibration_scores: Vec<Vec<f32>>,
    /// Sorted `min(db(c), min_t dt(c))` over the calibration rows.
    calibration_unknown: Vec<f32>,
    /// The site forest naming the threats instead of their prototypes, when armed
    /// ([`Decider::with_site_forest`]).
    forest: Option<SiteForest>,
    /// With a site forest: sorted `db(c)` over the calibration rows (the unknown rule's statistic
    /// then).
    calibration_benign: Vec<f32>,
    /// With a site forest, per threat: its support flows' and its negative examples' embeddings,
    /// row-major (the analyst's rejections veto the forest: [`Decider::decide_flow`]).
    support_negatives: Vec<(Vec<f32>, Vec<f32>)>,
    /// With a site forest, per threat: its support flows' and its negative examples' rows in the
    /// forest's feature space, row-major, for the flows that keep feature values
    /// ([`Decider::with_rejected_rows`]; empty: none).
    rejected_rows: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Decider {
    /// Arms `threats` (each checked with [`Threat::validate`]; a bad one is named by its index) with
    /// the unknown rule at `unknown_threshold` (`+inf`: off).
    pub fn new(
        reference: BenignReference,
        threats: Vec<Threat>,
        unknown_threshold: f32,
    ) -> Result<Self> {
        let dim = reference.dim;
        for (i, t) in threats.iter().enumerate() {
            t.validate(dim).map_err(|e| match e {
                DecideError::Invalid { field, message } => DecideError::Invalid {
                    field: format!("threats[{i}] ({}).{field}", t.name),
                    message,
                },
            })?;
        }
        if unknown_threshold.is_nan() {
            return Err(DecideError::invalid(
                "unknown_threshold",
                "NaN: expected a number or +inf",
            ));
        }
        let prototypes: Vec<Vec<f32>> = threats.iter().map(Threat::flat_prototypes).collect();
        let cal_db: Vec<f32> = reference
            .calibration
            .chunks_exact(dim)
            .map(|c| reference.benign_distance(c))
            .collect();
        let cal_dt: Vec<Vec<f32>> = prototypes
            .iter()
            .map(|p| {
                reference
                    .calibration
                    .chunks_exact(dim)
                    .map(|c| nearest(c, p, dim).1)
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
        Ok(Decider {
            reference,
            threats,
            prototypes,
            unknown_threshold,
            calibration_scores,
            calibration_unknown,
            forest: None,
            calibration_benign: Vec::new(),
            support_negatives: Vec::new(),
            rejected_rows: Vec::new(),
        })
    }

    /// Names threats with `forest` (fitted on these threats' support flows, in order) instead of
    /// their prototypes; the unknown rule then reads the benign distance alone, at the same
    /// threshold (a site profile's is calibrated on it). Verdicts then need each flow's feature
    /// row ([`Decider::decide_flow`]).
    pub fn with_site_forest(mut self, forest: SiteForest) -> Result<Self> {
        if forest.threats() != self.threats.len() {
            return Err(DecideError::invalid(
                "site forest",
                format!(
                    "fitted on {} threats, {} armed",
                    forest.threats(),
                    self.threats.len()
                ),
            ));
        }
        let dim = self.dim();
        let mut db: Vec<f32> = self
            .reference
            .calibration
            .chunks_exact(dim)
            .map(|c| self.reference.benign_distance(c))
            .collect();
        db.sort_by(f32::total_cmp);
        self.calibration_benign = db;
        let flat = |flows: &[crate::threat::SupportFlow]| -> Vec<f32> {
            flows
                .iter()
                .flat_map(|f| f.embedding.iter().copied())
                .collect()
        };
        self.support_negatives = self
            .threats
            .iter()
            .map(|t| (flat(&t.support), flat(&t.negatives)))
            .collect();
        self.forest = Some(forest);
        Ok(self)
    }

    /// Arms the feature-space veto of a site forest: per threat (in order), its support flows'
    /// rows and its negative examples' rows (flows an analyst rejected as it, where their alerts
    /// carried feature values), in the forest's row space. A flow the forest names as threat `t`
    /// whose row is nearer one of `t`'s rejected rows than any of its support rows is not named
    /// ([`Decider::decide_flow`]). Refused without a site forest, for another number of threats
    /// and for rows of another width.
    pub fn with_rejected_rows(mut self, rows: Vec<(Vec<f32>, Vec<f32>)>) -> Result<Self> {
        let Some(forest) = &self.forest else {
            return Err(DecideError::invalid(
                "rejected rows",
                "no site forest is armed: the rows veto its names",
            ));
        };
        if rows.len() != self.threats.len() {
            return Err(DecideError::invalid(
                "rejected rows",
                format!("{} threats' rows, {} armed", rows.len(), self.threats.len()),
            ));
        }
        let w = forest.width();
        if let Some(i) = rows
            .iter()
            .position(|(s, r)| !s.len().is_multiple_of(w) || !r.len().is_multiple_of(w))
        {
            return Err(DecideError::invalid(
                format!("rejected rows[{i}]"),
                format!("rows of another width than the forest's {w}"),
            ));
        }
        self.rejected_rows = rows;
        Ok(self)
    }

    /// The site forest, when threats are named by one.
    pub fn site_forest(&self) -> Option<&SiteForest> {
        self.forest.as_ref()
    }

    /// The verdict of a flow from its embedding `e` and its preprocessed feature row `x`: with a
    /// site forest, a threat when the forest names one — unless the flow's embedding is nearer one
    /// of that threat's negative examples (flows an analyst rejected as it) than any of its support
    /// flows, or its row nearer one of their rows than any support row
    /// ([`Decider::with_rejected_rows`]), so a rejected flow and its like are not named again —
    /// else the unknown rule on the benign distance; without one, [`Decider::decide`] (`x`
    /// unused).
    ///
    /// # Shapes
    /// `e`: `dim`, `x`: the forest's row width → one [`Verdict`].
    pub fn decide_flow(&self, e: &[f32], x: &[f32]) -> Verdict {
        let Some(forest) = &self.forest else {
            return self.decide(e);
        };
        let dim = self.dim();
        let db = self.reference.benign_distance(e);
        let (score, t) = forest.score(x);
        let margin = score - forest.threshold();
        // Vetoed when the flow is nearer a rejected flow of `t` than any of its support flows, in
        // the embedding or in the forest's feature space.
        let vetoed = || {
            let (support, negatives) = &self.support_negatives[t];
            nearer_a_rejection(e, support, negatives)
                || self
                    .rejected_rows
                    .get(t)
                    .is_some_and(|(support, rejected)| nearer_a_rejection(x, support, rejected))
        };
        if margin > 0.0 && !vetoed() {
            return Verdict {
                kind: VerdictKind::Threat,
                threat: Some(t),
                distance: nearest(e, &self.prototypes[t], dim).1,
                benign_distance: db,
                score: margin,
                confidence: forest.percentile(score),
            };
        }
        let closest = self
            .prototypes
            .iter()
            .map(|p| nearest(e, p, dim).1)
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(&b.1));
        let unknown_margin = db - self.unknown_threshold;
        let (kind, score) = if unknown_margin > 0.0 {
            (VerdictKind::Unknown, unknown_margin)
        } else if self.unknown_threshold.is_infinite() {
            (VerdictKind::Benign, margin)
        } else {
            (VerdictKind::Benign, margin.max(unknown_margin))
        };
        let rank = percentile(&self.calibration_benign, db);
        Verdict {
            kind,
            threat: closest.map(|(t, _)| t),
            distance: closest.map_or(f32::INFINITY, |(_, d)| d),
            benign_distance: db,
            score,
            confidence: match kind {
                VerdictKind::Unknown => rank,
                _ if score == margin => 1.0 - forest.percentile(score + forest.threshold()),
                _ => 1.0 - rank,
            },
        }
    }

    /// Verdicts of a batch of flows (embeddings and feature rows, row-major, one per flow; `rows`
    /// may be empty without a site forest), into a reused buffer.
    pub fn decide_flows(&self, embeddings: &[f32], rows: &[f32], out: &mut Vec<Verdict>) {
        let Some(forest) = &self.forest else {
            return self.decide_batch(embeddings, out);
        };
        out.clear();
        out.extend(
            embeddings
                .chunks_exact(self.dim())
                .zip(rows.chunks_exact(forest.width()))
                .map(|(e, x)| self.decide_flow(e, x)),
        );
    }

    /// The benign reference.
    pub fn reference(&self) -> &BenignReference {
        &self.reference
    }

    /// The armed threats.
    pub fn threats(&self) -> &[Threat] {
        &self.threats
    }

    /// Threat `t`'s prototypes, row-major.
    pub fn prototypes(&self, t: usize) -> &[f32] {
        &self.prototypes[t]
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.reference.dim
    }

    /// The unknown threshold in use (`+inf` when the rule is off).
    pub fn unknown_threshold(&self) -> f32 {
        self.unknown_threshold
    }

    /// The verdict of one embedding, with its confidence.
    ///
    /// # Shapes
    /// `e`: `dim` → one [`Verdict`].
    pub fn decide(&self, e: &[f32]) -> Verdict {
        let dim = self.dim();
        let db = self.reference.benign_distance(e);
        let mut v = rule(
            db,
            self.prototypes
                .iter()
                .zip(&self.threats)
                .map(|(p, t)| (nearest(e, p, dim).1, t.threshold)),
            self.unknown_threshold,
        );
        let stat = db.min(v.distance);
        v.confidence = match (v.kind, v.threat) {
            (VerdictKind::Threat, Some(t)) => {
                percentile(&self.calibration_scores[t], db - v.distance)
            }
            (VerdictKind::Unknown, _) => percentile(&self.calibration_unknown, stat),
            // Benign: the closer of the two rules says how far from alerting the flow is.
            (_, Some(t))
                if self.unknown_threshold.is_infinite()
                    || v.score > stat - self.unknown_threshold =>
            {
                1.0 - percentile(
                    &self.calibration_scores[t],
                    v.score + self.threats[t].threshold,
                )
            }
            _ => 1.0 - percentile(&self.calibration_unknown, stat),
        };
        v
    }

    /// Verdicts of a batch of embeddings, into a reused buffer.
    ///
    /// # Shapes
    /// `embeddings`: `n × dim` → `n` verdicts.
    pub fn decide_batch(&self, embeddings: &[f32], out: &mut Vec<Verdict>) {
        out.clear();
        out.extend(embeddings.chunks_exact(self.dim()).map(|e| self.decide(e)));
    }

    /// The margin the verdict's rule gives `e`: threat `t`'s margin for a threat verdict, else the
    /// unknown margin (what an explanation's occlusion lowers).
    ///
    /// # Shapes
    /// `e`: `dim` → scalar.
    pub fn margin(&self, e: &[f32], kind: VerdictKind, threat: Option<usize>) -> f32 {
        self.margin_flow(e, &[], kind, threat)
    }

    /// [`Decider::margin`] of a flow with its feature row `x`: with a site forest, a threat
    /// verdict's margin is the forest's score over its threshold and the unknown margin reads the
    /// benign distance alone.
    ///
    /// # Shapes
    /// `e`: `dim`, `x`: the forest's row width (unused without one) → scalar.
    pub fn margin_flow(
        &self,
        e: &[f32],
        x: &[f32],
        kind: VerdictKind,
        threat: Option<usize>,
    ) -> f32 {
        if let Some(forest) = &self.forest {
            return match kind {
                VerdictKind::Threat if x.len() == forest.width() => {
                    forest.score(x).0 - forest.threshold()
                }
                _ => self.reference.benign_distance(e) - self.unknown_threshold,
            };
        }
        let dim = self.dim();
        let db = self.reference.benign_distance(e);
        match (kind, threat) {
            (VerdictKind::Threat, Some(t)) => {
                db - nearest(e, &self.prototypes[t], dim).1 - self.threats[t].threshold
            }
            _ => {
                let dt = self
                    .prototypes
                    .iter()
                    .map(|p| nearest(e, p, dim).1)
                    .fold(f32::INFINITY, f32::min);
                db.min(dt) - self.unknown_threshold
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::threat::{ThreatDraft, SIGNATURE_BASE};
    use proptest::prelude::*;

    /// Benign reference: 400 rows in a disc of radius 3 around (0, 0), prototype at the origin.
    fn reference(budget: f64) -> BenignReference {
        let mut cal = Vec::new();
        for i in 0..400 {
            let a = i as f32 * 0.37;
            let r = (i % 20) as f32 * 0.15;
            cal.extend_from_slice(&[r * a.cos(), r * a.sin()]);
        }
        BenignReference::new(2, vec![0.0, 0.0], cal, budget)
    }

    fn threat(r: &BenignReference, id: u32, name: &str, at: [f32; 2]) -> Threat {
        let rows: Vec<f32> = (0..5)
            .flat_map(|i| [at[0] + i as f32 * 0.1, at[1]])
            .collect();
        let draft = ThreatDraft::from_embeddings(name, &rows, 2, "t.csv", "test");
        Threat::enrol(r, id, &draft, r.fpr_budget, String::new()).expect("enrol")
    }

    /// A site forest over 2-value feature rows: benign rows in [0, 1)², threat 0's support at
    /// column 1 = 5 (its embedding sits among the benign ones: the forest, not the prototypes,
    /// must name it).
    fn forest() -> SiteForest {
        let row = |i: usize| [(i % 17) as f32 / 17.0, (i % 13) as f32 / 13.0];
        let benign: Vec<f32> = (0..300).flat_map(row).collect();
        let cal: Vec<f32> = (300..700).flat_map(row).collect();
        let support: Vec<f32> = (0..5).flat_map(|i| [row(i)[0], 5.0]).collect();
        SiteForest::learn(&benign, &[support], &cal, 2, 0.01, 3).expect("forest")
    }

    #[test]
    fn a_site_forest_names_threats_the_embedding_cannot_and_rejections_veto_it() {
        let r = reference(0.01);
        // The threat's embeddings lie in the benign cloud, far from where its prototypes could
        // flag without flagging benign rows.
        let t = threat(&r, 1, "hidden", [0.2, 0.0]);
        let u = r.unknown_threshold;
        let d = Decider::new(r.clone(), vec![t.clone()], u)
            .expect("arm")
            .with_site_forest(forest())
            .expect("forest");
        let inside = [0.25, 0.05];
        // Named by its feature row, whatever its embedding.
        let v = d.decide_flow(&inside, &[0.5, 5.0]);
        assert_eq!((v.kind, v.threat), (VerdictKind::Threat, Some(0)), "{v:?}");
        assert!(v.score > 0.0 && v.confidence > 0.9, "{v:?}");
        assert!(d.margin_flow(&inside, &[0.5, 5.0], v.kind, v.threat) > 0.0);
        // A benign row: benign, and the unknown rule reads the benign distance alone.
        assert_eq!(
            d.decide_flow(&inside, &[0.5, 0.5]).kind,
            VerdictKind::Benign
        );
        assert_eq!(
            d.decide_flow(&[40.0, 40.0], &[0.5, 0.5]).kind,
            VerdictKind::Unknown
        );
        // Without a forest, the same decider decides by prototypes and ignores the row.
        let plain = Decider::new(r.clone(), vec![t.clone()], u).expect("arm");
        assert_eq!(
            plain.decide_flow(&inside, &[0.5, 5.0]),
            plain.decide(&inside)
        );
        // A rejected flow (a negative example of the threat) vetoes the forest near it.
        let mut rejected = t.clone();
        rejected.negatives.push(crate::threat::SupportFlow {
            source: "alerts.json".into(),
            locator: "alert 1".into(),
            embedding: vec![-1.0, -1.0],
            values: crate::threat::FlowValues::default(),
            context: Vec::new(),
        });
        let d = Decider::new(r, vec![rejected], u)
            .expect("arm")
            .with_site_forest(forest())
            .expect("forest");
        assert_ne!(
            d.decide_flow(&[-1.0, -1.0], &[0.5, 5.0]).kind,
            VerdictKind::Threat
        );
        assert_eq!(
            d.decide_flow(&inside, &[0.5, 5.0]).kind,
            VerdictKind::Threat
        );
        // A forest fitted for another number of threats is refused.
        let two = Decider::new(reference(0.01), Vec::new(), u).expect("arm");
        assert!(two.with_site_forest(forest()).is_err());
    }

    #[test]
    fn rejected_rows_veto_the_forest_in_feature_space() {
        let r = reference(0.01);
        let t = threat(&r, 1, "hidden", [0.2, 0.0]);
        let u = r.unknown_threshold;
        let armed = || {
            Decider::new(r.clone(), vec![t.clone()], u)
                .expect("arm")
                .with_site_forest(forest())
                .expect("forest")
        };
        // Support rows at column 1 = 5 with column 0 in [0, 0.3]; an analyst rejected a flow
        // named as the threat whose column 0 was 0.95 (its embedding is the support's, so the
        // embedding's veto cannot tell them apart).
        let support: Vec<f32> = (0..5).flat_map(|i| [i as f32 / 17.0, 5.0]).collect();
        let d = armed()
            .with_rejected_rows(vec![(support.clone(), vec![0.95, 5.0])])
            .expect("rows");
        let e = [0.25, 0.05];
        assert_eq!(
            armed().decide_flow(&e, &[0.9, 5.0]).kind,
            VerdictKind::Threat
        );
        assert_ne!(d.decide_flow(&e, &[0.9, 5.0]).kind, VerdictKind::Threat);
        // Flows like the support are still named.
        assert_eq!(d.decide_flow(&e, &[0.1, 5.0]).threat, Some(0));
        assert_eq!(d.decide_flow(&e, &[0.1, 5.0]).kind, VerdictKind::Threat);
        // Refused: no forest, another number of threats, another width.
        let plain = Decider::new(r.clone(), vec![t.clone()], u).expect("arm");
        assert!(plain
            .with_rejected_rows(vec![(support.clone(), Vec::new())])
            .is_err());
        assert!(armed().with_rejected_rows(Vec::new()).is_err());
        assert!(armed()
            .with_rejected_rows(vec![(support, vec![1.0, 2.0, 3.0])])
            .is_err());
    }

    #[test]
    fn percentile_is_monotone() {
        let s = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&s, 0.0), 0.0);
        assert_eq!(percentile(&s, 2.5), 0.5);
        assert_eq!(percentile(&s, 9.0), 1.0);
        assert!(percentile(&s, 3.0) <= percentile(&s, 3.5));
        assert_eq!(percentile(&[], 1.0), 0.5);
    }

    #[test]
    fn decider_names_the_threat_the_unknown_and_the_benign() {
        let r = reference(0.01);
        let ssh = threat(&r, 1, "ssh", [20.0, 0.0]);
        let scan = threat(&r, 2, "scan", [0.0, -20.0]);
        let d = Decider::new(r.clone(), vec![ssh, scan], r.unknown_threshold).expect("arm");
        let v = d.decide(&[20.2, 0.1]);
        assert_eq!((v.kind, v.flagged()), (VerdictKind::Threat, Some(0)));
        assert!(v.score > 0.0 && v.confidence >= 0.99, "{v:?}");
        let v = d.decide(&[0.1, -20.1]);
        assert_eq!((v.kind, v.flagged()), (VerdictKind::Threat, Some(1)));
        let v = d.decide(&[-40.0, 40.0]);
        assert_eq!(v.kind, VerdictKind::Unknown);
        assert!(v.score > 0.0);
        let v = d.decide(&[0.1, 0.1]);
        assert_eq!(v.kind, VerdictKind::Benign);
        assert!(v.score <= 0.0);
        // The unknown rule off: the far flow is benign, nearest threat still named.
        let off = Decider::new(r.clone(), d.threats().to_vec(), f32::INFINITY).expect("arm");
        let v = off.decide(&[-40.0, 40.0]);
        assert_eq!(v.kind, VerdictKind::Benign);
        assert!(v.threat.is_some());
    }

    #[test]
    fn decider_refuses_threats_it_cannot_score() {
        let r = reference(0.01);
        let mut t = threat(&r, 1, "ssh", [20.0, 0.0]);
        t.prototypes[0].push(1.0);
        let e = Decider::new(r.clone(), vec![t], 1.0).expect_err("dim");
        assert!(
            e.to_string().contains("threats[0] (ssh).prototypes[0]"),
            "{e}"
        );
        let mut t = threat(&r, 1, "ssh", [20.0, 0.0]);
        t.threshold = f32::NAN;
        assert!(Decider::new(r.clone(), vec![t], 1.0).is_err());
        let mut t = threat(&r, 1, "ssh", [20.0, 0.0]);
        t.signature_id = SIGNATURE_BASE;
        assert!(Decider::new(r.clone(), vec![t], 1.0).is_err());
        let mut t = threat(&r, 1, "ssh", [20.0, 0.0]);
        t.prototypes = vec![vec![1.0, 1.0]; crate::threat::MAX_PROTOTYPES + 1];
        assert!(Decider::new(r, vec![t], 1.0).is_err());
    }

    proptest! {
        /// The decider and the benchmark's bare rule agree on every flow, and each threat flags at
        /// most ⌊α n⌋ of the calibration rows it was fitted on.
        #[test]
        fn one_rule_for_every_caller(
            x in -30.0f32..30.0, y in -30.0f32..30.0,
            tx in 6.0f32..25.0, ty in -25.0f32..25.0,
        ) {
            let r = reference(0.02);
            let t = threat(&r, 1, "t", [tx, ty]);
            let fam = crate::FamilyPrototype {
                centre: t.prototypes[0].clone(),
                threshold: t.threshold,
                known_threshold: None,
            };
            let d = Decider::new(r.clone(), vec![t.clone()], r.unknown_threshold).expect("arm");
            let a = d.decide(&[x, y]);
            let b = r.decide(&[x, y], std::slice::from_ref(&fam));
            prop_assert_eq!((a.kind, a.flagged()), (b.kind, b.flagged()));
            prop_assert_eq!(a.score, b.score);
            let flagged = r
                .calibration
                .chunks_exact(2)
                .filter(|c| d.decide(c).kind == VerdictKind::Threat)
                .count();
            prop_assert!(flagged <= 8, "{} calibration rows flagged", flagged);
        }
    }
}
