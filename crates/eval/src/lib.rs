//! metaids-eval: honest few-shot benchmarks on attack families a model never saw.
//!
//! [`Benchmark::new`] applies a class-disjoint split, fits preprocessing on training rows only and
//! draws every episode; [`Benchmark::run`] scores any set of [`FewShotMethod`]s on those same episodes
//! and returns a [`Report`]. Plugging a new method in is one line: push it into the methods vector.
//! This crate reads no files: callers hand it a [`FlowFrame`].

pub mod baselines;
pub mod forest;
pub mod html;
pub mod map;
pub mod method;
pub mod protocol;
pub mod protonet;
pub mod report;
pub mod signature;
pub mod site;
pub mod standard;
pub mod text;
pub mod tfidf;

use metaids_core::preprocess::{Normaliser, PreprocessConfig};
use std::collections::BTreeMap;

use metaids_core::duplicates::{DuplicateIndex, Reference};
use metaids_core::split::{split_hash, Split, SplitSpec};
use metaids_core::FlowFrame;

pub use baselines::{BaselineConfig, Forest, Knn, NearestCentroid};
pub use method::{EvalContext, EvalError, FewShotMethod, Matrix};
pub use protocol::{EvalConfig, MethodResult, Plan};
pub use protonet::ProtoNetMethod;
pub use report::{
    DataFile, FamilySize, NovelSiblings, Protocol, Report, RoleDuplicates, TwinsRemoved,
};
pub use signature::SignatureBaseline;
pub use tfidf::TfidfLogReg;

/// A prepared benchmark: split, preprocessing and episodes, ready for any method.
#[derive(Debug)]
pub struct Benchmark<'a> {
    /// The data.
    pub frame: &'a FlowFrame,
    /// The split.
    pub split: Split,
    /// Normaliser fit on `split.training_rows()` only.
    pub normaliser: Normaliser,
    /// All rows, preprocessed.
    pub x: Matrix,
    /// The episodes.
    pub plan: Plan,
    /// Protocol parameters.
    pub config: EvalConfig,
    /// Baseline parameters (recorded in the report).
    pub baselines: BaselineConfig,
    /// Duplicate counts per role, before any twin was removed.
    pub duplicates: Vec<RoleDuplicates>,
    /// Query rows removed for a twin in the training rows, per role (empty with `keep_twins`).
    pub twins_removed: Vec<TwinsRemoved>,
    /// Novel families with a sibling training may see.
    pub novel_siblings: Vec<NovelSiblings>,
    split_file: String,
    split_sha256: String,
    signatures: Option<SignatureBaseline>,
}

/// Duplicate counts per split role, twins looked up in the training rows.
fn role_duplicates(
    index: &DuplicateIndex,
    training: &Reference,
    split: &Split,
) -> Vec<RoleDuplicates> {
    let flat = |m: &BTreeMap<String, Vec<usize>>| -> Vec<usize> {
        m.values().flatten().copied().collect()
    };
    [
        ("benign training pool", split.benign_train.clone()),
        ("benign query pool", split.benign_query.clone()),
        ("seen", flat(&split.seen)),
        ("validation", flat(&split.validation)),
        ("novel", flat(&split.novel)),
    ]
    .into_iter()
    .map(|(role, rows)| {
        let c = index.counts(&rows, training);
        RoleDuplicates {
            role: role.to_string(),
            rows: c.rows,
            repeated: c.repeated(),
            conflicting: c.conflicting,
            twins_in_training: c.twins_in_reference,
        }
    })
    .collect()
}

/// Removes from the benign query pool and from every novel family the rows with an exact twin in
/// the training rows (they may then be neither queries nor support: a family is what remains of
/// it); what was removed, per role.
fn remove_training_twins(
    index: &DuplicateIndex,
    training: &Reference,
    split: &mut Split,
) -> Vec<TwinsRemoved> {
    let keep = |role: String, rows: &mut Vec<usize>| {
        let before = rows.len();
        rows.retain(|&r| !index.has_twin(r, training));
        TwinsRemoved {
            role,
            removed: before - rows.len(),
            left: rows.len(),
        }
    };
    let mut out = vec![keep("benign query pool".into(), &mut split.benign_query)];
    for (family, rows) in split.novel.iter_mut() {
        out.push(keep(family.clone(), rows));
    }
    out
}

impl<'a> Benchmark<'a> {
    /// Splits `frame` by `spec` (whose file text is `spec_text`, named `split_file`), fits preprocessing
    /// on the training rows and draws the episodes.
    pub fn new(
        frame: &'a FlowFrame,
        spec: &SplitSpec,
        split_file: &str,
        spec_text: &str,
        config: EvalConfig,
        preprocess: PreprocessConfig,
        baselines: BaselineConfig,
    ) -> Result<Self, EvalError> {
        let mut split = spec.apply(frame)?;
        let training = split.training_rows();
        let index = DuplicateIndex::new(frame);
        let reference = index.reference(&training);
        let duplicates = role_duplicates(&index, &reference, &split);
        let twins_removed = if config.keep_twins {
            Vec::new()
        } else {
            remove_training_twins(&index, &reference, &mut split)
        };
        let normaliser = Normaliser::fit(frame, &training, preprocess)?;
        let all: Vec<usize> = (0..frame.len()).collect();
        let data = normaliser.transform(frame, &all)?;
        let x = Matrix {
            data,
            dim: normaliser.output_dim(),
        };
        let plan = Plan::new(&split, &config, (!config.keep_twins).then_some(&index));
        Ok(Benchmark {
            frame,
            split,
            normaliser,
            x,
            plan,
            config,
            baselines,
            duplicates,
            twins_removed,
            novel_siblings: spec
                .novel
                .iter()
                .map(|f| NovelSiblings {
                    family: f.clone(),
                    siblings: spec.training_siblings(f),
                })
                .filter(|n| !n.siblings.is_empty())
                .collect(),
            split_file: split_file.to_string(),
            split_sha256: split_hash(spec_text),
            signatures: None,
        })
    }

    /// Adds a signature detector (fixed decisions per frame row, e.g. libinjection's on web
    /// payloads) to the baselines.
    pub fn with_signatures(mut self, signatures: SignatureBaseline) -> Self {
        self.signatures = Some(signatures);
        self
    }

    /// The classical baselines, in report order.
    pub fn baseline_methods(&self) -> Vec<Box<dyn FewShotMethod>> {
        let b = self.baselines;
        let mut all: Vec<Box<dyn FewShotMethod>> = vec![
            Box::new(NearestCentroid::default()),
            Box::new(Knn::new(b, false)),
            Box::new(Knn::new(b, true)),
            Box::new(Forest::new(b, false)),
            Box::new(Forest::new(b, true)),
            Box::new(Forest::budget_matched(b, false, self.config.fpr_budget)),
            Box::new(Forest::budget_matched(b, true, self.config.fpr_budget)),
        ];
        // Web-request payloads: the classical text baseline on their n-gram counts.
        if self.frame.layout.kind == metaids_core::DatasetKind::HttpRequests {
            all.push(Box::new(TfidfLogReg::new(b, self.config.fpr_budget)));
            all.push(Box::new(Forest::on_tfidf(b, self.config.fpr_budget)));
        }
        if let Some(s) = &self.signatures {
            all.push(Box::new(s.clone()));
        }
        all
    }

    /// Runs `methods` on the planned episodes. `files` describes the inputs for the report.
    pub fn run(
        &self,
        methods: &mut [Box<dyn FewShotMethod>],
        files: Vec<DataFile>,
        progress: &(dyn Fn(&str, u64) + Sync),
    ) -> Result<Report, EvalError> {
        self.run_seeded(methods, &mut [], &[], files, progress)
    }

    /// Runs `methods` once, then the model rows of each trained model (`seeded[i]`, trained with
    /// `seeds[i]`) on the same episodes, and pools each model row over seeds × episodes.
    pub fn run_seeded(
        &self,
        methods: &mut [Box<dyn FewShotMethod>],
        seeded: &mut [Vec<Box<dyn FewShotMethod>>],
        seeds: &[u64],
        files: Vec<DataFile>,
        progress: &(dyn Fn(&str, u64) + Sync),
    ) -> Result<Report, EvalError> {
        let ctx = EvalContext {
            frame: self.frame,
            split: &self.split,
            normaliser: &self.normaliser,
            x: &self.x,
            seed: self.config.seed,
            pool: &self.plan.pool,
        };
        let mut results = protocol::run(&ctx, methods, &self.plan, &self.config, progress)?;
        if !seeded.is_empty() {
            let runs = seeded
                .iter_mut()
                .map(|m| protocol::run(&ctx, m, &self.plan, &self.config, progress))
                .collect::<Result<Vec<_>, _>>()?;
            results.extend(protocol::merge_seeds(
                &runs,
                seeds,
                &self.split,
                self.plan.pool.len(),
            ));
        }
        let paired = protocol::paired_differences(&results);
        // The map shows the headline model's embedding (the first seed's model when several).
        let embedding_map = methods
            .iter()
            .chain(seeded.first().into_iter().flatten())
            .filter(|m| m.is_model())
            .max_by_key(|m| m.is_headline())
            .and_then(|m| map::embedding_map(m.as_ref(), &ctx));
        let sizes = |m: &BTreeMap<String, Vec<usize>>| -> Vec<FamilySize> {
            m.iter()
                .map(|(f, r)| FamilySize {
                    family: f.clone(),
                    rows: r.len(),
                })
                .collect()
        };
        Ok(Report {
            metaids_version: env!("CARGO_PKG_VERSION").to_string(),
            protocol: Protocol {
                dataset: self.frame.layout.kind.name().to_string(),
                files,
                split_file: self.split_file.clone(),
                split_sha256: self.split_sha256.clone(),
                seed: self.config.seed,
                episodes: self.config.episodes,
                config: self.config.clone(),
                benign_label: self.split.benign.clone(),
                benign_train_rows: self.split.benign_train.len(),
                benign_query_rows: self.split.benign_query.len(),
                seen_families: sizes(&self.split.seen),
                validation_families: sizes(&self.split.validation),
                novel_families: sizes(&self.split.novel),
                absent_families: self.split.absent.clone(),
                too_small: self.plan.too_small.clone(),
                preprocessing_fit_rows: self.normaliser.fit_rows,
                feature_dim: self.x.dim,
                preprocessing: self.normaliser.config,
                baselines: self.baselines,
                metric_definition: report::METRIC_DEFINITION.to_string(),
                duplicates: self.duplicates.clone(),
                twins_removed: self.twins_removed.clone(),
                support_twins_removed: self.plan.support_twins_removed,
                train_seeds: seeds.to_vec(),
                novel_siblings: self.novel_siblings.clone(),
            },
            results,
            paired,
            embedding_map,
        })
    }
}
