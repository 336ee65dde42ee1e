//! Meta-training: prototypical-network episodes over seen families (benign always one of the ways),
//! model selection on validation families with detection tasks built like the novel protocol, then
//! benign prototypes (k-means) and calibration on a held-out benign slice.
//!
//! Rows used: `split.benign_train` (minus a seeded held-out slice, which only calibrates and
//! validates), `split.seen` (gradient steps) and `split.validation` (model selection only). It never
//! reads `split.novel` or `split.benign_query`, and it does not write files.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use candle_core::{Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use metaids_core::episode::{
    episode_rng, sample_detection_task, seeded_subsample, ClassRows, DetectionTask, EpisodeSampler,
};
use metaids_core::metrics::BinaryCounts;
use metaids_core::preprocess::{Normaliser, PreprocessConfig};
use metaids_core::split::Split;
use metaids_core::FlowFrame;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{ModelError, Result};
use crate::finetune::{FinetuneConfig, Finetuner, MamlTask, MamlTrainer};
use crate::model::{
    FinetuneCandidate, KnownCandidate, Provenance, ThreatModel, TrainingRecord, ValidationPoint,
};
use metaids_decide::geometry::kmeans;
use metaids_decide::BenignReference;

pub use crate::config::TrainConfig;

/// Benign training rows the LayerNorm channel moments are taken over (a seeded subsample).
pub const NORM_STATISTICS_ROWS: usize = 5000;

/// Reported to the progress callback after every step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainProgress {
    /// Steps done.
    pub step: usize,
    /// Most steps.
    pub steps: usize,
    /// Mean loss over the last steps (exponential average).
    pub loss: f64,
    /// Validation macro-F1 of the latest validation, if one has run.
    pub validation_f1: Option<f64>,
    /// Best validation macro-F1 so far.
    pub best_f1: f64,
}

/// Preprocessed training rows, addressed by frame row.
struct Rows {
    dim: usize,
    slot: Vec<u32>,
    x: Vec<f32>,
}

impl Rows {
    fn gather(&self, rows: &[usize], out: &mut Vec<f32>) {
        for &r in rows {
            let s = self.slot[r] as usize;
            out.extend_from_slice(&self.x[s * self.dim..(s + 1) * self.dim]);
        }
    }
}

/// Validation material: detection tasks on validation families plus benign slices.
struct Validation {
    tasks: Vec<DetectionTask>,
    rows: Vec<usize>,
    kmeans_pool: Vec<usize>,
    calibration: Vec<usize>,
}

/// Embeds `rows`; returns a map from row to offset (in rows) of the embedding.
fn embed_map(
    encoder: &Encoder,
    data: &Rows,
    rows: &[usize],
) -> Result<(HashMap<usize, usize>, Vec<f32>)> {
    let mut x = Vec::with_capacity(rows.len() * data.dim);
    data.gather(rows, &mut x);
    let emb = encoder.embed(&x)?;
    Ok((rows.iter().enumerate().map(|(i, &r)| (r, i)).collect(), emb))
}

fn benign_reference(
    encoder: &Encoder,
    data: &Rows,
    pool: &[usize],
    calibration: &[usize],
    cfg: &TrainConfig,
) -> Result<BenignReference> {
    let dim = encoder.config().embedding;
    let mut x = Vec::new();
    data.gather(pool, &mut x);
    let pool_emb = encoder.embed(&x)?;
    let protos = kmeans(&pool_emb, dim, cfg.benign_prototypes, 30, cfg.seed ^ 0x6b6d);
    x.clear();
    data.gather(calibration, &mut x);
    let cal = encoder.embed(&x)?;
    Ok(BenignReference::new(dim, protos, cal, cfg.fpr_budget))
}

/// Embeddings of up to `cfg.known_rows` seeded rows of each family.
fn family_embeddings(
    encoder: &Encoder,
    data: &Rows,
    families: &BTreeMap<String, Vec<usize>>,
    cfg: &TrainConfig,
) -> Result<Vec<(String, Vec<f32>)>> {
    let mut out = Vec::new();
    for (i, (name, rows)) in families.iter().enumerate() {
        let rows = seeded_subsample(rows, cfg.known_rows, cfg.seed ^ 0x6b6e ^ i as u64);
        if rows.is_empty() {
            continue;
        }
        let mut x = Vec::new();
        data.gather(&rows, &mut x);
        out.push((name.clone(), encoder.embed(&x)?));
    }
    Ok(out)
}

/// Known attack-family prototypes: `per_family` k-means centres of each family's embeddings.
///
/// # Shapes
/// each family's embeddings `n_f × dim` → (`r` names, `r × dim`), `r = Σ min(per_family, n_f)`.
fn known_prototypes(
    embedded: &[(String, Vec<f32>)],
    dim: usize,
    per_family: usize,
    seed: u64,
) -> (Vec<String>, Vec<f32>) {
    let mut names = Vec::new();
    let mut protos = Vec::new();
    if per_family == 0 {
        return (names, protos);
    }
    for (i, (name, emb)) in embedded.iter().enumerate() {
        let c = kmeans(emb, dim, per_family, 30, seed ^ 0x6b61 ^ i as u64);
        names.extend(std::iter::repeat_n(name.clone(), c.len() / dim.max(1)));
        protos.extend_from_slice(&c);
    }
    (names, protos)
}

/// Macro-F1 and macro-FPR of the validation tasks with the current encoder (family rule).
fn validate(
    encoder: &Encoder,
    data: &Rows,
    v: &Validation,
    cfg: &TrainConfig,
) -> Result<(f64, f64)> {
    let reference = benign_reference(encoder, data, &v.kmeans_pool, &v.calibration, cfg)?;
    validate_with(encoder, data, v, &reference, false)
}

/// Macro-F1 and macro-FPR of the validation tasks under `reference`, with the family rule or (with
/// `known`) the known-family rule.
fn validate_with(
    encoder: &Encoder,
    data: &Rows,
    v: &Validation,
    reference: &BenignReference,
    known: bool,
) -> Result<(f64, f64)> {
    let dim = encoder.config().embedding;
    let (map, emb) = embed_map(encoder, data, &v.rows)?;
    let e = |r: usize| {
        let o = map[&r];
        &emb[o * dim..(o + 1) * dim]
    };
    let mut by_family: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for t in &v.tasks {
        let mut s = Vec::with_capacity(t.support.len() * dim);
        for &r in &t.support {
            s.extend_from_slice(e(r));
        }
        let pred: Vec<bool> = if known {
            let fam = reference.enrol_known_at(&s, reference.fpr_budget);
            t.queries
                .iter()
                .map(|&q| reference.flags_known(e(q), &fam))
                .collect()
        } else {
            let fam = reference.enrol(&s);
            t.queries
                .iter()
                .map(|&q| reference.flags(e(q), &fam))
                .collect()
        };
        let c = BinaryCounts::from_predictions(&t.truth, &pred);
        by_family
            .entry(t.family.as_str())
            .or_default()
            .push((c.f1(), c.fpr()));
    }
    let n = by_family.len().max(1) as f64;
    let mean = |i: usize| {
        by_family
            .values()
            .map(|v| {
                v.iter()
                    .map(|p| if i == 0 { p.0 } else { p.1 })
                    .sum::<f64>()
                    / v.len() as f64
            })
            .sum::<f64>()
            / n
    };
    Ok((mean(0), mean(1)))
}

/// Macro-F1 and macro-FPR of the validation tasks with enrolment fine-tuning.
fn validate_finetune(ft: &Finetuner, data: &Rows, v: &Validation) -> Result<(f64, f64)> {
    use rayon::prelude::*;
    let dim = ft.init.config().embedding;
    let per_task = v
        .tasks
        .par_iter()
        .map(|t| {
            let mut sx = Vec::new();
            data.gather(&t.support, &mut sx);
            let a = ft.adapt(&sx)?;
            let mut qx = Vec::new();
            data.gather(&t.queries, &mut qx);
            let q = a.encoder.embed(&qx)?;
            let pred: Vec<bool> = q
                .chunks_exact(dim)
                .map(|x| a.reference.flags(x, &a.family))
                .collect();
            let c = BinaryCounts::from_predictions(&t.truth, &pred);
            Ok((t.family.as_str(), c.f1(), c.fpr()))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut by_family: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for (f, f1, fpr) in per_task {
        by_family.entry(f).or_default().push((f1, fpr));
    }
    let n = by_family.len().max(1) as f64;
    let mean = |i: usize| {
        by_family
            .values()
            .map(|v| {
                v.iter()
                    .map(|p| if i == 0 { p.0 } else { p.1 })
                    .sum::<f64>()
                    / v.len() as f64
            })
            .sum::<f64>()
            / n
    };
    Ok((mean(0), mean(1)))
}

/// Prototypical loss of one episode.
///
/// # Shapes
/// `x`: `(N·K + N·Q, input_dim)` (support rows way by way, then query rows way by way) → scalar.
fn episode_loss(
    encoder: &Encoder,
    x: &Tensor,
    ways: usize,
    k: usize,
    q: usize,
    aux: Option<(&AuxHead, &Tensor, f64)>,
) -> Result<Tensor> {
    let ctx = ModelError::tensor;
    let emb = encoder.forward(x)?;
    let aux_loss = match aux {
        Some((head, labels, w)) => Some((head.loss(&emb, labels)?, w)),
        None => None,
    };
    let e = encoder.config().embedding;
    let support = emb.narrow(0, 0, ways * k).map_err(ctx("support slice"))?;
    let queries = emb
        .narrow(0, ways * k, ways * q)
        .map_err(ctx("query slice"))?;
    let protos = support
        .reshape((ways, k, e))
        .and_then(|t| t.mean(1))
        .map_err(ctx("prototypes"))?;
    let d = queries
        .unsqueeze(1)
        .and_then(|qq| qq.broadcast_sub(&protos.unsqueeze(0)?))
        .and_then(|t| t.sqr())
        .and_then(|t| t.sum(D::Minus1))
        .map_err(ctx("distances"))?;
    let logits = d.neg().map_err(ctx("logits"))?;
    let targets: Vec<u32> = (0..ways as u32)
        .flat_map(|w| std::iter::repeat_n(w, q))
        .collect();
    let targets = Tensor::from_vec(targets, ways * q, encoder.device()).map_err(ctx("targets"))?;
    let loss = candle_nn::loss::cross_entropy(&logits, &targets).map_err(ctx("cross entropy"))?;
    match aux_loss {
        Some((a, w)) => (loss + (a * w).map_err(ctx("aux weight"))?).map_err(ctx("aux sum")),
        None => Ok(loss),
    }
}

/// The auxiliary classifier: a linear head over benign and every seen family.
struct AuxHead {
    weight: candle_core::Var,
    bias: candle_core::Var,
}

impl AuxHead {
    fn new(classes: usize, dim: usize, seed: u64, device: &candle_core::Device) -> Result<Self> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0061_7578);
        let bound = (1.0 / dim.max(1) as f32).sqrt();
        let w: Vec<f32> = (0..classes * dim)
            .map(|_| rng.random_range(-bound..bound))
            .collect();
        let weight = candle_core::Var::from_vec(w, (classes, dim), device)
            .map_err(ModelError::tensor("aux head weight"))?;
        let bias = candle_core::Var::zeros(classes, candle_core::DType::F32, device)
            .map_err(ModelError::tensor("aux head bias"))?;
        Ok(AuxHead { weight, bias })
    }

    /// Cross-entropy of the head.
    ///
    /// # Shapes
    /// `emb`: `(B, e)`; `labels`: `(B,)` u32 → scalar.
    fn loss(&self, emb: &Tensor, labels: &Tensor) -> Result<Tensor> {
        let ctx = ModelError::tensor;
        let logits = emb
            .matmul(&self.weight.as_tensor().t().map_err(ctx("aux transpose"))?)
            .and_then(|l| l.broadcast_add(self.bias.as_tensor()))
            .map_err(ctx("aux logits"))?;
        candle_nn::loss::cross_entropy(&logits, labels).map_err(ctx("aux cross entropy"))
    }
}

/// Meta-trains a model on `frame` under `split`.
///
/// The normaliser is fit on `split.training_rows()` with `preprocess` (as the benchmark does);
/// `encoder.input_dim` is replaced by its output width. `progress` is called after every step.
pub fn train(
    frame: &FlowFrame,
    split: &Split,
    preprocess: PreprocessConfig,
    encoder: EncoderConfig,
    cfg: &TrainConfig,
    provenance: Provenance,
    progress: &mut dyn FnMut(&TrainProgress),
) -> Result<ThreatModel> {
    cfg.validate()?;
    let started = Instant::now();
    let normaliser = Normaliser::fit(frame, &split.training_rows(), preprocess)?;
    let enc_cfg = EncoderConfig {
        input_dim: normaliser.output_dim(),
        ..encoder
    };
    let encoder = Encoder::new(enc_cfg, cfg.seed)?;

    // The benign hold-out: seeded, disjoint from the benign training pool.
    let mut benign = split.benign_train.clone();
    benign.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x686f_6c64));
    let n_hold = ((benign.len() as f64 * cfg.benign_holdout_fraction).round() as usize)
        .min(cfg.max_holdout)
        .max(2);
    if benign.len() < n_hold + 20 {
        return Err(ModelError::Data(format!(
            "only {} benign training rows; need at least {}",
            benign.len(),
            n_hold + 20
        )));
    }
    let mut pool = benign.split_off(n_hold);
    pool.sort_unstable();
    let half = benign.len() / 2;
    let mut calibration_half = benign[..half].to_vec();
    let mut validation_benign = benign[half..].to_vec();
    let mut holdout = benign;
    calibration_half.sort_unstable();
    validation_benign.sort_unstable();
    holdout.sort_unstable();

    // Preprocess only the rows training may look at.
    let mut needed: Vec<usize> = split.benign_train.clone();
    needed.extend(split.seen.values().flatten());
    needed.extend(split.validation.values().flatten());
    needed.sort_unstable();
    needed.dedup();
    let mut slot = vec![u32::MAX; frame.len()];
    for (i, &r) in needed.iter().enumerate() {
        slot[r] = i as u32;
    }
    let data = Rows {
        dim: normaliser.output_dim(),
        slot,
        x: normaliser.transform(frame, &needed)?,
    };

    // Validation tasks, like the novel protocol but on validation families and held-out benign rows.
    let mut tasks = Vec::new();
    for (family, rows) in &split.validation {
        for e in 0..cfg.validation_episodes {
            let mut rng = episode_rng(
                cfg.seed,
                &format!("validate:{family}"),
                cfg.validation_shots,
                e,
            );
            if let Some(t) = sample_detection_task(
                family,
                rows,
                &validation_benign,
                cfg.validation_shots,
                cfg.validation_max_queries,
                &mut rng,
                e,
            ) {
                tasks.push(t);
            }
        }
    }
    if tasks.is_empty() {
        return Err(ModelError::Data(format!(
            "no validation task could be built (validation families: {:?}; held-out benign rows: {})",
            split.validation.keys().collect::<Vec<_>>(),
            validation_benign.len()
        )));
    }
    let mut vrows: Vec<usize> = tasks
        .iter()
        .flat_map(|t| t.support.iter().chain(&t.queries).copied())
        .collect();
    vrows.sort_unstable();
    vrows.dedup();
    let kmeans_pool = seeded_subsample(&pool, cfg.kmeans_rows, cfg.seed ^ 0x6b70);
    let validation = Validation {
        tasks,
        rows: vrows,
        kmeans_pool: kmeans_pool.clone(),
        calibration: calibration_half,
    };

    // Episode classes: benign training pool plus seen families.
    let benign_name = split.benign.as_str();
    let mut classes = vec![ClassRows {
        name: benign_name,
        rows: &pool,
    }];
    classes.extend(split.seen.iter().map(|(f, r)| ClassRows {
        name: f.as_str(),
        rows: r.as_slice(),
    }));
    let mut samplers = Vec::new();
    for &k in &cfg.shots {
        let eligible = classes
            .iter()
            .filter(|c| c.rows.len() >= k + cfg.queries)
            .count();
        let ways = cfg.ways.min(eligible);
        if ways >= 2 {
            samplers.push(EpisodeSampler {
                ways,
                shots: k,
                queries: cfg.queries,
            });
        }
    }
    if samplers.is_empty() {
        return Err(ModelError::Data(format!(
            "no seen family has K + {} rows for any K in {:?}",
            cfg.queries, cfg.shots
        )));
    }
    let families: Vec<String> = classes
        .iter()
        .skip(1)
        .filter(|c| c.rows.len() >= samplers[0].shots + cfg.queries)
        .map(|c| c.name.to_string())
        .collect();

    let class_index: HashMap<&str, u32> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name, i as u32))
        .collect();
    let aux = if cfg.aux_weight > 0.0 {
        Some(AuxHead::new(
            classes.len(),
            encoder.config().embedding,
            cfg.seed,
            encoder.device(),
        )?)
    } else {
        None
    };
    let mut vars = encoder.vars();
    if let Some(a) = &aux {
        vars.push(a.weight.clone());
        vars.push(a.bias.clone());
    }
    let mut opt = AdamW::new(
        vars,
        ParamsAdamW {
            lr: cfg.learning_rate,
            weight_decay: cfg.weight_decay,
            ..ParamsAdamW::default()
        },
    )
    .map_err(ModelError::tensor("creating the optimiser"))?;

    let (f1, fpr) = validate(&encoder, &data, &validation, cfg)?;
    let mut history = vec![ValidationPoint {
        step: 0,
        loss: None,
        f1,
        fpr,
    }];
    let mut best = (f1, 0usize, encoder.snapshot()?);
    let mut since_best = 0usize;
    let mut ema = f64::NAN;
    let mut window = (0f64, 0usize);
    let mut steps_run = 0;
    let mut x = Vec::new();
    let mut last_f1 = Some(f1);
    for step in 0..cfg.steps {
        let mut rng = episode_rng(cfg.seed, "meta-train", 0, step);
        let sampler = samplers[rng.random_range(0..samplers.len())];
        let Some(ep) = sampler.sample(&classes, Some(benign_name), &mut rng) else {
            continue;
        };
        x.clear();
        for s in &ep.support {
            data.gather(s, &mut x);
        }
        for q in &ep.query {
            data.gather(q, &mut x);
        }
        let n = sampler.ways * (sampler.shots + sampler.queries);
        let xt = Tensor::from_slice(&x, (n, data.dim), encoder.device())
            .map_err(ModelError::tensor("building an episode batch"))?;
        let labels = match &aux {
            Some(_) => {
                let mut l = Vec::with_capacity(n);
                for (per, rows) in [(sampler.shots, &ep.support), (sampler.queries, &ep.query)] {
                    for (w, _) in rows.iter().enumerate() {
                        let c = class_index
                            .get(ep.classes[w].as_str())
                            .copied()
                            .unwrap_or(0);
                        l.extend(std::iter::repeat_n(c, per));
                    }
                }
                Some(
                    Tensor::from_vec(l, n, encoder.device())
                        .map_err(ModelError::tensor("aux labels"))?,
                )
            }
            None => None,
        };
        let aux_arg = match (&aux, &labels) {
            (Some(h), Some(l)) => Some((h, l, cfg.aux_weight)),
            _ => None,
        };
        let loss = episode_loss(
            &encoder,
            &xt,
            sampler.ways,
            sampler.shots,
            sampler.queries,
            aux_arg,
        )?;
        opt.backward_step(&loss)
            .map_err(ModelError::tensor("optimiser step"))?;
        let l = f64::from(
            loss.to_scalar::<f32>()
                .map_err(ModelError::tensor("reading the loss"))?,
        );
        ema = if ema.is_nan() {
            l
        } else {
            0.95 * ema + 0.05 * l
        };
        window.0 += l;
        window.1 += 1;
        steps_run = step + 1;
        if steps_run.is_multiple_of(cfg.eval_every) || steps_run == cfg.steps {
            let (f1, fpr) = validate(&encoder, &data, &validation, cfg)?;
            history.push(ValidationPoint {
                step: steps_run,
                loss: Some(window.0 / window.1.max(1) as f64),
                f1,
                fpr,
            });
            window = (0.0, 0);
            last_f1 = Some(f1);
            if f1 > best.0 {
                best = (f1, steps_run, encoder.snapshot()?);
                since_best = 0;
            } else {
                since_best += 1;
            }
        }
        progress(&TrainProgress {
            step: steps_run,
            steps: cfg.steps,
            loss: ema,
            validation_f1: last_f1,
            best_f1: best.0,
        });
        if cfg.patience > 0 && since_best >= cfg.patience {
            break;
        }
    }
    encoder.restore(&best.2)?;
    // Known-family prototypes: choose the number per family on the validation tasks, with prototypes
    // of the seen families only (the validation families play the new ones).
    let dim = encoder.config().embedding;
    let mut known_selection = Vec::new();
    let mut chosen: Option<(f64, usize, f64)> = None;
    if !cfg.known_per_family.is_empty() {
        let val_reference = benign_reference(
            &encoder,
            &data,
            &validation.kmeans_pool,
            &validation.calibration,
            cfg,
        )?;
        let seen_emb = family_embeddings(&encoder, &data, &split.seen, cfg)?;
        let shares = if cfg.known_shares.is_empty() {
            vec![0.0]
        } else {
            cfg.known_shares.clone()
        };
        for &k in &cfg.known_per_family {
            let (names, protos) = known_prototypes(&seen_emb, dim, k, cfg.seed);
            for &share in if k == 0 { &shares[..1] } else { &shares[..] } {
                let r = val_reference
                    .clone()
                    .with_known(names.clone(), protos.clone(), share);
                let (f1, fpr) = validate_with(&encoder, &data, &validation, &r, true)?;
                known_selection.push(KnownCandidate {
                    per_family: k,
                    share,
                    f1,
                    fpr,
                });
                if chosen.is_none_or(|(b, _, _)| f1 > b) {
                    chosen = Some((f1, k, share));
                }
            }
        }
    }
    // Final benign reference: k-means on the training pool, calibration on the whole hold-out; known
    // prototypes of every non-novel attack family (seen and validation).
    let mut reference = benign_reference(&encoder, &data, &kmeans_pool, &holdout, cfg)?;
    let (known_per_family, known_share) = chosen.map_or((0, 0.0), |c| (c.1, c.2));
    if known_per_family > 0 {
        let mut known_families = split.seen.clone();
        known_families.extend(split.validation.iter().map(|(k, v)| (k.clone(), v.clone())));
        let emb = family_embeddings(&encoder, &data, &known_families, cfg)?;
        let (names, protos) = known_prototypes(&emb, dim, known_per_family, cfg.seed);
        reference = reference.with_known(names, protos, known_share);
    }
    // Enrolment fine-tuning: first-order MAML from the prototypical encoder, selected on the
    // validation families with the fine-tuned rule.
    let mut finetune_history = Vec::new();
    let mut finetune_best_step = 0;
    let mut finetune_selection = Vec::new();
    let finetuner = match &cfg.finetune {
        None => None,
        Some(fc) => {
            let benign_rows = seeded_subsample(&pool, fc.benign_rows, cfg.seed ^ 0x6662);
            let mut benign_x = Vec::new();
            data.gather(&benign_rows, &mut benign_x);
            let mut val_cal_x = Vec::new();
            data.gather(
                &seeded_subsample(
                    &validation.calibration,
                    fc.calibration_rows,
                    cfg.seed ^ 0x6663,
                ),
                &mut val_cal_x,
            );
            let init = encoder.deep_copy()?;
            let mut fc = fc.clone();
            let val_ft = |init: &Encoder, fc: &FinetuneConfig| -> Result<(f64, f64)> {
                let ft = Finetuner::new(
                    fc.clone(),
                    init.deep_copy()?,
                    benign_x.clone(),
                    val_cal_x.clone(),
                    cfg.fpr_budget,
                    cfg.seed,
                )?;
                validate_finetune(&ft, &data, &validation)
            };
            // Inner learning rate: chosen on the validation families, before MAML.
            let mut best_lr: Option<(f64, f64, f64)> = None;
            let candidates = if fc.learning_rate_candidates.is_empty() {
                vec![fc.learning_rate]
            } else {
                fc.learning_rate_candidates.clone()
            };
            for &lr in &candidates {
                let c = FinetuneConfig {
                    learning_rate: lr,
                    ..fc.clone()
                };
                let (f1, fpr) = val_ft(&init, &c)?;
                finetune_selection.push(FinetuneCandidate {
                    learning_rate: lr,
                    f1,
                    fpr,
                });
                if best_lr.is_none_or(|(b, _, _)| f1 > b) {
                    best_lr = Some((f1, fpr, lr));
                }
            }
            let (f1, fpr, lr) = best_lr.unwrap_or((0.0, 0.0, fc.learning_rate));
            fc.learning_rate = lr;
            finetune_history.push(ValidationPoint {
                step: 0,
                loss: None,
                f1,
                fpr,
            });
            let mut best_ft = (f1, 0usize, init.snapshot()?);
            if fc.maml_steps > 0 {
                let mut trainer = MamlTrainer::new(&init, fc.clone(), cfg.seed)?;
                let fams: Vec<&ClassRows<'_>> = classes
                    .iter()
                    .skip(1)
                    .filter(|c| c.rows.len() > fc.maml_queries + 1)
                    .collect();
                let mut window = (0f64, 0usize);
                let every = cfg.eval_every.max(1);
                for step in 0..fc.maml_steps {
                    if fams.is_empty() {
                        break;
                    }
                    let mut rng = episode_rng(cfg.seed, "maml", 0, step);
                    let fam = fams[rng.random_range(0..fams.len())];
                    let k = cfg.shots[rng.random_range(0..cfg.shots.len())]
                        .min(fam.rows.len() - fc.maml_queries);
                    let mut fr = fam.rows.to_vec();
                    fr.shuffle(&mut rng);
                    let mut br = pool.clone();
                    br.partial_shuffle(&mut rng, fc.maml_benign_rows + fc.maml_queries);
                    let nb = fc.maml_benign_rows.min(br.len() / 2);
                    let nbq = fc.maml_queries.min(br.len() - nb);
                    let g = |rows: &[usize]| {
                        let mut x = Vec::new();
                        data.gather(rows, &mut x);
                        x
                    };
                    let task = MamlTask {
                        support_x: g(&fr[..k]),
                        query_x: g(&fr[k..k + fc.maml_queries]),
                        benign_x: g(&br[..nb]),
                        benign_query_x: g(&br[nb..nb + nbq]),
                    };
                    let l = trainer.step(&init, &task, step)?;
                    window.0 += l;
                    window.1 += 1;
                    let done = step + 1;
                    if done.is_multiple_of(every) || done == fc.maml_steps {
                        let (f1, fpr) = val_ft(&init, &fc)?;
                        finetune_history.push(ValidationPoint {
                            step: done,
                            loss: Some(window.0 / window.1.max(1) as f64),
                            f1,
                            fpr,
                        });
                        window = (0.0, 0);
                        if f1 > best_ft.0 {
                            best_ft = (f1, done, init.snapshot()?);
                        }
                    }
                }
            }
            init.restore(&best_ft.2)?;
            finetune_best_step = best_ft.1;
            let mut cal_x = Vec::new();
            data.gather(
                &seeded_subsample(&holdout, fc.calibration_rows, cfg.seed ^ 0x6664),
                &mut cal_x,
            );
            Some(Finetuner::new(
                fc.clone(),
                init,
                benign_x,
                cal_x,
                cfg.fpr_budget,
                cfg.seed,
            )?)
        }
    };
    let record = TrainingRecord {
        config: cfg.clone(),
        history,
        best_step: best.1,
        best_f1: best.0,
        steps_run,
        seconds: started.elapsed().as_secs_f64(),
        families,
        validation_families: split.validation.keys().cloned().collect(),
        benign_rows: [
            pool.len(),
            holdout.len() - validation_benign.len(),
            validation_benign.len(),
        ],
        provenance,
        known_selection,
        known_per_family,
        finetune_history,
        finetune_best_step,
        finetune_selection,
    };
    // LayerNorm channel moments over the benign training pool (at most NORM_STATISTICS_ROWS rows),
    // the target of a site's LayerNorm adaptation.
    let norm_statistics = if encoder.config().layer_norm {
        let rows = seeded_subsample(&kmeans_pool, NORM_STATISTICS_ROWS, cfg.seed ^ 0x6e73);
        let mut x = Vec::new();
        data.gather(&rows, &mut x);
        Some(crate::adapt::NormStatistics::of(&encoder, &x)?)
    } else {
        None
    };
    Ok(ThreatModel {
        normaliser,
        encoder,
        reference,
        record,
        path: None,
        finetune: finetuner,
        norm_statistics,
    })
}
