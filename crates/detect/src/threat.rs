//! Armed threats: the plain description of a threat the detector looks for (prototypes in embedding
//! space, a calibrated threshold, the EVE signature it alerts with), a JSON threat file for tools and
//! tests, and arming a threat from support embeddings.
//!
//! It does not store threats durably or version them (that is the threat library's job); it never
//! runs the encoder.

use std::path::Path;

use metaids_model::decision::upper_quantile;
use metaids_model::ThreatModel;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DetectError, Result};

/// The EVE `signature_id` of unknown-anomaly alerts.
pub const UNKNOWN_SIGNATURE_ID: u32 = 9_000_000;
/// First signature id of [`stable_signature_id`] (Suricata leaves 9,000,000 and up to local use).
pub const SIGNATURE_ID_BASE: u32 = 9_000_001;
/// Number of signature ids [`stable_signature_id`] spreads names over.
pub const SIGNATURE_ID_SPAN: u32 = 999_999;

/// A threat armed for detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArmedThreat {
    /// Library id of the threat.
    pub id: u32,
    /// EVE `alert.signature_id`: stable for the threat across runs and library versions.
    pub signature_id: u32,
    /// EVE `alert.rev`: bumped when the threat's prototypes or threshold change.
    pub rev: u32,
    /// Name (EVE `alert.signature` is `metaids <name>`).
    pub name: String,
    /// EVE `alert.category`.
    pub category: String,
    /// EVE `alert.severity`: 1 (high) … 4 (low).
    pub severity: u8,
    /// Prototypes in embedding space, `m × dim`, row-major.
    pub prototypes: Vec<f32>,
    /// Calibrated threshold τ on the score `min_j d(x, B_j) − min_i d(x, p_i)`.
    pub threshold: f32,
}

impl ArmedThreat {
    /// Number of prototypes for embedding size `dim`.
    pub fn prototype_count(&self, dim: usize) -> usize {
        self.prototypes.len().checked_div(dim).unwrap_or(0)
    }

    /// Refuses a threat that cannot be scored with embeddings of size `dim`.
    pub fn validate(&self, dim: usize) -> Result<()> {
        let err = |field: &'static str, message: String| DetectError::Threat {
            name: self.name.clone(),
            field,
            message,
        };
        if self.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }
        if self.prototypes.is_empty() || dim == 0 || !self.prototypes.len().is_multiple_of(dim) {
            return Err(err(
                "prototypes",
                format!(
                    "expected a positive multiple of the embedding size {dim} values, found {}",
                    self.prototypes.len()
                ),
            ));
        }
        if let Some(i) = self.prototypes.iter().position(|v| !v.is_finite()) {
            return Err(err(
                "prototypes",
                format!("value {i} is not finite ({})", self.prototypes[i]),
            ));
        }
        if !self.threshold.is_finite() {
            return Err(err(
                "threshold",
                format!("expected a finite number, found {}", self.threshold),
            ));
        }
        if !(1..=4).contains(&self.severity) {
            return Err(err(
                "severity",
                format!("expected 1 (high) to 4 (low), found {}", self.severity),
            ));
        }
        if self.signature_id == UNKNOWN_SIGNATURE_ID {
            return Err(err(
                "signature_id",
                format!("{UNKNOWN_SIGNATURE_ID} is reserved for unknown anomalies"),
            ));
        }
        Ok(())
    }
}

/// A signature id derived from a threat name: `SIGNATURE_ID_BASE + sha256(name) mod SIGNATURE_ID_SPAN`,
/// so the same name always gets the same id (a library may assign its own instead).
pub fn stable_signature_id(name: &str) -> u32 {
    let h = Sha256::digest(name.as_bytes());
    let v = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    SIGNATURE_ID_BASE + v % SIGNATURE_ID_SPAN
}

/// Arms a threat from the embeddings of its support flows: one prototype, the support mean (the
/// model's enrolment rule), and a threshold calibrated on the model's held-out benign rows so that
/// at most `⌊budget · n⌋` of them would be flagged.
///
/// # Shapes
/// `support`: `K × dim` embeddings.
pub fn arm(
    model: &ThreatModel,
    id: u32,
    name: &str,
    support: &[f32],
    budget: f64,
) -> Result<ArmedThreat> {
    let dim = model.dim();
    if support.is_empty() || !support.len().is_multiple_of(dim) {
        return Err(DetectError::Threat {
            name: name.to_string(),
            field: "support",
            message: format!(
                "expected K × {dim} embedding values with K ≥ 1, found {}",
                support.len()
            ),
        });
    }
    if !(budget > 0.0 && budget < 1.0) {
        return Err(DetectError::Config {
            field: "budget",
            message: format!("expected a false-positive budget in (0, 1), found {budget}"),
        });
    }
    let family = model.reference.enrol_at(support, budget);
    let threat = ArmedThreat {
        id,
        signature_id: stable_signature_id(name),
        rev: 1,
        name: name.to_string(),
        category: "Few-shot threat".to_string(),
        severity: 2,
        prototypes: family.centre,
        threshold: family.threshold,
    };
    threat.validate(dim)?;
    Ok(threat)
}

/// Recalibrates a threat's threshold against the model's benign calibration rows at `budget` (for
/// threats with several prototypes, whose score uses the nearest one).
pub fn calibrate(model: &ThreatModel, threat: &mut ArmedThreat, budget: f64) {
    let dim = model.dim();
    let reference = &model.reference;
    let mut scores: Vec<f32> = reference
        .calibration
        .chunks_exact(dim)
        .map(|c| {
            reference.benign_distance(c)
                - metaids_model::decision::nearest(c, &threat.prototypes, dim).1
        })
        .collect();
    threat.threshold = upper_quantile(&mut scores, budget);
}

/// A JSON file of armed threats: what `metaids detect --library` reads until the threat library is
/// wired in, and what tests write.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreatSet {
    /// Format version of this file (1).
    pub format_version: u32,
    /// Version of the library the threats come from (reported in every alert).
    pub library_version: u64,
    /// The threats.
    pub threats: Vec<ArmedThreat>,
}

/// The [`ThreatSet::format_version`] this build reads and writes.
pub const THREAT_SET_VERSION: u32 = 1;

impl ThreatSet {
    /// A set of the current format.
    pub fn new(library_version: u64, threats: Vec<ArmedThreat>) -> Self {
        ThreatSet {
            format_version: THREAT_SET_VERSION,
            library_version,
            threats,
        }
    }

    /// Reads a threat file, refusing another format version, unknown fields and malformed threats
    /// (checked against `dim` when given).
    pub fn load(path: &Path, dim: Option<usize>) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(DetectError::io(path))?;
        let set: ThreatSet = serde_json::from_str(&text).map_err(|e| DetectError::ThreatFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        if set.format_version != THREAT_SET_VERSION {
            return Err(DetectError::ThreatFile {
                path: path.to_path_buf(),
                message: format!(
                    "field format_version: this build reads {THREAT_SET_VERSION}, found {}",
                    set.format_version
                ),
            });
        }
        if let Some(dim) = dim {
            for t in &set.threats {
                t.validate(dim)?;
            }
        }
        Ok(set)
    }

    /// The threats of one threat-library version, armed as the library fitted them (same centres, same
    /// threshold, same signature id). `rev` is the number of examples (support and negatives) the
    /// threat was last fitted from, so it moves whenever analyst feedback refits it.
    pub fn from_library(version: &metaids_library::LibraryVersion) -> Self {
        let threats = version
            .threats
            .iter()
            .map(|t| ArmedThreat {
                id: t.id,
                signature_id: t.signature_id,
                rev: u32::try_from(t.support.len() + t.negatives.len()).unwrap_or(u32::MAX),
                name: t.name.clone(),
                category: t.category.clone(),
                severity: t.severity,
                prototypes: t.prototypes.iter().flatten().copied().collect(),
                threshold: t.threshold,
            })
            .collect();
        ThreatSet::new(version.version, threats)
    }

    /// Writes the set as pretty JSON, atomically (temporary file, fsync, rename).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(|e| DetectError::ThreatFile {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::sink::write_atomic(path, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn threat() -> ArmedThreat {
        ArmedThreat {
            id: 1,
            signature_id: stable_signature_id("ssh guess"),
            rev: 1,
            name: "ssh guess".into(),
            category: "Brute force".into(),
            severity: 2,
            prototypes: vec![0.0, 1.0, 2.0, 3.0],
            threshold: 0.5,
        }
    }

    #[test]
    fn signature_ids_are_stable_and_in_range() {
        let a = stable_signature_id("ssh guess");
        assert_eq!(a, stable_signature_id("ssh guess"));
        assert_ne!(a, stable_signature_id("ftp guess"));
        assert!((SIGNATURE_ID_BASE..SIGNATURE_ID_BASE + SIGNATURE_ID_SPAN).contains(&a));
    }

    #[test]
    fn validation_names_the_field() {
        assert!(threat().validate(2).is_ok());
        assert_eq!(threat().prototype_count(2), 2);
        let e = threat().validate(3).expect_err("dim");
        assert!(e.to_string().contains("prototypes"), "{e}");
        let mut t = threat();
        t.severity = 7;
        assert!(t
            .validate(2)
            .expect_err("sev")
            .to_string()
            .contains("severity"));
        let mut t = threat();
        t.threshold = f32::NAN;
        assert!(t
            .validate(2)
            .expect_err("thr")
            .to_string()
            .contains("threshold"));
        let mut t = threat();
        t.signature_id = UNKNOWN_SIGNATURE_ID;
        assert!(t.validate(2).is_err());
    }

    #[test]
    fn threat_file_round_trips_and_refuses_bad_input() {
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("lib.json");
        let set = ThreatSet::new(3, vec![threat()]);
        set.save(&p).expect("save");
        assert_eq!(ThreatSet::load(&p, Some(2)).expect("load"), set);
        assert!(ThreatSet::load(&p, Some(3)).is_err());
        std::fs::write(
            &p,
            "{\"format_version\":1,\"library_version\":1,\"threats\":[],\"x\":1}",
        )
        .expect("write");
        let e = ThreatSet::load(&p, None).expect_err("unknown field");
        assert!(
            e.to_string().contains("lib.json") && e.to_string().contains('x'),
            "{e}"
        );
        std::fs::write(
            &p,
            "{\"format_version\":2,\"library_version\":1,\"threats\":[]}",
        )
        .expect("write");
        assert!(ThreatSet::load(&p, None)
            .expect_err("version")
            .to_string()
            .contains("format_version"));
    }
}
