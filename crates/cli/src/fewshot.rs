//! `metaids fewshot`: a trained model on the flows of a new network (cross-dataset transfer). Every
//! non-benign label of the files is a novel family; the unseen-family protocol of `evaluate` runs on
//! them with the model's rows, optionally after recalibrating the benign reference on benign rows of
//! the new data that no task queries.
//!
//! It reuses `evaluate`'s benchmark and report; it does not train and holds no decision logic (the
//! recalibration is `metaids_model::decision`'s k-means and `BenignReference::new`).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use metaids_core::episode::seeded_subsample;
use metaids_core::schema::DatasetKind;
use metaids_core::split::SplitSpec;
use metaids_decide::geometry::kmeans;
use metaids_ingest::write_atomic;
use metaids_model::{BenignReference, ThreatModel};

use crate::args::{DataArgs, FewshotArgs, ProtocolArgs};
use crate::{builtin_split, load, model_cmd, run_benchmark, Loaded};

/// Benign rows every run keeps for queries beyond the calibration rows (one task's worth).
const MIN_BENIGN_QUERIES: usize = 50;
/// Fewest calibration rows accepted.
const MIN_CALIBRATION: usize = 20;
/// The model rows run by default.
const MODEL_ROWS: [&str; 3] = ["protonet", "protonet+known", "protonet+unknown"];

/// `metaids fewshot`.
pub fn run(a: FewshotArgs) -> Result<()> {
    let mut model = metaids_model::load(&a.model)
        .with_context(|| format!("loading model {}", a.model.display()))?;
    let kind = model.normaliser.kind;
    let data = DataArgs {
        dataset: Some(kind.name().to_string()),
        data: a.flows.clone(),
        format: a.format.clone(),
        on_bad_row: a.on_bad_row,
        split: None,
        fold: None,
    };
    if let Some(dir) = a.flows.iter().find(|p| p.is_dir()) {
        bail!(
            "--flows takes files, not a directory ({}): list the flow files",
            dir.display()
        );
    }
    refuse_training_files(&model, &a)?;
    let mut loaded = load(&data)?;
    model.check_layout(&loaded.frame.layout).with_context(|| {
        format!(
            "the flow files do not have the model's feature schema ({} data)",
            kind
        )
    })?;
    let benign = a
        .benign
        .clone()
        .unwrap_or_else(|| builtin_benign(kind).unwrap_or_default());
    let counts = loaded.frame.family_counts();
    let n_benign = counts.get(&benign).copied().unwrap_or(0);
    let novel: Vec<String> = counts.keys().filter(|f| **f != benign).cloned().collect();
    if novel.is_empty() {
        bail!(
            "the flow files hold no attack rows (every row is labelled {benign:?}); label the attack flows (e.g. `metaids extract --label NAME`)"
        );
    }
    let calibration = a.benign_calibration.unwrap_or(0);
    if a.benign_calibration.is_some() && calibration < MIN_CALIBRATION {
        bail!("--benign-calibration {calibration} is too few: at least {MIN_CALIBRATION} benign rows are needed to place prototypes and a threshold");
    }
    let needed = calibration.max(1) + MIN_BENIGN_QUERIES;
    if n_benign < needed {
        bail!(
            "the flow files hold {n_benign} benign ({benign:?}) rows; {} are needed ({} for calibration and at least {MIN_BENIGN_QUERIES} for queries)",
            needed,
            calibration
        );
    }
    // All benign rows but the calibration ones are queries (one row is set aside when none is asked).
    let kept = calibration.max(1);
    let spec = SplitSpec {
        version: metaids_core::split::SPLIT_VERSION,
        dataset: kind,
        files: Vec::new(),
        benign: benign.clone(),
        novel: novel.clone(),
        validation: Vec::new(),
        benign_query_fraction: (n_benign - kept) as f64 / n_benign as f64,
        seed: a.seed,
        siblings: Vec::new(),
    };
    loaded.split_text = spec.to_toml();
    loaded.split_name = format!("fewshot (every non-{benign} label novel)");
    loaded.spec = spec;
    let split = loaded.spec.apply(&loaded.frame)?;

    let before = model.reference.clone();
    if a.benign_calibration.is_some() {
        model.reference = recalibrate(&model, &loaded, &split.benign_train, a.seed)?;
    }
    let model = Arc::new(model);
    let names: Vec<String> = if a.methods.is_empty() {
        MODEL_ROWS.iter().map(|s| s.to_string()).collect()
    } else {
        for m in &a.methods {
            if !MODEL_ROWS.contains(&m.as_str()) && m != "nearest-centroid" {
                bail!("method {m:?} cannot run on new data without seen families: expected protonet, protonet+known, protonet+unknown or nearest-centroid");
            }
        }
        a.methods.clone()
    };
    let protocol = ProtocolArgs {
        shots: a.shots.clone(),
        episodes: a.episodes,
        seed: a.seed,
        ways: a.ways,
        fpr_budget: model.reference.fpr_budget,
        pool_max: 2000,
        keep_twins: false,
        methods: names,
        json: None,
        episodes_csv: None,
        per_family: a.per_family.clone(),
        quiet: a.quiet,
    };
    let report = run_benchmark(&loaded, &protocol, model_cmd::methods(&model))?;
    let r = &model.reference;
    let info = serde_json::json!({
        "model": a.model.display().to_string(),
        "model_dataset": kind.name(),
        "benign_label": benign,
        "benign_rows": n_benign,
        "novel_families": novel,
        "benign_calibration": a.benign_calibration,
        "recalibrated": a.benign_calibration.is_some(),
        "calibration_rows": r.calibration_rows(),
        "benign_prototypes": r.prototypes.len() / r.dim.max(1),
        "unknown_threshold": r.unknown_threshold,
        "model_unknown_threshold": before.unknown_threshold,
        "model_calibration_rows": before.calibration_rows(),
        "prototypes_changed": r.prototypes != before.prototypes,
        "fpr_budget": r.fpr_budget,
        "known_prototypes": r.known_prototypes(),
    });
    eprintln!(
        "benign reference: {} ({} prototypes, {} calibration rows, unknown threshold {:.4}; model's {:.4})",
        if a.benign_calibration.is_some() {
            "recalibrated on the new data"
        } else {
            "the model's own"
        },
        r.prototypes.len() / r.dim.max(1),
        r.calibration_rows(),
        r.unknown_threshold,
        before.unknown_threshold
    );
    if let Some(path) = &a.json {
        let mut v: serde_json::Value =
            serde_json::from_str(&report.to_json()).context("re-reading the report JSON")?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("fewshot".into(), info);
        }
        let text = serde_json::to_string_pretty(&v).context("writing the report JSON")?;
        write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The benign label of the built-in split of `kind`.
fn builtin_benign(kind: DatasetKind) -> Option<String> {
    builtin_split(kind, 0)
        .and_then(|(_, text)| SplitSpec::from_toml(text).ok())
        .map(|s| s.benign)
}

/// Refuses flow files whose bytes the model was trained on.
fn refuse_training_files(model: &ThreatModel, a: &FewshotArgs) -> Result<()> {
    let trained = &model.record.provenance.files;
    if trained.is_empty() {
        return Ok(());
    }
    for p in &a.flows {
        if !p.is_file() {
            continue;
        }
        let h = metaids_ingest::file_sha256(p)?;
        if let Some(t) = trained.iter().find(|t| t.sha256 == h) {
            bail!(
                "{} is a file the model was trained on (same bytes as {}): fewshot measures families of data the model never saw",
                p.display(),
                t.path
            );
        }
    }
    Ok(())
}

/// A benign reference for the new data: the model's number of k-means prototypes fit on a seeded half
/// of `rows`, calibration on the other half, the model's budget and known-family prototypes.
fn recalibrate(
    model: &ThreatModel,
    loaded: &Loaded,
    rows: &[usize],
    seed: u64,
) -> Result<BenignReference> {
    let pool = seeded_subsample(rows, rows.len() / 2, seed ^ 0x6361_6c69);
    let cal: Vec<usize> = rows
        .iter()
        .copied()
        .filter(|r| pool.binary_search(r).is_err())
        .collect();
    let old = &model.reference;
    let dim = model.dim();
    let k = (old.prototypes.len() / dim.max(1)).max(1);
    let pool_emb = model.embed_rows(&loaded.frame, &pool)?;
    let protos = kmeans(&pool_emb, dim, k, 30, seed ^ 0x6b6d);
    let cal_emb = model.embed_rows(&loaded.frame, &cal)?;
    Ok(
        BenignReference::new(dim, protos, cal_emb, old.fpr_budget).with_known(
            old.known_families.clone(),
            old.known.clone(),
            old.known_share,
        ),
    )
}
