//! The model commands: `metaids train` (meta-train and write a model directory) and the `--model`
//! wiring of `metaids evaluate` (load, check against the data, add the model's rows, time enrolment).
//!
//! No learning or decision logic lives here; it is all in `metaids-model`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use metaids_core::episode::seeded_subsample;
use metaids_core::preprocess::PreprocessConfig;
use metaids_eval::{FewShotMethod, ProtoNetMethod};
use metaids_model::{
    DataFileHash, EncoderConfig, FinetuneConfig, Provenance, ThreatModel, TrainConfig,
    TrainProgress,
};

use crate::args::TrainArgs;
use crate::{load, Loaded};

/// `metaids train`.
pub fn train(a: TrainArgs) -> Result<()> {
    // Before loading or training: a bad --out fails now, not after minutes of training.
    metaids_model::check_save_target(&a.out)?;
    let loaded = load(&a.data)?;
    let split = loaded
        .spec
        .apply(&loaded.frame)
        .with_context(|| format!("split file {}", loaded.split_name))?;
    let defaults = TrainConfig::default();
    let cfg = TrainConfig {
        seed: a.seed,
        steps: a.steps.unwrap_or(defaults.steps),
        ways: a.ways.unwrap_or(defaults.ways),
        shots: if a.shots.is_empty() {
            defaults.shots.clone()
        } else {
            a.shots.clone()
        },
        queries: a.queries.unwrap_or(defaults.queries),
        learning_rate: a.lr.unwrap_or(defaults.learning_rate),
        eval_every: a.eval_every.unwrap_or(defaults.eval_every),
        patience: a.patience.unwrap_or(defaults.patience),
        benign_prototypes: a.benign_prototypes.unwrap_or(defaults.benign_prototypes),
        fpr_budget: a.fpr_budget.unwrap_or(defaults.fpr_budget),
        aux_weight: a.aux_weight.unwrap_or(defaults.aux_weight),
        finetune: if a.no_finetune {
            None
        } else {
            defaults.finetune.clone().map(|f| FinetuneConfig {
                steps: a.finetune_steps.unwrap_or(f.steps),
                learning_rate: a.finetune_lr.unwrap_or(f.learning_rate),
                learning_rate_candidates: if a.finetune_lr.is_some() {
                    Vec::new()
                } else {
                    f.learning_rate_candidates.clone()
                },
                maml_steps: a.maml_steps.unwrap_or(f.maml_steps),
                maml_learning_rate: a.maml_lr.unwrap_or(f.maml_learning_rate),
                ..f
            })
        },
        ..defaults
    };
    let base = EncoderConfig::for_input(0);
    let encoder = EncoderConfig {
        hidden: a.hidden.unwrap_or(base.hidden),
        depth: a.depth.unwrap_or(base.depth),
        embedding: a.embedding.unwrap_or(base.embedding),
        residual: !a.no_residual,
        layer_norm: !a.no_layer_norm,
        ..base
    };
    let (model, seconds) = fit(&loaded, &split, encoder, &cfg, a.quiet)?;
    metaids_model::save(&model, &a.out)?;
    let r = &model.record;
    let first = r.history.first().map_or(f64::NAN, |h| h.f1);
    println!(
        "wrote model {} ({} data, {} steps run, kept step {}, {:.1} s)",
        a.out.display(),
        model.normaliser.kind,
        r.steps_run,
        r.best_step,
        seconds
    );
    println!(
        "validation F1 (K={}, families {}): {:.3} (untrained encoder: {:.3}); {} benign prototypes, {} calibration rows, FPR budget {}",
        r.config.validation_shots,
        r.validation_families.join(", "),
        r.best_f1,
        first,
        model.reference.prototypes.len() / model.dim().max(1),
        model.reference.calibration_rows(),
        model.reference.fpr_budget
    );
    if !r.known_selection.is_empty() {
        let cands: Vec<String> = r
            .known_selection
            .iter()
            .map(|c| {
                format!(
                    "{}/family share {} F1 {:.3} FPR {:.4}",
                    c.per_family, c.share, c.f1, c.fpr
                )
            })
            .collect();
        println!(
            "known-family rule on validation (seen-family prototypes): {}; kept {} per family ({} prototypes), share {}",
            cands.join(", "),
            r.known_per_family,
            model.reference.known_prototypes(),
            model.reference.known_share
        );
    }
    if !r.finetune_history.is_empty() {
        let pts: Vec<String> = r
            .finetune_history
            .iter()
            .map(|p| format!("step {} F1 {:.3} FPR {:.4}", p.step, p.f1, p.fpr))
            .collect();
        println!(
            "fine-tuned rule on validation (first-order MAML; step 0 = prototypical encoder): {}; kept step {}",
            pts.join(", "),
            r.finetune_best_step
        );
        let lrs: Vec<String> = r
            .finetune_selection
            .iter()
            .map(|c| format!("lr {} F1 {:.3} FPR {:.4}", c.learning_rate, c.f1, c.fpr))
            .collect();
        println!(
            "fine-tuning learning rate on validation (before MAML): {}; kept {}",
            lrs.join(", "),
            model
                .finetune
                .as_ref()
                .map_or(f64::NAN, |f| f.config.learning_rate)
        );
    }
    Ok(())
}

/// Meta-trains a model on `loaded` with `split`, showing a progress bar unless `quiet`; returns it and
/// the training time in seconds.
pub fn fit(
    loaded: &Loaded,
    split: &metaids_core::split::Split,
    encoder: EncoderConfig,
    cfg: &TrainConfig,
    quiet: bool,
) -> Result<(ThreatModel, f64)> {
    let provenance = provenance(loaded)?;
    let bar = crate::progress::Progress::new(
        quiet,
        cfg.steps as u64,
        "{spinner} train [{bar:30}] {pos}/{len} steps {msg} eta {eta}",
        "train",
    );
    let mut progress = |p: &TrainProgress| {
        bar.set_position(p.step as u64);
        if p.step.is_multiple_of(10) {
            bar.set_message(format!(
                "loss {:.3} val F1 {} best {:.3}",
                p.loss,
                p.validation_f1.map_or("-".into(), |f| format!("{f:.3}")),
                p.best_f1
            ));
        }
    };
    let started = Instant::now();
    let model = metaids_model::train(
        &loaded.frame,
        split,
        PreprocessConfig::default(),
        encoder,
        cfg,
        provenance,
        &mut progress,
    )?;
    bar.finish_and_clear();
    Ok((model, started.elapsed().as_secs_f64()))
}

/// A model trained on `loaded` with every default training setting and `seed` (what `metaids train
/// --seed SEED` writes), for `evaluate --train-seeds`.
pub fn fit_default(loaded: &Loaded, seed: u64, quiet: bool) -> Result<Arc<ThreatModel>> {
    let split = loaded
        .spec
        .apply(&loaded.frame)
        .with_context(|| format!("split file {}", loaded.split_name))?;
    let cfg = TrainConfig {
        seed,
        ..TrainConfig::default()
    };
    let (model, seconds) = fit(loaded, &split, EncoderConfig::for_input(0), &cfg, quiet)?;
    eprintln!(
        "trained a model with seed {seed}: kept step {} of {}, validation F1 {:.3}, {seconds:.1} s",
        model.record.best_step, model.record.steps_run, model.record.best_f1
    );
    Ok(Arc::new(model))
}

/// The data files and split of `loaded`, hashed as training records them.
fn provenance(loaded: &Loaded) -> Result<Provenance> {
    let files = loaded
        .files
        .iter()
        .map(|p| {
            Ok(DataFileHash {
                path: p.display().to_string(),
                sha256: metaids_ingest::file_sha256(p)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Provenance {
        files,
        split_file: loaded.split_name.clone(),
        split_sha256: metaids_core::split::split_hash(&loaded.split_text),
    })
}

/// Loads a model and checks it against the loaded data: dataset and feature schema always; then the
/// split and the data files (by content) it was trained on, refused when they differ unless `force`
/// (then each difference is a warning): a model evaluated on families it was trained or selected
/// on would report seen families as novel.
pub fn load_for(path: &Path, loaded: &Loaded, force: bool) -> Result<Arc<ThreatModel>> {
    let model = metaids_model::load(path)?;
    model.check_layout(&loaded.frame.layout)?;
    let differences = model.record.provenance.differences(&provenance(loaded)?);
    if !differences.is_empty() {
        if !force {
            bail!(
                "model {} was not trained on this split and data:\n  {}\nits novel families may have been seen in training; train a model on this split, or pass --force",
                path.display(),
                differences.join("\n  ")
            );
        }
        for d in &differences {
            eprintln!("warning: {d} (--force)");
        }
    }
    Ok(Arc::new(model))
}

/// The model's rows for `evaluate`.
pub fn methods(model: &Arc<ThreatModel>) -> Vec<Box<dyn FewShotMethod>> {
    let mut v: Vec<Box<dyn FewShotMethod>> = vec![
        Box::new(ProtoNetMethod::new(Arc::clone(model), false)),
        Box::new(ProtoNetMethod::new(Arc::clone(model), true)),
        Box::new(ProtoNetMethod::with_known(Arc::clone(model))),
        Box::new(ProtoNetMethod::zero_shot(Arc::clone(model))),
    ];
    if let Some(m) = ProtoNetMethod::with_finetune(Arc::clone(model)) {
        v.push(Box::new(m));
    }
    v
}

/// Times enrolment of a new family (preprocess + embed K = 5 support rows + prototype + calibrated
/// threshold) on each novel family and prints the mean per family.
pub fn report_enrolment(model: &ThreatModel, loaded: &Loaded) -> Result<()> {
    let split = loaded.spec.apply(&loaded.frame)?;
    let mut times = Vec::new();
    for (i, rows) in split.novel.values().enumerate() {
        if rows.len() < 5 {
            continue;
        }
        let support = seeded_subsample(rows, 5, 7 + i as u64);
        for _ in 0..20 {
            let t = Instant::now();
            let emb = model.embed_rows(&loaded.frame, &support)?;
            let fam = model.enrol(&emb);
            std::hint::black_box(&fam);
            times.push(t.elapsed().as_secs_f64());
        }
    }
    if times.is_empty() {
        bail!("no novel family has 5 rows to time enrolment on");
    }
    if let Some(ft) = &model.finetune {
        let mut ft_times = Vec::new();
        for (i, rows) in split.novel.values().enumerate() {
            if rows.len() < 5 {
                continue;
            }
            let support = seeded_subsample(rows, 5, 7 + i as u64);
            for _ in 0..3 {
                let t = Instant::now();
                let x = model.normaliser.transform(&loaded.frame, &support)?;
                let a = ft.adapt(&x)?;
                std::hint::black_box(&a.family);
                ft_times.push(t.elapsed().as_secs_f64());
            }
        }
        ft_times.sort_by(f64::total_cmp);
        if let (Some(mid), Some(max)) = (ft_times.get(ft_times.len() / 2), ft_times.last()) {
            eprintln!(
                "enrolment with fine-tuning (K=5: preprocess, {} SGD steps on 5 + {} benign rows, re-embed {} benign and {} calibration rows, prototype, threshold): median {:.1} ms, max {:.1} ms over {} runs",
                ft.config.steps,
                ft.config.sgd_benign_rows.min(ft.benign_rows()),
                ft.benign_rows(),
                ft.calibration_rows(),
                mid * 1e3,
                max * 1e3,
                ft_times.len()
            );
        }
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "enrolment of a new family (K=5: preprocess, embed, prototype, threshold): median {:.0} µs, max {:.0} µs over {} runs",
        times[times.len() / 2] * 1e6,
        times[times.len() - 1] * 1e6,
        times.len()
    );
    Ok(())
}
