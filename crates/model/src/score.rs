//! The scoring kernel: an inference-only copy of the encoder that embeds batches of preprocessed rows
//! with hand-written, allocation-free matrix kernels and turns them into [`Verdict`]s.
//!
//! [`ScoringKernel::from_encoder`] copies the weights out of a candle [`Encoder`] (through
//! [`Encoder::export`]) into panels of 16 output columns (the weight transposed, so one input value
//! scales one contiguous panel row). A batch is processed 64 rows at a time, a group of rows at a time:
//! the group's dense inputs are packed input-major, then every panel is computed in one register tile
//! of the group's rows × 16 columns with fused multiply-adds. The SIMD level is picked at run time by
//! `pulp`, and the tile height follows the vector width so that a tile keeps 12–16 independent
//! accumulators: 16 rows × one 16-lane vector with AVX-512 (`x86-v4`), 6 rows × two 8-lane vectors with
//! AVX2+FMA (`x86-v3`), 4 rows × four 4-lane vectors with NEON; rows left over go in tiles of 4, then
//! 1; without any of these the same code runs on scalars. This crate stays free of `unsafe`. Input
//! columns from [`ScoringKernel::dense_inputs`] on are treated as sparse (the normaliser's one-hot
//! columns): each row's non-zero ones are found 32 at a time as a bit mask, and each adds its scaled
//! weight row to the row's bias before the dense tiles run, which gives the same sum as multiplying
//! the zeros. LayerNorm and ReLU run on the same vectors (mean, then the variance around it). The
//! forward is the encoder's exactly (stem; per block optional LayerNorm, ReLU, linear, optional
//! residual; optional LayerNorm, ReLU, head) up to float rounding: equivalence tests hold every SIMD
//! level within 1e-5 of candle's on synthetic rows, and the dispatched one within 1e-4 on real CIC
//! rows.
//!
//! It does not train, does not read files, and does not change the decision rules: decisions are
//! [`BenignReference::decide`] applied to the kernel's embeddings.

use pulp::{Arch, Simd, WithSimd};

use crate::encoder::{Encoder, EncoderConfig};
use crate::error::{ModelError, Result};
use crate::model::ThreatModel;
use metaids_decide::{BenignReference, FamilyPrototype, Verdict};

/// Output columns per packed weight panel (a multiple of every SIMD width used).
const PANEL: usize = 16;
/// Rows per register tile with 16-lane vectors (AVX-512): 16 rows × 1 vector, 16 accumulators.
const ROWS_X16: usize = 16;
/// Rows per register tile with 8-lane vectors (AVX2): 6 rows × 2 vectors, 12 accumulators.
const ROWS_X8: usize = 6;
/// Rows per register tile with 4-lane vectors (NEON): 4 rows × 4 vectors, 16 accumulators.
const ROWS_X4: usize = 4;
/// The tallest tile (sizes the packing buffer).
const MAX_TILE_ROWS: usize = max(max(ROWS_X16, ROWS_X8), ROWS_X4);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}
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

/// The widest SIMD level the kernel may use. Every level computes the same forward; results agree
/// within float rounding (the equivalence tests hold each within 1e-5 of candle's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SimdCap {
    /// The best level the CPU has (`pulp`'s run-time dispatch).
    #[default]
    Best,
    /// At most AVX2+FMA on x86-64 (what a CPU without AVX-512 runs); elsewhere the same as `Best`.
    Avx2,
    /// Scalar code only.
    Scalar,
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
    simd: SimdCap,
}

/// Reusable buffers of one scoring thread (no allocation per row or per call once sized).
#[derive(Debug, Default, Clone)]
pub struct Scratch {
    h: Vec<f32>,
    z: Vec<f32>,
    emb: Vec<f32>,
    /// One row group's dense inputs, packed input-major.
    pack: Vec<f32>,
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
            simd: SimdCap::Best,
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
        let pack = MAX_TILE_ROWS * self.config.input_dim.max(hp);
        if scratch.pack.len() < pack {
            scratch.pack.resize(pack, 0.0);
        }
    }

    /// Embeds `n ≤ KERNEL_BATCH` rows into `scratch.emb` (row stride `head.padded`).
    fn forward_chunk(&self, x: &[f32], n: usize, scratch: &mut Scratch) {
        let forward = Forward {
            kernel: self,
            x,
            n,
            scratch,
        };
        match self.simd {
            SimdCap::Best => Arch::new().dispatch(forward),
            SimdCap::Scalar => Simd::vectorize(pulp::Scalar::new(), forward),
            SimdCap::Avx2 => {
                #[cfg(target_arch = "x86_64")]
                if let Some(simd) = pulp::x86::V3::try_new() {
                    return Simd::vectorize(simd, forward);
                }
                Arch::new().dispatch(forward)
            }
        }
    }

    /// Caps the SIMD level (for measuring a narrower CPU's speed on this one, or ruling the wide
    /// kernels out); [`SimdCap::Best`] by default.
    pub fn with_simd(mut self, cap: SimdCap) -> Self {
        self.simd = cap;
        self
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
    /// writing one verdict per row into `out`.
    ///
    /// # Shapes
    /// `x`: `n × input_dim`; `out`: `n` verdicts (written).
    pub fn score_into(
        &self,
        x: &[f32],
        reference: &BenignReference,
        families: &[FamilyPrototype],
        scratch: &mut Scratch,
        out: &mut [Verdict],
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
        let Scratch { h, z, emb, pack } = self.scratch;
        let dense = k.dense_inputs.min(cfg.input_dim);
        let start = if dense < cfg.input_dim {
            sparse_start(simd, &k.stem, self.x, dense, n, h);
            Start::Out
        } else {
            Start::Bias
        };
        let stem = Args {
            start,
            dense,
            ..Args::dense(&k.stem, self.x, cfg.input_dim, n, hp)
        };
        linear(simd, &stem, pack, h);
        for block in &k.blocks {
            norm_relu(simd, block.norm.as_ref(), h, z, hp, cfg.hidden, n);
            let args = Args {
                start: if cfg.residual {
                    Start::BiasPlusOut
                } else {
                    Start::Bias
                },
                ..Args::dense(&block.linear, z, hp, n, hp)
            };
            linear(simd, &args, pack, h);
        }
        norm_relu(simd, k.head_norm.as_ref(), h, z, hp, cfg.hidden, n);
        let head = Args::dense(&k.head, z, hp, n, k.head.padded);
        linear(simd, &head, pack, emb);
    }
}

/// Starts the stem's output rows (stride `layer.padded`) at the bias plus the sparse columns' part
/// of `x Wᵀ`: columns from `dense` on whose value is not zero add their scaled weight row. Zeros are
/// found 32 columns at a time as a bit mask (vector compares, no branch per column), so the one-hot
/// columns cost a few instructions per row instead of a test per column for every panel.
#[inline(always)]
fn sparse_start<S: Simd>(
    simd: S,
    layer: &Linear,
    x: &[f32],
    dense: usize,
    n: usize,
    out: &mut [f32],
) {
    let (inputs, padded) = (layer.inputs, layer.padded);
    for (row, o) in x
        .chunks_exact(inputs)
        .zip(out.chunks_exact_mut(padded))
        .take(n)
    {
        o.copy_from_slice(&layer.bias);
        let (chunks, tail) = row[dense..].as_chunks::<32>();
        let masks = chunks
            .iter()
            .map(|c| nonzero_bits(c))
            .chain(core::iter::once(nonzero_bits(tail)));
        for (c, mut bits) in masks.enumerate() {
            while bits != 0 {
                let k = dense + c * 32 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let xs = simd.splat_f32s(row[k]);
                for (p, op) in o.chunks_exact_mut(PANEL).enumerate() {
                    let start = (p * inputs + k) * PANEL;
                    let (wv, _) = S::as_simd_f32s(&layer.panels[start..start + PANEL]);
                    let (ov, _) = S::as_mut_simd_f32s(op);
                    for (ov, &wv) in ov.iter_mut().zip(wv) {
                        *ov = simd.mul_add_f32s(xs, wv, *ov);
                    }
                }
            }
        }
    }
}

/// Bit `i` set where `v[i]` is not zero (NaN included), for up to 32 values.
#[inline(always)]
fn nonzero_bits(v: &[f32]) -> u32 {
    v.iter()
        .enumerate()
        .fold(0, |b, (i, &v)| b | (u32::from(v != 0.0) << i))
}

/// `z = relu(LayerNorm(h))` (or `relu(h)` without a norm) over the first `width` columns of `n` rows,
/// `S`'s vectors over the columns (mean, then the variance around it, as the encoder computes them).
#[inline(always)]
fn norm_relu<S: Simd>(
    simd: S,
    norm: Option<&Norm>,
    h: &[f32],
    z: &mut [f32],
    stride: usize,
    width: usize,
    n: usize,
) {
    let zero = simd.splat_f32s(0.0);
    let inv_n = 1.0 / width as f32;
    for (hr, zr) in h
        .chunks_exact(stride)
        .zip(z.chunks_exact_mut(stride))
        .take(n)
    {
        let (hv, ht) = S::as_simd_f32s(&hr[..width]);
        let (zv, zt) = S::as_mut_simd_f32s(&mut zr[..width]);
        match norm {
            Some(nm) => {
                let (gv, gt) = S::as_simd_f32s(&nm.weight[..width]);
                let (bv, bt) = S::as_simd_f32s(&nm.bias[..width]);
                let sum = hv.iter().fold(zero, |s, &v| simd.add_f32s(s, v));
                let mean = (simd.reduce_sum_f32s(sum) + ht.iter().sum::<f32>()) * inv_n;
                let mv = simd.splat_f32s(mean);
                let sq = hv.iter().fold(zero, |s, &v| {
                    let c = simd.sub_f32s(v, mv);
                    simd.mul_add_f32s(c, c, s)
                });
                let tail = ht.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>();
                let var = (simd.reduce_sum_f32s(sq) + tail) * inv_n;
                let inv = 1.0 / (var + LN_EPS).sqrt();
                let iv = simd.splat_f32s(inv);
                for (((o, &v), &g), &b) in zv.iter_mut().zip(hv).zip(gv).zip(bv) {
                    let c = simd.mul_f32s(simd.sub_f32s(v, mv), iv);
                    *o = simd.max_f32s(simd.mul_add_f32s(c, g, b), zero);
                }
                for (((o, &v), &g), &b) in zt.iter_mut().zip(ht).zip(gt).zip(bt) {
                    *o = ((v - mean) * inv * g + b).max(0.0);
                }
            }
            None => {
                for (o, &v) in zv.iter_mut().zip(hv) {
                    *o = simd.max_f32s(v, zero);
                }
                for (o, &v) in zt.iter_mut().zip(ht) {
                    *o = v.max(0.0);
                }
            }
        }
    }
}

/// What a layer pass adds `x[r] Wᵀ` (its first `dense` columns) to.
#[derive(Clone, Copy)]
enum Start {
    /// The bias.
    Bias,
    /// The bias plus the output row (the residual).
    BiasPlusOut,
    /// The output row as it is (the stem, started by [`sparse_start`]).
    Out,
}

/// The operands of one layer pass: `out[r] = start + x[r, ..dense] W[.., ..dense]ᵀ` for `n` rows.
struct Args<'a> {
    layer: &'a Linear,
    x: &'a [f32],
    x_stride: usize,
    n: usize,
    dense: usize,
    out_stride: usize,
    start: Start,
}

impl<'a> Args<'a> {
    /// A layer whose inputs are all dense (the hidden layers and the head).
    fn dense(
        layer: &'a Linear,
        x: &'a [f32],
        x_stride: usize,
        n: usize,
        out_stride: usize,
    ) -> Self {
        Args {
            layer,
            x,
            x_stride,
            n,
            dense: layer.inputs,
            out_stride,
            start: Start::Bias,
        }
    }
}

/// One layer pass at `S`'s width: `PANEL / lanes` vectors per panel row and the tile height of that
/// width (scalar code when `S` has no vector of a width dividing the panel).
#[inline(always)]
fn linear<S: Simd>(simd: S, a: &Args<'_>, pack: &mut [f32], out: &mut [f32]) {
    match S::F32_LANES {
        16 => linear_nv::<S, 1, ROWS_X16>(simd, a, pack, out),
        8 => linear_nv::<S, 2, ROWS_X8>(simd, a, pack, out),
        4 => linear_nv::<S, 4, ROWS_X4>(simd, a, pack, out),
        _ => linear_nv::<pulp::Scalar, PANEL, 1>(pulp::Scalar::new(), a, pack, out),
    }
}

/// Groups of `R` rows, then of 4, then single rows.
#[inline(always)]
fn linear_nv<S: Simd, const NV: usize, const R: usize>(
    simd: S,
    a: &Args<'_>,
    pack: &mut [f32],
    out: &mut [f32],
) {
    let mut r = 0;
    while r + R <= a.n {
        group::<S, NV, R>(simd, a, pack, r, out);
        r += R;
    }
    if R > 4 {
        while r + 4 <= a.n {
            group::<S, NV, 4>(simd, a, pack, r, out);
            r += 4;
        }
    }
    while r < a.n {
        group::<S, NV, 1>(simd, a, pack, r, out);
        r += 1;
    }
}

/// Rows `r0..r0 + R` through every panel: their dense inputs are packed input-major first
/// (`pack[k·R + r]`), so a tile reads one contiguous group of `R` values per input.
#[inline(always)]
fn group<S: Simd, const NV: usize, const R: usize>(
    simd: S,
    a: &Args<'_>,
    pack: &mut [f32],
    r0: usize,
    out: &mut [f32],
) {
    let inputs = a.layer.inputs;
    let (xp, _) = pack[..a.dense * R].as_chunks_mut::<R>();
    for r in 0..R {
        let start = (r0 + r) * a.x_stride;
        for (xk, &v) in xp.iter_mut().zip(&a.x[start..start + a.dense]) {
            xk[r] = v;
        }
    }
    let xp = &*xp;
    for p in 0..a.layer.padded / PANEL {
        let w = &a.layer.panels[p * inputs * PANEL..(p + 1) * inputs * PANEL];
        let bias = &a.layer.bias[p * PANEL..(p + 1) * PANEL];
        tile::<S, NV, R>(simd, a, xp, w, bias, r0, p * PANEL, out);
    }
}

/// `R` rows × one panel of 16 output columns, accumulated in `R · NV` SIMD registers.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn tile<S: Simd, const NV: usize, const R: usize>(
    simd: S,
    a: &Args<'_>,
    xp: &[[f32; R]],
    w: &[f32],
    bias: &[f32],
    r0: usize,
    col: usize,
    out: &mut [f32],
) {
    let (bv, _) = S::as_simd_f32s(bias);
    let mut acc = [[simd.splat_f32s(0.0); NV]; R];
    for (r, accr) in acc.iter_mut().enumerate() {
        let start = (r0 + r) * a.out_stride + col;
        let (ov, _) = S::as_simd_f32s(&out[start..start + PANEL]);
        for v in 0..NV {
            accr[v] = match a.start {
                Start::Bias => bv[v],
                Start::BiasPlusOut => simd.add_f32s(bv[v], ov[v]),
                Start::Out => ov[v],
            };
        }
    }
    for (xk, wk) in xp.iter().zip(w.chunks_exact(PANEL)) {
        let (wv, _) = S::as_simd_f32s(wk);
        for (accr, &xv) in acc.iter_mut().zip(xk) {
            let xs = simd.splat_f32s(xv);
            for (av, &wv) in accr.iter_mut().zip(wv) {
                *av = simd.mul_add_f32s(xs, wv, *av);
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

    /// Embeds with the SIMD level `simd` rather than the one `pulp` picks.
    fn embed_at<S: Simd>(k: &ScoringKernel, simd: S, x: &[f32]) -> Vec<f32> {
        let (d, e, ep) = (k.config.input_dim, k.config.embedding, k.head.padded);
        let mut scratch = Scratch::default();
        k.size(&mut scratch);
        let mut out = Vec::with_capacity(x.len() / d * e);
        for xc in x.chunks(KERNEL_BATCH * d) {
            let n = xc.len() / d;
            simd.vectorize(Forward {
                kernel: k,
                x: xc,
                n,
                scratch: &mut scratch,
            });
            for r in scratch.emb.chunks_exact(ep).take(n) {
                out.extend_from_slice(&r[..e]);
            }
        }
        out
    }

    /// The kernel's embeddings at every SIMD level this machine has, by name.
    fn every_level(k: &ScoringKernel, x: &[f32]) -> Vec<(&'static str, Vec<f32>)> {
        let mut got = vec![
            ("dispatched", k.embed(x).expect("kernel embed")),
            ("scalar", embed_at(k, pulp::Scalar::new(), x)),
            (
                "capped at scalar",
                k.clone()
                    .with_simd(SimdCap::Scalar)
                    .embed(x)
                    .expect("embed"),
            ),
            (
                "capped at avx2",
                k.clone().with_simd(SimdCap::Avx2).embed(x).expect("embed"),
            ),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(simd) = pulp::x86::V3::try_new() {
                got.push(("avx2", embed_at(k, simd, x)));
            }
            if let Some(simd) = pulp::x86::V4::try_new() {
                got.push(("avx512", embed_at(k, simd, x)));
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(simd) = pulp::aarch64::NeonFcma::try_new() {
            got.push(("neon", embed_at(k, simd, x)));
        }
        got
    }

    #[test]
    fn kernel_matches_candle_for_every_option() {
        for (depth, residual, layer_norm, hidden, emb) in [
            (2, true, true, 48, 20),
            (1, false, true, 16, 16),
            (0, false, false, 33, 7),
            (3, true, false, 64, 32),
            (1, true, true, 70, 9),
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
            // 70 and 75 rows: a full internal batch of 64, then 6 or 11 rows, so every tile height
            // (16 or 6 rows, 4, 1) runs at every width.
            for n in [70, 75, 3] {
                let x = rows(n, 13, 5);
                let want = enc.embed(&x).expect("candle");
                for dense in [13, 6, 0] {
                    let k = ScoringKernel::from_encoder(&enc)
                        .expect("kernel")
                        .with_dense_inputs(dense);
                    for (level, got) in every_level(&k, &x) {
                        assert_eq!(got.len(), want.len());
                        let err = close(&got, &want);
                        assert!(err < 1e-5, "{cfg:?} {n} rows dense {dense} {level}: {err}");
                    }
                }
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
        let mut d = vec![Verdict::default(); 2];
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
