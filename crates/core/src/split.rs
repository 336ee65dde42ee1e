//! Class-disjoint splits: which families are seen in training, held back for model selection, or novel.
//!
//! A [`SplitSpec`] is a small versioned TOML file kept in the repository (`splits/`); applying it to a
//! [`FlowFrame`] gives a [`Split`] of row indices. Novel families and the benign query pool never reach
//! [`Split::training_rows`], which is all that normalisers, baselines and meta-training may fit on.

use std::collections::BTreeMap;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::frame::FlowFrame;
use crate::schema::{hex, DatasetKind};
use crate::CoreError;

/// The split file format version this build reads.
pub const SPLIT_VERSION: u32 = 1;

/// A split definition, as stored in `splits/<dataset>.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitSpec {
    /// Format version; must equal [`SPLIT_VERSION`].
    pub version: u32,
    /// Dataset kind the split is for.
    pub dataset: DatasetKind,
    /// File names (relative to the data directory; `*` wildcards allowed) that make up the dataset.
    /// A `.gz` copy of a listed file is accepted in its place.
    pub files: Vec<String>,
    /// The benign label.
    pub benign: String,
    /// Families never used for training or any choice: evaluated as unseen.
    pub novel: Vec<String>,
    /// Seen families held back from training for model selection (early stopping, hyper-parameters).
    pub validation: Vec<String>,
    /// Fraction of benign rows put in the query pool that no training ever sees.
    pub benign_query_fraction: f64,
    /// Seed of the benign split.
    pub seed: u64,
    /// Groups of families that are variants of one attack (the same tool or technique against
    /// another service, say): a novel family with a sibling in training is flagged in reports,
    /// since it is less novel than its name says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub siblings: Vec<Vec<String>>,
}

impl SplitSpec {
    /// Parses and validates a split file's text.
    pub fn from_toml(text: &str) -> Result<Self, CoreError> {
        let spec: SplitSpec = toml::from_str(text).map_err(|e| CoreError::Parse {
            what: "split file",
            message: e.to_string(),
        })?;
        spec.validate()?;
        Ok(spec)
    }

    /// Serialises to TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), CoreError> {
        if self.version != SPLIT_VERSION {
            return Err(CoreError::Split(format!(
                "version {} is not supported (this build reads version {SPLIT_VERSION})",
                self.version
            )));
        }
        if !(self.benign_query_fraction > 0.0 && self.benign_query_fraction < 1.0) {
            return Err(CoreError::Split(format!(
                "benign_query_fraction must be in (0, 1), got {}",
                self.benign_query_fraction
            )));
        }
        for v in &self.validation {
            if self.novel.contains(v) {
                return Err(CoreError::Split(format!(
                    "family {v:?} is listed both as novel and as validation"
                )));
            }
        }
        if self.novel.contains(&self.benign) || self.validation.contains(&self.benign) {
            return Err(CoreError::Split(format!(
                "the benign label {:?} cannot be a novel or validation family",
                self.benign
            )));
        }
        if self.novel.is_empty() {
            return Err(CoreError::Split("no novel families listed".into()));
        }
        for group in &self.siblings {
            if group.len() < 2 || group.contains(&self.benign) {
                return Err(CoreError::Split(format!(
                    "sibling group {group:?} needs two or more attack families"
                )));
            }
        }
        Ok(())
    }

    /// The siblings of `family` ([`SplitSpec::siblings`]) that training may see (not novel),
    /// sorted and unique.
    pub fn training_siblings(&self, family: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .siblings
            .iter()
            .filter(|g| g.iter().any(|f| f == family))
            .flatten()
            .filter(|f| *f != family && !self.novel.contains(f) && **f != self.benign)
            .cloned()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Applies the split to a frame.
    ///
    /// # Errors
    /// [`CoreError::Split`] when the frame's kind differs from the split's, or it has no benign rows.
    pub fn apply(&self, frame: &FlowFrame) -> Result<Split, CoreError> {
        if frame.layout.kind != self.dataset {
            return Err(CoreError::Split(format!(
                "split is for {} but the data is {}",
                self.dataset, frame.layout.kind
            )));
        }
        let mut by_family = frame.rows_by_family();
        let mut benign = by_family.remove(&self.benign).ok_or_else(|| {
            CoreError::Split(format!("no rows carry the benign label {:?}", self.benign))
        })?;
        // Shuffle a sorted copy so the split depends only on the seed and the row order.
        benign.sort_unstable();
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        benign.shuffle(&mut rng);
        let n_query = ((benign.len() as f64) * self.benign_query_fraction).round() as usize;
        let n_query = n_query.clamp(1, benign.len().saturating_sub(1).max(1));
        let mut benign_query = benign[..n_query].to_vec();
        let mut benign_train = benign[n_query..].to_vec();
        benign_query.sort_unstable();
        benign_train.sort_unstable();
        let mut split = Split {
            benign: self.benign.clone(),
            benign_train,
            benign_query,
            seen: BTreeMap::new(),
            validation: BTreeMap::new(),
            novel: BTreeMap::new(),
            absent: Vec::new(),
        };
        for (family, rows) in by_family {
            if self.novel.contains(&family) {
                split.novel.insert(family, rows);
            } else if self.validation.contains(&family) {
                split.validation.insert(family, rows);
            } else {
                split.seen.insert(family, rows);
            }
        }
        for f in self.novel.iter().chain(&self.validation) {
            if !split.novel.contains_key(f) && !split.validation.contains_key(f) {
                split.absent.push(f.clone());
            }
        }
        Ok(split)
    }
}

/// Sha256 of a split file's bytes, recorded in every result.
pub fn split_hash(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

/// Row indices of a frame, split by role.
#[derive(Debug, Clone, PartialEq)]
pub struct Split {
    /// The benign label.
    pub benign: String,
    /// Benign rows training may use.
    pub benign_train: Vec<usize>,
    /// Benign rows kept for queries only.
    pub benign_query: Vec<usize>,
    /// Seen families available to training.
    pub seen: BTreeMap<String, Vec<usize>>,
    /// Seen families held back for model selection.
    pub validation: BTreeMap<String, Vec<usize>>,
    /// Novel families: evaluation only.
    pub novel: BTreeMap<String, Vec<usize>>,
    /// Families the split names that the data lacks.
    pub absent: Vec<String>,
}

impl Split {
    /// Every row that fits may use: the benign training pool, seen and validation families, sorted.
    ///
    /// Validation families are included because they are known attacks; meta-training keeps them out
    /// of its gradient steps on its own.
    pub fn training_rows(&self) -> Vec<usize> {
        let mut rows = self.benign_train.clone();
        rows.extend(self.seen.values().flatten());
        rows.extend(self.validation.values().flatten());
        rows.sort_unstable();
        rows
    }

    /// Seen (non-validation) family rows only.
    pub fn seen_rows(&self) -> Vec<usize> {
        let mut rows: Vec<usize> = self.seen.values().flatten().copied().collect();
        rows.sort_unstable();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
version = 1
dataset = "nsl-kdd"
files = ["KDDTrain+.txt"]
benign = "normal"
novel = ["apache2"]
validation = ["back"]
benign_query_fraction = 0.25
seed = 7
"#;

    #[test]
    fn parses_and_round_trips() {
        let spec = SplitSpec::from_toml(SPEC).expect("spec");
        assert_eq!(spec.dataset, DatasetKind::NslKdd);
        assert_eq!(SplitSpec::from_toml(&spec.to_toml()).expect("again"), spec);
        assert_eq!(split_hash(SPEC).len(), 64);
    }

    #[test]
    fn rejects_bad_specs() {
        let bad = SPEC.replace("version = 1", "version = 2");
        assert!(SplitSpec::from_toml(&bad)
            .expect_err("v2")
            .to_string()
            .contains("version 2"));
        let bad = SPEC.replace("validation = [\"back\"]", "validation = [\"apache2\"]");
        assert!(SplitSpec::from_toml(&bad).is_err());
        let bad = SPEC.replace("0.25", "1.5");
        assert!(SplitSpec::from_toml(&bad).is_err());
        let bad = SPEC.replace("seed = 7", "seed = 7\nextra = 1");
        let msg = SplitSpec::from_toml(&bad)
            .expect_err("unknown field")
            .to_string();
        assert!(msg.contains("extra"), "{msg}");
        let bad = SPEC.replace("seed = 7", "seed = 7\nsiblings = [[\"back\"]]");
        assert!(SplitSpec::from_toml(&bad).is_err(), "a group of one");
    }

    #[test]
    fn training_siblings_leave_out_novel_families() {
        let text = SPEC.replace(
            "seed = 7",
            "seed = 7\nsiblings = [[\"apache2\", \"back\", \"neptune\"], [\"back\", \"land\"], [\"pod\", \"smurf\"]]",
        );
        let spec = SplitSpec::from_toml(&text).expect("spec");
        assert_eq!(spec.training_siblings("apache2"), ["back", "neptune"]);
        assert_eq!(spec.training_siblings("back"), ["land", "neptune"]);
        assert!(spec.training_siblings("teardrop").is_empty());
        assert_eq!(SplitSpec::from_toml(&spec.to_toml()).expect("again"), spec);
    }
}
