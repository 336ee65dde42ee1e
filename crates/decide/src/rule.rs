//! The verdict rule — benign, a threat, or an unknown anomaly — written once. Every caller (the
//! model's benchmark rules, the scoring kernel, the detector, the standard-split protocol, the
//! [`crate::verdict::Decider`]) decides through [`rule`].
//!
//! With `d` the squared Euclidean distance, `B_j` the benign prototypes and `p_{t,i}` the
//! prototypes of threat `t`:
//!
//! * `db(x) = min_j d(x, B_j)`, `dt(x) = min_i d(x, p_{t,i})`, score `s_t(x) = db(x) − dt(x)`;
//! * **threat** `t` iff `s_t(x) > τ_t`, the highest margin `s_t(x) − τ_t` winning (the first threat
//!   on a tie);
//! * else **unknown** iff `min(db(x), min_t dt(x)) > u` (`u = +inf` turns the rule off); else
//!   **benign**.
//!
//! [`Verdict::score`] is the margin of the deciding rule (`s_t − τ_t` for a threat, `min(db, dt) − u`
//! for an unknown; for a benign flow the larger of both margins, ≤ 0). [`Verdict::confidence`] is a
//! monotone map of that statistic: the fraction of the benign calibration rows whose same statistic
//! is lower (for a threat ≥ 1 − α by construction; for a benign flow, one minus that fraction for
//! the closer rule).
//!
//! It reads no file and runs no encoder: callers pass embeddings.

use serde::{Deserialize, Serialize};

/// The kind of a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerdictKind {
    /// Neither a threat nor anomalous.
    Benign,
    /// Flagged for a threat.
    Threat,
    /// Far from every benign and threat prototype.
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

/// What the decision core says about one flow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// The kind.
    pub kind: VerdictKind,
    /// Index into the threats decided among: the flagged threat, else the nearest one (`None`
    /// without threats).
    pub threat: Option<usize>,
    /// Squared distance to the nearest prototype of that threat (`+inf` without threats).
    pub distance: f32,
    /// Squared distance to the nearest benign prototype.
    pub benign_distance: f32,
    /// Margin of the deciding rule (> 0 exactly for threats and unknowns).
    pub score: f32,
    /// Empirical percentile of the deciding statistic among benign calibration rows, in `[0, 1]`
    /// (0 from the bare [`rule`], which holds no calibration rows).
    pub confidence: f32,
}

impl Default for Verdict {
    /// A benign verdict far from everything (a placeholder for buffers the rule fills).
    fn default() -> Self {
        Verdict {
            kind: VerdictKind::Benign,
            threat: None,
            distance: f32::INFINITY,
            benign_distance: f32::INFINITY,
            score: f32::NEG_INFINITY,
            confidence: 0.0,
        }
    }
}

impl Verdict {
    /// The flagged threat's index: `Some` only for a threat verdict.
    pub fn flagged(&self) -> Option<usize> {
        match self.kind {
            VerdictKind::Threat => self.threat,
            _ => None,
        }
    }
}

/// The verdict rule (module documentation) from the flow's benign distance `db`, each threat's
/// `(dt, τ_t)` in order, and the unknown threshold `u`. `confidence` is left at 0.
pub fn rule(db: f32, threats: impl IntoIterator<Item = (f32, f32)>, unknown: f32) -> Verdict {
    let mut best: Option<(usize, f32, f32)> = None;
    let mut closest: Option<(usize, f32)> = None;
    let mut best_margin = f32::NEG_INFINITY;
    for (t, (dt, threshold)) in threats.into_iter().enumerate() {
        if closest.is_none_or(|(_, d)| dt < d) {
            closest = Some((t, dt));
        }
        let margin = db - dt - threshold;
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
            confidence: 0.0,
        };
    }
    let (threat, distance) = match closest {
        Some((t, d)) => (Some(t), d),
        None => (None, f32::INFINITY),
    };
    let unknown_margin = db.min(distance) - unknown;
    let kind = if unknown_margin > 0.0 {
        VerdictKind::Unknown
    } else {
        VerdictKind::Benign
    };
    let score = match kind {
        VerdictKind::Unknown => unknown_margin,
        _ if unknown.is_infinite() => best_margin,
        _ => best_margin.max(unknown_margin),
    };
    Verdict {
        kind,
        threat,
        distance,
        benign_distance: db,
        score,
        confidence: 0.0,
    }
}
