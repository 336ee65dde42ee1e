//! The scoring kernel against the candle encoder on real rows (CIC-IDS2017 corrected): embeddings agree
//! within 1e-4 relative (per row, Euclidean norm) and decisions are identical, for a briefly trained default-shape model and for
//! seeded untrained encoders of other shapes, with one-hot columns read sparsely.

use std::path::PathBuf;

use metaids_core::episode::seeded_subsample;
use metaids_core::preprocess::PreprocessConfig;
use metaids_core::split::SplitSpec;
use metaids_decide::geometry::kmeans;
use metaids_decide::{Verdict, VerdictKind};
use metaids_ingest::{read_files, resolve_files, ReadOptions};
use metaids_model::{
    train, BenignReference, Encoder, EncoderConfig, Provenance, ScoringKernel, Scratch, TrainConfig,
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

/// Largest relative error of a row, `‖a_i − b_i‖ / ‖b_i‖` (Euclidean norms of embedding rows).
fn rel_err(a: &[f32], b: &[f32], dim: usize) -> f32 {
    a.chunks_exact(dim)
        .zip(b.chunks_exact(dim))
        .map(|(x, y)| {
            let diff: f32 = x.iter().zip(y).map(|(p, q)| (p - q) * (p - q)).sum();
            let norm: f32 = y.iter().map(|q| q * q).sum();
            (diff / norm.max(f32::MIN_POSITIVE)).sqrt()
        })
        .fold(0.0, f32::max)
}

/// What a verdict decides (kind and flagged threat): the distances behind it differ between the
/// kernel and candle by rounding, the outcome must not.
fn outcomes(v: &[Verdict]) -> Vec<(VerdictKind, Option<usize>)> {
    v.iter().map(|v| (v.kind, v.flagged())).collect()
}

#[test]
fn kernel_equals_candle_on_real_rows() {
    let text = std::fs::read_to_string(repo("splits/cic-ids2017.toml")).expect("split file");
    let spec = SplitSpec::from_toml(&text).expect("spec");
    let files = resolve_files(&shared("cic-ids2017-improved"), &spec.files).expect("files");
    let opts = ReadOptions {
        dataset: Some(spec.dataset),
        ..Default::default()
    };
    let (frame, _) = read_files(&files, &opts).expect("read");
    let split = spec.apply(&frame).expect("split");
    // A default-shape model trained for a few steps (the decisions then depend on learnt weights).
    let cfg = TrainConfig {
        seed: 5,
        steps: 20,
        eval_every: 10,
        patience: 0,
        validation_episodes: 3,
        known_per_family: vec![0],
        ..TrainConfig::default()
    };
    let model = train(
        &frame,
        &split,
        PreprocessConfig::default(),
        EncoderConfig::for_input(0),
        &cfg,
        Provenance::default(),
        &mut |_| {},
    )
    .expect("train");
    let kernel = ScoringKernel::for_model(&model).expect("kernel");
    assert_eq!(kernel.dense_inputs(), model.normaliser.numeric.len());
    assert!(kernel.dense_inputs() < kernel.config().input_dim);

    // Real rows of every role: benign queries and the novel families.
    let mut rows = seeded_subsample(&split.benign_query, 1500, 1);
    for fam in split.novel.values() {
        rows.extend(seeded_subsample(fam, 300, 2));
    }
    let x = model
        .normaliser
        .transform(&frame, &rows)
        .expect("transform");
    let want = model.encoder.embed(&x).expect("candle");
    let got = kernel.embed(&x).expect("kernel");
    let err = rel_err(&got, &want, model.dim());
    assert!(err < 1e-4, "relative error {err}");

    // Decisions: two enrolled families (5 support rows each), the model's reference.
    let d = model.dim();
    let families: Vec<_> = split
        .novel
        .values()
        .take(2)
        .map(|fam| {
            let s = model
                .embed_rows(&frame, &seeded_subsample(fam, 5, 9))
                .expect("support");
            model.reference.enrol(&s)
        })
        .collect();
    let mut decisions = vec![Verdict::default(); rows.len()];
    let mut scratch = Scratch::default();
    kernel
        .score_into(
            &x,
            &model.reference,
            &families,
            &mut scratch,
            &mut decisions,
        )
        .expect("score");
    let candle: Vec<Verdict> = want
        .chunks_exact(d)
        .map(|e| model.reference.decide(e, &families))
        .collect();
    assert_eq!(outcomes(&decisions), outcomes(&candle));
    // The test can fail: the rows are not all decided alike.
    assert!(decisions.iter().any(|v| v.kind == VerdictKind::Benign));
    assert!(decisions.iter().any(|v| v.kind == VerdictKind::Threat));

    // Untrained seeded encoders of other shapes, on the same rows.
    for (hidden, depth, embedding, residual, layer_norm) in [
        (64, 1, 32, true, true),
        (128, 2, 64, false, true),
        (96, 3, 16, true, false),
    ] {
        let cfg = EncoderConfig {
            input_dim: x.len() / rows.len(),
            hidden,
            depth,
            embedding,
            residual,
            layer_norm,
        };
        let enc = Encoder::new(cfg.clone(), 3).expect("encoder");
        let k = ScoringKernel::from_encoder(&enc)
            .expect("kernel")
            .with_dense_inputs(model.normaliser.numeric.len());
        let want = enc.embed(&x).expect("candle");
        let got = k.embed(&x).expect("kernel");
        let err = rel_err(&got, &want, embedding);
        assert!(err < 1e-4, "{cfg:?}: relative error {err}");
        let benign = &want[..200 * embedding];
        let reference = BenignReference::new(
            embedding,
            kmeans(benign, embedding, 4, 10, 1),
            want[200 * embedding..1500 * embedding].to_vec(),
            0.01,
        );
        let fam = reference.enrol(&want[1500 * embedding..1505 * embedding]);
        let mut dk = vec![Verdict::default(); rows.len()];
        k.score_into(
            &x,
            &reference,
            std::slice::from_ref(&fam),
            &mut scratch,
            &mut dk,
        )
        .expect("score");
        let dc: Vec<Verdict> = want
            .chunks_exact(embedding)
            .map(|e| reference.decide(e, std::slice::from_ref(&fam)))
            .collect();
        // Rows 200..1500 calibrate the thresholds: one of them sits exactly on the unknown
        // threshold by construction, where any rounding decides. Every other row must agree.
        let outside = |v: &[Verdict]| -> Vec<(VerdictKind, Option<usize>)> {
            outcomes(v)
                .into_iter()
                .enumerate()
                .filter(|(i, _)| !(200..1500).contains(i))
                .map(|(_, d)| d)
                .collect()
        };
        assert_eq!(outside(&dk), outside(&dc), "{cfg:?}");
    }
}
