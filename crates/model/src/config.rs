//! The meta-training settings ([`TrainConfig`]): what [`crate::train::train`] reads and what a
//! model's manifest records.

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};
use crate::finetune::FinetuneConfig;

/// Meta-training settings. Defaults were compared on validation families, but two of them (the removal of
/// the threshold floor at 0 and the encoder size) changed after novel-family results had been seen (found by
/// the evaluation audit, README "Selection after the fact"): the novel-family figures of those defaults are
/// not untouched test figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Seed of initialisation, episodes, the benign hold-out and k-means.
    pub seed: u64,
    /// Most optimiser steps (one episode each).
    pub steps: usize,
    /// N: ways per episode, benign included (capped by the eligible seen families).
    pub ways: usize,
    /// K values; each episode draws one.
    pub shots: Vec<usize>,
    /// Query rows per way.
    pub queries: usize,
    /// AdamW learning rate.
    pub learning_rate: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Validate every this many steps.
    pub eval_every: usize,
    /// Stop after this many validations without improvement (0: never stop early).
    pub patience: usize,
    /// Detection tasks per validation family.
    pub validation_episodes: usize,
    /// K of the validation tasks.
    pub validation_shots: usize,
    /// At most this many attack (and as many benign) queries per validation task.
    pub validation_max_queries: usize,
    /// Fraction of `benign_train` held out for calibration and validation.
    pub benign_holdout_fraction: f64,
    /// At most this many held-out benign rows.
    pub max_holdout: usize,
    /// k of the benign k-means.
    pub benign_prototypes: usize,
    /// At most this many benign training rows go into k-means.
    pub kmeans_rows: usize,
    /// False-positive budget α of the calibrated thresholds.
    pub fpr_budget: f64,
    /// Candidate numbers of k-means prototypes per known attack family for the known-family rule;
    /// the one with the best validation macro-F1 (seen-family prototypes, validation-family tasks) is
    /// kept (ties: the fewer). 0 means no known prototypes; an empty list keeps none.
    #[serde(default = "default_known_per_family")]
    pub known_per_family: Vec<usize>,
    /// At most this many rows per known family go into its k-means.
    #[serde(default = "default_known_rows")]
    pub known_rows: usize,
    /// Candidate budget shares σ of a separate known-prototype rule (0: one combined score), chosen
    /// on validation together with `known_per_family`.
    #[serde(default = "default_known_shares")]
    pub known_shares: Vec<f64>,
    /// Weight λ of the supervised auxiliary loss: cross-entropy of a linear head over benign and every
    /// seen family on the embeddings of each episode's rows (0: none). The head is discarded after
    /// training.
    #[serde(default)]
    pub aux_weight: f64,
    /// Enrolment fine-tuning (row `protonet+finetune`) and its first-order MAML meta-training; `None`
    /// keeps no fine-tuning material in the model.
    #[serde(default)]
    pub finetune: Option<FinetuneConfig>,
}

fn default_known_shares() -> Vec<f64> {
    vec![0.0, 0.25, 0.5]
}

fn default_known_per_family() -> Vec<usize> {
    vec![0, 1, 2, 4, 8]
}

fn default_known_rows() -> usize {
    2000
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 2026,
            steps: 3000,
            ways: 6,
            shots: vec![1, 5, 10],
            queries: 16,
            learning_rate: 1e-3,
            weight_decay: 1e-4,
            eval_every: 100,
            patience: 8,
            validation_episodes: 20,
            validation_shots: 5,
            validation_max_queries: 50,
            benign_holdout_fraction: 0.2,
            max_holdout: 6000,
            benign_prototypes: 8,
            kmeans_rows: 4000,
            fpr_budget: 0.01,
            known_per_family: default_known_per_family(),
            known_rows: default_known_rows(),
            known_shares: default_known_shares(),
            aux_weight: 0.0,
            finetune: Some(FinetuneConfig::default()),
        }
    }
}

impl TrainConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |field, value: String, reason| {
            Err(ModelError::Config {
                field,
                value,
                reason,
            })
        };
        if self.ways < 2 {
            return bad(
                "ways",
                self.ways.to_string(),
                "need at least 2 (benign + 1)",
            );
        }
        if self.shots.is_empty() || self.shots.contains(&0) {
            return bad(
                "shots",
                format!("{:?}", self.shots),
                "need positive K values",
            );
        }
        if self.queries == 0 {
            return bad("queries", "0".into(), "need at least 1");
        }
        if !(self.learning_rate > 0.0 && self.learning_rate.is_finite()) {
            return bad(
                "learning_rate",
                self.learning_rate.to_string(),
                "must be positive",
            );
        }
        if self.eval_every == 0 {
            return bad("eval_every", "0".into(), "must be at least 1");
        }
        if !(self.benign_holdout_fraction > 0.0 && self.benign_holdout_fraction < 0.9) {
            return bad(
                "benign_holdout_fraction",
                self.benign_holdout_fraction.to_string(),
                "must be in (0, 0.9)",
            );
        }
        if !(0.0..0.5).contains(&self.fpr_budget) {
            return bad(
                "fpr_budget",
                self.fpr_budget.to_string(),
                "must be in [0, 0.5)",
            );
        }
        if self.benign_prototypes == 0 {
            return bad("benign_prototypes", "0".into(), "must be at least 1");
        }
        Ok(())
    }
}
