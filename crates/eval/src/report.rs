//! Benchmark results as JSON (for machines) and Markdown (for people), with the full protocol.
//!
//! Only shapes and renders results; it computes no metric.

use serde::{Deserialize, Serialize};

use crate::baselines::BaselineConfig;
use crate::protocol::{EvalConfig, MethodResult, TooSmall};
use metaids_core::preprocess::PreprocessConfig;

/// One input file of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// Path as given.
    pub path: String,
    /// Sha256 of its bytes.
    pub sha256: String,
    /// Rows read.
    pub rows: usize,
    /// Malformed rows skipped.
    pub skipped: usize,
}

/// A family and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilySize {
    /// Family label.
    pub family: String,
    /// Rows.
    pub rows: usize,
}

/// Exact duplicates among the rows of one split role ([`metaids_core::duplicates`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleDuplicates {
    /// `benign training pool`, `benign query pool`, `seen`, `validation` or `novel`.
    pub role: String,
    /// Rows of the role.
    pub rows: usize,
    /// Rows repeating another row of the role.
    pub repeated: usize,
    /// Rows whose values also appear under another label.
    pub conflicting: usize,
    /// Rows with an exact twin among the training rows (benign training pool, seen and validation
    /// families; a training row needs another one).
    pub twins_in_training: usize,
}

/// A novel family and its siblings that training may see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NovelSiblings {
    /// The novel family.
    pub family: String,
    /// Its siblings among the seen and validation families.
    pub siblings: Vec<String>,
}

/// Query rows left out for an exact twin among the training rows (the default; `--keep-twins`
/// keeps them): a query that repeats a training row measures memory, not generalisation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TwinsRemoved {
    /// `benign query pool` or a novel family.
    pub role: String,
    /// Rows removed.
    pub removed: usize,
    /// Rows left.
    pub left: usize,
}

/// Everything needed to reproduce a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Protocol {
    /// Dataset kind.
    pub dataset: String,
    /// Input files.
    pub files: Vec<DataFile>,
    /// The split file used.
    pub split_file: String,
    /// Its sha256.
    pub split_sha256: String,
    /// Seed of episodes and baselines.
    pub seed: u64,
    /// Episodes per family and K.
    pub episodes: usize,
    /// The protocol parameters.
    pub config: EvalConfig,
    /// Benign label.
    pub benign_label: String,
    /// Benign rows in the training pool.
    pub benign_train_rows: usize,
    /// Benign rows in the query pool (never trained on).
    pub benign_query_rows: usize,
    /// Seen families (training).
    pub seen_families: Vec<FamilySize>,
    /// Seen families held back for model selection.
    pub validation_families: Vec<FamilySize>,
    /// Novel families (never trained on, never used for a choice).
    pub novel_families: Vec<FamilySize>,
    /// Families named in the split but absent from the data.
    pub absent_families: Vec<String>,
    /// Novel families too small for some K.
    pub too_small: Vec<TooSmall>,
    /// Rows the normaliser was fit on (benign training pool + seen + validation families).
    pub preprocessing_fit_rows: usize,
    /// Width of a preprocessed row.
    pub feature_dim: usize,
    /// Preprocessing parameters.
    pub preprocessing: PreprocessConfig,
    /// Baseline parameters.
    pub baselines: BaselineConfig,
    /// How metrics are computed.
    pub metric_definition: String,
    /// Exact duplicates per role (reports of earlier builds lack them).
    #[serde(default)]
    pub duplicates: Vec<RoleDuplicates>,
    /// Seeds of the models trained for this report (`--train-seeds`; empty: one given model or
    /// none). The model rows' figures pool every seed's episodes.
    #[serde(default)]
    pub train_seeds: Vec<u64>,
    /// Novel families with a sibling (a variant of the same attack, per the split file) among the
    /// families training may see: less novel than their names say.
    #[serde(default)]
    pub novel_siblings: Vec<NovelSiblings>,
    /// Query rows removed for a twin in the training rows (empty with `keep_twins`, and in reports
    /// of earlier builds).
    #[serde(default)]
    pub twins_removed: Vec<TwinsRemoved>,
    /// Attack queries dropped from their task for repeating one of its support rows (with as many
    /// benign queries).
    #[serde(default)]
    pub support_twins_removed: usize,
}

/// A full benchmark report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// metaids version that produced it.
    pub metaids_version: String,
    /// The protocol.
    pub protocol: Protocol,
    /// One entry per method and K.
    pub results: Vec<MethodResult>,
    /// Every model row against the best baseline per metric and K, paired on the same episodes
    /// (absent in reports of earlier builds).
    #[serde(default)]
    pub paired: Vec<crate::protocol::PairedDifference>,
    /// A 2-D map of the headline model's embedding (absent without a model row, and in reports
    /// of earlier builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_map: Option<crate::map::EmbeddingMap>,
}

/// The metric definition recorded in every report.
pub const METRIC_DEFINITION: &str = "Per task (one novel family, one K, one episode): K support rows of the family; \
queries = up to 50 other rows of the family (positives) + as many benign query-pool rows (negatives). \
Recall, FPR, precision and F1 per task (precision = F1 = 0 when nothing is flagged). Per episode index, the \
metric is macro-averaged over the families evaluated at that K; reported as mean ± 95% Student-t half-width \
over episodes. N-way accuracy: N novel families per episode, K support and 10 queries each. Operating points (`operating`): every task also scores the benign query pool (every distinct benign query row, or a seeded sample of `pool_max` of them when the pool is larger; `pool_rows`); `pool_fpr` = share of the pool the method's own decision flags; `pr_auc` = average precision of the method's scores, the task's attack queries against the whole pool (ties counted against the method); `recall_at_fpr_oracle` = recall at the threshold the pool's own scores put at FPR 0.001 / 0.01 (an oracle: read off the rows it is measured on, not from the method's calibration); `recall_at_fpr` = recall at the threshold the method's own held-out benign calibration rows put at FPR 0.001 / 0.01 (the model: its reference's calibration rows; the budget-matched forest: its held-out benign training rows; absent for a method without calibration rows), with `pool_fpr_at_calibrated` the FPR that threshold gives on the pool (with n calibration rows an FPR below about 1/n cannot be resolved: the threshold is then the largest calibration score); `precision_at_base_rate` = precision of the method's own decision if attacks were 50%, 1% or 0.1% of flows, from its recall on the task and `pool_fpr`; `f1_at_base_rate` = the F1 of that precision and the task's recall. `roc` = recall at FPR 0.0005 … 0.5 read off each task's pool, averaged over tasks (vertical averaging); precision at a base rate π follows from each point as π·recall / (π·recall + (1 − π)·FPR). Each per family and macro over families, mean ± 95% half-width over episodes.";

impl Report {
    /// Markdown table of all results, grouped by K.
    pub fn markdown(&self) -> String {
        let p = &self.protocol;
        let mut out = format!(
            "### {} — novel-family protocol ({} episodes, seed {}, split {:.12})\n\n",
            p.dataset, p.episodes, p.seed, p.split_sha256
        );
        for d in &p.duplicates {
            out.push_str(&format!(
                "- {}: {} rows, {} repeated, {} with another label's values, {} with a twin in the training rows\n",
                d.role, d.rows, d.repeated, d.conflicting, d.twins_in_training
            ));
        }
        if !p.novel_siblings.is_empty() {
            let items: Vec<String> = p
                .novel_siblings
                .iter()
                .map(|n| format!("{} ({})", n.family, n.siblings.join(", ")))
                .collect();
            out.push_str(&format!(
                "- novel families with a sibling in training: {}\n",
                items.join("; ")
            ));
        }
        if p.config.keep_twins {
            out.push_str("- queries with an exact twin in the training or support rows kept (`--keep-twins`)\n");
        } else {
            let removed: Vec<String> = p
                .twins_removed
                .iter()
                .filter(|t| t.removed > 0)
                .map(|t| format!("{} {} of {}", t.role, t.removed, t.removed + t.left))
                .collect();
            out.push_str(&format!(
                "- removed as queries for an exact twin in the training rows: {}; attack queries dropped for repeating a support row: {}\n",
                if removed.is_empty() { "none".to_string() } else { removed.join(", ") },
                p.support_twins_removed
            ));
        }
        if !p.duplicates.is_empty() {
            out.push('\n');
        }
        out.push_str("| method | K | macro-F1 | recall | FPR | precision | N-way acc |\n");
        out.push_str("|---|---:|---|---|---|---|---|\n");
        let mut rows: Vec<&MethodResult> = self.results.iter().collect();
        rows.sort_by_key(|r| r.shots);
        for r in rows {
            let nway = r.nway_accuracy.map_or("—".to_string(), |s| {
                format!("{} ({}-way)", s.display(), r.ways)
            });
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} | {} | {} |\n",
                r.label(),
                r.shots,
                r.macro_f1.display(),
                r.recall.display(),
                r.fpr.display(),
                r.precision.display(),
                nway
            ));
        }
        let points: Vec<&MethodResult> = {
            let mut v: Vec<&MethodResult> = self
                .results
                .iter()
                .filter(|r| r.operating.is_some())
                .collect();
            v.sort_by_key(|r| r.shots);
            v
        };
        if let Some(pool) = points.first().and_then(|r| r.operating.as_ref()) {
            out.push_str(&format!(
                "\nOperating points on {} benign query-pool rows (recall at FPR read off the pool itself: oracle):\n\n",
                pool.pool_rows
            ));
            out.push_str("| method | K | PR-AUC | recall @ FPR 0.001 (oracle) | recall @ FPR 0.01 (oracle) | recall @ FPR 0.001 (own calibration) | its FPR on the pool | own FPR on the pool | precision @ 1:100 | precision @ 1:1000 | F1 @ 1:1000 |\n");
            out.push_str("|---|---:|---|---|---|---|---|---|---|---|---|\n");
            for r in points {
                let Some(o) = &r.operating else { continue };
                let get =
                    |m: &std::collections::BTreeMap<String, metaids_core::metrics::Summary>,
                     k: &str| {
                        m.get(k).map_or("—".to_string(), |s| s.display())
                    };
                let calibrated = |m: &Option<
                    std::collections::BTreeMap<String, metaids_core::metrics::Summary>,
                >,
                                  four: bool| {
                    m.as_ref()
                        .and_then(|m| m.get("0.001"))
                        .map_or("—".to_string(), |s| {
                            if four {
                                s.display4()
                            } else {
                                s.display()
                            }
                        })
                };
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                    r.label(),
                    r.shots,
                    o.pr_auc.display(),
                    get(&o.recall_at_fpr_oracle, "0.001"),
                    get(&o.recall_at_fpr_oracle, "0.01"),
                    calibrated(&o.recall_at_fpr, false),
                    calibrated(&o.pool_fpr_at_calibrated, true),
                    o.pool_fpr.display4(),
                    get(&o.precision_at_base_rate, "0.01"),
                    get(&o.precision_at_base_rate, "0.001"),
                    get(&o.f1_at_base_rate, "0.001"),
                ));
            }
        }
        if !self.paired.is_empty() {
            out.push_str(&format!(
                "\nPaired differences, model row − best baseline per metric and K (same episodes{}; mean ± 95% CI):\n\n| model row | K | metric | best baseline | difference |\n|---|---:|---|---|---|\n",
                if p.train_seeds.is_empty() {
                    String::new()
                } else {
                    format!(", pooled over training seeds {:?}", p.train_seeds)
                }
            ));
            for d in &self.paired {
                out.push_str(&format!(
                    "| {} | {} | {} | {} | {:+.3} ± {:.3} |\n",
                    d.method, d.shots, d.metric, d.baseline, d.difference.mean, d.difference.ci95
                ));
            }
        }
        if !p.too_small.is_empty() {
            out.push_str("\nNot evaluated (fewer than K + 10 rows): ");
            let items: Vec<String> = p
                .too_small
                .iter()
                .map(|t| format!("{} ({} rows, K={})", t.family, t.rows, t.shots))
                .collect();
            out.push_str(&items.join(", "));
            out.push('\n');
        }
        out
    }

    /// Markdown table of per-family F1 for one method and K.
    pub fn per_family_markdown(&self, method: &str, shots: usize) -> Option<String> {
        let r = self
            .results
            .iter()
            .find(|r| r.method == method && r.shots == shots)?;
        let mut out = format!(
            "| family ({method}, K={shots}) | rows | F1 | recall | FPR |\n|---|---:|---|---|---|\n"
        );
        for f in &r.per_family {
            out.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                f.family,
                f.rows,
                f.f1.display(),
                f.recall.display(),
                f.fpr.display()
            ));
        }
        Some(out)
    }

    /// Every task's metrics as CSV: `method,shots,family,episode` then
    /// [`crate::protocol::episode_columns`], one line per task (empty for a report read back from
    /// JSON, which does not keep them).
    pub fn episodes_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut header = vec!["method", "shots", "family", "episode", "train_seed"];
        let names = crate::protocol::episode_columns();
        header.extend(names.iter().map(String::as_str));
        w.write_record(&header)?;
        for r in &self.results {
            for e in &r.episodes {
                let mut record = vec![
                    r.method.clone(),
                    r.shots.to_string(),
                    e.family.clone(),
                    e.episode.to_string(),
                    // The seed of the model the row comes from (empty: a baseline or one model).
                    r.train_seeds
                        .get(e.run)
                        .map_or(String::new(), u64::to_string),
                ];
                record.extend(e.values.iter().map(f64::to_string));
                w.write_record(&record)?;
            }
        }
        w.into_inner().map_err(|e| e.into_error().into())
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
