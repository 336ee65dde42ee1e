//! The threat model on real shared data (CIC-IDS2017 corrected): meta-training improves validation F1,
//! a seed reproduces weights bit for bit, model files round-trip exactly and every corruption or
//! mismatch is refused with a message naming the file and the field; enrolment fine-tuning is
//! deterministic, moves the prototype and survives a save/load round trip.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use metaids_core::preprocess::PreprocessConfig;
use metaids_core::schema::DatasetKind;
use metaids_core::split::{Split, SplitSpec};
use metaids_core::FlowFrame;
use metaids_eval::{BaselineConfig, Benchmark, EvalConfig, FewShotMethod, ProtoNetMethod};
use metaids_ingest::{read_files, resolve_files, ReadOptions};
use metaids_model::{
    io::ModelIdentity, load, save, train, EncoderConfig, FinetuneConfig, ModelError, Provenance,
    ThreatModel, TrainConfig,
};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

fn shared(sub: &str) -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(sub);
    assert!(p.exists(), "shared data missing at {}", p.display());
    p
}

struct Data {
    frame: FlowFrame,
    spec: SplitSpec,
    text: String,
    split: Split,
}

fn cic() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let text = std::fs::read_to_string(repo("splits/cic-ids2017.toml")).expect("split file");
        let spec = SplitSpec::from_toml(&text).expect("spec");
        let files = resolve_files(&shared("cic-ids2017-improved"), &spec.files).expect("files");
        let opts = ReadOptions {
            dataset: Some(spec.dataset),
            ..Default::default()
        };
        let (frame, _) = read_files(&files, &opts).expect("read");
        let split = spec.apply(&frame).expect("split");
        Data {
            frame,
            spec,
            text,
            split,
        }
    })
}

fn small_config() -> (EncoderConfig, TrainConfig) {
    let enc = EncoderConfig {
        hidden: 64,
        depth: 1,
        embedding: 32,
        ..EncoderConfig::for_input(0)
    };
    let cfg = TrainConfig {
        seed: 11,
        steps: 300,
        eval_every: 50,
        patience: 0,
        validation_episodes: 10,
        ways: 5,
        queries: 10,
        finetune: Some(FinetuneConfig {
            maml_steps: 40,
            learning_rate_candidates: vec![0.03],
            benign_rows: 500,
            calibration_rows: 400,
            ..FinetuneConfig::default()
        }),
        ..TrainConfig::default()
    };
    (enc, cfg)
}

fn train_small() -> ThreatModel {
    let d = cic();
    let (enc, cfg) = small_config();
    train(
        &d.frame,
        &d.split,
        PreprocessConfig::default(),
        enc,
        &cfg,
        Provenance::default(),
        &mut |_| {},
    )
    .expect("train")
}

fn model() -> &'static ThreatModel {
    static MODEL: OnceLock<ThreatModel> = OnceLock::new();
    MODEL.get_or_init(train_small)
}

#[test]
fn meta_training_improves_validation_f1_and_never_reads_novel_rows() {
    let m = model();
    let h = &m.record.history;
    assert_eq!(h[0].step, 0);
    assert!(
        m.record.best_f1 > h[0].f1 + 0.02,
        "validation F1 {} not above the untrained encoder's {}",
        m.record.best_f1,
        h[0].f1
    );
    assert!(m.record.best_f1 > 0.9, "{:?}", h);
    let novel: Vec<&String> = cic().split.novel.keys().collect();
    for f in &m.record.families {
        assert!(!novel.contains(&f), "novel family {f} used in training");
        assert!(
            !cic().split.validation.contains_key(f),
            "validation family {f} trained on"
        );
    }
    assert_eq!(m.reference.prototypes.len(), 8 * m.dim());
    assert!(m.reference.calibration_rows() > 100);
}

#[test]
fn same_seed_gives_identical_weights_and_reference() {
    let a = model();
    let b = train_small();
    assert_eq!(
        a.encoder.export().expect("a"),
        b.encoder.export().expect("b")
    );
    assert_eq!(a.reference, b.reference);
    assert_eq!(a.record.history, b.record.history);
}

fn scores(m: &Arc<ThreatModel>) -> Vec<Vec<bool>> {
    let d = cic();
    let cfg = EvalConfig {
        episodes: 3,
        shots: vec![5],
        ..EvalConfig::default()
    };
    let bench = Benchmark::new(
        &d.frame,
        &d.spec,
        "cic-ids2017.toml",
        &d.text,
        cfg,
        PreprocessConfig::default(),
        BaselineConfig::default(),
    )
    .expect("bench");
    let ctx = metaids_eval::EvalContext {
        frame: &d.frame,
        split: &bench.split,
        normaliser: &bench.normaliser,
        x: &bench.x,
        seed: 1,
        pool: &bench.plan.pool,
    };
    let mut method = ProtoNetMethod::new(Arc::clone(m), false);
    method
        .prepare(&ctx, &bench.plan.query_rows())
        .expect("prepare");
    bench
        .plan
        .detection
        .iter()
        .map(|t| method.detect(&ctx, t).flagged)
        .collect()
}

#[test]
fn save_load_round_trip_gives_identical_scores() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("cic.model");
    let trained = train_small();
    save(&trained, &path).expect("save");
    // Saving again over an existing model replaces it atomically.
    save(&trained, &path).expect("save again");
    let loaded = load(&path).expect("load");
    assert_eq!(
        trained.encoder.export().expect("a"),
        loaded.encoder.export().expect("b")
    );
    assert_eq!(trained.reference, loaded.reference);
    assert_eq!(trained.normaliser, loaded.normaliser);
    // The LayerNorm moments a site adaptation aims at travel with the model.
    let stats = trained.norm_statistics.as_ref().expect("LayerNorm moments");
    assert_eq!(stats.layers.len(), 2);
    assert_eq!(loaded.norm_statistics.as_ref(), Some(stats));
    let rows: Vec<usize> = cic()
        .split
        .novel
        .values()
        .flatten()
        .take(50)
        .copied()
        .collect();
    assert_eq!(
        trained.embed_rows(&cic().frame, &rows).expect("a"),
        loaded.embed_rows(&cic().frame, &rows).expect("b")
    );
    assert_eq!(
        ModelIdentity::of(&trained).expect("a"),
        ModelIdentity::of(&loaded).expect("b"),
        "a saved and reloaded model keeps its identity"
    );
    let (a, b) = (Arc::new(trained), Arc::new(loaded));
    let sa = scores(&a);
    assert!(sa.iter().flatten().any(|&x| x) && sa.iter().flatten().any(|&x| !x));
    assert_eq!(sa, scores(&b));
}

#[test]
fn a_model_refuses_data_of_another_schema() {
    let m = model();
    let err = m
        .check_layout(&DatasetKind::NslKdd.layout())
        .expect_err("CIC model on NSL-KDD layout");
    let msg = err.to_string();
    assert!(matches!(err, ModelError::SchemaMismatch { .. }));
    assert!(msg.contains("cic") && msg.contains("nsl-kdd"), "{msg}");
    let err = m
        .embed_rows(&FlowFrame::new(DatasetKind::UnswNb15.layout()), &[])
        .expect_err("UNSW frame");
    assert!(err.to_string().contains("unsw-nb15"), "{err}");
}

/// Issue 11 (item 4): the identity threat libraries and documents are tied to covers everything that
/// changes a verdict — a shifted normaliser or calibration changes it, the training record does not.
#[test]
fn model_identity_covers_the_normaliser_and_calibration() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("m");
    save(model(), &path).expect("save");
    let base = ModelIdentity::of(&load(&path).expect("load")).expect("id");
    assert_eq!(base, ModelIdentity::of(model()).expect("id"));
    assert_eq!(base.model.len(), 64);
    edit_manifest(&path, |v| {
        v["training"]["seconds"] = serde_json::json!(12345.0);
    });
    let same = ModelIdentity::of(&load(&path).expect("load")).expect("id");
    assert_eq!(same, base, "the training record changes no verdict");
    let mut shifted = load(&path).expect("load");
    for m in shifted.normaliser.numeric.iter_mut().take(3) {
        m.mean += 1.0;
    }
    let id = ModelIdentity::of(&shifted).expect("id");
    assert_ne!(
        id.model, base.model,
        "a shifted normaliser is another model"
    );
    save(&shifted, &path).expect("save");
    assert_eq!(
        ModelIdentity::of(&load(&path).expect("load")).expect("id"),
        id
    );
    let mut recalibrated = load(&path).expect("load");
    recalibrated.reference.unknown_threshold += 1.0;
    assert_ne!(
        ModelIdentity::of(&recalibrated).expect("id").model,
        id.model
    );
}

fn edit_manifest(path: &std::path::Path, f: impl Fn(&mut serde_json::Value)) {
    let p = path.join("manifest.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    f(&mut v);
    std::fs::write(&p, serde_json::to_string(&v).expect("json")).expect("write");
}

#[test]
fn corrupted_or_mismatched_model_files_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let good = dir.path().join("good");
    save(model(), &good).expect("save");
    let fresh = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir(&p).expect("dir");
        for f in ["manifest.json", "weights.safetensors"] {
            std::fs::copy(good.join(f), p.join(f)).expect("copy");
        }
        p
    };
    let expect_err = |p: &std::path::Path, needles: &[&str]| {
        let msg = load(p).expect_err("must be refused").to_string();
        for n in needles {
            assert!(msg.contains(n), "{msg:?} lacks {n:?}");
        }
    };

    // A flipped byte in the weights.
    let p = fresh("flipped");
    let w = p.join("weights.safetensors");
    let mut bytes = std::fs::read(&w).expect("read");
    let n = bytes.len();
    bytes[n - 3] ^= 0x40;
    std::fs::write(&w, bytes).expect("write");
    expect_err(&p, &["weights.safetensors", "weights.sha256"]);

    // Another format version.
    let p = fresh("version");
    edit_manifest(&p, |v| v["format_version"] = 99.into());
    expect_err(&p, &["manifest.json", "format_version", "99"]);

    // An unknown manifest field.
    let p = fresh("extra-field");
    edit_manifest(&p, |v| v["surprise"] = 1.into());
    expect_err(&p, &["manifest.json", "surprise"]);

    // Another schema hash than the normaliser's.
    let p = fresh("schema");
    edit_manifest(&p, |v| v["schema_hash"] = "0000".into());
    expect_err(&p, &["manifest.json", "schema_hash"]);

    // A manifest that describes another encoder shape: tensors missing / of the wrong shape.
    let p = fresh("shape");
    edit_manifest(&p, |v| v["encoder"]["depth"] = 2.into());
    expect_err(&p, &["weights.safetensors", "block1.linear", "missing"]);
    let p = fresh("width");
    edit_manifest(&p, |v| v["encoder"]["embedding"] = 16.into());
    expect_err(&p, &["head.weight", "shape"]);

    // A prototype of the wrong size.
    let p = fresh("prototype");
    edit_manifest(&p, |v| {
        v["benign_prototypes"][2]
            .as_array_mut()
            .expect("array")
            .pop();
    });
    expect_err(&p, &["benign_prototypes[2]"]);

    // A tampered calibration threshold.
    let p = fresh("threshold");
    edit_manifest(&p, |v| v["calibration"]["unknown_threshold"] = 0.5.into());
    expect_err(&p, &["calibration.unknown_threshold"]);

    // Missing files.
    let p = fresh("no-weights");
    std::fs::remove_file(p.join("weights.safetensors")).expect("rm");
    expect_err(&p, &["weights.safetensors"]);
    expect_err(&dir.path().join("absent"), &["absent"]);

    // The untouched copy still loads.
    assert!(load(&fresh("intact")).is_ok());
}

#[test]
fn fine_tuning_is_deterministic_moves_the_prototype_and_round_trips() {
    let m = model();
    let ft = m.finetune.as_ref().expect("fine-tuning material");
    let r = &m.record;
    assert_eq!(r.finetune_selection.len(), 1);
    assert!(!r.finetune_history.is_empty());
    assert_eq!(r.finetune_history[0].step, 0);
    assert!(r.finetune_best_step <= 40);
    assert_eq!(ft.benign_rows(), 500);
    assert_eq!(ft.calibration_rows(), 400);
    let d = cic();
    let family = d.split.novel.values().next().expect("a novel family");
    let support: Vec<usize> = family.iter().take(5).copied().collect();
    let x = m.normaliser.transform(&d.frame, &support).expect("x");
    let a = ft.adapt(&x).expect("adapt");
    let b = ft.adapt(&x).expect("adapt again");
    assert_eq!(a.family, b.family);
    assert_eq!(a.reference, b.reference);
    let plain = m.enrol(&m.embed(&x).expect("embed"));
    assert_ne!(
        a.family.centre, plain.centre,
        "fine-tuning must move the prototype"
    );
    // The fine-tuned rule flags most of the family's other rows and holds the budget on
    // its calibration rows.
    let others: Vec<usize> = family.iter().skip(5).take(200).copied().collect();
    let q = a
        .encoder
        .embed(&m.normaliser.transform(&d.frame, &others).expect("q"))
        .expect("embed");
    let hits = q
        .chunks_exact(m.dim())
        .filter(|e| a.reference.flags(e, &a.family))
        .count();
    assert!(
        hits * 2 > others.len(),
        "{hits} of {} flagged",
        others.len()
    );

    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ft.model");
    save(m, &path).expect("save");
    let loaded = load(&path).expect("load");
    let lf = loaded.finetune.as_ref().expect("fine-tuning after load");
    assert_eq!(lf.config, ft.config);
    assert_eq!(lf.init.export().expect("a"), ft.init.export().expect("b"));
    let c = lf.adapt(&x).expect("adapt loaded");
    assert_eq!(c.family, a.family);
    // (Recorded floats go through JSON, which may change their last digit: compare the choices.)
    assert_eq!(
        loaded.record.finetune_best_step,
        m.record.finetune_best_step
    );
    assert_eq!(
        loaded.record.finetune_history.len(),
        m.record.finetune_history.len()
    );

    // A manifest whose fine-tuning section disagrees with the weights is refused.
    edit_manifest(&path, |v| v["finetune"]["benign_rows"] = 499.into());
    let msg = load(&path).expect_err("tampered").to_string();
    assert!(
        msg.contains("finetune.benign") && msg.contains("shape"),
        "{msg}"
    );
}
