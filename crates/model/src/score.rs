//! The scoring kernel: an inference-only copy of the encoder that embeds batches of preprocessed rows
//! with hand-written, allocation-free matrix kernels and turns them into [`Decision`]s.
//!
//! [`ScoringKernel::from_encoder`] copies the weights out of a candle [`Encoder`] (through
//! [`Encoder::export`]) into panels of 16 output columns (the weight transposed, so one input value
//! scales one contiguous panel row); a batch is processed 64 rows at a time, 4 rows by one panel per
//! register tile, with fused multiply-adds. The SIMD width is picked at run time by `pulp` (AVX2+FMA
//! on x86-64 when the CPU has it, NEON on aarch64, scalar otherwise); this crate stays free of
//! `unsafe`. Input columns from [`ScoringKernel::dense_inputs`] on are treated as sparse (the
//! normaliser's one-hot columns): a zero there is skipped, a non-zero adds its scaled weight row, which
//! gives the same sum as multiplying the zeros. The forward is the encoder's exactly (stem; per block
//! optional LayerNorm, ReLU, linear, optional residual; optional LayerNorm, ReLU, head) up to float
//! rounding: an equivalence test holds it within 1e-4 of candle's.
//!
//! It does not train, does not read files, and does not change the decision rules: decisions are
//! [`BenignReference::decide`] applied to the kernel's embeddings.

use pulp::{Arch, Simd, WithSimd};

use crate::decision::{BenignReference, Decision, FamilyPrototype};
use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{ModelError, Result};
use crate::model::ThreatModel;

/// Output columns per packed weight panel (a multiple of every SIMD width used).
const PANEL: usize = 16;
/// Rows per register tile.
const TILE_ROWS: usize = 4;
/// Rows per internal pass (the size of the scratch buffers).
pub const KERNEL_BATCH: usize = 64;
/// LayerNorm epsilon (the encoder's).
const LN_EPS: f32 = 1e-5;

/// A linear layer packed for the kernel: `y = x Wᵀ + b`.
#[derive(Debug, Clone)]
struct Linear {
    /// Input width.
    inputs: usize,
    /// Output width, padded up to a multiple of [`PANEL`].
    padded: usize,
    /// `padded / PANEL` panels, each `inputs × PANEL` row-major (panel `p`, row `i`, column `c` holds
    /// `W[p·PANEL + c, i]`, zero in the padding).
    panels: Vec<f32>,
    /// Bias, `padded` values (zero in the padding).
    bias: Vec<f32>,
}

impl Linear {
    /// Packs a weight `outputs × inputs` (row-major, as candle stores it) and its bias.
    fn pack(weight: &[f32], bias: &[f32], outputs: usize, inputs: usize) -> Self {
        let padded = outputs.div_ceil(PANEL) * PANEL;
        let mut panels = vec![0f32; padded * inputs];
        for (o, row) in weight.chunks_exact(inputs).enumerate().take(outputs) {
            let (p, c) = (o / PANEL, o % PANEL);
            let panel = &mut panels[p * inputs * PANEL..(p + 1) * inputs * PANEL];
            for (i, &w) in row.iter().enumerate() {
                panel[i * PANEL + c] = w;
            }
        }
        let mut b = vec![0f32; padded];
        b[..outputs].copy_from_slice(&bias[..outputs]);
        Linear {
            inputs,
            padded,
            panels,
            bias: b,
        }
    }
}

/// LayerNorm gain and shift.
#[derive(Debug, Clone)]
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

/// One hidden block: optional LayerNorm, ReLU, linear (plus the input when residual).
#[derive(Debug, Clone)]
struct Block {
    norm: Option<Norm>,
    linear: Linear,
}

/// The encoder's forward, packed for batch scoring.
#[derive(Debug, Clone)]
pub struct ScoringKernel {
    config: EncoderConfig,
    stem: Linear,
    blocks: Vec<Block>,
    head_norm: Option<Norm>,
    head: Linear,
    dense_inputs: usize,
}

/// Reusable buffers of one scoring thread (no allocation per row or per call once sized).
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    h: Vec<f32>,
    z: Vec<f32>,
    emb: Vec<f32>,
}

/// Multiply-adds per flow of a dense forward (`input·hidden + depth·hidden² + hidden·embedding`),
/// times two for FLOPs; LayerNorm, ReLU and distances are left out (under 2% at the default shape).
pub fn flops_per_flow(config: &EncoderConfig) -> u64 {
    let (i, h, e, d) = (
        config.input_dim as u64,
        config.hidden as u64,
        config.embedding as u64,
        config.depth as u64,
    );
    2 * (i * h + d * h * h + h * e)
}

impl ScoringKernel {
    /// Copies the weights of `encoder`. Every input column is treated as dense; see
    /// [`ScoringKernel::with_dense_inputs`] and [`ScoringKernel::for_model`].
    pub fn from_encoder(encoder: &Encoder) -> Result<Self> {
        let config = encoder.config().clone();
        config.validate()?;
        let mut tensors = encoder.export()?.into_iter();
        let expected = config.parameter_shapes();
        let mut next = |want: usize| -> Result<Vec<f32>> {
            let (name, shape) = &expected[want];
            match tensors.next() {
                Some((n, s, v)) if &n == name && &s == shape => Ok(v),
                Some((n, s, _)) => Err(ModelError::Data(format!(
                    "scoring kernel: parameter {want} is {n} {s:?}, expected {name} {shape:?}"
                ))),
                None => Err(ModelError::Data(format!(
                    "scoring kernel: parameter {name} missing from the encoder"
                ))),
            }
        };
        let (i, h, e) = (config.input_dim, config.hidden, config.embedding);
        let mut at = 0;
        let mut take = |n: usize| {
            let start = at;
            at += n;
            start
        };
        let w = next(take(1))?;
        let b = next(take(1))?;
        let stem = Linear::pack(&w, &b, h, i);
        let mut blocks = Vec::with_capacity(config.depth);
        for _ in 0..config.depth {
            let norm = if config.layer_norm {
                Some(Norm {
                    weight: next(take(1))?,
                    bias: next(take(1))?,
                })
            } else {
                None
            };
            let w = next(take(1))?;
            let b = next(take(1))?;
            blocks.push(Block {
                norm,
                linear: Linear::pack(&w, &b, h, h),
            });
        }
        let head_norm = if config.layer_norm {
            Some(Norm {
                weight: next(take(1))?,
                bias: next(take(1))?,
            })
        } else {
            None
        };
        let w = next(take(1))?;
        let b = next(take(1))?;
        let head = Linear::pack(&w, &b, e, h);
        Ok(ScoringKernel {
            dense_inputs: config.input_dim,
            config,
            stem,
            blocks,
            head_norm,
            head,
        })
    }

    /// The kernel of a model, with the normaliser's one-hot columns (all columns after its numeric
    /// ones) treated as sparse.
    pub fn for_model(model: &ThreatModel) -> Result<Self> {
        if model.normaliser.output_dim() != model.encoder.config().input_dim {
            return Err(ModelError::Data(format!(
                "the normaliser writes {} columns but the encoder reads {}",
                model.normaliser.output_dim(),
                model.encoder.config().input_dim
            )));
        }
        Ok(Self::from_encoder(&model.encoder)?.with_dense_inputs(model.normaliser.numeric.len()))
    }

    /// Treats input columns `dense..input_dim` as sparse (zeros skipped). Results do not depend on
    /// it; speed does. Clamped to the input width.
    pub fn with_dense_inputs(mut self, dense: usize) -> Self {
        self.dense_inputs = dense.min(self.config.input_dim);
        self
    }

    /// Number of leading input columns multiplied densely.
    pub fn dense_inputs(&self) -> usize {
        self.dense_inputs
    }

    /// The encoder shape.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    fn check_rows(&self, x: &[f32]) -> Result<usize> {
        let d = self.config.input_dim;
        if !x.len().is_multiple_of(d) {
            return Err(ModelError::Data(format!(
                "scoring kernel got {} values, not a multiple of the input width {d}",
                x.len()
            )));
        }
        Ok(x.len() / d)
    }

    fn size(&self, scratch: &mut Scratch) {
        let hp = self.stem.padded;
        let ep = self.head.padded;
        if scratch.h.len() < KERNEL_BATCH * hp {
            scratch.h.resize(KERNEL_BATCH * hp, 0.0);
            scratch.z.resize(KERNEL_BATCH * hp, 0.0);
        }
        if scratch.emb.len() < KERNEL_BATCH * ep {
            scratch.emb.resize(KERNEL_BATCH * ep, 0.0);
        }
    }

    /// Embeds `n ≤ KERNEL_BATCH` rows into `scratch.emb` (row stride `head.padded`).
    fn forward_chunk(&self, x: &[f32], n: usize, scratch: &mut Scratch) {
        Arch::new().dispatch(Forward {
            kernel: self,
            x,
            n,
            scratch,
        });
    }

    /// Embeds row-major preprocessed rows into `out`.
    ///
    /// # Shapes
    /// `x`: `n × input_dim`; `out`: `n × embedding` (written).
    pub fn embed_into(&self, x: &[f32], scratch: &mut Scratch, out: &mut [f32]) -> Result<()> {
        let n = self.check_rows(x)?;
        let e = self.config.embedding;
        if out.len() != n * e {
            return Err(ModelError::Data(format!(
                "scoring kernel: output holds {} values, expected {n} rows × {e}",
                out.len()
            )));
        }
        self.size(scratch);
        let d = self.config.input_dim;
        let ep = self.head.padded;
        for (xc, oc) in x
            .chunks(KERNEL_BATCH * d)
            .zip(out.chunks_mut(KERNEL_BATCH * e))
        {
            let rows = xc.len() / d;
            self.forward_chunk(xc, rows, scratch);
            for (o, emb) in oc.chunks_exact_mut(e).zip(scratch.emb.chunks_exact(ep)) {
                o.copy_from_slice(&emb[..e]);
            }
        }
        Ok(())
    }

    /// Embeds rows into a new buffer (convenience over [`ScoringKernel::embed_into`]).
    ///
    /// # Shapes
    /// `x`: `n × input_dim` → `n × embedding`.
    pub fn embed(&self, x: &[f32]) -> Result<Vec<f32>> {
        let n = self.check_rows(x)?;
        let mut out = vec![0f32; n * self.config.embedding];
        self.embed_into(x, &mut Scratch::default(), &mut out)?;
        Ok(out)
    }

    /// Scores rows: embeds them and applies [`BenignReference::decide`] with the enrolled `families`,
    /// writing one decision per row into `out`.
    ///
    /// # Shapes
    /// `x`: `n × input_dim`; `out`: `n` decisions (written).
    pub fn score_into(
        &self,
        x: &[f32],
        reference: &BenignReference,
        families: &[FamilyPrototype],
        scratch: &mut Scratch,
        out: &mut [Decision],
    ) -> Result<()> {
        let n = self.check_rows(x)?;
        let e = self.config.embedding;
        if reference.dim != e {
            return Err(ModelError::Data(format!(
                "scoring kernel embeds into {e} dimensions but the benign reference has {}",
                reference.dim
            )));
        }
        if let Some(f) = families.iter().find(|f| f.centre.len() != e) {
            return Err(ModelError::Data(format!(
                "an enrolled family prototype has {} dimensions, expected {e}",
                f.centre.len()
            )));
        }
        if out.len() != n {
            return Err(ModelError::Data(format!(
                "scoring kernel: {} decision slots for {n} rows",
                out.len()
            )));
        }
        self.size(scratch);
        let d = self.config.input_dim;
        let ep = self.head.padded;
        for (xc, oc) in x.chunks(KERNEL_BATCH * d).zip(out.chunks_mut(KERNEL_BATCH)) {
            let rows = xc.len() / d;
            self.forward_chunk(xc, rows, scratch);
            for (o, emb) in oc.iter_mut().zip(scratch.emb.chunks_exact(ep)) {
                *o = reference.decide(&emb[..e], families);
            }
        }
        Ok(())
    }
}

/// One chunk's forward, compiled for the SIMD level `pulp` picks.
struct Forward<'a> {
    kernel: &'a ScoringKernel,
    x: &'a [f32],
    n: usize,
    scratch: &'a mut Scratch,
}

impl WithSimd for Forward<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> Self::Output {
        let k = self.kernel;
        let cfg = &k.config;
        let n = self.n;
        let hp = k.stem.padded;
        let Scratch { h, z, emb } = self.scratch;
        linear(
            simd,
            &k.stem,
            self.x,
            cfg.input_dim,
            n,
            k.dense_inputs,
            h,
            hp,
            false,
        );
        for block in &k.blocks {
            norm_relu(block.norm.as_ref(), h, z, hp, cfg.hidden, n);
            linear(
                simd,
                &block.linear,
                z,
                hp,
                n,
                cfg.hidden,
                h,
                hp,
                cfg.residual,
            );
        }
        norm_relu(k.head_norm.as_ref(), h, z, hp, cfg.hidden, n);
        linear(
            simd,
            &k.head,
            z,
            hp,
            n,
            cfg.hidden,
            emb,
            k.head.padded,
            false,
        );
    }
}

/// `z = relu(LayerNorm(h))` (or `relu(h)` without a norm) over the first `width` columns of `n` rows.
#[inline(always)]
fn norm_relu(norm: Option<&Norm>, h: &[f32], z: &mut [f32], stride: usize, width: usize, n: usize) {
    for (hr, zr) in h
        .chunks_exact(stride)
        .zip(z.chunks_exact_mut(stride))
        .take(n)
    {
        let (hr, zr) = (&hr[..width], &mut zr[..width]);
        match norm {
            Some(nm) => {
                let inv_n = 1.0 / width as f32;
                let mean = hr.iter().sum::<f32>() * inv_n;
                let var = hr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() * inv_n;
                let inv = 1.0 / (var + LN_EPS).sqrt();
                for (((o, &v), &g), &b) in zr.iter_mut().zip(hr).zip(&nm.weight).zip(&nm.bias) {
                    *o = ((v - mean) * inv * g + b).max(0.0);
                }
            }
            None => {
                for (o, &v) in zr.iter_mut().zip(hr) {
                    *o = v.max(0.0);
                }
            }
        }
    }
}

/// `out[r] = (accumulate ? out[r] : 0) + b + x[r] Wᵀ` for `n` rows; input columns from `dense` on
/// are read sparsely.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn linear<S: Simd>(
    simd: S,
    layer: &Linear,
    x: &[f32],
    x_stride: usize,
    n: usize,
    dense: usize,
    out: &mut [f32],
    out_stride: usize,
    accumulate: bool,
) {
    let lanes = core::mem::size_of::<S::f32s>() / core::mem::size_of::<f32>();
    let args = Args {
        layer,
        x,
        x_stride,
        n,
        dense,
        out_stride,
        accumulate,
    };
    match PANEL / lanes.max(1) {
        1 if lanes == PANEL => linear_nv::<S, 1>(simd, &args, out),
        2 if lanes * 2 == PANEL => linear_nv::<S, 2>(simd, &args, out),
        4 if lanes * 4 == PANEL => linear_nv::<S, 4>(simd, &args, out),
        _ => linear_nv::<pulp::Scalar, PANEL>(pulp::Scalar::new(), &args, out),
    }
}

/// The operands of one layer pass.
struct Args<'a> {
    layer: &'a Linear,
    x: &'a [f32],
    x_stride: usize,
    n: usize,
    dense: usize,
    out_stride: usize,
    accumulate: bool,
}

#[inline(always)]
fn linear_nv<S: Simd, const NV: usize>(simd: S, a: &Args<'_>, out: &mut [f32]) {
    let inputs = a.layer.inputs;
    for p in 0..a.layer.padded / PANEL {
        let w = &a.layer.panels[p * inputs * PANEL..(p + 1) * inputs * PANEL];
        let bias = &a.layer.bias[p * PANEL..(p + 1) * PANEL];
        let col = p * PANEL;
        let mut r = 0;
        while r + TILE_ROWS <= a.n {
            tile::<S, NV, TILE_ROWS>(simd, a, w, bias, r, col, out);
            r += TILE_ROWS;
        }
        while r < a.n {
            tile::<S, NV, 1>(simd, a, w, bias, r, col, out);
            r += 1;
        }
    }
}

/// `R` rows × one panel of 16 output columns, accumulated in `R · NV` SIMD registers.
#[inline(always)]
fn tile<S: Simd, const NV: usize, const R: usize>(
    simd: S,
    a: &Args<'_>,
    w: &[f32],
    bias: &[f32],
    r0: usize,
    col: usize,
    out: &mut [f32],
) {
    let inputs = a.layer.inputs;
    let (bv, _) = S::as_simd_f32s(bias);
    let mut acc = [[simd.splat_f32s(0.0); NV]; R];
    let rows: [&[f32]; R] =
        core::array::from_fn(|r| &a.x[(r0 + r) * a.x_stride..(r0 + r) * a.x_stride + inputs]);
    for (r, accr) in acc.iter_mut().enumerate() {
        let start = (r0 + r) * a.out_stride + col;
        let (ov, _) = S::as_simd_f32s(&out[start..start + PANEL]);
        for v in 0..NV {
            accr[v] = if a.accumulate {
                simd.add_f32s(bv[v], ov[v])
            } else {
                bv[v]
            };
        }
    }
    let dense = a.dense.min(inputs);
    for (k, wk) in w.chunks_exact(PANEL).enumerate().take(dense) {
        let (wv, _) = S::as_simd_f32s(wk);
        for (accr, row) in acc.iter_mut().zip(&rows) {
            let xs = simd.splat_f32s(row[k]);
            for v in 0..NV {
                accr[v] = simd.mul_add_f32s(xs, wv[v], accr[v]);
            }
        }
    }
    if dense < inputs {
        for (accr, row) in acc.iter_mut().zip(&rows) {
            for (k, &xv) in row.iter().enumerate().skip(dense) {
                if xv != 0.0 {
                    let (wv, _) = S::as_simd_f32s(&w[k * PANEL..(k + 1) * PANEL]);
                    let xs = simd.splat_f32s(xv);
                    for v in 0..NV {
                        accr[v] = simd.mul_add_f32s(xs, wv[v], accr[v]);
                    }
                }
            }
        }
    }
    for (r, accr) in acc.iter().enumerate() {
        let start = (r0 + r) * a.out_stride + col;
        let (ov, _) = S::as_mut_simd_f32s(&mut out[start..start + PANEL]);
        ov[..NV].copy_from_slice(&accr[..NV]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, d: usize, seed: u32) -> Vec<f32> {
        // Small deterministic values with exact zeros sprinkled in (like one-hot columns).
        (0..n * d)
            .map(|i| {
                let v = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32;
                if i % 7 == 3 {
                    0.0
                } else {
                    4.0 * v - 2.0
                }
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / (1.0 + y.abs()))
            .fold(0.0, f32::max)
    }

    #[test]
    fn kernel_matches_candle_for_every_option() {
        for (depth, residual, layer_norm, hidden, emb) in [
            (2, true, true, 48, 20),
            (1, false, true, 16, 16),
            (0, false, false, 33, 7),
            (3, true, false, 64, 32),
        ] {
            let cfg = EncoderConfig {
                input_dim: 13,
                hidden,
                depth,
                embedding: emb,
                residual,
                layer_norm,
            };
            let enc = Encoder::new(cfg.clone(), 11).expect("encoder");
            // 70 rows: one full internal batch of 64, a partial one, tiles of 4 and single rows.
            let x = rows(70, 13, 5);
            let want = enc.embed(&x).expect("candle");
            for dense in [13, 6, 0] {
                let k = ScoringKernel::from_encoder(&enc)
                    .expect("kernel")
                    .with_dense_inputs(dense);
                let got = k.embed(&x).expect("kernel embed");
                assert_eq!(got.len(), want.len());
                let err = close(&got, &want);
                assert!(err < 1e-5, "{cfg:?} dense {dense}: {err}");
            }
        }
    }

    #[test]
    fn refuses_bad_shapes() {
        let cfg = EncoderConfig::for_input(5);
        let enc = Encoder::new(cfg.clone(), 1).expect("encoder");
        let k = ScoringKernel::from_encoder(&enc).expect("kernel");
        assert!(k.embed(&[0.0; 7]).is_err());
        let mut out = vec![0.0; 3];
        assert!(k
            .embed_into(&[0.0; 10], &mut Scratch::default(), &mut out)
            .is_err());
        let reference = BenignReference::new(3, vec![0.0; 3], vec![0.0; 6], 0.01);
        let mut d = vec![Decision::Benign; 2];
        let err = k
            .score_into(&[0.0; 10], &reference, &[], &mut Scratch::default(), &mut d)
            .expect_err("dimension mismatch");
        assert!(
            err.to_string().contains(&cfg.embedding.to_string()),
            "{err}"
        );
        let c = EncoderConfig {
            hidden: 256,
            depth: 2,
            embedding: 64,
            ..EncoderConfig::for_input(100)
        };
        assert_eq!(
            flops_per_flow(&c),
            2 * (100 * 256 + 2 * 256 * 256 + 256 * 64)
        );
    }
}
