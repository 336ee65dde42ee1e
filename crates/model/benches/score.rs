//! Batch scoring throughput (preprocessed rows → decisions), one thread: candle's forward plus
//! `BenignReference::decide` against the scoring kernel, for the default encoder shape and smaller
//! ones. Rows are real (CIC-IDS2017 corrected, ../shared/data) when present, so the one-hot columns
//! are as sparse as in use; encoders are seeded and untrained (speed does not depend on the weights).
//!
//! `cargo bench -p metaids-model --bench score` (criterion); FLOPs per flow are printed per shape.
//! Set `METAIDS_BENCH_QUICK=1` for a short run, and `METAIDS_BENCH_SIMD=avx2` (or `scalar`) to cap
//! the kernel's SIMD level (a CPU without AVX-512, measured on one that has it).

use std::path::PathBuf;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput};
use metaids_core::preprocess::{Normaliser, PreprocessConfig};
use metaids_core::schema::DatasetKind;
use metaids_decide::geometry::kmeans;
use metaids_decide::Verdict;
use metaids_ingest::{read_files, resolve_files, ReadOptions};
use metaids_model::{
    flops_per_flow, BenignReference, Encoder, EncoderConfig, ScoringKernel, Scratch, SimdCap,
};

/// Rows per scored batch.
const BATCH: usize = 4096;

/// Preprocessed rows (real CIC rows when the shared data is there) and the number of dense columns.
fn rows() -> (Vec<f32>, usize, usize, usize) {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/cic-ids2017-improved");
    if let Ok(files) = resolve_files(&dir, &["*.csv".to_string()]) {
        let opts = ReadOptions {
            dataset: Some(DatasetKind::Cic),
            ..Default::default()
        };
        if let Ok((frame, _)) = read_files(&files, &opts) {
            let all: Vec<usize> = (0..frame.len()).collect();
            if let Ok(norm) = Normaliser::fit(&frame, &all, PreprocessConfig::default()) {
                // Spread the batch over the whole file set (every family).
                let step = (frame.len() / BATCH).max(1);
                let pick: Vec<usize> = (0..BATCH).map(|i| (i * step) % frame.len()).collect();
                if let Ok(x) = norm.transform(&frame, &pick) {
                    eprintln!(
                        "rows: {BATCH} real CIC rows, {} columns ({} numeric, the rest one-hot)",
                        norm.output_dim(),
                        norm.numeric.len()
                    );
                    return (
                        x,
                        norm.output_dim(),
                        norm.numeric.len(),
                        norm.categorical.len(),
                    );
                }
            }
        }
    }
    // Synthetic fallback: 80 dense columns and 3 one-hot groups of 16.
    let (dense, groups, width) = (80, 3, 16);
    let dim = dense + groups * width;
    let mut x = vec![0f32; BATCH * dim];
    for (i, r) in x.chunks_exact_mut(dim).enumerate() {
        for (j, v) in r[..dense].iter_mut().enumerate() {
            *v = (((i * 31 + j * 17) % 101) as f32 / 50.0) - 1.0;
        }
        for g in 0..groups {
            r[dense + g * width + (i + g) % width] = 1.0;
        }
    }
    eprintln!("rows: {BATCH} synthetic rows, {dim} columns ({dense} dense)");
    (x, dim, dense, groups)
}

fn bench(c: &mut Criterion) {
    let (x, dim, dense, groups) = rows();
    let cap = match std::env::var("METAIDS_BENCH_SIMD").as_deref() {
        Ok("avx2") => SimdCap::Avx2,
        Ok("scalar") => SimdCap::Scalar,
        _ => SimdCap::Best,
    };
    let level = format!("{:?}", pulp::Arch::new());
    eprintln!(
        "kernel SIMD level: {} (cap {cap:?})",
        level.split('(').next().unwrap_or(&level)
    );
    let shapes: [(usize, usize, usize); 7] = [
        (256, 2, 64),
        (256, 1, 64),
        (128, 2, 64),
        (128, 1, 64),
        (128, 1, 32),
        (64, 2, 32),
        (64, 1, 32),
    ];
    let mut group = c.benchmark_group("score");
    let quick = std::env::var_os("METAIDS_BENCH_QUICK").is_some();
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(if quick { 300 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 1 } else { 4 }))
        .throughput(Throughput::Elements(BATCH as u64));
    for (hidden, depth, embedding) in shapes {
        let cfg = EncoderConfig {
            input_dim: dim,
            hidden,
            depth,
            embedding,
            residual: true,
            layer_norm: true,
        };
        let enc = Encoder::new(cfg.clone(), 7).expect("encoder");
        let kernel = ScoringKernel::from_encoder(&enc)
            .expect("kernel")
            .with_dense_inputs(dense)
            .with_simd(cap);
        let emb = enc.embed(&x).expect("embed");
        let reference = BenignReference::new(
            embedding,
            kmeans(&emb[..2048 * embedding], embedding, 8, 10, 1),
            emb[2048 * embedding..].to_vec(),
            0.01,
        );
        let family = reference.enrol(&emb[..5 * embedding]);
        let families = [family];
        let name = format!("h{hidden}-d{depth}-e{embedding}");
        eprintln!(
            "{name}: {} FLOPs per flow (dense), {} with the one-hot columns skipped",
            flops_per_flow(&cfg),
            flops_per_flow(&EncoderConfig {
                input_dim: dense + groups,
                ..cfg.clone()
            })
        );
        group.bench_with_input(BenchmarkId::new("candle", &name), &x, |b, x| {
            b.iter(|| {
                let e = enc.embed(x).expect("embed");
                let d: Vec<Verdict> = e
                    .chunks_exact(embedding)
                    .map(|r| reference.decide(r, &families))
                    .collect();
                std::hint::black_box(d)
            })
        });
        let mut scratch = Scratch::default();
        let mut out = vec![Verdict::default(); BATCH];
        group.bench_with_input(BenchmarkId::new("kernel", &name), &x, |b, x| {
            b.iter(|| {
                kernel
                    .score_into(x, &reference, &families, &mut scratch, &mut out)
                    .expect("score");
                std::hint::black_box(&out);
            })
        });
    }
    group.finish();
}

fn main() {
    // One thread: candle's matmul would otherwise use every core.
    std::env::set_var("RAYON_NUM_THREADS", "1");
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
