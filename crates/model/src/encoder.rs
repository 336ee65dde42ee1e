//! The flow encoder: an MLP (optional residual blocks and LayerNorm) from preprocessed features to an
//! embedding, built on candle's CPU backend with a seeded initialisation.
//!
//! It owns the parameters as an ordered list of candle [`Var`]s, so the order of initialisation, of
//! snapshots and of the saved tensors is fixed and a run is reproducible bit for bit on one machine. It
//! does not train itself (see `train`) and does not read or write files (see `io`).

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::ops::layer_norm_slow;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// LayerNorm epsilon.
const LN_EPS: f32 = 1e-5;
/// Rows per forward pass when embedding many rows.
const EMBED_BATCH: usize = 4096;

/// One exported parameter: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Shape of the encoder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncoderConfig {
    /// Input width: `Normaliser::output_dim()`.
    pub input_dim: usize,
    /// Width of the hidden layers.
    pub hidden: usize,
    /// Number of hidden blocks after the input layer (0: input layer then head).
    pub depth: usize,
    /// Embedding size.
    pub embedding: usize,
    /// Blocks add their output to their input (pre-norm residual MLP).
    pub residual: bool,
    /// LayerNorm before each block and before the head.
    pub layer_norm: bool,
}

impl EncoderConfig {
    /// The default shape for `input_dim` inputs: one residual LayerNorm block of width 64, 32-d
    /// output (about `64·input_dim + 64·64 + 64·32` multiply-adds per flow, sized for the scoring
    /// budget; the former 256-wide, 2-block, 64-d encoder gains little on validation families).
    pub fn for_input(input_dim: usize) -> Self {
        EncoderConfig {
            input_dim,
            hidden: 64,
            depth: 1,
            embedding: 32,
            residual: true,
            layer_norm: true,
        }
    }

    /// Refuses zero sizes and absurdly large ones.
    pub fn validate(&self) -> Result<()> {
        for (field, v) in [
            ("input_dim", self.input_dim),
            ("hidden", self.hidden),
            ("embedding", self.embedding),
        ] {
            if v == 0 || v > 65_536 {
                return Err(ModelError::Config {
                    field,
                    value: v.to_string(),
                    reason: "must be between 1 and 65536",
                });
            }
        }
        if self.depth > 64 {
            return Err(ModelError::Config {
                field: "depth",
                value: self.depth.to_string(),
                reason: "must be at most 64",
            });
        }
        Ok(())
    }

    /// Names and shapes of every parameter, in the fixed order used for init, saving and loading.
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (i, h, e) = (self.input_dim, self.hidden, self.embedding);
        let mut v = vec![
            ("stem.weight".to_string(), vec![h, i]),
            ("stem.bias".to_string(), vec![h]),
        ];
        for b in 0..self.depth {
            if self.layer_norm {
                v.push((format!("block{b}.norm.weight"), vec![h]));
                v.push((format!("block{b}.norm.bias"), vec![h]));
            }
            v.push((format!("block{b}.linear.weight"), vec![h, h]));
            v.push((format!("block{b}.linear.bias"), vec![h]));
        }
        if self.layer_norm {
            v.push(("head.norm.weight".to_string(), vec![h]));
            v.push(("head.norm.bias".to_string(), vec![h]));
        }
        v.push(("head.weight".to_string(), vec![e, h]));
        v.push(("head.bias".to_string(), vec![e]));
        v
    }
}

/// The encoder: parameters plus the forward pass.
#[derive(Debug)]
pub struct Encoder {
    config: EncoderConfig,
    device: Device,
    params: Vec<(String, Var)>,
}

/// Initial values of one parameter: Kaiming-uniform weights (scaled down inside residual blocks so
/// the sum stays near unit variance), zero biases, unit LayerNorm gains.
fn init_values(name: &str, shape: &[usize], residual: bool, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n: usize = shape.iter().product();
    if name.ends_with(".bias") {
        return vec![0.0; n];
    }
    if name.ends_with("norm.weight") {
        return vec![1.0; n];
    }
    let fan_in = shape.get(1).copied().unwrap_or(1).max(1) as f32;
    let mut bound = (6.0 / fan_in).sqrt();
    if residual && name.starts_with("block") {
        bound *= 0.5;
    }
    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
}

impl Encoder {
    /// A freshly initialised encoder; the same `seed` gives the same weights bit for bit.
    pub fn new(config: EncoderConfig, seed: u64) -> Result<Self> {
        config.validate()?;
        let device = Device::Cpu;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Vec::new();
        for (name, shape) in config.parameter_shapes() {
            let values = init_values(&name, &shape, config.residual, &mut rng);
            let t = Tensor::from_vec(values, shape.as_slice(), &device)
                .map_err(ModelError::tensor(format!("initialising {name}")))?;
            let var =
                Var::from_tensor(&t).map_err(ModelError::tensor(format!("creating {name}")))?;
            params.push((name, var));
        }
        Ok(Encoder {
            config,
            device,
            params,
        })
    }

    /// The shape.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The device (always the CPU).
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The trainable variables, in parameter order (for an optimiser).
    pub fn vars(&self) -> Vec<Var> {
        self.params.iter().map(|(_, v)| v.clone()).collect()
    }

    /// The current parameter values as tensors (tracked: gradients flow to the variables).
    pub fn tensors(&self) -> Vec<Tensor> {
        self.params
            .iter()
            .map(|(_, v)| v.as_tensor().clone())
            .collect()
    }

    /// A deep copy with its own variables (for fine-tuning without touching this encoder).
    pub fn deep_copy(&self) -> Result<Encoder> {
        let mut params = Vec::with_capacity(self.params.len());
        for (n, v) in &self.params {
            let t = v
                .as_tensor()
                .copy()
                .map_err(ModelError::tensor(format!("copying {n}")))?;
            let var = Var::from_tensor(&t).map_err(ModelError::tensor(format!("creating {n}")))?;
            params.push((n.clone(), var));
        }
        Ok(Encoder {
            config: self.config.clone(),
            device: self.device.clone(),
            params,
        })
    }

    /// Forward pass with autograd.
    ///
    /// # Shapes
    /// `x`: `(B, input_dim)` f32 → `(B, embedding)` f32.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_with(&self.tensors(), x)
    }

    /// Forward pass with the given parameter values instead of the variables (same order and shapes
    /// as [`EncoderConfig::parameter_shapes`]); gradients flow to whatever the tensors are built from,
    /// which is how the MAML inner loop is expressed.
    ///
    /// # Shapes
    /// `params`: one tensor per parameter; `x`: `(B, input_dim)` f32 → `(B, embedding)` f32.
    pub fn forward_with(&self, params: &[Tensor], x: &Tensor) -> Result<Tensor> {
        let ctx = ModelError::tensor;
        if params.len() != self.params.len() {
            return Err(ModelError::Data(format!(
                "forward_with got {} parameter tensors, the encoder has {}",
                params.len(),
                self.params.len()
            )));
        }
        let p = |i: usize| &params[i];
        let linear = |x: &Tensor, w: usize| -> Result<Tensor> {
            x.matmul(&p(w).t().map_err(ctx("transposing a weight"))?)
                .map_err(ctx("matmul"))?
                .broadcast_add(p(w + 1))
                .map_err(ctx("adding a bias"))
        };
        let mut i = 0;
        let mut h = linear(x, i)?;
        i += 2;
        for _ in 0..self.config.depth {
            let mut z = h.clone();
            if self.config.layer_norm {
                z = layer_norm_slow(&z, p(i), p(i + 1), LN_EPS).map_err(ctx("block layer norm"))?;
                i += 2;
            }
            z = z.relu().map_err(ctx("relu"))?;
            z = linear(&z, i)?;
            i += 2;
            h = if self.config.residual {
                (h + z).map_err(ctx("residual add"))?
            } else {
                z
            };
        }
        if self.config.layer_norm {
            h = layer_norm_slow(&h, p(i), p(i + 1), LN_EPS).map_err(ctx("head layer norm"))?;
            i += 2;
        }
        h = h.relu().map_err(ctx("relu"))?;
        linear(&h, i)
    }

    /// Embeds row-major preprocessed rows (no autograd kept), in batches.
    ///
    /// # Shapes
    /// `rows`: `n × input_dim` values, row-major → `n × embedding` values, row-major.
    pub fn embed(&self, rows: &[f32]) -> Result<Vec<f32>> {
        let d = self.config.input_dim;
        if !rows.len().is_multiple_of(d) {
            return Err(ModelError::Data(format!(
                "embed got {} values, not a multiple of the input width {d}",
                rows.len()
            )));
        }
        let mut out = Vec::with_capacity(rows.len() / d * self.config.embedding);
        for chunk in rows.chunks(EMBED_BATCH * d) {
            let n = chunk.len() / d;
            let x = Tensor::from_slice(chunk, (n, d), &self.device)
                .map_err(ModelError::tensor("building an input batch"))?;
            let y = self
                .forward(&x)?
                .detach()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(ModelError::tensor("reading embeddings"))?;
            out.extend_from_slice(&y);
        }
        Ok(out)
    }

    /// Deep copies of every parameter (for keeping the best model during training).
    pub fn snapshot(&self) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|(n, v)| {
                v.as_tensor()
                    .copy()
                    .map_err(ModelError::tensor(format!("copying {n}")))
            })
            .collect()
    }

    /// Restores a [`Encoder::snapshot`].
    pub fn restore(&self, snapshot: &[Tensor]) -> Result<()> {
        for ((n, v), t) in self.params.iter().zip(snapshot) {
            v.set(t)
                .map_err(ModelError::tensor(format!("restoring {n}")))?;
        }
        Ok(())
    }

    /// Every parameter as (name, shape, values), in parameter order.
    pub fn export(&self) -> Result<Vec<NamedTensor>> {
        self.params
            .iter()
            .map(|(n, v)| {
                let t = v.as_tensor();
                let values = t
                    .flatten_all()
                    .and_then(|f| f.to_vec1::<f32>())
                    .map_err(ModelError::tensor(format!("reading {n}")))?;
                Ok((n.clone(), t.dims().to_vec(), values))
            })
            .collect()
    }

    /// Sets one parameter from values; the caller has checked the name and shape.
    pub fn set_parameter(&self, name: &str, values: Vec<f32>) -> Result<()> {
        let Some((_, var)) = self.params.iter().find(|(n, _)| n == name) else {
            return Err(ModelError::Data(format!("no parameter named {name}")));
        };
        let t = Tensor::from_vec(values, var.as_tensor().dims(), &self.device)
            .and_then(|t| t.to_dtype(DType::F32))
            .map_err(ModelError::tensor(format!("building {name}")))?;
        var.set(&t)
            .map_err(ModelError::tensor(format!("setting {name}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_init_is_reproducible_and_shapes_hold() {
        let cfg = EncoderConfig {
            input_dim: 7,
            hidden: 16,
            depth: 2,
            embedding: 4,
            residual: true,
            layer_norm: true,
        };
        let a = Encoder::new(cfg.clone(), 3).expect("a");
        let b = Encoder::new(cfg.clone(), 3).expect("b");
        let c = Encoder::new(cfg, 4).expect("c");
        let ea = a.export().expect("export");
        assert_eq!(ea, b.export().expect("export"));
        assert_ne!(ea, c.export().expect("export"));
        let x: Vec<f32> = (0..21).map(|i| i as f32 / 10.0).collect();
        let y = a.embed(&x).expect("embed");
        assert_eq!(y.len(), 3 * 4);
        assert_eq!(y, b.embed(&x).expect("embed"));
        assert!(a.embed(&x[..20]).is_err());
    }
}
