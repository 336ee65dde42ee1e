//! Unsupervised test-time adaptation of the encoder's LayerNorms to a site.
//!
//! A LayerNorm normalises each row over its channels, so unlike BatchNorm it keeps no running
//! statistics to re-estimate. What does move on a new network is the distribution of each channel of
//! the normalised values `x̂` across flows: the site's benign flows sit in other parts of the feature
//! space than the training benign rows. The adaptation here is the AdaBN idea applied to each
//! LayerNorm's channels: training records, per LayerNorm and channel, the mean `m_r` and standard
//! deviation `s_r` of `x̂` over the training benign rows ([`NormStatistics`]); on a site, the same
//! moments `m_s`, `s_s` over the site's unlabelled baseline flows give the new gain and shift
//!
//! ```text
//! g' = g · s_r / s_s        b' = b + g · (m_r − m_s · s_r / s_s)
//! ```
//!
//! so that `g' x̂ + b'` has over the site's flows the moments `g x̂ + b` had over the training benign
//! rows. LayerNorms are adapted in forward order (each one's site moments are taken with the earlier
//! ones already adapted). The ratio `s_r / s_s` is clamped to `[1/max_ratio, max_ratio]`, so a channel
//! that is nearly constant on the site is not blown up. Nothing else changes: linear layers, the
//! normaliser and the embedding size stay as trained.

use serde::{Deserialize, Serialize};

use crate::encoder::Encoder;
use crate::error::{ModelError, Result};

/// LayerNorm epsilon (the encoder's).
const LN_EPS: f32 = 1e-5;

/// Per-channel moments of one LayerNorm's normalised values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelMoments {
    /// The LayerNorm's parameter prefix (`block0.norm`, `head.norm`).
    pub layer: String,
    /// Mean of `x̂` per channel.
    pub mean: Vec<f32>,
    /// Standard deviation of `x̂` per channel.
    pub std: Vec<f32>,
}

/// The moments of every LayerNorm of an encoder over a set of rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormStatistics {
    /// Rows the moments were taken over.
    pub rows: usize,
    /// One entry per LayerNorm, in forward order.
    pub layers: Vec<ChannelMoments>,
}

/// What an adaptation changed.
#[derive(Debug, Clone, PartialEq)]
pub struct NormAdaptation {
    /// Site rows the moments were taken over.
    pub rows: usize,
    /// Channels whose scale ratio hit the clamp, over all LayerNorms.
    pub clamped: usize,
    /// Largest `|log(s_r / s_s)|` before clamping.
    pub max_log_ratio: f32,
    /// Mean over channels of `|m_r − m_s|` per LayerNorm, in forward order.
    pub mean_shift: Vec<f32>,
}

/// The encoder's parameters as plain vectors, by name.
struct Params {
    values: Vec<(String, Vec<f32>)>,
}

impl Params {
    fn of(encoder: &Encoder) -> Result<Self> {
        Ok(Params {
            values: encoder
                .export()?
                .into_iter()
                .map(|(n, _, v)| (n, v))
                .collect(),
        })
    }

    fn get(&self, name: &str) -> Result<&[f32]> {
        self.values
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
            .ok_or_else(|| ModelError::Data(format!("the encoder has no parameter {name}")))
    }

    fn set(&mut self, name: &str, v: Vec<f32>) -> Result<()> {
        let slot = self
            .values
            .iter_mut()
            .find(|(n, _)| n == name)
            .ok_or_else(|| ModelError::Data(format!("the encoder has no parameter {name}")))?;
        slot.1 = v;
        Ok(())
    }
}

/// `y = x Wᵀ + b` for `n` rows (`W`: `outputs × inputs`).
fn linear(x: &[f32], w: &[f32], b: &[f32], inputs: usize) -> Vec<f32> {
    let outputs = b.len();
    let mut y = Vec::with_capacity(x.len() / inputs * outputs);
    for row in x.chunks_exact(inputs) {
        for (o, &bias) in b.iter().enumerate() {
            let wr = &w[o * inputs..(o + 1) * inputs];
            y.push(bias + row.iter().zip(wr).map(|(a, c)| a * c).sum::<f32>());
        }
    }
    y
}

/// Normalises each row of width `h` (no gain or shift): the LayerNorm's `x̂`.
fn normalise(x: &[f32], h: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(h) {
        let mean = row.iter().sum::<f32>() / h as f32;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / h as f32;
        let inv = 1.0 / (var + LN_EPS).sqrt();
        out.extend(row.iter().map(|v| (v - mean) * inv));
    }
    out
}

/// Per-channel mean and standard deviation of `n × h` values (in f64).
fn moments(x: &[f32], h: usize) -> (Vec<f32>, Vec<f32>) {
    let n = (x.len() / h).max(1) as f64;
    let mut sum = vec![0f64; h];
    let mut sq = vec![0f64; h];
    for row in x.chunks_exact(h) {
        for (c, &v) in row.iter().enumerate() {
            sum[c] += f64::from(v);
            sq[c] += f64::from(v) * f64::from(v);
        }
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(s, m)| ((s / n - m * m).max(0.0)).sqrt() as f32)
        .collect();
    (mean.into_iter().map(|m| m as f32).collect(), std)
}

/// The forward up to every LayerNorm, returning each one's `x̂` for `rows`; stops after LayerNorm
/// `upto` (all of them with `usize::MAX`).
fn normalised_inputs(
    encoder: &Encoder,
    p: &Params,
    x: &[f32],
    upto: usize,
) -> Result<Vec<(String, Vec<f32>)>> {
    let cfg = encoder.config();
    let (i, h) = (cfg.input_dim, cfg.hidden);
    if x.is_empty() || !x.len().is_multiple_of(i) {
        return Err(ModelError::Data(format!(
            "norm statistics need whole rows of {i} values, got {}",
            x.len()
        )));
    }
    let affine = |xh: &[f32], layer: &str| -> Result<Vec<f32>> {
        let g = p.get(&format!("{layer}.weight"))?;
        let b = p.get(&format!("{layer}.bias"))?;
        Ok(xh
            .chunks_exact(h)
            .flat_map(|row| row.iter().zip(g).zip(b).map(|((v, g), b)| g * v + b))
            .collect())
    };
    let mut out = Vec::new();
    let mut hid = linear(x, p.get("stem.weight")?, p.get("stem.bias")?, i);
    for blk in 0..cfg.depth {
        let mut z = hid.clone();
        if cfg.layer_norm {
            let layer = format!("block{blk}.norm");
            let xh = normalise(&z, h);
            z = affine(&xh, &layer)?;
            out.push((layer, xh));
            if out.len() > upto {
                return Ok(out);
            }
        }
        z.iter_mut().for_each(|v| *v = v.max(0.0));
        let z = linear(
            &z,
            p.get(&format!("block{blk}.linear.weight"))?,
            p.get(&format!("block{blk}.linear.bias"))?,
            h,
        );
        hid = if cfg.residual {
            hid.iter().zip(&z).map(|(a, b)| a + b).collect()
        } else {
            z
        };
    }
    if cfg.layer_norm {
        out.push(("head.norm".to_string(), normalise(&hid, h)));
    }
    Ok(out)
}

impl NormStatistics {
    /// The moments of every LayerNorm of `encoder` over the preprocessed rows `x` (`n × input_dim`).
    /// An encoder without LayerNorm gives no layers.
    pub fn of(encoder: &Encoder, x: &[f32]) -> Result<Self> {
        let p = Params::of(encoder)?;
        let h = encoder.config().hidden;
        let layers = normalised_inputs(encoder, &p, x, usize::MAX)?
            .into_iter()
            .map(|(layer, xh)| {
                let (mean, std) = moments(&xh, h);
                ChannelMoments { layer, mean, std }
            })
            .collect();
        Ok(NormStatistics {
            rows: x.len() / encoder.config().input_dim,
            layers,
        })
    }

    /// Checks the statistics fit `encoder` (one entry per LayerNorm, `hidden` finite values each),
    /// naming what does not.
    pub fn check(&self, encoder: &Encoder) -> Result<()> {
        let cfg = encoder.config();
        let want: Vec<String> = if cfg.layer_norm {
            (0..cfg.depth)
                .map(|b| format!("block{b}.norm"))
                .chain(std::iter::once("head.norm".to_string()))
                .collect()
        } else {
            Vec::new()
        };
        let got: Vec<&str> = self.layers.iter().map(|l| l.layer.as_str()).collect();
        if got != want {
            return Err(ModelError::Data(format!(
                "norm statistics are for LayerNorms {got:?}, the encoder has {want:?}"
            )));
        }
        for l in &self.layers {
            let ok = |v: &[f32]| v.len() == cfg.hidden && v.iter().all(|x| x.is_finite());
            if !ok(&l.mean) || !ok(&l.std) || l.std.iter().any(|s| *s < 0.0) {
                return Err(ModelError::Data(format!(
                    "norm statistics of {}: expected {} finite values (std ≥ 0)",
                    l.layer, cfg.hidden
                )));
            }
        }
        Ok(())
    }
}

/// A copy of `encoder` with every LayerNorm's gain and shift adapted so the site rows `site_x`
/// (preprocessed, `n × input_dim`, unlabelled) have the channel moments `reference` recorded on the
/// training benign rows (module docs). `max_ratio` (≥ 1) bounds the scale change per channel.
pub fn adapt_layer_norms(
    encoder: &Encoder,
    reference: &NormStatistics,
    site_x: &[f32],
    max_ratio: f32,
) -> Result<(Encoder, NormAdaptation)> {
    reference.check(encoder)?;
    if !(max_ratio.is_finite() && max_ratio >= 1.0) {
        return Err(ModelError::Data(format!(
            "the LayerNorm scale bound must be a number ≥ 1, got {max_ratio}"
        )));
    }
    let h = encoder.config().hidden;
    let mut p = Params::of(encoder)?;
    let mut report = NormAdaptation {
        rows: site_x.len() / encoder.config().input_dim.max(1),
        clamped: 0,
        max_log_ratio: 0.0,
        mean_shift: Vec::new(),
    };
    let (lo, hi) = (max_ratio.recip(), max_ratio);
    for (k, target) in reference.layers.iter().enumerate() {
        let inputs = normalised_inputs(encoder, &p, site_x, k)?;
        let Some((_, xh)) = inputs.get(k) else {
            return Err(ModelError::Data(format!(
                "the encoder's forward has no LayerNorm {}",
                target.layer
            )));
        };
        let (m_s, s_s) = moments(xh, h);
        let g = p.get(&format!("{}.weight", target.layer))?.to_vec();
        let b = p.get(&format!("{}.bias", target.layer))?.to_vec();
        let mut g2 = Vec::with_capacity(h);
        let mut b2 = Vec::with_capacity(h);
        let mut shift = 0f32;
        for c in 0..h {
            let raw = target.std[c] / s_s[c].max(1e-6);
            report.max_log_ratio = report.max_log_ratio.max(raw.ln().abs());
            let r = raw.clamp(lo, hi);
            if r != raw {
                report.clamped += 1;
            }
            g2.push(g[c] * r);
            b2.push(b[c] + g[c] * (target.mean[c] - m_s[c] * r));
            shift += (target.mean[c] - m_s[c]).abs();
        }
        report.mean_shift.push(shift / h as f32);
        p.set(&format!("{}.weight", target.layer), g2)?;
        p.set(&format!("{}.bias", target.layer), b2)?;
    }
    let adapted = encoder.deep_copy()?;
    for l in &reference.layers {
        for part in ["weight", "bias"] {
            let name = format!("{}.{part}", l.layer);
            adapted.set_parameter(&name, p.get(&name)?.to_vec())?;
        }
    }
    Ok((adapted, report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encoder::EncoderConfig;

    fn encoder(depth: usize) -> Encoder {
        Encoder::new(
            EncoderConfig {
                input_dim: 5,
                hidden: 12,
                depth,
                embedding: 4,
                residual: true,
                layer_norm: true,
            },
            7,
        )
        .expect("encoder")
    }

    fn rows(n: usize, scale: f32, shift: f32, seed: u32) -> Vec<f32> {
        (0..n * 5)
            .map(|i| {
                let u = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                    / (1u32 << 24) as f32;
                shift + scale * (u - 0.5) * (1.0 + (i % 5) as f32)
            })
            .collect()
    }

    #[test]
    fn the_plain_forward_matches_the_encoder() {
        // The statistics' forward is the encoder's: its last LayerNorm's x̂, with the affine, ReLU
        // and head applied by hand, gives the encoder's embeddings.
        let e = encoder(2);
        let x = rows(30, 1.0, 0.0, 1);
        let p = Params::of(&e).expect("params");
        let all = normalised_inputs(&e, &p, &x, usize::MAX).expect("forward");
        assert_eq!(all.len(), 3);
        let (layer, xh) = &all[2];
        assert_eq!(layer, "head.norm");
        let g = p.get("head.norm.weight").expect("g");
        let b = p.get("head.norm.bias").expect("b");
        let z: Vec<f32> = xh
            .chunks_exact(12)
            .flat_map(|r| {
                r.iter()
                    .zip(g)
                    .zip(b)
                    .map(|((v, g), b)| (g * v + b).max(0.0))
            })
            .collect();
        let y = linear(
            &z,
            p.get("head.weight").expect("w"),
            p.get("head.bias").expect("hb"),
            12,
        );
        let want = e.embed(&x).expect("embed");
        for (a, b) in y.iter().zip(&want) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    #[test]
    fn adapting_to_the_reference_rows_changes_nothing_and_a_shifted_site_is_moved_back() {
        let e = encoder(1);
        let train = rows(400, 1.0, 0.0, 3);
        let stats = NormStatistics::of(&e, &train).expect("stats");
        stats.check(&e).expect("fits");
        // The same rows: gains and shifts stay (up to rounding).
        let (same, rep) = adapt_layer_norms(&e, &stats, &train, 4.0).expect("adapt");
        assert_eq!(rep.clamped, 0);
        for ((n, _, a), (_, _, b)) in e.export().expect("a").iter().zip(same.export().expect("b")) {
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-4, "{n}: {x} vs {y}");
            }
        }
        // A site whose rows are scaled and shifted: after adaptation its x̂ moments, through the new
        // affine, equal the training rows' through the old one.
        let site = rows(400, 3.0, 2.0, 9);
        let (adapted, rep) = adapt_layer_norms(&e, &stats, &site, 100.0).expect("adapt");
        assert_eq!(rep.mean_shift.len(), 2);
        let after = NormStatistics::of(&adapted, &site).expect("after");
        let pa = Params::of(&adapted).expect("pa");
        let pe = Params::of(&e).expect("pe");
        for (t, s) in stats.layers.iter().zip(&after.layers) {
            let (g0, b0) = (
                pe.get(&format!("{}.weight", t.layer)).expect("g0"),
                pe.get(&format!("{}.bias", t.layer)).expect("b0"),
            );
            let (g1, b1) = (
                pa.get(&format!("{}.weight", t.layer)).expect("g1"),
                pa.get(&format!("{}.bias", t.layer)).expect("b1"),
            );
            for c in 0..12 {
                let want_mean = g0[c] * t.mean[c] + b0[c];
                let got_mean = g1[c] * s.mean[c] + b1[c];
                assert!((want_mean - got_mean).abs() < 1e-3, "{}: mean {c}", t.layer);
                let want_sd = (g0[c] * t.std[c]).abs();
                let got_sd = (g1[c] * s.std[c]).abs();
                assert!((want_sd - got_sd).abs() < 1e-3, "{}: sd {c}", t.layer);
            }
        }
        // A tight bound clamps.
        let (_, rep) = adapt_layer_norms(&e, &stats, &site, 1.0).expect("adapt");
        assert!(rep.clamped > 0);
        assert!(adapt_layer_norms(&e, &stats, &site, 0.5).is_err());
        assert!(adapt_layer_norms(&e, &stats, &site, f32::NAN).is_err());
    }

    #[test]
    fn statistics_of_another_shape_are_refused() {
        let e = encoder(1);
        let stats = NormStatistics::of(&encoder(2), &rows(20, 1.0, 0.0, 1)).expect("stats");
        let err = stats.check(&e).expect_err("other depth");
        assert!(err.to_string().contains("block1.norm"), "{err}");
        let mut bad = NormStatistics::of(&e, &rows(20, 1.0, 0.0, 1)).expect("stats");
        bad.layers[0].std[3] = f32::NAN;
        assert!(bad.check(&e).is_err());
        assert!(NormStatistics::of(&e, &[1.0, 2.0]).is_err());
    }
}
