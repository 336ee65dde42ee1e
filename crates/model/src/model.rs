//! The trained universal threat model: normaliser + encoder + benign reference, with the metadata
//! that the model file records. It embeds preprocessed rows and enrols families; it does not train
//! (see `train`) and does not touch files (see `io`).

use std::path::PathBuf;

use metaids_core::preprocess::Normaliser;
use metaids_core::schema::FeatureLayout;
use metaids_core::FlowFrame;
use serde::{Deserialize, Serialize};

use crate::config::TrainConfig;
use crate::encoder::Encoder;
use crate::error::{ModelError, Result};
use crate::finetune::Finetuner;
use metaids_decide::{BenignReference, ColumnRefit, FamilyPrototype, NormaliserRefit};

/// One data file the model was trained on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataFileHash {
    /// Path as given.
    pub path: String,
    /// Sha256 of its bytes.
    pub sha256: String,
}

/// Where the training data came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// The data files, with hashes.
    pub files: Vec<DataFileHash>,
    /// The split file's name.
    pub split_file: String,
    /// Sha256 of the split file.
    pub split_sha256: String,
}

impl Provenance {
    /// How `current` (the data and split an evaluation reads) differs from the data and split this
    /// model was trained on, one line per difference; empty when they are the same. Data files are
    /// compared by content (sha256), not by path, so a copy elsewhere matches. A provenance with no
    /// files and no split (a model of an older build) is reported as unknown.
    pub fn differences(&self, current: &Provenance) -> Vec<String> {
        let mut out = Vec::new();
        if self.files.is_empty() && self.split_sha256.is_empty() {
            out.push(
                "the model records no training data or split, so neither can be checked".into(),
            );
            return out;
        }
        if self.split_sha256 != current.split_sha256 {
            out.push(format!(
                "the model was trained with split {} (sha256 {}), this run uses {} (sha256 {})",
                self.split_file,
                short(&self.split_sha256),
                current.split_file,
                short(&current.split_sha256)
            ));
        }
        let mut trained: Vec<&DataFileHash> = self.files.iter().collect();
        let mut missing = Vec::new();
        for f in &current.files {
            match trained.iter().position(|t| t.sha256 == f.sha256) {
                Some(i) => {
                    trained.swap_remove(i);
                }
                None => missing.push(f),
            }
        }
        if let Some(f) = missing.first() {
            out.push(format!(
                "{} data file(s) of this run were not among the model's training data (first: {}, sha256 {})",
                missing.len(),
                f.path,
                short(&f.sha256)
            ));
        }
        if let Some(f) = trained.first() {
            out.push(format!(
                "{} file(s) of the model's training data are not in this run (first: {}, sha256 {})",
                trained.len(),
                f.path,
                short(&f.sha256)
            ));
        }
        out
    }
}

fn short(sha: &str) -> &str {
    sha.get(..12).unwrap_or(sha)
}

/// One model-selection evaluation during training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationPoint {
    /// Optimiser steps done (0: the untrained encoder).
    pub step: usize,
    /// Mean training loss over the steps since the previous point (NaN at step 0, stored as null).
    pub loss: Option<f64>,
    /// Macro-F1 over validation families of K = 5 detection tasks.
    pub f1: f64,
    /// Macro false-positive rate on the held-out benign validation rows.
    pub fpr: f64,
}

/// What training recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainingRecord {
    /// The training configuration (seed included).
    pub config: TrainConfig,
    /// Validation history.
    pub history: Vec<ValidationPoint>,
    /// Step of the kept weights.
    pub best_step: usize,
    /// Validation macro-F1 of the kept weights.
    pub best_f1: f64,
    /// Steps actually run (early stopping may end sooner).
    pub steps_run: usize,
    /// Wall-clock seconds of training.
    pub seconds: f64,
    /// Seen families that took part in episodes.
    pub families: Vec<String>,
    /// Validation families used for model selection.
    pub validation_families: Vec<String>,
    /// Benign rows: training pool, calibration, validation queries.
    pub benign_rows: [usize; 3],
    /// Data provenance.
    pub provenance: Provenance,
    /// Validation of the known-family rule for each candidate number of prototypes per family
    /// (seen-family prototypes, validation-family tasks).
    #[serde(default)]
    pub known_selection: Vec<KnownCandidate>,
    /// Known prototypes per family kept (0: none).
    #[serde(default)]
    pub known_per_family: usize,
    /// Validation of the fine-tuned rule during first-order MAML (step 0: fine-tuning the
    /// prototypical encoder without MAML); empty without fine-tuning.
    #[serde(default)]
    pub finetune_history: Vec<ValidationPoint>,
    /// MAML step of the kept fine-tuning initialisation (0: the prototypical encoder).
    #[serde(default)]
    pub finetune_best_step: usize,
    /// Validation of each candidate inner learning rate of enrolment fine-tuning (before MAML).
    #[serde(default)]
    pub finetune_selection: Vec<FinetuneCandidate>,
}

/// Validation of one candidate inner learning rate of enrolment fine-tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneCandidate {
    /// Inner SGD learning rate.
    pub learning_rate: f64,
    /// Validation macro-F1 of the fine-tuned rule.
    pub f1: f64,
    /// Validation macro-FPR.
    pub fpr: f64,
}

/// Validation of one candidate of the known-family rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownCandidate {
    /// k-means prototypes per seen family (0: none, i.e. the plain family rule).
    pub per_family: usize,
    /// Budget share of a separate known-prototype rule (0: one combined score).
    #[serde(default)]
    pub share: f64,
    /// Validation macro-F1 (K = validation shots).
    pub f1: f64,
    /// Validation macro-FPR.
    pub fpr: f64,
}

/// A trained model, ready to embed and enrol.
#[derive(Debug)]
pub struct ThreatModel {
    /// Preprocessing fit on the training rows.
    pub normaliser: Normaliser,
    /// The encoder.
    pub encoder: Encoder,
    /// Benign prototypes and calibration.
    pub reference: BenignReference,
    /// How it was trained.
    pub record: TrainingRecord,
    /// Where it was loaded from (`None` when trained in this process).
    pub path: Option<PathBuf>,
    /// Enrolment fine-tuning material (row `protonet+finetune`); `None` when trained without it.
    pub finetune: Option<Finetuner>,
    /// The LayerNorms' channel moments over training benign rows, for adapting them to a site
    /// ([`crate::adapt`]); `None` for a model trained before they were recorded.
    pub norm_statistics: Option<crate::adapt::NormStatistics>,
}

impl ThreatModel {
    /// Refuses a layout other than the one the model was trained on, naming the model file.
    pub fn check_layout(&self, layout: &FeatureLayout) -> Result<()> {
        let found = layout.hash();
        if found != self.normaliser.schema_hash || layout.kind != self.normaliser.kind {
            return Err(ModelError::SchemaMismatch {
                path: self
                    .path
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("<in memory>")),
                expected: self.normaliser.kind.name().to_string(),
                expected_hash: self.normaliser.schema_hash.clone(),
                found: layout.kind.name().to_string(),
                found_hash: found,
            });
        }
        Ok(())
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.encoder.config().embedding
    }

    /// Preprocesses and embeds `rows` of `frame` (after checking its schema).
    ///
    /// # Shapes
    /// `rows`: `n` indices → `n × embedding` values, row-major.
    pub fn embed_rows(&self, frame: &FlowFrame, rows: &[usize]) -> Result<Vec<f32>> {
        self.check_layout(&frame.layout)?;
        let x = self.normaliser.transform(frame, rows)?;
        self.encoder.embed(&x)
    }

    /// Embeds already preprocessed rows.
    ///
    /// # Shapes
    /// `x`: `n × input_dim` → `n × embedding`.
    pub fn embed(&self, x: &[f32]) -> Result<Vec<f32>> {
        self.encoder.embed(x)
    }

    /// The refit of the model's numeric columns on a site's flows `rows` (raw numeric rows of the
    /// model's layout): the site adaptation a baseline stores ([`NormaliserRefit`]).
    pub fn refit_on<'a, I>(&self, rows: I) -> NormaliserRefit
    where
        I: Iterator<Item = &'a [f32]> + Clone,
    {
        NormaliserRefit {
            columns: self
                .normaliser
                .refit_numeric(rows)
                .numeric
                .into_iter()
                .map(|c| ColumnRefit {
                    name: c.name,
                    mean: c.mean,
                    std: c.std,
                })
                .collect(),
        }
    }

    /// The normaliser flows are preprocessed with under a site's `adaptation`: the model's own
    /// without one, else the model's with the refit means and spreads (checked column by column
    /// against the model's, so a profile of another model is refused).
    pub fn site_normaliser(&self, adaptation: Option<&NormaliserRefit>) -> Result<Normaliser> {
        let mut n = self.normaliser.clone();
        let Some(a) = adaptation else {
            return Ok(n);
        };
        a.validate()
            .map_err(|e| ModelError::Data(format!("site adaptation: {e}")))?;
        if a.columns.len() != n.numeric.len() {
            return Err(ModelError::Data(format!(
                "the site adaptation refits {} numeric columns, the model has {}",
                a.columns.len(),
                n.numeric.len()
            )));
        }
        for (i, (col, refit)) in n.numeric.iter_mut().zip(&a.columns).enumerate() {
            if col.name != refit.name {
                return Err(ModelError::Data(format!(
                    "the site adaptation's column {i} is {:?}, the model's is {:?}",
                    refit.name, col.name
                )));
            }
            col.mean = refit.mean;
            col.std = refit.std;
        }
        Ok(n)
    }

    /// Enrols a family from its support embeddings (prototype = mean; calibrated threshold).
    ///
    /// # Shapes
    /// `support`: `K × embedding`.
    pub fn enrol(&self, support: &[f32]) -> FamilyPrototype {
        self.reference.enrol(support)
    }
}

#[cfg(test)]
mod provenance_tests {
    use super::*;

    fn file(path: &str, sha: &str) -> DataFileHash {
        DataFileHash {
            path: path.into(),
            sha256: sha.into(),
        }
    }

    fn prov(files: &[(&str, &str)], split: &str) -> Provenance {
        Provenance {
            files: files.iter().map(|(p, s)| file(p, s)).collect(),
            split_file: "split.toml".into(),
            split_sha256: split.into(),
        }
    }

    #[test]
    fn same_content_elsewhere_matches_and_every_change_is_named() {
        let trained = prov(&[("/a/x.csv", "aa"), ("/a/y.csv", "bb")], "s1");
        let moved = prov(&[("/b/y.csv", "bb"), ("/b/x.csv", "aa")], "s1");
        assert!(trained.differences(&moved).is_empty());
        let other_split = prov(&[("/a/x.csv", "aa"), ("/a/y.csv", "bb")], "s2");
        let d = trained.differences(&other_split);
        assert_eq!(d.len(), 1);
        assert!(d[0].contains("split"), "{d:?}");
        let other_data = prov(&[("/a/x.csv", "aa"), ("/a/z.csv", "cc")], "s1");
        let d = trained.differences(&other_data);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].contains("z.csv") && d[1].contains("y.csv"), "{d:?}");
        let fewer = prov(&[("/a/x.csv", "aa")], "s1");
        assert_eq!(trained.differences(&fewer).len(), 1);
        let unknown = Provenance::default();
        assert!(unknown.differences(&trained)[0].contains("records no training data"));
    }
}
