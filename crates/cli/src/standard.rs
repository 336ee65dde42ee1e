//! `metaids standard`: the NSL-KDD standard split. The protocol and its report live in
//! [`metaids_eval::standard`]; this command loads the two files, trains a model on KDDTrain+ only
//! (or loads one, refusing a model trained on anything else), runs the protocol and prints.

use std::time::Instant;

use anyhow::{bail, Context, Result};
use metaids_core::preprocess::PreprocessConfig;
use metaids_core::split::Split;
use metaids_eval::standard::{self, StandardConfig};
use metaids_ingest::write_atomic;
use metaids_model::{DataFileHash, EncoderConfig, Provenance, ThreatModel, TrainProgress};

use crate::args::{DataArgs, OnBadRow, StandardArgs};
use crate::{load, Loaded};

/// `metaids standard`.
pub fn run(a: StandardArgs) -> Result<()> {
    if a.enrol_shots == 0 || a.repeats == 0 {
        bail!("--enrol-shots and --repeats must be at least 1");
    }
    let started = Instant::now();
    if let Some(dir) = &a.save_model {
        metaids_model::check_save_target(dir)?;
    }
    if !a.data.is_dir() {
        bail!(
            "--data must be the directory holding KDDTrain+.txt and KDDTest+.txt, got {}",
            a.data.display()
        );
    }
    let data = DataArgs {
        dataset: Some("nsl-kdd".into()),
        data: vec![a.data.clone()],
        format: None,
        on_bad_row: OnBadRow::Error,
        split: None,
        fold: None,
    };
    let loaded = load(&data)?;
    let frame = &loaded.frame;
    let model = match &a.model {
        Some(p) => {
            let m =
                metaids_model::load(p).with_context(|| format!("loading model {}", p.display()))?;
            m.check_layout(&frame.layout)?;
            standard::check_trained_on_train_only(&m)
                .with_context(|| format!("model {}", p.display()))?;
            m
        }
        None => {
            let rows = standard::rows_by_file(frame)?;
            let split = standard::training_split(frame, &rows);
            train(&a, &loaded, &split)?
        }
    };
    let cfg = StandardConfig {
        enrol_shots: a.enrol_shots,
        repeats: a.repeats,
        seed: a.seed,
        forest: !a.no_forest,
    };
    let result = standard::run(frame, &model, cfg)?;
    print!("{}", result.markdown());
    eprintln!(
        "embedded {} test rows in {:.2} s with the scoring kernel; total {:.1} s",
        result.rows.test.len(),
        result.embed_seconds,
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &a.json {
        let model_path = a.model.as_ref().map(|p| p.display().to_string());
        let v = result.to_json(&model, model_path.as_deref());
        let text = serde_json::to_string_pretty(&v).context("serialising the results")?;
        write_atomic(path, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Meta-trains on KDDTrain+ only, with [`standard::training_config`].
fn train(a: &StandardArgs, loaded: &Loaded, split: &Split) -> Result<ThreatModel> {
    let train_file = loaded
        .files
        .iter()
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("KDDTrain+"))
        })
        .context("KDDTrain+ not among the files")?;
    let cfg = standard::training_config(a.seed, a.steps);
    let provenance = Provenance {
        files: vec![DataFileHash {
            path: train_file.display().to_string(),
            sha256: metaids_ingest::file_sha256(train_file)?,
        }],
        split_file: "standard: KDDTrain+ only, validation back/portsweep/warezclient".into(),
        split_sha256: String::new(),
    };
    let bar = crate::progress::Progress::new(
        a.quiet,
        cfg.steps as u64,
        "{spinner} train on KDDTrain+ [{bar:30}] {pos}/{len} steps {msg}",
        "train on KDDTrain+",
    );
    let t = Instant::now();
    let model = metaids_model::train(
        &loaded.frame,
        split,
        PreprocessConfig::default(),
        EncoderConfig::for_input(0),
        &cfg,
        provenance,
        &mut |p: &TrainProgress| {
            bar.set_position(p.step as u64);
            bar.set_message(format!("best val F1 {:.3}", p.best_f1));
        },
    )?;
    bar.finish_and_clear();
    eprintln!(
        "trained on KDDTrain+ in {:.1} s (kept step {}, validation F1 {:.3}, {} known prototypes)",
        t.elapsed().as_secs_f64(),
        model.record.best_step,
        model.record.best_f1,
        model.reference.known_prototypes()
    );
    if let Some(dir) = &a.save_model {
        metaids_model::save(&model, dir)?;
        eprintln!("wrote model {}", dir.display());
    }
    Ok(model)
}
