//! Few-step fine-tuning of the encoder at enrolment (row `protonet+finetune`) and the first-order MAML
//! outer loop that meta-trains an initialisation for it.
//!
//! Adaptation: a copy of the fine-tuning initialisation takes `steps` plain SGD steps on the K support
//! rows plus a stored sample of benign training rows. The loss is the prototypical loss of one episode
//! whose ways are the `m` benign clusters (seeded k-means of the benign sample under the initial
//! encoder, assignment kept fixed) and the new family (prototype = mean of the support embeddings):
//! `L = ½ CE(support rows → family) + ½ CE(benign rows → their cluster)` over logits `−d(x, ·)`.
//! Then the benign prototypes are the cluster means and the threshold is calibrated on stored held-out
//! benign rows re-embedded by the adapted encoder, exactly like the plain rule (`decision`).
//!
//! Meta-training (first-order MAML): for a seen family, the inner loop is that adaptation; the outer
//! loss is the same loss on query rows (family and benign) at `θ'' = θ + stop_grad(θ' − θ)`, so its
//! gradient with respect to `θ` is the first-order MAML gradient `∂L_query/∂θ'` and Adam applies it.
//! It never reads novel families or the benign query pool, and it does not touch files.

use candle_core::{Tensor, D};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};
use serde::{Deserialize, Serialize};

use crate::encoder::Encoder;
use crate::error::{ModelError, Result};
use metaids_decide::geometry::{kmeans, nearest};
use metaids_decide::{BenignReference, FamilyPrototype};

/// Settings of the enrolment fine-tuning and of its meta-training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// SGD steps at enrolment (and in the MAML inner loop).
    pub steps: usize,
    /// Inner SGD learning rate (after training: the one chosen on validation families).
    pub learning_rate: f64,
    /// Candidate inner learning rates; training keeps the one with the best validation macro-F1 of
    /// the fine-tuned rule before MAML (empty: `learning_rate` only).
    #[serde(default)]
    pub learning_rate_candidates: Vec<f64>,
    /// Benign clusters (ways) of the adaptation loss.
    pub clusters: usize,
    /// Benign training rows kept in the model: all of them place the benign prototypes (cluster means)
    /// after adaptation; a strided subset of `sgd_benign_rows` enters the adaptation loss.
    pub benign_rows: usize,
    /// Benign rows in the adaptation loss.
    #[serde(default = "default_sgd_benign_rows")]
    pub sgd_benign_rows: usize,
    /// Held-out benign rows kept in the model to calibrate the adapted encoder.
    pub calibration_rows: usize,
    /// First-order MAML outer steps (0: the fine-tuning starts from the prototypical encoder).
    pub maml_steps: usize,
    /// Adam learning rate of the MAML outer loop.
    pub maml_learning_rate: f64,
    /// Benign rows per MAML inner task (adaptation batch; as many again are benign queries).
    pub maml_benign_rows: usize,
    /// Family query rows per MAML task.
    pub maml_queries: usize,
}

fn default_sgd_benign_rows() -> usize {
    128
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        FinetuneConfig {
            steps: 5,
            learning_rate: 0.05,
            learning_rate_candidates: vec![0.01, 0.03, 0.1],
            clusters: 8,
            benign_rows: 2000,
            sgd_benign_rows: default_sgd_benign_rows(),
            calibration_rows: 2000,
            maml_steps: 300,
            maml_learning_rate: 1e-4,
            maml_benign_rows: 128,
            maml_queries: 16,
        }
    }
}

/// What enrolment fine-tuning needs at run time: its initialisation and preprocessed benign rows.
#[derive(Debug)]
pub struct Finetuner {
    /// Settings.
    pub config: FinetuneConfig,
    /// The initialisation (MAML-trained, or a copy of the prototypical encoder).
    pub init: Encoder,
    /// Preprocessed benign training rows, `n_b × input_dim`.
    pub benign_x: Vec<f32>,
    /// Preprocessed held-out benign calibration rows, `n_c × input_dim`.
    pub calibration_x: Vec<f32>,
    /// False-positive budget of the adapted thresholds.
    pub fpr_budget: f64,
    /// Cluster of each benign row (k-means under `init`, fixed).
    assign: Vec<usize>,
    /// The strided subset of benign rows in the adaptation loss, `n_s × input_dim`.
    sgd_x: Vec<f32>,
    /// Their clusters, renumbered densely.
    sgd_assign: Vec<usize>,
    /// Seed of the k-means.
    seed: u64,
}

/// A family enrolled with a fine-tuned encoder.
#[derive(Debug)]
pub struct Adapted {
    /// The adapted encoder (queries must be embedded with it).
    pub encoder: Encoder,
    /// Benign prototypes (cluster means) and calibration under the adapted encoder.
    pub reference: BenignReference,
    /// The family: support-mean prototype and calibrated threshold.
    pub family: FamilyPrototype,
}

/// Cluster of every benign row: seeded k-means of their embeddings under `encoder`.
///
/// # Shapes
/// `benign_x`: `n × input_dim` → `n` cluster indices in `0..min(clusters, n)`.
fn cluster_benign(
    encoder: &Encoder,
    benign_x: &[f32],
    clusters: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let dim = encoder.config().embedding;
    let emb = encoder.embed(benign_x)?;
    let centres = kmeans(&emb, dim, clusters, 30, seed ^ 0x6674);
    Ok(emb
        .chunks_exact(dim)
        .map(|e| nearest(e, &centres, dim).0)
        .collect())
}

/// Averaging matrix of a fixed assignment: row `c` holds `1/n_c` at the rows of cluster `c`.
///
/// # Shapes
/// `assign`: `n` indices → `(m, n)` with `m = max(assign) + 1`.
fn averaging(assign: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let m = assign.iter().max().map_or(0, |&a| a + 1).max(1);
    let n = assign.len();
    let mut counts = vec![0usize; m];
    for &a in assign {
        counts[a] += 1;
    }
    let mut v = vec![0f32; m * n];
    for (i, &a) in assign.iter().enumerate() {
        v[a * n + i] = 1.0 / counts[a] as f32;
    }
    Tensor::from_vec(v, (m, n), device).map_err(ModelError::tensor("averaging matrix"))
}

/// Squared distances from every row of `x` to every row of `c`.
///
/// # Shapes
/// `x`: `(n, e)`, `c`: `(m, e)` → `(n, m)`.
fn sq_distances(x: &Tensor, c: &Tensor) -> Result<Tensor> {
    x.unsqueeze(1)
        .and_then(|a| a.broadcast_sub(&c.unsqueeze(0)?))
        .and_then(|t| t.sqr())
        .and_then(|t| t.sum(D::Minus1))
        .map_err(ModelError::tensor("distances"))
}

/// The adaptation loss with the parameters `params`.
///
/// Rows of `x`: `k` support rows, then the `assign.len()` benign rows, then `extra` rows scored against
/// the same prototypes (the outer-loop queries) with targets `extra_targets` (`m` = the family).
///
/// # Shapes
/// `x`: `(k + n_b + n_q, input_dim)`; `avg`: `(m, n_b)` → scalar.
#[allow(clippy::too_many_arguments)]
fn adaptation_loss(
    encoder: &Encoder,
    params: &[Tensor],
    x: &Tensor,
    k: usize,
    avg: &Tensor,
    assign: &[usize],
    extra_targets: &[u32],
) -> Result<Tensor> {
    let ctx = ModelError::tensor;
    let nb = assign.len();
    let m = avg.dims()[0];
    let emb = encoder.forward_with(params, x)?;
    let support = emb.narrow(0, 0, k).map_err(ctx("support slice"))?;
    let benign = emb.narrow(0, k, nb).map_err(ctx("benign slice"))?;
    let proto = support.mean_keepdim(0).map_err(ctx("family prototype"))?;
    let bprotos = avg.matmul(&benign).map_err(ctx("benign prototypes"))?;
    let protos = Tensor::cat(&[&bprotos, &proto], 0).map_err(ctx("prototypes"))?;
    let ce = |rows: &Tensor, targets: Vec<u32>| -> Result<Tensor> {
        let n = targets.len();
        let logits = sq_distances(rows, &protos)?.neg().map_err(ctx("logits"))?;
        let t = Tensor::from_vec(targets, n, x.device()).map_err(ctx("targets"))?;
        candle_nn::loss::cross_entropy(&logits, &t).map_err(ctx("cross entropy"))
    };
    if extra_targets.is_empty() {
        let ls = ce(&support, vec![m as u32; k])?;
        let lb = ce(&benign, assign.iter().map(|&a| a as u32).collect())?;
        return ((ls + lb).map_err(ctx("loss sum"))? * 0.5).map_err(ctx("loss scale"));
    }
    let q = emb
        .narrow(0, k + nb, extra_targets.len())
        .map_err(ctx("query slice"))?;
    ce(&q, extra_targets.to_vec())
}

/// Plain SGD steps of the adaptation loss on `enc`'s variables.
///
/// # Shapes
/// `x`: `(k + n_b, input_dim)`.
fn sgd_steps(
    enc: &Encoder,
    x: &Tensor,
    k: usize,
    avg: &Tensor,
    assign: &[usize],
    steps: usize,
    lr: f64,
) -> Result<()> {
    let vars = enc.vars();
    for _ in 0..steps {
        let loss = adaptation_loss(enc, &enc.tensors(), x, k, avg, assign, &[])?;
        let grads = loss
            .backward()
            .map_err(ModelError::tensor("adaptation backward"))?;
        for v in &vars {
            if let Some(g) = grads.get(v.as_tensor()) {
                let updated = (v.as_tensor() - (g * lr).map_err(ModelError::tensor("sgd step"))?)
                    .map_err(ModelError::tensor("sgd step"))?;
                v.set(&updated).map_err(ModelError::tensor("sgd set"))?;
            }
        }
    }
    Ok(())
}

impl Finetuner {
    /// Builds the run-time material: clusters the benign rows under `init`.
    ///
    /// # Shapes
    /// `benign_x`: `n_b × input_dim`; `calibration_x`: `n_c × input_dim`.
    pub fn new(
        config: FinetuneConfig,
        init: Encoder,
        benign_x: Vec<f32>,
        calibration_x: Vec<f32>,
        fpr_budget: f64,
        seed: u64,
    ) -> Result<Self> {
        let d = init.config().input_dim;
        if benign_x.is_empty() || !benign_x.len().is_multiple_of(d) {
            return Err(ModelError::Data(format!(
                "fine-tuning needs benign rows of width {d}; got {} values",
                benign_x.len()
            )));
        }
        if calibration_x.is_empty() || !calibration_x.len().is_multiple_of(d) {
            return Err(ModelError::Data(format!(
                "fine-tuning needs calibration rows of width {d}; got {} values",
                calibration_x.len()
            )));
        }
        let assign = cluster_benign(&init, &benign_x, config.clusters, seed)?;
        let n = assign.len();
        let take = config.sgd_benign_rows.clamp(1, n);
        let mut sgd_x = Vec::with_capacity(take * d);
        let mut raw = Vec::with_capacity(take);
        for i in 0..take {
            let r = i * n / take;
            sgd_x.extend_from_slice(&benign_x[r * d..(r + 1) * d]);
            raw.push(assign[r]);
        }
        // Dense cluster numbers (a cluster may have no row in the subset).
        let mut ids: Vec<usize> = raw.clone();
        ids.sort_unstable();
        ids.dedup();
        let sgd_assign = raw
            .iter()
            .map(|a| ids.binary_search(a).unwrap_or(0))
            .collect();
        Ok(Finetuner {
            config,
            init,
            benign_x,
            calibration_x,
            fpr_budget,
            assign,
            sgd_x,
            sgd_assign,
            seed,
        })
    }

    /// Seed of the benign clustering.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Number of stored benign rows.
    pub fn benign_rows(&self) -> usize {
        self.assign.len()
    }

    /// Number of stored calibration rows.
    pub fn calibration_rows(&self) -> usize {
        self.calibration_x.len() / self.init.config().input_dim.max(1)
    }

    /// Enrols a family from its preprocessed support rows: fine-tunes a copy of the initialisation,
    /// then builds the benign reference and the family's calibrated prototype with it. Deterministic.
    ///
    /// # Shapes
    /// `support_x`: `K × input_dim`.
    pub fn adapt(&self, support_x: &[f32]) -> Result<Adapted> {
        let d = self.init.config().input_dim;
        let dim = self.init.config().embedding;
        if support_x.is_empty() || !support_x.len().is_multiple_of(d) {
            return Err(ModelError::Data(format!(
                "support rows must be a positive multiple of the input width {d}; got {} values",
                support_x.len()
            )));
        }
        let k = support_x.len() / d;
        let enc = self.init.deep_copy()?;
        let mut x = Vec::with_capacity(support_x.len() + self.sgd_x.len());
        x.extend_from_slice(support_x);
        x.extend_from_slice(&self.sgd_x);
        let xt = Tensor::from_vec(x, (k + self.sgd_assign.len(), d), enc.device())
            .map_err(ModelError::tensor("adaptation batch"))?;
        let avg = averaging(&self.sgd_assign, enc.device())?;
        sgd_steps(
            &enc,
            &xt,
            k,
            &avg,
            &self.sgd_assign,
            self.config.steps,
            self.config.learning_rate,
        )?;
        // Benign prototypes: cluster means of the benign rows under the adapted encoder.
        let bemb = enc.embed(&self.benign_x)?;
        let m = self.assign.iter().max().map_or(0, |&a| a + 1);
        let mut protos = vec![0f32; m * dim];
        let mut counts = vec![0usize; m];
        for (e, &a) in bemb.chunks_exact(dim).zip(&self.assign) {
            counts[a] += 1;
            protos[a * dim..(a + 1) * dim]
                .iter_mut()
                .zip(e)
                .for_each(|(p, v)| *p += v);
        }
        for (c, &n) in counts.iter().enumerate() {
            let inv = 1.0 / n.max(1) as f32;
            protos[c * dim..(c + 1) * dim]
                .iter_mut()
                .for_each(|p| *p *= inv);
        }
        let calibration = enc.embed(&self.calibration_x)?;
        let reference = BenignReference::new(dim, protos, calibration, self.fpr_budget);
        let support = enc.embed(support_x)?;
        let family = reference.enrol(&support);
        Ok(Adapted {
            encoder: enc,
            reference,
            family,
        })
    }
}

/// One first-order MAML task: K support rows and `q` query rows of a family, benign rows for
/// adaptation and benign queries.
#[derive(Debug, Clone)]
pub struct MamlTask {
    /// Preprocessed support rows, `K × input_dim`.
    pub support_x: Vec<f32>,
    /// Preprocessed benign adaptation rows, `n_b × input_dim`.
    pub benign_x: Vec<f32>,
    /// Preprocessed family query rows, `q × input_dim`.
    pub query_x: Vec<f32>,
    /// Preprocessed benign query rows, `q_b × input_dim`.
    pub benign_query_x: Vec<f32>,
}

/// The first-order MAML outer loop: owns the outer optimiser of `init`.
#[derive(Debug)]
pub struct MamlTrainer {
    opt: AdamW,
    config: FinetuneConfig,
    seed: u64,
}

impl MamlTrainer {
    /// An outer Adam optimiser over `init`'s variables.
    pub fn new(init: &Encoder, config: FinetuneConfig, seed: u64) -> Result<Self> {
        let opt = AdamW::new(
            init.vars(),
            ParamsAdamW {
                lr: config.maml_learning_rate,
                weight_decay: 0.0,
                ..ParamsAdamW::default()
            },
        )
        .map_err(ModelError::tensor("creating the MAML optimiser"))?;
        Ok(MamlTrainer { opt, config, seed })
    }

    /// One outer step on `task`; returns the query loss after adaptation.
    pub fn step(&mut self, init: &Encoder, task: &MamlTask, step: usize) -> Result<f64> {
        let ctx = ModelError::tensor;
        let d = init.config().input_dim;
        let dim = init.config().embedding;
        let k = task.support_x.len() / d;
        let nb = task.benign_x.len() / d;
        let nq = task.query_x.len() / d;
        let nbq = task.benign_query_x.len() / d;
        if k == 0 || nb == 0 || nq == 0 {
            return Err(ModelError::Data("empty MAML task".into()));
        }
        // Fixed benign clusters of this task under the current initialisation.
        let assign = cluster_benign(
            init,
            &task.benign_x,
            self.config.clusters,
            self.seed ^ step as u64,
        )?;
        let avg = averaging(&assign, init.device())?;
        let m = avg.dims()[0];
        let mut x = Vec::with_capacity((k + nb + nq + nbq) * d);
        x.extend_from_slice(&task.support_x);
        x.extend_from_slice(&task.benign_x);
        let inner =
            Tensor::from_slice(&x, (k + nb, d), init.device()).map_err(ctx("inner batch"))?;
        let adapted = init.deep_copy()?;
        sgd_steps(
            &adapted,
            &inner,
            k,
            &avg,
            &assign,
            self.config.steps,
            self.config.learning_rate,
        )?;
        // Benign queries target the nearest benign cluster centre under the adapted encoder.
        let bq_targets: Vec<u32> = if nbq == 0 {
            Vec::new()
        } else {
            let bemb = adapted.embed(&task.benign_x)?;
            let mut centres = vec![0f32; m * dim];
            let mut counts = vec![0usize; m];
            for (e, &a) in bemb.chunks_exact(dim).zip(&assign) {
                counts[a] += 1;
                centres[a * dim..(a + 1) * dim]
                    .iter_mut()
                    .zip(e)
                    .for_each(|(c, v)| *c += v);
            }
            for (c, &n) in counts.iter().enumerate() {
                let inv = 1.0 / n.max(1) as f32;
                centres[c * dim..(c + 1) * dim]
                    .iter_mut()
                    .for_each(|v| *v *= inv);
            }
            adapted
                .embed(&task.benign_query_x)?
                .chunks_exact(dim)
                .map(|e| nearest(e, &centres, dim).0 as u32)
                .collect()
        };
        let mut targets = vec![m as u32; nq];
        targets.extend(bq_targets);
        x.extend_from_slice(&task.query_x);
        x.extend_from_slice(&task.benign_query_x);
        let outer = Tensor::from_vec(x, (k + nb + nq + nbq, d), init.device())
            .map_err(ctx("outer batch"))?;
        // θ'' = θ + stop_grad(θ' − θ): the gradient reaching θ is ∂L/∂θ' (first order).
        let params = init
            .tensors()
            .iter()
            .zip(adapted.tensors())
            .map(|(t, a)| {
                let delta = (a - t)?.detach();
                t + delta
            })
            .collect::<candle_core::Result<Vec<Tensor>>>()
            .map_err(ctx("first-order parameters"))?;
        let loss = adaptation_loss(init, &params, &outer, k, &avg, &assign, &targets)?;
        self.opt
            .backward_step(&loss)
            .map_err(ctx("MAML outer step"))?;
        Ok(f64::from(
            loss.to_scalar::<f32>().map_err(ctx("reading the loss"))?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::EncoderConfig;

    fn rows(n: usize, d: usize, shift: f32, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n * d)
            .map(|i| shift * ((i % d) as f32 / d as f32) + rng.random_range(-1.0..1.0f32))
            .collect()
    }

    fn small() -> EncoderConfig {
        EncoderConfig {
            input_dim: 6,
            hidden: 16,
            depth: 1,
            embedding: 4,
            residual: true,
            layer_norm: true,
        }
    }

    #[test]
    fn adaptation_is_deterministic_lowers_the_loss_and_moves_the_prototype() {
        let enc = Encoder::new(small(), 1).expect("encoder");
        let cfg = FinetuneConfig {
            clusters: 3,
            ..FinetuneConfig::default()
        };
        let ft = Finetuner::new(
            cfg.clone(),
            enc.deep_copy().expect("copy"),
            rows(60, 6, 0.0, 2),
            rows(100, 6, 0.0, 3),
            0.05,
            9,
        )
        .expect("finetuner");
        let support = rows(5, 6, 4.0, 4);
        let a = ft.adapt(&support).expect("adapt");
        let b = ft.adapt(&support).expect("adapt");
        assert_eq!(a.family, b.family);
        assert_eq!(a.reference.prototypes, b.reference.prototypes);
        // Zero steps: the plain prototype of the initialisation.
        let ft0 = Finetuner {
            config: FinetuneConfig { steps: 0, ..cfg },
            ..ft
        };
        let z = ft0.adapt(&support).expect("adapt");
        assert_eq!(z.family.centre, {
            let e = enc.embed(&support).expect("embed");
            metaids_decide::geometry::mean_row(&e, 4)
        });
        assert_ne!(a.family.centre, z.family.centre);
        // The adaptation loss falls.
        let d = 6;
        let mut x = support.clone();
        x.extend_from_slice(&ft0.sgd_x);
        let ns = ft0.sgd_assign.len();
        let xt = Tensor::from_vec(x, (5 + ns, d), enc.device()).expect("x");
        let avg = averaging(&ft0.sgd_assign, enc.device()).expect("avg");
        let loss = |e: &Encoder| {
            adaptation_loss(e, &e.tensors(), &xt, 5, &avg, &ft0.sgd_assign, &[])
                .and_then(|l| l.to_scalar::<f32>().map_err(ModelError::tensor("scalar")))
                .expect("loss")
        };
        assert!(loss(&a.encoder) < loss(&enc));
        // The initialisation is untouched.
        assert_eq!(
            ft0.init.export().expect("export"),
            enc.export().expect("export")
        );
    }

    #[test]
    fn maml_step_moves_the_initialisation_deterministically() {
        let run = || {
            let enc = Encoder::new(small(), 5).expect("encoder");
            let cfg = FinetuneConfig {
                clusters: 2,
                maml_learning_rate: 1e-2,
                ..FinetuneConfig::default()
            };
            let mut t = MamlTrainer::new(&enc, cfg, 3).expect("trainer");
            let task = MamlTask {
                support_x: rows(3, 6, 4.0, 1),
                benign_x: rows(20, 6, 0.0, 2),
                query_x: rows(8, 6, 4.0, 3),
                benign_query_x: rows(8, 6, 0.0, 4),
            };
            let before = enc.export().expect("export");
            let l = t.step(&enc, &task, 0).expect("step");
            assert!(l.is_finite());
            let after = enc.export().expect("export");
            assert_ne!(before, after);
            after
        };
        assert_eq!(run(), run());
    }

    /// Candle 0.11 detaches the gradient flowing into every node before applying that node's local
    /// derivative (`backprop.rs`: "we just call `.detach` to avoid computing the backprop graph of the
    /// backprop itself … second order derivatives … are out of scope"), unless the environment
    /// variable `CANDLE_GRAD_DO_NOT_DETACH` is set when a thread first runs a backward pass. The local
    /// derivative terms are still built from tracked forward tensors, so without the flag a gradient
    /// of a gradient is *silently incomplete*, not absent: for `y = (x²)²` at `x = 2`,
    /// `dy/dx = 4x³ = 32` and the true `d²y/dx² = 12x² = 48`, but the default gives `4x² = 16` (only
    /// the outer factor's dependence on `x` survives). With the flag it is 48.
    #[test]
    fn second_order_gradients_need_candle_grad_do_not_detach() {
        let x = candle_core::Var::new(&[2.0f32], &candle_core::Device::Cpu).expect("var");
        let z = x.as_tensor().sqr().expect("z");
        let y = z.sqr().and_then(|t| t.sum_all()).expect("y");
        let g = y.backward().expect("backward");
        let gx = g.get(x.as_tensor()).expect("dy/dx").clone();
        assert_eq!(gx.to_vec1::<f32>().expect("v"), vec![32.0]);
        let gg = gx.sum_all().and_then(|t| t.backward()).expect("backward");
        let second = gg
            .get(x.as_tensor())
            .map(|t| t.to_vec1::<f32>().expect("v"))
            .expect("a second derivative is returned either way");
        let enabled =
            std::env::var("CANDLE_GRAD_DO_NOT_DETACH").is_ok_and(|v| !v.is_empty() && v != "0");
        if enabled {
            assert!((second[0] - 48.0).abs() < 1e-3, "{second:?}");
        } else {
            assert!(
                (second[0] - 16.0).abs() < 1e-3,
                "default candle drops the upstream term: {second:?}"
            );
        }
    }

    /// Re-runs the test above in a child process with `CANDLE_GRAD_DO_NOT_DETACH=1` (the flag is read
    /// once per thread from the environment, and setting it from inside a multi-threaded test binary
    /// would race other tests).
    #[test]
    fn second_order_gradients_exist_with_the_flag_in_a_child_process() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "finetune::tests::second_order_gradients_need_candle_grad_do_not_detach",
                "--test-threads=1",
            ])
            .env("CANDLE_GRAD_DO_NOT_DETACH", "1")
            .output()
            .expect("child test run");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
    }

    /// candle's gradients of the adaptation loss agree with central finite differences (f64).
    #[test]
    fn adaptation_loss_gradient_matches_finite_differences() {
        let enc = Encoder::new(small(), 2).expect("encoder");
        let x = rows(5, 6, 2.0, 1);
        let mut xb = x.clone();
        xb.extend(rows(12, 6, 0.0, 2));
        let dev = enc.device().clone();
        let xt = Tensor::from_vec(xb, (17, 6), &dev)
            .and_then(|t| t.to_dtype(candle_core::DType::F64))
            .expect("x");
        let assign: Vec<usize> = (0..12).map(|i| i % 3).collect();
        let avg = averaging(&assign, &dev)
            .and_then(|t| {
                t.to_dtype(candle_core::DType::F64)
                    .map_err(ModelError::tensor("f64"))
            })
            .expect("avg");
        let params: Vec<candle_core::Var> = enc
            .tensors()
            .iter()
            .map(|t| {
                t.to_dtype(candle_core::DType::F64)
                    .and_then(|t| candle_core::Var::from_tensor(&t))
                    .expect("var")
            })
            .collect();
        let loss_of = |ps: &[Tensor]| -> f64 {
            adaptation_loss(&enc, ps, &xt, 5, &avg, &assign, &[])
                .and_then(|l| l.to_scalar::<f64>().map_err(ModelError::tensor("scalar")))
                .expect("loss")
        };
        let ts: Vec<Tensor> = params.iter().map(|v| v.as_tensor().clone()).collect();
        let grads = adaptation_loss(&enc, &ts, &xt, 5, &avg, &assign, &[])
            .and_then(|l| l.backward().map_err(ModelError::tensor("backward")))
            .expect("grads");
        let h = 1e-6;
        let mut checked = 0;
        for (pi, v) in params.iter().enumerate() {
            let g = grads
                .get(v.as_tensor())
                .expect("grad")
                .flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("g");
            let base = v
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f64>())
                .expect("p");
            for j in [0, base.len() / 2, base.len() - 1] {
                let bump = |delta: f64| {
                    let mut b = base.clone();
                    b[j] += delta;
                    let t = Tensor::from_vec(b, v.as_tensor().dims(), &dev).expect("t");
                    let mut ps = ts.clone();
                    ps[pi] = t;
                    loss_of(&ps)
                };
                let fd = (bump(h) - bump(-h)) / (2.0 * h);
                assert!(
                    (fd - g[j]).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "parameter {pi} entry {j}: autodiff {} vs finite difference {fd}",
                    g[j]
                );
                checked += 1;
            }
        }
        assert!(checked >= 3 * 8);
    }
}
